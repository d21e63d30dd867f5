/*
 * test_model_fold.c - unit tests of constant folding (extract/model_fold.c)
 * for the ops transformers' shape and mask subgraphs use: BOOL tensors
 * (onnx_read.c), Equal/Less/Greater, Not, Where, Mod, Neg, Pow, Sqrt,
 * Range, Expand, ScatterND, integer Div and Gather with an index tensor.
 * Each model is a one-node network (x -> Relu -> y) beside constants that
 * fold; the folded values are read back through fc_model_get_graph and
 * compared with values worked out by hand (ONNX's and numpy's rules), and
 * one chain feeds a Reshape so that folding shows in an activation's shape.
 * The hostile cases (shapes that do not fit, indices out of range, Mod by
 * zero, a Range or Expand past the fold budget) must be refused with a
 * message naming the node.
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

#include "featcache/model.h"
#include "tests/testlib.h"

/* ---- building ---- */

static const int64_t D1x3x4x4[4] = { 1, 3, 4, 4 };

/* x (1x3x4x4) -> Relu -> y: the smallest model that opens. */
static void base(fci_onnx *b, int opset)
{
	testlib_model_init(b, opset);
	testlib_input(b, "x", 4, D1x3x4x4);
	testlib_node(b, "Relu", "relu", "x", "y");
	testlib_output(b, "y");
}

static size_t count(int ndim, const int64_t *dims)
{
	size_t n = 1;

	for (int i = 0; i < ndim; i++)
		n *= (size_t)dims[i];
	return n;
}

/* An INT64 initializer of any rank (0: a scalar). */
static void init_i64(fci_onnx *b, const char *name, int ndim, const int64_t *dims, const int64_t *v)
{
	Onnx__TensorProto *t = testlib_tensor(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__INT64, ndim, dims);
	size_t n = count(ndim, dims);

	t->int64_data = testlib_alloc(b, n * sizeof *v + 1);
	memcpy(t->int64_data, v, n * sizeof *v);
	t->n_int64_data = n;
	testlib_add_init(b, t);
}

static void init_f32(fci_onnx *b, const char *name, int ndim, const int64_t *dims, const float *v)
{
	testlib_add_init(b, testlib_f32(b, name, ndim, dims, v));
}

static void scalar_i64(fci_onnx *b, const char *name, int64_t v)
{
	init_i64(b, name, 0, NULL, &v);
}

static void scalar_f32(fci_onnx *b, const char *name, float v)
{
	init_f32(b, name, 0, NULL, &v);
}

/* ---- checking ---- */

static fc_model *expect_open(fci_onnx *b)
{
	fc_model *m = NULL;
	char err[FC_ERRLEN];
	int rc = testlib_open(b, &m, err);

	if (rc)
		fail_msg("open failed: %d %s", rc, err);
	assert_true(testlib_model_consistent(m));
	return m;
}

/* Open must fail with code and a message holding s1 and s2 (NULL: any). */
static void expect_fail(fci_onnx *b, int code, const char *s1, const char *s2)
{
	fc_model *m = (fc_model *)1;
	char err[FC_ERRLEN];
	int rc = testlib_open(b, &m, err);

	if (rc >= 0)
		fail_msg("opened a model that should fail (wanted '%s')", s1);
	assert_null(m);
	if (rc != code)
		fail_msg("error %d (%s), wanted %d", rc, err, code);
	if (!strstr(err, s1) || (s2 && !strstr(err, s2)))
		fail_msg("message '%s' lacks '%s' / '%s'", err, s1, s2 ? s2 : "");
	print_message("#   refused: %s\n", err);
}

static const fc_model_tensor *folded(const fc_model *m, const char *name, int elem, int ndim, ...)
{
	const fc_model_graph *g = fc_model_get_graph(m);
	int id = testlib_tensor_id(g, name);
	const fc_model_tensor *t;
	va_list ap;

	if (id < 0)
		fail_msg("no tensor '%s'", name);
	t = &g->tensors[id];
	if (t->kind != FC_TENSOR_CONST || t->elem != elem)
		fail_msg("'%s' is kind %d elem %d, wanted a constant of elem %d", name, t->kind,
			 t->elem, elem);
	if (t->ndim != ndim)
		fail_msg("'%s' has rank %d, wanted %d", name, t->ndim, ndim);
	va_start(ap, ndim);
	for (int i = 0; i < ndim; i++) {
		long long want = va_arg(ap, long long);

		if (t->dims[i] != want)
			fail_msg("'%s' dim %d is %lld, wanted %lld", name, i, (long long)t->dims[i], want);
	}
	va_end(ap);
	return t;
}

static void expect_i64(const fc_model_tensor *t, size_t n, const int64_t *want)
{
	assert_int_equal(t->numel, (int64_t)n);
	for (size_t i = 0; i < n; i++)
		if (t->i64[i] != want[i])
			fail_msg("'%s'[%zu] is %lld, wanted %lld", t->name, i, (long long)t->i64[i],
				 (long long)want[i]);
}

/* Bit-exact floats: every value below is exact in f32 (NaN by isnan). */
static void expect_f32(const fc_model_tensor *t, size_t n, const float *want)
{
	assert_int_equal(t->numel, (int64_t)n);
	for (size_t i = 0; i < n; i++)
		if (isnan(want[i]) ? !isnan(t->f32[i]) : t->f32[i] != want[i])
			fail_msg("'%s'[%zu] is %g, wanted %g", t->name, i, (double)t->f32[i],
				 (double)want[i]);
}

#define I64S(...) (sizeof((const int64_t[]){ __VA_ARGS__ }) / sizeof(int64_t)), (const int64_t[]){ __VA_ARGS__ }
#define F32S(...) (sizeof((const float[]){ __VA_ARGS__ }) / sizeof(float)), (const float[]){ __VA_ARGS__ }

/* ---- the tests ---- */

/* BOOL initializers (raw bytes and int32_data), a BOOL Constant and a
 * ConstantOfShape with a BOOL value all read as I64 0/1. */
static void test_bool_tensors(void **state)
{
	static const int64_t d4[1] = { 4 }, d2x2[2] = { 2, 2 };
	fci_onnx b;
	fc_model *m;
	Onnx__TensorProto *t;
	Onnx__NodeProto *n;

	(void)state;
	base(&b, 17);
	t = testlib_tensor(&b, "braw", ONNX__TENSOR_PROTO__DATA_TYPE__BOOL, 1, d4);
	t->has_raw_data = 1;
	t->raw_data.data = testlib_alloc(&b, 4);
	memcpy(t->raw_data.data, (const uint8_t[]){ 0, 1, 2, 0 }, 4);
	t->raw_data.len = 4;
	testlib_add_init(&b, t);
	t = testlib_tensor(&b, "btyped", ONNX__TENSOR_PROTO__DATA_TYPE__BOOL, 1, d4);
	t->int32_data = testlib_alloc(&b, 4 * sizeof(int32_t));
	memcpy(t->int32_data, (const int32_t[]){ 1, 0, 0, 7 }, 4 * sizeof(int32_t));
	t->n_int32_data = 4;
	testlib_add_init(&b, t);
	n = testlib_node(&b, "Constant", "bconst", "", "bc");
	t = testlib_tensor(&b, NULL, ONNX__TENSOR_PROTO__DATA_TYPE__BOOL, 0, NULL);
	t->has_raw_data = 1;
	t->raw_data.data = testlib_alloc(&b, 1);
	t->raw_data.data[0] = 1;
	t->raw_data.len = 1;
	testlib_attr_t(&b, n, "value", t);
	init_i64(&b, "shape", 1, (const int64_t[]){ 2 }, d2x2);
	n = testlib_node(&b, "ConstantOfShape", "ones", "shape", "o");
	t = testlib_tensor(&b, NULL, ONNX__TENSOR_PROTO__DATA_TYPE__BOOL, 1, (const int64_t[]){ 1 });
	t->int32_data = testlib_alloc(&b, sizeof(int32_t));
	t->int32_data[0] = 1;
	t->n_int32_data = 1;
	testlib_attr_t(&b, n, "value", t);
	testlib_node(&b, "Not", "not", "braw", "nb");
	/* Cast to BOOL makes any nonzero 1 (NaN too, as numpy does) */
	init_i64(&b, "ints", 1, (const int64_t[]){ 3 }, (const int64_t[]){ 0, 2, -3 });
	init_f32(&b, "floats", 1, (const int64_t[]){ 3 }, (const float[]){ 0.5f, 0.0f, NAN });
	n = testlib_node(&b, "Cast", "ib", "ints", "ib");
	testlib_attr_i(&b, n, "to", ONNX__TENSOR_PROTO__DATA_TYPE__BOOL);
	n = testlib_node(&b, "Cast", "fb", "floats", "fb");
	testlib_attr_i(&b, n, "to", ONNX__TENSOR_PROTO__DATA_TYPE__BOOL);
	n = testlib_node(&b, "Cast", "bf", "fb", "bf");
	testlib_attr_i(&b, n, "to", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT);
	m = expect_open(&b);
	expect_i64(folded(m, "braw", FC_ELEM_I64, 1, 4LL), I64S(0, 1, 1, 0));
	expect_i64(folded(m, "btyped", FC_ELEM_I64, 1, 4LL), I64S(1, 0, 0, 1));
	expect_i64(folded(m, "bc", FC_ELEM_I64, 0), I64S(1));
	expect_i64(folded(m, "o", FC_ELEM_I64, 2, 2LL, 2LL), I64S(1, 1, 1, 1));
	expect_i64(folded(m, "nb", FC_ELEM_I64, 1, 4LL), I64S(1, 0, 0, 1));
	expect_i64(folded(m, "ib", FC_ELEM_I64, 1, 3LL), I64S(0, 1, 1));
	expect_i64(folded(m, "fb", FC_ELEM_I64, 1, 3LL), I64S(1, 0, 1));
	expect_f32(folded(m, "bf", FC_ELEM_F32, 1, 3LL), F32S(1, 0, 1));
	fc_model_free(m);
	fci_onnx_free(&b);

	/* raw BOOL data must be one byte per value */
	base(&b, 17);
	t = testlib_tensor(&b, "short", ONNX__TENSOR_PROTO__DATA_TYPE__BOOL, 1, d4);
	t->has_raw_data = 1;
	t->raw_data.data = testlib_alloc(&b, 3);
	t->raw_data.len = 3;
	testlib_add_init(&b, t);
	expect_fail(&b, FC_ERR_CORRUPT, "initializer 'short'", "3 bytes of data");
	fci_onnx_free(&b);
}

/* Equal, Less, Greater broadcast, on integers and floats (NaN compares
 * false); Not of a comparison. */
static void test_compare(void **state)
{
	static const int64_t d2x3[2] = { 2, 3 }, d3[1] = { 3 };
	fci_onnx b;
	fc_model *m;

	(void)state;
	base(&b, 17);
	init_i64(&b, "a", 2, d2x3, (const int64_t[]){ 1, 2, 3, 4, 5, 6 });
	init_i64(&b, "c", 1, d3, (const int64_t[]){ 2, 2, 6 });
	testlib_node(&b, "Equal", "eq", "a,c", "eq");
	testlib_node(&b, "Less", "lt", "a,c", "lt");
	testlib_node(&b, "Greater", "gt", "a,c", "gt");
	testlib_node(&b, "Not", "ne", "eq", "ne");
	/* integers beyond 2^53 differ though their doubles do not */
	scalar_i64(&b, "big1", ((int64_t)1 << 60) + 1);
	scalar_i64(&b, "big2", (int64_t)1 << 60);
	testlib_node(&b, "Equal", "eqbig", "big1,big2", "eqbig");
	testlib_node(&b, "Greater", "gtbig", "big1,big2", "gtbig");
	init_f32(&b, "f", 1, d3, (const float[]){ 1.5f, NAN, -2.0f });
	scalar_f32(&b, "g", 1.5f);
	testlib_node(&b, "Equal", "feq", "f,g", "feq");
	testlib_node(&b, "Less", "flt", "f,g", "flt");
	testlib_node(&b, "Greater", "fgt", "f,f", "fgt");
	m = expect_open(&b);
	expect_i64(folded(m, "eq", FC_ELEM_I64, 2, 2LL, 3LL), I64S(0, 1, 0, 0, 0, 1));
	expect_i64(folded(m, "lt", FC_ELEM_I64, 2, 2LL, 3LL), I64S(1, 0, 1, 0, 0, 0));
	expect_i64(folded(m, "gt", FC_ELEM_I64, 2, 2LL, 3LL), I64S(0, 0, 0, 1, 1, 0));
	expect_i64(folded(m, "ne", FC_ELEM_I64, 2, 2LL, 3LL), I64S(1, 0, 1, 1, 1, 0));
	expect_i64(folded(m, "eqbig", FC_ELEM_I64, 0), I64S(0));
	expect_i64(folded(m, "gtbig", FC_ELEM_I64, 0), I64S(1));
	expect_i64(folded(m, "feq", FC_ELEM_I64, 1, 3LL), I64S(1, 0, 0));
	expect_i64(folded(m, "flt", FC_ELEM_I64, 1, 3LL), I64S(0, 0, 1));
	expect_i64(folded(m, "fgt", FC_ELEM_I64, 1, 3LL), I64S(0, 0, 0));
	fc_model_free(m);
	fci_onnx_free(&b);

	base(&b, 17);
	init_i64(&b, "a", 2, d2x3, (const int64_t[]){ 1, 2, 3, 4, 5, 6 });
	init_i64(&b, "c", 1, (const int64_t[]){ 2 }, (const int64_t[]){ 1, 2 });
	testlib_node(&b, "Equal", "bad_eq", "a,c", "eq");
	expect_fail(&b, FC_ERR_INVALID, "'bad_eq' (Equal)", "shapes 2x3 and 2 do not broadcast");
	fci_onnx_free(&b);

	base(&b, 17);
	scalar_i64(&b, "i", 1);
	scalar_f32(&b, "f", 1.0f);
	testlib_node(&b, "Less", "mixed", "i,f", "z");
	expect_fail(&b, FC_ERR_CORRUPT, "'mixed' (Less)", "mixes float and integer");
	fci_onnx_free(&b);

	base(&b, 17);
	scalar_f32(&b, "f", 1.0f);
	testlib_node(&b, "Not", "fnot", "f", "z");
	expect_fail(&b, FC_ERR_CORRUPT, "'fnot' (Not)", "not boolean");
	fci_onnx_free(&b);
}

/* Where broadcasts its three inputs together; ViT's expand(-1) pattern
 * Where(Equal(s, -1), ones, s) picks per element. */
static void test_where(void **state)
{
	fci_onnx b;
	fc_model *m;

	(void)state;
	base(&b, 17);
	init_i64(&b, "c", 2, (const int64_t[]){ 2, 1 }, (const int64_t[]){ 1, 0 });
	init_f32(&b, "xv", 2, (const int64_t[]){ 1, 3 }, (const float[]){ 1, 2, 3 });
	scalar_f32(&b, "yv", -100.0f);
	testlib_node(&b, "Where", "w", "c,xv,yv", "w");
	init_i64(&b, "s", 1, (const int64_t[]){ 3 }, (const int64_t[]){ 1, -1, 768 });
	scalar_i64(&b, "m1", -1);
	init_i64(&b, "ones", 1, (const int64_t[]){ 3 }, (const int64_t[]){ 1, 1, 1 });
	testlib_node(&b, "Equal", "is_m1", "s,m1", "is_m1");
	testlib_node(&b, "Where", "pick", "is_m1,ones,s", "shape");
	m = expect_open(&b);
	expect_f32(folded(m, "w", FC_ELEM_F32, 2, 2LL, 3LL), F32S(1, 2, 3, -100, -100, -100));
	expect_i64(folded(m, "shape", FC_ELEM_I64, 1, 3LL), I64S(1, 1, 768));
	fc_model_free(m);
	fci_onnx_free(&b);

	/* the condition broadcasts with x, but not the result with y */
	base(&b, 17);
	init_i64(&b, "c", 2, (const int64_t[]){ 2, 1 }, (const int64_t[]){ 1, 0 });
	init_f32(&b, "xv", 2, (const int64_t[]){ 1, 3 }, NULL);
	init_f32(&b, "yv", 1, (const int64_t[]){ 2 }, NULL);
	testlib_node(&b, "Where", "bad_where", "c,xv,yv", "w");
	expect_fail(&b, FC_ERR_INVALID, "'bad_where' (Where)", "shapes 2x3 and 2 do not broadcast");
	fci_onnx_free(&b);

	base(&b, 17);
	scalar_f32(&b, "c", 1.0f);
	scalar_f32(&b, "xv", 1.0f);
	testlib_node(&b, "Where", "fcond", "c,xv,xv", "w");
	expect_fail(&b, FC_ERR_CORRUPT, "'fcond' (Where)", "condition is not boolean");
	fci_onnx_free(&b);

	base(&b, 17);
	scalar_i64(&b, "c", 1);
	scalar_f32(&b, "xv", 1.0f);
	testlib_node(&b, "Where", "mixw", "c,xv,c", "w");
	expect_fail(&b, FC_ERR_CORRUPT, "'mixw' (Where)", "mixes float and integer");
	fci_onnx_free(&b);
}

/* Mod: fmod = 0 takes the divisor's sign (Python), fmod = 1 the dividend's
 * (C); integer Div truncates toward zero. */
static void test_mod_div(void **state)
{
	static const int64_t d4[1] = { 4 };
	fci_onnx b;
	fc_model *m;
	Onnx__NodeProto *n;

	(void)state;
	base(&b, 17);
	init_i64(&b, "a", 1, d4, (const int64_t[]){ 7, -7, 7, -7 });
	init_i64(&b, "d", 1, d4, (const int64_t[]){ 3, 3, -3, -3 });
	init_i64(&b, "two", 1, d4, (const int64_t[]){ 2, 2, -2, -2 });
	testlib_node(&b, "Mod", "pymod", "a,d", "pymod");
	n = testlib_node(&b, "Mod", "cmod", "a,d", "cmod");
	testlib_attr_i(&b, n, "fmod", 1);
	testlib_node(&b, "Div", "div", "a,two", "div");
	scalar_i64(&b, "imin", INT64_MIN);
	scalar_i64(&b, "m1", -1);
	testlib_node(&b, "Mod", "minmod", "imin,m1", "minmod");
	/* Swin's pad: (7 - 56 % 7) % 7 and (7 - 30 % 7) % 7 */
	init_i64(&b, "hw", 1, (const int64_t[]){ 2 }, (const int64_t[]){ 56, 30 });
	scalar_i64(&b, "seven", 7);
	testlib_node(&b, "Mod", "m_a", "hw,seven", "ma");
	testlib_node(&b, "Sub", "m_b", "seven,ma", "mb");
	testlib_node(&b, "Mod", "m_c", "mb,seven", "pad");
	init_f32(&b, "fa", 1, d4, (const float[]){ 5.5f, -5.5f, 5.5f, -5.5f });
	init_f32(&b, "fd", 1, d4, (const float[]){ 2, 2, -2, -2 });
	testlib_node(&b, "Mod", "fpymod", "fa,fd", "fpymod");
	n = testlib_node(&b, "Mod", "fcmod", "fa,fd", "fcmod");
	testlib_attr_i(&b, n, "fmod", 1);
	m = expect_open(&b);
	expect_i64(folded(m, "pymod", FC_ELEM_I64, 1, 4LL), I64S(1, 2, -2, -1));
	expect_i64(folded(m, "cmod", FC_ELEM_I64, 1, 4LL), I64S(1, -1, 1, -1));
	expect_i64(folded(m, "div", FC_ELEM_I64, 1, 4LL), I64S(3, -3, -3, 3));
	expect_i64(folded(m, "minmod", FC_ELEM_I64, 0), I64S(0));
	expect_i64(folded(m, "pad", FC_ELEM_I64, 1, 2LL), I64S(0, 5));
	expect_f32(folded(m, "fpymod", FC_ELEM_F32, 1, 4LL), F32S(1.5f, 0.5f, -0.5f, -1.5f));
	expect_f32(folded(m, "fcmod", FC_ELEM_F32, 1, 4LL), F32S(1.5f, -1.5f, 1.5f, -1.5f));
	fc_model_free(m);
	fci_onnx_free(&b);

	base(&b, 17);
	init_i64(&b, "a", 1, (const int64_t[]){ 2 }, (const int64_t[]){ 5, 6 });
	init_i64(&b, "z", 1, (const int64_t[]){ 2 }, (const int64_t[]){ 1, 0 });
	testlib_node(&b, "Mod", "modz", "a,z", "q");
	expect_fail(&b, FC_ERR_INVALID, "'modz' (Mod)", "integer modulo by 0");
	fci_onnx_free(&b);
}

/* Neg (integers wrap at INT64_MIN), Pow (float and integer exponents) and
 * Sqrt on constants. */
static void test_neg_pow_sqrt(void **state)
{
	fci_onnx b;
	fc_model *m;

	(void)state;
	base(&b, 17);
	init_i64(&b, "i", 1, (const int64_t[]){ 3 }, (const int64_t[]){ 3, -4, INT64_MIN });
	init_f32(&b, "f", 1, (const int64_t[]){ 3 }, (const float[]){ 1.5f, -0.0f, 4.0f });
	testlib_node(&b, "Neg", "ineg", "i", "ineg");
	testlib_node(&b, "Neg", "fneg", "f", "fneg");
	init_f32(&b, "base", 1, (const int64_t[]){ 3 }, (const float[]){ 2, 3, 4 });
	scalar_f32(&b, "half", 0.5f);
	scalar_i64(&b, "three", 3);
	scalar_f32(&b, "twof", 2.0f);
	testlib_node(&b, "Pow", "pff", "base,twof", "pff");
	testlib_node(&b, "Pow", "pfi", "base,three", "pfi");
	init_i64(&b, "ib", 1, (const int64_t[]){ 3 }, (const int64_t[]){ 3, -2, 0 });
	testlib_node(&b, "Pow", "pii", "ib,three", "pii");
	testlib_node(&b, "Pow", "pif", "three,half", "pif");
	init_f32(&b, "sq", 1, (const int64_t[]){ 3 }, (const float[]){ 4, 0.25f, -1 });
	testlib_node(&b, "Sqrt", "sqrt", "sq", "sqrt");
	m = expect_open(&b);
	expect_i64(folded(m, "ineg", FC_ELEM_I64, 1, 3LL), I64S(-3, 4, INT64_MIN));
	expect_f32(folded(m, "fneg", FC_ELEM_F32, 1, 3LL), F32S(-1.5f, 0.0f, -4.0f));
	expect_f32(folded(m, "pff", FC_ELEM_F32, 1, 3LL), F32S(4, 9, 16));
	expect_f32(folded(m, "pfi", FC_ELEM_F32, 1, 3LL), F32S(8, 27, 64));
	expect_i64(folded(m, "pii", FC_ELEM_I64, 1, 3LL), I64S(27, -8, 0));
	expect_i64(folded(m, "pif", FC_ELEM_I64, 0), I64S(1)); /* trunc(sqrt(3)) */
	expect_f32(folded(m, "sqrt", FC_ELEM_F32, 1, 3LL), F32S(2, 0.5f, NAN));
	fc_model_free(m);
	fci_onnx_free(&b);

	base(&b, 17);
	scalar_i64(&b, "two", 2);
	scalar_i64(&b, "m1", -1);
	testlib_node(&b, "Pow", "negexp", "two,m1", "z");
	expect_fail(&b, FC_ERR_INVALID, "'negexp' (Pow)", "negative exponent");
	fci_onnx_free(&b);

	base(&b, 17);
	scalar_i64(&b, "two", 2);
	testlib_node(&b, "Sqrt", "isqrt", "two", "z");
	expect_fail(&b, FC_ERR_CORRUPT, "'isqrt' (Sqrt)", "not float");
	fci_onnx_free(&b);
}

/* Range counts max(ceil((limit - start) / delta), 0), checked against the
 * fold budget before anything is made; a folded Range reaches a Reshape. */
static void test_range(void **state)
{
	fci_onnx b;
	fc_model *m;
	const fc_model_graph *g;

	(void)state;
	base(&b, 17);
	scalar_i64(&b, "i0", 0);
	scalar_i64(&b, "i10", 10);
	scalar_i64(&b, "i3", 3);
	scalar_i64(&b, "im4", -4);
	testlib_node(&b, "Range", "up", "i0,i10,i3", "up");
	testlib_node(&b, "Range", "down", "i10,i0,im4", "down");
	testlib_node(&b, "Range", "empty", "i10,i0,i3", "empty");
	/* the whole int64 range in 4 steps: limit - start overflows int64 */
	scalar_i64(&b, "lo", INT64_MIN + 1);
	scalar_i64(&b, "hi", INT64_MAX);
	scalar_i64(&b, "q", (int64_t)1 << 62);
	testlib_node(&b, "Range", "wide", "lo,hi,q", "wide");
	scalar_f32(&b, "f0", 0.5f);
	scalar_f32(&b, "f1", 2.0f);
	scalar_f32(&b, "fd", 0.5f);
	testlib_node(&b, "Range", "frange", "f0,f1,fd", "frange");
	/* y (1x3x4x4) reshaped to 1 x 48 with a shape made by Range */
	scalar_i64(&b, "i1", 1);
	scalar_i64(&b, "i49", 49);
	scalar_i64(&b, "i47", 47);
	testlib_node(&b, "Range", "dims", "i1,i49,i47", "dims");
	testlib_node(&b, "Reshape", "flat", "y,dims", "flat");
	m = expect_open(&b);
	g = fc_model_get_graph(m);
	expect_i64(folded(m, "up", FC_ELEM_I64, 1, 4LL), I64S(0, 3, 6, 9));
	expect_i64(folded(m, "down", FC_ELEM_I64, 1, 3LL), I64S(10, 6, 2));
	folded(m, "empty", FC_ELEM_I64, 1, 0LL);
	expect_i64(folded(m, "wide", FC_ELEM_I64, 1, 4LL),
		   I64S(INT64_MIN + 1, INT64_MIN + 1 + ((int64_t)1 << 62), 1, ((int64_t)1 << 62) + 1));
	expect_f32(folded(m, "frange", FC_ELEM_F32, 1, 3LL), F32S(0.5f, 1.0f, 1.5f));
	expect_i64(folded(m, "dims", FC_ELEM_I64, 1, 2LL), I64S(1, 48));
	{
		const fc_model_tensor *t = &g->tensors[testlib_tensor_id(g, "flat")];

		assert_int_equal(t->kind, FC_TENSOR_ACT);
		assert_int_equal(t->ndim, 2);
		assert_int_equal(t->dims[1], 48);
	}
	fc_model_free(m);
	fci_onnx_free(&b);

	base(&b, 17);
	scalar_i64(&b, "i0", 0);
	scalar_i64(&b, "big", (int64_t)1 << 40);
	scalar_i64(&b, "i1", 1);
	testlib_node(&b, "Range", "long", "i0,big,i1", "z");
	expect_fail(&b, FC_ERR_OVERFLOW, "'long' (Range)", "more values than");
	fci_onnx_free(&b);

	base(&b, 17);
	scalar_f32(&b, "f0", 0.0f);
	scalar_f32(&b, "inf", INFINITY);
	scalar_f32(&b, "f1", 1.0f);
	testlib_node(&b, "Range", "finf", "f0,inf,f1", "z");
	expect_fail(&b, FC_ERR_OVERFLOW, "'finf' (Range)", "more values than");
	fci_onnx_free(&b);

	base(&b, 17);
	scalar_i64(&b, "i0", 0);
	scalar_i64(&b, "i5", 5);
	testlib_node(&b, "Range", "zstep", "i0,i5,i0", "z");
	expect_fail(&b, FC_ERR_INVALID, "'zstep' (Range)", "delta is 0");
	fci_onnx_free(&b);

	base(&b, 17);
	init_i64(&b, "two", 1, (const int64_t[]){ 2 }, (const int64_t[]){ 0, 1 });
	scalar_i64(&b, "i5", 5);
	scalar_i64(&b, "i1", 1);
	testlib_node(&b, "Range", "vec", "two,i5,i1", "z");
	expect_fail(&b, FC_ERR_INVALID, "'vec' (Range)", "start is not a scalar");
	fci_onnx_free(&b);
}

/* Expand broadcasts numpy-style with the shape (the output may be larger
 * than either). */
static void test_expand(void **state)
{
	fci_onnx b;
	fc_model *m;

	(void)state;
	base(&b, 17);
	init_f32(&b, "col", 2, (const int64_t[]){ 3, 1 }, (const float[]){ 1, 2, 3 });
	init_i64(&b, "s3", 1, (const int64_t[]){ 3 }, (const int64_t[]){ 2, 1, 2 });
	init_i64(&b, "s1", 1, (const int64_t[]){ 1 }, (const int64_t[]){ 2 });
	testlib_node(&b, "Expand", "e3", "col,s3", "e3");
	testlib_node(&b, "Expand", "e1", "col,s1", "e1");
	scalar_i64(&b, "seven", 7);
	init_i64(&b, "s2", 1, (const int64_t[]){ 2 }, (const int64_t[]){ 1, 2 });
	testlib_node(&b, "Expand", "ei", "seven,s2", "ei");
	m = expect_open(&b);
	expect_f32(folded(m, "e3", FC_ELEM_F32, 3, 2LL, 3LL, 2LL),
		   F32S(1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3));
	expect_f32(folded(m, "e1", FC_ELEM_F32, 2, 3LL, 2LL), F32S(1, 1, 2, 2, 3, 3));
	expect_i64(folded(m, "ei", FC_ELEM_I64, 2, 1LL, 2LL), I64S(7, 7));
	fc_model_free(m);
	fci_onnx_free(&b);

	base(&b, 17);
	init_f32(&b, "v", 1, (const int64_t[]){ 3 }, NULL);
	init_i64(&b, "s", 1, (const int64_t[]){ 1 }, (const int64_t[]){ 2 });
	testlib_node(&b, "Expand", "bad_expand", "v,s", "z");
	expect_fail(&b, FC_ERR_INVALID, "'bad_expand' (Expand)", "shapes 3 and 2 do not broadcast");
	fci_onnx_free(&b);

	base(&b, 17);
	scalar_f32(&b, "v", 1.0f);
	init_i64(&b, "s", 1, (const int64_t[]){ 3 }, (const int64_t[]){ 1 << 20, 1 << 20, 1 << 20 });
	testlib_node(&b, "Expand", "huge", "v,s", "z");
	expect_fail(&b, FC_ERR_OVERFLOW, "'huge' (Expand)", "more values than");
	fci_onnx_free(&b);

	base(&b, 17);
	scalar_f32(&b, "v", 1.0f);
	init_i64(&b, "s", 1, (const int64_t[]){ 2 }, (const int64_t[]){ 2, -1 });
	testlib_node(&b, "Expand", "negdim", "v,s", "z");
	expect_fail(&b, FC_ERR_INVALID, "'negdim' (Expand)", "shape has -1");
	fci_onnx_free(&b);
}

/* ScatterND (reduction none): whole rows (k = 1) and single elements
 * (k = 2, negative indices counting from the end). */
static void test_scatternd(void **state)
{
	static const int64_t d4x3[2] = { 4, 3 };
	fci_onnx b;
	fc_model *m;

	(void)state;
	base(&b, 17);
	init_f32(&b, "data", 2, d4x3, (const float[]){ 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 });
	init_i64(&b, "rows", 2, (const int64_t[]){ 2, 1 }, (const int64_t[]){ 1, -1 });
	init_f32(&b, "urows", 2, (const int64_t[]){ 2, 3 }, (const float[]){ -1, -2, -3, -4, -5, -6 });
	testlib_node(&b, "ScatterND", "sc_rows", "data,rows,urows", "r");
	init_i64(&b, "cells", 2, (const int64_t[]){ 2, 2 }, (const int64_t[]){ 0, 2, -1, 0 });
	init_f32(&b, "ucells", 1, (const int64_t[]){ 2 }, (const float[]){ 100, 200 });
	testlib_node(&b, "ScatterND", "sc_cells", "data,cells,ucells", "c");
	init_i64(&b, "idata", 1, (const int64_t[]){ 5 }, (const int64_t[]){ 0, 0, 0, 0, 0 });
	init_i64(&b, "ipos", 2, (const int64_t[]){ 2, 1 }, (const int64_t[]){ 4, 1 });
	init_i64(&b, "ival", 1, (const int64_t[]){ 2 }, (const int64_t[]){ 9, 8 });
	testlib_node(&b, "ScatterND", "sc_int", "idata,ipos,ival", "i");
	m = expect_open(&b);
	expect_f32(folded(m, "r", FC_ELEM_F32, 2, 4LL, 3LL),
		   F32S(0, 1, 2, -1, -2, -3, 6, 7, 8, -4, -5, -6));
	expect_f32(folded(m, "c", FC_ELEM_F32, 2, 4LL, 3LL),
		   F32S(0, 1, 100, 3, 4, 5, 6, 7, 8, 200, 10, 11));
	expect_i64(folded(m, "i", FC_ELEM_I64, 1, 5LL), I64S(0, 8, 0, 0, 9));
	/* the data itself is untouched */
	expect_f32(folded(m, "data", FC_ELEM_F32, 2, 4LL, 3LL),
		   F32S(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11));
	fc_model_free(m);
	fci_onnx_free(&b);

	for (int c = 0; c < 4; c++) {
		static const char *const want[4] = { "index 4 is out of range for dim 0 of 4",
						     "index -5 is out of range for dim 0 of 4",
						     "updates are 2x2, expected 2x3",
						     "indices' last dim is 3, data has rank 2" };
		int64_t idx[3] = { c == 1 ? -5 : c == 0 ? 4 : 1, 0, 0 };

		base(&b, 17);
		init_f32(&b, "data", 2, d4x3, NULL);
		init_i64(&b, "ix", 2, (const int64_t[]){ 1, c == 3 ? 3 : 1 }, idx);
		if (c == 2) {
			init_i64(&b, "ix2", 2, (const int64_t[]){ 2, 1 }, (const int64_t[]){ 0, 1 });
			init_f32(&b, "u", 2, (const int64_t[]){ 2, 2 }, NULL);
			testlib_node(&b, "ScatterND", "bad_scatter", "data,ix2,u", "z");
		} else {
			init_f32(&b, "u", c == 3 ? 1 : 2, (const int64_t[]){ 1, 3 }, NULL);
			testlib_node(&b, "ScatterND", "bad_scatter", "data,ix,u", "z");
		}
		expect_fail(&b, FC_ERR_INVALID, "'bad_scatter' (ScatterND)", want[c]);
		fci_onnx_free(&b);
	}
}

/* Gather with an index tensor: Swin's relative position bias, a table of
 * [positions, heads] gathered by a 2-D index; and along axis 1. */
static void test_gather_table(void **state)
{
	fci_onnx b;
	fc_model *m;
	Onnx__NodeProto *n;

	(void)state;
	base(&b, 17);
	init_f32(&b, "table", 2, (const int64_t[]){ 5, 2 },
		 (const float[]){ 0, 1, 10, 11, 20, 21, 30, 31, 40, 41 });
	init_i64(&b, "ix", 2, (const int64_t[]){ 2, 2 }, (const int64_t[]){ 0, 4, -1, 2 });
	testlib_node(&b, "Gather", "bias", "table,ix", "bias");
	init_i64(&b, "ix1", 1, (const int64_t[]){ 2 }, (const int64_t[]){ 1, -2 });
	n = testlib_node(&b, "Gather", "cols1", "table,ix1", "cols1");
	testlib_attr_i(&b, n, "axis", -1);
	m = expect_open(&b);
	expect_f32(folded(m, "bias", FC_ELEM_F32, 3, 2LL, 2LL, 2LL),
		   F32S(0, 1, 40, 41, 40, 41, 20, 21));
	expect_f32(folded(m, "cols1", FC_ELEM_F32, 2, 5LL, 2LL),
		   F32S(1, 0, 11, 10, 21, 20, 31, 30, 41, 40));
	fc_model_free(m);
	fci_onnx_free(&b);

	base(&b, 17);
	init_f32(&b, "table", 2, (const int64_t[]){ 5, 2 }, NULL);
	init_i64(&b, "ix", 2, (const int64_t[]){ 2, 2 }, (const int64_t[]){ 0, 4, 5, 2 });
	testlib_node(&b, "Gather", "bad_gather", "table,ix", "z");
	expect_fail(&b, FC_ERR_INVALID, "'bad_gather' (Gather)", "index 5 is out of range for 5");
	fci_onnx_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bool_tensors),
		cmocka_unit_test(test_compare),
		cmocka_unit_test(test_where),
		cmocka_unit_test(test_mod_div),
		cmocka_unit_test(test_neg_pow_sqrt),
		cmocka_unit_test(test_range),
		cmocka_unit_test(test_expand),
		cmocka_unit_test(test_scatternd),
		cmocka_unit_test(test_gather_table),
	};

	testlib_seed("test_model_fold");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
