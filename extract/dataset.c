/*
 * dataset.c - find a dataset's images: a class-per-folder directory (with
 * an optional split level) or a labeled CSV, into a list of entries sorted
 * by item key. Also the stable hash split and the file content hash.
 *
 * Strings live in a block arena owned by the dataset: entries are built
 * once and never edited, and 70,000 small mallocs would cost more than the
 * scan.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "featcache/extract.h"
#include "util/util.h"

/* ---- the string arena ---- */

#define BLOCK (64 * 1024)

struct block {
	struct block *next;
	size_t used, cap;
	char data[];
};

/* Copy len bytes of s and a NUL into the arena whose head is *head. */
static char *arena_strndup(char **head, const char *s, size_t len)
{
	struct block *b = (struct block *)*head;
	if (!b || b->cap - b->used < len + 1) {
		size_t cap = len + 1 > BLOCK ? len + 1 : BLOCK;
		struct block *nb = malloc(sizeof *nb + cap);
		if (!nb)
			return NULL;
		nb->next = b;
		nb->used = 0;
		nb->cap = cap;
		*head = (char *)nb;
		b = nb;
	}
	char *p = b->data + b->used;
	memcpy(p, s, len);
	p[len] = '\0';
	b->used += len + 1;
	return p;
}

static void arena_free(char *head)
{
	for (struct block *b = (struct block *)head; b;) {
		struct block *next = b->next;
		free(b);
		b = next;
	}
}

/* ---- building the list ---- */

struct builder {
	fc_dataset *d;
	size_t cap;
	char *err;
	size_t errcap;
};

static int say(struct builder *b, int code, const char *fmt, ...) FC_PRINTF(3, 4);
static int say(struct builder *b, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fci_verrf(b->err, b->errcap, code, fmt, ap);
	va_end(ap);
	return code;
}

static int has_control(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return 1;
	return 0;
}

/* s with control characters and backslashes escaped C-style into out
 * (4 * strlen(s) + 1 bytes): one line, printable, and two such names
 * never give the same text. */
static void escape_name(char *out, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '\\' || ch == '\n' || ch == '\r' || ch == '\t') {
			*out++ = '\\';
			*out++ = ch == '\n' ? 'n' : ch == '\r' ? 'r' : ch == '\t' ? 't' : '\\';
		} else if (ch < 0x20 || ch == 0x7f) {
			*out++ = '\\';
			*out++ = 'x';
			*out++ = hex[ch >> 4];
			*out++ = hex[ch & 15];
		} else {
			*out++ = (char)ch;
		}
	}
	*out = '\0';
}

static int add_entry(struct builder *b, const char *key, const char *path, const char *label, int split,
		     int line)
{
	fc_dataset *d = b->d;
	/* A newline in a key would shift every key after it in embed's key
	 * list; such a file becomes a failed item under its escaped name. */
	char printable[4 * FC_KEY_MAX + 1];
	const char *bad = NULL;
	if (has_control(key)) {
		if (strlen(key) > FC_KEY_MAX)
			return say(b, FC_ERR_INVALID, "item key '%.60s...' is longer than %d bytes", key, FC_KEY_MAX);
		escape_name(printable, key);
		key = printable; /* may now equal a real name (rare): see fc_dataset_scan */
		if (label && has_control(label))
			label = NULL;
		bad = "its name holds a newline or another control character; rename it";
	}
	if (strlen(key) > FC_KEY_MAX)
		return say(b, FC_ERR_INVALID, "item key '%.60s...' is longer than %d bytes", key, FC_KEY_MAX);
	if (d->n == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 1024;
		fc_entry *p = realloc(d->entries, cap * sizeof *p);
		if (!p)
			return say(b, FC_ERR_NOMEM, "out of memory");
		d->entries = p;
		b->cap = cap;
	}
	fc_entry *e = &d->entries[d->n];
	e->key = arena_strndup(&d->arena, key, strlen(key));
	e->path = arena_strndup(&d->arena, path, strlen(path));
	e->label = label ? arena_strndup(&d->arena, label, strlen(label)) : NULL;
	if (!e->key || !e->path || (label && !e->label))
		return say(b, FC_ERR_NOMEM, "out of memory");
	e->split = split;
	e->line = line;
	e->bad = bad;
	d->n++;
	return 0;
}

static int is_image_name(const char *name)
{
	const char *dot = strrchr(name, '.');
	return dot && (strcasecmp(dot, ".jpg") == 0 || strcasecmp(dot, ".jpeg") == 0 ||
		       strcasecmp(dot, ".png") == 0);
}

/* Split names a dataset may use for its top level. */
static int split_of_name(const char *name)
{
	if (strcmp(name, "train") == 0)
		return FC_SPLIT_TRAIN;
	if (strcmp(name, "val") == 0 || strcmp(name, "valid") == 0 || strcmp(name, "validation") == 0)
		return FC_SPLIT_VAL;
	if (strcmp(name, "test") == 0)
		return FC_SPLIT_TEST;
	return -1;
}

/* ---- directories ---- */

struct walk {
	struct builder *b;
	char path[8192]; /* the directory being read, then "/" and the name */
	size_t root_len; /* length of the dataset root in path */
	int split_level; /* 1: the first key component is a split */
};

static int walk_dir(struct walk *w, size_t len, int depth);

/* The label of a key: its first directory (the second with a split level);
 * NULL for files above that depth. Writes into buf. */
static const char *label_of(const char *key, int split_level, char *buf, size_t cap)
{
	const char *p = key;
	if (split_level) {
		p = strchr(p, '/');
		if (!p)
			return NULL;
		p++;
	}
	const char *slash = strchr(p, '/');
	if (!slash || (size_t)(slash - p) >= cap)
		return NULL;
	memcpy(buf, p, (size_t)(slash - p));
	buf[slash - p] = '\0';
	return buf;
}

static int visit_file(struct walk *w)
{
	const char *key = w->path + w->root_len + 1;
	char lb[4096];
	const char *label = label_of(key, w->split_level, lb, sizeof lb);
	int split = FC_SPLIT_NONE;
	if (w->split_level) {
		const char *slash = strchr(key, '/');
		if (!slash)
			return 0; /* a file beside the split folders: not part of any split */
		char sb[16];
		size_t n = (size_t)(slash - key);
		if (n >= sizeof sb)
			return 0;
		memcpy(sb, key, n);
		sb[n] = '\0';
		split = split_of_name(sb);
	}
	return add_entry(w->b, key, w->path, label, split, 0);
}

static int walk_dir(struct walk *w, size_t len, int depth)
{
	if (depth > 64)
		return say(w->b, FC_ERR_INVALID, "'%s' nests more than 64 directories deep", w->path);
	DIR *dir = opendir(w->path);
	if (!dir) {
		int e = errno;
		char why[128];
		return say(w->b, e == ENOENT ? FC_ERR_NOT_FOUND : FC_ERR_IO, "cannot read directory '%s': %s",
			   w->path, fci_os_error(why, sizeof why, e));
	}
	int err = 0;
	struct dirent *de;
	while (!err && (errno = 0, de = readdir(dir)) != NULL) {
		const char *name = de->d_name;
		if (name[0] == '.')
			continue; /* ., .., and hidden files (.DS_Store, .complete markers) */
		size_t nl = strlen(name);
		if (len + 1 + nl >= sizeof w->path) {
			err = say(w->b, FC_ERR_INVALID, "path too long under '%s'", w->path);
			break;
		}
		w->path[len] = '/';
		memcpy(w->path + len + 1, name, nl + 1);
		struct stat st;
		if (stat(w->path, &st) != 0) {
			/* a dangling symlink: nothing to read, nothing to list */
			w->path[len] = '\0';
			continue;
		}
		if (S_ISDIR(st.st_mode))
			err = walk_dir(w, len + 1 + nl, depth + 1);
		else if (S_ISREG(st.st_mode) && is_image_name(name))
			err = visit_file(w);
		else
			w->b->d->skipped++;
		w->path[len] = '\0';
	}
	if (!err && errno) {
		char why[128];
		err = say(w->b, FC_ERR_IO, "cannot read directory '%s': %s", w->path, fci_os_error(why, sizeof why, errno));
	}
	closedir(dir);
	return err;
}

/* A split level is there when every top-level entry that is a directory is
 * named like a split, and there is at least one. */
static int has_split_level(const char *root)
{
	DIR *dir = opendir(root);
	if (!dir)
		return 0;
	int n_split = 0, n_other = 0;
	struct dirent *de;
	char p[8192];
	while ((de = readdir(dir)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		struct stat st;
		snprintf(p, sizeof p, "%s/%s", root, de->d_name);
		if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode))
			continue;
		if (split_of_name(de->d_name) >= 0)
			n_split++;
		else
			n_other++;
	}
	closedir(dir);
	return n_split > 0 && n_other == 0;
}

static int scan_dir(struct builder *b, const char *root)
{
	struct walk *w = malloc(sizeof *w);
	if (!w)
		return say(b, FC_ERR_NOMEM, "out of memory");
	w->b = b;
	size_t len = strlen(root);
	while (len > 1 && root[len - 1] == '/')
		len--;
	if (len >= sizeof w->path / 2) {
		free(w);
		return say(b, FC_ERR_INVALID, "dataset path too long");
	}
	memcpy(w->path, root, len);
	w->path[len] = '\0';
	w->root_len = len;
	w->split_level = has_split_level(w->path);
	int err = walk_dir(w, len, 0);
	free(w);
	return err;
}

/* ---- CSV ---- */

/* One CSV record's fields, RFC 4180: commas, CRLF or LF, double quotes
 * around fields that hold them, "" for a quote inside. */
struct csv {
	const char *p, *end;
	int line; /* line of the record being parsed */
	int next_line;
	char *field[3];
	size_t nfield;
	char *buf;
	size_t cap;
};

/* Parse one record into c->buf; fields point into it. Returns 1 for a
 * record, 0 at the end, FC_ERR_CORRUPT for a malformed one (fields > 3
 * count as an error too, reported by the caller). */
static int csv_record(struct csv *c, struct builder *b, size_t *nfields)
{
	c->line = c->next_line;
	if (c->p >= c->end)
		return 0;
	size_t need = (size_t)(c->end - c->p) + 4;
	if (need > c->cap) {
		char *nb = realloc(c->buf, need);
		if (!nb)
			return say(b, FC_ERR_NOMEM, "out of memory");
		c->buf = nb;
		c->cap = need;
	}
	char *o = c->buf;
	size_t nf = 0;
	for (;;) {
		char *start = o;
		if (c->p < c->end && *c->p == '"') {
			c->p++;
			for (;;) {
				if (c->p >= c->end)
					return say(b, FC_ERR_CORRUPT, "line %d: quoted field never closed", c->line);
				char ch = *c->p++;
				if (ch == '"') {
					if (c->p < c->end && *c->p == '"') {
						*o++ = '"';
						c->p++;
						continue;
					}
					break;
				}
				if (ch == '\n')
					c->next_line++;
				*o++ = ch;
			}
			if (c->p < c->end && *c->p != ',' && *c->p != '\n' && *c->p != '\r')
				return say(b, FC_ERR_CORRUPT, "line %d: text after a closing quote", c->line);
		} else {
			while (c->p < c->end && *c->p != ',' && *c->p != '\n' && *c->p != '\r') {
				if (*c->p == '"')
					return say(b, FC_ERR_CORRUPT, "line %d: quote inside an unquoted field", c->line);
				*o++ = *c->p++;
			}
		}
		*o++ = '\0';
		if (nf < 3)
			c->field[nf] = start;
		nf++;
		if (c->p < c->end && *c->p == ',') {
			c->p++;
			continue;
		}
		break;
	}
	if (c->p < c->end && *c->p == '\r')
		c->p++;
	if (c->p < c->end && *c->p == '\n')
		c->p++;
	c->next_line++;
	*nfields = nf;
	return 1;
}

/* Make a CSV path a key: no absolute paths, no "..", no empty components;
 * "./" and repeated slashes dropped. */
static int csv_key(struct builder *b, int line, const char *path, char *key, size_t cap)
{
	if (path[0] == '/')
		return say(b, FC_ERR_INVALID, "line %d: path '%s' is absolute; CSV paths are relative to the CSV",
			   line, path);
	size_t o = 0;
	const char *p = path;
	while (*p) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);
		if (n == 2 && p[0] == '.' && p[1] == '.')
			return say(b, FC_ERR_INVALID, "line %d: path '%s' leaves the dataset ('..')", line, path);
		if (n && !(n == 1 && p[0] == '.')) {
			if (o + n + 2 > cap)
				return say(b, FC_ERR_INVALID, "line %d: path too long", line);
			if (o)
				key[o++] = '/';
			memcpy(key + o, p, n);
			o += n;
		}
		p += n + (slash != NULL);
	}
	key[o] = '\0';
	if (o == 0)
		return say(b, FC_ERR_INVALID, "line %d: empty path", line);
	return 0;
}

static int scan_csv(struct builder *b, const char *csv_path)
{
	uint8_t *raw = NULL;
	char why[128];
	size_t cap = 0, len = 0;
	int err = fci_read_file(csv_path, (uint64_t)1 << 40, &raw, &cap, &len, why, sizeof why);
	if (err) {
		free(raw);
		return say(b, err, "%s", why); /* the caller names the file */
	}
	const char *text = (const char *)raw;
	/* An image or another binary file given as the dataset: text has no
	 * NUL, and JPEG and PNG headers hold some in their first bytes. */
	if (is_image_name(csv_path) || memchr(text, '\0', len < 4096 ? len : 4096)) {
		free(raw);
		return say(b, FC_ERR_INVALID, "%s, not a dataset (a directory or a CSV)",
			   is_image_name(csv_path) ? "an image" : "a binary file");
	}
	/* the CSV's directory, which paths are relative to */
	char dir[4096];
	const char *slash = strrchr(csv_path, '/');
	if (!slash)
		strcpy(dir, ".");
	else if ((size_t)(slash - csv_path) + 1 > sizeof dir)
		err = say(b, FC_ERR_INVALID, "CSV path too long");
	else {
		memcpy(dir, csv_path, (size_t)(slash - csv_path));
		dir[slash - csv_path] = '\0';
		if (!dir[0])
			strcpy(dir, "/");
	}
	struct csv c = { .p = text, .end = text + len, .next_line = 1 };
	if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
		c.p += 3; /* a UTF-8 byte-order mark, as spreadsheets write */
	size_t nf = 0;
	int first = 1, r = 0;
	char key[FC_KEY_MAX + 2], path[FC_KEY_MAX + 4200];
	while (!err && (r = csv_record(&c, b, &nf)) == 1) {
		if (nf == 1 && c.field[0][0] == '\0')
			continue; /* a blank line */
		if (nf < 2 || nf > 3) {
			err = say(b, FC_ERR_CORRUPT, "line %d: %zu fields; expected path,label[,split]", c.line, nf);
			break;
		}
		if (first) {
			first = 0;
			if (strcasecmp(c.field[0], "path") == 0 && strcasecmp(c.field[1], "label") == 0)
				continue; /* the header row */
		}
		int split = FC_SPLIT_NONE;
		if (nf == 3 && c.field[2][0] && (split = split_of_name(c.field[2])) < 0) {
			err = say(b, FC_ERR_INVALID, "line %d: unknown split '%s' (train, val or test)", c.line,
				  c.field[2]);
			break;
		}
		if ((err = csv_key(b, c.line, c.field[0], key, sizeof key)) != 0)
			break;
		snprintf(path, sizeof path, "%s/%s", dir, key);
		err = add_entry(b, key, path, c.field[1][0] ? c.field[1] : NULL, split, c.line);
	}
	if (!err && r < 0)
		err = r;
	free(c.buf);
	free(raw);
	return err;
}

/* ---- the whole scan ---- */

static int by_key(const void *a, const void *b)
{
	return strcmp(((const fc_entry *)a)->key, ((const fc_entry *)b)->key);
}

int fc_dataset_scan(fc_dataset *out, const char *path, char *err, size_t errcap)
{
	memset(out, 0, sizeof *out);
	struct builder b = { .d = out, .err = err, .errcap = errcap };
	if (err && errcap)
		err[0] = '\0';
	struct stat st;
	char why[128];
	/* The caller names the dataset: the reason alone. */
	if (stat(path, &st) != 0)
		return say(&b, errno == ENOENT ? FC_ERR_NOT_FOUND : FC_ERR_IO, "%s", fci_os_error(why, sizeof why, errno));
	int rc;
	if (S_ISDIR(st.st_mode))
		rc = scan_dir(&b, path);
	else if (!S_ISREG(st.st_mode))
		rc = say(&b, FC_ERR_INVALID, "not a dataset (a directory or a CSV)");
	else {
		out->from_csv = 1;
		rc = scan_csv(&b, path);
	}
	if (!rc) {
		if (out->n > 1)
			qsort(out->entries, out->n, sizeof *out->entries, by_key);
		for (size_t i = 1; i < out->n; i++)
			if (strcmp(out->entries[i - 1].key, out->entries[i].key) == 0) {
				const fc_entry *a = &out->entries[i - 1], *e = &out->entries[i];
				if (!a->bad != !e->bad) {
					/* An escaped name that spells a real file's
					 * name: the real file keeps the key. */
					size_t drop = a->bad ? i - 1 : i;
					memmove(&out->entries[drop], &out->entries[drop + 1],
						(out->n - drop - 1) * sizeof *out->entries);
					out->n--;
					i--;
					continue;
				}
				int l1 = a->line < e->line ? a->line : e->line, l2 = a->line ^ e->line ^ l1;
				rc = say(&b, FC_ERR_EXISTS, "line %d: '%s' is listed again (first on line %d)", l2,
					 e->key, l1);
				break;
			}
	}
	if (rc)
		fc_dataset_free(out);
	return rc;
}

void fc_dataset_free(fc_dataset *d)
{
	if (!d)
		return;
	free(d->entries);
	arena_free(d->arena);
	memset(d, 0, sizeof *d);
}

int fc_hash_split(const char *key, double val_fraction)
{
	/* the top 53 bits as a fraction in [0, 1) */
	double u = (double)(XXH3_64bits(key, strlen(key)) >> 11) * (1.0 / 9007199254740992.0);
	return u < val_fraction ? FC_SPLIT_VAL : FC_SPLIT_TRAIN;
}

int fc_hash_file(const char *path, uint8_t hash[16], uint64_t *size, int64_t *mtime_ns, char *err,
		 size_t errcap)
{
	struct builder b = { .err = err, .errcap = errcap };
	char why[128];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return say(&b, errno == ENOENT ? FC_ERR_NOT_FOUND : FC_ERR_IO, "cannot read '%s': %s", path,
			   fci_os_error(why, sizeof why, errno));
	struct stat st;
	if (fstat(fd, &st) != 0) {
		int e = errno;
		close(fd);
		return say(&b, FC_ERR_IO, "cannot stat '%s': %s", path, fci_os_error(why, sizeof why, e));
	}
	XXH3_state_t *xs = XXH3_createState();
	if (!xs) {
		close(fd);
		return say(&b, FC_ERR_NOMEM, "out of memory");
	}
	XXH3_128bits_reset(xs);
	static _Thread_local char buf[1 << 16];
	int rc = 0;
	for (;;) {
		ssize_t got = read(fd, buf, sizeof buf);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			rc = say(&b, FC_ERR_IO, "cannot read '%s': %s", path, fci_os_error(why, sizeof why, errno));
			break;
		}
		if (got == 0)
			break;
		XXH3_128bits_update(xs, buf, (size_t)got);
	}
	if (!rc) {
		XXH128_canonical_t c;
		XXH128_canonicalFromHash(&c, XXH3_128bits_digest(xs));
		memcpy(hash, c.digest, 16);
		*size = (uint64_t)st.st_size;
		*mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
	}
	XXH3_freeState(xs);
	close(fd);
	return rc;
}
