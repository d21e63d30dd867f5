/*
 * util.h - what every module of libfeatcache shares and none owns (private:
 * not API; the CLI and the tests include it too).
 *
 *   errors   one error-buffer convention: a function that can fail before
 *            it has an object to keep a message in takes `char *err, size_t
 *            errcap` and writes one lowercase line there (no final period,
 *            truncated to errcap, NUL-terminated; err may be NULL).
 *            FC_ERRLEN (featcache.h) bytes never truncate a message of ours.
 *   files    the whole-file reader and the atomic output file
 *   bytes    little-endian loads and stores, f32 <-> f16/bf16
 *   numbers  the splitmix64 generator, L2 row normalisation
 *
 * Names: fci_ is a library-internal function or type, declared in a private
 * header beside its .c (HACKING.md); fc_ is public API in include/featcache/.
 */
#ifndef FC_UTIL_H
#define FC_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "featcache/featcache.h"

#if defined(__GNUC__) || defined(__clang__)
#define FC_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define FC_PRINTF(f, a)
#endif

/* ---- errors ---- */

/* fci_errf - format the message into err[errcap] (when err is not NULL and
 * errcap > 0) and return code, so that `return fci_errf(err, errcap,
 * FC_ERR_INVALID, "bad %s", x);` reports and fails in one line. */
int fci_errf(char *err, size_t errcap, int code, const char *fmt, ...) FC_PRINTF(4, 5);

/* fci_verrf - fci_errf with a va_list, for objects that keep their own
 * message and wrap it (ap is consumed). */
int fci_verrf(char *err, size_t errcap, int code, const char *fmt, va_list ap) FC_PRINTF(4, 0);

/* fci_os_error - strerror(e) in the house style (lowercase first letter),
 * written into out[cap]; returns out. Thread-safe. */
const char *fci_os_error(char *out, size_t cap, int e);

/* fci_errno_code - the FC_ERR_* for an errno value: FC_ERR_NOT_FOUND
 * (ENOENT, ENOTDIR), FC_ERR_FULL (ENOSPC, EDQUOT, EFBIG), FC_ERR_NOMEM,
 * else FC_ERR_IO. */
int fci_errno_code(int e);

/* ---- files ---- */

/* fci_read_file - read the whole file at path into *buf (realloc'd and
 * grown as needed; *cap is its size, so one buffer can serve many files),
 * *len bytes. Files larger than max bytes are refused before reading.
 * Returns 0, or FC_ERR_NOT_FOUND / FC_ERR_IO (with the OS's reason),
 * FC_ERR_OVERFLOW or FC_ERR_NOMEM, and why[whycap] says why in lowercase
 * words, without the path: callers name the file. */
int fci_read_file(const char *path, uint64_t max, uint8_t **buf, size_t *cap, size_t *len, char *why,
		  size_t whycap);

/* fci_map_file - map the whole file at path read-only and private
 * (MAP_PRIVATE: featcache never writes through it). *data is the bytes
 * (a non-NULL address even for an empty file), *len their count; release
 * with fci_unmap_file. Pages are read on first touch. Rewriting the file
 * in place while it is mapped changes what is read from pages not yet
 * touched, and truncating it makes reads past the new end fault (SIGBUS):
 * callers keep the mapping for as short a time as they can. Same errors
 * and `why` as fci_read_file (path not included). */
int fci_map_file(const char *path, uint64_t max, const uint8_t **data, size_t *len, char *why, size_t whycap);
void fci_unmap_file(const uint8_t *data, size_t len);

/* The atomic output file. The bytes go to a temporary file in the target's
 * directory (".<name>.<pid>-<n>.tmp"), which is fsync'd and renamed over the
 * target, and then the directory is fsync'd. On any failure the temporary is
 * removed and an existing target is left as it was; only a process killed
 * mid-write leaves a temporary behind. Every file featcache writes outside a
 * store goes through it. */
typedef struct fci_outfile fci_outfile;

/* fci_outfile_open - start writing `path`: a new temporary file in the same
 * directory, created with mode 0666 & ~umask, that replaces `path` only when
 * fci_outfile_commit succeeds. *out is NULL on failure (err explains). */
int fci_outfile_open(fci_outfile **out, const char *path, char *err, size_t errcap);

/* fci_outfile_write - append len bytes (buffered). After a failure every
 * later write and the commit return the same error. */
int fci_outfile_write(fci_outfile *f, const void *src, size_t len);

/* fci_outfile_printf - formatted text through fci_outfile_write. */
int fci_outfile_printf(fci_outfile *f, const char *fmt, ...) FC_PRINTF(2, 3);

/* fci_outfile_commit - flush, fsync, close, rename over the target, fsync the
 * directory. On failure the temporary is removed. Call at most once. */
int fci_outfile_commit(fci_outfile *f);

/* fci_outfile_free - release f; removes the temporary unless committed (so
 * freeing without commit abandons the file). Accepts NULL. */
void fci_outfile_free(fci_outfile *f);

/* fci_outfile_errmsg - the message of the last failure ("" if none), valid
 * until the next call on f. */
const char *fci_outfile_errmsg(const fci_outfile *f);

/* fci_write_file - the whole of data[len] into path through the atomic
 * output file in one call; on failure err says why (the reason only: the
 * caller names the file) and path is left as it was. */
int fci_write_file(const char *path, const void *data, size_t len, char *err, size_t errcap);

/* ---- bytes ---- */

static inline uint16_t fci_load_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t fci_load_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t fci_load_le64(const uint8_t *p)
{
	return (uint64_t)fci_load_le32(p) | (uint64_t)fci_load_le32(p + 4) << 32;
}

static inline void fci_store_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline void fci_store_le64(uint8_t *p, uint64_t v)
{
	fci_store_le32(p, (uint32_t)v);
	fci_store_le32(p + 4, (uint32_t)(v >> 32));
}

static inline uint32_t fci_f32_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

static inline float fci_f32_from_bits(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

/* f32 <-> IEEE binary16 and bfloat16, n elements, round to nearest even.
 * f16: overflow goes to inf; NaNs stay NaN (made quiet), as the F16C
 * instructions do, which are used when the CPU has them (calls with n < 8
 * always run the portable code: the tests check both paths with that). */
void fci_f32_to_f16(uint16_t *dst, const float *src, size_t n);
void fci_f16_to_f32(float *dst, const uint16_t *src, size_t n);
void fci_f32_to_bf16(uint16_t *restrict dst, const float *restrict src, size_t n);
void fci_bf16_to_f32(float *restrict dst, const uint16_t *restrict src, size_t n);

/* ---- numbers ---- */

/* fci_splitmix64 - the next value of Steele, Lea and Flood's splitmix64
 * generator with state *s. Every seeded stream in featcache (initial
 * weights, samplers, sweeps, test data) starts here, so a seed means the
 * same thing everywhere. */
static inline uint64_t fci_splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* fci_unit_double - a uniform double in [0, 1) from the top 53 bits of x. */
static inline double fci_unit_double(uint64_t x)
{
	return (double)(x >> 11) * 0x1p-53;
}

/* fci_l2_normalize_rows - dst row r = src row r / its L2 norm (summed in
 * double), for rows x dim floats; a row whose squared norm is not > 0 (all
 * zeros, or NaN) is copied unchanged. dst may equal src. The head's
 * normalised embeddings and the engine's LpNormalization both use it, so
 * an exported model computes what `featcache embed --head` computes. */
void fci_l2_normalize_rows(float *dst, const float *src, size_t rows, size_t dim);

#endif /* FC_UTIL_H */
