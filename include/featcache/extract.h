/*
 * extract.h - datasets and the extract pipeline: scan a dataset, find what
 * the store lacks for an extractor, decode and preprocess those images on
 * worker threads while the engine runs batches on the calling thread, and
 * write each batch (vectors, index entries, items, error records) in one
 * store transaction.
 *
 * A dataset is either a directory, class per folder (DIR/<label>/<image>,
 * optionally under a split level DIR/{train,val,test}/<label>/<image>), or
 * a Finetuner-style labeled CSV (path,label[,split]; paths relative to the
 * CSV's directory; a header row is optional; RFC 4180 quoting). The item
 * key is the dataset-relative path with '/' separators.
 *
 * Or WebDataset tar shards (extract/wds.c): a .tar (also .tar.gz, .tgz,
 * .tar.zst, .tar.xz, .tar.bz2), a directory holding shards (at its top
 * level or in its train/val/test folders, and no class folder of images;
 * listed recursively), a brace
 * pattern ('shards/{00000..00099}.tar', zero-padded ranges and comma
 * lists, several braces) or @LIST (one shard path a line, relative to the
 * list's directory). A shard's name is its path under the dataset root
 * without the .tar suffix; members sharing a key (the name up to the first
 * dot of its last component), consecutive in the tar, are one sample: its
 * image is the first of .jpg, .jpeg, .png, its label the .cls integer, else
 * the .txt text, else the .json's label field. The item key is
 * "<shard name>/<sample key>"; the split comes from a train/val/test
 * folder in the shard's path.
 *
 * Symbolic links, in both layouts: a path is resolved and followed when it
 * stays inside the dataset root (the directory, or the CSV's directory),
 * or anywhere with FC_DATASET_FOLLOW_OUTSIDE. A link that leads outside,
 * a broken link (in a folder: one named like an image or a folder, without
 * another extension) and a link making a directory loop are entries with
 * `bad` set under the link's own key. A CSV path with ".." is accepted
 * when it stays inside; its key is the folder its last ".." resolves to,
 * relative to the root, then the rest of the path as written (the key a
 * path written without ".." would have), and it keeps its text as the key
 * when FC_DATASET_FOLLOW_OUTSIDE lets it leave.
 */
#ifndef FEATCACHE_EXTRACT_H
#define FEATCACHE_EXTRACT_H

#include <stddef.h>
#include <stdint.h>

#include "featcache/engine.h"
#include "featcache/featcache.h"
#include "featcache/image.h"
#include "featcache/store.h"

#ifdef __cplusplus
extern "C" {
#endif


/* One dataset entry. */
typedef struct fc_entry {
	const char *key;   /* dataset-relative path, '/'-separated */
	const char *path;  /* path to open (relative to the working directory or absolute) */
	const char *label; /* label name, or NULL for none */
	int split;         /* FC_SPLIT_TRAIN/VAL/TEST, or FC_SPLIT_NONE when the dataset names none */
	int line;          /* CSV line number (0 for directories), for messages */
	/* Why the entry cannot be an item, or NULL; extract records it as
	 * failed with this reason instead of reading it. A path with a
	 * control character (a newline would split the key over two lines of
	 * every key list) is kept under a printable key, '\n', '\r', '\t',
	 * '\\' and '\xHH' escaped; a broken link, a link leading outside the
	 * dataset and a directory loop are kept under the link's key. */
	const char *bad;
	/* A sample of a tar shard: hash is its image's content hash (computed
	 * while the shard was read), size and mtime_ns are the shard's, member
	 * the image member's number in the tar (from 0), shard the index into
	 * fc_dataset.shards; path is the shard. NULL, 0 for a file. */
	const uint8_t *hash;
	uint64_t size;
	int64_t mtime_ns;
	uint32_t shard, member;
} fc_entry;

/* A tar shard's state in a dataset. */
enum { FC_SHARD_PENDING, FC_SHARD_READ, FC_SHARD_KEPT };

typedef struct fc_tar_shard {
	const char *name; /* key prefix: path under the dataset root, no .tar suffix */
	const char *path; /* path to open */
	uint64_t size;    /* at the scan (0 when missing) */
	int64_t mtime_ns;
	int split;        /* from a train/val/test folder in path, or FC_SPLIT_NONE */
	int state;        /* FC_SHARD_* */
	size_t first;     /* lowest index of its entries (extract's work order) */
} fc_tar_shard;

typedef struct fc_dataset {
	fc_entry *entries; /* sorted by key, keys unique */
	size_t n;
	int from_csv;
	size_t skipped; /* directory files that are not .jpg/.jpeg/.png (ignored); tar members of no sample */
	char *arena;    /* owns the strings */
	/* Tar shards (n_shards > 0 for a WebDataset source), sorted by name;
	 * root is the directory their names are relative to. */
	fc_tar_shard *shards;
	size_t n_shards;
	const char *root;
	const char *label_field;
} fc_dataset;

/* Flags of fc_dataset_scan. */
#define FC_DATASET_FOLLOW_OUTSIDE 1u /* follow links and ".." that leave the dataset root */

/* fc_dataset_scan - read the dataset at path (a directory or a .csv file).
 * Returns 0 and fills *out (free with fc_dataset_free), or an error with a
 * reason in err: FC_ERR_NOT_FOUND (no such path), FC_ERR_IO, FC_ERR_CORRUPT
 * (a CSV that does not parse: bad quoting, too few fields, names the line),
 * FC_ERR_EXISTS (a key listed twice, naming both lines), FC_ERR_INVALID (an
 * unknown split name, an absolute path in a CSV, a key too long),
 * FC_ERR_NOMEM; FC_ERR_INVALID also for a file that is not a CSV (an
 * image, or binary). err holds the reason only: the caller names path.
 * A dataset with no images is not an error here (n == 0). A path with a
 * control character, a broken link, a link or ".." leading outside the
 * root and a directory loop are entries with `bad` set, not errors.
 * CSV rows whose file does not exist are kept: extract records them as
 * failed items. flags: 0 or FC_DATASET_FOLLOW_OUTSIDE. */
int fc_dataset_scan(fc_dataset *out, const char *path, unsigned flags, char *err, size_t errcap);
void fc_dataset_free(fc_dataset *d);

/* Options of fc_dataset_scan_with. */
typedef struct fc_scan_opts {
	unsigned flags;          /* FC_DATASET_* */
	const char *label_field; /* the .json field a tar sample's label is in; NULL = "label" */
	int threads;             /* shards read at once; 0 = half the cores (extract's decode threads) */
	int lazy;                /* tar shards: list them only (fc_dataset_read_shards reads them) */
} fc_scan_opts;

/* fc_dataset_scan_with - fc_dataset_scan with options; fc_dataset_scan is
 * this with flags only (tar shards read at once). A tar shard that is
 * missing, unreadable or damaged is not an error here: entries record it
 * (see fc_dataset_read_shards). */
int fc_dataset_scan_with(fc_dataset *out, const char *path, const fc_scan_opts *o, char *err, size_t errcap);

/* fc_dataset_read_shards - read the shards of ds still FC_SHARD_PENDING,
 * `threads` at a time (one shard per thread; 0 = half the cores), into
 * entries (sorted again; the result does not depend on thread timing). A
 * shard for which keep(keep_ctx, shard) returns non-zero is not opened and
 * becomes FC_SHARD_KEPT: extract keeps the store's items under it. Each
 * sample's image is hashed, its label read; a sample without an image, with
 * a label that does not parse or a member over 256 MiB, and the damage of a
 * truncated or corrupt shard (every sample before it is kept) are entries
 * with `bad` set. Returns 0, FC_ERR_NOMEM, or FC_ERR_EXISTS (a key twice
 * across shards) with err set. */
int fc_dataset_read_shards(fc_dataset *ds, int (*keep)(void *ctx, const fc_tar_shard *sh), void *keep_ctx,
			   int threads, char *err, size_t errcap);

/* fc_dataset_shard_of - the index of the shard of ds whose items key is
 * under (the longest shard name that is a prefix of it up to a '/'), or -1. */
long fc_dataset_shard_of(const fc_dataset *ds, const char *key);

/* fc_dataset_kept - 1 when key is under a shard of ds that was kept
 * unopened (FC_SHARD_KEPT), else 0. */
int fc_dataset_kept(const fc_dataset *ds, const char *key);

/* fc_wds_locate - the tar shard under root that holds the item key
 * ("<shard name>/<sample key>"): its path into path (cap bytes) and the
 * offset of the sample key in key; -1 when no shard file is there. */
int fc_wds_locate(const char *root, const char *key, char *path, size_t cap);

/* fc_wds_images - the images of samples of the tar shard at path, in one
 * reading: for each keys[i] (a sample key, without the shard name) found,
 * fn(ctx, i, data, len) with the image the grouping takes (.jpg, else
 * .jpeg, else .png). A key not in the shard gets no call. Returns 0,
 * FC_ERR_NOT_FOUND, FC_ERR_IO or FC_ERR_CORRUPT with err set (the images
 * read before damage are still given), FC_ERR_NOMEM, or fn's non-zero. */
int fc_wds_images(const char *path, const char *const *keys, size_t n,
		  int (*fn)(void *ctx, size_t i, const uint8_t *data, size_t len), void *ctx, char *err, size_t errcap);

/* A store's items grouped by shard name, to tell which tar shards are
 * unchanged: every item under the name records the shard's size and mtime,
 * and each that is not a failure has a vector for the extractor. */
typedef struct fc_shard_memo fc_shard_memo;

/* fc_shard_memo_open - read the store's items (one pass) for extractor
 * exid. FC_ERR_NOMEM or the store's error, with err set. */
int fc_shard_memo_open(fc_shard_memo **out, fc_store *s, const uint8_t exid[FC_HASH_LEN], char *err, size_t errcap);

/* fc_shard_memo_unchanged - the keep callback of fc_dataset_read_shards:
 * 1 when the store holds items under sh's name, all stamped with its size
 * and mtime, and none lacks a vector. 0 for every shard when memo is NULL. */
int fc_shard_memo_unchanged(void *memo, const fc_tar_shard *sh);
void fc_shard_memo_free(fc_shard_memo *m);

/* fc_hash_split - the stable split of an item key when the dataset names
 * none: val if XXH3-64(key) / 2^64 < val_fraction, else train. Adding items
 * never moves an existing one. */
int fc_hash_split(const char *key, double val_fraction);

/* fc_hash_fraction - XXH3-64(key) with seed, top 53 bits as a fraction in
 * [0, 1): a draw per key, stable across runs and independent of item
 * order. fc_hash_split is fc_hash_fraction(key, 0) < val_fraction (seed 0
 * is plain XXH3-64); another seed draws independently of it (train's
 * --val-from-train carves val out of a train split made that way). */
double fc_hash_fraction(const char *key, uint64_t seed);

/* fc_hash_file - XXH3-128 of the whole file at path (big-endian bytes), its
 * size and mtime. Returns 0, FC_ERR_NOT_FOUND or FC_ERR_IO (err says why). */
int fc_hash_file(const char *path, uint8_t hash[16], uint64_t *size, int64_t *mtime_ns, char *err,
		 size_t errcap);

/* What makes an extractor (its identity: model bytes, cut, input size,
 * preprocessing, precision) and how its vectors are kept. */
typedef struct fc_extractor_opts {
	const char *model;    /* ONNX file */
	const char *layer;    /* cut layer, NULL = the model's default embedding layer;
	                       * "A,B,..." concatenates several (fc_model_cut_tokens) */
	int pool;             /* enum fc_pool (model.h) for token (N x T x D) cuts */
	int prefix_tokens;    /* with pool cls/mean/cls+mean: tokens before the patches */
	fc_preproc pre;       /* preprocessing, e.g. from fc_preproc_preset */
	const char *pre_name; /* the preset's name, recorded in the descriptor (may be NULL) */
	int precision;        /* enum fc_precision (engine.h) */
	const fc_calib *calib; /* FC_PREC_INT8: the calibration table (fc_calibrate), required;
	                        * it becomes part of the descriptor and of the id */
	fc_dtype store_dtype; /* how vectors are kept on disk */
	int batch;            /* images per engine run and per store write, 1..4096 */
	int threads;          /* OpenMP threads for the engine, 0 = default */
} fc_extractor_opts;

typedef struct fc_extract_ctx fc_extract_ctx;

/* How fc_calibrate turns the observed values into ranges. */
enum fc_calib_method {
	FC_CALIB_MAX = 0,       /* [min, max] of everything seen */
	FC_CALIB_PERCENTILE = 1 /* both ends clipped at the 99.99th percentile of |x| */
};
#define FC_CALIB_DEFAULT FC_CALIB_PERCENTILE
#define FC_CALIB_IMAGES 256 /* the default sample size */

/* fc_calib_method_name - "max", "percentile:99.99"; NULL for another value.
 * fc_calib_method_parse - the method of "max", "percentile" or
 * "percentile:99.99"; -1 for anything else. */
const char *fc_calib_method_name(int method);
int fc_calib_method_parse(const char *s);

/* fc_calibrate - the int8 calibration table of the extractor o describes
 * (its model, cut and preprocessing; o->precision is ignored): the f32
 * model is run over a fixed sample of n images of ds (the n entries with
 * the smallest seeded hash of their key; all of them when ds has fewer)
 * and every tensor an int8 convolution or matmul reads gets its range by
 * method. The same dataset (keys and contents) gives the same table.
 * Entries that cannot be read or decoded are skipped; *failed (may be
 * NULL) counts them. Returns 0 and *out (free with fc_calib_free), or an
 * error with err saying why: FC_ERR_INVALID for n < 1, an unknown method,
 * a dataset with no usable image; the model's and engine's errors. */
int fc_calibrate(fc_calib **out, const fc_extractor_opts *o, const fc_dataset *ds, size_t n, int method,
		 size_t *failed, char *err, size_t errcap);

/* fc_extract_open - open the model, cut it, build the engine for opts->batch
 * images of the preprocessed size, and compute the extractor id and JSON
 * descriptor. Touches no store, so a bad model is refused before one is
 * created. The engine belongs to the calling thread: call fc_extract_run
 * from it. Returns 0 and *out, or an error (FC_ERR_* of the model or the
 * engine, FC_ERR_INVALID for a model that does not take 3-channel images)
 * with the reason in err (FC_ERRLEN bytes). */
int fc_extract_open(fc_extract_ctx **out, const fc_extractor_opts *opts, char *err, size_t errcap);

/* fc_extract_id - the extractor id (16 bytes) and embedding length. */
const uint8_t *fc_extract_id(const fc_extract_ctx *x);
uint32_t fc_extract_dim(const fc_extract_ctx *x);

/* fc_extract_descriptor - the extractor's JSON descriptor (owned by x). */
const char *fc_extract_descriptor(const fc_extract_ctx *x);

void fc_extract_free(fc_extract_ctx *x);

/* fc_extract_open_like - fc_extract_open for the model at model_path with
 * the layer, input size, preprocessing and precision a store's extractor
 * descriptor records (fc_extractor.descriptor), and the given store dtype,
 * batch and threads. Whether it reproduces that extractor is for the
 * caller to check: compare fc_extract_id with the extractor's id (another
 * model file gives another id). */
int fc_extract_open_like(fc_extract_ctx **out, const char *model_path, const char *descriptor, fc_dtype dtype,
			 int batch, int threads, char *err, size_t errcap);

typedef struct fc_extract_run_opts {
	int decode_threads;  /* image decoding threads, 0 = automatic */
	double val_fraction; /* for items the dataset gives no split: 0 <= f < 1 */
	int strict;          /* stop at the first image that fails */
	/* rehash: read and hash every file, even one whose size and mtime
	 * match the store's record (a file rewritten with its mtime put
	 * back keeps its old vector otherwise). */
	int rehash;
	/* cache_only: extract what the store lacks, but leave the store's items,
	 * labels and error records alone (for images that are not part of the
	 * dataset, e.g. `featcache embed --data new/`): vectors only. */
	int cache_only;
	/* scope: when set, the run covers only the store items it returns
	 * non-zero for (a shard's work units, shard.h): an item the dataset
	 * lacks is deleted only when in scope, so one shard's run leaves the
	 * other shards' items alone. ds should hold in-scope entries only. */
	int (*scope)(void *ctx, const char *key);
	void *scope_ctx;
	/* Optional, ds->n entries each: every entry's content hash, and 1 where
	 * the entry could not be hashed or decoded (0 where it has a vector). */
	uint8_t (*hashes)[FC_HASH_LEN];
	uint8_t *failed;
	/* Optional: called on the calling thread for each entry that fails. */
	void (*on_fail)(void *ctx, const char *key, const char *why);
	void *fail_ctx;
	const fc_logger *logger;
} fc_extract_run_opts;

typedef struct fc_extract_stats {
	uint64_t seen;         /* dataset entries */
	uint64_t new_items;    /* keys the store did not have */
	uint64_t changed;      /* keys whose file content changed */
	uint64_t removed;      /* store items no longer in the dataset */
	uint64_t extracted;    /* images run through the CNN */
	uint64_t dedup;        /* items whose content already had (or got) a vector from another item */
	uint64_t failed;       /* images that failed in this run (unreadable, undecodable, missing) */
	uint64_t failed_before; /* unchanged items that had failed before (not retried) */
	uint64_t hashed;       /* files read to hash (new, or size or mtime changed) */
	uint64_t shards_read;  /* tar shards read (new or changed) */
	uint64_t shards_kept;  /* tar shards unchanged, not opened */
	double seconds;        /* wall time of fc_extract_run */
	double engine_seconds; /* of which inside the engine */
} fc_extract_stats;

/* fc_extract_run - bring the store's items, and its features for x's
 * extractor, up to date with the dataset ds: items gone from the dataset
 * are deleted, new and changed files hashed, and every content hash
 * without a vector extracted once. Each batch (vectors, index entries, the
 * items they serve, error records) is one store transaction, so a killed
 * run leaves whole batches and the next run continues. Records the
 * extractor in the store first (FC_ERR_EXISTS if the store has this
 * extractor with another dtype). On failure returns the error with err (may
 * be NULL) saying why; FC_ERR_INTERRUPTED when the logger's progress
 * callback asked to stop. With ro->strict the first failing image is an
 * error naming it, and nothing of its batch is written. */
int fc_extract_run(fc_extract_ctx *x, fc_store *s, const fc_dataset *ds, const fc_extract_run_opts *ro,
		   fc_extract_stats *st, char *err, size_t errcap);

#ifdef __cplusplus
}
#endif
#endif /* FEATCACHE_EXTRACT_H */
