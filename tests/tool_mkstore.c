/*
 * tool_mkstore.c - a test helper that makes synthetic feature stores through
 * the public store API, and damages or thins existing ones, so the CLI tests
 * (and anyone else's) can prove what info, verify and gc do.
 *
 * Creating: OK items "class<c>/<i>.jpg" with label "class<c>" and a split
 * chosen by i % 10 (0-6 train, 7 val, 8 test, 9 none); --dup K makes the
 * last K of them share the content of the first ones; --failed F adds F
 * items "bad/<i>.jpg" that failed to decode, with error records (no label,
 * split none). Vectors are class centres plus noise, all from --seed, so the
 * same options always give the same store. Rerunning on a store adds only
 * what is missing, as extract would. --first K numbers the items (keys,
 * contents, splits) from K, so that stores of items [0, N) and [N, 2N)
 * are two disjoint parts of the store of [0, 2N), as shards would be.
 *
 * Damaging goes around the library on purpose, with raw LMDB calls, since
 * the library never writes a bad record. The layout is store.h's and
 * store/chunk.h's; the "format" meta record is a u32 little-endian.
 *
 * This is test tooling: it prints what it did on stdout, exits 0 on
 * success, 1 on failure and 2 on a usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lmdb.h>
#include <xxhash.h>

#include "featcache/store.h"

static const char usage_text[] =
	"usage: tool_mkstore --store DIR [--dim D] [--items N] [--classes C]\n"
	"                    [--dtype f32|f16|bf16|u8] [--codec raw|zstd|shuffle-zstd]\n"
	"                    [--level L] [--batch B] [--seed S] [--dup K] [--failed F]\n"
	"                    [--extractors E] [--noise PCT] [--mixed-splits] [--first K]\n"
	"                    [--no-val]\n"
	"                    [--poison N]  (item content N-1 gets a NaN; f32 only)\n"
	"       tool_mkstore --store DIR --remove-items K\n"
	"       tool_mkstore --store DIR [--extractor HEX] --corrupt-chunk ID|first|last\n"
	"       tool_mkstore --store DIR [--extractor HEX] --corrupt-index\n"
	"       tool_mkstore --store DIR [--extractor HEX] --corrupt-descriptor\n"
	"       tool_mkstore --store DIR --corrupt-item KEY|first\n"
	"       tool_mkstore --store DIR --set-format N\n"
	"\n"
	"Defaults: dim 16, items 100, classes 4, f16, shuffle-zstd level 3,\n"
	"batch 32, seed 1, dup 0, failed 0, extractors 1, noise 50 (percent of the\n"
	"class centres' scale: higher makes raw features harder to search).\n"
	"Splits go by item number (i %% 10), which ties them to classes; with\n"
	"--mixed-splits by (i / classes) %% 10, so every split has every class.\n"
	"--no-val: no val split, as a dataset of train/ and test/ (val's share is\n"
	"train, the share of no split is test).\n"
	"--remove-items deletes the first K items in key order (\"bad/...\" sorts\n"
	"before \"class...\"). The damage modes name what they broke on stdout as\n"
	"verify would: feat.HEX/chunk ID, index.HEX/HASH, items/KEY, extractors/HEX.\n";

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int fail(const char *fmt, ...)
{
	va_list ap;

	fputs("tool_mkstore: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("tool_mkstore: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nsee 'tool_mkstore --help'\n", stderr);
	return 2;
}

static int parse_u64(const char *opt, const char *val, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(val, &end, 10);
	if (val[0] < '0' || val[0] > '9' || *end || errno || v < min || v > max)
		return usage_error("bad value '%s' for %s: expected %llu..%llu", val, opt,
				   (unsigned long long)min, (unsigned long long)max);
	*out = v;
	return 0;
}

/* ---- deterministic data ---- */

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in [-1, 1). */
static float unit(uint64_t *x)
{
	return (float)((double)(splitmix(x) >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}

static void hash128(uint8_t out[FC_HASH_LEN], const char *text)
{
	XXH128_canonical_t c;

	XXH128_canonicalFromHash(&c, XXH3_128bits(text, strlen(text)));
	memcpy(out, c.digest, FC_HASH_LEN);
}

struct spec {
	const char *store;
	uint64_t dim, items, classes, level, batch, seed, dup, failed, extractors;
	uint64_t first;     /* the number of the first item (--first) */
	uint64_t noise_pct; /* noise scale in percent of the centres' (default 50) */
	int mixed_splits;   /* splits independent of classes (by i / classes) */
	int no_val;         /* train and test only */
	uint64_t poison;    /* content poison-1 gets a NaN (f32 stores only); 0 = none */
	fc_dtype dtype;
	fc_codec codec;
};

/* The content an OK item shows: the last `dup` items repeat the first ones. */
static uint64_t content_of(const struct spec *sp, uint64_t i)
{
	uint64_t distinct = sp->items - sp->dup;

	return i < distinct ? i : (i - distinct) % distinct;
}

static void content_hash(const struct spec *sp, uint64_t content, uint8_t out[FC_HASH_LEN])
{
	char text[96];

	snprintf(text, sizeof text, "mkstore content %llu %llu", (unsigned long long)sp->seed,
		 (unsigned long long)content);
	hash128(out, text);
}

/* Class centre plus noise; one stream per (seed, extractor, content). */
static void make_vector(const struct spec *sp, uint64_t ex, uint64_t content, float *v)
{
	uint64_t c = content % sp->classes;
	uint64_t centre = sp->seed * 1000003u + ex * 7919u + c + 1;
	uint64_t noise = sp->seed * 2000003u + ex * 104729u + content * 31u + 0x51ed;

	for (uint64_t d = 0; d < sp->dim; d++)
		v[d] = unit(&centre) + (float)sp->noise_pct / 100.0f * unit(&noise);
	if (sp->poison && content == sp->poison - 1)
		v[0] = NAN;
}

static int store_err(fc_store *s, int rc, const char *what)
{
	const char *m = s ? fc_store_errmsg(s) : "";

	return fail("cannot %s store: %s", what, m && m[0] ? m : fc_strerror(rc));
}

/* ---- create ---- */

static int make_store(const struct spec *sp)
{
	fc_store_opts opts;
	fc_store *s = NULL;
	uint64_t distinct = sp->items - sp->dup, total = sp->items + sp->failed, vectors = 0;
	fc_item *items = NULL;
	char **keys = NULL, **names = NULL;
	uint32_t *label_ids = NULL;
	float *vecs = NULL;
	uint8_t (*hashes)[FC_HASH_LEN] = NULL;
	int rc = 1, r;

	memset(&opts, 0, sizeof opts);
	opts.create = 1;
	opts.nosync = 1; /* a test store: speed over durability */
	r = fc_store_open(&s, sp->store, &opts);
	if (r < 0) {
		rc = store_err(s, r, "open");
		goto out;
	}

	names = calloc(sp->classes, sizeof *names);
	label_ids = calloc(sp->classes, sizeof *label_ids);
	items = calloc(total ? total : 1, sizeof *items);
	keys = calloc(total ? total : 1, sizeof *keys);
	vecs = malloc(sp->batch * sp->dim * sizeof *vecs);
	hashes = malloc(sp->batch * sizeof *hashes);
	if (!names || !label_ids || !items || !keys || !vecs || !hashes) {
		rc = fail("out of memory");
		goto out;
	}
	for (uint64_t c = 0; c < sp->classes; c++) {
		names[c] = malloc(32);
		if (!names[c]) {
			rc = fail("out of memory");
			goto out;
		}
		snprintf(names[c], 32, "class%llu", (unsigned long long)c);
	}
	if ((r = fc_store_label_ids(s, (const char *const *)names, sp->classes, label_ids)) < 0) {
		rc = store_err(s, r, "write labels to");
		goto out;
	}

	for (uint64_t i = 0; i < total; i++) {
		fc_item *it = &items[i];

		keys[i] = malloc(64);
		if (!keys[i]) {
			rc = fail("out of memory");
			goto out;
		}
		uint64_t g = sp->first + i; /* the item's number */

		if (i < sp->items) {
			uint64_t content = sp->first + content_of(sp, i), c = content % sp->classes;
			static const uint8_t split_of[2][10] = { { 0, 0, 0, 0, 0, 0, 0, 1, 2, 255 },
								  { 0, 0, 0, 0, 0, 0, 0, 0, 2, 2 } };

			snprintf(keys[i], 64, "class%llu/%05llu.jpg", (unsigned long long)c,
				 (unsigned long long)g);
			content_hash(sp, content, it->hash);
			it->label = label_ids[c];
			it->split = split_of[sp->no_val][(sp->mixed_splits ? g / sp->classes : g) % 10];
			it->status = FC_ITEM_OK;
		} else {
			char text[96];

			snprintf(keys[i], 64, "bad/%05llu.jpg", (unsigned long long)(g - sp->items));
			snprintf(text, sizeof text, "mkstore failed %llu %llu",
				 (unsigned long long)sp->seed, (unsigned long long)g);
			hash128(it->hash, text);
			it->label = FC_NO_LABEL;
			it->split = FC_SPLIT_NONE;
			it->status = FC_ITEM_FAILED;
		}
		it->key = keys[i];
		it->size = 1000 + g;
		it->mtime_ns = (int64_t)1700000000 * 1000000000 + (int64_t)g;
	}
	if ((r = fc_store_put_items(s, items, total)) < 0) {
		rc = store_err(s, r, "write items to");
		goto out;
	}
	for (uint64_t i = sp->items; i < total; i++) {
		if ((r = fc_store_put_error(s, keys[i],
					    "cannot decode image: not a JPEG or PNG file (synthetic)")) < 0) {
			rc = store_err(s, r, "write errors to");
			goto out;
		}
	}

	for (uint64_t e = 0; e < sp->extractors; e++) {
		fc_extractor ex;
		char text[160], desc[200], hex[2 * FC_HASH_LEN + 1];
		size_t n = 0;

		snprintf(text, sizeof text, "mkstore extractor %llu %llu %llu %s %s",
			 (unsigned long long)sp->seed, (unsigned long long)e,
			 (unsigned long long)sp->dim, fc_dtype_name(sp->dtype),
			 fc_codec_name(sp->codec));
		memset(&ex, 0, sizeof ex);
		hash128(ex.id, text);
		snprintf(desc, sizeof desc,
			 "{\"model\":\"synthetic\",\"layer\":\"mkstore\",\"seed\":%llu,\"index\":%llu}",
			 (unsigned long long)sp->seed, (unsigned long long)e);
		ex.dim = (uint32_t)sp->dim;
		ex.dtype = sp->dtype;
		ex.codec = sp->codec;
		ex.level = (int)sp->level;
		ex.descriptor = desc;
		if ((r = fc_store_put_extractor(s, &ex)) < 0) {
			rc = store_err(s, r, "add an extractor to");
			goto out;
		}
		for (uint64_t content = 0; content < distinct; content++) {
			content_hash(sp, sp->first + content, hashes[n]);
			r = fc_store_has(s, ex.id, hashes[n]);
			if (r < 0) {
				rc = store_err(s, r, "read");
				goto out;
			}
			if (r == 1)
				continue;
			make_vector(sp, e, sp->first + content, vecs + n * sp->dim);
			n++;
			if (n == sp->batch || content + 1 == distinct) {
				if ((r = fc_store_append(s, ex.id, vecs,
							 (const uint8_t(*)[FC_HASH_LEN])hashes, n,
							 NULL)) < 0) {
					rc = store_err(s, r, "append to");
					goto out;
				}
				vectors += n;
				n = 0;
			}
		}
		if (n) {
			if ((r = fc_store_append(s, ex.id, vecs, (const uint8_t(*)[FC_HASH_LEN])hashes,
						 n, NULL)) < 0) {
				rc = store_err(s, r, "append to");
				goto out;
			}
			vectors += n;
		}
		fc_hex(hex, ex.id, FC_HASH_LEN);
		printf("extractor %s\n", hex);
	}
	printf("items %llu failed %llu vectors %llu\n", (unsigned long long)sp->items,
	       (unsigned long long)sp->failed, (unsigned long long)vectors);
	rc = 0;
out:
	if (keys)
		for (uint64_t i = 0; i < total; i++)
			free(keys[i]);
	if (names)
		for (uint64_t c = 0; c < sp->classes; c++)
			free(names[c]);
	free(keys);
	free(names);
	free(items);
	free(label_ids);
	free(vecs);
	free(hashes);
	fc_store_free(s);
	return rc;
}

/* ---- remove items (public API: leaves orphaned vectors for gc) ---- */

struct key_list {
	uint64_t want, n;
	char **keys;
};

static int take_key(void *ctx, const fc_item *it)
{
	struct key_list *l = ctx;

	if (l->n == l->want)
		return 1;
	l->keys[l->n] = strdup(it->key);
	if (!l->keys[l->n])
		return FC_ERR_NOMEM;
	l->n++;
	return 0;
}

static int remove_items(const char *path, uint64_t k)
{
	fc_store_opts opts;
	fc_store *s = NULL;
	struct key_list l = { k, 0, NULL };
	int rc = 1, r;

	memset(&opts, 0, sizeof opts);
	opts.nosync = 1; /* a test store: speed over durability */
	r = fc_store_open(&s, path, &opts);
	if (r < 0) {
		rc = store_err(s, r, "open");
		goto out;
	}
	l.keys = calloc(k ? k : 1, sizeof *l.keys);
	if (!l.keys) {
		rc = fail("out of memory");
		goto out;
	}
	r = fc_store_foreach_item(s, take_key, &l);
	if (r < 0) {
		rc = store_err(s, r, "read items of");
		goto out;
	}
	if (l.n < k) {
		rc = fail("the store has only %llu items", (unsigned long long)l.n);
		goto out;
	}
	r = fc_store_del_items(s, (const char *const *)l.keys, l.n);
	if (r < 0) {
		rc = store_err(s, r, "remove items from");
		goto out;
	}
	printf("removed %llu items\n", (unsigned long long)l.n);
	rc = 0;
out:
	if (l.keys)
		for (uint64_t i = 0; i < l.n; i++)
			free(l.keys[i]);
	free(l.keys);
	fc_store_free(s);
	return rc;
}

/* ---- damage (raw LMDB) ---- */

enum damage { DMG_NONE, DMG_CHUNK, DMG_INDEX, DMG_ITEM, DMG_FORMAT, DMG_DESCRIPTOR };

/* Find the named db "<prefix><hex>" whose hex starts with `want` (any when
 * NULL) by walking the main db, whose keys are the names of the others. */
static int find_db(MDB_txn *txn, const char *prefix, const char *want, char *name, size_t cap)
{
	MDB_dbi main_db;
	MDB_cursor *cur;
	MDB_val k, v;
	size_t pl = strlen(prefix);
	int rc, found = 0;

	if ((rc = mdb_dbi_open(txn, NULL, 0, &main_db)) != 0)
		return fail("cannot open the main db: %s", mdb_strerror(rc));
	if ((rc = mdb_cursor_open(txn, main_db, &cur)) != 0)
		return fail("cannot walk the main db: %s", mdb_strerror(rc));
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && !found;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		const char *kp = k.mv_data;

		if (k.mv_size <= pl || k.mv_size >= cap || memcmp(kp, prefix, pl) != 0)
			continue;
		if (want && (k.mv_size - pl < strlen(want) || memcmp(kp + pl, want, strlen(want)) != 0))
			continue;
		memcpy(name, kp, k.mv_size);
		name[k.mv_size] = '\0';
		found = 1;
	}
	mdb_cursor_close(cur);
	if (!found)
		return fail("no '%s%s' database in the store", prefix, want ? want : "*");
	return 0;
}

/* Overwrite the value at k in dbi with a damaged copy of it. */
static int put_damaged(MDB_txn *txn, MDB_dbi dbi, MDB_val *k, const MDB_val *old, enum damage how)
{
	MDB_val nv;
	uint8_t *buf = malloc(old->mv_size ? old->mv_size : 1);
	int rc;

	if (!buf)
		return fail("out of memory");
	memcpy(buf, old->mv_data, old->mv_size);
	nv.mv_data = buf;
	nv.mv_size = old->mv_size;
	switch (how) {
	case DMG_CHUNK:
		/* One flipped bit near the end: past the header, inside the payload. */
		buf[old->mv_size - 1] ^= 0x10;
		break;
	case DMG_INDEX:
		/* Chunk id 2^64-1, slot 2^32-1: a chunk that cannot exist. */
		memset(buf, 0xff, old->mv_size);
		break;
	case DMG_ITEM:
		nv.mv_size = old->mv_size / 2;
		break;
	case DMG_DESCRIPTOR:
		nv.mv_size = old->mv_size < 8 ? old->mv_size : 8; /* cut-off JSON */
		break;
	default:
		break;
	}
	rc = mdb_put(txn, dbi, k, &nv, 0);
	free(buf);
	if (rc)
		return fail("cannot write: %s", mdb_strerror(rc));
	return 0;
}

static int damage(const char *path, enum damage how, const char *arg, const char *ex_want)
{
	MDB_env *env = NULL;
	MDB_txn *txn = NULL;
	MDB_dbi dbi;
	MDB_cursor *cur = NULL;
	MDB_val k, v;
	char name[64] = "?", what[4200] = "?", hex[2 * FC_HASH_LEN + 1];
	uint8_t id[FC_HASH_LEN]; /* the key of a descriptor: must outlive the switch */
	int rc, ret = 1;

	if ((rc = mdb_env_create(&env)) != 0)
		return fail("cannot create an LMDB environment: %s", mdb_strerror(rc));
	mdb_env_set_maxdbs(env, 1024);
	/* No mapsize: LMDB takes the one recorded in the file. */
	if ((rc = mdb_env_open(env, path, 0, 0664)) != 0) {
		fail("cannot open '%s' with LMDB: %s", path, mdb_strerror(rc));
		goto out;
	}
	if ((rc = mdb_txn_begin(env, NULL, 0, &txn)) != 0) {
		fail("cannot begin a transaction: %s", mdb_strerror(rc));
		goto out;
	}
	switch (how) {
	case DMG_CHUNK:
	case DMG_INDEX:
	case DMG_DESCRIPTOR:
		if (find_db(txn, how == DMG_INDEX ? "index." : "feat.", ex_want, name, sizeof name))
			goto out;
		if (how == DMG_DESCRIPTOR) {
			const char *h = name + 5;

			for (int i = 0; i < FC_HASH_LEN; i++) {
				unsigned b;

				if (sscanf(h + 2 * i, "%2x", &b) != 1) {
					fail("bad db name '%s'", name);
					goto out;
				}
				id[i] = (uint8_t)b;
			}
			rc = mdb_dbi_open(txn, "extractors", 0, &dbi);
			k.mv_data = id;
			k.mv_size = FC_HASH_LEN;
			if (rc == 0)
				rc = mdb_get(txn, dbi, &k, &v);
			snprintf(what, sizeof what, "extractors/%s", h);
			break;
		}
		if ((rc = mdb_dbi_open(txn, name, 0, &dbi)) != 0) {
			fail("cannot open '%s': %s", name, mdb_strerror(rc));
			goto out;
		}
		if (how == DMG_INDEX) {
			if ((rc = mdb_cursor_open(txn, dbi, &cur)) == 0)
				rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
			if (rc == 0 && k.mv_size == FC_HASH_LEN) {
				fc_hex(hex, k.mv_data, FC_HASH_LEN);
				snprintf(what, sizeof what, "%s/%s", name, hex);
			}
			break;
		}
		if (!strcmp(arg, "first") || !strcmp(arg, "last")) {
			if ((rc = mdb_cursor_open(txn, dbi, &cur)) == 0)
				rc = mdb_cursor_get(cur, &k, &v, arg[0] == 'f' ? MDB_FIRST : MDB_LAST);
		} else {
			uint64_t cid;
			char *end;

			errno = 0;
			cid = strtoull(arg, &end, 10);
			if (arg[0] < '0' || arg[0] > '9' || *end || errno) {
				ret = usage_error("bad value '%s' for --corrupt-chunk", arg);
				goto out;
			}
			for (int i = 0; i < 8; i++)
				id[i] = (uint8_t)(cid >> (56 - 8 * i));
			k.mv_data = id;
			k.mv_size = 8;
			rc = mdb_get(txn, dbi, &k, &v);
		}
		if (rc == 0 && k.mv_size == 8) {
			const uint8_t *p = k.mv_data;
			uint64_t cid = 0;

			for (int i = 0; i < 8; i++)
				cid = cid << 8 | p[i];
			snprintf(what, sizeof what, "%s/chunk %llu", name, (unsigned long long)cid);
		}
		break;
	case DMG_ITEM:
		if ((rc = mdb_dbi_open(txn, "items", 0, &dbi)) != 0) {
			fail("cannot open 'items': %s", mdb_strerror(rc));
			goto out;
		}
		if (!strcmp(arg, "first")) {
			if ((rc = mdb_cursor_open(txn, dbi, &cur)) == 0)
				rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
		} else {
			k.mv_data = (void *)arg;
			k.mv_size = strlen(arg);
			rc = mdb_get(txn, dbi, &k, &v);
		}
		if (rc == 0)
			snprintf(what, sizeof what, "items/%.*s", (int)(k.mv_size < 4000 ? k.mv_size : 4000),
				 (const char *)k.mv_data);
		break;
	case DMG_FORMAT: {
		uint64_t n;
		uint8_t le[4];
		MDB_val nv = { 4, le };

		if ((ret = parse_u64("--set-format", arg, 0, UINT32_MAX, &n)) != 0)
			goto out;
		ret = 1;
		for (int i = 0; i < 4; i++)
			le[i] = (uint8_t)(n >> (8 * i));
		if ((rc = mdb_dbi_open(txn, "meta", 0, &dbi)) != 0) {
			fail("cannot open 'meta': %s", mdb_strerror(rc));
			goto out;
		}
		k.mv_data = (void *)"format";
		k.mv_size = 6;
		if ((rc = mdb_put(txn, dbi, &k, &nv, 0)) != 0) {
			fail("cannot write: %s", mdb_strerror(rc));
			goto out;
		}
		snprintf(what, sizeof what, "meta/format = %llu", (unsigned long long)n);
		goto commit;
	}
	default:
		goto out;
	}
	if (rc) {
		fail("nothing to damage there: %s", mdb_strerror(rc));
		goto out;
	}
	if (put_damaged(txn, dbi, &k, &v, how))
		goto out;
commit:
	if (cur) {
		mdb_cursor_close(cur);
		cur = NULL;
	}
	rc = mdb_txn_commit(txn);
	txn = NULL;
	if (rc) {
		fail("cannot commit: %s", mdb_strerror(rc));
		goto out;
	}
	printf("corrupted %s\n", what);
	ret = 0;
out:
	if (cur)
		mdb_cursor_close(cur);
	if (txn)
		mdb_txn_abort(txn);
	mdb_env_close(env);
	return ret;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "dim", required_argument, NULL, 'd' },
		{ "noise", required_argument, NULL, 'N' },
		{ "mixed-splits", no_argument, NULL, 'M' },
		{ "no-val", no_argument, NULL, 'W' },
		{ "poison", required_argument, NULL, 'Q' },
		{ "items", required_argument, NULL, 'n' },
		{ "first", required_argument, NULL, 'f' },
		{ "classes", required_argument, NULL, 'c' },
		{ "dtype", required_argument, NULL, 't' },
		{ "codec", required_argument, NULL, 'k' },
		{ "level", required_argument, NULL, 'l' },
		{ "batch", required_argument, NULL, 'b' },
		{ "seed", required_argument, NULL, 'S' },
		{ "dup", required_argument, NULL, 'D' },
		{ "failed", required_argument, NULL, 'F' },
		{ "extractors", required_argument, NULL, 'E' },
		{ "extractor", required_argument, NULL, 'x' },
		{ "remove-items", required_argument, NULL, 'R' },
		{ "corrupt-chunk", required_argument, NULL, 'C' },
		{ "corrupt-index", no_argument, NULL, 'I' },
		{ "corrupt-item", required_argument, NULL, 'T' },
		{ "corrupt-descriptor", no_argument, NULL, 'P' },
		{ "set-format", required_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct spec sp = { .dim = 16, .items = 100, .classes = 4, .level = 3, .batch = 32, .seed = 1,
			    .extractors = 1, .noise_pct = 50, .dtype = FC_DTYPE_F16, .codec = FC_CODEC_SHUFFLE_ZSTD };
	enum damage how = DMG_NONE;
	const char *arg = NULL, *ex_want = NULL;
	uint64_t remove = 0;
	int c, rc, modes = 0;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		rc = 0;
		switch (c) {
		case 's': sp.store = optarg; break;
		case 'd': rc = parse_u64("--dim", optarg, 1, 1u << 20, &sp.dim); break;
		case 'N': rc = parse_u64("--noise", optarg, 0, 100000, &sp.noise_pct); break;
		case 'M': sp.mixed_splits = 1; break;
		case 'W': sp.no_val = 1; break;
		case 'Q': rc = parse_u64("--poison", optarg, 1, UINT64_MAX, &sp.poison); break;
		case 'n': rc = parse_u64("--items", optarg, 0, 10000000, &sp.items); break;
		case 'f': rc = parse_u64("--first", optarg, 0, 10000000, &sp.first); break;
		case 'c': rc = parse_u64("--classes", optarg, 1, 100000, &sp.classes); break;
		case 'l': rc = parse_u64("--level", optarg, 1, 19, &sp.level); break;
		case 'b': rc = parse_u64("--batch", optarg, 1, 65535, &sp.batch); break;
		case 'S': rc = parse_u64("--seed", optarg, 0, UINT32_MAX, &sp.seed); break;
		case 'D': rc = parse_u64("--dup", optarg, 0, 10000000, &sp.dup); break;
		case 'F': rc = parse_u64("--failed", optarg, 0, 10000000, &sp.failed); break;
		case 'E': rc = parse_u64("--extractors", optarg, 1, 64, &sp.extractors); break;
		case 't':
			if (fc_dtype_parse(optarg, &sp.dtype))
				rc = usage_error("bad value '%s' for --dtype", optarg);
			break;
		case 'k':
			if (fc_codec_parse(optarg, &sp.codec))
				rc = usage_error("bad value '%s' for --codec", optarg);
			break;
		case 'x': ex_want = optarg; break;
		case 'R':
			rc = parse_u64("--remove-items", optarg, 1, 10000000, &remove);
			modes++;
			break;
		case 'C': how = DMG_CHUNK; arg = optarg; modes++; break;
		case 'I': how = DMG_INDEX; modes++; break;
		case 'T': how = DMG_ITEM; arg = optarg; modes++; break;
		case 'P': how = DMG_DESCRIPTOR; modes++; break;
		case 'V': how = DMG_FORMAT; arg = optarg; modes++; break;
		case 'h': fputs(usage_text, stdout); return 0;
		case ':': return usage_error("option '%s' needs a value", argv[optind - 1]);
		default: return usage_error("unknown option '%s'", argv[optind - 1]);
		}
		if (rc)
			return rc;
	}
	if (optind < argc)
		return usage_error("unexpected argument '%s'", argv[optind]);
	if (!sp.store)
		return usage_error("--store DIR is required");
	if (modes > 1)
		return usage_error("one of --remove-items and the damage options at a time");
	if (remove)
		rc = remove_items(sp.store, remove);
	else if (how != DMG_NONE)
		rc = damage(sp.store, how, arg, ex_want);
	else if (sp.items && sp.dup >= sp.items)
		return usage_error("--dup %llu leaves no distinct content among %llu items",
				   (unsigned long long)sp.dup, (unsigned long long)sp.items);
	else
		rc = make_store(&sp);
	if (fflush(stdout) != 0 || ferror(stdout))
		return fail("cannot write standard output");
	return rc;
}
