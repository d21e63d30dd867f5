/*
 * export.c - a backbone cut at its embedding layer plus a trained head, as
 * one ONNX model (export.h says what the graph is).
 *
 * The model is loaded twice from the same bytes: by fc_model (model.h),
 * which validates it, sizes it and makes the cut exactly as `featcache
 * extract` does, and by protobuf-c into the generated structs, whose nodes
 * and initializers are then reused as they are, unknown fields included.
 * The new graph is a fresh GraphProto pointing at the kept originals and at
 * the nodes and tensors built here; protobuf-c packs it straight into an
 * fci_outfile, so a model is never held twice as bytes.
 *
 * Not here: anything about running models (engine.c) or checking them
 * (model.c); the copy keeps the source's nodes unchanged, so what fc_model
 * accepted is what the export contains.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "extract/model_impl.h"
#include "featcache/export.h"
#include "featcache/io.h"
#include "util/util.h"

#define BN_EPS 1e-5 /* BatchNorm1d's eps, as train.h documents the head */

enum { REF_INIT = 0, REF_INPUT, REF_NODE }; /* a name's owner, in lookup preference order */

/* Who gives a tensor name in the source graph. */
struct ref {
	const char *name;
	int kind;
	size_t idx; /* initializer, graph input or node index */
};

struct ex {
	const Onnx__GraphProto *sg;       /* the source graph */
	struct ref *refs;                 /* every name given, sorted by (name, kind) */
	size_t n_refs;
	char prefix[32];                  /* of every name the export adds, "featcache" */
	const char *image;                /* the source's image input */
	const char *image_as;             /* what the kept nodes read instead of it */
	const char *moved_input, *moved_embedding; /* new names of source tensors "input", "embedding" */

	Onnx__NodeProto **node;
	size_t n_node, cap_node;
	Onnx__TensorProto **init;
	size_t n_init, cap_init;
	Onnx__ValueInfoProto **input;
	size_t n_input;

	void **mem;                       /* every allocation, freed together */
	size_t n_mem, cap_mem;
	char *err;
	size_t errcap;
};

static int fail(struct ex *x, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(struct ex *x, int code, const char *fmt, ...)
{
	va_list ap;

	if (x->err && x->errcap) {
		va_start(ap, fmt);
		vsnprintf(x->err, x->errcap, fmt, ap);
		va_end(ap);
	}
	return code;
}

/* ---- memory: one list, freed at the end ---- */

static void *keep(struct ex *x, void *p)
{
	if (!p)
		return NULL;
	if (x->n_mem == x->cap_mem) {
		size_t cap = x->cap_mem ? 2 * x->cap_mem : 256;
		void **v = realloc(x->mem, cap * sizeof *v);

		if (!v) {
			free(p);
			return NULL;
		}
		x->mem = v;
		x->cap_mem = cap;
	}
	x->mem[x->n_mem++] = p;
	return p;
}

static void *zalloc(struct ex *x, size_t n, size_t size)
{
	if (size && n > SIZE_MAX / size)
		return NULL;
	return keep(x, calloc(n ? n : 1, size ? size : 1));
}

static char *str(struct ex *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static char *str(struct ex *x, const char *fmt, ...)
{
	va_list ap;
	int n;
	char *s;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || !(s = zalloc(x, (size_t)n + 1, 1)))
		return NULL;
	va_start(ap, fmt);
	vsnprintf(s, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return s;
}

/* Append p to a growing pointer array; 0 or FC_ERR_NOMEM. */
static int push(struct ex *x, void ***v, size_t *n, size_t *cap, void *p)
{
	if (!p)
		return FC_ERR_NOMEM;
	if (*n == *cap) {
		size_t c = *cap ? 2 * *cap : 64;
		void **nv = zalloc(x, c, sizeof *nv);

		if (!nv)
			return FC_ERR_NOMEM;
		if (*n)
			memcpy(nv, *v, *n * sizeof *nv);
		*v = nv;
		*cap = c;
	}
	(*v)[(*n)++] = p;
	return 0;
}

/* ---- names in the source graph ---- */

static int ref_cmp(const void *a, const void *b)
{
	const struct ref *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	return c ? c : x->kind - y->kind;
}

static int index_names(struct ex *x)
{
	const Onnx__GraphProto *g = x->sg;
	size_t n = g->n_initializer + g->n_input, k = 0;

	for (size_t i = 0; i < g->n_node; i++)
		n += g->node[i]->n_output;
	if (!(x->refs = zalloc(x, n, sizeof *x->refs)))
		return FC_ERR_NOMEM;
	for (size_t i = 0; i < g->n_initializer; i++)
		x->refs[k++] = (struct ref){ g->initializer[i]->name, REF_INIT, i };
	for (size_t i = 0; i < g->n_input; i++)
		x->refs[k++] = (struct ref){ g->input[i]->name, REF_INPUT, i };
	for (size_t i = 0; i < g->n_node; i++)
		for (size_t o = 0; o < g->node[i]->n_output; o++)
			if (g->node[i]->output[o][0])
				x->refs[k++] = (struct ref){ g->node[i]->output[o], REF_NODE, i };
	qsort(x->refs, k, sizeof *x->refs, ref_cmp);
	x->n_refs = k;
	return 0;
}

/* The owner of name: an initializer before a graph input of the same name
 * (old exporters list initializers as inputs too). NULL if none. */
static const struct ref *lookup(const struct ex *x, const char *name)
{
	size_t lo = 0, hi = x->n_refs;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (strcmp(x->refs[mid].name, name) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < x->n_refs && strcmp(x->refs[lo].name, name) == 0 ? &x->refs[lo] : NULL;
}

static int has_prefix(const char *s, const char *p, size_t len)
{
	return s && strncmp(s, p, len) == 0 && s[len] == '/';
}

/* "featcache", or "featcache_2", ... when the source already uses it. */
static int pick_prefix(struct ex *x)
{
	for (int k = 1; k < 1000; k++) {
		int taken = 0;
		size_t len;

		if (k == 1)
			snprintf(x->prefix, sizeof x->prefix, "featcache");
		else
			snprintf(x->prefix, sizeof x->prefix, "featcache_%d", k);
		len = strlen(x->prefix);
		for (size_t i = 0; i < x->n_refs && !taken; i++)
			taken = has_prefix(x->refs[i].name, x->prefix, len);
		for (size_t i = 0; i < x->sg->n_node && !taken; i++)
			taken = has_prefix(x->sg->node[i]->name, x->prefix, len);
		if (!taken)
			return 0;
	}
	return fail(x, FC_ERR_UNSUPPORTED, "the model uses every name prefix featcache would add");
}

/* A source tensor's name in the export. */
static const char *rename_tensor(const struct ex *x, const char *name)
{
	if (strcmp(name, x->image) == 0)
		return x->image_as;
	if (strcmp(name, "input") == 0)
		return x->moved_input;
	if (strcmp(name, "embedding") == 0)
		return x->moved_embedding;
	return name;
}

/* ---- the kept part of the backbone ---- */

/* A shallow copy of a source node with its tensors renamed; attributes and
 * unknown fields are shared with the source. (protobuf-c's structs hold
 * char *, but packing never writes through them: the casts are safe.) */
static Onnx__NodeProto *copy_node(struct ex *x, const Onnx__NodeProto *src)
{
	Onnx__NodeProto *n = zalloc(x, 1, sizeof *n);

	if (!n)
		return NULL;
	*n = *src;
	n->input = zalloc(x, src->n_input, sizeof *n->input);
	n->output = zalloc(x, src->n_output, sizeof *n->output);
	if (!n->input || !n->output)
		return NULL;
	for (size_t k = 0; k < src->n_input; k++)
		n->input[k] = src->input[k][0] ? (char *)rename_tensor(x, src->input[k]) : src->input[k];
	for (size_t k = 0; k < src->n_output; k++)
		n->output[k] = src->output[k][0] ? (char *)rename_tensor(x, src->output[k]) : src->output[k];
	return n;
}

/* Keep the nodes `cut` depends on, in depth-first post-order (a
 * topological order whatever the file's), and the initializers they read. */
static int keep_backbone(struct ex *x, const char *cut)
{
	const Onnx__GraphProto *g = x->sg;
	const struct ref *r = lookup(x, cut);
	unsigned char *seen = zalloc(x, g->n_node, 1), *used = zalloc(x, g->n_initializer, 1);
	size_t *stack = zalloc(x, g->n_node, sizeof *stack), *next = zalloc(x, g->n_node, sizeof *next);
	size_t sp = 0;
	int rc;

	if (!seen || !used || !stack || !next)
		return FC_ERR_NOMEM;
	if (!r || r->kind != REF_NODE) /* fc_model made this cut: cannot happen */
		return fail(x, FC_ERR_INTERNAL, "the cut tensor '%s' has no producer", cut);
	seen[r->idx] = 1;
	stack[sp++] = r->idx;
	while (sp) {
		size_t i = stack[sp - 1];
		const Onnx__NodeProto *np = g->node[i];

		if (next[i] < np->n_input) {
			const char *in = np->input[next[i]++];

			if (!in[0] || !(r = lookup(x, in)))
				continue; /* omitted optional input (fc_model checked the rest) */
			if (r->kind == REF_INIT)
				used[r->idx] = 1;
			else if (r->kind == REF_NODE && !seen[r->idx]) {
				seen[r->idx] = 1;
				stack[sp++] = r->idx;
			}
			continue;
		}
		sp--;
		if ((rc = push(x, (void ***)&x->node, &x->n_node, &x->cap_node, copy_node(x, np))))
			return rc;
	}
	for (size_t i = 0; i < g->n_initializer; i++) {
		Onnx__TensorProto *t;

		if (!used[i])
			continue;
		t = g->initializer[i];
		if (strcmp(t->name, "input") == 0 || strcmp(t->name, "embedding") == 0) {
			Onnx__TensorProto *c = zalloc(x, 1, sizeof *c);

			if (!c)
				return FC_ERR_NOMEM;
			*c = *t;
			c->name = (char *)rename_tensor(x, t->name);
			t = c;
		}
		if ((rc = push(x, (void ***)&x->init, &x->n_init, &x->cap_init, t)))
			return rc;
	}
	/* IR 3 wants every initializer among the graph inputs too: keep those
	 * entries for the initializers that stay. */
	for (size_t i = 0; i < g->n_input; i++) {
		const struct ref *ir = lookup(x, g->input[i]->name);

		if (ir && ir->kind == REF_INIT && used[ir->idx]) {
			Onnx__ValueInfoProto *v = zalloc(x, 1, sizeof *v);

			if (!v)
				return FC_ERR_NOMEM;
			*v = *g->input[i];
			v->name = (char *)rename_tensor(x, g->input[i]->name);
			x->input[x->n_input++] = v;
		}
	}
	return 0;
}

/* ---- what the export adds ---- */

static Onnx__NodeProto *add_node(struct ex *x, const char *op, const char *name, const char *in0,
				 const char *in1, const char *in2, const char *out)
{
	const char *ins[3] = { in0, in1, in2 };
	Onnx__NodeProto *n = name && out ? zalloc(x, 1, sizeof *n) : NULL;

	if (!n)
		return NULL;
	onnx__node_proto__init(n);
	n->op_type = str(x, "%s", op);
	n->name = str(x, "%s/%s", x->prefix, name);
	n->input = zalloc(x, 3, sizeof *n->input);
	n->output = zalloc(x, 1, sizeof *n->output);
	n->attribute = zalloc(x, 2, sizeof *n->attribute);
	if (!n->op_type || !n->name || !n->input || !n->output || !n->attribute)
		return NULL;
	for (int k = 0; k < 3 && ins[k]; k++)
		if (!(n->input[n->n_input++] = str(x, "%s", ins[k])))
			return NULL;
	if (!(n->output[0] = str(x, "%s", out)))
		return NULL;
	n->n_output = 1;
	if (push(x, (void ***)&x->node, &x->n_node, &x->cap_node, n))
		return NULL;
	return n;
}

/* An INT attribute (every one the export sets is); n has room for two. */
static int add_attr(struct ex *x, Onnx__NodeProto *n, const char *name, int64_t v)
{
	Onnx__AttributeProto *a = n ? zalloc(x, 1, sizeof *a) : NULL;

	if (!a)
		return FC_ERR_NOMEM;
	onnx__attribute_proto__init(a);
	if (!(a->name = str(x, "%s", name)))
		return FC_ERR_NOMEM;
	a->has_type = 1;
	a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
	a->has_i = 1;
	a->i = v;
	n->attribute[n->n_attribute++] = a;
	return 0;
}

/* A float32 initializer in raw_data, little-endian whatever the host. */
static int add_f32(struct ex *x, const char *name, int ndim, const int64_t *dims, const double *v)
{
	Onnx__TensorProto *t = zalloc(x, 1, sizeof *t);
	size_t n = 1;
	uint8_t *raw;

	if (!t)
		return FC_ERR_NOMEM;
	onnx__tensor_proto__init(t);
	for (int i = 0; i < ndim; i++)
		n *= (size_t)dims[i];
	t->name = str(x, "%s", name);
	t->dims = zalloc(x, (size_t)ndim, sizeof *t->dims);
	raw = zalloc(x, n, 4);
	if (!t->name || !t->dims || !raw)
		return FC_ERR_NOMEM;
	memcpy(t->dims, dims, (size_t)ndim * sizeof *dims);
	t->n_dims = (size_t)ndim;
	t->has_data_type = 1;
	t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
	for (size_t i = 0; i < n; i++) {
		float f = (float)v[i];
		uint32_t b;

		memcpy(&b, &f, 4);
		for (int k = 0; k < 4; k++)
			raw[4 * i + (size_t)k] = (uint8_t)(b >> (8 * k));
	}
	t->has_raw_data = 1;
	t->raw_data.data = raw;
	t->raw_data.len = 4 * n;
	return push(x, (void ***)&x->init, &x->n_init, &x->cap_init, t);
}

/* A tensor's type: elem, dims; a negative dim is the dynamic "batch". */
static Onnx__ValueInfoProto *value_info(struct ex *x, const char *name, int elem, int ndim,
					const int64_t *dims)
{
	Onnx__ValueInfoProto *v = zalloc(x, 1, sizeof *v);
	Onnx__TypeProto *tp = zalloc(x, 1, sizeof *tp);
	Onnx__TypeProto__Tensor *tt = zalloc(x, 1, sizeof *tt);
	Onnx__TensorShapeProto *sh = zalloc(x, 1, sizeof *sh);

	if (!v || !tp || !tt || !sh)
		return NULL;
	onnx__value_info_proto__init(v);
	onnx__type_proto__init(tp);
	onnx__type_proto__tensor__init(tt);
	onnx__tensor_shape_proto__init(sh);
	sh->dim = zalloc(x, (size_t)ndim, sizeof *sh->dim);
	if (!sh->dim || !(v->name = str(x, "%s", name)))
		return NULL;
	for (int i = 0; i < ndim; i++) {
		Onnx__TensorShapeProto__Dimension *d = zalloc(x, 1, sizeof *d);

		if (!d)
			return NULL;
		onnx__tensor_shape_proto__dimension__init(d);
		if (dims[i] < 0) {
			if (!(d->dim_param = str(x, "batch")))
				return NULL;
		} else {
			d->has_dim_value = 1;
			d->dim_value = dims[i];
		}
		sh->dim[sh->n_dim++] = d;
	}
	tt->has_elem_type = 1;
	tt->elem_type = elem;
	tt->shape = sh;
	tp->tensor_type = tt;
	v->type = tp;
	return v;
}

/* The head's state-dict tensor called name, or NULL. */
static const fc_tensor *head_tensor(const fc_tensor *t, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(t[i].name, name) == 0)
			return &t[i];
	return NULL;
}

/* Gemm (+ Relu) per head layer, BatchNorm1d folded into the Gemm; reads
 * `from`, writes the last layer's output to `to`. */
static int add_head(struct ex *x, fc_head *head, const char *from, const char *to)
{
	fc_head_config hc = fc_head_get_config(head);
	size_t nt = fc_head_tensors(head, NULL, 0);
	fc_tensor *t = zalloc(x, nt, sizeof *t);
	const char *cur = from;
	int rc;

	if (!t)
		return FC_ERR_NOMEM;
	fc_head_tensors(head, t, nt);
	for (uint32_t i = 0; i < hc.layers; i++) {
		char nm[5][48];
		const fc_tensor *w, *gam, *bet, *mean, *var;
		const char *wname, *bname, *out;
		int last = i + 1 == hc.layers;
		double *wf, *bf;
		size_t o, in;
		Onnx__NodeProto *n;

		snprintf(nm[0], sizeof nm[0], "head_layers.%u.weight", 3 * i);
		snprintf(nm[1], sizeof nm[1], "head_layers.%u.weight", 3 * i + 1);
		snprintf(nm[2], sizeof nm[2], "head_layers.%u.bias", 3 * i + 1);
		snprintf(nm[3], sizeof nm[3], "head_layers.%u.running_mean", 3 * i + 1);
		snprintf(nm[4], sizeof nm[4], "head_layers.%u.running_var", 3 * i + 1);
		w = head_tensor(t, nt, nm[0]);
		gam = head_tensor(t, nt, nm[1]);
		bet = head_tensor(t, nt, nm[2]);
		mean = head_tensor(t, nt, nm[3]);
		var = head_tensor(t, nt, nm[4]);
		if (!w || !gam || !bet || !mean || !var || w->ndim != 2)
			return fail(x, FC_ERR_INTERNAL, "head layer %u lacks its tensors", i);
		o = (size_t)w->shape[0];
		in = (size_t)w->shape[1];
		wf = zalloc(x, o * in, sizeof *wf);
		bf = zalloc(x, o, sizeof *bf);
		if (!wf || !bf)
			return FC_ERR_NOMEM;
		/* eval BatchNorm1d of z = x W^T: (z - mean) * s + beta, s = gamma / sqrt(var + eps) */
		for (size_t c = 0; c < o; c++) {
			double s = gam->data[c] / sqrt((double)var->data[c] + BN_EPS);

			for (size_t j = 0; j < in; j++)
				wf[c * in + j] = w->data[c * in + j] * s;
			bf[c] = bet->data[c] - mean->data[c] * s;
		}
		wname = str(x, "%s/head.%u.weight", x->prefix, i);
		bname = str(x, "%s/head.%u.bias", x->prefix, i);
		out = last ? to : str(x, "%s/head.%u/Gemm_output_0", x->prefix, i);
		if (!wname || !bname || !out)
			return FC_ERR_NOMEM;
		if ((rc = add_f32(x, wname, 2, (int64_t[]){ (int64_t)o, (int64_t)in }, wf)) ||
		    (rc = add_f32(x, bname, 1, (int64_t[]){ (int64_t)o }, bf)))
			return rc;
		n = add_node(x, "Gemm", str(x, "head.%u/Gemm", i), cur, wname, bname, out);
		if ((rc = add_attr(x, n, "transB", 1)))
			return rc;
		cur = out;
		if (!last) {
			const char *r = str(x, "%s/head.%u/Relu_output_0", x->prefix, i);

			if (!r || !add_node(x, "Relu", str(x, "head.%u/Relu", i), cur, NULL, NULL, r))
				return FC_ERR_NOMEM;
			cur = r;
		}
	}
	return 0;
}

/* ---- opsets ---- */

/* Ops featcache reads whose inputs or attributes changed meaning at an
 * opset in 8..18 (the other version bumps only add types or defaults):
 * a node written for an older opset is misread under a newer one. */
static const struct {
	const char *op;
	int since;
} op_breaks[] = {
	{ "BatchNormalization", 9 }, /* `spatial` gone */
	{ "Slice", 10 },             /* starts/ends become inputs */
	{ "Pad", 11 },               /* pads become an input */
	{ "Clip", 11 },              /* min/max become inputs */
	{ "Dropout", 12 },           /* ratio becomes an input */
	{ "Squeeze", 13 },           /* axes become an input */
	{ "Unsqueeze", 13 },
	{ "ReduceMean", 18 },        /* axes become an input */
};

/* The oldest IR version each ai.onnx opset 7..18 may be stored with
 * (onnx/docs/Versioning.md). */
static const int64_t ir_min[] = { 3, 3, 4, 5, 6, 7, 7, 7, 8, 8, 8, 8 };

static int check_opset(struct ex *x, int64_t from, int64_t to)
{
	if (to < from)
		return fail(x, FC_ERR_INVALID, "cannot lower the opset from %lld to %lld", (long long)from,
			    (long long)to);
	if (to > 18)
		return fail(x, FC_ERR_INVALID, "opset %lld is beyond what featcache reads (7 to 18)",
			    (long long)to);
	for (size_t i = 0; i < x->n_node; i++) {
		const Onnx__NodeProto *n = x->node[i];

		if (n->domain && n->domain[0] && strcmp(n->domain, "ai.onnx") != 0)
			continue;
		for (size_t k = 0; k < sizeof op_breaks / sizeof op_breaks[0]; k++)
			if (strcmp(n->op_type, op_breaks[k].op) == 0 && from < op_breaks[k].since &&
			    to >= op_breaks[k].since)
				return fail(x, FC_ERR_INVALID,
					    "cannot raise the opset from %lld to %lld: node '%s' (%s) "
					    "changed meaning in opset %d",
					    (long long)from, (long long)to, n->name ? n->name : "", n->op_type,
					    op_breaks[k].since);
	}
	return 0;
}

/* ---- files ---- */

static int read_model(struct ex *x, const char *path, uint8_t **data, size_t *len)
{
	FILE *f = fopen(path, "rb");
	struct stat st;
	size_t got = 0;
	int e;

	*data = NULL;
	if (!f) {
		e = errno;
		return fail(x, e == ENOENT ? FC_ERR_NOT_FOUND : FC_ERR_IO, "cannot open model '%s': %s", path,
			    strerror(e));
	}
	if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > ((uint64_t)2 << 30)) {
		fclose(f);
		return fail(x, FC_ERR_IO, "cannot open model '%s': not a regular file of at most 2 GiB", path);
	}
	*len = (size_t)st.st_size;
	if (!(*data = malloc(*len ? *len : 1))) {
		fclose(f);
		return fail(x, FC_ERR_NOMEM, "out of memory for model '%s'", path);
	}
	while (got < *len) {
		size_t n = fread(*data + got, 1, *len - got, f);

		if (n == 0)
			break;
		got += n;
	}
	e = ferror(f) ? errno : 0;
	fclose(f);
	if (got != *len)
		return fail(x, FC_ERR_IO, "cannot read model '%s': %s", path,
			    e ? strerror(e) : "file changed size while being read");
	return 0;
}

/* protobuf-c's output sink, writing into an fci_outfile. */
struct sink {
	ProtobufCBuffer base;
	fci_outfile *f;
	int rc;
};

static void sink_append(ProtobufCBuffer *b, size_t len, const uint8_t *data)
{
	struct sink *s = (struct sink *)b;

	if (!s->rc)
		s->rc = fci_outfile_write(s->f, data, len);
}

static int write_model(struct ex *x, const Onnx__ModelProto *mp, const char *path)
{
	char why[FC_ERRLEN];
	struct sink s = { { sink_append }, NULL, 0 };
	int rc;

	if ((rc = fci_outfile_open(&s.f, path, why, sizeof why)))
		return fail(x, rc, "cannot write '%s': %s", path, why);
	onnx__model_proto__pack_to_buffer(mp, &s.base);
	rc = s.rc ? s.rc : fci_outfile_commit(s.f);
	if (rc)
		fail(x, rc, "cannot write '%s': %s", path, fci_outfile_errmsg(s.f));
	fci_outfile_free(s.f);
	return rc;
}

/* ---- the export ---- */

static const char *base_name(const char *path)
{
	const char *s = strrchr(path, '/');

	return s ? s + 1 : path;
}

int fc_export_onnx(const char *model_path, const fc_export_opts *opts, fc_head *head, const char *out_path,
		   char *err, size_t errcap)
{
	struct ex x = { .err = err, .errcap = errcap };
	char why[FC_ERRLEN], shape[64];
	const char *head_name = opts && opts->head_name ? opts->head_name : NULL;
	uint8_t *bytes = NULL;
	size_t len = 0;
	fc_model *m = NULL;
	Onnx__ModelProto *src = NULL, model;
	Onnx__GraphProto graph;
	Onnx__OperatorSetIdProto **opsets = NULL;
	Onnx__ValueInfoProto *outputs[1];
	Onnx__StringStringEntryProto *meta[4];
	const fc_model_graph *g;
	const fc_model_tensor *in, *cut;
	fc_head_config hc;
	int64_t in_dims[FC_MODEL_MAX_DIMS], src_opset = 0, want_opset;
	const char *cur;
	int rc, elem = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;

	if (err && errcap)
		err[0] = 0;
	if (!model_path || !opts || !head || !out_path || opts->size < 0 || opts->size > 65536 || opts->opset < 0)
		return fail(&x, FC_ERR_INVALID, "bad arguments to fc_export_onnx");

	/* The cut, as `featcache extract` makes it. */
	if ((rc = read_model(&x, model_path, &bytes, &len)))
		goto out;
	if ((rc = fc_model_open_mem(&m, bytes, len, why, sizeof why))) {
		fail(&x, rc, "cannot load model '%s': %s", model_path, why);
		goto out;
	}
	if (opts->size && (rc = fc_model_set_input(m, 1, 3, opts->size, opts->size))) {
		fail(&x, rc, "model '%s' does not take 3 x %d x %d images: %s", model_path, opts->size, opts->size,
		     fc_model_errmsg(m));
		goto out;
	}
	if ((rc = fc_model_cut(m, opts->layer))) {
		fail(&x, rc, "cannot cut model '%s' at %s%s%s: %s", model_path, opts->layer ? "'" : "",
		     opts->layer ? opts->layer : "its default layer", opts->layer ? "'" : "", fc_model_errmsg(m));
		goto out;
	}
	g = fc_model_get_graph(m);
	in = &g->tensors[g->input];
	cut = &g->tensors[g->cut_tensor];
	hc = fc_head_get_config(head);
	if ((int64_t)hc.in_dim != g->embed_dim) {
		rc = fail(&x, FC_ERR_INVALID, "%s%s%s takes %u-d input, the model's layer '%s' gives %lld-d",
			  head_name ? "head '" : "the head", head_name ? head_name : "", head_name ? "'" : "",
			  hc.in_dim, g->nodes[g->cut_node].name, (long long)g->embed_dim);
		goto out;
	}

	/* The same bytes as protobuf-c structs; fc_model has checked them. */
	if (!(src = onnx__model_proto__unpack(NULL, len, bytes)) || !src->graph) {
		rc = fail(&x, FC_ERR_NOMEM, "out of memory for model '%s'", model_path);
		goto out;
	}
	x.sg = src->graph;
	for (size_t i = 0; i < x.sg->n_input; i++) {
		const Onnx__ValueInfoProto *v = x.sg->input[i];

		if (strcmp(v->name, in->name) == 0 && v->type && v->type->tensor_type &&
		    v->type->tensor_type->has_elem_type && v->type->tensor_type->elem_type)
			elem = v->type->tensor_type->elem_type;
	}
	for (size_t i = 0; i < src->n_opset_import; i++)
		if (!src->opset_import[i]->domain || !src->opset_import[i]->domain[0] ||
		    !strcmp(src->opset_import[i]->domain, "ai.onnx"))
			src_opset = src->opset_import[i]->version;
	if ((rc = index_names(&x)) || (rc = pick_prefix(&x)))
		goto out;
	x.image = in->name;
	x.image_as = elem == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT ? "input" : str(&x, "%s/input_cast", x.prefix);
	x.moved_input = str(&x, "%s/source/input", x.prefix);
	x.moved_embedding = str(&x, "%s/source/embedding", x.prefix);
	x.input = zalloc(&x, x.sg->n_input + 1, sizeof *x.input);
	if (!x.image_as || !x.moved_input || !x.moved_embedding || !x.input) {
		rc = FC_ERR_NOMEM;
		goto out;
	}
	memcpy(in_dims, in->dims, sizeof in_dims);
	in_dims[0] = -1;
	if (!(x.input[x.n_input++] = value_info(&x, "input", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, in->ndim,
						 in_dims))) {
		rc = FC_ERR_NOMEM;
		goto out;
	}
	if (elem != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT &&
	    (rc = add_attr(&x, add_node(&x, "Cast", "input/Cast", "input", NULL, NULL, x.image_as), "to", elem)))
		goto out;
	if ((rc = keep_backbone(&x, cut->name)))
		goto out;

	/* The cut as featcache's vector: float32, pooled, flattened. */
	cur = rename_tensor(&x, cut->name);
	if (elem != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT) {
		const char *c = str(&x, "%s/cut/Cast_output_0", x.prefix);

		if ((rc = add_attr(&x, add_node(&x, "Cast", "cut/Cast", cur, NULL, NULL, c), "to",
				   ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT)))
			goto out;
		cur = c;
	}
	if (g->pool) {
		const char *p = str(&x, "%s/pool/GlobalAveragePool_output_0", x.prefix);

		if (!p || !add_node(&x, "GlobalAveragePool", "pool/GlobalAveragePool", cur, NULL, NULL, p)) {
			rc = FC_ERR_NOMEM;
			goto out;
		}
		cur = p;
	}
	if (g->pool || cut->ndim != 2) {
		const char *f = str(&x, "%s/pool/Flatten_output_0", x.prefix);

		if ((rc = add_attr(&x, add_node(&x, "Flatten", "pool/Flatten", cur, NULL, NULL, f), "axis", 1)))
			goto out;
		cur = f;
	}
	if (opts->normalize) {
		const char *h = str(&x, "%s/head/output", x.prefix);
		Onnx__NodeProto *n;

		if (!h) {
			rc = FC_ERR_NOMEM;
			goto out;
		}
		if ((rc = add_head(&x, head, cur, h)))
			goto out;
		n = add_node(&x, "LpNormalization", "normalize/LpNormalization", h, NULL, NULL, "embedding");
		if ((rc = add_attr(&x, n, "axis", 1)) || (rc = add_attr(&x, n, "p", 2)))
			goto out;
	} else if ((rc = add_head(&x, head, cur, "embedding"))) {
		goto out;
	}

	/* The opset: the model's, or raised on request. */
	want_opset = opts->opset ? opts->opset : src_opset;
	if ((rc = check_opset(&x, src_opset, want_opset)))
		goto out;
	if (!(opsets = zalloc(&x, src->n_opset_import, sizeof *opsets))) {
		rc = FC_ERR_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < src->n_opset_import; i++) {
		opsets[i] = src->opset_import[i];
		if (!opsets[i]->domain || !opsets[i]->domain[0] || !strcmp(opsets[i]->domain, "ai.onnx")) {
			if (!(opsets[i] = zalloc(&x, 1, sizeof *opsets[i]))) {
				rc = FC_ERR_NOMEM;
				goto out;
			}
			*opsets[i] = *src->opset_import[i];
			opsets[i]->version = want_opset;
		}
	}

	onnx__graph_proto__init(&graph);
	graph.name = x.sg->name;
	graph.n_node = x.n_node;
	graph.node = x.node;
	graph.n_initializer = x.n_init;
	graph.initializer = x.init;
	graph.n_input = x.n_input;
	graph.input = x.input;
	outputs[0] = value_info(&x, "embedding", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 2,
				(int64_t[]){ -1, (int64_t)hc.out_dim });
	graph.n_output = 1;
	graph.output = outputs;
	onnx__model_proto__init(&model);
	model.has_ir_version = 1;
	model.ir_version = src->has_ir_version ? src->ir_version : 0;
	if (want_opset >= 7 && model.ir_version < ir_min[want_opset - 7])
		model.ir_version = ir_min[want_opset - 7];
	model.n_opset_import = src->n_opset_import;
	model.opset_import = opsets;
	model.producer_name = str(&x, "featcache");
	model.producer_version = str(&x, "%s", FC_VERSION_STRING);
	fci_model_shape_str(shape, sizeof shape, in->ndim - 1, in->dims + 1);
	model.doc_string = str(&x,
			       "%s cut at '%s' (%lld-d%s) at input %s, then a projection head (%u layers, "
			       "%u -> %u)%s; exported by featcache %s",
			       base_name(model_path), g->nodes[g->cut_node].name, (long long)g->embed_dim,
			       g->pool ? ", average-pooled" : "", shape, hc.layers, hc.in_dim, hc.out_dim,
			       opts->normalize ? ", L2-normalised" : "", FC_VERSION_STRING);
	{
		const char *kv[][2] = {
			{ "featcache.source_model", base_name(model_path) },
			{ "featcache.layer", g->nodes[g->cut_node].name },
			{ "featcache.input", shape },
			{ "featcache.normalize", opts->normalize ? "true" : "false" },
		};

		for (size_t i = 0; i < sizeof meta / sizeof meta[0]; i++) {
			if (!(meta[i] = zalloc(&x, 1, sizeof *meta[i]))) {
				rc = FC_ERR_NOMEM;
				goto out;
			}
			onnx__string_string_entry_proto__init(meta[i]);
			meta[i]->key = str(&x, "%s", kv[i][0]);
			meta[i]->value = str(&x, "%s", kv[i][1]);
			if (!meta[i]->key || !meta[i]->value) {
				rc = FC_ERR_NOMEM;
				goto out;
			}
		}
		model.n_metadata_props = sizeof meta / sizeof meta[0];
		model.metadata_props = meta;
	}
	model.graph = &graph;
	if (!outputs[0] || !model.producer_name || !model.producer_version || !model.doc_string) {
		rc = FC_ERR_NOMEM;
		goto out;
	}
	rc = write_model(&x, &model, out_path);
out:
	if (rc == FC_ERR_NOMEM && (!err || !err[0]))
		fail(&x, rc, "out of memory");
	if (src)
		onnx__model_proto__free_unpacked(src, NULL);
	fc_model_free(m);
	free(bytes);
	for (size_t i = 0; i < x.n_mem; i++)
		free(x.mem[i]);
	free(x.mem);
	return rc;
}
