/*
 * test_optim.c - optimizers against torch.optim (fixture from
 * tools/optim_ref.py) and learning-rate schedules against their formulas at
 * hand-picked steps. The sampler's tests are in test_sampler.c.
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

#include "featcache/optim.h"

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
	/* warm-up 10 steps, 110 in all: factor at each step, to tol */
	static const struct {
		fc_sched_kind kind;
		uint64_t step;
		double want, tol;
	} cases[] = {
		{ FC_SCHED_CONSTANT, 0, 1, 0 },	   { FC_SCHED_WARMUP, 0, 0, 0 },
		{ FC_SCHED_WARMUP, 5, 0.5, 1e-12 }, { FC_SCHED_WARMUP, 10, 1, 0 },
		{ FC_SCHED_WARMUP, 1000, 1, 0 },    { FC_SCHED_LINEAR, 5, 0.5, 1e-12 },
		{ FC_SCHED_LINEAR, 10, 1, 1e-12 },  { FC_SCHED_LINEAR, 60, 0.5, 1e-12 },
		{ FC_SCHED_LINEAR, 110, 0, 0 },     { FC_SCHED_LINEAR, 500, 0, 0 },
		{ FC_SCHED_COSINE, 10, 1, 1e-12 },  { FC_SCHED_COSINE, 60, 0.5, 1e-12 },
		{ FC_SCHED_COSINE, 35, -1, 1e-12 }, { FC_SCHED_COSINE, 110, 0, 1e-12 },
	};
	fc_sched_config c = { .warmup_steps = 10, .total_steps = 110 };
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		/* -1: 0.5 (1 + cos(pi/4)), a quarter of the way through the decay */
		double want = cases[i].want >= 0 ? cases[i].want : 0.5 * (1 + cos(M_PI / 4));
		c.kind = cases[i].kind;
		assert_float_equal(fc_sched_factor(&c, cases[i].step), want, cases[i].tol);
	}
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_optimizers_match_torch),
		cmocka_unit_test(test_schedules),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
