/*
 * admin.c - whole-store work, what `featcache info`, `verify` and `gc` run:
 * counting (fc_store_stats_get), checking every record and decoding every
 * chunk (fc_store_verify), and dropping what nothing references any more
 * (fc_store_gc).
 *
 * Stats and verify must get through a damaged store: a bad record is a
 * finding to count or report, not a reason to stop. Verify decodes chunks
 * with load.c's parallel chunk loop; gc rewrites chunks in bounded write
 * transactions so that an interrupted gc leaves a sound store.
 *
 * Not here: the everyday reads and writes (load.c, write.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store/store_impl.h"

#define GC_CHUNKS_PER_TXN 128

/* ---- stats ---- */

static uint64_t db_bytes(MDB_txn *txn, MDB_dbi dbi, unsigned psize)
{
	MDB_stat st;
	if (mdb_stat(txn, dbi, &st))
		return 0;
	return (uint64_t)(st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages) * psize;
}

/* Counting must survive damaged records: info is what people run first
 * on a store that misbehaves. Malformed ones are counted, not fatal. */
static int count_items(fc_store *s, MDB_txn *txn, fc_store_stats *st)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc = mdb_cursor_open(txn, s->items, &cur);
	if (rc)
		return fci_mdb_fail(s, rc, "cannot read items");
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (v.mv_size != FCI_ITEM_REC) {
			st->bad_records++;
			continue;
		}
		fc_item it;
		fci_item_decode(&it, &v);
		st->items++;
		st->items_failed += it.status == FC_ITEM_FAILED;
		st->splits[it.split <= FC_SPLIT_TEST ? it.split : 3]++;
	}
	mdb_cursor_close(cur);
	return 0;
}

static int tally_chunk(void *ctx, uint64_t id, const void *chunk, size_t len)
{
	(void)id;
	fc_store_ex_stats *x = ctx;
	x->chunks++;
	x->chunk_bytes += len;
	/* The count field only: stats must not decode (verify does that). */
	if (len >= FC_CHUNK_HEADER)
		x->slots += fci_load_le32((const uint8_t *)chunk + 12);
	return 0;
}

/* Per extractor: storage settings and chunk tallies; a broken one is
 * marked and counted. */
static int stats_extractors(fc_store *s, fc_store_stats *out)
{
	uint8_t (*ids)[FC_HASH_LEN];
	size_t n;
	int err = fc_store_list_extractors(s, &ids, &n);
	if (err)
		return err;
	out->extractors = calloc(n ? n : 1, sizeof *out->extractors);
	if (!out->extractors) {
		free(ids);
		return FCI_FAIL(s, FC_ERR_NOMEM, "out of memory");
	}
	out->n_extractors = n;
	for (size_t i = 0; i < n && !err; i++) {
		fc_store_ex_stats *x = &out->extractors[i];
		fci_exdb *e;
		memcpy(x->id, ids[i], FC_HASH_LEN);
		if (fci_ex_open(s, ids[i], &e) != 0) {
			x->broken = 1;
			out->bad_records++;
			continue;
		}
		x->dim = e->dim;
		x->dtype = e->dtype;
		x->codec = e->codec;
		err = fc_store_foreach_chunk(s, ids[i], tally_chunk, x);
	}
	free(ids);
	return err;
}

/* Everything that one read transaction counts. */
static int stats_txn(fc_store *s, MDB_txn *txn, fc_store_stats *out)
{
	int err = count_items(s, txn, out);
	if (err)
		return err;
	MDB_val fk = { 6, "format" }, fv;
	if (mdb_get(txn, s->meta, &fk, &fv) == 0 && fv.mv_size == 4)
		out->format = fci_load_le32(fv.mv_data);
	MDB_stat est;
	mdb_env_stat(s->env, &est);
	MDB_stat st;
	mdb_stat(txn, s->labels, &st);
	out->labels = st.ms_entries / 2;
	mdb_stat(txn, s->errors, &st);
	out->errors = st.ms_entries;
	for (size_t i = 0; i < out->n_extractors; i++) {
		fci_exdb *e;
		if (out->extractors[i].broken || fci_ex_open(s, out->extractors[i].id, &e) != 0)
			continue;
		mdb_stat(txn, e->index, &st);
		out->extractors[i].vectors = st.ms_entries;
		out->extractors[i].disk_bytes = db_bytes(txn, e->feat, est.ms_psize) +
						db_bytes(txn, e->index, est.ms_psize);
	}
	MDB_envinfo info;
	mdb_env_info(s->env, &info);
	out->used_bytes = (uint64_t)(info.me_last_pgno + 1) * est.ms_psize;
	return 0;
}

int fc_store_stats_get(fc_store *s, fc_store_stats *out)
{
	memset(out, 0, sizeof *out);
	MDB_txn *txn;
	int err = stats_extractors(s, out);
	if (!err && (err = fci_txn_begin(s, MDB_RDONLY, &txn)) == 0) {
		err = stats_txn(s, txn, out);
		mdb_txn_abort(txn);
	}
	if (err) {
		free(out->extractors);
		out->extractors = NULL;
		out->n_extractors = 0;
		return err;
	}
	char data[4096];
	struct stat fst;
	snprintf(data, sizeof data, "%s/data.mdb", s->path);
	if (stat(data, &fst) == 0)
		out->file_bytes = (uint64_t)fst.st_size;
	return 0;
}

/* ---- verify ---- */

typedef struct vchunk {
	uint64_t id;
	const void *data;
	size_t len;
	int err;       /* result of decoding */
	uint64_t refs; /* index entries that point at this chunk while it is damaged */
	uint32_t count;
	const uint8_t (*hashes)[FC_HASH_LEN];
} vchunk;

static int vchunk_find(const vchunk *v, size_t n, uint64_t id)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (v[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < n && v[lo].id == id ? (int)lo : -1;
}

struct verify_ctx {
	fc_report_fn report;
	void *ctx;
	uint64_t bad, checked;
	MDB_txn *txn;
};

static void report_msg(struct verify_ctx *vc, const char *key, const char *msg)
{
	vc->bad++;
	if (vc->report)
		vc->report(vc->ctx, key, msg);
}

/* REPORT(vc, key, fmt, ...) - count one finding about key and pass it on. */
#define REPORT(vc, key, ...)                                    \
	do {                                                    \
		char msg_[512];                                 \
		fci_errf(msg_, sizeof msg_, 0, __VA_ARGS__);    \
		report_msg((vc), (key), msg_);                  \
	} while (0)

/* Every chunk of e (keys that are not chunk ids are reported) into *out,
 * *n of them, in id order. */
static int verify_collect(fc_store *s, struct verify_ctx *vc, const fci_exdb *e, vchunk **out, size_t *n)
{
	char hex[2 * FC_HASH_LEN + 1], name[128];
	fc_hex(hex, e->id, FC_HASH_LEN);
	MDB_stat st;
	mdb_stat(vc->txn, e->feat, &st);
	size_t cap = st.ms_entries;
	vchunk *ch = calloc(cap ? cap : 1, sizeof *ch);
	if (!ch)
		return FCI_FAIL(s, FC_ERR_NOMEM, "out of memory");
	MDB_cursor *cur;
	int rc = mdb_cursor_open(vc->txn, e->feat, &cur);
	if (rc) {
		free(ch);
		return fci_mdb_fail(s, rc, "cannot read chunks");
	}
	MDB_val k, v;
	*n = 0;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && *n < cap;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (k.mv_size != 8) {
			snprintf(name, sizeof name, "feat.%s/<%zu-byte key>", hex, k.mv_size);
			REPORT(vc, name, "chunk key is not 8 bytes");
			continue;
		}
		ch[(*n)++] = (vchunk){ .id = fci_be_load(k.mv_data, 8), .data = v.mv_data, .len = v.mv_size };
	}
	mdb_cursor_close(cur);
	*out = ch;
	return 0;
}

struct verify_arg {
	vchunk *ch;
	const fci_exdb *e;
};

/* fci_chunk_job_fn: decode chunk q and keep the outcome in it. A damaged
 * chunk is a finding, reported later in id order; only running out of
 * memory fails the run. */
static int verify_job(void *varg, size_t q, fci_decoder *dec)
{
	const struct verify_arg *a = varg;
	vchunk *c = &a->ch[q];
	fci_chunk_info ci;
	int err = fci_chunk_parse(c->data, c->len, &ci);
	if (!err && (ci.dim != a->e->dim || ci.dtype != a->e->dtype || ci.codec != a->e->codec))
		err = FC_ERR_INVALID; /* reported as a mismatch */
	if (!err)
		err = fci_decode_grow(dec, c->data, c->len, &ci);
	c->err = err;
	if (!err) {
		c->count = ci.count;
		c->hashes = ci.hashes;
	}
	return err == FC_ERR_NOMEM ? err : 0;
}

/* Every index entry must name a sound chunk whose slot holds its hash. */
static int verify_index(fc_store *s, struct verify_ctx *vc, const fci_exdb *e, vchunk *ch, size_t n)
{
	char hex[2 * FC_HASH_LEN + 1], name[128];
	fc_hex(hex, e->id, FC_HASH_LEN);
	MDB_cursor *cur;
	int rc = mdb_cursor_open(vc->txn, e->index, &cur);
	if (rc)
		return fci_mdb_fail(s, rc, "cannot read index");
	MDB_val k, v;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		vc->checked++;
		char h[2 * FC_HASH_LEN + 1] = "?";
		if (k.mv_size == FC_HASH_LEN)
			fc_hex(h, k.mv_data, FC_HASH_LEN);
		snprintf(name, sizeof name, "index.%s/%s", hex, h);
		if (k.mv_size != FC_HASH_LEN || v.mv_size != FCI_INDEX_REC) {
			REPORT(vc, name, "malformed entry (key %zu bytes, value %zu)", k.mv_size, v.mv_size);
			continue;
		}
		uint64_t id;
		uint32_t slot;
		fci_index_decode(&v, &id, &slot);
		int at = vchunk_find(ch, n, id);
		if (at < 0)
			REPORT(vc, name, "points at chunk %llu, which does not exist", (unsigned long long)id);
		else if (ch[at].err)
			ch[at].refs++; /* reported once, with the chunk */
		else if (slot >= ch[at].count)
			REPORT(vc, name, "points past chunk %llu (slot %u of %u)", (unsigned long long)id, slot,
			       ch[at].count);
		else if (memcmp(ch[at].hashes[slot], k.mv_data, FC_HASH_LEN) != 0)
			REPORT(vc, name, "chunk %llu slot %u holds another content hash", (unsigned long long)id,
			       slot);
	}
	mdb_cursor_close(cur);
	return 0;
}

static int verify_extractor(fc_store *s, struct verify_ctx *vc, const fci_exdb *e)
{
	vchunk *ch = NULL;
	size_t n = 0, bad;
	int err = verify_collect(s, vc, e, &ch, &n);
	if (err)
		return err;
	struct verify_arg a = { ch, e };
	err = fci_chunk_jobs_run(s, "verify", n, verify_job, &a, &bad);
	if (err && bad != SIZE_MAX)
		err = FCI_FAIL(s, err, "out of memory");
	if (!err)
		err = verify_index(s, vc, e, ch, n);
	for (size_t i = 0; i < n && !err; i++) {
		vc->checked++;
		if (!ch[i].err)
			continue;
		char name[128];
		fci_chunk_name(name, sizeof name, e, ch[i].id);
		if (ch[i].err == FC_ERR_INVALID)
			REPORT(vc, name, "dim, dtype or codec differ from the extractor's (%u, %s, %s); %llu index entries point at it",
			       e->dim, fc_dtype_name(e->dtype), fc_codec_name(e->codec), (unsigned long long)ch[i].refs);
		else
			REPORT(vc, name, "%s; %llu index entries point at it", fc_strerror(ch[i].err),
			       (unsigned long long)ch[i].refs);
	}
	free(ch);
	return err;
}

/* Check one record of db `name` (a printable "<db>/<key>" for reports). */
typedef void (*record_check_fn)(fc_store *s, struct verify_ctx *vc, const char *name, const MDB_val *k,
				const MDB_val *v);

/* Run check on every record of dbi; `db` names the db in reports. */
static int verify_records(fc_store *s, struct verify_ctx *vc, MDB_dbi dbi, const char *db,
			  record_check_fn check)
{
	MDB_cursor *cur;
	MDB_val k, v;
	char name[FC_KEY_MAX + 16];
	int rc = mdb_cursor_open(vc->txn, dbi, &cur);
	if (rc) {
		char what[64];
		snprintf(what, sizeof what, "cannot read %s", db);
		return fci_mdb_fail(s, rc, what);
	}
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		vc->checked++;
		snprintf(name, sizeof name, "%s/%.*s", db, (int)(k.mv_size < FC_KEY_MAX ? k.mv_size : FC_KEY_MAX),
			 (const char *)k.mv_data);
		check(s, vc, name, &k, &v);
	}
	mdb_cursor_close(cur);
	return 0;
}

static int label_exists(fc_store *s, struct verify_ctx *vc, uint32_t id, MDB_val *name)
{
	uint8_t ik[5];
	fci_label_id_key(ik, id);
	MDB_val lk = { 5, ik };
	return mdb_get(vc->txn, s->labels, &lk, name) == 0;
}

static void check_item(fc_store *s, struct verify_ctx *vc, const char *name, const MDB_val *k,
		       const MDB_val *v)
{
	(void)k;
	if (v->mv_size != FCI_ITEM_REC) {
		REPORT(vc, name, "record has %zu bytes, not %d", v->mv_size, FCI_ITEM_REC);
		return;
	}
	fc_item it;
	MDB_val lv;
	fci_item_decode(&it, v);
	if (it.split > FC_SPLIT_TEST && it.split != FC_SPLIT_NONE)
		REPORT(vc, name, "unknown split %u", it.split);
	if (it.status > FC_ITEM_FAILED)
		REPORT(vc, name, "unknown status %u", it.status);
	if (it.label != FC_NO_LABEL && !label_exists(s, vc, it.label, &lv))
		REPORT(vc, name, "label id %u does not exist", it.label);
}

/* Labels come in pairs: 'n'+name -> id and 'i'+id -> name. */
static void check_label(fc_store *s, struct verify_ctx *vc, const char *name, const MDB_val *k,
			const MDB_val *v)
{
	const char *kp = k->mv_data;
	MDB_val lv;
	if (k->mv_size >= 2 && kp[0] == 'n' && v->mv_size == 4) {
		uint32_t id = fci_load_le32(v->mv_data);
		if (!label_exists(s, vc, id, &lv) || lv.mv_size != k->mv_size - 1 ||
		    memcmp(lv.mv_data, kp + 1, lv.mv_size) != 0)
			REPORT(vc, name, "id %u does not map back to this name", id);
	} else if (!(k->mv_size == 5 && kp[0] == 'i')) {
		REPORT(vc, name, "malformed label record");
	}
}

int fc_store_verify(fc_store *s, fc_report_fn report_fn, void *ctx, uint64_t *checked)
{
	struct verify_ctx vc = { .report = report_fn, .ctx = ctx };
	uint8_t (*ids)[FC_HASH_LEN] = NULL;
	size_t n = 0;
	int err = fc_store_list_extractors(s, &ids, &n);
	if (err)
		return err;
	/* Open every extractor's dbs first: a broken descriptor is a finding, not a stop. */
	for (size_t i = 0; i < n; i++) {
		fci_exdb *e;
		if (fci_ex_open(s, ids[i], &e) != 0) {
			char hex[2 * FC_HASH_LEN + 1], name[64];
			fc_hex(hex, ids[i], FC_HASH_LEN);
			snprintf(name, sizeof name, "extractors/%s", hex);
			report_msg(&vc, name, fc_store_errmsg(s));
			memset(ids[i], 0, FC_HASH_LEN);
		}
	}
	if ((err = fci_txn_begin(s, MDB_RDONLY, &vc.txn)) != 0)
		goto out;
	err = verify_records(s, &vc, s->items, "items", check_item);
	if (!err)
		err = verify_records(s, &vc, s->labels, "labels", check_label);
	for (size_t i = 0; i < n && !err; i++) {
		static const uint8_t zero[FC_HASH_LEN];
		fci_exdb *e;
		if (memcmp(ids[i], zero, FC_HASH_LEN) == 0 || fci_ex_open(s, ids[i], &e) != 0)
			continue;
		err = verify_extractor(s, &vc, e);
	}
	mdb_txn_abort(vc.txn);
out:
	free(ids);
	if (checked)
		*checked = vc.checked;
	if (!err && vc.bad)
		err = FCI_FAIL(s, FC_ERR_CORRUPT, "%llu problems found", (unsigned long long)vc.bad);
	return err;
}

/* ---- gc ---- */

static int hash_cmp(const void *a, const void *b)
{
	return memcmp(a, b, FC_HASH_LEN);
}

struct gc_ctx {
	fci_exdb *exs;
	size_t n_ex;
	/* chunk rewrite pass */
	fci_exdb *e;
	const uint64_t *ids;
	size_t n_ids;
	uint8_t *buf; /* re-encode buffer */
	size_t buf_cap;
	fc_gc_stats pass;
};

/* The content hashes items refer to, sorted, read in txn: *live (free()
 * it), *n of them. */
static int gc_live_hashes(fc_store *s, MDB_txn *txn, uint8_t (**live)[FC_HASH_LEN], size_t *n)
{
	MDB_stat st;
	mdb_stat(txn, s->items, &st);
	uint8_t (*h)[FC_HASH_LEN] = malloc((st.ms_entries + 1) * FC_HASH_LEN);
	if (!h)
		return FCI_FAIL(s, FC_ERR_NOMEM, "out of memory");
	MDB_cursor *cur;
	MDB_val k, v;
	int rc = mdb_cursor_open(txn, s->items, &cur);
	if (rc) {
		free(h);
		return fci_mdb_fail(s, rc, "cannot read items");
	}
	*n = 0;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && *n < st.ms_entries;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
		if (v.mv_size == FCI_ITEM_REC)
			memcpy(h[(*n)++], v.mv_data, FC_HASH_LEN);
	mdb_cursor_close(cur);
	qsort(h, *n, FC_HASH_LEN, hash_cmp);
	*live = h;
	return 0;
}

/* Delete the record under cur; FCI_RETRY_GROW on a full map. */
static int gc_cursor_del(fc_store *s, MDB_cursor *cur, const char *what, uint64_t *count)
{
	int rc = mdb_cursor_del(cur, 0);
	if (rc == MDB_MAP_FULL)
		return FCI_RETRY_GROW;
	if (rc)
		return fci_mdb_fail(s, rc, what);
	(*count)++;
	return 0;
}

/* Pass 1, in one write transaction: the set of content hashes items refer
 * to is taken inside the transaction, so no writer can add an item between
 * deciding a vector is orphaned and dropping it. */
static int gc_orphans_txn(fc_store *s, MDB_txn *txn, void *vctx)
{
	struct gc_ctx *c = vctx;
	c->pass = (fc_gc_stats){ 0 };
	uint8_t (*live)[FC_HASH_LEN] = NULL;
	size_t n = 0;
	int err = gc_live_hashes(s, txn, &live, &n), rc;
	if (err)
		return err;
	MDB_cursor *cur;
	MDB_val k, v;
	for (size_t x = 0; x < c->n_ex && !err; x++) {
		if ((rc = mdb_cursor_open(txn, c->exs[x].index, &cur)) != 0) {
			err = fci_mdb_fail(s, rc, "cannot read index");
			break;
		}
		for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && !err;
		     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
			if (k.mv_size != FC_HASH_LEN || !bsearch(k.mv_data, live, n, FC_HASH_LEN, hash_cmp))
				err = gc_cursor_del(s, cur, "cannot delete index entry", &c->pass.index_dropped);
		mdb_cursor_close(cur);
	}
	free(live);
	if (err)
		return err;

	/* Error records of items that are gone. */
	if ((rc = mdb_cursor_open(txn, s->errors, &cur)) != 0)
		return fci_mdb_fail(s, rc, "cannot read errors");
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && !err;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		MDB_val iv;
		if (mdb_get(txn, s->items, &k, &iv) != 0)
			err = gc_cursor_del(s, cur, "cannot delete error record", &c->pass.errors_dropped);
	}
	mdb_cursor_close(cur);
	return err;
}

/* Which slots of chunk `id` are live (the index entry of their hash points
 * back at them): is_live[i] set, *live counted. */
static int gc_live_slots(fc_store *s, MDB_txn *txn, const fci_exdb *e, uint64_t id,
			 const fci_chunk_info *ci, uint8_t *is_live, uint32_t *live)
{
	*live = 0;
	for (uint32_t i = 0; i < ci->count; i++) {
		uint64_t cid;
		uint32_t slot;
		int err = fci_index_lookup(s, txn, e, ci->hashes[i], &cid, &slot);
		if (err == FC_ERR_NOT_FOUND)
			continue;
		if (err)
			return err;
		if (cid == id && slot == i) {
			is_live[i] = 1;
			(*live)++;
		}
	}
	return 0;
}

/* Write chunk `id` again with only its live slots (decoded into s->dec.buf,
 * compacted to the front in slot order), and point their index entries at
 * the new slots. *len is the new chunk's size. */
static int gc_rewrite(fc_store *s, MDB_txn *txn, struct gc_ctx *c, uint64_t id, MDB_val *k,
		      const fci_chunk_info *ci, const uint8_t *is_live, uint32_t live, size_t *len)
{
	uint8_t (*hashes)[FC_HASH_LEN] = malloc((size_t)live * FC_HASH_LEN);
	int err = 0;
	if (!hashes)
		return FCI_FAIL(s, FC_ERR_NOMEM, "out of memory");
	float *vecs = s->dec.buf;
	uint32_t j = 0;
	for (uint32_t i = 0; i < ci->count; i++) {
		if (!is_live[i])
			continue;
		memcpy(hashes[j], ci->hashes[i], FC_HASH_LEN);
		memmove(vecs + (size_t)j * ci->dim, vecs + (size_t)i * ci->dim, ci->dim * sizeof(float));
		j++;
	}
	/* f32, f16 and bf16 re-encode bit-exactly (decoding is exact and encoding
	 * maps the decoded values back to the same codes); u8 recomputes lo and
	 * step from the decoded values, which can move a value by float rounding. */
	size_t bound = fci_chunk_bound(ci->dtype, ci->codec, ci->dim, live);
	if (bound > c->buf_cap) {
		uint8_t *p = realloc(c->buf, bound);
		if (!p) {
			err = FCI_FAIL(s, FC_ERR_NOMEM, "out of memory");
			goto out;
		}
		c->buf = p;
		c->buf_cap = bound;
	}
	err = fci_chunk_encode(s->dec.ctx, c->buf, c->buf_cap, len, vecs, (const uint8_t(*)[FC_HASH_LEN])hashes,
			       ci->dim, live, ci->dtype, ci->codec, c->e->level);
	if (err) {
		char name[96];
		fci_chunk_name(name, sizeof name, c->e, id);
		err = FCI_FAIL(s, err, "%s: cannot re-encode: %s", name, fc_strerror(err));
		goto out;
	}
	MDB_val nv = { *len, c->buf };
	err = fci_put(s, txn, c->e->feat, k, &nv, 0);
	for (j = 0; j < live && !err; j++) {
		uint8_t rec[FCI_INDEX_REC];
		fci_index_encode(rec, id, j);
		MDB_val ik = { FC_HASH_LEN, hashes[j] }, iv = { FCI_INDEX_REC, rec };
		err = fci_put(s, txn, c->e->index, &ik, &iv, 0);
	}
out:
	free(hashes);
	return err;
}

/* Rewrite one chunk without its dead slots, inside the caller's transaction. */
static int gc_chunk(fc_store *s, MDB_txn *txn, struct gc_ctx *c, uint64_t id)
{
	const fci_exdb *e = c->e;
	uint8_t key[8];
	fci_chunk_key(key, id);
	MDB_val k = { 8, key }, v;
	int rc = mdb_get(txn, e->feat, &k, &v);
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return fci_mdb_fail(s, rc, "cannot read chunk");
	char name[96];
	fci_chunk_name(name, sizeof name, e, id);
	fci_chunk_info ci;
	int err = fci_chunk_parse(v.mv_data, v.mv_size, &ci);
	if (err)
		return FCI_FAIL(s, err, "%s: %s (run 'featcache verify')", name, fc_strerror(err));
	uint32_t live;
	uint8_t *is_live = calloc(ci.count, 1);
	if (!is_live)
		return FCI_FAIL(s, FC_ERR_NOMEM, "out of memory");
	if ((err = gc_live_slots(s, txn, e, id, &ci, is_live, &live)) != 0)
		goto out;
	c->pass.bytes_before += v.mv_size;
	if (live == ci.count) {
		c->pass.bytes_after += v.mv_size;
		goto out;
	}
	c->pass.slots_dropped += ci.count - live;
	if (live == 0) {
		c->pass.chunks_dropped++;
		err = fci_del(s, txn, e->feat, &k);
		goto out;
	}
	if ((err = fci_decode_grow(&s->dec, v.mv_data, v.mv_size, &ci)) != 0) {
		err = FCI_FAIL(s, err, "%s: %s (run 'featcache verify')", name, fc_strerror(err));
		goto out;
	}
	size_t len;
	if ((err = gc_rewrite(s, txn, c, id, &k, &ci, is_live, live, &len)) != 0)
		goto out;
	c->pass.chunks_rewritten++;
	c->pass.bytes_after += len;
out:
	free(is_live);
	return err;
}

static int gc_chunks_txn(fc_store *s, MDB_txn *txn, void *vctx)
{
	struct gc_ctx *c = vctx;
	c->pass = (fc_gc_stats){ 0 };
	for (size_t i = 0; i < c->n_ids; i++) {
		int err = gc_chunk(s, txn, c, c->ids[i]);
		if (err)
			return err;
	}
	return 0;
}

struct id_list {
	uint64_t *ids;
	size_t n, cap;
};

static int collect_id(void *ctx, uint64_t id, const void *chunk, size_t len)
{
	(void)chunk;
	(void)len;
	struct id_list *l = ctx;
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 256;
		uint64_t *p = realloc(l->ids, cap * sizeof *p);
		if (!p)
			return FC_ERR_NOMEM;
		l->ids = p;
		l->cap = cap;
	}
	l->ids[l->n++] = id;
	return 0;
}

static void gc_add(fc_gc_stats *to, const fc_gc_stats *from)
{
	to->index_dropped += from->index_dropped;
	to->chunks_rewritten += from->chunks_rewritten;
	to->chunks_dropped += from->chunks_dropped;
	to->slots_dropped += from->slots_dropped;
	to->errors_dropped += from->errors_dropped;
	to->bytes_before += from->bytes_before;
	to->bytes_after += from->bytes_after;
}

/* Pass 2 for one extractor: its chunks in bounded transactions (LMDB caps
 * the dirty pages of one transaction). Each chunk decides its live slots
 * inside the transaction that rewrites it. */
static int gc_extractor(fc_store *s, struct gc_ctx *c, fc_gc_stats *total)
{
	struct id_list list = { 0 };
	int err = fc_store_foreach_chunk(s, c->e->id, collect_id, &list);
	if (err == FC_ERR_NOMEM)
		err = FCI_FAIL(s, err, "out of memory");
	for (size_t i = 0; i < list.n && !err; i += GC_CHUNKS_PER_TXN) {
		c->ids = list.ids + i;
		c->n_ids = list.n - i < GC_CHUNKS_PER_TXN ? list.n - i : GC_CHUNKS_PER_TXN;
		err = fci_store_write(s, gc_chunks_txn, c);
		if (!err)
			gc_add(total, &c->pass);
		const fc_logger *lg = s->logger;
		if (!err && lg && lg->progress && lg->progress(lg->ctx, "gc", i + c->n_ids, list.n))
			err = FCI_FAIL(s, FC_ERR_INTERRUPTED, "interrupted (the chunks done so far are rewritten)");
	}
	free(list.ids);
	return err;
}

int fc_store_gc(fc_store *s, fc_gc_stats *out)
{
	fc_gc_stats total = { 0 };
	uint8_t (*ids)[FC_HASH_LEN] = NULL;
	size_t n = 0;
	struct gc_ctx c = { 0 };
	int err = fc_store_list_extractors(s, &ids, &n);
	if (err)
		return err;
	c.exs = calloc(n ? n : 1, sizeof *c.exs);
	if (!c.exs) {
		err = FCI_FAIL(s, FC_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n && !err; i++) {
		fci_exdb *e;
		if ((err = fci_ex_open(s, ids[i], &e)) == 0)
			c.exs[c.n_ex++] = *e;
	}
	if (err || (err = fci_store_write(s, gc_orphans_txn, &c)) != 0)
		goto out;
	gc_add(&total, &c.pass);
	for (size_t x = 0; x < c.n_ex && !err; x++) {
		c.e = &c.exs[x];
		err = gc_extractor(s, &c, &total);
	}
out:
	free(ids);
	free(c.exs);
	free(c.buf);
	if (out)
		*out = total;
	return err;
}
