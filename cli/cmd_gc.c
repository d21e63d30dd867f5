/*
 * cmd_gc.c - `featcache gc`: drop the features of content no item
 * references any more, rewrite chunks that hold dead slots and drop error
 * records of removed items (fc_store_gc), then say what went and how many
 * bytes that saved. LMDB reuses the freed pages; data.mdb does not shrink.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static const char usage_text[] =
	"usage: featcache gc [--store DIR] [--json] [--wait]\n"
	"\n"
	"Drop the features of content that no item references any more (after\n"
	"files left the dataset), rewrite chunks that hold dead slots, and drop\n"
	"error records of removed items. Every step is a transaction of its own:\n"
	"an interrupted gc leaves a consistent store, and running it again\n"
	"finishes the job. The freed pages are reused by later writes; the\n"
	"store's file does not shrink.\n"
	"\n"
	"  -s, --store DIR   the store (default: $FEATCACHE_STORE)\n"
	"      --json        print the figures as one JSON object\n"
	"      --wait        when another process writes to the store, wait for it\n"
	"                    (default: refuse, naming it)\n"
	"  -h, --help        show this help\n";

static int print_json(const fc_gc_stats *g, int have_used, uint64_t used_before,
		      uint64_t used_after)
{
	json_t *root = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:o}",
				 "index_dropped", (json_int_t)g->index_dropped, "slots_dropped",
				 (json_int_t)g->slots_dropped, "chunks_rewritten",
				 (json_int_t)g->chunks_rewritten, "chunks_dropped",
				 (json_int_t)g->chunks_dropped, "errors_dropped",
				 (json_int_t)g->errors_dropped, "chunk_bytes_before",
				 (json_int_t)g->bytes_before, "chunk_bytes_after",
				 (json_int_t)g->bytes_after, "used_bytes_before",
				 have_used ? json_integer((json_int_t)used_before) : json_null(),
				 "used_bytes_after",
				 have_used ? json_integer((json_int_t)used_after) : json_null());

	if (!root)
		return cli_fail("cannot print gc figures: out of memory");
	if (json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) == 0)
		putchar('\n');
	json_decref(root);
	return CLI_EXIT_OK;
}

static void print_text(const fc_gc_stats *g, int have_used, uint64_t used_before,
		       uint64_t used_after)
{
	char b1[32], b2[32];
	uint64_t saved = g->bytes_before > g->bytes_after ? g->bytes_before - g->bytes_after : 0;

	printf("index entries dropped  %llu\n", (unsigned long long)g->index_dropped);
	printf("slots dropped          %llu\n", (unsigned long long)g->slots_dropped);
	printf("chunks rewritten       %llu\n", (unsigned long long)g->chunks_rewritten);
	printf("chunks dropped         %llu\n", (unsigned long long)g->chunks_dropped);
	printf("error records dropped  %llu\n", (unsigned long long)g->errors_dropped);
	printf("chunk bytes            %llu -> %llu (%s saved)\n",
	       (unsigned long long)g->bytes_before, (unsigned long long)g->bytes_after,
	       cli_human_bytes(b1, sizeof b1, saved));
	if (have_used)
		printf("pages in use           %s -> %s\n",
		       cli_human_bytes(b1, sizeof b1, used_before),
		       cli_human_bytes(b2, sizeof b2, used_after));
	if (!g->index_dropped && !g->slots_dropped && !g->chunks_rewritten && !g->chunks_dropped &&
	    !g->errors_dropped)
		printf("nothing to collect\n");
}

int cmd_gc(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "wait", no_argument, NULL, 'w' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *store_opt = NULL, *path = NULL;
	int json = 0, wait = 0, c, rc, have_used;
	fc_store *s = NULL;
	fc_store_stats before = { 0 }, after = { 0 };
	fc_gc_stats g = { 0 };

	while ((c = getopt_long(argc, argv, ":s:h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			store_opt = optarg;
			break;
		case 'j':
			json = 1;
			break;
		case 'w':
			wait = 1;
			break;
		default:
			return cli_other_option("gc", c, argv, opts, usage_text);
		}
	}
	if ((rc = cli_no_operands("gc", argc, argv)))
		return rc;
	if ((rc = cli_need_store("gc", store_opt, &path)))
		return rc;
	cli_catch_interrupt();

	if ((rc = cli_open_store_writer(&s, path, 0, 0, "gc", wait)))
		return rc;
	/* The page counts are a courtesy: gc goes ahead without them. */
	have_used = fc_store_stats_get(s, &before) == 0;
	rc = fc_store_gc(s, &g);
	cli_progress_end();
	if (rc < 0) {
		/* Extractors already collected stay collected: one txn each. */
		rc = cli_store_fail(s, rc, "collect garbage in");
		goto out;
	}
	have_used = have_used && fc_store_stats_get(s, &after) == 0;
	if (json)
		rc = print_json(&g, have_used, before.used_bytes, after.used_bytes);
	else {
		print_text(&g, have_used, before.used_bytes, after.used_bytes);
		rc = CLI_EXIT_OK;
	}
out:
	free(before.extractors);
	free(after.extractors);
	fc_store_free(s);
	return rc;
}
