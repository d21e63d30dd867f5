/*
 * test_head.c - the projection head against independent references: the
 * oneDNN products against naive loops, forward (train and eval) against a
 * naive double-precision implementation of Linear/BatchNorm1d/ReLU (and
 * the BatchNorm-folded layers export writes against the same), and every
 * gradient against central finite differences.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "featcache/train.h"
#include "tests/testlib.h"
#include "train/matmul.h"

static uint64_t seed;

static double rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return (double)(*s >> 11) / 9007199254740992.0 * 2 - 1;
}

static void fill(float *x, size_t n, uint64_t *s)
{
	for (size_t i = 0; i < n; i++)
		x[i] = (float)rnd(s);
}

static void test_matmul_vs_naive(void **state)
{
	(void)state;
	fci_mm *mm;
	assert_int_equal(fci_mm_new(&mm), 0);
	uint64_t s = seed;
	const size_t shapes[][3] = { { 1, 1, 1 }, { 7, 5, 3 }, { 128, 64, 96 }, { 33, 17, 129 }, { 2, 300, 1 } };
	for (size_t q = 0; q < 5; q++) {
		size_t M = shapes[q][0], N = shapes[q][1], K = shapes[q][2];
		float *A = malloc(M * K * 4), *B = malloc(K * N * 4), *C = malloc(M * N * 4);
		double *R = malloc(M * N * 8);
		fill(A, M * K, &s);
		fill(B, K * N, &s);
		for (int ta = 0; ta < 2; ta++)
			for (int tb = 0; tb < 2; tb++)
				for (int acc = 0; acc < 2; acc++) {
					fill(C, M * N, &s);
					for (size_t m = 0; m < M; m++)
						for (size_t n = 0; n < N; n++) {
							double v = acc ? C[m * N + n] : 0;
							for (size_t k = 0; k < K; k++) {
								double a = ta ? A[k * M + m] : A[m * K + k];
								double b = tb ? B[n * K + k] : B[k * N + n];
								v += a * b;
							}
							R[m * N + n] = v;
						}
					assert_int_equal(fci_mm_run(mm, C, A, B, M, N, K, ta, tb, acc), 0);
					double worst = 0;
					for (size_t i = 0; i < M * N; i++)
						worst = fmax(worst, fabs(C[i] - R[i]) / (1 + fabs(R[i])));
					if (worst > 1e-5)
						fail_msg("M%zu N%zu K%zu ta%d tb%d acc%d: error %g", M, N, K, ta, tb, acc, worst);
					assert_true(strncmp(fci_mm_impl(mm), "ref", 3) != 0);
				}
		free(A);
		free(B);
		free(C);
		free(R);
	}
	print_message("# oneDNN matmul implementation: %s\n", fci_mm_impl(mm));
	fci_mm_free(mm);
}

/* Naive double-precision head, reading the parameters through the state dict. */
static void ref_forward(fc_head *h, double *out, const float *in, uint32_t B, int training)
{
	fc_tensor t[48];
	size_t nt = fc_head_tensors(h, t, 48);
	fc_head_config cfg = fc_head_get_config(h);
	uint32_t L = (uint32_t)(nt / 6), in_dim = cfg.in_dim;
	double *x = malloc((size_t)B * 4096 * 8), *y = malloc((size_t)B * 4096 * 8);
	for (size_t i = 0; i < (size_t)B * in_dim; i++)
		x[i] = in[i];
	for (uint32_t l = 0; l < L; l++) {
		const float *W = t[6 * l].data, *g = t[6 * l + 1].data, *b = t[6 * l + 2].data;
		const float *rm = t[6 * l + 3].data, *rv = t[6 * l + 4].data;
		uint32_t C = (uint32_t)t[6 * l].shape[0], IN = (uint32_t)t[6 * l].shape[1];
		for (uint32_t r = 0; r < B; r++)
			for (uint32_t c = 0; c < C; c++) {
				double v = 0;
				for (uint32_t k = 0; k < IN; k++)
					v += x[(size_t)r * IN + k] * W[(size_t)c * IN + k];
				y[(size_t)r * C + c] = v;
			}
		for (uint32_t c = 0; c < C; c++) {
			double mean = rm[c], var = rv[c];
			if (training) {
				mean = var = 0;
				for (uint32_t r = 0; r < B; r++)
					mean += y[(size_t)r * C + c];
				mean /= B;
				for (uint32_t r = 0; r < B; r++)
					var += (y[(size_t)r * C + c] - mean) * (y[(size_t)r * C + c] - mean);
				var /= B;
			}
			for (uint32_t r = 0; r < B; r++) {
				double v = g[c] * (y[(size_t)r * C + c] - mean) / sqrt(var + 1e-5) + b[c];
				y[(size_t)r * C + c] = (l + 1 < L && v < 0) ? 0 : v;
			}
		}
		memcpy(x, y, (size_t)B * C * 8);
		in_dim = C;
	}
	memcpy(out, x, (size_t)B * cfg.out_dim * 8);
	free(x);
	free(y);
}

static void test_forward_vs_reference(void **state)
{
	(void)state;
	uint64_t s = seed + 1;
	const fc_head_config cfgs[] = { { 12, 0, 5, 3 }, { 9, 17, 4, 2 }, { 6, 0, 6, 1 }, { 32, 20, 8, 4 } };
	for (int q = 0; q < 4; q++) {
		fc_head *h;
		assert_int_equal(fc_head_new(&h, &cfgs[q], 16, 7), 0);
		fc_head_config c = fc_head_get_config(h);
		uint32_t B = 16;
		float *x = malloc((size_t)B * c.in_dim * 4), *y = malloc((size_t)B * c.out_dim * 4);
		double *r = malloc((size_t)B * c.out_dim * 8);
		fill(x, (size_t)B * c.in_dim, &s);
		/* Non-trivial BN parameters. */
		float *p, *g;
		size_t n;
		fc_head_params(h, &p, &g, &n);
		fc_tensor t[48];
		size_t nt = fc_head_tensors(h, t, 48);
		for (size_t i = 0; i < nt; i += 6) {
			for (uint64_t j = 0; j < t[i + 1].shape[0]; j++) {
				t[i + 1].data[j] = 1.0f + 0.3f * (float)rnd(&s);
				t[i + 2].data[j] = 0.2f * (float)rnd(&s);
			}
		}
		for (int training = 1; training >= 0; training--) {
			ref_forward(h, r, x, B, training); /* before: training updates running stats */
			assert_int_equal(fc_head_forward(h, y, x, B, training), 0);
			for (size_t i = 0; i < (size_t)B * c.out_dim; i++)
				if (fabs(y[i] - r[i]) > 1e-4 * (1 + fabs(r[i])))
					fail_msg("config %d training %d: out[%zu] %g vs %g", q, training, i, y[i], r[i]);
		}
		/* Running statistics after one training step: m=0.1, unbiased var. */
		assert_int_equal(*t[5].count, 1);
		free(x);
		free(y);
		free(r);
		fc_head_free(h);
	}
}

static void test_running_stats(void **state)
{
	(void)state;
	fc_head_config cfg = { 3, 0, 2, 1 };
	fc_head *h;
	assert_int_equal(fc_head_new(&h, &cfg, 4, 1), 0);
	fc_tensor t[6];
	fc_head_tensors(h, t, 6);
	/* Identity-ish weight: z = first two inputs. */
	memset(t[0].data, 0, 6 * 4);
	t[0].data[0] = 1;
	t[0].data[4] = 1;
	float x[12] = { 1, 2, 0, 3, 4, 0, 5, 6, 0, 7, 8, 0 }, y[8];
	assert_int_equal(fc_head_forward(h, y, x, 4, 1), 0);
	/* Feature 0: values 1,3,5,7: mean 4, biased var 5, unbiased 20/3. */
	assert_float_equal(t[3].data[0], 0.4f, 1e-6);
	assert_float_equal(t[4].data[0], 0.9f + 0.1f * 20.0f / 3.0f, 1e-6);
	assert_float_equal(y[0], (float)((1 - 4) / sqrt(5 + 1e-5)), 1e-6);
	assert_int_equal(fc_head_forward(h, y, x, 1, 1), FC_ERR_INVALID); /* PyTorch refuses B=1 */
	assert_int_equal(fc_head_forward(h, y, x, 5, 0), FC_ERR_INVALID); /* > max_batch */
	fc_head_free(h);
}

/* L = sum(dout * head(x)): analytic gradients vs central differences. */
static double objective(fc_head *h, const float *x, const float *dout, uint32_t B, float *y)
{
	fc_head_config c = fc_head_get_config(h);
	assert_int_equal(fc_head_forward(h, y, x, B, 1), 0);
	double L = 0;
	for (size_t i = 0; i < (size_t)B * c.out_dim; i++)
		L += (double)dout[i] * y[i];
	return L;
}

static void test_gradients_fd(void **state)
{
	(void)state;
	uint64_t s = seed + 2;
	const fc_head_config cfgs[] = { { 6, 0, 4, 3 }, { 5, 7, 3, 2 }, { 4, 0, 4, 1 } };
	for (int q = 0; q < 3; q++) {
		fc_head *h;
		const uint32_t B = 16; /* small batches make BN after ReLU ill-conditioned for FD */
		assert_int_equal(fc_head_new(&h, &cfgs[q], B, 11 + (uint64_t)q), 0);
		fc_head_config c = fc_head_get_config(h);
		float *x = malloc((size_t)B * c.in_dim * 4), *dout = malloc((size_t)B * c.out_dim * 4);
		float *y = malloc((size_t)B * c.out_dim * 4), *din = malloc((size_t)B * c.in_dim * 4);
		fill(x, (size_t)B * c.in_dim, &s);
		fill(dout, (size_t)B * c.out_dim, &s);
		float *p, *g;
		size_t n;
		fc_head_params(h, &p, &g, &n);
		for (size_t i = 0; i < n; i++)
			p[i] += 0.1f * (float)rnd(&s); /* BN gamma/beta away from 1/0 */
		fc_head_zero_grad(h);
		objective(h, x, dout, B, y);
		assert_int_equal(fc_head_backward(h, din, dout, B), 0);
		/* Central differences at three step sizes; each gradient is judged by
		 * the closest one, since a step can straddle a ReLU kink or meet a
		 * BatchNorm feature with tiny variance, and float noise grows as the
		 * step shrinks. A wrong gradient matches at no step size. */
		double num = 0, den = 0, inum = 0, iden = 0;
		for (size_t i = 0; i < n + (size_t)B * c.in_dim; i++) {
			float *v = i < n ? &p[i] : &x[i - n];
			double an = i < n ? g[i] : din[i - n], best = INFINITY, fd_best = 0;
			const float steps[3] = { 1e-3f, 3e-4f, 1e-4f };
			for (int e = 0; e < 3; e++) {
				float keep = *v;
				*v = keep + steps[e];
				double lp = objective(h, x, dout, B, y);
				*v = keep - steps[e];
				double lm = objective(h, x, dout, B, y);
				*v = keep;
				double fd = (lp - lm) / (2.0 * steps[e]);
				if (fabs(fd - an) < best)
					best = fabs(fd - an), fd_best = fd;
			}
			if (i < n)
				num += best * best, den += fd_best * fd_best;
			else
				inum += best * best, iden += fd_best * fd_best;
		}
		double rel = sqrt(num / (den + 1e-30)), irel = sqrt(inum / (iden + 1e-30));
		print_message("# head %u-%u-%u x%u: params rel err %.2e, input rel err %.2e\n", c.in_dim,
			      c.hidden, c.out_dim, c.layers, rel, irel);
		assert_true(rel < 1e-3);
		assert_true(irel < 1e-3);
		/* Backward accumulates: a second backward doubles the gradients. */
		float g0 = g[0];
		objective(h, x, dout, B, y);
		assert_int_equal(fc_head_backward(h, NULL, dout, B), 0);
		assert_float_equal(g[0], 2 * g0, 1e-4 * (1 + fabsf(g0)));
		free(x);
		free(dout);
		free(y);
		free(din);
		fc_head_free(h);
	}
}

static void test_tensors_and_init(void **state)
{
	(void)state;
	fc_head_config cfg = { 2048, 0, 256, 3 };
	fc_head *h;
	assert_int_equal(fc_head_new(&h, &cfg, 8, 3), 0);
	fc_tensor t[32];
	size_t nt = fc_head_tensors(h, t, 32);
	assert_int_equal(nt, 18);
	assert_string_equal(t[0].name, "head_layers.0.weight");
	assert_int_equal(t[0].shape[0], 2048);
	assert_int_equal(t[0].shape[1], 2048);
	assert_string_equal(t[1].name, "head_layers.1.weight");
	assert_string_equal(t[5].name, "head_layers.1.num_batches_tracked");
	assert_non_null(t[5].count);
	assert_string_equal(t[12].name, "head_layers.6.weight");
	assert_int_equal(t[12].shape[0], 256);
	assert_string_equal(t[16].name, "head_layers.7.running_var");
	/* U(-1/sqrt(2048), 1/sqrt(2048)): bounds and a variance near bound^2/3. */
	double bound = 1 / sqrt(2048.0), sum2 = 0;
	size_t n = 2048 * 2048;
	for (size_t i = 0; i < n; i++) {
		assert_true(fabs(t[0].data[i]) <= bound);
		sum2 += (double)t[0].data[i] * t[0].data[i];
	}
	assert_true(fabs(sum2 / n / (bound * bound / 3) - 1) < 0.01);
	fc_head_free(h);
	fc_head_config bad = { 8, 0, 4, 9 };
	assert_int_equal(fc_head_new(&h, &bad, 8, 3), FC_ERR_INVALID);
	bad.layers = 2;
	bad.out_dim = 0;
	assert_int_equal(fc_head_new(&h, &bad, 8, 3), FC_ERR_INVALID);
}

static void test_embed_normalizes(void **state)
{
	(void)state;
	fc_head_config cfg = { 10, 0, 6, 2 };
	fc_head *h;
	assert_int_equal(fc_head_new(&h, &cfg, 4, 5), 0);
	uint64_t s = seed + 3;
	float x[11 * 10], y[11 * 6], z[11 * 6];
	fill(x, sizeof x / 4, &s);
	assert_int_equal(fc_head_embed(h, y, x, 11, 1), 0);
	assert_int_equal(fc_head_embed(h, z, x, 11, 0), 0);
	for (int r = 0; r < 11; r++) {
		double n2 = 0, zn = 0;
		for (int j = 0; j < 6; j++) {
			n2 += (double)y[r * 6 + j] * y[r * 6 + j];
			zn += (double)z[r * 6 + j] * z[r * 6 + j];
		}
		assert_float_equal(n2, 1.0, 1e-5);
		for (int j = 0; j < 6; j++)
			assert_float_equal(y[r * 6 + j], z[r * 6 + j] / sqrt(zn), 1e-5);
	}
	fc_head_free(h);
}

/* fc_head_folded_layer: each layer as x w^T + b (ReLU between), which is
 * what an export computes, against the naive eval forward; BatchNorm
 * statistics far from identity so the folding shows. */
static void test_folded_layers(void **state)
{
	(void)state;
	uint64_t s = seed + 4;
	const fc_head_config cfg = { 7, 11, 5, 3 };
	const uint32_t B = 4, dims[4] = { 7, 11, 11, 5 };
	fc_head *h;
	fc_tensor t[48];
	double x[4 * 11], y[4 * 11], r[4 * 5];
	float in[4 * 7], w[11 * 11], b[11];

	assert_int_equal(fc_head_new(&h, &cfg, B, 9), 0);
	size_t nt = fc_head_tensors(h, t, 48);
	for (size_t i = 0; i < nt; i += 6)
		for (uint64_t j = 0; j < t[i + 1].shape[0]; j++) {
			t[i + 1].data[j] = 1.0f + 0.5f * (float)rnd(&s);  /* gamma */
			t[i + 2].data[j] = 0.3f * (float)rnd(&s);         /* beta */
			t[i + 3].data[j] = 0.4f * (float)rnd(&s);         /* running mean */
			t[i + 4].data[j] = 1.2f + (float)rnd(&s);         /* running var, > 0.2 */
		}
	fill(in, B * 7, &s);
	for (size_t i = 0; i < B * 7; i++)
		x[i] = in[i];
	for (uint32_t l = 0; l < 3; l++) {
		const uint32_t IN = dims[l], C = dims[l + 1];
		assert_int_equal(fc_head_folded_layer(h, l, w, b), 0);
		for (uint32_t k = 0; k < B; k++)
			for (uint32_t c = 0; c < C; c++) {
				double v = b[c];
				for (uint32_t j = 0; j < IN; j++)
					v += x[k * IN + j] * w[c * IN + j];
				y[k * C + c] = l < 2 && v < 0 ? 0 : v;
			}
		memcpy(x, y, sizeof(double) * B * C);
	}
	ref_forward(h, r, in, B, 0);
	for (size_t i = 0; i < B * 5; i++)
		if (fabs(x[i] - r[i]) > 1e-5 * (1 + fabs(r[i])))
			fail_msg("out[%zu]: folded %g, eval forward %g", i, x[i], r[i]);
	assert_int_equal(fc_head_folded_layer(h, 3, w, b), FC_ERR_INVALID);
	assert_int_equal(fc_head_folded_layer(h, 0, NULL, b), 0);
	fc_head_free(h);
}

int main(void)
{
	/* The suite's fixed seed unless FC_SEED says otherwise: the finite-
	 * difference check fails for about 1 seed in 20 (e.g. 142542, 197975)
	 * where a step meets a ReLU kink or a near-constant BN feature. */
	seed = testlib_seed("test_head") | 1;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_matmul_vs_naive),
		cmocka_unit_test(test_forward_vs_reference),
		cmocka_unit_test(test_running_stats),
		cmocka_unit_test(test_gradients_fd),
		cmocka_unit_test(test_tensors_and_init),
		cmocka_unit_test(test_embed_normalizes),
		cmocka_unit_test(test_folded_layers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
