/*
 * preprocess.c - torchvision's Resize / CenterCrop / ToTensor / Normalize on
 * an 8-bit RGB image, with Pillow's resampling re-implemented so that the
 * 8-bit crop equals what PIL hands to ToTensor.
 *
 * Pillow's algorithm (libImaging/Resample.c), as facts this file follows:
 *  - separable: a horizontal pass into an 8-bit intermediate, then a
 *    vertical pass; a pass whose axis keeps its size is skipped;
 *  - output pixel i of an axis scaled by s = in / out is centred on
 *    (i + 0.5) * s; the filter is widened by max(s, 1) and its window is
 *    [int(centre - support + 0.5), int(centre + support + 0.5)) clipped to
 *    the image; each weight is filter((j - centre + 0.5) / max(s, 1)) and the
 *    weights are divided by their sum;
 *  - weights become integers with 22 fractional bits, rounded half away
 *    from zero; a sum starts at 2^21 (the rounding half) and the result is
 *    sum >> 22 clamped to 0..255.
 * The double arithmetic is done in Pillow's order so the weights are the
 * same doubles, hence the same integers, hence the same bytes.
 *
 * Unlike Pillow we resample only the pixels inside the centre crop: every
 * output pixel depends on its own window only, so the crop of the full
 * resize and the resize of the crop window are the same bytes.
 *
 * Not here: decoding (image.c), batching, threads (the caller runs one image
 * per thread; everything here is reentrant).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "featcache/image.h"

#define FC_PREPROC_MAX_SIZE 4096

#define PRECISION_BITS 22 /* Pillow's 32 - 8 - 2: 8 for the value, 2 of headroom */

/* No scratch buffer grows past this. Ordinary photos need a few MB at most;
 * only strips with a side of several hundred thousand pixels reach it (a
 * 1 x 500000 image resized to 224 x 224 reads every row for each output
 * column), and for those Pillow itself would want gigabytes. They fail with
 * FC_ERR_NOMEM instead. */
#define MAX_SCRATCH ((size_t)256 << 20)

static double filter_bilinear(double x)
{
	x = fabs(x);
	return x < 1.0 ? 1.0 - x : 0.0;
}

/* Keys' cubic convolution with a = -0.5, written as Pillow evaluates it
 * (the same operations in the same order, for the same doubles). */
static double filter_bicubic(double x)
{
	const double a = -0.5;

	x = fabs(x);
	if (x < 1.0)
		return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
	if (x < 2.0)
		return (((x - 5) * x + 8) * x - 4) * a;
	return 0.0;
}

/* The weights of output positions [first, first + count) of an axis resized
 * from in_size to out_size: output i reads taps[i] input pixels from
 * start[i] on, with weights coef[i * ksize ...]. */
typedef struct axis {
	int ksize;
	int *start, *taps;
	int32_t *coef;
} axis;

static void axis_free(axis *a)
{
	free(a->start);
	free(a->coef);
	memset(a, 0, sizeof *a);
}

static int axis_init(axis *a, int in_size, int out_size, int first, int count, int filter)
{
	double (*fn)(double) = filter == FC_RESAMPLE_BICUBIC ? filter_bicubic : filter_bilinear;
	double fsupport = filter == FC_RESAMPLE_BICUBIC ? 2.0 : 1.0;
	/* Pillow passes the box edges as float: the same rounding above 2^24 */
	double scale = (double)(float)in_size / out_size;
	double fscale = scale < 1.0 ? 1.0 : scale;
	double support = fsupport * fscale;
	double *w = NULL;
	int rc = 0;

	memset(a, 0, sizeof *a);
	/* in_size <= FC_IMAGE_MAX_PIXELS keeps ksize within int */
	a->ksize = (int)ceil(support) * 2 + 1;
	if ((size_t)count > MAX_SCRATCH / sizeof(double) / (size_t)a->ksize)
		return FC_ERR_NOMEM;
	a->start = malloc((size_t)count * 2 * sizeof(int));
	a->coef = malloc((size_t)count * a->ksize * sizeof(int32_t));
	w = malloc((size_t)a->ksize * sizeof(double));
	if (!a->start || !a->coef || !w) {
		rc = FC_ERR_NOMEM;
		goto out;
	}
	a->taps = a->start + count;
	for (int i = 0; i < count; i++) {
		double center = (first + i + 0.5) * scale;
		double ss = 1.0 / fscale, sum = 0.0;
		/* int() truncates toward zero, as Pillow's cast does */
		int lo = (int)(center - support + 0.5);
		int hi = (int)(center + support + 0.5);
		int32_t *k = a->coef + (size_t)i * a->ksize;
		if (lo < 0)
			lo = 0;
		if (hi > in_size)
			hi = in_size;
		for (int j = 0; j < hi - lo; j++) {
			w[j] = fn(((j + lo) - center + 0.5) * ss);
			sum += w[j];
		}
		for (int j = 0; j < a->ksize; j++) {
			double v = j < hi - lo ? (sum != 0.0 ? w[j] / sum : w[j]) : 0.0;
			v *= 1 << PRECISION_BITS;
			k[j] = (int32_t)(v < 0 ? v - 0.5 : v + 0.5);
		}
		a->start[i] = lo;
		a->taps[i] = hi - lo;
	}
out:
	free(w);
	if (rc)
		axis_free(a);
	return rc;
}

static uint8_t clip8(int32_t acc)
{
	int32_t v = acc >> PRECISION_BITS; /* arithmetic shift: floor, as Pillow */
	return v < 0 ? 0 : v > 255 ? 255 : (uint8_t)v;
}

/* dst (rows, n_out, 3) = horizontal resample of src rows (stride src_stride)
 * by the n_out positions of a. (Blocking several rows together to share
 * the weight loads measured slower than this plain loop.) */
static void resample_rows(uint8_t *dst, const uint8_t *src, size_t src_stride, int rows,
			  const axis *a, int n_out)
{
	for (int y = 0; y < rows; y++) {
		const uint8_t *s = src + (size_t)y * src_stride;
		uint8_t *d = dst + (size_t)y * n_out * 3;
		for (int x = 0; x < n_out; x++) {
			const int32_t *k = a->coef + (size_t)x * a->ksize;
			const uint8_t *p = s + (size_t)a->start[x] * 3;
			int32_t r = 1 << (PRECISION_BITS - 1), g = r, b = r;
			for (int j = 0; j < a->taps[x]; j++) {
				r += p[3 * j] * k[j];
				g += p[3 * j + 1] * k[j];
				b += p[3 * j + 2] * k[j];
			}
			d[3 * x] = clip8(r);
			d[3 * x + 1] = clip8(g);
			d[3 * x + 2] = clip8(b);
		}
	}
}

/* One output row (n bytes) = the taps rows from row start on of src
 * (stride src_stride), weighted by k. Sixteen bytes at a time with the sums
 * in a small fixed-size array: a loop of constant length is one the
 * compiler vectorises even at -O2, and the sums stay in registers. */
enum { COL_BLOCK = 16 };

static void resample_col(uint8_t *dst, const uint8_t *src, size_t src_stride, int start,
			 int taps, const int32_t *k, size_t n)
{
	size_t i = 0;

	for (; i + COL_BLOCK <= n; i += COL_BLOCK) {
		int32_t acc[COL_BLOCK];
		for (int b = 0; b < COL_BLOCK; b++)
			acc[b] = 1 << (PRECISION_BITS - 1);
		for (int j = 0; j < taps; j++) {
			const uint8_t *s = src + (size_t)(start + j) * src_stride + i;
			int32_t kj = k[j];
			for (int b = 0; b < COL_BLOCK; b++)
				acc[b] += s[b] * kj;
		}
		for (int b = 0; b < COL_BLOCK; b++)
			dst[i + b] = clip8(acc[b]);
	}
	for (; i < n; i++) {
		int32_t acc = 1 << (PRECISION_BITS - 1);
		for (int j = 0; j < taps; j++)
			acc += src[(size_t)(start + j) * src_stride + i] * k[j];
		dst[i] = clip8(acc);
	}
}

/* Python's round() of d / 2, halves to even, as torchvision's
 * int(round((H - h) / 2.0)) computes it (d >= 0). */
static int half_round_even(int d)
{
	int q = d / 2;
	return (d % 2) && (q % 2) ? q + 1 : q;
}

/* The resized size (torchvision's Resize) and, per axis, where the crop
 * starts in resized coordinates (negative: zero padding first). */
static int geometry(const fc_preproc *p, int w, int h, int *rw, int *rh, int *ox, int *oy)
{
	if (p->resize_short > 0) {
		int shorter = w <= h ? w : h, longer = w <= h ? h : w;
		/* Python's int(s * long / short): one correctly rounded
		 * division (s * long is exact in a double), then truncation */
		double l = (double)p->resize_short * longer / shorter;
		if (l >= 2147483647.0)
			return FC_ERR_INVALID;
		*rw = w <= h ? p->resize_short : (int)l;
		*rh = w <= h ? (int)l : p->resize_short;
	} else {
		*rw = p->resize_w;
		*rh = p->resize_h;
	}
	/* CenterCrop: a crop larger than the image pads it by (c - n) // 2
	 * before and the rest after, then crops at 0 on that axis */
	*ox = p->crop_w > *rw ? -((p->crop_w - *rw) / 2) : half_round_even(*rw - p->crop_w);
	*oy = p->crop_h > *rh ? -((p->crop_h - *rh) / 2) : half_round_even(*rh - p->crop_h);
	return 0;
}

int fc_preprocess_u8(const fc_preproc *p, const fc_image *img, uint8_t *dst)
{
	int rw, rh, ox, oy, x0, x1, y0, y1, nx, ny, need_h, need_v, rc;
	int row_first = 0, row_end;
	axis ax = {0}, ay = {0};
	uint8_t *tmp = NULL;
	const uint8_t *mid;
	size_t mid_stride, out_stride;

	if (!p || !img || !dst || !img->px || img->w < 1 || img->h < 1 || fc_preproc_check(p))
		return FC_ERR_INVALID;
	if ((uint64_t)img->w * (uint64_t)img->h > FC_IMAGE_MAX_PIXELS)
		return FC_ERR_INVALID;
	rc = geometry(p, img->w, img->h, &rw, &rh, &ox, &oy);
	if (rc)
		return rc;

	/* the resized pixels [x0, x1) x [y0, y1) land in the crop */
	x0 = ox > 0 ? ox : 0;
	y0 = oy > 0 ? oy : 0;
	x1 = ox + p->crop_w < rw ? ox + p->crop_w : rw;
	y1 = oy + p->crop_h < rh ? oy + p->crop_h : rh;
	nx = x1 - x0;
	ny = y1 - y0;
	out_stride = (size_t)p->crop_w * 3;
	if (p->crop_w > rw || p->crop_h > rh) /* padding (its offset may be 0) */
		memset(dst, 0, out_stride * p->crop_h);
	dst += (size_t)(y0 - oy) * out_stride + (size_t)(x0 - ox) * 3;

	need_h = rw != img->w;
	need_v = rh != img->h;
	row_end = img->h;
	if (need_v) {
		rc = axis_init(&ay, img->h, rh, y0, ny, p->filter);
		if (rc)
			goto out;
		/* the input rows the vertical pass reads */
		row_first = ay.start[0];
		row_end = ay.start[ny - 1] + ay.taps[ny - 1];
	} else {
		row_first = y0;
		row_end = y1;
	}

	if (need_h) {
		rc = axis_init(&ax, img->w, rw, x0, nx, p->filter);
		if (rc)
			goto out;
		if ((size_t)(row_end - row_first) > MAX_SCRATCH / 3 / (size_t)nx) {
			rc = FC_ERR_NOMEM;
			goto out;
		}
		tmp = malloc((size_t)(row_end - row_first) * nx * 3);
		if (!tmp) {
			rc = FC_ERR_NOMEM;
			goto out;
		}
		resample_rows(tmp, img->px + (size_t)row_first * img->w * 3, (size_t)img->w * 3,
			      row_end - row_first, &ax, nx);
		mid = tmp;
		mid_stride = (size_t)nx * 3;
	} else {
		mid = img->px + (size_t)row_first * img->w * 3 + (size_t)x0 * 3;
		mid_stride = (size_t)img->w * 3;
	}

	if (need_v) {
		for (int y = 0; y < ny; y++)
			resample_col(dst + (size_t)y * out_stride, mid, mid_stride,
				     ay.start[y] - row_first, ay.taps[y],
				     ay.coef + (size_t)y * ay.ksize, (size_t)nx * 3);
	} else {
		for (int y = 0; y < ny; y++)
			memcpy(dst + (size_t)y * out_stride, mid + (size_t)y * mid_stride,
			       (size_t)nx * 3);
	}
out:
	free(tmp);
	axis_free(&ax);
	axis_free(&ay);
	return rc;
}

int fc_preprocess(const fc_preproc *p, const fc_image *img, float *dst)
{
	float lut[3][256];
	uint8_t *u8;
	size_t n;
	int rc;

	if (!p || !dst || fc_preproc_check(p))
		return FC_ERR_INVALID;
	n = (size_t)p->crop_w * p->crop_h;
	u8 = malloc(n * 3);
	if (!u8)
		return FC_ERR_NOMEM;
	rc = fc_preprocess_u8(p, img, u8);
	if (rc)
		goto out;
	/* ToTensor then Normalize, in float32 and in torchvision's order
	 * (x / 255, minus mean, over std) so that the values are the same
	 * floats; only 256 distinct inputs a channel, hence the table. */
	for (int c = 0; c < 3; c++)
		for (int v = 0; v < 256; v++)
			lut[c][v] = ((float)v / 255.0f - p->mean[c]) / p->std[c];
	for (int c = 0; c < 3; c++) {
		float *d = dst + (size_t)c * n;
		for (size_t i = 0; i < n; i++)
			d[i] = lut[c][u8[3 * i + c]];
	}
out:
	free(u8);
	return rc;
}

static int size_ok(int v)
{
	return v >= 1 && v <= FC_PREPROC_MAX_SIZE;
}

int fc_preproc_check(const fc_preproc *p)
{
	if (!p)
		return FC_ERR_INVALID;
	if (p->resize_short < 0 || (p->resize_short > 0 && !size_ok(p->resize_short)))
		return FC_ERR_INVALID;
	if (p->resize_short == 0 && (!size_ok(p->resize_w) || !size_ok(p->resize_h)))
		return FC_ERR_INVALID;
	if (!size_ok(p->crop_w) || !size_ok(p->crop_h))
		return FC_ERR_INVALID;
	if (p->filter != FC_RESAMPLE_BILINEAR && p->filter != FC_RESAMPLE_BICUBIC)
		return FC_ERR_INVALID;
	for (int c = 0; c < 3; c++)
		if (!isfinite(p->std[c]) || p->std[c] == 0.0f || !isfinite(p->mean[c]))
			return FC_ERR_INVALID;
	return 0;
}

int fc_preproc_preset(fc_preproc *p, const char *name, int size)
{
	static const float mean[3] = {0.485f, 0.456f, 0.406f};
	static const float std[3] = {0.229f, 0.224f, 0.225f};

	if (!p || !name || !size_ok(size))
		return FC_ERR_INVALID;
	memset(p, 0, sizeof *p);
	if (strcmp(name, "torchvision") == 0) {
		p->resize_short = size * 8 / 7; /* 256 for 224, as the ImageNet recipe */
		p->filter = FC_RESAMPLE_BILINEAR;
	} else if (strcmp(name, "finetuner") == 0) {
		p->resize_w = p->resize_h = size;
		p->filter = FC_RESAMPLE_BICUBIC;
	} else {
		return FC_ERR_INVALID;
	}
	p->crop_w = p->crop_h = size;
	memcpy(p->mean, mean, sizeof mean);
	memcpy(p->std, std, sizeof std);
	return fc_preproc_check(p);
}
