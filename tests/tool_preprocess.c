/*
 * tool_preprocess.c - the model input featcache makes of image files, as a
 * 2-D float32 .npy: one row per image (3 x SIZE x SIZE, CHW), in the order
 * given. For checking an exported model in another runtime on exactly
 * what `featcache extract` feeds the backbone (tests/cli/export.sh).
 *
 * usage: tool_preprocess [--preset torchvision|finetuner] --size N OUT.npy IMAGE...
 * Test tooling: exits 0 on success, 1 on failure, 2 on a usage error.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "featcache/image.h"
#include "featcache/io.h"
#include "tests/testlib.h"

static const char usage_text[] = "usage: tool_preprocess [--preset NAME] --size N OUT.npy IMAGE...\n";

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "preset", required_argument, NULL, 'p' },
		{ "size", required_argument, NULL, 's' },
		{ NULL, 0, NULL, 0 },
	};
	const char *preset = "torchvision";
	int size = 0, c, status = 1;
	fc_preproc pre;
	float *rows = NULL;
	size_t n, cols;
	char err[FC_ERRLEN];

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'p': preset = optarg; break;
		case 's': size = atoi(optarg); break;
		default: fputs(usage_text, stderr); return 2;
		}
	}
	if (argc - optind < 2 || fc_preproc_preset(&pre, preset, size) != 0) {
		fputs(usage_text, stderr);
		return 2;
	}
	n = (size_t)(argc - optind - 1);
	cols = (size_t)3 * (size_t)pre.crop_h * (size_t)pre.crop_w;
	if (!(rows = malloc(n * cols * sizeof *rows))) {
		fprintf(stderr, "tool_preprocess: out of memory\n");
		return 1;
	}
	for (size_t i = 0; i < n; i++) {
		const char *path = argv[optind + 1 + (int)i];
		size_t len = 0;
		uint8_t *bytes = testlib_read_file(path, &len);
		fc_image img = { 0 };
		char why[FC_ERRLEN];
		int rc = bytes ? fc_image_decode(&img, bytes, len, why, sizeof why) : -1;

		free(bytes);
		if (rc == 0)
			rc = fc_preprocess(&pre, &img, rows + i * cols);
		fc_image_free(&img);
		if (rc) {
			fprintf(stderr, "tool_preprocess: cannot preprocess '%s'\n", path);
			goto out;
		}
	}
	if (fc_npy_write_f32(argv[optind], rows, n, cols, err, sizeof err) != 0) {
		fprintf(stderr, "tool_preprocess: cannot write '%s': %s\n", argv[optind], err);
		goto out;
	}
	status = 0;
out:
	free(rows);
	return status;
}
