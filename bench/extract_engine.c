/*
 * extract_engine.c - benchmark: ResNet-50 (torchvision, 224 x 224, seeded
 * random weights) images/s through featcache's engine in f32 and bf16,
 * against ONNX Runtime f32 (npm onnxruntime-node, bench/peer_ort.js) and
 * PyTorch eager f32 (Debian's python3-torch, bench/peer_torch.py), at
 * batch 16 and batch 1, every engine on the same number of threads (2).
 *
 * Targets (docs/design.md): featcache f32 >= 1.0x ONNX Runtime f32; bf16 >=
 * 1.7x ONNX Runtime f32 with cosine(bf16, f32) >= 0.999 for every
 * embedding; f32 >= 4x PyTorch eager. Each figure is one summary line
 * with PASS or MISS; a markdown table follows. Every engine warms up
 * (>= 2 runs and >= 1 s) and is then timed for >= --seconds, in windows
 * of >= 1/5 of that: the figures are the best window's images/s (the
 * machine is shared; a burst of someone else's work hits one window), and
 * the mean over all windows is printed beside them. Every engine is
 * measured by the same rule.
 *
 * The model is <build>/models/resnet50.onnx (exported by
 * tools/export_models.py --full resnet50 when missing) and ONNX Runtime
 * lives in <build>/npm (bench/peer_ort_setup.sh installs it when missing),
 * where <build> is the directory above this binary's. Run it from the
 * repository top (bench/run.sh does): the peers are found as bench/peer_*.
 *
 * What it is not: a latency benchmark (only throughput), nor a measure of
 * decoding (bench/extract_pipeline does that).
 *
 * Exit status: 0 when every figure was measured (a missed target is not
 * a failure), 1 when one could not be, 2 on bad usage.
 */
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "featcache/engine.h"
#include "featcache/model.h"

#include "bench/benchlib.h"

#define N_BATCHES 2

typedef struct opts {
	const char *model, *npm, *python;
	double seconds;
	int threads;
	int batches[N_BATCHES];
} opts;

typedef struct figure {
	double ips;  /* images/s, best window; 0: not measured */
	double mean; /* images/s over all windows */
	char why[FC_ERRLEN + 64];
} figure;

enum { FC_F32 = 0, FC_BF16, ORT, TORCH, N_ENGINES };
static const char *const engine_name[N_ENGINES] = { "featcache f32", "featcache bf16", "onnxruntime f32",
						    "pytorch eager f32" };

/* Deterministic pseudo-images: uniform in [-2, 2), like normalized pixels. */
static void fill(float *x, size_t n)
{
	uint64_t s = 0x9e3779b97f4a7c15u;
	for (size_t i = 0; i < n; i++) {
		s = s * 6364136223846793005u + 1442695040888963407u;
		x[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 4 - 2);
	}
}

/* Time the engine on in (batch images); the first run's embeddings go to
 * emb (batch x dim). */
static void time_engine(figure *f, const opts *o, int prec, int batch, const float *in, float *emb)
{
	char err[FC_ERRLEN];
	fc_model *m = NULL;
	fc_engine *e = NULL;
	float *out = NULL;
	if (fc_model_open(&m, o->model, err, sizeof err)) {
		snprintf(f->why, sizeof f->why, "cannot open the model: %s", err);
		goto out;
	}
	fc_engine_opts eo = { .batch = batch, .precision = prec, .threads = o->threads };
	if (fc_engine_open(&e, m, &eo, err, sizeof err)) {
		snprintf(f->why, sizeof f->why, "%s", err);
		goto out;
	}
	size_t dim = fc_engine_dim(e);
	if (!(out = malloc((size_t)batch * dim * sizeof *out))) {
		snprintf(f->why, sizeof f->why, "out of memory");
		goto out;
	}
	double t0 = bench_now(), total = 0, best = 0;
	long runs = 0;
	for (int warm = 0; warm < 2 || bench_now() - t0 < 1.0; warm++)
		if (fc_engine_run(e, out, in, (size_t)batch)) {
			snprintf(f->why, sizeof f->why, "%s", fc_engine_errmsg(e));
			goto out;
		}
	memcpy(emb, out, (size_t)batch * dim * sizeof *out);
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
out:
	free(out);
	fc_engine_free(e);
	fc_model_free(m);
}

/* Run a peer command; it prints "images/s BEST mean MEAN ..." last. */
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
	if (st != 0 || sscanf(last, "images/s %lf mean %lf", &f->ips, &f->mean) != 2) {
		f->ips = 0;
		snprintf(f->why, sizeof f->why, "peer failed (status %d; see its message above)", st);
	}
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

/* One batch size: measure everything, print the summary lines. */
static int bench_batch(const opts *o, int batch, figure fig[N_ENGINES], double *cos)
{
	size_t img = 3 * 224 * 224, dim = 2048;
	float *in = malloc((size_t)batch * img * sizeof *in);
	float *e32 = calloc((size_t)batch * dim, sizeof *e32), *e16 = calloc((size_t)batch * dim, sizeof *e16);
	char cmd[2048];
	if (!in || !e32 || !e16) {
		free(in), free(e32), free(e16);
		return 1;
	}
	fill(in, (size_t)batch * img);
	memset(fig, 0, N_ENGINES * sizeof *fig);
	time_engine(&fig[FC_F32], o, FC_PREC_F32, batch, in, e32);
	time_engine(&fig[FC_BF16], o, FC_PREC_BF16, batch, in, e16);
	snprintf(cmd, sizeof cmd, "NODE_PATH='%s/node_modules' OMP_NUM_THREADS=%d node bench/peer_ort.js '%s' %d %d %g",
		 o->npm, o->threads, o->model, batch, o->threads, o->seconds);
	time_peer(&fig[ORT], cmd);
	snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=%d '%s' bench/peer_torch.py %d %d %g", o->threads, o->python,
		 batch, o->threads, o->seconds);
	time_peer(&fig[TORCH], cmd);
	*cos = fig[FC_F32].ips > 0 && fig[FC_BF16].ips > 0 ? min_cosine(e16, e32, (size_t)batch, dim) : NAN;
	free(in), free(e32), free(e16);

	for (int k = 0; k < N_ENGINES; k++)
		if (fig[k].ips <= 0)
			printf("resnet50 b%d %s: not measured: %s\n", batch, engine_name[k], fig[k].why);
	double f32 = fig[FC_F32].ips, bf = fig[FC_BF16].ips, ort = fig[ORT].ips, pt = fig[TORCH].ips;
	if (f32 > 0 && ort > 0)
		printf("resnet50 b%d featcache f32 %.1f img/s = %.2fx onnxruntime f32 (%.1f img/s); target >= 1.0x: %s\n",
		       batch, f32, f32 / ort, ort, verdict(f32 >= ort));
	if (bf > 0 && ort > 0)
		printf("resnet50 b%d featcache bf16 %.1f img/s = %.2fx onnxruntime f32 (%.1f img/s), min cosine vs f32 "
		       "%.6f; target >= 1.7x and >= 0.999: %s\n",
		       batch, bf, bf / ort, ort, *cos, verdict(bf >= 1.7 * ort && *cos >= 0.999));
	if (f32 > 0 && pt > 0)
		printf("resnet50 b%d featcache f32 %.1f img/s = %.2fx pytorch eager f32 (%.1f img/s; bf16: %.2fx); "
		       "target >= 4x: %s\n",
		       batch, f32, f32 / pt, pt, bf > 0 ? bf / pt : NAN, verdict(f32 >= 4 * pt));
	fflush(stdout);
	for (int k = 0; k < N_ENGINES; k++)
		if (fig[k].ips <= 0)
			return 1;
	return 0;
}

/* Export the model / install ONNX Runtime when missing. */
static int ensure(const opts *o)
{
	char cmd[2048];
	if (access(o->model, R_OK) != 0) {
		char dir[1024];
		snprintf(dir, sizeof dir, "%s", o->model);
		snprintf(cmd, sizeof cmd, "'%s' tools/export_models.py --full resnet50 --out '%s' >&2", o->python,
			 dirname(dir));
		fprintf(stderr, "extract_engine: exporting resnet50: %s\n", cmd);
		if (system(cmd) != 0 || access(o->model, R_OK) != 0) {
			fprintf(stderr, "extract_engine: cannot export the model (needs python3-torch, "
					"python3-torchvision, python3-onnx)\n");
			return 1;
		}
	}
	snprintf(cmd, sizeof cmd, "sh bench/peer_ort_setup.sh '%s'", o->npm);
	if (system(cmd) != 0)
		fprintf(stderr, "extract_engine: onnx runtime is unavailable; its figures will be missing\n");
	return 0;
}

static const char usage_text[] =
	"usage: extract_engine [--model FILE] [--npm DIR] [--seconds S] [--threads T]\n"
	"                      [--batches B1,B2] [--python PATH]\n";

int main(int argc, char **argv)
{
	static char model[1200], npm[1200];
	char self[1024];
	snprintf(self, sizeof self, "%s", argv[0]);
	const char *build = dirname(dirname(self)); /* <build>/bench/extract_engine */
	snprintf(model, sizeof model, "%s/models/resnet50.onnx", build);
	snprintf(npm, sizeof npm, "%s/npm", build);
	opts o = { .model = model, .npm = npm, .python = "/usr/bin/python3", .seconds = 5, .threads = 2,
		   .batches = { 16, 1 } };
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v) {
			fputs(usage_text, stderr);
			return 2;
		}
		if (!strcmp(a, "--model"))
			o.model = v;
		else if (!strcmp(a, "--npm"))
			o.npm = v;
		else if (!strcmp(a, "--python"))
			o.python = v;
		else if (!strcmp(a, "--seconds"))
			o.seconds = atof(v);
		else if (!strcmp(a, "--threads"))
			o.threads = atoi(v);
		else if (!strcmp(a, "--batches")) {
			int got = sscanf(v, "%d,%d", &o.batches[0], &o.batches[1]);
			if (got < 1)
				o.batches[0] = 0;
			if (got < 2)
				o.batches[1] = 0;
		} else {
			fputs(usage_text, stderr);
			return 2;
		}
		i++;
	}
	if (o.seconds <= 0 || o.threads < 1 || o.batches[0] < 1 || o.batches[1] < 0) {
		fputs(usage_text, stderr);
		return 2;
	}
	if (access("bench/peer_torch.py", R_OK) != 0) {
		fprintf(stderr, "extract_engine: run me from the repository top (bench/peer_*.py not found)\n");
		return 2;
	}
	if (ensure(&o))
		return 1;
	printf("extract_engine: %s, 224x224, %d threads, >= %g s per figure\n", o.model, o.threads, o.seconds);
	fflush(stdout);
	figure fig[N_BATCHES][N_ENGINES];
	double cos[N_BATCHES];
	int bad = 0;
	for (int b = 0; b < N_BATCHES; b++)
		if (o.batches[b] > 0)
			bad |= bench_batch(&o, o.batches[b], fig[b], &cos[b]);
	printf("\n| ResNet-50, 224x224, %d threads | images/s (best window) | mean | vs ONNX Runtime f32 | "
	       "vs PyTorch eager |\n|---|---:|---:|---:|---:|\n", o.threads);
	for (int b = 0; b < N_BATCHES; b++)
		for (int k = 0; o.batches[b] > 0 && k < N_ENGINES; k++) {
			const figure *f = &fig[b][k];
			printf("| %s, batch %d | %.1f | %.1f | %.2fx | %.2fx |\n", engine_name[k], o.batches[b], f->ips,
			       f->mean, fig[b][ORT].ips > 0 ? f->ips / fig[b][ORT].ips : NAN,
			       fig[b][TORCH].ips > 0 ? f->ips / fig[b][TORCH].ips : NAN);
		}
	for (int b = 0; b < N_BATCHES; b++)
		if (o.batches[b] > 0)
			printf("min cosine bf16 vs f32, batch %d: %.6f\n", o.batches[b], cos[b]);
	return bad || fflush(stdout) ? 1 : 0;
}
