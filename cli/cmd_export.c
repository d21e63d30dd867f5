/*
 * cmd_export.c - `featcache export`: the backbone cut where `featcache
 * extract` cuts it and a head from `featcache train`, as one ONNX model for
 * serving (export/export.c builds it; export.h describes the graph). The
 * cut and the input size default to what the head's extractor recorded.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/data.h"
#include "featcache/export.h"
#include "featcache/extract.h"
#include "featcache/model.h"
#include "featcache/train.h"

static const char usage_text[] =
	"usage: featcache export --model M.onnx --head HEAD.safetensors --out OUT.onnx [options]\n"
	"\n"
	"Write one ONNX model: the backbone cut at the layer 'featcache extract' uses\n"
	"(a 4-D cut average-pooled and flattened, as featcache pools it), then the\n"
	"head in eval mode (one Gemm per Linear with its BatchNorm1d folded in, ReLU),\n"
	"then L2 normalisation: what 'featcache embed --head' gives. Input \"input\"\n"
	"(N x 3 x SIZE x SIZE float32, preprocessed as extract does), output\n"
	"\"embedding\" (N x D float32); N is dynamic. Everything after the cut is\n"
	"dropped. The model keeps its opset and ir_version.\n"
	"\n"
	"A head from 'featcache train' records the extractor it was trained on: its\n"
	"layer, pooling and size are the defaults. An option or model file that\n"
	"differs from the record is used, with a warning.\n"
	"\n"
	"  -m, --model FILE     the backbone the head's features came from\n"
	"      --head FILE      the head (from 'featcache train')\n"
	"  -o, --out FILE       the ONNX model to write (replaced atomically)\n"
	"      --layer NAME     cut layer (default: the head's extractor's, or the\n"
	"                       model's default embedding layer; see 'featcache layers')\n"
	"      --pool P         a token layer's pooling (cls, mean, cls+mean: Slice,\n"
	"                       ReduceMean and Concat nodes; default: the head's\n"
	"                       extractor's when the layer is its layer)\n"
	"      --prefix-tokens N  as --pool (default: the head's extractor's, or 1)\n"
	"      --size N         input height and width (default: the head's\n"
	"                       extractor's, or 224)\n"
	"      --no-normalize   leave the embeddings unnormalised (as 'featcache embed\n"
	"                       --head --no-normalize'; featcache itself can then run\n"
	"                       the export, cut with --layer embedding)\n"
	"      --opset N        declare ai.onnx opset N (>= the model's, <= 18); refused\n"
	"                       when a kept node would change meaning\n"
	"  -h, --help           show this help\n";

enum { O_HEAD = 256, O_LAYER, O_SIZE, O_NO_NORM, O_OPSET, O_POOL, O_PREFIX };

static const struct option opts[] = {
	{ "model", required_argument, NULL, 'm' },	  { "head", required_argument, NULL, O_HEAD },
	{ "out", required_argument, NULL, 'o' },	  { "layer", required_argument, NULL, O_LAYER },
	{ "size", required_argument, NULL, O_SIZE },	  { "no-normalize", no_argument, NULL, O_NO_NORM },
	{ "opset", required_argument, NULL, O_OPSET },	  { "help", no_argument, NULL, 'h' },
	{ "pool", required_argument, NULL, O_POOL },	  { "prefix-tokens", required_argument, NULL, O_PREFIX },
	{ NULL, 0, NULL, 0 },
};

/* What the head's extractor records (the descriptor train writes into the
 * head): its cut, its input size and the model file it was made from. */
struct recorded {
	json_t *d;           /* the descriptor; NULL: the head records none */
	char layer[4096];    /* the cut's tensors, as --layer takes them ("" if unknown) */
	char shown[4096];    /* the cut's layers (node names), for messages */
	int size;            /* 0 when no square input is recorded */
	int pool, prefix_tokens;
	const char *model_hash, *model_path;
};

/* The i-th of the descriptor's cut layers (node) or tensors; one cut has
 * them as strings, several as arrays. */
static const char *cut_name(const json_t *d, int tensor, size_t i)
{
	const json_t *many = json_object_get(d, tensor ? "tensors" : "layers");
	if (json_is_array(many))
		return json_string_value(json_array_get(many, i));
	return i == 0 ? json_string_value(json_object_get(d, tensor ? "tensor" : "layer")) : NULL;
}

static size_t cut_count(const json_t *d)
{
	const json_t *many = json_object_get(d, "tensors");
	return json_is_array(many) ? json_array_size(many) : 1;
}

/* Join the cut's names with commas into buf; 0, or -1 when a name is
 * missing or does not fit. */
static int cut_join(char *buf, size_t cap, const json_t *d, int tensor)
{
	size_t len = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < cut_count(d); i++) {
		const char *n = cut_name(d, tensor, i);
		int w = n ? snprintf(buf + len, cap - len, "%s%s", i ? "," : "", n) : -1;
		if (w < 0 || (size_t)w >= cap - len)
			return -1;
		len += (size_t)w;
	}
	return 0;
}

/* The record of a head's extractor, or rec->d NULL when there is none to
 * use (a PyTorch head, one from an older featcache, an unreadable one). */
static void recorded_read(struct recorded *rec, const cli_head_origin *origin)
{
	memset(rec, 0, sizeof *rec);
	rec->pool = FC_POOL_AUTO;
	rec->prefix_tokens = 1;
	json_t *d = origin->descriptor ? json_loads(origin->descriptor, 0, NULL) : NULL;
	const json_t *in = json_object_get(d, "input"), *tp = json_object_get(d, "token_pool");
	if (!d || cut_join(rec->layer, sizeof rec->layer, d, 1) || cut_join(rec->shown, sizeof rec->shown, d, 0)) {
		json_decref(d);
		return;
	}
	if (json_array_size(in) == 3) {
		json_int_t h = json_integer_value(json_array_get(in, 1)), w = json_integer_value(json_array_get(in, 2));
		if (h == w && h >= 1 && h <= 4096)
			rec->size = (int)h;
	}
	if (tp) {
		rec->pool = fc_pool_parse(json_string_value(tp));
		rec->prefix_tokens = (int)json_integer_value(json_object_get(d, "prefix_tokens"));
		if (rec->pool < 0 || rec->prefix_tokens < 0 || rec->prefix_tokens > 4096) {
			json_decref(d);
			return;
		}
	}
	rec->model_hash = json_string_value(json_object_get(d, "model_xxh3"));
	rec->model_path = json_string_value(json_object_get(d, "model"));
	rec->d = d;
}

/* Whether --layer names the recorded cut: the same layers in the same
 * order, each by its node or its tensor name. */
static int same_cut(const char *given, const json_t *d)
{
	size_t i = 0;
	for (const char *p = given;; i++) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		const char *node = cut_name(d, 0, i), *tensor = cut_name(d, 1, i);
		if (!((node && strlen(node) == len && !strncmp(node, p, len)) ||
		      (tensor && strlen(tensor) == len && !strncmp(tensor, p, len))))
			return 0;
		if (!comma)
			break;
		p = comma + 1;
	}
	return i + 1 == cut_count(d);
}

/* Whether the model file is the one the head's extractor was made from
 * (by content, as extractor ids are). 1 when it cannot tell: a file that
 * cannot be read is fc_export_onnx's to report. */
static int same_model(const char *model, const struct recorded *rec)
{
	uint8_t h[FC_HASH_LEN];
	uint64_t size;
	int64_t mtime;
	char hex[2 * FC_HASH_LEN + 1], err[FC_ERRLEN];
	if (!rec->model_hash || fc_hash_file(model, h, &size, &mtime, err, sizeof err) != 0)
		return 1;
	fc_hex(hex, h, FC_HASH_LEN);
	return strcmp(hex, rec->model_hash) == 0;
}

static const char *pool_shown(int pool) { return pool == FC_POOL_AUTO ? "none" : fc_pool_name(pool); }

/* Fill what the command line left open from the head's record, and warn
 * where what it gives differs from the record: explicit options win (a
 * fully convolutional backbone served at another size, a backbone saved
 * again), but the head then sees other features than it was trained on. */
static void apply_record(fc_export_opts *eo, const char *model, const char *head_path, const char *exid,
			 const struct recorded *rec, int size_set, int pool_set, int prefix_set)
{
	if (!rec->d) {
		if (!size_set)
			cli_warn("head '%s' does not record its extractor's settings: input %d x %d (give "
				 "--size and --layer as given to extract)",
				 head_path, eo->size, eo->size);
		return;
	}
	if (rec->size && !size_set)
		eo->size = rec->size;
	else if (rec->size && eo->size != rec->size)
		cli_warn("exporting at %d x %d, but head '%s' was trained on %d x %d inputs (extractor %.12s)", eo->size,
			 eo->size, head_path, rec->size, rec->size, exid);
	if (!same_model(model, rec)) {
		/* Layer names belong to a model file: another one gets its own default. */
		cli_warn("model '%s' is not the file head '%s' was trained on (extractor %.12s was made with '%s')",
			 model, head_path, exid, rec->model_path ? rec->model_path : "another model");
		return;
	}
	if (eo->layer && !same_cut(eo->layer, rec->d)) {
		cli_warn("cutting at '%s', but head '%s' was trained on layer '%s' (extractor %.12s)", eo->layer,
			 head_path, rec->shown, exid);
		return;
	}
	if (!eo->layer)
		eo->layer = rec->layer;
	if (!pool_set)
		eo->pool = rec->pool;
	else if (eo->pool != rec->pool)
		cli_warn("pooling '%s', but head '%s' was trained on pooling '%s' (extractor %.12s)",
			 pool_shown(eo->pool), head_path, pool_shown(rec->pool), exid);
	if (!prefix_set)
		eo->prefix_tokens = rec->prefix_tokens;
	else if (eo->pool != FC_POOL_AUTO && eo->prefix_tokens != rec->prefix_tokens)
		cli_warn("pooling after %d prefix tokens, but head '%s' was trained with %d (extractor %.12s)",
			 eo->prefix_tokens, head_path, rec->prefix_tokens, exid);
}

int cmd_export(int argc, char **argv)
{
	const char *model = NULL, *head_path = NULL, *out = NULL;
	fc_export_opts eo = { .size = 224, .normalize = 1, .prefix_tokens = 1 };
	uint64_t v;
	int c, rc, size_set = 0, pool_set = 0, prefix_set = 0;

	optind = 1;
	while ((c = getopt_long(argc, argv, ":m:o:h", opts, NULL)) != -1) {
		switch (c) {
		case 'm': model = optarg; break;
		case 'o': out = optarg; break;
		case 'h': fputs(usage_text, stdout); return CLI_EXIT_OK;
		case O_HEAD: head_path = optarg; break;
		case O_LAYER: eo.layer = optarg; break;
		case O_POOL:
			if ((eo.pool = fc_pool_parse(optarg)) < 0)
				return cli_usage_error("export", "bad value '%s' for --pool: cls, mean, cls+mean or flatten",
						       optarg);
			pool_set = 1;
			break;
		case O_PREFIX:
			if ((rc = cli_parse_u64("export", "--prefix-tokens", optarg, 0, 4096, &v)))
				return rc;
			eo.prefix_tokens = (int)v;
			prefix_set = 1;
			break;
		case O_SIZE:
			if ((rc = cli_parse_u64("export", "--size", optarg, 1, 4096, &v)))
				return rc;
			eo.size = (int)v;
			size_set = 1;
			break;
		case O_NO_NORM: eo.normalize = 0; break;
		case O_OPSET:
			if ((rc = cli_parse_u64("export", "--opset", optarg, 7, 18, &v)))
				return rc;
			eo.opset = (int)v;
			break;
		default: return cli_getopt_error("export", c, argv, opts);
		}
	}
	if ((rc = cli_no_operands("export", argc, argv)))
		return rc;
	if (!model || !model[0])
		return cli_usage_error("export", "--model is required (the backbone's ONNX file)");
	if (!head_path || !head_path[0])
		return cli_usage_error("export", "--head is required (from 'featcache train')");
	if (!out || !out[0])
		return cli_usage_error("export", "--out is required (the ONNX model to write)");
	if (eo.layer && !eo.layer[0])
		return cli_usage_error("export", "bad value '' for --layer");

	fc_head *head = NULL;
	cli_head_origin origin;
	struct recorded rec;
	char why[FC_ERRLEN] = "", err[FC_ERRLEN] = "";
	if ((rc = fc_head_load(&head, head_path, 1, why)) != 0)
		return cli_fail("cannot load head '%s': %s", head_path, why);
	cli_head_origin_read(&origin, head_path);
	recorded_read(&rec, &origin);
	apply_record(&eo, model, head_path, origin.extractor, &rec, size_set, pool_set, prefix_set);
	eo.head_name = head_path;
	rc = fc_export_onnx(model, &eo, head, out, err, sizeof err);
	if (rc) {
		rc = cli_fail("%s", err);
	} else {
		fc_head_config hc = fc_head_get_config(head);
		printf("wrote '%s': input 3 x %d x %d, %u-d embedding%s\n", out, eo.size, eo.size, hc.out_dim,
		       eo.normalize ? " (L2-normalised)" : "");
		rc = CLI_EXIT_OK;
	}
	json_decref(rec.d);
	cli_head_origin_free(&origin);
	fc_head_free(head);
	return rc;
}
