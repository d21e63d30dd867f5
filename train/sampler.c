/*
 * sampler.c - which rows make each batch of an epoch: class-balanced
 * (P classes x K items, for pair and triplet losses) or uniform (for
 * ArcFace/CosFace). Deterministic: a pure function of (seed, epoch), so a
 * resumed run draws the same batches as an uninterrupted one.
 */
#include <stdlib.h>
#include <string.h>

#include "featcache/train.h"
#include "util/util.h"

/* xoshiro256** seeded through splitmix64. */
typedef struct rng {
	uint64_t s[4];
} rng;

static void rng_seed(rng *r, uint64_t seed, uint64_t stream)
{
	uint64_t x = seed ^ (stream * 0xd1b54a32d192ed03ull);
	for (int i = 0; i < 4; i++)
		r->s[i] = fci_splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static uint64_t next(rng *r)
{
	uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return out;
}

/* Uniform in [0, n) without modulo bias (rejection on the short range). */
static uint64_t below(rng *r, uint64_t n)
{
	uint64_t limit = UINT64_MAX - UINT64_MAX % n;
	for (;;) {
		uint64_t x = next(r);
		if (x < limit)
			return x % n;
	}
}

static void shuffle(rng *r, uint32_t *a, size_t n)
{
	for (size_t i = n; i > 1; i--) {
		size_t j = (size_t)below(r, i);
		uint32_t t = a[i - 1];
		a[i - 1] = a[j];
		a[j] = t;
	}
}

void fc_batches_free(fc_batches *b)
{
	if (!b)
		return;
	free(b->rows);
	free(b->ends);
	memset(b, 0, sizeof *b);
}

/* Append a batch; rows already written at b->rows[start..b->n_rows). */
static void close_batch(fc_batches *b, size_t start)
{
	if (b->n_rows - start < 2) {
		b->n_rows = start; /* BatchNorm needs two rows */
		return;
	}
	b->ends[b->n_batches++] = b->n_rows;
}

static int uniform_epoch(fc_batches *b, rng *r, size_t n, uint32_t batch)
{
	b->rows = malloc((n ? n : 1) * sizeof *b->rows);
	b->ends = malloc((n / 2 + 1) * sizeof *b->ends);
	if (!b->rows || !b->ends)
		return FC_ERR_NOMEM;
	for (size_t i = 0; i < n; i++)
		b->rows[i] = (uint32_t)i;
	shuffle(r, b->rows, n);
	for (size_t i = 0; i < n; i += batch) {
		size_t start = i;
		b->n_rows = i + batch < n ? i + batch : n;
		close_batch(b, start);
	}
	return 0;
}

typedef struct group {
	uint32_t cls, first, len; /* rows in the group buffer */
} group;

static int balanced_epoch(fc_batches *b, rng *r, const uint32_t *classes, size_t n, uint32_t n_classes,
			  uint32_t batch, uint32_t K)
{
	int err = FC_ERR_NOMEM;
	size_t *start = calloc((size_t)n_classes + 1, sizeof *start);
	uint32_t *byclass = malloc((n ? n : 1) * sizeof *byclass);
	/* At most one topped-up group per class adds < K rows. */
	size_t cap = n + (size_t)n_classes * K;
	uint32_t *pool = malloc(cap * sizeof *pool);
	group *groups = malloc((n + n_classes + 1) * sizeof *groups);
	uint8_t *used = NULL, *in_batch = NULL;
	size_t *left = NULL;
	size_t ng = 0, np = 0;
	if (!start || !byclass || !pool || !groups)
		goto out;
	/* Counting sort of rows by class, then shuffle within each class. */
	for (size_t i = 0; i < n; i++)
		start[classes[i] + 1]++;
	for (uint32_t c = 0; c < n_classes; c++)
		start[c + 1] += start[c];
	{
		size_t *fill = malloc(((size_t)n_classes + 1) * sizeof *fill);
		if (!fill)
			goto out;
		memcpy(fill, start, ((size_t)n_classes + 1) * sizeof *fill);
		for (size_t i = 0; i < n; i++)
			byclass[fill[classes[i]]++] = (uint32_t)i;
		free(fill);
	}
	for (uint32_t c = 0; c < n_classes; c++) {
		uint32_t *items = byclass + start[c];
		size_t m = start[c + 1] - start[c];
		if (m == 0)
			continue;
		shuffle(r, items, m);
		size_t gsize = m < K ? m : K;
		for (size_t i = 0; i < m; i += gsize) {
			size_t len = i + gsize <= m ? gsize : m - i;
			groups[ng++] = (group){ c, (uint32_t)np, (uint32_t)gsize };
			memcpy(pool + np, items + i, len * sizeof *pool);
			/* Top up a short last group with the class's earlier items. */
			for (size_t j = len; j < gsize; j++)
				pool[np + j] = items[below(r, i)];
			np += gsize;
		}
	}
	/* Shuffle the groups (through an index permutation). */
	uint32_t *perm = malloc((ng ? ng : 1) * sizeof *perm);
	if (!perm)
		goto out;
	for (size_t i = 0; i < ng; i++)
		perm[i] = (uint32_t)i;
	shuffle(r, perm, ng);

	used = calloc(ng ? ng : 1, 1);
	in_batch = calloc(n_classes, 1);
	b->rows = malloc((np ? np : 1) * sizeof *b->rows);
	b->ends = malloc((np / 2 + 1) * sizeof *b->ends);
	if (!used || !in_batch || !b->rows || !b->ends) {
		free(perm);
		goto out;
	}
	/* Groups left per class: each batch starts with a group of the class
	 * that has the most left, so big classes drain steadily instead of
	 * piling up at the end where no batch of distinct classes can take
	 * them; the other slots follow the shuffled order. */
	left = calloc(n_classes, sizeof *left);
	if (!left) {
		free(perm);
		goto out;
	}
	for (size_t i = 0; i < ng; i++)
		left[groups[i].cls]++;
	const size_t P = batch / K ? batch / K : 1;
	size_t first = 0; /* every group before `first` is used */
	for (;;) {
		while (first < ng && used[perm[first]])
			first++;
		if (first == ng)
			break;
		uint32_t big = groups[perm[first]].cls;
		for (uint32_t c = 0; c < n_classes; c++)
			if (left[c] > left[big])
				big = c;
		size_t taken = 0, bstart = b->n_rows;
		uint32_t cls_taken[1024];
		for (int pass = 0; pass < 2; pass++) {
			for (size_t q = first; q < ng && taken < P; q++) {
				const group *g = &groups[perm[q]];
				if (used[perm[q]] || in_batch[g->cls] || (pass == 0 && g->cls != big))
					continue;
				used[perm[q]] = 1;
				in_batch[g->cls] = 1;
				left[g->cls]--;
				if (taken < 1024)
					cls_taken[taken] = g->cls;
				taken++;
				memcpy(b->rows + b->n_rows, pool + g->first, g->len * sizeof *pool);
				b->n_rows += g->len;
				if (pass == 0)
					break;
			}
		}
		for (size_t t = 0; t < taken && t < 1024; t++)
			in_batch[cls_taken[t]] = 0;
		if (taken > 1024)
			memset(in_batch, 0, n_classes);
		if (taken < 2) {
			/* One class left: no negatives to learn from; drop the rest. */
			b->n_rows = bstart;
			break;
		}
		close_batch(b, bstart);
	}
	free(perm);
	err = 0;
out:
	free(start);
	free(byclass);
	free(pool);
	free(groups);
	free(used);
	free(in_batch);
	free(left);
	return err;
}

int fc_sample_epoch(fc_batches *out, const uint32_t *classes, size_t n, uint32_t n_classes,
		    uint32_t batch, uint32_t per_class, uint64_t seed, uint64_t epoch)
{
	memset(out, 0, sizeof *out);
	if (batch < 2 || n > UINT32_MAX || (per_class && (per_class > batch || n_classes == 0)))
		return FC_ERR_INVALID;
	for (size_t i = 0; per_class && i < n; i++)
		if (classes[i] >= n_classes)
			return FC_ERR_INVALID;
	rng r;
	rng_seed(&r, seed, epoch);
	int err = per_class ? balanced_epoch(out, &r, classes, n, n_classes, batch, per_class)
			    : uniform_epoch(out, &r, n, batch);
	if (err)
		fc_batches_free(out);
	return err;
}
