/*
 * store_impl.h - what the files of the store share (private to store/: not
 * API, and no other module includes it).
 *
 *   store.c  the handle (struct fc_store), opening and versioning, the write
 *            loop that grows the map, extractors and their databases, names
 *   write.c  appending chunks; items, labels and error records; one batch
 *   load.c   reading features: single lookups, the parallel chunk loop,
 *            loading matrices, walking chunks
 *   admin.c  whole-store work: stats, verify (and its damage record), repair, gc
 *   merge.c  copying one store's items, labels, errors, extractors and
 *            chunks into another (fc_store_merge)
 *   record.c the item and index records of both store formats
 *
 * The record layouts (items, index entries, label keys) are defined here
 * once, so that the reader and the writer of a record cannot disagree.
 * The chunk record is store/chunk.h's.
 */
#ifndef FC_STORE_IMPL_H
#define FC_STORE_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include <lmdb.h>

#include "featcache/store.h"
#include "store/chunk.h"
#include "util/util.h"

/* The items record. Format 1: hash 16, size 8, mtime 8, label 4, split 1,
 * status 1, pad 2 (little-endian). Format 2: hash 16, flags 1 (bits 0-1
 * split: train, val, test, none; bit 2 failed; bit 3 labelled), then
 * LEB128 varints: size, zigzag(mtime_ns), and the label id if labelled.
 * Both start with the content hash. */
#define FCI_ITEM_REC1 40
#define FCI_ITEM_MAX (FC_HASH_LEN + 1 + 3 * 10)
/* The index entry: content hash -> where its vector is. Format 1: chunk id
 * u64, slot u32 (little-endian); format 2: LEB128 chunk id, LEB128 slot. */
#define FCI_INDEX_REC1 12
#define FCI_INDEX_MAX 20
#define FCI_RETRY_GROW 1 /* a write callback hit MDB_MAP_FULL: grow the map and redo */

/* An extractor's storage settings and its two databases, opened once per
 * handle and cached in fc_store.ex. */
typedef struct fci_exdb {
	uint8_t id[FC_HASH_LEN];
	MDB_dbi feat, index;
	uint32_t dim;
	fc_dtype dtype;
	fc_codec codec;
	int level;
} fci_exdb;

/* A chunk context and the float buffer a chunk is decoded into when it
 * cannot go straight to its destination. One per thread. */
typedef struct fci_decoder {
	fci_chunk_ctx *ctx;
	float *buf;
	size_t buf_len; /* floats */
} fci_decoder;

struct fc_store {
	MDB_env *env;
	MDB_dbi meta, items, labels, extractors, errors;
	char *path;
	int readonly;
	unsigned format;  /* FC_STORE_FORMAT_1 or the current one: how records are written */
	int lock_fd;      /* the writer lock (writer.lock), or -1 */
	uint64_t map_size, max_map_size;
	const fc_logger *logger;
	fci_exdb *ex;
	size_t n_ex, cap_ex;
	fci_decoder dec;  /* single lookups and gc; dec.ctx also encodes appends */
	uint8_t *enc;     /* encode buffer */
	size_t enc_cap;
	char *desc;       /* descriptor returned by fc_store_get_extractor */
	char err[FC_ERRLEN];
};

/* FCI_FAIL - set the handle's message (fc_store_errmsg) and evaluate to code. */
#define FCI_FAIL(s, code, ...) fci_errf((s)->err, sizeof (s)->err, (code), __VA_ARGS__)

/* ---- store.c ---- */

/* fci_mdb_fail - "<what>: <LMDB's reason>" as the handle's message; returns
 * the FC_ERR_* for the LMDB or errno code rc. */
int fci_mdb_fail(fc_store *s, int rc, const char *what);

/* fci_txn_begin - begin a transaction (flags: 0 or MDB_RDONLY), adopting a
 * map that another process has grown. */
int fci_txn_begin(fc_store *s, unsigned flags, MDB_txn **txn);

/* fci_store_write - run fn in one write transaction and commit it. When fn
 * returns FCI_RETRY_GROW (see fci_put) or the commit hits MDB_MAP_FULL, the
 * map grows and fn runs again from the start, so fn must derive everything
 * from the transaction and ctx. Refused on a read-only handle. */
typedef int (*fci_write_fn)(fc_store *s, MDB_txn *txn, void *ctx);
int fci_store_write(fc_store *s, fci_write_fn fn, void *ctx);

/* fci_put, fci_del - mdb_put/mdb_del that return FCI_RETRY_GROW on a full
 * map and set the handle's message on other failures. fci_del ignores an
 * absent key. */
int fci_put(fc_store *s, MDB_txn *txn, MDB_dbi dbi, MDB_val *k, MDB_val *v, unsigned flags);
int fci_del(fc_store *s, MDB_txn *txn, MDB_dbi dbi, MDB_val *k);

/* fci_ex_open - the extractor's cached entry, opening its databases on first
 * use. The pointer is valid until the next extractor is added. */
int fci_ex_open(fc_store *s, const uint8_t id[FC_HASH_LEN], fci_exdb **out);

/* fci_chunk_name - name a chunk in messages: "feat.<hex>/chunk <id>". */
void fci_chunk_name(char *buf, size_t cap, const fci_exdb *e, uint64_t id);

/* ---- record.c ---- */

/* fci_item_encode - the items record of *it in store format `format` (its
 * key is not part of it) into rec; returns its length. fci_item_decode -
 * the inverse; it->key is left alone. FC_ERR_CORRUPT (nothing else) for a
 * record that is not exactly one valid encoding, with *why (may be NULL)
 * pointing at a static reason ("record is too short"). Format 1 records
 * decode whatever their split and status bytes hold (verify judges them). */
size_t fci_item_encode(unsigned format, uint8_t rec[FCI_ITEM_MAX], const fc_item *it);
int fci_item_decode(unsigned format, const MDB_val *v, fc_item *it, const char **why);

/* fci_index_encode, fci_index_decode - an index entry's value, as above;
 * decode returns 0 or FC_ERR_CORRUPT. */
size_t fci_index_encode(unsigned format, uint8_t rec[FCI_INDEX_MAX], uint64_t chunk, uint32_t slot);
int fci_index_decode(unsigned format, const MDB_val *v, uint64_t *chunk, uint32_t *slot);

/* ---- write.c ---- */

/* fci_chunk_id_next - take the store's next chunk id (meta/chunk_seq, one
 * sequence for every extractor) inside txn: *id gets it and the sequence
 * moves past it. */
int fci_chunk_id_next(fc_store *s, MDB_txn *txn, uint64_t *id);

/* ---- load.c ---- */

/* fci_index_lookup - where the vector of `hash` is. FC_ERR_NOT_FOUND
 * (without a message) when the extractor has none. */
int fci_index_lookup(fc_store *s, MDB_txn *txn, const fci_exdb *e, const uint8_t hash[FC_HASH_LEN],
		     uint64_t *chunk, uint32_t *slot);

/* fci_map_drop - give back the pages of the map that hold [p, p+len) (a
 * chunk just decoded): LMDB maps the file read-only and shared, so they
 * are faulted in again from the page cache if read later, and until then
 * do not count in the process's resident memory. A load or a stream that
 * reads every chunk once would otherwise end up holding the whole file. */
void fci_map_drop(const void *p, size_t len);

/* The extent of map pages a read-only reader has been handed (MDB_vals of
 * a read transaction: they point into the map, which is one mapping).
 * fci_span_drop gives back every page of it, also those the kernel maps
 * around a fault ("fault-around"), which dropping only what was read would
 * let accumulate, and empties it. Only pointers into the map may be added
 * (a write transaction's dirty pages are not), and it must be dropped
 * before the map can move (no resize while a read transaction is open). */
typedef struct fci_span {
	uintptr_t lo, hi;
} fci_span;

static inline void fci_span_add(fci_span *sp, const void *p, size_t len)
{
	uintptr_t a = (uintptr_t)p, b = a + len;
	if (!len)
		return;
	if (sp->hi == 0 || a < sp->lo)
		sp->lo = a;
	if (b > sp->hi)
		sp->hi = b;
}

void fci_span_drop(fci_span *sp);

/* fci_decode_grow - decode a parsed chunk into d->buf, growing it to hold
 * every vector first. FC_ERR_NOMEM if it cannot grow. */
int fci_decode_grow(fci_decoder *d, const void *src, size_t len, const fci_chunk_info *ci);

/* fci_chunk_jobs_run - the one parallel chunk loop: fn(arg, q, dec) for
 * every q in [0, n) on OpenMP threads, dynamically scheduled (chunks differ
 * in cost), each thread with its own decoder. fn returns 0 or an error that
 * fails the run. Progress goes to the store's logger as `what`; when it
 * asks to stop, the jobs not yet started are skipped.
 * Returns 0; or the error of the failing job with the lowest q, whose q is
 * then in *bad_q for the caller to name (*bad_q is SIZE_MAX otherwise); or
 * FC_ERR_INTERRUPTED, with the handle's message set. The chunk bytes must
 * come from one read transaction the caller holds, so that every thread
 * sees the same snapshot. */
typedef int (*fci_chunk_job_fn)(void *arg, size_t q, fci_decoder *dec);
int fci_chunk_jobs_run(fc_store *s, const char *what, size_t n, fci_chunk_job_fn fn, void *arg,
		       size_t *bad_q);

/* ---- records ---- */

/* Chunk ids and label ids are big-endian in keys, so that LMDB's byte
 * order is numeric order (append order for chunks). */
static inline void fci_be_store(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
}

static inline uint64_t fci_be_load(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

/* The key of chunk `id` in feat.<hex>. */
static inline void fci_chunk_key(uint8_t k[8], uint64_t id)
{
	fci_be_store(k, id, 8);
}

/* The label db holds 'n'+name -> id (u32 little-endian) and this key,
 * 'i'+id (big-endian) -> name. */
static inline void fci_label_id_key(uint8_t k[5], uint32_t id)
{
	k[0] = 'i';
	fci_be_store(k + 1, id, 4);
}

#endif /* FC_STORE_IMPL_H */
