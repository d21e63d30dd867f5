/*
 * featcache.h - what every part of libfeatcache shares: the version, the error
 * codes and the logging/progress callbacks.
 *
 * The library never prints and never exits. It returns an int (0 on success,
 * a negative FC_ERR_* on failure) and reports progress and warnings only
 * through the fc_logger the caller installs. Objects that can fail in ways
 * worth explaining keep a message of their own (fc_store_errmsg, ...).
 */
#ifndef FEATCACHE_H
#define FEATCACHE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FC_VERSION_MAJOR 0
#define FC_VERSION_MINOR 1
#define FC_VERSION_PATCH 0
#define FC_VERSION_STRING "0.1.0"

/* Error codes. The values are fixed: they are part of the ABI and appear in
 * scripts that check exit paths. Never renumber, only append. */
enum {
	FC_OK = 0,
	FC_ERR_NOMEM = -1,       /* allocation failed */
	FC_ERR_IO = -2,          /* a read, write or sync failed (errno kept in the message) */
	FC_ERR_CORRUPT = -3,     /* a record or file fails its checks */
	FC_ERR_VERSION = -4,     /* a format newer or older than this build understands */
	FC_ERR_NOT_FOUND = -5,   /* no such key, file, layer, ... */
	FC_ERR_INVALID = -6,     /* a bad argument or option value */
	FC_ERR_FULL = -7,        /* disk full or the store reached its size cap */
	FC_ERR_NOT_STORE = -8,   /* a directory that is not a featcache store */
	FC_ERR_UNSUPPORTED = -9, /* valid input this build cannot handle */
	FC_ERR_EXISTS = -10,     /* the thing to create is already there */
	FC_ERR_BUSY = -11,       /* the resource is in use (e.g. map resize with open readers) */
	FC_ERR_OVERFLOW = -12,   /* sizes from a file or argument overflow size_t */
	FC_ERR_INTERNAL = -13,   /* a dependency failed in a way we did not expect */
	FC_ERR_INTERRUPTED = -14 /* stopped on request (signal, callback) */
};

/* FC_ERRLEN - the size of an error buffer that never truncates a message of
 * featcache's (messages quote paths up to PATH_MAX). Every function that
 * can fail before it has an object to keep a message in takes
 * `char *err, size_t errcap` and writes one lowercase line there, without a
 * final period; err may be NULL. */
#define FC_ERRLEN 4400

/* fc_strerror - a short lowercase description of an FC_ERR_* code.
 * Never returns NULL; unknown codes give "unknown error". */
const char *fc_strerror(int err);

/* fc_version - FC_VERSION_STRING of the library actually linked. */
const char *fc_version(void);

enum { FC_LOG_DEBUG = 0, FC_LOG_INFO = 1, FC_LOG_WARN = 2, FC_LOG_ERROR = 3 };

/* The caller's window on long work. Every member may be NULL.
 * log:      one message, no trailing newline.
 * progress: `done` of `total` units of `what` are finished; total is 0 when
 *           unknown. Called at most a few times per second by well-behaved
 *           code; returning non-zero asks the work to stop with
 *           FC_ERR_INTERRUPTED at the next safe point. */
typedef struct fc_logger {
	void (*log)(void *ctx, int level, const char *msg);
	int (*progress)(void *ctx, const char *what, uint64_t done, uint64_t total);
	void *ctx;
} fc_logger;

#ifdef __cplusplus
}
#endif
#endif /* FEATCACHE_H */
