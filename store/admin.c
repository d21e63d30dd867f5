/*
 * admin.c - whole-store work, what `featcache info`, `verify` and `gc` run:
 * counting (fc_store_stats_get), checking every record and decoding every
 * chunk (fc_store_verify), keeping what verify found in meta/damage
 * (fc_store_verify_note), dropping damaged chunks and broken records so
 * that extract can redo them (fc_store_repair), and dropping what nothing
 * references any more (fc_store_gc).
 *
 * Stats and verify must get through a damaged store: a bad record is a
 * finding to count or report, not a reason to stop. Verify decodes chunks
 * with load.c's parallel chunk loop; repair re-checks verify's findings
 * and drops them in one write transaction; gc rewrites chunks in bounded
 * write transactions so that an interrupted gc leaves a sound store.
 *
 * Not here: the everyday reads and writes (load.c, write.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>

#include "store/store_impl.h"

#define GC_CHUNKS_PER_TXN 128

static int damage_read(fc_store *s, MDB_txn *txn, fc_damage *d);

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
		fc_item it;
		if (fci_item_decode(s->format, &v, &it, NULL) != 0) {
			st->bad_records++;
			continue;
		}
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
	if (damage_read(s, txn, &out->damage) != 0)
		out->bad_records++; /* verify writes it anew */
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

/* Keys of records that a repair looks at again, copied out of the read
 * snapshot: a 2-byte big-endian length, then the key, one after another. */
struct keylist {
	uint8_t *buf;
	size_t len, cap, n;
};

static int keylist_add(struct keylist *l, const void *key, size_t klen)
{
	if (klen > UINT16_MAX)
		return FC_ERR_INVALID; /* LMDB keys are far shorter */
	if (l->len + 2 + klen > l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 1024;
		while (cap < l->len + 2 + klen)
			cap *= 2;
		uint8_t *p = realloc(l->buf, cap);
		if (!p)
			return FC_ERR_NOMEM;
		l->buf = p;
		l->cap = cap;
	}
	l->buf[l->len] = (uint8_t)(klen >> 8);
	l->buf[l->len + 1] = (uint8_t)klen;
	memcpy(l->buf + l->len + 2, key, klen);
	l->len += 2 + klen;
	l->n++;
	return 0;
}

/* The key at *at into k, advancing *at; 0 past the last one. */
static int keylist_next(const struct keylist *l, size_t *at, MDB_val *k)
{
	if (*at >= l->len)
		return 0;
	k->mv_size = (size_t)l->buf[*at] << 8 | l->buf[*at + 1];
	k->mv_data = l->buf + *at + 2;
	*at += 2 + k->mv_size;
	return 1;
}

/* What a repair may drop of one extractor, as verify found it. */
struct fix_ex {
	fci_exdb e;
	uint64_t *chunks;       /* damaged chunk ids, ascending */
	size_t n_chunks;
	struct keylist entries; /* keys of broken index entries */
	struct keylist junk;    /* feat keys that are not chunk ids */
};

struct verify_ctx {
	fc_report_fn report;
	void *ctx;
	uint64_t bad, checked;
	MDB_txn *txn;
	/* for the damage record and fc_store_repair */
	uint64_t unfixable;   /* findings that repair leaves alone */
	fc_damage dmg;        /* damaged chunks and the index entries repair would drop */
	struct fix_ex *fx;    /* one per extractor walked */
	size_t n_fx;
	struct keylist items; /* keys of malformed item records */
	int nomem;            /* a list could not grow: the walk fails at its end */
};

static void verify_ctx_free(struct verify_ctx *vc)
{
	for (size_t i = 0; i < vc->n_fx; i++) {
		free(vc->fx[i].chunks);
		free(vc->fx[i].entries.buf);
		free(vc->fx[i].junk.buf);
	}
	free(vc->fx);
	free(vc->items.buf);
}

static void fix_add(struct verify_ctx *vc, struct keylist *l, const void *key, size_t klen)
{
	if (keylist_add(l, key, klen) != 0)
		vc->nomem = 1;
}

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
static int verify_collect(fc_store *s, struct verify_ctx *vc, struct fix_ex *fx, vchunk **out, size_t *n)
{
	const fci_exdb *e = &fx->e;
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
			fix_add(vc, &fx->junk, k.mv_data, k.mv_size);
			continue;
		}
		ch[(*n)++] = (vchunk){ .id = fci_be_load(k.mv_data, 8), .data = v.mv_data, .len = v.mv_size };
	}
	mdb_cursor_close(cur);
	*out = ch;
	return 0;
}

/* Decode a chunk as one of e's: 0; FC_ERR_INVALID when its dim, dtype or
 * codec differ from e's; or why it does not decode. */
static int chunk_check(const fci_exdb *e, fci_decoder *dec, const void *data, size_t len, fci_chunk_info *ci)
{
	int err = fci_chunk_parse(data, len, ci);
	if (!err && (ci->dim != e->dim || ci->dtype != e->dtype || ci->codec != e->codec))
		err = FC_ERR_INVALID;
	if (!err)
		err = fci_decode_grow(dec, data, len, ci);
	return err;
}

/* Repair drops a damaged chunk, not one that a newer featcache wrote
 * (FC_ERR_VERSION) or that holds what this build cannot decode. */
static int chunk_droppable(int err)
{
	return err == FC_ERR_CORRUPT || err == FC_ERR_INVALID;
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
	int err = chunk_check(a->e, dec, c->data, c->len, &ci);
	c->err = err;
	if (!err) {
		c->count = ci.count;
		c->hashes = ci.hashes;
	}
	return err == FC_ERR_NOMEM ? err : 0;
}

/* Every index entry must name a sound chunk whose slot holds its hash. */
static int verify_index(fc_store *s, struct verify_ctx *vc, struct fix_ex *fx, vchunk *ch, size_t n)
{
	const fci_exdb *e = &fx->e;
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
		uint64_t bad = vc->bad;
		uint64_t id;
		uint32_t slot;
		if (k.mv_size != FC_HASH_LEN || fci_index_decode(s->format, &v, &id, &slot) != 0) {
			REPORT(vc, name, "malformed entry (key %zu bytes, value %zu)", k.mv_size, v.mv_size);
		} else {
			int at = vchunk_find(ch, n, id);
			if (at < 0)
				REPORT(vc, name, "points at chunk %llu, which does not exist", (unsigned long long)id);
			else if (ch[at].err)
				ch[at].refs++; /* reported once, with the chunk */
			else if (slot >= ch[at].count)
				REPORT(vc, name, "points past chunk %llu (slot %u of %u)", (unsigned long long)id,
				       slot, ch[at].count);
			else if (memcmp(ch[at].hashes[slot], k.mv_data, FC_HASH_LEN) != 0)
				REPORT(vc, name, "chunk %llu slot %u holds another content hash",
				       (unsigned long long)id, slot);
		}
		if (vc->bad != bad) {
			vc->dmg.vectors++;
			fix_add(vc, &fx->entries, k.mv_data, k.mv_size);
		}
	}
	mdb_cursor_close(cur);
	return 0;
}

/* A new fix_ex for e at the end of vc->fx. */
static struct fix_ex *fix_ex_new(fc_store *s, struct verify_ctx *vc, const fci_exdb *e)
{
	struct fix_ex *p = realloc(vc->fx, (vc->n_fx + 1) * sizeof *p);
	if (!p) {
		FCI_FAIL(s, FC_ERR_NOMEM, "out of memory");
		return NULL;
	}
	vc->fx = p;
	p += vc->n_fx++;
	*p = (struct fix_ex){ .e = *e };
	return p;
}

static int verify_extractor(fc_store *s, struct verify_ctx *vc, const fci_exdb *e)
{
	vchunk *ch = NULL;
	size_t n = 0, bad;
	struct fix_ex *fx = fix_ex_new(s, vc, e);
	if (!fx)
		return FC_ERR_NOMEM;
	int err = verify_collect(s, vc, fx, &ch, &n);
	if (err)
		return err;
	struct verify_arg a = { ch, e };
	err = fci_chunk_jobs_run(s, "verify", n, verify_job, &a, &bad);
	if (err && bad != SIZE_MAX)
		err = FCI_FAIL(s, err, "out of memory");
	if (!err)
		err = verify_index(s, vc, fx, ch, n);
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
		if (!chunk_droppable(ch[i].err)) {
			vc->unfixable++;
			continue;
		}
		vc->dmg.chunks++;
		vc->dmg.vectors += ch[i].refs;
		if (fx->n_chunks % 64 == 0) {
			uint64_t *p = realloc(fx->chunks, (fx->n_chunks + 64) * sizeof *p);
			if (!p) {
				vc->nomem = 1;
				continue;
			}
			fx->chunks = p;
		}
		fx->chunks[fx->n_chunks++] = ch[i].id;
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

static int label_exists(fc_store *s, MDB_txn *txn, uint32_t id, MDB_val *name)
{
	uint8_t ik[5];
	fci_label_id_key(ik, id);
	MDB_val lk = { 5, ik };
	return mdb_get(txn, s->labels, &lk, name) == 0;
}

/* What is wrong with items record v, as "problem; problem" in msg (cap
 * bytes); 0 when nothing is. */
static int item_problem(fc_store *s, MDB_txn *txn, const MDB_val *v, char *msg, size_t cap)
{
	fc_item it;
	const char *why;
	if (fci_item_decode(s->format, v, &it, &why) != 0) {
		snprintf(msg, cap, "%s (%zu bytes)", why, v->mv_size);
		return 1;
	}
	MDB_val lv;
	size_t len = 0;
	msg[0] = '\0';
	if (it.split > FC_SPLIT_TEST && it.split != FC_SPLIT_NONE)
		len += (size_t)snprintf(msg + len, cap - len, "unknown split %u", it.split);
	if (it.status > FC_ITEM_FAILED && len < cap)
		len += (size_t)snprintf(msg + len, cap - len, "%sunknown status %u", len ? "; " : "", it.status);
	if (it.label != FC_NO_LABEL && !label_exists(s, txn, it.label, &lv) && len < cap)
		len += (size_t)snprintf(msg + len, cap - len, "%slabel id %u does not exist", len ? "; " : "",
					it.label);
	return len > 0;
}

/* A bad item record goes: the next extract adds the file again. */
static void check_item(fc_store *s, struct verify_ctx *vc, const char *name, const MDB_val *k,
		       const MDB_val *v)
{
	char msg[256];
	if (!item_problem(s, vc->txn, v, msg, sizeof msg))
		return;
	report_msg(vc, name, msg);
	fix_add(vc, &vc->items, k->mv_data, k->mv_size);
}

/* Labels come in pairs: 'n'+name -> id and 'i'+id -> name. Repair leaves
 * them alone: items refer to the ids. */
static void check_label(fc_store *s, struct verify_ctx *vc, const char *name, const MDB_val *k,
			const MDB_val *v)
{
	const char *kp = k->mv_data;
	MDB_val lv;
	uint64_t bad = vc->bad;
	if (k->mv_size >= 2 && kp[0] == 'n' && v->mv_size == 4) {
		uint32_t id = fci_load_le32(v->mv_data);
		if (!label_exists(s, vc->txn, id, &lv) || lv.mv_size != k->mv_size - 1 ||
		    memcmp(lv.mv_data, kp + 1, lv.mv_size) != 0)
			REPORT(vc, name, "id %u does not map back to this name", id);
	} else if (!(k->mv_size == 5 && kp[0] == 'i')) {
		REPORT(vc, name, "malformed label record");
	}
	vc->unfixable += vc->bad - bad;
}

/* The whole walk, its findings left in *vc (verify_ctx_free it). */
static int verify_run(fc_store *s, struct verify_ctx *vc)
{
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
			report_msg(vc, name, fc_store_errmsg(s));
			vc->unfixable++;
			memset(ids[i], 0, FC_HASH_LEN);
		}
	}
	if ((err = fci_txn_begin(s, MDB_RDONLY, &vc->txn)) != 0)
		goto out;
	err = verify_records(s, vc, s->items, "items", check_item);
	if (!err)
		err = verify_records(s, vc, s->labels, "labels", check_label);
	for (size_t i = 0; i < n && !err; i++) {
		static const uint8_t zero[FC_HASH_LEN];
		fci_exdb *e;
		if (memcmp(ids[i], zero, FC_HASH_LEN) == 0 || fci_ex_open(s, ids[i], &e) != 0)
			continue;
		err = verify_extractor(s, vc, e);
	}
	mdb_txn_abort(vc->txn);
	vc->txn = NULL;
	if (!err && vc->nomem)
		err = FCI_FAIL(s, FC_ERR_NOMEM, "out of memory");
out:
	free(ids);
	vc->dmg.problems = vc->bad;
	if (!err && vc->bad)
		err = FCI_FAIL(s, FC_ERR_CORRUPT, "%llu problems found", (unsigned long long)vc->bad);
	return err;
}

int fc_store_verify(fc_store *s, fc_report_fn report_fn, void *ctx, uint64_t *checked)
{
	struct verify_ctx vc = { .report = report_fn, .ctx = ctx };
	int err = verify_run(s, &vc);
	if (checked)
		*checked = vc.checked;
	verify_ctx_free(&vc);
	return err;
}

/* ---- the damage record ---- */

#define DAMAGE_KEY "damage"

/* meta/damage into *d: zeros when there is none, FC_ERR_CORRUPT when it
 * cannot be read. */
static int damage_read(fc_store *s, MDB_txn *txn, fc_damage *d)
{
	memset(d, 0, sizeof *d);
	MDB_val k = { sizeof DAMAGE_KEY - 1, DAMAGE_KEY }, v;
	int rc = mdb_get(txn, s->meta, &k, &v);
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return fci_mdb_fail(s, rc, "cannot read meta/damage");
	json_error_t jerr;
	json_t *j = json_loadb(v.mv_data, v.mv_size, 0, &jerr);
	json_int_t p = -1, c = -1, n = -1, t = 0;
	int bad = !j || json_unpack(j, "{s:I, s:I, s:I, s:I}", "problems", &p, "chunks", &c, "vectors", &n,
				    "verified", &t) != 0 || p < 1 || c < 0 || n < 0;
	json_decref(j);
	if (bad)
		return FCI_FAIL(s, FC_ERR_CORRUPT, "meta/damage is not a valid record");
	*d = (fc_damage){ (uint64_t)p, (uint64_t)c, (uint64_t)n, (int64_t)t };
	return 0;
}

/* Write d as meta/damage, or delete the record when d has no problems. */
static int damage_write(fc_store *s, MDB_txn *txn, const fc_damage *d)
{
	MDB_val k = { sizeof DAMAGE_KEY - 1, DAMAGE_KEY };
	if (d->problems == 0)
		return fci_del(s, txn, s->meta, &k);
	char text[200];
	int len = snprintf(text, sizeof text, "{\"problems\":%llu,\"chunks\":%llu,\"vectors\":%llu,\"verified\":%lld}",
			   (unsigned long long)d->problems, (unsigned long long)d->chunks,
			   (unsigned long long)d->vectors, (long long)d->when);
	MDB_val v = { (size_t)len, text };
	return fci_put(s, txn, s->meta, &k, &v, 0);
}

/* 1 when the store's record says d already (a missing or unreadable
 * record says "no problems" and "rewrite me" respectively). */
static int damage_recorded(fc_store *s, const fc_damage *d)
{
	MDB_txn *txn;
	fc_damage old;
	if (fci_txn_begin(s, MDB_RDONLY, &txn) != 0)
		return 0;
	int err = damage_read(s, txn, &old);
	mdb_txn_abort(txn);
	return !err && old.problems == d->problems && old.chunks == d->chunks && old.vectors == d->vectors;
}

static int damage_txn(fc_store *s, MDB_txn *txn, void *ctx)
{
	return damage_write(s, txn, ctx);
}

int fc_store_verify_note(fc_store *s, fc_report_fn report_fn, void *ctx, uint64_t *checked, fc_damage *found)
{
	struct verify_ctx vc = { .report = report_fn, .ctx = ctx };
	int err = verify_run(s, &vc);
	if (checked)
		*checked = vc.checked;
	vc.dmg.when = (int64_t)time(NULL);
	if (found)
		*found = vc.dmg;
	/* A walk that failed found nothing worth recording. */
	if ((!err || err == FC_ERR_CORRUPT) && !damage_recorded(s, &vc.dmg)) {
		int werr = fci_store_write(s, damage_txn, &vc.dmg);
		if (werr)
			err = werr;
	}
	verify_ctx_free(&vc);
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
	fc_item it;
	int rc = mdb_cursor_open(txn, s->items, &cur);
	if (rc) {
		free(h);
		return fci_mdb_fail(s, rc, "cannot read items");
	}
	*n = 0;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && *n < st.ms_entries;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
		if (fci_item_decode(s->format, &v, &it, NULL) == 0)
			memcpy(h[(*n)++], it.hash, FC_HASH_LEN);
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
		uint8_t rec[FCI_INDEX_MAX];
		MDB_val ik = { FC_HASH_LEN, hashes[j] }, iv = { fci_index_encode(s->format, rec, id, j), rec };
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
		return FCI_FAIL(s, err, "%s: %s", name, fc_strerror(err));
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
		err = FCI_FAIL(s, err, "%s: %s", name, fc_strerror(err));
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

/* ---- repair ---- */

/* One record repair dropped, passed on after the commit. */
struct dropped {
	char name[FC_KEY_MAX + 64];
	uint64_t vectors;
};

struct repair_ctx {
	struct verify_ctx *vc;
	fc_damage left; /* the damage record to write */
	/* what one attempt of the transaction dropped (it may run again after
	 * the map grows, so everything here is reset at its start) */
	uint64_t chunks, vectors, items;
	struct dropped *drops;
	size_t n_drops, cap_drops;
	uint8_t *gone;    /* gone[i]: chunk i of the current fix_ex was dropped */
	uint64_t *counts; /* counts[i]: index entries dropped with it */
};

static int drop_note(fc_store *s, struct repair_ctx *c, const char *name, uint64_t vectors)
{
	if (c->n_drops == c->cap_drops) {
		size_t cap = c->cap_drops ? 2 * c->cap_drops : 16;
		struct dropped *p = realloc(c->drops, cap * sizeof *p);
		if (!p)
			return FCI_FAIL(s, FC_ERR_NOMEM, "out of memory");
		c->drops = p;
		c->cap_drops = cap;
	}
	struct dropped *d = &c->drops[c->n_drops++];
	snprintf(d->name, sizeof d->name, "%s", name);
	d->vectors = vectors;
	return 0;
}

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Drop those of fx's damaged chunks that are still damaged (gone[i] set). */
static int repair_chunks(fc_store *s, MDB_txn *txn, struct repair_ctx *c, const struct fix_ex *fx)
{
	for (size_t i = 0; i < fx->n_chunks; i++) {
		uint8_t key[8];
		fci_chunk_key(key, fx->chunks[i]);
		MDB_val k = { 8, key }, v;
		int rc = mdb_get(txn, fx->e.feat, &k, &v);
		if (rc == MDB_NOTFOUND)
			continue;
		if (rc)
			return fci_mdb_fail(s, rc, "cannot read chunk");
		fci_chunk_info ci;
		int err = chunk_check(&fx->e, &s->dec, v.mv_data, v.mv_size, &ci);
		if (err == FC_ERR_NOMEM)
			return FCI_FAIL(s, err, "out of memory");
		if (!chunk_droppable(err))
			continue;
		if ((err = fci_del(s, txn, fx->e.feat, &k)) != 0)
			return err;
		c->gone[i] = 1;
		c->chunks++;
	}
	return 0;
}

/* Drop every index entry that points into a chunk repair_chunks dropped,
 * and name those chunks. */
static int repair_index(fc_store *s, MDB_txn *txn, struct repair_ctx *c, const struct fix_ex *fx)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc = mdb_cursor_open(txn, fx->e.index, &cur), err = 0;
	if (rc)
		return fci_mdb_fail(s, rc, "cannot read index");
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && !err;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		uint64_t id;
		uint32_t slot;
		if (fci_index_decode(s->format, &v, &id, &slot) != 0)
			continue; /* a broken entry: repair_entries' */
		const uint64_t *at = bsearch(&id, fx->chunks, fx->n_chunks, sizeof id, u64_cmp);
		if (at && c->gone[at - fx->chunks])
			err = gc_cursor_del(s, cur, "cannot delete index entry", &c->counts[at - fx->chunks]);
	}
	mdb_cursor_close(cur);
	for (size_t i = 0; i < fx->n_chunks && !err; i++) {
		if (!c->gone[i])
			continue;
		char name[128];
		fci_chunk_name(name, sizeof name, &fx->e, fx->chunks[i]);
		c->vectors += c->counts[i];
		err = drop_note(s, c, name, c->counts[i]);
	}
	return err;
}

/* 1 if index entry (k, v) is still broken in txn, as verify_index judges. */
static int entry_broken(unsigned format, MDB_txn *txn, const fci_exdb *e, const MDB_val *k, const MDB_val *v)
{
	uint64_t id;
	uint32_t slot;
	if (k->mv_size != FC_HASH_LEN || fci_index_decode(format, v, &id, &slot) != 0)
		return 1;
	uint8_t key[8];
	fci_chunk_key(key, id);
	MDB_val ck = { 8, key }, cv;
	fci_chunk_info ci;
	if (mdb_get(txn, e->feat, &ck, &cv) != 0)
		return 1;
	/* A chunk that does not parse is one repair_chunks left alone (a
	 * newer version, say): its entries stay with it. */
	if (fci_chunk_parse(cv.mv_data, cv.mv_size, &ci) != 0)
		return 0;
	return slot >= ci.count || memcmp(ci.hashes[slot], k->mv_data, FC_HASH_LEN) != 0;
}

/* Drop fx's broken index entries that are still broken. */
static int repair_entries(fc_store *s, MDB_txn *txn, struct repair_ctx *c, const struct fix_ex *fx)
{
	char hex[2 * FC_HASH_LEN + 1], name[128];
	fc_hex(hex, fx->e.id, FC_HASH_LEN);
	size_t at = 0;
	MDB_val k, v;
	while (keylist_next(&fx->entries, &at, &k)) {
		if (mdb_get(txn, fx->e.index, &k, &v) != 0 || !entry_broken(s->format, txn, &fx->e, &k, &v))
			continue;
		int err = fci_del(s, txn, fx->e.index, &k);
		char h[2 * FC_HASH_LEN + 1] = "?";
		if (k.mv_size == FC_HASH_LEN)
			fc_hex(h, k.mv_data, FC_HASH_LEN);
		snprintf(name, sizeof name, "index.%s/%s", hex, h);
		if (err || (err = drop_note(s, c, name, 1)) != 0)
			return err;
		c->vectors++;
	}
	return 0;
}

/* Drop fx's feat records whose keys are not chunk ids. */
static int repair_junk(fc_store *s, MDB_txn *txn, struct repair_ctx *c, const struct fix_ex *fx)
{
	char hex[2 * FC_HASH_LEN + 1], name[128];
	fc_hex(hex, fx->e.id, FC_HASH_LEN);
	size_t at = 0;
	MDB_val k, v;
	while (keylist_next(&fx->junk, &at, &k)) {
		if (mdb_get(txn, fx->e.feat, &k, &v) != 0)
			continue;
		int err = fci_del(s, txn, fx->e.feat, &k);
		snprintf(name, sizeof name, "feat.%s/<%zu-byte key>", hex, k.mv_size);
		if (err || (err = drop_note(s, c, name, 0)) != 0)
			return err;
	}
	return 0;
}

/* Drop the malformed item records that are still malformed, with their
 * error records: the next extract scans the files and adds them again. */
static int repair_items(fc_store *s, MDB_txn *txn, struct repair_ctx *c)
{
	char msg[256], name[FC_KEY_MAX + 16];
	size_t at = 0;
	MDB_val k, v;
	while (keylist_next(&c->vc->items, &at, &k)) {
		if (mdb_get(txn, s->items, &k, &v) != 0 || !item_problem(s, txn, &v, msg, sizeof msg))
			continue;
		int err = fci_del(s, txn, s->items, &k);
		if (!err)
			err = fci_del(s, txn, s->errors, &k);
		snprintf(name, sizeof name, "items/%.*s", (int)(k.mv_size < FC_KEY_MAX ? k.mv_size : FC_KEY_MAX),
			 (const char *)k.mv_data);
		if (err || (err = drop_note(s, c, name, 0)) != 0)
			return err;
		c->items++;
	}
	return 0;
}

/* Everything repair drops, and the damage record, in one transaction. */
static int repair_txn(fc_store *s, MDB_txn *txn, void *vctx)
{
	struct repair_ctx *c = vctx;
	const struct verify_ctx *vc = c->vc;
	int err = 0;
	c->chunks = c->vectors = c->items = 0;
	c->n_drops = 0;
	for (size_t x = 0; x < vc->n_fx && !err; x++) {
		const struct fix_ex *fx = &vc->fx[x];
		uint64_t before = c->chunks;
		memset(c->gone, 0, fx->n_chunks);
		memset(c->counts, 0, fx->n_chunks * sizeof *c->counts);
		err = repair_chunks(s, txn, c, fx);
		if (!err && c->chunks > before)
			err = repair_index(s, txn, c, fx);
		if (!err)
			err = repair_entries(s, txn, c, fx);
		if (!err)
			err = repair_junk(s, txn, c, fx);
	}
	if (!err)
		err = repair_items(s, txn, c);
	if (!err)
		err = damage_write(s, txn, &c->left);
	return err;
}

int fc_store_repair(fc_store *s, fc_report_fn report_fn, fc_drop_fn dropped, void *ctx, fc_repair_stats *out)
{
	struct verify_ctx vc = { .report = report_fn, .ctx = ctx };
	struct repair_ctx c = { .vc = &vc };
	fc_repair_stats st = { 0 };
	int64_t now = (int64_t)time(NULL);
	int err = verify_run(s, &vc);
	st.checked = vc.checked;
	st.found = vc.dmg;
	st.found.when = now;
	if (err && err != FC_ERR_CORRUPT)
		goto out;
	err = 0;
	c.left = (fc_damage){ .problems = vc.unfixable, .when = vc.unfixable ? now : 0 };
	size_t fixes = vc.items.n, most = 1;
	for (size_t x = 0; x < vc.n_fx; x++) {
		fixes += vc.fx[x].n_chunks + vc.fx[x].entries.n + vc.fx[x].junk.n;
		if (vc.fx[x].n_chunks > most)
			most = vc.fx[x].n_chunks;
	}
	/* A sound store, or one only with what repair cannot fix and says so
	 * already, is not written to. */
	if (fixes || !damage_recorded(s, &c.left)) {
		c.gone = calloc(most, 1);
		c.counts = calloc(most, sizeof *c.counts);
		if (!c.gone || !c.counts) {
			err = FCI_FAIL(s, FC_ERR_NOMEM, "out of memory");
			goto out;
		}
		if ((err = fci_store_write(s, repair_txn, &c)) != 0)
			goto out;
		st.chunks_dropped = c.chunks;
		st.vectors_dropped = c.vectors;
		st.items_dropped = c.items;
		for (size_t i = 0; dropped && i < c.n_drops; i++)
			dropped(ctx, c.drops[i].name, c.drops[i].vectors);
	}
	st.left = vc.unfixable;
	if (st.left)
		err = FCI_FAIL(s, FC_ERR_CORRUPT, "%llu problem%s that repair cannot fix", (unsigned long long)st.left,
			       st.left == 1 ? "" : "s");
out:
	if (out)
		*out = st;
	verify_ctx_free(&vc);
	free(c.drops);
	free(c.gone);
	free(c.counts);
	return err;
}
