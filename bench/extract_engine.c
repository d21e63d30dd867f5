/*
 * extract_engine.c - benchmark: backbones at 224 x 224 (seeded random
 * weights) images/s through featcache's engine in f32, bf16 and int8, against
 * ONNX Runtime f32 (npm onnxruntime-node, bench/peer_ort.js) and PyTorch
 * eager f32 (Debian's python3-torch, bench/peer_torch.py), at batch 16 and
 * batch 1, every engine on the same number of threads (2). The models:
 * torchvision's resnet50, resnet18 and mobilenet_v3_large (opset 13),
 * vit_b_16 and convnext_tiny (opset 17).
 *
 * Targets (docs/design.md): featcache f32 >= 1.0x ONNX Runtime f32; bf16 >=
 * 1.7x ONNX Runtime f32 with cosine(bf16, f32) >= 0.999 for every
 * embedding (>= 0.99 for the attention model, vit_b_16); for ResNet-50
 * also f32 >= 4x PyTorch eager (the transformers' eager runs are big
 * MKL matmuls: their ratio is printed, with no target); int8 (issue 14)
 * >= 3x ONNX Runtime f32, with its min cosine vs f32 printed. int8 is
 * calibrated (max ranges) on the benchmark's own first batch of random
 * inputs through an f32 engine's observe hook: the speed does not depend on
 * the ranges, and the cosine is that of random images through random
 * weights, a smoke test only (README's quality figures use photos).
 * Transformers run their projections in int8, attention in f32. Each figure is one
 * summary line with PASS or MISS; a markdown table per model follows, with
 * the start-up (model load, engine build and the first batch), the GFLOP/s
 * reached and its fraction of the CPU's peak (--peak-gflops, f32; bf16
 * figures against twice that). Every engine warms up (>= 2 runs and >=
 * 1 s) and is then timed for >= --seconds, in windows of >= 1/5 of that:
 * the figures are the best window's images/s (the machine is shared; a
 * burst of someone else's work hits one window), and the mean over all
 * windows is printed beside them. Every engine is measured by the same
 * rule.
 *
 * The models are <build>/models/NAME.onnx (exported by
 * tools/export_models.py --full NAME --opset N when missing) and ONNX
 * Runtime lives in <build>/npm (bench/peer_ort_setup.sh installs it when
 * missing), where <build> is the directory above this binary's. Run it
 * from the repository top (bench/run.sh does): the peers are found as
 * bench/peer_*. A model the engine refuses (an op it does not run yet, bf16
 * on a CPU without it) gets a "refused" row with the engine's message, and
 * the peers are still measured.
 *
 * Whole process (--whole N, default 160, for the models of --whole-models,
 * default resnet50; 0 turns it off): the wall time of a `featcache extract`
 * process into a new store over N real photos (PNG copies, written here
 * with libpng, of the first N JPEGs under --photos, default
 * <build>/bench-data/photos, where <build>/tests/tool_mkimage --crops makes
 * them when there are too few) at batch 16, f32, bf16 and int8 (int8 with
 * --calibrate N on the same photos, inside the process; fc_calibrate alone
 * is timed in this process and printed beside it), decoding included,
 * against a node process of bench/peer_ort.js whole N: session, N random
 * preprocessed images in batches of 16, exit (no decoding). Best of
 * --whole-runs (2) rounds, the engines in turn within a round. Targets
 * (issue 14): f32 >= 1.0x, bf16 >= 1.7x the ONNX Runtime process.
 *
 * --profile: each precision runs a few batches at the first batch size with
 * oneDNN's profiling verbose output on (dnnl_set_verbose(2), stdout sent to
 * a temporary file meanwhile); bench/profile.h reads every executed
 * primitive back, with its FLOPs from the problem descriptor, and a table
 * per precision gives each layer class's share of the time, GFLOP/s and
 * fraction of peak (each primitive against --peak-gflops times 1, 2 or 4
 * by the data type it reads: f32, bf16, u8/s8, as the tables above), the
 * implementations seen, and the time outside oneDNN.
 *
 * What it is not: a latency benchmark (only throughput); decoding is
 * measured only inside the whole-process figures (bench/extract_pipeline
 * measures it on its own).
 *
 * Exit status: 0 when every figure was measured or refused by the engine (a
 * missed target is not a failure), 1 when one could not be, 2 on bad usage.
 */
#include <dnnl.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "featcache/engine.h"
#include "featcache/extract.h"
#include "featcache/image.h"
#include "featcache/model.h"

#include "bench/benchlib.h"
#include "bench/profile.h"

#define N_BATCHES 2
#define MAX_MODELS 8

/* GFLOP of one 224 x 224 image: 2 x the multiply-adds of every Conv, MatMul
 * and Gemm in the exported graph (tools/export_models.py --flops; norms,
 * softmax and element-wise ops are under 1 %). ViT-B/16 is 17.6 GMAC: 12
 * blocks over 197 tokens of width 768 (QKV 197*768*2304, scores and A*V
 * 2*197*197*768, projection 197*768*768, MLP 2*197*768*3072) plus the patch
 * embedding 196*768*768. */
static const struct known {
	const char *name, *title;
	int opset, attention;
	double gflop;
} known[] = {
	{ "resnet50", "ResNet-50", 13, 0, 8.17 },
	{ "resnet18", "ResNet-18", 13, 0, 3.63 },
	{ "mobilenet_v3_large", "MobileNetV3-L", 13, 0, 0.433 },
	{ "vit_b_16", "ViT-B/16", 17, 1, 35.13 },
	{ "convnext_tiny", "ConvNeXt-T", 17, 0, 8.91 },
};

typedef struct bmodel {
	char name[64], path[1400];
	const struct known *k; /* NULL: a file given with --model */
} bmodel;

typedef struct opts {
	const char *npm, *python;
	double seconds, peak;
	int threads, n_models;
	int batches[N_BATCHES];
	bmodel models[MAX_MODELS];
	/* whole process (--whole N, 0: off) for the models of --whole-models */
	int whole, whole_runs;
	const char *whole_models, *photos, *featcache, *mkimage;
	int photos_default; /* --photos not given: JPEGs may be made there */
	int profile;        /* --profile: oneDNN's verbose, per layer class */
	char tmp[64];       /* a temporary directory: the PNGs, stores, verbose output */
	char pngdir[1100];  /* the PNG copies, made once */
} opts;

typedef struct figure {
	double ips;     /* images/s, best window; 0: not measured */
	double mean;    /* images/s over all windows */
	double startup; /* s: open (or session) to the end of the first batch */
	double cpu;     /* featcache: process CPU seconds (user + sys) per image while timed */
	int refused;    /* the engine refused the model at open */
	char why[FC_ERRLEN + 64];
	float *emb; /* featcache: the first batch's embeddings */
	size_t dim;
} figure;

enum { FC_F32 = 0, FC_BF16, FC_INT8, ORT, TORCH, N_ENGINES };
static const char *const engine_name[N_ENGINES] = { "featcache f32", "featcache bf16", "featcache int8",
						    "onnxruntime f32", "pytorch eager f32" };

/* Deterministic pseudo-images: uniform in [-2, 2), like normalized pixels. */
static void fill(float *x, size_t n)
{
	uint64_t s = 0x9e3779b97f4a7c15u;
	for (size_t i = 0; i < n; i++) {
		s = s * 6364136223846793005u + 1442695040888963407u;
		x[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 4 - 2);
	}
}

/* The [min, max] of every tensor an int8 engine quantises, observed. */
static void observe_range(void *ctx, int k, const char *tensor, const float *x, size_t n)
{
	fc_calib *c = ctx;
	fc_calib_range *r = &c->r[k];
	if (!r->tensor) {
		r->tensor = strdup(tensor);
		r->lo = r->hi = x[0];
		c->n = (size_t)k + 1 > c->n ? (size_t)k + 1 : c->n;
	}
	for (size_t i = 0; i < n; i++) {
		r->lo = x[i] < r->lo ? x[i] : r->lo;
		r->hi = x[i] > r->hi ? x[i] : r->hi;
	}
}

/* A max-range table from one f32 run over in (batch images); NULL if the
 * model does not open. */
static fc_calib *calibrate_on(const opts *o, const bmodel *bm, int batch, const float *in)
{
	char err[FC_ERRLEN];
	fc_model *m = NULL;
	fc_engine *e = NULL;
	fc_calib *c = calloc(1, sizeof *c);
	float *out = NULL;
	if (!c || fc_model_open(&m, bm->path, err, sizeof err) ||
	    fc_engine_open(&e, m,
			   &(fc_engine_opts){ .batch = batch, .threads = o->threads, .observe = observe_range,
					      .observe_ctx = c },
			   err, sizeof err) ||
	    !(c->r = calloc((size_t)fc_engine_n_observed(e) + 1, sizeof *c->r)) ||
	    !(out = malloc((size_t)batch * fc_engine_dim(e) * sizeof *out)) || fc_engine_run(e, out, in, (size_t)batch)) {
		fc_calib_free(c);
		c = NULL;
	}
	free(out);
	fc_engine_free(e);
	fc_model_free(m);
	return c;
}

/* Process CPU seconds so far (user + sys): on a shared machine the fairer
 * comparison of two engines than wall time. */
static double cpu_now(void)
{
	struct rusage u;
	getrusage(RUSAGE_SELF, &u);
	return (double)u.ru_utime.tv_sec + 1e-6 * (double)u.ru_utime.tv_usec + (double)u.ru_stime.tv_sec +
	       1e-6 * (double)u.ru_stime.tv_usec;
}

/* Time the engine on in (batch images); the first run's embeddings are
 * kept in f->emb. A failure to open is a refusal, reported as such. */
static void time_engine(figure *f, const opts *o, const bmodel *bm, int prec, int batch, const float *in,
			const fc_calib *calib)
{
	char err[FC_ERRLEN];
	fc_model *m = NULL;
	fc_engine *e = NULL;
	float *out = NULL;
	double s0 = bench_now();
	if (fc_model_open(&m, bm->path, err, sizeof err) ||
	    fc_engine_open(&e, m,
			   &(fc_engine_opts){ .batch = batch, .precision = prec, .threads = o->threads, .calib = calib },
			   err, sizeof err)) {
		f->refused = 1;
		snprintf(f->why, sizeof f->why, "%s", err);
		goto out;
	}
	f->dim = fc_engine_dim(e);
	if (!(out = malloc((size_t)batch * f->dim * sizeof *out)) ||
	    !(f->emb = malloc((size_t)batch * f->dim * sizeof *f->emb))) {
		snprintf(f->why, sizeof f->why, "out of memory");
		goto out;
	}
	double t0 = 0, total = 0, best = 0;
	long runs = 0;
	for (int warm = 0; warm < 2 || bench_now() - t0 < 1.0; warm++) {
		if (fc_engine_run(e, out, in, (size_t)batch)) {
			snprintf(f->why, sizeof f->why, "%s", fc_engine_errmsg(e));
			goto out;
		}
		if (warm == 0) {
			t0 = bench_now();
			f->startup = t0 - s0;
		}
	}
	memcpy(f->emb, out, (size_t)batch * f->dim * sizeof *out);
	double c0 = cpu_now();
	while (total < o->seconds) {
		double w0 = bench_now(), el = 0;
		int n = 0;
		for (; n < 1 || el < o->seconds / 5; n++, el = bench_now() - w0)
			if (fc_engine_run(e, out, in, (size_t)batch)) {
				snprintf(f->why, sizeof f->why, "%s", fc_engine_errmsg(e));
				goto out;
			}
		best = n * batch / el > best ? n * batch / el : best;
		total += el;
		runs += n;
	}
	f->ips = best;
	f->mean = runs * batch / total;
	f->cpu = (cpu_now() - c0) / ((double)runs * batch);
out:
	free(out);
	fc_engine_free(e);
	fc_model_free(m);
}

/* Run a peer command; it prints "images/s BEST mean MEAN ... startup S ..." last. */
static void time_peer(figure *f, const char *cmd)
{
	char line[512], last[512] = "";
	FILE *p = popen(cmd, "r");
	if (!p) {
		snprintf(f->why, sizeof f->why, "cannot run the peer");
		return;
	}
	while (fgets(line, sizeof line, p))
		snprintf(last, sizeof last, "%s", line);
	int st = pclose(p);
	const char *su = strstr(last, " startup ");
	if (st != 0 || sscanf(last, "images/s %lf mean %lf", &f->ips, &f->mean) != 2) {
		f->ips = 0;
		snprintf(f->why, sizeof f->why, "peer failed (status %d; see its message above)", st);
	} else if (su)
		f->startup = atof(su + 9);
}

static double min_cosine(const float *a, const float *b, size_t rows, size_t dim)
{
	double mc = 1;
	for (size_t r = 0; r < rows; r++) {
		double d = 0, na = 0, nb = 0;
		for (size_t i = r * dim; i < (r + 1) * dim; i++) {
			d += (double)a[i] * b[i];
			na += (double)a[i] * a[i];
			nb += (double)b[i] * b[i];
		}
		double c = na > 0 && nb > 0 ? d / sqrt(na * nb) : 0;
		mc = c < mc ? c : mc;
	}
	return mc;
}

static const char *verdict(int ok)
{
	return ok ? "PASS" : "MISS";
}

/* The summary lines of one model and batch. */
static void summary(const bmodel *bm, int batch, const figure fig[N_ENGINES], double cos, double cos8)
{
	const char *n = bm->name;
	double floor = bm->k && bm->k->attention ? 0.99 : 0.999;
	for (int k = 0; k < N_ENGINES; k++)
		if (fig[k].ips <= 0)
			printf("%s b%d %s: %s: %s\n", n, batch, engine_name[k], fig[k].refused ? "refused" : "not measured",
			       fig[k].why);
	double f32 = fig[FC_F32].ips, bf = fig[FC_BF16].ips, ort = fig[ORT].ips, pt = fig[TORCH].ips;
	double i8 = fig[FC_INT8].ips;
	if (i8 > 0 && ort > 0)
		printf("%s b%d featcache int8 %.1f img/s = %.2fx onnxruntime f32 (%.1f img/s), %.2fx featcache f32 "
		       "(CPU per image %.2fx less than f32's), min cosine vs f32 %.6f (random inputs); target >= 3x: %s\n",
		       n, batch, i8, i8 / ort, ort, f32 > 0 ? i8 / f32 : NAN,
		       fig[FC_INT8].cpu > 0 ? fig[FC_F32].cpu / fig[FC_INT8].cpu : NAN, cos8, verdict(i8 >= 3 * ort));
	if (f32 > 0 && ort > 0)
		printf("%s b%d featcache f32 %.1f img/s = %.2fx onnxruntime f32 (%.1f img/s); target >= 1.0x: %s\n", n,
		       batch, f32, f32 / ort, ort, verdict(f32 >= ort));
	if (bf > 0 && ort > 0)
		printf("%s b%d featcache bf16 %.1f img/s = %.2fx onnxruntime f32 (%.1f img/s), min cosine vs f32 "
		       "%.6f; target >= 1.7x and >= %g: %s\n",
		       n, batch, bf, bf / ort, ort, cos, floor, verdict(bf >= 1.7 * ort && cos >= floor));
	if (f32 > 0 && pt > 0 && bm->k && !strcmp(bm->k->name, "resnet50"))
		printf("%s b%d featcache f32 %.1f img/s = %.2fx pytorch eager f32 (%.1f img/s; bf16: %.2fx); "
		       "target >= 4x: %s\n",
		       n, batch, f32, f32 / pt, pt, bf > 0 ? bf / pt : NAN, verdict(f32 >= 4 * pt));
	else if (f32 > 0 && pt > 0)
		printf("%s b%d featcache f32 %.1f img/s = %.2fx pytorch eager f32 (%.1f img/s; bf16: %.2fx); no target\n",
		       n, batch, f32, f32 / pt, pt, bf > 0 ? bf / pt : NAN);
	fflush(stdout);
}

/* One model at one batch size: measure everything, print the summary
 * lines. Returns 1 when a figure could not be measured (a refusal is
 * not that). */
static int bench_batch(const opts *o, const bmodel *bm, int batch, figure fig[N_ENGINES], double *cos, double *cos8)
{
	size_t img = 3 * 224 * 224;
	float *in = malloc((size_t)batch * img * sizeof *in);
	char cmd[4096];
	memset(fig, 0, N_ENGINES * sizeof *fig);
	*cos = *cos8 = NAN;
	if (!in)
		return 1;
	fill(in, (size_t)batch * img);
	time_engine(&fig[FC_F32], o, bm, FC_PREC_F32, batch, in, NULL);
	time_engine(&fig[FC_BF16], o, bm, FC_PREC_BF16, batch, in, NULL);
	fc_calib *calib = calibrate_on(o, bm, batch, in);
	time_engine(&fig[FC_INT8], o, bm, FC_PREC_INT8, batch, in, calib);
	fc_calib_free(calib);
	snprintf(cmd, sizeof cmd, "NODE_PATH='%s/node_modules' OMP_NUM_THREADS=%d node bench/peer_ort.js '%s' %d %d %g",
		 o->npm, o->threads, bm->path, batch, o->threads, o->seconds);
	time_peer(&fig[ORT], cmd);
	snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=%d '%s' bench/peer_torch.py %d %d %g '%s'", o->threads, o->python,
		 batch, o->threads, o->seconds, bm->name);
	time_peer(&fig[TORCH], cmd);
	if (fig[FC_F32].ips > 0 && fig[FC_BF16].ips > 0 && fig[FC_F32].dim == fig[FC_BF16].dim)
		*cos = min_cosine(fig[FC_BF16].emb, fig[FC_F32].emb, (size_t)batch, fig[FC_F32].dim);
	if (fig[FC_F32].ips > 0 && fig[FC_INT8].ips > 0 && fig[FC_F32].dim == fig[FC_INT8].dim)
		*cos8 = min_cosine(fig[FC_INT8].emb, fig[FC_F32].emb, (size_t)batch, fig[FC_F32].dim);
	free(in);
	for (int k = 0; k < N_ENGINES; k++) {
		free(fig[k].emb);
		fig[k].emb = NULL;
	}
	summary(bm, batch, fig, *cos, *cos8);
	for (int k = 0; k < N_ENGINES; k++)
		if (fig[k].ips <= 0 && !fig[k].refused)
			return 1;
	return 0;
}

/* The markdown table of one model. */
static void table(const opts *o, const bmodel *bm, figure fig[N_BATCHES][N_ENGINES], const double cos[N_BATCHES],
		  const double cos8[N_BATCHES])
{
	double gflop = bm->k ? bm->k->gflop : NAN;
	printf("\n| %s, 224x224, %d threads (%.2f GFLOP/image) | images/s (best window) | mean | start-up s | "
	       "GFLOP/s | of peak | vs ONNX Runtime f32 | vs PyTorch eager | CPU ms/image |\n"
	       "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
	       bm->k ? bm->k->title : bm->name, o->threads, gflop);
	for (int b = 0; b < N_BATCHES; b++)
		for (int k = 0; o->batches[b] > 0 && k < N_ENGINES; k++) {
			const figure *f = &fig[b][k];
			if (f->ips <= 0) {
				printf("| %s, batch %d | %s | | | | | | | |\n", engine_name[k], o->batches[b],
				       f->refused ? "refused" : "not measured");
				continue;
			}
			/* bf16 dot products run at twice the f32 rate, VNNI's u8 x s8 at four times */
			double peak = o->peak * (k == FC_BF16 ? 2 : k == FC_INT8 ? 4 : 1);
			char vs[2][32] = { "-", "-" }; /* a peer not measured: no ratio */
			if (fig[b][ORT].ips > 0)
				snprintf(vs[0], sizeof vs[0], "%.2fx", f->ips / fig[b][ORT].ips);
			if (fig[b][TORCH].ips > 0)
				snprintf(vs[1], sizeof vs[1], "%.2fx", f->ips / fig[b][TORCH].ips);
			char cpu[32] = "-"; /* the peers run in their own processes */
			if (f->cpu > 0)
				snprintf(cpu, sizeof cpu, "%.0f", 1e3 * f->cpu);
			printf("| %s, batch %d | %.1f | %.1f | %.2f | %.0f | %.0f %% | %s | %s | %s |\n", engine_name[k],
			       o->batches[b], f->ips, f->mean, f->startup, f->ips * gflop, 100 * f->ips * gflop / peak,
			       vs[0], vs[1], cpu);
		}
	for (int b = 0; b < N_BATCHES; b++)
		if (o->batches[b] > 0)
			printf("min cosine bf16 vs f32, batch %d: %.6f; int8 vs f32: %.6f\n", o->batches[b], cos[b],
			       cos8[b]);
	fflush(stdout);
}

/* ---- whole process: featcache extract and an ONNX Runtime process ---- */

#define WHOLE_BATCH 16

/* Up to n JPEG paths under dir, in sorted order, into paths[] (malloc'd
 * strings); how many. */
static int find_jpegs(const char *dir, int n, char **paths)
{
	char cmd[1400], line[2048];
	int k = 0;
	snprintf(cmd, sizeof cmd,
		 "find -H '%s' -type f \\( -name '*.jpg' -o -name '*.jpeg' \\) 2>/dev/null | LC_ALL=C sort | head -n %d", dir,
		 n);
	FILE *p = popen(cmd, "r");
	if (!p)
		return 0;
	while (k < n && fgets(line, sizeof line, p)) {
		line[strcspn(line, "\n")] = '\0';
		if ((paths[k] = strdup(line)) != NULL)
			k++;
	}
	pclose(p);
	return k;
}

/* The JPEG at jpg, decoded by featcache, written as an RGB PNG at png. */
static int jpeg_to_png(const char *jpg, const char *png)
{
	char err[FC_ERRLEN] = "";
	fc_image img = { 0 };
	uint8_t *buf = NULL;
	FILE *f = fopen(jpg, "rb");
	long len = -1;
	int rc = -1;
	if (f && fseek(f, 0, SEEK_END) == 0)
		len = ftell(f);
	if (len <= 0 || len > (1L << 30) || fseek(f, 0, SEEK_SET) != 0 || !(buf = malloc((size_t)len)) ||
	    fread(buf, 1, (size_t)len, f) != (size_t)len)
		fprintf(stderr, "extract_engine: cannot read '%s'\n", jpg);
	else if (fc_image_decode(&img, buf, (size_t)len, err, sizeof err) != 0)
		fprintf(stderr, "extract_engine: cannot decode '%s': %s\n", jpg, err);
	else {
		png_image pi;
		memset(&pi, 0, sizeof pi);
		pi.version = PNG_IMAGE_VERSION;
		pi.width = (png_uint_32)img.w;
		pi.height = (png_uint_32)img.h;
		pi.format = PNG_FORMAT_RGB;
		if (png_image_write_to_file(&pi, png, 0, img.px, 0, NULL))
			rc = 0;
		else
			fprintf(stderr, "extract_engine: cannot write '%s': %s\n", png, pi.message);
		png_image_free(&pi);
	}
	if (f)
		fclose(f);
	free(buf);
	fc_image_free(&img);
	return rc;
}

/* o->whole photos as PNG copies in o->tmp/png: the first o->whole JPEGs
 * under o->photos (made there by tool_mkimage --crops when the default
 * directory has too few). */
static int whole_photos(opts *o)
{
	char **paths = calloc((size_t)o->whole, sizeof *paths), dir[1200], cmd[4096];
	int n = paths ? find_jpegs(o->photos, o->whole, paths) : 0, rc = 1;
	if (paths && n < o->whole && o->photos_default) {
		snprintf(dir, sizeof dir, "%s/whole-%d", o->photos, o->whole);
		snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s' && '%s' --crops '%s' %d 1 %s/*.jpg", dir, dir,
			 o->mkimage, dir, o->whole, BENCH_PHOTO_SRC);
		fprintf(stderr, "extract_engine: making %d photos: %s\n", o->whole, cmd);
		for (int i = 0; i < n; i++)
			free(paths[i]);
		n = bench_sh("extract_engine", cmd) == 0 ? find_jpegs(dir, o->whole, paths) : 0;
	}
	if (n < o->whole)
		fprintf(stderr, "extract_engine: fewer than %d JPEGs under '%s' (--photos; %s makes them)\n", o->whole,
			o->photos, o->mkimage);
	else {
		snprintf(o->pngdir, sizeof o->pngdir, "%s/png", o->tmp);
		rc = mkdir(o->pngdir, 0755) != 0;
		for (int i = 0; !rc && i < n; i++) {
			char png[1200];
			snprintf(png, sizeof png, "%s/%06d.png", o->pngdir, i);
			rc = jpeg_to_png(paths[i], png);
		}
	}
	for (int i = 0; paths && i < n; i++)
		free(paths[i]);
	free(paths);
	return rc;
}

typedef struct wfig {
	double wall, mean; /* s: the best run, the mean of the runs; 0: not measured */
	double cpu;        /* user + sys of the best run */
	double extra;      /* featcache int8: calibration alone; ONNX Runtime: session creation */
} wfig;

/* Seconds of fc_calibrate on the PNGs, as `featcache extract --precision
 * int8 --calibrate N` runs it (torchvision preprocessing at 224, the
 * default method: percentile); 0 on failure. */
static double time_calibration(const opts *o, const bmodel *bm)
{
	char err[FC_ERRLEN] = "";
	fc_dataset ds = { 0 };
	fc_calib *c = NULL;
	fc_extractor_opts xo = { .model = bm->path, .pre_name = "torchvision", .precision = FC_PREC_F32,
				 .store_dtype = FC_DTYPE_F16, .batch = WHOLE_BATCH, .threads = o->threads };
	double t = 0;
	if (fc_preproc_preset(&xo.pre, "torchvision", 224) == 0 && fc_dataset_scan(&ds, o->pngdir, 0, err, sizeof err) == 0) {
		double t0 = bench_now();
		if (fc_calibrate(&c, &xo, &ds, (size_t)o->whole, FC_CALIB_DEFAULT, NULL, err, sizeof err) == 0)
			t = bench_now() - t0;
	}
	if (t <= 0)
		fprintf(stderr, "extract_engine: cannot calibrate %s on '%s': %s\n", bm->name, o->pngdir, err);
	fc_calib_free(c);
	fc_dataset_free(&ds);
	return t;
}

/* One run of engine k over the PNGs as a process: wall and CPU seconds,
 * and for ONNX Runtime its session time; 0 if it failed. */
static int whole_once(const opts *o, const bmodel *bm, int k, double *wall, double *cpu, double *session)
{
	static const char *const prec[] = { "f32", "bf16", "int8" };
	char store[1200], out[1200], n[16], batch[16], threads[16], cmd[1400];
	snprintf(store, sizeof store, "%s/store", o->tmp);
	snprintf(out, sizeof out, "%s/out.txt", o->tmp);
	snprintf(n, sizeof n, "%d", o->whole);
	snprintf(batch, sizeof batch, "%d", WHOLE_BATCH);
	snprintf(threads, sizeof threads, "%d", o->threads);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", store);
	if (bench_sh("extract_engine", cmd))
		return -1;
	if (k == ORT) {
		char *argv[] = { "node", "bench/peer_ort.js", "whole", n, (char *)bm->path, batch, threads, NULL };
		if (bench_timed_process(argv, out, wall, cpu) != 0)
			return -1;
		FILE *f = fopen(out, "r");
		int got = f ? fscanf(f, "whole %*d session %lf", session) : 0;
		if (f)
			fclose(f);
		return got == 1 ? 0 : -1;
	}
	char *argv[] = { (char *)o->featcache, "extract", "--store", store, "--data", (char *)o->pngdir, "--model",
			 (char *)bm->path, "--batch", batch, "--threads", threads, "--precision", (char *)prec[k],
			 "--quiet", k == FC_INT8 ? "--calibrate" : NULL, n, NULL };
	return bench_timed_process(argv, out, wall, cpu);
}

/* The whole-process figures of one model: o->whole_runs rounds, the
 * engines in turn within each; the best run of each. Returns 1 when one
 * could not be measured. */
static int bench_whole(const opts *o, const bmodel *bm)
{
	static const char *const what[] = { "featcache f32", "featcache bf16", "featcache int8 (+ calibration)",
					    "onnxruntime f32" };
	static const int engines[] = { FC_F32, FC_BF16, FC_INT8, ORT };
	wfig w[4];
	int bad = 0;
	memset(w, 0, sizeof w);
	for (int r = 0; r < o->whole_runs; r++)
		for (int e = 0; e < 4; e++) {
			double wall = 0, cpu = 0, session = 0;
			if (whole_once(o, bm, engines[e], &wall, &cpu, &session) != 0) {
				fprintf(stderr, "extract_engine: %s whole process of %s failed (its message above)\n",
					what[e], bm->name);
				w[e].wall = -1;
				continue;
			}
			if (w[e].wall < 0)
				continue;
			if (w[e].wall == 0 || wall < w[e].wall) {
				w[e].wall = wall;
				w[e].cpu = cpu;
				w[e].extra = session;
			}
			w[e].mean += wall / o->whole_runs;
		}
	w[2].extra = w[2].wall > 0 ? time_calibration(o, bm) : 0;
	double ort = w[3].wall;
	const char *n = bm->name;
	for (int e = 0; e < 4; e++)
		if (w[e].wall <= 0) {
			printf("%s whole process %d PNGs %s: not measured\n", n, o->whole, what[e]);
			bad = 1;
		}
	if (ort > 0) {
		for (int e = 0; e < 3; e++) {
			if (w[e].wall <= 0)
				continue;
			double x = ort / w[e].wall;
			printf("%s whole process %d PNGs b%d %s %.2f s (CPU %.2f s) = %.2fx onnxruntime f32 (%.2f s, "
			       "CPU %.2f s, session %.2f s, no decoding)",
			       n, o->whole, WHOLE_BATCH, what[e], w[e].wall, w[e].cpu, x, ort, w[3].cpu, w[3].extra);
			if (e == 0)
				printf("; target >= 1.0x: %s\n", verdict(x >= 1.0));
			else if (e == 1)
				printf("; target >= 1.7x: %s\n", verdict(x >= 1.7));
			else
				printf("; calibration alone %.2f s; no target\n", w[2].extra);
		}
	}
	printf("\n| %s, whole process, %d PNG photos 500x375, batch %d, %d threads | wall s (best of %d) | mean s | "
	       "CPU s | images/s | vs ONNX Runtime f32 |\n|---|---:|---:|---:|---:|---:|\n",
	       bm->k ? bm->k->title : n, o->whole, WHOLE_BATCH, o->threads, o->whole_runs);
	for (int e = 0; e < 4; e++) {
		char vs[32] = "-";
		if (w[e].wall <= 0) {
			printf("| %s | not measured | | | | |\n", what[e]);
			continue;
		}
		if (ort > 0)
			snprintf(vs, sizeof vs, "%.2fx", ort / w[e].wall);
		printf("| %s | %.2f | %.2f | %.2f | %.1f | %s |\n", what[e], w[e].wall, w[e].mean, w[e].cpu,
		       o->whole / w[e].wall, vs);
	}
	printf("featcache: `featcache extract` into a new store, decoding included; int8 calibrates on the same %d "
	       "photos inside the process (fc_calibrate alone: %.2f s); onnxruntime: node process start to exit, "
	       "session creation %.2f s, random tensors (no decoding)\n",
	       o->whole, w[2].extra, w[3].extra);
	fflush(stdout);
	return bad;
}

/* ---- per layer class, from oneDNN's profiling verbose output ---- */

#define PROFILE_BATCHES 3

/* PROFILE_BATCHES runs of engine precision prec at o->batches[0], oneDNN's
 * verbose output captured, then the table. Returns 1 on a failure. */
static int profile_one(const opts *o, const bmodel *bm, int prec, const char *pname)
{
	int batch = o->batches[0], rc = 1;
	size_t img = 3 * 224 * 224;
	char err[FC_ERRLEN] = "", path[1200];
	fc_model *m = NULL;
	fc_engine *e = NULL;
	fc_calib *calib = NULL;
	float *in = malloc((size_t)batch * img * sizeof *in), *out = NULL;
	if (!in)
		return 1;
	fill(in, (size_t)batch * img);
	if (prec == FC_PREC_INT8 && !(calib = calibrate_on(o, bm, batch, in)))
		snprintf(err, sizeof err, "cannot calibrate");
	else if (fc_model_open(&m, bm->path, err, sizeof err) ||
		 fc_engine_open(&e, m,
				&(fc_engine_opts){ .batch = batch, .precision = prec, .threads = o->threads, .calib = calib },
				err, sizeof err)) {
		printf("%s profile %s: refused: %s\n", bm->name, pname, err);
		rc = 0;
		goto out;
	} else if (!(out = malloc((size_t)batch * fc_engine_dim(e) * sizeof *out)))
		snprintf(err, sizeof err, "out of memory");
	if (!out) {
		printf("%s profile %s: not measured: %s\n", bm->name, pname, err);
		goto out;
	}
	for (int i = 0; i < 2; i++) /* primitives made, caches warm */
		if (fc_engine_run(e, out, in, (size_t)batch))
			goto fail;
	snprintf(path, sizeof path, "%s/verbose.txt", o->tmp);
	fflush(stdout);
	int saved = dup(1), fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (saved < 0 || fd < 0 || dup2(fd, 1) < 0) {
		snprintf(err, sizeof err, "cannot write '%s'", path);
		if (saved >= 0)
			close(saved);
		if (fd >= 0)
			close(fd);
		goto fail_msg;
	}
	dnnl_set_verbose(2);
	double t0 = bench_now();
	int run_failed = 0;
	for (int i = 0; i < PROFILE_BATCHES && !run_failed; i++)
		run_failed = fc_engine_run(e, out, in, (size_t)batch) != 0;
	double wall = (bench_now() - t0) * 1e3;
	dnnl_set_verbose(0);
	fflush(stdout);
	dup2(saved, 1);
	close(saved);
	close(fd);
	if (run_failed)
		goto fail;
	bench_prof_sum s[BP_N];
	long bad = 0, nexec = bench_prof_read(path, s, o->peak, &bad);
	if (nexec < 0) {
		snprintf(err, sizeof err, "cannot parse line %ld of oneDNN's verbose output ('%s')", bad, path);
		goto fail_msg;
	}
	double ms = 0, flops = 0;
	for (int c = 0; c < BP_N; c++) {
		ms += s[c].ms;
		flops += s[c].flops;
	}
	printf("\n%s profile featcache %s, batch %d, %d batches: %ld primitives run, oneDNN %.0f %% of %.0f ms "
	       "(with verbose on), %.3f GFLOP/image from the descriptors (known: %.3g)\n",
	       bm->name, pname, batch, PROFILE_BATCHES, nexec, wall > 0 ? 100 * ms / wall : NAN, wall,
	       flops / ((double)batch * PROFILE_BATCHES) * 1e-9, bm->k ? bm->k->gflop : NAN);
	printf("\n| %s %s, batch %d | time %% | ms/batch | GFLOP/s | of peak | primitives/batch | implementations |\n"
	       "|---|---:|---:|---:|---:|---:|---|\n",
	       bm->k ? bm->k->title : bm->name, pname, batch);
	for (int c = 0; c < BP_N; c++) {
		if (!s[c].n)
			continue;
		char gf[32] = "-", pk[32] = "-";
		if (s[c].flops > 0 && s[c].ms > 0) {
			snprintf(gf, sizeof gf, "%.0f", s[c].flops / s[c].ms * 1e-6);
			snprintf(pk, sizeof pk, "%.0f %%", 100 * s[c].ideal_ms / s[c].ms);
		}
		printf("| %s | %.1f | %.2f | %s | %s | %.0f | %s |\n", bench_prof_class_name[c], 100 * s[c].ms / wall,
		       s[c].ms / PROFILE_BATCHES, gf, pk, (double)s[c].n / PROFILE_BATCHES, s[c].impls);
	}
	printf("| outside oneDNN (the engine's own loops, verbose output) | %.1f | %.2f | | | | |\n",
	       100 * (wall - ms) / wall, (wall - ms) / PROFILE_BATCHES);
	fflush(stdout);
	rc = 0;
	goto out;
fail:
	snprintf(err, sizeof err, "%s", fc_engine_errmsg(e));
fail_msg:
	printf("%s profile %s: not measured: %s\n", bm->name, pname, err);
out:
	free(in);
	free(out);
	fc_engine_free(e);
	fc_model_free(m);
	fc_calib_free(calib);
	return rc;
}

static int profile_model(const opts *o, const bmodel *bm)
{
	printf("\n%s: per layer class, oneDNN's profiling verbose output (dnnl_set_verbose(2)); of peak: against "
	       "%g GFLOP/s for f32 inputs, %g for bf16, %g for u8/s8\n",
	       bm->name, o->peak, 2 * o->peak, 4 * o->peak);
	return profile_one(o, bm, FC_PREC_F32, "f32") | profile_one(o, bm, FC_PREC_BF16, "bf16") |
	       profile_one(o, bm, FC_PREC_INT8, "int8");
}

/* Export the models / install ONNX Runtime when missing. */
static int ensure(const opts *o)
{
	char cmd[4096];
	for (int i = 0; i < o->n_models; i++) {
		const bmodel *bm = &o->models[i];
		if (access(bm->path, R_OK) == 0)
			continue;
		if (!bm->k) {
			fprintf(stderr, "extract_engine: cannot read %s\n", bm->path);
			return 1;
		}
		char dir[1200];
		snprintf(dir, sizeof dir, "%s", bm->path);
		snprintf(cmd, sizeof cmd, "'%s' tools/export_models.py --full %s --opset %d --out '%s' >&2", o->python,
			 bm->name, bm->k->opset, dirname(dir));
		fprintf(stderr, "extract_engine: exporting %s: %s\n", bm->name, cmd);
		if (system(cmd) != 0 || access(bm->path, R_OK) != 0) {
			fprintf(stderr, "extract_engine: cannot export %s (needs python3-torch, "
					"python3-torchvision, python3-onnx)\n",
				bm->name);
			return 1;
		}
	}
	snprintf(cmd, sizeof cmd, "sh bench/peer_ort_setup.sh '%s'", o->npm);
	if (system(cmd) != 0)
		fprintf(stderr, "extract_engine: onnx runtime is unavailable; its figures will be missing\n");
	return 0;
}

/* DIR/node_modules, for NODE_PATH. */
static const char *npm_modules(const char *npm)
{
	static char buf[1300];
	snprintf(buf, sizeof buf, "%s/node_modules", npm);
	return buf;
}

/* --models NAME,NAME (known names, from <models>/NAME.onnx) or --model
 * FILE (one file, named by its base name). Returns 0, or -1 on a bad name. */
static int add_models(opts *o, const char *list, const char *dir, const char *file)
{
	char buf[512];
	snprintf(buf, sizeof buf, "%s", list ? list : "");
	o->n_models = 0;
	if (file) {
		bmodel *bm = &o->models[o->n_models++];
		char base[1200];
		snprintf(base, sizeof base, "%s", file);
		snprintf(bm->name, sizeof bm->name, "%s", basename(base));
		char *dot = strstr(bm->name, ".onnx");
		if (dot)
			*dot = '\0';
		snprintf(bm->path, sizeof bm->path, "%s", file);
		bm->k = NULL;
		for (size_t j = 0; j < sizeof known / sizeof known[0]; j++)
			if (!strcmp(known[j].name, bm->name))
				bm->k = &known[j];
		return 0;
	}
	for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		const struct known *k = NULL;
		for (size_t j = 0; j < sizeof known / sizeof known[0]; j++)
			if (!strcmp(known[j].name, t))
				k = &known[j];
		if (!k || o->n_models == MAX_MODELS)
			return -1;
		bmodel *bm = &o->models[o->n_models++];
		snprintf(bm->name, sizeof bm->name, "%s", k->name);
		snprintf(bm->path, sizeof bm->path, "%s/%s.onnx", dir, k->name);
		bm->k = k;
	}
	return o->n_models > 0 ? 0 : -1;
}

static const char usage_text[] =
	"usage: extract_engine [--models resnet50,resnet18,mobilenet_v3_large,vit_b_16,convnext_tiny | --model FILE]\n"
	"                      [--npm DIR] [--seconds S] [--threads T] [--batches B1,B2] [--python PATH]\n"
	"                      [--peak-gflops G] [--whole N] [--whole-models NAME,NAME] [--whole-runs R]\n"
	"                      [--photos DIR] [--featcache PATH] [--profile]\n";

/* Is name one of the comma-separated list? */
static int in_list(const char *list, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = list; (p = strstr(p, name)) != NULL; p += n)
		if ((p == list || p[-1] == ',') && (p[n] == ',' || p[n] == '\0'))
			return 1;
	return 0;
}

/* v as a number, or -1 for anything else ("abc", "3x", ""): the ranges
 * are checked after all options are read. */
static double number(const char *v)
{
	char *end;
	double x = strtod(v, &end);
	return end != v && !*end && isfinite(x) ? x : -1;
}

/* v as a whole number up to 10^6, or -1. */
static int whole_number(const char *v)
{
	double x = number(v);
	return x == floor(x) && x <= 1e6 ? (int)x : -1;
}

static int parse(opts *o, int argc, char **argv, const char *build)
{
	static char dir[1200];
	const char *list = "resnet50,resnet18,mobilenet_v3_large,vit_b_16,convnext_tiny", *file = NULL;
	snprintf(dir, sizeof dir, "%s/models", build);
	for (int i = 1; i < argc; i += 2) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--profile")) {
			o->profile = 1;
			i--;
			continue;
		}
		if (!v)
			return -1;
		if (!strcmp(a, "--model"))
			file = v;
		else if (!strcmp(a, "--models"))
			list = v;
		else if (!strcmp(a, "--npm"))
			o->npm = v;
		else if (!strcmp(a, "--python"))
			o->python = v;
		else if (!strcmp(a, "--seconds"))
			o->seconds = number(v);
		else if (!strcmp(a, "--threads"))
			o->threads = whole_number(v);
		else if (!strcmp(a, "--peak-gflops"))
			o->peak = number(v);
		else if (!strcmp(a, "--whole"))
			o->whole = whole_number(v);
		else if (!strcmp(a, "--whole-models"))
			o->whole_models = v;
		else if (!strcmp(a, "--whole-runs"))
			o->whole_runs = whole_number(v);
		else if (!strcmp(a, "--photos")) {
			o->photos = v;
			o->photos_default = 0;
		} else if (!strcmp(a, "--featcache"))
			o->featcache = v;
		else if (!strcmp(a, "--batches")) {
			int got = sscanf(v, "%d,%d", &o->batches[0], &o->batches[1]);
			if (got < 1)
				o->batches[0] = 0;
			if (got < 2)
				o->batches[1] = 0;
		} else
			return -1;
	}
	if (o->seconds <= 0 || o->threads < 1 || o->batches[0] < 1 || o->batches[1] < 0 || o->peak <= 0 ||
	    o->whole < 0 || o->whole > 100000 || o->whole_runs < 1 || strlen(o->photos) > 1000 ||
	    strlen(o->featcache) > 1000)
		return -1;
	return add_models(o, list, dir, file);
}

int main(int argc, char **argv)
{
	static char npm[1200], photos[1200], featcache[1200], mkimage[1200];
	static opts o;
	char self[1024];
	snprintf(self, sizeof self, "%s", argv[0]);
	const char *build = dirname(dirname(self)); /* <build>/bench/extract_engine */
	snprintf(npm, sizeof npm, "%s/npm", build);
	snprintf(photos, sizeof photos, "%s/bench-data/photos", build);
	snprintf(featcache, sizeof featcache, "%s/featcache", build);
	snprintf(mkimage, sizeof mkimage, "%s/tests/tool_mkimage", build);
	/* Peak f32: 2 cores x 2 FMA units x 16 lanes x 2 FLOP x ~3.4 GHz
	 * (docs/measured.md: ~435 GFLOP/s on the development machine). */
	o = (opts){ .npm = npm, .python = "/usr/bin/python3", .seconds = 5, .threads = 2, .peak = 435,
		    .batches = { 16, 1 }, .whole = 160, .whole_runs = 2, .whole_models = "resnet50", .photos = photos,
		    .photos_default = 1, .featcache = featcache, .mkimage = mkimage };
	if (parse(&o, argc, argv, build)) {
		fputs(usage_text, stderr);
		return 2;
	}
	if (access("bench/peer_torch.py", R_OK) != 0) {
		fprintf(stderr, "extract_engine: run me from the repository top (bench/peer_*.py not found)\n");
		return 2;
	}
	if (ensure(&o))
		return 1;
	int whole = 0;
	for (int i = 0; i < o.n_models; i++)
		whole |= o.whole > 0 && in_list(o.whole_models, o.models[i].name);
	snprintf(o.tmp, sizeof o.tmp, "/tmp/extract_engine-XXXXXX");
	if (!mkdtemp(o.tmp)) {
		fprintf(stderr, "extract_engine: cannot make a temporary directory in /tmp\n");
		return 1;
	}
	int bad = 0;
	if (whole && (access(o.featcache, X_OK) != 0 || whole_photos(&o))) {
		fprintf(stderr, "extract_engine: no whole-process figures (needs %s and the photos)\n", o.featcache);
		whole = 0;
		bad = 1;
	}
	setenv("NODE_PATH", npm_modules(o.npm), 1);
	char nthr[16];
	snprintf(nthr, sizeof nthr, "%d", o.threads);
	setenv("OMP_NUM_THREADS", nthr, 1);
	for (int i = 0; i < o.n_models; i++) {
		const bmodel *bm = &o.models[i];
		figure fig[N_BATCHES][N_ENGINES];
		double cos[N_BATCHES], cos8[N_BATCHES];
		printf("%sextract_engine: %s, 224x224, %d threads, >= %g s per figure, peak %g GFLOP/s f32\n",
		       i ? "\n" : "", bm->path, o.threads, o.seconds, o.peak);
		fflush(stdout);
		memset(fig, 0, sizeof fig);
		for (int b = 0; b < N_BATCHES; b++)
			if (o.batches[b] > 0)
				bad |= bench_batch(&o, bm, o.batches[b], fig[b], &cos[b], &cos8[b]);
		table(&o, bm, fig, cos, cos8);
		if (whole && in_list(o.whole_models, bm->name))
			bad |= bench_whole(&o, bm);
		if (o.profile)
			bad |= profile_model(&o, bm);
	}
	char cmd[200];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", o.tmp);
	bench_sh("extract_engine", cmd);
	return bad || fflush(stdout) ? 1 : 0;
}
