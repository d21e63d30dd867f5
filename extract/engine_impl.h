/*
 * engine_impl.h - what the files of the engine share (private to
 * extract/): the step and value types, the engine and its builder, and the
 * helpers that node builders use to make values, steps and primitives.
 *
 *   engine.c      values, steps, primitives and layouts; the memory plan;
 *                 open, run and the public queries
 *   engine_ops.c  one builder per op family (conv, pool, eltwise, bn,
 *                 binary, matmul, concat, pad, LpNormalization, Transpose)
 *   engine_patterns.c  op patterns built as one primitive (GELU's Erf and
 *                 tanh forms, QuickGELU, decomposed LayerNorm); the
 *                 LayerNormalization step; ReduceMean off the spatial axes
 *   engine_int8.c  int8 convolutions and Gemm/MatMul (weights quantised per
 *                 output channel, sources quantised by a scaled reorder,
 *                 f32 out); which tensors calibration observes
 *   engine_tokens.c  the transformer ops on token activations: MatMul of
 *                 two activations (with a folded scalar scale and
 *                 transposed operands read as views), Softmax,
 *                 Slice and Gather of one index; binary ops of rank >= 5
 *                 with a constant broadcast over inner dims (Swin's mask)
 *
 * The layout and memory rules are described at the top of engine.c.
 */
#ifndef FC_ENGINE_IMPL_H
#define FC_ENGINE_IMPL_H

#include <dnnl.h>

#include "featcache/engine.h"
#include "util/util.h"

#define ALIGN 64

enum step_kind { ST_PRIM = 0, ST_PAD, ST_BINARY_C, ST_LPNORM, ST_OUT };

typedef struct value {
	dnnl_memory_desc_t md;
	dnnl_memory_t mem;
	void *ptr;        /* its buffer, once planned */
	void *fixed;      /* a buffer outside the arena (input, output, constants) */
	int root;         /* the value whose buffer it uses: itself unless an alias */
	int alt;          /* the same data in another layout, -1 if none */
	float qscale;     /* int8: u8/s8 codes of real value code x qscale; 0: real values */
	int until;        /* root: last node reading a tensor in this buffer (INT_MAX: the cut) */
	int first, last;  /* root: steps from the first write to the last read */
	size_t size, off; /* root: bytes (the largest alias) and arena offset */
} value;

typedef struct step {
	int kind;
	int node;
	dnnl_primitive_t prim;
	int nargs;
	dnnl_exec_arg_t args[8]; /* ST_PRIM; concat's many sources go in cargs */
	dnnl_exec_arg_t *cargs;
	int *val;                /* value behind each argument, -1 for constants;
	                          * C steps: inputs val[0], val[1], output val[2] */
	int nval;
	/* C steps, on plain f32 */
	int op, ndim;
	int64_t dims[FC_MODEL_MAX_DIMS];     /* output dims */
	int64_t sdims[2][FC_MODEL_MAX_DIMS]; /* binary: inputs padded to ndim; pad: input, begin */
	float alpha;
	int obs, obs2;           /* 1 + a tensor observed before it runs (in val[obs_arg]), or 0 */
	int obs_arg, obs2_arg;
	/* ST_OUT: one cut's share of the embedding, from plain f32 N x T x D
	 * (dims[0..2]) into columns col.. of out_buf; op is its enum fc_pool
	 * (FC_POOL_AUTO: copy all T x D), prefix the tokens before the patches */
	int64_t col, prefix;
} step;

struct fc_engine {
	dnnl_engine_t eng;
	dnnl_stream_t stream;
	dnnl_data_type_t dt; /* activations: f32 or bf16 */
	int int8;            /* FC_PREC_INT8: convs and matmuls in int8 where it pays */
	int winograd;        /* f32: 3x3 stride-1 convs run Winograd, convs trade nChw16c;
	                      * 2: they would, but opts.direct_convs */
	fc_calib *calib;     /* int8: a copy of the ranges the plan used (NULL: placeholders),
	                      * so that partial batches get the same plan */
	int threads;
	step *steps;
	int n_steps, cap_steps;
	value *vals;
	int n_vals, cap_vals;
	dnnl_memory_t *mems; /* weights and other constants */
	int n_mems, cap_mems;
	void **blocks;       /* malloc'd buffers to free */
	int n_blocks, cap_blocks;
	char **infos;
	const char **precs; /* per primitive: "f32", "bf16" or "int8" */
	int n_prims;
	char **obs_names;   /* the observed tensors (calibration) */
	int n_obs;
	fc_engine_observe_fn observe;
	void *observe_ctx;
	void *arena;
	size_t arena_bytes, total_bytes;
	float *in_buf, *out_buf; /* batch x C x H x W and batch x D, f32 */
	int64_t batch, c, h, w;
	size_t dim;
	char errmsg[FC_ERRLEN];
	/* Partial batches (fc_engine_add_batch): tails[n] runs n images at
	 * their own size; it is built with parent set and takes the parent's
	 * constants wherever fci_const_mem would make the same bytes (csts:
	 * the parent's, by content hash and layouts). */
	struct fci_cst_entry *csts;
	int n_csts, cap_csts;
	const struct fc_engine *parent;
	struct fc_engine **tails; /* batch entries; NULL: none built */
};

typedef struct build {
	fc_engine *e;
	const fc_model_graph *g;
	int *uses;     /* per tensor: uses by needed nodes (+1 for the cut) */
	int *consumer; /* per tensor: the last needed node using it */
	int *tv;       /* per tensor: its value, -1 before it is produced */
	char *skip;    /* per node: 1 fused into an earlier step, 2 folded: its output is its input */
	struct fci_pattern *pats; /* engine_patterns.c: the patterns found */
	int n_pats;
	int *pat_of;   /* per node: 1 + its pattern's index if built there, else 0 */
	const fc_calib *calib; /* int8: the ranges (NULL: a plan with placeholder ranges) */
	char *err;
	size_t errcap;
} build;

/* ---- engine.c: errors, constants, values, steps, primitives ---- */

int fci_build_fail(build *b, int code, const char *fmt, ...) FC_PRINTF(3, 4);
const char *fci_isa_name(dnnl_cpu_isa_t isa);
const char *fci_dnnl_status_name(dnnl_status_t st);
dnnl_status_t fci_first_failure(dnnl_status_t so_far, dnnl_status_t next);
void *fci_balloc(fc_engine *e, size_t bytes);
int fci_is_const(const build *b, int t);
int fci_is_act(const build *b, int t);
int fci_is_cut(const fc_model_graph *g, int t);
float *fci_cst_copy(const build *b, int t);
float *fci_cst(build *b, int t);
dnnl_status_t fci_md_plain(dnnl_memory_desc_t *md, int ndim, const int64_t *dims, dnnl_data_type_t dt);
dnnl_status_t fci_md_any(dnnl_memory_desc_t *md, int ndim, const int64_t *dims, dnnl_data_type_t dt);
int fci_mem(build *b, dnnl_memory_t *m, const dnnl_memory_desc_t *md, void *data);
value *fci_val(build *b, int v);
int fci_new_value(build *b, const dnnl_memory_desc_t *md, void *fixed);
int fci_alias_value(build *b, int v, const dnnl_memory_desc_t *md);
void fci_bind_tensor(build *b, int t, int v);
int fci_writable_after(build *b, int v, int i);
int fci_same_buffer(build *b, int v, int w);
int fci_operand(build *b, int t, int ndim);
int fci_operand_as(build *b, int t, int ndim, dnnl_data_type_t dt);
int fci_new_step(build *b, int node, int kind, int nval);
step *fci_last_step(build *b);
void fci_arg(build *b, int a, int v, dnnl_memory_t m);
const char *fci_impl_of(const_dnnl_primitive_desc_t pd);
int fci_finish_prim(build *b, const_dnnl_primitive_desc_t pd, const char *op);
int fci_create_pd(build *b, int node, dnnl_primitive_desc_t *pd, const void *desc,
		     const_dnnl_primitive_attr_t attr);
dnnl_memory_desc_t fci_query_md(const_dnnl_primitive_desc_t pd, dnnl_query_t what);
int fci_unary_step(build *b, int node, dnnl_primitive_desc_t pd, int src, int dst, const char *op);
int fci_reorder_step(build *b, int node, int src, int dst, const char *op);
int fci_want(build *b, int node, int v, const dnnl_memory_desc_t *md);
int fci_want_plain(build *b, int node, int v);
int fci_view(build *b, int node, int v, int ndim, const int64_t *dims);
int fci_const_mem(build *b, dnnl_memory_t *out, const dnnl_memory_desc_t *user_md, void *data,
		     const dnnl_memory_desc_t *want_md);

/* ---- engine_ops.c: the node builders ---- */

int fci_runs(const build *b, int j);
int fci_reads(const fc_model_node *nd, int t);
int fci_build_node(build *b, int i);
int fci_build_output(build *b);
int fci_elementwise_dst(build *b, int i, int src, const dnnl_memory_desc_t *md);
int fci_eltwise_step(build *b, int i, int src, dnnl_alg_kind_t alg, float al, float be, const char *op);
int fci_plain_input(build *b, int i, dnnl_data_type_t dt);
int64_t fci_pad_r(int64_t in, int64_t out, int64_t k, int64_t s, int64_t d, int64_t pl, int64_t pr);
/* e->winograd for an f32 engine whose convs can all run on nChw16c and
 * that has a wide 3x3 stride-1 one oneDNN runs in Winograd form. */
void fci_plan_winograd(build *b, int direct);
void fci_fold_bn(build *b, int *cur, float *w, float *bias, int64_t oc, int64_t per);
int fci_post_ops(build *b, int i, dnnl_post_ops_t po, int *cur, int *res, int *add);
int fci_residual_in_place(build *b, int i, int add, int r, int src);

/* ---- engine_int8.c ---- */

/* CPUs without VNNI/AMX are refused (FC_ERR_UNSUPPORTED). */
int fci_int8_check(build *b);
/* *out = a copy of c's ranges (NULL for NULL): 0 or FC_ERR_NOMEM. */
int fci_calib_copy(fc_calib **out, const fc_calib *c);
/* Conv node i built in int8: 1; 0 when it stays f32 (no range for its
 * input, or oneDNN has only a reference kernel for it), nothing built
 * then; < 0 on error. */
int fci_build_conv_int8(build *b, int i);
/* A MatMul or Gemm with constant weights in int8 (engine_ops.c's builder
 * with its fusions: bias, LayerScale, GELU and residual post-ops): source
 * codes sx of type xdt, s8 weights per output channel (to fci_const_mem),
 * the bias over the output scales (NULL without one), and the primitive. */
struct fci_qmm {
	float sx;
	dnnl_data_type_t xdt;
	int8_t *wq;
	float *bias;
	dnnl_primitive_desc_t pd;
};
/* A node reading activation tensor a (viewed as ma, M x K), f32 weights w
 * (wd K x N, strides ws), bias (N or NULL), post-ops in attr, destination
 * my: 1 with q filled, 0 when it stays f32 (no range for a, no int8
 * kernel, or only a reference one), < 0 on error. */
int fci_matmul_int8(build *b, int a, const float *w, const int64_t *wd, const int64_t *ws, const float *bias,
		    const_dnnl_primitive_attr_t attr, const dnnl_memory_desc_t *ma, const dnnl_memory_desc_t *my,
		    struct fci_qmm *q);
void fci_qmm_free(struct fci_qmm *q);
/* The source for q: tensor a's codes (quantised once per tensor however
 * many matmuls read it, Q, K and V), viewed as ad (M x K). */
int fci_matmul_int8_src(build *b, int i, int a, const struct fci_qmm *q, const int64_t *ad);
/* Value v in real (f32 or bf16) values: v itself, or a dequantised copy
 * of int8 codes (a conv that stays f32 after an int8 producer). */
int fci_real_value(build *b, int node, int v);
/* With opts.observe: the last step reads tensor t (an int8 candidate's
 * input) from value v; register it. 0 or FC_ERR_NOMEM. */
int fci_observe(build *b, int t);
/* The same for tensor t held in the step's value val[arg] before it runs
 * (a residual, in the destination of its `sum` conv). */
int fci_observe_arg(build *b, int t, int arg);
/* Int8 engines: node i's inputs that are codes, other than a Conv's
 * source, replaced by real values (a dequantised copy) before it is built. */
int fci_int8_inputs(build *b, int i);

/* ---- engine_patterns.c ---- */

/* Match every pattern once (before any node is built); mark their nodes. */
int fci_find_patterns(build *b);
void fci_free_patterns(build *b);
/* Node i built as the pattern starting there: 1, 0 if none, or < 0. */
int fci_build_pattern(build *b, int i);
/* A GELU-like pattern on tensor t (read by nothing else) appended to po,
 * *cur set to its output: 1; 0 if none; < 0 on error. */
int fci_pattern_post_op(build *b, int t, dnnl_post_ops_t po, int *cur);
/* LayerNorm of tensor x over its last axis into tensor y at node i;
 * gamma, beta constant tensors (per channel or scalar) or -1; op names
 * the primitive (NULL: the node's op). */
int fci_layernorm_step(build *b, int i, int x, int y, float eps, int gamma, int beta, const char *op);
int fci_build_reduce_mean(build *b, int i);

/* ---- engine_tokens.c: transformer ops on activations ---- */

int fci_build_matmul_act(build *b, int i);
int fci_build_matmul_scale(build *b, int i);
int fci_build_softmax(build *b, int i);
int fci_build_slice(build *b, int i);
int fci_build_binary_expand(build *b, int i);
int fci_bias_add(const build *b, int i, int64_t n, int *add);
int fci_build_transpose_view(build *b, int i);

#endif /* FC_ENGINE_IMPL_H */
