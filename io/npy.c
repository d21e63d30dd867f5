/*
 * npy.c - NumPy .npy files holding one 2-D float matrix: a writer (whole
 * matrix, or streamed a block of rows at a time with the row count fixed at
 * open, so the header is final from its first byte) and a reader of f4 and
 * f2 in either byte order and either memory order.
 *
 * Not here: .npz, other dtypes or ranks, object arrays (never unpickled).
 * Files are written through fci_outfile (util/file.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "featcache/io.h"
#include "util/util.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the writer emits '<f4' from host floats without swapping"
#endif

#define MAGIC "\x93NUMPY"
#define MAGIC_LEN 6
#define HEADER_TOTAL 128 /* preamble + dict of every file we write: always enough, see npy_header */
#define MAX_NDIM 32      /* dims a shape tuple may list before we stop reading it */
#define SHOWN_MAX 32

/* ---- writing ---- */

struct fc_npy_writer {
	fci_outfile *out;
	size_t rows, cols, done;
	int rc; /* sticky */
	char err[FC_ERRLEN];
};

/* The version 1.0 preamble and dict, padded with spaces and a final '\n'
 * to HEADER_TOTAL bytes so the data starts 64-byte aligned. The dict is
 * 58 bytes plus the digits of the shape, at most 40 for two 64-bit dims:
 * 10 + 98 <= 128 always. */
static void npy_header(unsigned char out[HEADER_TOTAL], size_t rows, size_t cols)
{
	const size_t hlen = HEADER_TOTAL - 10;
	int n;

	memcpy(out, MAGIC "\x01\x00", 8);
	out[8] = (unsigned char)(hlen & 0xff);
	out[9] = (unsigned char)(hlen >> 8);
	n = snprintf((char *)out + 10, hlen, "{'descr': '<f4', 'fortran_order': False, 'shape': (%zu, %zu), }",
		     rows, cols);
	memset(out + 10 + n, ' ', hlen - (size_t)n - 1);
	out[HEADER_TOTAL - 1] = '\n';
}

static int writer_fail(fc_npy_writer *w, int rc, const char *msg)
{
	w->rc = rc;
	snprintf(w->err, sizeof w->err, "%s", msg);
	fci_outfile_free(w->out); /* removes the temporary */
	w->out = NULL;
	return rc;
}

int fc_npy_writer_open(fc_npy_writer **out, const char *path, size_t rows, size_t cols, char *errbuf,
		       size_t errcap)
{
	fc_npy_writer *w;
	unsigned char hdr[HEADER_TOTAL];
	size_t bytes;
	int rc;

	*out = NULL;
	if (rows > INT64_MAX || cols > INT64_MAX)
		return fci_errf(errbuf, errcap, FC_ERR_INVALID, "a dimension above 2^63-1 (numpy's limit)");
	if (__builtin_mul_overflow(rows, cols, &bytes) || __builtin_mul_overflow(bytes, sizeof(float), &bytes) ||
	    bytes > SIZE_MAX - HEADER_TOTAL)
		return fci_errf(errbuf, errcap, FC_ERR_OVERFLOW, "a %zu x %zu matrix overflows", rows, cols);
	w = calloc(1, sizeof *w);
	if (!w)
		return fci_errf(errbuf, errcap, FC_ERR_NOMEM, "out of memory");
	w->rows = rows;
	w->cols = cols;
	if ((rc = fci_outfile_open(&w->out, path, errbuf, errcap)) < 0) {
		free(w);
		return rc;
	}
	npy_header(hdr, rows, cols);
	if ((rc = fci_outfile_write(w->out, hdr, sizeof hdr)) < 0) {
		fci_errf(errbuf, errcap, rc, "%s", fci_outfile_errmsg(w->out));
		fc_npy_writer_free(w);
		return rc;
	}
	*out = w;
	return 0;
}

int fc_npy_writer_append(fc_npy_writer *w, const float *src, size_t nrows)
{
	int rc;
	if (w->rc)
		return w->rc;
	if (!w->out)
		return FC_ERR_INVALID; /* finished */
	if (nrows > w->rows - w->done) {
		char msg[128];
		snprintf(msg, sizeof msg, "%zu rows appended to %zu of %zu declared", nrows, w->done, w->rows);
		return writer_fail(w, FC_ERR_INVALID, msg);
	}
	/* cannot overflow: bounded by rows * cols * 4, checked at open */
	if (nrows && w->cols && (rc = fci_outfile_write(w->out, src, nrows * w->cols * sizeof(float))) < 0)
		return writer_fail(w, rc, fci_outfile_errmsg(w->out));
	w->done += nrows;
	return 0;
}

int fc_npy_writer_finish(fc_npy_writer *w)
{
	int rc;
	if (w->rc)
		return w->rc;
	if (!w->out) {
		snprintf(w->err, sizeof w->err, "finish called twice");
		return FC_ERR_INVALID;
	}
	if (w->done != w->rows) {
		char msg[128];
		snprintf(msg, sizeof msg, "only %zu of %zu declared rows were appended", w->done, w->rows);
		return writer_fail(w, FC_ERR_INVALID, msg);
	}
	if ((rc = fci_outfile_commit(w->out)) < 0)
		return writer_fail(w, rc, fci_outfile_errmsg(w->out));
	fci_outfile_free(w->out);
	w->out = NULL;
	return 0;
}

void fc_npy_writer_free(fc_npy_writer *w)
{
	if (!w)
		return;
	fci_outfile_free(w->out);
	free(w);
}

const char *fc_npy_writer_errmsg(const fc_npy_writer *w)
{
	return w->err;
}

int fc_npy_write_f32(const char *path, const float *data, size_t rows, size_t cols, char *errbuf,
		     size_t errcap)
{
	fc_npy_writer *w;
	int rc = fc_npy_writer_open(&w, path, rows, cols, errbuf, errcap);
	if (rc < 0)
		return rc;
	rc = fc_npy_writer_append(w, data, rows);
	if (rc == 0)
		rc = fc_npy_writer_finish(w);
	if (rc < 0)
		fci_errf(errbuf, errcap, rc, "%s", fc_npy_writer_errmsg(w));
	fc_npy_writer_free(w);
	return rc;
}

/* ---- the header dict ---- */

/* What a header says, as far as we read it. */
typedef struct npy_dict {
	const char *descr; /* into the header text; NULL if descr is not a string */
	size_t descr_len;
	int fortran;
	size_t ndim;
	uint64_t dims[2];
} npy_dict;

typedef struct cursor {
	const char *p, *end;
} cursor;

static void skip_ws(cursor *c)
{
	while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
		c->p++;
}

static int eat(cursor *c, char ch)
{
	skip_ws(c);
	if (c->p < c->end && *c->p == ch) {
		c->p++;
		return 1;
	}
	return 0;
}

/* A quoted string without escapes (none of numpy's keys or simple descrs
 * have any): *s, *n point into the header. */
static int parse_str(cursor *c, const char **s, size_t *n)
{
	char q;
	skip_ws(c);
	if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
		return 0;
	q = *c->p++;
	*s = c->p;
	while (c->p < c->end && *c->p != q) {
		if (*c->p == '\\' || *c->p == '\n')
			return 0;
		c->p++;
	}
	if (c->p >= c->end)
		return 0;
	*n = (size_t)(c->p - *s);
	c->p++;
	return 1;
}

static int parse_word(cursor *c, const char *w)
{
	size_t n = strlen(w);
	skip_ws(c);
	if ((size_t)(c->end - c->p) < n || memcmp(c->p, w, n) != 0)
		return 0;
	c->p += n;
	return 1;
}

/* Text from a file as quoted in a message: printable ASCII only. */
static const char *shown(char out[SHOWN_MAX + 4], const char *s, size_t n)
{
	size_t i;
	for (i = 0; i < n && i < SHOWN_MAX; i++)
		out[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
	memcpy(out + i, n > SHOWN_MAX ? "..." : "", n > SHOWN_MAX ? 4 : 1);
	return out;
}

/* A shape tuple: "(3, 4)", "(5,)", "()", Python 2 longs "(3L, 4L)". */
static int parse_shape(npy_dict *d, cursor *c, char *eb, size_t ec)
{
	if (!eat(c, '('))
		return fci_errf(eb, ec, FC_ERR_CORRUPT, "shape is not a tuple");
	d->ndim = 0;
	if (eat(c, ')'))
		return 0;
	for (;;) {
		uint64_t v = 0;
		skip_ws(c);
		if (c->p < c->end && *c->p == '-')
			return fci_errf(eb, ec, FC_ERR_CORRUPT, "shape has a negative dimension");
		if (c->p >= c->end || *c->p < '0' || *c->p > '9')
			return fci_errf(eb, ec, FC_ERR_CORRUPT, "shape is not a tuple of integers");
		while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
			if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, (uint64_t)(*c->p - '0'), &v) ||
			    v > INT64_MAX)
				return fci_errf(eb, ec, FC_ERR_CORRUPT, "shape has a dimension above 2^63-1");
			c->p++;
		}
		if (c->p < c->end && *c->p == 'L')
			c->p++;
		if (d->ndim >= MAX_NDIM)
			return fci_errf(eb, ec, FC_ERR_UNSUPPORTED, "shape has more than %d dimensions", MAX_NDIM);
		if (d->ndim < 2)
			d->dims[d->ndim] = v;
		d->ndim++;
		if (eat(c, ')'))
			return 0;
		if (!eat(c, ','))
			return fci_errf(eb, ec, FC_ERR_CORRUPT, "shape is not a tuple of integers");
		if (eat(c, ')'))
			return 0;
	}
}

/* The dict literal numpy writes: exactly the keys descr, fortran_order and
 * shape, in any order, either quote style, a trailing comma allowed, then
 * only whitespace. */
static int parse_dict(npy_dict *d, const char *text, size_t len, char *eb, size_t ec)
{
	cursor c = {text, text + len};
	int seen[3] = {0, 0, 0};
	char sh[SHOWN_MAX + 4];
	int rc;

	memset(d, 0, sizeof *d);
	if (!eat(&c, '{'))
		return fci_errf(eb, ec, FC_ERR_CORRUPT, "header is not a dict");
	while (!eat(&c, '}')) {
		const char *k;
		size_t kn;
		int which;
		if (!parse_str(&c, &k, &kn))
			return fci_errf(eb, ec, FC_ERR_CORRUPT, "header dict: expected a quoted key");
		if (kn == 5 && memcmp(k, "descr", 5) == 0)
			which = 0;
		else if (kn == 13 && memcmp(k, "fortran_order", 13) == 0)
			which = 1;
		else if (kn == 5 && memcmp(k, "shape", 5) == 0)
			which = 2;
		else
			return fci_errf(eb, ec, FC_ERR_CORRUPT, "header dict: unknown key '%s'", shown(sh, k, kn));
		if (seen[which]++)
			return fci_errf(eb, ec, FC_ERR_CORRUPT, "header dict: key '%s' given twice", shown(sh, k, kn));
		if (!eat(&c, ':'))
			return fci_errf(eb, ec, FC_ERR_CORRUPT, "header dict: expected ':' after '%s'", shown(sh, k, kn));
		if (which == 0) {
			if (!parse_str(&c, &d->descr, &d->descr_len)) {
				/* a list: a structured dtype, valid but not a matrix of floats */
				skip_ws(&c);
				if (c.p < c.end && *c.p == '[')
					return fci_errf(eb, ec, FC_ERR_UNSUPPORTED, "structured dtypes are not supported");
				return fci_errf(eb, ec, FC_ERR_CORRUPT, "descr is not a string");
			}
		} else if (which == 1) {
			if (parse_word(&c, "True"))
				d->fortran = 1;
			else if (parse_word(&c, "False"))
				d->fortran = 0;
			else
				return fci_errf(eb, ec, FC_ERR_CORRUPT, "fortran_order is not True or False");
		} else if ((rc = parse_shape(d, &c, eb, ec)) < 0) {
			return rc;
		}
		if (eat(&c, '}'))
			break;
		if (!eat(&c, ','))
			return fci_errf(eb, ec, FC_ERR_CORRUPT, "header dict: expected ',' or '}'");
	}
	skip_ws(&c);
	if (c.p != c.end)
		return fci_errf(eb, ec, FC_ERR_CORRUPT, "header has bytes after its dict");
	for (int i = 0; i < 3; i++)
		if (!seen[i])
			return fci_errf(eb, ec, FC_ERR_CORRUPT, "header dict has no '%s'",
					(const char *[]){"descr", "fortran_order", "shape"}[i]);
	return 0;
}

/* ---- reading ---- */

/* Where the bytes come from: memory, or a file read with pread. */
typedef struct npy_src {
	const unsigned char *mem;
	int fd;
	size_t len;
} npy_src;

static int src_read(const npy_src *s, void *dst, size_t off, size_t n, char *eb, size_t ec)
{
	unsigned char *p = dst;
	if (s->mem) {
		memcpy(dst, s->mem + off, n);
		return 0;
	}
	while (n > 0) {
		ssize_t r = pread(s->fd, p, n, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r == 0)
			return fci_errf(eb, ec, FC_ERR_IO, "the file shrank while it was read");
		if (r < 0) {
			char why[128];
			int e = errno;
			return fci_errf(eb, ec, e == ENOMEM ? FC_ERR_NOMEM : FC_ERR_IO, "read failed: %s",
					fci_os_error(why, sizeof why, e));
		}
		p += r;
		n -= (size_t)r;
		off += (size_t)r;
	}
	return 0;
}

static void byteswap(void *data, size_t n, size_t size)
{
	unsigned char *p = data;
	for (size_t i = 0; i < n; i++, p += size)
		for (size_t j = 0; j < size / 2; j++) {
			unsigned char t = p[j];
			p[j] = p[size - 1 - j];
			p[size - 1 - j] = t;
		}
}

/* dst (rows, cols) = src stored column-major */
static void transpose(float *dst, const float *src, size_t rows, size_t cols)
{
	for (size_t r = 0; r < rows; r++)
		for (size_t c = 0; c < cols; c++)
			dst[r * cols + c] = src[c * rows + r];
}

static void *alloc64(size_t bytes)
{
	return aligned_alloc(64, (bytes + 63) / 64 * 64);
}

static int npy_read(float **data, size_t *rows, size_t *cols, const npy_src *s, char *eb, size_t ec)
{
	unsigned char pre[12];
	char *text = NULL, sh[SHOWN_MAX + 4];
	void *raw = NULL;
	float *out = NULL, *conv = NULL;
	size_t pre_len, hlen, off, n, bytes, isz;
	int swap, rc, raw_owned = 0;
	npy_dict d;

	*data = NULL;
	*rows = *cols = 0;
	if (s->len < 10)
		return fci_errf(eb, ec, FC_ERR_CORRUPT, "file is %zu bytes, too short for an .npy header", s->len);
	if ((rc = src_read(s, pre, 0, s->len < 12 ? 10 : 12, eb, ec)) < 0)
		return rc;
	if (memcmp(pre, MAGIC, MAGIC_LEN) != 0)
		return fci_errf(eb, ec, FC_ERR_CORRUPT, "not an .npy file (no \\x93NUMPY magic)");
	if (pre[6] == 1 && pre[7] == 0) {
		pre_len = 10;
		hlen = (size_t)pre[8] | (size_t)pre[9] << 8;
	} else if ((pre[6] == 2 || pre[6] == 3) && pre[7] == 0) {
		if (s->len < 12)
			return fci_errf(eb, ec, FC_ERR_CORRUPT, "file is %zu bytes, too short for an .npy header", s->len);
		pre_len = 12;
		hlen = (size_t)pre[8] | (size_t)pre[9] << 8 | (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
	} else {
		return fci_errf(eb, ec, FC_ERR_VERSION, ".npy format %u.%u is not supported (1.0, 2.0 and 3.0 are)",
				pre[6], pre[7]);
	}
	if (hlen > FC_NPY_MAX_HEADER)
		return fci_errf(eb, ec, FC_ERR_CORRUPT, "header length %zu is above the %d-byte limit", hlen,
				FC_NPY_MAX_HEADER);
	if (hlen > s->len - pre_len)
		return fci_errf(eb, ec, FC_ERR_CORRUPT, "header length %zu runs past the end of the %zu-byte file", hlen,
				s->len);
	off = pre_len + hlen;

	text = malloc(hlen + 1);
	if (!text)
		return fci_errf(eb, ec, FC_ERR_NOMEM, "out of memory");
	if ((rc = src_read(s, text, pre_len, hlen, eb, ec)) < 0)
		goto out;
	if ((rc = parse_dict(&d, text, hlen, eb, ec)) < 0)
		goto out;

	/* The descr: byte order ('<', '>', '=', or none for native), 'f', size. */
	{
		const char *t = d.descr;
		size_t tn = d.descr_len;
		swap = 0;
		if (tn == 3 && (t[0] == '<' || t[0] == '=' || t[0] == '>')) {
			swap = t[0] == '>';
			t++;
			tn--;
		}
		if (tn == 2 && t[0] == 'f' && (t[1] == '4' || t[1] == '2')) {
			isz = (size_t)(t[1] - '0');
		} else {
			rc = fci_errf(eb, ec, FC_ERR_UNSUPPORTED, "dtype '%s' is not float32 or float16",
				      shown(sh, d.descr, d.descr_len));
			goto out;
		}
	}
	if (d.ndim != 2) {
		rc = fci_errf(eb, ec, FC_ERR_UNSUPPORTED, "the array is %zu-D, not a 2-D matrix", d.ndim);
		goto out;
	}
	if (d.dims[0] > SIZE_MAX || d.dims[1] > SIZE_MAX || __builtin_mul_overflow((size_t)d.dims[0], (size_t)d.dims[1], &n) ||
	    __builtin_mul_overflow(n, isz, &bytes) || n > SIZE_MAX / sizeof(float)) {
		rc = fci_errf(eb, ec, FC_ERR_CORRUPT, "shape (%llu, %llu) overflows", (unsigned long long)d.dims[0],
			      (unsigned long long)d.dims[1]);
		goto out;
	}
	if (bytes != s->len - off) {
		rc = fci_errf(eb, ec, FC_ERR_CORRUPT, "shape (%llu, %llu) needs %zu data bytes but the file has %zu (%s)",
			      (unsigned long long)d.dims[0], (unsigned long long)d.dims[1], bytes, s->len - off,
			      bytes > s->len - off ? "truncated" : "trailing bytes");
		goto out;
	}
	if (n == 0) {
		*rows = (size_t)d.dims[0];
		*cols = (size_t)d.dims[1];
		goto out;
	}

	/* Little-endian f4 in C order goes straight into the result; anything
	 * else goes through raw (and conv, for f2 in Fortran order). */
	out = alloc64(n * sizeof(float));
	if (!out) {
		rc = fci_errf(eb, ec, FC_ERR_NOMEM, "out of memory for a %zu-byte matrix", n * sizeof(float));
		goto out;
	}
	raw_owned = isz != 4 || d.fortran;
	raw = raw_owned ? alloc64(bytes) : (void *)out;
	if (!raw) {
		rc = fci_errf(eb, ec, FC_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((rc = src_read(s, raw, off, bytes, eb, ec)) < 0)
		goto out;
	if (swap)
		byteswap(raw, n, isz);
	if (isz == 2) {
		if (d.fortran && !(conv = alloc64(n * sizeof(float)))) {
			rc = fci_errf(eb, ec, FC_ERR_NOMEM, "out of memory");
			goto out;
		}
		fci_f16_to_f32(d.fortran ? conv : out, raw, n);
		if (d.fortran)
			transpose(out, conv, (size_t)d.dims[0], (size_t)d.dims[1]);
	} else if (d.fortran) {
		transpose(out, raw, (size_t)d.dims[0], (size_t)d.dims[1]);
	}
	*data = out;
	out = NULL;
	*rows = (size_t)d.dims[0];
	*cols = (size_t)d.dims[1];
out:
	if (raw_owned)
		free(raw);
	free(conv);
	free(out);
	free(text);
	return rc;
}

int fc_npy_parse_f32(float **data, size_t *rows, size_t *cols, const void *src, size_t len, char *errbuf,
		     size_t errcap)
{
	npy_src s = {src, -1, len};
	if (!src && len) {
		*data = NULL;
		*rows = *cols = 0;
		return fci_errf(errbuf, errcap, FC_ERR_INVALID, "NULL buffer");
	}
	if (!src)
		s.mem = (const unsigned char *)"";
	return npy_read(data, rows, cols, &s, errbuf, errcap);
}

int fc_npy_read_f32(float **data, size_t *rows, size_t *cols, const char *path, char *errbuf, size_t errcap)
{
	npy_src s = {NULL, -1, 0};
	struct stat st;
	int rc;

	*data = NULL;
	*rows = *cols = 0;
	s.fd = open(path, O_RDONLY | O_CLOEXEC);
	if (s.fd < 0) {
		char why[128];
		int e = errno;
		return fci_errf(errbuf, errcap, e == ENOENT || e == ENOTDIR ? FC_ERR_NOT_FOUND : FC_ERR_IO, "%s",
				fci_os_error(why, sizeof why, e));
	}
	if (fstat(s.fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		rc = fci_errf(errbuf, errcap, FC_ERR_INVALID, "not a regular file");
	} else if ((uint64_t)st.st_size > SIZE_MAX) {
		rc = fci_errf(errbuf, errcap, FC_ERR_OVERFLOW, "file too large");
	} else {
		s.len = (size_t)st.st_size;
		rc = npy_read(data, rows, cols, &s, errbuf, errcap);
	}
	close(s.fd);
	return rc;
}
