/*
 * tool_embed_model.c - runs an ONNX model through the engine on images
 * from an .npy file and writes the embeddings as an .npy: the C side of
 * `make conformance` (tools/conformance.py), which compares them with
 * PyTorch's.
 *
 * The input is 2-D f32 (N, C*H*W), each row one image in NCHW order at the
 * model's declared input size (io.h reads 2-D .npy only); the output
 * is (N, D) f32. --layer cuts elsewhere than the default embedding layer
 * (A,B concatenates), --pool and --prefix-tokens pool a token layer.
 * Images go through the engine in batches of --batch (default: all N).
 *
 * This is test tooling: it prints one line about the run on stdout (and,
 * with FC_PRIMS set in the environment, every primitive), exits
 * 0 on success, 1 on failure and 2 on a usage error.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "featcache/engine.h"
#include "featcache/model.h"
#include "featcache/io.h"

static const char usage_text[] =
	"usage: tool_embed_model [--bf16] [--threads T] [--batch B] [--layer NAME[,NAME]]\n"
	"                        [--pool P] [--prefix-tokens N] MODEL.onnx IN.npy OUT.npy\n";

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "bf16", no_argument, NULL, 'b' },   { "threads", required_argument, NULL, 't' },
		{ "batch", required_argument, NULL, 'n' }, { "layer", required_argument, NULL, 'l' },
		{ "pool", required_argument, NULL, 'p' }, { "prefix-tokens", required_argument, NULL, 'x' },
		{ NULL, 0, NULL, 0 },
	};
	fc_engine_opts eo = { .precision = FC_PREC_F32 };
	const char *layer = NULL;
	int c, pool = FC_POOL_AUTO, prefix = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'b': eo.precision = FC_PREC_BF16; break;
		case 't': eo.threads = atoi(optarg); break;
		case 'n': eo.batch = atoi(optarg); break;
		case 'l': layer = optarg; break;
		case 'p': pool = fc_pool_parse(optarg); break;
		case 'x': prefix = atoi(optarg); break;
		default: fputs(usage_text, stderr); return 2;
		}
	}
	if (argc - optind != 3 || eo.threads < 0 || eo.batch < 0 || pool < 0 || prefix < 0) {
		fputs(usage_text, stderr);
		return 2;
	}
	const char *model_path = argv[optind], *in_path = argv[optind + 1], *out_path = argv[optind + 2];
	char err[FC_ERRLEN];
	fc_model *m = NULL;
	fc_engine *e = NULL;
	float *in = NULL, *out = NULL;
	size_t rows = 0, cols = 0;
	int rc, status = 1;

	if ((rc = fc_npy_read_f32(&in, &rows, &cols, in_path, err, sizeof err))) {
		fprintf(stderr, "tool_embed_model: cannot read '%s': %s\n", in_path, err);
		goto out;
	}
	if ((rc = fc_model_open(&m, model_path, err, sizeof err))) {
		fprintf(stderr, "tool_embed_model: cannot open model '%s': %s\n", model_path, err);
		goto out;
	}
	if ((layer || pool) && (rc = fc_model_cut_tokens(m, layer, pool, prefix))) {
		fprintf(stderr, "tool_embed_model: cannot cut at '%s': %s\n", layer ? layer : "the default layer",
			fc_model_errmsg(m));
		goto out;
	}
	if (eo.batch == 0)
		eo.batch = rows > 0 ? (int)rows : 1;
	if ((rc = fc_engine_open(&e, m, &eo, err, sizeof err))) {
		fprintf(stderr, "tool_embed_model: cannot build the engine for '%s': %s\n", model_path, err);
		goto out;
	}
	int64_t nb, ch, h, w;
	fc_engine_input_dims(e, &nb, &ch, &h, &w);
	if (cols != (size_t)(ch * h * w)) {
		fprintf(stderr, "tool_embed_model: '%s' has %zu values per row, the model takes %lld x %lld x %lld\n",
			in_path, cols, (long long)ch, (long long)h, (long long)w);
		goto out;
	}
	size_t dim = fc_engine_dim(e);
	if (!(out = malloc((rows ? rows : 1) * dim * sizeof *out))) {
		fprintf(stderr, "tool_embed_model: out of memory\n");
		goto out;
	}
	for (size_t r = 0; r < rows; r += (size_t)nb) {
		size_t n = rows - r < (size_t)nb ? rows - r : (size_t)nb;
		if ((rc = fc_engine_run(e, out + r * dim, in + r * cols, n))) {
			fprintf(stderr, "tool_embed_model: run failed: %s\n", fc_engine_errmsg(e));
			goto out;
		}
	}
	if ((rc = fc_npy_write_f32(out_path, out, rows, dim, err, sizeof err))) {
		fprintf(stderr, "tool_embed_model: cannot write '%s': %s\n", out_path, err);
		goto out;
	}
	size_t total, peak = fc_engine_peak_bytes(e, &total);
	printf("%s: %zu x %zu %s, %d primitives, activations %.1f MB (%.1f MB without reuse)\n", model_path, rows,
	       dim, eo.precision == FC_PREC_BF16 ? "bf16" : "f32", fc_engine_n_prims(e), peak / 1e6, total / 1e6);
	if (getenv("FC_PRIMS"))
		for (int i = 0; i < fc_engine_n_prims(e); i++)
			printf("  %s\n", fc_engine_prim_info(e, i));
	status = fflush(stdout) == 0 ? 0 : 1;
out:
	fc_engine_free(e);
	fc_model_free(m);
	free(in);
	free(out);
	return status;
}
