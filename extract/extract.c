/*
 * extract.c - the extract pipeline: dataset -> items -> what is missing ->
 * decode + preprocess on worker threads -> engine on the calling thread ->
 * one store transaction per chunk of several batches.
 *
 * The plan of a run:
 *   1. Match the dataset's entries against the store's items: an entry
 *      whose size and mtime are unchanged keeps its recorded content hash;
 *      others are read and hashed (in parallel, before the engine starts).
 *   2. Items gone from the dataset are deleted, and every new or changed
 *      item whose content already has a vector is written, in one
 *      transaction: renames and duplicates cost no extraction.
 *   3. Every content hash still without a vector is extracted once, in
 *      batches. Batches are gathered into chunks of at least 64 KiB
 *      (fc_store_writer); a chunk's transaction holds its index entries,
 *      the items its hashes serve and the error records of its failures,
 *      so an item never appears before its vector, and a killed run
 *      leaves whole chunks only: the next run sees the rest missing.
 *
 * Threads: oneDNN runs single-threaded inside an OpenMP parallel region
 * and its primitives stay on the thread that created them (docs/measured.md),
 * so the engine runs on the calling thread with OpenMP, and images are
 * decoded by plain pthreads into a ring of batch buffers ahead of it.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "extract/calibrate.h"
#include "extract/wds.h"
#include "featcache/engine.h"
#include "featcache/extract.h"
#include "featcache/model.h"
#include "extract/model_impl.h"
#include "util/util.h"

#define WHYLEN 256 /* one image's failure reason */

/* Partial batches of at most this many different sizes run at their own
 * size (fc_engine_add_batch: an activation arena each); others padded. */
#define MAX_TAILS 4

struct fc_extract_ctx {
	fc_engine *engine;
	/* what a partial batch needs to open the model again (it is not kept:
	 * its weights would double the memory for the run's length) */
	char *model_path, *layer;
	int pool, prefix_tokens;
	uint8_t model_hash[FC_HASH_LEN];
	int tails[MAX_TAILS], n_tails; /* the sizes asked for */
	fc_preproc pre;
	int batch, threads;
	fc_dtype dtype;
	uint32_t dim;
	size_t in_len; /* floats per preprocessed image */
	uint8_t id[FC_HASH_LEN];
	char *descriptor;
};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void hash_bytes(uint8_t out[FC_HASH_LEN], const void *p, size_t n)
{
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, XXH3_128bits(p, n));
	memcpy(out, c.digest, FC_HASH_LEN);
}

/* Images and models larger than this are refused unread. */
#define MAX_FILE ((uint64_t)1 << 32)

/* ---- the extractor ---- */

static json_t *json_floats(const float *v, int n)
{
	json_t *a = json_array();
	for (int i = 0; i < n; i++)
		json_array_append_new(a, json_real((double)v[i]));
	return a;
}

static const char *precision_name(int p)
{
	return p == FC_PREC_BF16 ? "bf16" : p == FC_PREC_INT8 ? "int8" : "f32";
}

/* The identity of a feature set, as canonical JSON (sorted keys, compact):
 * the model's bytes, the cut, the input, the preprocessing, the precision
 * (int8: with its calibration table).
 * The model's path is not part of it: moving the file changes nothing. */
static json_t *identity(const uint8_t model_hash[FC_HASH_LEN], const fc_model_graph *g, const fc_model *m,
			const fc_extractor_opts *o)
{
	char hex[33];
	fc_hex(hex, model_hash, FC_HASH_LEN);
	const fc_model_tensor *ct = &g->tensors[g->cut_tensor];
	const fc_preproc *p = &o->pre;
	json_t *pre = json_pack("{s:i, s:[i,i], s:[i,i], s:s, s:o, s:o}", "resize_short", p->resize_short, "resize",
				p->resize_w, p->resize_h, "crop", p->crop_w, p->crop_h, "filter",
				p->filter == FC_RESAMPLE_BICUBIC ? "bicubic" : "bilinear", "mean",
				json_floats(p->mean, 3), "std", json_floats(p->std, 3));
	(void)m;
	json_t *id = json_pack("{s:s, s:s, s:s, s:b, s:[i,i,i], s:o, s:s}", "model_xxh3", hex, "layer",
			       g->nodes[g->cut_node].name, "tensor", ct->name, "pool", g->pool, "input", 3,
			       p->crop_h, p->crop_w, "preprocess", pre, "precision", precision_name(o->precision));
	if (id && o->precision == FC_PREC_INT8)
		json_object_set_new(id, "calibration", fci_calib_json(o->calib));
	/* Only what a cut of one layer without token pooling lacks, so the
	 * ids of such extractors stay what they always were. */
	if (id && g->n_cuts > 1) {
		json_t *layers = json_array(), *tensors = json_array();
		for (int k = 0; k < g->n_cuts; k++) {
			json_array_append_new(layers, json_string(g->nodes[g->cut_nodes[k]].name));
			json_array_append_new(tensors, json_string(g->tensors[g->cut_tensors[k]].name));
		}
		json_object_set_new(id, "layers", layers);
		json_object_set_new(id, "tensors", tensors);
	}
	if (id && g->token_pool != FC_POOL_AUTO) {
		json_object_set_new(id, "token_pool", json_string(fc_pool_name(g->token_pool)));
		json_object_set_new(id, "prefix_tokens", json_integer(g->prefix_tokens));
	}
	return id;
}

/* The model of o opened (hash: its file's), sized for o's images and cut
 * as o says; the message names the model. */
static int load_model(const fc_extractor_opts *o, fc_model **out, uint8_t hash[FC_HASH_LEN], char *err,
		      size_t errcap)
{
	char why[FC_ERRLEN];
	fc_model *m = NULL;
	int rc = fci_model_open_file(&m, o->model, hash, why, sizeof why);
	*out = NULL;
	if (rc)
		return fci_errf(err, errcap, rc, "cannot load model '%s': %s", o->model, why);
	if ((rc = fc_model_set_input(m, 1, 3, o->pre.crop_h, o->pre.crop_w)) != 0)
		rc = fci_errf(err, errcap, rc, "model '%s' does not take 3 x %d x %d images: %s", o->model,
			      o->pre.crop_h, o->pre.crop_w, fc_model_errmsg(m));
	else if ((rc = fc_model_cut_tokens(m, o->layer, o->pool, o->pool ? o->prefix_tokens : 1)) != 0)
		rc = fci_errf(err, errcap, rc, "cannot cut model '%s' at %s%s%s: %s", o->model, o->layer ? "'" : "",
			      o->layer ? o->layer : "its default layer", o->layer ? "'" : "", fc_model_errmsg(m));
	else if ((rc = fc_model_check_pooling(m)) != 0)
		rc = fci_errf(err, errcap, rc, "model '%s': %s", o->model, fc_model_errmsg(m));
	if (rc)
		fc_model_free(m);
	else
		*out = m;
	return rc;
}

/* The run's model opened again, as fc_extract_open cut it: NULL if that
 * fails or the file changed since (another hash). */
static fc_model *reopen_model(const fc_extract_ctx *x)
{
	fc_extractor_opts o = { .model = x->model_path, .layer = x->layer, .pool = x->pool,
				.prefix_tokens = x->prefix_tokens, .pre = x->pre };
	uint8_t hash[FC_HASH_LEN];
	char why[FC_ERRLEN];
	fc_model *m = NULL;
	if (load_model(&o, &m, hash, why, sizeof why) == 0 && memcmp(hash, x->model_hash, sizeof hash) != 0) {
		fc_model_free(m);
		m = NULL;
	}
	return m;
}

/* Let partial batches of n images run at their own size, from the model
 * opened again (a file that changed since: then the batch runs padded,
 * from the weights the run started with). Failures (memory) leave the
 * padded run too: the same values either way. */
static void add_tail(fc_extract_ctx *x, int n)
{
	char why[FC_ERRLEN];
	if (x->n_tails == MAX_TAILS)
		return;
	x->tails[x->n_tails++] = n;
	fc_model *m = reopen_model(x);
	if (m)
		fc_engine_add_batch(x->engine, m, n, why, sizeof why);
	fc_model_free(m);
}

/* Runs of at least this many images take a Winograd engine; below it the
 * weights' transform costs more than it saves (ResNet-18: ~0.27 s against
 * ~8 ms an image; README, "Winograd"). */
#define WINOGRAD_MIN_IMAGES 64

/* fc_extract_open builds the engine with direct convolutions; a run long
 * enough for Winograd to pay builds that engine instead, from the model
 * opened again (as add_tail). A failure keeps the direct engine: the same
 * vectors to ~1e-6. */
static void use_winograd(fc_extract_ctx *x)
{
	char why[FC_ERRLEN];
	fc_engine *e = NULL;
	fc_engine_opts eo = { .batch = x->batch, .precision = FC_PREC_F32, .threads = x->threads };
	fc_model *m = reopen_model(x);
	if (m && fc_engine_open(&e, m, &eo, why, sizeof why) == 0 && fc_engine_dim(e) == x->dim) {
		fc_engine_free(x->engine);
		x->engine = e;
		x->n_tails = 0;
		e = NULL;
	}
	fc_engine_free(e);
	fc_model_free(m);
}

int fc_extract_open(fc_extract_ctx **out, const fc_extractor_opts *o, char *err, size_t errcap)
{
	*out = NULL;
	char why[FC_ERRLEN > 600 ? FC_ERRLEN : 600] = "";
	if (o->batch < 1 || o->batch > 4096)
		return fci_errf(err, errcap, FC_ERR_INVALID, "batch must be 1 to 4096, not %d", o->batch);
	if (fc_preproc_check(&o->pre) != 0)
		return fci_errf(err, errcap, FC_ERR_INVALID, "bad preprocessing parameters");
	if (o->precision == FC_PREC_INT8 && !o->calib)
		return fci_errf(err, errcap, FC_ERR_INVALID, "int8 needs a calibration table (fc_calibrate)");
	/* the identity hashes the bytes the model was built from */
	uint8_t model_hash[FC_HASH_LEN];
	fc_model *m = NULL;
	json_t *id = NULL;
	int rc = load_model(o, &m, model_hash, err, errcap);
	if (rc)
		return rc;
	fc_extract_ctx *x = calloc(1, sizeof *x);
	if (!x || !(x->model_path = strdup(o->model)) || (o->layer && !(x->layer = strdup(o->layer)))) {
		rc = fci_errf(err, errcap, FC_ERR_NOMEM, "out of memory");
		goto fail;
	}
	x->pool = o->pool;
	x->prefix_tokens = o->prefix_tokens;
	memcpy(x->model_hash, model_hash, sizeof model_hash);
	const fc_model_graph *g = fc_model_get_graph(m);
	if (!(id = identity(model_hash, g, m, o))) {
		rc = fci_errf(err, errcap, FC_ERR_NOMEM, "out of memory");
		goto fail;
	}
	char *canon = json_dumps(id, JSON_SORT_KEYS | JSON_COMPACT);
	if (!canon) {
		rc = fci_errf(err, errcap, FC_ERR_NOMEM, "out of memory");
		goto fail;
	}
	hash_bytes(x->id, canon, strlen(canon));
	free(canon);
	if (o->threads > 0)
		omp_set_num_threads(o->threads);
	/* direct convolutions until a run shows it is long enough (use_winograd) */
	fc_engine_opts eo = { .batch = o->batch, .precision = o->precision, .threads = o->threads, .calib = o->calib,
			      .direct_convs = 1 };
	if ((rc = fc_engine_open(&x->engine, m, &eo, why, sizeof why)) != 0) {
		rc = fci_errf(err, errcap, rc, "cannot run model '%s': %s", o->model, why);
		goto fail;
	}
	x->pre = o->pre;
	x->batch = o->batch;
	x->threads = o->threads;
	x->dtype = o->store_dtype;
	x->dim = (uint32_t)fc_engine_dim(x->engine);
	x->in_len = (size_t)3 * (size_t)o->pre.crop_h * (size_t)o->pre.crop_w;
	/* The descriptor a person reads: the identity plus where it came from. */
	json_object_set_new(id, "model", json_string(o->model));
	if (o->pre_name)
		json_object_set_new(json_object_get(id, "preprocess"), "preset", json_string(o->pre_name));
	x->descriptor = json_dumps(id, JSON_SORT_KEYS | JSON_COMPACT);
	if (!x->descriptor) {
		rc = fci_errf(err, errcap, FC_ERR_NOMEM, "out of memory");
		goto fail;
	}
	json_decref(id);
	fc_model_free(m);
	*out = x;
	return 0;
fail:
	json_decref(id);
	fc_model_free(m);
	fc_extract_free(x);
	return rc;
}

/* Three floats of a JSON array into v; 0 on success. */
static int json_float3(const json_t *a, float v[3])
{
	if (!json_is_array(a) || json_array_size(a) != 3)
		return -1;
	for (int i = 0; i < 3; i++) {
		if (!json_is_number(json_array_get(a, (size_t)i)))
			return -1;
		v[i] = (float)json_number_value(json_array_get(a, (size_t)i));
	}
	return 0;
}

/* The cut a descriptor records beyond its one "tensor": several tensors
 * (joined with commas into *joined, which o->layer then points at) and
 * the token pooling. */
static int cut_like(const json_t *d, fc_extractor_opts *o, char **joined, char *err, size_t errcap)
{
	const json_t *tensors = json_object_get(d, "tensors"), *tp = json_object_get(d, "token_pool");
	size_t len = 1;

	if (tp) {
		const json_t *pt = json_object_get(d, "prefix_tokens");
		o->pool = fc_pool_parse(json_string_value(tp));
		if (o->pool < 0 || !json_is_integer(pt) || json_integer_value(pt) < 0 ||
		    json_integer_value(pt) > INT32_MAX)
			return fci_errf(err, errcap, FC_ERR_CORRUPT, "the extractor's descriptor has a bad token pooling");
		o->prefix_tokens = (int)json_integer_value(pt);
	}
	if (!tensors)
		return 0;
	for (size_t k = 0; k < json_array_size(tensors); k++) {
		const char *t = json_string_value(json_array_get(tensors, k));
		if (!t || strchr(t, ','))
			return fci_errf(err, errcap, FC_ERR_CORRUPT, "the extractor's descriptor has a bad list of layers");
		len += strlen(t) + 1;
	}
	if (!json_is_array(tensors) || json_array_size(tensors) < 2)
		return fci_errf(err, errcap, FC_ERR_CORRUPT, "the extractor's descriptor has a bad list of layers");
	if (!(*joined = calloc(1, len)))
		return fci_errf(err, errcap, FC_ERR_NOMEM, "out of memory");
	for (size_t k = 0; k < json_array_size(tensors); k++) {
		if (k)
			strcat(*joined, ",");
		strcat(*joined, json_string_value(json_array_get(tensors, k)));
	}
	o->layer = *joined;
	return 0;
}

int fc_extract_open_like(fc_extract_ctx **out, const char *model_path, const char *descriptor, fc_dtype dtype,
			 int batch, int threads, char *err, size_t errcap)
{
	*out = NULL;
	json_error_t je;
	json_t *d = json_loads(descriptor ? descriptor : "", 0, &je);
	fc_extractor_opts o = { .model = model_path, .store_dtype = dtype, .batch = batch, .threads = threads };
	const char *filter = NULL, *prec = NULL, *preset = NULL;
	char *joined = NULL;
	fc_calib *calib = NULL;
	json_t *pre = NULL, *mean = NULL, *std = NULL;
	int ok = d && json_unpack(d, "{s:s, s:s, s:o}", "tensor", &o.layer, "precision", &prec, "preprocess", &pre) == 0 &&
		 json_unpack(pre, "{s:i, s:[ii], s:[ii], s:s, s:o, s:o, s?s}", "resize_short", &o.pre.resize_short,
			     "resize", &o.pre.resize_w, &o.pre.resize_h, "crop", &o.pre.crop_w, &o.pre.crop_h, "filter",
			     &filter, "mean", &mean, "std", &std, "preset", &preset) == 0 &&
		 json_float3(mean, o.pre.mean) == 0 && json_float3(std, o.pre.std) == 0;
	int rc;
	if (!ok) {
		rc = fci_errf(err, errcap, FC_ERR_CORRUPT, "the extractor's descriptor does not say how it was made%s%s",
			 d ? "" : ": ", d ? "" : je.text);
	} else {
		o.pre.filter = strcmp(filter, "bicubic") == 0 ? FC_RESAMPLE_BICUBIC : FC_RESAMPLE_BILINEAR;
		o.precision = strcmp(prec, "bf16") == 0 ? FC_PREC_BF16 : strcmp(prec, "int8") == 0 ? FC_PREC_INT8 : FC_PREC_F32;
		o.pre_name = preset;
		rc = cut_like(d, &o, &joined, err, errcap);
		if (!rc && o.precision == FC_PREC_INT8 &&
		    !(rc = fci_calib_parse(&calib, json_object_get(d, "calibration"), err, errcap)))
			o.calib = calib;
		if (!rc)
			rc = fc_extract_open(out, &o, err, errcap);
	}
	json_decref(d);
	fc_calib_free(calib);
	free(joined);
	return rc;
}

const uint8_t *fc_extract_id(const fc_extract_ctx *x) { return x->id; }
uint32_t fc_extract_dim(const fc_extract_ctx *x) { return x->dim; }
const char *fc_extract_descriptor(const fc_extract_ctx *x) { return x->descriptor; }

void fc_extract_free(fc_extract_ctx *x)
{
	if (!x)
		return;
	fc_engine_free(x->engine);
	free(x->model_path);
	free(x->layer);
	free(x->descriptor);
	free(x);
}

/* ---- matching the dataset against the store ---- */

/* What the store held for a key: an open-addressing table keyed by the
 * item key (the store walk's keys are copied into one buffer). */
struct old_item {
	const char *key;
	uint8_t hash[FC_HASH_LEN];
	uint64_t size;
	int64_t mtime_ns;
	uint32_t label;
	uint8_t split, status, seen;
};

struct old_table {
	struct old_item *slots;
	size_t cap, n;
	char **keys; /* owned copies */
	size_t nkeys, keycap;
};

static size_t key_hash(const char *k) { return (size_t)XXH3_64bits(k, strlen(k)); }

static struct old_item *old_find(struct old_table *t, const char *key)
{
	if (!t->cap)
		return NULL;
	for (size_t i = key_hash(key) & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
		if (!t->slots[i].key)
			return NULL;
		if (strcmp(t->slots[i].key, key) == 0)
			return &t->slots[i];
	}
}

static int old_insert(struct old_table *t, const fc_item *it)
{
	if ((t->n + 1) * 2 > t->cap) {
		size_t ncap = t->cap ? t->cap * 2 : 1024;
		struct old_item *ns = calloc(ncap, sizeof *ns);
		if (!ns)
			return FC_ERR_NOMEM;
		for (size_t i = 0; i < t->cap; i++) {
			if (!t->slots[i].key)
				continue;
			size_t j = key_hash(t->slots[i].key) & (ncap - 1);
			while (ns[j].key)
				j = (j + 1) & (ncap - 1);
			ns[j] = t->slots[i];
		}
		free(t->slots);
		t->slots = ns;
		t->cap = ncap;
	}
	char *k = strdup(it->key);
	if (!k)
		return FC_ERR_NOMEM;
	if (t->nkeys == t->keycap) {
		size_t nc = t->keycap ? t->keycap * 2 : 1024;
		char **p = realloc(t->keys, nc * sizeof *p);
		if (!p) {
			free(k);
			return FC_ERR_NOMEM;
		}
		t->keys = p;
		t->keycap = nc;
	}
	t->keys[t->nkeys++] = k;
	size_t j = key_hash(k) & (t->cap - 1);
	while (t->slots[j].key)
		j = (j + 1) & (t->cap - 1);
	struct old_item *o = &t->slots[j];
	o->key = k;
	memcpy(o->hash, it->hash, FC_HASH_LEN);
	o->size = it->size;
	o->mtime_ns = it->mtime_ns;
	o->label = it->label;
	o->split = it->split;
	o->status = it->status;
	o->seen = 0;
	t->n++;
	return 0;
}

static int old_add(void *ctx, const fc_item *it) { return old_insert(ctx, it); }

static void old_free(struct old_table *t)
{
	for (size_t i = 0; i < t->nkeys; i++)
		free(t->keys[i]);
	free(t->keys);
	free(t->slots);
}

/* One dataset entry's state for this run. */
enum { ST_UNCHANGED, ST_NEW, ST_CHANGED };

struct plan_item {
	fc_item item;
	int state;    /* ST_* */
	int dirty;    /* the store's record differs: needs writing */
	int missing;  /* content hash has no vector yet (status OK only) */
	int work;     /* index into the work list, or -1 */
	char why[WHYLEN]; /* why it failed, when item.status is FAILED this run */
	int failed_now;
};

/* Hash (or reuse the hash of, unless rehash) every entry; runs in parallel. */
static void plan_entries(const fc_dataset *ds, struct old_table *old, const uint32_t *label_ids,
			 double val_fraction, int rehash, struct plan_item *pl, uint64_t *hashed)
{
	uint64_t nh = 0;
#pragma omp parallel for schedule(dynamic, 64) reduction(+ : nh)
	for (size_t i = 0; i < ds->n; i++) {
		const fc_entry *e = &ds->entries[i];
		struct plan_item *p = &pl[i];
		struct old_item *o = old_find(old, e->key);
		fc_item *it = &p->item;
		it->key = e->key;
		it->label = label_ids[i];
		it->split = (uint8_t)(e->split != FC_SPLIT_NONE ? e->split : fc_hash_split(e->key, val_fraction));
		it->status = FC_ITEM_OK;
		p->work = -1;
		struct stat st;
		int have = !e->bad && !e->hash && stat(e->path, &st) == 0;
		int64_t mt = have ? (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec : 0;
		if (e->bad) {
			/* Never read; recorded once, then failed before. A tar
			 * sample keeps its shard's size and mtime (wds.c). */
			memset(it->hash, 0, FC_HASH_LEN);
			it->size = e->size;
			it->mtime_ns = e->mtime_ns;
			it->status = FC_ITEM_FAILED;
			if (!o || o->status != FC_ITEM_FAILED) {
				snprintf(p->why, sizeof p->why, "%s", e->bad);
				p->failed_now = 1;
			}
		} else if (e->hash) {
			/* A tar sample, hashed when its shard was read. */
			memcpy(it->hash, e->hash, FC_HASH_LEN);
			it->size = e->size;
			it->mtime_ns = e->mtime_ns;
		} else if (!rehash && o && have && o->size == (uint64_t)st.st_size && o->mtime_ns == mt) {
			memcpy(it->hash, o->hash, FC_HASH_LEN);
			it->size = o->size;
			it->mtime_ns = o->mtime_ns;
			it->status = o->status;
		} else {
			char why[WHYLEN];
			int rc = fc_hash_file(e->path, it->hash, &it->size, &it->mtime_ns, why, sizeof why);
			nh++;
			if (rc) {
				/* Messages name the key; the reason is enough here. */
				const char *reason = strstr(why, "': ");
				snprintf(p->why, sizeof p->why, "%s",
					 rc == FC_ERR_NOT_FOUND ? "no such file" : reason ? reason + 3 : why);
				memset(it->hash, 0, FC_HASH_LEN);
				it->size = 0;
				it->mtime_ns = 0;
				it->status = FC_ITEM_FAILED;
				p->failed_now = 1;
			}
		}
		if (!o)
			p->state = ST_NEW;
		else if (memcmp(o->hash, it->hash, FC_HASH_LEN) != 0 || o->status != it->status)
			p->state = ST_CHANGED;
		else
			p->state = ST_UNCHANGED;
		p->dirty = !o || p->state != ST_UNCHANGED || o->size != it->size || o->mtime_ns != it->mtime_ns ||
			   o->label != it->label || o->split != it->split;
		if (o)
			o->seen = 1;
	}
	*hashed = nh;
}

/* ---- the decode/engine pipeline ---- */

/* A unit of work: one content hash to extract, read from one file or
 * one member of a tar shard. */
struct work {
	const char *path;
	const uint8_t *hash;
	const fc_entry *tar; /* the tar sample it is read from, or NULL */
	size_t rank;       /* plan index of the first user: extraction follows key order */
	uint32_t minor;    /* tar: the member number (a shard is read in its order) */
	size_t first_user; /* users[first_user .. first_user + n_users) in the plan order */
	size_t n_users;
};

struct slot {
	size_t batch_no; /* the batch this buffer holds or is being filled for */
	size_t filled;   /* rows done (decoded or failed) */
	float *in;       /* batch x in_len */
	int *ok;
	char (*why)[WHYLEN];
};

struct pipe {
	const fc_extract_ctx *x;
	const struct work *work;
	size_t n_work, next;
	size_t B, K;
	struct slot *slots;
	pthread_mutex_t mu;
	pthread_cond_t can_fill, can_run;
	int stop;
};

static size_t batch_size(const struct pipe *p, size_t b)
{
	size_t left = p->n_work - b * p->B;
	return left < p->B ? left : p->B;
}

/* Decode and preprocess work item i into its row; the bytes are hashed
 * again, so a file rewritten since it was hashed is not stored under the
 * old content's hash. */
static void decode_bytes(struct pipe *p, size_t i, struct slot *sl, const uint8_t *bytes, size_t len, int rc);

static void decode_one(struct pipe *p, size_t i, struct slot *sl, uint8_t **buf, size_t *cap)
{
	const struct work *w = &p->work[i];
	size_t len;
	char *why = sl->why[i % p->B];
	char reason[WHYLEN - 16];
	int rc = fci_read_file(w->path, MAX_FILE, buf, cap, &len, reason, sizeof reason);
	if (rc)
		fci_errf(why, WHYLEN, rc, "cannot read: %s", reason);
	decode_bytes(p, i, sl, *buf, len, rc);
}

/* Hash-check, decode and preprocess the bytes of work item i into its row
 * (rc: whether reading them failed, with the reason in the row already). */
static void decode_bytes(struct pipe *p, size_t i, struct slot *sl, const uint8_t *bytes, size_t len, int rc)
{
	const struct work *w = &p->work[i];
	size_t row = i % p->B;
	char *why = sl->why[row];
	float *dst = sl->in + row * p->x->in_len;
	uint8_t h[FC_HASH_LEN];
	fc_image img = { 0 };
	char ierr[FC_ERRLEN];
	if (!rc) {
		hash_bytes(h, bytes, len);
		if (memcmp(h, w->hash, FC_HASH_LEN) != 0)
			rc = fci_errf(why, WHYLEN, FC_ERR_CORRUPT, "file changed while being extracted; run again");
	}
	if (!rc && (rc = fc_image_decode(&img, bytes, len, ierr, sizeof ierr)) != 0)
		fci_errf(why, WHYLEN, rc, "%s", ierr);
	if (!rc && (rc = fc_preprocess(&p->x->pre, &img, dst)) != 0)
		fci_errf(why, WHYLEN, rc, "cannot preprocess: %s", fc_strerror(rc));
	fc_image_free(&img);
	sl->ok[row] = rc == 0;
}

/* With p->mu held: wait until row i's batch has its buffer; NULL when
 * the pipeline stops. */
static struct slot *row_slot(struct pipe *p, size_t i)
{
	size_t b = i / p->B;
	struct slot *sl = &p->slots[b % p->K];
	while (!p->stop && sl->batch_no != b)
		pthread_cond_wait(&p->can_fill, &p->mu);
	return p->stop ? NULL : sl;
}

/* With p->mu held: row i is done (decoded or failed). */
static void row_done(struct pipe *p, size_t i, struct slot *sl)
{
	if (++sl->filled == batch_size(p, i / p->B))
		pthread_cond_broadcast(&p->can_run);
}

/* Work items [i, j) come from one tar shard, in member order: read it
 * once, from the start, each wanted member into its row. */
static void decode_tar(struct pipe *p, size_t i, size_t j, uint8_t **buf, size_t *cap)
{
	fci_tar *t = NULL;
	char why[WHYLEN - 32];
	int rc = fci_tar_open_file(&t, p->work[i].tar->path, why, sizeof why), lost = 0;
	for (size_t k = i; k < j; k++) {
		const char *name;
		int64_t size = 0;
		int regular, r = 0;
		uint32_t num = 0;
		size_t len = 0;
		while (!rc && !lost && (r = fci_tar_next(t, &name, &size, &regular, &num)) == 1 &&
		       num < p->work[k].minor)
			;
		if (lost)
			r = lost;
		else if (!rc && r == 1 && num == p->work[k].minor && size <= FCI_WDS_MEMBER_MAX)
			r = fci_tar_read(t, buf, cap, &len);
		else if (!rc && r == 1)
			r = FC_ERR_CORRUPT;
		else if (!rc && r == 0)
			r = FC_ERR_NOT_FOUND;
		pthread_mutex_lock(&p->mu);
		struct slot *sl = row_slot(p, k);
		pthread_mutex_unlock(&p->mu);
		if (!sl)
			break;
		char *row_why = sl->why[k % p->B];
		if (rc)
			fci_errf(row_why, WHYLEN, rc, "cannot read shard: %s", why);
		else if (r)
			fci_errf(row_why, WHYLEN, FC_ERR_CORRUPT, "shard changed while being extracted%s%s; run again",
				 t && fci_tar_errmsg(t)[0] ? ": " : "", t ? fci_tar_errmsg(t) : "");
		decode_bytes(p, k, sl, *buf, len, rc ? rc : r);
		pthread_mutex_lock(&p->mu);
		row_done(p, k, sl);
		pthread_mutex_unlock(&p->mu);
		if (r && !rc && !lost) {
			lost = r; /* the rest of the shard cannot be trusted */
			fci_tar_free(t);
			t = NULL;
		}
	}
	fci_tar_free(t);
}

static void *decoder(void *arg)
{
	struct pipe *p = arg;
	uint8_t *buf = NULL;
	size_t cap = 0;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		if (p->stop || p->next >= p->n_work)
			break;
		size_t i = p->next++;
		if (p->work[i].tar) {
			/* One shard per thread: take all its work items. */
			size_t j = i + 1;
			while (j < p->n_work && p->work[j].tar && p->work[j].tar->shard == p->work[i].tar->shard)
				j++;
			p->next = j;
			pthread_mutex_unlock(&p->mu);
			decode_tar(p, i, j, &buf, &cap);
			pthread_mutex_lock(&p->mu);
			continue;
		}
		struct slot *sl = row_slot(p, i);
		if (!sl)
			break;
		pthread_mutex_unlock(&p->mu);
		decode_one(p, i, sl, &buf, &cap);
		pthread_mutex_lock(&p->mu);
		row_done(p, i, sl);
	}
	pthread_mutex_unlock(&p->mu);
	free(buf);
	return NULL;
}

/* ---- the run ---- */

struct run {
	fc_extract_ctx *x;
	fc_store *s;
	const fc_dataset *ds;
	const fc_extract_run_opts *ro;
	fc_extract_stats *st;
	struct plan_item *pl;
	size_t *users; /* plan indices grouped by work item */
	fc_store_writer *wr; /* batches gathered into chunks of >= 64 KiB */
	uint64_t extracted0; /* st->extracted before the pipeline */
	char *err;
	size_t errcap;
};

/* Entry i failed: count it, mark it, tell the caller. */
static void note_failure(struct run *r, size_t i, const char *why)
{
	r->st->failed++;
	if (r->ro->failed)
		r->ro->failed[i] = 1;
	if (r->ro->on_fail)
		r->ro->on_fail(r->ro->fail_ctx, r->ds->entries[i].key, why);
}

static int store_say(struct run *r, int rc, const char *what)
{
	return fci_errf(r->err, r->errcap, rc, "cannot %s: %s", what,
		   fc_store_errmsg(r->s)[0] ? fc_store_errmsg(r->s) : fc_strerror(rc));
}

/* Items and errors of a finished batch, and its vectors, to the writer:
 * they reach the store together, in the transaction of their chunk. */
static int write_batch(struct run *r, const struct work *work, size_t first, size_t n, struct slot *sl,
		       float *out, uint8_t (*hashes)[FC_HASH_LEN], fc_item *items, const char **ekeys,
		       const char **ewhys)
{
	size_t nv = 0, ni = 0, ne = 0;
	for (size_t k = 0; k < n; k++) {
		const struct work *w = &work[first + k];
		int ok = sl->ok[k];
		if (ok)
			memcpy(hashes[nv++], w->hash, FC_HASH_LEN);
		for (size_t u = 0; u < w->n_users; u++) {
			struct plan_item *p = &r->pl[r->users[w->first_user + u]];
			items[ni] = p->item;
			if (!ok) {
				items[ni].status = FC_ITEM_FAILED;
				ekeys[ne] = p->item.key;
				ewhys[ne++] = sl->why[k];
				note_failure(r, r->users[w->first_user + u], sl->why[k]);
			}
			ni++;
		}
	}
	if (r->ro->cache_only)
		ni = ne = 0; /* vectors only */
	fc_store_batch b = { .exid = r->x->id, .vecs = out, .hashes = (const uint8_t(*)[FC_HASH_LEN])hashes,
			     .n_vecs = nv, .items = items, .n_items = ni, .error_keys = ekeys,
			     .error_whys = ewhys, .n_errors = ne };
	int rc = fc_store_writer_add(r->wr, &b);
	r->st->extracted = r->extracted0 + fc_store_writer_written(r->wr);
	if (rc)
		return store_say(r, rc, "write a batch");
	return 0;
}

static int progress(const fc_logger *lg, uint64_t done, uint64_t total)
{
	if (lg && lg->progress && lg->progress(lg->ctx, "extract", done, total))
		return FC_ERR_INTERRUPTED;
	return 0;
}

static int run_pipeline(struct run *r, const struct work *work, size_t n_work)
{
	fc_extract_ctx *x = r->x;
	struct pipe p = { .x = x, .work = work, .n_work = n_work, .B = (size_t)x->batch };
	int nthreads = r->ro->decode_threads;
	if (nthreads <= 0) {
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		nthreads = ncpu > 2 ? (int)(ncpu / 2) : 1;
	}
	p.K = (size_t)nthreads + 2;
	size_t B = p.B, nb = (n_work + B - 1) / B;
	int rc = 0;
	p.slots = calloc(p.K, sizeof *p.slots);
	float *out = malloc(B * x->dim * sizeof *out);
	float *packed = malloc(B * x->in_len * sizeof *packed);
	uint8_t(*hashes)[FC_HASH_LEN] = malloc(B * sizeof *hashes);
	size_t max_users = 0;
	for (size_t b = 0; b < nb; b++) {
		size_t u = 0;
		for (size_t k = 0; k < batch_size(&p, b); k++)
			u += work[b * B + k].n_users;
		if (u > max_users)
			max_users = u;
	}
	fc_item *items = malloc((max_users ? max_users : 1) * sizeof *items);
	const char **ekeys = malloc((max_users ? max_users : 1) * sizeof *ekeys);
	const char **ewhys = malloc((max_users ? max_users : 1) * sizeof *ewhys);
	r->extracted0 = r->st->extracted;
	if (!rc && (rc = fc_store_writer_new(&r->wr, r->s, x->id, 0)) != 0)
		rc = store_say(r, rc, "write");
	int ok = p.slots && out && packed && hashes && items && ekeys && ewhys;
	for (size_t k = 0; ok && k < p.K; k++) {
		struct slot *sl = &p.slots[k];
		sl->batch_no = k;
		sl->in = malloc(B * x->in_len * sizeof *sl->in);
		sl->ok = malloc(B * sizeof *sl->ok);
		sl->why = malloc(B * sizeof *sl->why);
		ok = sl->in && sl->ok && sl->why;
	}
	if (!ok || rc) {
		rc = rc ? rc : fci_errf(r->err, r->errcap, FC_ERR_NOMEM, "out of memory for %zu batches of %zu images", p.K, B);
		goto done;
	}
	pthread_mutex_init(&p.mu, NULL);
	pthread_cond_init(&p.can_fill, NULL);
	pthread_cond_init(&p.can_run, NULL);
	pthread_t *tids = calloc((size_t)nthreads, sizeof *tids);
	int started = 0;
	for (; tids && started < nthreads; started++)
		if (pthread_create(&tids[started], NULL, decoder, &p) != 0)
			break;
	if (started == 0) {
		rc = fci_errf(r->err, r->errcap, FC_ERR_INTERNAL, "cannot start a decoding thread");
		goto join;
	}
	if (n_work >= WINOGRAD_MIN_IMAGES && fc_engine_winograd(x->engine) == 2)
		use_winograd(x);
	if ((rc = progress(r->ro->logger, 0, n_work)) != 0)
		goto join;
	for (size_t b = 0; b < nb; b++) {
		struct slot *sl = &p.slots[b % p.K];
		size_t n = batch_size(&p, b);
		pthread_mutex_lock(&p.mu);
		while (sl->filled < n)
			pthread_cond_wait(&p.can_run, &p.mu);
		pthread_mutex_unlock(&p.mu);
		/* The engine takes the decoded rows packed together. */
		const float *in = sl->in;
		size_t m = 0;
		for (size_t k = 0; k < n; k++)
			m += sl->ok[k];
		if (m < n && r->ro->strict) {
			size_t k = 0;
			while (sl->ok[k])
				k++;
			rc = fci_errf(r->err, r->errcap, FC_ERR_CORRUPT, "cannot extract '%s': %s",
				 r->pl[r->users[work[b * B + k].first_user]].item.key, sl->why[k]);
			goto join;
		}
		if (m < n) {
			for (size_t k = 0, j = 0; k < n; k++)
				if (sl->ok[k])
					memcpy(packed + j++ * x->in_len, sl->in + k * x->in_len,
					       x->in_len * sizeof *packed);
			in = packed;
		}
		if (m) {
			double t0 = now();
			/* a partial batch (the last, or one with images that failed)
			 * runs at its own size: same values, less work */
			int known = 0;
			for (int k = 0; k < x->n_tails; k++)
				known |= x->tails[k] == (int)m;
			if (m < B && !known)
				add_tail(x, (int)m);
			rc = fc_engine_run(x->engine, out, in, m);
			r->st->engine_seconds += now() - t0;
			if (rc) {
				rc = fci_errf(r->err, r->errcap, rc, "the model failed: %s", fc_engine_errmsg(x->engine));
				goto join;
			}
			for (size_t i = 0; i < m * x->dim; i++)
				if (!isfinite(out[i])) {
					rc = fci_errf(r->err, r->errcap, FC_ERR_CORRUPT,
						 "the model produced NaN or Inf (batch %zu); check the model file", b);
					goto join;
				}
		}
		if ((rc = write_batch(r, work, b * B, n, sl, out, hashes, items, ekeys, ewhys)) != 0)
			goto join;
		pthread_mutex_lock(&p.mu);
		sl->batch_no = b + p.K;
		sl->filled = 0;
		pthread_cond_broadcast(&p.can_fill);
		pthread_mutex_unlock(&p.mu);
		if ((rc = progress(r->ro->logger, (b + 1) * B < n_work ? (b + 1) * B : n_work, n_work)) != 0) {
			fci_errf(r->err, r->errcap, rc, "interrupted; every batch written so far is kept");
			goto join;
		}
	}
join:
	pthread_mutex_lock(&p.mu);
	p.stop = 1;
	pthread_cond_broadcast(&p.can_fill);
	pthread_mutex_unlock(&p.mu);
	for (int t = 0; t < started; t++)
		pthread_join(tids[t], NULL);
	free(tids);
	pthread_cond_destroy(&p.can_run);
	pthread_cond_destroy(&p.can_fill);
	pthread_mutex_destroy(&p.mu);
	/* Whatever stopped the run, the batches finished before it are kept. */
	int wrc = fc_store_writer_flush(r->wr);
	r->st->extracted = r->extracted0 + fc_store_writer_written(r->wr);
	if (wrc && !rc)
		rc = store_say(r, wrc, "write a batch");
done:
	fc_store_writer_free(r->wr);
	r->wr = NULL;
	for (size_t k = 0; p.slots && k < p.K; k++) {
		free(p.slots[k].in);
		free(p.slots[k].ok);
		free(p.slots[k].why);
	}
	free(p.slots);
	free(out);
	free(packed);
	free(hashes);
	free(items);
	free(ekeys);
	free(ewhys);
	return rc;
}

/* Plan indices sorted by content hash, then key order, group an
 * extraction's users; work items sorted by rank restore key order. */
struct hkey {
	uint8_t hash[FC_HASH_LEN];
	size_t i;
};

static int by_hash(const void *a, const void *b)
{
	const struct hkey *x = a, *y = b;
	int c = memcmp(x->hash, y->hash, FC_HASH_LEN);
	return c ? c : (x->i > y->i) - (x->i < y->i);
}

static int by_rank(const void *a, const void *b)
{
	const struct work *x = a, *y = b;
	if (x->rank != y->rank)
		return (x->rank > y->rank) - (x->rank < y->rank);
	return (x->minor > y->minor) - (x->minor < y->minor);
}

static int ensure_extractor(struct run *r)
{
	fc_extractor have;
	int rc = fc_store_get_extractor(r->s, r->x->id, &have);
	if (rc == 0) {
		if (have.dtype != r->x->dtype || have.dim != r->x->dim)
			return fci_errf(r->err, r->errcap, FC_ERR_EXISTS,
				   "the store keeps this extractor's vectors as %s (%u-d); run with --store-dtype %s, "
				   "or use another store",
				   fc_dtype_name(have.dtype), have.dim, fc_dtype_name(have.dtype));
		return 0;
	}
	if (rc != FC_ERR_NOT_FOUND)
		return store_say(r, rc, "read extractors");
	fc_extractor ex = { .dim = r->x->dim, .dtype = r->x->dtype,
			    .codec = r->x->dtype == FC_DTYPE_U8 ? FC_CODEC_ZSTD : FC_CODEC_SHUFFLE_ZSTD,
			    .level = 3, .descriptor = r->x->descriptor };
	memcpy(ex.id, r->x->id, FC_HASH_LEN);
	if ((rc = fc_store_put_extractor(r->s, &ex)) != 0)
		return store_say(r, rc, "record the extractor");
	return 0;
}

/* Labels by name -> ids, in one transaction; NULL names get FC_NO_LABEL. */
static int map_labels(struct run *r, uint32_t *ids)
{
	const fc_dataset *ds = r->ds;
	const char **names = malloc((ds->n ? ds->n : 1) * sizeof *names);
	size_t *at = malloc((ds->n ? ds->n : 1) * sizeof *at);
	uint32_t *got = malloc((ds->n ? ds->n : 1) * sizeof *got);
	int rc = 0;
	if (!names || !at || !got) {
		rc = fci_errf(r->err, r->errcap, FC_ERR_NOMEM, "out of memory");
		goto out;
	}
	/* Entries sorted by key usually keep a label's items together: pass
	 * each run of equal names once. The store maps repeats anyway. */
	size_t n = 0;
	for (size_t i = 0; i < ds->n; i++) {
		const char *l = ds->entries[i].label;
		if (!l) {
			ids[i] = FC_NO_LABEL;
			continue;
		}
		if (!n || strcmp(names[n - 1], l) != 0)
			names[n++] = l;
		at[i] = n - 1;
	}
	if (n && (rc = fc_store_label_ids(r->s, names, n, got)) != 0) {
		rc = store_say(r, rc, "record labels");
		goto out;
	}
	for (size_t i = 0; i < ds->n; i++)
		if (ds->entries[i].label)
			ids[i] = got[at[i]];
out:
	free(names);
	free(at);
	free(got);
	return rc;
}

/* Which contents still need a vector (and the counts the summary shows). */
static int mark_missing(struct run *r)
{
	fc_extract_stats *st = r->st;

	for (size_t i = 0; i < r->ds->n; i++) {
		struct plan_item *p = &r->pl[i];
		st->new_items += p->state == ST_NEW;
		st->changed += p->state == ST_CHANGED;
		if (p->item.status != FC_ITEM_OK) {
			st->failed_before += !p->failed_now;
			continue;
		}
		int has = fc_store_has(r->s, r->x->id, p->item.hash);
		if (has < 0)
			return store_say(r, has, "read the index");
		p->missing = !has;
		if (has && p->state != ST_UNCHANGED)
			st->dedup++; /* a rename, a copy, or content seen before */
	}
	return 0;
}

/* Scratch lists of write_bookkeeping, sized by fc_extract_run. */
struct bookkeeping {
	const char **dels;
	fc_item *items;
	const char **ekeys, **ewhys;
};

/* Deletions, failures found while hashing, and items whose content has a
 * vector already: one transaction before any extraction. */
static int write_bookkeeping(struct run *r, const struct old_table *old, struct bookkeeping *bk)
{
	const fc_extract_run_opts *ro = r->ro;
	size_t nd = 0, ni = 0, ne = 0;
	int rc;

	for (size_t i = 0; i < old->cap; i++)
		if (old->slots[i].key && !old->slots[i].seen &&
		    (!ro->scope || ro->scope(ro->scope_ctx, old->slots[i].key)))
			bk->dels[nd++] = old->slots[i].key;
	for (size_t i = 0; i < r->ds->n; i++) {
		struct plan_item *p = &r->pl[i];
		if (ro->hashes)
			memcpy(ro->hashes[i], p->item.hash, FC_HASH_LEN);
		if (ro->failed)
			ro->failed[i] = p->item.status != FC_ITEM_OK;
		if (p->failed_now) {
			bk->ekeys[ne] = p->item.key;
			bk->ewhys[ne++] = p->why;
			note_failure(r, i, p->why);
			if (ro->strict)
				return fci_errf(r->err, r->errcap, FC_ERR_CORRUPT, "cannot extract '%s': %s",
						p->item.key, p->why);
		}
		if (p->dirty && !p->missing)
			bk->items[ni++] = p->item;
	}
	if (ro->cache_only)
		nd = ni = ne = 0;
	r->st->removed = nd;
	if (nd || ni || ne) {
		fc_store_batch b = { .items = bk->items, .n_items = ni, .error_keys = bk->ekeys,
				     .error_whys = bk->ewhys, .n_errors = ne, .del_keys = bk->dels, .n_del = nd };
		if ((rc = fc_store_write_batch(r->s, &b, NULL)) != 0)
			return store_say(r, rc, "update items");
	}
	return 0;
}

/* One work item per missing content hash, its users grouped with it, in
 * dataset order. order has room for every item. */
static size_t plan_work(struct run *r, struct hkey *order, struct work *work)
{
	size_t nm = 0, n_work = 0;

	for (size_t i = 0; i < r->ds->n; i++)
		if (r->pl[i].item.status == FC_ITEM_OK && r->pl[i].missing) {
			memcpy(order[nm].hash, r->pl[i].item.hash, FC_HASH_LEN);
			order[nm++].i = i;
		}
	qsort(order, nm, sizeof *order, by_hash);
	for (size_t k = 0; k < nm;) {
		size_t j = k;
		while (j < nm && memcmp(order[j].hash, order[k].hash, FC_HASH_LEN) == 0) {
			r->users[j] = order[j].i;
			j++;
		}
		const fc_entry *e = &r->ds->entries[order[k].i];
		/* A shard's samples go together, in member order: the shard
		 * is read once, front to back. */
		work[n_work++] = (struct work){ .path = e->path, .hash = r->pl[order[k].i].item.hash,
						.tar = e->hash ? e : NULL,
						.rank = e->hash ? r->ds->shards[e->shard].first : order[k].i,
						.minor = e->hash ? e->member : 0, .first_user = k, .n_users = j - k };
		r->st->dedup += j - k - 1; /* copies within the dataset */
		k = j;
	}
	qsort(work, n_work, sizeof *work, by_rank);
	return n_work;
}

int fc_extract_run(fc_extract_ctx *x, fc_store *s, const fc_dataset *ds, const fc_extract_run_opts *ro,
		   fc_extract_stats *st, char *err, size_t errcap)
{
	double t0 = now();
	memset(st, 0, sizeof *st);
	if (err && errcap)
		err[0] = '\0';
	if (!(ro->val_fraction >= 0 && ro->val_fraction < 1))
		return fci_errf(err, errcap, FC_ERR_INVALID, "the validation fraction must be in [0, 1)");
	struct run r = { .x = x, .s = s, .ds = ds, .ro = ro, .st = st, .err = err, .errcap = errcap };
	struct old_table old = { 0 };
	struct bookkeeping bk = { 0 };
	uint32_t *label_ids = NULL;
	struct hkey *order = NULL;
	struct work *work = NULL;
	size_t n = ds->n, n1 = n ? n : 1, n_work;
	int rc;
	st->seen = n;
	if ((rc = ensure_extractor(&r)) != 0)
		return rc;
	if (!ro->cache_only && (rc = fc_store_foreach_item(s, old_add, &old)) != 0) {
		rc = rc == FC_ERR_NOMEM ? fci_errf(err, errcap, rc, "out of memory") : store_say(&r, rc, "read items");
		goto out;
	}
	/* The items of a tar shard left unopened stay as they are. */
	for (size_t i = 0; ds->n_shards && i < old.cap; i++)
		if (old.slots[i].key && fc_dataset_kept(ds, old.slots[i].key))
			old.slots[i].seen = 1;
	for (size_t k = 0; k < ds->n_shards; k++) {
		st->shards_read += ds->shards[k].state == FC_SHARD_READ;
		st->shards_kept += ds->shards[k].state == FC_SHARD_KEPT;
	}
	r.pl = calloc(n1, sizeof *r.pl);
	label_ids = malloc(n1 * sizeof *label_ids);
	r.users = malloc(n1 * sizeof *r.users);
	order = malloc(n1 * sizeof *order);
	work = malloc(n1 * sizeof *work);
	bk.dels = malloc((old.n ? old.n : 1) * sizeof *bk.dels);
	bk.items = malloc(n1 * sizeof *bk.items);
	bk.ekeys = malloc(n1 * sizeof *bk.ekeys);
	bk.ewhys = malloc(n1 * sizeof *bk.ewhys);
	if (!r.pl || !label_ids || !r.users || !order || !work || !bk.dels || !bk.items || !bk.ekeys || !bk.ewhys) {
		rc = fci_errf(err, errcap, FC_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (ro->cache_only)
		for (size_t i = 0; i < n; i++)
			label_ids[i] = FC_NO_LABEL;
	else if ((rc = map_labels(&r, label_ids)) != 0)
		goto out;
	plan_entries(ds, &old, label_ids, ro->val_fraction, ro->rehash, r.pl, &st->hashed);
	if ((rc = mark_missing(&r)) || (rc = write_bookkeeping(&r, &old, &bk)))
		goto out;
	n_work = plan_work(&r, order, work);
	if (n_work)
		rc = run_pipeline(&r, work, n_work);
out:
	st->seconds = now() - t0;
	old_free(&old);
	free(r.pl);
	free(label_ids);
	free(r.users);
	free(order);
	free(work);
	free(bk.dels);
	free(bk.items);
	free(bk.ekeys);
	free(bk.ewhys);
	return rc;
}
