/*
 * tool_int8_cosine.c - how close int8 embeddings are to f32 ones, on real
 * images: calibrates a model on one dataset (fc_calibrate, as `featcache
 * extract --precision int8` does), then runs every image of another
 * dataset through an f32 and an int8 engine and prints the per-embedding
 * cosine's minimum and median (README's int8 quality table).
 *
 *   tool_int8_cosine [--size N] [--preprocess P] [--calibrate N]
 *                    [--method max|percentile] [--batch B] [--threads T]
 *                    MODEL.onnx CALIB_DATA EVAL_DATA
 *
 * Prints one line, "MODEL int8 vs f32 on N images: min cosine X, median
 * Y; int8 convs/matmuls K of M (calibration S s)", where K counts the
 * Conv/Gemm/MatMul primitives that run in int8 and M all of them.
 * Exits 0, 1 on a failure (with the library's message) or 2 on bad usage.
 * Test tooling, not part of featcache.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "featcache/engine.h"
#include "featcache/extract.h"
#include "featcache/image.h"
#include "featcache/model.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static int open_engine(fc_engine **e, const fc_extractor_opts *o, int prec, const fc_calib *c)
{
	char err[FC_ERRLEN];
	fc_model *m = NULL;
	fc_engine_opts eo = { .batch = o->batch, .precision = prec, .threads = o->threads, .calib = c };
	int rc = fc_model_open(&m, o->model, err, sizeof err);
	if (!rc && (rc = fc_model_set_input(m, 1, 3, o->pre.crop_h, o->pre.crop_w)) == 0)
		rc = fc_model_cut(m, NULL);
	if (rc)
		fprintf(stderr, "tool_int8_cosine: cannot prepare '%s': %s\n", o->model, m ? fc_model_errmsg(m) : err);
	else if ((rc = fc_engine_open(e, m, &eo, err, sizeof err)))
		fprintf(stderr, "tool_int8_cosine: cannot open the engine: %s\n", err);
	fc_model_free(m);
	return rc;
}

static int read_image(const char *path, const fc_preproc *p, float *dst)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	long len = -1;
	fc_image im = { 0 };
	int rc = 1;
	if (f && fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (buf = malloc((size_t)len)) && fread(buf, 1, (size_t)len, f) == (size_t)len &&
	    fc_image_decode(&im, buf, (size_t)len, NULL, 0) == 0 && fc_preprocess(p, &im, dst) == 0)
		rc = 0;
	if (f)
		fclose(f);
	free(buf);
	fc_image_free(&im);
	return rc;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "size", required_argument, NULL, 's' },     { "preprocess", required_argument, NULL, 'p' },
		{ "calibrate", required_argument, NULL, 'c' }, { "method", required_argument, NULL, 'm' },
		{ "batch", required_argument, NULL, 'b' },    { "threads", required_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 },
	};
	const char *preset = "torchvision";
	int size = 224, ncal = 256, method = FC_CALIB_DEFAULT, c;
	fc_extractor_opts o = { .batch = 16, .precision = FC_PREC_INT8 };
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 's': size = atoi(optarg); break;
		case 'p': preset = optarg; break;
		case 'c': ncal = atoi(optarg); break;
		case 'm': method = fc_calib_method_parse(optarg); break;
		case 'b': o.batch = atoi(optarg); break;
		case 't': o.threads = atoi(optarg); break;
		default: goto usage;
		}
	}
	if (argc - optind != 3 || method < 0 || ncal < 1 || o.batch < 1 || o.threads < 0 ||
	    fc_preproc_preset(&o.pre, preset, size))
		goto usage;
	o.model = argv[optind];
	char err[FC_ERRLEN];
	fc_dataset cal = { 0 }, ev = { 0 };
	fc_calib *tab = NULL;
	fc_engine *e32 = NULL, *e8 = NULL;
	float *in = NULL, *y32 = NULL, *y8 = NULL;
	double *cosv = NULL;
	int rc = 1;
	if (fc_dataset_scan(&cal, argv[optind + 1], 0, err, sizeof err) ||
	    fc_dataset_scan(&ev, argv[optind + 2], 0, err, sizeof err)) {
		fprintf(stderr, "tool_int8_cosine: cannot read a dataset: %s\n", err);
		goto out;
	}
	double t0 = now();
	if (fc_calibrate(&tab, &o, &cal, (size_t)ncal, method, NULL, err, sizeof err)) {
		fprintf(stderr, "tool_int8_cosine: cannot calibrate: %s\n", err);
		goto out;
	}
	double tcal = now() - t0;
	if (open_engine(&e32, &o, FC_PREC_F32, NULL) || open_engine(&e8, &o, FC_PREC_INT8, tab))
		goto out;
	size_t img = (size_t)3 * size * size, dim = fc_engine_dim(e32), n = 0;
	int k8 = 0, km = 0;
	for (int i = 0; i < fc_engine_n_prims(e8); i++) {
		const char *info = fc_engine_prim_info(e8, i);
		int mm = strstr(info, " Conv: ") || strstr(info, " Gemm: ") || strstr(info, " MatMul: ");
		km += mm;
		k8 += mm && !strcmp(fc_engine_prim_precision(e8, i), "int8");
	}
	if (!(in = malloc((size_t)o.batch * img * sizeof *in)) || !(y32 = malloc((size_t)o.batch * dim * sizeof *y32)) ||
	    !(y8 = malloc((size_t)o.batch * dim * sizeof *y8)) || !(cosv = malloc((ev.n + 1) * sizeof *cosv)))
		goto out;
	for (size_t at = 0; at < ev.n;) {
		size_t filled = 0;
		for (; at < ev.n && filled < (size_t)o.batch; at++)
			if (!ev.entries[at].bad && read_image(ev.entries[at].path, &o.pre, in + filled * img) == 0)
				filled++;
		if (!filled)
			continue;
		if (fc_engine_run(e32, y32, in, filled) || fc_engine_run(e8, y8, in, filled)) {
			fprintf(stderr, "tool_int8_cosine: a run failed\n");
			goto out;
		}
		for (size_t r = 0; r < filled; r++) {
			double d = 0, na = 0, nb = 0;
			for (size_t j = 0; j < dim; j++) {
				d += (double)y32[r * dim + j] * y8[r * dim + j];
				na += (double)y32[r * dim + j] * y32[r * dim + j];
				nb += (double)y8[r * dim + j] * y8[r * dim + j];
			}
			cosv[n++] = na > 0 && nb > 0 ? d / sqrt(na * nb) : 0;
		}
	}
	if (!n) {
		fprintf(stderr, "tool_int8_cosine: no evaluation image could be read\n");
		goto out;
	}
	qsort(cosv, n, sizeof *cosv, cmp_double);
	printf("%s int8 (%s, %zu images) vs f32 on %zu images: min cosine %.5f, median %.5f; int8 convs/matmuls %d "
	       "of %d (calibration %.1f s)\n",
	       o.model, tab->method, tab->images, n, cosv[0], cosv[n / 2], k8, km, tcal);
	rc = 0;
out:
	free(in);
	free(y32);
	free(y8);
	free(cosv);
	fc_engine_free(e32);
	fc_engine_free(e8);
	fc_calib_free(tab);
	fc_dataset_free(&cal);
	fc_dataset_free(&ev);
	return rc;
usage:
	fprintf(stderr, "usage: tool_int8_cosine [--size N] [--preprocess P] [--calibrate N] [--method max|percentile]\n"
			"                        [--batch B] [--threads T] MODEL.onnx CALIB_DATA EVAL_DATA\n");
	return 2;
}
