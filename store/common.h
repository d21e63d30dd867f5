/*
 * common.h - private helpers every part of libfeatcache shares (not API).
 */
#ifndef FC_COMMON_H
#define FC_COMMON_H

#include <stddef.h>

/* fc_os_error - strerror(e) in the house style (lowercase first letter),
 * written into out[cap]; returns out. Thread-safe. */
const char *fc_os_error(char *out, size_t cap, int e);

/* fc_l2_normalize_rows - dst row r = src row r / its L2 norm (summed in
 * double), for rows x dim floats; a row whose squared norm is not > 0 (all
 * zeros, or NaN) is copied unchanged. dst may equal src. The head's
 * normalised embeddings and the engine's LpNormalization both use it, so
 * an exported model computes what `featcache embed --head` computes. */
void fc_l2_normalize_rows(float *dst, const float *src, size_t rows, size_t dim);

#endif /* FC_COMMON_H */
