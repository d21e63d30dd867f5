/*
 * metrics.h - retrieval metrics of cosine kNN (Finetuner/docarray
 * definitions), computed in blocks with a top-k heap per query.
 *
 * Conventions (llm.c style): row-major float matrices, batch first; a
 * backward accumulates into gradients and zeroing them is explicit; every
 * function returns 0 or a negative FC_ERR_*.
 */
#ifndef FEATCACHE_METRICS_H
#define FEATCACHE_METRICS_H

#include "featcache.h"
#include "rows.h"

#ifdef __cplusplus
extern "C" {
#endif

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
	size_t k;           /* the k used: k asked, or the number of candidates
	                     * (index rows, less the query itself with exclude_self)
	                     * when that is smaller; label metrics with this */
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

/* fc_eval_knn_queries - fc_eval_knn that also writes each query's own
 * metrics: queries_out (nq, 9) in fc_metric_names order (queries_out may be
 * NULL). Their mean over queries is *out. All zeros when nothing can be
 * retrieved. */
int fc_eval_knn_queries(fc_metrics *out, double *queries_out, const float *queries,
			const uint32_t *qlabels, size_t nq, const float *index, const uint32_t *ilabels,
			size_t ni, size_t dim, size_t k, int exclude_self);

/* fc_eval_knn_rows - fc_eval_knn_queries over rows kept in any type or
 * streamed (featcache/rows.h): queries (nq = qrows->n) and index (ni =
 * irows->n) of the same dim. They are converted to f32 a block at a time
 * while being normalised and packed, so the memory beyond the packed
 * copies is a block; the results are those of the f32 matrices. */
int fc_eval_knn_rows(fc_metrics *out, double *queries_out, const fc_rows *qrows, const uint32_t *qlabels,
		     const fc_rows *irows, const uint32_t *ilabels, size_t k, int exclude_self);

/* fc_knn - the neighbours themselves: for every query the top k index rows
 * by cosine similarity (the ranking fc_eval_knn scores, ties to the lower
 * row), best first. idx and sim (sim may be NULL) are (nq, k) row-major;
 * counts[q] is how many of the k slots hold a neighbour (k, or fewer when the
 * index has fewer candidates); slots past it are left as they were.
 * exclude_self as in fc_eval_knn. Memory O((nq + ni) * dim) beyond the
 * outputs. Same errors as fc_eval_knn. */
int fc_knn(uint32_t *idx, float *sim, size_t *counts, const float *queries, size_t nq,
	   const float *index, size_t ni, size_t dim, size_t k, int exclude_self);

/* fc_metric_names - the metric names as Finetuner prints them, in the order
 * of fc_metrics' fields: "precision_at_k", "recall_at_k", "f1_score_at_k",
 * "hit_at_k", "average_precision", "reciprocal_rank", "r_precision",
 * "dcg_at_k", "ndcg_at_k". A metric's index is its position here. */
extern const char *const fc_metric_names[9];

/* fc_metric_resolve - the one reading of a metric name, for every command
 * that takes one (train, sweep, report, eval): a name of fc_metric_names or
 * a short alias (precision, recall, f1, hit, map or ap, mrr, rprecision,
 * dcg, ndcg); case matters. Returns the metric's index (0..8) and sets
 * *canonical (when not NULL) to its Finetuner name; FC_ERR_INVALID (and
 * *canonical NULL) for an unknown name or NULL. */
int fc_metric_resolve(const char *name, const char **canonical);

/* fc_metric_list - the names fc_metric_resolve takes, for a message: each
 * Finetuner name with its short names in brackets ("precision_at_k
 * (precision), ..., average_precision (map, ap), ... or ndcg_at_k (ndcg)").
 * Writes at most dst_cap bytes, always NUL-terminated when dst_cap > 0 (dst
 * may be NULL with dst_cap 0), and returns the length of the whole list, as
 * snprintf does; FC_ERRLEN bytes always hold it. */
size_t fc_metric_list(char *dst, size_t dst_cap);

/* fc_metric_value / fc_metric_set - metric number index (0..8, see
 * fc_metric_names) of m; index must be in range. */
double fc_metric_value(const fc_metrics *m, int index);
void fc_metric_set(fc_metrics *m, int index, double value);

/* The nine metrics as a JSON object keyed by fc_metric_names, the form run
 * logs, checkpoints and `eval --json` share (jansson's json_t).
 * fc_metrics_to_json - a new object (NULL on out of memory), with "queries"
 * when with_queries is set. fc_metrics_from_json - m's metrics from j:
 * numbers as they are, absent or non-numeric values as NaN; j NULL leaves m
 * as it is. */
struct json_t;
struct json_t *fc_metrics_to_json(const fc_metrics *m, int with_queries);
void fc_metrics_from_json(fc_metrics *m, const struct json_t *j);

/* fc_metric_get - the metric named `name` (anything fc_metric_resolve
 * takes) of m. FC_ERR_INVALID for an unknown name or a NULL argument. */
int fc_metric_get(const fc_metrics *m, const char *name, double *value);

/* ---- what the report shows besides the metrics (views.c) ---- */

/* fc_metrics_by_class - the per-class means of per-query metric rows (as
 * fc_eval_knn_queries writes them, (nq, 9)): out (n_classes, 9), row c the
 * mean of the rows q with classes[q] == c, zeros for a class without
 * queries; counts (may be NULL) [n_classes] how many queries each has.
 * FC_ERR_INVALID for a class number >= n_classes or NULL arguments. */
int fc_metrics_by_class(double *out, size_t *counts, const double *per_query, const uint32_t *classes, size_t nq,
			size_t n_classes);

/* fc_knn_confusion - counts (n_classes, n_classes), zeroed first:
 * counts[a * n_classes + b] is how many neighbour slots of queries of class
 * a hold an index row of class b, over fc_knn's lists idx (nq, k) with
 * nn[q] slots used. qclasses[nq], iclasses[ni] are class numbers below
 * n_classes. FC_ERR_INVALID for a row or class out of range. */
int fc_knn_confusion(uint64_t *counts, const uint32_t *idx, const size_t *nn, size_t nq, size_t k,
		     const uint32_t *qclasses, const uint32_t *iclasses, size_t ni, size_t n_classes);

/* fc_pca2 - a 2-D map of n embeddings x (n, dim): the rows L2-normalised
 * (zero rows stay zero), centred on their mean, and projected on the first
 * two principal components of their covariance, into out (n, 2). The
 * components come from orthogonal iteration from a fixed-seed start (at
 * most 300 steps, until they move less than 1e-9), summed in a fixed order
 * whatever the thread count, each signed so that its largest entry (the
 * first of equal ones) is positive: the same input gives the same bytes.
 * explained (may be NULL) [2]: each component's share of the total
 * variance. When the rows span one direction the second coordinate is 0.
 * Returns 0, FC_ERR_INVALID (n or dim 0, NULL, non-finite input),
 * FC_ERR_OVERFLOW or FC_ERR_NOMEM. */
int fc_pca2(float *out, double *explained, const float *x, size_t n, size_t dim);

#ifdef __cplusplus
}
#endif
#endif /* FEATCACHE_METRICS_H */
