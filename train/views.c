/*
 * views.c - what the report shows about a head besides its metrics: the
 * per-class averages of the per-query metrics, which classes the
 * neighbours confuse, and a 2-D map of the embeddings (PCA).
 *
 * The neighbour lists and the per-query metrics themselves come from
 * metrics.c (fc_knn, fc_eval_knn_queries); this file only groups and
 * counts them. The PCA is deterministic: a fixed-seed start, a fixed
 * summation order whatever the thread count, and a sign convention.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "featcache/metrics.h"
#include "util/util.h"

int fc_metrics_by_class(double *out, size_t *counts, const double *per_query, const uint32_t *classes, size_t nq,
			size_t n_classes)
{
	if (!out || (!per_query && nq) || (!classes && nq) || n_classes == 0)
		return FC_ERR_INVALID;
	for (size_t q = 0; q < nq; q++)
		if (classes[q] >= n_classes)
			return FC_ERR_INVALID;
	size_t *n = calloc(n_classes, sizeof *n);
	if (!n)
		return FC_ERR_NOMEM;
	memset(out, 0, n_classes * 9 * sizeof *out);
	for (size_t q = 0; q < nq; q++) {
		n[classes[q]]++;
		for (int m = 0; m < 9; m++)
			out[classes[q] * 9 + m] += per_query[q * 9 + m];
	}
	for (size_t c = 0; c < n_classes; c++) {
		for (int m = 0; m < 9 && n[c]; m++)
			out[c * 9 + m] /= (double)n[c];
		if (counts)
			counts[c] = n[c];
	}
	free(n);
	return 0;
}

int fc_knn_confusion(uint64_t *counts, const uint32_t *idx, const size_t *nn, size_t nq, size_t k,
		     const uint32_t *qclasses, const uint32_t *iclasses, size_t ni, size_t n_classes)
{
	if (!counts || n_classes == 0 || (nq && (!idx || !nn || !qclasses || !iclasses)))
		return FC_ERR_INVALID;
	if (n_classes > SIZE_MAX / n_classes / sizeof *counts)
		return FC_ERR_OVERFLOW;
	memset(counts, 0, n_classes * n_classes * sizeof *counts);
	for (size_t q = 0; q < nq; q++) {
		if (qclasses[q] >= n_classes || nn[q] > k)
			return FC_ERR_INVALID;
		for (size_t j = 0; j < nn[q]; j++) {
			uint32_t i = idx[q * k + j];
			if (i >= ni || iclasses[i] >= n_classes)
				return FC_ERR_INVALID;
			counts[(size_t)qclasses[q] * n_classes + iclasses[i]]++;
		}
	}
	return 0;
}

/* ------------------------------------------------------------------ PCA */

#define PCA_BLOCK 256      /* rows per partial sum: the order of summation, whatever the threads */
#define PCA_MAX_ITER 300
#define PCA_TOL 1e-9

/* w (2, dim) = C v: the covariance of the centred rows xc = x - mu times
 * the two vectors v (2, dim), as (1/n) Σ xc (xc · v), each block of rows
 * summed on its own and the blocks added in order. */
static void cov_times(double *w, double *part, const float *x, const double *mu, const double *v, size_t n,
		      size_t dim)
{
	size_t nb = (n + PCA_BLOCK - 1) / PCA_BLOCK;
#pragma omp parallel for schedule(static)
	for (size_t b = 0; b < nb; b++) {
		double *p = part + b * 2 * dim;
		memset(p, 0, 2 * dim * sizeof *p);
		size_t end = (b + 1) * PCA_BLOCK < n ? (b + 1) * PCA_BLOCK : n;
		for (size_t i = b * PCA_BLOCK; i < end; i++) {
			const float *r = x + i * dim;
			double a0 = 0, a1 = 0;
			for (size_t d = 0; d < dim; d++) {
				double c = (double)r[d] - mu[d];
				a0 += c * v[d];
				a1 += c * v[dim + d];
			}
			for (size_t d = 0; d < dim; d++) {
				double c = (double)r[d] - mu[d];
				p[d] += a0 * c;
				p[dim + d] += a1 * c;
			}
		}
	}
	memset(w, 0, 2 * dim * sizeof *w);
	for (size_t b = 0; b < nb; b++)
		for (size_t d = 0; d < 2 * dim; d++)
			w[d] += part[b * 2 * dim + d];
	for (size_t d = 0; d < 2 * dim; d++)
		w[d] /= (double)n;
}

static double dot(const double *a, const double *b, size_t n)
{
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += a[i] * b[i];
	return s;
}

/* v := v / |v|, with the sign that makes its largest entry (the first of
 * equal ones) positive. Returns |v| before. */
static double unit_signed(double *v, size_t dim)
{
	double nrm = sqrt(dot(v, v, dim));
	if (!(nrm > 0))
		return 0;
	size_t big = 0;
	for (size_t d = 1; d < dim; d++)
		if (fabs(v[d]) > fabs(v[big]) * (1 + 1e-12))
			big = d;
	double s = v[big] < 0 ? -1 / nrm : 1 / nrm;
	for (size_t d = 0; d < dim; d++)
		v[d] *= s;
	return nrm;
}

/* u := u minus its part along the unit vector v, twice (one pass leaves
 * rounding noise along v that matters when u is nearly parallel to it). */
static void orthogonalise(double *u, const double *v, size_t dim)
{
	for (int pass = 0; pass < 2; pass++) {
		double p = dot(u, v, dim);
		for (size_t d = 0; d < dim; d++)
			u[d] -= p * v[d];
	}
}

/* Orthogonal iteration for the top two eigenvectors of the covariance. */
static void top_two(double *v, double *w, double *part, const float *x, const double *mu, size_t n, size_t dim)
{
	uint64_t seed = 0x5ca1ab1e;
	for (size_t d = 0; d < 2 * dim; d++)
		v[d] = (double)(fci_splitmix64(&seed) >> 11) / 9007199254740992.0 * 2 - 1;
	unit_signed(v, dim);
	orthogonalise(v + dim, v, dim);
	unit_signed(v + dim, dim);
	for (int it = 0; it < PCA_MAX_ITER; it++) {
		cov_times(w, part, x, mu, v, n, dim);
		double l1 = unit_signed(w, dim);
		if (!(l1 > 1e-300))
			return; /* every row is the mean: nothing to show, keep the start */
		orthogonalise(w + dim, w, dim);
		if (!(sqrt(dot(w + dim, w + dim, dim)) > 1e-10 * l1)) {
			/* Rank one: any unit vector orthogonal to the first will do; the
			 * previous second vector, made orthogonal again, keeps it fixed. */
			memcpy(w + dim, v + dim, dim * sizeof *w);
			orthogonalise(w + dim, w, dim);
		}
		unit_signed(w + dim, dim);
		double change = 0;
		for (size_t d = 0; d < 2 * dim; d++)
			change = fmax(change, fabs(w[d] - v[d]));
		memcpy(v, w, 2 * dim * sizeof *v);
		if (change < PCA_TOL)
			break;
	}
}

int fc_pca2(float *out, double *explained, const float *x, size_t n, size_t dim)
{
	if (!out || !x || n == 0 || dim == 0)
		return FC_ERR_INVALID;
	if (dim > SIZE_MAX / sizeof(float) / n || dim > SIZE_MAX / 16 / ((n + PCA_BLOCK - 1) / PCA_BLOCK + 3))
		return FC_ERR_OVERFLOW;
	for (size_t i = 0; i < n * dim; i++)
		if (!isfinite(x[i]))
			return FC_ERR_INVALID;
	size_t nb = (n + PCA_BLOCK - 1) / PCA_BLOCK;
	float *xn = malloc(n * dim * sizeof *xn);
	double *mu = calloc(dim, sizeof *mu), *v = malloc(2 * dim * sizeof *v), *w = malloc(2 * dim * sizeof *w);
	double *part = malloc(nb * 2 * dim * sizeof *part);
	int rc = FC_ERR_NOMEM;
	if (!xn || !mu || !v || !w || !part)
		goto out;
	fci_l2_normalize_rows(xn, x, n, dim);
	for (size_t i = 0; i < n; i++)
		for (size_t d = 0; d < dim; d++)
			mu[d] += xn[i * dim + d];
	for (size_t d = 0; d < dim; d++)
		mu[d] /= (double)n;
	top_two(v, w, part, xn, mu, n, dim);
	double total = 0, var[2] = { 0, 0 };
	for (size_t i = 0; i < n; i++) {
		double a = 0, b = 0;
		for (size_t d = 0; d < dim; d++) {
			double c = (double)xn[i * dim + d] - mu[d];
			a += c * v[d];
			b += c * v[dim + d];
			total += c * c;
		}
		out[2 * i] = (float)a;
		out[2 * i + 1] = (float)b;
		var[0] += a * a;
		var[1] += b * b;
	}
	if (explained) {
		explained[0] = total > 0 ? var[0] / total : 0;
		explained[1] = total > 0 ? var[1] / total : 0;
	}
	rc = 0;
out:
	free(part);
	free(w);
	free(v);
	free(mu);
	free(xn);
	return rc;
}
