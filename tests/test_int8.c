/*
 * test_int8.c - the int8 engine (extract/engine_int8.c) and calibration
 * (extract/calibrate.c):
 *  - one quantised Conv (u8 source after a ReLU-like range, s8 source,
 *    depthwise and strided, with and without bias and a fused ReLU), a
 *    Gemm, and a residual block (conv, conv, Add, Relu: the sum post-op on
 *    f32) against naive C loops that quantise the same way (u8/s8 codes
 *    round(x / scale), s8 weights per output channel, integer sums,
 *    dequantised) within INT8_TOL, and against the f32 result within
 *    F32_GAP (what 8 bits cost on these sizes);
 *  - a tensor without a range stays f32 (and gives the f32 numbers);
 *  - partial batches (fc_engine_add_batch) of a residual CNN with every
 *    int8 form give the rows of a full batch;
 *  - calibration: the same dataset gives the same table twice; percentile
 *    ranges lie within the max ranges; the table is in the descriptor and
 *    the id (same table, same id; another table, another id; f32 another);
 *    a descriptor reopens to the same id;
 *  - transformers: a token block (bias and residual fused) against naive
 *    loops; the ViT, DINOv2 and CLIP fixtures calibrated on photos against
 *    f32 (projections int8, attention f32);
 *  - refusals: int8 without a table, --calibrate 0, a
 *    dataset whose images cannot be read.
 * Random data comes from one seed, printed at the start; FC_SEED replays.
 * The CPU must have VNNI or AMX: elsewhere the whole file is a skip.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dnnl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "featcache/engine.h"
#include "featcache/extract.h"
#include "featcache/image.h"
#include "featcache/model.h"
#include "tests/testlib.h"

#define N_IMG 2

/* The engine against the naive int8 loops: both quantise identically, so
 * only summation order (and a rare rounding tie) differ. */
static const double INT8_TOL = 1e-4;
/* int8 against f32: 8-bit codes on random data of these sizes. */
static const double F32_GAP = 3e-2;

static char fixtures[4096];

/* ---- naive references ---- */

/* The code of x at scale s: u8 (0..255) or s8 (-128..127), as oneDNN's
 * scaled reorder rounds (to nearest even, x times 1/s). */
static float code(float x, float s, int u8)
{
	float q = nearbyintf(x * (1.0f / s));
	float lo = u8 ? 0.0f : -128.0f, hi = u8 ? 255.0f : 127.0f;
	return q < lo ? lo : q > hi ? hi : q;
}

/* Per output channel o of n weights: scale max|w| / 127 and the s8 codes. */
static void quant_w(const float *w, float *q, float *ws, int oc, int n)
{
	for (int o = 0; o < oc; o++) {
		float m = 0;
		for (int k = 0; k < n; k++)
			m = fmaxf(m, fabsf(w[o * n + k]));
		ws[o] = m > 0 ? m / 127.0f : 1.0f;
		for (int k = 0; k < n; k++) {
			float c = nearbyintf(w[o * n + k] / ws[o]);
			q[o * n + k] = c > 127 ? 127 : c < -127 ? -127 : c;
		}
	}
}

struct conv_case {
	int c, oc, k, stride, pad, group, h, w, relu, bias;
	float xlo, xhi; /* the input's range, and the table's */
};

static int out_side(int in, int k, int s, int p)
{
	return (in + 2 * p - k) / s + 1;
}

/* y (N x OC x OH x OW) = conv(x) + bias, ReLU'd if relu. With sx > 0 both
 * operands are quantised first (sx the input's scale, u8 its type) and the
 * sums are integers, dequantised by sx x the channel's weight scale. */
static void ref_conv(const struct conv_case *cc, const float *x, const float *w, const float *bias, float *y,
		     float sx, int u8)
{
	int cg = cc->c / cc->group, og = cc->oc / cc->group, per = cg * cc->k * cc->k;
	int oh = out_side(cc->h, cc->k, cc->stride, cc->pad), ow = out_side(cc->w, cc->k, cc->stride, cc->pad);
	float *wq = malloc((size_t)cc->oc * per * sizeof *wq), *ws = malloc((size_t)cc->oc * sizeof *ws);
	assert_non_null(wq);
	assert_non_null(ws);
	if (sx > 0)
		quant_w(w, wq, ws, cc->oc, per);
	for (int n = 0; n < N_IMG; n++)
		for (int o = 0; o < cc->oc; o++)
			for (int oy = 0; oy < oh; oy++)
				for (int ox = 0; ox < ow; ox++) {
					double acc = 0;
					int g = o / og;
					for (int ci = 0; ci < cg; ci++)
						for (int ky = 0; ky < cc->k; ky++)
							for (int kx = 0; kx < cc->k; kx++) {
								int iy = oy * cc->stride - cc->pad + ky;
								int ix = ox * cc->stride - cc->pad + kx;
								if (iy < 0 || iy >= cc->h || ix < 0 || ix >= cc->w)
									continue;
								float xv = x[((n * cc->c + g * cg + ci) * cc->h + iy) * cc->w + ix];
								int wi = o * per + (ci * cc->k + ky) * cc->k + kx;
								if (sx > 0)
									acc += (double)code(xv, sx, u8) * wq[wi];
								else
									acc += (double)xv * w[wi];
							}
					double v = (sx > 0 ? acc * sx * ws[o] : acc) + (bias ? bias[o] : 0);
					if (cc->relu && v < 0)
						v = 0;
					y[((n * cc->oc + o) * oh + oy) * ow + ox] = (float)v;
				}
	free(wq);
	free(ws);
}

/* The engine's scale and type for a range (engine_int8.c's rule). */
static float scale_of(float lo, float hi, int *u8)
{
	*u8 = lo >= 0;
	return lo >= 0 ? hi / 255.0f : fmaxf(-lo, hi) / 127.0f;
}

/* ---- engines ---- */

static void open_engine(const fci_onnx *b, int prec, const fc_calib *calib, fc_model **m, fc_engine **e)
{
	char err[FC_ERRLEN];
	assert_int_equal(testlib_open(b, m, err), 0);
	assert_int_equal(fc_model_cut(*m, "y"), 0);
	fc_engine_opts o = { .batch = N_IMG, .precision = prec, .calib = calib };
	int rc = fc_engine_open(e, *m, &o, err, sizeof err);
	if (rc)
		fail_msg("engine open failed: %s", err);
}

/* Run x through the model in prec, count its int8 primitives whose op is
 * `op` into *n_int8 (and fail on any ref kernel), out the embedding. */
static void run_engine(const fci_onnx *b, int prec, const fc_calib *calib, const float *x, float *out, size_t dim,
		       const char *op, int *n_int8)
{
	fc_model *m;
	fc_engine *e;
	open_engine(b, prec, calib, &m, &e);
	assert_int_equal(fc_engine_dim(e), dim);
	*n_int8 = 0;
	for (int i = 0; i < fc_engine_n_prims(e); i++) {
		const char *info = fc_engine_prim_info(e, i), *p = fc_engine_prim_precision(e, i);
		char pat[64];
		print_message("#   %-4s %s\n", p, info);
		if (strstr(info, ": ref"))
			fail_msg("a reference kernel runs: %s", info);
		snprintf(pat, sizeof pat, " %s: ", op);
		*n_int8 += strcmp(p, "int8") == 0 && strstr(info, pat) != NULL;
	}
	assert_int_equal(fc_engine_run(e, out, x, N_IMG), 0);
	fc_engine_free(e);
	fc_model_free(m);
}

static fc_calib *table(int n, const char *const *names, const float *lo, const float *hi)
{
	fc_calib *c = calloc(1, sizeof *c);
	assert_non_null(c);
	c->r = calloc((size_t)n + 1, sizeof *c->r);
	assert_non_null(c->r);
	for (int k = 0; k < n; k++) {
		c->r[k].tensor = strdup(names[k]);
		c->r[k].lo = lo[k], c->r[k].hi = hi[k];
	}
	c->n = (size_t)n;
	c->method = strdup("max");
	c->images = 1;
	return c;
}

/* ---- one convolution ---- */

static void conv_model(fci_onnx *b, const struct conv_case *cc, const float *w, const float *bias)
{
	int64_t xd[4] = { N_IMG, cc->c, cc->h, cc->w }, wd[4] = { cc->oc, cc->c / cc->group, cc->k, cc->k };
	int64_t bd[1] = { cc->oc };
	testlib_input(b, "x", 4, xd);
	testlib_add_f32(b, "w", 4, wd, w);
	if (bias)
		testlib_add_f32(b, "b", 1, bd, bias);
	Onnx__NodeProto *n = testlib_node(b, "Conv", "conv", bias ? "x,w,b" : "x,w", "c");
	testlib_attr_ints(b, n, "kernel_shape", 2, (long long)cc->k, (long long)cc->k);
	testlib_attr_ints(b, n, "strides", 2, (long long)cc->stride, (long long)cc->stride);
	testlib_attr_ints(b, n, "pads", 4, (long long)cc->pad, (long long)cc->pad, (long long)cc->pad,
			  (long long)cc->pad);
	testlib_attr_i(b, n, "group", cc->group);
	if (cc->relu)
		testlib_node(b, "Relu", "relu", "c", "r");
	testlib_node(b, "Flatten", "flat", cc->relu ? "r" : "c", "y");
	testlib_output(b, "y");
}

static void conv_case(const struct conv_case *cc, const char *what)
{
	fci_onnx b;
	testlib_model_init(&b, 13);
	size_t nx = (size_t)N_IMG * cc->c * cc->h * cc->w, nw = (size_t)cc->oc * (cc->c / cc->group) * cc->k * cc->k;
	int oh = out_side(cc->h, cc->k, cc->stride, cc->pad), ow = out_side(cc->w, cc->k, cc->stride, cc->pad);
	size_t dim = (size_t)cc->oc * oh * ow;
	float *x = testlib_rand_vec(&b, nx, cc->xlo, cc->xhi), *w = testlib_rand_vec(&b, nw, -1, 1);
	float *bias = cc->bias ? testlib_rand_vec(&b, (size_t)cc->oc, -2, 2) : NULL;
	float *got = calloc(N_IMG * dim, sizeof *got), *ref = calloc(N_IMG * dim, sizeof *ref);
	float *f32 = calloc(N_IMG * dim, sizeof *f32);
	assert_non_null(got);
	assert_non_null(ref);
	assert_non_null(f32);
	conv_model(&b, cc, w, bias);
	const char *names[1] = { "x" };
	fc_calib *c = table(1, names, &cc->xlo, &cc->xhi);
	int u8, n_int8;
	float sx = scale_of(cc->xlo, cc->xhi, &u8);

	run_engine(&b, FC_PREC_INT8, c, x, got, dim, "Conv", &n_int8);
	assert_int_equal(n_int8, 1);
	ref_conv(cc, x, w, bias, ref, sx, u8);
	double e_int8 = testlib_rel_err(got, ref, N_IMG * dim);
	ref_conv(cc, x, w, bias, f32, 0, 0);
	double e_f32 = testlib_rel_err(got, f32, N_IMG * dim);
	print_message("# %s (%s source): vs naive int8 %.2e, vs f32 %.2e\n", what, u8 ? "u8" : "s8", e_int8, e_f32);
	assert_true(e_int8 <= INT8_TOL);
	assert_true(e_f32 <= F32_GAP);
	assert_true(e_f32 > 0); /* it did quantise */
	fc_calib_free(c);
	free(got);
	free(ref);
	free(f32);
	fci_onnx_free(&b);
}

static void test_conv_u8(void **state)
{
	(void)state;
	struct conv_case cc = { .c = 16, .oc = 32, .k = 3, .stride = 1, .pad = 1, .group = 1, .h = 9, .w = 7,
				.relu = 1, .bias = 1, .xlo = 0, .xhi = 2 };
	conv_case(&cc, "3x3 conv, bias, relu");
}

static void test_conv_s8(void **state)
{
	(void)state;
	struct conv_case cc = { .c = 24, .oc = 16, .k = 1, .stride = 1, .pad = 0, .group = 1, .h = 5, .w = 6,
				.relu = 0, .bias = 1, .xlo = -1.5f, .xhi = 1 };
	conv_case(&cc, "1x1 conv, bias");
	struct conv_case c2 = { .c = 8, .oc = 16, .k = 3, .stride = 2, .pad = 1, .group = 1, .h = 11, .w = 10,
				.relu = 1, .bias = 0, .xlo = -3, .xhi = 3 };
	conv_case(&c2, "3x3 stride 2, no bias, relu");
}

static void test_conv_depthwise(void **state)
{
	(void)state;
	struct conv_case cc = { .c = 32, .oc = 32, .k = 3, .stride = 2, .pad = 1, .group = 32, .h = 12, .w = 12,
				.relu = 1, .bias = 1, .xlo = 0, .xhi = 4 };
	conv_case(&cc, "depthwise 3x3 stride 2");
}

/* A tensor the table lacks stays f32, with the f32 numbers. */
static void test_no_range_stays_f32(void **state)
{
	(void)state;
	struct conv_case cc = { .c = 16, .oc = 16, .k = 3, .stride = 1, .pad = 1, .group = 1, .h = 6, .w = 6,
				.relu = 1, .bias = 1, .xlo = -1, .xhi = 1 };
	fci_onnx b;
	testlib_model_init(&b, 13);
	size_t nx = (size_t)N_IMG * 16 * 36, dim = 16 * 36;
	float *x = testlib_rand_vec(&b, nx, -1, 1), *w = testlib_rand_vec(&b, 16 * 16 * 9, -1, 1);
	float *bias = testlib_rand_vec(&b, 16, -1, 1);
	float got[N_IMG * 16 * 36], ref[N_IMG * 16 * 36];
	conv_model(&b, &cc, w, bias);
	const char *names[1] = { "not_x" };
	float lo = -1, hi = 1;
	fc_calib *c = table(1, names, &lo, &hi);
	int n_int8;
	run_engine(&b, FC_PREC_INT8, c, x, got, dim, "Conv", &n_int8);
	assert_int_equal(n_int8, 0);
	ref_conv(&cc, x, w, bias, ref, 0, 0);
	double err = testlib_rel_err(got, ref, N_IMG * dim);
	print_message("# no range: f32 conv, rel err %.2e\n", err);
	assert_true(err <= 1e-5);
	fc_calib_free(c);
	fci_onnx_free(&b);
}

/* ---- Gemm ---- */

static void test_gemm(void **state)
{
	(void)state;
	enum { K = 40, NO = 24 };
	fci_onnx b;
	testlib_model_init(&b, 13);
	int64_t xd[4] = { N_IMG, K, 1, 1 }, wd[2] = { NO, K }, bd[1] = { NO };
	float *x = testlib_rand_vec(&b, N_IMG * K, 0, 3), *w = testlib_rand_vec(&b, NO * K, -0.5f, 0.5f);
	float *bias = testlib_rand_vec(&b, NO, -1, 1);
	testlib_input(&b, "x", 4, xd);
	testlib_add_f32(&b, "w", 2, wd, w);
	testlib_add_f32(&b, "bias", 1, bd, bias);
	testlib_node(&b, "Flatten", "flat", "x", "f");
	Onnx__NodeProto *n = testlib_node(&b, "Gemm", "fc", "f,w,bias", "g");
	testlib_attr_i(&b, n, "transB", 1);
	testlib_node(&b, "Relu", "relu", "g", "y");
	testlib_output(&b, "y");
	const char *names[1] = { "f" };
	float lo = 0, hi = 3;
	fc_calib *c = table(1, names, &lo, &hi);
	float got[N_IMG * NO], ref[N_IMG * NO], f32[N_IMG * NO], wq[NO * K], ws[NO];
	int n_int8, u8;
	float sx = scale_of(lo, hi, &u8);
	run_engine(&b, FC_PREC_INT8, c, x, got, NO, "Gemm", &n_int8);
	assert_int_equal(n_int8, 1);
	quant_w(w, wq, ws, NO, K);
	for (int i = 0; i < N_IMG; i++)
		for (int o = 0; o < NO; o++) {
			double acc = 0, af = 0;
			for (int k = 0; k < K; k++) {
				acc += (double)code(x[i * K + k], sx, u8) * wq[o * K + k];
				af += (double)x[i * K + k] * w[o * K + k];
			}
			ref[i * NO + o] = fmaxf(0, (float)(acc * sx * ws[o] + bias[o]));
			f32[i * NO + o] = fmaxf(0, (float)(af + bias[o]));
		}
	double e8 = testlib_rel_err(got, ref, N_IMG * NO), ef = testlib_rel_err(got, f32, N_IMG * NO);
	print_message("# gemm (u8 source): vs naive int8 %.2e, vs f32 %.2e\n", e8, ef);
	assert_true(e8 <= INT8_TOL);
	assert_true(ef <= F32_GAP);
	fc_calib_free(c);
	fci_onnx_free(&b);
}

/* ---- a residual block ---- */

/* x -> conv1 + relu (r1) -> conv2 (c2); t = relu(c2 + r1): conv2 carries
 * the Add as a sum post-op and the Relu after it. r1 is read by conv2 and
 * the Add only, so conv1 writes u8 codes; conv2's sum reads them. With
 * tail, a conv3 (+ relu) reads t alone, so conv2 writes codes as well (its
 * sum then adds u8 codes into a u8 destination); without, t is the cut
 * and conv2 writes f32, the residual dequantised into it. Requantisation
 * ties may round differently from the reference's, hence RES_TOL. */
static void residual_case(int tail)
{
	enum { C = 16, H = 6, W = 5, DIM = C * H * W };
	const double RES_TOL = 2e-3;
	fci_onnx b;
	testlib_model_init(&b, 13);
	struct conv_case cc = { .c = C, .oc = C, .k = 3, .stride = 1, .pad = 1, .group = 1, .h = H, .w = W,
				.relu = 1, .bias = 1, .xlo = -2, .xhi = 2 };
	int64_t xd[4] = { N_IMG, C, H, W }, wd[4] = { C, C, 3, 3 }, bd[1] = { C };
	float *x = testlib_rand_vec(&b, N_IMG * DIM, -2, 2), *w[3], *bs[3];
	for (int k = 0; k < 3; k++) {
		w[k] = testlib_rand_vec(&b, C * C * 9, -0.3f, 0.3f);
		bs[k] = testlib_rand_vec(&b, C, -0.5f, 0.5f);
	}
	testlib_input(&b, "x", 4, xd);
	const char *convs[3][5] = { { "conv1", "x,w1,b1", "c1", "w1", "b1" },
				    { "conv2", "r1,w2,b2", "c2", "w2", "b2" },
				    { "conv3", "t,w3,b3", "c3", "w3", "b3" } };
	for (int k = 0; k < 2 + tail; k++) {
		testlib_add_f32(&b, convs[k][3], 4, wd, w[k]);
		testlib_add_f32(&b, convs[k][4], 1, bd, bs[k]);
		Onnx__NodeProto *n = testlib_node(&b, "Conv", convs[k][0], convs[k][1], convs[k][2]);
		testlib_attr_ints(&b, n, "kernel_shape", 2, 3LL, 3LL);
		testlib_attr_ints(&b, n, "pads", 4, 1LL, 1LL, 1LL, 1LL);
	}
	testlib_node(&b, "Relu", "relu1", "c1", "r1");
	testlib_node(&b, "Add", "add", "c2,r1", "s");
	testlib_node(&b, "Relu", "relu2", "s", "t");
	if (tail)
		testlib_node(&b, "Relu", "relu3", "c3", "r3");
	testlib_node(&b, "Flatten", "flat", tail ? "r3" : "t", "y");
	testlib_output(&b, "y");

	/* the reference, in int8 (each tensor's codes as the engine keeps them) and in f32 */
	float r1[N_IMG * DIM], c2[N_IMG * DIM], t[N_IMG * DIM], ref[N_IMG * DIM], got[N_IMG * DIM];
	float r1f[N_IMG * DIM], tf[N_IMG * DIM], yf[N_IMG * DIM];
	int u8x, u8r;
	float sx = scale_of(-2, 2, &u8x), r1max = 0, tmax = 0;
	ref_conv(&cc, x, w[0], bs[0], r1, sx, u8x);
	for (int i = 0; i < N_IMG * DIM; i++)
		r1max = fmaxf(r1max, r1[i]);
	float sr = scale_of(0, r1max, &u8r);
	cc.relu = 0;
	ref_conv(&cc, r1, w[1], bs[1], c2, sr, u8r);
	for (int i = 0; i < N_IMG * DIM; i++) {
		t[i] = fmaxf(0, c2[i] + code(r1[i], sr, 1) * sr);
		tmax = fmaxf(tmax, t[i]);
	}
	float st = scale_of(0, tmax, &u8r);
	cc.relu = 1;
	if (tail)
		ref_conv(&cc, t, w[2], bs[2], ref, st, 1);
	else
		memcpy(ref, t, sizeof ref);
	ref_conv(&cc, x, w[0], bs[0], r1f, 0, 0);
	cc.relu = 0;
	ref_conv(&cc, r1f, w[1], bs[1], tf, 0, 0);
	for (int i = 0; i < N_IMG * DIM; i++)
		tf[i] = fmaxf(0, tf[i] + r1f[i]);
	cc.relu = 1;
	if (tail)
		ref_conv(&cc, tf, w[2], bs[2], yf, 0, 0);
	else
		memcpy(yf, tf, sizeof yf);

	const char *names[3] = { "x", "r1", "t" };
	float lo[3] = { -2, 0, 0 }, hi[3] = { 2, r1max, tmax };
	fc_calib *c = table(2 + tail, names, lo, hi);
	fc_model *m;
	fc_engine *e;
	open_engine(&b, FC_PREC_INT8, c, &m, &e);
	int n_quant = 0, n_deq = 0, n_int8 = 0;
	for (int i = 0; i < fc_engine_n_prims(e); i++) {
		const char *info = fc_engine_prim_info(e, i);
		print_message("#   %-4s %s\n", fc_engine_prim_precision(e, i), info);
		n_quant += strstr(info, " Quantize: ") != NULL;
		n_deq += strstr(info, " Dequantize: ") != NULL;
		n_int8 += strstr(info, " Conv: ") && !strcmp(fc_engine_prim_precision(e, i), "int8");
		if (strstr(info, ": ref"))
			fail_msg("a reference kernel runs: %s", info);
	}
	assert_int_equal(n_quant, 1);        /* x only */
	assert_int_equal(n_deq, tail ? 0 : 1); /* r1 into conv2's f32 output */
	assert_int_equal(n_int8, 2 + tail);
	assert_int_equal(fc_engine_run(e, got, x, N_IMG), 0);
	double e8 = testlib_rel_err(got, ref, N_IMG * DIM), ef = testlib_rel_err(got, yf, N_IMG * DIM);
	print_message("# residual block%s: vs naive int8 %.2e, vs f32 %.2e\n", tail ? " + conv" : "", e8, ef);
	assert_true(e8 <= RES_TOL);
	assert_true(ef <= F32_GAP);
	fc_engine_free(e);
	fc_model_free(m);
	fc_calib_free(c);
	fci_onnx_free(&b);
}

static void test_residual(void **state)
{
	(void)state;
	residual_case(0);
	residual_case(1);
}

/* x -> conv1 + relu (r1) -> conv2 (groups g2) + relu -> y: r1 is read by
 * conv2 alone, so conv1 writes u8 codes at r1's scale (a linear post-op
 * after the ReLU) and conv2 reads them without a Quantize step. Ties in
 * the requantisation may round differently from the reference's, hence
 * CHAIN_TOL. */
static void chain_case(int g2)
{
	enum { C = 16, H = 7, W = 6, DIM = C * H * W };
	const double CHAIN_TOL = 2e-3;
	fci_onnx b;
	testlib_model_init(&b, 13);
	struct conv_case c1 = { .c = C, .oc = C, .k = 3, .stride = 1, .pad = 1, .group = 1, .h = H, .w = W,
				.relu = 1, .bias = 1 };
	struct conv_case c2 = c1;
	c2.group = g2;
	int64_t xd[4] = { N_IMG, C, H, W }, w1d[4] = { C, C, 3, 3 }, w2d[4] = { C, C / g2, 3, 3 }, bd[1] = { C };
	float *x = testlib_rand_vec(&b, N_IMG * DIM, -2, 2), *w1 = testlib_rand_vec(&b, C * C * 9, -0.3f, 0.3f);
	float *w2 = testlib_rand_vec(&b, C * (C / g2) * 9, -0.3f, 0.3f), *b1 = testlib_rand_vec(&b, C, -0.5f, 0.5f);
	float *b2 = testlib_rand_vec(&b, C, -0.5f, 0.5f);
	testlib_input(&b, "x", 4, xd);
	testlib_add_f32(&b, "w1", 4, w1d, w1);
	testlib_add_f32(&b, "w2", 4, w2d, w2);
	testlib_add_f32(&b, "b1", 1, bd, b1);
	testlib_add_f32(&b, "b2", 1, bd, b2);
	testlib_conv3x3(&b, "conv1", "x,w1,b1", "c1", 1);
	testlib_conv3x3(&b, "conv2", "r1,w2,b2", "c2", g2);
	testlib_node(&b, "Relu", "relu1", "c1", "r1");
	testlib_node(&b, "Relu", "relu2", "c2", "r2");
	testlib_node(&b, "Flatten", "flat", "r2", "y");
	testlib_output(&b, "y");

	float r1[N_IMG * DIM], ref[N_IMG * DIM], got[N_IMG * DIM], r1f[N_IMG * DIM], yf[N_IMG * DIM];
	int u8x, u8r;
	float sx = scale_of(-2, 2, &u8x);
	ref_conv(&c1, x, w1, b1, r1, sx, u8x);
	float r1max = 0;
	for (int i = 0; i < N_IMG * DIM; i++)
		r1max = fmaxf(r1max, r1[i]);
	float sr = scale_of(0, r1max, &u8r);
	ref_conv(&c2, r1, w2, b2, ref, sr, u8r);
	ref_conv(&c1, x, w1, b1, r1f, 0, 0);
	ref_conv(&c2, r1f, w2, b2, yf, 0, 0);

	const char *names[2] = { "x", "r1" };
	float lo[2] = { -2, 0 }, hi[2] = { 2, r1max };
	fc_calib *c = table(2, names, lo, hi);
	fc_model *m;
	fc_engine *e;
	open_engine(&b, FC_PREC_INT8, c, &m, &e);
	int n_quant = 0, n_int8 = 0;
	for (int i = 0; i < fc_engine_n_prims(e); i++) {
		const char *info = fc_engine_prim_info(e, i);
		print_message("#   %-4s %s\n", fc_engine_prim_precision(e, i), info);
		n_quant += strstr(info, " Quantize: ") != NULL;
		n_int8 += strstr(info, " Conv: ") && !strcmp(fc_engine_prim_precision(e, i), "int8");
	}
	assert_int_equal(n_quant, 1); /* x only: conv1 writes codes */
	assert_int_equal(n_int8, 2);
	assert_int_equal(fc_engine_run(e, got, x, N_IMG), 0);
	double e8 = testlib_rel_err(got, ref, N_IMG * DIM), ef = testlib_rel_err(got, yf, N_IMG * DIM);
	print_message("# conv chain (conv2 groups %d): vs naive int8 %.2e, vs f32 %.2e\n", g2, e8, ef);
	assert_true(e8 <= CHAIN_TOL);
	assert_true(ef <= F32_GAP);
	fc_engine_free(e);
	fc_model_free(m);
	fc_calib_free(c);
	fci_onnx_free(&b);
}

static void test_conv_chain(void **state)
{
	(void)state;
	chain_case(1);
	chain_case(2); /* grouped (ResNeXt's): int8 has a jit kernel for it */
}

/* ---- token models ---- */

/* x [N,1,T,K] -> tokens t [N,T,K]; y1 = t W1 + b1 (K -> H); y = y1 W2 + b2 + t
 * (H -> K, a residual): a transformer block's projections, the bias Adds
 * and the residual fused into the int8 matmuls (s8 sources, both signed).
 * Against naive loops quantising the same way (t at its range, y1 at its
 * range, s8 weights per output column, the residual added in f32). Ties
 * in requantising y1 may round differently from the reference's, hence
 * TOK_TOL. The batch dimension is dynamic (int8_tails uses it too). */
enum { TT = 10, TK = 32, TH = 48 };

static void token_block(fci_onnx *b, float **x, float *w1, float *b1, float *w2, float *b2)
{
	int64_t xd[4] = { -1, 1, TT, TK }, td[3] = { 0, TT, TK }, w1d[2] = { TK, TH }, w2d[2] = { TH, TK };
	int64_t b1d[1] = { TH }, b2d[1] = { TK };
	*x = testlib_rand_vec(b, 4 * TT * TK, -2, 2);
	memcpy(w1, testlib_rand_vec(b, TK * TH, -0.3f, 0.3f), TK * TH * sizeof *w1);
	memcpy(w2, testlib_rand_vec(b, TH * TK, -0.3f, 0.3f), TH * TK * sizeof *w2);
	memcpy(b1, testlib_rand_vec(b, TH, -0.5f, 0.5f), TH * sizeof *b1);
	memcpy(b2, testlib_rand_vec(b, TK, -0.5f, 0.5f), TK * sizeof *b2);
	testlib_input(b, "x", 4, xd);
	testlib_init_i64(b, "tshape", 3, td);
	testlib_add_f32(b, "w1", 2, w1d, w1);
	testlib_add_f32(b, "b1", 1, b1d, b1);
	testlib_add_f32(b, "w2", 2, w2d, w2);
	testlib_add_f32(b, "b2", 1, b2d, b2);
	testlib_node(b, "Reshape", "to_tokens", "x,tshape", "t");
	testlib_node(b, "MatMul", "fc1", "t,w1", "m1");
	testlib_node(b, "Add", "fc1_bias", "m1,b1", "y1");
	testlib_node(b, "MatMul", "fc2", "y1,w2", "m2");
	testlib_node(b, "Add", "fc2_bias", "m2,b2", "a2");
	testlib_node(b, "Add", "residual", "a2,t", "y");
	testlib_output(b, "y");
}

/* y (rows x no) = src (rows x ni) W (ni x no) + bias, with src quantised at
 * scale s (s > 0: s8 codes) and W per output column (s > 0), else in f32. */
static void ref_matmul(const float *src, const float *w, const float *bias, float *y, int rows, int ni, int no,
		       float s)
{
	float *wt = malloc((size_t)ni * no * sizeof *wt), *q = malloc((size_t)ni * no * sizeof *q);
	float *ws = malloc((size_t)no * sizeof *ws);
	assert_true(wt && q && ws);
	for (int k = 0; k < ni; k++)
		for (int o = 0; o < no; o++)
			wt[o * ni + k] = w[k * no + o];
	quant_w(wt, q, ws, no, ni);
	for (int r = 0; r < rows; r++)
		for (int o = 0; o < no; o++) {
			double acc = 0;
			for (int k = 0; k < ni; k++)
				acc += s > 0 ? (double)code(src[r * ni + k], s, 0) * q[o * ni + k]
					     : (double)src[r * ni + k] * wt[o * ni + k];
			y[r * no + o] = (float)(s > 0 ? acc * s * ws[o] : acc) + bias[o];
		}
	free(wt);
	free(q);
	free(ws);
}

static void test_token_block(void **state)
{
	(void)state;
	const double TOK_TOL = 2e-3;
	fci_onnx b;
	testlib_model_init(&b, 17);
	float *x, w1[TK * TH], b1[TH], w2[TH * TK], b2[TK];
	token_block(&b, &x, w1, b1, w2, b2);
	enum { R = N_IMG * TT };
	float y1[R * TH], ref[R * TK], y1f[R * TH], yf[R * TK], got[R * TK];
	int u8;
	float st = scale_of(-2, 2, &u8), m1 = 0;
	ref_matmul(x, w1, b1, y1, R, TK, TH, st);
	for (int i = 0; i < R * TH; i++)
		m1 = fmaxf(m1, fabsf(y1[i]));
	float s1 = scale_of(-m1, m1, &u8);
	ref_matmul(y1, w2, b2, ref, R, TH, TK, s1);
	ref_matmul(x, w1, b1, y1f, R, TK, TH, 0);
	ref_matmul(y1f, w2, b2, yf, R, TH, TK, 0);
	for (int i = 0; i < R * TK; i++)
		ref[i] += x[i], yf[i] += x[i];
	const char *names[2] = { "t", "y1" };
	float lo[2] = { -2, -m1 }, hi[2] = { 2, m1 };
	fc_calib *c = table(2, names, lo, hi);
	int n_int8;
	run_engine(&b, FC_PREC_INT8, c, x, got, R / N_IMG * TK, "MatMul", &n_int8);
	assert_int_equal(n_int8, 2);
	double e8 = testlib_rel_err(got, ref, R * TK), ef = testlib_rel_err(got, yf, R * TK);
	print_message("# token block (bias, residual; s8 sources): vs naive int8 %.2e, vs f32 %.2e\n", e8, ef);
	assert_true(e8 <= TOK_TOL);
	assert_true(ef <= F32_GAP);
	assert_true(ef > 0);
	fc_calib_free(c);
	fci_onnx_free(&b);
}

/* ---- partial batches at their own size ---- */

/* Model b (batch dim dynamic) at batch 4 in int8 (table c) against itself:
 * the first n of the same 4 inputs (img floats each) run as a batch of n
 * (fc_engine_add_batch), n = 1, 2, 3. Returns the largest difference from
 * the full batch's rows relative to the largest magnitude there; *differ
 * counts values that are not bit-identical; *n_int8 the int8 primitives. */
static double int8_tails(const fci_onnx *b, const fc_calib *c, const float *x, size_t img, size_t *differ,
			 int *n_int8)
{
	char err[FC_ERRLEN];
	fc_model *m;
	fc_engine *e;
	double worst = 0, big = 0;
	assert_int_equal(testlib_open(b, &m, err), 0);
	assert_int_equal(fc_model_cut(m, "y"), 0);
	fc_engine_opts o = { .batch = 4, .precision = FC_PREC_INT8, .calib = c };
	if (fc_engine_open(&e, m, &o, err, sizeof err))
		fail_msg("engine open failed: %s", err);
	*n_int8 = 0;
	for (int i = 0; i < fc_engine_n_prims(e); i++)
		*n_int8 += strcmp(fc_engine_prim_precision(e, i), "int8") == 0;
	size_t d = fc_engine_dim(e);
	float *full = malloc(4 * d * sizeof *full), *own = malloc(4 * d * sizeof *own);
	assert_true(full && own);
	assert_int_equal(fc_engine_run(e, full, x, 4), 0);
	for (size_t i = 0; i < 4 * d; i++)
		big = fmax(big, fabs(full[i]));
	for (int n = 1; n < 4; n++) {
		if (fc_engine_add_batch(e, m, n, err, sizeof err))
			fail_msg("add_batch %d: %s", n, err);
		assert_int_equal(fc_engine_add_batch(e, m, n, err, sizeof err), 0); /* again: kept */
		/* the inputs past n are garbage: a tail must not read them */
		float *in = malloc(4 * img * sizeof *in);
		assert_non_null(in);
		memcpy(in, x, (size_t)n * img * sizeof *in);
		for (size_t i = (size_t)n * img; i < 4 * img; i++)
			in[i] = 1e30f;
		assert_int_equal(fc_engine_run(e, own, in, (size_t)n), 0);
		free(in);
		for (size_t i = 0; i < (size_t)n * d; i++) {
			*differ += own[i] != full[i];
			worst = fmax(worst, fabs((double)own[i] - full[i]));
		}
	}
	assert_int_equal(fc_engine_run(e, own, x, 4), 0);
	assert_memory_equal(own, full, 4 * d * sizeof *own);
	free(full);
	free(own);
	fc_engine_free(e);
	fc_model_free(m);
	return big > 0 ? worst / big : worst;
}

/* A residual CNN with every int8 form (a Quantize, convs writing u8 codes,
 * a `sum` reading them, an int8 Gemm after pooling) at batch 4: partial
 * batches of 1, 2 and 3 give the full batch's rows. Measured: bit-identical
 * (the same kernels and scales at every batch size); allowed 1e-6 of the
 * largest value, in case another CPU blocks rows differently. */
static void test_tail_batches(void **state)
{
	(void)state;
	enum { C = 16, H = 6, W = 5, NO = 10 };
	fci_onnx b;
	testlib_model_init(&b, 13);
	int64_t xd[4] = { -1, C, H, W }, wd[4] = { C, C, 3, 3 }, bd[1] = { C }, gd[2] = { NO, C }, gb[1] = { NO };
	float *x = testlib_rand_vec(&b, 4 * C * H * W, -2, 2);
	testlib_input(&b, "x", 4, xd);
	const char *convs[3][5] = { { "conv1", "x,w1,b1", "c1", "w1", "b1" },
				    { "conv2", "r1,w2,b2", "c2", "w2", "b2" },
				    { "conv3", "t,w3,b3", "c3", "w3", "b3" } };
	for (int k = 0; k < 3; k++) {
		testlib_add_f32(&b, convs[k][3], 4, wd, testlib_rand_vec(&b, C * C * 9, -0.3f, 0.3f));
		testlib_add_f32(&b, convs[k][4], 1, bd, testlib_rand_vec(&b, C, -0.5f, 0.5f));
		testlib_conv3x3(&b, convs[k][0], convs[k][1], convs[k][2], 1);
	}
	testlib_add_f32(&b, "gw", 2, gd, testlib_rand_vec(&b, NO * C, -0.5f, 0.5f));
	testlib_add_f32(&b, "gb", 1, gb, testlib_rand_vec(&b, NO, -0.5f, 0.5f));
	testlib_node(&b, "Relu", "relu1", "c1", "r1");
	testlib_node(&b, "Add", "add", "c2,r1", "s");
	testlib_node(&b, "Relu", "relu2", "s", "t");
	testlib_node(&b, "Relu", "relu3", "c3", "r3");
	testlib_node(&b, "GlobalAveragePool", "gap", "r3", "p");
	testlib_node(&b, "Flatten", "flat", "p", "f");
	Onnx__NodeProto *n = testlib_node(&b, "Gemm", "fc", "f,gw,gb", "y");
	testlib_attr_i(&b, n, "transB", 1);
	testlib_output(&b, "y");
	const char *names[4] = { "x", "r1", "t", "f" };
	float lo[4] = { -2, 0, 0, 0 }, hi[4] = { 2, 5, 8, 3 };
	fc_calib *c = table(4, names, lo, hi);
	size_t differ = 0;
	int n_int8;
	double worst = int8_tails(&b, c, x, C * H * W, &differ, &n_int8);
	print_message("# residual cnn, int8 (%d int8 primitives): batches of 1, 2, 3 against a batch of 4: %zu values "
		      "differ, by up to %.3g of the largest\n", n_int8, differ, worst);
	assert_true(n_int8 >= 5); /* Quantize, 3 convs, Gemm */
	assert_true(worst <= 1e-6);
	fc_calib_free(c);
	fci_onnx_free(&b);

	/* the token block: int8 matmuls on N x T rows */
	testlib_model_init(&b, 17);
	float *x2, w1[TK * TH], b1[TH], w2[TH * TK], b2[TK];
	token_block(&b, &x2, w1, b1, w2, b2);
	const char *tn[2] = { "t", "y1" };
	float tlo[2] = { -2, -6 }, thi[2] = { 2, 6 };
	c = table(2, tn, tlo, thi);
	differ = 0;
	worst = int8_tails(&b, c, x2, TT * TK, &differ, &n_int8);
	print_message("# token block, int8 (%d int8 primitives): batches of 1, 2, 3 against a batch of 4: %zu values "
		      "differ, by up to %.3g of the largest\n", n_int8, differ, worst);
	assert_true(n_int8 >= 4); /* 2 Quantize, 2 MatMul */
	assert_true(worst <= 1e-6);
	fc_calib_free(c);
	fci_onnx_free(&b);
}

/* ---- refusals ---- */

/* ---- calibration ---- */

static char *tmp;
static fc_dataset ds;

/* A 3 x 32 x 32 CNN (dynamic batch): conv 3->8 relu, conv 8->8, pooled. */
static void write_cnn(const char *path)
{
	fci_onnx b;
	testlib_model_init(&b, 13);
	int64_t xd[4] = { -1, 3, 32, 32 }, w1d[4] = { 8, 3, 3, 3 }, w2d[4] = { 8, 8, 3, 3 };
	testlib_input(&b, "x", 4, xd);
	testlib_add_f32(&b, "w1", 4, w1d, testlib_rand_vec(&b, 8 * 27, -0.5f, 0.5f));
	testlib_add_f32(&b, "w2", 4, w2d, testlib_rand_vec(&b, 8 * 72, -0.5f, 0.5f));
	const char *convs[2][3] = { { "conv1", "x,w1", "c1" }, { "conv2", "r1,w2", "c2" } };
	for (int k = 0; k < 2; k++) {
		Onnx__NodeProto *n = testlib_node(&b, "Conv", convs[k][0], convs[k][1], convs[k][2]);
		testlib_attr_ints(&b, n, "kernel_shape", 2, 3LL, 3LL);
		testlib_attr_ints(&b, n, "pads", 4, 1LL, 1LL, 1LL, 1LL);
	}
	testlib_node(&b, "Relu", "relu1", "c1", "r1");
	testlib_node(&b, "GlobalAveragePool", "gap", "c2", "p");
	testlib_node(&b, "Flatten", "flat", "p", "y");
	testlib_output(&b, "y");
	testlib_write(&b.model, path);
	fci_onnx_free(&b);
}

static void copy_file(const char *from, const char *to)
{
	size_t len;
	uint8_t *p = testlib_read_file(from, &len);
	assert_non_null(p);
	FILE *f = fopen(to, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(p, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
	free(p);
}

static fc_extractor_opts cnn_opts(char *model)
{
	fc_extractor_opts o = { .model = model, .layer = "flat", .precision = FC_PREC_INT8, .store_dtype = FC_DTYPE_F16,
				.batch = 4 };
	assert_int_equal(fc_preproc_preset(&o.pre, "torchvision", 32), 0);
	return o;
}

static int same_table(const fc_calib *a, const fc_calib *b)
{
	if (a->n != b->n || a->images != b->images || strcmp(a->method, b->method))
		return 0;
	for (size_t k = 0; k < a->n; k++)
		if (strcmp(a->r[k].tensor, b->r[k].tensor) || memcmp(&a->r[k].lo, &b->r[k].lo, sizeof(float)) ||
		    memcmp(&a->r[k].hi, &b->r[k].hi, sizeof(float)))
			return 0;
	return 1;
}

static void test_calibrate(void **state)
{
	(void)state;
	char model[4200], err[FC_ERRLEN];
	snprintf(model, sizeof model, "%s/cnn.onnx", tmp);
	fc_extractor_opts o = cnn_opts(model);
	fc_calib *a = NULL, *b = NULL, *mx = NULL, *few = NULL;
	size_t failed = 99;
	assert_int_equal(fc_calibrate(&a, &o, &ds, 256, FC_CALIB_PERCENTILE, &failed, err, sizeof err), 0);
	assert_int_equal(failed, 0);
	assert_int_equal(fc_calibrate(&b, &o, &ds, 256, FC_CALIB_PERCENTILE, NULL, err, sizeof err), 0);
	assert_int_equal(fc_calibrate(&mx, &o, &ds, 256, FC_CALIB_MAX, NULL, err, sizeof err), 0);
	assert_int_equal(fc_calibrate(&few, &o, &ds, 3, FC_CALIB_PERCENTILE, NULL, err, sizeof err), 0);
	assert_true(same_table(a, b));
	for (size_t k = 0; k < a->n; k++)
		print_message("# observed %s\n", a->r[k].tensor);
	assert_int_equal(a->n, 2); /* x and r1: what the two convs read */
	assert_int_equal(a->images, ds.n);
	assert_int_equal(few->images, 3);
	assert_string_equal(a->r[0].tensor, "x");
	assert_string_equal(a->r[1].tensor, "r1");
	assert_true(a->r[1].lo >= 0); /* after the ReLU: u8 */
	assert_true(a->r[0].lo < 0);  /* the normalised image: s8 */
	for (size_t k = 0; k < a->n; k++) {
		print_message("# %s: max [%g, %g], percentile [%g, %g]\n", a->r[k].tensor, mx->r[k].lo, mx->r[k].hi,
			      a->r[k].lo, a->r[k].hi);
		assert_true(a->r[k].lo >= mx->r[k].lo && a->r[k].hi <= mx->r[k].hi && a->r[k].hi > 0);
	}

	/* the table is part of the identity */
	fc_extract_ctx *x1, *x2, *x3, *x4, *xf, *xl;
	o.calib = a;
	assert_int_equal(fc_extract_open(&x1, &o, err, sizeof err), 0);
	o.calib = b;
	assert_int_equal(fc_extract_open(&x2, &o, err, sizeof err), 0);
	o.calib = mx;
	assert_int_equal(fc_extract_open(&x3, &o, err, sizeof err), 0);
	o.calib = few;
	assert_int_equal(fc_extract_open(&x4, &o, err, sizeof err), 0);
	fc_extractor_opts of = o;
	of.precision = FC_PREC_F32;
	of.calib = NULL;
	assert_int_equal(fc_extract_open(&xf, &of, err, sizeof err), 0);
	assert_memory_equal(fc_extract_id(x1), fc_extract_id(x2), FC_HASH_LEN);
	assert_memory_not_equal(fc_extract_id(x1), fc_extract_id(x3), FC_HASH_LEN);
	assert_memory_not_equal(fc_extract_id(x1), fc_extract_id(x4), FC_HASH_LEN);
	assert_memory_not_equal(fc_extract_id(x1), fc_extract_id(xf), FC_HASH_LEN);
	const char *d = fc_extract_descriptor(x1);
	assert_non_null(strstr(d, "\"precision\":\"int8\""));
	assert_non_null(strstr(d, "\"calibration\":{"));
	assert_non_null(strstr(d, "\"method\":\"percentile:99.99\""));
	assert_int_equal(fc_extract_open_like(&xl, model, d, FC_DTYPE_F16, 4, 0, err, sizeof err), 0);
	assert_memory_equal(fc_extract_id(x1), fc_extract_id(xl), FC_HASH_LEN);
	fc_extract_free(x1);
	fc_extract_free(x2);
	fc_extract_free(x3);
	fc_extract_free(x4);
	fc_extract_free(xf);
	fc_extract_free(xl);
	fc_calib_free(a);
	fc_calib_free(b);
	fc_calib_free(mx);
	fc_calib_free(few);
}

static void test_calibrate_refusals(void **state)
{
	(void)state;
	char model[4200], err[FC_ERRLEN], dir[4200], bad[4300];
	snprintf(model, sizeof model, "%s/cnn.onnx", tmp);
	fc_extractor_opts o = cnn_opts(model);
	fc_calib *c = NULL;
	fc_extract_ctx *x = NULL;

	assert_int_equal(fc_extract_open(&x, &o, err, sizeof err), FC_ERR_INVALID); /* int8, no table */
	assert_null(x);
	print_message("#   refused: %s\n", err);
	assert_int_equal(fc_calibrate(&c, &o, &ds, 0, FC_CALIB_MAX, NULL, err, sizeof err), FC_ERR_INVALID);
	assert_null(c);
	print_message("#   refused: %s\n", err);
	assert_int_equal(fc_calibrate(&c, &o, &ds, 4, 7, NULL, err, sizeof err), FC_ERR_INVALID);

	/* images that do not decode: none left to calibrate on */
	snprintf(dir, sizeof dir, "%s/broken", tmp);
	assert_int_equal(mkdir(dir, 0755), 0);
	snprintf(bad, sizeof bad, "%s/broken/a", tmp);
	assert_int_equal(mkdir(bad, 0755), 0);
	snprintf(bad, sizeof bad, "%s/broken/a/x.jpg", tmp);
	FILE *f = fopen(bad, "wb");
	assert_non_null(f);
	fputs("not a jpeg", f);
	fclose(f);
	fc_dataset bds;
	assert_int_equal(fc_dataset_scan(&bds, dir, 0, err, sizeof err), 0);
	size_t failed = 0;
	assert_int_equal(fc_calibrate(&c, &o, &bds, 8, FC_CALIB_MAX, &failed, err, sizeof err), FC_ERR_INVALID);
	assert_null(c);
	assert_int_equal(failed, 1);
	print_message("#   refused: %s\n", err);
	assert_non_null(strstr(err, "could be read"));
	fc_dataset_free(&bds);
}

/* ---- transformers, calibrated on photos ---- */

/* Decode and preprocess image path into dst (3 x 224 x 224): 0 or -1. */
static int read_image(const char *path, const fc_preproc *p, float *dst)
{
	size_t len;
	uint8_t *buf = testlib_read_file(path, &len);
	fc_image im = { 0 };
	int rc = buf && fc_image_decode(&im, buf, len, NULL, 0) == 0 && fc_preprocess(p, &im, dst) == 0 ? 0 : -1;
	free(buf);
	fc_image_free(&im);
	return rc;
}

/* The ViT, DINOv2 and CLIP fixtures (two blocks each, random weights):
 * calibrated on the four photos of data/a, then the four of data/b
 * through the f32 and the int8 engine. The patch-embedding conv and
 * every projection (QKV, attention output, MLP fc1 and fc2) run in int8;
 * Softmax, LayerNorm and attention's MatMuls of two activations stay f32.
 * Measured on these four: min cosine 0.9966 (ViT), 0.9985 (DINOv2),
 * 0.99996 (CLIP); asserted >= 0.995 (no random numbers: the same every
 * run). */
static void test_transformers(void **state)
{
	(void)state;
	static const char *const models[] = { "vit_narrow", "dinov2_narrow", "clip_narrow" };
	char model[4200], dir[4200], err[FC_ERRLEN];
	fc_dataset ca, cb;
	snprintf(dir, sizeof dir, "%s/data/a", tmp);
	assert_int_equal(fc_dataset_scan(&ca, dir, 0, err, sizeof err), 0);
	snprintf(dir, sizeof dir, "%s/data/b", tmp);
	assert_int_equal(fc_dataset_scan(&cb, dir, 0, err, sizeof err), 0);
	assert_int_equal(cb.n, 4);
	const size_t img = 3 * 224 * 224;
	float *in = malloc(4 * img * sizeof *in);
	assert_non_null(in);
	for (size_t m = 0; m < sizeof models / sizeof models[0]; m++) {
		snprintf(model, sizeof model, "%s/%s.onnx", fixtures, models[m]);
		fc_extractor_opts o = { .model = model, .precision = FC_PREC_INT8, .batch = 4 };
		assert_int_equal(fc_preproc_preset(&o.pre, "torchvision", 224), 0);
		fc_calib *c = NULL;
		if (fc_calibrate(&c, &o, &ca, 64, FC_CALIB_PERCENTILE, NULL, err, sizeof err))
			fail_msg("%s: calibrate: %s", models[m], err);
		for (size_t k = 0; k < cb.n; k++)
			assert_int_equal(read_image(cb.entries[k].path, &o.pre, in + k * img), 0);
		fc_model *mo;
		fc_engine *e32, *e8;
		assert_int_equal(fc_model_open(&mo, model, err, sizeof err), 0);
		assert_int_equal(fc_model_cut(mo, NULL), 0);
		fc_engine_opts f = { .batch = 4 }, q = { .batch = 4, .precision = FC_PREC_INT8, .calib = c };
		assert_int_equal(fc_engine_open(&e32, mo, &f, err, sizeof err), 0);
		if (fc_engine_open(&e8, mo, &q, err, sizeof err))
			fail_msg("%s: int8: %s", models[m], err);
		int proj8 = 0, act_mm = 0, soft = 0;
		for (int i = 0; i < fc_engine_n_prims(e8); i++) {
			const char *info = fc_engine_prim_info(e8, i), *p = fc_engine_prim_precision(e8, i);
			int mm = strstr(info, " MatMul: ") || strstr(info, " Gemm: ") || strstr(info, " Conv: ");
			proj8 += mm && !strcmp(p, "int8");
			act_mm += mm && strcmp(p, "int8") != 0;
			if (strstr(info, " Softmax: ") || strstr(info, "LayerNorm"))
				assert_string_equal(p, "f32"), soft++;
			if (strstr(info, ": ref"))
				fail_msg("%s: a reference kernel runs: %s", models[m], info);
		}
		size_t d = fc_engine_dim(e8);
		float *y32 = malloc(4 * d * sizeof *y32), *y8 = malloc(4 * d * sizeof *y8);
		assert_true(y32 && y8);
		assert_int_equal(fc_engine_run(e32, y32, in, 4), 0);
		assert_int_equal(fc_engine_run(e8, y8, in, 4), 0);
		double lo = 1;
		for (int r = 0; r < 4; r++) {
			double dot = 0, na = 0, nb = 0;
			for (size_t j = 0; j < d; j++) {
				dot += (double)y32[r * d + j] * y8[r * d + j];
				na += (double)y32[r * d + j] * y32[r * d + j];
				nb += (double)y8[r * d + j] * y8[r * d + j];
			}
			lo = fmin(lo, dot / sqrt(na * nb));
		}
		print_message("# %s: %d int8 projections, %d f32 matmuls of activations, %d softmax/layernorm in f32; "
			      "min cosine int8 vs f32 %.5f\n", models[m], proj8, act_mm, soft, lo);
		assert_int_equal(proj8, 1 + 2 * 4); /* the patch conv; QKV, out, fc1, fc2 of two blocks */
		assert_int_equal(act_mm, 2 * 2);    /* Q K^T and A V of two blocks */
		assert_true(soft >= 2);
		assert_true(lo >= 0.995);
		assert_true(memcmp(y32, y8, 4 * d * sizeof *y8) != 0); /* it did quantise */
		free(y32);
		free(y8);
		fc_engine_free(e32);
		fc_engine_free(e8);
		fc_model_free(mo);
		fc_calib_free(c);
	}
	free(in);
	fc_dataset_free(&ca);
	fc_dataset_free(&cb);
}

static int has_vnni(void)
{
	unsigned v = (unsigned)dnnl_get_effective_cpu_isa();
	return (v & (unsigned)dnnl_cpu_isa_avx512_core_vnni) == (unsigned)dnnl_cpu_isa_avx512_core_vnni ||
	       (v & (unsigned)dnnl_cpu_isa_avx2_vnni) == (unsigned)dnnl_cpu_isa_avx2_vnni;
}

static int group_setup(void **state)
{
	(void)state;
	const char *top = getenv("FC_TOP");
	char path[4300], dir[4300], err[FC_ERRLEN];
	static const char *const photos[] = { "photo_127x93_422.jpg", "photo_203x151_444.jpg", "photo_240x180_prog.jpg",
					      "photo_500x375.jpg",    "rgb_257x129.png",       "rgba_100x80.png",
					      "gray_161x97.jpg",      "interlaced_rgb_75x45.png" };
	snprintf(fixtures, sizeof fixtures, "%s/tests/fixtures/models", top && *top ? top : ".");
	tmp = testlib_tmpdir("int8");
	snprintf(path, sizeof path, "%s/cnn.onnx", tmp);
	write_cnn(path);
	for (int k = 0; k < 2; k++) {
		snprintf(dir, sizeof dir, "%s/data%s", tmp, k ? "/b" : "");
		mkdir(dir, 0755);
		snprintf(dir, sizeof dir, "%s/data/%c", tmp, 'a' + k);
		mkdir(dir, 0755);
	}
	for (size_t k = 0; k < sizeof photos / sizeof photos[0]; k++) {
		char from[4300];
		snprintf(from, sizeof from, "%s/tests/fixtures/images/%s", top && *top ? top : ".", photos[k]);
		snprintf(path, sizeof path, "%s/data/%c/%s", tmp, k % 2 ? 'b' : 'a', photos[k]);
		copy_file(from, path);
	}
	snprintf(dir, sizeof dir, "%s/data", tmp);
	if (fc_dataset_scan(&ds, dir, 0, err, sizeof err) || ds.n != 8) {
		printf("# cannot scan '%s': %s\n", dir, err);
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	fc_dataset_free(&ds);
	testlib_rmtree(tmp);
	free(tmp);
	return 0;
}

int main(void)
{
	testlib_seed("test_int8");
	if (!has_vnni()) {
		printf("ok - test_int8 # SKIP onednn reports no vnni or amx on this cpu: int8 is refused there\n");
		return 0;
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_conv_u8),
		cmocka_unit_test(test_conv_s8),
		cmocka_unit_test(test_conv_depthwise),
		cmocka_unit_test(test_no_range_stays_f32),
		cmocka_unit_test(test_gemm),
		cmocka_unit_test(test_residual),
		cmocka_unit_test(test_conv_chain),
		cmocka_unit_test(test_token_block),
		cmocka_unit_test(test_tail_batches),
		cmocka_unit_test(test_transformers),
		cmocka_unit_test(test_calibrate),
		cmocka_unit_test(test_calibrate_refusals),
	};
	return cmocka_run_group_tests_name("test_int8", tests, group_setup, group_teardown);
}
