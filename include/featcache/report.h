/*
 * report.h - run logs and the HTML report made from them.
 *
 * Run logs have one schema, written and read only here (report/runlog.c):
 *
 *   training log (HEAD.safetensors.jsonl), JSON lines:
 *     {"config": {...}, "before": METRICS}        first, when the run is evaluated
 *     {"epoch", "steps", "loss", "lr", "seconds", "samples_per_s", "active",
 *      "best": true when this epoch's head is the best so far,
 *      "metrics": METRICS (evaluated runs)}        one per epoch
 *   sweep results (DIR/results.jsonl), one line per finished configuration:
 *     {"id", "config", "swept", "before": METRICS or {},
 *      "epochs": [{"epoch", "loss", "lr", "seconds", "metrics"}],
 *      "best_epoch", "best": METRICS or {}, "seconds", "error" (when it failed)}
 *
 * METRICS is fc_metrics_to_json's object (metrics.h). The report is one
 * self-contained page (inline CSS, inline SVG charts drawn by featcache, no
 * network, no charting library) of any number of such logs, and of the
 * views of a head the caller computed (fc_views: galleries with thumbnails
 * as data URIs, a per-class table, an embedding map).
 *
 * Nothing here prints: failures come back as FC_ERR_* with a message in the
 * caller's err[errcap] (err may be NULL), in the house format.
 */
#ifndef FC_REPORT_H
#define FC_REPORT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "featcache/metrics.h"
#include "featcache/trainer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- writing run logs ---- */

/* fc_runlog_append - line as one compact JSON line appended to path
 * (created when missing). With sync the line goes out in a single write and
 * is fsync'd before this returns. */
int fc_runlog_append(const char *path, json_t *line, int sync, char *err, size_t errcap);

/* fc_runlog_start - a training log afresh: path is removed and gets its
 * header line with config (the run's options, any JSON object) and, when
 * before is not NULL (the run is evaluated), the raw features' metrics. */
int fc_runlog_start(const char *path, json_t *config, const fc_metrics *before, char *err, size_t errcap);

/* fc_runlog_reconfig - a resumed run's log gets config (a run extended by
 * resume has another epoch count) in its header line, the rest of the log
 * as it was (rewritten atomically; nothing written when the header already
 * holds config). A log without a header gets one; a missing log is created
 * with just the header. */
int fc_runlog_reconfig(const char *path, json_t *config, char *err, size_t errcap);

/* fc_runlog_epoch - a training log's line for epoch st; best: this epoch's
 * head is the best so far; m: its metrics (NULL: not evaluated). */
int fc_runlog_epoch(const char *path, const fc_epoch_stats *st, int best, const fc_metrics *m, char *err,
		    size_t errcap);

/* fc_runlog_result_epoch - one entry of a sweep result's "epochs": epoch,
 * loss and lr of st, `seconds` (what the epoch cost the sweep), m (NULL:
 * not evaluated). A new object; NULL on out of memory. */
json_t *fc_runlog_result_epoch(const fc_epoch_stats *st, double seconds, const fc_metrics *m);

/* One configuration's line of a sweep's results.jsonl. */
typedef struct fc_runlog_result {
	const char *id;
	json_t *config, *swept;   /* objects, not stolen */
	const fc_metrics *before; /* NULL: not evaluated */
	json_t *epochs;           /* fc_runlog_result_epoch's, not stolen */
	uint32_t best_epoch;      /* 0: no epoch finished */
	const fc_metrics *best;   /* NULL: not evaluated or no epoch */
	double seconds;
	const char *error;        /* why it failed, or NULL */
} fc_runlog_result;

/* fc_runlog_result_line - res as its results line (a new object; NULL on
 * out of memory), for fc_runlog_append. */
json_t *fc_runlog_result_line(const fc_runlog_result *res);

/* ---- reading run logs ---- */

/* One epoch as a log gives it; NaN where it says nothing. */
typedef struct fc_run_epoch {
	double epoch, loss, lr, seconds;
	double m[9]; /* fc_metric_names order */
} fc_run_epoch;

/* One trained head as read back: a training log or a sweep's configuration. */
typedef struct fc_run {
	char *id;
	json_t *config, *swept;     /* objects or NULL */
	double before[9], best[9];  /* NaN where the log has none */
	fc_run_epoch *ep;           /* sorted by epoch, one entry per epoch */
	size_t n_ep, cap_ep;
	double best_epoch;          /* NaN when the log does not say */
	double seconds;             /* NaN when the log does not say */
	int failed;                 /* a sweep result that says "error" */
} fc_run;

/* fc_run_init - an empty run (every number NaN); fc_run_free releases what
 * it holds (accepts NULL) and leaves it empty. */
void fc_run_init(fc_run *run);
void fc_run_free(fc_run *run);

/* fc_run_from_result - run (initialised) from one line of a sweep's
 * results.jsonl; id stays NULL when the line has none. FC_ERR_CORRUPT with
 * what is wrong in err ("\"epochs\" has the wrong type"), or FC_ERR_NOMEM. */
int fc_run_from_result(fc_run *run, const json_t *line, char *err, size_t errcap);

/* ---- the report ---- */

/* fc_report_write - read every path and write the report to `out`.
 *
 * paths[i] is a training log (HEAD.safetensors.jsonl), a sweep's
 * results.jsonl, or a sweep directory holding results.jsonl; all of them go
 * into one report. `metric` picks the metric the charts and the leaderboard
 * use (any name fc_metric_resolve takes; NULL: average_precision); `title`
 * is the page title (NULL: made from what was read). The page goes to `out`
 * whole or not at all (util's atomic output file).
 *
 * Returns 0 on success; otherwise a negative FC_ERR_* (FC_ERR_INVALID for a
 * bad metric or no paths, FC_ERR_NOT_FOUND / FC_ERR_IO for unreadable or
 * unwritable files, FC_ERR_CORRUPT for malformed or foreign logs,
 * FC_ERR_NOMEM) with a message such as
 *     cannot read log 'h.jsonl': line 3: malformed JSON: ...
 * in err (errcap bytes, always terminated; err may be NULL when errcap
 * is 0). If charts is not NULL it receives the number of charts drawn. */
int fc_report_write(const char *out, const char *const *paths, size_t n, const char *metric, const char *title,
		    size_t *charts, char *err, size_t errcap);

/* ---- what the head learned, in pictures (report/gallery.c) ----
 *
 * Plain data made by the caller (featcache's cli/gallery.c: features from
 * the store, the head applied, neighbours from fc_knn, per-query metrics
 * from fc_eval_knn_queries, thumbnails from fc_image_thumbnail, the map
 * from fc_pca2); the report only draws it. Index [0] is the raw features,
 * [1] the head, everywhere. Nothing is copied: it must live until the page
 * is written. */

/* One item shown: a query, a neighbour or both. */
typedef struct fc_view_item {
	const char *key;      /* item key (dataset-relative path) */
	const char *label;    /* its label name */
	uint32_t cls;         /* its class: a neighbour is "same class" when equal to the query's */
	const uint8_t *jpeg;  /* the thumbnail (JPEG bytes), or NULL: a placeholder with the key */
	size_t jpeg_len;
	int w, h;             /* the thumbnail's size in pixels */
	const char *missing;  /* without a thumbnail: why (shown in the placeholder), or NULL */
} fc_view_item;

/* One query of the galleries with its neighbours, raw and head. */
typedef struct fc_view_query {
	uint32_t item;         /* index into fc_views.items */
	const char *why;       /* why it is shown: "sample", "improved most", "hurt most" */
	double ap[2];          /* its average precision at fc_views.k */
	size_t n[2];           /* neighbours shown */
	const uint32_t *nb[2]; /* indices into fc_views.items, best first */
	const float *sim[2];   /* their cosine similarities */
} fc_view_query;

/* One class of the per-class table. */
typedef struct fc_view_class {
	const char *label;
	size_t queries;
	double precision[2], ap[2]; /* precision@k and mAP@k */
} fc_view_class;

/* Two classes the neighbours confuse: how many of all wrong neighbours
 * (a neighbour of another class than its query's) fall between them,
 * either way round, as a share. */
typedef struct fc_view_pair {
	const char *a, *b;
	double share[2];
} fc_view_pair;

typedef struct fc_views {
	const char *store, *head, *split; /* where it comes from, for the page's text */
	size_t k;                         /* the k of the per-query and per-class metrics */
	size_t neighbours;                /* the k of the galleries */
	const fc_view_item *items;
	size_t n_items;
	const fc_view_query *queries;     /* none: no galleries (see note) */
	size_t n_queries;
	const char *note;                 /* shown above the galleries (why pictures are missing or
	                                   * fewer), or NULL */
	const fc_view_class *classes;     /* in the order shown (by gain) */
	size_t n_classes;
	const fc_view_pair *pairs;        /* the most confused first */
	size_t n_pairs;
	/* The map: n_points embeddings (a sample of map_total when more), their
	 * 2-D coordinates xy[0], xy[1] (n_points, 2), class numbers into
	 * class_names, keys; explained[i]: the share of variance of each axis. */
	size_t n_points, map_total;
	const float *xy[2];
	const uint32_t *point_class;
	const char *const *point_key;
	const char *const *class_names;
	size_t n_class_names;
	double explained[2][2];
} fc_views;

/* fc_report_write_views - fc_report_write with views (NULL: none) drawn
 * after the charts: the galleries, the per-class table and the map. With
 * views, n may be 0: a page of the views alone. charts counts the map. */
int fc_report_write_views(const char *out, const char *const *paths, size_t n, const char *metric,
			  const char *title, const fc_views *views, size_t *charts, char *err, size_t errcap);

#ifdef __cplusplus
}
#endif
#endif /* FC_REPORT_H */
