/*
 * bench/extract_pipeline.c - the extract pipeline end to end, and the
 * incremental re-run, on real photos:
 *
 *   extract-pipeline  N JPEG photos (500 x 375, cut from Debian's
 *                     mate-backgrounds nature wallpapers by tests/tool_mkimage
 *                     --crops) through ResNet-50 into a fresh store, images/s
 *                     end to end (scan, hash, read, decode, resize, engine,
 *                     compress, commit) against the engine alone on the same
 *                     batches, measured before and after in the same run.
 *                     docs/design.md's target: >= 90 % of engine-only.
 *   incremental       add 1 % new photos and extract again: the second run's
 *                     time against the first's. Target: <= 3 %.
 *
 * Usage: extract_pipeline [--model FILE] [--photos DIR] [--n N] [--batch B]
 *                         [--threads T] [--tool PATH]
 * Defaults: build/models/resnet50.onnx, build/bench-data/photos, 2000, 32,
 * 2, build/tests/tool_mkimage. The photos are made when DIR has fewer.
 */
#include <dirent.h>
#include <getopt.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "featcache/engine.h"
#include "featcache/extract.h"
#include "featcache/model.h"

#include "bench/benchlib.h"

static int count_jpegs(const char *dir)
{
	DIR *d = opendir(dir);
	int n = 0;
	struct dirent *de;
	while (d && (de = readdir(d)) != NULL)
		n += strstr(de->d_name, ".jpg") != NULL;
	if (d)
		closedir(d);
	return n;
}

/* Engine alone: n images in batches of `batch` of one fixed input. */
static double engine_only(const char *model_path, int batch, int n)
{
	fc_model *m = NULL;
	fc_engine *e = NULL;
	char err[FC_ERRLEN];
	double rate = -1;
	if (fc_model_open(&m, model_path, err, sizeof err) || fc_model_set_input(m, batch, 3, 224, 224) ||
	    fc_model_cut(m, NULL)) {
		fprintf(stderr, "extract_pipeline: cannot load '%s': %s\n", model_path, m ? fc_model_errmsg(m) : err);
		goto out;
	}
	fc_engine_opts eo = { .batch = batch, .precision = FC_PREC_F32 };
	if (fc_engine_open(&e, m, &eo, err, sizeof err)) {
		fprintf(stderr, "extract_pipeline: engine: %s\n", err);
		goto out;
	}
	size_t in_len = (size_t)batch * 3 * 224 * 224, dim = fc_engine_dim(e);
	float *in = malloc(in_len * sizeof *in), *out = malloc((size_t)batch * dim * sizeof *out);
	for (size_t i = 0; i < in_len; i++)
		in[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
	fc_engine_run(e, out, in, (size_t)batch); /* warm-up */
	double t0 = bench_now();
	for (int done = 0; done < n; done += batch)
		fc_engine_run(e, out, in, (size_t)(n - done < batch ? n - done : batch));
	rate = n / (bench_now() - t0);
	free(in);
	free(out);
out:
	fc_engine_free(e);
	fc_model_free(m);
	return rate;
}

static int extract(fc_extract_ctx *x, const char *store_path, const char *photos, fc_extract_stats *st)
{
	fc_store *s = NULL;
	fc_store_opts so = { .create = 1 };
	fc_dataset ds;
	char err[FC_ERRLEN];
	/* the dataset links to the photo folders, which lie outside it */
	int rc = fc_dataset_scan(&ds, photos, FC_DATASET_FOLLOW_OUTSIDE, err, sizeof err);
	if (rc) {
		fprintf(stderr, "extract_pipeline: cannot read dataset '%s': %s\n", photos, err);
		return rc;
	}
	if ((rc = fc_store_open(&s, store_path, &so)) != 0)
		fprintf(stderr, "extract_pipeline: store: %s\n", fc_store_errmsg(s));
	fc_extract_run_opts ro = { .val_fraction = 0.1 };
	if (!rc && (rc = fc_extract_run(x, s, &ds, &ro, st, err, sizeof err)) != 0)
		fprintf(stderr, "extract_pipeline: %s\n", err);
	fc_store_free(s);
	fc_dataset_free(&ds);
	return rc;
}

int main(int argc, char **argv)
{
	bench_photo_opts po = { "build/models/resnet50.onnx", "build/bench-data/photos", 2000 };
	const char *tool = "build/tests/tool_mkimage";
	int batch = 32, threads = 2, c;
	static const struct option opts[] = {
		BENCH_PHOTO_OPTIONS,
		{ "batch", required_argument, NULL, 'b' },
		{ "threads", required_argument, NULL, 't' },
		{ "tool", required_argument, NULL, 'T' },
		{ NULL, 0, NULL, 0 },
	};
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'b': batch = atoi(optarg); break;
		case 't': threads = atoi(optarg); break;
		case 'T': tool = optarg; break;
		default:
			if (!bench_photo_opt(&po, c, optarg))
				return 2;
		}
	}
	const char *model = po.model, *photos = po.photos;
	int n = po.n;
	if (n < 100 || batch < 1 || threads < 1)
		return fprintf(stderr, "extract_pipeline: need --n >= 100, --batch >= 1, --threads >= 1\n"), 2;
	if (strlen(photos) > 1000)
		return fprintf(stderr, "extract_pipeline: --photos path too long\n"), 2;
	if (access(model, R_OK) != 0)
		return fprintf(stderr, "extract_pipeline: no model '%s' (make bench exports it)\n", model), 1;
	omp_set_num_threads(threads);

	/* The photos, and 1 % more kept aside for the incremental run. */
	char cmd[32768], base[1200], extra[1300], store[1300];
	snprintf(base, sizeof base, "%s/%d", photos, n);
	snprintf(extra, sizeof extra, "%s-extra", base);
	if (count_jpegs(base) < n) {
		snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s' && '%s' --crops '%s' %d 1 %s/*.jpg", base, base,
			 tool, base, n, BENCH_PHOTO_SRC);
		if (bench_sh("extract_pipeline", cmd))
			return 1;
	}
	int n_new = n / 100;
	snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s' && '%s' --crops '%s' %d 2 %s/*.jpg", extra, extra, tool,
		 extra, n_new, BENCH_PHOTO_SRC);
	if (bench_sh("extract_pipeline", cmd))
		return 1;
	snprintf(store, sizeof store, "%s/store", photos);

	fc_extractor_opts xo = { .model = model, .pre_name = "torchvision", .precision = FC_PREC_F32,
				 .store_dtype = FC_DTYPE_F16, .batch = batch, .threads = threads };
	fc_preproc_preset(&xo.pre, "torchvision", 224);
	fc_extract_ctx *x = NULL;
	char err[FC_ERRLEN];
	if (fc_extract_open(&x, &xo, err, sizeof err)) {
		fprintf(stderr, "extract_pipeline: %s\n", err);
		return 1;
	}
	printf("ResNet-50 (%s), 224x224 torchvision preprocessing, %d JPEGs of 500x375, batch %d, %d threads\n",
	       model, n, batch, threads);

	/* Engine alone before and after the pipeline: the machine drifts. */
	double e1 = engine_only(model, batch, n / 2);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", store);
	bench_sh("extract_pipeline", cmd);
	/* the dataset: class folder "photos" under a temp root */
	char root[1400];
	snprintf(root, sizeof root, "%s/ds", photos);
	snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s' && ln -s \"$(cd '%s' && pwd)\" '%s/photos'", root, root,
		 base, root);
	if (bench_sh("extract_pipeline", cmd))
		return 1;
	fc_extract_stats st1, st2;
	if (extract(x, store, root, &st1))
		return 1;
	double e2 = engine_only(model, batch, n / 2);
	if (e1 < 0 || e2 < 0)
		return 1;
	double eng = (e1 + e2) / 2, pipe = (double)st1.extracted / st1.seconds;
	double share = pipe / eng;
	printf("  engine only      %7.1f images/s (%.1f before, %.1f after)\n", eng, e1, e2);
	printf("  end to end       %7.1f images/s (%llu images in %.1f s; engine %.1f s of it)\n", pipe,
	       (unsigned long long)st1.extracted, st1.seconds, st1.engine_seconds);
	printf("extract-pipeline: end to end %.1f images/s = %.1f %% of engine-only %.1f (target >= 90 %%: %s)\n", pipe,
	       100 * share, eng, share >= 0.90 ? "PASS" : "MISS");

	/* Incremental: 1 % new files beside the old ones. */
	snprintf(cmd, sizeof cmd, "ln -s \"$(cd '%s' && pwd)\" '%s/new'", extra, root);
	if (bench_sh("extract_pipeline", cmd))
		return 1;
	if (extract(x, store, root, &st2))
		return 1;
	double inc = st2.seconds / st1.seconds;
	printf("  second run       %llu seen, %llu new, %llu extracted, %llu files hashed, %.2f s\n",
	       (unsigned long long)st2.seen, (unsigned long long)st2.new_items, (unsigned long long)st2.extracted,
	       (unsigned long long)st2.hashed, st2.seconds);
	printf("incremental: adding %d images (1 %%) re-extracts in %.2f s = %.2f %% of the first run's %.1f s "
	       "(target <= 3 %%: %s)\n",
	       n_new, st2.seconds, 100 * inc, st1.seconds, inc <= 0.03 ? "PASS" : "MISS");
	fc_extract_free(x);
	snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s' '%s'", store, root, extra);
	bench_sh("extract_pipeline", cmd);
	return 0;
}
