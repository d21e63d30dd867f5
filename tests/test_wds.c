/*
 * test_wds.c - WebDataset tar shards (extract/wds.c): brace patterns
 * against hand-written expansions; grouping of members into samples over
 * tars built here byte by byte (a ustar writer of its own, independent of
 * libarchive): image choice, labels from .cls/.txt/.json, samples without
 * an image, bad labels, repeated keys, members over the size limit,
 * truncated and corrupt tars; and the dataset scan of a directory of
 * shards, a pattern and @LIST on a real temp dir (names, splits, a missing
 * shard, keys, which shard a key is under).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

#include <cmocka.h>

#include "extract/wds.h"
#include "featcache/extract.h"
#include "tests/testlib.h"

static char *tmproot;
static char err[FC_ERRLEN];

/* ---- a ustar writer ---- */

struct tarbuf {
	uint8_t *p;
	size_t n, cap;
};

static void tb_room(struct tarbuf *t, size_t more)
{
	if (t->n + more > t->cap) {
		t->cap = (t->n + more) * 2;
		t->p = realloc(t->p, t->cap);
		assert_non_null(t->p);
	}
}

/* One header; `claim` is the size written into it (normally len). */
static void tb_header(struct tarbuf *t, const char *name, char type, uint64_t claim)
{
	tb_room(t, 512);
	uint8_t *h = t->p + t->n;
	memset(h, 0, 512);
	assert_true(strlen(name) < 100);
	memcpy(h, name, strlen(name));
	memcpy(h + 100, "0000644", 7);
	memcpy(h + 108, "0000000", 7);
	memcpy(h + 116, "0000000", 7);
	char num[24];
	snprintf(num, sizeof num, "%011llo", (unsigned long long)(claim & 077777777777ull));
	memcpy(h + 124, num, 11);
	memcpy(h + 136, "00000000000", 11);
	h[156] = (uint8_t)type;
	memcpy(h + 257, "ustar", 6);
	memcpy(h + 263, "00", 2);
	memset(h + 148, ' ', 8);
	unsigned sum = 0;
	for (int i = 0; i < 512; i++)
		sum += h[i];
	snprintf((char *)h + 148, 8, "%06o", sum);
	t->n += 512;
}

static void tb_file(struct tarbuf *t, const char *name, const void *data, size_t len)
{
	tb_header(t, name, '0', len);
	size_t padded = (len + 511) / 512 * 512;
	tb_room(t, padded);
	memset(t->p + t->n, 0, padded);
	memcpy(t->p + t->n, data, len);
	t->n += padded;
}

static void tb_str(struct tarbuf *t, const char *name, const char *s) { tb_file(t, name, s, strlen(s)); }

static void tb_end(struct tarbuf *t)
{
	tb_room(t, 1024);
	memset(t->p + t->n, 0, 1024);
	t->n += 1024;
}

static void hash_of(uint8_t out[FC_HASH_LEN], const void *p, size_t n)
{
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, XXH3_128bits(p, n));
	memcpy(out, c.digest, FC_HASH_LEN);
}

static void group(const struct tarbuf *t, const char *field, fci_wds_samples *out)
{
	fci_tar *r = NULL;
	assert_int_equal(fci_tar_open_mem(&r, t->p, t->n, err, sizeof err), 0);
	assert_int_equal(fci_wds_group(r, "s.tar", field, out), 0);
	fci_tar_free(r);
}

static const fci_wds_sample *find(const fci_wds_samples *s, const char *key)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->v[i].key, key) == 0)
			return &s->v[i];
	return NULL;
}

/* ---- brace patterns ---- */

struct paths {
	char got[64][64];
	int n;
};

static int collect(void *ctx, const char *path)
{
	struct paths *p = ctx;
	if (p->n < 64)
		snprintf(p->got[p->n], 64, "%s", path);
	p->n++;
	return 0;
}

static void expect(const char *pattern, int n, ...)
{
	struct paths p = { .n = 0 };
	va_list ap;
	assert_int_equal(fci_wds_expand(pattern, 1000, collect, &p, err, sizeof err), 0);
	assert_int_equal(p.n, n);
	va_start(ap, n);
	for (int i = 0; i < n; i++)
		assert_string_equal(p.got[i], va_arg(ap, const char *));
	va_end(ap);
}

static void test_braces(void **state)
{
	(void)state;
	struct paths p = { .n = 0 };
	expect("shards/{00000..00003}.tar", 4, "shards/00000.tar", "shards/00001.tar", "shards/00002.tar",
	       "shards/00003.tar");
	expect("{8..11}.tar", 4, "8.tar", "9.tar", "10.tar", "11.tar");
	expect("{08..11}", 4, "08", "09", "10", "11");
	expect("{3..1}", 3, "3", "2", "1");
	expect("{a,b}/{1..2}.tar", 4, "a/1.tar", "a/2.tar", "b/1.tar", "b/2.tar");
	expect("x{,y}z", 2, "xz", "xyz");
	expect("plain.tar", 1, "plain.tar");
	expect("{x}.tar", 1, "{x}.tar");
	expect("d/{098..100}-{a,b}", 6, "d/098-a", "d/098-b", "d/099-a", "d/099-b", "d/100-a", "d/100-b");
	assert_int_equal(fci_wds_expand("s/{0..3.tar", 1000, collect, &p, err, sizeof err), FC_ERR_INVALID);
	assert_non_null(strstr(err, "closing"));
	assert_int_equal(fci_wds_expand("{a,{b,c}}", 1000, collect, &p, err, sizeof err), FC_ERR_INVALID);
	assert_non_null(strstr(err, "nested"));
	p.n = 0;
	assert_int_equal(fci_wds_expand("{0..99}{0..99}", 100, collect, &p, err, sizeof err), FC_ERR_INVALID);
	assert_non_null(strstr(err, "more than 100"));
}

/* ---- grouping ---- */

static void test_grouping(void **state)
{
	(void)state;
	struct tarbuf t = { 0 };
	const char jpg[] = "JPEG bytes of s1", png1[] = "PNG bytes of s1", png3[] = "png 3", png4[] = "png four";
	tb_str(&t, "s1.jpg", jpg);   /* member 0 */
	tb_str(&t, "s1.png", png1);  /* 1: the .jpg wins */
	tb_str(&t, "s1.cls", " 7\n"); /* 2 */
	tb_str(&t, "s2.cls", "1");   /* 3: no image */
	tb_str(&t, "s3.png", png3);  /* 4 */
	tb_str(&t, "s3.cls", "abc"); /* 5: not an integer */
	tb_header(&t, "dir/", '5', 0); /* 6: a folder, skipped */
	tb_str(&t, "dir/s4.png", png4); /* 7 */
	tb_str(&t, "dir/s4.json", "{\"name\": \"zebra\", \"label\": 3}"); /* 8 */
	tb_str(&t, "./s5.PNG", "p5"); /* 9: upper-case extension, ./ dropped */
	tb_str(&t, "s5.txt", " hello world \n"); /* 10 */
	tb_str(&t, "s6.png", "p6");  /* 11: no label */
	tb_str(&t, "s7.seg.png", "p7"); /* 12: extension "seg.png": no image */
	tb_str(&t, "README", "no dot: skipped"); /* 13 */
	tb_str(&t, "s8.jpeg", "p8"); /* 14 */
	tb_str(&t, "s8.json", "[1]"); /* 15: not an object */
	tb_str(&t, "s9.png", "p9");  /* 16 */
	tb_str(&t, "s9.json", "{\"label\": 2.0}"); /* 17 */
	tb_str(&t, "s9.cls", "-4"); /* 18: .cls wins over .json */
	tb_str(&t, "s10.png", "p10"); /* 19 */
	tb_str(&t, "s10.json", "{\"label\": true}"); /* 20 */
	tb_str(&t, "s6.txt", "late"); /* 21: s6 again, not consecutive */
	tb_end(&t);

	fci_wds_samples s;
	group(&t, "name", &s);
	assert_int_equal(s.skipped, 2);
	assert_int_equal(s.n, 10);
	/* tar order, repeats dropped */
	static const char *const order[] = { "s1", "s2", "s3", "dir/s4", "s5", "s6", "s7", "s8", "s9", "s10" };
	for (size_t i = 0; i < s.n; i++)
		assert_string_equal(s.v[i].key, order[i]);
	uint8_t h[FC_HASH_LEN];
	const fci_wds_sample *x = find(&s, "s1");
	hash_of(h, jpg, strlen(jpg));
	assert_null(x->bad);
	assert_memory_equal(x->hash, h, FC_HASH_LEN);
	assert_int_equal(x->member, 0);
	assert_string_equal(x->label, "7");
	x = find(&s, "s2");
	assert_non_null(strstr(x->bad, "no image"));
	x = find(&s, "s3");
	assert_non_null(strstr(x->bad, "'s3.cls' is not an integer: 'abc'"));
	assert_null(x->label);
	x = find(&s, "dir/s4");
	assert_null(x->bad);
	assert_string_equal(x->label, "zebra"); /* --label-field name */
	assert_int_equal(x->member, 7);
	hash_of(h, png4, strlen(png4));
	assert_memory_equal(x->hash, h, FC_HASH_LEN);
	x = find(&s, "s5");
	assert_null(x->bad);
	assert_string_equal(x->label, "hello world");
	assert_int_equal(x->member, 9);
	x = find(&s, "s6");
	assert_non_null(strstr(x->bad, "appears again"));
	x = find(&s, "s7");
	assert_non_null(strstr(x->bad, "no image"));
	x = find(&s, "s8");
	assert_non_null(strstr(x->bad, "not a JSON object"));
	x = find(&s, "s9");
	assert_null(x->bad);
	assert_string_equal(x->label, "-4");
	x = find(&s, "s10");
	assert_null(x->bad); /* no field "name" in its .json: unlabelled */
	assert_null(x->label);
	fci_wds_samples_free(&s);

	/* the default field, and numbers as labels */
	group(&t, NULL, &s);
	assert_string_equal(find(&s, "dir/s4")->label, "3");
	assert_non_null(strstr(find(&s, "s10")->bad, "field 'label' of 's10.json' is not a number or a string"));
	fci_wds_samples_free(&s);
	free(t.p);

	/* .json with a whole real, no label field, .txt empty */
	memset(&t, 0, sizeof t);
	tb_str(&t, "a.png", "a");
	tb_str(&t, "a.json", "{\"label\": 12.0}");
	tb_str(&t, "b.png", "b");
	tb_str(&t, "b.json", "{\"caption\": \"x\"}");
	tb_str(&t, "c.png", "c");
	tb_str(&t, "c.txt", " \n");
	tb_end(&t);
	group(&t, NULL, &s);
	assert_int_equal(s.n, 3);
	assert_string_equal(find(&s, "a")->label, "12");
	assert_null(find(&s, "b")->label);
	assert_null(find(&s, "b")->bad);
	assert_non_null(strstr(find(&s, "c")->bad, "empty"));
	fci_wds_samples_free(&s);
	free(t.p);
}

static void test_damage(void **state)
{
	(void)state;
	struct tarbuf t = { 0 };
	char big[3000];
	memset(big, 'x', sizeof big);
	tb_str(&t, "a.png", "a");
	tb_str(&t, "a.cls", "0");
	tb_str(&t, "b.png", "b");
	size_t b_end = t.n;
	tb_file(&t, "c.png", big, sizeof big);
	tb_str(&t, "c.cls", "2");
	tb_end(&t);

	/* cut inside c.png's data: a and b kept, c names the member */
	struct tarbuf cut = t;
	cut.n = b_end + 512 + 1000;
	fci_wds_samples s;
	group(&cut, NULL, &s);
	assert_int_equal(s.n, 3);
	assert_null(find(&s, "a")->bad);
	assert_null(find(&s, "b")->bad);
	const char *why = find(&s, "c")->bad;
	assert_non_null(why);
	assert_non_null(strstr(why, "shard 's.tar' is damaged in member 'c.png'"));
	fci_wds_samples_free(&s);

	/* cut inside c.png's header */
	cut.n = b_end + 100;
	group(&cut, NULL, &s);
	assert_null(find(&s, "a")->bad);
	assert_null(find(&s, "b")->bad);
	assert_null(find(&s, "c"));
	assert_non_null(strstr(find(&s, "#shard")->bad, "shard 's.tar' is damaged after member 'b.png'"));
	fci_wds_samples_free(&s);

	/* a corrupt header checksum in the middle */
	uint8_t *copy = malloc(t.n);
	memcpy(copy, t.p, t.n);
	copy[b_end + 10] ^= 0x55;
	struct tarbuf bad = { copy, t.n, t.n };
	group(&bad, NULL, &s);
	assert_null(find(&s, "a")->bad);
	assert_null(find(&s, "b")->bad);
	assert_null(find(&s, "c"));
	assert_non_null(find(&s, "#shard")->bad);
	fci_wds_samples_free(&s);
	free(copy);
	free(t.p);

	/* a header claiming a member over the limit: refused unread */
	memset(&t, 0, sizeof t);
	tb_str(&t, "a.png", "a");
	tb_header(&t, "h.png", '0', (uint64_t)300 << 20);
	tb_room(&t, 512);
	memset(t.p + t.n, 0, 512);
	t.n += 512;
	group(&t, NULL, &s);
	assert_null(find(&s, "a")->bad);
	why = find(&s, "h")->bad;
	assert_non_null(strstr(why, "member 'h.png' is 314572800 bytes, over the 256 MiB limit"));
	fci_wds_samples_free(&s);
	free(t.p);

	/* not a tar at all */
	const char junk[] = "this is not a tar archive, just some text that is long enough to look at";
	fci_tar *r = NULL;
	err[0] = '\0';
	assert_int_equal(fci_tar_open_mem(&r, junk, sizeof junk, err, sizeof err), FC_ERR_CORRUPT);
	assert_null(r);
	assert_true(err[0] != '\0');
	printf("# not a tar: %s\n", err);
}

/* ---- scanning shards on disk ---- */

static void write_tar(const char *path, const char *key)
{
	struct tarbuf t = { 0 };
	char name[64];
	snprintf(name, sizeof name, "%s.png", key);
	tb_str(&t, name, key);
	snprintf(name, sizeof name, "%s.cls", key);
	tb_str(&t, name, "1");
	tb_end(&t);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(t.p, 1, t.n, f), t.n);
	assert_int_equal(fclose(f), 0);
	free(t.p);
}

static const fc_entry *entry(const fc_dataset *d, const char *key)
{
	for (size_t i = 0; i < d->n; i++)
		if (strcmp(d->entries[i].key, key) == 0)
			return &d->entries[i];
	return NULL;
}

static void test_scan(void **state)
{
	(void)state;
	char p[4300], q[4200];
	fc_dataset d;
	snprintf(p, sizeof p, "%s/ds", tmproot);
	assert_int_equal(mkdir(p, 0777), 0);
	snprintf(p, sizeof p, "%s/ds/train", tmproot);
	assert_int_equal(mkdir(p, 0777), 0);
	snprintf(p, sizeof p, "%s/ds/val", tmproot);
	assert_int_equal(mkdir(p, 0777), 0);
	snprintf(p, sizeof p, "%s/ds/train/00000.tar", tmproot);
	write_tar(p, "k1");
	snprintf(p, sizeof p, "%s/ds/train/00001.tar", tmproot);
	write_tar(p, "k2");
	snprintf(p, sizeof p, "%s/ds/val/00000.tar", tmproot);
	write_tar(p, "k3");
	snprintf(p, sizeof p, "%s/ds/notes.txt", tmproot);
	FILE *f = fopen(p, "w");
	fputs("not a shard\n", f);
	fclose(f);

	snprintf(p, sizeof p, "%s/ds", tmproot);
	assert_int_equal(fc_dataset_scan(&d, p, 0, err, sizeof err), 0);
	assert_int_equal(d.n_shards, 3);
	assert_int_equal(d.n, 3);
	assert_string_equal(d.shards[0].name, "train/00000");
	assert_string_equal(d.shards[2].name, "val/00000");
	const fc_entry *e = entry(&d, "train/00001/k2");
	assert_non_null(e);
	assert_int_equal(e->split, FC_SPLIT_TRAIN);
	assert_string_equal(e->label, "1");
	assert_int_equal(entry(&d, "val/00000/k3")->split, FC_SPLIT_VAL);
	assert_int_equal(fc_dataset_shard_of(&d, "train/00001/k2"), 1);
	assert_int_equal(fc_dataset_shard_of(&d, "train/00001/x/y"), 1);
	assert_int_equal(fc_dataset_shard_of(&d, "train/00002/k"), -1);
	assert_int_equal(fc_dataset_shard_of(&d, "train"), -1);
	assert_int_equal(d.shards[1].state, FC_SHARD_READ);
	assert_int_equal(d.shards[1].first, 1);
	fc_dataset_free(&d);

	/* lazy: listed, not read */
	fc_scan_opts o = { .lazy = 1 };
	assert_int_equal(fc_dataset_scan_with(&d, p, &o, err, sizeof err), 0);
	assert_int_equal(d.n_shards, 3);
	assert_int_equal(d.n, 0);
	assert_int_equal(d.shards[0].state, FC_SHARD_PENDING);
	fc_dataset_free(&d);

	/* a pattern: names relative to its fixed folders; a missing shard */
	snprintf(p, sizeof p, "%s/ds/train/{00000..00002}.tar", tmproot);
	assert_int_equal(fc_dataset_scan(&d, p, 0, err, sizeof err), 0);
	assert_int_equal(d.n_shards, 3);
	assert_string_equal(d.shards[2].name, "00002");
	assert_non_null(entry(&d, "00000/k1"));
	e = entry(&d, "00002/#shard");
	assert_non_null(e);
	assert_non_null(strstr(e->bad, "cannot read shard"));
	assert_int_equal(e->split, FC_SPLIT_TRAIN);
	fc_dataset_free(&d);

	/* @LIST, relative to the list's folder; comments and blank lines */
	snprintf(q, sizeof q, "%s/ds/list.txt", tmproot);
	f = fopen(q, "w");
	fputs("# shards\ntrain/00001.tar\n\n  val/00000.tar  \n", f);
	fclose(f);
	snprintf(p, sizeof p, "@%s", q);
	assert_int_equal(fc_dataset_scan(&d, p, 0, err, sizeof err), 0);
	assert_int_equal(d.n, 2);
	assert_non_null(entry(&d, "train/00001/k2"));
	assert_non_null(entry(&d, "val/00000/k3"));
	fc_dataset_free(&d);

	/* one .tar file: named by its file name */
	snprintf(p, sizeof p, "%s/ds/val/00000.tar", tmproot);
	assert_int_equal(fc_dataset_scan(&d, p, 0, err, sizeof err), 0);
	assert_int_equal(d.n, 1);
	assert_non_null(entry(&d, "00000/k3"));
	fc_dataset_free(&d);

	/* the same name twice in a list is refused */
	f = fopen(q, "w");
	fputs("train/00001.tar\n./train/00001.tar\n", f);
	fclose(f);
	snprintf(p, sizeof p, "@%s", q);
	assert_int_equal(fc_dataset_scan(&d, p, 0, err, sizeof err), FC_ERR_EXISTS);
	assert_non_null(strstr(err, "two shards are named 'train/00001'"));
	snprintf(p, sizeof p, "@%s/nope.txt", tmproot);
	assert_int_equal(fc_dataset_scan(&d, p, 0, err, sizeof err), FC_ERR_NOT_FOUND);

	/* a class-folder dataset with a stray .tar stays a class-folder dataset */
	static const char *const dirs[] = { "loose", "loose/train", "loose/train/cat" };
	for (int k = 0; k < 3; k++) {
		snprintf(p, sizeof p, "%s/%s", tmproot, dirs[k]);
		assert_int_equal(mkdir(p, 0777), 0);
	}
	snprintf(p, sizeof p, "%s/loose/train/cat/x.png", tmproot);
	write_tar(p, "not really a png");
	snprintf(p, sizeof p, "%s/loose/backup.tar", tmproot);
	write_tar(p, "k");
	snprintf(p, sizeof p, "%s/loose", tmproot);
	assert_int_equal(fc_dataset_scan(&d, p, 0, err, sizeof err), 0);
	assert_int_equal(d.n_shards, 0);
	assert_int_equal(d.n, 1);
	assert_string_equal(d.entries[0].key, "train/cat/x.png");
	fc_dataset_free(&d);
}

int main(void)
{
	tmproot = testlib_tmpdir("test-wds");
	printf("# dir %s\n", tmproot);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_braces),
		cmocka_unit_test(test_grouping),
		cmocka_unit_test(test_damage),
		cmocka_unit_test(test_scan),
	};
	int failed = cmocka_run_group_tests(tests, NULL, NULL);
	if (!failed && testlib_rmtree(tmproot) != 0)
		failed = 1;
	free(tmproot);
	return failed;
}
