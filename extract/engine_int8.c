/*
 * engine_int8.c - the engine's int8 builders (FC_PREC_INT8): convolutions
 * and Gemm/MatMul with constant weights computed on u8/s8 codes, and which
 * tensors an f32 engine observes for calibration.
 *
 * Quantisation, per node:
 *  - weights: s8, symmetric, one scale per output channel (max |w| / 127),
 *    after BatchNorm is folded in; quantised here, in C, then reordered
 *    into the layout oneDNN picks (which adds its s8 compensation);
 *  - source: the tensor's calibrated range [lo, hi] (fc_calib): lo >= 0
 *    (after ReLU, ReLU6, Sigmoid) is u8 with scale hi / 255, anything else
 *    s8 symmetric with scale max(-lo, hi) / 127; no zero points. A scaled
 *    reorder ("Quantize") writes the codes, once per tensor however many
 *    convolutions read it (a ResNet block's input feeds two);
 *  - output: f32, through oneDNN's per-channel output scales (src scale x
 *    weight scale); the bias is divided by the same scales, since oneDNN
 *    2.6 adds it to the s32 accumulator before scaling. The post-ops (ReLU,
 *    swish, a residual `sum`) then run on f32 values as in the f32 engine.
 * MatMul/Gemm are built by engine_ops.c's build_matmul, which asks
 * fci_matmul_int8 for the int8 primitive and keeps its fusions (bias Add,
 * LayerScale, GELU, residual `sum`); so a transformer's projections (QKV,
 * attention output, MLP) are int8 and its attention (Softmax, MatMuls of
 * two activations), LayerNorm and GELU stay f32.
 * Everything else (pooling, standalone adds, SE gates, concat) stays f32.
 * A node stays f32 when the table has no range for its input (or the
 * range is empty), or when oneDNN has only a reference kernel for its
 * int8 form (`ref` implementations are slower than f32 jit ones).
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "extract/engine_impl.h"

/* oneDNN's ISA values are bit sets (see native_bf16 in engine.c):
 * AVX512_VNNI and AMX include avx512_core_vnni's bits, AVX-VNNI is its own. */
static int has_vnni(dnnl_cpu_isa_t isa)
{
	unsigned v = (unsigned)isa;
	return (v & (unsigned)dnnl_cpu_isa_avx512_core_vnni) == (unsigned)dnnl_cpu_isa_avx512_core_vnni ||
	       (v & (unsigned)dnnl_cpu_isa_avx2_vnni) == (unsigned)dnnl_cpu_isa_avx2_vnni;
}

int fci_int8_check(build *b)
{
	dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
	if (!has_vnni(isa))
		return fci_build_fail(b, FC_ERR_UNSUPPORTED,
				      "int8 needs a cpu with vnni or amx (avx512_vnni, avx_vnni); onednn reports %s, "
				      "where int8 would be no faster than f32: use f32",
				      fci_isa_name(isa));
	return 0;
}

int fci_calib_copy(fc_calib **out, const fc_calib *c)
{
	*out = NULL;
	if (!c)
		return 0;
	fc_calib *k = calloc(1, sizeof *k);
	if (!k || (c->n && !(k->r = calloc(c->n, sizeof *k->r)))) {
		free(k);
		return FC_ERR_NOMEM;
	}
	k->images = c->images;
	for (; k->n < c->n; k->n++) {
		k->r[k->n] = c->r[k->n];
		if (!(k->r[k->n].tensor = strdup(c->r[k->n].tensor))) {
			fc_calib_free(k);
			return FC_ERR_NOMEM;
		}
	}
	*out = k;
	return 0;
}

/* Tensor t's quantisation: 1 with its scale (real = code x scale) and code
 * type, or 0 when it stays f32 (no usable range). */
static int quant_of(const build *b, int t, float *scale, dnnl_data_type_t *dt)
{
	const char *name = b->g->tensors[t].name;
	float lo = -1, hi = 1;
	if (b->calib) {
		size_t k = 0;
		while (k < b->calib->n && strcmp(b->calib->r[k].tensor, name) != 0)
			k++;
		if (k == b->calib->n)
			return 0;
		lo = b->calib->r[k].lo, hi = b->calib->r[k].hi;
	}
	if (!isfinite(lo) || !isfinite(hi) || !(hi > 0 || lo < 0))
		return 0;
	if (lo >= 0) {
		*dt = dnnl_u8;
		*scale = hi / 255.0f;
	} else {
		*dt = dnnl_s8;
		*scale = fmaxf(-lo, hi) / 127.0f;
	}
	return *scale > 0 && isfinite(*scale);
}

/* Value v's data in layout md: codes at scale `scale` (md u8/s8), or real
 * values (scale 0, md f32). A scaled reorder converts (v's own codes
 * dequantised by its qscale); made once per layout, then shared. */
static int converted(build *b, int node, int v, const dnnl_memory_desc_t *md, float scale)
{
	fc_engine *e = b->e;
	int last = v;
	for (int w = v; w >= 0; w = fci_val(b, w)->alt) {
		if (dnnl_memory_desc_equal(&fci_val(b, w)->md, md))
			return w;
		last = w;
	}
	float from = fci_val(b, v)->qscale, k = (from > 0 ? from : 1.0f) / (scale > 0 ? scale : 1.0f);
	int w = fci_new_value(b, md, NULL);
	if (w < 0)
		return w;
	fci_val(b, last)->alt = w;
	fci_val(b, w)->until = fci_val(b, fci_val(b, v)->root)->until;
	fci_val(b, w)->qscale = scale;
	dnnl_primitive_attr_t attr = NULL;
	dnnl_primitive_desc_t pd = NULL;
	if (dnnl_primitive_attr_create(&attr) != dnnl_success)
		return FC_ERR_NOMEM;
	dnnl_status_t st = k != 1.0f ? dnnl_primitive_attr_set_output_scales(attr, 1, 0, &k) : dnnl_success;
	st = fci_first_failure(st, dnnl_reorder_primitive_desc_create(&pd, &fci_val(b, v)->md, e->eng, md, e->eng, attr));
	dnnl_primitive_attr_destroy(attr);
	if (st != dnnl_success)
		return fci_build_fail(b, FC_ERR_INTERNAL, "node '%s': onednn cannot convert its input (%s)",
				      b->g->nodes[node].name, fci_dnnl_status_name(st));
	int rc = fci_unary_step(b, node, pd, v, w, scale > 0 ? (from > 0 ? "Requantize" : "Quantize") : "Dequantize");
	return rc ? rc : w;
}

int fci_real_value(build *b, int node, int v)
{
	const value *x = fci_val(b, v);
	dnnl_memory_desc_t md;
	if (x->qscale <= 0)
		return v;
	/* NHWC, the layout the convs after it take in f32 (docs/measured.md) */
	if (dnnl_memory_desc_init_by_tag(&md, x->md.ndims, x->md.dims, b->e->dt,
					 x->md.ndims == 4 ? dnnl_acdb : dnnl_ab) != dnnl_success)
		return FC_ERR_INTERNAL;
	return converted(b, node, v, &md, 0);
}

/* *po again, its `sum` now adding the destination's previous content read
 * as codes of type dt times scale. */
static int repost(dnnl_post_ops_t *po, float scale, dnnl_data_type_t dt)
{
	dnnl_post_ops_t q;
	dnnl_status_t st = dnnl_success;
	if (dnnl_post_ops_create(&q) != dnnl_success)
		return FC_ERR_NOMEM;
	for (int k = 0; k < dnnl_post_ops_len(*po) && st == dnnl_success; k++) {
		float sc, al, be;
		dnnl_alg_kind_t alg;
		if (dnnl_post_ops_get_kind(*po, k) == dnnl_sum) {
			st = dnnl_post_ops_append_sum_v2(q, scale, dt);
		} else {
			st = dnnl_post_ops_get_params_eltwise(*po, k, &sc, &alg, &al, &be);
			st = fci_first_failure(st, dnnl_post_ops_append_eltwise(q, sc, alg, al, be));
		}
	}
	if (st != dnnl_success) {
		dnnl_post_ops_destroy(q);
		return FC_ERR_INTERNAL;
	}
	dnnl_post_ops_destroy(*po);
	*po = q;
	return 0;
}

/* 1 when conv node i's output tensor t can be int8 codes: every reader is
 * a Conv taking it as its input or an Add (a residual, which a later conv
 * takes as its `sum`; an Add built on its own gets a dequantised copy,
 * fci_int8_inputs), it is not a cut, and the table has its range. */
static int codes_out(const build *b, int t, float *scale, dnnl_data_type_t *dt)
{
	const fc_model_graph *g = b->g;
	int readers = 0;
	float s;
	dnnl_data_type_t d;
	if (fci_is_cut(g, t) || !quant_of(b, t, &s, &d))
		return 0;
	for (int j = 0; j < g->n_nodes; j++) {
		if (!fci_runs(b, j) || !fci_reads(&g->nodes[j], t))
			continue;
		const fc_model_node *c = &g->nodes[j];
		if (c->op != FC_OP_ADD && (c->op != FC_OP_CONV || c->in[0] != t || c->n_in < 2 || c->in[1] == t))
			return 0;
		readers++;
	}
	if (readers != b->uses[t])
		return 0;
	*scale = s, *dt = d;
	return 1;
}

/* s8 codes of n weights per output channel (oc of them, channel o's weight k
 * at p[o * so + k * sk]) into q (same positions); scale[o] = max |w| / 127. */
static void quantize_weights(const float *p, int8_t *q, float *scale, int64_t oc, int64_t n, int64_t so, int64_t sk)
{
	for (int64_t o = 0; o < oc; o++) {
		float m = 0;
		for (int64_t k = 0; k < n; k++)
			m = fmaxf(m, fabsf(p[o * so + k * sk]));
		float s = m > 0 ? m / 127.0f : 1.0f;
		scale[o] = s;
		for (int64_t k = 0; k < n; k++) {
			float c = nearbyintf(p[o * so + k * sk] / s);
			q[o * so + k * sk] = (int8_t)(c > 127 ? 127 : c < -127 ? -127 : c);
		}
	}
}

/* 1 if oneDNN has only a reference kernel for pd (int8 would be slower). */
static int is_ref(const_dnnl_primitive_desc_t pd)
{
	return strncmp(fci_impl_of(pd), "ref", 3) == 0;
}

/* What a builder allocates, released on every way out. */
struct parts {
	float *w, *bias, *os;
	int8_t *wq;
	char *skip; /* b->skip before the post-ops were folded: put back when the node stays f32 */
	dnnl_primitive_attr_t attr;
	dnnl_post_ops_t po;
	dnnl_primitive_desc_t pd;
};

static void parts_free(struct parts *p)
{
	free(p->w);
	free(p->bias);
	free(p->os);
	free(p->wq);
	free(p->skip);
	if (p->pd)
		dnnl_primitive_desc_destroy(p->pd);
	if (p->po)
		dnnl_post_ops_destroy(p->po);
	if (p->attr)
		dnnl_primitive_attr_destroy(p->attr);
}

/* Stay f32: undo the fusions marked so far. */
static int stay_f32(build *b, struct parts *p)
{
	memcpy(b->skip, p->skip, (size_t)b->g->n_nodes + 1);
	parts_free(p);
	return 0;
}

/* p->pd from desc with p's output scales (one per output channel, nout)
 * and post-ops: 1, or 0 when oneDNN has no int8 kernel for it or only a
 * reference one (the node then stays f32). */
static int parts_pd(const fc_engine *e, struct parts *p, const void *desc, int64_t nout, dnnl_status_t st)
{
	st = fci_first_failure(st, dnnl_primitive_attr_set_output_scales(p->attr, nout, 1 << 1, p->os));
	st = fci_first_failure(st, dnnl_primitive_attr_set_post_ops(p->attr, p->po));
	if (st != dnnl_success || dnnl_primitive_desc_create(&p->pd, desc, p->attr, e->eng, NULL) != dnnl_success) {
		p->pd = NULL;
		return 0;
	}
	return !is_ref(p->pd);
}

static int parts_start(build *b, struct parts *p, int64_t nw, int64_t nout)
{
	memset(p, 0, sizeof *p);
	if (!(p->skip = malloc((size_t)b->g->n_nodes + 1)) || !(p->wq = malloc((size_t)(nw ? nw : 1))) ||
	    !(p->bias = calloc((size_t)nout, sizeof *p->bias)) || !(p->os = malloc((size_t)nout * sizeof *p->os)) ||
	    dnnl_primitive_attr_create(&p->attr) != dnnl_success || dnnl_post_ops_create(&p->po) != dnnl_success)
		return FC_ERR_NOMEM;
	memcpy(p->skip, b->skip, (size_t)b->g->n_nodes + 1);
	return 0;
}

int fci_build_conv_int8(build *b, int i)
{
	const fc_model_graph *g = b->g;
	const fc_model_node *nd = &g->nodes[i];
	fc_engine *e = b->e;
	int x = nd->in[0], wt = nd->in[1], bt = nd->n_in > 2 ? nd->in[2] : -1;
	const fc_model_tensor *X = &g->tensors[x], *W = &g->tensors[wt];
	float sx;
	dnnl_data_type_t xdt;
	struct parts p;
	int rc;
	if (!quant_of(b, x, &sx, &xdt))
		return 0;
	int64_t oc = W->dims[0], per = W->numel / oc, grp = nd->attr.conv.group;
	if ((rc = parts_start(b, &p, W->numel, oc)) || !(p.w = fci_cst_copy(b, wt))) {
		parts_free(&p);
		return rc ? rc : FC_ERR_NOMEM;
	}
	if (bt >= 0)
		memcpy(p.bias, g->tensors[bt].f32, (size_t)oc * sizeof *p.bias);
	int cur = nd->out[0], res, add;
	fci_fold_bn(b, &cur, p.w, p.bias, oc, per);
	if ((rc = fci_post_ops(b, i, p.po, &cur, &res, &add))) {
		parts_free(&p);
		return rc;
	}
	quantize_weights(p.w, p.wq, p.os, oc, per, per, 1);
	for (int64_t o = 0; o < oc; o++) {
		p.os[o] *= sx;
		p.bias[o] /= p.os[o];
	}
	/* Codes out when only convs and residual Adds read the output: the
	 * post-ops run on real values, then a linear post-op divides by the
	 * output's scale and oneDNN rounds and saturates into u8/s8. A residual
	 * `sum` then reads codes too (its scale and type in the post-op), so
	 * the residual must be codes: already (a block's input), or quantised
	 * by its calibrated range; without one the output stays f32. With an
	 * f32 output the residual is dequantised into it. */
	float sy = 0, sres = 0;
	dnnl_data_type_t ydt = dnnl_f32, rdt = dnnl_f32;
	int codes = codes_out(b, cur, &sy, &ydt);
	if (res >= 0) {
		const value *R = fci_val(b, b->tv[res]);
		if (R->qscale > 0)
			sres = R->qscale, rdt = R->md.data_type;
		else if (!codes || !quant_of(b, res, &sres, &rdt))
			sres = 0;
		if (!sres)
			codes = 0;
		if (!codes)
			sres = 0;
		if (sres > 0 && (rc = repost(&p.po, sres, rdt))) {
			parts_free(&p);
			return rc;
		}
	}
	if (!codes)
		sy = 0, ydt = dnnl_f32;
	else if (dnnl_post_ops_append_eltwise(p.po, 1.0f, dnnl_eltwise_linear, 1.0f / sy, 0.0f) != dnnl_success) {
		parts_free(&p);
		return FC_ERR_INTERNAL;
	}
	const fc_model_tensor *Y = &g->tensors[cur];
	dnnl_memory_desc_t src_md, w_md, uw_md, b_md, dst_md;
	dnnl_status_t st = fci_md_any(&src_md, 4, X->dims, xdt);
	st = fci_first_failure(st, fci_md_any(&dst_md, 4, Y->dims, ydt));
	st = fci_first_failure(st, fci_md_plain(&b_md, 1, &oc, dnnl_f32));
	if (grp > 1) {
		dnnl_dims_t wd = { grp, oc / grp, W->dims[1], W->dims[2], W->dims[3] };
		st = fci_first_failure(st, dnnl_memory_desc_init_by_tag(&uw_md, 5, wd, dnnl_s8, dnnl_goihw));
		st = fci_first_failure(st, dnnl_memory_desc_init_by_tag(&w_md, 5, wd, dnnl_s8, dnnl_format_tag_any));
	} else {
		st = fci_first_failure(st, fci_md_plain(&uw_md, 4, W->dims, dnnl_s8));
		st = fci_first_failure(st, fci_md_any(&w_md, 4, W->dims, dnnl_s8));
	}
	const int64_t *s = nd->attr.conv.stride, *d = nd->attr.conv.dilation, *pa = nd->attr.conv.pad;
	dnnl_dims_t strides = { s[0], s[1] }, dil = { d[0] - 1, d[1] - 1 }, pl = { pa[0], pa[1] };
	dnnl_dims_t pr = { fci_pad_r(X->dims[2], Y->dims[2], W->dims[2], s[0], d[0], pa[0], pa[2]),
			   fci_pad_r(X->dims[3], Y->dims[3], W->dims[3], s[1], d[1], pa[1], pa[3]) };
	dnnl_convolution_desc_t desc;
	st = fci_first_failure(st, dnnl_dilated_convolution_forward_desc_init(&desc, dnnl_forward_inference,
									  dnnl_convolution_direct, &src_md, &w_md,
									  &b_md, &dst_md, strides, dil, pl, pr));
	if (!parts_pd(e, &p, &desc, oc, st))
		return stay_f32(b, &p);
	dnnl_memory_desc_t src_q = fci_query_md(p.pd, dnnl_query_src_md), w_q = fci_query_md(p.pd, dnnl_query_weights_md);
	dnnl_memory_desc_t dst_q = fci_query_md(p.pd, dnnl_query_dst_md);
	dnnl_memory_t mw, mb;
	int src = converted(b, i, b->tv[x], &src_q, sx), dst = -1;
	if (src < 0) {
		parts_free(&p);
		return src;
	}
	rc = fci_const_mem(b, &mw, &uw_md, p.wq, &w_q);
	p.wq = NULL; /* fci_const_mem's now */
	float *bias = fci_balloc(e, (size_t)oc * sizeof *bias);
	if (!rc && !bias)
		rc = FC_ERR_NOMEM;
	if (!rc) {
		memcpy(bias, p.bias, (size_t)oc * sizeof *bias);
		rc = fci_mem(b, &mb, &b_md, bias);
	}
	if (!rc && res >= 0) {
		/* dst must hold the residual (codes at sres, or real values) in
		 * dst's layout before the conv runs: in place, or copied there */
		dnnl_memory_desc_t rmd = dst_q;
		rmd.data_type = sres > 0 ? rdt : dnnl_f32;
		int r = converted(b, i, b->tv[res], &rmd, sres), da;
		if (r < 0)
			rc = r;
		else if (fci_residual_in_place(b, i, add, r, src))
			dst = fci_alias_value(b, r, &dst_q);
		else if ((dst = fci_new_value(b, &dst_q, NULL)) >= 0 && (da = fci_alias_value(b, dst, &rmd)) >= 0)
			rc = fci_reorder_step(b, i, r, da, "Copy");
		else
			rc = dst < 0 ? dst : FC_ERR_NOMEM;
		if (!rc)
			fci_val(b, dst)->qscale = sy;
	} else if (!rc && (dst = fci_new_value(b, &dst_q, NULL)) >= 0) {
		fci_val(b, dst)->qscale = sy;
	}
	if (!rc && dst < 0)
		rc = dst;
	if (!rc) {
		fci_bind_tensor(b, cur, dst);
		rc = fci_new_step(b, i, ST_PRIM, 4);
	}
	if (!rc) {
		fci_arg(b, DNNL_ARG_SRC, src, NULL);
		fci_arg(b, DNNL_ARG_WEIGHTS, -1, mw);
		fci_arg(b, DNNL_ARG_BIAS, -1, mb);
		fci_arg(b, DNNL_ARG_DST, dst, NULL);
		rc = fci_finish_prim(b, p.pd, NULL);
	}
	parts_free(&p);
	return rc ? rc : 1;
}

void fci_qmm_free(struct fci_qmm *q)
{
	free(q->wq);
	if (q->pd)
		dnnl_primitive_desc_destroy(q->pd);
	memset(q, 0, sizeof *q);
}

int fci_matmul_int8(build *b, int a, const float *w, const int64_t *wd, const int64_t *ws, const float *bias,
		    const_dnnl_primitive_attr_t attr, const dnnl_memory_desc_t *ma, const dnnl_memory_desc_t *my,
		    struct fci_qmm *q)
{
	fc_engine *e = b->e;
	int64_t K = wd[0], N = wd[1];
	memset(q, 0, sizeof *q);
	if (!quant_of(b, a, &q->sx, &q->xdt))
		return 0;
	float *os = malloc((size_t)N * sizeof *os);
	dnnl_primitive_attr_t qa = NULL;
	if (!os || !(q->wq = malloc((size_t)(K * N))) || dnnl_primitive_attr_clone(&qa, attr) != dnnl_success) {
		free(os);
		fci_qmm_free(q);
		return FC_ERR_NOMEM;
	}
	/* output n's K weights: column n of K x N, at strides ws */
	quantize_weights(w, q->wq, os, N, K, ws[1], ws[0]);
	for (int64_t n = 0; n < N; n++)
		os[n] *= q->sx;
	int rc = 0;
	if (bias && !(q->bias = fci_balloc(e, (size_t)N * sizeof *q->bias)))
		rc = FC_ERR_NOMEM;
	for (int64_t n = 0; !rc && bias && n < N; n++)
		q->bias[n] = bias[n] / os[n];
	dnnl_memory_desc_t qa_md = *ma, mw, mb;
	dnnl_dims_t bd = { 1, N };
	qa_md.data_type = q->xdt;
	dnnl_matmul_desc_t desc;
	dnnl_status_t st = dnnl_primitive_attr_set_output_scales(qa, N, 1 << 1, os);
	st = fci_first_failure(st, fci_md_any(&mw, 2, wd, dnnl_s8));
	st = fci_first_failure(st, fci_md_plain(&mb, 2, bd, dnnl_f32));
	st = fci_first_failure(st, dnnl_matmul_desc_init(&desc, &qa_md, &mw, bias ? &mb : NULL, my));
	if (!rc && (st != dnnl_success || dnnl_primitive_desc_create(&q->pd, &desc, qa, e->eng, NULL) != dnnl_success))
		q->pd = NULL;
	free(os);
	dnnl_primitive_attr_destroy(qa);
	if (!rc && q->pd && is_ref(q->pd))
		rc = 0, dnnl_primitive_desc_destroy(q->pd), q->pd = NULL;
	if (rc || !q->pd) {
		fci_qmm_free(q);
		return rc;
	}
	return 1;
}

int fci_matmul_int8_src(build *b, int i, int a, const struct fci_qmm *q, const int64_t *ad)
{
	const value *x = fci_val(b, b->tv[a]);
	dnnl_memory_desc_t md;
	if (fci_md_plain(&md, x->md.ndims, x->md.dims, q->xdt) != dnnl_success)
		return FC_ERR_INTERNAL;
	int v = converted(b, i, b->tv[a], &md, q->sx);
	return v < 0 ? v : fci_view(b, i, v, 2, ad);
}

int fci_int8_inputs(build *b, int i)
{
	const fc_model_node *nd = &b->g->nodes[i];
	for (int k = 0; k < nd->n_in; k++) {
		int t = nd->in[k];
		if (!fci_is_act(b, t) || b->tv[t] < 0 || fci_val(b, b->tv[t])->qscale <= 0 ||
		    (nd->op == FC_OP_CONV && k == 0))
			continue;
		int v = fci_real_value(b, i, b->tv[t]);
		if (v < 0)
			return v;
		b->tv[t] = v;
	}
	return 0;
}

int fci_observe(build *b, int t)
{
	return fci_observe_arg(b, t, 0);
}

int fci_observe_arg(build *b, int t, int arg)
{
	fc_engine *e = b->e;
	if (!e->observe)
		return 0;
	const char *name = b->g->tensors[t].name;
	int k = 0;
	while (k < e->n_obs && strcmp(e->obs_names[k], name) != 0)
		k++;
	if (k == e->n_obs) {
		char **v = realloc(e->obs_names, (size_t)(e->n_obs + 1) * sizeof *v);
		if (!v)
			return FC_ERR_NOMEM;
		e->obs_names = v;
		if (!(e->obs_names[k] = strdup(name)))
			return FC_ERR_NOMEM;
		e->n_obs++;
		/* its first reader: once per run is enough */
		step *sp = fci_last_step(b);
		if (!sp->obs)
			sp->obs = k + 1, sp->obs_arg = arg;
		else
			sp->obs2 = k + 1, sp->obs2_arg = arg;
	}
	return 0;
}
