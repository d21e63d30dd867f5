/*
 * test_tokens.c - cuts of token models (issue 11): a layer whose output
 * is N x T x D pooled as cls, mean, cls+mean or flatten, several layers
 * concatenated ("A,B"), the default layer of a model without a final
 * classifier, and what the extractor records of all this. The graph is
 * small enough to compute here by hand: the image reshaped into tokens,
 * Relu ("blk1"), Sigmoid ("blk2"), a MatMul classifier on the tokens; the
 * engine's pooled output is compared with naive C pooling of those.
 *
 * Not here: the ops themselves (test_transformer_ops.c).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "featcache/engine.h"
#include "featcache/extract.h"
#include "featcache/model.h"
#include "tests/testlib.h"

#define N 3
#define T 32 /* 3 x 8 x 8 pixels as 32 tokens of 6 */
#define D 6

/* x [N,3,8,8] -> tokens [N,T,D] -> blk1 Relu -> blk2 Sigmoid -> head
 * MatMul [D,5] = the output; "flat" flattens blk2 beside it. With
 * classifier 0 the output is blk2 itself (a headless model). */
static void token_model(fci_onnx *b, int classifier)
{
	static const int64_t xd[4] = { N, 3, 8, 8 }, td[3] = { 0, T, D }; /* 0: the batch */

	testlib_model_init(b, 17);
	testlib_input(b, "x", 4, xd);
	testlib_init_i64(b, "tshape", 3, td);
	testlib_node(b, "Reshape", "to_tokens", "x,tshape", "tok");
	testlib_node(b, "Relu", "blk1", "tok", "t1");
	testlib_node(b, "Sigmoid", "blk2", "t1", "t2");
	testlib_node(b, "Flatten", "flat", "t2", "f");
	if (classifier) {
		testlib_init_f32(b, "w", 2, (const int64_t[]){ D, 5 });
		testlib_node(b, "MatMul", "head", "t2,w", "y");
		testlib_output(b, "y");
	} else {
		testlib_output(b, "t2");
	}
}

static fc_model *open_model(fci_onnx *b)
{
	char err[FC_ERRLEN];
	fc_model *m = NULL;

	if (testlib_open(b, &m, err))
		fail_msg("open: %s", err);
	return m;
}

/* The tokens blk1 (k = 0) or blk2 (k = 1) make of image n, by hand. */
static float tok(const float *x, int k, int n, int t, int d)
{
	float v = x[(size_t)n * T * D + (size_t)t * D + (size_t)d];

	v = v > 0 ? v : 0;
	return k ? 1.0f / (1.0f + expf(-v)) : v;
}

/* Naive pooling of cut k into y (its columns), as model.h says. */
static size_t pool_ref(float *y, const float *x, int k, int n, int pool, int prefix)
{
	size_t w = 0;

	if (pool == FC_POOL_AUTO || pool == FC_POOL_FLATTEN) {
		for (int t = 0; t < T; t++)
			for (int d = 0; d < D; d++)
				y[w++] = tok(x, k, n, t, d);
		return w;
	}
	if (pool != FC_POOL_MEAN)
		for (int d = 0; d < D; d++)
			y[w++] = tok(x, k, n, 0, d);
	if (pool != FC_POOL_CLS)
		for (int d = 0; d < D; d++) {
			double s = 0;
			for (int t = prefix; t < T; t++)
				s += tok(x, k, n, t, d);
			y[w++] = (float)(s / (T - prefix));
		}
	return w;
}

/* Cut at layers with pool/prefix, run the engine on random images and
 * compare with pool_ref over the listed cuts (0 = blk1, 1 = blk2). */
static void pooled_case(const char *layers, const int *cuts, int n_cuts, int pool, int prefix,
			int64_t want_dim)
{
	fci_onnx b;
	fc_model *m;
	fc_engine *e = NULL;
	char err[FC_ERRLEN];
	fc_engine_opts o = { .batch = N, .precision = FC_PREC_F32, .threads = 1 };
	float x[N * 3 * 8 * 8], *out, *ref;

	token_model(&b, 1);
	m = open_model(&b);
	if (fc_model_cut_tokens(m, layers, pool, prefix))
		fail_msg("cut '%s' %s/%d: %s", layers, fc_pool_name(pool), prefix, fc_model_errmsg(m));
	assert_int_equal(fc_model_get_graph(m)->embed_dim, want_dim);
	assert_int_equal(fc_model_get_graph(m)->n_cuts, n_cuts);
	for (size_t i = 0; i < sizeof x / sizeof x[0]; i++)
		x[i] = testlib_float(-2.0f, 2.0f);
	if (fc_engine_open(&e, m, &o, err, sizeof err))
		fail_msg("engine: %s", err);
	assert_int_equal((int64_t)fc_engine_dim(e), want_dim);
	out = calloc((size_t)(N * want_dim), sizeof *out);
	ref = calloc((size_t)(N * want_dim), sizeof *ref);
	assert_non_null(out);
	assert_non_null(ref);
	assert_int_equal(fc_engine_run(e, out, x, N), 0);
	for (int n = 0; n < N; n++) {
		size_t w = 0;
		for (int k = 0; k < n_cuts; k++)
			w += pool_ref(ref + (size_t)n * (size_t)want_dim + w, x, cuts[k], n, pool, prefix);
		assert_int_equal((int64_t)w, want_dim);
	}
	double err_rel = testlib_rel_err(out, ref, (size_t)(N * want_dim));
	if (err_rel > 1e-6)
		fail_msg("'%s' %s prefix %d: rel err %g", layers, fc_pool_name(pool), prefix, err_rel);
	free(out);
	free(ref);
	fc_engine_free(e);
	fc_model_free(m);
	fci_onnx_free(&b);
}

static void test_pooling(void **state)
{
	(void)state;
	pooled_case("blk2", (const int[]){ 1 }, 1, FC_POOL_CLS, 1, D);
	pooled_case("blk2", (const int[]){ 1 }, 1, FC_POOL_MEAN, 1, D);
	pooled_case("blk2", (const int[]){ 1 }, 1, FC_POOL_MEAN, 0, D);
	pooled_case("blk1", (const int[]){ 0 }, 1, FC_POOL_CLS_MEAN, 5, 2 * D);
	pooled_case("blk2", (const int[]){ 1 }, 1, FC_POOL_FLATTEN, 1, T * D);
	pooled_case("blk2", (const int[]){ 1 }, 1, FC_POOL_AUTO, 1, T * D);
	/* DINOv2's "last blocks": several layers, each pooled, in order */
	pooled_case("blk1,blk2", (const int[]){ 0, 1 }, 2, FC_POOL_CLS_MEAN, 2, 4 * D);
	pooled_case("blk2,blk1", (const int[]){ 1, 0 }, 2, FC_POOL_MEAN, 1, 2 * D);
	/* the same tensor by its output name */
	pooled_case("t1,blk2", (const int[]){ 0, 1 }, 2, FC_POOL_CLS, 1, 2 * D);
}

static void test_default_layer(void **state)
{
	(void)state;
	fci_onnx b;
	fc_model *m;
	const fc_model_graph *g;

	/* The input of the final classifier, even on tokens. */
	token_model(&b, 1);
	m = open_model(&b);
	g = fc_model_get_graph(m);
	assert_string_equal(g->nodes[g->default_node].name, "blk2");
	assert_int_equal(g->n_cuts, 1);
	assert_int_equal(g->token_pool, FC_POOL_AUTO);
	fc_model_free(m);
	fci_onnx_free(&b);

	/* No classifier: the model is its own embedding, though MatMuls may
	 * run inside it (here none does) */
	token_model(&b, 0);
	m = open_model(&b);
	g = fc_model_get_graph(m);
	assert_int_equal(g->default_tensor, testlib_tensor_id(g, "t2"));
	fc_model_free(m);
	fci_onnx_free(&b);
}

static void cut_fails(const char *layers, int pool, int prefix, int code, const char *needle)
{
	fci_onnx b;
	fc_model *m;
	const fc_model_graph *g;

	token_model(&b, 1);
	m = open_model(&b);
	g = fc_model_get_graph(m);
	int before = g->cut_tensor;
	int rc = fc_model_cut_tokens(m, layers, pool, prefix);
	if (rc != code || !strstr(fc_model_errmsg(m), needle))
		fail_msg("cut '%s' %s/%d: %d '%s', want %d and '%s'", layers, fc_pool_name(pool), prefix, rc,
			 fc_model_errmsg(m), code, needle);
	assert_int_equal(g->cut_tensor, before); /* a failed cut keeps the old one */
	assert_int_equal(g->n_cuts, 1);
	fc_model_free(m);
	fci_onnx_free(&b);
}

static void test_bad_cuts(void **state)
{
	(void)state;
	cut_fails("blk2", FC_POOL_CLS, 0, FC_ERR_INVALID, "prefix");
	cut_fails("blk2", FC_POOL_CLS_MEAN, 0, FC_ERR_INVALID, "prefix");
	cut_fails("blk2", FC_POOL_MEAN, T, FC_ERR_INVALID, "none is left");
	cut_fails("blk2", FC_POOL_CLS, T + 1, FC_ERR_INVALID, "fewer than");
	cut_fails("flat", FC_POOL_CLS, 1, FC_ERR_INVALID, "token tensors");
	cut_fails("blk1,blk1", FC_POOL_CLS, 1, FC_ERR_INVALID, "twice");
	cut_fails("blk1,t1", FC_POOL_CLS, 1, FC_ERR_INVALID, "twice");
	cut_fails("blk1,nope", FC_POOL_CLS, 1, FC_ERR_NOT_FOUND, "'nope'");
	cut_fails("blk1,", FC_POOL_CLS, 1, FC_ERR_NOT_FOUND, "no layer");
	cut_fails("blk1,blk2,flat,to_tokens,blk1,blk2,flat,to_tokens,blk1", FC_POOL_MEAN, 1,
		  FC_ERR_INVALID, "more than 8");
	cut_fails("blk2", 99, 1, FC_ERR_INVALID, "pooling");
}

/* Another batch keeps every cut, its pooling and its prefix. */
static void test_set_input_keeps_cuts(void **state)
{
	(void)state;
	fci_onnx b;
	fc_model *m;
	const fc_model_graph *g;

	token_model(&b, 1);
	m = open_model(&b);
	assert_int_equal(fc_model_cut_tokens(m, "blk1,blk2", FC_POOL_CLS_MEAN, 3), 0);
	assert_int_equal(fc_model_set_input(m, 7, 0, 0, 0), 0);
	g = fc_model_get_graph(m);
	assert_int_equal(g->n_cuts, 2);
	assert_int_equal(g->cut_tensors[0], testlib_tensor_id(g, "t1"));
	assert_int_equal(g->cut_tensors[1], testlib_tensor_id(g, "t2"));
	assert_int_equal(g->token_pool, FC_POOL_CLS_MEAN);
	assert_int_equal(g->prefix_tokens, 3);
	assert_int_equal(g->embed_dim, 4 * D);
	assert_int_equal(g->tensors[g->cut_tensors[1]].dims[0], 7);
	fc_model_free(m);
	fci_onnx_free(&b);
}

/* The extractor asks for a pooling of tokens, records it in its
 * descriptor and id, and a store's descriptor reproduces it. */
static void test_extractor(void **state)
{
	(void)state;
	fci_onnx b;
	char *dir = testlib_tmpdir("tokens"), path[512], err[FC_ERRLEN];
	fc_extract_ctx *x = NULL, *y = NULL;
	fc_extractor_opts o = { .model = path, .precision = FC_PREC_F32, .store_dtype = FC_DTYPE_F32,
				.batch = 2, .threads = 1 };
	uint8_t id_cls[16];

	snprintf(path, sizeof path, "%s/tok.onnx", dir);
	token_model(&b, 1);
	testlib_write(&b.model, path);
	assert_int_equal(fc_preproc_preset(&o.pre, "torchvision", 8), 0);

	/* the default layer is tokens: say how to pool them */
	assert_int_equal(fc_extract_open(&x, &o, err, sizeof err), FC_ERR_INVALID);
	if (!strstr(err, "'blk2'") || !strstr(err, "choose a pooling"))
		fail_msg("%s", err);

	o.pool = FC_POOL_CLS;
	o.prefix_tokens = 1;
	if (fc_extract_open(&x, &o, err, sizeof err))
		fail_msg("%s", err);
	assert_int_equal(fc_extract_dim(x), D);
	assert_non_null(strstr(fc_extract_descriptor(x), "\"token_pool\":\"cls\""));
	assert_non_null(strstr(fc_extract_descriptor(x), "\"prefix_tokens\":1"));
	memcpy(id_cls, fc_extract_id(x), 16);
	if (fc_extract_open_like(&y, path, fc_extract_descriptor(x), FC_DTYPE_F32, 2, 1, err, sizeof err))
		fail_msg("%s", err);
	assert_memory_equal(fc_extract_id(y), id_cls, 16);
	fc_extract_free(y);
	fc_extract_free(x);

	/* mean is another feature set; so are two layers */
	o.pool = FC_POOL_MEAN;
	assert_int_equal(fc_extract_open(&x, &o, err, sizeof err), 0);
	assert_memory_not_equal(fc_extract_id(x), id_cls, 16);
	fc_extract_free(x);
	o.layer = "blk1,blk2";
	if (fc_extract_open(&x, &o, err, sizeof err))
		fail_msg("%s", err);
	assert_int_equal(fc_extract_dim(x), 2 * D);
	assert_non_null(strstr(fc_extract_descriptor(x), "\"tensors\":[\"t1\",\"t2\"]"));
	if (fc_extract_open_like(&y, path, fc_extract_descriptor(x), FC_DTYPE_F32, 2, 1, err, sizeof err))
		fail_msg("%s", err);
	assert_memory_equal(fc_extract_id(y), fc_extract_id(x), 16);
	assert_int_equal(fc_extract_dim(y), 2 * D);
	fc_extract_free(y);
	fc_extract_free(x);

	fci_onnx_free(&b);
	testlib_rmtree(dir);
	free(dir);
}

int main(void)
{
	testlib_seed("test_tokens");
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pooling),
		cmocka_unit_test(test_default_layer),
		cmocka_unit_test(test_bad_cuts),
		cmocka_unit_test(test_set_input_keeps_cuts),
		cmocka_unit_test(test_extractor),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
