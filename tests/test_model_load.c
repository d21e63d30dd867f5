/*
 * test_model_load.c - how a model file becomes an fc_model: the file mapped
 * only while it is read, protobuf-c given a skeleton without the weights'
 * bytes (extract/onnx_read.c), the weights copied once. Checked against
 * protobuf-c's own unpacking of the whole file (fci_onnx_decode), on files
 * with the cases the skeleton must get right: typed data beside raw_data,
 * a repeated raw_data (the last one counts), unknown fields inside an
 * initializer, two graph fields (merged by protobuf: unpacked whole), a
 * file cut at every byte, and a file rewritten after it was opened.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "featcache/model.h"
#include "io/onnx.h"
#include "tests/testlib.h"

/* ---- bytes by hand: protobuf fields appended to a buffer ---- */

struct buf {
	uint8_t *p;
	size_t n, cap;
};

static void put(struct buf *b, const void *p, size_t n)
{
	if (b->n + n > b->cap) {
		b->cap = 2 * (b->n + n) + 64;
		b->p = realloc(b->p, b->cap);
		assert_non_null(b->p);
	}
	memcpy(b->p + b->n, p, n);
	b->n += n;
}

static void put_varint(struct buf *b, uint64_t v)
{
	uint8_t c;

	while (v >= 0x80) {
		c = (uint8_t)(v | 0x80);
		put(b, &c, 1);
		v >>= 7;
	}
	c = (uint8_t)v;
	put(b, &c, 1);
}

/* field num, wire type 2, n bytes */
static void put_len(struct buf *b, uint32_t num, const void *p, size_t n)
{
	put_varint(b, (uint64_t)num << 3 | 2);
	put_varint(b, n);
	put(b, p, n);
}

static void put_tensor(struct buf *b, const Onnx__TensorProto *t)
{
	size_t n = onnx__tensor_proto__get_packed_size(t);
	uint8_t *p = malloc(n + 1);

	assert_non_null(p);
	onnx__tensor_proto__pack(t, p);
	put(b, p, n);
	free(p);
}

static void le_floats(uint8_t *out, const float *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint32_t u;

		memcpy(&u, &v[i], 4);
		for (int k = 0; k < 4; k++)
			out[4 * i + k] = (uint8_t)(u >> (8 * k));
	}
}

/* x (1x3x4x4) -> conv w (+ bias b) -> relu -> gap -> flatten -> fc (fw, fb). */
static void net(fci_onnx *b)
{
	static const int64_t x[4] = { 1, 3, 4, 4 }, w[4] = { 5, 3, 3, 3 }, fw[2] = { 2, 5 };
	Onnx__NodeProto *n;

	testlib_model_init(b, 13);
	testlib_input(b, "x", 4, x);
	testlib_init_f32(b, "w", 4, w);
	testlib_init_f32(b, "fw", 2, fw);
	n = testlib_node(b, "Conv", "conv", "x,w,b", "c");
	testlib_attr_ints(b, n, "kernel_shape", 2, 3LL, 3LL);
	testlib_node(b, "Relu", "relu", "c", "r");
	testlib_node(b, "GlobalAveragePool", "gap", "r", "p");
	testlib_node(b, "Flatten", "flat", "p", "f");
	n = testlib_node(b, "Gemm", "fc", "f,fw,fb", "y");
	testlib_attr_i(b, n, "transB", 1);
	testlib_output(b, "y");
}

/* The model of net() with two initializers added by hand into the graph's
 * bytes: b (5 values, raw_data given twice, an unknown field between) and
 * fb (2 values as float_data, typed). What protobuf reads: b is the second
 * raw_data's values. The graph is written last, after the other fields. */
static uint8_t *hand_model(size_t *len, float bias[5], float fbias[2])
{
	fci_onnx b;
	struct buf graph = { 0 }, init = { 0 }, model = { 0 };
	const int64_t d5 = 5, d2 = 2;
	float first[5];
	uint8_t raw[20];

	net(&b);
	for (int i = 0; i < 5; i++) {
		first[i] = testlib_float(-1, 1);
		bias[i] = testlib_float(-1, 1);
	}
	fbias[0] = testlib_float(-1, 1);
	fbias[1] = testlib_float(-1, 1);

	/* the bias: name and dims packed, then the two raw_data by hand */
	Onnx__TensorProto *t = fci_onnx_new_tensor(&b, "b", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 1, &d5);
	assert_non_null(t);
	put_tensor(&init, t);
	le_floats(raw, first, 5);
	put_len(&init, 9, raw, 20);
	put_len(&init, 1000, "unknown", 7); /* unknown to the schema: skipped */
	le_floats(raw, bias, 5);
	put_len(&init, 9, raw, 20);

	/* the graph as protobuf-c packs it, plus both initializers */
	size_t n = onnx__graph_proto__get_packed_size(&b.graph);
	graph.p = malloc(n + 1);
	assert_non_null(graph.p);
	graph.n = graph.cap = onnx__graph_proto__pack(&b.graph, graph.p);
	put_len(&graph, 5, init.p, init.n);
	t = fci_onnx_new_tensor(&b, "fb", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 1, &d2);
	assert_non_null(t);
	t->float_data = fbias;
	t->n_float_data = 2;
	init.n = 0;
	put_tensor(&init, t);
	t->float_data = NULL;
	t->n_float_data = 0;
	put_len(&graph, 5, init.p, init.n);

	/* the model without its graph, then the graph */
	b.model.graph = NULL;
	n = onnx__model_proto__get_packed_size(&b.model);
	model.p = malloc(n + 1);
	assert_non_null(model.p);
	model.n = model.cap = onnx__model_proto__pack(&b.model, model.p);
	put_len(&model, 7, graph.p, graph.n);
	b.model.graph = &b.graph;
	fci_onnx_free(&b);
	free(graph.p);
	free(init.p);
	*len = model.n;
	return model.p;
}

/* Every float initializer of m equals protobuf-c's whole-file reading of
 * the same bytes, value for value. */
static void same_as_plain(const fc_model *m, const uint8_t *bytes, size_t len)
{
	Onnx__ModelProto *mp = fci_onnx_decode(bytes, len);
	const fc_model_graph *g = fc_model_get_graph(m);

	assert_non_null(mp);
	for (size_t i = 0; i < mp->graph->n_initializer; i++) {
		const Onnx__TensorProto *tp = mp->graph->initializer[i];
		int id = testlib_tensor_id(g, tp->name);

		assert_true(id >= 0);
		const fc_model_tensor *t = &g->tensors[id];
		assert_int_equal(t->kind, FC_TENSOR_CONST);
		if (tp->has_raw_data && tp->raw_data.len) {
			assert_int_equal(tp->raw_data.len, 4 * (size_t)t->numel);
			for (int64_t k = 0; k < t->numel; k++) {
				uint8_t le[4];

				le_floats(le, &t->f32[k], 1);
				assert_memory_equal(le, tp->raw_data.data + 4 * k, 4);
			}
		} else {
			assert_int_equal(tp->n_float_data, (size_t)t->numel);
			assert_memory_equal(tp->float_data, t->f32, 4 * (size_t)t->numel);
		}
	}
	fci_onnx_decode_free(mp);
}

static void test_skeleton(void **state)
{
	float bias[5], fbias[2];
	size_t len;
	uint8_t *bytes;
	fc_model *m = NULL;
	char err[FC_ERRLEN];
	int id;

	(void)state;
	testlib_seed("test_skeleton");
	bytes = hand_model(&len, bias, fbias);
	if (fc_model_open_mem(&m, bytes, len, err, sizeof err))
		fail_msg("open: %s", err);
	same_as_plain(m, bytes, len);
	/* and against the values themselves: the last raw_data, the typed data */
	id = testlib_tensor_id(fc_model_get_graph(m), "b");
	assert_memory_equal(fc_model_get_graph(m)->tensors[id].f32, bias, sizeof bias);
	id = testlib_tensor_id(fc_model_get_graph(m), "fb");
	assert_memory_equal(fc_model_get_graph(m)->tensors[id].f32, fbias, sizeof fbias);
	fc_model_free(m);

	/* A second graph field: protobuf merges the two (repeated fields
	 * appended), so the skeleton is not used; here it adds an initializer
	 * nothing reads. */
	struct buf extra = { 0 }, g2 = { 0 };
	const int64_t d3 = 3;
	float v[3] = { 1.5f, -2.25f, 3.0f };
	uint8_t raw[12];
	fci_onnx b;

	fci_onnx_init(&b);
	Onnx__TensorProto *t = fci_onnx_new_tensor(&b, "unused", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 1, &d3);
	assert_non_null(t);
	put_tensor(&extra, t);
	le_floats(raw, v, 3);
	put_len(&extra, 9, raw, 12);
	put_len(&g2, 5, extra.p, extra.n);
	bytes = realloc(bytes, len + g2.n + 16);
	assert_non_null(bytes);
	struct buf whole = { bytes, len, len + g2.n + 16 };
	put_len(&whole, 7, g2.p, g2.n);
	bytes = whole.p;
	if (fc_model_open_mem(&m, bytes, whole.n, err, sizeof err))
		fail_msg("open with two graph fields: %s", err);
	same_as_plain(m, bytes, whole.n);
	id = testlib_tensor_id(fc_model_get_graph(m), "unused");
	assert_true(id >= 0);
	assert_memory_equal(fc_model_get_graph(m)->tensors[id].f32, v, sizeof v);
	fc_model_free(m);
	fci_onnx_free(&b);
	free(extra.p);
	free(g2.p);
	free(bytes);
}

/* Every prefix of a model file, opened from disk (mapped), is refused with
 * a message; so is an empty file. */
static void test_truncated_files(void **state)
{
	float bias[5], fbias[2];
	size_t len;
	uint8_t *bytes;
	char *dir = testlib_tmpdir("model_load"), path[4096], err[FC_ERRLEN];
	int n_trunc = 0;

	(void)state;
	testlib_seed("test_truncated_files");
	bytes = hand_model(&len, bias, fbias);
	snprintf(path, sizeof path, "%s/m.onnx", dir);
	for (size_t cut = 0; cut < len; cut++) {
		FILE *f = fopen(path, "wb");
		fc_model *m = (fc_model *)1;
		int rc;

		assert_non_null(f);
		assert_int_equal(fwrite(bytes, 1, cut, f), cut);
		assert_int_equal(fclose(f), 0);
		rc = fc_model_open(&m, path, err, sizeof err);
		if (rc >= 0 || m || !err[0])
			fail_msg("prefix %zu of %zu: rc %d, '%s'", cut, len, rc, err);
		n_trunc += strstr(err, "truncated protobuf at byte") != NULL;
	}
	/* most cuts land inside a field; the others end the model early */
	print_message("# %d of %zu prefixes: 'truncated protobuf at byte N'\n", n_trunc, len);
	assert_true(n_trunc > (int)len / 2);
	assert_int_equal(testlib_rmtree(dir), 0);
	free(dir);
	free(bytes);
}

/* The model keeps nothing of the file: rewriting it after the open (in
 * place, shorter, then longer) changes nothing the model holds. */
static void test_file_rewritten(void **state)
{
	float bias[5], fbias[2], before[5];
	size_t len;
	uint8_t *bytes;
	char *dir = testlib_tmpdir("model_load"), path[4096], err[FC_ERRLEN];
	fc_model *m = NULL;
	FILE *f;

	(void)state;
	testlib_seed("test_file_rewritten");
	bytes = hand_model(&len, bias, fbias);
	snprintf(path, sizeof path, "%s/m.onnx", dir);
	assert_non_null(f = fopen(path, "wb"));
	assert_int_equal(fwrite(bytes, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
	if (fc_model_open(&m, path, err, sizeof err))
		fail_msg("open: %s", err);
	int id = testlib_tensor_id(fc_model_get_graph(m), "b");
	memcpy(before, fc_model_get_graph(m)->tensors[id].f32, sizeof before);
	assert_int_equal(truncate(path, 0), 0);
	assert_non_null(f = fopen(path, "r+b"));
	for (size_t i = 0; i < 2 * len; i++)
		fputc(0xff, f);
	assert_int_equal(fclose(f), 0);
	same_as_plain(m, bytes, len);
	assert_memory_equal(fc_model_get_graph(m)->tensors[id].f32, before, sizeof before);
	/* re-inference reads the weights again: still there */
	assert_int_equal(fc_model_set_input(m, 2, 0, 0, 0), 0);
	same_as_plain(m, bytes, len);
	fc_model_free(m);
	assert_int_equal(testlib_rmtree(dir), 0);
	free(dir);
	free(bytes);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_skeleton),
		cmocka_unit_test(test_truncated_files),
		cmocka_unit_test(test_file_rewritten),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
