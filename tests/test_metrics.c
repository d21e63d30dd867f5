/*
 * test_metrics.c - unit tests of train/metrics.c: the metric names, bad
 * arguments, hand-computed rankings (ties, k past the index, a query with
 * no relevant item, exclude_self on and off), numbers from a transcription
 * of docarray's functions (tools/metrics_ref.py), every micro-kernel
 * against a naive fmaf loop, and the blocked kNN against a brute-force one
 * (whole similarity matrix, full sort) on data full of ties.
 *
 * This file includes train/metrics.c itself, to reach the kNN's per-query
 * lists and each micro-kernel; the library's copy of those symbols is then
 * never linked in.
 *
 * Random data comes from one seed, printed at the start; set FC_SEED to
 * replay a failure. The timing of 20k x 20k (dim 2048, k 20, 2 threads) is
 * printed, not checked; FC_TEST_PERF_N sets its size (0 skips it).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "train/metrics.c"
#include "util/util.h"
#include "tests/testlib.h"

static float rng_gauss(void)
{
	return (float)(sqrt(-2.0 * log(testlib_unit_pos())) * cos(6.283185307179586 * testlib_unit_pos()));
}

#define EPS 1e-12

static void assert_metrics(const fc_metrics *m, const double want[9])
{
	const double got[9] = {m->precision, m->recall, m->f1, m->hit, m->ap,
			       m->rr, m->r_precision, m->dcg, m->ndcg};
	for (int i = 0; i < 9; i++) {
		if (fabs(got[i] - want[i]) > EPS)
			fail_msg("%s: got %.17g, want %.17g", fc_metric_names[i], got[i], want[i]);
	}
}

/* ------------------------------------------------------------ names */

static void test_names_and_get(void **state)
{
	(void)state;
	static const char *const want[9] = {"precision_at_k", "recall_at_k",	   "f1_score_at_k",
					    "hit_at_k",	      "average_precision", "reciprocal_rank",
					    "r_precision",    "dcg_at_k",	   "ndcg_at_k"};
	fc_metrics m = {.precision = 1, .recall = 2, .f1 = 3, .hit = 4, .ap = 5, .rr = 6,
			.r_precision = 7, .dcg = 8, .ndcg = 9};
	static const struct {
		const char *name;
		double v;
	} alias[] = {{"precision", 1}, {"recall", 2}, {"f1", 3},  {"hit", 4},	     {"map", 5},
		     {"ap", 5},	       {"mrr", 6},    {"rprecision", 7}, {"dcg", 8}, {"ndcg", 9}};
	double v;

	for (int i = 0; i < 9; i++) {
		assert_string_equal(fc_metric_names[i], want[i]);
		v = -1;
		assert_int_equal(fc_metric_get(&m, fc_metric_names[i], &v), 0);
		assert_true(v == i + 1);
	}
	for (size_t i = 0; i < sizeof alias / sizeof alias[0]; i++) {
		v = -1;
		assert_int_equal(fc_metric_get(&m, alias[i].name, &v), 0);
		assert_true(v == alias[i].v);
	}
	assert_int_equal(fc_metric_get(&m, "MAP", &v), FC_ERR_INVALID);
	assert_int_equal(fc_metric_get(&m, "", &v), FC_ERR_INVALID);
	assert_int_equal(fc_metric_get(&m, "precision_at_10", &v), FC_ERR_INVALID);
	assert_int_equal(fc_metric_get(NULL, "map", &v), FC_ERR_INVALID);
	assert_int_equal(fc_metric_get(&m, NULL, &v), FC_ERR_INVALID);
	assert_int_equal(fc_metric_get(&m, "map", NULL), FC_ERR_INVALID);
}

/* One resolver for every command: each alias train, sweep or report ever
 * took names the same metric, and nothing else resolves. */
static void test_metric_resolve(void **state)
{
	(void)state;
	static const struct {
		const char *name;
		int index;
	} names[] = {
		{"precision", 0}, {"recall", 1}, {"f1", 2},	    {"hit", 3},	  {"map", 4},
		{"ap", 4},	  {"mrr", 5},	 {"rprecision", 6}, {"dcg", 7},	  {"ndcg", 8},
	};
	const char *canonical = "unset";

	for (int i = 0; i < 9; i++) {
		assert_int_equal(fc_metric_resolve(fc_metric_names[i], &canonical), i);
		assert_ptr_equal(canonical, fc_metric_names[i]);
	}
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		canonical = NULL;
		assert_int_equal(fc_metric_resolve(names[i].name, &canonical), names[i].index);
		assert_string_equal(canonical, fc_metric_names[names[i].index]);
	}
	static const char *const unknown[] = {"MAP", "", "precision_at_10", "mAP", "r_prec", "ndcg@20", "dcg_at",
					      " map", "map "};
	for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
		canonical = "unset";
		assert_int_equal(fc_metric_resolve(unknown[i], &canonical), FC_ERR_INVALID);
		assert_null(canonical);
	}
	assert_int_equal(fc_metric_resolve(NULL, &canonical), FC_ERR_INVALID);
	assert_int_equal(fc_metric_resolve("ndcg", NULL), 8);

	/* value/set address the field fc_metric_get names. */
	fc_metrics m = {0};
	for (int i = 0; i < 9; i++)
		fc_metric_set(&m, i, 10.0 + i);
	assert_true(m.precision == 10 && m.recall == 11 && m.f1 == 12 && m.hit == 13 && m.ap == 14 && m.rr == 15 &&
		    m.r_precision == 16 && m.dcg == 17 && m.ndcg == 18);
	for (int i = 0; i < 9; i++)
		assert_true(fc_metric_value(&m, i) == 10.0 + i);
}

/* The list for messages names exactly what the resolver takes: every word
 * in it resolves, every canonical and short name appears, and a short buffer
 * gets a NUL-terminated prefix with the full length returned. */
static void test_metric_list(void **state)
{
	(void)state;
	char list[FC_ERRLEN], copy[FC_ERRLEN], small[16];
	size_t len = fc_metric_list(list, sizeof list);
	assert_int_equal(len, strlen(list));
	assert_int_equal(fc_metric_list(NULL, 0), len);
	assert_string_equal(list, "precision_at_k (precision), recall_at_k (recall), f1_score_at_k (f1), "
				  "hit_at_k (hit), average_precision (map, ap), reciprocal_rank (mrr), "
				  "r_precision (rprecision), dcg_at_k (dcg) or ndcg_at_k (ndcg)");
	strcpy(copy, list);
	int words = 0;
	for (char *w = strtok(copy, " ,()"); w; w = strtok(NULL, " ,()")) {
		if (strcmp(w, "or") == 0)
			continue;
		assert_true(fc_metric_resolve(w, NULL) >= 0);
		words++;
	}
	assert_int_equal(words, 9 + 10);
	assert_int_equal(fc_metric_list(small, sizeof small), len);
	assert_int_equal(strlen(small), sizeof small - 1);
	assert_memory_equal(small, list, sizeof small - 1);
	small[0] = 'x';
	assert_int_equal(fc_metric_list(small, 1), len);
	assert_int_equal(small[0], '\0');
}

/* The metrics object of run logs and checkpoints reads back what it wrote;
 * what it lacks reads as NaN, and no object leaves the metrics alone. */
static void test_metrics_json(void **state)
{
	(void)state;
	fc_metrics m = {.precision = 0.1, .recall = 0.2, .f1 = 1.0 / 3, .hit = 1, .ap = 0.5, .rr = 0.25,
			.r_precision = 0.75, .dcg = 2.5, .ndcg = 0.9, .queries = 7};
	fc_metrics back = {0};
	json_t *j = fc_metrics_to_json(&m, 1);
	assert_non_null(j);
	assert_int_equal(json_object_size(j), 10);
	assert_int_equal(json_integer_value(json_object_get(j, "queries")), 7);
	fc_metrics_from_json(&back, j);
	for (int i = 0; i < 9; i++)
		assert_true(fc_metric_value(&back, i) == fc_metric_value(&m, i));
	json_object_del(j, "dcg_at_k");
	json_object_set_new(j, "ndcg_at_k", json_string("high"));
	fc_metrics_from_json(&back, j);
	assert_true(isnan(back.dcg) && isnan(back.ndcg) && back.ap == 0.5);
	json_decref(j);
	j = fc_metrics_to_json(&m, 0);
	assert_null(json_object_get(j, "queries"));
	json_decref(j);
	back = m;
	fc_metrics_from_json(&back, NULL);
	assert_memory_equal(&back, &m, sizeof m);
}

/* ------------------------------------------------------ bad arguments */

static void test_bad_arguments(void **state)
{
	(void)state;
	const float x[4] = {1, 0, 0, 1};
	const uint32_t l[2] = {0, 1};
	fc_metrics m, zero = {0};
	float nan_x[4] = {1, 0, NAN, 1}, inf_x[4] = {1, 0, 0, INFINITY};

	assert_int_equal(fc_eval_knn(NULL, x, l, 2, x, l, 2, 2, 1, 0), FC_ERR_INVALID);
	assert_int_equal(fc_eval_knn(&m, x, l, 2, x, l, 2, 2, 0, 0), FC_ERR_INVALID); /* k */
	assert_int_equal(fc_eval_knn(&m, x, l, 2, x, l, 2, 0, 1, 0), FC_ERR_INVALID); /* dim */
	assert_int_equal(fc_eval_knn(&m, NULL, l, 2, x, l, 2, 2, 1, 0), FC_ERR_INVALID);
	assert_int_equal(fc_eval_knn(&m, x, NULL, 2, x, l, 2, 2, 1, 0), FC_ERR_INVALID);
	assert_int_equal(fc_eval_knn(&m, x, l, 2, NULL, l, 2, 2, 1, 0), FC_ERR_INVALID);
	assert_int_equal(fc_eval_knn(&m, x, l, 2, x, NULL, 2, 2, 1, 0), FC_ERR_INVALID);
	/* exclude_self needs the same set on both sides */
	assert_int_equal(fc_eval_knn(&m, x, l, 2, x, l, 1, 2, 1, 1), FC_ERR_INVALID);
	/* non-finite input */
	assert_int_equal(fc_eval_knn(&m, nan_x, l, 2, x, l, 2, 2, 1, 0), FC_ERR_INVALID);
	assert_int_equal(fc_eval_knn(&m, x, l, 2, inf_x, l, 2, 2, 1, 0), FC_ERR_INVALID);
	/* sizes that overflow are refused before anything is read */
	assert_int_equal(fc_eval_knn(&m, x, l, SIZE_MAX / 2, x, l, 2, 4, 1, 0), FC_ERR_OVERFLOW);
	assert_int_equal(fc_eval_knn(&m, x, l, 2, x, l, SIZE_MAX / 3, 4, 1, 0), FC_ERR_OVERFLOW);
	assert_int_equal(fc_eval_knn(&m, x, l, 2, x, l, 2, SIZE_MAX / 2 + 1, 1, 0),
			 FC_ERR_OVERFLOW);

	/* empty sets are fine, with NULL pointers */
	memset(&m, 0xff, sizeof m);
	assert_int_equal(fc_eval_knn(&m, NULL, NULL, 0, x, l, 2, 2, 5, 0), 0);
	zero.k = 2; /* the k used: the index has 2 rows */
	assert_memory_equal(&m, &zero, sizeof m);
	memset(&m, 0xff, sizeof m);
	assert_int_equal(fc_eval_knn(&m, x, l, 2, NULL, NULL, 0, 2, 5, 0), 0);
	zero.queries = 2;
	zero.k = 0;
	assert_memory_equal(&m, &zero, sizeof m); /* nothing retrieved: every metric 0 */
	/* one item matched against itself only: an empty list, all 0 */
	memset(&m, 0xff, sizeof m);
	assert_int_equal(fc_eval_knn(&m, x, l, 1, x, l, 1, 2, 5, 1), 0);
	zero.queries = 1;
	assert_memory_equal(&m, &zero, sizeof m);
}

/* ------------------------------------------------- hand-computed cases */

/*
 * A ranking known by construction, and a query whose label is absent.
 * dim 2, k 3, exclude_self off. Labels A = 0, B = 1, C = 2.
 *   index  i0 (0,1) A   i1 (1,0) B   i2 (1,1) A   i3 (-1,0) A   i4 (4,1) A
 *          i5 (1,-2) B
 *   q0 = (1,0), A: similarities i1 1, i4 4/sqrt(17) = .970, i2 .707,
 *      i5 1/sqrt(5) = .447, i0 0, i3 -1. Top 3 = i1 B, i4 A, i2 A: b = 0 1 1.
 *      R = 2, L = 3, max_rel = |{i0,i2,i3,i4}| = 4.
 *        precision 2/3; recall 2/4 = 1/2; f1 2 (2/3)(1/2) / (2/3 + 1/2) = 4/7
 *        hit 1; AP = (P@2 + P@3) / 2 = (1/2 + 2/3) / 2 = 7/12; RR = 1/2
 *        r_precision = mean(b[0..R-1]) = mean(0, 1) = 1/2 (the precision "up
 *          to the last relevant" would be 2/3: docarray does not do that)
 *        dcg = 0 + 1/log2(2) + 1/log2(3) = 1 + 1/log2(3)
 *        ideal b = 1 1 0: 1 + 1/log2(2) = 2; ndcg = (1 + 1/log2(3)) / 2
 *   q1 = (0,1), C: nothing relevant (max_rel 0): every metric 0, recall too.
 *   Means over the two queries: half of q0's.
 */
static void test_hand_ranking(void **state)
{
	(void)state;
	const float index[6 * 2] = {0, 1, 1, 0, 1, 1, -1, 0, 4, 1, 1, -2};
	const uint32_t ilab[6] = {0, 1, 0, 0, 0, 1};
	const float q[2 * 2] = {1, 0, 0, 1};
	const uint32_t qlab[2] = {0, 2};
	const double l3 = 1.0 / log2(3.0);
	const double want[9] = {
		(2.0 / 3) / 2, (1.0 / 2) / 2, (4.0 / 7) / 2, 1.0 / 2, (7.0 / 12) / 2,
		(1.0 / 2) / 2, (1.0 / 2) / 2, (1 + l3) / 2,  ((1 + l3) / 2) / 2,
	};
	fc_metrics m;

	assert_int_equal(fc_eval_knn(&m, q, qlab, 2, index, ilab, 6, 2, 3, 0), 0);
	assert_metrics(&m, want);
	assert_int_equal(m.queries, 2);
	assert_int_equal(m.k, 3);
}

/*
 * Ties: equal directions score bit-identical similarities, and the lower
 * index row wins. dim 2, k 2, exclude_self off.
 *   index  i0 (0,1) A   i1 (4,0) B   i2 (1,0) A   i3 (2,0) A   i4 (1,1) A
 *   i1, i2, i3 all normalise to exactly (1,0) (power-of-two scales).
 *   q0 = (1,0), A: i1 = i2 = i3 = 1, a three-way tie across the k boundary:
 *      top 2 = i1 B, i2 A: b = 0 1 (the higher rows first would give 1 1).
 *      max_rel 4. P 1/2, R 1/4, F1 2(1/2)(1/4)/(3/4) = 1/3, hit 1,
 *      AP = P@2 = 1/2, RR 1/2, r_precision (R = 1) = b[0] = 0,
 *      dcg = 1/log2(2) = 1, ideal (1 0) = 1, ndcg 1.
 *   q1 = (1,0), B: top 2 = i1 B, i2 A: b = 1 0, max_rel 1 (i1).
 *      P 1/2, R 1, F1 2(1/2)(1)/(3/2) = 2/3, hit 1, AP 1, RR 1, r_prec 1,
 *      dcg 1, ndcg 1.
 *   q2 = (-1,0), A: i0 0, i4 -.707, then i1..i3 at -1: b = 1 1, max_rel 4.
 *      P 1, R 2/4, F1 2(1)(1/2)/(3/2) = 2/3, hit 1, AP 1, RR 1, r_prec 1,
 *      dcg 1 + 1 = 2, ideal 2, ndcg 1.
 *   Means: P (1/2+1/2+1)/3 = 2/3, R (1/4+1+1/2)/3 = 7/12,
 *      F1 (1/3+2/3+2/3)/3 = 5/9, hit 1, AP (1/2+1+1)/3 = 5/6, RR 5/6,
 *      r_prec (0+1+1)/3 = 2/3, dcg (1+1+2)/3 = 4/3, ndcg 1.
 */
static void test_hand_ties(void **state)
{
	(void)state;
	const float index[5 * 2] = {0, 1, 4, 0, 1, 0, 2, 0, 1, 1};
	const uint32_t ilab[5] = {0, 1, 0, 0, 0};
	const float q[3 * 2] = {1, 0, 1, 0, -1, 0};
	const uint32_t qlab[3] = {0, 1, 0};
	const double want[9] = {2.0 / 3, 7.0 / 12, 5.0 / 9, 1, 5.0 / 6, 5.0 / 6, 2.0 / 3, 4.0 / 3, 1};
	fc_metrics m;

	assert_int_equal(fc_eval_knn(&m, q, qlab, 3, index, ilab, 5, 2, 2, 0), 0);
	assert_metrics(&m, want);
}

/*
 * The lists behind test_hand_ties (same data), and each query's own
 * metrics: q0 i1 i2 (both 1), q1 i1 i2, q2 i0 (0) i4 (-1/sqrt 2).
 * Per query (P R F1 hit AP RR r_prec dcg ndcg), from the comment above:
 *   q0 1/2 1/4 1/3 1 1/2 1/2 0 1 1;  q1 1/2 1 2/3 1 1 1 1 1 1;
 *   q2 1 1/2 2/3 1 1 1 1 2 1.
 * k 3 on a 2-row index: counts 2, the third slot untouched.
 */
static void test_hand_lists(void **state)
{
	(void)state;
	const float index[5 * 2] = {0, 1, 4, 0, 1, 0, 2, 0, 1, 1};
	const uint32_t ilab[5] = {0, 1, 0, 0, 0};
	const float q[3 * 2] = {1, 0, 1, 0, -1, 0};
	const uint32_t qlab[3] = {0, 1, 0};
	const uint32_t want_idx[3][2] = {{1, 2}, {1, 2}, {0, 4}};
	const double want[3][9] = {
		{0.5, 0.25, 1.0 / 3, 1, 0.5, 0.5, 0, 1, 1},
		{0.5, 1, 2.0 / 3, 1, 1, 1, 1, 1, 1},
		{1, 0.5, 2.0 / 3, 1, 1, 1, 1, 2, 1},
	};
	uint32_t idx[3 * 2];
	float sim[3 * 2];
	size_t count[3];
	double per[3 * 9];
	uint32_t idx3[3] = {7, 7, 7};
	size_t c1;
	fc_metrics m;

	assert_int_equal(fc_knn(idx, sim, count, q, 3, index, 5, 2, 2, 0), 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(count[i], 2);
		for (int j = 0; j < 2; j++)
			assert_int_equal(idx[i * 2 + j], want_idx[i][j]);
	}
	assert_true(sim[0] == 1.0f && sim[1] == 1.0f && sim[4] == 0.0f);
	assert_float_equal(sim[5], -1.0 / sqrt(2.0), 1e-6);
	assert_int_equal(fc_eval_knn_queries(&m, per, q, qlab, 3, index, ilab, 5, 2, 2, 0), 0);
	for (int i = 0; i < 3; i++)
		for (int j = 0; j < 9; j++)
			assert_float_equal(per[i * 9 + j], want[i][j], 1e-12);
	/* k past a two-row index (exclude_self on a pair leaves one) */
	assert_int_equal(fc_knn(idx3, NULL, &c1, index, 1, index, 1, 2, 3, 0), 0);
	assert_int_equal(c1, 1);
	assert_int_equal(idx3[0], 0);
	assert_int_equal(idx3[1], 7);
	assert_int_equal(fc_knn(idx3, NULL, &c1, index, 1, index, 1, 2, 3, 1), 0);
	assert_int_equal(c1, 0);
	assert_int_equal(fc_knn(NULL, NULL, &c1, index, 1, index, 1, 2, 3, 0), FC_ERR_INVALID);
	assert_int_equal(fc_knn(idx3, NULL, &c1, index, 1, index, 1, 2, 0, 0), FC_ERR_INVALID);
}

/*
 * k larger than the index: the list is the whole index (5 rows), and the
 * means are over what was retrieved. Index of test_hand_ties, k 10.
 *   q0 = (1,0), A: i1 B, i2 A, i3 A (tied at 1), i4 A (.707), i0 A (0):
 *      b = 0 1 1 1 1, L 5, R 4, max_rel 4.
 *      P 4/5, recall 4/4 = 1, F1 2(4/5)(1)/(9/5) = 8/9, hit 1,
 *      AP = (1/2 + 2/3 + 3/4 + 4/5) / 4 = (163/60) / 4 = 163/240, RR 1/2,
 *      r_precision = mean(b[0..3]) = 3/4,
 *      dcg = 0 + 1/log2 2 + 1/log2 3 + 1/log2 4 + 1/log2 5
 *          = 1 + 1/log2 3 + 1/2 + 1/log2 5,
 *      ideal 1 1 1 1 0: 1 + 1/log2 2 + 1/log2 3 + 1/log2 4 = 2.5 + 1/log2 3.
 */
static void test_hand_k_past_index(void **state)
{
	(void)state;
	const float index[5 * 2] = {0, 1, 4, 0, 1, 0, 2, 0, 1, 1};
	const uint32_t ilab[5] = {0, 1, 0, 0, 0};
	const float q[2] = {1, 0};
	const uint32_t qlab[1] = {0};
	const double l3 = 1.0 / log2(3.0), l5 = 1.0 / log2(5.0);
	const double dcg = 1 + l3 + 0.5 + l5, idcg = 2.5 + l3;
	const double want[9] = {4.0 / 5, 1, 8.0 / 9, 1, 163.0 / 240, 0.5, 0.75, dcg, dcg / idcg};
	fc_metrics m;

	assert_int_equal(fc_eval_knn(&m, q, qlab, 1, index, ilab, 5, 2, 10, 0), 0);
	assert_metrics(&m, want);
	assert_int_equal(m.k, 5); /* k 10 asked, 5 candidates: the metrics are at 5 */
	assert_int_equal(m.queries, 1);
}

/*
 * exclude_self on and off, one set as queries and index, k 2.
 *   p0 (1,0) A   p1 (1,0) A   p2 (0,1) B   p3 (1,1) B
 *   p3 normalises to (a,a), a = float(1/sqrt 2), and scores exactly a
 *   against p0, p1 and p2 alike (one product is exactly 0): a three-way tie.
 * On: row i never retrieves i; max_rel = same label minus itself = 1 each.
 *   q0: p1 (1), p3 (a): b = 1 0     q1: p0, p3: b = 1 0
 *   q2: p3 (a), p0 (0, tied with p1, lower index): b = 1 0
 *   q3: p0, p1 (tied with p2 at a, lowest two): b = 0 0, every metric 0
 *   b = 1 0 with max_rel 1: P 1/2, R 1, F1 2(1/2)(1)/(3/2) = 2/3, hit 1,
 *   AP 1, RR 1, r_prec 1, dcg 1, ndcg 1. Means of three of those and a 0:
 *   P 3/8, R 3/4, F1 1/2, and 3/4 for the rest.
 * Off: each row finds itself first (self-similarity about 1 > a);
 *   max_rel = 2 for everyone.
 *   q0: p0, p1: b = 1 1   q1: p0, p1: b = 1 1   q2: p2, p3: b = 1 1
 *   q3: p3, then p0 (first of the tie): b = 1 0
 *   b = 1 1: P 1, R 1, F1 1, hit 1, AP 1, RR 1, r_prec 1, dcg 2, ndcg 1.
 *   b = 1 0: P 1/2, R 1/2, F1 1/2, hit 1, AP 1, RR 1, r_prec 1, dcg 1, ndcg 1.
 *   Means: P R F1 (3 + 1/2)/4 = 7/8, dcg (6 + 1)/4 = 7/4, the rest 1.
 */
static void test_hand_exclude_self(void **state)
{
	(void)state;
	const float x[4 * 2] = {1, 0, 1, 0, 0, 1, 1, 1};
	const uint32_t lab[4] = {0, 0, 1, 1};
	const double want_on[9] = {3.0 / 8, 3.0 / 4, 1.0 / 2, 3.0 / 4, 3.0 / 4,
				   3.0 / 4, 3.0 / 4, 3.0 / 4, 3.0 / 4};
	const double want_off[9] = {7.0 / 8, 7.0 / 8, 7.0 / 8, 1, 1, 1, 1, 7.0 / 4, 1};
	fc_metrics m;

	assert_int_equal(fc_eval_knn(&m, x, lab, 4, x, lab, 4, 2, 2, 1), 0);
	assert_metrics(&m, want_on);
	assert_int_equal(fc_eval_knn(&m, x, lab, 4, x, lab, 4, 2, 2, 0), 0);
	assert_metrics(&m, want_off);
}

/* ------------------------------------------ docarray's own arithmetic */

/*
 * Made by tools/metrics_ref.py (run with /usr/bin/python3, numpy 1.24):
 * float64 cosine kNN over these 14 rows (one set, queries = index), then
 * a line-by-line numpy transcription of docarray/math/evaluation.py's
 * functions as Finetuner's Evaluator calls them, averaged with np.mean.
 * Rows 5 and 9 are 2x row 1 and 4x row 3 (exact ties), row 12 is zero,
 * label 3 has one member (no relevant item when self is excluded); the
 * script checks that no other similarities of a query lie within 1e-3, so
 * float32 ranks the rows as float64 does.
 */
static const float fixture_x[14 * 4] = {
	-1, 2,	2,  2,	 -1, -1, 2, -3, 0, -3, 1, -1, 1, 2, -2, -3, -3, 0, 2, -1,
	-2, -2, 4,  -6,	 1,  1,	 0, -1, -1, 1, 0, 2,  -2, 2, 1,	 2,  4,	 8, -8, -12,
	0,  -3, 3,  -2,	 3,  -3, 2, 2,	0,  0, 0, 0,  3, 2, 1,	 2,
};
static const uint32_t fixture_labels[14] = {0, 1, 2, 0, 1, 1, 2, 0, 2, 1, 0, 3, 2, 0};
static const struct {
	size_t k;
	int exclude_self;
	double m[9];
} fixture_cases[] = {
	{1, 1, {0.2857142857142857, 0.08928571428571429, 0.1357142857142857, 0.2857142857142857,
		0.2857142857142857, 0.2857142857142857, 0.2857142857142857, 0.2857142857142857,
		0.2857142857142857}},
	{1, 0, {0.8571428571428571, 0.25, 0.3619047619047619, 0.8571428571428571, 0.8571428571428571,
		0.8571428571428571, 0.8571428571428571, 0.8571428571428571, 0.8571428571428571}},
	{3, 1, {0.3095238095238095, 0.27976190476190477, 0.29251700680272114, 0.5714285714285714,
		0.3928571428571428, 0.4047619047619047, 0.2857142857142857, 0.7703984658163391,
		0.4659799295918451}},
	{3, 0, {0.49999999999999994, 0.39999999999999997, 0.42346938775510207, 1.0,
		0.8928571428571429, 0.9166666666666667, 0.7857142857142857, 1.3945513581632736,
		0.9472756790816368}},
	{5, 1, {0.2285714285714286, 0.34523809523809523, 0.27380952380952384, 0.6428571428571429,
		0.3952380952380952, 0.419047619047619, 0.25, 0.8725896485358672, 0.4742093353981068}},
	{5, 0, {0.4, 0.5142857142857142, 0.4349206349206348, 1.0, 0.86984126984127,
		0.9166666666666667, 0.7619047619047619, 1.6346480093166156, 0.9149305681664074}},
	{20, 1, {0.2417582417582418, 0.9285714285714286, 0.3823529411764706, 0.9285714285714286,
		 0.3989979266764981, 0.46369047619047615, 0.29761904761904756, 1.5164599304011388,
		 0.5367067189518753}},
	{20, 0, {0.2959183673469387, 1.0, 0.4514619883040937, 1.0, 0.6199600102278674,
		 0.9166666666666667, 0.4964285714285714, 2.2951444769545977, 0.7461424254146871}},
};

static void test_docarray_fixture(void **state)
{
	(void)state;
	for (size_t c = 0; c < sizeof fixture_cases / sizeof fixture_cases[0]; c++) {
		fc_metrics m;
		assert_int_equal(fc_eval_knn(&m, fixture_x, fixture_labels, 14, fixture_x,
					     fixture_labels, 14, 4, fixture_cases[c].k,
					     fixture_cases[c].exclude_self),
				 0);
		assert_metrics(&m, fixture_cases[c].m);
	}
}

/* ------------------------------------------------------- micro-kernels */

static size_t available_kernels(sim_kernel *out)
{
	size_t n = 0;

	out[n++] = (sim_kernel){tile_scalar, 4, 4};
#if SIM_X86
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		out[n++] = (sim_kernel){tile_avx2, 6, 16};
	if (__builtin_cpu_supports("avx512f"))
		out[n++] = (sim_kernel){tile_avx512, 12, 32};
#endif
	return n;
}

/* Every kernel is the plain fmaf chain over p, bit for bit, at any ldc, kc
 * and starting value. */
static void test_kernels_bitwise(void **state)
{
	(void)state;
	sim_kernel ks[3];
	size_t nk = available_kernels(ks);
	const size_t kcs[] = {1, 2, 7, 256};

	print_message("# kernels available: %zu (picked mr %zu nr %zu)\n", nk, pick_kernel().mr,
		      pick_kernel().nr);
	for (size_t ki = 0; ki < nk; ki++) {
		size_t mr = ks[ki].mr, nr = ks[ki].nr, ldc = nr + 5;
		for (size_t t = 0; t < sizeof kcs / sizeof kcs[0]; t++) {
			size_t kc = kcs[t];
			float *a = alloc_aligned(kc * mr * sizeof(float));
			float *b = alloc_aligned(kc * nr * sizeof(float));
			float *c = alloc_aligned(mr * ldc * sizeof(float));
			float *c0 = malloc(mr * ldc * sizeof(float));
			assert_non_null(a);
			assert_non_null(b);
			assert_non_null(c);
			assert_non_null(c0);
			for (size_t i = 0; i < kc * mr; i++)
				a[i] = rng_gauss();
			for (size_t i = 0; i < kc * nr; i++)
				b[i] = rng_gauss();
			for (int first = 0; first < 2; first++) {
				for (size_t i = 0; i < mr * ldc; i++)
					c[i] = c0[i] = rng_gauss();
				ks[ki].tile(c, ldc, a, b, kc, first);
				for (size_t i = 0; i < mr; i++) {
					for (size_t j = 0; j < ldc; j++) {
						float s = c0[i * ldc + j];
						if (j < nr) {
							s = first ? 0.0f : s;
							for (size_t p = 0; p < kc; p++)
								s = fmaf(a[p * mr + i], b[p * nr + j], s);
						}
						if (memcmp(&s, &c[i * ldc + j], sizeof s) != 0)
							fail_msg("kernel %zux%zu kc %zu first %d (%zu,%zu): "
								 "%a != %a",
								 mr, nr, kc, first, i, j, c[i * ldc + j], s);
					}
				}
			}
			free(a);
			free(b);
			free(c);
			free(c0);
		}
	}
}

/* ---------------------------------------------- brute force reference */

/* Normalised as the library promises: the norm summed in double, the
 * scale rounded to float once, zero rows left zero. */
static void ref_normalize(float *dst, const float *x, size_t n, size_t dim)
{
	for (size_t i = 0; i < n; i++) {
		double ss = 0;
		for (size_t d = 0; d < dim; d++)
			ss += (double)x[i * dim + d] * x[i * dim + d];
		float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
		for (size_t d = 0; d < dim; d++)
			dst[i * dim + d] = x[i * dim + d] * inv;
	}
}

typedef struct hit {
	float sim;
	uint32_t idx;
} hit;

/* s + a · b as one fmaf chain; the same numbers with hardware FMA inline,
 * which keeps the sanitizer builds quick. */
static float ref_dot(const float *a, const float *b, size_t dim)
{
	float s = 0.0f;
	for (size_t d = 0; d < dim; d++)
		s = fmaf(a[d], b[d], s);
	return s;
}

#if SIM_X86
__attribute__((target("fma"))) static float ref_dot_fma(const float *a, const float *b, size_t dim)
{
	float s = 0.0f;
	for (size_t d = 0; d < dim; d++)
		s = __builtin_fmaf(a[d], b[d], s);
	return s;
}
#endif

static int ref_cmp(const void *pa, const void *pb)
{
	const hit *a = pa, *b = pb;
	if (a->sim != b->sim)
		return a->sim > b->sim ? -1 : 1;
	return (a->idx > b->idx) - (a->idx < b->idx);
}

/* The whole (nq, ni) similarity matrix, each row fully sorted; the first
 * `cap` of each row (self left out) into top, their number into counts. */
static void ref_knn(hit *top, size_t *counts, const float *q, size_t nq, const float *x, size_t ni,
		    size_t dim, size_t cap, int exclude_self)
{
	float *qn = malloc((nq ? nq : 1) * dim * sizeof(float));
	float *xn = malloc((ni ? ni : 1) * dim * sizeof(float));
	hit *all = malloc((ni ? ni : 1) * sizeof(hit));

	assert_non_null(qn);
	assert_non_null(xn);
	assert_non_null(all);
	float (*dot)(const float *, const float *, size_t) = ref_dot;

#if SIM_X86
	if (__builtin_cpu_supports("fma"))
		dot = ref_dot_fma;
#endif
	ref_normalize(qn, q, nq, dim);
	ref_normalize(xn, x, ni, dim);
	for (size_t i = 0; i < nq; i++) {
		size_t n = 0;
		for (size_t j = 0; j < ni; j++) {
			if (exclude_self && i == j)
				continue;
			all[n++] = (hit){dot(qn + i * dim, xn + j * dim, dim), (uint32_t)j};
		}
		qsort(all, n, sizeof(hit), ref_cmp);
		counts[i] = n < cap ? n : cap;
		memcpy(top + i * cap, all, counts[i] * sizeof(hit));
	}
	free(all);
	free(xn);
	free(qn);
}

/* docarray's functions, written out as literally as C allows. */
static double ref_precision_at(const int *b, size_t n, size_t k)
{
	size_t m = n < k ? n : k, s = 0;
	if (n == 0)
		return 0;
	for (size_t i = 0; i < m; i++)
		s += b[i] != 0;
	return (double)s / (double)m;
}

static double ref_dcg(const int *b, size_t n)
{
	double s;
	if (n == 0)
		return 0;
	s = b[0];
	for (size_t i = 1; i < n; i++)
		s += b[i] / log2((double)(i + 1));
	return s;
}

static int cmp_int_desc(const void *a, const void *b)
{
	return *(const int *)b - *(const int *)a;
}

static void ref_metrics(double m[9], const int *b, size_t n, size_t max_rel)
{
	size_t r = 0, first = 0, ap_n = 0;
	double ap = 0, best;
	int *sorted = malloc((n ? n : 1) * sizeof(int));

	assert_non_null(sorted);
	for (size_t i = 0; i < n; i++)
		r += b[i] != 0;
	m[0] = ref_precision_at(b, n, n);
	m[1] = max_rel ? (double)r / (double)max_rel : 0; /* docarray: r / 0 */
	m[2] = m[0] + m[1] > 0 ? 2 * m[0] * m[1] / (m[0] + m[1]) : 0;
	m[3] = r > 0;
	for (size_t i = 0; i < n; i++) {
		if (b[i]) {
			ap += ref_precision_at(b, n, i + 1);
			ap_n++;
		}
	}
	m[4] = ap_n ? ap / (double)ap_n : 0;
	for (first = 0; first < n && !b[first]; first++)
		;
	m[5] = first < n ? 1.0 / (double)(first + 1) : 0;
	m[6] = r ? ref_precision_at(b, n, r) : 0;
	m[7] = ref_dcg(b, n);
	memcpy(sorted, b, n * sizeof(int));
	qsort(sorted, n, sizeof(int), cmp_int_desc);
	best = ref_dcg(sorted, n);
	m[8] = best ? m[7] / best : 0;
	free(sorted);
}

/* The mean metrics of the first `cap` of each reference list (row stride
 * `stride`). */
static void ref_mean_metrics(double out[9], const hit *top, const size_t *counts, size_t stride,
			     size_t cap, const uint32_t *ql, size_t nq, const uint32_t *il,
			     size_t ni, int exclude_self)
{
	int *b = malloc((cap ? cap : 1) * sizeof(int));
	double sum[9] = {0};

	assert_non_null(b);
	for (size_t q = 0; q < nq; q++) {
		size_t max_rel = 0, len = counts[q] < cap ? counts[q] : cap;
		double m[9];
		for (size_t j = 0; j < ni; j++)
			max_rel += il[j] == ql[q] && !(exclude_self && j == q);
		for (size_t i = 0; i < len; i++)
			b[i] = il[top[q * stride + i].idx] == ql[q];
		ref_metrics(m, b, len, max_rel);
		for (int i = 0; i < 9; i++)
			sum[i] += m[i];
	}
	for (int i = 0; i < 9; i++)
		out[i] = nq ? sum[i] / (double)nq : 0;
	free(b);
}

enum { DATA_GAUSS, DATA_SMALL_INT };

/* Rows drawn from a small pool, so many are equal or power-of-two multiples
 * of each other (bit-identical once normalised), with some zero rows; or
 * entries in {-1, 0, 1}, where distinct rows tie too. */
static void make_data(float *x, size_t n, size_t dim, int kind, const float *pool, size_t npool)
{
	for (size_t i = 0; i < n; i++) {
		float *row = x + i * dim;
		if (kind == DATA_SMALL_INT) {
			for (size_t d = 0; d < dim; d++)
				row[d] = (float)((int)(testlib_rand() % 3) - 1);
		} else if (testlib_rand() % 13 == 0) {
			memset(row, 0, dim * sizeof(float));
		} else {
			const float *src = pool + (testlib_rand() % npool) * dim;
			float scale = (float)(1u << (testlib_rand() % 3)) * 0.5f;
			for (size_t d = 0; d < dim; d++)
				row[d] = src[d] * scale;
		}
	}
}

static size_t cap_of(size_t k, size_t ni, int exclude_self)
{
	size_t cap = ni - (exclude_self && ni > 0);
	return k < cap ? k : cap;
}

/*
 * The kNN lists for every k in ks against one brute-force run (the top k of
 * a fully sorted list is a prefix of it): bit-identical similarities and
 * the same rows in the same order, with every kernel for the first k (the
 * scalar one on small sets only) and the one fc_eval_knn picks for all; then fc_eval_knn's means against the
 * reference's, and the same means to the bit on one thread.
 */
/* fc_knn gives the reference's lists, k slots a row with the counts capped
 * at what the index holds; fc_eval_knn_queries' per-query metrics average to
 * the means fc_eval_knn gave (m). */
static void check_public_lists(const hit *want, const size_t *wcount, size_t wcap, const float *q,
			       const uint32_t *ql, size_t nq, const float *x, const uint32_t *il,
			       size_t ni, size_t dim, size_t k, int exclude_self, const fc_metrics *m)
{
	uint32_t *idx = malloc(nq * k * sizeof(uint32_t));
	float *sim = malloc(nq * k * sizeof(float));
	size_t *count = malloc(nq * sizeof(size_t));
	double *per = malloc(nq * 9 * sizeof(double));
	size_t cap = cap_of(k, ni, exclude_self);
	fc_metrics mq;

	assert_non_null(idx);
	assert_non_null(sim);
	assert_non_null(count);
	assert_non_null(per);
	assert_int_equal(fc_knn(idx, sim, count, q, nq, x, ni, dim, k, exclude_self), 0);
	for (size_t i = 0; i < nq; i++) {
		size_t len = wcount[i] < cap ? wcount[i] : cap;
		assert_int_equal(count[i], len);
		for (size_t j = 0; j < len; j++) {
			assert_int_equal(idx[i * k + j], want[i * wcap + j].idx);
			assert_memory_equal(&sim[i * k + j], &want[i * wcap + j].sim, sizeof(float));
		}
	}
	assert_int_equal(fc_eval_knn_queries(&mq, per, q, ql, nq, x, il, ni, dim, k, exclude_self), 0);
	assert_memory_equal(&mq, m, sizeof mq);
	for (int j = 0; j < 9; j++) {
		double sum = 0.0;
		for (size_t i = 0; i < nq; i++)
			sum += per[i * 9 + j];
		assert_memory_equal(&(double){sum / (double)nq}, &(double){fc_metric_value(m, j)},
				    sizeof(double));
	}
	free(per);
	free(count);
	free(sim);
	free(idx);
}

static void check_against_reference(const float *q, const uint32_t *ql, size_t nq, const float *x,
				     const uint32_t *il, size_t ni, size_t dim, const size_t *ks,
				     size_t nks, int exclude_self)
{
	size_t maxk = 0, wcap;
	sim_kernel kern[3];
	size_t nkern = available_kernels(kern);
	hit *want;
	hitkey *got;
	size_t *wcount, *gcount;
	int threads = omp_get_max_threads();

	for (size_t i = 0; i < nks; i++)
		maxk = ks[i] > maxk ? ks[i] : maxk;
	wcap = cap_of(maxk, ni, exclude_self);
	if (wcap == 0)
		return;
	want = malloc(nq * wcap * sizeof(hit));
	got = malloc(nq * wcap * sizeof(hitkey));
	wcount = malloc(nq * sizeof(size_t));
	gcount = malloc(nq * sizeof(size_t));
	assert_non_null(want);
	assert_non_null(got);
	assert_non_null(wcount);
	assert_non_null(gcount);
	ref_knn(want, wcount, q, nq, x, ni, dim, wcap, exclude_self);

	for (size_t kk = 0; kk < nks; kk++) {
		size_t k = ks[kk], cap = cap_of(k, ni, exclude_self);
		double ref[9];
		fc_metrics m, m1;

		/* The scalar kernel (fmaf calls) only on the smaller sets. */
		size_t k0 = nq * ni * dim <= 257 * 257 * 5 ? 0 : 1;
		for (size_t ki = kk == 0 ? k0 : nkern - 1; ki < nkern; ki++) {
			memset(got, 0xee, nq * cap * sizeof(hitkey));
			assert_int_equal(knn_search(got, gcount, q, nq, x, ni, dim, cap, exclude_self,
						    kern[ki], NULL, NULL),
					 0);
			for (size_t i = 0; i < nq; i++) {
				size_t len = wcount[i] < cap ? wcount[i] : cap;
				assert_int_equal(gcount[i], len);
				for (size_t j = 0; j < len; j++) {
					const hit *w = want + i * wcap + j;
					uint32_t gidx = key_idx(got[i * cap + j]);
					float gsim = key_sim(got[i * cap + j]);
					if (gidx != w->idx || memcmp(&gsim, &w->sim, sizeof(float)))
						fail_msg("kernel %zux%zu nq %zu ni %zu dim %zu k %zu "
							 "self %d: query %zu rank %zu: got row %u "
							 "(%a), want row %u (%a)",
							 kern[ki].mr, kern[ki].nr, nq, ni, dim, k,
							 exclude_self, i, j, gidx, gsim, w->idx, w->sim);
				}
			}
		}

		/* Identical lists, so the library's means must be the reference's. */
		ref_mean_metrics(ref, want, wcount, wcap, cap, ql, nq, il, ni, exclude_self);
		assert_int_equal(fc_eval_knn(&m, q, ql, nq, x, il, ni, dim, k, exclude_self), 0);
		assert_metrics(&m, ref);
		assert_int_equal(m.queries, nq);
		assert_int_equal(m.k, cap);
		omp_set_num_threads(1);
		assert_int_equal(fc_eval_knn(&m1, q, ql, nq, x, il, ni, dim, k, exclude_self), 0);
		omp_set_num_threads(threads);
		assert_memory_equal(&m, &m1, sizeof m);
		check_public_lists(want, wcount, wcap, q, ql, nq, x, il, ni, dim, k, exclude_self, &m);
	}

	free(gcount);
	free(wcount);
	free(got);
	free(want);
}

static void test_brute_force(void **state)
{
	(void)state;
	const size_t sizes[] = {1, 255, 256, 257, 1000};
	/* 260 is past the end of the index for all but n = 1000 */
	const size_t ks[] = {5, 1, 20, 260}, nks = sizeof ks / sizeof ks[0];
	const size_t dims[] = {1, 5, 33, 257};

	for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
		for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
			size_t n = sizes[si], dim = dims[di], npool = n / 4 + 1;
			/* fmaf is a libm call in the reference and the scalar kernel:
			 * keep the big ones narrow (test_brute_force_wide has width) */
			if (n * dim > 257 * 33)
				continue;
			for (int kind = DATA_GAUSS; kind <= DATA_SMALL_INT; kind++) {
				float *pool = malloc(npool * dim * sizeof(float));
				float *x = malloc(n * dim * sizeof(float));
				float *q = malloc(n * dim * sizeof(float));
				uint32_t *lx = malloc(n * sizeof(uint32_t));
				uint32_t *lq = malloc(n * sizeof(uint32_t));
				size_t nq = n / 2 + 1;
				assert_non_null(pool);
				assert_non_null(x);
				assert_non_null(q);
				assert_non_null(lx);
				assert_non_null(lq);
				for (size_t i = 0; i < npool * dim; i++)
					pool[i] = rng_gauss();
				make_data(x, n, dim, kind, pool, npool);
				make_data(q, nq, dim, kind, pool, npool);
				for (size_t i = 0; i < n; i++) {
					lx[i] = (uint32_t)(testlib_rand() % 7);
					lq[i] = (uint32_t)(testlib_rand() % 8); /* 7 is nowhere */
				}
				check_against_reference(x, lx, n, x, lx, n, dim, ks, nks, 1);
				check_against_reference(x, lx, n, x, lx, n, dim, ks, nks, 0);
				check_against_reference(q, lq, nq, x, lx, n, dim, ks, nks, 0);
				free(lq);
				free(lx);
				free(q);
				free(x);
				free(pool);
			}
		}
	}
}

/* Wide vectors across the SIM_KC boundary, fewer rows. */
static void test_brute_force_wide(void **state)
{
	(void)state;
	const size_t dims[] = {255, 256, 257, 520};
	const size_t n = 150, npool = 30;

	for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
		size_t dim = dims[di];
		float *pool = malloc(npool * dim * sizeof(float));
		float *x = malloc(n * dim * sizeof(float));
		uint32_t *l = malloc(n * sizeof(uint32_t));
		assert_non_null(pool);
		assert_non_null(x);
		assert_non_null(l);
		for (size_t i = 0; i < npool * dim; i++)
			pool[i] = rng_gauss();
		make_data(x, n, dim, DATA_GAUSS, pool, npool);
		for (size_t i = 0; i < n; i++)
			l[i] = (uint32_t)(testlib_rand() % 11);
		check_against_reference(x, l, n, x, l, n, dim, (const size_t[]){20}, 1, 1);
		check_against_reference(x, l, 17, x, l, n, dim, (const size_t[]){7, 150}, 2, 0);
		free(l);
		free(x);
		free(pool);
	}
}

/* ------------------------------------------------------- performance */

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

#if defined(__SANITIZE_ADDRESS__)
#define PERF_N 600
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PERF_N 600
#endif
#endif
#ifndef PERF_N
#define PERF_N 20000
#endif

static void test_perf(void **state)
{
	(void)state;
	const char *env = getenv("FC_TEST_PERF_N");
	size_t n = env ? strtoull(env, NULL, 10) : PERF_N, dim = 2048, k = 20;
	int threads = omp_get_max_threads();
	float *x;
	uint32_t *l, s = 12345;
	fc_metrics m;
	double t;

	if (n == 0) {
		print_message("# perf: skipped (FC_TEST_PERF_N=0)\n");
		return;
	}
	x = malloc(n * dim * sizeof(float));
	l = malloc(n * sizeof(uint32_t));
	assert_non_null(x);
	assert_non_null(l);
	for (size_t i = 0; i < n * dim; i++) {
		s = s * 1664525u + 1013904223u;
		x[i] = (float)(s >> 8) * 0x1p-24f - 0.5f;
	}
	for (size_t i = 0; i < n; i++)
		l[i] = (uint32_t)(i % 100);
	omp_set_num_threads(2);
	t = now();
	assert_int_equal(fc_eval_knn(&m, x, l, n, x, l, n, dim, k, 1), 0);
	t = now() - t;
	omp_set_num_threads(threads);
	print_message("# perf: fc_eval_knn %zu x %zu, dim %zu, k %zu, 2 threads: %.2f s "
		      "(%.0f GFLOP/s in the similarities)\n",
		      n, n, dim, k, t, 2.0 * (double)n * (double)n * (double)dim / t * 1e-9);
	free(l);
	free(x);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names_and_get),
		cmocka_unit_test(test_metric_resolve),
		cmocka_unit_test(test_metric_list),
		cmocka_unit_test(test_metrics_json),
		cmocka_unit_test(test_bad_arguments),
		cmocka_unit_test(test_hand_ranking),
		cmocka_unit_test(test_hand_ties),
		cmocka_unit_test(test_hand_lists),
		cmocka_unit_test(test_hand_k_past_index),
		cmocka_unit_test(test_hand_exclude_self),
		cmocka_unit_test(test_docarray_fixture),
		cmocka_unit_test(test_kernels_bitwise),
		cmocka_unit_test(test_brute_force),
		cmocka_unit_test(test_brute_force_wide),
		cmocka_unit_test(test_perf),
	};

	testlib_seed("test_metrics");
	fflush(stdout);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
