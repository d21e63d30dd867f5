/*
 * cmd_report.c - `featcache report`: one self-contained HTML page with
 * charts of a training run (its JSON-lines log) or a sweep (its
 * results.jsonl). The reading and drawing live in report/; this file is
 * the options and the messages.
 */
#include <getopt.h>
#include <stdio.h>

#include "cli/cli.h"
#include "featcache/report.h"

static const char usage_text[] =
	"usage: featcache report PATH... [--out FILE] [--metric NAME] [--title TEXT]\n"
	"\n"
	"Write one HTML page that opens offline (inline CSS and SVG, nothing fetched)\n"
	"with charts of training runs and sweeps: the loss and the metric per epoch,\n"
	"raw features against the head for all nine metrics, the metric against every\n"
	"swept parameter, a leaderboard and the configuration. Each PATH is a training\n"
	"log (HEAD.safetensors.jsonl, written by 'featcache train --out\n"
	"HEAD.safetensors'), a sweep's results.jsonl, or a sweep directory; several\n"
	"training logs are compared like the configurations of a sweep.\n"
	"\n"
	"  -o, --out FILE      where the page goes (default report.html); written\n"
	"                      whole or not at all\n"
	"  -m, --metric NAME   the metric to chart and rank by (default\n"
	"                      average_precision; also map, precision, recall, f1, hit,\n"
	"                      mrr, rprecision, dcg, ndcg or any Finetuner metric name)\n"
	"  -t, --title TEXT    the page title (default: made from the first PATH)\n"
	"  -q, --quiet         do not say where the report went\n"
	"  -h, --help          show this help\n";

static const struct option opts[] = {
	{ "out", required_argument, NULL, 'o' },
	{ "metric", required_argument, NULL, 'm' },
	{ "title", required_argument, NULL, 't' },
	{ "quiet", no_argument, NULL, 'q' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

int cmd_report(int argc, char **argv)
{
	const char *out = "report.html", *metric = "average_precision", *title = NULL;
	int c, quiet = 0;

	optind = 1;
	while ((c = getopt_long(argc, argv, ":o:m:t:qh", opts, NULL)) != -1) {
		switch (c) {
		case 'o': out = optarg; break;
		case 'm': metric = optarg; break;
		case 't': title = optarg; break;
		case 'q': quiet = 1; break;
		case 'h': fputs(usage_text, stdout); return CLI_EXIT_OK;
		default: return cli_getopt_error("report", c, argv, opts);
		}
	}
	if (optind >= argc)
		return cli_usage_error("report", "no PATH given: a training log (HEAD.safetensors.jsonl) or a sweep directory");
	if (!*out)
		return cli_usage_error("report", "--out is empty");
	if (cli_metric_check("report", "--metric", metric))
		return CLI_EXIT_USAGE;

	char err[1024];
	size_t charts = 0;
	int rc = fc_report_write(out, (const char *const *)(argv + optind), (size_t)(argc - optind), metric, title,
				 &charts, err, sizeof err);
	if (rc)
		return cli_fail("%s", err);
	if (!quiet)
		printf("report written to '%s' (%zu chart%s)\n", out, charts, charts == 1 ? "" : "s");
	return CLI_EXIT_OK;
}
