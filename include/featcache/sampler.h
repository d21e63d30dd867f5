/*
 * sampler.h - the order of an epoch: class-balanced or uniform batches,
 * deterministic for a seed.
 *
 * Conventions (llm.c style): row-major float matrices, batch first; a
 * backward accumulates into gradients and zeroing them is explicit; every
 * function returns 0 or a negative FC_ERR_*.
 */
#ifndef FEATCACHE_SAMPLER_H
#define FEATCACHE_SAMPLER_H

#include "featcache.h"

#ifdef __cplusplus
extern "C" {
#endif

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

#ifdef __cplusplus
}
#endif
#endif /* FEATCACHE_SAMPLER_H */
