/*
 * sweep.c - expanding a sweep's grid and random draws into configurations
 * (sweep.h). Only the arithmetic of the search space lives here: the CLI
 * maps keys to options and fc_trainer_epoch_group trains the heads that
 * share sampling together.
 *
 * Threads (fc_trainer_epoch_group): a group of 2 or more heads steps them
 * in parallel, one thread each, the inner oneDNN and loss regions then
 * running single-threaded (OpenMP does not nest by default); a head alone
 * gets every thread. Measured on the 2-core machine, 16 heads
 * (256 -> 256 -> 256 -> 64..512, triplet, batch 128, 14k rows, 5 epochs):
 * heads in parallel 25.7 s, one after another with 2 threads each 51.1 s
 * (idle machine); 84 s against 1005 s while other jobs loaded it. The
 * inner regions are small (a 128-row batch), so fork/join and barrier
 * costs dominate with 2 threads, the more so on a busy machine; one
 * thread per head has no barrier at all.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "featcache/sweep.h"
#include "util/util.h"

/* A draw from axis a for the uniform u in [0, 1). */
static double draw(const fc_sweep_axis *a, double u)
{
	double v = a->log ? exp(log(a->lo) + u * (log(a->hi) - log(a->lo))) : a->lo + u * (a->hi - a->lo);
	if (a->integer) {
		v = round(v);
		double lo = ceil(a->lo), hi = floor(a->hi);
		return v < lo ? lo : v > hi ? hi : v;
	}
	/* 4 significant digits read better in a leaderboard than 17. */
	char text[32];
	snprintf(text, sizeof text, "%.4g", v);
	double r = strtod(text, NULL);
	return r >= a->lo && r <= a->hi ? r : v < a->lo ? a->lo : v > a->hi ? a->hi : v;
}

int fc_sweep_expand(fc_sweep_cell **cells, size_t *count, const fc_sweep_axis *axes, size_t n_axes, size_t n_random,
		    uint64_t seed, char *err, size_t errcap)
{
	*cells = NULL;
	*count = 0;
	size_t grid = 1, ranges = 0;
	for (size_t i = 0; i < n_axes; i++) {
		const fc_sweep_axis *a = &axes[i];
		if (a->n_values) {
			if (grid > SIZE_MAX / a->n_values)
				return FC_ERR_OVERFLOW;
			grid *= a->n_values;
			continue;
		}
		ranges++;
		if (!isfinite(a->lo) || !isfinite(a->hi))
			return fci_errf(err, errcap, FC_ERR_INVALID, "range bounds must be finite numbers");
		if (!(a->lo < a->hi))
			return fci_errf(err, errcap, FC_ERR_INVALID,
					"range %g:%g is empty: the low bound must be below the high one", a->lo, a->hi);
		if (a->log && !(a->lo > 0))
			return fci_errf(err, errcap, FC_ERR_INVALID, "a log range needs a low bound above 0, not %g",
					a->lo);
		if (a->integer && ceil(a->lo) > floor(a->hi))
			return fci_errf(err, errcap, FC_ERR_INVALID, "range %g:%g holds no integer", a->lo, a->hi);
	}
	if (ranges && !n_random)
		return fci_errf(err, errcap, FC_ERR_INVALID, "ranges need a number of random draws");
	if (!ranges && n_random)
		return fci_errf(err, errcap, FC_ERR_INVALID, "random draws need at least one range");
	size_t draws = ranges ? n_random : 1;
	if (grid > SIZE_MAX / draws || grid * draws > SIZE_MAX / (n_axes ? n_axes : 1) / sizeof **cells)
		return FC_ERR_OVERFLOW;
	size_t n = grid * draws;
	fc_sweep_cell *c = calloc(n * (n_axes ? n_axes : 1), sizeof *c);
	if (!c)
		return FC_ERR_NOMEM;
	uint64_t rng = seed ^ 0x5eed5eedull;
	for (size_t d = 0; d < draws; d++) {
		fc_sweep_cell *first = c + d * grid * n_axes;
		for (size_t i = 0; i < n_axes; i++)
			if (!axes[i].n_values)
				first[i].value = draw(&axes[i], fci_unit_double(fci_splitmix64(&rng)));
		for (size_t g = 0; g < grid; g++) {
			fc_sweep_cell *row = first + g * n_axes;
			size_t rest = g;
			/* The last grid axis varies fastest. */
			for (size_t i = n_axes; i-- > 0;) {
				if (axes[i].n_values) {
					row[i].index = rest % axes[i].n_values;
					rest /= axes[i].n_values;
				} else {
					row[i].value = first[i].value;
				}
			}
		}
	}
	*cells = c;
	*count = n;
	return 0;
}
