/*
 * test_model.c - unit tests of the ONNX import (extract/model*.c,
 * extract/onnx_read.c):
 *  - every fixture of tests/fixtures/models/ (narrow torchvision exports
 *    made by tools/export_models.py) opens; every tensor's shape at two
 *    input sizes matches ONNX's own shape inference (cross-checked there
 *    against PyTorch); ops, node count, parameter count, default layer and
 *    embedding dim match; sizes the model cannot take are refused;
 *  - a test-side ONNX writer (the generated protobuf-c structs, packed by
 *    onnx__model_proto__pack) makes tiny graphs for each rule: cycles,
 *    dangling inputs, duplicate outputs, unsupported ops, initializers that
 *    do not match their dims, absurd and negative dims, external data,
 *    float16/bfloat16 initializers, Clip bounds, Squeeze/Unsqueeze and Pad
 *    in both opset styles, folding of torch's shape chains, pooling rules,
 *    cuts;
 *  - hostile bytes: every fixture truncated at each 1/64 of its length,
 *    random bytes, random byte flips. Each must give a clear error or a
 *    consistent graph; outside ASan this runs under an address-space limit
 *    so that a huge allocation would show as FC_ERR_NOMEM.
 *
 * Random data comes from one seed, printed at the start; set FC_TEST_SEED
 * to replay. Fixtures are found under $FC_TOP (tests/run.sh sets it) or the
 * current directory.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "featcache/model.h"
#include "featcache/io.h"
#include "onnx.pb-c.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

static uint64_t seed = 20261127;
static uint64_t rng_state;

static uint64_t rng_next(void)
{
	/* splitmix64 */
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15u);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
	return z ^ (z >> 31);
}

static size_t rng_below(size_t n)
{
	return (size_t)(rng_next() % n);
}

/* ---- files ---- */

static char fixture_dir[1024];

static unsigned char *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *buf = NULL;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
		buf = malloc((size_t)n + 1);
		if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
			free(buf);
			buf = NULL;
		}
		*len = (size_t)n;
	}
	fclose(f);
	return buf;
}

/* The fixture models' base names, sorted. */
static char **fixture_names(int *n)
{
	DIR *d = opendir(fixture_dir);
	struct dirent *e;
	char **v = NULL;
	int cnt = 0;

	assert_non_null(d);
	while ((e = readdir(d))) {
		size_t l = strlen(e->d_name);

		if (l > 5 && strcmp(e->d_name + l - 5, ".onnx") == 0) {
			v = realloc(v, sizeof *v * (size_t)(cnt + 1));
			assert_non_null(v);
			v[cnt] = strndup(e->d_name, l - 5);
			assert_non_null(v[cnt]);
			cnt++;
		}
	}
	closedir(d);
	for (int i = 0; i < cnt; i++)
		for (int j = i + 1; j < cnt; j++)
			if (strcmp(v[i], v[j]) > 0) {
				char *t = v[i];
				v[i] = v[j];
				v[j] = t;
			}
	*n = cnt;
	return v;
}

static void free_names(char **v, int n)
{
	for (int i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static char *fixture_path(char *buf, size_t cap, const char *name, const char *ext)
{
	snprintf(buf, cap, "%s/%s%s", fixture_dir, name, ext);
	return buf;
}

/* ---- graph helpers ---- */

static int tid(const fc_model_graph *g, const char *name)
{
	for (int i = 0; i < g->n_tensors; i++)
		if (strcmp(g->tensors[i].name, name) == 0)
			return i;
	return -1;
}

static int nid(const fc_model_graph *g, const char *name)
{
	for (int i = 0; i < g->n_nodes; i++)
		if (strcmp(g->nodes[i].name, name) == 0)
			return i;
	return -1;
}

static const fc_model_tensor *tensor(const fc_model_graph *g, const char *name)
{
	int i = tid(g, name);

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

/* Whatever a model that opened holds must be consistent. Plain C (no
 * cmocka asserts), so the forked hostile run can use it too. */
#define INV(cond)                                                              \
	do {                                                                   \
		if (!(cond)) {                                                 \
			printf("# invariant broken: %s (line %d)\n", #cond, __LINE__); \
			return 0;                                              \
		}                                                              \
	} while (0)

static int invariants_ok(const fc_model *m)
{
	const fc_model_graph *g = fc_model_get_graph(m);

	INV(g->input >= 0 && g->input < g->n_tensors);
	INV(g->tensors[g->input].kind == FC_TENSOR_INPUT);
	for (int i = 0; i < g->n_nodes; i++) {
		const fc_model_node *nd = &g->nodes[i];

		INV(nd->op >= 0 && nd->op < FC_OP_COUNT);
		INV(nd->state >= FC_NODE_RUN && nd->state <= FC_NODE_FOLDED);
		for (int k = 0; k < nd->n_in; k++) {
			const fc_model_tensor *t;

			INV(nd->in[k] >= -1 && nd->in[k] < g->n_tensors);
			if (nd->in[k] < 0)
				continue;
			t = &g->tensors[nd->in[k]];
			INV(t->kind != FC_TENSOR_NONE);
			INV(t->source == nd->in[k]); /* aliases resolved */
			/* produced before use */
			if (t->kind == FC_TENSOR_ACT)
				INV(t->producer >= 0 && t->producer < i);
			if (t->kind == FC_TENSOR_CONST)
				INV(t->elem == FC_ELEM_F32 ? t->f32 != NULL : t->i64 != NULL);
		}
		if (nd->state == FC_NODE_RUN) {
			const fc_model_tensor *o = &g->tensors[nd->out[0]];
			int64_t n = 1;

			INV(o->kind == FC_TENSOR_ACT);
			INV(o->ndim >= 0 && o->ndim <= FC_MODEL_MAX_DIMS);
			for (int d = 0; d < o->ndim; d++) {
				INV(o->dims[d] >= 1);
				n *= o->dims[d];
			}
			INV(n == o->numel);
		}
		if (nd->needed)
			INV(nd->state == FC_NODE_RUN);
	}
	if (g->cut_tensor >= 0) {
		INV(g->tensors[g->cut_tensor].kind == FC_TENSOR_ACT);
		INV(g->embed_dim >= 1);
		INV(g->nodes[g->tensors[g->cut_tensor].producer].needed);
	}
	return 1;
}

static void check_invariants(const fc_model *m)
{
	assert_true(invariants_ok(m));
}

/* ---- a test-side ONNX writer ---- */

#define MB_MAX 256

struct mb {
	Onnx__ModelProto model;
	Onnx__GraphProto graph;
	Onnx__OperatorSetIdProto opset, *opsets[1];
	Onnx__NodeProto *node[MB_MAX];
	Onnx__TensorProto *init[MB_MAX];
	Onnx__ValueInfoProto *input[8], *output[8];
	void **mem;
	size_t n_mem;
};

static void *mb_keep(struct mb *b, void *p)
{
	assert_non_null(p);
	b->mem = realloc(b->mem, sizeof *b->mem * (b->n_mem + 1));
	assert_non_null(b->mem);
	b->mem[b->n_mem++] = p;
	return p;
}

static void *mb_zalloc(struct mb *b, size_t n)
{
	return mb_keep(b, calloc(1, n ? n : 1));
}

static char *mb_str(struct mb *b, const char *s)
{
	return mb_keep(b, strdup(s));
}

static void mb_init(struct mb *b, int opset)
{
	memset(b, 0, sizeof *b);
	onnx__model_proto__init(&b->model);
	onnx__graph_proto__init(&b->graph);
	onnx__operator_set_id_proto__init(&b->opset);
	b->opset.domain = mb_str(b, "");
	b->opset.has_version = 1;
	b->opset.version = opset;
	b->opsets[0] = &b->opset;
	b->model.n_opset_import = 1;
	b->model.opset_import = b->opsets;
	b->model.has_ir_version = 1;
	b->model.ir_version = 8;
	b->model.producer_name = mb_str(b, "test_model");
	b->model.graph = &b->graph;
	b->graph.name = mb_str(b, "g");
	b->graph.node = b->node;
	b->graph.initializer = b->init;
	b->graph.input = b->input;
	b->graph.output = b->output;
}

static void mb_free(struct mb *b)
{
	for (size_t i = 0; i < b->n_mem; i++)
		free(b->mem[i]);
	free(b->mem);
}

/* A value info; dims < 0 become a dim_param, ndim < 0 leaves out the type. */
static Onnx__ValueInfoProto *mb_value(struct mb *b, const char *name, int elem, int ndim,
				      const int64_t *dims)
{
	Onnx__ValueInfoProto *vi = mb_zalloc(b, sizeof *vi);

	onnx__value_info_proto__init(vi);
	vi->name = mb_str(b, name);
	if (ndim >= 0) {
		Onnx__TypeProto *tp = mb_zalloc(b, sizeof *tp);
		Onnx__TypeProto__Tensor *tt = mb_zalloc(b, sizeof *tt);
		Onnx__TensorShapeProto *sh = mb_zalloc(b, sizeof *sh);

		onnx__type_proto__init(tp);
		onnx__type_proto__tensor__init(tt);
		onnx__tensor_shape_proto__init(sh);
		tt->has_elem_type = 1;
		tt->elem_type = elem;
		sh->n_dim = (size_t)ndim;
		sh->dim = mb_zalloc(b, sizeof *sh->dim * (size_t)ndim);
		for (int i = 0; i < ndim; i++) {
			Onnx__TensorShapeProto__Dimension *d = mb_zalloc(b, sizeof *d);

			onnx__tensor_shape_proto__dimension__init(d);
			if (dims[i] >= 0) {
				d->has_dim_value = 1;
				d->dim_value = dims[i];
			} else {
				d->dim_param = mb_str(b, "N");
			}
			sh->dim[i] = d;
		}
		tt->shape = sh;
		tp->tensor_type = tt;
		vi->type = tp;
	}
	return vi;
}

static void mb_input(struct mb *b, const char *name, int ndim, const int64_t *dims)
{
	b->input[b->graph.n_input++] = mb_value(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, ndim, dims);
}

static void mb_output(struct mb *b, const char *name)
{
	b->output[b->graph.n_output++] = mb_value(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, -1, NULL);
}

static Onnx__TensorProto *mb_tensor(struct mb *b, const char *name, int type, int ndim,
				    const int64_t *dims)
{
	Onnx__TensorProto *t = mb_zalloc(b, sizeof *t);

	onnx__tensor_proto__init(t);
	if (name)
		t->name = mb_str(b, name);
	t->has_data_type = 1;
	t->data_type = type;
	t->n_dims = (size_t)ndim;
	t->dims = mb_zalloc(b, sizeof(int64_t) * (size_t)(ndim + 1));
	if (ndim)
		memcpy(t->dims, dims, sizeof(int64_t) * (size_t)ndim);
	return t;
}

static size_t numel_of(int ndim, const int64_t *dims)
{
	size_t n = 1;

	for (int i = 0; i < ndim; i++)
		n *= (size_t)dims[i];
	return n;
}

/* A float32 tensor in raw_data; v NULL makes small distinct values. */
static Onnx__TensorProto *mb_f32(struct mb *b, const char *name, int ndim, const int64_t *dims,
				 const float *v)
{
	Onnx__TensorProto *t = mb_tensor(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, ndim, dims);
	size_t n = numel_of(ndim, dims);
	float *d = mb_zalloc(b, n * sizeof *d);

	for (size_t i = 0; i < n; i++)
		d[i] = v ? v[i] : 0.01f * (float)(i % 7) - 0.03f;
	t->has_raw_data = 1;
	t->raw_data.len = n * sizeof *d;
	t->raw_data.data = (uint8_t *)d;
	return t;
}

static Onnx__TensorProto *mb_i64(struct mb *b, const char *name, int n, const int64_t *v)
{
	int64_t dims[1] = { n };
	Onnx__TensorProto *t = mb_tensor(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__INT64, 1, dims);

	t->n_int64_data = (size_t)n;
	t->int64_data = mb_zalloc(b, sizeof(int64_t) * (size_t)(n + 1));
	memcpy(t->int64_data, v, sizeof(int64_t) * (size_t)n);
	return t;
}

static void mb_add_init(struct mb *b, Onnx__TensorProto *t)
{
	assert_true(b->graph.n_initializer < MB_MAX);
	b->init[b->graph.n_initializer++] = t;
}

static void mb_init_f32(struct mb *b, const char *name, int ndim, const int64_t *dims)
{
	mb_add_init(b, mb_f32(b, name, ndim, dims, NULL));
}

static void mb_init_i64(struct mb *b, const char *name, int n, const int64_t *v)
{
	mb_add_init(b, mb_i64(b, name, n, v));
}

/* Comma-separated names ("x,,b" leaves the second out); "" is none. */
static char **mb_list(struct mb *b, const char *s, size_t *n)
{
	char **v;
	size_t cnt = 1;

	if (!s[0]) {
		*n = 0;
		return mb_zalloc(b, sizeof(char *));
	}
	for (const char *p = s; *p; p++)
		cnt += *p == ',';
	v = mb_zalloc(b, sizeof *v * cnt);
	for (size_t i = 0; i < cnt; i++) {
		const char *e = strchr(s, ',');
		size_t l = e ? (size_t)(e - s) : strlen(s);

		v[i] = mb_keep(b, strndup(s, l));
		s += l + (e != NULL);
	}
	*n = cnt;
	return v;
}

static Onnx__NodeProto *mb_node(struct mb *b, const char *op, const char *name, const char *ins,
				const char *outs)
{
	Onnx__NodeProto *n = mb_zalloc(b, sizeof *n);

	onnx__node_proto__init(n);
	n->op_type = mb_str(b, op);
	if (name)
		n->name = mb_str(b, name);
	n->input = mb_list(b, ins, &n->n_input);
	n->output = mb_list(b, outs, &n->n_output);
	n->attribute = mb_zalloc(b, sizeof *n->attribute * 16);
	assert_true(b->graph.n_node < MB_MAX);
	b->node[b->graph.n_node++] = n;
	return n;
}

static Onnx__AttributeProto *mb_attr(struct mb *b, Onnx__NodeProto *n, const char *name, int type)
{
	Onnx__AttributeProto *a = mb_zalloc(b, sizeof *a);

	onnx__attribute_proto__init(a);
	a->name = mb_str(b, name);
	a->has_type = 1;
	a->type = type;
	assert_true(n->n_attribute < 16);
	n->attribute[n->n_attribute++] = a;
	return a;
}

static void mb_attr_i(struct mb *b, Onnx__NodeProto *n, const char *name, int64_t v)
{
	Onnx__AttributeProto *a = mb_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);

	a->has_i = 1;
	a->i = v;
}

static void mb_attr_f(struct mb *b, Onnx__NodeProto *n, const char *name, float v)
{
	Onnx__AttributeProto *a = mb_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);

	a->has_f = 1;
	a->f = v;
}

static void mb_attr_s(struct mb *b, Onnx__NodeProto *n, const char *name, const char *v)
{
	Onnx__AttributeProto *a = mb_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);

	a->has_s = 1;
	a->s.len = strlen(v);
	a->s.data = (uint8_t *)mb_str(b, v);
}

static void mb_attr_ints(struct mb *b, Onnx__NodeProto *n, const char *name, int cnt, ...)
{
	Onnx__AttributeProto *a = mb_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
	va_list ap;

	a->n_ints = (size_t)cnt;
	a->ints = mb_zalloc(b, sizeof(int64_t) * (size_t)(cnt + 1));
	va_start(ap, cnt);
	for (int i = 0; i < cnt; i++)
		a->ints[i] = va_arg(ap, long long);
	va_end(ap);
}

static void mb_attr_t(struct mb *b, Onnx__NodeProto *n, const char *name, Onnx__TensorProto *t)
{
	Onnx__AttributeProto *a = mb_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR);

	a->t = t;
}

static uint8_t *mb_pack(struct mb *b, size_t *len)
{
	uint8_t *buf;

	*len = onnx__model_proto__get_packed_size(&b->model);
	buf = malloc(*len + 1);
	assert_non_null(buf);
	assert_int_equal(onnx__model_proto__pack(&b->model, buf), *len);
	return buf;
}

static int mb_open(struct mb *b, fc_model **m, char *err)
{
	size_t len;
	uint8_t *buf = mb_pack(b, &len);
	int rc = fc_model_open_mem(m, buf, len, err, FC_ERRLEN);

	free(buf);
	return rc;
}

/* Open must fail with code (0: any) and a message holding each of up to
 * three substrings. */
static void expect_fail(struct mb *b, int code, const char *s1, const char *s2, const char *s3)
{
	fc_model *m = (fc_model *)1;
	char err[FC_ERRLEN];
	int rc = mb_open(b, &m, err);

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

static fc_model *expect_open(struct mb *b)
{
	fc_model *m = NULL;
	char err[FC_ERRLEN];
	int rc = mb_open(b, &m, err);

	if (rc)
		fail_msg("open failed: %d %s", rc, err);
	check_invariants(m);
	return m;
}

static const int64_t D1x3x8x8[4] = { 1, 3, 8, 8 };

/* x (1x3x8x8) -> conv (4, 3x3, pad 1) -> relu -> gap -> flatten -> fc (2). */
static void tiny_net(struct mb *b, int opset)
{
	static const int64_t w[4] = { 4, 3, 3, 3 }, bias[1] = { 4 }, fw[2] = { 2, 4 }, fb[1] = { 2 };
	Onnx__NodeProto *n;

	mb_init(b, opset);
	mb_input(b, "x", 4, D1x3x8x8);
	mb_init_f32(b, "w", 4, w);
	mb_init_f32(b, "b", 1, bias);
	mb_init_f32(b, "fw", 2, fw);
	mb_init_f32(b, "fb", 1, fb);
	n = mb_node(b, "Conv", "conv", "x,w,b", "c");
	mb_attr_ints(b, n, "kernel_shape", 2, 3LL, 3LL);
	mb_attr_ints(b, n, "pads", 4, 1LL, 1LL, 1LL, 1LL);
	mb_node(b, "Relu", "relu", "c", "r");
	mb_node(b, "GlobalAveragePool", "gap", "r", "p");
	mb_node(b, "Flatten", "flat", "p", "f");
	n = mb_node(b, "Gemm", "fc", "f,fw,fb", "y");
	mb_attr_i(b, n, "transB", 1);
	mb_output(b, "y");
}

/* ---- fixtures ---- */

static void check_fixture(const char *name)
{
	char path[1200], err[FC_ERRLEN];
	json_error_t jerr;
	json_t *root, *sizes, *ops, *dl, *v;
	const char *key;
	fc_model *m = NULL;
	const fc_model_graph *g;
	size_t i;
	int rc, n_ops[FC_OP_COUNT] = { 0 };

	root = json_load_file(fixture_path(path, sizeof path, name, ".json"), 0, &jerr);
	if (!root)
		fail_msg("%s: %s", path, jerr.text);
	rc = fc_model_open(&m, fixture_path(path, sizeof path, name, ".onnx"), err, sizeof err);
	if (rc)
		fail_msg("%s: %d %s", path, rc, err);
	g = fc_model_get_graph(m);
	check_invariants(m);

	assert_int_equal(g->opset, json_integer_value(json_object_get(root, "opset")));
	assert_int_equal(g->n_nodes, json_integer_value(json_object_get(root, "nodes")));
	assert_int_equal(g->params, json_integer_value(json_object_get(root, "params")));
	ops = json_object_get(root, "ops");
	for (int k = 0; k < g->n_nodes; k++)
		n_ops[g->nodes[k].op]++;
	json_object_foreach(ops, key, v) {
		int found = 0;

		for (int op = 0; op < FC_OP_COUNT; op++)
			if (strcmp(fc_op_name(op), key) == 0) {
				if (n_ops[op] != json_integer_value(v))
					fail_msg("%s: %d %s nodes, expected %lld", name, n_ops[op], key,
						 (long long)json_integer_value(v));
				found = 1;
			}
		if (!found)
			fail_msg("%s: op %s unknown", name, key);
	}

	dl = json_object_get(root, "default_layer");
	assert_true(g->default_node >= 0);
	assert_string_equal(g->nodes[g->default_node].name, json_string_value(json_object_get(dl, "node")));
	assert_string_equal(g->tensors[g->default_tensor].name,
			    json_string_value(json_object_get(dl, "tensor")));
	assert_int_equal(g->cut_node, g->default_node);
	assert_int_equal(g->embed_dim, json_integer_value(json_object_get(dl, "dim")));
	assert_int_equal(g->pool, json_is_true(json_object_get(dl, "pooled")));
	assert_true(g->cut_params <= g->params);

	/* The Gemm/MatMul and Conv after the cut are not needed. */
	for (int k = 0; k < g->n_nodes; k++)
		if (g->nodes[k].needed)
			assert_true(k <= g->default_node);
	assert_true(g->nodes[g->default_node].needed);

	/* PyTorch's features (for the engine) have the embedding's width. */
	{
		float *feat = NULL;
		size_t rows = 0, cols = 0;

		rc = fc_npy_read_f32(&feat, &rows, &cols, fixture_path(path, sizeof path, name, ".feat.npy"),
				     err, sizeof err);
		if (rc)
			fail_msg("%s: %s", path, err);
		assert_int_equal(rows, 2);
		assert_int_equal(cols, g->embed_dim);
		free(feat);
	}

	sizes = json_object_get(root, "sizes");
	json_array_foreach(sizes, i, v) {
		json_t *in = json_object_get(v, "input"), *shapes = json_object_get(v, "shapes");
		json_t *dims;
		int64_t d[4];
		int64_t prev_dim = g->embed_dim;
		int checked = 0;

		for (int k = 0; k < 4; k++)
			d[k] = json_integer_value(json_array_get(in, (size_t)k));
		rc = fc_model_set_input(m, d[0], d[1], d[2], d[3]);
		if (json_object_get(v, "error")) {
			if (rc >= 0)
				fail_msg("%s: input %lldx%lld accepted, onnx says: %s", name, (long long)d[2],
					 (long long)d[3], json_string_value(json_object_get(v, "error")));
			assert_true(fc_model_errmsg(m)[0] != 0);
			print_message("#   %s at %lldx%lld refused: %s\n", name, (long long)d[2],
				      (long long)d[3], fc_model_errmsg(m));
			/* the model keeps the size that worked */
			assert_int_equal(g->embed_dim, prev_dim);
			check_invariants(m);
			continue;
		}
		if (rc)
			fail_msg("%s at %lldx%lldx%lld: %s", name, (long long)d[0], (long long)d[2],
				 (long long)d[3], fc_model_errmsg(m));
		check_invariants(m);
		json_object_foreach(shapes, key, dims) {
			int t = tid(g, key);

			if (t < 0)
				fail_msg("%s: no tensor '%s'", name, key);
			if (g->tensors[t].ndim != (int)json_array_size(dims))
				fail_msg("%s at %lldx%lld: '%s' has rank %d, onnx %zu", name,
					 (long long)d[2], (long long)d[3], key, g->tensors[t].ndim,
					 json_array_size(dims));
			for (size_t k = 0; k < json_array_size(dims); k++)
				if (g->tensors[t].dims[k] != json_integer_value(json_array_get(dims, k)))
					fail_msg("%s at %lldx%lld: '%s' dim %zu is %lld, onnx %lld", name,
						 (long long)d[2], (long long)d[3], key, k,
						 (long long)g->tensors[t].dims[k],
						 (long long)json_integer_value(json_array_get(dims, k)));
			checked++;
		}
		/* and nothing we computed is missing from the reference */
		for (int t = 0; t < g->n_tensors; t++)
			if (g->tensors[t].kind != FC_TENSOR_NONE && !json_object_get(shapes, g->tensors[t].name))
				fail_msg("%s: tensor '%s' is not in the reference", name, g->tensors[t].name);
		assert_int_equal(g->embed_dim, json_integer_value(json_object_get(dl, "dim")));
		assert_int_equal(g->tensors[g->cut_tensor].dims[0], d[0]);
		print_message("#   %s: %d shapes match at %lldx3x%lldx%lld\n", name, checked,
			      (long long)d[0], (long long)d[2], (long long)d[3]);
	}
	fc_model_free(m);
	json_decref(root);
}

static void test_fixtures(void **state)
{
	int n;
	char **names = fixture_names(&n);

	(void)state;
	assert_true(n >= 8);
	for (int i = 0; i < n; i++)
		check_fixture(names[i]);
	free_names(names, n);
}

/* Ops each family must contain, so the fixtures keep covering them. */
static void test_fixture_op_coverage(void **state)
{
	static const int want[] = {
		FC_OP_CONV, FC_OP_BATCHNORM, FC_OP_RELU, FC_OP_CLIP, FC_OP_LEAKYRELU, FC_OP_SIGMOID,
		FC_OP_HARDSIGMOID, FC_OP_HARDSWISH, FC_OP_ADD, FC_OP_SUB, FC_OP_MUL, FC_OP_DIV,
		FC_OP_PAD, FC_OP_MAXPOOL, FC_OP_AVGPOOL, FC_OP_GLOBALAVGPOOL, FC_OP_REDUCEMEAN,
		FC_OP_FLATTEN, FC_OP_RESHAPE, FC_OP_SQUEEZE, FC_OP_UNSQUEEZE, FC_OP_CONCAT,
		FC_OP_GEMM, FC_OP_MATMUL, FC_OP_IDENTITY, FC_OP_CONSTANT, FC_OP_SHAPE,
		FC_OP_GATHER, FC_OP_CAST, FC_OP_CONSTANTOFSHAPE, FC_OP_SLICE, FC_OP_TRANSPOSE,
	};
	int seen[FC_OP_COUNT] = { 0 }, n;
	char **names = fixture_names(&n), path[1200], err[FC_ERRLEN];

	(void)state;
	for (int i = 0; i < n; i++) {
		fc_model *m;
		const fc_model_graph *g;

		assert_int_equal(fc_model_open(&m, fixture_path(path, sizeof path, names[i], ".onnx"), err,
					       sizeof err), 0);
		g = fc_model_get_graph(m);
		for (int k = 0; k < g->n_nodes; k++)
			seen[g->nodes[k].op]++;
		fc_model_free(m);
	}
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
		if (!seen[want[i]])
			fail_msg("no fixture has a %s node", fc_op_name(want[i]));
	free_names(names, n);
}

/* ---- the writer's graphs ---- */

static void test_tiny_net(void **state)
{
	struct mb b;
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
	mb_free(&b);
	fc_model_free(NULL);
}

static void test_cycle(void **state)
{
	struct mb b;

	(void)state;
	mb_init(&b, 13);
	mb_input(&b, "x", 4, D1x3x8x8);
	mb_node(&b, "Relu", "first", "t2", "t1");
	mb_node(&b, "Sigmoid", "second", "t1", "t2");
	mb_node(&b, "Add", "join", "x,t2", "y");
	mb_output(&b, "y");
	expect_fail(&b, FC_ERR_CORRUPT, "cycle", "node '", NULL);
	mb_free(&b);

	/* a node reading its own output */
	mb_init(&b, 13);
	mb_input(&b, "x", 4, D1x3x8x8);
	mb_node(&b, "Add", "selfish", "x,y", "y");
	mb_output(&b, "y");
	expect_fail(&b, FC_ERR_CORRUPT, "cycle", "'selfish' (Add)", NULL);
	mb_free(&b);

	/* out of order but acyclic: sorted, not refused */
	{
		fc_model *m;
		const fc_model_graph *g;

		mb_init(&b, 13);
		mb_input(&b, "x", 4, D1x3x8x8);
		mb_node(&b, "Relu", "late", "s", "y");
		mb_node(&b, "Sigmoid", "early", "x", "s");
		mb_output(&b, "y");
		m = expect_open(&b);
		g = fc_model_get_graph(m);
		assert_string_equal(g->nodes[0].name, "early");
		assert_string_equal(g->nodes[1].name, "late");
		fc_model_free(m);
		mb_free(&b);
	}
}

static void test_dangling_and_duplicates(void **state)
{
	struct mb b;

	(void)state;
	tiny_net(&b, 13);
	b.node[1]->input[0] = mb_str(&b, "ghost");
	expect_fail(&b, FC_ERR_CORRUPT, "'relu' (Relu)", "'ghost'", "not produced");
	mb_free(&b);

	tiny_net(&b, 13);
	b.output[0]->name = mb_str(&b, "nowhere");
	expect_fail(&b, FC_ERR_CORRUPT, "graph output 'nowhere'", NULL, NULL);
	mb_free(&b);

	tiny_net(&b, 13);
	b.node[2]->output[0] = mb_str(&b, "r"); /* gap writes relu's output again */
	expect_fail(&b, FC_ERR_CORRUPT, "'gap'", "'r'", "more than once");
	mb_free(&b);

	tiny_net(&b, 13);
	b.node[1]->output[0] = mb_str(&b, "w"); /* a node overwriting an initializer */
	expect_fail(&b, FC_ERR_CORRUPT, "'relu'", "'w'", NULL);
	mb_free(&b);

	tiny_net(&b, 13);
	mb_init_f32(&b, "w", 1, (const int64_t[]){ 2 });
	expect_fail(&b, FC_ERR_CORRUPT, "initializer 'w'", NULL, NULL);
	mb_free(&b);

	tiny_net(&b, 13);
	b.node[0]->input[1] = mb_str(&b, ""); /* Conv without weights */
	expect_fail(&b, FC_ERR_CORRUPT, "'conv' (Conv)", "input 2 is missing", NULL);
	mb_free(&b);

	tiny_net(&b, 13);
	b.graph.n_output = 0;
	expect_fail(&b, FC_ERR_CORRUPT, "no outputs", NULL, NULL);
	mb_free(&b);

	tiny_net(&b, 13);
	mb_input(&b, "x2", 4, D1x3x8x8);
	expect_fail(&b, FC_ERR_UNSUPPORTED, "more than one input", NULL, NULL);
	mb_free(&b);

	tiny_net(&b, 13);
	b.graph.n_input = 0;
	expect_fail(&b, FC_ERR_CORRUPT, "no input", NULL, NULL);
	mb_free(&b);

	/* an initializer also listed as an input (old exporters) is fine */
	{
		fc_model *m;

		tiny_net(&b, 13);
		mb_input(&b, "w", 4, (const int64_t[]){ 4, 3, 3, 3 });
		m = expect_open(&b);
		fc_model_free(m);
		mb_free(&b);
	}
}

static void test_unsupported(void **state)
{
	struct mb b;
	Onnx__NodeProto *n;

	(void)state;
	tiny_net(&b, 13);
	mb_node(&b, "LSTM", "lstm_1", "y", "z");
	expect_fail(&b, FC_ERR_UNSUPPORTED, "node 'lstm_1'", "unsupported op 'LSTM'", NULL);
	mb_free(&b);

	tiny_net(&b, 13);
	n = mb_node(&b, "FusedConv", "fused", "y", "z");
	n->domain = mb_str(&b, "com.microsoft");
	expect_fail(&b, FC_ERR_UNSUPPORTED, "'fused'", "com.microsoft.FusedConv", NULL);
	mb_free(&b);

	/* a nameless node is named after its op and position */
	tiny_net(&b, 13);
	mb_node(&b, "Softmax", NULL, "y", "z");
	expect_fail(&b, FC_ERR_UNSUPPORTED, "node 'Softmax_5'", "'Softmax'", NULL);
	mb_free(&b);

	tiny_net(&b, 13);
	n = mb_node(&b, "Pad", "reflect", "c,pads", "z");
	mb_init_i64(&b, "pads", 8, (const int64_t[]){ 0, 0, 1, 1, 0, 0, 1, 1 });
	mb_attr_s(&b, n, "mode", "reflect");
	expect_fail(&b, FC_ERR_UNSUPPORTED, "'reflect' (Pad)", "mode 'reflect'", NULL);
	mb_free(&b);

	/* Gather is fold-only: on activations it is refused, naming the node */
	tiny_net(&b, 13);
	mb_init_i64(&b, "idx", 1, (const int64_t[]){ 0 });
	mb_node(&b, "Gather", "pick", "f,idx", "z");
	expect_fail(&b, FC_ERR_UNSUPPORTED, "'pick' (Gather)", "computed from the model input", NULL);
	mb_free(&b);

	/* opsets */
	tiny_net(&b, 19);
	expect_fail(&b, FC_ERR_UNSUPPORTED, "opset 19", NULL, NULL);
	mb_free(&b);
	tiny_net(&b, 6);
	expect_fail(&b, FC_ERR_UNSUPPORTED, "opset 6", NULL, NULL);
	mb_free(&b);
	tiny_net(&b, 13);
	b.model.n_opset_import = 0;
	expect_fail(&b, FC_ERR_CORRUPT, "no ai.onnx opset", NULL, NULL);
	mb_free(&b);

	/* a wrongly typed or out-of-range attribute */
	tiny_net(&b, 13);
	mb_attr_i(&b, b.node[0], "strides", 2);
	expect_fail(&b, FC_ERR_CORRUPT, "'conv' (Conv)", "'strides' is INT, expected INTS", NULL);
	mb_free(&b);
	tiny_net(&b, 13);
	mb_attr_i(&b, b.node[0], "group", 0);
	expect_fail(&b, FC_ERR_CORRUPT, "'group' is 0", NULL, NULL);
	mb_free(&b);
	tiny_net(&b, 13);
	mb_attr_ints(&b, b.node[0], "pads", 4, 0LL, 0LL, 0LL, 0LL);
	expect_fail(&b, FC_ERR_CORRUPT, "'pads' is given twice", NULL, NULL);
	mb_free(&b);

	/* a MaxPool's Indices output, read */
	tiny_net(&b, 13);
	n = mb_node(&b, "MaxPool", "mp", "c", "mpy,mpi");
	mb_attr_ints(&b, n, "kernel_shape", 2, 2LL, 2LL);
	mb_node(&b, "Relu", "uses_indices", "mpi", "z");
	expect_fail(&b, FC_ERR_UNSUPPORTED, "'uses_indices'", "'mpi'", NULL);
	mb_free(&b);

	/* an input that is not float */
	tiny_net(&b, 13);
	b.input[0]->type->tensor_type->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__UINT8;
	expect_fail(&b, FC_ERR_UNSUPPORTED, "input 'x' has type UINT8", NULL, NULL);
	mb_free(&b);
}

static void test_initializer_sizes(void **state)
{
	struct mb b;
	Onnx__TensorProto *t;

	(void)state;
	/* shorter and longer raw data than the dims need */
	tiny_net(&b, 13);
	b.init[0]->raw_data.len -= 4;
	expect_fail(&b, FC_ERR_CORRUPT, "initializer 'w'", "428 bytes of data, its dims need 432", NULL);
	mb_free(&b);
	tiny_net(&b, 13);
	b.init[0]->raw_data.data = mb_zalloc(&b, 436);
	b.init[0]->raw_data.len = 436;
	expect_fail(&b, FC_ERR_CORRUPT, "initializer 'w'", "436 bytes", NULL);
	mb_free(&b);

	/* typed data of the wrong count */
	tiny_net(&b, 13);
	t = b.init[1];
	t->has_raw_data = 0;
	t->raw_data.len = 0;
	t->n_float_data = 3;
	t->float_data = mb_zalloc(&b, 3 * sizeof(float));
	expect_fail(&b, FC_ERR_CORRUPT, "initializer 'b'", "3 values, its dims need 4", NULL);
	mb_free(&b);

	/* no data at all */
	tiny_net(&b, 13);
	b.init[1]->has_raw_data = 0;
	b.init[1]->raw_data.len = 0;
	expect_fail(&b, FC_ERR_CORRUPT, "initializer 'b'", "0 values", NULL);
	mb_free(&b);

	/* both raw and typed */
	tiny_net(&b, 13);
	b.init[1]->n_float_data = 4;
	b.init[1]->float_data = mb_zalloc(&b, 4 * sizeof(float));
	expect_fail(&b, FC_ERR_CORRUPT, "both raw_data and typed data", NULL, NULL);
	mb_free(&b);

	/* absurd dims: 2^40 elements, 16 bytes of data */
	tiny_net(&b, 13);
	mb_add_init(&b, mb_tensor(&b, "huge", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 2,
				  (const int64_t[]){ 1LL << 20, 1LL << 20 }));
	b.init[4]->has_raw_data = 1;
	b.init[4]->raw_data.len = 16;
	b.init[4]->raw_data.data = mb_zalloc(&b, 16);
	expect_fail(&b, FC_ERR_OVERFLOW, "initializer 'huge'", "more than", NULL);
	mb_free(&b);

	/* a single absurd dim, and more dims than supported */
	tiny_net(&b, 13);
	mb_add_init(&b, mb_tensor(&b, "wide", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 1,
				  (const int64_t[]){ 1LL << 50 }));
	expect_fail(&b, FC_ERR_OVERFLOW, "initializer 'wide'", "absurd dim", NULL);
	mb_free(&b);
	tiny_net(&b, 13);
	mb_add_init(&b, mb_tensor(&b, "deep", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 9,
				  (const int64_t[]){ 1, 1, 1, 1, 1, 1, 1, 1, 1 }));
	expect_fail(&b, FC_ERR_UNSUPPORTED, "initializer 'deep'", "9 dims", NULL);
	mb_free(&b);

	/* negative dims */
	tiny_net(&b, 13);
	b.init[1]->dims[0] = -4;
	expect_fail(&b, FC_ERR_CORRUPT, "initializer 'b'", "negative dim (-4)", NULL);
	mb_free(&b);
	tiny_net(&b, 13);
	b.input[0]->type->tensor_type->shape->dim[2]->dim_value = -8;
	expect_fail(&b, FC_ERR_CORRUPT, "input 'x'", "-8", NULL);
	mb_free(&b);

	/* an absurd input: 2^20 x 2^20 images */
	tiny_net(&b, 13);
	b.input[0]->type->tensor_type->shape->dim[2]->dim_value = 1 << 20;
	b.input[0]->type->tensor_type->shape->dim[3]->dim_value = 1 << 20;
	expect_fail(&b, FC_ERR_OVERFLOW, "input 'x'", "absurd", NULL);
	mb_free(&b);

	/* an unsupported data type */
	tiny_net(&b, 13);
	b.init[1]->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__STRING;
	expect_fail(&b, FC_ERR_UNSUPPORTED, "initializer 'b'", "data type STRING", NULL);
	mb_free(&b);

	/* external data, either way it can be said */
	tiny_net(&b, 13);
	b.init[0]->has_data_location = 1;
	b.init[0]->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
	expect_fail(&b, FC_ERR_UNSUPPORTED, "initializer 'w'", "external data (not supported yet)", NULL);
	mb_free(&b);
	tiny_net(&b, 13);
	{
		Onnx__StringStringEntryProto *e = mb_zalloc(&b, sizeof *e);

		onnx__string_string_entry_proto__init(e);
		e->key = mb_str(&b, "location");
		e->value = mb_str(&b, "weights.bin");
		b.init[2]->n_external_data = 1;
		b.init[2]->external_data = mb_zalloc(&b, sizeof(void *));
		b.init[2]->external_data[0] = e;
		b.init[2]->has_raw_data = 0;
	}
	expect_fail(&b, FC_ERR_UNSUPPORTED, "initializer 'fw'", "external data", NULL);
	mb_free(&b);

	/* weights that do not fit the input */
	tiny_net(&b, 13);
	b.init[0]->dims[1] = 2;
	b.init[0]->raw_data.len = 4 * 2 * 9 * 4;
	expect_fail(&b, FC_ERR_INVALID, "'conv' (Conv)", "1x3x8x8 does not fit weight 4x2x3x3", NULL);
	mb_free(&b);
	tiny_net(&b, 13);
	b.init[2]->dims[1] = 5;
	b.init[2]->raw_data.data = mb_zalloc(&b, 40);
	b.init[2]->raw_data.len = 40;
	expect_fail(&b, FC_ERR_INVALID, "'fc' (Gemm)", "does not fit weight 2x5", NULL);
	mb_free(&b);
}

static uint16_t f16_bits[] = { 0x3c00, 0xc000, 0x7bff, 0x0001, 0x3800, 0x8000, 0x0400, 0x3555 };
static float f16_vals[] = { 1.0f, -2.0f, 65504.0f, 5.9604645e-8f, 0.5f, -0.0f, 6.1035156e-5f,
			    0.33325195f };

static void test_f16_initializers(void **state)
{
	struct mb b;
	fc_model *m;
	const fc_model_graph *g;
	const fc_model_tensor *t;

	(void)state;
	for (int form = 0; form < 3; form++) {
		Onnx__TensorProto *x;
		int64_t d8[1] = { 8 };

		tiny_net(&b, 13);
		x = mb_tensor(&b, "half", form == 2 ? ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16
						    : ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16, 1, d8);
		if (form == 0) { /* raw_data, little-endian 2-byte values */
			uint8_t *raw = mb_zalloc(&b, 16);

			for (int i = 0; i < 8; i++) {
				raw[2 * i] = (uint8_t)(f16_bits[i] & 0xff);
				raw[2 * i + 1] = (uint8_t)(f16_bits[i] >> 8);
			}
			x->has_raw_data = 1;
			x->raw_data.len = 16;
			x->raw_data.data = raw;
		} else { /* int32_data, one value per element */
			x->n_int32_data = 8;
			x->int32_data = mb_zalloc(&b, 8 * sizeof(int32_t));
			for (int i = 0; i < 8; i++)
				x->int32_data[i] = form == 1 ? f16_bits[i] : (int32_t)(0x3f80 + (i << 4));
		}
		mb_add_init(&b, x); /* unused initializers are decoded and checked too */
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
		mb_free(&b);
	}

	/* a whole f16 model: weights and biases in half precision */
	{
		uint8_t *raw;

		tiny_net(&b, 13);
		for (int k = 0; k < 2; k++) {
			Onnx__TensorProto *w = b.init[k];
			size_t n = w->raw_data.len / 4;

			raw = mb_zalloc(&b, 2 * n);
			for (size_t i = 0; i < n; i++)
				raw[2 * i + 1] = 0x3c; /* 1.0 */
			w->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16;
			w->raw_data.data = raw;
			w->raw_data.len = 2 * n;
		}
		b.input[0]->type->tensor_type->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16;
		m = expect_open(&b);
		g = fc_model_get_graph(m);
		t = tensor(g, "w");
		assert_int_equal(t->numel, 108);
		for (int i = 0; i < 108; i++)
			assert_true(t->f32[i] == 1.0f);
		assert_int_equal(g->params, 4 * 27 + 4 + 8 + 2);
		fc_model_free(m);
		mb_free(&b);

		/* short f16 data is still refused */
		tiny_net(&b, 13);
		b.init[0]->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16;
		b.init[0]->raw_data.len = 2 * 108 - 2;
		expect_fail(&b, FC_ERR_CORRUPT, "initializer 'w'", "214 bytes", "FLOAT16");
		mb_free(&b);
	}
}

static void test_clip_bounds(void **state)
{
	struct mb b;
	fc_model *m;
	const fc_model_graph *g;
	Onnx__NodeProto *n;

	(void)state;
	/* opset 13: min and max from Constant nodes (as torch exports ReLU6) */
	tiny_net(&b, 13);
	n = mb_node(&b, "Constant", "cmin", "", "lo");
	mb_attr_t(&b, n, "value", mb_f32(&b, NULL, 0, NULL, (const float[]){ 0.0f }));
	n = mb_node(&b, "Constant", "cmax", "", "hi");
	mb_attr_f(&b, n, "value_float", 6.0f);
	mb_node(&b, "Clip", "relu6", "c,lo,hi", "cl");
	m = expect_open(&b);
	g = fc_model_get_graph(m);
	assert_int_equal(g->nodes[nid(g, "cmin")].state, FC_NODE_FOLDED);
	assert_int_equal(g->nodes[nid(g, "relu6")].state, FC_NODE_RUN);
	assert_true(g->nodes[nid(g, "relu6")].attr.clip.min == 0.0f);
	assert_true(g->nodes[nid(g, "relu6")].attr.clip.max == 6.0f);
	expect_shape(g, "cl", 4, 1LL, 4LL, 8LL, 8LL);
	fc_model_free(m);
	mb_free(&b);

	/* from initializers, only max given */
	tiny_net(&b, 13);
	mb_add_init(&b, mb_f32(&b, "six", 0, NULL, (const float[]){ 6.0f }));
	mb_node(&b, "Clip", "cap", "c,,six", "cl");
	m = expect_open(&b);
	g = fc_model_get_graph(m);
	assert_true(isinf(g->nodes[nid(g, "cap")].attr.clip.min));
	assert_true(g->nodes[nid(g, "cap")].attr.clip.min < 0);
	assert_true(g->nodes[nid(g, "cap")].attr.clip.max == 6.0f);
	fc_model_free(m);
	mb_free(&b);

	/* opset 10: attributes */
	tiny_net(&b, 10);
	n = mb_node(&b, "Clip", "old", "c", "cl");
	mb_attr_f(&b, n, "min", -1.0f);
	mb_attr_f(&b, n, "max", 2.5f);
	m = expect_open(&b);
	g = fc_model_get_graph(m);
	assert_true(g->nodes[nid(g, "old")].attr.clip.min == -1.0f);
	assert_true(g->nodes[nid(g, "old")].attr.clip.max == 2.5f);
	fc_model_free(m);
	mb_free(&b);

	/* a bound computed from the image is refused; so is a vector bound */
	tiny_net(&b, 13);
	mb_node(&b, "Clip", "weird", "c,r", "cl");
	expect_fail(&b, FC_ERR_UNSUPPORTED, "'weird' (Clip)", "min 'r' must be a constant", NULL);
	mb_free(&b);
	tiny_net(&b, 13);
	mb_node(&b, "Clip", "vec", "c,b", "cl");
	expect_fail(&b, FC_ERR_CORRUPT, "'vec' (Clip)", "not a scalar", NULL);
	mb_free(&b);
}

static void test_squeeze_unsqueeze(void **state)
{
	struct mb b;
	fc_model *m;
	const fc_model_graph *g;
	Onnx__NodeProto *n;

	(void)state;
	/* opset 11: axes attributes */
	tiny_net(&b, 11);
	n = mb_node(&b, "Squeeze", "sq", "p", "s");
	mb_attr_ints(&b, n, "axes", 2, 2LL, -1LL);
	n = mb_node(&b, "Unsqueeze", "unsq", "s", "u");
	mb_attr_ints(&b, n, "axes", 2, 1LL, -1LL);
	n = mb_node(&b, "Squeeze", "sq_all", "p", "s2"); /* no axes: every 1 */
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
	mb_free(&b);

	/* opset 13: axes as inputs */
	tiny_net(&b, 13);
	mb_init_i64(&b, "ax23", 2, (const int64_t[]){ 2, 3 });
	mb_init_i64(&b, "ax0", 1, (const int64_t[]){ 0 });
	mb_node(&b, "Squeeze", "sq", "p,ax23", "s");
	mb_node(&b, "Unsqueeze", "unsq", "s,ax0", "u");
	m = expect_open(&b);
	g = fc_model_get_graph(m);
	expect_shape(g, "s", 2, 1LL, 4LL);
	expect_shape(g, "u", 3, 1LL, 1LL, 4LL);
	fc_model_free(m);
	mb_free(&b);

	/* the opset-13 form in an opset-11 model is refused, and vice versa */
	tiny_net(&b, 11);
	mb_init_i64(&b, "ax23", 2, (const int64_t[]){ 2, 3 });
	mb_node(&b, "Squeeze", "sq", "p,ax23", "s");
	expect_fail(&b, FC_ERR_CORRUPT, "'sq' (Squeeze)", "2 inputs", NULL);
	mb_free(&b);
	tiny_net(&b, 13);
	n = mb_node(&b, "Unsqueeze", "unsq", "p", "u");
	mb_attr_ints(&b, n, "axes", 1, 0LL);
	expect_fail(&b, FC_ERR_CORRUPT, "'unsq' (Unsqueeze)", "1 inputs", NULL);
	mb_free(&b);

	/* squeezing a dim that is not 1 */
	tiny_net(&b, 13);
	mb_init_i64(&b, "ax1", 1, (const int64_t[]){ 1 });
	mb_node(&b, "Squeeze", "bad", "p,ax1", "s");
	expect_fail(&b, FC_ERR_INVALID, "'bad' (Squeeze)", "axis 1 of size 4", NULL);
	mb_free(&b);
}

/* torch's x.view(x.size(0), -1) with a dynamic batch, and F.pad's pads
 * computed at run time: folded for the size chosen. */
static void test_shape_chain_folding(void **state)
{
	static const int64_t dyn[4] = { -1, 3, 8, 8 };
	struct mb b;
	fc_model *m;
	const fc_model_graph *g;
	Onnx__NodeProto *n;

	(void)state;
	tiny_net(&b, 13);
	b.input[0] = mb_value(&b, "x", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 4, dyn);
	mb_node(&b, "Shape", "shape", "r", "sh");
	n = mb_node(&b, "Constant", "zero", "", "z");
	mb_attr_t(&b, n, "value", mb_i64(&b, NULL, 1, (const int64_t[]){ 0 }));
	b.node[b.graph.n_node - 1]->attribute[0]->t->n_dims = 0; /* a scalar */
	mb_node(&b, "Gather", "gather", "sh,z", "n");
	mb_init_i64(&b, "ax0", 1, (const int64_t[]){ 0 });
	mb_node(&b, "Unsqueeze", "unsq", "n,ax0", "n1");
	mb_init_i64(&b, "minus1", 1, (const int64_t[]){ -1 });
	n = mb_node(&b, "Concat", "cat", "n1,minus1", "target");
	mb_attr_i(&b, n, "axis", 0);
	mb_node(&b, "Reshape", "view", "r,target", "v");
	/* pads [0,0,0,1, 0,0,1,0] built the way torch does for F.pad:
	 * ConstantOfShape, Concat, Cast */
	mb_init_i64(&b, "two", 1, (const int64_t[]){ 2 });
	n = mb_node(&b, "ConstantOfShape", "zeros", "two", "zs");
	mb_attr_t(&b, n, "value", mb_i64(&b, NULL, 1, (const int64_t[]){ 0 }));
	mb_init_i64(&b, "tail", 6, (const int64_t[]){ 0, 1, 0, 0, 1, 0 });
	n = mb_node(&b, "Concat", "padcat", "zs,tail", "pdi");
	mb_attr_i(&b, n, "axis", 0);
	n = mb_node(&b, "Cast", "cast", "pdi", "pads");
	mb_attr_i(&b, n, "to", ONNX__TENSOR_PROTO__DATA_TYPE__INT64);
	mb_node(&b, "Pad", "pad", "r,pads", "padded");
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
	mb_free(&b);
}

static void test_pooling_and_pads(void **state)
{
	struct mb b;
	fc_model *m;
	const fc_model_graph *g;
	Onnx__NodeProto *n;

	(void)state;
	tiny_net(&b, 13);
	/* PyTorch's ceil_mode rule: 8 + 2 pad, k2 s3 -> ceil gives 4 windows,
	 * but the last would start in the end padding: 3 (as torch says) */
	n = mb_node(&b, "MaxPool", "mp_ceil", "c", "m1");
	mb_attr_ints(&b, n, "kernel_shape", 2, 2LL, 2LL);
	mb_attr_ints(&b, n, "strides", 2, 3LL, 3LL);
	mb_attr_ints(&b, n, "pads", 4, 1LL, 1LL, 1LL, 1LL);
	mb_attr_i(&b, n, "ceil_mode", 1);
	/* ceil where it counts: 8, k3 s2 -> floor 3, ceil 4 */
	n = mb_node(&b, "MaxPool", "mp_ceil2", "c", "m2");
	mb_attr_ints(&b, n, "kernel_shape", 2, 3LL, 3LL);
	mb_attr_ints(&b, n, "strides", 2, 2LL, 2LL);
	mb_attr_i(&b, n, "ceil_mode", 1);
	n = mb_node(&b, "AveragePool", "ap_floor", "c", "m3");
	mb_attr_ints(&b, n, "kernel_shape", 2, 3LL, 3LL);
	mb_attr_ints(&b, n, "strides", 2, 2LL, 2LL);
	mb_attr_i(&b, n, "count_include_pad", 1);
	/* SAME_UPPER conv, stride 2, dilation 2 */
	{
		static const int64_t w2[4] = { 6, 2, 3, 3 };

		mb_init_f32(&b, "w2", 4, w2);
		n = mb_node(&b, "Conv", "same", "c,w2", "s");
		mb_attr_s(&b, n, "auto_pad", "SAME_UPPER");
		mb_attr_ints(&b, n, "strides", 2, 2LL, 2LL);
		mb_attr_ints(&b, n, "dilations", 2, 2LL, 1LL);
		mb_attr_i(&b, n, "group", 2);
	}
	/* ReduceMean over H, W without keepdims; with keepdims over W */
	n = mb_node(&b, "ReduceMean", "mean", "c", "rm");
	mb_attr_ints(&b, n, "axes", 2, -2LL, 3LL);
	mb_attr_i(&b, n, "keepdims", 0);
	n = mb_node(&b, "ReduceMean", "mean_w", "c", "rmw");
	mb_attr_ints(&b, n, "axes", 1, 3LL);
	/* standalone BN */
	{
		static const int64_t c4[1] = { 4 };

		mb_init_f32(&b, "g", 1, c4);
		mb_init_f32(&b, "be", 1, c4);
		mb_init_f32(&b, "mu", 1, c4);
		mb_add_init(&b, mb_f32(&b, "var", 1, c4, (const float[]){ 1, 2, 3, 4 }));
		n = mb_node(&b, "BatchNormalization", "bn", "c,g,be,mu,var", "bnout");
		mb_attr_f(&b, n, "epsilon", 1e-3f);
	}
	/* opset 13 Pad from an initializer with a constant value */
	mb_init_i64(&b, "pads", 8, (const int64_t[]){ 0, 0, 2, 0, 0, 0, 0, 3 });
	mb_add_init(&b, mb_f32(&b, "pv", 0, NULL, (const float[]){ -1.5f }));
	mb_node(&b, "Pad", "pad", "c,pads,pv", "pd");
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
	mb_free(&b);

	/* opset 10 Pad: attributes */
	tiny_net(&b, 10);
	n = mb_node(&b, "Pad", "pad10", "c", "pd");
	mb_attr_ints(&b, n, "pads", 8, 0LL, 0LL, 1LL, 1LL, 0LL, 0LL, 1LL, 1LL);
	mb_attr_f(&b, n, "value", 0.0f);
	m = expect_open(&b);
	g = fc_model_get_graph(m);
	expect_shape(g, "pd", 4, 1LL, 4LL, 10LL, 10LL);
	fc_model_free(m);
	mb_free(&b);
}

static void test_matmul_and_broadcast(void **state)
{
	struct mb b;
	fc_model *m;
	const fc_model_graph *g;

	(void)state;
	tiny_net(&b, 13);
	mb_init_f32(&b, "mw", 2, (const int64_t[]){ 4, 7 });
	mb_node(&b, "MatMul", "mm", "f,mw", "mmo");
	mb_init_f32(&b, "se", 4, (const int64_t[]){ 1, 4, 1, 1 });
	mb_node(&b, "Mul", "scale", "c,p", "sc"); /* SE: N x C x 1 x 1 into N x C x H x W */
	mb_node(&b, "Sub", "sub", "se,c", "sb");  /* constant on the left */
	mb_node(&b, "HardSwish", "hsw", "sb", "hs");
	mb_node(&b, "Dropout", "drop", "hs", "dr");
	mb_node(&b, "Identity", "id", "dr", "idd");
	mb_node(&b, "Relu", "after_alias", "idd", "aa");
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
	assert_int_equal(g->nodes[nid(g, "after_alias")].in[0], tid(g, "hs"));
	assert_int_equal(tensor(g, "idd")->source, tid(g, "hs"));
	assert_int_equal(fc_model_cut(m, "id"), 0);
	assert_int_equal(g->cut_tensor, tid(g, "hs"));
	assert_int_equal(g->cut_node, nid(g, "id"));
	fc_model_free(m);
	mb_free(&b);

	tiny_net(&b, 13);
	mb_init_f32(&b, "odd", 1, (const int64_t[]){ 3 });
	mb_node(&b, "Add", "bad_add", "c,odd", "z");
	expect_fail(&b, FC_ERR_INVALID, "'bad_add' (Add)", "1x4x8x8 and 3 do not broadcast", NULL);
	mb_free(&b);
}

/* A model with no Gemm/MatMul: the default is the input of the last Conv. */
static void test_default_without_gemm(void **state)
{
	static const int64_t w1[4] = { 4, 3, 3, 3 }, w2[4] = { 5, 4, 1, 1 };
	struct mb b;
	fc_model *m;
	const fc_model_graph *g;

	(void)state;
	mb_init(&b, 13);
	mb_input(&b, "x", 4, D1x3x8x8);
	mb_init_f32(&b, "w1", 4, w1);
	mb_init_f32(&b, "w2", 4, w2);
	mb_node(&b, "Conv", "features", "x,w1", "c1");
	mb_node(&b, "Relu", "act", "c1", "a1");
	mb_node(&b, "Dropout", "drop", "a1", "d1");
	mb_node(&b, "Conv", "classifier", "d1,w2", "c2");
	mb_node(&b, "GlobalAveragePool", "gap", "c2", "y");
	mb_output(&b, "y");
	m = expect_open(&b);
	g = fc_model_get_graph(m);
	assert_string_equal(g->nodes[g->default_node].name, "act"); /* through the Dropout */
	assert_int_equal(g->pool, 1);
	assert_int_equal(g->embed_dim, 4);
	assert_false(g->nodes[nid(g, "classifier")].needed);
	fc_model_free(m);
	mb_free(&b);

	/* no Gemm, MatMul or Conv: the first output */
	mb_init(&b, 13);
	mb_input(&b, "x", 4, D1x3x8x8);
	mb_node(&b, "Relu", "only", "x", "y");
	mb_output(&b, "y");
	m = expect_open(&b);
	g = fc_model_get_graph(m);
	assert_string_equal(g->nodes[g->default_node].name, "only");
	assert_int_equal(g->embed_dim, 3);
	fc_model_free(m);
	mb_free(&b);

	/* a Gemm straight on the input: no layer before it */
	mb_init(&b, 13);
	mb_input(&b, "x", 2, (const int64_t[]){ 1, 4 });
	mb_init_f32(&b, "w", 2, (const int64_t[]){ 4, 2 });
	mb_node(&b, "Gemm", "fc", "x,w", "y");
	mb_output(&b, "y");
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
	mb_free(&b);
}

static void test_constants(void **state)
{
	struct mb b;
	fc_model *m;
	const fc_model_graph *g;
	Onnx__NodeProto *n;

	(void)state;
	tiny_net(&b, 13);
	n = mb_node(&b, "Constant", "ints", "", "shape");
	{
		Onnx__AttributeProto *a = mb_attr(&b, n, "value_ints", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);

		a->n_ints = 2;
		a->ints = mb_zalloc(&b, 2 * sizeof(int64_t));
		a->ints[0] = 1;
		a->ints[1] = -1;
	}
	mb_node(&b, "Reshape", "rs", "c,shape", "flat2");
	/* constants folded through arithmetic, Slice and Transpose */
	mb_init_i64(&b, "v", 4, (const int64_t[]){ 10, 20, 30, 40 });
	mb_init_i64(&b, "st", 1, (const int64_t[]){ -1 });
	mb_init_i64(&b, "en", 1, (const int64_t[]){ INT64_MIN });
	mb_init_i64(&b, "sp", 1, (const int64_t[]){ -2 });
	mb_init_i64(&b, "axz", 1, (const int64_t[]){ 0 });
	mb_node(&b, "Slice", "rev", "v,st,en,axz,sp", "vr");
	/* steps no file should give: one element each, no overflow */
	mb_init_i64(&b, "zero1", 1, (const int64_t[]){ 0 });
	mb_init_i64(&b, "big1", 1, (const int64_t[]){ INT64_MAX });
	mb_init_i64(&b, "min1", 1, (const int64_t[]){ INT64_MIN });
	mb_node(&b, "Slice", "huge_step", "v,zero1,big1,axz,big1", "vbig");
	mb_node(&b, "Slice", "min_step", "v,big1,min1,axz,min1", "vmin");
	mb_node(&b, "Div", "half", "vr,two", "vh");
	mb_init_i64(&b, "two", 1, (const int64_t[]){ 2 });
	mb_add_init(&b, mb_f32(&b, "mat", 2, (const int64_t[]){ 2, 3 }, (const float[]){ 1, 2, 3, 4, 5, 6 }));
	mb_node(&b, "Transpose", "tr", "mat", "matT");
	n = mb_node(&b, "Relu", "relu_const", "mat", "matr");
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
	mb_free(&b);

	/* integer division by zero while folding */
	tiny_net(&b, 13);
	mb_init_i64(&b, "a", 1, (const int64_t[]){ 7 });
	mb_init_i64(&b, "z", 1, (const int64_t[]){ 0 });
	mb_node(&b, "Div", "divz", "a,z", "q");
	expect_fail(&b, FC_ERR_INVALID, "'divz' (Div)", "division by 0", NULL);
	mb_free(&b);

	/* a Reshape that cannot work */
	tiny_net(&b, 13);
	mb_init_i64(&b, "s", 2, (const int64_t[]){ 3, -1 });
	mb_node(&b, "Reshape", "rs", "c,s", "z");
	expect_fail(&b, FC_ERR_INVALID, "'rs' (Reshape)", "cannot reshape 1x4x8x8", NULL);
	mb_free(&b);

	/* folding that would create too much */
	tiny_net(&b, 13);
	mb_init_i64(&b, "big", 1, (const int64_t[]){ 1LL << 40 });
	mb_node(&b, "ConstantOfShape", "bomb", "big", "z");
	expect_fail(&b, FC_ERR_INVALID, "'bomb'", "shape has 1099511627776", NULL);
	mb_free(&b);
	tiny_net(&b, 13);
	mb_init_i64(&b, "big", 2, (const int64_t[]){ 8192, 8192 });
	mb_node(&b, "ConstantOfShape", "bomb", "big", "z");
	expect_fail(&b, FC_ERR_OVERFLOW, "'bomb'", "more values than", NULL);
	mb_free(&b);
	/* each fold alone is allowed, together they are not */
	tiny_net(&b, 13);
	mb_init_i64(&b, "six_m", 1, (const int64_t[]){ 400000 });
	mb_node(&b, "ConstantOfShape", "bomb1", "six_m", "z1");
	mb_node(&b, "ConstantOfShape", "bomb2", "six_m", "z2");
	mb_node(&b, "ConstantOfShape", "bomb3", "six_m", "z3");
	expect_fail(&b, FC_ERR_OVERFLOW, "'bomb3'", "more values than", NULL);
	mb_free(&b);

	/* a node with absurdly many attributes */
	tiny_net(&b, 13);
	{
		Onnx__NodeProto *chatty = mb_node(&b, "Relu", "chatty", "c", "z");
		Onnx__AttributeProto **many = mb_zalloc(&b, sizeof *many * 65);

		for (int i = 0; i < 65; i++) {
			char nm[16];

			snprintf(nm, sizeof nm, "a%d", i);
			many[i] = mb_zalloc(&b, sizeof **many);
			onnx__attribute_proto__init(many[i]);
			many[i]->name = mb_str(&b, nm);
			many[i]->has_type = 1;
			many[i]->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
			many[i]->has_i = 1;
		}
		chatty->attribute = many;
		chatty->n_attribute = 65;
	}
	expect_fail(&b, FC_ERR_UNSUPPORTED, "'chatty'", "65 attributes", NULL);
	mb_free(&b);
}

/* Bytes outside the writer: unknown fields are skipped; broken ones named. */
static void test_wire_format(void **state)
{
	struct mb b;
	size_t len;
	uint8_t *buf, *big;
	fc_model *m;
	char err[FC_ERRLEN];
	int rc;

	(void)state;
	tiny_net(&b, 13);
	buf = mb_pack(&b, &len);
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
	mb_free(&b);

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

static void test_open_errors(void **state)
{
	fc_model *m = (fc_model *)1;
	char err[FC_ERRLEN], path[1200];
	int rc;

	(void)state;
	rc = fc_model_open(&m, "/nonexistent/model.onnx", err, sizeof err);
	assert_int_equal(rc, FC_ERR_NOT_FOUND);
	assert_null(m);
	assert_string_equal(err, "no such file or directory");
	rc = fc_model_open(&m, fixture_dir, err, sizeof err);
	assert_int_equal(rc, FC_ERR_IO);
	assert_string_equal(err, "is a directory");
	rc = fc_model_open(&m, fixture_path(path, sizeof path, "input_224", ".npy"), err, sizeof err);
	assert_true(rc < 0);
	print_message("#   an .npy file: %s\n", err);
	/* errbuf may be NULL */
	rc = fc_model_open(&m, "/nonexistent", NULL, 0);
	assert_true(rc < 0);
}

/* ---- hostile bytes ---- */

static int hostile_failures, hostile_opened;

static void hostile_check(int rc, fc_model *m, const char *err, const char *what)
{
	if (rc == 0) {
		hostile_opened++;
		if (!invariants_ok(m)) {
			printf("# %s: opened into an inconsistent graph\n", what);
			hostile_failures++;
		}
		fc_model_free(m);
		return;
	}
	if (rc > 0 || m != NULL || !err[0] || rc == FC_ERR_NOMEM || rc == FC_ERR_INTERNAL) {
		printf("# %s: rc %d, message '%s'\n", what, rc, err);
		hostile_failures++;
	}
}

/* Runs in a child, under an address-space limit unless ASan is in charge,
 * so that an allocation far beyond the file's size fails visibly
 * (FC_ERR_NOMEM, counted as a failure) instead of passing unnoticed. */
static void hostile_run(void)
{
	int n;
	char **names = fixture_names(&n), path[1200], err[FC_ERRLEN], what[1400];
	int tries = 0;

	for (int i = 0; i < n; i++) {
		size_t len;
		unsigned char *data = read_all(fixture_path(path, sizeof path, names[i], ".onnx"), &len);
		unsigned char *copy;
		int flips;

		if (!data) {
			printf("# cannot read %s\n", path);
			hostile_failures++;
			continue;
		}
		for (int k = 0; k < 64; k++) {
			size_t cut = len * (size_t)k / 64;
			fc_model *m = (fc_model *)1;
			int rc = fc_model_open_mem(&m, data, cut, err, sizeof err);

			snprintf(what, sizeof what, "%s cut at %zu", names[i], cut);
			if (rc == 0) {
				printf("# %s: opened\n", what);
				hostile_failures++;
				fc_model_free(m);
				continue;
			}
			hostile_check(rc, m, err, what);
			tries++;
		}
		copy = malloc(len);
		if (!copy)
			_exit(2);
		flips = len < 300000 ? 150 : 12;
		for (int k = 0; k < flips; k++) {
			fc_model *m = (fc_model *)1;
			int nf = 1 + (int)rng_below(4), rc;

			memcpy(copy, data, len);
			for (int f = 0; f < nf; f++)
				copy[rng_below(len)] ^= (unsigned char)(1 + rng_below(255));
			rc = fc_model_open_mem(&m, copy, len, err, sizeof err);
			snprintf(what, sizeof what, "%s flip %d", names[i], k);
			hostile_check(rc, m, err, what);
			tries++;
		}
		free(copy);
		free(data);
	}
	for (int k = 0; k < 300; k++) {
		size_t len = 1 + rng_below(4096);
		unsigned char *r = malloc(len);
		fc_model *m = (fc_model *)1;
		int rc;

		if (!r)
			_exit(2);
		for (size_t j = 0; j < len; j++)
			r[j] = (unsigned char)rng_next();
		if (k % 3 == 0)
			r[0] = 0x3a; /* start like a graph field */
		rc = fc_model_open_mem(&m, r, len, err, sizeof err);
		snprintf(what, sizeof what, "random %d", k);
		if (rc == 0) {
			printf("# %s: opened\n", what);
			hostile_failures++;
			fc_model_free(m);
		} else {
			hostile_check(rc, m, err, what);
		}
		free(r);
		tries++;
	}
	printf("# hostile: %d files tried, %d opened (flips in weights), the rest refused; %d failures\n",
	       tries, hostile_opened, hostile_failures);
	free_names(names, n);
}

static long vm_size_kb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kb = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "VmSize: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static void test_hostile(void **state)
{
	pid_t pid;
	int status;

	(void)state;
	fflush(stdout);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (!UNDER_ASAN) {
			long kb = vm_size_kb();
			struct rlimit rl;

			/* what the process maps now, plus 512 MiB: a 1.5 MB file
			 * unpacks into well under 100 MiB */
			if (kb > 0) {
				rl.rlim_cur = rl.rlim_max = ((rlim_t)kb << 10) + ((rlim_t)512 << 20);
				setrlimit(RLIMIT_AS, &rl);
			}
		}
		hostile_run();
		fflush(stdout);
		_exit(hostile_failures ? 1 : 0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!WIFEXITED(status))
		fail_msg("hostile run died with signal %d", WIFSIGNALED(status) ? WTERMSIG(status) : -1);
	assert_int_equal(WEXITSTATUS(status), 0);
}

static int group_setup(void **state)
{
	const char *top = getenv("FC_TOP");

	(void)state;
	snprintf(fixture_dir, sizeof fixture_dir, "%s/tests/fixtures/models", top && *top ? top : ".");
	return 0;
}

int main(void)
{
	const char *s = getenv("FC_TEST_SEED");

	if (s && *s)
		seed = strtoull(s, NULL, 0);
	rng_state = seed;
	printf("# test_model seed %llu (FC_TEST_SEED to replay)\n", (unsigned long long)seed);
	fflush(stdout);

	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fixtures),
		cmocka_unit_test(test_fixture_op_coverage),
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
		cmocka_unit_test(test_wire_format),
		cmocka_unit_test(test_open_errors),
		cmocka_unit_test(test_hostile),
	};
	return cmocka_run_group_tests(tests, group_setup, NULL);
}
