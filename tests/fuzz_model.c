/*
 * fuzz_model.c - libFuzzer target for the ONNX model reader and validator
 * (extract/onnx_read.c, model.c, model_infer.c, model_cut.c).
 *
 * Every input is a whole model file for fc_model_open_mem. It must be
 * refused (negative code, a message, *out NULL) or give a graph that
 * holds together: every input of every node produced before it, computed
 * shapes positive and matching their element counts, the cut needed.
 * An accepted model is then pushed around the way callers will: another
 * batch and size, and a cut at each of its first layers.
 * The seeds in tests/corpus/fuzz_model/ are small models written by
 * tools/export_models.py --corpus.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "featcache/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const fc_model *m)
{
	const fc_model_graph *g = fc_model_get_graph(m);

	if (g->input < 0 || g->input >= g->n_tensors ||
	    g->tensors[g->input].kind != FC_TENSOR_INPUT)
		abort();
	for (int i = 0; i < g->n_nodes; i++) {
		const fc_model_node *nd = &g->nodes[i];

		if (nd->op < 0 || nd->op >= FC_OP_COUNT || nd->n_out < 1)
			abort();
		for (int k = 0; k < nd->n_in; k++) {
			const fc_model_tensor *t;

			if (nd->in[k] < -1 || nd->in[k] >= g->n_tensors)
				abort();
			if (nd->in[k] < 0)
				continue;
			t = &g->tensors[nd->in[k]];
			if (t->kind == FC_TENSOR_NONE || t->source != nd->in[k])
				abort();
			if (t->kind == FC_TENSOR_ACT && (t->producer < 0 || t->producer >= i))
				abort();
			if (t->kind == FC_TENSOR_CONST && t->numel > 0) {
				/* touch both ends of the data */
				volatile double sink = t->elem == FC_ELEM_F32
							       ? (double)t->f32[0] + t->f32[t->numel - 1]
							       : (double)t->i64[0] + (double)t->i64[t->numel - 1];
				(void)sink;
			}
		}
		if (nd->state == FC_NODE_RUN) {
			const fc_model_tensor *o = &g->tensors[nd->out[0]];
			int64_t n = 1;

			if (o->kind != FC_TENSOR_ACT || o->ndim < 0 || o->ndim > FC_MODEL_MAX_DIMS)
				abort();
			for (int d = 0; d < o->ndim; d++) {
				if (o->dims[d] < 1)
					abort();
				n *= o->dims[d];
			}
			if (n != o->numel)
				abort();
		}
	}
	if (g->cut_tensor >= 0 && (g->tensors[g->cut_tensor].kind != FC_TENSOR_ACT ||
				   g->embed_dim < 1 ||
				   !g->nodes[g->tensors[g->cut_tensor].producer].needed))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fc_model *m = (fc_model *)1;
	char err[FC_ERRLEN];
	const fc_model_graph *g;
	int rc = fc_model_open_mem(&m, data, size, err, sizeof err);
	int tried = 0;

	if (rc > 0)
		abort();
	if (rc < 0) {
		if (m || !err[0])
			abort();
		return 0;
	}
	check(m);
	g = fc_model_get_graph(m);
	rc = fc_model_set_input(m, 3, 0, (size % 7) ? 0 : 17, 0);
	if (rc > 0 || (rc < 0 && !fc_model_errmsg(m)[0]))
		abort();
	check(m);
	for (int i = 0; i < g->n_nodes && tried < 16; i++) {
		if (!fc_model_is_layer(m, i))
			continue;
		tried++;
		rc = fc_model_cut(m, g->nodes[i].name);
		if (rc > 0 || (rc < 0 && !fc_model_errmsg(m)[0]))
			abort();
		check(m);
	}
	fc_model_free(m);
	return 0;
}
