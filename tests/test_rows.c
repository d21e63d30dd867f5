/*
 * test_rows.c - features kept in the stored dtype and streamed, on real
 * stores in temp directories: rows gathered from f16, bf16 and u8 rows are
 * those a naive per-element loop computes, and bit-identical to the same
 * rows loaded as f32 (every dtype, raw and shuffled codecs); fill_rows
 * after a metadata-only load; the stream gives the same bits, evicts the
 * least recently used chunk and keeps its byte budget; kNN metrics and a
 * head's evaluation over compact or streamed rows equal those over f32;
 * and the refusals (a row out of range, a hash with no vector).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <xxhash.h>

#include "featcache/store.h"
#include "store/chunk.h"
#include "featcache/train.h"
#include "tests/testlib.h"

#define DIM 37   /* odd: the conversions' tails run */
#define BATCH 16 /* vectors per chunk */
#define N 200

static char *tmproot;
static const uint8_t EX[FC_HASH_LEN] = { 0x71, 0x05, 0xee };

static void hash_of(uint8_t h[FC_HASH_LEN], size_t i)
{
	memset(h, 0xa5, FC_HASH_LEN);
	for (int b = 0; b < 8; b++)
		h[b] = (uint8_t)(i >> (8 * b));
}

/* A store of N items "<i>-c<i%5>.png" (split i % 3), their vectors
 * written BATCH to a chunk in item order; vecs (N, DIM) are the f32 values
 * given to the store. */
static fc_store *make_store(const char *name, fc_dtype dtype, fc_codec codec, float *vecs)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s", tmproot, name);
	fc_store_opts o = { .create = 1, .nosync = 1 };
	fc_store *s;
	if (fc_store_open(&s, path, &o) != 0)
		fail_msg("open %s: %s", path, fc_store_errmsg(s));
	fc_extractor ex = { .dim = DIM, .dtype = dtype, .codec = codec, .level = 3 };
	memcpy(ex.id, EX, FC_HASH_LEN);
	assert_int_equal(fc_store_put_extractor(s, &ex), 0);
	const char *names[5] = { "c0", "c1", "c2", "c3", "c4" };
	uint32_t ids[5];
	assert_int_equal(fc_store_label_ids(s, names, 5, ids), 0);
	for (size_t i = 0; i < N * DIM; i++)
		vecs[i] = testlib_float(-3.0f, 5.0f);
	uint8_t hashes[N][FC_HASH_LEN];
	for (size_t i = 0; i < N; i++) {
		char key[64];
		snprintf(key, sizeof key, "%04zu-c%zu.png", i, i % 5); /* key order is item order */
		fc_item it = { .key = key, .size = 10 + i, .label = ids[i % 5], .split = (uint8_t)(i % 3),
			       .status = FC_ITEM_OK };
		hash_of(it.hash, i);
		memcpy(hashes[i], it.hash, FC_HASH_LEN);
		assert_int_equal(fc_store_put_items(s, &it, 1), 0);
	}
	for (size_t i = 0; i < N; i += BATCH) {
		size_t n = N - i < BATCH ? N - i : BATCH;
		if (fc_store_append(s, EX, vecs + i * DIM, (const uint8_t(*)[FC_HASH_LEN])hashes[i], n, NULL) != 0)
			fail_msg("append: %s", fc_store_errmsg(s));
	}
	return s;
}

/* The naive references: one element at a time, from the format's
 * definition (IEEE binary16; bf16 the upper half of a binary32; u8
 * lo + q * step). */
static float f16_ref(uint16_t h)
{
	int sign = h >> 15, e = (h >> 10) & 31, m = h & 1023;
	float v = e == 0 ? ldexpf((float)m, -24) : ldexpf((float)(1024 + m), e - 25);
	return sign ? -v : v;
}

static float bf16_ref(uint16_t h)
{
	uint32_t x = (uint32_t)h << 16;
	float v;
	memcpy(&v, &x, 4);
	return v;
}

static float elem_ref(const fc_rows *x, size_t r, size_t d)
{
	switch (x->type) {
	case FC_ROW_F32: return ((const float *)x->data)[r * x->dim + d];
	case FC_ROW_F16: return f16_ref(((const uint16_t *)x->data)[r * x->dim + d]);
	case FC_ROW_BF16: return bf16_ref(((const uint16_t *)x->data)[r * x->dim + d]);
	case FC_ROW_U8: {
		float lo = x->scale[2 * r], step = x->scale[2 * r + 1];
		return lo + (float)((const uint8_t *)x->data)[r * x->dim + d] * step;
	}
	}
	return NAN;
}

static void check_dtype(fc_dtype dtype, fc_codec codec)
{
	char name[64];
	snprintf(name, sizeof name, "st-%s-%s", fc_dtype_name(dtype), fc_codec_name(codec));
	float *vecs = malloc(N * DIM * sizeof *vecs);
	fc_store *s = make_store(name, dtype, codec, vecs);
	fc_matrix f, p;
	assert_int_equal(fc_store_load_items(s, EX, FC_SPLIT_MASK_ALL, &f, NULL), 0);
	assert_int_equal(fc_store_load_items_as(s, EX, FC_SPLIT_MASK_ALL, FC_LOAD_STORED, &p, NULL), 0);
	assert_int_equal(p.rows, N);
	assert_int_equal((int)p.type, (int)dtype);
	assert_true(dtype == FC_DTYPE_F32 ? p.data != NULL : p.data == NULL && p.packed != NULL);
	fc_rows x = fc_matrix_rows(&p);
	assert_int_equal(x.n, N);
	/* every row in a random order, gathered, against the naive loop and the f32 load */
	uint32_t idx[N];
	for (size_t i = 0; i < N; i++)
		idx[i] = (uint32_t)i;
	for (size_t i = N - 1; i > 0; i--) {
		size_t j = testlib_below(i + 1);
		uint32_t t = idx[i];
		idx[i] = idx[j];
		idx[j] = t;
	}
	float *got = malloc(N * DIM * sizeof *got);
	assert_int_equal(fc_rows_gather(got, &x, idx, N), 0);
	for (size_t i = 0; i < N; i++) {
		assert_memory_equal(got + i * DIM, f.data + (size_t)idx[i] * DIM, DIM * sizeof(float));
		for (size_t d = 0; d < DIM; d++) {
			float want = elem_ref(&x, idx[i], d);
			assert_memory_equal(&got[i * DIM + d], &want, sizeof want);
		}
	}
	/* a range, and the whole matrix through the parallel path */
	assert_int_equal(fc_rows_range(got, &x, 0, N), 0);
	assert_memory_equal(got, f.data, N * DIM * sizeof(float));
	/* lossy dtypes stay near what was written */
	if (dtype == FC_DTYPE_F16)
		assert_true(testlib_rel_err(got, vecs, N * DIM) < 1e-3);
	uint32_t bad = N;
	assert_int_equal(fc_rows_gather(got, &x, &bad, 1), FC_ERR_INVALID);
	assert_int_equal(fc_rows_range(got, &x, N - 1, 2), FC_ERR_INVALID);
	free(got);
	free(vecs);
	fc_matrix_free(&f);
	fc_matrix_free(&p);
	fc_store_free(s);
}

static void test_gather_every_dtype(void **state)
{
	(void)state;
	const fc_dtype dt[] = { FC_DTYPE_F32, FC_DTYPE_F16, FC_DTYPE_BF16, FC_DTYPE_U8 };
	const fc_codec cd[] = { FC_CODEC_RAW, FC_CODEC_ZSTD, FC_CODEC_SHUFFLE_ZSTD };
	for (size_t i = 0; i < 4; i++)
		for (size_t j = 0; j < 3; j++)
			check_dtype(dt[i], cd[j]);
}

/* A metadata-only load, thinned and reversed, then its features. */
static void test_fill_rows(void **state)
{
	(void)state;
	float *vecs = malloc(N * DIM * sizeof *vecs);
	fc_store *s = make_store("fill", FC_DTYPE_U8, FC_CODEC_SHUFFLE_ZSTD, vecs);
	fc_matrix f, m;
	assert_int_equal(fc_store_load_items(s, EX, FC_SPLIT_MASK_ALL, &f, NULL), 0);
	assert_int_equal(fc_store_load_items_as(s, EX, FC_SPLIT_MASK_ALL, FC_LOAD_NONE, &m, NULL), 0);
	assert_null(m.data);
	assert_null(m.packed);
	assert_int_equal(fc_matrix_rows(&m).n, 0);
	size_t w = 0;
	for (size_t r = N; r-- > 0;)
		if (r % 3)
			memcpy(m.hashes[w++], f.hashes[r], FC_HASH_LEN);
	m.rows = w;
	assert_int_equal(fc_store_fill_rows(s, EX, &m, FC_LOAD_STORED), 0);
	fc_rows x = fc_matrix_rows(&m);
	float row[DIM];
	w = 0;
	for (size_t r = N; r-- > 0;) {
		if (!(r % 3))
			continue;
		uint32_t i = (uint32_t)w++;
		assert_int_equal(fc_rows_gather(row, &x, &i, 1), 0);
		assert_memory_equal(row, f.data + r * DIM, sizeof row);
	}
	/* a hash with no vector */
	fc_matrix_free(&m);
	assert_int_equal(fc_store_load_items_as(s, EX, FC_SPLIT_MASK_ALL, FC_LOAD_NONE, &m, NULL), 0);
	m.hashes[3][15] ^= 1;
	assert_int_equal(fc_store_fill_rows(s, EX, &m, FC_LOAD_STORED), FC_ERR_NOT_FOUND);
	assert_non_null(strstr(fc_store_errmsg(s), "no vector for content"));
	assert_null(m.packed);
	fc_matrix_free(&m);
	fc_matrix_free(&f);
	fc_store_free(s);
	free(vecs);
}

/* The bytes the stream's cache takes for a chunk of BATCH vectors: their
 * hashes and the chunk's raw payload in its dtype. */
static size_t entry_of(fc_dtype dtype)
{
	size_t elem = dtype == FC_DTYPE_F32 ? 4 : dtype == FC_DTYPE_U8 ? 1 : 2;
	return BATCH * (FC_HASH_LEN + DIM * elem + (dtype == FC_DTYPE_U8 ? 8 : 0));
}

/* Streamed rows are the loaded rows, in every dtype, with any cache size. */
static void check_stream(fc_dtype dtype)
{
	char name[64];
	snprintf(name, sizeof name, "stream-%s", fc_dtype_name(dtype));
	float *vecs = malloc(N * DIM * sizeof *vecs);
	fc_store *s = make_store(name, dtype, FC_CODEC_SHUFFLE_ZSTD, vecs);
	fc_matrix f;
	assert_int_equal(fc_store_load_items(s, EX, FC_SPLIT_MASK_ALL, &f, NULL), 0);
	const size_t entry = entry_of(dtype), caches[] = { 1, 3 * entry, (size_t)1 << 30 };
	float *got = malloc(N * DIM * sizeof *got);
	uint32_t idx[2 * N];
	for (size_t c = 0; c < 3; c++) {
		fc_stream *r;
		assert_int_equal(fc_stream_open(&r, s, EX, (const uint8_t(*)[FC_HASH_LEN])f.hashes, f.rows, caches[c]), 0);
		fc_rows x = fc_stream_rows(r);
		assert_int_equal(x.n, N);
		assert_int_equal(x.dim, DIM);
		for (int round = 0; round < 3; round++) {
			size_t n = 1 + testlib_below(2 * N); /* more rows than chunks: repeats */
			for (size_t i = 0; i < n; i++)
				idx[i] = (uint32_t)testlib_below(N);
			float *g = malloc(n * DIM * sizeof *g);
			assert_int_equal(fc_rows_gather(g, &x, idx, n), 0);
			for (size_t i = 0; i < n; i++)
				assert_memory_equal(g + i * DIM, f.data + (size_t)idx[i] * DIM, DIM * sizeof(float));
			free(g);
		}
		assert_int_equal(fc_rows_range(got, &x, 0, N), 0);
		assert_memory_equal(got, f.data, N * DIM * sizeof(float));
		size_t bytes;
		fc_stream_stats(r, NULL, NULL, &bytes);
		/* never past the budget, but for the one chunk always kept */
		assert_true(bytes <= (caches[c] > entry ? caches[c] : entry));
		uint32_t bad = N;
		assert_int_equal(fc_stream_fetch(r, got, &bad, 1), FC_ERR_INVALID);
		fc_stream_free(r);
	}
	/* a hash with no vector */
	f.hashes[7][15] ^= 1;
	fc_stream *r = NULL;
	assert_int_equal(fc_stream_open(&r, s, EX, (const uint8_t(*)[FC_HASH_LEN])f.hashes, f.rows, 1 << 20),
			 FC_ERR_NOT_FOUND);
	assert_null(r);
	free(got);
	fc_matrix_free(&f);
	fc_store_free(s);
	free(vecs);
}

static void test_stream_equals_load(void **state)
{
	(void)state;
	check_stream(FC_DTYPE_F32);
	check_stream(FC_DTYPE_F16);
	check_stream(FC_DTYPE_BF16);
	check_stream(FC_DTYPE_U8);
}

/* The cache evicts the least recently used chunk and holds what it says. */
static void test_stream_lru(void **state)
{
	(void)state;
	float *vecs = malloc(N * DIM * sizeof *vecs);
	fc_store *s = make_store("lru", FC_DTYPE_BF16, FC_CODEC_ZSTD, vecs);
	uint8_t hashes[N][FC_HASH_LEN];
	for (size_t i = 0; i < N; i++)
		hash_of(hashes[i], i); /* row i is in chunk i / BATCH */
	const size_t entry = entry_of(FC_DTYPE_BF16);
	fc_stream *r;
	assert_int_equal(fc_stream_open(&r, s, EX, (const uint8_t(*)[FC_HASH_LEN])hashes, N, 2 * entry), 0);
	float row[DIM];
	uint64_t reads, hits;
	size_t bytes;
	/* chunks A=0, B=1, C=2 by their first rows */
	const struct {
		uint32_t row;
		uint64_t reads, hits;
	} steps[] = {
		{ 0, 1, 0 },          /* A read */
		{ BATCH, 2, 0 },      /* B read: A, B cached */
		{ 3, 2, 1 },          /* A hit: A now the most recent */
		{ 2 * BATCH, 3, 1 },  /* C read: evicts B, the least recent */
		{ 5, 3, 2 },          /* A still there */
		{ BATCH + 1, 4, 2 },  /* B read again: evicts C */
		{ 2 * BATCH + 2, 5, 2 }, /* C read again: evicts A */
		{ 7, 6, 2 },          /* A read again */
	};
	for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
		assert_int_equal(fc_stream_fetch(r, row, &steps[i].row, 1), 0);
		for (size_t d = 0; d < DIM; d++) /* bf16 keeps 8 bits of mantissa */
			assert_true(fabsf(row[d] - vecs[steps[i].row * DIM + d]) <= fabsf(vecs[steps[i].row * DIM + d]) / 128);
		fc_stream_stats(r, &reads, &hits, &bytes);
		assert_int_equal(reads, steps[i].reads);
		assert_int_equal(hits, steps[i].hits);
		assert_int_equal(bytes, (steps[i].reads < 2 ? 1 : 2) * entry);
	}
	fc_stream_free(r);
	fc_store_free(s);
	free(vecs);
}

/* kNN metrics, raw and through a head, over compact and streamed rows
 * equal those over the f32 matrix. */
static void test_eval_over_rows(void **state)
{
	(void)state;
	float *vecs = malloc(N * DIM * sizeof *vecs);
	fc_store *s = make_store("eval", FC_DTYPE_F16, FC_CODEC_SHUFFLE_ZSTD, vecs);
	fc_matrix f, p;
	assert_int_equal(fc_store_load_items(s, EX, FC_SPLIT_MASK_ALL, &f, NULL), 0);
	assert_int_equal(fc_store_load_items_as(s, EX, FC_SPLIT_MASK_ALL, FC_LOAD_STORED, &p, NULL), 0);
	fc_stream *r;
	assert_int_equal(fc_stream_open(&r, s, EX, (const uint8_t(*)[FC_HASH_LEN])f.hashes, f.rows, 1000), 0);
	fc_rows xs[2] = { fc_matrix_rows(&p), fc_stream_rows(r) };
	fc_head_config hc = { .in_dim = DIM, .hidden = 24, .out_dim = 8, .layers = 2 };
	fc_head *h;
	assert_int_equal(fc_head_new(&h, &hc, 64, 3), 0);
	for (int self = 0; self < 2; self++) {
		fc_metrics want, got, want_h, got_h;
		size_t nq = self ? N : 50;
		assert_int_equal(fc_eval_knn(&want, f.data, f.labels, nq, f.data, f.labels, N, DIM, 10, self), 0);
		assert_int_equal(fc_eval_features(&want_h, h, f.data, f.labels, nq, f.data, f.labels, N, DIM, 10, self), 0);
		for (int k = 0; k < 2; k++) {
			fc_rows q = xs[k];
			q.n = nq; /* the first nq rows */
			assert_int_equal(fc_eval_knn_rows(&got, NULL, &q, f.labels, &xs[k], f.labels, 10, self), 0);
			assert_memory_equal(&got, &want, sizeof got);
			assert_int_equal(fc_eval_rows(&got_h, h, &q, f.labels, &xs[k], f.labels, 10, self), 0);
			assert_memory_equal(&got_h, &want_h, sizeof got_h);
		}
	}
	fc_head_free(h);
	fc_stream_free(r);
	fc_matrix_free(&f);
	fc_matrix_free(&p);
	fc_store_free(s);
	free(vecs);
}

/* An index larger than the kNN's block is searched a block at a time when
 * the lists are short: the top 5 are the first 5 of the top 600 (long
 * lists make it pack the index whole), ties and all, for queries of their
 * own and for the index searched among itself. */
static void test_knn_blocks(void **state)
{
	(void)state;
	const size_t ni = 17000, d = 64, kbig = 600;
	float *x = malloc(ni * d * sizeof *x);
	for (size_t i = 0; i < ni * d; i++)
		x[i] = (float)testlib_int(-1, 1) * (i % 7 == 0 ? 2.0f : 1.0f); /* many exact ties */
	uint32_t *small = malloc(ni * 5 * sizeof *small), *big = malloc(ni * kbig * sizeof *big);
	float *ssim = malloc(ni * 5 * sizeof *ssim), *bsim = malloc(ni * kbig * sizeof *bsim);
	size_t *cs = malloc(ni * sizeof *cs), *cb = malloc(ni * sizeof *cb);
	for (int self = 0; self < 2; self++) {
		size_t nq = self ? ni : 90;
		const float *q = self ? x : x + 1000 * d;
		assert_int_equal(fc_knn(small, ssim, cs, q, nq, x, ni, d, 5, self), 0);
		assert_int_equal(fc_knn(big, bsim, cb, q, nq, x, ni, d, kbig, self), 0);
		for (size_t i = 0; i < nq; i++) {
			assert_int_equal(cs[i], 5);
			assert_int_equal(cb[i], kbig);
			assert_memory_equal(small + i * 5, big + i * kbig, 5 * sizeof *small);
			assert_memory_equal(ssim + i * 5, bsim + i * kbig, 5 * sizeof *ssim);
			for (size_t j = 0; self && j < 5; j++)
				assert_int_not_equal(small[i * 5 + j], i);
		}
	}
	free(x);
	free(small);
	free(big);
	free(ssim);
	free(bsim);
	free(cs);
	free(cb);
}

/* Recompute a chunk's checksum (chunk.h) after changing its bytes, so
 * that only the value checks can catch the change. */
static void reseal(uint8_t *p, size_t len)
{
	uint64_t h = XXH3_64bits_withSeed(p + FC_CHUNK_HEADER, len - FC_CHUNK_HEADER, XXH3_64bits(p, 24));
	for (int b = 0; b < 8; b++)
		p[24 + b] = (uint8_t)(h >> (8 * b));
}

/* fci_chunk_decode_raw refuses what fci_chunk_decode refuses: an infinite
 * half, a u8 pair the encoder never writes, a buffer too small. */
static void test_decode_raw_checks(void **state)
{
	(void)state;
	fci_chunk_ctx *ctx = fci_chunk_ctx_new();
	float v[4 * 8];
	uint8_t hashes[4][FC_HASH_LEN] = { { 1 }, { 2 }, { 3 }, { 4 } };
	for (size_t i = 0; i < 32; i++)
		v[i] = (float)i - 7.5f;
	uint8_t chunk[1024], raw[512];
	float dec[32];
	size_t len;
	const size_t off = FC_CHUNK_HEADER + 4 * FC_HASH_LEN;
	/* f16, raw codec: element 5 made +inf */
	assert_int_equal(fci_chunk_encode(ctx, chunk, sizeof chunk, &len, v, (const uint8_t(*)[FC_HASH_LEN])hashes, 8, 4,
					  FC_DTYPE_F16, FC_CODEC_RAW, 0), 0);
	assert_int_equal(fci_chunk_decode_raw(ctx, chunk, len, raw, sizeof raw), 0);
	assert_int_equal(fci_chunk_decode_raw(ctx, chunk, len, raw, 63), FC_ERR_INVALID);
	chunk[off + 10] = 0x00;
	chunk[off + 11] = 0x7c;
	reseal(chunk, len);
	assert_int_equal(fci_chunk_decode(ctx, chunk, len, dec, 32), FC_ERR_CORRUPT);
	assert_int_equal(fci_chunk_decode_raw(ctx, chunk, len, raw, sizeof raw), FC_ERR_CORRUPT);
	/* u8, raw codec: vector 2's step made negative */
	assert_int_equal(fci_chunk_encode(ctx, chunk, sizeof chunk, &len, v, (const uint8_t(*)[FC_HASH_LEN])hashes, 8, 4,
					  FC_DTYPE_U8, FC_CODEC_RAW, 0), 0);
	assert_int_equal(fci_chunk_decode_raw(ctx, chunk, len, raw, sizeof raw), 0);
	chunk[off + 8 * 2 + 7] |= 0x80; /* the sign of pair 2's step */
	reseal(chunk, len);
	assert_int_equal(fci_chunk_decode(ctx, chunk, len, dec, 32), FC_ERR_CORRUPT);
	assert_int_equal(fci_chunk_decode_raw(ctx, chunk, len, raw, sizeof raw), FC_ERR_CORRUPT);
	fci_chunk_ctx_free(ctx);
}

static void test_sizes(void **state)
{
	(void)state;
	assert_int_equal(fc_rows_bytes(FC_ROW_F16, 1000, 768), 1000 * 768 * 2);
	assert_int_equal(fc_rows_bytes(FC_ROW_U8, 10, 7), 10 * 7 + 10 * 8);
	assert_int_equal(fc_rows_bytes(FC_ROW_F32, SIZE_MAX / 2, 3), SIZE_MAX);
	assert_int_equal(fc_rows_bytes(FC_ROW_U8, SIZE_MAX / 4, 1), SIZE_MAX);
	assert_int_equal(fc_rows_bytes((fc_row_type)9, 1, 1), SIZE_MAX);
	assert_int_equal(fc_row_type_size(FC_ROW_BF16), 2);
}

int main(void)
{
	testlib_seed("test_rows");
	tmproot = testlib_tmpdir("test-rows");
	printf("# dir %s\n", tmproot);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_gather_every_dtype), cmocka_unit_test(test_fill_rows),
		cmocka_unit_test(test_stream_equals_load), cmocka_unit_test(test_stream_lru),
		cmocka_unit_test(test_eval_over_rows),     cmocka_unit_test(test_knn_blocks),
		cmocka_unit_test(test_decode_raw_checks), cmocka_unit_test(test_sizes),
	};
	int failed = cmocka_run_group_tests(tests, NULL, NULL);
	if (!failed)
		testlib_rmtree(tmproot);
	free(tmproot);
	return failed;
}
