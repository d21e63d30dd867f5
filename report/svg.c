/*
 * svg.c - the report's drawing: a text buffer with HTML escaping, axes with
 * nice ticks, and the three kinds of chart the page holds (lines over
 * epochs, a scatter against a swept parameter, bars of all metrics before
 * and after), each one inline SVG.
 *
 * It is not a plotting library: the axes, ticks and legends know only what
 * these charts need. What the charts show is page.c's business.
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report/report_impl.h"

#define SVG_W 960 /* every chart's width in user units */

/* ------------------------------------------------------------ text buffer */

void fci_sb_putn(fci_sbuf *b, const char *s, size_t n)
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

void fci_sb_puts(fci_sbuf *b, const char *s)
{
	fci_sb_putn(b, s, strlen(s));
}

void fci_sb_printf(fci_sbuf *b, const char *fmt, ...)
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
		fci_sb_putn(b, small, (size_t)n);
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
	fci_sb_putn(b, big, (size_t)n);
	free(big);
}

/* Length of the UTF-8 sequence at p, or 0 when it is not a valid one. */
static size_t utf8_len(const unsigned char *p)
{
	size_t n = p[0] < 0x80			  ? 1
		   : p[0] >= 0xc2 && p[0] <= 0xdf ? 2
		   : p[0] >= 0xe0 && p[0] <= 0xef ? 3
		   : p[0] >= 0xf0 && p[0] <= 0xf4 ? 4
						  : 0;
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

void fci_sb_esc_n(fci_sbuf *b, const char *s, size_t max)
{
	size_t left = max && utf8_chars(s) > max ? max - 1 : SIZE_MAX;
	const unsigned char *p = (const unsigned char *)s;

	while (*p && left--) {
		size_t l = utf8_len(p);
		switch (*p) {
		case '&': fci_sb_puts(b, "&amp;"); break;
		case '<': fci_sb_puts(b, "&lt;"); break;
		case '>': fci_sb_puts(b, "&gt;"); break;
		case '"': fci_sb_puts(b, "&quot;"); break;
		case '\'': fci_sb_puts(b, "&#39;"); break;
		default:
			if (l == 0 || (*p < 0x20 && *p != '\t' && *p != '\n') || *p == 0x7f)
				fci_sb_puts(b, "&#xFFFD;");
			else
				fci_sb_putn(b, (const char *)p, l);
		}
		p += l ? l : 1;
	}
	if (*p)
		fci_sb_puts(b, "&#x2026;");
}

void fci_sb_esc(fci_sbuf *b, const char *s)
{
	fci_sb_esc_n(b, s, 0);
}

void fci_clip(char *buf, size_t cap, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (vsnprintf(buf, cap, fmt, ap) < 0)
		buf[0] = '\0';
	va_end(ap);
}

/* ---------------------------------------------------------------- metrics */

static const char *const metric_label[FCI_NM] = { "precision", "recall",      "F1",  "hit", "mAP",
						  "MRR",       "R-precision", "DCG", "nDCG" };
static const int metric_at_k[FCI_NM] = { 1, 1, 1, 1, 1, 0, 0, 1, 1 };

/* "mAP@20", "MRR": how a metric is named on the page. */
const char *fci_metric_label(char *buf, size_t cap, int m, long k)
{
	if (metric_at_k[m] && k > 0)
		fci_clip(buf, cap, "%s@%ld", metric_label[m], k);
	else
		fci_clip(buf, cap, "%s", metric_label[m]);
	return buf;
}

/* ------------------------------------------------------------------- axes */

/* 1, 2, 2.5 or 5 times a power of ten, at least raw (integer axes skip 2.5
 * and fractions). */
static double nice_step(double raw, int integer)
{
	double e = pow(10, floor(log10(raw))), f = raw / e;
	double s = f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 && !integer ? 2.5 : f <= 5 ? 5 : 10;
	s *= e;
	return integer && s < 1 ? 1 : s;
}

void fci_axis_linear(fci_axis *a, double lo, double hi, int integer)
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

void fci_axis_log(fci_axis *a, double lo, double hi)
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
static double axis_frac(const fci_axis *a, double v)
{
	if (a->n_cat)
		return (v + 0.5) / (double)a->n_cat;
	if (a->log)
		return (log10(v) - log10(a->lo)) / (log10(a->hi) - log10(a->lo));
	return (v - a->lo) / (a->hi - a->lo);
}

/* Tick labels with as many decimals as the step needs. */
static const char *tick_text(char *buf, size_t cap, const fci_axis *a, double v)
{
	double av = fabs(v);
	if (a->log || av >= 1e6 || (av != 0 && av < 1e-4)) {
		fci_clip(buf, cap, "%g", v);
		return buf;
	}
	int d = 0;
	for (double s = a->step; d < 8; d++, s *= 10)
		if (fabs(s - round(s)) <= 1e-6 * fmax(1, s))
			break;
	fci_clip(buf, cap, "%.*f", d, v);
	return buf;
}

/* ----------------------------------------------------------------- charts */

/* Colours that stay apart on white and for the common colour blindnesses
 * as far as ten can; the order puts the most distinct first. */
const char *const fci_palette[FCI_MAX_LINES] = { "#1f6fb4", "#e07b00", "#2e9d4a", "#c8323a", "#7b52b9",
						 "#8c564b", "#d6589f", "#5f6b7a", "#a5a100", "#17a3b8" };

typedef struct plot {
	double x, y, w, h, pad; /* plot area; pad keeps points off the left and right edges */
} plot;

static double px_x(const plot *p, const fci_axis *a, double v)
{
	return p->x + p->pad + axis_frac(a, v) * (p->w - 2 * p->pad);
}

static double px_y(const plot *p, const fci_axis *a, double v)
{
	return p->y + p->h - axis_frac(a, v) * p->h;
}

static void svg_begin(fci_sbuf *b, const char *id, int h, const char *title, const char *subtitle)
{
	fci_sb_printf(b,
		      "<svg class=\"chart\" id=\"%s\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %d %d\" "
		      "width=\"%d\" height=\"%d\" role=\"img\" aria-labelledby=\"%s-t\">\n<title id=\"%s-t\">",
		      id, SVG_W, h, SVG_W, h, id, id);
	fci_sb_esc(b, title);
	fci_sb_printf(
		b, "</title>\n<rect class=\"bg\" width=\"%d\" height=\"%d\"/>\n<text class=\"ttl\" x=\"16\" y=\"26\">",
		SVG_W, h);
	fci_sb_esc(b, title);
	fci_sb_puts(b, "</text>\n");
	if (subtitle && *subtitle) {
		fci_sb_puts(b, "<text class=\"sub\" x=\"16\" y=\"44\">");
		fci_sb_esc(b, subtitle);
		fci_sb_puts(b, "</text>\n");
	}
}

/* Grid, axis lines, ticks and their labels, and the axis titles. Category
 * names come from cats when the x axis is categorical. */
static void draw_axes(fci_sbuf *b, const plot *p, const fci_axis *xa, const fci_axis *ya, const char *xlabel,
		      const char *ylabel, const char *const *cats)
{
	char t[64];
	fci_sb_puts(b, "<g class=\"grid\">");
	for (size_t i = 0; i < ya->n_ticks; i++)
		fci_sb_printf(b, "<path d=\"M%.1f %.1fH%.1f\"/>", p->x, px_y(p, ya, ya->ticks[i]), p->x + p->w);
	fci_sb_puts(b, "</g>\n<g class=\"axis\">");
	fci_sb_printf(b, "<path d=\"M%.1f %.1fV%.1fH%.1f\"/>", p->x, p->y, p->y + p->h, p->x + p->w);
	for (size_t i = 0; i < ya->n_ticks; i++) {
		double y = px_y(p, ya, ya->ticks[i]);
		fci_sb_printf(b,
			      "<path d=\"M%.1f %.1fh-5\"/><text class=\"tk\" x=\"%.1f\" y=\"%.1f\" "
			      "text-anchor=\"end\">%s</text>",
			      p->x, y, p->x - 8, y + 4, tick_text(t, sizeof t, ya, ya->ticks[i]));
	}
	size_t nx = xa->n_cat ? xa->n_cat : xa->n_ticks;
	double slot = (p->w - 2 * p->pad) / (double)(nx ? nx : 1);
	for (size_t i = 0; i < nx; i++) {
		double v = xa->n_cat ? (double)i : xa->ticks[i];
		double x = px_x(p, xa, v);
		fci_sb_printf(
			b, "<path d=\"M%.1f %.1fv5\"/><text class=\"tk\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">",
			x, p->y + p->h, x, p->y + p->h + 19);
		if (xa->n_cat) {
			/* 11px text is about 6.2px a character. */
			size_t fit = (size_t)(slot / 6.2);
			fci_sb_esc_n(b, cats[i], fit < 3 ? 3 : fit);
		} else {
			fci_sb_puts(b, tick_text(t, sizeof t, xa, v));
		}
		fci_sb_puts(b, "</text>");
	}
	fci_sb_puts(b, "</g>\n");
	fci_sb_printf(b, "<text class=\"lbl\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">", p->x + p->w / 2,
		      p->y + p->h + 44);
	fci_sb_esc(b, xlabel);
	fci_sb_printf(
		b,
		"</text>\n<text class=\"lbl\" transform=\"translate(%.1f %.1f) rotate(-90)\" text-anchor=\"middle\">",
		p->x - 56, p->y + p->h / 2);
	fci_sb_esc(b, ylabel);
	fci_sb_puts(b, "</text>\n");
}

/* One legend entry at (x, y): a swatch (a line, dashed or not, or a dot)
 * and the name, cut to what fits in the legend's column. */
static void legend_entry(fci_sbuf *b, double x, double y, const char *color, int style, const char *name, size_t fit)
{
	if (style == 2)
		fci_sb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"5\" fill=\"%s\"/>", x + 11, y - 4, color);
	else
		fci_sb_printf(b, "<path d=\"M%.1f %.1fh22\" stroke=\"%s\" stroke-width=\"3\"%s/>", x, y - 4, color,
			      style ? " stroke-dasharray=\"6 4\"" : "");
	fci_sb_printf(b, "<text class=\"lg\" x=\"%.1f\" y=\"%.1f\"><title>", x + 30, y);
	fci_sb_esc(b, name);
	fci_sb_puts(b, "</title>");
	fci_sb_esc_n(b, name, fit);
	fci_sb_puts(b, "</text>\n");
}

/* A line per series over epochs, with dots where there are few enough
 * points to tell apart. Non-finite values break the line. */
void fci_chart_lines(fci_sbuf *b, const char *id, const char *title, const char *subtitle, const char *xlabel,
		     const char *ylabel, const fci_series *s, size_t ns)
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
	fci_axis xa, ya;
	fci_axis_linear(&xa, xlo, xhi, 1);
	fci_axis_linear(&ya, ylo, yhi, 0);
	svg_begin(b, id, h, title, subtitle);
	draw_axes(b, &p, &xa, &ya, xlabel, ylabel, NULL);
	char v[64];
	for (size_t i = 0; i < ns; i++) {
		const fci_series *q = &s[i];
		if (q->dashed) {
			if (!isfinite(q->y[0]))
				continue;
			fci_sb_printf(b,
				      "<path class=\"mark\" d=\"M%.1f %.1fH%.1f\" stroke=\"%s\" stroke-width=\"2\" "
				      "stroke-dasharray=\"6 4\" fill=\"none\"><title>",
				      p.x, px_y(&p, &ya, q->y[0]), p.x + p.w, q->color);
			fci_sb_esc(b, q->name);
			fci_sb_printf(b, ": %.4f</title></path>\n", q->y[0]);
			continue;
		}
		/* Only runs of two or more points make a line; lone points get
		 * only their dot, so that every mark drawn has a visible box. */
		fci_sbuf d = { 0 };
		size_t run = 0, segs = 0;
		for (size_t j = 0; j < q->n; j++) {
			if (!isfinite(q->x[j]) || !isfinite(q->y[j])) {
				run = 0;
				continue;
			}
			int lone = run == 0 && (j + 1 >= q->n || !isfinite(q->y[j + 1]) || !isfinite(q->x[j + 1]));
			if (!lone) {
				fci_sb_printf(&d, "%c%.1f %.1f", run ? 'L' : 'M', px_x(&p, &xa, q->x[j]),
					      px_y(&p, &ya, q->y[j]));
				segs += run > 0;
			}
			run++;
		}
		b->oom |= d.oom;
		if (segs > 0 && !d.oom) {
			fci_sb_printf(b,
				      "<path class=\"mark\" d=\"%s\" stroke=\"%s\" stroke-width=\"2.2\" fill=\"none\" "
				      "stroke-linejoin=\"round\"><title>",
				      d.p, q->color);
			fci_sb_esc(b, q->name);
			fci_sb_puts(b, "</title></path>\n");
		}
		free(d.p);
		if (q->n > 60 && segs > 0)
			continue;
		for (size_t j = 0; j < q->n; j++) {
			if (!isfinite(q->x[j]) || !isfinite(q->y[j]))
				continue;
			fci_sb_printf(b, "<circle class=\"mark\" cx=\"%.1f\" cy=\"%.1f\" r=\"3.2\" fill=\"%s\"><title>",
				      px_x(&p, &xa, q->x[j]), px_y(&p, &ya, q->y[j]), q->color);
			fci_sb_esc(b, q->name);
			fci_clip(v, sizeof v, ", epoch %.0f: %.5g", q->x[j], q->y[j]);
			fci_sb_esc(b, v);
			fci_sb_puts(b, "</title></circle>");
		}
		fci_sb_puts(b, "\n");
	}
	for (size_t i = 0; i < ns; i++)
		legend_entry(b, p.x + colw * (double)(i / rows), p.y + p.h + 76 + 20 * (double)(i % rows), s[i].color,
			     s[i].dashed, s[i].name, (size_t)((colw - 44) / 6.9));
	fci_sb_puts(b, "</svg>\n");
}

/* The chosen metric at the best epoch against one swept parameter; the best
 * configuration in its own colour, the raw features as a dashed level.
 * Points on the same x spread a little sideways so that none hides. */
void fci_chart_scatter(fci_sbuf *b, const char *id, const char *title, const char *xlabel, const char *ylabel,
		       const fci_axis *xa, const char *const *cats, const double *x, const double *y, char (*tips)[256],
		       size_t n, size_t best, double before)
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
	fci_axis ya;
	fci_axis_linear(&ya, ylo, yhi, 0);
	svg_begin(b, id, h, title, NULL);
	draw_axes(b, &p, xa, &ya, xlabel, ylabel, cats);
	if (isfinite(before)) {
		fci_sb_printf(b,
			      "<path class=\"mark\" d=\"M%.1f %.1fH%.1f\" stroke=\"%s\" stroke-width=\"2\" "
			      "stroke-dasharray=\"6 4\" fill=\"none\"><title>raw features: %.4f</title></path>\n",
			      p.x, px_y(&p, &ya, before), p.x + p.w, FCI_C_BEFORE, before);
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
			fci_sb_printf(b,
				      "<circle class=\"mark\" cx=\"%.1f\" cy=\"%.1f\" r=\"%s\" fill=\"%s\" "
				      "fill-opacity=\"%s\" "
				      "stroke=\"#fff\" stroke-width=\"1\"><title>",
				      px_x(&p, xa, x[i]) + k * step, px_y(&p, &ya, y[i]), hi ? "6.5" : "4.5",
				      hi ? FCI_C_BEST : FCI_C_AFTER, hi ? "1" : "0.75");
			fci_sb_esc(b, tips[i]);
			fci_sb_puts(b, "</title></circle>\n");
		}
	/* Short entries: one row above the plot. */
	double lx = SVG_W - 24 - 480;
	legend_entry(b, lx, 48, FCI_C_AFTER, 2, "configuration", 30);
	legend_entry(b, lx + 130, 48, FCI_C_BEST, 2, "best configuration", 30);
	if (isfinite(before))
		legend_entry(b, lx + 290, 48, FCI_C_BEFORE, 1, "raw features (before)", 30);
	fci_sb_puts(b, "</svg>\n");
}

/* Grouped bars of one set of metrics (indices idx[0..n)) on their own y
 * axis inside plot p: raw features grey, the head coloured, values above. */
static void bar_panel(fci_sbuf *b, const plot *p, const int *idx, size_t n, const double *before, const double *after,
		      long k, const char *ylabel)
{
	double hi = 0;
	for (size_t i = 0; i < n; i++) {
		if (isfinite(before[idx[i]]))
			hi = fmax(hi, before[idx[i]]);
		if (isfinite(after[idx[i]]))
			hi = fmax(hi, after[idx[i]]);
	}
	fci_axis xa = { 0 }, ya;
	xa.n_cat = n;
	fci_axis_linear(&ya, 0, hi > 0 ? hi : 1, 0);
	const char *cats[FCI_NM];
	char names[FCI_NM][32];
	for (size_t i = 0; i < n; i++)
		cats[i] = fci_metric_label(names[i], sizeof names[i], idx[i], k);
	draw_axes(b, p, &xa, &ya, "", ylabel, cats);
	double slot = p->w / (double)n, bw = fmin(30, slot * 0.34);
	for (size_t i = 0; i < n; i++) {
		double cx = px_x(p, &xa, (double)i);
		const double v[2] = { before[idx[i]], after[idx[i]] };
		for (int s = 0; s < 2; s++) {
			double x = cx + (s ? 2 : -2 - bw);
			if (!isfinite(v[s])) {
				fci_sb_printf(
					b,
					"<text class=\"val\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">n/a</text>",
					x + bw / 2, p->y + p->h - 4);
				continue;
			}
			double y = px_y(p, &ya, v[s]);
			fci_sb_printf(
				b,
				"<rect class=\"mark\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\">"
				"<title>%s %s: %.4f</title></rect>",
				x, y, bw, p->y + p->h - y, s ? FCI_C_AFTER : FCI_C_BEFORE, names[i],
				s ? "after" : "before", v[s]);
			fci_sb_printf(b, "<text class=\"val\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.3f</text>",
				      x + bw / 2, y - 4, v[s]);
		}
		fci_sb_puts(b, "\n");
	}
}

void fci_chart_bars(fci_sbuf *b, const char *id, const char *title, const double *before, const double *after,
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
	fci_sb_printf(
		b,
		"<rect x=\"%.1f\" y=\"%.1f\" width=\"14\" height=\"10\" fill=\"%s\"/><text class=\"lg\" x=\"%.1f\" "
		"y=\"%.1f\">raw features (before)</text>",
		lx + 300, ly - 9, FCI_C_BEFORE, lx + 320, ly);
	fci_sb_printf(
		b,
		"<rect x=\"%.1f\" y=\"%.1f\" width=\"14\" height=\"10\" fill=\"%s\"/><text class=\"lg\" x=\"%.1f\" "
		"y=\"%.1f\"><title>",
		lx + 470, ly - 9, FCI_C_AFTER, lx + 490, ly);
	fci_sb_esc(b, after_name);
	fci_sb_puts(b, "</title>");
	fci_sb_esc_n(b, after_name, 50);
	fci_sb_puts(b, "</text>\n</svg>\n");
}
