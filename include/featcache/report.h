/*
 * report.h - the HTML report of training runs and sweeps: one self-contained
 * page (inline CSS, inline SVG charts drawn by featcache, no network, no
 * charting library) from the JSON-lines logs that `featcache train` and
 * `featcache sweep` write. `featcache report` is the command; other commands
 * (sweep) may call fc_report_write when they finish.
 *
 * This is command-line code, not libfeatcache: it never prints, and reports
 * what went wrong in the caller's buffer in the house message format.
 */
#ifndef FC_REPORT_H
#define FC_REPORT_H

#include <stddef.h>

/* fc_report_metric_index - the position (0..8, in fc_metric_names order) of
 * a metric given by its Finetuner name (average_precision, ndcg_at_k, ...)
 * or a short name (map, precision, recall, ndcg, mrr, f1, hit, dcg, ap,
 * rprecision). Returns -1 when the name is unknown or NULL. */
int fc_report_metric_index(const char *name);

/* fc_report_write - read every path and write the report to `out`.
 *
 * paths[i] is a training log (HEAD.safetensors.jsonl), a sweep's
 * results.jsonl, or a sweep directory holding results.jsonl; all of them go
 * into one report. `metric` picks the metric the charts and the leaderboard
 * use (NULL: average_precision); `title` is the page title (NULL: made from
 * what was read). The page is written to a temporary file beside `out` and
 * renamed over it, so `out` is either the old file or the whole new one.
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

#endif /* FC_REPORT_H */
