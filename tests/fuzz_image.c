/*
 * fuzz_image.c - libFuzzer target for the image decoder (extract/image.c)
 * and, on what decodes, the preprocessing (extract/preprocess.c).
 *
 * The decoder must refuse (a negative code, a message, no image) or return
 * an image of w * h * 3 readable bytes within the pixel limit. A decoded
 * image is then preprocessed with a geometry taken from its first byte, so
 * that odd sizes reach the resampler.
 *
 * Only images of up to 2^20 pixels are preprocessed. A header may claim
 * 10000 x 10000 pixels over a few bytes of data: that decodes, to grey, as
 * PIL's would (0.3 s natively, a few seconds under the sanitizers), which
 * is correct behaviour; resampling it too would only slow the fuzzer.
 *
 * The seeds in tests/corpus/fuzz_image/ are tiny JPEG and PNG files of each
 * kind the decoder handles, plus a truncated and a not-an-image file.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "featcache/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fc_image img;
	char err[FC_ERRLEN];
	int rc = fc_image_decode(&img, data, size, err, sizeof err);

	if (rc > 0)
		abort();
	if (rc < 0) {
		if (img.px || img.w || img.h || !err[0] || strlen(err) >= sizeof err)
			abort();
		return 0;
	}
	if (!img.px || img.w < 1 || img.h < 1 ||
	    (uint64_t)img.w * (uint64_t)img.h > FC_IMAGE_MAX_PIXELS)
		abort();
	{
		size_t n = (size_t)img.w * img.h * 3;
		volatile uint8_t sink = (uint8_t)(img.px[0] + img.px[n - 1]);
		(void)sink;
	}
	if ((uint64_t)img.w * (uint64_t)img.h <= 1u << 20) {
		fc_preproc p;
		uint8_t sel = size ? data[size - 1] : 0;
		int s = 1 + sel % 40;
		float *out;
		if (fc_preproc_preset(&p, sel & 0x80 ? "finetuner" : "torchvision", s) != 0)
			abort();
		if (sel & 0x40) { /* a crop larger than the resize: padding */
			p.crop_w = s + 7;
			p.crop_h = s + 3;
		}
		out = malloc((size_t)p.crop_w * p.crop_h * 3 * sizeof *out);
		if (out && fc_preprocess(&p, &img, out) != 0)
			abort();
		free(out);
	}
	fc_image_free(&img);
	return 0;
}
