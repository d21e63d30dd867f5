/*
 * head.c - Finetuner's projection head: [Linear(no bias) -> BatchNorm1d ->
 * ReLU] x (L-1) -> Linear(no bias) -> BatchNorm1d, forward and backward by
 * hand, with PyTorch's BatchNorm1d semantics:
 *
 *   training:  mean, var = batch mean and biased variance (divide by B)
 *              y = gamma * (x - mean) / sqrt(var + eps) + beta
 *              running_mean = (1 - m) * running_mean + m * mean
 *              running_var  = (1 - m) * running_var  + m * var * B / (B - 1)
 *              num_batches_tracked += 1          (m = 0.1, eps = 1e-5)
 *   eval:      y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta
 *
 * The products run on oneDNN (train/matmul.c); BatchNorm and ReLU are
 * plain loops over features, which the compiler vectorises. Not here: the
 * loss (loss.c) and the optimizer (optim.c).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "featcache/train.h"
#include "util/util.h"
#include "train/matmul.h"

/* BatchNorm1d's eps: the layers compute with the float, folding (in
 * double) with the double; (float)1e-5 is 1e-5f. */
#define BN_EPS_D 1e-5
#define BN_EPS ((float)BN_EPS_D)
#define BN_MOMENTUM 0.1f
#define MAX_LAYERS 8

struct fc_head {
	fc_head_config cfg;
	uint32_t L;
	uint32_t dims[MAX_LAYERS + 1]; /* dims[i] -> dims[i+1] is layer i */
	uint32_t max_batch;

	/* Parameters and gradients: one block each, per layer W, gamma, beta. */
	float *params, *grads;
	size_t n_params;
	float *W[MAX_LAYERS], *gamma[MAX_LAYERS], *beta[MAX_LAYERS];
	float *dW[MAX_LAYERS], *dgamma[MAX_LAYERS], *dbeta[MAX_LAYERS];

	/* Buffers (not trained): running statistics. */
	float *buffers;
	float *rmean[MAX_LAYERS], *rvar[MAX_LAYERS];
	int64_t nbt[MAX_LAYERS];

	/* Activations of the last training forward, max_batch rows each. */
	const float *input;
	float *acts;
	float *xhat[MAX_LAYERS];   /* normalised pre-activation (B, out) */
	float *out[MAX_LAYERS];    /* layer output after ReLU (B, out); last: BN output */
	float *invstd[MAX_LAYERS]; /* per feature */
	float *scratch;            /* (B, max dim) gradient buffers, two of them */
	double *acc;               /* per-feature sums, 2 x max dim */
	uint32_t last_B;

	fci_mm *mm;
	char names[MAX_LAYERS * 6][48];
};

static float uniform(uint64_t *s, float lo, float hi)
{
	double u = fci_unit_double(fci_splitmix64(s));
	return (float)(lo + (hi - lo) * u);
}

static void *xcalloc(size_t n, size_t size, int *err)
{
	if (size && n > SIZE_MAX / size) {
		*err = FC_ERR_OVERFLOW;
		return NULL;
	}
	void *p = calloc(n ? n : 1, size);
	if (!p)
		*err = FC_ERR_NOMEM;
	return p;
}

int fc_head_new(fc_head **out, const fc_head_config *cfg, uint32_t max_batch, uint64_t seed)
{
	*out = NULL;
	if (cfg->layers < 1 || cfg->layers > MAX_LAYERS || cfg->in_dim == 0 || cfg->out_dim == 0 ||
	    max_batch < 1 || cfg->in_dim > (1u << 20) || cfg->out_dim > (1u << 20) || cfg->hidden > (1u << 20))
		return FC_ERR_INVALID;
	int err = 0;
	fc_head *h = xcalloc(1, sizeof *h, &err);
	if (!h)
		return err;
	h->cfg = *cfg;
	if (!h->cfg.hidden)
		h->cfg.hidden = cfg->in_dim;
	h->L = cfg->layers;
	h->max_batch = max_batch;
	h->dims[0] = cfg->in_dim;
	for (uint32_t i = 0; i < h->L; i++)
		h->dims[i + 1] = i + 1 == h->L ? cfg->out_dim : h->cfg.hidden;

	size_t np = 0, nb = 0, na = 0, maxd = 0;
	for (uint32_t i = 0; i < h->L; i++) {
		size_t in = h->dims[i], o = h->dims[i + 1];
		np += o * in + 2 * o;
		nb += 2 * o;
		na += 2 * (size_t)max_batch * o + o;
		maxd = in > maxd ? in : maxd;
		maxd = o > maxd ? o : maxd;
	}
	h->n_params = np;
	h->params = xcalloc(np, sizeof(float), &err);
	h->grads = h->params ? xcalloc(np, sizeof(float), &err) : NULL;
	h->buffers = h->grads ? xcalloc(nb, sizeof(float), &err) : NULL;
	h->acts = h->buffers ? xcalloc(na, sizeof(float), &err) : NULL;
	h->scratch = h->acts ? xcalloc(2 * (size_t)max_batch * maxd, sizeof(float), &err) : NULL;
	h->acc = h->scratch ? xcalloc(2 * maxd, sizeof(double), &err) : NULL;
	if (!h->acc || (err = fci_mm_new(&h->mm)) != 0) {
		fc_head_free(h);
		return err ? err : FC_ERR_NOMEM;
	}
	float *p = h->params, *g = h->grads, *b = h->buffers, *a = h->acts;
	uint64_t rng = seed;
	for (uint32_t i = 0; i < h->L; i++) {
		size_t in = h->dims[i], o = h->dims[i + 1];
		h->W[i] = p, h->dW[i] = g, p += o * in, g += o * in;
		h->gamma[i] = p, h->dgamma[i] = g, p += o, g += o;
		h->beta[i] = p, h->dbeta[i] = g, p += o, g += o;
		h->rmean[i] = b, b += o;
		h->rvar[i] = b, b += o;
		h->xhat[i] = a, a += (size_t)max_batch * o;
		h->out[i] = a, a += (size_t)max_batch * o;
		h->invstd[i] = a, a += o;
		/* PyTorch: kaiming_uniform_(a=sqrt(5)) gives bound 1/sqrt(fan_in). */
		float bound = 1.0f / sqrtf((float)in);
		for (size_t j = 0; j < o * in; j++)
			h->W[i][j] = uniform(&rng, -bound, bound);
		for (size_t j = 0; j < o; j++) {
			h->gamma[i][j] = 1.0f;
			h->rvar[i][j] = 1.0f;
		}
		snprintf(h->names[6 * i + 0], 48, "head_layers.%u.weight", 3 * i);
		snprintf(h->names[6 * i + 1], 48, "head_layers.%u.weight", 3 * i + 1);
		snprintf(h->names[6 * i + 2], 48, "head_layers.%u.bias", 3 * i + 1);
		snprintf(h->names[6 * i + 3], 48, "head_layers.%u.running_mean", 3 * i + 1);
		snprintf(h->names[6 * i + 4], 48, "head_layers.%u.running_var", 3 * i + 1);
		snprintf(h->names[6 * i + 5], 48, "head_layers.%u.num_batches_tracked", 3 * i + 1);
	}
	*out = h;
	return 0;
}

void fc_head_free(fc_head *h)
{
	if (!h)
		return;
	fci_mm_free(h->mm);
	free(h->params);
	free(h->grads);
	free(h->buffers);
	free(h->acts);
	free(h->scratch);
	free(h->acc);
	free(h);
}

fc_head_config fc_head_get_config(const fc_head *h)
{
	return h->cfg;
}

void fc_head_params(fc_head *h, float **params, float **grads, size_t *n)
{
	*params = h->params;
	*grads = h->grads;
	*n = h->n_params;
}

void fc_head_zero_grad(fc_head *h)
{
	memset(h->grads, 0, h->n_params * sizeof(float));
}

size_t fc_head_tensors(fc_head *h, fc_tensor *out, size_t cap)
{
	size_t n = 0;
	for (uint32_t i = 0; i < h->L; i++) {
		uint64_t in = h->dims[i], o = h->dims[i + 1];
		fc_tensor t[6] = {
			{ h->names[6 * i + 0], h->W[i], 2, { o, in }, NULL },
			{ h->names[6 * i + 1], h->gamma[i], 1, { o, 0 }, NULL },
			{ h->names[6 * i + 2], h->beta[i], 1, { o, 0 }, NULL },
			{ h->names[6 * i + 3], h->rmean[i], 1, { o, 0 }, NULL },
			{ h->names[6 * i + 4], h->rvar[i], 1, { o, 0 }, NULL },
			{ h->names[6 * i + 5], NULL, 0, { 0, 0 }, &h->nbt[i] },
		};
		for (int j = 0; j < 6; j++, n++)
			if (n < cap)
				out[n] = t[j];
	}
	return n;
}

/* BatchNorm1d over a (B, C) batch in place of z: training statistics,
 * running-stat update, xhat and invstd kept for backward. The loops run
 * along rows (features contiguous) so they vectorise; each feature's sums
 * still add the rows in order 0..B-1, in double. */
static void bn_train(fc_head *h, uint32_t i, float *y, const float *z, uint32_t B)
{
	const uint32_t C = h->dims[i + 1];
	float *xhat = h->xhat[i], *invstd = h->invstd[i];
	const float *gamma = h->gamma[i], *beta = h->beta[i];
	double *mean = h->acc, *sq = h->acc + C;
	memset(h->acc, 0, 2 * (size_t)C * sizeof *h->acc);
	for (uint32_t b = 0; b < B; b++) {
		const float *zr = z + (size_t)b * C;
#pragma omp simd
		for (uint32_t c = 0; c < C; c++)
			mean[c] += zr[c];
	}
#pragma omp simd
	for (uint32_t c = 0; c < C; c++)
		mean[c] /= B;
	for (uint32_t b = 0; b < B; b++) {
		const float *zr = z + (size_t)b * C;
#pragma omp simd
		for (uint32_t c = 0; c < C; c++) {
			double d = zr[c] - mean[c];
			sq[c] += d * d;
		}
	}
	for (uint32_t c = 0; c < C; c++) {
		invstd[c] = (float)(1.0 / sqrt(sq[c] / B + BN_EPS));
		h->rmean[i][c] = (1 - BN_MOMENTUM) * h->rmean[i][c] + BN_MOMENTUM * (float)mean[c];
		h->rvar[i][c] = (1 - BN_MOMENTUM) * h->rvar[i][c] + BN_MOMENTUM * (float)(sq[c] / (B - 1));
	}
	for (uint32_t b = 0; b < B; b++) {
		const float *zr = z + (size_t)b * C;
		float *xr = xhat + (size_t)b * C, *yr = y + (size_t)b * C;
#pragma omp simd
		for (uint32_t c = 0; c < C; c++) {
			xr[c] = (float)(zr[c] - mean[c]) * invstd[c];
			yr[c] = gamma[c] * xr[c] + beta[c];
		}
	}
	h->nbt[i]++;
}

/* Eval BatchNorm1d in place of z; the per-feature scale and shift go
 * through h->acc, which is why h is not const. */
static void bn_eval(fc_head *h, uint32_t i, float *y, const float *z, size_t B)
{
	const uint32_t C = h->dims[i + 1];
	float *scale = (float *)h->acc, *shift = scale + C;
	for (uint32_t c = 0; c < C; c++) {
		scale[c] = h->gamma[i][c] / sqrtf(h->rvar[i][c] + BN_EPS);
		shift[c] = h->beta[i][c];
	}
	for (size_t b = 0; b < B; b++) {
		const float *zr = z + b * C;
		float *yr = y + b * C;
#pragma omp simd
		for (uint32_t c = 0; c < C; c++)
			yr[c] = (zr[c] - h->rmean[i][c]) * scale[c] + shift[c];
	}
}

int fc_head_folded_layer(const fc_head *h, uint32_t i, float *w, float *b)
{
	if (i >= h->L)
		return FC_ERR_INVALID;
	const size_t in = h->dims[i], C = h->dims[i + 1];
	/* eval BN of z = x W^T: (z - mean) * s + beta with s = gamma / sqrt(var + eps),
	 * so W' = diag(s) W and b' = beta - mean * s, in double */
	for (size_t c = 0; c < C; c++) {
		double s = h->gamma[i][c] / sqrt((double)h->rvar[i][c] + BN_EPS_D);
		if (w)
			for (size_t j = 0; j < in; j++)
				w[c * in + j] = (float)(h->W[i][c * in + j] * s);
		if (b)
			b[c] = (float)(h->beta[i][c] - h->rmean[i][c] * s);
	}
	return 0;
}

/* NaN stays NaN, as in PyTorch, so a bad input shows in the loss instead
 * of being silently zeroed. */
static void relu(float *x, size_t n)
{
#pragma omp simd
	for (size_t j = 0; j < n; j++)
		x[j] = x[j] < 0 ? 0 : x[j];
}

int fc_head_forward(fc_head *h, float *out, const float *in, uint32_t B, int training)
{
	if (B == 0 || B > h->max_batch || (training && B < 2))
		return FC_ERR_INVALID;
	const float *x = in;
	for (uint32_t i = 0; i < h->L; i++) {
		const uint32_t C = h->dims[i + 1];
		int last = i + 1 == h->L;
		float *y = last ? out : h->out[i];
		/* z (B,C) = x (B,in) . W (C,in)^T, then BN in place into y. */
		int err = fci_mm_run(h->mm, y, x, h->W[i], B, C, h->dims[i], 0, 1, 0);
		if (err)
			return err;
		if (training)
			bn_train(h, i, y, y, B);
		else
			bn_eval(h, i, y, y, B);
		if (!last)
			relu(y, (size_t)B * C);
		x = y;
	}
	if (training) {
		h->input = in;
		h->last_B = B;
		/* The last layer's output lives in the caller's buffer; backward only
		 * needs xhat there, which is kept. */
	}
	return 0;
}

int fc_head_backward(fc_head *h, float *din, const float *dout, uint32_t B)
{
	if (B != h->last_B || !h->input)
		return FC_ERR_INVALID;
	/* dy: gradient w.r.t. the current layer's BN output; dx: w.r.t. its
	 * input. Two scratch buffers of max_batch x max dim, swapped per layer. */
	size_t maxd = 0;
	for (uint32_t i = 0; i <= h->L; i++)
		maxd = h->dims[i] > maxd ? h->dims[i] : maxd;
	float *dy = h->scratch, *dx = h->scratch + (size_t)h->max_batch * maxd;
	memcpy(dy, dout, (size_t)B * h->dims[h->L] * sizeof(float));
	for (uint32_t i = h->L; i-- > 0;) {
		const uint32_t C = h->dims[i + 1], IN = h->dims[i];
		const float *xhat = h->xhat[i], *invstd = h->invstd[i], *gamma = h->gamma[i];
		/* BN backward, per feature:
		 *   dgamma += sum dy*xhat, dbeta += sum dy
		 *   dz = invstd/B * (B*dxhat - sum dxhat - xhat * sum(dxhat*xhat)), dxhat = dy*gamma
		 * Row-wise loops (see bn_train); each sum in row order, in double. */
		double *sdy = h->acc, *sdyx = h->acc + C;
		memset(h->acc, 0, 2 * (size_t)C * sizeof *h->acc);
		for (uint32_t b = 0; b < B; b++) {
			const float *dr = dy + (size_t)b * C, *xr = xhat + (size_t)b * C;
#pragma omp simd
			for (uint32_t c = 0; c < C; c++) {
				sdy[c] += dr[c];
				sdyx[c] += (double)dr[c] * xr[c];
			}
		}
		for (uint32_t c = 0; c < C; c++) {
			h->dgamma[i][c] += (float)sdyx[c];
			h->dbeta[i][c] += (float)sdy[c];
		}
		float *dz = dy; /* in place: each dz[k] needs only dy[k] and the sums */
		for (uint32_t b = 0; b < B; b++) {
			float *dr = dz + (size_t)b * C;
			const float *xr = xhat + (size_t)b * C;
#pragma omp simd
			for (uint32_t c = 0; c < C; c++) {
				double scale = invstd[c] * (double)gamma[c] / B;
				dr[c] = (float)(scale * (B * (double)dr[c] - sdy[c] - xr[c] * sdyx[c]));
			}
		}
		const float *x = i == 0 ? h->input : h->out[i - 1];
		/* dW (C,IN) += dz^T (C,B) . x (B,IN) */
		int err = fci_mm_run(h->mm, h->dW[i], dz, x, C, IN, B, 1, 0, 1);
		if (err)
			return err;
		if (i == 0 && !din)
			break;
		/* dx (B,IN) = dz (B,C) . W (C,IN) */
		float *target = i == 0 ? din : dx;
		if ((err = fci_mm_run(h->mm, target, dz, h->W[i], B, IN, C, 0, 0, 0)) != 0)
			return err;
		if (i == 0)
			break;
		/* Through the previous layer's ReLU: its output is > 0 where it passed. */
		const float *a = h->out[i - 1];
		for (size_t k = 0; k < (size_t)B * IN; k++)
			dx[k] = a[k] > 0 ? dx[k] : 0;
		float *t = dy;
		dy = dx;
		dx = t;
	}
	return 0;
}

int fc_head_embed(fc_head *h, float *out, const float *in, size_t n, int normalize)
{
	const size_t D = h->dims[h->L], IN = h->dims[0];
	for (size_t r = 0; r < n; r += h->max_batch) {
		uint32_t B = (uint32_t)(n - r < h->max_batch ? n - r : h->max_batch);
		int err = fc_head_forward(h, out + r * D, in + r * IN, B, 0);
		if (err)
			return err;
	}
	if (normalize)
		fci_l2_normalize_rows(out, out, n, D);
	return 0;
}
