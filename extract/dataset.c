/*
 * dataset.c - find a dataset's images: a class-per-folder directory (with
 * an optional split level) or a labeled CSV, into a list of entries sorted
 * by item key. Also the stable hash split and the file content hash.
 *
 * Symbolic links follow one rule in both layouts: a link is followed when
 * where it resolves to is inside the dataset root (the directory, or the
 * CSV's directory), or anywhere with FC_DATASET_FOLLOW_OUTSIDE; a link
 * that leads outside, a broken link and a directory loop become entries
 * with `bad` set (error records of their own key), never an aborted scan.
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

#include "extract/wds.h"
#include "featcache/extract.h"
#include "util/util.h"

/* ---- the string arena ---- */

#define BLOCK (64 * 1024)

struct block {
	struct block *next;
	size_t used, cap;
	char data[];
};

/* Copy len bytes of s and a NUL into the arena whose head is *head
 * (wds.c builds its entries in the same arena). */
char *fci_arena_strndup(char **head, const char *s, size_t len)
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
	unsigned flags;  /* FC_DATASET_* */
	char *root;      /* the dataset root, resolved (realpath; malloc'd) */
	size_t root_len;
};

/* Room for a message about a link: its target and where it resolves to. */
#define WHYCAP (2 * 4096 + 200)

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

/* Add an entry; bad (NULL for a good one) says why it cannot be an item. */
static int add_entry(struct builder *b, const char *key, const char *path, const char *label, int split,
		     int line, const char *bad)
{
	fc_dataset *d = b->d;
	/* A newline in a key would shift every key after it in embed's key
	 * list; such a file becomes a failed item under its escaped name. */
	char printable[4 * FC_KEY_MAX + 1];
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
	memset(e, 0, sizeof *e);
	e->key = fci_arena_strndup(&d->arena, key, strlen(key));
	e->path = fci_arena_strndup(&d->arena, path, strlen(path));
	e->label = label ? fci_arena_strndup(&d->arena, label, strlen(label)) : NULL;
	e->bad = bad ? fci_arena_strndup(&d->arena, bad, strlen(bad)) : NULL;
	if (!e->key || !e->path || (label && !e->label) || (bad && !e->bad))
		return say(b, FC_ERR_NOMEM, "out of memory");
	e->split = split;
	e->line = line;
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

/* ---- symbolic links ---- */

/* Resolve the dataset root dir, which links are checked against. */
static int set_root(struct builder *b, const char *dir)
{
	b->root = realpath(dir, NULL);
	if (!b->root) {
		char os[128];
		int e = errno;
		return say(b, e == ENOENT ? FC_ERR_NOT_FOUND : FC_ERR_IO, "cannot resolve '%s': %s", dir,
			   fci_os_error(os, sizeof os, e));
	}
	b->root_len = strlen(b->root);
	return 0;
}

/* 1 when real (a resolved path) is the dataset root or under it. */
static int inside_root(const struct builder *b, const char *real)
{
	if (b->root_len == 1)
		return 1; /* the root is "/" */
	return strncmp(real, b->root, b->root_len) == 0 && (real[b->root_len] == '/' || real[b->root_len] == '\0');
}

/* What the link at path holds, for messages ("?" if it cannot be read). */
static void link_target(const char *path, char *out, size_t cap)
{
	ssize_t n = readlink(path, out, cap - 1);
	if (n < 0)
		snprintf(out, cap, "?");
	else
		out[n] = '\0';
}

enum { LINK_OK, LINK_BROKEN, LINK_OUTSIDE };

/* The link at path: LINK_OK with *st its target's stat when it may be
 * followed; LINK_BROKEN when it resolves to nothing (its target's type is
 * unknown); LINK_OUTSIDE when it resolves outside the dataset root
 * (without FC_DATASET_FOLLOW_OUTSIDE; *st is its target's). why[WHYCAP]
 * then says so, naming the target. */
static int check_link(const struct builder *b, const char *path, struct stat *st, char *why)
{
	char target[4096], os[128];
	link_target(path, target, sizeof target);
	if (stat(path, st) != 0) {
		int e = errno;
		if (e == ENOENT || e == ENOTDIR)
			snprintf(why, WHYCAP, "broken symbolic link to '%s'", target);
		else if (e == ELOOP)
			snprintf(why, WHYCAP, "symbolic link to '%s' never resolves: a loop of symbolic links", target);
		else
			snprintf(why, WHYCAP, "cannot follow symbolic link to '%s': %s", target, fci_os_error(os, sizeof os, e));
		return LINK_BROKEN;
	}
	if (b->flags & FC_DATASET_FOLLOW_OUTSIDE)
		return LINK_OK;
	char *real = realpath(path, NULL);
	if (!real) {
		snprintf(why, WHYCAP, "cannot follow symbolic link to '%s': %s", target,
			 fci_os_error(os, sizeof os, errno));
		return LINK_BROKEN;
	}
	int kind = LINK_OK;
	if (!inside_root(b, real)) {
		kind = LINK_OUTSIDE;
		if (strcmp(real, target) == 0)
			snprintf(why, WHYCAP, "symbolic link to '%s' leads outside the dataset (--follow-outside follows it)",
				 target);
		else
			snprintf(why, WHYCAP,
				 "symbolic link to '%s' leads outside the dataset, to '%s' (--follow-outside follows it)",
				 target, real);
	}
	free(real);
	return kind;
}

/* ---- directories ---- */

#define MAX_DEPTH 64

struct walk {
	struct builder *b;
	char path[8192]; /* the directory being read, then "/" and the name */
	size_t root_len; /* length of the dataset root in path */
	int split_level; /* 1: the first key component is a split */
	/* The directories being read, the root first: a directory met again
	 * on the way down is a loop. len: each one's length in path. */
	dev_t dev[MAX_DEPTH + 1];
	ino_t ino[MAX_DEPTH + 1];
	size_t len[MAX_DEPTH + 1];
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

/* The entry at w->path: an image, or (bad set) an error record of it. */
static int visit(struct walk *w, const char *bad)
{
	const char *key = w->path + w->root_len + 1;
	char lb[4096];
	const char *label = label_of(key, w->split_level, lb, sizeof lb);
	int split = FC_SPLIT_NONE;
	if (w->split_level) {
		/* A file beside the split folders is part of no split; a link
		 * that stands for a split folder is its split's error. */
		const char *slash = strchr(key, '/');
		if (!slash && !bad)
			return 0;
		char sb[16];
		size_t n = slash ? (size_t)(slash - key) : strlen(key);
		if (n >= sizeof sb)
			return 0;
		memcpy(sb, key, n);
		sb[n] = '\0';
		if ((split = split_of_name(sb)) < 0)
			return 0;
	}
	return add_entry(w->b, key, w->path, label, split, 0, bad);
}

/* A name that may be an image or a folder of them: what a broken link,
 * whose target has no type, must be to count. */
static int could_hold_images(const char *name)
{
	return is_image_name(name) || !strchr(name, '.');
}

/* The directory at w->path (st) is already being read further up: name
 * the loop in why. */
static int is_loop(const struct walk *w, int depth, const struct stat *st, int link, char *why)
{
	for (int i = 0; i <= depth; i++) {
		if (w->dev[i] != st->st_dev || w->ino[i] != st->st_ino)
			continue;
		char target[4096], back[4096 + 16];
		if (i == 0)
			snprintf(back, sizeof back, "the dataset root");
		else
			snprintf(back, sizeof back, "'%.*s'", (int)(w->len[i] - w->root_len - 1),
				 w->path + w->root_len + 1);
		if (link) {
			link_target(w->path, target, sizeof target);
			snprintf(why, WHYCAP, "symbolic link to '%s' makes a loop: back to %s", target, back);
		} else {
			snprintf(why, WHYCAP, "directory makes a loop: back to %s", back);
		}
		return 1;
	}
	return 0;
}

static int walk_dir(struct walk *w, size_t len, int depth)
{
	if (depth > MAX_DEPTH)
		return say(w->b, FC_ERR_INVALID, "'%s' nests more than %d directories deep", w->path, MAX_DEPTH);
	DIR *dir = opendir(w->path);
	if (!dir) {
		int e = errno;
		char why[128];
		return say(w->b, e == ENOENT ? FC_ERR_NOT_FOUND : FC_ERR_IO, "cannot read directory '%s': %s",
			   w->path, fci_os_error(why, sizeof why, e));
	}
	struct stat dst;
	if (fstat(dirfd(dir), &dst) != 0) {
		int e = errno;
		char why[128];
		closedir(dir);
		return say(w->b, FC_ERR_IO, "cannot stat directory '%s': %s", w->path, fci_os_error(why, sizeof why, e));
	}
	w->dev[depth] = dst.st_dev;
	w->ino[depth] = dst.st_ino;
	w->len[depth] = len;
	int err = 0;
	struct dirent *de;
	char *why = malloc(WHYCAP);
	if (!why) {
		closedir(dir);
		return say(w->b, FC_ERR_NOMEM, "out of memory");
	}
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
		if (lstat(w->path, &st) != 0) {
			w->path[len] = '\0'; /* gone since readdir */
			continue;
		}
		/* A link's own entry when it cannot be followed (broken, outside
		 * the root, or a loop) and would have given images otherwise. */
		int link = S_ISLNK(st.st_mode);
		int kind = link ? check_link(w->b, w->path, &st, why) : LINK_OK;
		if (kind == LINK_BROKEN && could_hold_images(name))
			err = visit(w, why);
		else if (kind == LINK_BROKEN)
			w->b->d->skipped++;
		else if (S_ISDIR(st.st_mode) && (kind == LINK_OUTSIDE || is_loop(w, depth, &st, link, why)))
			err = visit(w, why);
		else if (S_ISDIR(st.st_mode))
			err = walk_dir(w, len + 1 + nl, depth + 1);
		else if (S_ISREG(st.st_mode) && is_image_name(name))
			err = visit(w, kind == LINK_OUTSIDE ? why : NULL);
		else
			w->b->d->skipped++;
		w->path[len] = '\0';
	}
	if (!err && errno) {
		char os[128];
		err = say(w->b, FC_ERR_IO, "cannot read directory '%s': %s", w->path, fci_os_error(os, sizeof os, errno));
	}
	free(why);
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
	int err = set_root(b, w->path);
	if (!err) {
		w->split_level = has_split_level(w->path);
		err = walk_dir(w, len, 0);
	}
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

/* Make a CSV path a key: no absolute paths, no empty components; "./" and
 * repeated slashes dropped. *dotdot: whether a ".." is left in it (for
 * csv_dotdot). */
static int csv_key(struct builder *b, int line, const char *path, char *key, size_t cap, int *dotdot)
{
	if (path[0] == '/')
		return say(b, FC_ERR_INVALID, "line %d: path '%s' is absolute; CSV paths are relative to the CSV",
			   line, path);
	size_t o = 0;
	const char *p = path;
	*dotdot = 0;
	while (*p) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);
		if (n == 2 && p[0] == '.' && p[1] == '.')
			*dotdot = 1;
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

/* key[..len) with the ".." of its text applied; 0, or -1 when one climbs
 * above the start. For a path whose folders do not exist. */
static int drop_dotdot(char *key)
{
	size_t o = 0;
	for (const char *p = key; *p;) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);
		if (n == 2 && p[0] == '.' && p[1] == '.') {
			if (o == 0)
				return -1;
			while (o > 0 && key[o - 1] != '/')
				o--;
			o -= o > 0; /* the slash before the dropped name */
		} else {
			if (o)
				key[o++] = '/';
			memmove(key + o, p, n); /* o <= p - key: never ahead of the text */
			o += n;
		}
		p += n + (slash != NULL);
	}
	key[o] = '\0';
	return 0;
}

/* A CSV key with ".." (from csv_key) becomes the key of the file it names:
 * the folder its last ".." resolves to, relative to the dataset root, then
 * the rest as written; "train/x/../bag/1.png" is the item "train/bag/1.png",
 * as a path written without ".." would be. Returns 0 (key rewritten, or
 * kept as written when it leads outside and FC_DATASET_FOLLOW_OUTSIDE
 * allows that), 1 with why[WHYCAP] set when it leads outside or ends with
 * "..", or FC_ERR_NOMEM. */
static int csv_dotdot(struct builder *b, const char *dir, char *key, size_t cap, char *why)
{
	size_t end = 0; /* the end of the last ".." */
	for (const char *p = key; *p;) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);
		if (n == 2 && p[0] == '.' && p[1] == '.')
			end = (size_t)(p - key) + 2;
		p += n + (slash != NULL);
	}
	if (!key[end]) {
		snprintf(why, WHYCAP, "path ends with '..': a folder, not an image");
		return 1;
	}
	const char *rest = key + end + 1;
	size_t dl = strlen(dir);
	char *prefix = malloc(dl + end + 2);
	if (!prefix)
		return say(b, FC_ERR_NOMEM, "out of memory");
	memcpy(prefix, dir, dl);
	prefix[dl] = '/';
	memcpy(prefix + dl + 1, key, end);
	prefix[dl + 1 + end] = '\0';
	char *real = realpath(prefix, NULL);
	free(prefix);
	int rc = 0, follow = (b->flags & FC_DATASET_FOLLOW_OUTSIDE) != 0;
	if (real && inside_root(b, real)) {
		/* the root itself has no slash after it: rel is "" */
		const char *rel = real + b->root_len;
		rel += *rel == '/' && b->root_len > 1;
		size_t rl = strlen(rel), tl = strlen(rest);
		if (rl + 1 + tl >= cap) {
			rc = say(b, FC_ERR_INVALID, "path '%s' too long", key);
		} else {
			memmove(key + rl + (rl > 0), rest, tl + 1);
			memcpy(key, rel, rl);
			if (rl)
				key[rl] = '/';
		}
	} else if (real && !follow) {
		snprintf(why, WHYCAP, "'..' leads outside the dataset, to '%s%s%.4096s' (--follow-outside follows it)", real,
			 strcmp(real, "/") ? "/" : "", rest);
		rc = 1;
	} else if (!real) {
		/* A folder on the way is missing (so is the file: extract
		 * says so); the ".." applied to the text instead. */
		char *copy = strdup(key);
		if (!copy)
			return say(b, FC_ERR_NOMEM, "out of memory");
		if (drop_dotdot(copy) == 0)
			strcpy(key, copy);
		else if (!follow) {
			snprintf(why, WHYCAP, "'..' leads outside the dataset");
			rc = 1;
		}
		free(copy);
	}
	free(real);
	return rc;
}

/* The folder a CSV path was last checked in, and its verdict: a CSV lists
 * a folder's files together, and resolving every path again would cost a
 * readlink per component per row. */
struct folder_memo {
	char *dir;
	size_t len;
	int outside;
	char why[WHYCAP];
};

/* The first folder of path (past its first `from` bytes, the CSV's
 * directory) that is a link leading outside the root, into why. */
static void name_outside_folder(const struct builder *b, const char *path, size_t from, const char *real, char *why)
{
	char prefix[FC_KEY_MAX + 4200], target[4096];
	for (const char *s = strchr(path + from + 1, '/'); s; s = strchr(s + 1, '/')) {
		size_t n = (size_t)(s - path);
		if (n >= sizeof prefix)
			break;
		memcpy(prefix, path, n);
		prefix[n] = '\0';
		struct stat st;
		if (lstat(prefix, &st) != 0 || !S_ISLNK(st.st_mode))
			continue;
		char *r = realpath(prefix, NULL);
		int out = r && !inside_root(b, r);
		if (out) {
			link_target(prefix, target, sizeof target);
			snprintf(why, WHYCAP,
				 "folder '%s' is a symbolic link to '%s', outside the dataset (to '%s'); "
				 "--follow-outside follows it",
				 prefix + from + 1, target, r);
		}
		free(r);
		if (out)
			return;
	}
	snprintf(why, WHYCAP, "its folder is outside the dataset, at '%s' (--follow-outside follows it)", real);
}

/* A CSV path (the CSV's directory is its first `from` bytes) under the
 * link rule: 1 with why[WHYCAP] set when it is a broken link or leads
 * outside the root, 0 otherwise (a missing file too: extract records it),
 * or FC_ERR_NOMEM. */
static int csv_links(struct builder *b, struct folder_memo *m, const char *path, size_t from, char *why)
{
	struct stat st;
	if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode))
		return check_link(b, path, &st, why) != LINK_OK; /* resolves the whole path */
	if (b->flags & FC_DATASET_FOLLOW_OUTSIDE)
		return 0;
	/* Not a link itself: inside when its folder is. */
	size_t len = (size_t)(strrchr(path, '/') - path);
	if (!m->dir || m->len != len || memcmp(m->dir, path, len) != 0) {
		char *d = realloc(m->dir, len + 1);
		if (!d)
			return say(b, FC_ERR_NOMEM, "out of memory");
		memcpy(d, path, len);
		d[len] = '\0';
		m->dir = d;
		m->len = len;
		char *real = realpath(d, NULL); /* NULL: the folder is missing, so is the file */
		m->outside = real && !inside_root(b, real);
		if (m->outside)
			name_outside_folder(b, path, from, real, m->why);
		free(real);
	}
	if (m->outside)
		memcpy(why, m->why, strlen(m->why) + 1);
	return m->outside;
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
	if (!err)
		err = set_root(b, dir);
	struct folder_memo *memo = calloc(1, sizeof *memo);
	char *bad = malloc(WHYCAP);
	if (!err && (!memo || !bad))
		err = say(b, FC_ERR_NOMEM, "out of memory");
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
		int dotdot = 0, isbad = 0;
		if ((err = csv_key(b, c.line, c.field[0], key, sizeof key, &dotdot)) != 0)
			break;
		if (dotdot && (isbad = csv_dotdot(b, dir, key, sizeof key, bad)) < 0) {
			err = isbad;
			break;
		}
		snprintf(path, sizeof path, "%s/%s", dir, key);
		if (!isbad && (isbad = csv_links(b, memo, path, strlen(dir), bad)) < 0) {
			err = isbad;
			break;
		}
		err = add_entry(b, key, path, c.field[1][0] ? c.field[1] : NULL, split, c.line, isbad ? bad : NULL);
	}
	if (!err && r < 0)
		err = r;
	if (memo)
		free(memo->dir);
	free(memo);
	free(bad);
	free(c.buf);
	free(raw);
	return err;
}

/* ---- the whole scan ---- */

static int by_key(const void *a, const void *b)
{
	return strcmp(((const fc_entry *)a)->key, ((const fc_entry *)b)->key);
}

int fc_dataset_scan(fc_dataset *out, const char *path, unsigned flags, char *err, size_t errcap)
{
	fc_scan_opts o = { .flags = flags };
	return fc_dataset_scan_with(out, path, &o, err, errcap);
}

int fc_dataset_scan_with(fc_dataset *out, const char *path, const fc_scan_opts *o, char *err, size_t errcap)
{
	memset(out, 0, sizeof *out);
	struct builder b = { .d = out, .err = err, .errcap = errcap, .flags = o->flags };
	if (err && errcap)
		err[0] = '\0';
	if (fci_wds_is_source(path)) {
		int rc = fci_wds_scan(out, path, o, err, errcap);
		if (rc)
			fc_dataset_free(out);
		return rc;
	}
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
	free(b.root);
	if (rc)
		fc_dataset_free(out);
	return rc;
}

void fc_dataset_free(fc_dataset *d)
{
	if (!d)
		return;
	free(d->entries);
	free(d->shards);
	arena_free(d->arena);
	memset(d, 0, sizeof *d);
}

double fc_hash_fraction(const char *key, uint64_t seed)
{
	/* the top 53 bits as a fraction in [0, 1) */
	return (double)(XXH3_64bits_withSeed(key, strlen(key), seed) >> 11) * (1.0 / 9007199254740992.0);
}

int fc_hash_split(const char *key, double val_fraction)
{
	return fc_hash_fraction(key, 0) < val_fraction ? FC_SPLIT_VAL : FC_SPLIT_TRAIN;
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
