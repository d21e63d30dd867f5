/*
 * model_cut.c - Finetuner's Tailor on an ONNX graph: which nodes are
 * layers, which one is the default embedding layer, and what a cut keeps.
 *
 * The default embedding is the input of the model's final classifier, a
 * Gemm/MatMul with a constant weight producing the output directly or
 * through views (for ResNet-50 the flattened 2048-d average pool, for a
 * ViT its CLS token, for CLIP's visual tower the CLS token before `@
 * proj`); a CNN with no Gemm/MatMul at all (SqueezeNet's classifier is a
 * Conv) uses the input of the last Conv, a 4-D map that gets
 * average-pooled; any other model (a headless DINOv2, an L2-normalised
 * embedding model) is its own embedding: its first output. A cut (one or
 * several layers, concatenated; token tensors pooled as fc_pool says)
 * marks the nodes the embedding depends on (`needed`); everything else is
 * dropped by the engine.
 */
#include <stdlib.h>
#include <string.h>

#include "extract/model_impl.h"

int fc_model_is_layer(const fc_model *m, int i)
{
	return i >= 0 && i < m->n_nodes &&
	       (m->nodes[i].state == FC_NODE_RUN || m->nodes[i].state == FC_NODE_ALIAS);
}

int fc_model_find_layer(const fc_model *m, const char *name)
{
	if (!name)
		return FC_ERR_NOT_FOUND;
	for (int i = 0; i < m->n_nodes; i++)
		if (fc_model_is_layer(m, i) && strcmp(m->nodes[i].name, name) == 0)
			return i;
	for (int i = 0; i < m->n_nodes; i++)
		if (fc_model_is_layer(m, i) && strcmp(m->tensors[m->nodes[i].out[0]].name, name) == 0)
			return i;
	return FC_ERR_NOT_FOUND;
}

static int last_run(const fc_model *m, int op_a, int op_b)
{
	for (int i = m->n_nodes - 1; i >= 0; i--)
		if (m->nodes[i].state == FC_NODE_RUN && (m->nodes[i].op == op_a || m->nodes[i].op == op_b))
			return i;
	return -1;
}

/* The node producing activation t, seen through views and aliases; -1 if
 * t is not computed by a node that runs. */
static int producer_through_views(const fc_model *m, int t)
{
	for (int hops = 0; hops < m->n_nodes && t >= 0; hops++) {
		int p = m->tensors[m->tensors[t].source].producer;

		if (p < 0 || m->nodes[p].state != FC_NODE_RUN)
			return -1;
		if (!fc_op_is_view(m->nodes[p].op))
			return p;
		t = m->nodes[p].in[0];
	}
	return -1;
}

/* The final classifier: a Gemm or MatMul with a constant weight whose
 * output is the graph's output, directly or through views. -1 if none. */
static int final_classifier(const fc_model *m)
{
	int p = producer_through_views(m, m->out0);
	const fc_model_node *nd;

	if (p < 0)
		return -1;
	nd = &m->nodes[p];
	if ((nd->op != FC_OP_GEMM && nd->op != FC_OP_MATMUL) || nd->n_in < 2 || nd->in[1] < 0 ||
	    m->tensors[nd->in[1]].kind != FC_TENSOR_CONST)
		return -1;
	return p;
}

void fci_model_find_default(fc_model *m)
{
	int i, t = -1, o = m->tensors[m->out0].source;

	m->g.default_node = m->g.default_tensor = -1;
	/* A model whose output is L2-normalised is an embedding model already
	 * (`featcache export` writes them): its output is the embedding. */
	if (o >= 0 && m->tensors[o].producer >= 0 && m->nodes[m->tensors[o].producer].op == FC_OP_LPNORM &&
	    m->nodes[m->tensors[o].producer].state == FC_NODE_RUN)
		t = o;
	else if ((i = final_classifier(m)) >= 0)
		t = m->nodes[i].in[0]; /* the classifier's input (none if it is the model's) */
	else if (last_run(m, FC_OP_GEMM, FC_OP_MATMUL) < 0 && (i = last_run(m, FC_OP_CONV, FC_OP_CONV)) >= 0)
		t = m->nodes[i].in[0]; /* a CNN whose classifier is a Conv (SqueezeNet) */
	else
		t = o; /* no classifier (a headless DINOv2): the model is its own embedding */
	if (t < 0 || m->tensors[t].kind != FC_TENSOR_ACT || m->tensors[t].producer < 0)
		return;
	m->g.default_tensor = t;
	m->g.default_node = m->tensors[t].producer;
}

const char *fc_pool_name(int pool)
{
	static const char *const names[] = { "auto", "cls", "mean", "cls+mean", "flatten" };

	return pool >= 0 && pool <= FC_POOL_FLATTEN ? names[pool] : "?";
}

int fc_pool_parse(const char *s)
{
	for (int i = FC_POOL_CLS; s && i <= FC_POOL_FLATTEN; i++)
		if (strcmp(s, fc_pool_name(i)) == 0)
			return i;
	return -1;
}

/* One cut's length in the embedding, after checking that the pooling
 * fits it. */
static int cut_dim(fc_model *m, int node, const fc_model_tensor *x, int pool, int prefix,
		   int64_t *dim)
{
	const char *name = fci_model_q(m, 0, m->nodes[node].name);
	char b[128];

	if (x->kind == FC_TENSOR_CONST)
		return fci_model_fail(m, FC_ERR_INVALID, "layer '%s' is a constant (folded at load time)",
				     name);
	if (x->kind != FC_TENSOR_ACT)
		return fci_model_fail(m, FC_ERR_INVALID, "layer '%s' is the model input itself", name);
	if (x->ndim < 2 || x->dims[0] != m->in_dims[0])
		return fci_model_fail(m, FC_ERR_INVALID,
				     "layer '%s' outputs %s, which has no batch dimension of %lld",
				     name, fci_model_shape_str(b, sizeof b, x->ndim, x->dims),
				     (long long)m->in_dims[0]);
	if (x->ndim == 3 && pool != FC_POOL_AUTO && pool != FC_POOL_FLATTEN) {
		int64_t t = x->dims[1], d = x->dims[2];

		if (pool != FC_POOL_MEAN && prefix < 1)
			return fci_model_fail(m, FC_ERR_INVALID,
					     "pooling '%s' takes token 0, but --prefix-tokens is 0",
					     fc_pool_name(pool));
		if (prefix >= t && pool != FC_POOL_CLS)
			return fci_model_fail(m, FC_ERR_INVALID,
					     "layer '%s' has %lld tokens: none is left to average after %d "
					     "prefix tokens", name, (long long)t, prefix);
		if (prefix > t)
			return fci_model_fail(m, FC_ERR_INVALID, "layer '%s' has %lld tokens, fewer than %d "
					     "prefix tokens", name, (long long)t, prefix);
		*dim = pool == FC_POOL_CLS_MEAN ? 2 * d : d;
		return 0;
	}
	if (x->ndim == 4) {
		*dim = x->dims[1];
		return 0;
	}
	*dim = 1;
	for (int i = 1; i < x->ndim; i++)
		*dim *= x->dims[i];
	return 0;
}

int fci_model_apply_cuts(fc_model *m, int n, const int *nodes, const int *tensors, int pool, int prefix)
{
	int64_t dims[FC_MODEL_MAX_CUTS], total = 0;
	int *stack, top = 0, rc, tokens = 0;
	char b[128];

	if (n < 1 || n > FC_MODEL_MAX_CUTS)
		return fci_model_fail(m, FC_ERR_INVALID, "%d layers: an embedding concatenates 1 to %d", n,
				     FC_MODEL_MAX_CUTS);
	if (pool < FC_POOL_AUTO || pool > FC_POOL_FLATTEN || prefix < 0)
		return fci_model_fail(m, FC_ERR_INVALID, "bad pooling %d or prefix tokens %d", pool, prefix);
	for (int k = 0; k < n; k++) {
		for (int j = 0; j < k; j++)
			if (tensors[j] == tensors[k])
				return fci_model_fail(m, FC_ERR_INVALID, "layer '%s' is named twice",
						     fci_model_q(m, 0, m->nodes[nodes[k]].name));
		if ((rc = cut_dim(m, nodes[k], &m->tensors[tensors[k]], pool, prefix, &dims[k])))
			return rc;
		if (dims[k] > FC_MAX_DIM - total)
			return fci_model_fail(m, FC_ERR_OVERFLOW, "the embedding would be longer than %lld",
					     (long long)FC_MAX_DIM);
		total += dims[k];
		tokens += m->tensors[tensors[k]].ndim == 3;
	}
	if (pool != FC_POOL_AUTO && !tokens) {
		const fc_model_tensor *x = &m->tensors[tensors[0]];

		return fci_model_fail(m, FC_ERR_INVALID,
				     "pooling '%s' is for token tensors (N x T x D), but layer '%s' "
				     "outputs %s", fc_pool_name(pool), fci_model_q(m, 0, m->nodes[nodes[0]].name),
				     fci_model_shape_str(b, sizeof b, x->ndim, x->dims));
	}

	stack = malloc(sizeof *stack * ((size_t)m->n_nodes + 1));
	if (!stack)
		return fci_model_fail(m, FC_ERR_NOMEM, "out of memory");
	for (int i = 0; i < m->n_nodes; i++)
		m->nodes[i].needed = 0;
	m->g.cut_params = 0;
	for (int k = 0; k < n; k++) {
		int p = m->tensors[tensors[k]].producer;

		if (!m->nodes[p].needed) {
			m->nodes[p].needed = 1;
			stack[top++] = p;
		}
	}
	while (top) {
		fc_model_node *nd = &m->nodes[stack[--top]];

		m->g.cut_params += nd->params;
		for (int k = 0; k < nd->n_in; k++) {
			int p;

			if (nd->in[k] < 0 || m->tensors[nd->in[k]].kind != FC_TENSOR_ACT)
				continue;
			p = m->tensors[nd->in[k]].producer;
			if (!m->nodes[p].needed) {
				m->nodes[p].needed = 1;
				stack[top++] = p;
			}
		}
	}
	free(stack);
	m->g.n_cuts = n;
	for (int k = 0; k < n; k++) {
		m->g.cut_nodes[k] = nodes[k];
		m->g.cut_tensors[k] = tensors[k];
		m->g.cut_dims[k] = dims[k];
	}
	m->g.cut_node = nodes[0];
	m->g.cut_tensor = tensors[0];
	m->g.pool = m->tensors[tensors[0]].ndim == 4;
	m->g.embed_dim = total;
	m->g.token_pool = pool;
	m->g.prefix_tokens = prefix;
	return 0;
}

int fci_model_apply_cut(fc_model *m, int node, int t)
{
	return fci_model_apply_cuts(m, 1, &node, &t, FC_POOL_AUTO, 1);
}

/* Layer name -> node and its alias-resolved output tensor. */
static int find_cut(fc_model *m, const char *name, int *node, int *t)
{
	*node = fc_model_find_layer(m, name);
	if (*node < 0)
		return fci_model_fail(m, FC_ERR_NOT_FOUND, "no layer named '%s'", fci_model_q(m, 0, name));
	*t = m->tensors[m->nodes[*node].out[0]].source;
	return 0;
}

int fc_model_check_pooling(fc_model *m)
{
	for (int k = 0; m->g.token_pool == FC_POOL_AUTO && k < m->g.n_cuts; k++) {
		const fc_model_tensor *t = &m->g.tensors[m->g.cut_tensors[k]];
		if (t->ndim == 3)
			return fci_model_fail(m, FC_ERR_INVALID,
					      "layer '%s' outputs tokens (%lldx%lldx%lld): choose a pooling (cls, mean, "
					      "cls+mean, or flatten to keep them all)",
					      m->g.nodes[m->g.cut_nodes[k]].name, (long long)t->dims[0],
					      (long long)t->dims[1], (long long)t->dims[2]);
	}
	return 0;
}

int fc_model_cut_tokens(fc_model *m, const char *layers, int pool, int prefix_tokens)
{
	int nodes[FC_MODEL_MAX_CUTS], tensors[FC_MODEL_MAX_CUTS], n = 0, rc;

	if (!layers) {
		if (m->g.default_node < 0)
			return fci_model_fail(m, FC_ERR_NOT_FOUND,
					     "the model has no default embedding layer: name one");
		nodes[0] = m->g.default_node;
		tensors[0] = m->g.default_tensor;
		n = 1;
	} else if (fc_model_find_layer(m, layers) >= 0 || !strchr(layers, ',')) {
		if ((rc = find_cut(m, layers, &nodes[0], &tensors[0])))
			return rc;
		n = 1;
	} else {
		char part[512];

		for (const char *p = layers;; p++) {
			const char *e = strchr(p, ',');
			size_t len = e ? (size_t)(e - p) : strlen(p);

			if (n == FC_MODEL_MAX_CUTS)
				return fci_model_fail(m, FC_ERR_INVALID, "more than %d layers",
						     FC_MODEL_MAX_CUTS);
			if (len == 0 || len >= sizeof part)
				return fci_model_fail(m, FC_ERR_NOT_FOUND, "no layer named '%.*s'",
						     (int)(len < 64 ? len : 64), p);
			memcpy(part, p, len);
			part[len] = 0;
			if ((rc = find_cut(m, part, &nodes[n], &tensors[n])))
				return rc;
			n++;
			if (!e)
				break;
			p = e;
		}
	}
	/* apply_cuts checks before it changes anything */
	rc = fci_model_apply_cuts(m, n, nodes, tensors, pool, prefix_tokens < 0 ? 1 : prefix_tokens);
	if (!rc)
		m->err[0] = 0;
	return rc;
}

int fc_model_cut(fc_model *m, const char *layer)
{
	int node, t, rc;

	if (!layer) {
		if (m->g.default_node < 0)
			return fci_model_fail(m, FC_ERR_NOT_FOUND,
					     "the model has no default embedding layer: name one");
		node = m->g.default_node;
		t = m->g.default_tensor;
	} else if ((rc = find_cut(m, layer, &node, &t))) {
		return rc;
	}
	rc = fci_model_apply_cut(m, node, t);
	if (!rc)
		m->err[0] = 0;
	return rc;
}
