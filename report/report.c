/*
 * report.c - `featcache report`'s engine: reads training logs and sweep
 * results (JSON lines), and writes one HTML page with inline CSS and SVG
 * charts it draws itself: loss and the chosen metric per epoch, raw
 * features against the head for all nine metrics, the metric against every
 * swept parameter, a leaderboard and the configuration.
 *
 * It is not a plotting library: the axes, ticks and legends know only what
 * these charts need. The only script on the page is a few lines that check,
 * after load, that every chart has visible marks and say so in
 * #render-check; the page reads the same without it. Every string from a
 * log (config values, ids, paths) is HTML-escaped on the way out.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "featcache/report.h"
#include "featcache/train.h"

#define NM 9          /* metrics, in fc_metric_names order */
#define MAX_LINES 10  /* runs drawn in the per-epoch charts; the rest are in the leaderboard */
#define SVG_W 960     /* every chart's width in user units */

/* ------------------------------------------------------------ text buffer */

typedef struct sbuf {
	char *p;
	size_t len, cap;
	int oom;
} sbuf;

static void sb_putn(sbuf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (n > SIZE_MAX / 4 - b->len) {
		b->oom = 1;
		return;
	}
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 8192;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p) {
			b->oom = 1;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void sb_puts(sbuf *b, const char *s)
{
	sb_putn(b, s, strlen(s));
}

static void sb_printf(sbuf *b, const char *fmt, ...) CLI_PRINTF(2, 3);

static void sb_printf(sbuf *b, const char *fmt, ...)
{
	char small[512];
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof small, fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->oom = 1;
		return;
	}
	if ((size_t)n < sizeof small) {
		sb_putn(b, small, (size_t)n);
		return;
	}
	char *big = malloc((size_t)n + 1);
	if (!big) {
		b->oom = 1;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	sb_putn(b, big, (size_t)n);
	free(big);
}

/* Length of the UTF-8 sequence at p, or 0 when it is not a valid one. */
static size_t utf8_len(const unsigned char *p)
{
	size_t n = p[0] < 0x80 ? 1 : p[0] >= 0xc2 && p[0] <= 0xdf ? 2 : p[0] >= 0xe0 && p[0] <= 0xef ? 3
		 : p[0] >= 0xf0 && p[0] <= 0xf4 ? 4 : 0;
	for (size_t i = 1; i < n; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	return n;
}

static size_t utf8_chars(const char *s)
{
	size_t n = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p; n++) {
		size_t l = utf8_len(p);
		p += l ? l : 1;
	}
	return n;
}

/* Append s escaped for HTML text and attribute values (inline SVG too);
 * when max > 0, at most max characters, the last one an ellipsis when cut.
 * Control characters and broken UTF-8 become U+FFFD. */
static void sb_esc_n(sbuf *b, const char *s, size_t max)
{
	size_t left = max && utf8_chars(s) > max ? max - 1 : SIZE_MAX;
	const unsigned char *p = (const unsigned char *)s;

	while (*p && left--) {
		size_t l = utf8_len(p);
		switch (*p) {
		case '&': sb_puts(b, "&amp;"); break;
		case '<': sb_puts(b, "&lt;"); break;
		case '>': sb_puts(b, "&gt;"); break;
		case '"': sb_puts(b, "&quot;"); break;
		case '\'': sb_puts(b, "&#39;"); break;
		default:
			if (l == 0 || (*p < 0x20 && *p != '\t' && *p != '\n') || *p == 0x7f)
				sb_puts(b, "&#xFFFD;");
			else
				sb_putn(b, (const char *)p, l);
		}
		p += l ? l : 1;
	}
	if (*p)
		sb_puts(b, "&#x2026;");
}

static void sb_esc(sbuf *b, const char *s)
{
	sb_esc_n(b, s, 0);
}

/* snprintf for display text, where cutting a long value short is fine. */
static void clip(char *buf, size_t cap, const char *fmt, ...) CLI_PRINTF(3, 4);

static void clip(char *buf, size_t cap, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (vsnprintf(buf, cap, fmt, ap) < 0)
		buf[0] = '\0';
	va_end(ap);
}

/* ---------------------------------------------------------------- metrics */

static const char *const metric_label[NM] = { "precision", "recall", "F1", "hit", "mAP", "MRR", "R-precision",
					      "DCG", "nDCG" };
static const int metric_at_k[NM] = { 1, 1, 1, 1, 1, 0, 0, 1, 1 };

int fc_report_metric_index(const char *name)
{
	static const struct {
		const char *name;
		int idx;
	} alias[] = {
		{ "precision", 0 }, { "recall", 1 }, { "f1", 2 },	  { "hit", 3 },  { "map", 4 },
		{ "ap", 4 },	    { "mrr", 5 },    { "rprecision", 6 }, { "dcg", 7 },	 { "ndcg", 8 },
	};
	if (!name)
		return -1;
	for (int i = 0; i < NM; i++)
		if (strcmp(name, fc_metric_names[i]) == 0)
			return i;
	for (size_t i = 0; i < sizeof alias / sizeof alias[0]; i++)
		if (strcmp(name, alias[i].name) == 0)
			return alias[i].idx;
	return -1;
}

/* "mAP@20", "MRR": how a metric is named on the page. */
static const char *metric_name(char *buf, size_t cap, int m, long k)
{
	if (metric_at_k[m] && k > 0)
		clip(buf, cap, "%s@%ld", metric_label[m], k);
	else
		clip(buf, cap, "%s", metric_label[m]);
	return buf;
}

/* ------------------------------------------------------------------- runs */

typedef struct rp_epoch {
	double epoch, loss, lr, seconds;
	double m[NM];
} rp_epoch;

/* One trained head: a training log, or one configuration of a sweep. */
typedef struct rp_run {
	char *id;
	json_t *config, *swept; /* objects or NULL */
	double before[NM], best[NM];
	rp_epoch *ep; /* sorted by epoch, one entry per epoch */
	size_t n_ep, cap_ep;
	double best_epoch; /* NAN when the log does not say */
	double seconds;
	double score; /* the chosen metric at the best epoch */
	size_t src;
} rp_run;

typedef struct rp_source {
	char *path; /* the file read */
	int sweep;
	time_t mtime;
} rp_source;

typedef struct report {
	rp_run *runs;
	size_t n, cap;
	rp_source *src;
	size_t n_src;
	int metric;
	long k;
	size_t *order; /* runs by score, best first */
	const char **keys; /* the swept parameters */
	size_t n_keys;
	int sweep, multi;
	char *err;
	size_t errcap;
} report;

static int fail(report *r, int code, const char *fmt, ...) CLI_PRINTF(3, 4);

static int fail(report *r, int code, const char *fmt, ...)
{
	if (r->errcap) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(r->err, r->errcap, fmt, ap);
		va_end(ap);
	}
	return code;
}

static double num(const json_t *j)
{
	return json_is_number(j) ? json_number_value(j) : NAN;
}

static void metrics_read(double m[NM], const json_t *j)
{
	for (int i = 0; i < NM; i++)
		m[i] = num(json_object_get(j, fc_metric_names[i]));
}

static void metrics_nan(double m[NM])
{
	for (int i = 0; i < NM; i++)
		m[i] = NAN;
}

static rp_run *run_new(report *r, size_t src)
{
	if (r->n == r->cap) {
		size_t cap = r->cap ? 2 * r->cap : 16;
		rp_run *p = realloc(r->runs, cap * sizeof *p);
		if (!p)
			return NULL;
		r->runs = p;
		r->cap = cap;
	}
	rp_run *run = &r->runs[r->n++];
	memset(run, 0, sizeof *run);
	metrics_nan(run->before);
	metrics_nan(run->best);
	run->best_epoch = NAN;
	run->seconds = NAN;
	run->score = NAN;
	run->src = src;
	return run;
}

static void run_free(rp_run *run)
{
	free(run->id);
	json_decref(run->config);
	json_decref(run->swept);
	free(run->ep);
}

/* The entry for epoch e, added in order; a repeated epoch (a run killed
 * after its log line and before its checkpoint repeats that epoch when it
 * resumes) is replaced by the later line. NULL on out of memory. */
static rp_epoch *run_epoch(rp_run *run, double e)
{
	size_t i = run->n_ep;
	while (i > 0 && run->ep[i - 1].epoch > e)
		i--;
	if (i > 0 && run->ep[i - 1].epoch == e)
		return &run->ep[i - 1];
	if (run->n_ep == run->cap_ep) {
		size_t cap = run->cap_ep ? 2 * run->cap_ep : 16;
		rp_epoch *p = realloc(run->ep, cap * sizeof *p);
		if (!p)
			return NULL;
		run->ep = p;
		run->cap_ep = cap;
	}
	memmove(&run->ep[i + 1], &run->ep[i], (run->n_ep - i) * sizeof *run->ep);
	run->n_ep++;
	rp_epoch *p = &run->ep[i];
	p->epoch = e;
	return p;
}

static void epoch_read(rp_epoch *p, const json_t *j)
{
	p->loss = num(json_object_get(j, "loss"));
	p->lr = num(json_object_get(j, "lr"));
	p->seconds = num(json_object_get(j, "seconds"));
	metrics_read(p->m, json_object_get(j, "metrics"));
}

/* Python's json module writes NaN and Infinity, which are not JSON; read
 * them as null (a missing value) rather than refuse the file. Returns a
 * new string (NULL on out of memory). */
static char *denan(const char *s, size_t len)
{
	char *out = malloc(len * 2 + 1), *o = out;
	int in_str = 0;
	if (!out)
		return NULL;
	for (size_t i = 0; i < len;) {
		char c = s[i];
		if (in_str) {
			*o++ = c;
			i++;
			if (c == '\\' && i < len)
				*o++ = s[i++];
			else if (c == '"')
				in_str = 0;
			continue;
		}
		size_t skip = strncmp(s + i, "NaN", 3) == 0		? 3
			      : strncmp(s + i, "-Infinity", 9) == 0 ? 9
			      : strncmp(s + i, "Infinity", 8) == 0  ? 8
								    : 0;
		if (skip) {
			memcpy(o, "null", 4);
			o += 4;
			i += skip;
			continue;
		}
		in_str = c == '"';
		*o++ = c;
		i++;
	}
	*o = '\0';
	return out;
}

static const char *base_name(const char *path)
{
	const char *s = strrchr(path, '/');
	return s && s[1] ? s + 1 : path;
}

static char *str_dup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = malloc(n);
	return p ? memcpy(p, s, n) : NULL;
}

/* A training log line: the header {"config", "before"} or an epoch. */
static int train_line(report *r, rp_run *run, const char *path, size_t line, json_t *j)
{
	json_t *cfg = json_object_get(j, "config"), *ep = json_object_get(j, "epoch");
	if (cfg || json_object_get(j, "before")) {
		if (run->config || run->n_ep)
			return fail(r, FC_ERR_CORRUPT,
				    "cannot read log '%s': line %zu: a second header line (two runs in one log?)", path,
				    line);
		if (cfg && !json_is_object(cfg))
			return fail(r, FC_ERR_CORRUPT, "cannot read log '%s': line %zu: \"config\" is not an object",
				    path, line);
		run->config = json_incref(cfg);
		metrics_read(run->before, json_object_get(j, "before"));
		return 0;
	}
	if (!ep)
		return fail(r, FC_ERR_CORRUPT,
			    "cannot read log '%s': line %zu: not a featcache training log line (no \"config\" or "
			    "\"epoch\")",
			    path, line);
	if (!json_is_integer(ep) || json_integer_value(ep) < 0 || json_integer_value(ep) > 100000000)
		return fail(r, FC_ERR_CORRUPT, "cannot read log '%s': line %zu: \"epoch\" is not an epoch number",
			    path, line);
	double e = (double)json_integer_value(ep);
	rp_epoch *p = run_epoch(run, e);
	if (!p)
		return fail(r, FC_ERR_NOMEM, "out of memory");
	epoch_read(p, j);
	if (json_is_true(json_object_get(j, "best")))
		run->best_epoch = e;
	return 0;
}

/* A sweep results line: one configuration with all its epochs. */
static int sweep_line(report *r, size_t src, const char *path, size_t line, json_t *j)
{
	json_t *cfg = json_object_get(j, "config"), *swept = json_object_get(j, "swept");
	json_t *epochs = json_object_get(j, "epochs"), *id = json_object_get(j, "id");
	json_t *best = json_object_get(j, "best");

	if (!epochs && !best && !cfg)
		return fail(r, FC_ERR_CORRUPT,
			    "cannot read sweep '%s': line %zu: not a featcache sweep result (no \"config\", \"epochs\" "
			    "or \"best\")",
			    path, line);
	const char *bad = cfg && !json_is_object(cfg)		? "config"
			  : swept && !json_is_object(swept)	? "swept"
			  : epochs && !json_is_array(epochs)	? "epochs"
			  : best && !json_is_object(best)	? "best"
			  : id && !json_is_string(id)		? "id"
								: NULL;
	if (bad)
		return fail(r, FC_ERR_CORRUPT, "cannot read sweep '%s': line %zu: \"%s\" has the wrong type", path,
			    line, bad);
	rp_run *run = run_new(r, src);
	if (!run)
		return fail(r, FC_ERR_NOMEM, "out of memory");
	char idbuf[32];
	clip(idbuf, sizeof idbuf, "line %zu", line);
	run->id = str_dup(id ? json_string_value(id) : idbuf);
	if (!run->id)
		return fail(r, FC_ERR_NOMEM, "out of memory");
	run->config = json_incref(cfg);
	run->swept = json_incref(swept);
	metrics_read(run->before, json_object_get(j, "before"));
	size_t i;
	json_t *e;
	json_array_foreach(epochs, i, e) {
		json_t *n = json_object_get(e, "epoch");
		if (!json_is_object(e) || (n && (!json_is_integer(n) || json_integer_value(n) < 0)))
			return fail(r, FC_ERR_CORRUPT, "cannot read sweep '%s': line %zu: epoch %zu is malformed", path,
				    line, i + 1);
		rp_epoch *p = run_epoch(run, n ? (double)json_integer_value(n) : (double)(i + 1));
		if (!p)
			return fail(r, FC_ERR_NOMEM, "out of memory");
		epoch_read(p, e);
	}
	run->best_epoch = num(json_object_get(j, "best_epoch"));
	if (best)
		metrics_read(run->best, best);
	run->seconds = num(json_object_get(j, "seconds"));
	return 0;
}

/* What kind of file the first line says this is: 1 training log, 2 sweep
 * results, 0 neither. */
static int line_kind(const json_t *j)
{
	if (json_object_get(j, "epochs") || json_object_get(j, "swept") || json_object_get(j, "best_epoch") ||
	    json_object_get(j, "id"))
		return 2;
	if (json_object_get(j, "config") || json_object_get(j, "before") || json_object_get(j, "epoch"))
		return 1;
	return 0;
}

static int load_file(report *r, const char *path, int want_sweep)
{
	FILE *f = NULL;
	char *line = NULL, *text = NULL;
	size_t cap = 0, lineno = 0;
	ssize_t len;
	int rc = 0, kind = 0;
	struct stat st;
	const char *what = want_sweep ? "sweep" : "log";

	rp_source *s = realloc(r->src, (r->n_src + 1) * sizeof *s);
	if (!s)
		return fail(r, FC_ERR_NOMEM, "out of memory");
	r->src = s;
	s = &r->src[r->n_src];
	memset(s, 0, sizeof *s);
	if (!(s->path = str_dup(path)))
		return fail(r, FC_ERR_NOMEM, "out of memory");
	size_t si = r->n_src++;

	f = fopen(path, "r");
	if (!f) {
		int e = errno;
		return fail(r, e == ENOENT ? FC_ERR_NOT_FOUND : FC_ERR_IO, "cannot read %s '%s': %s", what, path,
			    cli_errno_str(e));
	}
	if (fstat(fileno(f), &st) == 0)
		s->mtime = st.st_mtime;
	while ((len = getline(&line, &cap, f)) != -1) {
		lineno++;
		size_t blank = strspn(line, " \t\r\n");
		if ((ssize_t)blank == len)
			continue;
		free(text);
		if (!(text = denan(line, (size_t)len))) {
			rc = fail(r, FC_ERR_NOMEM, "out of memory");
			goto out;
		}
		json_error_t je;
		json_t *j = json_loads(text, 0, &je);
		if (!j) {
			rc = fail(r, FC_ERR_CORRUPT, "cannot read %s '%s': line %zu: malformed JSON: %s (column %d)", what,
				  path, lineno, je.text, je.column);
			goto out;
		}
		if (!json_is_object(j)) {
			json_decref(j);
			rc = fail(r, FC_ERR_CORRUPT, "cannot read %s '%s': line %zu: not a JSON object", what, path,
				  lineno);
			goto out;
		}
		if (kind == 0) {
			kind = line_kind(j);
			if (kind == 0) {
				json_decref(j);
				rc = fail(r, FC_ERR_CORRUPT,
					  "'%s' is not a featcache training log or sweep results: line %zu has none of "
					  "\"config\", \"epoch\", \"epochs\"",
					  path, lineno);
				goto out;
			}
			what = kind == 2 ? "sweep" : "log";
			s->sweep = kind == 2;
			rp_run *run = kind == 1 ? run_new(r, si) : NULL;
			if (kind == 1 && (!run || !(run->id = str_dup(base_name(path))))) {
				json_decref(j);
				rc = fail(r, FC_ERR_NOMEM, "out of memory");
				goto out;
			}
			/* "h.safetensors.jsonl" names the head h.safetensors. */
			size_t n = run ? strlen(run->id) : 0;
			if (n > 6 && strcmp(run->id + n - 6, ".jsonl") == 0)
				run->id[n - 6] = '\0';
		}
		/* A training log is one run, the last one added. */
		rc = kind == 1 ? train_line(r, &r->runs[r->n - 1], path, lineno, j) : sweep_line(r, si, path, lineno, j);
		json_decref(j);
		if (rc)
			goto out;
	}
	if (ferror(f)) {
		rc = fail(r, FC_ERR_IO, "cannot read %s '%s': %s", what, path, cli_errno_str(errno));
		goto out;
	}
	if (kind == 0)
		rc = fail(r, FC_ERR_CORRUPT, "'%s' is not a featcache training log or sweep results: it is empty", path);
out:
	free(text);
	free(line);
	fclose(f);
	return rc;
}

static int load_path(report *r, const char *path)
{
	struct stat st;
	if (stat(path, &st) != 0) {
		int e = errno;
		return fail(r, e == ENOENT ? FC_ERR_NOT_FOUND : FC_ERR_IO, "cannot read '%s': %s", path,
			    cli_errno_str(e));
	}
	if (!S_ISDIR(st.st_mode))
		return load_file(r, path, 0);
	size_t n = strlen(path);
	char *p = malloc(n + sizeof "/results.jsonl");
	if (!p)
		return fail(r, FC_ERR_NOMEM, "out of memory");
	clip(p, n + sizeof "/results.jsonl", "%s%sresults.jsonl", path, n && path[n - 1] == '/' ? "" : "/");
	int rc;
	if (stat(p, &st) != 0)
		rc = fail(r, FC_ERR_NOT_FOUND, "cannot read sweep '%s': it has no results.jsonl", path);
	else
		rc = load_file(r, p, 1);
	free(p);
	return rc;
}

/* The best epoch and its metrics where the log left them out, the score,
 * the order, the swept keys and k. */
static int finish(report *r)
{
	for (size_t i = 0; i < r->n; i++) {
		rp_run *run = &r->runs[i];
		const rp_epoch *be = NULL;
		for (size_t e = 0; e < run->n_ep && isfinite(run->best_epoch); e++)
			if (run->ep[e].epoch == run->best_epoch)
				be = &run->ep[e];
		if (!be) {
			/* As train picks: the best chosen metric, else the lowest loss, else the last epoch. */
			for (size_t e = 0; e < run->n_ep; e++)
				if (isfinite(run->ep[e].m[r->metric]) && (!be || run->ep[e].m[r->metric] > be->m[r->metric]))
					be = &run->ep[e];
			for (size_t e = 0; e < run->n_ep && !be; e++)
				if (isfinite(run->ep[e].loss)) {
					be = &run->ep[e];
					for (size_t f = e + 1; f < run->n_ep; f++)
						if (run->ep[f].loss < be->loss)
							be = &run->ep[f];
				}
			if (!be && run->n_ep)
				be = &run->ep[run->n_ep - 1];
			if (be)
				run->best_epoch = be->epoch;
		}
		int have = 0;
		for (int m = 0; m < NM; m++)
			have |= isfinite(run->best[m]);
		if (!have && be)
			memcpy(run->best, be->m, sizeof run->best);
		run->score = run->best[r->metric];
		if (!isfinite(run->seconds) && run->n_ep) {
			double t = 0;
			for (size_t e = 0; e < run->n_ep; e++)
				t += isfinite(run->ep[e].seconds) ? run->ep[e].seconds : 0;
			run->seconds = t;
		}
		json_t *k = json_object_get(run->config, "k");
		if (r->k == 0 && json_is_integer(k))
			r->k = (long)json_integer_value(k);
	}
	if (!(r->order = malloc((r->n ? r->n : 1) * sizeof *r->order)))
		return fail(r, FC_ERR_NOMEM, "out of memory");
	/* Insertion sort, stable: best score first, runs without one last. */
	for (size_t i = 0; i < r->n; i++) {
		size_t j = i;
		double s = r->runs[i].score;
		while (j > 0) {
			double t = r->runs[r->order[j - 1]].score;
			if (isfinite(t) && (!isfinite(s) || t >= s))
				break;
			if (!isfinite(t) && !isfinite(s))
				break;
			r->order[j] = r->order[j - 1];
			j--;
		}
		r->order[j] = i;
	}
	for (size_t i = 0; i < r->n_src; i++)
		r->sweep |= r->src[i].sweep;
	r->multi = r->sweep || r->n > 1;

	/* Swept keys: what the sweep says it swept, else (several training
	 * logs) the config keys whose values differ between the runs. */
	if (!(r->keys = malloc(64 * sizeof *r->keys)))
		return fail(r, FC_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < r->n; i++) {
		const char *key;
		json_t *v;
		json_object_foreach(r->runs[i].swept, key, v) {
			size_t k = 0;
			while (k < r->n_keys && strcmp(r->keys[k], key) != 0)
				k++;
			if (k == r->n_keys && r->n_keys < 64)
				r->keys[r->n_keys++] = key;
		}
	}
	if (r->n_keys == 0 && r->n > 1 && r->runs[0].config) {
		const char *key;
		json_t *v;
		json_object_foreach(r->runs[0].config, key, v) {
			if (strcmp(key, "featcache") == 0)
				continue;
			for (size_t i = 1; i < r->n; i++) {
				if (!json_equal(v, json_object_get(r->runs[i].config, key))) {
					if (r->n_keys < 64)
						r->keys[r->n_keys++] = key;
					break;
				}
			}
		}
	}
	return 0;
}

/* The value of a swept key for a run: from "swept", else from "config". */
static json_t *run_value(const rp_run *run, const char *key)
{
	json_t *v = json_object_get(run->swept, key);
	return v ? v : json_object_get(run->config, key);
}

/* A JSON value as short text (for tables, legends and categories). */
static const char *value_text(char *buf, size_t cap, const json_t *v)
{
	if (!v)
		clip(buf, cap, "-");
	else if (json_is_string(v))
		clip(buf, cap, "%s", json_string_value(v));
	else if (json_is_integer(v))
		clip(buf, cap, "%lld", (long long)json_integer_value(v));
	else if (json_is_real(v))
		clip(buf, cap, "%g", json_real_value(v));
	else if (json_is_true(v))
		clip(buf, cap, "true");
	else if (json_is_false(v))
		clip(buf, cap, "false");
	else if (json_is_null(v))
		clip(buf, cap, "null");
	else {
		char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
		clip(buf, cap, "%s", t ? t : "?");
		free(t);
	}
	return buf;
}

/* "c0003: lr=0.001, loss=triplet" - a run as a legend names it. */
static void run_label(const report *r, const rp_run *run, char *buf, size_t cap)
{
	size_t n = (size_t)snprintf(buf, cap, "%s", run->id);
	for (size_t k = 0; k < r->n_keys && n < cap; k++) {
		char v[128];
		value_text(v, sizeof v, run_value(run, r->keys[k]));
		n += (size_t)snprintf(buf + n, cap - n, "%s%s=%s", k ? ", " : ": ", r->keys[k], v);
	}
}

/* ------------------------------------------------------------------- axes */

typedef struct axis {
	double lo, hi, step;
	int log;
	size_t n_cat; /* categorical when > 0: values are 0..n_cat-1 */
	double ticks[48];
	size_t n_ticks;
} axis;

/* 1, 2, 2.5 or 5 times a power of ten, at least raw (integer axes skip 2.5
 * and fractions). */
static double nice_step(double raw, int integer)
{
	double e = pow(10, floor(log10(raw))), f = raw / e;
	double s = f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 && !integer ? 2.5 : f <= 5 ? 5 : 10;
	s *= e;
	return integer && s < 1 ? 1 : s;
}

static void axis_linear(axis *a, double lo, double hi, int integer)
{
	memset(a, 0, sizeof *a);
	if (!isfinite(lo) || !isfinite(hi)) {
		lo = 0;
		hi = 1;
	}
	if (hi - lo <= 1e-12 * fmax(1, fabs(hi))) {
		double pad = integer ? 1 : lo != 0 ? fabs(lo) * 0.05 : 0.5;
		lo -= pad;
		hi += pad;
	}
	double step = nice_step((hi - lo) / 5, integer);
	double l = floor(lo / step + 1e-9) * step, h = ceil(hi / step - 1e-9) * step;
	while ((h - l) / step > 40) {
		step *= 2;
		l = floor(lo / step) * step;
		h = ceil(hi / step) * step;
	}
	a->lo = l;
	a->hi = h;
	a->step = step;
	for (size_t i = 0; a->n_ticks < 48; i++) {
		double t = l + (double)i * step;
		if (t > h + step * 1e-6)
			break;
		a->ticks[a->n_ticks++] = fabs(t) < step * 1e-9 ? 0 : t;
	}
}

static void axis_log(axis *a, double lo, double hi)
{
	memset(a, 0, sizeof *a);
	double e0 = floor(log10(lo) + 1e-9), e1 = ceil(log10(hi) - 1e-9);
	if (e1 <= e0)
		e1 = e0 + 1;
	a->log = 1;
	a->lo = pow(10, e0);
	a->hi = pow(10, e1);
	for (double e = e0; e <= e1 && a->n_ticks < 45; e++) {
		double p = pow(10, e);
		a->ticks[a->n_ticks++] = p;
		if (e1 - e0 <= 2 && e < e1) {
			a->ticks[a->n_ticks++] = 2 * p;
			a->ticks[a->n_ticks++] = 5 * p;
		}
	}
}

/* Where v falls on the axis, 0..1. */
static double axis_frac(const axis *a, double v)
{
	if (a->n_cat)
		return (v + 0.5) / (double)a->n_cat;
	if (a->log)
		return (log10(v) - log10(a->lo)) / (log10(a->hi) - log10(a->lo));
	return (v - a->lo) / (a->hi - a->lo);
}

/* Tick labels with as many decimals as the step needs. */
static const char *tick_text(char *buf, size_t cap, const axis *a, double v)
{
	double av = fabs(v);
	if (a->log || av >= 1e6 || (av != 0 && av < 1e-4)) {
		clip(buf, cap, "%g", v);
		return buf;
	}
	int d = 0;
	for (double s = a->step; d < 8; d++, s *= 10)
		if (fabs(s - round(s)) <= 1e-6 * fmax(1, s))
			break;
	clip(buf, cap, "%.*f", d, v);
	return buf;
}

/* ----------------------------------------------------------------- charts */

/* Colours that stay apart on white and for the common colour blindnesses
 * as far as ten can; the order puts the most distinct first. */
static const char *const palette[MAX_LINES] = { "#1f6fb4", "#e07b00", "#2e9d4a", "#c8323a", "#7b52b9",
						"#8c564b", "#d6589f", "#5f6b7a", "#a5a100", "#17a3b8" };
#define C_BEFORE "#6b7280"
#define C_AFTER "#1f6fb4"
#define C_BEST "#e07b00"

typedef struct plot {
	double x, y, w, h, pad; /* plot area; pad keeps points off the left and right edges */
} plot;

static double px_x(const plot *p, const axis *a, double v)
{
	return p->x + p->pad + axis_frac(a, v) * (p->w - 2 * p->pad);
}

static double px_y(const plot *p, const axis *a, double v)
{
	return p->y + p->h - axis_frac(a, v) * p->h;
}

static void svg_begin(sbuf *b, const char *id, int h, const char *title, const char *subtitle)
{
	sb_printf(b,
		  "<svg class=\"chart\" id=\"%s\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %d %d\" "
		  "width=\"%d\" height=\"%d\" role=\"img\" aria-labelledby=\"%s-t\">\n<title id=\"%s-t\">",
		  id, SVG_W, h, SVG_W, h, id, id);
	sb_esc(b, title);
	sb_printf(b, "</title>\n<rect class=\"bg\" width=\"%d\" height=\"%d\"/>\n<text class=\"ttl\" x=\"16\" y=\"26\">",
		  SVG_W, h);
	sb_esc(b, title);
	sb_puts(b, "</text>\n");
	if (subtitle && *subtitle) {
		sb_puts(b, "<text class=\"sub\" x=\"16\" y=\"44\">");
		sb_esc(b, subtitle);
		sb_puts(b, "</text>\n");
	}
}

/* Grid, axis lines, ticks and their labels, and the axis titles. Category
 * names come from cats when the x axis is categorical. */
static void draw_axes(sbuf *b, const plot *p, const axis *xa, const axis *ya, const char *xlabel, const char *ylabel,
		      const char *const *cats)
{
	char t[64];
	sb_puts(b, "<g class=\"grid\">");
	for (size_t i = 0; i < ya->n_ticks; i++)
		sb_printf(b, "<path d=\"M%.1f %.1fH%.1f\"/>", p->x, px_y(p, ya, ya->ticks[i]), p->x + p->w);
	sb_puts(b, "</g>\n<g class=\"axis\">");
	sb_printf(b, "<path d=\"M%.1f %.1fV%.1fH%.1f\"/>", p->x, p->y, p->y + p->h, p->x + p->w);
	for (size_t i = 0; i < ya->n_ticks; i++) {
		double y = px_y(p, ya, ya->ticks[i]);
		sb_printf(b, "<path d=\"M%.1f %.1fh-5\"/><text class=\"tk\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>",
			  p->x, y, p->x - 8, y + 4, tick_text(t, sizeof t, ya, ya->ticks[i]));
	}
	size_t nx = xa->n_cat ? xa->n_cat : xa->n_ticks;
	double slot = (p->w - 2 * p->pad) / (double)(nx ? nx : 1);
	for (size_t i = 0; i < nx; i++) {
		double v = xa->n_cat ? (double)i : xa->ticks[i];
		double x = px_x(p, xa, v);
		sb_printf(b, "<path d=\"M%.1f %.1fv5\"/><text class=\"tk\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">", x,
			  p->y + p->h, x, p->y + p->h + 19);
		if (xa->n_cat) {
			/* 11px text is about 6.2px a character. */
			size_t fit = (size_t)(slot / 6.2);
			sb_esc_n(b, cats[i], fit < 3 ? 3 : fit);
		} else {
			sb_puts(b, tick_text(t, sizeof t, xa, v));
		}
		sb_puts(b, "</text>");
	}
	sb_puts(b, "</g>\n");
	sb_printf(b, "<text class=\"lbl\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">", p->x + p->w / 2,
		  p->y + p->h + 44);
	sb_esc(b, xlabel);
	sb_printf(b, "</text>\n<text class=\"lbl\" transform=\"translate(%.1f %.1f) rotate(-90)\" text-anchor=\"middle\">",
		  p->x - 56, p->y + p->h / 2);
	sb_esc(b, ylabel);
	sb_puts(b, "</text>\n");
}

/* One legend entry at (x, y): a swatch (a line, dashed or not, or a dot)
 * and the name, cut to what fits in the legend's column. */
static void legend_entry(sbuf *b, double x, double y, const char *color, int style, const char *name, size_t fit)
{
	if (style == 2)
		sb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"5\" fill=\"%s\"/>", x + 11, y - 4, color);
	else
		sb_printf(b, "<path d=\"M%.1f %.1fh22\" stroke=\"%s\" stroke-width=\"3\"%s/>", x, y - 4, color,
			  style ? " stroke-dasharray=\"6 4\"" : "");
	sb_printf(b, "<text class=\"lg\" x=\"%.1f\" y=\"%.1f\"><title>", x + 30, y);
	sb_esc(b, name);
	sb_puts(b, "</title>");
	sb_esc_n(b, name, fit);
	sb_puts(b, "</text>\n");
}

typedef struct series {
	char name[256];
	double *x, *y;
	size_t n;
	const char *color;
	int dashed; /* a reference level: y[0] across the whole plot */
} series;

/* A line per series over epochs, with dots where there are few enough
 * points to tell apart. Non-finite values break the line. */
static void chart_lines(sbuf *b, const char *id, const char *title, const char *subtitle, const char *xlabel,
			const char *ylabel, const series *s, size_t ns)
{
	double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
	for (size_t i = 0; i < ns; i++)
		for (size_t j = 0; j < s[i].n; j++) {
			if (!isfinite(s[i].y[j]) || (!s[i].dashed && !isfinite(s[i].x[j])))
				continue;
			ylo = fmin(ylo, s[i].y[j]);
			yhi = fmax(yhi, s[i].y[j]);
			if (!s[i].dashed) {
				xlo = fmin(xlo, s[i].x[j]);
				xhi = fmax(xhi, s[i].x[j]);
			}
		}
	/* The legend goes below the plot in two columns, ranked down the
	 * first column then the second: labels name the swept values and
	 * need the width. */
	size_t rows = (ns + 1) / 2;
	const double colw = (SVG_W - 78 - 24) / 2.0;
	const int h = 58 + 300 + 64 + (int)rows * 20 + 6;
	plot p = { 78, 58, SVG_W - 78 - 24, 300, 0 };
	axis xa, ya;
	axis_linear(&xa, xlo, xhi, 1);
	axis_linear(&ya, ylo, yhi, 0);
	svg_begin(b, id, h, title, subtitle);
	draw_axes(b, &p, &xa, &ya, xlabel, ylabel, NULL);
	char v[64];
	for (size_t i = 0; i < ns; i++) {
		const series *q = &s[i];
		if (q->dashed) {
			if (!isfinite(q->y[0]))
				continue;
			sb_printf(b, "<path class=\"mark\" d=\"M%.1f %.1fH%.1f\" stroke=\"%s\" stroke-width=\"2\" "
				  "stroke-dasharray=\"6 4\" fill=\"none\"><title>",
				  p.x, px_y(&p, &ya, q->y[0]), p.x + p.w, q->color);
			sb_esc(b, q->name);
			sb_printf(b, ": %.4f</title></path>\n", q->y[0]);
			continue;
		}
		/* Only runs of two or more points make a line; lone points get
		 * only their dot, so that every mark drawn has a visible box. */
		sbuf d = { 0 };
		size_t run = 0, segs = 0;
		for (size_t j = 0; j < q->n; j++) {
			if (!isfinite(q->x[j]) || !isfinite(q->y[j])) {
				run = 0;
				continue;
			}
			int lone = run == 0 && (j + 1 >= q->n || !isfinite(q->y[j + 1]) || !isfinite(q->x[j + 1]));
			if (!lone) {
				sb_printf(&d, "%c%.1f %.1f", run ? 'L' : 'M', px_x(&p, &xa, q->x[j]), px_y(&p, &ya, q->y[j]));
				segs += run > 0;
			}
			run++;
		}
		b->oom |= d.oom;
		if (segs > 0 && !d.oom) {
			sb_printf(b, "<path class=\"mark\" d=\"%s\" stroke=\"%s\" stroke-width=\"2.2\" fill=\"none\" "
				  "stroke-linejoin=\"round\"><title>",
				  d.p, q->color);
			sb_esc(b, q->name);
			sb_puts(b, "</title></path>\n");
		}
		free(d.p);
		if (q->n > 60 && segs > 0)
			continue;
		for (size_t j = 0; j < q->n; j++) {
			if (!isfinite(q->x[j]) || !isfinite(q->y[j]))
				continue;
			sb_printf(b, "<circle class=\"mark\" cx=\"%.1f\" cy=\"%.1f\" r=\"3.2\" fill=\"%s\"><title>",
				  px_x(&p, &xa, q->x[j]), px_y(&p, &ya, q->y[j]), q->color);
			sb_esc(b, q->name);
			clip(v, sizeof v, ", epoch %.0f: %.5g", q->x[j], q->y[j]);
			sb_esc(b, v);
			sb_puts(b, "</title></circle>");
		}
		sb_puts(b, "\n");
	}
	for (size_t i = 0; i < ns; i++)
		legend_entry(b, p.x + colw * (double)(i / rows), p.y + p.h + 76 + 20 * (double)(i % rows), s[i].color,
			     s[i].dashed, s[i].name, (size_t)((colw - 44) / 6.9));
	sb_puts(b, "</svg>\n");
}

/* The chosen metric at the best epoch against one swept parameter; the best
 * configuration in its own colour, the raw features as a dashed level.
 * Points on the same x spread a little sideways so that none hides. */
static void chart_scatter(sbuf *b, const char *id, const char *title, const char *xlabel, const char *ylabel,
			  const axis *xa, const char *const *cats, const double *x, const double *y,
			  char (*tips)[256], size_t n, size_t best, double before)
{
	double ylo = INFINITY, yhi = -INFINITY;
	for (size_t i = 0; i < n; i++)
		if (isfinite(y[i])) {
			ylo = fmin(ylo, y[i]);
			yhi = fmax(yhi, y[i]);
		}
	if (isfinite(before)) {
		ylo = fmin(ylo, before);
		yhi = fmax(yhi, before);
	}
	const int h = 400;
	plot p = { 78, 62, SVG_W - 78 - 24, h - 62 - 62, xa->n_cat ? 0 : 18 };
	axis ya;
	axis_linear(&ya, ylo, yhi, 0);
	svg_begin(b, id, h, title, NULL);
	draw_axes(b, &p, xa, &ya, xlabel, ylabel, cats);
	if (isfinite(before)) {
		sb_printf(b, "<path class=\"mark\" d=\"M%.1f %.1fH%.1f\" stroke=\"%s\" stroke-width=\"2\" "
			  "stroke-dasharray=\"6 4\" fill=\"none\"><title>raw features: %.4f</title></path>\n",
			  p.x, px_y(&p, &ya, before), p.x + p.w, C_BEFORE, before);
	}
	double slot = xa->n_cat ? (p.w - 2 * p.pad) / (double)xa->n_cat : 40;
	double step = fmin(6, slot * 0.8 / 12);
	/* The best point last, so that it is drawn on top. */
	for (size_t pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < n; i++) {
			if ((i == best) != (pass == 1) || !isfinite(x[i]) || !isfinite(y[i]))
				continue;
			size_t dup = 0;
			for (size_t j = 0; j < i; j++)
				dup += x[j] == x[i] && isfinite(y[j]);
			/* 0, +1, -1, +2, -2 ... steps, wrapping after 6 each way. */
			double k = (double)((dup + 1) / 2 % 7) * (dup % 2 ? 1 : -1);
			int hi = i == best;
			sb_printf(b, "<circle class=\"mark\" cx=\"%.1f\" cy=\"%.1f\" r=\"%s\" fill=\"%s\" fill-opacity=\"%s\" "
				  "stroke=\"#fff\" stroke-width=\"1\"><title>",
				  px_x(&p, xa, x[i]) + k * step, px_y(&p, &ya, y[i]), hi ? "6.5" : "4.5",
				  hi ? C_BEST : C_AFTER, hi ? "1" : "0.75");
			sb_esc(b, tips[i]);
			sb_puts(b, "</title></circle>\n");
		}
	/* Short entries: one row above the plot. */
	double lx = SVG_W - 24 - 480;
	legend_entry(b, lx, 48, C_AFTER, 2, "configuration", 30);
	legend_entry(b, lx + 130, 48, C_BEST, 2, "best configuration", 30);
	if (isfinite(before))
		legend_entry(b, lx + 290, 48, C_BEFORE, 1, "raw features (before)", 30);
	sb_puts(b, "</svg>\n");
}

/* Grouped bars of one set of metrics (indices idx[0..n)) on their own y
 * axis inside plot p: raw features grey, the head coloured, values above. */
static void bar_panel(sbuf *b, const plot *p, const int *idx, size_t n, const double *before, const double *after,
		      long k, const char *ylabel)
{
	double hi = 0;
	for (size_t i = 0; i < n; i++) {
		if (isfinite(before[idx[i]]))
			hi = fmax(hi, before[idx[i]]);
		if (isfinite(after[idx[i]]))
			hi = fmax(hi, after[idx[i]]);
	}
	axis xa = { 0 }, ya;
	xa.n_cat = n;
	axis_linear(&ya, 0, hi > 0 ? hi : 1, 0);
	const char *cats[NM];
	char names[NM][32];
	for (size_t i = 0; i < n; i++)
		cats[i] = metric_name(names[i], sizeof names[i], idx[i], k);
	draw_axes(b, p, &xa, &ya, "", ylabel, cats);
	double slot = p->w / (double)n, bw = fmin(30, slot * 0.34);
	for (size_t i = 0; i < n; i++) {
		double cx = px_x(p, &xa, (double)i);
		const double v[2] = { before[idx[i]], after[idx[i]] };
		for (int s = 0; s < 2; s++) {
			double x = cx + (s ? 2 : -2 - bw);
			if (!isfinite(v[s])) {
				sb_printf(b, "<text class=\"val\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">n/a</text>",
					  x + bw / 2, p->y + p->h - 4);
				continue;
			}
			double y = px_y(p, &ya, v[s]);
			sb_printf(b, "<rect class=\"mark\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\">"
				  "<title>%s %s: %.4f</title></rect>",
				  x, y, bw, p->y + p->h - y, s ? C_AFTER : C_BEFORE, names[i], s ? "after" : "before", v[s]);
			sb_printf(b, "<text class=\"val\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.3f</text>", x + bw / 2,
				  y - 4, v[s]);
		}
		sb_puts(b, "\n");
	}
}

static void chart_bars(sbuf *b, const char *id, const char *title, const double *before, const double *after,
		       const char *after_name, long k)
{
	/* DCG is not bounded by 1; on the others' axis it would flatten them. */
	static const int unit[] = { 0, 1, 2, 3, 4, 5, 6, 8 }, dcg[] = { 7 };
	const int h = 400;
	svg_begin(b, id, h, title, NULL);
	plot p1 = { 78, 58, 640, h - 58 - 50, 0 }, p2 = { 800, 58, 86, h - 58 - 50, 0 };
	bar_panel(b, &p1, unit, 8, before, after, k, "metric value");
	bar_panel(b, &p2, dcg, 1, before, after, k, "");
	double lx = p1.x + 8, ly = 44;
	sb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"14\" height=\"10\" fill=\"%s\"/><text class=\"lg\" x=\"%.1f\" "
		  "y=\"%.1f\">raw features (before)</text>",
		  lx + 300, ly - 9, C_BEFORE, lx + 320, ly);
	sb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"14\" height=\"10\" fill=\"%s\"/><text class=\"lg\" x=\"%.1f\" "
		  "y=\"%.1f\"><title>",
		  lx + 470, ly - 9, C_AFTER, lx + 490, ly);
	sb_esc(b, after_name);
	sb_puts(b, "</title>");
	sb_esc_n(b, after_name, 50);
	sb_puts(b, "</text>\n</svg>\n");
}

/* ------------------------------------------------------------------- page */

static const char css[] =
	":root{color-scheme:light}\n"
	"body{font:14px/1.45 system-ui,-apple-system,\"Segoe UI\",Roboto,\"DejaVu Sans\",Arial,sans-serif;"
	"color:#1f2937;background:#f3f4f6;margin:0;padding:24px}\n"
	"main{max-width:1000px;margin:0 auto}\n"
	"header,section{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:16px 20px;margin:0 0 16px}\n"
	"h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:0 0 10px}\n"
	".kind{color:#4b5563;margin:0 0 12px}\n"
	"dl{display:grid;grid-template-columns:max-content 1fr;gap:3px 16px;margin:0}dt{color:#6b7280}dd{margin:0}\n"
	"code{font-family:ui-monospace,\"DejaVu Sans Mono\",monospace;font-size:12.5px;overflow-wrap:anywhere}\n"
	"svg.chart{display:block;width:100%;height:auto;max-width:960px;margin:0 auto}\n"
	"svg .bg{fill:#fff}svg .ttl{font-size:16px;font-weight:600;fill:#111827}svg .sub{font-size:12px;fill:#6b7280}\n"
	"svg .grid path{stroke:#e5e7eb;stroke-width:1}svg .axis path{stroke:#4b5563;stroke-width:1;fill:none}\n"
	"svg .tk{font-size:11px;fill:#4b5563}svg .lbl{font-size:12.5px;fill:#374151}\n"
	"svg .lg{font-size:12px;fill:#1f2937}svg .val{font-size:9.5px;fill:#374151}\n"
	".wrap{overflow-x:auto}table{border-collapse:collapse;font-size:13px;width:100%}\n"
	"th,td{padding:4px 6px;border-bottom:1px solid #e5e7eb;text-align:left;vertical-align:top}"
	"th{background:#f9fafb;font-weight:600;white-space:nowrap}td{overflow-wrap:anywhere}\n"
	"td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}tr.best td{background:#fff7ed;font-weight:600}\n"
	".sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}\n"
	".up{color:#15803d}.down{color:#b91c1c}.note{color:#6b7280;font-size:13px;margin:8px 0 0}\n"
	"#render-check{color:#9ca3af;font-size:12px;text-align:center}\n";

/* After load: every chart must have marks, each with a visible box inside
 * the chart; the verdict goes into #render-check for headless tests. */
static const char check_js[] =
	"addEventListener('load',function(){var c=document.querySelectorAll('svg.chart'),bad=[],n=0;"
	"c.forEach(function(s){var v=s.viewBox.baseVal,m=s.querySelectorAll('.mark'),ok=m.length>0;"
	"m.forEach(function(e){var r=e.getBBox();n++;if(!(r.width>0||r.height>0)||r.x<-1||r.y<-1||"
	"r.x+r.width>v.width+1||r.y+r.height>v.height+1)ok=false});var b=s.getBBox();"
	"if(!(ok&&b.width>0&&b.height>0))bad.push(s.id)});"
	"document.getElementById('render-check').textContent='charts='+c.length+(bad.length?' failed: '+"
	"bad.join(' '):' ok')+' (marks='+n+')'});\n";

static void fmt_metric(char *buf, size_t cap, double v)
{
	if (isfinite(v))
		clip(buf, cap, "%.4f", v);
	else
		clip(buf, cap, "n/a");
}

static void delta_cell(sbuf *b, double before, double after)
{
	if (isfinite(before) && isfinite(after))
		sb_printf(b, "<td class=\"n %s\">%+.4f</td>", after >= before ? "up" : "down", after - before);
	else
		sb_puts(b, "<td class=\"n\">n/a</td>");
}

static void fmt_time(char *buf, size_t cap, time_t t)
{
	struct tm tm;
	if (t && localtime_r(&t, &tm))
		strftime(buf, cap, "%Y-%m-%d %H:%M:%S", &tm);
	else
		clip(buf, cap, "unknown");
}

static void fmt_seconds(char *buf, size_t cap, double s)
{
	if (!isfinite(s))
		clip(buf, cap, "n/a");
	else if (s < 120)
		clip(buf, cap, "%.1f s", s);
	else if (s < 7200)
		clip(buf, cap, "%.1f min", s / 60);
	else
		clip(buf, cap, "%.1f h", s / 3600);
}

static void fact(sbuf *b, const char *name, const char *value)
{
	sb_printf(b, "<dt>%s</dt><dd>", name);
	sb_esc(b, value);
	sb_puts(b, "</dd>\n");
}

/* A config value (as text) that all runs share, or "a, b, c" of the first
 * distinct ones; "" when no run has it. */
static void config_summary(const report *r, const char *key, char *buf, size_t cap)
{
	size_t n = 0, shown = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < r->n && n < cap; i++) {
		json_t *v = json_object_get(r->runs[i].config, key);
		if (!v)
			continue;
		int seen = 0;
		for (size_t j = 0; j < i && !seen; j++)
			seen = json_equal(v, json_object_get(r->runs[j].config, key));
		if (seen)
			continue;
		char t[256];
		value_text(t, sizeof t, v);
		if (shown == 3) {
			clip(buf + n, cap - n, ", ...");
			break;
		}
		n += (size_t)snprintf(buf + n, cap - n, "%s%s", shown ? ", " : "", t);
		shown++;
	}
}

static void page_header(sbuf *b, const report *r, const char *title, const char *mname)
{
	char t[512], u[512];
	sb_puts(b, "<header><h1>");
	sb_esc(b, title);
	sb_puts(b, "</h1>\n<p class=\"kind\">");
	if (r->sweep)
		sb_printf(b, "A sweep of %zu configuration%s", r->n, r->n == 1 ? "" : "s");
	else if (r->n == 1)
		sb_puts(b, "One training run");
	else
		sb_printf(b, "%zu training runs compared", r->n);
	if (r->n_keys) {
		sb_puts(b, " over ");
		for (size_t i = 0; i < r->n_keys; i++) {
			sb_puts(b, i == 0 ? "" : i + 1 == r->n_keys ? " and " : ", ");
			sb_puts(b, "<code>");
			sb_esc(b, r->keys[i]);
			sb_puts(b, "</code>");
		}
	}
	sb_puts(b, "</p>\n<dl>\n");
	for (size_t i = 0; i < r->n_src; i++) {
		fmt_time(u, sizeof u, r->src[i].mtime);
		sb_printf(b, "<dt>%s</dt><dd><code>", r->src[i].sweep ? "sweep results" : "training log");
		sb_esc(b, r->src[i].path);
		sb_puts(b, "</code> (last written ");
		sb_esc(b, u);
		sb_puts(b, ")</dd>\n");
	}
	config_summary(r, "store", t, sizeof t);
	if (t[0])
		fact(b, "store", t);
	config_summary(r, "extractor", t, sizeof t);
	fact(b, "extractor", t[0] ? t : "not recorded in the log");
	config_summary(r, "input_dim", t, sizeof t);
	if (t[0])
		fact(b, "feature dim", t);
	char tr[128], ev[128], ix[128], k[64];
	config_summary(r, "train_split", tr, sizeof tr);
	config_summary(r, "eval_split", ev, sizeof ev);
	config_summary(r, "index_split", ix, sizeof ix);
	config_summary(r, "k", k, sizeof k);
	if (tr[0] || ev[0]) {
		clip(t, sizeof t, "trained on '%s', evaluated on '%s'%s%s%s, k = %s", tr[0] ? tr : "?",
			 ev[0] ? ev : "?", ix[0] && strcmp(ix, "null") ? " against '" : "",
			 ix[0] && strcmp(ix, "null") ? ix : "", ix[0] && strcmp(ix, "null") ? "'" : "", k[0] ? k : "?");
		fact(b, "data", t);
	}
	if (r->n) {
		const rp_run *best = &r->runs[r->order[0]];
		char s[64], bb[64];
		if (isfinite(best->score)) {
			fmt_metric(s, sizeof s, best->score);
			fmt_metric(bb, sizeof bb, best->before[r->metric]);
			clip(t, sizeof t, "%s, epoch %.0f: %s %s (raw features %s)", r->multi ? best->id : "head",
				 best->best_epoch, mname, s, bb);
			fact(b, r->multi ? "best" : "best epoch", t);
		}
		double total = 0;
		size_t epochs = 0;
		for (size_t i = 0; i < r->n; i++) {
			total += isfinite(r->runs[i].seconds) ? r->runs[i].seconds : 0;
			epochs += r->runs[i].n_ep;
		}
		fmt_seconds(s, sizeof s, total);
		clip(t, sizeof t, "%zu epoch%s, %s of training", epochs, epochs == 1 ? "" : "s", s);
		fact(b, "ran", t);
	}
	config_summary(r, "featcache", t, sizeof t);
	if (t[0])
		fact(b, "featcache", t);
	fmt_time(u, sizeof u, time(NULL));
	fact(b, "report made", u);
	sb_puts(b, "</dl>\n</header>\n");
}

/* The per-epoch charts: loss, then the chosen metric with the raw level. */
static size_t epoch_charts(sbuf *b, const report *r, const char *mname)
{
	size_t shown = r->n < MAX_LINES ? r->n : MAX_LINES, charts = 0;
	series *s = calloc(2 * shown + 1, sizeof *s);
	char sub[256] = "";
	if (!s) {
		b->oom = 1;
		return 0;
	}
	if (r->n > shown)
		clip(sub, sizeof sub, "the %zu best of %zu configurations by %s; all are in the leaderboard", shown,
			 r->n, mname);
	for (int what = 0; what < 2; what++) {
		size_t ns = 0, finite = 0;
		for (size_t i = 0; i < shown; i++) {
			const rp_run *run = &r->runs[r->order[i]];
			series *q = &s[ns++];
			if (r->multi)
				run_label(r, run, q->name, sizeof q->name);
			else
				clip(q->name, sizeof q->name, "%s", what ? "head (after)" : "training loss");
			q->color = palette[i];
			q->n = run->n_ep;
			q->x = malloc((q->n ? q->n : 1) * sizeof *q->x);
			q->y = malloc((q->n ? q->n : 1) * sizeof *q->y);
			if (!q->x || !q->y) {
				b->oom = 1;
				goto out;
			}
			for (size_t e = 0; e < q->n; e++) {
				q->x[e] = run->ep[e].epoch;
				q->y[e] = what ? run->ep[e].m[r->metric] : run->ep[e].loss;
				finite += isfinite(q->y[e]);
			}
		}
		if (finite == 0) {
			sb_printf(b, "<section><p class=\"note\">No %s per epoch in %s.%s</p></section>\n",
				  what ? "evaluation metrics" : "loss values", r->n == 1 ? "this log" : "these logs",
				  what ? " (Trained with --eval-split none?)" : "");
			goto next;
		}
		if (what) {
			/* The raw-feature level: one line when all runs share it. */
			int same = 1;
			double lvl = NAN;
			for (size_t i = 0; i < shown; i++) {
				double v = r->runs[r->order[i]].before[r->metric];
				if (!isfinite(v))
					continue;
				if (isfinite(lvl) && fabs(v - lvl) > 1e-9)
					same = 0;
				lvl = isfinite(lvl) ? lvl : v;
			}
			for (size_t i = 0; i < shown && isfinite(lvl); i++) {
				const rp_run *run = &r->runs[r->order[i]];
				if (same && i > 0)
					break;
				series *q = &s[ns++];
				if (same)
					clip(q->name, sizeof q->name, "raw features (before)");
				else
					clip(q->name, sizeof q->name, "%s before", run->id);
				q->color = same ? C_BEFORE : palette[i];
				q->dashed = 1;
				q->n = 1;
				q->x = malloc(sizeof *q->x);
				q->y = malloc(sizeof *q->y);
				if (!q->x || !q->y) {
					b->oom = 1;
					goto out;
				}
				q->x[0] = 0;
				q->y[0] = same ? lvl : run->before[r->metric];
			}
		}
		char title[160], ylabel[160];
		if (what) {
			clip(title, sizeof title, "%s per epoch", mname);
			char ev[64];
			config_summary(r, "eval_split", ev, sizeof ev);
			clip(ylabel, sizeof ylabel, "%s%s%s%s", mname, ev[0] ? " on '" : "", ev, ev[0] ? "'" : "");
		} else {
			char loss[64];
			config_summary(r, "loss", loss, sizeof loss);
			clip(title, sizeof title, "Training loss per epoch");
			clip(ylabel, sizeof ylabel, "loss%s%s%s", loss[0] && !strchr(loss, ',') ? " (" : "",
				 loss[0] && !strchr(loss, ',') ? loss : "", loss[0] && !strchr(loss, ',') ? ")" : "");
		}
		sb_puts(b, "<section>\n");
		chart_lines(b, what ? "chart-metric" : "chart-loss", title, sub, "epoch", ylabel, s, ns);
		sb_puts(b, "</section>\n");
		charts++;
next:
		for (size_t i = 0; i < ns; i++) {
			free(s[i].x);
			free(s[i].y);
			s[i].x = s[i].y = NULL;
		}
		memset(s, 0, (2 * shown + 1) * sizeof *s);
	}
out:
	for (size_t i = 0; i < 2 * shown + 1; i++) {
		free(s[i].x);
		free(s[i].y);
	}
	free(s);
	return charts;
}

static void metrics_table(sbuf *b, const report *r, const rp_run *best)
{
	char name[32], v1[32], v2[32];
	sb_puts(b, "<div class=\"wrap\"><table><thead><tr><th>metric</th><th class=\"n\">raw features</th>"
		   "<th class=\"n\">head</th><th class=\"n\">change</th></tr></thead><tbody>\n");
	for (int m = 0; m < NM; m++) {
		fmt_metric(v1, sizeof v1, best->before[m]);
		fmt_metric(v2, sizeof v2, best->best[m]);
		sb_printf(b, "<tr%s><td>%s <code>%s</code></td><td class=\"n\">%s</td><td class=\"n\">%s</td>",
			  m == r->metric ? " class=\"best\"" : "", metric_name(name, sizeof name, m, r->k),
			  fc_metric_names[m], v1, v2);
		delta_cell(b, best->before[m], best->best[m]);
		sb_puts(b, "</tr>\n");
	}
	sb_puts(b, "</tbody></table></div>\n");
}

static int bars_section(sbuf *b, const report *r)
{
	const rp_run *best = &r->runs[r->order[0]];
	int have = 0;
	for (int m = 0; m < NM; m++)
		have |= isfinite(best->before[m]) || isfinite(best->best[m]);
	if (!have)
		return 0;
	char title[256], after[256];
	if (r->multi) {
		clip(title, sizeof title, "Raw features vs the best configuration, all metrics");
		clip(after, sizeof after, "%s, epoch %.0f (after)", best->id, best->best_epoch);
	} else {
		clip(title, sizeof title, "Raw features vs the head, all metrics");
		clip(after, sizeof after, "head, epoch %.0f (after)", best->best_epoch);
	}
	sb_puts(b, "<section>\n");
	chart_bars(b, "chart-bars", title, best->before, best->best, after, r->k);
	metrics_table(b, r, best);
	sb_puts(b, "</section>\n");
	return 1;
}

/* One scatter chart per swept key: numbers on a linear or (spanning ten
 * times or more) log axis, anything else as categories. */
static size_t sweep_charts(sbuf *b, const report *r, const char *mname)
{
	size_t charts = 0, n = r->n;
	double *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
	char(*tips)[256] = malloc(n * sizeof *tips);
	char **cats = calloc(n, sizeof *cats);
	size_t best = r->order[0];
	int any = 0;

	if (!x || !y || !tips || !cats) {
		b->oom = 1;
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		any |= isfinite(r->runs[i].score);
	if (!any)
		goto out;
	for (size_t k = 0; k < r->n_keys; k++) {
		const char *key = r->keys[k];
		int numeric = 1;
		double lo = INFINITY, hi = -INFINITY;
		size_t n_cat = 0;
		for (size_t i = 0; i < n; i++) {
			json_t *v = run_value(&r->runs[i], key);
			if (v && !json_is_number(v))
				numeric = 0;
			if (v && json_is_number(v)) {
				lo = fmin(lo, json_number_value(v));
				hi = fmax(hi, json_number_value(v));
			}
		}
		for (size_t i = 0; i < n; i++) {
			const rp_run *run = &r->runs[i];
			json_t *v = run_value(run, key);
			char t[200], s[32];
			y[i] = run->score;
			value_text(t, sizeof t, v);
			fmt_metric(s, sizeof s, run->score);
			clip(tips[i], sizeof tips[i], "%s: %s = %s, %s %s (epoch %.0f)", run->id, key, t, mname, s,
				 run->best_epoch);
			if (numeric) {
				x[i] = v ? json_number_value(v) : NAN;
				continue;
			}
			size_t c = 0;
			while (c < n_cat && strcmp(cats[c], t) != 0)
				c++;
			if (c == n_cat && !(cats[n_cat++] = str_dup(t))) {
				b->oom = 1;
				goto out;
			}
			x[i] = (double)c;
		}
		axis xa;
		int log = numeric && lo > 0 && hi / lo >= 10;
		if (!numeric) {
			memset(&xa, 0, sizeof xa);
			xa.n_cat = n_cat;
		} else if (log) {
			axis_log(&xa, lo, hi);
		} else {
			int integer = 1;
			for (size_t i = 0; i < n; i++)
				integer &= !isfinite(x[i]) || x[i] == floor(x[i]);
			axis_linear(&xa, lo, hi, integer);
		}
		char id[48], title[256], xlabel[200], ylabel[64];
		clip(id, sizeof id, "chart-swept-%zu", k + 1);
		clip(title, sizeof title, "%s at the best epoch vs %s", mname, key);
		clip(xlabel, sizeof xlabel, "%s%s", key, log ? " (log scale)" : !numeric ? " (categories)" : "");
		clip(ylabel, sizeof ylabel, "%s", mname);
		sb_puts(b, "<section>\n");
		chart_scatter(b, id, title, xlabel, ylabel, &xa, (const char *const *)cats, x, y, tips, n, best,
			      r->runs[best].before[r->metric]);
		sb_puts(b, "</section>\n");
		charts++;
		for (size_t c = 0; c < n_cat; c++) {
			free(cats[c]);
			cats[c] = NULL;
		}
	}
out:
	for (size_t c = 0; cats && c < n; c++)
		free(cats[c]);
	free(cats);
	free(tips);
	free(y);
	free(x);
	return charts;
}

static void leaderboard(sbuf *b, const report *r, const char *mname)
{
	static const int extra[] = { 4, 0, 1, 8 };
	char name[32], v[256];
	sb_printf(b, "<section><h2>Leaderboard</h2>\n<p class=\"note\">%zu configuration%s, the best ", r->n,
		  r->n == 1 ? "" : "s");
	sb_esc(b, mname);
	sb_puts(b, " first (each at its best epoch). Coloured ids are the lines in the per-epoch charts.</p>\n");
	sb_puts(b, "<div class=\"wrap\"><table><thead><tr><th class=\"n\">#</th><th>id</th>");
	for (size_t k = 0; k < r->n_keys; k++) {
		sb_puts(b, "<th>");
		sb_esc(b, r->keys[k]);
		sb_puts(b, "</th>");
	}
	sb_puts(b, "<th class=\"n\">best epoch</th><th class=\"n\">");
	sb_esc(b, mname);
	sb_puts(b, "</th><th class=\"n\">vs raw</th>");
	for (size_t e = 0; e < sizeof extra / sizeof extra[0]; e++)
		if (extra[e] != r->metric)
			sb_printf(b, "<th class=\"n\">%s</th>", metric_name(name, sizeof name, extra[e], r->k));
	sb_puts(b, "<th class=\"n\">last loss</th><th class=\"n\">time</th></tr></thead><tbody>\n");
	for (size_t i = 0; i < r->n; i++) {
		const rp_run *run = &r->runs[r->order[i]];
		sb_printf(b, "<tr%s><td class=\"n\">%zu</td><td>", i == 0 && isfinite(run->score) ? " class=\"best\"" : "",
			  i + 1);
		if (i < MAX_LINES)
			sb_printf(b, "<span class=\"sw\" style=\"background:%s\"></span>", palette[i]);
		sb_esc(b, run->id);
		sb_puts(b, "</td>");
		for (size_t k = 0; k < r->n_keys; k++) {
			sb_puts(b, "<td>");
			sb_esc(b, value_text(v, sizeof v, run_value(run, r->keys[k])));
			sb_puts(b, "</td>");
		}
		if (isfinite(run->best_epoch))
			sb_printf(b, "<td class=\"n\">%.0f</td>", run->best_epoch);
		else
			sb_puts(b, "<td class=\"n\">n/a</td>");
		fmt_metric(v, sizeof v, run->score);
		sb_printf(b, "<td class=\"n\">%s</td>", v);
		delta_cell(b, run->before[r->metric], run->score);
		for (size_t e = 0; e < sizeof extra / sizeof extra[0]; e++) {
			if (extra[e] == r->metric)
				continue;
			fmt_metric(v, sizeof v, run->best[extra[e]]);
			sb_printf(b, "<td class=\"n\">%s</td>", v);
		}
		double loss = run->n_ep ? run->ep[run->n_ep - 1].loss : NAN;
		if (isfinite(loss))
			sb_printf(b, "<td class=\"n\">%.4g</td>", loss);
		else
			sb_puts(b, "<td class=\"n\">n/a</td>");
		fmt_seconds(v, sizeof v, run->seconds);
		sb_printf(b, "<td class=\"n\">%s</td></tr>\n", v);
	}
	sb_puts(b, "</tbody></table></div></section>\n");
}

static void config_table(sbuf *b, const report *r)
{
	const rp_run *best = &r->runs[r->order[0]];
	sb_puts(b, "<section><h2>");
	if (r->multi) {
		sb_puts(b, "Configuration of the best run (<code>");
		sb_esc(b, best->id);
		sb_puts(b, "</code>)");
	} else {
		sb_puts(b, "Configuration");
	}
	sb_puts(b, "</h2>\n");
	if (!best->config) {
		sb_puts(b, "<p class=\"note\">The log holds no configuration (a run without evaluation writes none, "
			   "and a resumed run adds none).</p></section>\n");
		return;
	}
	sb_puts(b, "<div class=\"wrap\"><table><thead><tr><th>option</th><th>value</th></tr></thead><tbody>\n");
	const char *key;
	json_t *v;
	char t[1024];
	json_object_foreach(best->config, key, v) {
		int swept = 0;
		for (size_t k = 0; k < r->n_keys; k++)
			swept |= strcmp(r->keys[k], key) == 0;
		sb_puts(b, "<tr><td><code>");
		sb_esc(b, key);
		sb_printf(b, "</code>%s</td><td>", swept ? " (swept)" : "");
		sb_esc(b, value_text(t, sizeof t, v));
		sb_puts(b, "</td></tr>\n");
	}
	sb_puts(b, "</tbody></table></div></section>\n");
}

static size_t render(sbuf *b, const report *r, const char *title_opt)
{
	char mname[64], title[512];
	size_t charts = 0;
	metric_name(mname, sizeof mname, r->metric, r->k);
	if (title_opt)
		clip(title, sizeof title, "%s", title_opt);
	else if (r->sweep)
		clip(title, sizeof title, "featcache sweep report: %s", base_name(r->src[0].path));
	else
		clip(title, sizeof title, "featcache training report: %s", r->n ? r->runs[0].id : "");
	if (r->sweep && !title_opt && strcmp(base_name(r->src[0].path), "results.jsonl") == 0) {
		/* Name the sweep by its directory, not by its results file. */
		const char *p = r->src[0].path;
		const char *end = p + strlen(p) - strlen("/results.jsonl"), *start = end;
		while (start > p && start[-1] != '/')
			start--;
		if (end > start)
			clip(title, sizeof title, "featcache sweep report: %.*s", (int)(end - start), start);
	}
	sb_puts(b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
		   "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
		   "<meta name=\"generator\" content=\"featcache report\">\n<title>");
	sb_esc(b, title);
	sb_printf(b, "</title>\n<style>\n%s</style>\n</head>\n<body>\n<main>\n", css);
	page_header(b, r, title, mname);
	if (r->n) {
		charts += epoch_charts(b, r, mname);
		charts += (size_t)bars_section(b, r);
		if (r->multi)
			charts += sweep_charts(b, r, mname);
		if (r->multi)
			leaderboard(b, r, mname);
		config_table(b, r);
	}
	sb_puts(b, "<p id=\"render-check\">render check did not run (scripts are off)</p>\n</main>\n<script>\n");
	sb_puts(b, check_js);
	sb_puts(b, "</script>\n</body>\n</html>\n");
	return charts;
}

/* Write to OUT.tmpXXXXXX beside out and rename it over out, so that a
 * failure leaves no half-written page. */
static int write_atomic(report *r, const char *out, const char *data, size_t len)
{
	size_t n = strlen(out);
	char *tmp = malloc(n + sizeof ".tmpXXXXXX");
	int fd = -1, rc = 0;
	if (!tmp)
		return fail(r, FC_ERR_NOMEM, "out of memory");
	clip(tmp, n + sizeof ".tmpXXXXXX", "%s.tmpXXXXXX", out);
	fd = mkstemp(tmp);
	if (fd < 0) {
		rc = fail(r, FC_ERR_IO, "cannot write report '%s': %s", out, cli_errno_str(errno));
		free(tmp);
		return rc;
	}
	mode_t mask = umask(0);
	umask(mask);
	if (fchmod(fd, 0666 & ~mask) != 0)
		goto io_error;
	for (size_t off = 0; off < len;) {
		ssize_t w = write(fd, data + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			goto io_error;
		off += (size_t)w;
	}
	if (fsync(fd) != 0)
		goto io_error;
	if (close(fd) != 0) {
		fd = -1;
		goto io_error;
	}
	fd = -1;
	if (rename(tmp, out) != 0)
		goto io_error;
	free(tmp);
	return 0;
io_error:
	rc = fail(r, FC_ERR_IO, "cannot write report '%s': %s", out, cli_errno_str(errno));
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	free(tmp);
	return rc;
}

int fc_report_write(const char *out, const char *const *paths, size_t n, const char *metric, const char *title,
		    size_t *charts, char *err, size_t errcap)
{
	report r = { 0 };
	sbuf b = { 0 };
	int rc = 0;

	r.err = err;
	r.errcap = err ? errcap : 0;
	if (r.errcap)
		err[0] = '\0';
	if (charts)
		*charts = 0;
	r.metric = fc_report_metric_index(metric ? metric : "average_precision");
	if (r.metric < 0)
		return fail(&r, FC_ERR_INVALID, "unknown metric '%s'", metric);
	if (!out || !paths || n == 0)
		return fail(&r, FC_ERR_INVALID, "nothing to report on: no logs given");
	for (size_t i = 0; i < n; i++)
		if ((rc = load_path(&r, paths[i])) != 0)
			goto out;
	/* The rename would replace a log with its own report. */
	struct stat so, si;
	for (size_t i = 0; i < r.n_src && stat(out, &so) == 0; i++)
		if (stat(r.src[i].path, &si) == 0 && si.st_dev == so.st_dev && si.st_ino == so.st_ino) {
			rc = fail(&r, FC_ERR_INVALID, "cannot write report '%s': it is the log '%s' itself", out,
				  r.src[i].path);
			goto out;
		}
	if ((rc = finish(&r)) != 0)
		goto out;
	size_t nc = render(&b, &r, title);
	if (b.oom) {
		rc = fail(&r, FC_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((rc = write_atomic(&r, out, b.p, b.len)) != 0)
		goto out;
	if (charts)
		*charts = nc;
out:
	free(b.p);
	free(r.keys);
	free(r.order);
	for (size_t i = 0; i < r.n; i++)
		run_free(&r.runs[i]);
	free(r.runs);
	for (size_t i = 0; i < r.n_src; i++)
		free(r.src[i].path);
	free(r.src);
	return rc;
}
