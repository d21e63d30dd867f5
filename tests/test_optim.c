/*
 * test_optim.c - optimizers against torch.optim (fixture from
 * tools/optim_ref.py), learning-rate schedules against their formulas at
 * hand-picked steps, and the batch sampler's guarantees.
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

static const char *fixture_path(void)
{
	static char path[1024];
	const char *top = getenv("FC_TOP");
	snprintf(path, sizeof path, "%s/tests/fixtures/optim/optim.txt", top ? top : ".");
	return path;
}

static int read_floats(const char *line, const char *tag, float *out, int n)
{
	size_t tl = strlen(tag);
	if (strncmp(line, tag, tl) != 0)
		return -1;
	const char *p = line + tl;
	for (int i = 0; i < n; i++) {
		char *end;
		out[i] = strtof(p, &end);
		if (end == p)
			return -1;
		p = end;
	}
	return 0;
}

static void test_optimizers_match_torch(void **state)
{
	(void)state;
	FILE *f = fopen(fixture_path(), "r");
	assert_non_null(f);
	char line[4096], kind[16];
	int configs = 0;
	fc_optim *o = NULL;
	float p[9], g[9], want[9], lr = 0;
	while (fgets(line, sizeof line, f)) {
		float base, wd, mom, b1, b2, eps;
		int nest;
		if (sscanf(line, "config %15s lr %f wd %f momentum %f nesterov %d beta1 %f beta2 %f eps %f", kind,
			   &base, &wd, &mom, &nest, &b1, &b2, &eps) == 8) {
			fc_optim_free(o);
			fc_optim_config c;
			fc_optim_kind k;
			assert_int_equal(fc_optim_parse(kind, &k), 0);
			fc_optim_config_default(&c, k);
			c.weight_decay = wd;
			c.momentum = mom;
			c.nesterov = nest;
			c.beta1 = b1;
			c.beta2 = b2;
			c.eps = eps;
			assert_int_equal(fc_optim_new(&o, &c, 9), 0);
			configs++;
		} else if (read_floats(line, "init", p, 9) == 0) {
			continue;
		} else if (read_floats(line, "grad", g, 9) == 0) {
			continue;
		} else if (sscanf(line, "lr %f", &lr) == 1) {
			fc_optim_step(o, p, g, lr);
		} else if (read_floats(line, "after", want, 9) == 0) {
			for (int i = 0; i < 9; i++)
				if (fabsf(p[i] - want[i]) > 1e-6f * (1 + fabsf(want[i])))
					fail_msg("%s config %d: p[%d] = %.9g, torch %.9g", kind, configs, i, p[i],
						 want[i]);
		}
	}
	fclose(f);
	fc_optim_free(o);
	assert_int_equal(configs, 7);
}

static void test_schedules(void **state)
{
	(void)state;
	fc_sched_config c = { .kind = FC_SCHED_CONSTANT, .warmup_steps = 10, .total_steps = 110 };
	assert_float_equal(fc_sched_factor(&c, 0), 1, 0);
	c.kind = FC_SCHED_WARMUP;
	assert_float_equal(fc_sched_factor(&c, 0), 0, 0);
	assert_float_equal(fc_sched_factor(&c, 5), 0.5, 1e-12);
	assert_float_equal(fc_sched_factor(&c, 10), 1, 0);
	assert_float_equal(fc_sched_factor(&c, 1000), 1, 0);
	c.kind = FC_SCHED_LINEAR;
	assert_float_equal(fc_sched_factor(&c, 5), 0.5, 1e-12);
	assert_float_equal(fc_sched_factor(&c, 10), 1, 1e-12);
	assert_float_equal(fc_sched_factor(&c, 60), 0.5, 1e-12);
	assert_float_equal(fc_sched_factor(&c, 110), 0, 0);
	assert_float_equal(fc_sched_factor(&c, 500), 0, 0);
	c.kind = FC_SCHED_COSINE;
	assert_float_equal(fc_sched_factor(&c, 10), 1, 1e-12);
	assert_float_equal(fc_sched_factor(&c, 60), 0.5, 1e-12);
	assert_float_equal(fc_sched_factor(&c, 35), 0.5 * (1 + cos(M_PI / 4)), 1e-12);
	assert_float_equal(fc_sched_factor(&c, 110), 0, 1e-12);
	c = (fc_sched_config){ .kind = FC_SCHED_STEP, .step_size = 30, .gamma = 0.1f };
	assert_float_equal(fc_sched_factor(&c, 29), 1, 0);
	assert_float_equal(fc_sched_factor(&c, 30), 0.1f, 1e-9);
	assert_float_equal(fc_sched_factor(&c, 65), 0.1f * 0.1f, 1e-9);
	fc_sched_kind k;
	assert_int_equal(fc_sched_parse("cosine", &k), 0);
	assert_int_equal(k, FC_SCHED_COSINE);
	assert_int_equal(fc_sched_parse("cos", &k), FC_ERR_INVALID);
	assert_string_equal(fc_sched_name(FC_SCHED_WARMUP), "warmup");
}

/* Class sizes 1..12 over 10 classes plus a bigger one of `big` items. */
static size_t make_classes(uint32_t *cls, int big)
{
	size_t n = 0;
	for (uint32_t c = 0; c < 10; c++)
		for (uint32_t i = 0; i <= c + (c == 9 ? 2 : 0); i++)
			cls[n++] = c;
	for (int i = 0; i < big; i++)
		cls[n++] = 10;
	return n;
}

static void test_sampler_balanced(void **state)
{
	(void)state;
	uint32_t cls[200];
	size_t n = make_classes(cls, 24);
	const uint32_t K = 4, batch = 16;
	fc_batches b, b2, b3;
	assert_int_equal(fc_sample_epoch(&b, cls, n, 11, batch, K, 42, 0), 0);
	assert_int_equal(fc_sample_epoch(&b2, cls, n, 11, batch, K, 42, 0), 0);
	assert_int_equal(fc_sample_epoch(&b3, cls, n, 11, batch, K, 42, 1), 0);
	/* Deterministic per (seed, epoch), different across epochs. */
	assert_int_equal(b.n_rows, b2.n_rows);
	assert_memory_equal(b.rows, b2.rows, b.n_rows * sizeof *b.rows);
	assert_true(b.n_rows != b3.n_rows || memcmp(b.rows, b3.rows, b.n_rows * sizeof *b.rows) != 0);
	int *seen = calloc(n, sizeof *seen);
	size_t s = 0;
	for (size_t i = 0; i < b.n_batches; i++) {
		size_t e = b.ends[i];
		assert_true(e - s >= 2 && e - s <= batch);
		/* Each class appears as one group: at most K rows, contiguous. */
		int count[11] = { 0 };
		int classes = 0;
		for (size_t j = s; j < e; j++) {
			uint32_t c = cls[b.rows[j]];
			if (count[c]++ == 0)
				classes++;
			assert_true(count[c] <= (int)K);
			seen[b.rows[j]]++;
		}
		assert_true(classes >= 2);
		s = e;
	}
	/* Every item is covered, except at most the few groups of the tail. */
	size_t missed = 0;
	for (size_t i = 0; i < n; i++)
		missed += seen[i] == 0;
	print_message("# %zu batches, %zu rows, %zu of %zu items not drawn this epoch\n", b.n_batches, b.n_rows,
		      missed, n);
	assert_true(missed <= K);
	free(seen);
	fc_batches_free(&b);
	fc_batches_free(&b2);
	fc_batches_free(&b3);

	/* A class with more groups than all others together: what is left over
	 * is of that class only (no batch of distinct classes can take it). */
	n = make_classes(cls, 100);
	assert_int_equal(fc_sample_epoch(&b, cls, n, 11, batch, K, 42, 0), 0);
	seen = calloc(n, sizeof *seen);
	for (size_t i = 0; i < b.n_rows; i++)
		seen[b.rows[i]]++;
	for (size_t i = 0; i < n; i++)
		if (!seen[i])
			assert_int_equal(cls[i], 10);
	free(seen);
	fc_batches_free(&b);

	/* A single class: nothing to contrast, no batches. */
	uint32_t one[10] = { 0 };
	assert_int_equal(fc_sample_epoch(&b, one, 10, 1, 8, 4, 1, 0), 0);
	assert_int_equal(b.n_batches, 0);
	fc_batches_free(&b);
	assert_int_equal(fc_sample_epoch(&b, one, 10, 1, 8, 9, 1, 0), FC_ERR_INVALID);
	one[3] = 5;
	assert_int_equal(fc_sample_epoch(&b, one, 10, 2, 8, 4, 1, 0), FC_ERR_INVALID);
}

static void test_sampler_uniform(void **state)
{
	(void)state;
	uint32_t cls[101] = { 0 };
	fc_batches b;
	assert_int_equal(fc_sample_epoch(&b, cls, 101, 1, 10, 0, 7, 3), 0);
	/* 10 full batches; the last single row is dropped (BatchNorm needs 2). */
	assert_int_equal(b.n_batches, 10);
	assert_int_equal(b.n_rows, 100);
	int seen[101] = { 0 };
	for (size_t i = 0; i < b.n_rows; i++)
		seen[b.rows[i]]++;
	for (int i = 0; i < 101; i++)
		assert_true(seen[i] <= 1);
	fc_batches_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_optimizers_match_torch),
		cmocka_unit_test(test_schedules),
		cmocka_unit_test(test_sampler_balanced),
		cmocka_unit_test(test_sampler_uniform),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
