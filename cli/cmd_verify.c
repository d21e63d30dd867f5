/*
 * cmd_verify.c - `featcache verify`: decode every chunk and check every
 * index entry and record of a store (fc_store_verify), naming each bad key
 * on stderr and ending with one summary line on stdout. It only reads; a
 * store it cannot open at all is reported like any other open failure.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static const char usage_text[] =
	"usage: featcache verify [--store DIR] [--quiet]\n"
	"\n"
	"Decode every feature chunk and check every index entry and record of the\n"
	"store. Each bad key is reported on stderr as\n"
	"    featcache: verify: KEY: PROBLEM\n"
	"and a summary line goes to stdout. The exit status is 1 when anything is\n"
	"bad.\n"
	"\n"
	"  -s, --store DIR   the store (default: $FEATCACHE_STORE)\n"
	"  -q, --quiet       print nothing when the store is sound; problems and\n"
	"                    their count still show\n"
	"  -h, --help        show this help\n";

static void report(void *ctx, const char *key, const char *problem)
{
	uint64_t *problems = ctx;

	(*problems)++;
	cli_err("verify: %s: %s", key ? key : "?", problem ? problem : "bad record");
}

int cmd_verify(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *store_opt = NULL, *path = NULL;
	int quiet = 0, c, rc;
	uint64_t checked = 0, problems = 0;
	fc_store *s = NULL;

	while ((c = getopt_long(argc, argv, ":s:qh", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			store_opt = optarg;
			break;
		case 'q':
			quiet = 1;
			break;
		default:
			return cli_other_option("verify", c, argv, opts, usage_text);
		}
	}
	if ((rc = cli_no_operands("verify", argc, argv)))
		return rc;
	if ((rc = cli_need_store("verify", store_opt, &path)))
		return rc;
	if (quiet)
		cli_logger_flags(CLI_QUIET);
	cli_catch_interrupt();

	if ((rc = cli_open_store(&s, path, 1)))
		return rc;
	rc = fc_store_verify(s, report, &problems, &checked);
	cli_progress_end();
	if (rc < 0 && rc != FC_ERR_CORRUPT) {
		/* The walk itself failed: what was checked is not the whole store. */
		rc = cli_store_fail(s, rc, "verify");
		goto out;
	}
	if (rc == FC_ERR_CORRUPT && problems == 0) {
		/* Corrupt without naming a key: still a failure, never "ok". */
		cli_err("verify: store '%s': %s", path,
		       fc_store_errmsg(s)[0] ? fc_store_errmsg(s) : fc_strerror(rc));
		problems = 1;
	}
	if (!quiet || problems)
		printf("checked %llu records: ", (unsigned long long)checked);
	if (problems)
		printf("%llu problem%s\n", (unsigned long long)problems, problems == 1 ? "" : "s");
	else if (!quiet)
		printf("ok\n");
	rc = problems ? CLI_EXIT_FAIL : CLI_EXIT_OK;
out:
	fc_store_free(s);
	return rc;
}
