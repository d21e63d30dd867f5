/*
 * bench/profile.h - oneDNN's profiling verbose output (dnnl_set_verbose(2)),
 * read back into time per layer class: bench/extract_engine --profile
 * prints the table, tests/test_bench_profile.c checks the parser on lines
 * captured from the engine.
 *
 * A line oneDNN 2.x prints for every primitive it executes:
 *
 *   onednn_verbose,exec,cpu,KIND,IMPL,PROP,MEMORY DESCRIPTORS,ATTRIBUTES,
 *                  AUXILIARY,PROBLEM,MILLISECONDS
 *
 * (one line, no spaces around the commas; older releases say
 * dnnl_verbose). The problem descriptor of a convolution is
 * "[gG]mbN_icCocO_[idD odD kdK sdS ddD pdP_]ihH ohH khK shS dhD phP_iwW owW
 * kwK swS dwD pwP" without the spaces (ic and oc count every group's
 * channels); an inner product's "mbNicC[ihH iwW]ocO"; a matmul's
 * "AxB:BxC:AxC" (src:weights:dst, leading batch dimensions allowed).
 *
 * FLOPs are 2 x the multiply-adds: a convolution 2 x mb x oc x od x oh x ow
 * x (ic / g) x kd x kh x kw, an inner product 2 x mb x oc x ic x id x ih x
 * iw, a matmul 2 x (the elements of dst) x (src's last dimension);
 * everything else (reorders, pooling, element-wise, binary) counts 0.
 *
 * Header-only, like bench/benchlib.h: every bench/<name>.c is a program.
 */
#ifndef FC_BENCH_PROFILE_H
#define FC_BENCH_PROFILE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The layer classes of the table, in its order. */
enum bench_prof_class {
	BP_STEM = 0, /* a convolution reading 3 channels (the image) */
	BP_CONV1,    /* 1x1 convolution, one group */
	BP_CONVK,    /* 3x3 and other k x k convolutions, one group */
	BP_GROUPED,  /* grouped and depthwise convolutions */
	BP_MATMUL,   /* matmul and inner product */
	BP_REORDER,  /* layout and data-type conversions */
	BP_POOL,     /* pooling */
	BP_OTHER,    /* eltwise, binary and anything else */
	BP_N
};

static const char *const bench_prof_class_name[BP_N] = {
	"conv stem (3 input channels)", "conv 1x1", "conv kxk (3x3, 5x5, 7x7)", "grouped / depthwise conv",
	"matmul / inner product", "reorder", "pooling", "eltwise / binary / other",
};

/* One executed primitive. */
typedef struct bench_prim {
	char kind[32];  /* "convolution", "reorder", ... */
	char impl[64];  /* "brgconv:avx512_core", ... */
	char src_dt[8]; /* the first src memory's data type: "f32", "bf16", "u8", ... ("" if none) */
	double ms;      /* execution time */
	double flops;   /* 2 x multiply-adds; 0 for the classes without */
	int cls;        /* enum bench_prof_class */
} bench_prim;

/* The value after key in a problem descriptor: "ic" in "mb4_ic3oc64_ih224"
 * is 3. A key is letters right after a digit, '_' or the start, followed
 * by digits. Returns def when key is absent. */
static inline double bench_prof_key(const char *desc, const char *key, double def)
{
	size_t kl = strlen(key);
	for (const char *p = desc; *p; p++) {
		if (p != desc && !(p[-1] == '_' || (p[-1] >= '0' && p[-1] <= '9')))
			continue;
		if (strncmp(p, key, kl) != 0 || p[kl] < '0' || p[kl] > '9')
			continue;
		return strtod(p + kl, NULL);
	}
	return def;
}

/* 2 x the multiply-adds of a matmul descriptor "AxB:BxC:AxC"; 0 if it is
 * not one. */
static inline double bench_prof_matmul_flops(const char *desc)
{
	const char *c1 = strchr(desc, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
	if (!c2)
		return 0;
	const char *k = c1; /* src's last dimension: digits just before the first ':' */
	while (k > desc && k[-1] >= '0' && k[-1] <= '9')
		k--;
	double kk = strtod(k, NULL), dst = 1;
	for (const char *p = c2 + 1; *p >= '0' && *p <= '9';) {
		char *end;
		dst *= strtod(p, &end);
		p = *end == 'x' ? end + 1 : end;
	}
	return 2 * dst * kk;
}

/* The FLOPs and layer class of a primitive of kind with problem desc. */
static inline void bench_prof_classify(bench_prim *p, const char *desc)
{
	p->flops = 0;
	if (!strcmp(p->kind, "convolution") || !strcmp(p->kind, "deconvolution")) {
		double g = bench_prof_key(desc, "g", 1), mb = bench_prof_key(desc, "mb", 1);
		double ic = bench_prof_key(desc, "ic", 1), oc = bench_prof_key(desc, "oc", 1);
		double ks = bench_prof_key(desc, "kd", 1) * bench_prof_key(desc, "kh", 1) * bench_prof_key(desc, "kw", 1);
		double out = bench_prof_key(desc, "od", 1) * bench_prof_key(desc, "oh", 1) * bench_prof_key(desc, "ow", 1);
		if (!strcmp(p->kind, "deconvolution")) /* every input point scatters over the kernel */
			out = bench_prof_key(desc, "id", 1) * bench_prof_key(desc, "ih", 1) * bench_prof_key(desc, "iw", 1);
		p->flops = 2 * mb * oc * out * (ic / g) * ks;
		p->cls = g > 1 ? BP_GROUPED : ic == 3 ? BP_STEM : ks == 1 ? BP_CONV1 : BP_CONVK;
	} else if (!strcmp(p->kind, "inner_product")) {
		double in = bench_prof_key(desc, "id", 1) * bench_prof_key(desc, "ih", 1) * bench_prof_key(desc, "iw", 1);
		p->flops = 2 * bench_prof_key(desc, "mb", 1) * bench_prof_key(desc, "oc", 1) *
			   bench_prof_key(desc, "ic", 1) * in;
		p->cls = BP_MATMUL;
	} else if (!strcmp(p->kind, "matmul")) {
		p->flops = bench_prof_matmul_flops(desc);
		p->cls = BP_MATMUL;
	} else if (!strcmp(p->kind, "reorder"))
		p->cls = BP_REORDER;
	else if (!strncmp(p->kind, "pooling", 7))
		p->cls = BP_POOL;
	else
		p->cls = BP_OTHER;
}

/* bench_prof_parse - one line of verbose output. Returns 1 and fills *p for
 * an exec line, 0 for any other line (info, create, the program's own
 * output), -1 for an exec line that does not have the fields above. */
static inline int bench_prof_parse(const char *line, bench_prim *p)
{
	const char *rest;
	if (!strncmp(line, "onednn_verbose,exec,", 20))
		rest = line + 20;
	else if (!strncmp(line, "dnnl_verbose,exec,", 18))
		rest = line + 18;
	else
		return 0;
	const char *f[16]; /* field starts after "exec," */
	int n = 0;
	f[n++] = rest;
	for (const char *c = rest; *c && *c != '\n'; c++)
		if (*c == ',' && n < 16)
			f[n++] = c + 1;
	if (n != 9) /* engine kind, kind, impl, prop, mds, attrs, aux, problem, time */
		return -1;
	memset(p, 0, sizeof *p);
	size_t kl = (size_t)(f[2] - f[1] - 1), il = (size_t)(f[3] - f[2] - 1);
	if (kl == 0 || kl >= sizeof p->kind || il == 0 || il >= sizeof p->impl)
		return -1;
	memcpy(p->kind, f[1], kl);
	memcpy(p->impl, f[2], il);
	const char *src = strstr(f[4], "src_");
	if (src && src < f[5] - 1) {
		size_t dl = strcspn(src + 4, ": ,");
		if (dl < sizeof p->src_dt)
			memcpy(p->src_dt, src + 4, dl);
	}
	char *end;
	p->ms = strtod(f[8], &end);
	if (end == f[8] || !(p->ms >= 0))
		return -1;
	char desc[256];
	size_t dl = (size_t)(f[8] - f[7] - 1);
	if (dl >= sizeof desc)
		return -1;
	memcpy(desc, f[7], dl);
	desc[dl] = '\0';
	bench_prof_classify(p, desc);
	return 1;
}

/* How many times the f32 rate a primitive's dot products run at, by the
 * data type it reads: bf16 2x, u8/s8 4x (VNNI), anything else 1x - the
 * multiples bench/extract_engine's tables use for the peak. */
static inline double bench_prof_rate(const bench_prim *p)
{
	if (!strcmp(p->src_dt, "bf16"))
		return 2;
	if (!strcmp(p->src_dt, "u8") || !strcmp(p->src_dt, "s8"))
		return 4;
	return 1;
}

/* Totals of one layer class. */
typedef struct bench_prof_sum {
	double ms, flops;
	double ideal_ms; /* the time at the peak rate of each primitive's data type */
	long n;
	char impls[160]; /* the implementations seen, space-separated */
} bench_prof_sum;

/* Add p to s[p->cls]; peak_gflops is the f32 peak. */
static inline void bench_prof_add(bench_prof_sum s[BP_N], const bench_prim *p, double peak_gflops)
{
	bench_prof_sum *c = &s[p->cls];
	c->ms += p->ms;
	c->flops += p->flops;
	c->ideal_ms += p->flops / (peak_gflops * 1e9 * bench_prof_rate(p)) * 1e3;
	c->n++;
	size_t il = strlen(p->impl), have = strlen(c->impls);
	for (const char *q = c->impls; (q = strstr(q, p->impl)) != NULL; q += il)
		if ((q == c->impls || q[-1] == ' ') && (q[il] == ' ' || q[il] == '\0'))
			return;
	if (have + il + 2 < sizeof c->impls)
		snprintf(c->impls + have, sizeof c->impls - have, "%s%s", have ? " " : "", p->impl);
}

/* Every exec line of the file at path into s (zeroed first). Returns the
 * number of exec lines, or -1 when the file cannot be read or a line is
 * malformed (*bad, may be NULL, gets its number). */
static inline long bench_prof_read(const char *path, bench_prof_sum s[BP_N], double peak_gflops, long *bad)
{
	FILE *f = fopen(path, "r");
	char line[2048];
	long n = 0, no = 0;
	memset(s, 0, BP_N * sizeof *s);
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f)) {
		bench_prim p;
		no++;
		int r = bench_prof_parse(line, &p);
		if (r < 0) {
			if (bad)
				*bad = no;
			fclose(f);
			return -1;
		}
		if (r > 0) {
			bench_prof_add(s, &p, peak_gflops);
			n++;
		}
	}
	fclose(f);
	return n;
}

#endif /* FC_BENCH_PROFILE_H */
