/*
 * cmd_info.c - `featcache info`: what a store holds (items, labels, splits,
 * errors, file size) and, per extractor, how its features are stored and
 * what they cost on disk. Text for people, --json for scripts; both carry
 * the same figures. It reads the store's statistics only: checking the
 * records themselves is `featcache verify`. What it can tell of damage is
 * what costs nothing extra: records it cannot parse while counting, and
 * what the last verify recorded in the store (meta/damage). A chunk
 * damaged since then shows only when verify runs again.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"

static const char usage_text[] =
	"usage: featcache info [--store DIR] [--json] [--errors N]\n"
	"\n"
	"Show what a store holds: items (and how many failed to decode), labels,\n"
	"splits, error records and the store's file size; per extractor its id,\n"
	"dim, storage dtype and codec, vectors, chunks, bytes on disk per vector\n"
	"and the compression ratio (f32 bytes of the live vectors / encoded chunk\n"
	"bytes).\n"
	"\n"
	"Damage shows when info meets it while counting (malformed records) or\n"
	"when the last 'featcache verify' found and recorded it; info does not\n"
	"decode chunks itself. Either way it exits 1 and points at\n"
	"'featcache verify --repair'.\n"
	"\n"
	"  -s, --store DIR   the store (default: $FEATCACHE_STORE)\n"
	"      --json        print one JSON object instead of text\n"
	"      --errors N    list the first N error records (default 5; 0: none)\n"
	"  -h, --help        show this help\n";

#define MAX_ERRORS_SHOWN 1000000

/* The first few error records, in key order. */
struct err_list {
	size_t max, n;
	char **keys, **whys;
};

static int collect_error(void *ctx, const char *key, const char *why)
{
	struct err_list *l = ctx;

	if (l->n >= l->max)
		return 1; /* enough: stop the walk */
	l->keys[l->n] = strdup(key ? key : "");
	l->whys[l->n] = strdup(why ? why : "");
	if (!l->keys[l->n] || !l->whys[l->n]) {
		free(l->keys[l->n]);
		free(l->whys[l->n]);
		return FC_ERR_NOMEM;
	}
	l->n++;
	return 0;
}

static void err_list_free(struct err_list *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->keys[i]);
		free(l->whys[i]);
	}
	free(l->keys);
	free(l->whys);
}

/* What the stats do not carry: the zstd level and the descriptor. */
struct ex_extra {
	int level; /* -1 when unknown */
	json_t *descriptor; /* NULL when unknown */
};

static double ratio(double num, double den)
{
	return den > 0 ? num / den : 0;
}

static json_t *json_ratio(double num, double den)
{
	return den > 0 ? json_real(num / den) : json_null();
}

/* The damage the last verify recorded, or null. */
static json_t *damage_json(const fc_damage *d)
{
	if (!d->problems)
		return json_null();
	return json_pack("{s:I, s:I, s:I, s:I}", "problems", (json_int_t)d->problems, "chunks",
			 (json_int_t)d->chunks, "vectors", (json_int_t)d->vectors, "verified",
			 (json_int_t)d->when);
}

/* "2024-05-01 12:00 UTC" */
static const char *utc_time(char *buf, size_t cap, int64_t t)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (!gmtime_r(&tt, &tm) || !strftime(buf, cap, "%Y-%m-%d %H:%M UTC", &tm))
		snprintf(buf, cap, "%lld", (long long)t);
	return buf;
}

static int print_json(const char *path, const char *data_root, const fc_store_stats *st, const struct ex_extra *extra,
		      const struct err_list *errs)
{
	json_t *root = NULL, *exs, *recs;
	uint64_t vectors = 0;
	int rc = CLI_EXIT_FAIL;

	for (size_t i = 0; i < st->n_extractors; i++)
		vectors += st->extractors[i].vectors;
	exs = json_array();
	recs = json_array();
	if (!exs || !recs)
		goto nomem;
	for (size_t i = 0; i < st->n_extractors; i++) {
		const fc_store_ex_stats *e = &st->extractors[i];
		char hex[2 * FC_HASH_LEN + 1];
		json_t *ej;

		fc_hex(hex, e->id, FC_HASH_LEN);
		ej = json_pack("{s:s, s:I, s:s, s:s, s:o, s:I, s:I, s:I, s:I, s:I, s:o, s:o, s:o, s:o}",
			       "id", hex, "dim", (json_int_t)e->dim, "dtype", fc_dtype_name(e->dtype),
			       "codec", fc_codec_name(e->codec), "level",
			       extra[i].level >= 0 ? json_integer(extra[i].level) : json_null(),
			       "vectors", (json_int_t)e->vectors, "slots", (json_int_t)e->slots,
			       "chunks", (json_int_t)e->chunks, "chunk_bytes",
			       (json_int_t)e->chunk_bytes, "disk_bytes", (json_int_t)e->disk_bytes,
			       "disk_bytes_per_vector",
			       json_ratio((double)e->disk_bytes, (double)e->vectors),
			       "encoded_bytes_per_vector",
			       json_ratio((double)e->chunk_bytes, (double)e->vectors),
			       "compression_ratio",
			       json_ratio((double)e->vectors * e->dim * 4.0, (double)e->chunk_bytes),
			       "descriptor",
			       extra[i].descriptor ? json_incref(extra[i].descriptor) : json_null());
		if (!ej || json_array_append_new(exs, ej) != 0)
			goto nomem;
	}
	for (size_t i = 0; i < errs->n; i++) {
		json_t *r = json_pack("{s:s, s:s}", "key", errs->keys[i], "reason", errs->whys[i]);

		if (!r || json_array_append_new(recs, r) != 0)
			goto nomem;
	}
	root = json_pack("{s:s, s:I, s:I, s:I, s:I, s:{s:I, s:I, s:I, s:I}, s:I, s:O, s:I, s:I, "
			 "s:I, s:o, s:O}",
			 "store", path, "format", (json_int_t)st->format, "items",
			 (json_int_t)st->items, "items_failed", (json_int_t)st->items_failed,
			 "labels", (json_int_t)st->labels, "splits", "train",
			 (json_int_t)st->splits[0], "val", (json_int_t)st->splits[1], "test",
			 (json_int_t)st->splits[2], "none", (json_int_t)st->splits[3], "errors",
			 (json_int_t)st->errors, "error_records", recs, "file_bytes",
			 (json_int_t)st->file_bytes, "used_bytes", (json_int_t)st->used_bytes,
			 "vectors", (json_int_t)vectors, "file_bytes_per_vector",
			 json_ratio((double)st->file_bytes, (double)vectors), "extractors", exs);
	if (root && json_object_set_new(root, "data_root", data_root ? json_string(data_root) : json_null()))
		goto nomem;
	if (root && json_object_set_new(root, "damaged_records", json_integer((json_int_t)st->bad_records)))
		goto nomem;
	if (root && json_object_set_new(root, "damage", damage_json(&st->damage)))
		goto nomem;
	if (!root)
		goto nomem;
	if (json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(8)) ==
	    0)
		putchar('\n');
	rc = CLI_EXIT_OK; /* a failed write shows in the checked close of stdout */
	goto out;
nomem:
	cli_err("cannot print store '%s': out of memory", path);
out:
	json_decref(root);
	json_decref(exs);
	json_decref(recs);
	return rc;
}

/* Descriptor members beyond what the stats already show, one per line. */
static void print_descriptor(const json_t *d)
{
	const char *k;
	json_t *v;

	if (!json_is_object(d))
		return;
	json_object_foreach((json_t *)d, k, v) {
		if (!strcmp(k, "dim") || !strcmp(k, "dtype") || !strcmp(k, "codec") ||
		    !strcmp(k, "level"))
			continue;
		if (json_is_string(v)) {
			printf("  %-12s %s\n", k, json_string_value(v));
		} else if (!strcmp(k, "calibration") && json_is_object(v)) {
			/* int8's table: one range per quantised tensor (--json has them) */
			const char *m = json_string_value(json_object_get(v, "method"));
			printf("  %-12s %s on %lld images, %zu tensor ranges\n", k, m ? m : "?",
			       (long long)json_integer_value(json_object_get(v, "images")),
			       json_array_size(json_object_get(v, "ranges")));
		} else {
			char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER |
							JSON_REAL_PRECISION(8));

			printf("  %-12s %s\n", k, s ? s : "?");
			free(s);
		}
	}
}

static void print_text(const char *path, const char *data_root, const fc_store_stats *st, const struct ex_extra *extra,
		       const struct err_list *errs)
{
	char b1[32], b2[32];
	uint64_t vectors = 0;

	for (size_t i = 0; i < st->n_extractors; i++)
		vectors += st->extractors[i].vectors;
	printf("store        %s\n", path);
	printf("dataset      %s\n", data_root ? data_root : "(not recorded: extracted before featcache kept it)");
	printf("format       %u\n", (unsigned)st->format);
	printf("items        %llu (%llu failed)\n", (unsigned long long)st->items,
	       (unsigned long long)st->items_failed);
	printf("labels       %llu\n", (unsigned long long)st->labels);
	printf("splits       train %llu, val %llu, test %llu, none %llu\n",
	       (unsigned long long)st->splits[0], (unsigned long long)st->splits[1],
	       (unsigned long long)st->splits[2], (unsigned long long)st->splits[3]);
	printf("errors       %llu\n", (unsigned long long)st->errors);
	printf("file size    %llu bytes (%s), %s in use\n", (unsigned long long)st->file_bytes,
	       cli_human_bytes(b1, sizeof b1, st->file_bytes),
	       cli_human_bytes(b2, sizeof b2, st->used_bytes));
	if (st->damage.problems) {
		const fc_damage *d = &st->damage;

		printf("damage       %llu problem%s (%llu damaged chunk%s, %llu vector%s to re-extract), found by verify %s\n",
		       (unsigned long long)d->problems, d->problems == 1 ? "" : "s",
		       (unsigned long long)d->chunks, d->chunks == 1 ? "" : "s",
		       (unsigned long long)d->vectors, d->vectors == 1 ? "" : "s",
		       utc_time(b1, sizeof b1, d->when));
	}
	printf("extractors   %zu\n", st->n_extractors);
	if (vectors)
		printf("vectors      %llu, %.1f bytes each on disk (file size / vectors)\n",
		       (unsigned long long)vectors, ratio((double)st->file_bytes, (double)vectors));
	else
		printf("vectors      0\n");

	for (size_t i = 0; i < st->n_extractors; i++) {
		const fc_store_ex_stats *e = &st->extractors[i];
		char hex[2 * FC_HASH_LEN + 1];

		fc_hex(hex, e->id, FC_HASH_LEN);
		printf("\nextractor %s\n", hex);
		print_descriptor(extra[i].descriptor);
		printf("  dim          %u\n", (unsigned)e->dim);
		printf("  dtype        %s\n", fc_dtype_name(e->dtype));
		if (extra[i].level >= 0 && e->codec != FC_CODEC_RAW)
			printf("  codec        %s (level %d)\n", fc_codec_name(e->codec),
			       extra[i].level);
		else
			printf("  codec        %s\n", fc_codec_name(e->codec));
		printf("  vectors      %llu (%llu slots, %llu dead)\n", (unsigned long long)e->vectors,
		       (unsigned long long)e->slots,
		       (unsigned long long)(e->slots > e->vectors ? e->slots - e->vectors : 0));
		printf("  chunks       %llu, %llu bytes encoded (%s)\n", (unsigned long long)e->chunks,
		       (unsigned long long)e->chunk_bytes,
		       cli_human_bytes(b1, sizeof b1, e->chunk_bytes));
		if (e->vectors) {
			printf("  on disk      %llu bytes, %.1f per vector\n",
			       (unsigned long long)e->disk_bytes,
			       ratio((double)e->disk_bytes, (double)e->vectors));
			printf("  encoded      %.1f bytes per vector\n",
			       ratio((double)e->chunk_bytes, (double)e->vectors));
		} else {
			printf("  on disk      %llu bytes\n", (unsigned long long)e->disk_bytes);
		}
		if (e->chunk_bytes)
			printf("  compression  %.2fx (f32 bytes / encoded bytes)\n",
			       ratio((double)e->vectors * e->dim * 4.0, (double)e->chunk_bytes));
	}

	if (st->errors && errs->max) {
		printf("\nerrors (%llu", (unsigned long long)st->errors);
		if (errs->n < st->errors)
			printf(", first %zu shown", errs->n);
		printf("):\n");
		for (size_t i = 0; i < errs->n; i++)
			printf("  %s: %s\n", errs->keys[i], errs->whys[i]);
	}
}

/* The descriptor and level of every extractor into extra (level -1 when it
 * cannot be read). Returns CLI_EXIT_OK, or CLI_EXIT_FAIL when one could not
 * be read: the rest is still shown, the exit status says something was
 * missing. */
static int read_extractors(fc_store *s, const fc_store_stats *st, struct ex_extra *extra)
{
	int rc = CLI_EXIT_OK;

	for (size_t i = 0; i < st->n_extractors; i++) {
		fc_extractor ex;
		char hex[2 * FC_HASH_LEN + 1];
		int r;

		extra[i].level = -1;
		fc_hex(hex, st->extractors[i].id, FC_HASH_LEN);
		r = fc_store_get_extractor(s, st->extractors[i].id, &ex);
		if (r < 0) {
			cli_err("cannot read extractor '%s': %s", hex,
				fc_store_errmsg(s)[0] ? fc_store_errmsg(s) : fc_strerror(r));
			rc = CLI_EXIT_FAIL;
			continue;
		}
		extra[i].level = ex.level;
		if (ex.descriptor) {
			json_error_t jerr;

			extra[i].descriptor = json_loads(ex.descriptor, 0, &jerr);
			if (!extra[i].descriptor) {
				cli_err("cannot read extractor '%s': bad descriptor: %s", hex, jerr.text);
				rc = CLI_EXIT_FAIL;
			}
		}
	}
	return rc;
}

/* The first errs->max error records of the store. */
static int read_errors(fc_store *s, const char *path, struct err_list *errs)
{
	int r;

	errs->keys = calloc(errs->max, sizeof *errs->keys);
	errs->whys = calloc(errs->max, sizeof *errs->whys);
	if (!errs->keys || !errs->whys)
		return cli_fail("cannot read store '%s': out of memory", path);
	r = fc_store_foreach_error(s, collect_error, errs);
	if (r < 0)
		return cli_store_fail(s, r, "read errors of");
	return 0;
}

int cmd_info(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "errors", required_argument, NULL, 'e' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *store_opt = NULL, *path = NULL;
	int json = 0, c, rc;
	uint64_t n_errors = 5;
	fc_store *s = NULL;
	fc_store_stats st;
	struct ex_extra *extra = NULL;
	struct err_list errs = { 0, 0, NULL, NULL };

	memset(&st, 0, sizeof st);
	while ((c = getopt_long(argc, argv, ":s:h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			store_opt = optarg;
			break;
		case 'j':
			json = 1;
			break;
		case 'e':
			if ((rc = cli_parse_u64("info", "--errors", optarg, 0, MAX_ERRORS_SHOWN,
					       &n_errors)))
				return rc;
			break;
		default:
			return cli_other_option("info", c, argv, opts, usage_text);
		}
	}
	if ((rc = cli_no_operands("info", argc, argv)))
		return rc;
	if ((rc = cli_need_store("info", store_opt, &path)))
		return rc;

	if ((rc = cli_open_store(&s, path, 1)))
		return rc;
	if ((rc = fc_store_stats_get(s, &st)) < 0) {
		rc = cli_store_fail(s, rc, "read");
		goto out;
	}
	extra = calloc(st.n_extractors ? st.n_extractors : 1, sizeof *extra);
	if (!extra) {
		rc = cli_fail("cannot read store '%s': out of memory", path);
		goto out;
	}
	rc = read_extractors(s, &st, extra);
	errs.max = (size_t)n_errors;
	if (errs.max > st.errors)
		errs.max = (size_t)st.errors;
	if (errs.max) {
		int r = read_errors(s, path, &errs);
		if (r) {
			rc = r;
			goto out;
		}
	}

	/* Where the items' images are (extract records it; the report reads it). */
	char root[4200];
	const char *data_root = fc_store_get_data_root(s, root, sizeof root) == 0 ? root : NULL;
	if (json) {
		int r = print_json(path, data_root, &st, extra, &errs);

		if (r)
			rc = r;
	} else {
		print_text(path, data_root, &st, extra, &errs);
	}
	if (st.bad_records) {
		cli_err("store '%s' has %llu damaged records: run 'featcache verify --store %s'", path,
		       (unsigned long long)st.bad_records, path);
		rc = CLI_EXIT_FAIL;
	}
	if (st.damage.problems) {
		cli_err("store '%s' has damage that verify found: run 'featcache verify --store %s --repair'",
			path, path);
		rc = CLI_EXIT_FAIL;
	}
out:
	if (extra)
		for (size_t i = 0; i < st.n_extractors; i++)
			json_decref(extra[i].descriptor);
	free(extra);
	err_list_free(&errs);
	free(st.extractors);
	fc_store_free(s);
	return rc;
}
