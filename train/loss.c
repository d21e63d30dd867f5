/*
 * loss.c - the metric-learning losses featcache trains the projection head
 * with, computed the way pytorch-metric-learning (PML) 1.x computes them
 * (Finetuner hands its losses and miners to PML), with the backward pass
 * written out by hand, through the L2 normalisation, in the llm.c manner.
 * Not here: the head, the optimizers, sampling batches.
 *
 * What PML does, read from KevinMusgrave/pytorch-metric-learning, src/
 * pytorch_metric_learning/: losses/{triplet_margin_loss, contrastive_loss,
 * generic_pair_loss, ntxent_loss, supcon_loss, large_margin_softmax_loss,
 * arcface_loss, cosface_loss}.py, miners/triplet_margin_miner.py,
 * distances/{base_distance, lp_distance, cosine_similarity}.py, reducers/
 * {threshold_reducer, avg_non_zero_reducer, mean_reducer, multiple_reducers}
 * .py, utils/{loss_and_miner_utils, common_functions,
 * module_with_records_and_reducer}.py. In these notes B is the batch, x̂_i
 * = x_i / max(|x_i|, 1e-12) (F.normalize, which both distances apply first:
 * normalize_embeddings=True), and "pairs" are ordered pairs (i, j), i != j,
 * as PML's get_all_pairs_indices lists them: every unordered pair twice.
 *
 * Distances. LpDistance(p=2): D_ij = |x̂_i - x̂_j|, via torch.cdist, whose
 * matrix-product path (B > 25) is sqrt(clamp_min(|x̂_i|² + |x̂_j|² -
 * 2 x̂_i·x̂_j, 1e-30)) and passes no gradient where the clamp holds; for
 * B <= 25 it subtracts and its backward is 0 where D = 0. Here D always
 * comes from the Gram matrix like the first, a squared distance <= 1e-30
 * counts as D = 0 and passes no gradient: identical vectors (the diagonal)
 * never make a NaN. CosineSimilarity: S_ij = x̂_i·x̂_j, "inverted" (larger
 * is closer). PML's distance.margin(x, y) is x - y for a distance and
 * y - x for a similarity, which is how every loss below flips between the
 * two.
 *
 * Triplet: TripletMarginLoss(margin) on the triplets TripletMarginMiner(
 * margin, type_of_triplets) returns, both with the one margin (featcache's
 * default 0.2; PML's loss defaults to 0.05, its miner to 0.2) and the one
 * distance (Finetuner builds its miner with its own options: give both the
 * same distance to reproduce this). The candidates are all (a, p, n) with
 * label a = label p, a != p, label n != label a (get_all_triplets_indices).
 * With t = D_an - D_ap (or S_ap - S_an) the miner keeps: all t <= margin;
 * hard t <= margin and t <= 0; semihard t <= margin and t > 0; easy
 * t > margin. A kept triplet costs relu(D_ap - D_an + margin) (or relu(S_an
 * - S_ap + margin)), and AvgNonZeroReducer averages the costs > 0 (0 when
 * none is). So "easy" always gives loss 0 with the shared margin, as in PML.
 * info: used = triplets kept, nonzero = triplets with cost > 0.
 *
 * Siamese: ContrastiveLoss(pos_margin 0, neg_margin 1) over all pairs.
 * Positive pairs (same label) cost relu(D - pos_margin) or relu(pos_margin
 * - S); negative pairs relu(neg_margin - D) or relu(S - neg_margin). Its two
 * sub-losses get an AvgNonZeroReducer each (MultipleReducers) and are
 * summed: L = mean of non-zero positive costs + mean of non-zero negative
 * costs, a missing part counting 0. (With cosine and the default margins
 * every negative costs 0; PML suggests pos_margin 1, neg_margin 0 there.)
 * info: used = pairs, nonzero = pairs with cost > 0.
 *
 * NTXent: NTXentLoss(temperature 0.07), CosineSimilarity by default (with
 * LpDistance the distances are negated first). z = S/τ. For every positive
 * pair (a, p), over the negatives n of a: mx = max(z_ap, max_n z_an)
 * (detached), l = -log(e^(z_ap-mx) / (e^(z_ap-mx) + Σ_n e^(z_an-mx)) +
 * tiny), tiny = finfo(float32).tiny; MeanReducer: L = mean of l over all
 * positive pairs. Loss 0 unless the batch has a positive and a negative
 * pair. info: used = positive pairs, nonzero = those with l > 0.
 *
 * SupCon: SupConLoss(temperature 0.1), CosineSimilarity by default
 * (negated distances with LpDistance). z = S/τ, for every anchor i over j
 * != i: log_prob_ij = z_ij - logsumexp_{j != i} z_ij (PML subtracts the
 * detached row maximum first, which changes nothing), loss_i = -Σ_{j pos}
 * log_prob_ij / (#pos_i + tiny) (so 0 for an anchor without positives);
 * AvgNonZeroReducer over anchors. Loss 0 unless the batch has a positive
 * and a negative pair. info: used = anchors with a positive, nonzero =
 * anchors with loss_i > 0.
 *
 * ArcFace / CosFace: LargeMarginSoftmaxLoss subclasses with W of shape
 * (embedding_size, num_classes), initialised N(0, 1) (torch.nn.init.normal_)
 * and CosineSimilarity only: cos_ic = x̂_i · W[:,c]/max(|W[:,c]|, 1e-12).
 * The target logit t = cos_{i,y_i} becomes cos(acos(clamp(t, -1, 1)) +
 * radians(margin)) (ArcFace, margin 28.6 degrees) or t - margin (CosFace,
 * 0.35); all logits are multiplied by scale (64) and L = mean over the
 * batch of the cross-entropy (MeanReducer; no miner weights, no weight
 * regularizer: PML's defaults). Nothing else is clamped or divided. PML's
 * gradient of acos is infinite at t = ±1 exactly (a NaN follows); here the
 * target passes no gradient where the clamp holds, t = ±1 included.
 * info: used = B, nonzero = rows with loss > 0.
 *
 * Miners other than "all" exist only for the triplet loss: any other kind
 * with another miner is FC_ERR_INVALID, as is a distance other than cosine
 * for ArcFace/CosFace (PML asserts CosineSimilarity there).
 *
 * Numerics. The products over the batch (Gram matrix, class cosines and
 * their backward) run in float like PyTorch's float32 matmul, in four-lane
 * vectors; the normalisation, the losses and everything between run in
 * double. Results match PML in float32 to about 1e-7 relative. Loops run in
 * parallel (OpenMP) over rows or tiles whose every element is computed by
 * one thread in a fixed order, and partial sums are combined in index
 * order: the same inputs give bit-identical outputs with any number of
 * threads. A non-finite input, class centre, loss or gradient is
 * FC_ERR_INVALID.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "featcache/train.h"
#include "util/util.h"

#define NORM_EPS 1e-12      /* F.normalize's eps */
#define CDIST_MIN 1e-30     /* torch.cdist's clamp of squared distances */
#define PML_TINY FLT_MIN    /* c_f.small_val(float32) = finfo.tiny */
#define MAX_DIM (1u << 24)
#define MAX_BATCH (1u << 16)
#define MAX_CLASSES (1u << 24)
#define GROWS 64            /* rows of the class-centre gradient computed at a time */

struct fc_loss {
	fc_loss_config cfg;
	uint32_t dim, max_batch;
	float *xhat;     /* (max_batch, dim) normalised embeddings */
	float *xt;       /* (dim, max_batch) the same, transposed */
	float *coef;     /* (max_batch, max_batch) the backward's coefficients (pair losses) */
	double *rnorm;   /* (max_batch) 1 / max(|x_i|, eps) */
	double *dxhat;   /* (max_batch, dim) dL/dxhat */
	double *mat;     /* (max_batch, max_batch) S or D; ArcFace/CosFace (max_batch, C) cosines */
	double *dmat;    /* same shape: dL/dmat, then the backward's coefficients */
	double *sq;      /* (max_batch) |x̂_i|², the Gram diagonal */
	double *part;    /* (2 * max_batch) per-row partial loss sums */
	uint64_t *cnt;   /* (3 * max_batch) per-row partial counts */
	/* ArcFace/CosFace: W (dim, C) and its gradient in one block */
	float *params, *W, *dW;
	float *wt;       /* (C, dim) W transposed */
	float *hf;       /* (max_batch, C) dL/dcos · diag(winv) */
	float *dct;      /* (C, max_batch) dL/dcos transposed */
	double *gblk;    /* (GROWS, C) a block of rows of xhatᵀ · dL/dcos */
	double *winv;    /* (C) 1 / max(|W[:,c]|, eps) */
	double *wdot;    /* (C) Σ_i dcos_ic cos_ic, for the column-normalisation backward */
};

/* ------------------------------------------------------------- names */

static const char *const loss_names[] = { "triplet", "siamese", "ntxent", "supcon", "arcface", "cosface" };
/* Finetuner's (PML's) class names, accepted too */
static const struct {
	const char *name;
	fc_loss_kind kind;
} loss_aliases[] = {
	{ "TripletMarginLoss", FC_LOSS_TRIPLET }, { "SiameseLoss", FC_LOSS_SIAMESE },
	{ "ContrastiveLoss", FC_LOSS_SIAMESE },   { "NTXentLoss", FC_LOSS_NTXENT },
	{ "SupConLoss", FC_LOSS_SUPCON },         { "ArcFaceLoss", FC_LOSS_ARCFACE },
	{ "CosFaceLoss", FC_LOSS_COSFACE },
};
static const char *const miner_names[] = { "all", "hard", "semihard", "easy" };
static const char *const distance_names[] = { "euclidean", "cosine" };

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static int lookup(const char *s, const char *const *names, size_t n, int *out)
{
	if (!s)
		return FC_ERR_INVALID;
	for (size_t i = 0; i < n; i++)
		if (strcasecmp(s, names[i]) == 0) {
			*out = (int)i;
			return 0;
		}
	return FC_ERR_INVALID;
}

int fc_loss_parse(const char *s, fc_loss_kind *out)
{
	int k;
	if (!out || !s)
		return FC_ERR_INVALID;
	if (lookup(s, loss_names, NELEM(loss_names), &k) == 0) {
		*out = (fc_loss_kind)k;
		return 0;
	}
	for (size_t i = 0; i < NELEM(loss_aliases); i++)
		if (strcasecmp(s, loss_aliases[i].name) == 0) {
			*out = loss_aliases[i].kind;
			return 0;
		}
	return FC_ERR_INVALID;
}

int fc_miner_parse(const char *s, fc_miner_kind *out)
{
	int k;
	if (!out || lookup(s, miner_names, NELEM(miner_names), &k))
		return FC_ERR_INVALID;
	*out = (fc_miner_kind)k;
	return 0;
}

int fc_distance_parse(const char *s, fc_distance_kind *out)
{
	int k;
	if (!out || lookup(s, distance_names, NELEM(distance_names), &k))
		return FC_ERR_INVALID;
	*out = (fc_distance_kind)k;
	return 0;
}

const char *fc_loss_name(fc_loss_kind k)
{
	return (unsigned)k < NELEM(loss_names) ? loss_names[k] : "unknown";
}

const char *fc_miner_name(fc_miner_kind k)
{
	return (unsigned)k < NELEM(miner_names) ? miner_names[k] : "unknown";
}

const char *fc_distance_name(fc_distance_kind k)
{
	return (unsigned)k < NELEM(distance_names) ? distance_names[k] : "unknown";
}

void fc_loss_config_default(fc_loss_config *cfg, fc_loss_kind kind)
{
	if (!cfg)
		return;
	memset(cfg, 0, sizeof *cfg);
	cfg->kind = kind;
	cfg->miner = FC_MINER_ALL;
	cfg->distance = FC_DIST_COSINE;
	switch (kind) {
	case FC_LOSS_TRIPLET:
		cfg->distance = FC_DIST_EUCLIDEAN; /* PML's default LpDistance */
		cfg->margin = 0.2f;
		break;
	case FC_LOSS_SIAMESE:
		cfg->distance = FC_DIST_EUCLIDEAN;
		cfg->pos_margin = 0.0f;
		cfg->neg_margin = 1.0f;
		break;
	case FC_LOSS_NTXENT:
		cfg->temperature = 0.07f;
		break;
	case FC_LOSS_SUPCON:
		cfg->temperature = 0.1f;
		break;
	case FC_LOSS_ARCFACE:
		cfg->margin = 28.6f;
		cfg->scale = 64.0f;
		break;
	case FC_LOSS_COSFACE:
		cfg->margin = 0.35f;
		cfg->scale = 64.0f;
		break;
	}
}

static int config_check(const fc_loss_config *c)
{
	if ((unsigned)c->kind > FC_LOSS_COSFACE || (unsigned)c->miner > FC_MINER_EASY ||
	    (unsigned)c->distance > FC_DIST_COSINE)
		return FC_ERR_INVALID;
	if (c->miner != FC_MINER_ALL && c->kind != FC_LOSS_TRIPLET)
		return FC_ERR_INVALID;
	switch (c->kind) {
	case FC_LOSS_TRIPLET:
		return isfinite(c->margin) ? 0 : FC_ERR_INVALID;
	case FC_LOSS_SIAMESE:
		return isfinite(c->pos_margin) && isfinite(c->neg_margin) ? 0 : FC_ERR_INVALID;
	case FC_LOSS_NTXENT:
	case FC_LOSS_SUPCON:
		return isfinite(c->temperature) && c->temperature > 0 ? 0 : FC_ERR_INVALID;
	case FC_LOSS_ARCFACE:
	case FC_LOSS_COSFACE:
		if (c->distance != FC_DIST_COSINE || !isfinite(c->margin) || !isfinite(c->scale) ||
		    c->n_classes == 0 || c->n_classes > MAX_CLASSES)
			return FC_ERR_INVALID;
		return 0;
	}
	return FC_ERR_INVALID;
}

static int has_classes(const fc_loss *l)
{
	return l->cfg.kind == FC_LOSS_ARCFACE || l->cfg.kind == FC_LOSS_COSFACE;
}

/* ------------------------------------------------------ life cycle */

/* N(0, 1) by Box-Muller from two uniforms in (0, 1] */
static void init_normal(float *w, size_t n, uint64_t seed)
{
	uint64_t s = seed;
	for (size_t i = 0; i < n; i += 2) {
		double u1 = ((double)(fci_splitmix64(&s) >> 11) + 1.0) * 0x1p-53;
		double u2 = ((double)(fci_splitmix64(&s) >> 11) + 1.0) * 0x1p-53;
		double r = sqrt(-2.0 * log(u1)), a = 2.0 * M_PI * u2;
		w[i] = (float)(r * cos(a));
		if (i + 1 < n)
			w[i + 1] = (float)(r * sin(a));
	}
}

void fc_loss_free(fc_loss *l)
{
	if (!l)
		return;
	free(l->xhat);
	free(l->xt);
	free(l->coef);
	free(l->rnorm);
	free(l->dxhat);
	free(l->mat);
	free(l->dmat);
	free(l->sq);
	free(l->part);
	free(l->cnt);
	free(l->params);
	free(l->wt);
	free(l->hf);
	free(l->dct);
	free(l->gblk);
	free(l->winv);
	free(l->wdot);
	free(l);
}

int fc_loss_new(fc_loss **out, const fc_loss_config *cfg, uint32_t dim, uint32_t max_batch, uint64_t seed)
{
	fc_loss *l = NULL;
	int rc = FC_ERR_INVALID;
	if (!out)
		return FC_ERR_INVALID;
	*out = NULL;
	if (!cfg || dim == 0 || dim > MAX_DIM || max_batch == 0 || max_batch > MAX_BATCH || config_check(cfg))
		goto out;
	/* the largest blocks: (B, max(B, C)) and (D, C) doubles, W and its gradient */
	size_t B = max_batch, D = dim, C = cfg->n_classes;
	rc = FC_ERR_OVERFLOW;
	if (B > SIZE_MAX / sizeof(double) / D || B > SIZE_MAX / sizeof(double) / B ||
	    (C && (C > SIZE_MAX / sizeof(double) / B || C > SIZE_MAX / 2 / sizeof(float) / D)))
		goto out;
	rc = FC_ERR_NOMEM;
	l = calloc(1, sizeof *l);
	if (!l)
		goto out;
	l->cfg = *cfg;
	l->dim = dim;
	l->max_batch = max_batch;
	size_t cols = has_classes(l) ? C : B;
	l->xhat = malloc(B * D * sizeof(float));
	l->dxhat = malloc(B * D * sizeof(double));
	l->rnorm = malloc(B * sizeof(double));
	l->sq = malloc(B * sizeof(double));
	l->mat = malloc(B * cols * sizeof(double));
	l->dmat = malloc(B * cols * sizeof(double));
	l->xt = malloc(D * B * sizeof(float));
	l->part = malloc(2 * B * sizeof(double));
	l->cnt = malloc(3 * B * sizeof(uint64_t));
	if (!l->xhat || !l->xt || !l->dxhat || !l->rnorm || !l->sq || !l->mat || !l->dmat || !l->part || !l->cnt)
		goto out;
	if (!has_classes(l)) {
		l->coef = malloc(B * B * sizeof(float));
		if (!l->coef)
			goto out;
	} else {
		l->params = calloc(2 * D * C, sizeof(float));
		l->wt = malloc(C * D * sizeof(float));
		l->hf = malloc(B * C * sizeof(float));
		l->dct = malloc(C * B * sizeof(float));
		l->gblk = malloc(GROWS * C * sizeof(double));
		l->winv = malloc(C * sizeof(double));
		l->wdot = malloc(C * sizeof(double));
		if (!l->params || !l->wt || !l->hf || !l->dct || !l->gblk || !l->winv || !l->wdot)
			goto out;
		l->W = l->params;
		l->dW = l->params + D * C;
		init_normal(l->W, D * C, seed);
	}
	*out = l;
	l = NULL;
	rc = 0;
out:
	fc_loss_free(l);
	return rc;
}

void fc_loss_params(fc_loss *l, float **params, float **grads, size_t *n)
{
	int on = l && l->W;
	if (params)
		*params = on ? l->W : NULL;
	if (grads)
		*grads = on ? l->dW : NULL;
	if (n)
		*n = on ? (size_t)l->dim * l->cfg.n_classes : 0;
}

/* ---------------------------------------------------------- kernels */

/* The products over the batch (the Gram matrix and the backward) run in
 * float, four lanes at a time (GCC/Clang vector extensions, SSE on any
 * x86-64), like PyTorch's float32 matmul; what follows them is double. Each
 * sum adds its lanes, then its tail, in one fixed order, so a result does
 * not depend on tiling or threads. */
typedef float v4f __attribute__((vector_size(16)));

static inline v4f load4(const float *p)
{
	v4f v;
	memcpy(&v, p, sizeof v);
	return v;
}

static inline float lanes(v4f s, float tail)
{
	return ((s[0] + s[1]) + (s[2] + s[3])) + tail;
}

static float dot4(const float *a, const float *b, size_t K)
{
	v4f s = { 0, 0, 0, 0 };
	size_t k = 0;
	float t = 0;
	for (; k + 4 <= K; k += 4)
		s += load4(a + k) * load4(b + k);
	for (; k < K; k++)
		t += a[k] * b[k];
	return lanes(s, t);
}

/* C (M,N) = A (M,K) · B (N,K)ᵀ, all row-major with the given row strides;
 * tiles of 2x4 outputs share their loads. lower: only j <= i (+ the rest
 * of a tile). Each output is dot4(A_i, B_j, K) exactly. */
static void gemm_nt(double *C, size_t ldc, const float *A, size_t lda, const float *Bm, size_t ldb, size_t M,
		    size_t N, size_t K, int lower)
{
#pragma omp parallel for schedule(dynamic, 1)
	for (size_t i0 = 0; i0 < M; i0 += 2) {
		size_t nrows = M - i0 < 2 ? M - i0 : 2, jend = lower ? (i0 + 2 < N ? i0 + 2 : N) : N, j0 = 0;
		const float *a0 = A + i0 * lda, *a1 = a0 + lda;
		for (; nrows == 2 && j0 + 4 <= jend; j0 += 4) {
			const float *b0 = Bm + j0 * ldb, *b1 = b0 + ldb, *b2 = b1 + ldb, *b3 = b2 + ldb;
			v4f c00 = { 0, 0, 0, 0 }, c01 = c00, c02 = c00, c03 = c00;
			v4f c10 = c00, c11 = c00, c12 = c00, c13 = c00;
			float t[8] = { 0 };
			size_t k = 0;
			for (; k + 4 <= K; k += 4) {
				v4f x0 = load4(a0 + k), x1 = load4(a1 + k);
				v4f y0 = load4(b0 + k), y1 = load4(b1 + k), y2 = load4(b2 + k), y3 = load4(b3 + k);
				c00 += x0 * y0, c01 += x0 * y1, c02 += x0 * y2, c03 += x0 * y3;
				c10 += x1 * y0, c11 += x1 * y1, c12 += x1 * y2, c13 += x1 * y3;
			}
			for (; k < K; k++) {
				t[0] += a0[k] * b0[k], t[1] += a0[k] * b1[k], t[2] += a0[k] * b2[k], t[3] += a0[k] * b3[k];
				t[4] += a1[k] * b0[k], t[5] += a1[k] * b1[k], t[6] += a1[k] * b2[k], t[7] += a1[k] * b3[k];
			}
			double *c = C + i0 * ldc + j0;
			c[0] = lanes(c00, t[0]), c[1] = lanes(c01, t[1]), c[2] = lanes(c02, t[2]), c[3] = lanes(c03, t[3]);
			c += ldc;
			c[0] = lanes(c10, t[4]), c[1] = lanes(c11, t[5]), c[2] = lanes(c12, t[6]), c[3] = lanes(c13, t[7]);
		}
		for (size_t r = 0; r < nrows; r++)
			for (size_t j = j0; j < jend; j++)
				C[(i0 + r) * ldc + j] = dot4(A + (i0 + r) * lda, Bm + j * ldb, K);
	}
}

/* xhat (B,D) = inp (B,D) / max(|inp_i|, eps), rnorm (B) = 1 / max(|inp_i|, eps) */
static void normalize_forward(float *xhat, double *rnorm, const float *inp, size_t B, size_t D)
{
#pragma omp parallel for schedule(static)
	for (size_t i = 0; i < B; i++) {
		const float *x = inp + i * D;
		double n2 = 0;
		for (size_t k = 0; k < D; k++)
			n2 += (double)x[k] * x[k];
		double r = 1.0 / fmax(sqrt(n2), NORM_EPS);
		for (size_t k = 0; k < D; k++)
			xhat[i * D + k] = (float)(x[k] * r);
		rnorm[i] = r;
	}
}

/* dinp (B,D) = dL/dinp from dxhat (B,D): (dx̂ - x̂ (x̂·dx̂)) / |x| when |x| >
 * eps, else dx̂ / eps (the clamp holds and x̂ = x / eps is linear) */
static void normalize_backward(float *dinp, const double *dxhat, const float *xhat, const double *rnorm,
			       size_t B, size_t D)
{
#pragma omp parallel for schedule(static)
	for (size_t i = 0; i < B; i++) {
		const float *x = xhat + i * D;
		const double *g = dxhat + i * D;
		double r = rnorm[i], radial = 0;
		if (r < 1.0 / NORM_EPS)
			for (size_t k = 0; k < D; k++)
				radial += x[k] * g[k];
		for (size_t k = 0; k < D; k++)
			dinp[i * D + k] = (float)(r * (g[k] - x[k] * radial));
	}
}

/* dst (cols,rows) = src (rows,cols)ᵀ, in blocks of 16x16 */
static void transpose(float *dst, const float *src, size_t rows, size_t cols)
{
#pragma omp parallel for schedule(static)
	for (size_t c0 = 0; c0 < cols; c0 += 16)
		for (size_t r0 = 0; r0 < rows; r0 += 16)
			for (size_t r = r0; r < rows && r < r0 + 16; r++)
				for (size_t c = c0; c < cols && c < c0 + 16; c++)
					dst[c * rows + r] = src[r * cols + c];
}

/* mat (B,B) = xhat (B,D) · xhatᵀ; sq (B) = its diagonal */
static void gram(double *mat, double *sq, const float *xhat, size_t B, size_t D)
{
	gemm_nt(mat, B, xhat, D, xhat, D, B, B, D, 1);
	for (size_t i = 0; i < B; i++) {
		sq[i] = mat[i * B + i];
		for (size_t j = 0; j < i; j++)
			mat[j * B + i] = mat[i * B + j];
	}
}

/* mat (B,B): similarities -> euclidean distances sqrt(|x̂_i|² + |x̂_j|² - 2 S_ij),
 * 0 where the square is <= CDIST_MIN */
static void gram_to_dist(double *mat, const double *sq, size_t B)
{
#pragma omp parallel for schedule(static)
	for (size_t i = 0; i < B; i++)
		for (size_t j = 0; j < B; j++) {
			double d2 = sq[i] + sq[j] - 2.0 * mat[i * B + j];
			mat[i * B + j] = d2 > CDIST_MIN ? sqrt(d2) : 0.0;
		}
}

/* Turns dmat (B,B) = dL/dmat into coefficients K with dxhat_i = Σ_j K_ij x̂_j.
 * Similarity: S_ij = x̂_i·x̂_j, so K = dS + dSᵀ. Distance: dD_ij/dx̂_i =
 * (x̂_i - x̂_j) / D_ij, so with g = dD / D (0 where D = 0), K = -(g + gᵀ)
 * off the diagonal and K_ii = Σ_j (g_ij + g_ji). */
static void pair_coefficients(double *dmat, const double *mat, size_t B, int is_dist)
{
	if (is_dist) {
#pragma omp parallel for schedule(static)
		for (size_t i = 0; i < B; i++)
			for (size_t j = 0; j < B; j++) {
				double d = mat[i * B + j];
				dmat[i * B + j] = d > 0 ? dmat[i * B + j] / d : 0.0;
			}
	}
	for (size_t i = 0; i < B; i++) {
		dmat[i * B + i] = is_dist ? 0.0 : 2.0 * dmat[i * B + i];
		for (size_t j = 0; j < i; j++) {
			double s = dmat[i * B + j] + dmat[j * B + i];
			if (is_dist)
				s = -s;
			dmat[i * B + j] = s;
			dmat[j * B + i] = s;
		}
	}
	if (is_dist)
		for (size_t i = 0; i < B; i++) {
			double s = 0;
			for (size_t j = 0; j < B; j++)
				s -= dmat[i * B + j];
			dmat[i * B + i] = s;
		}
}

/* dxhat (B,D) = K (B,B) · xhat (B,D), as K · (xhatᵀ)ᵀ in float */
static void pair_backward(fc_loss *l, size_t B, size_t D)
{
	float *K = l->coef;
	transpose(l->xt, l->xhat, B, D);
	for (size_t i = 0; i < B * B; i++)
		K[i] = (float)l->dmat[i];
	gemm_nt(l->dxhat, D, K, B, l->xt, B, B, D, B, 0);
}

/* -------------------------------------------------- pair-based losses */

/* Every loss below reads mat (B,B): S for cosine, D for euclidean, and
 * writes dmat = dL/dmat. Per-row partial sums land in part/cnt and are
 * added in row order afterwards. */

static int triplet_keeps(fc_miner_kind miner, double t, double margin)
{
	switch (miner) {
	case FC_MINER_EASY:
		return t > margin;
	case FC_MINER_HARD:
		return t <= margin && t <= 0;
	case FC_MINER_SEMIHARD:
		return t <= margin && t > 0;
	case FC_MINER_ALL:
		break;
	}
	return t <= margin;
}

static double triplet_loss(fc_loss *l, const uint32_t *y, size_t B, fc_loss_info *info)
{
	const double *M = l->mat;
	double *dM = l->dmat;
	const int inv = l->cfg.distance == FC_DIST_COSINE;
	const double margin = l->cfg.margin;
	const fc_miner_kind miner = l->cfg.miner;
	uint64_t *used = l->cnt, *nz = l->cnt + B;
#pragma omp parallel for schedule(dynamic, 1)
	for (size_t a = 0; a < B; a++) {
		const double *m = M + a * B;
		double *g = dM + a * B, sum = 0;
		uint64_t u = 0, z = 0;
		memset(g, 0, B * sizeof(double));
		for (size_t p = 0; p < B; p++) {
			if (p == a || y[p] != y[a])
				continue;
			double ap = m[p];
			for (size_t n = 0; n < B; n++) {
				if (y[n] == y[a])
					continue;
				double an = m[n];
				/* t: how much farther the negative is; v: margin(ap, an) + margin */
				double t = inv ? ap - an : an - ap;
				if (!triplet_keeps(miner, t, margin))
					continue;
				u++;
				double v = (inv ? an - ap : ap - an) + margin;
				if (v > 0) {
					sum += v;
					z++;
					g[p] += inv ? -1.0 : 1.0;
					g[n] += inv ? 1.0 : -1.0;
				}
			}
		}
		l->part[a] = sum;
		used[a] = u;
		nz[a] = z;
	}
	double sum = 0;
	uint64_t u = 0, z = 0;
	for (size_t a = 0; a < B; a++) {
		sum += l->part[a];
		u += used[a];
		z += nz[a];
	}
	info->used = u;
	info->nonzero = z;
	double w = z ? 1.0 / (double)z : 0.0;
	for (size_t i = 0; i < B * B; i++)
		dM[i] *= w;
	return sum * w;
}

static double siamese_loss(fc_loss *l, const uint32_t *y, size_t B, fc_loss_info *info)
{
	const double *M = l->mat;
	double *dM = l->dmat;
	const int inv = l->cfg.distance == FC_DIST_COSINE;
	const double pm = l->cfg.pos_margin, nm = l->cfg.neg_margin;
	uint64_t *cnt = l->cnt;
#pragma omp parallel for schedule(static)
	for (size_t i = 0; i < B; i++) {
		const double *m = M + i * B;
		double *g = dM + i * B, ps = 0, ns = 0;
		uint64_t pz = 0, nz = 0;
		for (size_t j = 0; j < B; j++) {
			g[j] = 0;
			if (j == i)
				continue;
			if (y[j] == y[i]) {
				double c = inv ? pm - m[j] : m[j] - pm; /* margin(pair, pos_margin) */
				if (c > 0) {
					ps += c;
					pz++;
					g[j] = inv ? -1.0 : 1.0;
				}
			} else {
				double c = inv ? m[j] - nm : nm - m[j]; /* margin(neg_margin, pair) */
				if (c > 0) {
					ns += c;
					nz++;
					g[j] = inv ? 1.0 : -1.0;
				}
			}
		}
		l->part[i] = ps;
		l->part[B + i] = ns;
		cnt[i] = B - 1; /* every other row is a pair */
		cnt[B + i] = pz;
		cnt[2 * B + i] = nz;
	}
	double ps = 0, ns = 0;
	uint64_t u = 0, pz = 0, nz = 0;
	for (size_t i = 0; i < B; i++) {
		ps += l->part[i];
		ns += l->part[B + i];
		u += cnt[i];
		pz += cnt[B + i];
		nz += cnt[2 * B + i];
	}
	double wp = pz ? 1.0 / (double)pz : 0.0, wn = nz ? 1.0 / (double)nz : 0.0;
	for (size_t i = 0; i < B; i++)
		for (size_t j = 0; j < B; j++)
			dM[i * B + j] *= y[j] == y[i] ? wp : wn;
	info->used = u;
	info->nonzero = pz + nz;
	return ps * wp + ns * wn;
}

/* Whether the batch has a positive pair and a negative pair: NTXent and
 * SupCon give 0 otherwise. */
static void pair_census(const uint32_t *y, size_t B, uint64_t *npos, int *any_neg)
{
	uint64_t p = 0;
	int n = 0;
	for (size_t i = 0; i < B; i++)
		for (size_t j = 0; j < B; j++) {
			if (j == i)
				continue;
			if (y[j] == y[i])
				p++;
			else
				n = 1;
		}
	*npos = p;
	*any_neg = n;
}

/* After a pass over B anchors in parallel: the sum of their losses (in
 * anchor order, so the result does not depend on the threads) and, in *z,
 * how many were not zero (nz[a] each). */
static double sum_parts(const fc_loss *l, const uint64_t *nz, size_t B, uint64_t *z)
{
	double sum = 0;
	*z = 0;
	for (size_t a = 0; a < B; a++) {
		sum += l->part[a];
		*z += nz[a];
	}
	return sum;
}

/* What NTXent and SupCon share before their passes: the logit scale *rt
 * (z = M / τ for similarities, -M / τ for distances), a cleared gradient
 * and the batch's positive pairs. Returns 0 when the batch has no positive
 * pair or no negative one: the loss is then 0. */
static int contrastive_begin(fc_loss *l, const uint32_t *y, size_t B, double *rt, uint64_t *npos)
{
	const double sgn = l->cfg.distance == FC_DIST_COSINE ? 1.0 : -1.0;
	int any_neg;
	*rt = sgn / (double)l->cfg.temperature;
	pair_census(y, B, npos, &any_neg);
	memset(l->dmat, 0, B * B * sizeof(double));
	return *npos != 0 && any_neg;
}

static double ntxent_loss(fc_loss *l, const uint32_t *y, size_t B, fc_loss_info *info)
{
	const double *M = l->mat;
	double *dM = l->dmat, rt;
	uint64_t npos;
	if (!contrastive_begin(l, y, B, &rt, &npos))
		return 0.0;
	const double w = 1.0 / (double)npos;
	uint64_t *nzc = l->cnt;
#pragma omp parallel for schedule(static)
	for (size_t a = 0; a < B; a++) {
		const double *m = M + a * B;
		double *g = dM + a * B, sum = 0;
		uint64_t z = 0;
		/* the negatives are the same for every positive of a: their sum is
		 * kept relative to their own maximum and rescaled per pair */
		double mneg = -INFINITY, E = 0;
		for (size_t n = 0; n < B; n++)
			if (y[n] != y[a])
				mneg = fmax(mneg, m[n] * rt);
		for (size_t n = 0; n < B; n++)
			if (y[n] != y[a])
				E += exp(m[n] * rt - mneg);
		double kneg = 0; /* Σ_p dl/d(e^(z_an - mneg)) */
		for (size_t p = 0; p < B; p++) {
			if (p == a || y[p] != y[a])
				continue;
			double zp = m[p] * rt, mx = fmax(zp, mneg);
			double num = exp(zp - mx), sneg = E * exp(mneg - mx), den = sneg + num;
			double r = num / den, q = r / (r + PML_TINY);
			double lp = -log(r + PML_TINY);
			sum += lp;
			z += lp > 0;
			/* l = -log(r + tiny): dl/dz_ap = -q (1 - r), dl/dz_an = q e^(z_an-mx) / den */
			g[p] += -w * q * (sneg / den);
			kneg += w * q * exp(mneg - mx) / den;
		}
		for (size_t n = 0; n < B; n++)
			if (y[n] != y[a])
				g[n] += kneg * exp(m[n] * rt - mneg);
		for (size_t j = 0; j < B; j++)
			g[j] *= rt;
		l->part[a] = sum;
		nzc[a] = z;
	}
	info->used = npos;
	return sum_parts(l, nzc, B, &info->nonzero) * w;
}

static double supcon_loss(fc_loss *l, const uint32_t *y, size_t B, fc_loss_info *info)
{
	const double *M = l->mat;
	double *dM = l->dmat, rt;
	uint64_t npos;
	if (!contrastive_begin(l, y, B, &rt, &npos))
		return 0.0;
	uint64_t *has_pos = l->cnt, *nz = l->cnt + B;
	/* pass 1: loss_i per anchor; dmat row i holds the softmax over j != i */
#pragma omp parallel for schedule(static)
	for (size_t i = 0; i < B; i++) {
		const double *m = M + i * B;
		double *g = dM + i * B;
		double mx = -INFINITY, se = 0, spos = 0;
		uint64_t np = 0;
		g[i] = 0;
		for (size_t j = 0; j < B; j++)
			if (j != i)
				mx = fmax(mx, m[j] * rt);
		for (size_t j = 0; j < B; j++) {
			if (j == i)
				continue;
			double e = exp(m[j] * rt - mx);
			g[j] = e;
			se += e;
			if (y[j] == y[i]) {
				spos += m[j] * rt;
				np++;
			}
		}
		double lse = mx + log(se);
		/* -Σ_pos (z_ij - lse) / (#pos + tiny); #pos + tiny = #pos for #pos >= 1 */
		double li = np ? -(spos - (double)np * lse) / ((double)np + PML_TINY) : 0.0;
		for (size_t j = 0; j < B; j++)
			g[j] /= se;
		l->part[i] = li;
		has_pos[i] = np;
		nz[i] = li > 0;
	}
	double sum = 0;
	uint64_t used = 0, z = 0;
	for (size_t i = 0; i < B; i++) {
		if (nz[i])
			sum += l->part[i];
		used += has_pos[i] > 0;
		z += nz[i];
	}
	info->used = used;
	info->nonzero = z;
	if (z == 0) {
		memset(dM, 0, B * B * sizeof(double));
		return 0.0;
	}
	const double w = 1.0 / (double)z;
	/* pass 2: dloss_i/dz_ij = softmax_ij - [j pos] / #pos, for the anchors counted */
#pragma omp parallel for schedule(static)
	for (size_t i = 0; i < B; i++) {
		double *g = dM + i * B;
		if (!nz[i]) {
			memset(g, 0, B * sizeof(double));
			continue;
		}
		double rp = 1.0 / (double)has_pos[i];
		for (size_t j = 0; j < B; j++) {
			if (j == i)
				continue;
			g[j] = w * rt * (g[j] - (y[j] == y[i] ? rp : 0.0));
		}
	}
	return sum * w;
}

/* ------------------------------------------------ ArcFace and CosFace */

/* cos (B,C) = xhat (B,D) · ŵ (D,C), ŵ_c = W[:,c] / max(|W[:,c]|, eps) = W[:,c]
 * winv_c; keeps wt = Wᵀ and winv for the backward */
static void class_cosines(fc_loss *l, size_t B)
{
	const size_t D = l->dim, C = l->cfg.n_classes;
	double *cos = l->mat;
	transpose(l->wt, l->W, D, C);
#pragma omp parallel for schedule(static)
	for (size_t c = 0; c < C; c++) {
		const float *w = l->wt + c * D;
		double n2 = 0;
		for (size_t d = 0; d < D; d++)
			n2 += (double)w[d] * w[d];
		l->winv[c] = 1.0 / fmax(sqrt(n2), NORM_EPS);
	}
	gemm_nt(cos, C, l->xhat, D, l->wt, D, B, C, D, 0);
	for (size_t i = 0; i < B; i++)
		for (size_t c = 0; c < C; c++)
			cos[i * C + c] *= l->winv[c];
}

/* Cross-entropy of the scaled, target-modified logits, row by row; dcos (B,C)
 * = dL/dcos. */
static double margin_softmax_loss(fc_loss *l, const uint32_t *y, size_t B, fc_loss_info *info)
{
	const size_t C = l->cfg.n_classes;
	const double *cosm = l->mat;
	double *dcos = l->dmat;
	const int arc = l->cfg.kind == FC_LOSS_ARCFACE;
	const double s = l->cfg.scale;
	const double m = arc ? (double)l->cfg.margin * (M_PI / 180.0) : (double)l->cfg.margin;
	const double w = 1.0 / (double)B;
	uint64_t *nz = l->cnt;
#pragma omp parallel for schedule(static)
	for (size_t i = 0; i < B; i++) {
		const double *cs = cosm + i * C;
		double *g = dcos + i * C;
		size_t yi = y[i];
		double t = cs[yi], tm, dtm;
		if (arc) {
			double tc = t < -1.0 ? -1.0 : t > 1.0 ? 1.0 : t;
			double th = acos(tc), st = sqrt(1.0 - tc * tc);
			tm = cos(th + m);
			/* d cos(acos t + m)/dt = sin(θ + m) / sin θ; none where the clamp holds */
			dtm = t > -1.0 && t < 1.0 && st > 0 ? sin(th + m) / st : 0.0;
		} else {
			tm = t - m;
			dtm = 1.0;
		}
		double mx = -INFINITY;
		for (size_t c = 0; c < C; c++)
			mx = fmax(mx, s * (c == yi ? tm : cs[c]));
		double se = 0;
		for (size_t c = 0; c < C; c++) {
			double e = exp(s * (c == yi ? tm : cs[c]) - mx);
			g[c] = e;
			se += e;
		}
		double li = (mx - s * tm) + log(se); /* exactly log(se) when the target leads */
		for (size_t c = 0; c < C; c++) {
			double dz = w * (g[c] / se - (c == yi ? 1.0 : 0.0));
			g[c] = s * dz * (c == yi ? dtm : 1.0);
		}
		l->part[i] = li;
		nz[i] = li > 0;
	}
	info->used = B;
	return sum_parts(l, nz, B, &info->nonzero) * w;
}

/* From dcos (B,C): dxhat (B,D) = dcos · diag(winv) · Wᵀ, and dW (D,C) +=
 * the column-normalisation backward of ŵ_c = W[:,c] winv_c:
 *   dW[d,c] += winv_c (Σ_i x̂_id dcos_ic - ŵ_dc Σ_i dcos_ic cos_ic) */
static void margin_softmax_backward(fc_loss *l, size_t B)
{
	const size_t D = l->dim, C = l->cfg.n_classes;
	const float *W = l->W;
	float *dW = l->dW;
	const double *cosm = l->mat, *dcos = l->dmat, *winv = l->winv;
	double *wdot = l->wdot;

#pragma omp parallel for schedule(static)
	for (size_t c = 0; c < C; c++) {
		double r = 0;
		for (size_t i = 0; i < B; i++)
			r += dcos[i * C + c] * cosm[i * C + c];
		/* a column at or under eps is not normalised (x / eps is linear) */
		wdot[c] = winv[c] < 1.0 / NORM_EPS ? r : 0.0;
	}
	for (size_t i = 0; i < B; i++)
		for (size_t c = 0; c < C; c++) {
			l->hf[i * C + c] = (float)(dcos[i * C + c] * winv[c]);
			l->dct[c * B + i] = (float)dcos[i * C + c];
		}
	/* dxhat (B,D) = hf (B,C) · W (D,C)ᵀ */
	gemm_nt(l->dxhat, D, l->hf, C, W, C, B, D, C, 0);
	/* xhatᵀ (D,B) · dcos (B,C), GROWS rows of D at a time */
	transpose(l->xt, l->xhat, B, D);
	for (size_t d0 = 0; d0 < D; d0 += GROWS) {
		size_t rows = D - d0 < GROWS ? D - d0 : GROWS;
		gemm_nt(l->gblk, C, l->xt + d0 * B, B, l->dct, B, rows, C, B, 0);
#pragma omp parallel for schedule(static)
		for (size_t r = 0; r < rows; r++)
			for (size_t c = 0; c < C; c++) {
				size_t k = (d0 + r) * C + c;
				dW[k] += (float)(winv[c] * (l->gblk[r * C + c] - W[k] * winv[c] * wdot[c]));
			}
	}
}

/* ----------------------------------------------------------- driver */

static int all_finite(const float *x, size_t n)
{
	int ok = 1;
#pragma omp parallel for schedule(static) reduction(& : ok)
	for (size_t i = 0; i < n; i++)
		ok &= isfinite(x[i]) != 0;
	return ok;
}

int fc_loss_forward_backward(fc_loss *l, float *loss, float *demb, const float *emb, const uint32_t *labels,
			     uint32_t B, fc_loss_info *info)
{
	fc_loss_info scratch;
	if (!info)
		info = &scratch;
	info->used = 0;
	info->nonzero = 0;
	if (!l || !loss || !demb || !emb || !labels || B == 0 || B > l->max_batch)
		return FC_ERR_INVALID;
	*loss = 0;
	const size_t D = l->dim, nb = B;
	if (!all_finite(emb, nb * D))
		return FC_ERR_INVALID;
	if (has_classes(l)) {
		for (size_t i = 0; i < nb; i++)
			if (labels[i] >= l->cfg.n_classes)
				return FC_ERR_INVALID;
		if (!all_finite(l->W, D * l->cfg.n_classes))
			return FC_ERR_INVALID;
	}

	normalize_forward(l->xhat, l->rnorm, emb, nb, D);
	double value;
	if (has_classes(l)) {
		class_cosines(l, nb);
		value = margin_softmax_loss(l, labels, nb, info);
		if (!isfinite(value))
			return FC_ERR_INVALID;
		margin_softmax_backward(l, nb);
	} else {
		const int is_dist = l->cfg.distance == FC_DIST_EUCLIDEAN;
		gram(l->mat, l->sq, l->xhat, nb, D);
		if (is_dist)
			gram_to_dist(l->mat, l->sq, nb);
		switch (l->cfg.kind) {
		case FC_LOSS_TRIPLET:
			value = triplet_loss(l, labels, nb, info);
			break;
		case FC_LOSS_SIAMESE:
			value = siamese_loss(l, labels, nb, info);
			break;
		case FC_LOSS_NTXENT:
			value = ntxent_loss(l, labels, nb, info);
			break;
		default:
			value = supcon_loss(l, labels, nb, info);
			break;
		}
		if (!isfinite(value))
			return FC_ERR_INVALID;
		pair_coefficients(l->dmat, l->mat, nb, is_dist);
		pair_backward(l, nb, D);
	}
	normalize_backward(demb, l->dxhat, l->xhat, l->rnorm, nb, D);
	if (!all_finite(demb, nb * D))
		return FC_ERR_INVALID;
	*loss = (float)value;
	return 0;
}
