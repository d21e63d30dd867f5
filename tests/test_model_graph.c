/*
 * test_model_graph.c - unit tests of the ONNX import (extract/model*.c,
 * extract/onnx_read.c) on tiny graphs written with testlib's ONNX builder
 * (io's writer: the generated protobuf-c structs, which a test may break
 * on purpose), one rule at a time: cycles, dangling inputs, duplicate
 * outputs, unsupported ops, initializers that do not match their dims,
 * absurd and negative dims, external data, float16/bfloat16 initializers,
 * Clip bounds, Squeeze/Unsqueeze and Pad in both opset styles, folding of
 * torch's shape chains, pooling rules, cuts; the protobuf wire format
 * (unknown fields, truncations, groups, wrong wire types, absurd counts);
 * and the writer itself (what it sets reads back, in bytes and files).
 * Model files (fixtures, hostile bytes) are test_model.c.
 *
 * Nothing here is random.
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
#include <unistd.h>

#include "featcache/model.h"
#include "tests/testlib.h"

/* ---- graph helpers ---- */

static int nid(const fc_model_graph *g, const char *name)
{
	for (int i = 0; i < g->n_nodes; i++)
		if (strcmp(g->nodes[i].name, name) == 0)
			return i;
	return -1;
}

static const fc_model_tensor *tensor(const fc_model_graph *g, const char *name)
{
	int i = testlib_tensor_id(g, name);

	if (i < 0)
		fail_msg("no tensor '%s'", name);
	return &g->tensors[i];
}

static void expect_shape(const fc_model_graph *g, const char *name, int ndim, ...)
{
	const fc_model_tensor *t = tensor(g, name);
	va_list ap;

	if (t->ndim != ndim)
		fail_msg("tensor '%s' has rank %d, expected %d", name, t->ndim, ndim);
	va_start(ap, ndim);
	for (int i = 0; i < ndim; i++) {
		long long want = va_arg(ap, long long);

		if (t->dims[i] != want)
			fail_msg("tensor '%s' dim %d is %lld, expected %lld", name, i,
				 (long long)t->dims[i], want);
	}
	va_end(ap);
}
static void check_invariants(const fc_model *m)
{
	assert_true(testlib_model_consistent(m));
}

/* ---- models written with testlib's builder ---- */

/* Open must fail with code (0: any) and a message holding each of up to
 * three substrings. */
static void expect_fail(fci_onnx *b, int code, const char *s1, const char *s2, const char *s3)
{
	fc_model *m = (fc_model *)1;
	char err[FC_ERRLEN];
	int rc = testlib_open(b, &m, err);

	if (rc >= 0)
		fail_msg("opened a model that should fail (wanted '%s')", s1 ? s1 : "");
	assert_null(m);
	if (code && rc != code)
		fail_msg("error %d (%s), wanted %d", rc, err, code);
	assert_true(err[0] != 0);
	if ((s1 && !strstr(err, s1)) || (s2 && !strstr(err, s2)) || (s3 && !strstr(err, s3)))
		fail_msg("message '%s' lacks '%s' / '%s' / '%s'", err, s1 ? s1 : "", s2 ? s2 : "",
			 s3 ? s3 : "");
	print_message("#   refused: %s\n", err);
}

static fc_model *expect_open(fci_onnx *b)
{
	fc_model *m = NULL;
	char err[FC_ERRLEN];
	int rc = testlib_open(b, &m, err);

	if (rc)
		fail_msg("open failed: %d %s", rc, err);
	check_invariants(m);
	return m;
}

static const int64_t D1x3x8x8[4] = { 1, 3, 8, 8 };

/* x (1x3x8x8) -> conv (4, 3x3, pad 1) -> relu -> gap -> flatten -> fc (2). */
static void tiny_net(fci_onnx *b, int opset)
{
	static const int64_t w[4] = { 4, 3, 3, 3 }, bias[1] = { 4 }, fw[2] = { 2, 4 }, fb[1] = { 2 };
	Onnx__NodeProto *n;

	testlib_model_init(b, opset);
	testlib_input(b, "x", 4, D1x3x8x8);
	testlib_init_f32(b, "w", 4, w);
	testlib_init_f32(b, "b", 1, bias);
	testlib_init_f32(b, "fw", 2, fw);
	testlib_init_f32(b, "fb", 1, fb);
	n = testlib_node(b, "Conv", "conv", "x,w,b", "c");
	testlib_attr_ints(b, n, "kernel_shape", 2, 3LL, 3LL);
	testlib_attr_ints(b, n, "pads", 4, 1LL, 1LL, 1LL, 1LL);
	testlib_node(b, "Relu", "relu", "c", "r");
	testlib_node(b, "GlobalAveragePool", "gap", "r", "p");
	testlib_node(b, "Flatten", "flat", "p", "f");
	n = testlib_node(b, "Gemm", "fc", "f,fw,fb", "y");
	testlib_attr_i(b, n, "transB", 1);
	testlib_output(b, "y");
}

/* ---- the rules ---- */

static void test_tiny_net(void **state)
{
	fci_onnx b;
	fc_model *m;
	const fc_model_graph *g;
	const fc_model_node *conv;

	(void)state;
	tiny_net(&b, 13);
	m = expect_open(&b);
	g = fc_model_get_graph(m);
	expect_shape(g, "c", 4, 1LL, 4LL, 8LL, 8LL);
	expect_shape(g, "p", 4, 1LL, 4LL, 1LL, 1LL);
	expect_shape(g, "f", 2, 1LL, 4LL);
	expect_shape(g, "y", 2, 1LL, 2LL);
	assert_int_equal(g->params, 4 * 27 + 4 + 8 + 2);
	assert_string_equal(g->nodes[g->default_node].name, "flat");
	assert_int_equal(g->embed_dim, 4);
	assert_int_equal(g->pool, 0);
	assert_int_equal(g->cut_params, 4 * 27 + 4);
	assert_false(g->nodes[nid(g, "fc")].needed);
	conv = &g->nodes[nid(g, "conv")];
	assert_int_equal(conv->op, FC_OP_CONV);
	assert_int_equal(conv->attr.conv.pad[0], 1);
	assert_int_equal(conv->attr.conv.pad[3], 1);
	assert_int_equal(conv->attr.conv.group, 1);
	assert_int_equal(conv->params, 4 * 27 + 4);
	assert_int_equal(g->nodes[nid(g, "fc")].attr.gemm.trans_b, 1);
	assert_true(g->nodes[nid(g, "fc")].attr.gemm.alpha == 1.0f);

	/* other sizes and batches */
	assert_int_equal(fc_model_set_input(m, 5, 0, 17, 9), 0);
	expect_shape(g, "c", 4, 5LL, 4LL, 17LL, 9LL);
	expect_shape(g, "y", 2, 5LL, 2LL);
	assert_int_equal(g->embed_dim, 4);
	assert_true(fc_model_set_input(m, 0, 5, 0, 0) < 0); /* 5 channels do not fit the weight */
	assert_non_null(strstr(fc_model_errmsg(m), "conv"));
	expect_shape(g, "c", 4, 5LL, 4LL, 17LL, 9LL); /* kept */
	assert_int_equal(fc_model_set_input(m, 0, 0, 1 << 17, 0), FC_ERR_INVALID);
	check_invariants(m);

	/* cuts */
	assert_int_equal(fc_model_cut(m, "relu"), 0);
	assert_int_equal(g->pool, 1);
	assert_int_equal(g->embed_dim, 4);
	assert_true(g->nodes[nid(g, "conv")].needed);
	assert_false(g->nodes[nid(g, "gap")].needed);
	assert_int_equal(fc_model_cut(m, "p"), 0); /* by tensor name */
	assert_int_equal(g->cut_node, nid(g, "gap"));
	assert_int_equal(g->pool, 1);
	assert_int_equal(fc_model_cut(m, "nothing"), FC_ERR_NOT_FOUND);
	assert_non_null(strstr(fc_model_errmsg(m), "nothing"));
	assert_int_equal(g->cut_node, nid(g, "gap")); /* kept */
	assert_int_equal(fc_model_cut(m, "w"), FC_ERR_NOT_FOUND); /* an initializer is no layer */
	assert_int_equal(fc_model_cut(m, NULL), 0);
	assert_int_equal(g->cut_node, nid(g, "flat"));
	assert_int_equal(fc_model_find_layer(m, "fc"), nid(g, "fc"));
	assert_int_equal(fc_model_find_layer(m, "y"), nid(g, "fc"));
	assert_true(fc_model_is_layer(m, nid(g, "fc")));
	fc_model_free(m);
	fci_onnx_free(&b);
	fc_model_free(NULL);
}

static void test_cycle(void **state)
{
	fci_onnx b;

	(void)state;
	testlib_model_init(&b, 13);
	testlib_input(&b, "x", 4, D1x3x8x8);
	testlib_node(&b, "Relu", "first", "t2", "t1");
	testlib_node(&b, "Sigmoid", "second", "t1", "t2");
	testlib_node(&b, "Add", "join", "x,t2", "y");
	testlib_output(&b, "y");
	expect_fail(&b, FC_ERR_CORRUPT, "cycle", "node '", NULL);
	fci_onnx_free(&b);

	/* a node reading its own output */
	testlib_model_init(&b, 13);
	testlib_input(&b, "x", 4, D1x3x8x8);
	testlib_node(&b, "Add", "selfish", "x,y", "y");
	testlib_output(&b, "y");
	expect_fail(&b, FC_ERR_CORRUPT, "cycle", "'selfish' (Add)", NULL);
	fci_onnx_free(&b);

	/* out of order but acyclic: sorted, not refused */
	{
		fc_model *m;
		const fc_model_graph *g;

		testlib_model_init(&b, 13);
		testlib_input(&b, "x", 4, D1x3x8x8);
		testlib_node(&b, "Relu", "late", "s", "y");
		testlib_node(&b, "Sigmoid", "early", "x", "s");
		testlib_output(&b, "y");
		m = expect_open(&b);
		g = fc_model_get_graph(m);
		assert_string_equal(g->nodes[0].name, "early");
		assert_string_equal(g->nodes[1].name, "late");
		fc_model_free(m);
		fci_onnx_free(&b);
	}
}

/* What opening a broken model must give: the code and up to three pieces
 * of the message (see expect_fail). */
typedef struct refusal {
	int code;
	const char *s1, *s2, *s3;
} refusal;

/* All four fields, NULL for the pieces not needed. */
static refusal refuse(int code, const char *s1, const char *s2, const char *s3)
{
	return (refusal){ code, s1, s2, s3 };
}

/* A breaker changes tiny_net (opset 13) in its i-th way, or frees b and
 * builds another model there, and says how that must be refused; code 0
 * when it knows no i-th way. */
typedef refusal (*breaker)(fci_onnx *b, int i);

/* Every way brk knows of, each refused as it says. */
static void expect_refusals(breaker brk)
{
	refusal r;
	int i = 0;

	do {
		fci_onnx b;

		tiny_net(&b, 13);
		r = brk(&b, i++);
		if (r.code != 0)
			expect_fail(&b, r.code, r.s1, r.s2, r.s3);
		fci_onnx_free(&b);
	} while (r.code != 0);
}

/* Inputs nobody makes, outputs made twice, missing inputs and outputs. */
static refusal break_links(fci_onnx *b, int i)
{
	switch (i) {
	case 0:
		b->graph.node[1]->input[0] = testlib_str(b, "ghost");
		return refuse(FC_ERR_CORRUPT, "'relu' (Relu)", "'ghost'", "not produced");
	case 1:
		b->graph.output[0]->name = testlib_str(b, "nowhere");
		return refuse(FC_ERR_CORRUPT, "graph output 'nowhere'", NULL, NULL);
	case 2: /* gap writes relu's output again */
		b->graph.node[2]->output[0] = testlib_str(b, "r");
		return refuse(FC_ERR_CORRUPT, "'gap'", "'r'", "more than once");
	case 3: /* a node overwriting an initializer */
		b->graph.node[1]->output[0] = testlib_str(b, "w");
		return refuse(FC_ERR_CORRUPT, "'relu'", "'w'", NULL);
	case 4:
		testlib_init_f32(b, "w", 1, (const int64_t[]){ 2 });
		return refuse(FC_ERR_CORRUPT, "initializer 'w'", NULL, NULL);
	case 5: /* Conv without weights */
		b->graph.node[0]->input[1] = testlib_str(b, "");
		return refuse(FC_ERR_CORRUPT, "'conv' (Conv)", "input 2 is missing", NULL);
	case 6:
		b->graph.n_output = 0;
		return refuse(FC_ERR_CORRUPT, "no outputs", NULL, NULL);
	case 7:
		testlib_input(b, "x2", 4, D1x3x8x8);
		return refuse(FC_ERR_UNSUPPORTED, "more than one input", NULL, NULL);
	case 8:
		b->graph.n_input = 0;
		return refuse(FC_ERR_CORRUPT, "no input", NULL, NULL);
	}
	return (refusal){ 0 };
}

static void test_dangling_and_duplicates(void **state)
{
	fci_onnx b;
	fc_model *m;

	(void)state;
	expect_refusals(break_links);

	/* an initializer also listed as an input (old exporters) is fine */
	tiny_net(&b, 13);
	testlib_input(&b, "w", 4, (const int64_t[]){ 4, 3, 3, 3 });
	m = expect_open(&b);
	fc_model_free(m);
	fci_onnx_free(&b);
}

/* Ops, domains, opsets, attributes and input types the import refuses. */
static refusal break_ops(fci_onnx *b, int i)
{
	Onnx__NodeProto *n;

	switch (i) {
	case 0:
		testlib_node(b, "LSTM", "lstm_1", "y", "z");
		return refuse(FC_ERR_UNSUPPORTED, "node 'lstm_1'", "unsupported op 'LSTM'", NULL);
	case 1:
		n = testlib_node(b, "FusedConv", "fused", "y", "z");
		n->domain = testlib_str(b, "com.microsoft");
		return refuse(FC_ERR_UNSUPPORTED, "'fused'", "com.microsoft.FusedConv", NULL);
	case 2: /* a nameless node is named after its op and position */
		testlib_node(b, "Einsum", NULL, "y", "z");
		return refuse(FC_ERR_UNSUPPORTED, "node 'Einsum_5'", "'Einsum'", NULL);
	case 3:
		n = testlib_node(b, "Pad", "reflect", "c,pads", "z");
		testlib_init_i64(b, "pads", 8, (const int64_t[]){ 0, 0, 1, 1, 0, 0, 1, 1 });
		testlib_attr_s(b, n, "mode", "reflect");
		return refuse(FC_ERR_UNSUPPORTED, "'reflect' (Pad)", "mode 'reflect'", NULL);
	case 4: /* Gather of activations takes one index: more are refused, naming the node */
		testlib_init_i64(b, "idx", 2, (const int64_t[]){ 0, 0 });
		testlib_node(b, "Gather", "pick", "f,idx", "z");
		return refuse(FC_ERR_UNSUPPORTED, "'pick' (Gather)", "single index", NULL);
	case 5: /* opsets */
		fci_onnx_free(b);
		tiny_net(b, 21);
		return refuse(FC_ERR_UNSUPPORTED, "opset 21", NULL, NULL);
	case 6:
		fci_onnx_free(b);
		tiny_net(b, 6);
		return refuse(FC_ERR_UNSUPPORTED, "opset 6", NULL, NULL);
	case 7:
		b->model.n_opset_import = 0;
		return refuse(FC_ERR_CORRUPT, "no ai.onnx opset", NULL, NULL);
	case 8: /* a wrongly typed or out-of-range attribute */
		testlib_attr_i(b, b->graph.node[0], "strides", 2);
		return refuse(FC_ERR_CORRUPT, "'conv' (Conv)", "'strides' is INT, expected INTS", NULL);
	case 9:
		testlib_attr_i(b, b->graph.node[0], "group", 0);
		return refuse(FC_ERR_CORRUPT, "'group' is 0", NULL, NULL);
	case 10:
		testlib_attr_ints(b, b->graph.node[0], "pads", 4, 0LL, 0LL, 0LL, 0LL);
		return refuse(FC_ERR_CORRUPT, "'pads' is given twice", NULL, NULL);
	case 11: /* a MaxPool's Indices output, read */
		n = testlib_node(b, "MaxPool", "mp", "c", "mpy,mpi");
		testlib_attr_ints(b, n, "kernel_shape", 2, 2LL, 2LL);
		testlib_node(b, "Relu", "uses_indices", "mpi", "z");
		return refuse(FC_ERR_UNSUPPORTED, "'uses_indices'", "'mpi'", NULL);
	case 12: /* an input that is not float */
		b->graph.input[0]->type->tensor_type->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__UINT8;
		return refuse(FC_ERR_UNSUPPORTED, "input 'x' has type UINT8", NULL, NULL);
	}
	return (refusal){ 0 };
}

static void test_unsupported(void **state)
{
	(void)state;
	expect_refusals(break_ops);
}

/* Initializer data that does not match its dims or type, absurd and
 * negative dims, external data, weights that do not fit. */
static refusal break_initializers(fci_onnx *b, int i)
{
	Onnx__TensorProto **init = b->graph.initializer, *t;
	Onnx__TensorShapeProto *x_shape = b->graph.input[0]->type->tensor_type->shape;
	Onnx__StringStringEntryProto *e;

	switch (i) {
	case 0: /* shorter and longer raw data than the dims need */
		init[0]->raw_data.len -= 4;
		return refuse(FC_ERR_CORRUPT, "initializer 'w'", "428 bytes of data, its dims need 432", NULL);
	case 1:
		init[0]->raw_data.data = testlib_alloc(b, 436);
		init[0]->raw_data.len = 436;
		return refuse(FC_ERR_CORRUPT, "initializer 'w'", "436 bytes", NULL);
	case 2: /* typed data of the wrong count */
		t = init[1];
		t->has_raw_data = 0;
		t->raw_data.len = 0;
		t->n_float_data = 3;
		t->float_data = testlib_alloc(b, 3 * sizeof(float));
		return refuse(FC_ERR_CORRUPT, "initializer 'b'", "3 values, its dims need 4", NULL);
	case 3: /* no data at all */
		init[1]->has_raw_data = 0;
		init[1]->raw_data.len = 0;
		return refuse(FC_ERR_CORRUPT, "initializer 'b'", "0 values", NULL);
	case 4: /* both raw and typed */
		init[1]->n_float_data = 4;
		init[1]->float_data = testlib_alloc(b, 4 * sizeof(float));
		return refuse(FC_ERR_CORRUPT, "both raw_data and typed data", NULL, NULL);
	case 5: /* absurd dims: 2^40 elements, 16 bytes of data */
		t = testlib_tensor(b, "huge", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 2,
				   (const int64_t[]){ 1LL << 20, 1LL << 20 });
		t->has_raw_data = 1;
		t->raw_data.len = 16;
		t->raw_data.data = testlib_alloc(b, 16);
		testlib_add_init(b, t);
		return refuse(FC_ERR_OVERFLOW, "initializer 'huge'", "more than", NULL);
	case 6: /* a single absurd dim, and more dims than supported */
		testlib_add_init(b, testlib_tensor(b, "wide", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 1,
						   (const int64_t[]){ 1LL << 50 }));
		return refuse(FC_ERR_OVERFLOW, "initializer 'wide'", "absurd dim", NULL);
	case 7:
		testlib_add_init(b, testlib_tensor(b, "deep", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 9,
						   (const int64_t[]){ 1, 1, 1, 1, 1, 1, 1, 1, 1 }));
		return refuse(FC_ERR_UNSUPPORTED, "initializer 'deep'", "9 dims", NULL);
	case 8: /* negative dims */
		init[1]->dims[0] = -4;
		return refuse(FC_ERR_CORRUPT, "initializer 'b'", "negative dim (-4)", NULL);
	case 9:
		x_shape->dim[2]->dim_value = -8;
		return refuse(FC_ERR_CORRUPT, "input 'x'", "-8", NULL);
	case 10: /* an absurd input: 2^20 x 2^20 images */
		x_shape->dim[2]->dim_value = 1 << 20;
		x_shape->dim[3]->dim_value = 1 << 20;
		return refuse(FC_ERR_OVERFLOW, "input 'x'", "absurd", NULL);
	case 11: /* an unsupported data type */
		init[1]->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__STRING;
		return refuse(FC_ERR_UNSUPPORTED, "initializer 'b'", "data type STRING", NULL);
	case 12: /* external data, either way it can be said */
		init[0]->has_data_location = 1;
		init[0]->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
		return refuse(FC_ERR_UNSUPPORTED, "initializer 'w'", "external data (not supported yet)", NULL);
	case 13:
		e = testlib_alloc(b, sizeof *e);
		onnx__string_string_entry_proto__init(e);
		e->key = testlib_str(b, "location");
		e->value = testlib_str(b, "weights.bin");
		init[2]->n_external_data = 1;
		init[2]->external_data = testlib_alloc(b, sizeof(void *));
		init[2]->external_data[0] = e;
		init[2]->has_raw_data = 0;
		return refuse(FC_ERR_UNSUPPORTED, "initializer 'fw'", "external data", NULL);
	case 14: /* weights that do not fit the input */
		init[0]->dims[1] = 2;
		init[0]->raw_data.len = 4 * 2 * 9 * 4;
		return refuse(FC_ERR_INVALID, "'conv' (Conv)", "1x3x8x8 does not fit weight 4x2x3x3", NULL);
	case 15:
		init[2]->dims[1] = 5;
		init[2]->raw_data.data = testlib_alloc(b, 40);
		init[2]->raw_data.len = 40;
		return refuse(FC_ERR_INVALID, "'fc' (Gemm)", "does not fit weight 2x5", NULL);
	}
	return (refusal){ 0 };
}

static void test_initializer_sizes(void **state)
{
	(void)state;
	expect_refusals(break_initializers);
}

static uint16_t f16_bits[] = { 0x3c00, 0xc000, 0x7bff, 0x0001, 0x3800, 0x8000, 0x0400, 0x3555 };
static float f16_vals[] = { 1.0f, -2.0f, 65504.0f, 5.9604645e-8f, 0.5f, -0.0f, 6.1035156e-5f,
			    0.33325195f };

static void test_f16_initializers(void **state)
{
	fci_onnx b;
	fc_model *m;
	const fc_model_graph *g;
	const fc_model_tensor *t;

	(void)state;
	for (int form = 0; form < 3; form++) {
		Onnx__TensorProto *x;
		int64_t d8[1] = { 8 };

		tiny_net(&b, 13);
		x = testlib_tensor(&b, "half", form == 2 ? ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16
						    : ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16, 1, d8);
		if (form == 0) { /* raw_data, little-endian 2-byte values */
			uint8_t *raw = testlib_alloc(&b, 16);

			for (int i = 0; i < 8; i++) {
				raw[2 * i] = (uint8_t)(f16_bits[i] & 0xff);
				raw[2 * i + 1] = (uint8_t)(f16_bits[i] >> 8);
			}
			x->has_raw_data = 1;
			x->raw_data.len = 16;
			x->raw_data.data = raw;
		} else { /* int32_data, one value per element */
			x->n_int32_data = 8;
			x->int32_data = testlib_alloc(&b, 8 * sizeof(int32_t));
			for (int i = 0; i < 8; i++)
				x->int32_data[i] = form == 1 ? f16_bits[i] : (int32_t)(0x3f80 + (i << 4));
		}
		testlib_add_init(&b, x); /* unused initializers are decoded and checked too */
		m = expect_open(&b);
		g = fc_model_get_graph(m);
		t = tensor(g, "half");
		assert_int_equal(t->elem, FC_ELEM_F32);
		assert_int_equal(t->numel, 8);
		for (int i = 0; i < 8; i++) {
			float want = form == 2 ? 0 : f16_vals[i];

			if (form == 2) {
				uint32_t bits = (uint32_t)(0x3f80 + (i << 4)) << 16;

				memcpy(&want, &bits, 4);
			}
			if (t->f32[i] != want || signbit(t->f32[i]) != signbit(want))
				fail_msg("form %d value %d: %g, expected %g", form, i, t->f32[i], want);
		}
		fc_model_free(m);
		fci_onnx_free(&b);
	}

	/* a whole f16 model: weights and biases in half precision */
	{
		uint8_t *raw;

		tiny_net(&b, 13);
		for (int k = 0; k < 2; k++) {
			Onnx__TensorProto *w = b.graph.initializer[k];
			size_t n = w->raw_data.len / 4;

			raw = testlib_alloc(&b, 2 * n);
			for (size_t i = 0; i < n; i++)
				raw[2 * i + 1] = 0x3c; /* 1.0 */
			w->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16;
			w->raw_data.data = raw;
			w->raw_data.len = 2 * n;
		}
		b.graph.input[0]->type->tensor_type->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16;
		m = expect_open(&b);
		g = fc_model_get_graph(m);
		t = tensor(g, "w");
		assert_int_equal(t->numel, 108);
		for (int i = 0; i < 108; i++)
			assert_true(t->f32[i] == 1.0f);
		assert_int_equal(g->params, 4 * 27 + 4 + 8 + 2);
		fc_model_free(m);
		fci_onnx_free(&b);

		/* short f16 data is still refused */
		tiny_net(&b, 13);
		b.graph.initializer[0]->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16;
		b.graph.initializer[0]->raw_data.len = 2 * 108 - 2;
		expect_fail(&b, FC_ERR_CORRUPT, "initializer 'w'", "214 bytes", "FLOAT16");
		fci_onnx_free(&b);
	}
}

static void test_clip_bounds(void **state)
{
	fci_onnx b;
	fc_model *m;
	const fc_model_graph *g;
	Onnx__NodeProto *n;

	(void)state;
	/* opset 13: min and max from Constant nodes (as torch exports ReLU6) */
	tiny_net(&b, 13);
	n = testlib_node(&b, "Constant", "cmin", "", "lo");
	testlib_attr_t(&b, n, "value", testlib_f32(&b, NULL, 0, NULL, (const float[]){ 0.0f }));
	n = testlib_node(&b, "Constant", "cmax", "", "hi");
	testlib_attr_f(&b, n, "value_float", 6.0f);
	testlib_node(&b, "Clip", "relu6", "c,lo,hi", "cl");
	m = expect_open(&b);
	g = fc_model_get_graph(m);
	assert_int_equal(g->nodes[nid(g, "cmin")].state, FC_NODE_FOLDED);
	assert_int_equal(g->nodes[nid(g, "relu6")].state, FC_NODE_RUN);
	assert_true(g->nodes[nid(g, "relu6")].attr.clip.min == 0.0f);
	assert_true(g->nodes[nid(g, "relu6")].attr.clip.max == 6.0f);
	expect_shape(g, "cl", 4, 1LL, 4LL, 8LL, 8LL);
	fc_model_free(m);
	fci_onnx_free(&b);

	/* from initializers, only max given */
	tiny_net(&b, 13);
	testlib_add_init(&b, testlib_f32(&b, "six", 0, NULL, (const float[]){ 6.0f }));
	testlib_node(&b, "Clip", "cap", "c,,six", "cl");
	m = expect_open(&b);
	g = fc_model_get_graph(m);
	assert_true(isinf(g->nodes[nid(g, "cap")].attr.clip.min));
	assert_true(g->nodes[nid(g, "cap")].attr.clip.min < 0);
	assert_true(g->nodes[nid(g, "cap")].attr.clip.max == 6.0f);
	fc_model_free(m);
	fci_onnx_free(&b);

	/* opset 10: attributes */
	tiny_net(&b, 10);
	n = testlib_node(&b, "Clip", "old", "c", "cl");
	testlib_attr_f(&b, n, "min", -1.0f);
	testlib_attr_f(&b, n, "max", 2.5f);
	m = expect_open(&b);
	g = fc_model_get_graph(m);
	assert_true(g->nodes[nid(g, "old")].attr.clip.min == -1.0f);
	assert_true(g->nodes[nid(g, "old")].attr.clip.max == 2.5f);
	fc_model_free(m);
	fci_onnx_free(&b);

	/* a bound computed from the image is refused; so is a vector bound */
	tiny_net(&b, 13);
	testlib_node(&b, "Clip", "weird", "c,r", "cl");
	expect_fail(&b, FC_ERR_UNSUPPORTED, "'weird' (Clip)", "min 'r' must be a constant", NULL);
	fci_onnx_free(&b);
	tiny_net(&b, 13);
	testlib_node(&b, "Clip", "vec", "c,b", "cl");
	expect_fail(&b, FC_ERR_CORRUPT, "'vec' (Clip)", "not a scalar", NULL);
	fci_onnx_free(&b);
}

static void test_squeeze_unsqueeze(void **state)
{
	fci_onnx b;
	fc_model *m;
	const fc_model_graph *g;
	Onnx__NodeProto *n;

	(void)state;
	/* opset 11: axes attributes */
	tiny_net(&b, 11);
	n = testlib_node(&b, "Squeeze", "sq", "p", "s");
	testlib_attr_ints(&b, n, "axes", 2, 2LL, -1LL);
	n = testlib_node(&b, "Unsqueeze", "unsq", "s", "u");
	testlib_attr_ints(&b, n, "axes", 2, 1LL, -1LL);
	n = testlib_node(&b, "Squeeze", "sq_all", "p", "s2"); /* no axes: every 1 */
	m = expect_open(&b);
	g = fc_model_get_graph(m);
	expect_shape(g, "s", 2, 1LL, 4LL);
	expect_shape(g, "u", 4, 1LL, 1LL, 4LL, 1LL);
	expect_shape(g, "s2", 1, 4LL);
	assert_true(fc_op_is_view(FC_OP_SQUEEZE));
	/* a cut where the batch dim was squeezed away is refused */
	assert_int_equal(fc_model_cut(m, "sq_all"), FC_ERR_INVALID);
	assert_non_null(strstr(fc_model_errmsg(m), "batch"));
	assert_int_equal(fc_model_cut(m, "unsq"), 0);
	assert_int_equal(g->pool, 1);
	assert_int_equal(g->embed_dim, 1);
	fc_model_free(m);
	fci_onnx_free(&b);

	/* opset 13: axes as inputs */
	tiny_net(&b, 13);
	testlib_init_i64(&b, "ax23", 2, (const int64_t[]){ 2, 3 });
	testlib_init_i64(&b, "ax0", 1, (const int64_t[]){ 0 });
	testlib_node(&b, "Squeeze", "sq", "p,ax23", "s");
	testlib_node(&b, "Unsqueeze", "unsq", "s,ax0", "u");
	m = expect_open(&b);
	g = fc_model_get_graph(m);
	expect_shape(g, "s", 2, 1LL, 4LL);
	expect_shape(g, "u", 3, 1LL, 1LL, 4LL);
	fc_model_free(m);
	fci_onnx_free(&b);

	/* the opset-13 form in an opset-11 model is refused, and vice versa */
	tiny_net(&b, 11);
	testlib_init_i64(&b, "ax23", 2, (const int64_t[]){ 2, 3 });
	testlib_node(&b, "Squeeze", "sq", "p,ax23", "s");
	expect_fail(&b, FC_ERR_CORRUPT, "'sq' (Squeeze)", "2 inputs", NULL);
	fci_onnx_free(&b);
	tiny_net(&b, 13);
	n = testlib_node(&b, "Unsqueeze", "unsq", "p", "u");
	testlib_attr_ints(&b, n, "axes", 1, 0LL);
	expect_fail(&b, FC_ERR_CORRUPT, "'unsq' (Unsqueeze)", "1 inputs", NULL);
	fci_onnx_free(&b);

	/* squeezing a dim that is not 1 */
	tiny_net(&b, 13);
	testlib_init_i64(&b, "ax1", 1, (const int64_t[]){ 1 });
	testlib_node(&b, "Squeeze", "bad", "p,ax1", "s");
	expect_fail(&b, FC_ERR_INVALID, "'bad' (Squeeze)", "axis 1 of size 4", NULL);
	fci_onnx_free(&b);
}

/* A model exported for batches of 1 with the 1 baked into a Reshape (as
 * torch writes a ViT's tokens without a dynamic batch): another batch is
 * refused, and the message says why and what to do; batch 1 still works. */
static void test_fixed_batch(void **state)
{
	(void)state;
	static const int64_t shape[2] = { 1, 192 };
	fci_onnx b;
	testlib_model_init(&b, 13);
	testlib_input(&b, "x", 4, D1x3x8x8);
	testlib_init_i64(&b, "shape", 2, shape);
	testlib_node(&b, "Reshape", "tokens", "x,shape", "t");
	testlib_node(&b, "Relu", "relu", "t", "y");
	testlib_output(&b, "y");
	fc_model *m = expect_open(&b);
	assert_int_equal(fc_model_set_input(m, 2, 0, 0, 0), FC_ERR_INVALID);
	print_message("#   refused: %s\n", fc_model_errmsg(m));
	assert_non_null(strstr(fc_model_errmsg(m), "'tokens'"));
	assert_non_null(strstr(fc_model_errmsg(m), "(the model was exported for batches of 1: export it with a "
							   "dynamic batch, or run it 1 at a time)"));
	assert_int_equal(fc_model_set_input(m, 1, 0, 0, 0), 0);
	fc_model_free(m);
	fci_onnx_free(&b);
}

/* torch's x.view(x.size(0), -1) with a dynamic batch, and F.pad's pads
 * computed at run time: folded for the size chosen. */
static void test_shape_chain_folding(void **state)
{
	static const int64_t dyn[4] = { -1, 3, 8, 8 };
	fci_onnx b;
	fc_model *m;
	const fc_model_graph *g;
	Onnx__NodeProto *n;

	(void)state;
	tiny_net(&b, 13);
	b.graph.input[0] = testlib_value(&b, "x", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 4, dyn);
	testlib_node(&b, "Shape", "shape", "r", "sh");
	n = testlib_node(&b, "Constant", "zero", "", "z");
	testlib_attr_t(&b, n, "value", testlib_i64(&b, NULL, 1, (const int64_t[]){ 0 }));
	b.graph.node[b.graph.n_node - 1]->attribute[0]->t->n_dims = 0; /* a scalar */
	testlib_node(&b, "Gather", "gather", "sh,z", "n");
	testlib_init_i64(&b, "ax0", 1, (const int64_t[]){ 0 });
	testlib_node(&b, "Unsqueeze", "unsq", "n,ax0", "n1");
	testlib_init_i64(&b, "minus1", 1, (const int64_t[]){ -1 });
	n = testlib_node(&b, "Concat", "cat", "n1,minus1", "target");
	testlib_attr_i(&b, n, "axis", 0);
	testlib_node(&b, "Reshape", "view", "r,target", "v");
	/* pads [0,0,0,1, 0,0,1,0] built the way torch does for F.pad:
	 * ConstantOfShape, Concat, Cast */
	testlib_init_i64(&b, "two", 1, (const int64_t[]){ 2 });
	n = testlib_node(&b, "ConstantOfShape", "zeros", "two", "zs");
	testlib_attr_t(&b, n, "value", testlib_i64(&b, NULL, 1, (const int64_t[]){ 0 }));
	testlib_init_i64(&b, "tail", 6, (const int64_t[]){ 0, 1, 0, 0, 1, 0 });
	n = testlib_node(&b, "Concat", "padcat", "zs,tail", "pdi");
	testlib_attr_i(&b, n, "axis", 0);
	n = testlib_node(&b, "Cast", "cast", "pdi", "pads");
	testlib_attr_i(&b, n, "to", ONNX__TENSOR_PROTO__DATA_TYPE__INT64);
	testlib_node(&b, "Pad", "pad", "r,pads", "padded");
	m = expect_open(&b);
	g = fc_model_get_graph(m);
	expect_shape(g, "v", 2, 1LL, 256LL);
	expect_shape(g, "padded", 4, 1LL, 4LL, 9LL, 9LL);
	assert_int_equal(g->nodes[nid(g, "pad")].attr.pad.begin[3], 1);
	assert_int_equal(g->nodes[nid(g, "pad")].attr.pad.end[2], 1);
	assert_int_equal(g->nodes[nid(g, "pad")].attr.pad.begin[2], 0);
	for (int i = 0; i < g->n_nodes; i++) {
		const char *nm = g->nodes[i].name;

		if (!strcmp(nm, "shape") || !strcmp(nm, "gather") || !strcmp(nm, "unsq") ||
		    !strcmp(nm, "cat") || !strcmp(nm, "cast") || !strcmp(nm, "zero") ||
		    !strcmp(nm, "zeros") || !strcmp(nm, "padcat"))
			assert_int_equal(g->nodes[i].state, FC_NODE_FOLDED);
	}
	assert_int_equal(g->nodes[nid(g, "view")].state, FC_NODE_RUN);
	assert_int_equal(tensor(g, "target")->i64[0], 1);
	assert_int_equal(tensor(g, "target")->i64[1], -1);
	/* another batch refolds the chain */
	assert_int_equal(fc_model_set_input(m, 6, 0, 0, 0), 0);
	expect_shape(g, "v", 2, 6LL, 256LL);
	assert_int_equal(tensor(g, "target")->i64[0], 6);
	assert_int_equal(fc_model_cut(m, "view"), 0);
	assert_int_equal(g->embed_dim, 256);
	assert_int_equal(g->pool, 0);
	fc_model_free(m);
	fci_onnx_free(&b);
}

static void test_pooling_and_pads(void **state)
{
	fci_onnx b;
	fc_model *m;
	const fc_model_graph *g;
	Onnx__NodeProto *n;

	(void)state;
	tiny_net(&b, 13);
	/* PyTorch's ceil_mode rule: 8 + 2 pad, k2 s3 -> ceil gives 4 windows,
	 * but the last would start in the end padding: 3 (as torch says) */
	n = testlib_node(&b, "MaxPool", "mp_ceil", "c", "m1");
	testlib_attr_ints(&b, n, "kernel_shape", 2, 2LL, 2LL);
	testlib_attr_ints(&b, n, "strides", 2, 3LL, 3LL);
	testlib_attr_ints(&b, n, "pads", 4, 1LL, 1LL, 1LL, 1LL);
	testlib_attr_i(&b, n, "ceil_mode", 1);
	/* ceil where it counts: 8, k3 s2 -> floor 3, ceil 4 */
	n = testlib_node(&b, "MaxPool", "mp_ceil2", "c", "m2");
	testlib_attr_ints(&b, n, "kernel_shape", 2, 3LL, 3LL);
	testlib_attr_ints(&b, n, "strides", 2, 2LL, 2LL);
	testlib_attr_i(&b, n, "ceil_mode", 1);
	n = testlib_node(&b, "AveragePool", "ap_floor", "c", "m3");
	testlib_attr_ints(&b, n, "kernel_shape", 2, 3LL, 3LL);
	testlib_attr_ints(&b, n, "strides", 2, 2LL, 2LL);
	testlib_attr_i(&b, n, "count_include_pad", 1);
	/* SAME_UPPER conv, stride 2, dilation 2 */
	{
		static const int64_t w2[4] = { 6, 2, 3, 3 };

		testlib_init_f32(&b, "w2", 4, w2);
		n = testlib_node(&b, "Conv", "same", "c,w2", "s");
		testlib_attr_s(&b, n, "auto_pad", "SAME_UPPER");
		testlib_attr_ints(&b, n, "strides", 2, 2LL, 2LL);
		testlib_attr_ints(&b, n, "dilations", 2, 2LL, 1LL);
		testlib_attr_i(&b, n, "group", 2);
	}
	/* ReduceMean over H, W without keepdims; with keepdims over W */
	n = testlib_node(&b, "ReduceMean", "mean", "c", "rm");
	testlib_attr_ints(&b, n, "axes", 2, -2LL, 3LL);
	testlib_attr_i(&b, n, "keepdims", 0);
	n = testlib_node(&b, "ReduceMean", "mean_w", "c", "rmw");
	testlib_attr_ints(&b, n, "axes", 1, 3LL);
	/* standalone BN */
	{
		static const int64_t c4[1] = { 4 };

		testlib_init_f32(&b, "g", 1, c4);
		testlib_init_f32(&b, "be", 1, c4);
		testlib_init_f32(&b, "mu", 1, c4);
		testlib_add_init(&b, testlib_f32(&b, "var", 1, c4, (const float[]){ 1, 2, 3, 4 }));
		n = testlib_node(&b, "BatchNormalization", "bn", "c,g,be,mu,var", "bnout");
		testlib_attr_f(&b, n, "epsilon", 1e-3f);
	}
	/* opset 13 Pad from an initializer with a constant value */
	testlib_init_i64(&b, "pads", 8, (const int64_t[]){ 0, 0, 2, 0, 0, 0, 0, 3 });
	testlib_add_init(&b, testlib_f32(&b, "pv", 0, NULL, (const float[]){ -1.5f }));
	testlib_node(&b, "Pad", "pad", "c,pads,pv", "pd");
	m = expect_open(&b);
	g = fc_model_get_graph(m);
	expect_shape(g, "m1", 4, 1LL, 4LL, 3LL, 3LL);
	expect_shape(g, "m2", 4, 1LL, 4LL, 4LL, 4LL);
	expect_shape(g, "m3", 4, 1LL, 4LL, 3LL, 3LL);
	expect_shape(g, "s", 4, 1LL, 6LL, 4LL, 4LL);
	expect_shape(g, "rm", 2, 1LL, 4LL);
	expect_shape(g, "rmw", 4, 1LL, 4LL, 8LL, 1LL);
	expect_shape(g, "bnout", 4, 1LL, 4LL, 8LL, 8LL);
	expect_shape(g, "pd", 4, 1LL, 4LL, 10LL, 11LL);
	{
		const fc_model_node *s = &g->nodes[nid(g, "same")];

		/* out 4 = ceil(8/2); H: effective kernel 5, total pad 3 -> 1 + 2 */
		assert_int_equal(s->attr.conv.pad[0], 1);
		assert_int_equal(s->attr.conv.pad[2], 2);
		/* W: kernel 3, total pad 1 -> 0 + 1 */
		assert_int_equal(s->attr.conv.pad[1], 0);
		assert_int_equal(s->attr.conv.pad[3], 1);
		assert_int_equal(s->attr.conv.dilation[0], 2);
		assert_int_equal(s->attr.conv.group, 2);
		assert_int_equal(s->params, 6 * 2 * 9);
	}
	assert_int_equal(g->nodes[nid(g, "mp_ceil")].attr.pool.ceil_mode, 1);
	assert_int_equal(g->nodes[nid(g, "ap_floor")].attr.pool.count_include_pad, 1);
	assert_int_equal(g->nodes[nid(g, "mean")].attr.reduce.axes, 0xc);
	assert_int_equal(g->nodes[nid(g, "mean")].attr.reduce.keepdims, 0);
	assert_true(fabsf(g->nodes[nid(g, "bn")].attr.bn.epsilon - 1e-3f) < 1e-9f);
	assert_int_equal(g->nodes[nid(g, "bn")].params, 8);
	assert_true(g->nodes[nid(g, "pad")].attr.pad.value == -1.5f);
	assert_int_equal(g->nodes[nid(g, "pad")].attr.pad.begin[2], 2);
	assert_int_equal(g->nodes[nid(g, "pad")].attr.pad.end[3], 3);
	/* a kernel that no longer fits after a resize */
	assert_true(fc_model_set_input(m, 0, 0, 2, 2) < 0);
	print_message("#   2x2 refused: %s\n", fc_model_errmsg(m));
	expect_shape(g, "m3", 4, 1LL, 4LL, 3LL, 3LL);
	fc_model_free(m);
	fci_onnx_free(&b);

	/* opset 10 Pad: attributes */
	tiny_net(&b, 10);
	n = testlib_node(&b, "Pad", "pad10", "c", "pd");
	testlib_attr_ints(&b, n, "pads", 8, 0LL, 0LL, 1LL, 1LL, 0LL, 0LL, 1LL, 1LL);
	testlib_attr_f(&b, n, "value", 0.0f);
	m = expect_open(&b);
	g = fc_model_get_graph(m);
	expect_shape(g, "pd", 4, 1LL, 4LL, 10LL, 10LL);
	fc_model_free(m);
	fci_onnx_free(&b);
}

static void test_matmul_and_broadcast(void **state)
{
	fci_onnx b;
	fc_model *m;
	const fc_model_graph *g;

	(void)state;
	tiny_net(&b, 13);
	testlib_init_f32(&b, "mw", 2, (const int64_t[]){ 4, 7 });
	testlib_node(&b, "MatMul", "mm", "f,mw", "mmo");
	testlib_init_f32(&b, "se", 4, (const int64_t[]){ 1, 4, 1, 1 });
	testlib_node(&b, "Mul", "scale", "c,p", "sc"); /* SE: N x C x 1 x 1 into N x C x H x W */
	testlib_node(&b, "Sub", "sub", "se,c", "sb");  /* constant on the left */
	testlib_node(&b, "HardSwish", "hsw", "sb", "hs");
	testlib_node(&b, "Dropout", "drop", "hs", "dr");
	testlib_node(&b, "Identity", "id", "dr", "idd");
	testlib_node(&b, "Relu", "after_alias", "idd", "aa");
	m = expect_open(&b);
	g = fc_model_get_graph(m);
	expect_shape(g, "mmo", 2, 1LL, 7LL);
	expect_shape(g, "sc", 4, 1LL, 4LL, 8LL, 8LL);
	expect_shape(g, "sb", 4, 1LL, 4LL, 8LL, 8LL);
	assert_int_equal(g->nodes[nid(g, "mm")].params, 28);
	/* the default is the input of the last Gemm/MatMul: here the MatMul */
	assert_string_equal(g->nodes[g->default_node].name, "flat");
	/* aliases: listed, nothing to compute, consumers read the source */
	assert_int_equal(g->nodes[nid(g, "drop")].state, FC_NODE_ALIAS);
	assert_int_equal(g->nodes[nid(g, "id")].state, FC_NODE_ALIAS);
	assert_int_equal(g->nodes[nid(g, "after_alias")].in[0], testlib_tensor_id(g, "hs"));
	assert_int_equal(tensor(g, "idd")->source, testlib_tensor_id(g, "hs"));
	assert_int_equal(fc_model_cut(m, "id"), 0);
	assert_int_equal(g->cut_tensor, testlib_tensor_id(g, "hs"));
	assert_int_equal(g->cut_node, nid(g, "id"));
	fc_model_free(m);
	fci_onnx_free(&b);

	tiny_net(&b, 13);
	testlib_init_f32(&b, "odd", 1, (const int64_t[]){ 3 });
	testlib_node(&b, "Add", "bad_add", "c,odd", "z");
	expect_fail(&b, FC_ERR_INVALID, "'bad_add' (Add)", "1x4x8x8 and 3 do not broadcast", NULL);
	fci_onnx_free(&b);
}

/* A model with no Gemm/MatMul: the default is the input of the last Conv. */
static void test_default_without_gemm(void **state)
{
	static const int64_t w1[4] = { 4, 3, 3, 3 }, w2[4] = { 5, 4, 1, 1 };
	fci_onnx b;
	fc_model *m;
	const fc_model_graph *g;

	(void)state;
	testlib_model_init(&b, 13);
	testlib_input(&b, "x", 4, D1x3x8x8);
	testlib_init_f32(&b, "w1", 4, w1);
	testlib_init_f32(&b, "w2", 4, w2);
	testlib_node(&b, "Conv", "features", "x,w1", "c1");
	testlib_node(&b, "Relu", "act", "c1", "a1");
	testlib_node(&b, "Dropout", "drop", "a1", "d1");
	testlib_node(&b, "Conv", "classifier", "d1,w2", "c2");
	testlib_node(&b, "GlobalAveragePool", "gap", "c2", "y");
	testlib_output(&b, "y");
	m = expect_open(&b);
	g = fc_model_get_graph(m);
	assert_string_equal(g->nodes[g->default_node].name, "act"); /* through the Dropout */
	assert_int_equal(g->pool, 1);
	assert_int_equal(g->embed_dim, 4);
	assert_false(g->nodes[nid(g, "classifier")].needed);
	fc_model_free(m);
	fci_onnx_free(&b);

	/* no Gemm, MatMul or Conv: the first output */
	testlib_model_init(&b, 13);
	testlib_input(&b, "x", 4, D1x3x8x8);
	testlib_node(&b, "Relu", "only", "x", "y");
	testlib_output(&b, "y");
	m = expect_open(&b);
	g = fc_model_get_graph(m);
	assert_string_equal(g->nodes[g->default_node].name, "only");
	assert_int_equal(g->embed_dim, 3);
	fc_model_free(m);
	fci_onnx_free(&b);

	/* a Gemm straight on the input: no layer before it */
	testlib_model_init(&b, 13);
	testlib_input(&b, "x", 2, (const int64_t[]){ 1, 4 });
	testlib_init_f32(&b, "w", 2, (const int64_t[]){ 4, 2 });
	testlib_node(&b, "Gemm", "fc", "x,w", "y");
	testlib_output(&b, "y");
	m = expect_open(&b);
	g = fc_model_get_graph(m);
	assert_int_equal(g->default_node, -1);
	assert_int_equal(g->cut_tensor, -1);
	assert_int_equal(fc_model_cut(m, NULL), FC_ERR_NOT_FOUND);
	assert_int_equal(fc_model_cut(m, "fc"), 0);
	assert_int_equal(g->embed_dim, 2);
	assert_int_equal(fc_model_set_input(m, 3, 0, 0, 0), 0);
	expect_shape(g, "y", 2, 3LL, 2LL);
	assert_int_equal(fc_model_set_input(m, 0, 0, 5, 0), FC_ERR_INVALID); /* 2-D input */
	fc_model_free(m);
	fci_onnx_free(&b);
}

static void test_constants(void **state)
{
	fci_onnx b;
	fc_model *m;
	const fc_model_graph *g;
	Onnx__NodeProto *n;

	(void)state;
	tiny_net(&b, 13);
	n = testlib_node(&b, "Constant", "ints", "", "shape");
	{
		Onnx__AttributeProto *a = testlib_attr(&b, n, "value_ints", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);

		a->n_ints = 2;
		a->ints = testlib_alloc(&b, 2 * sizeof(int64_t));
		a->ints[0] = 1;
		a->ints[1] = -1;
	}
	testlib_node(&b, "Reshape", "rs", "c,shape", "flat2");
	/* constants folded through arithmetic, Slice and Transpose */
	testlib_init_i64(&b, "v", 4, (const int64_t[]){ 10, 20, 30, 40 });
	testlib_init_i64(&b, "st", 1, (const int64_t[]){ -1 });
	testlib_init_i64(&b, "en", 1, (const int64_t[]){ INT64_MIN });
	testlib_init_i64(&b, "sp", 1, (const int64_t[]){ -2 });
	testlib_init_i64(&b, "axz", 1, (const int64_t[]){ 0 });
	testlib_node(&b, "Slice", "rev", "v,st,en,axz,sp", "vr");
	/* steps no file should give: one element each, no overflow */
	testlib_init_i64(&b, "zero1", 1, (const int64_t[]){ 0 });
	testlib_init_i64(&b, "big1", 1, (const int64_t[]){ INT64_MAX });
	testlib_init_i64(&b, "min1", 1, (const int64_t[]){ INT64_MIN });
	testlib_node(&b, "Slice", "huge_step", "v,zero1,big1,axz,big1", "vbig");
	testlib_node(&b, "Slice", "min_step", "v,big1,min1,axz,min1", "vmin");
	testlib_node(&b, "Div", "half", "vr,two", "vh");
	testlib_init_i64(&b, "two", 1, (const int64_t[]){ 2 });
	testlib_add_init(&b, testlib_f32(&b, "mat", 2, (const int64_t[]){ 2, 3 }, (const float[]){ 1, 2, 3, 4, 5, 6 }));
	testlib_node(&b, "Transpose", "tr", "mat", "matT");
	n = testlib_node(&b, "Relu", "relu_const", "mat", "matr");
	(void)n;
	m = expect_open(&b);
	g = fc_model_get_graph(m);
	expect_shape(g, "flat2", 2, 1LL, 256LL);
	expect_shape(g, "vr", 1, 2LL);
	assert_int_equal(tensor(g, "vr")->i64[0], 40);
	assert_int_equal(tensor(g, "vr")->i64[1], 20);
	assert_int_equal(tensor(g, "vh")->i64[0], 20);
	expect_shape(g, "vbig", 1, 1LL);
	assert_int_equal(tensor(g, "vbig")->i64[0], 10);
	expect_shape(g, "vmin", 1, 1LL);
	assert_int_equal(tensor(g, "vmin")->i64[0], 40);
	expect_shape(g, "matT", 2, 3LL, 2LL);
	assert_true(tensor(g, "matT")->f32[1] == 4.0f);
	assert_true(tensor(g, "matT")->f32[4] == 3.0f);
	assert_int_equal(g->nodes[nid(g, "relu_const")].state, FC_NODE_FOLDED);
	assert_false(fc_model_is_layer(m, nid(g, "relu_const")));
	assert_int_equal(fc_model_cut(m, "relu_const"), FC_ERR_NOT_FOUND);
	fc_model_free(m);
	fci_onnx_free(&b);

	/* integer division by zero while folding */
	tiny_net(&b, 13);
	testlib_init_i64(&b, "a", 1, (const int64_t[]){ 7 });
	testlib_init_i64(&b, "z", 1, (const int64_t[]){ 0 });
	testlib_node(&b, "Div", "divz", "a,z", "q");
	expect_fail(&b, FC_ERR_INVALID, "'divz' (Div)", "division by 0", NULL);
	fci_onnx_free(&b);

	/* a Reshape that cannot work */
	tiny_net(&b, 13);
	testlib_init_i64(&b, "s", 2, (const int64_t[]){ 3, -1 });
	testlib_node(&b, "Reshape", "rs", "c,s", "z");
	expect_fail(&b, FC_ERR_INVALID, "'rs' (Reshape)", "cannot reshape 1x4x8x8", NULL);
	fci_onnx_free(&b);

	/* folding that would create too much */
	tiny_net(&b, 13);
	testlib_init_i64(&b, "big", 1, (const int64_t[]){ 1LL << 40 });
	testlib_node(&b, "ConstantOfShape", "bomb", "big", "z");
	expect_fail(&b, FC_ERR_INVALID, "'bomb'", "shape has 1099511627776", NULL);
	fci_onnx_free(&b);
	tiny_net(&b, 13);
	testlib_init_i64(&b, "big", 2, (const int64_t[]){ 8192, 8192 });
	testlib_node(&b, "ConstantOfShape", "bomb", "big", "z");
	expect_fail(&b, FC_ERR_OVERFLOW, "'bomb'", "more values than", NULL);
	fci_onnx_free(&b);
	/* each fold alone is allowed, together they are not */
	tiny_net(&b, 13);
	testlib_init_i64(&b, "three_m", 1, (const int64_t[]){ 3200000 });
	testlib_node(&b, "ConstantOfShape", "bomb1", "three_m", "z1");
	testlib_node(&b, "ConstantOfShape", "bomb2", "three_m", "z2");
	testlib_node(&b, "ConstantOfShape", "bomb3", "three_m", "z3");
	expect_fail(&b, FC_ERR_OVERFLOW, "'bomb3'", "more values than", NULL);
	fci_onnx_free(&b);

	/* a node with absurdly many attributes */
	tiny_net(&b, 13);
	{
		Onnx__NodeProto *chatty = testlib_node(&b, "Relu", "chatty", "c", "z");
		Onnx__AttributeProto **many = testlib_alloc(&b, sizeof *many * 65);

		for (int i = 0; i < 65; i++) {
			char nm[16];

			snprintf(nm, sizeof nm, "a%d", i);
			many[i] = testlib_alloc(&b, sizeof **many);
			onnx__attribute_proto__init(many[i]);
			many[i]->name = testlib_str(&b, nm);
			many[i]->has_type = 1;
			many[i]->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
			many[i]->has_i = 1;
		}
		chatty->attribute = many;
		chatty->n_attribute = 65;
	}
	expect_fail(&b, FC_ERR_UNSUPPORTED, "'chatty'", "65 attributes", NULL);
	fci_onnx_free(&b);
}

/* Bytes outside the writer: unknown fields are skipped; broken ones named. */
/* ---- the writer itself (io/onnx.c) ---- */

/* What the builder sets is what a reader gets back, bytes and file alike;
 * a failed write leaves nothing. */
static void test_writer_round_trip(void **state)
{
	static const float w[3] = { 1.0f, -2.5f, 3e-7f };
	static const int64_t wd[1] = { 3 }, xd[4] = { -1, 3, 8, 8 }, ints[3] = { 4, -5, 6 };
	fci_onnx b;
	Onnx__NodeProto *n;
	Onnx__ModelProto *mp;
	const Onnx__NodeProto *dn;
	uint8_t *bytes, *file;
	size_t len, flen;
	char *dir = testlib_tmpdir("test-model-graph"), path[1200], err[FC_ERRLEN];

	(void)state;
	tiny_net(&b, 13);
	b.graph.input[0] = testlib_value(&b, "x", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 4, xd);
	testlib_add_init(&b, testlib_f32(&b, "vals", 1, wd, w));
	n = testlib_node(&b, "Identity", "many", "x,,vals", "a,b");
	assert_int_equal(fci_onnx_attr_float(&b, n, "f", 0.25f), 0);
	assert_int_equal(fci_onnx_attr_string(&b, n, "s", "text"), 0);
	assert_int_equal(fci_onnx_attr_ints(&b, n, "ints", ints, 3), 0);
	assert_int_equal(fci_onnx_add_meta(&b, "key", "value"), 0);
	assert_int_equal(fci_onnx_add_opset(&b, fci_onnx_new_opset(&b, "com.example", 2)), 0);
	bytes = testlib_pack(&b, &len);
	assert_non_null(mp = fci_onnx_decode(bytes, len));

	assert_int_equal(mp->ir_version, 8);
	assert_int_equal(mp->n_opset_import, 2);
	assert_string_equal(mp->opset_import[1]->domain, "com.example");
	assert_int_equal(mp->opset_import[1]->version, 2);
	assert_int_equal(mp->n_metadata_props, 1);
	assert_string_equal(mp->metadata_props[0]->value, "value");
	assert_string_equal(mp->graph->input[0]->type->tensor_type->shape->dim[0]->dim_param, "N");
	assert_int_equal(mp->graph->input[0]->type->tensor_type->shape->dim[3]->dim_value, 8);
	assert_int_equal(mp->graph->n_initializer, 5);
	assert_int_equal(mp->graph->initializer[4]->raw_data.len, 12);
	for (int i = 0; i < 3; i++) { /* little-endian float32 */
		const uint8_t *r = mp->graph->initializer[4]->raw_data.data + 4 * i;
		uint32_t u = (uint32_t)r[0] | (uint32_t)r[1] << 8 | (uint32_t)r[2] << 16 | (uint32_t)r[3] << 24;
		float f;

		memcpy(&f, &u, 4);
		assert_true(f == w[i]);
	}
	dn = mp->graph->node[mp->graph->n_node - 1];
	assert_int_equal(dn->n_input, 3);
	assert_string_equal(dn->input[1], "");
	assert_int_equal(dn->n_output, 2);
	assert_int_equal(dn->n_attribute, 3);
	assert_true(dn->attribute[0]->f == 0.25f);
	assert_memory_equal(dn->attribute[1]->s.data, "text", 4);
	assert_int_equal(dn->attribute[2]->n_ints, 3);
	assert_int_equal(dn->attribute[2]->ints[1], -5);
	fci_onnx_decode_free(mp);

	snprintf(path, sizeof path, "%s/m.onnx", dir);
	testlib_write(&b.model, path);
	assert_non_null(file = testlib_read_file(path, &flen));
	assert_int_equal(flen, len);
	assert_memory_equal(file, bytes, len);
	snprintf(path, sizeof path, "%s/no/such/dir/m.onnx", dir);
	assert_int_equal(fci_onnx_write(&b.model, path, err, sizeof err), FC_ERR_NOT_FOUND);
	print_message("#   write into a missing directory: %s\n", err);
	snprintf(path, sizeof path, "%s/m.onnx", dir);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(rmdir(dir), 0); /* nothing else was left */
	free(file);
	free(bytes);
	free(dir);
	fci_onnx_free(&b);
}

/* ---- the wire format ---- */

static void test_wire_format(void **state)
{
	fci_onnx b;
	size_t len;
	uint8_t *buf, *big;
	fc_model *m;
	char err[FC_ERRLEN];
	int rc;

	(void)state;
	tiny_net(&b, 13);
	buf = testlib_pack(&b, &len);
	big = malloc(len + 32);
	assert_non_null(big);
	memcpy(big, buf, len);
	/* field 99 (varint), field 100 (bytes), field 101 (fixed32): unknown */
	memcpy(big + len, "\x98\x06\x2a\xa2\x06\x03xyz\xad\x06\x01\x02\x03\x04", 15);
	rc = fc_model_open_mem(&m, big, len + 15, err, sizeof err);
	if (rc)
		fail_msg("unknown fields: %s", err);
	fc_model_free(m);

	/* every prefix of a small model is refused with a message */
	for (size_t cut = 0; cut < len; cut++) {
		m = (fc_model *)1;
		rc = fc_model_open_mem(&m, buf, cut, err, sizeof err);
		assert_true(rc < 0);
		assert_null(m);
		assert_true(err[0] != 0);
		if (cut > 0 && cut < len - 8 && !strstr(err, "truncated") && !strstr(err, "opset") &&
		    !strstr(err, "no graph"))
			fail_msg("prefix %zu: %s", cut, err);
	}
	rc = fc_model_open_mem(&m, buf, len / 2, err, sizeof err);
	print_message("#   half a model: %s\n", err);
	assert_non_null(strstr(err, "truncated protobuf at byte"));

	/* a group (wire type 3) and a wrong wire type for a known field */
	memcpy(big, buf, len);
	memcpy(big + len, "\x9b\x06", 2);
	rc = fc_model_open_mem(&m, big, len + 2, err, sizeof err);
	assert_int_equal(rc, FC_ERR_CORRUPT);
	assert_non_null(strstr(err, "group"));
	memcpy(big + len, "\x3d\x00\x00\x00\x00", 5); /* graph (7) as fixed32 */
	rc = fc_model_open_mem(&m, big, len + 5, err, sizeof err);
	assert_int_equal(rc, FC_ERR_CORRUPT);
	assert_non_null(strstr(err, "ModelProto.graph has wire type 5"));
	/* a 20-byte varint */
	big[len] = 0x08; /* field 1, varint */
	memset(big + len + 1, 0xff, 19);
	big[len + 20] = 0x01;
	rc = fc_model_open_mem(&m, big, len + 21, err, sizeof err);
	assert_int_equal(rc, FC_ERR_CORRUPT);
	free(big);
	free(buf);
	fci_onnx_free(&b);

	/* empty input, and a file of zeros */
	rc = fc_model_open_mem(&m, "", 0, err, sizeof err);
	assert_true(rc < 0);
	print_message("#   empty: %s\n", err);
	big = calloc(1, 4096);
	rc = fc_model_open_mem(&m, big, 4096, err, sizeof err);
	assert_int_equal(rc, FC_ERR_CORRUPT);
	free(big);

	/* absurd counts: 4M empty nodes in 8 MB would unpack into ~400 MB */
	{
		size_t n = (size_t)4 << 20, blen = 2 * n, off = 0;

		big = malloc(blen + 16);
		assert_non_null(big);
		big[off++] = 0x3a; /* graph (7), length-delimited */
		for (size_t v = blen; ; v >>= 7) {
			big[off++] = (uint8_t)((v & 0x7f) | (v >> 7 ? 0x80 : 0));
			if (!(v >> 7))
				break;
		}
		for (size_t i = 0; i < n; i++) {
			big[off++] = 0x0a; /* node (1) */
			big[off++] = 0x00;
		}
		rc = fc_model_open_mem(&m, big, off, err, sizeof err);
		assert_true(rc == FC_ERR_OVERFLOW);
		print_message("#   4M empty nodes: %s\n", err);
		free(big);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tiny_net),
		cmocka_unit_test(test_cycle),
		cmocka_unit_test(test_dangling_and_duplicates),
		cmocka_unit_test(test_unsupported),
		cmocka_unit_test(test_initializer_sizes),
		cmocka_unit_test(test_f16_initializers),
		cmocka_unit_test(test_clip_bounds),
		cmocka_unit_test(test_squeeze_unsqueeze),
		cmocka_unit_test(test_shape_chain_folding),
		cmocka_unit_test(test_pooling_and_pads),
		cmocka_unit_test(test_matmul_and_broadcast),
		cmocka_unit_test(test_default_without_gemm),
		cmocka_unit_test(test_constants),
		cmocka_unit_test(test_fixed_batch),
		cmocka_unit_test(test_wire_format),
		cmocka_unit_test(test_writer_round_trip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
