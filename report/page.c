/*
 * page.c - `featcache report`'s page: from the runs runlog.c reads, one
 * HTML page with inline CSS and the SVG charts of svg.c: loss and the
 * chosen metric per epoch, raw features against the head for all nine
 * metrics, the metric against every swept parameter, a leaderboard and the
 * configuration (report.h: fc_report_write); then, when the caller hands
 * them over, the pictures of what the head learned (gallery.c).
 *
 * The only script on the page is a few lines that check, after load, that
 * every chart has visible marks and every thumbnail decoded, and say so in
 * #render-check; the page reads the same without it. Every string from a log (config values, ids, paths)
 * is HTML-escaped on the way out.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "report/report_impl.h"

/* A run's score: the chosen metric at its best epoch (NaN: none). */
static double score(const fci_report *r, const fc_run *run)
{
	return run->best[r->metric];
}

/* The best epoch and its metrics where the log left them out, the score,
 * the order, the swept keys and k. */
static int finish(fci_report *r)
{
	for (size_t i = 0; i < r->n; i++) {
		fc_run *run = &r->runs[i];
		const fc_run_epoch *be = NULL;
		for (size_t e = 0; e < run->n_ep && isfinite(run->best_epoch); e++)
			if (run->ep[e].epoch == run->best_epoch)
				be = &run->ep[e];
		if (!be) {
			/* As train picks: the best chosen metric, else the lowest loss, else the last epoch. */
			for (size_t e = 0; e < run->n_ep; e++)
				if (isfinite(run->ep[e].m[r->metric]) &&
				    (!be || run->ep[e].m[r->metric] > be->m[r->metric]))
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
		for (int m = 0; m < FCI_NM; m++)
			have |= isfinite(run->best[m]);
		if (!have && be)
			memcpy(run->best, be->m, sizeof run->best);
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
		return fci_errf(r->err, r->errcap, FC_ERR_NOMEM, "out of memory");
	/* Insertion sort, stable: best score first, runs without one last. */
	for (size_t i = 0; i < r->n; i++) {
		size_t j = i;
		double s = score(r, &r->runs[i]);
		while (j > 0) {
			double t = score(r, &r->runs[r->order[j - 1]]);
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
		return fci_errf(r->err, r->errcap, FC_ERR_NOMEM, "out of memory");
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
static json_t *run_value(const fc_run *run, const char *key)
{
	json_t *v = json_object_get(run->swept, key);
	return v ? v : json_object_get(run->config, key);
}

/* A JSON value as short text (for tables, legends and categories). */
static const char *value_text(char *buf, size_t cap, const json_t *v)
{
	if (!v)
		fci_clip(buf, cap, "-");
	else if (json_is_string(v))
		fci_clip(buf, cap, "%s", json_string_value(v));
	else if (json_is_integer(v))
		fci_clip(buf, cap, "%lld", (long long)json_integer_value(v));
	else if (json_is_real(v))
		fci_clip(buf, cap, "%g", json_real_value(v));
	else if (json_is_true(v))
		fci_clip(buf, cap, "true");
	else if (json_is_false(v))
		fci_clip(buf, cap, "false");
	else if (json_is_null(v))
		fci_clip(buf, cap, "null");
	else {
		char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
		fci_clip(buf, cap, "%s", t ? t : "?");
		free(t);
	}
	return buf;
}

/* "c0003: lr=0.001, loss=triplet" - a run as a legend names it. */
static void run_label(const fci_report *r, const fc_run *run, char *buf, size_t cap)
{
	size_t n = (size_t)snprintf(buf, cap, "%s", run->id);
	for (size_t k = 0; k < r->n_keys && n < cap; k++) {
		char v[128];
		value_text(v, sizeof v, run_value(run, r->keys[k]));
		n += (size_t)snprintf(buf + n, cap - n, "%s%s=%s", k ? ", " : ": ", r->keys[k], v);
	}
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
 * the chart, and every thumbnail must have decoded; the verdict goes into
 * #render-check for headless tests, with script errors counted. */
static const char check_js[] =
	"var fcErr=0;addEventListener('error',function(){fcErr++},true);\n"
	"addEventListener('load',function(){var c=document.querySelectorAll('svg.chart'),bad=[],n=0;"
	"c.forEach(function(s){var v=s.viewBox.baseVal,m=s.querySelectorAll('.mark'),ok=m.length>0;"
	"m.forEach(function(e){var r=e.getBBox();n++;if(!(r.width>0||r.height>0)||r.x<-1||r.y<-1||"
	"r.x+r.width>v.width+1||r.y+r.height>v.height+1)ok=false});var b=s.getBBox();"
	"if(!(ok&&b.width>0&&b.height>0))bad.push(s.id)});"
	"var t=document.querySelectorAll('img.thumb'),tb=0;t.forEach(function(i){if(!(i.complete&&i.naturalWidth>0))tb++});"
	"document.getElementById('render-check').textContent='charts='+c.length+(bad.length?' failed: '+"
	"bad.join(' '):' ok')+' (marks='+n+')'+(t.length?' thumbs='+t.length+(tb?' broken='+tb:' ok'):'')+"
	"' queries='+document.querySelectorAll('.gallery .q').length+' placeholders='+"
	"document.querySelectorAll('.ph').length+' errors='+fcErr});\n";

static void fmt_metric(char *buf, size_t cap, double v)
{
	if (isfinite(v))
		fci_clip(buf, cap, "%.4f", v);
	else
		fci_clip(buf, cap, "n/a");
}

static void delta_cell(fci_sbuf *b, double before, double after)
{
	if (isfinite(before) && isfinite(after))
		fci_sb_printf(b, "<td class=\"n %s\">%+.4f</td>", after >= before ? "up" : "down", after - before);
	else
		fci_sb_puts(b, "<td class=\"n\">n/a</td>");
}

static void fmt_time(char *buf, size_t cap, time_t t)
{
	struct tm tm;
	if (t && localtime_r(&t, &tm))
		strftime(buf, cap, "%Y-%m-%d %H:%M:%S", &tm);
	else
		fci_clip(buf, cap, "unknown");
}

static void fmt_seconds(char *buf, size_t cap, double s)
{
	if (!isfinite(s))
		fci_clip(buf, cap, "n/a");
	else if (s < 120)
		fci_clip(buf, cap, "%.1f s", s);
	else if (s < 7200)
		fci_clip(buf, cap, "%.1f min", s / 60);
	else
		fci_clip(buf, cap, "%.1f h", s / 3600);
}

static void fact(fci_sbuf *b, const char *name, const char *value)
{
	fci_sb_printf(b, "<dt>%s</dt><dd>", name);
	fci_sb_esc(b, value);
	fci_sb_puts(b, "</dd>\n");
}

/* A config value (as text) that all runs share, or "a, b, c" of the first
 * distinct ones; "" when no run has it. */
static void config_summary(const fci_report *r, const char *key, char *buf, size_t cap)
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
			fci_clip(buf + n, cap - n, ", ...");
			break;
		}
		n += (size_t)snprintf(buf + n, cap - n, "%s%s", shown ? ", " : "", t);
		shown++;
	}
}

static void page_header(fci_sbuf *b, const fci_report *r, const char *title, const char *mname)
{
	char t[512], u[512];
	fci_sb_puts(b, "<header><h1>");
	fci_sb_esc(b, title);
	fci_sb_puts(b, "</h1>\n<p class=\"kind\">");
	if (r->sweep)
		fci_sb_printf(b, "A sweep of %zu configuration%s", r->n, r->n == 1 ? "" : "s");
	else if (r->n == 1)
		fci_sb_puts(b, "One training run");
	else
		fci_sb_printf(b, "%zu training runs compared", r->n);
	if (r->n_keys) {
		fci_sb_puts(b, " over ");
		for (size_t i = 0; i < r->n_keys; i++) {
			fci_sb_puts(b, i == 0 ? "" : i + 1 == r->n_keys ? " and " : ", ");
			fci_sb_puts(b, "<code>");
			fci_sb_esc(b, r->keys[i]);
			fci_sb_puts(b, "</code>");
		}
	}
	fci_sb_puts(b, "</p>\n<dl>\n");
	for (size_t i = 0; i < r->n_src; i++) {
		fmt_time(u, sizeof u, r->src[i].mtime);
		fci_sb_printf(b, "<dt>%s</dt><dd><code>", r->src[i].sweep ? "sweep results" : "training log");
		fci_sb_esc(b, r->src[i].path);
		fci_sb_puts(b, "</code> (last written ");
		fci_sb_esc(b, u);
		fci_sb_puts(b, ")</dd>\n");
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
		fci_clip(t, sizeof t, "trained on '%s', evaluated on '%s'%s%s%s, k = %s", tr[0] ? tr : "?",
			 ev[0] ? ev : "?", ix[0] && strcmp(ix, "null") ? " against '" : "",
			 ix[0] && strcmp(ix, "null") ? ix : "", ix[0] && strcmp(ix, "null") ? "'" : "", k[0] ? k : "?");
		fact(b, "data", t);
	}
	if (r->n) {
		const fc_run *best = &r->runs[r->order[0]];
		char s[64], bb[64];
		if (isfinite(score(r, best))) {
			fmt_metric(s, sizeof s, score(r, best));
			fmt_metric(bb, sizeof bb, best->before[r->metric]);
			fci_clip(t, sizeof t, "%s, epoch %.0f: %s %s (raw features %s)", r->multi ? best->id : "head",
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
		fci_clip(t, sizeof t, "%zu epoch%s, %s of training", epochs, epochs == 1 ? "" : "s", s);
		fact(b, "ran", t);
	}
	config_summary(r, "featcache", t, sizeof t);
	if (t[0])
		fact(b, "featcache", t);
	fmt_time(u, sizeof u, time(NULL));
	fact(b, "report made", u);
	fci_sb_puts(b, "</dl>\n</header>\n");
}

/* The header of a page of views alone (report --store --head). */
static void views_header(fci_sbuf *b, const fc_views *v, const char *title)
{
	char t[128], u[64];
	fci_sb_puts(b, "<header><h1>");
	fci_sb_esc(b, title);
	fci_sb_puts(b, "</h1>\n<p class=\"kind\">A head and its features</p>\n<dl>\n");
	fact(b, "store", v->store ? v->store : "?");
	fact(b, "head", v->head ? v->head : "?");
	fci_clip(t, sizeof t, "'%s', k = %zu", v->split ? v->split : "?", v->k);
	fact(b, "queries", t);
	fmt_time(u, sizeof u, time(NULL));
	fact(b, "report made", u);
	fci_sb_puts(b, "</dl>\n</header>\n");
}

/* The per-epoch charts: loss, then the chosen metric with the raw level. */
static size_t epoch_charts(fci_sbuf *b, const fci_report *r, const char *mname)
{
	size_t shown = r->n < FCI_MAX_LINES ? r->n : FCI_MAX_LINES, charts = 0;
	fci_series *s = calloc(2 * shown + 1, sizeof *s);
	char sub[256] = "";
	if (!s) {
		b->oom = 1;
		return 0;
	}
	if (r->n > shown)
		fci_clip(sub, sizeof sub, "the %zu best of %zu configurations by %s; all are in the leaderboard", shown,
			 r->n, mname);
	for (int what = 0; what < 2; what++) {
		size_t ns = 0, finite = 0;
		for (size_t i = 0; i < shown; i++) {
			const fc_run *run = &r->runs[r->order[i]];
			fci_series *q = &s[ns++];
			if (r->multi)
				run_label(r, run, q->name, sizeof q->name);
			else
				fci_clip(q->name, sizeof q->name, "%s", what ? "head (after)" : "training loss");
			q->color = fci_palette[i];
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
			fci_sb_printf(b, "<section><p class=\"note\">No %s per epoch in %s.%s</p></section>\n",
				      what ? "evaluation metrics" : "loss values",
				      r->n == 1 ? "this log" : "these logs",
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
				const fc_run *run = &r->runs[r->order[i]];
				if (same && i > 0)
					break;
				fci_series *q = &s[ns++];
				if (same)
					fci_clip(q->name, sizeof q->name, "raw features (before)");
				else
					fci_clip(q->name, sizeof q->name, "%s before", run->id);
				q->color = same ? FCI_C_BEFORE : fci_palette[i];
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
			fci_clip(title, sizeof title, "%s per epoch", mname);
			char ev[64];
			config_summary(r, "eval_split", ev, sizeof ev);
			fci_clip(ylabel, sizeof ylabel, "%s%s%s%s", mname, ev[0] ? " on '" : "", ev, ev[0] ? "'" : "");
		} else {
			char loss[64];
			config_summary(r, "loss", loss, sizeof loss);
			fci_clip(title, sizeof title, "Training loss per epoch");
			fci_clip(ylabel, sizeof ylabel, "loss%s%s%s", loss[0] && !strchr(loss, ',') ? " (" : "",
				 loss[0] && !strchr(loss, ',') ? loss : "", loss[0] && !strchr(loss, ',') ? ")" : "");
		}
		fci_sb_puts(b, "<section>\n");
		fci_chart_lines(b, what ? "chart-metric" : "chart-loss", title, sub, "epoch", ylabel, s, ns);
		fci_sb_puts(b, "</section>\n");
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

static void metrics_table(fci_sbuf *b, const fci_report *r, const fc_run *best)
{
	char name[32], v1[32], v2[32];
	fci_sb_puts(b, "<div class=\"wrap\"><table><thead><tr><th>metric</th><th class=\"n\">raw features</th>"
		       "<th class=\"n\">head</th><th class=\"n\">change</th></tr></thead><tbody>\n");
	for (int m = 0; m < FCI_NM; m++) {
		fmt_metric(v1, sizeof v1, best->before[m]);
		fmt_metric(v2, sizeof v2, best->best[m]);
		fci_sb_printf(b, "<tr%s><td>%s <code>%s</code></td><td class=\"n\">%s</td><td class=\"n\">%s</td>",
			      m == r->metric ? " class=\"best\"" : "", fci_metric_label(name, sizeof name, m, r->k),
			      fc_metric_names[m], v1, v2);
		delta_cell(b, best->before[m], best->best[m]);
		fci_sb_puts(b, "</tr>\n");
	}
	fci_sb_puts(b, "</tbody></table></div>\n");
}

static int bars_section(fci_sbuf *b, const fci_report *r)
{
	const fc_run *best = &r->runs[r->order[0]];
	int have = 0;
	for (int m = 0; m < FCI_NM; m++)
		have |= isfinite(best->before[m]) || isfinite(best->best[m]);
	if (!have)
		return 0;
	char title[256], after[256];
	if (r->multi) {
		fci_clip(title, sizeof title, "Raw features vs the best configuration, all metrics");
		fci_clip(after, sizeof after, "%s, epoch %.0f (after)", best->id, best->best_epoch);
	} else {
		fci_clip(title, sizeof title, "Raw features vs the head, all metrics");
		fci_clip(after, sizeof after, "head, epoch %.0f (after)", best->best_epoch);
	}
	fci_sb_puts(b, "<section>\n");
	fci_chart_bars(b, "chart-bars", title, best->before, best->best, after, r->k);
	metrics_table(b, r, best);
	fci_sb_puts(b, "</section>\n");
	return 1;
}

/* One scatter chart per swept key: numbers on a linear or (spanning ten
 * times or more) log axis, anything else as categories. */
static size_t sweep_charts(fci_sbuf *b, const fci_report *r, const char *mname)
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
		any |= isfinite(score(r, &r->runs[i]));
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
			const fc_run *run = &r->runs[i];
			json_t *v = run_value(run, key);
			char t[200], s[32];
			y[i] = score(r, run);
			value_text(t, sizeof t, v);
			fmt_metric(s, sizeof s, score(r, run));
			fci_clip(tips[i], sizeof tips[i], "%s: %s = %s, %s %s (epoch %.0f)", run->id, key, t, mname, s,
				 run->best_epoch);
			if (numeric) {
				x[i] = v ? json_number_value(v) : NAN;
				continue;
			}
			size_t c = 0;
			while (c < n_cat && strcmp(cats[c], t) != 0)
				c++;
			if (c == n_cat && !(cats[n_cat++] = strdup(t))) {
				b->oom = 1;
				goto out;
			}
			x[i] = (double)c;
		}
		fci_axis xa;
		int log = numeric && lo > 0 && hi / lo >= 10;
		if (!numeric) {
			memset(&xa, 0, sizeof xa);
			xa.n_cat = n_cat;
		} else if (log) {
			fci_axis_log(&xa, lo, hi);
		} else {
			int integer = 1;
			for (size_t i = 0; i < n; i++)
				integer &= !isfinite(x[i]) || x[i] == floor(x[i]);
			fci_axis_linear(&xa, lo, hi, integer);
		}
		char id[48], title[256], xlabel[200], ylabel[64];
		fci_clip(id, sizeof id, "chart-swept-%zu", k + 1);
		fci_clip(title, sizeof title, "%s at the best epoch vs %s", mname, key);
		fci_clip(xlabel, sizeof xlabel, "%s%s", key, log ? " (log scale)" : !numeric ? " (categories)" : "");
		fci_clip(ylabel, sizeof ylabel, "%s", mname);
		fci_sb_puts(b, "<section>\n");
		fci_chart_scatter(b, id, title, xlabel, ylabel, &xa, (const char *const *)cats, x, y, tips, n, best,
				  r->runs[best].before[r->metric]);
		fci_sb_puts(b, "</section>\n");
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

static void leaderboard(fci_sbuf *b, const fci_report *r, const char *mname)
{
	static const int extra[] = { 4, 0, 1, 8 };
	char name[32], v[256];
	fci_sb_printf(b, "<section><h2>Leaderboard</h2>\n<p class=\"note\">%zu configuration%s, the best ", r->n,
		      r->n == 1 ? "" : "s");
	fci_sb_esc(b, mname);
	fci_sb_puts(b, " first (each at its best epoch). Coloured ids are the lines in the per-epoch charts.</p>\n");
	fci_sb_puts(b, "<div class=\"wrap\"><table><thead><tr><th class=\"n\">#</th><th>id</th>");
	for (size_t k = 0; k < r->n_keys; k++) {
		fci_sb_puts(b, "<th>");
		fci_sb_esc(b, r->keys[k]);
		fci_sb_puts(b, "</th>");
	}
	fci_sb_puts(b, "<th class=\"n\">best epoch</th><th class=\"n\">");
	fci_sb_esc(b, mname);
	fci_sb_puts(b, "</th><th class=\"n\">vs raw</th>");
	for (size_t e = 0; e < sizeof extra / sizeof extra[0]; e++)
		if (extra[e] != r->metric)
			fci_sb_printf(b, "<th class=\"n\">%s</th>",
				      fci_metric_label(name, sizeof name, extra[e], r->k));
	fci_sb_puts(b, "<th class=\"n\">last loss</th><th class=\"n\">time</th></tr></thead><tbody>\n");
	for (size_t i = 0; i < r->n; i++) {
		const fc_run *run = &r->runs[r->order[i]];
		fci_sb_printf(b, "<tr%s><td class=\"n\">%zu</td><td>",
			      i == 0 && isfinite(score(r, run)) ? " class=\"best\"" : "", i + 1);
		if (i < FCI_MAX_LINES)
			fci_sb_printf(b, "<span class=\"sw\" style=\"background:%s\"></span>", fci_palette[i]);
		fci_sb_esc(b, run->id);
		fci_sb_puts(b, "</td>");
		for (size_t k = 0; k < r->n_keys; k++) {
			fci_sb_puts(b, "<td>");
			fci_sb_esc(b, value_text(v, sizeof v, run_value(run, r->keys[k])));
			fci_sb_puts(b, "</td>");
		}
		if (isfinite(run->best_epoch))
			fci_sb_printf(b, "<td class=\"n\">%.0f</td>", run->best_epoch);
		else
			fci_sb_puts(b, "<td class=\"n\">n/a</td>");
		fmt_metric(v, sizeof v, score(r, run));
		fci_sb_printf(b, "<td class=\"n\">%s</td>", v);
		delta_cell(b, run->before[r->metric], score(r, run));
		for (size_t e = 0; e < sizeof extra / sizeof extra[0]; e++) {
			if (extra[e] == r->metric)
				continue;
			fmt_metric(v, sizeof v, run->best[extra[e]]);
			fci_sb_printf(b, "<td class=\"n\">%s</td>", v);
		}
		double loss = run->n_ep ? run->ep[run->n_ep - 1].loss : NAN;
		if (isfinite(loss))
			fci_sb_printf(b, "<td class=\"n\">%.4g</td>", loss);
		else
			fci_sb_puts(b, "<td class=\"n\">n/a</td>");
		fmt_seconds(v, sizeof v, run->seconds);
		fci_sb_printf(b, "<td class=\"n\">%s</td></tr>\n", v);
	}
	fci_sb_puts(b, "</tbody></table></div></section>\n");
}

static void config_table(fci_sbuf *b, const fci_report *r)
{
	const fc_run *best = &r->runs[r->order[0]];
	fci_sb_puts(b, "<section><h2>");
	if (r->multi) {
		fci_sb_puts(b, "Configuration of the best run (<code>");
		fci_sb_esc(b, best->id);
		fci_sb_puts(b, "</code>)");
	} else {
		fci_sb_puts(b, "Configuration");
	}
	fci_sb_puts(b, "</h2>\n");
	if (!best->config) {
		fci_sb_puts(b,
			    "<p class=\"note\">The log holds no configuration (older featcache versions wrote "
			    "none for a run without evaluation).</p></section>\n");
		return;
	}
	fci_sb_puts(b, "<div class=\"wrap\"><table><thead><tr><th>option</th><th>value</th></tr></thead><tbody>\n");
	const char *key;
	json_t *v;
	char t[1024];
	json_object_foreach(best->config, key, v) {
		int swept = 0;
		for (size_t k = 0; k < r->n_keys; k++)
			swept |= strcmp(r->keys[k], key) == 0;
		fci_sb_puts(b, "<tr><td><code>");
		fci_sb_esc(b, key);
		fci_sb_printf(b, "</code>%s</td><td>", swept ? " (swept)" : "");
		fci_sb_esc(b, value_text(t, sizeof t, v));
		fci_sb_puts(b, "</td></tr>\n");
	}
	fci_sb_puts(b, "</tbody></table></div></section>\n");
}

static size_t render(fci_sbuf *b, const fci_report *r, const char *title_opt, const fc_views *views)
{
	char mname[64], title[512];
	size_t charts = 0;
	fci_metric_label(mname, sizeof mname, r->metric, r->k);
	if (title_opt)
		fci_clip(title, sizeof title, "%s", title_opt);
	else if (r->sweep)
		fci_clip(title, sizeof title, "featcache sweep report: %s", fci_base_name(r->src[0].path));
	else if (r->n)
		fci_clip(title, sizeof title, "featcache training report: %s", r->runs[0].id);
	else
		fci_clip(title, sizeof title, "featcache report: %s", views && views->head ? views->head : "");
	if (r->sweep && !title_opt && strcmp(fci_base_name(r->src[0].path), "results.jsonl") == 0) {
		/* Name the sweep by its directory, not by its results file. */
		const char *p = r->src[0].path;
		const char *end = p + strlen(p) - strlen("/results.jsonl"), *start = end;
		while (start > p && start[-1] != '/')
			start--;
		if (end > start)
			fci_clip(title, sizeof title, "featcache sweep report: %.*s", (int)(end - start), start);
	}
	fci_sb_puts(b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
		       "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
		       "<meta name=\"generator\" content=\"featcache report\">\n<title>");
	fci_sb_esc(b, title);
	fci_sb_printf(b, "</title>\n<style>\n%s%s</style>\n</head>\n<body>\n<main>\n", css,
		      views ? fci_views_css : "");
	if (r->n || !views)
		page_header(b, r, title, mname);
	else
		views_header(b, views, title);
	if (r->n) {
		charts += epoch_charts(b, r, mname);
		charts += (size_t)bars_section(b, r);
		if (r->multi)
			charts += sweep_charts(b, r, mname);
	}
	if (views)
		charts += fci_views_render(b, views);
	if (r->n) {
		if (r->multi)
			leaderboard(b, r, mname);
		config_table(b, r);
	}
	fci_sb_puts(b, "<p id=\"render-check\">render check did not run (scripts are off)</p>\n</main>\n<script>\n");
	fci_sb_puts(b, check_js);
	fci_sb_puts(b, "</script>\n</body>\n</html>\n");
	return charts;
}

/* The page goes to out whole or not at all. */
static int write_page(fci_report *r, const char *out, const char *data, size_t len)
{
	char why[FC_ERRLEN];
	int rc = fci_write_file(out, data, len, why, sizeof why);
	if (rc)
		fci_errf(r->err, r->errcap, rc, "cannot write report '%s': %s", out, why);
	return rc;
}

int fc_report_write(const char *out, const char *const *paths, size_t n, const char *metric, const char *title,
		    size_t *charts, char *err, size_t errcap)
{
	return fc_report_write_views(out, paths, n, metric, title, NULL, charts, err, errcap);
}

int fc_report_write_views(const char *out, const char *const *paths, size_t n, const char *metric,
			  const char *title, const fc_views *views, size_t *charts, char *err, size_t errcap)
{
	fci_report r = { 0 };
	fci_sbuf b = { 0 };
	int rc = 0;

	r.err = err;
	r.errcap = err ? errcap : 0;
	if (r.errcap)
		err[0] = '\0';
	if (charts)
		*charts = 0;
	r.metric = fc_metric_resolve(metric ? metric : "average_precision", NULL);
	if (r.metric < 0) {
		char list[FC_ERRLEN / 2];
		fc_metric_list(list, sizeof list);
		return fci_errf(r.err, r.errcap, FC_ERR_INVALID, "unknown metric '%s': expected %s", metric, list);
	}
	if (!out || ((!paths || n == 0) && !views))
		return fci_errf(r.err, r.errcap, FC_ERR_INVALID, "nothing to report on: no logs given");
	for (size_t i = 0; i < n; i++)
		if ((rc = fci_runlog_load(&r, paths[i])) != 0)
			goto out;
	/* The rename would replace a log with its own report. */
	struct stat so, si;
	for (size_t i = 0; i < r.n_src && stat(out, &so) == 0; i++)
		if (stat(r.src[i].path, &si) == 0 && si.st_dev == so.st_dev && si.st_ino == so.st_ino) {
			rc = fci_errf(r.err, r.errcap, FC_ERR_INVALID,
				      "cannot write report '%s': it is the log '%s' itself", out, r.src[i].path);
			goto out;
		}
	if ((rc = finish(&r)) != 0)
		goto out;
	size_t nc = render(&b, &r, title, views);
	if (b.oom) {
		rc = fci_errf(r.err, r.errcap, FC_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((rc = write_page(&r, out, b.p, b.len)) != 0)
		goto out;
	if (charts)
		*charts = nc;
out:
	free(b.p);
	free(r.keys);
	free(r.order);
	for (size_t i = 0; i < r.n; i++)
		fc_run_free(&r.runs[i]);
	free(r.runs);
	for (size_t i = 0; i < r.n_src; i++)
		free(r.src[i].path);
	free(r.src);
	return rc;
}
