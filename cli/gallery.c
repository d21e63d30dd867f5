/*
 * gallery.c - the views of a head on its store, for the report (gallery.h):
 * load the eval split (and its index split), embed it with the head, rank
 * and score every query raw and through the head (train/'s fc_knn and
 * fc_eval_knn_queries), group the scores by class, count confused class
 * pairs, pick the gallery's queries, make thumbnails within the page's
 * budget, and map the embeddings in 2-D (fc_pca2).
 *
 * Everything here is glue: no metric or ranking is computed in this file.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/data.h"
#include "cli/gallery.h"
#include "featcache/image.h"
#include "featcache/train.h"
#include "util/util.h"

struct cli_views {
	fc_views v;
	cli_split_data q, ix;      /* the queries and (another split) their index */
	char split[32], store[PATH_MAX], head[PATH_MAX];
	char **names;              /* class names, by dense class */
	uint32_t n_cls;
	uint32_t *qcls, *icls;     /* dense classes of q and the index (icls points into qcls's block) */
	uint32_t *nbr[2];          /* fc_knn lists (nq, kk) */
	float *sim[2];
	size_t *nn[2], kk;
	double *rows[2];           /* per-query metrics (nq, 9) */
	fc_view_item *items;
	fc_view_query *queries;
	uint32_t *qnb;             /* the galleries' neighbour lists, items indices */
	float *qsim;
	fc_view_class *classes;
	fc_view_pair *pairs;
	float *xy[2];
	uint32_t *pcls;
	const char **pkey;
	uint8_t **jpeg;            /* per item */
	char note[3 * PATH_MAX];
};

void cli_views_opts_init(cli_views_opts *o)
{
	memset(o, 0, sizeof *o);
	o->queries = CLI_VIEWS_QUERIES;
	o->neighbours = CLI_VIEWS_NEIGHBOURS;
}

const fc_views *cli_views_get(const cli_views *v)
{
	return &v->v;
}

void cli_views_free(cli_views *v)
{
	if (!v)
		return;
	for (uint32_t c = 0; v->names && c < v->n_cls; c++)
		free(v->names[c]);
	for (size_t i = 0; v->jpeg && i < v->v.n_items; i++)
		free(v->jpeg[i]);
	for (int s = 0; s < 2; s++) {
		free(v->nbr[s]);
		free(v->sim[s]);
		free(v->nn[s]);
		free(v->rows[s]);
		free(v->xy[s]);
	}
	free(v->jpeg);
	free(v->names);
	free(v->qcls);
	free(v->items);
	free(v->queries);
	free(v->qnb);
	free(v->qsim);
	free(v->classes);
	free(v->pairs);
	free(v->pcls);
	free(v->pkey);
	cli_split_data_free(&v->q);
	cli_split_data_free(&v->ix);
	free(v);
}

/* Dense classes over the queries and the index together, and their names. */
static int classes_of(cli_views *v, fc_store *s)
{
	const fc_matrix *q = &v->q.m, *ix = v->ix.m.rows ? &v->ix.m : NULL;
	size_t nq = q->rows, ni = ix ? ix->rows : 0;
	uint32_t *all = malloc((nq + ni + 1) * sizeof *all);
	if (!all)
		return cli_fail("out of memory");
	memcpy(all, q->labels, nq * sizeof *all);
	if (ni)
		memcpy(all + nq, ix->labels, ni * sizeof *all);
	uint32_t *dense = cli_dense_classes(all, nq + ni, &v->n_cls);
	int rc = 0;
	if (!dense || !(v->names = calloc(v->n_cls + 1, sizeof *v->names))) {
		rc = cli_fail("out of memory");
		goto out;
	}
	for (size_t i = 0; i < nq + ni; i++) {
		if (v->names[dense[i]])
			continue;
		char buf[1024];
		if (fc_store_label_name(s, all[i], buf, sizeof buf) != 0)
			snprintf(buf, sizeof buf, "label %u", all[i]);
		if (!(v->names[dense[i]] = strdup(buf))) {
			rc = cli_fail("out of memory");
			goto out;
		}
	}
	v->qcls = dense;
	v->icls = ni ? dense + nq : dense;
	dense = NULL;
out:
	free(dense);
	free(all);
	return rc;
}

/* Rank and score every query, raw ([0]) and through the head ([1]). */
static int rank_all(cli_views *v, fc_head *head, const cli_views_opts *o, size_t k)
{
	const fc_matrix *q = &v->q.m, *ix = v->ix.m.rows ? &v->ix.m : &v->q.m;
	int self = v->ix.m.rows == 0, rc = 0;
	size_t nq = q->rows, ni = ix->rows, dim = q->dim, od = fc_head_get_config(head).out_dim;
	v->kk = k > o->neighbours ? k : (size_t)o->neighbours;
	float *hq = malloc(nq * od * sizeof *hq), *hi = self ? hq : malloc(ni * od * sizeof *hi);
	if (!hq || !hi) {
		rc = cli_fail("out of memory");
		goto out;
	}
	if ((rc = fc_head_embed(head, hq, q->data, nq, 1)) != 0 ||
	    (!self && (rc = fc_head_embed(head, hi, ix->data, ni, 1)) != 0)) {
		rc = cli_fail("cannot apply head '%s': %s", o->head, fc_strerror(rc));
		goto out;
	}
	for (int s = 0; s < 2; s++) {
		const float *qs = s ? hq : q->data, *is = s ? hi : ix->data;
		size_t d = s ? od : dim;
		fc_metrics m;
		if (!(v->nbr[s] = malloc(nq * v->kk * sizeof *v->nbr[s])) ||
		    !(v->sim[s] = malloc(nq * v->kk * sizeof *v->sim[s])) ||
		    !(v->nn[s] = calloc(nq, sizeof *v->nn[s])) || !(v->rows[s] = malloc(nq * 9 * sizeof *v->rows[s]))) {
			rc = cli_fail("out of memory");
			goto out;
		}
		if ((rc = fc_knn(v->nbr[s], v->sim[s], v->nn[s], qs, nq, is, ni, d, v->kk, self)) != 0 ||
		    (rc = fc_eval_knn_queries(&m, v->rows[s], qs, q->labels, nq, is, ix->labels, ni, d, k, self)) != 0) {
			rc = cli_fail("cannot rank the %s split: %s", v->split, fc_strerror(rc));
			goto out;
		}
	}
	/* The map: up to CLI_VIEWS_MAP_POINTS queries, a seeded sample (in row
	 * order) when there are more. */
	size_t np = nq < CLI_VIEWS_MAP_POINTS ? nq : CLI_VIEWS_MAP_POINTS;
	size_t *pick = malloc((nq ? nq : 1) * sizeof *pick);
	float *g[2] = { malloc((np ? np : 1) * dim * sizeof(float)), malloc((np ? np : 1) * od * sizeof(float)) };
	if (!pick || !g[0] || !g[1] || !(v->xy[0] = malloc(np * 2 * sizeof(float) + 1)) ||
	    !(v->xy[1] = malloc(np * 2 * sizeof(float) + 1)) || !(v->pcls = malloc(np * sizeof *v->pcls + 1)) ||
	    !(v->pkey = malloc(np * sizeof *v->pkey + 1))) {
		rc = cli_fail("out of memory");
		goto map_out;
	}
	uint64_t st = o->seed ^ 0x6d6170;
	for (size_t i = 0; i < nq; i++)
		pick[i] = i;
	for (size_t i = 0; i < np && np < nq; i++) {
		size_t j = i + (size_t)(fci_splitmix64(&st) % (nq - i)), t = pick[i];
		pick[i] = pick[j];
		pick[j] = t;
	}
	for (size_t i = 1; i < np; i++) /* back to row order: the map reads the same for any sample order */
		for (size_t j = i; j > 0 && pick[j - 1] > pick[j]; j--) {
			size_t t = pick[j];
			pick[j] = pick[j - 1];
			pick[j - 1] = t;
		}
	for (size_t i = 0; i < np; i++) {
		memcpy(g[0] + i * dim, q->data + pick[i] * dim, dim * sizeof(float));
		memcpy(g[1] + i * od, hq + pick[i] * od, od * sizeof(float));
		v->pcls[i] = v->qcls[pick[i]];
		v->pkey[i] = q->keys[pick[i]];
	}
	for (int s = 0; s < 2 && np; s++)
		if ((rc = fc_pca2(v->xy[s], v->v.explained[s], g[s], np, s ? od : dim)) != 0) {
			rc = cli_fail("cannot map the embeddings: %s", fc_strerror(rc));
			goto map_out;
		}
	v->v.n_points = np;
	v->v.map_total = nq;
map_out:
	free(g[0]);
	free(g[1]);
	free(pick);
out:
	if (hi != hq)
		free(hi);
	free(hq);
	return rc;
}

static int by_gain(const void *a, const void *b)
{
	const fc_view_class *x = a, *y = b;
	double gx = x->ap[1] - x->ap[0], gy = y->ap[1] - y->ap[0];
	if (gx != gy)
		return gx < gy ? 1 : -1;
	return strcmp(x->label, y->label);
}

static int by_share(const void *a, const void *b)
{
	const fc_view_pair *x = a, *y = b;
	double sx = fmax(x->share[0], x->share[1]), sy = fmax(y->share[0], y->share[1]);
	if (sx != sy)
		return sx < sy ? 1 : -1;
	int c = strcmp(x->a, y->a);
	return c ? c : strcmp(x->b, y->b);
}

/* The per-class table and the ten most confused pairs. */
static int class_views(cli_views *v, size_t k)
{
	size_t nq = v->q.m.rows, C = v->n_cls, ni = v->ix.m.rows ? v->ix.m.rows : nq;
	double *mc[2] = { malloc(C * 9 * sizeof(double)), malloc(C * 9 * sizeof(double)) };
	size_t *cnt = malloc(C * sizeof *cnt), *nk = malloc((nq ? nq : 1) * sizeof *nk);
	uint64_t *conf[2] = { malloc(C * C * sizeof(uint64_t)), malloc(C * C * sizeof(uint64_t)) };
	int rc = 0;
	if (!mc[0] || !mc[1] || !cnt || !nk || !conf[0] || !conf[1] || !(v->classes = calloc(C, sizeof *v->classes))) {
		rc = cli_fail("out of memory");
		goto out;
	}
	for (int s = 0; s < 2 && !rc; s++) {
		for (size_t i = 0; i < nq; i++)
			nk[i] = v->nn[s][i] < k ? v->nn[s][i] : k;
		if (fc_metrics_by_class(mc[s], cnt, v->rows[s], v->qcls, nq, C) != 0 ||
		    fc_knn_confusion(conf[s], v->nbr[s], nk, nq, v->kk, v->qcls, v->icls, ni, C) != 0)
			rc = cli_fail("cannot group the metrics by class");
	}
	if (rc)
		goto out;
	size_t n = 0;
	for (size_t c = 0; c < C; c++) {
		if (!cnt[c])
			continue; /* a class only the index split has */
		fc_view_class *x = &v->classes[n++];
		x->label = v->names[c];
		x->queries = cnt[c];
		for (int s = 0; s < 2; s++) {
			x->precision[s] = mc[s][c * 9 + 0];
			x->ap[s] = mc[s][c * 9 + 4];
		}
	}
	qsort(v->classes, n, sizeof *v->classes, by_gain);
	v->v.classes = v->classes;
	v->v.n_classes = n;

	double wrong[2] = { 0, 0 };
	for (int s = 0; s < 2; s++)
		for (size_t a = 0; a < C; a++)
			for (size_t b = 0; b < C; b++)
				wrong[s] += a != b ? (double)conf[s][a * C + b] : 0;
	size_t np = 0, cap = C * (C - 1) / 2;
	if (cap && !(v->pairs = calloc(cap, sizeof *v->pairs))) {
		rc = cli_fail("out of memory");
		goto out;
	}
	for (size_t a = 0; a < C; a++)
		for (size_t b = a + 1; b < C; b++) {
			fc_view_pair p = { v->names[a], v->names[b], { 0, 0 } };
			for (int s = 0; s < 2; s++)
				p.share[s] = wrong[s] > 0 ? (double)(conf[s][a * C + b] + conf[s][b * C + a]) / wrong[s] : 0;
			if (p.share[0] > 0 || p.share[1] > 0)
				v->pairs[np++] = p;
		}
	qsort(v->pairs, np, sizeof *v->pairs, by_share);
	v->v.pairs = v->pairs;
	v->v.n_pairs = np < 10 ? np : 10;
out:
	free(conf[0]);
	free(conf[1]);
	free(nk);
	free(cnt);
	free(mc[0]);
	free(mc[1]);
	return rc;
}

/* The gallery's queries: a seeded sample, then those the head improved and
 * hurt most by average precision (each at most once). */
static size_t pick_queries(const cli_views *v, const cli_views_opts *o, size_t *sel, const char **why)
{
	size_t nq = v->q.m.rows, n = 0, ns = nq < o->queries ? nq : (size_t)o->queries;
	size_t *perm = malloc((nq ? nq : 1) * sizeof *perm);
	if (!perm)
		return SIZE_MAX;
	uint64_t st = o->seed;
	for (size_t i = 0; i < nq; i++)
		perm[i] = i;
	for (size_t i = 0; i < ns; i++) {
		size_t j = i + (size_t)(fci_splitmix64(&st) % (nq - i)), t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
		sel[n] = perm[i];
		why[n++] = "sample";
	}
	free(perm);
	for (int dir = 1; dir >= -1; dir -= 2)
		for (size_t e = 0; e < CLI_VIEWS_EXTREMES; e++) {
			size_t best = SIZE_MAX;
			double bd = 0;
			for (size_t q = 0; q < nq; q++) {
				double d = dir * (v->rows[1][q * 9 + 4] - v->rows[0][q * 9 + 4]);
				int taken = 0;
				for (size_t j = 0; j < n && !taken; j++)
					taken = sel[j] == q;
				if (!taken && d > bd) {
					bd = d;
					best = q;
				}
			}
			if (best == SIZE_MAX)
				break;
			sel[n] = best;
			why[n++] = dir > 0 ? "improved most" : "hurt most";
		}
	return n;
}

/* The item of row r of the queries (set 0) or of the index (set 1). */
static uint32_t item_of(cli_views *v, uint32_t *map, const fc_matrix *m, const uint32_t *cls, size_t r)
{
	if (map[r] != UINT32_MAX)
		return map[r];
	fc_view_item *it = &v->items[v->v.n_items];
	it->key = m->keys[r];
	it->cls = cls[r];
	it->label = v->names[cls[r]];
	map[r] = (uint32_t)v->v.n_items++;
	return map[r];
}

/* Thumbnails of every item at `side`; how many base64 bytes the page
 * gets (an item shown twice counts twice) in *bytes. */
struct thumbs {
	cli_views *v;
	int side;
	const size_t *uses;
	size_t bytes;
	char **shard; /* per item: the tar shard it is in, or NULL */
	const char **sample;
};

/* Item i's thumbnail from its image's bytes. */
static int thumb_of(void *ctx, size_t i, const uint8_t *data, size_t len)
{
	struct thumbs *t = ctx;
	fc_view_item *it = &t->v->items[i];
	fc_image img = { 0 };
	if (fc_image_decode(&img, data, len, NULL, 0) != 0 ||
	    fc_image_thumbnail(&img, t->side, t->side > 64 ? 80 : 70, &t->v->jpeg[i], &it->jpeg_len, &it->w, &it->h,
			       NULL, 0) != 0) {
		it->missing = "image undecodable";
		fc_image_free(&img);
		return 0;
	}
	fc_image_free(&img);
	it->jpeg = t->v->jpeg[i];
	it->missing = NULL;
	t->bytes += t->uses[i] * ((it->jpeg_len + 2) / 3 * 4);
	return 0;
}

struct shard_ctx {
	struct thumbs *t;
	const size_t *idx; /* the shard's j-th key is item idx[j] */
};

static int shard_thumb(void *ctx, size_t j, const uint8_t *data, size_t len)
{
	struct shard_ctx *c = ctx;
	return thumb_of(c->t, c->idx[j], data, len);
}

/* The items' images under root: files, or samples of tar shards there,
 * each shard read once for all its items. */
static void thumbnails(cli_views *v, const char *root, int side, const size_t *uses, size_t *bytes)
{
	size_t n = v->v.n_items;
	struct thumbs t = { .v = v, .side = side, .uses = uses };
	uint8_t *buf = NULL;
	size_t cap = 0;
	t.shard = calloc(n + 1, sizeof *t.shard);
	t.sample = calloc(n + 1, sizeof *t.sample);
	for (size_t i = 0; i < n; i++) {
		fc_view_item *it = &v->items[i];
		char path[PATH_MAX * 2], why[FC_ERRLEN];
		size_t len = 0;
		free(v->jpeg[i]);
		v->jpeg[i] = NULL;
		it->jpeg = NULL;
		snprintf(path, sizeof path, "%s/%s", root, it->key);
		int rc = fci_read_file(path, (uint64_t)1 << 28, &buf, &cap, &len, why, sizeof why);
		if (rc == 0) {
			thumb_of(&t, i, buf, len);
			continue;
		}
		it->missing = rc == FC_ERR_NOT_FOUND ? "image missing" : "image unreadable";
		int at = rc == FC_ERR_NOT_FOUND && t.shard ? fc_wds_locate(root, it->key, path, sizeof path) : -1;
		if (at >= 0 && (t.shard[i] = strdup(path)) != NULL)
			t.sample[i] = it->key + at;
	}
	free(buf);
	/* A shard's items together, each shard read once. */
	for (size_t i = 0; t.shard && i < n; i++) {
		if (!t.shard[i])
			continue;
		const char **keys = malloc(n * sizeof *keys);
		size_t *idx = malloc(n * sizeof *idx), m = 0;
		for (size_t j = i; keys && idx && j < n; j++)
			if (t.shard[j] && strcmp(t.shard[j], t.shard[i]) == 0) {
				keys[m] = t.sample[j];
				idx[m++] = j;
			}
		struct shard_ctx c = { &t, idx };
		if (keys && idx)
			fc_wds_images(t.shard[i], keys, m, shard_thumb, &c, NULL, 0);
		for (size_t j = m; j-- > 0;) {
			if (idx[j] != i) {
				free(t.shard[idx[j]]);
				t.shard[idx[j]] = NULL;
			}
		}
		free(keys);
		free(idx);
		free(t.shard[i]);
		t.shard[i] = NULL;
	}
	free(t.shard);
	free(t.sample);
	*bytes = t.bytes;
}

/* The galleries: queries, their neighbours as items, thumbnails within the
 * budget (96 px; 64 px when over; then later ones left out, said in the
 * note). Without a dataset root they are left out, and the note says so. */
static int gallery_views(cli_views *v, const cli_views_opts *o, fc_store *s)
{
	size_t nq = v->q.m.rows, self = v->ix.m.rows == 0, ni = self ? nq : v->ix.m.rows;
	size_t maxq = (size_t)o->queries + 2 * CLI_VIEWS_EXTREMES, nb = (size_t)o->neighbours;
	size_t *sel = malloc(maxq * sizeof *sel), *uses = NULL;
	const char **why = malloc(maxq * sizeof *why);
	uint32_t *qmap = malloc((nq + 1) * sizeof *qmap), *imap = self ? qmap : malloc((ni + 1) * sizeof *imap);
	int rc = 0;
	char root[PATH_MAX];
	if (!sel || !why || !qmap || !imap) {
		rc = cli_fail("out of memory");
		goto out;
	}
	if (o->data) {
		if (!realpath(o->data, root)) {
			rc = cli_fail("cannot read dataset '%s': %s", o->data, strerror(errno));
			goto out;
		}
	} else if (fc_store_get_data_root(s, root, sizeof root) != 0) {
		snprintf(v->note, sizeof v->note,
			 "No pictures: store '%s' does not record where its images are (it was extracted before "
			 "featcache recorded it). Give --data DIR, the directory the item keys are relative to.",
			 v->store);
		v->v.note = v->note;
		goto out;
	}
	size_t n = pick_queries(v, o, sel, why);
	size_t most = n * (1 + 2 * nb);
	if (n == SIZE_MAX || !(v->items = calloc(most + 1, sizeof *v->items)) ||
	    !(v->queries = calloc(n + 1, sizeof *v->queries)) || !(v->qnb = malloc((most + 1) * sizeof *v->qnb)) ||
	    !(v->qsim = malloc((most + 1) * sizeof *v->qsim)) || !(uses = calloc(most + 1, sizeof *uses)) ||
	    !(v->jpeg = calloc(most + 1, sizeof *v->jpeg))) {
		rc = cli_fail("out of memory");
		goto out;
	}
	memset(qmap, 0xff, (nq + 1) * sizeof *qmap);
	if (!self)
		memset(imap, 0xff, (ni + 1) * sizeof *imap);
	const fc_matrix *im = self ? &v->q.m : &v->ix.m;
	size_t used = 0;
	for (size_t i = 0; i < n; i++) {
		fc_view_query *q = &v->queries[i];
		size_t r = sel[i];
		q->item = item_of(v, qmap, &v->q.m, v->qcls, r);
		uses[q->item]++;
		q->why = why[i];
		for (int st = 0; st < 2; st++) {
			q->ap[st] = v->rows[st][r * 9 + 4];
			q->n[st] = v->nn[st][r] < nb ? v->nn[st][r] : nb;
			q->nb[st] = v->qnb + used;
			q->sim[st] = v->qsim + used;
			for (size_t j = 0; j < q->n[st]; j++) {
				uint32_t it = item_of(v, imap, im, v->icls, v->nbr[st][r * v->kk + j]);
				v->qnb[used] = it;
				v->qsim[used++] = v->sim[st][r * v->kk + j];
				uses[it]++;
			}
		}
	}
	v->v.queries = v->queries;
	v->v.n_queries = n;
	v->v.items = v->items;
	size_t bytes;
	thumbnails(v, root, CLI_VIEWS_THUMB_SIDE, uses, &bytes);
	if (bytes > CLI_VIEWS_THUMB_BUDGET)
		thumbnails(v, root, 64, uses, &bytes);
	size_t left = 0, missing = 0, total = 0;
	for (size_t i = 0; i < v->v.n_items; i++) {
		fc_view_item *it = &v->items[i];
		size_t b = it->jpeg ? uses[i] * ((it->jpeg_len + 2) / 3 * 4) : 0;
		if (it->jpeg && total + b > CLI_VIEWS_THUMB_BUDGET) {
			it->jpeg = NULL;
			it->missing = "left out: page size";
			left++;
			continue;
		}
		total += b;
		missing += !it->jpeg;
	}
	if (left || missing) {
		size_t w = 0;
		if (missing)
			w += (size_t)snprintf(v->note + w, sizeof v->note - w,
					      "%zu of %zu images could not be read under '%s' (shown by their key). ", missing,
					      v->v.n_items, root);
		if (left)
			snprintf(v->note + w, sizeof v->note - w,
				 "%zu thumbnails were left out to keep the page under its size budget.", left);
		v->v.note = v->note;
	}
out:
	free(uses);
	if (imap != qmap)
		free(imap);
	free(qmap);
	free(why);
	free(sel);
	return rc;
}

int cli_views_build(cli_views **out, const char *cmd, const cli_views_opts *o)
{
	cli_views *v = calloc(1, sizeof *v);
	fc_head *head = NULL;
	fc_store *s = NULL;
	cli_head_origin origin = { 0 };
	char why[FC_ERRLEN] = "";
	int rc;
	*out = NULL;
	if (!v)
		return cli_fail("out of memory");
	if ((rc = fc_head_load(&head, o->head, 1024, why)) != 0) {
		rc = cli_fail("cannot load head '%s': %s", o->head, why);
		goto out;
	}
	cli_head_origin_read(&origin, o->head);
	const char *split = o->split ? o->split : origin.eval_split[0] ? origin.eval_split : "val";
	const char *isplit = o->split ? o->index_split : origin.index_split[0] ? origin.index_split : NULL;
	size_t k = o->k ? (size_t)o->k : origin.k ? (size_t)origin.k : 20;
	unsigned qmask, imask = 0;
	if ((rc = cli_parse_splits(cmd, "--split", split, &qmask)) != 0 ||
	    (isplit && (rc = cli_parse_splits(cmd, "--index-split", isplit, &imask)) != 0))
		goto out;
	snprintf(v->split, sizeof v->split, "%s", split);
	snprintf(v->store, sizeof v->store, "%s", o->store);
	snprintf(v->head, sizeof v->head, "%s", o->head);
	if ((rc = cli_open_store(&s, o->store, 1)) != 0)
		goto out;
	uint8_t id[FC_HASH_LEN];
	if ((rc = cli_pick_head_extractor(cmd, s, o->extractor, o->head, &origin, id)) != 0 ||
	    (rc = cli_load_split(s, id, qmask, 0, origin.val_from_train, &v->q)) != 0 ||
	    (isplit && (rc = cli_load_split(s, id, imask, 0, origin.val_from_train, &v->ix)) != 0))
		goto out;
	if (v->q.m.rows < 2 || (isplit && v->ix.m.rows == 0)) {
		rc = cli_fail("the %s split of store '%s' has too few labelled features to show neighbours", split,
			      o->store);
		goto out;
	}
	if (fc_head_get_config(head).in_dim != v->q.m.dim) {
		rc = cli_fail("head '%s' takes %u-d input, the features are %zu-d", o->head,
			      fc_head_get_config(head).in_dim, v->q.m.dim);
		goto out;
	}
	if ((rc = classes_of(v, s)) != 0 || (rc = rank_all(v, head, o, k)) != 0 || (rc = class_views(v, k)) != 0 ||
	    (rc = gallery_views(v, o, s)) != 0)
		goto out;
	v->v.store = v->store;
	v->v.head = v->head;
	v->v.split = v->split;
	v->v.k = k;
	v->v.neighbours = (size_t)o->neighbours;
	v->v.xy[0] = v->xy[0];
	v->v.xy[1] = v->xy[1];
	v->v.point_class = v->pcls;
	v->v.point_key = v->pkey;
	v->v.class_names = (const char *const *)v->names;
	v->v.n_class_names = v->n_cls;
	*out = v;
	v = NULL;
out:
	cli_head_origin_free(&origin);
	fc_head_free(head);
	fc_store_free(s);
	cli_views_free(v);
	return rc;
}

int cli_views_report(const char *html, const char *const *src, size_t n_src, const char *metric,
		     const char *title, const cli_views_opts *o, int quiet)
{
	cli_views *v = NULL;
	char err[FC_ERRLEN];
	size_t charts = 0;
	int rc = cli_views_build(&v, "report", o);
	if (rc)
		return rc;
	if (fc_report_write_views(html, src, n_src, metric, title, &v->v, &charts, err, sizeof err) != 0)
		rc = cli_fail("%s", err);
	else if (!quiet)
		printf("report written to '%s' (%zu chart%s, %zu gallery quer%s)\n", html, charts, charts == 1 ? "" : "s",
		       v->v.n_queries, v->v.n_queries == 1 ? "y" : "ies");
	cli_views_free(v);
	return rc;
}
