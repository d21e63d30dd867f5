/*
 * common.c - the small pieces every part of libfeatcache shares: error
 * strings, the version, hex formatting and split names. It lives in store/
 * because the store is the layer everything else stands on.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "featcache/featcache.h"
#include "featcache/store.h"
#include "store/common.h"

const char *fc_strerror(int err)
{
	switch (err) {
	case FC_OK: return "success";
	case FC_ERR_NOMEM: return "out of memory";
	case FC_ERR_IO: return "input/output error";
	case FC_ERR_CORRUPT: return "corrupt data";
	case FC_ERR_VERSION: return "unsupported format version";
	case FC_ERR_NOT_FOUND: return "not found";
	case FC_ERR_INVALID: return "invalid argument";
	case FC_ERR_FULL: return "no space left";
	case FC_ERR_NOT_STORE: return "not a featcache store";
	case FC_ERR_UNSUPPORTED: return "not supported";
	case FC_ERR_EXISTS: return "already exists";
	case FC_ERR_BUSY: return "resource busy";
	case FC_ERR_OVERFLOW: return "size overflow";
	case FC_ERR_INTERNAL: return "internal error";
	case FC_ERR_INTERRUPTED: return "interrupted";
	}
	return "unknown error";
}

const char *fc_version(void)
{
	return FC_VERSION_STRING;
}

void fc_hex(char *out, const uint8_t *bytes, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[bytes[i] >> 4];
		out[2 * i + 1] = digits[bytes[i] & 15];
	}
	out[2 * n] = '\0';
}

static const char *const split_names[] = { "train", "val", "test" };

const char *fc_split_name(int split)
{
	if (split >= 0 && split < 3)
		return split_names[split];
	return "none";
}

int fc_split_parse(const char *s, int *out)
{
	for (int i = 0; i < 3; i++) {
		if (strcmp(s, split_names[i]) == 0) {
			*out = i;
			return 0;
		}
	}
	/* The names people actually use for the same splits. */
	if (strcmp(s, "validation") == 0 || strcmp(s, "valid") == 0) {
		*out = FC_SPLIT_VAL;
		return 0;
	}
	return FC_ERR_INVALID;
}

const char *fc_os_error(char *out, size_t cap, int e)
{
	char buf[256];
	/* The GNU strerror_r may return a static string instead of filling buf. */
	const char *msg = strerror_r(e, buf, sizeof buf);
	snprintf(out, cap, "%s", msg);
	if (cap > 1 && out[0] >= 'A' && out[0] <= 'Z' && !(out[1] >= 'A' && out[1] <= 'Z'))
		out[0] = (char)(out[0] - 'A' + 'a');
	return out;
}

void fc_l2_normalize_rows(float *dst, const float *src, size_t rows, size_t dim)
{
#pragma omp parallel for schedule(static)
	for (size_t r = 0; r < rows; r++) {
		const float *x = src + r * dim;
		float *y = dst + r * dim;
		double ss = 0;
		for (size_t j = 0; j < dim; j++)
			ss += (double)x[j] * x[j];
		float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 1.0f;
		for (size_t j = 0; j < dim; j++)
			y[j] = x[j] * inv;
	}
}

int fc_read_file(const char *path, uint64_t max, uint8_t **buf, size_t *cap, size_t *len, char *why,
		 size_t whycap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	*len = 0;
	if (fd < 0) {
		int rc = errno == ENOENT ? FC_ERR_NOT_FOUND : FC_ERR_IO;
		fc_os_error(why, whycap, errno);
		return rc;
	}
	struct stat st;
	int rc = 0;
	if (fstat(fd, &st) != 0) {
		rc = FC_ERR_IO;
		fc_os_error(why, whycap, errno);
	} else if ((uint64_t)st.st_size > max) {
		rc = FC_ERR_OVERFLOW;
		snprintf(why, whycap, "file of %lld bytes is larger than %llu", (long long)st.st_size,
			 (unsigned long long)max);
	}
	size_t n = 0;
	while (!rc) {
		if (*cap - n < 65536) {
			size_t ncap = *cap ? *cap * 2 : (size_t)st.st_size + 65536;
			uint8_t *p = realloc(*buf, ncap);
			if (!p) {
				rc = FC_ERR_NOMEM;
				snprintf(why, whycap, "out of memory");
				break;
			}
			*buf = p;
			*cap = ncap;
		}
		ssize_t got = read(fd, *buf + n, *cap - n);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			rc = FC_ERR_IO;
			fc_os_error(why, whycap, errno);
		} else if (got == 0) {
			break;
		} else {
			n += (size_t)got;
		}
	}
	close(fd);
	*len = n;
	return rc;
}
