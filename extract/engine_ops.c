/*
 * engine_ops.c - the engine's node builders: one function per op family
 * turns a node of the cut graph into steps (oneDNN primitives with their
 * fused post-ops, or C loops), choosing layouts as engine.c's top comment
 * describes. build_node dispatches on the op.
 */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "extract/engine_impl.h"

/* ---- nodes ---- */

static int is_eltwise(int op)
{
	return op == FC_OP_RELU || op == FC_OP_CLIP || op == FC_OP_LEAKYRELU || op == FC_OP_SIGMOID ||
	       op == FC_OP_HARDSIGMOID || op == FC_OP_HARDSWISH || op == FC_OP_POW || op == FC_OP_SQRT ||
	       op == FC_OP_TANH || op == FC_OP_GELU;
}

/* The oneDNN eltwise algorithm(s) of an activation node: 1 or 2 of them. */
static int eltwise_of(const fc_model_node *nd, dnnl_alg_kind_t alg[2], float al[2], float be[2])
{
	switch (nd->op) {
	case FC_OP_RELU:
		alg[0] = dnnl_eltwise_relu, al[0] = 0, be[0] = 0;
		return 1;
	case FC_OP_LEAKYRELU:
		alg[0] = dnnl_eltwise_relu, al[0] = nd->attr.act.alpha, be[0] = 0;
		return 1;
	case FC_OP_CLIP:
		alg[0] = dnnl_eltwise_clip;
		al[0] = isinf(nd->attr.clip.min) ? -FLT_MAX : nd->attr.clip.min;
		be[0] = isinf(nd->attr.clip.max) ? FLT_MAX : nd->attr.clip.max;
		return 1;
	case FC_OP_SIGMOID:
		alg[0] = dnnl_eltwise_logistic, al[0] = 0, be[0] = 0;
		return 1;
	case FC_OP_HARDSWISH:
		alg[0] = dnnl_eltwise_hardswish, al[0] = 0, be[0] = 0;
		return 1;
	case FC_OP_HARDSIGMOID:
		alg[0] = dnnl_eltwise_linear, al[0] = nd->attr.act.alpha, be[0] = nd->attr.act.beta;
		alg[1] = dnnl_eltwise_clip, al[1] = 0, be[1] = 1;
		return 2;
	case FC_OP_POW: /* alpha * x^beta, the exponent a constant scalar (model_infer.c) */
		alg[0] = dnnl_eltwise_pow, al[0] = 1, be[0] = nd->attr.act.beta;
		return 1;
	case FC_OP_SQRT:
		alg[0] = dnnl_eltwise_sqrt, al[0] = 0, be[0] = 0;
		return 1;
	case FC_OP_TANH:
		alg[0] = dnnl_eltwise_tanh, al[0] = 0, be[0] = 0;
		return 1;
	case FC_OP_GELU:
		alg[0] = nd->attr.act.alpha != 0 ? dnnl_eltwise_gelu_tanh : dnnl_eltwise_gelu_erf, al[0] = 0, be[0] = 0;
		return 1;
	}
	return 0;
}

/* Output padding so that oneDNN's floor formula gives exactly `out`. */
int64_t fci_pad_r(int64_t in, int64_t out, int64_t k, int64_t s, int64_t d, int64_t pl, int64_t pr)
{
	int64_t ext = (k - 1) * d + 1;
	if ((in + pl + pr - ext) / s + 1 == out)
		return pr;
	return (out - 1) * s + ext - in - pl;
}

int fci_reads(const fc_model_node *nd, int t)
{
	for (int k = 0; k < nd->n_in; k++)
		if (nd->in[k] == t)
			return 1;
	return 0;
}

int fci_runs(const build *b, int j)
{
	const fc_model_node *nd = &b->g->nodes[j];
	return nd->state == FC_NODE_RUN && nd->needed && !b->skip[j];
}

/* x * Sigmoid(x) or x * HardSigmoid(x) (with hard-swish's 1/6, 1/2) of
 * tensor t, read by exactly those two nodes after node i: the eltwise
 * post-op it equals (swish, hardswish), and the two nodes; 0 if not. */
static int gated_act(build *b, int i, int t, int *act, int *mul, dnnl_alg_kind_t *alg)
{
	const fc_model_graph *g = b->g;
	int a = -1, m = -1;
	if (b->uses[t] != 2)
		return 0;
	for (int j = i + 1; j <= b->consumer[t]; j++) {
		const fc_model_node *nd = &g->nodes[j];
		if (!fci_runs(b, j) || !fci_reads(nd, t))
			continue;
		if ((nd->op == FC_OP_SIGMOID || nd->op == FC_OP_HARDSIGMOID) && a < 0)
			a = j;
		else if (nd->op == FC_OP_MUL && m < 0)
			m = j;
		else
			return 0;
	}
	if (a < 0 || m < 0)
		return 0;
	const fc_model_node *an = &g->nodes[a], *mn = &g->nodes[m];
	int ga = an->out[0];
	if (b->uses[ga] != 1 || b->consumer[ga] != m || mn->n_in != 2 ||
	    !((mn->in[0] == t && mn->in[1] == ga) || (mn->in[1] == t && mn->in[0] == ga)))
		return 0;
	if (an->op == FC_OP_SIGMOID) {
		*alg = dnnl_eltwise_swish;
	} else {
		if (fabsf(an->attr.act.alpha - 1.0f / 6) > 1e-6f || fabsf(an->attr.act.beta - 0.5f) > 1e-6f)
			return 0;
		*alg = dnnl_eltwise_hardswish;
	}
	*act = a;
	*mul = m;
	return 1;
}

/* The post-ops chain after conv or matmul node i whose output is *cur:
 * folded into po, the fused nodes marked skipped, *cur advanced to the
 * last fused output. *res is the residual tensor of a sum post-op (-1 if
 * none) and *add the Add node that carried it; res NULL takes no sum. */
int fci_post_ops(build *b, int i, dnnl_post_ops_t po, int *cur, int *res, int *add)
{
	const fc_model_graph *g = b->g;
	if (res) {
		*res = -1;
		*add = -1;
	}
	for (;;) {
		int t = *cur, a, m;
		dnnl_alg_kind_t galg;
		int pat = fci_pattern_post_op(b, t, po, cur);
		if (pat < 0)
			return pat;
		if (pat)
			continue;
		if (gated_act(b, i, t, &a, &m, &galg)) {
			if (dnnl_post_ops_append_eltwise(po, 1.0f, galg, 1.0f, 0.0f))
				return fci_build_fail(b, FC_ERR_INTERNAL, "node '%s': cannot append a post-op", g->nodes[m].name);
			b->skip[a] = b->skip[m] = 1;
			*cur = g->nodes[m].out[0];
			continue;
		}
		if (b->uses[t] != 1 || fci_is_cut(g, t))
			return 0;
		int j = b->consumer[t];
		const fc_model_node *c = &g->nodes[j];
		dnnl_alg_kind_t alg[2];
		float al[2], be[2];
		int n = is_eltwise(c->op) ? eltwise_of(c, alg, al, be) : 0;
		if (n > 0 && c->in[0] == t) {
			for (int k = 0; k < n; k++)
				if (dnnl_post_ops_append_eltwise(po, 1.0f, alg[k], al[k], be[k]))
					return fci_build_fail(b, FC_ERR_INTERNAL, "node '%s': cannot append a post-op", c->name);
		} else if (res && c->op == FC_OP_ADD && *res < 0 && c->n_in == 2) {
			int other = c->in[0] == t ? c->in[1] : c->in[0];
			const fc_model_tensor *O = other >= 0 ? &g->tensors[other] : NULL;
			const fc_model_tensor *C = &g->tensors[t];
			if (!fci_is_act(b, other) || other == t || O->ndim != 4 ||
			    memcmp(O->dims, C->dims, 4 * sizeof C->dims[0]) != 0 || b->tv[other] < 0)
				return 0;
			if (dnnl_post_ops_append_sum(po, 1.0f))
				return fci_build_fail(b, FC_ERR_INTERNAL, "node '%s': cannot append a sum post-op", c->name);
			*res = other;
			*add = j;
		} else {
			return 0;
		}
		b->skip[j] = 1;
		*cur = c->out[0];
	}
}

/* Fold a BatchNormalization that alone consumes conv output *cur into
 * w (oc x per) and bias. */
void fci_fold_bn(build *b, int *cur, float *w, float *bias, int64_t oc, int64_t per)
{
	const fc_model_graph *g = b->g;
	if (b->uses[*cur] != 1)
		return;
	int j = b->consumer[*cur];
	const fc_model_node *bn = &g->nodes[j];
	if (bn->op != FC_OP_BATCHNORM || bn->in[0] != *cur || bn->n_in < 5 || !fci_is_const(b, bn->in[1]) ||
	    !fci_is_const(b, bn->in[2]) || !fci_is_const(b, bn->in[3]) || !fci_is_const(b, bn->in[4]))
		return;
	const float *sc = g->tensors[bn->in[1]].f32, *sh = g->tensors[bn->in[2]].f32;
	const float *mu = g->tensors[bn->in[3]].f32, *var = g->tensors[bn->in[4]].f32;
	for (int64_t o = 0; o < oc; o++) {
		double f = sc[o] / sqrt((double)var[o] + bn->attr.bn.epsilon);
		for (int64_t k = 0; k < per; k++)
			w[o * per + k] = (float)(w[o * per + k] * f);
		bias[o] = (float)((bias[o] - mu[o]) * f + sh[o]);
	}
	b->skip[j] = 1;
	*cur = bn->out[0];
}

/* Does the Add node `add`, fused into conv node i, leave its residual
 * value r to be overwritten by the conv's output? Yes when nothing after i
 * but that Add reads the buffer and the conv does not read it either. */
int fci_residual_in_place(build *b, int i, int add, int r, int src)
{
	if (fci_same_buffer(b, r, src) || !fci_writable_after(b, r, add))
		return 0;
	for (int j = i + 1; j < add; j++)
		if (fci_runs(b, j))
			for (int k = 0; k < b->g->nodes[j].n_in; k++) {
				int t = b->g->nodes[j].in[k];
				if (t >= 0 && b->tv[t] >= 0 && fci_same_buffer(b, b->tv[t], r))
					return 0;
			}
	return 1;
}

/*
 * Winograd. oneDNN's F(4x4, 3x3) kernel (jit_wino_4x3, AVX-512) computes a
 * 3x3 stride-1 convolution with about half the multiplies of the direct
 * one; on ResNet-50 f32 it is the difference between parity with ONNX
 * Runtime and 1.2x, on VGG16-BN 2.4x the direct convs (README,
 * bench/extract_engine). It pays on wide convs only: DenseNet-121's
 * 128 -> 32 ones ran 1.3x slower in CPU time, so both sides must have 64
 * channels or more. Its activations are
 * nChw16c, so in an engine that has one every f32 convolution whose
 * channels are multiples of 16 exchanges nChw16c (direct convs run
 * jit:avx512_core on it, as fast as brgconv on NHWC) and no reorder sits
 * between them. The error stays within conformance's f32 bound (6.5e-7
 * max relative on ResNet-50 against 5.6e-7 direct).
 */
static int winograd_shape(const build *b, const fc_model_node *nd)
{
	const fc_model_graph *g = b->g;
	if (strcmp(nd->op_type, "Conv") != 0 || nd->n_in < 2 || !fci_is_const(b, nd->in[1]))
		return 0;
	const fc_model_tensor *X = &g->tensors[nd->in[0]], *W = &g->tensors[nd->in[1]];
	const fc_model_tensor *Y = &g->tensors[nd->out[0]];
	const int64_t *s = nd->attr.conv.stride, *d = nd->attr.conv.dilation;
	return X->ndim == 4 && W->ndim == 4 && Y->ndim == 4 && W->dims[2] == 3 && W->dims[3] == 3 &&
	       nd->attr.conv.group == 1 && s[0] == 1 && s[1] == 1 && d[0] == 1 && d[1] == 1 &&
	       X->dims[1] % 16 == 0 && Y->dims[1] % 16 == 0 && X->dims[1] >= 64 && Y->dims[1] >= 64;
}

static dnnl_status_t winograd_desc(dnnl_convolution_desc_t *desc, const fc_model_graph *g, const fc_model_node *nd,
				   const dnnl_memory_desc_t *w_md, const dnnl_memory_desc_t *b_md)
{
	const fc_model_tensor *X = &g->tensors[nd->in[0]], *Y = &g->tensors[nd->out[0]];
	dnnl_dims_t xd = { X->dims[0], X->dims[1], X->dims[2], X->dims[3] };
	dnnl_dims_t yd = { Y->dims[0], Y->dims[1], Y->dims[2], Y->dims[3] };
	const int64_t *p = nd->attr.conv.pad;
	dnnl_dims_t strides = { 1, 1 }, pl = { p[0], p[1] };
	dnnl_dims_t pr = { fci_pad_r(X->dims[2], Y->dims[2], 3, 1, 1, p[0], p[2]),
			   fci_pad_r(X->dims[3], Y->dims[3], 3, 1, 1, p[1], p[3]) };
	dnnl_memory_desc_t src, dst;
	dnnl_status_t st = dnnl_memory_desc_init_by_tag(&src, 4, xd, dnnl_f32, dnnl_nChw16c);
	st = fci_first_failure(st, dnnl_memory_desc_init_by_tag(&dst, 4, yd, dnnl_f32, dnnl_nChw16c));
	return fci_first_failure(st, dnnl_convolution_forward_desc_init(desc, dnnl_forward_inference,
									 dnnl_convolution_winograd, &src, w_md, b_md,
									 &dst, strides, pl, pr));
}

/* An f32 engine uses Winograd when the model has a 3x3 stride-1 conv,
 * oneDNN has the kernel for its shapes on this CPU (AVX-512), and every
 * conv can trade nChw16c: none grouped (depthwise kernels want NHWC), every
 * channel count a multiple of 16 but the image's. Elsewhere (MobileNets,
 * RegNets, narrow test models) the layouts stay oneDNN's own choice. A
 * partial batch's engine (parent set) computes direct convs: its weights
 * would need a Winograd transform of their own (oneDNN's tile size follows
 * the batch), 0.1-0.4 s for a ResNet, more than its few images gain. */
void fci_plan_winograd(build *b, int direct)
{
	const fc_model_graph *g = b->g;
	fc_engine *e = b->e;
	int first = -1;
	e->winograd = 0;
	if (e->dt != dnnl_f32 || e->int8 || e->parent)
		return;
	for (int i = 0; i < g->n_nodes; i++) {
		const fc_model_node *nd = &g->nodes[i];
		if (nd->state != FC_NODE_RUN || !nd->needed || strcmp(nd->op_type, "Conv") != 0)
			continue;
		const fc_model_tensor *X = &g->tensors[nd->in[0]], *Y = &g->tensors[nd->out[0]];
		if (X->ndim != 4 || Y->ndim != 4 || nd->attr.conv.group != 1 || Y->dims[1] % 16 != 0 ||
		    (X->dims[1] % 16 != 0 && nd->in[0] != g->input))
			return;
		if (first < 0 && winograd_shape(b, nd))
			first = i;
	}
	if (first >= 0) {
		const fc_model_node *nd = &g->nodes[first];
		const fc_model_tensor *W = &g->tensors[nd->in[1]];
		int64_t oc = W->dims[0];
		dnnl_memory_desc_t w_md, b_md;
		dnnl_convolution_desc_t desc;
		dnnl_primitive_desc_t pd = NULL;
		if (fci_md_any(&w_md, 4, W->dims, dnnl_f32) == dnnl_success &&
		    fci_md_plain(&b_md, 1, &oc, dnnl_f32) == dnnl_success &&
		    winograd_desc(&desc, g, nd, &w_md, &b_md) == dnnl_success &&
		    dnnl_primitive_desc_create(&pd, &desc, NULL, e->eng, NULL) == dnnl_success) {
			e->winograd = direct ? 2 : 1;
			dnnl_primitive_desc_destroy(pd);
		}
	}
}

static int build_conv(build *b, int i)
{
	const fc_model_graph *g = b->g;
	const fc_model_node *nd = &g->nodes[i];
	fc_engine *e = b->e;
	dnnl_primitive_attr_t attr = NULL;
	dnnl_post_ops_t po = NULL;
	dnnl_primitive_desc_t pd = NULL;
	int rc;
	int x = nd->in[0], wt = nd->n_in > 1 ? nd->in[1] : -1, bt = nd->n_in > 2 ? nd->in[2] : -1;
	const fc_model_tensor *X = &g->tensors[x], *W = wt >= 0 ? &g->tensors[wt] : NULL;

	if (!fci_is_act(b, x) || X->ndim != 4 || !fci_is_const(b, wt) || W->ndim != 4 || (bt >= 0 && !fci_is_const(b, bt)))
		return fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s' (Conv): only 2-D convolutions with constant weights",
			    nd->name);
	if (e->int8 && (rc = fci_build_conv_int8(b, i)))
		return rc < 0 ? rc : 0;
	int64_t oc = W->dims[0];
	float *w = fci_cst_copy(b, wt), *bias = fci_balloc(e, (size_t)oc * sizeof *bias);
	if (!w || !bias) {
		free(w);
		return FC_ERR_NOMEM;
	}
	if (bt >= 0)
		memcpy(bias, g->tensors[bt].f32, (size_t)oc * sizeof *bias);

	int cur = nd->out[0], res, add;
	fci_fold_bn(b, &cur, w, bias, oc, W->numel / oc);
	if (dnnl_primitive_attr_create(&attr) || dnnl_post_ops_create(&po)) {
		rc = FC_ERR_NOMEM;
		goto out;
	}
	if ((rc = fci_post_ops(b, i, po, &cur, &res, &add)))
		goto out;
	if (dnnl_primitive_attr_set_post_ops(attr, po)) {
		rc = FC_ERR_INTERNAL;
		goto out;
	}

	const fc_model_tensor *Y = &g->tensors[cur];
	int64_t grp = nd->attr.conv.group;
	dnnl_memory_desc_t any_md, w_md, uw_md, b_md, dst_md;
	dnnl_status_t st = fci_md_any(&any_md, 4, X->dims, e->dt);
	st = fci_first_failure(st, fci_md_any(&dst_md, 4, Y->dims, e->dt));
	if (e->winograd == 1) { /* every conv's channels are multiples of 16 but the image's */
		dnnl_dims_t xd = { X->dims[0], X->dims[1], X->dims[2], X->dims[3] };
		dnnl_dims_t yd = { Y->dims[0], Y->dims[1], Y->dims[2], Y->dims[3] };
		if (X->dims[1] % 16 == 0)
			st = fci_first_failure(st, dnnl_memory_desc_init_by_tag(&any_md, 4, xd, e->dt, dnnl_nChw16c));
		st = fci_first_failure(st, dnnl_memory_desc_init_by_tag(&dst_md, 4, yd, e->dt, dnnl_nChw16c));
	}
	st = fci_first_failure(st, fci_md_plain(&b_md, 1, &oc, dnnl_f32));
	if (grp > 1) {
		dnnl_dims_t wd = { grp, oc / grp, W->dims[1], W->dims[2], W->dims[3] };
		st = fci_first_failure(st, dnnl_memory_desc_init_by_tag(&uw_md, 5, wd, dnnl_f32, dnnl_goihw));
		st = fci_first_failure(st, dnnl_memory_desc_init_by_tag(&w_md, 5, wd, e->dt, dnnl_format_tag_any));
	} else {
		st = fci_first_failure(st, fci_md_plain(&uw_md, 4, W->dims, dnnl_f32));
		st = fci_first_failure(st, fci_md_any(&w_md, 4, W->dims, e->dt));
	}
	const int64_t *s = nd->attr.conv.stride, *d = nd->attr.conv.dilation, *p = nd->attr.conv.pad;
	dnnl_dims_t strides = { s[0], s[1] }, dil = { d[0] - 1, d[1] - 1 }, pl = { p[0], p[1] };
	dnnl_dims_t pr = { fci_pad_r(X->dims[2], Y->dims[2], W->dims[2], s[0], d[0], p[0], p[2]),
			   fci_pad_r(X->dims[3], Y->dims[3], W->dims[3], s[1], d[1], p[1], p[3]) };
	/* oneDNN's own choice (src any) unless the producer's layout gets the
	 * same implementation: then consecutive convs never reorder between
	 * them. Where the choices differ, the producer's layout has only a
	 * weaker kernel (NHWC grouped convs are ref:any in oneDNN 2.6.3, blocked
	 * 1x1 convs avx2) and a reorder is cheaper than running it. */
	int xv = fci_real_value(b, i, b->tv[x]);
	if (xv < 0) {
		rc = xv;
		goto out;
	}
	const value *vx = fci_val(b, xv);
	dnnl_primitive_desc_t mine = NULL;
	dnnl_convolution_desc_t desc;
	if (e->winograd == 1 && winograd_shape(b, nd) && st == dnnl_success &&
	    winograd_desc(&desc, g, nd, &w_md, &b_md) == dnnl_success &&
	    dnnl_primitive_desc_create(&pd, &desc, attr, e->eng, NULL) == dnnl_success)
		goto have_pd;
	pd = NULL;
	st = fci_first_failure(st, dnnl_dilated_convolution_forward_desc_init(&desc, dnnl_forward_inference,
									  dnnl_convolution_direct, &any_md, &w_md,
									  &b_md, &dst_md, strides, dil, pl, pr));
	if (st != dnnl_success) {
		rc = fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s' (Conv): onednn rejects its shapes (%s)", nd->name,
			  fci_dnnl_status_name(st));
		goto out;
	}
	if ((rc = fci_create_pd(b, i, &pd, &desc, attr)))
		goto out;
	dnnl_memory_desc_t any_src = fci_query_md(pd, dnnl_query_src_md);
	if (!vx->fixed && !dnnl_memory_desc_equal(&any_src, &vx->md) &&
	    dnnl_dilated_convolution_forward_desc_init(&desc, dnnl_forward_inference, dnnl_convolution_direct, &vx->md,
						       &w_md, &b_md, &dst_md, strides, dil, pl, pr) == dnnl_success &&
	    dnnl_primitive_desc_create(&mine, &desc, attr, e->eng, NULL) == dnnl_success) {
		if (strcmp(fci_impl_of(mine), fci_impl_of(pd)) == 0) {
			dnnl_primitive_desc_destroy(pd);
			pd = mine;
		} else {
			dnnl_primitive_desc_destroy(mine);
		}
	}
have_pd:;
	dnnl_memory_desc_t src_q = fci_query_md(pd, dnnl_query_src_md), w_q = fci_query_md(pd, dnnl_query_weights_md);
	dnnl_memory_desc_t dst_q = fci_query_md(pd, dnnl_query_dst_md);
	dnnl_memory_t mw, mb;
	int src = fci_want(b, i, xv, &src_q), dst;
	if (src < 0) {
		rc = src;
		goto out;
	}
	rc = fci_const_mem(b, &mw, &uw_md, w, &w_q);
	w = NULL; /* const_mem's now */
	if (rc || (rc = fci_mem(b, &mb, &b_md, bias)))
		goto out;
	if (res >= 0) {
		/* dst must hold the residual, in dst's own layout, before the conv runs */
		int r = fci_real_value(b, i, b->tv[res]);
		if (r >= 0)
			r = fci_want(b, i, r, &dst_q);
		if (r < 0) {
			rc = r;
			goto out;
		}
		if (fci_residual_in_place(b, i, add, r, src)) {
			dst = fci_alias_value(b, r, &dst_q);
		} else if ((dst = fci_new_value(b, &dst_q, NULL)) >= 0) {
			rc = fci_reorder_step(b, i, r, dst, "Copy");
		}
	} else {
		dst = fci_new_value(b, &dst_q, NULL);
	}
	if (dst < 0 || rc) {
		rc = rc ? rc : dst;
		goto out;
	}
	fci_bind_tensor(b, cur, dst);
	if ((rc = fci_new_step(b, i, ST_PRIM, 4)) || (rc = fci_observe(b, x)) ||
	    (res >= 0 && (rc = fci_observe_arg(b, res, 3))))
		goto out;
	fci_arg(b, DNNL_ARG_SRC, src, NULL);
	fci_arg(b, DNNL_ARG_WEIGHTS, -1, mw);
	fci_arg(b, DNNL_ARG_BIAS, -1, mb);
	fci_arg(b, DNNL_ARG_DST, dst, NULL);
	rc = fci_finish_prim(b, pd, NULL);
out:
	free(w);
	if (pd)
		dnnl_primitive_desc_destroy(pd);
	if (po)
		dnnl_post_ops_destroy(po);
	if (attr)
		dnnl_primitive_attr_destroy(attr);
	return rc;
}

/* The destination of an elementwise op at node i on value src with layout
 * md: src's own buffer when nothing later reads it, else a new value. */
int fci_elementwise_dst(build *b, int i, int src, const dnnl_memory_desc_t *md)
{
	if (fci_writable_after(b, src, i) && dnnl_memory_desc_equal(&fci_val(b, src)->md, md))
		return fci_alias_value(b, src, md);
	return fci_new_value(b, md, NULL);
}

/* A pooling step over value src: kernel k, strides s, dilation d (oneDNN's,
 * 0-based), pads pl/pr, to an output of dims yd. Returns the output value. */
static int pool_step(build *b, int i, int src, dnnl_alg_kind_t alg, const int64_t *yd, const dnnl_dim_t *k,
		     const dnnl_dim_t *s, const dnnl_dim_t *d, const dnnl_dim_t *pl, const dnnl_dim_t *pr,
		     const char *op)
{
	const fc_model_node *nd = &b->g->nodes[i];
	dnnl_memory_desc_t dmd, smd = fci_val(b, src)->md, nhwc;
	dnnl_pooling_v2_desc_t desc;
	dnnl_primitive_desc_t pd, p1;
	if (fci_md_any(&dmd, 4, yd, smd.data_type) ||
	    dnnl_pooling_v2_forward_desc_init(&desc, dnnl_forward_inference, alg, &smd, &dmd, s, k, d, pl, pr))
		return fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s' (%s): onednn rejects its shapes", nd->name,
			    nd->op_type);
	int rc = fci_create_pd(b, i, &pd, &desc, NULL);
	if (rc)
		return rc;
	/* Some pooling shapes have jit kernels in NHWC only (in blocked-by-8
	 * or plain layouts oneDNN 2.6.3 gives them ref:any): reorder to NHWC. */
	if (!strncmp(fci_impl_of(pd), "ref", 3) &&
	    !dnnl_memory_desc_init_by_tag(&nhwc, 4, smd.dims, smd.data_type, dnnl_acdb) &&
	    !dnnl_pooling_v2_forward_desc_init(&desc, dnnl_forward_inference, alg, &nhwc, &dmd, s, k, d, pl, pr) &&
	    !dnnl_primitive_desc_create(&p1, &desc, NULL, b->e->eng, NULL)) {
		if (strncmp(fci_impl_of(p1), "ref", 3) != 0 && (src = fci_want(b, i, src, &nhwc)) >= 0) {
			dnnl_primitive_desc_destroy(pd);
			pd = p1;
		} else {
			dnnl_primitive_desc_destroy(p1);
		}
		if (src < 0) {
			dnnl_primitive_desc_destroy(pd);
			return src;
		}
	}
	dnnl_memory_desc_t q = fci_query_md(pd, dnnl_query_dst_md);
	int y = fci_new_value(b, &q, NULL);
	if (y < 0) {
		dnnl_primitive_desc_destroy(pd);
		return y;
	}
	rc = fci_unary_step(b, i, pd, src, y, op);
	return rc ? rc : y;
}

static int build_pool(build *b, int i)
{
	const fc_model_graph *g = b->g;
	const fc_model_node *nd = &g->nodes[i];
	int x = nd->in[0], y = nd->out[0];
	const fc_model_tensor *X = &g->tensors[x];
	/* other means (a token tensor's last axis): oneDNN's reduction */
	if (nd->op == FC_OP_REDUCEMEAN && fci_is_act(b, x) &&
	    (X->ndim != 4 || !nd->attr.reduce.axes || (nd->attr.reduce.axes & ~0xCu)))
		return fci_build_reduce_mean(b, i);
	if (!fci_is_act(b, x) || X->ndim != 4)
		return fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s' (%s): only 4-D input is supported", nd->name,
			    nd->op_type);
	int64_t H = X->dims[2], W = X->dims[3];
	int64_t yd[4] = { X->dims[0], X->dims[1], 1, 1 };
	dnnl_dims_t k = { H, W }, s = { 1, 1 }, d = { 0, 0 }, pl = { 0, 0 }, pr = { 0, 0 };
	dnnl_alg_kind_t alg = dnnl_pooling_avg_exclude_padding;
	if (nd->op == FC_OP_REDUCEMEAN) {
		/* A mean over H and/or W is an average pooling with that window. */
		uint32_t ax = nd->attr.reduce.axes;
		if (!(ax & 4))
			k[0] = 1, yd[2] = H;
		if (!(ax & 8))
			k[1] = 1, yd[3] = W;
	}
	if (nd->op == FC_OP_MAXPOOL || nd->op == FC_OP_AVGPOOL) {
		const fc_model_tensor *Y = &g->tensors[y];
		const int64_t *ka = nd->attr.pool.kernel, *sa = nd->attr.pool.stride, *da = nd->attr.pool.dilation,
			      *pa = nd->attr.pool.pad;
		yd[2] = Y->dims[2], yd[3] = Y->dims[3];
		k[0] = ka[0], k[1] = ka[1], s[0] = sa[0], s[1] = sa[1], d[0] = da[0] - 1, d[1] = da[1] - 1;
		pl[0] = pa[0], pl[1] = pa[1];
		pr[0] = fci_pad_r(H, yd[2], ka[0], sa[0], da[0], pa[0], pa[2]);
		pr[1] = fci_pad_r(W, yd[3], ka[1], sa[1], da[1], pa[1], pa[3]);
		if (nd->op == FC_OP_MAXPOOL)
			alg = dnnl_pooling_max;
		else if (nd->attr.pool.count_include_pad)
			alg = dnnl_pooling_avg_include_padding;
	}
	int v = pool_step(b, i, b->tv[x], alg, yd, k, s, d, pl, pr, NULL);
	if (v < 0)
		return v;
	/* ReduceMean without keepdims drops the reduced axes: a view. */
	const fc_model_tensor *Y = &g->tensors[y];
	if (Y->ndim != 4 && (v = fci_view(b, i, v, Y->ndim, Y->dims)) < 0)
		return v;
	fci_bind_tensor(b, y, v);
	return 0;
}

/* One eltwise step at node i: y = alg(src), recorded as op (NULL: the
 * node's). Returns the output value. */
int fci_eltwise_step(build *b, int i, int src, dnnl_alg_kind_t alg, float al, float be, const char *op)
{
	const fc_model_node *nd = &b->g->nodes[i];
	dnnl_memory_desc_t md = fci_val(b, src)->md;
	dnnl_eltwise_desc_t desc;
	dnnl_primitive_desc_t pd;
	if (dnnl_eltwise_forward_desc_init(&desc, dnnl_forward_inference, alg, &md, al, be))
		return fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s' (%s): onednn rejects it", nd->name, nd->op_type);
	int rc = fci_create_pd(b, i, &pd, &desc, NULL);
	if (rc)
		return rc;
	int y = fci_elementwise_dst(b, i, src, &md);
	if (y < 0) {
		dnnl_primitive_desc_destroy(pd);
		return y;
	}
	rc = fci_unary_step(b, i, pd, src, y, op);
	return rc ? rc : y;
}

static int build_eltwise(build *b, int i)
{
	const fc_model_node *nd = &b->g->nodes[i];
	dnnl_alg_kind_t alg[2];
	float al[2], be[2];
	int n = eltwise_of(nd, alg, al, be), v = b->tv[nd->in[0]];
	/* HardSigmoid has no single oneDNN algorithm: linear, then clip in place. */
	for (int k = 0; k < n && v >= 0; k++)
		v = fci_eltwise_step(b, i, v, alg[k], al[k], be[k], NULL);
	if (v < 0)
		return v;
	fci_bind_tensor(b, nd->out[0], v);
	return 0;
}

static int build_bn(build *b, int i)
{
	const fc_model_graph *g = b->g;
	const fc_model_node *nd = &g->nodes[i];
	int x = nd->in[0];
	const fc_model_tensor *X = &g->tensors[x];
	if (nd->n_in < 5 || X->ndim < 2)
		return fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s' (BatchNormalization): unsupported form", nd->name);
	for (int k = 1; k < 5; k++)
		if (!fci_is_const(b, nd->in[k]) || g->tensors[nd->in[k]].numel != X->dims[1])
			return fci_build_fail(b, FC_ERR_UNSUPPORTED,
				    "node '%s' (BatchNormalization): parameters must be constant, one per channel",
				    nd->name);
	int src = b->tv[x];
	dnnl_memory_desc_t md = fci_val(b, src)->md, cmd;
	dnnl_batch_normalization_desc_t desc;
	dnnl_primitive_desc_t pd = NULL;
	int rc;
	if (fci_md_plain(&cmd, 1, &X->dims[1], dnnl_f32) ||
	    dnnl_batch_normalization_forward_desc_init(&desc, dnnl_forward_inference, &md, nd->attr.bn.epsilon,
						       dnnl_use_global_stats | dnnl_use_scale | dnnl_use_shift))
		return fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s' (BatchNormalization): onednn rejects it", nd->name);
	if ((rc = fci_create_pd(b, i, &pd, &desc, NULL)))
		return rc;
	int y = fci_elementwise_dst(b, i, src, &md);
	if (y < 0 || (rc = fci_new_step(b, i, ST_PRIM, 6))) {
		rc = y < 0 ? y : rc;
		goto out;
	}
	fci_arg(b, DNNL_ARG_SRC, src, NULL);
	fci_arg(b, DNNL_ARG_DST, y, NULL);
	static const int which[4] = { DNNL_ARG_SCALE, DNNL_ARG_SHIFT, DNNL_ARG_MEAN, DNNL_ARG_VARIANCE };
	for (int k = 0; k < 4; k++) {
		float *p = fci_cst(b, nd->in[k + 1]);
		dnnl_memory_t m;
		if (!p) {
			rc = FC_ERR_NOMEM;
			goto out;
		}
		if ((rc = fci_mem(b, &m, &cmd, p)))
			goto out;
		fci_arg(b, which[k], -1, m);
	}
	fci_bind_tensor(b, nd->out[0], y);
	rc = fci_finish_prim(b, pd, NULL);
out:
	dnnl_primitive_desc_destroy(pd);
	return rc;
}

/* dims of tensor t right-aligned to rank r (numpy broadcasting). */
static void bdims(int64_t *out, const fc_model_tensor *t, int r)
{
	for (int k = 0; k < r; k++)
		out[k] = 1;
	for (int k = 0; k < t->ndim; k++)
		out[r - t->ndim + k] = t->dims[k];
}

/* *pd for dst (layout ma) = a (ma) alg c (mc); -1 if oneDNN refuses. */
static int binary_pd(build *b, dnnl_alg_kind_t alg, const dnnl_memory_desc_t *ma, const dnnl_memory_desc_t *mc,
		     dnnl_primitive_desc_t *pd)
{
	dnnl_binary_desc_t desc;
	if (dnnl_binary_desc_init(&desc, alg, ma, mc, ma) ||
	    dnnl_primitive_desc_create(pd, &desc, NULL, b->e->eng, NULL)) {
		*pd = NULL;
		return -1;
	}
	return 0;
}

/* A binary op whose first operand is a broadcast: a C loop on plain f32. */
static int binary_c_step(build *b, int i, int va, int vc, const int64_t *da, const int64_t *dc)
{
	const fc_model_node *nd = &b->g->nodes[i];
	const fc_model_tensor *Y = &b->g->tensors[nd->out[0]];
	dnnl_memory_desc_t md;
	int rc, y;
	if ((va = fci_want_plain(b, i, va)) < 0 || (vc = fci_want_plain(b, i, vc)) < 0)
		return va < 0 ? va : vc;
	if (fci_md_plain(&md, Y->ndim, Y->dims, dnnl_f32))
		return FC_ERR_INTERNAL;
	if ((y = fci_new_value(b, &md, NULL)) < 0)
		return y;
	if ((rc = fci_new_step(b, i, ST_BINARY_C, 3)))
		return rc;
	step *sp = fci_last_step(b);
	sp->op = nd->op;
	sp->ndim = Y->ndim;
	memcpy(sp->dims, Y->dims, (size_t)Y->ndim * sizeof da[0]);
	memcpy(sp->sdims[0], da, (size_t)Y->ndim * sizeof da[0]);
	memcpy(sp->sdims[1], dc, (size_t)Y->ndim * sizeof da[0]);
	sp->val[0] = va, sp->val[1] = vc, sp->val[2] = y, sp->nval = 3;
	fci_bind_tensor(b, nd->out[0], y);
	return 0;
}

static int build_binary(build *b, int i)
{
	const fc_model_graph *g = b->g;
	const fc_model_node *nd = &g->nodes[i];
	int a = nd->in[0], c = nd->in[1];
	const fc_model_tensor *Y = &g->tensors[nd->out[0]];
	int r = Y->ndim;
	int64_t da[FC_MODEL_MAX_DIMS], dc[FC_MODEL_MAX_DIMS];
	if (a < 0 || c < 0 || r < 1 || g->tensors[a].ndim > r || g->tensors[c].ndim > r ||
	    (!fci_is_act(b, a) && !fci_is_const(b, a)) || (!fci_is_act(b, c) && !fci_is_const(b, c)))
		return fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s' (%s): unsupported operands", nd->name, nd->op_type);
	bdims(da, &g->tensors[a], r);
	bdims(dc, &g->tensors[c], r);
	int full_a = !memcmp(da, Y->dims, (size_t)r * sizeof da[0]);
	int full_c = !memcmp(dc, Y->dims, (size_t)r * sizeof dc[0]);
	if (!full_a && full_c && (nd->op == FC_OP_ADD || nd->op == FC_OP_MUL)) {
		int t = a;
		a = c, c = t;
		int64_t td[FC_MODEL_MAX_DIMS];
		memcpy(td, da, sizeof td), memcpy(da, dc, sizeof td), memcpy(dc, td, sizeof td);
		full_a = 1, full_c = 0;
	}
	int va = fci_operand(b, a, r), vc = fci_operand(b, c, r);
	if (va < 0 || vc < 0)
		return va < 0 ? va : vc;
	/* oneDNN wants operands of the same rank, and src0 of dst's shape. */
	if (fci_val(b, va)->md.ndims != r && (va = fci_view(b, i, va, r, da)) < 0)
		return va;
	if (fci_val(b, vc)->md.ndims != r && (vc = fci_view(b, i, vc, r, dc)) < 0)
		return vc;
	if (!full_a)
		return binary_c_step(b, i, va, vc, da, dc);
	if (full_c && (vc = fci_want(b, i, vc, &fci_val(b, va)->md)) < 0)
		return vc;
	dnnl_alg_kind_t alg = nd->op == FC_OP_ADD ? dnnl_binary_add
			      : nd->op == FC_OP_SUB ? dnnl_binary_sub
			      : nd->op == FC_OP_MUL ? dnnl_binary_mul
						    : dnnl_binary_div;
	dnnl_memory_desc_t ma = fci_val(b, va)->md, mc = fci_val(b, vc)->md;
	dnnl_primitive_desc_t pd = NULL;
	int rc, y;
	if (binary_pd(b, alg, &ma, &mc, &pd) < 0)
		return fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s' (%s): onednn rejects it", nd->name, nd->op_type);
	if (!full_c && r == 4 && !strncmp(fci_impl_of(pd), "ref", 3)) {
		/* oneDNN 2.6.3's jit binary broadcasts an N x C x 1 x 1 operand
		 * (an SE gate) only for some layout pairs: try the gate in the
		 * usual layouts, then src0 in NHWC as well (after a grouped conv
		 * it is blocked by 8, which has no jit broadcast; the 1x1 conv
		 * after the SE block wants NHWC anyway). */
		static const dnnl_format_tag_t tags[] = { dnnl_acdb, dnnl_aBcd16b, dnnl_aBcd8b, dnnl_abcd };
		dnnl_dims_t d0 = { da[0], da[1], da[2], da[3] }, d1 = { dc[0], dc[1], dc[2], dc[3] };
		dnnl_memory_desc_t m0 = ma, m1;
		int found = 0;
		for (int s0 = 0; s0 < 2 && !found; s0++) {
			if (s0 == 1 && dnnl_memory_desc_init_by_tag(&m0, 4, d0, ma.data_type, dnnl_acdb))
				break;
			for (size_t k = 0; k < sizeof tags / sizeof tags[0] && !found; k++) {
				dnnl_primitive_desc_t p1;
				if (dnnl_memory_desc_init_by_tag(&m1, 4, d1, mc.data_type, tags[k]) ||
				    binary_pd(b, alg, &m0, &m1, &p1) < 0)
					continue;
				if ((found = strncmp(fci_impl_of(p1), "ref", 3) != 0)) {
					dnnl_primitive_desc_destroy(pd);
					pd = p1;
				} else {
					dnnl_primitive_desc_destroy(p1);
				}
			}
		}
		if (found && ((va = fci_want(b, i, va, &m0)) < 0 || (vc = fci_want(b, i, vc, &m1)) < 0)) {
			rc = va < 0 ? va : vc;
			goto out;
		}
		ma = m0;
	}
	if (!fci_same_buffer(b, va, vc))
		y = fci_elementwise_dst(b, i, va, &ma);
	else
		y = fci_new_value(b, &ma, NULL);
	if (y < 0 || (rc = fci_new_step(b, i, ST_PRIM, 3))) {
		rc = y < 0 ? y : rc;
		goto out;
	}
	fci_arg(b, DNNL_ARG_SRC_0, va, NULL);
	fci_arg(b, DNNL_ARG_SRC_1, vc, NULL);
	fci_arg(b, DNNL_ARG_DST, y, NULL);
	fci_bind_tensor(b, nd->out[0], y);
	rc = fci_finish_prim(b, pd, NULL);
out:
	dnnl_primitive_desc_destroy(pd);
	return rc;
}

/* The Add that alone reads matmul output y and adds another activation of
 * y's shape (a transformer block's residual): its node, the other input
 * in *res; -1 if none. */
static int residual_add(const build *b, int y, int *res)
{
	const fc_model_graph *g = b->g;
	if (b->uses[y] != 1 || fci_is_cut(g, y))
		return -1;
	int j = b->consumer[y];
	const fc_model_node *c = &g->nodes[j];
	if (!fci_runs(b, j) || c->op != FC_OP_ADD || c->n_in != 2)
		return -1;
	int other = c->in[0] == y ? c->in[1] : c->in[0];
	const fc_model_tensor *O = other >= 0 ? &g->tensors[other] : NULL, *Y = &g->tensors[y];
	if (other == y || !fci_is_act(b, other) || b->tv[other] < 0 || O->ndim != Y->ndim ||
	    memcmp(O->dims, Y->dims, (size_t)Y->ndim * sizeof Y->dims[0]) != 0)
		return -1;
	*res = other;
	return j;
}

/* The Mul that alone reads matmul output y by a constant of n values over
 * its last axis, or of one (LayerScale's per-channel gamma): its node, the
 * constant in *c; -1 if none. The matmul folds it into its weights. */
static int channel_scale(const build *b, int y, int64_t n, int *c)
{
	const fc_model_graph *g = b->g;
	if (b->uses[y] != 1 || fci_is_cut(g, y))
		return -1;
	int j = b->consumer[y];
	const fc_model_node *m = &g->nodes[j];
	if (!fci_runs(b, j) || m->op != FC_OP_MUL || m->n_in != 2)
		return -1;
	int k = m->in[0] == y ? m->in[1] : m->in[0];
	const fc_model_tensor *C = k >= 0 ? &g->tensors[k] : NULL, *Y = &g->tensors[y], *O = &g->tensors[m->out[0]];
	/* n 1: any shape of constant; the caller checks its axis */
	if (k == y || !fci_is_const(b, k) ||
	    (n > 1 && C->numel != 1 && (C->numel != n || C->dims[C->ndim - 1] != n)) ||
	    O->ndim != Y->ndim || memcmp(O->dims, Y->dims, (size_t)Y->ndim * sizeof Y->dims[0]) != 0)
		return -1;
	for (int64_t q = 0; q < C->numel; q++)
		if (!isfinite(C->f32[q]))
			return -1;
	*c = k;
	return j;
}

/* ConvNeXt's LayerScale: the matmul's output y read only by a Transpose
 * that moves its last axis to axis q, read only by a Mul by a constant of
 * n values along q (C x 1 x 1), or of one. The Mul's node, the constant
 * in *c; -1 if none. The matmul folds it into its weights, and the Mul
 * then passes the Transpose's output on (skip 2). */
static int channel_scale_after_transpose(const build *b, int y, int64_t n, int *c)
{
	const fc_model_graph *g = b->g;
	if (b->uses[y] != 1 || fci_is_cut(g, y))
		return -1;
	int j = b->consumer[y];
	const fc_model_node *tp = &g->nodes[j];
	if (!fci_runs(b, j) || tp->op != FC_OP_TRANSPOSE || tp->in[0] != y)
		return -1;
	const fc_model_tensor *T = &g->tensors[tp->out[0]];
	int q = 0, r = T->ndim;
	while (q < r && tp->attr.perm.perm[q] != g->tensors[y].ndim - 1)
		q++;
	int t = tp->out[0], mul = channel_scale(b, t, 1, c);
	if (q >= r || mul < 0)
		return -1; /* channel_scale(.., 1, ..) checked the Mul; now its constant along q */
	const fc_model_tensor *C = &g->tensors[*c];
	if (C->numel != 1) {
		if (C->numel != n || C->ndim > r)
			return -1;
		for (int k = 0; k < C->ndim; k++) /* right-aligned: dim k of C is axis k + r - C->ndim */
			if (C->dims[k] != (k + r - C->ndim == q ? n : 1))
				return -1;
	}
	return mul;
}

/* Gemm (A act M x K, B const, C const) and MatMul (A act ... x K, B const K x N). */
static int build_matmul(build *b, int i)
{
	const fc_model_graph *g = b->g;
	const fc_model_node *nd = &g->nodes[i];
	fc_engine *e = b->e;
	int a = nd->in[0], w = nd->n_in > 1 ? nd->in[1] : -1, c = nd->n_in > 2 ? nd->in[2] : -1, y = nd->out[0];
	int gemm = nd->op == FC_OP_GEMM;
	if (!gemm && fci_is_act(b, a) && fci_is_act(b, w))
		return fci_build_matmul_act(b, i);
	int rc;
	if (!fci_is_act(b, a) || !fci_is_const(b, w) || g->tensors[w].ndim != 2 || (c >= 0 && !fci_is_const(b, c)) ||
	    (gemm && nd->attr.gemm.trans_a) || g->tensors[a].ndim < 1)
		return fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s' (%s): only activation x constant weights", nd->name,
			    nd->op_type);
	const fc_model_tensor *A = &g->tensors[a], *B = &g->tensors[w], *Y = &g->tensors[y];
	int tb = gemm && nd->attr.gemm.trans_b;
	int64_t K = tb ? B->dims[1] : B->dims[0], N = tb ? B->dims[0] : B->dims[1];
	int64_t M = A->numel / K;
	if (A->dims[A->ndim - 1] != K || M * K != A->numel || Y->numel != M * N)
		return fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s' (%s): shapes do not fit", nd->name, nd->op_type);
	float *wp = NULL, *bias = NULL;
	void *wdata = NULL; /* the weights fci_const_mem takes: wp's f32 or q's s8 */
	struct fci_qmm q = { 0 };
	int add = -1; /* an Add of a constant per output, fused as the bias */
	if (c < 0 && !gemm && (c = fci_bias_add(b, i, N, &add)) >= 0) {
		y = g->nodes[add].out[0];
		Y = &g->tensors[y];
	}
	/* A per-output factor after it (LayerScale) scales the weights and
	 * bias; after a Transpose (ConvNeXt's), the Mul then passes the
	 * Transpose's output on. */
	int gamma = -1, ls = channel_scale(b, y, N, &gamma), ls_tp = -1;
	if (ls < 0 && (ls_tp = channel_scale_after_transpose(b, y, N, &gamma)) >= 0)
		b->skip[ls_tp] = 2;
	const float *gm = ls >= 0 || ls_tp >= 0 ? g->tensors[gamma].f32 : NULL;
	int64_t gstep = gm && g->tensors[gamma].numel == N;
	if (ls >= 0) {
		y = g->nodes[ls].out[0];
		Y = &g->tensors[y];
	}
	if (c >= 0) {
		const fc_model_tensor *Ct = &g->tensors[c];
		if (Ct->numel != N && Ct->numel != 1)
			return fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s' (Gemm): bias must be per output", nd->name);
		if (!(bias = fci_balloc(e, (size_t)N * sizeof *bias)))
			return FC_ERR_NOMEM;
		for (int64_t k = 0; k < N; k++)
			bias[k] = Ct->f32[Ct->numel == 1 ? 0 : k] * (gemm ? nd->attr.gemm.beta : 1.0f) *
				  (gm ? gm[k * gstep] : 1.0f);
	}
	/* Elementwise ops after it (a transformer MLP's GELU) as post-ops. */
	dnnl_primitive_attr_t attr = NULL;
	dnnl_post_ops_t po = NULL;
	dnnl_primitive_desc_t pd = NULL;
	if (dnnl_primitive_attr_create(&attr) || dnnl_post_ops_create(&po)) {
		rc = FC_ERR_NOMEM;
		goto out;
	}
	if ((rc = fci_post_ops(b, i, po, &y, NULL, NULL)))
		goto out;
	/* ... and a residual Add after those as a sum post-op: the output
	 * starts as the residual (in place when nothing reads it later). */
	int res = -1, radd = residual_add(b, y, &res);
	if (radd >= 0 && dnnl_post_ops_append_sum(po, 1.0f)) {
		rc = FC_ERR_INTERNAL;
		goto out;
	}
	if (dnnl_primitive_attr_set_post_ops(attr, po)) {
		rc = FC_ERR_INTERNAL;
		goto out;
	}
	Y = &g->tensors[y];
	dnnl_dims_t ad = { M, K }, wd = { K, N }, bd = { 1, N }, yd = { M, N };
	dnnl_dims_t ws = { tb ? 1 : N, tb ? K : 1 };
	int src = fci_view(b, i, b->tv[a], 2, ad);
	if (src < 0) {
		rc = src;
		goto out;
	}
	if (!(wp = fci_cst_copy(b, w))) {
		rc = FC_ERR_NOMEM;
		goto out;
	}
	if (gemm && nd->attr.gemm.alpha != 1.0f)
		for (int64_t k = 0; k < B->numel; k++)
			wp[k] *= nd->attr.gemm.alpha;
	if (gm) /* column n of K x N (row n of N x K) by gamma[n] */
		for (int64_t k = 0; k < B->numel; k++)
			wp[k] *= gm[(tb ? k / K : k % N) * gstep];
	/* A source of another type (the f32 input, a C step's output) joins
	 * in the engine's: oneDNN has no f32 x bf16 matmul. */
	dnnl_memory_desc_t ma = fci_val(b, src)->md, mw, uw, mb, my;
	if (fci_md_plain(&ma, 2, ad, e->dt) || fci_md_plain(&mb, 2, bd, dnnl_f32) ||
	    (radd >= 0 ? fci_md_plain(&my, 2, yd, e->dt) : fci_md_any(&my, 2, yd, e->dt))) {
		rc = FC_ERR_INTERNAL;
		goto out;
	}
	/* int8 where the table has the source's range (engine_int8.c) */
	if (e->int8 && (rc = fci_matmul_int8(b, a, wp, wd, ws, bias, attr, &ma, &my, &q)) < 0)
		goto out;
	if (rc == 1) {
		pd = q.pd, q.pd = NULL;
		if ((src = fci_matmul_int8_src(b, i, a, &q, ad)) < 0 ||
		    dnnl_memory_desc_init_by_strides(&uw, 2, wd, dnnl_s8, ws)) {
			rc = src < 0 ? src : FC_ERR_INTERNAL;
			goto out;
		}
		wdata = q.wq, q.wq = NULL;
		bias = q.bias;
	} else {
		rc = 0;
		wdata = wp, wp = NULL;
		if (fci_val(b, src)->md.data_type != e->dt && (src = fci_want(b, i, src, &ma)) < 0) {
			rc = src;
			goto out;
		}
		dnnl_matmul_desc_t desc;
		if (fci_md_any(&mw, 2, wd, e->dt) || dnnl_memory_desc_init_by_strides(&uw, 2, wd, dnnl_f32, ws) ||
		    dnnl_matmul_desc_init(&desc, &fci_val(b, src)->md, &mw, bias ? &mb : NULL, &my)) {
			rc = fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s' (%s): onednn rejects its shapes", nd->name,
					    nd->op_type);
			goto out;
		}
		if ((rc = fci_create_pd(b, i, &pd, &desc, attr)))
			goto out;
	}
	dnnl_memory_desc_t w_q = fci_query_md(pd, dnnl_query_weights_md), y_q = fci_query_md(pd, dnnl_query_dst_md);
	dnnl_memory_t m1, m2 = NULL;
	int out;
	if (radd >= 0) {
		int r = fci_view(b, i, b->tv[res], 2, yd);
		if (r >= 0)
			r = fci_want(b, i, r, &y_q);
		if (r < 0) {
			rc = r;
			goto out;
		}
		if (fci_residual_in_place(b, i, radd, r, src)) {
			out = fci_alias_value(b, r, &y_q);
		} else if ((out = fci_new_value(b, &y_q, NULL)) >= 0 && (rc = fci_reorder_step(b, i, r, out, "Copy"))) {
			goto out;
		}
		y = g->nodes[radd].out[0];
		Y = &g->tensors[y];
	} else {
		out = fci_new_value(b, &y_q, NULL);
	}
	if (out < 0) {
		rc = out;
		goto out;
	}
	rc = fci_const_mem(b, &m1, &uw, wdata, &w_q);
	wdata = NULL; /* fci_const_mem's now */
	if (rc || (bias && (rc = fci_mem(b, &m2, &mb, bias))) || (rc = fci_new_step(b, i, ST_PRIM, 4)) ||
	    (rc = fci_observe(b, a)))
		goto out;
	fci_arg(b, DNNL_ARG_SRC, src, NULL);
	fci_arg(b, DNNL_ARG_WEIGHTS, -1, m1);
	if (bias)
		fci_arg(b, DNNL_ARG_BIAS, -1, m2);
	fci_arg(b, DNNL_ARG_DST, out, NULL);
	if ((rc = fci_finish_prim(b, pd, NULL)))
		goto out;
	if (Y->ndim != 2 && (out = fci_view(b, i, out, Y->ndim, Y->dims)) < 0) {
		rc = out;
		goto out;
	}
	if (add >= 0)
		b->skip[add] = 1;
	if (radd >= 0)
		b->skip[radd] = 1;
	if (ls >= 0)
		b->skip[ls] = 1;
	fci_bind_tensor(b, y, out);
out:
	free(wp);
	free(wdata);
	fci_qmm_free(&q);
	if (pd)
		dnnl_primitive_desc_destroy(pd);
	if (po)
		dnnl_post_ops_destroy(po);
	if (attr)
		dnnl_primitive_attr_destroy(attr);
	return rc;
}

static int build_concat(build *b, int i)
{
	const fc_model_graph *g = b->g;
	const fc_model_node *nd = &g->nodes[i];
	const fc_model_tensor *Y = &g->tensors[nd->out[0]];
	int n = nd->n_in, rc = 0, y = -1, all_plain = 1;
	int *src = calloc((size_t)n, sizeof *src);
	dnnl_memory_desc_t *mds = calloc((size_t)n, sizeof *mds);
	dnnl_primitive_desc_t pd = NULL;
	if (!src || !mds) {
		rc = FC_ERR_NOMEM;
		goto out;
	}
	for (int k = 0; k < n; k++) {
		int t = nd->in[k];
		if (t < 0 || (!fci_is_act(b, t) && !fci_is_const(b, t)) || g->tensors[t].ndim != Y->ndim) {
			rc = fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s' (Concat): unsupported input", nd->name);
			goto out;
		}
		if ((src[k] = fci_operand_as(b, t, Y->ndim, b->e->dt)) < 0) {
			rc = src[k];
			goto out;
		}
		/* Sources of another data type (a constant, a C step's f32) join
		 * in plain layout and the engine's type. */
		if (fci_val(b, src[k])->md.data_type != b->e->dt) {
			dnnl_memory_desc_t p;
			const fc_model_tensor *T = &g->tensors[t];
			if (fci_md_plain(&p, T->ndim, T->dims, b->e->dt) || (src[k] = fci_want(b, i, src[k], &p)) < 0) {
				rc = src[k] < 0 ? src[k] : FC_ERR_INTERNAL;
				goto out;
			}
		}
		mds[k] = fci_val(b, src[k])->md;
		dnnl_memory_desc_t p;
		if (fci_md_plain(&p, mds[k].ndims, mds[k].dims, mds[k].data_type) || !dnnl_memory_desc_equal(&p, &mds[k]))
			all_plain = 0;
	}
	/* Plain sources (tokens, a class token) get a plain destination: left
	 * to choose, oneDNN 2.6.3 picks one only its ref concat writes. */
	dnnl_memory_desc_t pdst;
	if (all_plain && fci_md_plain(&pdst, Y->ndim, Y->dims, b->e->dt)) {
		rc = FC_ERR_INTERNAL;
		goto out;
	}
	if (dnnl_concat_primitive_desc_create(&pd, all_plain ? &pdst : NULL, n, nd->attr.axis.axis, mds, NULL,
					      b->e->eng)) {
		pd = NULL;
		rc = fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s' (Concat): onednn rejects it", nd->name);
		goto out;
	}
	/* Sources in different layouts (a Winograd engine's nChw16c convs
	 * beside a pooling's NHWC, DenseNet) leave oneDNN only its ref concat:
	 * they join as nChw16c when their channels allow it. */
	if (strncmp(fci_impl_of(pd), "ref", 3) == 0 && Y->ndim == 4 && nd->attr.axis.axis == 1) {
		int blocked = 1;
		for (int k = 0; k < n; k++)
			blocked &= mds[k].dims[1] % 16 == 0;
		for (int k = 0; blocked && k < n; k++) {
			dnnl_memory_desc_t q;
			if (dnnl_memory_desc_init_by_tag(&q, 4, mds[k].dims, mds[k].data_type, dnnl_nChw16c) ||
			    (src[k] = fci_want(b, i, src[k], &q)) < 0) {
				rc = src[k] < 0 ? src[k] : FC_ERR_INTERNAL;
				goto out;
			}
			mds[k] = q;
		}
		if (blocked) {
			dnnl_primitive_desc_destroy(pd);
			if (dnnl_concat_primitive_desc_create(&pd, NULL, n, 1, mds, NULL, b->e->eng)) {
				pd = NULL;
				rc = fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s' (Concat): onednn rejects it",
						    nd->name);
				goto out;
			}
		}
	}
	dnnl_memory_desc_t q = fci_query_md(pd, dnnl_query_dst_md);
	if ((y = fci_new_value(b, &q, NULL)) < 0 || (rc = fci_new_step(b, i, ST_PRIM, n + 1))) {
		rc = y < 0 ? y : rc;
		goto out;
	}
	for (int k = 0; k < n; k++)
		fci_arg(b, DNNL_ARG_MULTIPLE_SRC + k, src[k], NULL);
	fci_arg(b, DNNL_ARG_DST, y, NULL);
	fci_bind_tensor(b, nd->out[0], y);
	rc = fci_finish_prim(b, pd, NULL);
out:
	if (pd)
		dnnl_primitive_desc_destroy(pd);
	free(src);
	free(mds);
	return rc;
}

static int build_pad(build *b, int i)
{
	const fc_model_graph *g = b->g;
	const fc_model_node *nd = &g->nodes[i];
	const fc_model_tensor *X = &g->tensors[nd->in[0]], *Y = &g->tensors[nd->out[0]];
	if (!fci_is_act(b, nd->in[0]) || X->ndim < 1)
		return fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s' (Pad): unsupported input", nd->name);
	int v = b->tv[nd->in[0]], y, rc;
	if (X->numel == Y->numel) { /* nothing to pad (torch emits these) */
		if ((y = fci_alias_value(b, v, &fci_val(b, v)->md)) < 0)
			return y;
		fci_bind_tensor(b, nd->out[0], y);
		return 0;
	}
	dnnl_memory_desc_t md;
	if ((v = fci_want_plain(b, i, v)) < 0)
		return v;
	if (fci_md_plain(&md, Y->ndim, Y->dims, dnnl_f32) || (y = fci_new_value(b, &md, NULL)) < 0)
		return FC_ERR_NOMEM;
	if ((rc = fci_new_step(b, i, ST_PAD, 3)))
		return rc;
	step *sp = fci_last_step(b);
	sp->ndim = X->ndim;
	for (int k = 0; k < X->ndim; k++) {
		sp->dims[k] = Y->dims[k];
		sp->sdims[0][k] = X->dims[k];
		sp->sdims[1][k] = nd->attr.pad.begin[k];
	}
	sp->alpha = nd->attr.pad.value;
	sp->val[0] = v, sp->val[1] = -1, sp->val[2] = y, sp->nval = 3;
	fci_bind_tensor(b, nd->out[0], y);
	return 0;
}

/* Node i's first input, an activation, in the plain row-major layout of
 * type dt that C steps (f32) and layout-agnostic primitives read. */
int fci_plain_input(build *b, int i, dnnl_data_type_t dt)
{
	const fc_model_node *nd = &b->g->nodes[i];
	const fc_model_tensor *X = &b->g->tensors[nd->in[0]];
	dnnl_memory_desc_t md;
	if (!fci_is_act(b, nd->in[0]))
		return fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s' (%s): unsupported input", nd->name,
				      nd->op_type);
	if (fci_md_plain(&md, X->ndim, X->dims, dt))
		return FC_ERR_INTERNAL;
	return fci_want(b, i, b->tv[nd->in[0]], &md);
}

/* LpNormalization (p = 2, last axis: model_infer.c refuses others): a C
 * step over the plain layout, each row divided by its L2 norm exactly as
 * featcache's head normalises (fci_l2_normalize_rows). */
static int build_lpnorm(build *b, int i)
{
	const fc_model_graph *g = b->g;
	const fc_model_node *nd = &g->nodes[i];
	const fc_model_tensor *X = &g->tensors[nd->in[0]];
	int v = fci_plain_input(b, i, dnnl_f32), y, rc;
	dnnl_memory_desc_t md;
	if (v < 0)
		return v;
	if (fci_md_plain(&md, X->ndim, X->dims, dnnl_f32) || (y = fci_new_value(b, &md, NULL)) < 0)
		return FC_ERR_NOMEM;
	if ((rc = fci_new_step(b, i, ST_LPNORM, 3)))
		return rc;
	step *sp = fci_last_step(b);
	sp->ndim = 2;
	sp->dims[1] = X->dims[X->ndim - 1];
	sp->dims[0] = sp->dims[1] ? X->numel / sp->dims[1] : 0;
	sp->val[0] = v, sp->val[1] = -1, sp->val[2] = y, sp->nval = 3;
	fci_bind_tensor(b, nd->out[0], y);
	return 0;
}

/* Transpose of an activation: one reorder that writes the input through
 * a descriptor with its dims and permuted strides, so that the buffer
 * holds the output in plain row-major order; the output is that buffer
 * under the output's plain descriptor. */
static int build_transpose(build *b, int i)
{
	const fc_model_graph *g = b->g;
	const fc_model_node *nd = &g->nodes[i];
	const fc_model_tensor *X = &g->tensors[nd->in[0]], *Y = &g->tensors[nd->out[0]];
	int v = b->tv[nd->in[0]], w, y, rc;
	dnnl_dims_t xdims, strides;
	dnnl_memory_desc_t wmd, ymd;
	dnnl_data_type_t dt = fci_val(b, v)->md.data_type;
	if (!fci_is_act(b, nd->in[0]) || X->ndim < 1)
		return fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s' (Transpose): unsupported input", nd->name);
	/* output dim k (stride of a row-major Y) is input dim perm[k] */
	int64_t s = 1;
	for (int k = Y->ndim - 1; k >= 0; k--) {
		strides[nd->attr.perm.perm[k]] = s;
		s *= Y->dims[k];
	}
	for (int k = 0; k < X->ndim; k++)
		xdims[k] = X->dims[k];
	if (dnnl_memory_desc_init_by_strides(&wmd, X->ndim, xdims, dt, strides) ||
	    fci_md_plain(&ymd, Y->ndim, Y->dims, dt))
		return fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s' (Transpose): onednn rejects its shapes", nd->name);
	if ((w = fci_new_value(b, &wmd, NULL)) < 0)
		return w;
	if ((rc = fci_reorder_step(b, i, v, w, NULL)))
		return rc;
	if ((y = fci_alias_value(b, w, &ymd)) < 0)
		return y;
	fci_bind_tensor(b, nd->out[0], y);
	return 0;
}

int fci_build_node(build *b, int i)
{
	const fc_model_node *nd = &b->g->nodes[i];
	int rc;
	if (b->e->int8 && (rc = fci_int8_inputs(b, i)))
		return rc;
	if ((rc = fci_build_pattern(b, i)))
		return rc < 0 ? rc : 0;
	if ((nd->op == FC_OP_DIV || nd->op == FC_OP_MUL) && fci_build_matmul_scale(b, i))
		return 0;
	if ((nd->op == FC_OP_ADD || nd->op == FC_OP_SUB || nd->op == FC_OP_MUL || nd->op == FC_OP_DIV) &&
	    (rc = fci_build_binary_expand(b, i)))
		return rc < 0 ? rc : 0;
	if (nd->op == FC_OP_TRANSPOSE && (rc = fci_build_transpose_view(b, i)))
		return rc < 0 ? rc : 0;
	switch (nd->op) {
	case FC_OP_CONV:
		return build_conv(b, i);
	case FC_OP_BATCHNORM:
		return build_bn(b, i);
	case FC_OP_RELU:
	case FC_OP_CLIP:
	case FC_OP_LEAKYRELU:
	case FC_OP_SIGMOID:
	case FC_OP_HARDSIGMOID:
	case FC_OP_HARDSWISH:
	case FC_OP_POW:
	case FC_OP_SQRT:
	case FC_OP_TANH:
	case FC_OP_GELU:
		return build_eltwise(b, i);
	case FC_OP_ADD:
	case FC_OP_SUB:
	case FC_OP_MUL:
	case FC_OP_DIV:
		return build_binary(b, i);
	case FC_OP_MAXPOOL:
	case FC_OP_AVGPOOL:
	case FC_OP_GLOBALAVGPOOL:
	case FC_OP_REDUCEMEAN:
		return build_pool(b, i);
	case FC_OP_PAD:
		return build_pad(b, i);
	case FC_OP_LPNORM:
		return build_lpnorm(b, i);
	case FC_OP_LAYERNORM:
		return fci_layernorm_step(b, i, nd->in[0], nd->out[0], nd->attr.bn.epsilon, nd->in[1],
					  nd->n_in > 2 ? nd->in[2] : -1, NULL);
	case FC_OP_TRANSPOSE:
		return build_transpose(b, i);
	case FC_OP_ERF:
		/* oneDNN 2.6.3 has gelu_erf but no erf eltwise */
		return fci_build_fail(b, FC_ERR_UNSUPPORTED,
			    "node '%s' (Erf): only supported as part of GELU, x * 0.5 * (1 + Erf(x / sqrt(2)))", nd->name);
	case FC_OP_CONCAT:
		return build_concat(b, i);
	case FC_OP_FLATTEN:
	case FC_OP_RESHAPE:
	case FC_OP_SQUEEZE:
	case FC_OP_UNSQUEEZE: {
		const fc_model_tensor *Y = &b->g->tensors[nd->out[0]];
		if (!fci_is_act(b, nd->in[0]))
			return fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s' (%s): unsupported input", nd->name,
				    nd->op_type);
		int v = fci_view(b, i, b->tv[nd->in[0]], Y->ndim, Y->dims);
		if (v < 0)
			return v;
		fci_bind_tensor(b, nd->out[0], v);
		return 0;
	}
	case FC_OP_GEMM:
	case FC_OP_MATMUL:
		return build_matmul(b, i);
	case FC_OP_SOFTMAX:
		return fci_build_softmax(b, i);
	case FC_OP_SLICE:
	case FC_OP_GATHER:
		return fci_build_slice(b, i);
	}
	return fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s': op %s is not supported by the engine", nd->name,
		    nd->op_type);
}

/* The edges: the cut (global-average-pooled when 4-D) into the f32 output. */
/* Cut k as a vector per image: a 4-D map average-pooled, the rest as it
 * is; its value (or a negative FC_ERR_*) and its dims as N x T x D. */
static int cut_value(build *b, int k, int64_t *dims)
{
	const fc_model_graph *g = b->g;
	const fc_model_tensor *T = &g->tensors[g->cut_tensors[k]];
	int node = g->cut_nodes[k], v = b->tv[g->cut_tensors[k]];

	dims[0] = T->dims[0];
	dims[1] = 1;
	dims[2] = g->cut_dims[k];
	if (T->ndim == 4) {
		int64_t yd[4] = { T->dims[0], T->dims[1], 1, 1 };
		dnnl_dims_t kd = { T->dims[2], T->dims[3] }, one = { 1, 1 }, zero = { 0, 0 };
		return pool_step(b, node, v, dnnl_pooling_avg_exclude_padding, yd, kd, one, zero, zero, zero,
				 "GlobalAveragePool");
	}
	if (T->ndim == 3 && g->token_pool != FC_POOL_AUTO && g->token_pool != FC_POOL_FLATTEN) {
		dims[1] = T->dims[1];
		dims[2] = T->dims[2];
	}
	return v;
}

/* The embedding: one cut taken whole is reordered straight into the f32
 * N x D output; several cuts, or tokens to pool, each go through a plain
 * f32 copy and a C step that writes their columns. */
int fci_build_output(build *b)
{
	const fc_model_graph *g = b->g;
	fc_engine *e = b->e;
	int64_t col = 0;

	for (int k = 0; k < g->n_cuts; k++) {
		int64_t d3[3];
		int node = g->cut_nodes[k], v = cut_value(b, k, d3), y, rc;
		dnnl_memory_desc_t md;

		if (v < 0)
			return v;
		if (g->n_cuts == 1 && d3[1] == 1) {
			int64_t od[2] = { e->batch, (int64_t)e->dim };

			if ((v = fci_view(b, node, v, 2, od)) < 0)
				return v;
			if (fci_md_plain(&md, 2, od, dnnl_f32) || (y = fci_new_value(b, &md, e->out_buf)) < 0)
				return FC_ERR_NOMEM;
			return fci_reorder_step(b, node, v, y, "OutputReorder");
		}
		if ((v = fci_view(b, node, v, 3, d3)) < 0)
			return v;
		if (fci_md_plain(&md, 3, d3, dnnl_f32) || (y = fci_new_value(b, &md, NULL)) < 0)
			return FC_ERR_NOMEM;
		if ((rc = fci_reorder_step(b, node, v, y, "OutputReorder")) || (rc = fci_new_step(b, node, ST_OUT, 3)))
			return rc;
		step *sp = fci_last_step(b);
		sp->ndim = 3;
		memcpy(sp->dims, d3, sizeof d3);
		sp->op = d3[1] == 1 ? FC_POOL_AUTO : g->token_pool;
		sp->prefix = g->prefix_tokens;
		sp->col = col;
		sp->val[0] = y, sp->val[1] = -1, sp->val[2] = -1, sp->nval = 3;
		col += g->cut_dims[k];
	}
	return 0;
}
