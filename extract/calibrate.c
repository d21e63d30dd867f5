/*
 * calibrate.c - the int8 calibration table: run the f32 model over a fixed
 * sample of images and record the range of every tensor an int8
 * convolution or matmul would quantise (engine.h, fc_calib); the table's
 * JSON form, which the extractor descriptor carries.
 *
 * The sample: the n entries (not marked bad) with the smallest
 * fc_hash_fraction(key, CALIB_SEED), run in key order; the same dataset
 * gives the same sample and the same table, whatever the order of its
 * files or the number of threads. Images that cannot be read or decoded
 * are left out (and counted).
 *
 * Per tensor, over all sampled images: the exact min and max, and a
 * histogram of |x| with HIST_BINS bins over [0, top), top doubling (pairs
 * of bins merged) whenever a batch exceeds it. FC_CALIB_MAX keeps [min,
 * max]; FC_CALIB_PERCENTILE clips both ends at the 99.99th percentile of
 * |x| (the upper edge of the bin where that share is reached), which
 * spends the 8 bits on the values that occur instead of on a few outliers.
 * docs/measured.md has the measurement that chose the default.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "extract/calibrate.h"
#include "extract/wds.h"
#include "featcache/engine.h"
#include "featcache/extract.h"
#include "featcache/model.h"
#include "util/util.h"

#define CALIB_SEED 0x1c8a11b7u
#define HIST_BINS 2048
#define CALIB_BATCH 16
#define MAX_MODEL ((uint64_t)1 << 32)
#define MAX_IMAGE ((uint64_t)1 << 30)
#define PERCENTILE 99.99

struct obs {
	double lo, hi, top;
	uint64_t count;
	uint64_t *hist; /* HIST_BINS */
};

struct calib_run {
	struct obs *t;
	int n;
	int oom;
};

/* Fold the histogram into half as many bins over twice the range. */
static void hist_double(struct obs *o)
{
	for (int k = 0; k < HIST_BINS / 2; k++)
		o->hist[k] = o->hist[2 * k] + o->hist[2 * k + 1];
	memset(o->hist + HIST_BINS / 2, 0, HIST_BINS / 2 * sizeof *o->hist);
	o->top *= 2;
}

static void observe(void *ctx, int k, const char *tensor, const float *x, size_t n)
{
	struct calib_run *r = ctx;
	(void)tensor;
	if (k < 0 || k >= r->n || !n)
		return;
	struct obs *o = &r->t[k];
	float lo = x[0], hi = x[0], m = 0;
	/* Between two primitives the engine's threads are idle: both passes
	 * run on them (the counts are integers, so the histogram is the same
	 * for any number of threads) */
#pragma omp parallel for simd reduction(min : lo) reduction(max : hi) schedule(static)
	for (size_t i = 0; i < n; i++) {
		lo = x[i] < lo ? x[i] : lo;
		hi = x[i] > hi ? x[i] : hi;
	}
	m = fmaxf(-lo, hi);
	if (!o->count) {
		o->lo = lo, o->hi = hi;
		o->top = m > 0 ? m : 1;
	} else {
		o->lo = lo < o->lo ? lo : o->lo;
		o->hi = hi > o->hi ? hi : o->hi;
	}
	while (m > o->top)
		hist_double(o);
	double f = HIST_BINS / o->top;
#pragma omp parallel
	{
		uint64_t h[HIST_BINS] = { 0 };
#pragma omp for schedule(static)
		for (size_t i = 0; i < n; i++) {
			size_t b = (size_t)(fabsf(x[i]) * f);
			h[b < HIST_BINS ? b : HIST_BINS - 1]++;
		}
#pragma omp critical
		for (int b = 0; b < HIST_BINS; b++)
			o->hist[b] += h[b];
	}
	o->count += n;
}

/* The |x| below which a share q of the values lies: the upper edge of the
 * bin where the running count reaches it. */
static double percentile(const struct obs *o, double q)
{
	uint64_t want = (uint64_t)ceil(q / 100.0 * (double)o->count), run = 0;
	for (int k = 0; k < HIST_BINS; k++) {
		run += o->hist[k];
		if (run >= want)
			return o->top * (k + 1) / HIST_BINS;
	}
	return o->top;
}

void fc_calib_free(fc_calib *c)
{
	if (!c)
		return;
	for (size_t k = 0; k < c->n; k++)
		free(c->r[k].tensor);
	free(c->r);
	free(c->method);
	free(c);
}

const char *fc_calib_method_name(int method)
{
	return method == FC_CALIB_MAX ? "max" : method == FC_CALIB_PERCENTILE ? "percentile:99.99" : NULL;
}

int fc_calib_method_parse(const char *s)
{
	if (s && strcmp(s, "max") == 0)
		return FC_CALIB_MAX;
	if (s && (strcmp(s, "percentile") == 0 || strcmp(s, "percentile:99.99") == 0))
		return FC_CALIB_PERCENTILE;
	return -1;
}

struct pick {
	double f;
	size_t i;
};

static int by_draw(const void *x, const void *y)
{
	const struct pick *a = x, *b = y;
	if (a->f != b->f)
		return a->f < b->f ? -1 : 1;
	return a->i < b->i ? -1 : a->i > b->i; /* entries are sorted by key: index order is key order */
}

static int by_index(const void *x, const void *y)
{
	const struct pick *a = x, *b = y;
	return a->i < b->i ? -1 : a->i > b->i;
}

/* The table from the observations. */
static int make_table(fc_calib **out, const fc_engine *e, const struct calib_run *r, int method, size_t images)
{
	fc_calib *c = calloc(1, sizeof *c);
	if (!c || !(c->r = calloc((size_t)r->n + 1, sizeof *c->r)) || !(c->method = strdup(fc_calib_method_name(method)))) {
		fc_calib_free(c);
		return FC_ERR_NOMEM;
	}
	c->images = images;
	for (int k = 0; k < r->n; k++) {
		const struct obs *o = &r->t[k];
		if (!o->count)
			continue;
		double lo = o->lo, hi = o->hi;
		if (method == FC_CALIB_PERCENTILE) {
			double p = percentile(o, PERCENTILE);
			lo = lo < -p ? -p : lo;
			hi = hi > p ? p : hi;
		}
		fc_calib_range *x = &c->r[c->n];
		if (!(x->tensor = strdup(fc_engine_observed_name(e, k)))) {
			fc_calib_free(c);
			return FC_ERR_NOMEM;
		}
		x->lo = (float)lo, x->hi = (float)hi;
		c->n++;
	}
	*out = c;
	return 0;
}

/* A sampled tar shard, kept open while the samples drawn from it come in
 * member order (a sample before the one last read opens it again). */
struct shard_reader {
	fci_tar *t;
	const char *path;
	uint32_t at; /* the number of the member last read */
};

/* The bytes of en's image: its file, or its member of a tar shard. */
static int entry_bytes(const fc_entry *en, struct shard_reader *sr, uint8_t **buf, size_t *cap, size_t *len,
		       char *why, size_t whycap)
{
	if (!en->hash) /* a file */
		return fci_read_file(en->path, MAX_IMAGE, buf, cap, len, why, whycap);
	if (!sr->t || sr->path != en->path || en->member <= sr->at) {
		fci_tar_free(sr->t);
		sr->t = NULL;
		sr->path = en->path;
		int rc = fci_tar_open_file(&sr->t, en->path, why, whycap);
		if (rc)
			return rc;
	}
	const char *name;
	int64_t size;
	int regular, r;
	uint32_t num = 0;
	while ((r = fci_tar_next(sr->t, &name, &size, &regular, &num)) == 1 && num < en->member)
		;
	sr->at = num;
	if (r == 1 && num == en->member && size <= FCI_WDS_MEMBER_MAX && fci_tar_read(sr->t, buf, cap, len) == 0)
		return 0;
	fci_tar_free(sr->t); /* the shard is not what its listing said: start again next time */
	sr->t = NULL;
	return fci_errf(why, whycap, FC_ERR_CORRUPT, "member %u of shard '%s' cannot be read", en->member, en->path);
}

int fc_calibrate(fc_calib **out, const fc_extractor_opts *o, const fc_dataset *ds, size_t n, int method,
		 size_t *failed, char *err, size_t errcap)
{
	char why[FC_ERRLEN > 600 ? FC_ERRLEN : 600] = "";
	uint8_t *bytes = NULL;
	size_t cap = 0, len = 0, npick = 0, done = 0, bad = 0;
	fc_model *m = NULL;
	fc_engine *e = NULL;
	struct pick *pk = NULL;
	struct calib_run r = { 0 };
	struct shard_reader sr = { 0 };
	float *in = NULL, *emb = NULL;
	int rc;

	*out = NULL;
	if (failed)
		*failed = 0;
	if (n < 1)
		return fci_errf(err, errcap, FC_ERR_INVALID, "calibration needs at least one image");
	if (!fc_calib_method_name(method))
		return fci_errf(err, errcap, FC_ERR_INVALID, "unknown calibration method %d", method);
	if (!(pk = malloc((ds->n ? ds->n : 1) * sizeof *pk)))
		return fci_errf(err, errcap, FC_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < ds->n; i++)
		if (!ds->entries[i].bad)
			pk[npick++] = (struct pick){ fc_hash_fraction(ds->entries[i].key, CALIB_SEED), i };
	if (!npick) {
		rc = fci_errf(err, errcap, FC_ERR_INVALID, "no images to calibrate on");
		goto out;
	}
	qsort(pk, npick, sizeof *pk, by_draw);
	npick = npick < n ? npick : n;
	qsort(pk, npick, sizeof *pk, by_index);

	if ((rc = fci_read_file(o->model, MAX_MODEL, &bytes, &cap, &len, why, sizeof why))) {
		rc = fci_errf(err, errcap, rc, "cannot read model '%s': %s", o->model, why);
		goto out;
	}
	if ((rc = fc_model_open_mem(&m, bytes, len, why, sizeof why))) {
		rc = fci_errf(err, errcap, rc, "cannot load model '%s': %s", o->model, why);
		goto out;
	}
	if ((rc = fc_model_set_input(m, 1, 3, o->pre.crop_h, o->pre.crop_w)) ||
	    (rc = fc_model_cut_tokens(m, o->layer, o->pool, o->pool ? o->prefix_tokens : 1)) ||
	    (rc = fc_model_check_pooling(m))) {
		rc = fci_errf(err, errcap, rc, "cannot prepare model '%s' for calibration: %s", o->model,
			      fc_model_errmsg(m));
		goto out;
	}
	/* refuse what int8 cannot run (no VNNI, a transformer) before the long part */
	fc_engine_opts po = { .batch = 1, .precision = FC_PREC_INT8, .threads = o->threads };
	if ((rc = fc_engine_open(&e, m, &po, why, sizeof why))) {
		rc = fci_errf(err, errcap, rc, "cannot run model '%s' in int8: %s", o->model, why);
		goto out;
	}
	fc_engine_free(e);
	e = NULL;
	int batch = npick < CALIB_BATCH ? (int)npick : CALIB_BATCH;
	fc_engine_opts eo = { .batch = batch, .precision = FC_PREC_F32, .threads = o->threads, .observe = observe,
			      .observe_ctx = &r };
	if ((rc = fc_engine_open(&e, m, &eo, why, sizeof why))) {
		rc = fci_errf(err, errcap, rc, "cannot run model '%s': %s", o->model, why);
		goto out;
	}
	r.n = fc_engine_n_observed(e);
	size_t img = (size_t)3 * (size_t)o->pre.crop_h * (size_t)o->pre.crop_w;
	if (!(r.t = calloc((size_t)r.n + 1, sizeof *r.t)) || !(in = malloc((size_t)batch * img * sizeof *in)) ||
	    !(emb = malloc((size_t)batch * fc_engine_dim(e) * sizeof *emb))) {
		rc = fci_errf(err, errcap, FC_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (int k = 0; k < r.n; k++)
		if (!(r.t[k].hist = calloc(HIST_BINS, sizeof *r.t[k].hist))) {
			rc = fci_errf(err, errcap, FC_ERR_NOMEM, "out of memory");
			goto out;
		}
	for (size_t at = 0; at < npick;) {
		size_t filled = 0;
		for (; at < npick && filled < (size_t)batch; at++) {
			const fc_entry *en = &ds->entries[pk[at].i];
			fc_image im = { 0 };
			if (entry_bytes(en, &sr, &bytes, &cap, &len, why, sizeof why) ||
			    fc_image_decode(&im, bytes, len, NULL, 0) || fc_preprocess(&o->pre, &im, in + filled * img)) {
				fc_image_free(&im);
				bad++;
				continue;
			}
			fc_image_free(&im);
			filled++;
		}
		if (!filled)
			continue;
		if ((rc = fc_engine_run(e, emb, in, filled))) {
			rc = fci_errf(err, errcap, rc, "calibration run failed: %s", fc_engine_errmsg(e));
			goto out;
		}
		done += filled;
	}
	if (failed)
		*failed = bad;
	if (!done) {
		rc = fci_errf(err, errcap, FC_ERR_INVALID, "none of the %zu sampled images could be read", npick);
		goto out;
	}
	if ((rc = make_table(out, e, &r, method, done)))
		rc = fci_errf(err, errcap, rc, "out of memory");
out:
	for (int k = 0; r.t && k < r.n; k++)
		free(r.t[k].hist);
	free(r.t);
	free(in);
	free(emb);
	free(pk);
	free(bytes);
	fci_tar_free(sr.t);
	fc_engine_free(e);
	fc_model_free(m);
	return rc;
}

/* ---- JSON ---- */

json_t *fci_calib_json(const fc_calib *c)
{
	json_t *ranges = json_array();
	for (size_t k = 0; ranges && k < c->n; k++)
		json_array_append_new(ranges, json_pack("[s,f,f]", c->r[k].tensor, (double)c->r[k].lo, (double)c->r[k].hi));
	return json_pack("{s:s, s:I, s:o}", "method", c->method ? c->method : "", "images", (json_int_t)c->images,
			 "ranges", ranges);
}

int fci_calib_parse(fc_calib **out, const json_t *j, char *err, size_t errcap)
{
	const char *method = NULL;
	json_int_t images = 0;
	json_t *ranges = NULL;
	*out = NULL;
	if (!j || json_unpack((json_t *)j, "{s:s, s:I, s:o}", "method", &method, "images", &images, "ranges", &ranges) ||
	    !json_is_array(ranges) || images < 0)
		return fci_errf(err, errcap, FC_ERR_CORRUPT, "the extractor's descriptor has a bad calibration table");
	fc_calib *c = calloc(1, sizeof *c);
	size_t n = json_array_size(ranges);
	if (!c || !(c->r = calloc(n + 1, sizeof *c->r)) || !(c->method = strdup(method))) {
		fc_calib_free(c);
		return fci_errf(err, errcap, FC_ERR_NOMEM, "out of memory");
	}
	c->images = (size_t)images;
	for (size_t k = 0; k < n; k++) {
		const char *t = NULL;
		double lo, hi;
		if (json_unpack(json_array_get(ranges, k), "[sFF]", &t, &lo, &hi) || !isfinite(lo) || !isfinite(hi) ||
		    lo > hi) {
			fc_calib_free(c);
			return fci_errf(err, errcap, FC_ERR_CORRUPT,
					"the extractor's descriptor has a bad calibration range (entry %zu)", k);
		}
		if (!(c->r[k].tensor = strdup(t))) {
			fc_calib_free(c);
			return fci_errf(err, errcap, FC_ERR_NOMEM, "out of memory");
		}
		c->r[k].lo = (float)lo, c->r[k].hi = (float)hi;
		c->n++;
	}
	*out = c;
	return 0;
}
