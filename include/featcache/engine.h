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
 * HardSwish that alone consume a Conv output become eltwise post-ops, and
 * so does x * Sigmoid(x) (SiLU) and x * HardSigmoid(x) (hard-swish) of a
 * Conv output; a residual Add of a Conv output and an already computed
 * activation becomes a `sum` post-op. GELU as torch writes it (Div by
 * sqrt 2, Erf, Add 1, the Muls by x and 0.5) is one gelu_erf eltwise; a
 * lone Erf is refused. LayerNormalization (last axis) runs on oneDNN's
 * layer_normalization, a Transpose of activations as one reorder.
 *
 * Layout: oneDNN picks each convolution's layout (format_tag any; NHWC
 * with brgconv on AVX-512 machines) and the ops after it work in that
 * layout; the input is reordered from NCHW once and the embedding to f32
 * N x D once per run. Weights are reordered once, at open. Activations
 * live in one arena planned from their lifetimes (fc_engine_peak_bytes).
 * Constants are copied: the model may be freed once the engine is open.
 *
 * Threads: the engine runs on OpenMP. opts.threads > 0 calls
 * omp_set_num_threads(threads) at open and at each run (it sets the
 * calling thread's OpenMP default, which other OpenMP code on that thread
 * then sees too); 0 leaves OpenMP's default (OMP_NUM_THREADS, else all
 * cores).
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


enum fc_precision { FC_PREC_F32 = 0, FC_PREC_BF16, FC_PREC_INT8 };

/* A calibration table: the range [lo, hi] of each tensor that an int8
 * convolution or Gemm/MatMul reads, by tensor name (extract/calibrate.c
 * measures it on the f32 model). hi is the clipping bound the int8 engine
 * maps to the largest code: a tensor with lo >= 0 becomes u8 with scale
 * hi / 255, any other s8 symmetric with scale max(-lo, hi) / 127 (no zero
 * points). */
typedef struct fc_calib_range {
	char *tensor;
	float lo, hi;
} fc_calib_range;

typedef struct fc_calib {
	size_t n;
	fc_calib_range *r;
	char *method; /* how the ranges were chosen ("max", "percentile:99.99"), for the descriptor */
	size_t images; /* images the ranges were measured on */
} fc_calib;

/* Called by fc_engine_run (opts.observe) with the f32 values of tensor k
 * (name) that an int8 engine would quantise, just before the step that reads
 * them runs: n values of the batch's real images, in the engine's layout
 * (blocked layouts may hold a few zeros of padding). */
typedef void (*fc_engine_observe_fn)(void *ctx, int k, const char *tensor, const float *x, size_t n);

typedef struct fc_engine_opts {
	int batch;     /* largest n a run takes, >= 1 */
	int precision; /* enum fc_precision. FC_PREC_BF16 computes in bfloat16 (weights and
	                * activations; accumulation, biases and the embedding stay f32) and
	                * needs a CPU with native bf16 (AVX512_BF16 or AMX): elsewhere it is
	                * refused with FC_ERR_UNSUPPORTED, since emulated bf16 is slower than
	                * f32 */
	int threads;   /* OpenMP threads; 0: OpenMP's default (see above) */
	/* FC_PREC_INT8 (needs AVX512_VNNI, AVX_VNNI or AMX, else
	 * FC_ERR_UNSUPPORTED): convolutions and Gemm/MatMul with constant
	 * weights run in int8 (s8 weights with a scale per output channel,
	 * activations u8/s8 as the calibration says, f32 out, post-ops in f32)
	 * wherever oneDNN has a fast kernel for them; the rest stays f32.
	 * calib gives the ranges; a tensor it lacks stays f32. calib NULL is for
	 * inspecting the plan (`featcache layers`): every range is taken as
	 * [-1, 1], so the numbers are meaningless. In transformers the
	 * projections are int8; attention (Softmax, the MatMuls of two
	 * activations) and LayerNorm stay f32. */
	const fc_calib *calib;
	/* f32 only: call observe(observe_ctx, ...) on each run for every tensor
	 * an int8 engine would quantise (calibration). */
	fc_engine_observe_fn observe;
	void *observe_ctx;
	/* f32: 1 computes every convolution directly. 0 (default) runs the
	 * wide 3x3 stride-1 ones of a ResNet or VGG in Winograd form (README,
	 * "Winograd"): faster per image, but their weights take a transform at
	 * open (ResNet-18 ~0.27 s on 2 cores), more than a few dozen images
	 * gain. Results agree to ~1e-6 of the largest value either way. */
	int direct_convs;
} fc_engine_opts;

/* fc_engine_open - build the engine for model's current cut and input
 * height/width. The model's batch dimension is set to opts->batch first
 * (fc_model_set_input(model, batch, 0, 0, 0)), which invalidates graphs
 * obtained earlier from it; nothing of the model is kept afterwards.
 * On success returns 0 and *out is the engine (free with fc_engine_free).
 * On failure returns FC_ERR_INVALID (NULL argument, batch < 1, threads < 0,
 * a model without a cut or whose input is not 4-D), FC_ERR_UNSUPPORTED
 * (bf16 on a CPU without native bf16, int8 on one without VNNI/AMX, a
 * node form the engine does not handle, naming node and op), FC_ERR_NOMEM
 * or FC_ERR_INTERNAL (oneDNN refused, with its status), sets *out to NULL
 * and writes the reason into err (FC_ERRLEN bytes suffice; err may
 * be NULL). */
int fc_engine_open(fc_engine **out, fc_model *model, const fc_engine_opts *opts, char *err,
		   size_t errcap);

/* fc_engine_add_batch - let runs of n < batch images compute n images, not
 * a batch padded with zeros: builds primitives for batch n (kept with e,
 * freed with it) that share e's weights wherever oneDNN wants them in the
 * same layout. model must be the one e was built from, with the same cut
 * and input size; its batch is set to n and back to e's. 0 at once when n
 * is e's batch or was added before; else as fc_engine_open (FC_ERR_INVALID
 * also for n out of 1..batch or another model). An int8 engine builds
 * the tail from the calibration ranges it kept at open. Memory: one activation
 * arena for n images per size added. On this CPU (AVX-512, oneDNN 2.6)
 * the embeddings are bit-identical to those of the same images in a full
 * batch, but where the engine runs Winograd convolutions (f32 ResNets
 * and VGG; a partial batch computes them directly) they agree to ~1e-6
 * of the largest value; test_engine checks both for its fixtures. */
int fc_engine_add_batch(fc_engine *e, fc_model *model, int n, char *err, size_t errcap);

/* fc_engine_run - out (n, D) = embeddings of in (n, C, H, W), row-major f32,
 * with 1 <= n <= batch and C, H, W those of the model at open (see
 * fc_engine_input_dims). n < batch runs at its own size when
 * fc_engine_add_batch added n, else as a batch padded with zeros. Returns
 * 0, FC_ERR_INVALID (NULL, n out of range) or FC_ERR_INTERNAL (oneDNN
 * failed; fc_engine_errmsg says how). */
int fc_engine_run(fc_engine *e, float *out, const float *in, size_t n);

/* fc_engine_winograd - 1 when e runs Winograd convolutions, 2 when it
 * would have without opts.direct_convs, else 0 (also for NULL). */
int fc_engine_winograd(const fc_engine *e);

/* fc_engine_dim - D, the embedding length; 0 for NULL. */
size_t fc_engine_dim(const fc_engine *e);

/* fc_engine_input_dims - the batch and C, H, W the engine was built for. */
void fc_engine_input_dims(const fc_engine *e, int64_t *batch, int64_t *c, int64_t *h, int64_t *w);

/* fc_engine_n_prims - number of oneDNN primitives a run executes, in order;
 * fc_engine_prim_info(e, i) is "<node name> <op>: <oneDNN implementation>"
 * for primitive i (owned by e; NULL when i is out of range). Layout changes
 * have op "InputReorder" (the NCHW f32 input into the first consumer's
 * layout), "OutputReorder" (the embedding into f32 N x D), "Reorder" (one
 * inside the graph: a consumer that cannot take its producer's layout) or
 * "Copy" (a residual copied into a `sum` convolution's destination because
 * it is still needed later); <node name> is then the consumer's. */
int fc_engine_n_prims(const fc_engine *e);
const char *fc_engine_prim_info(const fc_engine *e, int i);

/* fc_engine_prim_precision - what primitive i computes in: "int8" (u8/s8
 * source), "bf16" or "f32"; a reorder that quantises is "int8". NULL when i
 * is out of range. */
const char *fc_engine_prim_precision(const fc_engine *e, int i);

/* fc_engine_n_observed - tensors observe is called for (f32 engines opened
 * with opts.observe; else 0); fc_engine_observed_name(e, k) names tensor k. */
int fc_engine_n_observed(const fc_engine *e);
const char *fc_engine_observed_name(const fc_engine *e, int k);

/* fc_calib_free - release a table made by fc_calibrate or read from a
 * descriptor; NULL is fine. */
void fc_calib_free(fc_calib *c);

/* fc_engine_peak_bytes - bytes of the activation arena: the most that
 * activations alive at the same time need under the engine's plan (the
 * input staging buffer, the f32 output and the weights are not counted).
 * If total is not NULL, *total is what the activations would take without
 * reuse. 0 for NULL. */
size_t fc_engine_peak_bytes(const fc_engine *e, size_t *total);

/* fc_engine_errmsg - why the last failed fc_engine_run failed ("" if none). */
const char *fc_engine_errmsg(const fc_engine *e);

/* fc_engine_free - release everything; NULL is fine. */
void fc_engine_free(fc_engine *e);

#ifdef __cplusplus
}
#endif
#endif /* FEATCACHE_ENGINE_H */
