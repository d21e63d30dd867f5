/*
 * model_fold.c - constant folding: evaluate, at load time, a node whose
 * inputs are all constant (initializers, Constant, values folded before
 * it, and Shape of anything, since every shape is static for one input
 * size). This is what removes the Shape -> Gather -> Unsqueeze -> Concat
 * -> Reshape chains torch emits for x.view(x.size(0), -1), the pad
 * arithmetic of F.pad and the index and mask subgraphs of transformers
 * (Swin's shifted-window masks: Range, Expand, Where, Equal, ScatterND,
 * Mod; its relative position bias: Gather of a table by an index tensor).
 * Elements are F32 or I64; booleans are I64 0/1, and comparisons and Not
 * make them. Integer semantics are ONNX's: Div truncates toward zero, Mod
 * takes the divisor's sign (fmod = 0) or the dividend's (fmod = 1), and
 * Add/Sub/Mul/Neg wrap rather than overflow.
 *
 * Folded values go on the fold list (freed at the next inference) and
 * count against one budget per inference (m->fold_left), so a file cannot
 * make folding allocate more than it holds plus FC_MAX_FOLD_NUMEL values.
 * The shape rules shared with inference are in model_infer.c.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "extract/model_impl.h"

#define T(m, id) (&(m)->tensors[id])

static const char *shp(char *buf, size_t cap, const fc_model_tensor *t)
{
	return fci_model_shape_str(buf, cap, t->ndim, t->dims);
}

/* ---- values ---- */

/* Make out a folded constant; returns its data (f32 or i64), or NULL with
 * the message set. */
static void *new_const(fc_model *m, int node, int out, int elem, int ndim, const int64_t *dims)
{
	fc_model_tensor *t = T(m, out);
	int64_t n;
	void *p;

	if (ndim > FC_MODEL_MAX_DIMS) {
		fci_model_node_fail(m, FC_ERR_UNSUPPORTED, node, "output would have %d dims", ndim);
		return NULL;
	}
	/* One budget for the whole inference: many small folds must not add
	 * up to what no single one may make. */
	if (fci_mul_dims(ndim, dims, &n) || n > m->fold_left) {
		fci_model_node_fail(m, FC_ERR_OVERFLOW, node,
				   "folding it would make more values than the %lld left for "
				   "folding this model",
				   (long long)(m->fold_left < 0 ? 0 : m->fold_left));
		return NULL;
	}
	m->fold_left -= n;
	p = fci_model_alloc(m, (size_t)n * 8, 1);
	if (!p) {
		fci_model_fail(m, FC_ERR_NOMEM, "out of memory");
		return NULL;
	}
	t->kind = FC_TENSOR_CONST;
	t->elem = elem;
	t->ndim = ndim;
	memcpy(t->dims, dims, sizeof(int64_t) * (size_t)ndim);
	t->numel = n;
	if (elem == FC_ELEM_F32)
		t->f32 = p;
	else
		t->i64 = p;
	return p;
}

/* out = src's values with new dims (a view: the data is shared). */
static void share_const(fc_model *m, int out, const fc_model_tensor *src, int ndim,
			const int64_t *dims)
{
	fc_model_tensor *t = T(m, out);

	t->kind = FC_TENSOR_CONST;
	t->elem = src->elem;
	t->ndim = ndim;
	memmove(t->dims, dims, sizeof(int64_t) * (size_t)ndim);
	t->numel = src->numel;
	t->f32 = src->f32;
	t->i64 = src->i64;
}

static double get_num(const fc_model_tensor *t, int64_t i)
{
	return t->elem == FC_ELEM_F32 ? (double)t->f32[i] : (double)t->i64[i];
}

/* Offset in t of the element broadcast to flat index o of an output of
 * rank r and dims od. */
static int64_t bcast_offset(const fc_model_tensor *t, int r, const int64_t *od, int64_t o)
{
	int64_t off = 0, stride = 1;

	for (int i = r - 1; i >= 0; i--) {
		int64_t idx = o % od[i];
		int j = t->ndim - r + i;

		o /= od[i];
		if (j >= 0) {
			if (t->dims[j] != 1)
				off += idx * stride;
			stride *= t->dims[j];
		}
	}
	return off;
}

/* p[o] = src's value i (p holds src's elem). */
static void put(void *p, int64_t o, const fc_model_tensor *src, int64_t i)
{
	if (src->elem == FC_ELEM_F32)
		((float *)p)[o] = src->f32[i];
	else
		((int64_t *)p)[o] = src->i64[i];
}

/* The numpy broadcast of a and b, or a message naming both shapes. */
static int bcast2(fc_model *m, int node, const fc_model_tensor *a, const fc_model_tensor *b,
		  int *r, int64_t *dims)
{
	char b1[128], b2[128];

	if (fci_broadcast_shape(a, b, r, dims))
		return fci_model_node_fail(m, FC_ERR_INVALID, node, "shapes %s and %s do not broadcast",
					  shp(b1, sizeof b1, a), shp(b2, sizeof b2, b));
	return 0;
}

/* ---- elementwise ---- */

static float act_scalar(int op, const fc_node_attr *a, float x)
{
	switch (op) {
	case FC_OP_RELU: return x > 0 ? x : 0;
	case FC_OP_LEAKYRELU: return x >= 0 ? x : a->act.alpha * x;
	case FC_OP_SIGMOID: return 1.0f / (1.0f + expf(-x));
	case FC_OP_HARDSIGMOID: return fmaxf(0.0f, fminf(1.0f, a->act.alpha * x + a->act.beta));
	case FC_OP_HARDSWISH: return x * fmaxf(0.0f, fminf(1.0f, x / 6.0f + 0.5f));
	case FC_OP_CLIP: return fminf(fmaxf(x, a->clip.min), a->clip.max);
	case FC_OP_ERF: return erff(x);
	case FC_OP_SQRT: return sqrtf(x);
	case FC_OP_NEG: return -x;
	default: return x;
	}
}

/* One input, same shape out: the float activations, Sqrt, and Neg and Not
 * (integers too). */
static int fold_unary(fc_model *m, int node)
{
	fc_model_node *nd = &m->nodes[node];
	const fc_model_tensor *x = T(m, nd->in[0]);
	const struct node_attrs *a = &m->np[node].a;
	int rc;
	void *p;

	if (nd->op == FC_OP_CLIP && (rc = fci_clip_bounds(m, node)))
		return rc;
	if (nd->op == FC_OP_NOT && x->elem != FC_ELEM_I64)
		return fci_model_node_fail(m, FC_ERR_CORRUPT, node, "input is not boolean");
	if (nd->op != FC_OP_NOT && nd->op != FC_OP_NEG && x->elem != FC_ELEM_F32)
		return fci_model_node_fail(m, FC_ERR_CORRUPT, node, "input is not float");
	if (nd->op != FC_OP_CLIP) { /* attr.clip shares act's storage */
		nd->attr.act.alpha = a->alpha;
		nd->attr.act.beta = a->beta;
	}
	if (!(p = new_const(m, node, nd->out[0], x->elem, x->ndim, x->dims)))
		return FC_ERR_OVERFLOW;
	for (int64_t i = 0; i < x->numel; i++) {
		if (nd->op == FC_OP_NOT)
			((int64_t *)p)[i] = x->i64[i] == 0;
		else if (x->elem == FC_ELEM_I64) /* Neg: wraps, as INT64_MIN has no negation */
			((int64_t *)p)[i] = (int64_t)(0 - (uint64_t)x->i64[i]);
		else
			((float *)p)[i] = act_scalar(nd->op, &nd->attr, x->f32[i]);
	}
	return 0;
}

static float bin_f32(int op, int fmod, float x, float y)
{
	float r;

	switch (op) {
	case FC_OP_ADD: return x + y;
	case FC_OP_SUB: return x - y;
	case FC_OP_MUL: return x * y;
	case FC_OP_DIV: return x / y;
	case FC_OP_POW: return powf(x, y);
	default: /* Mod: fmod = 0 is Python's %, the remainder takes the divisor's sign */
		r = fmodf(x, y);
		if (!fmod && r != 0 && (r < 0) != (y < 0))
			r += y;
		return r;
	}
}

static int bin_i64(fc_model *m, int node, int fmod, int64_t x, int64_t y, int64_t *z)
{
	uint64_t acc = 1, base = (uint64_t)x;

	switch (m->nodes[node].op) {
	case FC_OP_ADD: *z = (int64_t)((uint64_t)x + (uint64_t)y); return 0;
	case FC_OP_SUB: *z = (int64_t)((uint64_t)x - (uint64_t)y); return 0;
	case FC_OP_MUL: *z = (int64_t)((uint64_t)x * (uint64_t)y); return 0;
	case FC_OP_DIV: /* C's / truncates toward zero, as ONNX's integer Div does */
		if (y == 0 || (x == INT64_MIN && y == -1))
			return fci_model_node_fail(m, FC_ERR_INVALID, node, "integer division by %lld",
						  (long long)y);
		*z = x / y;
		return 0;
	case FC_OP_MOD:
		if (y == 0)
			return fci_model_node_fail(m, FC_ERR_INVALID, node, "integer modulo by 0");
		*z = y == -1 ? 0 : x % y; /* INT64_MIN % -1 is undefined in C */
		if (!fmod && *z != 0 && (*z < 0) != (y < 0))
			*z += y;
		return 0;
	default: /* Pow: by squaring, wrapping like the other integer ops */
		if (y < 0)
			return fci_model_node_fail(m, FC_ERR_INVALID, node,
						  "integer power with a negative exponent (%lld)",
						  (long long)y);
		for (; y; y >>= 1, base *= base)
			if (y & 1)
				acc *= base;
		*z = (int64_t)acc;
		return 0;
	}
}

/* Add, Sub, Mul, Div, Mod, Pow and the comparisons, numpy-broadcast. Pow
 * alone may mix types (a float base with an integer exponent, or the
 * reverse); its output has the base's type, as ONNX says. */
static int fold_binary(fc_model *m, int node)
{
	const fc_model_node *nd = &m->nodes[node];
	const fc_model_tensor *a = T(m, nd->in[0]), *b = T(m, nd->in[1]);
	int op = nd->op, fmod = m->np[node].a.fmod, r, rc;
	int cmp = op == FC_OP_EQUAL || op == FC_OP_LESS || op == FC_OP_GREATER;
	int64_t dims[FC_MODEL_MAX_DIMS];
	void *p;

	if (a->elem != b->elem && op != FC_OP_POW)
		return fci_model_node_fail(m, FC_ERR_CORRUPT, node, "mixes float and integer inputs");
	if ((rc = bcast2(m, node, a, b, &r, dims)))
		return rc;
	if (!(p = new_const(m, node, nd->out[0], cmp ? FC_ELEM_I64 : a->elem, r, dims)))
		return FC_ERR_OVERFLOW;
	for (int64_t o = 0; o < T(m, nd->out[0])->numel; o++) {
		int64_t ia = bcast_offset(a, r, dims, o), ib = bcast_offset(b, r, dims, o);
		double y = get_num(b, ib);

		if (cmp) {
			/* integers compared as integers: doubles would merge large ones */
			int lt = a->elem == FC_ELEM_I64 ? a->i64[ia] < b->i64[ib] : a->f32[ia] < b->f32[ib];
			int gt = a->elem == FC_ELEM_I64 ? a->i64[ia] > b->i64[ib] : a->f32[ia] > b->f32[ib];
			int eq = a->elem == FC_ELEM_I64 ? a->i64[ia] == b->i64[ib]
							: a->f32[ia] == b->f32[ib];

			((int64_t *)p)[o] = op == FC_OP_EQUAL ? eq : op == FC_OP_LESS ? lt : gt;
		} else if (a->elem == FC_ELEM_F32) {
			((float *)p)[o] = bin_f32(op, fmod, a->f32[ia], (float)y);
		} else if (b->elem == FC_ELEM_F32) { /* Pow, integer base, float exponent */
			double v = pow((double)a->i64[ia], y);

			if (!(v > -9.2e18 && v < 9.2e18))
				return fci_model_node_fail(m, FC_ERR_INVALID, node,
							  "value out of the integer range");
			((int64_t *)p)[o] = (int64_t)v;
		} else if ((rc = bin_i64(m, node, fmod, a->i64[ia], b->i64[ib], (int64_t *)p + o))) {
			return rc;
		}
	}
	return 0;
}

/* Where(cond, x, y): the three broadcast together. */
static int fold_where(fc_model *m, int node)
{
	const fc_model_node *nd = &m->nodes[node];
	const fc_model_tensor *c = T(m, nd->in[0]), *x = T(m, nd->in[1]), *y = T(m, nd->in[2]);
	fc_model_tensor cx;
	int r, rc;
	int64_t dims[FC_MODEL_MAX_DIMS];
	void *p;

	if (c->elem != FC_ELEM_I64)
		return fci_model_node_fail(m, FC_ERR_CORRUPT, node, "condition is not boolean");
	if (x->elem != y->elem)
		return fci_model_node_fail(m, FC_ERR_CORRUPT, node, "mixes float and integer inputs");
	memset(&cx, 0, sizeof cx);
	if ((rc = bcast2(m, node, c, x, &cx.ndim, cx.dims)) ||
	    (rc = bcast2(m, node, &cx, y, &r, dims)))
		return rc;
	if (!(p = new_const(m, node, nd->out[0], x->elem, r, dims)))
		return FC_ERR_OVERFLOW;
	for (int64_t o = 0; o < T(m, nd->out[0])->numel; o++) {
		if (c->i64[bcast_offset(c, r, dims, o)])
			put(p, o, x, bcast_offset(x, r, dims, o));
		else
			put(p, o, y, bcast_offset(y, r, dims, o));
	}
	return 0;
}

/* ---- making values ---- */

static int scalar_in(fc_model *m, int node, int k, const char *what)
{
	const fc_model_tensor *t = T(m, m->nodes[node].in[k]);

	if (t->numel != 1 || t->ndim > 1)
		return fci_model_node_fail(m, FC_ERR_INVALID, node, "%s is not a scalar", what);
	return 0;
}

/* Range(start, limit, delta): max(ceil((limit - start) / delta), 0)
 * values start + i * delta. The count is bounded before anything is made:
 * a file's limit can be anything. */
static int fold_range(fc_model *m, int node)
{
	const fc_model_node *nd = &m->nodes[node];
	const fc_model_tensor *s = T(m, nd->in[0]), *l = T(m, nd->in[1]), *d = T(m, nd->in[2]);
	int64_t n;
	void *p;
	int rc;

	if ((rc = scalar_in(m, node, 0, "start")) || (rc = scalar_in(m, node, 1, "limit")) ||
	    (rc = scalar_in(m, node, 2, "delta")))
		return rc;
	if (s->elem != l->elem || s->elem != d->elem)
		return fci_model_node_fail(m, FC_ERR_CORRUPT, node, "mixes float and integer inputs");
	if (get_num(d, 0) == 0)
		return fci_model_node_fail(m, FC_ERR_INVALID, node, "delta is 0");
	if (s->elem == FC_ELEM_I64) {
		/* the span in unsigned arithmetic, where limit - start cannot overflow */
		int64_t a = s->i64[0], b = l->i64[0], st = d->i64[0];
		uint64_t span = st > 0 ? (b > a ? (uint64_t)b - (uint64_t)a : 0)
				       : (a > b ? (uint64_t)a - (uint64_t)b : 0);
		uint64_t step = st > 0 ? (uint64_t)st : 0 - (uint64_t)st;
		uint64_t cnt = span ? (span - 1) / step + 1 : 0;

		n = cnt > (uint64_t)FC_MAX_NUMEL ? FC_MAX_NUMEL + 1 : (int64_t)cnt;
	} else {
		double c = ceil(((double)l->f32[0] - s->f32[0]) / d->f32[0]);

		if (c != c)
			return fci_model_node_fail(m, FC_ERR_INVALID, node,
						  "start, limit and delta give no count");
		n = c <= 0 ? 0 : c > (double)FC_MAX_NUMEL ? FC_MAX_NUMEL + 1 : (int64_t)c;
	}
	/* new_const refuses more than the budget (and more than FC_MAX_NUMEL) */
	if (!(p = new_const(m, node, nd->out[0], s->elem, 1, &n)))
		return FC_ERR_OVERFLOW;
	for (int64_t i = 0; i < n; i++) {
		if (s->elem == FC_ELEM_I64) /* in [start, limit), though i * delta may not be */
			((int64_t *)p)[i] = (int64_t)((uint64_t)s->i64[0] +
						      (uint64_t)i * (uint64_t)d->i64[0]);
		else
			((float *)p)[i] = s->f32[0] + (float)i * d->f32[0];
	}
	return 0;
}

/* Expand(x, shape): x broadcast numpy-style with a tensor of dims shape
 * (a 1 in shape keeps x's dim; the output may be larger than shape). */
static int fold_expand(fc_model *m, int node)
{
	const fc_model_node *nd = &m->nodes[node];
	const fc_model_tensor *x = T(m, nd->in[0]);
	const fc_model_tensor *s = fci_const_in(m, node, 1, FC_ELEM_I64, "shape");
	fc_model_tensor to;
	int r, rc;
	int64_t dims[FC_MODEL_MAX_DIMS];
	void *p;

	if (!s)
		return FC_ERR_CORRUPT;
	if (s->ndim != 1 || s->numel > FC_MODEL_MAX_DIMS)
		return fci_model_node_fail(m, FC_ERR_UNSUPPORTED, node, "shape has %lld values",
					  (long long)s->numel);
	memset(&to, 0, sizeof to);
	to.ndim = (int)s->numel;
	for (int i = 0; i < to.ndim; i++) {
		if (s->i64[i] < 0)
			return fci_model_node_fail(m, FC_ERR_INVALID, node, "shape has %lld",
						  (long long)s->i64[i]);
		to.dims[i] = s->i64[i];
	}
	if ((rc = bcast2(m, node, x, &to, &r, dims)))
		return rc;
	if (!(p = new_const(m, node, nd->out[0], x->elem, r, dims)))
		return FC_ERR_OVERFLOW;
	for (int64_t o = 0; o < T(m, nd->out[0])->numel; o++)
		put(p, o, x, bcast_offset(x, r, dims, o));
	return 0;
}

/* The element offset in d that ScatterND's index tuple j points at; every
 * index checked (negative ones count from the end). */
static int scatter_offset(fc_model *m, int node, const fc_model_tensor *d,
			  const fc_model_tensor *ix, int64_t k, int64_t j, int64_t *off)
{
	int64_t o = 0;

	for (int64_t i = 0; i < k; i++) {
		int64_t v = ix->i64[j * k + i], n = d->dims[i];

		if (v < 0)
			v += n;
		if (v < 0 || v >= n)
			return fci_model_node_fail(m, FC_ERR_INVALID, node,
						  "index %lld is out of range for dim %lld of %lld",
						  (long long)ix->i64[j * k + i], (long long)i, (long long)n);
		o = o * n + v;
	}
	for (int i = (int)k; i < d->ndim; i++)
		o *= d->dims[i];
	*off = o;
	return 0;
}

/* ScatterND(data, indices, updates), reduction none: a copy of data where
 * each index tuple (the last dim of indices, k <= rank) gets its slice of
 * updates. Every index is checked before the copy is made. */
static int fold_scatternd(fc_model *m, int node)
{
	const fc_model_node *nd = &m->nodes[node];
	const fc_model_tensor *d = T(m, nd->in[0]), *ix = T(m, nd->in[1]), *u = T(m, nd->in[2]);
	int64_t want[2 * FC_MODEL_MAX_DIMS], k, slice = 1, n_tuples, off;
	int q = ix->ndim, wr = 0, rc;
	char b1[128], b2[128];
	void *p;

	if (ix->elem != FC_ELEM_I64)
		return fci_model_node_fail(m, FC_ERR_CORRUPT, node, "indices are not integers");
	if (u->elem != d->elem)
		return fci_model_node_fail(m, FC_ERR_CORRUPT, node, "mixes float and integer inputs");
	if (d->ndim < 1 || q < 1)
		return fci_model_node_fail(m, FC_ERR_INVALID, node, "data and indices need a rank of 1 or more");
	k = ix->dims[q - 1];
	if (k < 1 || k > d->ndim)
		return fci_model_node_fail(m, FC_ERR_INVALID, node,
					  "indices' last dim is %lld, data has rank %d", (long long)k,
					  d->ndim);
	/* updates must be indices.shape[:-1] + data.shape[k:] */
	for (int i = 0; i < q - 1; i++)
		want[wr++] = ix->dims[i];
	for (int i = (int)k; i < d->ndim; i++) {
		want[wr++] = d->dims[i];
		slice *= d->dims[i];
	}
	rc = u->ndim != wr;
	for (int i = 0; !rc && i < wr; i++)
		rc = u->dims[i] != want[i];
	if (rc)
		return fci_model_node_fail(m, FC_ERR_INVALID, node, "updates are %s, expected %s",
					  shp(b1, sizeof b1, u),
					  fci_model_shape_str(b2, sizeof b2, wr, want));
	n_tuples = ix->numel / k;
	for (int64_t j = 0; j < n_tuples; j++)
		if ((rc = scatter_offset(m, node, d, ix, k, j, &off)))
			return rc;
	if (!(p = new_const(m, node, nd->out[0], d->elem, d->ndim, d->dims)))
		return FC_ERR_OVERFLOW;
	for (int64_t i = 0; i < d->numel; i++)
		put(p, i, d, i);
	for (int64_t j = 0; j < n_tuples; j++) {
		scatter_offset(m, node, d, ix, k, j, &off); /* checked above */
		for (int64_t e = 0; e < slice; e++)
			put(p, off + e, u, j * slice + e);
	}
	return 0;
}

/* ---- moving values ---- */

/* Gather(data, indices): dims data[:axis] + indices + data[axis+1:], any
 * index tensor (Swin's relative position bias is a [169, heads] table
 * gathered by a 49x49 index). Indices are checked before allocating. */
static int fold_gather(fc_model *m, int node)
{
	const fc_model_node *nd = &m->nodes[node];
	const fc_model_tensor *d = T(m, nd->in[0]), *ix = T(m, nd->in[1]);
	int axis = m->np[node].a.axis, r = 0;
	int64_t dims[FC_MODEL_MAX_DIMS], outer = 1, inner = 1, n;
	void *p;

	if (ix->elem != FC_ELEM_I64)
		return fci_model_node_fail(m, FC_ERR_CORRUPT, node, "indices are not integers");
	if (d->ndim < 1)
		return fci_model_node_fail(m, FC_ERR_INVALID, node, "cannot gather from a scalar");
	if (axis < 0)
		axis += d->ndim;
	if (axis < 0 || axis >= d->ndim)
		return fci_model_node_fail(m, FC_ERR_INVALID, node, "axis is out of range");
	if (d->ndim - 1 + ix->ndim > FC_MODEL_MAX_DIMS)
		return fci_model_node_fail(m, FC_ERR_UNSUPPORTED, node, "output rank is too high");
	n = d->dims[axis];
	for (int64_t j = 0; j < ix->numel; j++)
		if (ix->i64[j] < -n || ix->i64[j] >= n)
			return fci_model_node_fail(m, FC_ERR_INVALID, node,
						  "index %lld is out of range for %lld",
						  (long long)ix->i64[j], (long long)n);
	for (int i = 0; i < axis; i++) {
		dims[r++] = d->dims[i];
		outer *= d->dims[i];
	}
	for (int i = 0; i < ix->ndim; i++)
		dims[r++] = ix->dims[i];
	for (int i = axis + 1; i < d->ndim; i++) {
		dims[r++] = d->dims[i];
		inner *= d->dims[i];
	}
	if (!(p = new_const(m, node, nd->out[0], d->elem, r, dims)))
		return FC_ERR_OVERFLOW;
	for (int64_t o = 0, w = 0; o < outer; o++)
		for (int64_t j = 0; j < ix->numel; j++) {
			int64_t k = ix->i64[j] < 0 ? ix->i64[j] + n : ix->i64[j];

			for (int64_t e = 0; e < inner; e++, w++)
				put(p, w, d, (o * n + k) * inner + e);
		}
	return 0;
}

static int fold_slice(fc_model *m, int node)
{
	const fc_model_node *nd = &m->nodes[node];
	const fc_model_tensor *d = T(m, nd->in[0]);
	int64_t st[FC_MODEL_MAX_DIMS], step[FC_MODEL_MAX_DIMS], dims[FC_MODEL_MAX_DIMS];
	void *p;
	int rc;

	if ((rc = fci_slice_params(m, node, d, st, step, dims)))
		return rc;
	if (!(p = new_const(m, node, nd->out[0], d->elem, d->ndim, dims)))
		return FC_ERR_OVERFLOW;
	for (int64_t o = 0; o < T(m, nd->out[0])->numel; o++) {
		int64_t rem = o, off = 0, stride = 1;

		for (int i = d->ndim - 1; i >= 0; i--) {
			int64_t idx = rem % dims[i];

			rem /= dims[i];
			off += (st[i] + idx * step[i]) * stride;
			stride *= d->dims[i];
		}
		put(p, o, d, off);
	}
	return 0;
}

static int fold_transpose(fc_model *m, int node)
{
	const fc_model_node *nd = &m->nodes[node];
	const fc_model_tensor *d = T(m, nd->in[0]);
	int perm[FC_MODEL_MAX_DIMS], rc;
	int64_t dims[FC_MODEL_MAX_DIMS], istride[FC_MODEL_MAX_DIMS];
	void *p;

	if ((rc = fci_transpose_perm(m, node, d, perm, dims)))
		return rc;
	for (int64_t i = d->ndim - 1, s = 1; i >= 0; i--) {
		istride[i] = s;
		s *= d->dims[i];
	}
	if (!(p = new_const(m, node, nd->out[0], d->elem, d->ndim, dims)))
		return FC_ERR_OVERFLOW;
	for (int64_t o = 0; o < d->numel; o++) {
		int64_t rem = o, off = 0;

		for (int i = d->ndim - 1; i >= 0; i--) {
			off += (rem % dims[i]) * istride[perm[i]];
			rem /= dims[i];
		}
		put(p, o, d, off);
	}
	return 0;
}

static int fold_concat(fc_model *m, int node)
{
	const fc_model_node *nd = &m->nodes[node];
	const fc_model_tensor *x = T(m, nd->in[0]);
	int axis, r, rc;
	int64_t dims[FC_MODEL_MAX_DIMS], outer = 1, w = 0;
	void *p;

	for (int k = 1; k < nd->n_in; k++)
		if (T(m, nd->in[k])->elem != x->elem)
			return fci_model_node_fail(m, FC_ERR_CORRUPT, node,
						  "mixes float and integer inputs");
	if ((rc = fci_concat_dims(m, node, &r, dims, &axis)))
		return rc;
	if (!(p = new_const(m, node, nd->out[0], x->elem, r, dims)))
		return FC_ERR_OVERFLOW;
	for (int i = 0; i < axis; i++)
		outer *= dims[i];
	for (int64_t o = 0; o < outer; o++)
		for (int k = 0; k < nd->n_in; k++) {
			const fc_model_tensor *t = T(m, nd->in[k]);
			int64_t chunk = outer ? t->numel / outer : 0;

			for (int64_t e = 0; e < chunk; e++, w++)
				put(p, w, t, o * chunk + e);
		}
	return 0;
}

/* ---- shapes and types ---- */

/* Shape of anything, activations included: every shape is static here. */
static int fold_shape(fc_model *m, int node)
{
	const fc_model_node *nd = &m->nodes[node];
	const fc_model_tensor *x = T(m, nd->in[0]);
	const struct node_attrs *a = &m->np[node].a;
	int64_t s = a->shape_start, e = a->shape_end, len, *v;

	if (s < 0)
		s += x->ndim;
	if (e < 0)
		e += x->ndim;
	s = s < 0 ? 0 : s > x->ndim ? x->ndim : s;
	e = e < 0 ? 0 : e > x->ndim ? x->ndim : e;
	len = e > s ? e - s : 0;
	if (!(v = new_const(m, node, nd->out[0], FC_ELEM_I64, 1, &len)))
		return FC_ERR_OVERFLOW;
	for (int64_t i = 0; i < len; i++)
		v[i] = x->dims[s + i];
	return 0;
}

static int fold_cast(fc_model *m, int node)
{
	const fc_model_node *nd = &m->nodes[node];
	const fc_model_tensor *x = T(m, nd->in[0]);
	int to = m->np[node].a.cast_to;
	void *p;

	if (!(p = new_const(m, node, nd->out[0], to, x->ndim, x->dims)))
		return FC_ERR_OVERFLOW;
	for (int64_t i = 0; i < x->numel; i++) {
		double v = get_num(x, i);

		if (to == FC_ELEM_F32) {
			((float *)p)[i] = (float)v;
		} else if (m->np[node].a.cast_bool) { /* NaN is true, as in numpy */
			((int64_t *)p)[i] = x->elem == FC_ELEM_I64 ? x->i64[i] != 0 : v != 0;
		} else {
			if (!(v > -9.2e18 && v < 9.2e18))
				return fci_model_node_fail(m, FC_ERR_INVALID, node,
							  "value out of the integer range");
			((int64_t *)p)[i] = x->elem == FC_ELEM_I64 ? x->i64[i] : (int64_t)v;
		}
	}
	return 0;
}

static int fold_constantofshape(fc_model *m, int node)
{
	const fc_model_node *nd = &m->nodes[node];
	const fc_model_tensor *x = T(m, nd->in[0]);
	const struct node_attrs *a = &m->np[node].a;
	int64_t dims[FC_MODEL_MAX_DIMS];
	void *p;

	if (x->elem != FC_ELEM_I64 || x->ndim != 1 || x->numel > FC_MODEL_MAX_DIMS)
		return fci_model_node_fail(m, FC_ERR_CORRUPT, node, "input is not a shape");
	for (int i = 0; i < x->numel; i++) {
		if (x->i64[i] < 0 || x->i64[i] > FC_MAX_FOLD_NUMEL)
			return fci_model_node_fail(m, FC_ERR_INVALID, node, "shape has %lld",
						  (long long)x->i64[i]);
		dims[i] = x->i64[i];
	}
	if (!(p = new_const(m, node, nd->out[0], a->cos_elem, (int)x->numel, dims)))
		return FC_ERR_OVERFLOW;
	for (int64_t i = 0; i < T(m, nd->out[0])->numel; i++) {
		if (a->cos_elem == FC_ELEM_F32)
			((float *)p)[i] = a->cos_f32;
		else
			((int64_t *)p)[i] = a->cos_i64;
	}
	return 0;
}

int fci_model_fold(fc_model *m, int node)
{
	fc_model_node *nd = &m->nodes[node];
	const struct node_attrs *a = &m->np[node].a;
	const fc_model_tensor *x = nd->n_in ? T(m, nd->in[0]) : NULL;
	int out = nd->out[0], r, rc;
	int64_t dims[FC_MODEL_MAX_DIMS];

	nd->state = FC_NODE_FOLDED;
	switch (nd->op) {
	case FC_OP_SHAPE:
		return fold_shape(m, node);
	case FC_OP_ADD:
	case FC_OP_SUB:
	case FC_OP_MUL:
	case FC_OP_DIV:
	case FC_OP_MOD:
	case FC_OP_POW:
	case FC_OP_EQUAL:
	case FC_OP_LESS:
	case FC_OP_GREATER:
		return fold_binary(m, node);
	case FC_OP_CLIP:
	case FC_OP_RELU:
	case FC_OP_LEAKYRELU:
	case FC_OP_SIGMOID:
	case FC_OP_HARDSIGMOID:
	case FC_OP_HARDSWISH:
	case FC_OP_ERF:
	case FC_OP_SQRT:
	case FC_OP_NEG:
	case FC_OP_NOT:
		return fold_unary(m, node);
	case FC_OP_WHERE:
		return fold_where(m, node);
	case FC_OP_RANGE:
		return fold_range(m, node);
	case FC_OP_EXPAND:
		return fold_expand(m, node);
	case FC_OP_SCATTERND:
		return fold_scatternd(m, node);
	case FC_OP_GATHER:
		return fold_gather(m, node);
	case FC_OP_SLICE:
		return fold_slice(m, node);
	case FC_OP_TRANSPOSE:
		return fold_transpose(m, node);
	case FC_OP_CONCAT:
		return fold_concat(m, node);
	case FC_OP_CAST:
		return fold_cast(m, node);
	case FC_OP_CONSTANTOFSHAPE:
		return fold_constantofshape(m, node);
	case FC_OP_RESHAPE: {
		const fc_model_tensor *s = fci_const_in(m, node, 1, FC_ELEM_I64, "shape");

		if (!s)
			return FC_ERR_CORRUPT;
		if ((rc = fci_reshape_dims(m, node, x, s, a->allowzero, &r, dims)))
			return rc;
		break;
	}
	case FC_OP_FLATTEN:
		if ((rc = fci_flatten_dims(m, node, x, &r, dims)))
			return rc;
		break;
	case FC_OP_SQUEEZE:
		if ((rc = fci_squeeze_dims(m, node, x, &r, dims)))
			return rc;
		break;
	case FC_OP_UNSQUEEZE:
		if ((rc = fci_unsqueeze_dims(m, node, x, &r, dims)))
			return rc;
		break;
	default:
		return fci_model_node_fail(m, FC_ERR_UNSUPPORTED, node,
					  "all its inputs are constant, and featcache cannot fold %s",
					  nd->op_type);
	}
	/* the four views: the same values under new dims */
	share_const(m, out, x, r, dims);
	return 0;
}
