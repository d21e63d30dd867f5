/*
 * cmd_layers.c - `featcache layers`: Finetuner's Tailor summary of an ONNX
 * model. Every layer in order (name, op, output shape, parameters), the
 * default embedding layer marked, and totals; --layer shows what a cut
 * there gives; --json carries the same figures for scripts.
 *
 * It only reads the model (extract/model.c does the work); nothing runs.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "featcache/engine.h"
#include "featcache/model.h"

static const char usage_text[] =
	"usage: featcache layers --model FILE [--size N|HxW] [--batch N] [--layer NAME[,NAME]]\n"
	"                        [--pool P] [--prefix-tokens N] [--precision P] [--json]\n"
	"\n"
	"List the layers of an ONNX model in order: name, op, output shape and\n"
	"parameter count (weights and biases of Conv, Gemm, MatMul and\n"
	"BatchNormalization). The default embedding layer is marked: the input of\n"
	"the final classifier (a Gemm/MatMul with constant weights giving the\n"
	"output), for a CNN without Gemm/MatMul the input of the last Conv (its\n"
	"4-D output average-pooled to a vector), else the model's output. Nodes\n"
	"that are constant for the input size (folded at load time) are not listed.\n"
	"\n"
	"  -m, --model FILE   the ONNX model\n"
	"  -s, --size N|HxW   input height and width (default: the model's, else 224)\n"
	"  -b, --batch N      batch size the shapes show (default: the model's, else 1)\n"
	"  -l, --layer NAME   mark the layer (node or output name) a cut would use\n"
	"                     and show the embedding it gives; NAME,NAME concatenates\n"
	"      --pool P       a token layer (N x T x D) as cls, mean, cls+mean or flatten\n"
	"      --prefix-tokens N  tokens before the patches (default 1)\n"
	"      --precision P  also build the engine for the cut in f32, bf16 or int8\n"
	"                     and list what it runs: each primitive (node, op,\n"
	"                     oneDNN kernel) and the precision it computes in\n"
	"                     (int8: which convs and matmuls are quantised; ranges\n"
	"                     are placeholders, nothing is calibrated)\n"
	"      --json         print one JSON object instead of the table\n"
	"  -h, --help         show this help\n";

#define MAX_SIDE 65536

/* --size: "N" or "HxW", each side 1..MAX_SIDE. */
static int parse_size(const char *val, uint64_t *h, uint64_t *w)
{
	const char *p = val;
	uint64_t v[2] = { 0, 0 };
	int n = 0;

	while (n < 2) {
		char *end;
		unsigned long long x;

		if (!isdigit((unsigned char)*p))
			goto bad;
		errno = 0;
		x = strtoull(p, &end, 10);
		if (errno == ERANGE || x < 1 || x > MAX_SIDE)
			return cli_usage_error("layers", "bad value '%s' for --size: sides must be from 1 to %d",
					      val, MAX_SIDE);
		v[n++] = x;
		if (*end == '\0')
			break;
		if (*end != 'x' || n == 2)
			goto bad;
		p = end + 1;
	}
	*h = v[0];
	*w = n == 2 ? v[1] : v[0];
	return 0;
bad:
	return cli_usage_error("layers", "bad value '%s' for --size: expected N or HxW", val);
}

static char *shape_str(char *buf, size_t cap, const fc_model_tensor *t)
{
	size_t n = 0;

	buf[0] = 0;
	for (int i = 0; i < t->ndim && n < cap; i++) {
		int k = snprintf(buf + n, cap - n, "%s%lld", i ? "x" : "", (long long)t->dims[i]);

		if (k < 0)
			break;
		n += (size_t)k;
	}
	if (t->ndim == 0)
		snprintf(buf, cap, "scalar");
	return buf;
}

static json_t *shape_json(const fc_model_tensor *t)
{
	json_t *a = json_array();

	for (int i = 0; a && i < t->ndim; i++)
		json_array_append_new(a, json_integer((json_int_t)t->dims[i]));
	return a;
}

/* What one cut gives, for the text footer and the JSON. */
struct cut_info {
	int node;
	int n_cuts, nodes[FC_MODEL_MAX_CUTS];
	int64_t dim;
	int pool, token_pool;
	uint64_t params;
	char from[96];
};

static void cut_info_get(const fc_model_graph *g, struct cut_info *c)
{
	c->node = g->cut_node;
	c->n_cuts = g->n_cuts;
	memcpy(c->nodes, g->cut_nodes, sizeof c->nodes);
	c->dim = g->embed_dim;
	c->pool = g->pool;
	c->token_pool = g->token_pool;
	c->params = g->cut_params;
	if (g->cut_tensor >= 0)
		shape_str(c->from, sizeof c->from, &g->tensors[g->cut_tensor]);
	else
		c->from[0] = 0;
}

static json_t *cut_json(const fc_model_graph *g, const struct cut_info *c, int index)
{
	const fc_model_node *nd = &g->nodes[c->node];

	json_t *o = json_pack("{s:s, s:i, s:s, s:I, s:b, s:I}", "layer", nd->name, "index", index,
			      "output", g->tensors[nd->out[0]].name, "dim", (json_int_t)c->dim, "pooled",
			      c->pool, "params", (json_int_t)c->params);

	if (o && c->token_pool != FC_POOL_AUTO)
		json_object_set_new(o, "token_pool", json_string(fc_pool_name(c->token_pool)));
	if (o && c->n_cuts > 1) {
		json_t *a = json_array();

		for (int k = 0; k < c->n_cuts; k++)
			json_array_append_new(a, json_string(g->nodes[c->nodes[k]].name));
		json_object_set_new(o, "layers", a);
	}
	return o;
}

/* 1 for a residual Add: two activations of the output's shape. */
static int is_residual(const fc_model_graph *g, int i)
{
	const fc_model_node *nd = &g->nodes[i];
	const fc_model_tensor *o = &g->tensors[nd->out[0]];

	if (nd->op != FC_OP_ADD || nd->state != FC_NODE_RUN)
		return 0;
	for (int k = 0; k < 2; k++) {
		const fc_model_tensor *t = &g->tensors[nd->in[k]];
		if (t->kind == FC_TENSOR_CONST || t->ndim != o->ndim ||
		    memcmp(t->dims, o->dims, sizeof(int64_t) * (size_t)o->ndim))
			return 0;
	}
	return 1;
}

/* The last residual Add among the nodes of one module, as torch names
 * them ("/encoder/layers/encoder_layer_3/Add_1": the module is what comes
 * before the last '/'). Unnamed modules are not guessed at. */
static int last_residual(const fc_model_graph *g, int i)
{
	const char *name = g->nodes[i].name, *slash = strrchr(name, '/');
	size_t len;

	if (!slash || slash == name || !is_residual(g, i))
		return 0;
	len = (size_t)(slash - name + 1);
	for (int j = i + 1; j < g->n_nodes; j++)
		if (!strncmp(g->nodes[j].name, name, len) && !strchr(g->nodes[j].name + len, '/') &&
		    is_residual(g, j))
			return 0;
	return 1;
}

/* The only node reading tensor t, or -1. */
static int sole_reader(const fc_model_graph *g, int t)
{
	int r = -1;

	for (int j = 0; j < g->n_nodes; j++)
		for (int k = 0; k < g->nodes[j].n_in; k++)
			if (g->nodes[j].in[k] == t) {
				if (r >= 0 && r != j)
					return -1;
				r = j;
			}
	return r;
}

/* A block's output, for the cuts people make ("the last four blocks"):
 * a module's last residual Add (pre-norm transformers, ConvNeXt,
 * MBConv), or the Relu that alone follows it (ResNet). */
static int is_block_output(const fc_model_graph *g, int i)
{
	const fc_model_node *nd = &g->nodes[i];
	int r;

	if (nd->op == FC_OP_RELU && nd->state == FC_NODE_RUN) {
		int p = g->tensors[nd->in[0]].producer;
		return p >= 0 && last_residual(g, p) && sole_reader(g, nd->in[0]) == i;
	}
	if (!last_residual(g, i))
		return 0;
	r = sole_reader(g, nd->out[0]);
	return r < 0 || g->nodes[r].op != FC_OP_RELU;
}

/* The primitives of an engine, as text or a JSON array. */
static void print_prims(const fc_engine *e, const char *prec)
{
	int n = fc_engine_n_prims(e), count[3] = { 0, 0, 0 };
	printf("\nengine (%s): %d primitives\n", prec, n);
	for (int i = 0; i < n; i++) {
		const char *p = fc_engine_prim_precision(e, i);
		count[strcmp(p, "int8") == 0 ? 2 : strcmp(p, "bf16") == 0]++;
		printf("  %-5s %s\n", p, fc_engine_prim_info(e, i));
	}
	printf("%d f32, %d bf16, %d int8\n", count[0], count[1], count[2]);
}

static json_t *prims_json(const fc_engine *e, const char *prec)
{
	json_t *a = json_array();
	for (int i = 0; a && i < fc_engine_n_prims(e); i++)
		json_array_append_new(a, json_pack("{s:s, s:s}", "step", fc_engine_prim_info(e, i), "precision",
						   fc_engine_prim_precision(e, i)));
	return json_pack("{s:s, s:o}", "precision", prec, "primitives", a);
}

static int print_json(const char *path, const fc_model *m, const struct cut_info *def,
		      const struct cut_info *cut, const fc_engine *e, const char *prec)
{
	const fc_model_graph *g = fc_model_get_graph(m);
	const fc_model_tensor *in = &g->tensors[g->input];
	json_t *root, *layers = json_array();
	int idx = 0, def_idx = -1, cut_idx = -1, folded = 0, rc = CLI_EXIT_OK;

	for (int i = 0; layers && i < g->n_nodes; i++) {
		const fc_model_node *nd = &g->nodes[i];
		const fc_model_tensor *o;
		json_t *l;

		if (!fc_model_is_layer(m, i)) {
			folded++;
			continue;
		}
		o = &g->tensors[nd->out[0]];
		if (def && def->node == i)
			def_idx = idx;
		if (cut && cut->node == i)
			cut_idx = idx;
		l = json_pack("{s:i, s:s, s:s, s:s, s:o, s:I, s:b}", "index", idx, "name", nd->name,
			      "op", nd->op_type, "output", o->name, "shape", shape_json(o), "params",
			      (json_int_t)nd->params, "default", def && def->node == i);
		if (l && cut)
			json_object_set_new(l, "cut", json_boolean(cut->node == i));
		if (l && is_block_output(g, i))
			json_object_set_new(l, "block_output", json_true());
		if (!l || json_array_append_new(layers, l)) {
			json_decref(layers);
			return cli_fail("cannot list model '%s': out of memory", path);
		}
		idx++;
	}
	root = json_pack("{s:s, s:i, s:{s:s, s:o}, s:i, s:i, s:i, s:I, s:o, s:o}", "model", path,
			 "opset", g->opset, "input", "name", in->name, "shape", shape_json(in),
			 "nodes", g->n_nodes, "layers_listed", idx, "folded", folded, "params",
			 (json_int_t)g->params, "layers", layers,
			 "default", def ? cut_json(g, def, def_idx) : json_null());
	if (root && cut)
		json_object_set_new(root, "cut", cut_json(g, cut, cut_idx));
	if (root && e)
		json_object_set_new(root, "engine", prims_json(e, prec));
	if (!root)
		return cli_fail("cannot list model '%s': out of memory", path);
	if (json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0)
		rc = cli_fail("cannot write standard output");
	else
		putchar('\n');
	json_decref(root);
	return rc;
}

static void print_embedding(const char *what, const fc_model_graph *g, const struct cut_info *c)
{
	printf("%-9s'%s'", what, g->nodes[c->node].name);
	for (int k = 1; k < c->n_cuts; k++)
		printf(" + '%s'", g->nodes[c->nodes[k]].name);
	printf(": %lld-d embedding", (long long)c->dim);
	if (c->pool)
		printf(" (average-pooled from %s)", c->from);
	else if (c->token_pool != FC_POOL_AUTO)
		printf(" (%s of tokens %s)", fc_pool_name(c->token_pool), c->from);
	printf(", %llu params up to it\n", (unsigned long long)c->params);
}

static void print_text(const char *path, const fc_model *m, const struct cut_info *def,
		       const struct cut_info *cut)
{
	const fc_model_graph *g = fc_model_get_graph(m);
	char s[96];
	int w_name = 5, w_op = 2, w_shape = 6, idx = 0, folded = 0;

	for (int i = 0; i < g->n_nodes; i++) {
		const fc_model_node *nd = &g->nodes[i];
		int n;

		if (!fc_model_is_layer(m, i))
			continue;
		n = (int)strlen(nd->name);
		w_name = n > w_name ? n : w_name;
		n = (int)strlen(nd->op_type);
		w_op = n > w_op ? n : w_op;
		n = (int)strlen(shape_str(s, sizeof s, &g->tensors[nd->out[0]]));
		w_shape = n > w_shape ? n : w_shape;
	}
	if (w_name > 60)
		w_name = 60;
	printf("model    %s (opset %d)\n", path, g->opset);
	printf("input    %s %s\n\n", g->tensors[g->input].name,
	       shape_str(s, sizeof s, &g->tensors[g->input]));
	printf("%5s  %-*s  %-*s  %-*s  %10s\n", "#", w_name, "layer", w_op, "op", w_shape, "output",
	       "params");
	for (int i = 0; i < g->n_nodes; i++) {
		const fc_model_node *nd = &g->nodes[i];

		if (!fc_model_is_layer(m, i)) {
			folded++;
			continue;
		}
		printf("%5d  %-*s  %-*s  %-*s  %10llu", idx++, w_name, nd->name, w_op, nd->op_type,
		       w_shape, shape_str(s, sizeof s, &g->tensors[nd->out[0]]),
		       (unsigned long long)nd->params);
		if (is_block_output(g, i))
			printf("  [block]");
		if (def && def->node == i)
			printf("  <- default (%lld-d%s)", (long long)def->dim, def->pool ? ", pooled" : "");
		for (int k = 0; cut && k < cut->n_cuts; k++)
			if (cut->nodes[k] == i && cut->n_cuts == 1)
				printf("  <- cut (%lld-d%s)", (long long)cut->dim, cut->pool ? ", pooled" : "");
			else if (cut->nodes[k] == i)
				printf("  <- cut %d of %d", k + 1, cut->n_cuts);
		putchar('\n');
	}
	printf("\n%d layers", idx);
	if (folded)
		printf(" (%d constant nodes folded)", folded);
	printf(", %llu params\n", (unsigned long long)g->params);
	if (def)
		print_embedding("default", g, def);
	else
		printf("default  none (no Gemm, MatMul or Conv): name a layer with --layer\n");
	if (cut)
		print_embedding("cut", g, cut);
}

int cmd_layers(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "model", required_argument, NULL, 'm' },
		{ "size", required_argument, NULL, 's' },
		{ "batch", required_argument, NULL, 'b' },
		{ "layer", required_argument, NULL, 'l' },
		{ "json", no_argument, NULL, 'j' },
		{ "pool", required_argument, NULL, 'P' },
		{ "prefix-tokens", required_argument, NULL, 'T' },
		{ "precision", required_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = NULL, *layer = NULL, *prec = NULL;
	uint64_t h = 0, w = 0, batch = 0, prefix = 1;
	int json = 0, pool = FC_POOL_AUTO, precision = -1, c, rc;
	char err[FC_ERRLEN];
	fc_model *m = NULL;
	fc_engine *e = NULL;
	const fc_model_graph *g;
	struct cut_info def, cut = { 0 };

	while ((c = getopt_long(argc, argv, ":m:s:b:l:h", opts, NULL)) != -1) {
		switch (c) {
		case 'm':
			path = optarg;
			break;
		case 's':
			if ((rc = parse_size(optarg, &h, &w)))
				return rc;
			break;
		case 'b':
			if ((rc = cli_parse_u64("layers", "--batch", optarg, 1, MAX_SIDE, &batch)))
				return rc;
			break;
		case 'l':
			layer = optarg;
			break;
		case 'j':
			json = 1;
			break;
		case 'P':
			if ((pool = fc_pool_parse(optarg)) < 0)
				return cli_usage_error("layers", "bad value '%s' for --pool: cls, mean, cls+mean or "
						       "flatten", optarg);
			break;
		case 'T':
			if ((rc = cli_parse_u64("layers", "--prefix-tokens", optarg, 0, 4096, &prefix)))
				return rc;
			break;
		case 'p':
			prec = optarg;
			if ((rc = cli_parse_precision("layers", optarg, &precision)))
				return rc;
			break;
		default:
			return cli_other_option("layers", c, argv, opts, usage_text);
		}
	}
	if ((rc = cli_no_operands("layers", argc, argv)))
		return rc;
	if (!path)
		return cli_usage_error("layers", "no model given: use --model FILE");
	if (!path[0])
		return cli_usage_error("layers", "bad value '' for --model");
	if (layer && !layer[0])
		return cli_usage_error("layers", "bad value '' for --layer");

	rc = fc_model_open(&m, path, err, sizeof err);
	if (rc)
		return cli_fail("cannot open model '%s': %s", path, err);
	g = fc_model_get_graph(m);
	if ((h || batch) && (rc = fc_model_set_input(m, (int64_t)batch, 0, (int64_t)h, (int64_t)w))) {
		rc = cli_fail("model '%s' does not take this input size: %s", path, fc_model_errmsg(m));
		goto out;
	}
	if (g->default_node >= 0 && (rc = fc_model_cut(m, NULL))) {
		rc = cli_fail("cannot cut model '%s' at its default layer: %s", path, fc_model_errmsg(m));
		goto out;
	}
	cut_info_get(g, &def);
	if (layer || pool != FC_POOL_AUTO) {
		if ((rc = fc_model_cut_tokens(m, layer, pool, (int)prefix))) {
			rc = cli_fail("cannot cut model '%s' at '%s': %s", path, layer ? layer : "its default layer",
				      fc_model_errmsg(m));
			goto out;
		}
		cut_info_get(g, &cut);
	}
	if (precision >= 0) {
		/* the listing shows the shapes at the batch asked for; the engine is
		 * built last, since it sets the model's batch */
		int64_t n0 = g->tensors[g->input].ndim ? g->tensors[g->input].dims[0] : 1;
		fc_engine_opts eo = { .batch = n0 >= 1 && n0 <= MAX_SIDE ? (int)n0 : 1, .precision = precision };
		if (g->cut_tensor < 0) {
			rc = cli_fail("cannot build the engine for model '%s': no cut (name a layer with --layer)", path);
			goto out;
		}
		if ((rc = fc_engine_open(&e, m, &eo, err, sizeof err))) {
			rc = cli_fail("cannot build the %s engine for model '%s': %s", prec, path, err);
			goto out;
		}
		g = fc_model_get_graph(m); /* opening set the batch: a new graph */
	}
	if (json)
		rc = print_json(path, m, g->default_node >= 0 ? &def : NULL, layer || pool ? &cut : NULL, e, prec);
	else {
		print_text(path, m, g->default_node >= 0 ? &def : NULL, layer || pool ? &cut : NULL);
		if (e)
			print_prims(e, prec);
		rc = CLI_EXIT_OK;
	}
out:
	fc_engine_free(e);
	fc_model_free(m);
	return rc;
}
