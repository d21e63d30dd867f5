/*
 * cmd_embed.c - `featcache embed`: a split's cached features, raw or
 * through a trained head (L2-normalised), as a float32 .npy with the item
 * keys in row order in a text file, ready for numpy, faiss or a search
 * engine.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/data.h"
#include "featcache/tensorio.h"
#include "featcache/train.h"

static const char usage_text[] =
	"usage: featcache embed --store DIR --out FILE.npy [--keys FILE] [options]\n"
	"\n"
	"Write the cached features of a split as a float32 .npy (rows in key order),\n"
	"or with --head the head's L2-normalised embeddings, and the item keys, one\n"
	"per line in the same order, to --keys (default FILE.npy.keys).\n"
	"\n"
	"  -s, --store DIR      the store (default: $FEATCACHE_STORE)\n"
	"  -o, --out FILE       the .npy to write\n"
	"      --keys FILE      the keys file (default: FILE.keys)\n"
	"      --head FILE      apply this head (from 'featcache train')\n"
	"      --no-normalize   with --head, keep the embeddings unnormalised\n"
	"      --extractor ID   which feature set (hex prefix; default: the only one)\n"
	"      --split S        train, val, test, all or a comma list (default all)\n"
	"  -h, --help           show this help\n";

enum { O_KEYS = 256, O_HEAD, O_NO_NORM, O_EXTRACTOR, O_SPLIT };

static const struct option opts[] = {
	{ "store", required_argument, NULL, 's' },	 { "out", required_argument, NULL, 'o' },
	{ "keys", required_argument, NULL, O_KEYS },	 { "head", required_argument, NULL, O_HEAD },
	{ "no-normalize", no_argument, NULL, O_NO_NORM }, { "extractor", required_argument, NULL, O_EXTRACTOR },
	{ "split", required_argument, NULL, O_SPLIT },	 { "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static int write_keys(const char *path, const fc_matrix *m)
{
	char tmp[4300];
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	if (!f)
		return fc_fail("cannot write '%s': %s", path, fc_errno_str(errno));
	int ok = 1;
	for (size_t r = 0; r < m->rows && ok; r++)
		ok = fputs(m->keys[r], f) >= 0 && fputc('\n', f) != EOF;
	if (fflush(f) != 0 || fsync(fileno(f)) != 0)
		ok = 0;
	if (fclose(f) != 0 || !ok || rename(tmp, path) != 0) {
		int e = errno;
		remove(tmp);
		return fc_fail("cannot write '%s': %s", path, fc_errno_str(e));
	}
	return 0;
}

int cmd_embed(int argc, char **argv)
{
	const char *store = NULL, *out = NULL, *keys = NULL, *head_path = NULL, *extractor = NULL, *split = "all";
	int normalize = 1, c, rc;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":s:o:h", opts, NULL)) != -1) {
		switch (c) {
		case 's': store = optarg; break;
		case 'o': out = optarg; break;
		case 'h': fputs(usage_text, stdout); return FC_EXIT_OK;
		case O_KEYS: keys = optarg; break;
		case O_HEAD: head_path = optarg; break;
		case O_NO_NORM: normalize = 0; break;
		case O_EXTRACTOR: extractor = optarg; break;
		case O_SPLIT: split = optarg; break;
		default: return fc_getopt_error("embed", c, argv, opts);
		}
	}
	if ((rc = fc_no_operands("embed", argc, argv)) || (rc = fc_need_store("embed", store, &store)))
		return rc;
	if (!out)
		return fc_usage_error("embed", "--out is required (the .npy to write)");
	unsigned mask;
	if ((rc = fc_parse_splits("embed", "--split", split, &mask)) != 0)
		return rc;
	char keybuf[4200];
	if (!keys) {
		snprintf(keybuf, sizeof keybuf, "%s.keys", out);
		keys = keybuf;
	}

	fc_store *s = NULL;
	fc_head *head = NULL;
	fc_split_data d = { 0 };
	float *emb = NULL;
	char why[FC_TRAIN_ERRLEN] = "", err[FC_TENSORIO_ERRLEN] = "";
	if (head_path && (rc = fc_head_load(&head, head_path, 1024, why)) != 0)
		return fc_fail("cannot load head '%s': %s", head_path, why);
	uint8_t id[FC_HASH_LEN];
	if ((rc = fc_open_store(&s, store, 1)) || (rc = fc_pick_extractor("embed", s, extractor, id)) ||
	    (rc = fc_load_split(s, id, mask, 1, &d)))
		goto out;
	if (d.missing)
		fc_warn("%zu items have no features yet (run 'featcache extract'); they are not in the output", d.missing);
	const float *rows = d.m.data;
	size_t dim = d.m.dim;
	if (head) {
		fc_head_config hc = fc_head_get_config(head);
		if (hc.in_dim != d.m.dim) {
			rc = fc_fail("head '%s' takes %u-d input, the features are %zu-d", head_path, hc.in_dim, d.m.dim);
			goto out;
		}
		dim = hc.out_dim;
		emb = malloc((d.m.rows ? d.m.rows : 1) * dim * sizeof *emb);
		if (!emb) {
			rc = fc_fail("out of memory");
			goto out;
		}
		if ((rc = fc_head_embed(head, emb, d.m.data, d.m.rows, normalize)) != 0) {
			rc = fc_fail("cannot apply head: %s", fc_strerror(rc));
			goto out;
		}
		rows = emb;
	}
	if ((rc = fc_npy_write_f32(out, rows, d.m.rows, dim, err, sizeof err)) != 0) {
		rc = fc_fail("cannot write '%s': %s", out, err);
		goto out;
	}
	if ((rc = write_keys(keys, &d.m)) != 0)
		goto out;
	printf("wrote %zu x %zu float32 to '%s', keys to '%s'\n", d.m.rows, dim, out, keys);
	rc = FC_EXIT_OK;
out:
	free(emb);
	fc_split_data_free(&d);
	fc_head_free(head);
	fc_store_free(s);
	return rc;
}
