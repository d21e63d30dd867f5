/*
 * fuzz_wds.c - libFuzzer target for the WebDataset tar path
 * (extract/wds.c): libarchive's reading of the input as a (possibly
 * compressed) tar from memory, then the grouping of its members into
 * samples with their labels (.cls, .txt, .json), repeated keys and damage.
 *
 * The reader must refuse (a message, no reader) or read; grouping must
 * return 0 with every sample holding a key, either a failure reason or
 * none, and a label only when it has no failure.
 * The seeds in tests/corpus/fuzz_wds/ are small tars written by Python's
 * tarfile (ustar, GNU, pax; one gzip-compressed; one truncated).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "extract/wds.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fci_tar *t = NULL;
	char err[FC_ERRLEN];
	int rc = fci_tar_open_mem(&t, data, size, err, sizeof err);
	if (rc) {
		if (t || rc > 0 || !err[0])
			abort();
		return 0;
	}
	fci_wds_samples s;
	/* a field name from the first byte, so both defaults and others run */
	rc = fci_wds_group(t, "fuzz.tar", size && (data[0] & 1) ? "name" : NULL, &s);
	if (rc != 0 && rc != FC_ERR_NOMEM)
		abort();
	for (size_t i = 0; rc == 0 && i < s.n; i++) {
		const fci_wds_sample *m = &s.v[i];
		if (!m->key || (m->bad && m->label) || (m->bad && !m->bad[0]))
			abort();
		volatile size_t sink = strlen(m->key) + (m->label ? strlen(m->label) : 0);
		(void)sink;
	}
	fci_wds_samples_free(&s);
	fci_tar_free(t);
	return 0;
}
