/*
 * common.h - private helpers every part of libfeatcache shares (not API).
 */
#ifndef FC_COMMON_H
#define FC_COMMON_H

#include <stddef.h>

/* fc_os_error - strerror(e) in the house style (lowercase first letter),
 * written into out[cap]; returns out. Thread-safe. */
const char *fc_os_error(char *out, size_t cap, int e);

#endif /* FC_COMMON_H */
