/*
 * optim.c - torch.optim's SGD, Adam and AdamW update rules (single-tensor,
 * foreach=False arithmetic) and the learning-rate schedules. The formulas
 * are in train.h beside the declarations.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "featcache/train.h"

#define PARALLEL_MIN (1u << 16) /* below this, threads cost more than they save */

struct fc_optim {
	fc_optim_config cfg;
	size_t n;
	float *m, *v; /* sgd: momentum buffer in m */
	int64_t step;
};

static const char *const optim_names[] = { "adam", "adamw", "sgd" };
static const char *const sched_names[] = { "constant", "linear", "cosine", "warmup", "step" };

void fc_optim_config_default(fc_optim_config *cfg, fc_optim_kind kind)
{
	*cfg = (fc_optim_config){ .kind = kind, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f };
	if (kind == FC_OPT_ADAMW)
		cfg->weight_decay = 0.01f;
	if (kind == FC_OPT_SGD)
		cfg->momentum = 0.9f;
}

int fc_optim_parse(const char *s, fc_optim_kind *out)
{
	for (int i = 0; i < 3; i++)
		if (strcmp(s, optim_names[i]) == 0) {
			*out = (fc_optim_kind)i;
			return 0;
		}
	return FC_ERR_INVALID;
}

const char *fc_optim_name(fc_optim_kind k)
{
	return (unsigned)k < 3 ? optim_names[k] : "?";
}

int fc_optim_new(fc_optim **out, const fc_optim_config *cfg, size_t n)
{
	*out = NULL;
	if ((unsigned)cfg->kind > FC_OPT_SGD || n > SIZE_MAX / sizeof(float) / 2)
		return FC_ERR_INVALID;
	fc_optim *o = calloc(1, sizeof *o);
	if (!o)
		return FC_ERR_NOMEM;
	o->cfg = *cfg;
	o->n = n;
	o->m = calloc(n ? n : 1, sizeof(float));
	if (cfg->kind != FC_OPT_SGD)
		o->v = calloc(n ? n : 1, sizeof(float));
	if (!o->m || (cfg->kind != FC_OPT_SGD && !o->v)) {
		fc_optim_free(o);
		return FC_ERR_NOMEM;
	}
	*out = o;
	return 0;
}

void fc_optim_free(fc_optim *o)
{
	if (!o)
		return;
	free(o->m);
	free(o->v);
	free(o);
}

void fc_optim_state(fc_optim *o, float **m, float **v, size_t *n, int64_t **step)
{
	*m = o->m;
	*v = o->v;
	*n = o->n;
	*step = &o->step;
}

/* Both updates are written branch-free over restrict-qualified locals so
 * the compiler vectorises them: Adam over the default head touches ~9M
 * floats per step and is memory-bound, so every pass counts. */
static void sgd(fc_optim *o, float *restrict p, const float *restrict grad, float lr)
{
	float *restrict buf = o->m;
	const size_t n = o->n;
	const float wd = o->cfg.weight_decay, mu = o->cfg.momentum;
	const float keep = o->step == 0 ? 0.0f : mu;       /* buf = g on the first step */
	const float nest = o->cfg.nesterov ? mu : 0.0f;
	if (mu == 0) {
#pragma omp parallel for simd schedule(static) if (n > PARALLEL_MIN)
		for (size_t i = 0; i < n; i++)
			p[i] -= lr * (grad[i] + wd * p[i]);
		return;
	}
	/* Element-wise, so threads change nothing in the result. */
#pragma omp parallel for simd schedule(static) if (n > PARALLEL_MIN)
	for (size_t i = 0; i < n; i++) {
		float g = grad[i] + wd * p[i];
		float b = keep * buf[i] + g;
		buf[i] = b;
		p[i] -= lr * (o->cfg.nesterov ? g + nest * b : b);
	}
}

static void adam(fc_optim *o, float *restrict p, const float *restrict grad, float lr, int decoupled)
{
	float *restrict m = o->m, *restrict v = o->v;
	const size_t n = o->n;
	const float b1 = o->cfg.beta1, b2 = o->cfg.beta2, eps = o->cfg.eps, wd = o->cfg.weight_decay;
	const double t = (double)o->step + 1;
	const float bc1 = (float)(1 - pow(b1, t)), bc2 = (float)(1 - pow(b2, t));
	const float step_size = lr / bc1, bc2_sqrt = sqrtf(bc2);
	/* adamw: p *= 1 - lr*wd, gradient as is; adam: p as is, g += wd*p. */
	const float decay = decoupled ? 1 - lr * wd : 1.0f, l2 = decoupled ? 0.0f : wd;
#pragma omp parallel for simd schedule(static) if (n > PARALLEL_MIN)
	for (size_t i = 0; i < n; i++) {
		float g = grad[i] + l2 * p[i];
		float mi = b1 * m[i] + (1 - b1) * g;
		float vi = b2 * v[i] + (1 - b2) * g * g;
		m[i] = mi;
		v[i] = vi;
		float denom = sqrtf(vi) / bc2_sqrt + eps;
		p[i] = p[i] * decay - step_size * mi / denom;
	}
}

void fc_optim_step(fc_optim *o, float *params, const float *grads, float lr)
{
	switch (o->cfg.kind) {
	case FC_OPT_SGD: sgd(o, params, grads, lr); break;
	case FC_OPT_ADAM: adam(o, params, grads, lr, 0); break;
	case FC_OPT_ADAMW: adam(o, params, grads, lr, 1); break;
	}
	o->step++;
}

double fc_sched_factor(const fc_sched_config *c, uint64_t s)
{
	const uint64_t W = c->warmup_steps, T = c->total_steps;
	int warms = c->kind == FC_SCHED_LINEAR || c->kind == FC_SCHED_COSINE || c->kind == FC_SCHED_WARMUP;
	if (warms && s < W)
		return (double)s / (double)W;
	switch (c->kind) {
	case FC_SCHED_CONSTANT:
	case FC_SCHED_WARMUP:
		return 1;
	case FC_SCHED_LINEAR:
		return T > W && s < T ? (double)(T - s) / (double)(T - W) : 0;
	case FC_SCHED_COSINE:
		if (T <= W)
			return 0;
		return 0.5 * (1 + cos(M_PI * (double)(s < T ? s - W : T - W) / (double)(T - W)));
	case FC_SCHED_STEP:
		return pow(c->gamma, (double)(s / (c->step_size ? c->step_size : 1)));
	}
	return 1;
}

int fc_sched_parse(const char *s, fc_sched_kind *out)
{
	for (int i = 0; i < 5; i++)
		if (strcmp(s, sched_names[i]) == 0) {
			*out = (fc_sched_kind)i;
			return 0;
		}
	return FC_ERR_INVALID;
}

const char *fc_sched_name(fc_sched_kind k)
{
	return (unsigned)k < 5 ? sched_names[k] : "?";
}
