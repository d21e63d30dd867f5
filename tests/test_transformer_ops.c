/*
 * test_transformer_ops.c - the ops transformer and ConvNeXt exports need
 * (issue 11), each in a small graph written with testlib's ONNX builder,
 * imported (fc_model_open_mem), run through the engine and compared with
 * a naive C loop here:
 *  - LayerNormalization over the last axis, with and without B, 2-D to
 *    4-D, on oneDNN's layer_normalization (never its `ref` code);
 *  - hostile LayerNormalization nodes: another axis, a Scale of the wrong
 *    size, a missing Scale, a used Mean output, an unsupported stash_type;
 *  - GELU as torch writes it (Div sqrt 2 -> Erf -> Add 1 -> Mul x -> Mul
 *    0.5, and the other orders of the two Muls) run as one gelu_erf
 *    step; near misses and a lone Erf refused by the engine with a clear
 *    message; Erf of a constant folded;
 *  - Transpose of activations, 3-D and 4-D, several permutations, against
 *    a naive permutation; ConvNeXt's Transpose -> LayerNorm -> Transpose;
 *  - engine_tokens.c's ops, f32 and (where the cpu has it) bf16, none on
 *    oneDNN's ref code: MatMul of two activations (batched, broadcast, a
 *    scalar Div/Mul folded into its output scale, a Transpose before it
 *    read as a strided view, a scalar Mul/Div on its output folded too),
 *    a bias Add and a LayerScale Mul fused into a MatMul by constant
 *    weights, Softmax, Slice (steps,
 *    negative starts, torch.roll as Slice + Concat), Gather of one index,
 *    Concat with constants, a 6-D Transpose and a 5-D Add of a broadcast
 *    constant (Swin's window partition and mask), ReduceMean over the
 *    tokens or the channels (a matmul by ones).
 *
 * Not here: the fixture models and the CNN ops (test_engine.c), the
 * importer's general checks (test_model*.c).
 *
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

/* ---- helpers ---- */


/* A model with the 4-D input "x" of dims xd, reshaped to "r" of rank rn
 * and dims rd (the engine's input is always N x C x H x W). */
static void start_model(fci_onnx *b, int opset, const int64_t *xd, int rn, const int64_t *rd)
{
	testlib_model_init(b, opset);
	testlib_input(b, "x", 4, xd);
	testlib_init_i64(b, "rshape", rn, rd);
	testlib_node(b, "Reshape", "to_tokens", "x,rshape", "r");
}

/* Flatten tensor `in` to N x D as "y", the graph output and the cut. */
static void finish_model(fci_onnx *b, const char *in)
{
	testlib_node(b, "Flatten", "flat", in, "y");
	testlib_output(b, "y");
}

/* Open the graph, cut at "y", run x (batch N) in precision prec and
 * return the maximum error relative to the largest reference value, or -1
 * when the cpu has no native bf16 (a skip). Fails if any primitive runs
 * oneDNN's `ref` code; with op set, if none of that op runs; with forbid
 * set, if a primitive of that op runs. */
static double run_prec(fci_onnx *b, const float *x, int N, const float *ref, size_t D, const char *op, int prec,
		       const char *forbid)
{
	fc_model *m;
	fc_engine *e;
	if (testlib_open_engine(b, "y", N, prec, &m, &e))
		return -1;
	assert_int_equal(fc_engine_dim(e), D);
	int seen = 0;
	for (int i = 0; i < fc_engine_n_prims(e); i++) {
		const char *info = fc_engine_prim_info(e, i), *s = strstr(info, ": ");
		print_message("#   %s\n", info);
		if (s && strncmp(s + 2, "ref", 3) == 0)
			fail_msg("a primitive runs oneDNN's ref code: %s", info);
		if (op && s && strstr(info, op) && strstr(info, op) < s)
			seen++;
		/* "<node> <op>: <impl>": the op is the word before s */
		size_t fl = forbid ? strlen(forbid) : 0;
		if (forbid && s && (size_t)(s - info) > fl && s[-(ptrdiff_t)fl - 1] == ' ' &&
		    !strncmp(s - fl, forbid, fl))
			fail_msg("a %s primitive runs: %s", forbid, info);
	}
	if (op && !seen)
		fail_msg("no %s primitive", op);
	float *out = calloc((size_t)N * D, sizeof *out);
	assert_non_null(out);
	assert_int_equal(fc_engine_run(e, out, x, (size_t)N), 0);
	double r = testlib_rel_err(out, ref, (size_t)N * D);
	free(out);
	fc_engine_free(e);
	fc_model_free(m);
	return r;
}

static double run_vs_ref(fci_onnx *b, const float *x, int N, const float *ref, size_t D, const char *op)
{
	return run_prec(b, x, N, ref, D, op, FC_PREC_F32, NULL);
}

/* The model must fail to open with code, and its message contain each
 * of the NULL-terminated strings that follow. */
static void open_fails(fci_onnx *b, int code, ...)
{
	fc_model *m = (fc_model *)1;
	char err[FC_ERRLEN];
	int rc = testlib_open(b, &m, err);
	va_list ap;
	const char *s;
	if (rc != code)
		fail_msg("open returned %d (%s), expected %d", rc, rc ? err : "", code);
	assert_null(m);
	print_message("#   refused: %s\n", err);
	va_start(ap, code);
	while ((s = va_arg(ap, const char *)))
		if (!strstr(err, s))
			fail_msg("message '%s' lacks '%s'", err, s);
	va_end(ap);
}

/* ---- LayerNormalization ---- */

/* y = (x - mean) / sqrt(var + eps) * scale + bias over rows of D, in double. */
static void ref_layernorm(float *y, const float *x, size_t rows, size_t D, const float *scale, const float *bias,
			  float eps)
{
	for (size_t r = 0; r < rows; r++) {
		const float *xr = x + r * D;
		double mean = 0, var = 0;
		for (size_t k = 0; k < D; k++)
			mean += xr[k];
		mean /= (double)D;
		for (size_t k = 0; k < D; k++)
			var += (xr[k] - mean) * (xr[k] - mean);
		var /= (double)D;
		double inv = 1 / sqrt(var + eps);
		for (size_t k = 0; k < D; k++)
			y[r * D + k] = (float)((xr[k] - mean) * inv * scale[k] + (bias ? bias[k] : 0));
	}
}

static void layernorm_case(int N, int rn, const int64_t *rd, int with_b, float eps)
{
	int64_t xd[4] = { N, 3, 4, 1 }, rdims[4];
	size_t numel = 1;
	for (int k = 0; k < rn; k++) {
		rdims[k] = rd[k];
		numel *= (size_t)rd[k];
	}
	xd[3] = (int64_t)numel / (N * 12);
	assert_int_equal((size_t)(N * 12 * xd[3]), numel);
	int64_t D = rd[rn - 1];
	size_t rows = numel / (size_t)D;
	fci_onnx b;
	start_model(&b, 17, xd, rn, rdims);
	float *scale = testlib_rand_vec(&b, (size_t)D, 0.5f, 1.5f), *bias = with_b ? testlib_rand_vec(&b, (size_t)D, -1, 1) : NULL;
	testlib_add_f32(&b, "ln_scale", 1, &D, scale);
	if (with_b)
		testlib_add_f32(&b, "ln_bias", 1, &D, bias);
	Onnx__NodeProto *n = testlib_node(&b, "LayerNormalization", "ln", with_b ? "r,ln_scale,ln_bias" : "r,ln_scale",
					  "ln_out");
	if (eps != 1e-5f)
		testlib_attr_f(&b, n, "epsilon", eps);
	if (rn == 3)
		testlib_attr_i(&b, n, "axis", 2); /* the last axis, spelled positive */
	finish_model(&b, "ln_out");
	float *x = testlib_rand_vec(&b, numel, -2, 3), *ref = testlib_alloc(&b, numel * sizeof *ref);
	ref_layernorm(ref, x, rows, (size_t)D, scale, bias, eps);
	double err = run_vs_ref(&b, x, N, ref, numel / (size_t)N, "LayerNormalization");
	print_message("# layernorm rank %d, D %lld, B %d, eps %g: max rel err %.2e\n", rn, (long long)D, with_b,
		      (double)eps, err);
	assert_true(err < 1e-5);
	fci_onnx_free(&b);
}

static void test_layernorm(void **state)
{
	(void)state;
	static const int64_t r2[2] = { 2, 96 }, r3[3] = { 2, 12, 40 }, r4[4] = { 3, 4, 6, 20 };
	layernorm_case(2, 2, r2, 1, 1e-5f);
	layernorm_case(2, 3, r3, 1, 1e-3f);
	layernorm_case(2, 3, r3, 0, 1e-5f);
	layernorm_case(3, 4, r4, 1, 1e-6f);
}

/* A LayerNormalization graph with the given node inputs and Scale size. */
static Onnx__NodeProto *layernorm_graph(fci_onnx *b, const char *ins, int64_t scale_n, const char *outs)
{
	static const int64_t xd[4] = { 2, 3, 4, 8 }, rd[3] = { 2, 12, 8 };
	int64_t d8 = 8;
	start_model(b, 17, xd, 3, rd);
	testlib_add_f32(b, "ln_scale", 1, &scale_n, NULL);
	testlib_add_f32(b, "ln_bias", 1, &d8, NULL);
	return testlib_node(b, "LayerNormalization", "ln_bad", ins, outs);
}

static void test_layernorm_hostile(void **state)
{
	(void)state;
	fci_onnx b;
	Onnx__NodeProto *n;

	/* Normalising over another axis than the last is not supported. */
	n = layernorm_graph(&b, "r,ln_scale,ln_bias", 8, "y");
	testlib_attr_i(&b, n, "axis", 1);
	testlib_output(&b, "y");
	open_fails(&b, FC_ERR_UNSUPPORTED, "'ln_bad'", "LayerNormalization", "last axis", NULL);
	fci_onnx_free(&b);

	/* A Scale that does not match the normalised axis. */
	layernorm_graph(&b, "r,ln_scale,ln_bias", 7, "y");
	testlib_output(&b, "y");
	open_fails(&b, FC_ERR_INVALID, "'ln_bad'", "Scale", NULL);
	fci_onnx_free(&b);

	/* A B that does not either (its Scale is right). */
	layernorm_graph(&b, "r,ln_bias,ln_scale", 5, "y");
	testlib_output(&b, "y");
	open_fails(&b, FC_ERR_INVALID, "'ln_bad'", "B is", NULL);
	fci_onnx_free(&b);

	/* No Scale at all, or an empty name in its place. */
	layernorm_graph(&b, "r", 8, "y");
	testlib_output(&b, "y");
	open_fails(&b, FC_ERR_CORRUPT, "'ln_bad'", "inputs", NULL);
	fci_onnx_free(&b);
	layernorm_graph(&b, "r,,ln_bias", 8, "y");
	testlib_output(&b, "y");
	open_fails(&b, FC_ERR_CORRUPT, "'ln_bad'", "input 2 is missing", NULL);
	fci_onnx_free(&b);

	/* A Scale computed from the image. */
	layernorm_graph(&b, "r,r,ln_bias", 8, "y");
	testlib_output(&b, "y");
	open_fails(&b, FC_ERR_UNSUPPORTED, "'ln_bad'", "Scale", NULL);
	fci_onnx_free(&b);

	/* The Mean output used by a later node. */
	layernorm_graph(&b, "r,ln_scale,ln_bias", 8, "ln_y,ln_mean");
	testlib_node(&b, "Add", "use_mean", "ln_y,ln_mean", "y");
	testlib_output(&b, "y");
	open_fails(&b, FC_ERR_UNSUPPORTED, "'use_mean'", "ln_mean", NULL);
	fci_onnx_free(&b);

	/* Statistics in another precision than float. */
	n = layernorm_graph(&b, "r,ln_scale,ln_bias", 8, "y");
	testlib_attr_i(&b, n, "stash_type", 16);
	testlib_output(&b, "y");
	open_fails(&b, FC_ERR_UNSUPPORTED, "'ln_bad'", "stash_type", NULL);
	fci_onnx_free(&b);

	/* A negative epsilon. */
	n = layernorm_graph(&b, "r,ln_scale,ln_bias", 8, "y");
	testlib_attr_f(&b, n, "epsilon", -1.0f);
	testlib_output(&b, "y");
	open_fails(&b, FC_ERR_CORRUPT, "'ln_bad'", "epsilon", NULL);
	fci_onnx_free(&b);
}

/* ---- GELU (Erf form) ---- */

static float ref_gelu(float v)
{
	return (float)(0.5 * v * (1 + erf(v / sqrt(2.0))));
}

/* x (2 x 3 x 4 x 8) reshaped to r (2 x 12 x 8); the scalars the pattern
 * uses as initializers. */
static void gelu_start(fci_onnx *b, float sqrt2)
{
	static const int64_t xd[4] = { 2, 3, 4, 8 }, rd[3] = { 2, 12, 8 };
	static const float one = 1, half = 0.5f;
	start_model(b, 17, xd, 3, rd);
	testlib_add_f32(b, "g_sqrt2", 0, NULL, &sqrt2);
	testlib_add_f32(b, "g_one", 0, NULL, &one);
	testlib_add_f32(b, "g_half", 0, NULL, &half);
}

/* The pattern on r into "g": form 0 (x * s) * 0.5, torch's export;
 * form 1 (x * 0.5) * s with the Mul by 0.5 first in the file; form 2
 * x * (s * 0.5), operands swapped. */
static void gelu_nodes(fci_onnx *b, int form)
{
	if (form == 1)
		testlib_node(b, "Mul", "g_xh", "g_half,r", "g_h");
	testlib_node(b, "Div", "g_div", "r,g_sqrt2", "g_d");
	testlib_node(b, "Erf", "g_erf", "g_d", "g_e");
	testlib_node(b, "Add", "g_add", form == 2 ? "g_one,g_e" : "g_e,g_one", "g_s");
	if (form == 0) {
		testlib_node(b, "Mul", "g_mx", "r,g_s", "g_m");
		testlib_node(b, "Mul", "g_mh", "g_m,g_half", "g");
	} else if (form == 1) {
		testlib_node(b, "Mul", "g_ms", "g_s,g_h", "g");
	} else {
		testlib_node(b, "Mul", "g_sh", "g_half,g_s", "g_m");
		testlib_node(b, "Mul", "g_mx", "g_m,r", "g");
	}
}

static void test_gelu(void **state)
{
	(void)state;
	size_t n = 2 * 12 * 8;
	for (int form = 0; form < 3; form++) {
		fci_onnx b;
		gelu_start(&b, 1.4142135f);
		gelu_nodes(&b, form);
		finish_model(&b, "g");
		float *x = testlib_rand_vec(&b, n, -4, 4), *ref = testlib_alloc(&b, n * sizeof *ref);
		for (size_t i = 0; i < n; i++)
			ref[i] = ref_gelu(x[i]);
		double err = run_vs_ref(&b, x, 2, ref, n / 2, "Gelu");
		print_message("# gelu form %d: max rel err %.2e\n", form, err);
		assert_true(err < 1e-5);
		fci_onnx_free(&b);
	}

	/* After a LayerNormalization, and x read again later (a residual):
	 * still one gelu step, x kept. */
	fci_onnx b;
	int64_t d8 = 8;
	gelu_start(&b, 1.4142135f);
	float *scale = testlib_rand_vec(&b, 8, 0.5f, 1.5f), *bias = testlib_rand_vec(&b, 8, -1, 1);
	testlib_add_f32(&b, "ln_scale", 1, &d8, scale);
	testlib_add_f32(&b, "ln_bias", 1, &d8, bias);
	testlib_node(&b, "LayerNormalization", "ln", "r,ln_scale,ln_bias", "ln_out");
	testlib_node(&b, "Identity", "keep", "ln_out", "r2");
	/* the pattern on r2: rename by hand */
	testlib_node(&b, "Div", "g_div", "r2,g_sqrt2", "g_d");
	testlib_node(&b, "Erf", "g_erf", "g_d", "g_e");
	testlib_node(&b, "Add", "g_add", "g_e,g_one", "g_s");
	testlib_node(&b, "Mul", "g_mx", "r2,g_s", "g_m");
	testlib_node(&b, "Mul", "g_mh", "g_m,g_half", "g");
	testlib_node(&b, "Add", "res", "g,r2", "g_res");
	finish_model(&b, "g_res");
	float *x = testlib_rand_vec(&b, n, -2, 2), *ln = testlib_alloc(&b, n * sizeof *ln),
	      *ref = testlib_alloc(&b, n * sizeof *ref);
	ref_layernorm(ln, x, n / 8, 8, scale, bias, 1e-5f);
	for (size_t i = 0; i < n; i++)
		ref[i] = ref_gelu(ln[i]) + ln[i];
	double err = run_vs_ref(&b, x, 2, ref, n / 2, "Gelu");
	print_message("# layernorm + gelu + residual: max rel err %.2e\n", err);
	assert_true(err < 1e-5);
	fci_onnx_free(&b);

	/* Erf of a constant is folded. */
	int64_t d8b = 8;
	float c[8];
	gelu_start(&b, 1.4142135f);
	for (int k = 0; k < 8; k++)
		c[k] = (float)k / 4 - 1;
	testlib_add_f32(&b, "c", 1, &d8b, c);
	testlib_node(&b, "Erf", "erf_c", "c", "ec");
	testlib_node(&b, "Add", "add_ec", "r,ec", "s");
	finish_model(&b, "s");
	x = testlib_rand_vec(&b, n, -2, 2);
	ref = testlib_alloc(&b, n * sizeof *ref);
	for (size_t i = 0; i < n; i++)
		ref[i] = x[i] + erff(c[i % 8]);
	err = run_vs_ref(&b, x, 2, ref, n / 2, NULL);
	assert_true(err < 1e-6);
	fci_onnx_free(&b);
}

/* The engine must refuse the model (cut at "y") with a message holding s. */
static void engine_fails(fci_onnx *b, const char *s)
{
	fc_model *m = NULL;
	fc_engine *e = NULL;
	char err[FC_ERRLEN];
	if (testlib_open(b, &m, err))
		fail_msg("model open failed: %s", err);
	assert_int_equal(fc_model_cut(m, "y"), 0);
	fc_engine_opts o = { .batch = 2, .precision = FC_PREC_F32 };
	assert_int_equal(fc_engine_open(&e, m, &o, err, sizeof err), FC_ERR_UNSUPPORTED);
	assert_null(e);
	print_message("#   engine refused: %s\n", err);
	if (!strstr(err, s))
		fail_msg("message '%s' lacks '%s'", err, s);
	fc_model_free(m);
}

/* Near misses are no GELU: the Erf in them is refused, naming it. */
static void test_gelu_near_misses(void **state)
{
	(void)state;
	fci_onnx b;

	/* divided by 2, not sqrt 2 */
	gelu_start(&b, 2.0f);
	gelu_nodes(&b, 0);
	finish_model(&b, "g");
	engine_fails(&b, "'g_erf' (Erf)");
	fci_onnx_free(&b);

	/* the sum also read elsewhere */
	gelu_start(&b, 1.4142135f);
	gelu_nodes(&b, 0);
	testlib_node(&b, "Add", "g_more", "g,g_s", "g2");
	finish_model(&b, "g2");
	engine_fails(&b, "'g_erf' (Erf)");
	fci_onnx_free(&b);

	/* the cut inside the pattern */
	gelu_start(&b, 1.4142135f);
	gelu_nodes(&b, 0);
	testlib_output(&b, "g");
	testlib_node(&b, "Flatten", "flat", "g_m", "y");
	engine_fails(&b, "'g_erf' (Erf)");
	fci_onnx_free(&b);

	/* a lone Erf */
	gelu_start(&b, 1.4142135f);
	testlib_node(&b, "Erf", "lone", "r", "e");
	finish_model(&b, "e");
	engine_fails(&b, "'lone' (Erf): only supported as part of GELU");
	fci_onnx_free(&b);
}

/* ---- Transpose on activations ---- */

/* y = x with its dims permuted: y dim k is x dim perm[k], row-major. */
static void ref_transpose(float *y, const float *x, int r, const int64_t *xd, const int *perm)
{
	int64_t yd[4], xs[4], n = 1;
	for (int k = r - 1; k >= 0; k--) {
		xs[k] = n;
		n *= xd[k];
	}
	for (int k = 0; k < r; k++)
		yd[k] = xd[perm[k]];
	for (int64_t o = 0; o < n; o++) {
		int64_t rem = o, off = 0;
		for (int k = r - 1; k >= 0; k--) {
			off += (rem % yd[k]) * xs[perm[k]];
			rem /= yd[k];
		}
		y[o] = x[off];
	}
}

static void transpose_case(int r, const int64_t *rd, const int *perm)
{
	static const int64_t xd[4] = { 2, 3, 4, 10 };
	size_t n = 2 * 3 * 4 * 10;
	fci_onnx b;
	start_model(&b, 13, xd, r, rd);
	Onnx__NodeProto *nd = testlib_node(&b, "Transpose", "tp", "r", "t");
	if (perm)
		testlib_attr_ints(&b, nd, "perm", r, (long long)perm[0], (long long)perm[1], (long long)perm[2],
				  (long long)(r > 3 ? perm[3] : 0));
	finish_model(&b, "t");
	int rev[4] = { r - 1, r - 2, r - 3, r - 4 };
	float *x = testlib_rand_vec(&b, n, -1, 1), *ref = testlib_alloc(&b, n * sizeof *ref);
	ref_transpose(ref, x, r, rd, perm ? perm : rev);
	double err = run_vs_ref(&b, x, 2, ref, n / 2, NULL);
	print_message("# transpose rank %d perm %d%d%d%d: max err %.2e\n", r, (perm ? perm : rev)[0],
		      (perm ? perm : rev)[1], (perm ? perm : rev)[2], r > 3 ? (perm ? perm : rev)[3] : 0, err);
	assert_true(err == 0);
	fci_onnx_free(&b);
}

static void test_transpose(void **state)
{
	(void)state;
	static const int64_t r3[3] = { 2, 12, 10 }, r4[4] = { 2, 3, 4, 10 }, r4b[4] = { 2, 6, 5, 4 };
	static const int p3[][3] = { { 0, 2, 1 }, { 0, 1, 2 }, { 2, 0, 1 } };
	static const int p4[][4] = { { 0, 2, 3, 1 }, { 0, 3, 1, 2 }, { 0, 2, 1, 3 }, { 3, 2, 1, 0 }, { 1, 0, 3, 2 } };
	for (size_t k = 0; k < sizeof p3 / sizeof p3[0]; k++)
		if (p3[k][0] == 0) /* the batch stays first for the cut */
			transpose_case(3, r3, p3[k]);
	for (size_t k = 0; k < sizeof p4 / sizeof p4[0]; k++) {
		if (p4[k][0] != 0)
			continue;
		transpose_case(4, r4, p4[k]);
		transpose_case(4, r4b, p4[k]);
	}

	/* ConvNeXt's channels-last LayerNorm: NCHW -> NHWC, LayerNorm over C,
	 * back to NCHW. */
	fci_onnx b;
	static const int64_t xd[4] = { 2, 8, 3, 5 };
	static const int to_nhwc[4] = { 0, 2, 3, 1 }, to_nchw[4] = { 0, 3, 1, 2 };
	int64_t c = 8, nhwc[4] = { 2, 3, 5, 8 };
	size_t n = 2 * 8 * 3 * 5;
	start_model(&b, 17, xd, 4, xd);
	float *scale = testlib_rand_vec(&b, 8, 0.5f, 1.5f), *bias = testlib_rand_vec(&b, 8, -1, 1);
	testlib_add_f32(&b, "ln_scale", 1, &c, scale);
	testlib_add_f32(&b, "ln_bias", 1, &c, bias);
	Onnx__NodeProto *nd = testlib_node(&b, "Transpose", "to_nhwc", "r", "t1");
	testlib_attr_ints(&b, nd, "perm", 4, 0LL, 2LL, 3LL, 1LL);
	testlib_node(&b, "LayerNormalization", "ln", "t1,ln_scale,ln_bias", "t2");
	nd = testlib_node(&b, "Transpose", "to_nchw", "t2", "t3");
	testlib_attr_ints(&b, nd, "perm", 4, 0LL, 3LL, 1LL, 2LL);
	finish_model(&b, "t3");
	float *x = testlib_rand_vec(&b, n, -2, 2), *t1 = testlib_alloc(&b, n * sizeof *t1),
	      *t2 = testlib_alloc(&b, n * sizeof *t2), *ref = testlib_alloc(&b, n * sizeof *ref);
	ref_transpose(t1, x, 4, xd, to_nhwc);
	ref_layernorm(t2, t1, n / 8, 8, scale, bias, 1e-5f);
	ref_transpose(ref, t2, 4, nhwc, to_nchw);
	double err = run_vs_ref(&b, x, 2, ref, n / 2, "LayerNormalization");
	print_message("# transpose, layernorm, transpose: max rel err %.2e\n", err);
	assert_true(err < 1e-5);
	fci_onnx_free(&b);
}

/* A perm that is no permutation of the input's axes is refused. */
static void test_transpose_hostile(void **state)
{
	(void)state;
	static const int64_t xd[4] = { 2, 3, 4, 8 };
	fci_onnx b;
	Onnx__NodeProto *nd;

	start_model(&b, 13, xd, 4, xd);
	nd = testlib_node(&b, "Transpose", "tp_bad", "r", "y");
	testlib_attr_ints(&b, nd, "perm", 4, 0LL, 1LL, 1LL, 2LL);
	testlib_output(&b, "y");
	open_fails(&b, FC_ERR_CORRUPT, "'tp_bad'", "not a permutation", NULL);
	fci_onnx_free(&b);

	start_model(&b, 13, xd, 4, xd);
	nd = testlib_node(&b, "Transpose", "tp_bad", "r", "y");
	testlib_attr_ints(&b, nd, "perm", 3, 0LL, 2LL, 1LL);
	testlib_output(&b, "y");
	open_fails(&b, FC_ERR_CORRUPT, "'tp_bad'", "perm has 3 values for rank 4", NULL);
	fci_onnx_free(&b);
}


/* ---- the transformer ops on activations (engine_tokens.c) ---- */

/* Run in f32 (max rel err below 1e-5) and, where the cpu has native
 * bf16, in bf16 (below 3e-2); what names the case in the log. */
static void check_both(fci_onnx *b, const float *x, int N, const float *ref, size_t D, const char *op,
		       const char *forbid, const char *what)
{
	double e32 = run_prec(b, x, N, ref, D, op, FC_PREC_F32, forbid);
	double e16 = run_prec(b, x, N, ref, D, op, FC_PREC_BF16, forbid);
	print_message("# %s: max rel err f32 %.2e, bf16 %.2e\n", what, e32, e16);
	assert_true(e32 < 1e-5);
	assert_true(e16 < 3e-2);
}

/* Row-major strides of dims (rank r) into st. */
static int64_t strides_of(int64_t *st, const int64_t *dims, int r)
{
	int64_t n = 1;
	for (int k = r - 1; k >= 0; k--) {
		st[k] = n;
		n *= dims[k];
	}
	return n;
}

/* y = scale * a @ w over the last two dims, batch dims broadcast (rank r,
 * dims right-aligned with 1s), in double. */
static void ref_matmul(float *y, const float *a, const int64_t *da, const float *w, const int64_t *dw, int r,
		       double scale)
{
	int64_t M = da[r - 2], K = da[r - 1], N = dw[r - 1], yb[8], nb = 1;
	for (int k = 0; k < r - 2; k++) {
		yb[k] = da[k] > dw[k] ? da[k] : dw[k];
		nb *= yb[k];
	}
	for (int64_t o = 0; o < nb; o++) {
		int64_t rem = o, ia = 0, iw = 0, sa = 1, sw = 1;
		for (int k = r - 3; k >= 0; k--) {
			int64_t idx = rem % yb[k];
			rem /= yb[k];
			ia += (da[k] == 1 ? 0 : idx) * sa;
			iw += (dw[k] == 1 ? 0 : idx) * sw;
			sa *= da[k];
			sw *= dw[k];
		}
		const float *ap = a + ia * M * K, *wp = w + iw * K * N;
		for (int64_t m = 0; m < M; m++)
			for (int64_t n = 0; n < N; n++) {
				double acc = 0;
				for (int64_t k = 0; k < K; k++)
					acc += (double)ap[m * K + k] * wp[k * N + n];
				y[(o * M + m) * N + n] = (float)(acc * scale);
			}
	}
}

/* y = x with its dims permuted, any rank up to 8. */
static void ref_permute(float *y, const float *x, int r, const int64_t *xd, const int *perm)
{
	int64_t yd[8], xs[8];
	int64_t n = strides_of(xs, xd, r);
	for (int k = 0; k < r; k++)
		yd[k] = xd[perm[k]];
	for (int64_t o = 0; o < n; o++) {
		int64_t rem = o, off = 0;
		for (int k = r - 1; k >= 0; k--) {
			off += (rem % yd[k]) * xs[perm[k]];
			rem /= yd[k];
		}
		y[o] = x[off];
	}
}

/* y = the box of x (rank r, dims xd) at offsets st with dims yd. */
static void ref_box(float *y, const float *x, int r, const int64_t *xd, const int64_t *st, const int64_t *yd)
{
	int64_t xs[8], ys[8];
	strides_of(xs, xd, r);
	int64_t n = strides_of(ys, yd, r);
	for (int64_t o = 0; o < n; o++) {
		int64_t off = 0;
		for (int k = 0; k < r; k++)
			off += (st[k] + o / ys[k] % yd[k]) * xs[k];
		y[o] = x[off];
	}
}

/* Softmax over rows of D, in double. */
static void ref_softmax(float *y, const float *x, size_t rows, size_t D)
{
	for (size_t r = 0; r < rows; r++) {
		const float *xr = x + r * D;
		double mx = xr[0], sum = 0;
		for (size_t k = 1; k < D; k++)
			mx = xr[k] > mx ? xr[k] : mx;
		for (size_t k = 0; k < D; k++)
			sum += exp(xr[k] - mx);
		for (size_t k = 0; k < D; k++)
			y[r * D + k] = (float)(exp(xr[k] - mx) / sum);
	}
}

static const int64_t tok_x[4] = { 2, 3, 4, 10 }, tok_r[3] = { 2, 12, 10 };
#define TOK_N 240

/* A scalar (rank 0) int64 initializer. */
static void init_i64_scalar(fci_onnx *b, const char *name, int64_t v)
{
	Onnx__TensorProto *t = testlib_i64(b, name, 1, &v);
	t->n_dims = 0;
	testlib_add_init(b, t);
}

static void test_matmul_act(void **state)
{
	(void)state;
	fci_onnx b;
	Onnx__NodeProto *nd;
	float *x, *t, *ref;

	/* 3-D, the same batch: r @ rT (attention's q kT), 2 x 12 x 12 */
	start_model(&b, 13, tok_x, 3, tok_r);
	nd = testlib_node(&b, "Transpose", "kt", "r", "rt");
	testlib_attr_ints(&b, nd, "perm", 3, 0LL, 2LL, 1LL);
	testlib_node(&b, "MatMul", "qk", "r,rt", "s");
	finish_model(&b, "s");
	static const int perm3[3] = { 0, 2, 1 };
	static const int64_t dt3[3] = { 2, 10, 12 };
	x = testlib_rand_vec(&b, TOK_N, -1, 1);
	t = testlib_alloc(&b, TOK_N * sizeof *t);
	ref = testlib_alloc(&b, 2 * 144 * sizeof *ref);
	ref_permute(t, x, 3, tok_r, perm3);
	ref_matmul(ref, x, tok_r, t, dt3, 3, 1);
	/* the Transpose is no copy: the matmul reads it with permuted strides */
	check_both(&b, x, 2, ref, 144, "MatMul", "Transpose", "matmul 2x12x10 @ 2x10x12");
	fci_onnx_free(&b);

	/* 4-D by 3-D: the batch of B broadcast (rank and dim 0): r (2 x 3 x
	 * 4 x 10) @ reshape(r[0], 3 x 10 x 4) */
	static const int64_t w3[3] = { 3, 10, 4 }, w4[4] = { 1, 3, 10, 4 };
	start_model(&b, 13, tok_x, 4, tok_x);
	init_i64_scalar(&b, "i0", 0);
	testlib_init_i64(&b, "wshape", 3, w3);
	nd = testlib_node(&b, "Gather", "first", "r,i0", "g");
	testlib_attr_i(&b, nd, "axis", 0);
	testlib_node(&b, "Reshape", "to_w", "g,wshape", "w");
	testlib_node(&b, "MatMul", "bmm", "r,w", "s");
	finish_model(&b, "s");
	x = testlib_rand_vec(&b, TOK_N, -1, 1);
	ref = testlib_alloc(&b, 2 * 48 * sizeof *ref);
	ref_matmul(ref, x, tok_x, x, w4, 4, 1);
	check_both(&b, x, 2, ref, 48, "MatMul", NULL, "matmul 2x3x4x10 @ 3x10x4 (broadcast)");
	fci_onnx_free(&b);

	/* 2-D: r (2 x 120) @ reshape(r, 120 x 2) */
	static const int64_t a2[2] = { 2, 120 }, b2[2] = { 120, 2 };
	start_model(&b, 13, tok_x, 2, a2);
	testlib_init_i64(&b, "bshape", 2, b2);
	testlib_node(&b, "Reshape", "to_b", "r,bshape", "w");
	testlib_node(&b, "MatMul", "mm2", "r,w", "s");
	finish_model(&b, "s");
	x = testlib_rand_vec(&b, TOK_N, -1, 1);
	ref = testlib_alloc(&b, 4 * sizeof *ref);
	ref_matmul(ref, x, a2, x, b2, 2, 1);
	check_both(&b, x, 2, ref, 2, "MatMul", NULL, "matmul 2x120 @ 120x2");
	fci_onnx_free(&b);

	/* A Div and a Mul by constant scalars on the operands become the
	 * matmul's output scale: no Div or Mul step runs. */
	for (int form = 0; form < 2; form++) {
		float eight = 8, half = 0.5f;
		start_model(&b, 13, tok_x, 3, tok_r);
		testlib_add_f32(&b, "eight", 0, NULL, &eight);
		testlib_add_f32(&b, "half", 1, (const int64_t[]){ 1 }, &half);
		nd = testlib_node(&b, "Transpose", "kt", "r", "rt");
		testlib_attr_ints(&b, nd, "perm", 3, 0LL, 2LL, 1LL);
		testlib_node(&b, "Div", "q_scale", "r,eight", "q");
		if (form == 1)
			testlib_node(&b, "Mul", "k_scale", "half,rt", "k");
		testlib_node(&b, "MatMul", "qk", form ? "q,k" : "q,rt", "s");
		finish_model(&b, "s");
		x = testlib_rand_vec(&b, TOK_N, -1, 1);
		t = testlib_alloc(&b, TOK_N * sizeof *t);
		ref = testlib_alloc(&b, 2 * 144 * sizeof *ref);
		ref_permute(t, x, 3, tok_r, perm3);
		ref_matmul(ref, x, tok_r, t, dt3, 3, form ? 1.0 / 16 : 1.0 / 8);
		check_both(&b, x, 2, ref, 144, "MatMul", form ? "Mul" : "Div",
			   form ? "matmul (q / 8) @ (0.5 kT)" : "matmul (q / 8) @ kT");
		fci_onnx_free(&b);
	}

	/* The scale on the product instead ((q @ kT) * 0.125 as DINOv2 writes
	 * it, or / 8): the output scale too, no Mul or Div step. */
	for (int form = 0; form < 2; form++) {
		float f = form ? 8 : 0.125f;
		start_model(&b, 13, tok_x, 3, tok_r);
		testlib_add_f32(&b, "f", 0, NULL, &f);
		nd = testlib_node(&b, "Transpose", "kt", "r", "rt");
		testlib_attr_ints(&b, nd, "perm", 3, 0LL, 2LL, 1LL);
		testlib_node(&b, "MatMul", "qk", "r,rt", "p");
		testlib_node(&b, form ? "Div" : "Mul", "p_scale", form ? "p,f" : "f,p", "s");
		finish_model(&b, "s");
		x = testlib_rand_vec(&b, TOK_N, -1, 1);
		t = testlib_alloc(&b, TOK_N * sizeof *t);
		ref = testlib_alloc(&b, 2 * 144 * sizeof *ref);
		ref_permute(t, x, 3, tok_r, perm3);
		ref_matmul(ref, x, tok_r, t, dt3, 3, 1.0 / 8);
		check_both(&b, x, 2, ref, 144, "MatMul", form ? "Div" : "Mul",
			   form ? "matmul (q @ kT) / 8" : "matmul 0.125 * (q @ kT)");
		fci_onnx_free(&b);
	}

	/* LayerScale after a Linear on tokens (MatMul, Add bias, Mul by a
	 * gamma per output, or by one factor): folded into the weights and
	 * bias, no Add or Mul step. */
	static const int64_t gd[1] = { 6 };
	for (int form = 0; form < 2; form++) {
		static const int64_t lwd[2] = { 10, 6 }, la24[2] = { 24, 10 };
		start_model(&b, 13, tok_x, 3, tok_r);
		float *wt = testlib_rand_vec(&b, 60, -1, 1), *bias = testlib_rand_vec(&b, 6, -1, 1);
		float *gamma = testlib_rand_vec(&b, 6, 0.2f, 1);
		testlib_add_f32(&b, "lw", 2, lwd, wt);
		testlib_add_f32(&b, "lb", 1, gd, bias);
		testlib_add_f32(&b, "ls", form ? 0 : 1, form ? NULL : gd, gamma);
		testlib_node(&b, "MatMul", "lin", "r,lw", "m");
		testlib_node(&b, "Add", "lin_bias", "m,lb", "h");
		testlib_node(&b, "Mul", "layer_scale", form ? "ls,h" : "h,ls", "s");
		finish_model(&b, "s");
		x = testlib_rand_vec(&b, TOK_N, -1, 1);
		ref = testlib_alloc(&b, 144 * sizeof *ref);
		ref_matmul(ref, x, la24, wt, lwd, 2, 1);
		for (int k = 0; k < 144; k++)
			ref[k] = (ref[k] + bias[k % 6]) * gamma[form ? 0 : k % 6];
		check_both(&b, x, 2, ref, 72, "MatMul", "Mul",
			   form ? "linear, bias, one factor folded" : "linear, bias, LayerScale folded");
		fci_onnx_free(&b);
	}

	/* ConvNeXt's block end: the pointwise Linear on N x H x W x C, its bias,
	 * the permute back to N x C x H x W, then LayerScale's gamma (C x 1 x
	 * 1): gamma folded into the weights too, the Mul passes the permuted
	 * tensor on (no Mul step). */
	{
		static const int64_t lwd[2] = { 10, 6 }, g3[3] = { 6, 1, 1 };
		start_model(&b, 13, tok_x, 3, tok_r);
		float *wt = testlib_rand_vec(&b, 60, -1, 1), *bias = testlib_rand_vec(&b, 6, -1, 1);
		float *gamma = testlib_rand_vec(&b, 6, 0.2f, 1);
		testlib_add_f32(&b, "lw", 2, lwd, wt);
		testlib_add_f32(&b, "lb", 1, gd, bias);
		testlib_add_f32(&b, "ls", 3, g3, gamma);
		testlib_node(&b, "MatMul", "pw", "x,lw", "m");
		testlib_node(&b, "Add", "pw_bias", "m,lb", "h");
		nd = testlib_node(&b, "Transpose", "to_nchw", "h", "t");
		testlib_attr_ints(&b, nd, "perm", 4, 0LL, 3LL, 1LL, 2LL);
		testlib_node(&b, "Mul", "layer_scale", "t,ls", "s");
		finish_model(&b, "s");
		x = testlib_rand_vec(&b, TOK_N, -1, 1);
		ref = testlib_alloc(&b, 144 * sizeof *ref);
		for (int n = 0; n < 2; n++) /* x: n, h (3), w (4), c (10); ref: n, o (6), h, w */
			for (int o = 0; o < 6; o++)
				for (int p = 0; p < 12; p++) {
					double v = bias[o];
					for (int c = 0; c < 10; c++)
						v += (double)x[n * 120 + p * 10 + c] * wt[c * 6 + o];
					ref[n * 72 + o * 12 + p] = (float)(v * gamma[o]);
				}
		check_both(&b, x, 2, ref, 72, "MatMul", "Mul", "linear, bias, permute, LayerScale folded");
		fci_onnx_free(&b);
	}

	/* A Linear layer on tokens as torch exports it: MatMul by constant
	 * weights, then Add of the bias (either operand order): one matmul
	 * with the bias fused, no Add step. A bias of another shape stays an
	 * Add. */
	static const int64_t wd[2] = { 10, 6 }, bd[1] = { 6 }, b2d[2] = { 12, 6 }, a24[2] = { 24, 10 };
	for (int form = 0; form < 3; form++) {
		start_model(&b, 13, tok_x, 3, tok_r);
		float *wt = testlib_rand_vec(&b, 60, -1, 1), *bias = testlib_rand_vec(&b, 72, -1, 1);
		testlib_add_f32(&b, "lw", 2, wd, wt);
		testlib_add_f32(&b, "lb", form == 2 ? 2 : 1, form == 2 ? b2d : bd, bias);
		testlib_node(&b, "MatMul", "lin", "r,lw", "m");
		testlib_node(&b, "Add", "lin_bias", form == 1 ? "lb,m" : "m,lb", "s");
		finish_model(&b, "s");
		x = testlib_rand_vec(&b, TOK_N, -1, 1);
		ref = testlib_alloc(&b, 144 * sizeof *ref);
		ref_matmul(ref, x, a24, wt, wd, 2, 1);
		for (int k = 0; k < 144; k++)
			ref[k] += bias[form == 2 ? k % 72 : k % 6];
		check_both(&b, x, 2, ref, 72, form == 2 ? "Add" : "MatMul", form == 2 ? NULL : "Add",
			   form == 2 ? "linear, a 12 x 6 bias added" : "linear with its bias fused");
		fci_onnx_free(&b);
	}

	/* A 1-D B computed from the image is refused when the model opens. */
	static const int64_t v1[1] = { 240 };
	start_model(&b, 13, tok_x, 1, v1);
	testlib_node(&b, "MatMul", "mv", "r,r", "y");
	testlib_output(&b, "y");
	open_fails(&b, FC_ERR_UNSUPPORTED, "'mv'", NULL);
	fci_onnx_free(&b);

	/* Operands that do not fit: inner dims (2x12x10 by itself) and
	 * batch dims that do not broadcast (2x12x10 by 3x10x8). */
	start_model(&b, 13, tok_x, 3, tok_r);
	testlib_node(&b, "MatMul", "mm_bad", "r,r", "y");
	testlib_output(&b, "y");
	open_fails(&b, FC_ERR_INVALID, "'mm_bad'", "cannot multiply 2x12x10 by 2x12x10", NULL);
	fci_onnx_free(&b);
	static const int64_t tr3[3] = { 3, 10, 8 };
	start_model(&b, 13, tok_x, 3, tok_r);
	testlib_init_i64(&b, "kshape", 3, tr3);
	testlib_node(&b, "Reshape", "to_k", "x,kshape", "k");
	testlib_node(&b, "MatMul", "mm_bad", "r,k", "y");
	testlib_output(&b, "y");
	open_fails(&b, FC_ERR_INVALID, "'mm_bad'", "cannot multiply", NULL);
	fci_onnx_free(&b);
}

static void test_softmax(void **state)
{
	(void)state;
	fci_onnx b;
	Onnx__NodeProto *nd;
	float *x, *ref;
	static const int64_t r2[2] = { 2, 120 };

	/* axis -1 (opset 13's default), 2 spelled positive, and opset 11's
	 * default axis 1 on a 2-D input: all the last axis */
	for (int form = 0; form < 3; form++) {
		start_model(&b, form == 2 ? 11 : 13, tok_x, form == 2 ? 2 : 3, form == 2 ? r2 : tok_r);
		nd = testlib_node(&b, "Softmax", "sm", "r", "s");
		if (form == 1)
			testlib_attr_i(&b, nd, "axis", 2);
		finish_model(&b, "s");
		x = testlib_rand_vec(&b, TOK_N, -6, 6);
		ref = testlib_alloc(&b, TOK_N * sizeof *ref);
		ref_softmax(ref, x, form == 2 ? 2 : 24, form == 2 ? 120 : 10);
		check_both(&b, x, 2, ref, 120, "Softmax", NULL, form == 2 ? "softmax 2x120 opset 11" : "softmax 2x12x10");
		fci_onnx_free(&b);
	}

	/* Attention's core on tokens r: softmax(r rT / sqrt 10) r */
	float sq = sqrtf(10);
	start_model(&b, 13, tok_x, 3, tok_r);
	testlib_add_f32(&b, "sq", 0, NULL, &sq);
	nd = testlib_node(&b, "Transpose", "kt", "r", "rt");
	testlib_attr_ints(&b, nd, "perm", 3, 0LL, 2LL, 1LL);
	testlib_node(&b, "Div", "q_scale", "r,sq", "q");
	testlib_node(&b, "MatMul", "qk", "q,rt", "s");
	testlib_node(&b, "Softmax", "sm", "s", "p");
	testlib_node(&b, "MatMul", "pv", "p,r", "o");
	finish_model(&b, "o");
	static const int perm3[3] = { 0, 2, 1 };
	static const int64_t dt3[3] = { 2, 10, 12 }, ds[3] = { 2, 12, 12 };
	x = testlib_rand_vec(&b, TOK_N, -2, 2);
	float *t = testlib_alloc(&b, TOK_N * sizeof *t), *s = testlib_alloc(&b, 288 * sizeof *s);
	ref = testlib_alloc(&b, TOK_N * sizeof *ref);
	ref_permute(t, x, 3, tok_r, perm3);
	ref_matmul(s, x, tok_r, t, dt3, 3, 1 / sqrt(10));
	ref_softmax(s, s, 24, 12);
	ref_matmul(ref, s, ds, x, tok_r, 3, 1);
	check_both(&b, x, 2, ref, 120, "Softmax", "Div", "attention softmax(q kT / sqrt 10) v");
	fci_onnx_free(&b);

	/* Another axis than the last is refused when the model opens. */
	start_model(&b, 13, tok_x, 3, tok_r);
	nd = testlib_node(&b, "Softmax", "sm_bad", "r", "y");
	testlib_attr_i(&b, nd, "axis", 1);
	testlib_output(&b, "y");
	open_fails(&b, FC_ERR_UNSUPPORTED, "'sm_bad'", "last axis", NULL);
	fci_onnx_free(&b);
}

/* Slice of r (x as 2 x 3 x 4 x 10) with n starts, ends, axes into "s". */
static void slice_node(fci_onnx *b, const char *name, const char *out, int n, const int64_t *st, const int64_t *en,
		       const int64_t *ax)
{
	char ins[128], sn[40], en_[40], an[40];
	snprintf(sn, sizeof sn, "%s_st", name);
	snprintf(en_, sizeof en_, "%s_en", name);
	snprintf(an, sizeof an, "%s_ax", name);
	testlib_init_i64(b, sn, n, st);
	testlib_init_i64(b, en_, n, en);
	testlib_init_i64(b, an, n, ax);
	snprintf(ins, sizeof ins, "r,%s,%s,%s", sn, en_, an);
	testlib_node(b, "Slice", name, ins, out);
}

static void test_slice(void **state)
{
	(void)state;
	fci_onnx b;
	float *x, *ref;

	/* two axes: r[:, 1:3, :, 2:9] */
	static const int64_t st1[2] = { 1, 2 }, en1[2] = { 3, 9 }, ax1[2] = { 1, 3 };
	static const int64_t o1[4] = { 0, 1, 0, 2 }, y1[4] = { 2, 2, 4, 7 };
	start_model(&b, 13, tok_x, 4, tok_x);
	slice_node(&b, "sl", "s", 2, st1, en1, ax1);
	finish_model(&b, "s");
	x = testlib_rand_vec(&b, TOK_N, -1, 1);
	ref = testlib_alloc(&b, 112 * sizeof *ref);
	ref_box(ref, x, 4, tok_x, o1, y1);
	check_both(&b, x, 2, ref, 56, "Slice", NULL, "slice r[:, 1:3, :, 2:9]");
	fci_onnx_free(&b);

	/* a negative start and an end past the dim, axis -1: r[..., -4:] */
	static const int64_t st2[1] = { -4 }, en2[1] = { INT64_MAX }, ax2[1] = { -1 };
	static const int64_t o2[4] = { 0, 0, 0, 6 }, y2[4] = { 2, 3, 4, 4 };
	start_model(&b, 13, tok_x, 4, tok_x);
	slice_node(&b, "sl", "s", 1, st2, en2, ax2);
	finish_model(&b, "s");
	x = testlib_rand_vec(&b, TOK_N, -1, 1);
	ref = testlib_alloc(&b, 96 * sizeof *ref);
	ref_box(ref, x, 4, tok_x, o2, y2);
	check_both(&b, x, 2, ref, 48, "Slice", NULL, "slice r[..., -4:]");
	fci_onnx_free(&b);

	/* torch.roll(r, 3, dims=3) as Swin writes it: Concat(r[..., -3:],
	 * r[..., :-3]) */
	static const int64_t sa[1] = { -3 }, ea[1] = { 10 }, sb[1] = { 0 }, eb[1] = { -3 }, ax3[1] = { 3 };
	start_model(&b, 13, tok_x, 4, tok_x);
	slice_node(&b, "tail", "ta", 1, sa, ea, ax3);
	slice_node(&b, "head", "hd", 1, sb, eb, ax3);
	Onnx__NodeProto *nd = testlib_node(&b, "Concat", "roll", "ta,hd", "s");
	testlib_attr_i(&b, nd, "axis", 3);
	finish_model(&b, "s");
	x = testlib_rand_vec(&b, TOK_N, -1, 1);
	ref = testlib_alloc(&b, TOK_N * sizeof *ref);
	for (int i = 0; i < TOK_N; i++)
		ref[i] = x[i / 10 * 10 + (i % 10 + 7) % 10];
	check_both(&b, x, 2, ref, 120, "Concat", NULL, "roll by 3 (slices and concat)");
	fci_onnx_free(&b);

	/* Swin's patch merging: r[:, :, 1::2, 0::2] (steps on two axes) */
	static const int64_t ss[2] = { 1, 0 }, es[2] = { INT64_MAX, INT64_MAX }, as[2] = { 2, 3 }, two[2] = { 2, 2 };
	start_model(&b, 13, tok_x, 4, tok_x);
	testlib_init_i64(&b, "sl_st", 2, ss);
	testlib_init_i64(&b, "sl_en", 2, es);
	testlib_init_i64(&b, "sl_ax", 2, as);
	testlib_init_i64(&b, "sl_step", 2, two);
	testlib_node(&b, "Slice", "merge", "r,sl_st,sl_en,sl_ax,sl_step", "s");
	finish_model(&b, "s");
	x = testlib_rand_vec(&b, TOK_N, -1, 1);
	ref = testlib_alloc(&b, 60 * sizeof *ref);
	for (int i = 0; i < 60; i++) {
		int w = i % 5, h = i / 5 % 2, nc = i / 10;
		ref[i] = x[nc * 40 + (1 + 2 * h) * 10 + 2 * w];
	}
	check_both(&b, x, 2, ref, 30, "Slice", NULL, "slice r[:, :, 1::2, 0::2]");
	fci_onnx_free(&b);

	/* Negative steps are refused when the model opens. */
	static const int64_t back[1] = { -1 }, s9[1] = { 9 }, e0[1] = { 0 };
	start_model(&b, 13, tok_x, 4, tok_x);
	testlib_init_i64(&b, "sl_st", 1, s9);
	testlib_init_i64(&b, "sl_en", 1, e0);
	testlib_init_i64(&b, "sl_ax", 1, ax3);
	testlib_init_i64(&b, "sl_step", 1, back);
	testlib_node(&b, "Slice", "sl_bad", "r,sl_st,sl_en,sl_ax,sl_step", "y");
	testlib_output(&b, "y");
	open_fails(&b, FC_ERR_UNSUPPORTED, "'sl_bad'", "step -1", "positive steps", NULL);
	fci_onnx_free(&b);
}

static void test_gather(void **state)
{
	(void)state;
	fci_onnx b;
	Onnx__NodeProto *nd;
	float *x, *ref;
	/* x[:, 0] (ViT's class token), x[:, :, -1] and x[:, [5]] of r */
	static const struct {
		int axis, rank1;
		int64_t index, off[3], yd[3];
		size_t D;
	} c[] = {
		{ 1, 0, 0, { 0, 0, 0 }, { 2, 1, 10 }, 10 },
		{ 2, 0, -1, { 0, 0, 9 }, { 2, 12, 1 }, 12 },
		{ 1, 1, 5, { 0, 5, 0 }, { 2, 1, 10 }, 10 },
	};
	for (size_t k = 0; k < sizeof c / sizeof c[0]; k++) {
		start_model(&b, 13, tok_x, 3, tok_r);
		if (c[k].rank1)
			testlib_init_i64(&b, "ix", 1, &c[k].index);
		else
			init_i64_scalar(&b, "ix", c[k].index);
		nd = testlib_node(&b, "Gather", "tok", "r,ix", "g");
		testlib_attr_i(&b, nd, "axis", c[k].axis);
		finish_model(&b, "g");
		x = testlib_rand_vec(&b, TOK_N, -1, 1);
		ref = testlib_alloc(&b, 2 * c[k].D * sizeof *ref);
		ref_box(ref, x, 3, tok_r, c[k].off, c[k].yd);
		check_both(&b, x, 2, ref, c[k].D, "Gather", NULL, "gather of one index");
		fci_onnx_free(&b);
	}

	/* Two indices, or one out of range, are refused when the model opens. */
	static const int64_t two[2] = { 0, 1 };
	start_model(&b, 13, tok_x, 3, tok_r);
	testlib_init_i64(&b, "ix", 2, two);
	testlib_node(&b, "Gather", "g_bad", "r,ix", "y");
	testlib_output(&b, "y");
	open_fails(&b, FC_ERR_UNSUPPORTED, "'g_bad'", "single index", NULL);
	fci_onnx_free(&b);
	start_model(&b, 13, tok_x, 3, tok_r);
	init_i64_scalar(&b, "ix", 12);
	nd = testlib_node(&b, "Gather", "g_bad", "r,ix", "y");
	testlib_attr_i(&b, nd, "axis", 1);
	testlib_output(&b, "y");
	open_fails(&b, FC_ERR_INVALID, "'g_bad'", "out of range", NULL);
	fci_onnx_free(&b);
}

/* ReduceMean over one axis that is not the last: the patch tokens' mean
 * (x[:, 1:].mean(1), keepdims 0 and 1) and the mean over the channels of
 * a 4-D map, run as a matmul by ones (oneDNN 2.6.3's reduction has only
 * ref code for them), never as ref. */
static void test_mean_inner_axis(void **state)
{
	(void)state;
	fci_onnx b;
	Onnx__NodeProto *nd;
	for (int form = 0; form < 3; form++) {
		start_model(&b, 13, tok_x, 3, tok_r);
		const char *in = "r";
		if (form < 2) {
			testlib_init_i64(&b, "st", 1, (const int64_t[]){ 1 });
			testlib_init_i64(&b, "en", 1, (const int64_t[]){ 12 });
			testlib_init_i64(&b, "ax", 1, (const int64_t[]){ 1 });
			testlib_node(&b, "Slice", "patches", "r,st,en,ax", "p");
			in = "p";
		} else {
			in = "x";
		}
		nd = testlib_node(&b, "ReduceMean", "mean", in, "m");
		testlib_attr_ints(&b, nd, "axes", 1, 1LL);
		testlib_attr_i(&b, nd, "keepdims", form == 1);
		finish_model(&b, "m");
		float *x = testlib_rand_vec(&b, TOK_N, -1, 1), *ref = testlib_alloc(&b, 2 * 40 * sizeof *ref);
		/* tokens: 2 x 12 x 10, the mean of tokens 1..11; the map: 2 x 3 x 4 x 10
		 * (tok_x), the mean over its 3 channels */
		size_t D = form < 2 ? 10 : 40;
		for (int n = 0; n < 2; n++)
			for (size_t k = 0; k < D; k++) {
				double acc = 0;
				int from = form < 2 ? 1 : 0, to = form < 2 ? 12 : 3;
				for (int t = from; t < to; t++)
					acc += x[(size_t)n * 120 + (size_t)t * D + k];
				ref[(size_t)n * D + k] = (float)(acc / (to - from));
			}
		check_both(&b, x, 2, ref, D, "ReduceMean", NULL,
			   form == 0 ? "mean of the patch tokens" : form == 1 ? "mean of the patch tokens, keepdims"
									 : "mean over the channels of a 4-D map");
		fci_onnx_free(&b);
	}
}

static void test_concat_const(void **state)
{
	(void)state;
	fci_onnx b;
	Onnx__NodeProto *nd;
	float *x, *ref;

	/* ViT's tokens: Concat(class token [2,1,10], r, axis 1) + positions [1,13,10] */
	static const int64_t cd[3] = { 2, 1, 10 }, pd[3] = { 1, 13, 10 };
	start_model(&b, 13, tok_x, 3, tok_r);
	float *cls = testlib_rand_vec(&b, 20, -1, 1), *pos = testlib_rand_vec(&b, 130, -1, 1);
	testlib_add_f32(&b, "cls", 3, cd, cls);
	testlib_add_f32(&b, "pos", 3, pd, pos);
	nd = testlib_node(&b, "Concat", "cat", "cls,r", "c");
	testlib_attr_i(&b, nd, "axis", 1);
	testlib_node(&b, "Add", "add_pos", "c,pos", "s");
	finish_model(&b, "s");
	x = testlib_rand_vec(&b, TOK_N, -1, 1);
	ref = testlib_alloc(&b, 260 * sizeof *ref);
	for (int n = 0; n < 2; n++)
		for (int t = 0; t < 13; t++)
			for (int d = 0; d < 10; d++)
				ref[(n * 13 + t) * 10 + d] =
					(t ? x[(n * 12 + t - 1) * 10 + d] : cls[n * 10 + d]) + pos[t * 10 + d];
	check_both(&b, x, 2, ref, 130, "Concat", NULL, "concat class token, r; add positions");
	fci_onnx_free(&b);

	/* a constant after the activation on the last axis */
	static const int64_t kd[3] = { 2, 12, 3 };
	start_model(&b, 13, tok_x, 3, tok_r);
	float *k3 = testlib_rand_vec(&b, 72, -1, 1);
	testlib_add_f32(&b, "k3", 3, kd, k3);
	nd = testlib_node(&b, "Concat", "cat", "r,k3", "s");
	testlib_attr_i(&b, nd, "axis", -1);
	finish_model(&b, "s");
	x = testlib_rand_vec(&b, TOK_N, -1, 1);
	ref = testlib_alloc(&b, 312 * sizeof *ref);
	for (int row = 0; row < 24; row++)
		for (int d = 0; d < 13; d++)
			ref[row * 13 + d] = d < 10 ? x[row * 10 + d] : k3[row * 3 + d - 10];
	check_both(&b, x, 2, ref, 156, "Concat", NULL, "concat r, constant on the last axis");
	fci_onnx_free(&b);
}

/* Swin's shapes: a 6-D Transpose (window partition) and a 5-D Add of a
 * broadcast constant (the attention mask). */
static void test_swin_shapes(void **state)
{
	(void)state;
	fci_onnx b;
	Onnx__NodeProto *nd;
	float *x, *ref;

	static const int64_t r6[6] = { 2, 3, 2, 2, 2, 5 };
	static const int p6[6] = { 0, 1, 3, 2, 5, 4 };
	start_model(&b, 13, tok_x, 6, r6);
	nd = testlib_node(&b, "Transpose", "win", "r", "s");
	testlib_attr_ints(&b, nd, "perm", 6, 0LL, 1LL, 3LL, 2LL, 5LL, 4LL);
	finish_model(&b, "s");
	x = testlib_rand_vec(&b, TOK_N, -1, 1);
	ref = testlib_alloc(&b, TOK_N * sizeof *ref);
	ref_permute(ref, x, 6, r6, p6);
	check_both(&b, x, 2, ref, 120, "Transpose", NULL, "transpose 6-D");
	fci_onnx_free(&b);

	static const int64_t r5[5] = { 2, 3, 2, 2, 10 }, md[4] = { 3, 1, 2, 10 };
	start_model(&b, 13, tok_x, 5, r5);
	float *mask = testlib_rand_vec(&b, 60, -1, 1);
	testlib_add_f32(&b, "mask", 4, md, mask);
	testlib_node(&b, "Add", "add_mask", "r,mask", "s");
	finish_model(&b, "s");
	x = testlib_rand_vec(&b, TOK_N, -1, 1);
	ref = testlib_alloc(&b, TOK_N * sizeof *ref);
	for (int i = 0; i < TOK_N; i++) {
		int w = i % 10, k = i / 10 % 2, h = i / 40 % 3;
		ref[i] = x[i] + mask[(h * 2 + k) * 10 + w];
	}
	check_both(&b, x, 2, ref, 120, "Add", NULL, "add 5-D + broadcast constant mask");
	fci_onnx_free(&b);
}

int main(void)
{
	testlib_seed("test_transformer_ops");
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_layernorm),
		cmocka_unit_test(test_layernorm_hostile),
		cmocka_unit_test(test_gelu),
		cmocka_unit_test(test_gelu_near_misses),
		cmocka_unit_test(test_transpose),
		cmocka_unit_test(test_transpose_hostile),
		cmocka_unit_test(test_matmul_act),
		cmocka_unit_test(test_softmax),
		cmocka_unit_test(test_slice),
		cmocka_unit_test(test_gather),
		cmocka_unit_test(test_concat_const),
		cmocka_unit_test(test_mean_inner_axis),
		cmocka_unit_test(test_swin_shapes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
