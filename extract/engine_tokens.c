/*
 * engine_tokens.c - the engine's builders for the ops vision transformers
 * run on token activations (issue 11):
 *  - MatMul of two activations (attention's q kT and attn v), batched,
 *    batch dims broadcast numpy-style, on oneDNN's matmul with plain
 *    operands; a Div or Mul by a constant scalar whose only reader is such
 *    a MatMul (the q scale) becomes the matmul's output scale instead of
 *    a step of its own, and a Transpose only such a MatMul reads is no
 *    copy but a view with permuted strides, read as it is where oneDNN
 *    has a kernel for it (attention's q, kT and v);
 *  - Softmax over the last axis, oneDNN's softmax_v2 (statistics in f32
 *    in bf16 too);
 *  - Slice (positive steps) and Gather of one constant index: one reorder
 *    from a strided descriptor over the plain input's buffer (a box of it
 *    at an offset, every step-th element) into a plain output;
 *  - binary ops of rank >= 5 with a constant broadcast over inner dims
 *    (Swin's attention mask): the constant expanded once;
 *  - the match of a bias Add after a MatMul by constant weights, which
 *    build_matmul fuses as the matmul's bias.
 * Concat with constant inputs needs nothing here: build_concat in
 * engine_ops.c wraps constants as it does for binary ops.
 *
 * Every output but a Transpose's view is plain row-major in the
 * activations' type, which the Reshape/MatMul chains of attention read
 * without reorders.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "extract/engine_impl.h"

/* Value v viewed at rank r (dims right-aligned, leading 1s) and made
 * plain row-major of type dt. Returns the value or a negative FC_ERR_*. */
static int plain_at_rank(build *b, int i, int v, int r, const int64_t *dims, dnnl_data_type_t dt)
{
	dnnl_memory_desc_t md;
	if (fci_val(b, v)->md.ndims != r && (v = fci_view(b, i, v, r, dims)) < 0)
		return v;
	if (fci_md_plain(&md, r, dims, dt))
		return FC_ERR_INTERNAL;
	return fci_want(b, i, v, &md);
}

/* dims of tensor t right-aligned to rank r. */
static void align_dims(int64_t *out, const fc_model_tensor *t, int r)
{
	for (int k = 0; k < r; k++)
		out[k] = k < r - t->ndim ? 1 : t->dims[k - (r - t->ndim)];
}

/* ---- a scalar Div/Mul folded into the MatMul after it ---- */

/* Whether node j is a Div or Mul of an activation by a constant scalar
 * whose output only a MatMul of two activations reads (not the cut):
 * then *x is that activation and *scale the factor it contributes. */
static int scale_into_matmul(const build *b, int j, int *x, float *scale)
{
	const fc_model_graph *g = b->g;
	if (j < 0)
		return 0;
	const fc_model_node *nd = &g->nodes[j];
	if ((nd->op != FC_OP_DIV && nd->op != FC_OP_MUL) || nd->n_in != 2 || !fci_runs(b, j))
		return 0;
	int k = fci_is_act(b, nd->in[0]) ? 0 : 1, c = nd->in[1 - k], o = nd->out[0];
	if (!fci_is_act(b, nd->in[k]) || !fci_is_const(b, c) || g->tensors[c].numel != 1 ||
	    (nd->op == FC_OP_DIV && k != 0))
		return 0;
	const fc_model_tensor *X = &g->tensors[nd->in[k]], *O = &g->tensors[o];
	if (X->ndim != O->ndim || memcmp(X->dims, O->dims, sizeof(int64_t) * (size_t)X->ndim) != 0)
		return 0;
	float s = g->tensors[c].f32[0];
	if (b->uses[o] != 1 || !isfinite(s) || (nd->op == FC_OP_DIV && s == 0))
		return 0;
	int m = b->consumer[o];
	const fc_model_node *mm = &g->nodes[m];
	if (!fci_runs(b, m) || mm->op != FC_OP_MATMUL || mm->n_in != 2 || !fci_is_act(b, mm->in[0]) ||
	    !fci_is_act(b, mm->in[1]))
		return 0;
	*x = nd->in[k];
	*scale = nd->op == FC_OP_DIV ? 1 / s : s;
	return 1;
}

/* The scalar Mul (either operand) or Div (by the constant) that alone
 * reads tensor y, a MatMul's output: its node, the factor in *scale; -1
 * if none. */
static int scale_after_matmul(const build *b, int y, float *scale)
{
	const fc_model_graph *g = b->g;
	if (b->uses[y] != 1 || fci_is_cut(g, y))
		return -1;
	int j = b->consumer[y];
	const fc_model_node *nd = &g->nodes[j];
	if (!fci_runs(b, j) || (nd->op != FC_OP_DIV && nd->op != FC_OP_MUL) || nd->n_in != 2)
		return -1;
	int c = nd->in[0] == y ? nd->in[1] : nd->in[0];
	if (c == y || !fci_is_const(b, c) || g->tensors[c].numel != 1 || (nd->op == FC_OP_DIV && nd->in[0] != y))
		return -1;
	const fc_model_tensor *Y = &g->tensors[y], *O = &g->tensors[nd->out[0]];
	float s = g->tensors[c].f32[0];
	if (O->ndim != Y->ndim || memcmp(O->dims, Y->dims, sizeof(int64_t) * (size_t)Y->ndim) != 0 || !isfinite(s) ||
	    (nd->op == FC_OP_DIV && s == 0))
		return -1;
	*scale = nd->op == FC_OP_DIV ? 1 / s : s;
	return j;
}

int fci_build_matmul_scale(build *b, int i)
{
	int x;
	float s;
	if (!scale_into_matmul(b, i, &x, &s))
		return 0;
	/* The output is the input: the MatMul applies the factor. */
	fci_bind_tensor(b, b->g->nodes[i].out[0], b->tv[x]);
	return 1;
}

/* ---- a bias Add after a MatMul by constant weights ---- */

/* If the output of MatMul node i (n outputs per row) is read only by an
 * Add of a constant of n values over its last axis (torch exports Linear
 * layers on tokens as MatMul then Add), the constant tensor, with *add
 * the Add node, to fuse as the matmul's bias; else -1. */
int fci_bias_add(const build *b, int i, int64_t n, int *add)
{
	const fc_model_graph *g = b->g;
	int y = g->nodes[i].out[0], j = b->uses[y] == 1 ? b->consumer[y] : -1;
	if (j < 0 || !fci_runs(b, j) || g->nodes[j].op != FC_OP_ADD || g->nodes[j].n_in != 2)
		return -1;
	const fc_model_node *an = &g->nodes[j];
	int c = an->in[0] == y ? an->in[1] : an->in[0];
	if (c == y || !fci_is_const(b, c) || g->tensors[c].numel != n || g->tensors[c].ndim < 1 ||
	    g->tensors[c].dims[g->tensors[c].ndim - 1] != n)
		return -1;
	const fc_model_tensor *Y = &g->tensors[y], *O = &g->tensors[an->out[0]];
	if (O->ndim != Y->ndim || memcmp(O->dims, Y->dims, sizeof(int64_t) * (size_t)Y->ndim) != 0)
		return -1;
	*add = j;
	return c;
}

/* ---- MatMul of two activations ---- */

int fci_build_matmul_act(build *b, int i)
{
	const fc_model_graph *g = b->g;
	const fc_model_node *nd = &g->nodes[i];
	fc_engine *e = b->e;
	int a = nd->in[0], w = nd->in[1], y = nd->out[0], x, rc;
	const fc_model_tensor *A = &g->tensors[a], *W = &g->tensors[w], *Y = &g->tensors[y];
	int r = Y->ndim;
	float scale = 1, s;
	if (A->ndim < 2 || W->ndim < 2 || r < 2 || r > DNNL_MAX_NDIMS)
		return fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s' (MatMul): operands of rank %d and %d", nd->name,
				      A->ndim, W->ndim);
	for (int k = 0; k < 2; k++)
		if (scale_into_matmul(b, g->tensors[nd->in[k]].producer, &x, &s))
			scale *= s;
	/* ... and one on its output ((q @ kT) * scale, as DINOv2 writes it) */
	int after = scale_after_matmul(b, y, &s);
	if (after >= 0) {
		scale *= s;
		y = g->nodes[after].out[0];
		Y = &g->tensors[y];
	}
	int64_t da[FC_MODEL_MAX_DIMS], dw[FC_MODEL_MAX_DIMS];
	align_dims(da, A, r);
	align_dims(dw, W, r);
	int va = b->tv[a], vw = b->tv[w];
	dnnl_memory_desc_t ma = fci_val(b, va)->md, mw = fci_val(b, vw)->md, my;
	dnnl_matmul_desc_t desc;
	dnnl_primitive_desc_t pd = NULL;
	dnnl_primitive_attr_t attr = NULL;
	if (fci_md_plain(&my, r, Y->dims, e->dt))
		return FC_ERR_INTERNAL;
	if (dnnl_primitive_attr_create(&attr))
		return FC_ERR_NOMEM;
	if (scale != 1 && dnnl_primitive_attr_set_output_scales(attr, 1, 0, &scale)) {
		rc = FC_ERR_INTERNAL;
		goto out;
	}
	/* Operands as they are (a transposed view, fci_build_transpose_view)
	 * when oneDNN has a kernel for their strides; else plain copies. */
	if (ma.ndims == r && mw.ndims == r && ma.data_type == e->dt && mw.data_type == e->dt &&
	    !dnnl_matmul_desc_init(&desc, &ma, &mw, NULL, &my)) {
		if (dnnl_primitive_desc_create(&pd, &desc, attr, e->eng, NULL) != dnnl_success) {
			pd = NULL;
		} else if (!strncmp(fci_impl_of(pd), "ref", 3)) {
			dnnl_primitive_desc_destroy(pd);
			pd = NULL;
		}
	}
	if (!pd) {
		if ((va = plain_at_rank(b, i, va, r, da, e->dt)) < 0 || (vw = plain_at_rank(b, i, vw, r, dw, e->dt)) < 0) {
			rc = va < 0 ? va : vw;
			goto out;
		}
		ma = fci_val(b, va)->md;
		mw = fci_val(b, vw)->md;
		if (dnnl_matmul_desc_init(&desc, &ma, &mw, NULL, &my)) {
			rc = fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s' (MatMul): onednn rejects its shapes",
					    nd->name);
			goto out;
		}
		if ((rc = fci_create_pd(b, i, &pd, &desc, attr)))
			goto out;
	}
	int out = fci_new_value(b, &my, NULL);
	if (out < 0 || (rc = fci_new_step(b, i, ST_PRIM, 3))) {
		rc = out < 0 ? out : rc;
		goto out;
	}
	fci_arg(b, DNNL_ARG_SRC, va, NULL);
	fci_arg(b, DNNL_ARG_WEIGHTS, vw, NULL);
	fci_arg(b, DNNL_ARG_DST, out, NULL);
	if (after >= 0)
		b->skip[after] = 1;
	fci_bind_tensor(b, y, out);
	rc = fci_finish_prim(b, pd, NULL);
out:
	if (pd)
		dnnl_primitive_desc_destroy(pd);
	dnnl_primitive_attr_destroy(attr);
	return rc;
}

/* ---- Transpose read by such a MatMul ---- */

/* Whether tensor t is read only by a MatMul of two activations, directly
 * or through a scalar Div/Mul folded into it. */
static int feeds_matmul_act(const build *b, int t)
{
	int j = b->uses[t] == 1 ? b->consumer[t] : -1, x;
	float s;
	if (j < 0 || !fci_runs(b, j))
		return 0;
	if (scale_into_matmul(b, j, &x, &s))
		return 1;
	const fc_model_node *m = &b->g->nodes[j];
	return m->op == FC_OP_MATMUL && m->n_in == 2 && fci_is_act(b, m->in[0]) && fci_is_act(b, m->in[1]);
}

/* A Transpose whose output only such a MatMul reads (attention's q, kT,
 * v): no copy, but a view of the plain input with permuted strides, which
 * the MatMul reads as it is when oneDNN has a kernel for it. Returns 1
 * when built, 0 when node i is no such Transpose, or a negative FC_ERR_*. */
int fci_build_transpose_view(build *b, int i)
{
	const fc_model_graph *g = b->g;
	const fc_model_node *nd = &g->nodes[i];
	const fc_model_tensor *X = &g->tensors[nd->in[0]], *Y = &g->tensors[nd->out[0]];
	if (!fci_is_act(b, nd->in[0]) || X->ndim < 2 || X->ndim > DNNL_MAX_NDIMS || !feeds_matmul_act(b, nd->out[0]))
		return 0;
	int v = plain_at_rank(b, i, b->tv[nd->in[0]], X->ndim, X->dims, b->e->dt), y;
	if (v < 0)
		return v;
	dnnl_dims_t xs, yd, ys;
	int64_t n = 1;
	for (int k = X->ndim - 1; k >= 0; k--) {
		xs[k] = n;
		n *= X->dims[k];
	}
	for (int k = 0; k < Y->ndim; k++) {
		yd[k] = Y->dims[k];
		ys[k] = xs[nd->attr.perm.perm[k]];
	}
	dnnl_memory_desc_t md;
	if (dnnl_memory_desc_init_by_strides(&md, Y->ndim, yd, b->e->dt, ys))
		return 0;
	if ((y = fci_alias_value(b, v, &md)) < 0)
		return y;
	fci_bind_tensor(b, nd->out[0], y);
	return 1;
}

/* ---- Softmax ---- */

/* Softmax over the last axis (model_infer.c refuses others), in place
 * when nothing later reads the input. */
int fci_build_softmax(build *b, int i)
{
	const fc_model_graph *g = b->g;
	const fc_model_node *nd = &g->nodes[i];
	const fc_model_tensor *X = &g->tensors[nd->in[0]];
	if (!fci_is_act(b, nd->in[0]) || X->ndim < 1 || X->ndim > DNNL_MAX_NDIMS)
		return fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s' (Softmax): unsupported input", nd->name);
	int v = plain_at_rank(b, i, b->tv[nd->in[0]], X->ndim, X->dims, b->e->dt), y, rc;
	if (v < 0)
		return v;
	dnnl_memory_desc_t md = fci_val(b, v)->md;
	dnnl_softmax_v2_desc_t desc;
	dnnl_primitive_desc_t pd;
	if (dnnl_softmax_v2_forward_desc_init(&desc, dnnl_forward_inference, dnnl_softmax_accurate, &md, &md,
					      md.ndims - 1))
		return fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s' (Softmax): onednn rejects it", nd->name);
	if ((rc = fci_create_pd(b, i, &pd, &desc, NULL)))
		return rc;
	y = fci_writable_after(b, v, i) ? fci_alias_value(b, v, &md) : fci_new_value(b, &md, NULL);
	if (y < 0 || (rc = fci_new_step(b, i, ST_PRIM, 2))) {
		dnnl_primitive_desc_destroy(pd);
		return y < 0 ? y : rc;
	}
	fci_arg(b, DNNL_ARG_SRC, v, NULL);
	fci_arg(b, DNNL_ARG_DST, y, NULL);
	fci_bind_tensor(b, nd->out[0], y);
	rc = fci_finish_prim(b, pd, NULL);
	dnnl_primitive_desc_destroy(pd);
	return rc;
}

/* ---- Slice and Gather ---- */

/* Slice (positive steps, model_infer.c refuses others) or Gather of one
 * index: the box of the plain input with dims sd at offsets off, every
 * step-th element, described by strides and an offset over the input's
 * buffer and copied by one reorder into a plain value; Gather of a scalar
 * index then drops the axis in a view. */
int fci_build_slice(build *b, int i)
{
	const fc_model_graph *g = b->g;
	const fc_model_node *nd = &g->nodes[i];
	const fc_model_tensor *X = &g->tensors[nd->in[0]], *Y = &g->tensors[nd->out[0]];
	dnnl_dims_t sd, off, inc;
	if (!fci_is_act(b, nd->in[0]) || X->ndim < 1 || X->ndim > DNNL_MAX_NDIMS)
		return fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s' (%s): unsupported input", nd->name,
				      nd->op_type);
	for (int k = 0; k < X->ndim; k++) {
		if (nd->op == FC_OP_GATHER) {
			int here = k == nd->attr.gather.axis;
			sd[k] = here ? 1 : X->dims[k];
			off[k] = here ? nd->attr.gather.index : 0;
			inc[k] = 1;
		} else {
			sd[k] = Y->dims[k];
			off[k] = nd->attr.slice.start[k];
			inc[k] = nd->attr.slice.step[k];
		}
		if (off[k] < 0 || inc[k] < 1 || off[k] + (sd[k] - 1) * inc[k] >= X->dims[k])
			return fci_build_fail(b, FC_ERR_INTERNAL, "node '%s' (%s): box outside the input", nd->name,
					      nd->op_type);
	}
	int v = b->tv[nd->in[0]], s, y, rc;
	v = plain_at_rank(b, i, v, X->ndim, X->dims, fci_val(b, v)->md.data_type);
	if (v < 0)
		return v;
	dnnl_memory_desc_t smd, ymd;
	dnnl_dims_t st;
	int64_t o0 = 0, s1 = 1;
	for (int k = X->ndim - 1; k >= 0; k--) {
		st[k] = s1 * inc[k];
		o0 += off[k] * s1;
		s1 *= X->dims[k];
	}
	if (dnnl_memory_desc_init_by_strides(&smd, X->ndim, sd, fci_val(b, v)->md.data_type, st) ||
	    fci_md_plain(&ymd, X->ndim, sd, b->e->dt))
		return fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s' (%s): onednn rejects its shapes", nd->name,
				      nd->op_type);
	smd.offset0 = o0; /* in elements, as a sub-memory's */
	if ((s = fci_alias_value(b, v, &smd)) < 0)
		return s;
	if ((y = fci_new_value(b, &ymd, NULL)) < 0)
		return y;
	if ((rc = fci_reorder_step(b, i, s, y, NULL)))
		return rc;
	if (Y->ndim != X->ndim && (y = fci_view(b, i, y, Y->ndim, Y->dims)) < 0)
		return y;
	fci_bind_tensor(b, nd->out[0], y);
	return 0;
}

/* ---- binary ops with a constant broadcast over inner dims ---- */

/* A binary op of rank >= 5 whose constant operand broadcasts over dims
 * after the first (Swin's attention mask, 1 x nW x 1 x N x N over
 * B x nW x heads x N x N): oneDNN 2.6.3 runs that broadcast only in its
 * ref code, but has jit kernels for one over the leading dim, so the
 * constant is expanded once, at build time, over every other dim.
 * Returns 1 when built, 0 when node i is no such op, or a negative
 * FC_ERR_*. Rank 4 is left to build_binary, whose layouts serve CNNs. */
int fci_build_binary_expand(build *b, int i)
{
	const fc_model_graph *g = b->g;
	const fc_model_node *nd = &g->nodes[i];
	const fc_model_tensor *Y = &g->tensors[nd->out[0]];
	int r = Y->ndim, a = nd->in[0], c = nd->in[1], inner = 0, rc, y;
	if (nd->n_in != 2 || r < 5 || r > DNNL_MAX_NDIMS)
		return 0;
	if (!fci_is_act(b, a) && (nd->op == FC_OP_ADD || nd->op == FC_OP_MUL)) {
		a = nd->in[1];
		c = nd->in[0];
	}
	if (!fci_is_act(b, a) || !fci_is_const(b, c) || g->tensors[a].ndim != r ||
	    memcmp(g->tensors[a].dims, Y->dims, sizeof(int64_t) * (size_t)r) != 0 || g->tensors[c].ndim > r)
		return 0;
	int64_t dc[FC_MODEL_MAX_DIMS], ed[FC_MODEL_MAX_DIMS], es[FC_MODEL_MAX_DIMS], cs[FC_MODEL_MAX_DIMS];
	align_dims(dc, &g->tensors[c], r);
	for (int k = 1; k < r; k++)
		inner |= dc[k] == 1 && Y->dims[k] > 1;
	if (!inner)
		return 0;
	ed[0] = dc[0];
	for (int k = 1; k < r; k++)
		ed[k] = Y->dims[k];
	int64_t n = 1, m = 1;
	for (int k = r - 1; k >= 0; k--) {
		es[k] = n, cs[k] = m;
		n *= ed[k], m *= dc[k];
	}
	const float *src = g->tensors[c].f32;
	float *p = fci_balloc(b->e, (size_t)n * sizeof *p);
	if (!p)
		return FC_ERR_NOMEM;
	for (int64_t o = 0; o < n; o++) {
		int64_t off = 0;
		for (int k = 0; k < r; k++)
			off += dc[k] == 1 ? 0 : o / es[k] % ed[k] * cs[k];
		p[o] = src[off];
	}
	int va = b->tv[a], vc;
	va = plain_at_rank(b, i, va, r, Y->dims, fci_val(b, va)->md.data_type);
	if (va < 0)
		return va;
	dnnl_memory_desc_t ma = fci_val(b, va)->md, mc;
	if (fci_md_plain(&mc, r, ed, dnnl_f32) || (vc = fci_new_value(b, &mc, p)) < 0)
		return FC_ERR_INTERNAL;
	dnnl_alg_kind_t alg = nd->op == FC_OP_ADD ? dnnl_binary_add
			      : nd->op == FC_OP_SUB ? dnnl_binary_sub
			      : nd->op == FC_OP_MUL ? dnnl_binary_mul
						    : dnnl_binary_div;
	dnnl_binary_desc_t desc;
	dnnl_primitive_desc_t pd;
	if (dnnl_binary_desc_init(&desc, alg, &ma, &mc, &ma))
		return fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s' (%s): onednn rejects it", nd->name, nd->op_type);
	if ((rc = fci_create_pd(b, i, &pd, &desc, NULL)))
		return rc;
	y = fci_writable_after(b, va, i) ? fci_alias_value(b, va, &ma) : fci_new_value(b, &ma, NULL);
	if (y < 0 || (rc = fci_new_step(b, i, ST_PRIM, 3))) {
		dnnl_primitive_desc_destroy(pd);
		return y < 0 ? y : rc;
	}
	fci_arg(b, DNNL_ARG_SRC_0, va, NULL);
	fci_arg(b, DNNL_ARG_SRC_1, vc, NULL);
	fci_arg(b, DNNL_ARG_DST, y, NULL);
	fci_bind_tensor(b, nd->out[0], y);
	rc = fci_finish_prim(b, pd, NULL);
	dnnl_primitive_desc_destroy(pd);
	return rc ? rc : 1;
}
