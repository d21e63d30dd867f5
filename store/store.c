/*
 * store.c - the feature store on LMDB: opening and versioning, items,
 * labels, extractors, appending chunks, loading them back in parallel,
 * verification and garbage collection. The chunk record itself is chunk.c's.
 *
 * Transactions: every write goes through store_write(), which runs a
 * callback inside one write transaction and redoes it after growing the map
 * when LMDB reports MDB_MAP_FULL. Reads take one read transaction: its
 * snapshot stays fixed while other processes append. The parallel loaders
 * fetch every chunk pointer in that one transaction and hand the (read-only,
 * memory-mapped) bytes to OpenMP threads to decode, so all threads see the
 * same snapshot. (Per-thread read transactions, which MDB_NOTLS allows,
 * could each see a different snapshot if a writer commits in between.)
 *
 * Not here: deciding what to extract (extract/), decoding images, training.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <dirent.h>
#include <time.h>

#include <jansson.h>
#include <lmdb.h>
#include <omp.h>

#include "featcache/store.h"
#include "store/chunk.h"
#include "util/util.h"

#define ITEM_REC 40   /* hash 16, size 8, mtime 8, label 4, split 1, status 1, pad 2 */
#define INDEX_REC 12  /* chunk id 8, slot 4 */
#define MAX_DBS 512
#define GC_CHUNKS_PER_TXN 128
#define FULL_DISK_SLACK (16u << 20) /* an EIO with less free space than this is a full disk */
#define HUGE_PAGE ((size_t)2 << 20)
#define LMDB_MAGIC 0xBEEFC0DEu /* first word of an LMDB meta page, after the page header */
#define RETRY_GROW 1  /* internal: a write callback hit MDB_MAP_FULL */

typedef struct exdb {
	uint8_t id[FC_HASH_LEN];
	MDB_dbi feat, index;
	uint32_t dim;
	fc_dtype dtype;
	fc_codec codec;
	int level;
} exdb;

struct fc_store {
	MDB_env *env;
	MDB_dbi meta, items, labels, extractors, errors;
	char *path;
	int readonly;
	uint64_t map_size, max_map_size;
	const fc_logger *logger;
	exdb *ex;
	size_t n_ex, cap_ex;
	fci_chunk_ctx *cctx;
	uint8_t *enc;     /* encode buffer */
	size_t enc_cap;
	float *scratch;   /* decode buffer for single lookups */
	size_t scratch_len;
	char *desc;       /* descriptor returned by fc_store_get_extractor */
	char err[1024];
};

/* ---- little-endian fields ---- */

static void put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 0; i < 4; i++)
		v |= (uint32_t)p[i] << (8 * i);
	return v;
}

static uint64_t get_u64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* Chunk keys are big-endian so LMDB's byte order is append order. */
static void chunk_key(uint8_t k[8], uint64_t id)
{
	for (int i = 0; i < 8; i++)
		k[i] = (uint8_t)(id >> (56 - 8 * i));
}

static uint64_t chunk_key_id(const MDB_val *k)
{
	const uint8_t *p = k->mv_data;
	uint64_t id = 0;
	for (int i = 0; i < 8; i++)
		id = id << 8 | p[i];
	return id;
}

/* ---- errors ---- */

static int fail(fc_store *s, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(fc_store *s, int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->err, sizeof s->err, fmt, ap);
	va_end(ap);
	return err;
}

static int mdb_code(int rc)
{
	switch (rc) {
	case MDB_NOTFOUND: return FC_ERR_NOT_FOUND;
	case MDB_MAP_FULL: case ENOSPC: case EDQUOT: return FC_ERR_FULL;
	case ENOMEM: return FC_ERR_NOMEM;
	case MDB_CORRUPTED: case MDB_PAGE_NOTFOUND: case MDB_INVALID: return FC_ERR_CORRUPT;
	case MDB_VERSION_MISMATCH: return FC_ERR_VERSION;
	case MDB_READERS_FULL: case EBUSY: return FC_ERR_BUSY;
	case MDB_TXN_FULL: case MDB_DBS_FULL: case MDB_BAD_VALSIZE: return FC_ERR_INVALID;
	case EACCES: case EPERM: case EROFS: case EIO: return FC_ERR_IO;
	}
	return rc > 0 ? FC_ERR_IO : FC_ERR_INTERNAL;
}

static int mdb_fail(fc_store *s, int rc, const char *what)
{
	return fail(s, mdb_code(rc), "%s: %s", what, mdb_strerror(rc));
}

const char *fc_store_errmsg(const fc_store *s)
{
	return s ? s->err : "out of memory";
}

const char *fc_store_path(const fc_store *s)
{
	return s->path;
}

size_t fc_store_max_key(const fc_store *s)
{
	return (size_t)mdb_env_get_maxkeysize(s->env);
}

/* ---- transactions ---- */

/* Begin a transaction, adopting a map grown by another process. */
static int txn_begin(fc_store *s, unsigned flags, MDB_txn **txn)
{
	int rc = mdb_txn_begin(s->env, NULL, flags, txn);
	if (rc == MDB_MAP_RESIZED) {
		rc = mdb_env_set_mapsize(s->env, 0);
		if (rc == 0)
			rc = mdb_txn_begin(s->env, NULL, flags, txn);
	}
	if (rc)
		return mdb_fail(s, rc, "cannot begin transaction");
	return 0;
}

static int grow_map(fc_store *s)
{
	MDB_envinfo info;
	mdb_env_info(s->env, &info);
	uint64_t cur = info.me_mapsize, next = cur * 2;
	if (s->max_map_size && next > s->max_map_size)
		next = s->max_map_size;
	if (next <= cur)
		return fail(s, FC_ERR_FULL, "store is full: it reached its size cap of %llu bytes",
			    (unsigned long long)s->max_map_size);
	int rc = mdb_env_set_mapsize(s->env, (size_t)next);
	if (rc)
		return mdb_fail(s, rc, "cannot grow the store's map");
	s->map_size = next;
	return 0;
}

/* A put that tells the write loop to grow the map and redo the transaction. */
static int put(fc_store *s, MDB_txn *txn, MDB_dbi dbi, MDB_val *k, MDB_val *v, unsigned flags)
{
	int rc = mdb_put(txn, dbi, k, v, flags);
	if (rc == MDB_MAP_FULL)
		return RETRY_GROW;
	if (rc)
		return mdb_fail(s, rc, "cannot write");
	return 0;
}

static int del(fc_store *s, MDB_txn *txn, MDB_dbi dbi, MDB_val *k)
{
	int rc = mdb_del(txn, dbi, k, NULL);
	if (rc == MDB_MAP_FULL)
		return RETRY_GROW;
	if (rc && rc != MDB_NOTFOUND)
		return mdb_fail(s, rc, "cannot delete");
	return 0;
}

/* LMDB reports a short write as EIO, and a full disk usually shows up as
 * one; tell the two apart by what the filesystem has left. */
static int commit_fail(fc_store *s, int rc)
{
	struct statvfs vfs;
	if ((rc == EIO || rc == ENOSPC || rc == EDQUOT) && statvfs(s->path, &vfs) == 0) {
		uint64_t left = (uint64_t)vfs.f_bavail * vfs.f_frsize;
		if (rc != EIO || left < FULL_DISK_SLACK)
			return fail(s, FC_ERR_FULL,
				    "cannot commit: no space left on device (%llu bytes free); nothing of this batch was written",
				    (unsigned long long)left);
	}
	return mdb_fail(s, rc, "cannot commit");
}

typedef int (*write_fn)(fc_store *s, MDB_txn *txn, void *ctx);

/* Run fn in one write transaction; on MDB_MAP_FULL grow the map and redo it
 * from the start, so fn must derive everything from the transaction and its
 * ctx inputs. */
static int store_write(fc_store *s, write_fn fn, void *ctx)
{
	if (s->readonly)
		return fail(s, FC_ERR_INVALID, "store '%s' is open read-only", s->path);
	for (;;) {
		MDB_txn *txn;
		int err = txn_begin(s, 0, &txn);
		if (err)
			return err;
		err = fn(s, txn, ctx);
		if (err) {
			mdb_txn_abort(txn);
			if (err != RETRY_GROW)
				return err;
		} else {
			int rc = mdb_txn_commit(txn);
			if (rc == 0)
				return 0;
			if (rc != MDB_MAP_FULL)
				return commit_fail(s, rc);
		}
		err = grow_map(s);
		if (err)
			return err;
	}
}

/* ---- open ---- */

/* fci_os_error into a per-thread buffer, for messages built right away. */
static const char *os_error(int e)
{
	static _Thread_local char buf[128];
	return fci_os_error(buf, sizeof buf, e);
}

static void fc_log_msg(const fc_logger *lg, int level, const char *msg)
{
	if (lg && lg->log)
		lg->log(lg->ctx, level, msg);
}

/* Look at data.mdb before LMDB does: mdb_env_open would create a lock file
 * beside whatever file this is. An LMDB meta page has its magic 16 bytes in. */
static int check_lmdb_file(fc_store *s, const char *data)
{
	FILE *f = fopen(data, "rb");
	if (!f)
		return fail(s, FC_ERR_IO, "cannot read data.mdb: %s", os_error(errno));
	uint8_t head[20];
	size_t got = fread(head, 1, sizeof head, f);
	fclose(f);
	if (got < sizeof head || get_u32(head + 16) != LMDB_MAGIC)
		return fail(s, FC_ERR_NOT_STORE, "not a featcache store (data.mdb is not an LMDB file)");
	return 0;
}

static int dir_is_empty(const char *path)
{
	DIR *d = opendir(path);
	if (!d)
		return 0;
	struct dirent *e;
	int empty = 1;
	while ((e = readdir(d))) {
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			empty = 0;
			break;
		}
	}
	closedir(d);
	return empty;
}

static int create_meta(fc_store *s, MDB_txn *txn, void *ctx)
{
	(void)ctx;
	unsigned flags = MDB_CREATE;
	const char *names[] = { "meta", "items", "labels", "extractors", "errors" };
	MDB_dbi *dbis[] = { &s->meta, &s->items, &s->labels, &s->extractors, &s->errors };
	for (int i = 0; i < 5; i++) {
		int rc = mdb_dbi_open(txn, names[i], flags, dbis[i]);
		if (rc == MDB_MAP_FULL)
			return RETRY_GROW;
		if (rc)
			return mdb_fail(s, rc, "cannot create database");
	}
	uint8_t v[4];
	put_u32(v, FC_STORE_FORMAT);
	MDB_val k = { 6, "format" }, val = { 4, v };
	int err = put(s, txn, s->meta, &k, &val, 0);
	if (err)
		return err;
	char info[160];
	snprintf(info, sizeof info, "{\"featcache\":\"%s\",\"created\":%lld}", FC_VERSION_STRING,
		 (long long)time(NULL));
	MDB_val ck = { 7, "created" }, cv = { strlen(info), info };
	return put(s, txn, s->meta, &ck, &cv, 0);
}

static int open_dbs(fc_store *s)
{
	MDB_txn *txn;
	int err = txn_begin(s, MDB_RDONLY, &txn);
	if (err)
		return err;
	int rc = mdb_dbi_open(txn, "meta", 0, &s->meta);
	if (rc == MDB_NOTFOUND) {
		mdb_txn_abort(txn);
		return fail(s, FC_ERR_NOT_STORE, "an LMDB environment but not a featcache store");
	}
	if (rc) {
		mdb_txn_abort(txn);
		return mdb_fail(s, rc, "cannot open meta");
	}
	MDB_val k = { 6, "format" }, v;
	rc = mdb_get(txn, s->meta, &k, &v);
	if (rc || v.mv_size != 4) {
		mdb_txn_abort(txn);
		return fail(s, FC_ERR_NOT_STORE, "an LMDB environment without a featcache format record");
	}
	uint32_t format = get_u32(v.mv_data);
	if (format > FC_STORE_FORMAT) {
		mdb_txn_abort(txn);
		return fail(s, FC_ERR_VERSION,
			    "store format %u is newer than this featcache (%d): upgrade featcache",
			    format, FC_STORE_FORMAT);
	}
	if (format == 0) {
		mdb_txn_abort(txn);
		return fail(s, FC_ERR_CORRUPT, "store format record is 0");
	}
	const char *names[] = { "items", "labels", "extractors", "errors" };
	MDB_dbi *dbis[] = { &s->items, &s->labels, &s->extractors, &s->errors };
	for (int i = 0; i < 4; i++) {
		rc = mdb_dbi_open(txn, names[i], 0, dbis[i]);
		if (rc) {
			mdb_txn_abort(txn);
			return fail(s, FC_ERR_CORRUPT, "store is missing its '%s' database", names[i]);
		}
	}
	/* Committing a read transaction keeps the handles it opened. */
	rc = mdb_txn_commit(txn);
	if (rc)
		return mdb_fail(s, rc, "cannot open databases");
	return 0;
}

int fc_store_open(fc_store **out, const char *path, const fc_store_opts *opts)
{
	static const fc_store_opts defaults = { .sync = 1 };
	if (!opts)
		opts = &defaults;
	*out = NULL;
	fc_store *s = calloc(1, sizeof *s);
	if (!s)
		return FC_ERR_NOMEM;
	*out = s;
	s->path = strdup(path);
	s->cctx = fci_chunk_ctx_new();
	if (!s->path || !s->cctx)
		return fail(s, FC_ERR_NOMEM, "out of memory");
	s->readonly = opts->readonly;
	s->logger = opts->logger;
	s->max_map_size = opts->max_map_size;
	s->map_size = opts->map_size ? opts->map_size : (uint64_t)1 << 30;
	if (s->max_map_size && s->map_size > s->max_map_size)
		s->map_size = s->max_map_size;

	struct stat st;
	if (stat(path, &st) != 0) {
		if (errno != ENOENT || !opts->create || opts->readonly)
			return fail(s, errno == ENOENT ? FC_ERR_NOT_FOUND : FC_ERR_IO, "%s", os_error(errno));
		if (mkdir(path, 0777) != 0)
			return fail(s, FC_ERR_IO, "%s", os_error(errno));
	} else if (!S_ISDIR(st.st_mode)) {
		return fail(s, FC_ERR_NOT_STORE, "not a directory");
	}

	char data[4096];
	if (snprintf(data, sizeof data, "%s/data.mdb", path) >= (int)sizeof data)
		return fail(s, FC_ERR_INVALID, "path is too long");
	int fresh = 0;
	if (stat(data, &st) != 0) {
		if (errno != ENOENT)
			return fail(s, FC_ERR_IO, "%s", os_error(errno));
		if (!opts->create || opts->readonly)
			return fail(s, FC_ERR_NOT_STORE, "not a featcache store (no data.mdb)");
		if (!dir_is_empty(path))
			return fail(s, FC_ERR_NOT_STORE,
				    "directory is not empty and holds no featcache store: refusing to write there");
		fresh = 1;
	} else {
		int err = check_lmdb_file(s, data);
		if (err)
			return err;
	}

	int rc = mdb_env_create(&s->env);
	if (rc)
		return mdb_fail(s, rc, "cannot create environment");
	mdb_env_set_maxdbs(s->env, MAX_DBS);
	mdb_env_set_maxreaders(s->env, 256);
	mdb_env_set_mapsize(s->env, (size_t)s->map_size);
	unsigned flags = MDB_NOTLS;
	if (opts->readonly)
		flags |= MDB_RDONLY;
	if (!opts->sync)
		flags |= MDB_NOSYNC;
	rc = mdb_env_open(s->env, path, flags, 0666);
	if (opts->readonly && (rc == EACCES || rc == EROFS)) {
		/* A store we may read but whose lock file we cannot write (another
		 * user's, a read-only mount): read without the reader table. A
		 * writer elsewhere could then reuse pages under us, so say so. */
		mdb_env_close(s->env);
		if ((rc = mdb_env_create(&s->env)) != 0)
			return mdb_fail(s, rc, "cannot create environment");
		mdb_env_set_maxdbs(s->env, MAX_DBS);
		rc = mdb_env_open(s->env, path, flags | MDB_NOLOCK, 0666);
		if (rc == 0)
			fc_log_msg(s->logger, FC_LOG_WARN,
				   "store is not writable: reading without a lock (do not write to it meanwhile)");
	}
	if (rc) {
		if (rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH)
			return fail(s, FC_ERR_NOT_STORE, "not a featcache store: %s", mdb_strerror(rc));
		return fail(s, mdb_code(rc), "%s", rc > 0 ? os_error(rc) : mdb_strerror(rc));
	}
	MDB_envinfo info;
	mdb_env_info(s->env, &info);
	s->map_size = info.me_mapsize;
	if (fresh)
		return store_write(s, create_meta, NULL);
	return open_dbs(s);
}

void fc_store_free(fc_store *s)
{
	if (!s)
		return;
	if (s->env)
		mdb_env_close(s->env);
	fci_chunk_ctx_free(s->cctx);
	free(s->ex);
	free(s->enc);
	free(s->scratch);
	free(s->desc);
	free(s->path);
	free(s);
}

/* ---- extractors ---- */

static void ex_db_names(const uint8_t id[FC_HASH_LEN], char feat[40], char index[40])
{
	char hex[2 * FC_HASH_LEN + 1];
	fc_hex(hex, id, FC_HASH_LEN);
	snprintf(feat, 40, "feat.%s", hex);
	snprintf(index, 40, "index.%s", hex);
}

/* Parse a stored descriptor's storage fields. */
static int ex_parse(fc_store *s, const MDB_val *v, exdb *e)
{
	json_error_t jerr;
	json_t *j = json_loadb(v->mv_data, v->mv_size, 0, &jerr);
	int err = 0;
	json_int_t dim = 0, level = 0;
	const char *dtype = NULL, *codec = NULL;
	if (!j || json_unpack(j, "{s:I, s:s, s:s, s:I}", "dim", &dim, "dtype", &dtype, "codec", &codec,
			      "level", &level) != 0) {
		err = fail(s, FC_ERR_CORRUPT, "extractor descriptor is not valid");
		goto out;
	}
	if (dim < 1 || dim > FC_CHUNK_MAX_DIM || fc_dtype_parse(dtype, &e->dtype) ||
	    fc_codec_parse(codec, &e->codec) || level < -7 || level > 22) {
		err = fail(s, FC_ERR_CORRUPT, "extractor descriptor has bad storage fields");
		goto out;
	}
	e->dim = (uint32_t)dim;
	e->level = (int)level;
out:
	json_decref(j);
	return err;
}

static int ex_cache_add(fc_store *s, const exdb *e)
{
	if (s->n_ex == s->cap_ex) {
		size_t cap = s->cap_ex ? 2 * s->cap_ex : 8;
		exdb *p = realloc(s->ex, cap * sizeof *p);
		if (!p)
			return fail(s, FC_ERR_NOMEM, "out of memory");
		s->ex = p;
		s->cap_ex = cap;
	}
	s->ex[s->n_ex++] = *e;
	return 0;
}

/* Find an extractor's databases, opening them on first use. */
static int ex_open(fc_store *s, const uint8_t id[FC_HASH_LEN], exdb **out)
{
	for (size_t i = 0; i < s->n_ex; i++) {
		if (memcmp(s->ex[i].id, id, FC_HASH_LEN) == 0) {
			*out = &s->ex[i];
			return 0;
		}
	}
	char hex[2 * FC_HASH_LEN + 1], feat[40], index[40];
	fc_hex(hex, id, FC_HASH_LEN);
	ex_db_names(id, feat, index);
	exdb e = { .feat = 0 };
	memcpy(e.id, id, FC_HASH_LEN);
	MDB_txn *txn;
	int err = txn_begin(s, MDB_RDONLY, &txn);
	if (err)
		return err;
	MDB_val k = { FC_HASH_LEN, (void *)id }, v;
	int rc = mdb_get(txn, s->extractors, &k, &v);
	if (rc) {
		mdb_txn_abort(txn);
		if (rc == MDB_NOTFOUND)
			return fail(s, FC_ERR_NOT_FOUND, "no extractor %s in store '%s'", hex, s->path);
		return mdb_fail(s, rc, "cannot read extractor");
	}
	err = ex_parse(s, &v, &e);
	if (!err && ((rc = mdb_dbi_open(txn, feat, 0, &e.feat)) != 0 ||
		     (rc = mdb_dbi_open(txn, index, 0, &e.index)) != 0))
		err = fail(s, FC_ERR_CORRUPT, "extractor %s has no feature databases: %s", hex,
			   mdb_strerror(rc));
	if (err) {
		mdb_txn_abort(txn);
		return err;
	}
	rc = mdb_txn_commit(txn);
	if (rc)
		return mdb_fail(s, rc, "cannot open extractor");
	err = ex_cache_add(s, &e);
	if (err)
		return err;
	*out = &s->ex[s->n_ex - 1];
	return 0;
}

struct put_ex_ctx {
	const fc_extractor *ex;
	const char *json;
	exdb e;
	int existed;
};

static int put_extractor_txn(fc_store *s, MDB_txn *txn, void *vctx)
{
	struct put_ex_ctx *c = vctx;
	MDB_val k = { FC_HASH_LEN, (void *)c->ex->id }, v;
	c->existed = 0;
	int rc = mdb_get(txn, s->extractors, &k, &v);
	if (rc == 0) {
		exdb old;
		int err = ex_parse(s, &v, &old);
		if (err)
			return err;
		if (old.dim != c->e.dim || old.dtype != c->e.dtype || old.codec != c->e.codec ||
		    old.level != c->e.level)
			return fail(s, FC_ERR_EXISTS,
				    "extractor exists with other storage settings (dim %u, %s, %s)",
				    old.dim, fc_dtype_name(old.dtype), fc_codec_name(old.codec));
		c->existed = 1;
		return 0;
	}
	if (rc != MDB_NOTFOUND)
		return mdb_fail(s, rc, "cannot read extractor");
	MDB_val jv = { strlen(c->json), (void *)c->json };
	int err = put(s, txn, s->extractors, &k, &jv, 0);
	if (err)
		return err;
	char feat[40], index[40];
	ex_db_names(c->ex->id, feat, index);
	if ((rc = mdb_dbi_open(txn, feat, MDB_CREATE, &c->e.feat)) != 0 ||
	    (rc = mdb_dbi_open(txn, index, MDB_CREATE, &c->e.index)) != 0) {
		if (rc == MDB_MAP_FULL)
			return RETRY_GROW;
		return mdb_fail(s, rc, "cannot create feature databases");
	}
	return 0;
}

int fc_store_put_extractor(fc_store *s, const fc_extractor *ex)
{
	if (ex->dim < 1 || ex->dim > FC_CHUNK_MAX_DIM)
		return fail(s, FC_ERR_INVALID, "extractor dim %u is out of range (1..%u)", ex->dim,
			    FC_CHUNK_MAX_DIM);
	if ((unsigned)ex->dtype > FC_DTYPE_U8 || (unsigned)ex->codec > FC_CODEC_SHUFFLE_ZSTD)
		return fail(s, FC_ERR_INVALID, "unknown storage dtype or codec");
	int level = ex->codec == FC_CODEC_RAW ? 0 : ex->level;
	if (ex->codec != FC_CODEC_RAW && (level < 1 || level > 19))
		return fail(s, FC_ERR_INVALID, "zstd level %d is out of range (1..19)", level);

	json_error_t jerr;
	json_t *j = ex->descriptor ? json_loads(ex->descriptor, 0, &jerr) : json_object();
	if (!j || !json_is_object(j)) {
		json_decref(j);
		return fail(s, FC_ERR_INVALID, "extractor descriptor is not a JSON object");
	}
	json_object_set_new(j, "dim", json_integer(ex->dim));
	json_object_set_new(j, "dtype", json_string(fc_dtype_name(ex->dtype)));
	json_object_set_new(j, "codec", json_string(fc_codec_name(ex->codec)));
	json_object_set_new(j, "level", json_integer(level));
	char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(j);
	if (!text)
		return fail(s, FC_ERR_NOMEM, "out of memory");

	struct put_ex_ctx c = { .ex = ex, .json = text };
	memcpy(c.e.id, ex->id, FC_HASH_LEN);
	c.e.dim = ex->dim;
	c.e.dtype = ex->dtype;
	c.e.codec = ex->codec;
	c.e.level = level;
	int err = store_write(s, put_extractor_txn, &c);
	free(text);
	if (err || c.existed)
		return err;
	for (size_t i = 0; i < s->n_ex; i++)
		if (memcmp(s->ex[i].id, ex->id, FC_HASH_LEN) == 0)
			return 0;
	return ex_cache_add(s, &c.e);
}

int fc_store_get_extractor(fc_store *s, const uint8_t id[FC_HASH_LEN], fc_extractor *out)
{
	exdb *e;
	int err = ex_open(s, id, &e);
	if (err)
		return err;
	MDB_txn *txn;
	err = txn_begin(s, MDB_RDONLY, &txn);
	if (err)
		return err;
	MDB_val k = { FC_HASH_LEN, (void *)id }, v;
	int rc = mdb_get(txn, s->extractors, &k, &v);
	if (rc) {
		mdb_txn_abort(txn);
		return mdb_fail(s, rc, "cannot read extractor");
	}
	char *d = malloc(v.mv_size + 1);
	if (!d) {
		mdb_txn_abort(txn);
		return fail(s, FC_ERR_NOMEM, "out of memory");
	}
	memcpy(d, v.mv_data, v.mv_size);
	d[v.mv_size] = '\0';
	mdb_txn_abort(txn);
	free(s->desc);
	s->desc = d;
	memcpy(out->id, id, FC_HASH_LEN);
	out->dim = e->dim;
	out->dtype = e->dtype;
	out->codec = e->codec;
	out->level = e->level;
	out->descriptor = d;
	return 0;
}

int fc_store_list_extractors(fc_store *s, uint8_t (**ids)[FC_HASH_LEN], size_t *n)
{
	*ids = NULL;
	*n = 0;
	MDB_txn *txn;
	MDB_cursor *cur;
	int err = txn_begin(s, MDB_RDONLY, &txn);
	if (err)
		return err;
	int rc = mdb_cursor_open(txn, s->extractors, &cur);
	if (rc) {
		mdb_txn_abort(txn);
		return mdb_fail(s, rc, "cannot list extractors");
	}
	MDB_stat st;
	mdb_stat(txn, s->extractors, &st);
	uint8_t (*list)[FC_HASH_LEN] = malloc((st.ms_entries + 1) * FC_HASH_LEN);
	size_t cnt = 0;
	if (!list) {
		err = fail(s, FC_ERR_NOMEM, "out of memory");
		goto out;
	}
	MDB_val k, v;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && cnt < st.ms_entries;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (k.mv_size != FC_HASH_LEN)
			continue;
		memcpy(list[cnt++], k.mv_data, FC_HASH_LEN);
	}
	*ids = list;
	*n = cnt;
out:
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	return err;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int fc_store_find_extractor(fc_store *s, const char *prefix, uint8_t id[FC_HASH_LEN])
{
	size_t len = strlen(prefix);
	if (len < 4 || len > 2 * FC_HASH_LEN)
		return fail(s, FC_ERR_INVALID, "extractor id '%s' must have 4 to 32 hex digits", prefix);
	for (size_t i = 0; i < len; i++)
		if (hexval(prefix[i]) < 0)
			return fail(s, FC_ERR_INVALID, "extractor id '%s' is not hexadecimal", prefix);
	uint8_t (*ids)[FC_HASH_LEN];
	size_t n, found = 0;
	int err = fc_store_list_extractors(s, &ids, &n);
	if (err)
		return err;
	for (size_t i = 0; i < n; i++) {
		char hex[2 * FC_HASH_LEN + 1];
		fc_hex(hex, ids[i], FC_HASH_LEN);
		size_t j = 0;
		while (j < len && hex[j] == (char)(prefix[j] | 0x20))
			j++;
		if (j == len) {
			if (found++ == 0)
				memcpy(id, ids[i], FC_HASH_LEN);
		}
	}
	free(ids);
	if (found == 0)
		return fail(s, FC_ERR_NOT_FOUND, "no extractor '%s' in store '%s'", prefix, s->path);
	if (found > 1)
		return fail(s, FC_ERR_INVALID, "extractor id '%s' is ambiguous (%zu match)", prefix, found);
	return 0;
}

/* ---- appending features ---- */

struct append_ctx {
	exdb *e;
	const uint8_t *chunk;
	size_t len;
	const uint8_t (*hashes)[FC_HASH_LEN];
	size_t n;
	uint64_t id;
};

static int next_chunk_id(fc_store *s, MDB_txn *txn, uint64_t *id)
{
	MDB_val k = { 9, "chunk_seq" }, v;
	int rc = mdb_get(txn, s->meta, &k, &v);
	if (rc == MDB_NOTFOUND) {
		*id = 0;
		return 0;
	}
	if (rc)
		return mdb_fail(s, rc, "cannot read chunk sequence");
	if (v.mv_size != 8)
		return fail(s, FC_ERR_CORRUPT, "meta/chunk_seq has %zu bytes, not 8", v.mv_size);
	*id = get_u64(v.mv_data);
	return 0;
}

static int append_txn(fc_store *s, MDB_txn *txn, void *vctx)
{
	struct append_ctx *c = vctx;
	int err = next_chunk_id(s, txn, &c->id);
	if (err)
		return err;
	uint8_t key[8], seq[8];
	chunk_key(key, c->id);
	put_u64(seq, c->id + 1);
	MDB_val k = { 8, key }, v = { c->len, (void *)c->chunk };
	MDB_val sk = { 9, "chunk_seq" }, sv = { 8, seq };
	if ((err = put(s, txn, c->e->feat, &k, &v, MDB_NOOVERWRITE)) != 0 ||
	    (err = put(s, txn, s->meta, &sk, &sv, 0)) != 0)
		return err;
	for (size_t i = 0; i < c->n; i++) {
		uint8_t rec[INDEX_REC];
		put_u64(rec, c->id);
		put_u32(rec + 8, (uint32_t)i);
		MDB_val ik = { FC_HASH_LEN, (void *)c->hashes[i] }, iv = { INDEX_REC, rec };
		int rc = mdb_put(txn, c->e->index, &ik, &iv, MDB_NOOVERWRITE);
		if (rc == MDB_MAP_FULL)
			return RETRY_GROW;
		if (rc && rc != MDB_KEYEXIST)
			return mdb_fail(s, rc, "cannot write index entry");
	}
	return 0;
}

static int ensure_enc(fc_store *s, size_t need)
{
	if (need <= s->enc_cap)
		return 0;
	uint8_t *p = realloc(s->enc, need);
	if (!p)
		return fail(s, FC_ERR_NOMEM, "out of memory for a %zu-byte chunk", need);
	s->enc = p;
	s->enc_cap = need;
	return 0;
}

/* Encode a batch's vectors into s->enc (outside any transaction, so that
 * other writers wait less) and fill c for append_txn. */
static int encode_batch(fc_store *s, const uint8_t exid[FC_HASH_LEN], const float *vecs,
			const uint8_t (*hashes)[FC_HASH_LEN], size_t n, struct append_ctx *c)
{
	exdb *e;
	int err = ex_open(s, exid, &e);
	if (err)
		return err;
	if (n < 1 || n > FC_CHUNK_MAX_COUNT)
		return fail(s, FC_ERR_INVALID, "a batch holds 1 to %u vectors, not %zu", FC_CHUNK_MAX_COUNT, n);
	size_t bound = fci_chunk_bound(e->dtype, e->codec, e->dim, (uint32_t)n);
	if (bound == 0)
		return fail(s, FC_ERR_INVALID, "a batch of %zu vectors of dim %u is too large", n, e->dim);
	if ((err = ensure_enc(s, bound)) != 0)
		return err;
	size_t len;
	err = fci_chunk_encode(s->cctx, s->enc, s->enc_cap, &len, vecs, hashes, e->dim, (uint32_t)n,
			      e->dtype, e->codec, e->level);
	if (err)
		return fail(s, err, "cannot encode batch: %s", fc_strerror(err));
	*c = (struct append_ctx){ .e = e, .chunk = s->enc, .len = len, .hashes = hashes, .n = n };
	return 0;
}

int fc_store_append(fc_store *s, const uint8_t exid[FC_HASH_LEN], const float *vecs,
		    const uint8_t (*hashes)[FC_HASH_LEN], size_t n, uint64_t *chunk_id)
{
	struct append_ctx c;
	int err = encode_batch(s, exid, vecs, hashes, n, &c);
	if (!err)
		err = store_write(s, append_txn, &c);
	if (!err && chunk_id)
		*chunk_id = c.id;
	return err;
}

/* Decode a parsed chunk into *buf, growing it (and *buf_len, in floats)
 * to hold every vector first. FC_ERR_NOMEM if it cannot grow. */
static int decode_grow(fci_chunk_ctx *ctx, const void *src, size_t len, const fci_chunk_info *ci, float **buf,
		       size_t *buf_len)
{
	size_t need = (size_t)ci->count * ci->dim;
	if (need > *buf_len) {
		float *p = realloc(*buf, need * sizeof *p);
		if (!p)
			return FC_ERR_NOMEM;
		*buf = p;
		*buf_len = need;
	}
	return fci_chunk_decode(ctx, src, len, *buf, *buf_len);
}

/* ---- single lookups ---- */

static int index_lookup(fc_store *s, MDB_txn *txn, const exdb *e, const uint8_t hash[FC_HASH_LEN],
			uint64_t *chunk, uint32_t *slot)
{
	MDB_val k = { FC_HASH_LEN, (void *)hash }, v;
	int rc = mdb_get(txn, e->index, &k, &v);
	if (rc == MDB_NOTFOUND)
		return FC_ERR_NOT_FOUND;
	if (rc)
		return mdb_fail(s, rc, "cannot read index");
	if (v.mv_size != INDEX_REC) {
		char hex[33];
		fc_hex(hex, hash, FC_HASH_LEN);
		return fail(s, FC_ERR_CORRUPT, "index entry %s has %zu bytes, not %d", hex, v.mv_size,
			    INDEX_REC);
	}
	*chunk = get_u64(v.mv_data);
	*slot = get_u32((const uint8_t *)v.mv_data + 8);
	return 0;
}

int fc_store_has(fc_store *s, const uint8_t exid[FC_HASH_LEN], const uint8_t hash[FC_HASH_LEN])
{
	exdb *e;
	int err = ex_open(s, exid, &e);
	if (err)
		return err;
	MDB_txn *txn;
	if ((err = txn_begin(s, MDB_RDONLY, &txn)) != 0)
		return err;
	uint64_t chunk;
	uint32_t slot;
	err = index_lookup(s, txn, e, hash, &chunk, &slot);
	mdb_txn_abort(txn);
	if (err == FC_ERR_NOT_FOUND)
		return 0;
	return err ? err : 1;
}

/* Name a chunk in messages: "feat.<hex>/chunk <id>". */
static void chunk_name(char *buf, size_t cap, const exdb *e, uint64_t id)
{
	char hex[33];
	fc_hex(hex, e->id, FC_HASH_LEN);
	snprintf(buf, cap, "feat.%s/chunk %llu", hex, (unsigned long long)id);
}

int fc_store_get(fc_store *s, const uint8_t exid[FC_HASH_LEN], const uint8_t hash[FC_HASH_LEN],
		 float *dst, size_t dst_len)
{
	exdb *e;
	int err = ex_open(s, exid, &e);
	if (err)
		return err;
	if (dst_len < e->dim)
		return fail(s, FC_ERR_INVALID, "destination holds %zu floats, the vectors have %u", dst_len,
			    e->dim);
	MDB_txn *txn;
	if ((err = txn_begin(s, MDB_RDONLY, &txn)) != 0)
		return err;
	uint64_t chunk;
	uint32_t slot;
	char hex[33], name[96];
	fc_hex(hex, hash, FC_HASH_LEN);
	err = index_lookup(s, txn, e, hash, &chunk, &slot);
	if (err == FC_ERR_NOT_FOUND)
		err = fail(s, err, "no vector for content %s", hex);
	if (err)
		goto out;
	chunk_name(name, sizeof name, e, chunk);
	uint8_t key[8];
	chunk_key(key, chunk);
	MDB_val k = { 8, key }, v;
	int rc = mdb_get(txn, e->feat, &k, &v);
	if (rc) {
		err = rc == MDB_NOTFOUND ? fail(s, FC_ERR_CORRUPT, "index entry %s points at missing %s", hex, name)
					 : mdb_fail(s, rc, "cannot read chunk");
		goto out;
	}
	fci_chunk_info ci;
	if ((err = fci_chunk_parse(v.mv_data, v.mv_size, &ci)) != 0) {
		err = fail(s, err, "%s: %s", name, fc_strerror(err));
		goto out;
	}
	if (ci.dim != e->dim || slot >= ci.count || memcmp(ci.hashes[slot], hash, FC_HASH_LEN) != 0) {
		err = fail(s, FC_ERR_CORRUPT, "index entry %s points past %s (slot %u of %u)", hex, name,
			   slot, ci.count);
		goto out;
	}
	if ((err = decode_grow(s->cctx, v.mv_data, v.mv_size, &ci, &s->scratch, &s->scratch_len)) != 0) {
		err = fail(s, err, "%s: %s", name, fc_strerror(err));
		goto out;
	}
	memcpy(dst, s->scratch + (size_t)slot * ci.dim, ci.dim * sizeof *dst);
out:
	mdb_txn_abort(txn);
	return err;
}

/* ---- parallel loading ---- */

/* One row to fill: content hash, where its vector is, which row gets it. */
typedef struct ref {
	uint64_t chunk;
	uint32_t slot;
	size_t row;
} ref;

static int ref_cmp(const void *a, const void *b)
{
	const ref *x = a, *y = b;
	if (x->chunk != y->chunk)
		return x->chunk < y->chunk ? -1 : 1;
	if (x->slot != y->slot)
		return x->slot < y->slot ? -1 : 1;
	return x->row < y->row ? -1 : x->row > y->row;
}

/* A chunk to decode and the run of refs [first, first+n) that want rows of it. */
typedef struct job {
	const void *data;
	size_t len;
	size_t first, n;
} job;

void fc_matrix_free(fc_matrix *m)
{
	if (!m)
		return;
	free(m->data);
	free(m->hashes);
	free(m->keys);
	free(m->labels);
	free(m->splits);
	free(m->keybuf);
	memset(m, 0, sizeof *m);
}

/* Report progress from the calling thread of a parallel loop (thread 0),
 * at most every 64 units; a non-zero answer from the caller sets *stop. */
static void progress_tick(fc_store *s, const char *what, uint64_t done, uint64_t total, int *stop)
{
	const fc_logger *lg = s->logger;
	if (!lg || !lg->progress || omp_get_thread_num() != 0 || (done % 64 && done != total))
		return;
	if (lg->progress(lg->ctx, what, done, total)) {
#pragma omp atomic write
		*stop = 1;
	}
}

/* Decode the chunks of `refs` (sorted by chunk, slot) into m->data in
 * parallel. The chunk bytes are fetched in txn first, so every thread reads
 * the same snapshot. Checks that each slot holds the hash the row expects. */
static int load_refs(fc_store *s, MDB_txn *txn, const exdb *e, const ref *refs, size_t n, fc_matrix *m)
{
	size_t njobs = 0;
	for (size_t i = 0; i < n; i++)
		if (i == 0 || refs[i].chunk != refs[i - 1].chunk)
			njobs++;
	job *jobs = calloc(njobs ? njobs : 1, sizeof *jobs);
	if (!jobs)
		return fail(s, FC_ERR_NOMEM, "out of memory");
	int err = 0;
	size_t j = 0;
	for (size_t i = 0; i < n; i++) {
		if (i > 0 && refs[i].chunk == refs[i - 1].chunk) {
			jobs[j - 1].n++;
			continue;
		}
		uint8_t key[8];
		chunk_key(key, refs[i].chunk);
		MDB_val k = { 8, key }, v;
		int rc = mdb_get(txn, e->feat, &k, &v);
		if (rc) {
			char name[96];
			chunk_name(name, sizeof name, e, refs[i].chunk);
			err = rc == MDB_NOTFOUND ? fail(s, FC_ERR_CORRUPT, "index points at missing %s", name)
						 : mdb_fail(s, rc, "cannot read chunk");
			goto out;
		}
		jobs[j++] = (job){ v.mv_data, v.mv_size, i, 1 };
	}

	const size_t dim = e->dim;
	size_t bad_job = SIZE_MAX;
	int bad_err = 0;
	uint32_t bad_slot = 0, bad_count = 0;
	uint64_t done = 0;
	int stop = 0;
#pragma omp parallel
	{
		fci_chunk_ctx *ctx = fci_chunk_ctx_new();
		float *buf = NULL;
		size_t buf_len = 0;
#pragma omp for schedule(dynamic, 1)
		for (size_t q = 0; q < njobs; q++) {
			int halt;
#pragma omp atomic read
			halt = stop;
			if (halt)
				continue;
			const job *jb = &jobs[q];
			fci_chunk_info ci = { .count = 0 };
			int jerr = ctx ? fci_chunk_parse(jb->data, jb->len, &ci) : FC_ERR_NOMEM;
			uint32_t slot = 0;
			if (!jerr && ci.dim != dim)
				jerr = FC_ERR_CORRUPT;
			for (size_t r = 0; !jerr && r < jb->n; r++) {
				slot = refs[jb->first + r].slot;
				if (slot >= ci.count ||
				    memcmp(ci.hashes[slot], m->hashes[refs[jb->first + r].row], FC_HASH_LEN))
					jerr = FC_ERR_CORRUPT;
			}
			/* A chunk whose rows are exactly the next rows of m decodes in place. */
			int direct = !jerr && jb->n == ci.count;
			for (size_t r = 0; direct && r < jb->n; r++)
				direct = refs[jb->first + r].slot == r &&
					 refs[jb->first + r].row == refs[jb->first].row + r;
			if (!jerr && direct) {
				jerr = fci_chunk_decode(ctx, jb->data, jb->len,
						       m->data + refs[jb->first].row * dim, ci.count * dim);
			} else if (!jerr) {
				jerr = decode_grow(ctx, jb->data, jb->len, &ci, &buf, &buf_len);
				for (size_t r = 0; !jerr && r < jb->n; r++) {
					const ref *rf = &refs[jb->first + r];
					memcpy(m->data + rf->row * dim, buf + (size_t)rf->slot * dim,
					       dim * sizeof(float));
				}
			}
			if (jerr) {
#pragma omp critical(fc_load_err)
				if (q < bad_job) {
					bad_job = q;
					bad_err = jerr;
					bad_slot = slot;
					bad_count = ci.count;
				}
			}
			uint64_t d;
#pragma omp atomic capture
			d = ++done;
			progress_tick(s, "load", d, njobs, &stop);
		}
		free(buf);
		fci_chunk_ctx_free(ctx);
	}
	if (stop && bad_job == SIZE_MAX)
		err = fail(s, FC_ERR_INTERRUPTED, "interrupted");
	if (bad_job != SIZE_MAX) {
		char name[96];
		chunk_name(name, sizeof name, e, refs[jobs[bad_job].first].chunk);
		if (bad_err == FC_ERR_NOMEM)
			err = fail(s, bad_err, "out of memory decoding %s", name);
		else if (bad_slot >= bad_count && bad_count)
			err = fail(s, FC_ERR_CORRUPT, "an index entry points past %s (slot %u of %u)", name,
				   bad_slot, bad_count);
		else
			err = fail(s, bad_err, "%s: %s", name, fc_strerror(bad_err));
	}
out:
	free(jobs);
	return err;
}

static int matrix_alloc(fc_store *s, fc_matrix *m, size_t rows, size_t dim)
{
	memset(m, 0, sizeof *m);
	m->rows = rows;
	m->dim = dim;
	if (rows > SIZE_MAX / dim / sizeof(float) / 2)
		return fail(s, FC_ERR_OVERFLOW, "%zu x %zu matrix is too large", rows, dim);
	size_t bytes = (rows * dim * sizeof(float) + 63) & ~(size_t)63;
	if (bytes >= HUGE_PAGE) {
		/* Faulting in a large matrix 4 KiB at a time costs about as much as
		 * decoding it; transparent huge pages make that 512x fewer faults. */
		bytes = (bytes + HUGE_PAGE - 1) & ~(size_t)(HUGE_PAGE - 1);
		void *p = NULL;
		m->data = posix_memalign(&p, HUGE_PAGE, bytes) == 0 ? p : NULL;
		if (m->data)
			madvise(m->data, bytes, MADV_HUGEPAGE);
	} else {
		m->data = aligned_alloc(64, bytes ? bytes : 64);
	}
	m->hashes = malloc((rows ? rows : 1) * FC_HASH_LEN);
	if (!m->data || !m->hashes)
		return fail(s, FC_ERR_NOMEM, "out of memory for %zu x %zu features", rows, dim);
	return 0;
}

int fc_store_load_all(fc_store *s, const uint8_t exid[FC_HASH_LEN], fc_matrix *out)
{
	memset(out, 0, sizeof *out);
	exdb *e;
	int err = ex_open(s, exid, &e);
	if (err)
		return err;
	MDB_txn *txn;
	MDB_cursor *cur = NULL;
	ref *refs = NULL;
	if ((err = txn_begin(s, MDB_RDONLY, &txn)) != 0)
		return err;
	MDB_stat st;
	mdb_stat(txn, e->index, &st);
	size_t n = st.ms_entries;
	refs = malloc((n ? n : 1) * sizeof *refs);
	uint8_t (*hashes)[FC_HASH_LEN] = malloc((n ? n : 1) * FC_HASH_LEN);
	if (!refs || !hashes) {
		free(hashes);
		err = fail(s, FC_ERR_NOMEM, "out of memory");
		goto out;
	}
	int rc = mdb_cursor_open(txn, e->index, &cur);
	if (rc) {
		free(hashes);
		err = mdb_fail(s, rc, "cannot read index");
		goto out;
	}
	size_t i = 0;
	MDB_val k, v;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && i < n;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), i++) {
		if (k.mv_size != FC_HASH_LEN || v.mv_size != INDEX_REC) {
			free(hashes);
			err = fail(s, FC_ERR_CORRUPT, "index has a malformed entry (key %zu bytes, value %zu)",
				   k.mv_size, v.mv_size);
			goto out;
		}
		memcpy(hashes[i], k.mv_data, FC_HASH_LEN);
		refs[i] = (ref){ get_u64(v.mv_data), get_u32((const uint8_t *)v.mv_data + 8), i };
	}
	n = i;
	/* Rows in chunk order: sort refs, then renumber rows and reorder hashes to match. */
	qsort(refs, n, sizeof *refs, ref_cmp);
	if ((err = matrix_alloc(s, out, n, e->dim)) != 0) {
		free(hashes);
		goto out;
	}
	for (i = 0; i < n; i++) {
		memcpy(out->hashes[i], hashes[refs[i].row], FC_HASH_LEN);
		refs[i].row = i;
	}
	free(hashes);
	err = load_refs(s, txn, e, refs, n, out);
out:
	if (cur)
		mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	free(refs);
	if (err)
		fc_matrix_free(out);
	return err;
}

static void item_decode(fc_item *it, const MDB_val *v)
{
	const uint8_t *p = v->mv_data;
	memcpy(it->hash, p, FC_HASH_LEN);
	it->size = get_u64(p + 16);
	it->mtime_ns = (int64_t)get_u64(p + 24);
	it->label = get_u32(p + 32);
	it->split = p[36];
	it->status = p[37];
}

static void item_encode(uint8_t p[ITEM_REC], const fc_item *it)
{
	memcpy(p, it->hash, FC_HASH_LEN);
	put_u64(p + 16, it->size);
	put_u64(p + 24, (uint64_t)it->mtime_ns);
	put_u32(p + 32, it->label);
	p[36] = it->split;
	p[37] = it->status;
	p[38] = p[39] = 0;
}

static int split_bit(int split)
{
	return split <= FC_SPLIT_TEST ? 1 << split : 1 << FC_SPLIT_TRAIN;
}

int fc_store_load_items(fc_store *s, const uint8_t exid[FC_HASH_LEN], unsigned split_mask,
			fc_matrix *out, size_t *missing)
{
	memset(out, 0, sizeof *out);
	if (missing)
		*missing = 0;
	exdb *e;
	int err = ex_open(s, exid, &e);
	if (err)
		return err;
	MDB_txn *txn;
	MDB_cursor *cur = NULL;
	ref *refs = NULL;
	if ((err = txn_begin(s, MDB_RDONLY, &txn)) != 0)
		return err;
	MDB_stat st;
	mdb_stat(txn, s->items, &st);
	size_t cap = st.ms_entries ? st.ms_entries : 1, n = 0, keybytes = 0, nmiss = 0;
	refs = malloc(cap * sizeof *refs);
	uint8_t (*hashes)[FC_HASH_LEN] = malloc(cap * FC_HASH_LEN);
	uint32_t *labels = malloc(cap * sizeof *labels);
	uint8_t *splits = malloc(cap);
	size_t *keyoff = malloc(cap * sizeof *keyoff);
	char *keybuf = NULL;
	if (!refs || !hashes || !labels || !splits || !keyoff) {
		err = fail(s, FC_ERR_NOMEM, "out of memory");
		goto out;
	}
	int rc = mdb_cursor_open(txn, s->items, &cur);
	if (rc) {
		err = mdb_fail(s, rc, "cannot read items");
		goto out;
	}
	/* Pass 1: which items, and how many key bytes. */
	MDB_val k, v;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && n < cap;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (v.mv_size != ITEM_REC) {
			err = fail(s, FC_ERR_CORRUPT, "items/%.*s has %zu bytes, not %d", (int)k.mv_size,
				   (const char *)k.mv_data, v.mv_size, ITEM_REC);
			goto out;
		}
		fc_item it;
		item_decode(&it, &v);
		if (it.status != FC_ITEM_OK || !(split_bit(it.split) & split_mask))
			continue;
		uint64_t chunk;
		uint32_t slot;
		err = index_lookup(s, txn, e, it.hash, &chunk, &slot);
		if (err == FC_ERR_NOT_FOUND) {
			nmiss++;
			err = 0;
			continue;
		}
		if (err)
			goto out;
		refs[n] = (ref){ chunk, slot, n };
		memcpy(hashes[n], it.hash, FC_HASH_LEN);
		labels[n] = it.label;
		splits[n] = it.split;
		keyoff[n] = keybytes;
		keybytes += k.mv_size + 1;
		n++;
	}
	/* Pass 2: copy the keys (LMDB's are not NUL-terminated). */
	keybuf = malloc(keybytes ? keybytes : 1);
	if (!keybuf) {
		err = fail(s, FC_ERR_NOMEM, "out of memory");
		goto out;
	}
	size_t i = 0;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && i < n;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		fc_item it;
		item_decode(&it, &v);
		if (it.status != FC_ITEM_OK || !(split_bit(it.split) & split_mask) ||
		    memcmp(it.hash, hashes[i], FC_HASH_LEN) != 0 ||
		    keyoff[i] + k.mv_size + 1 != (i + 1 < n ? keyoff[i + 1] : keybytes))
			continue;
		memcpy(keybuf + keyoff[i], k.mv_data, k.mv_size);
		keybuf[keyoff[i] + k.mv_size] = '\0';
		i++;
	}
	if (i != n) {
		err = fail(s, FC_ERR_INTERNAL, "items changed within one snapshot");
		goto out;
	}
	if ((err = matrix_alloc(s, out, n, e->dim)) != 0)
		goto out;
	memcpy(out->hashes, hashes, n * FC_HASH_LEN);
	out->keys = malloc((n ? n : 1) * sizeof *out->keys);
	if (!out->keys) {
		err = fail(s, FC_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < n; i++)
		out->keys[i] = keybuf + keyoff[i];
	out->keybuf = keybuf;
	out->labels = labels;
	out->splits = splits;
	keybuf = NULL;
	labels = NULL;
	splits = NULL;
	qsort(refs, n, sizeof *refs, ref_cmp);
	err = load_refs(s, txn, e, refs, n, out);
	if (missing)
		*missing = nmiss;
out:
	if (cur)
		mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	free(refs);
	free(hashes);
	free(labels);
	free(splits);
	free(keyoff);
	free(keybuf);
	if (err)
		fc_matrix_free(out);
	return err;
}

int fc_store_foreach_chunk(fc_store *s, const uint8_t exid[FC_HASH_LEN], fc_chunk_fn fn, void *ctx)
{
	exdb *e;
	int err = ex_open(s, exid, &e);
	if (err)
		return err;
	MDB_txn *txn;
	MDB_cursor *cur;
	if ((err = txn_begin(s, MDB_RDONLY, &txn)) != 0)
		return err;
	int rc = mdb_cursor_open(txn, e->feat, &cur);
	if (rc) {
		mdb_txn_abort(txn);
		return mdb_fail(s, rc, "cannot read chunks");
	}
	MDB_val k, v;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && !err;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (k.mv_size != 8) {
			err = fail(s, FC_ERR_CORRUPT, "a chunk key has %zu bytes, not 8", k.mv_size);
			break;
		}
		err = fn(ctx, chunk_key_id(&k), v.mv_data, v.mv_size);
	}
	if (!err && rc != MDB_NOTFOUND)
		err = mdb_fail(s, rc, "cannot read chunks");
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
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
		return mdb_fail(s, rc, "cannot read labels");
	/* 'i' + big-endian id keys sort by id; the last one is just before "j". */
	MDB_val k = { 1, "j" }, v;
	rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	rc = rc == 0 ? mdb_cursor_get(cur, &k, &v, MDB_PREV) : mdb_cursor_get(cur, &k, &v, MDB_LAST);
	*next = 0;
	if (rc == 0 && k.mv_size == 5 && ((const char *)k.mv_data)[0] == 'i') {
		const uint8_t *p = k.mv_data;
		*next = ((uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4]) + 1;
	}
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
			return fail(s, FC_ERR_INVALID, "label '%.40s...' is longer than %zu bytes",
				    c->names[i], fc_store_max_key(s) - 1);
		key[0] = 'n';
		memcpy(key + 1, c->names[i], len);
		MDB_val k = { len + 1, key }, v;
		int rc = mdb_get(txn, s->labels, &k, &v);
		if (rc == 0 && v.mv_size == 4) {
			c->ids[i] = get_u32(v.mv_data);
			continue;
		}
		if (rc == 0)
			return fail(s, FC_ERR_CORRUPT, "labels/%s has %zu bytes, not 4", c->names[i], v.mv_size);
		if (rc != MDB_NOTFOUND)
			return mdb_fail(s, rc, "cannot read labels");
		if (next == FC_NO_LABEL)
			return fail(s, FC_ERR_OVERFLOW, "too many labels");
		uint8_t idv[4], ik[5] = { 'i', (uint8_t)(next >> 24), (uint8_t)(next >> 16),
					  (uint8_t)(next >> 8), (uint8_t)next };
		put_u32(idv, next);
		MDB_val nv = { 4, idv }, ikv = { 5, ik }, namev = { len, (void *)c->names[i] };
		if ((err = put(s, txn, s->labels, &k, &nv, 0)) != 0 ||
		    (err = put(s, txn, s->labels, &ikv, &namev, 0)) != 0)
			return err;
		c->ids[i] = next++;
	}
	return 0;
}

int fc_store_label_ids(fc_store *s, const char *const *names, size_t n, uint32_t *ids)
{
	struct labels_ctx c = { names, n, ids };
	return store_write(s, labels_txn, &c);
}

int fc_store_label_name(fc_store *s, uint32_t id, char *buf, size_t cap)
{
	MDB_txn *txn;
	int err = txn_begin(s, MDB_RDONLY, &txn);
	if (err)
		return err;
	uint8_t ik[5] = { 'i', (uint8_t)(id >> 24), (uint8_t)(id >> 16), (uint8_t)(id >> 8), (uint8_t)id };
	MDB_val k = { 5, ik }, v;
	int rc = mdb_get(txn, s->labels, &k, &v);
	if (rc == MDB_NOTFOUND)
		err = fail(s, FC_ERR_NOT_FOUND, "no label with id %u", id);
	else if (rc)
		err = mdb_fail(s, rc, "cannot read labels");
	else if (v.mv_size + 1 > cap)
		err = fail(s, FC_ERR_INVALID, "label %u needs %zu bytes", id, v.mv_size + 1);
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
		return fail(s, FC_ERR_INVALID, "an item key is empty");
	if (len > fc_store_max_key(s))
		return fail(s, FC_ERR_INVALID, "item key '%.60s...' is longer than %zu bytes", key,
			    fc_store_max_key(s));
	return 0;
}

static int put_items_txn(fc_store *s, MDB_txn *txn, void *vctx)
{
	struct items_ctx *c = vctx;
	for (size_t i = 0; i < c->n; i++) {
		const fc_item *it = &c->items[i];
		uint8_t rec[ITEM_REC];
		item_encode(rec, it);
		MDB_val k = { strlen(it->key), (void *)it->key }, v = { ITEM_REC, rec };
		int err = put(s, txn, s->items, &k, &v, 0);
		if (!err && it->status == FC_ITEM_OK)
			err = del(s, txn, s->errors, &k); /* it decodes now: the old reason is stale */
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
			return fail(s, FC_ERR_INVALID, "item '%s' has split %u", items[i].key, items[i].split);
		if (items[i].status > FC_ITEM_FAILED)
			return fail(s, FC_ERR_INVALID, "item '%s' has status %u", items[i].key,
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
	return store_write(s, put_items_txn, &c);
}

static int del_items_txn(fc_store *s, MDB_txn *txn, void *vctx)
{
	struct items_ctx *c = vctx;
	for (size_t i = 0; i < c->n; i++) {
		MDB_val k = { strlen(c->keys[i]), (void *)c->keys[i] };
		if (k.mv_size == 0 || k.mv_size > fc_store_max_key(s))
			continue;
		int err = del(s, txn, s->items, &k);
		if (!err)
			err = del(s, txn, s->errors, &k);
		if (err)
			return err;
	}
	return 0;
}

int fc_store_del_items(fc_store *s, const char *const *keys, size_t n)
{
	struct items_ctx c = { .keys = keys, .n = n };
	return store_write(s, del_items_txn, &c);
}

int fc_store_get_item(fc_store *s, const char *key, fc_item *out)
{
	size_t len = strlen(key);
	int err = check_key(s, key, len);
	if (err)
		return err;
	MDB_txn *txn;
	if ((err = txn_begin(s, MDB_RDONLY, &txn)) != 0)
		return err;
	MDB_val k = { len, (void *)key }, v;
	int rc = mdb_get(txn, s->items, &k, &v);
	if (rc == MDB_NOTFOUND)
		err = fail(s, FC_ERR_NOT_FOUND, "no item '%s'", key);
	else if (rc)
		err = mdb_fail(s, rc, "cannot read items");
	else if (v.mv_size != ITEM_REC)
		err = fail(s, FC_ERR_CORRUPT, "items/%s has %zu bytes, not %d", key, v.mv_size, ITEM_REC);
	else {
		item_decode(out, &v);
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
	int err = txn_begin(s, MDB_RDONLY, &txn);
	if (err)
		return err;
	int rc = mdb_cursor_open(txn, dbi, &cur);
	if (rc) {
		mdb_txn_abort(txn);
		return mdb_fail(s, rc, "cannot read");
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
	if (v->mv_size != ITEM_REC)
		return fail(s, FC_ERR_CORRUPT, "items/%s has %zu bytes, not %d", key, v->mv_size, ITEM_REC);
	fc_item it;
	item_decode(&it, v);
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
	return put(s, txn, s->errors, &k, &v, 0);
}

int fc_store_put_error(fc_store *s, const char *key, const char *why)
{
	int err = check_key(s, key, strlen(key));
	if (err)
		return err;
	struct error_ctx c = { key, why };
	return store_write(s, put_error_txn, &c);
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
		err = store_write(s, batch_txn, &c);
	if (!err && chunk_id)
		*chunk_id = b->n_vecs ? c.chunk.id : 0;
	return err;
}

/* ---- stats ---- */

static uint64_t db_bytes(MDB_txn *txn, MDB_dbi dbi, unsigned psize)
{
	MDB_stat st;
	if (mdb_stat(txn, dbi, &st))
		return 0;
	return (uint64_t)(st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages) * psize;
}

/* Counting must survive damaged records: info is what people run first
 * on a store that misbehaves. Malformed ones are counted, not fatal. */
static int count_items(fc_store *s, MDB_txn *txn, fc_store_stats *st)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc = mdb_cursor_open(txn, s->items, &cur);
	if (rc)
		return mdb_fail(s, rc, "cannot read items");
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (v.mv_size != ITEM_REC) {
			st->bad_records++;
			continue;
		}
		fc_item it;
		item_decode(&it, &v);
		st->items++;
		st->items_failed += it.status == FC_ITEM_FAILED;
		st->splits[it.split <= FC_SPLIT_TEST ? it.split : 3]++;
	}
	mdb_cursor_close(cur);
	return 0;
}

static int tally_chunk(void *ctx, uint64_t id, const void *chunk, size_t len)
{
	(void)id;
	fc_store_ex_stats *x = ctx;
	x->chunks++;
	x->chunk_bytes += len;
	/* The count field only: stats must not decode (verify does that). */
	if (len >= FC_CHUNK_HEADER)
		x->slots += get_u32((const uint8_t *)chunk + 12);
	return 0;
}

int fc_store_stats_get(fc_store *s, fc_store_stats *out)
{
	memset(out, 0, sizeof *out);
	uint8_t (*ids)[FC_HASH_LEN];
	size_t n;
	int err = fc_store_list_extractors(s, &ids, &n);
	if (err)
		return err;
	out->extractors = calloc(n ? n : 1, sizeof *out->extractors);
	if (!out->extractors) {
		free(ids);
		return fail(s, FC_ERR_NOMEM, "out of memory");
	}
	out->n_extractors = n;
	for (size_t i = 0; i < n && !err; i++) {
		fc_store_ex_stats *x = &out->extractors[i];
		exdb *e;
		memcpy(x->id, ids[i], FC_HASH_LEN);
		if (ex_open(s, ids[i], &e) != 0) {
			x->broken = 1;
			out->bad_records++;
			continue;
		}
		x->dim = e->dim;
		x->dtype = e->dtype;
		x->codec = e->codec;
		err = fc_store_foreach_chunk(s, ids[i], tally_chunk, x);
	}
	free(ids);
	if (err)
		goto fail;

	MDB_txn *txn;
	if ((err = txn_begin(s, MDB_RDONLY, &txn)) != 0)
		goto fail;
	if ((err = count_items(s, txn, out)) != 0) {
		mdb_txn_abort(txn);
		goto fail;
	}
	MDB_val fk = { 6, "format" }, fv;
	if (mdb_get(txn, s->meta, &fk, &fv) == 0 && fv.mv_size == 4)
		out->format = get_u32(fv.mv_data);
	MDB_stat est;
	mdb_env_stat(s->env, &est);
	MDB_stat st;
	mdb_stat(txn, s->labels, &st);
	out->labels = st.ms_entries / 2;
	mdb_stat(txn, s->errors, &st);
	out->errors = st.ms_entries;
	for (size_t i = 0; i < out->n_extractors; i++) {
		exdb *e;
		if (out->extractors[i].broken || ex_open(s, out->extractors[i].id, &e) != 0)
			continue;
		mdb_stat(txn, e->index, &st);
		out->extractors[i].vectors = st.ms_entries;
		out->extractors[i].disk_bytes = db_bytes(txn, e->feat, est.ms_psize) +
						db_bytes(txn, e->index, est.ms_psize);
	}
	MDB_envinfo info;
	mdb_env_info(s->env, &info);
	out->used_bytes = (uint64_t)(info.me_last_pgno + 1) * est.ms_psize;
	mdb_txn_abort(txn);
	char data[4096];
	struct stat fst;
	snprintf(data, sizeof data, "%s/data.mdb", s->path);
	if (stat(data, &fst) == 0)
		out->file_bytes = (uint64_t)fst.st_size;
	return 0;
fail:
	free(out->extractors);
	out->extractors = NULL;
	out->n_extractors = 0;
	return err;
}

/* ---- verify ---- */

typedef struct vchunk {
	uint64_t id;
	const void *data;
	size_t len;
	int err;       /* result of decoding */
	uint64_t refs; /* index entries that point at this chunk while it is damaged */
	uint32_t count;
	const uint8_t (*hashes)[FC_HASH_LEN];
} vchunk;

static int vchunk_find(const vchunk *v, size_t n, uint64_t id)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (v[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < n && v[lo].id == id ? (int)lo : -1;
}

struct verify_ctx {
	fc_report_fn report;
	void *ctx;
	uint64_t bad, checked;
	MDB_txn *txn;
};

static void report(struct verify_ctx *vc, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void report(struct verify_ctx *vc, const char *key, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	vc->bad++;
	if (vc->report)
		vc->report(vc->ctx, key, msg);
}

static int verify_extractor(fc_store *s, struct verify_ctx *vc, const exdb *e)
{
	char hex[33], name[128];
	fc_hex(hex, e->id, FC_HASH_LEN);
	MDB_stat st;
	mdb_stat(vc->txn, e->feat, &st);
	size_t cap = st.ms_entries, n = 0;
	vchunk *ch = calloc(cap ? cap : 1, sizeof *ch);
	if (!ch)
		return fail(s, FC_ERR_NOMEM, "out of memory");
	MDB_cursor *cur;
	int rc = mdb_cursor_open(vc->txn, e->feat, &cur);
	if (rc) {
		free(ch);
		return mdb_fail(s, rc, "cannot read chunks");
	}
	MDB_val k, v;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && n < cap;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (k.mv_size != 8) {
			snprintf(name, sizeof name, "feat.%s/<%zu-byte key>", hex, k.mv_size);
			report(vc, name, "chunk key is not 8 bytes");
			continue;
		}
		ch[n++] = (vchunk){ .id = chunk_key_id(&k), .data = v.mv_data, .len = v.mv_size };
	}
	mdb_cursor_close(cur);

	/* Decode every chunk in parallel; report in order afterwards. */
	const uint32_t dim = e->dim;
	uint64_t done = 0;
	int stop = 0;
#pragma omp parallel
	{
		fci_chunk_ctx *ctx = fci_chunk_ctx_new();
		float *buf = NULL;
		size_t buf_len = 0;
#pragma omp for schedule(dynamic, 1)
		for (size_t i = 0; i < n; i++) {
			int halt;
#pragma omp atomic read
			halt = stop;
			if (halt)
				continue;
			fci_chunk_info ci;
			int err = ctx ? fci_chunk_parse(ch[i].data, ch[i].len, &ci) : FC_ERR_NOMEM;
			if (!err && (ci.dim != dim || ci.dtype != e->dtype || ci.codec != e->codec))
				err = FC_ERR_INVALID; /* reported as a mismatch below */
			if (!err)
				err = decode_grow(ctx, ch[i].data, ch[i].len, &ci, &buf, &buf_len);
			ch[i].err = err;
			if (!err) {
				ch[i].count = ci.count;
				ch[i].hashes = ci.hashes;
			}
			uint64_t d;
#pragma omp atomic capture
			d = ++done;
			progress_tick(s, "verify", d, n, &stop);
		}
		free(buf);
		fci_chunk_ctx_free(ctx);
	}
	int err = 0;
	for (size_t i = 0; i < n; i++)
		if (ch[i].err == FC_ERR_NOMEM)
			err = fail(s, FC_ERR_NOMEM, "out of memory");
	if (stop) {
		free(ch);
		return fail(s, FC_ERR_INTERRUPTED, "interrupted");
	}

	/* Every index entry must name a sound chunk whose slot holds its hash. */
	rc = mdb_cursor_open(vc->txn, e->index, &cur);
	if (rc) {
		free(ch);
		return mdb_fail(s, rc, "cannot read index");
	}
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && !err;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		vc->checked++;
		char h[33] = "?";
		if (k.mv_size == FC_HASH_LEN)
			fc_hex(h, k.mv_data, FC_HASH_LEN);
		snprintf(name, sizeof name, "index.%s/%s", hex, h);
		if (k.mv_size != FC_HASH_LEN || v.mv_size != INDEX_REC) {
			report(vc, name, "malformed entry (key %zu bytes, value %zu)", k.mv_size, v.mv_size);
			continue;
		}
		uint64_t id = get_u64(v.mv_data);
		uint32_t slot = get_u32((const uint8_t *)v.mv_data + 8);
		int at = vchunk_find(ch, n, id);
		if (at < 0)
			report(vc, name, "points at chunk %llu, which does not exist", (unsigned long long)id);
		else if (ch[at].err)
			ch[at].refs++; /* reported once, with the chunk */
		else if (slot >= ch[at].count)
			report(vc, name, "points past chunk %llu (slot %u of %u)", (unsigned long long)id, slot,
			       ch[at].count);
		else if (memcmp(ch[at].hashes[slot], k.mv_data, FC_HASH_LEN) != 0)
			report(vc, name, "chunk %llu slot %u holds another content hash",
			       (unsigned long long)id, slot);
	}
	mdb_cursor_close(cur);

	for (size_t i = 0; i < n && !err; i++) {
		vc->checked++;
		if (!ch[i].err)
			continue;
		chunk_name(name, sizeof name, e, ch[i].id);
		if (ch[i].err == FC_ERR_INVALID)
			report(vc, name, "dim, dtype or codec differ from the extractor's (%u, %s, %s); %llu index entries point at it",
			       dim, fc_dtype_name(e->dtype), fc_codec_name(e->codec), (unsigned long long)ch[i].refs);
		else
			report(vc, name, "%s; %llu index entries point at it", fc_strerror(ch[i].err),
			       (unsigned long long)ch[i].refs);
	}
	free(ch);
	return err;
}

static int verify_records(fc_store *s, struct verify_ctx *vc)
{
	MDB_cursor *cur;
	MDB_val k, v;
	char name[FC_KEY_MAX + 16];
	int rc = mdb_cursor_open(vc->txn, s->items, &cur);
	if (rc)
		return mdb_fail(s, rc, "cannot read items");
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		vc->checked++;
		snprintf(name, sizeof name, "items/%.*s", (int)(k.mv_size < FC_KEY_MAX ? k.mv_size : FC_KEY_MAX),
			 (const char *)k.mv_data);
		if (v.mv_size != ITEM_REC) {
			report(vc, name, "record has %zu bytes, not %d", v.mv_size, ITEM_REC);
			continue;
		}
		fc_item it;
		item_decode(&it, &v);
		if (it.split > FC_SPLIT_TEST && it.split != FC_SPLIT_NONE)
			report(vc, name, "unknown split %u", it.split);
		if (it.status > FC_ITEM_FAILED)
			report(vc, name, "unknown status %u", it.status);
		if (it.label != FC_NO_LABEL) {
			uint8_t ik[5] = { 'i', (uint8_t)(it.label >> 24), (uint8_t)(it.label >> 16),
					  (uint8_t)(it.label >> 8), (uint8_t)it.label };
			MDB_val lk = { 5, ik }, lv;
			if (mdb_get(vc->txn, s->labels, &lk, &lv) != 0)
				report(vc, name, "label id %u does not exist", it.label);
		}
	}
	mdb_cursor_close(cur);

	/* Labels come in pairs: 'n'+name -> id and 'i'+id -> name. */
	if ((rc = mdb_cursor_open(vc->txn, s->labels, &cur)) != 0)
		return mdb_fail(s, rc, "cannot read labels");
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		vc->checked++;
		const char *kp = k.mv_data;
		snprintf(name, sizeof name, "labels/%.*s", (int)(k.mv_size < FC_KEY_MAX ? k.mv_size : FC_KEY_MAX), kp);
		if (k.mv_size >= 2 && kp[0] == 'n' && v.mv_size == 4) {
			uint32_t id = get_u32(v.mv_data);
			uint8_t ik[5] = { 'i', (uint8_t)(id >> 24), (uint8_t)(id >> 16), (uint8_t)(id >> 8), (uint8_t)id };
			MDB_val lk = { 5, ik }, lv;
			if (mdb_get(vc->txn, s->labels, &lk, &lv) != 0 || lv.mv_size != k.mv_size - 1 ||
			    memcmp(lv.mv_data, kp + 1, lv.mv_size) != 0)
				report(vc, name, "id %u does not map back to this name", id);
		} else if (!(k.mv_size == 5 && kp[0] == 'i')) {
			report(vc, name, "malformed label record");
		}
	}
	mdb_cursor_close(cur);
	return 0;
}

int fc_store_verify(fc_store *s, fc_report_fn report_fn, void *ctx, uint64_t *checked)
{
	struct verify_ctx vc = { .report = report_fn, .ctx = ctx };
	uint8_t (*ids)[FC_HASH_LEN] = NULL;
	size_t n = 0;
	int err = fc_store_list_extractors(s, &ids, &n);
	if (err)
		return err;
	/* Open every extractor's dbs first: a broken descriptor is a finding, not a stop. */
	for (size_t i = 0; i < n; i++) {
		exdb *e;
		err = ex_open(s, ids[i], &e);
		if (err) {
			char hex[33], name[64];
			fc_hex(hex, ids[i], FC_HASH_LEN);
			snprintf(name, sizeof name, "extractors/%s", hex);
			report(&vc, name, "%s", fc_store_errmsg(s));
			memset(ids[i], 0, FC_HASH_LEN);
			err = 0;
		}
	}
	if ((err = txn_begin(s, MDB_RDONLY, &vc.txn)) != 0)
		goto out;
	err = verify_records(s, &vc);
	for (size_t i = 0; i < n && !err; i++) {
		static const uint8_t zero[FC_HASH_LEN];
		exdb *e;
		if (memcmp(ids[i], zero, FC_HASH_LEN) == 0 || ex_open(s, ids[i], &e) != 0)
			continue;
		err = verify_extractor(s, &vc, e);
	}
	mdb_txn_abort(vc.txn);
out:
	free(ids);
	if (checked)
		*checked = vc.checked;
	if (!err && vc.bad)
		err = fail(s, FC_ERR_CORRUPT, "%llu problems found", (unsigned long long)vc.bad);
	return err;
}

/* ---- gc ---- */

static int hash_cmp(const void *a, const void *b)
{
	return memcmp(a, b, FC_HASH_LEN);
}

struct gc_ctx {
	exdb *exs;
	size_t n_ex;
	/* chunk rewrite pass */
	exdb *e;
	const uint64_t *ids;
	size_t n_ids;
	uint8_t *buf; /* re-encode buffer */
	size_t buf_cap;
	float *vecs;
	size_t vecs_len;
	fc_gc_stats pass;
};

/* Pass 1, in one write transaction: the set of content hashes items refer
 * to is taken inside the transaction, so no writer can add an item between
 * deciding a vector is orphaned and dropping it. */
static int gc_orphans_txn(fc_store *s, MDB_txn *txn, void *vctx)
{
	struct gc_ctx *c = vctx;
	c->pass = (fc_gc_stats){ 0 };
	MDB_stat st;
	mdb_stat(txn, s->items, &st);
	uint8_t (*live)[FC_HASH_LEN] = malloc((st.ms_entries + 1) * FC_HASH_LEN);
	if (!live)
		return fail(s, FC_ERR_NOMEM, "out of memory");
	size_t n = 0;
	MDB_cursor *cur;
	MDB_val k, v;
	int err = 0, rc = mdb_cursor_open(txn, s->items, &cur);
	if (rc) {
		free(live);
		return mdb_fail(s, rc, "cannot read items");
	}
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && n < st.ms_entries;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
		if (v.mv_size == ITEM_REC)
			memcpy(live[n++], v.mv_data, FC_HASH_LEN);
	mdb_cursor_close(cur);
	qsort(live, n, FC_HASH_LEN, hash_cmp);

	for (size_t x = 0; x < c->n_ex && !err; x++) {
		if ((rc = mdb_cursor_open(txn, c->exs[x].index, &cur)) != 0) {
			err = mdb_fail(s, rc, "cannot read index");
			break;
		}
		for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && !err;
		     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
			if (k.mv_size == FC_HASH_LEN && bsearch(k.mv_data, live, n, FC_HASH_LEN, hash_cmp))
				continue;
			rc = mdb_cursor_del(cur, 0);
			if (rc == MDB_MAP_FULL)
				err = RETRY_GROW;
			else if (rc)
				err = mdb_fail(s, rc, "cannot delete index entry");
			else
				c->pass.index_dropped++;
		}
		mdb_cursor_close(cur);
	}
	free(live);
	if (err)
		return err;

	/* Error records of items that are gone. */
	if ((rc = mdb_cursor_open(txn, s->errors, &cur)) != 0)
		return mdb_fail(s, rc, "cannot read errors");
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && !err;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		MDB_val iv;
		if (mdb_get(txn, s->items, &k, &iv) == 0)
			continue;
		rc = mdb_cursor_del(cur, 0);
		if (rc == MDB_MAP_FULL)
			err = RETRY_GROW;
		else if (rc)
			err = mdb_fail(s, rc, "cannot delete error record");
		else
			c->pass.errors_dropped++;
	}
	mdb_cursor_close(cur);
	return err;
}

/* Rewrite one chunk without its dead slots (a slot is live when the index
 * entry of its hash points back at it), inside the caller's transaction. */
static int gc_chunk(fc_store *s, MDB_txn *txn, struct gc_ctx *c, uint64_t id)
{
	exdb *e = c->e;
	uint8_t key[8];
	chunk_key(key, id);
	MDB_val k = { 8, key }, v;
	int rc = mdb_get(txn, e->feat, &k, &v);
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return mdb_fail(s, rc, "cannot read chunk");
	char name[96];
	chunk_name(name, sizeof name, e, id);
	fci_chunk_info ci;
	int err = fci_chunk_parse(v.mv_data, v.mv_size, &ci);
	if (err)
		return fail(s, err, "%s: %s (run 'featcache verify')", name, fc_strerror(err));
	uint32_t live = 0;
	uint8_t *is_live = calloc(ci.count, 1);
	if (!is_live)
		return fail(s, FC_ERR_NOMEM, "out of memory");
	for (uint32_t i = 0; i < ci.count; i++) {
		uint64_t cid;
		uint32_t slot;
		err = index_lookup(s, txn, e, ci.hashes[i], &cid, &slot);
		if (err == FC_ERR_NOT_FOUND) {
			err = 0;
			continue;
		}
		if (err)
			goto out;
		if (cid == id && slot == i) {
			is_live[i] = 1;
			live++;
		}
	}
	c->pass.bytes_before += v.mv_size;
	if (live == ci.count) {
		c->pass.bytes_after += v.mv_size;
		goto out;
	}
	c->pass.slots_dropped += ci.count - live;
	if (live == 0) {
		c->pass.chunks_dropped++;
		err = del(s, txn, e->feat, &k);
		goto out;
	}
	if ((err = decode_grow(s->cctx, v.mv_data, v.mv_size, &ci, &c->vecs, &c->vecs_len)) != 0) {
		err = fail(s, err, "%s: %s (run 'featcache verify')", name, fc_strerror(err));
		goto out;
	}
	/* Compact live rows and hashes to the front, in slot order. */
	uint8_t (*hashes)[FC_HASH_LEN] = malloc((size_t)live * FC_HASH_LEN);
	if (!hashes) {
		err = fail(s, FC_ERR_NOMEM, "out of memory");
		goto out;
	}
	uint32_t j = 0;
	for (uint32_t i = 0; i < ci.count; i++) {
		if (!is_live[i])
			continue;
		memcpy(hashes[j], ci.hashes[i], FC_HASH_LEN);
		memmove(c->vecs + (size_t)j * ci.dim, c->vecs + (size_t)i * ci.dim, ci.dim * sizeof(float));
		j++;
	}
	/* f32, f16 and bf16 re-encode bit-exactly (decoding is exact and encoding
	 * maps the decoded values back to the same codes); u8 recomputes lo and
	 * step from the decoded values, which can move a value by float rounding. */
	size_t bound = fci_chunk_bound(ci.dtype, ci.codec, ci.dim, live), len;
	if (bound > c->buf_cap) {
		uint8_t *p = realloc(c->buf, bound);
		if (!p) {
			free(hashes);
			err = fail(s, FC_ERR_NOMEM, "out of memory");
			goto out;
		}
		c->buf = p;
		c->buf_cap = bound;
	}
	err = fci_chunk_encode(s->cctx, c->buf, c->buf_cap, &len, c->vecs, (const uint8_t(*)[FC_HASH_LEN])hashes,
			      ci.dim, live, ci.dtype, ci.codec, e->level);
	if (err) {
		free(hashes);
		err = fail(s, err, "%s: cannot re-encode: %s", name, fc_strerror(err));
		goto out;
	}
	MDB_val nv = { len, c->buf };
	if ((err = put(s, txn, e->feat, &k, &nv, 0)) != 0) {
		free(hashes);
		goto out;
	}
	for (j = 0; j < live && !err; j++) {
		uint8_t rec[INDEX_REC];
		put_u64(rec, id);
		put_u32(rec + 8, j);
		MDB_val ik = { FC_HASH_LEN, hashes[j] }, iv = { INDEX_REC, rec };
		err = put(s, txn, e->index, &ik, &iv, 0);
	}
	free(hashes);
	c->pass.chunks_rewritten++;
	c->pass.bytes_after += len;
out:
	free(is_live);
	return err;
}

static int gc_chunks_txn(fc_store *s, MDB_txn *txn, void *vctx)
{
	struct gc_ctx *c = vctx;
	c->pass = (fc_gc_stats){ 0 };
	for (size_t i = 0; i < c->n_ids; i++) {
		int err = gc_chunk(s, txn, c, c->ids[i]);
		if (err)
			return err;
	}
	return 0;
}

static int collect_id(void *ctx, uint64_t id, const void *chunk, size_t len)
{
	(void)chunk;
	(void)len;
	struct { uint64_t *ids; size_t n, cap; } *l = ctx;
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 256;
		uint64_t *p = realloc(l->ids, cap * sizeof *p);
		if (!p)
			return FC_ERR_NOMEM;
		l->ids = p;
		l->cap = cap;
	}
	l->ids[l->n++] = id;
	return 0;
}

static void gc_add(fc_gc_stats *to, const fc_gc_stats *from)
{
	to->index_dropped += from->index_dropped;
	to->chunks_rewritten += from->chunks_rewritten;
	to->chunks_dropped += from->chunks_dropped;
	to->slots_dropped += from->slots_dropped;
	to->errors_dropped += from->errors_dropped;
	to->bytes_before += from->bytes_before;
	to->bytes_after += from->bytes_after;
}

int fc_store_gc(fc_store *s, fc_gc_stats *out)
{
	fc_gc_stats total = { 0 };
	uint8_t (*ids)[FC_HASH_LEN] = NULL;
	size_t n = 0;
	struct gc_ctx c = { 0 };
	int err = fc_store_list_extractors(s, &ids, &n);
	if (err)
		return err;
	c.exs = calloc(n ? n : 1, sizeof *c.exs);
	if (!c.exs) {
		err = fail(s, FC_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n && !err; i++) {
		exdb *e;
		if ((err = ex_open(s, ids[i], &e)) == 0)
			c.exs[c.n_ex++] = *e;
	}
	if (err || (err = store_write(s, gc_orphans_txn, &c)) != 0)
		goto out;
	gc_add(&total, &c.pass);

	/* Pass 2: per extractor, chunks in bounded transactions (LMDB caps the
	 * dirty pages of one transaction). Each chunk decides its live slots
	 * inside the transaction that rewrites it. */
	for (size_t x = 0; x < c.n_ex && !err; x++) {
		struct { uint64_t *ids; size_t n, cap; } list = { 0 };
		c.e = &c.exs[x];
		err = fc_store_foreach_chunk(s, c.e->id, collect_id, &list);
		if (err == FC_ERR_NOMEM)
			err = fail(s, err, "out of memory");
		for (size_t i = 0; i < list.n && !err; i += GC_CHUNKS_PER_TXN) {
			c.ids = list.ids + i;
			c.n_ids = list.n - i < GC_CHUNKS_PER_TXN ? list.n - i : GC_CHUNKS_PER_TXN;
			err = store_write(s, gc_chunks_txn, &c);
			if (!err)
				gc_add(&total, &c.pass);
			const fc_logger *lg = s->logger;
			if (!err && lg && lg->progress &&
			    lg->progress(lg->ctx, "gc", i + c.n_ids, list.n))
				err = fail(s, FC_ERR_INTERRUPTED, "interrupted (the chunks done so far are rewritten)");
		}
		free(list.ids);
	}
out:
	free(ids);
	free(c.exs);
	free(c.buf);
	free(c.vecs);
	if (out)
		*out = total;
	return err;
}

/* ---- names ---- */

void fc_hex(char *out, const uint8_t *bytes, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[bytes[i] >> 4];
		out[2 * i + 1] = digits[bytes[i] & 15];
	}
	out[2 * n] = '\0';
}

static const char *const split_names[] = { "train", "val", "test" };

int fc_split_parse(const char *s, int *out)
{
	for (int i = 0; i < 3; i++) {
		if (strcmp(s, split_names[i]) == 0) {
			*out = i;
			return 0;
		}
	}
	/* The names people actually use for the same splits. */
	if (strcmp(s, "validation") == 0 || strcmp(s, "valid") == 0) {
		*out = FC_SPLIT_VAL;
		return 0;
	}
	return FC_ERR_INVALID;
}
