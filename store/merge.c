/*
 * merge.c - fc_store_merge: copy one store (a shard, extracted by another
 * worker) into another. Extractors, labels by name, items, error records,
 * and each extractor's chunks as their encoded bytes under the
 * destination's next chunk ids, with the index entries of their live
 * slots rewritten to the new ids. Nothing is decoded or re-encoded.
 *
 * Two passes over one snapshot of the source. The first only reads, both
 * stores, and refuses the source before anything is written: a conflicting
 * extractor or item, a damaged record or chunk, an index that does not
 * point at its chunks. The second writes in bounded transactions, each one
 * deciding inside itself what the destination still lacks; so a merge that
 * stops anywhere is finished by running it again, and a second merge of
 * the same source writes nothing.
 *
 * Not here: opening the stores, choosing the shards, printing (cli/).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "store/store_impl.h"

#define MERGE_CHUNKS 64                    /* chunks per write transaction */
#define MERGE_BYTES ((uint64_t)64 << 20)   /* encoded bytes per write transaction */
#define RECS_PER_TXN 4096                  /* items, error records or labels per transaction */
#define LABEL_MAX 511                      /* write.c's label key buffer, less the 'n' */
#define HEX_LEN (2 * FC_HASH_LEN + 1)

/* src's label id -> dst's id of the same name; sorted by src id. */
typedef struct label_pair {
	uint32_t src, dst;
} label_pair;

/* One extractor of src and, once it exists there, the same one in dst. */
typedef struct merge_ex {
	fci_exdb s, d;
	char *descriptor; /* src's, NUL-terminated */
	uint64_t chunks;  /* src's chunk count, from the check pass */
} merge_ex;

struct merge {
	fc_store *dst, *src;
	size_t batch_chunks;
	uint64_t batch_bytes;
	const char *const *ignore;
	fc_merge_stats *st;
	MDB_txn *stxn; /* the snapshot of src that both passes read */
	merge_ex *ex;
	size_t n_ex;
	label_pair *labels;
	size_t n_labels;
	uint64_t n_items, n_chunks; /* totals, for progress */
};

static const char *const split_names[] = { "train", "val", "test" };

static const char *split_name(unsigned split)
{
	return split <= FC_SPLIT_TEST ? split_names[split] : "none";
}

/* Name src in a message as failing, with verify to run. */
static int src_damaged(struct merge *m, int err, const char *what)
{
	return FCI_FAIL(m->dst, err, "store '%s': %s (run 'featcache verify --store %s')", m->src->path, what,
			m->src->path);
}

/* A failed call on src: its message, on dst's handle. */
static int src_fail(struct merge *m, int err)
{
	return FCI_FAIL(m->dst, err, "store '%s': %s", m->src->path,
			m->src->err[0] ? m->src->err : fc_strerror(err));
}

static int dst_fail(struct merge *m, int rc, const char *what)
{
	return fci_mdb_fail(m->dst, rc, what);
}

/* The name of label `id` in txn of s: 0, or FC_ERR_NOT_FOUND. */
static int label_get(fc_store *s, MDB_txn *txn, uint32_t id, MDB_val *name)
{
	uint8_t ik[5];
	fci_label_id_key(ik, id);
	MDB_val k = { 5, ik };
	int rc = mdb_get(txn, s->labels, &k, name);
	return rc == 0 ? 0 : rc == MDB_NOTFOUND ? FC_ERR_NOT_FOUND : fci_mdb_fail(s, rc, "cannot read labels");
}

static int label_map(const struct merge *m, uint32_t src, uint32_t *dst)
{
	size_t lo = 0, hi = m->n_labels;
	if (src == FC_NO_LABEL) {
		*dst = FC_NO_LABEL;
		return 0;
	}
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (m->labels[mid].src < src)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == m->n_labels || m->labels[lo].src != src)
		return FC_ERR_NOT_FOUND;
	*dst = m->labels[lo].dst;
	return 0;
}

/* "'name'" or "no label", for messages. */
static void label_text(char *buf, size_t cap, const MDB_val *name)
{
	if (!name)
		snprintf(buf, cap, "no label");
	else
		snprintf(buf, cap, "'%.*s'", (int)(name->mv_size < 200 ? name->mv_size : 200),
			 (const char *)name->mv_data);
}

/* 0 when the two records of item `key` agree on content, status, split and
 * label (by name: sname in src, dname in dst, NULL for none); else
 * FC_ERR_EXISTS naming the key, the first difference and both stores. */
static int item_compare(struct merge *m, const MDB_val *key, const fc_item *si, const MDB_val *sname,
			const fc_item *di, const MDB_val *dname)
{
	const char *sp = m->src->path, *dp = m->dst->path;
	int kl = (int)(key->mv_size < 300 ? key->mv_size : 300);
	const char *k = key->mv_data;
	if (memcmp(si->hash, di->hash, FC_HASH_LEN) != 0) {
		char sh[HEX_LEN], dh[HEX_LEN];
		fc_hex(sh, si->hash, FC_HASH_LEN);
		fc_hex(dh, di->hash, FC_HASH_LEN);
		return FCI_FAIL(m->dst, FC_ERR_EXISTS, "item '%.*s' has content %s in '%s' but %s in '%s'", kl, k, sh,
				sp, dh, dp);
	}
	if (si->status != di->status)
		return FCI_FAIL(m->dst, FC_ERR_EXISTS, "item '%.*s' has status %s in '%s' but %s in '%s'", kl, k,
				si->status == FC_ITEM_OK ? "ok" : "failed", sp,
				di->status == FC_ITEM_OK ? "ok" : "failed", dp);
	if (si->split != di->split)
		return FCI_FAIL(m->dst, FC_ERR_EXISTS, "item '%.*s' has split %s in '%s' but %s in '%s'", kl, k,
				split_name(si->split), sp, split_name(di->split), dp);
	if (!sname != !dname || (sname && (sname->mv_size != dname->mv_size ||
					   memcmp(sname->mv_data, dname->mv_data, sname->mv_size) != 0))) {
		char sl[220], dl[220];
		label_text(sl, sizeof sl, sname);
		label_text(dl, sizeof dl, dname);
		return FCI_FAIL(m->dst, FC_ERR_EXISTS, "item '%.*s' has label %s in '%s' but %s in '%s'", kl, k, sl,
				sp, dl, dp);
	}
	return 0;
}

/* ---- the check pass: read only ---- */

/* The first top-level member in which two descriptors differ, named with
 * both values in dst's message; FC_ERR_EXISTS. */
static int descriptor_differs(struct merge *m, const char *hex, json_t *sj, json_t *dj)
{
	const char *name = NULL, *k;
	json_t *v;
	json_object_foreach(sj, k, v) {
		if (!json_equal(v, json_object_get(dj, k)) && (!name || strcmp(k, name) < 0))
			name = k;
	}
	json_object_foreach(dj, k, v) {
		if (!json_object_get(sj, k) && (!name || strcmp(k, name) < 0))
			name = k;
	}
	json_t *a = json_object_get(sj, name), *b = json_object_get(dj, name);
	int flags = JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY;
	char *at = a ? json_dumps(a, flags) : NULL, *bt = b ? json_dumps(b, flags) : NULL;
	int err = FCI_FAIL(m->dst, FC_ERR_EXISTS,
			   "extractor %s has another descriptor in '%s' than in '%s': '%s' is %.200s there, %.200s here",
			   hex, m->src->path, m->dst->path, name ? name : "?", at ? at : "absent", bt ? bt : "absent");
	free(at);
	free(bt);
	return err;
}

/* src's extractor x against dst's of the same id (dv, in dtxn). */
static int check_extractor(struct merge *m, merge_ex *x, const MDB_val *dv)
{
	char hex[HEX_LEN];
	fc_hex(hex, x->s.id, FC_HASH_LEN);
	const fci_exdb *a = &x->s, *b = &x->d;
	if (a->dim != b->dim || a->dtype != b->dtype || a->codec != b->codec || a->level != b->level)
		return FCI_FAIL(m->dst, FC_ERR_EXISTS,
				"extractor %s stores %u-d %s (%s, level %d) in '%s' but %u-d %s (%s, level %d) in '%s'",
				hex, a->dim, fc_dtype_name(a->dtype), fc_codec_name(a->codec), a->level, m->src->path,
				b->dim, fc_dtype_name(b->dtype), fc_codec_name(b->codec), b->level, m->dst->path);
	json_error_t jerr;
	json_t *sj = json_loads(x->descriptor, 0, &jerr), *dj = json_loadb(dv->mv_data, dv->mv_size, 0, &jerr);
	int err = 0;
	if (!json_is_object(sj) || !json_is_object(dj)) {
		err = FCI_FAIL(m->dst, FC_ERR_CORRUPT, "extractor %s: a descriptor is not a JSON object", hex);
		goto out;
	}
	for (const char *const *ig = m->ignore; ig && *ig; ig++) {
		json_object_del(sj, *ig);
		json_object_del(dj, *ig);
	}
	if (!json_equal(sj, dj))
		err = descriptor_differs(m, hex, sj, dj);
out:
	json_decref(sj);
	json_decref(dj);
	return err;
}

/* src's extractors (their databases opened before the snapshot begins) and
 * their descriptors; dst's for the ids it has. */
static int open_extractors(struct merge *m)
{
	uint8_t (*ids)[FC_HASH_LEN] = NULL;
	size_t n = 0;
	int err = fc_store_list_extractors(m->src, &ids, &n);
	if (err)
		return src_fail(m, err);
	m->ex = calloc(n ? n : 1, sizeof *m->ex);
	if (!m->ex) {
		free(ids);
		return FCI_FAIL(m->dst, FC_ERR_NOMEM, "out of memory");
	}
	for (size_t i = 0; i < n && !err; i++) {
		merge_ex *x = &m->ex[m->n_ex++];
		fci_exdb *e;
		fc_extractor ex;
		if ((err = fci_ex_open(m->src, ids[i], &e)) != 0 ||
		    (err = fc_store_get_extractor(m->src, ids[i], &ex)) != 0) {
			err = src_damaged(m, err, m->src->err);
			break;
		}
		x->s = *e;
		if (!(x->descriptor = strdup(ex.descriptor)))
			err = FCI_FAIL(m->dst, FC_ERR_NOMEM, "out of memory");
		else if ((err = fci_ex_open(m->dst, ids[i], &e)) == 0)
			x->d = *e;
		else if (err == FC_ERR_NOT_FOUND)
			err = 0; /* new to dst: x->d stays zero until it is added */
	}
	free(ids);
	return err;
}

static int check_extractors(struct merge *m, MDB_txn *dtxn)
{
	for (size_t i = 0; i < m->n_ex; i++) {
		merge_ex *x = &m->ex[i];
		MDB_val k = { FC_HASH_LEN, x->s.id }, v;
		int rc = mdb_get(dtxn, m->dst->extractors, &k, &v);
		if (rc == MDB_NOTFOUND)
			continue;
		if (rc)
			return dst_fail(m, rc, "cannot read extractors");
		int err = check_extractor(m, x, &v);
		if (err)
			return err;
	}
	return 0;
}

/* Every 'i'+id record of src's labels db names a label the way
 * fc_store_label_ids can take it back. */
static int check_labels(struct merge *m)
{
	MDB_cursor *cur;
	int rc = mdb_cursor_open(m->stxn, m->src->labels, &cur);
	if (rc)
		return src_fail(m, fci_mdb_fail(m->src, rc, "cannot read labels"));
	MDB_val k = { 1, "i" }, v;
	int err = 0;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0 && !err;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (((const char *)k.mv_data)[0] != 'i')
			break;
		if (k.mv_size != 5 || v.mv_size == 0 || v.mv_size > LABEL_MAX || memchr(v.mv_data, '\0', v.mv_size))
			err = src_damaged(m, FC_ERR_CORRUPT, "a label record is malformed");
	}
	mdb_cursor_close(cur);
	return err;
}

/* One src item against dst (in dtxn): well formed, and agreeing with dst's
 * record of the same key if there is one. */
static int check_item(struct merge *m, MDB_txn *dtxn, const MDB_val *k, const MDB_val *v)
{
	char what[FC_KEY_MAX + 96];
	int kl = (int)(k->mv_size < 300 ? k->mv_size : 300);
	fc_item si, di;
	MDB_val sname, dname, dv;
	if (k->mv_size == 0 || k->mv_size > fc_store_max_key(m->dst) ||
	    fci_item_decode(m->src->format, v, &si, NULL) != 0) {
		snprintf(what, sizeof what, "items/%.*s has a %zu-byte key and a malformed %zu-byte record", kl,
			 (const char *)k->mv_data, k->mv_size, v->mv_size);
		return src_damaged(m, FC_ERR_CORRUPT, what);
	}
	int err = si.label == FC_NO_LABEL ? 0 : label_get(m->src, m->stxn, si.label, &sname);
	if ((si.split > FC_SPLIT_TEST && si.split != FC_SPLIT_NONE) || si.status > FC_ITEM_FAILED ||
	    err == FC_ERR_NOT_FOUND) {
		snprintf(what, sizeof what, "items/%.*s has split %u, status %u, label id %u%s", kl,
			 (const char *)k->mv_data, si.split, si.status, si.label,
			 err == FC_ERR_NOT_FOUND ? " (no such label)" : "");
		return src_damaged(m, FC_ERR_CORRUPT, what);
	}
	if (err)
		return src_fail(m, err);
	int rc = mdb_get(dtxn, m->dst->items, (MDB_val *)k, &dv);
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return dst_fail(m, rc, "cannot read items");
	const char *why;
	if (fci_item_decode(m->dst->format, &dv, &di, &why) != 0)
		return FCI_FAIL(m->dst, FC_ERR_CORRUPT, "store '%s': items/%.*s: %s (run 'featcache verify')",
				m->dst->path, kl, (const char *)k->mv_data, why);
	err = di.label == FC_NO_LABEL ? 0 : label_get(m->dst, dtxn, di.label, &dname);
	if (err)
		return err == FC_ERR_NOT_FOUND ? FCI_FAIL(m->dst, FC_ERR_CORRUPT,
							  "store '%s': items/%.*s has label id %u, which does not exist",
							  m->dst->path, kl, (const char *)k->mv_data, di.label)
					       : err;
	return item_compare(m, k, &si, si.label == FC_NO_LABEL ? NULL : &sname, &di,
			    di.label == FC_NO_LABEL ? NULL : &dname);
}

static int check_items(struct merge *m, MDB_txn *dtxn)
{
	MDB_cursor *cur;
	int rc = mdb_cursor_open(m->stxn, m->src->items, &cur);
	if (rc)
		return src_fail(m, fci_mdb_fail(m->src, rc, "cannot read items"));
	MDB_val k, v;
	int err = 0;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && !err;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		err = check_item(m, dtxn, &k, &v);
		m->n_items++;
	}
	mdb_cursor_close(cur);
	return err;
}

/* Which slots of a parsed chunk `id` of x are live in src (their index
 * entry points back at them): their numbers into live[], *n of them. */
static int live_slots(struct merge *m, const merge_ex *x, uint64_t id, const fci_chunk_info *ci, uint32_t *live,
		      size_t *n)
{
	*n = 0;
	for (uint32_t i = 0; i < ci->count; i++) {
		uint64_t cid;
		uint32_t slot;
		int err = fci_index_lookup(m->src, m->stxn, &x->s, ci->hashes[i], &cid, &slot);
		if (err == FC_ERR_NOT_FOUND)
			continue;
		if (err)
			return src_damaged(m, err, m->src->err);
		if (cid == id && slot == i)
			live[(*n)++] = i;
	}
	return 0;
}

/* Parse chunk record (k, v) of x as the copy pass will: its id, a sound
 * record, and the extractor's dim, dtype and codec. */
static int chunk_parse(struct merge *m, const merge_ex *x, const MDB_val *k, const MDB_val *v, uint64_t *id,
		       fci_chunk_info *ci)
{
	char name[128], hex[HEX_LEN];
	if (k->mv_size != 8) {
		fc_hex(hex, x->s.id, FC_HASH_LEN);
		snprintf(name, sizeof name, "feat.%s has a %zu-byte chunk key", hex, k->mv_size);
		return src_damaged(m, FC_ERR_CORRUPT, name);
	}
	*id = fci_be_load(k->mv_data, 8);
	fci_chunk_name(name, sizeof name, &x->s, *id);
	int err = fci_chunk_parse(v->mv_data, v->mv_size, ci);
	if (!err && (ci->dim != x->s.dim || ci->dtype != x->s.dtype || ci->codec != x->s.codec))
		err = FC_ERR_CORRUPT;
	if (err) {
		char what[256];
		snprintf(what, sizeof what, "%s: %s", name, fc_strerror(err));
		return src_damaged(m, err, what);
	}
	return 0;
}

/* Every chunk of x sound, and every index entry pointing at a slot that
 * holds its content; counts x's chunks for progress. */
static int check_chunks(struct merge *m, merge_ex *x)
{
	MDB_cursor *cur;
	int rc = mdb_cursor_open(m->stxn, x->s.feat, &cur);
	if (rc)
		return src_fail(m, fci_mdb_fail(m->src, rc, "cannot read chunks"));
	uint32_t *live = malloc(FC_CHUNK_MAX_COUNT * sizeof *live);
	uint64_t n_live = 0;
	int err = live ? 0 : FCI_FAIL(m->dst, FC_ERR_NOMEM, "out of memory");
	MDB_val k, v;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && !err;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		uint64_t id;
		fci_chunk_info ci;
		size_t n;
		if ((err = chunk_parse(m, x, &k, &v, &id, &ci)) == 0 && (err = live_slots(m, x, id, &ci, live, &n)) == 0) {
			n_live += n;
			x->chunks++;
		}
	}
	mdb_cursor_close(cur);
	free(live);
	MDB_stat st;
	if (!err && (rc = mdb_stat(m->stxn, x->s.index, &st)) != 0)
		err = src_fail(m, fci_mdb_fail(m->src, rc, "cannot read index"));
	if (!err && st.ms_entries != n_live) {
		char hex[HEX_LEN], what[200];
		fc_hex(hex, x->s.id, FC_HASH_LEN);
		snprintf(what, sizeof what, "%llu index entries of extractor %s point at no chunk slot holding their content",
			 (unsigned long long)(st.ms_entries - n_live), hex);
		err = src_damaged(m, FC_ERR_CORRUPT, what);
	}
	m->n_chunks += x->chunks;
	return err;
}

/* The whole check pass, in one read transaction of dst. */
static int check_pass(struct merge *m)
{
	MDB_txn *dtxn;
	int err = fci_txn_begin(m->dst, MDB_RDONLY, &dtxn);
	if (err)
		return err;
	if ((err = check_extractors(m, dtxn)) == 0 && (err = check_labels(m)) == 0)
		err = check_items(m, dtxn);
	mdb_txn_abort(dtxn);
	for (size_t i = 0; i < m->n_ex && !err; i++)
		err = check_chunks(m, &m->ex[i]);
	return err;
}

/* ---- the copy pass ---- */

/* Ask dst's logger how far we are; FC_ERR_INTERRUPTED if it says stop. */
static int progress(struct merge *m, const char *what, uint64_t done, uint64_t total)
{
	const fc_logger *lg = m->dst->logger;
	if (lg && lg->progress && lg->progress(lg->ctx, what, done, total))
		return FCI_FAIL(m->dst, FC_ERR_INTERRUPTED,
				"interrupted (what was merged so far is kept: merge again to finish)");
	return 0;
}

void fc_merge_stats_add(fc_merge_stats *to, const fc_merge_stats *from)
{
	to->items += from->items;
	to->items_present += from->items_present;
	to->errors += from->errors;
	to->errors_present += from->errors_present;
	to->labels += from->labels;
	to->extractors += from->extractors;
	to->vectors += from->vectors;
	to->vectors_present += from->vectors_present;
	to->chunks += from->chunks;
	to->chunks_present += from->chunks_present;
	to->bytes += from->bytes;
}

static int copy_extractors(struct merge *m)
{
	for (size_t i = 0; i < m->n_ex; i++) {
		merge_ex *x = &m->ex[i];
		fci_exdb *e;
		if (x->d.dim)
			continue;
		fc_extractor ex = { .dim = x->s.dim, .dtype = x->s.dtype, .codec = x->s.codec, .level = x->s.level,
				    .descriptor = x->descriptor };
		memcpy(ex.id, x->s.id, FC_HASH_LEN);
		int err = fc_store_put_extractor(m->dst, &ex);
		if (!err)
			err = fci_ex_open(m->dst, x->s.id, &e);
		if (err)
			return err;
		x->d = *e;
		m->st->extractors++;
	}
	return 0;
}

static int label_count(fc_store *s, uint64_t *n)
{
	MDB_txn *txn;
	MDB_stat st;
	int err = fci_txn_begin(s, MDB_RDONLY, &txn);
	if (err)
		return err;
	int rc = mdb_stat(txn, s->labels, &st);
	mdb_txn_abort(txn);
	if (rc)
		return fci_mdb_fail(s, rc, "cannot read labels");
	*n = st.ms_entries / 2;
	return 0;
}

/* One batch of names to fc_store_label_ids; the pairs come out in src id order. */
static int copy_label_batch(struct merge *m, char *const *names, const uint32_t *src_ids, size_t n)
{
	uint32_t ids[RECS_PER_TXN];
	int err = fc_store_label_ids(m->dst, (const char *const *)names, n, ids);
	for (size_t i = 0; i < n && !err; i++)
		m->labels[m->n_labels++] = (label_pair){ src_ids[i], ids[i] };
	return err;
}

/* src's labels into dst by name, RECS_PER_TXN to a transaction. */
static int copy_labels(struct merge *m)
{
	MDB_stat st;
	MDB_cursor *cur = NULL;
	uint64_t before = 0, after = 0;
	char **names = calloc(RECS_PER_TXN, sizeof *names);
	uint32_t *src_ids = malloc(RECS_PER_TXN * sizeof *src_ids);
	size_t n = 0, cap = 0;
	int err = label_count(m->dst, &before), rc = 0;
	if (!err && (rc = mdb_stat(m->stxn, m->src->labels, &st)) != 0)
		err = src_fail(m, fci_mdb_fail(m->src, rc, "cannot read labels"));
	if (!err) {
		cap = st.ms_entries / 2 + 1; /* a name record and an id record per label */
		if (!(m->labels = malloc(cap * sizeof *m->labels)) || !names || !src_ids)
			err = FCI_FAIL(m->dst, FC_ERR_NOMEM, "out of memory");
	}
	if (!err && (rc = mdb_cursor_open(m->stxn, m->src->labels, &cur)) != 0) {
		cur = NULL;
		err = src_fail(m, fci_mdb_fail(m->src, rc, "cannot read labels"));
	}
	MDB_val k = { 1, "i" }, v;
	rc = err ? MDB_NOTFOUND : mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	while (!err) {
		/* check_labels made sure of the record sizes */
		if (rc == 0 && ((const char *)k.mv_data)[0] == 'i' && m->n_labels + n < cap) {
			if (!(names[n] = strndup(v.mv_data, v.mv_size))) {
				err = FCI_FAIL(m->dst, FC_ERR_NOMEM, "out of memory");
				break;
			}
			src_ids[n++] = (uint32_t)fci_be_load((const uint8_t *)k.mv_data + 1, 4);
			rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
			if (n < RECS_PER_TXN)
				continue;
		} else {
			rc = MDB_NOTFOUND;
		}
		if (n == 0)
			break;
		err = copy_label_batch(m, names, src_ids, n);
		while (n)
			free(names[--n]);
	}
	if (!err && (err = label_count(m->dst, &after)) == 0)
		m->st->labels += after - before;
	if (cur)
		mdb_cursor_close(cur);
	while (names && n)
		free(names[--n]);
	free(names);
	free(src_ids);
	return err;
}

/* A batch of item or error records read from src (pointers into its snapshot). */
struct rec_batch {
	struct merge *m;
	MDB_val k[RECS_PER_TXN], v[RECS_PER_TXN];
	size_t n;
	fc_merge_stats pass;
};

static int items_txn(fc_store *dst, MDB_txn *txn, void *vctx)
{
	struct rec_batch *b = vctx;
	struct merge *m = b->m;
	b->pass = (fc_merge_stats){ 0 };
	for (size_t i = 0; i < b->n; i++) {
		fc_item si, di;
		MDB_val dv, sname, dname;
		if (fci_item_decode(m->src->format, &b->v[i], &si, NULL) != 0)
			return FCI_FAIL(dst, FC_ERR_CORRUPT, "store '%s': an item record changed since it was checked",
					m->src->path);
		uint32_t label;
		if (label_map(m, si.label, &label) != 0)
			return FCI_FAIL(dst, FC_ERR_INTERNAL, "label id %u of '%s' was not merged", si.label, m->src->path);
		int rc = mdb_get(txn, dst->items, &b->k[i], &dv), err;
		if (rc == 0 && fci_item_decode(dst->format, &dv, &di, NULL) == 0) {
			/* dst had it before this transaction: the check pass saw it
			 * agree, or another writer added it since; look again. */
			if ((si.label != FC_NO_LABEL && (err = label_get(m->src, m->stxn, si.label, &sname)) != 0) ||
			    (di.label != FC_NO_LABEL && (err = label_get(dst, txn, di.label, &dname)) != 0))
				return err == FC_ERR_NOT_FOUND ? FCI_FAIL(dst, FC_ERR_CORRUPT, "a label of an item vanished") : err;
			if ((err = item_compare(m, &b->k[i], &si, si.label == FC_NO_LABEL ? NULL : &sname, &di,
						di.label == FC_NO_LABEL ? NULL : &dname)) != 0)
				return err;
			b->pass.items_present++;
			continue;
		}
		if (rc && rc != MDB_NOTFOUND)
			return dst_fail(m, rc, "cannot read items");
		uint8_t rec[FCI_ITEM_MAX];
		si.label = label;
		MDB_val v = { fci_item_encode(dst->format, rec, &si), rec };
		if ((err = fci_put(dst, txn, dst->items, &b->k[i], &v, 0)) != 0)
			return err;
		b->pass.items++;
	}
	return 0;
}

static int errors_txn(fc_store *dst, MDB_txn *txn, void *vctx)
{
	struct rec_batch *b = vctx;
	b->pass = (fc_merge_stats){ 0 };
	for (size_t i = 0; i < b->n; i++) {
		MDB_val dv;
		int rc = mdb_get(txn, dst->errors, &b->k[i], &dv);
		if (rc == 0) {
			b->pass.errors_present++; /* dst's own reason stays */
			continue;
		}
		if (rc != MDB_NOTFOUND)
			return dst_fail(b->m, rc, "cannot read errors");
		int err = fci_put(dst, txn, dst->errors, &b->k[i], &b->v[i], 0);
		if (err)
			return err;
		b->pass.errors++;
	}
	return 0;
}

/* Every record of src's dbi through fn, RECS_PER_TXN to a write
 * transaction of dst; progress as `what` when total is not 0. */
static int copy_records(struct merge *m, MDB_dbi dbi, fci_write_fn fn, const char *what, uint64_t total)
{
	struct rec_batch *b = calloc(1, sizeof *b);
	MDB_cursor *cur;
	if (!b)
		return FCI_FAIL(m->dst, FC_ERR_NOMEM, "out of memory");
	b->m = m;
	int rc = mdb_cursor_open(m->stxn, dbi, &cur), err = 0;
	if (rc) {
		free(b);
		return src_fail(m, fci_mdb_fail(m->src, rc, "cannot read"));
	}
	uint64_t done = 0;
	MDB_val k, v;
	rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
	while (!err) {
		if (rc == 0) {
			/* A read transaction's pages stay put: the pointers hold until it ends. */
			b->k[b->n] = k;
			b->v[b->n++] = v;
			rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
			if (rc == 0 && b->n < RECS_PER_TXN)
				continue;
		}
		if (b->n == 0)
			break;
		if ((err = fci_store_write(m->dst, fn, b)) != 0)
			break;
		fc_merge_stats_add(m->st, &b->pass);
		done += b->n;
		b->n = 0;
		if (total)
			err = progress(m, what, done, total);
	}
	if (!err && rc != MDB_NOTFOUND)
		err = src_fail(m, fci_mdb_fail(m->src, rc, "cannot read"));
	mdb_cursor_close(cur);
	free(b);
	return err;
}

/* A chunk of src to copy: its bytes in the snapshot and its live slots. */
typedef struct chunk_ref {
	const void *data;
	size_t len;
	const uint8_t (*hashes)[FC_HASH_LEN];
	size_t first, n; /* its live slot numbers are live[first, first + n) */
} chunk_ref;

struct chunk_batch {
	struct merge *m;
	const merge_ex *x;
	chunk_ref *c;
	size_t n;
	uint64_t bytes;
	uint32_t *live;   /* live slot numbers of the batch's chunks */
	uint8_t *missing; /* per live slot: dst has no vector for its content */
	size_t n_live, cap_live;
	uint64_t done; /* chunks of src done, for progress */
	fc_merge_stats pass;
};

/* Copy the batch's chunks that hold content dst lacks, each under dst's
 * next chunk id, and index that content; the rest of their slots stay
 * dead until gc. Decided here, inside the transaction, so that a batch
 * committed before a crash is not copied again. */
static int chunks_txn(fc_store *dst, MDB_txn *txn, void *vctx)
{
	struct chunk_batch *b = vctx;
	const fci_exdb *d = &b->x->d;
	b->pass = (fc_merge_stats){ 0 };
	for (size_t c = 0; c < b->n; c++) {
		const chunk_ref *r = &b->c[c];
		size_t missing = 0;
		for (size_t j = r->first; j < r->first + r->n; j++) {
			MDB_val k = { FC_HASH_LEN, (void *)r->hashes[b->live[j]] }, v;
			int rc = mdb_get(txn, d->index, &k, &v);
			if (rc && rc != MDB_NOTFOUND)
				return dst_fail(b->m, rc, "cannot read index");
			b->missing[j] = rc == MDB_NOTFOUND;
			missing += b->missing[j];
		}
		b->pass.vectors_present += r->n - missing;
		if (missing == 0) {
			b->pass.chunks_present++;
			continue;
		}
		uint64_t id;
		uint8_t key[8];
		int err = fci_chunk_id_next(dst, txn, &id);
		fci_chunk_key(key, id);
		MDB_val k = { 8, key }, v = { r->len, (void *)r->data };
		if (!err)
			err = fci_put(dst, txn, d->feat, &k, &v, MDB_NOOVERWRITE);
		for (size_t j = r->first; j < r->first + r->n && !err; j++) {
			if (!b->missing[j])
				continue;
			uint8_t rec[FCI_INDEX_MAX];
			MDB_val ik = { FC_HASH_LEN, (void *)r->hashes[b->live[j]] },
				iv = { fci_index_encode(dst->format, rec, id, b->live[j]), rec };
			err = fci_put(dst, txn, d->index, &ik, &iv, MDB_NOOVERWRITE);
		}
		if (err)
			return err;
		b->pass.vectors += missing;
		b->pass.chunks++;
		b->pass.bytes += r->len;
	}
	return 0;
}

/* Add parsed chunk `id` (bytes v) to the batch with its live slots. */
static int batch_add(struct merge *m, struct chunk_batch *b, uint64_t id, const MDB_val *v, const fci_chunk_info *ci)
{
	if (b->n_live + ci->count > b->cap_live) {
		size_t cap = 2 * b->cap_live + ci->count;
		uint32_t *live = realloc(b->live, cap * sizeof *live);
		if (live)
			b->live = live;
		uint8_t *missing = live ? realloc(b->missing, cap) : NULL;
		if (!missing)
			return FCI_FAIL(m->dst, FC_ERR_NOMEM, "out of memory");
		b->missing = missing;
		b->cap_live = cap;
	}
	size_t n;
	int err = live_slots(m, b->x, id, ci, b->live + b->n_live, &n);
	if (err)
		return err;
	b->c[b->n++] = (chunk_ref){ v->mv_data, v->mv_size, ci->hashes, b->n_live, n };
	b->n_live += n;
	b->bytes += v->mv_size;
	return 0;
}

static int batch_flush(struct merge *m, struct chunk_batch *b)
{
	int err = fci_store_write(m->dst, chunks_txn, b);
	if (err)
		return err;
	fc_merge_stats_add(m->st, &b->pass);
	b->done += b->n;
	b->n = b->n_live = 0;
	b->bytes = 0;
	return progress(m, "merge chunks", b->done, m->n_chunks);
}

/* x's chunks in src id order, in batches of at most m->batch_chunks
 * chunks and (past the first) m->batch_bytes bytes. */
static int copy_chunks(struct merge *m, const merge_ex *x, struct chunk_batch *b)
{
	MDB_cursor *cur;
	int rc = mdb_cursor_open(m->stxn, x->s.feat, &cur), err = 0;
	if (rc)
		return src_fail(m, fci_mdb_fail(m->src, rc, "cannot read chunks"));
	b->x = x;
	MDB_val k, v;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && !err;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		uint64_t id;
		fci_chunk_info ci;
		if ((err = chunk_parse(m, x, &k, &v, &id, &ci)) != 0)
			break;
		if (b->n && b->bytes + v.mv_size > m->batch_bytes && (err = batch_flush(m, b)) != 0)
			break;
		if ((err = batch_add(m, b, id, &v, &ci)) == 0 && b->n == m->batch_chunks)
			err = batch_flush(m, b);
	}
	if (!err && rc != MDB_NOTFOUND)
		err = src_fail(m, fci_mdb_fail(m->src, rc, "cannot read chunks"));
	if (!err && b->n)
		err = batch_flush(m, b);
	mdb_cursor_close(cur);
	return err;
}

/* ---- the merge ---- */

static int same_store(const fc_store *a, const fc_store *b)
{
	struct stat sa, sb;
	return stat(a->path, &sa) == 0 && stat(b->path, &sb) == 0 && sa.st_dev == sb.st_dev &&
	       sa.st_ino == sb.st_ino;
}

static int copy_pass(struct merge *m)
{
	int err = copy_extractors(m);
	if (!err)
		err = copy_labels(m);
	if (!err)
		err = copy_records(m, m->src->items, items_txn, "merge items", m->n_items);
	if (!err)
		err = copy_records(m, m->src->errors, errors_txn, NULL, 0);
	struct chunk_batch b = { .m = m, .c = calloc(m->batch_chunks, sizeof *b.c) };
	if (!err && !b.c)
		err = FCI_FAIL(m->dst, FC_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < m->n_ex && !err; i++)
		err = copy_chunks(m, &m->ex[i], &b);
	free(b.c);
	free(b.live);
	free(b.missing);
	return err;
}

int fc_store_merge(fc_store *dst, fc_store *src, const fc_merge_opts *opts, fc_merge_stats *stats)
{
	fc_merge_stats local;
	struct merge m = { .dst = dst, .src = src, .st = stats ? stats : &local, .batch_chunks = MERGE_CHUNKS,
			   .batch_bytes = MERGE_BYTES };
	memset(m.st, 0, sizeof *m.st);
	dst->err[0] = '\0';
	if (opts && opts->batch_chunks)
		m.batch_chunks = opts->batch_chunks;
	if (opts && opts->batch_bytes)
		m.batch_bytes = opts->batch_bytes;
	if (opts)
		m.ignore = opts->descriptor_ignore;
	if (same_store(dst, src))
		return FCI_FAIL(dst, FC_ERR_INVALID, "cannot merge store '%s' into itself", src->path);
	if (dst->readonly)
		return FCI_FAIL(dst, FC_ERR_INVALID, "store '%s' is open read-only", dst->path);
	int err = open_extractors(&m);
	if (!err && (err = fci_txn_begin(src, MDB_RDONLY, &m.stxn)) != 0)
		err = src_fail(&m, err);
	if (!err)
		err = check_pass(&m);
	if (!err)
		err = copy_pass(&m);
	if (m.stxn)
		mdb_txn_abort(m.stxn);
	for (size_t i = 0; i < m.n_ex; i++)
		free(m.ex[i].descriptor);
	free(m.ex);
	free(m.labels);
	return err;
}
