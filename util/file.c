/*
 * file.c - reading or mapping a whole file, and the atomic output file every writer of
 * featcache goes through (safetensors, .npy, ONNX, reports, key lists).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/util.h"

#define OUTBUF ((size_t)1 << 16) /* fci_outfile's buffer; larger writes bypass it */
#define TMP_TRIES 100            /* temporary names tried before giving up */

int fci_read_file(const char *path, uint64_t max, uint8_t **buf, size_t *cap, size_t *len, char *why,
		 size_t whycap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	*len = 0;
	if (fd < 0) {
		int rc = errno == ENOENT ? FC_ERR_NOT_FOUND : FC_ERR_IO;
		fci_os_error(why, whycap, errno);
		return rc;
	}
	struct stat st;
	int rc = 0;
	if (fstat(fd, &st) != 0) {
		rc = FC_ERR_IO;
		fci_os_error(why, whycap, errno);
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
			fci_os_error(why, whycap, errno);
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

static const uint8_t empty_file[1];

int fci_map_file(const char *path, uint64_t max, const uint8_t **data, size_t *len, char *why, size_t whycap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc = 0;
	struct stat st;

	*data = NULL;
	*len = 0;
	if (fd < 0) {
		rc = errno == ENOENT ? FC_ERR_NOT_FOUND : FC_ERR_IO;
		fci_os_error(why, whycap, errno);
		return rc;
	}
	if (fstat(fd, &st) != 0) {
		rc = FC_ERR_IO;
		fci_os_error(why, whycap, errno);
	} else if (st.st_size < 0 || (uint64_t)st.st_size > max || (uint64_t)st.st_size > SIZE_MAX) {
		rc = FC_ERR_OVERFLOW;
		snprintf(why, whycap, "file of %lld bytes is larger than %llu", (long long)st.st_size,
			 (unsigned long long)max);
	} else if (st.st_size == 0) {
		*data = empty_file;
	} else {
		void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);

		if (p == MAP_FAILED) {
			rc = fci_errno_code(errno);
			fci_os_error(why, whycap, errno);
		} else {
			/* read ahead: every byte is wanted, in order */
			madvise(p, (size_t)st.st_size, MADV_SEQUENTIAL);
			*data = p;
			*len = (size_t)st.st_size;
		}
	}
	close(fd);
	return rc;
}

void fci_unmap_file(const uint8_t *data, size_t len)
{
	if (data && data != empty_file && len)
		munmap((void *)(uintptr_t)data, len);
}

/* ---- atomic output file ---- */

struct fci_outfile {
	int fd;             /* -1 once closed */
	int rc;             /* the first failure; every later call returns it */
	int committed;
	char *path;         /* the target */
	char *tmp;          /* the temporary, removed unless committed */
	size_t used;        /* bytes in buf */
	char err[FC_ERRLEN];
	unsigned char buf[OUTBUF];
};

static atomic_uint tmp_counter;

/* Close and remove the temporary: after a failure, or on free without a
 * commit. */
static void outfile_abandon(fci_outfile *f)
{
	if (f->fd >= 0)
		close(f->fd);
	f->fd = -1;
	if (f->tmp && !f->committed)
		unlink(f->tmp);
}

static int outfile_fail(fci_outfile *f, int e, const char *what)
{
	char why[128];
	fci_os_error(why, sizeof why, e);
	f->rc = fci_errno_code(e);
	snprintf(f->err, sizeof f->err, "%s: %s", what, why);
	outfile_abandon(f);
	return f->rc;
}

int fci_outfile_open(fci_outfile **out, const char *path, char *err, size_t errcap)
{
	fci_outfile *f = NULL;
	const char *base;
	size_t dirlen;
	int e = 0, rc;

	*out = NULL;
	if (!path || !path[0])
		return fci_errf(err, errcap, FC_ERR_INVALID, "empty output path");
	base = strrchr(path, '/');
	base = base ? base + 1 : path;
	if (!base[0] || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
		return fci_errf(err, errcap, FC_ERR_INVALID, "'%s' names a directory, not a file", path);
	dirlen = (size_t)(base - path);

	f = calloc(1, sizeof *f);
	if (!f)
		return fci_errf(err, errcap, FC_ERR_NOMEM, "out of memory");
	f->fd = -1;
	f->path = strdup(path);
	/* ".<base>.<pid>-<n>.tmp" in the target's directory, so that the rename
	 * stays within one file system; base is cut so the name stays below
	 * NAME_MAX. */
	f->tmp = malloc(dirlen + 200 + 48);
	if (!f->path || !f->tmp) {
		rc = fci_errf(err, errcap, FC_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (int i = 0; i < TMP_TRIES; i++) {
		snprintf(f->tmp, dirlen + 200 + 48, "%.*s.%.200s.%ld-%u.tmp", (int)dirlen, path, base,
			 (long)getpid(), atomic_fetch_add(&tmp_counter, 1));
		f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
		if (f->fd >= 0 || (e = errno) != EEXIST)
			break;
	}
	if (f->fd < 0) {
		char why[128];
		fci_os_error(why, sizeof why, e);
		rc = fci_errf(err, errcap, fci_errno_code(e), "cannot create a temporary file in '%.*s': %s",
			  dirlen ? (int)dirlen : 1, dirlen ? path : ".", why);
		goto out;
	}
	*out = f;
	return 0;
out:
	free(f->tmp);
	f->tmp = NULL; /* nothing was created: nothing to unlink */
	fci_outfile_free(f);
	return rc;
}

static int outfile_put(fci_outfile *f, const void *src, size_t len)
{
	const unsigned char *p = src;
	while (len > 0) {
		ssize_t w = write(f->fd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return outfile_fail(f, errno, "write failed");
		if (w == 0) /* no progress and no errno: treat as a full disk */
			return outfile_fail(f, ENOSPC, "write failed");
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

static int outfile_flush(fci_outfile *f)
{
	int rc = outfile_put(f, f->buf, f->used);
	f->used = 0;
	return rc;
}

int fci_outfile_write(fci_outfile *f, const void *src, size_t len)
{
	int rc;
	if (f->rc)
		return f->rc;
	if (f->fd < 0) {
		snprintf(f->err, sizeof f->err, "write after commit");
		return FC_ERR_INVALID;
	}
	if (len <= OUTBUF - f->used) {
		memcpy(f->buf + f->used, src, len);
		f->used += len;
		return 0;
	}
	if ((rc = outfile_flush(f)) < 0)
		return rc;
	if (len >= OUTBUF)
		return outfile_put(f, src, len);
	memcpy(f->buf, src, len);
	f->used = len;
	return 0;
}

/* The rename is durable only once the directory entry is: sync the
 * directory. File systems that cannot sync a directory say EINVAL, and a
 * directory we may not open for reading cannot be synced by us at all;
 * neither is an error of the write. */
static int sync_dir(fci_outfile *f)
{
	const char *slash = strrchr(f->path, '/');
	char *dir;
	int fd, rc = 0;

	if (!slash)
		dir = strdup(".");
	else if (slash == f->path)
		dir = strdup("/");
	else
		dir = strndup(f->path, (size_t)(slash - f->path));
	if (!dir)
		return 0;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(dir);
	if (fd < 0)
		return 0;
	if (fsync(fd) != 0 && errno != EINVAL && errno != EROFS) {
		char why[128];
		fci_os_error(why, sizeof why, errno);
		f->rc = FC_ERR_IO;
		snprintf(f->err, sizeof f->err, "the file is in place but its directory cannot be synced: %s",
			 why);
		rc = f->rc;
	}
	close(fd);
	return rc;
}

int fci_outfile_commit(fci_outfile *f)
{
	int rc;
	if (f->rc)
		return f->rc;
	if (f->fd < 0) {
		snprintf(f->err, sizeof f->err, "commit called twice");
		return FC_ERR_INVALID;
	}
	if ((rc = outfile_flush(f)) < 0)
		return rc;
	if (fsync(f->fd) != 0)
		return outfile_fail(f, errno, "sync failed");
	rc = close(f->fd);
	f->fd = -1;
	if (rc != 0)
		return outfile_fail(f, errno, "close failed");
	if (rename(f->tmp, f->path) != 0)
		return outfile_fail(f, errno, "cannot rename the temporary file into place");
	f->committed = 1;
	return sync_dir(f);
}

void fci_outfile_free(fci_outfile *f)
{
	if (!f)
		return;
	outfile_abandon(f);
	free(f->tmp);
	free(f->path);
	free(f);
}

const char *fci_outfile_errmsg(const fci_outfile *f)
{
	return f->err;
}


int fci_outfile_printf(fci_outfile *f, const char *fmt, ...)
{
	char small[512], *p = small;
	va_list ap;
	int n, rc;

	va_start(ap, fmt);
	n = vsnprintf(small, sizeof small, fmt, ap);
	va_end(ap);
	if (n < 0)
		return FC_ERR_INVALID;
	if ((size_t)n >= sizeof small) {
		p = malloc((size_t)n + 1);
		if (!p)
			return FC_ERR_NOMEM;
		va_start(ap, fmt);
		vsnprintf(p, (size_t)n + 1, fmt, ap);
		va_end(ap);
	}
	rc = fci_outfile_write(f, p, (size_t)n);
	if (p != small)
		free(p);
	return rc;
}

int fci_write_file(const char *path, const void *data, size_t len, char *err, size_t errcap)
{
	fci_outfile *f = NULL;
	int rc = fci_outfile_open(&f, path, err, errcap);

	if (!rc && !(rc = fci_outfile_write(f, data, len)))
		rc = fci_outfile_commit(f);
	if (rc && f)
		fci_errf(err, errcap, rc, "%s", fci_outfile_errmsg(f));
	fci_outfile_free(f);
	return rc;
}
