/*
 * onnx.c - the ONNX writer: models built as protobuf-c structs in memory
 * (every block on one list, freed together), encoded or streamed into an
 * atomic output file; and protobuf-c's plain decoder. onnx.h says who uses
 * what.
 *
 * Not here: checked reading of untrusted files (extract/onnx_read.c), and
 * any knowledge of which nodes a model should contain.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/onnx.h"

/* ---- memory: one list, freed together ---- */

void fci_onnx_init(fci_onnx *b)
{
	memset(b, 0, sizeof *b);
	onnx__model_proto__init(&b->model);
	onnx__graph_proto__init(&b->graph);
	b->model.graph = &b->graph;
}

void fci_onnx_free(fci_onnx *b)
{
	for (size_t i = 0; i < b->n_mem; i++)
		free(b->mem[i]);
	free(b->mem);
	fci_onnx_init(b);
}

/* Hand p to b; p is freed (and NULL returned) when the list cannot grow. */
static void *own(fci_onnx *b, void *p)
{
	if (!p)
		return NULL;
	if (b->n_mem == b->cap_mem) {
		size_t cap = b->cap_mem ? 2 * b->cap_mem : 256;
		void **v = realloc(b->mem, cap * sizeof *v);

		if (!v) {
			free(p);
			return NULL;
		}
		b->mem = v;
		b->cap_mem = cap;
	}
	b->mem[b->n_mem++] = p;
	return p;
}

void *fci_onnx_alloc(fci_onnx *b, size_t n, size_t size)
{
	if (size && n > SIZE_MAX / size)
		return NULL;
	return own(b, calloc(n ? n : 1, size ? size : 1));
}

static char *vstrf(fci_onnx *b, const char *fmt, va_list ap)
{
	va_list aq;
	int n;
	char *s;

	va_copy(aq, ap);
	n = vsnprintf(NULL, 0, fmt, aq);
	va_end(aq);
	if (n < 0 || !(s = fci_onnx_alloc(b, (size_t)n + 1, 1)))
		return NULL;
	vsnprintf(s, (size_t)n + 1, fmt, ap);
	return s;
}

char *fci_onnx_strf(fci_onnx *b, const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	s = vstrf(b, fmt, ap);
	va_end(ap);
	return s;
}

static char *str(fci_onnx *b, const char *s)
{
	return fci_onnx_strf(b, "%s", s);
}

/* ---- growing arrays ---- */

/* Append p to the pointer array *v of *n entries and room for *cap. The
 * array is b's; one the caller set up elsewhere (a test pointing at its
 * own) is copied into b's on the first append. */
static int push(fci_onnx *b, void ***v, size_t *n, size_t *cap, void *p)
{
	if (!p)
		return FC_ERR_NOMEM;
	if (*n >= *cap) {
		size_t c = *n >= 32 ? 2 * *n : 64;
		void **nv = fci_onnx_alloc(b, c, sizeof *nv);

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

int fci_onnx_add_node(fci_onnx *b, Onnx__NodeProto *p)
{
	return push(b, (void ***)&b->graph.node, &b->graph.n_node, &b->cap_node, p);
}

int fci_onnx_add_init(fci_onnx *b, Onnx__TensorProto *p)
{
	return push(b, (void ***)&b->graph.initializer, &b->graph.n_initializer, &b->cap_init, p);
}

int fci_onnx_add_input(fci_onnx *b, Onnx__ValueInfoProto *p)
{
	return push(b, (void ***)&b->graph.input, &b->graph.n_input, &b->cap_input, p);
}

int fci_onnx_add_output(fci_onnx *b, Onnx__ValueInfoProto *p)
{
	return push(b, (void ***)&b->graph.output, &b->graph.n_output, &b->cap_output, p);
}

int fci_onnx_add_opset(fci_onnx *b, Onnx__OperatorSetIdProto *p)
{
	return push(b, (void ***)&b->model.opset_import, &b->model.n_opset_import, &b->cap_opset, p);
}

int fci_onnx_add_meta(fci_onnx *b, const char *key, const char *value)
{
	Onnx__StringStringEntryProto *e = fci_onnx_alloc(b, 1, sizeof *e);

	if (!e)
		return FC_ERR_NOMEM;
	onnx__string_string_entry_proto__init(e);
	if (!(e->key = str(b, key)) || !(e->value = str(b, value)))
		return FC_ERR_NOMEM;
	return push(b, (void ***)&b->model.metadata_props, &b->model.n_metadata_props, &b->cap_meta, e);
}

Onnx__OperatorSetIdProto *fci_onnx_new_opset(fci_onnx *b, const char *domain, int64_t version)
{
	Onnx__OperatorSetIdProto *o = fci_onnx_alloc(b, 1, sizeof *o);

	if (!o)
		return NULL;
	onnx__operator_set_id_proto__init(o);
	if (!(o->domain = str(b, domain)))
		return NULL;
	o->has_version = 1;
	o->version = version;
	return o;
}

/* ---- nodes and attributes ---- */

static char **names(fci_onnx *b, const char *const *v, size_t n)
{
	char **out = fci_onnx_alloc(b, n, sizeof *out);

	for (size_t i = 0; out && i < n; i++)
		if (!(out[i] = str(b, v[i])))
			return NULL;
	return out;
}

Onnx__NodeProto *fci_onnx_node(fci_onnx *b, const char *op, const char *name, const char *const *in,
			       size_t n_in, const char *const *out, size_t n_out)
{
	Onnx__NodeProto *n = fci_onnx_alloc(b, 1, sizeof *n);

	if (!n)
		return NULL;
	onnx__node_proto__init(n);
	if (!(n->op_type = str(b, op)) || (name && !(n->name = str(b, name))) ||
	    !(n->input = names(b, in, n_in)) || !(n->output = names(b, out, n_out)))
		return NULL;
	n->n_input = n_in;
	n->n_output = n_out;
	return fci_onnx_add_node(b, n) ? NULL : n;
}

Onnx__AttributeProto *fci_onnx_attr(fci_onnx *b, Onnx__NodeProto *n, const char *name, int type)
{
	Onnx__AttributeProto *a = n ? fci_onnx_alloc(b, 1, sizeof *a) : NULL;
	Onnx__AttributeProto **v;

	if (!a)
		return NULL;
	onnx__attribute_proto__init(a);
	if (!(a->name = str(b, name)))
		return NULL;
	a->has_type = 1;
	a->type = type;
	/* Nodes get a handful of attributes: a new array each time is simpler
	 * than tracking a capacity per node, and the source nodes export adds
	 * are never given any. */
	if (!(v = fci_onnx_alloc(b, n->n_attribute + 1, sizeof *v)))
		return NULL;
	if (n->n_attribute)
		memcpy(v, n->attribute, n->n_attribute * sizeof *v);
	v[n->n_attribute] = a;
	n->attribute = v;
	n->n_attribute++;
	return a;
}

int fci_onnx_attr_int(fci_onnx *b, Onnx__NodeProto *n, const char *name, int64_t v)
{
	Onnx__AttributeProto *a = fci_onnx_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);

	if (a)
		a->has_i = 1, a->i = v;
	return a ? 0 : FC_ERR_NOMEM;
}

int fci_onnx_attr_float(fci_onnx *b, Onnx__NodeProto *n, const char *name, float v)
{
	Onnx__AttributeProto *a = fci_onnx_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);

	if (a)
		a->has_f = 1, a->f = v;
	return a ? 0 : FC_ERR_NOMEM;
}

int fci_onnx_attr_string(fci_onnx *b, Onnx__NodeProto *n, const char *name, const char *v)
{
	Onnx__AttributeProto *a = fci_onnx_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);

	if (!a || !(a->s.data = (uint8_t *)str(b, v)))
		return FC_ERR_NOMEM;
	a->has_s = 1;
	a->s.len = strlen(v);
	return 0;
}

int fci_onnx_attr_ints(fci_onnx *b, Onnx__NodeProto *n, const char *name, const int64_t *v, size_t count)
{
	Onnx__AttributeProto *a = fci_onnx_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);

	if (!a || !(a->ints = fci_onnx_alloc(b, count, sizeof *a->ints)))
		return FC_ERR_NOMEM;
	if (count)
		memcpy(a->ints, v, count * sizeof *v);
	a->n_ints = count;
	return 0;
}

int fci_onnx_attr_tensor(fci_onnx *b, Onnx__NodeProto *n, const char *name, Onnx__TensorProto *t)
{
	Onnx__AttributeProto *a = t ? fci_onnx_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR) : NULL;

	if (!a)
		return FC_ERR_NOMEM;
	a->t = t;
	return 0;
}

/* ---- tensors and types ---- */

Onnx__TensorProto *fci_onnx_new_tensor(fci_onnx *b, const char *name, int data_type, size_t ndim,
				       const int64_t *dims)
{
	Onnx__TensorProto *t = fci_onnx_alloc(b, 1, sizeof *t);

	if (!t)
		return NULL;
	onnx__tensor_proto__init(t);
	if ((name && !(t->name = str(b, name))) || !(t->dims = fci_onnx_alloc(b, ndim, sizeof *t->dims)))
		return NULL;
	if (ndim)
		memcpy(t->dims, dims, ndim * sizeof *dims);
	t->n_dims = ndim;
	t->has_data_type = 1;
	t->data_type = data_type;
	return t;
}

Onnx__TensorProto *fci_onnx_new_tensor_f32(fci_onnx *b, const char *name, size_t ndim, const int64_t *dims,
					   const float *v)
{
	Onnx__TensorProto *t = fci_onnx_new_tensor(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, ndim, dims);
	size_t n = 1;
	uint8_t *raw;

	for (size_t i = 0; i < ndim; i++) {
		if (dims[i] < 0 || (dims[i] && n > SIZE_MAX / 4 / (uint64_t)dims[i]))
			return NULL;
		n *= (size_t)dims[i];
	}
	if (!t || !(raw = fci_onnx_alloc(b, n, 4)))
		return NULL;
	for (size_t i = 0; i < n; i++)
		fci_store_le32(raw + 4 * i, fci_f32_bits(v[i]));
	t->has_raw_data = 1;
	t->raw_data.data = raw;
	t->raw_data.len = 4 * n;
	return t;
}

Onnx__TensorProto *fci_onnx_new_tensor_i64(fci_onnx *b, const char *name, size_t n, const int64_t *v)
{
	int64_t dim = (int64_t)n;
	Onnx__TensorProto *t = fci_onnx_new_tensor(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__INT64, 1, &dim);

	if (!t || !(t->int64_data = fci_onnx_alloc(b, n, sizeof *v)))
		return NULL;
	if (n)
		memcpy(t->int64_data, v, n * sizeof *v);
	t->n_int64_data = n;
	return t;
}

Onnx__ValueInfoProto *fci_onnx_new_value_info(fci_onnx *b, const char *name, int elem, int ndim,
					      const int64_t *dims, const char *dim_param)
{
	Onnx__ValueInfoProto *v = fci_onnx_alloc(b, 1, sizeof *v);
	Onnx__TypeProto *tp;
	Onnx__TypeProto__Tensor *tt;
	Onnx__TensorShapeProto *sh;

	if (!v)
		return NULL;
	onnx__value_info_proto__init(v);
	if (!(v->name = str(b, name)))
		return NULL;
	if (ndim < 0)
		return v;
	tp = fci_onnx_alloc(b, 1, sizeof *tp);
	tt = fci_onnx_alloc(b, 1, sizeof *tt);
	sh = fci_onnx_alloc(b, 1, sizeof *sh);
	if (!tp || !tt || !sh)
		return NULL;
	onnx__type_proto__init(tp);
	onnx__type_proto__tensor__init(tt);
	onnx__tensor_shape_proto__init(sh);
	if (!(sh->dim = fci_onnx_alloc(b, (size_t)ndim, sizeof *sh->dim)))
		return NULL;
	for (int i = 0; i < ndim; i++) {
		Onnx__TensorShapeProto__Dimension *d = fci_onnx_alloc(b, 1, sizeof *d);

		if (!d)
			return NULL;
		onnx__tensor_shape_proto__dimension__init(d);
		if (dims[i] < 0) {
			if (!(d->dim_param = str(b, dim_param)))
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

/* ---- bytes ---- */

int fci_onnx_encode(const Onnx__ModelProto *model, uint8_t **out, size_t *len)
{
	size_t n = onnx__model_proto__get_packed_size(model);

	*len = 0;
	if (!(*out = malloc(n + 1)))
		return FC_ERR_NOMEM;
	*len = onnx__model_proto__pack(model, *out);
	return 0;
}

/* protobuf-c's output sink, writing into an fci_outfile. */
struct sink {
	ProtobufCBuffer base;
	fci_outfile *f;
	int rc;
};

static void sink_append(ProtobufCBuffer *buf, size_t len, const uint8_t *data)
{
	struct sink *s = (struct sink *)buf;

	if (!s->rc)
		s->rc = fci_outfile_write(s->f, data, len);
}

int fci_onnx_write(const Onnx__ModelProto *model, const char *path, char *err, size_t errcap)
{
	struct sink s = { { sink_append }, NULL, 0 };
	int rc;

	if ((rc = fci_outfile_open(&s.f, path, err, errcap)))
		return rc;
	onnx__model_proto__pack_to_buffer(model, &s.base);
	rc = s.rc ? s.rc : fci_outfile_commit(s.f);
	if (rc)
		fci_errf(err, errcap, rc, "%s", fci_outfile_errmsg(s.f));
	fci_outfile_free(s.f);
	return rc;
}

Onnx__ModelProto *fci_onnx_decode(const void *data, size_t len)
{
	return onnx__model_proto__unpack(NULL, len, data);
}

void fci_onnx_decode_free(Onnx__ModelProto *model)
{
	if (model)
		onnx__model_proto__free_unpacked(model, NULL);
}
