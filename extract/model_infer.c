/*
 * model_infer.c - static shapes and constant folding for one input size.
 *
 * One pass over the nodes in topological order. Each node is one of:
 *  - an alias (Identity, Dropout): its output is its input;
 *  - folded: every input is constant (initializers, Constant, folded
 *    values, and Shape of anything, since every shape is static here), so
 *    model_fold.c evaluates it now into a constant on the fold list;
 *  - run: its output shape is inferred from its inputs, with the checks a
 *    runtime would make (channels against weights, broadcastable shapes,
 *    kernels that fit), its attributes are resolved (auto_pad into pads,
 *    negative axes, Clip bounds and Pad pads from their constant inputs)
 *    and its parameters counted.
 * The fold list is freed and every non-fixed tensor reset at the start, so
 * this can run again for another size.
 *
 * Not here: any arithmetic on activations (the engine's job).
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

/* ---- tensors ---- */

/* Make out an activation of the given shape (every dim >= 1). */
static int set_act(fc_model *m, int node, int out, int ndim, const int64_t *dims)
{
	fc_model_tensor *t = T(m, out);
	char b[128];
	int64_t n;

	if (ndim > FC_MODEL_MAX_DIMS)
		return fci_model_node_fail(m, FC_ERR_UNSUPPORTED, node, "output would have %d dims", ndim);
	for (int i = 0; i < ndim; i++)
		if (dims[i] < 1)
			return fci_model_node_fail(m, FC_ERR_INVALID, node, "output shape %s is empty",
						  fci_model_shape_str(b, sizeof b, ndim, dims));
	if (fci_mul_dims(ndim, dims, &n))
		return fci_model_node_fail(m, FC_ERR_OVERFLOW, node,
					  "output would have more than %lld elements",
					  (long long)FC_MAX_NUMEL);
	t->kind = FC_TENSOR_ACT;
	t->elem = FC_ELEM_F32;
	t->ndim = ndim;
	memcpy(t->dims, dims, sizeof(int64_t) * (size_t)ndim);
	t->numel = n;
	return 0;
}

/* Input k of node as a constant of elem (0: any) and at most max_rank
 * dims; NULL with the message set if it is not. */
const fc_model_tensor *fci_const_in(fc_model *m, int node, int k, int elem, const char *what)
{
	const fc_model_node *nd = &m->nodes[node];
	const fc_model_tensor *t;

	if (k >= nd->n_in || nd->in[k] < 0)
		return NULL;
	t = T(m, nd->in[k]);
	if (t->kind != FC_TENSOR_CONST) {
		fci_model_node_fail(m, FC_ERR_UNSUPPORTED, node,
				   "%s '%s' must be a constant, but it is computed from the input", what,
				   fci_model_q(m, 0, t->name));
		return NULL;
	}
	if (elem && t->elem != elem) {
		fci_model_node_fail(m, FC_ERR_CORRUPT, node, "%s '%s' must be %s", what,
				   fci_model_q(m, 0, t->name), elem == FC_ELEM_F32 ? "float" : "integer");
		return NULL;
	}
	return t;
}

/* The data input k must be computed from the image, not a constant. */
const fc_model_tensor *fci_act_in(fc_model *m, int node, int k)
{
	const fc_model_tensor *t = T(m, m->nodes[node].in[k]);

	if (t->kind == FC_TENSOR_CONST) {
		fci_model_node_fail(m, FC_ERR_UNSUPPORTED, node,
				   "input %d '%s' is a constant where featcache expects activations",
				   k + 1, fci_model_q(m, 0, t->name));
		return NULL;
	}
	return t;
}

/* A list of axes from a constant int tensor (input form) or the
 * attribute form, normalized against rank r. Duplicates are an error. */
int fci_get_axes(fc_model *m, int node, int k, int r, int *n_out, int *axes, int *given)
{
	const fc_model_node *nd = &m->nodes[node];
	const struct node_attrs *a = &m->np[node].a;
	int64_t raw[FC_MAX_ATTR_INTS];
	int n = 0;
	uint32_t seen = 0;

	*given = 0;
	if (k >= 0 && k < nd->n_in && nd->in[k] >= 0) {
		const fc_model_tensor *t = fci_const_in(m, node, k, FC_ELEM_I64, "axes");

		if (!t)
			return FC_ERR_UNSUPPORTED;
		if (t->ndim > 1 || t->numel > FC_MODEL_MAX_DIMS)
			return fci_model_node_fail(m, FC_ERR_CORRUPT, node, "axes has %lld values",
						  (long long)t->numel);
		n = (int)t->numel;
		memcpy(raw, t->i64, sizeof(int64_t) * (size_t)n);
		*given = 1;
	} else if (a->has_axes) {
		n = a->n_axes;
		memcpy(raw, a->axes, sizeof(int64_t) * (size_t)n);
		*given = 1;
	}
	for (int i = 0; i < n; i++) {
		int64_t x = raw[i] < 0 ? raw[i] + r : raw[i];

		if (x < 0 || x >= r)
			return fci_model_node_fail(m, FC_ERR_INVALID, node, "axis %lld is out of range for rank %d",
						  (long long)raw[i], r);
		if (seen & (1u << x))
			return fci_model_node_fail(m, FC_ERR_CORRUPT, node, "axis %lld is given twice",
						  (long long)raw[i]);
		seen |= 1u << x;
		axes[i] = (int)x;
	}
	*n_out = n;
	return 0;
}

/* ---- shape rules shared by folding and inference ---- */

int fci_broadcast_shape(const fc_model_tensor *a, const fc_model_tensor *b, int *r,
			   int64_t *dims)
{
	int n = a->ndim > b->ndim ? a->ndim : b->ndim;

	for (int i = 0; i < n; i++) {
		int ia = a->ndim - n + i, ib = b->ndim - n + i;
		int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;

		if (da == db || db == 1)
			dims[i] = da;
		else if (da == 1)
			dims[i] = db;
		else
			return -1;
	}
	*r = n;
	return 0;
}

int fci_reshape_dims(fc_model *m, int node, const fc_model_tensor *x, const fc_model_tensor *s,
			int allowzero, int *r, int64_t *dims)
{
	int neg = -1;
	int64_t known = 1;
	char b1[128];

	if (s->ndim != 1 || s->numel > FC_MODEL_MAX_DIMS)
		return fci_model_node_fail(m, FC_ERR_UNSUPPORTED, node, "shape has %lld values",
					  (long long)s->numel);
	*r = (int)s->numel;
	for (int i = 0; i < *r; i++) {
		int64_t d = s->i64[i];

		if (d == 0 && !allowzero) {
			if (i >= x->ndim)
				return fci_model_node_fail(m, FC_ERR_INVALID, node,
							  "shape copies dim %d of a %d-D input", i, x->ndim);
			d = x->dims[i];
		} else if (d == -1) {
			if (neg >= 0)
				return fci_model_node_fail(m, FC_ERR_CORRUPT, node, "shape has two -1");
			neg = i;
			d = 1;
		} else if (d < 0 || d > FC_MAX_DIM) {
			return fci_model_node_fail(m, FC_ERR_CORRUPT, node, "shape has %lld", (long long)d);
		}
		dims[i] = d;
		if (neg != i) {
			if (d && known > FC_MAX_NUMEL / d)
				return fci_model_node_fail(m, FC_ERR_OVERFLOW, node, "shape is absurd");
			known *= d;
		}
	}
	if (neg >= 0) {
		if (known == 0 || x->numel % known)
			return fci_model_node_fail(m, FC_ERR_INVALID, node,
						  "cannot reshape %s (%lld values) with a -1",
						  shp(b1, sizeof b1, x), (long long)x->numel);
		dims[neg] = x->numel / known;
		known = x->numel;
	}
	if (known != x->numel)
		return fci_model_node_fail(m, FC_ERR_INVALID, node, "cannot reshape %s into %lld values",
					  shp(b1, sizeof b1, x), (long long)known);
	return 0;
}

int fci_squeeze_dims(fc_model *m, int node, const fc_model_tensor *x, int *r, int64_t *dims)
{
	int axes[FC_MODEL_MAX_DIMS], n, given, rc, k = 0;
	uint32_t mask = 0;

	if ((rc = fci_get_axes(m, node, 1, x->ndim, &n, axes, &given)))
		return rc;
	for (int i = 0; i < n; i++) {
		if (x->dims[axes[i]] != 1)
			return fci_model_node_fail(m, FC_ERR_INVALID, node,
						  "cannot squeeze axis %d of size %lld", axes[i],
						  (long long)x->dims[axes[i]]);
		mask |= 1u << axes[i];
	}
	for (int i = 0; i < x->ndim; i++) {
		if (given ? (mask & (1u << i)) != 0 : x->dims[i] == 1)
			continue;
		dims[k++] = x->dims[i];
	}
	*r = k;
	return 0;
}

int fci_unsqueeze_dims(fc_model *m, int node, const fc_model_tensor *x, int *r, int64_t *dims)
{
	int axes[FC_MAX_ATTR_INTS], n, given, rc, k = 0, out_r;
	uint32_t mask = 0;
	const fc_model_node *nd = &m->nodes[node];
	int64_t cnt;

	/* The output rank is the input's plus the number of axes. */
	if (nd->n_in > 1 && nd->in[1] >= 0) {
		const fc_model_tensor *t = fci_const_in(m, node, 1, FC_ELEM_I64, "axes");

		if (!t)
			return FC_ERR_UNSUPPORTED;
		cnt = t->numel;
	} else {
		cnt = m->np[node].a.n_axes;
	}
	if (x->ndim + cnt > FC_MODEL_MAX_DIMS)
		return fci_model_node_fail(m, FC_ERR_UNSUPPORTED, node, "output would have %lld dims",
					  (long long)(x->ndim + cnt));
	out_r = x->ndim + (int)cnt;
	if ((rc = fci_get_axes(m, node, 1, out_r, &n, axes, &given)))
		return rc;
	for (int i = 0; i < n; i++)
		mask |= 1u << axes[i];
	for (int i = 0; i < out_r; i++)
		dims[i] = mask & (1u << i) ? 1 : x->dims[k++];
	*r = out_r;
	return 0;
}

int fci_flatten_dims(fc_model *m, int node, const fc_model_tensor *x, int *r, int64_t *dims)
{
	int axis = m->np[node].a.axis;
	int64_t lo = 1;

	if (axis < 0)
		axis += x->ndim;
	if (axis < 0 || axis > x->ndim)
		return fci_model_node_fail(m, FC_ERR_INVALID, node, "axis %d is out of range for rank %d",
					  m->np[node].a.axis, x->ndim);
	for (int i = 0; i < axis; i++)
		lo *= x->dims[i];
	dims[0] = lo;
	dims[1] = lo ? x->numel / lo : 0;
	*r = 2;
	m->nodes[node].attr.axis.axis = axis;
	return 0;
}

int fci_concat_dims(fc_model *m, int node, int *r, int64_t *dims, int *axis_out)
{
	const fc_model_node *nd = &m->nodes[node];
	const fc_model_tensor *x0 = T(m, nd->in[0]);
	int axis = m->np[node].a.axis;
	char b1[128], b2[128];

	if (x0->ndim < 1)
		return fci_model_node_fail(m, FC_ERR_INVALID, node, "cannot concatenate scalars");
	if (axis < 0)
		axis += x0->ndim;
	if (axis < 0 || axis >= x0->ndim)
		return fci_model_node_fail(m, FC_ERR_INVALID, node, "axis %d is out of range for rank %d",
					  m->np[node].a.axis, x0->ndim);
	*r = x0->ndim;
	memcpy(dims, x0->dims, sizeof(int64_t) * (size_t)x0->ndim);
	for (int k = 1; k < nd->n_in; k++) {
		const fc_model_tensor *x = T(m, nd->in[k]);

		if (x->ndim != x0->ndim)
			goto mismatch;
		for (int i = 0; i < x->ndim; i++)
			if (i != axis && x->dims[i] != x0->dims[i])
				goto mismatch;
		dims[axis] += x->dims[axis];
		if (dims[axis] > FC_MAX_DIM)
			return fci_model_node_fail(m, FC_ERR_OVERFLOW, node, "output is absurdly large");
		continue;
mismatch:
		return fci_model_node_fail(m, FC_ERR_INVALID, node,
					  "cannot concatenate %s and %s on axis %d", shp(b1, sizeof b1, x0),
					  shp(b2, sizeof b2, x), axis);
	}
	*axis_out = axis;
	return 0;
}

int fci_clip_bounds(fc_model *m, int node)
{
	fc_model_node *nd = &m->nodes[node];
	const struct node_attrs *a = &m->np[node].a;

	nd->attr.clip.min = a->clip_min;
	nd->attr.clip.max = a->clip_max;
	for (int k = 1; k < nd->n_in && k < 3; k++) {
		const fc_model_tensor *t;

		if (nd->in[k] < 0)
			continue;
		t = fci_const_in(m, node, k, FC_ELEM_F32, k == 1 ? "min" : "max");
		if (!t)
			return FC_ERR_UNSUPPORTED;
		if (t->numel != 1)
			return fci_model_node_fail(m, FC_ERR_CORRUPT, node, "%s is not a scalar",
						  k == 1 ? "min" : "max");
		if (k == 1)
			nd->attr.clip.min = t->f32[0];
		else
			nd->attr.clip.max = t->f32[0];
	}
	if (isnan(nd->attr.clip.min) || isnan(nd->attr.clip.max))
		return fci_model_node_fail(m, FC_ERR_CORRUPT, node, "a bound is NaN");
	return 0;
}

/* Slice's starts, ends, axes and steps (inputs from opset 10, attributes
 * before), clamped as ONNX says, for data d: per dim of d the first index
 * st[], the step[] and the output dims[]. */
int fci_slice_params(fc_model *m, int node, const fc_model_tensor *d, int64_t *st, int64_t *step,
		     int64_t *dims)
{
	const fc_model_node *nd = &m->nodes[node];
	const struct node_attrs *a = &m->np[node].a;
	int64_t starts[FC_MAX_ATTR_INTS], ends[FC_MAX_ATTR_INTS], steps[FC_MAX_ATTR_INTS];
	int axes[FC_MAX_ATTR_INTS], n, given, rc;

	if (m->opset >= 10) {
		const fc_model_tensor *ts = fci_const_in(m, node, 1, FC_ELEM_I64, "starts");
		const fc_model_tensor *te = fci_const_in(m, node, 2, FC_ELEM_I64, "ends");
		const fc_model_tensor *tp = NULL;

		if (!ts || !te)
			return FC_ERR_UNSUPPORTED;
		if (ts->numel != te->numel || ts->numel > d->ndim || ts->ndim != 1)
			return fci_model_node_fail(m, FC_ERR_CORRUPT, node, "starts and ends do not match");
		n = (int)ts->numel;
		memcpy(starts, ts->i64, sizeof(int64_t) * (size_t)n);
		memcpy(ends, te->i64, sizeof(int64_t) * (size_t)n);
		for (int i = 0; i < n; i++)
			steps[i] = 1;
		if (nd->n_in > 4 && nd->in[4] >= 0) {
			if (!(tp = fci_const_in(m, node, 4, FC_ELEM_I64, "steps")))
				return FC_ERR_UNSUPPORTED;
			if (tp->numel != n)
				return fci_model_node_fail(m, FC_ERR_CORRUPT, node, "steps do not match");
			memcpy(steps, tp->i64, sizeof(int64_t) * (size_t)n);
		}
		if (nd->n_in > 3 && nd->in[3] >= 0) {
			int cnt;

			if ((rc = fci_get_axes(m, node, 3, d->ndim, &cnt, axes, &given)))
				return rc;
			if (cnt != n)
				return fci_model_node_fail(m, FC_ERR_CORRUPT, node, "axes do not match");
		} else {
			for (int i = 0; i < n; i++)
				axes[i] = i;
		}
	} else {
		n = a->n_starts;
		if (n > d->ndim)
			return fci_model_node_fail(m, FC_ERR_CORRUPT, node, "too many starts");
		memcpy(starts, a->starts, sizeof(int64_t) * (size_t)n);
		memcpy(ends, a->ends, sizeof(int64_t) * (size_t)n);
		for (int i = 0; i < n; i++)
			steps[i] = 1;
		if (a->has_axes) {
			int cnt;

			if ((rc = fci_get_axes(m, node, -1, d->ndim, &cnt, axes, &given)))
				return rc;
		} else {
			for (int i = 0; i < n; i++)
				axes[i] = i;
		}
	}
	for (int i = 0; i < d->ndim; i++) {
		st[i] = 0;
		step[i] = 1;
		dims[i] = d->dims[i];
	}
	for (int i = 0; i < n; i++) {
		int64_t dim = d->dims[axes[i]], s = starts[i], e = ends[i], k = steps[i], cnt;

		if (k == 0)
			return fci_model_node_fail(m, FC_ERR_CORRUPT, node, "a step is 0");
		if (s < 0)
			s = s < -dim ? 0 : s + dim;
		if (e < 0)
			e = e < -dim ? -1 : e + dim;
		/* Counted as 1 + (span - 1) / |step|, which cannot overflow
		 * for any step a file gives, INT64_MIN included. */
		if (k > 0) {
			s = s > dim ? dim : s;
			e = e < 0 ? 0 : e > dim ? dim : e;
			cnt = e > s ? 1 + (e - s - 1) / k : 0;
		} else {
			uint64_t nk = (uint64_t)0 - (uint64_t)k;

			s = s > dim - 1 ? dim - 1 : s;
			e = e > dim - 1 ? dim - 1 : e;
			cnt = s > e ? 1 + (int64_t)((uint64_t)(s - e - 1) / nk) : 0;
		}
		st[axes[i]] = s;
		step[axes[i]] = k;
		dims[axes[i]] = cnt;
	}
	return 0;
}

/* Transpose's permutation for an input of rank r (reversed when perm is
 * absent), checked, into perm[]; the output dims into dims[]. */
int fci_transpose_perm(fc_model *m, int node, const fc_model_tensor *d, int *perm, int64_t *dims)
{
	const struct node_attrs *a = &m->np[node].a;
	uint32_t seen = 0;

	if (a->has_perm && a->n_perm != d->ndim)
		return fci_model_node_fail(m, FC_ERR_CORRUPT, node, "perm has %d values for rank %d",
					  a->n_perm, d->ndim);
	for (int i = 0; i < d->ndim; i++) {
		perm[i] = a->has_perm ? (int)a->perm[i] : d->ndim - 1 - i;
		if (perm[i] >= d->ndim || (seen & (1u << perm[i])))
			return fci_model_node_fail(m, FC_ERR_CORRUPT, node, "perm is not a permutation");
		seen |= 1u << perm[i];
		dims[i] = d->dims[perm[i]];
	}
	return 0;
}

/* ---- inference of run nodes ---- */

/* Output size of one spatial dim; resolves auto_pad into *pb, *pe.
 * Returns -1 if the (dilated) kernel does not fit. */
static int spatial_out(int64_t in, int64_t k, int64_t s, int64_t d, int auto_pad, int ceil_mode,
		       int64_t *pb, int64_t *pe, int64_t *out)
{
	int64_t ek = (k - 1) * d + 1, span, o;

	if (auto_pad == AUTO_PAD_VALID) {
		*pb = *pe = 0;
	} else if (auto_pad == AUTO_PAD_SAME_UPPER || auto_pad == AUTO_PAD_SAME_LOWER) {
		int64_t total;

		o = (in + s - 1) / s;
		total = (o - 1) * s + ek - in;
		if (total < 0)
			total = 0;
		if (auto_pad == AUTO_PAD_SAME_UPPER) {
			*pb = total / 2;
			*pe = total - *pb;
		} else {
			*pe = total / 2;
			*pb = total - *pe;
		}
		*out = o;
		return 0;
	}
	span = in + *pb + *pe - ek;
	if (span < 0)
		return -1;
	o = ceil_mode ? (span + s - 1) / s + 1 : span / s + 1;
	/* PyTorch (and ONNX Runtime): no window may start in the end padding. */
	if (ceil_mode && (o - 1) * s >= in + *pb)
		o--;
	*out = o;
	return 0;
}

static int infer_spatial(fc_model *m, int node, const fc_model_tensor *x, const int64_t *kernel,
			 int ceil_mode, int64_t *pad, int64_t *dims)
{
	const struct node_attrs *a = &m->np[node].a;
	char b1[128];

	pad[0] = a->pads[0];
	pad[1] = a->pads[1];
	pad[2] = a->pads[2];
	pad[3] = a->pads[3];
	for (int i = 0; i < 2; i++) {
		if (spatial_out(x->dims[2 + i], kernel[i], a->stride[i], a->dilation[i], a->auto_pad,
				ceil_mode, &pad[i], &pad[i + 2], &dims[2 + i]))
			return fci_model_node_fail(m, FC_ERR_INVALID, node,
						  "kernel %lldx%lld (dilation %lld) does not fit input %s",
						  (long long)kernel[0], (long long)kernel[1],
						  (long long)a->dilation[i], shp(b1, sizeof b1, x));
	}
	return 0;
}

static int need_rank(fc_model *m, int node, const fc_model_tensor *x, int lo, int hi)
{
	char b1[128];

	if (x->ndim < lo || x->ndim > hi) {
		if (lo == hi)
			return fci_model_node_fail(m, FC_ERR_UNSUPPORTED, node, "input is %s, expected %d-D",
						  shp(b1, sizeof b1, x), lo);
		return fci_model_node_fail(m, FC_ERR_UNSUPPORTED, node,
					  "input is %s, expected %d-D to %d-D", shp(b1, sizeof b1, x), lo,
					  hi);
	}
	return 0;
}

static int infer_conv(fc_model *m, int node)
{
	fc_model_node *nd = &m->nodes[node];
	const struct node_attrs *a = &m->np[node].a;
	const fc_model_tensor *x, *w, *b = NULL;
	int64_t dims[4];
	char b1[128], b2[128];
	int rc;

	if (!(x = fci_act_in(m, node, 0)))
		return FC_ERR_UNSUPPORTED;
	if ((rc = need_rank(m, node, x, 4, 4)))
		return rc;
	if (!(w = fci_const_in(m, node, 1, FC_ELEM_F32, "weight")))
		return FC_ERR_UNSUPPORTED;
	if (nd->n_in > 2 && nd->in[2] >= 0 && !(b = fci_const_in(m, node, 2, FC_ELEM_F32, "bias")))
		return FC_ERR_UNSUPPORTED;
	if (w->ndim != 4)
		return fci_model_node_fail(m, FC_ERR_INVALID, node, "weight is %s, expected 4-D",
					  shp(b1, sizeof b1, w));
	if (x->dims[1] != w->dims[1] * a->group || w->dims[0] % a->group)
		return fci_model_node_fail(m, FC_ERR_INVALID, node,
					  "input %s does not fit weight %s with group %lld",
					  shp(b1, sizeof b1, x), shp(b2, sizeof b2, w), (long long)a->group);
	if (a->has_kernel && (a->kernel[0] != w->dims[2] || a->kernel[1] != w->dims[3]))
		return fci_model_node_fail(m, FC_ERR_INVALID, node,
					  "kernel_shape %lldx%lld does not match weight %s",
					  (long long)a->kernel[0], (long long)a->kernel[1],
					  shp(b1, sizeof b1, w));
	if (b && (b->ndim != 1 || b->dims[0] != w->dims[0]))
		return fci_model_node_fail(m, FC_ERR_INVALID, node, "bias %s does not match %lld outputs",
					  shp(b1, sizeof b1, b), (long long)w->dims[0]);
	dims[0] = x->dims[0];
	dims[1] = w->dims[0];
	if ((rc = infer_spatial(m, node, x, &w->dims[2], 0, nd->attr.conv.pad, dims)))
		return rc;
	nd->attr.conv.kernel[0] = w->dims[2];
	nd->attr.conv.kernel[1] = w->dims[3];
	memcpy(nd->attr.conv.stride, a->stride, sizeof a->stride);
	memcpy(nd->attr.conv.dilation, a->dilation, sizeof a->dilation);
	nd->attr.conv.group = a->group;
	nd->params = (uint64_t)w->numel + (b ? (uint64_t)b->numel : 0);
	return set_act(m, node, nd->out[0], 4, dims);
}

static int infer_pool(fc_model *m, int node)
{
	fc_model_node *nd = &m->nodes[node];
	const struct node_attrs *a = &m->np[node].a;
	const fc_model_tensor *x;
	int64_t dims[4];
	int rc;

	if (!(x = fci_act_in(m, node, 0)))
		return FC_ERR_UNSUPPORTED;
	if ((rc = need_rank(m, node, x, 4, 4)))
		return rc;
	dims[0] = x->dims[0];
	dims[1] = x->dims[1];
	if ((rc = infer_spatial(m, node, x, a->kernel, a->ceil_mode, nd->attr.pool.pad, dims)))
		return rc;
	memcpy(nd->attr.pool.kernel, a->kernel, sizeof a->kernel);
	memcpy(nd->attr.pool.stride, a->stride, sizeof a->stride);
	memcpy(nd->attr.pool.dilation, a->dilation, sizeof a->dilation);
	nd->attr.pool.ceil_mode = a->ceil_mode;
	nd->attr.pool.count_include_pad = a->count_include_pad;
	return set_act(m, node, nd->out[0], 4, dims);
}

static int infer_bn(fc_model *m, int node)
{
	fc_model_node *nd = &m->nodes[node];
	static const char *const what[] = { "scale", "bias", "mean", "var" };
	const fc_model_tensor *x;
	char b1[128];
	int rc;

	if (!(x = fci_act_in(m, node, 0)))
		return FC_ERR_UNSUPPORTED;
	if ((rc = need_rank(m, node, x, 2, FC_MODEL_MAX_DIMS)))
		return rc;
	for (int k = 1; k < 5; k++) {
		const fc_model_tensor *p = fci_const_in(m, node, k, FC_ELEM_F32, what[k - 1]);

		if (!p)
			return FC_ERR_UNSUPPORTED;
		if (p->ndim != 1 || p->dims[0] != x->dims[1])
			return fci_model_node_fail(m, FC_ERR_INVALID, node, "%s is %s for %lld channels",
						  what[k - 1], shp(b1, sizeof b1, p),
						  (long long)x->dims[1]);
	}
	nd->attr.bn.epsilon = m->np[node].a.epsilon;
	nd->params = 2 * (uint64_t)x->dims[1];
	return set_act(m, node, nd->out[0], x->ndim, x->dims);
}

static int infer_pad(fc_model *m, int node)
{
	fc_model_node *nd = &m->nodes[node];
	const struct node_attrs *a = &m->np[node].a;
	const fc_model_tensor *x;
	int64_t pads[2 * FC_MODEL_MAX_DIMS], dims[FC_MODEL_MAX_DIMS];
	int n, axes[FC_MODEL_MAX_DIMS], r;

	if (!(x = fci_act_in(m, node, 0)))
		return FC_ERR_UNSUPPORTED;
	r = x->ndim;
	nd->attr.pad.value = 0;
	if (m->opset < 11) {
		n = a->n_pads_attr;
		memcpy(pads, a->pads_attr, sizeof(int64_t) * (size_t)n);
		nd->attr.pad.value = a->pad_value;
	} else {
		const fc_model_tensor *p = fci_const_in(m, node, 1, FC_ELEM_I64, "pads");

		if (!p)
			return FC_ERR_UNSUPPORTED;
		if (p->ndim != 1 || p->numel > 2 * FC_MODEL_MAX_DIMS)
			return fci_model_node_fail(m, FC_ERR_CORRUPT, node, "pads has %lld values",
						  (long long)p->numel);
		n = (int)p->numel;
		memcpy(pads, p->i64, sizeof(int64_t) * (size_t)n);
		if (nd->n_in > 2 && nd->in[2] >= 0) {
			const fc_model_tensor *v = fci_const_in(m, node, 2, FC_ELEM_F32, "constant_value");

			if (!v)
				return FC_ERR_UNSUPPORTED;
			if (v->numel != 1)
				return fci_model_node_fail(m, FC_ERR_CORRUPT, node,
							  "constant_value is not a scalar");
			nd->attr.pad.value = v->f32[0];
		}
	}
	for (int i = 0; i < r; i++)
		axes[i] = i;
	if (nd->n_in > 3 && nd->in[3] >= 0) {
		int given, cnt, rc = fci_get_axes(m, node, 3, r, &cnt, axes, &given);

		if (rc)
			return rc;
		if (n != 2 * cnt)
			return fci_model_node_fail(m, FC_ERR_CORRUPT, node,
						  "pads has %d values for %d axes", n, cnt);
	} else if (n != 2 * r) {
		return fci_model_node_fail(m, FC_ERR_INVALID, node, "pads has %d values for a %d-D input",
					  n, r);
	}
	memset(nd->attr.pad.begin, 0, sizeof nd->attr.pad.begin);
	memset(nd->attr.pad.end, 0, sizeof nd->attr.pad.end);
	memcpy(dims, x->dims, sizeof(int64_t) * (size_t)r);
	for (int i = 0; i < n / 2; i++) {
		int64_t b = pads[i], e = pads[i + n / 2];

		if (b < 0 || e < 0)
			return fci_model_node_fail(m, FC_ERR_UNSUPPORTED, node,
						  "negative pads (cropping) are not supported");
		if (b > FC_MAX_DIM || e > FC_MAX_DIM)
			return fci_model_node_fail(m, FC_ERR_OVERFLOW, node, "pads are absurd");
		nd->attr.pad.begin[axes[i]] = b;
		nd->attr.pad.end[axes[i]] = e;
		dims[axes[i]] += b + e;
	}
	return set_act(m, node, nd->out[0], r, dims);
}

static int infer_reduce(fc_model *m, int node)
{
	fc_model_node *nd = &m->nodes[node];
	const struct node_attrs *a = &m->np[node].a;
	const fc_model_tensor *x;
	int axes[FC_MODEL_MAX_DIMS], n, given, rc, r = 0;
	uint32_t mask = 0;
	int64_t dims[FC_MODEL_MAX_DIMS];

	if (!(x = fci_act_in(m, node, 0)))
		return FC_ERR_UNSUPPORTED;
	if ((rc = fci_get_axes(m, node, m->opset >= 18 ? 1 : -1, x->ndim, &n, axes, &given)))
		return rc;
	if (n == 0 && !a->noop_empty_axes)
		mask = x->ndim >= 32 ? 0xffffffffu : (1u << x->ndim) - 1;
	for (int i = 0; i < n; i++)
		mask |= 1u << axes[i];
	for (int i = 0; i < x->ndim; i++) {
		if (!(mask & (1u << i)))
			dims[r++] = x->dims[i];
		else if (a->keepdims)
			dims[r++] = 1;
	}
	nd->attr.reduce.axes = mask;
	nd->attr.reduce.keepdims = a->keepdims;
	return set_act(m, node, nd->out[0], r, dims);
}

static int infer_gemm(fc_model *m, int node)
{
	fc_model_node *nd = &m->nodes[node];
	const struct node_attrs *a = &m->np[node].a;
	const fc_model_tensor *x, *w, *c = NULL;
	int64_t dims[2], k;
	char b1[128], b2[128];

	if (!(x = fci_act_in(m, node, 0)))
		return FC_ERR_UNSUPPORTED;
	if (!(w = fci_const_in(m, node, 1, FC_ELEM_F32, "B")))
		return FC_ERR_UNSUPPORTED;
	if (nd->n_in > 2 && nd->in[2] >= 0 && !(c = fci_const_in(m, node, 2, FC_ELEM_F32, "C")))
		return FC_ERR_UNSUPPORTED;
	if (x->ndim != 2 || w->ndim != 2)
		return fci_model_node_fail(m, FC_ERR_INVALID, node, "inputs %s and %s are not both 2-D",
					  shp(b1, sizeof b1, x), shp(b2, sizeof b2, w));
	dims[0] = a->trans_a ? x->dims[1] : x->dims[0];
	k = a->trans_a ? x->dims[0] : x->dims[1];
	dims[1] = a->trans_b ? w->dims[0] : w->dims[1];
	if (k != (a->trans_b ? w->dims[1] : w->dims[0]))
		return fci_model_node_fail(m, FC_ERR_INVALID, node,
					  "input %s does not fit weight %s (transA %d, transB %d)",
					  shp(b1, sizeof b1, x), shp(b2, sizeof b2, w), a->trans_a,
					  a->trans_b);
	if (c) {
		int ok = c->ndim <= 2;

		for (int i = 0; ok && i < c->ndim; i++) {
			int64_t want = dims[2 - c->ndim + i];

			ok = c->dims[i] == 1 || c->dims[i] == want;
		}
		if (!ok)
			return fci_model_node_fail(m, FC_ERR_INVALID, node, "C %s does not broadcast to %lldx%lld",
						  shp(b1, sizeof b1, c), (long long)dims[0],
						  (long long)dims[1]);
	}
	nd->attr.gemm.alpha = a->alpha;
	nd->attr.gemm.beta = a->beta;
	nd->attr.gemm.trans_a = a->trans_a;
	nd->attr.gemm.trans_b = a->trans_b;
	nd->params = (uint64_t)w->numel + (c ? (uint64_t)c->numel : 0);
	return set_act(m, node, nd->out[0], 2, dims);
}

static int infer_matmul(fc_model *m, int node)
{
	fc_model_node *nd = &m->nodes[node];
	const fc_model_tensor *x, *w;
	int64_t dims[FC_MODEL_MAX_DIMS];
	char b1[128], b2[128];
	int r;

	if (!(x = fci_act_in(m, node, 0)))
		return FC_ERR_UNSUPPORTED;
	w = T(m, nd->in[1]);
	/* B computed from the image too (attention's q kT and attn v): both
	 * at least 2-D, batch dims broadcast as below. */
	if (w->kind != FC_TENSOR_CONST && w->ndim < 2)
		return fci_model_node_fail(m, FC_ERR_UNSUPPORTED, node,
					  "a 1-D B computed from the image is not supported (%s)",
					  shp(b1, sizeof b1, w));
	if (w->kind == FC_TENSOR_CONST && !(w = fci_const_in(m, node, 1, FC_ELEM_F32, "B")))
		return FC_ERR_UNSUPPORTED;
	if (x->ndim < 2 || w->ndim < 1)
		return fci_model_node_fail(m, FC_ERR_UNSUPPORTED, node, "inputs %s and %s are not supported",
					  shp(b1, sizeof b1, x), shp(b2, sizeof b2, w));
	if (w->ndim == 1) {
		if (x->dims[x->ndim - 1] != w->dims[0])
			goto mismatch;
		r = x->ndim - 1;
		memcpy(dims, x->dims, sizeof(int64_t) * (size_t)r);
	} else {
		fc_model_tensor xb = *x, wb = *w;

		if (x->dims[x->ndim - 1] != w->dims[w->ndim - 2])
			goto mismatch;
		/* batch dims broadcast like elementwise ops */
		xb.ndim = x->ndim - 2;
		wb.ndim = w->ndim - 2;
		if (fci_broadcast_shape(&xb, &wb, &r, dims))
			goto mismatch;
		dims[r++] = x->dims[x->ndim - 2];
		dims[r++] = w->dims[w->ndim - 1];
	}
	nd->params = w->kind == FC_TENSOR_CONST ? (uint64_t)w->numel : 0;
	return set_act(m, node, nd->out[0], r, dims);
mismatch:
	return fci_model_node_fail(m, FC_ERR_INVALID, node, "cannot multiply %s by %s",
				  shp(b1, sizeof b1, x), shp(b2, sizeof b2, w));
}

/* LayerNormalization: the engine normalises over the last axis only, with
 * a constant Scale (and B) of one value per element of that axis. */
static int infer_layernorm(fc_model *m, int node)
{
	fc_model_node *nd = &m->nodes[node];
	const fc_model_tensor *x, *s, *bias = NULL;
	char b1[128], b2[128];
	int axis;

	if (!(x = fci_act_in(m, node, 0)))
		return FC_ERR_UNSUPPORTED;
	axis = m->np[node].a.axis < 0 ? m->np[node].a.axis + x->ndim : m->np[node].a.axis;
	if (x->ndim < 2 || x->ndim > 5 || axis != x->ndim - 1)
		return fci_model_node_fail(m, FC_ERR_UNSUPPORTED, node,
					  "only normalisation over the last axis of a 2-D to 5-D input "
					  "is supported (axis %d of %s)",
					  m->np[node].a.axis, shp(b1, sizeof b1, x));
	if (!(s = fci_const_in(m, node, 1, FC_ELEM_F32, "Scale")))
		return FC_ERR_UNSUPPORTED;
	if (nd->n_in > 2 && nd->in[2] >= 0 && !(bias = fci_const_in(m, node, 2, FC_ELEM_F32, "B")))
		return FC_ERR_UNSUPPORTED;
	for (int k = 0; k < 2; k++) {
		const fc_model_tensor *p = k ? bias : s;

		if (p && (p->ndim != 1 || p->dims[0] != x->dims[x->ndim - 1]))
			return fci_model_node_fail(m, FC_ERR_INVALID, node, "%s is %s, expected %lld values for input %s",
						  k ? "B" : "Scale", shp(b1, sizeof b1, p),
						  (long long)x->dims[x->ndim - 1], shp(b2, sizeof b2, x));
	}
	nd->attr.bn.epsilon = m->np[node].a.epsilon;
	nd->params = (uint64_t)s->numel + (bias ? (uint64_t)bias->numel : 0);
	return set_act(m, node, nd->out[0], x->ndim, x->dims);
}

/* Softmax: the engine normalises over the last axis only. Before opset 13
 * the input is coerced to 2-D at axis, which for the last axis is the
 * same thing. */
static int infer_softmax(fc_model *m, int node)
{
	fc_model_node *nd = &m->nodes[node];
	const fc_model_tensor *x;
	char b1[128];
	int axis;

	if (!(x = fci_act_in(m, node, 0)))
		return FC_ERR_UNSUPPORTED;
	axis = m->np[node].a.axis < 0 ? m->np[node].a.axis + x->ndim : m->np[node].a.axis;
	if (x->ndim < 1 || axis != x->ndim - 1)
		return fci_model_node_fail(m, FC_ERR_UNSUPPORTED, node,
					  "only softmax over the last axis is supported (axis %d of %s)",
					  m->np[node].a.axis, shp(b1, sizeof b1, x));
	nd->attr.axis.axis = axis;
	return set_act(m, node, nd->out[0], x->ndim, x->dims);
}

/* Slice of activations: any axes, positive steps (the engine copies a
 * strided box of the input: Swin's x[:, 0::2, 1::2]); an empty result is
 * refused by set_act. */
static int infer_slice(fc_model *m, int node)
{
	fc_model_node *nd = &m->nodes[node];
	const fc_model_tensor *x;
	int64_t st[FC_MODEL_MAX_DIMS], step[FC_MODEL_MAX_DIMS], dims[FC_MODEL_MAX_DIMS];
	int rc;

	if (!(x = fci_act_in(m, node, 0)))
		return FC_ERR_UNSUPPORTED;
	if ((rc = fci_slice_params(m, node, x, st, step, dims)))
		return rc;
	for (int i = 0; i < x->ndim; i++)
		if (step[i] < 1 && dims[i] > 1)
			return fci_model_node_fail(m, FC_ERR_UNSUPPORTED, node,
						  "slicing activations with step %lld (axis %d) is not supported; "
						  "only positive steps",
						  (long long)step[i], i);
	memcpy(nd->attr.slice.start, st, sizeof(int64_t) * (size_t)x->ndim);
	for (int i = 0; i < x->ndim; i++)
		nd->attr.slice.step[i] = dims[i] > 1 ? step[i] : 1;
	return set_act(m, node, nd->out[0], x->ndim, dims);
}

/* Gather from activations with one constant index (ViT's class token,
 * x[:, 0]): a slice of width 1, the axis dropped for a scalar index. */
static int infer_gather(fc_model *m, int node)
{
	fc_model_node *nd = &m->nodes[node];
	const fc_model_tensor *x, *ix;
	int64_t dims[FC_MODEL_MAX_DIMS], k;
	int axis, r = 0;

	if (!(x = fci_act_in(m, node, 0)))
		return FC_ERR_UNSUPPORTED;
	if (!(ix = fci_const_in(m, node, 1, FC_ELEM_I64, "indices")))
		return FC_ERR_UNSUPPORTED;
	if (ix->numel != 1 || ix->ndim > 1)
		return fci_model_node_fail(m, FC_ERR_UNSUPPORTED, node,
					  "gathering activations needs a single index, not %lld",
					  (long long)ix->numel);
	axis = m->np[node].a.axis < 0 ? m->np[node].a.axis + x->ndim : m->np[node].a.axis;
	if (x->ndim < 1 || axis < 0 || axis >= x->ndim)
		return fci_model_node_fail(m, FC_ERR_INVALID, node, "axis %d is out of range for rank %d",
					  m->np[node].a.axis, x->ndim);
	k = ix->i64[0] < 0 ? ix->i64[0] + x->dims[axis] : ix->i64[0];
	if (k < 0 || k >= x->dims[axis])
		return fci_model_node_fail(m, FC_ERR_INVALID, node, "index %lld is out of range for %lld",
					  (long long)ix->i64[0], (long long)x->dims[axis]);
	for (int i = 0; i < x->ndim; i++)
		if (i != axis || ix->ndim == 1)
			dims[r++] = i == axis ? 1 : x->dims[i];
	nd->attr.gather.axis = axis;
	nd->attr.gather.index = k;
	nd->attr.gather.keep = ix->ndim == 1;
	return set_act(m, node, nd->out[0], r, dims);
}

static int infer_run(fc_model *m, int node)
{
	fc_model_node *nd = &m->nodes[node];
	const fc_model_tensor *x = T(m, nd->in[0]);
	int64_t dims[FC_MODEL_MAX_DIMS];
	char b1[128], b2[128];
	int r, rc;

	nd->state = FC_NODE_RUN;
	switch (nd->op) {
	case FC_OP_CONV:
		return infer_conv(m, node);
	case FC_OP_MAXPOOL:
	case FC_OP_AVGPOOL:
		return infer_pool(m, node);
	case FC_OP_BATCHNORM:
		return infer_bn(m, node);
	case FC_OP_CLIP:
		if ((rc = fci_clip_bounds(m, node)))
			return rc;
		/* fall through */
	case FC_OP_RELU:
	case FC_OP_SIGMOID:
	case FC_OP_HARDSWISH:
	case FC_OP_ERF:
		if (!fci_act_in(m, node, 0))
			return FC_ERR_UNSUPPORTED;
		return set_act(m, node, nd->out[0], x->ndim, x->dims);
	case FC_OP_SQRT:
	case FC_OP_TANH:
		if (!fci_act_in(m, node, 0))
			return FC_ERR_UNSUPPORTED;
		return set_act(m, node, nd->out[0], x->ndim, x->dims);
	case FC_OP_GELU:
		if (!fci_act_in(m, node, 0))
			return FC_ERR_UNSUPPORTED;
		nd->attr.act.alpha = (float)m->np[node].a.approx_tanh;
		return set_act(m, node, nd->out[0], x->ndim, x->dims);
	case FC_OP_POW: {
		const fc_model_tensor *ex = fci_const_in(m, node, 1, FC_ELEM_F32, "exponent");

		if (!fci_act_in(m, node, 0) || !ex)
			return FC_ERR_UNSUPPORTED;
		if (ex->numel != 1 || ex->ndim > x->ndim)
			return fci_model_node_fail(m, FC_ERR_UNSUPPORTED, node,
						  "only a scalar exponent is supported, not %s",
						  shp(b1, sizeof b1, ex));
		nd->attr.act.beta = ex->f32[0];
		return set_act(m, node, nd->out[0], x->ndim, x->dims);
	}
	case FC_OP_LEAKYRELU:
	case FC_OP_HARDSIGMOID:
		if (!fci_act_in(m, node, 0))
			return FC_ERR_UNSUPPORTED;
		nd->attr.act.alpha = m->np[node].a.alpha;
		nd->attr.act.beta = m->np[node].a.beta;
		return set_act(m, node, nd->out[0], x->ndim, x->dims);
	case FC_OP_ADD:
	case FC_OP_SUB:
	case FC_OP_MUL:
	case FC_OP_DIV: {
		const fc_model_tensor *y = T(m, nd->in[1]);

		if ((x->kind == FC_TENSOR_CONST && x->elem != FC_ELEM_F32) ||
		    (y->kind == FC_TENSOR_CONST && y->elem != FC_ELEM_F32))
			return fci_model_node_fail(m, FC_ERR_CORRUPT, node,
						  "an integer constant meets activations");
		if (fci_broadcast_shape(x, y, &r, dims))
			return fci_model_node_fail(m, FC_ERR_INVALID, node,
						  "shapes %s and %s do not broadcast",
						  shp(b1, sizeof b1, x), shp(b2, sizeof b2, y));
		return set_act(m, node, nd->out[0], r, dims);
	}
	case FC_OP_PAD:
		return infer_pad(m, node);
	case FC_OP_GLOBALAVGPOOL:
		if (!fci_act_in(m, node, 0))
			return FC_ERR_UNSUPPORTED;
		if ((rc = need_rank(m, node, x, 3, FC_MODEL_MAX_DIMS)))
			return rc;
		memcpy(dims, x->dims, sizeof(int64_t) * (size_t)x->ndim);
		for (int i = 2; i < x->ndim; i++)
			dims[i] = 1;
		return set_act(m, node, nd->out[0], x->ndim, dims);
	case FC_OP_REDUCEMEAN:
		return infer_reduce(m, node);
	case FC_OP_LPNORM: {
		if (!fci_act_in(m, node, 0))
			return FC_ERR_UNSUPPORTED;
		int axis = m->np[node].a.axis < 0 ? m->np[node].a.axis + x->ndim : m->np[node].a.axis;
		if (axis != x->ndim - 1 || x->ndim < 2)
			return fci_model_node_fail(m, FC_ERR_UNSUPPORTED, node,
						  "only the last axis of an input of rank >= 2 can be normalised");
		nd->attr.axis.axis = axis;
		return set_act(m, node, nd->out[0], x->ndim, x->dims);
	}
	case FC_OP_FLATTEN:
		if (!fci_act_in(m, node, 0))
			return FC_ERR_UNSUPPORTED;
		if ((rc = fci_flatten_dims(m, node, x, &r, dims)))
			return rc;
		return set_act(m, node, nd->out[0], r, dims);
	case FC_OP_RESHAPE: {
		const fc_model_tensor *s = fci_const_in(m, node, 1, FC_ELEM_I64, "shape");

		if (!s)
			return FC_ERR_UNSUPPORTED;
		if ((rc = fci_reshape_dims(m, node, x, s, m->np[node].a.allowzero, &r, dims)))
			return rc;
		return set_act(m, node, nd->out[0], r, dims);
	}
	case FC_OP_SQUEEZE:
		if ((rc = fci_squeeze_dims(m, node, x, &r, dims)))
			return rc;
		return set_act(m, node, nd->out[0], r, dims);
	case FC_OP_UNSQUEEZE:
		if ((rc = fci_unsqueeze_dims(m, node, x, &r, dims)))
			return rc;
		return set_act(m, node, nd->out[0], r, dims);
	case FC_OP_CONCAT: {
		int axis;

		/* Constants join activations (ViT's class token before its
		 * patch tokens); the engine makes memories of them. */
		for (int k = 0; k < nd->n_in; k++)
			if (T(m, nd->in[k])->kind == FC_TENSOR_CONST && T(m, nd->in[k])->elem != FC_ELEM_F32)
				return fci_model_node_fail(m, FC_ERR_CORRUPT, node,
							  "an integer constant ('%s') meets activations",
							  fci_model_q(m, 0, T(m, nd->in[k])->name));
		if ((rc = fci_concat_dims(m, node, &r, dims, &axis)))
			return rc;
		nd->attr.axis.axis = axis;
		return set_act(m, node, nd->out[0], r, dims);
	}
	case FC_OP_GEMM:
		return infer_gemm(m, node);
	case FC_OP_MATMUL:
		return infer_matmul(m, node);
	case FC_OP_LAYERNORM:
		return infer_layernorm(m, node);
	case FC_OP_SOFTMAX:
		return infer_softmax(m, node);
	case FC_OP_SLICE:
		return infer_slice(m, node);
	case FC_OP_GATHER:
		return infer_gather(m, node);
	case FC_OP_TRANSPOSE:
		if (!fci_act_in(m, node, 0))
			return FC_ERR_UNSUPPORTED;
		if ((rc = fci_transpose_perm(m, node, x, nd->attr.perm.perm, dims)))
			return rc;
		return set_act(m, node, nd->out[0], x->ndim, dims);
	default:
		return fci_model_node_fail(m, FC_ERR_UNSUPPORTED, node,
					  "needs constant inputs, but '%s' is computed from the model input",
					  fci_model_q(m, 0, x->name));
	}
}

static int infer_node(fc_model *m, int node)
{
	fc_model_node *nd = &m->nodes[node];
	const struct node_priv *p = &m->np[node];
	int *in = (int *)nd->in, n_const = 0, present = 0, out = nd->out[0];

	nd->state = FC_NODE_RUN;
	nd->needed = 0;
	nd->params = 0;
	memset(&nd->attr, 0, sizeof nd->attr);
	for (int k = 0; k < nd->n_in; k++) {
		int t = p->in_raw[k];

		in[k] = -1;
		if (t < 0)
			continue;
		if (T(m, t)->kind == FC_TENSOR_NONE)
			return fci_model_node_fail(m, FC_ERR_UNSUPPORTED, node,
						  "reads '%s', an optional output featcache does not "
						  "compute",
						  fci_model_q(m, 0, T(m, t)->name));
		in[k] = T(m, t)->source;
		present++;
		n_const += T(m, in[k])->kind == FC_TENSOR_CONST;
	}

	if (nd->op == FC_OP_CONSTANT) {
		nd->state = FC_NODE_FOLDED;
		return 0;
	}
	if (nd->op == FC_OP_IDENTITY || nd->op == FC_OP_DROPOUT) {
		const fc_model_tensor *src = T(m, in[0]);
		fc_model_tensor *o = T(m, out);

		o->kind = src->kind == FC_TENSOR_CONST ? FC_TENSOR_CONST : FC_TENSOR_ACT;
		o->elem = src->elem;
		o->ndim = src->ndim;
		memcpy(o->dims, src->dims, sizeof o->dims);
		o->numel = src->numel;
		o->f32 = src->f32;
		o->i64 = src->i64;
		o->source = in[0];
		nd->state = src->kind == FC_TENSOR_CONST ? FC_NODE_FOLDED : FC_NODE_ALIAS;
		return 0;
	}
	if (nd->op == FC_OP_SHAPE || present == n_const)
		return fci_model_fold(m, node);
	return infer_run(m, node);
}

int fci_model_infer(fc_model *m)
{
	fc_model_tensor *in = T(m, m->g.input);
	int rc;

	while (m->fold_mem) {
		struct blob *next = m->fold_mem->next;

		free(m->fold_mem);
		m->fold_mem = next;
	}
	for (int i = 0; i < m->n_tensors; i++) {
		fc_model_tensor *t = T(m, i);

		if (m->fixed[i])
			continue;
		t->kind = FC_TENSOR_NONE;
		t->elem = FC_ELEM_F32;
		t->ndim = -1;
		t->numel = 0;
		t->f32 = NULL;
		t->i64 = NULL;
		t->source = i;
		memset(t->dims, 0, sizeof t->dims);
	}
	in->kind = FC_TENSOR_INPUT;
	in->ndim = m->in_ndim;
	memcpy(in->dims, m->in_dims, sizeof(int64_t) * (size_t)m->in_ndim);
	if (fci_mul_dims(in->ndim, in->dims, &in->numel)) {
		char b[128];

		return fci_model_fail(m, FC_ERR_OVERFLOW, "input '%s' of %s has more than %lld elements",
				     fci_model_q(m, 0, in->name), shp(b, sizeof b, in),
				     (long long)FC_MAX_NUMEL);
	}
	/* Folding may make as many values as the file holds, plus some. */
	m->fold_left = FC_MAX_FOLD_NUMEL;
	for (int i = 0; i < m->n_tensors; i++)
		if (m->fixed[i] && m->fold_left < FC_MAX_NUMEL)
			m->fold_left += m->tensors[i].numel;
	m->g.params = 0;
	for (int i = 0; i < m->n_nodes; i++) {
		if ((rc = infer_node(m, i)))
			return rc;
		m->g.params += m->nodes[i].params;
	}
	return 0;
}
