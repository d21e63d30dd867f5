/*
 * rows.c - rows of a feature matrix to f32, from whatever type they are
 * kept in (featcache/rows.h).
 *
 * The conversions are the store's own: f16 and bf16 through util/half.c
 * (exact widenings), u8 as the chunk decoder writes it (lo + (float)q *
 * step, in that order; -std=c11 keeps gcc from contracting it into an
 * FMA), so a batch gathered from compact rows is bit-identical to the same
 * rows of an f32 load. Not here: where the rows come from (store/load.c,
 * store/stream.c) or what is computed on them (train/).
 */
#include <stdlib.h>
#include <string.h>

#include "featcache/rows.h"
#include "util/util.h"

#define BLK 64 /* inner loop length the compiler vectorizes (see store/chunk.c) */

fc_rows fc_rows_f32(const float *x, size_t n, size_t dim)
{
	return (fc_rows){ .type = FC_ROW_F32, .n = n, .dim = dim, .data = x };
}

size_t fc_row_type_size(fc_row_type t)
{
	switch (t) {
	case FC_ROW_F32: return 4;
	case FC_ROW_F16:
	case FC_ROW_BF16: return 2;
	case FC_ROW_U8: return 1;
	}
	return 0;
}

size_t fc_rows_bytes(fc_row_type t, size_t n, size_t dim)
{
	size_t es = fc_row_type_size(t), b;
	if (!es || (dim && n > SIZE_MAX / dim / es))
		return SIZE_MAX;
	b = n * dim * es;
	if (t == FC_ROW_U8) {
		if (n > (SIZE_MAX - b) / (2 * sizeof(float)))
			return SIZE_MAX;
		b += n * 2 * sizeof(float);
	}
	return b;
}

/* Out of line so that gcc keeps the restrict promise and vectorizes. */
__attribute__((noinline)) static void u8_row(float *restrict dst, const uint8_t *restrict q, float lo, float step,
					     size_t n)
{
	size_t i = 0;
	for (; i + BLK <= n; i += BLK)
		for (size_t j = 0; j < BLK; j++)
			dst[i + j] = lo + (float)q[i + j] * step;
	for (; i < n; i++)
		dst[i] = lo + (float)q[i] * step;
}

/* dst[dim] = row r of the in-memory matrix x. */
static void row_to_f32(float *dst, const fc_rows *x, size_t r)
{
	const size_t dim = x->dim;
	switch (x->type) {
	case FC_ROW_F32:
		memcpy(dst, (const float *)x->data + r * dim, dim * sizeof(float));
		break;
	case FC_ROW_F16:
		fci_f16_to_f32(dst, (const uint16_t *)x->data + r * dim, dim);
		break;
	case FC_ROW_BF16:
		fci_bf16_to_f32(dst, (const uint16_t *)x->data + r * dim, dim);
		break;
	case FC_ROW_U8:
		u8_row(dst, (const uint8_t *)x->data + r * dim, x->scale[2 * r], x->scale[2 * r + 1], dim);
		break;
	}
}

int fc_rows_gather(float *dst, const fc_rows *x, const uint32_t *idx, size_t n)
{
	if (x->fetch)
		return x->fetch(x->ctx, dst, idx, n);
	if (!fc_row_type_size(x->type))
		return FC_ERR_INVALID;
	for (size_t i = 0; i < n; i++)
		if (idx[i] >= x->n)
			return FC_ERR_INVALID;
	/* A batch (128 x 768 f16 converts in ~10 us) is too small for threads
	 * to pay; fc_rows_range is the parallel one. */
	for (size_t i = 0; i < n; i++)
		row_to_f32(dst + i * x->dim, x, idx[i]);
	return 0;
}

#define RANGE_BLOCK 4096 /* row numbers handed to a fetcher at a time */

int fc_rows_range(float *dst, const fc_rows *x, size_t first, size_t n)
{
	if (first > x->n || n > x->n - first)
		return FC_ERR_INVALID;
	if (x->fetch) {
		uint32_t *idx = malloc(RANGE_BLOCK * sizeof *idx);
		if (!idx)
			return FC_ERR_NOMEM;
		int err = 0;
		for (size_t i = 0; i < n && !err; i += RANGE_BLOCK) {
			size_t m = n - i < RANGE_BLOCK ? n - i : RANGE_BLOCK;
			for (size_t j = 0; j < m; j++)
				idx[j] = (uint32_t)(first + i + j);
			err = x->fetch(x->ctx, dst + i * x->dim, idx, m);
		}
		free(idx);
		return err;
	}
	if (!fc_row_type_size(x->type))
		return FC_ERR_INVALID;
	if (x->type == FC_ROW_F32) {
		memcpy(dst, (const float *)x->data + first * x->dim, n * x->dim * sizeof(float));
		return 0;
	}
#pragma omp parallel for schedule(static) if (n * x->dim >= ((size_t)1 << 18))
	for (size_t i = 0; i < n; i++)
		row_to_f32(dst + i * x->dim, x, first + i);
	return 0;
}
