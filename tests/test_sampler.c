/*
 * test_sampler.c - the batch sampler's guarantees (sampler.h): P x K
 * batches of distinct classes, deterministic per seed and epoch, covering
 * every item but a short tail; uniform batches when K is 0.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "featcache/sampler.h"

/* Class sizes 1..12 over 10 classes plus a bigger one of `big` items. */
static size_t make_classes(uint32_t *cls, int big)
{
	size_t n = 0;
	for (uint32_t c = 0; c < 10; c++)
		for (uint32_t i = 0; i <= c + (c == 9 ? 2 : 0); i++)
			cls[n++] = c;
	for (int i = 0; i < big; i++)
		cls[n++] = 10;
	return n;
}

static void test_sampler_balanced(void **state)
{
	(void)state;
	uint32_t cls[200];
	size_t n = make_classes(cls, 24);
	const uint32_t K = 4, batch = 16;
	fc_batches b, b2, b3;
	assert_int_equal(fc_sample_epoch(&b, cls, n, 11, batch, K, 42, 0), 0);
	assert_int_equal(fc_sample_epoch(&b2, cls, n, 11, batch, K, 42, 0), 0);
	assert_int_equal(fc_sample_epoch(&b3, cls, n, 11, batch, K, 42, 1), 0);
	/* Deterministic per (seed, epoch), different across epochs. */
	assert_int_equal(b.n_rows, b2.n_rows);
	assert_memory_equal(b.rows, b2.rows, b.n_rows * sizeof *b.rows);
	assert_true(b.n_rows != b3.n_rows || memcmp(b.rows, b3.rows, b.n_rows * sizeof *b.rows) != 0);
	int *seen = calloc(n, sizeof *seen);
	size_t s = 0;
	for (size_t i = 0; i < b.n_batches; i++) {
		size_t e = b.ends[i];
		assert_true(e - s >= 2 && e - s <= batch);
		/* Each class appears as one group: at most K rows, contiguous. */
		int count[11] = { 0 };
		int classes = 0;
		for (size_t j = s; j < e; j++) {
			uint32_t c = cls[b.rows[j]];
			if (count[c]++ == 0)
				classes++;
			assert_true(count[c] <= (int)K);
			seen[b.rows[j]]++;
		}
		assert_true(classes >= 2);
		s = e;
	}
	/* Every item is covered, except at most the few groups of the tail. */
	size_t missed = 0;
	for (size_t i = 0; i < n; i++)
		missed += seen[i] == 0;
	print_message("# %zu batches, %zu rows, %zu of %zu items not drawn this epoch\n", b.n_batches, b.n_rows,
		      missed, n);
	assert_true(missed <= K);
	free(seen);
	fc_batches_free(&b);
	fc_batches_free(&b2);
	fc_batches_free(&b3);

	/* A class with more groups than all others together: what is left over
	 * is of that class only (no batch of distinct classes can take it). */
	n = make_classes(cls, 100);
	assert_int_equal(fc_sample_epoch(&b, cls, n, 11, batch, K, 42, 0), 0);
	seen = calloc(n, sizeof *seen);
	for (size_t i = 0; i < b.n_rows; i++)
		seen[b.rows[i]]++;
	for (size_t i = 0; i < n; i++)
		if (!seen[i])
			assert_int_equal(cls[i], 10);
	free(seen);
	fc_batches_free(&b);

	/* A single class: nothing to contrast, no batches. */
	uint32_t one[10] = { 0 };
	assert_int_equal(fc_sample_epoch(&b, one, 10, 1, 8, 4, 1, 0), 0);
	assert_int_equal(b.n_batches, 0);
	fc_batches_free(&b);
	assert_int_equal(fc_sample_epoch(&b, one, 10, 1, 8, 9, 1, 0), FC_ERR_INVALID);
	one[3] = 5;
	assert_int_equal(fc_sample_epoch(&b, one, 10, 2, 8, 4, 1, 0), FC_ERR_INVALID);
}

static void test_sampler_uniform(void **state)
{
	(void)state;
	uint32_t cls[101] = { 0 };
	fc_batches b;
	assert_int_equal(fc_sample_epoch(&b, cls, 101, 1, 10, 0, 7, 3), 0);
	/* 10 full batches; the last single row is dropped (BatchNorm needs 2). */
	assert_int_equal(b.n_batches, 10);
	assert_int_equal(b.n_rows, 100);
	int seen[101] = { 0 };
	for (size_t i = 0; i < b.n_rows; i++)
		seen[b.rows[i]]++;
	for (int i = 0; i < 101; i++)
		assert_true(seen[i] <= 1);
	fc_batches_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sampler_balanced),
		cmocka_unit_test(test_sampler_uniform),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
