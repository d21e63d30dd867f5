/*
 * model_impl.h - the inside of fc_model, shared by extract/onnx_read.c
 * (protobuf checks, unpacking, tensor data), extract/model.c (graph
 * building and validation), extract/model_infer.c (shape inference and
 * folding) and extract/model_cut.c (layers and cuts). Not API.
 */
#ifndef FC_MODEL_IMPL_H
#define FC_MODEL_IMPL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "featcache/model.h"
#include "onnx.pb-c.h"

/* Limits on what a file may ask for. Generous for any real CNN; each keeps
 * the arithmetic that follows inside int64 and the memory bounded. */
#define FC_MAX_DIM ((int64_t)1 << 31)        /* one dimension */
#define FC_MAX_NUMEL ((int64_t)1 << 33)      /* elements of one tensor */
#define FC_MAX_FOLD_NUMEL ((int64_t)1 << 23) /* values folding may create, beyond the initializers' count */
#define FC_MAX_NODES (1 << 20)
#define FC_MAX_TENSORS (1 << 22)
#define FC_MAX_NODE_INPUTS 65536
#define FC_MAX_NODE_OUTPUTS 8
#define FC_MAX_NODE_ATTRS 64                 /* ONNX ops have fewer than 20 */
#define FC_MAX_ATTR_INTS 64
#define FC_MAX_SIDE ((int64_t)1 << 16)       /* n, c, h, w of fc_model_set_input */
#define FC_OPSET_MIN 7
#define FC_OPSET_MAX 20

enum { AUTO_PAD_NOTSET = 0, AUTO_PAD_VALID, AUTO_PAD_SAME_UPPER, AUTO_PAD_SAME_LOWER };

/* A node's attributes as the file gives them, checked for type and range
 * at load time; model_infer.c resolves them into fc_node_attr. */
struct node_attrs {
	int has_kernel;
	int64_t kernel[2], stride[2], dilation[2], pads[4];
	int64_t group;
	int auto_pad;
	int ceil_mode, count_include_pad;
	float alpha, beta, epsilon;
	int trans_a, trans_b;
	float clip_min, clip_max;         /* Clip before opset 11 */
	int axis;                         /* Concat, Flatten, Gather: may be negative */
	int keepdims, noop_empty_axes, allowzero;
	int has_axes, n_axes;             /* Squeeze/Unsqueeze/ReduceMean/Slice before their input forms */
	int64_t axes[FC_MAX_ATTR_INTS];
	int n_pads_attr;                  /* Pad before opset 11 */
	int64_t pads_attr[2 * FC_MODEL_MAX_DIMS];
	float pad_value;
	int n_starts, n_ends;             /* Slice before opset 10 */
	int64_t starts[FC_MAX_ATTR_INTS], ends[FC_MAX_ATTR_INTS];
	int has_perm, n_perm;
	int64_t perm[FC_MODEL_MAX_DIMS];
	int cast_to;                      /* enum fc_elem */
	int cast_bool;                    /* Cast to BOOL: nonzero becomes 1 */
	int has_shape_end;                /* Shape (opset 15) start/end */
	int64_t shape_start, shape_end;
	int approx_tanh;                  /* Gelu */
	int fmod;                         /* Mod */
	int cos_elem;                     /* ConstantOfShape value */
	float cos_f32;
	int64_t cos_i64;
};

struct node_priv {
	int file_index;
	int *in_raw;                      /* input tensor ids as named in the file */
	struct node_attrs a;
};

/* Memory that lives as long as the model (load) or until the next
 * re-inference (fold): a list of blocks freed together. */
struct blob {
	struct blob *next;
	max_align_t data[];
};

struct fc_model {
	fc_model_graph g;
	fc_model_node *nodes;             /* topological order */
	struct node_priv *np;             /* parallel to nodes */
	fc_model_tensor *tensors;
	unsigned char *fixed;             /* 1: the tensor's value is set at load (initializer, Constant) */
	int n_nodes, n_tensors, cap_tensors;
	int opset;
	int out0;                         /* tensor id of the first graph output */
	int in_ndim;
	int64_t in_decl[FC_MODEL_MAX_DIMS]; /* declared input dims, -1 where dynamic */
	int64_t in_dims[FC_MODEL_MAX_DIMS]; /* the size shapes are inferred for */
	uint32_t *hash;                   /* tensor name -> id + 1; 0 is empty */
	size_t hash_cap;
	uint64_t hash_seed;               /* per model: names from a file cannot be made to collide */
	int64_t fold_left;                /* values folding may still create in this inference */
	struct blob *load_mem, *fold_mem;
	char err[FC_ERRLEN];
	char qbuf[4][80];                 /* quoted names for messages */
};

/* ---- messages (model.c) ---- */

/* fci_model_fail - format the reason into m->err; returns code. */
int fci_model_fail(fc_model *m, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* fci_model_node_fail - "node 'NAME' (OP): REASON"; returns code. */
int fci_model_node_fail(fc_model *m, int code, int node, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* fci_model_q - s made printable and short for a message, in scratch slot
 * 0..3 (a message may quote up to four names at once). */
const char *fci_model_q(fc_model *m, int slot, const char *s);

/* fci_model_shape_str - "1x64x56x56" ("scalar" for rank 0) into buf. */
char *fci_model_shape_str(char *buf, size_t cap, int ndim, const int64_t *dims);

/* ---- memory (model.c) ---- */

/* fci_model_alloc - n zeroed bytes on the load list (fold = 0) or the fold
 * list (fold = 1); NULL when out of memory. */
void *fci_model_alloc(fc_model *m, size_t n, int fold);

/* fci_mul_dims - *out = product of dims, checked against FC_MAX_NUMEL and
 * for negative entries. Returns 0 or -1. */
int fci_mul_dims(int ndim, const int64_t *dims, int64_t *out);

/* ---- the file (onnx_read.c) ---- */

/* fci_model_open_file - fc_model_open, and when hash is not NULL the
 * XXH3-128 (canonical bytes) of the file as read. */
int fci_model_open_file(fc_model **out, const char *path, uint8_t hash[16], char *errbuf, size_t errcap);

/* A protobuf-c allocator that refuses to go past a budget, and the
 * skeleton the model was unpacked from (onnx_read.c's top comment). */
struct fci_budget {
	ProtobufCAllocator pa;
	size_t left;
	int exhausted;
	/* private: the skeleton and where each initializer's raw_data is */
	uint8_t *skel;
	size_t skel_len, n_refs;
	struct fci_init_ref *refs;
	int patched;
};

/* fci_onnx_unpack - check the wire format of data (every length, varint and
 * wire type of the fields the schema knows, so the message can say where a
 * file breaks), then unpack it with a budget proportional to len. Returns
 * 0 and *out, or a negative FC_ERR_* with the reason in m->err. The graph
 * initializers' raw_data point into data, which must outlive *out. Free
 * *out (and what b holds, also after a failure) with
 * fci_onnx_unpacked_free(b, *out). */
int fci_onnx_unpack(fc_model *m, struct fci_budget *b, const uint8_t *data, size_t len,
		   Onnx__ModelProto **out);
void fci_onnx_unpacked_free(struct fci_budget *b, Onnx__ModelProto *mp);

/* A FLOAT tensor's raw_data left for fci_onnx_copy (models copy their
 * initializers in parallel): n values from src (little-endian, any
 * alignment) into dst. dst NULL: nothing left. */
struct fci_copy {
	float *dst;
	const uint8_t *src;
	size_t n;
};
void fci_onnx_copy(const struct fci_copy *c);
/* fci_onnx_copy_all - the n copies of c, on every thread when they are big. */
void fci_onnx_copy_all(const struct fci_copy *c, size_t n);

/* fci_onnx_tensor - decode a TensorProto into t (kind CONST, elem, dims,
 * numel and f32 or i64 on the load list). `what` names it for messages
 * ("initializer 'w'"). Checks dims, data type, external data, and that
 * the data holds exactly numel values before allocating. later NULL: the
 * values are there on return; else FLOAT raw_data is only allocated, and
 * *later says what fci_onnx_copy must copy into it. */
int fci_onnx_tensor(fc_model *m, const Onnx__TensorProto *tp, const char *what,
		   fc_model_tensor *t, struct fci_copy *later);

/* fci_onnx_type_name - "FLOAT16" for an ONNX TensorProto.DataType. */
const char *fci_onnx_type_name(int32_t type);

/* ---- inference (model_infer.c) ---- */

/* fci_model_infer - reset every non-fixed tensor, then walk the nodes in
 * order: resolve aliases, fold what is constant, infer the shapes of the
 * rest for m->in_dims, resolve attributes and count parameters. */
int fci_model_infer(fc_model *m);

/* Shape rules shared by folding and inference. Each returns 0, or a
 * negative FC_ERR_* with "node 'NAME' (OP): ..." in m->err; the tensor
 * getters return NULL with the message set. */

/* fci_const_in - input k of node as a constant of elem (0: any); `what`
 * names it in the message. */
const fc_model_tensor *fci_const_in(fc_model *m, int node, int k, int elem, const char *what);
/* fci_act_in - input k of node, which must be computed from the image. */
const fc_model_tensor *fci_act_in(fc_model *m, int node, int k);
/* fci_get_axes - axes from constant input k (k < 0: the attribute form),
 * normalised against rank r, duplicates refused; *given: any were given. */
int fci_get_axes(fc_model *m, int node, int k, int r, int *n_out, int *axes, int *given);
/* fci_broadcast_shape - numpy broadcast of a and b; -1 (no message) if
 * they do not broadcast. */
int fci_broadcast_shape(const fc_model_tensor *a, const fc_model_tensor *b, int *r, int64_t *dims);
int fci_reshape_dims(fc_model *m, int node, const fc_model_tensor *x, const fc_model_tensor *s,
		     int allowzero, int *r, int64_t *dims);
int fci_squeeze_dims(fc_model *m, int node, const fc_model_tensor *x, int *r, int64_t *dims);
int fci_unsqueeze_dims(fc_model *m, int node, const fc_model_tensor *x, int *r, int64_t *dims);
int fci_flatten_dims(fc_model *m, int node, const fc_model_tensor *x, int *r, int64_t *dims);
/* fci_concat_dims - output dims of Concat and its non-negative axis. */
int fci_concat_dims(fc_model *m, int node, int *r, int64_t *dims, int *axis_out);
/* fci_clip_bounds - Clip's min/max (attributes or constant inputs) into
 * the node's attr.clip. */
int fci_clip_bounds(fc_model *m, int node);
/* fci_transpose_perm - Transpose's permutation for d (reversed when
 * absent) into perm[], the output dims into dims[]. */
int fci_transpose_perm(fc_model *m, int node, const fc_model_tensor *d, int *perm, int64_t *dims);
/* fci_slice_params - Slice's starts/ends/axes/steps for data d, clamped
 * as ONNX says: per dim the first index st[], step[] and output dims[]. */
int fci_slice_params(fc_model *m, int node, const fc_model_tensor *d, int64_t *st, int64_t *step,
		     int64_t *dims);

/* ---- folding (model_fold.c) ---- */

/* fci_model_fold - evaluate node (all inputs constant, or a Shape) into
 * constants on the fold list; marks it FC_NODE_FOLDED. */
int fci_model_fold(fc_model *m, int node);

/* ---- layers and cuts (model_cut.c) ---- */

/* fci_model_find_default - set g.default_node/default_tensor (-1 if none). */
void fci_model_find_default(fc_model *m);

/* fci_model_apply_cut - cut at tensor id t (alias-resolved) listed as node
 * `node`; 0 or a negative FC_ERR_* with m->err set. */
int fci_model_apply_cut(fc_model *m, int node, int t);

/* fci_model_apply_cuts - n cuts (nodes, alias-resolved tensors), pooling
 * and prefix tokens as fc_model_cut_tokens; changes nothing on failure. */
int fci_model_apply_cuts(fc_model *m, int n, const int *nodes, const int *tensors, int pool, int prefix);

#endif /* FC_MODEL_IMPL_H */
