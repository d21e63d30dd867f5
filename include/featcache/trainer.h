/*
 * trainer.h - a training run over features in memory: epochs, several
 * heads stepped together, evaluation, checkpoints.
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
 * FC_ERRLEN bytes) says what is wrong, for a usage message. */
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

#ifdef __cplusplus
}
#endif
#endif /* FEATCACHE_TRAINER_H */
