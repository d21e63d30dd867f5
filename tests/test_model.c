/*
 * test_model.c - unit tests of the ONNX import (extract/model*.c,
 * extract/onnx_read.c) on model files:
 *  - every fixture of tests/fixtures/models/ (narrow torchvision exports
 *    made by tools/export_models.py) opens; every tensor's shape at two
 *    input sizes matches ONNX's own shape inference (cross-checked there
 *    against PyTorch); ops, node count, parameter count, default layer and
 *    embedding dim match; sizes the model cannot take are refused;
 *  - files that cannot be read;
 *  - hostile bytes: every fixture truncated at each 1/64 of its length,
 *    random bytes, random byte flips. Each must give a clear error or a
 *    consistent graph; outside ASan this runs under an address-space limit
 *    so that a huge allocation would show as FC_ERR_NOMEM.
 * The rules on graphs, written with testlib's ONNX builder, and the wire
 * format are test_model_graph.c.
 *
 * Random data comes from one seed, printed at the start; set FC_SEED to
 * replay. Fixtures are found under $FC_TOP (tests/run.sh sets it) or the
 * current directory.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "featcache/model.h"
#include "featcache/io.h"
#include "tests/testlib.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

/* ---- files ---- */

static char fixture_dir[1024];

/* The fixture models' base names, sorted. */
static char **fixture_names(int *n)
{
	DIR *d = opendir(fixture_dir);
	struct dirent *e;
	char **v = NULL;
	int cnt = 0;

	assert_non_null(d);
	while ((e = readdir(d))) {
		size_t l = strlen(e->d_name);

		if (l > 5 && strcmp(e->d_name + l - 5, ".onnx") == 0) {
			v = realloc(v, sizeof *v * (size_t)(cnt + 1));
			assert_non_null(v);
			v[cnt] = strndup(e->d_name, l - 5);
			assert_non_null(v[cnt]);
			cnt++;
		}
	}
	closedir(d);
	for (int i = 0; i < cnt; i++)
		for (int j = i + 1; j < cnt; j++)
			if (strcmp(v[i], v[j]) > 0) {
				char *t = v[i];
				v[i] = v[j];
				v[j] = t;
			}
	*n = cnt;
	return v;
}

static void free_names(char **v, int n)
{
	for (int i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static char *fixture_path(char *buf, size_t cap, const char *name, const char *ext)
{
	snprintf(buf, cap, "%s/%s%s", fixture_dir, name, ext);
	return buf;
}

/* Whatever a model that opened holds must be consistent. */
static void check_invariants(const fc_model *m)
{
	assert_true(testlib_model_consistent(m));
}

/* ---- fixtures ---- */

static void check_fixture(const char *name)
{
	char path[1200], err[FC_ERRLEN];
	json_error_t jerr;
	json_t *root, *sizes, *ops, *dl, *v;
	const char *key;
	fc_model *m = NULL;
	const fc_model_graph *g;
	size_t i;
	int rc, n_ops[FC_OP_COUNT] = { 0 };

	root = json_load_file(fixture_path(path, sizeof path, name, ".json"), 0, &jerr);
	if (!root)
		fail_msg("%s: %s", path, jerr.text);
	rc = fc_model_open(&m, fixture_path(path, sizeof path, name, ".onnx"), err, sizeof err);
	if (rc)
		fail_msg("%s: %d %s", path, rc, err);
	g = fc_model_get_graph(m);
	check_invariants(m);

	assert_int_equal(g->opset, json_integer_value(json_object_get(root, "opset")));
	assert_int_equal(g->n_nodes, json_integer_value(json_object_get(root, "nodes")));
	assert_int_equal(g->params, json_integer_value(json_object_get(root, "params")));
	ops = json_object_get(root, "ops");
	for (int k = 0; k < g->n_nodes; k++)
		n_ops[g->nodes[k].op]++;
	json_object_foreach(ops, key, v) {
		int found = 0;

		for (int op = 0; op < FC_OP_COUNT; op++)
			if (strcmp(fc_op_name(op), key) == 0) {
				if (n_ops[op] != json_integer_value(v))
					fail_msg("%s: %d %s nodes, expected %lld", name, n_ops[op], key,
						 (long long)json_integer_value(v));
				found = 1;
			}
		if (!found)
			fail_msg("%s: op %s unknown", name, key);
	}

	dl = json_object_get(root, "default_layer");
	assert_true(g->default_node >= 0);
	assert_string_equal(g->nodes[g->default_node].name, json_string_value(json_object_get(dl, "node")));
	assert_string_equal(g->tensors[g->default_tensor].name,
			    json_string_value(json_object_get(dl, "tensor")));
	assert_int_equal(g->cut_node, g->default_node);
	assert_int_equal(g->embed_dim, json_integer_value(json_object_get(dl, "dim")));
	assert_int_equal(g->pool, json_is_true(json_object_get(dl, "pooled")));
	assert_true(g->cut_params <= g->params);

	/* The Gemm/MatMul and Conv after the cut are not needed. */
	for (int k = 0; k < g->n_nodes; k++)
		if (g->nodes[k].needed)
			assert_true(k <= g->default_node);
	assert_true(g->nodes[g->default_node].needed);

	/* PyTorch's features (for the engine) have the embedding's width. */
	{
		float *feat = NULL;
		size_t rows = 0, cols = 0;

		rc = fc_npy_read_f32(&feat, &rows, &cols, fixture_path(path, sizeof path, name, ".feat.npy"),
				     err, sizeof err);
		if (rc)
			fail_msg("%s: %s", path, err);
		assert_int_equal(rows, 2);
		assert_int_equal(cols, g->embed_dim);
		free(feat);
	}

	sizes = json_object_get(root, "sizes");
	json_array_foreach(sizes, i, v) {
		json_t *in = json_object_get(v, "input"), *shapes = json_object_get(v, "shapes");
		json_t *dims;
		int64_t d[4];
		int64_t prev_dim = g->embed_dim;
		int checked = 0;

		for (int k = 0; k < 4; k++)
			d[k] = json_integer_value(json_array_get(in, (size_t)k));
		rc = fc_model_set_input(m, d[0], d[1], d[2], d[3]);
		if (json_object_get(v, "error")) {
			if (rc >= 0)
				fail_msg("%s: input %lldx%lld accepted, onnx says: %s", name, (long long)d[2],
					 (long long)d[3], json_string_value(json_object_get(v, "error")));
			assert_true(fc_model_errmsg(m)[0] != 0);
			print_message("#   %s at %lldx%lld refused: %s\n", name, (long long)d[2],
				      (long long)d[3], fc_model_errmsg(m));
			/* the model keeps the size that worked */
			assert_int_equal(g->embed_dim, prev_dim);
			check_invariants(m);
			continue;
		}
		if (rc)
			fail_msg("%s at %lldx%lldx%lld: %s", name, (long long)d[0], (long long)d[2],
				 (long long)d[3], fc_model_errmsg(m));
		check_invariants(m);
		json_object_foreach(shapes, key, dims) {
			int t = testlib_tensor_id(g, key);

			if (t < 0)
				fail_msg("%s: no tensor '%s'", name, key);
			if (g->tensors[t].ndim != (int)json_array_size(dims))
				fail_msg("%s at %lldx%lld: '%s' has rank %d, onnx %zu", name,
					 (long long)d[2], (long long)d[3], key, g->tensors[t].ndim,
					 json_array_size(dims));
			for (size_t k = 0; k < json_array_size(dims); k++)
				if (g->tensors[t].dims[k] != json_integer_value(json_array_get(dims, k)))
					fail_msg("%s at %lldx%lld: '%s' dim %zu is %lld, onnx %lld", name,
						 (long long)d[2], (long long)d[3], key, k,
						 (long long)g->tensors[t].dims[k],
						 (long long)json_integer_value(json_array_get(dims, k)));
			checked++;
		}
		/* and nothing we computed is missing from the reference */
		for (int t = 0; t < g->n_tensors; t++)
			if (g->tensors[t].kind != FC_TENSOR_NONE && !json_object_get(shapes, g->tensors[t].name))
				fail_msg("%s: tensor '%s' is not in the reference", name, g->tensors[t].name);
		assert_int_equal(g->embed_dim, json_integer_value(json_object_get(dl, "dim")));
		assert_int_equal(g->tensors[g->cut_tensor].dims[0], d[0]);
		print_message("#   %s: %d shapes match at %lldx3x%lldx%lld\n", name, checked,
			      (long long)d[0], (long long)d[2], (long long)d[3]);
	}
	fc_model_free(m);
	json_decref(root);
}

static void test_fixtures(void **state)
{
	int n;
	char **names = fixture_names(&n);

	(void)state;
	assert_true(n >= 8);
	for (int i = 0; i < n; i++)
		check_fixture(names[i]);
	free_names(names, n);
}

/* Ops each family must contain, so the fixtures keep covering them. */
static void test_fixture_op_coverage(void **state)
{
	static const int want[] = {
		FC_OP_CONV, FC_OP_BATCHNORM, FC_OP_RELU, FC_OP_CLIP, FC_OP_LEAKYRELU, FC_OP_SIGMOID,
		FC_OP_HARDSIGMOID, FC_OP_HARDSWISH, FC_OP_ADD, FC_OP_SUB, FC_OP_MUL, FC_OP_DIV,
		FC_OP_PAD, FC_OP_MAXPOOL, FC_OP_AVGPOOL, FC_OP_GLOBALAVGPOOL, FC_OP_REDUCEMEAN,
		FC_OP_FLATTEN, FC_OP_RESHAPE, FC_OP_SQUEEZE, FC_OP_UNSQUEEZE, FC_OP_CONCAT,
		FC_OP_GEMM, FC_OP_MATMUL, FC_OP_IDENTITY, FC_OP_CONSTANT, FC_OP_SHAPE,
		FC_OP_GATHER, FC_OP_CAST, FC_OP_CONSTANTOFSHAPE, FC_OP_SLICE, FC_OP_TRANSPOSE,
	};
	int seen[FC_OP_COUNT] = { 0 }, n;
	char **names = fixture_names(&n), path[1200], err[FC_ERRLEN];

	(void)state;
	for (int i = 0; i < n; i++) {
		fc_model *m;
		const fc_model_graph *g;

		assert_int_equal(fc_model_open(&m, fixture_path(path, sizeof path, names[i], ".onnx"), err,
					       sizeof err), 0);
		g = fc_model_get_graph(m);
		for (int k = 0; k < g->n_nodes; k++)
			seen[g->nodes[k].op]++;
		fc_model_free(m);
	}
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
		if (!seen[want[i]])
			fail_msg("no fixture has a %s node", fc_op_name(want[i]));
	free_names(names, n);
}

static void test_open_errors(void **state)
{
	fc_model *m = (fc_model *)1;
	char err[FC_ERRLEN], path[1200];
	int rc;

	(void)state;
	rc = fc_model_open(&m, "/nonexistent/model.onnx", err, sizeof err);
	assert_int_equal(rc, FC_ERR_NOT_FOUND);
	assert_null(m);
	assert_string_equal(err, "no such file or directory");
	rc = fc_model_open(&m, fixture_dir, err, sizeof err);
	assert_int_equal(rc, FC_ERR_IO);
	assert_string_equal(err, "is a directory");
	rc = fc_model_open(&m, fixture_path(path, sizeof path, "input_224", ".npy"), err, sizeof err);
	assert_true(rc < 0);
	print_message("#   an .npy file: %s\n", err);
	/* errbuf may be NULL */
	rc = fc_model_open(&m, "/nonexistent", NULL, 0);
	assert_true(rc < 0);
}

/* ---- hostile bytes ---- */

static int hostile_failures, hostile_opened;

static void hostile_check(int rc, fc_model *m, const char *err, const char *what)
{
	if (rc == 0) {
		hostile_opened++;
		if (!testlib_model_consistent(m)) {
			printf("# %s: opened into an inconsistent graph\n", what);
			hostile_failures++;
		}
		fc_model_free(m);
		return;
	}
	if (rc > 0 || m != NULL || !err[0] || rc == FC_ERR_NOMEM || rc == FC_ERR_INTERNAL) {
		printf("# %s: rc %d, message '%s'\n", what, rc, err);
		hostile_failures++;
	}
}

/* Runs in a child, under an address-space limit unless ASan is in charge,
 * so that an allocation far beyond the file's size fails visibly
 * (FC_ERR_NOMEM, counted as a failure) instead of passing unnoticed. */
static void hostile_run(void)
{
	int n;
	char **names = fixture_names(&n), path[1200], err[FC_ERRLEN], what[1400];
	int tries = 0;

	for (int i = 0; i < n; i++) {
		size_t len;
		unsigned char *data = testlib_read_file(fixture_path(path, sizeof path, names[i], ".onnx"), &len);
		unsigned char *copy;
		int flips;

		if (!data) {
			printf("# cannot read %s\n", path);
			hostile_failures++;
			continue;
		}
		for (int k = 0; k < 64; k++) {
			size_t cut = len * (size_t)k / 64;
			fc_model *m = (fc_model *)1;
			int rc = fc_model_open_mem(&m, data, cut, err, sizeof err);

			snprintf(what, sizeof what, "%s cut at %zu", names[i], cut);
			if (rc == 0) {
				printf("# %s: opened\n", what);
				hostile_failures++;
				fc_model_free(m);
				continue;
			}
			hostile_check(rc, m, err, what);
			tries++;
		}
		copy = malloc(len);
		if (!copy)
			_exit(2);
		flips = len < 300000 ? 150 : 12;
		for (int k = 0; k < flips; k++) {
			fc_model *m = (fc_model *)1;
			int nf = 1 + (int)testlib_below(4), rc;

			memcpy(copy, data, len);
			for (int f = 0; f < nf; f++)
				copy[testlib_below(len)] ^= (unsigned char)(1 + testlib_below(255));
			rc = fc_model_open_mem(&m, copy, len, err, sizeof err);
			snprintf(what, sizeof what, "%s flip %d", names[i], k);
			hostile_check(rc, m, err, what);
			tries++;
		}
		free(copy);
		free(data);
	}
	for (int k = 0; k < 300; k++) {
		size_t len = 1 + testlib_below(4096);
		unsigned char *r = malloc(len);
		fc_model *m = (fc_model *)1;
		int rc;

		if (!r)
			_exit(2);
		for (size_t j = 0; j < len; j++)
			r[j] = (unsigned char)testlib_rand();
		if (k % 3 == 0)
			r[0] = 0x3a; /* start like a graph field */
		rc = fc_model_open_mem(&m, r, len, err, sizeof err);
		snprintf(what, sizeof what, "random %d", k);
		if (rc == 0) {
			printf("# %s: opened\n", what);
			hostile_failures++;
			fc_model_free(m);
		} else {
			hostile_check(rc, m, err, what);
		}
		free(r);
		tries++;
	}
	printf("# hostile: %d files tried, %d opened (flips in weights), the rest refused; %d failures\n",
	       tries, hostile_opened, hostile_failures);
	free_names(names, n);
}

static long vm_size_kb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kb = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "VmSize: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static void test_hostile(void **state)
{
	pid_t pid;
	int status;

	(void)state;
	fflush(stdout);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (!UNDER_ASAN) {
			long kb = vm_size_kb();
			struct rlimit rl;

			/* what the process maps now, plus 512 MiB: a 1.5 MB file
			 * unpacks into well under 100 MiB */
			if (kb > 0) {
				rl.rlim_cur = rl.rlim_max = ((rlim_t)kb << 10) + ((rlim_t)512 << 20);
				setrlimit(RLIMIT_AS, &rl);
			}
		}
		hostile_run();
		fflush(stdout);
		_exit(hostile_failures ? 1 : 0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!WIFEXITED(status))
		fail_msg("hostile run died with signal %d", WIFSIGNALED(status) ? WTERMSIG(status) : -1);
	assert_int_equal(WEXITSTATUS(status), 0);
}

static int group_setup(void **state)
{
	const char *top = getenv("FC_TOP");

	(void)state;
	snprintf(fixture_dir, sizeof fixture_dir, "%s/tests/fixtures/models", top && *top ? top : ".");
	return 0;
}

int main(void)
{
	testlib_seed("test_model");

	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fixtures),
		cmocka_unit_test(test_fixture_op_coverage),
		cmocka_unit_test(test_open_errors),
		cmocka_unit_test(test_hostile),
	};
	return cmocka_run_group_tests(tests, group_setup, NULL);
}
