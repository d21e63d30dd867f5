/*
 * cmd_extract.c - `featcache extract`: run the tailored CNN over a dataset
 * into a store, extracting only what the store lacks for this extractor.
 * The model is opened (and refused) before the store is created or touched.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/data.h"
#include "featcache/engine.h"
#include "featcache/extract.h"
#include "featcache/shard.h"

/* The absolute directory the dataset's keys are relative to: the dataset
 * directory, or the CSV's own directory (its paths start there). */
static int data_root(const fc_dataset *ds, const char *data, char out[PATH_MAX])
{
	char dir[PATH_MAX];
	const char *d = data;
	if (ds->n_shards)
		d = ds->root;
	else if (ds->from_csv) {
		const char *slash = strrchr(data, '/');
		if (!slash)
			d = ".";
		else if (slash == data)
			d = "/";
		else {
			snprintf(dir, sizeof dir, "%.*s", (int)(slash - data), data);
			d = dir;
		}
	}
	if (!realpath(d, out))
		return cli_fail("cannot resolve dataset directory '%s': %s", d, strerror(errno));
	return 0;
}

static const char usage_text[] =
	"usage: featcache extract --store DIR --model FILE.onnx --data PATH [options]\n"
	"\n"
	"Run the model, cut at its embedding layer, over every image of the dataset\n"
	"the store has no features for, and store the features. PATH is a directory\n"
	"(PATH/<label>/<image>, optionally PATH/{train,val,test}/<label>/<image>) or\n"
	"a CSV of path,label[,split] rows (paths relative to the CSV), or WebDataset\n"
	"tar shards: a .tar (.tar.gz, .tar.zst, ...), a directory of them, a quoted\n"
	"brace pattern ('shards/{00000..00099}.tar') or @LIST (a shard path a line).\n"
	"A shard whose size and mtime are unchanged is not opened again. Files whose\n"
	"size and mtime are unchanged are not read again; identical images are\n"
	"extracted once. Images that cannot be decoded are recorded and skipped.\n"
	"\n"
	"  -s, --store DIR          the store, created if missing (default: $FEATCACHE_STORE)\n"
	"  -m, --model FILE         the ONNX model\n"
	"  -d, --data PATH          the dataset directory, CSV, or tar shards\n"
	"      --label-field NAME   tar shards: the .json field holding the label when\n"
	"                           a sample has no .cls or .txt (default label)\n"
	"      --layer NAME[,NAME]  cut at this layer, or concatenate several (default:\n"
	"                           the input of the final classifier; see 'featcache\n"
	"                           layers')\n"
	"      --pool P             how a token layer (N x T x D) becomes a vector: cls\n"
	"                           (token 0), mean (of the patch tokens), cls+mean\n"
	"                           (both, concatenated) or flatten\n"
	"      --prefix-tokens N    tokens before the patches, left out of mean\n"
	"                           (default 1: CLS; DINOv2 with 4 registers: 5)\n"
	"      --preprocess P       torchvision (resize shorter side to size*8/7, bilinear,\n"
	"                           centre crop) or finetuner (resize to size x size,\n"
	"                           bicubic); default torchvision\n"
	"      --size N             model input size (default 224)\n"
	"      --resize N           resize the shorter side to N, then centre-crop\n"
	"      --interpolation I    bilinear or bicubic (PIL's filters; default: the\n"
	"                           preset's)\n"
	"      --mean R,G,B         normalisation mean (default ImageNet's)\n"
	"      --std R,G,B          normalisation std (default ImageNet's)\n"
	"      --precision P        f32, bf16 or int8 (bf16 needs a CPU with native\n"
	"                           bf16, int8 one with VNNI or AMX; int8: convs and\n"
	"                           matmuls with constant weights quantised, the rest\n"
	"                           (attention, LayerNorm, pooling) f32)\n"
	"      --calibrate N        int8: measure activation ranges on N images of the\n"
	"                           dataset, a fixed sample (default 256)\n"
	"      --calibration-data PATH  int8: calibrate on this dataset (directory or\n"
	"                           CSV) instead\n"
	"      --calibration-method M  int8: percentile (default: clip at the 99.99th\n"
	"                           percentile of |x|) or max\n"
	"      --store-dtype T      f16 (default), f32, bf16 or u8\n"
	"      --batch N            images per engine run (default 32); the store\n"
	"                           writes chunks of >= 64 KiB, several batches each\n"
	"      --threads N          engine threads (default: OMP_NUM_THREADS or all cores)\n"
	"      --decode-threads N   image decoding threads (default: half the cores, >= 1)\n"
	"      --val-fraction F     for images the dataset gives no split: the share\n"
	"                           put in val by a stable hash of the key (default 0.1)\n"
	"      --follow-outside     follow symbolic links (and CSV '..') that lead\n"
	"                           outside the dataset; without it each is a failed\n"
	"                           item, like a broken link or a directory loop\n"
	"      --strict             stop at the first image that fails\n"
	"      --rehash             read and hash every file (and tar shard), even one\n"
	"                           whose size and mtime are unchanged\n"
	"      --wait               when another process writes to the store, wait for\n"
	"                           it (default: refuse, naming it)\n"
	"\n"
	"Many workers (see README, \"Many machines\"): each extracts its share into\n"
	"its own store, and 'featcache merge' combines the stores.\n"
	"      --shard I/N          extract only worker I's share of N (I from 0), or\n"
	"                           'none'. Default: from the launcher's environment\n"
	"                           (Slurm array or srun, mpirun, MPICH), else none\n"
	"      --units N            work units the dataset is cut into, by a hash of\n"
	"                           the item key (default 64 per worker)\n"
	"      --claims DIR         take units one at a time through claim files in DIR\n"
	"                           (a filesystem all workers share) instead of a\n"
	"                           fixed share: fast workers take more, a dead\n"
	"                           worker's units are taken over, finished units\n"
	"                           are skipped on a rerun\n"
	"      --claim-timeout S    a claim whose heartbeat is older than S seconds is\n"
	"                           taken over (default 600; a claim of a dead process\n"
	"                           on the same host at once)\n"
	"  The store path may hold {rank}, replaced by the worker's number\n"
	"  (e.g. --store /local/fc-shard-{rank}).\n"
	"  -q, --quiet              no progress\n"
	"  -h, --help               show this help\n";

enum {
	O_LAYER = 256, O_PRE, O_SIZE, O_RESIZE, O_MEAN, O_STD, O_PREC, O_DTYPE, O_BATCH, O_THREADS,
	O_DECODE, O_VALF, O_STRICT, O_POOL, O_PREFIX, O_REHASH, O_INTERP, O_WAIT, O_SHARD, O_UNITS, O_CLAIMS,
	O_CLAIM_TIMEOUT, O_FOLLOW, O_LABEL_FIELD, O_CALIB, O_CALIB_DATA, O_CALIB_METHOD
};

static const struct option opts[] = {
	{ "store", required_argument, NULL, 's' },
	{ "model", required_argument, NULL, 'm' },
	{ "data", required_argument, NULL, 'd' },
	{ "layer", required_argument, NULL, O_LAYER },
	{ "pool", required_argument, NULL, O_POOL },
	{ "prefix-tokens", required_argument, NULL, O_PREFIX },
	{ "preprocess", required_argument, NULL, O_PRE },
	{ "size", required_argument, NULL, O_SIZE },
	{ "resize", required_argument, NULL, O_RESIZE },
	{ "interpolation", required_argument, NULL, O_INTERP },
	{ "mean", required_argument, NULL, O_MEAN },
	{ "std", required_argument, NULL, O_STD },
	{ "precision", required_argument, NULL, O_PREC },
	{ "calibrate", required_argument, NULL, O_CALIB },
	{ "calibration-data", required_argument, NULL, O_CALIB_DATA },
	{ "calibration-method", required_argument, NULL, O_CALIB_METHOD },
	{ "store-dtype", required_argument, NULL, O_DTYPE },
	{ "batch", required_argument, NULL, O_BATCH },
	{ "threads", required_argument, NULL, O_THREADS },
	{ "decode-threads", required_argument, NULL, O_DECODE },
	{ "val-fraction", required_argument, NULL, O_VALF },
	{ "strict", no_argument, NULL, O_STRICT },
	{ "rehash", no_argument, NULL, O_REHASH },
	{ "wait", no_argument, NULL, O_WAIT },
	{ "shard", required_argument, NULL, O_SHARD },
	{ "units", required_argument, NULL, O_UNITS },
	{ "claims", required_argument, NULL, O_CLAIMS },
	{ "claim-timeout", required_argument, NULL, O_CLAIM_TIMEOUT },
	{ "follow-outside", no_argument, NULL, O_FOLLOW },
	{ "label-field", required_argument, NULL, O_LABEL_FIELD },
	{ "quiet", no_argument, NULL, 'q' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* "a,b,c" into three floats; std values must be positive. */
static int parse3(const char *opt, const char *val, int positive, float out[3])
{
	char buf[256], *save = NULL;
	if (strlen(val) >= sizeof buf)
		return cli_usage_error("extract", "bad value for %s: too long", opt);
	strcpy(buf, val);
	int n = 0;
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		if (n == 3)
			return cli_usage_error("extract", "bad value '%s' for %s: expected three numbers R,G,B", val, opt);
		int rc = cli_parse_float("extract", opt, t, positive ? 1e-6 : -1e6, 1e6, &out[n++]);
		if (rc)
			return rc;
	}
	if (n != 3)
		return cli_usage_error("extract", "bad value '%s' for %s: expected three numbers R,G,B", val, opt);
	return 0;
}

static void print_summary(const fc_extract_stats *st, const fc_extract_ctx *x, fc_dtype dtype)
{
	char hex[33];
	fc_hex(hex, fc_extract_id(x), FC_HASH_LEN);
	printf("items: %llu seen, %llu new, %llu changed, %llu removed\n", (unsigned long long)st->seen,
	       (unsigned long long)st->new_items, (unsigned long long)st->changed, (unsigned long long)st->removed);
	printf("images: %llu extracted, %llu deduplicated, %llu failed", (unsigned long long)st->extracted,
	       (unsigned long long)st->dedup, (unsigned long long)st->failed);
	if (st->failed_before)
		printf(" (and %llu that failed before, unchanged)", (unsigned long long)st->failed_before);
	printf("\n");
	double rate = st->seconds > 0 ? (double)st->extracted / st->seconds : 0;
	printf("time: %.1f s, %.1f images/s (engine %.1f s)\n", st->seconds, rate, st->engine_seconds);
	if (st->shards_read || st->shards_kept)
		printf("shards: %llu read, %llu unchanged\n", (unsigned long long)st->shards_read,
		       (unsigned long long)st->shards_kept);
	printf("extractor %.12s: %u-d, stored as %s\n", hex, fc_extract_dim(x), fc_dtype_name(dtype));
}

static void stats_add(fc_extract_stats *sum, const fc_extract_stats *st)
{
	sum->seen += st->seen;
	sum->new_items += st->new_items;
	sum->changed += st->changed;
	sum->removed += st->removed;
	sum->extracted += st->extracted;
	sum->dedup += st->dedup;
	sum->failed += st->failed;
	sum->failed_before += st->failed_before;
	sum->hashed += st->hashed;
	sum->shards_read += st->shards_read;
	sum->shards_kept += st->shards_kept;
	sum->seconds += st->seconds;
	sum->engine_seconds += st->engine_seconds;
}

/* The units a run covers: a bitmap, and the scope test of fc_extract_run;
 * for tar shards, the store's view of them and how many to read at once. */
struct units {
	uint8_t *mask;
	uint32_t n;
	const fc_dataset *ds;
	fc_shard_memo *memo;
	int threads;
};

static int unit_in_scope(void *ctx, const char *key)
{
	const struct units *u = ctx;
	uint32_t k = fc_dataset_unit(u->ds, key, u->n);
	return (u->mask[k / 8] >> (k % 8)) & 1;
}

/* Extract the entries of ds whose units are set in u, leaving the store's
 * other items alone; sums into st. */
static int run_units(fc_extract_ctx *x, fc_store *s, const fc_dataset *ds, struct units *u,
		     const fc_extract_run_opts *base, fc_extract_stats *sum, char *err, size_t errcap)
{
	fc_dataset part;
	fc_extract_stats st;
	fc_extract_run_opts ro = *base;
	int rc;

	if (fc_dataset_select(&part, ds, u->mask, u->n) != 0)
		return FC_ERR_NOMEM;
	ro.scope = unit_in_scope;
	ro.scope_ctx = u;
	rc = fc_dataset_read_shards(&part, fc_shard_memo_unchanged, u->memo, u->threads, err, errcap);
	if (!rc)
		rc = fc_extract_run(x, s, &part, &ro, &st, err, errcap);
	cli_progress_end();
	fc_dataset_free(&part);
	stats_add(sum, &st);
	return rc;
}

/* The claims loop: take a unit, extract it, mark it done, until none is
 * left. Starts at this worker's place in the unit ring, so that workers
 * begin apart. */
static int run_claims(fc_extract_ctx *x, fc_store *s, const fc_dataset *ds, const fc_shard *sh, uint32_t nunits,
		      const char *dir, double timeout, const fc_extract_run_opts *ro, fc_extract_stats *sum,
		      int quiet, fc_shard_memo *memo)
{
	char err[FC_ERRLEN] = "", note[160];
	fc_claims *c = NULL;
	struct units u = { calloc((nunits + 7) / 8, 1), nunits, ds, memo, ro->decode_threads };
	uint32_t start, unit, units_done = 0;
	int took, rc;

	if (!u.mask)
		return cli_fail("out of memory");
	start = sh->size ? (uint32_t)((uint64_t)sh->rank * nunits / sh->size) : 0;
	if ((rc = fc_claims_open(&c, dir, nunits, timeout, err, sizeof err)) != 0) {
		free(u.mask);
		return cli_fail("cannot use claims directory '%s': %s", dir, err);
	}
	while ((rc = fc_claims_next(c, start, &unit, &took)) == 0) {
		fc_extract_stats before = *sum;
		u.mask[unit / 8] = (uint8_t)(1u << (unit % 8));
		rc = run_units(x, s, ds, &u, ro, sum, err, sizeof err);
		u.mask[unit / 8] = 0;
		if (rc) {
			fc_claims_release(c);
			rc = cli_fail("extract into '%s' stopped in unit %u: %s", fc_store_path(s), unit, err);
			goto out;
		}
		snprintf(note, sizeof note, "items %llu extracted %llu", (unsigned long long)(sum->seen - before.seen),
			 (unsigned long long)(sum->extracted - before.extracted));
		if ((rc = fc_claims_done(c, note)) != 0) {
			rc = cli_fail("cannot mark unit %u done in '%s': %s", unit, dir, fc_claims_errmsg(c));
			goto out;
		}
		units_done++;
		/* Counting every worker's done markers is a pass over the directory:
		 * once at the end, not per unit (a shared filesystem, many units). */
		if (!quiet)
			printf("unit %u%s: %llu items, %llu extracted (%u units done by this worker)\n", unit,
			       took ? " (taken over from a stale claim)" : "",
			       (unsigned long long)(sum->seen - before.seen),
			       (unsigned long long)(sum->extracted - before.extracted), units_done);
		start = unit + 1;
	}
	if (rc != FC_ERR_NOT_FOUND) {
		rc = cli_fail("cannot claim a unit in '%s': %s", dir, fc_claims_errmsg(c));
		goto out;
	}
	if (!quiet)
		printf("units: %u done by this worker, %u of %u by all; none left to claim\n", units_done,
		       fc_claims_count_done(c), nunits);
	rc = 0;
out:
	fc_claims_free(c);
	free(u.mask);
	return rc;
}

/* --store with {rank} replaced. */
static int store_for_rank(char *dst, size_t cap, const char *store, uint32_t rank)
{
	const char *p = strstr(store, "{rank}");
	int n;

	if (!p)
		n = snprintf(dst, cap, "%s", store);
	else
		n = snprintf(dst, cap, "%.*s%u%s", (int)(p - store), store, rank, p + 6);
	return n < 0 || (size_t)n >= cap ? -1 : 0;
}

/* The int8 calibration table, from a sample of the dataset at path. */
static int calibrate(fc_calib **out, const fc_extractor_opts *xo, const char *path, unsigned dsflags, size_t n,
		     int method, int quiet)
{
	char err[FC_ERRLEN] = "";
	fc_dataset cds = { 0 };
	size_t failed = 0;
	int rc;
	if ((rc = fc_dataset_scan(&cds, path, dsflags, err, sizeof err)) != 0)
		return cli_fail("cannot read calibration data '%s': %s", path, err);
	if (cds.n == 0) {
		fc_dataset_free(&cds);
		return cli_fail("calibration data '%s' has no images (.jpg, .jpeg or .png)", path);
	}
	if (!quiet)
		printf("calibrating int8 (%s) on %zu images of '%s'\n", fc_calib_method_name(method), n < cds.n ? n : cds.n,
		       path);
	rc = fc_calibrate(out, xo, &cds, n, method, &failed, err, sizeof err);
	fc_dataset_free(&cds);
	if (rc)
		return cli_fail("cannot calibrate on '%s': %s", path, err);
	if (!quiet && failed)
		printf("calibration: %zu sampled images could not be read and were left out\n", failed);
	return 0;
}

int cmd_extract(int argc, char **argv)
{
	const char *store = NULL, *model = NULL, *data = NULL, *layer = NULL, *pre_name = "torchvision";
	const char *mean = NULL, *std = NULL;
	uint64_t size = 224, resize = 0, batch = 32, threads = 0, decode = 0, prefix = 1;
	const char *shard_spec = NULL, *claims = NULL, *label_field = NULL, *calib_data = NULL;
	uint64_t units = 0, ncalib = FC_CALIB_IMAGES;
	int calib_set = 0, calib_method = FC_CALIB_DEFAULT;
	float claim_timeout = 600;
	int precision = FC_PREC_F32, strict = 0, rehash = 0, quiet = 0, pool = FC_POOL_AUTO, wait = 0, interp = -1, c, rc;
	unsigned dsflags = 0;
	fc_dtype dtype = FC_DTYPE_F16;
	float valf = 0.1f;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":s:m:d:qh", opts, NULL)) != -1) {
		rc = 0;
		switch (c) {
		case 's': store = optarg; break;
		case 'm': model = optarg; break;
		case 'd': data = optarg; break;
		case 'q': quiet = 1; break;
		case 'h': fputs(usage_text, stdout); return CLI_EXIT_OK;
		case O_LAYER: layer = optarg; break;
		case O_POOL:
			if ((pool = fc_pool_parse(optarg)) < 0)
				rc = cli_usage_error("extract", "bad value '%s' for --pool: cls, mean, cls+mean or flatten",
						    optarg);
			break;
		case O_PREFIX: rc = cli_parse_u64("extract", "--prefix-tokens", optarg, 0, 4096, &prefix); break;
		case O_PRE: pre_name = optarg; break;
		case O_SIZE: rc = cli_parse_u64("extract", "--size", optarg, 1, 4096, &size); break;
		case O_RESIZE: rc = cli_parse_u64("extract", "--resize", optarg, 1, 4096, &resize); break;
		case O_INTERP:
			if (strcmp(optarg, "bilinear") == 0)
				interp = FC_RESAMPLE_BILINEAR;
			else if (strcmp(optarg, "bicubic") == 0)
				interp = FC_RESAMPLE_BICUBIC;
			else
				rc = cli_usage_error("extract", "bad value '%s' for --interpolation: bilinear or bicubic",
						    optarg);
			break;
		case O_MEAN: mean = optarg; break;
		case O_STD: std = optarg; break;
		case O_PREC: rc = cli_parse_precision("extract", optarg, &precision); break;
		case O_CALIB:
			rc = cli_parse_u64("extract", "--calibrate", optarg, 1, 1000000, &ncalib);
			calib_set = 1;
			break;
		case O_CALIB_DATA:
			calib_data = optarg;
			calib_set = 1;
			break;
		case O_CALIB_METHOD:
			if ((calib_method = fc_calib_method_parse(optarg)) < 0)
				rc = cli_usage_error("extract", "bad value '%s' for --calibration-method: percentile or max",
						    optarg);
			calib_set = 1;
			break;
		case O_DTYPE:
			if (fc_dtype_parse(optarg, &dtype) != 0)
				rc = cli_usage_error("extract", "bad value '%s' for --store-dtype: f16, f32, bf16 or u8",
						    optarg);
			break;
		case O_BATCH: rc = cli_parse_u64("extract", "--batch", optarg, 1, 4096, &batch); break;
		case O_THREADS: rc = cli_parse_u64("extract", "--threads", optarg, 1, 1024, &threads); break;
		case O_DECODE: rc = cli_parse_u64("extract", "--decode-threads", optarg, 1, 256, &decode); break;
		case O_VALF: rc = cli_parse_float("extract", "--val-fraction", optarg, 0, 0.99, &valf); break;
		case O_STRICT: strict = 1; break;
		case O_REHASH: rehash = 1; break;
		case O_WAIT: wait = 1; break;
		case O_SHARD: shard_spec = optarg; break;
		case O_UNITS: rc = cli_parse_u64("extract", "--units", optarg, 1, FC_UNITS_MAX, &units); break;
		case O_CLAIMS: claims = optarg; break;
		case O_CLAIM_TIMEOUT:
			rc = cli_parse_float("extract", "--claim-timeout", optarg, 0.1f, 1e7f, &claim_timeout);
			break;
		case O_FOLLOW: dsflags |= FC_DATASET_FOLLOW_OUTSIDE; break;
		case O_LABEL_FIELD: label_field = optarg; break;
		default: return cli_getopt_error("extract", c, argv, opts);
		}
		if (rc)
			return rc;
	}
	if ((rc = cli_no_operands("extract", argc, argv)) || (rc = cli_need_store("extract", store, &store)))
		return rc;
	if (!model)
		return cli_usage_error("extract", "--model is required (the ONNX file)");
	if (!data)
		return cli_usage_error("extract", "--data is required (a dataset directory or CSV)");
	if (calib_set && precision != FC_PREC_INT8)
		return cli_usage_error("extract", "--calibrate, --calibration-data and --calibration-method are for "
				       "--precision int8");
	if (calib_data && !*calib_data)
		return cli_usage_error("extract", "bad value '' for --calibration-data: empty path");
	fc_extractor_opts xo = { .model = model, .layer = layer, .pool = pool, .prefix_tokens = (int)prefix,
				 .pre_name = pre_name, .precision = precision, .store_dtype = dtype, .batch = (int)batch,
				 .threads = (int)threads };
	if (fc_preproc_preset(&xo.pre, pre_name, (int)size) != 0)
		return cli_usage_error("extract", "bad value '%s' for --preprocess: torchvision or finetuner", pre_name);
	if (resize) {
		xo.pre.resize_short = (int)resize;
		xo.pre.resize_w = xo.pre.resize_h = 0;
	}
	if (interp >= 0)
		xo.pre.filter = interp;
	if ((mean && (rc = parse3("--mean", mean, 0, xo.pre.mean))) || (std && (rc = parse3("--std", std, 1, xo.pre.std))))
		return rc;
	cli_logger_flags(quiet ? CLI_QUIET : 0);

	/* Which worker this is: --shard, else the launcher's environment. */
	char err[FC_ERRLEN] = "", store_path[4200];
	fc_shard sh;
	if (shard_spec && fc_shard_parse(&sh, shard_spec, err, sizeof err) != 0)
		return cli_usage_error("extract", "bad value for --shard: %s", err);
	if (!shard_spec && fc_shard_from_env(&sh, err, sizeof err) != 0)
		return cli_usage_error("extract", "cannot tell which worker this is: %s (or pass --shard I/N, or --shard none)",
				       err);
	if (claims && !*claims)
		return cli_usage_error("extract", "bad value '' for --claims: empty path");
	uint32_t nunits = units ? (uint32_t)units : fc_shard_units(sh.size);
	if (sh.size > nunits)
		return cli_usage_error("extract", "%u workers but only %u units: give --units at least the worker count",
				       sh.size, nunits);
	if (store_for_rank(store_path, sizeof store_path, store, sh.rank) != 0)
		return cli_usage_error("extract", "bad value for --store: too long");
	if (strstr(store, "{rank}") && !sh.size)
		return cli_usage_error("extract", "--store '%s' has {rank} but this is not one of several workers "
				       "(pass --shard I/N)", store);
	store = store_path;

	/* Model first, then the dataset: either refused, the store is untouched. */
	fc_extract_ctx *x = NULL;
	fc_dataset ds = { 0 };
	fc_store *s = NULL;
	fc_shard_memo *memo = NULL;
	fc_calib *calib = NULL;
	if (precision == FC_PREC_INT8) {
		if ((rc = calibrate(&calib, &xo, calib_data ? calib_data : data, dsflags, (size_t)ncalib, calib_method,
				    quiet)))
			return rc;
		xo.calib = calib;
	}
	rc = fc_extract_open(&x, &xo, err, sizeof err);
	fc_calib_free(calib); /* the extractor keeps its own copy in the descriptor */
	if (rc != 0)
		return cli_fail("%s", err);
	/* Tar shards are listed now and read per run, after the store says
	 * which are unchanged (and, with --shard/--claims, only a worker's). */
	fc_scan_opts so = { .flags = dsflags, .label_field = label_field, .threads = (int)decode, .lazy = 1 };
	if ((rc = fc_dataset_scan_with(&ds, data, &so, err, sizeof err)) != 0) {
		rc = cli_fail("cannot read dataset '%s': %s", data, err);
		goto out;
	}
	if (ds.n == 0 && ds.n_shards == 0) {
		rc = cli_fail("dataset '%s' has no images (.jpg, .jpeg or .png)", data);
		goto out;
	}
	if ((rc = cli_open_store_writer(&s, store, 0, 1, "extract", wait)) != 0)
		goto out;
	/* Where the images are, for the report's thumbnails (docs/design.md). */
	char root[PATH_MAX];
	if ((rc = data_root(&ds, data, root)) != 0)
		goto out;
	if ((rc = fc_store_set_data_root(s, root)) != 0) {
		rc = cli_store_fail(s, rc, "write");
		goto out;
	}
	cli_catch_interrupt();
	fc_extract_run_opts ro = { .decode_threads = (int)decode, .val_fraction = valf, .strict = strict,
				   .rehash = rehash, .logger = cli_logger() };
	if (ds.n_shards && !rehash && (rc = fc_shard_memo_open(&memo, s, fc_extract_id(x), err, sizeof err)) != 0) {
		rc = cli_fail("cannot read store '%s': %s", store, err);
		goto out;
	}
	fc_extract_stats st = { 0 };
	if (!quiet && (sh.size || claims))
		printf("worker %u of %u (%s): %s\n", sh.rank, sh.size ? sh.size : 1,
		       sh.size ? sh.source : "not sharded", claims ? "units taken through claims" : "a fixed share");
	if (claims) {
		if ((rc = run_claims(x, s, &ds, &sh, nunits, claims, claim_timeout, &ro, &st, quiet, memo)) != 0)
			goto out;
	} else if (sh.size) {
		struct units u = { calloc((nunits + 7) / 8, 1), nunits, &ds, memo, (int)decode };
		if (!u.mask) {
			rc = cli_fail("out of memory");
			goto out;
		}
		for (uint32_t k = sh.rank; k < nunits; k += sh.size)
			u.mask[k / 8] |= (uint8_t)(1u << (k % 8));
		rc = run_units(x, s, &ds, &u, &ro, &st, err, sizeof err);
		free(u.mask);
	} else {
		rc = fc_dataset_read_shards(&ds, fc_shard_memo_unchanged, memo, (int)decode, err, sizeof err);
		if (!rc)
			rc = fc_extract_run(x, s, &ds, &ro, &st, err, sizeof err);
		cli_progress_end();
	}
	if (rc) {
		rc = cli_fail("extract into '%s' stopped: %s", store, err);
		goto out;
	}
	print_summary(&st, x, dtype);
	rc = CLI_EXIT_OK;
out:
	fc_shard_memo_free(memo);
	fc_store_free(s);
	fc_dataset_free(&ds);
	fc_extract_free(x);
	return rc;
}
