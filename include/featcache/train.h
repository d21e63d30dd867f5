/*
 * train.h - the projection head and everything that trains and evaluates it
 * over cached features: the head (Linear -> BatchNorm1d -> ReLU ... ), the
 * metric-learning losses and miners, the optimizers and learning-rate
 * schedules, the retrieval metrics, and safetensors/npy I/O.
 *
 * Conventions (llm.c style): row-major float matrices, batch first; a
 * backward accumulates into gradients and zeroing them is explicit; every
 * function returns 0 or a negative FC_ERR_*.
 */
#ifndef FEATCACHE_TRAIN_H
#define FEATCACHE_TRAIN_H

#include "featcache.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- head */

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

/* -------------------------------------------------------------- losses */

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

/* ---------------------------------------------------------- optimizers */

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

/* ------------------------------------------------------------- sampler */

/* Batches for one epoch, a pure function of (seed, epoch): resuming needs
 * only the epoch number.
 * Class-balanced (per_class = K > 0): every class's items are shuffled and
 * cut into groups of K (a class with fewer than K items gives one group of
 * all of them; a last partial group is topped up with other items of its
 * class); groups are shuffled and batches take batch/K groups of distinct
 * classes. So each item appears at least once per epoch, unless its group
 * is among the few left over when no batch of 2+ classes can be formed.
 * Uniform (per_class = 0): a shuffled permutation cut into batches.
 * Batches of fewer than 2 rows are dropped (BatchNorm needs 2). */
typedef struct fc_batches {
	uint32_t *rows;   /* row indices, batch after batch */
	size_t *ends;     /* batch i is rows[ends[i-1] .. ends[i]) (ends[-1] = 0) */
	size_t n_batches, n_rows;
} fc_batches;

int fc_sample_epoch(fc_batches *out, const uint32_t *classes, size_t n, uint32_t n_classes,
		    uint32_t batch, uint32_t per_class, uint64_t seed, uint64_t epoch);
void fc_batches_free(fc_batches *b); /* accepts NULL */

/* ------------------------------------------------------------- metrics */

/* Retrieval metrics with Finetuner's (docarray's) definitions, averaged over
 * queries. A query's relevant items are the index items with its label,
 * itself excluded. */
typedef struct fc_metrics {
	double precision;   /* precision@k */
	double recall;      /* recall@k */
	double f1;          /* f1@k */
	double hit;         /* hit@k */
	double ap;          /* average precision within the top k (mAP@k) */
	double rr;          /* reciprocal rank (MRR) */
	double r_precision;
	double dcg;         /* dcg@k */
	double ndcg;        /* ndcg@k */
	size_t queries;     /* queries evaluated */
	size_t k;
} fc_metrics;

/* fc_eval_knn - cosine kNN of every query against the index (both are
 * L2-normalised internally; zero vectors have similarity 0 to everything),
 * top k per query kept in a heap while the similarities are computed in
 * blocks, so memory is O((nq + ni) * dim + nq * k), never nq x ni.
 * When exclude_self is set, queries and index are the same set (same rows
 * in the same order) and row i never retrieves itself. Ties in similarity
 * go to the lower index row. Parallel with OpenMP over queries.
 * Queries with no relevant item in the index count with recall 0 (docarray
 * would divide by zero); fc_metrics.queries still counts them. Similarities
 * are exact for equal (or power-of-two-scaled) vectors, so ties are ties.
 * Returns FC_ERR_INVALID for bad arguments, NaN/Inf in the input, or
 * exclude_self with nq != ni; FC_ERR_OVERFLOW when sizes overflow;
 * FC_ERR_UNSUPPORTED for an index over 2^32 rows. *out is written only on
 * success; empty sets give all-zero metrics. */
int fc_eval_knn(fc_metrics *out, const float *queries, const uint32_t *qlabels, size_t nq,
		const float *index, const uint32_t *ilabels, size_t ni, size_t dim, size_t k,
		int exclude_self);

/* fc_metric_names / fc_metric_get - the metric names as Finetuner prints
 * them ("precision_at_k", "recall_at_k", "f1_score_at_k", "hit_at_k",
 * "average_precision", "reciprocal_rank", "r_precision", "dcg_at_k",
 * "ndcg_at_k"), and by-name access (short aliases "map", "mrr", "ndcg",
 * "precision", "recall", "f1", "hit" are accepted). */
extern const char *const fc_metric_names[9];
int fc_metric_get(const fc_metrics *m, const char *name, double *value);

/* ------------------------------------------------------------- trainer */

/* One training run over features in RAM: the head, its loss (with the
 * class centres of ArcFace/CosFace), their optimizers and the schedule.
 * The caller owns the loop (epochs, logs, early stopping, checkpoints):
 * fc_trainer_epoch runs one epoch, fc_trainer_eval measures. */
typedef struct fc_train_config {
	fc_head_config head;      /* in_dim must match the data */
	fc_loss_config loss;
	fc_optim_config optim;
	fc_sched_config sched;    /* total_steps 0: epochs x batches per epoch */
	float lr;
	uint32_t epochs;
	uint32_t batch;           /* rows per batch */
	uint32_t per_class;       /* K of the P x K sampler; 0 = uniform */
	uint64_t seed;
} fc_train_config;

/* The training set: n rows of dim floats with dense class ids < n_classes.
 * The arrays must outlive the trainer. */
typedef struct fc_train_data {
	const float *x;
	const uint32_t *classes;
	size_t n;
	uint32_t n_classes;
} fc_train_data;

typedef struct fc_epoch_stats {
	uint32_t epoch;        /* 1-based, the epoch just run */
	uint64_t steps;        /* optimizer steps so far */
	double loss;           /* mean over the epoch's batches */
	double lr;             /* learning rate of the last step */
	double seconds;
	double samples_per_s;
	uint64_t active;       /* triplets/pairs with non-zero loss, summed */
} fc_epoch_stats;

typedef struct fc_trainer fc_trainer;

/* fc_trainer_new - validate the configuration against the data (batch of
 * at least 2 classes x K for pair losses, labels < n_classes, ...) and
 * build the head, loss and optimizers. On FC_ERR_INVALID, why (if not NULL,
 * FC_TRAIN_ERRLEN bytes) says what is wrong, for a usage message. */
#define FC_TRAIN_ERRLEN 256
int fc_trainer_new(fc_trainer **out, const fc_train_config *cfg, const fc_train_data *data, char *why);
void fc_trainer_free(fc_trainer *t); /* accepts NULL */

/* fc_trainer_epoch - the next epoch. A non-finite loss or gradient stops it
 * with FC_ERR_INVALID and *bad_step (if not NULL) naming the optimizer
 * step; the parameters are then those before that step's update. */
int fc_trainer_epoch(fc_trainer *t, fc_epoch_stats *st, uint64_t *bad_step, const fc_logger *lg);

/* fc_trainer_shares_sampling - non-zero when a and b draw the same batches
 * for their next epoch: the same data arrays, batch size, items per class,
 * seed and epochs done. Their heads, losses and optimizers may differ. */
int fc_trainer_shares_sampling(const fc_trainer *a, const fc_trainer *b);

/* fc_trainer_epoch_group - the next epoch of n trainers that all share
 * sampling with t[0]: each batch is drawn and gathered once and every
 * trainer steps on it. With jobs > 1, up to `jobs` trainers step at once
 * (OpenMP), each single-threaded inside; otherwise one after another, each
 * with every thread. Every trainer ends exactly as fc_trainer_epoch would
 * leave it alone (bit-identical parameters and stats but the timings).
 * Per trainer i: st[i], errs[i] (what fc_trainer_epoch would return) and,
 * for a non-finite loss, bad_step[i] (bad_step may be NULL); a trainer that
 * fails skips the rest of the epoch while the others go on. Returns 0 when
 * the epoch ran (check errs), FC_ERR_INVALID when some trainer does not
 * share sampling with t[0], FC_ERR_NOMEM, or FC_ERR_INTERRUPTED when the
 * progress callback asked to stop (no trainer's epoch then counts). */
int fc_trainer_epoch_group(fc_trainer **t, size_t n, fc_epoch_stats *st, int *errs, uint64_t *bad_step, int jobs,
			   const fc_logger *lg);

/* fc_trainer_head - the head being trained (owned by the trainer). */
fc_head *fc_trainer_head(fc_trainer *t);

/* fc_eval_features - metrics of n query rows against ni index rows after
 * applying `head` (eval mode, L2-normalised) or, with head NULL, of the raw
 * features. exclude_self: queries and index are the same rows. */
int fc_eval_features(fc_metrics *m, fc_head *head, const float *q, const uint32_t *ql, size_t nq,
		     const float *ix, const uint32_t *il, size_t ni, size_t dim, size_t k, int exclude_self);

/* Checkpoints: everything a killed run needs to continue exactly, in one
 * safetensors file written atomically: the head (state dict), the optimizer
 * moments and step, the loss parameters and their optimizer, the epoch, and
 * `extra` (caller's JSON text, e.g. history and best metric; may be NULL).
 * The config must be the same when loading (checked via its fingerprint). */
int fc_trainer_save(fc_trainer *t, const char *path, const char *extra, char *why);
int fc_trainer_load(fc_trainer *t, const char *path, char **extra, char *why);
uint32_t fc_trainer_epochs_done(const fc_trainer *t);

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
#endif /* FEATCACHE_TRAIN_H */
