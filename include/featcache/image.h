/*
 * image.h - decode JPEG and PNG files into 8-bit RGB and preprocess them
 * the way a PyTorch user's torchvision transforms on PIL images do.
 *
 * Decoding gives what PIL's Image.open(f).convert('RGB') gives (plus EXIF
 * orientation for JPEG, as ImageOps.exif_transpose): grayscale and palette
 * become RGB, alpha is dropped (not composited), 16-bit samples are reduced
 * the way PIL reduces them.
 *
 * Preprocessing re-implements Pillow's resampling (separable antialiased
 * convolution, horizontal pass then vertical, filter support scaled by the
 * downscale factor, 8-bit fixed-point coefficients, intermediate rounded to
 * 8 bits) and torchvision's Resize / CenterCrop geometry, then ToTensor and
 * Normalize. Only the pixels inside the crop are computed; they equal those
 * of resize-then-crop.
 *
 * Every function here is thread-safe on distinct arguments (the extract
 * pipeline decodes on several threads at once).
 */
#ifndef FEATCACHE_IMAGE_H
#define FEATCACHE_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "featcache/featcache.h"

#ifdef __cplusplus
extern "C" {
#endif


/* Images with more pixels than this are refused before any allocation
 * (PIL's own limit for a decompression bomb: 2 x 89,478,485). */
#define FC_IMAGE_MAX_PIXELS 178956970ull

/* An 8-bit RGB image, rows top to bottom, pixels interleaved R, G, B. */
typedef struct fc_image {
	uint8_t *px; /* w * h * 3 bytes, malloc'd */
	int w, h;
} fc_image;

/* fc_image_decode - decode the len bytes at data (a whole JPEG or PNG
 * file; the format is told by its signature, not a file name). On success
 * returns 0 and fills *out (free with fc_image_free). On failure *out is
 * empty and err (may be NULL) says why in lowercase words:
 *   FC_ERR_UNSUPPORTED  neither JPEG nor PNG ("not a JPEG or PNG file")
 *   FC_ERR_CORRUPT      truncated or undecodable data
 *   FC_ERR_OVERFLOW     dimensions beyond FC_IMAGE_MAX_PIXELS
 *   FC_ERR_NOMEM, FC_ERR_INVALID (NULL arguments) */
int fc_image_decode(fc_image *out, const void *data, size_t len, char *err, size_t errcap);

/* fc_image_free - release px and zero the struct; NULL is fine. */
void fc_image_free(fc_image *img);

enum fc_resample {
	FC_RESAMPLE_BILINEAR = 0, /* PIL's Image.BILINEAR (triangle filter, support 1) */
	FC_RESAMPLE_BICUBIC = 1   /* PIL's Image.BICUBIC (a = -0.5, support 2) */
};

/* How an image becomes the model's input. Either resize_short > 0: the
 * shorter side becomes resize_short and the longer int(resize_short *
 * long / short), as torchvision's Resize(int); or resize_short == 0 and
 * the image is resized to exactly resize_w x resize_h, as Resize((h, w)).
 * Then a centre crop of crop_w x crop_h with torchvision's offsets
 * (int(round((H - crop_h) / 2.0)), same for x); a crop larger than the
 * resized image is zero-padded as torchvision pads. Then x / 255, minus
 * mean, over std, per channel. */
typedef struct fc_preproc {
	int resize_short;
	int resize_w, resize_h;
	int crop_w, crop_h;
	int filter; /* enum fc_resample */
	float mean[3], std[3];
} fc_preproc;

/* fc_preproc_preset - fill *p from a preset name and an output size:
 *   "torchvision"  resize_short = size * 8 / 7 (256 for 224), bilinear, centre crop size x size
 *   "finetuner"    resize to size x size, bicubic, no crop
 * both with ImageNet's mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225).
 * Returns 0, or FC_ERR_INVALID for an unknown name or size outside 1..4096
 * (for "torchvision" 1..3584, so that resize_short stays within 4096). */
int fc_preproc_preset(fc_preproc *p, const char *name, int size);

/* fc_preproc_check - 0 if *p is usable, FC_ERR_INVALID otherwise (sizes
 * outside 1..4096, unknown filter, std 0 or not finite, mean not finite). */
int fc_preproc_check(const fc_preproc *p);

/* fc_preprocess_u8 - the resized, cropped 8-bit image, crop_h x crop_w x 3
 * interleaved, into dst: what PIL hands to ToTensor. Returns 0,
 * FC_ERR_INVALID (also when a resized side would exceed INT_MAX) or
 * FC_ERR_NOMEM (also for a strip with a side of several hundred thousand
 * pixels, which would need more than 256 MB of scratch memory). */
int fc_preprocess_u8(const fc_preproc *p, const fc_image *img, uint8_t *dst);

/* fc_preprocess - the model input, 3 x crop_h x crop_w planar f32 (CHW),
 * normalised, into dst. Returns 0, FC_ERR_INVALID or FC_ERR_NOMEM. */
int fc_preprocess(const fc_preproc *p, const fc_image *img, float *dst);

/* fc_image_thumbnail - img (as fc_image_decode gives it: EXIF orientation
 * applied) scaled down, never up, so that its longer side is at most
 * max_side (1..4096) with the ratio kept (the short side rounded, at least
 * 1), with the bilinear filter of fc_preprocess_u8 (antialiased like PIL's),
 * then encoded as a baseline JPEG (4:2:0) of the given quality (1..100).
 * On success *jpeg is malloc'd (free() it), *len its size, and *w, *h
 * (each may be NULL) the thumbnail's size. Returns 0, FC_ERR_INVALID for
 * bad arguments or FC_ERR_NOMEM, with the reason in err (may be NULL). */
int fc_image_thumbnail(const fc_image *img, int max_side, int quality, uint8_t **jpeg, size_t *len, int *w,
		       int *h, char *err, size_t errcap);

#ifdef __cplusplus
}
#endif
#endif /* FEATCACHE_IMAGE_H */
