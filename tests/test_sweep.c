/*
 * test_sweep.c - the sweep's search space (grid order and count, random
 * draws within bounds, integers rounded, reproducible per seed, bad ranges
 * refused) and fc_trainer_epoch_group: trainers stepped together on shared
 * batches end bit-identical to the same trainers run alone, in parallel or
 * not, and a trainer whose loss turns non-finite stops alone.
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

#include "featcache/sweep.h"
#include "featcache/train.h"

static void test_grid_order(void **state)
{
	(void)state;
	fc_sweep_axis ax[3] = { { .n_values = 3 }, { .n_values = 2 }, { .n_values = 4 } };
	fc_sweep_cell *c;
	size_t n;
	assert_int_equal(fc_sweep_expand(&c, &n, ax, 3, 0, 1, NULL, 0), 0);
	assert_int_equal(n, 24);
	/* The last axis varies fastest, like nested loops in the order given. */
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(c[i * 3 + 0].index, i / 8);
		assert_int_equal(c[i * 3 + 1].index, (i / 4) % 2);
		assert_int_equal(c[i * 3 + 2].index, i % 4);
	}
	free(c);
}

static void test_random_draws(void **state)
{
	(void)state;
	fc_sweep_axis ax[4] = { { .n_values = 2 },
				{ .lo = 1e-5, .hi = 1e-2, .log = 1 },
				{ .lo = 0.1, .hi = 0.5 },
				{ .lo = 16, .hi = 1024, .log = 1, .integer = 1 } };
	fc_sweep_cell *c, *again;
	size_t n, n2;
	uint64_t seed = 7;
	printf("# seed %llu\n", (unsigned long long)seed);
	assert_int_equal(fc_sweep_expand(&c, &n, ax, 4, 200, seed, NULL, 0), 0);
	assert_int_equal(n, 400);
	int low_decade = 0;
	for (size_t i = 0; i < n; i++) {
		const fc_sweep_cell *r = c + i * 4;
		assert_int_equal(r[0].index, i % 2);
		assert_true(r[1].value >= 1e-5 && r[1].value <= 1e-2);
		assert_true(r[2].value >= 0.1 && r[2].value <= 0.5);
		assert_true(r[3].value >= 16 && r[3].value <= 1024 && r[3].value == floor(r[3].value));
		low_decade += r[1].value < 1e-4;
		if (i % 2) /* one draw, times the grid */
			assert_true(r[1].value == r[-4 + 1].value && r[3].value == r[-4 + 3].value);
	}
	/* Log-uniform: about a third of the draws in the lowest decade (a
	 * uniform draw would put 1% there). */
	assert_true(low_decade > 80 && low_decade < 200);
	assert_int_equal(fc_sweep_expand(&again, &n2, ax, 4, 200, seed, NULL, 0), 0);
	assert_memory_equal(c, again, n * 4 * sizeof *c);
	free(again);
	assert_int_equal(fc_sweep_expand(&again, &n2, ax, 4, 200, seed + 1, NULL, 0), 0);
	assert_true(memcmp(c, again, n * 4 * sizeof *c) != 0);
	free(again);
	free(c);
}

static void test_bad_ranges(void **state)
{
	(void)state;
	fc_sweep_cell *c;
	size_t n;
	char why[FC_ERRLEN];
	fc_sweep_axis empty = { .lo = 2, .hi = 1 }, zero_log = { .lo = 0, .hi = 1, .log = 1 },
		      no_int = { .lo = 1.2, .hi = 1.8, .integer = 1 }, inf = { .lo = 0, .hi = INFINITY },
		      grid = { .n_values = 2 };
	assert_int_equal(fc_sweep_expand(&c, &n, &empty, 1, 3, 0, why, sizeof why), FC_ERR_INVALID);
	assert_non_null(strstr(why, "empty"));
	assert_int_equal(fc_sweep_expand(&c, &n, &zero_log, 1, 3, 0, why, sizeof why), FC_ERR_INVALID);
	assert_non_null(strstr(why, "above 0"));
	assert_int_equal(fc_sweep_expand(&c, &n, &no_int, 1, 3, 0, why, sizeof why), FC_ERR_INVALID);
	assert_int_equal(fc_sweep_expand(&c, &n, &inf, 1, 3, 0, why, sizeof why), FC_ERR_INVALID);
	assert_int_equal(fc_sweep_expand(&c, &n, &zero_log, 1, 0, 0, why, sizeof why), FC_ERR_INVALID);
	assert_int_equal(fc_sweep_expand(&c, &n, &grid, 1, 3, 0, why, sizeof why), FC_ERR_INVALID);
	assert_null(c);
}

/* Class centres plus noise: something for the heads to learn. */
#define N 240
#define DIM 24
#define CLASSES 6

static void make_data(float *x, uint32_t *y)
{
	uint64_t s = 42;
	for (size_t i = 0; i < N; i++) {
		y[i] = (uint32_t)(i % CLASSES);
		for (size_t j = 0; j < DIM; j++) {
			s = s * 6364136223846793005ull + 1442695040888963407ull;
			float noise = (float)((s >> 40) & 0xffff) / 65536.0f - 0.5f;
			x[i * DIM + j] = (j % CLASSES == y[i] ? 1.0f : 0.0f) + noise;
		}
	}
}

static fc_train_config config(float lr, uint32_t out_dim, fc_loss_kind loss)
{
	fc_train_config c = { 0 };
	c.head = (fc_head_config){ DIM, 0, out_dim, 2 };
	fc_loss_config_default(&c.loss, loss);
	fc_optim_config_default(&c.optim, FC_OPT_ADAM);
	c.sched.kind = FC_SCHED_COSINE;
	c.lr = lr;
	c.epochs = 3;
	c.batch = 24;
	c.per_class = loss == FC_LOSS_ARCFACE ? 0 : 4;
	c.seed = 5;
	return c;
}

static void params_of(fc_trainer *t, float **p, size_t *n)
{
	float *g;
	fc_head_params(fc_trainer_head(t), p, &g, n);
}

static void run_group(int jobs)
{
	float *x = malloc(N * DIM * sizeof *x);
	uint32_t y[N];
	make_data(x, y);
	fc_train_data d = { x, y, N, CLASSES, NULL };
	fc_train_config cfg[3] = { config(1e-3f, 8, FC_LOSS_TRIPLET), config(3e-3f, 16, FC_LOSS_SUPCON),
				   config(1e-2f, 4, FC_LOSS_TRIPLET) };
	fc_trainer *alone[3], *group[3];
	char why[FC_ERRLEN];
	for (int i = 0; i < 3; i++) {
		assert_int_equal(fc_trainer_new(&alone[i], &cfg[i], &d, why, sizeof why), 0);
		assert_int_equal(fc_trainer_new(&group[i], &cfg[i], &d, why, sizeof why), 0);
		assert_true(fc_trainer_shares_sampling(group[0], group[i]));
	}
	for (uint32_t e = 0; e < 3; e++) {
		fc_epoch_stats st[3], one;
		int errs[3];
		assert_int_equal(fc_trainer_epoch_group(group, 3, st, errs, NULL, jobs, NULL), 0);
		for (int i = 0; i < 3; i++) {
			assert_int_equal(errs[i], 0);
			assert_int_equal(fc_trainer_epoch(alone[i], &one, NULL, NULL), 0);
			assert_true(one.loss == st[i].loss && one.lr == st[i].lr && one.steps == st[i].steps);
			assert_int_equal(one.active, st[i].active);
		}
	}
	for (int i = 0; i < 3; i++) {
		float *a, *b;
		size_t na, nb;
		params_of(alone[i], &a, &na);
		params_of(group[i], &b, &nb);
		assert_int_equal(na, nb);
		assert_memory_equal(a, b, na * sizeof *a);
		fc_trainer_free(alone[i]);
		fc_trainer_free(group[i]);
	}
	free(x);
}

static void test_group_matches_alone_serial(void **state)
{
	(void)state;
	run_group(1);
}

static void test_group_matches_alone_parallel(void **state)
{
	(void)state;
	run_group(3);
}

/* Two trainers on the same data, configs a and b; *x is the data to free. */
static void two_trainers(fc_trainer *t[2], float **x, const fc_train_config *a, const fc_train_config *b)
{
	static uint32_t y[N];
	*x = malloc(N * DIM * sizeof **x);
	assert_non_null(*x);
	make_data(*x, y);
	fc_train_data d = { *x, y, N, CLASSES, NULL };
	assert_int_equal(fc_trainer_new(&t[0], a, &d, NULL, 0), 0);
	assert_int_equal(fc_trainer_new(&t[1], b, &d, NULL, 0), 0);
}

static void test_group_needs_shared_sampling(void **state)
{
	(void)state;
	float *x;
	fc_train_config a = config(1e-3f, 8, FC_LOSS_TRIPLET), b = a;
	b.batch = 36;
	fc_trainer *t[2];
	two_trainers(t, &x, &a, &b);
	assert_false(fc_trainer_shares_sampling(t[0], t[1]));
	fc_epoch_stats st[2];
	int errs[2];
	assert_int_equal(fc_trainer_epoch_group(t, 2, st, errs, NULL, 2, NULL), FC_ERR_INVALID);
	fc_trainer_free(t[0]);
	fc_trainer_free(t[1]);
	free(x);
}

static void test_group_nonfinite_stops_one(void **state)
{
	(void)state;
	float *x;
	/* An lr of 1e30 blows the first head up within an epoch. */
	fc_train_config a = config(1e30f, 8, FC_LOSS_TRIPLET), b = config(1e-3f, 8, FC_LOSS_TRIPLET);
	a.optim.kind = b.optim.kind = FC_OPT_SGD;
	fc_trainer *t[2];
	two_trainers(t, &x, &a, &b);
	fc_epoch_stats st[2];
	int errs[2];
	uint64_t bad[2] = { 0, 0 };
	assert_int_equal(fc_trainer_epoch_group(t, 2, st, errs, bad, 2, NULL), 0);
	assert_int_equal(errs[0], FC_ERR_INVALID);
	assert_true(bad[0] >= 1);
	assert_int_equal(errs[1], 0);
	assert_int_equal(fc_trainer_epochs_done(t[0]), 0);
	assert_int_equal(fc_trainer_epochs_done(t[1]), 1);
	fc_trainer_free(t[0]);
	fc_trainer_free(t[1]);
	free(x);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_grid_order),
		cmocka_unit_test(test_random_draws),
		cmocka_unit_test(test_bad_ranges),
		cmocka_unit_test(test_group_matches_alone_serial),
		cmocka_unit_test(test_group_matches_alone_parallel),
		cmocka_unit_test(test_group_needs_shared_sampling),
		cmocka_unit_test(test_group_nonfinite_stops_one),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
