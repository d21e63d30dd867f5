/*
 * cmd_eval.c - `featcache eval`: retrieval metrics of a split's cached
 * features, raw and (with --head) through a trained head, with Finetuner's
 * metric definitions.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/data.h"
#include "featcache/train.h"

static const char usage_text[] =
	"usage: featcache eval --store DIR [--head HEAD.safetensors] [options]\n"
	"\n"
	"Search every item of a split among the items of a split by cosine\n"
	"similarity and report precision, recall, f1 and hit at k, average precision\n"
	"(within the top k), reciprocal rank, r-precision, dcg and ndcg at k:\n"
	"for the raw backbone features and, with --head, for the head's embeddings.\n"
	"\n"
	"  -s, --store DIR        the store (default: $FEATCACHE_STORE)\n"
	"      --head FILE        a head written by 'featcache train' (or a PyTorch state dict)\n"
	"      --extractor ID     which feature set (hex prefix; default: the head's, or the\n"
	"                         store's only one); a head is refused on another's\n"
	"      --split S          the queries (default val)\n"
	"      --index-split S    where to search them (default: the query split itself,\n"
	"                         each query excluded from its own results)\n"
	"      --val-from-train F the share of the train split taken as val, as\n"
	"                         'featcache train --val-from-train F' carves it\n"
	"  -k, --k K              metrics at k (default 20)\n"
	"      --json             print the metrics as JSON\n"
	"      --max-memory SIZE  memory eval may use (default: 3/4 of MemAvailable): the\n"
	"                         features stay in RAM in the stored dtype when they fit,\n"
	"                         else they are streamed from the store (the same metrics)\n"
	"      --cache SIZE       decoded chunks kept when streaming (default 256M)\n"
	"  -h, --help             show this help\n";

enum { O_HEAD = 256, O_EXTRACTOR, O_SPLIT, O_INDEX_SPLIT, O_JSON, O_VALFT, O_MAXMEM, O_CACHE };

static const struct option opts[] = {
	{ "store", required_argument, NULL, 's' },   { "head", required_argument, NULL, O_HEAD },
	{ "extractor", required_argument, NULL, O_EXTRACTOR },
	{ "split", required_argument, NULL, O_SPLIT }, { "index-split", required_argument, NULL, O_INDEX_SPLIT },
	{ "k", required_argument, NULL, 'k' },       { "json", no_argument, NULL, O_JSON },
	{ "val-from-train", required_argument, NULL, O_VALFT },
	{ "max-memory", required_argument, NULL, O_MAXMEM }, { "cache", required_argument, NULL, O_CACHE },
	{ "help", no_argument, NULL, 'h' },          { NULL, 0, NULL, 0 },
};

static void print_table(const fc_metrics *raw, const fc_metrics *head, size_t k)
{
	printf("%-20s %10s%s\n", "metric", "raw", head ? "       head" : "");
	for (int i = 0; i < 9; i++) {
		double a, b = 0;
		fc_metric_get(raw, fc_metric_names[i], &a);
		if (head)
			fc_metric_get(head, fc_metric_names[i], &b);
		printf("%-20s %10.4f", fc_metric_names[i], a);
		if (head)
			printf(" %10.4f", b);
		putchar('\n');
	}
	printf("queries %zu, k %zu\n", raw->queries, k);
}

int cmd_eval(int argc, char **argv)
{
	const char *store = NULL, *head_path = NULL, *extractor = NULL, *split = "val", *index_split = NULL;
	uint64_t k = 20;
	float vf = 0;
	cli_mem_opts mem = { 0 };
	cli_feature_plan plan = { 0 };
	int json = 0, c, rc;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":s:k:h", opts, NULL)) != -1) {
		rc = 0;
		switch (c) {
		case 's': store = optarg; break;
		case 'k': rc = cli_parse_u64("eval", "--k", optarg, 1, 100000, &k); break;
		case 'h': fputs(usage_text, stdout); return CLI_EXIT_OK;
		case O_HEAD: head_path = optarg; break;
		case O_EXTRACTOR: extractor = optarg; break;
		case O_SPLIT: split = optarg; break;
		case O_INDEX_SPLIT: index_split = optarg; break;
		case O_JSON: json = 1; break;
		case O_VALFT: rc = cli_parse_float("eval", "--val-from-train", optarg, 0, 0.99, &vf); break;
		case O_MAXMEM: rc = cli_parse_size("eval", "--max-memory", optarg, &mem.max_memory); break;
		case O_CACHE: rc = cli_parse_size("eval", "--cache", optarg, &mem.cache); break;
		default: return cli_getopt_error("eval", c, argv, opts);
		}
		if (rc)
			return rc;
	}
	if ((rc = cli_no_operands("eval", argc, argv)) || (rc = cli_need_store("eval", store, &store)))
		return rc;
	unsigned qmask, imask = 0;
	if ((rc = cli_parse_splits("eval", "--split", split, &qmask)) ||
	    (index_split && (rc = cli_parse_splits("eval", "--index-split", index_split, &imask))))
		return rc;

	fc_store *s = NULL;
	fc_head *head = NULL;
	cli_head_origin origin = { 0 };
	cli_split_data q = { 0 }, ix = { 0 };
	char why[FC_ERRLEN] = "";
	if (head_path && (rc = fc_head_load(&head, head_path, 1024, why)) != 0)
		return cli_fail("cannot load head '%s': %s", head_path, why);
	if (head)
		cli_head_origin_read(&origin, head_path);
	if ((rc = cli_open_store(&s, store, 1)) != 0)
		goto out;
	uint8_t id[FC_HASH_LEN];
	if ((rc = cli_pick_head_extractor("eval", s, extractor, head_path, &origin, id)) ||
	    (rc = cli_load_split_as(s, id, qmask, 0, vf, FC_LOAD_NONE, &q)) ||
	    (index_split && (rc = cli_load_split_as(s, id, imask, 0, vf, FC_LOAD_NONE, &ix))))
		goto out;
	char what[FC_ERRLEN], advice[FC_ERRLEN];
	if (q.m.rows == 0 && cli_split_empty(s, qmask, vf, "--split", split, what, advice, sizeof what)) {
		rc = cli_fail("%s: %s", what, advice);
		goto out;
	}
	if (q.m.rows == 0) {
		rc = cli_fail("the %s split of store '%s' has no labelled features", split, store);
		goto out;
	}
	if (index_split && ix.m.rows == 0 &&
	    cli_split_empty(s, imask, vf, "--index-split", index_split, what, advice, sizeof what)) {
		rc = cli_fail("%s: %s", what, advice);
		goto out;
	}
	if (head && fc_head_get_config(head).in_dim != q.m.dim) {
		rc = cli_fail("head '%s' takes %u-d input, the features are %zu-d", head_path,
			     fc_head_get_config(head).in_dim, q.m.dim);
		goto out;
	}
	const fc_matrix *im = index_split ? &ix.m : &q.m;
	/* What evaluation adds to the features: the packed, normalised copies
	 * of queries and index (raw, and through the head), a block of rows
	 * converted at a time. */
	uint64_t dim = q.m.dim, out_dim = head ? fc_head_get_config(head).out_dim : 0;
	uint64_t extra = ((uint64_t)q.m.rows + im->rows) * (dim + 2 * out_dim) * sizeof(float) +
			 4096 * dim * sizeof(float);
	cli_split_data *sp[2] = { &q, &ix };
	if ((rc = cli_plan_features(&plan, "eval", &s, id, sp, 2, extra, &mem, json)) != 0)
		goto out;
	const fc_rows *qx = &q.x, *ixx = index_split ? &ix.x : &q.x;
	fc_metrics raw, tuned;
	int self = !index_split;
	size_t k_used = cli_k_used(k, self ? im->rows - 1 : im->rows, split);
	if ((rc = fc_eval_rows(&raw, NULL, qx, q.m.labels, ixx, im->labels, k, self)) ||
	    (head && (rc = fc_eval_rows(&tuned, head, qx, q.m.labels, ixx, im->labels, k, self)))) {
		if (plan.store && fc_store_errmsg(plan.store)[0])
			rc = cli_fail("cannot evaluate: %s", fc_store_errmsg(plan.store));
		else
			rc = cli_fail("cannot evaluate: %s", fc_strerror(rc));
		goto out;
	}
	if (json) {
		json_t *j =
			json_pack("{s:s, s:s?, s:I, s:I, s:o}", "split", split, "index_split", index_split, "k",
				  (json_int_t)k_used, "queries", (json_int_t)q.m.rows, "raw", fc_metrics_to_json(&raw, 1));
		if (head)
			json_object_set_new(j, "head", fc_metrics_to_json(&tuned, 1));
		json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		putchar('\n');
		json_decref(j);
	} else {
		print_table(&raw, head ? &tuned : NULL, k_used);
	}
	rc = CLI_EXIT_OK;
out:
	cli_split_data_free(&q);
	cli_split_data_free(&ix);
	cli_feature_plan_free(&plan);
	cli_head_origin_free(&origin);
	fc_head_free(head);
	fc_store_free(s);
	return rc;
}
