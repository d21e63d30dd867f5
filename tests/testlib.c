/*
 * testlib.c - the tests' shared helpers (testlib.h): seed and random
 * stream, files and temporary directories, the ONNX model builder over
 * io/onnx.c, and graph checks of imported models.
 *
 * Not library code: failures abort with a "# testlib:" line instead of
 * returning codes, because a test has nothing better to do with them.
 */
#include <ftw.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/testlib.h"
#include "util/util.h"

static void die(const char *fmt, ...) FC_PRINTF(1, 2);

static void die(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("# testlib: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

static void *need(void *p, const char *what)
{
	if (!p)
		die("out of memory for %s", what);
	return p;
}

/* ---- the seed and the random stream ---- */

static uint64_t stream;

uint64_t testlib_seed(const char *test_name)
{
	const char *s = getenv("FC_SEED");
	uint64_t seed = s && *s ? strtoull(s, NULL, 0) : TESTLIB_SEED;

	stream = seed;
	printf("# %s seed %llu (FC_SEED to replay)\n", test_name, (unsigned long long)seed);
	fflush(stdout);
	return seed;
}

uint64_t testlib_rand(void)
{
	return fci_splitmix64(&stream);
}

size_t testlib_below(size_t n)
{
	return (size_t)(testlib_rand() % n);
}

int testlib_int(int lo, int hi)
{
	return lo + (int)(testlib_rand() % (uint64_t)(hi - lo + 1));
}

float testlib_float(float lo, float hi)
{
	return lo + (hi - lo) * (float)fci_unit_double(testlib_rand());
}

double testlib_unit_pos(void)
{
	return ((double)(testlib_rand() >> 11) + 1.0) * 0x1p-53;
}

double testlib_unit(uint64_t *state)
{
	return fci_unit_double(fci_splitmix64(state));
}

/* ---- files ---- */

uint8_t *testlib_read_file(const char *path, size_t *len)
{
	uint8_t *buf = NULL, *out;
	size_t cap = 0;
	char why[FC_ERRLEN];

	*len = 0;
	if (fci_read_file(path, (uint64_t)1 << 40, &buf, &cap, len, why, sizeof why)) {
		printf("# testlib: cannot read '%s': %s\n", path, why);
		free(buf);
		return NULL;
	}
	out = need(realloc(buf, *len + 1), path);
	out[*len] = 0;
	return out;
}

char *testlib_tmpdir(const char *name)
{
	const char *base = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	size_t n = strlen(base) + strlen(name) + 16;
	char *path = need(malloc(n), "a path");

	snprintf(path, n, "%s/fc-%s.XXXXXX", base, name);
	if (!mkdtemp(path))
		die("cannot create a directory like '%s'", path);
	return path;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

int testlib_rmtree(const char *path)
{
	return nftw(path, remove_one, 16, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -1;
}

/* ---- ONNX models ---- */

void testlib_model_init(fci_onnx *b, int opset)
{
	fci_onnx_init(b);
	if (fci_onnx_add_opset(b, fci_onnx_new_opset(b, "", opset)))
		die("out of memory for a model");
	b->model.has_ir_version = 1;
	b->model.ir_version = 8;
	b->model.producer_name = testlib_str(b, "test_model");
	b->graph.name = testlib_str(b, "g");
}

void *testlib_alloc(fci_onnx *b, size_t n)
{
	return need(fci_onnx_alloc(b, 1, n), "a model");
}

char *testlib_str(fci_onnx *b, const char *s)
{
	return need(fci_onnx_strf(b, "%s", s), "a model");
}

Onnx__ValueInfoProto *testlib_value(fci_onnx *b, const char *name, int elem, int ndim, const int64_t *dims)
{
	return need(fci_onnx_new_value_info(b, name, elem, ndim, dims, "N"), "a value info");
}

void testlib_input(fci_onnx *b, const char *name, int ndim, const int64_t *dims)
{
	if (fci_onnx_add_input(b, testlib_value(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, ndim, dims)))
		die("out of memory for a model");
}

void testlib_output(fci_onnx *b, const char *name)
{
	if (fci_onnx_add_output(b, testlib_value(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, -1, NULL)))
		die("out of memory for a model");
}

Onnx__TensorProto *testlib_tensor(fci_onnx *b, const char *name, int type, int ndim, const int64_t *dims)
{
	return need(fci_onnx_new_tensor(b, name, type, (size_t)ndim, dims), "a tensor");
}

Onnx__TensorProto *testlib_f32(fci_onnx *b, const char *name, int ndim, const int64_t *dims, const float *v)
{
	size_t n = 1;
	float *made = NULL;
	Onnx__TensorProto *t;

	for (int i = 0; i < ndim; i++)
		n *= (size_t)dims[i];
	if (!v) {
		made = need(malloc(n * sizeof *made + 1), "a tensor");
		for (size_t i = 0; i < n; i++)
			made[i] = 0.01f * (float)(i % 7) - 0.03f;
	}
	t = need(fci_onnx_new_tensor_f32(b, name, (size_t)ndim, dims, v ? v : made), "a tensor");
	free(made);
	return t;
}

Onnx__TensorProto *testlib_i64(fci_onnx *b, const char *name, int n, const int64_t *v)
{
	return need(fci_onnx_new_tensor_i64(b, name, (size_t)n, v), "a tensor");
}

void testlib_add_init(fci_onnx *b, Onnx__TensorProto *t)
{
	if (fci_onnx_add_init(b, t))
		die("out of memory for a model");
}

void testlib_init_f32(fci_onnx *b, const char *name, int ndim, const int64_t *dims)
{
	testlib_add_init(b, testlib_f32(b, name, ndim, dims, NULL));
}

void testlib_init_i64(fci_onnx *b, const char *name, int n, const int64_t *v)
{
	testlib_add_init(b, testlib_i64(b, name, n, v));
}

/* Comma-separated names split in place in s ("" is none): at most cap. */
static size_t split(char *s, const char **v, size_t cap)
{
	size_t n = 0;

	if (!s[0])
		return 0;
	for (char *p = s;; p++) {
		char *e = strchr(p, ',');

		if (n == cap)
			die("more than %zu names in a node's list", cap);
		v[n++] = p;
		if (!e)
			return n;
		*e = 0;
		p = e;
	}
}

Onnx__NodeProto *testlib_conv3x3(fci_onnx *b, const char *name, const char *ins, const char *out, int group)
{
	Onnx__NodeProto *n = testlib_node(b, "Conv", name, ins, out);
	testlib_attr_ints(b, n, "kernel_shape", 2, 3LL, 3LL);
	testlib_attr_ints(b, n, "pads", 4, 1LL, 1LL, 1LL, 1LL);
	testlib_attr_i(b, n, "group", group);
	return n;
}

Onnx__NodeProto *testlib_node(fci_onnx *b, const char *op, const char *name, const char *ins, const char *outs)
{
	char *is = testlib_str(b, ins), *os = testlib_str(b, outs);
	const char *in[64], *out[16];
	size_t n_in = split(is, in, 64), n_out = split(os, out, 16);

	return need(fci_onnx_node(b, op, name, in, n_in, out, n_out), "a node");
}

Onnx__AttributeProto *testlib_attr(fci_onnx *b, Onnx__NodeProto *n, const char *name, int type)
{
	return need(fci_onnx_attr(b, n, name, type), "an attribute");
}

void testlib_attr_i(fci_onnx *b, Onnx__NodeProto *n, const char *name, int64_t v)
{
	if (fci_onnx_attr_int(b, n, name, v))
		die("out of memory for an attribute");
}

void testlib_attr_f(fci_onnx *b, Onnx__NodeProto *n, const char *name, float v)
{
	if (fci_onnx_attr_float(b, n, name, v))
		die("out of memory for an attribute");
}

void testlib_attr_s(fci_onnx *b, Onnx__NodeProto *n, const char *name, const char *v)
{
	if (fci_onnx_attr_string(b, n, name, v))
		die("out of memory for an attribute");
}

void testlib_attr_ints(fci_onnx *b, Onnx__NodeProto *n, const char *name, int cnt, ...)
{
	int64_t v[64];
	va_list ap;

	if (cnt < 0 || cnt > 64)
		die("%d ints for attribute '%s'", cnt, name);
	va_start(ap, cnt);
	for (int i = 0; i < cnt; i++)
		v[i] = va_arg(ap, long long);
	va_end(ap);
	if (fci_onnx_attr_ints(b, n, name, v, (size_t)cnt))
		die("out of memory for an attribute");
}

void testlib_attr_t(fci_onnx *b, Onnx__NodeProto *n, const char *name, Onnx__TensorProto *t)
{
	if (fci_onnx_attr_tensor(b, n, name, t))
		die("out of memory for an attribute");
}

uint8_t *testlib_pack(const fci_onnx *b, size_t *len)
{
	uint8_t *buf;

	if (fci_onnx_encode(&b->model, &buf, len))
		die("out of memory for a model's bytes");
	return buf;
}

int testlib_open(const fci_onnx *b, fc_model **m, char *err)
{
	size_t len;
	uint8_t *buf = testlib_pack(b, &len);
	int rc = fc_model_open_mem(m, buf, len, err, FC_ERRLEN);

	free(buf);
	return rc;
}

int testlib_open_engine(const fci_onnx *b, const char *cut, int batch, int prec, fc_model **m, fc_engine **e)
{
	char err[FC_ERRLEN];

	*m = NULL;
	*e = NULL;
	if (testlib_open(b, m, err))
		die("model open failed: %s", err);
	if (fc_model_cut(*m, cut))
		die("cut at '%s' failed: %s", cut, fc_model_errmsg(*m));
	fc_engine_opts o = { .batch = batch, .precision = prec };
	int rc = fc_engine_open(e, *m, &o, err, sizeof err);
	if (rc && prec == FC_PREC_BF16 && strstr(err, "native bf16")) {
		printf("# bf16 skipped: %s\n", err);
		fc_model_free(*m);
		*m = NULL;
		return 1;
	}
	if (rc)
		die("engine open failed: %s", err);
	return 0;
}

void testlib_write(const Onnx__ModelProto *model, const char *path)
{
	char why[FC_ERRLEN];

	if (fci_onnx_write(model, path, why, sizeof why))
		die("cannot write '%s': %s", path, why);
}

/* ---- imported models ---- */

int testlib_tensor_id(const fc_model_graph *g, const char *name)
{
	for (int i = 0; i < g->n_tensors; i++)
		if (strcmp(g->tensors[i].name, name) == 0)
			return i;
	return -1;
}

#define INV(cond)                                                              \
	do {                                                                   \
		if (!(cond)) {                                                 \
			printf("# invariant broken: %s (line %d)\n", #cond, __LINE__); \
			return 0;                                              \
		}                                                              \
	} while (0)

int testlib_model_consistent(const fc_model *m)
{
	const fc_model_graph *g = fc_model_get_graph(m);

	INV(g->input >= 0 && g->input < g->n_tensors);
	INV(g->tensors[g->input].kind == FC_TENSOR_INPUT);
	for (int i = 0; i < g->n_nodes; i++) {
		const fc_model_node *nd = &g->nodes[i];

		INV(nd->op >= 0 && nd->op < FC_OP_COUNT);
		INV(nd->state >= FC_NODE_RUN && nd->state <= FC_NODE_FOLDED);
		for (int k = 0; k < nd->n_in; k++) {
			const fc_model_tensor *t;

			INV(nd->in[k] >= -1 && nd->in[k] < g->n_tensors);
			if (nd->in[k] < 0)
				continue;
			t = &g->tensors[nd->in[k]];
			INV(t->kind != FC_TENSOR_NONE);
			INV(t->source == nd->in[k]); /* aliases resolved */
			/* produced before use */
			if (t->kind == FC_TENSOR_ACT)
				INV(t->producer >= 0 && t->producer < i);
			if (t->kind == FC_TENSOR_CONST)
				INV(t->elem == FC_ELEM_F32 ? t->f32 != NULL : t->i64 != NULL);
		}
		if (nd->state == FC_NODE_RUN) {
			const fc_model_tensor *o = &g->tensors[nd->out[0]];
			int64_t n = 1;

			INV(o->kind == FC_TENSOR_ACT);
			INV(o->ndim >= 0 && o->ndim <= FC_MODEL_MAX_DIMS);
			for (int d = 0; d < o->ndim; d++) {
				INV(o->dims[d] >= 1);
				n *= o->dims[d];
			}
			INV(n == o->numel);
		}
		if (nd->needed)
			INV(nd->state == FC_NODE_RUN);
	}
	if (g->cut_tensor >= 0) {
		INV(g->tensors[g->cut_tensor].kind == FC_TENSOR_ACT);
		INV(g->embed_dim >= 1);
		INV(g->nodes[g->tensors[g->cut_tensor].producer].needed);
	}
	return 1;
}

double testlib_rel_err(const float *got, const float *ref, size_t n)
{
	double maxd = 0, maxb = 0;
	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)got[i] - ref[i]);
		if (!(d <= maxd) && !isnan(maxd)) /* a NaN stays */
			maxd = d;
		maxb = fmax(maxb, fabs(ref[i]));
	}
	return maxb > 0 ? maxd / maxb : maxd;
}

float *testlib_rand_vec(fci_onnx *b, size_t n, float lo, float hi)
{
	float *v = testlib_alloc(b, n * sizeof *v);
	for (size_t i = 0; i < n; i++)
		v[i] = testlib_float(lo, hi);
	return v;
}

void testlib_add_f32(fci_onnx *b, const char *name, int ndim, const int64_t *dims, const float *v)
{
	testlib_add_init(b, testlib_f32(b, name, ndim, dims, v));
}
