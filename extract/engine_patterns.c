/*
 * engine_patterns.c - the op patterns exporters write for one operation
 * that oneDNN has as one primitive, found before any node is built and
 * then built as that primitive:
 *  - GELU, the Erf form x * 0.5 * (1 + Erf(x / sqrt 2))  -> gelu_erf;
 *  - GELU, the tanh form torch writes for approximate='tanh' below opset
 *    20: 0.5 x (1 + Tanh(sqrt(2/pi) (x + 0.044715 x^3))), the cube as
 *    x * x * x or Pow(x, 3)                                -> gelu_tanh;
 *  - QuickGELU (CLIP), x * Sigmoid(a * x)                  -> swish(a);
 *  - LayerNorm as torch writes it below opset 17: ReduceMean(x) -> Sub ->
 *    Pow 2 -> ReduceMean -> Add eps -> Sqrt -> Div, then optionally Mul
 *    by a per-channel gamma and Add a per-channel beta -> layer_normalization
 *    (the same step as the LayerNormalization op, fci_layernorm_step).
 *
 * Why a pass before building: a pattern's nodes are not contiguous in the
 * node order, and the first of them (where the pattern is built) is not
 * always the one that identifies it (the Tanh, the Sigmoid). So
 * fci_find_patterns matches each anchor once, records the pattern at its
 * first node, and marks the other nodes skipped. Every tensor inside a
 * pattern must have its one reader there and not be the cut; anything
 * else (a near miss) stays ordinary nodes, which the engine runs one by
 * one (Pow, Sqrt, Tanh and ReduceMean are standalone steps too) or
 * refuses with the node's name (a lone Erf): never a silently different
 * result.
 *
 * A GELU whose input is a Conv output read by nothing else becomes the
 * conv's eltwise post-op (fci_pattern_post_op); otherwise one eltwise step.
 *
 * ReduceMean runs on oneDNN's reduction, except over one axis that is not
 * the last (the patch tokens' mean), which the reduction of oneDNN 2.6.3
 * has only in ref code: that one is a matmul by ones, scaled by 1 / T.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "extract/engine_impl.h"

enum { PAT_GELU_ERF = 1, PAT_GELU_TANH, PAT_SWISH, PAT_LAYERNORM };

#define PAT_MAX_NODES 12

struct fci_pattern {
	int kind;
	int first;                  /* the node where it is built */
	int n, nodes[PAT_MAX_NODES];
	int x, y;                   /* input and output tensors */
	float alpha;                /* swish: the factor inside the Sigmoid */
	float eps;                  /* LayerNorm */
	int gamma, beta;            /* LayerNorm: constant tensors, -1 when absent */
	int done;                   /* built (or fused as a post-op) */
};

/* ---- small matching helpers ---- */

/* The value of t if it is a constant scalar (any rank, one element). */
static int cst_scalar(const build *b, int t, float *v)
{
	const fc_model_tensor *x = t >= 0 ? &b->g->tensors[t] : NULL;
	if (!x || !fci_is_const(b, t) || x->numel != 1 || !x->f32)
		return 0;
	*v = x->f32[0];
	return 1;
}

static int is_scalar(const build *b, int t, float want)
{
	float v;
	return cst_scalar(b, t, &v) && fabsf(v - want) <= 1e-6f * fabsf(want);
}

/* The node that alone reads tensor t, if it runs and is an op; else -1. */
static int sole_reader(const build *b, int t, int op)
{
	int j = t >= 0 && b->uses[t] == 1 ? b->consumer[t] : -1;
	return j >= 0 && fci_runs(b, j) && b->g->nodes[j].op == op ? j : -1;
}

/* The other input of binary node j, one of whose inputs is t; -1 if none. */
static int other_in(const build *b, int j, int t)
{
	const fc_model_node *nd = &b->g->nodes[j];
	if (j < 0 || nd->n_in != 2)
		return -1;
	return nd->in[0] == t ? nd->in[1] : nd->in[1] == t ? nd->in[0] : -1;
}

/* The node that made t if it runs, is an op and t has no other reader. */
static int sole_producer(const build *b, int t, int op)
{
	int j = t >= 0 && b->uses[t] == 1 ? b->g->tensors[t].producer : -1;
	return j >= 0 && fci_runs(b, j) && b->g->nodes[j].op == op ? j : -1;
}

static int same_dims(const fc_model_tensor *a, const fc_model_tensor *c)
{
	return a->ndim == c->ndim && memcmp(a->dims, c->dims, sizeof(int64_t) * (size_t)a->ndim) == 0;
}

static void add_node(struct fci_pattern *p, int j)
{
	p->nodes[p->n++] = j;
}

/* ---- GELU ---- */

/* The product x * s * 0.5, s the output of node a (the "1 + ..."), in
 * either order of the two Muls (torch's export: (x * s) * 0.5; by hand:
 * (x * 0.5) * s, or x * (s * 0.5)): adds both Muls to p, sets p->y. */
static int gelu_tail(const build *b, int a, int x, struct fci_pattern *p)
{
	const fc_model_graph *g = b->g;
	int s = g->nodes[a].out[0], m, h;
	if ((m = sole_reader(b, s, FC_OP_MUL)) < 0)
		return 0;
	int o = other_in(b, m, s);
	if (o == x || is_scalar(b, o, 0.5f)) {
		/* x * s or s * 0.5, then the other factor */
		if ((h = sole_reader(b, g->nodes[m].out[0], FC_OP_MUL)) < 0 ||
		    !(o == x ? is_scalar(b, other_in(b, h, g->nodes[m].out[0]), 0.5f)
			     : other_in(b, h, g->nodes[m].out[0]) == x))
			return 0;
	} else {
		/* (x * 0.5) * s: h is the Mul that made o */
		if ((h = sole_producer(b, o, FC_OP_MUL)) < 0 || !is_scalar(b, other_in(b, h, x), 0.5f))
			return 0;
		int t = h;
		h = m, m = t;
	}
	add_node(p, m);
	add_node(p, h);
	p->y = g->nodes[h].out[0];
	return 1;
}

/* Div node d starting Div(x, sqrt 2) -> Erf -> Add 1 -> the tail. */
static int gelu_erf_match(const build *b, int d, struct fci_pattern *p)
{
	const fc_model_graph *g = b->g;
	const fc_model_node *dn = &g->nodes[d];
	int e, a;
	if (!fci_is_act(b, dn->in[0]) || !is_scalar(b, dn->in[1], (float)M_SQRT2))
		return 0;
	p->x = dn->in[0];
	if ((e = sole_reader(b, dn->out[0], FC_OP_ERF)) < 0 || (a = sole_reader(b, g->nodes[e].out[0], FC_OP_ADD)) < 0 ||
	    !is_scalar(b, other_in(b, a, g->nodes[e].out[0]), 1.0f))
		return 0;
	add_node(p, d);
	add_node(p, e);
	add_node(p, a);
	p->kind = PAT_GELU_ERF;
	return gelu_tail(b, a, p->x, p);
}

/* The node making c = x^3: Pow(x, 3), x * (x * x) or (x * x) * x; adds
 * the one or two nodes to p and sets p->x. */
static int cube_match(const build *b, int c, struct fci_pattern *p)
{
	const fc_model_graph *g = b->g;
	int j;
	if ((j = sole_producer(b, c, FC_OP_POW)) >= 0) {
		if (!fci_is_act(b, g->nodes[j].in[0]) || !is_scalar(b, g->nodes[j].in[1], 3.0f))
			return 0;
		p->x = g->nodes[j].in[0];
		add_node(p, j);
		return 1;
	}
	if ((j = sole_producer(b, c, FC_OP_MUL)) < 0)
		return 0;
	const fc_model_node *mn = &g->nodes[j];
	for (int k = 0; k < 2; k++) {
		int sq = mn->in[k], x = mn->in[1 - k], q = sole_producer(b, sq, FC_OP_MUL);
		if (q >= 0 && fci_is_act(b, x) && g->nodes[q].in[0] == x && g->nodes[q].in[1] == x) {
			p->x = x;
			add_node(p, q);
			add_node(p, j);
			return 1;
		}
	}
	return 0;
}

/* Tanh node t ending sqrt(2/pi) * (x + 0.044715 * x^3), then Add 1 and
 * the tail. */
static int gelu_tanh_match(const build *b, int t, struct fci_pattern *p)
{
	const fc_model_graph *g = b->g;
	int u = g->nodes[t].in[0], mu, in, k, a;
	if ((mu = sole_producer(b, u, FC_OP_MUL)) < 0)
		return 0;
	const fc_model_node *mn = &g->nodes[mu];
	int sum = is_scalar(b, mn->in[0], 0.7978845608f) ? mn->in[1] : mn->in[0];
	if (!is_scalar(b, other_in(b, mu, sum), 0.7978845608f) || (in = sole_producer(b, sum, FC_OP_ADD)) < 0)
		return 0;
	/* x + k, k = 0.044715 * cube: which operand is k decides which is x */
	for (int s = 0; s < 2; s++) {
		int kt = g->nodes[in].in[s];
		if ((k = sole_producer(b, kt, FC_OP_MUL)) < 0)
			continue;
		const fc_model_node *kn = &g->nodes[k];
		int c = is_scalar(b, kn->in[0], 0.044715f) ? kn->in[1] : kn->in[0];
		p->n = 0;
		if (!is_scalar(b, other_in(b, k, c), 0.044715f) || !cube_match(b, c, p) ||
		    g->nodes[in].in[1 - s] != p->x)
			continue;
		if ((a = sole_reader(b, g->nodes[t].out[0], FC_OP_ADD)) < 0 ||
		    !is_scalar(b, other_in(b, a, g->nodes[t].out[0]), 1.0f))
			return 0;
		add_node(p, k);
		add_node(p, in);
		add_node(p, mu);
		add_node(p, t);
		add_node(p, a);
		p->kind = PAT_GELU_TANH;
		return gelu_tail(b, a, p->x, p);
	}
	return 0;
}

/* Sigmoid node s of Mul(x, a) (a a constant scalar), times x again:
 * swish with alpha a (QuickGELU has a = 1.702). */
static int swish_match(const build *b, int s, struct fci_pattern *p)
{
	const fc_model_graph *g = b->g;
	int u = g->nodes[s].in[0], ma, m;
	if ((ma = sole_producer(b, u, FC_OP_MUL)) < 0)
		return 0;
	const fc_model_node *an = &g->nodes[ma];
	int x = fci_is_act(b, an->in[0]) ? an->in[0] : an->in[1];
	if (!fci_is_act(b, x) || !cst_scalar(b, other_in(b, ma, x), &p->alpha) || !isfinite(p->alpha) ||
	    (m = sole_reader(b, g->nodes[s].out[0], FC_OP_MUL)) < 0 || other_in(b, m, g->nodes[s].out[0]) != x)
		return 0;
	p->x = x;
	p->y = g->nodes[m].out[0];
	add_node(p, ma);
	add_node(p, s);
	add_node(p, m);
	p->kind = PAT_SWISH;
	return 1;
}

/* ---- LayerNorm ---- */

/* A ReduceMean over the last axis of its input, dims kept. */
static int last_axis_mean(const build *b, int j)
{
	const fc_model_node *nd = &b->g->nodes[j];
	int r = b->g->tensors[nd->in[0]].ndim;
	return nd->op == FC_OP_REDUCEMEAN && r >= 1 && r <= 32 && nd->attr.reduce.axes == 1u << (r - 1) &&
	       nd->attr.reduce.keepdims;
}

/* A constant that is one value per channel of the last axis (D of them,
 * every other dim 1, rank at most r) or a scalar. */
static int per_channel(const build *b, int t, int r, int64_t D)
{
	const fc_model_tensor *c = t >= 0 ? &b->g->tensors[t] : NULL;
	if (!c || !fci_is_const(b, t) || !c->f32 || c->ndim > r)
		return 0;
	return c->numel == 1 || (c->numel == D && c->dims[c->ndim - 1] == D);
}

/* The affine end: Mul by gamma and/or Add of beta after tensor p->y. */
static void layernorm_affine(const build *b, struct fci_pattern *p, int r, int64_t D)
{
	int j = sole_reader(b, p->y, FC_OP_MUL);
	if (j >= 0 && per_channel(b, other_in(b, j, p->y), r, D)) {
		p->gamma = other_in(b, j, p->y);
		add_node(p, j);
		p->y = b->g->nodes[j].out[0];
	}
	j = sole_reader(b, p->y, FC_OP_ADD);
	if (j >= 0 && per_channel(b, other_in(b, j, p->y), r, D)) {
		p->beta = other_in(b, j, p->y);
		add_node(p, j);
		p->y = b->g->nodes[j].out[0];
	}
}

/* ReduceMean node r0 starting the decomposed LayerNorm. The Sub's output
 * d is read twice, by the Pow and the Div. */
static int layernorm_match(const build *b, int r0, struct fci_pattern *p)
{
	const fc_model_graph *g = b->g;
	const fc_model_node *rn = &g->nodes[r0];
	int x = rn->in[0], s, pw = -1, dv = -1, v, a, q;
	if (!fci_is_act(b, x) || !last_axis_mean(b, r0) || (s = sole_reader(b, rn->out[0], FC_OP_SUB)) < 0 ||
	    g->nodes[s].in[0] != x || g->nodes[s].in[1] != rn->out[0])
		return 0;
	int d = g->nodes[s].out[0];
	if (b->uses[d] != 2)
		return 0;
	for (int j = s + 1; j <= b->consumer[d]; j++) {
		const fc_model_node *nd = &g->nodes[j];
		if (!fci_runs(b, j) || !fci_reads(nd, d))
			continue;
		if (nd->op == FC_OP_POW && pw < 0 && nd->in[0] == d)
			pw = j;
		else if (nd->op == FC_OP_DIV && dv < 0 && nd->in[0] == d)
			dv = j;
		else
			return 0;
	}
	if (pw < 0 || dv < 0 || !is_scalar(b, g->nodes[pw].in[1], 2.0f) ||
	    (v = sole_reader(b, g->nodes[pw].out[0], FC_OP_REDUCEMEAN)) < 0 || !last_axis_mean(b, v) ||
	    (a = sole_reader(b, g->nodes[v].out[0], FC_OP_ADD)) < 0 ||
	    !cst_scalar(b, other_in(b, a, g->nodes[v].out[0]), &p->eps) || !(p->eps >= 0 && p->eps < FLT_MAX) ||
	    (q = sole_reader(b, g->nodes[a].out[0], FC_OP_SQRT)) < 0 ||
	    sole_reader(b, g->nodes[q].out[0], FC_OP_DIV) != dv || g->nodes[dv].in[1] != g->nodes[q].out[0])
		return 0;
	int order[7] = { r0, s, pw, v, a, q, dv };
	for (int k = 0; k < 7; k++)
		add_node(p, order[k]);
	const fc_model_tensor *X = &g->tensors[x];
	p->x = x;
	p->y = g->nodes[dv].out[0];
	p->gamma = p->beta = -1;
	layernorm_affine(b, p, X->ndim, X->dims[X->ndim - 1]);
	p->kind = PAT_LAYERNORM;
	return 1;
}

/* ---- finding and building ---- */

static int match_at(const build *b, int j, struct fci_pattern *p)
{
	memset(p, 0, sizeof *p);
	p->gamma = p->beta = -1;
	switch (b->g->nodes[j].op) {
	case FC_OP_DIV:
		return gelu_erf_match(b, j, p);
	case FC_OP_TANH:
		return gelu_tanh_match(b, j, p);
	case FC_OP_SIGMOID:
		return swish_match(b, j, p);
	case FC_OP_REDUCEMEAN:
		return layernorm_match(b, j, p);
	}
	return 0;
}

int fci_find_patterns(build *b)
{
	const fc_model_graph *g = b->g;
	if (!(b->pat_of = calloc((size_t)g->n_nodes + 1, sizeof *b->pat_of)))
		return FC_ERR_NOMEM;
	for (int j = 0; j < g->n_nodes; j++) {
		struct fci_pattern p;
		if (!fci_runs(b, j) || !match_at(b, j, &p) || !same_dims(&g->tensors[p.x], &g->tensors[p.y]))
			continue;
		/* no node in two patterns */
		int taken = 0;
		p.first = p.nodes[0];
		for (int k = 0; k < p.n; k++) {
			taken |= b->skip[p.nodes[k]] || b->pat_of[p.nodes[k]];
			if (p.nodes[k] < p.first)
				p.first = p.nodes[k];
		}
		if (taken)
			continue;
		if (b->n_pats % 16 == 0) {
			struct fci_pattern *q = realloc(b->pats, (size_t)(b->n_pats + 16) * sizeof *q);
			if (!q)
				return FC_ERR_NOMEM;
			b->pats = q;
		}
		b->pats[b->n_pats++] = p;
		b->pat_of[p.first] = b->n_pats; /* 1-based: 0 is none */
		for (int k = 0; k < p.n; k++)
			if (p.nodes[k] != p.first)
				b->skip[p.nodes[k]] = 1;
	}
	return 0;
}

void fci_free_patterns(build *b)
{
	free(b->pats);
	free(b->pat_of);
	b->pats = NULL;
	b->pat_of = NULL;
}

/* The eltwise algorithm a GELU-like pattern is, or 0. */
static dnnl_alg_kind_t pattern_alg(const struct fci_pattern *p, const char **name)
{
	*name = p->kind == PAT_SWISH ? "Swish" : "Gelu";
	return p->kind == PAT_GELU_ERF ? dnnl_eltwise_gelu_erf
	       : p->kind == PAT_GELU_TANH ? dnnl_eltwise_gelu_tanh
	       : p->kind == PAT_SWISH     ? dnnl_eltwise_swish
					  : (dnnl_alg_kind_t)0;
}

int fci_pattern_post_op(build *b, int t, dnnl_post_ops_t po, int *cur)
{
	if (!b->pats || b->uses[t] < 1)
		return 0;
	for (int k = 0; k < b->n_pats; k++) {
		struct fci_pattern *p = &b->pats[k];
		const char *name;
		dnnl_alg_kind_t alg = pattern_alg(p, &name);
		if (p->done || p->x != t || !alg || b->skip[p->first])
			continue;
		/* every reader of t must be in the pattern */
		int reads = 0;
		for (int n = 0; n < p->n; n++)
			for (int r = 0; r < b->g->nodes[p->nodes[n]].n_in; r++)
				reads += b->g->nodes[p->nodes[n]].in[r] == t;
		if (reads != b->uses[t])
			return 0;
		if (dnnl_post_ops_append_eltwise(po, 1.0f, alg, p->kind == PAT_SWISH ? p->alpha : 0.0f, 0.0f))
			return fci_build_fail(b, FC_ERR_INTERNAL, "node '%s': cannot append a post-op",
					      b->g->nodes[p->first].name);
		b->skip[p->first] = 1;
		p->done = 1;
		*cur = p->y;
		return 1;
	}
	return 0;
}

int fci_build_pattern(build *b, int i)
{
	if (!b->pat_of || !b->pat_of[i])
		return 0;
	struct fci_pattern *p = &b->pats[b->pat_of[i] - 1];
	const char *name;
	dnnl_alg_kind_t alg = pattern_alg(p, &name);
	int rc;
	p->done = 1;
	if (p->kind == PAT_LAYERNORM)
		return (rc = fci_layernorm_step(b, i, p->x, p->y, p->eps, p->gamma, p->beta, "LayerNormalization")) ? rc
														       : 1;
	int v = fci_eltwise_step(b, i, b->tv[p->x], alg, p->kind == PAT_SWISH ? p->alpha : 0.0f, 0, name);
	if (v < 0)
		return v;
	fci_bind_tensor(b, p->y, v);
	return 1;
}

/* ---- LayerNormalization, the op and the pattern ---- */

/* gamma or beta (constant t, one per channel or a scalar) as D floats
 * kept for the engine's life; NULL when out of memory. */
static float *per_channel_copy(build *b, int t, int64_t D)
{
	const fc_model_tensor *c = &b->g->tensors[t];
	float *p = fci_balloc(b->e, (size_t)D * sizeof *p);
	for (int64_t k = 0; p && k < D; k++)
		p[k] = c->f32[c->numel == 1 ? 0 : k];
	return p;
}

int fci_layernorm_step(build *b, int i, int x, int y, float eps, int gamma, int beta, const char *op)
{
	const fc_model_graph *g = b->g;
	const fc_model_node *nd = &g->nodes[i];
	const fc_model_tensor *X = &g->tensors[x];
	int rc, out, v;
	dnnl_layer_normalization_desc_t desc;
	dnnl_primitive_desc_t pd = NULL;
	dnnl_memory_desc_t md, cmd;
	int64_t D = X->ndim ? X->dims[X->ndim - 1] : 1;
	if (!fci_is_act(b, x) || X->ndim < 1 || (gamma >= 0 && !per_channel(b, gamma, X->ndim, D)) ||
	    (beta >= 0 && !per_channel(b, beta, X->ndim, D)))
		return fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s' (%s): unsupported operands", nd->name,
				      op ? op : nd->op_type);
	/* Plain row-major in the activations' type: in bf16 the statistics
	 * are still computed in f32 by oneDNN, and the consumers (a bf16
	 * MatMul) get the type they are built for. */
	if (fci_md_plain(&md, X->ndim, X->dims, b->e->dt))
		return FC_ERR_INTERNAL;
	if ((v = fci_want(b, i, b->tv[x], &md)) < 0)
		return v;
	if (fci_md_plain(&cmd, 1, &D, dnnl_f32) ||
	    dnnl_layer_normalization_forward_desc_init(&desc, dnnl_forward_inference, &md, NULL, eps,
						       (gamma >= 0 ? dnnl_use_scale : 0u) |
							       (beta >= 0 ? dnnl_use_shift : 0u)))
		return fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s' (%s): onednn rejects it", nd->name,
				      op ? op : nd->op_type);
	if ((rc = fci_create_pd(b, i, &pd, &desc, NULL)))
		return rc;
	out = fci_elementwise_dst(b, i, v, &md);
	if (out < 0 || (rc = fci_new_step(b, i, ST_PRIM, 4))) {
		rc = out < 0 ? out : rc;
		goto out;
	}
	fci_arg(b, DNNL_ARG_SRC, v, NULL);
	fci_arg(b, DNNL_ARG_DST, out, NULL);
	for (int k = 0; k < 2; k++) {
		int t = k == 0 ? gamma : beta;
		float *p = t >= 0 ? per_channel_copy(b, t, D) : NULL;
		dnnl_memory_t m;
		if (t < 0)
			continue;
		if (!p) {
			rc = FC_ERR_NOMEM;
			goto out;
		}
		if ((rc = fci_mem(b, &m, &cmd, p)))
			goto out;
		fci_arg(b, k == 0 ? DNNL_ARG_SCALE : DNNL_ARG_SHIFT, -1, m);
	}
	fci_bind_tensor(b, y, out);
	rc = fci_finish_prim(b, pd, op);
out:
	dnnl_primitive_desc_destroy(pd);
	return rc;
}

/* ---- ReduceMean outside the spatial axes of a 4-D tensor ---- */

/* oneDNN's reduction (mean) on the plain layout in the activations'
 * type; without keepdims the output is a view that drops the axes. */
/* The mean over one axis a that is not the last (timm's x[:, 1:].mean(1)
 * over tokens), which oneDNN 2.6.3 reduces only in its ref code, as a
 * matmul: for each index before a, ones(1 x T) times the T x I block
 * after it, scaled by 1 / T. 1 when built, 0 when it does not apply or
 * oneDNN has only ref for it too, < 0 on error. */
static int mean_as_matmul(build *b, int i, int v)
{
	const fc_model_graph *g = b->g;
	const fc_model_node *nd = &g->nodes[i];
	const fc_model_tensor *X = &g->tensors[nd->in[0]], *Y = &g->tensors[nd->out[0]];
	unsigned mask = nd->attr.reduce.axes;
	int a = 0;
	while (a < X->ndim && !(mask & (1u << a)))
		a++;
	if (a >= X->ndim - 1 || mask != 1u << a)
		return 0;
	int64_t O = 1, T = X->dims[a], I = 1;
	for (int k = 0; k < a; k++)
		O *= X->dims[k];
	for (int k = a + 1; k < X->ndim; k++)
		I *= X->dims[k];
	dnnl_data_type_t dt = b->e->dt;
	dnnl_dims_t od = { 1, 1, T }, wd = { O, T, I }, yd = { O, 1, I };
	dnnl_memory_desc_t o32, omd, wmd, ymd;
	dnnl_matmul_desc_t desc;
	dnnl_primitive_desc_t pd = NULL;
	dnnl_primitive_attr_t attr = NULL;
	float scale = 1.0f / (float)T;
	int w = fci_view(b, i, v, 3, wd), rc = 0;
	if (w < 0)
		return w;
	if (fci_md_plain(&o32, 3, od, dnnl_f32) || fci_md_plain(&omd, 3, od, dt) || fci_md_plain(&ymd, 3, yd, dt))
		return FC_ERR_INTERNAL;
	wmd = fci_val(b, w)->md;
	if (dnnl_matmul_desc_init(&desc, &omd, &wmd, NULL, &ymd) || dnnl_primitive_attr_create(&attr))
		return 0;
	if (dnnl_primitive_attr_set_output_scales(attr, 1, 0, &scale) ||
	    dnnl_primitive_desc_create(&pd, &desc, attr, b->e->eng, NULL) != dnnl_success) {
		pd = NULL;
		goto out;
	}
	if (!strncmp(fci_impl_of(pd), "ref", 3))
		goto out;
	float *ones = malloc((size_t)T * sizeof *ones);
	dnnl_memory_t m;
	int y;
	if (!ones) {
		rc = FC_ERR_NOMEM;
		goto out;
	}
	for (int64_t k = 0; k < T; k++)
		ones[k] = 1.0f;
	if ((rc = fci_const_mem(b, &m, &o32, ones, &omd)) || (y = fci_new_value(b, &ymd, NULL)) < 0 ||
	    (rc = fci_new_step(b, i, ST_PRIM, 3))) {
		rc = rc ? rc : y;
		goto out;
	}
	fci_arg(b, DNNL_ARG_SRC, -1, m);
	fci_arg(b, DNNL_ARG_WEIGHTS, w, NULL);
	fci_arg(b, DNNL_ARG_DST, y, NULL);
	if ((rc = fci_finish_prim(b, pd, "ReduceMean")))
		goto out;
	if ((y = fci_view(b, i, y, Y->ndim, Y->dims)) < 0) {
		rc = y;
		goto out;
	}
	fci_bind_tensor(b, nd->out[0], y);
	rc = 1;
out:
	if (pd)
		dnnl_primitive_desc_destroy(pd);
	dnnl_primitive_attr_destroy(attr);
	return rc;
}

int fci_build_reduce_mean(build *b, int i)
{
	const fc_model_graph *g = b->g;
	const fc_model_node *nd = &g->nodes[i];
	const fc_model_tensor *X = &g->tensors[nd->in[0]], *Y = &g->tensors[nd->out[0]];
	int64_t kd[FC_MODEL_MAX_DIMS];
	dnnl_memory_desc_t dmd;
	dnnl_reduction_desc_t desc;
	dnnl_primitive_desc_t pd;
	int v, y, rc;
	if (X->ndim < 1)
		return fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s' (ReduceMean): unsupported input", nd->name);
	for (int k = 0; k < X->ndim; k++)
		kd[k] = nd->attr.reduce.axes & (1u << k) ? 1 : X->dims[k];
	if ((v = fci_plain_input(b, i, b->e->dt)) < 0)
		return v;
	if ((rc = mean_as_matmul(b, i, v)))
		return rc < 0 ? rc : 0;
	if (fci_md_plain(&dmd, X->ndim, kd, b->e->dt) ||
	    dnnl_reduction_desc_init(&desc, dnnl_reduction_mean, &fci_val(b, v)->md, &dmd, 0.0f, 0.0f))
		return fci_build_fail(b, FC_ERR_UNSUPPORTED, "node '%s' (ReduceMean): onednn rejects its shapes", nd->name);
	if ((rc = fci_create_pd(b, i, &pd, &desc, NULL)))
		return rc;
	if ((y = fci_new_value(b, &dmd, NULL)) < 0) {
		dnnl_primitive_desc_destroy(pd);
		return y;
	}
	if ((rc = fci_unary_step(b, i, pd, v, y, NULL)))
		return rc;
	if (Y->ndim != X->ndim && (y = fci_view(b, i, y, Y->ndim, Y->dims)) < 0)
		return y;
	fci_bind_tensor(b, nd->out[0], y);
	return 0;
}
