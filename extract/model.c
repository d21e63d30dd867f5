/*
 * model.c - fc_model: an ONNX file turned into a validated graph.
 *
 * Reading goes: bytes -> checked ModelProto (onnx_read.c) -> tensors (one
 * per initializer, the image input and every node output, found by name
 * through a hash table) and nodes (op kind, tensor ids, attributes checked
 * for type and range) -> topological order (Kahn's algorithm, ties broken
 * by file order, so a well-ordered file keeps its order; a cycle is named)
 * -> shape inference and folding (model_infer.c) -> the default cut
 * (model_cut.c). The ModelProto is freed once the graph holds copies of
 * what it needs.
 *
 * Everything a message says about the file goes through fci_model_q, which
 * makes names printable and short: they come from a file we do not trust.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <xxhash.h>

#include "extract/model_impl.h"
#include "util/util.h"

/* ---- ops ---- */

enum { CLS_RUN = 0, CLS_ALIAS, CLS_FOLD };

static const struct opdef {
	const char *name;
	int cls;
	int min_in, max_in; /* max_in -1: any number */
	int max_out;
} ops[FC_OP_COUNT] = {
	[FC_OP_CONV] = { "Conv", CLS_RUN, 2, 3, 1 },
	[FC_OP_BATCHNORM] = { "BatchNormalization", CLS_RUN, 5, 5, 5 },
	[FC_OP_RELU] = { "Relu", CLS_RUN, 1, 1, 1 },
	[FC_OP_CLIP] = { "Clip", CLS_RUN, 1, 3, 1 },
	[FC_OP_LEAKYRELU] = { "LeakyRelu", CLS_RUN, 1, 1, 1 },
	[FC_OP_SIGMOID] = { "Sigmoid", CLS_RUN, 1, 1, 1 },
	[FC_OP_HARDSIGMOID] = { "HardSigmoid", CLS_RUN, 1, 1, 1 },
	[FC_OP_HARDSWISH] = { "HardSwish", CLS_RUN, 1, 1, 1 },
	[FC_OP_ADD] = { "Add", CLS_RUN, 2, 2, 1 },
	[FC_OP_SUB] = { "Sub", CLS_RUN, 2, 2, 1 },
	[FC_OP_MUL] = { "Mul", CLS_RUN, 2, 2, 1 },
	[FC_OP_DIV] = { "Div", CLS_RUN, 2, 2, 1 },
	[FC_OP_PAD] = { "Pad", CLS_RUN, 1, 4, 1 },
	[FC_OP_MAXPOOL] = { "MaxPool", CLS_RUN, 1, 1, 2 },
	[FC_OP_AVGPOOL] = { "AveragePool", CLS_RUN, 1, 1, 1 },
	[FC_OP_GLOBALAVGPOOL] = { "GlobalAveragePool", CLS_RUN, 1, 1, 1 },
	[FC_OP_REDUCEMEAN] = { "ReduceMean", CLS_RUN, 1, 2, 1 },
	[FC_OP_LPNORM] = { "LpNormalization", CLS_RUN, 1, 1, 1 },
	[FC_OP_FLATTEN] = { "Flatten", CLS_RUN, 1, 1, 1 },
	[FC_OP_RESHAPE] = { "Reshape", CLS_RUN, 2, 2, 1 },
	[FC_OP_SQUEEZE] = { "Squeeze", CLS_RUN, 1, 2, 1 },
	[FC_OP_UNSQUEEZE] = { "Unsqueeze", CLS_RUN, 1, 2, 1 },
	[FC_OP_CONCAT] = { "Concat", CLS_RUN, 1, -1, 1 },
	[FC_OP_GEMM] = { "Gemm", CLS_RUN, 2, 3, 1 },
	[FC_OP_MATMUL] = { "MatMul", CLS_RUN, 2, 2, 1 },
	[FC_OP_LAYERNORM] = { "LayerNormalization", CLS_RUN, 2, 3, 3 },
	[FC_OP_ERF] = { "Erf", CLS_RUN, 1, 1, 1 },
	[FC_OP_SOFTMAX] = { "Softmax", CLS_RUN, 1, 1, 1 },
	[FC_OP_POW] = { "Pow", CLS_RUN, 2, 2, 1 },
	[FC_OP_SQRT] = { "Sqrt", CLS_RUN, 1, 1, 1 },
	[FC_OP_TANH] = { "Tanh", CLS_RUN, 1, 1, 1 },
	[FC_OP_GELU] = { "Gelu", CLS_RUN, 1, 1, 1 },
	[FC_OP_EXPAND] = { "Expand", CLS_RUN, 2, 2, 1 },
	[FC_OP_WHERE] = { "Where", CLS_RUN, 3, 3, 1 },
	[FC_OP_IDENTITY] = { "Identity", CLS_ALIAS, 1, 1, 1 },
	[FC_OP_DROPOUT] = { "Dropout", CLS_ALIAS, 1, 3, 2 },
	[FC_OP_CONSTANT] = { "Constant", CLS_FOLD, 0, 0, 1 },
	[FC_OP_SHAPE] = { "Shape", CLS_FOLD, 1, 1, 1 },
	[FC_OP_GATHER] = { "Gather", CLS_FOLD, 2, 2, 1 },
	[FC_OP_CAST] = { "Cast", CLS_FOLD, 1, 1, 1 },
	[FC_OP_CONSTANTOFSHAPE] = { "ConstantOfShape", CLS_FOLD, 1, 1, 1 },
	[FC_OP_SLICE] = { "Slice", CLS_FOLD, 1, 5, 1 },
	[FC_OP_TRANSPOSE] = { "Transpose", CLS_FOLD, 1, 1, 1 },
	[FC_OP_EQUAL] = { "Equal", CLS_FOLD, 2, 2, 1 },
	[FC_OP_LESS] = { "Less", CLS_FOLD, 2, 2, 1 },
	[FC_OP_GREATER] = { "Greater", CLS_FOLD, 2, 2, 1 },
	[FC_OP_NOT] = { "Not", CLS_FOLD, 1, 1, 1 },
	[FC_OP_MOD] = { "Mod", CLS_FOLD, 2, 2, 1 },
	[FC_OP_RANGE] = { "Range", CLS_FOLD, 3, 3, 1 },
	[FC_OP_SCATTERND] = { "ScatterND", CLS_FOLD, 3, 3, 1 },
	[FC_OP_NEG] = { "Neg", CLS_FOLD, 1, 1, 1 },
};

const char *fc_op_name(int op)
{
	return op >= 0 && op < FC_OP_COUNT ? ops[op].name : "?";
}

int fc_op_is_view(int op)
{
	return op == FC_OP_FLATTEN || op == FC_OP_RESHAPE || op == FC_OP_SQUEEZE ||
	       op == FC_OP_UNSQUEEZE;
}

static int op_lookup(const char *name)
{
	for (int i = 0; i < FC_OP_COUNT; i++)
		if (strcmp(ops[i].name, name) == 0)
			return i;
	return -1;
}

/* ---- messages ---- */

const char *fci_model_q(fc_model *m, int slot, const char *s)
{
	char *b = m->qbuf[slot & 3];
	size_t cap = sizeof m->qbuf[0], i = 0;

	if (!s)
		s = "";
	for (; s[i] && i + 1 < cap; i++)
		b[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
	b[i] = 0;
	if (s[i] && cap > 4)
		memcpy(b + cap - 4, "...", 4);
	return b;
}

int fci_model_fail(fc_model *m, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fci_verrf(m->err, sizeof m->err, code, fmt, ap);
	va_end(ap);
	return code;
}

int fci_model_node_fail(fc_model *m, int code, int node, const char *fmt, ...)
{
	va_list ap;
	int n;

	n = snprintf(m->err, sizeof m->err, "node '%s' (%s): ", fci_model_q(m, 3, m->nodes[node].name),
		     m->nodes[node].op_type);
	if (n < 0 || (size_t)n >= sizeof m->err)
		return code;
	va_start(ap, fmt);
	fci_verrf(m->err + n, sizeof m->err - (size_t)n, code, fmt, ap);
	va_end(ap);
	return code;
}

char *fci_model_shape_str(char *buf, size_t cap, int ndim, const int64_t *dims)
{
	size_t n = 0;

	if (cap)
		buf[0] = 0;
	if (ndim <= 0) {
		snprintf(buf, cap, ndim == 0 ? "scalar" : "?");
		return buf;
	}
	for (int i = 0; i < ndim && n < cap; i++) {
		int w = snprintf(buf + n, cap - n, "%s%lld", i ? "x" : "", (long long)dims[i]);

		if (w < 0)
			break;
		n += (size_t)w;
	}
	return buf;
}

/* ---- memory ---- */

void *fci_model_alloc(fc_model *m, size_t n, int fold)
{
	struct blob *b;

	if (n > SIZE_MAX - sizeof *b - 16)
		return NULL;
	b = calloc(1, sizeof *b + (n ? n : 1));
	if (!b)
		return NULL;
	if (fold) {
		b->next = m->fold_mem;
		m->fold_mem = b;
	} else {
		b->next = m->load_mem;
		m->load_mem = b;
	}
	return b->data;
}

static void blobs_free(struct blob *b)
{
	while (b) {
		struct blob *next = b->next;

		free(b);
		b = next;
	}
}

static char *keep_str(fc_model *m, const char *s)
{
	size_t n = strlen(s);
	char *d = fci_model_alloc(m, n + 1, 0);

	if (d)
		memcpy(d, s, n + 1);
	return d;
}

int fci_mul_dims(int ndim, const int64_t *dims, int64_t *out)
{
	int64_t n = 1;

	for (int i = 0; i < ndim; i++) {
		if (dims[i] < 0)
			return -1;
		if (dims[i] && n > FC_MAX_NUMEL / dims[i])
			return -1;
		n *= dims[i];
	}
	*out = n;
	return 0;
}

/* ---- tensor names ---- */

/* Seeded, so that a file cannot pick names that all land in one slot and
 * make every lookup a walk over the table. */
static uint64_t name_hash(const fc_model *m, const char *s)
{
	return XXH3_64bits_withSeed(s, strlen(s), m->hash_seed);
}

static int find_tensor(const fc_model *m, const char *name)
{
	size_t mask = m->hash_cap - 1;

	for (size_t i = (size_t)name_hash(m, name) & mask;; i = (i + 1) & mask) {
		uint32_t v = m->hash[i];

		if (!v)
			return -1;
		if (strcmp(m->tensors[v - 1].name, name) == 0)
			return (int)v - 1;
	}
}

/* A new tensor named name; -1 (message set) if the name is taken. */
static int add_tensor(fc_model *m, const char *name, const char *what)
{
	size_t mask = m->hash_cap - 1, i;
	fc_model_tensor *t;
	int id;

	for (i = (size_t)name_hash(m, name) & mask; m->hash[i]; i = (i + 1) & mask) {
		if (strcmp(m->tensors[m->hash[i] - 1].name, name) == 0) {
			fci_model_fail(m, FC_ERR_CORRUPT, "%s '%s' reuses the name of another tensor",
				      what, fci_model_q(m, 0, name));
			return -1;
		}
	}
	if (m->n_tensors >= m->cap_tensors) {
		fci_model_fail(m, FC_ERR_INTERNAL, "tensor table full");
		return -1;
	}
	id = m->n_tensors++;
	t = &m->tensors[id];
	t->name = keep_str(m, name);
	if (!t->name) {
		fci_model_fail(m, FC_ERR_NOMEM, "out of memory");
		return -1;
	}
	t->producer = -1;
	t->source = id;
	t->ndim = -1;
	m->hash[i] = (uint32_t)id + 1;
	return id;
}

/* ---- attributes ---- */

struct nctx {
	fc_model *m;
	int node;
	const Onnx__NodeProto *np;
};

static const char *attr_type_name(int t)
{
	switch (t) {
	case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT: return "FLOAT";
	case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT: return "INT";
	case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING: return "STRING";
	case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR: return "TENSOR";
	case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS: return "FLOATS";
	case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS: return "INTS";
	default: return "another type";
	}
}

/* The attribute's type: its `type` field, or for files that leave it out
 * (IR version 1), the one value field that is set. */
static int attr_type(const Onnx__AttributeProto *a)
{
	if (a->has_type && a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED)
		return a->type;
	if (a->has_f)
		return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
	if (a->has_i)
		return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
	if (a->has_s)
		return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING;
	if (a->t)
		return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR;
	if (a->n_floats)
		return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS;
	if (a->n_ints)
		return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
	return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED;
}

/* The attribute `name` if present; NULL if absent or (with *rc set) of the
 * wrong type. */
static const Onnx__AttributeProto *attr_get(struct nctx *c, const char *name, int type, int *rc)
{
	for (size_t i = 0; i < c->np->n_attribute; i++) {
		const Onnx__AttributeProto *a = c->np->attribute[i];

		if (!a->name || strcmp(a->name, name) != 0)
			continue;
		if (attr_type(a) != type) {
			*rc = fci_model_node_fail(c->m, FC_ERR_CORRUPT, c->node,
						 "attribute '%s' is %s, expected %s", name,
						 attr_type_name(attr_type(a)), attr_type_name(type));
			return NULL;
		}
		return a;
	}
	return NULL;
}

static int attr_int(struct nctx *c, const char *name, int64_t def, int64_t lo, int64_t hi,
		    int64_t *out)
{
	int rc = 0;
	const Onnx__AttributeProto *a = attr_get(c, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT, &rc);

	if (rc)
		return rc;
	*out = a ? a->i : def;
	if (*out < lo || *out > hi)
		return fci_model_node_fail(c->m, FC_ERR_CORRUPT, c->node,
					  "attribute '%s' is %lld, must be %lld to %lld", name,
					  (long long)*out, (long long)lo, (long long)hi);
	return 0;
}

static int attr_flag(struct nctx *c, const char *name, int def, int *out)
{
	int64_t v = def;
	int rc = attr_int(c, name, def, 0, 1, &v);

	*out = (int)v;
	return rc;
}

static int attr_float(struct nctx *c, const char *name, float def, float *out)
{
	int rc = 0;
	const Onnx__AttributeProto *a =
		attr_get(c, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT, &rc);

	if (rc)
		return rc;
	*out = a ? a->f : def;
	if (isnan(*out))
		return fci_model_node_fail(c->m, FC_ERR_CORRUPT, c->node, "attribute '%s' is NaN", name);
	return 0;
}

/* INTS: *n = -1 when absent; want >= 0 asks for exactly that many. */
static int attr_ints(struct nctx *c, const char *name, int want, int cap, int64_t lo, int64_t hi,
		     int64_t *out, int *n)
{
	int rc = 0;
	const Onnx__AttributeProto *a =
		attr_get(c, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS, &rc);

	*n = -1;
	if (rc || !a)
		return rc;
	if ((want >= 0 && a->n_ints != (size_t)want) || a->n_ints > (size_t)cap) {
		if (want >= 0)
			return fci_model_node_fail(c->m, FC_ERR_UNSUPPORTED, c->node,
						  "attribute '%s' has %zu values, expected %d", name,
						  a->n_ints, want);
		return fci_model_node_fail(c->m, FC_ERR_UNSUPPORTED, c->node,
					  "attribute '%s' has %zu values (at most %d)", name, a->n_ints,
					  cap);
	}
	for (size_t i = 0; i < a->n_ints; i++) {
		if (a->ints[i] < lo || a->ints[i] > hi)
			return fci_model_node_fail(c->m, FC_ERR_CORRUPT, c->node,
						  "attribute '%s' has %lld, must be %lld to %lld", name,
						  (long long)a->ints[i], (long long)lo, (long long)hi);
		out[i] = a->ints[i];
	}
	*n = (int)a->n_ints;
	return 0;
}

/* STRING as a C string (NULL when absent); bytes after a NUL are refused. */
static int attr_str(struct nctx *c, const char *name, const char **out, char *buf, size_t cap)
{
	int rc = 0;
	const Onnx__AttributeProto *a =
		attr_get(c, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING, &rc);

	*out = NULL;
	if (rc || !a)
		return rc;
	if (a->s.len >= cap || (a->s.len && memchr(a->s.data, 0, a->s.len)))
		return fci_model_node_fail(c->m, FC_ERR_UNSUPPORTED, c->node,
					  "attribute '%s' has an unexpected value", name);
	if (a->s.len)
		memcpy(buf, a->s.data, a->s.len);
	buf[a->s.len] = 0;
	*out = buf;
	return 0;
}

#define SPATIAL_MAX ((int64_t)1 << 20) /* kernel, stride, dilation, pads */

static int parse_spatial(struct nctx *c, struct node_attrs *a, int is_pool)
{
	int n, rc;
	const char *s;
	char buf[32];

	a->stride[0] = a->stride[1] = 1;
	a->dilation[0] = a->dilation[1] = 1;
	if ((rc = attr_ints(c, "kernel_shape", 2, 2, 1, SPATIAL_MAX, a->kernel, &n)))
		return rc;
	a->has_kernel = n == 2;
	if (is_pool && !a->has_kernel)
		return fci_model_node_fail(c->m, FC_ERR_CORRUPT, c->node, "kernel_shape is missing");
	if ((rc = attr_ints(c, "strides", 2, 2, 1, SPATIAL_MAX, a->stride, &n)))
		return rc;
	if ((rc = attr_ints(c, "dilations", 2, 2, 1, SPATIAL_MAX, a->dilation, &n)))
		return rc;
	if ((rc = attr_ints(c, "pads", 4, 4, 0, SPATIAL_MAX, a->pads, &n)))
		return rc;
	if ((rc = attr_str(c, "auto_pad", &s, buf, sizeof buf)))
		return rc;
	if (!s || !strcmp(s, "NOTSET"))
		a->auto_pad = AUTO_PAD_NOTSET;
	else if (!strcmp(s, "VALID"))
		a->auto_pad = AUTO_PAD_VALID;
	else if (!strcmp(s, "SAME_UPPER"))
		a->auto_pad = AUTO_PAD_SAME_UPPER;
	else if (!strcmp(s, "SAME_LOWER"))
		a->auto_pad = AUTO_PAD_SAME_LOWER;
	else
		return fci_model_node_fail(c->m, FC_ERR_CORRUPT, c->node, "auto_pad '%s' is not valid",
					  fci_model_q(c->m, 0, s));
	return 0;
}

/* A 1-element TENSOR attribute (ConstantOfShape's value) as f32 or i64. */
static int scalar_tensor_attr(struct nctx *c, const Onnx__AttributeProto *at, struct node_attrs *a)
{
	fc_model_tensor t;
	char what[160];
	int rc;

	memset(&t, 0, sizeof t);
	snprintf(what, sizeof what, "node '%s' (%s): value", fci_model_q(c->m, 0, c->m->nodes[c->node].name),
		 c->m->nodes[c->node].op_type);
	if ((rc = fci_onnx_tensor(c->m, at->t, what, &t, NULL)))
		return rc;
	if (t.numel != 1)
		return fci_model_node_fail(c->m, FC_ERR_CORRUPT, c->node,
					  "value has %lld elements, expected 1", (long long)t.numel);
	a->cos_elem = t.elem;
	if (t.elem == FC_ELEM_F32)
		a->cos_f32 = t.f32[0];
	else
		a->cos_i64 = t.i64[0];
	return 0;
}

/* Constant: its value becomes the output tensor, fixed for the model's life. */
static int parse_constant(struct nctx *c, int out)
{
	fc_model *m = c->m;
	fc_model_tensor *t = &m->tensors[out];
	const Onnx__AttributeProto *at = NULL;
	int rc = 0, found = 0;

	for (size_t i = 0; i < c->np->n_attribute; i++) {
		const Onnx__AttributeProto *x = c->np->attribute[i];

		if (!x->name)
			continue;
		if (!strcmp(x->name, "value") || !strcmp(x->name, "value_float") ||
		    !strcmp(x->name, "value_floats") || !strcmp(x->name, "value_int") ||
		    !strcmp(x->name, "value_ints")) {
			at = x;
			found++;
		} else if (!strncmp(x->name, "value", 5) || !strcmp(x->name, "sparse_value")) {
			return fci_model_node_fail(m, FC_ERR_UNSUPPORTED, c->node,
						  "attribute '%s' is not supported",
						  fci_model_q(m, 0, x->name));
		}
	}
	if (found != 1)
		return fci_model_node_fail(m, FC_ERR_CORRUPT, c->node,
					  found ? "more than one value attribute" : "no value attribute");
	if (!strcmp(at->name, "value")) {
		char what[160];

		if (attr_type(at) != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR || !at->t)
			return fci_model_node_fail(m, FC_ERR_CORRUPT, c->node, "value is not a tensor");
		snprintf(what, sizeof what, "node '%s' (Constant): value",
			 fci_model_q(m, 0, m->nodes[c->node].name));
		if ((rc = fci_onnx_tensor(m, at->t, what, t, NULL)))
			return rc;
	} else {
		int is_float = !strncmp(at->name, "value_float", 11);
		int list = at->name[strlen(at->name) - 1] == 's';
		int want = is_float ? (list ? ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS
					    : ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT)
				    : (list ? ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS
					    : ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
		size_t n = list ? (is_float ? at->n_floats : at->n_ints) : 1;

		if (attr_type(at) != want)
			return fci_model_node_fail(m, FC_ERR_CORRUPT, c->node, "%s is %s", at->name,
						  attr_type_name(attr_type(at)));
		t->kind = FC_TENSOR_CONST;
		t->ndim = list ? 1 : 0;
		t->dims[0] = (int64_t)n;
		t->numel = (int64_t)n;
		t->elem = is_float ? FC_ELEM_F32 : FC_ELEM_I64;
		void *v = fci_model_alloc(m, n * (is_float ? sizeof(float) : sizeof(int64_t)), 0);

		if (!v)
			return fci_model_fail(m, FC_ERR_NOMEM, "out of memory");
		for (size_t i = 0; i < n; i++) {
			if (is_float)
				((float *)v)[i] = list ? at->floats[i] : at->f;
			else
				((int64_t *)v)[i] = list ? at->ints[i] : at->i;
		}
		if (is_float)
			t->f32 = v;
		else
			t->i64 = v;
	}
	m->fixed[out] = 1;
	return 0;
}

static int cast_target(int64_t to)
{
	switch (to) {
	case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
	case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16:
	case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE:
	case ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16:
		return FC_ELEM_F32;
	case ONNX__TENSOR_PROTO__DATA_TYPE__INT64:
	case ONNX__TENSOR_PROTO__DATA_TYPE__INT32:
	case ONNX__TENSOR_PROTO__DATA_TYPE__INT16:
	case ONNX__TENSOR_PROTO__DATA_TYPE__INT8:
	case ONNX__TENSOR_PROTO__DATA_TYPE__UINT8:
	case ONNX__TENSOR_PROTO__DATA_TYPE__UINT16:
	case ONNX__TENSOR_PROTO__DATA_TYPE__UINT32:
	case ONNX__TENSOR_PROTO__DATA_TYPE__UINT64:
	case ONNX__TENSOR_PROTO__DATA_TYPE__BOOL:
		return FC_ELEM_I64;
	default:
		return 0;
	}
}

/* Input-count rules that depend on the opset, and which inputs may be
 * left out (""). Returns the number of leading inputs that must be given. */
static int check_arity(struct nctx *c, int op, int n_in)
{
	fc_model *m = c->m;
	int opset = m->opset, lo = ops[op].min_in, hi = ops[op].max_in, need = lo;

	switch (op) {
	case FC_OP_CLIP:
		hi = opset < 11 ? 1 : 3;
		break;
	case FC_OP_PAD:
		lo = need = opset < 11 ? 1 : 2;
		hi = opset < 11 ? 1 : opset < 18 ? 3 : 4;
		break;
	case FC_OP_REDUCEMEAN:
		hi = opset < 18 ? 1 : 2;
		break;
	case FC_OP_SQUEEZE:
		hi = opset < 13 ? 1 : 2;
		break;
	case FC_OP_UNSQUEEZE:
		lo = hi = need = opset < 13 ? 1 : 2;
		break;
	case FC_OP_SLICE:
		lo = need = opset < 10 ? 1 : 3;
		hi = opset < 10 ? 1 : 5;
		break;
	case FC_OP_DROPOUT:
		hi = opset < 12 ? 1 : 3;
		break;
	case FC_OP_CONCAT:
		need = n_in;
		break;
	default:
		break;
	}
	if (n_in < lo || (hi >= 0 && n_in > hi)) {
		if (lo == hi)
			return fci_model_node_fail(m, FC_ERR_CORRUPT, c->node,
						  "has %d inputs, expected %d (opset %d)", n_in, lo, opset);
		if (hi < 0)
			return fci_model_node_fail(m, FC_ERR_CORRUPT, c->node,
						  "has %d inputs, expected at least %d", n_in, lo);
		return fci_model_node_fail(m, FC_ERR_CORRUPT, c->node,
					  "has %d inputs, expected %d to %d (opset %d)", n_in, lo, hi,
					  opset);
	}
	return need;
}

static int parse_attrs(struct nctx *c, int op, struct node_attrs *a)
{
	fc_model *m = c->m;
	int rc = 0, n;
	int64_t v;
	const char *s;
	char buf[32];

	switch (op) {
	case FC_OP_CONV:
		if ((rc = parse_spatial(c, a, 0)))
			return rc;
		return attr_int(c, "group", 1, 1, (int64_t)1 << 20, &a->group);
	case FC_OP_MAXPOOL:
	case FC_OP_AVGPOOL:
		if ((rc = parse_spatial(c, a, 1)))
			return rc;
		if ((rc = attr_flag(c, "ceil_mode", 0, &a->ceil_mode)))
			return rc;
		if (op == FC_OP_AVGPOOL && a->dilation[0] * a->dilation[1] != 1)
			return fci_model_node_fail(m, FC_ERR_UNSUPPORTED, c->node,
						  "dilated average pooling is not supported");
		return attr_flag(c, "count_include_pad", 0, &a->count_include_pad);
	case FC_OP_BATCHNORM:
		if ((rc = attr_float(c, "epsilon", 1e-5f, &a->epsilon)))
			return rc;
		if (!(a->epsilon >= 0))
			return fci_model_node_fail(m, FC_ERR_CORRUPT, c->node, "epsilon is negative");
		if ((rc = attr_int(c, "spatial", 1, 0, 1, &v)))
			return rc;
		if (!v)
			return fci_model_node_fail(m, FC_ERR_UNSUPPORTED, c->node,
						  "spatial=0 is not supported");
		if ((rc = attr_int(c, "training_mode", 0, 0, 1, &v)))
			return rc;
		if (v)
			return fci_model_node_fail(m, FC_ERR_UNSUPPORTED, c->node,
						  "training_mode=1 is not supported");
		return 0;
	case FC_OP_LAYERNORM:
		if ((rc = attr_int(c, "axis", -1, -FC_MODEL_MAX_DIMS, FC_MODEL_MAX_DIMS - 1, &v)))
			return rc;
		a->axis = (int)v;
		if ((rc = attr_float(c, "epsilon", 1e-5f, &a->epsilon)))
			return rc;
		if (!(a->epsilon >= 0) || isinf(a->epsilon))
			return fci_model_node_fail(m, FC_ERR_CORRUPT, c->node, "epsilon is not a finite value >= 0");
		/* stash_type is the precision of the statistics: 1 (float) is what the engine computes */
		if ((rc = attr_int(c, "stash_type", 1, 0, 100, &v)))
			return rc;
		if (v != 1)
			return fci_model_node_fail(m, FC_ERR_UNSUPPORTED, c->node,
						  "stash_type %lld is not supported (only 1, float)", (long long)v);
		return 0;
	case FC_OP_CLIP:
		a->clip_min = -INFINITY;
		a->clip_max = INFINITY;
		if (m->opset < 11) {
			if ((rc = attr_float(c, "min", -INFINITY, &a->clip_min)))
				return rc;
			return attr_float(c, "max", INFINITY, &a->clip_max);
		}
		return 0;
	case FC_OP_LEAKYRELU:
		return attr_float(c, "alpha", 0.01f, &a->alpha);
	case FC_OP_HARDSIGMOID:
		if ((rc = attr_float(c, "alpha", 0.2f, &a->alpha)))
			return rc;
		return attr_float(c, "beta", 0.5f, &a->beta);
	case FC_OP_GEMM:
		if ((rc = attr_float(c, "alpha", 1.0f, &a->alpha)) ||
		    (rc = attr_float(c, "beta", 1.0f, &a->beta)) ||
		    (rc = attr_flag(c, "transA", 0, &a->trans_a)))
			return rc;
		return attr_flag(c, "transB", 0, &a->trans_b);
	case FC_OP_PAD:
		if ((rc = attr_str(c, "mode", &s, buf, sizeof buf)))
			return rc;
		if (s && strcmp(s, "constant") != 0)
			return fci_model_node_fail(m, FC_ERR_UNSUPPORTED, c->node,
						  "mode '%s' is not supported (only 'constant')",
						  fci_model_q(m, 0, s));
		if (m->opset < 11) {
			if ((rc = attr_ints(c, "pads", -1, 2 * FC_MODEL_MAX_DIMS, -SPATIAL_MAX,
					    SPATIAL_MAX, a->pads_attr, &a->n_pads_attr)))
				return rc;
			if (a->n_pads_attr < 0)
				return fci_model_node_fail(m, FC_ERR_CORRUPT, c->node, "pads is missing");
			return attr_float(c, "value", 0.0f, &a->pad_value);
		}
		return 0;
	case FC_OP_REDUCEMEAN:
		if ((rc = attr_flag(c, "keepdims", 1, &a->keepdims)) ||
		    (rc = attr_flag(c, "noop_with_empty_axes", 0, &a->noop_empty_axes)))
			return rc;
		if (m->opset < 18) {
			if ((rc = attr_ints(c, "axes", -1, FC_MODEL_MAX_DIMS, -FC_MODEL_MAX_DIMS,
					    FC_MODEL_MAX_DIMS - 1, a->axes, &n)))
				return rc;
			a->has_axes = n >= 0;
			a->n_axes = n > 0 ? n : 0;
		}
		return 0;
	case FC_OP_SQUEEZE:
	case FC_OP_UNSQUEEZE:
		if (m->opset < 13) {
			if ((rc = attr_ints(c, "axes", -1, FC_MODEL_MAX_DIMS, -FC_MODEL_MAX_DIMS,
					    FC_MODEL_MAX_DIMS - 1, a->axes, &n)))
				return rc;
			if (n < 0 && op == FC_OP_UNSQUEEZE)
				return fci_model_node_fail(m, FC_ERR_CORRUPT, c->node, "axes is missing");
			a->has_axes = n >= 0;
			a->n_axes = n > 0 ? n : 0;
		}
		return 0;
	case FC_OP_FLATTEN:
		if ((rc = attr_int(c, "axis", 1, -FC_MODEL_MAX_DIMS, FC_MODEL_MAX_DIMS, &v)))
			return rc;
		a->axis = (int)v;
		return 0;
	case FC_OP_LPNORM:
		if ((rc = attr_int(c, "p", 2, 1, 2, &v)))
			return rc;
		if (v != 2)
			return fci_model_node_fail(m, FC_ERR_UNSUPPORTED, c->node, "p = %lld is not supported (only 2)",
						  (long long)v);
		if ((rc = attr_int(c, "axis", -1, -FC_MODEL_MAX_DIMS, FC_MODEL_MAX_DIMS - 1, &v)))
			return rc;
		a->axis = (int)v;
		return 0;
	case FC_OP_CONCAT: {
		int r2 = 0;

		if (!attr_get(c, "axis", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT, &r2))
			return r2 ? r2 : fci_model_node_fail(m, FC_ERR_CORRUPT, c->node, "axis is missing");
		if ((rc = attr_int(c, "axis", 0, -FC_MODEL_MAX_DIMS, FC_MODEL_MAX_DIMS - 1, &v)))
			return rc;
		a->axis = (int)v;
		return 0;
	}
	case FC_OP_GATHER:
		if ((rc = attr_int(c, "axis", 0, -FC_MODEL_MAX_DIMS, FC_MODEL_MAX_DIMS - 1, &v)))
			return rc;
		a->axis = (int)v;
		return 0;
	case FC_OP_RESHAPE:
		return attr_flag(c, "allowzero", 0, &a->allowzero);
	case FC_OP_CAST:
		if ((rc = attr_int(c, "to", 0, 0, 100, &v)))
			return rc;
		a->cast_to = cast_target(v);
		a->cast_bool = v == ONNX__TENSOR_PROTO__DATA_TYPE__BOOL;
		if (!a->cast_to)
			return fci_model_node_fail(m, FC_ERR_UNSUPPORTED, c->node,
						  "cast to %s is not supported", fci_onnx_type_name((int32_t)v));
		return 0;
	case FC_OP_TRANSPOSE:
		if ((rc = attr_ints(c, "perm", -1, FC_MODEL_MAX_DIMS, 0, FC_MODEL_MAX_DIMS - 1, a->perm,
				    &n)))
			return rc;
		a->has_perm = n >= 0;
		a->n_perm = n > 0 ? n : 0;
		return 0;
	case FC_OP_SHAPE:
		if ((rc = attr_int(c, "start", 0, -FC_MODEL_MAX_DIMS, FC_MODEL_MAX_DIMS, &a->shape_start)))
			return rc;
		if ((rc = attr_int(c, "end", FC_MODEL_MAX_DIMS, -FC_MODEL_MAX_DIMS, INT64_MAX,
				   &a->shape_end)))
			return rc;
		return 0;
	case FC_OP_SLICE:
		if (m->opset < 10) {
			if ((rc = attr_ints(c, "starts", -1, FC_MODEL_MAX_DIMS, INT64_MIN, INT64_MAX,
					    a->starts, &a->n_starts)) ||
			    (rc = attr_ints(c, "ends", -1, FC_MODEL_MAX_DIMS, INT64_MIN, INT64_MAX,
					    a->ends, &a->n_ends)) ||
			    (rc = attr_ints(c, "axes", -1, FC_MODEL_MAX_DIMS, -FC_MODEL_MAX_DIMS,
					    FC_MODEL_MAX_DIMS - 1, a->axes, &n)))
				return rc;
			if (a->n_starts < 0 || a->n_ends != a->n_starts || (n >= 0 && n != a->n_starts))
				return fci_model_node_fail(m, FC_ERR_CORRUPT, c->node,
							  "starts, ends and axes do not match");
			a->has_axes = n >= 0;
			a->n_axes = n > 0 ? n : 0;
		}
		return 0;
	case FC_OP_SOFTMAX:
		/* Before opset 13 the default axis is 1 and the input is
		 * coerced to 2-D there; the last axis is the same either way. */
		if ((rc = attr_int(c, "axis", m->opset < 13 ? 1 : -1, -FC_MODEL_MAX_DIMS,
				   FC_MODEL_MAX_DIMS - 1, &v)))
			return rc;
		a->axis = (int)v;
		return 0;
	case FC_OP_GELU:
		if ((rc = attr_str(c, "approximate", &s, buf, sizeof buf)))
			return rc;
		if (s && strcmp(s, "none") != 0 && strcmp(s, "tanh") != 0)
			return fci_model_node_fail(m, FC_ERR_CORRUPT, c->node,
						  "approximate '%s' is not 'none' or 'tanh'",
						  fci_model_q(m, 0, s));
		a->approx_tanh = s && strcmp(s, "tanh") == 0;
		return 0;
	case FC_OP_MOD:
		return attr_flag(c, "fmod", 0, &a->fmod);
	case FC_OP_SCATTERND:
		if ((rc = attr_str(c, "reduction", &s, buf, sizeof buf)))
			return rc;
		if (s && strcmp(s, "none") != 0)
			return fci_model_node_fail(m, FC_ERR_UNSUPPORTED, c->node,
						  "reduction '%s' is not supported (only 'none')",
						  fci_model_q(m, 0, s));
		return 0;
	case FC_OP_CONSTANTOFSHAPE: {
		const Onnx__AttributeProto *at =
			attr_get(c, "value", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR, &rc);

		a->cos_elem = FC_ELEM_F32;
		if (rc)
			return rc;
		if (at && !at->t)
			return fci_model_node_fail(m, FC_ERR_CORRUPT, c->node, "value is not a tensor");
		return at ? scalar_tensor_attr(c, at, a) : 0;
	}
	default:
		return 0;
	}
}

/* ---- building the graph ---- */

static int read_opset(fc_model *m, const Onnx__ModelProto *mp)
{
	int found = 0;

	for (size_t i = 0; i < mp->n_opset_import; i++) {
		const Onnx__OperatorSetIdProto *o = mp->opset_import[i];

		if (o->domain && o->domain[0] && strcmp(o->domain, "ai.onnx") != 0)
			continue;
		if (found)
			return fci_model_fail(m, FC_ERR_CORRUPT, "model imports the ai.onnx opset twice");
		found = 1;
		if (!o->has_version || o->version < FC_OPSET_MIN || o->version > FC_OPSET_MAX)
			return fci_model_fail(m, FC_ERR_UNSUPPORTED,
					     "opset %lld is not supported (featcache reads %d to %d)",
					     (long long)o->version, FC_OPSET_MIN, FC_OPSET_MAX);
		m->opset = (int)o->version;
	}
	if (!found)
		return fci_model_fail(m, FC_ERR_CORRUPT, "model imports no ai.onnx opset");
	return 0;
}

static int read_input(fc_model *m, const Onnx__ValueInfoProto *vi, int id)
{
	const Onnx__TypeProto__Tensor *tt = vi->type ? vi->type->tensor_type : NULL;
	const char *name = fci_model_q(m, 0, vi->name);

	if (!tt)
		return fci_model_fail(m, FC_ERR_UNSUPPORTED, "input '%s' is not a tensor", name);
	if (tt->has_elem_type && tt->elem_type != ONNX__TENSOR_PROTO__DATA_TYPE__UNDEFINED &&
	    tt->elem_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT &&
	    tt->elem_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16 &&
	    tt->elem_type != ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16 &&
	    tt->elem_type != ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE)
		return fci_model_fail(m, FC_ERR_UNSUPPORTED,
				     "input '%s' has type %s; featcache feeds float images", name,
				     fci_onnx_type_name(tt->elem_type));
	if (!tt->shape) {
		/* No shape at all: assume the image layout. */
		m->in_ndim = 4;
		for (int i = 0; i < 4; i++)
			m->in_decl[i] = -1;
	} else {
		if (tt->shape->n_dim > FC_MODEL_MAX_DIMS || tt->shape->n_dim == 0)
			return fci_model_fail(m, FC_ERR_UNSUPPORTED, "input '%s' has %zu dims", name,
					     tt->shape->n_dim);
		m->in_ndim = (int)tt->shape->n_dim;
		for (int i = 0; i < m->in_ndim; i++) {
			const Onnx__TensorShapeProto__Dimension *d = tt->shape->dim[i];

			if (!d->has_dim_value || d->dim_param) {
				m->in_decl[i] = -1;
			} else if (d->dim_value < 0) {
				return fci_model_fail(m, FC_ERR_CORRUPT, "input '%s' has dim %d = %lld",
						     name, i, (long long)d->dim_value);
			} else if (d->dim_value > FC_MAX_SIDE) {
				return fci_model_fail(m, FC_ERR_OVERFLOW,
						     "input '%s' has an absurd dim %d = %lld", name, i,
						     (long long)d->dim_value);
			} else {
				m->in_decl[i] = d->dim_value ? d->dim_value : -1;
			}
		}
	}
	for (int i = 0; i < m->in_ndim; i++) {
		static const int64_t img[4] = { 1, 3, 224, 224 };

		if (m->in_decl[i] > 0)
			m->in_dims[i] = m->in_decl[i];
		else if (i == 0)
			m->in_dims[i] = 1;
		else if (m->in_ndim == 4)
			m->in_dims[i] = img[i];
		else
			return fci_model_fail(m, FC_ERR_UNSUPPORTED,
					     "input '%s' has a dynamic dim %d; featcache needs a static "
					     "size", name, i);
	}
	m->tensors[id].kind = FC_TENSOR_INPUT;
	m->tensors[id].elem = FC_ELEM_F32;
	m->fixed[id] = 0;
	return 0;
}

/* Min-heap of node indices (file order) for the topological sort. */
struct heap {
	int *v;
	int n;
};

static void heap_push(struct heap *h, int x)
{
	int i = h->n++;

	while (i > 0 && h->v[(i - 1) / 2] > x) {
		h->v[i] = h->v[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	h->v[i] = x;
}

static int heap_pop(struct heap *h)
{
	int top = h->v[0], x = h->v[--h->n], i = 0;

	for (;;) {
		int l = 2 * i + 1, r = l + 1, s = i;
		int sv = x;

		if (l < h->n && h->v[l] < sv)
			s = l, sv = h->v[l];
		if (r < h->n && h->v[r] < sv)
			s = r;
		if (s == i)
			break;
		h->v[i] = h->v[s];
		i = s;
	}
	if (h->n)
		h->v[i] = x;
	return top;
}

/* Order the nodes so every input is produced before it is read. */
static int topo_sort(fc_model *m)
{
	int n = m->n_nodes, rc = 0, done = 0;
	int *indeg = calloc((size_t)n + 1, sizeof *indeg);
	int *start = calloc((size_t)n + 2, sizeof *start);
	int *order = malloc(((size_t)n + 1) * sizeof *order);
	int *newidx = malloc(((size_t)n + 1) * sizeof *newidx);
	int *cons = NULL;
	struct heap h = { malloc(((size_t)n + 1) * sizeof(int)), 0 };
	fc_model_node *nodes = NULL;
	struct node_priv *np = NULL;
	size_t n_edges = 0;

	if (!indeg || !start || !order || !newidx || !h.v) {
		rc = fci_model_fail(m, FC_ERR_NOMEM, "out of memory");
		goto out;
	}
	/* consumers of each node, as CSR */
	for (int i = 0; i < n; i++)
		for (int k = 0; k < m->nodes[i].n_in; k++) {
			int t = m->np[i].in_raw[k], p = t >= 0 ? m->tensors[t].producer : -1;

			if (p >= 0) {
				indeg[i]++;
				start[p + 1]++;
				n_edges++;
			}
		}
	for (int i = 0; i < n; i++)
		start[i + 1] += start[i];
	cons = malloc((n_edges + 1) * sizeof *cons);
	if (!cons) {
		rc = fci_model_fail(m, FC_ERR_NOMEM, "out of memory");
		goto out;
	}
	{
		int *fill = newidx; /* reused as a cursor before it means anything */

		memcpy(fill, start, (size_t)n * sizeof *fill);
		for (int i = 0; i < n; i++)
			for (int k = 0; k < m->nodes[i].n_in; k++) {
				int t = m->np[i].in_raw[k], p = t >= 0 ? m->tensors[t].producer : -1;

				if (p >= 0)
					cons[fill[p]++] = i;
			}
	}
	for (int i = 0; i < n; i++)
		if (!indeg[i])
			heap_push(&h, i);
	while (h.n) {
		int i = heap_pop(&h);

		order[done++] = i;
		for (int e = start[i]; e < start[i + 1]; e++)
			if (--indeg[cons[e]] == 0)
				heap_push(&h, cons[e]);
	}
	if (done < n) {
		/* Every node left has an input from another node left: walking
		 * such inputs backwards must come round to a node twice. */
		int cur = -1;
		unsigned char *seen = calloc((size_t)n, 1);

		if (!seen) {
			rc = fci_model_fail(m, FC_ERR_NOMEM, "out of memory");
			goto out;
		}
		for (int i = 0; i < n && cur < 0; i++)
			if (indeg[i])
				cur = i;
		while (!seen[cur]) {
			seen[cur] = 1;
			for (int k = 0; k < m->nodes[cur].n_in; k++) {
				int t = m->np[cur].in_raw[k], p = t >= 0 ? m->tensors[t].producer : -1;

				if (p >= 0 && indeg[p]) {
					cur = p;
					break;
				}
			}
		}
		free(seen);
		rc = fci_model_node_fail(m, FC_ERR_CORRUPT, cur, "graph has a cycle through this node");
		goto out;
	}

	nodes = malloc(((size_t)n + 1) * sizeof *nodes);
	np = malloc(((size_t)n + 1) * sizeof *np);
	if (!nodes || !np) {
		rc = fci_model_fail(m, FC_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (int k = 0; k < n; k++) {
		nodes[k] = m->nodes[order[k]];
		np[k] = m->np[order[k]];
		newidx[order[k]] = k;
	}
	for (int t = 0; t < m->n_tensors; t++)
		if (m->tensors[t].producer >= 0)
			m->tensors[t].producer = newidx[m->tensors[t].producer];
	free(m->nodes);
	free(m->np);
	m->nodes = nodes;
	m->np = np;
	nodes = NULL;
	np = NULL;
out:
	free(nodes);
	free(np);
	free(indeg);
	free(start);
	free(order);
	free(newidx);
	free(cons);
	free(h.v);
	return rc;
}

/* Sizes first: every count from the file is checked before the arrays it
 * sizes are allocated. */
static int build_alloc(fc_model *m, const Onnx__GraphProto *g)
{
	size_t cap;

	if (g->n_node > FC_MAX_NODES)
		return fci_model_fail(m, FC_ERR_OVERFLOW, "graph has %zu nodes (at most %d)", g->n_node,
				     FC_MAX_NODES);
	if (g->n_node == 0)
		return fci_model_fail(m, FC_ERR_CORRUPT, "graph has no nodes");
	cap = g->n_initializer + g->n_input;
	for (size_t i = 0; i < g->n_node; i++) {
		if (g->node[i]->n_output > FC_MAX_NODE_OUTPUTS || g->node[i]->n_input > FC_MAX_NODE_INPUTS ||
		    g->node[i]->n_attribute > FC_MAX_NODE_ATTRS)
			return fci_model_fail(m, FC_ERR_UNSUPPORTED,
					     "node '%s' (#%zu) has %zu inputs, %zu outputs and %zu "
					     "attributes (too many)",
					     fci_model_q(m, 0, g->node[i]->name), i, g->node[i]->n_input,
					     g->node[i]->n_output, g->node[i]->n_attribute);
		cap += g->node[i]->n_output;
	}
	if (cap > FC_MAX_TENSORS)
		return fci_model_fail(m, FC_ERR_OVERFLOW, "graph has %zu tensors (at most %d)", cap,
				     FC_MAX_TENSORS);
	m->cap_tensors = (int)cap;
	m->tensors = calloc(cap + 1, sizeof *m->tensors);
	m->fixed = calloc(cap + 1, 1);
	m->hash_seed = XXH3_64bits(&m, sizeof m) ^ (uint64_t)time(NULL) ^ (uint64_t)clock();
	m->hash_cap = 16;
	while (m->hash_cap < 2 * cap + 2)
		m->hash_cap *= 2;
	m->hash = calloc(m->hash_cap, sizeof *m->hash);
	m->nodes = calloc(g->n_node, sizeof *m->nodes);
	m->np = calloc(g->n_node, sizeof *m->np);
	if (!m->tensors || !m->fixed || !m->hash || !m->nodes || !m->np)
		return fci_model_fail(m, FC_ERR_NOMEM, "out of memory");
	return 0;
}

/* The initializers (constant tensors) and the one image input. */
static int build_tensors(fc_model *m, const Onnx__GraphProto *g)
{
	int rc = 0, input = -1;
	struct fci_copy *later = calloc(g->n_initializer + 1, sizeof *later);

	if (!later)
		return fci_model_fail(m, FC_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < g->n_initializer && !rc; i++) {
		const Onnx__TensorProto *tp = g->initializer[i];
		char what[128];
		int id;

		if (!tp->name || !tp->name[0]) {
			rc = fci_model_fail(m, FC_ERR_CORRUPT, "initializer %zu has no name", i);
			break;
		}
		if ((id = add_tensor(m, tp->name, "initializer")) < 0) {
			rc = FC_ERR_CORRUPT;
			break;
		}
		snprintf(what, sizeof what, "initializer '%s'", fci_model_q(m, 0, tp->name));
		rc = fci_onnx_tensor(m, tp, what, &m->tensors[id], &later[i]);
		m->fixed[id] = 1;
	}
	if (!rc)
		fci_onnx_copy_all(later, g->n_initializer);
	free(later);
	if (rc)
		return rc;
	for (size_t i = 0; i < g->n_input; i++) {
		const Onnx__ValueInfoProto *vi = g->input[i];

		if (!vi->name || !vi->name[0])
			return fci_model_fail(m, FC_ERR_CORRUPT, "graph input %zu has no name", i);
		if (find_tensor(m, vi->name) >= 0) {
			if (m->fixed[find_tensor(m, vi->name)])
				continue; /* an initializer listed as input (old exporters) */
			return fci_model_fail(m, FC_ERR_CORRUPT, "graph input '%s' is listed twice",
					     fci_model_q(m, 0, vi->name));
		}
		if (input >= 0)
			return fci_model_fail(m, FC_ERR_UNSUPPORTED,
					     "model has more than one input ('%s', '%s'); featcache "
					     "feeds one image tensor",
					     fci_model_q(m, 0, m->tensors[input].name),
					     fci_model_q(m, 1, vi->name));
		if ((input = add_tensor(m, vi->name, "graph input")) < 0)
			return FC_ERR_CORRUPT;
		if ((rc = read_input(m, vi, input)))
			return rc;
	}
	if (input < 0)
		return fci_model_fail(m, FC_ERR_CORRUPT, "model has no input besides its initializers");
	m->g.input = input;
	return 0;
}

/* Node i's op and its outputs (every output name becomes a tensor here, so
 * that inputs can refer to any of them afterwards, whatever the file order). */
static int build_node(fc_model *m, const Onnx__NodeProto *np, int i)
{
	fc_model_node *nd = &m->nodes[i];
	int op;
	int *outs;

	m->np[i].file_index = i;
	nd->op_type = keep_str(m, np->op_type ? np->op_type : "");
	if (np->name && np->name[0]) {
		nd->name = keep_str(m, np->name);
	} else {
		char buf[64];

		snprintf(buf, sizeof buf, "%.40s_%d", np->op_type ? np->op_type : "node", i);
		nd->name = keep_str(m, buf);
	}
	if (!nd->op_type || !nd->name)
		return fci_model_fail(m, FC_ERR_NOMEM, "out of memory");
	op = op_lookup(nd->op_type);
	if ((np->domain && np->domain[0] && strcmp(np->domain, "ai.onnx") != 0) || op < 0) {
		if (np->domain && np->domain[0])
			return fci_model_fail(m, FC_ERR_UNSUPPORTED, "node '%s': unsupported op '%s.%s'",
					     fci_model_q(m, 0, nd->name), fci_model_q(m, 1, np->domain),
					     fci_model_q(m, 2, nd->op_type));
		return fci_model_fail(m, FC_ERR_UNSUPPORTED, "node '%s': unsupported op '%s'",
				     fci_model_q(m, 0, nd->name), fci_model_q(m, 1, nd->op_type));
	}
	nd->op = op;
	if (np->n_output < 1 || (int)np->n_output > ops[op].max_out)
		return fci_model_node_fail(m, FC_ERR_CORRUPT, i, "has %zu outputs, expected 1 to %d",
					  np->n_output, ops[op].max_out);
	nd->n_in = (int)np->n_input;
	nd->n_out = (int)np->n_output;
	outs = fci_model_alloc(m, sizeof(int) * (size_t)nd->n_out, 0);
	m->np[i].in_raw = fci_model_alloc(m, sizeof(int) * ((size_t)nd->n_in + 1), 0);
	nd->in = fci_model_alloc(m, sizeof(int) * ((size_t)nd->n_in + 1), 0);
	if (!outs || !m->np[i].in_raw || !nd->in)
		return fci_model_fail(m, FC_ERR_NOMEM, "out of memory");
	for (int k = 0; k < nd->n_out; k++) {
		const char *on = np->output[k];
		int id;

		outs[k] = -1;
		if (!on[0]) {
			if (k == 0)
				return fci_model_node_fail(m, FC_ERR_CORRUPT, i, "its first output has no name");
			continue;
		}
		if ((id = add_tensor(m, on, "node output")) < 0)
			return fci_model_node_fail(m, FC_ERR_CORRUPT, i, "output '%s' is produced more than once",
						  fci_model_q(m, 0, on));
		m->tensors[id].producer = i;
		m->tensors[id].kind = FC_TENSOR_NONE;
		outs[k] = id;
	}
	nd->out = outs;
	return 0;
}

/* Node i's inputs, now that every name exists; then its attributes. */
static int link_node(fc_model *m, const Onnx__NodeProto *np, int i)
{
	fc_model_node *nd = &m->nodes[i];
	struct nctx c = { m, i, np };
	int need, rc;

	if ((need = check_arity(&c, nd->op, nd->n_in)) < 0)
		return need;
	for (int k = 0; k < nd->n_in; k++) {
		const char *in = np->input[k];
		int id = -1;

		if (in[0]) {
			id = find_tensor(m, in);
			if (id < 0)
				return fci_model_node_fail(m, FC_ERR_CORRUPT, i,
							  "input '%s' is not produced by any node, "
							  "initializer or graph input",
							  fci_model_q(m, 0, in));
		} else if (k < need) {
			return fci_model_node_fail(m, FC_ERR_CORRUPT, i, "input %d is missing", k + 1);
		}
		m->np[i].in_raw[k] = id;
		((int *)nd->in)[k] = id;
	}
	for (size_t x = 0; x < np->n_attribute; x++)
		for (size_t y = 0; y < x; y++)
			if (np->attribute[x]->name && np->attribute[y]->name &&
			    !strcmp(np->attribute[x]->name, np->attribute[y]->name))
				return fci_model_node_fail(m, FC_ERR_CORRUPT, i, "attribute '%s' is given twice",
							  fci_model_q(m, 0, np->attribute[x]->name));
	if ((rc = parse_attrs(&c, nd->op, &m->np[i].a)))
		return rc;
	if (nd->op == FC_OP_CONSTANT && (rc = parse_constant(&c, nd->out[0])))
		return rc;
	return 0;
}

/* The graph of the file: tensors, nodes in file order, the first graph
 * output; then topologically sorted. Shapes come later (model_infer.c). */
static int build(fc_model *m, const Onnx__ModelProto *mp)
{
	const Onnx__GraphProto *g = mp->graph;
	int rc;

	if ((rc = read_opset(m, mp)))
		return rc;
	if (!g)
		return fci_model_fail(m, FC_ERR_CORRUPT, "model has no graph");
	if ((rc = build_alloc(m, g)) || (rc = build_tensors(m, g)))
		return rc;
	m->n_nodes = (int)g->n_node;
	for (int i = 0; i < m->n_nodes; i++)
		if ((rc = build_node(m, g->node[i], i)))
			return rc;
	for (int i = 0; i < m->n_nodes; i++)
		if ((rc = link_node(m, g->node[i], i)))
			return rc;
	if (g->n_output == 0)
		return fci_model_fail(m, FC_ERR_CORRUPT, "graph has no outputs");
	for (size_t i = 0; i < g->n_output; i++) {
		const char *on = g->output[i]->name;

		if (!on || find_tensor(m, on) < 0)
			return fci_model_fail(m, FC_ERR_CORRUPT, "graph output '%s' is not produced by any node",
					     fci_model_q(m, 0, on));
		if (i == 0)
			m->out0 = find_tensor(m, on);
	}
	if ((rc = topo_sort(m)))
		return rc;
	m->g.nodes = m->nodes;
	m->g.n_nodes = m->n_nodes;
	m->g.tensors = m->tensors;
	m->g.n_tensors = m->n_tensors;
	m->g.opset = m->opset;
	return 0;
}

/* ---- public ---- */

int fc_model_open_mem(fc_model **out, const void *data, size_t len, char *errbuf, size_t errcap)
{
	fc_model *m;
	Onnx__ModelProto *mp = NULL;
	struct fci_budget b;
	int rc;

	*out = NULL;
	fci_errf(errbuf, errcap, 0, "%s", "");
	m = calloc(1, sizeof *m);
	if (!m)
		return fci_errf(errbuf, errcap, FC_ERR_NOMEM, "out of memory");
	m->g.cut_node = m->g.cut_tensor = m->g.default_node = m->g.default_tensor = -1;
	memset(&b, 0, sizeof b);
	rc = fci_onnx_unpack(m, &b, data, len, &mp);
	if (!rc)
		rc = build(m, mp);
	fci_onnx_unpacked_free(&b, mp);
	if (!rc)
		rc = fci_model_infer(m);
	if (!rc) {
		fci_model_find_default(m);
		if (m->g.default_node >= 0)
			rc = fci_model_apply_cut(m, m->g.default_node, m->g.default_tensor);
	}
	if (rc) {
		fci_errf(errbuf, errcap, rc, "%s", m->err[0] ? m->err : fc_strerror(rc));
		fc_model_free(m);
		return rc;
	}
	m->err[0] = 0;
	*out = m;
	return 0;
}

int fc_model_open(fc_model **out, const char *path, char *errbuf, size_t errcap)
{
	return fci_model_open_file(out, path, NULL, errbuf, errcap);
}

void fc_model_free(fc_model *m)
{
	if (!m)
		return;
	free(m->nodes);
	free(m->np);
	free(m->tensors);
	free(m->fixed);
	free(m->hash);
	blobs_free(m->fold_mem);
	blobs_free(m->load_mem);
	free(m);
}

const char *fc_model_errmsg(const fc_model *m)
{
	return m ? m->err : "";
}

const fc_model_graph *fc_model_get_graph(const fc_model *m)
{
	return &m->g;
}

int fc_model_set_input(fc_model *m, int64_t n, int64_t c, int64_t h, int64_t w)
{
	int64_t old[FC_MODEL_MAX_DIMS], want[4] = { n, c, h, w };
	int cut_nodes[FC_MODEL_MAX_CUTS], cut_tensors[FC_MODEL_MAX_CUTS], n_cuts = 0, rc;
	int pool = m->g.token_pool, prefix = m->g.prefix_tokens;
	char msg[FC_ERRLEN];

	if (m->g.cut_tensor >= 0) {
		n_cuts = m->g.n_cuts;
		memcpy(cut_nodes, m->g.cut_nodes, sizeof cut_nodes);
		memcpy(cut_tensors, m->g.cut_tensors, sizeof cut_tensors);
	}

	for (int i = 0; i < 4; i++) {
		if (want[i] < 0 || want[i] > FC_MAX_SIDE)
			return fci_model_fail(m, FC_ERR_INVALID, "input dim %d = %lld is out of range (1 to %lld)",
					     i, (long long)want[i], (long long)FC_MAX_SIDE);
		if (i > 0 && want[i] && m->in_ndim != 4)
			return fci_model_fail(m, FC_ERR_INVALID,
					     "the model's input is %d-D: only the batch can be set",
					     m->in_ndim);
	}
	memcpy(old, m->in_dims, sizeof old);
	for (int i = 0; i < 4 && i < m->in_ndim; i++)
		if (want[i])
			m->in_dims[i] = want[i];
	rc = fci_model_infer(m);
	if (!rc) {
		fci_model_find_default(m);
		if (n_cuts)
			rc = fci_model_apply_cuts(m, n_cuts, cut_nodes, cut_tensors, pool, prefix);
	}
	if (rc) {
		/* Put back the size that worked: inference is deterministic. */
		memcpy(msg, m->err, sizeof msg);
		memcpy(m->in_dims, old, sizeof old);
		if (fci_model_infer(m) == 0) {
			fci_model_find_default(m);
			if (n_cuts)
				fci_model_apply_cuts(m, n_cuts, cut_nodes, cut_tensors, pool, prefix);
		}
		if (want[0] && m->in_decl[0] > 0 && want[0] != m->in_decl[0])
			return fci_model_fail(m, rc, "%s (the model was exported for batches of %lld: export it with a "
					      "dynamic batch, or run it %lld at a time)", msg,
					      (long long)m->in_decl[0], (long long)m->in_decl[0]);
		memcpy(m->err, msg, sizeof msg);
		return rc;
	}
	m->err[0] = 0;
	return 0;
}
