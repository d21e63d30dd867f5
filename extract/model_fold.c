/*
 * model_fold.c - constant folding: evaluate, at load time, a node whose
 * inputs are all constant (initializers, Constant, values folded before
 * it, and Shape of anything, since every shape is static for one input
 * size). This is what removes the Shape -> Gather -> Unsqueeze -> Concat
 * -> Reshape chains torch emits for x.view(x.size(0), -1), the pad
 * arithmetic of F.pad and the index and mask subgraphs of transformers.
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


/* ---- the ops ---- */

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
	default: return x;
	}
}

static int fold_binary(fc_model *m, int node)
{
	const fc_model_node *nd = &m->nodes[node];
	const fc_model_tensor *a = T(m, nd->in[0]), *b = T(m, nd->in[1]);
	int r;
	int64_t dims[FC_MODEL_MAX_DIMS];
	char b1[128], b2[128];
	void *p;

	if (a->elem != b->elem)
		return fci_model_node_fail(m, FC_ERR_CORRUPT, node, "mixes float and integer inputs");
	if (fci_broadcast_shape(a, b, &r, dims))
		return fci_model_node_fail(m, FC_ERR_INVALID, node, "shapes %s and %s do not broadcast",
					  shp(b1, sizeof b1, a), shp(b2, sizeof b2, b));
	if (!(p = new_const(m, node, nd->out[0], a->elem, r, dims)))
		return FC_ERR_OVERFLOW;
	for (int64_t o = 0; o < T(m, nd->out[0])->numel; o++) {
		int64_t ia = bcast_offset(a, r, dims, o), ib = bcast_offset(b, r, dims, o);

		if (a->elem == FC_ELEM_F32) {
			float x = a->f32[ia], y = b->f32[ib], *z = p;

			z[o] = nd->op == FC_OP_ADD ? x + y : nd->op == FC_OP_SUB ? x - y
						      : nd->op == FC_OP_MUL ? x * y : x / y;
		} else {
			int64_t x = a->i64[ia], y = b->i64[ib], *z = p;

			switch (nd->op) {
			case FC_OP_ADD: z[o] = (int64_t)((uint64_t)x + (uint64_t)y); break;
			case FC_OP_SUB: z[o] = (int64_t)((uint64_t)x - (uint64_t)y); break;
			case FC_OP_MUL: z[o] = (int64_t)((uint64_t)x * (uint64_t)y); break;
			default:
				if (y == 0 || (x == INT64_MIN && y == -1))
					return fci_model_node_fail(m, FC_ERR_INVALID, node,
								  "integer division by %lld", (long long)y);
				z[o] = x / y;
				break;
			}
		}
	}
	return 0;
}

static int fold_gather(fc_model *m, int node)
{
	const fc_model_node *nd = &m->nodes[node];
	const fc_model_tensor *d = T(m, nd->in[0]), *ix = T(m, nd->in[1]);
	int axis = m->np[node].a.axis, r = 0;
	int64_t dims[FC_MODEL_MAX_DIMS], outer = 1, inner = 1;
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
			int64_t k = ix->i64[j], n = d->dims[axis];

			if (k < 0)
				k += n;
			if (k < 0 || k >= n)
				return fci_model_node_fail(m, FC_ERR_INVALID, node,
							  "index %lld is out of range for %lld",
							  (long long)ix->i64[j], (long long)n);
			for (int64_t e = 0; e < inner; e++, w++) {
				int64_t src = (o * n + k) * inner + e;

				if (d->elem == FC_ELEM_F32)
					((float *)p)[w] = d->f32[src];
				else
					((int64_t *)p)[w] = d->i64[src];
			}
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
		if (d->elem == FC_ELEM_F32)
			((float *)p)[o] = d->f32[off];
		else
			((int64_t *)p)[o] = d->i64[off];
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
		if (d->elem == FC_ELEM_F32)
			((float *)p)[o] = d->f32[off];
		else
			((int64_t *)p)[o] = d->i64[off];
	}
	return 0;
}

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

int fci_model_fold(fc_model *m, int node)
{
	fc_model_node *nd = &m->nodes[node];
	const struct node_attrs *a = &m->np[node].a;
	const fc_model_tensor *x = nd->n_in ? T(m, nd->in[0]) : NULL;
	int out = nd->out[0], r, rc;
	int64_t dims[FC_MODEL_MAX_DIMS];
	void *p;

	nd->state = FC_NODE_FOLDED;
	switch (nd->op) {
	case FC_OP_SHAPE:
		return fold_shape(m, node);
	case FC_OP_ADD:
	case FC_OP_SUB:
	case FC_OP_MUL:
	case FC_OP_DIV:
		return fold_binary(m, node);
	case FC_OP_GATHER:
		return fold_gather(m, node);
	case FC_OP_SLICE:
		return fold_slice(m, node);
	case FC_OP_TRANSPOSE:
		return fold_transpose(m, node);
	case FC_OP_RESHAPE: {
		const fc_model_tensor *s = fci_const_in(m, node, 1, FC_ELEM_I64, "shape");

		if (!s)
			return FC_ERR_CORRUPT;
		if ((rc = fci_reshape_dims(m, node, x, s, a->allowzero, &r, dims)))
			return rc;
		share_const(m, out, x, r, dims);
		return 0;
	}
	case FC_OP_FLATTEN:
		if ((rc = fci_flatten_dims(m, node, x, &r, dims)))
			return rc;
		share_const(m, out, x, r, dims);
		return 0;
	case FC_OP_SQUEEZE:
		if ((rc = fci_squeeze_dims(m, node, x, &r, dims)))
			return rc;
		share_const(m, out, x, r, dims);
		return 0;
	case FC_OP_UNSQUEEZE:
		if ((rc = fci_unsqueeze_dims(m, node, x, &r, dims)))
			return rc;
		share_const(m, out, x, r, dims);
		return 0;
	case FC_OP_CONCAT: {
		int axis;
		int64_t outer = 1, w = 0;

		for (int k = 1; k < nd->n_in; k++)
			if (T(m, nd->in[k])->elem != x->elem)
				return fci_model_node_fail(m, FC_ERR_CORRUPT, node,
							  "mixes float and integer inputs");
		if ((rc = fci_concat_dims(m, node, &r, dims, &axis)))
			return rc;
		if (!(p = new_const(m, node, out, x->elem, r, dims)))
			return FC_ERR_OVERFLOW;
		for (int i = 0; i < axis; i++)
			outer *= dims[i];
		for (int64_t o = 0; o < outer; o++)
			for (int k = 0; k < nd->n_in; k++) {
				const fc_model_tensor *t = T(m, nd->in[k]);
				int64_t chunk = outer ? t->numel / outer : 0;

				for (int64_t e = 0; e < chunk; e++, w++) {
					if (x->elem == FC_ELEM_F32)
						((float *)p)[w] = t->f32[o * chunk + e];
					else
						((int64_t *)p)[w] = t->i64[o * chunk + e];
				}
			}
		return 0;
	}
	case FC_OP_CAST:
		if (!(p = new_const(m, node, out, a->cast_to, x->ndim, x->dims)))
			return FC_ERR_OVERFLOW;
		for (int64_t i = 0; i < x->numel; i++) {
			double v = get_num(x, i);

			if (a->cast_to == FC_ELEM_F32) {
				((float *)p)[i] = (float)v;
			} else {
				if (!(v > -9.2e18 && v < 9.2e18))
					return fci_model_node_fail(m, FC_ERR_INVALID, node,
								  "value out of the integer range");
				((int64_t *)p)[i] = x->elem == FC_ELEM_I64 ? x->i64[i] : (int64_t)v;
			}
		}
		return 0;
	case FC_OP_CONSTANTOFSHAPE:
		if (x->elem != FC_ELEM_I64 || x->ndim != 1 || x->numel > FC_MODEL_MAX_DIMS)
			return fci_model_node_fail(m, FC_ERR_CORRUPT, node, "input is not a shape");
		for (int i = 0; i < x->numel; i++) {
			if (x->i64[i] < 0 || x->i64[i] > FC_MAX_FOLD_NUMEL)
				return fci_model_node_fail(m, FC_ERR_INVALID, node, "shape has %lld",
							  (long long)x->i64[i]);
			dims[i] = x->i64[i];
		}
		if (!(p = new_const(m, node, out, a->cos_elem, (int)x->numel, dims)))
			return FC_ERR_OVERFLOW;
		for (int64_t i = 0; i < T(m, out)->numel; i++) {
			if (a->cos_elem == FC_ELEM_F32)
				((float *)p)[i] = a->cos_f32;
			else
				((int64_t *)p)[i] = a->cos_i64;
		}
		return 0;
	case FC_OP_CLIP:
		if ((rc = fci_clip_bounds(m, node)))
			return rc;
		/* fall through */
	case FC_OP_RELU:
	case FC_OP_LEAKYRELU:
	case FC_OP_SIGMOID:
	case FC_OP_HARDSIGMOID:
	case FC_OP_HARDSWISH:
	case FC_OP_ERF:
		if (x->elem != FC_ELEM_F32)
			return fci_model_node_fail(m, FC_ERR_CORRUPT, node, "input is not float");
		if (nd->op != FC_OP_CLIP) { /* attr.clip shares act's storage */
			nd->attr.act.alpha = a->alpha;
			nd->attr.act.beta = a->beta;
		}
		if (!(p = new_const(m, node, out, FC_ELEM_F32, x->ndim, x->dims)))
			return FC_ERR_OVERFLOW;
		for (int64_t i = 0; i < x->numel; i++)
			((float *)p)[i] = act_scalar(nd->op, &nd->attr, x->f32[i]);
		return 0;
	default:
		return fci_model_node_fail(m, FC_ERR_UNSUPPORTED, node,
					  "all its inputs are constant, and featcache cannot fold %s",
					  nd->op_type);
	}
}

