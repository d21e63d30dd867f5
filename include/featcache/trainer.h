/*
 * trainer.h - a training run over features in memory: epochs, several
 * heads stepped together, evaluation, checkpoints, and the per-epoch policy
 * every caller shares (best head, log hook, checkpoint, early stop).
 *
 * Conventions (llm.c style): row-major float matrices, batch first; a
 * backward accumulates into gradients and zeroing them is explicit; every
 * function returns 0 or a negative FC_ERR_*.
 */
#ifndef FEATCACHE_TRAINER_H
#define FEATCACHE_TRAINER_H

#include "head.h"
#include "loss.h"
#include "optim.h"
#include "sampler.h"
#include "metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One training run over features in RAM: the head, its loss (with the
 * class centres of ArcFace/CosFace), their optimizers and the schedule.
 * The caller owns the loop: fc_trainer_epoch runs one epoch, and after it
 * fc_policy_epoch_end (below) evaluates, keeps the best head, writes the
 * checkpoint and decides on early stopping. */
typedef struct fc_train_config {
	fc_head_config head;      /* in_dim must match the data */
	fc_loss_config loss;
	fc_optim_config optim;
	fc_sched_config sched;    /* total_steps 0: epochs x batches per epoch;
				   * step_size 0: a third of the epochs (at least 1) */
	float lr;
	uint32_t epochs;
	uint32_t batch;           /* rows per batch */
	uint32_t per_class;       /* K of the P x K sampler; 0 = uniform */
	uint64_t seed;
} fc_train_config;

/* The training set: n rows of dim floats with dense class ids < n_classes.
 * The rows are x (f32), or, when `rows` is set (x then ignored), rows kept
 * in a compact type or streamed from a store (featcache/rows.h), gathered
 * to f32 a batch at a time; rows->n must be n. The arrays must outlive the
 * trainer. */
typedef struct fc_train_data {
	const float *x;
	const uint32_t *classes;
	size_t n;
	uint32_t n_classes;
	const fc_rows *rows;
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
 * build the head, loss and optimizers. On failure err[errcap] (err may be
 * NULL) says what is wrong; for FC_ERR_INVALID it is a usage message. */
int fc_trainer_new(fc_trainer **out, const fc_train_config *cfg, const fc_train_data *data, char *err,
		   size_t errcap);
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

/* fc_trainer_gather_error - what the last failed gather of rows returned
 * (a streamed matrix's read error; its fetcher keeps the message), 0 if
 * none failed. fc_trainer_epoch returns that code too. */
int fc_trainer_gather_error(const fc_trainer *t);

/* fc_trainer_head - the head being trained (owned by the trainer). */
fc_head *fc_trainer_head(fc_trainer *t);

/* fc_eval_features - metrics of n query rows against ni index rows after
 * applying `head` (eval mode, L2-normalised) or, with head NULL, of the raw
 * features. exclude_self: queries and index are the same rows. */
int fc_eval_features(fc_metrics *m, fc_head *head, const float *q, const uint32_t *ql, size_t nq,
		     const float *ix, const uint32_t *il, size_t ni, size_t dim, size_t k, int exclude_self);

/* fc_eval_rows - fc_eval_features over rows of any type or streamed
 * (featcache/rows.h): q (nq = q->n) against ix; the head (NULL: raw
 * features) is applied a block of rows at a time, so no f32 copy of the
 * input rows is made. Results are those of fc_eval_features on the same
 * rows as f32. */
int fc_eval_rows(fc_metrics *m, fc_head *head, const fc_rows *q, const uint32_t *ql, const fc_rows *ix,
		 const uint32_t *il, size_t k, int exclude_self);

/* Checkpoints: everything a killed run needs to continue exactly, in one
 * safetensors file written atomically: the head (state dict), the optimizer
 * moments and step, the loss parameters and their optimizer, the epoch, and
 * `extra` (caller's JSON text, e.g. history and best metric; may be NULL).
 * The config must be the same when loading (checked via its fingerprint),
 * except the epoch count: a run may be extended (or shortened to no fewer
 * epochs than it has done), and then the schedule is the new count's — the
 * derived total_steps and step_size follow it, and the learning rate from
 * the resumed step on is what a run planned for the new count uses at that
 * step. FC_ERR_INVALID for another config, too few epochs, or a file that
 * is no checkpoint. *extra receives a malloc'd copy of the extra text (NULL
 * when there is none).
 * On failure err[errcap] (err may be NULL) says why. */
int fc_trainer_save(fc_trainer *t, const char *path, const char *extra, char *err, size_t errcap);
int fc_trainer_load(fc_trainer *t, const char *path, char **extra, char *err, size_t errcap);
uint32_t fc_trainer_epochs_done(const fc_trainer *t);

/* ---- the per-epoch policy ---- */

/* An evaluation set: nq query rows searched among ni index rows, dim floats
 * each, metrics at k; with self set, the queries search among themselves
 * (index ignored), each one excluded from its own results. qrows / irows,
 * when set, hold the rows instead of queries / index (any type, or
 * streamed: featcache/rows.h). The arrays must outlive every user. */
typedef struct fc_eval_set {
	const float *queries;
	const uint32_t *query_labels;
	size_t nq;
	const float *index;
	const uint32_t *index_labels;
	size_t ni;
	size_t dim, k;
	int self;
	const fc_rows *qrows, *irows;
} fc_eval_set;

/* fc_eval_set_run - the metrics of e through head (NULL: the raw features),
 * as fc_eval_features computes them. */
int fc_eval_set_run(fc_metrics *m, fc_head *head, const fc_eval_set *e);

typedef struct fc_policy fc_policy;

/* The caller's log of an epoch, called by fc_policy_epoch_end once the
 * epoch is measured and before its head and checkpoint are written (so a
 * log never lags behind the checkpoint it goes with). Returns 0, or a
 * negative FC_ERR_* with err[errcap] saying why, which stops the epoch. */
typedef int (*fc_policy_log_fn)(void *ctx, const fc_policy *p, const fc_epoch_stats *st, char *err,
				size_t errcap);

typedef struct fc_policy_config {
	const fc_eval_set *eval;      /* NULL: no evaluation; the lowest loss is best */
	const char *metric;           /* picks the best epoch: any name fc_metric_resolve
				       * takes (NULL: average_precision) */
	uint32_t patience;            /* stop after this many epochs without a better one
				       * (0: never) */
	const char *head_path;        /* the best epoch's head goes here (NULL: nowhere) */
	const char *head_config;      /* stored as the head's featcache_config (may be NULL) */
	const char *head_extractor;   /* stored as the head's featcache_extractor: the
				       * descriptor of the extractor whose features it
				       * is trained on, for export's defaults (may be NULL) */
	const char *checkpoint_path;  /* a checkpoint after every epoch (NULL: none) */
	fc_policy_log_fn log;         /* may be NULL */
	void *log_ctx;
} fc_policy_config;

/* What one run's policy knows; read its fields, change them only through
 * the functions below. No resources: there is nothing to free. */
struct fc_policy {
	fc_policy_config cfg;
	int metric;               /* cfg.metric's index (fc_metric_names order) */
	fc_metrics before;        /* the raw features' metrics */
	fc_metrics last;          /* the last epoch's (with evaluation) */
	fc_metrics best_metrics;  /* the best epoch's */
	double value;             /* the last epoch's metric (-loss without evaluation) */
	double best;              /* the best epoch's */
	uint32_t best_epoch;      /* 0 before the first epoch */
	uint32_t stale;           /* epochs since the best one */
	int improved;             /* the last epoch is the best so far */
	int stop;                 /* early stopping says stop */
};

/* fc_policy_init - a fresh policy; before (may be NULL: zeros) are the raw
 * features' metrics, kept for the checkpoint. FC_ERR_INVALID for an unknown
 * metric name. cfg's strings must outlive p. */
int fc_policy_init(fc_policy *p, const fc_policy_config *cfg, const fc_metrics *before);

/* fc_policy_resume - load trainer t from the checkpoint at path
 * (fc_trainer_load) and p's history from it (best epoch and metric, epochs
 * since, the before and best metrics). Errors as fc_trainer_load. */
int fc_policy_resume(fc_policy *p, fc_trainer *t, const char *path, char *err, size_t errcap);

/* fc_policy_epoch_end - after t's epoch st: evaluate (with cfg.eval), track
 * the best epoch, call cfg.log, write the head when it improved and the
 * checkpoint when asked, and set p->stop when early stopping says so.
 * Returns 0 or a negative FC_ERR_* with err[errcap] naming what failed
 * ("cannot write head 'h.safetensors': ..."). */
int fc_policy_epoch_end(fc_policy *p, fc_trainer *t, const fc_epoch_stats *st, char *err, size_t errcap);

#ifdef __cplusplus
}
#endif
#endif /* FEATCACHE_TRAINER_H */
