/*
 * test_views.c - unit tests of train/views.c, what the report shows about a
 * head besides its metrics: per-class means of per-query metrics and the
 * confusion counts of neighbour lists against hand-computed cases, and the
 * 2-D PCA map against hand-computed 2-D and 3-D cases, its sign convention,
 * its determinism (same bytes again and on another thread count) and, on
 * random data, that no direction holds more variance than its first axis.
 *
 * Random data comes from one seed, printed at the start; set FC_SEED to
 * replay a failure.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "featcache/metrics.h"
#include "tests/testlib.h"

/* Five queries in classes 0, 1, 0, 2, 0 of four (3 has none); two metric
 * columns carry values, the rest are the query number. */
static void test_by_class_hand(void **state)
{
	(void)state;
	double rows[5 * 9], out[4 * 9];
	size_t counts[4];
	const uint32_t cls[5] = { 0, 1, 0, 2, 0 };
	const double prec[5] = { 0.5, 1.0, 0.25, 0.0, 0.75 }, ap[5] = { 0.6, 0.9, 0.3, 0.1, 0.0 };
	for (int q = 0; q < 5; q++) {
		for (int m = 0; m < 9; m++)
			rows[q * 9 + m] = q;
		rows[q * 9 + 0] = prec[q];
		rows[q * 9 + 4] = ap[q];
	}
	assert_int_equal(fc_metrics_by_class(out, counts, rows, cls, 5, 4), 0);
	assert_int_equal(counts[0], 3);
	assert_int_equal(counts[1], 1);
	assert_int_equal(counts[2], 1);
	assert_int_equal(counts[3], 0);
	assert_true(fabs(out[0 * 9 + 0] - 0.5) < 1e-12);       /* (0.5 + 0.25 + 0.75) / 3 */
	assert_true(fabs(out[0 * 9 + 4] - 0.3) < 1e-12);       /* (0.6 + 0.3 + 0) / 3 */
	assert_true(fabs(out[0 * 9 + 2] - 2.0) < 1e-12);       /* (0 + 2 + 4) / 3 */
	assert_true(fabs(out[1 * 9 + 4] - 0.9) < 1e-12);
	assert_true(fabs(out[2 * 9 + 0] - 0.0) < 1e-12);
	assert_true(fabs(out[2 * 9 + 1] - 3.0) < 1e-12);
	for (int m = 0; m < 9; m++)
		assert_true(out[3 * 9 + m] == 0);
	const uint32_t bad[5] = { 0, 1, 0, 4, 0 };
	assert_int_equal(fc_metrics_by_class(out, NULL, rows, bad, 5, 4), FC_ERR_INVALID);
}

/* Three queries (classes 0, 1, 0), k 3, the last with two neighbours only. */
static void test_confusion_hand(void **state)
{
	(void)state;
	const uint32_t idx[3 * 3] = { 1, 2, 3, /**/ 0, 3, 4, /**/ 4, 0, 99 };
	const size_t nn[3] = { 3, 3, 2 };
	const uint32_t qc[3] = { 0, 1, 0 }, ic[5] = { 0, 0, 1, 2, 1 };
	uint64_t c[9];
	memset(c, 0xff, sizeof c);
	assert_int_equal(fc_knn_confusion(c, idx, nn, 3, 3, qc, ic, 5, 3), 0);
	/* query 0 (class 0): 0, 1, 2; query 1 (class 1): 0, 2, 1; query 2 (class 0): 1, 0 */
	const uint64_t want[9] = { 2, 2, 1, /**/ 1, 1, 1, /**/ 0, 0, 0 };
	assert_memory_equal(c, want, sizeof want);
	const size_t full[3] = { 3, 3, 3 };
	assert_int_equal(fc_knn_confusion(c, idx, full, 3, 3, qc, ic, 5, 3), FC_ERR_INVALID);
}

/* (1, 0) and (0, 3): normalised, centred on (0.5, 0.5), they lie along
 * (1, -1)/sqrt2, signed positive in its first (equal-largest) entry. */
static void test_pca_2d(void **state)
{
	(void)state;
	const float x[4] = { 1, 0, 0, 3 };
	float out[4];
	double ex[2];
	assert_int_equal(fc_pca2(out, ex, x, 2, 2), 0);
	assert_true(fabsf(out[0] - 0.70710678f) < 1e-6f);
	assert_true(fabsf(out[2] + 0.70710678f) < 1e-6f);
	assert_true(fabsf(out[1]) < 1e-6f && fabsf(out[3]) < 1e-6f);
	assert_true(fabs(ex[0] - 1) < 1e-9 && fabs(ex[1]) < 1e-9);
}

/* Rows +-2 (0.6, 0.8, 0) twice each and +-3 (0, 0, 1) once each: the mean
 * is 0, the covariance has (0.6, 0.8, 0) with 4/6 of the variance and
 * (0, 0, 1) with 2/6; the first is signed by its 0.8, the second by its 1. */
static void test_pca_3d(void **state)
{
	(void)state;
	const float x[6 * 3] = { 1.2f, 1.6f, 0, -1.2f, -1.6f, 0, 1.2f, 1.6f, 0, -1.2f, -1.6f, 0, 0, 0, 3, 0, 0, -3 };
	const float want[6 * 2] = { 1, 0, -1, 0, 1, 0, -1, 0, 0, 1, 0, -1 };
	float out[12];
	double ex[2];
	assert_int_equal(fc_pca2(out, ex, x, 6, 3), 0);
	for (int i = 0; i < 12; i++)
		assert_true(fabsf(out[i] - want[i]) < 1e-6f);
	assert_true(fabs(ex[0] - 2.0 / 3) < 1e-6 && fabs(ex[1] - 1.0 / 3) < 1e-6);
	/* The same cloud mirrored: the signs follow the data, not the start. */
	float m[18];
	for (int i = 0; i < 18; i++)
		m[i] = -x[i];
	assert_int_equal(fc_pca2(out, NULL, m, 6, 3), 0);
	for (int i = 0; i < 12; i++)
		assert_true(fabsf(out[i] + want[i]) < 1e-6f);
	const float bad[3] = { 1, NAN, 0 };
	assert_int_equal(fc_pca2(out, NULL, bad, 1, 3), FC_ERR_INVALID);
	assert_int_equal(fc_pca2(out, NULL, x, 0, 3), FC_ERR_INVALID);
}

/* Random clouds stretched along a few directions: the same bytes on one
 * thread and on three, and the first axis holds at least the variance of
 * any of 500 random directions (of the normalised, centred rows). */
static void test_pca_random(void **state)
{
	(void)state;
	enum { N = 1500, D = 24 };
	float *x = malloc(N * D * sizeof *x), *a = malloc(N * 2 * sizeof *a), *b = malloc(N * 2 * sizeof *b);
	double *xn = malloc(N * D * sizeof *xn), mu[D] = { 0 };
	assert_true(x && a && b && xn);
	for (int i = 0; i < N; i++)
		for (int d = 0; d < D; d++)
			x[i * D + d] = testlib_float(-1, 1) * (d < 3 ? 4.0f - (float)d : 0.5f) + (d == 5 ? 2.0f : 0.0f);
	double ex[2];
	omp_set_num_threads(1);
	assert_int_equal(fc_pca2(a, ex, x, N, D), 0);
	omp_set_num_threads(3);
	assert_int_equal(fc_pca2(b, NULL, x, N, D), 0);
	assert_memory_equal(a, b, N * 2 * sizeof *a);
	assert_true(ex[0] >= ex[1] && ex[1] > 0 && ex[0] + ex[1] <= 1 + 1e-9);

	for (int i = 0; i < N; i++) {
		double n = 0;
		for (int d = 0; d < D; d++)
			n += (double)x[i * D + d] * x[i * D + d];
		for (int d = 0; d < D; d++)
			mu[d] += (xn[i * D + d] = x[i * D + d] / sqrt(n)) / N;
	}
	double total = 0;
	for (int i = 0; i < N * D; i++)
		total += (xn[i] - mu[i % D]) * (xn[i] - mu[i % D]);
	for (int t = 0; t < 500; t++) {
		double u[D], un = 0, var = 0;
		for (int d = 0; d < D; d++) {
			u[d] = testlib_float(-1, 1);
			un += u[d] * u[d];
		}
		for (int i = 0; i < N; i++) {
			double p = 0;
			for (int d = 0; d < D; d++)
				p += (xn[i * D + d] - mu[d]) * u[d];
			var += p * p / un;
		}
		assert_true(var / total <= ex[0] + 1e-7);
	}
	free(xn);
	free(b);
	free(a);
	free(x);
}

int main(void)
{
	testlib_seed("test_views");
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_by_class_hand), cmocka_unit_test(test_confusion_hand),
		cmocka_unit_test(test_pca_2d),        cmocka_unit_test(test_pca_3d),
		cmocka_unit_test(test_pca_random),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
