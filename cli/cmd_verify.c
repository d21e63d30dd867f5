/*
 * cmd_verify.c - `featcache verify`: decode every chunk and check every
 * index entry and record of a store (fc_store_verify_note), naming each bad
 * key on stderr and ending with one summary line on stdout. What it found
 * is recorded in the store when verify may write there, for `info` to show.
 * With --repair (fc_store_repair) it drops damaged chunks and broken
 * records in one transaction and names them, so that the next extract
 * redoes exactly those vectors. A store it cannot open at all is reported
 * like any other open failure.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static const char usage_text[] =
	"usage: featcache verify [--store DIR] [--repair] [--quiet]\n"
	"\n"
	"Decode every feature chunk and check every index entry and record of the\n"
	"store. Each bad key is reported on stderr as\n"
	"    featcache: verify: KEY: PROBLEM\n"
	"and a summary line goes to stdout. The findings are recorded in the store\n"
	"(when verify may write to it), so that 'featcache info' shows them without\n"
	"decoding anything; a verify that finds the store sound clears the record.\n"
	"The exit status is 1 when anything is bad.\n"
	"\n"
	"With --repair, also drop what cannot be read back, in one transaction:\n"
	"every damaged chunk with the index entries that point into it, broken\n"
	"index entries, and malformed item records. Each dropped record is named\n"
	"on stdout. Items keep their content hashes, so running 'featcache extract'\n"
	"again with the same data and model extracts exactly the dropped vectors.\n"
	"Label records and extractor descriptors are not repaired. An interrupted\n"
	"repair changes nothing. The exit status is 0 when nothing is left to fix.\n"
	"\n"
	"  -s, --store DIR   the store (default: $FEATCACHE_STORE)\n"
	"  -r, --repair      drop damaged chunks and broken records (see above)\n"
	"  -q, --quiet       print nothing when the store is sound; problems, their\n"
	"                    count and what --repair drops still show\n"
	"  -h, --help        show this help\n";

static void report(void *ctx, const char *key, const char *problem)
{
	uint64_t *problems = ctx;

	(*problems)++;
	cli_err("verify: %s: %s", key ? key : "?", problem ? problem : "bad record");
}

/* What repair dropped, kept to be named on stdout after the summary line. */
struct drops {
	uint64_t problems; /* report's counter, first: report() sees only it */
	char **lines;
	size_t n, cap;
	int nomem;
};

static void dropped(void *ctx, const char *key, uint64_t vectors)
{
	struct drops *d = ctx;
	char line[4200];

	if (vectors)
		snprintf(line, sizeof line, "dropped %s (%llu vector%s)", key, (unsigned long long)vectors,
			 vectors == 1 ? "" : "s");
	else
		snprintf(line, sizeof line, "dropped %s", key);
	if (d->n == d->cap) {
		size_t cap = d->cap ? 2 * d->cap : 16;
		char **p = realloc(d->lines, cap * sizeof *p);

		if (!p) {
			d->nomem = 1;
			return;
		}
		d->lines = p;
		d->cap = cap;
	}
	if (!(d->lines[d->n] = strdup(line)))
		d->nomem = 1;
	else
		d->n++;
}

/* Verify records its findings when it may write to the store; a store it
 * may only read is verified all the same. *writable says which it got. */
static int open_for_verify(fc_store **s, const char *path, int repair, int *writable)
{
	fc_store_opts o;

	*writable = 1;
	if (repair) /* a writer: refused while another one runs */
		return cli_open_store_writer(s, path, 0, 0, "verify --repair", 0);
	memset(&o, 0, sizeof o);
	o.logger = cli_logger();
	if (fc_store_open(s, path, &o) == 0)
		return 0;
	fc_store_free(*s);
	*writable = 0;
	return cli_open_store(s, path, 1); /* says why when it cannot read either */
}

static void print_checked(uint64_t checked, uint64_t problems, int quiet)
{
	if (!quiet || problems)
		printf("checked %llu records: ", (unsigned long long)checked);
	if (problems)
		printf("%llu problem%s\n", (unsigned long long)problems, problems == 1 ? "" : "s");
	else if (!quiet)
		printf("ok\n");
}

static int run_repair(fc_store *s, const char *path, int quiet)
{
	fc_repair_stats st;
	struct drops d = { 0 };
	int rc = fc_store_repair(s, report, dropped, &d, &st);

	cli_progress_end();
	if (rc < 0 && rc != FC_ERR_CORRUPT) {
		rc = cli_store_fail(s, rc, "repair"); /* nothing was dropped */
		goto out;
	}
	print_checked(st.checked, d.problems, quiet);
	for (size_t i = 0; i < d.n; i++)
		printf("%s\n", d.lines[i]);
	if (d.nomem)
		cli_err("out of memory: not every dropped record is named");
	rc = CLI_EXIT_OK;
	if (st.chunks_dropped || st.vectors_dropped || st.items_dropped) {
		printf("repaired: %llu chunk%s, %llu vector%s and %llu item record%s dropped\n",
		       (unsigned long long)st.chunks_dropped, st.chunks_dropped == 1 ? "" : "s",
		       (unsigned long long)st.vectors_dropped, st.vectors_dropped == 1 ? "" : "s",
		       (unsigned long long)st.items_dropped, st.items_dropped == 1 ? "" : "s");
		printf("run 'featcache extract --store %s' again with the same data and model to extract them again\n",
		       path);
	}
	if (st.left) {
		printf("%llu problem%s left that repair cannot fix\n", (unsigned long long)st.left,
		       st.left == 1 ? "" : "s");
		rc = CLI_EXIT_FAIL;
	}
out:
	for (size_t i = 0; i < d.n; i++)
		free(d.lines[i]);
	free(d.lines);
	return rc;
}

int cmd_verify(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "repair", no_argument, NULL, 'r' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *store_opt = NULL, *path = NULL;
	int quiet = 0, repair = 0, writable, c, rc;
	uint64_t checked = 0, problems = 0;
	fc_store *s = NULL;

	while ((c = getopt_long(argc, argv, ":s:rqh", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			store_opt = optarg;
			break;
		case 'r':
			repair = 1;
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

	if ((rc = open_for_verify(&s, path, repair, &writable)))
		return rc;
	if (repair) {
		rc = run_repair(s, path, quiet);
		goto out;
	}
	if (writable)
		rc = fc_store_verify_note(s, report, &problems, &checked, NULL);
	else
		rc = fc_store_verify(s, report, &problems, &checked);
	cli_progress_end();
	if (rc < 0 && rc != FC_ERR_CORRUPT) {
		/* The walk itself failed (what was checked is not the whole
		 * store), or the findings could not be recorded. */
		rc = cli_store_fail(s, rc, "verify");
		goto out;
	}
	if (rc == FC_ERR_CORRUPT && problems == 0) {
		/* Corrupt without naming a key: still a failure, never "ok". */
		cli_err("verify: store '%s': %s", path,
		       fc_store_errmsg(s)[0] ? fc_store_errmsg(s) : fc_strerror(rc));
		problems = 1;
	}
	print_checked(checked, problems, quiet);
	if (problems)
		cli_err("run 'featcache verify --store %s --repair' to drop what is damaged (extract then redoes it)",
			path);
	rc = problems ? CLI_EXIT_FAIL : CLI_EXIT_OK;
out:
	fc_store_free(s);
	return rc;
}
