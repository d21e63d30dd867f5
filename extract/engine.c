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

#include <dnnl.h>

#include "featcache/engine.h"
#include "util/util.h"

#define ALIGN 64

enum step_kind { ST_PRIM = 0, ST_PAD, ST_BINARY_C, ST_LPNORM };

typedef struct value {
	dnnl_memory_desc_t md;
	dnnl_memory_t mem;
	void *ptr;        /* its buffer, once planned */
	void *fixed;      /* a buffer outside the arena (input, output, constants) */
	int root;         /* the value whose buffer it uses: itself unless an alias */
	int alt;          /* the same data in another layout, -1 if none */
	int until;        /* root: last node reading a tensor in this buffer (INT_MAX: the cut) */
	int first, last;  /* root: steps from the first write to the last read */
	size_t size, off; /* root: bytes (the largest alias) and arena offset */
} value;

typedef struct step {
	int kind;
	int node;
	dnnl_primitive_t prim;
	int nargs;
	dnnl_exec_arg_t args[8]; /* ST_PRIM; concat's many sources go in cargs */
	dnnl_exec_arg_t *cargs;
	int *val;                /* value behind each argument, -1 for constants;
	                          * C steps: inputs val[0], val[1], output val[2] */
	int nval;
	/* C steps, on plain f32 */
	int op, ndim;
	int64_t dims[FC_MODEL_MAX_DIMS];     /* output dims */
	int64_t sdims[2][FC_MODEL_MAX_DIMS]; /* binary: inputs padded to ndim; pad: input, begin */
	float alpha;
} step;

struct fc_engine {
	dnnl_engine_t eng;
	dnnl_stream_t stream;
	dnnl_data_type_t dt; /* activations: f32 or bf16 */
	int threads;
	step *steps;
	int n_steps, cap_steps;
	value *vals;
	int n_vals, cap_vals;
	dnnl_memory_t *mems; /* weights and other constants */
	int n_mems, cap_mems;
	void **blocks;       /* malloc'd buffers to free */
	int n_blocks, cap_blocks;
	char **infos;
	int n_prims;
	void *arena;
	size_t arena_bytes, total_bytes;
	float *in_buf, *out_buf; /* batch x C x H x W and batch x D, f32 */
	int64_t batch, c, h, w;
	size_t dim;
	char errmsg[FC_ERRLEN];
};

typedef struct build {
	fc_engine *e;
	const fc_model_graph *g;
	int *uses;     /* per tensor: uses by needed nodes (+1 for the cut) */
	int *consumer; /* per tensor: the last needed node using it */
	int *tv;       /* per tensor: its value, -1 before it is produced */
	char *skip;    /* per node: fused into an earlier step */
	char *err;
	size_t errcap;
} build;

static int fail(build *b, int code, const char *fmt, ...) FC_PRINTF(3, 4);
static int fail(build *b, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fci_verrf(b->err, b->errcap, code, fmt, ap);
	va_end(ap);
	return code;
}

/* oneDNN's name for a status, for messages. */
static const char *dnnl_status_name(dnnl_status_t st)
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
static dnnl_status_t first_failure(dnnl_status_t so_far, dnnl_status_t next)
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

static void *balloc(fc_engine *e, size_t bytes)
{
	void *p = aligned_alloc(ALIGN, round_up(bytes ? bytes : 1));
	if (p)
		memset(p, 0, round_up(bytes ? bytes : 1));
	return keep(e, p);
}

static int is_const(const build *b, int t)
{
	return t >= 0 && b->g->tensors[t].kind == FC_TENSOR_CONST && b->g->tensors[t].elem == FC_ELEM_F32;
}

static int is_act(const build *b, int t)
{
	return t >= 0 && (b->g->tensors[t].kind == FC_TENSOR_ACT || b->g->tensors[t].kind == FC_TENSOR_INPUT);
}

/* A private f32 copy of constant tensor t: malloc'd, the caller's. */
static float *cst_copy(const build *b, int t)
{
	const fc_model_tensor *x = &b->g->tensors[t];
	float *p = malloc((size_t)(x->numel ? x->numel : 1) * sizeof *p);
	if (p && x->numel)
		memcpy(p, x->f32, (size_t)x->numel * sizeof *p);
	return p;
}

/* The same, kept for e's life. */
static float *cst(build *b, int t)
{
	return keep(b->e, cst_copy(b, t));
}

/* Row-major memory descriptor of the given dims (rank 0 as {1}). */
static dnnl_status_t md_plain(dnnl_memory_desc_t *md, int ndim, const int64_t *dims, dnnl_data_type_t dt)
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

static dnnl_status_t md_any(dnnl_memory_desc_t *md, int ndim, const int64_t *dims, dnnl_data_type_t dt)
{
	dnnl_dims_t d;
	for (int i = 0; i < ndim; i++)
		d[i] = dims[i];
	return dnnl_memory_desc_init_by_tag(md, ndim, d, dt, dnnl_format_tag_any);
}

/* A constant's memory (weights, biases, BN statistics), kept for e's life. */
static int mem(build *b, dnnl_memory_t *m, const dnnl_memory_desc_t *md, void *data)
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

static value *V(build *b, int v)
{
	return &b->e->vals[v];
}

/* A new value of layout md, in the arena unless fixed is given. Returns
 * its index or a negative FC_ERR_*. */
static int new_value(build *b, const dnnl_memory_desc_t *md, void *fixed)
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
static int alias_value(build *b, int v, const dnnl_memory_desc_t *md)
{
	int root = V(b, v)->root;
	void *fixed = V(b, root)->fixed;
	int a = new_value(b, md, fixed);
	if (a >= 0)
		V(b, a)->root = root;
	return a;
}

/* Tensor t now lives in value v: its buffer must survive t's last reader. */
static void bind_tensor(build *b, int t, int v)
{
	int r = V(b, v)->root;
	int until = t == b->g->cut_tensor ? INT_MAX : b->consumer[t];
	if (V(b, r)->until < until)
		V(b, r)->until = until;
	if (b->tv[t] < 0)
		b->tv[t] = v;
}

/* May node i overwrite value v's buffer? Only if nothing after node i
 * reads any tensor in it, and it is not a fixed buffer. */
static int writable_after(build *b, int v, int i)
{
	const value *r = V(b, V(b, v)->root);
	return !r->fixed && r->until <= i;
}

static int same_buffer(build *b, int v, int w)
{
	return V(b, v)->root == V(b, w)->root;
}

/* The value of tensor t: its activation, or a constant wrapped in a fixed
 * plain f32 value of rank ndim (dims right-aligned), made per use. */
static int operand(build *b, int t, int ndim)
{
	const fc_model_tensor *x = &b->g->tensors[t];
	if (is_act(b, t))
		return b->tv[t] >= 0 ? b->tv[t] : FC_ERR_INTERNAL;
	int64_t d[FC_MODEL_MAX_DIMS];
	for (int k = 0; k < ndim; k++)
		d[k] = k < ndim - x->ndim ? 1 : x->dims[k - (ndim - x->ndim)];
	dnnl_memory_desc_t md;
	float *p = cst(b, t);
	if (!p)
		return FC_ERR_NOMEM;
	if (md_plain(&md, ndim, d, dnnl_f32))
		return FC_ERR_INTERNAL;
	return new_value(b, &md, p);
}

/* ---- steps ---- */

static int new_step(build *b, int node, int kind, int nval)
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

static step *last_step(build *b)
{
	return &b->e->steps[b->e->n_steps - 1];
}

/* Argument a of the last step is value v (or, v < 0, the constant m). */
static void arg(build *b, int a, int v, dnnl_memory_t m)
{
	step *s = last_step(b);
	dnnl_exec_arg_t *args = s->cargs ? s->cargs : s->args;
	args[s->nargs].arg = a;
	args[s->nargs].memory = v >= 0 ? V(b, v)->mem : m;
	s->val[s->nargs++] = v;
	s->nval = s->nargs;
}

static const char *impl_of(const_dnnl_primitive_desc_t pd)
{
	const char *impl = NULL;
	if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || !impl)
		impl = "?";
	return impl;
}

/* Create the last step's primitive from pd, recording its implementation
 * as "<node> <op>: <impl>" (op defaults to the node's). */
static int finish_prim(build *b, const_dnnl_primitive_desc_t pd, const char *op)
{
	fc_engine *e = b->e;
	step *s = last_step(b);
	const fc_model_node *nd = &b->g->nodes[s->node];
	const char *impl = impl_of(pd);
	if (!op)
		op = nd->op_type;
	char **v = realloc(e->infos, (size_t)(e->n_prims + 1) * sizeof *v);
	if (!v)
		return FC_ERR_NOMEM;
	e->infos = v;
	size_t len = strlen(nd->name) + strlen(op) + strlen(impl) + 8;
	char *info = malloc(len);
	if (!info)
		return FC_ERR_NOMEM;
	snprintf(info, len, "%s %s: %s", nd->name, op, impl);
	e->infos[e->n_prims++] = info;
	if (dnnl_primitive_create(&s->prim, pd) != dnnl_success)
		return fail(b, FC_ERR_INTERNAL, "node '%s' (%s): onednn cannot create the primitive", nd->name, op);
	return 0;
}

static int create_pd(build *b, int node, dnnl_primitive_desc_t *pd, const void *desc,
		     const_dnnl_primitive_attr_t attr)
{
	dnnl_status_t st = dnnl_primitive_desc_create(pd, desc, attr, b->e->eng, NULL);
	if (st != dnnl_success) {
		*pd = NULL;
		return fail(b, FC_ERR_INTERNAL, "node '%s' (%s): onednn refused the primitive (%s)",
			    b->g->nodes[node].name, b->g->nodes[node].op_type, dnnl_status_name(st));
	}
	return 0;
}

static dnnl_memory_desc_t query_md(const_dnnl_primitive_desc_t pd, dnnl_query_t what)
{
	return *dnnl_primitive_desc_query_md(pd, what, 0);
}

/* A step running the one-source, one-destination primitive of pd. */
static int unary_step(build *b, int node, dnnl_primitive_desc_t pd, int src, int dst, const char *op)
{
	int rc = new_step(b, node, ST_PRIM, 2);
	if (!rc) {
		arg(b, DNNL_ARG_FROM, src, NULL);
		arg(b, DNNL_ARG_TO, dst, NULL);
		rc = finish_prim(b, pd, op);
	}
	dnnl_primitive_desc_destroy(pd);
	return rc;
}

/* Append a reorder of value src into value dst at node's place. */
static int reorder_step(build *b, int node, int src, int dst, const char *op)
{
	dnnl_primitive_desc_t pd;
	fc_engine *e = b->e;
	if (dnnl_reorder_primitive_desc_create(&pd, &V(b, src)->md, e->eng, &V(b, dst)->md, e->eng, NULL))
		return fail(b, FC_ERR_INTERNAL, "node '%s': onednn cannot reorder between the layouts",
			    b->g->nodes[node].name);
	return unary_step(b, node, pd, src, dst, op);
}

/* The value holding value v's data in layout md: v itself, a copy made
 * earlier for another consumer, or a new one filled by a reorder step at
 * node's place. Returns the value or a negative FC_ERR_*. */
static int want(build *b, int node, int v, const dnnl_memory_desc_t *md)
{
	int last = v;
	for (int w = v; w >= 0; w = V(b, w)->alt) {
		if (dnnl_memory_desc_equal(&V(b, w)->md, md))
			return w;
		last = w;
	}
	int w = new_value(b, md, NULL);
	if (w < 0)
		return w;
	V(b, last)->alt = w;
	V(b, w)->until = V(b, V(b, v)->root)->until;
	int rc = reorder_step(b, node, v, w, V(b, v)->fixed == b->e->in_buf ? "InputReorder" : "Reorder");
	return rc ? rc : w;
}

/* v's data in plain row-major f32. */
static int want_plain(build *b, int node, int v)
{
	const dnnl_memory_desc_t *md = &V(b, v)->md;
	dnnl_memory_desc_t p;
	if (md_plain(&p, md->ndims, md->dims, dnnl_f32))
		return FC_ERR_INTERNAL;
	return want(b, node, v, &p);
}

/* A view of value v with dims (same data, row-major order): an alias when
 * v's layout can be reshaped, else an alias of a plain copy. */
static int view(build *b, int node, int v, int ndim, const int64_t *dims)
{
	dnnl_memory_desc_t md;
	dnnl_dims_t d;
	int nd = ndim ? ndim : 1;
	for (int k = 0; k < nd; k++)
		d[k] = ndim ? dims[k] : 1;
	if (dnnl_memory_desc_reshape(&md, &V(b, v)->md, nd, d) != dnnl_success) {
		dnnl_memory_desc_t p;
		const dnnl_memory_desc_t *vm = &V(b, v)->md;
		if (md_plain(&p, vm->ndims, vm->dims, vm->data_type) || (v = want(b, node, v, &p)) < 0 ||
		    dnnl_memory_desc_reshape(&md, &V(b, v)->md, nd, d) != dnnl_success)
			return v < 0 ? v : FC_ERR_INTERNAL;
	}
	return alias_value(b, v, &md);
}

/* A constant in layout want_md from data (malloc'd, in layout user_md;
 * this function owns it): data itself when the layouts agree, else a copy
 * reordered once, now, and data is freed. */
static int const_mem(build *b, dnnl_memory_t *out, const dnnl_memory_desc_t *user_md, void *data,
		     const dnnl_memory_desc_t *want_md)
{
	fc_engine *e = b->e;
	dnnl_memory_t mu = NULL;
	dnnl_primitive_desc_t pd = NULL;
	dnnl_primitive_t prim = NULL;
	int rc = FC_ERR_NOMEM;
	if (dnnl_memory_desc_equal(user_md, want_md))
		return keep(e, data) ? mem(b, out, user_md, data) : FC_ERR_NOMEM;
	void *buf = balloc(e, dnnl_memory_desc_get_size(want_md));
	if (!buf || (rc = mem(b, out, want_md, buf)))
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

/* ---- nodes ---- */

static int is_eltwise(int op)
{
	return op == FC_OP_RELU || op == FC_OP_CLIP || op == FC_OP_LEAKYRELU || op == FC_OP_SIGMOID ||
	       op == FC_OP_HARDSIGMOID || op == FC_OP_HARDSWISH;
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
	}
	return 0;
}

/* Output padding so that oneDNN's floor formula gives exactly `out`. */
static int64_t pad_r(int64_t in, int64_t out, int64_t k, int64_t s, int64_t d, int64_t pl, int64_t pr)
{
	int64_t ext = (k - 1) * d + 1;
	if ((in + pl + pr - ext) / s + 1 == out)
		return pr;
	return (out - 1) * s + ext - in - pl;
}

static int reads(const fc_model_node *nd, int t)
{
	for (int k = 0; k < nd->n_in; k++)
		if (nd->in[k] == t)
			return 1;
	return 0;
}

static int runs(const build *b, int j)
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
		if (!runs(b, j) || !reads(nd, t))
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

/* The post-ops chain after conv node i whose output is *cur: folded into
 * po, the fused nodes marked skipped, *cur advanced to the last fused
 * output. *res is the residual tensor of a sum post-op (-1 if none) and
 * *add the Add node that carried it. */
static int conv_post_ops(build *b, int i, dnnl_post_ops_t po, int *cur, int *res, int *add)
{
	const fc_model_graph *g = b->g;
	*res = -1;
	*add = -1;
	for (;;) {
		int t = *cur, a, m;
		dnnl_alg_kind_t galg;
		if (gated_act(b, i, t, &a, &m, &galg)) {
			if (dnnl_post_ops_append_eltwise(po, 1.0f, galg, 1.0f, 0.0f))
				return fail(b, FC_ERR_INTERNAL, "node '%s': cannot append a post-op", g->nodes[m].name);
			b->skip[a] = b->skip[m] = 1;
			*cur = g->nodes[m].out[0];
			continue;
		}
		if (b->uses[t] != 1)
			return 0;
		int j = b->consumer[t];
		const fc_model_node *c = &g->nodes[j];
		dnnl_alg_kind_t alg[2];
		float al[2], be[2];
		int n = is_eltwise(c->op) ? eltwise_of(c, alg, al, be) : 0;
		if (n > 0 && c->in[0] == t) {
			for (int k = 0; k < n; k++)
				if (dnnl_post_ops_append_eltwise(po, 1.0f, alg[k], al[k], be[k]))
					return fail(b, FC_ERR_INTERNAL, "node '%s': cannot append a post-op", c->name);
		} else if (c->op == FC_OP_ADD && *res < 0 && c->n_in == 2) {
			int other = c->in[0] == t ? c->in[1] : c->in[0];
			const fc_model_tensor *O = other >= 0 ? &g->tensors[other] : NULL;
			const fc_model_tensor *C = &g->tensors[t];
			if (!is_act(b, other) || other == t || O->ndim != 4 ||
			    memcmp(O->dims, C->dims, 4 * sizeof C->dims[0]) != 0 || b->tv[other] < 0)
				return 0;
			if (dnnl_post_ops_append_sum(po, 1.0f))
				return fail(b, FC_ERR_INTERNAL, "node '%s': cannot append a sum post-op", c->name);
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
static void fold_bn(build *b, int *cur, float *w, float *bias, int64_t oc, int64_t per)
{
	const fc_model_graph *g = b->g;
	if (b->uses[*cur] != 1)
		return;
	int j = b->consumer[*cur];
	const fc_model_node *bn = &g->nodes[j];
	if (bn->op != FC_OP_BATCHNORM || bn->in[0] != *cur || bn->n_in < 5 || !is_const(b, bn->in[1]) ||
	    !is_const(b, bn->in[2]) || !is_const(b, bn->in[3]) || !is_const(b, bn->in[4]))
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
static int residual_in_place(build *b, int i, int add, int r, int src)
{
	if (same_buffer(b, r, src) || !writable_after(b, r, add))
		return 0;
	for (int j = i + 1; j < add; j++)
		if (runs(b, j))
			for (int k = 0; k < b->g->nodes[j].n_in; k++) {
				int t = b->g->nodes[j].in[k];
				if (t >= 0 && b->tv[t] >= 0 && same_buffer(b, b->tv[t], r))
					return 0;
			}
	return 1;
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

	if (!is_act(b, x) || X->ndim != 4 || !is_const(b, wt) || W->ndim != 4 || (bt >= 0 && !is_const(b, bt)))
		return fail(b, FC_ERR_UNSUPPORTED, "node '%s' (Conv): only 2-D convolutions with constant weights",
			    nd->name);
	int64_t oc = W->dims[0];
	float *w = cst_copy(b, wt), *bias = balloc(e, (size_t)oc * sizeof *bias);
	if (!w || !bias) {
		free(w);
		return FC_ERR_NOMEM;
	}
	if (bt >= 0)
		memcpy(bias, g->tensors[bt].f32, (size_t)oc * sizeof *bias);

	int cur = nd->out[0], res, add;
	fold_bn(b, &cur, w, bias, oc, W->numel / oc);
	if (dnnl_primitive_attr_create(&attr) || dnnl_post_ops_create(&po)) {
		rc = FC_ERR_NOMEM;
		goto out;
	}
	if ((rc = conv_post_ops(b, i, po, &cur, &res, &add)))
		goto out;
	if (dnnl_primitive_attr_set_post_ops(attr, po)) {
		rc = FC_ERR_INTERNAL;
		goto out;
	}

	const fc_model_tensor *Y = &g->tensors[cur];
	int64_t grp = nd->attr.conv.group;
	dnnl_memory_desc_t any_md, w_md, uw_md, b_md, dst_md;
	dnnl_status_t st = md_any(&any_md, 4, X->dims, e->dt);
	st = first_failure(st, md_any(&dst_md, 4, Y->dims, e->dt));
	st = first_failure(st, md_plain(&b_md, 1, &oc, dnnl_f32));
	if (grp > 1) {
		dnnl_dims_t wd = { grp, oc / grp, W->dims[1], W->dims[2], W->dims[3] };
		st = first_failure(st, dnnl_memory_desc_init_by_tag(&uw_md, 5, wd, dnnl_f32, dnnl_goihw));
		st = first_failure(st, dnnl_memory_desc_init_by_tag(&w_md, 5, wd, e->dt, dnnl_format_tag_any));
	} else {
		st = first_failure(st, md_plain(&uw_md, 4, W->dims, dnnl_f32));
		st = first_failure(st, md_any(&w_md, 4, W->dims, e->dt));
	}
	const int64_t *s = nd->attr.conv.stride, *d = nd->attr.conv.dilation, *p = nd->attr.conv.pad;
	dnnl_dims_t strides = { s[0], s[1] }, dil = { d[0] - 1, d[1] - 1 }, pl = { p[0], p[1] };
	dnnl_dims_t pr = { pad_r(X->dims[2], Y->dims[2], W->dims[2], s[0], d[0], p[0], p[2]),
			   pad_r(X->dims[3], Y->dims[3], W->dims[3], s[1], d[1], p[1], p[3]) };
	/* oneDNN's own choice (src any) unless the producer's layout gets the
	 * same implementation: then consecutive convs never reorder between
	 * them. Where the choices differ, the producer's layout has only a
	 * weaker kernel (NHWC grouped convs are ref:any in oneDNN 2.6.3, blocked
	 * 1x1 convs avx2) and a reorder is cheaper than running it. */
	const value *vx = V(b, b->tv[x]);
	dnnl_primitive_desc_t mine = NULL;
	dnnl_convolution_desc_t desc;
	st = first_failure(st, dnnl_dilated_convolution_forward_desc_init(&desc, dnnl_forward_inference,
									  dnnl_convolution_direct, &any_md, &w_md,
									  &b_md, &dst_md, strides, dil, pl, pr));
	if (st != dnnl_success) {
		rc = fail(b, FC_ERR_UNSUPPORTED, "node '%s' (Conv): onednn rejects its shapes (%s)", nd->name,
			  dnnl_status_name(st));
		goto out;
	}
	if ((rc = create_pd(b, i, &pd, &desc, attr)))
		goto out;
	dnnl_memory_desc_t any_src = query_md(pd, dnnl_query_src_md);
	if (!vx->fixed && !dnnl_memory_desc_equal(&any_src, &vx->md) &&
	    dnnl_dilated_convolution_forward_desc_init(&desc, dnnl_forward_inference, dnnl_convolution_direct, &vx->md,
						       &w_md, &b_md, &dst_md, strides, dil, pl, pr) == dnnl_success &&
	    dnnl_primitive_desc_create(&mine, &desc, attr, e->eng, NULL) == dnnl_success) {
		if (strcmp(impl_of(mine), impl_of(pd)) == 0) {
			dnnl_primitive_desc_destroy(pd);
			pd = mine;
		} else {
			dnnl_primitive_desc_destroy(mine);
		}
	}
	dnnl_memory_desc_t src_q = query_md(pd, dnnl_query_src_md), w_q = query_md(pd, dnnl_query_weights_md);
	dnnl_memory_desc_t dst_q = query_md(pd, dnnl_query_dst_md);
	dnnl_memory_t mw, mb;
	int src = want(b, i, b->tv[x], &src_q), dst;
	if (src < 0) {
		rc = src;
		goto out;
	}
	rc = const_mem(b, &mw, &uw_md, w, &w_q);
	w = NULL; /* const_mem's now */
	if (rc || (rc = mem(b, &mb, &b_md, bias)))
		goto out;
	if (res >= 0) {
		/* dst must hold the residual, in dst's own layout, before the conv runs */
		int r = want(b, i, b->tv[res], &dst_q);
		if (r < 0) {
			rc = r;
			goto out;
		}
		if (residual_in_place(b, i, add, r, src)) {
			dst = alias_value(b, r, &dst_q);
		} else if ((dst = new_value(b, &dst_q, NULL)) >= 0) {
			rc = reorder_step(b, i, r, dst, "Copy");
		}
	} else {
		dst = new_value(b, &dst_q, NULL);
	}
	if (dst < 0 || rc) {
		rc = rc ? rc : dst;
		goto out;
	}
	bind_tensor(b, cur, dst);
	if ((rc = new_step(b, i, ST_PRIM, 4)))
		goto out;
	arg(b, DNNL_ARG_SRC, src, NULL);
	arg(b, DNNL_ARG_WEIGHTS, -1, mw);
	arg(b, DNNL_ARG_BIAS, -1, mb);
	arg(b, DNNL_ARG_DST, dst, NULL);
	rc = finish_prim(b, pd, NULL);
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
static int elementwise_dst(build *b, int i, int src, const dnnl_memory_desc_t *md)
{
	if (writable_after(b, src, i) && dnnl_memory_desc_equal(&V(b, src)->md, md))
		return alias_value(b, src, md);
	return new_value(b, md, NULL);
}

/* A pooling step over value src: kernel k, strides s, dilation d (oneDNN's,
 * 0-based), pads pl/pr, to an output of dims yd. Returns the output value. */
static int pool_step(build *b, int i, int src, dnnl_alg_kind_t alg, const int64_t *yd, const dnnl_dim_t *k,
		     const dnnl_dim_t *s, const dnnl_dim_t *d, const dnnl_dim_t *pl, const dnnl_dim_t *pr,
		     const char *op)
{
	const fc_model_node *nd = &b->g->nodes[i];
	dnnl_memory_desc_t dmd, smd = V(b, src)->md, nhwc;
	dnnl_pooling_v2_desc_t desc;
	dnnl_primitive_desc_t pd, p1;
	if (md_any(&dmd, 4, yd, smd.data_type) ||
	    dnnl_pooling_v2_forward_desc_init(&desc, dnnl_forward_inference, alg, &smd, &dmd, s, k, d, pl, pr))
		return fail(b, FC_ERR_UNSUPPORTED, "node '%s' (%s): onednn rejects its shapes", nd->name,
			    nd->op_type);
	int rc = create_pd(b, i, &pd, &desc, NULL);
	if (rc)
		return rc;
	/* Some pooling shapes have jit kernels in NHWC only (in blocked-by-8
	 * or plain layouts oneDNN 2.6.3 gives them ref:any): reorder to NHWC. */
	if (!strncmp(impl_of(pd), "ref", 3) &&
	    !dnnl_memory_desc_init_by_tag(&nhwc, 4, smd.dims, smd.data_type, dnnl_acdb) &&
	    !dnnl_pooling_v2_forward_desc_init(&desc, dnnl_forward_inference, alg, &nhwc, &dmd, s, k, d, pl, pr) &&
	    !dnnl_primitive_desc_create(&p1, &desc, NULL, b->e->eng, NULL)) {
		if (strncmp(impl_of(p1), "ref", 3) != 0 && (src = want(b, i, src, &nhwc)) >= 0) {
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
	dnnl_memory_desc_t q = query_md(pd, dnnl_query_dst_md);
	int y = new_value(b, &q, NULL);
	if (y < 0) {
		dnnl_primitive_desc_destroy(pd);
		return y;
	}
	rc = unary_step(b, i, pd, src, y, op);
	return rc ? rc : y;
}

static int build_pool(build *b, int i)
{
	const fc_model_graph *g = b->g;
	const fc_model_node *nd = &g->nodes[i];
	int x = nd->in[0], y = nd->out[0];
	const fc_model_tensor *X = &g->tensors[x];
	if (!is_act(b, x) || X->ndim != 4)
		return fail(b, FC_ERR_UNSUPPORTED, "node '%s' (%s): only 4-D input is supported", nd->name,
			    nd->op_type);
	int64_t H = X->dims[2], W = X->dims[3];
	int64_t yd[4] = { X->dims[0], X->dims[1], 1, 1 };
	dnnl_dims_t k = { H, W }, s = { 1, 1 }, d = { 0, 0 }, pl = { 0, 0 }, pr = { 0, 0 };
	dnnl_alg_kind_t alg = dnnl_pooling_avg_exclude_padding;
	if (nd->op == FC_OP_REDUCEMEAN) {
		/* A mean over H and/or W is an average pooling with that window. */
		uint32_t ax = nd->attr.reduce.axes;
		if (ax == 0 || (ax & ~0xCu))
			return fail(b, FC_ERR_UNSUPPORTED,
				    "node '%s' (ReduceMean): only means over spatial axes are supported", nd->name);
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
		pr[0] = pad_r(H, yd[2], ka[0], sa[0], da[0], pa[0], pa[2]);
		pr[1] = pad_r(W, yd[3], ka[1], sa[1], da[1], pa[1], pa[3]);
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
	if (Y->ndim != 4 && (v = view(b, i, v, Y->ndim, Y->dims)) < 0)
		return v;
	bind_tensor(b, y, v);
	return 0;
}

/* One eltwise step at node i: y = alg(src). Returns the output value. */
static int eltwise_step(build *b, int i, int src, dnnl_alg_kind_t alg, float al, float be)
{
	const fc_model_node *nd = &b->g->nodes[i];
	dnnl_memory_desc_t md = V(b, src)->md;
	dnnl_eltwise_desc_t desc;
	dnnl_primitive_desc_t pd;
	if (dnnl_eltwise_forward_desc_init(&desc, dnnl_forward_inference, alg, &md, al, be))
		return fail(b, FC_ERR_UNSUPPORTED, "node '%s' (%s): onednn rejects it", nd->name, nd->op_type);
	int rc = create_pd(b, i, &pd, &desc, NULL);
	if (rc)
		return rc;
	int y = elementwise_dst(b, i, src, &md);
	if (y < 0) {
		dnnl_primitive_desc_destroy(pd);
		return y;
	}
	rc = unary_step(b, i, pd, src, y, NULL);
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
		v = eltwise_step(b, i, v, alg[k], al[k], be[k]);
	if (v < 0)
		return v;
	bind_tensor(b, nd->out[0], v);
	return 0;
}

static int build_bn(build *b, int i)
{
	const fc_model_graph *g = b->g;
	const fc_model_node *nd = &g->nodes[i];
	int x = nd->in[0];
	const fc_model_tensor *X = &g->tensors[x];
	if (nd->n_in < 5 || X->ndim < 2)
		return fail(b, FC_ERR_UNSUPPORTED, "node '%s' (BatchNormalization): unsupported form", nd->name);
	for (int k = 1; k < 5; k++)
		if (!is_const(b, nd->in[k]) || g->tensors[nd->in[k]].numel != X->dims[1])
			return fail(b, FC_ERR_UNSUPPORTED,
				    "node '%s' (BatchNormalization): parameters must be constant, one per channel",
				    nd->name);
	int src = b->tv[x];
	dnnl_memory_desc_t md = V(b, src)->md, cmd;
	dnnl_batch_normalization_desc_t desc;
	dnnl_primitive_desc_t pd = NULL;
	int rc;
	if (md_plain(&cmd, 1, &X->dims[1], dnnl_f32) ||
	    dnnl_batch_normalization_forward_desc_init(&desc, dnnl_forward_inference, &md, nd->attr.bn.epsilon,
						       dnnl_use_global_stats | dnnl_use_scale | dnnl_use_shift))
		return fail(b, FC_ERR_UNSUPPORTED, "node '%s' (BatchNormalization): onednn rejects it", nd->name);
	if ((rc = create_pd(b, i, &pd, &desc, NULL)))
		return rc;
	int y = elementwise_dst(b, i, src, &md);
	if (y < 0 || (rc = new_step(b, i, ST_PRIM, 6))) {
		rc = y < 0 ? y : rc;
		goto out;
	}
	arg(b, DNNL_ARG_SRC, src, NULL);
	arg(b, DNNL_ARG_DST, y, NULL);
	static const int which[4] = { DNNL_ARG_SCALE, DNNL_ARG_SHIFT, DNNL_ARG_MEAN, DNNL_ARG_VARIANCE };
	for (int k = 0; k < 4; k++) {
		float *p = cst(b, nd->in[k + 1]);
		dnnl_memory_t m;
		if (!p) {
			rc = FC_ERR_NOMEM;
			goto out;
		}
		if ((rc = mem(b, &m, &cmd, p)))
			goto out;
		arg(b, which[k], -1, m);
	}
	bind_tensor(b, nd->out[0], y);
	rc = finish_prim(b, pd, NULL);
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
	if ((va = want_plain(b, i, va)) < 0 || (vc = want_plain(b, i, vc)) < 0)
		return va < 0 ? va : vc;
	if (md_plain(&md, Y->ndim, Y->dims, dnnl_f32))
		return FC_ERR_INTERNAL;
	if ((y = new_value(b, &md, NULL)) < 0)
		return y;
	if ((rc = new_step(b, i, ST_BINARY_C, 3)))
		return rc;
	step *sp = last_step(b);
	sp->op = nd->op;
	sp->ndim = Y->ndim;
	memcpy(sp->dims, Y->dims, (size_t)Y->ndim * sizeof da[0]);
	memcpy(sp->sdims[0], da, (size_t)Y->ndim * sizeof da[0]);
	memcpy(sp->sdims[1], dc, (size_t)Y->ndim * sizeof da[0]);
	sp->val[0] = va, sp->val[1] = vc, sp->val[2] = y, sp->nval = 3;
	bind_tensor(b, nd->out[0], y);
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
	    (!is_act(b, a) && !is_const(b, a)) || (!is_act(b, c) && !is_const(b, c)))
		return fail(b, FC_ERR_UNSUPPORTED, "node '%s' (%s): unsupported operands", nd->name, nd->op_type);
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
	int va = operand(b, a, r), vc = operand(b, c, r);
	if (va < 0 || vc < 0)
		return va < 0 ? va : vc;
	/* oneDNN wants operands of the same rank, and src0 of dst's shape. */
	if (V(b, va)->md.ndims != r && (va = view(b, i, va, r, da)) < 0)
		return va;
	if (V(b, vc)->md.ndims != r && (vc = view(b, i, vc, r, dc)) < 0)
		return vc;
	if (!full_a)
		return binary_c_step(b, i, va, vc, da, dc);
	if (full_c && (vc = want(b, i, vc, &V(b, va)->md)) < 0)
		return vc;
	dnnl_alg_kind_t alg = nd->op == FC_OP_ADD ? dnnl_binary_add
			      : nd->op == FC_OP_SUB ? dnnl_binary_sub
			      : nd->op == FC_OP_MUL ? dnnl_binary_mul
						    : dnnl_binary_div;
	dnnl_memory_desc_t ma = V(b, va)->md, mc = V(b, vc)->md;
	dnnl_primitive_desc_t pd = NULL;
	int rc, y;
	if (binary_pd(b, alg, &ma, &mc, &pd) < 0)
		return fail(b, FC_ERR_UNSUPPORTED, "node '%s' (%s): onednn rejects it", nd->name, nd->op_type);
	if (!full_c && r == 4 && !strncmp(impl_of(pd), "ref", 3)) {
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
				if ((found = strncmp(impl_of(p1), "ref", 3) != 0)) {
					dnnl_primitive_desc_destroy(pd);
					pd = p1;
				} else {
					dnnl_primitive_desc_destroy(p1);
				}
			}
		}
		if (found && ((va = want(b, i, va, &m0)) < 0 || (vc = want(b, i, vc, &m1)) < 0)) {
			rc = va < 0 ? va : vc;
			goto out;
		}
		ma = m0;
	}
	if (!same_buffer(b, va, vc))
		y = elementwise_dst(b, i, va, &ma);
	else
		y = new_value(b, &ma, NULL);
	if (y < 0 || (rc = new_step(b, i, ST_PRIM, 3))) {
		rc = y < 0 ? y : rc;
		goto out;
	}
	arg(b, DNNL_ARG_SRC_0, va, NULL);
	arg(b, DNNL_ARG_SRC_1, vc, NULL);
	arg(b, DNNL_ARG_DST, y, NULL);
	bind_tensor(b, nd->out[0], y);
	rc = finish_prim(b, pd, NULL);
out:
	dnnl_primitive_desc_destroy(pd);
	return rc;
}

/* Gemm (A act M x K, B const, C const) and MatMul (A act ... x K, B const K x N). */
static int build_matmul(build *b, int i)
{
	const fc_model_graph *g = b->g;
	const fc_model_node *nd = &g->nodes[i];
	fc_engine *e = b->e;
	int a = nd->in[0], w = nd->n_in > 1 ? nd->in[1] : -1, c = nd->n_in > 2 ? nd->in[2] : -1, y = nd->out[0];
	int gemm = nd->op == FC_OP_GEMM;
	if (!is_act(b, a) || !is_const(b, w) || g->tensors[w].ndim != 2 || (c >= 0 && !is_const(b, c)) ||
	    (gemm && nd->attr.gemm.trans_a) || g->tensors[a].ndim < 1)
		return fail(b, FC_ERR_UNSUPPORTED, "node '%s' (%s): only activation x constant weights", nd->name,
			    nd->op_type);
	const fc_model_tensor *A = &g->tensors[a], *B = &g->tensors[w], *Y = &g->tensors[y];
	int tb = gemm && nd->attr.gemm.trans_b;
	int64_t K = tb ? B->dims[1] : B->dims[0], N = tb ? B->dims[0] : B->dims[1];
	int64_t M = A->numel / K;
	if (A->dims[A->ndim - 1] != K || M * K != A->numel || Y->numel != M * N)
		return fail(b, FC_ERR_UNSUPPORTED, "node '%s' (%s): shapes do not fit", nd->name, nd->op_type);
	float *wp, *bias = NULL;
	if (c >= 0) {
		const fc_model_tensor *Ct = &g->tensors[c];
		if (Ct->numel != N && Ct->numel != 1)
			return fail(b, FC_ERR_UNSUPPORTED, "node '%s' (Gemm): bias must be per output", nd->name);
		if (!(bias = balloc(e, (size_t)N * sizeof *bias)))
			return FC_ERR_NOMEM;
		for (int64_t k = 0; k < N; k++)
			bias[k] = Ct->f32[Ct->numel == 1 ? 0 : k] * (gemm ? nd->attr.gemm.beta : 1.0f);
	}
	dnnl_dims_t ad = { M, K }, wd = { K, N }, bd = { 1, N }, yd = { M, N };
	int src = view(b, i, b->tv[a], 2, ad), rc;
	if (src < 0)
		return src;
	dnnl_memory_desc_t ma = V(b, src)->md, mw, uw, mb, my;
	dnnl_dims_t ws = { tb ? 1 : N, tb ? K : 1 };
	dnnl_matmul_desc_t desc;
	dnnl_primitive_desc_t pd = NULL;
	if (md_any(&mw, 2, wd, e->dt) || dnnl_memory_desc_init_by_strides(&uw, 2, wd, dnnl_f32, ws) ||
	    md_plain(&mb, 2, bd, dnnl_f32) || md_any(&my, 2, yd, e->dt) ||
	    dnnl_matmul_desc_init(&desc, &ma, &mw, bias ? &mb : NULL, &my))
		return fail(b, FC_ERR_UNSUPPORTED, "node '%s' (%s): onednn rejects its shapes", nd->name,
			    nd->op_type);
	if ((rc = create_pd(b, i, &pd, &desc, NULL)))
		return rc;
	dnnl_memory_desc_t w_q = query_md(pd, dnnl_query_weights_md), y_q = query_md(pd, dnnl_query_dst_md);
	dnnl_memory_t m1, m2 = NULL;
	int out = new_value(b, &y_q, NULL);
	if (out < 0 || !(wp = cst_copy(b, w))) {
		rc = out < 0 ? out : FC_ERR_NOMEM;
		goto out;
	}
	if (gemm && nd->attr.gemm.alpha != 1.0f)
		for (int64_t k = 0; k < B->numel; k++)
			wp[k] *= nd->attr.gemm.alpha;
	if ((rc = const_mem(b, &m1, &uw, wp, &w_q)) || (bias && (rc = mem(b, &m2, &mb, bias))) ||
	    (rc = new_step(b, i, ST_PRIM, 4)))
		goto out;
	arg(b, DNNL_ARG_SRC, src, NULL);
	arg(b, DNNL_ARG_WEIGHTS, -1, m1);
	if (bias)
		arg(b, DNNL_ARG_BIAS, -1, m2);
	arg(b, DNNL_ARG_DST, out, NULL);
	if ((rc = finish_prim(b, pd, NULL)))
		goto out;
	if (Y->ndim != 2 && (out = view(b, i, out, Y->ndim, Y->dims)) < 0) {
		rc = out;
		goto out;
	}
	bind_tensor(b, y, out);
out:
	dnnl_primitive_desc_destroy(pd);
	return rc;
}

static int build_concat(build *b, int i)
{
	const fc_model_graph *g = b->g;
	const fc_model_node *nd = &g->nodes[i];
	const fc_model_tensor *Y = &g->tensors[nd->out[0]];
	int n = nd->n_in, rc = 0, y = -1;
	int *src = calloc((size_t)n, sizeof *src);
	dnnl_memory_desc_t *mds = calloc((size_t)n, sizeof *mds);
	dnnl_primitive_desc_t pd = NULL;
	if (!src || !mds) {
		rc = FC_ERR_NOMEM;
		goto out;
	}
	for (int k = 0; k < n; k++) {
		int t = nd->in[k];
		if (t < 0 || (!is_act(b, t) && !is_const(b, t)) || g->tensors[t].ndim != Y->ndim) {
			rc = fail(b, FC_ERR_UNSUPPORTED, "node '%s' (Concat): unsupported input", nd->name);
			goto out;
		}
		if ((src[k] = operand(b, t, Y->ndim)) < 0) {
			rc = src[k];
			goto out;
		}
		/* Sources of another data type (a constant, a C step's f32) join
		 * in plain layout and the engine's type. */
		if (V(b, src[k])->md.data_type != b->e->dt) {
			dnnl_memory_desc_t p;
			const fc_model_tensor *T = &g->tensors[t];
			if (md_plain(&p, T->ndim, T->dims, b->e->dt) || (src[k] = want(b, i, src[k], &p)) < 0) {
				rc = src[k] < 0 ? src[k] : FC_ERR_INTERNAL;
				goto out;
			}
		}
		mds[k] = V(b, src[k])->md;
	}
	if (dnnl_concat_primitive_desc_create(&pd, NULL, n, nd->attr.axis.axis, mds, NULL, b->e->eng)) {
		pd = NULL;
		rc = fail(b, FC_ERR_UNSUPPORTED, "node '%s' (Concat): onednn rejects it", nd->name);
		goto out;
	}
	dnnl_memory_desc_t q = query_md(pd, dnnl_query_dst_md);
	if ((y = new_value(b, &q, NULL)) < 0 || (rc = new_step(b, i, ST_PRIM, n + 1))) {
		rc = y < 0 ? y : rc;
		goto out;
	}
	for (int k = 0; k < n; k++)
		arg(b, DNNL_ARG_MULTIPLE_SRC + k, src[k], NULL);
	arg(b, DNNL_ARG_DST, y, NULL);
	bind_tensor(b, nd->out[0], y);
	rc = finish_prim(b, pd, NULL);
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
	if (!is_act(b, nd->in[0]) || X->ndim < 1)
		return fail(b, FC_ERR_UNSUPPORTED, "node '%s' (Pad): unsupported input", nd->name);
	int v = b->tv[nd->in[0]], y, rc;
	if (X->numel == Y->numel) { /* nothing to pad (torch emits these) */
		if ((y = alias_value(b, v, &V(b, v)->md)) < 0)
			return y;
		bind_tensor(b, nd->out[0], y);
		return 0;
	}
	dnnl_memory_desc_t md;
	if ((v = want_plain(b, i, v)) < 0)
		return v;
	if (md_plain(&md, Y->ndim, Y->dims, dnnl_f32) || (y = new_value(b, &md, NULL)) < 0)
		return FC_ERR_NOMEM;
	if ((rc = new_step(b, i, ST_PAD, 3)))
		return rc;
	step *sp = last_step(b);
	sp->ndim = X->ndim;
	for (int k = 0; k < X->ndim; k++) {
		sp->dims[k] = Y->dims[k];
		sp->sdims[0][k] = X->dims[k];
		sp->sdims[1][k] = nd->attr.pad.begin[k];
	}
	sp->alpha = nd->attr.pad.value;
	sp->val[0] = v, sp->val[1] = -1, sp->val[2] = y, sp->nval = 3;
	bind_tensor(b, nd->out[0], y);
	return 0;
}

/* LpNormalization (p = 2, last axis: model_infer.c refuses others): a C
 * step over the plain layout, each row divided by its L2 norm exactly as
 * featcache's head normalises (fci_l2_normalize_rows). */
static int build_lpnorm(build *b, int i)
{
	const fc_model_graph *g = b->g;
	const fc_model_node *nd = &g->nodes[i];
	const fc_model_tensor *X = &g->tensors[nd->in[0]];
	if (!is_act(b, nd->in[0]))
		return fail(b, FC_ERR_UNSUPPORTED, "node '%s' (LpNormalization): unsupported input", nd->name);
	int v = b->tv[nd->in[0]], y, rc;
	dnnl_memory_desc_t md;
	if ((v = want_plain(b, i, v)) < 0)
		return v;
	if (md_plain(&md, X->ndim, X->dims, dnnl_f32) || (y = new_value(b, &md, NULL)) < 0)
		return FC_ERR_NOMEM;
	if ((rc = new_step(b, i, ST_LPNORM, 3)))
		return rc;
	step *sp = last_step(b);
	sp->ndim = 2;
	sp->dims[1] = X->dims[X->ndim - 1];
	sp->dims[0] = sp->dims[1] ? X->numel / sp->dims[1] : 0;
	sp->val[0] = v, sp->val[1] = -1, sp->val[2] = y, sp->nval = 3;
	bind_tensor(b, nd->out[0], y);
	return 0;
}

static int build_node(build *b, int i)
{
	const fc_model_node *nd = &b->g->nodes[i];
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
	case FC_OP_CONCAT:
		return build_concat(b, i);
	case FC_OP_FLATTEN:
	case FC_OP_RESHAPE:
	case FC_OP_SQUEEZE:
	case FC_OP_UNSQUEEZE: {
		const fc_model_tensor *Y = &b->g->tensors[nd->out[0]];
		if (!is_act(b, nd->in[0]))
			return fail(b, FC_ERR_UNSUPPORTED, "node '%s' (%s): unsupported input", nd->name,
				    nd->op_type);
		int v = view(b, i, b->tv[nd->in[0]], Y->ndim, Y->dims);
		if (v < 0)
			return v;
		bind_tensor(b, nd->out[0], v);
		return 0;
	}
	case FC_OP_GEMM:
	case FC_OP_MATMUL:
		return build_matmul(b, i);
	}
	return fail(b, FC_ERR_UNSUPPORTED, "node '%s': op %s is not supported by the engine", nd->name,
		    nd->op_type);
}

/* The edges: the cut (global-average-pooled when 4-D) into the f32 output. */
static int build_output(build *b)
{
	const fc_model_graph *g = b->g;
	fc_engine *e = b->e;
	const fc_model_tensor *T = &g->tensors[g->cut_tensor];
	int node = g->cut_node, v = b->tv[g->cut_tensor], y;
	int64_t od[2] = { e->batch, (int64_t)e->dim };
	dnnl_memory_desc_t md;
	if (g->pool) {
		int64_t yd[4] = { T->dims[0], T->dims[1], 1, 1 };
		dnnl_dims_t k = { T->dims[2], T->dims[3] }, one = { 1, 1 }, zero = { 0, 0 };
		if ((v = pool_step(b, node, v, dnnl_pooling_avg_exclude_padding, yd, k, one, zero, zero, zero,
				   "GlobalAveragePool")) < 0)
			return v;
	}
	if ((v = view(b, node, v, 2, od)) < 0)
		return v;
	if (md_plain(&md, 2, od, dnnl_f32) || (y = new_value(b, &md, e->out_buf)) < 0)
		return FC_ERR_NOMEM;
	return reorder_step(b, node, v, y, "OutputReorder");
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

static const char *isa_name(dnnl_cpu_isa_t isa)
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
		return fail(b, FC_ERR_INTERNAL, "cannot create the onednn cpu engine");
	e->dt = opts->precision == FC_PREC_BF16 ? dnnl_bf16 : dnnl_f32;
	const fc_model_tensor *I = &g->tensors[g->input];
	e->batch = I->dims[0], e->c = I->dims[1], e->h = I->dims[2], e->w = I->dims[3];
	e->dim = (size_t)g->embed_dim;
	if (!(e->in_buf = balloc(e, (size_t)I->numel * sizeof *e->in_buf)) ||
	    !(e->out_buf = balloc(e, (size_t)e->batch * e->dim * sizeof *e->out_buf)))
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
	b->uses[g->cut_tensor]++;
	dnnl_memory_desc_t imd;
	int in;
	if (md_plain(&imd, 4, I->dims, dnnl_f32) || (in = new_value(b, &imd, e->in_buf)) < 0)
		return FC_ERR_NOMEM;
	bind_tensor(b, g->input, in);
	for (int i = 0; i < g->n_nodes; i++)
		if (runs(b, i) && (rc = build_node(b, i)))
			return rc;
	if ((rc = build_output(b)) || (rc = plan(e)))
		return rc;
	return 0;
}

int fc_engine_open(fc_engine **out, fc_model *model, const fc_engine_opts *opts, char *err, size_t errcap)
{
	build bb = { .err = err, .errcap = errcap };
	build *b = &bb;
	fc_engine *e = NULL;
	int rc;

	if (err && errcap)
		err[0] = '\0';
	if (!out)
		return fail(b, FC_ERR_INVALID, "no output pointer");
	*out = NULL;
	if (!model || !opts || opts->batch < 1 || opts->threads < 0)
		return fail(b, FC_ERR_INVALID, "missing model or options, batch < 1 or threads < 0");
	if (opts->precision != FC_PREC_F32 && opts->precision != FC_PREC_BF16)
		return fail(b, FC_ERR_INVALID, "unknown precision %d", opts->precision);
	if (opts->precision == FC_PREC_BF16 && !native_bf16(dnnl_get_effective_cpu_isa()))
		return fail(b, FC_ERR_UNSUPPORTED,
			    "bf16 needs a cpu with native bf16 (avx512_bf16 or amx); onednn reports %s, where bf16 "
			    "would be slower than f32: use f32",
			    isa_name(dnnl_get_effective_cpu_isa()));
	const fc_model_graph *g = fc_model_get_graph(model);
	if (g->cut_tensor < 0)
		return fail(b, FC_ERR_INVALID, "the model has no cut layer");
	if (g->tensors[g->input].ndim != 4)
		return fail(b, FC_ERR_INVALID, "the model's input is not 4-D");
	if ((rc = fc_model_set_input(model, opts->batch, 0, 0, 0)))
		return fail(b, rc, "cannot set batch %d: %s", opts->batch, fc_model_errmsg(model));
	g = fc_model_get_graph(model);
	if (g->cut_tensor < 0)
		return fail(b, FC_ERR_INVALID, "the model has no cut layer");
	b->g = g;
	if (opts->threads > 0)
		omp_set_num_threads(opts->threads);
	if (!(e = calloc(1, sizeof *e)))
		return fail(b, FC_ERR_NOMEM, "out of memory");
	e->threads = opts->threads;
	b->e = e;
	rc = build_all(b, opts);
	if (rc == FC_ERR_NOMEM)
		fail(b, rc, "out of memory");
	else if (rc == FC_ERR_INTERNAL && err && errcap && !err[0])
		fail(b, rc, "onednn failed while building the engine");
	free(b->uses);
	free(b->consumer);
	free(b->tv);
	free(b->skip);
	if (rc) {
		fc_engine_free(e);
		return rc;
	}
	*out = e;
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

static int run_step(fc_engine *e, const step *s)
{
	switch (s->kind) {
	case ST_PRIM:
		return dnnl_primitive_execute(s->prim, e->stream, s->nargs, s->cargs ? s->cargs : s->args) !=
		       dnnl_success;
	case ST_PAD:
	case ST_BINARY_C:
	case ST_LPNORM:
		/* the C loops read what earlier primitives wrote */
		if (dnnl_stream_wait(e->stream) != dnnl_success)
			return 1;
		if (s->kind == ST_PAD)
			pad_c(e, s);
		else if (s->kind == ST_LPNORM)
			lpnorm_c(e, s);
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
	if (e->threads > 0 && omp_get_max_threads() != e->threads)
		omp_set_num_threads(e->threads);
	size_t img = (size_t)(e->c * e->h * e->w);
	memcpy(e->in_buf, in, n * img * sizeof *in);
	if (n < (size_t)e->batch)
		memset(e->in_buf + n * img, 0, ((size_t)e->batch - n) * img * sizeof *in);
	for (int i = 0; i < e->n_steps; i++)
		if (run_step(e, &e->steps[i])) {
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
	for (int i = 0; i < e->n_blocks; i++)
		free(e->blocks[i]);
	free(e->blocks);
	free(e->arena);
	if (e->stream)
		dnnl_stream_destroy(e->stream);
	if (e->eng)
		dnnl_engine_destroy(e->eng);
	free(e);
}
