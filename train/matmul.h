/*
 * matmul.h - f32 matrix products on oneDNN for the head's forward and
 * backward passes (private to libfeatcache).
 *
 * One fc_mm per thread that uses it: oneDNN primitives run on the thread
 * that created them. Primitives are created on first use for each shape
 * and cached, so an epoch of equal batches creates them once.
 */
#ifndef FC_MATMUL_H
#define FC_MATMUL_H

#include <stddef.h>

typedef struct fc_mm fc_mm;

int fc_mm_new(fc_mm **out);
void fc_mm_free(fc_mm *mm); /* accepts NULL */

/* fc_mm_run - C (M,N) = op(A) (M,K) · op(B) (K,N), or C += ... when
 * accumulate is set. All row-major. ta: A is stored transposed, as (K,M);
 * tb: B is stored transposed, as (N,K). */
int fc_mm_run(fc_mm *mm, float *C, const float *A, const float *B, size_t M, size_t N, size_t K,
	      int ta, int tb, int accumulate);

/* fc_mm_impl - the implementation oneDNN chose for the last created
 * primitive (e.g. "brg:avx512_core"); tests check it is not a "ref" one. */
const char *fc_mm_impl(const fc_mm *mm);

#endif /* FC_MATMUL_H */
