/*
 * cmd_export.c - `featcache export`: the backbone cut where `featcache
 * extract` cuts it and a head from `featcache train`, as one ONNX model for
 * serving (export/export.c builds it; export.h describes the graph).
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "featcache/export.h"
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
	"  -m, --model FILE     the backbone the head's features came from\n"
	"      --head FILE      the head (from 'featcache train')\n"
	"  -o, --out FILE       the ONNX model to write (replaced atomically)\n"
	"      --layer NAME     cut layer, as given to extract (default: the model's\n"
	"                       default embedding layer; see 'featcache layers')\n"
	"      --pool P         a token layer's pooling, as given to extract (cls,\n"
	"                       mean, cls+mean: Slice, ReduceMean and Concat nodes)\n"
	"      --prefix-tokens N  as given to extract (default 1)\n"
	"      --size N         input height and width, as given to extract (default 224)\n"
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

int cmd_export(int argc, char **argv)
{
	const char *model = NULL, *head_path = NULL, *out = NULL;
	fc_export_opts eo = { .size = 224, .normalize = 1, .prefix_tokens = 1 };
	uint64_t v;
	int c, rc;

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
			break;
		case O_PREFIX:
			if ((rc = cli_parse_u64("export", "--prefix-tokens", optarg, 0, 4096, &v)))
				return rc;
			eo.prefix_tokens = (int)v;
			break;
		case O_SIZE:
			if ((rc = cli_parse_u64("export", "--size", optarg, 1, 4096, &v)))
				return rc;
			eo.size = (int)v;
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
	char why[FC_ERRLEN] = "", err[FC_ERRLEN] = "";
	if ((rc = fc_head_load(&head, head_path, 1, why)) != 0)
		return cli_fail("cannot load head '%s': %s", head_path, why);
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
	fc_head_free(head);
	return rc;
}
