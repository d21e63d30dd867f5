/*
 * gallery.c - the report's pictures of what a head learned, drawn from the
 * plain data of fc_views (report.h): neighbour galleries (each query's
 * thumbnail and its nearest items, raw features above the head, same-class
 * and other-class neighbours marked), the per-class table with the most
 * confused class pairs, and the 2-D map of the embeddings, raw and head
 * side by side (inline SVG, one colour per class).
 *
 * Thumbnails go into the page as data URIs (base64 JPEG), so the page
 * stays one file that opens offline. What to show and how large the
 * thumbnails are is the caller's choice; this file only draws.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report/report_impl.h"

const char fci_views_css[] =
	".q{border-top:1px solid #e5e7eb;padding:10px 0}.qh{display:flex;gap:12px;align-items:flex-start;margin:0 0 6px}\n"
	".qi{font-size:13px}.qi b{font-weight:600}.row{display:flex;gap:6px;align-items:flex-start;margin:4px 0}\n"
	".rl{width:44px;flex:none;font-size:12px;color:#6b7280;padding-top:24px}\n"
	"figure.it{margin:0;width:68px;flex:none;text-align:center;font-size:10.5px;line-height:1.25;color:#374151}\n"
	"figure.it.qy{width:100px}figure.it img,figure.it .ph{display:block;box-sizing:border-box;width:68px;"
	"height:68px;object-fit:contain;background:#f3f4f6;border:3px solid #d1d5db;border-radius:4px}\n"
	"figure.qy img,figure.qy .ph{width:100px;height:100px;border-color:#1f2937}\n"
	"figure.same img,figure.same .ph{border-color:#16a34a}figure.other img,figure.other .ph{border-color:#dc2626}\n"
	"img.px{image-rendering:pixelated}figcaption{overflow-wrap:anywhere;margin-top:2px}\n"
	".ph{font-size:9px;color:#6b7280;overflow:hidden;padding:4px;overflow-wrap:anywhere;text-align:left}\n"
	".mk{font-weight:700}.same .mk{color:#16a34a}.other .mk{color:#dc2626}\n";

/* ------------------------------------------------------------ base64 */

static void put_base64(fci_sbuf *b, const uint8_t *p, size_t n)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char out[1024];
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
			     (i + 2 < n ? p[i + 2] : 0);
		out[o++] = tab[v >> 18 & 63];
		out[o++] = tab[v >> 12 & 63];
		out[o++] = i + 1 < n ? tab[v >> 6 & 63] : '=';
		out[o++] = i + 2 < n ? tab[v & 63] : '=';
		if (o + 4 > sizeof out) {
			fci_sb_putn(b, out, o);
			o = 0;
		}
	}
	fci_sb_putn(b, out, o);
}

/* ---------------------------------------------------------- galleries */

/* One picture: the thumbnail, or a placeholder that names the item. side
 * is the box the page draws it in; smaller thumbnails are shown pixelated
 * (upscaled smoothly, a 28-pixel image is a blur). */
static void picture(fci_sbuf *b, const fc_view_item *it, int side)
{
	if (!it->jpeg) {
		fci_sb_puts(b, "<div class=\"ph\" data-key=\"");
		fci_sb_esc(b, it->key);
		fci_sb_puts(b, "\" title=\"");
		fci_sb_esc(b, it->key);
		fci_sb_puts(b, "\">");
		fci_sb_esc_n(b, it->missing ? it->missing : "no picture", 40);
		fci_sb_puts(b, "<br><code>");
		fci_sb_esc_n(b, it->key, 80);
		fci_sb_puts(b, "</code></div>");
		return;
	}
	fci_sb_printf(b, "<img class=\"thumb%s\" width=\"%d\" height=\"%d\" alt=\"", it->w * 2 <= side ? " px" : "",
		      it->w, it->h);
	fci_sb_esc(b, it->key);
	fci_sb_puts(b, "\" title=\"");
	fci_sb_esc(b, it->key);
	fci_sb_puts(b, "\" src=\"data:image/jpeg;base64,");
	put_base64(b, it->jpeg, it->jpeg_len);
	fci_sb_puts(b, "\">");
}

static void query_block(fci_sbuf *b, const fc_views *v, const fc_view_query *q)
{
	const fc_view_item *qi = &v->items[q->item];
	fci_sb_puts(b, "<div class=\"q\" data-key=\"");
	fci_sb_esc(b, qi->key);
	fci_sb_puts(b, "\"><div class=\"qh\"><figure class=\"it qy\">");
	picture(b, qi, 100);
	fci_sb_puts(b, "<figcaption>");
	fci_sb_esc_n(b, qi->label, 40);
	fci_sb_puts(b, "</figcaption></figure><div class=\"qi\"><b>");
	fci_sb_esc(b, q->why);
	fci_sb_puts(b, "</b><br><code>");
	fci_sb_esc(b, qi->key);
	fci_sb_printf(b, "</code><br>label ");
	fci_sb_esc(b, qi->label);
	fci_sb_printf(b, "<br>AP@%zu %.3f &rarr; %.3f <span class=\"%s\">(%+.3f)</span></div></div>\n", v->k, q->ap[0],
		      q->ap[1], q->ap[1] >= q->ap[0] ? "up" : "down", q->ap[1] - q->ap[0]);
	for (int s = 0; s < 2; s++) {
		fci_sb_printf(b, "<div class=\"row\"><span class=\"rl\">%s</span>", s ? "head" : "raw");
		for (size_t j = 0; j < q->n[s]; j++) {
			const fc_view_item *it = &v->items[q->nb[s][j]];
			int same = it->cls == qi->cls;
			fci_sb_printf(b, "<figure class=\"it %s\">", same ? "same" : "other");
			picture(b, it, 68);
			fci_sb_printf(b, "<figcaption><span class=\"mk\" title=\"%s\">%s</span> ",
				      same ? "same class" : "other class", same ? "&#10003;" : "&#10007;");
			fci_sb_esc_n(b, it->label, 24);
			fci_sb_printf(b, "<br>%.3f</figcaption></figure>", (double)q->sim[s][j]);
		}
		if (q->n[s] == 0)
			fci_sb_puts(b, "<span class=\"note\">no neighbours</span>");
		fci_sb_puts(b, "</div>\n");
	}
	fci_sb_puts(b, "</div>\n");
}

static void galleries(fci_sbuf *b, const fc_views *v)
{
	fci_sb_puts(b, "<section class=\"gallery\" id=\"gallery\"><h2>Neighbours before and after</h2>\n"
		       "<p class=\"note\">Each query of the <code>");
	fci_sb_esc(b, v->split ? v->split : "?");
	fci_sb_printf(b,
		      "</code> split with its %zu nearest items by cosine similarity: the raw backbone features "
		      "(<b>raw</b>) above the head's embeddings (<b>head</b>). A green frame and &#10003; is a "
		      "neighbour of the query's class, a red frame and &#10007; one of another class; the number is "
		      "the similarity. Queries are a fixed seeded sample, then those whose average precision the head "
		      "improved most and hurt most.</p>\n",
		      v->neighbours);
	if (v->note) {
		fci_sb_puts(b, "<p class=\"note\" id=\"gallery-note\">");
		fci_sb_esc(b, v->note);
		fci_sb_puts(b, "</p>\n");
	}
	for (size_t i = 0; i < v->n_queries; i++)
		query_block(b, v, &v->queries[i]);
	fci_sb_puts(b, "</section>\n");
}

/* ------------------------------------------------------- per-class table */

static void class_tables(fci_sbuf *b, const fc_views *v)
{
	fci_sb_printf(b,
		      "<section id=\"classes\"><h2>Per class</h2>\n<p class=\"note\">precision@%zu and mAP@%zu of each "
		      "class's queries (the mean of their own metrics), raw features and head, the largest gain in "
		      "mAP@%zu first.</p>\n<div class=\"wrap\"><table><thead><tr><th>class</th><th class=\"n\">queries</th>"
		      "<th class=\"n\">precision raw</th><th class=\"n\">precision head</th><th class=\"n\">mAP raw</th>"
		      "<th class=\"n\">mAP head</th><th class=\"n\">change</th></tr></thead><tbody>\n",
		      v->k, v->k, v->k);
	for (size_t i = 0; i < v->n_classes; i++) {
		const fc_view_class *c = &v->classes[i];
		fci_sb_puts(b, "<tr><td>");
		fci_sb_esc(b, c->label);
		fci_sb_printf(b,
			      "</td><td class=\"n\">%zu</td><td class=\"n\">%.4f</td><td class=\"n\">%.4f</td>"
			      "<td class=\"n\">%.4f</td><td class=\"n\">%.4f</td><td class=\"n %s\">%+.4f</td></tr>\n",
			      c->queries, c->precision[0], c->precision[1], c->ap[0], c->ap[1],
			      c->ap[1] >= c->ap[0] ? "up" : "down", c->ap[1] - c->ap[0]);
	}
	fci_sb_puts(b, "</tbody></table></div>\n");
	if (v->n_pairs) {
		fci_sb_printf(b,
			      "<h2 style=\"margin-top:16px\">Most confused classes</h2>\n<p class=\"note\">Of all "
			      "neighbours (top %zu) of another class than their query's, the share that falls between "
			      "the two classes, either way round.</p>\n<div class=\"wrap\"><table id=\"pairs\"><thead><tr>"
			      "<th>classes</th><th class=\"n\">share raw</th><th class=\"n\">share head</th>"
			      "</tr></thead><tbody>\n",
			      v->k);
		for (size_t i = 0; i < v->n_pairs; i++) {
			const fc_view_pair *p = &v->pairs[i];
			fci_sb_puts(b, "<tr><td>");
			fci_sb_esc(b, p->a);
			fci_sb_puts(b, " &harr; ");
			fci_sb_esc(b, p->b);
			fci_sb_printf(b, "</td><td class=\"n\">%.1f %%</td><td class=\"n\">%.1f %%</td></tr>\n",
				      100 * p->share[0], 100 * p->share[1]);
		}
		fci_sb_puts(b, "</tbody></table></div>\n");
	}
	fci_sb_puts(b, "</section>\n");
}

/* ------------------------------------------------------------------ map */

/* A class's colour: the line palette first, then hues a golden angle apart. */
static void class_colour(char *buf, size_t cap, size_t c)
{
	if (c < FCI_MAX_LINES)
		fci_clip(buf, cap, "%s", fci_palette[c]);
	else
		fci_clip(buf, cap, "hsl(%d,62%%,%d%%)", (int)(fmod((double)c * 137.508, 360)), c % 2 ? 38 : 52);
}

#define MAP_SIDE 440.0
#define MAP_TOP 64.0

static void map_panel(fci_sbuf *b, const fc_views *v, int s, double x0)
{
	const float *xy = v->xy[s];
	double lo[2] = { INFINITY, INFINITY }, hi[2] = { -INFINITY, -INFINITY };
	for (size_t i = 0; i < v->n_points; i++)
		for (int a = 0; a < 2; a++) {
			lo[a] = fmin(lo[a], xy[2 * i + a]);
			hi[a] = fmax(hi[a], xy[2 * i + a]);
		}
	/* One scale for both axes, so that distances read the same either way. */
	double span = fmax(hi[0] - lo[0], hi[1] - lo[1]);
	span = span > 0 ? span : 1;
	double sc = (MAP_SIDE - 16) / span, cx = (lo[0] + hi[0]) / 2, cy = (lo[1] + hi[1]) / 2;
	fci_sb_printf(b,
		      "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#fafafa\" stroke=\"#d1d5db\"/>"
		      "<text class=\"lbl\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s: PC1 %.0f %%, PC2 %.0f %% of the "
		      "variance</text>\n",
		      x0, MAP_TOP, MAP_SIDE, MAP_SIDE, x0 + MAP_SIDE / 2, MAP_TOP - 8,
		      s ? "head" : "raw features", 100 * v->explained[s][0], 100 * v->explained[s][1]);
	for (size_t i = 0; i < v->n_points; i++) {
		double px = x0 + MAP_SIDE / 2 + (xy[2 * i] - cx) * sc;
		double py = MAP_TOP + MAP_SIDE / 2 - (xy[2 * i + 1] - cy) * sc;
		fci_sb_printf(b, "<circle class=\"mark k%u\" cx=\"%.1f\" cy=\"%.1f\" r=\"2.2\"><title>", v->point_class[i],
			      px, py);
		fci_sb_esc(b, v->point_key[i]);
		fci_sb_puts(b, ": ");
		fci_sb_esc(b, v->class_names[v->point_class[i]]);
		fci_sb_puts(b, "</title></circle>");
		if (i % 8 == 7)
			fci_sb_puts(b, "\n");
	}
	fci_sb_puts(b, "\n");
}

static size_t embedding_map(fci_sbuf *b, const fc_views *v)
{
	if (!v->n_points)
		return 0;
	size_t nc = v->n_class_names, cols = 6, rows = (nc + cols - 1) / cols;
	int h = (int)(MAP_TOP + MAP_SIDE + 24 + 20 * (double)rows);
	char colour[64];
	fci_sb_puts(b, "<section id=\"map\"><style>");
	for (size_t c = 0; c < nc; c++) {
		class_colour(colour, sizeof colour, c);
		fci_sb_printf(b, "#chart-map .k%zu{fill:%s}", c, colour);
	}
	fci_sb_puts(b, "</style>\n");
	fci_sb_printf(b,
		      "<svg class=\"chart\" id=\"chart-map\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 960 %d\" "
		      "width=\"960\" height=\"%d\" role=\"img\" aria-labelledby=\"chart-map-t\">\n<title "
		      "id=\"chart-map-t\">Embedding map</title>\n<rect class=\"bg\" width=\"960\" height=\"%d\"/>\n"
		      "<text class=\"ttl\" x=\"16\" y=\"26\">Embedding map: raw features and head</text>\n"
		      "<text class=\"sub\" x=\"16\" y=\"44\">",
		      h, h, h);
	char sub[256];
	fci_clip(sub, sizeof sub, "%zu items of '%s'%s, L2-normalised, on their first two principal components; "
		 "hover a point for its key", v->n_points, v->split ? v->split : "?",
		 v->map_total > v->n_points ? " (a seeded sample)" : "");
	fci_sb_esc(b, sub);
	fci_sb_puts(b, "</text>\n");
	map_panel(b, v, 0, 24);
	map_panel(b, v, 1, 960 - 24 - MAP_SIDE);
	for (size_t c = 0; c < nc; c++) {
		double x = 24 + 152 * (double)(c % cols), y = MAP_TOP + MAP_SIDE + 30 + 20 * (double)(c / cols);
		fci_sb_printf(b, "<circle class=\"k%zu\" cx=\"%.1f\" cy=\"%.1f\" r=\"5\"/><text class=\"lg\" x=\"%.1f\" "
			      "y=\"%.1f\"><title>", c, x + 5, y - 4, x + 14, y);
		fci_sb_esc(b, v->class_names[c]);
		fci_sb_puts(b, "</title>");
		fci_sb_esc_n(b, v->class_names[c], 20);
		fci_sb_puts(b, "</text>\n");
	}
	fci_sb_puts(b, "</svg>\n</section>\n");
	return 1;
}

size_t fci_views_render(fci_sbuf *b, const fc_views *v)
{
	if (v->n_queries || v->note)
		galleries(b, v);
	if (v->n_classes)
		class_tables(b, v);
	return embedding_map(b, v);
}
