/*
 * cmd_merge.c - `featcache merge`: combine shard stores (each extracted by
 * one worker from its part of a dataset) into one store, shard by shard
 * with fc_store_merge, and say what was copied and what was there already.
 *
 * A shard the library refuses (a conflicting extractor or item, a damaged
 * shard: nothing of it is written) is reported and left out, and the other
 * shards are still merged; the exit status is then 1. Anything else that
 * fails (a full disk, an interrupt) stops the command: running it again
 * finishes the job.
 */
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli/cli.h"

static const char usage_text[] =
	"usage: featcache merge [--store DEST] [--json] [--wait] [-q] SHARD...\n"
	"\n"
	"Copy the items, labels, error records, extractors and features of each\n"
	"SHARD store into DEST (created if missing). Features are copied as they\n"
	"are stored, without decoding. What DEST has already is left as it is, so\n"
	"merging a shard twice changes nothing, and a merge that was stopped is\n"
	"finished by running it again.\n"
	"\n"
	"A shard is refused, and nothing of it written, when it disagrees with\n"
	"DEST: an extractor of the same id with another descriptor or storage\n"
	"(dim, --store-dtype, codec), or an item of the same key with another\n"
	"content, label, split or status; and when it is damaged (run 'featcache\n"
	"verify' on it). The other shards are still merged; the exit status is 1.\n"
	"Where the model file was read from (the descriptor's \"model\") may differ.\n"
	"\n"
	"  -s, --store DEST  the store to merge into (default: $FEATCACHE_STORE)\n"
	"      --json        print the figures as one JSON object\n"
	"      --wait        when another process writes to DEST, wait for it\n"
	"                    (default: refuse, naming it)\n"
	"  -q, --quiet       no progress\n"
	"  -h, --help        show this help\n";

/* Members of extract's descriptors that may differ between workers: where
 * each one read the model file from (its content hash is in the id). */
static const char *const descriptor_ignore[] = { "model", NULL };

struct shard {
	const char *path;
	const char *error; /* NULL when merged */
	char msg[FC_ERRLEN];
	fc_merge_stats st;
};

static double now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Whether a failed merge wrote anything of the shard. */
static int wrote_something(const fc_merge_stats *s)
{
	return s->items || s->errors || s->labels || s->extractors || s->vectors || s->chunks;
}

/* A refusal leaves the shard out; any other failure stops the command. */
static int is_refusal(int err)
{
	return err == FC_ERR_EXISTS || err == FC_ERR_CORRUPT || err == FC_ERR_INVALID ||
	       err == FC_ERR_VERSION || err == FC_ERR_NOT_STORE || err == FC_ERR_NOT_FOUND;
}

static int same_dir(const char *a, const char *b)
{
	struct stat sa, sb;

	return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* The dataset directory item keys are relative to (what `search` and the
 * report's thumbnails read): DEST takes the first shard's, and a shard
 * whose dataset sits elsewhere (another mount of the same data, say) is
 * named, since DEST keeps only one. */
static int carry_data_root(fc_store *dst, const char *dest, fc_store *src, const char *shard)
{
	char have[PATH_MAX], root[PATH_MAX];
	int err;

	if (fc_store_get_data_root(src, root, sizeof root) != 0)
		return 0; /* none recorded: nothing to carry */
	err = fc_store_get_data_root(dst, have, sizeof have);
	if (err == FC_ERR_NOT_FOUND)
		err = fc_store_set_data_root(dst, root);
	else if (err == 0 && strcmp(have, root) != 0)
		cli_warn("shard '%s' was extracted from '%s'; '%s' keeps '%s' as its dataset", shard, root, dest,
			 have);
	if (err)
		cli_err("cannot record the dataset directory in '%s': %s", dest, fc_store_errmsg(dst));
	return err;
}

/* Merge one shard into dst; 0, a refusal (the shard is left out), or
 * another error, which stops the command. Messages are printed here. */
static int merge_one(fc_store *dst, const char *dest, struct shard *sh, int quiet)
{
	static const fc_merge_opts opts = { .descriptor_ignore = descriptor_ignore };
	fc_store *src = NULL;
	char b1[32];
	int err;

	if (same_dir(dest, sh->path)) {
		/* LMDB must not open one environment twice in a process. */
		snprintf(sh->msg, sizeof sh->msg, "cannot merge store '%s' into itself", sh->path);
		sh->error = sh->msg;
		cli_err("refused shard '%s': %s", sh->path, sh->msg);
		return FC_ERR_INVALID;
	}
	if (cli_open_store(&src, sh->path, 1)) {
		snprintf(sh->msg, sizeof sh->msg, "cannot open store '%s'", sh->path);
		sh->error = sh->msg;
		return FC_ERR_NOT_STORE;
	}
	err = fc_store_merge(dst, src, &opts, &sh->st);
	cli_progress_end();
	if (err == 0)
		err = carry_data_root(dst, dest, src, sh->path);
	fc_store_free(src);
	if (err == 0) {
		if (!quiet)
			fprintf(stderr,
				"featcache: merged '%s': %llu items, %llu vectors in %llu chunks (%s); %llu items, "
				"%llu vectors already there\n",
				sh->path, (unsigned long long)sh->st.items, (unsigned long long)sh->st.vectors,
				(unsigned long long)sh->st.chunks, cli_human_bytes(b1, sizeof b1, sh->st.bytes),
				(unsigned long long)sh->st.items_present, (unsigned long long)sh->st.vectors_present);
		return 0;
	}
	snprintf(sh->msg, sizeof sh->msg, "%s", fc_store_errmsg(dst)[0] ? fc_store_errmsg(dst) : fc_strerror(err));
	sh->error = sh->msg;
	if (is_refusal(err) && !wrote_something(&sh->st))
		cli_err("refused shard '%s' (nothing of it was written): %s", sh->path, sh->msg);
	else
		cli_err("cannot merge '%s' into '%s': %s%s", sh->path, dest, sh->msg,
			wrote_something(&sh->st) && err != FC_ERR_INTERRUPTED
				? " (what was copied stays: run the merge again to finish)"
				: "");
	return is_refusal(err) && !wrote_something(&sh->st) ? err : FC_ERR_INTERRUPTED;
}

static json_t *stats_json(const fc_merge_stats *s)
{
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "items", (json_int_t)s->items,
			 "items_present", (json_int_t)s->items_present, "errors", (json_int_t)s->errors,
			 "errors_present", (json_int_t)s->errors_present, "labels", (json_int_t)s->labels,
			 "extractors", (json_int_t)s->extractors, "vectors", (json_int_t)s->vectors,
			 "vectors_present", (json_int_t)s->vectors_present, "chunks", (json_int_t)s->chunks,
			 "chunks_present", (json_int_t)s->chunks_present, "bytes", (json_int_t)s->bytes);
}

static int print_json(const char *dest, const struct shard *sh, size_t n, const fc_merge_stats *t, double sec)
{
	json_t *root = stats_json(t), *arr = json_array();

	if (!root || !arr)
		goto nomem;
	for (size_t i = 0; i < n; i++) {
		json_t *o = stats_json(&sh[i].st);

		if (!o || json_object_set_new(o, "store", json_string(sh[i].path)) ||
		    json_object_set_new(o, "error", sh[i].error ? json_string(sh[i].error) : json_null()) ||
		    json_array_append_new(arr, o))
			goto nomem;
	}
	if (json_object_set_new(root, "store", json_string(dest)) || json_object_set(root, "shards", arr) ||
	    json_object_set_new(root, "seconds", json_real(sec)))
		goto nomem;
	if (json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6)) == 0)
		putchar('\n');
	json_decref(root);
	json_decref(arr);
	return CLI_EXIT_OK;
nomem:
	json_decref(root);
	json_decref(arr);
	return cli_fail("cannot print merge figures: out of memory");
}

static void print_text(const fc_merge_stats *t, size_t merged, size_t refused, double sec)
{
	char b[32];
	double mb = (double)t->bytes / 1e6;

	printf("shards      %zu merged, %zu refused\n", merged, refused);
	printf("items       %llu copied, %llu already there\n", (unsigned long long)t->items,
	       (unsigned long long)t->items_present);
	printf("errors      %llu copied, %llu already there\n", (unsigned long long)t->errors,
	       (unsigned long long)t->errors_present);
	printf("labels      %llu new\n", (unsigned long long)t->labels);
	printf("extractors  %llu new\n", (unsigned long long)t->extractors);
	printf("vectors     %llu copied, %llu already there\n", (unsigned long long)t->vectors,
	       (unsigned long long)t->vectors_present);
	printf("chunks      %llu copied (%s), %llu left out (every vector already there)\n",
	       (unsigned long long)t->chunks, cli_human_bytes(b, sizeof b, t->bytes),
	       (unsigned long long)t->chunks_present);
	printf("time        %.2f s, %.0f chunks/s, %.1f MB/s\n", sec, sec > 0 ? (double)t->chunks / sec : 0,
	       sec > 0 ? mb / sec : 0);
}

int cmd_merge(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "wait", no_argument, NULL, 'w' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *store_opt = NULL, *dest = NULL;
	int json = 0, quiet = 0, wait = 0, c, rc;
	size_t n, merged = 0, refused = 0;
	fc_store *dst = NULL;
	struct shard *sh = NULL;
	fc_merge_stats total = { 0 };
	double t0;

	while ((c = getopt_long(argc, argv, ":s:qh", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			store_opt = optarg;
			break;
		case 'j':
			json = 1;
			break;
		case 'w':
			wait = 1;
			break;
		case 'q':
			quiet = 1;
			break;
		default:
			return cli_other_option("merge", c, argv, opts, usage_text);
		}
	}
	if ((rc = cli_need_store("merge", store_opt, &dest)))
		return rc;
	if (optind >= argc)
		return cli_usage_error("merge", "no shard given: name one or more stores to merge");
	n = (size_t)(argc - optind);
	for (size_t i = 0; i < n; i++)
		if (!argv[optind + i][0])
			return cli_usage_error("merge", "bad shard '': empty path");
	if (quiet)
		cli_logger_flags(CLI_QUIET);
	cli_catch_interrupt();
	if (!(sh = calloc(n, sizeof *sh)))
		return cli_fail("cannot merge into '%s': out of memory", dest);
	if ((rc = cli_open_store_writer(&dst, dest, 0, 1, "merge", wait)))
		goto out;
	t0 = now_sec();
	for (size_t i = 0; i < n; i++) {
		int err;

		sh[i].path = argv[optind + i];
		err = merge_one(dst, dest, &sh[i], quiet);
		fc_merge_stats_add(&total, &sh[i].st);
		if (err == 0) {
			merged++;
		} else if (is_refusal(err)) {
			refused++;
		} else {
			/* The shards not reached are reported as not merged. */
			for (size_t j = i + 1; j < n; j++) {
				sh[j].path = argv[optind + j];
				sh[j].error = "not reached";
			}
			rc = CLI_EXIT_FAIL;
			break;
		}
	}
	if (refused)
		rc = CLI_EXIT_FAIL;
	if (json) {
		int r = print_json(dest, sh, n, &total, now_sec() - t0);

		if (r)
			rc = r;
	} else {
		print_text(&total, merged, refused, now_sec() - t0);
	}
out:
	free(sh);
	fc_store_free(dst);
	return rc;
}
