/*
 * testlib.h - what the unit tests and test tools share: the seed and its
 * random stream, whole-file reading, temporary directories, the ONNX model
 * builder (thin wrappers over io's writer, io/onnx.h), and checks of an
 * imported model's graph.
 *
 * Test code, not library code: every function here that can fail for want
 * of memory or a file system prints "# testlib: ..." and aborts, so a test
 * never has to check (a crash is a failure in tests/run.sh's count). No
 * cmocka: the tools link this too.
 *
 * Not here: anything one test file needs alone; references and fixtures
 * stay beside the tests that use them.
 */
#ifndef FC_TESTLIB_H
#define FC_TESTLIB_H

#include <stddef.h>
#include <stdint.h>

#include "featcache/engine.h"
#include "featcache/model.h"
#include "io/onnx.h"

/* ---- the seed and the random stream ---- */

/* testlib_seed - the run's seed: FC_SEED from the environment (any base
 * strtoull reads), else TESTLIB_SEED, so that a plain run repeats itself.
 * Prints "# <test_name> seed N (FC_SEED to replay)" and starts the shared
 * stream below at N. Call once, first thing in main. */
#define TESTLIB_SEED 20261127
uint64_t testlib_seed(const char *test_name);

/* The shared stream: splitmix64 (util.h's fci_splitmix64), so a seed means
 * what it means in the library.
 * testlib_rand - the next 64 bits.  testlib_below - in [0, n), n > 0.
 * testlib_int - in [lo, hi], both included.  testlib_float - in [lo, hi).
 * testlib_unit_pos - in (0, 1]: never 0, so its log is finite (Box-Muller,
 * exponential draws).
 * testlib_unit - in [0, 1) from a stream of the caller's, *state. */
uint64_t testlib_rand(void);
size_t testlib_below(size_t n);
int testlib_int(int lo, int hi);
float testlib_float(float lo, float hi);
double testlib_unit_pos(void);
double testlib_unit(uint64_t *state);

/* testlib_rand_vec - n floats uniform in [lo, hi) from the shared stream,
 * owned by the builder b (freed with it). */
float *testlib_rand_vec(fci_onnx *b, size_t n, float lo, float hi);

/* testlib_add_f32 - an f32 initializer `name` of the given dims and values. */
void testlib_add_f32(fci_onnx *b, const char *name, int ndim, const int64_t *dims, const float *v);

/* testlib_rel_err - max |got - ref| / max |ref| over n values (the plain
 * max |got - ref| when ref is all zeros); NaN if any difference is NaN,
 * so that `!(err <= tol)` fails on it. */
double testlib_rel_err(const float *got, const float *ref, size_t n);

/* ---- files ---- */

/* testlib_read_file - the whole file at path, malloc'd (free() it) with a
 * NUL after its *len bytes; NULL (and a "# testlib:" line) if it cannot be
 * read, so tests can assert on it. */
uint8_t *testlib_read_file(const char *path, size_t *len);

/* testlib_tmpdir - a new empty directory $TMPDIR/fc-<name>.XXXXXX (/tmp
 * without TMPDIR), malloc'd path. testlib_rmtree - remove path and all
 * below it (symbolic links are removed, not followed); 0 or -1. */
char *testlib_tmpdir(const char *name);
int testlib_rmtree(const char *path);

/* ---- ONNX models (io/onnx.h's fci_onnx; fci_onnx_free releases) ---- */

/* testlib_model_init - a model for ai.onnx `opset` (IR 8, producer
 * "test_model", graph "g") with nothing in its graph. */
void testlib_model_init(fci_onnx *b, int opset);

/* testlib_alloc - n zeroed bytes owned by b. testlib_str - s copied into b. */
void *testlib_alloc(fci_onnx *b, size_t n);
char *testlib_str(fci_onnx *b, const char *s);

/* testlib_value - a value info (dims < 0 become dim_param "N"; ndim < 0
 * leaves the type out), not added. testlib_input - a float input of that
 * shape, added. testlib_output - an output without a type, added. */
Onnx__ValueInfoProto *testlib_value(fci_onnx *b, const char *name, int elem, int ndim, const int64_t *dims);
void testlib_input(fci_onnx *b, const char *name, int ndim, const int64_t *dims);
void testlib_output(fci_onnx *b, const char *name);

/* testlib_tensor - a tensor without data (fci_onnx_tensor). testlib_f32 -
 * a float tensor; v NULL makes small distinct values. testlib_i64 - a 1-D
 * int64 tensor. None is added: testlib_add_init adds one; testlib_init_f32
 * and testlib_init_i64 make and add one. */
Onnx__TensorProto *testlib_tensor(fci_onnx *b, const char *name, int type, int ndim, const int64_t *dims);
Onnx__TensorProto *testlib_f32(fci_onnx *b, const char *name, int ndim, const int64_t *dims, const float *v);
Onnx__TensorProto *testlib_i64(fci_onnx *b, const char *name, int n, const int64_t *v);
void testlib_add_init(fci_onnx *b, Onnx__TensorProto *t);
void testlib_init_f32(fci_onnx *b, const char *name, int ndim, const int64_t *dims);
void testlib_init_i64(fci_onnx *b, const char *name, int n, const int64_t *v);

/* testlib_node - a node, added: inputs and outputs as comma-separated
 * names ("x,,b" leaves the second input out; "" is none); name NULL
 * leaves it unnamed. */
Onnx__NodeProto *testlib_node(fci_onnx *b, const char *op, const char *name, const char *ins, const char *outs);
/* testlib_conv3x3 - a 3x3 Conv, stride 1, padded by 1 on every side, in
 * group groups ("x,w,b" as testlib_node's ins). */
Onnx__NodeProto *testlib_conv3x3(fci_onnx *b, const char *name, const char *ins, const char *out, int group);

/* Attributes of n: testlib_attr (type set, value left to the caller),
 * INT, FLOAT, STRING, INTS (cnt values, passed as long long), TENSOR. */
Onnx__AttributeProto *testlib_attr(fci_onnx *b, Onnx__NodeProto *n, const char *name, int type);
void testlib_attr_i(fci_onnx *b, Onnx__NodeProto *n, const char *name, int64_t v);
void testlib_attr_f(fci_onnx *b, Onnx__NodeProto *n, const char *name, float v);
void testlib_attr_s(fci_onnx *b, Onnx__NodeProto *n, const char *name, const char *v);
void testlib_attr_ints(fci_onnx *b, Onnx__NodeProto *n, const char *name, int cnt, ...);
void testlib_attr_t(fci_onnx *b, Onnx__NodeProto *n, const char *name, Onnx__TensorProto *t);

/* testlib_pack - the model as bytes, malloc'd (free() it). testlib_open -
 * fc_model_open_mem of those bytes (err holds FC_ERRLEN). testlib_write -
 * the model to path, atomically. */
uint8_t *testlib_pack(const fci_onnx *b, size_t *len);
int testlib_open(const fci_onnx *b, fc_model **m, char *err);
void testlib_write(const Onnx__ModelProto *model, const char *path);

/* testlib_open_engine - the model opened, cut at `cut`, and an engine on
 * it for batch images in precision prec: 0. 1 (nothing opened, a
 * "# bf16 skipped" line printed) when prec is bf16 and the cpu has no
 * native bf16. Any other failure ends the test program with the message. */
int testlib_open_engine(const fci_onnx *b, const char *cut, int batch, int prec, fc_model **m, fc_engine **e);

/* ---- imported models (model.h) ---- */

/* testlib_tensor_id - the id of g's tensor called name, -1 if none. */
int testlib_tensor_id(const fc_model_graph *g, const char *name);

/* testlib_model_consistent - 1 if everything a model that opened holds is
 * consistent (ids in range, inputs produced before use, aliases resolved,
 * computed shapes positive and matching their element counts, the cut
 * needed); else 0, after a "# invariant broken: ..." line. No cmocka, so
 * a forked child can use it. */
int testlib_model_consistent(const fc_model *m);

#endif /* FC_TESTLIB_H */
