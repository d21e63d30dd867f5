/*
 * common.h - private helpers every part of libfeatcache shares (not API).
 */
#ifndef FC_COMMON_H
#define FC_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* fc_os_error - strerror(e) in the house style (lowercase first letter),
 * written into out[cap]; returns out. Thread-safe. */
const char *fc_os_error(char *out, size_t cap, int e);

/* fc_read_file - read the whole file at path into *buf (realloc'd and
 * grown as needed; *cap is its size, so one buffer can serve many files),
 * *len bytes. Files larger than max bytes are refused before reading.
 * Returns 0, or FC_ERR_NOT_FOUND / FC_ERR_IO (with the OS's reason),
 * FC_ERR_OVERFLOW or FC_ERR_NOMEM, and why[whycap] says why in lowercase
 * words, without the path: callers name the file. */
int fc_read_file(const char *path, uint64_t max, uint8_t **buf, size_t *cap, size_t *len, char *why,
		 size_t whycap);

/* fc_l2_normalize_rows - dst row r = src row r / its L2 norm (summed in
 * double), for rows x dim floats; a row whose squared norm is not > 0 (all
 * zeros, or NaN) is copied unchanged. dst may equal src. The head's
 * normalised embeddings and the engine's LpNormalization both use it, so
 * an exported model computes what `featcache embed --head` computes. */
void fc_l2_normalize_rows(float *dst, const float *src, size_t rows, size_t dim);

#endif /* FC_COMMON_H */
