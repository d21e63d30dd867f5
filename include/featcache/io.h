/*
 * io.h - tensors in files other programs read: safetensors (the
 * trained head, loadable with PyTorch's load_state_dict) and NumPy .npy
 * (embedding matrices), and the atomic output file both are written through.
 *
 * Not a tensor library: the writers take bytes the caller has laid out
 * (little-endian, C order), the safetensors reader hands back views into one
 * buffer, and .npy is limited to 2-D float matrices.
 *
 * io/ also holds the ONNX writer, which is library-internal (io/onnx.h): it
 * works on the protobuf-c structs generated from io/onnx.proto, and those
 * are no part of the API.
 *
 * Writing. Every file goes through util's atomic output file: the bytes go
 * to a temporary file in the target's directory, which is fsync'd and renamed
 * over the target, and then the directory is fsync'd. On any failure the
 * temporary is removed and an existing target is left as it was; only a
 * process killed mid-write leaves a temporary (".<name>.<pid>-<n>.tmp") behind.
 *
 * Reading. Both readers treat the file as hostile: every length, offset and
 * dimension is checked, with overflow checks, before it is used; a file that
 * fails a check is FC_ERR_CORRUPT and never a read out of bounds.
 *
 * Error messages. A function that can fail before it has an object to keep a
 * message in takes `char *errbuf, size_t errcap`: on failure it writes one
 * line there (lowercase, no final period, e.g. "tensor 'w': shape [2, 2] of
 * F32 is 16 bytes but data_offsets [0, 12] hold 12"), truncated to errcap
 * and NUL-terminated. errbuf may be NULL. FC_ERRLEN bytes hold
 * every message but those quoting a long path or name, which are cut.
 * Messages give the reason only; the caller names the file. Objects keep
 * their own message (fc_npy_writer_errmsg). On success
 * errbuf is untouched.
 *
 * Error codes: FC_ERR_CORRUPT (a file fails its checks), FC_ERR_VERSION (an
 * .npy format version other than 1.0, 2.0, 3.0), FC_ERR_UNSUPPORTED (valid
 * input outside what is implemented: an .npy that is not a 2-D float matrix,
 * a safetensors sub-byte dtype), FC_ERR_INVALID (bad arguments), FC_ERR_NOMEM,
 * and for the file system FC_ERR_NOT_FOUND (no such file or directory),
 * FC_ERR_FULL (ENOSPC, EDQUOT, EFBIG) and FC_ERR_IO (everything else,
 * EACCES and EROFS included; the message has strerror's text).
 *
 * All functions are thread-safe on distinct objects.
 */
#ifndef FEATCACHE_IO_H
#define FEATCACHE_IO_H

#include <stddef.h>
#include <stdint.h>

#include "featcache.h"

#ifdef __cplusplus
extern "C" {
#endif


/* --------------------------------------------------------- safetensors */

/* https://github.com/huggingface/safetensors#format: an 8-byte little-endian
 * header length N, N bytes of JSON header (an object: per tensor name
 * {"dtype", "shape", "data_offsets": [begin, end]}, plus an optional
 * "__metadata__" object of strings), then the byte buffer, which the
 * tensors' [begin, end) ranges cover exactly, without overlaps or holes. */

#define FC_ST_MAX_HEADER ((uint64_t)100 << 20) /* the reference implementation's cap */

/* The dtypes of the format that take whole bytes. The sub-byte ones (F4,
 * F6_E2M3, F6_E3M2) are FC_ERR_UNSUPPORTED. */
typedef enum fc_st_dtype {
	FC_ST_BOOL = 0,
	FC_ST_U8,
	FC_ST_I8,
	FC_ST_F8_E5M2,
	FC_ST_F8_E4M3,
	FC_ST_F8_E8M0,
	FC_ST_I16,
	FC_ST_U16,
	FC_ST_F16,
	FC_ST_BF16,
	FC_ST_I32,
	FC_ST_U32,
	FC_ST_F32,
	FC_ST_F64,
	FC_ST_I64,
	FC_ST_U64,
	FC_ST_NDTYPES
} fc_st_dtype;

/* fc_st_dtype_name - "F32", "I64", ... as in the header; NULL if t is out
 * of range. fc_st_dtype_size - bytes per element, 0 if out of range.
 * fc_st_dtype_parse - the reverse of _name: 0, or FC_ERR_INVALID. */
const char *fc_st_dtype_name(fc_st_dtype t);
size_t fc_st_dtype_size(fc_st_dtype t);
int fc_st_dtype_parse(const char *s, fc_st_dtype *out);

/* One tensor. Writing: the caller's description, nbytes ignored (the
 * writer computes it from shape and dtype); data holds that many bytes,
 * little-endian, C order, and may be NULL when it is 0. Reading: everything
 * points into the fc_st_file and is valid until fc_st_free. */
typedef struct fc_st_tensor {
	const char *name;      /* UTF-8, not "__metadata__" */
	fc_st_dtype dtype;
	size_t ndim;           /* 0 for a scalar (shape []) */
	const uint64_t *shape; /* ndim dims, each <= INT64_MAX; may be NULL when ndim is 0 */
	const void *data;
	size_t nbytes;         /* reading: end - begin = product(shape) * size(dtype) */
} fc_st_tensor;

/* One __metadata__ entry: UTF-8 strings. */
typedef struct fc_st_meta {
	const char *key;
	const char *value;
} fc_st_meta;

/* fc_st_write - write n tensors, laid out back to back in the order given,
 * and n_meta metadata entries (written as "__metadata__" first in the
 * header, in the order given; omitted when n_meta is 0), atomically.
 * The header is compact JSON (no spaces, fields in the order dtype, shape,
 * data_offsets; `"`, `\` and control characters escaped as Python's
 * json.dumps(ensure_ascii=False) does) padded with spaces to a multiple of
 * 8 bytes. Tensors start at multiples of their element size only if the
 * caller orders them so (widest dtype first, say); PyTorch reads either.
 * FC_ERR_INVALID for duplicate or invalid (non-UTF-8, NULL, "__metadata__")
 * names or keys, an unknown dtype, a dim above INT64_MAX, NULL data with
 * nbytes > 0, a header above FC_ST_MAX_HEADER; FC_ERR_OVERFLOW when the
 * sizes overflow; I/O errors as above.
 * tensors and meta may be NULL when their count is 0. */
int fc_st_write(const char *path, const fc_st_tensor *tensors, size_t n,
		const fc_st_meta *meta, size_t n_meta, char *errbuf, size_t errcap);

/* fc_st_encode - the bytes fc_st_write would write, in a malloc'd buffer:
 * *out (free() it) of *out_len bytes. Same errors, minus the I/O ones. */
int fc_st_encode(void **out, size_t *out_len, const fc_st_tensor *tensors, size_t n,
		 const fc_st_meta *meta, size_t n_meta, char *errbuf, size_t errcap);

typedef struct fc_st_file fc_st_file;

/* fc_st_open - read a whole safetensors file into memory and check it:
 * header length (<= FC_ST_MAX_HEADER, within the file), a JSON object
 * starting with '{' (trailing spaces allowed) without duplicate keys, every
 * entry with exactly dtype (known), shape (integers >= 0) and data_offsets
 * (two integers, begin <= end), end - begin equal to the shape's element
 * count times the dtype size (overflow-checked), the ranges covering the
 * byte buffer exactly, and __metadata__ an object of strings.
 * *out is NULL on failure. The buffer is placed so that the byte buffer
 * starts 64-byte aligned: a tensor whose begin is a multiple of its element
 * size can be used in place (as float *, ...); fc_st_copy_f32/_i64 work on
 * any tensor. */
int fc_st_open(fc_st_file **out, const char *path, char *errbuf, size_t errcap);

/* fc_st_parse - the same from len bytes at src, which are copied (src may
 * be freed after the call). */
int fc_st_parse(fc_st_file **out, const void *src, size_t len, char *errbuf, size_t errcap);

/* fc_st_free - release f and everything it handed out. Accepts NULL. */
void fc_st_free(fc_st_file *f);

/* fc_st_count / fc_st_at - the tensors in byte-buffer order (the order
 * fc_st_write was given them); fc_st_at returns NULL when i >= count. */
size_t fc_st_count(const fc_st_file *f);
const fc_st_tensor *fc_st_at(const fc_st_file *f, size_t i);

/* fc_st_find - the tensor called name, or NULL. O(log n). */
const fc_st_tensor *fc_st_find(const fc_st_file *f, const char *name);

/* fc_st_meta_count / fc_st_meta_at - the __metadata__ entries in header
 * order; fc_st_meta_find - the value for key, or NULL. */
size_t fc_st_meta_count(const fc_st_file *f);
const fc_st_meta *fc_st_meta_at(const fc_st_file *f, size_t i);
const char *fc_st_meta_find(const fc_st_file *f, const char *key);

/* fc_st_copy_f32 - dst (n floats) = the elements of t, converted from F32,
 * F16 or BF16 (exactly) or F64 (rounded to nearest). n must equal the
 * element count (FC_ERR_INVALID otherwise); FC_ERR_UNSUPPORTED for other
 * dtypes. Works whatever the alignment of t->data. */
int fc_st_copy_f32(float *dst, size_t n, const fc_st_tensor *t);

/* fc_st_copy_i64 - dst (n int64) = the elements of t, from any integer
 * dtype or BOOL; FC_ERR_OVERFLOW for a U64 value above INT64_MAX. */
int fc_st_copy_i64(int64_t *dst, size_t n, const fc_st_tensor *t);

/* ----------------------------------------------------------------- npy */

/* The NumPy format (numpy.lib.format, NEP 1): "\x93NUMPY", major, minor,
 * a little-endian header length (u16 in 1.0, u32 in 2.0/3.0), a Python dict
 * literal {'descr', 'fortran_order', 'shape'} padded with spaces and ending
 * in '\n', then the data. */

#define FC_NPY_MAX_HEADER 65536 /* bytes of dict we accept (numpy writes ~128) */

/* fc_npy_write_f32 - write a rows x cols float32 matrix (row-major, rows *
 * cols floats at data) as a version 1.0 .npy ('<f4', C order), header
 * padded so that the data starts at byte 128 (a multiple of 64), atomically.
 * data may be NULL when rows * cols is 0. FC_ERR_INVALID for a dim above
 * INT64_MAX (numpy could not read it), FC_ERR_OVERFLOW when the size
 * overflows; I/O errors as above. */
int fc_npy_write_f32(const char *path, const float *data, size_t rows, size_t cols,
		     char *errbuf, size_t errcap);

/* The same file written a block of rows at a time, for matrices that are
 * never whole in memory: open with the final shape, append exactly `rows`
 * rows in any number of calls, finish (which commits), then free. */
typedef struct fc_npy_writer fc_npy_writer;

/* fc_npy_writer_open - *out is NULL on failure (errbuf explains). */
int fc_npy_writer_open(fc_npy_writer **out, const char *path, size_t rows, size_t cols,
		       char *errbuf, size_t errcap);

/* fc_npy_writer_append - nrows rows (nrows x cols floats at src). More rows
 * than declared in total is FC_ERR_INVALID and spoils the writer. */
int fc_npy_writer_append(fc_npy_writer *w, const float *src, size_t nrows);

/* fc_npy_writer_finish - commit the file; FC_ERR_INVALID (and no file) if
 * fewer rows than declared were appended. Call at most once. */
int fc_npy_writer_finish(fc_npy_writer *w);

/* fc_npy_writer_free - release w; an unfinished file is abandoned (its
 * temporary removed). Accepts NULL. */
void fc_npy_writer_free(fc_npy_writer *w);

/* fc_npy_writer_errmsg - the last failure's message ("" if none). */
const char *fc_npy_writer_errmsg(const fc_npy_writer *w);

/* fc_npy_read_f32 - read a 2-D float matrix from an .npy of version 1.0,
 * 2.0 or 3.0 whose descr is f4 or f2, little- or big-endian ('<f4', '>f2',
 * '=f4', 'f4', ...), in C or Fortran order; f2 is converted to f32 exactly
 * and Fortran order transposed, so *data is always rows x cols row-major
 * f32. *data is 64-byte aligned and malloc'd (free() it), NULL when rows *
 * cols is 0; on failure *data is NULL and *rows, *cols are 0.
 * FC_ERR_CORRUPT for a bad magic, header or a data length other than rows
 * * cols * itemsize (truncated or with trailing bytes), FC_ERR_VERSION,
 * FC_ERR_UNSUPPORTED for another dtype or a shape that is not 2-D. */
int fc_npy_read_f32(float **data, size_t *rows, size_t *cols, const char *path,
		    char *errbuf, size_t errcap);

/* fc_npy_parse_f32 - the same from len bytes at src. */
int fc_npy_parse_f32(float **data, size_t *rows, size_t *cols, const void *src, size_t len,
		     char *errbuf, size_t errcap);

#ifdef __cplusplus
}
#endif
#endif /* FEATCACHE_IO_H */
