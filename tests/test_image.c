/*
 * test_image.c - unit tests of extract/image.c and extract/preprocess.c:
 *  - every fixture of tests/fixtures/images/ (tools/make_image_fixtures.py)
 *    decodes to PIL's pixels, and preprocesses to the crop PIL hands to
 *    ToTensor and to torchvision's normalised tensor;
 *  - resampling against a naive double-precision reference of the same
 *    filters, and a few cases worked by hand;
 *  - presets and option checks;
 *  - truncated, bit-flipped, random, empty and oversized inputs fail with a
 *    message and leave nothing allocated.
 *
 * Random data comes from one seed, printed at the start; set FC_SEED to
 * replay a failure. Fixtures are found under $FC_TOP (tests/run.sh sets it)
 * or the current directory.
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

#include <zstd.h>

#include "featcache/image.h"
#include "tests/testlib.h"

static char fixture_dir[1024];

/* ------------------------------------------------------------ fixtures */

/* The fixture called name, whole (testlib_read_file); a failure if missing. */
static uint8_t *read_file(const char *name, size_t *len)
{
	char path[1400];
	uint8_t *buf;

	snprintf(path, sizeof path, "%s/%s", fixture_dir, name);
	buf = testlib_read_file(path, len);
	if (!buf)
		fail_msg("cannot read '%s'", path);
	return buf;
}

/* An expected output (see make_image_fixtures.py): zstd of "FCFX", version,
 * dtype (1 u8, 2 f32), three dims, data. */
typedef struct expected {
	int dtype;
	uint32_t dim[3];
	void *data;
	size_t n; /* elements */
} expected;

static void expected_load(expected *e, const char *name)
{
	size_t zlen, len;
	uint8_t *z = read_file(name, &zlen), *raw;
	unsigned long long cap = ZSTD_getFrameContentSize(z, zlen);
	uint32_t hdr[5];

	assert_true(cap != ZSTD_CONTENTSIZE_UNKNOWN && cap != ZSTD_CONTENTSIZE_ERROR && cap >= 24);
	raw = malloc(cap);
	assert_non_null(raw);
	len = ZSTD_decompress(raw, cap, z, zlen);
	assert_false(ZSTD_isError(len));
	assert_int_equal(len, cap);
	assert_memory_equal(raw, "FCFX", 4);
	memcpy(hdr, raw + 4, sizeof hdr); /* little-endian host assumed, as the suite does */
	assert_int_equal(hdr[0], 1);
	e->dtype = (int)hdr[1];
	memcpy(e->dim, hdr + 2, sizeof e->dim);
	e->n = (size_t)e->dim[0] * e->dim[1] * e->dim[2];
	assert_int_equal(len - 24, e->n * (e->dtype == 1 ? 1 : 4));
	e->data = malloc(e->n * (e->dtype == 1 ? 1 : 4) + 1);
	assert_non_null(e->data);
	memcpy(e->data, raw + 24, len - 24);
	free(raw);
	free(z);
}

typedef struct entry {
	char input[128], spec[64], file[256];
} entry;

static entry *manifest(int *n)
{
	size_t len;
	char *text = (char *)read_file("manifest.txt", &len), *line, *save = NULL;
	entry *v = NULL;
	int cap = 0;

	text[len] = '\0';
	*n = 0;
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (line[0] == '#')
			continue;
		if (*n == cap) {
			cap = cap ? cap * 2 : 64;
			v = realloc(v, (size_t)cap * sizeof *v);
			assert_non_null(v);
		}
		assert_int_equal(sscanf(line, "%127s %63s %255s", v[*n].input, v[*n].spec, v[*n].file), 3);
		(*n)++;
	}
	free(text);
	return v;
}

/* The image PIL decoded (the fixture's "decode" expectation). */
static void pil_image(fc_image *img, const char *input)
{
	char name[300];
	expected e;

	snprintf(name, sizeof name, "%s.decode.zst", input);
	expected_load(&e, name);
	assert_int_equal(e.dtype, 1);
	assert_int_equal(e.dim[2], 3);
	img->h = (int)e.dim[0];
	img->w = (int)e.dim[1];
	img->px = e.data;
}

/* A spec of the manifest as an fc_preproc; *norm says ":norm". */
static void spec_parse(fc_preproc *p, int *norm, const char *spec)
{
	char f[3] = "";
	int size, a, b, cw, ch, used = 0;

	*norm = strstr(spec, ":norm") != NULL;
	if (sscanf(spec, "torchvision%d", &size) == 1) {
		assert_int_equal(fc_preproc_preset(p, "torchvision", size), 0);
		return;
	}
	if (sscanf(spec, "finetuner%d", &size) == 1) {
		assert_int_equal(fc_preproc_preset(p, "finetuner", size), 0);
		return;
	}
	/* custom specs use the presets' mean and std */
	assert_int_equal(fc_preproc_preset(p, "torchvision", 32), 0);
	if (sscanf(spec, "s%d:c%dx%d:%2s%n", &a, &cw, &ch, f, &used) == 4) {
		p->resize_short = a;
	} else if (sscanf(spec, "r%dx%d:c%dx%d:%2s%n", &a, &b, &cw, &ch, f, &used) == 5) {
		p->resize_short = 0;
		p->resize_w = a;
		p->resize_h = b;
	} else {
		fail_msg("bad spec '%s'", spec);
	}
	p->crop_w = cw;
	p->crop_h = ch;
	p->filter = strcmp(f, "bc") == 0 ? FC_RESAMPLE_BICUBIC : FC_RESAMPLE_BILINEAR;
	assert_int_equal(fc_preproc_check(p), 0);
}

/* ------------------------------------------------------------- decoding */

static void test_decode_fixtures(void **state)
{
	int n, checked = 0;
	entry *m = manifest(&n);

	(void)state;
	for (int i = 0; i < n; i++) {
		size_t len, bad = 0;
		uint8_t *data;
		fc_image img;
		expected e;
		char err[FC_ERRLEN];
		int rc, maxdiff = 0;

		if (strcmp(m[i].spec, "decode") != 0)
			continue;
		data = read_file(m[i].input, &len);
		rc = fc_image_decode(&img, data, len, err, sizeof err);
		if (rc)
			fail_msg("%s: rc %d: %s", m[i].input, rc, err);
		expected_load(&e, m[i].file);
		assert_int_equal(e.dim[0], img.h);
		assert_int_equal(e.dim[1], img.w);
		assert_int_equal(e.dim[2], 3);
		for (size_t j = 0; j < e.n; j++) {
			int d = abs((int)img.px[j] - (int)((uint8_t *)e.data)[j]);
			bad += d != 0;
			maxdiff = d > maxdiff ? d : maxdiff;
		}
		if (bad)
			fail_msg("%s: %zu of %zu samples differ from PIL, max by %d", m[i].input, bad,
				 e.n, maxdiff);
		fc_image_free(&img);
		assert_null(img.px);
		free(e.data);
		free(data);
		checked++;
	}
	print_message("# %d fixtures decode exactly as PIL\n", checked);
	assert_true(checked >= 40);
	free(m);
}

/* Decoding and preprocessing on several threads at once give the same
 * bytes as on one (the extract pipeline decodes in parallel). */
static void test_decode_threads(void **state)
{
	static const char *const names[] = {"photo_500x375.jpg", "photo_240x180_prog.jpg",
					     "rgb_257x129.png", "interlaced_rgb_75x45.png",
					     "cmyk_40x30.jpg", "exif_o6_45x30.jpg"};
	enum { N = sizeof names / sizeof names[0], REP = 4 };
	uint8_t *data[N], *ref[N];
	size_t len[N];
	fc_preproc p;
	int fails = 0;

	(void)state;
	assert_int_equal(fc_preproc_preset(&p, "torchvision", 64), 0);
	for (int i = 0; i < N; i++) {
		fc_image img;
		data[i] = read_file(names[i], &len[i]);
		assert_int_equal(fc_image_decode(&img, data[i], len[i], NULL, 0), 0);
		ref[i] = malloc(64 * 64 * 3);
		assert_non_null(ref[i]);
		assert_int_equal(fc_preprocess_u8(&p, &img, ref[i]), 0);
		fc_image_free(&img);
	}
#pragma omp parallel for schedule(dynamic) reduction(+ : fails)
	for (int t = 0; t < N * REP; t++) {
		fc_image img;
		uint8_t out[64 * 64 * 3];
		int i = t % N;
		if (fc_image_decode(&img, data[i], len[i], NULL, 0) != 0 ||
		    fc_preprocess_u8(&p, &img, out) != 0 || memcmp(out, ref[i], sizeof out) != 0)
			fails++;
		fc_image_free(&img);
	}
	assert_int_equal(fails, 0);
	for (int i = 0; i < N; i++) {
		free(data[i]);
		free(ref[i]);
	}
}

/* --------------------------------------------------------- preprocessing */

static void test_preprocess_fixtures(void **state)
{
	int n, checked = 0, exact = 0;
	entry *m = manifest(&n);
	double worst_mean = 0, worst_f32 = 0;
	int worst_max = 0;

	(void)state;
	for (int i = 0; i < n; i++) {
		fc_preproc p;
		fc_image img;
		expected e;
		int norm, rc;

		if (strcmp(m[i].spec, "decode") == 0)
			continue;
		spec_parse(&p, &norm, m[i].spec);
		pil_image(&img, m[i].input);
		expected_load(&e, m[i].file);
		if (!norm) {
			uint8_t *out = malloc(e.n);
			size_t sum = 0;
			int maxdiff = 0;
			assert_non_null(out);
			assert_int_equal(e.dtype, 1);
			assert_int_equal(e.dim[0], p.crop_h);
			assert_int_equal(e.dim[1], p.crop_w);
			rc = fc_preprocess_u8(&p, &img, out);
			assert_int_equal(rc, 0);
			for (size_t j = 0; j < e.n; j++) {
				int d = abs((int)out[j] - (int)((uint8_t *)e.data)[j]);
				sum += (size_t)d;
				maxdiff = d > maxdiff ? d : maxdiff;
			}
			if (maxdiff > 2 || (double)sum / (double)e.n > 0.25)
				fail_msg("%s %s: max diff %d, mean %.4f vs PIL", m[i].input, m[i].spec,
					 maxdiff, (double)sum / (double)e.n);
			if (maxdiff)
				print_message("# %s %s: max diff %d, mean %.4f vs PIL\n", m[i].input,
					      m[i].spec, maxdiff, (double)sum / (double)e.n);
			exact += maxdiff == 0;
			worst_max = maxdiff > worst_max ? maxdiff : worst_max;
			if ((double)sum / (double)e.n > worst_mean)
				worst_mean = (double)sum / (double)e.n;
			free(out);
		} else {
			float *out = malloc(e.n * sizeof *out);
			double maxdiff = 0;
			assert_non_null(out);
			assert_int_equal(e.dtype, 2);
			assert_int_equal(e.dim[0], 3);
			assert_int_equal(e.dim[1], p.crop_h);
			assert_int_equal(e.dim[2], p.crop_w);
			rc = fc_preprocess(&p, &img, out);
			assert_int_equal(rc, 0);
			for (size_t j = 0; j < e.n; j++) {
				double d = fabs((double)out[j] - (double)((float *)e.data)[j]);
				maxdiff = d > maxdiff ? d : maxdiff;
			}
			if (maxdiff > 1e-6)
				fail_msg("%s %s: max diff %g vs torchvision", m[i].input, m[i].spec,
					 maxdiff);
			worst_f32 = maxdiff > worst_f32 ? maxdiff : worst_f32;
			exact += maxdiff == 0;
			free(out);
		}
		checked++;
		fc_image_free(&img);
		free(e.data);
	}
	print_message("# %d preprocessing fixtures, %d exact; worst u8 max diff %d, mean %.4f; "
		      "worst f32 diff %g\n",
		      checked, exact, worst_max, worst_mean, worst_f32);
	assert_true(checked >= 40);
	free(m);
}

/* Pillow's resampling written the slow, obvious way in doubles: per output
 * sample, the window and the normalised weights, sum, round; the horizontal
 * pass rounded to 8 bits before the vertical one. It differs from the
 * fixed-point code only by weight rounding, so by at most a unit or two. */
static double ref_filter(double x, int filter)
{
	x = fabs(x);
	if (filter == FC_RESAMPLE_BILINEAR)
		return x < 1 ? 1 - x : 0;
	if (x < 1)
		return (1.5 * x - 2.5) * x * x + 1;
	if (x < 2)
		return ((-0.5 * x + 2.5) * x - 4) * x + 2;
	return 0;
}

/* dst[o * dstep] for o < out = resample of src[i * sstep] for i < in */
static void ref_line(uint8_t *dst, size_t dstep, const uint8_t *src, size_t sstep, int in, int out,
		     int filter)
{
	double scale = (double)in / out, fs = scale > 1 ? scale : 1;
	double support = (filter == FC_RESAMPLE_BILINEAR ? 1 : 2) * fs;

	if (in == out) { /* Pillow skips the pass */
		for (int o = 0; o < in; o++)
			dst[o * dstep] = src[o * sstep];
		return;
	}
	for (int o = 0; o < out; o++) {
		double c = (o + 0.5) * scale, sum = 0, wsum = 0;
		int lo = (int)floor(c - support + 0.5), hi = (int)floor(c + support + 0.5);
		lo = lo < 0 ? 0 : lo;
		hi = hi > in ? in : hi;
		for (int i = lo; i < hi; i++) {
			double w = ref_filter((i + 0.5 - c) / fs, filter);
			sum += w * src[i * sstep];
			wsum += w;
		}
		sum = floor(sum / wsum + 0.5);
		dst[o * dstep] = (uint8_t)(sum < 0 ? 0 : sum > 255 ? 255 : sum);
	}
}

static void ref_resize(uint8_t *dst, const uint8_t *src, int w, int h, int rw, int rh, int filter)
{
	uint8_t *mid = malloc((size_t)rw * h * 3);

	assert_non_null(mid);
	for (int y = 0; y < h; y++)
		for (int c = 0; c < 3; c++)
			ref_line(mid + (size_t)y * rw * 3 + c, 3, src + (size_t)y * w * 3 + c, 3, w, rw,
				 filter);
	for (int x = 0; x < rw; x++)
		for (int c = 0; c < 3; c++)
			ref_line(dst + (size_t)x * 3 + c, (size_t)rw * 3, mid + (size_t)x * 3 + c,
				 (size_t)rw * 3, h, rh, filter);
	free(mid);
}

/* 4 x 1 -> 2 x 1 bilinear by hand: scale 2, so the triangle is 2 wide.
 * Output 0 is centred on 1.0, window [int(-0.5), int(3.5)) = [0, 3), weights
 * tri(-0.25), tri(0.25), tri(0.75) = 0.75, 0.75, 0.25 over 1.75: for
 * 10, 20, 30 that is 120 / 7 = 17.14 -> 17. Output 1 is centred on 3.0,
 * window [1, 4), weights 0.25, 0.75, 0.75: (5 + 22.5 + 30) / 1.75 = 32.86
 * -> 33. */
static void test_resample_by_hand(void **state)
{
	uint8_t px[4 * 3], out[2 * 3];
	fc_image img = {px, 4, 1};
	fc_preproc p;

	(void)state;
	for (int i = 0; i < 4; i++)
		px[3 * i] = px[3 * i + 1] = px[3 * i + 2] = (uint8_t)(10 * (i + 1));
	assert_int_equal(fc_preproc_preset(&p, "finetuner", 2), 0);
	p.resize_w = 2;
	p.resize_h = 1;
	p.crop_w = 2;
	p.crop_h = 1;
	p.filter = FC_RESAMPLE_BILINEAR;
	assert_int_equal(fc_preprocess_u8(&p, &img, out), 0);
	assert_int_equal(out[0], 17);
	assert_int_equal(out[3], 33);
	assert_int_equal(out[1], 17);
	assert_int_equal(out[5], 33);

	/* Upscaling 2 x 1 -> 4 x 1 bilinear: no widening, centres 0.25, 0.75,
	 * 1.25, 1.75. Output 0's window is [int(-0.25), int(1.75)) = [0, 1):
	 * pixel 0 alone -> 10. Output 1: [0, 2), weights tri(-0.25) = 0.75 and
	 * tri(0.75) = 0.25: 12.5 -> 13 (the fixed-point sum starts at one
	 * half). Output 2: 0.25, 0.75 -> 17.5 -> 18. Output 3: [1, 2) -> 20. */
	img.w = 2;
	p.resize_w = 4;
	p.crop_w = 4;
	{
		uint8_t up[4 * 3];
		assert_int_equal(fc_preprocess_u8(&p, &img, up), 0);
		assert_int_equal(up[0], 10);
		assert_int_equal(up[3], 13);
		assert_int_equal(up[6], 18);
		assert_int_equal(up[9], 20);
	}

	/* bicubic overshoot is clamped: a step 0 | 255 upscaled rings below 0
	 * and above 255 */
	px[0] = px[1] = px[2] = 0;
	px[3] = px[4] = px[5] = 0;
	px[6] = px[7] = px[8] = 255;
	px[9] = px[10] = px[11] = 255;
	img.w = 4;
	p.filter = FC_RESAMPLE_BICUBIC;
	p.resize_w = p.crop_w = 16;
	{
		uint8_t up[16 * 3];
		assert_int_equal(fc_preprocess_u8(&p, &img, up), 0);
		assert_int_equal(up[0], 0);
		assert_int_equal(up[15 * 3], 255);
		for (int i = 1; i < 16; i++) /* the ringing is clamped away */
			assert_true(up[3 * i] >= up[3 * (i - 1)]);
	}
}

static void test_resample_vs_reference(void **state)
{
	int worst = 0, cases = 0;
	size_t diffs = 0, total = 0;

	(void)state;
	for (int t = 0; t < 300; t++) {
		int w = testlib_int(1, 90), h = testlib_int(1, 90);
		fc_preproc p;
		fc_image img;
		uint8_t *full, *out;
		int rw, rh, ox, oy;

		assert_int_equal(fc_preproc_preset(&p, "finetuner", 8), 0);
		p.filter = testlib_int(0, 1);
		p.resize_w = testlib_int(1, 3) == 1 ? w : testlib_int(1, 120);
		p.resize_h = testlib_int(1, 3) == 1 ? h : testlib_int(1, 120);
		p.crop_w = testlib_int(1, 130);
		p.crop_h = testlib_int(1, 130);
		rw = p.resize_w;
		rh = p.resize_h;
		img.w = w;
		img.h = h;
		img.px = malloc((size_t)w * h * 3);
		full = malloc((size_t)rw * rh * 3);
		out = malloc((size_t)p.crop_w * p.crop_h * 3);
		assert_true(img.px && full && out);
		/* smooth content with noise and hard edges */
		for (int y = 0; y < h; y++)
			for (int x = 0; x < w; x++)
				for (int c = 0; c < 3; c++) {
					int v = (x * 7 + y * 3 + c * 50) % 256;
					if (testlib_int(0, 9) == 0)
						v = testlib_int(0, 1) * 255;
					img.px[((size_t)y * w + x) * 3 + c] = (uint8_t)v;
				}
		ref_resize(full, img.px, w, h, rw, rh, p.filter);
		assert_int_equal(fc_preprocess_u8(&p, &img, out), 0);
		/* centre crop offsets; Python rounds halves to even */
		ox = p.crop_w > rw ? -((p.crop_w - rw) / 2) : (int)nearbyint((rw - p.crop_w) / 2.0);
		oy = p.crop_h > rh ? -((p.crop_h - rh) / 2) : (int)nearbyint((rh - p.crop_h) / 2.0);
		for (int y = 0; y < p.crop_h; y++)
			for (int x = 0; x < p.crop_w; x++)
				for (int c = 0; c < 3; c++) {
					int sx = x + ox, sy = y + oy, want, d;
					want = sx < 0 || sy < 0 || sx >= rw || sy >= rh
						       ? 0
						       : full[((size_t)sy * rw + sx) * 3 + c];
					d = abs(out[((size_t)y * p.crop_w + x) * 3 + c] - want);
					if (d > 2)
						fail_msg("case %d: %dx%d -> %dx%d crop %dx%d filter %d: "
							 "(%d,%d,%d) is %d, reference %d",
							 t, w, h, rw, rh, p.crop_w, p.crop_h, p.filter, x,
							 y, c, out[((size_t)y * p.crop_w + x) * 3 + c],
							 want);
					worst = d > worst ? d : worst;
					diffs += d != 0;
					total++;
				}
		free(img.px);
		free(full);
		free(out);
		cases++;
	}
	print_message("# %d random resizes vs double reference: %zu of %zu samples off, max %d\n",
		      cases, diffs, total, worst);
	assert_true(diffs * 100 < total); /* weight rounding flips very few */
}

/* The normalised output is the u8 crop through x / 255, - mean, / std in
 * float32, planar. */
static void test_normalize(void **state)
{
	uint8_t px[5 * 4 * 3], u8[5 * 4 * 3];
	float out[3 * 5 * 4];
	fc_image img = {px, 5, 4};
	fc_preproc p;

	(void)state;
	for (size_t i = 0; i < sizeof px; i++)
		px[i] = (uint8_t)(i * 37 + 11);
	assert_int_equal(fc_preproc_preset(&p, "finetuner", 4), 0);
	p.resize_w = 5;
	p.resize_h = 4;
	p.crop_w = 5;
	p.crop_h = 4;
	p.mean[1] = 0.0f;
	p.std[1] = 1.0f;
	assert_int_equal(fc_preprocess_u8(&p, &img, u8), 0);
	assert_memory_equal(u8, px, sizeof px); /* same size: a copy */
	assert_int_equal(fc_preprocess(&p, &img, out), 0);
	for (int c = 0; c < 3; c++)
		for (int i = 0; i < 20; i++) {
			float want = ((float)px[3 * i + c] / 255.0f - p.mean[c]) / p.std[c];
			assert_true(out[c * 20 + i] == want);
		}
	assert_true(out[20 + 7] == (float)px[3 * 7 + 1] / 255.0f);
}

static void test_presets(void **state)
{
	fc_preproc p, bad;

	(void)state;
	assert_int_equal(fc_preproc_preset(&p, "torchvision", 224), 0);
	assert_int_equal(p.resize_short, 256);
	assert_int_equal(p.crop_w, 224);
	assert_int_equal(p.crop_h, 224);
	assert_int_equal(p.filter, FC_RESAMPLE_BILINEAR);
	assert_true(p.mean[0] == 0.485f && p.mean[1] == 0.456f && p.mean[2] == 0.406f);
	assert_true(p.std[0] == 0.229f && p.std[1] == 0.224f && p.std[2] == 0.225f);
	assert_int_equal(fc_preproc_preset(&p, "torchvision", 32), 0);
	assert_int_equal(p.resize_short, 36);
	assert_int_equal(fc_preproc_preset(&p, "finetuner", 224), 0);
	assert_int_equal(p.resize_short, 0);
	assert_int_equal(p.resize_w, 224);
	assert_int_equal(p.resize_h, 224);
	assert_int_equal(p.crop_w, 224);
	assert_int_equal(p.filter, FC_RESAMPLE_BICUBIC);
	assert_int_equal(fc_preproc_preset(&p, "finetuner", 4096), 0);
	assert_int_equal(fc_preproc_preset(&p, "torchvision", 3584), 0);
	assert_int_equal(fc_preproc_preset(&p, "torchvision", 3585), FC_ERR_INVALID);
	assert_int_equal(fc_preproc_preset(&p, "imagenet", 224), FC_ERR_INVALID);
	assert_int_equal(fc_preproc_preset(&p, "finetuner", 0), FC_ERR_INVALID);
	assert_int_equal(fc_preproc_preset(&p, "finetuner", 4097), FC_ERR_INVALID);
	assert_int_equal(fc_preproc_preset(&p, NULL, 224), FC_ERR_INVALID);
	assert_int_equal(fc_preproc_preset(NULL, "finetuner", 224), FC_ERR_INVALID);

	assert_int_equal(fc_preproc_preset(&p, "torchvision", 224), 0);
	assert_int_equal(fc_preproc_check(NULL), FC_ERR_INVALID);
	bad = p, bad.crop_w = 0;
	assert_int_equal(fc_preproc_check(&bad), FC_ERR_INVALID);
	bad = p, bad.crop_h = 4097;
	assert_int_equal(fc_preproc_check(&bad), FC_ERR_INVALID);
	bad = p, bad.resize_short = -1;
	assert_int_equal(fc_preproc_check(&bad), FC_ERR_INVALID);
	bad = p, bad.resize_short = 0; /* and resize_w, resize_h 0 */
	assert_int_equal(fc_preproc_check(&bad), FC_ERR_INVALID);
	bad = p, bad.filter = 2;
	assert_int_equal(fc_preproc_check(&bad), FC_ERR_INVALID);
	bad = p, bad.std[2] = 0.0f;
	assert_int_equal(fc_preproc_check(&bad), FC_ERR_INVALID);
	bad = p, bad.std[0] = NAN;
	assert_int_equal(fc_preproc_check(&bad), FC_ERR_INVALID);
	bad = p, bad.mean[1] = INFINITY;
	assert_int_equal(fc_preproc_check(&bad), FC_ERR_INVALID);

	{
		uint8_t px[3] = {1, 2, 3}, out[224 * 224 * 3];
		fc_image img = {px, 1, 1}, none = {NULL, 1, 1}, empty = {px, 0, 1};
		bad = p, bad.filter = 7;
		assert_int_equal(fc_preprocess_u8(&bad, &img, out), FC_ERR_INVALID);
		assert_int_equal(fc_preprocess_u8(&p, &none, out), FC_ERR_INVALID);
		assert_int_equal(fc_preprocess_u8(&p, &empty, out), FC_ERR_INVALID);
		assert_int_equal(fc_preprocess_u8(&p, NULL, out), FC_ERR_INVALID);
		assert_int_equal(fc_preprocess_u8(&p, &img, NULL), FC_ERR_INVALID);
		assert_int_equal(fc_preprocess(NULL, &img, (float *)(void *)out), FC_ERR_INVALID);
		/* 1 x 1 upscaled to 256 x 256 then cropped: a flat colour */
		assert_int_equal(fc_preprocess_u8(&p, &img, out), 0);
		for (size_t i = 0; i < sizeof out; i += 3)
			assert_true(out[i] == 1 && out[i + 1] == 2 && out[i + 2] == 3);
	}
}

/* A strip too extreme to resample within bounded scratch memory refuses
 * instead of allocating gigabytes (Pillow would). */
static void test_extreme_aspect(void **state)
{
	fc_image img;
	fc_preproc p;
	uint8_t out[224 * 224 * 3];

	(void)state;
	img.w = 20000000;
	img.h = 1;
	img.px = calloc((size_t)img.w, 3);
	assert_non_null(img.px);
	assert_int_equal(fc_preproc_preset(&p, "torchvision", 224), 0);
	/* the long side would be 256 * 2e7, beyond int */
	assert_int_equal(fc_preprocess_u8(&p, &img, out), FC_ERR_INVALID);
	assert_int_equal(fc_preproc_preset(&p, "finetuner", 224), 0);
	assert_int_equal(fc_preprocess_u8(&p, &img, out), FC_ERR_NOMEM);
	free(img.px);
}

/* ---------------------------------------------------------- bad input */

/* What every failed decode must leave: an error code, a message, no image. */
static void check_failed(int rc, const fc_image *img, const char *err, const char *what)
{
	if (rc >= 0)
		fail_msg("%s: accepted", what);
	if (img->px || img->w || img->h)
		fail_msg("%s: rc %d left an image behind", what, rc);
	if (!err[0])
		fail_msg("%s: rc %d without a message", what, rc);
}

static void test_not_an_image(void **state)
{
	fc_image img;
	char err[FC_ERRLEN];
	uint8_t junk[300];

	(void)state;
	assert_int_equal(fc_image_decode(&img, "", 0, err, sizeof err), FC_ERR_UNSUPPORTED);
	assert_string_equal(err, "not a JPEG or PNG file");
	assert_int_equal(fc_image_decode(&img, NULL, 0, err, sizeof err), FC_ERR_UNSUPPORTED);
	assert_null(img.px);
	assert_int_equal(fc_image_decode(NULL, "x", 1, err, sizeof err), FC_ERR_INVALID);
	assert_int_equal(fc_image_decode(&img, NULL, 5, err, sizeof err), FC_ERR_INVALID);
	assert_int_equal(fc_image_decode(&img, "GIF89a", 6, NULL, 0), FC_ERR_UNSUPPORTED);
	assert_int_equal(fc_image_decode(&img, "\xff\xd8", 2, err, sizeof err),
			 FC_ERR_UNSUPPORTED);
	assert_int_equal(fc_image_decode(&img, "\x89PNG\r\n\x1a", 7, err, sizeof err),
			 FC_ERR_UNSUPPORTED);
	/* a tiny err buffer is cut, not overrun */
	{
		char small[5];
		assert_int_equal(fc_image_decode(&img, "BM", 2, small, sizeof small),
				 FC_ERR_UNSUPPORTED);
		assert_string_equal(small, "not ");
	}
	fc_image_free(NULL);

	for (int t = 0; t < 200; t++) {
		size_t n = (size_t)testlib_int(0, (int)sizeof junk);
		int rc;
		for (size_t i = 0; i < n; i++)
			junk[i] = (uint8_t)testlib_rand();
		/* random bytes, then the same behind each signature */
		if (n && junk[0] == 0xff)
			junk[0] = 0;
		if (n && junk[0] == 0x89)
			junk[0] = 0;
		rc = fc_image_decode(&img, junk, n, err, sizeof err);
		assert_int_equal(rc, FC_ERR_UNSUPPORTED);
		check_failed(rc, &img, err, "random bytes");
		if (n >= 8) {
			memcpy(junk, "\xff\xd8\xff", 3);
			rc = fc_image_decode(&img, junk, n, err, sizeof err);
			check_failed(rc, &img, err, "random jpeg");
			memcpy(junk, "\x89PNG\r\n\x1a\n", 8);
			rc = fc_image_decode(&img, junk, n, err, sizeof err);
			assert_int_equal(rc, FC_ERR_CORRUPT);
			check_failed(rc, &img, err, "random png");
		}
	}
}

static void test_too_large(void **state)
{
	static const char *const names[] = {"huge_100000x100000.png", "huge_65000x65000.jpg"};
	fc_image img;
	char err[FC_ERRLEN];

	(void)state;
	for (int i = 0; i < 2; i++) {
		size_t len;
		uint8_t *data = read_file(names[i], &len);
		int rc = fc_image_decode(&img, data, len, err, sizeof err);
		assert_int_equal(rc, FC_ERR_OVERFLOW);
		check_failed(rc, &img, err, names[i]);
		assert_non_null(strstr(err, "more than the limit"));
		print_message("# %s: %s\n", names[i], err);
		free(data);
	}
}

/* Every prefix of a JPEG (it lacks the EOI marker) and every prefix of a
 * PNG that ends inside its image data fail as corrupt with a message; a
 * PNG cut after its image data still decodes (PIL does not need IEND). */
static void test_truncated(void **state)
{
	static const char *const names[] = {"photo_240x180_prog.jpg", "tiny_2x3.jpg",
					     "gray_161x97.jpg", "cmyk_40x30.jpg",
					     "exif_o6_be_45x30.jpg", "rgb_257x129.png",
					     "interlaced_gray16_33x21.png", "pal4_31x19.png",
					     "tiny_1x1.png", "rgba16_60x40.png"};
	int cuts = 0;

	(void)state;
	for (size_t f = 0; f < sizeof names / sizeof names[0]; f++) {
		size_t len, step;
		uint8_t *data = read_file(names[f], &len);
		int is_png = data[0] == 0x89;
		char err[FC_ERRLEN], last[FC_ERRLEN] = "";

		step = len / 150 + 1;
		for (size_t cut = 0; cut < len; cut += (cut < 400 || len - cut < 64) ? 1 : step) {
			fc_image img;
			uint8_t *copy = malloc(cut + 1); /* exact size, for ASan */
			int rc;
			assert_non_null(copy);
			memcpy(copy, data, cut);
			rc = fc_image_decode(&img, copy, cut, err, sizeof err);
			if (is_png && len - cut <= 12 && rc == 0) { /* inside IEND */
				fc_image_free(&img);
			} else {
				check_failed(rc, &img, err, names[f]);
				if (rc != (cut < (is_png ? 8u : 3u) ? FC_ERR_UNSUPPORTED : FC_ERR_CORRUPT))
					fail_msg("%s cut at %zu: rc %d (%s)", names[f], cut, rc, err);
				snprintf(last, sizeof last, "%s", err);
			}
			free(copy);
			cuts++;
		}
		print_message("# %s: cut near the end: %s\n", names[f], last);
		free(data);
	}
	print_message("# %d truncations refused\n", cuts);
}

/* Flipped bytes: whatever happens, no crash, and either an image or a
 * clean failure. */
static void test_flipped(void **state)
{
	static const char *const names[] = {"photo_240x180_prog.jpg", "photo_127x93_422.jpg",
					     "exif_o8_45x30.jpg", "cmyk_40x30.jpg",
					     "rgb_257x129.png", "interlaced_pal2_20x13.png",
					     "gray16_61x41.png", "pal_trns_70x50.png"};
	int ok = 0, failed = 0;

	(void)state;
	for (size_t f = 0; f < sizeof names / sizeof names[0]; f++) {
		size_t len;
		uint8_t *data = read_file(names[f], &len);
		for (int t = 0; t < 120; t++) {
			uint8_t *copy = malloc(len);
			char err[FC_ERRLEN];
			fc_image img;
			int nflip = testlib_int(1, 4), rc;
			assert_non_null(copy);
			memcpy(copy, data, len);
			for (int k = 0; k < nflip; k++) {
				/* mostly in the headers, where the parsing is */
				size_t at = testlib_int(0, 1) ? (size_t)testlib_int(0, (int)(len < 700 ? len - 1 : 699))
							      : (size_t)(testlib_rand() % len);
				copy[at] ^= (uint8_t)(1u << testlib_int(0, 7));
			}
			rc = fc_image_decode(&img, copy, len, err, sizeof err);
			if (rc == 0) {
				assert_true(img.px && img.w > 0 && img.h > 0);
				ok++;
			} else {
				check_failed(rc, &img, err, names[f]);
				failed++;
			}
			fc_image_free(&img);
			free(copy);
		}
		free(data);
	}
	print_message("# flipped bits: %d decoded anyway, %d refused\n", ok, failed);
}

/* Mean of each channel over a w x h RGB image. */
static void mean_rgb(const uint8_t *px, int w, int h, double m[3])
{
	m[0] = m[1] = m[2] = 0;
	for (size_t i = 0; i < (size_t)w * (size_t)h; i++)
		for (int c = 0; c < 3; c++)
			m[c] += px[i * 3 + c];
	for (int c = 0; c < 3; c++)
		m[c] /= (double)w * h;
}

/* The thumbnail of a photo: long side 96, ratio kept, and decoded back it
 * has the photo's colours, overall and in each cell of a 4 x 4 grid; a
 * small image is not scaled up. */
static void test_thumbnail_round_trip(void **state)
{
	(void)state;
	size_t len, tlen;
	uint8_t *data = read_file("photo_500x375.jpg", &len), *jpeg;
	fc_image img, back;
	int w, h;
	char err[FC_ERRLEN];
	assert_int_equal(fc_image_decode(&img, data, len, NULL, 0), 0);
	assert_int_equal(fc_image_thumbnail(&img, 96, 85, &jpeg, &tlen, &w, &h, err, sizeof err), 0);
	assert_int_equal(w, 96);
	assert_int_equal(h, 72); /* 375 / 500 * 96 */
	assert_true(tlen > 100 && tlen < 12000);
	assert_int_equal(fc_image_decode(&back, jpeg, tlen, NULL, 0), 0);
	assert_int_equal(back.w, 96);
	assert_int_equal(back.h, 72);
	double a[3], b[3];
	mean_rgb(img.px, img.w, img.h, a);
	mean_rgb(back.px, back.w, back.h, b);
	for (int c = 0; c < 3; c++)
		assert_true(fabs(a[c] - b[c]) < 3.0);
	/* Each grid cell's mean, from the photo's own pixels. */
	for (int gy = 0; gy < 4; gy++)
		for (int gx = 0; gx < 4; gx++) {
			double sa[3] = { 0 }, sb[3] = { 0 };
			size_t na = 0, nb = 0;
			for (int y = gy * img.h / 4; y < (gy + 1) * img.h / 4; y++)
				for (int x = gx * img.w / 4; x < (gx + 1) * img.w / 4; x++, na++)
					for (int c = 0; c < 3; c++)
						sa[c] += img.px[((size_t)y * img.w + x) * 3 + c];
			for (int y = gy * back.h / 4; y < (gy + 1) * back.h / 4; y++)
				for (int x = gx * back.w / 4; x < (gx + 1) * back.w / 4; x++, nb++)
					for (int c = 0; c < 3; c++)
						sb[c] += back.px[((size_t)y * back.w + x) * 3 + c];
			for (int c = 0; c < 3; c++)
				assert_true(fabs(sa[c] / (double)na - sb[c] / (double)nb) < 12.0);
		}
	fc_image_free(&back);
	free(jpeg);

	/* Small stays small. */
	fc_image tiny = { .w = 5, .h = 3 };
	tiny.px = malloc(5 * 3 * 3);
	assert_non_null(tiny.px);
	memset(tiny.px, 200, 5 * 3 * 3);
	assert_int_equal(fc_image_thumbnail(&tiny, 96, 90, &jpeg, &tlen, &w, &h, NULL, 0), 0);
	assert_int_equal(w, 5);
	assert_int_equal(h, 3);
	free(jpeg);
	assert_int_equal(fc_image_thumbnail(&tiny, 0, 90, &jpeg, &tlen, NULL, NULL, NULL, 0), FC_ERR_INVALID);
	assert_int_equal(fc_image_thumbnail(&tiny, 96, 101, &jpeg, &tlen, NULL, NULL, NULL, 0), FC_ERR_INVALID);
	assert_null(jpeg);
	fc_image_free(&tiny);
	fc_image_free(&img);
	free(data);
}

/* A JPEG whose EXIF says "rotate 90 degrees clockwise" (orientation 6) gets
 * a portrait thumbnail: exactly the thumbnail of the same JPEG without the
 * tag (orientation 1) turned by hand. */
static void test_thumbnail_exif(void **state)
{
	(void)state;
	size_t l1, l6, t1, t6;
	uint8_t *d1 = read_file("exif_o1_45x30.jpg", &l1), *d6 = read_file("exif_o6_45x30.jpg", &l6), *j1, *j6;
	fc_image a, b, rot;
	int w, h;
	assert_int_equal(fc_image_decode(&a, d1, l1, NULL, 0), 0);
	assert_int_equal(fc_image_decode(&b, d6, l6, NULL, 0), 0);
	assert_int_equal(a.w, 45);
	assert_int_equal(a.h, 30);
	rot.w = a.h;
	rot.h = a.w;
	rot.px = malloc((size_t)a.w * a.h * 3);
	assert_non_null(rot.px);
	for (int y = 0; y < rot.h; y++)
		for (int x = 0; x < rot.w; x++)
			memcpy(rot.px + ((size_t)y * rot.w + x) * 3, a.px + ((size_t)(a.h - 1 - x) * a.w + y) * 3, 3);
	assert_int_equal(fc_image_thumbnail(&b, 24, 90, &j6, &t6, &w, &h, NULL, 0), 0);
	assert_int_equal(w, 16);
	assert_int_equal(h, 24);
	assert_int_equal(fc_image_thumbnail(&rot, 24, 90, &j1, &t1, NULL, NULL, NULL, 0), 0);
	assert_int_equal(t1, t6);
	assert_memory_equal(j1, j6, t1);
	free(j1);
	free(j6);
	fc_image_free(&rot);
	fc_image_free(&a);
	fc_image_free(&b);
	free(d1);
	free(d6);
}

static int group_setup(void **state)
{
	const char *top = getenv("FC_TOP");

	(void)state;
	snprintf(fixture_dir, sizeof fixture_dir, "%s/tests/fixtures/images", top && *top ? top : ".");
	return 0;
}

int main(void)
{
	testlib_seed("test_image");

	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_decode_fixtures),
		cmocka_unit_test(test_decode_threads),
		cmocka_unit_test(test_preprocess_fixtures),
		cmocka_unit_test(test_resample_by_hand),
		cmocka_unit_test(test_resample_vs_reference),
		cmocka_unit_test(test_normalize),
		cmocka_unit_test(test_presets),
		cmocka_unit_test(test_extreme_aspect),
		cmocka_unit_test(test_not_an_image),
		cmocka_unit_test(test_too_large),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_flipped),
		cmocka_unit_test(test_thumbnail_round_trip),
		cmocka_unit_test(test_thumbnail_exif),
	};
	return cmocka_run_group_tests(tests, group_setup, NULL);
}
