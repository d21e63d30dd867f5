/*
 * test_records.c - the store's compact records and its chunk writer, on
 * real LMDB files in temp directories: the item and index codecs of both
 * formats against hand-encoded bytes, round trips and every kind of
 * damaged record; fc_store_writer gathering batches into chunks of at
 * least its target (items written only with their vectors, errors and
 * failed items, refusals, a writer killed mid-way); format-1 stores
 * written and read by this build, merged both ways, verified and gc'd.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <lmdb.h>

#include "featcache/store.h"
#include "store/chunk.h"
#include "store/store_impl.h"
#include "tests/testlib.h"

static char *tmproot;

static void tmppath(char *out, size_t cap, const char *name)
{
	snprintf(out, cap, "%s/%s", tmproot, name);
}

/* ---- the codecs ---- */

static void item_equal(const fc_item *a, const fc_item *b)
{
	assert_memory_equal(a->hash, b->hash, FC_HASH_LEN);
	assert_true(a->size == b->size);
	assert_true(a->mtime_ns == b->mtime_ns);
	assert_int_equal(a->label, b->label);
	assert_int_equal(a->split, b->split);
	assert_int_equal(a->status, b->status);
}

static void random_item(fc_item *it)
{
	static const uint64_t sizes[] = { 0, 1, 127, 128, 16383, 16384, 123456789, UINT64_MAX };
	static const int64_t mtimes[] = { 0, 1, -1, 63, -64, 64, 1764806400123456789ll, INT64_MAX, INT64_MIN };
	static const uint32_t labels[] = { 0, 1, 127, 128, 99999, FC_NO_LABEL - 1, FC_NO_LABEL };
	static const uint8_t splits[] = { FC_SPLIT_TRAIN, FC_SPLIT_VAL, FC_SPLIT_TEST, FC_SPLIT_NONE };
	for (int i = 0; i < FC_HASH_LEN; i++)
		it->hash[i] = (uint8_t)testlib_rand();
	it->size = testlib_below(2) ? sizes[testlib_below(8)] : testlib_rand() >> testlib_below(64);
	it->mtime_ns = testlib_below(2) ? mtimes[testlib_below(9)] : (int64_t)testlib_rand();
	it->label = testlib_below(2) ? labels[testlib_below(7)] : (uint32_t)testlib_below(FC_NO_LABEL);
	it->split = splits[testlib_below(4)];
	it->status = (uint8_t)testlib_below(2);
}

static void test_item_codec(void **state)
{
	(void)state;
	/* Hand-encoded: hash 0x11.., val (1) + labelled (8) = 0x09, size 300 =
	 * ac 02, mtime -3 -> zigzag 5 = 05, label 200 = c8 01. */
	fc_item it = { .size = 300, .mtime_ns = -3, .label = 200, .split = FC_SPLIT_VAL, .status = FC_ITEM_OK };
	memset(it.hash, 0x11, FC_HASH_LEN);
	uint8_t want[FC_HASH_LEN + 6], rec[FCI_ITEM_MAX];
	memset(want, 0x11, FC_HASH_LEN);
	memcpy(want + FC_HASH_LEN, (const uint8_t[]){ 0x09, 0xac, 0x02, 0x05, 0xc8, 0x01 }, 6);
	assert_int_equal(fci_item_encode(2, rec, &it), sizeof want);
	assert_memory_equal(rec, want, sizeof want);
	/* unlabelled, failed, no split: flags 3 | 4, size 0, mtime 0 */
	fc_item f = { .label = FC_NO_LABEL, .split = FC_SPLIT_NONE, .status = FC_ITEM_FAILED };
	assert_int_equal(fci_item_encode(2, rec, &f), FC_HASH_LEN + 3);
	assert_memory_equal(rec + FC_HASH_LEN, ((const uint8_t[]){ 0x07, 0x00, 0x00 }), 3);
	/* format 1: the old fixed layout */
	assert_int_equal(fci_item_encode(1, rec, &it), 40);
	assert_int_equal(fci_load_le64(rec + 16), 300);
	assert_int_equal((int64_t)fci_load_le64(rec + 24), -3);
	assert_int_equal(fci_load_le32(rec + 32), 200);
	assert_int_equal(rec[36], FC_SPLIT_VAL);

	for (int n = 0; n < 20000; n++) {
		fc_item a, b;
		random_item(&a);
		for (unsigned fmt = 1; fmt <= 2; fmt++) {
			size_t len = fci_item_encode(fmt, rec, &a);
			assert_true(len <= FCI_ITEM_MAX);
			MDB_val v = { len, rec };
			memset(&b, 0xee, sizeof b);
			assert_int_equal(fci_item_decode(fmt, &v, &b, NULL), 0);
			item_equal(&a, &b);
		}
	}
}

static void expect_corrupt_item(unsigned fmt, const uint8_t *p, size_t len)
{
	fc_item it;
	const char *why = NULL;
	MDB_val v = { len, (void *)p };
	assert_int_equal(fci_item_decode(fmt, &v, &it, &why), FC_ERR_CORRUPT);
	assert_non_null(why);
	assert_true(why[0] >= 'a' && why[0] <= 'z' && why[strlen(why) - 1] != '.');
}

static void test_item_codec_corrupt(void **state)
{
	(void)state;
	uint8_t rec[FCI_ITEM_MAX + 8];
	for (int n = 0; n < 2000; n++) {
		fc_item a;
		random_item(&a);
		size_t len = fci_item_encode(2, rec, &a);
		/* every strict prefix, and one byte more */
		for (size_t cut = 0; cut < len; cut++)
			expect_corrupt_item(2, rec, cut);
		rec[len] = 0;
		expect_corrupt_item(2, rec, len + 1);
		/* unknown flags */
		uint8_t keep = rec[FC_HASH_LEN];
		rec[FC_HASH_LEN] = (uint8_t)(keep | (0x10u << testlib_below(4)));
		expect_corrupt_item(2, rec, len);
		rec[FC_HASH_LEN] = keep;
		/* format 1 wants exactly 40 bytes */
		len = fci_item_encode(1, rec, &a);
		expect_corrupt_item(1, rec, len - 1);
		expect_corrupt_item(1, rec, len + 1);
	}
	uint8_t h[FC_HASH_LEN] = { 0 }, buf[64];
#define REC(...)                                                                              \
	do {                                                                                  \
		const uint8_t tail[] = { __VA_ARGS__ };                                       \
		memcpy(buf, h, FC_HASH_LEN);                                                  \
		memcpy(buf + FC_HASH_LEN, tail, sizeof tail);                                 \
		expect_corrupt_item(2, buf, FC_HASH_LEN + sizeof tail);                       \
	} while (0)
	REC(0x00, 0x80, 0x00, 0x00);                   /* size 0 in two bytes: not the shortest form */
	REC(0x00, 0x01, 0x81, 0x00);                   /* mtime likewise */
	REC(0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00); /* size > 64 bits */
	REC(0x00, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00); /* 11 bytes */
	REC(0x08, 0x01, 0x02, 0xff, 0xff, 0xff, 0xff, 0x0f); /* label FC_NO_LABEL, flagged as labelled */
	REC(0x08, 0x01, 0x02, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01); /* label beyond 32 bits */
	REC(0x08, 0x01, 0x02);                         /* labelled without a label */
	REC(0x00, 0x01);                               /* no mtime */
	REC(0x00, 0x01, 0x02, 0x03);                   /* a byte past the end */
#undef REC
	/* Garbage of every length: an error or a record, never a crash. */
	for (int n = 0; n < 100000; n++) {
		size_t len = testlib_below(sizeof buf + 1);
		for (size_t i = 0; i < len; i++)
			buf[i] = (uint8_t)(testlib_below(3) ? testlib_rand() : 0x80 * testlib_below(2));
		fc_item it;
		MDB_val v = { len, buf };
		int rc = fci_item_decode(2, &v, &it, NULL);
		assert_true(rc == 0 || rc == FC_ERR_CORRUPT);
		if (rc == 0) { /* one record, one encoding */
			uint8_t again[FCI_ITEM_MAX];
			assert_int_equal(fci_item_encode(2, again, &it), len);
			assert_memory_equal(again, buf, len);
		}
	}
}

static void test_index_codec(void **state)
{
	(void)state;
	uint8_t rec[FCI_INDEX_MAX + 2];
	MDB_val v = { 0, rec };
	uint64_t c;
	uint32_t s;
	/* hand-encoded: chunk 5, slot 300 = 05 ac 02 */
	v.mv_size = fci_index_encode(2, rec, 5, 300);
	assert_int_equal(v.mv_size, 3);
	assert_memory_equal(rec, ((const uint8_t[]){ 0x05, 0xac, 0x02 }), 3);
	assert_int_equal(fci_index_encode(1, rec, 5, 300), 12);
	for (int n = 0; n < 20000; n++) {
		uint64_t chunk = testlib_rand() >> testlib_below(64);
		uint32_t slot = (uint32_t)testlib_below(FC_CHUNK_MAX_COUNT);
		for (unsigned fmt = 1; fmt <= 2; fmt++) {
			v.mv_size = fci_index_encode(fmt, rec, chunk, slot);
			assert_int_equal(fci_index_decode(fmt, &v, &c, &s), 0);
			assert_true(c == chunk);
			assert_int_equal(s, slot);
			size_t len = v.mv_size;
			for (v.mv_size = 0; v.mv_size < len; v.mv_size++)
				assert_int_equal(fci_index_decode(fmt, &v, &c, &s), FC_ERR_CORRUPT);
			rec[len] = 1;
			v.mv_size = len + 1;
			assert_int_equal(fci_index_decode(fmt, &v, &c, &s), FC_ERR_CORRUPT);
		}
	}
	v.mv_size = fci_index_encode(2, rec, 1, FC_CHUNK_MAX_COUNT); /* a slot no chunk has */
	assert_int_equal(fci_index_decode(2, &v, &c, &s), FC_ERR_CORRUPT);
	memcpy(rec, (const uint8_t[]){ 0x81, 0x00, 0x01 }, 3); /* chunk 1 in two bytes */
	v.mv_size = 3;
	assert_int_equal(fci_index_decode(2, &v, &c, &s), FC_ERR_CORRUPT);
}

/* ---- the writer ---- */

#define DIM 128

static void ex_id(uint8_t id[FC_HASH_LEN])
{
	memset(id, 0, FC_HASH_LEN);
	id[0] = 0xd1;
}

static void hash_of(uint8_t h[FC_HASH_LEN], uint64_t i)
{
	memset(h, 0, FC_HASH_LEN);
	for (int b = 0; b < 8; b++)
		h[b] = (uint8_t)(i >> (56 - 8 * b));
	h[15] = 0x3c;
}

/* Vector i: random-looking floats (they do not compress), so a chunk of
 * f32/zstd is about 4 * DIM bytes a vector. */
static void vec_of(float *v, uint64_t i)
{
	uint64_t st = i;
	st = fci_splitmix64(&st); /* a stream from seed i + 1 would be stream i shifted by one */
	for (size_t j = 0; j < DIM; j++)
		v[j] = (float)(fci_splitmix64(&st) >> 40) / (float)(1 << 24);
}

static fc_store *open_store(const char *name, unsigned format, fc_dtype dtype)
{
	char path[512];
	tmppath(path, sizeof path, name);
	fc_store_opts o = { .create = 1, .format = format };
	fc_store *s;
	if (fc_store_open(&s, path, &o) != 0)
		fail_msg("open %s: %s", path, fc_store_errmsg(s));
	fc_extractor ex = { .dim = DIM, .dtype = dtype, .codec = FC_CODEC_ZSTD, .level = 3,
			    .descriptor = "{\"model\":\"m.onnx\"}" };
	ex_id(ex.id);
	assert_int_equal(fc_store_put_extractor(s, &ex), 0);
	const char *names[] = { "a", "b", "c" };
	uint32_t lid[3];
	assert_int_equal(fc_store_label_ids(s, names, 3, lid), 0);
	return s;
}

/* Batch b of n: vectors and items [b*n, b*n + n); item keys "k<i>.png",
 * labels i % 3; item i % 7 == 6 failed (no vector, an error record). */
static int add_batch(fc_store_writer *w, uint64_t b, size_t n)
{
	float vecs[64 * DIM];
	uint8_t hashes[64][FC_HASH_LEN];
	fc_item items[64];
	char keys[64][32], whys[64][32];
	const char *ek[64], *ew[64];
	size_t nv = 0, ne = 0;
	uint8_t id[FC_HASH_LEN];
	ex_id(id);
	for (size_t k = 0; k < n; k++) {
		uint64_t i = b * n + k;
		snprintf(keys[k], sizeof keys[k], "k%06llu.png", (unsigned long long)i);
		items[k] = (fc_item){ .key = keys[k], .size = i, .mtime_ns = (int64_t)i * 1000, .label = (uint32_t)(i % 3),
				      .split = FC_SPLIT_TRAIN };
		hash_of(items[k].hash, i);
		if (i % 7 == 6) {
			items[k].status = FC_ITEM_FAILED;
			snprintf(whys[ne], sizeof whys[ne], "broken %llu", (unsigned long long)i);
			ek[ne] = keys[k];
			ew[ne] = whys[ne];
			ne++;
			continue;
		}
		vec_of(vecs + nv * DIM, i);
		memcpy(hashes[nv++], items[k].hash, FC_HASH_LEN);
	}
	fc_store_batch bt = { .exid = id, .vecs = vecs, .hashes = (const uint8_t(*)[FC_HASH_LEN])hashes, .n_vecs = nv,
			      .items = items, .n_items = n, .error_keys = ek, .error_whys = ew, .n_errors = ne };
	return fc_store_writer_add(w, &bt);
}

struct chunk_sizes {
	size_t n, count[256], len[256];
};

static int note_chunk(void *ctx, uint64_t id, const void *chunk, size_t len)
{
	(void)id;
	struct chunk_sizes *c = ctx;
	fci_chunk_info ci;
	assert_int_equal(fci_chunk_parse(chunk, len, &ci), 0);
	assert_true(c->n < 256);
	c->count[c->n] = ci.count;
	c->len[c->n++] = len;
	return 0;
}

/* Every item is there with its vector and its error record, or not at all;
 * returns how many items there are. */
static size_t check_items(fc_store *s, uint64_t upto)
{
	uint8_t id[FC_HASH_LEN];
	ex_id(id);
	size_t have = 0;
	float v[DIM], want[DIM];
	for (uint64_t i = 0; i < upto; i++) {
		char key[32];
		snprintf(key, sizeof key, "k%06llu.png", (unsigned long long)i);
		fc_item it;
		int rc = fc_store_get_item(s, key, &it);
		if (rc == FC_ERR_NOT_FOUND)
			continue;
		assert_int_equal(rc, 0);
		have++;
		assert_true(it.size == i && it.mtime_ns == (int64_t)i * 1000);
		assert_int_equal(it.label, i % 3);
		assert_int_equal(it.status, i % 7 == 6 ? FC_ITEM_FAILED : FC_ITEM_OK);
		if (i % 7 == 6)
			continue;
		assert_int_equal(fc_store_get(s, id, it.hash, v, DIM), 0);
		vec_of(want, i);
		assert_memory_equal(v, want, sizeof v);
	}
	return have;
}

static void writer_chunks(unsigned format)
{
	char name[32];
	snprintf(name, sizeof name, "writer%u", format);
	fc_store *s = open_store(name, format, FC_DTYPE_F32);
	uint8_t id[FC_HASH_LEN];
	ex_id(id);
	fc_store_writer *w;
	assert_int_equal(fc_store_writer_new(&w, s, id, 0), 0);
	const size_t n = 32, batches = 40;
	uint64_t written = 0;
	for (uint64_t b = 0; b < batches; b++) {
		assert_int_equal(add_batch(w, b, n), 0);
		/* written moves by whole chunks only; what is pending is not in the store */
		assert_true(fc_store_writer_written(w) >= written);
		written = fc_store_writer_written(w);
		size_t have = check_items(s, (b + 1) * n);
		assert_true(have <= (b + 1) * n);
		assert_int_equal(fc_store_writer_pending(w) + written, (b + 1) * n - (b + 1) * n / 7);
	}
	assert_int_equal(fc_store_writer_flush(w), 0);
	assert_int_equal(fc_store_writer_pending(w), 0);
	assert_int_equal(fc_store_writer_flush(w), 0); /* nothing left: a no-op */
	assert_int_equal(check_items(s, batches * n), batches * n);
	fc_store_writer_free(w);

	/* every chunk but the last is at least 64 KiB, and no chunk is one
	 * batch larger than it had to be */
	struct chunk_sizes cs = { 0 };
	assert_int_equal(fc_store_foreach_chunk(s, id, note_chunk, &cs), 0);
	size_t total = 0;
	for (size_t c = 0; c < cs.n; c++) {
		total += cs.count[c];
		if (c + 1 < cs.n) {
			assert_true(cs.len[c] >= 64 * 1024);
			assert_true(cs.len[c] < 64 * 1024 + 2 * n * (4 * DIM + FC_HASH_LEN) + 4096);
		}
	}
	assert_int_equal(total, batches * n - batches * n / 7);
	print_message("# format %u: %zu chunks for %zu vectors\n", format, cs.n, total);
	assert_true(cs.n <= total * (4 * DIM + FC_HASH_LEN) / (64 * 1024) + 1);
	fc_store_stats st;
	assert_int_equal(fc_store_stats_get(s, &st), 0);
	assert_int_equal(st.items, batches * n);
	assert_int_equal(st.errors, batches * n / 7);
	assert_int_equal(st.format, format);
	free(st.extractors);
	uint64_t checked;
	assert_int_equal(fc_store_verify(s, NULL, NULL, &checked), 0);
	fc_store_free(s);
}

static void test_writer_chunks(void **state)
{
	(void)state;
	writer_chunks(2);
	writer_chunks(1);
}

static void test_writer_edges(void **state)
{
	(void)state;
	fc_store *s = open_store("edges", 0, FC_DTYPE_F16);
	uint8_t id[FC_HASH_LEN], other[FC_HASH_LEN] = { 9 };
	ex_id(id);
	fc_store_writer *w;
	assert_int_equal(fc_store_writer_new(&w, s, other, 0), FC_ERR_NOT_FOUND);
	assert_null(w);
	assert_int_equal(fc_store_writer_new(&w, s, id, 4096), 0);
	/* failed items only: pending until the next chunk or the flush */
	fc_item bad = { .key = "bad.png", .label = FC_NO_LABEL, .split = FC_SPLIT_NONE, .status = FC_ITEM_FAILED };
	const char *ek[] = { "bad.png" }, *ew[] = { "not an image" };
	fc_store_batch b = { .items = &bad, .n_items = 1, .error_keys = ek, .error_whys = ew, .n_errors = 1 };
	assert_int_equal(fc_store_writer_add(w, &b), 0);
	fc_item got;
	assert_int_equal(fc_store_get_item(s, "bad.png", &got), FC_ERR_NOT_FOUND);
	/* refusals leave what is pending as it was */
	const char *dk[] = { "x" };
	fc_store_batch del = { .del_keys = dk, .n_del = 1 };
	assert_int_equal(fc_store_writer_add(w, &del), FC_ERR_INVALID);
	fc_item odd = { .key = "odd.png", .label = FC_NO_LABEL, .split = 9 };
	fc_store_batch bo = { .items = &odd, .n_items = 1 };
	assert_int_equal(fc_store_writer_add(w, &bo), FC_ERR_INVALID);
	assert_non_null(strstr(fc_store_errmsg(s), "odd.png"));
	float v[DIM];
	vec_of(v, 1);
	v[3] = 1e9f; /* beyond f16: the chunk cannot be encoded */
	uint8_t h[1][FC_HASH_LEN];
	hash_of(h[0], 1);
	fc_item one = { .key = "one.png", .label = FC_NO_LABEL, .split = FC_SPLIT_TRAIN };
	memcpy(one.hash, h[0], FC_HASH_LEN);
	fc_store_batch bv = { .exid = id, .vecs = v, .hashes = (const uint8_t(*)[FC_HASH_LEN])h, .n_vecs = 1,
			      .items = &one, .n_items = 1 };
	assert_int_equal(fc_store_writer_add(w, &bv), FC_ERR_INVALID);
	assert_non_null(strstr(fc_store_errmsg(s), "cannot encode batch"));
	assert_int_equal(fc_store_writer_pending(w), 0); /* refused before it joined the chunk */
	fc_store_writer_free(w); /* drops what is pending */
	assert_int_equal(fc_store_get_item(s, "bad.png", &got), FC_ERR_NOT_FOUND);
	assert_int_equal(fc_store_get_item(s, "one.png", &got), FC_ERR_NOT_FOUND);

	/* what was pending before a refused batch can still be written */
	assert_int_equal(fc_store_writer_new(&w, s, id, 4096), 0);
	assert_int_equal(fc_store_writer_add(w, &b), 0);
	assert_int_equal(fc_store_writer_add(w, &bv), FC_ERR_INVALID);
	assert_int_equal(fc_store_writer_flush(w), 0);
	assert_int_equal(fc_store_get_item(s, "bad.png", &got), 0);
	assert_int_equal(fc_store_get_item(s, "one.png", &got), FC_ERR_NOT_FOUND);
	fc_store_writer_free(w);

	assert_int_equal(fc_store_writer_new(&w, s, id, 4096), 0);
	assert_int_equal(fc_store_writer_add(w, &b), 0);
	v[3] = 0.5f;
	assert_int_equal(fc_store_writer_add(w, &bv), 0);
	assert_int_equal(fc_store_writer_pending(w), 1); /* 4096 bytes not reached */
	assert_int_equal(fc_store_writer_flush(w), 0);
	assert_int_equal(fc_store_writer_written(w), 1);
	assert_int_equal(fc_store_get_item(s, "bad.png", &got), 0);
	assert_int_equal(got.status, FC_ITEM_FAILED);
	assert_int_equal(fc_store_get_item(s, "one.png", &got), 0);
	fc_store_writer_free(w);
	fc_store_free(s);
}

/* The child of test_writer_killed: batches of 32 through a writer, telling
 * the parent after each how many vectors are written. */
static void killed_child(const char *path, int fd)
{
	fc_store *s;
	fc_store_opts o = { 0 };
	if (fc_store_open(&s, path, &o) != 0)
		_exit(3);
	uint8_t id[FC_HASH_LEN];
	ex_id(id);
	fc_store_writer *w;
	if (fc_store_writer_new(&w, s, id, 0) != 0)
		_exit(3);
	for (uint64_t b = 0;; b++) {
		if (add_batch(w, b, 32) != 0)
			_exit(4);
		uint64_t wr = fc_store_writer_written(w);
		if (write(fd, &wr, sizeof wr) != (ssize_t)sizeof wr)
			_exit(5);
	}
}

static void test_writer_killed(void **state)
{
	(void)state;
	for (int round = 0; round < 3; round++) {
		char name[32], path[512];
		snprintf(name, sizeof name, "killed%d", round);
		fc_store_free(open_store(name, 0, FC_DTYPE_F32));
		tmppath(path, sizeof path, name);
		int fds[2];
		assert_int_equal(pipe(fds), 0);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(fds[0]);
			killed_child(path, fds[1]);
		}
		close(fds[1]);
		uint64_t wr = 0;
		for (int i = 0; i < 10 + 7 * round; i++)
			assert_int_equal(read(fds[0], &wr, sizeof wr), (ssize_t)sizeof wr);
		struct timespec ts = { 0, (long)testlib_below(5000000) };
		nanosleep(&ts, NULL);
		kill(pid, SIGKILL);
		int status;
		waitpid(pid, &status, 0);
		assert_true(WIFSIGNALED(status));
		close(fds[0]);
		fc_store *s;
		assert_int_equal(fc_store_open(&s, path, NULL), 0);
		uint64_t checked;
		assert_int_equal(fc_store_verify(s, NULL, NULL, &checked), 0);
		/* Items only with their vectors, none past the last chunk. */
		uint8_t id[FC_HASH_LEN];
		ex_id(id);
		struct chunk_sizes cs = { 0 };
		assert_int_equal(fc_store_foreach_chunk(s, id, note_chunk, &cs), 0);
		size_t vecs = 0;
		for (size_t c = 0; c < cs.n; c++)
			vecs += cs.count[c];
		assert_true(vecs >= wr);
		size_t have = check_items(s, 100000);
		assert_int_equal(have - have / 7, vecs); /* whole batches: 1 in 7 failed */
		print_message("# round %d: %llu written when last told, %zu in store\n", round,
			      (unsigned long long)wr, vecs);
		fc_store_free(s);
	}
}

/* ---- format 1 ---- */

/* The size of every value of db `name` is `size`. */
static void raw_sizes(const char *path, const char *name, size_t size, size_t *count)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_cursor *cur;
	MDB_val k, v;
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 16), 0);
	assert_int_equal(mdb_env_open(env, path, MDB_RDONLY, 0644), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, name, 0, &dbi), 0);
	assert_int_equal(mdb_cursor_open(txn, dbi, &cur), 0);
	*count = 0;
	for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (size)
			assert_int_equal(v.mv_size, size);
		else
			assert_true(v.mv_size < 40);
		(*count)++;
	}
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	mdb_env_close(env);
}

static void fill(fc_store *s, uint64_t first_batch, uint64_t batches)
{
	uint8_t id[FC_HASH_LEN];
	ex_id(id);
	fc_store_writer *w;
	assert_int_equal(fc_store_writer_new(&w, s, id, 0), 0);
	for (uint64_t b = first_batch; b < first_batch + batches; b++)
		assert_int_equal(add_batch(w, b, 32), 0);
	assert_int_equal(fc_store_writer_flush(w), 0);
	fc_store_writer_free(w);
}

static void test_format1(void **state)
{
	(void)state;
	char p1[512], p2[512], idx[64];
	tmppath(p1, sizeof p1, "f1");
	tmppath(p2, sizeof p2, "f2");
	uint8_t id[FC_HASH_LEN];
	ex_id(id);
	char hex[2 * FC_HASH_LEN + 1];
	fc_hex(hex, id, FC_HASH_LEN);
	snprintf(idx, sizeof idx, "index.%s", hex);

	fc_store *s1 = open_store("f1", 1, FC_DTYPE_F32), *s2 = open_store("f2", 2, FC_DTYPE_F32);
	fill(s1, 0, 6);  /* items 0..191 */
	fill(s2, 4, 6);  /* items 128..319: 64 in both */
	fc_store_free(s1);
	fc_store_free(s2);
	size_t n;
	raw_sizes(p1, "items", 40, &n);
	assert_int_equal(n, 192);
	raw_sizes(p1, idx, 12, &n);
	raw_sizes(p2, "items", 0, &n);
	raw_sizes(p2, idx, 0, &n);

	/* A format-1 store opened again is format 1, whatever is asked. */
	fc_store_opts o = { .format = 2 };
	assert_int_equal(fc_store_open(&s1, p1, &o), 0);
	assert_int_equal(fc_store_format(s1), 1);
	assert_int_equal(check_items(s1, 400), 192);
	fc_store_opts o2 = { .create = 1, .format = 3 };
	char p3[512];
	tmppath(p3, sizeof p3, "f3");
	assert_int_equal(fc_store_open(&s2, p3, &o2), FC_ERR_INVALID);
	fc_store_free(s2);
	assert_int_equal(fc_store_open(&s2, p2, NULL), 0);
	assert_int_equal(fc_store_format(s2), 2);

	/* merge both ways: each keeps its format, both end with all 320 */
	fc_merge_stats ms;
	assert_int_equal(fc_store_merge(s1, s2, NULL, &ms), 0);
	assert_int_equal(ms.items, 128);
	assert_int_equal(ms.items_present, 64);
	assert_int_equal(fc_store_merge(s2, s1, NULL, &ms), 0);
	assert_int_equal(ms.items, 128);
	for (int k = 0; k < 2; k++) {
		fc_store *s = k ? s2 : s1;
		assert_int_equal(check_items(s, 400), 320);
		uint64_t checked;
		assert_int_equal(fc_store_verify(s, NULL, NULL, &checked), 0);
		fc_matrix m;
		size_t missing;
		assert_int_equal(fc_store_load_items(s, id, FC_SPLIT_MASK_ALL, &m, &missing), 0);
		assert_int_equal(m.rows, 320 - 320 / 7);
		for (size_t r = 0; r < m.rows; r++) {
			float want[DIM];
			vec_of(want, strtoull(m.keys[r] + 1, NULL, 10));
			assert_memory_equal(m.data + r * DIM, want, sizeof want);
		}
		fc_matrix_free(&m);
		/* drop a third of the items: gc rewrites chunks in the store's format */
		char keys[120][24];
		const char *kp[120];
		for (int i = 0; i < 120; i++) {
			snprintf(keys[i], sizeof keys[i], "k%06d.png", 3 * i);
			kp[i] = keys[i];
		}
		assert_int_equal(fc_store_del_items(s, kp, 107), 0);
		fc_gc_stats gs;
		assert_int_equal(fc_store_gc(s, &gs), 0);
		assert_true(gs.chunks_rewritten > 0);
		assert_int_equal(fc_store_verify(s, NULL, NULL, &checked), 0);
		assert_int_equal(check_items(s, 400), 320 - 107);
		fc_repair_stats rs;
		assert_int_equal(fc_store_repair(s, NULL, NULL, NULL, &rs), 0);
	}
	fc_store_free(s1);
	fc_store_free(s2);
	raw_sizes(p1, "items", 40, &n);
	assert_int_equal(n, 320 - 107);
	raw_sizes(p1, idx, 12, &n);
	raw_sizes(p2, "items", 0, &n);
	raw_sizes(p2, idx, 0, &n);
}

int main(void)
{
	testlib_seed("test_records");
	tmproot = testlib_tmpdir("test-records");
	printf("# dir %s\n", tmproot);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_item_codec),
		cmocka_unit_test(test_item_codec_corrupt),
		cmocka_unit_test(test_index_codec),
		cmocka_unit_test(test_writer_chunks),
		cmocka_unit_test(test_writer_edges),
		cmocka_unit_test(test_writer_killed),
		cmocka_unit_test(test_format1),
	};
	int failed = cmocka_run_group_tests(tests, NULL, NULL);
	if (!failed)
		testlib_rmtree(tmproot);
	free(tmproot);
	return failed;
}
