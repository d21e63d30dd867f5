/*
 * record.c - the item and index records of both store formats, encoded and
 * decoded in one place (the layouts are in store_impl.h).
 *
 * Format 1 wrote fixed-width records: 40 bytes per item, 12 per index
 * entry. Format 2 writes the same fields as LEB128 varints, which makes an
 * item about 30 bytes and an index entry 2 to 4: on a small-vector store
 * these records are a tenth of the file. A store keeps the format it was
 * created with, so every writer asks the handle's format, and a merge
 * decodes with the source's format and encodes with the destination's.
 *
 * Decoding trusts nothing: every varint must end inside the record, be
 * the shortest encoding of its value and fit its field, and the record
 * must end exactly where its last field does. One record has one
 * encoding, so byte comparisons of records mean what they say.
 */
#include <string.h>

#include "store/store_impl.h"

#define VARINT_MAX 10 /* bytes of a 64-bit LEB128 value */

/* Item flags (format 2). */
#define F_SPLIT 0x03u   /* 0 train, 1 val, 2 test, 3 none */
#define F_FAILED 0x04u
#define F_LABEL 0x08u
#define F_KNOWN 0x0fu

static size_t varint_put(uint8_t *p, uint64_t v)
{
	size_t n = 0;
	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

/* Read one varint at *p (end exclusive); NULL if it is cut short, longer
 * than the shortest encoding, or beyond 64 bits. */
static const uint8_t *varint_get(const uint8_t *p, const uint8_t *end, uint64_t *out)
{
	uint64_t v = 0;
	for (int i = 0; i < VARINT_MAX && p < end; i++) {
		uint8_t b = *p++;
		if (i == VARINT_MAX - 1 && b > 1)
			return NULL; /* bits beyond 64 */
		v |= (uint64_t)(b & 0x7f) << (7 * i);
		if (!(b & 0x80)) {
			if (b == 0 && i > 0)
				return NULL; /* a trailing zero group: not the shortest form */
			*out = v;
			return p;
		}
	}
	return NULL;
}

static uint64_t zigzag(int64_t v)
{
	return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

static int64_t unzigzag(uint64_t v)
{
	return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

size_t fci_item_encode(unsigned format, uint8_t p[FCI_ITEM_MAX], const fc_item *it)
{
	memcpy(p, it->hash, FC_HASH_LEN);
	if (format == 1) {
		fci_store_le64(p + 16, it->size);
		fci_store_le64(p + 24, (uint64_t)it->mtime_ns);
		fci_store_le32(p + 32, it->label);
		p[36] = it->split;
		p[37] = it->status;
		p[38] = p[39] = 0;
		return FCI_ITEM_REC1;
	}
	unsigned flags = it->split <= FC_SPLIT_TEST ? it->split : 3u;
	flags |= it->status == FC_ITEM_FAILED ? F_FAILED : 0;
	flags |= it->label != FC_NO_LABEL ? F_LABEL : 0;
	size_t n = FC_HASH_LEN;
	p[n++] = (uint8_t)flags;
	n += varint_put(p + n, it->size);
	n += varint_put(p + n, zigzag(it->mtime_ns));
	if (it->label != FC_NO_LABEL)
		n += varint_put(p + n, it->label);
	return n;
}

static int fail(const char **why, const char *reason)
{
	if (why)
		*why = reason;
	return FC_ERR_CORRUPT;
}

int fci_item_decode(unsigned format, const MDB_val *v, fc_item *it, const char **why)
{
	const uint8_t *p = v->mv_data, *end = p + v->mv_size;
	if (format == 1) {
		if (v->mv_size != FCI_ITEM_REC1)
			return fail(why, "record is not 40 bytes");
		memcpy(it->hash, p, FC_HASH_LEN);
		it->size = fci_load_le64(p + 16);
		it->mtime_ns = (int64_t)fci_load_le64(p + 24);
		it->label = fci_load_le32(p + 32);
		it->split = p[36];
		it->status = p[37];
		return 0;
	}
	if (v->mv_size < FC_HASH_LEN + 3)
		return fail(why, "record is too short");
	unsigned flags = p[FC_HASH_LEN];
	if (flags & ~F_KNOWN)
		return fail(why, "record has unknown flags");
	uint64_t size, mtime, label = FC_NO_LABEL;
	const uint8_t *q = varint_get(p + FC_HASH_LEN + 1, end, &size);
	if (q)
		q = varint_get(q, end, &mtime);
	if (q && (flags & F_LABEL)) {
		q = varint_get(q, end, &label);
		if (q && label >= FC_NO_LABEL)
			return fail(why, "record has a label id out of range");
	}
	if (!q)
		return fail(why, "record has a malformed number");
	if (q != end)
		return fail(why, "record has bytes past its end");
	memcpy(it->hash, p, FC_HASH_LEN);
	it->size = size;
	it->mtime_ns = unzigzag(mtime);
	it->label = (uint32_t)label;
	it->split = (flags & F_SPLIT) == 3 ? FC_SPLIT_NONE : (uint8_t)(flags & F_SPLIT);
	it->status = flags & F_FAILED ? FC_ITEM_FAILED : FC_ITEM_OK;
	return 0;
}

size_t fci_index_encode(unsigned format, uint8_t rec[FCI_INDEX_MAX], uint64_t chunk, uint32_t slot)
{
	if (format == 1) {
		fci_store_le64(rec, chunk);
		fci_store_le32(rec + 8, slot);
		return FCI_INDEX_REC1;
	}
	size_t n = varint_put(rec, chunk);
	return n + varint_put(rec + n, slot);
}

int fci_index_decode(unsigned format, const MDB_val *v, uint64_t *chunk, uint32_t *slot)
{
	const uint8_t *p = v->mv_data, *end = p + v->mv_size;
	if (format == 1) {
		if (v->mv_size != FCI_INDEX_REC1)
			return FC_ERR_CORRUPT;
		*chunk = fci_load_le64(p);
		*slot = fci_load_le32(p + 8);
		return 0;
	}
	uint64_t c, s;
	const uint8_t *q = varint_get(p, end, &c);
	if (q)
		q = varint_get(q, end, &s);
	if (!q || q != end || s >= FC_CHUNK_MAX_COUNT)
		return FC_ERR_CORRUPT;
	*chunk = c;
	*slot = (uint32_t)s;
	return 0;
}
