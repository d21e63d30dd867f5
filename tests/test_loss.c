/*
 * test_loss.c - the metric-learning losses of train/loss.c against three
 * independent references: PyTorch transcriptions of pytorch-metric-learning
 * (fixtures made by tools/loss_ref.py), central finite differences of the
 * forward for every loss x distance x miner, and tiny cases worked out by
 * hand. Plus the edges (empty miners, one class, B = 1, bad input), the
 * parameter block of ArcFace/CosFace, names and defaults, and bit-identical
 * results across thread counts.
 *
 * Random batches come from one seed, printed at the start; set FC_SEED
 * to replay a failure.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <omp.h>

#include "featcache/train.h"

static uint64_t seed = 20240612;

static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15u);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
	return z ^ (z >> 31);
}

static double unit(uint64_t *s) /* [0, 1) */
{
	return (double)(splitmix64(s) >> 11) * 0x1p-53;
}

static double normal(uint64_t *s)
{
	double u1 = unit(s) + 0x1p-53, u2 = unit(s);
	return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

/* On a 2^-16 grid with |v| < 4, v ± 2^-k (k <= 16) is exact in float: the
 * finite differences perturb by exactly h. */
static float grid(double v)
{
	return (float)(nearbyint(v * 65536.0) / 65536.0);
}

/* B rows of D floats in ncls clusters (label i % ncls), norms in [1, 2] */
static void make_batch(float *x, uint32_t *y, size_t B, size_t D, size_t ncls, double spread, uint64_t *s)
{
	double *centre = malloc(ncls * D * sizeof(double));
	for (size_t i = 0; i < ncls * D; i++)
		centre[i] = normal(s);
	for (size_t i = 0; i < B; i++) {
		y[i] = (uint32_t)(i % ncls);
		double n2 = 0, v[64];
		assert_true(D <= 64);
		for (size_t k = 0; k < D; k++) {
			v[k] = centre[y[i] * D + k] + spread * normal(s);
			n2 += v[k] * v[k];
		}
		double r = (1.0 + unit(s)) / sqrt(n2);
		for (size_t k = 0; k < D; k++)
			x[i * D + k] = grid(v[k] * r);
	}
	free(centre);
}

static double max_abs(const double *a, size_t n)
{
	double m = 0;
	for (size_t i = 0; i < n; i++)
		m = fmax(m, fabs(a[i]));
	return m;
}

/* max|a - b| / max(max|b|, tiny): an error relative to the size of the
 * reference as a whole, so that entries that are nearly 0 are not judged on
 * their own rounding */
static double rel_err_f(const float *a, const double *b, size_t n)
{
	double e = 0;
	for (size_t i = 0; i < n; i++)
		e = fmax(e, fabs((double)a[i] - b[i]));
	return e / fmax(max_abs(b, n), 1e-12);
}

static fc_loss_config config(fc_loss_kind kind, fc_distance_kind dist, fc_miner_kind miner)
{
	fc_loss_config c;
	fc_loss_config_default(&c, kind);
	c.distance = dist;
	c.miner = miner;
	return c;
}

/* ------------------------------------------------------ PyTorch fixtures */

typedef struct fixture {
	fc_loss_config cfg;
	size_t B, D;
	uint32_t *labels;
	float *emb, *W;
	double loss, *demb, *dW;
	uint64_t used, nonzero;
} fixture;

static void fixture_free(fixture *f)
{
	free(f->labels);
	free(f->emb);
	free(f->W);
	free(f->demb);
	free(f->dW);
}

static char *read_text(const char *path)
{
	FILE *fp = fopen(path, "rb");
	if (!fp)
		return NULL;
	fseek(fp, 0, SEEK_END);
	long n = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	char *buf = malloc((size_t)n + 1);
	if (fread(buf, 1, (size_t)n, fp) != (size_t)n)
		n = 0;
	buf[n] = 0;
	fclose(fp);
	return buf;
}

/* the numbers after the keyword, exactly `want` of them */
static double *numbers(const char *p, size_t want, const char *key)
{
	double *v = malloc((want ? want : 1) * sizeof(double));
	for (size_t i = 0; i < want; i++) {
		char *end;
		v[i] = strtod(p, &end);
		if (end == p)
			fail_msg("fixture line '%s': %zu numbers, expected %zu", key, i, want);
		p = end;
	}
	while (*p == ' ')
		p++;
	if (*p && *p != '\n')
		fail_msg("fixture line '%s': more than %zu numbers", key, want);
	return v;
}

static void fixture_load(fixture *f, const char *path)
{
	memset(f, 0, sizeof *f);
	char *text = read_text(path);
	if (!text)
		fail_msg("cannot read fixture '%s' (run from the top directory or set FC_TOP)", path);
	size_t C = 0;
	int ended = 0;
	for (char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
		char key[32], word[32];
		if (*line == '#' || *line == '\n' || sscanf(line, "%31s", key) != 1)
			continue;
		const char *rest = line + strlen(key);
		if (!strcmp(key, "kind")) {
			assert_int_equal(sscanf(rest, "%31s", word), 1);
			fc_loss_kind k;
			assert_int_equal(fc_loss_parse(word, &k), 0);
			fc_loss_config_default(&f->cfg, k);
		} else if (!strcmp(key, "miner")) {
			assert_int_equal(sscanf(rest, "%31s", word), 1);
			assert_int_equal(fc_miner_parse(word, &f->cfg.miner), 0);
		} else if (!strcmp(key, "distance")) {
			assert_int_equal(sscanf(rest, "%31s", word), 1);
			assert_int_equal(fc_distance_parse(word, &f->cfg.distance), 0);
		} else if (!strcmp(key, "margin")) {
			f->cfg.margin = strtof(rest, NULL);
		} else if (!strcmp(key, "pos_margin")) {
			f->cfg.pos_margin = strtof(rest, NULL);
		} else if (!strcmp(key, "neg_margin")) {
			f->cfg.neg_margin = strtof(rest, NULL);
		} else if (!strcmp(key, "temperature")) {
			f->cfg.temperature = strtof(rest, NULL);
		} else if (!strcmp(key, "scale")) {
			f->cfg.scale = strtof(rest, NULL);
		} else if (!strcmp(key, "n_classes")) {
			f->cfg.n_classes = (uint32_t)strtoul(rest, NULL, 10);
			C = f->cfg.n_classes;
		} else if (!strcmp(key, "batch")) {
			f->B = strtoul(rest, NULL, 10);
		} else if (!strcmp(key, "dim")) {
			f->D = strtoul(rest, NULL, 10);
		} else if (!strcmp(key, "labels")) {
			double *v = numbers(rest, f->B, key);
			f->labels = malloc(f->B * sizeof(uint32_t));
			for (size_t i = 0; i < f->B; i++)
				f->labels[i] = (uint32_t)v[i];
			free(v);
		} else if (!strcmp(key, "emb") || !strcmp(key, "W")) {
			size_t n = !strcmp(key, "W") ? f->D * C : f->B * f->D;
			double *v = numbers(rest, n, key);
			float *x = malloc(n * sizeof(float));
			for (size_t i = 0; i < n; i++)
				x[i] = (float)v[i]; /* printed from float32 with 9 digits: exact */
			free(v);
			*(!strcmp(key, "W") ? &f->W : &f->emb) = x;
		} else if (!strcmp(key, "loss")) {
			f->loss = strtod(rest, NULL);
		} else if (!strcmp(key, "used")) {
			f->used = strtoull(rest, NULL, 10);
		} else if (!strcmp(key, "nonzero")) {
			f->nonzero = strtoull(rest, NULL, 10);
		} else if (!strcmp(key, "demb")) {
			f->demb = numbers(rest, f->B * f->D, key);
		} else if (!strcmp(key, "dW")) {
			f->dW = numbers(rest, f->D * C, key);
		} else if (!strcmp(key, "end")) {
			ended = 1;
		} else {
			fail_msg("fixture '%s': unknown line '%s'", path, key);
		}
	}
	free(text);
	if (!ended || !f->labels || !f->emb || !f->demb || (C && (!f->W || !f->dW)))
		fail_msg("fixture '%s' is incomplete", path);
}

static void run_fixture(const char *name, const char *dir)
{
	char path[1024];
	fixture f;
	snprintf(path, sizeof path, "%s/%s.txt", dir, name);
	fixture_load(&f, path);
	/* a larger max_batch than the batch must not matter */
	for (uint32_t extra = 0; extra <= 5; extra += 5) {
		fc_loss *l;
		assert_int_equal(fc_loss_new(&l, &f.cfg, (uint32_t)f.D, (uint32_t)f.B + extra, 7), 0);
		float *params, *grads;
		size_t n;
		fc_loss_params(l, &params, &grads, &n);
		assert_int_equal(n, f.W ? f.D * f.cfg.n_classes : 0);
		if (f.W) {
			memcpy(params, f.W, n * sizeof(float));
			memset(grads, 0, n * sizeof(float));
		}
		float loss, *demb = malloc(f.B * f.D * sizeof(float));
		fc_loss_info info;
		assert_int_equal(fc_loss_forward_backward(l, &loss, demb, f.emb, f.labels, (uint32_t)f.B, &info), 0);
		double el = fabs(loss - f.loss) / fmax(fabs(f.loss), 1e-12);
		double eg = rel_err_f(demb, f.demb, f.B * f.D);
		double ew = f.W ? rel_err_f(grads, f.dW, n) : 0;
		if (el > 1e-4 || eg > 1e-4 || ew > 1e-4 || info.used != f.used || info.nonzero != f.nonzero)
			fail_msg("%s: loss %.9g vs %.9g (rel %.2g), demb rel %.2g, dW rel %.2g, used %llu vs %llu, "
				 "nonzero %llu vs %llu",
				 name, loss, f.loss, el, eg, ew, (unsigned long long)info.used,
				 (unsigned long long)f.used, (unsigned long long)info.nonzero,
				 (unsigned long long)f.nonzero);
		if (!extra)
			print_message("# %-32s loss %-10.6g rel %.1e, demb %.1e, dW %.1e\n", name, loss, el, eg, ew);
		free(demb);
		fc_loss_free(l);
	}
	fixture_free(&f);
}

static void test_pytorch_fixtures(void **state)
{
	(void)state;
	char dir[900], path[1000];
	const char *top = getenv("FC_TOP");
	snprintf(dir, sizeof dir, "%s/tests/fixtures/loss", top ? top : ".");
	snprintf(path, sizeof path, "%s/index.txt", dir);
	char *text = read_text(path);
	if (!text)
		fail_msg("cannot read '%s' (run from the top directory or set FC_TOP)", path);
	int cases = 0;
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
		if (*line == '#' || !*line)
			continue;
		run_fixture(line, dir);
		cases++;
	}
	free(text);
	assert_true(cases >= 30);
}

/* --------------------------------------------------- finite differences */

/* The loss's pair matrix computed naively: differences for euclidean
 * distances, products for cosine similarities. */
static double *naive_mat(const float *x, size_t B, size_t D, int cosine)
{
	double *xh = malloc(B * D * sizeof(double)), *M = malloc(B * B * sizeof(double));
	for (size_t i = 0; i < B; i++) {
		double n = 0;
		for (size_t k = 0; k < D; k++)
			n += (double)x[i * D + k] * x[i * D + k];
		n = fmax(sqrt(n), 1e-12);
		for (size_t k = 0; k < D; k++)
			xh[i * D + k] = x[i * D + k] / n;
	}
	for (size_t i = 0; i < B; i++)
		for (size_t j = 0; j < B; j++) {
			double s = 0;
			for (size_t k = 0; k < D; k++) {
				double a = xh[i * D + k], b = xh[j * D + k];
				s += cosine ? a * b : (a - b) * (a - b);
			}
			M[i * B + j] = cosine ? s : sqrt(s);
		}
	free(xh);
	return M;
}

/* How far the batch is from the nearest point where the loss has a kink or
 * a jump: a hinge at 0 or a miner's threshold. Smooth losses: infinity. */
static double kink_gap(const fc_loss_config *c, const float *x, const uint32_t *y, size_t B, size_t D)
{
	if (c->kind != FC_LOSS_TRIPLET && c->kind != FC_LOSS_SIAMESE)
		return INFINITY;
	int cos = c->distance == FC_DIST_COSINE;
	double *M = naive_mat(x, B, D, cos), gap = INFINITY;
	for (size_t a = 0; a < B; a++)
		for (size_t p = 0; p < B; p++) {
			if (p == a)
				continue;
			double ap = M[a * B + p];
			if (c->kind == FC_LOSS_SIAMESE) {
				double h = y[p] == y[a] ? ap - c->pos_margin : ap - c->neg_margin;
				gap = fmin(gap, fabs(h));
				continue;
			}
			if (y[p] != y[a])
				continue;
			for (size_t n = 0; n < B; n++) {
				if (y[n] == y[a])
					continue;
				double t = cos ? ap - M[a * B + n] : M[a * B + n] - ap;
				gap = fmin(gap, fabs(t - c->margin));
				if (c->miner == FC_MINER_HARD || c->miner == FC_MINER_SEMIHARD)
					gap = fmin(gap, fabs(t));
			}
		}
	free(M);
	return gap;
}

static double eval_loss(fc_loss *l, float *scratch, const float *x, const uint32_t *y, size_t B)
{
	float v;
	assert_int_equal(fc_loss_forward_backward(l, &v, scratch, x, y, (uint32_t)B, NULL), 0);
	return v;
}

/* Compares float gradients with central differences (L(x+h) - L(x-h)) / 2h
 * of the float loss, as max|g - fd| / max|fd|. The loss comes back rounded
 * to float, and the products inside it run in float, which puts a few
 * ulp(L) / 2h = 2^-23 |L| / 2h into every difference; that is the dominant
 * error here (smaller steps made the measured errors grow in proportion,
 * larger ones met the kinks), while the
 * truncation error is O(h^2 L''' / L'), about h^2 k^2 / 6 for a loss that
 * grows like e^(k x): 1.3e-4 for NTXent at τ = 0.07 (k = 1/τ), less for the
 * rest (ArcFace's softmax saturates). The tolerance is four times the
 * rounding bound plus 5e-4, capped at 1e-2: a wrong term costs O(1). */
#define FD_STEP 0x1p-9

static double fd_compare(fc_loss *l, float *v, size_t n, const float *g, float *x, const uint32_t *y,
			 size_t B, double loss, float *scratch, double *tol)
{
	const double h = FD_STEP;
	double *fd = malloc(n * sizeof(double)), e = 0;
	for (size_t k = 0; k < n; k++) {
		float keep = v[k];
		v[k] = keep + (float)h;
		double lp = eval_loss(l, scratch, x, y, B);
		v[k] = keep - (float)h;
		double lm = eval_loss(l, scratch, x, y, B);
		v[k] = keep;
		fd[k] = (lp - lm) / (2 * h);
	}
	for (size_t k = 0; k < n; k++)
		e = fmax(e, fabs(g[k] - fd[k]));
	double scale = fmax(max_abs(fd, n), 1e-12);
	*tol = fmin(1e-2, 5e-4 + 4 * ldexp(fabs(loss), -23) / (2 * h) / scale);
	free(fd);
	return e / scale;
}

typedef struct fd_case {
	const char *what;
	fc_loss_config cfg;
	size_t B, D, ncls;
} fd_case;

static void fd_run(const fd_case *fc, uint64_t s)
{
	size_t B = fc->B, D = fc->D, BD = B * D;
	float *x = malloc(BD * sizeof(float)), *g = malloc(BD * sizeof(float)), *scr = malloc(BD * sizeof(float));
	uint32_t *y = malloc(B * sizeof(uint32_t));
	fc_loss *l;
	assert_int_equal(fc_loss_new(&l, &fc->cfg, (uint32_t)D, (uint32_t)B, s), 0);
	float *W, *dW;
	size_t nw;
	fc_loss_params(l, &W, &dW, &nw);
	float *dW0 = nw ? malloc(nw * sizeof(float)) : NULL;
	fc_loss_info info;
	float loss;
	int attempt;
	/* a batch that makes the loss work (nonzero > 0) and stays clear of its
	 * kinks by more than a step can move a distance (2h / |x|, |x| >= 1) */
	for (attempt = 0; attempt < 5000; attempt++) {
		make_batch(x, y, B, D, fc->ncls, 0.4 + 0.15 * (attempt % 8), &s);
		for (size_t k = 0; k < nw; k++)
			W[k] = grid(normal(&s));
		if (nw)
			memset(dW, 0, nw * sizeof(float));
		assert_int_equal(fc_loss_forward_backward(l, &loss, g, x, y, (uint32_t)B, &info), 0);
		if (info.nonzero >= 3 && kink_gap(&fc->cfg, x, y, B, D) > 8 * FD_STEP)
			break;
	}
	if (attempt == 5000)
		fail_msg("%s: no batch clear of the kinks", fc->what);
	assert_true(info.nonzero > 0);
	if (nw)
		memcpy(dW0, dW, nw * sizeof(float));
	double tx, tw = 1;
	double ex = fd_compare(l, x, BD, g, x, y, B, loss, scr, &tx);
	double ew = nw ? fd_compare(l, W, nw, dW0, x, y, B, loss, scr, &tw) : 0;
	print_message("# fd %-40s loss %-9.4g used %-4llu nonzero %-4llu demb %.1e (tol %.0e) dW %.1e\n",
		      fc->what, loss, (unsigned long long)info.used, (unsigned long long)info.nonzero, ex, tx, ew);
	if (ex > tx || ew > tw)
		fail_msg("%s: gradient vs finite differences: demb %.3g (tol %.2g), dW %.3g (tol %.2g)", fc->what,
			 ex, tx, ew, tw);
	fc_loss_free(l);
	free(dW0);
	free(x);
	free(g);
	free(scr);
	free(y);
}

static void test_gradients_fd(void **state)
{
	(void)state;
	static const fc_distance_kind dists[] = { FC_DIST_EUCLIDEAN, FC_DIST_COSINE };
	static const fc_miner_kind miners[] = { FC_MINER_ALL, FC_MINER_HARD, FC_MINER_SEMIHARD };
	uint64_t s = seed;
	char what[64];
	for (int d = 0; d < 2; d++) {
		for (int m = 0; m < 3; m++) {
			fd_case c = { what, config(FC_LOSS_TRIPLET, dists[d], miners[m]), 8, 5, 2 };
			snprintf(what, sizeof what, "triplet %s %s B8 D5", fc_distance_name(dists[d]),
				 fc_miner_name(miners[m]));
			fd_run(&c, s++);
			c = (fd_case){ what, config(FC_LOSS_TRIPLET, dists[d], miners[m]), 9, 9, 3 };
			c.cfg.margin = 0.5f;
			snprintf(what, sizeof what, "triplet %s %s margin 0.5 B9 D9", fc_distance_name(dists[d]),
				 fc_miner_name(miners[m]));
			fd_run(&c, s++);
		}
		fd_case c = { what, config(FC_LOSS_SIAMESE, dists[d], FC_MINER_ALL), 10, 6, 3 };
		snprintf(what, sizeof what, "siamese %s default", fc_distance_name(dists[d]));
		fd_run(&c, s++);
		c.cfg.pos_margin = d ? 0.8f : 0.3f;
		c.cfg.neg_margin = d ? 0.2f : 1.2f;
		c.B = 16;
		c.D = 12;
		c.ncls = 4;
		snprintf(what, sizeof what, "siamese %s margins B16 D12", fc_distance_name(dists[d]));
		fd_run(&c, s++);
		c = (fd_case){ what, config(FC_LOSS_NTXENT, dists[d], FC_MINER_ALL), 12, 7, 4 };
		snprintf(what, sizeof what, "ntxent %s t0.07", fc_distance_name(dists[d]));
		fd_run(&c, s++);
		c.cfg.temperature = 0.5f;
		c.B = 9;
		snprintf(what, sizeof what, "ntxent %s t0.5 B9", fc_distance_name(dists[d]));
		fd_run(&c, s++);
		c = (fd_case){ what, config(FC_LOSS_SUPCON, dists[d], FC_MINER_ALL), 12, 7, 4 };
		snprintf(what, sizeof what, "supcon %s t0.1", fc_distance_name(dists[d]));
		fd_run(&c, s++);
		c.cfg.temperature = 0.4f;
		c.B = 11;
		c.ncls = 5; /* one class of 3, four of 2 */
		snprintf(what, sizeof what, "supcon %s t0.4 B11", fc_distance_name(dists[d]));
		fd_run(&c, s++);
	}
	for (int k = 0; k < 2; k++) {
		fc_loss_kind kind = k ? FC_LOSS_COSFACE : FC_LOSS_ARCFACE;
		fd_case c = { what, config(kind, FC_DIST_COSINE, FC_MINER_ALL), 10, 6, 4 };
		c.cfg.n_classes = 5; /* one class without rows: its W column still moves */
		c.cfg.scale = 8;
		snprintf(what, sizeof what, "%s scale 8 C5", fc_loss_name(kind));
		fd_run(&c, s++);
		c.cfg.scale = 64;
		c.B = 12;
		c.D = 8;
		c.ncls = 6;
		c.cfg.n_classes = 6;
		snprintf(what, sizeof what, "%s default scale 64 C6", fc_loss_name(kind));
		fd_run(&c, s++);
	}
}

/* ------------------------------------------------ hand-checkable cases */

/* Three unit vectors in 2-D at angles 0, 70 and 130 degrees, labels 0, 0, 1.
 * A chord between unit vectors at angle φ is 2 sin(φ/2):
 *   d01 = 2 sin 35° = 1.147153, d02 = 2 sin 65° = 1.812616, d12 = 2 sin 30° = 1
 * and the cosines are s01 = cos 70° = 0.342020, s02 = cos 130° = -0.642788,
 * s12 = cos 60° = 0.5. The triplets (a,p,n) are (0,1,2) and (1,0,2), with
 * t = how much farther n is than p:
 *   euclidean t012 = d02 - d01 = 0.665463, t102 = d12 - d01 = -0.147153
 *   cosine    t012 = s01 - s02 = 0.984808, t102 = s01 - s12 = -0.157980
 * Margin 0.2: "all" keeps t <= 0.2: only (1,0,2), cost 0.2 - t102 =
 * 0.347153 (euclidean) or 0.357980 (cosine); "hard" (t <= 0) the same;
 * "semihard" (0 < t <= 0.2) nothing, loss 0; "easy" (t > 0.2) keeps (0,1,2)
 * whose cost relu(0.2 - t012) is 0: loss 0, used 1, nonzero 0.
 * Margin 1: "all" keeps both: euclidean costs 1 - 0.665463 = 0.334537 and
 * 1.147153, mean 0.740845; cosine 0.015192 and 1.157980, mean 0.586586;
 * "hard" only (1,0,2): 1.147153 / 1.157980; "semihard" only (0,1,2):
 * 0.334537 / 0.015192; "easy" nothing: used 0. */
static void test_hand_triplets(void **state)
{
	(void)state;
	const double rad = M_PI / 180;
	const float x[6] = { 1, 0, (float)cos(70 * rad), (float)sin(70 * rad), (float)cos(130 * rad),
			     (float)sin(130 * rad) };
	const uint32_t y[3] = { 0, 0, 1 };
	static const struct {
		fc_distance_kind dist;
		float margin;
		fc_miner_kind miner;
		double loss;
		uint64_t used, nonzero;
	} cases[] = {
		{ FC_DIST_EUCLIDEAN, 0.2f, FC_MINER_ALL, 0.347153, 1, 1 },
		{ FC_DIST_EUCLIDEAN, 0.2f, FC_MINER_HARD, 0.347153, 1, 1 },
		{ FC_DIST_EUCLIDEAN, 0.2f, FC_MINER_SEMIHARD, 0, 0, 0 },
		{ FC_DIST_EUCLIDEAN, 0.2f, FC_MINER_EASY, 0, 1, 0 },
		{ FC_DIST_EUCLIDEAN, 1.0f, FC_MINER_ALL, 0.740845, 2, 2 },
		{ FC_DIST_EUCLIDEAN, 1.0f, FC_MINER_HARD, 1.147153, 1, 1 },
		{ FC_DIST_EUCLIDEAN, 1.0f, FC_MINER_SEMIHARD, 0.334537, 1, 1 },
		{ FC_DIST_EUCLIDEAN, 1.0f, FC_MINER_EASY, 0, 0, 0 },
		{ FC_DIST_COSINE, 0.2f, FC_MINER_ALL, 0.357980, 1, 1 },
		{ FC_DIST_COSINE, 0.2f, FC_MINER_HARD, 0.357980, 1, 1 },
		{ FC_DIST_COSINE, 0.2f, FC_MINER_SEMIHARD, 0, 0, 0 },
		{ FC_DIST_COSINE, 0.2f, FC_MINER_EASY, 0, 1, 0 },
		{ FC_DIST_COSINE, 1.0f, FC_MINER_ALL, 0.586586, 2, 2 },
		{ FC_DIST_COSINE, 1.0f, FC_MINER_HARD, 1.157980, 1, 1 },
		{ FC_DIST_COSINE, 1.0f, FC_MINER_SEMIHARD, 0.015192, 1, 1 },
		{ FC_DIST_COSINE, 1.0f, FC_MINER_EASY, 0, 0, 0 },
	};
	for (size_t q = 0; q < sizeof cases / sizeof cases[0]; q++) {
		fc_loss_config c = config(FC_LOSS_TRIPLET, cases[q].dist, cases[q].miner);
		c.margin = cases[q].margin;
		fc_loss *l;
		assert_int_equal(fc_loss_new(&l, &c, 2, 3, 0), 0);
		float loss, g[6];
		fc_loss_info info;
		assert_int_equal(fc_loss_forward_backward(l, &loss, g, x, y, 3, &info), 0);
		if (fabs(loss - cases[q].loss) > 2e-6 || info.used != cases[q].used ||
		    info.nonzero != cases[q].nonzero)
			fail_msg("case %zu (%s margin %g %s): loss %.7f, want %.6f; used %llu nonzero %llu", q,
				 fc_distance_name(cases[q].dist), cases[q].margin, fc_miner_name(cases[q].miner), loss,
				 cases[q].loss, (unsigned long long)info.used, (unsigned long long)info.nonzero);
		if (cases[q].nonzero == 0)
			for (int k = 0; k < 6; k++)
				assert_true(g[k] == 0.0f);
		fc_loss_free(l);
	}

	/* Euclidean, margin 0.2, only (1,0,2): L = d10 - d12 + 0.2. Point 0 is
	 * in it only through d10; moving it along +y (its tangent) shrinks the
	 * angle 70° at rate 1, and d(2 sin(φ/2))/dφ = cos(φ/2): so dL/dx0 =
	 * (0, -cos 35°) = (0, -0.819152). Point 2 only through -d12: moving it
	 * along its tangent (-sin 130°, cos 130°) opens the 60° angle at rate 1,
	 * so dL/dx2 = -cos 30° (-sin 130°, cos 130°) = (0.663414, 0.556670). */
	fc_loss_config c = config(FC_LOSS_TRIPLET, FC_DIST_EUCLIDEAN, FC_MINER_ALL);
	fc_loss *l;
	assert_int_equal(fc_loss_new(&l, &c, 2, 3, 0), 0);
	float loss, g[6];
	assert_int_equal(fc_loss_forward_backward(l, &loss, g, x, y, 3, NULL), 0);
	assert_float_equal(g[0], 0, 2e-6);
	assert_float_equal(g[1], -0.819152, 2e-6);
	assert_float_equal(g[4], 0.663414, 2e-6);
	assert_float_equal(g[5], 0.556670, 2e-6);
	fc_loss_free(l);
}

/* ------------------------------------------------------------- edges */

static void expect_zero(fc_loss *l, const float *x, const uint32_t *y, size_t B, size_t D, const char *what)
{
	float loss = -1, *g = malloc(B * D * sizeof(float));
	for (size_t k = 0; k < B * D; k++)
		g[k] = 123;
	fc_loss_info info = { 9, 9 };
	assert_int_equal(fc_loss_forward_backward(l, &loss, g, x, y, (uint32_t)B, &info), 0);
	if (loss != 0 || info.nonzero != 0)
		fail_msg("%s: loss %g nonzero %llu, want 0", what, loss, (unsigned long long)info.nonzero);
	for (size_t k = 0; k < B * D; k++)
		if (g[k] != 0)
			fail_msg("%s: gradient %zu is %g, want 0", what, k, g[k]);
	free(g);
}

static void test_miners_select_nothing(void **state)
{
	(void)state;
	/* two tight, far apart clusters: every negative is farther than every
	 * positive by more than the margin, so hard and semihard find nothing
	 * and easy finds only triplets that cost 0 */
	enum { B = 8, D = 4 };
	float x[B * D];
	uint32_t y[B];
	uint64_t s = seed ^ 0x51;
	for (size_t i = 0; i < B; i++) {
		y[i] = (uint32_t)(i % 2);
		for (size_t k = 0; k < D; k++)
			x[i * D + k] = (float)((k == y[i] ? 2.0 : 0.0) + 0.01 * normal(&s));
	}
	for (int d = 0; d < 2; d++)
		for (int m = FC_MINER_HARD; m <= FC_MINER_EASY; m++) {
			fc_loss_config c = config(FC_LOSS_TRIPLET, (fc_distance_kind)d, (fc_miner_kind)m);
			fc_loss *l;
			assert_int_equal(fc_loss_new(&l, &c, D, B, 0), 0);
			char what[64];
			snprintf(what, sizeof what, "separated %s %s", fc_distance_name((fc_distance_kind)d),
				 fc_miner_name((fc_miner_kind)m));
			expect_zero(l, x, y, B, D, what);
			fc_loss_info info;
			float loss, g[B * D];
			assert_int_equal(fc_loss_forward_backward(l, &loss, g, x, y, B, &info), 0);
			/* 8 anchors x 3 positives x 4 negatives, all easy */
			assert_int_equal(info.used, m == FC_MINER_EASY ? 96 : 0);
			fc_loss_free(l);
		}
}

static void test_degenerate_batches(void **state)
{
	(void)state;
	enum { B = 6, D = 5 };
	float x[B * D];
	uint32_t one[B] = { 3, 3, 3, 3, 3, 3 }, distinct[B] = { 0, 1, 2, 3, 4, 5 };
	uint64_t s = seed ^ 0x77;
	for (size_t k = 0; k < B * D; k++)
		x[k] = (float)normal(&s);
	for (int kind = FC_LOSS_TRIPLET; kind <= FC_LOSS_SUPCON; kind++)
		for (int d = 0; d < 2; d++) {
			fc_loss_config c = config((fc_loss_kind)kind, (fc_distance_kind)d, FC_MINER_ALL);
			fc_loss *l;
			char what[64];
			assert_int_equal(fc_loss_new(&l, &c, D, B, 0), 0);
			/* B = 1: no pair at all */
			snprintf(what, sizeof what, "%s %s B=1", fc_loss_name(c.kind), fc_distance_name(c.distance));
			expect_zero(l, x, one, 1, D, what);
			/* one class: no negatives (siamese still has its positive part) */
			if (kind != FC_LOSS_SIAMESE) {
				snprintf(what, sizeof what, "%s %s one class", fc_loss_name(c.kind),
					 fc_distance_name(c.distance));
				expect_zero(l, x, one, B, D, what);
			}
			/* all classes distinct: no positives (siamese keeps its negatives) */
			if (kind != FC_LOSS_SIAMESE) {
				snprintf(what, sizeof what, "%s %s distinct", fc_loss_name(c.kind),
					 fc_distance_name(c.distance));
				expect_zero(l, x, distinct, B, D, what);
			}
			fc_loss_free(l);
		}
	/* siamese with one class: only positive pairs, L = mean d over pairs */
	fc_loss_config c = config(FC_LOSS_SIAMESE, FC_DIST_EUCLIDEAN, FC_MINER_ALL);
	fc_loss *l;
	assert_int_equal(fc_loss_new(&l, &c, D, B, 0), 0);
	float loss, g[B * D];
	fc_loss_info info;
	assert_int_equal(fc_loss_forward_backward(l, &loss, g, x, one, B, &info), 0);
	double *M = naive_mat(x, B, D, 0), want = 0;
	for (size_t i = 0; i < B; i++)
		for (size_t j = 0; j < B; j++)
			want += i != j ? M[i * B + j] : 0;
	free(M);
	want /= B * (B - 1);
	assert_float_equal(loss, want, 1e-6 * want);
	assert_int_equal(info.used, B * (B - 1));
	assert_int_equal(info.nonzero, B * (B - 1));
	fc_loss_free(l);

	/* ArcFace/CosFace with B = 1 learn as usual */
	for (int k = 0; k < 2; k++) {
		c = config(k ? FC_LOSS_COSFACE : FC_LOSS_ARCFACE, FC_DIST_COSINE, FC_MINER_ALL);
		c.n_classes = 3;
		assert_int_equal(fc_loss_new(&l, &c, D, B, 1), 0);
		uint32_t y1 = 2;
		assert_int_equal(fc_loss_forward_backward(l, &loss, g, x, &y1, 1, &info), 0);
		assert_true(loss >= 0 && isfinite(loss));
		assert_int_equal(info.used, 1);
		for (size_t e = 0; e < D; e++)
			assert_true(isfinite(g[e]));
		fc_loss_free(l);
	}
}

static void test_bad_input(void **state)
{
	(void)state;
	enum { B = 6, D = 4, C = 3 };
	float x[B * D], g[B * D], loss;
	uint32_t y[B] = { 0, 0, 1, 1, 2, 2 };
	uint64_t s = seed ^ 0x99;
	for (size_t k = 0; k < B * D; k++)
		x[k] = (float)normal(&s);
	for (int kind = FC_LOSS_TRIPLET; kind <= FC_LOSS_COSFACE; kind++) {
		fc_loss_config c;
		fc_loss_config_default(&c, (fc_loss_kind)kind);
		c.n_classes = C;
		fc_loss *l;
		assert_int_equal(fc_loss_new(&l, &c, D, B, 0), 0);
		assert_int_equal(fc_loss_forward_backward(l, &loss, g, x, y, B, NULL), 0);
		/* NaN and Inf anywhere in the input */
		for (int v = 0; v < 3; v++) {
			float keep = x[7];
			x[7] = v == 0 ? NAN : v == 1 ? INFINITY : -INFINITY;
			assert_int_equal(fc_loss_forward_backward(l, &loss, g, x, y, B, NULL), FC_ERR_INVALID);
			x[7] = keep;
		}
		/* a batch larger than max_batch, an empty one, NULLs */
		float big[(B + 1) * D];
		uint32_t ybig[B + 1] = { 0 };
		memset(big, 0, sizeof big);
		assert_int_equal(fc_loss_forward_backward(l, &loss, g, big, ybig, B + 1, NULL), FC_ERR_INVALID);
		assert_int_equal(fc_loss_forward_backward(l, &loss, g, x, y, 0, NULL), FC_ERR_INVALID);
		assert_int_equal(fc_loss_forward_backward(NULL, &loss, g, x, y, B, NULL), FC_ERR_INVALID);
		assert_int_equal(fc_loss_forward_backward(l, NULL, g, x, y, B, NULL), FC_ERR_INVALID);
		assert_int_equal(fc_loss_forward_backward(l, &loss, NULL, x, y, B, NULL), FC_ERR_INVALID);
		assert_int_equal(fc_loss_forward_backward(l, &loss, g, NULL, y, B, NULL), FC_ERR_INVALID);
		assert_int_equal(fc_loss_forward_backward(l, &loss, g, x, NULL, B, NULL), FC_ERR_INVALID);
		if (kind >= FC_LOSS_ARCFACE) {
			/* labels beyond the class-centre matrix */
			uint32_t yb[B] = { 0, 1, 2, 3, 0, 1 };
			assert_int_equal(fc_loss_forward_backward(l, &loss, g, x, yb, B, NULL), FC_ERR_INVALID);
			yb[3] = UINT32_MAX;
			assert_int_equal(fc_loss_forward_backward(l, &loss, g, x, yb, B, NULL), FC_ERR_INVALID);
			/* a non-finite class centre (a diverged optimizer) */
			float *W, *dW;
			size_t n;
			fc_loss_params(l, &W, &dW, &n);
			W[n - 1] = NAN;
			assert_int_equal(fc_loss_forward_backward(l, &loss, g, x, y, B, NULL), FC_ERR_INVALID);
		}
		/* a zero row has no direction; it must still give finite numbers */
		if (kind < FC_LOSS_ARCFACE) {
			float z[B * D];
			memcpy(z, x, sizeof z);
			memset(z + D, 0, D * sizeof(float));
			assert_int_equal(fc_loss_forward_backward(l, &loss, g, z, y, B, NULL), 0);
			assert_true(isfinite(loss));
			for (size_t k = 0; k < B * D; k++)
				assert_true(isfinite(g[k]));
		}
		fc_loss_free(l);
	}

	/* configurations PML has no meaning for */
	fc_loss *l = (fc_loss *)(uintptr_t)1; /* must come back NULL */
	fc_loss_config c;
	for (int kind = FC_LOSS_SIAMESE; kind <= FC_LOSS_COSFACE; kind++) {
		fc_loss_config_default(&c, (fc_loss_kind)kind);
		c.n_classes = C;
		c.miner = FC_MINER_SEMIHARD;
		assert_int_equal(fc_loss_new(&l, &c, D, B, 0), FC_ERR_INVALID);
		assert_null(l);
	}
	fc_loss_config_default(&c, FC_LOSS_ARCFACE);
	c.n_classes = C;
	c.distance = FC_DIST_EUCLIDEAN;
	assert_int_equal(fc_loss_new(&l, &c, D, B, 0), FC_ERR_INVALID);
	c.distance = FC_DIST_COSINE;
	c.n_classes = 0;
	assert_int_equal(fc_loss_new(&l, &c, D, B, 0), FC_ERR_INVALID);
	fc_loss_config_default(&c, FC_LOSS_NTXENT);
	c.temperature = 0;
	assert_int_equal(fc_loss_new(&l, &c, D, B, 0), FC_ERR_INVALID);
	c.temperature = NAN;
	assert_int_equal(fc_loss_new(&l, &c, D, B, 0), FC_ERR_INVALID);
	fc_loss_config_default(&c, FC_LOSS_TRIPLET);
	c.margin = INFINITY;
	assert_int_equal(fc_loss_new(&l, &c, D, B, 0), FC_ERR_INVALID);
	c.margin = 0.2f;
	c.miner = (fc_miner_kind)9;
	assert_int_equal(fc_loss_new(&l, &c, D, B, 0), FC_ERR_INVALID);
	c.miner = FC_MINER_ALL;
	c.kind = (fc_loss_kind)17;
	assert_int_equal(fc_loss_new(&l, &c, D, B, 0), FC_ERR_INVALID);
	c.kind = FC_LOSS_TRIPLET;
	assert_int_equal(fc_loss_new(&l, &c, 0, B, 0), FC_ERR_INVALID);
	assert_int_equal(fc_loss_new(&l, &c, D, 0, 0), FC_ERR_INVALID);
	assert_int_equal(fc_loss_new(&l, NULL, D, B, 0), FC_ERR_INVALID);
	assert_int_equal(fc_loss_new(NULL, &c, D, B, 0), FC_ERR_INVALID);
	fc_loss_free(NULL);
}

/* ------------------------------------------ parameters, names, defaults */

static void test_class_centres(void **state)
{
	(void)state;
	enum { D = 16, C = 500, B = 8 };
	fc_loss_config c;
	fc_loss_config_default(&c, FC_LOSS_ARCFACE);
	c.n_classes = C;
	fc_loss *a, *b, *o;
	assert_int_equal(fc_loss_new(&a, &c, D, B, 42), 0);
	assert_int_equal(fc_loss_new(&b, &c, D, B, 42), 0);
	assert_int_equal(fc_loss_new(&o, &c, D, B, 43), 0);
	float *wa, *ga, *wb, *gb, *wo, *go;
	size_t n;
	fc_loss_params(a, &wa, &ga, &n);
	assert_int_equal(n, (size_t)D * C);
	fc_loss_params(b, &wb, &gb, &n);
	fc_loss_params(o, &wo, &go, &n);
	assert_memory_equal(wa, wb, n * sizeof(float));
	assert_memory_not_equal(wa, wo, n * sizeof(float));
	/* N(0, 1): mean and variance of 8000 draws within a few standard errors */
	double m = 0, v = 0;
	for (size_t k = 0; k < n; k++) {
		m += wa[k];
		v += (double)wa[k] * wa[k];
		assert_true(ga[k] == 0.0f);
	}
	m /= n;
	v = v / n - m * m;
	assert_true(fabs(m) < 0.05);
	assert_true(fabs(v - 1) < 0.08);

	/* the class-centre gradient accumulates */
	float x[B * D], g[B * D], loss;
	uint32_t y[B];
	uint64_t s = seed ^ 0x33;
	for (size_t k = 0; k < B * D; k++)
		x[k] = (float)normal(&s);
	for (size_t i = 0; i < B; i++)
		y[i] = (uint32_t)(splitmix64(&s) % C);
	assert_int_equal(fc_loss_forward_backward(a, &loss, g, x, y, B, NULL), 0);
	float *once = malloc(n * sizeof(float));
	memcpy(once, ga, n * sizeof(float));
	assert_int_equal(fc_loss_forward_backward(a, &loss, g, x, y, B, NULL), 0);
	for (size_t k = 0; k < n; k++)
		assert_true(ga[k] == 2 * once[k]);
	free(once);

	/* losses without parameters have none */
	fc_loss *t;
	fc_loss_config_default(&c, FC_LOSS_TRIPLET);
	assert_int_equal(fc_loss_new(&t, &c, D, B, 0), 0);
	float *p = wa, *q = ga;
	fc_loss_params(t, &p, &q, &n);
	assert_null(p);
	assert_null(q);
	assert_int_equal(n, 0);
	fc_loss_free(t);
	fc_loss_free(a);
	fc_loss_free(b);
	fc_loss_free(o);
}

static void test_names_and_defaults(void **state)
{
	(void)state;
	static const char *const losses[] = { "triplet", "siamese", "ntxent", "supcon", "arcface", "cosface" };
	static const char *const miners[] = { "all", "hard", "semihard", "easy" };
	static const char *const dists[] = { "euclidean", "cosine" };
	for (int k = 0; k < 6; k++) {
		fc_loss_kind v;
		assert_int_equal(fc_loss_parse(losses[k], &v), 0);
		assert_int_equal(v, k);
		assert_string_equal(fc_loss_name(v), losses[k]);
	}
	for (int k = 0; k < 4; k++) {
		fc_miner_kind v;
		assert_int_equal(fc_miner_parse(miners[k], &v), 0);
		assert_int_equal(v, k);
		assert_string_equal(fc_miner_name(v), miners[k]);
	}
	for (int k = 0; k < 2; k++) {
		fc_distance_kind v;
		assert_int_equal(fc_distance_parse(dists[k], &v), 0);
		assert_int_equal(v, k);
		assert_string_equal(fc_distance_name(v), dists[k]);
	}
	fc_loss_kind lk;
	assert_int_equal(fc_loss_parse("TripletMarginLoss", &lk), 0);
	assert_int_equal(lk, FC_LOSS_TRIPLET);
	assert_int_equal(fc_loss_parse("ContrastiveLoss", &lk), 0);
	assert_int_equal(lk, FC_LOSS_SIAMESE);
	assert_int_equal(fc_loss_parse("ArcFaceLoss", &lk), 0);
	assert_int_equal(lk, FC_LOSS_ARCFACE);
	assert_int_equal(fc_loss_parse("COSFACE", &lk), 0);
	assert_int_equal(lk, FC_LOSS_COSFACE);
	assert_int_equal(fc_loss_parse("tripletx", &lk), FC_ERR_INVALID);
	assert_int_equal(fc_loss_parse("", &lk), FC_ERR_INVALID);
	assert_int_equal(fc_loss_parse(NULL, &lk), FC_ERR_INVALID);
	fc_miner_kind mk;
	assert_int_equal(fc_miner_parse("semi", &mk), FC_ERR_INVALID);
	fc_distance_kind dk;
	assert_int_equal(fc_distance_parse("l2", &dk), FC_ERR_INVALID);
	assert_string_equal(fc_loss_name((fc_loss_kind)99), "unknown");
	assert_string_equal(fc_miner_name((fc_miner_kind)99), "unknown");
	assert_string_equal(fc_distance_name((fc_distance_kind)99), "unknown");

	fc_loss_config c;
	fc_loss_config_default(&c, FC_LOSS_TRIPLET);
	assert_true(c.margin == 0.2f && c.miner == FC_MINER_ALL && c.distance == FC_DIST_EUCLIDEAN);
	fc_loss_config_default(&c, FC_LOSS_SIAMESE);
	assert_true(c.pos_margin == 0.0f && c.neg_margin == 1.0f && c.distance == FC_DIST_EUCLIDEAN);
	fc_loss_config_default(&c, FC_LOSS_NTXENT);
	assert_true(c.temperature == 0.07f && c.distance == FC_DIST_COSINE);
	fc_loss_config_default(&c, FC_LOSS_SUPCON);
	assert_true(c.temperature == 0.1f && c.distance == FC_DIST_COSINE);
	fc_loss_config_default(&c, FC_LOSS_ARCFACE);
	assert_true(c.margin == 28.6f && c.scale == 64.0f && c.distance == FC_DIST_COSINE && c.n_classes == 0);
	fc_loss_config_default(&c, FC_LOSS_COSFACE);
	assert_true(c.margin == 0.35f && c.scale == 64.0f && c.distance == FC_DIST_COSINE);
	fc_loss_config_default(NULL, FC_LOSS_TRIPLET);
}

/* ------------------------------------------------------- determinism */

static void test_thread_count_invariance(void **state)
{
	(void)state;
	enum { B = 96, D = 40, C = 150 };
	float *x = malloc(B * D * sizeof(float)), *g1 = malloc(B * D * sizeof(float)),
	      *g2 = malloc(B * D * sizeof(float));
	uint32_t y[B];
	uint64_t s = seed ^ 0x1234;
	make_batch(x, y, B, D, 24, 0.9, &s);
	int saved = omp_get_max_threads();
	for (int kind = FC_LOSS_TRIPLET; kind <= FC_LOSS_COSFACE; kind++)
		for (int d = 0; d < 2; d++) {
			fc_loss_config c = config((fc_loss_kind)kind, (fc_distance_kind)d,
						  kind == FC_LOSS_TRIPLET ? FC_MINER_SEMIHARD : FC_MINER_ALL);
			if (kind >= FC_LOSS_ARCFACE) {
				if (d == FC_DIST_EUCLIDEAN)
					continue;
				c.n_classes = C;
			}
			fc_loss *l;
			float l1, l2, *W, *dW;
			size_t n;
			assert_int_equal(fc_loss_new(&l, &c, D, B, 5), 0);
			fc_loss_params(l, &W, &dW, &n);
			float *dW1 = n ? malloc(n * sizeof(float)) : NULL;
			omp_set_num_threads(1);
			assert_int_equal(fc_loss_forward_backward(l, &l1, g1, x, y, B, NULL), 0);
			if (n) {
				memcpy(dW1, dW, n * sizeof(float));
				memset(dW, 0, n * sizeof(float));
			}
			omp_set_num_threads(4);
			assert_int_equal(fc_loss_forward_backward(l, &l2, g2, x, y, B, NULL), 0);
			assert_memory_equal(&l1, &l2, sizeof l1);
			assert_memory_equal(g1, g2, B * D * sizeof(float));
			if (n)
				assert_memory_equal(dW1, dW, n * sizeof(float));
			free(dW1);
			fc_loss_free(l);
		}
	omp_set_num_threads(saved);
	free(x);
	free(g1);
	free(g2);
}

int main(void)
{
	const char *env = getenv("FC_SEED");
	if (env)
		seed = strtoull(env, NULL, 0);
	printf("# test_loss seed %llu (FC_SEED to replay)\n", (unsigned long long)seed);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pytorch_fixtures),
		cmocka_unit_test(test_gradients_fd),
		cmocka_unit_test(test_hand_triplets),
		cmocka_unit_test(test_miners_select_nothing),
		cmocka_unit_test(test_degenerate_batches),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_class_centres),
		cmocka_unit_test(test_names_and_defaults),
		cmocka_unit_test(test_thread_count_invariance),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
