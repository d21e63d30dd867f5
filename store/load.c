/*
 * load.c - reading features out of a store: one vector by content hash,
 * every live vector of an extractor (fc_store_load_all) or one row per item
 * (fc_store_load_items) into a matrix, and a walk over the raw chunks. It
 * also holds the one parallel chunk loop (fci_chunk_jobs_run) that loading
 * and verify share.
 *
 * The parallel loaders fetch every chunk pointer in one read transaction
 * and hand the (read-only, memory-mapped) bytes to OpenMP threads to
 * decode, so all threads see the same snapshot. (Per-thread read
 * transactions, which MDB_NOTLS allows, could each see a different snapshot
 * if a writer commits in between.)
 *
 * Not here: writing (write.c), checking a whole store (admin.c).
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <omp.h>

#include "store/store_impl.h"

#define HUGE_PAGE ((size_t)2 << 20)

/* ---- decoding ---- */

void fci_span_drop(fci_span *sp)
{
	if (sp->hi > sp->lo)
		fci_map_drop((const void *)sp->lo, sp->hi - sp->lo);
	sp->lo = sp->hi = 0;
}

void fci_map_drop(const void *p, size_t len)
{
	const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t a = (uintptr_t)p & ~(page - 1), b = ((uintptr_t)p + len + page - 1) & ~(page - 1);
	if (len)
		madvise((void *)a, b - a, MADV_DONTNEED);
}

int fci_decode_grow(fci_decoder *d, const void *src, size_t len, const fci_chunk_info *ci)
{
	size_t need = (size_t)ci->count * ci->dim;
	if (need > d->buf_len) {
		float *p = realloc(d->buf, need * sizeof *p);
		if (!p)
			return FC_ERR_NOMEM;
		d->buf = p;
		d->buf_len = need;
	}
	return fci_chunk_decode(d->ctx, src, len, d->buf, d->buf_len);
}

/* Report progress from the calling thread of a parallel loop (thread 0),
 * at most every 64 units; a non-zero answer from the caller sets *stop. */
static void progress_tick(fc_store *s, const char *what, uint64_t done, uint64_t total, int *stop)
{
	const fc_logger *lg = s->logger;
	if (!lg || !lg->progress || omp_get_thread_num() != 0 || (done % 64 && done != total))
		return;
	if (lg->progress(lg->ctx, what, done, total)) {
#pragma omp atomic write
		*stop = 1;
	}
}

int fci_chunk_jobs_run(fc_store *s, const char *what, size_t n, fci_chunk_job_fn fn, void *arg,
		       size_t *bad_q)
{
	size_t bad = SIZE_MAX;
	int bad_err = 0, stop = 0;
	uint64_t done = 0;
#pragma omp parallel
	{
		fci_decoder dec = { .ctx = fci_chunk_ctx_new() };
#pragma omp for schedule(dynamic, 1)
		for (size_t q = 0; q < n; q++) {
			int halt;
#pragma omp atomic read
			halt = stop;
			if (halt)
				continue;
			int err = dec.ctx ? fn(arg, q, &dec) : FC_ERR_NOMEM;
			if (err) {
#pragma omp critical(fci_chunk_jobs_err)
				if (q < bad) {
					bad = q;
					bad_err = err;
				}
			}
			uint64_t d;
#pragma omp atomic capture
			d = ++done;
			progress_tick(s, what, d, n, &stop);
		}
		free(dec.buf);
		fci_chunk_ctx_free(dec.ctx);
	}
	*bad_q = bad;
	if (bad != SIZE_MAX)
		return bad_err;
	if (stop)
		return FCI_FAIL(s, FC_ERR_INTERRUPTED, "interrupted");
	return 0;
}

/* ---- single lookups ---- */

int fci_index_lookup(fc_store *s, MDB_txn *txn, const fci_exdb *e, const uint8_t hash[FC_HASH_LEN],
		     uint64_t *chunk, uint32_t *slot)
{
	MDB_val k = { FC_HASH_LEN, (void *)hash }, v;
	int rc = mdb_get(txn, e->index, &k, &v);
	if (rc == MDB_NOTFOUND)
		return FC_ERR_NOT_FOUND;
	if (rc)
		return fci_mdb_fail(s, rc, "cannot read index");
	if (fci_index_decode(s->format, &v, chunk, slot) != 0) {
		char hex[2 * FC_HASH_LEN + 1];
		fc_hex(hex, hash, FC_HASH_LEN);
		return FCI_FAIL(s, FC_ERR_CORRUPT, "index entry %s is malformed (%zu bytes)", hex, v.mv_size);
	}
	return 0;
}

/* Every reader of features starts here: the extractor's databases, and a
 * read transaction whose snapshot the whole read uses. */
static int ex_read_begin(fc_store *s, const uint8_t exid[FC_HASH_LEN], fci_exdb **e, MDB_txn **txn)
{
	int err = fci_ex_open(s, exid, e);
	return err ? err : fci_txn_begin(s, MDB_RDONLY, txn);
}

int fc_store_has(fc_store *s, const uint8_t exid[FC_HASH_LEN], const uint8_t hash[FC_HASH_LEN])
{
	fci_exdb *e;
	MDB_txn *txn;
	uint64_t chunk;
	uint32_t slot;
	int err = ex_read_begin(s, exid, &e, &txn);
	if (err)
		return err;
	err = fci_index_lookup(s, txn, e, hash, &chunk, &slot);
	mdb_txn_abort(txn);
	return err == FC_ERR_NOT_FOUND ? 0 : err ? err : 1;
}

int fc_store_get(fc_store *s, const uint8_t exid[FC_HASH_LEN], const uint8_t hash[FC_HASH_LEN],
		 float *dst, size_t dst_len)
{
	fci_exdb *e;
	MDB_txn *txn;
	int err = ex_read_begin(s, exid, &e, &txn);
	if (err)
		return err;
	uint64_t chunk;
	uint32_t slot;
	char hex[2 * FC_HASH_LEN + 1], name[96];
	fc_hex(hex, hash, FC_HASH_LEN);
	if (dst_len < e->dim)
		err = FCI_FAIL(s, FC_ERR_INVALID, "destination holds %zu floats, the vectors have %u", dst_len,
			       e->dim);
	else
		err = fci_index_lookup(s, txn, e, hash, &chunk, &slot);
	if (err == FC_ERR_NOT_FOUND)
		err = FCI_FAIL(s, err, "no vector for content %s", hex);
	if (err)
		goto out;
	fci_chunk_name(name, sizeof name, e, chunk);
	uint8_t key[8];
	fci_chunk_key(key, chunk);
	MDB_val k = { 8, key }, v;
	int rc = mdb_get(txn, e->feat, &k, &v);
	if (rc) {
		err = rc == MDB_NOTFOUND ? FCI_FAIL(s, FC_ERR_CORRUPT, "index entry %s points at missing %s", hex, name)
					 : fci_mdb_fail(s, rc, "cannot read chunk");
		goto out;
	}
	fci_chunk_info ci;
	if ((err = fci_chunk_parse(v.mv_data, v.mv_size, &ci)) != 0) {
		err = FCI_FAIL(s, err, "%s: %s", name, fc_strerror(err));
		goto out;
	}
	if (ci.dim != e->dim || slot >= ci.count || memcmp(ci.hashes[slot], hash, FC_HASH_LEN) != 0) {
		err = FCI_FAIL(s, FC_ERR_CORRUPT, "index entry %s points past %s (slot %u of %u)", hex, name,
			       slot, ci.count);
		goto out;
	}
	if ((err = fci_decode_grow(&s->dec, v.mv_data, v.mv_size, &ci)) != 0) {
		err = FCI_FAIL(s, err, "%s: %s", name, fc_strerror(err));
		goto out;
	}
	memcpy(dst, s->dec.buf + (size_t)slot * ci.dim, ci.dim * sizeof *dst);
out:
	mdb_txn_abort(txn);
	return err;
}

/* ---- parallel loading ---- */

/* One row to fill: content hash, where its vector is, which row gets it. */
typedef struct ref {
	uint64_t chunk;
	uint32_t slot;
	size_t row;
} ref;

static int ref_cmp(const void *a, const void *b)
{
	const ref *x = a, *y = b;
	if (x->chunk != y->chunk)
		return x->chunk < y->chunk ? -1 : 1;
	if (x->slot != y->slot)
		return x->slot < y->slot ? -1 : 1;
	return x->row < y->row ? -1 : x->row > y->row;
}

/* A chunk to decode and the run of refs [first, first+n) that want rows of it. */
typedef struct job {
	const void *data;
	size_t len;
	size_t first, n;
} job;

struct load_arg {
	const job *jobs;
	const ref *refs;
	fc_matrix *m;
};

_Static_assert((int)FC_ROW_F16 == (int)FC_DTYPE_F16 && (int)FC_ROW_BF16 == (int)FC_DTYPE_BF16 &&
		       (int)FC_ROW_U8 == (int)FC_DTYPE_U8 && (int)FC_ROW_F32 == (int)FC_DTYPE_F32,
	       "a store dtype is a row type");

/* 0 when parsed chunk ci can fill the rows of jb: the matrix's dim, and
 * each ref's slot exists and holds its row's hash. Else FC_ERR_CORRUPT with
 * the failing ref's slot in *slot (0 for a dim mismatch). */
static int job_check(const struct load_arg *a, const job *jb, const fci_chunk_info *ci, uint32_t *slot)
{
	const ref *rf = a->refs + jb->first;
	*slot = 0;
	if (ci->dim != a->m->dim || (a->m->packed && (int)ci->dtype != (int)a->m->type))
		return FC_ERR_CORRUPT;
	for (size_t r = 0; r < jb->n; r++) {
		*slot = rf[r].slot;
		if (*slot >= ci->count || memcmp(ci->hashes[*slot], a->m->hashes[rf[r].row], FC_HASH_LEN))
			return FC_ERR_CORRUPT;
	}
	return 0;
}

/* Job jb's rows of the packed matrix: the chunk's raw payload (stored
 * dtype, plain layout) into dec's buffer, then each row's bytes copied. */
static int load_job_packed(const struct load_arg *a, const job *jb, const fci_chunk_info *ci, fci_decoder *dec)
{
	const ref *rf = a->refs + jb->first;
	const size_t dim = a->m->dim, rb = dim * fc_row_type_size(a->m->type);
	size_t need = (ci->raw_len + sizeof(float) - 1) / sizeof(float);
	if (need > dec->buf_len) {
		float *p = realloc(dec->buf, need * sizeof *p);
		if (!p)
			return FC_ERR_NOMEM;
		dec->buf = p;
		dec->buf_len = need;
	}
	int err = fci_chunk_decode_raw(dec->ctx, jb->data, jb->len, dec->buf, dec->buf_len * sizeof(float));
	if (err)
		return err;
	const uint8_t *raw = (const uint8_t *)dec->buf;
	uint8_t *rows = a->m->packed;
	if (a->m->type == FC_ROW_U8) {
		/* pairs, then codes (chunk.h); the pairs are little-endian floats,
		 * as the host's (chunk.c refuses a big-endian build) */
		const uint8_t *codes = raw + 8 * (size_t)ci->count;
		for (size_t r = 0; r < jb->n; r++) {
			memcpy(a->m->scale + 2 * rf[r].row, raw + 8 * (size_t)rf[r].slot, 2 * sizeof(float));
			memcpy(rows + rf[r].row * rb, codes + (size_t)rf[r].slot * rb, rb);
		}
		return 0;
	}
	for (size_t r = 0; r < jb->n; r++)
		memcpy(rows + rf[r].row * rb, raw + (size_t)rf[r].slot * rb, rb);
	return 0;
}

/* fci_chunk_job_fn: decode job q's chunk into its rows of the matrix. */
static int load_job(void *varg, size_t q, fci_decoder *dec)
{
	const struct load_arg *a = varg;
	const job *jb = &a->jobs[q];
	const ref *rf = a->refs + jb->first;
	const size_t dim = a->m->dim;
	float *rows = a->m->data;
	fci_chunk_info ci;
	uint32_t slot;
	int err = fci_chunk_parse(jb->data, jb->len, &ci);
	if (!err)
		err = job_check(a, jb, &ci, &slot);
	if (err)
		return err;
	if (a->m->packed) {
		err = load_job_packed(a, jb, &ci, dec);
	} else {
		/* A chunk whose rows are exactly the next rows of m decodes in place. */
		int direct = jb->n == ci.count;
		for (size_t r = 0; direct && r < jb->n; r++)
			direct = rf[r].slot == r && rf[r].row == rf[0].row + r;
		if (direct) {
			err = fci_chunk_decode(dec->ctx, jb->data, jb->len, rows + rf[0].row * dim, ci.count * dim);
		} else {
			err = fci_decode_grow(dec, jb->data, jb->len, &ci);
			for (size_t r = 0; !err && r < jb->n; r++)
				memcpy(rows + rf[r].row * dim, dec->buf + (size_t)rf[r].slot * dim, dim * sizeof(float));
		}
	}
	/* the failure message parses the chunk again: keep its pages then */
	if (!err)
		fci_map_drop(jb->data, jb->len);
	return err;
}

/* The message for load_job's failure on job q. */
static int load_job_fail(fc_store *s, const fci_exdb *e, const struct load_arg *a, size_t q, int err)
{
	const job *jb = &a->jobs[q];
	char name[96];
	fci_chunk_name(name, sizeof name, e, a->refs[jb->first].chunk);
	if (err == FC_ERR_NOMEM)
		return FCI_FAIL(s, err, "out of memory decoding %s", name);
	fci_chunk_info ci;
	uint32_t slot;
	if (fci_chunk_parse(jb->data, jb->len, &ci) == 0 && job_check(a, jb, &ci, &slot) && slot >= ci.count)
		return FCI_FAIL(s, FC_ERR_CORRUPT, "an index entry points past %s (slot %u of %u)", name, slot,
				ci.count);
	return FCI_FAIL(s, err, "%s: %s", name, fc_strerror(err));
}

/* Decode the chunks of `refs` (sorted by chunk, slot) into m->data in
 * parallel. The chunk bytes are fetched in txn first, so every thread reads
 * the same snapshot. Checks that each slot holds the hash the row expects. */
static int load_refs(fc_store *s, MDB_txn *txn, const fci_exdb *e, const ref *refs, size_t n, fc_matrix *m)
{
	size_t njobs = 0;
	for (size_t i = 0; i < n; i++)
		if (i == 0 || refs[i].chunk != refs[i - 1].chunk)
			njobs++;
	job *jobs = calloc(njobs ? njobs : 1, sizeof *jobs);
	if (!jobs)
		return FCI_FAIL(s, FC_ERR_NOMEM, "out of memory");
	int err = 0;
	size_t j = 0;
	fci_span span = { 0, 0 };
	for (size_t i = 0; i < n; i++) {
		if (i > 0 && refs[i].chunk == refs[i - 1].chunk) {
			jobs[j - 1].n++;
			continue;
		}
		uint8_t key[8];
		fci_chunk_key(key, refs[i].chunk);
		MDB_val k = { 8, key }, v;
		int rc = mdb_get(txn, e->feat, &k, &v);
		if (rc) {
			char name[96];
			fci_chunk_name(name, sizeof name, e, refs[i].chunk);
			err = rc == MDB_NOTFOUND ? FCI_FAIL(s, FC_ERR_CORRUPT, "index points at missing %s", name)
						 : fci_mdb_fail(s, rc, "cannot read chunk");
			break;
		}
		jobs[j++] = (job){ v.mv_data, v.mv_size, i, 1 };
		fci_span_add(&span, v.mv_data, v.mv_size);
	}
	if (!err) {
		struct load_arg a = { jobs, refs, m };
		size_t bad;
		err = fci_chunk_jobs_run(s, "load", njobs, load_job, &a, &bad);
		if (err && bad != SIZE_MAX)
			err = load_job_fail(s, e, &a, bad, err);
	}
	/* the pages read stay cached by the kernel; this process's matrix has them */
	fci_span_drop(&span);
	free(jobs);
	return err;
}

void fc_matrix_free(fc_matrix *m)
{
	if (!m)
		return;
	free(m->data);
	free(m->hashes);
	free(m->keys);
	free(m->labels);
	free(m->splits);
	free(m->keybuf);
	if (m->packed != m->data)
		free(m->packed);
	free(m->scale);
	memset(m, 0, sizeof *m);
}

fc_rows fc_matrix_rows(const fc_matrix *m)
{
	if (m->data)
		return fc_rows_f32(m->data, m->rows, m->dim);
	if (!m->packed)
		return (fc_rows){ .type = m->type, .dim = m->dim };
	return (fc_rows){ .type = m->type, .n = m->rows, .dim = m->dim, .data = m->packed, .scale = m->scale };
}

/* 64-byte aligned memory for a matrix of `bytes`; NULL when short. */
static void *rows_alloc(size_t bytes)
{
	bytes = (bytes + 63) & ~(size_t)63;
	if (bytes < HUGE_PAGE)
		return aligned_alloc(64, bytes ? bytes : 64);
	/* Faulting in a large matrix 4 KiB at a time costs about as much as
	 * decoding it; transparent huge pages make that 512x fewer faults. */
	bytes = (bytes + HUGE_PAGE - 1) & ~(size_t)(HUGE_PAGE - 1);
	void *p = NULL;
	if (posix_memalign(&p, HUGE_PAGE, bytes) != 0)
		return NULL;
	madvise(p, bytes, MADV_HUGEPAGE);
	return p;
}

/* The feature storage of m (rows, dim set) kept as `how` says, dtype
 * being the extractor's. */
static int features_alloc(fc_store *s, fc_matrix *m, fc_load_how how, fc_dtype dtype)
{
	size_t rows = m->rows, dim = m->dim;
	m->type = how == FC_LOAD_STORED ? (fc_row_type)dtype : FC_ROW_F32;
	if (dim && rows > SIZE_MAX / dim / sizeof(float) / 2)
		return FCI_FAIL(s, FC_ERR_OVERFLOW, "%zu x %zu matrix is too large", rows, dim);
	int ok = 1;
	if (how == FC_LOAD_F32 || (how == FC_LOAD_STORED && dtype == FC_DTYPE_F32)) {
		ok = (m->data = rows_alloc(rows * dim * sizeof(float))) != NULL;
	} else if (how == FC_LOAD_STORED) {
		ok = (m->packed = rows_alloc(rows * dim * fc_row_type_size(m->type))) != NULL;
		if (ok && m->type == FC_ROW_U8)
			ok = (m->scale = malloc((rows ? rows : 1) * 2 * sizeof(float))) != NULL;
	}
	if (!ok)
		return FCI_FAIL(s, FC_ERR_NOMEM, "out of memory for %zu x %zu features", rows, dim);
	return 0;
}

/* The matrix for `rows` rows of dim kept as `how` says. */
static int matrix_alloc(fc_store *s, fc_matrix *m, size_t rows, size_t dim, fc_load_how how, fc_dtype dtype)
{
	memset(m, 0, sizeof *m);
	m->rows = rows;
	m->dim = dim;
	if (rows > SIZE_MAX / FC_HASH_LEN)
		return FCI_FAIL(s, FC_ERR_OVERFLOW, "%zu rows are too many", rows);
	m->hashes = malloc((rows ? rows : 1) * FC_HASH_LEN);
	if (!m->hashes)
		return FCI_FAIL(s, FC_ERR_NOMEM, "out of memory for %zu rows", rows);
	return features_alloc(s, m, how, dtype);
}

/* Read the whole index into refs (row = entry order) and hashes; *n is
 * the count read. */
static int read_index(fc_store *s, MDB_txn *txn, const fci_exdb *e, ref *refs,
		      uint8_t (*hashes)[FC_HASH_LEN], size_t *n)
{
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, e->index, &cur);
	if (rc)
		return fci_mdb_fail(s, rc, "cannot read index");
	int err = 0;
	size_t i = 0;
	MDB_val k, v;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && i < *n;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), i++) {
		if (k.mv_size != FC_HASH_LEN || fci_index_decode(s->format, &v, &refs[i].chunk, &refs[i].slot)) {
			err = FCI_FAIL(s, FC_ERR_CORRUPT, "index has a malformed entry (key %zu bytes, value %zu)",
				       k.mv_size, v.mv_size);
			break;
		}
		memcpy(hashes[i], k.mv_data, FC_HASH_LEN);
		refs[i].row = i;
	}
	mdb_cursor_close(cur);
	*n = i;
	return err;
}

int fc_store_load_all(fc_store *s, const uint8_t exid[FC_HASH_LEN], fc_matrix *out)
{
	memset(out, 0, sizeof *out);
	fci_exdb *e;
	MDB_txn *txn;
	int err = ex_read_begin(s, exid, &e, &txn);
	if (err)
		return err;
	MDB_stat st;
	mdb_stat(txn, e->index, &st);
	size_t n = st.ms_entries;
	ref *refs = malloc((n ? n : 1) * sizeof *refs);
	uint8_t (*hashes)[FC_HASH_LEN] = malloc((n ? n : 1) * FC_HASH_LEN);
	if (!refs || !hashes) {
		err = FCI_FAIL(s, FC_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((err = read_index(s, txn, e, refs, hashes, &n)) != 0)
		goto out;
	/* Rows in chunk order: sort refs, then renumber rows and reorder hashes to match. */
	qsort(refs, n, sizeof *refs, ref_cmp);
	if ((err = matrix_alloc(s, out, n, e->dim, FC_LOAD_F32, e->dtype)) != 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		memcpy(out->hashes[i], hashes[refs[i].row], FC_HASH_LEN);
		refs[i].row = i;
	}
	err = load_refs(s, txn, e, refs, n, out);
out:
	mdb_txn_abort(txn);
	free(refs);
	free(hashes);
	if (err)
		fc_matrix_free(out);
	return err;
}

/* The rows fc_store_load_items gathers from the items before it allocates
 * the matrix: one per selected item that has a vector. */
struct item_rows {
	unsigned split_mask;
	size_t cap, n, missing;
	ref *refs;
	uint8_t (*hashes)[FC_HASH_LEN];
	uint32_t *labels;
	uint8_t *splits;
	size_t *keyoff; /* where row i's key starts in keybuf */
	size_t keybytes;
	char *keybuf;
	fci_span span; /* the item records read */
};

static void item_rows_free(struct item_rows *r)
{
	free(r->refs);
	free(r->hashes);
	free(r->labels);
	free(r->splits);
	free(r->keyoff);
	free(r->keybuf);
}

static int split_bit(int split)
{
	return split <= FC_SPLIT_TEST ? 1 << split : 1 << FC_SPLIT_TRAIN;
}

static int item_selected(const struct item_rows *r, const fc_item *it)
{
	return it->status == FC_ITEM_OK && (split_bit(it->split) & r->split_mask);
}

/* Pass 1 over the items: which rows, and how many key bytes. */
static int item_rows_collect(fc_store *s, MDB_txn *txn, MDB_cursor *cur, const fci_exdb *e,
			     struct item_rows *r)
{
	MDB_val k, v;
	int rc;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && r->n < r->cap;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		fc_item it;
		const char *why;
		if (fci_item_decode(s->format, &v, &it, &why) != 0)
			return FCI_FAIL(s, FC_ERR_CORRUPT, "items/%.*s: %s", (int)k.mv_size,
					(const char *)k.mv_data, why);
		fci_span_add(&r->span, k.mv_data, k.mv_size);
		fci_span_add(&r->span, v.mv_data, v.mv_size);
		if (!item_selected(r, &it))
			continue;
		uint64_t chunk;
		uint32_t slot;
		int err = fci_index_lookup(s, txn, e, it.hash, &chunk, &slot);
		if (err == FC_ERR_NOT_FOUND) {
			r->missing++;
			continue;
		}
		if (err)
			return err;
		size_t i = r->n++;
		r->refs[i] = (ref){ chunk, slot, i };
		memcpy(r->hashes[i], it.hash, FC_HASH_LEN);
		r->labels[i] = it.label;
		r->splits[i] = it.split;
		r->keyoff[i] = r->keybytes;
		r->keybytes += k.mv_size + 1;
	}
	return 0;
}

/* Pass 2: copy the keys of the rows (LMDB's are not NUL-terminated). */
static int item_rows_keys(fc_store *s, MDB_cursor *cur, struct item_rows *r)
{
	r->keybuf = malloc(r->keybytes ? r->keybytes : 1);
	if (!r->keybuf)
		return FCI_FAIL(s, FC_ERR_NOMEM, "out of memory");
	size_t i = 0;
	MDB_val k, v;
	for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && i < r->n;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		fc_item it;
		if (fci_item_decode(s->format, &v, &it, NULL) != 0 || !item_selected(r, &it) || memcmp(it.hash, r->hashes[i], FC_HASH_LEN) != 0 ||
		    r->keyoff[i] + k.mv_size + 1 != (i + 1 < r->n ? r->keyoff[i + 1] : r->keybytes))
			continue;
		memcpy(r->keybuf + r->keyoff[i], k.mv_data, k.mv_size);
		r->keybuf[r->keyoff[i] + k.mv_size] = '\0';
		i++;
	}
	if (i != r->n)
		return FCI_FAIL(s, FC_ERR_INTERNAL, "items changed within one snapshot");
	return 0;
}

/* Move the rows' keys, labels and splits into m (allocated for them). */
static int item_rows_give(fc_store *s, struct item_rows *r, fc_matrix *m)
{
	memcpy(m->hashes, r->hashes, r->n * FC_HASH_LEN);
	m->keys = malloc((r->n ? r->n : 1) * sizeof *m->keys);
	if (!m->keys)
		return FCI_FAIL(s, FC_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < r->n; i++)
		m->keys[i] = r->keybuf + r->keyoff[i];
	m->keybuf = r->keybuf;
	m->labels = r->labels;
	m->splits = r->splits;
	r->keybuf = NULL;
	r->labels = NULL;
	r->splits = NULL;
	return 0;
}

int fc_store_load_items(fc_store *s, const uint8_t exid[FC_HASH_LEN], unsigned split_mask,
			fc_matrix *out, size_t *missing)
{
	return fc_store_load_items_as(s, exid, split_mask, FC_LOAD_F32, out, missing);
}

int fc_store_load_items_as(fc_store *s, const uint8_t exid[FC_HASH_LEN], unsigned split_mask, fc_load_how how,
			   fc_matrix *out, size_t *missing)
{
	memset(out, 0, sizeof *out);
	if (missing)
		*missing = 0;
	fci_exdb *e;
	MDB_txn *txn;
	MDB_cursor *cur = NULL;
	int err = ex_read_begin(s, exid, &e, &txn);
	if (err)
		return err;
	MDB_stat st;
	mdb_stat(txn, s->items, &st);
	struct item_rows r = { .split_mask = split_mask, .cap = st.ms_entries ? st.ms_entries : 1 };
	r.refs = malloc(r.cap * sizeof *r.refs);
	r.hashes = malloc(r.cap * FC_HASH_LEN);
	r.labels = malloc(r.cap * sizeof *r.labels);
	r.splits = malloc(r.cap);
	r.keyoff = malloc(r.cap * sizeof *r.keyoff);
	if (!r.refs || !r.hashes || !r.labels || !r.splits || !r.keyoff) {
		err = FCI_FAIL(s, FC_ERR_NOMEM, "out of memory");
		goto out;
	}
	int rc = mdb_cursor_open(txn, s->items, &cur);
	if (rc) {
		cur = NULL;
		err = fci_mdb_fail(s, rc, "cannot read items");
		goto out;
	}
	if ((err = item_rows_collect(s, txn, cur, e, &r)) != 0 || (err = item_rows_keys(s, cur, &r)) != 0 ||
	    (err = matrix_alloc(s, out, r.n, e->dim, how, e->dtype)) != 0 || (err = item_rows_give(s, &r, out)) != 0)
		goto out;
	qsort(r.refs, r.n, sizeof *r.refs, ref_cmp);
	if (how != FC_LOAD_NONE)
		err = load_refs(s, txn, e, r.refs, r.n, out);
	if (missing)
		*missing = r.missing;
out:
	if (cur)
		mdb_cursor_close(cur);
	fci_span_drop(&r.span);
	mdb_txn_abort(txn);
	item_rows_free(&r);
	if (err)
		fc_matrix_free(out);
	return err;
}

int fc_store_foreach_chunk(fc_store *s, const uint8_t exid[FC_HASH_LEN], fc_chunk_fn fn, void *ctx)
{
	fci_exdb *e;
	MDB_txn *txn;
	MDB_cursor *cur;
	int err = ex_read_begin(s, exid, &e, &txn);
	if (err)
		return err;
	int rc = mdb_cursor_open(txn, e->feat, &cur);
	if (rc) {
		mdb_txn_abort(txn);
		return fci_mdb_fail(s, rc, "cannot read chunks");
	}
	MDB_val k, v;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && !err;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (k.mv_size != 8) {
			err = FCI_FAIL(s, FC_ERR_CORRUPT, "a chunk key has %zu bytes, not 8", k.mv_size);
			break;
		}
		err = fn(ctx, fci_be_load(k.mv_data, 8), v.mv_data, v.mv_size);
	}
	if (!err && rc != MDB_NOTFOUND)
		err = fci_mdb_fail(s, rc, "cannot read chunks");
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	return err;
}

int fc_store_fill_rows(fc_store *s, const uint8_t exid[FC_HASH_LEN], fc_matrix *m, fc_load_how how)
{
	fci_exdb *e;
	MDB_txn *txn;
	if (m->data || m->packed)
		return FCI_FAIL(s, FC_ERR_INVALID, "the matrix holds features already");
	int err = ex_read_begin(s, exid, &e, &txn);
	if (err)
		return err;
	ref *refs = malloc((m->rows ? m->rows : 1) * sizeof *refs);
	if (!refs) {
		err = FCI_FAIL(s, FC_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (m->dim != e->dim) {
		err = FCI_FAIL(s, FC_ERR_INVALID, "the matrix has %zu-d rows, the extractor %u-d", m->dim, e->dim);
		goto out;
	}
	for (size_t i = 0; i < m->rows && !err; i++) {
		refs[i].row = i;
		err = fci_index_lookup(s, txn, e, m->hashes[i], &refs[i].chunk, &refs[i].slot);
		if (err == FC_ERR_NOT_FOUND) {
			char hex[2 * FC_HASH_LEN + 1];
			fc_hex(hex, m->hashes[i], FC_HASH_LEN);
			err = FCI_FAIL(s, err, "no vector for content %s", hex);
		}
	}
	if (err || (how != FC_LOAD_NONE && (err = features_alloc(s, m, how, e->dtype)) != 0))
		goto out;
	qsort(refs, m->rows, sizeof *refs, ref_cmp);
	if (how != FC_LOAD_NONE)
		err = load_refs(s, txn, e, refs, m->rows, m);
out:
	mdb_txn_abort(txn);
	free(refs);
	if (err) {
		if (m->packed != m->data)
			free(m->packed);
		free(m->data);
		free(m->scale);
		m->data = NULL;
		m->packed = NULL;
		m->scale = NULL;
	}
	return err;
}
