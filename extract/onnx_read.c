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
 * This file does not interpret the graph; model.c does.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "extract/model_impl.h"

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
	 * hostile file of empty repeated messages would reach 50x. */
	budget = (size_t)4 << 20;
	budget += len > (SIZE_MAX - budget) / 16 ? SIZE_MAX - budget : 16 * len;
	b->pa.alloc = budget_alloc;
	b->pa.free = budget_free;
	b->pa.allocator_data = b;
	b->left = budget;
	b->exhausted = 0;
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

int fci_onnx_tensor(fc_model *m, const Onnx__TensorProto *tp, const char *what,
		   fc_model_tensor *t)
{
	int64_t numel;
	size_t esize, n_typed;
	int elem;

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
		t->f32 = v;
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
