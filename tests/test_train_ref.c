/*
 * test_train_ref.c - one whole training step against PyTorch: for each loss,
 * the head's forward in training mode, the loss, every gradient (head and
 * ArcFace/CosFace centres), the BatchNorm running statistics, and the
 * parameters after one step of sgd, adam and adamw, from the fixtures that
 * tools/train_ref.py wrote with torch (tests/fixtures/train/).
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

#define TOL 1e-4

typedef struct named {
	char kind[16];  /* param, grad, buffer, after */
	char optim[8];  /* for after: the optimizer */
	char name[64];
	size_t n;
	float *v;
} named;

typedef struct fixture {
	fc_loss_config loss;
	fc_head_config head;
	uint32_t labels[64];
	float *input;
	double loss_value;
	named t[256];
	size_t nt;
	struct {
		char name[8];
		float lr, wd, momentum;
	} optims[3];
	int n_optims;
} fixture;

static char *top_path(const char *rel)
{
	static char path[1024];
	const char *top = getenv("FC_TOP");
	snprintf(path, sizeof path, "%s/%s", top ? top : ".", rel);
	return path;
}

static float *read_vals(char **p, size_t n)
{
	float *v = malloc(n * sizeof *v);
	for (size_t i = 0; i < n; i++)
		v[i] = strtof(*p, p);
	return v;
}

static void load(fixture *fx, const char *name)
{
	char rel[256];
	snprintf(rel, sizeof rel, "tests/fixtures/train/%s.txt", name);
	FILE *f = fopen(top_path(rel), "r");
	if (!f)
		fail_msg("cannot open fixture %s", rel);
	memset(fx, 0, sizeof *fx);
	static char line[1 << 16];
	char word[64], cur_optim[8] = "";
	while (fgets(line, sizeof line, f)) {
		char *p = line;
		if (line[0] == '#')
			continue;
		if (sscanf(p, "%63s", word) != 1)
			continue;
		p += strlen(word);
		if (!strcmp(word, "kind")) {
			sscanf(p, "%63s", word);
			assert_int_equal(fc_loss_parse(word, &fx->loss.kind), 0);
			fc_loss_config_default(&fx->loss, fx->loss.kind);
		} else if (!strcmp(word, "miner")) {
			sscanf(p, "%63s", word);
			assert_int_equal(fc_miner_parse(word, &fx->loss.miner), 0);
		} else if (!strcmp(word, "distance")) {
			sscanf(p, "%63s", word);
			assert_int_equal(fc_distance_parse(word, &fx->loss.distance), 0);
		} else if (!strcmp(word, "margin")) {
			fx->loss.margin = strtof(p, NULL);
		} else if (!strcmp(word, "pos_margin")) {
			fx->loss.pos_margin = strtof(p, NULL);
		} else if (!strcmp(word, "neg_margin")) {
			fx->loss.neg_margin = strtof(p, NULL);
		} else if (!strcmp(word, "temperature")) {
			fx->loss.temperature = strtof(p, NULL);
		} else if (!strcmp(word, "scale")) {
			fx->loss.scale = strtof(p, NULL);
		} else if (!strcmp(word, "n_classes")) {
			fx->loss.n_classes = (uint32_t)strtoul(p, NULL, 10);
		} else if (!strcmp(word, "head")) {
			sscanf(p, "%u %u %u", &fx->head.in_dim, &fx->head.out_dim, &fx->head.layers);
		} else if (!strcmp(word, "labels")) {
			for (int i = 0; i < 64 && *p && *p != '\n'; i++)
				fx->labels[i] = (uint32_t)strtoul(p, &p, 10);
		} else if (!strcmp(word, "input")) {
			size_t n = strtoul(p, &p, 10);
			fx->input = read_vals(&p, n);
		} else if (!strcmp(word, "loss")) {
			fx->loss_value = strtod(p, NULL);
		} else if (!strcmp(word, "optim")) {
			int k = fx->n_optims++;
			sscanf(p, "%7s lr %f wd %f momentum %f", fx->optims[k].name, &fx->optims[k].lr, &fx->optims[k].wd,
			       &fx->optims[k].momentum);
			strcpy(cur_optim, fx->optims[k].name);
		} else {
			named *t = &fx->t[fx->nt++];
			strcpy(t->kind, word);
			if (!strcmp(word, "after"))
				strcpy(t->optim, cur_optim);
			int used;
			sscanf(p, "%63s %zu%n", t->name, &t->n, &used);
			p += used;
			t->v = read_vals(&p, t->n);
		}
	}
	fclose(f);
}

static void fixture_free(fixture *fx)
{
	free(fx->input);
	for (size_t i = 0; i < fx->nt; i++)
		free(fx->t[i].v);
}

static const named *find(const fixture *fx, const char *kind, const char *optim, const char *name)
{
	for (size_t i = 0; i < fx->nt; i++)
		if (!strcmp(fx->t[i].kind, kind) && !strcmp(fx->t[i].name, name) &&
		    (!optim || !strcmp(fx->t[i].optim, optim)))
			return &fx->t[i];
	return NULL;
}

static double rel_err(const float *a, const float *b, size_t n)
{
	double d = 0, m = 1e-12;
	for (size_t i = 0; i < n; i++) {
		d = fmax(d, fabs((double)a[i] - b[i]));
		m = fmax(m, fabs((double)b[i]));
	}
	return d / m;
}

/* Set the head's parameters (and the loss's W) from the fixture's "param" lines. */
static void set_params(const fixture *fx, fc_head *h, fc_loss *l)
{
	fc_tensor ts[32];
	size_t nt = fc_head_tensors(h, ts, 32);
	for (size_t i = 0; i < nt; i++) {
		if (ts[i].count) {
			*ts[i].count = 0;
			continue;
		}
		const named *p = find(fx, "param", NULL, ts[i].name);
		assert_non_null(p);
		memcpy(ts[i].data, p->v, p->n * sizeof(float));
	}
	float *W, *gW;
	size_t nw;
	fc_loss_params(l, &W, &gW, &nw);
	if (nw) {
		const named *p = find(fx, "param", NULL, "loss.W");
		assert_non_null(p);
		assert_int_equal(p->n, nw);
		memcpy(W, p->v, nw * sizeof(float));
	}
}

static void run_case(const char *name)
{
	fixture fx;
	load(&fx, name);
	const uint32_t B = 16;
	fc_head *h;
	fc_loss *l;
	assert_int_equal(fc_head_new(&h, &fx.head, B, 1), 0);
	assert_int_equal(fc_loss_new(&l, &fx.loss, fx.head.out_dim, B, 1), 0);
	float *hp, *hg, *W, *gW;
	size_t hn, nw;
	fc_head_params(h, &hp, &hg, &hn);
	fc_loss_params(l, &W, &gW, &nw);
	float *y = malloc(B * fx.head.out_dim * sizeof *y), *dy = malloc(B * fx.head.out_dim * sizeof *dy);
	float *grads = malloc(hn * sizeof *grads), *gWsave = malloc((nw ? nw : 1) * sizeof *gWsave);

	/* One forward/backward from the fixture's start. */
	set_params(&fx, h, l);
	fc_head_zero_grad(h);
	if (nw)
		memset(gW, 0, nw * sizeof *gW);
	float loss;
	assert_int_equal(fc_head_forward(h, y, fx.input, B, 1), 0);
	assert_int_equal(fc_loss_forward_backward(l, &loss, dy, y, fx.labels, B, NULL), 0);
	assert_int_equal(fc_head_backward(h, NULL, dy, B), 0);
	double le = fabs(loss - fx.loss_value) / fmax(fabs(fx.loss_value), 1e-12);
	print_message("# %s: loss %.7g (torch %.7g, rel %.1e)\n", name, loss, fx.loss_value, le);
	assert_true(le <= TOL);

	fc_tensor ts[32];
	size_t nt = fc_head_tensors(h, ts, 32);
	double worst = 0;
	for (size_t i = 0; i < nt; i++) {
		const named *want = find(&fx, ts[i].count ? "" : (strstr(ts[i].name, "running") ? "buffer" : "grad"),
					 NULL, ts[i].name);
		if (!want)
			continue;
		const float *got = strstr(ts[i].name, "running") ? ts[i].data : hg + (ts[i].data - hp);
		double e = rel_err(got, want->v, want->n);
		if (e > TOL)
			fail_msg("%s: %s %s differs from torch by %.2e", name, want->kind, ts[i].name, e);
		worst = fmax(worst, e);
	}
	if (nw) {
		const named *want = find(&fx, "grad", NULL, "loss.W");
		double e = rel_err(gW, want->v, nw);
		if (e > TOL)
			fail_msg("%s: grad loss.W differs from torch by %.2e", name, e);
		worst = fmax(worst, e);
	}
	print_message("# %s: gradients and running stats within %.1e of torch\n", name, worst);
	memcpy(grads, hg, hn * sizeof *grads);
	if (nw)
		memcpy(gWsave, gW, nw * sizeof *gW);

	/* One step of each optimizer from the same start and gradients. */
	for (int o = 0; o < fx.n_optims; o++) {
		fc_optim_config oc;
		fc_optim_kind k;
		assert_int_equal(fc_optim_parse(fx.optims[o].name, &k), 0);
		fc_optim_config_default(&oc, k);
		oc.weight_decay = fx.optims[o].wd;
		oc.momentum = fx.optims[o].momentum;
		fc_optim *oh, *ol = NULL;
		assert_int_equal(fc_optim_new(&oh, &oc, hn), 0);
		set_params(&fx, h, l);
		fc_optim_step(oh, hp, grads, fx.optims[o].lr);
		if (nw) {
			assert_int_equal(fc_optim_new(&ol, &oc, nw), 0);
			fc_optim_step(ol, W, gWsave, fx.optims[o].lr);
		}
		double ow = 0;
		for (size_t i = 0; i < nt; i++) {
			const named *want = find(&fx, "after", fx.optims[o].name, ts[i].name);
			if (!want || ts[i].count || strstr(ts[i].name, "running"))
				continue;
			double e = rel_err(ts[i].data, want->v, want->n);
			if (e > TOL)
				fail_msg("%s/%s: %s after one step differs from torch by %.2e", name, fx.optims[o].name,
					 ts[i].name, e);
			ow = fmax(ow, e);
		}
		if (nw) {
			const named *want = find(&fx, "after", fx.optims[o].name, "loss.W");
			double e = rel_err(W, want->v, nw);
			if (e > TOL)
				fail_msg("%s/%s: loss.W after one step differs by %.2e", name, fx.optims[o].name, e);
			ow = fmax(ow, e);
		}
		print_message("# %s/%s: weights after one step within %.1e of torch\n", name, fx.optims[o].name, ow);
		fc_optim_free(oh);
		fc_optim_free(ol);
	}
	free(y);
	free(dy);
	free(grads);
	free(gWsave);
	fc_loss_free(l);
	fc_head_free(h);
	fixture_free(&fx);
}

static void test_all_cases(void **state)
{
	(void)state;
	FILE *f = fopen(top_path("tests/fixtures/train/index.txt"), "r");
	assert_non_null(f);
	char line[128];
	int n = 0;
	while (fgets(line, sizeof line, f)) {
		if (line[0] == '#' || line[0] == '\n')
			continue;
		line[strcspn(line, "\n")] = '\0';
		run_case(line);
		n++;
	}
	fclose(f);
	assert_int_equal(n, 7);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_all_cases),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
