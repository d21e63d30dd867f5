/*
 * test_dataset.c - dataset scanning on real directories and CSV files in a
 * temp dir (class folders, split level, hidden files, CSV quoting, header,
 * BOM, CRLF, bad rows, duplicates, unsafe paths, names with control
 * characters, files that are not datasets), symbolic links in both layouts
 * (loops, broken links, links and '..' leading outside), the stable hash
 * split, file hashing against XXH3-128 of the bytes.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include <cmocka.h>

#include "featcache/extract.h"
#include "tests/testlib.h"

static char *tmproot; /* testlib_tmpdir, removed when every test passed */

/* Create a file (and its directories) under dir with the given bytes. */
static void put_file(const char *dir, const char *rel, const char *text)
{
	char path[1024];
	snprintf(path, sizeof path, "%s/%s", dir, rel);
	for (char *p = path + strlen(dir) + 1; *p; p++)
		if (*p == '/') {
			*p = '\0';
			mkdir(path, 0755);
			*p = '/';
		}
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* Files under dir holding "x", one for each path up to the NULL. */
static void put_files(const char *dir, ...)
{
	va_list ap;

	va_start(ap, dir);
	for (const char *rel = va_arg(ap, const char *); rel; rel = va_arg(ap, const char *))
		put_file(dir, rel, "x");
	va_end(ap);
}

static void mkroot(char *out, size_t cap, const char *name)
{
	snprintf(out, cap, "%s/%s", tmproot, name);
	assert_int_equal(mkdir(out, 0755), 0);
}

static const fc_entry *find(const fc_dataset *d, const char *key)
{
	for (size_t i = 0; i < d->n; i++)
		if (strcmp(d->entries[i].key, key) == 0)
			return &d->entries[i];
	return NULL;
}

static void test_class_folders(void **state)
{
	(void)state;
	char root[512], err[FC_ERRLEN];
	mkroot(root, sizeof root, "folders");
	put_files(root, "cat/1.jpg", "cat/2.JPEG", "dog/a/deep.png", "dog/notes.txt", "dog/.hidden.png", ".git/x.png",
		  "loose.png", NULL);
	fc_dataset d;
	assert_int_equal(fc_dataset_scan(&d, root, 0, err, sizeof err), 0);
	assert_int_equal(d.n, 4);
	assert_int_equal(d.skipped, 1);
	assert_false(d.from_csv);
	/* sorted by key, labels from the first folder, no split named */
	assert_string_equal(d.entries[0].key, "cat/1.jpg");
	assert_string_equal(d.entries[1].key, "cat/2.JPEG");
	assert_string_equal(d.entries[2].key, "dog/a/deep.png");
	assert_string_equal(d.entries[3].key, "loose.png");
	assert_string_equal(d.entries[0].label, "cat");
	assert_string_equal(d.entries[2].label, "dog");
	assert_null(d.entries[3].label);
	for (size_t i = 0; i < d.n; i++)
		assert_int_equal(d.entries[i].split, FC_SPLIT_NONE);
	char want[600];
	snprintf(want, sizeof want, "%s/dog/a/deep.png", root);
	assert_string_equal(d.entries[2].path, want);
	fc_dataset_free(&d);

	/* trailing slash: the same keys */
	snprintf(want, sizeof want, "%s/", root);
	assert_int_equal(fc_dataset_scan(&d, want, 0, err, sizeof err), 0);
	assert_string_equal(d.entries[0].key, "cat/1.jpg");
	fc_dataset_free(&d);
}

static void test_split_level(void **state)
{
	(void)state;
	char root[512], err[FC_ERRLEN];
	mkroot(root, sizeof root, "splits");
	/* README.png is beside the split folders: not listed */
	put_files(root, "train/shoe/1.png", "val/shoe/2.png", "test/bag/3.png", "README.png", NULL);
	fc_dataset d;
	assert_int_equal(fc_dataset_scan(&d, root, 0, err, sizeof err), 0);
	assert_int_equal(d.n, 3);
	const fc_entry *e = find(&d, "train/shoe/1.png");
	assert_non_null(e);
	assert_int_equal(e->split, FC_SPLIT_TRAIN);
	assert_string_equal(e->label, "shoe");
	assert_int_equal(find(&d, "val/shoe/2.png")->split, FC_SPLIT_VAL);
	assert_int_equal(find(&d, "test/bag/3.png")->split, FC_SPLIT_TEST);
	assert_string_equal(find(&d, "test/bag/3.png")->label, "bag");
	fc_dataset_free(&d);

	/* a folder that is not a split name makes it a class-per-folder set */
	put_file(root, "other/4.png", "x");
	assert_int_equal(fc_dataset_scan(&d, root, 0, err, sizeof err), 0);
	assert_int_equal(d.n, 5);
	assert_string_equal(find(&d, "train/shoe/1.png")->label, "train");
	assert_int_equal(find(&d, "train/shoe/1.png")->split, FC_SPLIT_NONE);
	fc_dataset_free(&d);
}

static void test_csv(void **state)
{
	(void)state;
	char root[512], csv[600], err[FC_ERRLEN];
	mkroot(root, sizeof root, "csv");
	snprintf(csv, sizeof csv, "%s/list.csv", root);
	put_file(root, "list.csv",
		 "\xef\xbb\xbfpath,label,split\r\n"
		 "img/a.jpg,cat,train\r\n"
		 "\"img/with, comma.png\",\"say \"\"hi\"\"\",val\r\n"
		 "\r\n"
		 "./img//b.png,dog,\r\n"
		 "\"img/multi\nline.png\",dog,test\n"
		 "img/c.png,,\n");
	fc_dataset d;
	assert_int_equal(fc_dataset_scan(&d, csv, 0, err, sizeof err), 0);
	assert_true(d.from_csv);
	assert_int_equal(d.n, 5);
	const fc_entry *e = find(&d, "img/with, comma.png");
	assert_non_null(e);
	assert_string_equal(e->label, "say \"hi\"");
	assert_int_equal(e->split, FC_SPLIT_VAL);
	assert_int_equal(e->line, 3);
	e = find(&d, "img/b.png"); /* ./ and // dropped */
	assert_non_null(e);
	assert_int_equal(e->split, FC_SPLIT_NONE);
	assert_int_equal(e->line, 5);
	e = find(&d, "img/multi\\nline.png"); /* escaped, and never read: see test_control_names */
	assert_non_null(e);
	assert_non_null(e->bad);
	assert_int_equal(e->split, FC_SPLIT_TEST);
	assert_null(find(&d, "img/c.png")->label);
	char want[700];
	snprintf(want, sizeof want, "%s/img/a.jpg", root);
	assert_string_equal(find(&d, "img/a.jpg")->path, want);
	assert_int_equal(find(&d, "img/a.jpg")->split, FC_SPLIT_TRAIN);
	fc_dataset_free(&d);

	/* no header: the first row is data */
	put_file(root, "nohead.csv", "x.png,one\ny.png,two\n");
	snprintf(csv, sizeof csv, "%s/nohead.csv", root);
	assert_int_equal(fc_dataset_scan(&d, csv, 0, err, sizeof err), 0);
	assert_int_equal(d.n, 2);
	assert_string_equal(d.entries[0].label, "one");
	fc_dataset_free(&d);
}

/* Each bad CSV is refused with the given code and a message naming the line. */
static void test_csv_errors(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		int code;
		const char *says;
	} cases[] = {
		{ "a.png,x\n\"b.png,y\n", FC_ERR_CORRUPT, "line 2: quoted field never closed" },
		{ "a.png,x\nb\"c.png,y\n", FC_ERR_CORRUPT, "line 2: quote inside an unquoted field" },
		{ "\"a.png\"x,y\n", FC_ERR_CORRUPT, "line 1: text after a closing quote" },
		{ "a.png\n", FC_ERR_CORRUPT, "line 1: 1 fields" },
		{ "a.png,x,train,extra\n", FC_ERR_CORRUPT, "line 1: 4 fields" },
		{ "a.png,x,holdout\n", FC_ERR_INVALID, "unknown split 'holdout'" },
		{ "/etc/passwd,x\n", FC_ERR_INVALID, "is absolute" },
		{ ",x\n", FC_ERR_INVALID, "empty path" },
		{ "a.png,x\nb.png,y\n./a.png,z\n", FC_ERR_EXISTS, "line 3: 'a.png' is listed again (first on line 1)" },
	};
	char root[512], csv[600], err[FC_ERRLEN];
	mkroot(root, sizeof root, "csv-bad");
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char name[32];
		snprintf(name, sizeof name, "bad%zu.csv", i);
		put_file(root, name, cases[i].text);
		snprintf(csv, sizeof csv, "%s/%s", root, name);
		fc_dataset d;
		err[0] = '\0';
		int rc = fc_dataset_scan(&d, csv, 0, err, sizeof err);
		if (rc != cases[i].code || !strstr(err, cases[i].says))
			fail_msg("case %zu: got %d '%s', want %d '%s'", i, rc, err, cases[i].code, cases[i].says);
		assert_null(d.entries);
		assert_int_equal(d.n, 0);
	}
	fc_dataset d;
	snprintf(csv, sizeof csv, "%s/absent.csv", root);
	assert_int_equal(fc_dataset_scan(&d, csv, 0, err, sizeof err), FC_ERR_NOT_FOUND);
	assert_string_equal(err, "no such file or directory"); /* the caller names the path */
	/* an image or a binary file is not read as a CSV */
	put_file(root, "photo.PNG", "\x89PNG\r\n\x1a\n");
	snprintf(csv, sizeof csv, "%s/photo.PNG", root);
	assert_int_equal(fc_dataset_scan(&d, csv, 0, err, sizeof err), FC_ERR_INVALID);
	assert_string_equal(err, "an image, not a dataset (a directory or a CSV)");
	static const char bin[] = { 'a', ',', 'b', '\n', 0, 1, '\n' };
	snprintf(csv, sizeof csv, "%s/list.bin", root);
	FILE *f = fopen(csv, "wb");
	assert_non_null(f);
	fwrite(bin, 1, sizeof bin, f);
	fclose(f);
	assert_int_equal(fc_dataset_scan(&d, csv, 0, err, sizeof err), FC_ERR_INVALID);
	assert_string_equal(err, "a binary file, not a dataset (a directory or a CSV)");
}

/* A control character in a path would break a one-key-a-line list: the
 * entry is kept under its escaped name and marked bad, never read. */
static void test_control_names(void **state)
{
	(void)state;
	char root[512], csv[600], err[FC_ERRLEN];
	mkroot(root, sizeof root, "control");
	put_files(root, "cat/ok.png", "cat/two\nlines.png", "cat/tab\tand\x01.png", "cat/back\\slash.png",
		  "new\nline/x.png", NULL);
	fc_dataset d;
	assert_int_equal(fc_dataset_scan(&d, root, 0, err, sizeof err), 0);
	assert_int_equal(d.n, 5);
	const fc_entry *e = find(&d, "cat/two\\nlines.png");
	assert_non_null(e);
	assert_non_null(e->bad);
	assert_non_null(strstr(e->bad, "newline"));
	assert_string_equal(e->label, "cat");
	assert_non_null(strstr(e->path, "two\nlines.png")); /* the real file */
	e = find(&d, "cat/tab\\tand\\x01.png");
	assert_true(e && e->bad);
	e = find(&d, "new\\nline/x.png");
	assert_true(e && e->bad);
	assert_null(e->label); /* a label is a name too */
	/* a clean name stays as it is, backslash and all */
	e = find(&d, "cat/back\\slash.png");
	assert_true(e && !e->bad);
	assert_true(find(&d, "cat/ok.png") && !find(&d, "cat/ok.png")->bad);
	for (size_t i = 0; i < d.n; i++)
		for (const char *k = d.entries[i].key; *k; k++)
			assert_true((unsigned char)*k >= 0x20 && *k != 0x7f);
	fc_dataset_free(&d);

	/* a real file spelling an escaped name keeps the key */
	put_files(root, "cat/two\\nlines.png", NULL);
	assert_int_equal(fc_dataset_scan(&d, root, 0, err, sizeof err), 0);
	assert_int_equal(d.n, 5);
	e = find(&d, "cat/two\\nlines.png");
	assert_true(e && !e->bad);
	fc_dataset_free(&d);

	/* a CSV path with a quoted newline */
	put_file(root, "list.csv", "\"a\nb.png\",x\nc.png,y\n");
	snprintf(csv, sizeof csv, "%s/list.csv", root);
	assert_int_equal(fc_dataset_scan(&d, csv, 0, err, sizeof err), 0);
	assert_int_equal(d.n, 2);
	assert_string_equal(d.entries[0].key, "a\\nb.png");
	assert_non_null(d.entries[0].bad);
	assert_int_equal(d.entries[0].line, 1);
	assert_string_equal(d.entries[1].key, "c.png");
	assert_null(d.entries[1].bad);
	fc_dataset_free(&d);
}

static void put_link(const char *dir, const char *rel, const char *target)
{
	char path[1024];
	snprintf(path, sizeof path, "%s/%s", dir, rel);
	if (symlink(target, path) != 0)
		fail_msg("symlink '%s' -> '%s': %s", path, target, strerror(errno));
}

static const fc_entry *must_find(const fc_dataset *d, const char *key)
{
	const fc_entry *e = find(d, key);
	if (!e)
		fail_msg("no entry '%s'", key);
	return e;
}

/* An entry that is an error record whose reason holds says. */
static void expect_bad(const fc_dataset *d, const char *key, const char *says)
{
	const fc_entry *e = must_find(d, key);
	if (!e->bad || !strstr(e->bad, says))
		fail_msg("'%s': reason '%s', wanted one with '%s'", key, e->bad ? e->bad : "(none)", says);
}

static void expect_good(const fc_dataset *d, const char *key)
{
	const fc_entry *e = must_find(d, key);
	if (e->bad)
		fail_msg("'%s' is bad: %s", key, e->bad);
}

/* Folder scans: links inside are followed, a loop is one error record
 * naming the link (and the scan goes on), a broken link or a link leading
 * outside is an error record, unless FC_DATASET_FOLLOW_OUTSIDE. */
static void test_links_folders(void **state)
{
	(void)state;
	char root[512], outside[512], err[FC_ERRLEN];
	mkroot(root, sizeof root, "links");
	mkroot(outside, sizeof outside, "links-outside");
	put_files(root, "cat/a.png", "cat/sub/b.png", NULL);
	put_files(outside, "o.png", "birds/o2.png", NULL);
	put_link(root, "cat/sub/up", "..");             /* back to cat */
	put_link(root, "dog", "cat");                   /* a folder inside: followed */
	put_link(root, "again", ".");                   /* back to the root */
	put_link(root, "cat/in.png", "a.png");          /* a file inside */
	put_link(root, "cat/gone.png", "nothing.png");  /* broken */
	put_link(root, "cat/gone.txt", "nothing.txt");  /* broken, not an image by name */
	put_link(root, "cat/self.png", "self.png");     /* a loop of links */
	put_link(root, "cat/out.png", "../../links-outside/o.png");
	put_link(root, "bird", "../links-outside/birds");

	fc_dataset d;
	assert_int_equal(fc_dataset_scan(&d, root, 0, err, sizeof err), 0);
	expect_good(&d, "cat/a.png");
	expect_good(&d, "cat/in.png");
	expect_good(&d, "cat/sub/b.png");
	expect_good(&d, "dog/a.png");
	expect_good(&d, "dog/sub/b.png");
	assert_string_equal(must_find(&d, "dog/a.png")->label, "dog");
	expect_bad(&d, "cat/sub/up", "symbolic link to '..' makes a loop: back to 'cat'");
	expect_bad(&d, "dog/sub/up", "symbolic link to '..' makes a loop: back to 'dog'");
	expect_bad(&d, "again", "symbolic link to '.' makes a loop: back to the dataset root");
	assert_string_equal(must_find(&d, "cat/gone.png")->bad, "broken symbolic link to 'nothing.png'");
	assert_string_equal(must_find(&d, "cat/gone.png")->label, "cat");
	assert_null(find(&d, "cat/gone.txt"));
	expect_bad(&d, "cat/self.png", "symbolic link to 'self.png' never resolves");
	char want[1200];
	snprintf(want, sizeof want, "symbolic link to '../../links-outside/o.png' leads outside the dataset, to '%s/o.png'",
		 outside);
	expect_bad(&d, "cat/out.png", want);
	expect_bad(&d, "bird", "symbolic link to '../links-outside/birds' leads outside the dataset");
	assert_null(find(&d, "bird/o2.png"));
	/* nothing else (dog repeats cat's 7 entries): the loops were not walked into */
	assert_int_equal(d.n, 16);
	assert_int_equal(d.skipped, 2); /* cat/gone.txt, dog/gone.txt */
	fc_dataset_free(&d);

	assert_int_equal(fc_dataset_scan(&d, root, FC_DATASET_FOLLOW_OUTSIDE, err, sizeof err), 0);
	expect_good(&d, "cat/out.png");
	expect_good(&d, "bird/o2.png");
	assert_string_equal(must_find(&d, "bird/o2.png")->label, "bird");
	assert_null(find(&d, "bird"));
	expect_bad(&d, "cat/sub/up", "makes a loop");
	expect_bad(&d, "cat/gone.png", "broken symbolic link");
	assert_int_equal(d.n, 16);
	fc_dataset_free(&d);

	/* a split level: a split folder that leads outside is that split's error */
	char split[512];
	mkroot(split, sizeof split, "links-split");
	put_files(split, "train/shoe/1.png", NULL);
	put_link(split, "test", "../links-outside/birds");
	assert_int_equal(fc_dataset_scan(&d, split, 0, err, sizeof err), 0);
	assert_int_equal(d.n, 2);
	expect_bad(&d, "test", "leads outside the dataset");
	assert_int_equal(must_find(&d, "test")->split, FC_SPLIT_TEST);
	fc_dataset_free(&d);
}

/* CSV paths under the same rule; ".." staying inside is accepted, keyed by
 * where it resolves. */
static void test_links_csv(void **state)
{
	(void)state;
	char root[512], outside[512], csv[600], err[FC_ERRLEN];
	mkroot(root, sizeof root, "csvlinks");
	mkroot(outside, sizeof outside, "csvlinks-outside");
	put_files(root, "train/bag/1.png", "train/bag/2.png", "train/x/keep", NULL);
	put_files(outside, "o.png", "o2.png", NULL);
	put_link(root, "link.png", "../csvlinks-outside/o.png");
	put_link(root, "broken.png", "none.png");
	put_link(root, "ext", "../csvlinks-outside");
	put_link(root, "deep", "train/x");
	put_file(root, "list.csv",
		 "path,label,split\n"
		 "train/x/../bag/1.png,bag,train\n"
		 "train/bag/2.png,bag,train\n"
		 "img/../../secret.png,x,\n"
		 "link.png,x,\n"
		 "broken.png,x,\n"
		 "ext/o2.png,x,\n"
		 "missing/../gone.png,x,\n"
		 "deep/../../train/bag/1.png,bag,test\n");
	snprintf(csv, sizeof csv, "%s/list.csv", root);
	fc_dataset d;
	/* deep/.. is train (deep is train/x): the same file as line 2, listed again */
	assert_int_equal(fc_dataset_scan(&d, csv, 0, err, sizeof err), FC_ERR_EXISTS);
	assert_string_equal(err, "line 9: 'train/bag/1.png' is listed again (first on line 2)");

	put_file(root, "list.csv",
		 "path,label,split\n"
		 "train/x/../bag/1.png,bag,train\n"
		 "train/bag/2.png,bag,train\n"
		 "img/../../secret.png,x,\n"
		 "link.png,x,\n"
		 "broken.png,x,\n"
		 "ext/o2.png,x,\n"
		 "missing/../gone.png,x,\n"
		 "deep/../x/../../train/bag/.//../bag/2.png,bag,test\n");
	assert_int_equal(fc_dataset_scan(&d, csv, 0, err, sizeof err), FC_ERR_EXISTS);
	assert_string_equal(err, "line 9: 'train/bag/2.png' is listed again (first on line 3)");

	put_file(root, "list.csv",
		 "path,label,split\n"
		 "train/x/../bag/1.png,bag,train\n"
		 "train/bag/2.png,bag,train\n"
		 "img/../../secret.png,x,\n"
		 "link.png,x,\n"
		 "broken.png,x,\n"
		 "ext/o2.png,x,\n"
		 "missing/../gone.png,x,\n");
	assert_int_equal(fc_dataset_scan(&d, csv, 0, err, sizeof err), 0);
	assert_int_equal(d.n, 7);
	const fc_entry *e = must_find(&d, "train/bag/1.png");
	assert_null(e->bad);
	assert_int_equal(e->line, 2);
	char want[1200];
	snprintf(want, sizeof want, "%s/train/bag/1.png", root);
	assert_string_equal(e->path, want);
	expect_good(&d, "train/bag/2.png");
	expect_good(&d, "gone.png"); /* the folder is missing: extract says the file is */
	expect_bad(&d, "img/../../secret.png", "'..' leads outside the dataset");
	snprintf(want, sizeof want, "leads outside the dataset, to '%s/o.png'", outside);
	expect_bad(&d, "link.png", want);
	assert_string_equal(must_find(&d, "broken.png")->bad, "broken symbolic link to 'none.png'");
	expect_bad(&d, "ext/o2.png", "folder 'ext' is a symbolic link to '../csvlinks-outside', outside the dataset");
	fc_dataset_free(&d);

	assert_int_equal(fc_dataset_scan(&d, csv, FC_DATASET_FOLLOW_OUTSIDE, err, sizeof err), 0);
	assert_int_equal(d.n, 7);
	expect_good(&d, "link.png");
	expect_good(&d, "ext/o2.png");
	expect_good(&d, "img/../../secret.png"); /* leaves: its text is its key */
	expect_bad(&d, "broken.png", "broken symbolic link");
	fc_dataset_free(&d);
}

static void test_empty_dataset(void **state)
{
	(void)state;
	char root[512], err[FC_ERRLEN];
	mkroot(root, sizeof root, "empty");
	put_file(root, "a/readme.txt", "x");
	fc_dataset d;
	assert_int_equal(fc_dataset_scan(&d, root, 0, err, sizeof err), 0);
	assert_int_equal(d.n, 0);
	assert_int_equal(d.skipped, 1);
	fc_dataset_free(&d);
}

static void test_hash_split(void **state)
{
	(void)state;
	size_t val = 0, n = 20000;
	char key[64];
	for (size_t i = 0; i < n; i++) {
		snprintf(key, sizeof key, "class%zu/img%06zu.jpg", i % 7, i);
		int s = fc_hash_split(key, 0.1);
		assert_true(s == FC_SPLIT_TRAIN || s == FC_SPLIT_VAL);
		val += s == FC_SPLIT_VAL;
		/* stable: the same key, the same answer; a larger fraction only adds */
		assert_int_equal(fc_hash_split(key, 0.1), s);
		if (s == FC_SPLIT_VAL)
			assert_int_equal(fc_hash_split(key, 0.2), FC_SPLIT_VAL);
	}
	/* 10 % within 4 standard deviations of a binomial(20000, 0.1) */
	assert_true(val > 2000 - 170 && val < 2000 + 170);
	assert_int_equal(fc_hash_split("anything", 0.0), FC_SPLIT_TRAIN);
}

/* The draw behind the split: seed 0 is plain XXH3-64 (fc_hash_split's, so
 * stores keep their splits); another seed draws independently of it, so a
 * fraction carved from keys that seed 0 put in train is still that fraction. */
static void test_hash_fraction(void **state)
{
	(void)state;
	size_t n = 20000, train = 0, carved = 0;
	char key[64];
	for (size_t i = 0; i < n; i++) {
		snprintf(key, sizeof key, "class%zu/img%06zu.jpg", i % 7, i);
		double u = fc_hash_fraction(key, 0);
		assert_true(u >= 0 && u < 1);
		assert_true(u == (double)(XXH3_64bits(key, strlen(key)) >> 11) / 9007199254740992.0);
		assert_int_equal(fc_hash_split(key, 0.1), u < 0.1 ? FC_SPLIT_VAL : FC_SPLIT_TRAIN);
		if (u < 0.1)
			continue;
		train++;
		carved += fc_hash_fraction(key, 12345) < 0.1;
		assert_true(fc_hash_fraction(key, 12345) == fc_hash_fraction(key, 12345));
	}
	/* 10 % of train within 4 standard deviations of binomial(train, 0.1) */
	assert_true(carved > train / 10 - 170 && carved < train / 10 + 170);
}

static void test_hash_file(void **state)
{
	(void)state;
	char root[512], path[600], err[256];
	mkroot(root, sizeof root, "hash");
	/* larger than the hashing buffer, so the streaming path is used */
	size_t n = 200000;
	char *buf = malloc(n + 1);
	assert_non_null(buf);
	for (size_t i = 0; i < n; i++)
		buf[i] = (char)('a' + (i * 7919) % 26);
	buf[n] = '\0';
	put_file(root, "big.bin", buf);
	snprintf(path, sizeof path, "%s/big.bin", root);
	uint8_t h[16];
	uint64_t size;
	int64_t mtime;
	assert_int_equal(fc_hash_file(path, h, &size, &mtime, err, sizeof err), 0);
	assert_int_equal(size, n);
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, XXH3_128bits(buf, n));
	assert_memory_equal(h, c.digest, 16);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(mtime, (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec);
	free(buf);
	snprintf(path, sizeof path, "%s/none.bin", root);
	assert_int_equal(fc_hash_file(path, h, &size, &mtime, err, sizeof err), FC_ERR_NOT_FOUND);
}

int main(void)
{
	tmproot = testlib_tmpdir("test-dataset");
	printf("# dir %s\n", tmproot);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_class_folders), cmocka_unit_test(test_split_level),
		cmocka_unit_test(test_csv),	      cmocka_unit_test(test_csv_errors),
		cmocka_unit_test(test_empty_dataset), cmocka_unit_test(test_hash_split),
		cmocka_unit_test(test_hash_file),     cmocka_unit_test(test_control_names),
		cmocka_unit_test(test_links_folders), cmocka_unit_test(test_links_csv),
		cmocka_unit_test(test_hash_fraction),
	};
	int failed = cmocka_run_group_tests(tests, NULL, NULL);
	if (!failed && testlib_rmtree(tmproot) != 0)
		failed = 1;
	free(tmproot);
	return failed;
}
