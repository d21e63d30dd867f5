/*
 * onnx.h - ONNX models as protobuf-c structs: the one ONNX writer (build a
 * model in memory, encode it, write it atomically) and the plain decoder.
 * The structs are those protoc-c generates from io/onnx.proto
 * (build/.../gen/onnx.pb-c.h), which is why this header is private to
 * libfeatcache and its tests rather than part of include/featcache/io.h:
 * it would make protobuf-c part of the API.
 *
 * Users: export/ writes the exported model with it, and tests/testlib.c
 * builds the test graphs with it. extract/onnx_read.c reads models with the
 * same generated code but its own checked, budgeted unpacking (it reports
 * the byte where a file breaks); fci_onnx_decode is for bytes that are
 * already known to be a model (export re-reads what fc_model accepted) or
 * that a test wrote.
 *
 * Not here: checking or interpreting a graph (extract/), and any choice of
 * what a model contains.
 */
#ifndef FC_IO_ONNX_H
#define FC_IO_ONNX_H

#include <stddef.h>
#include <stdint.h>

#include "onnx.pb-c.h"
#include "util/util.h"

/* A model under construction. model and graph are the protobuf-c structs,
 * model.graph == &graph, and may be read and changed directly (the tests
 * break models on purpose). The graph's node, initializer, input and output
 * arrays and the model's opset_import and metadata_props grow through the
 * fci_onnx_add_* calls only. Every block allocated through the builder
 * (fci_onnx_alloc and everything built here) belongs to it and is freed by
 * fci_onnx_free; structs added by pointer stay their owner's (export adds a
 * source model's nodes and initializers as they are). */
typedef struct fci_onnx {
	Onnx__ModelProto model;
	Onnx__GraphProto graph;
	/* private: capacities of the arrays above, the owned blocks */
	size_t cap_node, cap_init, cap_input, cap_output, cap_opset, cap_meta;
	void **mem;
	size_t n_mem, cap_mem;
} fci_onnx;

/* fci_onnx_init - an empty model: no ir_version, opsets, nodes or names.
 * fci_onnx_free - release everything b owns; b may be initialised again.
 * Accepts an initialised builder only (a zeroed one is fine too). */
void fci_onnx_init(fci_onnx *b);
void fci_onnx_free(fci_onnx *b);

/* fci_onnx_alloc - n * size zeroed bytes owned by b (at least one byte);
 * NULL when out of memory or when n * size overflows.
 * fci_onnx_strf - a formatted string owned by b; NULL when out of memory. */
void *fci_onnx_alloc(fci_onnx *b, size_t n, size_t size);
char *fci_onnx_strf(fci_onnx *b, const char *fmt, ...) FC_PRINTF(2, 3);

/* fci_onnx_add_* - append p (kept by pointer, not copied) to the graph's
 * nodes, initializers, inputs, outputs, or the model's opset imports.
 * 0, or FC_ERR_NOMEM when p is NULL (so an allocation can be passed
 * straight in) or the array cannot grow. */
int fci_onnx_add_node(fci_onnx *b, Onnx__NodeProto *p);
int fci_onnx_add_init(fci_onnx *b, Onnx__TensorProto *p);
int fci_onnx_add_input(fci_onnx *b, Onnx__ValueInfoProto *p);
int fci_onnx_add_output(fci_onnx *b, Onnx__ValueInfoProto *p);
int fci_onnx_add_opset(fci_onnx *b, Onnx__OperatorSetIdProto *p);

/* fci_onnx_add_meta - a metadata_props entry, key and value copied. */
int fci_onnx_add_meta(fci_onnx *b, const char *key, const char *value);

/* The fci_onnx_new_* functions make a struct that is not yet added
 * anywhere; they return NULL when out of memory. (extract/onnx_read.c's
 * fci_onnx_tensor decodes a TensorProto: a different thing.)
 *
 * fci_onnx_new_opset - an opset import (domain copied; "" is ai.onnx). */
Onnx__OperatorSetIdProto *fci_onnx_new_opset(fci_onnx *b, const char *domain, int64_t version);

/* fci_onnx_new_tensor - name (NULL: none; a Constant's value has none),
 * TensorProto.DataType data_type, ndim dims (dims may be NULL when ndim is
 * 0), no data.
 * fci_onnx_new_tensor_f32 - the same with FLOAT data v (the product of
 * dims floats) in raw_data, little-endian whatever the host.
 * fci_onnx_new_tensor_i64 - a 1-D INT64 tensor of n values in int64_data. */
Onnx__TensorProto *fci_onnx_new_tensor(fci_onnx *b, const char *name, int data_type, size_t ndim,
				       const int64_t *dims);
Onnx__TensorProto *fci_onnx_new_tensor_f32(fci_onnx *b, const char *name, size_t ndim, const int64_t *dims,
					   const float *v);
Onnx__TensorProto *fci_onnx_new_tensor_i64(fci_onnx *b, const char *name, size_t n, const int64_t *v);

/* fci_onnx_new_value_info - a graph input's or output's name and type:
 * tensor of element type elem with ndim dims, where a negative dim is the
 * symbolic dim_param (a dynamic batch, say); ndim < 0 leaves the type out. */
Onnx__ValueInfoProto *fci_onnx_new_value_info(fci_onnx *b, const char *name, int elem, int ndim,
					      const int64_t *dims, const char *dim_param);

/* fci_onnx_node - a new node, added to the graph: op_type op, name (NULL:
 * none), n_in inputs and n_out outputs (names copied; "" is an omitted
 * optional input), no attributes. NULL when out of memory. */
Onnx__NodeProto *fci_onnx_node(fci_onnx *b, const char *op, const char *name, const char *const *in,
			       size_t n_in, const char *const *out, size_t n_out);

/* fci_onnx_attr - a new attribute of n called name, of AttributeType type,
 * its value left for the caller to set; NULL when out of memory or n is
 * NULL. The typed forms set the value (strings and arrays copied) and
 * return 0 or FC_ERR_NOMEM (also for n NULL, so a failed fci_onnx_node
 * can be passed straight in). */
Onnx__AttributeProto *fci_onnx_attr(fci_onnx *b, Onnx__NodeProto *n, const char *name, int type);
int fci_onnx_attr_int(fci_onnx *b, Onnx__NodeProto *n, const char *name, int64_t v);
int fci_onnx_attr_float(fci_onnx *b, Onnx__NodeProto *n, const char *name, float v);
int fci_onnx_attr_string(fci_onnx *b, Onnx__NodeProto *n, const char *name, const char *v);
int fci_onnx_attr_ints(fci_onnx *b, Onnx__NodeProto *n, const char *name, const int64_t *v, size_t count);
int fci_onnx_attr_tensor(fci_onnx *b, Onnx__NodeProto *n, const char *name, Onnx__TensorProto *t);

/* fci_onnx_encode - model as protobuf bytes in a malloc'd buffer (free()
 * it; one spare byte past *len). 0 or FC_ERR_NOMEM. */
int fci_onnx_encode(const Onnx__ModelProto *model, uint8_t **out, size_t *len);

/* fci_onnx_write - model to path through util's atomic output file,
 * streamed (never whole in memory as bytes). On failure nothing is left
 * and an existing file is unchanged; err gets the reason, not the path
 * (io.h's convention). */
int fci_onnx_write(const Onnx__ModelProto *model, const char *path, char *err, size_t errcap);

/* fci_onnx_decode - protobuf-c's unpacking of len bytes, without checks of
 * its own: NULL when the bytes are not a ModelProto or memory runs out
 * (protobuf-c does not say which). Free with fci_onnx_decode_free. For a
 * file that may be hostile use fc_model (model.h) first. */
Onnx__ModelProto *fci_onnx_decode(const void *data, size_t len);
void fci_onnx_decode_free(Onnx__ModelProto *model);

#endif /* FC_IO_ONNX_H */
