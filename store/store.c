/*
 * store.c - the core of the feature store on LMDB: the handle, opening and
 * versioning, the write loop that grows the map, the extractors (their
 * descriptors and the databases each one owns), and the store's names.
 * Writing records is write.c's, reading features load.c's, stats, verify
 * and gc admin.c's; the chunk record is chunk.c's.
 *
 * Transactions: every write goes through fci_store_write(), which runs a
 * callback inside one write transaction and redoes it after growing the map
 * when LMDB reports MDB_MAP_FULL. Reads take one read transaction: its
 * snapshot stays fixed while other processes append.
 *
 * Not here: deciding what to extract (extract/), decoding images, training.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "store/store_impl.h"

#define MAX_DBS 512
#define WRITER_LOCK "writer.lock" /* see take_writer_lock */
#define FULL_DISK_SLACK (16u << 20) /* an EIO with less free space than this is a full disk */
#define LMDB_MAGIC 0xBEEFC0DEu /* first word of an LMDB meta page, after the page header */

/* ---- errors ---- */

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

int fci_mdb_fail(fc_store *s, int rc, const char *what)
{
	return FCI_FAIL(s, mdb_code(rc), "%s: %s", what, mdb_strerror(rc));
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

int fc_store_is_durable(const fc_store *s)
{
	unsigned flags;
	if (!s || !s->env || mdb_env_get_flags(s->env, &flags) != 0)
		return 0;
	return !(flags & (MDB_NOSYNC | MDB_NOMETASYNC | MDB_MAPASYNC));
}

/* ---- transactions ---- */

int fci_txn_begin(fc_store *s, unsigned flags, MDB_txn **txn)
{
	int rc = mdb_txn_begin(s->env, NULL, flags, txn);
	if (rc == MDB_MAP_RESIZED) {
		rc = mdb_env_set_mapsize(s->env, 0);
		if (rc == 0)
			rc = mdb_txn_begin(s->env, NULL, flags, txn);
	}
	if (rc)
		return fci_mdb_fail(s, rc, "cannot begin transaction");
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
		return FCI_FAIL(s, FC_ERR_FULL, "store is full: it reached its size cap of %llu bytes",
				(unsigned long long)s->max_map_size);
	int rc = mdb_env_set_mapsize(s->env, (size_t)next);
	if (rc)
		return fci_mdb_fail(s, rc, "cannot grow the store's map");
	s->map_size = next;
	return 0;
}

int fci_put(fc_store *s, MDB_txn *txn, MDB_dbi dbi, MDB_val *k, MDB_val *v, unsigned flags)
{
	int rc = mdb_put(txn, dbi, k, v, flags);
	if (rc == MDB_MAP_FULL)
		return FCI_RETRY_GROW;
	if (rc)
		return fci_mdb_fail(s, rc, "cannot write");
	return 0;
}

int fci_del(fc_store *s, MDB_txn *txn, MDB_dbi dbi, MDB_val *k)
{
	int rc = mdb_del(txn, dbi, k, NULL);
	if (rc == MDB_MAP_FULL)
		return FCI_RETRY_GROW;
	if (rc && rc != MDB_NOTFOUND)
		return fci_mdb_fail(s, rc, "cannot delete");
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
			return FCI_FAIL(s, FC_ERR_FULL,
					"cannot commit: no space left on device (%llu bytes free); nothing of this batch was written",
					(unsigned long long)left);
	}
	return fci_mdb_fail(s, rc, "cannot commit");
}

int fci_store_write(fc_store *s, fci_write_fn fn, void *ctx)
{
	if (s->readonly)
		return FCI_FAIL(s, FC_ERR_INVALID, "store '%s' is open read-only", s->path);
	for (;;) {
		MDB_txn *txn;
		int err = fci_txn_begin(s, 0, &txn);
		if (err)
			return err;
		err = fn(s, txn, ctx);
		if (err) {
			mdb_txn_abort(txn);
			if (err != FCI_RETRY_GROW)
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

/* Look at data.mdb before LMDB does: mdb_env_open would create a lock file
 * beside whatever file this is. An LMDB meta page has its magic 16 bytes in. */
static int check_lmdb_file(fc_store *s, const char *data)
{
	FILE *f = fopen(data, "rb");
	if (!f)
		return FCI_FAIL(s, FC_ERR_IO, "cannot read data.mdb: %s", os_error(errno));
	uint8_t head[20];
	size_t got = fread(head, 1, sizeof head, f);
	fclose(f);
	if (got < sizeof head || fci_load_le32(head + 16) != LMDB_MAGIC)
		return FCI_FAIL(s, FC_ERR_NOT_STORE, "not a featcache store (data.mdb is not an LMDB file)");
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
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, WRITER_LOCK)) {
			empty = 0;
			break;
		}
	}
	closedir(d);
	return empty;
}

/*
 * The one-writer lock: flock on `writer.lock` in the store directory, held
 * until fc_store_free. The holder writes who it is into the file, which a
 * refused writer quotes. LMDB would serialise two writers' transactions
 * safely, but two extracts would each do all the work (and gc or merge
 * under an extract would fight it), so the commands that write take this.
 */
static int take_writer_lock(fc_store *s, const char *path, const fc_store_opts *opts)
{
	char lock[4200], who[512], since[64];
	time_t t = time(NULL);
	struct tm tm;
	int fd, n;

	if (snprintf(lock, sizeof lock, "%s/%s", path, WRITER_LOCK) >= (int)sizeof lock)
		return FCI_FAIL(s, FC_ERR_INVALID, "path is too long");
	fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
	if (fd < 0)
		return FCI_FAIL(s, FC_ERR_IO, "cannot open '%s': %s", lock, os_error(errno));
	while (flock(fd, LOCK_EX | (opts->wait ? 0 : LOCK_NB)) != 0) {
		if (errno == EINTR && opts->wait)
			continue;
		int e = errno;
		if (e == EWOULDBLOCK) {
			ssize_t r = pread(fd, who, sizeof who - 1, 0);
			who[r > 0 ? r : 0] = '\0';
			who[strcspn(who, "\n")] = '\0';
			close(fd);
			return FCI_FAIL(s, FC_ERR_BUSY, "another process writes to it (%s): wait for it to finish, or pass --wait",
					*who ? who : "it has not said who it is yet");
		}
		close(fd);
		return FCI_FAIL(s, FC_ERR_IO, "cannot lock '%s': %s", lock, os_error(e));
	}
	gmtime_r(&t, &tm);
	strftime(since, sizeof since, "%Y-%m-%d %H:%M:%S UTC", &tm);
	char host[256] = "";
	gethostname(host, sizeof host - 1);
	n = snprintf(who, sizeof who, "%s, pid %ld on %s, since %s\n", opts->writer, (long)getpid(), host, since);
	if (ftruncate(fd, 0) != 0 || pwrite(fd, who, (size_t)n, 0) != n) {
		int e = errno;
		close(fd);
		return FCI_FAIL(s, FC_ERR_IO, "cannot write '%s': %s", lock, os_error(e));
	}
	s->lock_fd = fd;
	return 0;
}

/* Decide whether `path` holds a store to open (*fresh = 0) or is a place
 * to create one (*fresh = 1, the directory made if needed), and refuse
 * anything else before LMDB touches it. */
static int check_dir(fc_store *s, const char *path, const fc_store_opts *opts, int *fresh)
{
	struct stat st;
	*fresh = 0;
	if (stat(path, &st) != 0) {
		if (errno != ENOENT || !opts->create || opts->readonly)
			return FCI_FAIL(s, errno == ENOENT ? FC_ERR_NOT_FOUND : FC_ERR_IO, "%s", os_error(errno));
		if (mkdir(path, 0777) != 0)
			return FCI_FAIL(s, FC_ERR_IO, "%s", os_error(errno));
	} else if (!S_ISDIR(st.st_mode)) {
		return FCI_FAIL(s, FC_ERR_NOT_STORE, "not a directory");
	}

	char data[4096];
	if (snprintf(data, sizeof data, "%s/data.mdb", path) >= (int)sizeof data)
		return FCI_FAIL(s, FC_ERR_INVALID, "path is too long");
	if (stat(data, &st) == 0) {
		/* Shorter than LMDB's header: a creation killed before LMDB wrote
		 * its first page; LMDB starts such a file afresh. */
		if (st.st_size < 4096 && opts->create && !opts->readonly) {
			*fresh = 1;
			return 0;
		}
		return check_lmdb_file(s, data);
	}
	if (errno != ENOENT)
		return FCI_FAIL(s, FC_ERR_IO, "%s", os_error(errno));
	if (!opts->create || opts->readonly)
		return FCI_FAIL(s, FC_ERR_NOT_STORE, "not a featcache store (no data.mdb)");
	if (!dir_is_empty(path))
		return FCI_FAIL(s, FC_ERR_NOT_STORE,
				"directory is not empty and holds no featcache store: refusing to write there");
	*fresh = 1;
	return 0;
}

static int env_create(fc_store *s)
{
	int rc = mdb_env_create(&s->env);
	if (rc)
		return fci_mdb_fail(s, rc, "cannot create environment");
	mdb_env_set_maxdbs(s->env, MAX_DBS);
	mdb_env_set_maxreaders(s->env, 256);
	mdb_env_set_mapsize(s->env, (size_t)s->map_size);
	return 0;
}

/* Open the LMDB environment. Durable unless the caller opted out: LMDB's
 * own default, and what a zero-initialised fc_store_opts asks for. */
static int env_open(fc_store *s, const char *path, const fc_store_opts *opts)
{
	int err = env_create(s);
	if (err)
		return err;
	unsigned flags = MDB_NOTLS;
	if (opts->readonly)
		flags |= MDB_RDONLY;
	if (opts->nosync)
		flags |= MDB_NOSYNC;
	int rc = mdb_env_open(s->env, path, flags, 0666);
	if (opts->readonly && (rc == EACCES || rc == EROFS)) {
		/* A store we may read but whose lock file we cannot write (another
		 * user's, a read-only mount): read without the reader table. A
		 * writer elsewhere could then reuse pages under us, so say so. */
		mdb_env_close(s->env);
		s->env = NULL;
		if ((err = env_create(s)) != 0)
			return err;
		rc = mdb_env_open(s->env, path, flags | MDB_NOLOCK, 0666);
		const fc_logger *lg = s->logger;
		if (rc == 0 && lg && lg->log)
			lg->log(lg->ctx, FC_LOG_WARN,
				"store is not writable: reading without a lock (do not write to it meanwhile)");
	}
	if (rc) {
		if (rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH)
			return FCI_FAIL(s, FC_ERR_NOT_STORE, "not a featcache store: %s", mdb_strerror(rc));
		return FCI_FAIL(s, mdb_code(rc), "%s", rc > 0 ? os_error(rc) : mdb_strerror(rc));
	}
	MDB_envinfo info;
	mdb_env_info(s->env, &info);
	s->map_size = info.me_mapsize;
	return 0;
}

static int create_meta(fc_store *s, MDB_txn *txn, void *ctx)
{
	(void)ctx;
	const char *names[] = { "meta", "items", "labels", "extractors", "errors" };
	MDB_dbi *dbis[] = { &s->meta, &s->items, &s->labels, &s->extractors, &s->errors };
	for (int i = 0; i < 5; i++) {
		int rc = mdb_dbi_open(txn, names[i], MDB_CREATE, dbis[i]);
		if (rc == MDB_MAP_FULL)
			return FCI_RETRY_GROW;
		if (rc)
			return fci_mdb_fail(s, rc, "cannot create database");
	}
	uint8_t v[4];
	fci_store_le32(v, s->format);
	MDB_val k = { 6, "format" }, val = { 4, v };
	int err = fci_put(s, txn, s->meta, &k, &val, 0);
	if (err)
		return err;
	char info[160];
	snprintf(info, sizeof info, "{\"featcache\":\"%s\",\"created\":%lld}", FC_VERSION_STRING,
		 (long long)time(NULL));
	MDB_val ck = { 7, "created" }, cv = { strlen(info), info };
	return fci_put(s, txn, s->meta, &ck, &cv, 0);
}

/* Check the format record in an open read transaction. */
static int check_format(fc_store *s, MDB_txn *txn)
{
	MDB_val k = { 6, "format" }, v;
	int rc = mdb_get(txn, s->meta, &k, &v);
	if (rc || v.mv_size != 4)
		return FCI_FAIL(s, FC_ERR_NOT_STORE, "an LMDB environment without a featcache format record");
	uint32_t format = fci_load_le32(v.mv_data);
	if (format > FC_STORE_FORMAT)
		return FCI_FAIL(s, FC_ERR_VERSION,
				"store format %u is newer than this featcache (%d): upgrade featcache", format,
				FC_STORE_FORMAT);
	if (format < FC_STORE_FORMAT_MIN)
		return FCI_FAIL(s, FC_ERR_CORRUPT, "store format record is %u", format);
	s->format = format;
	return 0;
}

/* An environment with nothing in it at all (no named database, not even
 * meta): a creation killed before its first commit, safe to finish. */
static int interrupted_create(fc_store *s)
{
	MDB_txn *txn;
	MDB_dbi main;
	MDB_stat st;
	int empty = 0;

	if (fci_txn_begin(s, MDB_RDONLY, &txn) != 0)
		return 0;
	if (mdb_dbi_open(txn, NULL, 0, &main) == 0 && mdb_stat(txn, main, &st) == 0)
		empty = st.ms_entries == 0;
	mdb_txn_abort(txn);
	return empty;
}

static int open_dbs(fc_store *s)
{
	MDB_txn *txn;
	int err = fci_txn_begin(s, MDB_RDONLY, &txn);
	if (err)
		return err;
	int rc = mdb_dbi_open(txn, "meta", 0, &s->meta);
	if (rc == MDB_NOTFOUND)
		err = FCI_FAIL(s, FC_ERR_NOT_STORE, "an LMDB environment but not a featcache store");
	else if (rc)
		err = fci_mdb_fail(s, rc, "cannot open meta");
	else
		err = check_format(s, txn);
	const char *names[] = { "items", "labels", "extractors", "errors" };
	MDB_dbi *dbis[] = { &s->items, &s->labels, &s->extractors, &s->errors };
	for (int i = 0; i < 4 && !err; i++)
		if (mdb_dbi_open(txn, names[i], 0, dbis[i]) != 0)
			err = FCI_FAIL(s, FC_ERR_CORRUPT, "store is missing its '%s' database", names[i]);
	if (err) {
		mdb_txn_abort(txn);
		return err;
	}
	/* Committing a read transaction keeps the handles it opened. */
	rc = mdb_txn_commit(txn);
	if (rc)
		return fci_mdb_fail(s, rc, "cannot open databases");
	return 0;
}

int fc_store_open(fc_store **out, const char *path, const fc_store_opts *opts)
{
	static const fc_store_opts defaults = { 0 };
	if (!opts)
		opts = &defaults;
	*out = NULL;
	fc_store *s = calloc(1, sizeof *s);
	if (!s)
		return FC_ERR_NOMEM;
	*out = s;
	s->lock_fd = -1;
	s->path = strdup(path);
	s->dec.ctx = fci_chunk_ctx_new();
	if (!s->path || !s->dec.ctx)
		return FCI_FAIL(s, FC_ERR_NOMEM, "out of memory");
	s->readonly = opts->readonly;
	s->logger = opts->logger;
	s->max_map_size = opts->max_map_size;
	s->format = opts->format ? opts->format : FC_STORE_FORMAT;
	if (s->format < FC_STORE_FORMAT_MIN || s->format > FC_STORE_FORMAT)
		return FCI_FAIL(s, FC_ERR_INVALID, "store format %u is not one this featcache writes (%d to %d)",
				s->format, FC_STORE_FORMAT_MIN, FC_STORE_FORMAT);
	s->map_size = opts->map_size ? opts->map_size : (uint64_t)1 << 30;
	if (s->max_map_size && s->map_size > s->max_map_size)
		s->map_size = s->max_map_size;

	int fresh, err = check_dir(s, path, opts, &fresh);
	/* Locked, look again: the writer we waited for may have made the store. */
	if (!err && opts->writer && !opts->readonly && !(err = take_writer_lock(s, path, opts)))
		err = check_dir(s, path, opts, &fresh);
	if (!err)
		err = env_open(s, path, opts);
	if (err)
		return err;
	if (fresh || (opts->create && !opts->readonly && interrupted_create(s)))
		return fci_store_write(s, create_meta, NULL);
	return open_dbs(s);
}

unsigned fc_store_format(const fc_store *s)
{
	return s->format;
}

void fc_store_free(fc_store *s)
{
	if (!s)
		return;
	if (s->env)
		mdb_env_close(s->env);
	if (s->lock_fd >= 0)
		close(s->lock_fd); /* releases the writer lock */
	fci_chunk_ctx_free(s->dec.ctx);
	free(s->dec.buf);
	free(s->ex);
	free(s->enc);
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
static int ex_parse(fc_store *s, const MDB_val *v, fci_exdb *e)
{
	json_error_t jerr;
	json_t *j = json_loadb(v->mv_data, v->mv_size, 0, &jerr);
	int err = 0;
	json_int_t dim = 0, level = 0;
	const char *dtype = NULL, *codec = NULL;
	if (!j || json_unpack(j, "{s:I, s:s, s:s, s:I}", "dim", &dim, "dtype", &dtype, "codec", &codec,
			      "level", &level) != 0) {
		err = FCI_FAIL(s, FC_ERR_CORRUPT, "extractor descriptor is not valid");
		goto out;
	}
	if (dim < 1 || dim > FC_CHUNK_MAX_DIM || fc_dtype_parse(dtype, &e->dtype) ||
	    fc_codec_parse(codec, &e->codec) || level < -7 || level > 22) {
		err = FCI_FAIL(s, FC_ERR_CORRUPT, "extractor descriptor has bad storage fields");
		goto out;
	}
	e->dim = (uint32_t)dim;
	e->level = (int)level;
out:
	json_decref(j);
	return err;
}

static fci_exdb *ex_cached(fc_store *s, const uint8_t id[FC_HASH_LEN])
{
	for (size_t i = 0; i < s->n_ex; i++)
		if (memcmp(s->ex[i].id, id, FC_HASH_LEN) == 0)
			return &s->ex[i];
	return NULL;
}

static int ex_cache_add(fc_store *s, const fci_exdb *e)
{
	if (s->n_ex == s->cap_ex) {
		size_t cap = s->cap_ex ? 2 * s->cap_ex : 8;
		fci_exdb *p = realloc(s->ex, cap * sizeof *p);
		if (!p)
			return FCI_FAIL(s, FC_ERR_NOMEM, "out of memory");
		s->ex = p;
		s->cap_ex = cap;
	}
	s->ex[s->n_ex++] = *e;
	return 0;
}

int fci_ex_open(fc_store *s, const uint8_t id[FC_HASH_LEN], fci_exdb **out)
{
	if ((*out = ex_cached(s, id)) != NULL)
		return 0;
	char hex[2 * FC_HASH_LEN + 1], feat[40], index[40];
	fc_hex(hex, id, FC_HASH_LEN);
	ex_db_names(id, feat, index);
	fci_exdb e = { .feat = 0 };
	memcpy(e.id, id, FC_HASH_LEN);
	MDB_txn *txn;
	int err = fci_txn_begin(s, MDB_RDONLY, &txn);
	if (err)
		return err;
	MDB_val k = { FC_HASH_LEN, (void *)id }, v;
	int rc = mdb_get(txn, s->extractors, &k, &v);
	if (rc) {
		mdb_txn_abort(txn);
		if (rc == MDB_NOTFOUND)
			return FCI_FAIL(s, FC_ERR_NOT_FOUND, "no extractor %s in store '%s'", hex, s->path);
		return fci_mdb_fail(s, rc, "cannot read extractor");
	}
	err = ex_parse(s, &v, &e);
	if (!err && ((rc = mdb_dbi_open(txn, feat, 0, &e.feat)) != 0 ||
		     (rc = mdb_dbi_open(txn, index, 0, &e.index)) != 0))
		err = FCI_FAIL(s, FC_ERR_CORRUPT, "extractor %s has no feature databases: %s", hex,
			       mdb_strerror(rc));
	if (err) {
		mdb_txn_abort(txn);
		return err;
	}
	rc = mdb_txn_commit(txn);
	if (rc)
		return fci_mdb_fail(s, rc, "cannot open extractor");
	err = ex_cache_add(s, &e);
	if (err)
		return err;
	*out = &s->ex[s->n_ex - 1];
	return 0;
}

struct put_ex_ctx {
	const fc_extractor *ex;
	const char *json;
	fci_exdb e;
	int existed;
};

static int put_extractor_txn(fc_store *s, MDB_txn *txn, void *vctx)
{
	struct put_ex_ctx *c = vctx;
	MDB_val k = { FC_HASH_LEN, (void *)c->ex->id }, v;
	c->existed = 0;
	int rc = mdb_get(txn, s->extractors, &k, &v);
	if (rc == 0) {
		fci_exdb old;
		int err = ex_parse(s, &v, &old);
		if (err)
			return err;
		if (old.dim != c->e.dim || old.dtype != c->e.dtype || old.codec != c->e.codec ||
		    old.level != c->e.level)
			return FCI_FAIL(s, FC_ERR_EXISTS,
					"extractor exists with other storage settings (dim %u, %s, %s)", old.dim,
					fc_dtype_name(old.dtype), fc_codec_name(old.codec));
		c->existed = 1;
		return 0;
	}
	if (rc != MDB_NOTFOUND)
		return fci_mdb_fail(s, rc, "cannot read extractor");
	MDB_val jv = { strlen(c->json), (void *)c->json };
	int err = fci_put(s, txn, s->extractors, &k, &jv, 0);
	if (err)
		return err;
	char feat[40], index[40];
	ex_db_names(c->ex->id, feat, index);
	if ((rc = mdb_dbi_open(txn, feat, MDB_CREATE, &c->e.feat)) != 0 ||
	    (rc = mdb_dbi_open(txn, index, MDB_CREATE, &c->e.index)) != 0) {
		if (rc == MDB_MAP_FULL)
			return FCI_RETRY_GROW;
		return fci_mdb_fail(s, rc, "cannot create feature databases");
	}
	return 0;
}

/* The descriptor as stored: the caller's JSON object plus the storage
 * fields, compact with sorted keys, in *text (free() it). */
static int ex_descriptor(fc_store *s, const fc_extractor *ex, int level, char **text)
{
	json_error_t jerr;
	json_t *j = ex->descriptor ? json_loads(ex->descriptor, 0, &jerr) : json_object();
	if (!j || !json_is_object(j)) {
		json_decref(j);
		return FCI_FAIL(s, FC_ERR_INVALID, "extractor descriptor is not a JSON object");
	}
	json_object_set_new(j, "dim", json_integer(ex->dim));
	json_object_set_new(j, "dtype", json_string(fc_dtype_name(ex->dtype)));
	json_object_set_new(j, "codec", json_string(fc_codec_name(ex->codec)));
	json_object_set_new(j, "level", json_integer(level));
	*text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(j);
	return *text ? 0 : FCI_FAIL(s, FC_ERR_NOMEM, "out of memory");
}

int fc_store_put_extractor(fc_store *s, const fc_extractor *ex)
{
	if (ex->dim < 1 || ex->dim > FC_CHUNK_MAX_DIM)
		return FCI_FAIL(s, FC_ERR_INVALID, "extractor dim %u is out of range (1..%u)", ex->dim,
				FC_CHUNK_MAX_DIM);
	if ((unsigned)ex->dtype > FC_DTYPE_U8 || (unsigned)ex->codec > FC_CODEC_SHUFFLE_ZSTD)
		return FCI_FAIL(s, FC_ERR_INVALID, "unknown storage dtype or codec");
	int level = ex->codec == FC_CODEC_RAW ? 0 : ex->level;
	if (ex->codec != FC_CODEC_RAW && (level < 1 || level > 19))
		return FCI_FAIL(s, FC_ERR_INVALID, "zstd level %d is out of range (1..19)", level);
	char *text;
	int err = ex_descriptor(s, ex, level, &text);
	if (err)
		return err;

	struct put_ex_ctx c = { .ex = ex, .json = text };
	memcpy(c.e.id, ex->id, FC_HASH_LEN);
	c.e.dim = ex->dim;
	c.e.dtype = ex->dtype;
	c.e.codec = ex->codec;
	c.e.level = level;
	err = fci_store_write(s, put_extractor_txn, &c);
	free(text);
	if (err || c.existed || ex_cached(s, ex->id))
		return err;
	return ex_cache_add(s, &c.e);
}

int fc_store_get_extractor(fc_store *s, const uint8_t id[FC_HASH_LEN], fc_extractor *out)
{
	fci_exdb *e;
	int err = fci_ex_open(s, id, &e);
	if (err)
		return err;
	MDB_txn *txn;
	err = fci_txn_begin(s, MDB_RDONLY, &txn);
	if (err)
		return err;
	MDB_val k = { FC_HASH_LEN, (void *)id }, v;
	char *d = NULL;
	int rc = mdb_get(txn, s->extractors, &k, &v);
	if (rc)
		err = fci_mdb_fail(s, rc, "cannot read extractor");
	else if (!(d = malloc(v.mv_size + 1)))
		err = FCI_FAIL(s, FC_ERR_NOMEM, "out of memory");
	if (err)
		goto out;
	memcpy(d, v.mv_data, v.mv_size);
	d[v.mv_size] = '\0';
	free(s->desc);
	s->desc = d;
	memcpy(out->id, id, FC_HASH_LEN);
	out->dim = e->dim;
	out->dtype = e->dtype;
	out->codec = e->codec;
	out->level = e->level;
	out->descriptor = d;
out:
	mdb_txn_abort(txn);
	return err;
}

int fc_store_list_extractors(fc_store *s, uint8_t (**ids)[FC_HASH_LEN], size_t *n)
{
	*ids = NULL;
	*n = 0;
	MDB_txn *txn;
	MDB_cursor *cur;
	int err = fci_txn_begin(s, MDB_RDONLY, &txn);
	if (err)
		return err;
	int rc = mdb_cursor_open(txn, s->extractors, &cur);
	if (rc) {
		mdb_txn_abort(txn);
		return fci_mdb_fail(s, rc, "cannot list extractors");
	}
	MDB_stat st;
	mdb_stat(txn, s->extractors, &st);
	uint8_t (*list)[FC_HASH_LEN] = malloc((st.ms_entries + 1) * FC_HASH_LEN);
	size_t cnt = 0;
	if (!list) {
		err = FCI_FAIL(s, FC_ERR_NOMEM, "out of memory");
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
		return FCI_FAIL(s, FC_ERR_INVALID, "extractor id '%s' must have 4 to 32 hex digits", prefix);
	for (size_t i = 0; i < len; i++)
		if (hexval(prefix[i]) < 0)
			return FCI_FAIL(s, FC_ERR_INVALID, "extractor id '%s' is not hexadecimal", prefix);
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
		if (j == len && found++ == 0)
			memcpy(id, ids[i], FC_HASH_LEN);
	}
	free(ids);
	if (found == 0)
		return FCI_FAIL(s, FC_ERR_NOT_FOUND, "no extractor '%s' in store '%s'", prefix, s->path);
	if (found > 1)
		return FCI_FAIL(s, FC_ERR_INVALID, "extractor id '%s' is ambiguous (%zu match)", prefix, found);
	return 0;
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

void fci_chunk_name(char *buf, size_t cap, const fci_exdb *e, uint64_t id)
{
	char hex[2 * FC_HASH_LEN + 1];
	fc_hex(hex, e->id, FC_HASH_LEN);
	snprintf(buf, cap, "feat.%s/chunk %llu", hex, (unsigned long long)id);
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
