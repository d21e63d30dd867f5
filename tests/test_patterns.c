/*
 * test_patterns.c - the op patterns engine_patterns.c builds as one oneDNN
 * primitive, each written with testlib's ONNX builder, run through the
 * engine in f32 (tight) and bf16 (loose, where the CPU has it) and
 * compared with a naive C loop here:
 *  - LayerNorm as torch writes it below opset 17 (ReduceMean, Sub, Pow 2,
 *    ReduceMean, Add eps, Sqrt, Div, Mul gamma, Add beta), operands in
 *    either order, gamma/beta absent or scalar; ConvNeXt's channels-last
 *    form between two Transposes;
 *  - GELU's tanh form (x * x * x or Pow 3), QuickGELU (x * Sigmoid(1.702 x)),
 *    the opset-20 Gelu op in both approximations, and a GELU after a Conv
 *    or after a MatMul and its bias fused as the primitive's post-op, and
 *    a residual Add after a MatMul as its sum post-op;
 *  - near misses (Pow 3 in the LayerNorm chain, the centred input read a
 *    third time, a mean over another axis, a wrong tanh-GELU constant):
 *    no fused step, and still the right numbers from the standalone ops;
 *  - the standalone ops themselves (Pow, Sqrt, Tanh, ReduceMean over the
 *    last axis of a token tensor) and a non-scalar exponent refused.
 *
 * The Erf GELU and the LayerNormalization op are test_transformer_ops.c's.
 * Random data comes from one seed, printed at the start; set FC_SEED to
 * replay.
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
#include "featcache/model.h"
#include "tests/testlib.h"

/* Tokens: x is 2 x 3 x 4 x 10, reshaped to r, 2 x 12 x 10. */
#define N_IMG 2
#define ROWS 24
#define D 10
#define NUMEL (ROWS * D)

static const double F32_TOL = 2e-6, BF16_TOL = 3e-2;

/* ---- helpers ---- */

static void start_model(fci_onnx *b, int opset)
{
	static const int64_t xd[4] = { N_IMG, 3, 4, D }, rd[3] = { N_IMG, 12, D };
	testlib_model_init(b, opset);
	testlib_input(b, "x", 4, xd);
	testlib_init_i64(b, "rshape", 3, rd);
	testlib_node(b, "Reshape", "to_tokens", "x,rshape", "r");
}

static void scalar(fci_onnx *b, const char *name, float v)
{
	testlib_add_f32(b, name, 0, NULL, &v);
}

static void finish_model(fci_onnx *b, const char *in)
{
	testlib_node(b, "Flatten", "flat", in, "y");
	testlib_output(b, "y");
}

/* The op of a primitive's info line, "node op: impl", into buf. */
static const char *info_op(const char *info, char *buf, size_t cap)
{
	const char *sp = strchr(info, ' '), *colon = strstr(info, ": ");
	size_t n = sp && colon && colon > sp ? (size_t)(colon - sp - 1) : 0;
	if (n >= cap)
		n = cap - 1;
	memcpy(buf, sp ? sp + 1 : info, n);
	buf[n] = '\0';
	return buf;
}

/* Open the graph, cut at "y", run x in precision prec and return the max
 * error relative to the largest reference value; -1 when bf16 is not
 * available. `want` primitives must run exactly n_want times; none of the
 * NULL-terminated `banned` ops may run as primitives. */
static double run(fci_onnx *b, const float *x, const float *ref, int prec, const char *want, int n_want,
		  const char *const *banned)
{
	fc_model *m;
	fc_engine *e;
	char op[64];
	if (testlib_open_engine(b, "y", N_IMG, prec, &m, &e))
		return -1;
	assert_int_equal(fc_engine_dim(e), NUMEL / N_IMG);
	int seen = 0;
	for (int i = 0; i < fc_engine_n_prims(e); i++) {
		const char *info = fc_engine_prim_info(e, i);
		print_message("#   %s\n", info);
		info_op(info, op, sizeof op);
		seen += want && strcmp(op, want) == 0;
		for (int k = 0; banned && banned[k]; k++)
			if (strcmp(op, banned[k]) == 0)
				fail_msg("a standalone %s runs: %s", op, info);
	}
	if (want && seen != n_want)
		fail_msg("%d %s primitives, expected %d", seen, want, n_want);
	float *out = calloc(NUMEL, sizeof *out);
	assert_non_null(out);
	assert_int_equal(fc_engine_run(e, out, x, N_IMG), 0);
	double r = testlib_rel_err(out, ref, NUMEL);
	free(out);
	fc_engine_free(e);
	fc_model_free(m);
	return r;
}

/* Both precisions: f32 within F32_TOL, bf16 within BF16_TOL. */
static void run_both(fci_onnx *b, const float *x, const float *ref, const char *want, int n_want,
		     const char *const *banned, const char *what)
{
	double e32 = run(b, x, ref, FC_PREC_F32, want, n_want, banned);
	double e16 = run(b, x, ref, FC_PREC_BF16, want, n_want, banned);
	print_message("# %s: f32 max rel err %.2e, bf16 %.2e\n", what, e32, e16);
	assert_true(e32 <= F32_TOL);
	assert_true(e16 <= BF16_TOL); /* -1: skipped */
}

/* ---- LayerNorm, decomposed ---- */

/* y = (x - mean) / sqrt(var + eps) * g + be over rows of n, in double;
 * p is the power in the variance (2 for a LayerNorm). */
static void ref_norm(float *y, const float *x, size_t rows, size_t n, const float *g, const float *be, float eps,
		     int p)
{
	for (size_t r = 0; r < rows; r++) {
		const float *xr = x + r * n;
		double mean = 0, var = 0;
		for (size_t k = 0; k < n; k++)
			mean += xr[k];
		mean /= (double)n;
		for (size_t k = 0; k < n; k++)
			var += pow(xr[k] - mean, p);
		var /= (double)n;
		for (size_t k = 0; k < n; k++)
			y[r * n + k] = (float)((xr[k] - mean) / sqrt(var + eps) * (g ? g[k] : 1) + (be ? be[k] : 0));
	}
}

enum { LN_SWAP = 1, LN_NO_GAMMA = 2, LN_NO_BETA = 4, LN_POW3 = 8, LN_READ_D = 16, LN_AXIS1 = 32 };

/* The chain on tensor `in` (last axis n) into "ln", as torch writes it
 * (flags vary it); gamma/beta initializers "ln_g"/"ln_b" added by the
 * caller. */
static void ln_nodes(fci_onnx *b, const char *in, float eps, int flags)
{
	Onnx__NodeProto *nd;
	scalar(b, "ln_eps", eps);
	scalar(b, "ln_two", flags & LN_POW3 ? 3.0f : 2.0f);
	nd = testlib_node(b, "ReduceMean", "ln_mean", in, "ln_m");
	testlib_attr_ints(b, nd, "axes", 1, flags & LN_AXIS1 ? 1LL : -1LL);
	char ins[64];
	snprintf(ins, sizeof ins, "%s,ln_m", in);
	testlib_node(b, "Sub", "ln_sub", ins, "ln_d");
	testlib_node(b, "Pow", "ln_pow", "ln_d,ln_two", "ln_p");
	nd = testlib_node(b, "ReduceMean", "ln_mean2", "ln_p", "ln_v");
	testlib_attr_ints(b, nd, "axes", 1, flags & LN_AXIS1 ? 1LL : -1LL);
	testlib_node(b, "Add", "ln_add", flags & LN_SWAP ? "ln_eps,ln_v" : "ln_v,ln_eps", "ln_ve");
	testlib_node(b, "Sqrt", "ln_sqrt", "ln_ve", "ln_s");
	testlib_node(b, "Div", "ln_div", "ln_d,ln_s", "ln_n");
	const char *cur = "ln_n";
	if (!(flags & LN_NO_GAMMA)) {
		testlib_node(b, "Mul", "ln_mul", flags & LN_SWAP ? "ln_g,ln_n" : "ln_n,ln_g", "ln_gm");
		cur = "ln_gm";
	}
	if (!(flags & LN_NO_BETA)) {
		snprintf(ins, sizeof ins, flags & LN_SWAP ? "ln_b,%s" : "%s,ln_b", cur);
		testlib_node(b, "Add", "ln_shift", ins, "ln_o");
		cur = "ln_o";
	}
	testlib_node(b, "Identity", "ln_out", cur, "ln");
}

static const char *const LN_OPS[] = { "ReduceMean", "Sub", "Pow", "Sqrt", "Div", "Mul", "Add", NULL };

static void ln_case(int flags, float eps, int scalar_gamma)
{
	fci_onnx b;
	int64_t d = D;
	start_model(&b, 14);
	float *g = testlib_rand_vec(&b, D, 0.5f, 1.5f), *be = testlib_rand_vec(&b, D, -1, 1);
	if (scalar_gamma) {
		for (int k = 1; k < D; k++)
			g[k] = g[0];
		testlib_add_f32(&b, "ln_g", 0, NULL, g);
	} else {
		testlib_add_f32(&b, "ln_g", 1, &d, g);
	}
	testlib_add_f32(&b, "ln_b", 1, &d, be);
	ln_nodes(&b, "r", eps, flags);
	finish_model(&b, "ln");
	float *x = testlib_rand_vec(&b, NUMEL, -2, 3), *ref = testlib_alloc(&b, NUMEL * sizeof *ref);
	ref_norm(ref, x, ROWS, D, flags & LN_NO_GAMMA ? NULL : g, flags & LN_NO_BETA ? NULL : be, eps, 2);
	char what[64];
	snprintf(what, sizeof what, "layernorm flags %d eps %g%s", flags, (double)eps, scalar_gamma ? " scalar gamma" : "");
	run_both(&b, x, ref, "LayerNormalization", 1, LN_OPS, what);
	fci_onnx_free(&b);
}

static void test_layernorm_pattern(void **state)
{
	(void)state;
	ln_case(0, 1e-5f, 0);
	ln_case(LN_SWAP, 1e-3f, 0);
	ln_case(LN_NO_GAMMA | LN_NO_BETA, 1e-5f, 0);
	ln_case(LN_NO_GAMMA, 1e-6f, 0);
	ln_case(LN_NO_BETA | LN_SWAP, 1e-5f, 0);
	ln_case(0, 1e-5f, 1);
}

/* ConvNeXt below opset 17: NCHW -> NHWC, the chain over C, back. */
static void test_layernorm_channels_last(void **state)
{
	(void)state;
	static const int64_t xd[4] = { N_IMG, D, 3, 4 };
	int64_t d = D;
	fci_onnx b;
	testlib_model_init(&b, 14);
	testlib_input(&b, "x", 4, xd);
	float *g = testlib_rand_vec(&b, D, 0.5f, 1.5f), *be = testlib_rand_vec(&b, D, -1, 1);
	testlib_add_f32(&b, "ln_g", 1, &d, g);
	testlib_add_f32(&b, "ln_b", 1, &d, be);
	Onnx__NodeProto *nd = testlib_node(&b, "Transpose", "to_nhwc", "x", "t1");
	testlib_attr_ints(&b, nd, "perm", 4, 0LL, 2LL, 3LL, 1LL);
	ln_nodes(&b, "t1", 1e-6f, 0);
	nd = testlib_node(&b, "Transpose", "to_nchw", "ln", "t3");
	testlib_attr_ints(&b, nd, "perm", 4, 0LL, 3LL, 1LL, 2LL);
	finish_model(&b, "t3");
	float *x = testlib_rand_vec(&b, NUMEL, -2, 2), *t1 = testlib_alloc(&b, NUMEL * sizeof *t1),
	      *t2 = testlib_alloc(&b, NUMEL * sizeof *t2), *ref = testlib_alloc(&b, NUMEL * sizeof *ref);
	/* naive permutations */
	for (int n = 0; n < N_IMG; n++)
		for (int c = 0; c < D; c++)
			for (int p = 0; p < 12; p++)
				t1[(n * 12 + p) * D + c] = x[(n * D + c) * 12 + p];
	ref_norm(t2, t1, ROWS, D, g, be, 1e-6f, 2);
	for (int n = 0; n < N_IMG; n++)
		for (int c = 0; c < D; c++)
			for (int p = 0; p < 12; p++)
				ref[(n * D + c) * 12 + p] = t2[(n * 12 + p) * D + c];
	run_both(&b, x, ref, "LayerNormalization", 1, LN_OPS, "channels-last layernorm");
	fci_onnx_free(&b);
}

/* Near misses: no LayerNormalization step, the standalone ops give the
 * chain's own value. */
static void test_layernorm_near_misses(void **state)
{
	(void)state;
	int64_t d = D;
	fci_onnx b;

	/* Pow 3: a third central moment, not a variance (the large eps keeps
	 * the sum positive) */
	start_model(&b, 14);
	float *g = testlib_rand_vec(&b, D, 0.5f, 1.5f), *be = testlib_rand_vec(&b, D, -1, 1);
	testlib_add_f32(&b, "ln_g", 1, &d, g);
	testlib_add_f32(&b, "ln_b", 1, &d, be);
	ln_nodes(&b, "r", 50.0f, LN_POW3);
	finish_model(&b, "ln");
	float *x = testlib_rand_vec(&b, NUMEL, -2, 2), *ref = testlib_alloc(&b, NUMEL * sizeof *ref);
	ref_norm(ref, x, ROWS, D, g, be, 50.0f, 3);
	double e = run(&b, x, ref, FC_PREC_F32, "LayerNormalization", 0, NULL);
	print_message("# pow 3 chain, standalone: max rel err %.2e\n", e);
	assert_true(e <= F32_TOL);
	fci_onnx_free(&b);

	/* the centred input also read by a third node: y = ln + d */
	start_model(&b, 14);
	g = testlib_rand_vec(&b, D, 0.5f, 1.5f), be = testlib_rand_vec(&b, D, -1, 1);
	testlib_add_f32(&b, "ln_g", 1, &d, g);
	testlib_add_f32(&b, "ln_b", 1, &d, be);
	ln_nodes(&b, "r", 1e-5f, 0);
	testlib_node(&b, "Add", "use_d", "ln,ln_d", "sum");
	finish_model(&b, "sum");
	x = testlib_rand_vec(&b, NUMEL, -2, 2), ref = testlib_alloc(&b, NUMEL * sizeof *ref);
	ref_norm(ref, x, ROWS, D, g, be, 1e-5f, 2);
	for (int r = 0; r < ROWS; r++) {
		double mean = 0;
		for (int k = 0; k < D; k++)
			mean += x[r * D + k];
		mean /= D;
		for (int k = 0; k < D; k++)
			ref[r * D + k] += (float)(x[r * D + k] - mean);
	}
	e = run(&b, x, ref, FC_PREC_F32, "LayerNormalization", 0, NULL);
	print_message("# centred input read again, standalone: max rel err %.2e\n", e);
	assert_true(e <= F32_TOL);
	fci_onnx_free(&b);

	/* the means over axis 1 (the 12 tokens), not the last axis */
	start_model(&b, 14);
	float one = 1, zero = 0;
	testlib_add_f32(&b, "ln_g", 0, NULL, &one);
	testlib_add_f32(&b, "ln_b", 0, NULL, &zero);
	ln_nodes(&b, "r", 1e-5f, LN_AXIS1);
	finish_model(&b, "ln");
	x = testlib_rand_vec(&b, NUMEL, -2, 2), ref = testlib_alloc(&b, NUMEL * sizeof *ref);
	for (int n = 0; n < N_IMG; n++)
		for (int k = 0; k < D; k++) {
			double mean = 0, var = 0;
			for (int t = 0; t < 12; t++)
				mean += x[(n * 12 + t) * D + k];
			mean /= 12;
			for (int t = 0; t < 12; t++)
				var += pow(x[(n * 12 + t) * D + k] - mean, 2);
			var /= 12;
			for (int t = 0; t < 12; t++)
				ref[(n * 12 + t) * D + k] = (float)((x[(n * 12 + t) * D + k] - mean) / sqrt(var + 1e-5));
		}
	e = run(&b, x, ref, FC_PREC_F32, "LayerNormalization", 0, NULL);
	print_message("# means over axis 1, standalone: max rel err %.2e\n", e);
	assert_true(e <= F32_TOL);
	fci_onnx_free(&b);
}

/* ---- GELU forms and QuickGELU ---- */

static float ref_gelu_tanh(float v)
{
	return (float)(0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v))));
}

/* torch's tanh GELU on r into "g"; pow3: the cube as Pow(x, 3) and the
 * tail as (x * 0.5) * s; c the 0.044715. */
static void gelu_tanh_nodes(fci_onnx *b, int pow3, float c)
{
	scalar(b, "gt_c", c);
	scalar(b, "gt_k", 0.7978846f);
	scalar(b, "gt_one", 1);
	scalar(b, "gt_half", 0.5f);
	scalar(b, "gt_three", 3);
	if (pow3) {
		testlib_node(b, "Mul", "gt_xh", "r,gt_half", "gt_h");
		testlib_node(b, "Pow", "gt_cube", "r,gt_three", "gt_x3");
	} else {
		testlib_node(b, "Mul", "gt_sq", "r,r", "gt_x2");
		testlib_node(b, "Mul", "gt_cube", "r,gt_x2", "gt_x3");
	}
	testlib_node(b, "Mul", "gt_mc", "gt_c,gt_x3", "gt_cx3");
	testlib_node(b, "Add", "gt_in", "r,gt_cx3", "gt_a");
	testlib_node(b, "Mul", "gt_mk", "gt_k,gt_a", "gt_u");
	testlib_node(b, "Tanh", "gt_tanh", "gt_u", "gt_t");
	testlib_node(b, "Add", "gt_add1", "gt_one,gt_t", "gt_s");
	if (pow3) {
		testlib_node(b, "Mul", "gt_out", "gt_h,gt_s", "g");
	} else {
		testlib_node(b, "Mul", "gt_mx", "r,gt_s", "gt_m");
		testlib_node(b, "Mul", "gt_out", "gt_half,gt_m", "g");
	}
}

static const char *const GELU_OPS[] = { "Mul", "Add", "Pow", "Tanh", "Sigmoid", NULL };

static void test_gelu_tanh_pattern(void **state)
{
	(void)state;
	for (int pow3 = 0; pow3 < 2; pow3++) {
		fci_onnx b;
		start_model(&b, 14);
		gelu_tanh_nodes(&b, pow3, 0.044715f);
		finish_model(&b, "g");
		float *x = testlib_rand_vec(&b, NUMEL, -4, 4), *ref = testlib_alloc(&b, NUMEL * sizeof *ref);
		for (int i = 0; i < NUMEL; i++)
			ref[i] = ref_gelu_tanh(x[i]);
		run_both(&b, x, ref, "Gelu", 1, GELU_OPS, pow3 ? "tanh gelu, Pow 3" : "tanh gelu, x*x*x");
		fci_onnx_free(&b);
	}

	/* a near miss (0.044 for 0.044715): the chain itself, op by op */
	fci_onnx b;
	start_model(&b, 14);
	gelu_tanh_nodes(&b, 0, 0.044f);
	finish_model(&b, "g");
	float *x = testlib_rand_vec(&b, NUMEL, -4, 4), *ref = testlib_alloc(&b, NUMEL * sizeof *ref);
	for (int i = 0; i < NUMEL; i++)
		ref[i] = (float)(0.5 * x[i] * (1 + tanh(0.7978846 * (x[i] + 0.044 * x[i] * x[i] * x[i]))));
	double e = run(&b, x, ref, FC_PREC_F32, "Tanh", 1, NULL);
	print_message("# tanh gelu near miss, standalone: max rel err %.2e\n", e);
	assert_true(e <= F32_TOL);
	fci_onnx_free(&b);
}

static void test_quick_gelu(void **state)
{
	(void)state;
	fci_onnx b;
	start_model(&b, 14);
	scalar(&b, "q_a", 1.702f);
	testlib_node(&b, "Mul", "q_mul", "r,q_a", "q_u");
	testlib_node(&b, "Sigmoid", "q_sig", "q_u", "q_s");
	testlib_node(&b, "Mul", "q_out", "r,q_s", "g");
	finish_model(&b, "g");
	float *x = testlib_rand_vec(&b, NUMEL, -5, 5), *ref = testlib_alloc(&b, NUMEL * sizeof *ref);
	for (int i = 0; i < NUMEL; i++)
		ref[i] = (float)(x[i] / (1 + exp(-1.702 * x[i])));
	run_both(&b, x, ref, "Swish", 1, GELU_OPS, "quick gelu");
	fci_onnx_free(&b);
}

/* The opset-20 Gelu op, both approximations. */
static void test_gelu_op(void **state)
{
	(void)state;
	for (int tanh_form = 0; tanh_form < 2; tanh_form++) {
		fci_onnx b;
		start_model(&b, 20);
		Onnx__NodeProto *nd = testlib_node(&b, "Gelu", "gelu", "r", "g");
		if (tanh_form)
			testlib_attr_s(&b, nd, "approximate", "tanh");
		finish_model(&b, "g");
		float *x = testlib_rand_vec(&b, NUMEL, -4, 4), *ref = testlib_alloc(&b, NUMEL * sizeof *ref);
		for (int i = 0; i < NUMEL; i++)
			ref[i] = tanh_form ? ref_gelu_tanh(x[i]) : (float)(0.5 * x[i] * (1 + erf(x[i] / sqrt(2.0))));
		run_both(&b, x, ref, "Gelu", 1, NULL, tanh_form ? "Gelu op, tanh" : "Gelu op, none");
		fci_onnx_free(&b);
	}

	/* Another approximation is a corrupt model, refused when it opens. */
	fci_onnx b;
	fc_model *m = NULL;
	char err[FC_ERRLEN];
	start_model(&b, 20);
	Onnx__NodeProto *nd = testlib_node(&b, "Gelu", "gelu_bad", "r", "g");
	testlib_attr_s(&b, nd, "approximate", "fast");
	finish_model(&b, "g");
	assert_int_equal(testlib_open(&b, &m, err), FC_ERR_CORRUPT);
	assert_null(m);
	print_message("#   refused: %s\n", err);
	assert_non_null(strstr(err, "'gelu_bad'"));
	assert_non_null(strstr(err, "approximate 'fast' is not 'none' or 'tanh'"));
	fci_onnx_free(&b);
}

/* A 1x1 Conv (D -> D channels over 3 x 4) then a GELU: the GELU is the
 * conv's post-op, no step of its own. form 0: the Gelu op; 1: the tanh
 * pattern; 2: QuickGELU. */
static void test_gelu_post_op(void **state)
{
	(void)state;
	static const int64_t xd[4] = { N_IMG, D, 3, 4 }, wd[4] = { D, D, 1, 1 };
	for (int form = 0; form < 3; form++) {
		fci_onnx b;
		testlib_model_init(&b, 20);
		testlib_input(&b, "x", 4, xd);
		float *w = testlib_rand_vec(&b, D * D, -0.5f, 0.5f);
		testlib_add_f32(&b, "w", 4, wd, w);
		testlib_node(&b, "Conv", "conv", "x,w", "r");
		if (form == 0) {
			testlib_node(&b, "Gelu", "gelu", "r", "g");
		} else if (form == 1) {
			gelu_tanh_nodes(&b, 0, 0.044715f);
		} else {
			scalar(&b, "q_a", 1.702f);
			testlib_node(&b, "Mul", "q_mul", "r,q_a", "q_u");
			testlib_node(&b, "Sigmoid", "q_sig", "q_u", "q_s");
			testlib_node(&b, "Mul", "q_out", "r,q_s", "g");
		}
		finish_model(&b, "g");
		float *x = testlib_rand_vec(&b, NUMEL, -2, 2), *ref = testlib_alloc(&b, NUMEL * sizeof *ref);
		for (int n = 0; n < N_IMG; n++)
			for (int o = 0; o < D; o++)
				for (int p = 0; p < 12; p++) {
					double s = 0;
					for (int c = 0; c < D; c++)
						s += (double)w[o * D + c] * x[(n * D + c) * 12 + p];
					float v = (float)s;
					ref[(n * D + o) * 12 + p] = form == 2 ? (float)(v / (1 + exp(-1.702 * v)))
								    : form == 1 ? ref_gelu_tanh(v)
										: (float)(0.5 * v * (1 + erf(v / sqrt(2.0))));
				}
		static const char *const banned[] = { "Gelu", "Swish", "Mul", "Add", "Tanh", "Sigmoid", NULL };
		double e = run(&b, x, ref, FC_PREC_F32, "Conv", 1, banned);
		print_message("# conv + gelu form %d as a post-op: max rel err %.2e\n", form, e);
		assert_true(e <= F32_TOL);
		fci_onnx_free(&b);
	}
}

/* Tokens through a MatMul with a constant weight and an Add of a bias
 * (torch's Linear on N x T x D), then a GELU: bias and GELU both fold into
 * the matmul primitive. form 0: the Erf GELU as torch writes it below
 * opset 20; 1: QuickGELU; 2: Relu. */
static void test_matmul_post_op(void **state)
{
	(void)state;
	static const int64_t wd[2] = { D, D }, bd[1] = { D };
	static const char *const what[] = { "erf gelu", "quick gelu", "relu" };
	for (int form = 0; form < 3; form++) {
		fci_onnx b;
		start_model(&b, 14);
		float *w = testlib_rand_vec(&b, D * D, -0.5f, 0.5f), *bias = testlib_rand_vec(&b, D, -1, 1);
		testlib_add_f32(&b, "w", 2, wd, w);
		testlib_add_f32(&b, "bias", 1, bd, bias);
		testlib_node(&b, "MatMul", "mm", "r,w", "mm_y");
		testlib_node(&b, "Add", "mm_bias", "bias,mm_y", "h");
		if (form == 0) {
			scalar(&b, "e_sqrt2", (float)M_SQRT2);
			scalar(&b, "e_one", 1.0f);
			scalar(&b, "e_half", 0.5f);
			testlib_node(&b, "Div", "e_div", "h,e_sqrt2", "e_d");
			testlib_node(&b, "Erf", "e_erf", "e_d", "e_e");
			testlib_node(&b, "Add", "e_add", "e_e,e_one", "e_a");
			testlib_node(&b, "Mul", "e_mul", "h,e_a", "e_m");
			testlib_node(&b, "Mul", "e_out", "e_m,e_half", "g");
		} else if (form == 1) {
			scalar(&b, "q_a", 1.702f);
			testlib_node(&b, "Mul", "q_mul", "h,q_a", "q_u");
			testlib_node(&b, "Sigmoid", "q_sig", "q_u", "q_s");
			testlib_node(&b, "Mul", "q_out", "h,q_s", "g");
		} else {
			testlib_node(&b, "Relu", "relu", "h", "g");
		}
		finish_model(&b, "g");
		float *x = testlib_rand_vec(&b, NUMEL, -2, 2), *ref = testlib_alloc(&b, NUMEL * sizeof *ref);
		for (int r = 0; r < ROWS; r++)
			for (int o = 0; o < D; o++) {
				double v = bias[o];
				for (int k = 0; k < D; k++)
					v += (double)x[r * D + k] * w[k * D + o];
				ref[r * D + o] = (float)(form == 0   ? 0.5 * v * (1 + erf(v / M_SQRT2))
							 : form == 1 ? v / (1 + exp(-1.702 * v))
								     : (v > 0 ? v : 0));
			}
		static const char *const banned[] = { "Gelu", "Swish", "Mul", "Add", "Relu", "Sigmoid", NULL };
		double e32 = run(&b, x, ref, FC_PREC_F32, "MatMul", 1, banned);
		double e16 = run(&b, x, ref, FC_PREC_BF16, "MatMul", 1, banned);
		print_message("# matmul + bias + %s as post-ops: f32 max rel err %.2e, bf16 %.2e\n", what[form], e32, e16);
		assert_true(e32 <= F32_TOL);
		assert_true(e16 <= BF16_TOL);
		fci_onnx_free(&b);
	}
}

/* A transformer block's residual: h = a + (f(a) W + bias), an Add of the
 * matmul's output and another activation of its shape, fused as a sum
 * post-op writing over a (no Add step, no copy). late 1: a is read again
 * after the Add (by a second Add), so the sum cannot write over it and a
 * Copy gives the matmul its own output. */
static void test_matmul_residual(void **state)
{
	(void)state;
	static const int64_t wd[2] = { D, D }, bd[1] = { D };
	for (int late = 0; late < 2; late++) {
		fci_onnx b;
		start_model(&b, 14);
		float *w = testlib_rand_vec(&b, D * D, -0.5f, 0.5f), *bias = testlib_rand_vec(&b, D, -1, 1);
		testlib_add_f32(&b, "w", 2, wd, w);
		testlib_add_f32(&b, "bias", 1, bd, bias);
		testlib_node(&b, "Relu", "pre", "r", "a"); /* the residual */
		testlib_node(&b, "Sigmoid", "branch", "a", "s"); /* what the matmul reads */
		testlib_node(&b, "MatMul", "mm", "s,w", "mm_y");
		testlib_node(&b, "Add", "mm_bias", "mm_y,bias", "h0");
		testlib_node(&b, "Add", "residual", "a,h0", late ? "h1" : "g");
		if (late)
			testlib_node(&b, "Add", "again", "h1,a", "g");
		finish_model(&b, "g");
		float *x = testlib_rand_vec(&b, NUMEL, -2, 2), *ref = testlib_alloc(&b, NUMEL * sizeof *ref);
		for (int r = 0; r < ROWS; r++)
			for (int o = 0; o < D; o++) {
				double v = bias[o], a = x[r * D + o] > 0 ? x[r * D + o] : 0;
				for (int k = 0; k < D; k++)
					v += 1 / (1 + exp(-(x[r * D + k] > 0 ? x[r * D + k] : 0))) * w[k * D + o];
				ref[r * D + o] = (float)(v + a + (late ? a : 0));
			}
		static const char *const in_place[] = { "Add", "Copy", NULL };
		double e32 = run(&b, x, ref, FC_PREC_F32, late ? "Copy" : "MatMul", 1, late ? NULL : in_place);
		double e16 = run(&b, x, ref, FC_PREC_BF16, late ? "Copy" : "MatMul", 1, late ? NULL : in_place);
		print_message("# matmul + bias + residual as a sum post-op%s: f32 max rel err %.2e, bf16 %.2e\n",
			      late ? " (residual read later: copied)" : "", e32, e16);
		assert_true(e32 <= F32_TOL);
		assert_true(e16 <= BF16_TOL);
		fci_onnx_free(&b);
	}
}

/* ---- standalone ops ---- */

/* Pow 2 and 0.5 of |x| + 1 (Mul, Add, Sqrt), Tanh, and a ReduceMean over
 * the tokens' last axis broadcast back by a Sub. */
static void test_standalone(void **state)
{
	(void)state;
	fci_onnx b;
	start_model(&b, 14);
	scalar(&b, "one", 1);
	scalar(&b, "two", 2);
	scalar(&b, "half", 0.5f);
	testlib_node(&b, "Mul", "sq", "r,r", "x2");
	testlib_node(&b, "Add", "p1", "x2,one", "x21");
	testlib_node(&b, "Sqrt", "root", "x21", "s");       /* sqrt(x^2 + 1) */
	testlib_node(&b, "Pow", "pw", "s,two", "s2");       /* x^2 + 1 */
	testlib_node(&b, "Pow", "pwh", "s2,half", "s3");    /* sqrt(x^2 + 1) */
	testlib_node(&b, "Tanh", "th", "r", "t");
	testlib_node(&b, "Add", "sum", "s3,t", "u");
	Onnx__NodeProto *nd = testlib_node(&b, "ReduceMean", "mean", "u", "m");
	testlib_attr_ints(&b, nd, "axes", 1, -1LL);
	testlib_attr_i(&b, nd, "keepdims", 0);
	int64_t us[3] = { N_IMG, 12, 1 };
	testlib_init_i64(&b, "ushape", 3, us);
	testlib_node(&b, "Reshape", "keep", "m,ushape", "mk");
	testlib_node(&b, "Sub", "centre", "u,mk", "g");
	finish_model(&b, "g");
	float *x = testlib_rand_vec(&b, NUMEL, -3, 3), *ref = testlib_alloc(&b, NUMEL * sizeof *ref);
	for (int r = 0; r < ROWS; r++) {
		double u[D], mean = 0;
		for (int k = 0; k < D; k++) {
			double v = x[r * D + k];
			u[k] = sqrt(v * v + 1) + tanh(v);
			mean += u[k];
		}
		mean /= D;
		for (int k = 0; k < D; k++)
			ref[r * D + k] = (float)(u[k] - mean);
	}
	run_both(&b, x, ref, "ReduceMean", 1, NULL, "pow, sqrt, tanh, reducemean");
	fci_onnx_free(&b);
}

/* An exponent that is not one value is refused when the model opens. */
static void test_pow_hostile(void **state)
{
	(void)state;
	fci_onnx b;
	int64_t d = D;
	start_model(&b, 14);
	testlib_add_f32(&b, "ex", 1, &d, NULL);
	testlib_node(&b, "Pow", "pw_bad", "r,ex", "y");
	testlib_output(&b, "y");
	fc_model *m = (fc_model *)1;
	char err[FC_ERRLEN];
	assert_int_equal(testlib_open(&b, &m, err), FC_ERR_UNSUPPORTED);
	print_message("#   refused: %s\n", err);
	assert_non_null(strstr(err, "'pw_bad'"));
	assert_non_null(strstr(err, "scalar exponent"));
	fci_onnx_free(&b);

	/* an exponent computed from the image */
	start_model(&b, 14);
	testlib_node(&b, "Pow", "pw_bad", "r,r", "y");
	testlib_output(&b, "y");
	assert_int_equal(testlib_open(&b, &m, err), FC_ERR_UNSUPPORTED);
	print_message("#   refused: %s\n", err);
	assert_non_null(strstr(err, "exponent"));
	fci_onnx_free(&b);
}

int main(void)
{
	testlib_seed("test_patterns");
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_layernorm_pattern),
		cmocka_unit_test(test_layernorm_channels_last),
		cmocka_unit_test(test_layernorm_near_misses),
		cmocka_unit_test(test_gelu_tanh_pattern),
		cmocka_unit_test(test_quick_gelu),
		cmocka_unit_test(test_gelu_op),
		cmocka_unit_test(test_gelu_post_op),
		cmocka_unit_test(test_matmul_post_op),
		cmocka_unit_test(test_matmul_residual),
		cmocka_unit_test(test_standalone),
		cmocka_unit_test(test_pow_hostile),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
