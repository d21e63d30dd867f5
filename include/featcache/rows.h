/*
 * rows.h - a matrix of feature rows as they are kept in memory: f32, or in
 * a store's compact dtype (f16, bf16, u8 with a per-row affine pair), or
 * not in memory at all but fetched by row number through a callback (a
 * store streaming its chunks). Whoever computes on the rows asks for them
 * as f32, a batch at a time (fc_rows_gather), so a 768-d f16 split takes
 * half the memory of its f32 matrix and no copy of it is ever made.
 *
 * The store fills these (store.h) and train/ reads them; util owns the type
 * so that neither depends on the other.
 */
#ifndef FEATCACHE_ROWS_H
#define FEATCACHE_ROWS_H

#include "featcache.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The element type of the rows in memory; the numbers are fc_dtype's
 * (store.h), so a store's dtype is also a row type. */
typedef enum fc_row_type {
	FC_ROW_F32 = 0,
	FC_ROW_F16 = 1,  /* IEEE binary16 */
	FC_ROW_BF16 = 2, /* upper half of an f32 */
	FC_ROW_U8 = 3    /* x = lo + q * step, (lo, step) per row in `scale` */
} fc_row_type;

/* fc_rows_fetch_fn - write rows rows[0..n) (row numbers < the matrix's n),
 * as f32, into dst (n, dim). Returns 0 or a negative FC_ERR_*; the fetcher
 * keeps its own message. It is called from one thread at a time. */
typedef int (*fc_rows_fetch_fn)(void *ctx, float *dst, const uint32_t *rows, size_t n);

/* n rows of dim elements. In memory (fetch NULL): `data` holds n*dim
 * elements of `type`, row-major; for FC_ROW_U8 `scale` holds (lo, step)
 * for each row, 2n floats. Streamed (fetch set): data and scale are unused
 * and every row comes from fetch(ctx, ...). Nothing here is owned. */
typedef struct fc_rows {
	fc_row_type type;
	size_t n, dim;
	const void *data;
	const float *scale;
	fc_rows_fetch_fn fetch;
	void *ctx;
} fc_rows;

/* fc_rows_f32 - the view of a plain f32 matrix x (n, dim). */
fc_rows fc_rows_f32(const float *x, size_t n, size_t dim);

/* fc_row_type_size - bytes of one element (1 for u8, whose per-row pair is
 * extra); 0 for an unknown type. */
size_t fc_row_type_size(fc_row_type t);

/* fc_rows_bytes - the memory n rows of dim elements take in type t, pairs
 * included; SIZE_MAX when that overflows. */
size_t fc_rows_bytes(fc_row_type t, size_t n, size_t dim);

/* fc_rows_gather - dst (n, dim) f32 = rows idx[0..n) of x, converted
 * exactly as the store decodes its chunks (f16/bf16 widen exactly; u8 is
 * lo + (float)q * step), so a gathered row is bit-identical to the row a
 * store loads as f32. FC_ERR_INVALID for a row number >= x->n or an
 * unknown type; a streamed matrix returns what its fetch returns. */
int fc_rows_gather(float *dst, const fc_rows *x, const uint32_t *idx, size_t n);

/* fc_rows_range - dst (n, dim) = rows [first, first + n) of x, as
 * fc_rows_gather. In memory, large ranges convert in parallel (OpenMP). */
int fc_rows_range(float *dst, const fc_rows *x, size_t first, size_t n);

#ifdef __cplusplus
}
#endif
#endif /* FEATCACHE_ROWS_H */
