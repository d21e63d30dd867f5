/*
 * engine.h - the inference engine: runs a tailored ONNX CNN (model.h, cut
 * and input size chosen) on oneDNN, turning batches of N x C x H x W f32
 * images into N x D f32 embeddings.
 *
 * What it is for: `featcache extract` and the benchmarks. What it is not:
 * a general ONNX runtime; it computes only the nodes the cut needs
 * (state FC_NODE_RUN and needed) with the op set model.h accepts.
 *
 * At open, BatchNormalization is folded into the preceding Conv when that
 * Conv's output feeds only it; Relu/Clip/LeakyRelu/Sigmoid/HardSigmoid/
 * HardSwish that alone consume a Conv output become eltwise post-ops; a
 * residual Add of a Conv output and an already computed activation
 * becomes a `sum` post-op. Activations are plain row-major f32 (NCHW).
 * Constants are copied: the model may be freed once the engine is open.
 *
 * An engine is not thread-safe, and (oneDNN's default build) must run on
 * the thread that opened it.
 */
#ifndef FEATCACHE_ENGINE_H
#define FEATCACHE_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "featcache/featcache.h"
#include "featcache/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fc_engine fc_engine;

#define FC_ENGINE_ERRLEN 320 /* err buffer size that never truncates a message */

enum fc_precision { FC_PREC_F32 = 0, FC_PREC_BF16 };

typedef struct fc_engine_opts {
	int batch;     /* largest n a run takes, >= 1 */
	int precision; /* enum fc_precision; FC_PREC_BF16 is refused for now (FC_ERR_UNSUPPORTED) */
} fc_engine_opts;

/* fc_engine_open - build the engine for model's current cut and input
 * height/width. The model's batch dimension is set to opts->batch first
 * (fc_model_set_input(model, batch, 0, 0, 0)), which invalidates graphs
 * obtained earlier from it; nothing of the model is kept afterwards.
 * On success returns 0 and *out is the engine (free with fc_engine_free).
 * On failure returns FC_ERR_INVALID (NULL argument, batch < 1, a model
 * without a cut or whose input is not 4-D), FC_ERR_UNSUPPORTED (bf16, a
 * node form the engine does not handle, naming node and op), FC_ERR_NOMEM
 * or FC_ERR_INTERNAL (oneDNN refused, with its status), sets *out to NULL
 * and writes the reason into err (FC_ENGINE_ERRLEN bytes suffice; err may
 * be NULL). */
int fc_engine_open(fc_engine **out, fc_model *model, const fc_engine_opts *opts, char *err,
		   size_t errcap);

/* fc_engine_run - out (n, D) = embeddings of in (n, C, H, W), row-major f32,
 * with 1 <= n <= batch and C, H, W those of the model at open (see
 * fc_engine_input_dims). Returns 0, FC_ERR_INVALID (NULL, n out of range)
 * or FC_ERR_INTERNAL (oneDNN failed; fc_engine_errmsg says how). */
int fc_engine_run(fc_engine *e, float *out, const float *in, size_t n);

/* fc_engine_dim - D, the embedding length; 0 for NULL. */
size_t fc_engine_dim(const fc_engine *e);

/* fc_engine_input_dims - the batch and C, H, W the engine was built for. */
void fc_engine_input_dims(const fc_engine *e, int64_t *batch, int64_t *c, int64_t *h, int64_t *w);

/* fc_engine_n_prims - number of oneDNN primitives; fc_engine_prim_info(e, i)
 * is "<node name> <op>: <oneDNN implementation>" for primitive i (owned
 * by e; NULL when i is out of range). */
int fc_engine_n_prims(const fc_engine *e);
const char *fc_engine_prim_info(const fc_engine *e, int i);

/* fc_engine_errmsg - why the last failed fc_engine_run failed ("" if none). */
const char *fc_engine_errmsg(const fc_engine *e);

/* fc_engine_free - release everything; NULL is fine. */
void fc_engine_free(fc_engine *e);

#ifdef __cplusplus
}
#endif
#endif /* FEATCACHE_ENGINE_H */
