/*
 * loss.h - the metric-learning losses and their miners (triplet, siamese,
 * NT-Xent/SupCon, ArcFace, CosFace).
 *
 * Conventions (llm.c style): row-major float matrices, batch first; a
 * backward accumulates into gradients and zeroing them is explicit; every
 * function returns 0 or a negative FC_ERR_*.
 */
#ifndef FEATCACHE_LOSS_H
#define FEATCACHE_LOSS_H

#include "featcache.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The losses follow pytorch-metric-learning (PML) 1.x, which Finetuner
 * uses; train/loss.c documents each formula. Every loss L2-normalises the
 * embeddings itself (PML's distances do, by default), so the head's raw
 * output goes in and the gradient with respect to it comes out. */
typedef enum fc_loss_kind {
	FC_LOSS_TRIPLET = 0, /* TripletMarginLoss + TripletMarginMiner */
	FC_LOSS_SIAMESE,     /* ContrastiveLoss (pos_margin, neg_margin) */
	FC_LOSS_NTXENT,      /* NTXentLoss (temperature) */
	FC_LOSS_SUPCON,      /* SupConLoss (temperature) */
	FC_LOSS_ARCFACE,     /* ArcFaceLoss (margin in degrees, scale), class-centre matrix */
	FC_LOSS_COSFACE      /* CosFaceLoss (margin, scale), class-centre matrix */
} fc_loss_kind;

typedef enum fc_miner_kind {
	FC_MINER_ALL = 0,  /* every triplet whose margin is violated */
	FC_MINER_HARD,
	FC_MINER_SEMIHARD,
	FC_MINER_EASY
} fc_miner_kind;

typedef enum fc_distance_kind {
	FC_DIST_EUCLIDEAN = 0, /* PML LpDistance(p=2, normalize_embeddings=True) */
	FC_DIST_COSINE         /* PML CosineSimilarity */
} fc_distance_kind;

typedef struct fc_loss_config {
	fc_loss_kind kind;
	fc_miner_kind miner;      /* triplet only */
	fc_distance_kind distance; /* triplet, siamese, ntxent, supcon (PML negates distances
				    * for the latter two); arcface/cosface: cosine only */
	float margin;             /* triplet (and its miner); arcface: degrees; cosface */
	float pos_margin, neg_margin; /* siamese */
	float temperature;        /* ntxent, supcon */
	float scale;              /* arcface, cosface */
	uint32_t n_classes;       /* arcface, cosface: labels are 0..n_classes-1 */
} fc_loss_config;

/* fc_loss_config_default - PML's defaults for a kind (and featcache's
 * triplet margin 0.2), documented in the README. */
void fc_loss_config_default(fc_loss_config *cfg, fc_loss_kind kind);

/* fc_loss_parse / fc_miner_parse / fc_distance_parse - CLI names:
 * "triplet", "siamese", "ntxent", "supcon", "arcface", "cosface" (and the
 * PML/Finetuner class names, e.g. "TripletMarginLoss", case-insensitive);
 * "all", "hard", "semihard", "easy"; "cosine", "euclidean".
 * fc_loss_name etc. give them back. */
int fc_loss_parse(const char *s, fc_loss_kind *out);
int fc_miner_parse(const char *s, fc_miner_kind *out);
int fc_distance_parse(const char *s, fc_distance_kind *out);
const char *fc_loss_name(fc_loss_kind k);
const char *fc_miner_name(fc_miner_kind k);
const char *fc_distance_name(fc_distance_kind k);

typedef struct fc_loss fc_loss;

/* fc_loss_new - a loss for embeddings of `dim` floats and batches of up to
 * max_batch rows. ArcFace/CosFace allocate their class-centre matrix W
 * (dim x n_classes, PML's layout) initialised N(0,1) from `seed` as PML's
 * normal_ init does (the values differ from torch's RNG; fixtures load W). */
int fc_loss_new(fc_loss **out, const fc_loss_config *cfg, uint32_t dim, uint32_t max_batch, uint64_t seed);
/* (FC_ERR_INVALID for a bad config, FC_ERR_OVERFLOW when sizes overflow.) */
void fc_loss_free(fc_loss *l); /* accepts NULL */

/* What a loss evaluation saw: the number of triplets or pairs mined/used
 * and how many contributed a non-zero loss (PML's AvgNonZeroReducer). */
typedef struct fc_loss_info {
	uint64_t used;
	uint64_t nonzero;
} fc_loss_info;

/* fc_loss_forward_backward - loss (B,D) -> *loss, and dL/demb into demb
 * (B,D), overwritten (not accumulated). labels has B entries. For
 * ArcFace/CosFace the class-centre gradient is ACCUMULATED into the loss's
 * own gradient buffer (see fc_loss_params). info may be NULL. A batch with
 * nothing to learn from (no positive pair, ...) gives loss 0 and zero grads.
 * B = 0, a batch above max_batch, labels >= n_classes, and non-finite
 * input, centres, loss or gradient are FC_ERR_INVALID; on error *loss is 0
 * and demb is unspecified. What info counts per loss is in train/loss.c. */
int fc_loss_forward_backward(fc_loss *l, float *loss, float *demb, const float *emb,
			     const uint32_t *labels, uint32_t B, fc_loss_info *info);

/* fc_loss_params - the loss's own parameters (ArcFace/CosFace W, D*C floats
 * in PML's (embedding_size, num_classes) layout) and their gradients; *n is
 * 0 for losses without parameters. */
void fc_loss_params(fc_loss *l, float **params, float **grads, size_t *n);

#ifdef __cplusplus
}
#endif
#endif /* FEATCACHE_LOSS_H */
