/*
 * image.c - JPEG (TurboJPEG) and PNG (libpng) files to 8-bit RGB, pixel for
 * pixel what PIL's Image.open(f).convert('RGB') gives, with JPEG's EXIF
 * orientation applied as ImageOps.exif_transpose applies it.
 *
 * PIL links the same system libjpeg-turbo, so with the same (default,
 * accurate) DCT and fancy upsampling the JPEG pixels are identical. The PNG
 * side reproduces PIL's mode conversions by choosing libpng's transforms
 * (see decode_png_run).
 *
 * Also the way back for the report's thumbnails: an image scaled down with
 * preprocess.c's resampling and encoded as a small JPEG (fc_image_thumbnail).
 *
 * Not here: resizing and normalising (preprocess.c), any other format,
 * colour management (PIL ignores ICC profiles and gAMA too).
 */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <png.h>
#include <turbojpeg.h>

#include "featcache/image.h"
#include "util/util.h"

/* The size in bytes of a w x h image of `channels` bytes a pixel, after the
 * pixel-count limit (PIL refuses above it as a decompression bomb). Checked
 * before anything is allocated; 0 with the reason in err otherwise. */
static size_t image_bytes(uint64_t w, uint64_t h, unsigned channels, char *err, size_t cap)
{
	if (w == 0 || h == 0) {
		fci_errf(err, cap, 0, "image has no pixels (%llu x %llu)", (unsigned long long)w,
			(unsigned long long)h);
		return 0;
	}
	/* w and h are below 2^32 here, so w * h cannot wrap in 64 bits */
	if (w > UINT32_MAX || h > UINT32_MAX || w * h > FC_IMAGE_MAX_PIXELS) {
		fci_errf(err, cap, 0, "image is %llu x %llu pixels, more than the limit of %llu",
			(unsigned long long)w, (unsigned long long)h, FC_IMAGE_MAX_PIXELS);
		return 0;
	}
	if (w * h > SIZE_MAX / channels) {
		fci_errf(err, cap, 0, "image of %llu x %llu pixels does not fit in memory",
			(unsigned long long)w, (unsigned long long)h);
		return 0;
	}
	return (size_t)(w * h * channels);
}

/* ------------------------------------------------------------ JPEG */

static unsigned rd16(const uint8_t *p, int big)
{
	return big ? (unsigned)p[0] << 8 | p[1] : (unsigned)p[1] << 8 | p[0];
}

static uint32_t rd32(const uint8_t *p, int big)
{
	return big ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
		   : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

/* The Orientation (0x0112) of IFD0 in an APP1 payload starting "Exif\0",
 * or 1. Like PIL: a tag that is not a single SHORT or LONG, or a value
 * outside 2..8, leaves the image as it is; entries are read up to the first
 * one the data cuts short, and a repeated tag counts by its last copy.
 * (Where PIL raises on a malformed TIFF header we ignore the EXIF: a bad
 * orientation is no reason to lose the picture.) */
static int exif_orientation(const uint8_t *seg, size_t len)
{
	const uint8_t *t;
	size_t tlen, ifd, n, i;
	int big, orient = 1;

	if (len < 6 + 8 || memcmp(seg, "Exif\0\0", 6) != 0)
		return 1;
	t = seg + 6;
	tlen = len - 6;
	if (memcmp(t, "II*\0", 4) == 0)
		big = 0;
	else if (memcmp(t, "MM\0*", 4) == 0)
		big = 1;
	else
		return 1;
	ifd = rd32(t + 4, big);
	if (ifd > tlen || tlen - ifd < 2)
		return 1;
	n = rd16(t + ifd, big);
	for (i = 0; i < n; i++) {
		size_t e = ifd + 2 + i * 12;
		unsigned type;
		uint32_t v;
		if (e > tlen || tlen - e < 12)
			break;
		if (rd16(t + e, big) != 0x0112 || rd32(t + e + 4, big) != 1)
			continue;
		type = rd16(t + e + 2, big);
		if (type == 3) /* SHORT: the first two bytes of the value field */
			v = rd16(t + e + 8, big);
		else if (type == 4) /* LONG */
			v = rd32(t + e + 8, big);
		else
			continue;
		orient = v >= 1 && v <= 8 ? (int)v : 1;
	}
	return orient;
}

/* Walks the marker segments of a JPEG (after SOI) and the entropy-coded data
 * after each SOS, the way a decoder does. Returns 1 when an EOI marker is
 * reached inside the data, 0 if the data ends first. Sets *orient from the
 * first Exif APP1 before the first SOS (PIL keeps the first one too).
 *
 * Why our own walk: libjpeg reports running out of data only as a warning,
 * and TurboJPEG keeps only the first warning's text, which for a damaged
 * file is often another one ("extraneous bytes before marker"), so the
 * message cannot tell a truncated file from a merely sloppy one. */
static int jpeg_walk(const uint8_t *p, size_t n, int *orient)
{
	size_t i = 2;
	int seen_sos = 0, seen_exif = 0;

	*orient = 1;
	for (;;) {
		unsigned m;
		size_t seglen;
		/* Bytes that are not a marker are skipped as libjpeg skips
		 * them (it warns of "extraneous bytes"); so are fill bytes. */
		const uint8_t *ff = i < n ? memchr(p + i, 0xff, n - i) : NULL;
		if (!ff)
			return 0;
		i = (size_t)(ff - p);
		while (i + 1 < n && p[i + 1] == 0xff)
			i++;
		if (i + 1 >= n)
			return 0;
		m = p[i + 1];
		if (m == 0xd9)
			return 1;
		if (m == 0x00 || m == 0x01 || (m >= 0xd0 && m <= 0xd8)) {
			/* stuffed zero, TEM, RSTn, SOI: no length follows */
			i += 2;
			continue;
		}
		if (n - i < 4)
			return 0;
		seglen = rd16(p + i + 2, 1);
		if (seglen < 2 || n - i - 2 < seglen)
			return 0;
		if (m == 0xe1 && !seen_sos && !seen_exif && seglen - 2 >= 5 &&
		    memcmp(p + i + 4, "Exif\0", 5) == 0) {
			seen_exif = 1;
			*orient = exif_orientation(p + i + 4, seglen - 2);
		}
		i += 2 + seglen;
		if (m == 0xda) {
			/* Entropy-coded data: it ends at an 0xFF that is not
			 * followed by a stuffed 0 or a restart marker, which the
			 * loop above handles by skipping exactly those. */
			seen_sos = 1;
		}
	}
}

/* Adobe CMYK as PIL reads it: the stored bytes are inverted (PIL's rawmode
 * "CMYK;I", for every CMYK JPEG), then PIL's CMYK -> RGB takes, per channel
 * with the inverted values c and k, (255 - k) - c * (255 - k) / 255, the
 * division done as its MULDIV255: t = c * (255 - k) + 128, (t + (t >> 8)) >> 8.
 * In place, 4 to 3 bytes a pixel, front to back (the write never overtakes
 * the read). */
static void cmyk_to_rgb(uint8_t *px, size_t npix)
{
	for (size_t i = 0; i < npix; i++) {
		const uint8_t *s = px + 4 * i;
		unsigned nk = s[3]; /* 255 - (255 - stored k) */
		uint8_t rgb[3];
		for (int c = 0; c < 3; c++) {
			unsigned t = (255u - s[c]) * nk + 128;
			unsigned m = ((t >> 8) + t) >> 8;
			rgb[c] = (uint8_t)(nk - m);
		}
		memcpy(px + 3 * i, rgb, 3);
	}
}

/* The EXIF orientation applied as PIL's exif_transpose does (2 flips left
 * to right, 3 rotates 180, 4 flips top to bottom, 5 transposes, 6 rotates
 * 90 clockwise, 7 transverses, 8 rotates 90 anticlockwise). Output pixel
 * (x, y) of a W' x H' result comes from source (sx, sy) of the w x h input. */
static int orient_apply(fc_image *img, int orient, char *err, size_t cap)
{
	int w = img->w, h = img->h, swap = orient >= 5;
	int ow = swap ? h : w, oh = swap ? w : h;
	size_t bytes = (size_t)w * (size_t)h * 3;
	uint8_t *out;

	if (orient <= 1)
		return 0;
	out = malloc(bytes);
	if (!out) {
		fci_errf(err, cap, 0, "out of memory for a %d x %d image", w, h);
		return FC_ERR_NOMEM;
	}
	for (int y = 0; y < oh; y++) {
		uint8_t *d = out + (size_t)y * ow * 3;
		for (int x = 0; x < ow; x++, d += 3) {
			int sx, sy;
			switch (orient) {
			case 2: sx = w - 1 - x; sy = y; break;
			case 3: sx = w - 1 - x; sy = h - 1 - y; break;
			case 4: sx = x; sy = h - 1 - y; break;
			case 5: sx = y; sy = x; break;
			case 6: sx = y; sy = h - 1 - x; break;
			case 7: sx = w - 1 - y; sy = h - 1 - x; break;
			default: sx = w - 1 - y; sy = x; break; /* 8 */
			}
			memcpy(d, img->px + ((size_t)sy * w + sx) * 3, 3);
		}
	}
	free(img->px);
	img->px = out;
	img->w = ow;
	img->h = oh;
	return 0;
}

static int decode_jpeg(fc_image *out, const uint8_t *data, size_t len, char *err, size_t cap)
{
	tjhandle tj = NULL;
	uint8_t *px = NULL;
	int w = 0, h = 0, subsamp, cs = 0, cmyk, orient, rc;
	size_t bytes;
	/* Accurate integer DCT and fancy upsampling are libjpeg's defaults and
	 * what PIL uses; say so rather than rely on it. LIMITSCANS refuses
	 * progressive files of more than 500 scans, a known way to make a
	 * few kilobytes take minutes to decode. */
	const int flags = TJFLAG_ACCURATEDCT | TJFLAG_LIMITSCANS;

#if SIZE_MAX > ULONG_MAX
	if (len > ULONG_MAX) { /* TurboJPEG takes the length as unsigned long */
		fci_errf(err, cap, 0, "jpeg data too large");
		return FC_ERR_UNSUPPORTED;
	}
#endif
	if (!jpeg_walk(data, len, &orient)) {
		fci_errf(err, cap, 0, "truncated jpeg data");
		return FC_ERR_CORRUPT;
	}
	tj = tjInitDecompress();
	if (!tj) {
		fci_errf(err, cap, 0, "jpeg: %s", tjGetErrorStr2(NULL));
		return FC_ERR_NOMEM;
	}
	/* Warnings (TJERR_WARNING) are not failures: PIL ignores them too. */
	if (tjDecompressHeader3(tj, data, (unsigned long)len, &w, &h, &subsamp, &cs) != 0 &&
	    tjGetErrorCode(tj) != TJERR_WARNING) {
		fci_errf(err, cap, 0, "jpeg: %s", tjGetErrorStr2(tj));
		rc = FC_ERR_CORRUPT;
		goto out;
	}
	/* TurboJPEG decodes CMYK and YCCK files only to CMYK. */
	cmyk = cs == TJCS_CMYK || cs == TJCS_YCCK;
	bytes = image_bytes((uint64_t)(w > 0 ? w : 0), (uint64_t)(h > 0 ? h : 0), cmyk ? 4 : 3,
			    err, cap);
	if (!bytes) {
		rc = w > 0 && h > 0 ? FC_ERR_OVERFLOW : FC_ERR_CORRUPT;
		goto out;
	}
	px = malloc(bytes);
	if (!px) {
		fci_errf(err, cap, 0, "out of memory for a %d x %d image", w, h);
		rc = FC_ERR_NOMEM;
		goto out;
	}
	if (tjDecompress2(tj, data, (unsigned long)len, px, w, 0, h, cmyk ? TJPF_CMYK : TJPF_RGB,
			  flags) != 0) {
		const char *msg = tjGetErrorStr2(tj);
		if (tjGetErrorCode(tj) != TJERR_WARNING) {
			fci_errf(err, cap, 0, "jpeg: %s", msg);
			rc = FC_ERR_CORRUPT;
			goto out;
		}
		/* jpeg_walk found an EOI, but keep this as a second net */
		if (strstr(msg, "Premature end of JPEG file")) {
			fci_errf(err, cap, 0, "truncated jpeg data");
			rc = FC_ERR_CORRUPT;
			goto out;
		}
	}
	if (cmyk) {
		uint8_t *shrunk;
		cmyk_to_rgb(px, (size_t)w * (size_t)h);
		shrunk = realloc(px, (size_t)w * (size_t)h * 3);
		if (shrunk)
			px = shrunk;
	}
	out->px = px;
	out->w = w;
	out->h = h;
	px = NULL;
	rc = orient_apply(out, orient, err, cap);
	if (rc)
		fc_image_free(out);
out:
	free(px);
	tjDestroy(tj);
	return rc;
}

/* ------------------------------------------------------------- PNG */

/* Everything decode_png_run allocates lives here, in the caller's frame:
 * after a longjmp out of libpng the locals of the function that called
 * setjmp are indeterminate unless volatile, but this struct is not one of
 * them, so the caller can always free what was allocated. */
struct png_job {
	png_structp png;
	png_infop info;
	const uint8_t *data;
	size_t len, pos;
	uint8_t *px;
	png_bytep *rows;
	int w, h;
	int rc; /* set before a deliberate png_error, else the error is corruption */
	char msg[FC_ERRLEN];
};

static void png_on_error(png_structp png, png_const_charp msg)
{
	struct png_job *job = png_get_error_ptr(png);

	/* messages from the read callback and our checks are already ours */
	if (!job->rc)
		snprintf(job->msg, sizeof job->msg, "png: %s", msg);
	png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg)
{
	/* PIL carries on past what libpng warns about; so do we. */
	(void)png;
	(void)msg;
}

static void png_read_mem(png_structp png, png_bytep dst, size_t n)
{
	struct png_job *job = png_get_io_ptr(png);

	if (n > job->len - job->pos) {
		job->rc = FC_ERR_CORRUPT;
		snprintf(job->msg, sizeof job->msg, "truncated png data");
		png_error(png, "truncated");
	}
	memcpy(dst, job->data + job->pos, n);
	job->pos += n;
}

/* Sets up libpng's transforms so that what it hands over is what PIL's
 * convert('RGB') makes of the file:
 *   gray 1/2/4 bit   scaled to 8 bits by bit replication (PIL's L;2, L;4, 1)
 *   palette          looked up; tRNS dropped (convert('RGB') drops alpha)
 *   16-bit RGB(A)    the high byte of each sample (PIL's RGB;16B, RGBA;16B),
 *   16-bit gray+A    likewise (PIL reads it as RGBA via LA;16B)
 *   16-bit gray      PIL opens it as mode I and clamps at 255 when it makes
 *                    RGB: read as 16 bits and clamped below
 *   alpha            stripped, not composited
 *   gray             replicated to R, G, B
 * No gamma, no sBIT: PIL applies neither. */
static int decode_png_run(struct png_job *job)
{
	png_uint_32 w, h;
	int depth, ctype, interlace, gray16;
	size_t bytes, rowbytes;

	if (setjmp(png_jmpbuf(job->png)))
		return job->rc ? job->rc : FC_ERR_CORRUPT;

	png_set_read_fn(job->png, job, png_read_mem);
	/* libpng's default cap of 1,000,000 a side refuses what PIL opens;
	 * the pixel limit below is the one that matters. */
	png_set_user_limits(job->png, 0x7fffffff, 0x7fffffff);
	png_read_info(job->png, job->info);
	png_get_IHDR(job->png, job->info, &w, &h, &depth, &ctype, &interlace, NULL, NULL);

	bytes = image_bytes(w, h, 3, job->msg, sizeof job->msg);
	if (!bytes) {
		job->rc = FC_ERR_OVERFLOW;
		png_error(job->png, "too large");
	}
	gray16 = depth == 16 && ctype == PNG_COLOR_TYPE_GRAY;
	if (ctype == PNG_COLOR_TYPE_PALETTE)
		png_set_palette_to_rgb(job->png);
	if ((ctype & PNG_COLOR_MASK_COLOR) == 0 && depth < 8)
		png_set_expand_gray_1_2_4_to_8(job->png);
	if (depth == 16 && !gray16)
		png_set_strip_16(job->png);
	/* also for a palette with tRNS, which palette_to_rgb makes RGBA */
	png_set_strip_alpha(job->png);
	if ((ctype & PNG_COLOR_MASK_COLOR) == 0 && !gray16)
		png_set_gray_to_rgb(job->png);
	png_set_interlace_handling(job->png);
	png_read_update_info(job->png, job->info);

	/* every row is read straight into its place in px: 3 bytes a pixel,
	 * or 2 for 16-bit gray, expanded in place afterwards */
	rowbytes = png_get_rowbytes(job->png, job->info);
	if (rowbytes != (size_t)w * (gray16 ? 2 : 3)) {
		job->rc = FC_ERR_INTERNAL;
		snprintf(job->msg, sizeof job->msg,
			 "png: unexpected row size %zu for %u pixels (bit depth %d, colour type %d)",
			 rowbytes, (unsigned)w, depth, ctype);
		png_error(job->png, "row size");
	}
	job->px = malloc(bytes);
	job->rows = malloc(h * sizeof *job->rows);
	if (!job->px || !job->rows) {
		job->rc = FC_ERR_NOMEM;
		snprintf(job->msg, sizeof job->msg, "out of memory for a %u x %u image",
			 (unsigned)w, (unsigned)h);
		png_error(job->png, "nomem");
	}
	for (png_uint_32 y = 0; y < h; y++)
		job->rows[y] = job->px + (size_t)y * w * 3;
	png_read_image(job->png, job->rows);
	/* No png_read_end: PIL does not need what follows the image data
	 * (IEND, text chunks) either. */

	if (gray16) {
		for (png_uint_32 y = 0; y < h; y++) {
			uint8_t *row = job->rows[y];
			/* back to front: pixel x's 3 bytes start at 3x >= 2x + 1 */
			for (size_t x = w; x-- > 0;) {
				unsigned v = (unsigned)row[2 * x] << 8 | row[2 * x + 1];
				uint8_t g = v > 255 ? 255 : (uint8_t)v;
				row[3 * x] = row[3 * x + 1] = row[3 * x + 2] = g;
			}
		}
	}
	job->w = (int)w;
	job->h = (int)h;
	return 0;
}

static int decode_png(fc_image *out, const uint8_t *data, size_t len, char *err, size_t cap)
{
	struct png_job job;
	int rc;

	memset(&job, 0, sizeof job);
	job.data = data;
	job.len = len;
	job.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &job, png_on_error, png_on_warning);
	if (job.png)
		job.info = png_create_info_struct(job.png);
	if (!job.png || !job.info) {
		fci_errf(err, cap, 0, "png: out of memory");
		rc = FC_ERR_NOMEM;
		goto out;
	}
	rc = decode_png_run(&job);
	if (rc) {
		fci_errf(err, cap, 0, "%s", job.msg[0] ? job.msg : "png: undecodable data");
		goto out;
	}
	out->px = job.px;
	out->w = job.w;
	out->h = job.h;
	job.px = NULL;
out:
	png_destroy_read_struct(&job.png, &job.info, NULL);
	free(job.rows);
	free(job.px);
	return rc;
}

/* ------------------------------------------------------------- API */

int fc_image_decode(fc_image *out, const void *data, size_t len, char *err, size_t errcap)
{
	static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
	const uint8_t *p = data;

	if (err && errcap)
		err[0] = '\0';
	if (!out || (!data && len)) {
		fci_errf(err, errcap, 0, "invalid arguments");
		return FC_ERR_INVALID;
	}
	memset(out, 0, sizeof *out);
	/* the signatures PIL's own format checks accept */
	if (len >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff)
		return decode_jpeg(out, p, len, err, errcap);
	if (len >= 8 && memcmp(p, png_sig, 8) == 0)
		return decode_png(out, p, len, err, errcap);
	fci_errf(err, errcap, 0, "not a JPEG or PNG file");
	return FC_ERR_UNSUPPORTED;
}

void fc_image_free(fc_image *img)
{
	if (!img)
		return;
	free(img->px);
	memset(img, 0, sizeof *img);
}

/* ------------------------------------------------------- thumbnails */

int fc_image_thumbnail(const fc_image *img, int max_side, int quality, uint8_t **jpeg, size_t *len, int *tw,
		       int *th, char *err, size_t errcap)
{
	tjhandle tj = NULL;
	uint8_t *px = NULL, *buf = NULL;
	unsigned long n = 0;
	int rc;

	if (jpeg)
		*jpeg = NULL;
	if (len)
		*len = 0;
	if (!img || !img->px || img->w < 1 || img->h < 1 || !jpeg || !len || max_side < 1 || max_side > 4096 ||
	    quality < 1 || quality > 100)
		return fci_errf(err, errcap, FC_ERR_INVALID, "bad thumbnail arguments");
	/* Never up: a small image stays as it is; the long side becomes
	 * max_side and the short one keeps the ratio, rounded, at least 1. */
	int w = img->w, h = img->h;
	if (w > max_side || h > max_side) {
		int lw = w >= h;
		double r = (double)(lw ? h : w) / (double)(lw ? w : h);
		int s = (int)(r * max_side + 0.5);
		s = s < 1 ? 1 : s;
		w = lw ? max_side : s;
		h = lw ? s : max_side;
	}
	fc_preproc p = { .resize_w = w, .resize_h = h, .crop_w = w, .crop_h = h, .filter = FC_RESAMPLE_BILINEAR,
			 .std = { 1, 1, 1 } };
	if (!(px = malloc((size_t)w * (size_t)h * 3))) {
		rc = fci_errf(err, errcap, FC_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((rc = fc_preprocess_u8(&p, img, px)) != 0) {
		fci_errf(err, errcap, rc, "cannot scale a %d x %d image to %d x %d", img->w, img->h, w, h);
		goto out;
	}
	if (!(tj = tjInitCompress())) {
		rc = fci_errf(err, errcap, FC_ERR_NOMEM, "jpeg: %s", tjGetErrorStr2(NULL));
		goto out;
	}
	if (tjCompress2(tj, px, w, 0, h, TJPF_RGB, &buf, &n, TJSAMP_420, quality, TJFLAG_ACCURATEDCT) != 0) {
		rc = fci_errf(err, errcap, FC_ERR_NOMEM, "jpeg: %s", tjGetErrorStr2(tj));
		goto out;
	}
	/* TurboJPEG's buffer is freed with tjFree; the caller frees with free(). */
	if (!(*jpeg = malloc(n))) {
		rc = fci_errf(err, errcap, FC_ERR_NOMEM, "out of memory");
		goto out;
	}
	memcpy(*jpeg, buf, n);
	*len = n;
	if (tw)
		*tw = w;
	if (th)
		*th = h;
	rc = 0;
out:
	tjFree(buf);
	if (tj)
		tjDestroy(tj);
	free(px);
	return rc;
}
