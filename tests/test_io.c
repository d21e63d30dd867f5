/*
 * test_io.c - unit tests of io/safetensors.c and io/npy.c:
 * byte-exact output against fixtures made by Python (struct + json for
 * safetensors, numpy itself for .npy, see tools/make_tensorio_fixtures.py),
 * round trips, every truncation and header bit flip of valid files, crafted
 * lying headers, and failing file systems (missing directory, read-only and
 * full tmpfs mounts when we may mount, a file-size limit otherwise).
 *
 * Random data comes from one seed, printed at the start; set FC_SEED
 * to replay. Fixtures are found under $FC_TOP (tests/run.sh sets it) or the
 * current directory. With FC_TENSORIO_EXPORT=DIR the C-written files are
 * also left in DIR for `make_tensorio_fixtures.py --check DIR`.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "featcache/io.h"
#include "store/chunk.h" /* fci_f32_to_f16, for crafted f2 files */
#include "tests/testlib.h"

static char *tmproot; /* testlib_tmpdir, for the whole run */

/* ---- files ---- */

static void write_all(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(p, 1, n, f), n);
	assert_int_equal(fclose(f), 0);
}

static const char *fixture(const char *name)
{
	static char path[1024];
	const char *top = getenv("FC_TOP");
	snprintf(path, sizeof path, "%s/tests/fixtures/tensorio/%s", top && *top ? top : ".", name);
	return path;
}

static const char *tmp_path(const char *name)
{
	static char path[1024];
	snprintf(path, sizeof path, "%s/%s", tmproot, name);
	return path;
}

/* Entries of dir other than . and .., or -1. */
static int count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;
	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static void fresh_dir(char *out, size_t cap, const char *name)
{
	snprintf(out, cap, "%s/%s", tmproot, name);
	testlib_rmtree(out);
	assert_int_equal(mkdir(out, 0755), 0);
}

/* ---- the head-shaped tensors of the fixture (see the generator) ---- */

#define IN_DIM 4
#define OUT_DIM 3

static float w0[OUT_DIM * IN_DIM], bn_w[OUT_DIM], bn_b[OUT_DIM], bn_rm[OUT_DIM], bn_rv[OUT_DIM], odd_val = 3.0f;
static int64_t nbt = 7;
static const uint16_t half[4] = {0x3c00, 0xc000, 0x3800, 0x7bff}; /* 1, -2, 0.5, 65504 */
static const uint64_t sh_w0[2] = {OUT_DIM, IN_DIM}, sh_bn[1] = {OUT_DIM}, sh_half[2] = {2, 2},
		      sh_empty[2] = {0, 5}, sh_one[1] = {1};
#define ODD_NAME "odd \"name\"\\\xc3\xa9"

static const fc_st_meta head_meta[2] = {
	{"format", "pt"},
	{"featcache", "{\"in_dim\":4,\"note\":\"caf\xc3\xa9 \\ \x01\tx\"}\n"},
};

static void head_tensors(fc_st_tensor t[9])
{
	for (int i = 0; i < OUT_DIM * IN_DIM; i++)
		w0[i] = (float)i * 0.25f - 1.5f;
	for (int i = 0; i < OUT_DIM; i++) {
		bn_w[i] = 1.0f + 0.5f * (float)i;
		bn_b[i] = -0.125f * (float)i;
		bn_rm[i] = 0.75f * (float)i;
		bn_rv[i] = 2.0f + (float)i;
	}
	t[0] = (fc_st_tensor){"head_layers.0.weight", FC_ST_F32, 2, sh_w0, w0, 0};
	t[1] = (fc_st_tensor){"head_layers.1.weight", FC_ST_F32, 1, sh_bn, bn_w, 0};
	t[2] = (fc_st_tensor){"head_layers.1.bias", FC_ST_F32, 1, sh_bn, bn_b, 0};
	t[3] = (fc_st_tensor){"head_layers.1.running_mean", FC_ST_F32, 1, sh_bn, bn_rm, 0};
	t[4] = (fc_st_tensor){"head_layers.1.running_var", FC_ST_F32, 1, sh_bn, bn_rv, 0};
	t[5] = (fc_st_tensor){"head_layers.1.num_batches_tracked", FC_ST_I64, 0, NULL, &nbt, 0};
	t[6] = (fc_st_tensor){"extra.half", FC_ST_F16, 2, sh_half, half, 0};
	t[7] = (fc_st_tensor){"extra.empty", FC_ST_F32, 2, sh_empty, NULL, 0};
	t[8] = (fc_st_tensor){ODD_NAME, FC_ST_F32, 1, sh_one, &odd_val, 0};
}

static float npy_value(size_t r, size_t c, size_t cols)
{
	return (float)(r * cols + c) * 0.5f - 3.0f;
}

static float *npy_matrix(size_t rows, size_t cols)
{
	float *m = malloc(rows * cols * sizeof(float) + 1);
	for (size_t r = 0; r < rows; r++)
		for (size_t c = 0; c < cols; c++)
			m[r * cols + c] = npy_value(r, c, cols);
	return m;
}

/* ---- checks shared by the corruption tests ---- */

static size_t numel(const fc_st_tensor *t)
{
	size_t n = 1;
	for (size_t d = 0; d < t->ndim; d++)
		n *= (size_t)t->shape[d];
	return n;
}

/* What any file the reader accepts must satisfy: sizes agree with shapes,
 * and the tensors tile the buffer (len bytes at the file's start). */
static void check_accepted(const fc_st_file *f, size_t len)
{
	size_t total = 0;
	const unsigned char *prev_end = NULL;
	for (size_t i = 0; i < fc_st_count(f); i++) {
		const fc_st_tensor *t = fc_st_at(f, i);
		assert_non_null(t);
		assert_int_equal(t->nbytes, numel(t) * fc_st_dtype_size(t->dtype));
		if (prev_end)
			assert_ptr_equal(t->data, prev_end);
		prev_end = (const unsigned char *)t->data + t->nbytes;
		total += t->nbytes;
		assert_ptr_equal(fc_st_find(f, t->name), t);
	}
	assert_true(total <= len);
	assert_null(fc_st_at(f, fc_st_count(f)));
	for (size_t i = 0; i < fc_st_meta_count(f); i++)
		assert_non_null(fc_st_meta_find(f, fc_st_meta_at(f, i)->key));
}

/* A file with the given header (padded with spaces to a multiple of 8) and
 * a zero-filled buffer of buf_len bytes. */
static unsigned char *st_file(const char *header, size_t buf_len, size_t *len)
{
	size_t hl = strlen(header), padded = (hl + 7) / 8 * 8;
	unsigned char *p = calloc(1, 8 + padded + buf_len + 1);
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)((uint64_t)padded >> (8 * i));
	memcpy(p + 8, header, hl);
	memset(p + 8 + hl, ' ', padded - hl);
	*len = 8 + padded + buf_len;
	return p;
}

static int st_parse_rc(const void *p, size_t len, char *err)
{
	fc_st_file *f = NULL;
	int rc;
	err[0] = '\0';
	rc = fc_st_parse(&f, p, len, err, FC_ERRLEN);
	if (rc == 0) {
		assert_non_null(f);
		check_accepted(f, len);
	} else {
		assert_null(f);
		assert_true(err[0] != '\0');
	}
	fc_st_free(f);
	return rc;
}

/* A parse of bytes p[0, len): its code, after checking what it returned. */
typedef int (*parse_fn)(const void *p, size_t len, char *err);

/* Every bit of p[0, n) flipped and each byte inverted, one change at a
 * time, each parsed as a file of len bytes: refused or accepted with
 * consistent sizes, never a crash. Counts the two outcomes into *ok and
 * *bad; p is as it was afterwards. */
static void flip_each(unsigned char *p, size_t len, size_t n, parse_fn parse, size_t *ok, size_t *bad)
{
	char err[FC_ERRLEN];

	for (size_t i = 0; i < n; i++) {
		for (int b = 0; b <= 8; b++) {
			unsigned char mask = b == 8 ? 0xff : (unsigned char)(1u << b);
			p[i] ^= mask;
			if (parse(p, len, err) == 0)
				++*ok;
			else
				++*bad;
			p[i] ^= mask;
		}
	}
}

/* Tensor got, read back, is want: name, dtype, shape and bytes. */
static void expect_tensor(const fc_st_tensor *got, const fc_st_tensor *want)
{
	assert_string_equal(got->name, want->name);
	assert_int_equal(got->dtype, want->dtype);
	assert_int_equal(got->ndim, want->ndim);
	for (size_t d = 0; d < got->ndim; d++)
		assert_int_equal(got->shape[d], want->shape[d]);
	assert_int_equal(got->nbytes, numel(want) * fc_st_dtype_size(want->dtype));
	if (got->nbytes)
		assert_memory_equal(got->data, want->data, got->nbytes);
}

/* ---------------------------------------------------------- safetensors */

static void test_st_dtypes(void **state)
{
	(void)state;
	for (int i = 0; i < FC_ST_NDTYPES; i++) {
		fc_st_dtype t;
		assert_int_equal(fc_st_dtype_parse(fc_st_dtype_name((fc_st_dtype)i), &t), 0);
		assert_int_equal(t, i);
		assert_true(fc_st_dtype_size(t) >= 1 && fc_st_dtype_size(t) <= 8);
	}
	fc_st_dtype t;
	assert_int_equal(fc_st_dtype_parse("f32", &t), FC_ERR_INVALID);
	assert_int_equal(fc_st_dtype_parse("", &t), FC_ERR_INVALID);
	assert_null(fc_st_dtype_name(FC_ST_NDTYPES));
	assert_int_equal(fc_st_dtype_size(FC_ST_NDTYPES), 0);
	assert_int_equal(fc_st_dtype_size(FC_ST_I64), 8);
	assert_int_equal(fc_st_dtype_size(FC_ST_BF16), 2);
}

static void test_st_matches_python_reference(void **state)
{
	(void)state;
	fc_st_tensor t[9];
	char err[FC_ERRLEN] = "";
	size_t ref_len, len, got_len;
	unsigned char *ref = testlib_read_file(fixture("ref.safetensors"), &ref_len);
	void *enc;

	assert_non_null(ref);
	head_tensors(t);
	assert_int_equal(fc_st_encode(&enc, &len, t, 9, head_meta, 2, err, sizeof err), 0);
	assert_int_equal(len, ref_len);
	assert_memory_equal(enc, ref, len);
	free(enc);

	const char *path = tmp_path("head.safetensors");
	assert_int_equal(fc_st_write(path, t, 9, head_meta, 2, err, sizeof err), 0);
	unsigned char *got = testlib_read_file(path, &got_len);
	assert_non_null(got);
	assert_int_equal(got_len, ref_len);
	assert_memory_equal(got, ref, ref_len);
	/* the header length is a multiple of 8 and the header ends in spaces */
	assert_int_equal((got[0] | got[1] << 8) % 8, 0);
	free(got);
	free(ref);

	/* no tensors, no metadata: "{}" padded */
	assert_int_equal(fc_st_encode(&enc, &len, NULL, 0, NULL, 0, err, sizeof err), 0);
	assert_int_equal(len, 16);
	assert_memory_equal(enc, "\x08\0\0\0\0\0\0\0{}      ", 16);
	free(enc);
}

static void test_st_read_reference(void **state)
{
	(void)state;
	fc_st_tensor t[9];
	fc_st_file *f = NULL;
	char err[FC_ERRLEN] = "";
	float buf[16];
	int64_t i64;

	head_tensors(t);
	assert_int_equal(fc_st_open(&f, fixture("ref.safetensors"), err, sizeof err), 0);
	assert_int_equal(fc_st_count(f), 9);
	for (size_t i = 0; i < 9; i++) {
		const fc_st_tensor *g = fc_st_at(f, i);
		expect_tensor(g, &t[i]);
		assert_ptr_equal(fc_st_find(f, t[i].name), g);
	}
	/* the byte buffer starts 64-byte aligned */
	assert_int_equal((uintptr_t)fc_st_at(f, 0)->data % 64, 0);
	assert_null(fc_st_find(f, "head_layers.2.weight"));
	assert_null(fc_st_find(f, ""));
	assert_null(fc_st_at(f, 9));

	assert_int_equal(fc_st_meta_count(f), 2);
	assert_string_equal(fc_st_meta_at(f, 0)->key, "format");
	assert_string_equal(fc_st_meta_at(f, 1)->value, head_meta[1].value);
	assert_string_equal(fc_st_meta_find(f, "format"), "pt");
	assert_null(fc_st_meta_find(f, "nope"));
	assert_null(fc_st_meta_at(f, 2));

	const fc_st_tensor *w = fc_st_find(f, "head_layers.0.weight");
	assert_int_equal(fc_st_copy_f32(buf, 12, w), 0);
	assert_memory_equal(buf, w0, sizeof w0);
	assert_int_equal(fc_st_copy_f32(buf, 11, w), FC_ERR_INVALID);
	assert_int_equal(fc_st_copy_f32(buf, 4, fc_st_find(f, "extra.half")), 0);
	assert_true(buf[0] == 1.0f && buf[1] == -2.0f && buf[2] == 0.5f && buf[3] == 65504.0f);
	assert_int_equal(fc_st_copy_f32(buf, 0, fc_st_find(f, "extra.empty")), 0);
	assert_int_equal(fc_st_copy_f32(buf, 1, fc_st_find(f, "head_layers.1.num_batches_tracked")),
			 FC_ERR_UNSUPPORTED);
	assert_int_equal(fc_st_copy_i64(&i64, 1, fc_st_find(f, "head_layers.1.num_batches_tracked")), 0);
	assert_int_equal(i64, 7);
	assert_int_equal(fc_st_copy_i64(&i64, 1, fc_st_find(f, ODD_NAME)), FC_ERR_UNSUPPORTED);
	fc_st_free(f);
	fc_st_free(NULL);

	/* the same bytes from memory */
	size_t len;
	unsigned char *ref = testlib_read_file(fixture("ref.safetensors"), &len);
	assert_int_equal(fc_st_parse(&f, ref, len, err, sizeof err), 0);
	assert_int_equal(fc_st_count(f), 9);
	fc_st_free(f);
	free(ref);
}

static void test_st_copy_conversions(void **state)
{
	(void)state;
	/* bf16 1.5 = 0x3fc0, f64 0.1 rounds to the nearest float, U64 above
	 * INT64_MAX overflows, BOOL is 0/1; data at an odd offset. */
	unsigned char raw[64];
	float f[2];
	int64_t v[2];
	const uint64_t two[1] = {2};
	uint16_t bf[2] = {0x3fc0, 0xc000};
	double d[2] = {0.1, -1e300};
	uint64_t u[2] = {5, UINT64_MAX};
	fc_st_tensor t = {"x", FC_ST_BF16, 1, two, raw + 1, 4};

	memcpy(raw + 1, bf, 4);
	assert_int_equal(fc_st_copy_f32(f, 2, &t), 0);
	assert_true(f[0] == 1.5f && f[1] == -2.0f);
	t.dtype = FC_ST_F64, t.nbytes = 16;
	memcpy(raw + 1, d, 16);
	assert_int_equal(fc_st_copy_f32(f, 2, &t), 0);
	assert_true(f[0] == 0.1f && f[1] == -INFINITY);
	t.dtype = FC_ST_U64;
	memcpy(raw + 1, u, 16);
	assert_int_equal(fc_st_copy_i64(v, 2, &t), FC_ERR_OVERFLOW);
	u[1] = 9;
	memcpy(raw + 1, u, 16);
	assert_int_equal(fc_st_copy_i64(v, 2, &t), 0);
	assert_true(v[0] == 5 && v[1] == 9);
	t.dtype = FC_ST_BOOL, t.nbytes = 2;
	raw[1] = 0, raw[2] = 3;
	assert_int_equal(fc_st_copy_i64(v, 2, &t), 0);
	assert_true(v[0] == 0 && v[1] == 1);
	t.dtype = FC_ST_I8;
	raw[1] = 0xff;
	assert_int_equal(fc_st_copy_i64(v, 2, &t), 0);
	assert_true(v[0] == -1 && v[1] == 3);
	assert_int_equal(fc_st_copy_f32(f, 2, &t), FC_ERR_UNSUPPORTED);
}

/* Random tensors of every dtype, rank 0..4 (zero dims included), names with
 * escapes and UTF-8, random metadata: encode, parse, compare. */
static void test_st_round_trip_random(void **state)
{
	(void)state;
	static const char *const pieces[] = {"a", "layer.", "0", "\"", "\\", "\n", "\x01", "\x7f",
					     "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x99\x82", " ", "/"};
	enum { NT = 12, NM = 4, NAME = 64 };
	char names[NT][NAME], keys[NM][NAME], vals[NM][NAME];
	uint64_t shapes[NT][4];
	unsigned char *data[NT];
	fc_st_tensor t[NT];
	fc_st_meta m[NM];
	char err[FC_ERRLEN];

	for (int round = 0; round < 300; round++) {
		size_t n = testlib_below(NT + 1), nm = testlib_below(NM + 1);
		for (size_t i = 0; i < n; i++) {
			int len = snprintf(names[i], NAME, "%zu", i);
			for (size_t k = testlib_below(5); k > 0; k--)
				len += snprintf(names[i] + len, (size_t)(NAME - len), "%s", pieces[testlib_below(13)]);
			t[i].name = names[i];
			t[i].dtype = (fc_st_dtype)testlib_below(FC_ST_NDTYPES);
			t[i].ndim = testlib_below(5);
			t[i].shape = shapes[i];
			size_t bytes = fc_st_dtype_size(t[i].dtype);
			for (size_t d = 0; d < t[i].ndim; d++) {
				shapes[i][d] = testlib_below(testlib_below(8) == 0 ? 1 : 5);
				bytes *= (size_t)shapes[i][d];
			}
			data[i] = malloc(bytes + 1);
			for (size_t b = 0; b < bytes; b++)
				data[i][b] = (unsigned char)testlib_rand();
			t[i].data = data[i];
		}
		for (size_t i = 0; i < nm; i++) {
			int len = snprintf(keys[i], NAME, "k%zu", i);
			for (size_t k = testlib_below(4); k > 0; k--)
				len += snprintf(keys[i] + len, (size_t)(NAME - len), "%s", pieces[testlib_below(13)]);
			vals[i][0] = '\0';
			for (size_t k = testlib_below(6), vl = 0; k > 0; k--)
				vl += (size_t)snprintf(vals[i] + vl, NAME - vl, "%s", pieces[testlib_below(13)]);
			m[i] = (fc_st_meta){keys[i], vals[i]};
		}

		void *enc;
		size_t len;
		fc_st_file *f;
		assert_int_equal(fc_st_encode(&enc, &len, t, n, m, nm, err, sizeof err), 0);
		assert_int_equal(fc_st_parse(&f, enc, len, err, sizeof err), 0);
		assert_int_equal(fc_st_count(f), n);
		assert_int_equal(fc_st_meta_count(f), nm);
		for (size_t i = 0; i < n; i++) {
			const fc_st_tensor *g = fc_st_at(f, i);
			expect_tensor(g, &t[i]);
			assert_ptr_equal(fc_st_find(f, names[i]), g);
			free(data[i]);
		}
		for (size_t i = 0; i < nm; i++) {
			assert_string_equal(fc_st_meta_at(f, i)->key, keys[i]);
			assert_string_equal(fc_st_meta_find(f, keys[i]), vals[i]);
		}
		check_accepted(f, len);
		fc_st_free(f);
		free(enc);
	}
}

static void test_st_writer_refuses(void **state)
{
	(void)state;
	fc_st_tensor t[9], bad[2];
	fc_st_meta m[2];
	char err[FC_ERRLEN], dir[600], path[700];
	const uint64_t huge[2] = {(uint64_t)1 << 62, 8}, too_big[1] = {(uint64_t)INT64_MAX + 1};
	float x = 1.0f;
	void *enc = (void *)1;
	size_t len = 1;

	head_tensors(t);
	fresh_dir(dir, sizeof dir, "refuses");
	snprintf(path, sizeof path, "%s/x.safetensors", dir);

	bad[0] = t[0], bad[1] = t[0];
	err[0] = '\0';
	assert_int_equal(fc_st_write(path, bad, 2, NULL, 0, err, sizeof err), FC_ERR_INVALID);
	assert_non_null(strstr(err, "head_layers.0.weight"));
	assert_int_equal(fc_st_encode(&enc, &len, bad, 2, NULL, 0, err, sizeof err), FC_ERR_INVALID);
	assert_null(enc);
	assert_int_equal(len, 0);

	bad[0] = (fc_st_tensor){"__metadata__", FC_ST_F32, 0, NULL, &x, 0};
	assert_int_equal(fc_st_write(path, bad, 1, NULL, 0, err, sizeof err), FC_ERR_INVALID);
	bad[0] = (fc_st_tensor){"bad\xc3", FC_ST_F32, 0, NULL, &x, 0};
	assert_int_equal(fc_st_write(path, bad, 1, NULL, 0, err, sizeof err), FC_ERR_INVALID);
	bad[0] = (fc_st_tensor){"\xed\xa0\x80", FC_ST_F32, 0, NULL, &x, 0}; /* a surrogate */
	assert_int_equal(fc_st_write(path, bad, 1, NULL, 0, err, sizeof err), FC_ERR_INVALID);
	bad[0] = (fc_st_tensor){"\xc0\xaf", FC_ST_F32, 0, NULL, &x, 0}; /* overlong */
	assert_int_equal(fc_st_write(path, bad, 1, NULL, 0, err, sizeof err), FC_ERR_INVALID);
	bad[0] = (fc_st_tensor){NULL, FC_ST_F32, 0, NULL, &x, 0};
	assert_int_equal(fc_st_write(path, bad, 1, NULL, 0, err, sizeof err), FC_ERR_INVALID);
	bad[0] = (fc_st_tensor){"x", FC_ST_NDTYPES, 0, NULL, &x, 0};
	assert_int_equal(fc_st_write(path, bad, 1, NULL, 0, err, sizeof err), FC_ERR_INVALID);
	bad[0] = (fc_st_tensor){"x", FC_ST_F32, 0, NULL, NULL, 0};
	assert_int_equal(fc_st_write(path, bad, 1, NULL, 0, err, sizeof err), FC_ERR_INVALID);
	bad[0] = (fc_st_tensor){"x", FC_ST_F32, 2, NULL, &x, 0};
	assert_int_equal(fc_st_write(path, bad, 1, NULL, 0, err, sizeof err), FC_ERR_INVALID);
	bad[0] = (fc_st_tensor){"x", FC_ST_F32, 2, huge, &x, 0};
	assert_int_equal(fc_st_write(path, bad, 1, NULL, 0, err, sizeof err), FC_ERR_OVERFLOW);
	bad[0] = (fc_st_tensor){"x", FC_ST_U8, 1, too_big, &x, 0};
	assert_int_equal(fc_st_write(path, bad, 1, NULL, 0, err, sizeof err), FC_ERR_INVALID);
	assert_int_equal(fc_st_write(path, NULL, 1, NULL, 0, err, sizeof err), FC_ERR_INVALID);

	m[0] = (fc_st_meta){"k", "v"}, m[1] = (fc_st_meta){"k", "w"};
	assert_int_equal(fc_st_write(path, t, 9, m, 2, err, sizeof err), FC_ERR_INVALID);
	assert_non_null(strstr(err, "'k'"));
	m[1] = (fc_st_meta){"j", NULL};
	assert_int_equal(fc_st_write(path, t, 9, m, 2, err, sizeof err), FC_ERR_INVALID);
	m[1] = (fc_st_meta){"j", "\xff"};
	assert_int_equal(fc_st_write(path, t, 9, m, 2, err, sizeof err), FC_ERR_INVALID);
	assert_int_equal(fc_st_write(path, t, 9, NULL, 1, err, sizeof err), FC_ERR_INVALID);
	/* a NULL errbuf is allowed */
	assert_int_equal(fc_st_write(path, bad, 2, NULL, 0, NULL, 0), FC_ERR_INVALID);

	/* nothing was created by any of them */
	assert_int_equal(count_entries(dir), 0);
	assert_int_equal(fc_st_write("", t, 9, NULL, 0, err, sizeof err), FC_ERR_INVALID);
	snprintf(path, sizeof path, "%s/", dir);
	assert_int_equal(fc_st_write(path, t, 9, NULL, 0, err, sizeof err), FC_ERR_INVALID);
	snprintf(path, sizeof path, "%s/..", dir);
	assert_int_equal(fc_st_write(path, t, 9, NULL, 0, err, sizeof err), FC_ERR_INVALID);
	assert_int_equal(count_entries(dir), 0);
}

static void test_st_truncation_and_flips(void **state)
{
	(void)state;
	char err[FC_ERRLEN];
	size_t len, hlen, ok = 0, bad = 0;
	unsigned char *ref = testlib_read_file(fixture("ref.safetensors"), &len);

	assert_non_null(ref);
	/* every truncation: the buffer no longer matches the offsets */
	for (size_t cut = 0; cut < len; cut++)
		assert_true(st_parse_rc(ref, cut, err) < 0);
	/* one extra byte is trailing garbage */
	unsigned char *longer = malloc(len + 1);
	memcpy(longer, ref, len);
	longer[len] = 0;
	assert_int_equal(st_parse_rc(longer, len + 1, err), FC_ERR_CORRUPT);
	assert_non_null(strstr(err, "belong to no tensor"));
	free(longer);

	/* every bit of the length field and the header, and each byte
	 * inverted: refused or accepted with consistent sizes, never a crash */
	hlen = ref[0] | (size_t)ref[1] << 8;
	flip_each(ref, len, 8 + hlen, st_parse_rc, &ok, &bad);
	printf("# safetensors header flips: %zu accepted, %zu refused\n", ok, bad);
	assert_true(bad > ok);
	/* data bytes are not checked: flipping them keeps the file valid */
	for (size_t i = 8 + hlen; i < len; i++) {
		ref[i] ^= 0x5a;
		assert_int_equal(st_parse_rc(ref, len, err), 0);
		ref[i] ^= 0x5a;
	}
	free(ref);
}

/* One crafted header, its buffer length, the code expected and a piece of
 * the message. */
typedef struct st_case {
	const char *header;
	size_t buf_len;
	int rc;
	const char *msg;
} st_case;

static const st_case st_cases[] = {
	/* framing */
	{" {}", 0, FC_ERR_CORRUPT, "start with '{'"},
	{"[1]", 0, FC_ERR_CORRUPT, "start with '{'"},
	{"{\"a\":", 0, FC_ERR_CORRUPT, "not valid JSON"},
	{"{}x", 0, FC_ERR_CORRUPT, "not valid JSON"},
	{"{\"a\xff\":{}}", 0, FC_ERR_CORRUPT, "not valid JSON"},
	{"{\"a\\u0000b\":{}}", 0, FC_ERR_CORRUPT, "not valid JSON"},
	{"{}", 0, 0, NULL},
	{"{}\n\t", 0, 0, NULL},
	/* entries */
	{"{\"a\":5}", 0, FC_ERR_CORRUPT, "tensor 'a' is not an object"},
	{"{\"a\":{\"shape\":[],\"data_offsets\":[0,4]}}", 4, FC_ERR_CORRUPT, "no dtype"},
	{"{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, FC_ERR_CORRUPT, "no shape"},
	{"{\"a\":{\"dtype\":\"F32\",\"shape\":[]}}", 4, FC_ERR_CORRUPT, "no data_offsets"},
	{"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4],\"x\":1}}", 4, FC_ERR_CORRUPT,
	 "unknown field 'x'"},
	{"{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4, FC_ERR_CORRUPT,
	 "duplicate"},
	{"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
	 "\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4, FC_ERR_CORRUPT, "duplicate"},
	/* dtypes */
	{"{\"a\":{\"dtype\":\"f32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4, FC_ERR_CORRUPT, "unknown dtype 'f32'"},
	{"{\"a\":{\"dtype\":\"F33\",\"shape\":[],\"data_offsets\":[0,4]}}", 4, FC_ERR_CORRUPT, "unknown dtype"},
	{"{\"a\":{\"dtype\":\"\",\"shape\":[],\"data_offsets\":[0,4]}}", 4, FC_ERR_CORRUPT, "unknown dtype"},
	{"{\"a\":{\"dtype\":4,\"shape\":[],\"data_offsets\":[0,4]}}", 4, FC_ERR_CORRUPT, "dtype is not a string"},
	{"{\"a\":{\"dtype\":\"F4\",\"shape\":[2],\"data_offsets\":[0,1]}}", 1, FC_ERR_UNSUPPORTED, "F4"},
	/* shapes */
	{"{\"a\":{\"dtype\":\"F32\",\"shape\":5,\"data_offsets\":[0,4]}}", 4, FC_ERR_CORRUPT, "shape is not an array"},
	{"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, FC_ERR_CORRUPT, "shape[0]"},
	{"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,-2],\"data_offsets\":[0,4]}}", 4, FC_ERR_CORRUPT, "shape[1]"},
	{"{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4, FC_ERR_CORRUPT, "shape[0]"},
	{"{\"a\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4, FC_ERR_CORRUPT, "shape[0]"},
	{"{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4611686018427387904],\"data_offsets\":[0,4]}}", 4,
	 FC_ERR_CORRUPT, "overflows"},
	{"{\"a\":{\"dtype\":\"F32\",\"shape\":[9223372036854775807,3],\"data_offsets\":[0,4]}}", 4, FC_ERR_CORRUPT,
	 "overflows"},
	{"{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,4]}}", 4, FC_ERR_CORRUPT,
	 "of F32 overflows"},
	{"{\"a\":{\"dtype\":\"F32\",\"shape\":[9223372036854775808],\"data_offsets\":[0,4]}}", 4, FC_ERR_CORRUPT,
	 "not valid JSON"},
	{"{\"a\":{\"dtype\":\"F32\",\"shape\":[9223372036854775807,9223372036854775807,0],\"data_offsets\":[0,0]}}", 0,
	 0, NULL},
	{"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", 12, FC_ERR_CORRUPT,
	 "shape [2, 2] of F32 is 16 bytes but data_offsets [0, 12] hold 12"},
	/* offsets */
	{"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":4}}", 4, FC_ERR_CORRUPT, "not [begin, end]"},
	{"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[4]}}", 4, FC_ERR_CORRUPT, "not [begin, end]"},
	{"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4,8]}}", 8, FC_ERR_CORRUPT, "not [begin, end]"},
	{"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[-4,0]}}", 4, FC_ERR_CORRUPT, "integers >= 0"},
	{"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[\"0\",4]}}", 4, FC_ERR_CORRUPT, "integers >= 0"},
	{"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[8,4]}}", 8, FC_ERR_CORRUPT, "end before"},
	{"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[4,8]}}", 4, FC_ERR_CORRUPT, "run past"},
	{"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[9223372036854775803,9223372036854775807]}}", 4,
	 FC_ERR_CORRUPT, "run past"},
	{"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
	 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, FC_ERR_CORRUPT, "overlaps tensor 'a'"},
	{"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
	 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, FC_ERR_CORRUPT, "overlaps"},
	{"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
	 "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}", 8, FC_ERR_CORRUPT, "overlaps"},
	{"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
	 "\"b\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[8,12]}}", 12, FC_ERR_CORRUPT, "[4, 8) before tensor 'b'"},
	{"{\"b\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[4,8]}}", 8, FC_ERR_CORRUPT, "[0, 4) before"},
	{"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 8, FC_ERR_CORRUPT, "last 4 bytes"},
	{"{}", 1, FC_ERR_CORRUPT, "last 1 bytes"},
	/* valid orders and empties */
	{"{\"b\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[4,8]},"
	 "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, 0, NULL},
	{"{\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
	 "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
	 "\"z\":{\"dtype\":\"U8\",\"shape\":[0,3],\"data_offsets\":[0,0]},"
	 "\"\":{\"dtype\":\"BOOL\",\"shape\":[1,1,1],\"data_offsets\":[4,5]}}", 5, 0, NULL},
	/* metadata */
	{"{\"__metadata__\":{\"k\":1}}", 0, FC_ERR_CORRUPT, "__metadata__ 'k' is not a string"},
	{"{\"__metadata__\":{\"k\":null}}", 0, FC_ERR_CORRUPT, "not a string"},
	{"{\"__metadata__\":{\"k\":{\"x\":\"y\"}}}", 0, FC_ERR_CORRUPT, "not a string"},
	{"{\"__metadata__\":\"k\"}", 0, FC_ERR_CORRUPT, "__metadata__ is not an object"},
	{"{\"__metadata__\":{\"k\":\"v\",\"k\":\"w\"}}", 0, FC_ERR_CORRUPT, "duplicate"},
	{"{\"__metadata__\":{},\"__metadata__\":{}}", 0, FC_ERR_CORRUPT, "duplicate"},
	{"{\"__metadata__\":{\"k\":\"v\\n\\u00e9\"}}", 0, 0, NULL},
};

static void test_st_lying_headers(void **state)
{
	(void)state;
	char err[FC_ERRLEN];
	size_t len;

	for (size_t i = 0; i < sizeof st_cases / sizeof *st_cases; i++) {
		const st_case *c = &st_cases[i];
		unsigned char *p = st_file(c->header, c->buf_len, &len);
		int rc = st_parse_rc(p, len, err);
		if (rc != c->rc || (c->msg && !strstr(err, c->msg)))
			fail_msg("case %zu %s: rc %d (want %d), message \"%s\" (want \"%s\")", i, c->header, rc, c->rc,
				 err, c->msg ? c->msg : "");
		free(p);
	}

	/* the order of the buffer, not of the JSON, is the order listed */
	fc_st_file *f;
	unsigned char *p = st_file(st_cases[46].header, st_cases[46].buf_len, &len);
	assert_int_equal(fc_st_parse(&f, p, len, err, sizeof err), 0);
	assert_string_equal(fc_st_at(f, 0)->name, "a");
	assert_string_equal(fc_st_at(f, 1)->name, "b");
	fc_st_free(f);
	free(p);

	/* header lengths: absurd, past the end, above the cap, zero */
	unsigned char small[16] = "\0\0\0\0\0\0\0\0{}      ";
	const uint64_t lens[] = {UINT64_MAX, (uint64_t)1 << 63, FC_ST_MAX_HEADER + 1, 9, 0, 1};
	for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
		for (int b = 0; b < 8; b++)
			small[b] = (unsigned char)(lens[i] >> (8 * b));
		assert_int_equal(st_parse_rc(small, 16, err), FC_ERR_CORRUPT);
	}
	assert_int_equal(st_parse_rc(small, 7, err), FC_ERR_CORRUPT);
	assert_non_null(strstr(err, "too short"));
	assert_int_equal(st_parse_rc(small, 0, err), FC_ERR_CORRUPT);
	/* padding with NULs instead of spaces */
	memcpy(small, "\x08\0\0\0\0\0\0\0{}\0\0\0\0\0\0", 16);
	assert_int_equal(st_parse_rc(small, 16, err), FC_ERR_CORRUPT);

	/* nesting 200000 deep: jansson's depth limit, not a stack overflow */
	size_t depth = 200000;
	char *deep = malloc(2 * depth + 64);
	size_t k = (size_t)sprintf(deep, "{\"__metadata__\":");
	memset(deep + k, '[', depth);
	memset(deep + k + depth, ']', depth);
	strcpy(deep + k + 2 * depth, "}");
	p = st_file(deep, 0, &len);
	assert_int_equal(st_parse_rc(p, len, err), FC_ERR_CORRUPT);
	free(p);
	free(deep);

	/* many tensors and many dims */
	size_t n = 5000;
	char *big = malloc(n * 80 + 16);
	k = (size_t)sprintf(big, "{");
	for (size_t i = 0; i < n; i++)
		k += (size_t)sprintf(big + k, "%s\"t%zu\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1],\"data_offsets\":[%zu,%zu]}",
				     i ? "," : "", i, i, i + 1);
	strcpy(big + k, "}");
	p = st_file(big, n, &len);
	assert_int_equal(fc_st_parse(&f, p, len, err, sizeof err), 0);
	assert_int_equal(fc_st_count(f), n);
	assert_string_equal(fc_st_find(f, "t4321")->name, "t4321");
	assert_int_equal(fc_st_find(f, "t4321")->shape[3], 1);
	fc_st_free(f);
	free(p);
	free(big);
}

static void test_st_open_errors(void **state)
{
	(void)state;
	fc_st_file *f = (fc_st_file *)1;
	char err[FC_ERRLEN];

	assert_int_equal(fc_st_open(&f, tmp_path("no/such.safetensors"), err, sizeof err), FC_ERR_NOT_FOUND);
	assert_null(f);
	assert_string_equal(err, "no such file or directory");
	assert_int_equal(fc_st_open(&f, tmproot, err, sizeof err), FC_ERR_INVALID);
	assert_int_equal(fc_st_open(&f, "/dev/null", err, sizeof err), FC_ERR_INVALID);
	/* an empty file */
	write_all(tmp_path("empty.safetensors"), "", 0);
	assert_int_equal(fc_st_open(&f, tmp_path("empty.safetensors"), err, sizeof err), FC_ERR_CORRUPT);
	/* a truncated copy of the reference, read from disk */
	size_t len;
	unsigned char *ref = testlib_read_file(fixture("ref.safetensors"), &len);
	write_all(tmp_path("cut.safetensors"), ref, len - 1);
	assert_int_equal(fc_st_open(&f, tmp_path("cut.safetensors"), err, sizeof err), FC_ERR_CORRUPT);
	assert_non_null(strstr(err, "run past"));
	free(ref);
	/* a tiny message buffer is cut, not overrun */
	char tiny[8];
	memset(tiny, 'x', sizeof tiny);
	assert_int_equal(fc_st_open(&f, tmp_path("cut.safetensors"), tiny, 5), FC_ERR_CORRUPT);
	assert_int_equal(strlen(tiny), 4);
	assert_int_equal(tiny[5], 'x');
}

/* ------------------------------------------------------------------ npy */

static void check_matrix(const float *m, size_t rows, size_t cols)
{
	for (size_t r = 0; r < rows; r++)
		for (size_t c = 0; c < cols; c++)
			if (m[r * cols + c] != npy_value(r, c, cols))
				fail_msg("(%zu, %zu) = %g, want %g", r, c, (double)m[r * cols + c],
					 (double)npy_value(r, c, cols));
}

static void test_npy_write_bytes(void **state)
{
	(void)state;
	char err[FC_ERRLEN];
	const char *path = tmp_path("m.npy");
	float *m = npy_matrix(4, 3);
	size_t len;
	unsigned char *got;
	char want[129];

	assert_int_equal(fc_npy_write_f32(path, m, 4, 3, err, sizeof err), 0);
	got = testlib_read_file(path, &len);
	assert_non_null(got);
	assert_int_equal(len, 128 + 48);
	assert_memory_equal(got, "\x93NUMPY\x01\x00\x76\x00", 10);
	snprintf(want, sizeof want, "%-117s\n", "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 3), }");
	assert_memory_equal(got + 10, want, 118);
	assert_memory_equal(got + 128, m, 48);
	free(got);

	/* the longest shape text still fits the 128-byte header; a dim numpy
	 * could not read is refused */
	float *back = (float *)1;
	size_t r, c;
	assert_int_equal(fc_npy_write_f32(path, NULL, 0, INT64_MAX, err, sizeof err), 0);
	got = testlib_read_file(path, &len);
	assert_int_equal(len, 128);
	assert_int_equal(got[127], '\n');
	free(got);
	assert_int_equal(fc_npy_read_f32(&back, &r, &c, path, err, sizeof err), 0);
	assert_null(back);
	assert_int_equal(r, 0);
	assert_int_equal(c, INT64_MAX);
	assert_int_equal(fc_npy_write_f32(path, NULL, (size_t)INT64_MAX + 1, 0, err, sizeof err), FC_ERR_INVALID);
	free(m);
}

static void test_npy_round_trip(void **state)
{
	(void)state;
	char err[FC_ERRLEN];
	const size_t shapes[][2] = {{1, 1}, {4, 3}, {7, 5}, {1, 1000}, {1000, 1}, {0, 6}, {6, 0}, {64, 257}};
	for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
		size_t rows = shapes[s][0], cols = shapes[s][1], r2, c2;
		float *m = npy_matrix(rows, cols), *back;
		const char *path = tmp_path("rt.npy");
		assert_int_equal(fc_npy_write_f32(path, m, rows, cols, err, sizeof err), 0);
		assert_int_equal(fc_npy_read_f32(&back, &r2, &c2, path, err, sizeof err), 0);
		assert_int_equal(r2, rows);
		assert_int_equal(c2, cols);
		if (rows && cols) {
			assert_non_null(back);
			assert_int_equal((uintptr_t)back % 64, 0);
			check_matrix(back, rows, cols);
		} else {
			assert_null(back);
		}
		free(back);
		free(m);
	}
}

static void test_npy_streaming(void **state)
{
	(void)state;
	char err[FC_ERRLEN], dir[600], path[700];
	fc_npy_writer *w;
	float *m = npy_matrix(7, 5), *back;
	size_t r, c;

	fresh_dir(dir, sizeof dir, "stream");
	snprintf(path, sizeof path, "%s/s.npy", dir);
	assert_int_equal(fc_npy_writer_open(&w, path, 7, 5, err, sizeof err), 0);
	assert_int_equal(fc_npy_writer_append(w, m, 3), 0);
	assert_int_equal(fc_npy_writer_append(w, m + 15, 0), 0);
	assert_int_equal(count_entries(dir), 1); /* only the temporary so far */
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(fc_npy_writer_append(w, m + 15, 4), 0);
	assert_int_equal(fc_npy_writer_finish(w), 0);
	assert_int_equal(fc_npy_writer_finish(w), FC_ERR_INVALID);
	assert_int_equal(fc_npy_writer_append(w, m, 1), FC_ERR_INVALID);
	fc_npy_writer_free(w);
	assert_int_equal(count_entries(dir), 1);
	assert_int_equal(fc_npy_read_f32(&back, &r, &c, path, err, sizeof err), 0);
	assert_int_equal(r, 7);
	assert_int_equal(c, 5);
	check_matrix(back, 7, 5);
	free(back);

	/* too many rows spoils the writer and leaves the old file alone */
	assert_int_equal(fc_npy_writer_open(&w, path, 2, 5, err, sizeof err), 0);
	assert_int_equal(fc_npy_writer_append(w, m, 3), FC_ERR_INVALID);
	assert_non_null(strstr(fc_npy_writer_errmsg(w), "declared"));
	assert_int_equal(fc_npy_writer_append(w, m, 1), FC_ERR_INVALID);
	assert_int_equal(fc_npy_writer_finish(w), FC_ERR_INVALID);
	fc_npy_writer_free(w);
	assert_int_equal(count_entries(dir), 1);
	assert_int_equal(fc_npy_read_f32(&back, &r, &c, path, err, sizeof err), 0);
	assert_int_equal(r, 7);
	free(back);

	/* too few rows at finish */
	assert_int_equal(fc_npy_writer_open(&w, path, 4, 5, err, sizeof err), 0);
	assert_int_equal(fc_npy_writer_append(w, m, 3), 0);
	assert_int_equal(fc_npy_writer_finish(w), FC_ERR_INVALID);
	assert_non_null(strstr(fc_npy_writer_errmsg(w), "only 3 of 4"));
	fc_npy_writer_free(w);
	assert_int_equal(count_entries(dir), 1);

	/* freed without finish: abandoned */
	snprintf(path, sizeof path, "%s/t.npy", dir);
	assert_int_equal(fc_npy_writer_open(&w, path, 7, 5, err, sizeof err), 0);
	assert_int_equal(fc_npy_writer_append(w, m, 7), 0);
	fc_npy_writer_free(w);
	fc_npy_writer_free(NULL);
	assert_int_equal(count_entries(dir), 1);

	/* a shape whose size overflows */
	w = (fc_npy_writer *)1;
	assert_int_equal(fc_npy_writer_open(&w, path, SIZE_MAX / 2, 3, err, sizeof err), FC_ERR_OVERFLOW);
	assert_null(w);
	assert_int_equal(count_entries(dir), 1);
	free(m);
}

static void test_npy_reads_numpy(void **state)
{
	(void)state;
	static const char *const files[] = {"np_f4.npy", "np_f2.npy", "np_f4_fortran.npy", "np_f4_be.npy",
					    "np_f4_v2.npy"};
	char err[FC_ERRLEN];
	for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
		float *m = NULL;
		size_t r, c, len;
		int rc = fc_npy_read_f32(&m, &r, &c, fixture(files[i]), err, sizeof err);
		if (rc != 0)
			fail_msg("%s: %s", files[i], err);
		assert_int_equal(r, 3);
		assert_int_equal(c, 5);
		check_matrix(m, 3, 5);
		free(m);

		unsigned char *p = testlib_read_file(fixture(files[i]), &len);
		assert_int_equal(fc_npy_parse_f32(&m, &r, &c, p, len, err, sizeof err), 0);
		check_matrix(m, 3, 5);
		free(m);
		free(p);
	}
}

/* An .npy with the given dict (padded to a 64-byte boundary) and data_len
 * zero bytes; version 1 or 2. */
static unsigned char *npy_file(const char *dict, size_t data_len, int version, size_t *len)
{
	size_t pre = version == 1 ? 10 : 12, dl = strlen(dict);
	size_t hl = (pre + dl + 1 + 63) / 64 * 64 - pre;
	unsigned char *p = calloc(1, pre + hl + data_len + 1);
	memcpy(p, "\x93NUMPY", 6);
	p[6] = (unsigned char)version;
	p[7] = 0;
	for (size_t i = 0; i < pre - 8; i++)
		p[8 + i] = (unsigned char)(hl >> (8 * i));
	memcpy(p + pre, dict, dl);
	memset(p + pre + dl, ' ', hl - dl - 1);
	p[pre + hl - 1] = '\n';
	*len = pre + hl + data_len;
	return p;
}

/* Big-endian f2 in Fortran order: the swap, the conversion and the
 * transpose together, against the formula. */
static void test_npy_f2_big_endian_fortran(void **state)
{
	(void)state;
	char err[FC_ERRLEN];
	size_t len, rows = 3, cols = 4, r, c;
	unsigned char *p = npy_file("{'descr': '>f2', 'fortran_order': True, 'shape': (3, 4), }", 2 * 12, 1, &len);
	unsigned char *d = p + len - 24;
	float *m;

	for (size_t j = 0; j < cols; j++)
		for (size_t i = 0; i < rows; i++) {
			float v = npy_value(i, j, cols);
			uint16_t h;
			fci_f32_to_f16(&h, &v, 1);
			d[2 * (j * rows + i)] = (unsigned char)(h >> 8);
			d[2 * (j * rows + i) + 1] = (unsigned char)h;
		}
	assert_int_equal(fc_npy_parse_f32(&m, &r, &c, p, len, err, sizeof err), 0);
	assert_int_equal(r, rows);
	assert_int_equal(c, cols);
	check_matrix(m, rows, cols);
	free(m);
	free(p);
}

static int npy_parse_rc(const void *p, size_t len, char *err)
{
	float *m = (float *)1;
	size_t r = 9, c = 9;
	int rc;
	err[0] = '\0';
	rc = fc_npy_parse_f32(&m, &r, &c, p, len, err, FC_ERRLEN);
	if (rc == 0) {
		/* whatever was accepted is as big as its shape says */
		if (r && c) {
			volatile float sink = m[r * c - 1];
			(void)sink;
		} else {
			assert_null(m);
		}
	} else {
		assert_null(m);
		assert_int_equal(r, 0);
		assert_int_equal(c, 0);
		assert_true(err[0] != '\0');
	}
	free(m);
	return rc;
}

typedef struct npy_case {
	const char *dict;
	size_t data_len;
	int rc;
	const char *msg;
} npy_case;

static const npy_case npy_cases[] = {
	{"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 24, 0, NULL},
	{"{\"shape\": (2,3), \"descr\": \"<f4\", \"fortran_order\": False}", 24, 0, NULL},
	{"{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L)}", 24, 0, NULL},
	{"{'descr': 'f4', 'fortran_order': True, 'shape': (2, 3), }", 24, 0, NULL},
	{"{'descr': '>f2', 'fortran_order': False, 'shape': (2, 3), }", 12, 0, NULL},
	{"{'descr': '<f4', 'fortran_order': False, 'shape': (0, 3), }", 0, 0, NULL},
	{"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 23, FC_ERR_CORRUPT, "truncated"},
	{"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 25, FC_ERR_CORRUPT, "trailing"},
	{"{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 3), }", 0, FC_ERR_CORRUPT, "negative"},
	{"{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4611686018427387904), }", 0,
	 FC_ERR_CORRUPT, "overflows"},
	{"{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }", 0, FC_ERR_CORRUPT,
	 "overflows"},
	{"{'descr': '<f4', 'fortran_order': False, 'shape': (9223372036854775808, 1), }", 0, FC_ERR_CORRUPT,
	 "above 2^63-1"},
	{"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999, 1), }", 0, FC_ERR_CORRUPT,
	 "above 2^63-1"},
	{"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4), }", 96, FC_ERR_UNSUPPORTED, "3-D"},
	{"{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", 24, FC_ERR_UNSUPPORTED, "1-D"},
	{"{'descr': '<f4', 'fortran_order': False, 'shape': (), }", 4, FC_ERR_UNSUPPORTED, "0-D"},
	{"{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }", 24, FC_ERR_UNSUPPORTED, "'<i4'"},
	{"{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", 48, FC_ERR_UNSUPPORTED, "'<f8'"},
	{"{'descr': '|O', 'fortran_order': False, 'shape': (2, 3), }", 48, FC_ERR_UNSUPPORTED, "'|O'"},
	{"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2, 3), }", 24, FC_ERR_UNSUPPORTED,
	 "structured"},
	{"{'descr': 4, 'fortran_order': False, 'shape': (2, 3), }", 24, FC_ERR_CORRUPT, "descr"},
	{"{'descr': '<f4', 'shape': (2, 3), }", 24, FC_ERR_CORRUPT, "no 'fortran_order'"},
	{"{'descr': '<f4', 'fortran_order': False}", 24, FC_ERR_CORRUPT, "no 'shape'"},
	{"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 24, FC_ERR_CORRUPT,
	 "twice"},
	{"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1}", 24, FC_ERR_CORRUPT, "unknown key 'x'"},
	{"{'descr': '<f4', 'fortran_order': maybe, 'shape': (2, 3), }", 24, FC_ERR_CORRUPT, "fortran_order"},
	{"{'descr': '<f4', 'fortran_order': False, 'shape': [2, 3], }", 24, FC_ERR_CORRUPT, "not a tuple"},
	{"{'descr': '<f4', 'fortran_order': False, 'shape': (2 3), }", 24, FC_ERR_CORRUPT, "tuple of integers"},
	{"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } x", 24, FC_ERR_CORRUPT, "after its dict"},
	{"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), ", 24, FC_ERR_CORRUPT, "expected a quoted key"},
	{"{'descr: '<f4', 'fortran_order': False, 'shape': (2, 3), }", 24, FC_ERR_CORRUPT, "unknown key 'descr: '"},
	{"{'descr' '<f4', 'fortran_order': False, 'shape': (2, 3), }", 24, FC_ERR_CORRUPT, "expected ':' after 'descr'"},
	{"{'descr': '<f4' 'fortran_order': False, 'shape': (2, 3), }", 24, FC_ERR_CORRUPT, "expected ',' or '}'"},
	{"{'des\\'cr': '<f4'}", 24, FC_ERR_CORRUPT, "quoted key"},
	{"('descr', '<f4')", 24, FC_ERR_CORRUPT, "not a dict"},
	{"", 24, FC_ERR_CORRUPT, "not a dict"},
};

static void test_npy_lying_headers(void **state)
{
	(void)state;
	char err[FC_ERRLEN];
	size_t len;

	for (size_t i = 0; i < sizeof npy_cases / sizeof *npy_cases; i++) {
		const npy_case *c = &npy_cases[i];
		for (int v = 1; v <= 2; v++) {
			unsigned char *p = npy_file(c->dict, c->data_len, v, &len);
			int rc = npy_parse_rc(p, len, err);
			if (rc != c->rc || (c->msg && !strstr(err, c->msg)))
				fail_msg("case %zu v%d %s: rc %d (want %d), message \"%s\" (want \"%s\")", i, v, c->dict,
					 rc, c->rc, err, c->msg ? c->msg : "");
			free(p);
		}
	}

	/* the preamble */
	unsigned char *p = npy_file(npy_cases[0].dict, 24, 1, &len);
	p[0] = 'x';
	assert_int_equal(npy_parse_rc(p, len, err), FC_ERR_CORRUPT);
	assert_non_null(strstr(err, "magic"));
	p[0] = 0x93;
	p[6] = 9, p[7] = 9;
	assert_int_equal(npy_parse_rc(p, len, err), FC_ERR_VERSION);
	assert_non_null(strstr(err, "9.9"));
	p[6] = 1, p[7] = 1;
	assert_int_equal(npy_parse_rc(p, len, err), FC_ERR_VERSION);
	p[7] = 0;
	p[8] = 0xff, p[9] = 0xff; /* header length past the end */
	assert_int_equal(npy_parse_rc(p, len, err), FC_ERR_CORRUPT);
	assert_non_null(strstr(err, "past the end"));
	p[8] = 0, p[9] = 0; /* empty header */
	assert_int_equal(npy_parse_rc(p, len, err), FC_ERR_CORRUPT);
	free(p);
	p = npy_file(npy_cases[0].dict, 24, 2, &len);
	p[8] = p[9] = p[10] = p[11] = 0xff; /* 4 GiB header */
	assert_int_equal(npy_parse_rc(p, len, err), FC_ERR_CORRUPT);
	assert_non_null(strstr(err, "limit"));
	p[8] = 0, p[9] = 0, p[10] = 1, p[11] = 0; /* 64 KiB: at the limit, past the end */
	assert_int_equal(npy_parse_rc(p, len, err), FC_ERR_CORRUPT);
	assert_int_equal(npy_parse_rc(p, 11, err), FC_ERR_CORRUPT);
	assert_int_equal(npy_parse_rc(p, 0, err), FC_ERR_CORRUPT);
	assert_int_equal(npy_parse_rc(NULL, 0, err), FC_ERR_CORRUPT);
	free(p);
}

static void test_npy_truncation_and_flips(void **state)
{
	(void)state;
	char err[FC_ERRLEN];
	size_t len, ok = 0, bad = 0;
	unsigned char *p = testlib_read_file(fixture("np_f4.npy"), &len);

	assert_non_null(p);
	for (size_t cut = 0; cut < len; cut++)
		assert_true(npy_parse_rc(p, cut, err) < 0);
	size_t data = 10 + (p[8] | (size_t)p[9] << 8);
	flip_each(p, len, data, npy_parse_rc, &ok, &bad);
	printf("# npy header flips: %zu accepted, %zu refused\n", ok, bad);
	assert_true(bad > ok);
	free(p);

	/* the same for an f2, Fortran-order file (other conversion paths) */
	p = testlib_read_file(fixture("np_f2.npy"), &len);
	for (size_t cut = 0; cut < len; cut++)
		assert_true(npy_parse_rc(p, cut, err) < 0);
	for (size_t i = 0; i < len; i++) {
		p[i] ^= 0xff;
		npy_parse_rc(p, len, err);
		p[i] ^= 0xff;
	}
	free(p);
}

static void test_npy_open_errors(void **state)
{
	(void)state;
	char err[FC_ERRLEN], path[700];
	float *m = (float *)1;
	size_t r = 1, c = 1;

	assert_int_equal(fc_npy_read_f32(&m, &r, &c, tmp_path("no/such.npy"), err, sizeof err), FC_ERR_NOT_FOUND);
	assert_null(m);
	assert_string_equal(err, "no such file or directory");
	assert_int_equal(fc_npy_read_f32(&m, &r, &c, tmproot, err, sizeof err), FC_ERR_INVALID);
	snprintf(path, sizeof path, "%s/no/such/dir/x.npy", tmproot);
	float one = 1.0f;
	assert_int_equal(fc_npy_write_f32(path, &one, 1, 1, err, sizeof err), FC_ERR_NOT_FOUND);
	assert_non_null(strstr(err, "no such file or directory"));
	fci_outfile *f = (fci_outfile *)1;
	assert_int_equal(fci_outfile_open(&f, path, err, sizeof err), FC_ERR_NOT_FOUND);
	assert_null(f);
	fci_outfile_free(NULL);
}

/* ------------------------------------------------------ failing file systems */

/* In a child (so that limits and mounts stay there), without cmocka: 0 when
 * every check held, 77 when the environment cannot run it, else the line of
 * the failed check. */
#define CHILD_CHECK(cond)                                                                   \
	do {                                                                                \
		if (!(cond)) {                                                              \
			fprintf(stderr, "# child check failed at line %d: %s\n", __LINE__, #cond); \
			_exit(__LINE__ % 200 + 1);                                          \
		}                                                                           \
	} while (0)

static int run_child(void (*fn)(const char *), const char *arg, const char *what)
{
	int status;
	pid_t pid;
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		fn(arg);
		_exit(0);
	}
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		fail_msg("%s: the child died", what);
	if (WEXITSTATUS(status) == 77) {
		printf("# skip %s: cannot mount here (not root, or no mount namespace)\n", what);
		return 77;
	}
	if (WEXITSTATUS(status) != 0)
		fail_msg("%s: a check failed in the child (status %d)", what, WEXITSTATUS(status));
	return 0;
}

/* A private mount namespace, so the tmpfs vanishes with the child. */
static int mount_tmpfs(const char *dir, unsigned long flags, const char *opts)
{
	if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
		return -1;
	return mount("tmpfs", dir, "tmpfs", flags, opts);
}

static void child_full_tmpfs(const char *dir)
{
	char err[FC_ERRLEN], path[700];
	fc_st_tensor t[9], big;
	const uint64_t shape[1] = {256 * 1024};
	float *data = calloc(256 * 1024, sizeof(float));
	size_t len;

	if (mount_tmpfs(dir, 0, "size=64k") != 0)
		_exit(77);
	/* a small file fits */
	head_tensors(t);
	snprintf(path, sizeof path, "%s/head.safetensors", dir);
	CHILD_CHECK(fc_st_write(path, t, 9, head_meta, 2, err, sizeof err) == 0);
	unsigned char *before = testlib_read_file(path, &len);
	CHILD_CHECK(before && len == 900);
	/* 1 MiB does not: FC_ERR_FULL, the old file intact, no temporary left */
	big = (fc_st_tensor){"big", FC_ST_F32, 1, shape, data, 0};
	err[0] = '\0';
	CHILD_CHECK(fc_st_write(path, &big, 1, NULL, 0, err, sizeof err) == FC_ERR_FULL);
	fprintf(stderr, "# full tmpfs, safetensors: %s\n", err);
	CHILD_CHECK(strstr(err, "no space left on device") != NULL);
	CHILD_CHECK(count_entries(dir) == 1);
	size_t len2;
	unsigned char *after = testlib_read_file(path, &len2);
	CHILD_CHECK(after && len2 == len && memcmp(before, after, len) == 0);
	/* and .npy, one-shot and streamed */
	snprintf(path, sizeof path, "%s/m.npy", dir);
	CHILD_CHECK(fc_npy_write_f32(path, data, 1024, 256, err, sizeof err) == FC_ERR_FULL);
	fprintf(stderr, "# full tmpfs, npy: %s\n", err);
	fc_npy_writer *w;
	CHILD_CHECK(fc_npy_writer_open(&w, path, 1024, 256, err, sizeof err) == 0);
	int rc = 0;
	for (int i = 0; i < 1024 && rc == 0; i += 64)
		rc = fc_npy_writer_append(w, data, 64);
	CHILD_CHECK(rc == FC_ERR_FULL);
	CHILD_CHECK(fc_npy_writer_finish(w) == FC_ERR_FULL);
	CHILD_CHECK(strstr(fc_npy_writer_errmsg(w), "no space") != NULL);
	fc_npy_writer_free(w);
	CHILD_CHECK(count_entries(dir) == 1);
	free(before);
	free(after);
	free(data);
}

static void child_readonly_tmpfs(const char *dir)
{
	char err[FC_ERRLEN], path[700];
	fc_st_tensor t[9];
	float one = 1.0f;

	if (mount_tmpfs(dir, MS_RDONLY, "size=64k") != 0)
		_exit(77);
	head_tensors(t);
	snprintf(path, sizeof path, "%s/head.safetensors", dir);
	CHILD_CHECK(fc_st_write(path, t, 9, head_meta, 2, err, sizeof err) == FC_ERR_IO);
	fprintf(stderr, "# read-only tmpfs: %s\n", err);
	CHILD_CHECK(strstr(err, "read-only file system") != NULL);
	snprintf(path, sizeof path, "%s/m.npy", dir);
	CHILD_CHECK(fc_npy_write_f32(path, &one, 1, 1, err, sizeof err) == FC_ERR_IO);
	CHILD_CHECK(count_entries(dir) == 0);
}

/* Where mounting is not allowed, a file-size limit makes write() fail
 * with EFBIG just the same, mid-file. */
static void child_fsize_limit(const char *dir)
{
	char err[FC_ERRLEN], path[700];
	const uint64_t shape[1] = {256 * 1024};
	float *data = calloc(256 * 1024, sizeof(float));
	struct rlimit rl = {100000, 100000};
	fc_st_tensor big = {"big", FC_ST_F32, 1, shape, data, 0};

	signal(SIGXFSZ, SIG_IGN);
	CHILD_CHECK(setrlimit(RLIMIT_FSIZE, &rl) == 0);
	snprintf(path, sizeof path, "%s/big.safetensors", dir);
	CHILD_CHECK(fc_st_write(path, &big, 1, NULL, 0, err, sizeof err) == FC_ERR_FULL);
	fprintf(stderr, "# file-size limit: %s\n", err);
	CHILD_CHECK(count_entries(dir) == 0);
	free(data);
}

static void test_io_failures(void **state)
{
	(void)state;
	char dir[600];

	fresh_dir(dir, sizeof dir, "full");
	run_child(child_full_tmpfs, dir, "full tmpfs");
	fresh_dir(dir, sizeof dir, "readonly");
	run_child(child_readonly_tmpfs, dir, "read-only tmpfs");
	fresh_dir(dir, sizeof dir, "fsize");
	run_child(child_fsize_limit, dir, "file-size limit");

	/* a read-only directory: only refused when we are not root */
	char err[FC_ERRLEN], path[700];
	float one = 1.0f;
	fresh_dir(dir, sizeof dir, "rodir");
	assert_int_equal(chmod(dir, 0555), 0);
	snprintf(path, sizeof path, "%s/m.npy", dir);
	if (geteuid() != 0) {
		assert_int_equal(fc_npy_write_f32(path, &one, 1, 1, err, sizeof err), FC_ERR_IO);
		assert_non_null(strstr(err, "permission denied"));
		assert_int_equal(count_entries(dir), 0);
	} else {
		printf("# skip chmod 0555 directory: root writes anyway (the read-only tmpfs covers EROFS)\n");
	}
	chmod(dir, 0755);

	/* the target is a directory: the rename fails, the temporary goes */
	fresh_dir(dir, sizeof dir, "isdir");
	snprintf(path, sizeof path, "%s/sub", dir);
	assert_int_equal(mkdir(path, 0755), 0);
	assert_true(fc_npy_write_f32(path, &one, 1, 1, err, sizeof err) < 0);
	assert_non_null(strstr(err, "rename"));
	assert_int_equal(count_entries(dir), 1);
}

/* With FC_TENSORIO_EXPORT=DIR, leave the C-written files for the Python
 * check; otherwise nothing to do. */
static void test_export(void **state)
{
	(void)state;
	const char *dir = getenv("FC_TENSORIO_EXPORT");
	char err[FC_ERRLEN], path[1024];
	fc_st_tensor t[9];
	fc_npy_writer *w;

	if (!dir || !*dir)
		return;
	head_tensors(t);
	snprintf(path, sizeof path, "%s/c_ref.safetensors", dir);
	assert_int_equal(fc_st_write(path, t, 9, head_meta, 2, err, sizeof err), 0);
	float *m = npy_matrix(4, 3);
	snprintf(path, sizeof path, "%s/c_matrix.npy", dir);
	assert_int_equal(fc_npy_write_f32(path, m, 4, 3, err, sizeof err), 0);
	free(m);
	m = npy_matrix(7, 5);
	snprintf(path, sizeof path, "%s/c_stream.npy", dir);
	assert_int_equal(fc_npy_writer_open(&w, path, 7, 5, err, sizeof err), 0);
	for (size_t r = 0; r < 7; r += 2)
		assert_int_equal(fc_npy_writer_append(w, m + r * 5, r + 2 <= 7 ? 2 : 1), 0);
	assert_int_equal(fc_npy_writer_finish(w), 0);
	fc_npy_writer_free(w);
	free(m);
	snprintf(path, sizeof path, "%s/c_empty.npy", dir);
	assert_int_equal(fc_npy_write_f32(path, NULL, 0, 6, err, sizeof err), 0);
	printf("# exported C-written files to %s\n", dir);
}

static int group_setup(void **state)
{
	(void)state;
	tmproot = testlib_tmpdir("tensorio");
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	testlib_rmtree(tmproot);
	free(tmproot);
	return 0;
}

int main(void)
{
	testlib_seed("test_io");

	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_st_dtypes),
		cmocka_unit_test(test_st_matches_python_reference),
		cmocka_unit_test(test_st_read_reference),
		cmocka_unit_test(test_st_copy_conversions),
		cmocka_unit_test(test_st_round_trip_random),
		cmocka_unit_test(test_st_writer_refuses),
		cmocka_unit_test(test_st_truncation_and_flips),
		cmocka_unit_test(test_st_lying_headers),
		cmocka_unit_test(test_st_open_errors),
		cmocka_unit_test(test_npy_write_bytes),
		cmocka_unit_test(test_npy_round_trip),
		cmocka_unit_test(test_npy_streaming),
		cmocka_unit_test(test_npy_reads_numpy),
		cmocka_unit_test(test_npy_f2_big_endian_fortran),
		cmocka_unit_test(test_npy_lying_headers),
		cmocka_unit_test(test_npy_truncation_and_flips),
		cmocka_unit_test(test_npy_open_errors),
		cmocka_unit_test(test_io_failures),
		cmocka_unit_test(test_export),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
