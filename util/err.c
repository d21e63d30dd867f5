/*
 * err.c - error codes and messages: fc_strerror and fc_version (public),
 * the one error-buffer formatter and the OS-error text every module uses.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "util/util.h"

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

const char *fci_os_error(char *out, size_t cap, int e)
{
	char buf[256];
	/* The GNU strerror_r may return a static string instead of filling buf. */
	const char *msg = strerror_r(e, buf, sizeof buf);
	snprintf(out, cap, "%s", msg);
	if (cap > 1 && out[0] >= 'A' && out[0] <= 'Z' && !(out[1] >= 'A' && out[1] <= 'Z'))
		out[0] = (char)(out[0] - 'A' + 'a');
	return out;
}

int fci_verrf(char *err, size_t errcap, int code, const char *fmt, va_list ap)
{
	if (err && errcap)
		vsnprintf(err, errcap, fmt, ap);
	return code;
}

int fci_errf(char *err, size_t errcap, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fci_verrf(err, errcap, code, fmt, ap);
	va_end(ap);
	return code;
}

int fci_errno_code(int e)
{
	switch (e) {
	case ENOENT: case ENOTDIR: return FC_ERR_NOT_FOUND;
	case ENOSPC: case EDQUOT: case EFBIG: return FC_ERR_FULL;
	case ENOMEM: return FC_ERR_NOMEM;
	}
	return FC_ERR_IO;
}
