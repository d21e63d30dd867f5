/*
 * matmul.h - f32 matrix products on oneDNN for the head's forward and
 * backward passes (private to libfeatcache).
 *
 * One fci_mm per thread that uses it: oneDNN primitives run on the thread
 * that created them. Primitives are created on first use for each shape
 * and cached, so an epoch of equal batches creates them once.
 */
#ifndef FC_MATMUL_H
#define FC_MATMUL_H

#include <stddef.h>

typedef struct fci_mm fci_mm;

int fci_mm_new(fci_mm **out);
void fci_mm_free(fci_mm *mm); /* accepts NULL */

/* fci_mm_run - C (M,N) = op(A) (M,K) · op(B) (K,N), or C += ... when
 * accumulate is set. All row-major. ta: A is stored transposed, as (K,M);
 * tb: B is stored transposed, as (N,K). */
int fci_mm_run(fci_mm *mm, float *C, const float *A, const float *B, size_t M, size_t N, size_t K,
	      int ta, int tb, int accumulate);

/* fci_mm_impl - the implementation oneDNN chose for the last created
 * primitive (e.g. "brg:avx512_core"); tests check it is not a "ref" one. */
const char *fci_mm_impl(const fci_mm *mm);

#endif /* FC_MATMUL_H */
