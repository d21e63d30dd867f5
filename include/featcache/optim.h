/*
 * optim.h - the optimizers (sgd, adam, adamw) and learning-rate schedules.
 *
 * Conventions (llm.c style): row-major float matrices, batch first; a
 * backward accumulates into gradients and zeroing them is explicit; every
 * function returns 0 or a negative FC_ERR_*.
 */
#ifndef FEATCACHE_OPTIM_H
#define FEATCACHE_OPTIM_H

#include "featcache.h"

#ifdef __cplusplus
extern "C" {
#endif

/* PyTorch's update rules (torch.optim, foreach=False), one flat loop over a
 * contiguous parameter block:
 *   sgd:   g += wd*p; buf = momentum*buf + g (buf = g on the first step);
 *          g = nesterov ? g + momentum*buf : buf; p -= lr*g
 *   adam:  g += wd*p; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
 *          p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
 *   adamw: p *= 1 - lr*wd; then adam without the wd term */
typedef enum fc_optim_kind { FC_OPT_ADAM = 0, FC_OPT_ADAMW, FC_OPT_SGD } fc_optim_kind;

typedef struct fc_optim_config {
	fc_optim_kind kind;
	float weight_decay;
	float momentum;     /* sgd */
	int nesterov;       /* sgd */
	float beta1, beta2, eps; /* adam, adamw */
} fc_optim_config;

/* fc_optim_config_default - PyTorch's defaults (betas (0.9, 0.999), eps
 * 1e-8, weight decay 0, but 0.01 for adamw as torch.optim.AdamW) except
 * sgd momentum: featcache's 0.9 (torch's SGD defaults to 0), no nesterov. */
void fc_optim_config_default(fc_optim_config *cfg, fc_optim_kind kind);
int fc_optim_parse(const char *s, fc_optim_kind *out); /* "adam", "adamw", "sgd" */
const char *fc_optim_name(fc_optim_kind k);

typedef struct fc_optim fc_optim;

int fc_optim_new(fc_optim **out, const fc_optim_config *cfg, size_t n);
void fc_optim_free(fc_optim *o); /* accepts NULL */

/* fc_optim_step - one update of params[n] with grads[n] at learning rate lr. */
void fc_optim_step(fc_optim *o, float *params, const float *grads, float lr);

/* fc_optim_state - the moment buffers (m: momentum or first moment, v:
 * second moment or NULL) and the step count, for checkpoints. */
void fc_optim_state(fc_optim *o, float **m, float **v, size_t *n, int64_t **step);

/* Learning-rate schedules, as a factor of the base lr for optimizer step s
 * (0-based, the value used by the s-th update; Hugging Face's and PyTorch's
 * conventions):
 *   constant  1
 *   warmup    s < W ? s/W : 1                      (constant with warmup)
 *   linear    s < W ? s/W : max(0, (T-s)/(T-W))
 *   cosine    s < W ? s/W : 0.5*(1 + cos(pi*(s-W)/(T-W)))
 *   step      gamma^(floor(s / step_size))         (StepLR, gamma 0.1) */
typedef enum fc_sched_kind {
	FC_SCHED_CONSTANT = 0, FC_SCHED_LINEAR, FC_SCHED_COSINE, FC_SCHED_WARMUP, FC_SCHED_STEP
} fc_sched_kind;

typedef struct fc_sched_config {
	fc_sched_kind kind;
	uint64_t warmup_steps; /* W */
	uint64_t total_steps;  /* T */
	uint64_t step_size;    /* step: in optimizer steps */
	float gamma;           /* step */
} fc_sched_config;

double fc_sched_factor(const fc_sched_config *c, uint64_t s);
int fc_sched_parse(const char *s, fc_sched_kind *out); /* "constant", "linear", "cosine", "warmup", "step" */
const char *fc_sched_name(fc_sched_kind k);

#ifdef __cplusplus
}
#endif
#endif /* FEATCACHE_OPTIM_H */
