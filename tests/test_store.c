/*
 * test_store.c - the store on real LMDB files in temp directories: open and
 * versioning, durability by default, refusals, items/labels/extractors,
 * append and load, one-transaction batches, snapshots across processes, a
 * writer killed mid-batch, map growth and full disks, corrupted records,
 * verify and gc, repair (also killed mid-way) and the damage record.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <lmdb.h>

#include "featcache/store.h"
#include "store/chunk.h"
#include "tests/testlib.h"

static char *tmproot; /* testlib_tmpdir, removed when every test passed */

static void tmpdir(char *out, size_t cap, const char *name)
{
	snprintf(out, cap, "%s/%s", tmproot, name);
}

/* Content hash of synthetic item i. */
static void hash_of(uint8_t h[FC_HASH_LEN], uint64_t i)
{
	memset(h, 0, FC_HASH_LEN);
	for (int b = 0; b < 8; b++)
		h[b] = (uint8_t)(i >> (56 - 8 * b));
	h[15] = 0xa5;
}

/* The vector that belongs to hash i: deterministic, non-negative, some zeros. */
static void vec_of(float *v, size_t dim, uint64_t i)
{
	uint64_t st = i * 0x9e3779b97f4a7c15ull + 1;
	for (size_t j = 0; j < dim; j++) {
		st ^= st << 13;
		st ^= st >> 7;
		st ^= st << 17;
		float u = (float)(st >> 40) / (float)(1 << 24);
		v[j] = u < 0.1f ? 0.0f : u * u * 4.0f;
	}
}

static void ex_id(uint8_t id[FC_HASH_LEN], int n)
{
	memset(id, 0, FC_HASH_LEN);
	id[0] = 0xfe;
	id[1] = (uint8_t)n;
}

static fc_store *open_new(const char *name, const fc_store_opts *opts)
{
	char path[512];
	tmpdir(path, sizeof path, name);
	fc_store_opts o = opts ? *opts : (fc_store_opts){ 0 };
	o.create = 1;
	fc_store *s;
	int err = fc_store_open(&s, path, &o);
	if (err)
		fail_msg("open %s: %s", path, fc_store_errmsg(s));
	return s;
}

static void add_extractor(fc_store *s, int n, uint32_t dim, fc_dtype t, fc_codec c)
{
	fc_extractor ex = { .dim = dim, .dtype = t, .codec = c, .level = 3,
			    .descriptor = "{\"model\":\"test.onnx\",\"layer\":\"pool\"}" };
	ex_id(ex.id, n);
	int err = fc_store_put_extractor(s, &ex);
	if (err)
		fail_msg("put_extractor: %s", fc_store_errmsg(s));
}

/* A new store with extractor 1 of that shape, where most tests start. */
static fc_store *open_with(const char *name, const fc_store_opts *opts, uint32_t dim, fc_dtype t, fc_codec c)
{
	fc_store *s = open_new(name, opts);

	add_extractor(s, 1, dim, t, c);
	return s;
}

/* Append batch b: items [b*n, b*n+n). */
static int append_batch(fc_store *s, int ex, uint32_t dim, uint64_t first, size_t n)
{
	uint8_t id[FC_HASH_LEN];
	ex_id(id, ex);
	float *v = malloc(n * dim * sizeof *v);
	uint8_t (*h)[FC_HASH_LEN] = malloc(n * FC_HASH_LEN);
	for (size_t i = 0; i < n; i++) {
		vec_of(v + i * dim, dim, first + i);
		hash_of(h[i], first + i);
	}
	int err = fc_store_append(s, id, v, (const uint8_t(*)[FC_HASH_LEN])h, n, NULL);
	free(v);
	free(h);
	return err;
}

static void put_items(fc_store *s, uint64_t first, size_t n, int classes)
{
	char (*keys)[32] = malloc(n * 32);
	fc_item *items = calloc(n, sizeof *items);
	const char *names[64];
	char namebuf[64][16];
	uint32_t ids[64];
	for (int c = 0; c < classes; c++) {
		snprintf(namebuf[c], sizeof namebuf[c], "class%d", c % 100);
		names[c] = namebuf[c];
	}
	assert_int_equal(fc_store_label_ids(s, names, (size_t)classes, ids), 0);
	for (size_t i = 0; i < n; i++) {
		snprintf(keys[i], 32, "img/%06llu.png", (unsigned long long)(first + i));
		items[i].key = keys[i];
		hash_of(items[i].hash, first + i);
		items[i].size = 1000 + i;
		items[i].mtime_ns = 1700000000000000000LL + (int64_t)i;
		items[i].label = ids[(first + i) % (uint64_t)classes];
		items[i].split = (first + i) % 5 == 0 ? FC_SPLIT_VAL : FC_SPLIT_TRAIN;
		items[i].status = FC_ITEM_OK;
	}
	assert_int_equal(fc_store_put_items(s, items, n), 0);
	free(items);
	free(keys);
}

/* ---- raw LMDB access, to damage stores the way disks and bugs do ---- */

static void raw_put(const char *path, const char *db, const void *key, size_t klen, const void *val,
		    size_t vlen)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	assert_int_equal(mdb_env_create(&env), 0);
	mdb_env_set_maxdbs(env, 512);
	assert_int_equal(mdb_env_open(env, path, 0, 0666), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
	MDB_val k = { klen, (void *)key }, v = { vlen, (void *)val };
	assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

/* Copy of a chunk's bytes (malloc'd). */
static uint8_t *raw_get(const char *path, const char *db, const void *key, size_t klen, size_t *len)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	assert_int_equal(mdb_env_create(&env), 0);
	mdb_env_set_maxdbs(env, 512);
	assert_int_equal(mdb_env_open(env, path, MDB_RDONLY, 0666), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
	MDB_val k = { klen, (void *)key }, v;
	assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
	uint8_t *p = malloc(v.mv_size);
	memcpy(p, v.mv_data, v.mv_size);
	*len = v.mv_size;
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return p;
}

/* The name of extractor ex's database of that kind: "feat" or "index". */
static void db_name(char *out, const char *kind, int ex)
{
	uint8_t id[FC_HASH_LEN];
	char hex[33];
	ex_id(id, ex);
	fc_hex(hex, id, FC_HASH_LEN);
	sprintf(out, "%s.%s", kind, hex);
}

static void chunk_key(uint8_t k[8], uint64_t id)
{
	for (int i = 0; i < 8; i++)
		k[i] = (uint8_t)(id >> (56 - 8 * i));
}

struct reports {
	int n;
	char first[512];
};

static void collect(void *ctx, const char *key, const char *problem)
{
	struct reports *r = ctx;
	if (r->n++ == 0)
		snprintf(r->first, sizeof r->first, "%s: %s", key, problem);
}

static int verify_count(fc_store *s, struct reports *r)
{
	memset(r, 0, sizeof *r);
	uint64_t checked;
	return fc_store_verify(s, collect, r, &checked);
}

/* Extractor 1's vectors after a clean verify (fc_matrix_free them). */
static void load_verified(fc_store *s, fc_matrix *m)
{
	struct reports r;
	uint8_t id[FC_HASH_LEN];

	assert_int_equal(verify_count(s, &r), 0);
	ex_id(id, 1);
	assert_int_equal(fc_store_load_all(s, id, m), 0);
}

/* Row r of m holds synthetic item `item`: its hash and, exactly, its vector. */
static void expect_row(const fc_matrix *m, size_t r, uint64_t item)
{
	uint8_t h[FC_HASH_LEN];
	float want[2048];

	assert_true(m->dim <= 2048);
	hash_of(h, item);
	assert_memory_equal(m->hashes[r], h, FC_HASH_LEN);
	vec_of(want, m->dim, item);
	assert_memory_equal(m->data + r * m->dim, want, m->dim * sizeof *want);
}

/* ---- tests ---- */

static void test_create_reopen(void **state)
{
	(void)state;
	fc_store *s = open_with("reopen", NULL, 8, FC_DTYPE_F32, FC_CODEC_ZSTD);
	assert_int_equal(append_batch(s, 1, 8, 0, 10), 0);
	fc_store_free(s);

	char path[512];
	tmpdir(path, sizeof path, "reopen");
	assert_int_equal(fc_store_open(&s, path, NULL), 0);
	uint8_t id[FC_HASH_LEN], h[FC_HASH_LEN];
	ex_id(id, 1);
	float got[8], want[8];
	for (int i = 0; i < 10; i++) {
		hash_of(h, (uint64_t)i);
		vec_of(want, 8, (uint64_t)i);
		assert_int_equal(fc_store_has(s, id, h), 1);
		assert_int_equal(fc_store_get(s, id, h, got, 8), 0);
		assert_memory_equal(got, want, sizeof want);
	}
	hash_of(h, 99);
	assert_int_equal(fc_store_has(s, id, h), 0);
	assert_int_equal(fc_store_get(s, id, h, got, 8), FC_ERR_NOT_FOUND);
	fc_store_free(s);

	/* Read-only handles read but refuse to write. */
	fc_store_opts ro = { .readonly = 1 };
	assert_int_equal(fc_store_open(&s, path, &ro), 0);
	hash_of(h, 3);
	assert_int_equal(fc_store_get(s, id, h, got, 8), 0);
	assert_int_equal(append_batch(s, 1, 8, 100, 1), FC_ERR_INVALID);
	fc_store_free(s);
}

/* The dataset root: none in a fresh store (as in stores made before it was
 * recorded), set, replaced, kept over a reopen; relative paths refused. */
static void test_data_root(void **state)
{
	(void)state;
	fc_store *s = open_new("root", NULL);
	char buf[64];
	assert_int_equal(fc_store_get_data_root(s, buf, sizeof buf), FC_ERR_NOT_FOUND);
	assert_int_equal(fc_store_set_data_root(s, "data/imgs"), FC_ERR_INVALID);
	assert_int_equal(fc_store_set_data_root(s, ""), FC_ERR_INVALID);
	assert_int_equal(fc_store_set_data_root(s, "/srv/a"), 0);
	assert_int_equal(fc_store_set_data_root(s, "/srv/images/fmnist"), 0);
	assert_int_equal(fc_store_get_data_root(s, buf, 5), FC_ERR_INVALID);
	fc_store_free(s);

	char path[512];
	tmpdir(path, sizeof path, "root");
	fc_store_opts ro = { .readonly = 1 };
	assert_int_equal(fc_store_open(&s, path, &ro), 0);
	assert_int_equal(fc_store_get_data_root(s, buf, sizeof buf), 0);
	assert_string_equal(buf, "/srv/images/fmnist");
	/* The same root again writes nothing, so a read-only handle takes it. */
	assert_int_equal(fc_store_set_data_root(s, "/srv/images/fmnist"), 0);
	assert_int_not_equal(fc_store_set_data_root(s, "/elsewhere"), 0);
	fc_store_free(s);
}

/* Durability is the default: a zero-initialised fc_store_opts, like opts
 * NULL, opens a store that fsyncs every commit; skipping that is the
 * caller's explicit choice (nosync). */
static void test_durable_by_default(void **state)
{
	(void)state;
	char path[512];
	tmpdir(path, sizeof path, "durable");
	fc_store_opts zero;
	memset(&zero, 0, sizeof zero);
	zero.create = 1;
	fc_store *s = NULL;
	assert_int_equal(fc_store_open(&s, path, &zero), 0);
	assert_int_equal(fc_store_is_durable(s), 1);
	fc_store_free(s);
	assert_int_equal(fc_store_open(&s, path, NULL), 0);
	assert_int_equal(fc_store_is_durable(s), 1);
	fc_store_free(s);
	fc_store_opts fast = { .nosync = 1 };
	assert_int_equal(fc_store_open(&s, path, &fast), 0);
	assert_int_equal(fc_store_is_durable(s), 0);
	fc_store_free(s);
	assert_int_equal(fc_store_is_durable(NULL), 0);
}

static void test_refusals(void **state)
{
	(void)state;
	fc_store *s;
	char path[512], file[600];

	/* Missing directory without create. */
	tmpdir(path, sizeof path, "nothere");
	assert_int_equal(fc_store_open(&s, path, NULL), FC_ERR_NOT_FOUND);
	assert_non_null(strstr(fc_store_errmsg(s), "no such file"));
	fc_store_free(s);

	/* A directory with someone's files: refused, files untouched. */
	tmpdir(path, sizeof path, "photos");
	mkdir(path, 0777);
	snprintf(file, sizeof file, "%s/cat.jpg", path);
	FILE *f = fopen(file, "w");
	fputs("not a store", f);
	fclose(f);
	fc_store_opts create = { .create = 1 };
	assert_int_equal(fc_store_open(&s, path, &create), FC_ERR_NOT_STORE);
	assert_non_null(strstr(fc_store_errmsg(s), "refusing"));
	fc_store_free(s);
	assert_int_equal(fc_store_open(&s, path, NULL), FC_ERR_NOT_STORE);
	fc_store_free(s);
	snprintf(file, sizeof file, "%s/data.mdb", path);
	assert_int_equal(access(file, F_OK), -1);

	/* A plain file. */
	snprintf(file, sizeof file, "%s/cat.jpg", path);
	assert_int_equal(fc_store_open(&s, file, &create), FC_ERR_NOT_STORE);
	assert_non_null(strstr(fc_store_errmsg(s), "not a directory"));
	fc_store_free(s);

	/* data.mdb that is not LMDB. */
	tmpdir(path, sizeof path, "garbage");
	mkdir(path, 0777);
	snprintf(file, sizeof file, "%s/data.mdb", path);
	f = fopen(file, "w");
	for (int i = 0; i < 20000; i++)
		fputc(i * 7, f);
	fclose(f);
	assert_int_equal(fc_store_open(&s, path, NULL), FC_ERR_NOT_STORE);
	fc_store_free(s);

	/* An LMDB environment of someone else's. */
	tmpdir(path, sizeof path, "otherlmdb");
	mkdir(path, 0777);
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	mdb_env_create(&env);
	assert_int_equal(mdb_env_open(env, path, 0, 0666), 0);
	mdb_txn_begin(env, NULL, 0, &txn);
	mdb_dbi_open(txn, NULL, 0, &dbi);
	MDB_val k = { 3, "abc" }, v = { 3, "xyz" };
	mdb_put(txn, dbi, &k, &v, 0);
	mdb_txn_commit(txn);
	mdb_env_close(env);
	assert_int_equal(fc_store_open(&s, path, NULL), FC_ERR_NOT_STORE);
	assert_non_null(strstr(fc_store_errmsg(s), "not a featcache store"));
	fc_store_free(s);
}

static void test_newer_format(void **state)
{
	(void)state;
	fc_store *s = open_new("newer", NULL);
	fc_store_free(s);
	char path[512];
	tmpdir(path, sizeof path, "newer");
	uint8_t v[4] = { FC_STORE_FORMAT + 1, 0, 0, 0 };
	raw_put(path, "meta", "format", 6, v, 4);
	assert_int_equal(fc_store_open(&s, path, NULL), FC_ERR_VERSION);
	assert_string_equal(fc_store_errmsg(s),
			    "store format 3 is newer than this featcache (2): upgrade featcache");
	fc_store_free(s);
}

static void test_extractors(void **state)
{
	(void)state;
	fc_store *s = open_with("extractors", NULL, 16, FC_DTYPE_F16, FC_CODEC_SHUFFLE_ZSTD);
	add_extractor(s, 1, 16, FC_DTYPE_F16, FC_CODEC_SHUFFLE_ZSTD); /* same again: fine */
	add_extractor(s, 2, 2048, FC_DTYPE_F32, FC_CODEC_RAW);
	fc_extractor ex = { .dim = 32, .dtype = FC_DTYPE_F16, .codec = FC_CODEC_ZSTD, .level = 3 };
	ex_id(ex.id, 1);
	assert_int_equal(fc_store_put_extractor(s, &ex), FC_ERR_EXISTS);
	ex.dim = 0;
	assert_int_equal(fc_store_put_extractor(s, &ex), FC_ERR_INVALID);
	ex.dim = 4;
	ex.descriptor = "[1,2]";
	ex_id(ex.id, 3);
	assert_int_equal(fc_store_put_extractor(s, &ex), FC_ERR_INVALID);

	fc_extractor got;
	ex_id(ex.id, 1);
	assert_int_equal(fc_store_get_extractor(s, ex.id, &got), 0);
	assert_int_equal(got.dim, 16);
	assert_int_equal(got.dtype, FC_DTYPE_F16);
	assert_int_equal(got.codec, FC_CODEC_SHUFFLE_ZSTD);
	assert_non_null(strstr(got.descriptor, "\"model\":\"test.onnx\""));
	assert_non_null(strstr(got.descriptor, "\"dtype\":\"f16\""));

	uint8_t (*ids)[FC_HASH_LEN];
	size_t n;
	assert_int_equal(fc_store_list_extractors(s, &ids, &n), 0);
	assert_int_equal(n, 2);
	free(ids);

	uint8_t id[FC_HASH_LEN];
	assert_int_equal(fc_store_find_extractor(s, "fe01", id), 0);
	assert_memory_equal(id, ex.id, FC_HASH_LEN);
	assert_int_equal(fc_store_find_extractor(s, "fe00", id), FC_ERR_NOT_FOUND);
	assert_int_equal(fc_store_find_extractor(s, "fe0", id), FC_ERR_INVALID);
	assert_int_equal(fc_store_find_extractor(s, "zzzz", id), FC_ERR_INVALID);
	assert_int_equal(fc_store_find_extractor(s, "fe03", id), FC_ERR_NOT_FOUND);
	ex_id(id, 9);
	assert_int_equal(fc_store_get_extractor(s, id, &got), FC_ERR_NOT_FOUND);
	fc_store_free(s);
}

/* Every dtype and codec through append -> get and load_all. */
static void test_append_load_all_dtypes(void **state)
{
	(void)state;
	static const fc_dtype dtypes[] = { FC_DTYPE_F32, FC_DTYPE_F16, FC_DTYPE_BF16, FC_DTYPE_U8 };
	static const double tol[] = { 0, 1.0 / 2048, 1.0 / 256, 1.0 / 510 + 1e-6 };
	fc_store *s = open_new("dtypes", NULL);
	const uint32_t dim = 96;
	int ex = 0;
	for (int t = 0; t < 4; t++) {
		for (int c = 0; c < 3; c++, ex++) {
			add_extractor(s, ex, dim, dtypes[t], (fc_codec)c);
			for (int b = 0; b < 5; b++)
				assert_int_equal(append_batch(s, ex, dim, (uint64_t)b * 37, 37), 0);
			uint8_t id[FC_HASH_LEN];
			ex_id(id, ex);
			fc_matrix m;
			assert_int_equal(fc_store_load_all(s, id, &m), 0);
			assert_int_equal(m.rows, 5 * 37);
			assert_int_equal(m.dim, dim);
			assert_null(m.keys);
			double worst = 0;
			float want[96];
			for (size_t r = 0; r < m.rows; r++) {
				uint8_t h[FC_HASH_LEN];
				hash_of(h, r);
				assert_memory_equal(m.hashes[r], h, FC_HASH_LEN);
				vec_of(want, dim, r);
				float mx = 0;
				for (uint32_t j = 0; j < dim; j++)
					mx = want[j] > mx ? want[j] : mx;
				for (uint32_t j = 0; j < dim; j++) {
					double e = fabs((double)m.data[r * dim + j] - want[j]) / mx;
					worst = e > worst ? e : worst;
				}
				if (dtypes[t] == FC_DTYPE_F32)
					assert_memory_equal(m.data + r * dim, want, dim * sizeof(float));
			}
			print_message("# %s/%s: max relative error %.3g\n", fc_dtype_name(dtypes[t]),
				      fc_codec_name((fc_codec)c), worst);
			assert_true(worst <= tol[t]);
			fc_matrix_free(&m);
		}
	}
	fc_store_free(s);
}

static void test_duplicates_and_batch_limits(void **state)
{
	(void)state;
	fc_store *s = open_with("dups", NULL, 4, FC_DTYPE_F32, FC_CODEC_RAW);
	assert_int_equal(append_batch(s, 1, 4, 0, 3), 0);
	/* The same hash again with another vector keeps the first one. */
	uint8_t id[FC_HASH_LEN], h[1][FC_HASH_LEN];
	ex_id(id, 1);
	hash_of(h[0], 1);
	float other[4] = { 9, 9, 9, 9 }, got[4], want[4];
	uint64_t cid;
	assert_int_equal(fc_store_append(s, id, other, (const uint8_t(*)[FC_HASH_LEN])h, 1, &cid), 0);
	assert_int_equal(cid, 1);
	assert_int_equal(fc_store_get(s, id, h[0], got, 4), 0);
	vec_of(want, 4, 1);
	assert_memory_equal(got, want, sizeof want);
	assert_int_equal(fc_store_get(s, id, h[0], got, 3), FC_ERR_INVALID);
	assert_int_equal(fc_store_append(s, id, other, (const uint8_t(*)[FC_HASH_LEN])h, 0, NULL), FC_ERR_INVALID);
	assert_int_equal(fc_store_append(s, id, other, (const uint8_t(*)[FC_HASH_LEN])h, 70000, NULL),
			 FC_ERR_INVALID);
	fc_matrix m;
	assert_int_equal(fc_store_load_all(s, id, &m), 0);
	assert_int_equal(m.rows, 3);
	fc_matrix_free(&m);

	/* The lossy dtypes refuse what they cannot represent. */
	add_extractor(s, 2, 4, FC_DTYPE_F16, FC_CODEC_ZSTD);
	ex_id(id, 2);
	float nan4[4] = { 1, NAN, 2, 3 };
	assert_int_equal(fc_store_append(s, id, nan4, (const uint8_t(*)[FC_HASH_LEN])h, 1, NULL), FC_ERR_INVALID);
	assert_int_equal(fc_store_has(s, id, h[0]), 0);
	fc_store_free(s);
}

static void test_items_labels_errors(void **state)
{
	(void)state;
	fc_store *s = open_new("items", NULL);
	put_items(s, 0, 50, 4);
	fc_item it;
	assert_int_equal(fc_store_get_item(s, "img/000007.png", &it), 0);
	uint8_t h[FC_HASH_LEN];
	hash_of(h, 7);
	assert_memory_equal(it.hash, h, FC_HASH_LEN);
	assert_int_equal(it.size, 1007);
	assert_int_equal(it.mtime_ns, 1700000000000000007LL);
	assert_int_equal(it.split, FC_SPLIT_TRAIN);
	char name[64];
	assert_int_equal(fc_store_label_name(s, it.label, name, sizeof name), 0);
	assert_string_equal(name, "class3");
	assert_int_equal(fc_store_label_name(s, 999, name, sizeof name), FC_ERR_NOT_FOUND);

	/* Ids are stable: asking again returns the same, new names get new ids. */
	const char *names[] = { "class3", "new", "class0" };
	uint32_t ids[3];
	assert_int_equal(fc_store_label_ids(s, names, 3, ids), 0);
	assert_int_equal(ids[0], it.label);
	assert_int_equal(ids[1], 4);
	assert_int_equal(ids[2], 0);

	const char *gone[] = { "img/000007.png", "no/such/key" };
	assert_int_equal(fc_store_put_error(s, "img/000007.png", "truncated JPEG"), 0);
	assert_int_equal(fc_store_del_items(s, gone, 2), 0);
	assert_int_equal(fc_store_get_item(s, "img/000007.png", &it), FC_ERR_NOT_FOUND);

	char longkey[1200];
	memset(longkey, 'a', sizeof longkey - 1);
	longkey[sizeof longkey - 1] = '\0';
	fc_item bad = { .key = longkey, .label = FC_NO_LABEL };
	assert_int_equal(fc_store_put_items(s, &bad, 1), FC_ERR_INVALID);
	bad.key = "";
	assert_int_equal(fc_store_put_items(s, &bad, 1), FC_ERR_INVALID);
	bad.key = "x";
	bad.split = 7;
	assert_int_equal(fc_store_put_items(s, &bad, 1), FC_ERR_INVALID);

	assert_int_equal(fc_store_put_error(s, "img/000009.png", "not an image"), 0);
	fc_store_stats st;
	assert_int_equal(fc_store_stats_get(s, &st), 0);
	assert_int_equal(st.items, 49);
	assert_int_equal(st.labels, 5);
	assert_int_equal(st.errors, 1);
	assert_int_equal(st.splits[FC_SPLIT_VAL], 10);
	assert_int_equal(st.splits[FC_SPLIT_TRAIN], 39);
	free(st.extractors);
	fc_store_free(s);
}

/* One transaction: deletions, a chunk, items and error records together;
 * an invalid part refuses all of it. */
static void test_store_batch(void **state)
{
	(void)state;
	char path[512];
	tmpdir(path, sizeof path, "batch");
	fc_store *s = NULL;
	fc_store_opts o = { .create = 1 };
	assert_int_equal(fc_store_open(&s, path, &o), 0);
	fc_extractor ex = { .id = { 1, 2, 3 }, .dim = 4, .dtype = FC_DTYPE_F32, .codec = FC_CODEC_ZSTD, .level = 3 };
	assert_int_equal(fc_store_put_extractor(s, &ex), 0);
	fc_item old = { .key = "gone.png", .label = FC_NO_LABEL, .split = FC_SPLIT_TRAIN };
	assert_int_equal(fc_store_put_items(s, &old, 1), 0);
	assert_int_equal(fc_store_put_error(s, "fixed.png", "was broken"), 0);

	float v[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	uint8_t hashes[2][FC_HASH_LEN] = { { 0xaa }, { 0xbb } };
	fc_item items[3] = {
		{ .key = "a.png", .hash = { 0xaa }, .label = FC_NO_LABEL, .split = FC_SPLIT_TRAIN },
		{ .key = "fixed.png", .hash = { 0xbb }, .label = FC_NO_LABEL, .split = FC_SPLIT_VAL },
		{ .key = "bad.png", .label = FC_NO_LABEL, .split = FC_SPLIT_TRAIN, .status = FC_ITEM_FAILED },
	};
	const char *ek[] = { "bad.png" }, *ew[] = { "truncated png data" }, *dk[] = { "gone.png" };
	fc_store_batch b = { .exid = ex.id, .vecs = v, .hashes = (const uint8_t(*)[FC_HASH_LEN])hashes,
			     .n_vecs = 2, .items = items, .n_items = 3, .error_keys = ek, .error_whys = ew,
			     .n_errors = 1, .del_keys = dk, .n_del = 1 };
	/* an invalid item refuses the whole batch */
	items[2].split = 7;
	assert_int_equal(fc_store_write_batch(s, &b, NULL), FC_ERR_INVALID);
	assert_int_equal(fc_store_has(s, ex.id, hashes[0]), 0);
	items[2].split = FC_SPLIT_TRAIN;
	uint64_t chunk = 99;
	assert_int_equal(fc_store_write_batch(s, &b, &chunk), 0);
	assert_int_equal(chunk, 0);
	assert_int_equal(fc_store_has(s, ex.id, hashes[1]), 1);
	fc_item got;
	assert_int_equal(fc_store_get_item(s, "gone.png", &got), FC_ERR_NOT_FOUND);
	assert_int_equal(fc_store_get_item(s, "bad.png", &got), 0);
	assert_int_equal(got.status, FC_ITEM_FAILED);
	fc_store_stats st;
	assert_int_equal(fc_store_stats_get(s, &st), 0);
	assert_int_equal(st.items, 3);
	assert_int_equal(st.errors, 1); /* bad.png's; fixed.png's stale one is gone */
	free(st.extractors);
	fc_matrix m;
	size_t missing;
	assert_int_equal(fc_store_load_items(s, ex.id, FC_SPLIT_MASK_ALL, &m, &missing), 0);
	assert_int_equal(m.rows, 2);
	assert_int_equal(missing, 0);
	assert_string_equal(m.keys[1], "fixed.png");
	assert_memory_equal(m.data + 4, v + 4, 4 * sizeof(float));
	fc_matrix_free(&m);
	/* items only, no vectors */
	fc_store_batch b2 = { .items = items, .n_items = 1 };
	assert_int_equal(fc_store_write_batch(s, &b2, &chunk), 0);
	fc_store_free(s);
}

static void test_load_items(void **state)
{
	(void)state;
	const uint32_t dim = 33;
	fc_store *s = open_with("loaditems", NULL, dim, FC_DTYPE_F32, FC_CODEC_SHUFFLE_ZSTD);
	put_items(s, 0, 100, 3);
	/* Vectors for items 0..89 only, in shuffled batches. */
	assert_int_equal(append_batch(s, 1, dim, 50, 40), 0);
	assert_int_equal(append_batch(s, 1, dim, 0, 50), 0);
	/* Two more items that share content with item 5. */
	fc_item dup[2] = { { .key = "zz/copy1.png", .label = 0, .split = FC_SPLIT_TRAIN },
			   { .key = "zz/copy2.png", .label = 1, .split = FC_SPLIT_VAL } };
	hash_of(dup[0].hash, 5);
	hash_of(dup[1].hash, 5);
	assert_int_equal(fc_store_put_items(s, dup, 2), 0);

	uint8_t id[FC_HASH_LEN];
	ex_id(id, 1);
	fc_matrix m;
	size_t missing;
	assert_int_equal(fc_store_load_items(s, id, FC_SPLIT_MASK_ALL, &m, &missing), 0);
	assert_int_equal(m.rows, 92);
	assert_int_equal(missing, 10);
	float want[33];
	for (size_t r = 0; r < m.rows; r++) {
		unsigned long long i;
		if (strncmp(m.keys[r], "zz/", 3) == 0)
			i = 5;
		else
			assert_int_equal(sscanf(m.keys[r], "img/%llu.png", &i), 1);
		vec_of(want, dim, i);
		assert_memory_equal(m.data + r * dim, want, sizeof want);
		if (r > 0)
			assert_true(strcmp(m.keys[r - 1], m.keys[r]) < 0);
	}
	assert_string_equal(m.keys[91], "zz/copy2.png");
	assert_int_equal(m.splits[91], FC_SPLIT_VAL);
	assert_int_equal(m.labels[91], 1);
	fc_matrix_free(&m);

	assert_int_equal(fc_store_load_items(s, id, 1u << FC_SPLIT_VAL, &m, &missing), 0);
	assert_int_equal(m.rows, 19); /* 0,5,...,85 and copy2 */
	assert_int_equal(missing, 2); /* 90 and 95 */
	for (size_t r = 0; r < m.rows; r++)
		assert_int_equal(m.splits[r], FC_SPLIT_VAL);
	fc_matrix_free(&m);
	assert_int_equal(fc_store_load_items(s, id, 1u << FC_SPLIT_TEST, &m, NULL), 0);
	assert_int_equal(m.rows, 0);
	fc_matrix_free(&m);
	fc_store_free(s);
}

/* The map starts tiny and must grow; a cap below the need is a clean FULL. */
static void test_map_growth_and_cap(void **state)
{
	(void)state;
	fc_store_opts o = { .map_size = 64 << 10, .nosync = 1 };
	fc_store *s = open_with("grow", &o, 512, FC_DTYPE_F32, FC_CODEC_RAW);
	for (int b = 0; b < 20; b++)
		assert_int_equal(append_batch(s, 1, 512, (uint64_t)b * 100, 100), 0);
	fc_store_free(s);

	fc_store_opts cap = { .map_size = 64 << 10, .max_map_size = 1 << 20, .nosync = 1 };
	s = open_with("cap", &cap, 512, FC_DTYPE_F32, FC_CODEC_RAW);
	int err = 0, b;
	for (b = 0; b < 100 && !err; b++)
		err = append_batch(s, 1, 512, (uint64_t)b * 50, 50);
	assert_int_equal(err, FC_ERR_FULL);
	assert_non_null(strstr(fc_store_errmsg(s), "cap"));
	int committed = b - 1;
	assert_true(committed >= 1);
	fc_matrix m;
	load_verified(s, &m);
	assert_int_equal(m.rows, (size_t)committed * 50);
	fc_matrix_free(&m);
	fc_store_free(s);
}

/* A real full disk: a 2 MiB tmpfs (needs root; skipped otherwise). */
static void test_full_disk(void **state)
{
	(void)state;
	char path[512];
	tmpdir(path, sizeof path, "tmpfs");
	mkdir(path, 0777);
	if (mount("featcache-test", path, "tmpfs", 0, "size=2m") != 0) {
		print_message("# cannot mount a tmpfs (%s): skipped\n", strerror(errno));
		skip();
	}
	char store[600];
	snprintf(store, sizeof store, "%s/store", path);
	fc_store *s;
	fc_store_opts o = { .create = 1, .map_size = 1 << 20 };
	assert_int_equal(fc_store_open(&s, store, &o), 0);
	add_extractor(s, 1, 1024, FC_DTYPE_F32, FC_CODEC_RAW);
	int err = 0, b;
	for (b = 0; b < 200 && !err; b++)
		err = append_batch(s, 1, 1024, (uint64_t)b * 20, 20);
	print_message("# full after %d batches: %s\n", b - 1, fc_store_errmsg(s));
	assert_int_equal(err, FC_ERR_FULL);
	int committed = b - 1;
	fc_store_free(s);

	/* Reopens, verifies clean, holds exactly the committed batches. */
	assert_int_equal(fc_store_open(&s, store, NULL), 0);
	fc_matrix m;
	load_verified(s, &m);
	assert_int_equal(m.rows, (size_t)committed * 20);
	float want[1024];
	vec_of(want, 1024, m.rows - 1);
	assert_memory_equal(m.data + (m.rows - 1) * 1024, want, sizeof want);
	fc_matrix_free(&m);
	fc_store_free(s);
	umount(path);
}

/* Damage records through raw LMDB; every read path must say CORRUPT with the key. */
static void test_corrupt_chunks(void **state)
{
	(void)state;
	fc_store *s = open_with("corrupt", NULL, 64, FC_DTYPE_F16, FC_CODEC_SHUFFLE_ZSTD);
	for (int b = 0; b < 4; b++)
		assert_int_equal(append_batch(s, 1, 64, (uint64_t)b * 16, 16), 0);
	struct reports r;
	assert_int_equal(verify_count(s, &r), 0);
	fc_store_free(s);

	char path[512], feat[64], index[64];
	tmpdir(path, sizeof path, "corrupt");
	db_name(feat, "feat", 1);
	db_name(index, "index", 1);
	uint8_t key[8], id[FC_HASH_LEN], h[FC_HASH_LEN];
	ex_id(id, 1);
	size_t len;
	float v[64];

	/* 1. A flipped byte in the payload of chunk 1. */
	chunk_key(key, 1);
	uint8_t *orig = raw_get(path, feat, key, 8, &len);
	uint8_t *bad = malloc(len);
	memcpy(bad, orig, len);
	bad[len - 5] ^= 0x10;
	raw_put(path, feat, key, 8, bad, len);
	assert_int_equal(fc_store_open(&s, path, NULL), 0);
	hash_of(h, 20);
	assert_int_equal(fc_store_get(s, id, h, v, 64), FC_ERR_CORRUPT);
	assert_non_null(strstr(fc_store_errmsg(s), "chunk 1"));
	hash_of(h, 3);
	assert_int_equal(fc_store_get(s, id, h, v, 64), 0); /* other chunks still read */
	fc_matrix m;
	assert_int_equal(fc_store_load_all(s, id, &m), FC_ERR_CORRUPT);
	assert_non_null(strstr(fc_store_errmsg(s), "chunk 1"));
	assert_int_equal(verify_count(s, &r), FC_ERR_CORRUPT);
	assert_true(r.n >= 1);
	assert_non_null(strstr(r.first, "chunk 1"));
	fc_store_free(s);

	/* 2. Truncated. */
	raw_put(path, feat, key, 8, orig, len / 2);
	assert_int_equal(fc_store_open(&s, path, NULL), 0);
	assert_int_equal(fc_store_load_all(s, id, &m), FC_ERR_CORRUPT);
	assert_int_equal(verify_count(s, &r), FC_ERR_CORRUPT);
	fc_store_free(s);

	/* 3. Wrong magic, then a newer chunk version. */
	memcpy(bad, orig, len);
	bad[0] = 'X';
	raw_put(path, feat, key, 8, bad, len);
	assert_int_equal(fc_store_open(&s, path, NULL), 0);
	assert_int_equal(fc_store_load_all(s, id, &m), FC_ERR_CORRUPT);
	fc_store_free(s);
	memcpy(bad, orig, len);
	bad[4] = 2;
	raw_put(path, feat, key, 8, bad, len);
	assert_int_equal(fc_store_open(&s, path, NULL), 0);
	assert_int_equal(fc_store_load_all(s, id, &m), FC_ERR_VERSION);
	assert_int_equal(verify_count(s, &r), FC_ERR_CORRUPT);
	fc_store_free(s);
	raw_put(path, feat, key, 8, orig, len);

	/* 4. An index entry that points past its chunk, and one at a missing chunk. */
	hash_of(h, 5);
	uint8_t rec[2] = { 0, 40 }; /* format 2: varint chunk id, varint slot */
	raw_put(path, index, h, FC_HASH_LEN, rec, 2);
	assert_int_equal(fc_store_open(&s, path, NULL), 0);
	assert_int_equal(fc_store_get(s, id, h, v, 64), FC_ERR_CORRUPT);
	assert_non_null(strstr(fc_store_errmsg(s), "slot 40 of 16"));
	assert_int_equal(fc_store_load_all(s, id, &m), FC_ERR_CORRUPT);
	assert_non_null(strstr(fc_store_errmsg(s), "slot 40 of 16"));
	assert_int_equal(verify_count(s, &r), FC_ERR_CORRUPT);
	assert_int_equal(r.n, 1);
	assert_non_null(strstr(r.first, "points past chunk 0 (slot 40 of 16)"));
	fc_store_free(s);
	rec[0] = 77;
	rec[1] = 0;
	raw_put(path, index, h, FC_HASH_LEN, rec, 2);
	assert_int_equal(fc_store_open(&s, path, NULL), 0);
	assert_int_equal(verify_count(s, &r), FC_ERR_CORRUPT);
	assert_non_null(strstr(r.first, "does not exist"));
	assert_int_equal(fc_store_load_all(s, id, &m), FC_ERR_CORRUPT);
	fc_store_free(s);

	/* 5. An index entry that points at the wrong slot of a sound chunk. */
	rec[0] = 0;
	rec[1] = 6;
	raw_put(path, index, h, FC_HASH_LEN, rec, 2);
	assert_int_equal(fc_store_open(&s, path, NULL), 0);
	assert_int_equal(fc_store_get(s, id, h, v, 64), FC_ERR_CORRUPT);
	assert_int_equal(verify_count(s, &r), FC_ERR_CORRUPT);
	assert_non_null(strstr(r.first, "another content hash"));
	fc_store_free(s);

	/* 6. A malformed item record. */
	rec[1] = 5;
	raw_put(path, index, h, FC_HASH_LEN, rec, 2);
	raw_put(path, "items", "broken.png", 10, "short", 5);
	assert_int_equal(fc_store_open(&s, path, NULL), 0);
	assert_int_equal(verify_count(s, &r), FC_ERR_CORRUPT);
	assert_int_equal(r.n, 1);
	assert_non_null(strstr(r.first, "items/broken.png"));
	fc_store_free(s);
	free(orig);
	free(bad);
}

/* Child appends batches forever, reporting each commit on a pipe; the parent
 * kills it with SIGKILL at some point during a batch. */
static void run_writer(const char *path, int fd, uint32_t dim, size_t batch)
{
	fc_store *s;
	fc_store_opts o = { 0 };
	if (fc_store_open(&s, path, &o))
		_exit(3);
	for (uint64_t b = 0;; b++) {
		if (append_batch(s, 1, dim, b * batch, batch))
			_exit(4);
		if (write(fd, &b, sizeof b) != sizeof b)
			_exit(5);
	}
}

static void test_sigkill_mid_batch(void **state)
{
	(void)state;
	const uint32_t dim = 256;
	const size_t batch = 200;
	for (int round = 0; round < 4; round++) {
		char name[32], path[512];
		snprintf(name, sizeof name, "kill%d", round);
		fc_store *s = open_with(name, NULL, dim, FC_DTYPE_F32, FC_CODEC_ZSTD);
		fc_store_free(s);
		tmpdir(path, sizeof path, name);
		int fds[2];
		assert_int_equal(pipe(fds), 0);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(fds[0]);
			run_writer(path, fds[1], dim, batch);
		}
		close(fds[1]);
		/* Let a few batches commit, then kill at a varying point of the next. */
		uint64_t b = 0, seen = 0;
		for (int i = 0; i < 3 + round; i++) {
			assert_int_equal(read(fds[0], &b, sizeof b), (ssize_t)sizeof b);
			seen = b + 1;
		}
		struct timespec ts = { 0, (long)testlib_below(20000000) };
		nanosleep(&ts, NULL);
		kill(pid, SIGKILL);
		int status;
		waitpid(pid, &status, 0);
		assert_true(WIFSIGNALED(status));
		close(fds[0]);

		assert_int_equal(fc_store_open(&s, path, NULL), 0);
		fc_matrix m;
		load_verified(s, &m);
		/* Whole batches only, every reported commit present, each vector right. */
		assert_int_equal(m.rows % batch, 0);
		assert_true(m.rows >= seen * batch);
		for (size_t i = 0; i < m.rows; i++)
			expect_row(&m, i, i);
		print_message("# round %d: %zu batches reported, %zu in store\n", round, (size_t)seen,
			      m.rows / batch);
		fc_matrix_free(&m);
		fc_store_free(s);
	}
}

/* A reader in this process loads again and again while another process
 * appends: every load must be a consistent snapshot (whole batches, right
 * vectors), and the loads must see the store grow. */
static void test_snapshot_two_processes(void **state)
{
	(void)state;
	const uint32_t dim = 128;
	const size_t batch = 64;
	fc_store *s = open_with("snapshot", NULL, dim, FC_DTYPE_F16, FC_CODEC_SHUFFLE_ZSTD);
	assert_int_equal(append_batch(s, 1, dim, 0, batch), 0);
	char path[512];
	tmpdir(path, sizeof path, "snapshot");
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	pid_t pid = fork();
	if (pid == 0) {
		close(fds[0]);
		fc_store *w;
		fc_store_opts o = { .nosync = 1, .map_size = 256 << 10 }; /* small map: forces resizes */
		if (fc_store_open(&w, path, &o))
			_exit(3);
		for (uint64_t b = 1; b <= 300; b++)
			if (append_batch(w, 1, dim, b * batch, batch))
				_exit(4);
		fc_store_free(w);
		_exit(0);
	}
	close(fds[1]);
	uint8_t id[FC_HASH_LEN];
	ex_id(id, 1);
	size_t last = 0, loads = 0, grew = 0;
	int status = 0, done = 0;
	while (!done) {
		done = waitpid(pid, &status, WNOHANG) == pid;
		fc_matrix m;
		int err = fc_store_load_all(s, id, &m);
		if (err)
			fail_msg("load during append: %s", fc_store_errmsg(s));
		assert_int_equal(m.rows % batch, 0);
		assert_true(m.rows >= last);
		grew += m.rows > last;
		last = m.rows;
		loads++;
		float want[128];
		for (size_t i = 0; i < m.rows; i += 7) {
			vec_of(want, dim, i);
			for (uint32_t j = 0; j < dim; j++)
				assert_true(fabsf(m.data[i * dim + j] - want[j]) <= want[j] / 1024 + 1e-7f);
		}
		fc_matrix_free(&m);
	}
	close(fds[0]);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	print_message("# %zu loads while appending, %zu saw growth, final %zu rows\n", loads, grew, last);
	fc_matrix m;
	assert_int_equal(fc_store_load_all(s, id, &m), 0);
	assert_int_equal(m.rows, 301 * batch);
	fc_matrix_free(&m);
	fc_store_free(s);
}

static void test_gc(void **state)
{
	(void)state;
	const uint32_t dim = 40;
	fc_store *s = open_with("gc", NULL, dim, FC_DTYPE_F32, FC_CODEC_ZSTD);
	add_extractor(s, 2, dim, FC_DTYPE_U8, FC_CODEC_ZSTD);
	put_items(s, 0, 60, 3);
	for (int b = 0; b < 3; b++) {
		assert_int_equal(append_batch(s, 1, dim, (uint64_t)b * 20, 20), 0);
		assert_int_equal(append_batch(s, 2, dim, (uint64_t)b * 20, 20), 0);
	}
	uint8_t id1[FC_HASH_LEN], id2[FC_HASH_LEN];
	ex_id(id1, 1);
	ex_id(id2, 2);
	fc_matrix before2;
	assert_int_equal(fc_store_load_all(s, id2, &before2), 0);

	/* Remove all of batch 1 and every other item of batch 2. */
	char keys[40][32];
	const char *del[40];
	size_t nd = 0;
	for (int i = 20; i < 60; i++) {
		if (i >= 40 && i % 2)
			continue;
		snprintf(keys[nd], 32, "img/%06d.png", i);
		del[nd] = keys[nd];
		nd++;
	}
	assert_int_equal(fc_store_del_items(s, del, nd), 0);
	assert_int_equal(fc_store_put_error(s, "img/000020.png", "stale"), 0); /* an orphaned error */
	assert_int_equal(fc_store_put_error(s, "img/000001.png", "kept"), 0);

	fc_gc_stats g;
	assert_int_equal(fc_store_gc(s, &g), 0);
	assert_int_equal(g.index_dropped, 2 * 30);
	assert_int_equal(g.chunks_dropped, 2);
	assert_int_equal(g.chunks_rewritten, 2);
	assert_int_equal(g.slots_dropped, 2 * 30);
	assert_int_equal(g.errors_dropped, 1);
	assert_true(g.bytes_after < g.bytes_before);

	fc_matrix m;
	load_verified(s, &m);
	assert_int_equal(m.rows, 30);
	for (size_t i = 0; i < m.rows; i++)
		expect_row(&m, i, i < 20 ? i : 41 + 2 * (i - 20));
	fc_matrix_free(&m);
	/* u8 survives the rewrite to within float rounding of its codes. */
	assert_int_equal(fc_store_load_all(s, id2, &m), 0);
	assert_int_equal(m.rows, 30);
	for (size_t i = 20; i < m.rows; i++) {
		size_t item = 41 + 2 * (i - 20);
		for (uint32_t j = 0; j < dim; j++)
			assert_true(fabsf(m.data[i * dim + j] - before2.data[item * dim + j]) < 1e-5f);
	}
	fc_matrix_free(&m);
	fc_matrix_free(&before2);

	/* A second gc finds nothing to do. */
	assert_int_equal(fc_store_gc(s, &g), 0);
	assert_int_equal(g.index_dropped + g.chunks_rewritten + g.chunks_dropped + g.errors_dropped, 0);
	/* New batches after gc do not reuse chunk ids. */
	uint64_t cid;
	uint8_t h[1][FC_HASH_LEN];
	float v[40];
	hash_of(h[0], 1000);
	vec_of(v, dim, 1000);
	assert_int_equal(fc_store_append(s, id1, v, (const uint8_t(*)[FC_HASH_LEN])h, 1, &cid), 0);
	assert_int_equal(cid, 6);
	fc_store_free(s);
}

static void test_stats(void **state)
{
	(void)state;
	fc_store *s = open_with("stats", NULL, 2048, FC_DTYPE_F16, FC_CODEC_SHUFFLE_ZSTD);
	put_items(s, 0, 256, 8);
	for (int b = 0; b < 4; b++)
		assert_int_equal(append_batch(s, 1, 2048, (uint64_t)b * 64, 64), 0);
	fc_store_stats st;
	assert_int_equal(fc_store_stats_get(s, &st), 0);
	assert_int_equal(st.items, 256);
	assert_int_equal(st.labels, 8);
	assert_int_equal(st.n_extractors, 1);
	fc_store_ex_stats *x = &st.extractors[0];
	assert_int_equal(x->vectors, 256);
	assert_int_equal(x->slots, 256);
	assert_int_equal(x->chunks, 4);
	assert_int_equal(x->dim, 2048);
	assert_true(x->chunk_bytes < 256 * 2048 * 2);
	assert_true(x->disk_bytes >= x->chunk_bytes);
	assert_true(st.file_bytes >= st.used_bytes);
	print_message("# f16 shuffle-zstd: %.0f chunk bytes/vector, %.0f disk bytes/vector\n",
		      (double)x->chunk_bytes / 256, (double)x->disk_bytes / 256);
	free(st.extractors);
	fc_store_free(s);
}

/* ---- repair ---- */

/* What fc_store_repair reported (findings) and dropped. */
struct drops {
	struct reports r;
	int n;
	char first[256];
	uint64_t first_vectors, vectors;
};

static void collect_finding(void *ctx, const char *key, const char *problem)
{
	struct drops *d = ctx;
	collect(&d->r, key, problem);
}

static void collect_drop(void *ctx, const char *key, uint64_t vectors)
{
	struct drops *d = ctx;
	if (d->n++ == 0) {
		snprintf(d->first, sizeof d->first, "%s", key);
		d->first_vectors = vectors;
	}
	d->vectors += vectors;
}

/* A store of 64 items with f32 vectors in 4 chunks of 16 (lossless, so
 * rows compare exactly), with chunk 1 damaged, the index entry of item 50
 * pointing past its chunk and a truncated item record. */
static void make_damaged(const char *name, char *path, size_t cap)
{
	fc_store *s = open_with(name, NULL, 32, FC_DTYPE_F32, FC_CODEC_ZSTD);
	put_items(s, 0, 64, 4);
	for (int b = 0; b < 4; b++)
		assert_int_equal(append_batch(s, 1, 32, (uint64_t)b * 16, 16), 0);
	fc_store_free(s);
	tmpdir(path, cap, name);
	char feat[64], index[64];
	db_name(feat, "feat", 1);
	db_name(index, "index", 1);
	uint8_t key[8], h[FC_HASH_LEN];
	size_t len;
	chunk_key(key, 1);
	uint8_t *c = raw_get(path, feat, key, 8, &len);
	c[len - 3] ^= 0x40;
	raw_put(path, feat, key, 8, c, len);
	free(c);
	hash_of(h, 50);
	uint8_t rec[12] = { 3, 0, 0, 0, 0, 0, 0, 0, 99, 0, 0, 0 };
	raw_put(path, index, h, FC_HASH_LEN, rec, 12);
	raw_put(path, "items", "img/000007.png", 14, "short", 5);
}

static void test_repair(void **state)
{
	(void)state;
	char path[512], data[600];
	uint8_t id[FC_HASH_LEN], h[FC_HASH_LEN];
	struct reports r;
	struct drops d = { 0 };
	fc_repair_stats rs;
	fc_store_stats st;
	fc_damage found;
	fc_matrix m;
	fc_store *s;
	size_t len0, len1;
	uint64_t checked;
	ex_id(id, 1);

	/* A sound store: nothing dropped, nothing written. */
	s = open_with("repair-sound", NULL, 32, FC_DTYPE_F32, FC_CODEC_ZSTD);
	put_items(s, 0, 32, 2);
	assert_int_equal(append_batch(s, 1, 32, 0, 32), 0);
	tmpdir(path, sizeof path, "repair-sound");
	snprintf(data, sizeof data, "%s/data.mdb", path);
	uint8_t *before = testlib_read_file(data, &len0);
	assert_int_equal(fc_store_repair(s, collect_finding, collect_drop, &d, &rs), 0);
	assert_int_equal(d.n + d.r.n, 0);
	assert_int_equal(rs.found.problems + rs.chunks_dropped + rs.vectors_dropped + rs.items_dropped + rs.left, 0);
	assert_true(rs.checked > 0);
	assert_int_equal(fc_store_verify_note(s, collect, &r, &checked, &found), 0);
	assert_int_equal(found.problems, 0);
	fc_store_free(s);
	uint8_t *after = testlib_read_file(data, &len1);
	assert_int_equal(len0, len1);
	assert_memory_equal(before, after, len0);
	free(before);
	free(after);

	/* Verify finds and records the damage; stats show it. */
	make_damaged("repair", path, sizeof path);
	assert_int_equal(fc_store_open(&s, path, NULL), 0);
	assert_int_equal(fc_store_stats_get(s, &st), 0);
	assert_int_equal(st.damage.problems, 0); /* nothing on record yet */
	free(st.extractors);
	memset(&r, 0, sizeof r);
	assert_int_equal(fc_store_verify_note(s, collect, &r, &checked, &found), FC_ERR_CORRUPT);
	assert_int_equal(found.problems, 3);
	assert_int_equal(found.chunks, 1);
	assert_int_equal(found.vectors, 16 + 1);
	assert_int_equal(fc_store_stats_get(s, &st), 0);
	assert_int_equal(st.damage.problems, 3);
	assert_int_equal(st.damage.chunks, 1);
	assert_int_equal(st.damage.vectors, 17);
	assert_true(st.damage.when > 0);
	free(st.extractors);
	assert_int_equal(fc_store_load_all(s, id, &m), FC_ERR_CORRUPT);

	/* Repair drops the chunk with its 16 entries, the broken entry and the item. */
	memset(&d, 0, sizeof d);
	assert_int_equal(fc_store_repair(s, collect_finding, collect_drop, &d, &rs), 0);
	assert_int_equal(d.r.n, 3);
	assert_int_equal(rs.found.chunks, 1);
	assert_int_equal(rs.chunks_dropped, 1);
	assert_int_equal(rs.vectors_dropped, 17);
	assert_int_equal(rs.items_dropped, 1);
	assert_int_equal(rs.left, 0);
	assert_int_equal(d.n, 3);
	assert_non_null(strstr(d.first, "/chunk 1"));
	assert_int_equal(d.first_vectors, 16);
	assert_int_equal(d.vectors, 17);
	assert_int_equal(verify_count(s, &r), 0);
	assert_int_equal(fc_store_stats_get(s, &st), 0);
	assert_int_equal(st.damage.problems, 0);
	assert_int_equal(st.extractors[0].vectors, 64 - 17);
	assert_int_equal(st.extractors[0].chunks, 3);
	assert_int_equal(st.items, 63);
	free(st.extractors);

	/* What extract asks: exactly the dropped hashes are missing; the items stay. */
	for (uint64_t i = 0; i < 64; i++) {
		hash_of(h, i);
		assert_int_equal(fc_store_has(s, id, h), !((i >= 16 && i < 32) || i == 50));
	}
	fc_item it;
	assert_int_equal(fc_store_get_item(s, "img/000020.png", &it), 0);
	hash_of(h, 20);
	assert_memory_equal(it.hash, h, FC_HASH_LEN);
	assert_int_equal(fc_store_get_item(s, "img/000007.png", &it), FC_ERR_NOT_FOUND);

	/* Extracting them again gives the store back, every row exact. */
	assert_int_equal(append_batch(s, 1, 32, 16, 16), 0);
	assert_int_equal(append_batch(s, 1, 32, 50, 1), 0);
	load_verified(s, &m);
	assert_int_equal(m.rows, 64);
	for (size_t i = 0; i < m.rows; i++) {
		uint64_t item = 0; /* rows come in chunk order: the hash says which item */
		for (int b = 0; b < 8; b++)
			item = item << 8 | m.hashes[i][b];
		expect_row(&m, i, item);
	}
	fc_matrix_free(&m);
	fc_store_free(s);

	/* A second repair has nothing to do and writes nothing. */
	snprintf(data, sizeof data, "%s/data.mdb", path);
	before = testlib_read_file(data, &len0);
	assert_int_equal(fc_store_open(&s, path, NULL), 0);
	memset(&d, 0, sizeof d);
	assert_int_equal(fc_store_repair(s, collect_finding, collect_drop, &d, &rs), 0);
	assert_int_equal(d.n + d.r.n, 0);
	fc_store_free(s);
	after = testlib_read_file(data, &len1);
	assert_int_equal(len0, len1);
	assert_memory_equal(before, after, len0);
	free(before);
	free(after);

	/* What repair cannot fix (a label record) is left, recorded and said. */
	raw_put(path, "labels", "x", 1, "??", 2);
	assert_int_equal(fc_store_open(&s, path, NULL), 0);
	assert_int_equal(fc_store_repair(s, collect, NULL, &r, &rs), FC_ERR_CORRUPT); /* no drops: ctx is r */
	assert_int_equal(rs.left, 1);
	assert_int_equal(rs.chunks_dropped + rs.vectors_dropped + rs.items_dropped, 0);
	assert_non_null(strstr(fc_store_errmsg(s), "cannot fix"));
	assert_int_equal(fc_store_stats_get(s, &st), 0);
	assert_int_equal(st.damage.problems, 1);
	assert_int_equal(st.damage.chunks, 0);
	free(st.extractors);
	fc_store_free(s);

	/* A read-only handle verifies but cannot record or repair. */
	fc_store_opts ro = { .readonly = 1 };
	assert_int_equal(fc_store_open(&s, path, &ro), 0);
	assert_int_equal(verify_count(s, &r), FC_ERR_CORRUPT);
	assert_int_equal(fc_store_repair(s, NULL, NULL, NULL, &rs), FC_ERR_CORRUPT); /* nothing to drop, left 1 */
	fc_store_free(s);
}

/* A repair killed at any point leaves the store as it was or repaired,
 * never in between; a second repair finishes the job. */
static void test_repair_killed(void **state)
{
	(void)state;
	for (int round = 0; round < 4; round++) {
		char name[32], path[512];
		snprintf(name, sizeof name, "repair-kill%d", round);
		make_damaged(name, path, sizeof path);
		/* A fresh process (this program, see main): libgomp does not
		 * survive a fork after the parent used OpenMP, and repair does. */
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			execl("/proc/self/exe", "test_store", "--repair", path, (char *)NULL);
			_exit(5);
		}
		/* The repair takes some 10-50 ms here: kill before, during or after. */
		struct timespec ts = { 0, (long)testlib_below(80000000) };
		nanosleep(&ts, NULL);
		kill(pid, SIGKILL);
		int status;
		waitpid(pid, &status, 0);
		if (!WIFSIGNALED(status))
			assert_int_equal(WEXITSTATUS(status), 0);

		fc_store *s;
		struct reports r;
		assert_int_equal(fc_store_open(&s, path, NULL), 0);
		int err = verify_count(s, &r);
		print_message("# round %d: %s, verify finds %d problems\n", round,
			      WIFSIGNALED(status) ? "killed" : "finished", r.n);
		assert_true(err == 0 || err == FC_ERR_CORRUPT);
		assert_true(r.n == 0 || r.n == 3); /* all or nothing */
		fc_repair_stats rs;
		assert_int_equal(fc_store_repair(s, NULL, NULL, NULL, &rs), 0);
		assert_int_equal(rs.chunks_dropped, r.n ? 1 : 0);
		assert_int_equal(verify_count(s, &r), 0);
		uint8_t id[FC_HASH_LEN];
		fc_matrix m;
		ex_id(id, 1);
		assert_int_equal(fc_store_load_all(s, id, &m), 0);
		assert_int_equal(m.rows, 64 - 17);
		fc_matrix_free(&m);
		fc_store_free(s);
	}
}

/* A creation killed before its first commit (data.mdb empty, or an LMDB
 * environment with nothing in it) is finished by the next creating open,
 * and is no store for an open that may not create. */
static void test_interrupted_create(void **state)
{
	(void)state;
	char dir[1024], data[1100];
	fc_store *s = NULL;
	fc_store_opts create = { .create = 1 }, plain = { 0 };
	MDB_env *env;
	FILE *f;

	snprintf(dir, sizeof dir, "%s/interrupted-empty", tmproot);
	assert_int_equal(mkdir(dir, 0777), 0);
	snprintf(data, sizeof data, "%s/data.mdb", dir);
	assert_non_null(f = fopen(data, "wb"));
	fclose(f);
	assert_int_equal(fc_store_open(&s, dir, &plain), FC_ERR_NOT_STORE);
	fc_store_free(s);
	assert_int_equal(fc_store_open(&s, dir, &create), 0);
	fc_store_free(s);
	assert_int_equal(fc_store_open(&s, dir, &plain), 0);
	fc_store_free(s);

	snprintf(dir, sizeof dir, "%s/interrupted-env", tmproot);
	assert_int_equal(mkdir(dir, 0777), 0);
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_open(env, dir, 0, 0644), 0);
	mdb_env_close(env);
	assert_int_equal(fc_store_open(&s, dir, &plain), FC_ERR_NOT_STORE);
	fc_store_free(s);
	assert_int_equal(fc_store_open(&s, dir, &create), 0);
	fc_store_free(s);
	assert_int_equal(fc_store_open(&s, dir, &plain), 0);
	fc_store_free(s);
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--repair") == 0) {
		/* test_repair_killed's child: repair the store at argv[2]. */
		fc_store *s;
		int err = fc_store_open(&s, argv[2], NULL);
		if (!err)
			err = fc_store_repair(s, NULL, NULL, NULL, NULL);
		fc_store_free(s);
		return err ? 4 : 0;
	}
	testlib_seed("test_store");
	tmproot = testlib_tmpdir("test-store");
	printf("# dir %s\n", tmproot);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_reopen),
		cmocka_unit_test(test_durable_by_default),
		cmocka_unit_test(test_data_root),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_newer_format),
		cmocka_unit_test(test_extractors),
		cmocka_unit_test(test_append_load_all_dtypes),
		cmocka_unit_test(test_duplicates_and_batch_limits),
		cmocka_unit_test(test_items_labels_errors),
		cmocka_unit_test(test_store_batch),
		cmocka_unit_test(test_load_items),
		cmocka_unit_test(test_map_growth_and_cap),
		cmocka_unit_test(test_full_disk),
		cmocka_unit_test(test_corrupt_chunks),
		cmocka_unit_test(test_sigkill_mid_batch),
		cmocka_unit_test(test_snapshot_two_processes),
		cmocka_unit_test(test_gc),
		cmocka_unit_test(test_stats),
		cmocka_unit_test(test_repair),
		cmocka_unit_test(test_interrupted_create),
		cmocka_unit_test(test_repair_killed),
	};
	int failed = cmocka_run_group_tests(tests, NULL, NULL);
	if (!failed)
		testlib_rmtree(tmproot);
	free(tmproot);
	return failed;
}
