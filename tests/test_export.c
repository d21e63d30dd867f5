/*
 * test_export.c - fc_export_onnx (export/export.c) against featcache itself:
 *  - an exported model (normalize 0, cut at "embedding") run by the engine
 *    gives what the engine's backbone features through a naive double
 *    Linear/BatchNorm1d/ReLU reference give, for heads whose BatchNorm
 *    statistics are far from identity (so the folding is really checked)
 *    and for several backbone families;
 *  - the file's graph: one input "input" (dynamic batch), one output
 *    "embedding", the source's opset and ir_version, no initializer left
 *    unused (the old classifier is gone), LpNormalization last;
 *  - names: a model whose input is not called "input", and an exported
 *    model exported again at its "embedding" (its names clash with the
 *    ones an export adds);
 *  - --opset: raising it, and refusing when a kept node changes meaning;
 *  - bad input: head dim mismatch, unknown layer, missing model (its full
 *    message), unwritable output; nothing is left behind and an existing
 *    file is unchanged.
 * ONNX Runtime's side (normalisation included) is tests/cli/export.sh.
 *
 * Random data comes from one seed, printed at the start; FC_SEED replays
 * it. Fixtures are found under $FC_TOP or the current directory.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "featcache/engine.h"
#include "featcache/export.h"
#include "featcache/model.h"
#include "featcache/train.h"
#include "tests/testlib.h"

#define SIZE 64
#define N 3

static uint64_t seed;
static char fixtures[1024], *tmp;

static const char *fixture(const char *name)
{
	static char buf[4][1200];
	static int slot;

	slot = (slot + 1) % 4;
	snprintf(buf[slot], sizeof buf[slot], "%s/%s.onnx", fixtures, name);
	return buf[slot];
}

static const char *tmpfile_path(const char *name)
{
	static char buf[4][512];
	static int slot;

	slot = (slot + 1) % 4;
	snprintf(buf[slot], sizeof buf[slot], "%s/%s", tmp, name);
	return buf[slot];
}

/* A head whose BatchNorm layers are far from identity. */
static fc_head *random_head(uint32_t in, uint32_t hidden, uint32_t out, uint32_t layers, uint64_t s)
{
	fc_head_config cfg = { in, hidden, out, layers };
	fc_head *h;
	fc_tensor t[64];
	size_t n;

	assert_int_equal(fc_head_new(&h, &cfg, 16, s), 0);
	n = fc_head_tensors(h, t, 64);
	assert_true(n <= 64);
	for (size_t i = 0; i < n; i++) {
		const char *name = t[i].name;
		uint64_t len = t[i].shape[0];

		if (!t[i].data || t[i].ndim != 1)
			continue;
		for (uint64_t k = 0; k < len; k++) {
			double u = testlib_unit(&s);

			if (strstr(name, "running_var"))
				t[i].data[k] = (float)(0.2 + 2 * u);
			else if (strstr(name, "running_mean") || strstr(name, "bias"))
				t[i].data[k] = (float)(u - 0.5);
			else /* BN weight */
				t[i].data[k] = (float)(0.5 + u);
		}
	}
	return h;
}

/* head_layers.<idx>.<what> of h's state dict. */
static const float *state_dict(fc_head *h, uint32_t idx, const char *what)
{
	fc_tensor t[64];
	char name[64];
	size_t n = fc_head_tensors(h, t, 64);

	snprintf(name, sizeof name, "head_layers.%u.%s", idx, what);
	for (size_t i = 0; i < n && i < 64; i++)
		if (!strcmp(t[i].name, name))
			return t[i].data;
	fail_msg("head has no '%s'", name);
	return NULL;
}

/* The reference: PyTorch's eval-mode head, Linear -> BatchNorm1d -> ReLU,
 * naively in double from the state dict (independent of train/head.c's
 * oneDNN path and of the export's folding). out (N, D) = head(in (N, IN)). */
static void head_ref(fc_head *h, float *out, const float *in)
{
	fc_head_config c = fc_head_get_config(h);
	double x[N * 1280], y[N * 1280];
	uint32_t din = c.in_dim;

	assert_true(c.in_dim <= 1280 && c.hidden <= 1280);
	for (size_t i = 0; i < (size_t)N * din; i++)
		x[i] = in[i];
	for (uint32_t l = 0; l < c.layers; l++) {
		uint32_t dout = l + 1 == c.layers ? c.out_dim : c.hidden;
		const float *w = state_dict(h, 3 * l, "weight");
		const float *g = state_dict(h, 3 * l + 1, "weight");
		const float *b = state_dict(h, 3 * l + 1, "bias");
		const float *m = state_dict(h, 3 * l + 1, "running_mean");
		const float *v = state_dict(h, 3 * l + 1, "running_var");

		for (size_t r = 0; r < N; r++)
			for (uint32_t o = 0; o < dout; o++) {
				double z = 0;

				for (uint32_t k = 0; k < din; k++)
					z += x[r * din + k] * w[(size_t)o * din + k];
				z = (z - m[o]) / sqrt((double)v[o] + 1e-5) * g[o] + b[o];
				y[r * dout + o] = l + 1 < c.layers && z < 0 ? 0 : z;
			}
		memcpy(x, y, sizeof(double) * N * dout);
		din = dout;
	}
	for (size_t i = 0; i < (size_t)N * din; i++)
		out[i] = (float)x[i];
}

static float *random_images(uint64_t s)
{
	float *x = malloc(sizeof *x * N * 3 * SIZE * SIZE);

	assert_non_null(x);
	for (size_t i = 0; i < (size_t)N * 3 * SIZE * SIZE; i++)
		x[i] = (float)(4 * testlib_unit(&s) - 2);
	return x;
}

/* The engine's output for model cut at layer (NULL: default), N images. */
static float *engine_embed(const char *path, const char *layer, const float *in, size_t *dim)
{
	char err[FC_ERRLEN];
	fc_model *m;
	fc_engine *e;
	fc_engine_opts eo = { .batch = N };
	float *out;
	int rc = fc_model_open(&m, path, err, sizeof err);

	if (rc)
		fail_msg("open '%s': %s", path, err);
	assert_int_equal(fc_model_set_input(m, 1, 3, SIZE, SIZE), 0);
	if (fc_model_cut(m, layer))
		fail_msg("cut '%s' at %s: %s", path, layer ? layer : "default", fc_model_errmsg(m));
	if ((rc = fc_engine_open(&e, m, &eo, err, sizeof err)))
		fail_msg("engine '%s': %s", path, err);
	*dim = fc_engine_dim(e);
	out = malloc(sizeof *out * N * *dim);
	assert_non_null(out);
	assert_int_equal(fc_engine_run(e, out, in, N), 0);
	fc_engine_free(e);
	fc_model_free(m);
	return out;
}

static int64_t default_dim(const char *path)
{
	char err[FC_ERRLEN];
	fc_model *m;
	int64_t d;

	assert_int_equal(fc_model_open(&m, path, err, sizeof err), 0);
	assert_int_equal(fc_model_set_input(m, 1, 3, SIZE, SIZE), 0);
	assert_int_equal(fc_model_cut(m, NULL), 0);
	d = fc_model_get_graph(m)->embed_dim;
	fc_model_free(m);
	return d;
}

/* max |a - b| / max |b| over n values. */
static double rel_err(const float *a, const float *b, size_t n)
{
	double d = 0, mx = 1e-30;

	for (size_t i = 0; i < n; i++) {
		d = fmax(d, fabs((double)a[i] - b[i]));
		mx = fmax(mx, fabs((double)b[i]));
	}
	return d / mx;
}

static int export_ok(const char *model, const char *layer, int normalize, fc_head *h, const char *out)
{
	fc_export_opts o = { .layer = layer, .size = SIZE, .normalize = normalize, .head_name = "h" };
	char err[FC_ERRLEN];
	int rc = fc_export_onnx(model, &o, h, out, err, sizeof err);

	if (rc)
		print_message("# export '%s': %s\n", model, err);
	return rc;
}

/* Engine(export cut at "embedding") == head_ref(engine(backbone)). */
static void check_family(const char *name, uint64_t s)
{
	const char *model = fixture(name), *out = tmpfile_path("fam.onnx");
	int64_t dim = default_dim(model);
	fc_head *h = random_head((uint32_t)dim, 24, 12, 3, s);
	float *x = random_images(s + 1), *ref, *got;
	float want[N * 12];
	size_t d0, d1;
	double e;

	assert_int_equal(export_ok(model, NULL, 0, h, out), 0);
	ref = engine_embed(model, NULL, x, &d0);
	assert_int_equal(d0, (size_t)dim);
	head_ref(h, want, ref);
	got = engine_embed(out, "embedding", x, &d1);
	assert_int_equal(d1, 12);
	e = rel_err(got, want, N * 12);
	print_message("# %s: %lld-d cut, export vs head(backbone) rel err %.2e\n", name, (long long)dim, e);
	assert_true(e < 1e-4);
	free(x);
	free(ref);
	free(got);
	fc_head_free(h);
	unlink(out);
}

static void test_folded_head_matches(void **state)
{
	(void)state;
	check_family("resnet18_narrow", seed);
	check_family("mobilenet_v2_025", seed + 10);
	check_family("densenet_narrow", seed + 20);
	check_family("shapechain_dynbatch", seed + 30);
	check_family("mnasnet_025", seed + 40);
}

static Onnx__ModelProto *load(const char *path)
{
	size_t n;
	uint8_t *buf = testlib_read_file(path, &n);
	Onnx__ModelProto *mp;

	assert_non_null(buf);
	mp = fci_onnx_decode(buf, n);
	free(buf);
	assert_non_null(mp);
	return mp;
}

static int64_t ai_onnx_opset(const Onnx__ModelProto *mp)
{
	for (size_t i = 0; i < mp->n_opset_import; i++)
		if (!mp->opset_import[i]->domain || !mp->opset_import[i]->domain[0])
			return mp->opset_import[i]->version;
	return -1;
}

static void check_value_info(const Onnx__ValueInfoProto *v, const char *name, int ndim, const int64_t *dims)
{
	const Onnx__TensorShapeProto *sh;

	assert_string_equal(v->name, name);
	assert_non_null(v->type);
	assert_non_null(v->type->tensor_type);
	assert_int_equal(v->type->tensor_type->elem_type, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT);
	sh = v->type->tensor_type->shape;
	assert_non_null(sh);
	assert_int_equal(sh->n_dim, ndim);
	for (int i = 0; i < ndim; i++) {
		if (dims[i] < 0) {
			assert_non_null(sh->dim[i]->dim_param);
			assert_string_equal(sh->dim[i]->dim_param, "batch");
		} else {
			assert_true(sh->dim[i]->has_dim_value);
			assert_int_equal(sh->dim[i]->dim_value, dims[i]);
		}
	}
}

static void test_graph(void **state)
{
	const char *model = fixture("resnet18_narrow"), *out = tmpfile_path("g.onnx");
	fc_head *h = random_head(64, 0, 8, 2, seed + 50);
	Onnx__ModelProto *src, *mp;
	const Onnx__GraphProto *g;
	const Onnx__NodeProto *last;
	size_t gemms = 0;

	(void)state;
	assert_int_equal(export_ok(model, NULL, 1, h, out), 0);
	src = load(model);
	mp = load(out);
	g = mp->graph;
	assert_int_equal(mp->ir_version, src->ir_version);
	assert_int_equal(ai_onnx_opset(mp), ai_onnx_opset(src));
	assert_int_equal(mp->n_opset_import, src->n_opset_import);
	assert_string_equal(mp->producer_name, "featcache");
	assert_true(mp->n_metadata_props >= 2);
	assert_non_null(strstr(mp->doc_string, "'/Flatten'"));
	assert_int_equal(g->n_input, 1);
	check_value_info(g->input[0], "input", 4, (int64_t[]){ -1, 3, SIZE, SIZE });
	assert_int_equal(g->n_output, 1);
	check_value_info(g->output[0], "embedding", 2, (int64_t[]){ -1, 8 });
	last = g->node[g->n_node - 1];
	assert_string_equal(last->op_type, "LpNormalization");
	assert_string_equal(last->output[0], "embedding");
	/* Every initializer is read by a node; the classifier (the source's
	 * Gemm) is gone, only the head's two remain. */
	for (size_t i = 0; i < g->n_initializer; i++) {
		int used = 0;

		for (size_t k = 0; k < g->n_node && !used; k++)
			for (size_t j = 0; j < g->node[k]->n_input; j++)
				used |= strcmp(g->node[k]->input[j], g->initializer[i]->name) == 0;
		if (!used)
			fail_msg("initializer '%s' is not used", g->initializer[i]->name);
		assert_null(strstr(g->initializer[i]->name, "fc."));
	}
	for (size_t k = 0; k < g->n_node; k++)
		gemms += strcmp(g->node[k]->op_type, "Gemm") == 0;
	assert_int_equal(gemms, 2);
	assert_true(g->n_node < src->graph->n_node + 6);
	fci_onnx_decode_free(src);
	fci_onnx_decode_free(mp);
	fc_head_free(h);
	unlink(out);
}

static void test_names(void **state)
{
	const char *model = fixture("resnet18_narrow"), *renamed = tmpfile_path("image.onnx");
	const char *a = tmpfile_path("a.onnx"), *b = tmpfile_path("b.onnx"), *c = tmpfile_path("c.onnx");
	fc_head *h = random_head(64, 32, 16, 2, seed + 60), *h2 = random_head(16, 0, 6, 1, seed + 61);
	float *x = random_images(seed + 62), *ea, *eb, *ec, *ref, want1[N * 16], want2[N * 6];
	Onnx__ModelProto *mp = load(model), *out;
	size_t d;

	(void)state;
	/* The source's image input called "image". */
	for (size_t i = 0; i < mp->graph->n_input; i++)
		if (!strcmp(mp->graph->input[i]->name, "input"))
			strcpy(mp->graph->input[i]->name, "image");
	for (size_t k = 0; k < mp->graph->n_node; k++)
		for (size_t j = 0; j < mp->graph->node[k]->n_input; j++)
			if (!strcmp(mp->graph->node[k]->input[j], "input"))
				strcpy(mp->graph->node[k]->input[j], "image");
	testlib_write(mp, renamed);
	fci_onnx_decode_free(mp);

	assert_int_equal(export_ok(model, NULL, 0, h, a), 0);
	assert_int_equal(export_ok(renamed, NULL, 0, h, b), 0);
	out = load(b);
	assert_string_equal(out->graph->input[0]->name, "input");
	fci_onnx_decode_free(out);
	ea = engine_embed(a, "embedding", x, &d);
	eb = engine_embed(b, "embedding", x, &d);
	assert_memory_equal(ea, eb, sizeof *ea * N * 16);

	/* The export exported again: its "input", "embedding" and featcache/
	 * names are all taken. */
	assert_int_equal(export_ok(a, "embedding", 0, h2, c), 0);
	out = load(c);
	assert_string_equal(out->graph->input[0]->name, "input");
	assert_string_equal(out->graph->output[0]->name, "embedding");
	assert_non_null(strstr(out->graph->node[out->graph->n_node - 1]->name, "featcache_2/"));
	fci_onnx_decode_free(out);
	ec = engine_embed(c, "embedding", x, &d);
	assert_int_equal(d, 6);
	ref = engine_embed(model, NULL, x, &d);
	head_ref(h, want1, ref);
	head_ref(h2, want2, want1);
	assert_true(rel_err(ec, want2, N * 6) < 1e-4);

	free(x);
	free(ea);
	free(eb);
	free(ec);
	free(ref);
	fc_head_free(h);
	fc_head_free(h2);
	unlink(renamed);
	unlink(a);
	unlink(b);
	unlink(c);
}

static void test_opset(void **state)
{
	const char *out = tmpfile_path("o.onnx");
	fc_head *h = random_head(64, 0, 8, 1, seed + 70);
	fc_export_opts o = { .size = SIZE, .normalize = 1, .opset = 17 };
	char err[FC_ERRLEN];
	Onnx__ModelProto *mp;
	int64_t mnas_dim = default_dim(fixture("mnasnet_025"));
	fc_head *hm = random_head((uint32_t)mnas_dim, 0, 8, 1, seed + 71);

	(void)state;
	assert_int_equal(fc_export_onnx(fixture("resnet18_narrow"), &o, h, out, err, sizeof err), 0);
	mp = load(out);
	assert_int_equal(ai_onnx_opset(mp), 17);
	assert_true(mp->ir_version >= 8);
	fci_onnx_decode_free(mp);

	o.opset = 12;
	assert_int_equal(fc_export_onnx(fixture("resnet18_narrow"), &o, h, out, err, sizeof err), FC_ERR_INVALID);
	assert_non_null(strstr(err, "cannot lower the opset from 13 to 12"));
	o.opset = 18;
	assert_int_equal(fc_export_onnx(fixture("mnasnet_025"), &o, hm, out, err, sizeof err), FC_ERR_INVALID);
	assert_non_null(strstr(err, "(ReduceMean) changed meaning in opset 18"));
	fc_head_free(h);
	fc_head_free(hm);
	unlink(out);
}

static int exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

static void test_errors(void **state)
{
	const char *model = fixture("resnet18_narrow"), *out = tmpfile_path("e.onnx");
	fc_head *h = random_head(32, 0, 8, 1, seed + 80), *ok = random_head(64, 0, 8, 1, seed + 81);
	fc_export_opts o = { .size = SIZE, .normalize = 1, .head_name = "h" };
	char err[FC_ERRLEN], sub[1200], buf[8];
	FILE *f;

	(void)state;
	assert_int_equal(fc_export_onnx(model, &o, h, out, err, sizeof err), FC_ERR_INVALID);
	assert_string_equal(err, "head 'h' takes 32-d input, the model's layer '/Flatten' gives 64-d");
	assert_false(exists(out));

	o.layer = "/nope";
	assert_int_equal(fc_export_onnx(model, &o, ok, out, err, sizeof err), FC_ERR_NOT_FOUND);
	assert_non_null(strstr(err, "no layer named '/nope'"));
	o.layer = NULL;
	assert_int_equal(fc_export_onnx(tmpfile_path("missing.onnx"), &o, ok, out, err, sizeof err),
			 FC_ERR_NOT_FOUND);
	snprintf(sub, sizeof sub, "cannot read model '%s': no such file or directory",
		 tmpfile_path("missing.onnx"));
	assert_string_equal(err, sub);
	assert_false(exists(out));

	snprintf(sub, sizeof sub, "%s/no/such/dir/x.onnx", tmp);
	assert_true(fc_export_onnx(model, &o, ok, sub, err, sizeof err) < 0);
	assert_non_null(strstr(err, "cannot write"));

	/* A failed export leaves an existing file as it was. */
	assert_non_null(f = fopen(out, "w"));
	fputs("keep", f);
	fclose(f);
	o.layer = "/nope";
	assert_int_equal(fc_export_onnx(model, &o, ok, out, err, sizeof err), FC_ERR_NOT_FOUND);
	assert_non_null(f = fopen(out, "r"));
	assert_non_null(fgets(buf, sizeof buf, f));
	fclose(f);
	assert_string_equal(buf, "keep");
	fc_head_free(h);
	fc_head_free(ok);
	unlink(out);
}

static int setup(void **state)
{
	const char *top = getenv("FC_TOP");

	(void)state;
	snprintf(fixtures, sizeof fixtures, "%s/tests/fixtures/models", top && *top ? top : ".");
	tmp = testlib_tmpdir("test-export");
	return 0;
}

/* Every test removes its files and a failed export leaves none: the
 * directory must be empty. */
static int teardown(void **state)
{
	int empty = rmdir(tmp) == 0;

	(void)state;
	if (!empty)
		testlib_rmtree(tmp);
	free(tmp);
	return empty ? 0 : -1;
}

int main(void)
{
	seed = testlib_seed("test_export");

	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_folded_head_matches),
		cmocka_unit_test(test_graph),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_opset),
		cmocka_unit_test(test_errors),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
