/*
 * fuzz_chunk.c - libFuzzer target for store/chunk.c.
 *
 * Every input is used three ways:
 *   1. as a chunk: fci_chunk_parse and fci_chunk_decode must fail cleanly or
 *      succeed, never read outside the input or the output;
 *   2. as a chunk with its checksum recomputed, so that mutations reach the
 *      fields and the zstd frame behind the checksum;
 *   3. as encoder input: 5 parameter bytes (dtype, codec, level, dim lo/hi)
 *      then floats. Encode, decode: f32 must come back bit for bit and every
 *      encoded chunk must decode, or the target aborts.
 * The seeds in tests/corpus/fuzz_chunk/ are valid chunks of every dtype and
 * codec.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "store/chunk.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_FLOATS ((size_t)1 << 20) /* largest decode the target attempts */

static fci_chunk_ctx *ctx_get(void)
{
	static fci_chunk_ctx *ctx;
	if (!ctx)
		ctx = fci_chunk_ctx_new();
	if (!ctx)
		abort();
	return ctx;
}

static void decode_any(const uint8_t *p, size_t len)
{
	fci_chunk_info info;
	if (fci_chunk_parse(p, len, &info) != 0)
		return;
	size_t n = (size_t)info.dim * info.count;
	if (n > MAX_FLOATS)
		return;
	float *dst = malloc(n * sizeof(float));
	if (!dst)
		return;
	int rc = fci_chunk_decode(ctx_get(), p, len, dst, n);
	if (rc > 0)
		abort();
	free(dst);
}

/* The checksum as chunk.h defines it. */
static void reseal(uint8_t *p, size_t len)
{
	uint64_t h = XXH3_64bits_withSeed(p + 32, len - 32, XXH3_64bits(p, 24));
	for (int i = 0; i < 8; i++)
		p[24 + i] = (uint8_t)(h >> (8 * i));
}

static void decode_resealed(const uint8_t *data, size_t size)
{
	if (size < FC_CHUNK_HEADER)
		return;
	uint8_t *p = malloc(size);
	if (!p)
		return;
	memcpy(p, data, size);
	reseal(p, size);
	decode_any(p, size);
	free(p);
}

/* Lossy results: f16/bf16 must equal the element-wise conversion, u8 must
 * stay within half a step of the input, plus float rounding. */
static void check_lossy(const float *x, const float *y, size_t dim, size_t count, fc_dtype dt)
{
	for (size_t v = 0; v < count; v++) {
		const float *a = x + v * dim, *b = y + v * dim;
		float lo = a[0], hi = a[0];
		for (size_t i = 0; i < dim; i++) {
			lo = fminf(lo, a[i]);
			hi = fmaxf(hi, a[i]);
		}
		for (size_t i = 0; i < dim; i++) {
			uint16_t h;
			float back;
			if (!isfinite(b[i]))
				abort();
			if (dt == FC_DTYPE_F16) {
				fci_f32_to_f16(&h, &a[i], 1);
				fci_f16_to_f32(&back, &h, 1);
			} else if (dt == FC_DTYPE_BF16) {
				fci_f32_to_bf16(&h, &a[i], 1);
				fci_bf16_to_f32(&back, &h, 1);
			} else {
				/* rounding of lo + q*step, and a subnormal step's
				 * own rounding (up to 255 half-ulps of FLT_TRUE_MIN) */
				double slack = 4.0 * FLT_EPSILON * fmax(fabs(lo), fabs(hi)) + 255.0 * FLT_TRUE_MIN;
				if (fabs((double)a[i] - b[i]) > ((double)hi - lo) * (1.0 / 510 + 1e-5) + slack)
					abort();
				continue;
			}
			if (memcmp(&back, &b[i], 4) != 0)
				abort();
		}
	}
}

static void encode_round_trip(const uint8_t *data, size_t size)
{
	if (size < 5)
		return;
	fc_dtype dt = (fc_dtype)(data[0] % 4);
	fc_codec cd = (fc_codec)(data[1] % 3);
	int level = data[2] % 8 - 2; /* a few negative (fast) levels, 0 = default */
	uint32_t dim = 1 + ((uint32_t)data[3] | (uint32_t)data[4] << 8) % 4096;
	size_t nf = (size - 5) / 4;
	uint32_t count = (uint32_t)(nf / dim);
	if (count == 0 || count > FC_CHUNK_MAX_COUNT)
		return;

	size_t n = (size_t)dim * count;
	size_t cap = fci_chunk_bound(dt, cd, dim, count);
	float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
	uint8_t(*hashes)[FC_HASH_LEN] = calloc(count, FC_HASH_LEN);
	uint8_t *buf = malloc(cap);
	size_t len;
	if (!x || !y || !hashes || !buf)
		abort();
	memcpy(x, data + 5, n * sizeof(float));

	int rc = fci_chunk_encode(ctx_get(), buf, cap, &len, x, (const uint8_t(*)[FC_HASH_LEN])hashes, dim, count,
				 dt, cd, level);
	if (rc != 0 && (dt == FC_DTYPE_F32 || rc != FC_ERR_INVALID))
		abort(); /* f32 takes any bits; the lossy dtypes may only refuse values */
	if (rc == 0) {
		if (fci_chunk_decode(ctx_get(), buf, len, y, n) != 0)
			abort();
		if (dt == FC_DTYPE_F32 && memcmp(x, y, n * sizeof(float)) != 0)
			abort();
		if (dt != FC_DTYPE_F32)
			check_lossy(x, y, dim, count, dt);
	}
	free(buf);
	free(hashes);
	free(y);
	free(x);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	decode_any(data, size);
	decode_resealed(data, size);
	encode_round_trip(data, size);
	return 0;
}
