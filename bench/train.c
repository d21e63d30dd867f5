/*
 * bench/train.c - one epoch of the default projection head (2048 -> 2048 ->
 * 2048 -> 256, BatchNorm, ReLU), triplet loss with the semihard miner,
 * batch 128 (32 classes x 4), Adam, over features in RAM: featcache's
 * trainer against the same head, loss, sampler and optimizer in PyTorch
 * (bench/peer_train.py), on the same synthetic features, in one invocation.
 * docs/design.md's target: featcache >= 1.5x faster per epoch.
 *
 * PyTorch runs twice: as Debian ships it, and with OPENBLAS_CORETYPE=SkylakeX
 * (Debian's OpenBLAS takes this CPU for Haswell; docs/measured.md). The faster of
 * the two is the peer. Both use the same number of threads as featcache.
 */
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "featcache/io.h"
#include "featcache/train.h"

#include "bench/benchlib.h"

#define TARGET 1.5

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static double unif(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (double)(rng_state >> 11) / 9007199254740992.0;
}

/* Pooled-CNN-like features: non-negative, a class direction plus noise. */
static void make_data(float *x, uint32_t *cls, size_t n, size_t dim, uint32_t classes)
{
	float *centre = malloc((size_t)classes * dim * sizeof *centre);
	for (size_t i = 0; i < (size_t)classes * dim; i++)
		centre[i] = (float)(unif() < 0.2 ? 2 * unif() : 0);
	for (size_t i = 0; i < n; i++) {
		cls[i] = (uint32_t)(i % classes);
		for (size_t j = 0; j < dim; j++)
			x[i * dim + j] = centre[(size_t)cls[i] * dim + j] + (float)(-log(1 - unif()) * 0.5);
	}
	free(centre);
}

/* Run the peer; fills seconds and samples. Returns 0 on success. */
static int peer(const char *py, const char *script, const char *feats, const char *labels, size_t batches,
		int threads, const char *coretype, double *secs, double *samples, char *info, size_t cap)
{
	char cmd[20000];
	snprintf(cmd, sizeof cmd, "%s%s%s'%s' '%s' '%s' '%s' %zu %d", coretype ? "OPENBLAS_CORETYPE=" : "",
		 coretype ? coretype : "", coretype ? " " : "", py, script, feats, labels, batches, threads);
	FILE *p = popen(cmd, "r");
	if (!p)
		return -1;
	char line[512] = "";
	int ok = 0;
	while (fgets(line, sizeof line, p)) {
		int b, s, t;
		char blas[64], ct[64];
		if (sscanf(line, "seconds %lf batches %d samples %d threads %d blas %63s coretype %63s", secs, &b, &s, &t,
			   blas, ct) == 6) {
			*samples = s;
			snprintf(info, cap, "%d batches, %d threads, %s, coretype %s", b, t, blas, ct);
			ok = 1;
		}
	}
	return pclose(p) == 0 && ok ? 0 : -1;
}

int main(int argc, char **argv)
{
	size_t n = 50000, dim = 2048, batches = 0;
	uint32_t classes = 1000;
	const char *py = "/usr/bin/python3", *script = "bench/peer_train.py", *dir = "/var/tmp";
	static const struct option opts[] = { { "n", required_argument, NULL, 'n' },
					      { "dim", required_argument, NULL, 'd' },
					      { "classes", required_argument, NULL, 'c' },
					      { "batches", required_argument, NULL, 'b' },
					      { "python", required_argument, NULL, 'p' },
					      { "dir", required_argument, NULL, 'D' },
					      { "help", no_argument, NULL, 'h' },
					      { NULL, 0, NULL, 0 } };
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'n': n = strtoul(optarg, NULL, 10); break;
		case 'd': dim = strtoul(optarg, NULL, 10); break;
		case 'c': classes = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'b': batches = strtoul(optarg, NULL, 10); break;
		case 'p': py = optarg; break;
		case 'D': dir = optarg; break;
		default:
			printf("usage: bench/train [--n 50000] [--dim 2048] [--classes 1000] [--batches B (0 = the epoch)]\n"
			       "                   [--python /usr/bin/python3] [--dir /var/tmp]\n");
			return c == 'h' ? 0 : 2;
		}
	}
	if (access(script, R_OK) != 0) {
		fprintf(stderr, "bench/train: run from the repository top (needs %s)\n", script);
		return 1;
	}
	int threads = omp_get_max_threads();
	float *x = malloc(n * dim * sizeof *x);
	uint32_t *cls = malloc(n * sizeof *cls);
	float *lab = malloc(n * sizeof *lab);
	if (!x || !cls || !lab)
		return 1;
	make_data(x, cls, n, dim, classes);
	for (size_t i = 0; i < n; i++)
		lab[i] = (float)cls[i];

	fc_train_config cfg = { .head = { (uint32_t)dim, 0, 256, 3 }, .lr = 1e-3f, .epochs = 1, .batch = 128,
				.per_class = 4, .seed = 0 };
	fc_loss_config_default(&cfg.loss, FC_LOSS_TRIPLET);
	cfg.loss.miner = FC_MINER_SEMIHARD;
	fc_optim_config_default(&cfg.optim, FC_OPT_ADAM);
	fc_train_data data = { x, cls, n, classes, NULL };
	fc_trainer *t;
	char why[FC_ERRLEN] = "";
	if (fc_trainer_new(&t, &cfg, &data, why, sizeof why)) {
		fprintf(stderr, "bench/train: %s\n", why);
		return 1;
	}
	fc_epoch_stats st;
	double t0 = bench_now();
	if (fc_trainer_epoch(t, &st, NULL, NULL)) {
		fprintf(stderr, "bench/train: epoch failed\n");
		return 1;
	}
	double secs = bench_now() - t0;
	size_t nb = (size_t)(st.steps);
	fc_trainer_free(t);
	printf("featcache: one epoch of %zu x %zu features, %zu batches of 128 (32 classes x 4), head %zu-%zu-%zu-256, "
	       "triplet+semihard, adam, %d threads: %.2f s, %.0f samples/s\n",
	       n, dim, nb, dim, dim, dim, threads, secs, st.samples_per_s);

	char feats[4200], labels[4200];
	snprintf(feats, sizeof feats, "%s/fc-bench-train-x.npy", dir);
	snprintf(labels, sizeof labels, "%s/fc-bench-train-y.npy", dir);
	char err[FC_ERRLEN];
	if (fc_npy_write_f32(feats, x, n, dim, err, sizeof err) || fc_npy_write_f32(labels, lab, n, 1, err, sizeof err)) {
		fprintf(stderr, "bench/train: %s\n", err);
		return 1;
	}
	/* The peer runs the same number of batches; with --batches both are
	 * limited and compared per sample. */
	size_t pb = batches ? batches : nb;
	double best = 0, psecs = 0, psamples = 0;
	char info[256], best_info[256] = "";
	const char *cts[2] = { NULL, "SkylakeX" };
	for (int i = 0; i < 2; i++) {
		if (peer(py, script, feats, labels, pb, threads, cts[i], &psecs, &psamples, info, sizeof info)) {
			printf("pytorch%s: unavailable (needs %s with torch and numpy)\n", cts[i] ? " (SkylakeX)" : "", py);
			continue;
		}
		double rate = psamples / psecs;
		printf("pytorch (%s): %.2f s for %.0f samples, %.0f samples/s\n", info, psecs, psamples, rate);
		if (rate > best) {
			best = rate;
			snprintf(best_info, sizeof best_info, "%s", info);
		}
	}
	remove(feats);
	remove(labels);
	if (best > 0) {
		double ratio = st.samples_per_s / best;
		printf("train: featcache %.0f samples/s vs pytorch %.0f samples/s (%s): %.2fx (target >= %.1fx %s)\n",
		       st.samples_per_s, best, best_info, ratio, TARGET, ratio >= TARGET ? "PASS" : "MISS");
	}
	free(x);
	free(cls);
	free(lab);
	return 0;
}
