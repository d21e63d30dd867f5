/*
 * tool_mkimage.c - write a small test image with deterministic content, for
 * the CLI tests of `featcache extract` (no Python needed at test time).
 *
 *   tool_mkimage OUT W H SEED [rgb|gray|rgba|palette|gray16]
 *   tool_mkimage --crops OUTDIR N SEED PHOTO...
 *
 * OUT ending in .png is written with libpng in the given mode, .jpg/.jpeg
 * with TurboJPEG (quality 90; gray gives a grayscale JPEG). The picture is
 * smooth gradients plus a few seeded blobs, so different seeds give
 * different images and different features.
 *
 * --crops cuts N distinct 500 x 375 JPEGs (quality 90) out of real photos:
 * a seeded random 4:3 window (30 to 100 % of the photo's height) of a
 * random photo, resized with featcache's own bilinear resampling. The
 * benchmarks use it to turn a few wallpapers into a few thousand photos.
 */
#include <png.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#include "featcache/image.h"

static uint32_t rng(uint64_t *s)
{
	*s = *s * 6364136223846793005ull + 1442695040888963407ull;
	return (uint32_t)(*s >> 33);
}

static void paint(uint8_t *rgb, int w, int h, uint64_t seed)
{
	uint64_t s = seed * 2654435761ull + 1;
	int cx[4], cy[4], r[4], col[4][3];
	for (int k = 0; k < 4; k++) {
		cx[k] = (int)(rng(&s) % (uint32_t)w);
		cy[k] = (int)(rng(&s) % (uint32_t)h);
		r[k] = 2 + (int)(rng(&s) % (uint32_t)(1 + (w < h ? w : h) / 2));
		for (int c = 0; c < 3; c++)
			col[k][c] = (int)(rng(&s) % 256);
	}
	int base = (int)(rng(&s) % 256);
	for (int y = 0; y < h; y++)
		for (int x = 0; x < w; x++) {
			uint8_t *p = rgb + ((size_t)y * (size_t)w + (size_t)x) * 3;
			p[0] = (uint8_t)((base + x * 255 / (w > 1 ? w - 1 : 1)) & 255);
			p[1] = (uint8_t)((base / 2 + y * 255 / (h > 1 ? h - 1 : 1)) & 255);
			p[2] = (uint8_t)(base ^ ((x + y) & 255));
			for (int k = 0; k < 4; k++) {
				int dx = x - cx[k], dy = y - cy[k];
				if (dx * dx + dy * dy <= r[k] * r[k])
					for (int c = 0; c < 3; c++)
						p[c] = (uint8_t)col[k][c];
			}
		}
}

static int write_png(const char *path, const uint8_t *rgb, int w, int h, const char *mode)
{
	FILE *f = fopen(path, "wb");
	if (!f)
		return 1;
	png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
	png_infop info = png ? png_create_info_struct(png) : NULL;
	size_t row_bytes = (size_t)w * 8;
	uint8_t *row = malloc(row_bytes);
	if (!png || !info || !row || setjmp(png_jmpbuf(png))) {
		png_destroy_write_struct(&png, &info);
		free(row);
		fclose(f);
		return 1;
	}
	png_init_io(png, f);
	int type = PNG_COLOR_TYPE_RGB, depth = 8;
	if (strcmp(mode, "gray") == 0)
		type = PNG_COLOR_TYPE_GRAY;
	else if (strcmp(mode, "gray16") == 0)
		type = PNG_COLOR_TYPE_GRAY, depth = 16;
	else if (strcmp(mode, "rgba") == 0)
		type = PNG_COLOR_TYPE_RGBA;
	else if (strcmp(mode, "palette") == 0)
		type = PNG_COLOR_TYPE_PALETTE;
	png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, type, PNG_INTERLACE_NONE,
		     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
	if (type == PNG_COLOR_TYPE_PALETTE) {
		/* 6x6x6 colour cube */
		png_color pal[216];
		for (int i = 0; i < 216; i++) {
			pal[i].red = (png_byte)(i / 36 * 51);
			pal[i].green = (png_byte)(i / 6 % 6 * 51);
			pal[i].blue = (png_byte)(i % 6 * 51);
		}
		png_set_PLTE(png, info, pal, 216);
	}
	png_write_info(png, info);
	for (int y = 0; y < h; y++) {
		const uint8_t *p = rgb + (size_t)y * (size_t)w * 3;
		for (int x = 0; x < w; x++, p += 3) {
			int gray = (p[0] * 299 + p[1] * 587 + p[2] * 114) / 1000;
			switch (type) {
			case PNG_COLOR_TYPE_GRAY:
				if (depth == 16) {
					row[2 * x] = (uint8_t)gray;
					row[2 * x + 1] = p[2];
				} else
					row[x] = (uint8_t)gray;
				break;
			case PNG_COLOR_TYPE_RGBA:
				memcpy(row + 4 * x, p, 3);
				row[4 * x + 3] = (uint8_t)(x * 255 / (w > 1 ? w - 1 : 1));
				break;
			case PNG_COLOR_TYPE_PALETTE:
				row[x] = (uint8_t)((p[0] / 52) * 36 + (p[1] / 52) * 6 + p[2] / 52);
				break;
			default: memcpy(row + 3 * x, p, 3);
			}
		}
		png_write_row(png, row);
	}
	png_write_end(png, NULL);
	png_destroy_write_struct(&png, &info);
	free(row);
	return fclose(f) != 0;
}

static int write_jpeg(const char *path, const uint8_t *rgb, int w, int h, const char *mode)
{
	tjhandle tj = tjInitCompress();
	unsigned char *jpg = NULL;
	unsigned long len = 0;
	int gray = strcmp(mode, "gray") == 0, rc = 1;
	uint8_t *g = NULL;
	if (!tj)
		return 1;
	if (gray) {
		g = malloc((size_t)w * (size_t)h);
		if (!g)
			goto out;
		for (size_t i = 0; i < (size_t)w * (size_t)h; i++)
			g[i] = (uint8_t)((rgb[3 * i] * 299 + rgb[3 * i + 1] * 587 + rgb[3 * i + 2] * 114) / 1000);
	}
	if (tjCompress2(tj, gray ? g : rgb, w, 0, h, gray ? TJPF_GRAY : TJPF_RGB, &jpg, &len,
			gray ? TJSAMP_GRAY : TJSAMP_420, 90, 0) != 0)
		goto out;
	FILE *f = fopen(path, "wb");
	if (f) {
		rc = fwrite(jpg, 1, len, f) != len;
		rc |= fclose(f) != 0;
	}
out:
	free(g);
	tjFree(jpg);
	tjDestroy(tj);
	return rc;
}

static int read_all(const char *path, uint8_t **buf, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return 1;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	*buf = n > 0 ? malloc((size_t)n) : NULL;
	int rc = !*buf || fread(*buf, 1, (size_t)n, f) != (size_t)n;
	fclose(f);
	*len = (size_t)n;
	return rc;
}

static int crops(const char *outdir, int n, uint64_t seed, char **photos, int n_photos)
{
	fc_image *img = calloc((size_t)n_photos, sizeof *img);
	uint8_t *out = malloc(500 * 375 * 3), *win = NULL;
	int rc = !img || !out;
	for (int i = 0; !rc && i < n_photos; i++) {
		uint8_t *buf = NULL;
		size_t len = 0;
		char err[FC_ERRLEN] = "";
		rc = read_all(photos[i], &buf, &len) || fc_image_decode(&img[i], buf, len, err, sizeof err) != 0;
		if (rc)
			fprintf(stderr, "tool_mkimage: cannot decode '%s': %s\n", photos[i], err);
		free(buf);
	}
	uint64_t s = seed * 2654435761ull + 7;
	fc_preproc p = { .resize_w = 500, .resize_h = 375, .crop_w = 500, .crop_h = 375,
			 .filter = FC_RESAMPLE_BILINEAR, .std = { 1, 1, 1 } };
	for (int k = 0; !rc && k < n; k++) {
		const fc_image *src = &img[rng(&s) % (uint32_t)n_photos];
		int h = src->h < src->w * 3 / 4 ? src->h : src->w * 3 / 4;
		h = h * (30 + (int)(rng(&s) % 71)) / 100;
		if (h < 8)
			h = src->h;
		int w = h * 4 / 3 <= src->w ? h * 4 / 3 : src->w;
		int x0 = (int)(rng(&s) % (uint32_t)(src->w - w + 1)), y0 = (int)(rng(&s) % (uint32_t)(src->h - h + 1));
		free(win);
		win = malloc((size_t)w * (size_t)h * 3);
		if (!win)
			return 1;
		for (int y = 0; y < h; y++)
			memcpy(win + (size_t)y * (size_t)w * 3, src->px + ((size_t)(y0 + y) * (size_t)src->w + (size_t)x0) * 3,
			       (size_t)w * 3);
		fc_image part = { .px = win, .w = w, .h = h };
		char path[4200];
		snprintf(path, sizeof path, "%s/%06d.jpg", outdir, k);
		rc = fc_preprocess_u8(&p, &part, out) != 0 || write_jpeg(path, out, 500, 375, "rgb") != 0;
		if (rc)
			fprintf(stderr, "tool_mkimage: cannot write '%s'\n", path);
	}
	for (int i = 0; img && i < n_photos; i++)
		fc_image_free(&img[i]);
	free(img);
	free(win);
	free(out);
	return rc;
}

int main(int argc, char **argv)
{
	if (argc >= 6 && strcmp(argv[1], "--crops") == 0)
		return crops(argv[2], atoi(argv[3]), strtoull(argv[4], NULL, 10), argv + 5, argc - 5);
	if (argc < 5 || argc > 6) {
		fprintf(stderr, "usage: tool_mkimage OUT W H SEED [rgb|gray|rgba|palette|gray16]\n");
		return 2;
	}
	int w = atoi(argv[2]), h = atoi(argv[3]);
	uint64_t seed = strtoull(argv[4], NULL, 10);
	const char *mode = argc == 6 ? argv[5] : "rgb";
	if (w < 1 || h < 1 || w > 8192 || h > 8192) {
		fprintf(stderr, "tool_mkimage: bad size %dx%d\n", w, h);
		return 2;
	}
	uint8_t *rgb = malloc((size_t)w * (size_t)h * 3);
	if (!rgb)
		return 1;
	paint(rgb, w, h, seed);
	const char *dot = strrchr(argv[1], '.');
	int rc = dot && strcmp(dot, ".png") == 0 ? write_png(argv[1], rgb, w, h, mode)
						  : write_jpeg(argv[1], rgb, w, h, mode);
	free(rgb);
	if (rc)
		fprintf(stderr, "tool_mkimage: cannot write '%s'\n", argv[1]);
	return rc;
}
