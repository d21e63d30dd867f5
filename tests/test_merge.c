/*
 * test_merge.c - fc_store_merge on real stores in temp directories: two
 * shards merged equal a store written in one go (items, labels by name,
 * error records, index, vectors bit for bit), a second merge changes
 * nothing, a merge killed between batches and run again ends the same as
 * one that was not, and the refusals: another descriptor or dtype for the
 * same extractor id, an item the stores disagree about, a damaged chunk,
 * a store merged into itself; each writes nothing.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <lmdb.h>

#include "featcache/store.h"
#include "tests/testlib.h"

#define DIM 48
#define DUP_ITEM 1000   /* item "dup/1000.png" shows the content of item DUP_OF */
#define DUP_OF 5

static char *tmproot;
static uint64_t seed; /* the run's seed: the vectors' values come from it */

static void path_of(char *out, size_t cap, const char *name)
{
	snprintf(out, cap, "%s/%s", tmproot, name);
}

static const uint8_t EX[FC_HASH_LEN] = { 0x3e, 0x11, 0x9a };

/* What a store of some items looks like. */
struct spec {
	const char *name;
	const uint64_t *items; /* item numbers, in the order they are written */
	size_t n;
	size_t batch;         /* vectors per chunk */
	int labels_reversed;  /* create the label names in the other order */
	fc_dtype dtype;
	const char *descriptor;
};

static uint64_t content_of(uint64_t item)
{
	return item == DUP_ITEM ? DUP_OF : item;
}

static int is_failed(uint64_t item)
{
	return item % 37 == 36;
}

static void hash_of(uint8_t h[FC_HASH_LEN], uint64_t content)
{
	memset(h, 0x5a, FC_HASH_LEN);
	for (int b = 0; b < 8; b++)
		h[b] = (uint8_t)(content >> (8 * b));
	h[8] = is_failed(content) ? 0xfa : 0x0c;
}

/* A vector per content: from the test's seed, so another seed is another run. */
static void vec_of(float *v, uint64_t content)
{
	uint64_t st = content * 0x9e3779b97f4a7c15ull ^ seed;
	for (size_t j = 0; j < DIM; j++) {
		st = st * 6364136223846793005ull + 1442695040888963407ull;
		v[j] = (float)((double)(st >> 40) / (double)(1 << 24)) * 8.0f - 4.0f;
	}
}

static fc_store *open_store(const char *name, int create, int readonly)
{
	char path[512];
	path_of(path, sizeof path, name);
	fc_store_opts o = { .create = create, .readonly = readonly, .nosync = 1 };
	fc_store *s;
	int err = fc_store_open(&s, path, &o);
	if (err)
		fail_msg("open %s: %s", path, fc_store_errmsg(s));
	return s;
}

static void put_ex(fc_store *s, fc_dtype dtype, const char *descriptor)
{
	fc_extractor ex = { .dim = DIM, .dtype = dtype, .codec = FC_CODEC_SHUFFLE_ZSTD, .level = 3,
			    .descriptor = descriptor };
	memcpy(ex.id, EX, FC_HASH_LEN);
	assert_int_equal(fc_store_put_extractor(s, &ex), 0);
}

/* Write the store of sp, the way extract would: labels, items, error
 * records, then one chunk per sp->batch new contents. */
static void make_store(const struct spec *sp)
{
	fc_store *s = open_store(sp->name, 1, 0);
	const char *names[5] = { "l0", "l1", "l2", "l3", "l4" }, *order[5];
	uint32_t ids[5], by_name[5];
	for (int c = 0; c < 5; c++)
		order[c] = names[sp->labels_reversed ? 4 - c : c];
	assert_int_equal(fc_store_label_ids(s, order, 5, ids), 0);
	for (int c = 0; c < 5; c++)
		by_name[sp->labels_reversed ? 4 - c : c] = ids[c];
	put_ex(s, sp->dtype, sp->descriptor);

	float *vecs = malloc(sp->batch * DIM * sizeof *vecs);
	uint8_t (*hashes)[FC_HASH_LEN] = malloc(sp->batch * FC_HASH_LEN);
	size_t nv = 0;
	for (size_t i = 0; i < sp->n; i++) {
		uint64_t it = sp->items[i];
		char key[64];
		snprintf(key, sizeof key, it == DUP_ITEM ? "dup/%llu.png" : "l%llu/%04llu.png",
			 it == DUP_ITEM ? (unsigned long long)it : (unsigned long long)(it % 5), (unsigned long long)it);
		fc_item item = { .key = key, .size = 100 + it, .mtime_ns = 1700000000000000000ll + (int64_t)it,
				 .label = is_failed(it) ? FC_NO_LABEL : by_name[it % 5],
				 .split = (uint8_t)(it % 4 == 3 ? FC_SPLIT_NONE : it % 4),
				 .status = is_failed(it) ? FC_ITEM_FAILED : FC_ITEM_OK };
		hash_of(item.hash, content_of(it));
		assert_int_equal(fc_store_put_items(s, &item, 1), 0);
		if (is_failed(it)) {
			char why[64];
			snprintf(why, sizeof why, "cannot decode image %llu", (unsigned long long)it);
			assert_int_equal(fc_store_put_error(s, key, why), 0);
			continue;
		}
		if (fc_store_has(s, EX, item.hash) == 1)
			continue;
		for (size_t j = 0; j < nv; j++)
			if (memcmp(hashes[j], item.hash, FC_HASH_LEN) == 0)
				goto next;
		memcpy(hashes[nv], item.hash, FC_HASH_LEN);
		vec_of(vecs + nv * DIM, content_of(it));
		if (++nv == sp->batch) {
			assert_int_equal(fc_store_append(s, EX, vecs, (const uint8_t(*)[FC_HASH_LEN])hashes, nv, NULL), 0);
			nv = 0;
		}
next:;
	}
	if (nv)
		assert_int_equal(fc_store_append(s, EX, vecs, (const uint8_t(*)[FC_HASH_LEN])hashes, nv, NULL), 0);
	free(vecs);
	free(hashes);
	fc_store_free(s);
}

/* Items [lo, hi) into out (plus DUP_ITEM when dup); the count. */
static size_t range(uint64_t *out, uint64_t lo, uint64_t hi, int dup)
{
	size_t n = 0;
	for (uint64_t i = lo; i < hi; i++)
		out[n++] = i;
	if (dup)
		out[n++] = DUP_ITEM;
	return n;
}

static const char DESC[] = "{\"model\":\"m.onnx\",\"layer\":\"pool\"}";

/* full: items 0..199 and the duplicate; a: 0..99 (labels made in the other
 * order, so their ids differ); b: 100..199 and the duplicate, whose content
 * is a's item 5. */
static void make_shards(const char *full, const char *a, const char *b)
{
	uint64_t items[256];
	size_t n = range(items, 0, 200, 1);
	if (full)
		make_store(&(struct spec){ full, items, n, 16, 0, FC_DTYPE_F16, DESC });
	n = range(items, 0, 100, 0);
	make_store(&(struct spec){ a, items, n, 7, 1, FC_DTYPE_F16, DESC });
	n = range(items, 100, 200, 1);
	make_store(&(struct spec){ b, items, n, 13, 0, FC_DTYPE_F16, DESC });
}

static int merge(const char *dst, const char *src, const fc_merge_opts *o, fc_merge_stats *st, char *msg,
		 size_t cap)
{
	fc_store *d = open_store(dst, 1, 0), *s = open_store(src, 0, 1);
	int err = fc_store_merge(d, s, o, st);
	if (msg)
		snprintf(msg, cap, "%s", fc_store_errmsg(d));
	if (err && !msg)
		print_message("# merge %s into %s: %s\n", src, dst, fc_store_errmsg(d));
	fc_store_free(s);
	fc_store_free(d);
	return err;
}

/* ---- comparing stores ---- */

struct walk {
	fc_store *other, *self;
	size_t n;
	int bad;
};

static int same_item(void *ctx, const fc_item *it)
{
	struct walk *w = ctx;
	fc_item o;
	char a[64] = "-", b[64] = "-";
	w->n++;
	if (fc_store_get_item(w->other, it->key, &o) != 0) {
		print_message("# item %s missing\n", it->key);
		w->bad++;
		return 0;
	}
	if (it->label != FC_NO_LABEL)
		assert_int_equal(fc_store_label_name(w->self, it->label, a, sizeof a), 0);
	if (o.label != FC_NO_LABEL)
		assert_int_equal(fc_store_label_name(w->other, o.label, b, sizeof b), 0);
	if (memcmp(it->hash, o.hash, FC_HASH_LEN) || it->size != o.size || it->mtime_ns != o.mtime_ns ||
	    it->split != o.split || it->status != o.status || strcmp(a, b)) {
		print_message("# item %s differs (label %s / %s)\n", it->key, a, b);
		w->bad++;
	}
	return 0;
}

static int append_error(void *ctx, const char *key, const char *why)
{
	char *buf = ctx;
	size_t len = strlen(buf);
	snprintf(buf + len, 8192 - len, "%s=%s;", key, why);
	return 0;
}

/* What `featcache info` and `embed` would show agrees: items, labels by
 * name, error records, vector counts, and every row bit for bit. */
static void assert_same_content(const char *want_name, const char *got_name)
{
	fc_store *want = open_store(want_name, 0, 1), *got = open_store(got_name, 0, 1);
	struct walk w = { got, want, 0, 0 };
	assert_int_equal(fc_store_foreach_item(want, same_item, &w), 0);
	assert_int_equal(w.bad, 0);
	fc_store_stats sw, sg;
	assert_int_equal(fc_store_stats_get(want, &sw), 0);
	assert_int_equal(fc_store_stats_get(got, &sg), 0);
	assert_int_equal(sg.items, sw.items);
	assert_int_equal(sg.items_failed, sw.items_failed);
	assert_int_equal(sg.labels, sw.labels);
	assert_int_equal(sg.errors, sw.errors);
	assert_memory_equal(sg.splits, sw.splits, sizeof sw.splits);
	assert_int_equal(sg.n_extractors, 1);
	assert_int_equal(sg.extractors[0].vectors, sw.extractors[0].vectors);
	free(sw.extractors);
	free(sg.extractors);

	char *ew = calloc(1, 8192), *eg = calloc(1, 8192);
	assert_int_equal(fc_store_foreach_error(want, append_error, ew), 0);
	assert_int_equal(fc_store_foreach_error(got, append_error, eg), 0);
	assert_string_equal(eg, ew);
	free(ew);
	free(eg);

	fc_matrix mw, mg;
	assert_int_equal(fc_store_load_items(want, EX, FC_SPLIT_MASK_ALL, &mw, NULL), 0);
	assert_int_equal(fc_store_load_items(got, EX, FC_SPLIT_MASK_ALL, &mg, NULL), 0);
	assert_int_equal(mg.rows, mw.rows);
	assert_true(mw.rows > 150);
	assert_memory_equal(mg.data, mw.data, mw.rows * DIM * sizeof(float));
	assert_memory_equal(mg.hashes, mw.hashes, mw.rows * FC_HASH_LEN);
	for (size_t r = 0; r < mw.rows; r++)
		assert_string_equal(mg.keys[r], mw.keys[r]);
	fc_matrix_free(&mw);
	fc_matrix_free(&mg);
	assert_int_equal(fc_store_verify(got, NULL, NULL, NULL), 0);
	fc_store_free(want);
	fc_store_free(got);
}

/* The figures of two extractors that no page layout can change. */
static void assert_same_ex(const fc_store_ex_stats *got, const fc_store_ex_stats *want)
{
	assert_memory_equal(got->id, want->id, FC_HASH_LEN);
	assert_int_equal(got->vectors, want->vectors);
	assert_int_equal(got->slots, want->slots);
	assert_int_equal(got->chunks, want->chunks);
	assert_int_equal(got->chunk_bytes, want->chunk_bytes);
}

static void ex_stats(const char *name, fc_store_ex_stats *out, uint64_t *items)
{
	fc_store *s = open_store(name, 0, 1);
	fc_store_stats st;
	assert_int_equal(fc_store_stats_get(s, &st), 0);
	assert_int_equal(st.n_extractors, 1);
	*out = st.extractors[0];
	*items = st.items;
	free(st.extractors);
	fc_store_free(s);
}

/* ---- tests ---- */

static void test_two_shards_equal_one_go(void **state)
{
	(void)state;
	make_shards("full", "a", "b");
	fc_merge_stats sa, sb;
	assert_int_equal(merge("ab", "a", NULL, &sa, NULL, 0), 0);
	assert_int_equal(merge("ab", "b", NULL, &sb, NULL, 0), 0);
	/* a: 100 items, 3 of them failed (36, 73) ... every one new */
	assert_int_equal(sa.items, 100);
	assert_int_equal(sa.items_present, 0);
	assert_int_equal(sa.extractors, 1);
	assert_int_equal(sa.labels, 5);
	assert_int_equal(sa.errors, 2);
	assert_int_equal(sa.vectors, 98);
	assert_int_equal(sa.chunks, 14);
	assert_int_equal(sa.chunks_present, 0);
	assert_int_equal(sb.items, 101);
	assert_int_equal(sb.labels, 0);
	assert_int_equal(sb.extractors, 0);
	assert_int_equal(sb.errors, 3);
	/* the duplicate's content came with a: b's chunk holding it is
	 * copied, that slot dead */
	assert_int_equal(sb.vectors_present, 1);
	assert_int_equal(sb.vectors, 97);
	assert_int_equal(sb.chunks, 8);
	assert_true(sb.bytes > 0);
	assert_same_content("full", "ab");

	fc_store_ex_stats x;
	uint64_t items;
	ex_stats("ab", &x, &items);
	assert_int_equal(x.vectors, 195);
	assert_int_equal(x.slots, 196); /* the dead slot, for gc */
	assert_int_equal(x.chunks, 22);

	/* The other order: b first, then a; the same content. */
	assert_int_equal(merge("ba", "b", NULL, NULL, NULL, 0), 0);
	assert_int_equal(merge("ba", "a", NULL, NULL, NULL, 0), 0);
	assert_same_content("full", "ba");
}

static void test_merge_twice_changes_nothing(void **state)
{
	(void)state;
	make_shards(NULL, "a2", "b2");
	assert_int_equal(merge("twice", "a2", NULL, NULL, NULL, 0), 0);
	assert_int_equal(merge("twice", "b2", NULL, NULL, NULL, 0), 0);
	fc_store_ex_stats before, after;
	uint64_t ib, ia;
	ex_stats("twice", &before, &ib);
	fc_merge_stats st;
	for (int k = 0; k < 2; k++) {
		assert_int_equal(merge("twice", k ? "b2" : "a2", NULL, &st, NULL, 0), 0);
		assert_int_equal(st.items + st.errors + st.labels + st.extractors + st.vectors + st.chunks + st.bytes, 0);
		assert_int_equal(st.items_present, k ? 101 : 100);
		assert_int_equal(st.vectors_present, k ? 98 : 98);
		assert_int_equal(st.chunks_present, k ? 8 : 14);
	}
	ex_stats("twice", &after, &ia);
	assert_int_equal(ia, ib);
	assert_same_ex(&after, &before);
	assert_int_equal(after.disk_bytes, before.disk_bytes); /* not a page written */
	assert_same_content("full", "twice");
}

/* The child's logger: SIGKILL itself at the kill_at'th chunk batch. */
static int kill_at;

static int killing_progress(void *ctx, const char *what, uint64_t done, uint64_t total)
{
	(void)ctx;
	(void)done;
	(void)total;
	if (strcmp(what, "merge chunks") == 0 && --kill_at == 0)
		raise(SIGKILL);
	return 0;
}

static void test_killed_merge_resumes(void **state)
{
	(void)state;
	static const fc_merge_opts small = { .batch_chunks = 3 };
	/* the reference: a and b merged without a stop */
	assert_int_equal(merge("ref", "a", &small, NULL, NULL, 0), 0);
	assert_int_equal(merge("ref", "b", &small, NULL, NULL, 0), 0);
	fc_store_ex_stats want;
	uint64_t want_items;
	ex_stats("ref", &want, &want_items);

	for (int at = 1; at <= 2; at++) {
		char name[32];
		snprintf(name, sizeof name, "killed%d", at);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			/* a fresh process with its own store handles: a merged
			 * whole, then b killed after `at` batches of chunks */
			static const fc_logger lg = { NULL, killing_progress, NULL };
			fc_store_opts o = { .nosync = 1, .logger = &lg };
			char dp[512], sp[512];
			fc_store *d, *b;
			if (merge(name, "a", &small, NULL, NULL, 0))
				_exit(3);
			path_of(dp, sizeof dp, name);
			path_of(sp, sizeof sp, "b");
			if (fc_store_open(&d, dp, &o) || fc_store_open(&b, sp, &(fc_store_opts){ .readonly = 1 }))
				_exit(3);
			kill_at = at;
			fc_store_merge(d, b, &small, NULL);
			_exit(4); /* not killed: the test below fails */
		}
		int status;
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
		fc_merge_stats st;
		assert_int_equal(merge(name, "b", &small, &st, NULL, 0), 0);
		assert_int_equal(st.items, 0); /* the items went before the chunks */
		assert_int_equal(st.chunks_present, (uint64_t)at * 3);
		fc_store_ex_stats got;
		uint64_t got_items;
		ex_stats(name, &got, &got_items);
		assert_int_equal(got_items, want_items);
		/* the same chunks under the same ids */
		assert_same_ex(&got, &want);
		assert_same_content("full", name);
	}
}

/* A logger whose progress asks to stop at once. */
static int stop_now(void *ctx, const char *what, uint64_t done, uint64_t total)
{
	(void)ctx;
	(void)what;
	(void)done;
	(void)total;
	return 1;
}

static void test_interrupted_merge_resumes(void **state)
{
	(void)state;
	static const fc_logger lg = { NULL, stop_now, NULL };
	fc_store_opts o = { .create = 1, .nosync = 1, .logger = &lg };
	char dp[512];
	fc_store *d, *s = open_store("a", 0, 1);
	path_of(dp, sizeof dp, "stopped");
	assert_int_equal(fc_store_open(&d, dp, &o), 0);
	fc_merge_stats st;
	assert_int_equal(fc_store_merge(d, s, &(fc_merge_opts){ .batch_chunks = 3 }, &st), FC_ERR_INTERRUPTED);
	assert_non_null(strstr(fc_store_errmsg(d), "merge again"));
	assert_int_equal(st.items, 100); /* one batch of items, then the stop */
	assert_int_equal(st.chunks, 0);
	fc_store_free(s);
	fc_store_free(d);
	assert_int_equal(merge("stopped", "a", NULL, &st, NULL, 0), 0);
	assert_int_equal(st.items, 0);
	assert_int_equal(st.chunks, 14);
	assert_int_equal(merge("stopped", "b", NULL, NULL, NULL, 0), 0);
	assert_same_content("full", "stopped");
}

/* Nothing of a refused merge is written: the destination's figures stay. */
static void assert_refused(const char *dst, const char *src, const fc_merge_opts *o, int want_err,
			   const char *const *must_say)
{
	fc_store_ex_stats before, after;
	uint64_t ib, ia;
	ex_stats(dst, &before, &ib);
	char msg[FC_ERRLEN];
	fc_merge_stats st;
	assert_int_equal(merge(dst, src, o, &st, msg, sizeof msg), want_err);
	print_message("# %s\n", msg);
	for (; *must_say; must_say++)
		if (!strstr(msg, *must_say))
			fail_msg("'%s' lacks '%s'", msg, *must_say);
	assert_int_equal(st.items + st.errors + st.labels + st.extractors + st.vectors + st.chunks, 0);
	ex_stats(dst, &after, &ia);
	assert_int_equal(ia, ib);
	assert_same_ex(&after, &before);
	assert_int_equal(after.disk_bytes, before.disk_bytes);
}

static void test_conflicting_extractor(void **state)
{
	(void)state;
	uint64_t items[256];
	size_t n = range(items, 300, 340, 0);
	make_store(&(struct spec){ "other_layer", items, n, 8, 0, FC_DTYPE_F16,
				   "{\"model\":\"elsewhere/m.onnx\",\"layer\":\"conv5\"}" });
	make_store(&(struct spec){ "other_model_path", items, n, 8, 0, FC_DTYPE_F16,
				   "{\"model\":\"elsewhere/m.onnx\",\"layer\":\"pool\"}" });
	make_store(&(struct spec){ "f32", items, n, 8, 0, FC_DTYPE_F32, DESC });
	char dst[512], src[512];
	path_of(dst, sizeof dst, "ab");
	path_of(src, sizeof src, "other_layer");
	const char *layer[] = { "extractor 3e119a", "'layer'", "\"conv5\"", "\"pool\"", dst, src, NULL };
	assert_refused("ab", "other_layer", NULL, FC_ERR_EXISTS, layer);
	path_of(src, sizeof src, "f32");
	const char *dtype[] = { "48-d f32", "48-d f16", dst, src, NULL };
	assert_refused("ab", "f32", NULL, FC_ERR_EXISTS, dtype);

	/* The model path differs and is not ignored: refused; ignored: merged,
	 * and dst keeps its own descriptor. */
	const char *model[] = { "'model'", NULL };
	assert_refused("ab", "other_model_path", NULL, FC_ERR_EXISTS, model);
	static const char *const ignore[] = { "model", NULL };
	fc_merge_stats st;
	assert_int_equal(merge("ab", "other_model_path", &(fc_merge_opts){ .descriptor_ignore = ignore }, &st,
			       NULL, 0), 0);
	assert_int_equal(st.items, 40);
	fc_store *s = open_store("ab", 0, 1);
	fc_extractor ex;
	assert_int_equal(fc_store_get_extractor(s, EX, &ex), 0);
	assert_non_null(strstr(ex.descriptor, "\"m.onnx\""));
	fc_store_free(s);
}

/* A store whose only item is `key` with content c, label name and split. */
static void one_item_store(const char *name, const char *key, uint64_t c, const char *label, int split)
{
	fc_store *s = open_store(name, 1, 0);
	uint32_t id;
	assert_int_equal(fc_store_label_ids(s, &label, 1, &id), 0);
	put_ex(s, FC_DTYPE_F16, DESC);
	fc_item it = { .key = key, .size = 1, .label = id, .split = (uint8_t)split };
	hash_of(it.hash, c);
	assert_int_equal(fc_store_put_items(s, &it, 1), 0);
	float v[DIM];
	vec_of(v, c);
	assert_int_equal(fc_store_append(s, EX, v, (const uint8_t(*)[FC_HASH_LEN])it.hash, 1, NULL), 0);
	fc_store_free(s);
}

static void test_disagreeing_item(void **state)
{
	(void)state;
	uint8_t h1[FC_HASH_LEN], h2[FC_HASH_LEN];
	char x1[33], x2[33];
	hash_of(h1, 0);
	hash_of(h2, 777);
	fc_hex(x1, h1, FC_HASH_LEN);
	fc_hex(x2, h2, FC_HASH_LEN);
	one_item_store("content", "l0/0000.png", 777, "l0", 0);
	one_item_store("label", "l0/0000.png", 0, "l3", 0);
	one_item_store("split", "l0/0000.png", 0, "l0", FC_SPLIT_TEST);
	one_item_store("agrees", "l0/0000.png", 0, "l0", 0);
	const char *content[] = { "'l0/0000.png'", x1, x2, "content", NULL };
	assert_refused("ab", "content", NULL, FC_ERR_EXISTS, content);
	const char *label[] = { "'l0/0000.png'", "label 'l3'", "'l0' in", NULL };
	assert_refused("ab", "label", NULL, FC_ERR_EXISTS, label);
	const char *split[] = { "'l0/0000.png'", "split test", "but train", NULL };
	assert_refused("ab", "split", NULL, FC_ERR_EXISTS, split);
	fc_merge_stats st;
	assert_int_equal(merge("ab", "agrees", NULL, &st, NULL, 0), 0);
	assert_int_equal(st.items_present, 1);
	assert_int_equal(st.vectors_present, 1);
	assert_int_equal(st.chunks_present, 1);
	assert_int_equal(st.items + st.vectors + st.chunks, 0);
}

/* Flip one byte of chunk `id` of the store's extractor, around the library. */
static void corrupt_chunk(const char *name, uint64_t id)
{
	char path[512], db[64], hex[33];
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k, v;
	uint8_t key[8];
	path_of(path, sizeof path, name);
	fc_hex(hex, EX, FC_HASH_LEN);
	snprintf(db, sizeof db, "feat.%s", hex);
	for (int i = 0; i < 8; i++)
		key[i] = (uint8_t)(id >> (56 - 8 * i));
	k = (MDB_val){ 8, key };
	assert_int_equal(mdb_env_create(&env), 0);
	mdb_env_set_maxdbs(env, 64);
	assert_int_equal(mdb_env_open(env, path, 0, 0644), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
	assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
	uint8_t *bad = malloc(v.mv_size);
	memcpy(bad, v.mv_data, v.mv_size);
	bad[v.mv_size - 3] ^= 0x40;
	MDB_val nv = { v.mv_size, bad };
	assert_int_equal(mdb_put(txn, dbi, &k, &nv, 0), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
	free(bad);
}

static void test_damaged_shard(void **state)
{
	(void)state;
	uint64_t items[256];
	size_t n = range(items, 400, 460, 0);
	make_store(&(struct spec){ "damaged", items, n, 10, 0, FC_DTYPE_F16, DESC });
	corrupt_chunk("damaged", 4);
	char src[512];
	path_of(src, sizeof src, "damaged");
	const char *chunk[] = { src, "chunk 4", "featcache verify", NULL };
	assert_refused("ab", "damaged", NULL, FC_ERR_CORRUPT, chunk);

	/* itself */
	fc_store *s = open_store("ab", 0, 0);
	assert_int_equal(fc_store_merge(s, s, NULL, NULL), FC_ERR_INVALID);
	assert_non_null(strstr(fc_store_errmsg(s), "into itself"));
	fc_store_free(s);
}

int main(void)
{
	seed = testlib_seed("test_merge");
	tmproot = testlib_tmpdir("test-merge");
	printf("# dir %s\n", tmproot);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_two_shards_equal_one_go),
		cmocka_unit_test(test_merge_twice_changes_nothing),
		cmocka_unit_test(test_killed_merge_resumes),
		cmocka_unit_test(test_interrupted_merge_resumes),
		cmocka_unit_test(test_conflicting_extractor),
		cmocka_unit_test(test_disagreeing_item),
		cmocka_unit_test(test_damaged_shard),
	};
	int failed = cmocka_run_group_tests(tests, NULL, NULL);
	if (!failed)
		testlib_rmtree(tmproot);
	free(tmproot);
	return failed;
}
