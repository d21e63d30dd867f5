/*
 * fuzz_npy.c - libFuzzer target for the .npy reader (io/npy.c).
 *
 * Every input is used two ways:
 *   1. as a whole file for fc_npy_parse_f32;
 *   2. as a header dict: the first two bytes give a data length (0..65535),
 *      the rest is the dict, framed as a version 1.0 file with a correct
 *      header length and followed by that many bytes, so that mutations
 *      reach the dict parser and the size checks.
 * The reader must refuse (with a message, *data NULL, shape 0) or accept,
 * and an accepted matrix must hold rows * cols readable floats, no more
 * elements than the file has room for.
 * The seeds in tests/corpus/fuzz_npy/ are numpy-written files and dicts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "featcache/io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void parse(const uint8_t *p, size_t len)
{
	float *m = (float *)1;
	size_t rows = 1, cols = 1;
	char err[FC_ERRLEN];
	int rc = fc_npy_parse_f32(&m, &rows, &cols, p, len, err, sizeof err);

	if (rc > 0)
		abort();
	if (rc < 0) {
		if (m || rows || cols || !err[0])
			abort();
		return;
	}
	if (rows && cols) {
		size_t n = rows * cols;
		/* the data is in the file, at least 2 bytes an element */
		if (n > len / 2)
			abort();
		volatile float sink = m[0] + m[n - 1];
		(void)sink;
	} else if (m) {
		abort();
	}
	free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	parse(data, size);

	if (size >= 2) {
		size_t data_len = (size_t)data[0] | (size_t)data[1] << 8, hlen = size - 2;
		uint8_t *p;
		if (hlen > 65535)
			return 0;
		p = malloc(10 + hlen + data_len + 1);
		if (!p)
			return 0;
		memcpy(p, "\x93NUMPY\x01\x00", 8);
		p[8] = (uint8_t)(hlen & 0xff);
		p[9] = (uint8_t)(hlen >> 8);
		memcpy(p + 10, data + 2, hlen);
		for (size_t i = 0; i < data_len; i++)
			p[10 + hlen + i] = (uint8_t)(i * 7);
		parse(p, 10 + hlen + data_len);
		free(p);
	}
	return 0;
}
