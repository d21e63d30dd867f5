/*
 * cmd_report.c - `featcache report`: one self-contained HTML page with
 * charts of a training run (its JSON-lines log) or a sweep (its
 * results.jsonl), and with --store the pictures of what a head learned
 * (cli/gallery.c): neighbour galleries, a per-class table, an embedding
 * map. The reading and drawing live in report/; this file is the options
 * and the messages.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "cli/gallery.h"
#include "featcache/report.h"

static const char usage_text[] =
	"usage: featcache report PATH... [--out FILE] [--metric NAME] [--title TEXT] [--store DIR [options]]\n"
	"       featcache report --store DIR --head HEAD.safetensors [--split S] [options]\n"
	"\n"
	"Write one HTML page that opens offline (inline CSS, SVG and thumbnails,\n"
	"nothing fetched) with charts of training runs and sweeps: the loss and the\n"
	"metric per epoch, raw features against the head for all nine metrics, the\n"
	"metric against every swept parameter, a leaderboard and the configuration.\n"
	"Each PATH is a training log (HEAD.safetensors.jsonl, written by 'featcache\n"
	"train --out HEAD.safetensors'), a sweep's results.jsonl, or a sweep\n"
	"directory; several training logs are compared like the configurations of a\n"
	"sweep.\n"
	"\n"
	"With --store the page also shows what the head learned on the eval split:\n"
	"neighbour galleries (queries with their nearest items, raw features and\n"
	"head, same class or not, thumbnails of the images), precision and mAP per\n"
	"class with the most confused class pairs, and a 2-D map of the embeddings.\n"
	"The head is --head, else the log's (PATH without .jsonl) or the sweep's\n"
	"best.safetensors; the split and k are the head's run's unless given.\n"
	"\n"
	"  -o, --out FILE       where the page goes (default report.html); written\n"
	"                       whole or not at all\n"
	"  -m, --metric NAME    the metric to chart and rank by (default\n"
	"                       average_precision; also map, precision, recall, f1, hit,\n"
	"                       mrr, rprecision, dcg, ndcg or any Finetuner metric name)\n"
	"  -t, --title TEXT     the page title (default: made from the first PATH)\n"
	"  -s, --store DIR      the store the head's features are in\n"
	"      --head FILE      the head to show\n"
	"      --extractor ID   which feature set (default: the head's)\n"
	"      --split S        the queries (default: the run's eval split, else val)\n"
	"      --index-split S  where they are searched (default: the split itself)\n"
	"  -k, --k K            per-query and per-class metrics at k (default: the run's, else 20)\n"
	"      --data DIR       where the images are: the directory the item keys are\n"
	"                       relative to (default: where 'featcache extract' read them)\n"
	"      --queries N      the seeded sample of queries (default 12; the 4 the head\n"
	"                       improved most and the 4 it hurt most come on top)\n"
	"      --neighbours N   neighbours per query (default 8)\n"
	"      --seed S         the sample's seed (default 0)\n"
	"  -q, --quiet          do not say where the report went\n"
	"  -h, --help           show this help\n";

enum { O_HEAD = 256, O_EXTRACTOR, O_SPLIT, O_INDEX_SPLIT, O_DATA, O_QUERIES, O_NEIGHBOURS, O_SEED };

static const struct option opts[] = {
	{ "out", required_argument, NULL, 'o' },
	{ "metric", required_argument, NULL, 'm' },
	{ "title", required_argument, NULL, 't' },
	{ "store", required_argument, NULL, 's' },
	{ "head", required_argument, NULL, O_HEAD },
	{ "extractor", required_argument, NULL, O_EXTRACTOR },
	{ "split", required_argument, NULL, O_SPLIT },
	{ "index-split", required_argument, NULL, O_INDEX_SPLIT },
	{ "k", required_argument, NULL, 'k' },
	{ "data", required_argument, NULL, O_DATA },
	{ "queries", required_argument, NULL, O_QUERIES },
	{ "neighbours", required_argument, NULL, O_NEIGHBOURS },
	{ "seed", required_argument, NULL, O_SEED },
	{ "quiet", no_argument, NULL, 'q' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* The head a log or sweep was made for: HEAD.safetensors of its log
 * HEAD.safetensors.jsonl, or a sweep's best.safetensors. */
static int head_of(const char *path, char *buf, size_t cap)
{
	struct stat st;
	size_t n = strlen(path);
	const char *rj = "results.jsonl";
	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		return snprintf(buf, cap, "%s/best.safetensors", path) < (int)cap ? 0 : -1;
	if (n >= strlen(rj) && strcmp(path + n - strlen(rj), rj) == 0 &&
	    (n == strlen(rj) || path[n - strlen(rj) - 1] == '/'))
		return snprintf(buf, cap, "%.*sbest.safetensors", (int)(n - strlen(rj)), path) < (int)cap ? 0 : -1;
	if (n > 6 && strcmp(path + n - 6, ".jsonl") == 0)
		return snprintf(buf, cap, "%.*s", (int)(n - 6), path) < (int)cap ? 0 : -1;
	return -1;
}

int cmd_report(int argc, char **argv)
{
	const char *out = "report.html", *metric = "average_precision", *title = NULL;
	int c, quiet = 0, rc;
	cli_views_opts vo;
	cli_views_opts_init(&vo);

	optind = 1;
	while ((c = getopt_long(argc, argv, ":o:m:t:s:k:qh", opts, NULL)) != -1) {
		rc = 0;
		switch (c) {
		case 'o': out = optarg; break;
		case 'm': metric = optarg; break;
		case 't': title = optarg; break;
		case 's': vo.store = optarg; break;
		case O_HEAD: vo.head = optarg; break;
		case O_EXTRACTOR: vo.extractor = optarg; break;
		case O_SPLIT: vo.split = optarg; break;
		case O_INDEX_SPLIT: vo.index_split = optarg; break;
		case 'k': rc = cli_parse_u64("report", "--k", optarg, 1, 100000, &vo.k); break;
		case O_DATA: vo.data = optarg; break;
		case O_QUERIES: rc = cli_parse_u64("report", "--queries", optarg, 0, 1000, &vo.queries); break;
		case O_NEIGHBOURS: rc = cli_parse_u64("report", "--neighbours", optarg, 1, 100, &vo.neighbours); break;
		case O_SEED: rc = cli_parse_u64("report", "--seed", optarg, 0, UINT64_MAX, &vo.seed); break;
		case 'q': quiet = 1; break;
		case 'h': fputs(usage_text, stdout); return CLI_EXIT_OK;
		default: return cli_getopt_error("report", c, argv, opts);
		}
		if (rc)
			return rc;
	}
	size_t n = (size_t)(argc - optind);
	if (n == 0 && !vo.head)
		return cli_usage_error("report", "no PATH given: a training log (HEAD.safetensors.jsonl) or a sweep "
						 "directory, or --store with --head");
	if (!*out)
		return cli_usage_error("report", "--out is empty");
	if (cli_metric_check("report", "--metric", metric))
		return CLI_EXIT_USAGE;
	if (!vo.store && (vo.head || vo.split || vo.data || vo.index_split || vo.extractor))
		return cli_usage_error("report", "--head, --split, --index-split, --extractor and --data need --store");
	if (vo.index_split && !vo.split)
		return cli_usage_error("report", "--index-split needs --split");

	const char *const *paths = (const char *const *)(argv + optind);
	char head[4200];
	if (vo.store && !vo.head) {
		if (head_of(paths[0], head, sizeof head) != 0)
			return cli_usage_error("report", "which head is '%s' of? give --head", paths[0]);
		vo.head = head;
	}
	if (vo.store)
		return cli_views_report(out, paths, n, metric, title, &vo, quiet);

	char err[1024];
	size_t charts = 0;
	rc = fc_report_write(out, paths, n, metric, title, &charts, err, sizeof err);
	if (rc)
		return cli_fail("%s", err);
	if (!quiet)
		printf("report written to '%s' (%zu chart%s)\n", out, charts, charts == 1 ? "" : "s");
	return CLI_EXIT_OK;
}
