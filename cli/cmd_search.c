/*
 * cmd_search.c - `featcache search`: the nearest items of a store to each
 * query, by cosine similarity of the cached features (or, with --head, of
 * the head's embeddings), as a table or JSON. A query is an item key (its
 * cached vector) or an image file (extracted once with the store's
 * extractor and cached, as `embed --data` does).
 *
 * The ranking is fc_knn's, the one eval scores; this file only gathers the
 * vectors and prints. It does not exclude a query from its own results: an
 * item found by its key, or by an image file with its content, comes back
 * first with similarity 1.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/data.h"
#include "featcache/extract.h"
#include "featcache/train.h"

static const char usage_text[] =
	"usage: featcache search --store DIR (--query IMAGE | --key KEY)... [options]\n"
	"\n"
	"The k nearest items to each query by cosine similarity of the cached\n"
	"features, or with --head of the head's L2-normalised embeddings: rank,\n"
	"similarity, key, label and split. A query is an item's key (its cached\n"
	"vector) or an image file, extracted with the store's extractor unless the\n"
	"store has its content, and then kept in the store (its items are not\n"
	"changed). --query and --key repeat and mix; results come in the order\n"
	"given. A query that is itself an item of the index comes back first with\n"
	"similarity 1.\n"
	"\n"
	"  -s, --store DIR      the store (default: $FEATCACHE_STORE)\n"
	"      --query IMAGE    an image file (.jpg, .jpeg or .png) to search for\n"
	"      --key KEY        an item of the store to search for\n"
	"  -k, --k K            neighbours per query (default 10)\n"
	"      --split S        the items searched: train, val, test, all or a comma\n"
	"                       list (default all)\n"
	"      --head FILE      compare the head's embeddings (from 'featcache train')\n"
	"      --extractor ID   which feature set (hex prefix; default: the head's, or the\n"
	"                       store's only one); a head is refused on another's\n"
	"  -m, --model FILE     for --query: the ONNX model the extractor was made with\n"
	"                       (default: the file it records, if its bytes are unchanged)\n"
	"      --threads N      engine threads (default: OMP_NUM_THREADS or all cores)\n"
	"      --json           print the results as one JSON document\n"
	"  -q, --quiet          no progress\n"
	"  -h, --help           show this help\n";

enum { O_QUERY = 256, O_KEY, O_SPLIT, O_HEAD, O_EXTRACTOR, O_THREADS, O_JSON };

static const struct option opts[] = {
	{ "store", required_argument, NULL, 's' },	     { "query", required_argument, NULL, O_QUERY },
	{ "key", required_argument, NULL, O_KEY },	     { "k", required_argument, NULL, 'k' },
	{ "split", required_argument, NULL, O_SPLIT },	     { "head", required_argument, NULL, O_HEAD },
	{ "extractor", required_argument, NULL, O_EXTRACTOR }, { "model", required_argument, NULL, 'm' },
	{ "threads", required_argument, NULL, O_THREADS },   { "json", no_argument, NULL, O_JSON },
	{ "quiet", no_argument, NULL, 'q' },		     { "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* One query, in command-line order. */
struct query {
	const char *name; /* the key or the image path */
	int is_key;
	uint32_t label;   /* a key's item: its label and split */
	uint8_t split;
};

/* What the output needs besides the neighbours. */
struct search {
	fc_store *s;
	const fc_matrix *ix;
	const struct query *q;
	size_t nq, k;
	const uint32_t *idx;
	const float *sim;
	const size_t *counts;
};

static const char *split_name(uint8_t split)
{
	static const char *const names[] = { "train", "val", "test" };
	return split < 3 ? names[split] : "none";
}

/* The label's name into buf, NULL for an item without one. */
static int label_name(fc_store *s, uint32_t label, char *buf, size_t cap, const char **name)
{
	*name = NULL;
	if (label == FC_NO_LABEL)
		return 0;
	int rc = fc_store_label_name(s, label, buf, cap);
	if (rc)
		return cli_store_fail(s, rc, "read labels of");
	*name = buf;
	return 0;
}

/* The cached vector of item `key` into v (dim floats); exit code on failure. */
static int key_vector(fc_store *s, const uint8_t id[FC_HASH_LEN], struct query *q, float *v, size_t dim)
{
	fc_item it;
	char hex[2 * FC_HASH_LEN + 1];
	int rc = fc_store_get_item(s, q->name, &it);
	if (rc == FC_ERR_NOT_FOUND || rc == FC_ERR_INVALID)
		return cli_fail("cannot search for key '%s': no such item in store '%s'", q->name, fc_store_path(s));
	if (rc)
		return cli_store_fail(s, rc, "read");
	fc_hex(hex, id, FC_HASH_LEN);
	if (it.status != FC_ITEM_OK)
		return cli_fail("cannot search for key '%s': the item could not be decoded, it has no features",
				q->name);
	rc = fc_store_has(s, id, it.hash);
	if (rc < 0)
		return cli_store_fail(s, rc, "read");
	if (rc == 0)
		return cli_fail("cannot search for key '%s': it has no features of extractor %.12s yet (run 'featcache "
				"extract')",
				q->name, hex);
	if ((rc = fc_store_get(s, id, it.hash, v, dim)) != 0)
		return cli_store_fail(s, rc, "read");
	q->label = it.label;
	q->split = it.split;
	return 0;
}

/* The vectors of the image queries, in their order among the queries. */
static int image_vectors(fc_store *s, const uint8_t id[FC_HASH_LEN], const char *model, int threads,
			 const struct query *q, size_t nq, float *qvec, size_t dim)
{
	fc_dataset ds = { 0 };
	cli_image_vectors iv = { 0 };
	int rc = 0;
	size_t n = 0;
	for (size_t i = 0; i < nq; i++)
		n += !q[i].is_key;
	if (n == 0)
		return 0;
	if (!(ds.entries = calloc(n, sizeof *ds.entries)))
		return cli_fail("out of memory");
	for (size_t i = 0; i < nq; i++)
		if (!q[i].is_key)
			ds.entries[ds.n++] = (fc_entry){ .key = q[i].name, .path = q[i].name, .split = FC_SPLIT_NONE };
	/* An engine batch no larger than the queries: a few images are the usual case. */
	if ((rc = cli_embed_images(s, id, model, &ds, n < 32 ? (int)n : 32, threads, 1, &iv)) != 0)
		goto out;
	if (iv.n != n || iv.dim != dim) {
		rc = cli_fail("cannot embed the query images: %zu of %zu vectors of %zu floats, wanted %zu", iv.n, n,
			     iv.dim, dim);
		goto out;
	}
	for (size_t i = 0, r = 0; i < nq; i++)
		if (!q[i].is_key)
			memcpy(qvec + i * dim, iv.data + r++ * dim, dim * sizeof *qvec);
out:
	cli_image_vectors_free(&iv);
	fc_dataset_free(&ds);
	return rc;
}

static size_t max_len(size_t a, const char *s)
{
	size_t n = s ? strlen(s) : 1;
	return n > a ? n : a;
}

static int print_table(const struct search *r)
{
	char lq[FC_KEY_MAX + 1], lb[FC_KEY_MAX + 1];
	const char *name;
	int rc;
	for (size_t i = 0; i < r->nq; i++) {
		const struct query *q = &r->q[i];
		const uint32_t *idx = r->idx + i * r->k;
		const float *sim = r->sim + i * r->k;
		if (i)
			putchar('\n');
		if (q->is_key) {
			if ((rc = label_name(r->s, q->label, lq, sizeof lq, &name)) != 0)
				return rc;
			printf("query %zu: key '%s' (label %s, split %s)\n", i + 1, q->name, name ? name : "-",
			       split_name(q->split));
		} else {
			printf("query %zu: image '%s'\n", i + 1, q->name);
		}
		size_t wk = strlen("key"), wl = strlen("label");
		for (size_t j = 0; j < r->counts[i]; j++) {
			if ((rc = label_name(r->s, r->ix->labels[idx[j]], lb, sizeof lb, &name)) != 0)
				return rc;
			wk = max_len(wk, r->ix->keys[idx[j]]);
			wl = max_len(wl, name);
		}
		printf("%4s  %10s  %-*s  %-*s  %s\n", "rank", "similarity", (int)wk, "key", (int)wl, "label", "split");
		for (size_t j = 0; j < r->counts[i]; j++) {
			size_t row = idx[j];
			if ((rc = label_name(r->s, r->ix->labels[row], lb, sizeof lb, &name)) != 0)
				return rc;
			printf("%4zu  %10.4f  %-*s  %-*s  %s\n", j + 1, (double)sim[j], (int)wk, r->ix->keys[row], (int)wl,
			       name ? name : "-", split_name(r->ix->splits[row]));
		}
	}
	return 0;
}

/* A string, or null for NULL; NULL only when out of memory. */
static json_t *json_str_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

static int print_json(const struct search *r, const char *extractor, const char *head, const char *split)
{
	char lb[FC_KEY_MAX + 1];
	const char *name;
	int rc = 0;
	json_t *queries = json_array();
	json_t *doc = json_pack("{s:s, s:s, s:s?, s:s, s:I, s:I, s:o}", "store", fc_store_path(r->s), "extractor",
				extractor, "head", head, "split", split, "index_items", (json_int_t)r->ix->rows, "k",
				(json_int_t)r->k, "queries", queries);
	if (!doc)
		return cli_fail("out of memory");
	for (size_t i = 0; i < r->nq && !rc; i++) {
		const struct query *q = &r->q[i];
		json_t *nb = json_array(), *jq = json_object();
		if (!nb || !jq || json_array_append_new(queries, jq) != 0) {
			json_decref(nb);
			rc = cli_fail("out of memory");
			break;
		}
		json_object_set_new(jq, "query", json_string(q->name));
		json_object_set_new(jq, "type", json_string(q->is_key ? "key" : "image"));
		if (q->is_key) {
			if ((rc = label_name(r->s, q->label, lb, sizeof lb, &name)) != 0)
				break;
			json_object_set_new(jq, "label", json_str_or_null(name));
			json_object_set_new(jq, "split", json_string(split_name(q->split)));
		}
		json_object_set_new(jq, "neighbours", nb);
		for (size_t j = 0; j < r->counts[i] && !rc; j++) {
			size_t row = r->idx[i * r->k + j];
			if ((rc = label_name(r->s, r->ix->labels[row], lb, sizeof lb, &name)) != 0)
				break;
			json_t *e = json_pack("{s:I, s:s, s:o, s:s, s:f}", "rank", (json_int_t)(j + 1), "key",
					      r->ix->keys[row], "label", json_str_or_null(name), "split",
					      split_name(r->ix->splits[row]), "similarity",
					      (double)r->sim[i * r->k + j]);
			if (!e || json_array_append_new(nb, e) != 0)
				rc = cli_fail("out of memory");
		}
	}
	/* Nine significant digits give every float back exactly. */
	if (!rc && json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9)) == 0)
		putchar('\n');
	json_decref(doc);
	return rc;
}

/* rows (n, dim) through the head, L2-normalised, into a new array *out. */
static int head_apply(fc_head *head, const char *head_path, const float *rows, size_t n, size_t dim, float **out)
{
	fc_head_config hc = fc_head_get_config(head);
	if (hc.in_dim != dim)
		return cli_fail("head '%s' takes %u-d input, the features are %zu-d", head_path, hc.in_dim, dim);
	if (!(*out = malloc((n ? n : 1) * hc.out_dim * sizeof **out)))
		return cli_fail("out of memory");
	int rc = fc_head_embed(head, *out, rows, n, 1);
	if (rc)
		return cli_fail("cannot apply head '%s': %s", head_path, fc_strerror(rc));
	return 0;
}

int cmd_search(int argc, char **argv)
{
	const char *store = NULL, *head_path = NULL, *extractor = NULL, *split = "all", *model = NULL;
	uint64_t k = 10, threads = 0;
	int json = 0, quiet = 0, c, rc;
	size_t nq = 0, n_images = 0;
	struct query *q = calloc(argc > 0 ? (size_t)argc : 1, sizeof *q);
	if (!q)
		return cli_fail("out of memory");
	optind = 1;
	while ((c = getopt_long(argc, argv, ":s:k:m:qh", opts, NULL)) != -1) {
		rc = 0;
		switch (c) {
		case 's': store = optarg; break;
		case 'k': rc = cli_parse_u64("search", "-k", optarg, 1, 100000, &k); break;
		case 'm': model = optarg; break;
		case 'q': quiet = 1; break;
		case O_QUERY:
			q[nq++] = (struct query){ .name = optarg };
			n_images++;
			break;
		case O_KEY: q[nq++] = (struct query){ .name = optarg, .is_key = 1 }; break;
		case O_SPLIT: split = optarg; break;
		case O_HEAD: head_path = optarg; break;
		case O_EXTRACTOR: extractor = optarg; break;
		case O_THREADS: rc = cli_parse_u64("search", "--threads", optarg, 1, 1024, &threads); break;
		case O_JSON: json = 1; break;
		default: rc = cli_other_option("search", c, argv, opts, usage_text); goto done;
		}
		if (rc)
			goto done;
	}
	unsigned mask;
	if ((rc = cli_no_operands("search", argc, argv)) || (rc = cli_need_store("search", store, &store)) ||
	    (rc = cli_parse_splits("search", "--split", split, &mask)))
		goto done;
	if (nq == 0) {
		rc = cli_usage_error("search", "nothing to search for: give --query IMAGE or --key KEY");
		goto done;
	}
	for (size_t i = 0; i < nq; i++)
		if (!q[i].name[0]) {
			rc = cli_usage_error("search", "an empty %s", q[i].is_key ? "--key" : "--query");
			goto done;
		}
	if (model && !n_images) {
		rc = cli_usage_error("search", "--model is for --query images; --key queries use the cache");
		goto done;
	}
	cli_logger_flags(quiet ? CLI_QUIET : 0);

	fc_store *s = NULL;
	fc_head *head = NULL;
	cli_head_origin origin = { 0 };
	cli_split_data d = { 0 };
	float *qvec = NULL, *qemb = NULL, *iemb = NULL, *sim = NULL;
	uint32_t *idx = NULL;
	size_t *counts = NULL;
	char why[FC_ERRLEN] = "", hex[2 * FC_HASH_LEN + 1];
	uint8_t id[FC_HASH_LEN];
	fc_extractor ex;
	if (head_path && (rc = fc_head_load(&head, head_path, 1024, why)) != 0) {
		rc = cli_fail("cannot load head '%s': %s", head_path, why);
		goto out;
	}
	if (head)
		cli_head_origin_read(&origin, head_path);
	/* Only image queries write (their vectors, to the cache). */
	if ((rc = cli_open_store(&s, store, n_images == 0)) ||
	    (rc = cli_pick_head_extractor("search", s, extractor, head_path, &origin, id)))
		goto out;
	if ((rc = fc_store_get_extractor(s, id, &ex)) != 0) {
		rc = cli_store_fail(s, rc, "read");
		goto out;
	}
	fc_hex(hex, id, FC_HASH_LEN);
	size_t dim = ex.dim;
	if (!(qvec = malloc(nq * dim * sizeof *qvec))) {
		rc = cli_fail("out of memory");
		goto out;
	}
	/* Keys first: an unknown one fails before anything is extracted. */
	for (size_t i = 0; i < nq; i++)
		if (q[i].is_key && (rc = key_vector(s, id, &q[i], qvec + i * dim, dim)) != 0)
			goto out;
	if ((rc = image_vectors(s, id, model, (int)threads, q, nq, qvec, dim)) != 0 ||
	    (rc = cli_load_split(s, id, mask, 1, 0, &d)) != 0)
		goto out;
	if (d.missing)
		cli_warn("%zu items have no features yet (run 'featcache extract'); they are not searched", d.missing);
	if (d.m.rows == 0) {
		rc = cli_fail("store '%s' has no features of extractor %.12s in split %s to search", store, hex, split);
		goto out;
	}
	const float *qrows = qvec, *irows = d.m.data;
	if (head) {
		if ((rc = head_apply(head, head_path, qvec, nq, dim, &qemb)) ||
		    (rc = head_apply(head, head_path, d.m.data, d.m.rows, dim, &iemb)))
			goto out;
		qrows = qemb;
		irows = iemb;
		dim = fc_head_get_config(head).out_dim;
	}
	idx = malloc(nq * k * sizeof *idx);
	sim = malloc(nq * k * sizeof *sim);
	counts = malloc(nq * sizeof *counts);
	if (!idx || !sim || !counts) {
		rc = cli_fail("out of memory for %zu x %llu neighbours", nq, (unsigned long long)k);
		goto out;
	}
	if ((rc = fc_knn(idx, sim, counts, qrows, nq, irows, d.m.rows, dim, (size_t)k, 0)) != 0) {
		rc = cli_fail("cannot search: %s", fc_strerror(rc));
		goto out;
	}
	struct search r = { .s = s, .ix = &d.m, .q = q, .nq = nq, .k = (size_t)k, .idx = idx, .sim = sim,
			    .counts = counts };
	if (json) {
		rc = print_json(&r, hex, head_path, split);
	} else {
		printf("searched %zu items (split %s) of extractor %.12s%s%s\n\n", d.m.rows, split, hex,
		       head ? ", through head " : "", head ? head_path : "");
		rc = print_table(&r);
	}
out:
	free(idx);
	free(sim);
	free(counts);
	free(qemb);
	free(iemb);
	free(qvec);
	cli_split_data_free(&d);
	cli_head_origin_free(&origin);
	fc_head_free(head);
	fc_store_free(s);
done:
	free(q);
	return rc;
}
