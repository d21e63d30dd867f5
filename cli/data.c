/*
 * data.c - loading labelled features for train, eval, embed and search, and
 * the vectors of image files through a store's extractor (data.h).
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/data.h"
#include "featcache/extract.h"
#include "featcache/io.h"

int cli_pick_extractor(const char *cmd, fc_store *s, const char *prefix, uint8_t id[FC_HASH_LEN])
{
	if (prefix) {
		int err = fc_store_find_extractor(s, prefix, id);
		if (err == FC_ERR_INVALID)
			return cli_usage_error(cmd, "%s", fc_store_errmsg(s));
		if (err)
			return cli_fail("%s", fc_store_errmsg(s));
		return 0;
	}
	uint8_t (*ids)[FC_HASH_LEN];
	size_t n;
	int err = fc_store_list_extractors(s, &ids, &n);
	if (err)
		return cli_store_fail(s, err, "read");
	if (n == 1)
		memcpy(id, ids[0], FC_HASH_LEN);
	free(ids);
	if (n == 0)
		return cli_fail("store '%s' holds no features yet: run 'featcache extract' first", fc_store_path(s));
	if (n > 1)
		return cli_usage_error(cmd, "store '%s' holds %zu extractors: choose one with --extractor (see 'featcache info')",
				      fc_store_path(s), n);
	return 0;
}

static int is_id_hex(const char *v)
{
	if (!v || strlen(v) != 2 * FC_HASH_LEN)
		return 0;
	for (const char *p = v; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return 0;
	return 1;
}

void cli_head_origin_read(cli_head_origin *o, const char *path)
{
	memset(o, 0, sizeof *o);
	fc_st_file *f = NULL;
	char err[FC_ERRLEN];
	if (fc_st_open(&f, path, err, sizeof err) != 0)
		return;
	const char *cfg = fc_st_meta_find(f, "featcache_config"), *desc = fc_st_meta_find(f, "featcache_extractor");
	json_t *j = cfg ? json_loads(cfg, 0, NULL) : NULL;
	const char *v = json_string_value(json_object_get(j, "extractor"));
	if (is_id_hex(v))
		memcpy(o->extractor, v, sizeof o->extractor);
	if (desc && desc[0])
		o->descriptor = strdup(desc);
	const char *ev = json_string_value(json_object_get(j, "eval_split"));
	const char *ix = json_string_value(json_object_get(j, "index_split"));
	json_t *k = json_object_get(j, "k");
	if (ev && strlen(ev) < sizeof o->eval_split)
		strcpy(o->eval_split, ev);
	if (ix && strlen(ix) < sizeof o->index_split)
		strcpy(o->index_split, ix);
	if (json_is_integer(k) && json_integer_value(k) > 0)
		o->k = (uint64_t)json_integer_value(k);
	json_t *vf = json_object_get(j, "val_from_train");
	if (json_is_number(vf) && json_number_value(vf) > 0 && json_number_value(vf) < 1)
		o->val_from_train = json_number_value(vf);
	json_decref(j);
	fc_st_free(f);
}

void cli_head_origin_free(cli_head_origin *o)
{
	free(o->descriptor);
	memset(o, 0, sizeof *o);
}

int cli_pick_head_extractor(const char *cmd, fc_store *s, const char *prefix, const char *head_path,
			    const cli_head_origin *origin, uint8_t id[FC_HASH_LEN])
{
	if (!origin->extractor[0])
		return cli_pick_extractor(cmd, s, prefix, id);
	char hex[2 * FC_HASH_LEN + 1];
	int rc;
	if (prefix) {
		if ((rc = cli_pick_extractor(cmd, s, prefix, id)) != 0)
			return rc;
		fc_hex(hex, id, FC_HASH_LEN);
		if (strcmp(hex, origin->extractor) != 0)
			return cli_fail("cannot apply head '%s' to extractor %.12s: it was trained on extractor %.12s",
					head_path, hex, origin->extractor);
		return 0;
	}
	rc = fc_store_find_extractor(s, origin->extractor, id);
	if (rc == FC_ERR_NOT_FOUND)
		return cli_fail("cannot apply head '%s' to store '%s': it was trained on extractor %.12s, which the "
				"store does not hold (see 'featcache info')",
				head_path, fc_store_path(s), origin->extractor);
	if (rc)
		return cli_store_fail(s, rc, "read");
	return 0;
}

int cli_parse_splits(const char *cmd, const char *opt, const char *s, unsigned *mask)
{
	*mask = 0;
	char buf[64];
	if (strlen(s) >= sizeof buf)
		return cli_usage_error(cmd, "bad value '%s' for %s", s, opt);
	strcpy(buf, s);
	for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
		int split;
		if (strcmp(tok, "all") == 0)
			*mask |= FC_SPLIT_MASK_ALL;
		else if (fc_split_parse(tok, &split) == 0)
			*mask |= 1u << split;
		else
			return cli_usage_error(cmd, "bad value '%s' for %s: expected train, val, test or all", s, opt);
	}
	if (!*mask)
		return cli_usage_error(cmd, "bad value '%s' for %s: expected train, val, test or all", s, opt);
	return 0;
}

void cli_split_data_free(cli_split_data *d)
{
	fc_matrix_free(&d->m);
	free(d->view.idx);
	memset(d, 0, sizeof *d);
}

int cli_split_of(const char *key, int split, double val_from_train)
{
	/* FC_SPLIT_NONE counts as train, as the store loads it */
	if ((split == FC_SPLIT_TRAIN || split == FC_SPLIT_NONE) && val_from_train > 0 &&
	    fc_hash_fraction(key, CLI_VAL_FROM_TRAIN_SEED) < val_from_train)
		return FC_SPLIT_VAL;
	return split;
}

int cli_load_split(fc_store *s, const uint8_t id[FC_HASH_LEN], unsigned mask, int keep_unlabeled,
		  double val_from_train, cli_split_data *out)
{
	/* The item records first: a split whose f32 matrix would not fit in
	 * the default share of the available memory is refused before it is
	 * loaded, rather than killed part way (the commands that load f32,
	 * embed, search and the report's views, do not stream). */
	int rc = cli_load_split_as(s, id, mask, keep_unlabeled, val_from_train, FC_LOAD_NONE, out);
	if (rc || out->m.rows == 0)
		return rc;
	cli_mem_opts mo = { 0 };
	uint64_t limit = cli_mem_limit(&mo), need = CLI_MEM_BASE + (uint64_t)out->m.rows * out->m.dim * sizeof(float);
	char a[32], b[32];
	if (need > limit)
		return cli_fail("cannot load %zu x %zu features of store '%s' as f32: that takes %s, more than the "
				"limit of %s (3/4 of the available memory)",
				out->m.rows, out->m.dim, fc_store_path(s), cli_size_text(a, sizeof a, need),
				cli_size_text(b, sizeof b, limit));
	int err = fc_store_fill_rows(s, id, &out->m, FC_LOAD_F32);
	if (err)
		return cli_store_fail(s, err, "load features from");
	out->x = fc_matrix_rows(&out->m);
	return 0;
}

int cli_load_split_as(fc_store *s, const uint8_t id[FC_HASH_LEN], unsigned mask, int keep_unlabeled,
		     double val_from_train, fc_load_how how, cli_split_data *out)
{
	memset(out, 0, sizeof *out);
	/* val carved from train: train's items are read for either */
	unsigned load = mask;
	if (val_from_train > 0 && (mask & (1u << FC_SPLIT_VAL)))
		load |= 1u << FC_SPLIT_TRAIN;
	int err = fc_store_load_items_as(s, id, load, how, &out->m, &out->missing);
	if (err)
		return cli_store_fail(s, err, "load features from");
	fc_matrix *m = &out->m;
	/* the features' bytes per row, wherever they are kept */
	uint8_t *feat = m->data ? (uint8_t *)m->data : m->packed;
	size_t rb = m->dim * fc_row_type_size(m->type);
	size_t w = 0;
	for (size_t r = 0; r < m->rows; r++) {
		m->splits[r] = (uint8_t)cli_split_of(m->keys[r], m->splits[r], val_from_train);
		if (!(mask & (1u << (m->splits[r] <= FC_SPLIT_TEST ? m->splits[r] : FC_SPLIT_TRAIN))))
			continue;
		if (m->labels[r] == FC_NO_LABEL && !keep_unlabeled) {
			out->unlabeled++;
			continue;
		}
		if (w != r) {
			if (feat)
				memmove(feat + w * rb, feat + r * rb, rb);
			if (m->scale)
				memcpy(m->scale + 2 * w, m->scale + 2 * r, 2 * sizeof *m->scale);
			memcpy(m->hashes[w], m->hashes[r], FC_HASH_LEN);
			m->keys[w] = m->keys[r];
			m->labels[w] = m->labels[r];
			m->splits[w] = m->splits[r];
		}
		w++;
	}
	m->rows = w;
	out->x = fc_matrix_rows(m);
	return 0;
}

/* fc_rows_fetch_fn of a split streamed from the run's stream: its rows are
 * the stream's rows from view->first on. */
static int view_fetch(void *ctx, float *dst, const uint32_t *rows, size_t n)
{
	cli_stream_view *v = ctx;
	if (n > v->cap) {
		uint32_t *p = realloc(v->idx, n * sizeof *p);
		if (!p)
			return FC_ERR_NOMEM;
		v->idx = p;
		v->cap = n;
	}
	for (size_t i = 0; i < n; i++)
		v->idx[i] = (uint32_t)(v->first + rows[i]);
	return fc_stream_fetch(v->stream, dst, v->idx, n);
}

/* Bytes per row of what a split keeps besides its features: hash, key
 * pointer and (an average) key, label, split, class number. */
#define META_PER_ROW 72

int cli_plan_features(cli_feature_plan *p, const char *cmd, fc_store **s, const uint8_t id[FC_HASH_LEN],
		      cli_split_data *const *sp, size_t n, uint64_t extra, const cli_mem_opts *mo, int quiet)
{
	memset(p, 0, sizeof *p);
	fc_extractor ex;
	int err = fc_store_get_extractor(*s, id, &ex);
	if (err)
		return cli_store_fail(*s, err, "read");
	size_t rows = 0;
	uint64_t feat = 0;
	for (size_t i = 0; i < n; i++) {
		rows += sp[i]->m.rows;
		size_t b = fc_rows_bytes((fc_row_type)ex.dtype, sp[i]->m.rows, ex.dim);
		feat = b == SIZE_MAX || feat + b < feat ? UINT64_MAX : feat + b;
	}
	uint64_t meta = (uint64_t)rows * META_PER_ROW, base = CLI_MEM_BASE + meta + extra;
	p->limit = cli_mem_limit(mo);
	p->cache = mo->cache ? mo->cache : CLI_CACHE_DEFAULT;
	p->need = feat == UINT64_MAX ? UINT64_MAX : base + feat;
	char a[32], b[32], c[32], d[32];
	if (p->need <= p->limit) {
		for (size_t i = 0; i < n; i++) {
			if (sp[i]->m.rows == 0) { /* a split not asked for, or empty */
				sp[i]->x = (fc_rows){ .type = (fc_row_type)ex.dtype, .dim = ex.dim };
				continue;
			}
			if ((err = fc_store_fill_rows(*s, id, &sp[i]->m, FC_LOAD_STORED)) != 0)
				return cli_store_fail(*s, err, "load features from");
			sp[i]->x = fc_matrix_rows(&sp[i]->m);
		}
		return 0;
	}
	/* Streamed: the row list (12 bytes a row in the stream) and the cache. */
	uint64_t in_ram = p->need;
	p->need = base + (uint64_t)rows * (FC_HASH_LEN + 12) + p->cache;
	if (p->need > p->limit)
		return cli_fail("%s needs %s of memory with its features streamed (a %s cache, %s for the item "
				"records and what %s computes), more than the limit of %s: raise --max-memory or "
				"lower --cache",
				cmd, cli_size_text(a, sizeof a, p->need), cli_size_text(b, sizeof b, p->cache),
				cli_size_text(c, sizeof c, p->need - p->cache), cmd, cli_size_text(d, sizeof d, p->limit));
	p->streamed = 1;
	p->hashes = malloc((rows ? rows : 1) * FC_HASH_LEN);
	if (!p->hashes)
		return cli_fail("out of memory");
	size_t first = 0;
	for (size_t i = 0; i < n; i++) {
		if (sp[i]->m.rows) /* an empty split may have no hashes at all */
			memcpy(p->hashes + first, sp[i]->m.hashes, sp[i]->m.rows * FC_HASH_LEN);
		sp[i]->view = (cli_stream_view){ .first = first };
		first += sp[i]->m.rows;
	}
	if ((err = fc_stream_open(&p->stream, *s, id, (const uint8_t(*)[FC_HASH_LEN])p->hashes, rows, p->cache)) != 0)
		return cli_store_fail(*s, err, "read features from");
	p->store = *s;
	*s = NULL;
	for (size_t i = 0; i < n; i++) {
		sp[i]->view.stream = p->stream;
		sp[i]->x = (fc_rows){ .type = FC_ROW_F32, .n = sp[i]->m.rows, .dim = ex.dim, .fetch = view_fetch,
				      .ctx = &sp[i]->view };
	}
	if (!quiet)
		printf("features: streamed from the store through a %s cache (in memory they would need %s, the "
		       "limit is %s)\n",
		       cli_size_text(a, sizeof a, p->cache), cli_size_text(b, sizeof b, in_ram),
		       cli_size_text(c, sizeof c, p->limit));
	return 0;
}

void cli_feature_plan_free(cli_feature_plan *p)
{
	fc_stream_free(p->stream);
	free(p->hashes);
	fc_store_free(p->store);
	memset(p, 0, sizeof *p);
}

int cli_split_empty(fc_store *s, unsigned mask, double val_from_train, const char *opt, const char *name,
		    char *what, char *advice, size_t cap)
{
	static const char *const names[] = { "train", "val", "test" };
	fc_store_stats st;
	if (fc_store_stats_get(s, &st) < 0)
		return 0; /* no counts: the caller's plainer message stands */
	free(st.extractors);
	st.splits[FC_SPLIT_TRAIN] += st.splits[3]; /* items with no split count as train */
	uint64_t in_mask = 0;
	for (int i = 0; i < 3; i++)
		if (mask & (1u << i))
			in_mask += st.splits[i];
	int carve = val_from_train > 0 && (mask & (1u << FC_SPLIT_VAL)) && st.splits[FC_SPLIT_TRAIN];
	if (in_mask || carve)
		return 0;
	size_t n = (size_t)snprintf(what, cap, "no items in split '%s' of store '%s' (", name, fc_store_path(s));
	const char *sep = "splits: ";
	for (int i = 0; i < 3 && n < cap; i++)
		if (st.splits[i]) {
			n += (size_t)snprintf(what + n, cap - n, "%s%s %llu", sep, names[i],
					      (unsigned long long)st.splits[i]);
			sep = ", ";
		}
	if (n < cap)
		snprintf(what + n, cap - n, "%s)", sep[0] == 's' ? "the store has no items" : "");
	/* Another split that has items: test, then val, then train. */
	static const int order[] = { FC_SPLIT_TEST, FC_SPLIT_VAL, FC_SPLIT_TRAIN };
	const char *other = NULL;
	for (int i = 0; i < 3 && !other; i++)
		if (!(mask & (1u << order[i])) && st.splits[order[i]])
			other = names[order[i]];
	int suggest_carve = (mask & (1u << FC_SPLIT_VAL)) && st.splits[FC_SPLIT_TRAIN];
	if (other && suggest_carve)
		snprintf(advice, cap, "use %s %s, or --val-from-train 0.1", opt, other);
	else if (other)
		snprintf(advice, cap, "use %s %s", opt, other);
	else if (suggest_carve)
		snprintf(advice, cap, "use --val-from-train 0.1");
	else
		snprintf(advice, cap, "run 'featcache extract' first");
	return 1;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

uint32_t *cli_dense_classes(const uint32_t *labels, size_t n, uint32_t *n_classes)
{
	uint32_t *sorted = malloc((n ? n : 1) * sizeof *sorted);
	uint32_t *out = malloc((n ? n : 1) * sizeof *out);
	if (!sorted || !out) {
		free(sorted);
		free(out);
		return NULL;
	}
	memcpy(sorted, labels, n * sizeof *sorted);
	qsort(sorted, n, sizeof *sorted, cmp_u32);
	size_t u = 0;
	for (size_t i = 0; i < n; i++)
		if (i == 0 || sorted[i] != sorted[u - 1])
			sorted[u++] = sorted[i];
	for (size_t i = 0; i < n; i++) {
		const uint32_t *p = bsearch(&labels[i], sorted, u, sizeof *sorted, cmp_u32);
		out[i] = (uint32_t)(p - sorted);
	}
	*n_classes = (uint32_t)u;
	free(sorted);
	return out;
}

size_t cli_k_used(uint64_t k, size_t candidates, const char *split)
{
	if (k <= candidates)
		return (size_t)k;
	cli_warn("-k %llu is more than the %zu candidates each query of the %s split is searched among: metrics "
		 "are at k %zu",
		 (unsigned long long)k, candidates, split, candidates);
	return candidates;
}

int cli_parse_float(const char *cmd, const char *opt, const char *val, double min, double max, float *out)
{
	char *end;
	errno = 0;
	double v = strtod(val, &end);
	if (end == val || *end != '\0' || errno == ERANGE || !isfinite(v))
		return cli_usage_error(cmd, "bad value '%s' for %s: expected a number", val, opt);
	if (v < min || v > max)
		return cli_usage_error(cmd, "bad value '%s' for %s: must be from %g to %g", val, opt, min, max);
	*out = (float)v;
	return 0;
}

void cli_image_vectors_free(cli_image_vectors *v)
{
	free(v->data);
	free(v->keys);
	memset(v, 0, sizeof *v);
}

/* The model file the extractor's descriptor records, when it is still there
 * with the bytes the extractor was made from (the hash says so before the
 * model is parsed): *path malloc'd. Prints why not and returns an exit
 * code otherwise. */
static int recorded_model(const char *descriptor, const char *hex, char **path)
{
	json_t *d = json_loads(descriptor ? descriptor : "{}", 0, NULL);
	const char *model = json_string_value(json_object_get(d, "model"));
	const char *want = json_string_value(json_object_get(d, "model_xxh3"));
	char why[FC_ERRLEN], got[2 * FC_HASH_LEN + 1];
	uint8_t hash[FC_HASH_LEN];
	uint64_t size;
	int64_t mtime;
	int rc = 0;
	if (!model || !want)
		rc = cli_fail("extractor %.12s does not record its model file: give --model", hex);
	else if ((rc = fc_hash_file(model, hash, &size, &mtime, why, sizeof why)) != 0)
		rc = rc == FC_ERR_NOT_FOUND
			     ? cli_fail("model '%s', which extractor %.12s was made with, is gone: give --model", model, hex)
			     : cli_fail("%s; give --model", why);
	else {
		fc_hex(got, hash, FC_HASH_LEN);
		if (strcmp(got, want) != 0)
			rc = cli_fail("model '%s' has changed since extractor %.12s was made with it: give --model", model,
				     hex);
		else if (!(*path = strdup(model)))
			rc = cli_fail("out of memory");
	}
	json_decref(d);
	return rc;
}

static void warn_failed(void *ctx, const char *key, const char *why)
{
	(void)ctx;
	cli_warn("cannot embed '%s': %s; left out", key, why);
}

static void fail_failed(void *ctx, const char *key, const char *why)
{
	(void)ctx;
	cli_err("cannot extract image '%s': %s", key, why);
}

int cli_embed_images(fc_store *s, const uint8_t id[FC_HASH_LEN], const char *model, const fc_dataset *ds,
		     int batch, int threads, int strict, cli_image_vectors *out)
{
	memset(out, 0, sizeof *out);
	fc_extractor ex;
	int rc = fc_store_get_extractor(s, id, &ex);
	if (rc)
		return cli_store_fail(s, rc, "read");
	char err[FC_ERRLEN], want[2 * FC_HASH_LEN + 1], got[2 * FC_HASH_LEN + 1];
	char *recorded = NULL;
	fc_extract_ctx *x = NULL;
	uint8_t(*hashes)[FC_HASH_LEN] = NULL;
	uint8_t *failed = NULL;
	fc_hex(want, id, FC_HASH_LEN);
	if (!model) {
		if ((rc = recorded_model(ex.descriptor, want, &recorded)) != 0)
			return rc;
		model = recorded;
	}
	/* ex.descriptor belongs to the store until its next call: used here. */
	if ((rc = fc_extract_open_like(&x, model, ex.descriptor, ex.dtype, batch, threads, err, sizeof err)) != 0) {
		rc = cli_fail("%s", err);
		goto out;
	}
	fc_hex(got, fc_extract_id(x), FC_HASH_LEN);
	if (strcmp(want, got) != 0) {
		rc = cli_fail("model '%s' does not reproduce extractor %.12s of store '%s' (another model file?)", model,
			     want, fc_store_path(s));
		goto out;
	}
	size_t n1 = ds->n ? ds->n : 1;
	hashes = malloc(n1 * sizeof *hashes);
	failed = calloc(n1, 1);
	out->dim = fc_extract_dim(x);
	out->data = malloc(n1 * out->dim * sizeof *out->data);
	out->keys = malloc(n1 * sizeof *out->keys);
	if (!hashes || !failed || !out->data || !out->keys) {
		rc = cli_fail("out of memory");
		goto out;
	}
	cli_catch_interrupt();
	fc_extract_run_opts ro = { .cache_only = 1, .hashes = hashes, .failed = failed,
				   .on_fail = strict ? fail_failed : warn_failed, .logger = cli_logger() };
	fc_extract_stats st;
	rc = fc_extract_run(x, s, ds, &ro, &st, err, sizeof err);
	cli_progress_end();
	if (rc) {
		rc = cli_fail("cannot embed: %s", err);
		goto out;
	}
	for (size_t i = 0; i < ds->n; i++) {
		if (failed[i])
			continue;
		if ((rc = fc_store_get(s, id, hashes[i], out->data + out->n * out->dim, out->dim)) != 0) {
			rc = cli_store_fail(s, rc, "read");
			goto out;
		}
		out->keys[out->n++] = ds->entries[i].key;
	}
	fprintf(stderr, "featcache: %zu images: %llu extracted, %zu from the cache, %llu failed\n", ds->n,
		(unsigned long long)st.extracted, out->n - (size_t)st.extracted, (unsigned long long)st.failed);
	rc = strict && st.failed ? CLI_EXIT_FAIL : 0;
out:
	free(hashes);
	free(failed);
	free(recorded);
	fc_extract_free(x);
	return rc;
}
