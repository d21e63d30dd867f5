/*
 * cmd_embed.c - `featcache embed`: a split's cached features, raw or
 * through a trained head (L2-normalised), as a float32 .npy with the item
 * keys in row order in a text file, ready for numpy, faiss or a search
 * engine. With --model and --data, the images of a directory or CSV
 * instead: the backbone runs only for content the store lacks (and the
 * store keeps those vectors), nothing else of the store changes.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/data.h"
#include "featcache/extract.h"
#include "featcache/io.h"
#include "util/util.h"
#include "featcache/train.h"

static const char usage_text[] =
	"usage: featcache embed --store DIR --out FILE.npy [--keys FILE] [options]\n"
	"       featcache embed --store DIR --model M.onnx --data PATH --out FILE.npy [options]\n"
	"\n"
	"Write the cached features of a split as a float32 .npy (rows in key order),\n"
	"or with --head the head's L2-normalised embeddings, and the item keys, one\n"
	"per line in the same order, to --keys (default FILE.npy.keys).\n"
	"\n"
	"With --model and --data, embed the images of PATH (a directory, CSV or tar\n"
	"shards, as for extract) instead: the model runs with the settings the store's extractor\n"
	"was made with, only for images whose content the store lacks, and the store\n"
	"caches their features; its items are not changed. Images that cannot be\n"
	"decoded are left out with a warning.\n"
	"\n"
	"  -s, --store DIR      the store (default: $FEATCACHE_STORE)\n"
	"  -o, --out FILE       the .npy to write\n"
	"      --keys FILE      the keys file (default: FILE.keys)\n"
	"      --head FILE      apply this head (from 'featcache train')\n"
	"      --no-normalize   with --head, keep the embeddings unnormalised\n"
	"      --extractor ID   which feature set (hex prefix; default: the head's, or the\n"
	"                       store's only one); a head is refused on another's\n"
	"      --split S        train, val, test, all or a comma list (default all); a\n"
	"                       split with no items is an error naming those there are\n"
	"      --val-from-train F  the share of the train split taken as val, as\n"
	"                       'featcache train --val-from-train F' carves it\n"
	"  -m, --model FILE     with --data: the ONNX model the extractor was made with\n"
	"  -d, --data PATH      embed these images instead of a split\n"
	"      --follow-outside with --data: follow symbolic links (and CSV '..') that\n"
	"                       lead outside PATH (see 'featcache extract')\n"
	"      --max-memory SIZE  memory embed may use (default: 3/4 of MemAvailable):\n"
	"                       the features stay in RAM in the stored dtype when they\n"
	"                       fit, else they are streamed from the store; the .npy is\n"
	"                       written a block of rows at a time either way\n"
	"      --cache SIZE     decoded chunks kept when streaming (default 256M)\n"
	"      --batch N        images per engine run (default 32)\n"
	"      --threads N      engine threads (default: OMP_NUM_THREADS or all cores)\n"
	"  -q, --quiet          no progress\n"
	"  -h, --help           show this help\n";

enum { O_KEYS = 256, O_HEAD, O_NO_NORM, O_EXTRACTOR, O_SPLIT, O_BATCH, O_THREADS, O_FOLLOW, O_VALFT, O_MAXMEM, O_CACHE };

static const struct option opts[] = {
	{ "store", required_argument, NULL, 's' },	 { "out", required_argument, NULL, 'o' },
	{ "keys", required_argument, NULL, O_KEYS },	 { "head", required_argument, NULL, O_HEAD },
	{ "no-normalize", no_argument, NULL, O_NO_NORM }, { "extractor", required_argument, NULL, O_EXTRACTOR },
	{ "split", required_argument, NULL, O_SPLIT },	 { "help", no_argument, NULL, 'h' },
	{ "model", required_argument, NULL, 'm' },	 { "data", required_argument, NULL, 'd' },
	{ "batch", required_argument, NULL, O_BATCH },	 { "threads", required_argument, NULL, O_THREADS },
	{ "quiet", no_argument, NULL, 'q' },		 { "follow-outside", no_argument, NULL, O_FOLLOW },
	{ "val-from-train", required_argument, NULL, O_VALFT },
	{ "max-memory", required_argument, NULL, O_MAXMEM }, { "cache", required_argument, NULL, O_CACHE },
	{ NULL, 0, NULL, 0 },
};

static int write_keys(const char *path, const char *const *keys, size_t n)
{
	fci_outfile *f = NULL;
	char err[FC_ERRLEN];
	int rc = fci_outfile_open(&f, path, err, sizeof err);

	if (rc)
		return cli_fail("cannot write '%s': %s", path, err);
	for (size_t r = 0; r < n && !rc; r++)
		rc = fci_outfile_printf(f, "%s\n", keys[r]);
	if (!rc)
		rc = fci_outfile_commit(f);
	if (rc)
		rc = cli_fail("cannot write '%s': %s", path, fci_outfile_errmsg(f)[0] ? fci_outfile_errmsg(f) : fc_strerror(rc));
	fci_outfile_free(f);
	return rc;
}

/* The rows to write: a split's, or the images'. */
struct rows {
	fc_rows x; /* f32, the stored dtype, or streamed */
	size_t n, dim;
	const char *const *keys;
};

/* Rows converted, put through the head and written at a time: a multiple
 * of the head's own block (fc_head_load's 1024), so the embeddings are
 * those of one call over every row. */
#define EMBED_BLOCK 4096

/* The rows, through head when given, into the .npy at out, a block at a
 * time: memory is one block, whatever the split's size. */
static int write_rows(const char *out, const struct rows *r, fc_head *head, int normalize, size_t dim)
{
	fc_npy_writer *w = NULL;
	char err[FC_ERRLEN];
	size_t blk = r->n < EMBED_BLOCK ? (r->n ? r->n : 1) : EMBED_BLOCK;
	float *in = malloc(blk * r->dim * sizeof *in), *emb = head ? malloc(blk * dim * sizeof *emb) : NULL;
	int rc = 0;
	if (!in || (head && !emb)) {
		rc = cli_fail("out of memory");
		goto out;
	}
	if (fc_npy_writer_open(&w, out, r->n, dim, err, sizeof err) != 0) {
		rc = cli_fail("cannot write '%s': %s", out, err);
		goto out;
	}
	for (size_t first = 0; first < r->n; first += blk) {
		size_t n = r->n - first < blk ? r->n - first : blk;
		int e = fc_rows_range(in, &r->x, first, n);
		if (e) {
			rc = cli_fail("cannot read the features: %s", fc_strerror(e));
			goto out;
		}
		if (head && (e = fc_head_embed(head, emb, in, n, normalize)) != 0) {
			rc = cli_fail("cannot apply head: %s", fc_strerror(e));
			goto out;
		}
		if (fc_npy_writer_append(w, head ? emb : in, n) != 0) {
			rc = cli_fail("cannot write '%s': %s", out, fc_npy_writer_errmsg(w));
			goto out;
		}
	}
	if (fc_npy_writer_finish(w) != 0)
		rc = cli_fail("cannot write '%s': %s", out, fc_npy_writer_errmsg(w));
out:
	fc_npy_writer_free(w);
	free(in);
	free(emb);
	return rc;
}

/* The images of `data` (a directory or CSV) through the store's extractor
 * `id`, extracting what the store lacks; rows of the images that worked,
 * in key order. */
static int embed_dataset(fc_store *s, const uint8_t id[FC_HASH_LEN], const char *model, const char *data,
			 unsigned dsflags, int batch, int threads, fc_dataset *ds, cli_image_vectors *out)
{
	char err[FC_ERRLEN];
	if (fc_dataset_scan(ds, data, dsflags, err, sizeof err) != 0)
		return cli_fail("cannot read dataset '%s': %s", data, err);
	if (ds->n == 0)
		return cli_fail("dataset '%s' has no images (.jpg, .jpeg or .png)", data);
	return cli_embed_images(s, id, model, ds, batch, threads, 0, out);
}

int cmd_embed(int argc, char **argv)
{
	const char *store = NULL, *out = NULL, *keys = NULL, *head_path = NULL, *extractor = NULL, *split = NULL;
	const char *model = NULL, *data = NULL;
	uint64_t batch = 32, threads = 0;
	int normalize = 1, quiet = 0, c, rc;
	unsigned dsflags = 0;
	float vf = 0;
	cli_mem_opts mem = { 0 };
	optind = 1;
	while ((c = getopt_long(argc, argv, ":s:o:m:d:qh", opts, NULL)) != -1) {
		rc = 0;
		switch (c) {
		case 's': store = optarg; break;
		case 'o': out = optarg; break;
		case 'm': model = optarg; break;
		case 'd': data = optarg; break;
		case 'q': quiet = 1; break;
		case 'h': fputs(usage_text, stdout); return CLI_EXIT_OK;
		case O_KEYS: keys = optarg; break;
		case O_HEAD: head_path = optarg; break;
		case O_NO_NORM: normalize = 0; break;
		case O_EXTRACTOR: extractor = optarg; break;
		case O_SPLIT: split = optarg; break;
		case O_BATCH: rc = cli_parse_u64("embed", "--batch", optarg, 1, 4096, &batch); break;
		case O_THREADS: rc = cli_parse_u64("embed", "--threads", optarg, 1, 1024, &threads); break;
		case O_FOLLOW: dsflags |= FC_DATASET_FOLLOW_OUTSIDE; break;
		case O_VALFT: rc = cli_parse_float("embed", "--val-from-train", optarg, 0, 0.99, &vf); break;
		case O_MAXMEM: rc = cli_parse_size("embed", "--max-memory", optarg, &mem.max_memory); break;
		case O_CACHE: rc = cli_parse_size("embed", "--cache", optarg, &mem.cache); break;
		default: return cli_getopt_error("embed", c, argv, opts);
		}
		if (rc)
			return rc;
	}
	if ((rc = cli_no_operands("embed", argc, argv)) || (rc = cli_need_store("embed", store, &store)))
		return rc;
	if (!out)
		return cli_usage_error("embed", "--out is required (the .npy to write)");
	if (!model != !data)
		return cli_usage_error("embed", "--model and --data go together (embed the images of --data)");
	if (dsflags && !data)
		return cli_usage_error("embed", "--follow-outside is for the images of --data");
	if (data && vf > 0)
		return cli_usage_error("embed", "--val-from-train is for cached items' splits, not --data");
	if (data && split)
		return cli_usage_error("embed", "--split is for cached items; with --data every image of PATH is embedded");
	unsigned mask = 0;
	if (!data && (rc = cli_parse_splits("embed", "--split", split ? split : "all", &mask)) != 0)
		return rc;
	char keybuf[4200];
	if (!keys) {
		snprintf(keybuf, sizeof keybuf, "%s.keys", out);
		keys = keybuf;
	}
	cli_logger_flags(quiet ? CLI_QUIET : 0);

	fc_store *s = NULL;
	fc_head *head = NULL;
	cli_head_origin origin = { 0 };
	cli_split_data d = { 0 };
	fc_dataset ds = { 0 };
	cli_image_vectors iv = { 0 };
	struct rows rows = { 0 };
	cli_feature_plan plan = { 0 };
	char why[FC_ERRLEN] = "";
	if (head_path && (rc = fc_head_load(&head, head_path, 1024, why)) != 0)
		return cli_fail("cannot load head '%s': %s", head_path, why);
	if (head)
		cli_head_origin_read(&origin, head_path);
	uint8_t id[FC_HASH_LEN];
	if ((rc = cli_open_store(&s, store, data == NULL)) ||
	    (rc = cli_pick_head_extractor("embed", s, extractor, head_path, &origin, id)))
		goto out;
	if (data) {
		if ((rc = embed_dataset(s, id, model, data, dsflags, (int)batch, (int)threads, &ds, &iv)) != 0)
			goto out;
		rows = (struct rows){ .x = fc_rows_f32(iv.data, iv.n, iv.dim), .n = iv.n, .dim = iv.dim, .keys = iv.keys };
	} else {
		if ((rc = cli_load_split_as(s, id, mask, 1, vf, FC_LOAD_NONE, &d)) != 0)
			goto out;
		/* An empty split is a mistake (a name the dataset does not use),
		 * not a 0-row file. */
		char what[FC_ERRLEN], advice[FC_ERRLEN];
		if (d.m.rows == 0 && cli_split_empty(s, mask, vf, "--split", split ? split : "all", what, advice,
						     sizeof what)) {
			rc = cli_fail("%s: %s", what, advice);
			goto out;
		}
		if (d.missing)
			cli_warn("%zu items have no features yet (run 'featcache extract'); they are not in the output",
				d.missing);
		/* Besides the features: a block of rows in f32 and through the head. */
		uint64_t extra = (uint64_t)EMBED_BLOCK * (d.m.dim + (head ? 2 * fc_head_get_config(head).out_dim : 0)) *
				 sizeof(float);
		cli_split_data *sp[1] = { &d };
		if ((rc = cli_plan_features(&plan, "embed", &s, id, sp, 1, extra, &mem, quiet)) != 0)
			goto out;
		rows = (struct rows){ .x = d.x, .n = d.m.rows, .dim = d.m.dim, .keys = d.m.keys };
	}
	size_t dim = rows.dim;
	if (head) {
		fc_head_config hc = fc_head_get_config(head);
		if (hc.in_dim != rows.dim) {
			rc = cli_fail("head '%s' takes %u-d input, the features are %zu-d", head_path, hc.in_dim, rows.dim);
			goto out;
		}
		dim = hc.out_dim;
	}
	if ((rc = write_rows(out, &rows, head, normalize, dim)) != 0)
		goto out;
	if ((rc = write_keys(keys, rows.keys, rows.n)) != 0)
		goto out;
	printf("wrote %zu x %zu float32 to '%s', keys to '%s'\n", rows.n, dim, out, keys);
	rc = CLI_EXIT_OK;
out:
	cli_image_vectors_free(&iv);
	fc_dataset_free(&ds);
	cli_split_data_free(&d);
	cli_feature_plan_free(&plan);
	cli_head_origin_free(&origin);
	fc_head_free(head);
	fc_store_free(s);
	return rc;
}
