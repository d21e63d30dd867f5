/*
 * sweep.h - the configurations of a hyperparameter sweep: the product of
 * grid axes (lists of values) and of random draws over ranges (uniform or
 * log-uniform, integers rounded), deterministic for a seed.
 *
 * What a key means is the caller's business (the CLI maps keys to train's
 * options); training many heads at once is fc_trainer_epoch_group's.
 */
#ifndef FEATCACHE_SWEEP_H
#define FEATCACHE_SWEEP_H

#include "featcache.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One axis of a sweep: a grid axis has n_values > 0 values (opaque to the
 * sweep); a range axis has n_values 0 and draws from [lo, hi], log-uniform
 * when `log` (lo > 0), rounded to the nearest integer when `integer`. */
typedef struct fc_sweep_axis {
	size_t n_values;
	double lo, hi;
	int log, integer;
} fc_sweep_axis;

/* One axis of one configuration: the grid value's index, or the draw. */
typedef struct fc_sweep_cell {
	size_t index;
	double value;
} fc_sweep_cell;


/* fc_sweep_expand - every configuration: n_random draws of the range axes
 * (outer loop; one draw when there are no range axes) times the product of
 * the grid axes, the first grid axis varying slowest. *cells receives
 * (*count) x n_axes cells, row-major (malloc'd, the caller frees). Draws are
 * rounded to 4 significant digits (integers: to the nearest integer), always
 * within [lo, hi], and depend only on seed, the axes and the draw number.
 * FC_ERR_INVALID (with the reason in err[errcap]; err may be NULL) for a
 * range with lo >= hi, a non-finite bound, log with lo <= 0, an integer
 * range holding no integer, range axes without n_random or n_random without
 * range axes; FC_ERR_OVERFLOW when the count overflows. */
int fc_sweep_expand(fc_sweep_cell **cells, size_t *count, const fc_sweep_axis *axes, size_t n_axes,
		    size_t n_random, uint64_t seed, char *err, size_t errcap);

#ifdef __cplusplus
}
#endif
#endif /* FEATCACHE_SWEEP_H */
