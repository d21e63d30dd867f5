/*
 * export.c - a backbone cut at its embedding layer plus a trained head, as
 * one ONNX model (export.h says what the graph is).
 *
 * The model is loaded twice from the same bytes: by fc_model (model.h),
 * which validates it, sizes it and makes the cut exactly as `featcache
 * extract` does, and by protobuf-c (io/onnx.h) into the generated structs,
 * whose nodes and initializers are then reused as they are, unknown fields
 * included. The new model is built with io's ONNX writer, pointing at the
 * kept originals and at the nodes and tensors made here, and streamed into
 * an atomic output file, so a model is never held twice as bytes. The head
 * gives its layers with BatchNorm already folded in (fc_head_folded_layer).
 *
 * The phases, one function each: open_source (read, load, cut, check),
 * start_graph (names, the image input), keep_backbone, add_tail (pooling,
 * head, normalisation), finish_model (opset, metadata), then the write.
 *
 * Not here: anything about running models (engine.c) or checking them
 * (model.c); the copy keeps the source's nodes unchanged, so what fc_model
 * accepted is what the export contains.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "featcache/export.h"
#include "featcache/model.h"
#include "io/onnx.h"
#include "util/util.h"

#define MAX_MODEL ((uint64_t)2 << 30) /* protobuf's own limit on a message */
#define FLOAT ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT

enum { REF_INIT = 0, REF_INPUT, REF_NODE }; /* a name's owner, in lookup preference order */

/* Who gives a tensor name in the source graph. */
struct ref {
	const char *name;
	int kind;
	size_t idx; /* initializer, graph input or node index */
};

struct ex {
	fci_onnx b;                       /* the model being written */
	const char *model_path;
	const fc_export_opts *opts;
	const fc_head *head;

	/* the source: its bytes, as fc_model and as protobuf-c structs */
	uint8_t *bytes;
	size_t cap, len;
	fc_model *m;
	const fc_model_graph *g;
	const fc_model_tensor *in, *cut;  /* its image input and the cut tensor */
	Onnx__ModelProto *src;
	const Onnx__GraphProto *sg;
	int elem;                         /* the image input's element type */
	int64_t src_opset;                /* its ai.onnx opset */

	struct ref *refs;                 /* every name given, sorted by (name, kind) */
	size_t n_refs;
	char prefix[32];                  /* of every name the export adds, "featcache" */
	const char *image;                /* the source's image input */
	const char *image_as;             /* what the kept nodes read instead of it */
	const char *moved_input, *moved_embedding; /* new names of source tensors "input", "embedding" */

	char *err;
	size_t errcap;
};

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
	if (!(x->refs = fci_onnx_alloc(&x->b, n, sizeof *x->refs)))
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
	return fci_errf(x->err, x->errcap, FC_ERR_UNSUPPORTED,
			"the model uses every name prefix featcache would add");
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

/* ---- reading the source ---- */

/* The source's ai.onnx opset and image element type (FLOAT unless it says
 * otherwise). */
static void source_types(struct ex *x)
{
	const Onnx__ModelProto *src = x->src;

	x->elem = FLOAT;
	for (size_t i = 0; i < x->sg->n_input; i++) {
		const Onnx__ValueInfoProto *v = x->sg->input[i];

		if (strcmp(v->name, x->in->name) == 0 && v->type && v->type->tensor_type &&
		    v->type->tensor_type->has_elem_type && v->type->tensor_type->elem_type)
			x->elem = v->type->tensor_type->elem_type;
	}
	for (size_t i = 0; i < src->n_opset_import; i++)
		if (!src->opset_import[i]->domain || !src->opset_import[i]->domain[0] ||
		    !strcmp(src->opset_import[i]->domain, "ai.onnx"))
			x->src_opset = src->opset_import[i]->version;
}

/* Read the model, make the cut as `featcache extract` makes it, check the
 * head fits it, and decode the same bytes into protobuf-c structs. */
static int open_source(struct ex *x)
{
	const char *path = x->model_path, *layer = x->opts->layer, *head_name = x->opts->head_name;
	fc_head_config hc = fc_head_get_config(x->head);
	char why[FC_ERRLEN];
	int rc, size = x->opts->size;

	if ((rc = fci_read_file(path, MAX_MODEL, &x->bytes, &x->cap, &x->len, why, sizeof why)))
		return fci_errf(x->err, x->errcap, rc, "cannot read model '%s': %s", path, why);
	if ((rc = fc_model_open_mem(&x->m, x->bytes, x->len, why, sizeof why)))
		return fci_errf(x->err, x->errcap, rc, "cannot load model '%s': %s", path, why);
	if (size && (rc = fc_model_set_input(x->m, 1, 3, size, size)))
		return fci_errf(x->err, x->errcap, rc, "model '%s' does not take 3 x %d x %d images: %s", path,
				size, size, fc_model_errmsg(x->m));
	if ((rc = fc_model_cut_tokens(x->m, layer, x->opts->pool, x->opts->pool ? x->opts->prefix_tokens : 1)))
		return fci_errf(x->err, x->errcap, rc, "cannot cut model '%s' at %s%s%s: %s", path,
				layer ? "'" : "", layer ? layer : "its default layer", layer ? "'" : "",
				fc_model_errmsg(x->m));
	if ((rc = fc_model_check_pooling(x->m)))
		return fci_errf(x->err, x->errcap, rc, "cannot export model '%s': %s", path, fc_model_errmsg(x->m));
	x->g = fc_model_get_graph(x->m);
	if (x->g->n_cuts > 1)
		return fci_errf(x->err, x->errcap, FC_ERR_UNSUPPORTED,
				"cannot export model '%s' cut at %d layers: export takes one", path, x->g->n_cuts);
	x->in = &x->g->tensors[x->g->input];
	x->cut = &x->g->tensors[x->g->cut_tensor];
	if ((int64_t)hc.in_dim != x->g->embed_dim)
		return fci_errf(x->err, x->errcap, FC_ERR_INVALID,
				"%s%s%s takes %u-d input, the model's layer '%s' gives %lld-d",
				head_name ? "head '" : "the head", head_name ? head_name : "", head_name ? "'" : "",
				hc.in_dim, x->g->nodes[x->g->cut_node].name, (long long)x->g->embed_dim);

	/* fc_model has checked these bytes: a failure here is memory */
	if (!(x->src = fci_onnx_decode(x->bytes, x->len)) || !x->src->graph)
		return fci_errf(x->err, x->errcap, FC_ERR_NOMEM, "out of memory for model '%s'", path);
	x->sg = x->src->graph;
	source_types(x);
	return 0;
}

/* ---- what the export adds ---- */

/* A node of the export named prefix/name, with up to three inputs (NULL
 * ends them) and one output; NULL when out of memory. */
static Onnx__NodeProto *add_node(struct ex *x, const char *op, const char *name, const char *in0,
				 const char *in1, const char *in2, const char *out)
{
	const char *in[3] = { in0, in1, in2 };
	const char *full = name && out ? fci_onnx_strf(&x->b, "%s/%s", x->prefix, name) : NULL;
	size_t n_in = 0;

	while (n_in < 3 && in[n_in])
		n_in++;
	return full ? fci_onnx_node(&x->b, op, full, in, n_in, &out, 1) : NULL;
}

/* The names, the graph input "input" (dynamic batch) and, for a model
 * whose image is not float32, the Cast the kept nodes read instead. */
static int start_graph(struct ex *x)
{
	int64_t dims[FC_MODEL_MAX_DIMS];
	int rc;

	if ((rc = index_names(x)) || (rc = pick_prefix(x)))
		return rc;
	x->image = x->in->name;
	x->image_as = x->elem == FLOAT ? "input" : fci_onnx_strf(&x->b, "%s/input_cast", x->prefix);
	x->moved_input = fci_onnx_strf(&x->b, "%s/source/input", x->prefix);
	x->moved_embedding = fci_onnx_strf(&x->b, "%s/source/embedding", x->prefix);
	if (!x->image_as || !x->moved_input || !x->moved_embedding)
		return FC_ERR_NOMEM;
	memcpy(dims, x->in->dims, sizeof dims);
	dims[0] = -1;
	if ((rc = fci_onnx_add_input(&x->b, fci_onnx_new_value_info(&x->b, "input", FLOAT, x->in->ndim, dims, "batch"))))
		return rc;
	if (x->elem != FLOAT)
		return fci_onnx_attr_int(&x->b, add_node(x, "Cast", "input/Cast", "input", NULL, NULL, x->image_as),
					 "to", x->elem);
	return 0;
}

/* ---- the kept part of the backbone ---- */

/* A shallow copy of a source node with its tensors renamed; attributes and
 * unknown fields are shared with the source. (protobuf-c's structs hold
 * char *, but packing never writes through them: the casts are safe.) */
static Onnx__NodeProto *copy_node(struct ex *x, const Onnx__NodeProto *src)
{
	Onnx__NodeProto *n = fci_onnx_alloc(&x->b, 1, sizeof *n);

	if (!n)
		return NULL;
	*n = *src;
	n->input = fci_onnx_alloc(&x->b, src->n_input, sizeof *n->input);
	n->output = fci_onnx_alloc(&x->b, src->n_output, sizeof *n->output);
	if (!n->input || !n->output)
		return NULL;
	for (size_t k = 0; k < src->n_input; k++)
		n->input[k] = src->input[k][0] ? (char *)rename_tensor(x, src->input[k]) : src->input[k];
	for (size_t k = 0; k < src->n_output; k++)
		n->output[k] = src->output[k][0] ? (char *)rename_tensor(x, src->output[k]) : src->output[k];
	return n;
}

/* The initializers the kept nodes read (used[i]), renamed where needed,
 * and, as IR 3 wants, their entries among the graph inputs. */
static int keep_initializers(struct ex *x, const unsigned char *used)
{
	const Onnx__GraphProto *g = x->sg;
	int rc;

	for (size_t i = 0; i < g->n_initializer; i++) {
		Onnx__TensorProto *t = g->initializer[i];

		if (!used[i])
			continue;
		if (strcmp(t->name, "input") == 0 || strcmp(t->name, "embedding") == 0) {
			Onnx__TensorProto *c = fci_onnx_alloc(&x->b, 1, sizeof *c);

			if (!c)
				return FC_ERR_NOMEM;
			*c = *t;
			c->name = (char *)rename_tensor(x, t->name);
			t = c;
		}
		if ((rc = fci_onnx_add_init(&x->b, t)))
			return rc;
	}
	for (size_t i = 0; i < g->n_input; i++) {
		const struct ref *ir = lookup(x, g->input[i]->name);
		Onnx__ValueInfoProto *v;

		if (!ir || ir->kind != REF_INIT || !used[ir->idx])
			continue;
		if (!(v = fci_onnx_alloc(&x->b, 1, sizeof *v)))
			return FC_ERR_NOMEM;
		*v = *g->input[i];
		v->name = (char *)rename_tensor(x, g->input[i]->name);
		if ((rc = fci_onnx_add_input(&x->b, v)))
			return rc;
	}
	return 0;
}

/* Keep the nodes the cut depends on, in depth-first post-order (a
 * topological order whatever the file's), and the initializers they read. */
static int keep_backbone(struct ex *x)
{
	const Onnx__GraphProto *g = x->sg;
	const struct ref *r = lookup(x, x->cut->name);
	unsigned char *seen = fci_onnx_alloc(&x->b, g->n_node, 1), *used = fci_onnx_alloc(&x->b, g->n_initializer, 1);
	size_t *stack = fci_onnx_alloc(&x->b, g->n_node, sizeof *stack);
	size_t *next = fci_onnx_alloc(&x->b, g->n_node, sizeof *next);
	size_t sp = 0;
	int rc;

	if (!seen || !used || !stack || !next)
		return FC_ERR_NOMEM;
	if (!r || r->kind != REF_NODE) /* fc_model made this cut: cannot happen */
		return fci_errf(x->err, x->errcap, FC_ERR_INTERNAL, "the cut tensor '%s' has no producer",
				x->cut->name);
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
		if ((rc = fci_onnx_add_node(&x->b, copy_node(x, np))))
			return rc;
	}
	return keep_initializers(x, used);
}

/* ---- the head and what surrounds it ---- */

/* One Gemm (+ Relu) per head layer, BatchNorm1d folded into the Gemm by
 * the head; reads `from`, writes the last layer's output to `to`. */
static int add_head(struct ex *x, const char *from, const char *to)
{
	fc_head_config hc = fc_head_get_config(x->head);
	const char *cur = from;
	int rc;

	for (uint32_t i = 0; i < hc.layers; i++) {
		int last = i + 1 == hc.layers;
		size_t in = i ? hc.hidden : hc.in_dim, o = last ? hc.out_dim : hc.hidden;
		int64_t wdims[2] = { (int64_t)o, (int64_t)in }, bdims[1] = { (int64_t)o };
		float *w = fci_onnx_alloc(&x->b, o * in, sizeof *w), *bias = fci_onnx_alloc(&x->b, o, sizeof *bias);
		const char *wname = fci_onnx_strf(&x->b, "%s/head.%u.weight", x->prefix, i);
		const char *bname = fci_onnx_strf(&x->b, "%s/head.%u.bias", x->prefix, i);
		const char *out = last ? to : fci_onnx_strf(&x->b, "%s/head.%u/Gemm_output_0", x->prefix, i);
		Onnx__NodeProto *n;

		if (!w || !bias || !wname || !bname || !out)
			return FC_ERR_NOMEM;
		if ((rc = fc_head_folded_layer(x->head, i, w, bias)))
			return fci_errf(x->err, x->errcap, FC_ERR_INTERNAL, "head layer %u cannot be folded", i);
		if ((rc = fci_onnx_add_init(&x->b, fci_onnx_new_tensor_f32(&x->b, wname, 2, wdims, w))) ||
		    (rc = fci_onnx_add_init(&x->b, fci_onnx_new_tensor_f32(&x->b, bname, 1, bdims, bias))))
			return rc;
		n = add_node(x, "Gemm", fci_onnx_strf(&x->b, "head.%u/Gemm", i), cur, wname, bname, out);
		if ((rc = fci_onnx_attr_int(&x->b, n, "transB", 1)))
			return rc;
		cur = out;
		if (!last) {
			const char *r = fci_onnx_strf(&x->b, "%s/head.%u/Relu_output_0", x->prefix, i);

			if (!r || !add_node(x, "Relu", fci_onnx_strf(&x->b, "head.%u/Relu", i), cur, NULL, NULL, r))
				return FC_ERR_NOMEM;
			cur = r;
		}
	}
	return 0;
}

/* After the kept backbone: the cut as featcache's vector (float32, pooled,
 * flattened), the head, and the L2 normalisation, ending in "embedding". */
/* Token pooling (fc_pool) of the N x T x D cut `cur` as ONNX: Slice of
 * token 0 and/or Slice of the patch tokens -> ReduceMean over them
 * (keepdims), concatenated on the last axis; the Flatten after it makes
 * N x D. Returns the pooled tensor's name, NULL when out of memory. */
static const char *add_token_pool(struct ex *x, const char *cur, int64_t opset)
{
	int pool = x->g->token_pool;
	int64_t t = x->cut->dims[1], one[1] = { 1 }, zero[1] = { 0 }, pre[1] = { x->g->prefix_tokens }, end[1] = { t };
	const char *cls = NULL, *mean = NULL, *ax = fci_onnx_strf(&x->b, "%s/pool/axes", x->prefix);
	const char *c0 = fci_onnx_strf(&x->b, "%s/pool/cls_starts", x->prefix);
	const char *c1 = fci_onnx_strf(&x->b, "%s/pool/cls_ends", x->prefix);
	const char *p0 = fci_onnx_strf(&x->b, "%s/pool/patch_starts", x->prefix);
	const char *p1 = fci_onnx_strf(&x->b, "%s/pool/patch_ends", x->prefix);
	Onnx__NodeProto *n;

	if (!ax || !c0 || !c1 || !p0 || !p1 || fci_onnx_add_init(&x->b, fci_onnx_new_tensor_i64(&x->b, ax, 1, one)))
		return NULL;
	if (pool == FC_POOL_CLS || pool == FC_POOL_CLS_MEAN) {
		cls = fci_onnx_strf(&x->b, "%s/pool/cls_output_0", x->prefix);
		if (!cls || fci_onnx_add_init(&x->b, fci_onnx_new_tensor_i64(&x->b, c0, 1, zero)) ||
		    fci_onnx_add_init(&x->b, fci_onnx_new_tensor_i64(&x->b, c1, 1, one)) ||
		    !(n = add_node(x, "Slice", "pool/cls", cur, c0, c1, cls)))
			return NULL;
		if (!(n->input = fci_onnx_alloc(&x->b, 4, sizeof *n->input)))
			return NULL;
		n->input[0] = (char *)cur, n->input[1] = (char *)c0, n->input[2] = (char *)c1, n->input[3] = (char *)ax;
		n->n_input = 4;
	}
	if (pool == FC_POOL_MEAN || pool == FC_POOL_CLS_MEAN) {
		const char *patches = fci_onnx_strf(&x->b, "%s/pool/patches_output_0", x->prefix);

		mean = fci_onnx_strf(&x->b, "%s/pool/mean_output_0", x->prefix);
		if (!patches || !mean || fci_onnx_add_init(&x->b, fci_onnx_new_tensor_i64(&x->b, p0, 1, pre)) ||
		    fci_onnx_add_init(&x->b, fci_onnx_new_tensor_i64(&x->b, p1, 1, end)) ||
		    !(n = add_node(x, "Slice", "pool/patches", cur, p0, p1, patches)))
			return NULL;
		if (!(n->input = fci_onnx_alloc(&x->b, 4, sizeof *n->input)))
			return NULL;
		n->input[0] = (char *)cur, n->input[1] = (char *)p0, n->input[2] = (char *)p1, n->input[3] = (char *)ax;
		n->n_input = 4;
		/* ReduceMean's axes: an attribute before opset 18, an input since */
		n = add_node(x, "ReduceMean", "pool/mean", patches, opset >= 18 ? ax : NULL, NULL, mean);
		if (!n || fci_onnx_attr_int(&x->b, n, "keepdims", 1) ||
		    (opset < 18 && fci_onnx_attr_ints(&x->b, n, "axes", one, 1)))
			return NULL;
	}
	if (cls && mean) {
		const char *both = fci_onnx_strf(&x->b, "%s/pool/Concat_output_0", x->prefix);

		n = both ? add_node(x, "Concat", "pool/Concat", cls, mean, NULL, both) : NULL;
		if (!n || fci_onnx_attr_int(&x->b, n, "axis", 2))
			return NULL;
		return both;
	}
	return cls ? cls : mean;
}

static int add_tail(struct ex *x)
{
	const char *cur = rename_tensor(x, x->cut->name), *h;
	Onnx__NodeProto *n;
	int rc;

	if (x->elem != FLOAT) {
		const char *c = fci_onnx_strf(&x->b, "%s/cut/Cast_output_0", x->prefix);

		if ((rc = fci_onnx_attr_int(&x->b, add_node(x, "Cast", "cut/Cast", cur, NULL, NULL, c), "to", FLOAT)))
			return rc;
		cur = c;
	}
	if (x->g->pool) {
		const char *p = fci_onnx_strf(&x->b, "%s/pool/GlobalAveragePool_output_0", x->prefix);

		if (!p || !add_node(x, "GlobalAveragePool", "pool/GlobalAveragePool", cur, NULL, NULL, p))
			return FC_ERR_NOMEM;
		cur = p;
	}
	if (x->cut->ndim == 3 && x->g->token_pool != FC_POOL_AUTO && x->g->token_pool != FC_POOL_FLATTEN) {
		int64_t opset = x->opts->opset ? x->opts->opset : x->src_opset;

		if (opset < 10)
			return fci_errf(x->err, x->errcap, FC_ERR_UNSUPPORTED,
					"pooling tokens needs opset 10 or later (Slice with inputs); raise it with --opset");
		if (!(cur = add_token_pool(x, cur, opset)))
			return FC_ERR_NOMEM;
	}
	if (x->g->pool || x->cut->ndim != 2) {
		const char *f = fci_onnx_strf(&x->b, "%s/pool/Flatten_output_0", x->prefix);

		if ((rc = fci_onnx_attr_int(&x->b, add_node(x, "Flatten", "pool/Flatten", cur, NULL, NULL, f), "axis", 1)))
			return rc;
		cur = f;
	}
	if (!x->opts->normalize)
		return add_head(x, cur, "embedding");
	if (!(h = fci_onnx_strf(&x->b, "%s/head/output", x->prefix)))
		return FC_ERR_NOMEM;
	if ((rc = add_head(x, cur, h)))
		return rc;
	n = add_node(x, "LpNormalization", "normalize/LpNormalization", h, NULL, NULL, "embedding");
	if ((rc = fci_onnx_attr_int(&x->b, n, "axis", 1)) || (rc = fci_onnx_attr_int(&x->b, n, "p", 2)))
		return rc;
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
	const Onnx__GraphProto *g = &x->b.graph;

	if (to < from)
		return fci_errf(x->err, x->errcap, FC_ERR_INVALID, "cannot lower the opset from %lld to %lld",
				(long long)from, (long long)to);
	if (to > 18)
		return fci_errf(x->err, x->errcap, FC_ERR_INVALID,
				"opset %lld is beyond what featcache reads (7 to 18)", (long long)to);
	for (size_t i = 0; i < g->n_node; i++) {
		const Onnx__NodeProto *n = g->node[i];

		if (n->domain && n->domain[0] && strcmp(n->domain, "ai.onnx") != 0)
			continue;
		for (size_t k = 0; k < sizeof op_breaks / sizeof op_breaks[0]; k++)
			if (strcmp(n->op_type, op_breaks[k].op) == 0 && from < op_breaks[k].since &&
			    to >= op_breaks[k].since)
				return fci_errf(x->err, x->errcap, FC_ERR_INVALID,
						"cannot raise the opset from %lld to %lld: node '%s' (%s) "
						"changed meaning in opset %d",
						(long long)from, (long long)to, n->name ? n->name : "", n->op_type,
						op_breaks[k].since);
	}
	return 0;
}

/* The source's opset imports, ai.onnx's raised to `want`. */
static int copy_opsets(struct ex *x, int64_t want)
{
	const Onnx__ModelProto *src = x->src;
	int rc;

	for (size_t i = 0; i < src->n_opset_import; i++) {
		Onnx__OperatorSetIdProto *o = src->opset_import[i];

		if (!o->domain || !o->domain[0] || !strcmp(o->domain, "ai.onnx")) {
			if (!(o = fci_onnx_alloc(&x->b, 1, sizeof *o)))
				return FC_ERR_NOMEM;
			*o = *src->opset_import[i];
			o->version = want;
		}
		if ((rc = fci_onnx_add_opset(&x->b, o)))
			return rc;
	}
	return 0;
}

/* ---- the model around the graph ---- */

static const char *base_name(const char *path)
{
	const char *s = strrchr(path, '/');

	return s ? s + 1 : path;
}

/* "3x224x224": the image's dims after the batch. */
static void image_shape(char *buf, size_t cap, const fc_model_tensor *in)
{
	size_t n = 0;

	buf[0] = 0;
	for (int i = 1; i < in->ndim && n < cap; i++) {
		int w = snprintf(buf + n, cap - n, "%s%lld", i > 1 ? "x" : "", (long long)in->dims[i]);

		if (w < 0)
			break;
		n += (size_t)w;
	}
}

/* The opset, the output, ir_version, producer, doc string and metadata. */
static int finish_model(struct ex *x)
{
	Onnx__ModelProto *mp = &x->b.model;
	fc_head_config hc = fc_head_get_config(x->head);
	int64_t want = x->opts->opset ? x->opts->opset : x->src_opset;
	const char *src_name = base_name(x->model_path), *layer = x->g->nodes[x->g->cut_node].name;
	const char *norm = x->opts->normalize ? "true" : "false";
	char shape[64];
	int rc;

	if ((rc = check_opset(x, x->src_opset, want)) || (rc = copy_opsets(x, want)))
		return rc;
	x->b.graph.name = x->sg->name;
	if ((rc = fci_onnx_add_output(&x->b, fci_onnx_new_value_info(&x->b, "embedding", FLOAT, 2,
								  (int64_t[]){ -1, (int64_t)hc.out_dim }, "batch"))))
		return rc;
	mp->has_ir_version = 1;
	mp->ir_version = x->src->has_ir_version ? x->src->ir_version : 0;
	if (want >= 7 && mp->ir_version < ir_min[want - 7])
		mp->ir_version = ir_min[want - 7];
	image_shape(shape, sizeof shape, x->in);
	mp->producer_name = fci_onnx_strf(&x->b, "featcache");
	mp->producer_version = fci_onnx_strf(&x->b, "%s", FC_VERSION_STRING);
	mp->doc_string = fci_onnx_strf(&x->b,
				       "%s cut at '%s' (%lld-d%s) at input %s, then a projection head (%u layers, "
				       "%u -> %u)%s; exported by featcache %s",
				       src_name, layer, (long long)x->g->embed_dim, x->g->pool ? ", average-pooled" : "",
				       shape, hc.layers, hc.in_dim, hc.out_dim,
				       x->opts->normalize ? ", L2-normalised" : "", FC_VERSION_STRING);
	if (!mp->producer_name || !mp->producer_version || !mp->doc_string)
		return FC_ERR_NOMEM;
	if ((rc = fci_onnx_add_meta(&x->b, "featcache.source_model", src_name)) ||
	    (rc = fci_onnx_add_meta(&x->b, "featcache.layer", layer)) ||
	    (rc = fci_onnx_add_meta(&x->b, "featcache.input", shape)) ||
	    (rc = fci_onnx_add_meta(&x->b, "featcache.normalize", norm)))
		return rc;
	return 0;
}

/* ---- the export ---- */

int fc_export_onnx(const char *model_path, const fc_export_opts *opts, const fc_head *head, const char *out_path,
		   char *err, size_t errcap)
{
	struct ex x = { .model_path = model_path, .opts = opts, .head = head, .err = err, .errcap = errcap };
	char why[FC_ERRLEN];
	int rc;

	fci_onnx_init(&x.b);
	if (err && errcap)
		err[0] = 0;
	if (!model_path || !opts || !head || !out_path || opts->size < 0 || opts->size > 65536 || opts->opset < 0)
		return fci_errf(err, errcap, FC_ERR_INVALID, "bad arguments to fc_export_onnx");
	if ((rc = open_source(&x)) || (rc = start_graph(&x)) || (rc = keep_backbone(&x)) ||
	    (rc = add_tail(&x)) || (rc = finish_model(&x)))
		goto out;
	if ((rc = fci_onnx_write(&x.b.model, out_path, why, sizeof why)))
		fci_errf(err, errcap, rc, "cannot write '%s': %s", out_path, why);
out:
	if (rc == FC_ERR_NOMEM && (!err || !err[0]))
		fci_errf(err, errcap, rc, "out of memory");
	fci_onnx_decode_free(x.src);
	fc_model_free(x.m);
	free(x.bytes);
	fci_onnx_free(&x.b);
	return rc;
}
