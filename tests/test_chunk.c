/*
 * test_chunk.c - unit tests of store/chunk.c: round trips of every dtype and
 * codec, the f16/bf16 conversions against naive references, and damaged or
 * lying records.
 *
 * Random data comes from one seed, printed at the start; set FC_SEED to
 * replay a failure.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>
#include <zstd.h>

#include "store/chunk.h"
#include "tests/testlib.h"

static uint32_t bits_of(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

static float float_of(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static const fc_dtype all_dtypes[] = {FC_DTYPE_F32, FC_DTYPE_F16, FC_DTYPE_BF16, FC_DTYPE_U8};
static const fc_codec all_codecs[] = {FC_CODEC_RAW, FC_CODEC_ZSTD, FC_CODEC_SHUFFLE_ZSTD};

/* Shaped like globally pooled post-ReLU CNN features: non-negative, a few
 * dead channels, a long right tail, a per-image scale. Or, with signed, a
 * zero-centred vector (pre-activation or projected features). */
static void gen_vectors(float *x, uint32_t dim, uint32_t count, int is_signed)
{
	for (size_t v = 0; v < count; v++) {
		double scale = 0.05 + 2.0 * testlib_unit_pos();
		for (size_t i = 0; i < dim; i++) {
			double u = testlib_unit_pos();
			double val;
			if (is_signed)
				val = scale * (testlib_unit_pos() + testlib_unit_pos() + testlib_unit_pos() - 1.5) * 2.0;
			else if (u < 0.12)
				val = 0.0;
			else
				val = scale * -log(testlib_unit_pos()) * (0.3 + u);
			x[v * dim + i] = (float)val;
		}
	}
}

static void gen_hashes(uint8_t (*h)[FC_HASH_LEN], uint32_t count)
{
	for (size_t i = 0; i < count; i++)
		for (size_t b = 0; b < FC_HASH_LEN; b++)
			h[i][b] = (uint8_t)testlib_rand();
}

/* The format's checksum, restated from chunk.h so the tests check the
 * documented layout rather than the implementation's helper. */
static void reseal(uint8_t *p, size_t len)
{
	uint64_t h = XXH3_64bits_withSeed(p + 32, len - 32, XXH3_64bits(p, 24));
	for (int i = 0; i < 8; i++)
		p[24 + i] = (uint8_t)(h >> (8 * i));
}

static void put32le(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32le(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* A freshly encoded chunk of random vectors; *vecs_out (may be NULL)
 * receives the input. */
static uint8_t *make_chunk(fci_chunk_ctx *ctx, fc_dtype dt, fc_codec cd, uint32_t dim, uint32_t count,
			   size_t *len, float **vecs_out)
{
	size_t n = (size_t)dim * count;
	float *vecs = malloc(n * sizeof(float));
	uint8_t(*hashes)[FC_HASH_LEN] = malloc(count * sizeof(*hashes));
	size_t cap = fci_chunk_bound(dt, cd, dim, count);
	uint8_t *buf = malloc(cap);

	assert_non_null(vecs);
	assert_non_null(hashes);
	assert_non_null(buf);
	gen_vectors(vecs, dim, count, 0);
	gen_hashes(hashes, count);
	assert_int_equal(fci_chunk_encode(ctx, buf, cap, len, vecs, (const uint8_t(*)[FC_HASH_LEN])hashes, dim,
					 count, dt, cd, 3),
			 0);
	free(hashes);
	if (vecs_out)
		*vecs_out = vecs;
	else
		free(vecs);
	return buf;
}

/* ---- names and sizes ---- */

static void test_names(void **state)
{
	(void)state;
	const char *dn[] = {"f32", "f16", "bf16", "u8"};
	const char *cn[] = {"raw", "zstd", "shuffle-zstd"};
	fc_dtype d;
	fc_codec c;

	for (int i = 0; i < 4; i++) {
		assert_string_equal(fc_dtype_name(all_dtypes[i]), dn[i]);
		assert_int_equal(fc_dtype_parse(dn[i], &d), 0);
		assert_int_equal(d, all_dtypes[i]);
	}
	for (int i = 0; i < 3; i++) {
		assert_string_equal(fc_codec_name(all_codecs[i]), cn[i]);
		assert_int_equal(fc_codec_parse(cn[i], &c), 0);
		assert_int_equal(c, all_codecs[i]);
	}
	assert_int_equal(fc_dtype_parse("F32", &d), FC_ERR_INVALID);
	assert_int_equal(fc_dtype_parse("", &d), FC_ERR_INVALID);
	assert_int_equal(fc_dtype_parse(NULL, &d), FC_ERR_INVALID);
	assert_int_equal(fc_codec_parse("shuffle", &c), FC_ERR_INVALID);
	assert_int_equal(fc_codec_parse("zstd", NULL), FC_ERR_INVALID);
	assert_non_null(fc_dtype_name((fc_dtype)9));
	assert_non_null(fc_codec_name((fc_codec)9));
}

static void test_sizes(void **state)
{
	(void)state;
	assert_int_equal(fci_chunk_raw_len(FC_DTYPE_F32, 2048, 64), 4 * 2048 * 64);
	assert_int_equal(fci_chunk_raw_len(FC_DTYPE_F16, 2048, 64), 2 * 2048 * 64);
	assert_int_equal(fci_chunk_raw_len(FC_DTYPE_BF16, 1, 1), 2);
	assert_int_equal(fci_chunk_raw_len(FC_DTYPE_U8, 2048, 64), 8 * 64 + 2048 * 64);
	assert_int_equal(fci_chunk_raw_len(FC_DTYPE_F32, 0, 1), 0);
	assert_int_equal(fci_chunk_raw_len(FC_DTYPE_F32, 1, 0), 0);
	assert_int_equal(fci_chunk_raw_len(FC_DTYPE_F32, FC_CHUNK_MAX_DIM + 1, 1), 0);
	assert_int_equal(fci_chunk_raw_len(FC_DTYPE_F32, 1, FC_CHUNK_MAX_COUNT + 1), 0);
	assert_int_equal(fci_chunk_raw_len((fc_dtype)4, 1, 1), 0);
	/* exactly the cap, then one vector past it */
	assert_int_equal(fci_chunk_raw_len(FC_DTYPE_F32, FC_CHUNK_MAX_DIM, 512), FC_CHUNK_MAX_RAW);
	assert_int_equal(fci_chunk_raw_len(FC_DTYPE_F32, FC_CHUNK_MAX_DIM, 513), 0);
	assert_int_equal(fci_chunk_raw_len(FC_DTYPE_F32, FC_CHUNK_MAX_DIM, FC_CHUNK_MAX_COUNT), 0);
	assert_int_equal(fci_chunk_raw_len(FC_DTYPE_U8, FC_CHUNK_MAX_DIM, 2048), 0);

	assert_int_equal(fci_chunk_bound(FC_DTYPE_F32, FC_CODEC_RAW, 7, 3), 32 + 16 * 3 + 4 * 21);
	assert_true(fci_chunk_bound(FC_DTYPE_F32, FC_CODEC_ZSTD, 7, 3) >= 32 + 16 * 3 + 4 * 21);
	assert_int_equal(fci_chunk_bound(FC_DTYPE_F32, (fc_codec)3, 7, 3), 0);
	assert_int_equal(fci_chunk_bound(FC_DTYPE_F32, FC_CODEC_ZSTD, 0, 3), 0);
}

/* ---- round trips ---- */

/* max over vectors of max|x - y| / max|x| (u8: / (max - min)) */
static double vec_rel_err(const float *x, const float *y, uint32_t dim, uint32_t count, fc_dtype dt)
{
	double worst = 0.0;
	for (size_t v = 0; v < count; v++) {
		const float *a = x + v * dim, *b = y + v * dim;
		double amax = 0.0, lo = a[0], hi = a[0], err = 0.0;
		for (size_t i = 0; i < dim; i++) {
			amax = fmax(amax, fabs(a[i]));
			lo = fmin(lo, a[i]);
			hi = fmax(hi, a[i]);
			err = fmax(err, fabs((double)a[i] - b[i]));
		}
		double denom = dt == FC_DTYPE_U8 ? hi - lo : amax;
		double rel = denom > 0.0 ? err / denom : (err > 0.0 ? INFINITY : 0.0);
		worst = fmax(worst, rel);
	}
	return worst;
}

static const double err_bound[] = {
	[FC_DTYPE_F32] = 0.0,
	[FC_DTYPE_F16] = 0x1p-11,
	[FC_DTYPE_BF16] = 0x1p-8,
	[FC_DTYPE_U8] = 1.0 / 510.0 + 1e-6,
};

/* Encode, parse, decode into a buffer with guard floats after it; returns
 * the relative error and the encoded size. */
static double round_trip(fci_chunk_ctx *ctx, const float *vecs, uint32_t dim, uint32_t count, fc_dtype dt,
			 fc_codec cd, size_t *enc_len)
{
	size_t n = (size_t)dim * count;
	size_t cap = fci_chunk_bound(dt, cd, dim, count);
	uint8_t *buf = malloc(cap);
	uint8_t(*hashes)[FC_HASH_LEN] = malloc(count * sizeof(*hashes));
	float *out = malloc((n + 4) * sizeof(float));
	fci_chunk_info info;
	size_t len = 0;

	assert_non_null(buf);
	assert_non_null(hashes);
	assert_non_null(out);
	gen_hashes(hashes, count);
	assert_int_equal(fci_chunk_encode(ctx, buf, cap, &len, vecs, (const uint8_t(*)[FC_HASH_LEN])hashes, dim,
					 count, dt, cd, 3),
			 0);
	assert_true(len > 32 && len <= cap);

	assert_int_equal(fci_chunk_parse(buf, len, &info), 0);
	assert_int_equal(info.dtype, dt);
	assert_int_equal(info.codec, cd);
	assert_int_equal(info.dim, dim);
	assert_int_equal(info.count, count);
	assert_int_equal(info.raw_len, fci_chunk_raw_len(dt, dim, count));
	assert_int_equal(32 + 16 * (size_t)count + info.payload_len, len);
	assert_memory_equal(info.hashes, hashes, count * sizeof(*hashes));
	assert_ptr_equal(info.payload, buf + 32 + 16 * (size_t)count);

	for (size_t i = 0; i < n + 4; i++)
		out[i] = -12345.0f;
	assert_int_equal(fci_chunk_decode(ctx, buf, len, out, n + 4), 0);
	for (size_t i = n; i < n + 4; i++)
		assert_true(out[i] == -12345.0f); /* nothing written past dim*count */

	double err = 0.0;
	if (dt == FC_DTYPE_F32)
		assert_memory_equal(out, vecs, n * sizeof(float));
	else
		err = vec_rel_err(vecs, out, dim, count, dt);
	*enc_len = len;
	free(out);
	free(hashes);
	free(buf);
	return err;
}

static void test_round_trip(void **state)
{
	(void)state;
	static const uint32_t shapes[][2] = {{1, 1}, {2048, 64}, {7, 3}, {1000, 13}, {3, 65}, {513, 2}, {64, 1}};
	fci_chunk_ctx *ctx = fci_chunk_ctx_new();
	assert_non_null(ctx);

	for (size_t di = 0; di < 4; di++) {
		fc_dtype dt = all_dtypes[di];
		for (size_t ci = 0; ci < 3; ci++) {
			fc_codec cd = all_codecs[ci];
			double worst = 0.0;
			size_t big_len = 0;
			for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
				uint32_t dim = shapes[si][0], count = shapes[si][1];
				float *vecs = malloc((size_t)dim * count * sizeof(float));
				assert_non_null(vecs);
				for (int is_signed = 0; is_signed < 2; is_signed++) {
					size_t len;
					gen_vectors(vecs, dim, count, is_signed);
					double e = round_trip(ctx, vecs, dim, count, dt, cd, &len);
					if (e > err_bound[dt])
						print_message("%s/%s dim %u count %u signed %d: rel err %.3g > %.3g\n",
							      fc_dtype_name(dt), fc_codec_name(cd), dim, count,
							      is_signed, e, err_bound[dt]);
					assert_true(e <= err_bound[dt]);
					worst = fmax(worst, e);
					if (dim == 2048 && !is_signed)
						big_len = len;
				}
				free(vecs);
			}
			print_message("%-4s %-12s max rel err %.3g (bound %.3g), 2048x64 ReLU-like: %.2fx smaller than f32\n",
				      fc_dtype_name(dt), fc_codec_name(cd), worst, err_bound[dt],
				      (double)(2048 * 64 * 4) / (double)big_len);
		}
	}
	fci_chunk_ctx_free(ctx);
}

/* f32 keeps every bit, the odd ones included, through every codec. */
static void test_f32_special_bits(void **state)
{
	(void)state;
	static const uint32_t special[] = {
		0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00001, 0x7f800001,
		0x7fbfffff, 0x00000001, 0x807fffff, 0x7f7fffff, 0xff7fffff, 0x3f800000, 0x00800000,
	};
	uint32_t dim = sizeof(special) / sizeof(special[0]), count = 3;
	float vecs[3 * 14];
	float out[3 * 14];
	uint8_t hashes[3][FC_HASH_LEN] = {{0}};
	uint8_t buf[1024];
	fci_chunk_ctx *ctx = fci_chunk_ctx_new();

	assert_non_null(ctx);
	for (size_t i = 0; i < dim * count; i++)
		vecs[i] = float_of(special[i % dim] ^ (uint32_t)(i / dim)); /* vary the low bits per vector */
	for (size_t ci = 0; ci < 3; ci++) {
		size_t len;
		assert_true(fci_chunk_bound(FC_DTYPE_F32, all_codecs[ci], dim, count) <= sizeof(buf));
		assert_int_equal(fci_chunk_encode(ctx, buf, sizeof(buf), &len, vecs,
						 (const uint8_t(*)[FC_HASH_LEN])hashes, dim, count, FC_DTYPE_F32,
						 all_codecs[ci], 1),
				 0);
		memset(out, 0, sizeof(out));
		assert_int_equal(fci_chunk_decode(ctx, buf, len, out, dim * count), 0);
		assert_memory_equal(out, vecs, sizeof(vecs));
	}
	fci_chunk_ctx_free(ctx);
}

static int encode_one(fci_chunk_ctx *ctx, const float *vecs, uint32_t dim, uint32_t count, fc_dtype dt,
		      fc_codec cd, uint8_t *buf, size_t cap, size_t *len)
{
	uint8_t hashes[4][FC_HASH_LEN] = {{0}};
	assert_true(count <= 4);
	return fci_chunk_encode(ctx, buf, cap, len, vecs, (const uint8_t(*)[FC_HASH_LEN])hashes, dim, count, dt,
			       cd, 3);
}

/* Values a lossy dtype cannot hold are refused, not silently mangled. */
static void test_lossy_refuses(void **state)
{
	(void)state;
	fci_chunk_ctx *ctx = fci_chunk_ctx_new();
	uint8_t buf[512];
	size_t len;
	float v[4] = {1.0f, 2.0f, 3.0f, 4.0f};
	const float bad[] = {NAN, -NAN, INFINITY, -INFINITY};

	assert_non_null(ctx);
	for (size_t di = 1; di < 4; di++)
		for (size_t ci = 0; ci < 3; ci++)
			for (size_t b = 0; b < 4; b++) {
				v[2] = bad[b];
				assert_int_equal(encode_one(ctx, v, 4, 1, all_dtypes[di], all_codecs[ci], buf,
							    sizeof(buf), &len),
						 FC_ERR_INVALID);
				assert_int_equal(fci_chunk_check(ctx, v, 4, 1, all_dtypes[di]), FC_ERR_INVALID);
			}

	/* f16: 65504 is the largest half; below 65520 rounds down to it */
	struct { float x; int rc; } f16_cases[] = {
		{65504.0f, 0}, {-65504.0f, 0}, {65519.99f, 0}, {65520.0f, FC_ERR_INVALID},
		{-65520.0f, FC_ERR_INVALID}, {70000.0f, FC_ERR_INVALID}, {FLT_MAX, FC_ERR_INVALID},
		{1e-30f, 0}, {-0.0f, 0},
	};
	for (size_t i = 0; i < sizeof(f16_cases) / sizeof(f16_cases[0]); i++) {
		float w[4] = {0.5f, f16_cases[i].x, 1.0f, 2.0f};
		for (size_t ci = 0; ci < 3; ci++)
			assert_int_equal(encode_one(ctx, w, 4, 1, FC_DTYPE_F16, all_codecs[ci], buf, sizeof(buf), &len),
					 f16_cases[i].rc);
		/* the check without the codec says the same */
		assert_int_equal(fci_chunk_check(ctx, w, 4, 1, FC_DTYPE_F16), f16_cases[i].rc);
		assert_int_equal(fci_chunk_check(ctx, w, 4, 1, FC_DTYPE_F32), 0);
	}

	/* bf16: FLT_MAX rounds up to inf; the largest bf16 is fine */
	float w[2] = {1.0f, FLT_MAX};
	assert_int_equal(encode_one(ctx, w, 2, 1, FC_DTYPE_BF16, FC_CODEC_RAW, buf, sizeof(buf), &len),
			 FC_ERR_INVALID);
	w[1] = float_of(0x7f7f0000);
	assert_int_equal(encode_one(ctx, w, 2, 1, FC_DTYPE_BF16, FC_CODEC_RAW, buf, sizeof(buf), &len), 0);

	/* u8: a range that overflows f32 has no step */
	float r[2] = {-FLT_MAX, FLT_MAX};
	assert_int_equal(encode_one(ctx, r, 2, 1, FC_DTYPE_U8, FC_CODEC_RAW, buf, sizeof(buf), &len),
			 FC_ERR_INVALID);
	r[0] = 0.0f;
	assert_int_equal(encode_one(ctx, r, 2, 1, FC_DTYPE_U8, FC_CODEC_RAW, buf, sizeof(buf), &len), 0);
	fci_chunk_ctx_free(ctx);
}

/* A constant vector has step 0 and comes back exactly; u8 codes hit 0 and
 * 255 exactly at min and max. */
static void test_u8_edges(void **state)
{
	(void)state;
	fci_chunk_ctx *ctx = fci_chunk_ctx_new();
	uint8_t buf[1024];
	size_t len;
	float v[2 * 37], out[2 * 37];

	assert_non_null(ctx);
	for (size_t i = 0; i < 37; i++) {
		v[i] = 0.75f;
		v[37 + i] = -3.0f + 0.125f * (float)i;
	}
	for (size_t ci = 0; ci < 3; ci++) {
		assert_int_equal(encode_one(ctx, v, 37, 2, FC_DTYPE_U8, all_codecs[ci], buf, sizeof(buf), &len), 0);
		assert_int_equal(fci_chunk_decode(ctx, buf, len, out, 2 * 37), 0);
		for (size_t i = 0; i < 37; i++)
			assert_true(out[i] == 0.75f);
		assert_true(out[37] == -3.0f);
		assert_true(fabsf(out[73] - v[73]) <= 1e-6f);
		assert_true(vec_rel_err(v + 37, out + 37, 37, 1, FC_DTYPE_U8) <= err_bound[FC_DTYPE_U8]);
	}
	fci_chunk_ctx_free(ctx);
}

static void test_encode_args(void **state)
{
	(void)state;
	fci_chunk_ctx *ctx = fci_chunk_ctx_new();
	uint8_t buf[4096];
	uint8_t hashes[2][FC_HASH_LEN] = {{0}};
	const uint8_t(*h)[FC_HASH_LEN] = (const uint8_t(*)[FC_HASH_LEN])hashes;
	float v[16] = {0};
	size_t len;

	assert_non_null(ctx);
	assert_int_equal(fci_chunk_encode(ctx, buf, sizeof(buf), &len, v, h, 0, 1, FC_DTYPE_F32, FC_CODEC_RAW, 3),
			 FC_ERR_INVALID);
	assert_int_equal(fci_chunk_encode(ctx, buf, sizeof(buf), &len, v, h, 8, 0, FC_DTYPE_F32, FC_CODEC_RAW, 3),
			 FC_ERR_INVALID);
	assert_int_equal(fci_chunk_encode(ctx, buf, sizeof(buf), &len, v, h, 8, 2, (fc_dtype)4, FC_CODEC_RAW, 3),
			 FC_ERR_INVALID);
	assert_int_equal(fci_chunk_encode(ctx, buf, sizeof(buf), &len, v, h, 8, 2, FC_DTYPE_F32, (fc_codec)3, 3),
			 FC_ERR_INVALID);
	assert_int_equal(fci_chunk_encode(ctx, buf, sizeof(buf), &len, v, h, 8, 2, FC_DTYPE_F32, FC_CODEC_ZSTD, 100),
			 FC_ERR_INVALID);
	assert_int_equal(fci_chunk_encode(ctx, buf, sizeof(buf), &len, v, h, 8, 2, FC_DTYPE_F32, FC_CODEC_RAW, 100),
			 0); /* level is ignored for raw */
	assert_int_equal(fci_chunk_encode(NULL, buf, sizeof(buf), &len, v, h, 8, 2, FC_DTYPE_F32, FC_CODEC_RAW, 3),
			 FC_ERR_INVALID);
	assert_int_equal(fci_chunk_encode(ctx, buf, sizeof(buf), &len, NULL, h, 8, 2, FC_DTYPE_F32, FC_CODEC_RAW, 3),
			 FC_ERR_INVALID);
	assert_int_equal(fci_chunk_encode(ctx, buf, sizeof(buf), NULL, v, h, 8, 2, FC_DTYPE_F32, FC_CODEC_RAW, 3),
			 FC_ERR_INVALID);
	for (size_t ci = 0; ci < 3; ci++) {
		size_t bound = fci_chunk_bound(FC_DTYPE_F16, all_codecs[ci], 8, 2);
		assert_int_equal(fci_chunk_encode(ctx, buf, bound - 1, &len, v, h, 8, 2, FC_DTYPE_F16, all_codecs[ci], 3),
				 FC_ERR_INVALID);
		assert_int_equal(fci_chunk_encode(ctx, buf, bound, &len, v, h, 8, 2, FC_DTYPE_F16, all_codecs[ci], 3), 0);
	}
	fci_chunk_ctx_free(ctx);
	fci_chunk_ctx_free(NULL);
}

/* ---- f16 and bf16 against naive references ---- */

/* half -> f32 by its definition: (-1)^s 2^(e-15) (1 + m/1024), or m 2^-24. */
static uint32_t ref_f16_to_f32(uint16_t h)
{
	uint32_t s = h >> 15, e = (h >> 10) & 31u, m = h & 1023u;
	if (e == 31)
		return s << 31 | (m ? 0x7fc00000u | m << 13 : 0x7f800000u); /* quiet NaN, payload kept */
	double v = e == 0 ? ldexp((double)m, -24) : ldexp(1024.0 + m, (int)e - 25);
	return bits_of((float)(s ? -v : v));
}

/* f32 -> half: scale so the half's ulp is 1, round with nearbyint (the
 * default mode is to nearest even), rebuild the bits from the value. */
static uint16_t ref_f32_to_f16(float f)
{
	uint32_t x = bits_of(f);
	uint16_t sign = (uint16_t)((x >> 31) << 15);
	if (isnan(f))
		return (uint16_t)(sign | 0x7e00u | ((x >> 13) & 0x3ffu));
	double a = fabs((double)f);
	if (isinf(a))
		return sign | 0x7c00u;
	if (a == 0.0)
		return sign;
	int e;
	frexp(a, &e);                      /* a in [2^(e-1), 2^e) */
	double ulp = ldexp(1.0, (e < -13 ? -13 : e) - 11); /* subnormals: 2^-24 */
	double r = nearbyint(a / ulp) * ulp;
	if (r >= 65536.0)
		return sign | 0x7c00u;
	if (r < 0x1p-14)
		return (uint16_t)(sign | (uint16_t)(r * 0x1p24));
	frexp(r, &e);
	int E = e - 1;
	uint32_t m = (uint32_t)((ldexp(r, -E) - 1.0) * 1024.0);
	return (uint16_t)(sign | (uint32_t)(E + 15) << 10 | m);
}

static uint16_t ref_f32_to_bf16(float f)
{
	uint32_t x = bits_of(f);
	uint16_t sign = (uint16_t)((x >> 31) << 15);
	if (isnan(f))
		return (uint16_t)((x >> 16) | 0x40u);
	double a = fabs((double)f);
	if (isinf(a))
		return sign | 0x7f80u;
	if (a == 0.0)
		return sign;
	int e;
	frexp(a, &e);
	double ulp = ldexp(1.0, (e < -125 ? -125 : e) - 8); /* 8 significant bits, f32's range */
	double r = nearbyint(a / ulp) * ulp;
	if (r >= 0x1p128)
		return sign | 0x7f80u;
	return (uint16_t)(sign | (bits_of((float)r) >> 16));
}

/* Every half, converted in one call (the F16C path when the CPU has it)
 * and one at a time (calls shorter than 8 always take the scalar path). */
static void test_f16_to_f32_exhaustive(void **state)
{
	(void)state;
	uint16_t *h = malloc(65536 * sizeof(*h));
	float *bulk = malloc(65536 * sizeof(*bulk));
	assert_non_null(h);
	assert_non_null(bulk);
	for (uint32_t i = 0; i < 65536; i++)
		h[i] = (uint16_t)i;
	fci_f16_to_f32(bulk, h, 65536);
	for (uint32_t i = 0; i < 65536; i++) {
		float one;
		fci_f16_to_f32(&one, &h[i], 1);
		uint32_t want = ref_f16_to_f32(h[i]);
		if (bits_of(bulk[i]) != want || bits_of(one) != want)
			print_message("half %04x: bulk %08x single %08x reference %08x\n", i, bits_of(bulk[i]),
				      bits_of(one), want);
		assert_int_equal(bits_of(bulk[i]), want);
		assert_int_equal(bits_of(one), want);
		/* and back: every half survives the trip (NaNs quiet) */
		uint16_t back;
		fci_f32_to_f16(&back, &one, 1);
		uint16_t back_want = (h[i] & 0x7c00u) == 0x7c00u && (h[i] & 0x3ffu) ? (uint16_t)(h[i] | 0x200u) : h[i];
		assert_int_equal(back, back_want);
	}
	free(bulk);
	free(h);
}

/* Inputs that exercise f32 -> f16: random bit patterns, random values in
 * and around the half range, and every tie (midpoint between neighbouring
 * halves) with its neighbours one f32 ulp away. */
static size_t f16_inputs(float *x, size_t n_random)
{
	size_t n = 0;
	for (size_t i = 0; i < n_random; i++)
		x[n++] = float_of((uint32_t)testlib_rand());
	for (size_t i = 0; i < n_random; i++) {
		uint32_t e = 97 + (uint32_t)(testlib_rand() % 50); /* 2^-30 .. 2^19 */
		x[n++] = float_of((uint32_t)(testlib_rand() & 0x807fffffu) | e << 23);
	}
	for (uint32_t h = 0; h < 0x7c00; h++) {
		float lo = float_of(ref_f16_to_f32((uint16_t)h));
		float hi = h + 1 < 0x7c00 ? float_of(ref_f16_to_f32((uint16_t)(h + 1))) : 65536.0f;
		float mid = (float)(((double)lo + hi) / 2.0); /* exact: 12 significant bits */
		float c[3] = {mid, nextafterf(mid, 0.0f), nextafterf(mid, INFINITY)};
		for (int k = 0; k < 3; k++) {
			x[n++] = c[k];
			x[n++] = -c[k];
		}
	}
	return n;
}

static void test_f32_to_f16_reference(void **state)
{
	(void)state;
	size_t n_random = 2000000, cap = 2 * n_random + 6 * 0x7c00;
	float *x = malloc(cap * sizeof(*x));
	uint16_t *bulk = malloc(cap * sizeof(*bulk));
	assert_non_null(x);
	assert_non_null(bulk);
	size_t n = f16_inputs(x, n_random);
	fci_f32_to_f16(bulk, x, n);
	size_t bad = 0;
	for (size_t i = 0; i < n; i++) {
		uint16_t one, want = ref_f32_to_f16(x[i]);
		fci_f32_to_f16(&one, &x[i], 1);
		if ((bulk[i] != want || one != want) && bad++ < 10)
			print_message("f32 %08x (%a): bulk %04x single %04x reference %04x\n", bits_of(x[i]),
				      (double)x[i], bulk[i], one, want);
	}
	print_message("f32 -> f16: %zu inputs, %zu mismatches\n", n, bad);
	assert_int_equal(bad, 0);
	free(bulk);
	free(x);
}

static void test_bf16_reference(void **state)
{
	(void)state;
	size_t n = 4000000;
	float *x = malloc(n * sizeof(*x));
	uint16_t *bulk = malloc(n * sizeof(*bulk));
	float *back = malloc(n * sizeof(*back));
	size_t bad = 0;

	assert_non_null(x);
	assert_non_null(bulk);
	assert_non_null(back);
	for (size_t i = 0; i < n; i++) {
		uint32_t u = (uint32_t)testlib_rand();
		if (i % 4 == 1)
			u = (u & 0xffff0000u) | 0x8000u; /* exact ties */
		if (i % 4 == 2)
			u = (u & 0x807fffffu) | (uint32_t)(100 + testlib_rand() % 60) << 23;
		x[i] = float_of(u);
	}
	x[0] = FLT_MAX;
	x[3] = -FLT_MAX;
	fci_f32_to_bf16(bulk, x, n);
	fci_bf16_to_f32(back, bulk, n);
	for (size_t i = 0; i < n; i++) {
		uint16_t one, want = ref_f32_to_bf16(x[i]);
		fci_f32_to_bf16(&one, &x[i], 1);
		if ((bulk[i] != want || one != want) && bad++ < 10)
			print_message("f32 %08x: bulk %04x single %04x reference %04x\n", bits_of(x[i]), bulk[i],
				      one, want);
		assert_int_equal(bits_of(back[i]), (uint32_t)bulk[i] << 16);
		if (isnan(x[i]))
			assert_true(isnan(back[i]) && (bits_of(back[i]) & 0x00400000u));
	}
	print_message("f32 -> bf16: %zu inputs, %zu mismatches\n", n, bad);
	assert_int_equal(bad, 0);
	free(back);
	free(bulk);
	free(x);
}

/* ---- damaged and lying records ---- */

static int decode_rc(fci_chunk_ctx *ctx, const uint8_t *buf, size_t len, uint32_t dim, uint32_t count)
{
	size_t n = (size_t)dim * count;
	float *out = malloc((n ? n : 1) * sizeof(float));
	assert_non_null(out);
	int rc = fci_chunk_decode(ctx, buf, len, out, n);
	free(out);
	return rc;
}

/* Every byte flipped (several patterns) and every truncation is an error:
 * never success, never a crash. */
static void test_flips_and_truncation(void **state)
{
	(void)state;
	static const uint8_t xors[] = {0x01, 0x10, 0x80, 0xff};
	fci_chunk_ctx *ctx = fci_chunk_ctx_new();
	assert_non_null(ctx);

	for (size_t di = 0; di < 4; di++)
		for (size_t ci = 0; ci < 3; ci++) {
			const uint32_t dim = 13, count = 3;
			size_t len;
			uint8_t *buf = make_chunk(ctx, all_dtypes[di], all_codecs[ci], dim, count, &len, NULL);
			uint8_t *copy = malloc(len + 1);
			fci_chunk_info info;
			assert_non_null(copy);
			for (size_t off = 0; off < len; off++)
				for (size_t k = 0; k < sizeof(xors); k++) {
					memcpy(copy, buf, len);
					copy[off] ^= xors[k];
					assert_true(fci_chunk_parse(copy, len, &info) < 0);
					assert_true(decode_rc(ctx, copy, len, dim, count) < 0);
				}
			for (size_t l = 0; l < len; l++) {
				assert_true(fci_chunk_parse(buf, l, &info) < 0);
				assert_true(decode_rc(ctx, buf, l, dim, count) < 0);
			}
			memcpy(copy, buf, len);
			copy[len] = 0;
			assert_int_equal(fci_chunk_parse(copy, len + 1, &info), FC_ERR_CORRUPT);
			assert_int_equal(decode_rc(ctx, buf, len, dim, count), 0);
			free(copy);
			free(buf);
		}
	fci_chunk_ctx_free(ctx);
}

/* Headers that pass the checksum (resealed) but lie. */
static void test_lying_headers(void **state)
{
	(void)state;
	fci_chunk_ctx *ctx = fci_chunk_ctx_new();
	const uint32_t dim = 8, count = 2;
	size_t len;
	uint8_t *buf, *c;
	fci_chunk_info info;

	assert_non_null(ctx);
	buf = make_chunk(ctx, FC_DTYPE_F16, FC_CODEC_SHUFFLE_ZSTD, dim, count, &len, NULL);
	c = malloc(len + 64);
	assert_non_null(c);

#define MUTATE(stmt, want)                                                     \
	do {                                                                   \
		memcpy(c, buf, len);                                           \
		stmt;                                                          \
		reseal(c, len);                                                \
		assert_int_equal(fci_chunk_parse(c, len, &info), want);         \
		assert_int_equal(decode_rc(ctx, c, len, dim, count), want);    \
	} while (0)

	MUTATE(c[3] = 'X', FC_ERR_CORRUPT);
	MUTATE(c[4] = 2, FC_ERR_VERSION);
	MUTATE(c[4] = 255, FC_ERR_VERSION);
	MUTATE(c[4] = 0, FC_ERR_CORRUPT);
	MUTATE(c[5] = 4, FC_ERR_UNSUPPORTED);
	MUTATE(c[5] = 200, FC_ERR_UNSUPPORTED);
	MUTATE(c[6] = 3, FC_ERR_UNSUPPORTED);
	MUTATE(c[7] = 1, FC_ERR_CORRUPT);
	MUTATE(c[23] = 1, FC_ERR_CORRUPT);
	MUTATE(put32le(c + 8, 0), FC_ERR_CORRUPT);
	MUTATE(put32le(c + 8, FC_CHUNK_MAX_DIM + 1), FC_ERR_CORRUPT);
	MUTATE(put32le(c + 8, 0xffffffffu), FC_ERR_CORRUPT);
	MUTATE(put32le(c + 12, 0), FC_ERR_CORRUPT);
	MUTATE(put32le(c + 12, FC_CHUNK_MAX_COUNT + 1), FC_ERR_CORRUPT);
	MUTATE(put32le(c + 12, 0xffffffffu), FC_ERR_CORRUPT);
	MUTATE(put32le(c + 12, 1), FC_ERR_CORRUPT); /* lengths no longer add up */
	/* each in range, the product far beyond FC_CHUNK_MAX_RAW */
	MUTATE((put32le(c + 8, FC_CHUNK_MAX_DIM), put32le(c + 12, FC_CHUNK_MAX_COUNT)), FC_ERR_CORRUPT);
	MUTATE(put32le(c + 16, get32le(c + 16) + 1), FC_ERR_CORRUPT);
	MUTATE(put32le(c + 16, get32le(c + 16) - 1), FC_ERR_CORRUPT);
	MUTATE(put32le(c + 16, 0xffffffffu), FC_ERR_CORRUPT);
	/* the frame declares dim*count*2 bytes, the header now half that:
	 * parse checks the record, decode the frame inside it */
	memcpy(c, buf, len);
	put32le(c + 8, dim / 2);
	reseal(c, len);
	assert_int_equal(fci_chunk_parse(c, len, &info), 0);
	assert_int_equal(decode_rc(ctx, c, len, dim, count), FC_ERR_CORRUPT);
	MUTATE(c[5] = FC_DTYPE_BF16, 0); /* same sizes: decodes (as different numbers) */

	/* a trailing byte after the frame, counted in payload_len */
	memcpy(c, buf, len);
	c[len] = 0;
	put32le(c + 16, get32le(c + 16) + 1);
	reseal(c, len + 1);
	assert_int_equal(fci_chunk_parse(c, len + 1, &info), 0);
	assert_int_equal(decode_rc(ctx, c, len + 1, dim, count), FC_ERR_CORRUPT);

	/* the caller's buffer is too small */
	float out[8 * 2];
	assert_int_equal(fci_chunk_decode(ctx, buf, len, out, dim * count - 1), FC_ERR_INVALID);
	assert_int_equal(fci_chunk_decode(ctx, buf, len, NULL, dim * count), FC_ERR_INVALID);
	assert_int_equal(fci_chunk_decode(NULL, buf, len, out, dim * count), FC_ERR_INVALID);
	assert_int_equal(fci_chunk_decode(ctx, buf, len, out, dim * count), 0);
	assert_int_equal(fci_chunk_parse(NULL, 0, &info), FC_ERR_INVALID);
#undef MUTATE
	free(c);
	free(buf);
	fci_chunk_ctx_free(ctx);
}

/* Damage inside the zstd frame, behind a valid record checksum: zstd's own
 * checks must catch it, or the output must be exactly right (e.g. a
 * changed window size that does not matter). */
static void test_zstd_damage(void **state)
{
	(void)state;
	fci_chunk_ctx *ctx = fci_chunk_ctx_new();
	assert_non_null(ctx);

	for (size_t di = 0; di < 4; di++)
		for (size_t ci = 1; ci < 3; ci++) {
			const uint32_t dim = 40, count = 3;
			size_t len, n = (size_t)dim * count, caught = 0, same = 0;
			uint8_t *buf = make_chunk(ctx, all_dtypes[di], all_codecs[ci], dim, count, &len, NULL);
			uint8_t *c = malloc(len);
			float *good = malloc(n * sizeof(float)), *out = malloc(n * sizeof(float));
			size_t start = 32 + 16 * (size_t)count;
			assert_non_null(c);
			assert_non_null(good);
			assert_non_null(out);
			assert_int_equal(fci_chunk_decode(ctx, buf, len, good, n), 0);
			for (size_t off = start; off < len; off++)
				for (int bit = 0; bit < 8; bit++) {
					memcpy(c, buf, len);
					c[off] ^= (uint8_t)(1u << bit);
					reseal(c, len);
					int rc = fci_chunk_decode(ctx, c, len, out, n);
					if (rc < 0) {
						caught++;
						continue;
					}
					assert_int_equal(rc, 0);
					assert_memory_equal(out, good, n * sizeof(float));
					same++;
				}
			print_message("%s/%s: %zu payload bit flips behind a valid record checksum: %zu rejected, %zu harmless\n",
				      fc_dtype_name(all_dtypes[di]), fc_codec_name(all_codecs[ci]), caught + same,
				      caught, same);
			free(out);
			free(good);
			free(c);
			free(buf);
		}
	fci_chunk_ctx_free(ctx);
}

/* A frame without its checksum is not one we wrote. */
static void test_zstd_frame_without_checksum(void **state)
{
	(void)state;
	fci_chunk_ctx *ctx = fci_chunk_ctx_new();
	const uint32_t dim = 16, count = 2;
	float v[32];
	uint8_t buf[1024];
	size_t len;
	float out[32];

	assert_non_null(ctx);
	for (size_t i = 0; i < 32; i++)
		v[i] = (float)i;
	assert_int_equal(encode_one(ctx, v, dim, count, FC_DTYPE_F32, FC_CODEC_ZSTD, buf, sizeof(buf), &len), 0);
	size_t off = 32 + 16 * count;
	size_t z = ZSTD_compress(buf + off, sizeof(buf) - off, v, sizeof(v), 3); /* no checksum by default */
	assert_false(ZSTD_isError(z));
	put32le(buf + 16, (uint32_t)z);
	reseal(buf, off + z);
	assert_int_equal(fci_chunk_decode(ctx, buf, off + z, out, 32), FC_ERR_CORRUPT);
	fci_chunk_ctx_free(ctx);
}

/* Values the encoder never writes, behind a valid checksum. */
static void test_impossible_values(void **state)
{
	(void)state;
	fci_chunk_ctx *ctx = fci_chunk_ctx_new();
	const uint32_t dim = 4, count = 2;
	size_t len;
	uint8_t *buf;

	assert_non_null(ctx);
	buf = make_chunk(ctx, FC_DTYPE_F16, FC_CODEC_RAW, dim, count, &len, NULL);
	buf[len - 1] = 0x7c; /* the last half becomes inf */
	buf[len - 2] = 0x00;
	reseal(buf, len);
	assert_int_equal(decode_rc(ctx, buf, len, dim, count), FC_ERR_CORRUPT);
	free(buf);

	buf = make_chunk(ctx, FC_DTYPE_U8, FC_CODEC_RAW, dim, count, &len, NULL);
	size_t pairs = 32 + 16 * count;
	put32le(buf + pairs + 4, 0x7fc00000u); /* step of vector 0: NaN */
	reseal(buf, len);
	assert_int_equal(decode_rc(ctx, buf, len, dim, count), FC_ERR_CORRUPT);
	put32le(buf + pairs + 4, bits_of(-1.0f)); /* negative step */
	reseal(buf, len);
	assert_int_equal(decode_rc(ctx, buf, len, dim, count), FC_ERR_CORRUPT);
	free(buf);
	fci_chunk_ctx_free(ctx);
}

/* Count the blocks of the one zstd frame at p (RFC 8878 3.1.1.2: 3-byte
 * block headers, bit 0 last, bits 1-2 type, bits 3-23 size; an RLE block
 * stores one byte). */
static int zstd_blocks(const uint8_t *p, size_t n)
{
	/* magic, descriptor, window byte unless single-segment, dictionary id, content size (3.1.1.1) */
	assert_true(n >= 6);
	uint8_t fhd = p[4];
	int single = (fhd >> 5) & 1;
	static const size_t did[4] = { 0, 1, 2, 4 }, fcs[4] = { 0, 2, 4, 8 };
	size_t at = 5 + (size_t)!single + did[fhd & 3] + ((fhd >> 6) == 0 ? (size_t)single : fcs[fhd >> 6]);
	for (int blocks = 1;; blocks++) {
		assert_true(at + 3 <= n);
		uint32_t h = (uint32_t)p[at] | (uint32_t)p[at + 1] << 8 | (uint32_t)p[at + 2] << 16;
		uint32_t type = (h >> 1) & 3, size = h >> 3;
		at += 3 + (type == 1 ? 1 : size);
		if (h & 1)
			return blocks;
	}
}

/* A shuffled chunk codes each byte plane in blocks of its own (one
 * Huffman table each), and still decodes as the chunks written before
 * that, whose planes shared one block. */
static void test_planes_own_blocks(void **state)
{
	(void)state;
	fci_chunk_ctx *ctx = fci_chunk_ctx_new();
	const uint32_t dim = 4096, count = 4;
	const int planes[] = { 4, 2, 2, 2 };
	float *v = malloc(sizeof(float) * dim * count), *out = malloc(sizeof(float) * dim * count),
	      *ref = malloc(sizeof(float) * dim * count);
	size_t cap = fci_chunk_bound(FC_DTYPE_F32, FC_CODEC_SHUFFLE_ZSTD, dim, count);
	uint8_t *buf = malloc(cap), *raw = malloc(4 * (size_t)dim * count + 8 * count);
	size_t len;

	assert_non_null(ctx);
	gen_vectors(v, dim, count, 0);
	for (size_t t = 0; t < 4; t++) {
		fc_dtype dt = all_dtypes[t];
		assert_int_equal(encode_one(ctx, v, dim, count, dt, FC_CODEC_SHUFFLE_ZSTD, buf, cap, &len), 0);
		size_t off = 32 + 16 * count;
		assert_int_equal(zstd_blocks(buf + off, len - off), planes[t]);
		assert_int_equal(fci_chunk_decode(ctx, buf, len, ref, (size_t)dim * count), 0);
		/* the same raw payload as one frame of one block, as before */
		size_t raw_len = fci_chunk_raw_len(dt, dim, count);
		assert_int_equal(ZSTD_decompress(raw, raw_len, buf + off, len - off), raw_len);
		ZSTD_CCtx *c = ZSTD_createCCtx();
		ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
		size_t z = ZSTD_compress2(c, buf + off, cap - off, raw, raw_len);
		ZSTD_freeCCtx(c);
		assert_false(ZSTD_isError(z));
		assert_int_equal(zstd_blocks(buf + off, z), 1);
		put32le(buf + 16, (uint32_t)z);
		reseal(buf, off + z);
		assert_int_equal(fci_chunk_decode(ctx, buf, off + z, out, (size_t)dim * count), 0);
		assert_memory_equal(out, ref, sizeof(float) * dim * count);
		print_message("# %s: %zu bytes with a block a plane, %zu with one block\n", fc_dtype_name(dt),
			      len - off, z);
	}
	/* no shuffle: one plane */
	assert_int_equal(encode_one(ctx, v, dim, count, FC_DTYPE_F16, FC_CODEC_ZSTD, buf, cap, &len), 0);
	assert_int_equal(zstd_blocks(buf + 32 + 16 * count, len - 32 - 16 * count), 1);
	free(v);
	free(out);
	free(ref);
	free(buf);
	free(raw);
	fci_chunk_ctx_free(ctx);
}

int main(void)
{
	testlib_seed("test_chunk");

	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_sizes),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_f32_special_bits),
		cmocka_unit_test(test_lossy_refuses),
		cmocka_unit_test(test_u8_edges),
		cmocka_unit_test(test_encode_args),
		cmocka_unit_test(test_f16_to_f32_exhaustive),
		cmocka_unit_test(test_f32_to_f16_reference),
		cmocka_unit_test(test_bf16_reference),
		cmocka_unit_test(test_flips_and_truncation),
		cmocka_unit_test(test_lying_headers),
		cmocka_unit_test(test_zstd_damage),
		cmocka_unit_test(test_zstd_frame_without_checksum),
		cmocka_unit_test(test_impossible_values),
		cmocka_unit_test(test_planes_own_blocks),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
