/*
 * engine.c - builds oneDNN primitives from a cut model graph (model.h) and
 * runs them: Conv with folded BN and fused eltwise/sum post-ops, pooling,
 * standalone BN and eltwise, binary ops, concat, matmul; Pad and the
 * broadcasts oneDNN's binary cannot express are plain C loops.
 *
 * Layouts. Every activation is a `value`: a memory descriptor and a oneDNN
 * memory object whose buffer the planner assigns later. Primitives that
 * can choose a layout get format_tag any (conv src/weights/dst, pooling
 * dst, matmul weights/dst, concat dst); the rest (eltwise, batch norm,
 * binary, pooling src, concat srcs) take the descriptor their producer
 * chose. A tensor changes layout only through want(), which adds a reorder
 * step and remembers the copy for later consumers. That happens:
 *  - at the edges: the f32 NCHW input into the first consumers' layout
 *    (InputReorder), the embedding into f32 N x D (OutputReorder);
 *  - around grouped (non-depthwise) convs, ResNeXt's and RegNet's: oneDNN
 *    2.6.3 runs them in NHWC only with ref:any, so they get a blocked copy
 *    of their input, and the 1x1 conv (or SE Mul) after them a NHWC one;
 *    each conv takes its producer's layout only when that gives the same
 *    implementation as oneDNN's own choice;
 *  - where a binary op or a pooling would get ref:any in its producer's
 *    layout (an SE gate broadcast over a blocked-by-8 tensor): the operands
 *    go to NHWC;
 *  - for Flatten/Reshape of a layout in which the view is not a reshape
 *    (VGG flattens N x 512 x 7 x 7 NHWC in NCHW order for its classifier);
 *  - around the C steps (Pad with non-zero pads, binary broadcasts of the
 *    first operand), which work on plain f32;
 *  - for a residual whose layout differs from its sum conv's destination,
 *    or that is still needed after it (Copy).
 * ResNet, Wide-ResNet, MobileNetV2/V3, EfficientNet, MNASNet, DenseNet and
 * SqueezeNet need none inside the graph (test_engine checks the fixtures).
 *
 * Memory. Once every step exists, each buffer's lifetime is known (first
 * step that writes it .. last step that reads it) and plan() packs them
 * into one arena, largest first, at the lowest offset free for their whole
 * lifetime. Views, in-place eltwise/bnorm/binary, and a residual that its
 * `sum` conv overwrites share one buffer.
 *
 * What it is not: a general graph optimizer; the fusions are those
 * engine.h lists.
 */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "extract/engine_impl.h"

int fci_build_fail(build *b, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fci_verrf(b->err, b->errcap, code, fmt, ap);
	va_end(ap);
	return code;
}

/* oneDNN's name for a status, for messages. */
const char *fci_dnnl_status_name(dnnl_status_t st)
{
	switch (st) {
	case dnnl_success: return "success";
	case dnnl_out_of_memory: return "out of memory";
	case dnnl_invalid_arguments: return "invalid arguments";
	case dnnl_unimplemented: return "unimplemented";
	case dnnl_iterator_ends: return "iterator ends";
	case dnnl_runtime_error: return "runtime error";
	case dnnl_not_required: return "not required";
	}
	return "unknown status";
}

/* The first failure of a sequence of oneDNN calls: statuses are not flags,
 * so OR-ing them would report a status nobody returned. */
dnnl_status_t fci_first_failure(dnnl_status_t so_far, dnnl_status_t next)
{
	return so_far != dnnl_success ? so_far : next;
}

/* p (an array of *cap elements of size sz, n in use) with room for one
 * more: p itself or a larger copy; NULL (p untouched) when out of memory. */
static void *grow(void *p, int *cap, int n, size_t sz)
{
	if (n < *cap)
		return p;
	int c = *cap ? 2 * *cap : 64;
	void *q = realloc(p, (size_t)c * sz);
	if (q)
		*cap = c;
	return q;
}

static void *keep(fc_engine *e, void *p)
{
	if (!p)
		return NULL;
	void **v = grow(e->blocks, &e->cap_blocks, e->n_blocks, sizeof *v);
	if (!v) {
		free(p);
		return NULL;
	}
	e->blocks = v;
	e->blocks[e->n_blocks++] = p;
	return p;
}

static size_t round_up(size_t n)
{
	return (n + ALIGN - 1) / ALIGN * ALIGN;
}

void *fci_balloc(fc_engine *e, size_t bytes)
{
	void *p = aligned_alloc(ALIGN, round_up(bytes ? bytes : 1));
	if (p)
		memset(p, 0, round_up(bytes ? bytes : 1));
	return keep(e, p);
}

int fci_is_const(const build *b, int t)
{
	return t >= 0 && b->g->tensors[t].kind == FC_TENSOR_CONST && b->g->tensors[t].elem == FC_ELEM_F32;
}

int fci_is_act(const build *b, int t)
{
	return t >= 0 && (b->g->tensors[t].kind == FC_TENSOR_ACT || b->g->tensors[t].kind == FC_TENSOR_INPUT);
}

/* A private f32 copy of constant tensor t: malloc'd, the caller's. */
float *fci_cst_copy(const build *b, int t)
{
	const fc_model_tensor *x = &b->g->tensors[t];
	float *p = malloc((size_t)(x->numel ? x->numel : 1) * sizeof *p);
	if (p && x->numel)
		memcpy(p, x->f32, (size_t)x->numel * sizeof *p);
	return p;
}

/* The same, kept for e's life. */
float *fci_cst(build *b, int t)
{
	return keep(b->e, fci_cst_copy(b, t));
}

/* Row-major memory descriptor of the given dims (rank 0 as {1}). */
dnnl_status_t fci_md_plain(dnnl_memory_desc_t *md, int ndim, const int64_t *dims, dnnl_data_type_t dt)
{
	dnnl_dims_t d, s;
	if (ndim == 0) {
		d[0] = 1;
		ndim = 1;
	} else {
		for (int i = 0; i < ndim; i++)
			d[i] = dims[i];
	}
	dnnl_dim_t st = 1;
	for (int i = ndim - 1; i >= 0; i--) {
		s[i] = st;
		st *= d[i];
	}
	return dnnl_memory_desc_init_by_strides(md, ndim, d, dt, s);
}

dnnl_status_t fci_md_any(dnnl_memory_desc_t *md, int ndim, const int64_t *dims, dnnl_data_type_t dt)
{
	dnnl_dims_t d;
	for (int i = 0; i < ndim; i++)
		d[i] = dims[i];
	return dnnl_memory_desc_init_by_tag(md, ndim, d, dt, dnnl_format_tag_any);
}

/* A constant's memory (weights, biases, BN statistics), kept for e's life. */
int fci_mem(build *b, dnnl_memory_t *m, const dnnl_memory_desc_t *md, void *data)
{
	fc_engine *e = b->e;
	dnnl_memory_t *v = grow(e->mems, &e->cap_mems, e->n_mems, sizeof *v);
	if (!v)
		return FC_ERR_NOMEM;
	e->mems = v;
	if (dnnl_memory_create(m, md, e->eng, data) != dnnl_success)
		return FC_ERR_INTERNAL;
	e->mems[e->n_mems++] = *m;
	return 0;
}

/* ---- values ---- */

value *fci_val(build *b, int v)
{
	return &b->e->vals[v];
}

/* A new value of layout md, in the arena unless fixed is given. Returns
 * its index or a negative FC_ERR_*. */
int fci_new_value(build *b, const dnnl_memory_desc_t *md, void *fixed)
{
	fc_engine *e = b->e;
	dnnl_memory_desc_t copy = *md; /* md may point into e->vals, which grow moves */
	value *v = grow(e->vals, &e->cap_vals, e->n_vals, sizeof *v);
	if (!v)
		return FC_ERR_NOMEM;
	e->vals = v;
	value *x = &e->vals[e->n_vals];
	memset(x, 0, sizeof *x);
	x->md = copy;
	x->fixed = fixed;
	x->root = e->n_vals;
	x->alt = -1;
	x->until = -1;
	if (dnnl_memory_create(&x->mem, &copy, e->eng, fixed ? fixed : DNNL_MEMORY_NONE) != dnnl_success)
		return FC_ERR_INTERNAL;
	return e->n_vals++;
}

/* A value of layout md over the buffer of value v. */
int fci_alias_value(build *b, int v, const dnnl_memory_desc_t *md)
{
	int root = fci_val(b, v)->root;
	void *fixed = fci_val(b, root)->fixed;
	int a = fci_new_value(b, md, fixed);
	if (a >= 0)
		fci_val(b, a)->root = root;
	return a;
}

/* 1 if tensor t is one of the cuts the embedding is made of. */
int fci_is_cut(const fc_model_graph *g, int t)
{
	for (int k = 0; k < g->n_cuts; k++)
		if (g->cut_tensors[k] == t)
			return 1;
	return 0;
}

/* Tensor t now lives in value v: its buffer must survive t's last reader. */
void fci_bind_tensor(build *b, int t, int v)
{
	int r = fci_val(b, v)->root;
	int until = fci_is_cut(b->g, t) ? INT_MAX : b->consumer[t];
	if (fci_val(b, r)->until < until)
		fci_val(b, r)->until = until;
	if (b->tv[t] < 0)
		b->tv[t] = v;
}

/* May node i overwrite value v's buffer? Only if nothing after node i
 * reads any tensor in it, and it is not a fixed buffer. */
int fci_writable_after(build *b, int v, int i)
{
	const value *r = fci_val(b, fci_val(b, v)->root);
	return !r->fixed && r->until <= i;
}

int fci_same_buffer(build *b, int v, int w)
{
	return fci_val(b, v)->root == fci_val(b, w)->root;
}

/* The value of tensor t: its activation, or a constant wrapped in a fixed
 * plain f32 value of rank ndim (dims right-aligned), made per use. */
int fci_operand(build *b, int t, int ndim)
{
	const fc_model_tensor *x = &b->g->tensors[t];
	if (fci_is_act(b, t))
		return b->tv[t] >= 0 ? b->tv[t] : FC_ERR_INTERNAL;
	int64_t d[FC_MODEL_MAX_DIMS];
	for (int k = 0; k < ndim; k++)
		d[k] = k < ndim - x->ndim ? 1 : x->dims[k - (ndim - x->ndim)];
	dnnl_memory_desc_t md;
	float *p = fci_cst(b, t);
	if (!p)
		return FC_ERR_NOMEM;
	if (fci_md_plain(&md, ndim, d, dnnl_f32))
		return FC_ERR_INTERNAL;
	return fci_new_value(b, &md, p);
}

/* fci_operand in data type dt: a constant is converted once, here, so
 * that no step converts it on every run. */
int fci_operand_as(build *b, int t, int ndim, dnnl_data_type_t dt)
{
	const fc_model_tensor *x = &b->g->tensors[t];
	if (fci_is_act(b, t) || dt == dnnl_f32)
		return fci_operand(b, t, ndim);
	int64_t d[FC_MODEL_MAX_DIMS];
	for (int k = 0; k < ndim; k++)
		d[k] = k < ndim - x->ndim ? 1 : x->dims[k - (ndim - x->ndim)];
	dnnl_memory_desc_t from, to;
	dnnl_memory_t m;
	void *h;
	float *p = fci_cst_copy(b, t);
	if (!p)
		return FC_ERR_NOMEM;
	if (fci_md_plain(&from, ndim, d, dnnl_f32) || fci_md_plain(&to, ndim, d, dt)) {
		free(p);
		return FC_ERR_INTERNAL;
	}
	int rc = fci_const_mem(b, &m, &from, p, &to);
	if (rc)
		return rc;
	if (dnnl_memory_get_data_handle(m, &h) != dnnl_success)
		return FC_ERR_INTERNAL;
	return fci_new_value(b, &to, h);
}

/* ---- steps ---- */

int fci_new_step(build *b, int node, int kind, int nval)
{
	fc_engine *e = b->e;
	step *v = grow(e->steps, &e->cap_steps, e->n_steps, sizeof *v);
	if (!v)
		return FC_ERR_NOMEM;
	e->steps = v;
	step *s = &e->steps[e->n_steps];
	memset(s, 0, sizeof *s);
	s->node = node;
	s->kind = kind;
	if (!(s->val = keep(e, calloc((size_t)nval, sizeof *s->val))))
		return FC_ERR_NOMEM;
	if (nval > (int)(sizeof s->args / sizeof s->args[0]) &&
	    !(s->cargs = keep(e, calloc((size_t)nval, sizeof *s->cargs))))
		return FC_ERR_NOMEM;
	e->n_steps++;
	return 0;
}

step *fci_last_step(build *b)
{
	return &b->e->steps[b->e->n_steps - 1];
}

/* Argument a of the last step is value v (or, v < 0, the constant m). */
void fci_arg(build *b, int a, int v, dnnl_memory_t m)
{
	step *s = fci_last_step(b);
	dnnl_exec_arg_t *args = s->cargs ? s->cargs : s->args;
	args[s->nargs].arg = a;
	args[s->nargs].memory = v >= 0 ? fci_val(b, v)->mem : m;
	s->val[s->nargs++] = v;
	s->nval = s->nargs;
}

const char *fci_impl_of(const_dnnl_primitive_desc_t pd)
{
	const char *impl = NULL;
	if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || !impl)
		impl = "?";
	return impl;
}

static int is_int8(dnnl_data_type_t t)
{
	return t == dnnl_u8 || t == dnnl_s8;
}

/* What a primitive computes in, from its source and destination types. */
static const char *prim_precision(const_dnnl_primitive_desc_t pd)
{
	const dnnl_memory_desc_t *src = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
	const dnnl_memory_desc_t *dst = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
	dnnl_data_type_t a = src ? src->data_type : dnnl_f32, c = dst ? dst->data_type : dnnl_f32;
	if (is_int8(a) || is_int8(c))
		return "int8";
	return a == dnnl_bf16 || c == dnnl_bf16 ? "bf16" : "f32";
}

/* Create the last step's primitive from pd, recording its implementation
 * as "<node> <op>: <impl>" (op defaults to the node's). */
int fci_finish_prim(build *b, const_dnnl_primitive_desc_t pd, const char *op)
{
	fc_engine *e = b->e;
	step *s = fci_last_step(b);
	const fc_model_node *nd = &b->g->nodes[s->node];
	const char *impl = fci_impl_of(pd);
	if (!op)
		op = nd->op_type;
	char **v = realloc(e->infos, (size_t)(e->n_prims + 1) * sizeof *v);
	if (!v)
		return FC_ERR_NOMEM;
	e->infos = v;
	const char **pv = realloc(e->precs, (size_t)(e->n_prims + 1) * sizeof *pv);
	if (!pv)
		return FC_ERR_NOMEM;
	e->precs = pv;
	e->precs[e->n_prims] = prim_precision(pd);
	size_t len = strlen(nd->name) + strlen(op) + strlen(impl) + 8;
	char *info = malloc(len);
	if (!info)
		return FC_ERR_NOMEM;
	snprintf(info, len, "%s %s: %s", nd->name, op, impl);
	e->infos[e->n_prims++] = info;
	if (dnnl_primitive_create(&s->prim, pd) != dnnl_success)
		return fci_build_fail(b, FC_ERR_INTERNAL, "node '%s' (%s): onednn cannot create the primitive", nd->name, op);
	return 0;
}

int fci_create_pd(build *b, int node, dnnl_primitive_desc_t *pd, const void *desc,
		     const_dnnl_primitive_attr_t attr)
{
	dnnl_status_t st = dnnl_primitive_desc_create(pd, desc, attr, b->e->eng, NULL);
	if (st != dnnl_success) {
		*pd = NULL;
		return fci_build_fail(b, FC_ERR_INTERNAL, "node '%s' (%s): onednn refused the primitive (%s)",
			    b->g->nodes[node].name, b->g->nodes[node].op_type, fci_dnnl_status_name(st));
	}
	return 0;
}

dnnl_memory_desc_t fci_query_md(const_dnnl_primitive_desc_t pd, dnnl_query_t what)
{
	return *dnnl_primitive_desc_query_md(pd, what, 0);
}

/* A step running the one-source, one-destination primitive of pd. */
int fci_unary_step(build *b, int node, dnnl_primitive_desc_t pd, int src, int dst, const char *op)
{
	int rc = fci_new_step(b, node, ST_PRIM, 2);
	if (!rc) {
		fci_arg(b, DNNL_ARG_FROM, src, NULL);
		fci_arg(b, DNNL_ARG_TO, dst, NULL);
		rc = fci_finish_prim(b, pd, op);
	}
	dnnl_primitive_desc_destroy(pd);
	return rc;
}

/* Append a reorder of value src into value dst at node's place. */
int fci_reorder_step(build *b, int node, int src, int dst, const char *op)
{
	dnnl_primitive_desc_t pd;
	fc_engine *e = b->e;
	if (dnnl_reorder_primitive_desc_create(&pd, &fci_val(b, src)->md, e->eng, &fci_val(b, dst)->md, e->eng, NULL))
		return fci_build_fail(b, FC_ERR_INTERNAL, "node '%s': onednn cannot reorder between the layouts",
			    b->g->nodes[node].name);
	return fci_unary_step(b, node, pd, src, dst, op);
}

/* The value holding value v's data in layout md: v itself, a copy made
 * earlier for another consumer, or a new one filled by a reorder step at
 * node's place. Returns the value or a negative FC_ERR_*. */
int fci_want(build *b, int node, int v, const dnnl_memory_desc_t *md)
{
	int last = v;
	for (int w = v; w >= 0; w = fci_val(b, w)->alt) {
		if (dnnl_memory_desc_equal(&fci_val(b, w)->md, md))
			return w;
		last = w;
	}
	int w = fci_new_value(b, md, NULL);
	if (w < 0)
		return w;
	fci_val(b, last)->alt = w;
	fci_val(b, w)->until = fci_val(b, fci_val(b, v)->root)->until;
	int rc = fci_reorder_step(b, node, v, w, fci_val(b, v)->fixed == b->e->in_buf ? "InputReorder" : "Reorder");
	return rc ? rc : w;
}

/* v's data in plain row-major f32. */
int fci_want_plain(build *b, int node, int v)
{
	const dnnl_memory_desc_t *md = &fci_val(b, v)->md;
	dnnl_memory_desc_t p;
	if (fci_md_plain(&p, md->ndims, md->dims, dnnl_f32))
		return FC_ERR_INTERNAL;
	return fci_want(b, node, v, &p);
}

/* A view of value v with dims (same data, row-major order): an alias when
 * v's layout can be reshaped, else an alias of a plain copy. */
int fci_view(build *b, int node, int v, int ndim, const int64_t *dims)
{
	dnnl_memory_desc_t md;
	dnnl_dims_t d;
	int nd = ndim ? ndim : 1;
	for (int k = 0; k < nd; k++)
		d[k] = ndim ? dims[k] : 1;
	if (dnnl_memory_desc_reshape(&md, &fci_val(b, v)->md, nd, d) != dnnl_success) {
		dnnl_memory_desc_t p;
		const dnnl_memory_desc_t *vm = &fci_val(b, v)->md;
		if (fci_md_plain(&p, vm->ndims, vm->dims, vm->data_type) || (v = fci_want(b, node, v, &p)) < 0 ||
		    dnnl_memory_desc_reshape(&md, &fci_val(b, v)->md, nd, d) != dnnl_success)
			return v < 0 ? v : FC_ERR_INTERNAL;
	}
	return fci_alias_value(b, v, &md);
}

/* A constant fci_const_mem made: from which bytes, in which layouts. */
struct fci_cst_entry {
	XXH128_hash_t h;
	dnnl_memory_desc_t user, want;
	void *buf;
};

/* The parent's buffer holding user bytes data (hash h) in layout want_md,
 * NULL if it has none. */
static void *parent_cst(const fc_engine *e, XXH128_hash_t h, const dnnl_memory_desc_t *user_md,
			const dnnl_memory_desc_t *want_md)
{
	const fc_engine *p = e->parent;
	for (int i = 0; p && i < p->n_csts; i++) {
		const struct fci_cst_entry *c = &p->csts[i];
		if (XXH128_isEqual(c->h, h) && dnnl_memory_desc_equal(&c->user, user_md) &&
		    dnnl_memory_desc_equal(&c->want, want_md))
			return c->buf;
	}
	return NULL;
}

/* Remember buf as data's (hash h) constant, for tails; 0 or FC_ERR_NOMEM. */
static int note_cst(fc_engine *e, XXH128_hash_t h, const dnnl_memory_desc_t *user_md,
		    const dnnl_memory_desc_t *want_md, void *buf)
{
	struct fci_cst_entry *v = grow(e->csts, &e->cap_csts, e->n_csts, sizeof *v);
	if (!v)
		return FC_ERR_NOMEM;
	e->csts = v;
	e->csts[e->n_csts++] = (struct fci_cst_entry){ h, *user_md, *want_md, buf };
	return 0;
}

/* A constant in layout want_md from data (malloc'd, in layout user_md;
 * this function owns it): data itself when the layouts agree, else a copy
 * reordered once, now, and data is freed. A tail engine takes its
 * parent's when that holds the same bytes in the same layouts. */
int fci_const_mem(build *b, dnnl_memory_t *out, const dnnl_memory_desc_t *user_md, void *data,
		     const dnnl_memory_desc_t *want_md)
{
	fc_engine *e = b->e;
	dnnl_memory_t mu = NULL;
	dnnl_primitive_desc_t pd = NULL;
	dnnl_primitive_t prim = NULL;
	int rc = FC_ERR_NOMEM;
	XXH128_hash_t h = XXH3_128bits(data, dnnl_memory_desc_get_size(user_md));
	void *shared = parent_cst(e, h, user_md, want_md);
	if (shared) {
		free(data);
		return fci_mem(b, out, want_md, shared);
	}
	if (dnnl_memory_desc_equal(user_md, want_md)) {
		if (!keep(e, data))
			return FC_ERR_NOMEM;
		if ((rc = fci_mem(b, out, user_md, data)))
			return rc;
		return e->parent ? 0 : note_cst(e, h, user_md, want_md, data);
	}
	void *buf = fci_balloc(e, dnnl_memory_desc_get_size(want_md));
	if (!buf || (rc = fci_mem(b, out, want_md, buf)) || (!e->parent && (rc = note_cst(e, h, user_md, want_md, buf))))
		goto out;
	rc = FC_ERR_INTERNAL;
	if (dnnl_memory_create(&mu, user_md, e->eng, data))
		goto out;
	dnnl_exec_arg_t args[2] = { { DNNL_ARG_FROM, mu }, { DNNL_ARG_TO, *out } };
	if (dnnl_reorder_primitive_desc_create(&pd, user_md, e->eng, want_md, e->eng, NULL) ||
	    dnnl_primitive_create(&prim, pd) || dnnl_primitive_execute(prim, e->stream, 2, args) ||
	    dnnl_stream_wait(e->stream))
		goto out;
	rc = 0;
out:
	if (prim)
		dnnl_primitive_destroy(prim);
	if (pd)
		dnnl_primitive_desc_destroy(pd);
	if (mu)
		dnnl_memory_destroy(mu);
	free(data);
	return rc;
}

/* ---- the memory plan ---- */

typedef struct slot {
	size_t size, off;
	int first, last, v;
} slot;

static int by_size(const void *x, const void *y)
{
	const slot *a = x, *c = y;
	if (a->size != c->size)
		return a->size < c->size ? 1 : -1;
	return a->v - c->v;
}

static int by_off(const void *x, const void *y)
{
	const slot *a = *(const slot *const *)x, *c = *(const slot *const *)y;
	return a->off < c->off ? -1 : a->off > c->off;
}

/* Give every arena buffer an offset: largest first, each at the lowest
 * offset that no buffer alive during any of its steps occupies. Greedy
 * by size is within a few percent of optimal on CNN lifetimes. */
static int plan(fc_engine *e)
{
	int n = 0, rc = FC_ERR_NOMEM;
	slot *s = calloc((size_t)e->n_vals + 1, sizeof *s);
	const slot **busy = calloc((size_t)e->n_vals + 1, sizeof *busy);
	if (!s || !busy)
		goto out;
	for (int v = 0; v < e->n_vals; v++) {
		value *r = &e->vals[e->vals[v].root];
		size_t sz = round_up(dnnl_memory_desc_get_size(&e->vals[v].md));
		r->first = INT_MAX, r->last = -1;
		if (r->size < sz)
			r->size = sz;
	}
	for (int k = 0; k < e->n_steps; k++)
		for (int a = 0; a < e->steps[k].nval; a++) {
			int v = e->steps[k].val[a];
			if (v < 0)
				continue;
			value *r = &e->vals[e->vals[v].root];
			r->first = k < r->first ? k : r->first;
			r->last = k > r->last ? k : r->last;
		}
	e->total_bytes = 0;
	for (int v = 0; v < e->n_vals; v++) {
		value *r = &e->vals[v];
		if (r->root != v || r->fixed || r->last < 0)
			continue;
		s[n++] = (slot){ .size = r->size, .first = r->first, .last = r->last, .v = v };
		e->total_bytes += r->size;
	}
	qsort(s, (size_t)n, sizeof *s, by_size);
	size_t top = 0;
	for (int i = 0; i < n; i++) {
		int nb = 0;
		for (int j = 0; j < i; j++)
			if (s[j].first <= s[i].last && s[i].first <= s[j].last)
				busy[nb++] = &s[j];
		qsort(busy, (size_t)nb, sizeof *busy, by_off);
		size_t off = 0;
		for (int j = 0; j < nb && busy[j]->off < off + s[i].size; j++)
			if (busy[j]->off + busy[j]->size > off)
				off = busy[j]->off + busy[j]->size;
		s[i].off = off;
		e->vals[s[i].v].off = off;
		if (off + s[i].size > top)
			top = off + s[i].size;
	}
	e->arena_bytes = top;
	if (!(e->arena = aligned_alloc(ALIGN, top ? top : ALIGN)))
		goto out;
	for (int v = 0; v < e->n_vals; v++) {
		value *x = &e->vals[v];
		const value *r = &e->vals[x->root];
		x->ptr = r->fixed ? r->fixed : (char *)e->arena + r->off;
		if (dnnl_memory_set_data_handle(x->mem, x->ptr) != dnnl_success) {
			rc = FC_ERR_INTERNAL;
			goto out;
		}
	}
	rc = 0;
out:
	free(s);
	free(busy);
	return rc;
}

/* ---- open ---- */

const char *fci_isa_name(dnnl_cpu_isa_t isa)
{
	switch (isa) {
	case dnnl_cpu_isa_sse41: return "sse4.1";
	case dnnl_cpu_isa_avx: return "avx";
	case dnnl_cpu_isa_avx2: return "avx2";
	case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
	case dnnl_cpu_isa_avx512_core: return "avx512_core";
	case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
	case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
	case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
	default: return "an older isa";
	}
}

/* oneDNN's ISA values are bit sets: each includes the features of those
 * it extends, so AVX512_BF16 and AMX both contain avx512_core_bf16's. */
static int native_bf16(dnnl_cpu_isa_t isa)
{
	return ((unsigned)isa & (unsigned)dnnl_cpu_isa_avx512_core_bf16) == (unsigned)dnnl_cpu_isa_avx512_core_bf16;
}

static int build_all(build *b, const fc_engine_opts *opts)
{
	const fc_model_graph *g = b->g;
	fc_engine *e = b->e;
	int rc;
	if (!(b->uses = calloc((size_t)g->n_tensors, sizeof *b->uses)) ||
	    !(b->consumer = calloc((size_t)g->n_tensors, sizeof *b->consumer)) ||
	    !(b->tv = malloc((size_t)g->n_tensors * sizeof *b->tv)) || !(b->skip = calloc((size_t)g->n_nodes + 1, 1)))
		return FC_ERR_NOMEM;
	for (int t = 0; t < g->n_tensors; t++)
		b->tv[t] = -1;
	if (dnnl_engine_create(&e->eng, dnnl_cpu, 0) != dnnl_success ||
	    dnnl_stream_create(&e->stream, e->eng, dnnl_stream_default_flags) != dnnl_success)
		return fci_build_fail(b, FC_ERR_INTERNAL, "cannot create the onednn cpu engine");
	e->dt = opts->precision == FC_PREC_BF16 ? dnnl_bf16 : dnnl_f32;
	e->int8 = opts->precision == FC_PREC_INT8;
	if (e->int8 && (rc = fci_calib_copy(&e->calib, opts->calib)))
		return rc;
	b->calib = e->calib;
	if (opts->precision == FC_PREC_F32) {
		e->observe = opts->observe;
		e->observe_ctx = opts->observe_ctx;
	}
	if (e->int8 && (rc = fci_int8_check(b)))
		return rc;
	fci_plan_winograd(b, opts->direct_convs);
	const fc_model_tensor *I = &g->tensors[g->input];
	e->batch = I->dims[0], e->c = I->dims[1], e->h = I->dims[2], e->w = I->dims[3];
	e->dim = (size_t)g->embed_dim;
	if (!(e->in_buf = fci_balloc(e, (size_t)I->numel * sizeof *e->in_buf)) ||
	    !(e->out_buf = fci_balloc(e, (size_t)e->batch * e->dim * sizeof *e->out_buf)))
		return FC_ERR_NOMEM;
	for (int i = 0; i < g->n_nodes; i++) {
		const fc_model_node *nd = &g->nodes[i];
		if (nd->state != FC_NODE_RUN || !nd->needed)
			continue;
		for (int k = 0; k < nd->n_in; k++)
			if (nd->in[k] >= 0) {
				b->uses[nd->in[k]]++;
				b->consumer[nd->in[k]] = i;
			}
	}
	for (int k = 0; k < g->n_cuts; k++)
		b->uses[g->cut_tensors[k]]++;
	if ((rc = fci_find_patterns(b)))
		return rc;
	dnnl_memory_desc_t imd;
	int in;
	if (fci_md_plain(&imd, 4, I->dims, dnnl_f32) || (in = fci_new_value(b, &imd, e->in_buf)) < 0)
		return FC_ERR_NOMEM;
	fci_bind_tensor(b, g->input, in);
	for (int i = 0; i < g->n_nodes; i++) {
		if (b->skip[i] == 2) { /* folded into an earlier step: its output is its input's */
			fci_bind_tensor(b, g->nodes[i].out[0], b->tv[fci_is_act(b, g->nodes[i].in[0]) ? g->nodes[i].in[0]
												 : g->nodes[i].in[1]]);
			continue;
		}
		if (fci_runs(b, i) && (rc = fci_build_node(b, i)))
			return rc;
	}
	if ((rc = fci_build_output(b)) || (rc = plan(e)))
		return rc;
	return 0;
}

static int open_engine(fc_engine **out, fc_model *model, const fc_engine_opts *opts, const fc_engine *parent,
		       char *err, size_t errcap)
{
	build bb = { .err = err, .errcap = errcap };
	build *b = &bb;
	fc_engine *e = NULL;
	int rc;

	if (err && errcap)
		err[0] = '\0';
	if (!out)
		return fci_build_fail(b, FC_ERR_INVALID, "no output pointer");
	*out = NULL;
	if (!model || !opts || opts->batch < 1 || opts->threads < 0)
		return fci_build_fail(b, FC_ERR_INVALID, "missing model or options, batch < 1 or threads < 0");
	if (opts->precision != FC_PREC_F32 && opts->precision != FC_PREC_BF16 && opts->precision != FC_PREC_INT8)
		return fci_build_fail(b, FC_ERR_INVALID, "unknown precision %d", opts->precision);
	if (opts->precision == FC_PREC_BF16 && !native_bf16(dnnl_get_effective_cpu_isa()))
		return fci_build_fail(b, FC_ERR_UNSUPPORTED,
			    "bf16 needs a cpu with native bf16 (avx512_bf16 or amx); onednn reports %s, where bf16 "
			    "would be slower than f32: use f32",
			    fci_isa_name(dnnl_get_effective_cpu_isa()));
	const fc_model_graph *g = fc_model_get_graph(model);
	if (g->cut_tensor < 0)
		return fci_build_fail(b, FC_ERR_INVALID, "the model has no cut layer");
	if (g->tensors[g->input].ndim != 4)
		return fci_build_fail(b, FC_ERR_INVALID, "the model's input is not 4-D");
	if ((rc = fc_model_set_input(model, opts->batch, 0, 0, 0)))
		return fci_build_fail(b, rc, "cannot set batch %d: %s", opts->batch, fc_model_errmsg(model));
	g = fc_model_get_graph(model);
	if (g->cut_tensor < 0)
		return fci_build_fail(b, FC_ERR_INVALID, "the model has no cut layer");
	b->g = g;
	if (opts->threads > 0)
		omp_set_num_threads(opts->threads);
	if (!(e = calloc(1, sizeof *e)))
		return fci_build_fail(b, FC_ERR_NOMEM, "out of memory");
	e->threads = opts->threads;
	e->parent = parent;
	b->e = e;
	rc = build_all(b, opts);
	if (rc == FC_ERR_NOMEM)
		fci_build_fail(b, rc, "out of memory");
	else if (rc == FC_ERR_INTERNAL && err && errcap && !err[0])
		fci_build_fail(b, rc, "onednn failed while building the engine");
	free(b->uses);
	free(b->consumer);
	free(b->tv);
	free(b->skip);
	fci_free_patterns(b);
	if (rc) {
		fc_engine_free(e);
		return rc;
	}
	*out = e;
	return 0;
}

int fc_engine_open(fc_engine **out, fc_model *model, const fc_engine_opts *opts, char *err, size_t errcap)
{
	return open_engine(out, model, opts, NULL, err, errcap);
}

int fc_engine_add_batch(fc_engine *e, fc_model *model, int n, char *err, size_t errcap)
{
	build bb = { .err = err, .errcap = errcap };
	fc_engine *t = NULL;
	int rc;

	if (err && errcap)
		err[0] = '\0';
	if (!e || !model || e->parent || n < 1 || n > e->batch)
		return fci_build_fail(&bb, FC_ERR_INVALID, "missing engine or model, a tail's tail, or n not 1 to %lld",
				      e ? (long long)e->batch : 0LL);
	if (n == e->batch || (e->tails && e->tails[n]))
		return 0;
	if (!e->tails && !(e->tails = calloc((size_t)e->batch, sizeof *e->tails)))
		return fci_build_fail(&bb, FC_ERR_NOMEM, "out of memory");
	/* int8: the same plan from the ranges the engine kept */
	int prec = e->int8 ? FC_PREC_INT8 : e->dt == dnnl_bf16 ? FC_PREC_BF16 : FC_PREC_F32;
	fc_engine_opts o = { .batch = n, .precision = prec, .threads = e->threads, .calib = e->calib };
	rc = open_engine(&t, model, &o, e, err, errcap);
	/* the model goes back to the batch e was built for */
	int back = fc_model_set_input(model, e->batch, 0, 0, 0);
	if (rc)
		return rc;
	if (back || t->dim != e->dim || t->c != e->c || t->h != e->h || t->w != e->w) {
		fc_engine_free(t);
		return fci_build_fail(&bb, FC_ERR_INVALID, "the model is not the one the engine was built from (or "
				      "its cut or input size changed since)");
	}
	e->tails[n] = t;
	return 0;
}

/* ---- run ---- */

/* The C steps walk their output in row-major order with an index per dim. */
static int64_t numel(const int64_t *dims, int r)
{
	int64_t n = 1;
	for (int k = 0; k < r; k++)
		n *= dims[k];
	return n;
}

static void next_index(int64_t *idx, const int64_t *dims, int r)
{
	for (int k = r - 1; k >= 0; k--) {
		if (++idx[k] < dims[k])
			return;
		idx[k] = 0;
	}
}

/* y = a op c with numpy broadcasting (dims already right-aligned). */
static void binary_c(const fc_engine *e, const step *s)
{
	const float *a = e->vals[s->val[0]].ptr, *c = e->vals[s->val[1]].ptr;
	float *dst = e->vals[s->val[2]].ptr;
	int r = s->ndim;
	int64_t total = numel(s->dims, r), idx[FC_MODEL_MAX_DIMS] = { 0 };
	for (int64_t o = 0; o < total; o++) {
		int64_t ia = 0, ic = 0;
		for (int k = 0; k < r; k++) {
			ia = ia * s->sdims[0][k] + (s->sdims[0][k] == 1 ? 0 : idx[k]);
			ic = ic * s->sdims[1][k] + (s->sdims[1][k] == 1 ? 0 : idx[k]);
		}
		float x = a[ia], z = c[ic], y;
		switch (s->op) {
		case FC_OP_ADD: y = x + z; break;
		case FC_OP_SUB: y = x - z; break;
		case FC_OP_MUL: y = x * z; break;
		default: y = x / z; break;
		}
		dst[o] = y;
		next_index(idx, s->dims, r);
	}
}

static void pad_c(const fc_engine *e, const step *s)
{
	const float *src = e->vals[s->val[0]].ptr;
	float *dst = e->vals[s->val[2]].ptr;
	int r = s->ndim;
	int64_t total = numel(s->dims, r), idx[FC_MODEL_MAX_DIMS] = { 0 };
	for (int64_t o = 0; o < total; o++) {
		int64_t is = 0;
		int inside = 1;
		for (int k = 0; k < r; k++) {
			int64_t j = idx[k] - s->sdims[1][k];
			if (j < 0 || j >= s->sdims[0][k])
				inside = 0;
			is = is * s->sdims[0][k] + j;
		}
		dst[o] = inside ? src[is] : s->alpha;
		next_index(idx, s->dims, r);
	}
}

static void lpnorm_c(const fc_engine *e, const step *s)
{
	fci_l2_normalize_rows(e->vals[s->val[2]].ptr, e->vals[s->val[0]].ptr, (size_t)s->dims[0], (size_t)s->dims[1]);
}

/* One cut's share of the embedding: token 0, the mean of the tokens
 * after the prefix (summed in double: as exact as f32 can show), or a
 * copy, into its columns of every row of out_buf. */
static void out_c(const fc_engine *e, const step *s)
{
	const float *src = e->vals[s->val[0]].ptr;
	int64_t n = s->dims[0], t = s->dims[1], d = s->dims[2];

	for (int64_t i = 0; i < n; i++) {
		const float *x = src + i * t * d;
		float *y = e->out_buf + (size_t)i * e->dim + s->col;

		if (s->op == FC_POOL_AUTO || s->op == FC_POOL_FLATTEN) {
			memcpy(y, x, sizeof *y * (size_t)(t * d));
			continue;
		}
		if (s->op == FC_POOL_CLS || s->op == FC_POOL_CLS_MEAN) {
			memcpy(y, x, sizeof *y * (size_t)d);
			y += d;
		}
		if (s->op == FC_POOL_MEAN || s->op == FC_POOL_CLS_MEAN)
			for (int64_t j = 0; j < d; j++) {
				double sum = 0;
				for (int64_t k = s->prefix; k < t; k++)
					sum += x[k * d + j];
				y[j] = (float)(sum / (double)(t - s->prefix));
			}
	}
}

static int run_step(fc_engine *e, const step *s, size_t n)
{
	for (int k = 0; k < 2 && e->observe; k++) {
		/* the batch's real images: the first n of a layout whose outermost dim is N */
		int o = k ? s->obs2 : s->obs;
		if (!o)
			continue;
		const value *v = &e->vals[s->val[k ? s->obs2_arg : s->obs_arg]];
		if (dnnl_stream_wait(e->stream) != dnnl_success)
			return 1;
		size_t all = dnnl_memory_desc_get_size(&v->md) / sizeof(float);
		e->observe(e->observe_ctx, o - 1, e->obs_names[o - 1], v->ptr, all / (size_t)e->batch * n);
	}
	switch (s->kind) {
	case ST_PRIM:
		return dnnl_primitive_execute(s->prim, e->stream, s->nargs, s->cargs ? s->cargs : s->args) !=
		       dnnl_success;
	case ST_PAD:
	case ST_BINARY_C:
	case ST_LPNORM:
	case ST_OUT:
		/* the C loops read what earlier primitives wrote */
		if (dnnl_stream_wait(e->stream) != dnnl_success)
			return 1;
		if (s->kind == ST_PAD)
			pad_c(e, s);
		else if (s->kind == ST_LPNORM)
			lpnorm_c(e, s);
		else if (s->kind == ST_OUT)
			out_c(e, s);
		else
			binary_c(e, s);
		return 0;
	}
	return 1;
}

int fc_engine_run(fc_engine *e, float *out, const float *in, size_t n)
{
	if (!e || !out || !in || n < 1 || n > (size_t)e->batch) {
		if (e)
			snprintf(e->errmsg, sizeof e->errmsg, "bad arguments (n must be 1..%lld)",
				 (long long)e->batch);
		return FC_ERR_INVALID;
	}
	e->errmsg[0] = '\0';
	if (n < (size_t)e->batch && e->tails && e->tails[n]) {
		int rc = fc_engine_run(e->tails[n], out, in, n);
		if (rc)
			memcpy(e->errmsg, e->tails[n]->errmsg, sizeof e->errmsg);
		return rc;
	}
	if (e->threads > 0 && omp_get_max_threads() != e->threads)
		omp_set_num_threads(e->threads);
	size_t img = (size_t)(e->c * e->h * e->w);
	memcpy(e->in_buf, in, n * img * sizeof *in);
	if (n < (size_t)e->batch)
		memset(e->in_buf + n * img, 0, ((size_t)e->batch - n) * img * sizeof *in);
	for (int i = 0; i < e->n_steps; i++)
		if (run_step(e, &e->steps[i], n)) {
			snprintf(e->errmsg, sizeof e->errmsg, "onednn failed to execute step %d", i);
			return FC_ERR_INTERNAL;
		}
	if (dnnl_stream_wait(e->stream) != dnnl_success) {
		snprintf(e->errmsg, sizeof e->errmsg, "onednn failed to finish the run");
		return FC_ERR_INTERNAL;
	}
	memcpy(out, e->out_buf, n * e->dim * sizeof *out);
	return 0;
}

int fc_engine_winograd(const fc_engine *e)
{
	return e ? e->winograd : 0;
}

size_t fc_engine_dim(const fc_engine *e)
{
	return e ? e->dim : 0;
}

void fc_engine_input_dims(const fc_engine *e, int64_t *batch, int64_t *c, int64_t *h, int64_t *w)
{
	if (batch)
		*batch = e ? e->batch : 0;
	if (c)
		*c = e ? e->c : 0;
	if (h)
		*h = e ? e->h : 0;
	if (w)
		*w = e ? e->w : 0;
}

int fc_engine_n_prims(const fc_engine *e)
{
	return e ? e->n_prims : 0;
}

const char *fc_engine_prim_info(const fc_engine *e, int i)
{
	return e && i >= 0 && i < e->n_prims ? e->infos[i] : NULL;
}

const char *fc_engine_prim_precision(const fc_engine *e, int i)
{
	return e && i >= 0 && i < e->n_prims ? e->precs[i] : NULL;
}

int fc_engine_n_observed(const fc_engine *e)
{
	return e ? e->n_obs : 0;
}

const char *fc_engine_observed_name(const fc_engine *e, int k)
{
	return e && k >= 0 && k < e->n_obs ? e->obs_names[k] : NULL;
}

size_t fc_engine_peak_bytes(const fc_engine *e, size_t *total)
{
	if (total)
		*total = e ? e->total_bytes : 0;
	return e ? e->arena_bytes : 0;
}

const char *fc_engine_errmsg(const fc_engine *e)
{
	return e ? e->errmsg : "";
}

void fc_engine_free(fc_engine *e)
{
	if (!e)
		return;
	/* the tails first: they use this engine's constants */
	for (int64_t n = 0; e->tails && n < e->batch; n++)
		fc_engine_free(e->tails[n]);
	free(e->tails);
	free(e->csts);
	for (int i = 0; i < e->n_steps; i++)
		if (e->steps[i].prim)
			dnnl_primitive_destroy(e->steps[i].prim);
	free(e->steps);
	for (int i = 0; i < e->n_vals; i++)
		if (e->vals[i].mem)
			dnnl_memory_destroy(e->vals[i].mem);
	free(e->vals);
	for (int i = 0; i < e->n_mems; i++)
		dnnl_memory_destroy(e->mems[i]);
	free(e->mems);
	for (int i = 0; i < e->n_prims; i++)
		free(e->infos[i]);
	free(e->infos);
	free(e->precs);
	for (int i = 0; i < e->n_obs; i++)
		free(e->obs_names[i]);
	free(e->obs_names);
	for (int i = 0; i < e->n_blocks; i++)
		free(e->blocks[i]);
	free(e->blocks);
	free(e->arena);
	fc_calib_free(e->calib);
	if (e->stream)
		dnnl_stream_destroy(e->stream);
	if (e->eng)
		dnnl_engine_destroy(e->eng);
	free(e);
}
