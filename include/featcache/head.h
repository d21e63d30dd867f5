/*
 * head.h - Finetuner's projection head (Linear -> BatchNorm1d -> ReLU ...,
 * PyTorch state-dict names): forward, backward, embedding, and its
 * safetensors file.
 *
 * Conventions (llm.c style): row-major float matrices, batch first; a
 * backward accumulates into gradients and zeroing them is explicit; every
 * function returns 0 or a negative FC_ERR_*.
 */
#ifndef FEATCACHE_HEAD_H
#define FEATCACHE_HEAD_H

#include "featcache.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Finetuner's projection head with PyTorch's module names:
 *   head_layers.{3i}   Linear(in_i, out_i, bias=False)    weight (out_i, in_i)
 *   head_layers.{3i+1} BatchNorm1d(out_i, eps=1e-5, momentum=0.1)
 *   head_layers.{3i+2} ReLU                                (not after the last BN)
 * for i in 0..layers-1; in_0 = in_dim, out_i = hidden for i < layers-1,
 * out_{layers-1} = out_dim. */
typedef struct fc_head_config {
	uint32_t in_dim;
	uint32_t hidden;  /* 0 = in_dim (Finetuner's default) */
	uint32_t out_dim;
	uint32_t layers;  /* 1..8 */
} fc_head_config;

typedef struct fc_head fc_head;

/* A named tensor of a head, for saving and loading. */
typedef struct fc_tensor {
	const char *name;    /* PyTorch state-dict name */
	float *data;         /* NULL for num_batches_tracked (an int64 kept in `count`) */
	int ndim;
	uint64_t shape[2];
	int64_t *count;      /* num_batches_tracked, else NULL */
} fc_tensor;

/* fc_head_new - a head with PyTorch's initialisation (Linear weights
 * U(-1/sqrt(in), 1/sqrt(in)) from `seed`; BatchNorm weight 1, bias 0,
 * running mean 0, running var 1), able to train on batches of up to
 * max_batch rows. FC_ERR_INVALID for layers outside 1..8 or a zero dim. */
int fc_head_new(fc_head **out, const fc_head_config *cfg, uint32_t max_batch, uint64_t seed);
void fc_head_free(fc_head *h); /* accepts NULL */

/* fc_head_get_config - the config with hidden resolved (never 0). */
fc_head_config fc_head_get_config(const fc_head *h);

/* fc_head_params - the trainable parameters and their gradients, each one
 * contiguous block of *n floats (per layer: weight, BN weight, BN bias). */
void fc_head_params(fc_head *h, float **params, float **grads, size_t *n);

/* fc_head_zero_grad - set every gradient to 0. */
void fc_head_zero_grad(fc_head *h);

/* fc_head_forward - out (B,out_dim) = head(in (B,in_dim)). training: batch
 * statistics (B >= 2, as PyTorch requires), running statistics updated, and
 * the activations kept for fc_head_backward; otherwise running statistics.
 * The output is not normalised. */
int fc_head_forward(fc_head *h, float *out, const float *in, uint32_t B, int training);

/* fc_head_backward - accumulate parameter gradients for dout (B,out_dim) of
 * the last training forward (same B). din (B,in_dim) receives dL/din when
 * not NULL (the backbone is frozen, so training passes NULL). */
int fc_head_backward(fc_head *h, float *din, const float *dout, uint32_t B);

/* fc_head_embed - eval-mode forward of n rows in blocks, each output row
 * L2-normalised when `normalize` (zero rows stay zero). */
int fc_head_embed(fc_head *h, float *out, const float *in, size_t n, int normalize);

/* fc_head_tensors - the head's state dict in PyTorch order: weights,
 * biases, running statistics and num_batches_tracked. Returns the number of
 * tensors; fills at most cap entries. The pointers alias the head. */
size_t fc_head_tensors(fc_head *h, fc_tensor *out, size_t cap);

/* fc_head_folded_layer - layer i (0..layers-1) in eval mode as one affine
 * map, its BatchNorm1d folded into the Linear: w (out_i, in_i), row-major,
 * = diag(s) W and b (out_i) = beta - running_mean * s, where s = gamma /
 * sqrt(running_var + 1e-5), computed in double and rounded once; in_i and
 * out_i as in fc_head_config's comment (in_0 = in_dim, the last out_i =
 * out_dim, the rest hidden). Layer i's eval output is then x w^T + b,
 * followed by ReLU for every layer but the last. w or b may be NULL to
 * skip it. Returns 0, or FC_ERR_INVALID for i >= layers. */
int fc_head_folded_layer(const fc_head *h, uint32_t i, float *w, float *b);


/* fc_head_save - the head's state dict as safetensors, with `meta` pairs
 * (key, value, key, value, ..., NULL) in __metadata__ plus "format": "pt". */
int fc_head_save(fc_head *h, const char *path, const char *const *meta, char *why);

/* fc_head_load - a head from a safetensors file written by fc_head_save or
 * by PyTorch (a state dict with head_layers.* names): the shapes give the
 * config. max_batch as for fc_head_new. */
int fc_head_load(fc_head **out, const char *path, uint32_t max_batch, char *why);

#ifdef __cplusplus
}
#endif
#endif /* FEATCACHE_HEAD_H */
