/*
 * model.h - ONNX model import and tailoring: load and validate an ONNX CNN
 * or vision transformer, infer every tensor's shape for a chosen input
 * size, fold what is constant, list the layers, and cut the graph at one
 * or more embedding layers (pooling token tensors).
 *
 * What it is for: the graph the inference engine consumes (nodes in
 * topological order, op kinds, parsed attributes, f32 weights, static
 * shapes), and Finetuner's Tailor (`featcache layers`, `--layer NAME`).
 * What it is not: an executor. Nothing here computes activations; the
 * engine (engine.h) builds oneDNN primitives from this graph.
 *
 * Loading refuses, with a message naming the problem: truncated or
 * malformed protobuf, external data, opsets outside 7..20, ops outside the
 * supported set (naming node and op), cycles, inputs nothing produces,
 * tensors produced twice, absurd dims or counts, initializers whose data
 * does not match their dims, and shapes that do not fit together. Sizes
 * from the file are overflow-checked before anything is allocated;
 * unpacking the protobuf runs under a budget of 4 MiB + 16x the file size
 * (real models need 1-1.5x), and folding may create at most 2^23 values
 * (64 MB; a Swin's shifted-window masks take a few million) beyond the
 * file's own: a hostile file cannot make it allocate much more than its
 * own size. Nothing is quadratic in what a file controls.
 *
 * Semantics worth knowing:
 *  - Initializers may be float32, float16 or bfloat16 (converted to f32 on
 *    load), double (converted), int64 or int32 (kept as int64), or bool
 *    (read as int64 0/1).
 *  - Identity and Dropout are aliases: their output is their input.
 *  - Nodes whose inputs are all constant (initializers, Constant, and
 *    Shape of a tensor, which static shapes make constant) are folded:
 *    the Shape/Gather/Unsqueeze/Concat/Reshape chains torch emits around
 *    view() and F.pad, and Cast, Slice, Transpose, ConstantOfShape, integer
 *    arithmetic, and what ViT's and Swin's shape and mask subgraphs need:
 *    Range, Mod, Equal/Less/Greater, Not, Where, Expand, ScatterND, Neg,
 *    Pow, Sqrt, Gather by an index tensor (a comparison's or Cast to BOOL's
 *    result is int64 0/1). Folding depends on the input size, so it is
 *    redone by fc_model_set_input.
 *  - The activations are float32 whatever the file declares (a float16
 *    model computes in f32 with its f16 weights widened).
 *  - Pooling with ceil_mode follows PyTorch: a last window that would
 *    start in the right/bottom padding is dropped.
 */
#ifndef FEATCACHE_MODEL_H
#define FEATCACHE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "featcache/featcache.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fc_model fc_model;

#define FC_MODEL_MAX_DIMS 8      /* highest tensor rank accepted */
#define FC_MODEL_MAX_CUTS 8      /* layers one embedding may concatenate */

/* How a cut becomes a vector. A 4-D map N x C x H x W is average-pooled
 * over H, W and a 2-D N x D is taken as it is, whatever is asked; a
 * token tensor N x T x D (a transformer block's output) is pooled as: */
enum fc_pool {
	FC_POOL_AUTO = 0,  /* nothing asked: tokens are flattened (T x D values) */
	FC_POOL_CLS,       /* x[:, 0], the first prefix token */
	FC_POOL_MEAN,      /* the mean of the tokens after the prefix tokens */
	FC_POOL_CLS_MEAN,  /* both, concatenated: DINOv2's linear evaluation */
	FC_POOL_FLATTEN    /* asked for explicitly: T x D values */
};

/* fc_pool_name - "cls", "mean", "cls+mean", "flatten" ("auto" for 0). */
const char *fc_pool_name(int pool);

/* fc_pool_parse - the enum fc_pool named s, or -1. */
int fc_pool_parse(const char *s);

/* Op kinds. The first group runs in the engine; FC_OP_IDENTITY/DROPOUT are
 * aliases; the last group only ever appears folded (FC_NODE_FOLDED): a
 * model where one of them depends on the image is refused. */
enum fc_op {
	FC_OP_CONV = 0,
	FC_OP_BATCHNORM,      /* BatchNormalization, inference form */
	FC_OP_RELU,
	FC_OP_CLIP,
	FC_OP_LEAKYRELU,
	FC_OP_SIGMOID,
	FC_OP_HARDSIGMOID,
	FC_OP_HARDSWISH,
	FC_OP_ADD,            /* binary ops broadcast numpy-style */
	FC_OP_SUB,
	FC_OP_MUL,
	FC_OP_DIV,
	FC_OP_PAD,            /* mode "constant" only */
	FC_OP_MAXPOOL,
	FC_OP_AVGPOOL,        /* AveragePool */
	FC_OP_GLOBALAVGPOOL,  /* GlobalAveragePool */
	FC_OP_REDUCEMEAN,
	FC_OP_LPNORM,         /* LpNormalization: p = 2 over the last axis */
	FC_OP_FLATTEN,        /* the four view ops: the output tensor's dims */
	FC_OP_RESHAPE,        /*   say everything; the data is unchanged in  */
	FC_OP_SQUEEZE,        /*   row-major order                            */
	FC_OP_UNSQUEEZE,
	FC_OP_CONCAT,
	FC_OP_GEMM,
	FC_OP_MATMUL,
	FC_OP_LAYERNORM,      /* LayerNormalization over the last axis, constant Scale and B */
	FC_OP_ERF,            /* the engine runs it only inside the GELU pattern */
	FC_OP_SOFTMAX,        /* over one axis (the last, in the engine) */
	FC_OP_POW,            /* activations: only inside the decomposed LayerNorm */
	FC_OP_SQRT,           /*   and GELU patterns; constants: folded         */
	FC_OP_TANH,
	FC_OP_GELU,           /* opset 20: approximate "none" or "tanh" */
	FC_OP_EXPAND,         /* broadcast to a shape */
	FC_OP_WHERE,
	FC_OP_IDENTITY,       /* aliases */
	FC_OP_DROPOUT,
	FC_OP_CONSTANT,       /* fold-only */
	FC_OP_SHAPE,
	FC_OP_GATHER,
	FC_OP_CAST,
	FC_OP_CONSTANTOFSHAPE,
	FC_OP_SLICE,
	FC_OP_TRANSPOSE,      /* folded, and run on activations too */
	FC_OP_EQUAL,          /* comparisons and logic give I64 0/1 constants */
	FC_OP_LESS,
	FC_OP_GREATER,
	FC_OP_NOT,
	FC_OP_MOD,
	FC_OP_RANGE,
	FC_OP_SCATTERND,
	FC_OP_NEG,
	FC_OP_COUNT
};

/* fc_op_name - the ONNX op_type of an enum fc_op ("Conv"); "?" if out of range. */
const char *fc_op_name(int op);

/* fc_op_is_view - 1 for Flatten/Reshape/Squeeze/Unsqueeze (no arithmetic). */
int fc_op_is_view(int op);

enum fc_tensor_kind {
	FC_TENSOR_INPUT = 0, /* the model's image input */
	FC_TENSOR_ACT,       /* computed from the input by a FC_NODE_RUN node */
	FC_TENSOR_CONST,     /* initializer, Constant output or folded value */
	FC_TENSOR_NONE       /* an optional output featcache does not compute */
};

enum fc_elem { FC_ELEM_F32 = 1, FC_ELEM_I64 = 7 }; /* values are ONNX's */

typedef struct fc_model_tensor {
	const char *name;
	int kind;                          /* enum fc_tensor_kind */
	int elem;                          /* enum fc_elem: activations are always F32 */
	int ndim;                          /* rank; 0 is a scalar */
	int64_t dims[FC_MODEL_MAX_DIMS];
	int64_t numel;                     /* product of dims (1 for a scalar) */
	const float *f32;                  /* CONST and F32: numel values, row-major */
	const int64_t *i64;                /* CONST and I64: numel values */
	int producer;                      /* node that writes it; -1 for the input and initializers */
	int source;                        /* the tensor it equals (through Identity/Dropout); itself otherwise */
} fc_model_tensor;

enum fc_node_state {
	FC_NODE_RUN = 0,  /* the engine computes it */
	FC_NODE_ALIAS,    /* Identity/Dropout of an activation: nothing to compute */
	FC_NODE_FOLDED    /* evaluated at load time; its outputs are FC_TENSOR_CONST */
};

/* Attributes, resolved for the current input size (auto_pad turned into
 * explicit pads, negative axes made non-negative, Clip bounds and Pad
 * pads taken from their constant inputs). Spatial ops are 2-D: pads are
 * {top, left, bottom, right} (ONNX's begin..., end... order). */
typedef union fc_node_attr {
	struct {
		int64_t kernel[2], stride[2], dilation[2], pad[4];
		int64_t group;
	} conv;
	struct {
		/* With ceil_mode the output tensor's dims may need more
		 * bottom/right padding than pad[] says: take them from there. */
		int64_t kernel[2], stride[2], dilation[2], pad[4];
		int ceil_mode;
		int count_include_pad;     /* AveragePool only */
	} pool;
	struct {
		float epsilon;
	} bn;                          /* BatchNormalization and LayerNormalization */
	struct {
		float alpha, beta;         /* Y = alpha * A' B' + beta * C */
		int trans_a, trans_b;
	} gemm;
	struct {
		float min, max;            /* -INFINITY / INFINITY when absent */
	} clip;
	struct {
		float alpha;               /* LeakyRelu slope; HardSigmoid alpha; Gelu: 1 tanh, 0 erf */
		float beta;                /* HardSigmoid: max(0, min(1, alpha x + beta)); Pow's exponent */
	} act;
	struct {
		int64_t begin[FC_MODEL_MAX_DIMS], end[FC_MODEL_MAX_DIMS]; /* per input dim, >= 0 */
		float value;
	} pad;
	struct {
		uint32_t axes;             /* bit i: dim i of the input is reduced */
		int keepdims;
	} reduce;
	struct {
		int axis;                  /* Concat/Flatten, non-negative */
	} axis;
	struct {
		int perm[FC_MODEL_MAX_DIMS]; /* Transpose: output dim i is input dim perm[i] */
	} perm;
	struct {
		int64_t start[FC_MODEL_MAX_DIMS], step[FC_MODEL_MAX_DIMS]; /* Slice, per input dim */
	} slice;
	struct {
		int axis;                  /* Gather of one constant index: non-negative */
		int64_t index;             /* non-negative, < the axis' size */
		int keep;                  /* 1: the index has rank 1, the axis stays (size 1) */
	} gather;
} fc_node_attr;

typedef struct fc_model_node {
	const char *name;     /* as in the file; "<op_type>_<file index>" when it has none */
	const char *op_type;  /* as in the file */
	int op;               /* enum fc_op */
	int state;            /* enum fc_node_state */
	int needed;           /* 1: a FC_NODE_RUN node the current cut depends on */
	int n_in, n_out;
	const int *in;        /* tensor ids, through aliases (tensor.source); -1: omitted optional input */
	const int *out;       /* tensor ids; -1: an unnamed optional output */
	uint64_t params;      /* weights + biases (Conv, Gemm, MatMul, BatchNormalization scale/bias) */
	fc_node_attr attr;
} fc_model_node;

typedef struct fc_model_graph {
	int n_nodes;
	const fc_model_node *nodes;     /* topological order (file order where it allows) */
	int n_tensors;
	const fc_model_tensor *tensors;
	int input;                      /* tensor id of the image input */
	int opset;                      /* default-domain opset the file imports */
	uint64_t params;                /* sum of node params */
	int default_node;               /* the default embedding layer, -1 if the model has none */
	int default_tensor;
	/* The cut (fc_model_cut); -1 / 0 while there is none. */
	int cut_node;                   /* the layer named (may be an alias node) */
	int cut_tensor;                 /* the embedding tensor, alias-resolved, FC_TENSOR_ACT */
	int pool;                       /* 1: cut_tensor is 4-D N x C x H x W, averaged over H, W */
	int64_t embed_dim;              /* the embedding's length: the sum of cut_dims */
	int n_cuts;                     /* layers concatenated into the embedding; [0] is cut_node */
	int cut_nodes[FC_MODEL_MAX_CUTS];
	int cut_tensors[FC_MODEL_MAX_CUTS];
	int64_t cut_dims[FC_MODEL_MAX_CUTS]; /* each one's share of embed_dim */
	int token_pool;                 /* enum fc_pool for the 3-D cuts */
	int prefix_tokens;              /* tokens before the patches: 1 (CLS), 5 (CLS + 4 registers) */
	uint64_t cut_params;            /* params of the needed nodes */
} fc_model_graph;

/* fc_model_open - read, validate and prepare the ONNX file at path.
 * The input size is the model's declared input shape, with dynamic dims
 * made batch 1, 3 channels and 224 x 224; the graph is cut at the default
 * embedding layer when the model has one. On success returns 0 and *out
 * is the model (free with fc_model_free). On failure returns a negative
 * FC_ERR_* (FC_ERR_CORRUPT for malformed files and graphs,
 * FC_ERR_UNSUPPORTED for valid models beyond featcache, FC_ERR_OVERFLOW for
 * absurd sizes, FC_ERR_INVALID for shapes that do not fit, FC_ERR_IO and
 * FC_ERR_NOMEM), sets *out to NULL and writes the reason, lowercase and
 * without the path ("truncated protobuf at byte 1234"), into errbuf
 * (FC_ERRLEN bytes always suffice; errbuf may be NULL). */
int fc_model_open(fc_model **out, const char *path, char *errbuf, size_t errcap);

/* fc_model_open_mem - fc_model_open from len bytes at data (not kept). */
int fc_model_open_mem(fc_model **out, const void *data, size_t len, char *errbuf, size_t errcap);

/* fc_model_free - release everything; NULL is fine. */
void fc_model_free(fc_model *m);

/* fc_model_errmsg - the reason the last failed call on m gave ("" if none). */
const char *fc_model_errmsg(const fc_model *m);

/* fc_model_set_input - re-infer every shape (and refold) for an input of
 * n x c x h x w; 0 keeps the current value of a dim. Models whose input is
 * not 4-D take only n (c, h, w must be 0). The current cut is kept, by
 * tensor, and rechecked. On failure (FC_ERR_INVALID with a message naming
 * the node whose shapes do not fit, FC_ERR_OVERFLOW for absurd sizes) the
 * model keeps its previous size and graph. */
int fc_model_set_input(fc_model *m, int64_t n, int64_t c, int64_t h, int64_t w);

/* fc_model_cut - cut the graph at layer, a node name (one listed by
 * fc_model_is_layer) or an activation tensor name; NULL means the default
 * embedding layer. Sets the graph's cut_* fields and each node's `needed`.
 * Returns 0, FC_ERR_NOT_FOUND (no such layer, or NULL and the model has no
 * default), or FC_ERR_INVALID (a constant, the input itself, or an output
 * without a batch dimension). A failed cut leaves the previous one. */
int fc_model_cut(fc_model *m, const char *layer);

/* fc_model_cut_tokens - fc_model_cut for token models: layers is one
 * layer, or several separated by commas ("blk.8,blk.9,blk.10,blk.11",
 * concatenated in that order; a name that is itself a layer is never
 * split); pool (enum fc_pool) says how each 3-D N x T x D cut becomes a
 * vector, prefix_tokens how many tokens precede the patches (excluded
 * from the mean; CLS is token 0). Returns as fc_model_cut, and
 * FC_ERR_INVALID for a pooling that does not fit a cut (cls without a
 * prefix token, no patch tokens left to average, more than
 * FC_MODEL_MAX_CUTS layers, the same layer twice). */
int fc_model_cut_tokens(fc_model *m, const char *layers, int pool, int prefix_tokens);

/* fc_model_check_pooling - FC_ERR_INVALID, the message (fc_model_errmsg)
 * naming the layer and its token shape, when a cut gives tokens (N x T x
 * D) and no pooling was asked (FC_POOL_AUTO would flatten them to T x D
 * values); 0 otherwise. extract and export refuse such a cut and ask for
 * a --pool rather than store or export T x D values by surprise. */
int fc_model_check_pooling(fc_model *m);

/* fc_model_get_graph - the current graph, owned by m and valid until the
 * next fc_model_set_input/fc_model_cut/fc_model_free. Never NULL. */
const fc_model_graph *fc_model_get_graph(const fc_model *m);

/* fc_model_is_layer - 1 if node i is a layer, i.e. listed by `featcache
 * layers` and a valid cut point: a FC_NODE_RUN or FC_NODE_ALIAS node. */
int fc_model_is_layer(const fc_model *m, int i);

/* fc_model_find_layer - the index of the layer whose node name (or, failing
 * that, output tensor name) is name; FC_ERR_NOT_FOUND if none. */
int fc_model_find_layer(const fc_model *m, const char *name);

#ifdef __cplusplus
}
#endif
#endif /* FEATCACHE_MODEL_H */
