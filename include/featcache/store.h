/*
 * store.h - the feature store: one LMDB environment (a directory) holding the
 * dataset's items and labels, the extractors' descriptors and, per extractor,
 * the extracted features in compressed chunks addressed by content hash.
 *
 * Named databases (docs/design.md, "Store"):
 *   meta                format version, creation info, what the last verify found,
 *                       the dataset root
 *   items               item key -> fc_item record
 *   labels              label name <-> label id
 *   extractors          extractor id (16 B) -> JSON descriptor
 *   feat.<id-hex>       chunk id (u64 big-endian) -> chunk (see store/chunk.h)
 *   index.<id-hex>      content hash (16 B) -> chunk id + slot
 *   errors              item key -> why extraction failed
 *
 * Every write is one LMDB write transaction: either all of it is on disk or
 * none of it. Readers work on a snapshot and may run while a writer appends.
 * A store handle is used by one thread at a time; the loaders parallelise
 * internally with OpenMP.
 */
#ifndef FEATCACHE_STORE_H
#define FEATCACHE_STORE_H

#include "featcache.h"
#include "rows.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The store layout this build creates. Format 2 (featcache 0.x, 2026-12)
 * writes item and index records as varints; format 1 stores are still
 * read and written, each in its own format (fc_store_format). */
#define FC_STORE_FORMAT 2
#define FC_STORE_FORMAT_MIN 1 /* the oldest format this build reads and writes */

/* How one feature vector is kept on disk. */
typedef enum fc_dtype {
	FC_DTYPE_F32 = 0,  /* lossless */
	FC_DTYPE_F16 = 1,  /* IEEE half, round to nearest even */
	FC_DTYPE_BF16 = 2, /* bfloat16, round to nearest even */
	FC_DTYPE_U8 = 3    /* per-vector affine u8: x ~ lo + q * step */
} fc_dtype;

typedef enum fc_codec {
	FC_CODEC_RAW = 0,
	FC_CODEC_ZSTD = 1,
	FC_CODEC_SHUFFLE_ZSTD = 2 /* byte-shuffle (byte i of every element together), then zstd */
} fc_codec;

/* Names as used in descriptors and on the command line ("f16",
 * "shuffle-zstd", ...). The parsers return 0 or FC_ERR_INVALID. */
const char *fc_dtype_name(fc_dtype t);
const char *fc_codec_name(fc_codec c);
int fc_dtype_parse(const char *s, fc_dtype *out);
int fc_codec_parse(const char *s, fc_codec *out);

typedef enum fc_split {
	FC_SPLIT_TRAIN = 0,
	FC_SPLIT_VAL = 1,
	FC_SPLIT_TEST = 2,
	FC_SPLIT_NONE = 255
} fc_split;
#define FC_SPLIT_MASK_ALL 0x7u /* bit (1 << split) per split */
int fc_split_parse(const char *s, int *out); /* "train", "val", "test" */

typedef enum fc_item_status {
	FC_ITEM_OK = 0,     /* decodable; has (or will have) a vector per extractor */
	FC_ITEM_FAILED = 1  /* could not be decoded; see the errors db */
} fc_item_status;

#define FC_NO_LABEL UINT32_MAX
#define FC_HASH_LEN 16
#define FC_KEY_MAX 4000 /* item keys are at most this many bytes (LMDB's key limit is lower: see fc_store_max_key) */

/* One dataset item. `key` is the dataset-relative path. */
typedef struct fc_item {
	const char *key;
	uint8_t hash[FC_HASH_LEN]; /* XXH3-128 of the file bytes, big-endian */
	uint64_t size;             /* file size in bytes */
	int64_t mtime_ns;          /* modification time, ns since the epoch */
	uint32_t label;            /* label id or FC_NO_LABEL */
	uint8_t split;             /* fc_split */
	uint8_t status;            /* fc_item_status */
} fc_item;

/* An extractor: the identity of one feature set (model, cut layer,
 * preprocessing, precision) and how its features are stored.
 * `descriptor` is a JSON object with whatever describes the extractor to a
 * person (model path and hash, layer, preprocessing, ...); the store adds
 * dim, dtype, codec and level to it and keeps it verbatim otherwise. */
typedef struct fc_extractor {
	uint8_t id[FC_HASH_LEN];
	uint32_t dim;
	fc_dtype dtype;
	fc_codec codec;
	int level;              /* zstd level (1..19); ignored for raw */
	const char *descriptor; /* JSON object text, or NULL for {} */
} fc_extractor;

typedef struct fc_store fc_store;

typedef struct fc_store_opts {
	int create;            /* create the store if the directory has none */
	int readonly;          /* open without write access */
	uint64_t map_size;     /* initial map size in bytes; 0 = 1 GiB */
	uint64_t max_map_size; /* grow the map up to this; 0 = no cap beyond the disk */
	int nosync;            /* 1: no fsync on commit (LMDB's MDB_NOSYNC): faster, but a system
				* crash can undo the last commits. 0 (a zero-initialised
				* struct, or opts NULL): each commit is on disk when it returns */
	/* writer: when set (and not readonly), hold the store's one-writer lock
	 * until fc_store_free, under this name ("extract", "merge", "gc"): a
	 * second writer gets FC_ERR_BUSY with a message naming the first
	 * (command, pid, host, since when), or with `wait` waits for it.
	 * Readers never take it and are never blocked. */
	const char *writer;
	int wait;
	const fc_logger *logger;
	/* format: with create, the format of a new store (0: FC_STORE_FORMAT;
	 * 1 makes a store older featcache can open). Ignored for an existing
	 * store, which keeps its own. */
	unsigned format;
} fc_store_opts;

/* fc_store_open - open (or with opts->create, create) the store at `path`.
 * *out is set even on failure when the handle could be allocated, so that
 * fc_store_errmsg() can explain; free it with fc_store_free() either way.
 * Refuses a directory that holds something other than a featcache store
 * (FC_ERR_NOT_STORE) and a store format this build does not know
 * (FC_ERR_VERSION). opts may be NULL (open existing, read-write, durable). */
int fc_store_open(fc_store **out, const char *path, const fc_store_opts *opts);

/* fc_store_format - the format of the open store (FC_STORE_FORMAT_MIN ..
 * FC_STORE_FORMAT). */
unsigned fc_store_format(const fc_store *s);

/* fc_store_free - close the store. Accepts NULL. */
void fc_store_free(fc_store *s);

/* fc_store_errmsg - the message of the last failed call on this handle
 * ("" if none). Valid until the next call on the handle. */
const char *fc_store_errmsg(const fc_store *s);

/* fc_store_path - the directory the store was opened at. */
const char *fc_store_path(const fc_store *s);

/* fc_store_max_key - the longest item key (bytes) this store accepts. */
size_t fc_store_max_key(const fc_store *s);

/* fc_store_is_durable - 1 if every commit through s is flushed to disk
 * before the call returns (the store was opened without opts->nosync),
 * 0 if not or s is NULL or not open. */
int fc_store_is_durable(const fc_store *s);

/* ---- extractors ---- */

/* fc_store_put_extractor - record an extractor. Re-adding one with the same
 * id and storage settings is a no-op; the same id with different storage
 * settings is FC_ERR_EXISTS. */
int fc_store_put_extractor(fc_store *s, const fc_extractor *ex);

/* fc_store_get_extractor - look one up. On success *out is filled and
 * out->descriptor points at a string owned by the store, valid until the
 * next call on `s`. FC_ERR_NOT_FOUND if unknown. */
int fc_store_get_extractor(fc_store *s, const uint8_t id[FC_HASH_LEN], fc_extractor *out);

/* fc_store_list_extractors - every extractor id, in id order.
 * *ids is malloc'd (free() it); *n is the count. */
int fc_store_list_extractors(fc_store *s, uint8_t (**ids)[FC_HASH_LEN], size_t *n);

/* fc_store_find_extractor - resolve a hex prefix (at least 4 digits) to one id.
 * FC_ERR_NOT_FOUND if none matches, FC_ERR_INVALID if several do. */
int fc_store_find_extractor(fc_store *s, const char *hex_prefix, uint8_t id[FC_HASH_LEN]);

/* ---- features ---- */

/* fc_store_append - write one batch: `n` vectors of the extractor's dim (row
 * major, f32) and their content hashes, as one chunk plus n index entries,
 * in one write transaction. A hash already in the index keeps its existing
 * vector (its new slot is dead until gc). n may be at most 65535.
 * *chunk_id (may be NULL) receives the new chunk's id. */
int fc_store_append(fc_store *s, const uint8_t exid[FC_HASH_LEN], const float *vecs,
		    const uint8_t (*hashes)[FC_HASH_LEN], size_t n, uint64_t *chunk_id);

/* fc_store_has - 1 if the extractor has a vector for `hash`, 0 if not, <0 on error. */
int fc_store_has(fc_store *s, const uint8_t exid[FC_HASH_LEN], const uint8_t hash[FC_HASH_LEN]);

/* fc_store_get - decode the vector for one content hash into dst[dim]. */
int fc_store_get(fc_store *s, const uint8_t exid[FC_HASH_LEN], const uint8_t hash[FC_HASH_LEN],
		 float *dst, size_t dst_len);

/* A loaded feature matrix: rows x dim f32, row-major, 64-byte aligned, in
 * `data`; or, loaded with FC_LOAD_STORED, in the extractor's dtype in
 * `packed` (type, with the u8 (lo, step) pairs in `scale`) and data NULL
 * unless that dtype is f32; or, with FC_LOAD_NONE, no features at all.
 * fc_matrix_rows views the features, whichever way they are kept.
 * `hashes` has one content hash per row. For fc_store_load_items, `keys`
 * and `labels` have one entry per row too (keys point into `keybuf`); for
 * fc_store_load_all they are NULL. Free with fc_matrix_free. */
typedef struct fc_matrix {
	float *data;
	size_t rows, dim;
	uint8_t (*hashes)[FC_HASH_LEN];
	const char **keys;
	uint32_t *labels;
	uint8_t *splits;
	char *keybuf;
	fc_row_type type; /* how the features are kept (f32 with data) */
	void *packed;     /* FC_LOAD_STORED of f16, bf16 or u8: rows x dim of type */
	float *scale;     /* u8: (lo, step) per row */
} fc_matrix;

void fc_matrix_free(fc_matrix *m); /* frees the members; accepts NULL */

/* fc_matrix_rows - the features of m as rows (featcache/rows.h): m->data
 * as f32, or the packed rows; n 0 when m holds no features. Valid while m
 * is and its rows are not moved. */
fc_rows fc_matrix_rows(const fc_matrix *m);

/* fc_store_load_all - every live vector of an extractor, in chunk order,
 * from one snapshot, decoded in parallel. */
int fc_store_load_all(fc_store *s, const uint8_t exid[FC_HASH_LEN], fc_matrix *out);

/* fc_store_load_items - one row per item (key order) whose split is in
 * split_mask (bits 1 << FC_SPLIT_*; FC_SPLIT_NONE items count as train),
 * status OK, and that has a vector for the extractor. Items sharing a
 * content hash get identical rows. *missing (may be NULL) counts OK items
 * of those splits that have no vector yet. The rows are f32
 * (fc_store_load_items_as with FC_LOAD_F32). */
int fc_store_load_items(fc_store *s, const uint8_t exid[FC_HASH_LEN], unsigned split_mask,
			fc_matrix *out, size_t *missing);

/* How fc_store_load_items_as keeps the features. */
typedef enum fc_load_how {
	FC_LOAD_F32 = 0,    /* decoded to f32 in data */
	FC_LOAD_STORED = 1, /* in the stored dtype (packed, scale): half of f32 for f16 */
	FC_LOAD_NONE = 2    /* only hashes, keys, labels and splits (for fc_stream) */
} fc_load_how;

/* fc_store_load_items_as - fc_store_load_items keeping the features as
 * `how` says. After any load the pages of the store's map that it read
 * are given back (madvise), so they do not count in the process's memory
 * beyond the load. */
int fc_store_load_items_as(fc_store *s, const uint8_t exid[FC_HASH_LEN], unsigned split_mask, fc_load_how how,
			   fc_matrix *out, size_t *missing);

/* fc_store_fill_rows - the features of a matrix loaded with FC_LOAD_NONE
 * (rows may have been dropped or reordered since, hashes kept with them),
 * kept as `how` says, from one snapshot. FC_ERR_NOT_FOUND names a hash
 * that has no vector (any more); on failure m holds no features. */
int fc_store_fill_rows(fc_store *s, const uint8_t exid[FC_HASH_LEN], fc_matrix *m, fc_load_how how);

/* ---- streaming features that do not fit in memory ---- */

/* A reader of one extractor's vectors by row of a row list (content
 * hashes), through the index, keeping chunks decoded from their codec (in
 * the stored dtype: their hashes and raw payload) in an LRU cache of at
 * most cache_bytes (at least one chunk is always kept). It holds a
 * read transaction: every row comes from the snapshot it was opened on. */
typedef struct fc_stream fc_stream;

/* fc_stream_open - a reader of rows hashes[0..n) (the array must outlive
 * it) of extractor exid. Every hash must have a vector (FC_ERR_NOT_FOUND
 * naming it otherwise). Errors are s's (fc_store_errmsg); s must outlive
 * the reader and is not used by the caller while it reads. */
int fc_stream_open(fc_stream **out, fc_store *s, const uint8_t exid[FC_HASH_LEN],
		   const uint8_t (*hashes)[FC_HASH_LEN], size_t n, size_t cache_bytes);
void fc_stream_free(fc_stream *r); /* accepts NULL */

/* fc_stream_fetch - fc_rows_fetch_fn: rows idx[0..n) as f32 into dst
 * (n, dim), bit-identical to the rows fc_store_load_items gives. Chunks
 * missing from the cache are read and decoded in parallel (OpenMP). */
int fc_stream_fetch(void *r, float *dst, const uint32_t *idx, size_t n);

/* fc_stream_rows - the reader as rows (featcache/rows.h): n rows of dim,
 * fetched through fc_stream_fetch. */
fc_rows fc_stream_rows(fc_stream *r);

/* fc_stream_stats - chunk reads and cache hits so far, and the bytes the
 * cache holds now (any pointer may be NULL). */
void fc_stream_stats(const fc_stream *r, uint64_t *reads, uint64_t *hits, size_t *bytes);

/* fc_store_foreach_chunk - call fn for every chunk of an extractor, in id
 * order, from one snapshot. `chunk` is the encoded chunk (store/chunk.h),
 * valid during the call only. A non-zero return from fn stops the walk and
 * is returned. */
typedef int (*fc_chunk_fn)(void *ctx, uint64_t chunk_id, const void *chunk, size_t len);
int fc_store_foreach_chunk(fc_store *s, const uint8_t exid[FC_HASH_LEN], fc_chunk_fn fn, void *ctx);

/* ---- items, labels, errors ---- */

/* fc_store_label_ids - map n label names to ids, creating missing ones,
 * in one write transaction. */
int fc_store_label_ids(fc_store *s, const char *const *names, size_t n, uint32_t *ids);

/* fc_store_label_name - the name of a label id, copied into buf. */
int fc_store_label_name(fc_store *s, uint32_t id, char *buf, size_t cap);

/* fc_store_put_items - insert or replace n items in one write transaction;
 * an item put with status OK loses its error record, if any.
 * Keys longer than fc_store_max_key() are FC_ERR_INVALID (nothing written). */
int fc_store_put_items(fc_store *s, const fc_item *items, size_t n);

/* fc_store_del_items - remove n items (and their error records); absent keys are ignored. */
int fc_store_del_items(fc_store *s, const char *const *keys, size_t n);

/* fc_store_get_item - look one up; out->key is set to `key`. */
int fc_store_get_item(fc_store *s, const char *key, fc_item *out);

/* fc_store_foreach_item - call fn for every item in key order from one
 * snapshot; out->key is valid during the call only. Non-zero from fn stops
 * the walk and is returned. */
typedef int (*fc_item_fn)(void *ctx, const fc_item *item);
int fc_store_foreach_item(fc_store *s, fc_item_fn fn, void *ctx);

/* fc_store_put_error - record why an item failed (replaces an older record). */
int fc_store_put_error(fc_store *s, const char *key, const char *why);

/* fc_store_foreach_error - every (key, message) pair in key order. */
typedef int (*fc_error_fn)(void *ctx, const char *key, const char *why);
int fc_store_foreach_error(fc_store *s, fc_error_fn fn, void *ctx);

/* ---- where the images are ---- */

/* fc_store_set_data_root - record root, the absolute directory the item
 * keys are relative to (a dataset directory, or a CSV's directory), in
 * meta; `featcache extract` does on every run. FC_ERR_INVALID for a path
 * that is not absolute or 4096 bytes or longer. Nothing is written when it
 * is already recorded. */
int fc_store_set_data_root(fc_store *s, const char *root);

/* fc_store_get_data_root - the recorded root, copied into buf (cap bytes).
 * FC_ERR_NOT_FOUND when the store records none (stores extracted before
 * featcache recorded it), FC_ERR_INVALID when cap is too small. */
int fc_store_get_data_root(fc_store *s, char *buf, size_t cap);

/* ---- one batch of everything ---- */

/* What one extraction batch changes, written by fc_store_write_batch in ONE
 * write transaction, so that a crash leaves all of it or none: items are
 * deleted, then the vectors appended (as fc_store_append; n_vecs may be 0),
 * then items put (as fc_store_put_items), then error records put. */
typedef struct fc_store_batch {
	const uint8_t *exid; /* FC_HASH_LEN bytes; needed when n_vecs > 0 */
	const float *vecs;
	const uint8_t (*hashes)[FC_HASH_LEN];
	size_t n_vecs;
	const fc_item *items;
	size_t n_items;
	const char *const *error_keys, *const *error_whys;
	size_t n_errors;
	const char *const *del_keys;
	size_t n_del;
} fc_store_batch;

/* fc_store_write_batch - write *b; *chunk_id (may be NULL) receives the new
 * chunk's id (0 when n_vecs is 0). Errors as the single-purpose calls. */
int fc_store_write_batch(fc_store *s, const fc_store_batch *b, uint64_t *chunk_id);

/* ---- extraction's writer: batches gathered into chunks ---- */

/* A chunk of one engine batch (32 vectors) is small enough that LMDB's
 * whole-page rounding and per-chunk records cost a tenth of its size. A
 * writer gathers batches and writes them as ONE chunk, with every item and
 * error record of those batches, in ONE transaction (as
 * fc_store_write_batch) once their vectors encode to at least chunk_bytes
 * (0: 64 KiB), or hold 65535 vectors or 16 MiB of f32. A crash loses only
 * the batches not yet written: since an item is written with its vector,
 * the next extract finds exactly those missing. Errors are the store's
 * (fc_store_errmsg). */
typedef struct fc_store_writer fc_store_writer;

/* fc_store_writer_new - a writer of the extractor exid (which must exist). */
int fc_store_writer_new(fc_store_writer **out, fc_store *s, const uint8_t exid[FC_HASH_LEN], size_t chunk_bytes);

/* fc_store_writer_add - copy one batch (n_del must be 0; exid the
 * writer's) and write what is pending if it is now large enough. A batch
 * with bad items or keys, or a value the storage dtype cannot hold (as
 * fc_store_append), is refused whole, and what was pending stays pending. */
int fc_store_writer_add(fc_store_writer *w, const fc_store_batch *b);

/* fc_store_writer_flush - write whatever is pending, however small. */
int fc_store_writer_flush(fc_store_writer *w);

/* fc_store_writer_written - vectors written (committed) so far;
 * fc_store_writer_pending - vectors added but not yet written. */
uint64_t fc_store_writer_written(const fc_store_writer *w);
size_t fc_store_writer_pending(const fc_store_writer *w);

/* fc_store_writer_free - free the writer, dropping what is pending (call
 * fc_store_writer_flush first to keep it). Accepts NULL. */
void fc_store_writer_free(fc_store_writer *w);

/* ---- whole-store operations ---- */

typedef struct fc_store_ex_stats {
	uint8_t id[FC_HASH_LEN];
	uint32_t dim;
	fc_dtype dtype;
	fc_codec codec;
	uint64_t vectors;     /* index entries (live vectors) */
	uint64_t slots;       /* vectors held by chunks, live or dead */
	uint64_t chunks;
	uint64_t chunk_bytes; /* encoded chunk bytes */
	uint64_t disk_bytes;  /* LMDB pages of feat.<id> and index.<id> */
	int broken;           /* its descriptor or databases cannot be read (verify says why) */
} fc_store_ex_stats;

/* What a verify found, as the store keeps it (meta "damage", written by
 * fc_store_verify_note and fc_store_repair) so that fc_store_stats_get can
 * tell without decoding anything. All zero: no damage on record, which
 * says only that no verify since the last repair found any. */
typedef struct fc_damage {
	uint64_t problems; /* findings reported */
	uint64_t chunks;   /* damaged chunks among them */
	uint64_t vectors;  /* index entries a repair drops: into damaged chunks, or broken */
	int64_t when;      /* unix time of the verify that found them (0 without a record) */
} fc_damage;

typedef struct fc_store_stats {
	uint64_t items, items_failed, labels, errors;
	uint64_t splits[4];   /* train, val, test, none */
	uint64_t file_bytes;  /* size of data.mdb */
	uint64_t used_bytes;  /* pages in use (all dbs + meta) */
	uint64_t bad_records; /* malformed items and unreadable extractors (verify names them) */
	fc_damage damage;     /* as the last verify or repair recorded it */
	uint32_t format;
	size_t n_extractors;
	fc_store_ex_stats *extractors; /* malloc'd, free() it */
} fc_store_stats;

int fc_store_stats_get(fc_store *s, fc_store_stats *out);

/* fc_store_verify - decode every chunk and check every index entry and
 * record. report(ctx, key, problem) is called once per bad key (key is a
 * printable name such as "feat.<id>/chunk 12" or "items/<key>").
 * Returns 0 when everything is sound, FC_ERR_CORRUPT when report was
 * called, or another error if the walk itself failed. */
typedef void (*fc_report_fn)(void *ctx, const char *key, const char *problem);
int fc_store_verify(fc_store *s, fc_report_fn report, void *ctx, uint64_t *checked);

/* fc_store_verify_note - fc_store_verify, then record what it found in the
 * store (see fc_damage): a damaged store gets a record, a sound one loses
 * its record. Nothing is written when the record already says the same,
 * so verifying a sound store leaves its files as they were. Needs a
 * writable handle. *found (may be NULL) receives the counts (when: now).
 * Returns as fc_store_verify. */
int fc_store_verify_note(fc_store *s, fc_report_fn report, void *ctx, uint64_t *checked, fc_damage *found);

/* dropped(ctx, key, vectors): fc_store_repair removed `key`
 * ("feat.<id>/chunk 12", "index.<id>/<hash>", "items/<key>") and with it
 * `vectors` index entries (1 for a broken entry, 0 for an item record). */
typedef void (*fc_drop_fn)(void *ctx, const char *key, uint64_t vectors);

typedef struct fc_repair_stats {
	uint64_t checked;         /* as fc_store_verify */
	fc_damage found;          /* what the verify pass found */
	uint64_t chunks_dropped;  /* damaged chunks deleted */
	uint64_t vectors_dropped; /* index entries deleted: those into the dropped chunks, and broken ones */
	uint64_t items_dropped;   /* malformed item records deleted (the next extract adds them again) */
	uint64_t left;            /* problems repair does not fix (label records, descriptors) */
} fc_repair_stats;

/* fc_store_repair - verify the store (findings go to report, as
 * fc_store_verify), then drop what cannot be read back: every damaged
 * chunk (it does not decode, or its dim, dtype or codec differ from the
 * extractor's) with every index entry that points into it, every broken
 * index entry (malformed, dangling, or naming a slot that holds another
 * hash) and every malformed item record. Items keep their content hashes,
 * so the next extract over the same data finds exactly those vectors
 * missing and extracts them again. dropped (may be NULL) is called once
 * per removed record, after the commit.
 *
 * Everything is dropped in ONE write transaction, together with the new
 * damage record (what is left, or none): an interrupted repair changes
 * nothing and can simply be run again. Each candidate is checked again
 * inside that transaction, so a concurrent writer cannot lose a vector.
 * Returns 0 when nothing is left to fix (including a sound store, which
 * is not written to), FC_ERR_CORRUPT when problems repair cannot fix
 * remain (out->left), or another error, with nothing changed. */
int fc_store_repair(fc_store *s, fc_report_fn report, fc_drop_fn dropped, void *ctx, fc_repair_stats *out);

typedef struct fc_gc_stats {
	uint64_t index_dropped;    /* index entries no item references */
	uint64_t chunks_rewritten; /* chunks rewritten without their dead slots */
	uint64_t chunks_dropped;   /* chunks with no live slot left */
	uint64_t slots_dropped;
	uint64_t errors_dropped;   /* error records of items that are gone */
	uint64_t bytes_before, bytes_after; /* encoded chunk bytes */
} fc_gc_stats;

/* fc_store_gc - drop the features of content hashes that no item references
 * any more, rewrite chunks that hold dead slots, and drop error records of
 * removed items. The orphan pass is one write transaction (items are read
 * inside it, so a concurrent extract cannot lose a vector); chunks are then
 * rewritten in transactions of at most 128 chunks, each deciding its live
 * slots inside the transaction that rewrites it. Interrupting gc between
 * transactions leaves a sound store. */
int fc_store_gc(fc_store *s, fc_gc_stats *out);

/* ---- merging stores ---- */

typedef struct fc_merge_opts {
	/* A write transaction holds at most this many chunks (0: 64) and, past
	 * its first chunk, at most this many encoded bytes (0: 64 MiB). */
	size_t batch_chunks;
	uint64_t batch_bytes;
	/* Descriptor members (top level) that may differ between the two
	 * stores for the same extractor id, such as where the model file was
	 * read from; NULL-terminated, or NULL for none. The destination keeps
	 * its own descriptor. */
	const char *const *descriptor_ignore;
} fc_merge_opts;

typedef struct fc_merge_stats {
	uint64_t items, items_present;     /* items copied / the destination had already */
	uint64_t errors, errors_present;   /* error records copied / already there */
	uint64_t labels;                   /* labels new to the destination */
	uint64_t extractors;               /* extractors new to the destination */
	uint64_t vectors, vectors_present; /* index entries written / content already indexed */
	uint64_t chunks, chunks_present;   /* chunks copied / left out: every live slot indexed */
	uint64_t bytes;                    /* encoded chunk bytes copied */
} fc_merge_stats;

/* fc_store_merge - copy what src holds into dst: extractors, labels (by
 * name: src's label ids become dst's ids of the same names), items (as
 * they are but for the label id), error records, and each extractor's
 * chunks as their encoded bytes under dst's next chunk ids, with the index
 * entries of their live slots. src is only read (it may be open read-only).
 *
 * First a read-only pass checks src against dst and writes nothing if it
 * fails: an extractor id whose descriptor or storage (dim, dtype, codec,
 * level) differs, an item key whose content hash, label name, split or
 * status differs (FC_ERR_EXISTS), a damaged src record or chunk, or src
 * index entries that do not point at a chunk slot holding their content
 * (FC_ERR_CORRUPT). The message names both stores and the key or id.
 * Then the writes, each a bounded transaction: extractors, labels, items
 * and error records (what dst has already is left as it is), then chunks
 * in batches (opts). A chunk whose live slots dst has all indexed is not
 * copied; one that dst has in part is copied whole, its other slots dead
 * until gc. So merging twice changes nothing, and rerunning a merge that
 * was stopped (killed, or FC_ERR_INTERRUPTED when dst's logger asks to
 * stop between batches) finishes it with the same result.
 *
 * Progress goes to dst's logger ("merge items", "merge chunks"). *stats
 * (may be NULL) has what was done, also on failure. opts may be NULL.
 * Errors are dst's (fc_store_errmsg(dst)). Refuses src and dst being the
 * same store (FC_ERR_INVALID). */
int fc_store_merge(fc_store *dst, fc_store *src, const fc_merge_opts *opts, fc_merge_stats *stats);

/* fc_merge_stats_add - to += from, field by field (totals over shards). */
void fc_merge_stats_add(fc_merge_stats *to, const fc_merge_stats *from);

/* fc_hex - write 2*n lowercase hex digits and a NUL into out. */
void fc_hex(char *out, const uint8_t *bytes, size_t n);

#ifdef __cplusplus
}
#endif
#endif /* FEATCACHE_STORE_H */
