/*
 * safetensors.c - safetensors files: encoding and atomic writing of named
 * tensors with their __metadata__, and a reader that checks every field of
 * a file it does not trust.
 *
 * Not here: which tensors a head has and what they are called (head.c),
 * .npy (npy.c), the atomic output file (util/file.c). The format is
 * summarised in include/featcache/io.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "featcache/io.h"
#include "util/util.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian and is written and read here without swapping"
#endif

#define SHOWN_MAX 64             /* bytes of a name quoted in a message */

/* ---- messages ---- */

/* A name from a file as it is quoted in a message: at most SHOWN_MAX bytes,
 * control bytes as '?', "..." when cut. */
typedef struct shown_buf {
	char s[SHOWN_MAX + 4];
} shown_buf;

static const char *shown(shown_buf *b, const char *name)
{
	size_t i;
	for (i = 0; name[i] && i < SHOWN_MAX; i++) {
		unsigned char c = (unsigned char)name[i];
		b->s[i] = c < 0x20 || c == 0x7f ? '?' : (char)c;
	}
	if (name[i])
		memcpy(b->s + i, "...", 4);
	else
		b->s[i] = '\0';
	return b->s;
}

/* "[2, 3]", cut with "..." when long. */
typedef struct shape_buf {
	char s[96];
} shape_buf;

static const char *shape_str(shape_buf *b, const uint64_t *dims, size_t ndim)
{
	size_t len = 0, cap = sizeof b->s;
	b->s[len++] = '[';
	for (size_t i = 0; i < ndim; i++) {
		if (len > cap - 32) {
			len += (size_t)snprintf(b->s + len, cap - len, ", ...");
			break;
		}
		len += (size_t)snprintf(b->s + len, cap - len, "%s%llu", i ? ", " : "",
					(unsigned long long)dims[i]);
	}
	snprintf(b->s + len, cap - len, "]");
	return b->s;
}

/* ---- atomic output file ---- */

/* ---- dtypes ---- */

static const struct {
	const char *name;
	size_t size;
} dtypes[FC_ST_NDTYPES] = {
	[FC_ST_BOOL] = {"BOOL", 1},       [FC_ST_U8] = {"U8", 1},
	[FC_ST_I8] = {"I8", 1},           [FC_ST_F8_E5M2] = {"F8_E5M2", 1},
	[FC_ST_F8_E4M3] = {"F8_E4M3", 1}, [FC_ST_F8_E8M0] = {"F8_E8M0", 1},
	[FC_ST_I16] = {"I16", 2},         [FC_ST_U16] = {"U16", 2},
	[FC_ST_F16] = {"F16", 2},         [FC_ST_BF16] = {"BF16", 2},
	[FC_ST_I32] = {"I32", 4},         [FC_ST_U32] = {"U32", 4},
	[FC_ST_F32] = {"F32", 4},         [FC_ST_F64] = {"F64", 8},
	[FC_ST_I64] = {"I64", 8},         [FC_ST_U64] = {"U64", 8},
};

/* In the format, packed several to a byte; not representable here. */
static const char *const subbyte_dtypes[] = {"F4", "F6_E2M3", "F6_E3M2"};

const char *fc_st_dtype_name(fc_st_dtype t)
{
	return (unsigned)t < FC_ST_NDTYPES ? dtypes[t].name : NULL;
}

size_t fc_st_dtype_size(fc_st_dtype t)
{
	return (unsigned)t < FC_ST_NDTYPES ? dtypes[t].size : 0;
}

int fc_st_dtype_parse(const char *s, fc_st_dtype *out)
{
	for (int i = 0; i < FC_ST_NDTYPES; i++) {
		if (strcmp(s, dtypes[i].name) == 0) {
			*out = (fc_st_dtype)i;
			return 0;
		}
	}
	return FC_ERR_INVALID;
}

/* ---- writing ---- */

/* Well-formed UTF-8: no overlong forms, surrogates or code points above
 * U+10FFFF, which a JSON parser would refuse. */
static int utf8_valid(const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	while (*s) {
		unsigned c = *s, n;
		uint32_t cp;
		if (c < 0x80) {
			s++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			n = 1, cp = c & 0x1f;
		else if (c >= 0xe0 && c <= 0xef)
			n = 2, cp = c & 0x0f;
		else if (c >= 0xf0 && c <= 0xf4)
			n = 3, cp = c & 0x07;
		else
			return 0;
		for (unsigned i = 1; i <= n; i++) {
			if ((s[i] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (s[i] & 0x3fu);
		}
		if ((n == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
		    (n == 3 && (cp < 0x10000 || cp > 0x10ffff)))
			return 0;
		s += n + 1;
	}
	return 1;
}

/* The header under construction; `oom` is sticky so that the building
 * code reads straight through. */
typedef struct hbuf {
	char *s;
	size_t len, cap;
	int oom;
} hbuf;

static void hput(hbuf *h, const char *s, size_t n)
{
	if (h->oom)
		return;
	if (n > h->cap - h->len) {
		size_t cap = h->cap ? h->cap : 256;
		while (n > cap - h->len) {
			if (cap > SIZE_MAX / 2) {
				h->oom = 1;
				return;
			}
			cap *= 2;
		}
		char *p = realloc(h->s, cap);
		if (!p) {
			h->oom = 1;
			return;
		}
		h->s = p;
		h->cap = cap;
	}
	memcpy(h->s + h->len, s, n);
	h->len += n;
}

static void hputs(hbuf *h, const char *s)
{
	hput(h, s, strlen(s));
}

static void hput_u64(hbuf *h, uint64_t v)
{
	char tmp[24];
	hput(h, tmp, (size_t)snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v));
}

/* A JSON string escaped as Python's json.dumps(ensure_ascii=False) and
 * serde_json escape it: `"`, `\` and control characters only, the common
 * ones by letter, the rest as \u00xx; UTF-8 passes through. */
static void hput_str(hbuf *h, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const char *run = s;
	hput(h, "\"", 1);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		char esc[8];
		size_t n = 2;
		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		hput(h, run, (size_t)(s - run));
		run = s + 1;
		esc[0] = '\\';
		switch (c) {
		case '"': esc[1] = '"'; break;
		case '\\': esc[1] = '\\'; break;
		case '\b': esc[1] = 'b'; break;
		case '\f': esc[1] = 'f'; break;
		case '\n': esc[1] = 'n'; break;
		case '\r': esc[1] = 'r'; break;
		case '\t': esc[1] = 't'; break;
		default:
			memcpy(esc + 1, "u00", 3);
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			n = 6;
		}
		hput(h, esc, n);
	}
	hput(h, run, (size_t)(s - run));
	hput(h, "\"", 1);
}

static int cmp_str_ptr(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The first of n strings that occurs twice, or NULL. */
static const char *find_duplicate(const char **v, size_t n)
{
	qsort(v, n, sizeof *v, cmp_str_ptr);
	for (size_t i = 1; i < n; i++)
		if (strcmp(v[i - 1], v[i]) == 0)
			return v[i];
	return NULL;
}

/* Check the arguments and build the header, padded to a multiple of 8.
 * *h receives it (free h->s), *data_len the byte buffer's length. */
static int st_header(hbuf *h, size_t *data_len, const fc_st_tensor *tensors, size_t n,
		     const fc_st_meta *meta, size_t n_meta, char *eb, size_t ec)
{
	const char **names = NULL;
	size_t total = 0;
	shown_buf sb;
	int rc = 0;

	memset(h, 0, sizeof *h);
	if ((n && !tensors) || (n_meta && !meta))
		return fci_errf(eb, ec, FC_ERR_INVALID, "tensors or metadata is NULL with a non-zero count");
	names = malloc((n > n_meta ? n : n_meta) * sizeof *names + 1);
	if (!names)
		return fci_errf(eb, ec, FC_ERR_NOMEM, "out of memory");

	for (size_t i = 0; i < n_meta; i++) {
		const fc_st_meta *m = &meta[i];
		if (!m->key || !m->value) {
			rc = fci_errf(eb, ec, FC_ERR_INVALID, "metadata entry %zu has a NULL key or value", i);
			goto out;
		}
		if (!utf8_valid(m->key) || !utf8_valid(m->value)) {
			rc = fci_errf(eb, ec, FC_ERR_INVALID, "metadata '%s' is not valid UTF-8", shown(&sb, m->key));
			goto out;
		}
		names[i] = m->key;
	}
	if (n_meta && find_duplicate(names, n_meta)) {
		rc = fci_errf(eb, ec, FC_ERR_INVALID, "metadata key '%s' given twice",
			      shown(&sb, find_duplicate(names, n_meta)));
		goto out;
	}

	hputs(h, "{");
	if (n_meta) {
		hputs(h, "\"__metadata__\":{");
		for (size_t i = 0; i < n_meta; i++) {
			if (i)
				hputs(h, ",");
			hput_str(h, meta[i].key);
			hputs(h, ":");
			hput_str(h, meta[i].value);
		}
		hputs(h, "}");
	}
	for (size_t i = 0; i < n; i++) {
		const fc_st_tensor *t = &tensors[i];
		size_t nbytes;
		if (!t->name || !utf8_valid(t->name)) {
			rc = fci_errf(eb, ec, FC_ERR_INVALID, "tensor %zu has a NULL or non-UTF-8 name", i);
			goto out;
		}
		if (strcmp(t->name, "__metadata__") == 0) {
			rc = fci_errf(eb, ec, FC_ERR_INVALID, "a tensor may not be called __metadata__");
			goto out;
		}
		if ((unsigned)t->dtype >= FC_ST_NDTYPES) {
			rc = fci_errf(eb, ec, FC_ERR_INVALID, "tensor '%s': unknown dtype %d", shown(&sb, t->name),
				      (int)t->dtype);
			goto out;
		}
		if (t->ndim && !t->shape) {
			rc = fci_errf(eb, ec, FC_ERR_INVALID, "tensor '%s': NULL shape", shown(&sb, t->name));
			goto out;
		}
		nbytes = dtypes[t->dtype].size;
		for (size_t d = 0; d < t->ndim; d++) {
			if (t->shape[d] > INT64_MAX) {
				rc = fci_errf(eb, ec, FC_ERR_INVALID, "tensor '%s': dim %zu is above 2^63-1",
					      shown(&sb, t->name), d);
				goto out;
			}
			if (t->shape[d] > SIZE_MAX || __builtin_mul_overflow(nbytes, (size_t)t->shape[d], &nbytes)) {
				rc = fci_errf(eb, ec, FC_ERR_OVERFLOW, "tensor '%s': its size overflows",
					      shown(&sb, t->name));
				goto out;
			}
		}
		if (nbytes && !t->data) {
			rc = fci_errf(eb, ec, FC_ERR_INVALID, "tensor '%s': NULL data", shown(&sb, t->name));
			goto out;
		}
		if (__builtin_add_overflow(total, nbytes, &total) || total > INT64_MAX) {
			rc = fci_errf(eb, ec, FC_ERR_OVERFLOW, "the tensors' total size overflows");
			goto out;
		}
		names[i] = t->name;
		if (i || n_meta)
			hputs(h, ",");
		hput_str(h, t->name);
		hputs(h, ":{\"dtype\":\"");
		hputs(h, dtypes[t->dtype].name);
		hputs(h, "\",\"shape\":[");
		for (size_t d = 0; d < t->ndim; d++) {
			if (d)
				hputs(h, ",");
			hput_u64(h, t->shape[d]);
		}
		hputs(h, "],\"data_offsets\":[");
		hput_u64(h, total - nbytes);
		hputs(h, ",");
		hput_u64(h, total);
		hputs(h, "]}");
	}
	if (n && find_duplicate(names, n)) {
		rc = fci_errf(eb, ec, FC_ERR_INVALID, "tensor name '%s' given twice",
			      shown(&sb, find_duplicate(names, n)));
		goto out;
	}
	hputs(h, "}");
	/* Spaces up to a multiple of 8, so that the byte buffer starts 8-byte
	 * aligned in the file, as the reference writer does. */
	while (!h->oom && h->len % 8)
		hputs(h, " ");
	if (h->oom) {
		rc = fci_errf(eb, ec, FC_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (h->len > FC_ST_MAX_HEADER) {
		rc = fci_errf(eb, ec, FC_ERR_INVALID, "the header would be %zu bytes, above the %llu-byte limit",
			      h->len, (unsigned long long)FC_ST_MAX_HEADER);
		goto out;
	}
	*data_len = total;
out:
	free(names);
	if (rc < 0) {
		free(h->s);
		memset(h, 0, sizeof *h);
	}
	return rc;
}

static void put_u64le(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

int fc_st_encode(void **out, size_t *out_len, const fc_st_tensor *tensors, size_t n,
		 const fc_st_meta *meta, size_t n_meta, char *errbuf, size_t errcap)
{
	hbuf h;
	size_t data_len, len;
	unsigned char *p;
	int rc;

	*out = NULL;
	*out_len = 0;
	if ((rc = st_header(&h, &data_len, tensors, n, meta, n_meta, errbuf, errcap)) < 0)
		return rc;
	if (__builtin_add_overflow(8 + h.len, data_len, &len)) {
		free(h.s);
		return fci_errf(errbuf, errcap, FC_ERR_OVERFLOW, "the file's size overflows");
	}
	p = malloc(len);
	if (!p) {
		free(h.s);
		return fci_errf(errbuf, errcap, FC_ERR_NOMEM, "out of memory for %zu bytes", len);
	}
	put_u64le(p, h.len);
	memcpy(p + 8, h.s, h.len);
	len = 8 + h.len;
	for (size_t i = 0; i < n; i++) {
		size_t nb = dtypes[tensors[i].dtype].size;
		for (size_t d = 0; d < tensors[i].ndim; d++)
			nb *= (size_t)tensors[i].shape[d]; /* checked in st_header */
		if (nb)
			memcpy(p + len, tensors[i].data, nb);
		len += nb;
	}
	free(h.s);
	*out = p;
	*out_len = len;
	return 0;
}

int fc_st_write(const char *path, const fc_st_tensor *tensors, size_t n, const fc_st_meta *meta,
		size_t n_meta, char *errbuf, size_t errcap)
{
	fci_outfile *f = NULL;
	unsigned char lenbuf[8];
	size_t data_len;
	hbuf h;
	int rc;

	if ((rc = st_header(&h, &data_len, tensors, n, meta, n_meta, errbuf, errcap)) < 0)
		return rc;
	if ((rc = fci_outfile_open(&f, path, errbuf, errcap)) < 0)
		goto out;
	put_u64le(lenbuf, h.len);
	rc = fci_outfile_write(f, lenbuf, 8);
	if (rc == 0)
		rc = fci_outfile_write(f, h.s, h.len);
	for (size_t i = 0; i < n && rc == 0; i++) {
		size_t nb = dtypes[tensors[i].dtype].size;
		for (size_t d = 0; d < tensors[i].ndim; d++)
			nb *= (size_t)tensors[i].shape[d]; /* checked in st_header */
		if (nb)
			rc = fci_outfile_write(f, tensors[i].data, nb);
	}
	if (rc == 0)
		rc = fci_outfile_commit(f);
	if (rc < 0)
		fci_errf(errbuf, errcap, rc, "%s", fci_outfile_errmsg(f));
out:
	fci_outfile_free(f);
	free(h.s);
	return rc;
}

/* ---- reading ---- */

struct fc_st_file {
	unsigned char *mem; /* the file, placed so that its byte buffer is 64-byte aligned */
	fc_st_tensor *t;    /* n tensors in buffer order */
	size_t n;
	size_t *by_name;    /* indices into t, names ascending */
	fc_st_meta *meta;
	size_t n_meta;
	uint64_t *dims;     /* every tensor's shape, back to back */
	char *strings;      /* names, keys, values */
};

static uint64_t get_u64le(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* An allocation for a len-byte file whose header length field says hlen:
 * the file goes at *file, where its byte buffer (at 8 + hlen) falls on a
 * 64-byte boundary. hlen may be nonsense; it only decides the padding. */
static int st_alloc(fc_st_file *f, unsigned char **file, size_t len, uint64_t hlen)
{
	size_t pad = (size_t)((64 - (8 + hlen % 64) % 64) % 64), size;
	if (len > SIZE_MAX - 128)
		return FC_ERR_OVERFLOW;
	size = (pad + len + 63) / 64 * 64;
	f->mem = aligned_alloc(64, size ? size : 64);
	if (!f->mem)
		return FC_ERR_NOMEM;
	*file = f->mem + pad;
	return 0;
}

static int cmp_size_by_name(const void *a, const void *b, void *ctx)
{
	const fc_st_tensor *t = ctx;
	return strcmp(t[*(const size_t *)a].name, t[*(const size_t *)b].name);
}

/* A range of the byte buffer and the tensor that claims it. */
typedef struct span {
	uint64_t begin, end;
	size_t idx; /* in header order */
} span;

static int cmp_span(const void *a, const void *b)
{
	const span *x = a, *y = b;
	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* A JSON integer in [0, INT64_MAX], or -1. */
static int64_t json_nonneg(const json_t *v)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return -1;
	return (int64_t)json_integer_value(v);
}

/* Check one header entry and fill *t (but for name and data) and *sp.
 * dims has room for its shape. */
static int st_entry(fc_st_tensor *t, span *sp, uint64_t *dims, const char *name, json_t *v,
		    size_t buf_len, char *eb, size_t ec)
{
	json_t *dtype = NULL, *shape = NULL, *offsets = NULL, *x;
	const char *key, *ds;
	uint64_t count = 1, nbytes;
	int64_t b, e;
	shown_buf sb;
	shape_buf shb;
	int zero = 0;

	if (!json_is_object(v))
		return fci_errf(eb, ec, FC_ERR_CORRUPT, "tensor '%s' is not an object", shown(&sb, name));
	json_object_foreach(v, key, x) {
		if (strcmp(key, "dtype") == 0)
			dtype = x;
		else if (strcmp(key, "shape") == 0)
			shape = x;
		else if (strcmp(key, "data_offsets") == 0)
			offsets = x;
		else {
			shown_buf kb;
			return fci_errf(eb, ec, FC_ERR_CORRUPT, "tensor '%s': unknown field '%s'", shown(&sb, name),
					shown(&kb, key));
		}
	}
	if (!dtype || !shape || !offsets)
		return fci_errf(eb, ec, FC_ERR_CORRUPT, "tensor '%s': no %s", shown(&sb, name),
				!dtype ? "dtype" : !shape ? "shape" : "data_offsets");

	if (!json_is_string(dtype))
		return fci_errf(eb, ec, FC_ERR_CORRUPT, "tensor '%s': dtype is not a string", shown(&sb, name));
	ds = json_string_value(dtype);
	if (fc_st_dtype_parse(ds, &t->dtype) < 0) {
		shown_buf db;
		for (size_t i = 0; i < sizeof subbyte_dtypes / sizeof *subbyte_dtypes; i++)
			if (strcmp(ds, subbyte_dtypes[i]) == 0)
				return fci_errf(eb, ec, FC_ERR_UNSUPPORTED, "tensor '%s': dtype %s is not supported",
						shown(&sb, name), ds);
		return fci_errf(eb, ec, FC_ERR_CORRUPT, "tensor '%s': unknown dtype '%s'", shown(&sb, name),
				shown(&db, ds));
	}

	if (!json_is_array(shape))
		return fci_errf(eb, ec, FC_ERR_CORRUPT, "tensor '%s': shape is not an array", shown(&sb, name));
	t->ndim = json_array_size(shape);
	t->shape = dims;
	for (size_t d = 0; d < t->ndim; d++) {
		int64_t dim = json_nonneg(json_array_get(shape, d));
		if (dim < 0)
			return fci_errf(eb, ec, FC_ERR_CORRUPT, "tensor '%s': shape[%zu] is not an integer >= 0",
					shown(&sb, name), d);
		dims[d] = (uint64_t)dim;
		zero |= dim == 0;
	}
	/* An empty tensor has no bytes whatever its other dims; otherwise the
	 * product must not wrap. */
	for (size_t d = 0; d < t->ndim && !zero; d++)
		if (__builtin_mul_overflow(count, dims[d], &count))
			return fci_errf(eb, ec, FC_ERR_CORRUPT, "tensor '%s': shape %s overflows", shown(&sb, name),
					shape_str(&shb, dims, t->ndim));
	if (zero)
		count = 0;
	if (__builtin_mul_overflow(count, (uint64_t)dtypes[t->dtype].size, &nbytes))
		return fci_errf(eb, ec, FC_ERR_CORRUPT, "tensor '%s': shape %s of %s overflows", shown(&sb, name),
				shape_str(&shb, dims, t->ndim), ds);

	if (!json_is_array(offsets) || json_array_size(offsets) != 2)
		return fci_errf(eb, ec, FC_ERR_CORRUPT, "tensor '%s': data_offsets is not [begin, end]",
				shown(&sb, name));
	b = json_nonneg(json_array_get(offsets, 0));
	e = json_nonneg(json_array_get(offsets, 1));
	if (b < 0 || e < 0)
		return fci_errf(eb, ec, FC_ERR_CORRUPT, "tensor '%s': data_offsets are not integers >= 0",
				shown(&sb, name));
	if (b > e)
		return fci_errf(eb, ec, FC_ERR_CORRUPT, "tensor '%s': data_offsets [%lld, %lld] end before they begin",
				shown(&sb, name), (long long)b, (long long)e);
	if ((uint64_t)(e - b) != nbytes)
		return fci_errf(eb, ec, FC_ERR_CORRUPT,
				"tensor '%s': shape %s of %s is %llu bytes but data_offsets [%lld, %lld] hold %lld",
				shown(&sb, name), shape_str(&shb, dims, t->ndim), ds, (unsigned long long)nbytes,
				(long long)b, (long long)e, (long long)(e - b));
	if ((uint64_t)e > buf_len)
		return fci_errf(eb, ec, FC_ERR_CORRUPT,
				"tensor '%s': data_offsets [%lld, %lld] run past the %zu-byte buffer", shown(&sb, name),
				(long long)b, (long long)e, buf_len);
	t->nbytes = (size_t)nbytes;
	sp->begin = (uint64_t)b;
	sp->end = (uint64_t)e;
	return 0;
}

/* The length field of a len-byte file against the file and the cap. */
static int st_frame(size_t len, uint64_t hlen, char *eb, size_t ec)
{
	if (len < 8)
		return fci_errf(eb, ec, FC_ERR_CORRUPT, "file is %zu bytes, too short for the 8-byte header length",
				len);
	if (hlen > FC_ST_MAX_HEADER)
		return fci_errf(eb, ec, FC_ERR_CORRUPT, "header length %llu is above the %llu-byte limit",
				(unsigned long long)hlen, (unsigned long long)FC_ST_MAX_HEADER);
	if (hlen > len - 8)
		return fci_errf(eb, ec, FC_ERR_CORRUPT, "header length %llu runs past the end of the %zu-byte file",
				(unsigned long long)hlen, len);
	return 0;
}

/* Parse and check the len-byte file at p, which lies in f->mem. */
static int st_check(fc_st_file *f, const unsigned char *p, size_t len, char *eb, size_t ec)
{
	json_error_t jerr;
	json_t *root = NULL, *v, *meta = NULL;
	const unsigned char *buf;
	fc_st_tensor *tmp = NULL;
	span *spans = NULL;
	size_t n_dims = 0, n_str = 0, buf_len, pos, di = 0, si = 0, ti = 0;
	uint64_t hlen;
	const char *key;
	shown_buf sb, sb2;
	int rc = 0;

	if ((rc = st_frame(len, len >= 8 ? get_u64le(p) : 0, eb, ec)) < 0)
		return rc;
	hlen = get_u64le(p);
	if (hlen < 2 || p[8] != '{')
		return fci_errf(eb, ec, FC_ERR_CORRUPT, "header does not start with '{'");
	buf = p + 8 + hlen;
	buf_len = len - 8 - (size_t)hlen;

	/* Duplicate keys are refused at every level: a tensor named twice
	 * would otherwise be whichever one the parser keeps. */
	root = json_loadb((const char *)p + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return fci_errf(eb, ec, FC_ERR_CORRUPT, "header is not valid JSON: %s (header byte %d)", jerr.text,
				jerr.position);
	if (!json_is_object(root)) {
		rc = fci_errf(eb, ec, FC_ERR_CORRUPT, "header is not a JSON object");
		goto out;
	}

	/* First pass: sizes, and the metadata's shape. */
	json_object_foreach(root, key, v) {
		if (strcmp(key, "__metadata__") == 0) {
			const char *mk;
			json_t *mv;
			if (!json_is_object(v)) {
				rc = fci_errf(eb, ec, FC_ERR_CORRUPT, "__metadata__ is not an object");
				goto out;
			}
			json_object_foreach(v, mk, mv) {
				if (!json_is_string(mv)) {
					rc = fci_errf(eb, ec, FC_ERR_CORRUPT, "__metadata__ '%s' is not a string",
						      shown(&sb, mk));
					goto out;
				}
				n_str += strlen(mk) + 1 + json_string_length(mv) + 1;
				f->n_meta++;
			}
			meta = v;
			continue;
		}
		f->n++;
		n_str += strlen(key) + 1;
		if (json_is_object(v) && json_is_array(json_object_get(v, "shape")))
			n_dims += json_array_size(json_object_get(v, "shape"));
	}

	/* Everything is bounded by the header's size, itself bounded. */
	f->t = calloc(f->n + 1, sizeof *f->t);
	tmp = calloc(f->n + 1, sizeof *tmp);
	spans = calloc(f->n + 1, sizeof *spans);
	f->by_name = calloc(f->n + 1, sizeof *f->by_name);
	f->meta = calloc(f->n_meta + 1, sizeof *f->meta);
	f->dims = calloc(n_dims + 1, sizeof *f->dims);
	f->strings = malloc(n_str + 1);
	if (!f->t || !tmp || !spans || !f->by_name || !f->meta || !f->dims || !f->strings) {
		rc = fci_errf(eb, ec, FC_ERR_NOMEM, "out of memory");
		goto out;
	}

	if (meta) {
		const char *mk;
		json_t *mv;
		size_t mi = 0;
		json_object_foreach(meta, mk, mv) {
			size_t kl = strlen(mk) + 1, vl = json_string_length(mv) + 1;
			f->meta[mi].key = memcpy(f->strings + si, mk, kl);
			si += kl;
			f->meta[mi].value = memcpy(f->strings + si, json_string_value(mv), vl);
			si += vl;
			mi++;
		}
	}
	json_object_foreach(root, key, v) {
		size_t kl;
		if (v == meta)
			continue;
		if ((rc = st_entry(&tmp[ti], &spans[ti], f->dims + di, key, v, buf_len, eb, ec)) < 0)
			goto out;
		kl = strlen(key) + 1;
		tmp[ti].name = memcpy(f->strings + si, key, kl);
		si += kl;
		tmp[ti].data = buf + spans[ti].begin;
		spans[ti].idx = ti;
		di += tmp[ti].ndim;
		ti++;
	}

	/* The ranges, in buffer order, must tile the buffer: each begins where
	 * the one before ended, and the last ends at the end of the file. A
	 * hole or trailing bytes would be data no tensor accounts for. */
	qsort(spans, f->n, sizeof *spans, cmp_span);
	pos = 0;
	for (size_t i = 0; i < f->n; i++) {
		const span *s = &spans[i];
		if (s->begin > pos) {
			rc = fci_errf(eb, ec, FC_ERR_CORRUPT, "buffer bytes [%zu, %llu) before tensor '%s' belong to no tensor",
				  pos, (unsigned long long)s->begin, shown(&sb, tmp[s->idx].name));
			goto out;
		}
		if (s->begin < pos) {
			rc = fci_errf(eb, ec, FC_ERR_CORRUPT, "tensor '%s' overlaps tensor '%s'",
				      shown(&sb, tmp[s->idx].name), shown(&sb2, tmp[spans[i - 1].idx].name));
			goto out;
		}
		pos = (size_t)s->end;
		f->t[i] = tmp[s->idx];
	}
	if (pos != buf_len) {
		rc = fci_errf(eb, ec, FC_ERR_CORRUPT, "the last %zu bytes of the %zu-byte buffer belong to no tensor",
			      buf_len - pos, buf_len);
		goto out;
	}

	for (size_t i = 0; i < f->n; i++)
		f->by_name[i] = i;
	qsort_r(f->by_name, f->n, sizeof *f->by_name, cmp_size_by_name, f->t);
out:
	free(spans);
	free(tmp);
	json_decref(root);
	return rc;
}

static int st_new(fc_st_file **out, char *eb, size_t ec)
{
	*out = calloc(1, sizeof **out);
	return *out ? 0 : fci_errf(eb, ec, FC_ERR_NOMEM, "out of memory");
}

int fc_st_parse(fc_st_file **out, const void *src, size_t len, char *errbuf, size_t errcap)
{
	fc_st_file *f;
	unsigned char *file;
	int rc;

	*out = NULL;
	if ((rc = st_new(&f, errbuf, errcap)) < 0)
		return rc;
	rc = st_alloc(f, &file, len, len >= 8 ? get_u64le(src) : 0);
	if (rc < 0) {
		fci_errf(errbuf, errcap, rc, "cannot allocate %zu bytes", len);
		goto out;
	}
	if (len)
		memcpy(file, src, len);
	rc = st_check(f, file, len, errbuf, errcap);
out:
	if (rc < 0)
		fc_st_free(f);
	else
		*out = f;
	return rc;
}

/* Read exactly n bytes at off; a file that shrank under us is an I/O error. */
static int pread_all(int fd, void *dst, size_t n, off_t off, char *eb, size_t ec)
{
	unsigned char *p = dst;
	while (n > 0) {
		ssize_t r = pread(fd, p, n, off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			char why[128];
			if (r == 0)
				return fci_errf(eb, ec, FC_ERR_IO, "the file shrank while it was read");
			fci_os_error(why, sizeof why, errno);
			return fci_errf(eb, ec, fci_errno_code(errno), "read failed: %s", why);
		}
		p += r;
		n -= (size_t)r;
		off += r;
	}
	return 0;
}

int fc_st_open(fc_st_file **out, const char *path, char *errbuf, size_t errcap)
{
	fc_st_file *f = NULL;
	unsigned char head[8], *file;
	struct stat st;
	size_t len;
	int fd, rc;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		char why[128];
		int e = errno;
		fci_os_error(why, sizeof why, e);
		return fci_errf(errbuf, errcap, fci_errno_code(e), "%s", why);
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		rc = fci_errf(errbuf, errcap, FC_ERR_INVALID, "not a regular file");
		goto out;
	}
	if ((uint64_t)st.st_size > SIZE_MAX - 128) {
		rc = fci_errf(errbuf, errcap, FC_ERR_OVERFLOW, "file too large for memory");
		goto out;
	}
	len = (size_t)st.st_size;
	if ((rc = st_new(&f, errbuf, errcap)) < 0)
		goto out;
	/* a lying length field fails before the file is read */
	if (len >= 8 && (rc = pread_all(fd, head, 8, 0, errbuf, errcap)) < 0)
		goto out;
	if ((rc = st_frame(len, len >= 8 ? get_u64le(head) : 0, errbuf, errcap)) < 0)
		goto out;
	if ((rc = st_alloc(f, &file, len, get_u64le(head))) < 0) {
		fci_errf(errbuf, errcap, rc, "cannot allocate %zu bytes", len);
		goto out;
	}
	if ((rc = pread_all(fd, file, len, 0, errbuf, errcap)) < 0)
		goto out;
	rc = st_check(f, file, len, errbuf, errcap);
out:
	close(fd);
	if (rc < 0)
		fc_st_free(f);
	else
		*out = f;
	return rc;
}

void fc_st_free(fc_st_file *f)
{
	if (!f)
		return;
	free(f->strings);
	free(f->dims);
	free(f->meta);
	free(f->by_name);
	free(f->t);
	free(f->mem);
	free(f);
}

size_t fc_st_count(const fc_st_file *f)
{
	return f->n;
}

const fc_st_tensor *fc_st_at(const fc_st_file *f, size_t i)
{
	return i < f->n ? &f->t[i] : NULL;
}

const fc_st_tensor *fc_st_find(const fc_st_file *f, const char *name)
{
	size_t lo = 0, hi = f->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const fc_st_tensor *t = &f->t[f->by_name[mid]];
		int c = strcmp(name, t->name);
		if (c == 0)
			return t;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

size_t fc_st_meta_count(const fc_st_file *f)
{
	return f->n_meta;
}

const fc_st_meta *fc_st_meta_at(const fc_st_file *f, size_t i)
{
	return i < f->n_meta ? &f->meta[i] : NULL;
}

const char *fc_st_meta_find(const fc_st_file *f, const char *key)
{
	for (size_t i = 0; i < f->n_meta; i++)
		if (strcmp(f->meta[i].key, key) == 0)
			return f->meta[i].value;
	return NULL;
}

/* ---- typed copies ---- */

int fc_st_copy_f32(float *dst, size_t n, const fc_st_tensor *t)
{
	const unsigned char *src = t->data;
	size_t size = fc_st_dtype_size(t->dtype);

	if (!size || t->nbytes / size != n)
		return FC_ERR_INVALID;
	switch (t->dtype) {
	case FC_ST_F32:
		if (n)
			memcpy(dst, src, n * 4);
		return 0;
	case FC_ST_F16:
	case FC_ST_BF16: {
		/* through an aligned block: t->data may sit at any offset */
		uint16_t block[1024];
		for (size_t i = 0; i < n; i += 1024) {
			size_t m = n - i < 1024 ? n - i : 1024;
			memcpy(block, src + 2 * i, 2 * m);
			if (t->dtype == FC_ST_F16)
				fci_f16_to_f32(dst + i, block, m);
			else
				fci_bf16_to_f32(dst + i, block, m);
		}
		return 0;
	}
	case FC_ST_F64:
		for (size_t i = 0; i < n; i++) {
			double d;
			memcpy(&d, src + 8 * i, 8);
			dst[i] = (float)d;
		}
		return 0;
	default:
		return FC_ERR_UNSUPPORTED;
	}
}

int fc_st_copy_i64(int64_t *dst, size_t n, const fc_st_tensor *t)
{
	const unsigned char *src = t->data;
	size_t size = fc_st_dtype_size(t->dtype);

	if (!size || t->nbytes / size != n)
		return FC_ERR_INVALID;
	for (size_t i = 0; i < n; i++) {
		const unsigned char *p = src + size * i;
		union {
			int8_t i8; uint8_t u8; int16_t i16; uint16_t u16;
			int32_t i32; uint32_t u32; int64_t i64; uint64_t u64;
		} v;
		memcpy(&v, p, size);
		switch (t->dtype) {
		case FC_ST_BOOL: dst[i] = v.u8 != 0; break;
		case FC_ST_U8: dst[i] = v.u8; break;
		case FC_ST_I8: dst[i] = v.i8; break;
		case FC_ST_I16: dst[i] = v.i16; break;
		case FC_ST_U16: dst[i] = v.u16; break;
		case FC_ST_I32: dst[i] = v.i32; break;
		case FC_ST_U32: dst[i] = v.u32; break;
		case FC_ST_I64: dst[i] = v.i64; break;
		case FC_ST_U64:
			if (v.u64 > INT64_MAX)
				return FC_ERR_OVERFLOW;
			dst[i] = (int64_t)v.u64;
			break;
		default:
			return FC_ERR_UNSUPPORTED;
		}
	}
	return 0;
}
