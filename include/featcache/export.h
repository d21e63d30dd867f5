/*
 * export.h - a trained projection head and the backbone it was trained on
 * as one ONNX model: `featcache export`.
 *
 * What it is for: serving. The model file takes what `featcache extract`
 * feeds the backbone (the preprocessed image, N x 3 x H x W float32) and
 * gives what `featcache embed --head` writes (N x D float32), so ONNX
 * Runtime or any other runtime computes the same embeddings without
 * featcache. What it is not: a model converter. The backbone's nodes are
 * copied as they are (attributes, opset, ir_version); only what the cut
 * needs is kept.
 *
 * The exported graph:
 *   input "input"        N x C x H x W float32, N dynamic ("batch"), C, H, W
 *                         those the cut was made for
 *   the backbone's nodes the cut depends on, and the initializers they read
 *                         (the old classifier and everything after the cut
 *                         are gone)
 *   Cast                 only for a model whose input is not float32 (a
 *                         float16 model): the image to its type, the cut
 *                         back to float32
 *   GlobalAveragePool    when the cut is 4-D (featcache pools it), then
 *   + Flatten            Flatten (axis 1) for any cut that is not 2-D
 *   Gemm [+ Relu] ...    one Gemm per Linear, transB = 1 (PyTorch's
 *                         (out, in) weights), with the eval-mode BatchNorm1d
 *                         folded in: W' = W * s, b = beta - mean * s,
 *                         s = gamma / sqrt(var + 1e-5), in double; Relu
 *                         after every layer but the last
 *   LpNormalization      p = 2 over axis 1, unless normalize is 0
 *   output "embedding"   N x D float32, N dynamic
 * Every name the export adds starts with a prefix no name of the backbone
 * starts with ("featcache/" unless taken); a backbone tensor called
 * "input" or "embedding" is renamed out of the way.
 *
 * featcache runs its own exports too: its engine has LpNormalization
 * (p = 2, last axis), and an L2-normalised model's default layer is its
 * output, so `featcache extract` with a normalised export, without
 * --layer, stores what `featcache embed --head` writes. An export made
 * with normalize 0 is cut with --layer embedding (its default layer would
 * be the input of the head's last Gemm).
 */
#ifndef FEATCACHE_EXPORT_H
#define FEATCACHE_EXPORT_H

#include <stddef.h>

#include "featcache/featcache.h"
#include "featcache/head.h"

#ifdef __cplusplus
extern "C" {
#endif


typedef struct fc_export_opts {
	const char *layer;     /* cut layer (node or tensor name); NULL: the default embedding layer */
	int pool;              /* enum fc_pool for a token (N x T x D) layer, as given to extract */
	int prefix_tokens;     /* with pool cls/mean/cls+mean: tokens before the patches */
	int size;              /* input height and width; 0: the model's declared size (224 if dynamic) */
	int normalize;         /* 1: L2-normalise the embedding, as `featcache embed --head` */
	int opset;             /* ai.onnx opset of the file; 0: the model's own. Raising it is
	                        * refused when a kept node's op changed meaning in between */
	const char *head_name; /* how messages name the head (its path); NULL: "the head" */
} fc_export_opts;

/* fc_export_onnx - write the model at model_path, cut as `featcache extract`
 * cuts it (opts->layer, opts->size), followed by head in eval mode, to
 * out_path, atomically (a temporary file renamed over out_path; on failure
 * nothing is left and an existing out_path is unchanged); head is only read.
 * On failure returns a negative FC_ERR_* and writes a full message naming
 * the file at fault into err (may be NULL): the model's read and load
 * errors (FC_ERR_NOT_FOUND as "cannot read model 'x.onnx': no such file or
 * directory", FC_ERR_CORRUPT, FC_ERR_UNSUPPORTED, ...), FC_ERR_NOT_FOUND
 * for an unknown layer, FC_ERR_INVALID for a head whose input dim is not
 * the cut's ("head 'h' takes 512-d input, the model's layer '/Flatten'
 * gives 2048-d"), a bad size or an opset that cannot be declared, and the
 * output file's errors (FC_ERR_IO, FC_ERR_FULL, FC_ERR_NOT_FOUND for a
 * missing directory). */
int fc_export_onnx(const char *model_path, const fc_export_opts *opts, const fc_head *head,
		   const char *out_path, char *err, size_t errcap);

#ifdef __cplusplus
}
#endif
#endif /* FEATCACHE_EXPORT_H */
