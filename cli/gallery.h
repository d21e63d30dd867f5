/*
 * gallery.h - what the report shows about a head besides its charts,
 * computed from the store: the eval split's features raw and through the
 * head, neighbour lists and per-query metrics (train/'s fc_knn and
 * fc_eval_knn_queries), per-class means and confused pairs, the 2-D map,
 * and thumbnails of the images the items point at. The result is the
 * plain data report/ draws (featcache/report.h: fc_views).
 *
 * Command-line layer only; messages and exit codes as cli.h.
 */
#ifndef CLI_GALLERY_H
#define CLI_GALLERY_H

#include <stdint.h>

#include "featcache/report.h"
#include "featcache/store.h"

/* The defaults (README, report section). */
#define CLI_VIEWS_QUERIES 12      /* the seeded sample; 4 improved and 4 hurt most come on top */
#define CLI_VIEWS_EXTREMES 4
#define CLI_VIEWS_NEIGHBOURS 8
#define CLI_VIEWS_MAP_POINTS 5000
#define CLI_VIEWS_THUMB_SIDE 96   /* the long side of a thumbnail; 64 when over the budget */
#define CLI_VIEWS_THUMB_BUDGET 2400000 /* bytes of thumbnails (base64) on one page */

typedef struct cli_views_opts {
	const char *store, *head, *extractor;
	const char *split;       /* the queries (NULL: the head's eval split, else val) */
	const char *index_split; /* where they are searched (NULL: the split itself) */
	const char *data;        /* where the images are (NULL: the store's record) */
	uint64_t k;              /* metrics at k (0: the head's, else 20) */
	uint64_t queries, neighbours, seed;
} cli_views_opts;

/* cli_views_opts_init - the defaults above, seed 0, everything else NULL. */
void cli_views_opts_init(cli_views_opts *o);

typedef struct cli_views cli_views;

/* cli_views_build - the views of o's head on o's store; *out (free with
 * cli_views_free) holds them as fc_views (cli_views_get). Images that
 * cannot be read become placeholders, never a failure. Returns 0 or an
 * exit code after printing why. */
int cli_views_build(cli_views **out, const char *cmd, const cli_views_opts *o);
const fc_views *cli_views_get(const cli_views *v);
void cli_views_free(cli_views *v);

/* cli_views_report - the report of the log at src (or NULL: the views
 * alone) with the views of o into html, and a line saying where; quiet
 * leaves the line out. Returns 0 or an exit code. */
int cli_views_report(const char *html, const char *const *src, size_t n_src, const char *metric,
		     const char *title, const cli_views_opts *o, int quiet);

#endif /* CLI_GALLERY_H */
