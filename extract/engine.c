/*
 * engine.c - builds oneDNN primitives from a cut model graph (model.h) and
 * runs them: Conv with folded BN and fused eltwise/sum post-ops, pooling,
 * standalone BN and eltwise, binary ops, matmul; Concat, Pad, HardSigmoid
 * and the broadcasts oneDNN's binary cannot express are plain C loops.
 *
 * What it is not (yet): a memory planner or a layout optimizer. Every
 * activation is a plain row-major f32 buffer of its own; `format_tag any`
 * with reorders at the edges and buffer reuse are the next steps.
 */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dnnl.h>

#include "featcache/engine.h"

enum step_kind { ST_PRIM = 0, ST_CONCAT, ST_PAD, ST_BINARY_C, ST_HSIG };

typedef struct step {
	int kind;
	int node;
	dnnl_primitive_t prim;
	int nargs;
	dnnl_exec_arg_t args[8];
	/* ST_PRIM with a sum post-op: dst is filled with the residual first */
	float *pre_dst;
	const float *pre_src;
	size_t pre_n;
	/* C steps */
	float *dst;
	const float *src[2];
	int ndim;
	int64_t dims[FC_MODEL_MAX_DIMS];    /* output dims */
	int64_t sdims[2][FC_MODEL_MAX_DIMS]; /* inputs, padded to ndim (Concat: in[0..n) via cin) */
	int op;
	float alpha, beta;
	int n_cat;
	const float **cat_src;
	int64_t *cat_len; /* Concat: per input, elements per outer index */
	int64_t outer;
} step;

struct fc_engine {
	dnnl_engine_t eng;
	dnnl_stream_t stream;
	step *steps;
	int n_steps;
	dnnl_memory_t *mems;
	int n_mems, cap_mems;
	void **blocks; /* malloc'd buffers to free */
	int n_blocks, cap_blocks;
	char **infos;
	int n_prims;
	float **buf; /* per tensor */
	float *in_buf;
	int64_t batch, c, h, w;
	float *cut;
	int pool;
	int64_t cut_hw;
	size_t dim;
	char errmsg[FC_ENGINE_ERRLEN];
};

typedef struct build {
	fc_engine *e;
	const fc_model_graph *g;
	int *uses;     /* per tensor: uses by needed nodes (+1 for the cut) */
	int *consumer; /* per tensor: the last needed node using it */
	char *skip;    /* per node: fused into an earlier step */
	char *err;
	size_t errcap;
} build;

static int fail(build *b, int code, const char *fmt, ...)
{
	if (b->err && b->errcap) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(b->err, b->errcap, fmt, ap);
		va_end(ap);
	}
	return code;
}

static void *keep(fc_engine *e, void *p)
{
	if (!p)
		return NULL;
	if (e->n_blocks == e->cap_blocks) {
		int cap = e->cap_blocks ? 2 * e->cap_blocks : 64;
		void **v = realloc(e->blocks, (size_t)cap * sizeof *v);
		if (!v) {
			free(p);
			return NULL;
		}
		e->blocks = v;
		e->cap_blocks = cap;
	}
	e->blocks[e->n_blocks++] = p;
	return p;
}

static float *falloc(fc_engine *e, int64_t n)
{
	if (n < 1)
		n = 1;
	return keep(e, calloc((size_t)n, sizeof(float)));
}

/* The activation buffer of tensor t, allocated on first use. */
static float *act(build *b, int t)
{
	fc_engine *e = b->e;
	if (!e->buf[t])
		e->buf[t] = falloc(e, b->g->tensors[t].numel);
	return e->buf[t];
}

/* A private copy of constant tensor t. */
static float *cst(build *b, int t)
{
	const fc_model_tensor *x = &b->g->tensors[t];
	float *p = falloc(b->e, x->numel);
	if (p && x->numel)
		memcpy(p, x->f32, (size_t)x->numel * sizeof *p);
	return p;
}

static int is_const(const build *b, int t)
{
	return t >= 0 && b->g->tensors[t].kind == FC_TENSOR_CONST && b->g->tensors[t].elem == FC_ELEM_F32;
}

static int is_act(const build *b, int t)
{
	return t >= 0 && (b->g->tensors[t].kind == FC_TENSOR_ACT || b->g->tensors[t].kind == FC_TENSOR_INPUT);
}

static int mem(build *b, dnnl_memory_t *m, const dnnl_memory_desc_t *md, void *data)
{
	fc_engine *e = b->e;
	if (e->n_mems == e->cap_mems) {
		int cap = e->cap_mems ? 2 * e->cap_mems : 64;
		dnnl_memory_t *v = realloc(e->mems, (size_t)cap * sizeof *v);
		if (!v)
			return FC_ERR_NOMEM;
		e->mems = v;
		e->cap_mems = cap;
	}
	if (dnnl_memory_create(m, md, e->eng, data) != dnnl_success)
		return FC_ERR_INTERNAL;
	e->mems[e->n_mems++] = *m;
	return 0;
}

/* Row-major memory descriptor of the given dims (rank 0 as {1}). */
static dnnl_status_t md_plain(dnnl_memory_desc_t *md, int ndim, const int64_t *dims)
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
	return dnnl_memory_desc_init_by_strides(md, ndim, d, dnnl_f32, s);
}

static step *new_step(build *b, int node, int kind)
{
	fc_engine *e = b->e;
	step *v = realloc(e->steps, (size_t)(e->n_steps + 1) * sizeof *v);
	if (!v)
		return NULL;
	e->steps = v;
	step *s = &v[e->n_steps++];
	memset(s, 0, sizeof *s);
	s->node = node;
	s->kind = kind;
	return s;
}

static void arg(step *s, int a, dnnl_memory_t m)
{
	s->args[s->nargs].arg = a;
	s->args[s->nargs].memory = m;
	s->nargs++;
}

/* Create the primitive of pd for step s, recording its implementation. */
static int finish_prim(build *b, step *s, const_dnnl_primitive_desc_t pd)
{
	fc_engine *e = b->e;
	const fc_model_node *nd = &b->g->nodes[s->node];
	const char *impl = NULL;
	if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || !impl)
		impl = "?";
	char **v = realloc(e->infos, (size_t)(e->n_prims + 1) * sizeof *v);
	if (!v)
		return FC_ERR_NOMEM;
	e->infos = v;
	size_t len = strlen(nd->name) + strlen(nd->op_type) + strlen(impl) + 8;
	char *info = malloc(len);
	if (!info)
		return FC_ERR_NOMEM;
	snprintf(info, len, "%s %s: %s", nd->name, nd->op_type, impl);
	e->infos[e->n_prims++] = info;
	if (dnnl_primitive_create(&s->prim, pd) != dnnl_success)
		return fail(b, FC_ERR_INTERNAL, "node '%s' (%s): onednn cannot create the primitive", nd->name,
			    nd->op_type);
	return 0;
}

static int create_pd(build *b, int node, dnnl_primitive_desc_t *pd, const void *desc,
		     const_dnnl_primitive_attr_t attr)
{
	dnnl_status_t st = dnnl_primitive_desc_create(pd, desc, attr, b->e->eng, NULL);
	if (st != dnnl_success) {
		*pd = NULL;
		return fail(b, FC_ERR_INTERNAL, "node '%s' (%s): onednn refused the primitive (status %d)",
			    b->g->nodes[node].name, b->g->nodes[node].op_type, (int)st);
	}
	return 0;
}

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
	float *w = cst(b, wt), *bias = falloc(e, oc);
	if (!w || !bias)
		return FC_ERR_NOMEM;
	if (bt >= 0)
		memcpy(bias, g->tensors[bt].f32, (size_t)oc * sizeof *bias);

	int cur = nd->out[0];
	/* Fold a BatchNormalization that alone consumes the conv output. */
	if (b->uses[cur] == 1) {
		int j = b->consumer[cur];
		const fc_model_node *bn = &g->nodes[j];
		if (bn->op == FC_OP_BATCHNORM && bn->in[0] == cur && bn->n_in >= 5 && is_const(b, bn->in[1]) &&
		    is_const(b, bn->in[2]) && is_const(b, bn->in[3]) && is_const(b, bn->in[4])) {
			const float *sc = g->tensors[bn->in[1]].f32, *sh = g->tensors[bn->in[2]].f32;
			const float *mu = g->tensors[bn->in[3]].f32, *var = g->tensors[bn->in[4]].f32;
			int64_t per = W->numel / oc;
			for (int64_t o = 0; o < oc; o++) {
				double f = sc[o] / sqrt((double)var[o] + bn->attr.bn.epsilon);
				for (int64_t k = 0; k < per; k++)
					w[o * per + k] = (float)(w[o * per + k] * f);
				bias[o] = (float)((bias[o] - mu[o]) * f + sh[o]);
			}
			b->skip[j] = 1;
			cur = bn->out[0];
		}
	}
	if (dnnl_primitive_attr_create(&attr) || dnnl_post_ops_create(&po)) {
		rc = FC_ERR_NOMEM;
		goto out;
	}
	int have_sum = 0, res = -1;
	while (b->uses[cur] == 1) {
		int j = b->consumer[cur];
		const fc_model_node *c = &g->nodes[j];
		dnnl_alg_kind_t alg[2];
		float al[2], be[2];
		int n = is_eltwise(c->op) ? eltwise_of(c, alg, al, be) : 0;
		if (n > 0 && c->in[0] == cur) {
			for (int k = 0; k < n; k++)
				if (dnnl_post_ops_append_eltwise(po, 1.0f, alg[k], al[k], be[k])) {
					rc = fail(b, FC_ERR_INTERNAL, "node '%s': cannot append a post-op", c->name);
					goto out;
				}
		} else if (c->op == FC_OP_ADD && !have_sum && c->n_in == 2) {
			int other = c->in[0] == cur ? c->in[1] : c->in[0];
			const fc_model_tensor *O = other >= 0 ? &g->tensors[other] : NULL;
			const fc_model_tensor *C = &g->tensors[cur];
			if (!is_act(b, other) || other == cur || O->ndim != 4 ||
			    memcmp(O->dims, C->dims, 4 * sizeof C->dims[0]) != 0 ||
			    (O->producer >= i))
				break;
			if (dnnl_post_ops_append_sum(po, 1.0f)) {
				rc = fail(b, FC_ERR_INTERNAL, "node '%s': cannot append a sum post-op", c->name);
				goto out;
			}
			have_sum = 1;
			res = other;
		} else {
			break;
		}
		b->skip[j] = 1;
		cur = c->out[0];
	}
	if (dnnl_primitive_attr_set_post_ops(attr, po)) {
		rc = FC_ERR_INTERNAL;
		goto out;
	}

	const fc_model_tensor *Y = &g->tensors[cur];
	int64_t grp = nd->attr.conv.group;
	dnnl_memory_desc_t src_md, w_md, b_md, dst_md;
	dnnl_dims_t xd = { X->dims[0], X->dims[1], X->dims[2], X->dims[3] };
	dnnl_dims_t yd = { Y->dims[0], Y->dims[1], Y->dims[2], Y->dims[3] };
	dnnl_dims_t bd = { oc };
	dnnl_status_t st = dnnl_memory_desc_init_by_tag(&src_md, 4, xd, dnnl_f32, dnnl_nchw);
	st |= dnnl_memory_desc_init_by_tag(&dst_md, 4, yd, dnnl_f32, dnnl_nchw);
	st |= dnnl_memory_desc_init_by_tag(&b_md, 1, bd, dnnl_f32, dnnl_a);
	if (grp > 1) {
		dnnl_dims_t wd = { grp, oc / grp, W->dims[1], W->dims[2], W->dims[3] };
		st |= dnnl_memory_desc_init_by_tag(&w_md, 5, wd, dnnl_f32, dnnl_goihw);
	} else {
		dnnl_dims_t wd = { oc, W->dims[1], W->dims[2], W->dims[3] };
		st |= dnnl_memory_desc_init_by_tag(&w_md, 4, wd, dnnl_f32, dnnl_oihw);
	}
	const int64_t *s = nd->attr.conv.stride, *d = nd->attr.conv.dilation,
		      *p = nd->attr.conv.pad;
	dnnl_dims_t strides = { s[0], s[1] }, dil = { d[0] - 1, d[1] - 1 }, pl = { p[0], p[1] };
	dnnl_dims_t pr = { pad_r(X->dims[2], Y->dims[2], W->dims[2], s[0], d[0], p[0], p[2]),
			   pad_r(X->dims[3], Y->dims[3], W->dims[3], s[1], d[1], p[1], p[3]) };
	dnnl_convolution_desc_t desc;
	if (st != dnnl_success ||
	    dnnl_dilated_convolution_forward_desc_init(&desc, dnnl_forward_inference, dnnl_convolution_direct,
						       &src_md, &w_md, &b_md, &dst_md, strides, dil, pl,
						       pr) != dnnl_success) {
		rc = fail(b, FC_ERR_UNSUPPORTED, "node '%s' (Conv): onednn rejects its shapes", nd->name);
		goto out;
	}
	if ((rc = create_pd(b, i, &pd, &desc, attr)))
		goto out;
	step *sp = new_step(b, i, ST_PRIM);
	if (!sp) {
		rc = FC_ERR_NOMEM;
		goto out;
	}
	dnnl_memory_t ms, mw, mb, md;
	float *dst = act(b, cur), *src = act(b, x);
	if (!dst || !src) {
		rc = FC_ERR_NOMEM;
		goto out;
	}
	if ((rc = mem(b, &ms, &src_md, src)) || (rc = mem(b, &mw, &w_md, w)) || (rc = mem(b, &mb, &b_md, bias)) ||
	    (rc = mem(b, &md, &dst_md, dst)))
		goto out;
	arg(sp, DNNL_ARG_SRC, ms);
	arg(sp, DNNL_ARG_WEIGHTS, mw);
	arg(sp, DNNL_ARG_BIAS, mb);
	arg(sp, DNNL_ARG_DST, md);
	if (have_sum) {
		sp->pre_dst = dst;
		sp->pre_src = act(b, res);
		sp->pre_n = (size_t)Y->numel;
	}
	rc = finish_prim(b, sp, pd);
out:
	if (pd)
		dnnl_primitive_desc_destroy(pd);
	if (po)
		dnnl_post_ops_destroy(po);
	if (attr)
		dnnl_primitive_attr_destroy(attr);
	return rc;
}

/* One primitive with src/dst plain memories over activation buffers. */
static int simple_prim(build *b, int i, const void *desc, int x, const dnnl_memory_desc_t *smd, int y,
		       const dnnl_memory_desc_t *dmd, step **out)
{
	dnnl_primitive_desc_t pd = NULL;
	int rc = create_pd(b, i, &pd, desc, NULL);
	if (rc)
		return rc;
	step *sp = new_step(b, i, ST_PRIM);
	dnnl_memory_t ms, md;
	float *src = act(b, x), *dst = act(b, y);
	if (!sp || !src || !dst) {
		rc = FC_ERR_NOMEM;
		goto out;
	}
	if ((rc = mem(b, &ms, smd, src)) || (rc = mem(b, &md, dmd, dst)))
		goto out;
	arg(sp, DNNL_ARG_SRC, ms);
	arg(sp, DNNL_ARG_DST, md);
	rc = finish_prim(b, sp, pd);
	*out = sp;
out:
	dnnl_primitive_desc_destroy(pd);
	return rc;
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
	int64_t N = X->dims[0], C = X->dims[1], H = X->dims[2], W = X->dims[3];
	int64_t OH = 1, OW = 1;
	dnnl_dims_t k = { H, W }, s = { 1, 1 }, d = { 0, 0 }, pl = { 0, 0 }, pr = { 0, 0 };
	dnnl_alg_kind_t alg = dnnl_pooling_avg_exclude_padding;
	if (nd->op == FC_OP_REDUCEMEAN) {
		/* A mean over H and/or W is an average pooling with that window. */
		uint32_t ax = nd->attr.reduce.axes;
		if (ax == 0 || (ax & ~0xCu))
			return fail(b, FC_ERR_UNSUPPORTED,
				    "node '%s' (ReduceMean): only means over spatial axes are supported", nd->name);
		if (!(ax & 4))
			k[0] = 1, OH = H;
		if (!(ax & 8))
			k[1] = 1, OW = W;
	}
	if (nd->op == FC_OP_MAXPOOL || nd->op == FC_OP_AVGPOOL) {
		const fc_model_tensor *Y = &g->tensors[y];
		const int64_t *ka = nd->attr.pool.kernel, *sa = nd->attr.pool.stride, *da = nd->attr.pool.dilation,
			      *pa = nd->attr.pool.pad;
		OH = Y->dims[2], OW = Y->dims[3];
		k[0] = ka[0], k[1] = ka[1], s[0] = sa[0], s[1] = sa[1], d[0] = da[0] - 1, d[1] = da[1] - 1;
		pl[0] = pa[0], pl[1] = pa[1];
		pr[0] = pad_r(H, OH, ka[0], sa[0], da[0], pa[0], pa[2]);
		pr[1] = pad_r(W, OW, ka[1], sa[1], da[1], pa[1], pa[3]);
		if (nd->op == FC_OP_MAXPOOL)
			alg = dnnl_pooling_max;
		else if (nd->attr.pool.count_include_pad)
			alg = dnnl_pooling_avg_include_padding;
	}
	dnnl_memory_desc_t smd, dmd;
	dnnl_dims_t xd = { N, C, H, W }, yd = { N, C, OH, OW };
	dnnl_pooling_v2_desc_t desc;
	if (dnnl_memory_desc_init_by_tag(&smd, 4, xd, dnnl_f32, dnnl_nchw) ||
	    dnnl_memory_desc_init_by_tag(&dmd, 4, yd, dnnl_f32, dnnl_nchw) ||
	    dnnl_pooling_v2_forward_desc_init(&desc, dnnl_forward_inference, alg, &smd, &dmd, s, k, d, pl, pr))
		return fail(b, FC_ERR_UNSUPPORTED, "node '%s' (%s): onednn rejects its shapes", nd->name,
			    nd->op_type);
	step *sp;
	return simple_prim(b, i, &desc, x, &smd, y, &dmd, &sp);
}

static int build_eltwise(build *b, int i)
{
	const fc_model_graph *g = b->g;
	const fc_model_node *nd = &g->nodes[i];
	int x = nd->in[0], y = nd->out[0];
	const fc_model_tensor *X = &g->tensors[x];
	dnnl_alg_kind_t alg[2];
	float al[2], be[2];
	int n = eltwise_of(nd, alg, al, be);
	if (n == 2) { /* HardSigmoid: no single oneDNN algorithm */
		step *sp = new_step(b, i, ST_HSIG);
		if (!sp || !(sp->src[0] = act(b, x)) || !(sp->dst = act(b, y)))
			return FC_ERR_NOMEM;
		sp->alpha = al[0], sp->beta = be[0];
		sp->dims[0] = X->numel;
		return 0;
	}
	dnnl_memory_desc_t md;
	dnnl_eltwise_desc_t desc;
	if (md_plain(&md, X->ndim, X->dims) ||
	    dnnl_eltwise_forward_desc_init(&desc, dnnl_forward_inference, alg[0], &md, al[0], be[0]))
		return fail(b, FC_ERR_UNSUPPORTED, "node '%s' (%s): onednn rejects it", nd->name, nd->op_type);
	step *sp;
	return simple_prim(b, i, &desc, x, &md, y, &md, &sp);
}

static int build_bn(build *b, int i)
{
	const fc_model_graph *g = b->g;
	const fc_model_node *nd = &g->nodes[i];
	int x = nd->in[0], y = nd->out[0];
	const fc_model_tensor *X = &g->tensors[x];
	if (nd->n_in < 5 || X->ndim < 2)
		return fail(b, FC_ERR_UNSUPPORTED, "node '%s' (BatchNormalization): unsupported form", nd->name);
	for (int k = 1; k < 5; k++)
		if (!is_const(b, nd->in[k]) || g->tensors[nd->in[k]].numel != X->dims[1])
			return fail(b, FC_ERR_UNSUPPORTED,
				    "node '%s' (BatchNormalization): parameters must be constant, one per channel",
				    nd->name);
	dnnl_memory_desc_t md, cmd;
	dnnl_dims_t cd = { X->dims[1] };
	dnnl_batch_normalization_desc_t desc;
	if (md_plain(&md, X->ndim, X->dims) || dnnl_memory_desc_init_by_tag(&cmd, 1, cd, dnnl_f32, dnnl_a) ||
	    dnnl_batch_normalization_forward_desc_init(&desc, dnnl_forward_inference, &md, nd->attr.bn.epsilon,
						       dnnl_use_global_stats | dnnl_use_scale | dnnl_use_shift))
		return fail(b, FC_ERR_UNSUPPORTED, "node '%s' (BatchNormalization): onednn rejects it", nd->name);
	step *sp;
	int rc = simple_prim(b, i, &desc, x, &md, y, &md, &sp);
	if (rc)
		return rc;
	static const int which[4] = { DNNL_ARG_SCALE, DNNL_ARG_SHIFT, DNNL_ARG_MEAN, DNNL_ARG_VARIANCE };
	for (int k = 0; k < 4; k++) {
		float *p = cst(b, nd->in[k + 1]);
		dnnl_memory_t m;
		if (!p)
			return FC_ERR_NOMEM;
		if ((rc = mem(b, &m, &cmd, p)))
			return rc;
		arg(sp, which[k], m);
	}
	return 0;
}

/* dims of tensor t right-aligned to rank r (numpy broadcasting). */
static void bdims(int64_t *out, const fc_model_tensor *t, int r)
{
	for (int k = 0; k < r; k++)
		out[k] = 1;
	for (int k = 0; k < t->ndim; k++)
		out[r - t->ndim + k] = t->dims[k];
}

static int build_binary(build *b, int i)
{
	const fc_model_graph *g = b->g;
	const fc_model_node *nd = &g->nodes[i];
	int a = nd->in[0], c = nd->in[1], y = nd->out[0];
	const fc_model_tensor *Y = &g->tensors[y];
	int r = Y->ndim;
	int64_t da[FC_MODEL_MAX_DIMS], dc[FC_MODEL_MAX_DIMS];
	if (a < 0 || c < 0 || r < 1 || g->tensors[a].ndim > r || g->tensors[c].ndim > r ||
	    (!is_act(b, a) && !is_const(b, a)) || (!is_act(b, c) && !is_const(b, c)))
		return fail(b, FC_ERR_UNSUPPORTED, "node '%s' (%s): unsupported operands", nd->name, nd->op_type);
	bdims(da, &g->tensors[a], r);
	bdims(dc, &g->tensors[c], r);
	int commut = nd->op == FC_OP_ADD || nd->op == FC_OP_MUL;
	int full_a = !memcmp(da, Y->dims, (size_t)r * sizeof da[0]);
	int full_c = !memcmp(dc, Y->dims, (size_t)r * sizeof dc[0]);
	float *pa = is_act(b, a) ? act(b, a) : cst(b, a);
	float *pc = is_act(b, c) ? act(b, c) : cst(b, c);
	float *py = act(b, y);
	if (!pa || !pc || !py)
		return FC_ERR_NOMEM;
	if (!full_a && full_c && commut) {
		float *tp = pa;
		pa = pc, pc = tp;
		int64_t td[FC_MODEL_MAX_DIMS];
		memcpy(td, da, sizeof td), memcpy(da, dc, sizeof td), memcpy(dc, td, sizeof td);
		full_a = 1;
	}
	if (!full_a) { /* oneDNN wants src0 to have dst's shape */
		step *sp = new_step(b, i, ST_BINARY_C);
		if (!sp)
			return FC_ERR_NOMEM;
		sp->op = nd->op;
		sp->ndim = r;
		memcpy(sp->dims, Y->dims, (size_t)r * sizeof da[0]);
		memcpy(sp->sdims[0], da, (size_t)r * sizeof da[0]);
		memcpy(sp->sdims[1], dc, (size_t)r * sizeof da[0]);
		sp->src[0] = pa, sp->src[1] = pc, sp->dst = py;
		return 0;
	}
	dnnl_alg_kind_t alg = nd->op == FC_OP_ADD ? dnnl_binary_add
			      : nd->op == FC_OP_SUB ? dnnl_binary_sub
			      : nd->op == FC_OP_MUL ? dnnl_binary_mul
						    : dnnl_binary_div;
	dnnl_memory_desc_t ma, mc, my;
	dnnl_binary_desc_t desc;
	dnnl_primitive_desc_t pd = NULL;
	if (md_plain(&ma, r, da) || md_plain(&mc, r, dc) || md_plain(&my, r, Y->dims) ||
	    dnnl_binary_desc_init(&desc, alg, &ma, &mc, &my))
		return fail(b, FC_ERR_UNSUPPORTED, "node '%s' (%s): onednn rejects its shapes", nd->name,
			    nd->op_type);
	int rc = create_pd(b, i, &pd, &desc, NULL);
	if (rc)
		return rc;
	step *sp = new_step(b, i, ST_PRIM);
	dnnl_memory_t m0, m1, m2;
	if (!sp) {
		rc = FC_ERR_NOMEM;
		goto out;
	}
	if ((rc = mem(b, &m0, &ma, pa)) || (rc = mem(b, &m1, &mc, pc)) || (rc = mem(b, &m2, &my, py)))
		goto out;
	arg(sp, DNNL_ARG_SRC_0, m0);
	arg(sp, DNNL_ARG_SRC_1, m1);
	arg(sp, DNNL_ARG_DST, m2);
	rc = finish_prim(b, sp, pd);
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
	const fc_model_tensor *A = &g->tensors[a], *B = &g->tensors[w];
	int tb = gemm && nd->attr.gemm.trans_b;
	int64_t K = tb ? B->dims[1] : B->dims[0], N = tb ? B->dims[0] : B->dims[1];
	int64_t M = A->numel / K;
	if (A->dims[A->ndim - 1] != K || M * K != A->numel || g->tensors[y].numel != M * N)
		return fail(b, FC_ERR_UNSUPPORTED, "node '%s' (%s): shapes do not fit", nd->name, nd->op_type);
	float *wp = cst(b, w), *bias = NULL;
	if (!wp)
		return FC_ERR_NOMEM;
	if (gemm && nd->attr.gemm.alpha != 1.0f)
		for (int64_t k = 0; k < B->numel; k++)
			wp[k] *= nd->attr.gemm.alpha;
	if (c >= 0) {
		const fc_model_tensor *Ct = &g->tensors[c];
		if (Ct->numel != N && Ct->numel != 1)
			return fail(b, FC_ERR_UNSUPPORTED, "node '%s' (Gemm): bias must be per output", nd->name);
		if (!(bias = falloc(e, N)))
			return FC_ERR_NOMEM;
		for (int64_t k = 0; k < N; k++)
			bias[k] = Ct->f32[Ct->numel == 1 ? 0 : k] * (gemm ? nd->attr.gemm.beta : 1.0f);
	}
	dnnl_memory_desc_t ma, mw, mb, my;
	dnnl_dims_t ad = { M, K }, wd = { K, N }, bd = { 1, N }, yd = { M, N };
	dnnl_dims_t ws = { tb ? 1 : N, tb ? K : 1 };
	dnnl_matmul_desc_t desc;
	dnnl_primitive_desc_t pd = NULL;
	if (dnnl_memory_desc_init_by_tag(&ma, 2, ad, dnnl_f32, dnnl_ab) ||
	    dnnl_memory_desc_init_by_strides(&mw, 2, wd, dnnl_f32, ws) ||
	    dnnl_memory_desc_init_by_tag(&mb, 2, bd, dnnl_f32, dnnl_ab) ||
	    dnnl_memory_desc_init_by_tag(&my, 2, yd, dnnl_f32, dnnl_ab) ||
	    dnnl_matmul_desc_init(&desc, &ma, &mw, bias ? &mb : NULL, &my))
		return fail(b, FC_ERR_UNSUPPORTED, "node '%s' (%s): onednn rejects its shapes", nd->name,
			    nd->op_type);
	int rc = create_pd(b, i, &pd, &desc, NULL);
	if (rc)
		return rc;
	step *sp = new_step(b, i, ST_PRIM);
	float *pa = act(b, a), *py = act(b, y);
	dnnl_memory_t m0, m1, m2, m3;
	if (!sp || !pa || !py) {
		rc = FC_ERR_NOMEM;
		goto out;
	}
	if ((rc = mem(b, &m0, &ma, pa)) || (rc = mem(b, &m1, &mw, wp)) || (rc = mem(b, &m3, &my, py)))
		goto out;
	arg(sp, DNNL_ARG_SRC, m0);
	arg(sp, DNNL_ARG_WEIGHTS, m1);
	arg(sp, DNNL_ARG_DST, m3);
	if (bias) {
		if ((rc = mem(b, &m2, &mb, bias)))
			goto out;
		arg(sp, DNNL_ARG_BIAS, m2);
	}
	rc = finish_prim(b, sp, pd);
out:
	dnnl_primitive_desc_destroy(pd);
	return rc;
}

static int build_concat(build *b, int i)
{
	const fc_model_graph *g = b->g;
	const fc_model_node *nd = &g->nodes[i];
	const fc_model_tensor *Y = &g->tensors[nd->out[0]];
	int ax = nd->attr.axis.axis;
	step *sp = new_step(b, i, ST_CONCAT);
	if (!sp)
		return FC_ERR_NOMEM;
	sp->outer = 1;
	for (int k = 0; k < ax; k++)
		sp->outer *= Y->dims[k];
	sp->n_cat = nd->n_in;
	sp->cat_src = keep(b->e, calloc((size_t)nd->n_in, sizeof *sp->cat_src));
	sp->cat_len = keep(b->e, calloc((size_t)nd->n_in, sizeof *sp->cat_len));
	if (!sp->cat_src || !sp->cat_len || !(sp->dst = act(b, nd->out[0])))
		return FC_ERR_NOMEM;
	for (int k = 0; k < nd->n_in; k++) {
		int t = nd->in[k];
		if (t < 0 || (!is_act(b, t) && !is_const(b, t)))
			return fail(b, FC_ERR_UNSUPPORTED, "node '%s' (Concat): unsupported input", nd->name);
		sp->cat_src[k] = is_act(b, t) ? act(b, t) : cst(b, t);
		if (!sp->cat_src[k])
			return FC_ERR_NOMEM;
		sp->cat_len[k] = g->tensors[t].numel / (sp->outer ? sp->outer : 1);
	}
	return 0;
}

static int build_pad(build *b, int i)
{
	const fc_model_graph *g = b->g;
	const fc_model_node *nd = &g->nodes[i];
	const fc_model_tensor *X = &g->tensors[nd->in[0]], *Y = &g->tensors[nd->out[0]];
	if (!is_act(b, nd->in[0]) || X->ndim < 1)
		return fail(b, FC_ERR_UNSUPPORTED, "node '%s' (Pad): unsupported input", nd->name);
	step *sp = new_step(b, i, ST_PAD);
	if (!sp)
		return FC_ERR_NOMEM;
	sp->ndim = X->ndim;
	for (int k = 0; k < X->ndim; k++) {
		sp->dims[k] = Y->dims[k];
		sp->sdims[0][k] = X->dims[k];
		sp->sdims[1][k] = nd->attr.pad.begin[k];
	}
	sp->alpha = nd->attr.pad.value;
	if (!(sp->src[0] = act(b, nd->in[0])) || !(sp->dst = act(b, nd->out[0])))
		return FC_ERR_NOMEM;
	return 0;
}

static int build_node(build *b, int i)
{
	const fc_model_node *nd = &b->g->nodes[i];
	fc_engine *e = b->e;
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
	case FC_OP_CONCAT:
		return build_concat(b, i);
	case FC_OP_FLATTEN:
	case FC_OP_RESHAPE:
	case FC_OP_SQUEEZE:
	case FC_OP_UNSQUEEZE:
		if (!is_act(b, nd->in[0]))
			return fail(b, FC_ERR_UNSUPPORTED, "node '%s' (%s): unsupported input", nd->name,
				    nd->op_type);
		if (!act(b, nd->in[0]))
			return FC_ERR_NOMEM;
		e->buf[nd->out[0]] = e->buf[nd->in[0]];
		return 0;
	case FC_OP_GEMM:
	case FC_OP_MATMUL:
		return build_matmul(b, i);
	}
	return fail(b, FC_ERR_UNSUPPORTED, "node '%s': op %s is not supported by the engine", nd->name,
		    nd->op_type);
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
	if (!model || !opts || opts->batch < 1)
		return fail(b, FC_ERR_INVALID, "missing model or options, or batch < 1");
	if (opts->precision == FC_PREC_BF16)
		return fail(b, FC_ERR_UNSUPPORTED, "bf16 inference is not implemented yet");
	if (opts->precision != FC_PREC_F32)
		return fail(b, FC_ERR_INVALID, "unknown precision %d", opts->precision);
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

	if (!(e = calloc(1, sizeof *e)))
		return fail(b, FC_ERR_NOMEM, "out of memory");
	b->e = e;
	b->uses = calloc((size_t)g->n_tensors, sizeof *b->uses);
	b->consumer = calloc((size_t)g->n_tensors, sizeof *b->consumer);
	b->skip = calloc((size_t)g->n_nodes + 1, 1);
	e->buf = calloc((size_t)g->n_tensors, sizeof *e->buf);
	if (!b->uses || !b->consumer || !b->skip || !e->buf) {
		rc = fail(b, FC_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (dnnl_engine_create(&e->eng, dnnl_cpu, 0) != dnnl_success ||
	    dnnl_stream_create(&e->stream, e->eng, dnnl_stream_default_flags) != dnnl_success) {
		rc = fail(b, FC_ERR_INTERNAL, "cannot create the onednn cpu engine");
		goto out;
	}
	const fc_model_tensor *I = &g->tensors[g->input];
	e->batch = I->dims[0], e->c = I->dims[1], e->h = I->dims[2], e->w = I->dims[3];
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
	for (int i = 0; i < g->n_nodes; i++) {
		const fc_model_node *nd = &g->nodes[i];
		if (nd->state != FC_NODE_RUN || !nd->needed || b->skip[i])
			continue;
		if ((rc = build_node(b, i))) {
			if (rc == FC_ERR_NOMEM)
				fail(b, rc, "out of memory");
			goto out;
		}
	}
	const fc_model_tensor *T = &g->tensors[g->cut_tensor];
	e->pool = g->pool;
	e->dim = (size_t)g->embed_dim;
	e->cut_hw = g->pool ? T->dims[2] * T->dims[3] : 1;
	if (!(e->in_buf = act(b, g->input)) || !(e->cut = act(b, g->cut_tensor))) {
		rc = fail(b, FC_ERR_NOMEM, "out of memory");
		goto out;
	}
	rc = 0;
out:
	free(b->uses);
	free(b->consumer);
	free(b->skip);
	if (rc) {
		fc_engine_free(e);
		return rc;
	}
	*out = e;
	return 0;
}

/* y = a op c with numpy broadcasting (dims already right-aligned). */
static void binary_c(const step *s)
{
	int r = s->ndim;
	int64_t total = 1, idx[FC_MODEL_MAX_DIMS] = { 0 };
	for (int k = 0; k < r; k++)
		total *= s->dims[k];
	for (int64_t o = 0; o < total; o++) {
		int64_t ia = 0, ic = 0;
		for (int k = 0; k < r; k++) {
			ia = ia * s->sdims[0][k] + (s->sdims[0][k] == 1 ? 0 : idx[k]);
			ic = ic * s->sdims[1][k] + (s->sdims[1][k] == 1 ? 0 : idx[k]);
		}
		float a = s->src[0][ia], c = s->src[1][ic], y;
		switch (s->op) {
		case FC_OP_ADD: y = a + c; break;
		case FC_OP_SUB: y = a - c; break;
		case FC_OP_MUL: y = a * c; break;
		default: y = a / c; break;
		}
		s->dst[o] = y;
		for (int k = r - 1; k >= 0; k--) {
			if (++idx[k] < s->dims[k])
				break;
			idx[k] = 0;
		}
	}
}

static void pad_c(const step *s)
{
	int r = s->ndim;
	int64_t total = 1, idx[FC_MODEL_MAX_DIMS] = { 0 };
	for (int k = 0; k < r; k++)
		total *= s->dims[k];
	for (int64_t o = 0; o < total; o++) {
		int64_t is = 0;
		int inside = 1;
		for (int k = 0; k < r; k++) {
			int64_t j = idx[k] - s->sdims[1][k];
			if (j < 0 || j >= s->sdims[0][k])
				inside = 0;
			is = is * s->sdims[0][k] + j;
		}
		s->dst[o] = inside ? s->src[0][is] : s->alpha;
		for (int k = r - 1; k >= 0; k--) {
			if (++idx[k] < s->dims[k])
				break;
			idx[k] = 0;
		}
	}
}

static int run_step(fc_engine *e, const step *s)
{
	switch (s->kind) {
	case ST_PRIM:
		if (s->pre_dst)
			memcpy(s->pre_dst, s->pre_src, s->pre_n * sizeof(float));
		if (dnnl_primitive_execute(s->prim, e->stream, s->nargs, s->args) != dnnl_success ||
		    dnnl_stream_wait(e->stream) != dnnl_success)
			return FC_ERR_INTERNAL;
		return 0;
	case ST_CONCAT: {
		float *d = s->dst;
		for (int64_t o = 0; o < s->outer; o++)
			for (int k = 0; k < s->n_cat; k++) {
				memcpy(d, s->cat_src[k] + o * s->cat_len[k], (size_t)s->cat_len[k] * sizeof *d);
				d += s->cat_len[k];
			}
		return 0;
	}
	case ST_PAD:
		pad_c(s);
		return 0;
	case ST_BINARY_C:
		binary_c(s);
		return 0;
	case ST_HSIG:
		for (int64_t k = 0; k < s->dims[0]; k++) {
			float v = s->alpha * s->src[0][k] + s->beta;
			s->dst[k] = v < 0 ? 0 : v > 1 ? 1 : v;
		}
		return 0;
	}
	return FC_ERR_INTERNAL;
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
	size_t img = (size_t)(e->c * e->h * e->w);
	memcpy(e->in_buf, in, n * img * sizeof *in);
	if (n < (size_t)e->batch)
		memset(e->in_buf + n * img, 0, ((size_t)e->batch - n) * img * sizeof *in);
	for (int i = 0; i < e->n_steps; i++)
		if (run_step(e, &e->steps[i])) {
			snprintf(e->errmsg, sizeof e->errmsg, "onednn failed to execute step %d", i);
			return FC_ERR_INTERNAL;
		}
	if (e->pool) {
		for (size_t k = 0; k < n * e->dim; k++) {
			const float *p = e->cut + k * (size_t)e->cut_hw;
			double acc = 0;
			for (int64_t j = 0; j < e->cut_hw; j++)
				acc += p[j];
			out[k] = (float)(acc / (double)e->cut_hw);
		}
	} else {
		memcpy(out, e->cut, n * e->dim * sizeof *out);
	}
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
	for (int i = 0; i < e->n_mems; i++)
		dnnl_memory_destroy(e->mems[i]);
	free(e->mems);
	for (int i = 0; i < e->n_prims; i++)
		free(e->infos[i]);
	free(e->infos);
	for (int i = 0; i < e->n_blocks; i++)
		free(e->blocks[i]);
	free(e->blocks);
	free(e->buf);
	if (e->stream)
		dnnl_stream_destroy(e->stream);
	if (e->eng)
		dnnl_engine_destroy(e->eng);
	free(e);
}
