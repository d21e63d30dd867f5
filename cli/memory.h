/*
 * memory.h - how much memory train, sweep and eval may use, and the plan
 * that keeps them within it: the features of the splits in RAM in the
 * stored dtype when they fit, else streamed from the store through a cache
 * of decoded chunks, else a clear error naming what is needed.
 *
 * Command-line layer only; messages and exit codes as cli.h.
 */
#ifndef CLI_MEMORY_H
#define CLI_MEMORY_H

#include <stdint.h>

#include "featcache/store.h"

/* Without --max-memory a run may use this share of MemAvailable. */
#define CLI_MEM_SHARE_NUM 3
#define CLI_MEM_SHARE_DEN 4
/* Without --cache the streaming cache holds this much. */
#define CLI_CACHE_DEFAULT ((uint64_t)256 << 20)
/* What a run takes besides its data: code, oneDNN, the head, the
 * optimizer, the batch buffers and the per-thread scratch. */
#define CLI_MEM_BASE ((uint64_t)96 << 20)

/* cli_mem_available - MemAvailable of /proc/meminfo in bytes; 0 when it
 * cannot be read. */
uint64_t cli_mem_available(void);

/* cli_parse_size - "4G", "512M", "1.5GiB", "300k" or a plain number of
 * bytes (K, M, G, T are powers of 1024; a trailing "B" or "iB" is
 * allowed) into *out; a usage error of cmd naming opt otherwise. */
int cli_parse_size(const char *cmd, const char *opt, const char *val, uint64_t *out);

/* cli_size_text - bytes as "1.3 GiB", "512 MiB", "40 KiB" or "12 B". */
const char *cli_size_text(char *buf, size_t cap, uint64_t bytes);

/* The memory options as given (0: not given). */
typedef struct cli_mem_opts {
	uint64_t max_memory, cache;
} cli_mem_opts;

/* cli_mem_limit - --max-memory, or the default share of MemAvailable (no
 * limit when that cannot be read). */
uint64_t cli_mem_limit(const cli_mem_opts *o);

/* One split's rows as a run reads them: m holds the keys, labels and
 * splits (and, in memory, the features); x the features as rows, in m's
 * packed or f32 matrix, or through `view` from the run's stream. */
typedef struct cli_stream_view {
	fc_stream *stream; /* shared by the run's splits (not owned) */
	size_t first;      /* this split's first row in the stream's row list */
	uint32_t *idx;     /* scratch for shifted row numbers */
	size_t cap;
} cli_stream_view;

/* The splits of a run, features and all, within a memory limit. */
typedef struct cli_feature_plan {
	int streamed;
	uint64_t need, limit, cache; /* what the chosen way needs; the limit; the cache */
	fc_stream *stream;
	uint8_t (*hashes)[FC_HASH_LEN]; /* the stream's rows: every split's, in turn */
	fc_store *store;                /* kept open while streaming */
} cli_feature_plan;

#endif /* CLI_MEMORY_H */
