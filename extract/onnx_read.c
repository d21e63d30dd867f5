/*
 * onnx_read.c - from bytes to a checked ONNX ModelProto, and from a
 * TensorProto to f32/i64 values.
 *
 * protobuf-c does the parsing, but it only says "failed". So the bytes are
 * walked first with the generated descriptors: every varint, length and
 * wire type of the fields the schema knows is checked, recursing into known
 * sub-messages, so a broken file is reported with the byte where it breaks
 * ("truncated protobuf at byte 1234"). Unknown fields are only skipped over.
 * Then protobuf-c unpacks under an allocation budget proportional to the
 * file size: a small hostile file cannot make it allocate gigabytes (every
 * element of a repeated field becomes a struct much larger than its bytes).
 *
 * protobuf-c copies every bytes field it unpacks, and the initializers'
 * raw_data is nearly the whole file. So what it unpacks is a skeleton: the
 * file re-encoded without the graph initializers' raw_data fields (the
 * lengths of the graph and of each initializer shrink to match), and each
 * unpacked initializer's raw_data is then pointed at its bytes in the file.
 * The weights are copied once, by fci_onnx_tensor into the model's own f32
 * arrays. Files whose skeleton would differ from protobuf-c's reading (a
 * ModelProto with other than one graph field) are unpacked whole.
 *
 * The file itself is mapped only while it is read (fci_model_open_file).
 *
 * This file does not interpret the graph; model.c does.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

#include "extract/model_impl.h"
#include "util/util.h"

/* protobuf's own limit; larger models keep their weights as external data */
#define MODEL_MAX_BYTES ((uint64_t)2 << 30)

/* ---- wire format ---- */

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_SGROUP = 3, WT_EGROUP = 4, WT_I32 = 5 };

struct scan {
	fc_model *m;
	size_t len; /* of the whole file: an overrun of it is a truncation */
};

/* Reads a varint at *pos, not past end. Returns 0, -1 if it runs past
 * end, -2 if it is longer than 10 bytes or overflows 64 bits. */
static int get_varint(const uint8_t *p, size_t *pos, size_t end, uint64_t *v)
{
	uint64_t x = 0;

	for (unsigned i = 0; i < 10; i++) {
		uint8_t b;

		if (*pos >= end)
			return -1;
		b = p[(*pos)++];
		if (i == 9 && b > 1)
			return -2;
		x |= (uint64_t)(b & 0x7f) << (7 * i);
		if (!(b & 0x80)) {
			*v = x;
			return 0;
		}
	}
	return -2;
}

static int wire_type_of(ProtobufCType t)
{
	switch (t) {
	case PROTOBUF_C_TYPE_FLOAT:
	case PROTOBUF_C_TYPE_FIXED32:
	case PROTOBUF_C_TYPE_SFIXED32:
		return WT_I32;
	case PROTOBUF_C_TYPE_DOUBLE:
	case PROTOBUF_C_TYPE_FIXED64:
	case PROTOBUF_C_TYPE_SFIXED64:
		return WT_I64;
	case PROTOBUF_C_TYPE_STRING:
	case PROTOBUF_C_TYPE_BYTES:
	case PROTOBUF_C_TYPE_MESSAGE:
		return WT_LEN;
	default:
		return WT_VARINT;
	}
}

static int overrun(struct scan *s, size_t at, size_t end, const ProtobufCMessageDescriptor *d)
{
	if (end == s->len)
		return fci_model_fail(s->m, FC_ERR_CORRUPT, "truncated protobuf at byte %zu", at);
	return fci_model_fail(s->m, FC_ERR_CORRUPT,
			     "bad protobuf at byte %zu: a field runs past the end of its %s", at,
			     d->short_name);
}

/* The payload of a packed repeated scalar field must be whole elements. */
static int check_packed(struct scan *s, const uint8_t *p, size_t pos, size_t end, int wt,
			const ProtobufCMessageDescriptor *d, const ProtobufCFieldDescriptor *f)
{
	size_t n = end - pos;

	if (wt == WT_I32 || wt == WT_I64) {
		if (n % (wt == WT_I32 ? 4 : 8))
			return fci_model_fail(s->m, FC_ERR_CORRUPT,
					     "bad protobuf at byte %zu: packed %s.%s of %zu bytes is not "
					     "whole %d-byte values",
					     pos, d->short_name, f->name, n, wt == WT_I32 ? 4 : 8);
		return 0;
	}
	while (pos < end) {
		size_t at = pos;
		uint64_t v;

		if (get_varint(p, &pos, end, &v) < 0)
			return fci_model_fail(s->m, FC_ERR_CORRUPT,
					     "bad protobuf at byte %zu: bad varint in packed %s.%s", at,
					     d->short_name, f->name);
	}
	return 0;
}

static int scan_message(struct scan *s, const uint8_t *p, size_t pos, size_t end,
			const ProtobufCMessageDescriptor *d, int depth)
{
	if (depth > 16) /* the schema nests 6 deep; this cannot happen */
		return fci_model_fail(s->m, FC_ERR_CORRUPT, "protobuf nested too deeply");
	while (pos < end) {
		size_t at = pos, body;
		uint64_t key, v = 0;
		uint32_t num;
		int wt, r;
		const ProtobufCFieldDescriptor *f;

		r = get_varint(p, &pos, end, &key);
		if (r == -1)
			return overrun(s, at, end, d);
		if (r < 0 || (key >> 3) == 0 || (key >> 3) > 536870911u)
			return fci_model_fail(s->m, FC_ERR_CORRUPT,
					     "bad protobuf at byte %zu: not a field key (in %s)", at,
					     d->short_name);
		num = (uint32_t)(key >> 3);
		wt = (int)(key & 7);
		body = pos;
		switch (wt) {
		case WT_VARINT:
			r = get_varint(p, &pos, end, &v);
			if (r == -1)
				return overrun(s, at, end, d);
			if (r < 0)
				return fci_model_fail(s->m, FC_ERR_CORRUPT,
						     "bad protobuf at byte %zu: bad varint", body);
			break;
		case WT_I64:
		case WT_I32: {
			size_t n = wt == WT_I64 ? 8 : 4;

			if (end - pos < n)
				return overrun(s, at, end, d);
			pos += n;
			break;
		}
		case WT_LEN:
			r = get_varint(p, &pos, end, &v);
			if (r == -1)
				return overrun(s, at, end, d);
			if (r < 0)
				return fci_model_fail(s->m, FC_ERR_CORRUPT,
						     "bad protobuf at byte %zu: bad length", body);
			if (v > end - pos)
				return overrun(s, at, end, d);
			body = pos;
			pos += (size_t)v;
			break;
		case WT_SGROUP:
		case WT_EGROUP:
			return fci_model_fail(s->m, FC_ERR_CORRUPT,
					     "bad protobuf at byte %zu: group fields are not supported",
					     at);
		default:
			return fci_model_fail(s->m, FC_ERR_CORRUPT,
					     "bad protobuf at byte %zu: invalid wire type %d", at, wt);
		}

		f = protobuf_c_message_descriptor_get_field(d, num);
		if (!f)
			continue; /* unknown: skipped, as protobuf-c will */
		if (wt != wire_type_of(f->type)) {
			if (wt == WT_LEN && f->label == PROTOBUF_C_LABEL_REPEATED &&
			    wire_type_of(f->type) != WT_LEN) {
				r = check_packed(s, p, body, pos, wire_type_of(f->type), d, f);
				if (r)
					return r;
				continue;
			}
			return fci_model_fail(s->m, FC_ERR_CORRUPT,
					     "bad protobuf at byte %zu: %s.%s has wire type %d, not %d",
					     at, d->short_name, f->name, wt, wire_type_of(f->type));
		}
		if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
			r = scan_message(s, p, body, pos, f->descriptor, depth + 1);
			if (r)
				return r;
		}
	}
	return 0;
}

/* ---- the skeleton ---- */

enum { MODEL_GRAPH = 7, GRAPH_INITIALIZER = 5, TENSOR_RAW_DATA = 9 };

/* One field of bytes that scan_message accepted: the key at start, the
 * payload from body (for WT_LEN after its length) to end. */
struct field {
	uint32_t num;
	int wt;
	size_t start, body, end;
};

/* The next field at *pos; -1 on anything scan_message would have refused
 * (it cannot happen after it: the skeleton then falls back to plain). */
static int next_field(const uint8_t *p, size_t *pos, size_t end, struct field *f)
{
	uint64_t key, v;

	f->start = *pos;
	if (get_varint(p, pos, end, &key))
		return -1;
	f->num = (uint32_t)(key >> 3);
	f->wt = (int)(key & 7);
	switch (f->wt) {
	case WT_VARINT:
		if (get_varint(p, pos, end, &v))
			return -1;
		f->body = f->start;
		break;
	case WT_I64:
	case WT_I32:
		if (end - *pos < (f->wt == WT_I64 ? 8u : 4u))
			return -1;
		f->body = f->start;
		*pos += f->wt == WT_I64 ? 8 : 4;
		break;
	case WT_LEN:
		if (get_varint(p, pos, end, &v) || v > end - *pos)
			return -1;
		f->body = *pos;
		*pos += (size_t)v;
		break;
	default:
		return -1;
	}
	f->end = *pos;
	return 0;
}

static size_t varint_len(uint64_t v)
{
	size_t n = 1;

	while (v >= 0x80)
		v >>= 7, n++;
	return n;
}

static uint8_t *put_varint(uint8_t *o, uint64_t v)
{
	while (v >= 0x80) {
		*o++ = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	*o++ = (uint8_t)v;
	return o;
}

/* The key bytes of f and a new length prefix n, then nothing: the caller
 * appends the n bytes. */
static uint8_t *put_len_key(uint8_t *o, const uint8_t *p, const struct field *f, uint64_t n)
{
	size_t key_end = f->start;
	uint64_t key;

	get_varint(p, &key_end, f->end, &key);
	memcpy(o, p + f->start, key_end - f->start);
	return put_varint(o + (key_end - f->start), n);
}

/* The initializers of the one graph, in file order: their size without
 * raw_data, and where the raw_data (the last one, as protobuf reads it) is. */
struct fci_init_ref {
	size_t len, raw_off, raw_len;
	int has_raw;
};

/* Walks the graph body: fills refs (when not NULL) and returns the graph
 * body's length without raw_data, or (size_t)-1. *n counts initializers. */
static size_t graph_refs(const uint8_t *p, size_t pos, size_t end, struct fci_init_ref *refs, size_t *n)
{
	size_t out = 0;
	struct field f, t;

	*n = 0;
	while (pos < end) {
		if (next_field(p, &pos, end, &f))
			return (size_t)-1;
		if (f.num != GRAPH_INITIALIZER || f.wt != WT_LEN) {
			out += f.end - f.start;
			continue;
		}
		struct fci_init_ref r = { f.end - f.body, 0, 0, 0 };
		size_t tp = f.body;

		while (tp < f.end) {
			if (next_field(p, &tp, f.end, &t))
				return (size_t)-1;
			if (t.num == TENSOR_RAW_DATA && t.wt == WT_LEN) {
				r.len -= t.end - t.start;
				r.raw_off = t.body;
				r.raw_len = t.end - t.body;
				r.has_raw = 1;
			}
		}
		if (refs)
			refs[*n] = r;
		(*n)++;
		out += (f.body - f.start) - varint_len(f.end - f.body) + varint_len(r.len) + r.len;
	}
	return out;
}

/* The initializers' fields but raw_data, into o. */
static uint8_t *put_graph(uint8_t *o, const uint8_t *p, size_t pos, size_t end, const struct fci_init_ref *refs)
{
	struct field f, t;
	size_t k = 0;

	while (pos < end) {
		next_field(p, &pos, end, &f);
		if (f.num != GRAPH_INITIALIZER || f.wt != WT_LEN) {
			memcpy(o, p + f.start, f.end - f.start);
			o += f.end - f.start;
			continue;
		}
		o = put_len_key(o, p, &f, refs[k++].len);
		for (size_t tp = f.body; tp < f.end;) {
			next_field(p, &tp, f.end, &t);
			if (t.num == TENSOR_RAW_DATA && t.wt == WT_LEN)
				continue;
			memcpy(o, p + t.start, t.end - t.start);
			o += t.end - t.start;
		}
	}
	return o;
}

/* The skeleton of data into b->skel (b->skel_len bytes) and the raw_data
 * places into b->refs; 1 when the file must be unpacked whole, 0, or
 * FC_ERR_NOMEM. */
static int skeleton(struct fci_budget *b, const uint8_t *p, size_t len)
{
	struct field f, graph = { 0 };
	size_t pos = 0, n_graph = 0, n, glen, total = 0;

	while (pos < len) {
		if (next_field(p, &pos, len, &f))
			return 1;
		if (f.num == MODEL_GRAPH) {
			if (f.wt != WT_LEN)
				return 1;
			graph = f;
			n_graph++;
		} else {
			total += f.end - f.start;
		}
	}
	if (n_graph != 1 || (glen = graph_refs(p, graph.body, graph.end, NULL, &n)) == (size_t)-1)
		return 1;
	if (!(b->refs = malloc((n ? n : 1) * sizeof *b->refs)))
		return FC_ERR_NOMEM;
	graph_refs(p, graph.body, graph.end, b->refs, &b->n_refs);
	total += (graph.body - graph.start) - varint_len(graph.end - graph.body) + varint_len(glen) + glen;
	if (!(b->skel = malloc(total ? total : 1)))
		return FC_ERR_NOMEM;
	uint8_t *o = b->skel;

	for (pos = 0; pos < len;) {
		next_field(p, &pos, len, &f);
		if (f.num != MODEL_GRAPH) {
			memcpy(o, p + f.start, f.end - f.start);
			o += f.end - f.start;
			continue;
		}
		o = put_graph(put_len_key(o, p, &f, glen), p, f.body, f.end, b->refs);
	}
	b->skel_len = (size_t)(o - b->skel);
	return b->skel_len == total ? 0 : 1;
}

/* ---- unpacking under a budget ---- */

static void *budget_alloc(void *ctx, size_t n)
{
	struct fci_budget *b = ctx;

	if (n > b->left) {
		b->exhausted = 1;
		return NULL;
	}
	b->left -= n;
	return malloc(n);
}

static void budget_free(void *ctx, void *ptr)
{
	(void)ctx;
	free(ptr);
}

/* Drop the skeleton's bookkeeping; the pointers into the file are taken
 * out of *mp first (protobuf-c would free them). */
static void unskeleton(struct fci_budget *b, Onnx__ModelProto *mp)
{
	if (mp && b->patched)
		for (size_t i = 0; i < mp->graph->n_initializer; i++) {
			mp->graph->initializer[i]->has_raw_data = 0;
			mp->graph->initializer[i]->raw_data.data = NULL;
			mp->graph->initializer[i]->raw_data.len = 0;
		}
	b->patched = 0;
	free(b->skel);
	free(b->refs);
	b->skel = NULL;
	b->refs = NULL;
	b->skel_len = b->n_refs = 0;
}

void fci_onnx_unpacked_free(struct fci_budget *b, Onnx__ModelProto *mp)
{
	unskeleton(b, mp);
	if (mp)
		protobuf_c_message_free_unpacked(&mp->base, &b->pa);
}

int fci_onnx_unpack(fc_model *m, struct fci_budget *b, const uint8_t *data, size_t len,
		   Onnx__ModelProto **out)
{
	struct scan s = { m, len };
	size_t budget;
	int rc;

	*out = NULL;
	rc = scan_message(&s, data, 0, len, &onnx__model_proto__descriptor, 0);
	if (rc)
		return rc;
	/* A real model unpacks into 1.0-1.5x its size (the weights dominate);
	 * tiny graphs into up to ~7x (structs bigger than their bytes). A
	 * hostile file of empty repeated messages would reach 50x. The
	 * skeleton needs less; the budget is the whole file's all the same. */
	budget = (size_t)4 << 20;
	budget += len > (SIZE_MAX - budget) / 16 ? SIZE_MAX - budget : 16 * len;
	b->pa.alloc = budget_alloc;
	b->pa.free = budget_free;
	b->pa.allocator_data = b;
	b->left = budget;
	b->exhausted = 0;
	b->skel = NULL;
	b->refs = NULL;
	b->skel_len = b->n_refs = 0;
	b->patched = 0;
	rc = skeleton(b, data, len);
	if (rc < 0) {
		unskeleton(b, NULL);
		return fci_model_fail(m, rc, "out of memory");
	}
	if (rc == 0) {
		*out = onnx__model_proto__unpack(&b->pa, b->skel_len, b->skel);
		if (*out && (!(*out)->graph || (*out)->graph->n_initializer != b->n_refs)) {
			/* cannot happen: the skeleton has one graph and these initializers */
			protobuf_c_message_free_unpacked(&(*out)->base, &b->pa);
			*out = NULL;
		}
		if (*out) {
			for (size_t i = 0; i < b->n_refs; i++) {
				Onnx__TensorProto *tp = (*out)->graph->initializer[i];

				if (b->refs[i].has_raw) {
					tp->has_raw_data = 1;
					tp->raw_data.data = (uint8_t *)(uintptr_t)(data + b->refs[i].raw_off);
					tp->raw_data.len = b->refs[i].raw_len;
				}
			}
			b->patched = 1;
			return 0;
		}
		unskeleton(b, NULL);
		b->left = budget;
	}
	if (!b->exhausted)
		*out = onnx__model_proto__unpack(&b->pa, len, data);
	if (!*out) {
		if (b->exhausted)
			return fci_model_fail(m, FC_ERR_OVERFLOW,
					     "unpacking the protobuf needs more than %zu MiB for a "
					     "%zu-byte file (damaged or hostile file)",
					     budget >> 20, len);
		return fci_model_fail(m, FC_ERR_CORRUPT, "malformed protobuf (protobuf-c refused it)");
	}
	return 0;
}

/* ---- tensors ---- */

const char *fci_onnx_type_name(int32_t type)
{
	static const char *const names[] = {
		"UNDEFINED", "FLOAT", "UINT8", "INT8", "UINT16", "INT16", "INT32", "INT64",
		"STRING", "BOOL", "FLOAT16", "DOUBLE", "UINT32", "UINT64", "COMPLEX64",
		"COMPLEX128", "BFLOAT16",
	};

	if (type >= 0 && (size_t)type < sizeof names / sizeof names[0])
		return names[type];
	return "unknown";
}

static float f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
	uint32_t bits;
	float f;

	if (exp == 0) {
		/* zero or subnormal: man * 2^-24 is exact in float */
		f = ldexpf((float)man, -24);
		return sign ? -f : f;
	}
	if (exp == 31)
		bits = sign | 0x7f800000u | (man << 13);
	else
		bits = sign | ((exp + 112u) << 23) | (man << 13);
	memcpy(&f, &bits, sizeof f);
	return f;
}

static float bf16_to_f32(uint16_t h)
{
	uint32_t bits = (uint32_t)h << 16;
	float f;

	memcpy(&f, &bits, sizeof f);
	return f;
}

/* Little-endian loads that do not care about the host or alignment. */
static uint64_t le(const uint8_t *p, int n)
{
	uint64_t v = 0;

	for (int i = n - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

void fci_onnx_copy(const struct fci_copy *c)
{
	if (!c->dst)
		return;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	memcpy(c->dst, c->src, c->n * sizeof *c->dst);
#else
	for (size_t i = 0; i < c->n; i++) {
		uint32_t bits = (uint32_t)le(c->src + 4 * i, 4);

		memcpy(&c->dst[i], &bits, 4);
	}
#endif
}

int fci_onnx_tensor(fc_model *m, const Onnx__TensorProto *tp, const char *what,
		   fc_model_tensor *t, struct fci_copy *later)
{
	int64_t numel;
	size_t esize, n_typed;
	int elem;

	if (later)
		later->dst = NULL;

	if ((tp->has_data_location && tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL) ||
	    tp->n_external_data)
		return fci_model_fail(m, FC_ERR_UNSUPPORTED,
				     "%s uses external data (not supported yet)", what);
	if (tp->n_dims > FC_MODEL_MAX_DIMS)
		return fci_model_fail(m, FC_ERR_UNSUPPORTED, "%s has %zu dims (at most %d supported)",
				     what, tp->n_dims, FC_MODEL_MAX_DIMS);
	for (size_t i = 0; i < tp->n_dims; i++) {
		if (tp->dims[i] < 0)
			return fci_model_fail(m, FC_ERR_CORRUPT, "%s has a negative dim (%lld)", what,
					     (long long)tp->dims[i]);
		if (tp->dims[i] > FC_MAX_DIM)
			return fci_model_fail(m, FC_ERR_OVERFLOW, "%s has an absurd dim (%lld)", what,
					     (long long)tp->dims[i]);
		t->dims[i] = tp->dims[i];
	}
	t->ndim = (int)tp->n_dims;
	if (fci_mul_dims(t->ndim, t->dims, &numel))
		return fci_model_fail(m, FC_ERR_OVERFLOW, "%s has more than %lld elements", what,
				     (long long)FC_MAX_NUMEL);
	t->numel = numel;

	switch (tp->has_data_type ? tp->data_type : 0) {
	case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
		esize = 4, n_typed = tp->n_float_data, elem = FC_ELEM_F32;
		break;
	case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16:
	case ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16:
		esize = 2, n_typed = tp->n_int32_data, elem = FC_ELEM_F32;
		break;
	case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE:
		esize = 8, n_typed = tp->n_double_data, elem = FC_ELEM_F32;
		break;
	case ONNX__TENSOR_PROTO__DATA_TYPE__INT64:
		esize = 8, n_typed = tp->n_int64_data, elem = FC_ELEM_I64;
		break;
	case ONNX__TENSOR_PROTO__DATA_TYPE__INT32:
		esize = 4, n_typed = tp->n_int32_data, elem = FC_ELEM_I64;
		break;
	case ONNX__TENSOR_PROTO__DATA_TYPE__BOOL: /* one byte raw, int32_data typed */
		esize = 1, n_typed = tp->n_int32_data, elem = FC_ELEM_I64;
		break;
	default:
		return fci_model_fail(m, FC_ERR_UNSUPPORTED,
				     "%s has data type %s (featcache reads FLOAT, FLOAT16, BFLOAT16, "
				     "DOUBLE, INT64, INT32, BOOL)",
				     what, fci_onnx_type_name(tp->has_data_type ? tp->data_type : 0));
	}
	t->elem = elem;
	t->kind = FC_TENSOR_CONST;

	/* numel <= 2^33 and esize <= 8: no overflow in the products below. */
	if (tp->has_raw_data && tp->raw_data.len) {
		if (n_typed)
			return fci_model_fail(m, FC_ERR_CORRUPT, "%s has both raw_data and typed data",
					     what);
		if ((uint64_t)tp->raw_data.len != (uint64_t)numel * esize)
			return fci_model_fail(m, FC_ERR_CORRUPT,
					     "%s has %zu bytes of data, its dims need %lld (%lld x %s)",
					     what, tp->raw_data.len, (long long)numel * (long long)esize,
					     (long long)numel, fci_onnx_type_name(tp->data_type));
	} else if (n_typed != (uint64_t)numel) {
		return fci_model_fail(m, FC_ERR_CORRUPT, "%s has %zu values, its dims need %lld", what,
				     n_typed, (long long)numel);
	}

	if (elem == FC_ELEM_F32) {
		float *v = fci_model_alloc(m, (size_t)numel * sizeof *v, 0);
		const uint8_t *raw = tp->has_raw_data && tp->raw_data.len ? tp->raw_data.data : NULL;

		if (!v)
			return fci_model_fail(m, FC_ERR_NOMEM, "out of memory for %s", what);
		t->f32 = v;
		if (raw && tp->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT) {
			struct fci_copy c = { v, raw, (size_t)numel };

			if (later)
				*later = c;
			else
				fci_onnx_copy(&c);
			return 0;
		}
		for (int64_t i = 0; i < numel; i++) {
			switch (tp->data_type) {
			case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT: {
				uint32_t bits = raw ? (uint32_t)le(raw + 4 * i, 4) : 0;

				if (raw)
					memcpy(&v[i], &bits, 4);
				else
					v[i] = tp->float_data[i];
				break;
			}
			case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16:
				v[i] = f16_to_f32(raw ? (uint16_t)le(raw + 2 * i, 2)
						      : (uint16_t)tp->int32_data[i]);
				break;
			case ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16:
				v[i] = bf16_to_f32(raw ? (uint16_t)le(raw + 2 * i, 2)
						       : (uint16_t)tp->int32_data[i]);
				break;
			default: { /* DOUBLE */
				double d;
				uint64_t bits = raw ? le(raw + 8 * i, 8) : 0;

				if (raw)
					memcpy(&d, &bits, 8);
				else
					d = tp->double_data[i];
				v[i] = (float)d;
				break;
			}
			}
		}
	} else {
		int64_t *v = fci_model_alloc(m, (size_t)numel * sizeof *v, 0);
		const uint8_t *raw = tp->has_raw_data && tp->raw_data.len ? tp->raw_data.data : NULL;

		if (!v)
			return fci_model_fail(m, FC_ERR_NOMEM, "out of memory for %s", what);
		for (int64_t i = 0; i < numel; i++) {
			if (tp->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__INT64)
				v[i] = raw ? (int64_t)le(raw + 8 * i, 8) : tp->int64_data[i];
			else if (tp->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__BOOL)
				/* bools are 0/1 everywhere after this, whatever byte holds them */
				v[i] = raw ? raw[i] != 0 : tp->int32_data[i] != 0;
			else
				v[i] = raw ? (int32_t)(uint32_t)le(raw + 4 * i, 4) : tp->int32_data[i];
		}
		t->i64 = v;
	}
	return 0;
}

/* The FLOAT initializers' bytes, copied on every thread: the one pass over
 * the weights that loading makes (fresh pages are most of its cost). */
void fci_onnx_copy_all(const struct fci_copy *c, size_t n)
{
	size_t bytes = 0;

	for (size_t i = 0; i < n; i++)
		bytes += c[i].dst ? c[i].n : 0;
#pragma omp parallel for schedule(dynamic, 1) if (bytes > ((size_t)1 << 20))
	for (size_t i = 0; i < n; i++)
		fci_onnx_copy(&c[i]);
}

/* ---- the file ---- */

/* The file is mapped only while it is read: nothing keeps a pointer into
 * it (the weights are copied into the model), so after this returns the
 * file may be replaced, rewritten or deleted without the model noticing. */
int fci_model_open_file(fc_model **out, const char *path, uint8_t hash[16], char *errbuf, size_t errcap)
{
	struct stat st;
	const uint8_t *data = NULL;
	size_t len = 0;
	int rc;

	*out = NULL;
	/* A directory or a device would read as something other than a model. */
	if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
		return fci_errf(errbuf, errcap, FC_ERR_IO, "%s",
				S_ISDIR(st.st_mode) ? "is a directory" : "not a regular file");
	rc = fci_map_file(path, MODEL_MAX_BYTES, &data, &len, errbuf, errcap);
	if (rc == FC_ERR_OVERFLOW)
		rc = fci_errf(errbuf, errcap, FC_ERR_UNSUPPORTED,
			      "file is larger than 2 GiB, the protobuf limit (models that big use external "
			      "data, not supported yet)");
	if (!rc && hash) {
		XXH128_canonical_t c;

		XXH128_canonicalFromHash(&c, XXH3_128bits(data, len));
		memcpy(hash, c.digest, 16);
	}
	if (!rc)
		rc = fc_model_open_mem(out, data, len, errbuf, errcap);
	fci_unmap_file(data, len);
	return rc;
}
