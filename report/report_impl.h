/*
 * report_impl.h - what the files of report/ share and nobody else sees:
 * the text buffer the page is built in (with HTML escaping), the charts
 * (svg.c), and the runs read from logs (runlog.c) as the page (page.c)
 * uses them.
 *
 * Private to report/: not API, names fci_.
 */
#ifndef FC_REPORT_IMPL_H
#define FC_REPORT_IMPL_H

#include <stddef.h>
#include <time.h>

#include "featcache/report.h"
#include "util/util.h"

#define FCI_NM 9          /* metrics, in fc_metric_names order */
#define FCI_MAX_LINES 10  /* runs drawn in the per-epoch charts; the rest are in the leaderboard */

/* ---- text buffer (svg.c) ---- */

/* A growing string; after a failed allocation oom is set and every later
 * append does nothing, so callers check once at the end. */
typedef struct fci_sbuf {
	char *p;
	size_t len, cap;
	int oom;
} fci_sbuf;

void fci_sb_putn(fci_sbuf *b, const char *s, size_t n);
void fci_sb_puts(fci_sbuf *b, const char *s);
void fci_sb_printf(fci_sbuf *b, const char *fmt, ...) FC_PRINTF(2, 3);

/* fci_sb_esc_n - s escaped for HTML text and attribute values (inline SVG
 * too); when max > 0, at most max characters, the last one an ellipsis
 * when cut. Control characters and broken UTF-8 become U+FFFD.
 * fci_sb_esc - the same, never cut. */
void fci_sb_esc_n(fci_sbuf *b, const char *s, size_t max);
void fci_sb_esc(fci_sbuf *b, const char *s);

/* fci_clip - snprintf for display text, where cutting a long value short
 * is fine. */
void fci_clip(char *buf, size_t cap, const char *fmt, ...) FC_PRINTF(3, 4);

/* fci_metric_label - "mAP@20", "MRR": how metric m is named on the page. */
const char *fci_metric_label(char *buf, size_t cap, int m, long k);

/* ---- charts (svg.c) ---- */

/* The line colours, best run first, and the fixed ones. */
extern const char *const fci_palette[FCI_MAX_LINES];
#define FCI_C_BEFORE "#6b7280"
#define FCI_C_AFTER "#1f6fb4"
#define FCI_C_BEST "#e07b00"

/* An axis: linear, log (ticks at powers of ten) or categorical. */
typedef struct fci_axis {
	double lo, hi, step;
	int log;
	size_t n_cat; /* categorical when > 0: values are 0..n_cat-1 */
	double ticks[48];
	size_t n_ticks;
} fci_axis;

/* fci_axis_linear - nice round bounds and ticks around [lo, hi] (integer
 * steps only when integer); fci_axis_log - decades around [lo, hi], lo > 0. */
void fci_axis_linear(fci_axis *a, double lo, double hi, int integer);
void fci_axis_log(fci_axis *a, double lo, double hi);

/* One line of a per-epoch chart. */
typedef struct fci_series {
	char name[256];
	double *x, *y;
	size_t n;
	const char *color;
	int dashed; /* a reference level: y[0] across the whole plot */
} fci_series;

/* fci_chart_lines - a line per series over epochs, the legend below.
 * fci_chart_scatter - y[i] against x[i] on axis xa (cats names its
 * categories), point `best` highlighted, `before` (if finite) as a dashed
 * level, tips[i] as each point's tooltip.
 * fci_chart_bars - all metrics, before against after. */
void fci_chart_lines(fci_sbuf *b, const char *id, const char *title, const char *subtitle, const char *xlabel,
		     const char *ylabel, const fci_series *s, size_t ns);
void fci_chart_scatter(fci_sbuf *b, const char *id, const char *title, const char *xlabel, const char *ylabel,
		       const fci_axis *xa, const char *const *cats, const double *x, const double *y,
		       char (*tips)[256], size_t n, size_t best, double before);
void fci_chart_bars(fci_sbuf *b, const char *id, const char *title, const double *before, const double *after,
		    const char *after_name, long k);

/* ---- pictures of what the head learned (gallery.c) ---- */

/* The CSS the views need, and the views drawn after the charts: the
 * galleries, the per-class table, the map. Returns the charts drawn (the
 * map). */
extern const char fci_views_css[];
size_t fci_views_render(fci_sbuf *b, const fc_views *v);

/* ---- runs read from logs (runlog.c) ---- */

typedef struct fci_source {
	char *path; /* the file read */
	int sweep;
	time_t mtime;
} fci_source;

/* Everything one report is made of. err[errcap] receives the message of a
 * failure (errcap 0: none). */
typedef struct fci_report {
	fc_run *runs;
	size_t n, cap;
	fci_source *src;
	size_t n_src;
	int metric;        /* the chosen metric's index */
	long k;
	size_t *order;     /* runs by the chosen metric at their best epoch, best first */
	const char **keys; /* the swept parameters */
	size_t n_keys;
	int sweep, multi;
	char *err;
	size_t errcap;
} fci_report;

/* fci_runlog_load - the runs of path (a training log, a sweep's
 * results.jsonl, or a sweep directory) appended to r, and path to its
 * sources. Returns 0 or a negative FC_ERR_* with r->err set. */
int fci_runlog_load(fci_report *r, const char *path);

/* fci_base_name - the last component of path ("x" for "a/b/x"). */
const char *fci_base_name(const char *path);

#endif /* FC_REPORT_IMPL_H */
