/*
 * write.c - what extraction writes into a store, and its small records read
 * back: appending a batch of vectors as one chunk plus its index entries;
 * items, labels and error records (put, delete, get, walk); and the one
 * transaction that writes all of a batch together (fc_store_write_batch);
 * the dataset root extract records in meta.
 *
 * Every write runs inside fci_store_write()'s transaction, so each *_txn
 * callback here can be combined with the others in one batch and redone
 * after the map grows. Encoding a chunk happens before the transaction
 * begins, so other writers wait less.
 *
 * Not here: reading features back (load.c), stats, verify, gc (admin.c).
 */
#include <stdlib.h>
#include <string.h>

#include "store/store_impl.h"

/* ---- appending features ---- */

struct append_ctx {
	fci_exdb *e;
	const uint8_t *chunk;
	size_t len;
	const uint8_t (*hashes)[FC_HASH_LEN];
	size_t n;
	uint64_t id;
};

int fci_chunk_id_next(fc_store *s, MDB_txn *txn, uint64_t *id)
{
	MDB_val k = { 9, "chunk_seq" }, v;
	int rc = mdb_get(txn, s->meta, &k, &v);
	if (rc == MDB_NOTFOUND) {
		*id = 0;
	} else if (rc) {
		return fci_mdb_fail(s, rc, "cannot read chunk sequence");
	} else if (v.mv_size != 8) {
		return FCI_FAIL(s, FC_ERR_CORRUPT, "meta/chunk_seq has %zu bytes, not 8", v.mv_size);
	} else {
		*id = fci_load_le64(v.mv_data);
	}
	uint8_t seq[8];
	fci_store_le64(seq, *id + 1);
	MDB_val sv = { 8, seq };
	return fci_put(s, txn, s->meta, &k, &sv, 0);
}

static int append_txn(fc_store *s, MDB_txn *txn, void *vctx)
{
	struct append_ctx *c = vctx;
	int err = fci_chunk_id_next(s, txn, &c->id);
	if (err)
		return err;
	uint8_t key[8];
	fci_chunk_key(key, c->id);
	MDB_val k = { 8, key }, v = { c->len, (void *)c->chunk };
	if ((err = fci_put(s, txn, c->e->feat, &k, &v, MDB_NOOVERWRITE)) != 0)
		return err;
	for (size_t i = 0; i < c->n; i++) {
		uint8_t rec[FCI_INDEX_MAX];
		MDB_val ik = { FC_HASH_LEN, (void *)c->hashes[i] },
			iv = { fci_index_encode(s->format, rec, c->id, (uint32_t)i), rec };
		/* A hash already indexed keeps its vector; this slot is dead until gc. */
		int rc = mdb_put(txn, c->e->index, &ik, &iv, MDB_NOOVERWRITE);
		if (rc == MDB_MAP_FULL)
			return FCI_RETRY_GROW;
		if (rc && rc != MDB_KEYEXIST)
			return fci_mdb_fail(s, rc, "cannot write index entry");
	}
	return 0;
}

static int ensure_enc(fc_store *s, size_t need)
{
	if (need <= s->enc_cap)
		return 0;
	uint8_t *p = realloc(s->enc, need);
	if (!p)
		return FCI_FAIL(s, FC_ERR_NOMEM, "out of memory for a %zu-byte chunk", need);
	s->enc = p;
	s->enc_cap = need;
	return 0;
}

/* Encode a batch's vectors into s->enc and fill c for append_txn. */
static int encode_batch(fc_store *s, const uint8_t exid[FC_HASH_LEN], const float *vecs,
			const uint8_t (*hashes)[FC_HASH_LEN], size_t n, struct append_ctx *c)
{
	fci_exdb *e;
	int err = fci_ex_open(s, exid, &e);
	if (err)
		return err;
	if (n < 1 || n > FC_CHUNK_MAX_COUNT)
		return FCI_FAIL(s, FC_ERR_INVALID, "a batch holds 1 to %u vectors, not %zu", FC_CHUNK_MAX_COUNT, n);
	size_t bound = fci_chunk_bound(e->dtype, e->codec, e->dim, (uint32_t)n);
	if (bound == 0)
		return FCI_FAIL(s, FC_ERR_INVALID, "a batch of %zu vectors of dim %u is too large", n, e->dim);
	if ((err = ensure_enc(s, bound)) != 0)
		return err;
	size_t len;
	err = fci_chunk_encode(s->dec.ctx, s->enc, s->enc_cap, &len, vecs, hashes, e->dim, (uint32_t)n,
			       e->dtype, e->codec, e->level);
	if (err)
		return FCI_FAIL(s, err, "cannot encode batch: %s", fc_strerror(err));
	*c = (struct append_ctx){ .e = e, .chunk = s->enc, .len = len, .hashes = hashes, .n = n };
	return 0;
}

int fc_store_append(fc_store *s, const uint8_t exid[FC_HASH_LEN], const float *vecs,
		    const uint8_t (*hashes)[FC_HASH_LEN], size_t n, uint64_t *chunk_id)
{
	struct append_ctx c;
	int err = encode_batch(s, exid, vecs, hashes, n, &c);
	if (!err)
		err = fci_store_write(s, append_txn, &c);
	if (!err && chunk_id)
		*chunk_id = c.id;
	return err;
}

/* ---- labels ---- */

struct labels_ctx {
	const char *const *names;
	size_t n;
	uint32_t *ids;
};

static int label_next_id(fc_store *s, MDB_txn *txn, uint32_t *next)
{
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, s->labels, &cur);
	if (rc)
		return fci_mdb_fail(s, rc, "cannot read labels");
	/* 'i' + big-endian id keys sort by id; the last one is just before "j". */
	MDB_val k = { 1, "j" }, v;
	rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	rc = rc == 0 ? mdb_cursor_get(cur, &k, &v, MDB_PREV) : mdb_cursor_get(cur, &k, &v, MDB_LAST);
	*next = 0;
	if (rc == 0 && k.mv_size == 5 && ((const char *)k.mv_data)[0] == 'i')
		*next = (uint32_t)fci_be_load((const uint8_t *)k.mv_data + 1, 4) + 1;
	mdb_cursor_close(cur);
	return 0;
}

static int labels_txn(fc_store *s, MDB_txn *txn, void *vctx)
{
	struct labels_ctx *c = vctx;
	uint32_t next = 0;
	int err = label_next_id(s, txn, &next);
	if (err)
		return err;
	char key[512];
	for (size_t i = 0; i < c->n; i++) {
		size_t len = strlen(c->names[i]);
		if (len + 1 > fc_store_max_key(s) || len + 1 > sizeof key)
			return FCI_FAIL(s, FC_ERR_INVALID, "label '%.40s...' is longer than %zu bytes",
					c->names[i], fc_store_max_key(s) - 1);
		key[0] = 'n';
		memcpy(key + 1, c->names[i], len);
		MDB_val k = { len + 1, key }, v;
		int rc = mdb_get(txn, s->labels, &k, &v);
		if (rc == 0 && v.mv_size == 4) {
			c->ids[i] = fci_load_le32(v.mv_data);
			continue;
		}
		if (rc == 0)
			return FCI_FAIL(s, FC_ERR_CORRUPT, "labels/%s has %zu bytes, not 4", c->names[i],
					v.mv_size);
		if (rc != MDB_NOTFOUND)
			return fci_mdb_fail(s, rc, "cannot read labels");
		if (next == FC_NO_LABEL)
			return FCI_FAIL(s, FC_ERR_OVERFLOW, "too many labels");
		uint8_t idv[4], ik[5];
		fci_store_le32(idv, next);
		fci_label_id_key(ik, next);
		MDB_val nv = { 4, idv }, ikv = { 5, ik }, namev = { len, (void *)c->names[i] };
		if ((err = fci_put(s, txn, s->labels, &k, &nv, 0)) != 0 ||
		    (err = fci_put(s, txn, s->labels, &ikv, &namev, 0)) != 0)
			return err;
		c->ids[i] = next++;
	}
	return 0;
}

int fc_store_label_ids(fc_store *s, const char *const *names, size_t n, uint32_t *ids)
{
	struct labels_ctx c = { names, n, ids };
	return fci_store_write(s, labels_txn, &c);
}

int fc_store_label_name(fc_store *s, uint32_t id, char *buf, size_t cap)
{
	MDB_txn *txn;
	int err = fci_txn_begin(s, MDB_RDONLY, &txn);
	if (err)
		return err;
	uint8_t ik[5];
	fci_label_id_key(ik, id);
	MDB_val k = { 5, ik }, v;
	int rc = mdb_get(txn, s->labels, &k, &v);
	if (rc == MDB_NOTFOUND)
		err = FCI_FAIL(s, FC_ERR_NOT_FOUND, "no label with id %u", id);
	else if (rc)
		err = fci_mdb_fail(s, rc, "cannot read labels");
	else if (v.mv_size + 1 > cap)
		err = FCI_FAIL(s, FC_ERR_INVALID, "label %u needs %zu bytes", id, v.mv_size + 1);
	else {
		memcpy(buf, v.mv_data, v.mv_size);
		buf[v.mv_size] = '\0';
	}
	mdb_txn_abort(txn);
	return err;
}

/* ---- where the dataset is ---- */

/* meta/data_root: the absolute directory item keys are relative to, as the
 * last extract recorded it (stores made before it was recorded have none). */
#define DATA_ROOT_KEY "data_root"
#define DATA_ROOT_MAX 4096

static int data_root_txn(fc_store *s, MDB_txn *txn, void *ctx)
{
	const char *root = ctx;
	MDB_val k = { sizeof DATA_ROOT_KEY - 1, DATA_ROOT_KEY }, v = { strlen(root), (void *)root };
	return fci_put(s, txn, s->meta, &k, &v, 0);
}

int fc_store_set_data_root(fc_store *s, const char *root)
{
	if (!root || root[0] != '/' || strlen(root) >= DATA_ROOT_MAX)
		return FCI_FAIL(s, FC_ERR_INVALID, "dataset root '%s' is not an absolute path of at most %d bytes",
				root ? root : "(null)", DATA_ROOT_MAX - 1);
	char cur[DATA_ROOT_MAX];
	if (fc_store_get_data_root(s, cur, sizeof cur) == 0 && strcmp(cur, root) == 0)
		return 0;
	return fci_store_write(s, data_root_txn, (void *)root);
}

int fc_store_get_data_root(fc_store *s, char *buf, size_t cap)
{
	MDB_txn *txn;
	int err = fci_txn_begin(s, MDB_RDONLY, &txn);
	if (err)
		return err;
	MDB_val k = { sizeof DATA_ROOT_KEY - 1, DATA_ROOT_KEY }, v;
	int rc = mdb_get(txn, s->meta, &k, &v);
	if (rc == MDB_NOTFOUND)
		err = FCI_FAIL(s, FC_ERR_NOT_FOUND, "store records no dataset root");
	else if (rc)
		err = fci_mdb_fail(s, rc, "cannot read meta");
	else if (v.mv_size == 0 || v.mv_size >= DATA_ROOT_MAX || memchr(v.mv_data, '\0', v.mv_size))
		err = FCI_FAIL(s, FC_ERR_CORRUPT, "meta/data_root is not a path");
	else if (v.mv_size + 1 > cap)
		err = FCI_FAIL(s, FC_ERR_INVALID, "dataset root needs %zu bytes", v.mv_size + 1);
	else {
		memcpy(buf, v.mv_data, v.mv_size);
		buf[v.mv_size] = '\0';
	}
	mdb_txn_abort(txn);
	return err;
}

/* ---- items and errors ---- */

struct items_ctx {
	const fc_item *items;
	const char *const *keys;
	size_t n;
};

static int check_key(fc_store *s, const char *key, size_t len)
{
	if (len == 0)
		return FCI_FAIL(s, FC_ERR_INVALID, "an item key is empty");
	if (len > fc_store_max_key(s))
		return FCI_FAIL(s, FC_ERR_INVALID, "item key '%.60s...' is longer than %zu bytes", key,
				fc_store_max_key(s));
	return 0;
}

static int put_items_txn(fc_store *s, MDB_txn *txn, void *vctx)
{
	struct items_ctx *c = vctx;
	for (size_t i = 0; i < c->n; i++) {
		const fc_item *it = &c->items[i];
		uint8_t rec[FCI_ITEM_MAX];
		MDB_val k = { strlen(it->key), (void *)it->key }, v = { fci_item_encode(s->format, rec, it), rec };
		int err = fci_put(s, txn, s->items, &k, &v, 0);
		if (!err && it->status == FC_ITEM_OK)
			err = fci_del(s, txn, s->errors, &k); /* it decodes now: the old reason is stale */
		if (err)
			return err;
	}
	return 0;
}

static int check_items(fc_store *s, const fc_item *items, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int err = check_key(s, items[i].key, strlen(items[i].key));
		if (err)
			return err;
		if (items[i].split > FC_SPLIT_TEST && items[i].split != FC_SPLIT_NONE)
			return FCI_FAIL(s, FC_ERR_INVALID, "item '%s' has split %u", items[i].key, items[i].split);
		if (items[i].status > FC_ITEM_FAILED)
			return FCI_FAIL(s, FC_ERR_INVALID, "item '%s' has status %u", items[i].key,
					items[i].status);
	}
	return 0;
}

int fc_store_put_items(fc_store *s, const fc_item *items, size_t n)
{
	int err = check_items(s, items, n);
	if (err)
		return err;
	struct items_ctx c = { .items = items, .n = n };
	return fci_store_write(s, put_items_txn, &c);
}

static int del_items_txn(fc_store *s, MDB_txn *txn, void *vctx)
{
	struct items_ctx *c = vctx;
	for (size_t i = 0; i < c->n; i++) {
		MDB_val k = { strlen(c->keys[i]), (void *)c->keys[i] };
		if (k.mv_size == 0 || k.mv_size > fc_store_max_key(s))
			continue;
		int err = fci_del(s, txn, s->items, &k);
		if (!err)
			err = fci_del(s, txn, s->errors, &k);
		if (err)
			return err;
	}
	return 0;
}

int fc_store_del_items(fc_store *s, const char *const *keys, size_t n)
{
	struct items_ctx c = { .keys = keys, .n = n };
	return fci_store_write(s, del_items_txn, &c);
}

int fc_store_get_item(fc_store *s, const char *key, fc_item *out)
{
	size_t len = strlen(key);
	int err = check_key(s, key, len);
	if (err)
		return err;
	MDB_txn *txn;
	if ((err = fci_txn_begin(s, MDB_RDONLY, &txn)) != 0)
		return err;
	MDB_val k = { len, (void *)key }, v;
	int rc = mdb_get(txn, s->items, &k, &v);
	if (rc == MDB_NOTFOUND)
		err = FCI_FAIL(s, FC_ERR_NOT_FOUND, "no item '%s'", key);
	else if (rc)
		err = fci_mdb_fail(s, rc, "cannot read items");
	else {
		const char *why;
		if (fci_item_decode(s->format, &v, out, &why) != 0)
			err = FCI_FAIL(s, FC_ERR_CORRUPT, "items/%s: %s", key, why);
		out->key = key;
	}
	mdb_txn_abort(txn);
	return err;
}

/* Walk a db of string keys; fn gets a NUL-terminated copy of each key. */
typedef int (*kv_fn)(fc_store *s, void *ctx, const char *key, const MDB_val *v);

static int walk_strings(fc_store *s, MDB_dbi dbi, kv_fn fn, void *ctx)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	int err = fci_txn_begin(s, MDB_RDONLY, &txn);
	if (err)
		return err;
	int rc = mdb_cursor_open(txn, dbi, &cur);
	if (rc) {
		mdb_txn_abort(txn);
		return fci_mdb_fail(s, rc, "cannot read");
	}
	char key[FC_KEY_MAX + 1];
	MDB_val k, v;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && !err;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		size_t len = k.mv_size < FC_KEY_MAX ? k.mv_size : FC_KEY_MAX;
		memcpy(key, k.mv_data, len);
		key[len] = '\0';
		err = fn(s, ctx, key, &v);
	}
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	return err;
}

struct item_walk {
	fc_item_fn fn;
	fc_error_fn efn;
	void *ctx;
};

static int item_visit(fc_store *s, void *vctx, const char *key, const MDB_val *v)
{
	struct item_walk *w = vctx;
	fc_item it;
	const char *why;
	if (fci_item_decode(s->format, v, &it, &why) != 0)
		return FCI_FAIL(s, FC_ERR_CORRUPT, "items/%s: %s", key, why);
	it.key = key;
	return w->fn(w->ctx, &it);
}

int fc_store_foreach_item(fc_store *s, fc_item_fn fn, void *ctx)
{
	struct item_walk w = { .fn = fn, .ctx = ctx };
	return walk_strings(s, s->items, item_visit, &w);
}

static int error_visit(fc_store *s, void *vctx, const char *key, const MDB_val *v)
{
	(void)s;
	struct item_walk *w = vctx;
	char why[1024];
	size_t len = v->mv_size < sizeof why - 1 ? v->mv_size : sizeof why - 1;
	memcpy(why, v->mv_data, len);
	why[len] = '\0';
	return w->efn(w->ctx, key, why);
}

int fc_store_foreach_error(fc_store *s, fc_error_fn fn, void *ctx)
{
	struct item_walk w = { .efn = fn, .ctx = ctx };
	return walk_strings(s, s->errors, error_visit, &w);
}

struct error_ctx {
	const char *key, *why;
};

static int put_error_txn(fc_store *s, MDB_txn *txn, void *vctx)
{
	struct error_ctx *c = vctx;
	MDB_val k = { strlen(c->key), (void *)c->key }, v = { strlen(c->why), (void *)c->why };
	return fci_put(s, txn, s->errors, &k, &v, 0);
}

int fc_store_put_error(fc_store *s, const char *key, const char *why)
{
	int err = check_key(s, key, strlen(key));
	if (err)
		return err;
	struct error_ctx c = { key, why };
	return fci_store_write(s, put_error_txn, &c);
}

/* ---- one batch of everything ---- */

struct batch_ctx {
	const fc_store_batch *b;
	struct append_ctx chunk;
};

static int batch_txn(fc_store *s, MDB_txn *txn, void *vctx)
{
	struct batch_ctx *c = vctx;
	const fc_store_batch *b = c->b;
	int err = 0;
	if (b->n_del) {
		struct items_ctx d = { .keys = b->del_keys, .n = b->n_del };
		err = del_items_txn(s, txn, &d);
	}
	if (!err && b->n_vecs)
		err = append_txn(s, txn, &c->chunk);
	if (!err && b->n_items) {
		struct items_ctx it = { .items = b->items, .n = b->n_items };
		err = put_items_txn(s, txn, &it);
	}
	for (size_t i = 0; !err && i < b->n_errors; i++) {
		struct error_ctx e = { b->error_keys[i], b->error_whys[i] };
		err = put_error_txn(s, txn, &e);
	}
	return err;
}

int fc_store_write_batch(fc_store *s, const fc_store_batch *b, uint64_t *chunk_id)
{
	struct batch_ctx c = { .b = b };
	int err = check_items(s, b->items, b->n_items);
	for (size_t i = 0; !err && i < b->n_errors; i++)
		err = check_key(s, b->error_keys[i], strlen(b->error_keys[i]));
	if (!err && b->n_vecs)
		err = encode_batch(s, b->exid, b->vecs, b->hashes, b->n_vecs, &c.chunk);
	if (!err)
		err = fci_store_write(s, batch_txn, &c);
	if (!err && chunk_id)
		*chunk_id = b->n_vecs ? c.chunk.id : 0;
	return err;
}

/* ---- extraction's writer: batches gathered into chunks ---- */

#define WRITER_CHUNK_BYTES ((size_t)64 << 10)
#define WRITER_MAX_RAW ((size_t)16 << 20) /* f32 bytes pending at most, whatever they encode to */
#define WRITER_MAX_ITEMS 65536            /* item and error records pending at most */

struct fc_store_writer {
	fc_store *s;
	uint8_t exid[FC_HASH_LEN];
	uint32_t dim;
	size_t target;   /* encoded chunk bytes to reach before writing */
	size_t per_vec;  /* encoded bytes per vector of the last encoding; 0 before one */
	uint64_t written;
	/* what is pending: vectors, items, error records; strings in one arena
	 * (by offset: it moves as it grows) */
	float *vecs;
	uint8_t (*hashes)[FC_HASH_LEN];
	size_t n, cap;
	fc_item *items;
	size_t *item_key;
	size_t n_items, cap_items;
	size_t *err_key, *err_why;
	const char **ekeys, **ewhys;
	size_t n_errs, cap_errs;
	char *strs;
	size_t strs_len, strs_cap;
};

int fc_store_writer_new(fc_store_writer **out, fc_store *s, const uint8_t exid[FC_HASH_LEN], size_t chunk_bytes)
{
	*out = NULL;
	fci_exdb *e;
	int err = fci_ex_open(s, exid, &e);
	if (err)
		return err;
	fc_store_writer *w = calloc(1, sizeof *w);
	if (!w)
		return FCI_FAIL(s, FC_ERR_NOMEM, "out of memory");
	w->s = s;
	memcpy(w->exid, exid, FC_HASH_LEN);
	w->dim = e->dim;
	w->target = chunk_bytes ? chunk_bytes : WRITER_CHUNK_BYTES;
	*out = w;
	return 0;
}

void fc_store_writer_free(fc_store_writer *w)
{
	if (!w)
		return;
	free(w->vecs);
	free(w->hashes);
	free(w->items);
	free(w->item_key);
	free(w->err_key);
	free(w->err_why);
	free(w->ekeys);
	free(w->ewhys);
	free(w->strs);
	free(w);
}

uint64_t fc_store_writer_written(const fc_store_writer *w)
{
	return w->written;
}

size_t fc_store_writer_pending(const fc_store_writer *w)
{
	return w->n;
}

/* Grow *p (of *cap elements of `size` bytes) to hold `need`, doubling. */
static int grow(fc_store *s, void **p, size_t *cap, size_t need, size_t size)
{
	if (need <= *cap)
		return 0;
	size_t c = *cap ? *cap : 64;
	while (c < need)
		c *= 2;
	if (c > SIZE_MAX / size)
		return FCI_FAIL(s, FC_ERR_NOMEM, "out of memory for pending records");
	void *q = realloc(*p, c * size);
	if (!q)
		return FCI_FAIL(s, FC_ERR_NOMEM, "out of memory for pending records");
	*p = q;
	*cap = c;
	return 0;
}

/* Copy a string into the arena; *off gets where. */
static int arena_put(fc_store_writer *w, const char *str, size_t *off)
{
	size_t len = strlen(str) + 1;
	int err = grow(w->s, (void **)&w->strs, &w->strs_cap, w->strs_len + len, 1);
	if (err)
		return err;
	memcpy(w->strs + w->strs_len, str, len);
	*off = w->strs_len;
	w->strs_len += len;
	return 0;
}

/* Write everything pending in one transaction; c holds the encoded chunk
 * when there are vectors. */
static int writer_commit(fc_store_writer *w, struct append_ctx *c)
{
	fc_store *s = w->s;
	for (size_t i = 0; i < w->n_items; i++)
		w->items[i].key = w->strs + w->item_key[i];
	for (size_t i = 0; i < w->n_errs; i++) {
		w->ekeys[i] = w->strs + w->err_key[i];
		w->ewhys[i] = w->strs + w->err_why[i];
	}
	fc_store_batch b = { .exid = w->exid, .vecs = w->vecs, .hashes = (const uint8_t(*)[FC_HASH_LEN])w->hashes,
			     .n_vecs = w->n, .items = w->items, .n_items = w->n_items, .error_keys = w->ekeys,
			     .error_whys = w->ewhys, .n_errors = w->n_errs };
	struct batch_ctx bc = { .b = &b };
	if (w->n)
		bc.chunk = *c;
	int err = fci_store_write(s, batch_txn, &bc);
	if (err)
		return err;
	w->written += w->n;
	w->n = w->n_items = w->n_errs = w->strs_len = 0;
	return 0;
}

/* Encode what is pending and write it if it is large enough (or `force`). */
static int writer_try(fc_store_writer *w, int force)
{
	struct append_ctx c = { 0 };
	if (w->n) {
		int err = encode_batch(w->s, w->exid, w->vecs, (const uint8_t(*)[FC_HASH_LEN])w->hashes, w->n, &c);
		if (err)
			return err;
		w->per_vec = (c.len + w->n - 1) / w->n;
		if (c.len < w->target && !force)
			return 0;
	} else if (!w->n_items && !w->n_errs) {
		return 0;
	}
	return writer_commit(w, &c);
}

int fc_store_writer_flush(fc_store_writer *w)
{
	return writer_try(w, 1);
}

int fc_store_writer_add(fc_store_writer *w, const fc_store_batch *b)
{
	fc_store *s = w->s;
	if (b->n_del)
		return FCI_FAIL(s, FC_ERR_INVALID, "a store writer does not delete items");
	if (b->n_vecs && memcmp(b->exid, w->exid, FC_HASH_LEN) != 0)
		return FCI_FAIL(s, FC_ERR_INVALID, "a batch for another extractor than the writer's");
	if (b->n_vecs > FC_CHUNK_MAX_COUNT)
		return FCI_FAIL(s, FC_ERR_INVALID, "a batch holds 1 to %u vectors, not %zu", FC_CHUNK_MAX_COUNT,
				b->n_vecs);
	int err = check_items(s, b->items, b->n_items);
	for (size_t i = 0; !err && i < b->n_errors; i++)
		err = check_key(s, b->error_keys[i], strlen(b->error_keys[i]));
	if (err)
		return err;
	/* A value the dtype cannot hold would make every later encoding of the
	 * pending chunk fail: refuse its batch now, before it joins the others
	 * (which the caller may still flush). */
	fci_exdb *e;
	if (b->n_vecs && (err = fci_ex_open(s, w->exid, &e)) != 0)
		return err;
	if (b->n_vecs && (err = fci_chunk_check(s->dec.ctx, b->vecs, w->dim, (uint32_t)b->n_vecs, e->dtype)) != 0)
		return FCI_FAIL(s, err, "cannot encode batch: %s", fc_strerror(err));
	/* A chunk holds at most FC_CHUNK_MAX_COUNT vectors: write what is
	 * pending first when this batch would not fit beside it. */
	if (w->n + b->n_vecs > FC_CHUNK_MAX_COUNT && (err = writer_try(w, 1)) != 0)
		return err;

	size_t dim = w->dim, n = w->n + b->n_vecs;
	size_t cap = w->cap, cap_h = w->cap;
	if ((err = grow(s, (void **)&w->vecs, &cap, n, dim * sizeof *w->vecs)) != 0 ||
	    (err = grow(s, (void **)&w->hashes, &cap_h, n, FC_HASH_LEN)) != 0)
		return err;
	w->cap = cap < cap_h ? cap : cap_h;
	size_t ni = w->n_items + b->n_items, ci = w->cap_items, ck = w->cap_items;
	if ((err = grow(s, (void **)&w->items, &ci, ni, sizeof *w->items)) != 0 ||
	    (err = grow(s, (void **)&w->item_key, &ck, ni, sizeof *w->item_key)) != 0)
		return err;
	w->cap_items = ci < ck ? ci : ck;
	size_t ne = w->n_errs + b->n_errors, c1 = w->cap_errs, c2 = w->cap_errs, c3 = w->cap_errs,
	       c4 = w->cap_errs;
	if ((err = grow(s, (void **)&w->err_key, &c1, ne, sizeof *w->err_key)) != 0 ||
	    (err = grow(s, (void **)&w->err_why, &c2, ne, sizeof *w->err_why)) != 0 ||
	    (err = grow(s, (void **)&w->ekeys, &c3, ne, sizeof *w->ekeys)) != 0 ||
	    (err = grow(s, (void **)&w->ewhys, &c4, ne, sizeof *w->ewhys)) != 0)
		return err;
	w->cap_errs = c1 < c2 ? c1 : c2;
	w->cap_errs = w->cap_errs < c3 ? w->cap_errs : c3;
	w->cap_errs = w->cap_errs < c4 ? w->cap_errs : c4;

	/* Strings first: a failure there leaves nothing half-added. */
	size_t strs_len = w->strs_len;
	for (size_t i = 0; !err && i < b->n_items; i++)
		err = arena_put(w, b->items[i].key, &w->item_key[w->n_items + i]);
	for (size_t i = 0; !err && i < b->n_errors; i++) {
		err = arena_put(w, b->error_keys[i], &w->err_key[w->n_errs + i]);
		if (!err)
			err = arena_put(w, b->error_whys[i], &w->err_why[w->n_errs + i]);
	}
	if (err) {
		w->strs_len = strs_len;
		return err;
	}
	if (b->n_vecs) {
		memcpy(w->vecs + w->n * dim, b->vecs, b->n_vecs * dim * sizeof *w->vecs);
		memcpy(w->hashes + w->n, b->hashes, b->n_vecs * (size_t)FC_HASH_LEN);
	}
	if (b->n_items)
		memcpy(w->items + w->n_items, b->items, b->n_items * sizeof *w->items);
	w->n = n;
	w->n_items = ni;
	w->n_errs = ne;

	/* Encoding is cheap next to the model that made the vectors, but not
	 * free: encode again only when the last ratio says it may be enough. */
	int full = w->n * dim * sizeof(float) >= WRITER_MAX_RAW || w->n_items + w->n_errs >= WRITER_MAX_ITEMS;
	if (!full && w->n && w->per_vec && w->n * w->per_vec < w->target)
		return 0;
	if (!full && !w->n)
		return 0;
	return writer_try(w, full);
}
