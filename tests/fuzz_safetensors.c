/*
 * fuzz_safetensors.c - libFuzzer target for the safetensors reader
 * (io/safetensors.c).
 *
 * Every input is used two ways:
 *   1. as a whole file: fc_st_parse must refuse it or accept it, never read
 *      out of bounds;
 *   2. as a header: the first two bytes give a buffer length (0..4095), the
 *      rest is the JSON header, framed with a correct length field and
 *      followed by that many zero bytes, so that mutations reach the JSON
 *      checks instead of dying at the length field.
 * An accepted file must satisfy what the reader promises (sizes agree with
 * shapes, the tensors tile the buffer, lookups find every name), and must
 * survive a round trip: fc_st_encode of what was read, parsed again, gives
 * the same tensors and metadata. Otherwise the target aborts.
 * The seeds in tests/corpus/fuzz_safetensors/ are valid files of both kinds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "featcache/io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const fc_st_file *f, size_t len)
{
	size_t total = 0;
	const uint8_t *prev = NULL;
	for (size_t i = 0; i < fc_st_count(f); i++) {
		const fc_st_tensor *t = fc_st_at(f, i);
		size_t n = 1, size = fc_st_dtype_size(t->dtype);
		for (size_t d = 0; d < t->ndim; d++)
			n *= (size_t)t->shape[d];
		if (size == 0 || t->nbytes != n * size || (prev && (const uint8_t *)t->data != prev) ||
		    fc_st_find(f, t->name) != t)
			abort();
		prev = (const uint8_t *)t->data + t->nbytes;
		total += t->nbytes;
		/* every byte is readable: the conversions touch them all */
		if (n && (t->dtype == FC_ST_F32 || t->dtype == FC_ST_F16 || t->dtype == FC_ST_BF16 ||
			  t->dtype == FC_ST_F64)) {
			float *dst = malloc(n * sizeof *dst);
			if (dst && fc_st_copy_f32(dst, n, t) != 0)
				abort();
			free(dst);
		} else if (n && t->dtype != FC_ST_F8_E4M3 && t->dtype != FC_ST_F8_E5M2 && t->dtype != FC_ST_F8_E8M0) {
			int64_t *dst = malloc(n * sizeof *dst);
			int rc = dst ? fc_st_copy_i64(dst, n, t) : 0;
			if (rc != 0 && !(rc == FC_ERR_OVERFLOW && t->dtype == FC_ST_U64))
				abort();
			free(dst);
		}
	}
	if (total > len)
		abort();
	for (size_t i = 0; i < fc_st_meta_count(f); i++)
		if (fc_st_meta_find(f, fc_st_meta_at(f, i)->key) == NULL)
			abort();
}

static void round_trip(const fc_st_file *f)
{
	size_t n = fc_st_count(f), nm = fc_st_meta_count(f), len;
	fc_st_tensor *t = malloc((n + 1) * sizeof *t);
	fc_st_meta *m = malloc((nm + 1) * sizeof *m);
	fc_st_file *g = NULL;
	void *enc = NULL;

	if (!t || !m)
		abort();
	for (size_t i = 0; i < n; i++)
		t[i] = *fc_st_at(f, i);
	for (size_t i = 0; i < nm; i++)
		m[i] = *fc_st_meta_at(f, i);
	if (fc_st_encode(&enc, &len, t, n, m, nm, NULL, 0) != 0)
		abort();
	if (fc_st_parse(&g, enc, len, NULL, 0) != 0 || fc_st_count(g) != n || fc_st_meta_count(g) != nm)
		abort();
	for (size_t i = 0; i < n; i++) {
		const fc_st_tensor *a = fc_st_at(f, i), *b = fc_st_at(g, i);
		if (strcmp(a->name, b->name) || a->dtype != b->dtype || a->ndim != b->ndim ||
		    a->nbytes != b->nbytes || (a->ndim && memcmp(a->shape, b->shape, a->ndim * sizeof *a->shape)) ||
		    (a->nbytes && memcmp(a->data, b->data, a->nbytes)))
			abort();
	}
	for (size_t i = 0; i < nm; i++)
		if (strcmp(fc_st_meta_at(f, i)->key, fc_st_meta_at(g, i)->key) ||
		    strcmp(fc_st_meta_at(f, i)->value, fc_st_meta_at(g, i)->value))
			abort();
	fc_st_free(g);
	free(enc);
	free(m);
	free(t);
}

static void parse(const uint8_t *p, size_t len)
{
	fc_st_file *f = NULL;
	char err[FC_ERRLEN];
	int rc = fc_st_parse(&f, p, len, err, sizeof err);
	if (rc > 0 || (rc < 0 && (f || !err[0])))
		abort();
	if (rc == 0) {
		check(f, len);
		round_trip(f);
	}
	fc_st_free(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	parse(data, size);

	if (size >= 2) {
		size_t buf_len = ((size_t)data[0] | (size_t)data[1] << 8) % 4096, hlen = size - 2;
		uint8_t *p = calloc(1, 8 + hlen + buf_len + 1);
		if (!p)
			return 0;
		for (int i = 0; i < 8; i++)
			p[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
		memcpy(p + 8, data + 2, hlen);
		parse(p, 8 + hlen + buf_len);
		free(p);
	}
	return 0;
}
