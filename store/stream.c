/*
 * stream.c - features that do not fit in memory: rows of a row list read
 * by content hash through the index, their chunks decoded on demand and
 * kept in an LRU cache of a byte budget (fc_stream, store.h).
 *
 * The cache keeps chunks in their stored dtype, decoded from the codec
 * (fci_chunk_decode_raw: half the bytes of f32 for f16), and converts only
 * the rows asked for, with fc_rows_gather: the conversion a load's decode
 * makes, so a streamed batch is bit-identical to the same rows of a load.
 * The reader holds one read transaction for its life: the chunk bytes it
 * decodes later are those of the snapshot the index was read in (LMDB
 * keeps that snapshot's pages for an open reader).
 *
 * A fetch copies the rows of cached chunks first, then reads the missing
 * chunks (the index in the main thread, a few LMDB lookups), decodes them
 * in parallel, copies their rows and only then caches them, evicting the
 * least recently used; so a batch that needs more chunks than the cache
 * holds still completes, a group of chunks at a time.
 *
 * Not here: loading whole splits (load.c), deciding when to stream
 * (the CLI's memory plan).
 */
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "store/store_impl.h"

#define NIL UINT32_MAX
#define GROUP 64 /* missing chunks decoded at once: bounds a fetch's transient memory */
#define STREAM_RELEASE ((uint64_t)32 << 20)

typedef struct centry {
	uint64_t id;
	uint8_t *v;    /* the count content hashes, then the raw payload (chunk.h) */
	size_t bytes;
	uint32_t count;
	uint32_t prev, next; /* LRU list, most recent first */
	uint32_t hnext;      /* hash chain */
} centry;

struct fc_stream {
	fc_store *s;
	fci_exdb *e;
	MDB_txn *txn;
	const uint8_t (*hashes)[FC_HASH_LEN];
	size_t n, dim;
	uint64_t *chunk; /* per row */
	uint32_t *slot;
	/* the cache */
	size_t cap_bytes, used;
	centry *ent;
	uint32_t nent, capent, free_head, head, tail;
	uint32_t *bucket;
	uint32_t nbucket; /* a power of two */
	uint64_t reads, hits;
	uint64_t read_bytes; /* chunk bytes read since span was last dropped */
	fci_span span;       /* the map pages of the chunks read since */
	/* per thread */
	fci_chunk_ctx **ctx;
	int nthreads;
	/* a fetch's misses: (chunk, request position), and the group's chunks */
	struct miss {
		uint64_t chunk;
		size_t i;
	} *miss;
	size_t miss_cap;
	struct pending {
		uint64_t id;
		const void *data;
		size_t len;
		uint8_t *v;
		uint32_t count;
		int err;
	} pend[GROUP];
};

static uint32_t hash_of(const fc_stream *r, uint64_t id)
{
	return (uint32_t)((id * 0x9e3779b97f4a7c15ull) >> 32) & (r->nbucket - 1);
}

static uint32_t cache_find(const fc_stream *r, uint64_t id)
{
	for (uint32_t e = r->bucket[hash_of(r, id)]; e != NIL; e = r->ent[e].hnext)
		if (r->ent[e].id == id)
			return e;
	return NIL;
}

static void lru_unlink(fc_stream *r, uint32_t e)
{
	centry *c = &r->ent[e];
	if (c->prev != NIL)
		r->ent[c->prev].next = c->next;
	else
		r->head = c->next;
	if (c->next != NIL)
		r->ent[c->next].prev = c->prev;
	else
		r->tail = c->prev;
}

static void lru_push_front(fc_stream *r, uint32_t e)
{
	centry *c = &r->ent[e];
	c->prev = NIL;
	c->next = r->head;
	if (r->head != NIL)
		r->ent[r->head].prev = e;
	r->head = e;
	if (r->tail == NIL)
		r->tail = e;
}

/* Drop the least recently used entry. */
static void cache_evict(fc_stream *r)
{
	uint32_t e = r->tail;
	centry *c = &r->ent[e];
	lru_unlink(r, e);
	uint32_t *p = &r->bucket[hash_of(r, c->id)];
	while (*p != e)
		p = &r->ent[*p].hnext;
	*p = c->hnext;
	r->used -= c->bytes;
	free(c->v);
	c->v = NULL;
	c->hnext = r->free_head;
	r->free_head = e;
	r->nent--;
}

/* Grow the entry array and rehash when it is full; 0 or FC_ERR_NOMEM. */
static int cache_grow(fc_stream *r)
{
	uint32_t cap = r->capent ? 2 * r->capent : 256;
	centry *ent = realloc(r->ent, cap * sizeof *ent);
	if (!ent)
		return FC_ERR_NOMEM;
	r->ent = ent;
	uint32_t *bucket = malloc(2 * (size_t)cap * sizeof *bucket);
	if (!bucket)
		return FC_ERR_NOMEM;
	free(r->bucket);
	r->bucket = bucket;
	r->nbucket = 2 * cap;
	for (uint32_t b = 0; b < r->nbucket; b++)
		r->bucket[b] = NIL;
	/* every live entry back into its chain; the new ones onto the free list */
	for (uint32_t e = r->head; e != NIL; e = r->ent[e].next) {
		uint32_t h = hash_of(r, r->ent[e].id);
		r->ent[e].hnext = r->bucket[h];
		r->bucket[h] = e;
	}
	for (uint32_t e = cap; e-- > r->capent;) {
		r->ent[e].v = NULL;
		r->ent[e].hnext = r->free_head;
		r->free_head = e;
	}
	r->capent = cap;
	return 0;
}

/* The bytes of a cache entry of count vectors: the hashes and the raw
 * payload (fci_chunk_raw_len is never 0 for a chunk that parsed). */
static size_t entry_bytes(const fc_stream *r, uint32_t count)
{
	return (size_t)count * FC_HASH_LEN + fci_chunk_raw_len(r->e->dtype, (uint32_t)r->dim, count);
}

/* Keep chunk id's decoded entry v (taken over), evicting to fit. */
static int cache_put(fc_stream *r, uint64_t id, uint8_t *v, uint32_t count)
{
	size_t bytes = entry_bytes(r, count);
	while (r->nent && r->used + bytes > r->cap_bytes)
		cache_evict(r);
	if (r->free_head == NIL && cache_grow(r) != 0) {
		free(v);
		return FC_ERR_NOMEM;
	}
	uint32_t e = r->free_head;
	centry *c = &r->ent[e];
	r->free_head = c->hnext;
	*c = (centry){ .id = id, .v = v, .bytes = bytes, .count = count };
	uint32_t h = hash_of(r, id);
	c->hnext = r->bucket[h];
	r->bucket[h] = e;
	lru_push_front(r, e);
	r->used += bytes;
	r->nent++;
	return 0;
}

void fc_stream_free(fc_stream *r)
{
	if (!r)
		return;
	fci_span_drop(&r->span);
	if (r->txn)
		mdb_txn_abort(r->txn);
	for (uint32_t e = r->head; e != NIL; e = r->ent[e].next)
		free(r->ent[e].v);
	free(r->ent);
	free(r->bucket);
	free(r->chunk);
	free(r->slot);
	free(r->miss);
	for (int t = 0; r->ctx && t < r->nthreads; t++)
		fci_chunk_ctx_free(r->ctx[t]);
	free(r->ctx);
	free(r);
}

int fc_stream_open(fc_stream **out, fc_store *s, const uint8_t exid[FC_HASH_LEN],
		   const uint8_t (*hashes)[FC_HASH_LEN], size_t n, size_t cache_bytes)
{
	*out = NULL;
	fc_stream *r = calloc(1, sizeof *r);
	if (!r)
		return FCI_FAIL(s, FC_ERR_NOMEM, "out of memory");
	r->s = s;
	r->hashes = hashes;
	r->n = n;
	r->cap_bytes = cache_bytes;
	r->head = r->tail = r->free_head = NIL;
	r->nthreads = omp_get_max_threads();
	int err = fci_ex_open(s, exid, &r->e);
	if (err)
		goto fail;
	r->dim = r->e->dim;
	r->chunk = malloc((n ? n : 1) * sizeof *r->chunk);
	r->slot = malloc((n ? n : 1) * sizeof *r->slot);
	r->ctx = calloc((size_t)r->nthreads, sizeof *r->ctx);
	if (!r->chunk || !r->slot || !r->ctx || cache_grow(r) != 0) {
		err = FCI_FAIL(s, FC_ERR_NOMEM, "out of memory");
		goto fail;
	}
	for (int t = 0; t < r->nthreads; t++)
		if (!(r->ctx[t] = fci_chunk_ctx_new())) {
			err = FCI_FAIL(s, FC_ERR_NOMEM, "out of memory");
			goto fail;
		}
	if ((err = fci_txn_begin(s, MDB_RDONLY, &r->txn)) != 0) {
		r->txn = NULL;
		goto fail;
	}
	for (size_t i = 0; i < n; i++) {
		err = fci_index_lookup(s, r->txn, r->e, hashes[i], &r->chunk[i], &r->slot[i]);
		if (err == FC_ERR_NOT_FOUND) {
			char hex[2 * FC_HASH_LEN + 1];
			fc_hex(hex, hashes[i], FC_HASH_LEN);
			err = FCI_FAIL(s, err, "no vector for content %s", hex);
		}
		if (err)
			goto fail;
	}
	*out = r;
	return 0;
fail:
	fc_stream_free(r);
	return err;
}

static int miss_cmp(const void *a, const void *b)
{
	const struct miss *x = a, *y = b;
	if (x->chunk != y->chunk)
		return x->chunk < y->chunk ? -1 : 1;
	return x->i < y->i ? -1 : x->i > y->i;
}

/* Row `row` out of a cached chunk (v: count hashes, then the raw payload)
 * into d as f32, after checking that its slot exists and holds the row's
 * content. */
static int row_copy(fc_stream *r, float *d, const uint8_t *v, uint32_t count, uint64_t id, size_t row)
{
	uint32_t slot = r->slot[row];
	const uint8_t *hashes = v, *raw = v + (size_t)count * FC_HASH_LEN; /* 16-byte aligned in v */
	if (slot >= count || memcmp(hashes + (size_t)slot * FC_HASH_LEN, r->hashes[row], FC_HASH_LEN) != 0) {
		char name[96];
		fci_chunk_name(name, sizeof name, r->e, id);
		return FCI_FAIL(r->s, FC_ERR_CORRUPT, "an index entry points past %s (slot %u of %u)", name, slot, count);
	}
	fc_rows x = { .type = (fc_row_type)r->e->dtype, .n = count, .dim = r->dim, .data = raw };
	if (x.type == FC_ROW_U8) { /* the (lo, step) pairs, then the codes */
		x.scale = (const float *)raw;
		x.data = raw + 8 * (size_t)count;
	}
	return fc_rows_gather(d, &x, &slot, 1);
}

/* Read and decode the chunks of misses [m0, m1) (at most GROUP distinct),
 * copy their rows into dst and cache them. */
static int fetch_group(fc_stream *r, float *dst, const uint32_t *idx, size_t m0, size_t m1)
{
	size_t np = 0;
	int err = 0;
	for (size_t m = m0; m < m1; m++) {
		if (m > m0 && r->miss[m].chunk == r->miss[m - 1].chunk)
			continue;
		struct pending *p = &r->pend[np++];
		*p = (struct pending){ .id = r->miss[m].chunk };
		uint8_t key[8];
		fci_chunk_key(key, p->id);
		MDB_val k = { 8, key }, v;
		int rc = mdb_get(r->txn, r->e->feat, &k, &v);
		if (rc) {
			char name[96];
			fci_chunk_name(name, sizeof name, r->e, p->id);
			err = rc == MDB_NOTFOUND ? FCI_FAIL(r->s, FC_ERR_CORRUPT, "index points at missing %s", name)
						 : fci_mdb_fail(r->s, rc, "cannot read chunk");
			goto out;
		}
		p->data = v.mv_data;
		p->len = v.mv_size;
	}
#pragma omp parallel for schedule(dynamic, 1) if (np > 1)
	for (size_t j = 0; j < np; j++) {
		struct pending *p = &r->pend[j];
		fci_chunk_info ci;
		p->err = fci_chunk_parse(p->data, p->len, &ci);
		if (!p->err && (ci.dim != r->dim || ci.dtype != r->e->dtype))
			p->err = FC_ERR_CORRUPT;
		if (p->err)
			continue;
		p->count = ci.count;
		size_t hb = (size_t)ci.count * FC_HASH_LEN;
		p->v = malloc(hb + ci.raw_len);
		p->err = p->v ? fci_chunk_decode_raw(r->ctx[omp_get_thread_num()], p->data, p->len, p->v + hb,
						     ci.raw_len)
			      : FC_ERR_NOMEM;
		if (!p->err)
			memcpy(p->v, ci.hashes, hb);
	}
	r->reads += np;
	for (size_t q = 0; q < np; q++) {
		r->read_bytes += r->pend[q].len;
		fci_span_add(&r->span, r->pend[q].data, r->pend[q].len);
		if (!r->pend[q].err)
			fci_map_drop(r->pend[q].data, r->pend[q].len);
	}
	/* The pages faulted in around the chunks read stay mapped: every
	 * STREAM_RELEASE bytes read, the whole extent read is given back. */
	if (r->read_bytes >= STREAM_RELEASE) {
		fci_span_drop(&r->span);
		r->read_bytes = 0;
	}
	size_t j = 0;
	for (size_t m = m0; m < m1 && !err; m++) {
		if (m > m0 && r->miss[m].chunk != r->miss[m - 1].chunk)
			j++;
		struct pending *p = &r->pend[j];
		if (p->err) {
			char name[96];
			fci_chunk_name(name, sizeof name, r->e, p->id);
			err = FCI_FAIL(r->s, p->err, "%s: %s", name, fc_strerror(p->err));
			break;
		}
		size_t i = r->miss[m].i;
		err = row_copy(r, dst + i * r->dim, p->v, p->count, p->id, idx[i]);
	}
	for (size_t q = 0; q < np; q++) {
		struct pending *p = &r->pend[q];
		if (!err && p->v) {
			int e = cache_put(r, p->id, p->v, p->count);
			err = e ? FCI_FAIL(r->s, e, "out of memory") : 0;
		} else {
			free(p->v);
		}
		p->v = NULL;
	}
out:
	return err;
}

int fc_stream_fetch(void *vr, float *dst, const uint32_t *idx, size_t n)
{
	fc_stream *r = vr;
	if (n > r->miss_cap) {
		struct miss *m = realloc(r->miss, n * sizeof *m);
		if (!m)
			return FCI_FAIL(r->s, FC_ERR_NOMEM, "out of memory");
		r->miss = m;
		r->miss_cap = n;
	}
	size_t nm = 0;
	for (size_t i = 0; i < n; i++) {
		if (idx[i] >= r->n)
			return FCI_FAIL(r->s, FC_ERR_INVALID, "row %u of %zu streamed rows", idx[i], r->n);
		uint64_t id = r->chunk[idx[i]];
		uint32_t e = cache_find(r, id);
		if (e == NIL) {
			r->miss[nm++] = (struct miss){ id, i };
			continue;
		}
		r->hits++;
		if (e != r->head) {
			lru_unlink(r, e);
			lru_push_front(r, e);
		}
		int err = row_copy(r, dst + i * r->dim, r->ent[e].v, r->ent[e].count, id, idx[i]);
		if (err)
			return err;
	}
	qsort(r->miss, nm, sizeof *r->miss, miss_cmp);
	for (size_t m0 = 0; m0 < nm;) {
		size_t m1 = m0, distinct = 0;
		while (m1 < nm && (distinct < GROUP || r->miss[m1].chunk == r->miss[m1 - 1].chunk)) {
			if (m1 == m0 || r->miss[m1].chunk != r->miss[m1 - 1].chunk)
				distinct++;
			m1++;
		}
		int err = fetch_group(r, dst, idx, m0, m1);
		if (err)
			return err;
		m0 = m1;
	}
	return 0;
}

fc_rows fc_stream_rows(fc_stream *r)
{
	return (fc_rows){ .type = FC_ROW_F32, .n = r->n, .dim = r->dim, .fetch = fc_stream_fetch, .ctx = r };
}

void fc_stream_stats(const fc_stream *r, uint64_t *reads, uint64_t *hits, size_t *bytes)
{
	if (reads)
		*reads = r->reads;
	if (hits)
		*hits = r->hits;
	if (bytes)
		*bytes = r->used;
}
