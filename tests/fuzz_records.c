/*
 * fuzz_records.c - libFuzzer target for store/record.c, the item and index
 * records of both store formats.
 *
 * The first byte picks the format (bit 0: 1 or 2) and the record (bit 1:
 * item or index entry); the rest is the record. Decoding must fail with
 * FC_ERR_CORRUPT or succeed without reading past the input; a record that
 * decodes must encode back to the same bytes (one record, one encoding) in
 * format 2, and to a record that decodes to the same fields in format 1.
 * The seeds in tests/corpus/fuzz_records/ are valid records of each kind.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_impl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void item_case(unsigned format, const uint8_t *p, size_t n)
{
	/* a copy of exactly n bytes, so that a read past it is the sanitizer's to see */
	uint8_t *rec = malloc(n ? n : 1);
	if (!rec)
		abort();
	memcpy(rec, p, n);
	MDB_val v = { n, rec };
	fc_item it, again;
	const char *why = NULL;
	int rc = fci_item_decode(format, &v, &it, &why);
	if (rc != 0 && (rc != FC_ERR_CORRUPT || !why || !why[0]))
		abort();
	if (rc == 0) {
		uint8_t out[FCI_ITEM_MAX];
		size_t len = fci_item_encode(format, out, &it);
		if (len > FCI_ITEM_MAX || (format == 2 && (len != n || memcmp(out, rec, n) != 0)))
			abort();
		MDB_val w = { len, out };
		if (fci_item_decode(format, &w, &again, NULL) != 0 || memcmp(again.hash, it.hash, FC_HASH_LEN) ||
		    again.size != it.size || again.mtime_ns != it.mtime_ns || again.label != it.label ||
		    again.split != it.split || again.status != it.status)
			abort();
	}
	free(rec);
}

static void index_case(unsigned format, const uint8_t *p, size_t n)
{
	uint8_t *rec = malloc(n ? n : 1);
	if (!rec)
		abort();
	memcpy(rec, p, n);
	MDB_val v = { n, rec };
	uint64_t chunk;
	uint32_t slot;
	int rc = fci_index_decode(format, &v, &chunk, &slot);
	if (rc != 0 && rc != FC_ERR_CORRUPT)
		abort();
	if (rc == 0) {
		uint8_t out[FCI_INDEX_MAX];
		size_t len = fci_index_encode(format, out, chunk, slot);
		if (len != n || memcmp(out, rec, n) != 0)
			abort();
	}
	free(rec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	unsigned format = (data[0] & 1) ? 2 : 1;
	if (data[0] & 2)
		index_case(format, data + 1, size - 1);
	else
		item_case(format, data + 1, size - 1);
	return 0;
}
