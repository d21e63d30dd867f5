/*
 * data.c - loading labelled features for train, eval and embed (data.h).
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/data.h"
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
}

int cli_load_split(fc_store *s, const uint8_t id[FC_HASH_LEN], unsigned mask, int keep_unlabeled,
		  cli_split_data *out)
{
	memset(out, 0, sizeof *out);
	int err = fc_store_load_items(s, id, mask, &out->m, &out->missing);
	if (err)
		return cli_store_fail(s, err, "load features from");
	if (keep_unlabeled)
		return 0;
	fc_matrix *m = &out->m;
	size_t w = 0;
	for (size_t r = 0; r < m->rows; r++) {
		if (m->labels[r] == FC_NO_LABEL) {
			out->unlabeled++;
			continue;
		}
		if (w != r) {
			memmove(m->data + w * m->dim, m->data + r * m->dim, m->dim * sizeof(float));
			memcpy(m->hashes[w], m->hashes[r], FC_HASH_LEN);
			m->keys[w] = m->keys[r];
			m->labels[w] = m->labels[r];
			m->splits[w] = m->splits[r];
		}
		w++;
	}
	m->rows = w;
	return 0;
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
