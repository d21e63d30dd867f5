/*
 * wds.c - WebDataset tar shards as a dataset: find the shards (a .tar, a
 * directory of them, a brace pattern, @LIST), read each with libarchive
 * and group its members into samples the way webdataset does, and tell
 * from a store's items which shards are unchanged (extract then does not
 * open them).
 *
 * Not here: decoding the images (extract.c reads the members it extracts
 * again, through fci_tar_*), the incremental plan (extract.c).
 *
 * A shard is read twice when its images are extracted: once here to hash
 * every image (nothing is kept but the hashes), once by a decode thread
 * for the images the store lacks. That is what loose files cost too, and
 * it keeps memory flat however large a shard is.
 */
#include <archive.h>
#include <archive_entry.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "extract/wds.h"
#include "util/util.h"

#define MSGLEN 512

/* ---- the tar reader ---- */

struct fci_tar {
	struct archive *a;
	uint32_t count;
	char msg[MSGLEN];
};

static int tar_new(fci_tar **out, char *err, size_t errcap)
{
	fci_tar *t = calloc(1, sizeof *t);
	*out = NULL;
	if (!t || !(t->a = archive_read_new())) {
		free(t);
		return fci_errf(err, errcap, FC_ERR_NOMEM, "out of memory");
	}
	archive_read_support_filter_all(t->a);
	archive_read_support_format_tar(t->a);
	*out = t;
	return 0;
}

static const char *archive_text(struct archive *a)
{
	const char *s = archive_error_string(a);
	return s ? s : "unknown damage";
}

int fci_tar_open_file(fci_tar **out, const char *path, char *err, size_t errcap)
{
	char why[128];
	struct stat st;
	if (stat(path, &st) != 0)
		return fci_errf(err, errcap, errno == ENOENT ? FC_ERR_NOT_FOUND : FC_ERR_IO, "%s",
				fci_os_error(why, sizeof why, errno));
	if (!S_ISREG(st.st_mode))
		return fci_errf(err, errcap, FC_ERR_IO, "not a file");
	int rc = tar_new(out, err, errcap);
	if (rc)
		return rc;
	if (archive_read_open_filename((*out)->a, path, 1 << 16) != ARCHIVE_OK) {
		rc = fci_errf(err, errcap, FC_ERR_IO, "%s", archive_text((*out)->a));
		fci_tar_free(*out);
		*out = NULL;
	}
	return rc;
}

int fci_tar_open_mem(fci_tar **out, const void *buf, size_t len, char *err, size_t errcap)
{
	int rc = tar_new(out, err, errcap);
	if (rc)
		return rc;
	if (archive_read_open_memory((*out)->a, buf, len) != ARCHIVE_OK) {
		rc = fci_errf(err, errcap, FC_ERR_CORRUPT, "%s", archive_text((*out)->a));
		fci_tar_free(*out);
		*out = NULL;
	}
	return rc;
}

int fci_tar_next(fci_tar *t, const char **name, int64_t *size, int *regular, uint32_t *number)
{
	struct archive_entry *e;
	int r = archive_read_next_header(t->a, &e);
	if (r == ARCHIVE_EOF)
		return 0;
	if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
		snprintf(t->msg, sizeof t->msg, "%s", archive_text(t->a));
		return FC_ERR_CORRUPT;
	}
	const char *n = archive_entry_pathname(e);
	*name = n ? n : "";
	*size = archive_entry_size_is_set(e) ? archive_entry_size(e) : 0;
	*regular = archive_entry_filetype(e) == AE_IFREG;
	*number = t->count++;
	return 1;
}

int fci_tar_read(fci_tar *t, uint8_t **buf, size_t *cap, size_t *len)
{
	size_t n = 0;
	for (;;) {
		if (*cap - n < 65536) {
			size_t ncap = *cap ? *cap * 2 : 1 << 16;
			if (ncap > (size_t)FCI_WDS_MEMBER_MAX + (1 << 16)) {
				snprintf(t->msg, sizeof t->msg, "member longer than its header says");
				return FC_ERR_CORRUPT;
			}
			uint8_t *nb = realloc(*buf, ncap);
			if (!nb)
				return FC_ERR_NOMEM;
			*buf = nb;
			*cap = ncap;
		}
		la_ssize_t got = archive_read_data(t->a, *buf + n, *cap - n);
		if (got < 0) {
			snprintf(t->msg, sizeof t->msg, "%s", archive_text(t->a));
			return FC_ERR_CORRUPT;
		}
		if (got == 0)
			break;
		n += (size_t)got;
	}
	*len = n;
	return 0;
}

int fci_tar_hash(fci_tar *t, uint8_t hash[FC_HASH_LEN])
{
	static _Thread_local uint8_t buf[1 << 16];
	XXH3_state_t *xs = XXH3_createState();
	if (!xs)
		return FC_ERR_NOMEM;
	XXH3_128bits_reset(xs);
	int rc = 0;
	for (;;) {
		la_ssize_t got = archive_read_data(t->a, buf, sizeof buf);
		if (got < 0) {
			snprintf(t->msg, sizeof t->msg, "%s", archive_text(t->a));
			rc = FC_ERR_CORRUPT;
			break;
		}
		if (got == 0)
			break;
		XXH3_128bits_update(xs, buf, (size_t)got);
	}
	if (!rc) {
		XXH128_canonical_t c;
		XXH128_canonicalFromHash(&c, XXH3_128bits_digest(xs));
		memcpy(hash, c.digest, FC_HASH_LEN);
	}
	XXH3_freeState(xs);
	return rc;
}

const char *fci_tar_errmsg(const fci_tar *t) { return t->msg; }

void fci_tar_free(fci_tar *t)
{
	if (!t)
		return;
	archive_read_free(t->a);
	free(t);
}

/* ---- grouping members into samples ---- */

enum { K_JPG, K_JPEG, K_PNG, K_CLS, K_TXT, K_JSON, K_N };
static const char *const kind_ext[K_N] = { "jpg", "jpeg", "png", "cls", "txt", "json" };

/* The sample being assembled. */
struct cur {
	char *key;
	int active;
	int has_img[3];
	uint8_t img_hash[3][FC_HASH_LEN];
	uint32_t img_member[3];
	char *text[3]; /* .cls, .txt, .json contents */
	size_t text_len[3];
	char *bad;
};

static void cur_reset(struct cur *c)
{
	free(c->key);
	for (int k = 0; k < 3; k++)
		free(c->text[k]);
	free(c->bad);
	memset(c, 0, sizeof *c);
}

static char *dupf(const char *fmt, ...) FC_PRINTF(1, 2);
static char *dupf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = NULL;
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	return s;
}

/* text[0..len) trimmed of ASCII white space, as a printable quote for
 * messages: at most 40 bytes, other bytes as '?'. */
static void quote_text(char out[48], const char *s, size_t len)
{
	size_t o = 0;
	for (size_t i = 0; i < len && o < 40; i++)
		out[o++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	if (len > 40)
		out[o++] = '.', out[o++] = '.', out[o++] = '.';
	out[o] = '\0';
}

static void trim(const char **s, size_t *len)
{
	while (*len && isspace((unsigned char)**s))
		(*s)++, (*len)--;
	while (*len && isspace((unsigned char)(*s)[*len - 1]))
		(*len)--;
}

static int has_control_n(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return 1;
	return 0;
}

/* The label of a sample from its .cls, .txt or .json (the first present);
 * *label NULL for none. Returns NULL, or why the label does not parse
 * (malloc'd; "" when out of memory is reported as such by the caller). */
static char *parse_label(const struct cur *c, const char *field, char **label)
{
	char q[48];
	*label = NULL;
	if (c->text[0]) {
		const char *s = c->text[0];
		size_t len = c->text_len[0];
		trim(&s, &len);
		size_t i = len && (s[0] == '-' || s[0] == '+');
		int digits = len > i && len - i <= 18;
		for (size_t k = i; digits && k < len; k++)
			digits = s[k] >= '0' && s[k] <= '9';
		if (!digits) {
			quote_text(q, s, len);
			return dupf("label '%s.cls' is not an integer: '%s'", c->key, q);
		}
		char num[24];
		memcpy(num, s, len);
		num[len] = '\0';
		*label = dupf("%lld", strtoll(num, NULL, 10));
		return NULL;
	}
	if (c->text[1]) {
		const char *s = c->text[1];
		size_t len = c->text_len[1];
		trim(&s, &len);
		if (!len)
			return dupf("label '%s.txt' is empty", c->key);
		if (has_control_n(s, len) || len > 1000) {
			quote_text(q, s, len);
			return dupf("label '%s.txt' is not one line of at most 1000 bytes: '%s'", c->key, q);
		}
		*label = strndup(s, len);
		return NULL;
	}
	if (!c->text[2])
		return NULL;
	json_error_t je;
	json_t *root = json_loadb(c->text[2], c->text_len[2], JSON_DECODE_ANY, &je);
	char *why = NULL;
	if (!root || !json_is_object(root)) {
		why = root ? dupf("'%s.json' is not a JSON object", c->key)
			   : dupf("'%s.json' is not JSON: %s (line %d)", c->key, je.text, je.line);
	} else {
		json_t *v = json_object_get(root, field);
		if (json_is_string(v)) {
			const char *s = json_string_value(v);
			size_t len = strlen(s);
			if (!len || has_control_n(s, len) || len > 1000 || len != json_string_length(v))
				why = dupf("field '%s' of '%s.json' is not a label (one line of 1 to 1000 bytes)", field,
					   c->key);
			else
				*label = strdup(s);
		} else if (json_is_integer(v)) {
			*label = dupf("%lld", (long long)json_integer_value(v));
		} else if (json_is_real(v)) {
			double d = json_real_value(v);
			*label = d == floor(d) && fabs(d) < 1e15 ? dupf("%.0f", d) : dupf("%.17g", d);
		} else if (v) {
			why = dupf("field '%s' of '%s.json' is not a number or a string", field, c->key);
		}
	}
	json_decref(root);
	return why;
}

static int push(fci_wds_samples *out, char *key, char *label, char *bad, const uint8_t *hash, uint32_t member)
{
	if (!key) {
		free(label);
		free(bad);
		return FC_ERR_NOMEM;
	}
	if (out->n == out->cap) {
		size_t ncap = out->cap ? out->cap * 2 : 64;
		fci_wds_sample *v = realloc(out->v, ncap * sizeof *v);
		if (!v) {
			free(key);
			free(label);
			free(bad);
			return FC_ERR_NOMEM;
		}
		out->v = v;
		out->cap = ncap;
	}
	fci_wds_sample *s = &out->v[out->n++];
	memset(s, 0, sizeof *s);
	s->key = key;
	s->label = label;
	s->bad = bad;
	if (hash)
		memcpy(s->hash, hash, FC_HASH_LEN);
	s->member = member;
	return 0;
}

/* The assembled sample into out (a failure when it has no image or its
 * label does not parse). */
static int flush(struct cur *c, const char *field, fci_wds_samples *out)
{
	if (!c->active)
		return 0;
	char *label = NULL, *bad = c->bad;
	const uint8_t *hash = NULL;
	uint32_t member = 0;
	c->bad = NULL;
	int img = !c->has_img[0] ? !c->has_img[1] ? !c->has_img[2] ? -1 : 2 : 1 : 0;
	if (!bad && img < 0)
		bad = dupf("sample '%s' has no image (.jpg, .jpeg or .png)", c->key);
	else if (!bad)
		bad = parse_label(c, field, &label);
	if (img >= 0) {
		hash = c->img_hash[img];
		member = c->img_member[img];
	}
	int rc = push(out, strdup(c->key), bad ? NULL : label, bad, hash, member);
	if (bad)
		free(label);
	cur_reset(c);
	return rc;
}

static int by_sample_key(const void *a, const void *b)
{
	const fci_wds_sample *x = *(fci_wds_sample *const *)a, *y = *(fci_wds_sample *const *)b;
	int c = strcmp(x->key, y->key);
	return c ? c : (x > y) - (x < y);
}

/* A key seen twice in one shard (its members not consecutive): the first
 * sample stays, as a failure saying so; the repeats are dropped. */
static int drop_repeats(fci_wds_samples *out)
{
	if (out->n < 2)
		return 0;
	fci_wds_sample **ord = malloc(out->n * sizeof *ord);
	if (!ord)
		return FC_ERR_NOMEM;
	for (size_t i = 0; i < out->n; i++)
		ord[i] = &out->v[i];
	qsort(ord, out->n, sizeof *ord, by_sample_key);
	int rc = 0, any = 0;
	for (size_t f = 0, e; f < out->n; f = e) {
		for (e = f + 1; e < out->n && strcmp(ord[e]->key, ord[f]->key) == 0; e++)
			;
		if (e - f == 1)
			continue;
		fci_wds_sample *first = ord[f]; /* ties sort in tar order */
		free(first->bad);
		free(first->label);
		first->label = NULL;
		first->bad = dupf("sample key '%s' appears again later in the shard (a sample's members must be "
				  "consecutive)",
				  first->key);
		if (!first->bad)
			rc = FC_ERR_NOMEM;
		for (size_t i = f + 1; i < e; i++) {
			free(ord[i]->label);
			free(ord[i]->bad);
			ord[i]->label = ord[i]->bad = NULL;
			ord[i]->member = UINT32_MAX; /* dropped below */
		}
		any = 1;
	}
	free(ord);
	if (any) {
		size_t o = 0;
		for (size_t i = 0; i < out->n; i++) {
			if (out->v[i].member != UINT32_MAX)
				out->v[o++] = out->v[i];
			else
				free(out->v[i].key);
		}
		out->n = o;
	}
	return rc;
}

static int ext_kind(const char *ext)
{
	char low[8];
	size_t n = strlen(ext);
	if (n >= sizeof low)
		return -1;
	for (size_t i = 0; i <= n; i++)
		low[i] = (char)tolower((unsigned char)ext[i]);
	for (int k = 0; k < K_N; k++)
		if (strcmp(low, kind_ext[k]) == 0)
			return k;
	return -1;
}

int fci_wds_group(fci_tar *t, const char *shard, const char *label_field, fci_wds_samples *out)
{
	struct cur c = { 0 };
	uint8_t *buf = NULL;
	size_t cap = 0, len;
	char last[256] = "";
	int rc = 0;
	memset(out, 0, sizeof *out);
	if (!label_field)
		label_field = "label";
	for (;;) {
		const char *name;
		int64_t size;
		int regular;
		uint32_t num;
		int r = fci_tar_next(t, &name, &size, &regular, &num);
		if (r == 0)
			break;
		if (r < 0) {
			/* A damaged header: the sample in hand was read whole. */
			if ((rc = flush(&c, label_field, out)) != 0)
				break;
			char *why = last[0] ? dupf("shard '%s' is damaged after member '%s': %s", shard, last,
						   fci_tar_errmsg(t))
					    : dupf("shard '%s' is damaged at its start: %s", shard, fci_tar_errmsg(t));
			rc = push(out, strdup("#shard"), NULL, why ? why : strdup("damaged"), NULL, 0);
			break;
		}
		snprintf(last, sizeof last, "%s", name);
		while (name[0] == '.' && name[1] == '/')
			name += 2;
		while (name[0] == '/')
			name++;
		const char *slash = strrchr(name, '/'), *base = slash ? slash + 1 : name;
		const char *dot = strchr(base, '.');
		if (!regular || !dot || dot == base) {
			out->skipped++;
			continue;
		}
		size_t keylen = (size_t)(dot - name);
		if (!c.active || strlen(c.key) != keylen || memcmp(c.key, name, keylen) != 0) {
			if ((rc = flush(&c, label_field, out)) != 0)
				break;
			if (!(c.key = strndup(name, keylen))) {
				rc = FC_ERR_NOMEM;
				break;
			}
			c.active = 1;
			if (has_control_n(c.key, keylen)) {
				for (char *p = c.key; *p; p++)
					if ((unsigned char)*p < 0x20 || *p == 0x7f)
						*p = '?';
				c.bad = dupf("member name '%s' holds a control character", c.key);
			}
		}
		int k = ext_kind(dot + 1);
		if (k < 0 || c.bad || (k < 3 && c.has_img[k]) || (k >= 3 && c.text[k - 3]))
			continue; /* not ours, or the first of its kind is kept */
		int64_t limit = k < 3 ? FCI_WDS_MEMBER_MAX : FCI_WDS_LABEL_MAX;
		if (size > limit) {
			c.bad = dupf("member '%s' is %lld bytes, over the %lld MiB limit", name, (long long)size,
				     (long long)(limit >> 20));
			if (!c.bad) {
				rc = FC_ERR_NOMEM;
				break;
			}
			continue;
		}
		if (k < 3) {
			r = fci_tar_hash(t, c.img_hash[k]);
			c.has_img[k] = r == 0;
			c.img_member[k] = num;
		} else {
			r = fci_tar_read(t, &buf, &cap, &len);
			if (!r && !(c.text[k - 3] = malloc(len + 1)))
				r = FC_ERR_NOMEM;
			if (!r) {
				memcpy(c.text[k - 3], buf, len);
				c.text[k - 3][len] = '\0';
				c.text_len[k - 3] = len;
			}
		}
		if (r == FC_ERR_NOMEM) {
			rc = r;
			break;
		}
		if (r) {
			/* Damage inside a member: its sample is lost, the ones before kept. */
			free(c.bad);
			c.bad = dupf("shard '%s' is damaged in member '%s': %s", shard, name, fci_tar_errmsg(t));
			rc = c.bad ? flush(&c, label_field, out) : FC_ERR_NOMEM;
			break;
		}
	}
	if (!rc)
		rc = flush(&c, label_field, out);
	if (!rc)
		rc = drop_repeats(out);
	cur_reset(&c);
	free(buf);
	return rc;
}

void fci_wds_samples_free(fci_wds_samples *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n; i++) {
		free(s->v[i].key);
		free(s->v[i].label);
		free(s->v[i].bad);
	}
	free(s->v);
	memset(s, 0, sizeof *s);
}

/* ---- brace patterns ---- */

/* A range bound: digits with an optional sign; 0 on success. */
static int parse_bound(const char *s, size_t n, long long *v, int *padded)
{
	size_t i = n && (s[0] == '-' || s[0] == '+');
	if (n <= i || n - i > 15)
		return -1;
	for (size_t k = i; k < n; k++)
		if (s[k] < '0' || s[k] > '9')
			return -1;
	char num[20];
	memcpy(num, s, n);
	num[n] = '\0';
	*v = strtoll(num, NULL, 10);
	*padded = s[i] == '0' && n - i > 1;
	return 0;
}

struct expand {
	size_t max, count;
	int (*fn)(void *ctx, const char *path);
	void *ctx;
	char *err;
	size_t errcap;
};

static int expand_rec(struct expand *e, char *done, size_t dlen, size_t dcap, const char *rest)
{
	const char *open = strchr(rest, '{');
	const char *close = open ? strchr(open, '}') : NULL;
	if (open && !close)
		return fci_errf(e->err, e->errcap, FC_ERR_INVALID, "'{' without a closing '}'");
	if (open) {
		const char *inner = strchr(open + 1, '{');
		if (inner && inner < close)
			return fci_errf(e->err, e->errcap, FC_ERR_INVALID, "nested braces are not supported");
	}
	size_t lit = open ? (size_t)(open - rest) : strlen(rest);
	if (dlen + lit + 64 > dcap)
		return fci_errf(e->err, e->errcap, FC_ERR_INVALID, "pattern expands to a path too long");
	memcpy(done + dlen, rest, lit);
	dlen += lit;
	if (!open) {
		done[dlen] = '\0';
		if (++e->count > e->max)
			return fci_errf(e->err, e->errcap, FC_ERR_INVALID, "pattern names more than %zu shards", e->max);
		return e->fn(e->ctx, done);
	}
	const char *body = open + 1, *dots = strstr(body, "..");
	size_t blen = (size_t)(close - body);
	long long a, b;
	int pa, pb, rc;
	if (dots && dots < close && !memchr(body, ',', blen) &&
	    parse_bound(body, (size_t)(dots - body), &a, &pa) == 0 &&
	    parse_bound(dots + 2, (size_t)(close - dots - 2), &b, &pb) == 0) {
		int width = pa || pb ? (int)((size_t)(dots - body) > (size_t)(close - dots - 2)
						     ? (size_t)(dots - body)
						     : (size_t)(close - dots - 2))
				     : 0;
		long long step = a <= b ? 1 : -1;
		for (long long v = a;; v += step) {
			int n = v < 0 ? snprintf(done + dlen, 32, "-%0*lld", width ? width - 1 : 0, -v)
				      : snprintf(done + dlen, 32, "%0*lld", width, v);
			if ((rc = expand_rec(e, done, dlen + (size_t)n, dcap, close + 1)) != 0)
				return rc;
			if (v == b)
				break;
		}
		return 0;
	}
	if (!memchr(body, ',', blen)) {
		/* "{x}" is kept as written, as braceexpand does */
		if (dlen + blen + 2 > dcap)
			return fci_errf(e->err, e->errcap, FC_ERR_INVALID, "pattern expands to a path too long");
		memcpy(done + dlen, open, blen + 2);
		return expand_rec(e, done, dlen + blen + 2, dcap, close + 1);
	}
	for (const char *p = body; p <= close;) {
		const char *comma = memchr(p, ',', (size_t)(close - p));
		const char *end = comma ? comma : close;
		size_t n = (size_t)(end - p);
		if (dlen + n + 64 > dcap)
			return fci_errf(e->err, e->errcap, FC_ERR_INVALID, "pattern expands to a path too long");
		memcpy(done + dlen, p, n);
		if ((rc = expand_rec(e, done, dlen + n, dcap, close + 1)) != 0)
			return rc;
		p = end + 1;
	}
	return 0;
}

int fci_wds_expand(const char *pattern, size_t max, int (*fn)(void *ctx, const char *path), void *ctx, char *err,
		   size_t errcap)
{
	struct expand e = { .max = max, .fn = fn, .ctx = ctx, .err = err, .errcap = errcap };
	size_t cap = strlen(pattern) + 4096;
	char *done = malloc(cap);
	if (!done)
		return fci_errf(err, errcap, FC_ERR_NOMEM, "out of memory");
	int rc = expand_rec(&e, done, 0, cap, pattern);
	free(done);
	return rc;
}

/* ---- finding the shards ---- */

static const char *const suffixes[] = { ".tar.gz", ".tar.zst", ".tar.zstd", ".tar.xz", ".tar.bz2", ".tgz", ".tar" };

/* The length of name's tar suffix, 0 when it has none. */
static size_t tar_suffix(const char *name)
{
	size_t n = strlen(name);
	for (size_t k = 0; k < sizeof suffixes / sizeof *suffixes; k++) {
		size_t s = strlen(suffixes[k]);
		if (n > s && strcmp(name + n - s, suffixes[k]) == 0)
			return s;
	}
	return 0;
}

static int split_of(const char *name, size_t n)
{
	if (n == 5 && memcmp(name, "train", 5) == 0)
		return FC_SPLIT_TRAIN;
	if ((n == 3 && memcmp(name, "val", 3) == 0) || (n == 5 && memcmp(name, "valid", 5) == 0) ||
	    (n == 10 && memcmp(name, "validation", 10) == 0))
		return FC_SPLIT_VAL;
	if (n == 4 && memcmp(name, "test", 4) == 0)
		return FC_SPLIT_TEST;
	return -1;
}

/* The split a folder of path names (the innermost), or FC_SPLIT_NONE. */
static int split_of_path(const char *path)
{
	int split = FC_SPLIT_NONE;
	for (const char *p = path, *s; (s = strchr(p, '/')) != NULL; p = s + 1) {
		int k = split_of(p, (size_t)(s - p));
		if (k >= 0)
			split = k;
	}
	return split;
}

/* Whether fn says yes to an entry of dir (dot names left out); fn gets
 * the entry's path, its name, its stat and depth. */
static int dir_any(const char *dir, int depth, int (*fn)(const char *path, const char *name, const struct stat *st,
							int depth))
{
	DIR *d = opendir(dir);
	if (!d)
		return 0;
	int found = 0;
	struct dirent *de;
	while (!found && (de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		char p[4200];
		struct stat st;
		snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
		if (stat(p, &st) == 0)
			found = fn(p, de->d_name, &st, depth);
	}
	closedir(d);
	return found;
}

static int is_shard(const char *path, const char *name, const struct stat *st, int depth)
{
	(void)path, (void)depth;
	return S_ISREG(st->st_mode) && tar_suffix(name);
}

static int has_shards(const char *dir)
{
	return dir_any(dir, 0, is_shard);
}

static int is_image_file(const char *name)
{
	const char *dot = strrchr(name, '.');
	return dot && (strcasecmp(dot, ".jpg") == 0 || strcasecmp(dot, ".jpeg") == 0 || strcasecmp(dot, ".png") == 0);
}

/* An image in a class folder (depth 1), or a class folder, directly or in
 * a split folder (depth 0). */
static int class_entry(const char *path, const char *name, const struct stat *st, int depth)
{
	if (depth > 0)
		return S_ISREG(st->st_mode) && is_image_file(name);
	return S_ISDIR(st->st_mode) && (dir_any(path, 1, class_entry) ||
					(split_of(name, strlen(name)) >= 0 && dir_any(path, 0, class_entry)));
}

/* Whether a folder of dir (or of its split folders) holds images at its
 * top level: a class-folder dataset, even with a stray .tar in it. */
static int has_class_folders(const char *dir, int depth)
{
	return dir_any(dir, depth, class_entry);
}

int fci_wds_is_source(const char *path)
{
	struct stat st;
	if (path[0] == '@')
		return 1;
	if (stat(path, &st) != 0)
		return strchr(path, '{') != NULL;
	if (S_ISREG(st.st_mode))
		return tar_suffix(path) != 0;
	if (!S_ISDIR(st.st_mode))
		return 0;
	int shards = has_shards(path);
	static const char *const splits[] = { "train", "val", "valid", "validation", "test" };
	for (size_t k = 0; !shards && k < sizeof splits / sizeof *splits; k++) {
		char p[4200];
		snprintf(p, sizeof p, "%s/%s", path, splits[k]);
		shards = has_shards(p);
	}
	return shards && !has_class_folders(path, 0);
}

struct lister {
	fc_dataset *d;
	size_t cap;
	size_t strip; /* bytes of a path before its shard name */
	char *err;
	size_t errcap;
};

/* A shard at path, named by `rel` without its suffix. */
static int add_shard(struct lister *l, const char *path, const char *rel)
{
	fc_dataset *d = l->d;
	while (rel[0] == '.' && rel[1] == '/')
		rel += 2;
	while (rel[0] == '/')
		rel++;
	size_t n = strlen(rel), s = tar_suffix(rel);
	if (!s)
		return fci_errf(l->err, l->errcap, FC_ERR_INVALID, "shard '%s' is not a .tar, .tar.gz, .tgz, .tar.zst, "
				".tar.xz or .tar.bz2 file", path);
	if (n - s > FC_KEY_MAX / 2)
		return fci_errf(l->err, l->errcap, FC_ERR_INVALID, "shard name '%.60s...' is too long", rel);
	if (d->n_shards == l->cap) {
		size_t ncap = l->cap ? l->cap * 2 : 64;
		fc_tar_shard *p = realloc(d->shards, ncap * sizeof *p);
		if (!p)
			return fci_errf(l->err, l->errcap, FC_ERR_NOMEM, "out of memory");
		d->shards = p;
		l->cap = ncap;
	}
	fc_tar_shard *sh = &d->shards[d->n_shards];
	memset(sh, 0, sizeof *sh);
	sh->name = fci_arena_strndup(&d->arena, rel, n - s);
	sh->path = fci_arena_strndup(&d->arena, path, strlen(path));
	if (!sh->name || !sh->path)
		return fci_errf(l->err, l->errcap, FC_ERR_NOMEM, "out of memory");
	struct stat st;
	if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
		sh->size = (uint64_t)st.st_size;
		sh->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
	}
	sh->split = split_of_path(path);
	sh->state = FC_SHARD_PENDING;
	d->n_shards++;
	return 0;
}

static int add_expanded(void *ctx, const char *path)
{
	struct lister *l = ctx;
	return add_shard(l, path, path + l->strip);
}

/* Every shard under dir (rel: its path under the root), recursively;
 * hidden names skipped, depth bounded (a link loop ends there). */
static int walk(struct lister *l, const char *dir, const char *rel, int depth)
{
	DIR *d = opendir(dir);
	char why[128];
	if (!d)
		return fci_errf(l->err, l->errcap, FC_ERR_IO, "cannot read folder '%s': %s", dir,
				fci_os_error(why, sizeof why, errno));
	int rc = 0;
	struct dirent *de;
	while (!rc && (de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		char p[4200], r[4200];
		struct stat st;
		snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
		snprintf(r, sizeof r, "%s%s%s", rel, rel[0] ? "/" : "", de->d_name);
		if (stat(p, &st) != 0)
			continue;
		if (S_ISDIR(st.st_mode) && depth < 16)
			rc = walk(l, p, r, depth + 1);
		else if (S_ISREG(st.st_mode) && tar_suffix(de->d_name))
			rc = add_shard(l, p, r);
	}
	closedir(d);
	return rc;
}

static int read_list(struct lister *l, const char *list, const char *dir)
{
	uint8_t *raw = NULL;
	size_t cap = 0, len = 0;
	char why[256];
	int rc = fci_read_file(list, (uint64_t)1 << 30, &raw, &cap, &len, why, sizeof why);
	if (rc) {
		free(raw);
		return fci_errf(l->err, l->errcap, rc, "cannot read shard list '%s': %s", list, why);
	}
	if (memchr(raw, '\0', len)) {
		free(raw);
		return fci_errf(l->err, l->errcap, FC_ERR_INVALID, "shard list '%s' is a binary file", list);
	}
	char *text = (char *)raw;
	for (size_t i = 0; !rc && i < len;) {
		size_t j = i;
		while (j < len && text[j] != '\n')
			j++;
		const char *s = text + i;
		size_t n = j - i;
		trim(&s, &n);
		i = j + 1;
		if (!n || s[0] == '#')
			continue;
		char line[4200], path[8500];
		if (n >= sizeof line) {
			rc = fci_errf(l->err, l->errcap, FC_ERR_INVALID, "shard list '%s': a path is too long", list);
			break;
		}
		memcpy(line, s, n);
		line[n] = '\0';
		if (line[0] == '/')
			snprintf(path, sizeof path, "%s", line);
		else
			snprintf(path, sizeof path, "%s/%s", dir, line);
		rc = add_shard(l, path, line);
	}
	free(raw);
	return rc;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(((const fc_tar_shard *)a)->name, ((const fc_tar_shard *)b)->name);
}

int fci_wds_scan(fc_dataset *out, const char *path, const fc_scan_opts *o, char *err, size_t errcap)
{
	struct lister l = { .d = out, .err = err, .errcap = errcap };
	char dir[4200];
	int rc = 0;
	const char *src = path[0] == '@' ? path + 1 : path;
	struct stat st;
	int exists = stat(src, &st) == 0;
	/* the root: the list's or the tar's directory, a pattern's fixed
	 * folders, or the directory itself */
	const char *brace = path[0] != '@' && !exists ? strchr(path, '{') : NULL;
	const char *end = brace ? brace : src + strlen(src);
	const char *slash = NULL;
	for (const char *p = src; p < end; p++)
		if (*p == '/')
			slash = p;
	if (exists && S_ISDIR(st.st_mode) && path[0] != '@')
		snprintf(dir, sizeof dir, "%s", src);
	else if (!slash)
		snprintf(dir, sizeof dir, ".");
	else if (slash == src)
		snprintf(dir, sizeof dir, "/");
	else
		snprintf(dir, sizeof dir, "%.*s", (int)(slash - src), src);
	out->root = fci_arena_strndup(&out->arena, dir, strlen(dir));
	out->label_field = fci_arena_strndup(&out->arena, o && o->label_field ? o->label_field : "label",
					     strlen(o && o->label_field ? o->label_field : "label"));
	if (!out->root || !out->label_field)
		return fci_errf(err, errcap, FC_ERR_NOMEM, "out of memory");
	if (path[0] == '@') {
		if (!exists)
			return fci_errf(err, errcap, FC_ERR_NOT_FOUND, "no shard list '%s'", src);
		rc = read_list(&l, src, dir);
	} else if (brace) {
		l.strip = slash ? (size_t)(slash - src) + 1 : 0;
		rc = fci_wds_expand(path, FCI_WDS_EXPAND_MAX, add_expanded, &l, err, errcap);
	} else if (S_ISDIR(st.st_mode)) {
		rc = walk(&l, src, "", 0);
	} else {
		rc = add_shard(&l, src, slash ? slash + 1 : src);
	}
	if (rc)
		return rc;
	if (out->n_shards > 1)
		qsort(out->shards, out->n_shards, sizeof *out->shards, by_name);
	for (size_t i = 1; i < out->n_shards; i++)
		if (strcmp(out->shards[i - 1].name, out->shards[i].name) == 0)
			return fci_errf(err, errcap, FC_ERR_EXISTS, "two shards are named '%s' ('%s' and '%s')",
					out->shards[i].name, out->shards[i - 1].path, out->shards[i].path);
	if (o && o->lazy)
		return 0;
	return fc_dataset_read_shards(out, NULL, NULL, o ? o->threads : 0, err, errcap);
}

/* ---- reading the shards ---- */

struct shard_result {
	fci_wds_samples s;
	int rc;
};

static void read_one(const fc_tar_shard *sh, const char *field, struct shard_result *res)
{
	fci_tar *t = NULL;
	char why[MSGLEN];
	int rc = fci_tar_open_file(&t, sh->path, why, sizeof why);
	if (rc) {
		memset(&res->s, 0, sizeof res->s);
		res->rc = push(&res->s, strdup("#shard"), NULL, dupf("cannot read shard '%s': %s", sh->path, why),
			       NULL, 0);
		return;
	}
	res->rc = fci_wds_group(t, sh->path, field, &res->s);
	fci_tar_free(t);
}

static int entry_by_key(const void *a, const void *b)
{
	return strcmp(((const fc_entry *)a)->key, ((const fc_entry *)b)->key);
}

/* The samples of shard k into ds's entries. */
static int add_samples(fc_dataset *ds, size_t k, const fci_wds_samples *s, size_t *cap, char *err, size_t errcap)
{
	const fc_tar_shard *sh = &ds->shards[k];
	size_t nl = strlen(sh->name);
	char key[FC_KEY_MAX + 2];
	for (size_t i = 0; i < s->n; i++) {
		const fci_wds_sample *m = &s->v[i];
		if (nl + 1 + strlen(m->key) > FC_KEY_MAX)
			return fci_errf(err, errcap, FC_ERR_INVALID, "item key '%s/%.60s...' is longer than %d bytes",
					sh->name, m->key, FC_KEY_MAX);
		snprintf(key, sizeof key, "%s/%s", sh->name, m->key);
		if (ds->n == *cap) {
			size_t ncap = *cap ? *cap * 2 : 1024;
			fc_entry *p = realloc(ds->entries, ncap * sizeof *p);
			if (!p)
				return fci_errf(err, errcap, FC_ERR_NOMEM, "out of memory");
			ds->entries = p;
			*cap = ncap;
		}
		fc_entry *e = &ds->entries[ds->n];
		memset(e, 0, sizeof *e);
		e->key = fci_arena_strndup(&ds->arena, key, strlen(key));
		e->path = sh->path;
		e->label = m->label ? fci_arena_strndup(&ds->arena, m->label, strlen(m->label)) : NULL;
		e->bad = m->bad ? fci_arena_strndup(&ds->arena, m->bad, strlen(m->bad)) : NULL;
		e->hash = (const uint8_t *)fci_arena_strndup(&ds->arena, (const char *)m->hash, FC_HASH_LEN);
		if (!e->key || !e->hash || (m->label && !e->label) || (m->bad && !e->bad))
			return fci_errf(err, errcap, FC_ERR_NOMEM, "out of memory");
		e->split = sh->split;
		e->size = sh->size;
		e->mtime_ns = sh->mtime_ns;
		e->shard = (uint32_t)k;
		e->member = m->member;
		ds->n++;
	}
	ds->skipped += s->skipped;
	return 0;
}

int fc_dataset_read_shards(fc_dataset *ds, int (*keep)(void *ctx, const fc_tar_shard *sh), void *keep_ctx,
			   int threads, char *err, size_t errcap)
{
	size_t nread = 0, cap = ds->n;
	size_t *idx = malloc((ds->n_shards ? ds->n_shards : 1) * sizeof *idx);
	if (!idx)
		return fci_errf(err, errcap, FC_ERR_NOMEM, "out of memory");
	for (size_t k = 0; k < ds->n_shards; k++) {
		fc_tar_shard *sh = &ds->shards[k];
		if (sh->state != FC_SHARD_PENDING)
			continue;
		if (keep && keep(keep_ctx, sh))
			sh->state = FC_SHARD_KEPT;
		else
			idx[nread++] = k;
	}
	struct shard_result *res = calloc(nread ? nread : 1, sizeof *res);
	if (!res) {
		free(idx);
		return fci_errf(err, errcap, FC_ERR_NOMEM, "out of memory");
	}
	int nt = threads;
	if (nt <= 0) {
		/* extract's default for its decode threads */
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		nt = ncpu > 2 ? (int)(ncpu / 2) : 1;
	}
	/* One shard per thread at a time; results land by index, so the
	 * entries do not depend on which thread read what when. */
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
	for (size_t k = 0; k < nread; k++)
		read_one(&ds->shards[idx[k]], ds->label_field, &res[k]);
	int rc = 0;
	for (size_t k = 0; k < nread; k++) {
		if (!rc && res[k].rc)
			rc = fci_errf(err, errcap, res[k].rc, "out of memory");
		if (!rc)
			rc = add_samples(ds, idx[k], &res[k].s, &cap, err, errcap);
		if (!rc)
			ds->shards[idx[k]].state = FC_SHARD_READ;
		fci_wds_samples_free(&res[k].s);
	}
	free(res);
	free(idx);
	if (rc)
		return rc;
	if (ds->n > 1)
		qsort(ds->entries, ds->n, sizeof *ds->entries, entry_by_key);
	for (size_t i = 1; i < ds->n; i++)
		if (strcmp(ds->entries[i - 1].key, ds->entries[i].key) == 0)
			return fci_errf(err, errcap, FC_ERR_EXISTS, "item '%s' is in shard '%s' and in shard '%s'",
					ds->entries[i].key, ds->entries[i - 1].path, ds->entries[i].path);
	for (size_t k = 0; k < ds->n_shards; k++)
		ds->shards[k].first = SIZE_MAX;
	for (size_t i = ds->n; i-- > 0;)
		if (ds->entries[i].hash)
			ds->shards[ds->entries[i].shard].first = i;
	return 0;
}

/* ---- which shard a key is under ---- */

long fc_dataset_shard_of(const fc_dataset *ds, const char *key)
{
	if (!ds->n_shards)
		return -1;
	for (const char *s = strrchr(key, '/'); s; s = s > key ? memrchr(key, '/', (size_t)(s - key)) : NULL) {
		size_t n = (size_t)(s - key);
		size_t lo = 0, hi = ds->n_shards;
		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;
			int c = strncmp(ds->shards[mid].name, key, n);
			if (c == 0)
				c = ds->shards[mid].name[n] != '\0';
			if (c == 0)
				return (long)mid;
			if (c < 0)
				lo = mid + 1;
			else
				hi = mid;
		}
	}
	return -1;
}

int fc_dataset_kept(const fc_dataset *ds, const char *key)
{
	long k = fc_dataset_shard_of(ds, key);
	return k >= 0 && ds->shards[k].state == FC_SHARD_KEPT;
}

/* ---- the store's view of the shards ---- */

struct prefix {
	char *name;
	uint64_t size;
	int64_t mtime_ns;
	int ok;
};

struct fc_shard_memo {
	struct prefix *slots;
	size_t cap, n;
	/* items with a vector to check, after the walk (LMDB reads do not nest) */
	struct check {
		size_t slot;
		uint8_t hash[FC_HASH_LEN];
	} *checks;
	size_t nchecks, checkcap;
};

static struct prefix *memo_find(const fc_shard_memo *m, const char *name, size_t n)
{
	if (!m->cap)
		return NULL;
	for (size_t i = (size_t)XXH3_64bits(name, n) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
		struct prefix *p = &m->slots[i];
		if (!p->name)
			return p;
		if (strncmp(p->name, name, n) == 0 && p->name[n] == '\0')
			return p;
	}
}

static int memo_grow(fc_shard_memo *m)
{
	size_t ncap = m->cap ? m->cap * 2 : 256;
	struct prefix *ns = calloc(ncap, sizeof *ns);
	if (!ns)
		return FC_ERR_NOMEM;
	fc_shard_memo old = *m;
	m->slots = ns;
	m->cap = ncap;
	for (size_t i = 0; i < old.cap; i++)
		if (old.slots[i].name)
			*memo_find(m, old.slots[i].name, strlen(old.slots[i].name)) = old.slots[i];
	/* checks hold slot numbers: renumber them */
	for (size_t c = 0; c < m->nchecks; c++) {
		const char *nm = old.slots[m->checks[c].slot].name;
		m->checks[c].slot = (size_t)(memo_find(m, nm, strlen(nm)) - m->slots);
	}
	free(old.slots);
	return 0;
}

static int memo_add(void *ctx, const fc_item *it)
{
	fc_shard_memo *m = ctx;
	for (const char *s = strchr(it->key, '/'); s; s = strchr(s + 1, '/')) {
		size_t n = (size_t)(s - it->key);
		if ((m->n + 1) * 2 > m->cap && memo_grow(m))
			return FC_ERR_NOMEM;
		struct prefix *p = memo_find(m, it->key, n);
		if (!p->name) {
			if (!(p->name = strndup(it->key, n)))
				return FC_ERR_NOMEM;
			p->size = it->size;
			p->mtime_ns = it->mtime_ns;
			p->ok = 1;
			m->n++;
		} else if (p->size != it->size || p->mtime_ns != it->mtime_ns) {
			p->ok = 0;
		}
		if (it->status == FC_ITEM_OK && p->ok) {
			if (m->nchecks == m->checkcap) {
				size_t nc = m->checkcap ? m->checkcap * 2 : 1024;
				struct check *c = realloc(m->checks, nc * sizeof *c);
				if (!c)
					return FC_ERR_NOMEM;
				m->checks = c;
				m->checkcap = nc;
			}
			m->checks[m->nchecks].slot = (size_t)(p - m->slots);
			memcpy(m->checks[m->nchecks++].hash, it->hash, FC_HASH_LEN);
		}
	}
	return 0;
}

int fc_shard_memo_open(fc_shard_memo **out, fc_store *s, const uint8_t exid[FC_HASH_LEN], char *err, size_t errcap)
{
	fc_shard_memo *m = calloc(1, sizeof *m);
	*out = NULL;
	if (!m)
		return fci_errf(err, errcap, FC_ERR_NOMEM, "out of memory");
	int rc = fc_store_foreach_item(s, memo_add, m);
	for (size_t c = 0; !rc && c < m->nchecks; c++) {
		struct prefix *p = &m->slots[m->checks[c].slot];
		if (!p->ok)
			continue;
		int has = fc_store_has(s, exid, m->checks[c].hash);
		if (has < 0)
			rc = has;
		else if (!has)
			p->ok = 0;
	}
	free(m->checks);
	m->checks = NULL;
	if (rc) {
		rc = rc == FC_ERR_NOMEM ? fci_errf(err, errcap, rc, "out of memory")
					: fci_errf(err, errcap, rc, "cannot read items: %s", fc_store_errmsg(s));
		fc_shard_memo_free(m);
		return rc;
	}
	*out = m;
	return 0;
}

int fc_shard_memo_unchanged(void *memo, const fc_tar_shard *sh)
{
	const fc_shard_memo *m = memo;
	if (!m)
		return 0; /* no memo (--rehash): every shard is read */
	const struct prefix *p = memo_find(m, sh->name, strlen(sh->name));
	return p && p->name && p->ok && p->size == sh->size && p->mtime_ns == sh->mtime_ns;
}

void fc_shard_memo_free(fc_shard_memo *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->cap; i++)
		free(m->slots[i].name);
	free(m->slots);
	free(m->checks);
	free(m);
}

/* ---- one sample's image, for pictures of items ---- */

int fc_wds_locate(const char *root, const char *key, char *path, size_t cap)
{
	/* The shard name may hold '/', and so may the sample key: every
	 * split is tried, the shortest shard name first. */
	for (const char *slash = strchr(key, '/'); slash; slash = strchr(slash + 1, '/')) {
		for (size_t k = 0; k < sizeof suffixes / sizeof *suffixes; k++) {
			struct stat st;
			int n = snprintf(path, cap, "%s/%.*s%s", root, (int)(slash - key), key, suffixes[k]);
			if (n > 0 && (size_t)n < cap && stat(path, &st) == 0 && S_ISREG(st.st_mode))
				return (int)(slash + 1 - key);
		}
	}
	return -1;
}

struct want {
	const char *key;
	size_t i;
	int kind; /* the best image kind read so far, K_N for none */
	uint8_t *data;
	size_t len;
};

static int by_want_key(const void *a, const void *b)
{
	return strcmp(((const struct want *)a)->key, ((const struct want *)b)->key);
}

int fc_wds_images(const char *path, const char *const *keys, size_t n,
		  int (*fn)(void *ctx, size_t i, const uint8_t *data, size_t len), void *ctx, char *err, size_t errcap)
{
	struct want *w = calloc(n + 1, sizeof *w);
	fci_tar *t = NULL;
	int rc;
	if (!w)
		return fci_errf(err, errcap, FC_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < n; i++)
		w[i] = (struct want){ .key = keys[i], .i = i, .kind = K_N };
	qsort(w, n, sizeof *w, by_want_key);
	if ((rc = fci_tar_open_file(&t, path, err, errcap)) != 0)
		goto out;
	for (;;) {
		const char *name;
		int64_t size;
		int regular;
		uint32_t num;
		int r = fci_tar_next(t, &name, &size, &regular, &num);
		if (r == 0)
			break;
		if (r < 0) { /* what came before the damage is given */
			rc = fci_errf(err, errcap, r, "shard '%s' is damaged: %s", path, fci_tar_errmsg(t));
			break;
		}
		while (name[0] == '.' && name[1] == '/')
			name += 2;
		while (name[0] == '/')
			name++;
		const char *slash = strrchr(name, '/'), *base = slash ? slash + 1 : name;
		const char *dot = strchr(base, '.');
		int k = dot && dot != base && regular ? ext_kind(dot + 1) : -1;
		if (k < 0 || k >= 3 || size > FCI_WDS_MEMBER_MAX)
			continue;
		char key[4096];
		if ((size_t)(dot - name) >= sizeof key)
			continue;
		memcpy(key, name, (size_t)(dot - name));
		key[dot - name] = '\0';
		struct want probe = { .key = key }, *hit = bsearch(&probe, w, n, sizeof *w, by_want_key);
		if (!hit || hit->kind <= k) /* .jpg before .jpeg before .png, the grouping's order */
			continue;
		size_t cap = 0;
		free(hit->data);
		hit->data = NULL;
		if ((r = fci_tar_read(t, &hit->data, &cap, &hit->len)) != 0) {
			rc = fci_errf(err, errcap, r, "shard '%s' is damaged in member '%s': %s", path, name,
				      fci_tar_errmsg(t));
			free(hit->data);
			hit->data = NULL;
			break;
		}
		hit->kind = k;
	}
	for (size_t j = 0; j < n; j++) {
		int r = w[j].data ? fn(ctx, w[j].i, w[j].data, w[j].len) : 0;
		if (r && !rc)
			rc = r; /* fn's own error */
	}
out:
	fci_tar_free(t);
	for (size_t j = 0; j < n; j++)
		free(w[j].data);
	free(w);
	return rc;
}
