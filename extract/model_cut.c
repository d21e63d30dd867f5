/*
 * model_cut.c - Finetuner's Tailor on an ONNX graph: which nodes are
 * layers, which one is the default embedding layer, and what a cut keeps.
 *
 * The default embedding is the activation feeding the last Gemm/MatMul
 * (the classifier's input: for ResNet-50 the flattened 2048-d average
 * pool); a model without one (SqueezeNet's classifier is a Conv) uses the
 * input of the last Conv, a 4-D map that gets average-pooled; a model with
 * neither uses its first output. A cut marks the nodes the embedding
 * depends on (`needed`); everything else is dropped by the engine.
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

void fci_model_find_default(fc_model *m)
{
	int i, t = -1;

	m->g.default_node = m->g.default_tensor = -1;
	/* A model whose output is L2-normalised is an embedding model already
	 * (`featcache export` writes them): its output is the embedding. */
	int o = m->tensors[m->out0].source;
	if (o >= 0 && m->tensors[o].producer >= 0 && m->nodes[m->tensors[o].producer].op == FC_OP_LPNORM &&
	    m->nodes[m->tensors[o].producer].state == FC_NODE_RUN)
		t = o;
	else if ((i = last_run(m, FC_OP_GEMM, FC_OP_MATMUL)) >= 0 || (i = last_run(m, FC_OP_CONV, FC_OP_CONV)) >= 0)
		t = m->nodes[i].in[0]; /* the data input: inference made it an activation */
	else
		t = m->tensors[m->out0].source;
	if (t < 0 || m->tensors[t].kind != FC_TENSOR_ACT || m->tensors[t].producer < 0)
		return;
	m->g.default_tensor = t;
	m->g.default_node = m->tensors[t].producer;
}

int fci_model_apply_cut(fc_model *m, int node, int t)
{
	const fc_model_tensor *x = &m->tensors[t];
	const char *name = fci_model_q(m, 0, m->nodes[node].name);
	int *stack, top = 0;
	int64_t dim = 1;
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
	if (x->ndim == 4)
		dim = x->dims[1];
	else
		for (int i = 1; i < x->ndim; i++)
			dim *= x->dims[i];

	stack = malloc(sizeof *stack * ((size_t)m->n_nodes + 1));
	if (!stack)
		return fci_model_fail(m, FC_ERR_NOMEM, "out of memory");
	for (int i = 0; i < m->n_nodes; i++)
		m->nodes[i].needed = 0;
	m->g.cut_params = 0;
	stack[top++] = x->producer;
	m->nodes[x->producer].needed = 1;
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
	m->g.cut_node = node;
	m->g.cut_tensor = t;
	m->g.pool = x->ndim == 4;
	m->g.embed_dim = dim;
	return 0;
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
	} else {
		node = fc_model_find_layer(m, layer);
		if (node < 0)
			return fci_model_fail(m, FC_ERR_NOT_FOUND, "no layer named '%s'",
					     fci_model_q(m, 0, layer));
		t = m->tensors[m->nodes[node].out[0]].source;
	}
	/* apply_cut checks before it changes anything */
	rc = fci_model_apply_cut(m, node, t);
	if (!rc)
		m->err[0] = 0;
	return rc;
}
