/*
 * vec.c - small vector routines more than one module needs.
 */
#include <math.h>

#include "util/util.h"

void fci_l2_normalize_rows(float *dst, const float *src, size_t rows, size_t dim)
{
#pragma omp parallel for schedule(static)
	for (size_t r = 0; r < rows; r++) {
		const float *x = src + r * dim;
		float *y = dst + r * dim;
		double ss = 0;
		for (size_t j = 0; j < dim; j++)
			ss += (double)x[j] * x[j];
		float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 1.0f;
		for (size_t j = 0; j < dim; j++)
			y[j] = x[j] * inv;
	}
}

