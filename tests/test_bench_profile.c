/*
 * test_bench_profile.c - unit tests of bench/profile.h, the reader of
 * oneDNN's profiling verbose output behind bench/extract_engine --profile:
 * lines captured from featcache's engine (oneDNN 2.6.3, ONEDNN_VERBOSE=2,
 * `featcache extract` at batch 4 on ResNet-18 and MobileNetV3-Large in f32,
 * bf16 and int8), each with its FLOPs computed by hand in the comment; the
 * layer classes; lines that are not exec lines; a broken exec line; the
 * per-class sums and the peak arithmetic; a whole file read back.
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

#include "bench/profile.h"
#include "tests/testlib.h"

/* ResNet-18 f32 stem: 2 x mb 4 x oc 64 x 112 x 112 x ic 3 x 7 x 7 = 944,111,616 */
static const char stem_f32[] =
	"onednn_verbose,exec,cpu,convolution,brgconv:avx512_core,forward_inference,src_f32::blocked:acdb:f0 "
	"wei_f32::blocked:Acdb64a:f0 bia_f32::blocked:a:f0 dst_f32::blocked:acdb:f0,attr-post-ops:eltwise_relu "
	",alg:convolution_direct,mb4_ic3oc64_ih224oh112kh7sh2dh0ph3_iw224ow112kw7sw2dw0pw3,8.85791\n";
/* ResNet-18 f32 downsample 1x1, stride 2: 2 x 4 x 128 x 28 x 28 x 64 = 51,380,224 */
static const char conv1_f32[] =
	"onednn_verbose,exec,cpu,convolution,brgconv_1x1:avx512_core,forward_inference,src_f32::blocked:acdb:f0 "
	"wei_f32::blocked:Acdb64a:f0 bia_f32::blocked:a:f0 dst_f32::blocked:acdb:f0,attr-post-ops:sum+eltwise_relu "
	",alg:convolution_direct,mb4_ic64oc128_ih56oh28kh1sh2dh0ph0_iw56ow28kw1sw2dw0pw0,0.445068\n";
/* ResNet-18 int8 3x3: 2 x 4 x 64 x 56 x 56 x 64 x 3 x 3 = 924,844,032 */
static const char conv3_u8[] =
	"onednn_verbose,exec,cpu,convolution,brgconv:avx512_core_vnni,forward_inference,src_u8::blocked:acdb:f0 "
	"wei_s8::blocked:AcdB64a4b:f0 bia_f32::blocked:a:f0 dst_u8::blocked:acdb:f0,attr-oscale:2 "
	"attr-post-ops:sum:0.00711921:0:u8+eltwise_relu+eltwise_linear:109.412 "
	",alg:convolution_direct,mb4_ic64oc64_ih56oh56kh3sh1dh0ph1_iw56ow56kw3sw1dw0pw1,1.11597\n";
/* ResNet-18 int8 stem (s8 input): 944,111,616 as in f32 */
static const char stem_s8[] =
	"onednn_verbose,exec,cpu,convolution,jit_int8:avx512_core_vnni,forward_inference,src_s8::blocked:acdb:f0 "
	"wei_s8:p:blocked:ABcd4b16a4b:f3:s8m1 bia_f32::blocked:a:f0 dst_f32::blocked:acdb:f0,attr-oscale:2 "
	"attr-post-ops:eltwise_relu ,alg:convolution_direct,mb4_ic3oc64_ih224oh112kh7sh2dh0ph3_iw224ow112kw7sw2dw0pw3,"
	"6.08301\n";
/* MobileNetV3 bf16 depthwise 3x3, 16 groups of 1 channel: 2 x 4 x 16 x 112 x 112 x 1 x 9 = 14,450,688 */
static const char dw_bf16[] =
	"onednn_verbose,exec,cpu,convolution,brdgmm_dw:avx512_core_bf16,forward_inference,"
	"src_bf16::blocked:acdb:f0 wei_bf16::blocked:deAbc16a:f0 bia_f32::blocked:a:f0 dst_bf16::blocked:acdb:f0,"
	"attr-post-ops:eltwise_relu ,alg:convolution_direct,"
	"g16mb4_ic16oc16_ih112oh112kh3sh1dh0ph1_iw112ow112kw3sw1dw0pw1,0.397949\n";
/* MobileNetV3 bf16 classifier matmul 4x960 by 960x1280: 2 x 4 x 1280 x 960 = 9,830,400 */
static const char mm_bf16[] =
	"onednn_verbose,exec,cpu,matmul,brg:avx512_core_bf16,undef,src_bf16::blocked:ab:f0 "
	"wei_bf16::blocked:BA16a64b2a:f0 bia_f32::blocked:ab:f0_mask2 dst_bf16::blocked:ab:f0,"
	"attr-post-ops:eltwise_hardswish:1 ,,4x960:960x1280:4x1280,0.165039\n";
static const char pool_bf16[] =
	"onednn_verbose,exec,cpu,pooling_v2,jit:avx512_core_bf16,forward_inference,src_bf16::blocked:acdb:f0 "
	"dst_bf16::blocked:acdb:f0 ws_undef::undef::f0,,alg:pooling_avg_exclude_padding,"
	"mb4ic72_ih28oh1kh28sh1dh0ph0_iw28ow1kw28sw1dw0pw0,0.0288086\n";
static const char reorder_f32[] =
	"onednn_verbose,exec,cpu,reorder,jit:uni,undef,src_f32::blocked:abcd:f0 dst_f32::blocked:acdb:f0,,,"
	"4x3x224x224,1.14404\n";
static const char binary_f32[] =
	"onednn_verbose,exec,cpu,binary,jit:uni,undef,src_f32::blocked:acdb:f0 src_f32::blocked:acdb:f0 "
	"dst_f32::blocked:acdb:f0,,alg:binary_mul,4x72x28x28:4x72x1x1,0.0390625\n";
/* Written in the same format (none of the models here runs an inner
 * product): 2 x 16 x 1000 x 2048 = 65,536,000; and a 3-D convolution,
 * 2 x 2 x 8 x (4 x 6 x 6) x 4 x (3 x 3 x 3) = 497,664. */
static const char ip_f32[] =
	"dnnl_verbose,exec,cpu,inner_product,brgemm:avx512_core,forward_inference,src_f32::blocked:ab:f0 "
	"wei_f32::blocked:AB16b64a:f0 bia_f32::blocked:a:f0 dst_f32::blocked:ab:f0,,,mb16ic2048oc1000,2.5\n";
static const char conv3d_f32[] =
	"onednn_verbose,exec,cpu,convolution,jit:avx512_core,forward_inference,src_f32::blocked:acdeb:f0 "
	"wei_f32::blocked:Acdeb16a:f0 bia_undef::undef::f0 dst_f32::blocked:acdeb:f0,,alg:convolution_direct,"
	"mb2_ic4oc8_id8od4kd3sd2dd0pd1_ih12oh6kh3sh2dh0ph1_iw12ow6kw3sw2dw0pw1,0.01\n";

static void check(const char *line, const char *kind, const char *impl, const char *dt, int cls, double flops,
		  double ms)
{
	bench_prim p;
	assert_int_equal(bench_prof_parse(line, &p), 1);
	assert_string_equal(p.kind, kind);
	assert_string_equal(p.impl, impl);
	assert_string_equal(p.src_dt, dt);
	assert_int_equal(p.cls, cls);
	if (p.flops != flops)
		fail_msg("%s: %.0f FLOPs, want %.0f", line, p.flops, flops);
	assert_true(fabs(p.ms - ms) < 1e-9);
}

static void test_real_lines(void **state)
{
	(void)state;
	check(stem_f32, "convolution", "brgconv:avx512_core", "f32", BP_STEM, 944111616.0, 8.85791);
	check(conv1_f32, "convolution", "brgconv_1x1:avx512_core", "f32", BP_CONV1, 51380224.0, 0.445068);
	check(conv3_u8, "convolution", "brgconv:avx512_core_vnni", "u8", BP_CONVK, 924844032.0, 1.11597);
	check(stem_s8, "convolution", "jit_int8:avx512_core_vnni", "s8", BP_STEM, 944111616.0, 6.08301);
	check(dw_bf16, "convolution", "brdgmm_dw:avx512_core_bf16", "bf16", BP_GROUPED, 14450688.0, 0.397949);
	check(mm_bf16, "matmul", "brg:avx512_core_bf16", "bf16", BP_MATMUL, 9830400.0, 0.165039);
	check(pool_bf16, "pooling_v2", "jit:avx512_core_bf16", "bf16", BP_POOL, 0, 0.0288086);
	check(reorder_f32, "reorder", "jit:uni", "f32", BP_REORDER, 0, 1.14404);
	check(binary_f32, "binary", "jit:uni", "f32", BP_OTHER, 0, 0.0390625);
	check(ip_f32, "inner_product", "brgemm:avx512_core", "f32", BP_MATMUL, 65536000.0, 2.5);
	check(conv3d_f32, "convolution", "jit:avx512_core", "f32", BP_CONVK, 497664.0, 0.01);
}

static void test_other_lines(void **state)
{
	(void)state;
	bench_prim p;
	/* oneDNN's own header and primitive creation are not executions */
	assert_int_equal(bench_prof_parse("onednn_verbose,info,oneDNN v2.6.3 (commit N/A)\n", &p), 0);
	assert_int_equal(bench_prof_parse("onednn_verbose,create:cache_miss,cpu,reorder,jit:uni,undef,src_f32::blocked:"
					  "abcd:f0 dst_f32::blocked:acdb:f0,,,4x3x224x224,0.328125\n",
					  &p),
			 0);
	assert_int_equal(bench_prof_parse("resnet18 b16 featcache f32 25.0 img/s\n", &p), 0);
	assert_int_equal(bench_prof_parse("", &p), 0);
	/* an exec line cut short, one with a field too many, one without a time */
	char cut[sizeof conv3_u8];
	snprintf(cut, sizeof cut, "%s", conv3_u8);
	cut[strlen(cut) / 2] = '\0';
	assert_int_equal(bench_prof_parse(cut, &p), -1);
	assert_int_equal(bench_prof_parse("onednn_verbose,exec,cpu,reorder,jit:uni,undef,src_f32,,,,4x3,1.0\n", &p), -1);
	assert_int_equal(bench_prof_parse("onednn_verbose,exec,cpu,reorder,jit:uni,undef,src_f32,,,4x3,\n", &p), -1);
	assert_int_equal(bench_prof_parse("onednn_verbose,exec,cpu,,jit:uni,undef,src_f32,,,4x3,1.0\n", &p), -1);
}

static void test_sums(void **state)
{
	(void)state;
	bench_prof_sum s[BP_N];
	bench_prim p;
	memset(s, 0, sizeof s);
	/* two u8 3x3 convolutions and an f32 stem at a 100 GFLOP/s f32 peak */
	const char *lines[] = { conv3_u8, conv3_u8, stem_f32, stem_s8, mm_bf16, reorder_f32 };
	for (size_t i = 0; i < sizeof lines / sizeof *lines; i++) {
		assert_int_equal(bench_prof_parse(lines[i], &p), 1);
		bench_prof_add(s, &p, 100);
	}
	assert_int_equal(s[BP_CONVK].n, 2);
	assert_true(fabs(s[BP_CONVK].ms - 2 * 1.11597) < 1e-9);
	assert_true(s[BP_CONVK].flops == 2 * 924844032.0);
	/* u8 runs at 4x: 924,844,032 / 400e9 s = 2.31211008 ms each */
	assert_true(fabs(s[BP_CONVK].ideal_ms - 2 * 2.31211008) < 1e-9);
	assert_string_equal(s[BP_CONVK].impls, "brgconv:avx512_core_vnni");
	/* the f32 stem at 1x (9.44111616 ms), the s8 one at 4x (2.36027904 ms) */
	assert_true(fabs(s[BP_STEM].ideal_ms - (9.44111616 + 2.36027904)) < 1e-9);
	assert_string_equal(s[BP_STEM].impls, "brgconv:avx512_core jit_int8:avx512_core_vnni");
	/* bf16 at 2x: 9,830,400 / 200e9 s = 0.049152 ms */
	assert_true(fabs(s[BP_MATMUL].ideal_ms - 0.049152) < 1e-12);
	assert_true(s[BP_REORDER].ideal_ms == 0 && s[BP_REORDER].n == 1);
	assert_int_equal(s[BP_POOL].n, 0);
}

static void test_read_file(void **state)
{
	(void)state;
	char *dir = testlib_tmpdir("bench_profile"), path[4096];
	snprintf(path, sizeof path, "%s/verbose.txt", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("onednn_verbose,info,cpu,runtime:OpenMP,nthr:2\n", f);
	fputs(stem_f32, f);
	fputs(dw_bf16, f);
	fputs(dw_bf16, f);
	fputs(pool_bf16, f);
	assert_int_equal(fclose(f), 0);
	bench_prof_sum s[BP_N];
	long bad = 0;
	assert_int_equal(bench_prof_read(path, s, 435, &bad), 4);
	assert_int_equal(s[BP_GROUPED].n, 2);
	assert_true(s[BP_GROUPED].flops == 2 * 14450688.0);
	assert_true(fabs(s[BP_POOL].ms - 0.0288086) < 1e-12);
	/* a broken line: -1 and its number */
	f = fopen(path, "a");
	assert_non_null(f);
	fputs("onednn_verbose,exec,cpu,convolution\n", f);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(bench_prof_read(path, s, 435, &bad), -1);
	assert_int_equal(bad, 6);
	testlib_rmtree(dir);
	free(dir);
	snprintf(path, sizeof path, "/nonexistent/verbose.txt");
	assert_int_equal(bench_prof_read(path, s, 435, NULL), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_real_lines),
		cmocka_unit_test(test_other_lines),
		cmocka_unit_test(test_sums),
		cmocka_unit_test(test_read_file),
	};

	testlib_seed("test_bench_profile");
	fflush(stdout);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
