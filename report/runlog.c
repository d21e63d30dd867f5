/*
 * runlog.c - the one schema of run logs (report.h): training logs
 * (HEAD.safetensors.jsonl, a line per epoch) and sweep results
 * (results.jsonl, a line per configuration), written here for `train` and
 * `sweep` and read back here for the report and for a sweep that resumes.
 *
 * Not here: what goes into a run's config (the CLI's options), the
 * checkpoint's own history (train/policy.c), the page (page.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "report/report_impl.h"

/* ---- writing ---- */

int fc_runlog_append(const char *path, json_t *line, int sync, char *err, size_t errcap)
{
	char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
	char why[128];
	if (!text)
		return fci_errf(err, errcap, FC_ERR_NOMEM, "out of memory");
	size_t len = strlen(text);
	text[len++] = '\n'; /* json_dumps' terminator becomes the newline: one write */
	int rc = 0, fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = fci_errf(err, errcap, fci_errno_code(errno), "cannot write log '%s': %s", path,
			      fci_os_error(why, sizeof why, errno));
	} else {
		ssize_t w = write(fd, text, len);
		int e = errno;
		if (w != (ssize_t)len || (sync && fsync(fd) != 0))
			rc = fci_errf(err, errcap, FC_ERR_IO, "cannot write log '%s': %s", path,
				      w < 0 || sync ? fci_os_error(why, sizeof why, e) : "short write");
		if (close(fd) != 0 && !rc)
			rc = fci_errf(err, errcap, FC_ERR_IO, "cannot write log '%s': %s", path,
				      fci_os_error(why, sizeof why, errno));
	}
	free(text);
	return rc;
}

/* Append line and drop the caller's reference to it, which may be NULL
 * after a failed allocation. */
static int append_new(const char *path, json_t *line, char *err, size_t errcap)
{
	int rc = line ? fc_runlog_append(path, line, 0, err, errcap)
		      : fci_errf(err, errcap, FC_ERR_NOMEM, "out of memory");
	json_decref(line);
	return rc;
}

int fc_runlog_start(const char *path, json_t *config, const fc_metrics *before, char *err, size_t errcap)
{
	remove(path);
	/* The configuration always: a run without evaluation is still a run
	 * the report describes and compares. */
	json_t *line = json_pack("{s:O}", "config", config);
	if (line && before && json_object_set_new(line, "before", fc_metrics_to_json(before, 0)) != 0) {
		json_decref(line);
		line = NULL;
	}
	return append_new(path, line, err, errcap);
}

int fc_runlog_reconfig(const char *path, json_t *config, char *err, size_t errcap)
{
	uint8_t *buf = NULL;
	size_t cap = 0, len = 0;
	char why[FC_ERRLEN];
	json_t *head = NULL;
	fci_outfile *f = NULL;
	int rc = fci_read_file(path, UINT64_MAX, &buf, &cap, &len, why, sizeof why);
	if (rc == FC_ERR_NOT_FOUND)
		len = 0;
	else if (rc) {
		rc = fci_errf(err, errcap, rc, "cannot read log '%s': %s", path, why);
		goto out;
	}
	/* The first line is the header when it holds the configuration (a log
	 * of an older featcache may start with an epoch instead). */
	const char *nl = len ? memchr(buf, '\n', len) : NULL;
	size_t first = nl ? (size_t)(nl - (const char *)buf) + 1 : 0;
	head = first ? json_loadb((const char *)buf, first, 0, NULL) : NULL;
	if (!json_is_object(head) || !json_object_get(head, "config")) {
		json_decref(head);
		head = json_object();
		first = 0;
	}
	if (json_equal(json_object_get(head, "config"), config))
		goto out;
	if (!head || json_object_set(head, "config", config) != 0) {
		rc = fci_errf(err, errcap, FC_ERR_NOMEM, "out of memory");
		goto out;
	}
	char *text = json_dumps(head, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (!text) {
		rc = fci_errf(err, errcap, FC_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((rc = fci_outfile_open(&f, path, why, sizeof why)) == 0) {
		fci_outfile_printf(f, "%s\n", text);
		fci_outfile_write(f, buf + first, len - first);
		rc = fci_outfile_commit(f);
		if (rc)
			snprintf(why, sizeof why, "%s", fci_outfile_errmsg(f));
	}
	free(text);
	if (rc)
		rc = fci_errf(err, errcap, rc, "cannot write log '%s': %s", path, why);
out:
	fci_outfile_free(f);
	json_decref(head);
	free(buf);
	return rc;
}

int fc_runlog_epoch(const char *path, const fc_epoch_stats *st, int best, const fc_metrics *m, char *err, size_t errcap)
{
	json_t *line = json_pack("{s:i, s:I, s:f, s:f, s:f, s:f, s:I, s:b}", "epoch", (int)st->epoch, "steps",
				 (json_int_t)st->steps, "loss", st->loss, "lr", st->lr, "seconds", st->seconds,
				 "samples_per_s", st->samples_per_s, "active", (json_int_t)st->active, "best", best);
	if (line && m)
		json_object_set_new(line, "metrics", fc_metrics_to_json(m, 0));
	return append_new(path, line, err, errcap);
}

json_t *fc_runlog_result_epoch(const fc_epoch_stats *st, double seconds, const fc_metrics *m)
{
	json_t *e = json_pack("{s:i, s:f, s:f, s:f}", "epoch", (int)st->epoch, "loss", st->loss, "lr", st->lr,
			      "seconds", seconds);
	if (e && m)
		json_object_set_new(e, "metrics", fc_metrics_to_json(m, 0));
	return e;
}

json_t *fc_runlog_result_line(const fc_runlog_result *res)
{
	json_t *line =
		json_pack("{s:s, s:O, s:O, s:o, s:O, s:i, s:o, s:f}", "id", res->id, "config", res->config, "swept",
			  res->swept, "before", res->before ? fc_metrics_to_json(res->before, 0) : json_object(),
			  "epochs", res->epochs, "best_epoch", (int)res->best_epoch, "best",
			  res->best ? fc_metrics_to_json(res->best, 0) : json_object(), "seconds", res->seconds);
	if (line && res->error)
		json_object_set_new(line, "error", json_string(res->error));
	return line;
}

/* ---- reading ---- */

static double num(const json_t *j)
{
	return json_is_number(j) ? json_number_value(j) : NAN;
}

static void metrics_read(double m[FCI_NM], const json_t *j)
{
	for (int i = 0; i < FCI_NM; i++)
		m[i] = num(json_object_get(j, fc_metric_names[i]));
}

void fc_run_init(fc_run *run)
{
	memset(run, 0, sizeof *run);
	for (int i = 0; i < FCI_NM; i++)
		run->before[i] = run->best[i] = NAN;
	run->best_epoch = NAN;
	run->seconds = NAN;
}

void fc_run_free(fc_run *run)
{
	if (!run)
		return;
	free(run->id);
	json_decref(run->config);
	json_decref(run->swept);
	free(run->ep);
	fc_run_init(run);
}

/* The array p (*cap elements of size bytes) with room for an element after
 * its first n: p itself, or p doubled when full. NULL on out of memory (p
 * is then unchanged). */
static void *grow(void *p, size_t *cap, size_t n, size_t size)
{
	if (n < *cap)
		return p;
	size_t c = *cap ? 2 * *cap : 16;
	void *q = realloc(p, c * size);
	if (q)
		*cap = c;
	return q;
}

/* The entry for epoch e, added in order; a repeated epoch (a run killed
 * after its log line and before its checkpoint repeats that epoch when it
 * resumes) is replaced by the later line. NULL on out of memory. */
static fc_run_epoch *run_epoch(fc_run *run, double e)
{
	size_t i = run->n_ep;
	while (i > 0 && run->ep[i - 1].epoch > e)
		i--;
	if (i > 0 && run->ep[i - 1].epoch == e)
		return &run->ep[i - 1];
	fc_run_epoch *ep = grow(run->ep, &run->cap_ep, run->n_ep, sizeof *ep);
	if (!ep)
		return NULL;
	run->ep = ep;
	memmove(&run->ep[i + 1], &run->ep[i], (run->n_ep - i) * sizeof *run->ep);
	run->n_ep++;
	fc_run_epoch *p = &run->ep[i];
	p->epoch = e;
	return p;
}

static void epoch_read(fc_run_epoch *p, const json_t *j)
{
	p->loss = num(json_object_get(j, "loss"));
	p->lr = num(json_object_get(j, "lr"));
	p->seconds = num(json_object_get(j, "seconds"));
	metrics_read(p->m, json_object_get(j, "metrics"));
}

int fc_run_from_result(fc_run *run, const json_t *j, char *err, size_t errcap)
{
	json_t *cfg = json_object_get(j, "config"), *swept = json_object_get(j, "swept");
	json_t *epochs = json_object_get(j, "epochs"), *id = json_object_get(j, "id");
	json_t *best = json_object_get(j, "best");

	if (!epochs && !best && !cfg)
		return fci_errf(err, errcap, FC_ERR_CORRUPT,
				"not a featcache sweep result (no \"config\", \"epochs\" or \"best\")");
	const char *bad = cfg && !json_is_object(cfg)	     ? "config"
			  : swept && !json_is_object(swept)  ? "swept"
			  : epochs && !json_is_array(epochs) ? "epochs"
			  : best && !json_is_object(best)    ? "best"
			  : id && !json_is_string(id)	     ? "id"
							     : NULL;
	if (bad)
		return fci_errf(err, errcap, FC_ERR_CORRUPT, "\"%s\" has the wrong type", bad);
	if (id && !(run->id = strdup(json_string_value(id))))
		return fci_errf(err, errcap, FC_ERR_NOMEM, "out of memory");
	run->config = json_incref(cfg);
	run->swept = json_incref(swept);
	metrics_read(run->before, json_object_get(j, "before"));
	size_t i;
	json_t *e;
	json_array_foreach(epochs, i, e) {
		json_t *n = json_object_get(e, "epoch");
		if (!json_is_object(e) || (n && (!json_is_integer(n) || json_integer_value(n) < 0)))
			return fci_errf(err, errcap, FC_ERR_CORRUPT, "epoch %zu is malformed", i + 1);
		fc_run_epoch *p = run_epoch(run, n ? (double)json_integer_value(n) : (double)(i + 1));
		if (!p)
			return fci_errf(err, errcap, FC_ERR_NOMEM, "out of memory");
		epoch_read(p, e);
	}
	run->best_epoch = num(json_object_get(j, "best_epoch"));
	if (best)
		metrics_read(run->best, best);
	run->seconds = num(json_object_get(j, "seconds"));
	run->failed = json_object_get(j, "error") != NULL;
	return 0;
}

/* A new run at the end of r (initialised); NULL on out of memory. */
static fc_run *run_new(fci_report *r)
{
	fc_run *runs = grow(r->runs, &r->cap, r->n, sizeof *runs);
	if (!runs)
		return NULL;
	r->runs = runs;
	fc_run *run = &r->runs[r->n++];
	fc_run_init(run);
	return run;
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
		size_t skip = strncmp(s + i, "NaN", 3) == 0	    ? 3
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

const char *fci_base_name(const char *path)
{
	const char *s = strrchr(path, '/');
	return s && s[1] ? s + 1 : path;
}

/* A training log line: the header {"config", "before"} or an epoch. */
static int train_line(fci_report *r, fc_run *run, const char *path, size_t line, json_t *j)
{
	json_t *cfg = json_object_get(j, "config"), *ep = json_object_get(j, "epoch");
	if (cfg || json_object_get(j, "before")) {
		if (run->config || run->n_ep)
			return fci_errf(r->err, r->errcap, FC_ERR_CORRUPT,
					"cannot read log '%s': line %zu: a second header line (two runs in one log?)",
					path, line);
		if (cfg && !json_is_object(cfg))
			return fci_errf(r->err, r->errcap, FC_ERR_CORRUPT,
					"cannot read log '%s': line %zu: \"config\" is not an object", path, line);
		run->config = json_incref(cfg);
		metrics_read(run->before, json_object_get(j, "before"));
		return 0;
	}
	if (!ep)
		return fci_errf(r->err, r->errcap, FC_ERR_CORRUPT,
				"cannot read log '%s': line %zu: not a featcache training log line (no \"config\" or "
				"\"epoch\")",
				path, line);
	if (!json_is_integer(ep) || json_integer_value(ep) < 0 || json_integer_value(ep) > 100000000)
		return fci_errf(r->err, r->errcap, FC_ERR_CORRUPT,
				"cannot read log '%s': line %zu: \"epoch\" is not an epoch number", path, line);
	double e = (double)json_integer_value(ep);
	fc_run_epoch *p = run_epoch(run, e);
	if (!p)
		return fci_errf(r->err, r->errcap, FC_ERR_NOMEM, "out of memory");
	epoch_read(p, j);
	if (json_is_true(json_object_get(j, "best")))
		run->best_epoch = e;
	return 0;
}

/* A sweep results line: one configuration with all its epochs. */
static int sweep_line(fci_report *r, const char *path, size_t line, json_t *j)
{
	char why[FC_ERRLEN];
	fc_run *run = run_new(r);
	if (!run)
		return fci_errf(r->err, r->errcap, FC_ERR_NOMEM, "out of memory");
	int rc = fc_run_from_result(run, j, why, sizeof why);
	if (rc == FC_ERR_NOMEM)
		return fci_errf(r->err, r->errcap, rc, "out of memory");
	if (rc)
		return fci_errf(r->err, r->errcap, rc, "cannot read sweep '%s': line %zu: %s", path, line, why);
	if (!run->id) {
		char idbuf[32];
		fci_clip(idbuf, sizeof idbuf, "line %zu", line);
		if (!(run->id = strdup(idbuf)))
			return fci_errf(r->err, r->errcap, FC_ERR_NOMEM, "out of memory");
	}
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

static int load_file(fci_report *r, const char *path, int want_sweep)
{
	FILE *f = NULL;
	char *line = NULL, *text = NULL;
	size_t cap = 0, lineno = 0;
	ssize_t len;
	int rc = 0, kind = 0;
	struct stat st;
	const char *what = want_sweep ? "sweep" : "log";
	char why[128];

	fci_source *s = realloc(r->src, (r->n_src + 1) * sizeof *s);
	if (!s)
		return fci_errf(r->err, r->errcap, FC_ERR_NOMEM, "out of memory");
	r->src = s;
	s = &r->src[r->n_src];
	memset(s, 0, sizeof *s);
	if (!(s->path = strdup(path)))
		return fci_errf(r->err, r->errcap, FC_ERR_NOMEM, "out of memory");
	r->n_src++;

	f = fopen(path, "r");
	if (!f) {
		int e = errno;
		return fci_errf(r->err, r->errcap, e == ENOENT ? FC_ERR_NOT_FOUND : FC_ERR_IO,
				"cannot read %s '%s': %s", what, path, fci_os_error(why, sizeof why, e));
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
			rc = fci_errf(r->err, r->errcap, FC_ERR_NOMEM, "out of memory");
			goto out;
		}
		json_error_t je;
		json_t *j = json_loads(text, 0, &je);
		if (!j) {
			rc = fci_errf(r->err, r->errcap, FC_ERR_CORRUPT,
				      "cannot read %s '%s': line %zu: malformed JSON: %s (column %d)", what, path,
				      lineno, je.text, je.column);
			goto out;
		}
		if (!json_is_object(j)) {
			json_decref(j);
			rc = fci_errf(r->err, r->errcap, FC_ERR_CORRUPT,
				      "cannot read %s '%s': line %zu: not a JSON object", what, path, lineno);
			goto out;
		}
		if (kind == 0) {
			kind = line_kind(j);
			if (kind == 0) {
				json_decref(j);
				rc = fci_errf(
					r->err, r->errcap, FC_ERR_CORRUPT,
					"'%s' is not a featcache training log or sweep results: line %zu has none of "
					"\"config\", \"epoch\", \"epochs\"",
					path, lineno);
				goto out;
			}
			what = kind == 2 ? "sweep" : "log";
			s->sweep = kind == 2;
			fc_run *run = kind == 1 ? run_new(r) : NULL;
			if (kind == 1 && (!run || !(run->id = strdup(fci_base_name(path))))) {
				json_decref(j);
				rc = fci_errf(r->err, r->errcap, FC_ERR_NOMEM, "out of memory");
				goto out;
			}
			/* "h.safetensors.jsonl" names the head h.safetensors. */
			size_t n = run ? strlen(run->id) : 0;
			if (n > 6 && strcmp(run->id + n - 6, ".jsonl") == 0)
				run->id[n - 6] = '\0';
		}
		/* A training log is one run, the last one added. */
		rc = kind == 1 ? train_line(r, &r->runs[r->n - 1], path, lineno, j) : sweep_line(r, path, lineno, j);
		json_decref(j);
		if (rc)
			goto out;
	}
	if (ferror(f)) {
		rc = fci_errf(r->err, r->errcap, FC_ERR_IO, "cannot read %s '%s': %s", what, path,
			      fci_os_error(why, sizeof why, errno));
		goto out;
	}
	if (kind == 0)
		rc = fci_errf(r->err, r->errcap, FC_ERR_CORRUPT,
			      "'%s' is not a featcache training log or sweep results: it is empty", path);
out:
	free(text);
	free(line);
	fclose(f);
	return rc;
}

int fci_runlog_load(fci_report *r, const char *path)
{
	struct stat st;
	char why[128];
	if (stat(path, &st) != 0) {
		int e = errno;
		return fci_errf(r->err, r->errcap, e == ENOENT ? FC_ERR_NOT_FOUND : FC_ERR_IO, "cannot read '%s': %s",
				path, fci_os_error(why, sizeof why, e));
	}
	if (!S_ISDIR(st.st_mode))
		return load_file(r, path, 0);
	size_t n = strlen(path);
	char *p = malloc(n + sizeof "/results.jsonl");
	if (!p)
		return fci_errf(r->err, r->errcap, FC_ERR_NOMEM, "out of memory");
	fci_clip(p, n + sizeof "/results.jsonl", "%s%sresults.jsonl", path, n && path[n - 1] == '/' ? "" : "/");
	int rc;
	if (stat(p, &st) != 0)
		rc = fci_errf(r->err, r->errcap, FC_ERR_NOT_FOUND, "cannot read sweep '%s': it has no results.jsonl",
			      path);
	else
		rc = load_file(r, p, 1);
	free(p);
	return rc;
}
