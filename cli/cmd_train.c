/*
 * cmd_train.c - `featcache train`: load a split's cached features into RAM
 * once, train the projection head for some epochs over them, evaluate after
 * each epoch, keep the best head, a resumable checkpoint and a JSON-lines
 * log, and say how the head compares with the raw backbone features.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/data.h"
#include "featcache/train.h"

static const char usage_text[] =
	"usage: featcache train --store DIR --out HEAD.safetensors [options]\n"
	"\n"
	"Train a projection head (Finetuner's: [Linear -> BatchNorm1d -> ReLU] x (L-1)\n"
	"-> Linear -> BatchNorm1d) over the cached features of the train split, with\n"
	"a metric-learning loss, evaluating retrieval on the eval split after each\n"
	"epoch. Writes the best head (PyTorch state-dict names), HEAD.jsonl (one line\n"
	"per epoch) and HEAD.ckpt (resume with --resume HEAD.ckpt).\n"
	"\n"
	"  -s, --store DIR          the store (default: $FEATCACHE_STORE)\n"
	"  -o, --out FILE           where the head goes (safetensors)\n"
	"      --extractor ID       which feature set (hex prefix; default: the only one)\n"
	"      --output-dim N       embedding size of the head (default 256)\n"
	"      --head-layers L      1..8 Linear+BatchNorm layers (default 3)\n"
	"      --hidden N           width of the hidden layers (default: input dim)\n"
	"      --loss NAME          triplet siamese ntxent supcon arcface cosface (default triplet)\n"
	"      --miner NAME         all hard semihard easy (triplet only; default all)\n"
	"      --margin M           triplet 0.2; arcface 28.6 (degrees); cosface 0.35\n"
	"      --pos-margin M       siamese (default 0)\n"
	"      --neg-margin M       siamese (default 1)\n"
	"      --distance NAME      euclidean or cosine (default euclidean for triplet and\n"
	"                           siamese, cosine for the others; arcface/cosface need cosine)\n"
	"      --temperature T      ntxent 0.07, supcon 0.1\n"
	"      --scale S            arcface, cosface (default 64)\n"
	"      --optimizer NAME     adam adamw sgd (default adam)\n"
	"      --lr LR              learning rate (default 1e-3)\n"
	"      --weight-decay W     default 0 (adamw: 0.01)\n"
	"      --momentum M         sgd (default 0.9)\n"
	"      --nesterov           sgd with Nesterov momentum\n"
	"      --scheduler NAME     constant linear cosine warmup step (default constant)\n"
	"      --warmup-steps N     for linear, cosine, warmup (default 0)\n"
	"      --step-size E        step: decay by --gamma every E epochs (default epochs/3)\n"
	"      --gamma G            step (default 0.1)\n"
	"      --epochs N           default 10\n"
	"      --batch-size N       default 128\n"
	"      --items-per-class K  class-balanced batches of P classes x K items (default 4;\n"
	"                           arcface and cosface sample uniformly)\n"
	"      --seed S             default 0; the same seed gives bit-identical results\n"
	"      --train-split S      default train\n"
	"      --eval-split S       default val ('none' to skip evaluation)\n"
	"      --index-split S      search the eval queries in this split (default: the eval\n"
	"                           split itself, each query excluded from its own results)\n"
	"  -k, --k K                metrics at k (default 20)\n"
	"      --metric NAME        what picks the best epoch (default average_precision)\n"
	"      --early-stop M:P     stop when metric M has not improved for P epochs\n"
	"      --resume CKPT        continue a run from its checkpoint (same options)\n"
	"  -q, --quiet              no progress and no per-epoch lines\n"
	"  -h, --help               show this help\n";

enum {
	O_EXTRACTOR = 256, O_OUTPUT_DIM, O_LAYERS, O_HIDDEN, O_LOSS, O_MINER, O_MARGIN, O_POS_MARGIN,
	O_NEG_MARGIN, O_DISTANCE, O_TEMPERATURE, O_SCALE, O_OPTIMIZER, O_LR, O_WD, O_MOMENTUM, O_NESTEROV,
	O_SCHEDULER, O_WARMUP, O_STEP_SIZE, O_GAMMA, O_EPOCHS, O_BATCH, O_PER_CLASS, O_SEED, O_TRAIN_SPLIT,
	O_EVAL_SPLIT, O_INDEX_SPLIT, O_METRIC, O_EARLY, O_RESUME
};

static const struct option opts[] = {
	{ "store", required_argument, NULL, 's' },
	{ "out", required_argument, NULL, 'o' },
	{ "extractor", required_argument, NULL, O_EXTRACTOR },
	{ "output-dim", required_argument, NULL, O_OUTPUT_DIM },
	{ "head-layers", required_argument, NULL, O_LAYERS },
	{ "hidden", required_argument, NULL, O_HIDDEN },
	{ "loss", required_argument, NULL, O_LOSS },
	{ "miner", required_argument, NULL, O_MINER },
	{ "margin", required_argument, NULL, O_MARGIN },
	{ "pos-margin", required_argument, NULL, O_POS_MARGIN },
	{ "neg-margin", required_argument, NULL, O_NEG_MARGIN },
	{ "distance", required_argument, NULL, O_DISTANCE },
	{ "temperature", required_argument, NULL, O_TEMPERATURE },
	{ "scale", required_argument, NULL, O_SCALE },
	{ "optimizer", required_argument, NULL, O_OPTIMIZER },
	{ "lr", required_argument, NULL, O_LR },
	{ "weight-decay", required_argument, NULL, O_WD },
	{ "momentum", required_argument, NULL, O_MOMENTUM },
	{ "nesterov", no_argument, NULL, O_NESTEROV },
	{ "scheduler", required_argument, NULL, O_SCHEDULER },
	{ "warmup-steps", required_argument, NULL, O_WARMUP },
	{ "step-size", required_argument, NULL, O_STEP_SIZE },
	{ "gamma", required_argument, NULL, O_GAMMA },
	{ "epochs", required_argument, NULL, O_EPOCHS },
	{ "batch-size", required_argument, NULL, O_BATCH },
	{ "items-per-class", required_argument, NULL, O_PER_CLASS },
	{ "seed", required_argument, NULL, O_SEED },
	{ "train-split", required_argument, NULL, O_TRAIN_SPLIT },
	{ "eval-split", required_argument, NULL, O_EVAL_SPLIT },
	{ "index-split", required_argument, NULL, O_INDEX_SPLIT },
	{ "k", required_argument, NULL, 'k' },
	{ "metric", required_argument, NULL, O_METRIC },
	{ "early-stop", required_argument, NULL, O_EARLY },
	{ "resume", required_argument, NULL, O_RESUME },
	{ "quiet", no_argument, NULL, 'q' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* Options as given, before defaults that depend on the loss are applied. */
typedef struct train_opts {
	const char *store, *out, *extractor, *metric, *early_metric, *resume;
	const char *train_split, *eval_split, *index_split;
	uint64_t output_dim, layers, hidden, epochs, batch, per_class, seed, k, warmup, step_size, patience;
	int per_class_set, step_size_set, wd_set, quiet;
	float margin, pos_margin, neg_margin, temperature, scale, lr, wd, momentum, gamma;
	int margin_set, pos_set, neg_set, temp_set, scale_set, momentum_set, nesterov, distance_set;
	fc_loss_kind loss;
	fc_miner_kind miner;
	fc_distance_kind distance;
	fc_optim_kind optim;
	fc_sched_kind sched;
} train_opts;

static int parse(train_opts *o, int argc, char **argv)
{
	*o = (train_opts){ .output_dim = 256, .layers = 3, .epochs = 10, .batch = 128, .per_class = 4, .k = 20,
			   .lr = 1e-3f, .gamma = 0.1f, .train_split = "train", .eval_split = "val",
			   .metric = "average_precision" };
	int c, rc;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":s:o:k:qh", opts, NULL)) != -1) {
		rc = 0;
		switch (c) {
		case 's': o->store = optarg; break;
		case 'o': o->out = optarg; break;
		case 'q': o->quiet = 1; break;
		case 'h': fputs(usage_text, stdout); return -1;
		case 'k': rc = fc_parse_u64("train", "--k", optarg, 1, 100000, &o->k); break;
		case O_EXTRACTOR: o->extractor = optarg; break;
		case O_OUTPUT_DIM: rc = fc_parse_u64("train", "--output-dim", optarg, 1, 1 << 16, &o->output_dim); break;
		case O_LAYERS: rc = fc_parse_u64("train", "--head-layers", optarg, 1, 8, &o->layers); break;
		case O_HIDDEN: rc = fc_parse_u64("train", "--hidden", optarg, 1, 1 << 16, &o->hidden); break;
		case O_LOSS:
			if (fc_loss_parse(optarg, &o->loss))
				return fc_usage_error("train", "unknown loss '%s': expected triplet, siamese, ntxent, supcon, arcface or cosface", optarg);
			break;
		case O_MINER:
			if (fc_miner_parse(optarg, &o->miner))
				return fc_usage_error("train", "unknown miner '%s': expected all, hard, semihard or easy", optarg);
			break;
		case O_DISTANCE:
			if (fc_distance_parse(optarg, &o->distance))
				return fc_usage_error("train", "unknown distance '%s': expected euclidean or cosine", optarg);
			o->distance_set = 1;
			break;
		case O_OPTIMIZER:
			if (fc_optim_parse(optarg, &o->optim))
				return fc_usage_error("train", "unknown optimizer '%s': expected adam, adamw or sgd", optarg);
			break;
		case O_SCHEDULER:
			if (fc_sched_parse(optarg, &o->sched))
				return fc_usage_error("train", "unknown scheduler '%s': expected constant, linear, cosine, warmup or step", optarg);
			break;
		case O_MARGIN: rc = fc_parse_float("train", "--margin", optarg, -1e6, 1e6, &o->margin); o->margin_set = 1; break;
		case O_POS_MARGIN: rc = fc_parse_float("train", "--pos-margin", optarg, -1e6, 1e6, &o->pos_margin); o->pos_set = 1; break;
		case O_NEG_MARGIN: rc = fc_parse_float("train", "--neg-margin", optarg, -1e6, 1e6, &o->neg_margin); o->neg_set = 1; break;
		case O_TEMPERATURE: rc = fc_parse_float("train", "--temperature", optarg, 1e-6, 1e6, &o->temperature); o->temp_set = 1; break;
		case O_SCALE: rc = fc_parse_float("train", "--scale", optarg, 1e-6, 1e6, &o->scale); o->scale_set = 1; break;
		case O_LR: rc = fc_parse_float("train", "--lr", optarg, 1e-12, 1e3, &o->lr); break;
		case O_WD: rc = fc_parse_float("train", "--weight-decay", optarg, 0, 1e3, &o->wd); o->wd_set = 1; break;
		case O_MOMENTUM: rc = fc_parse_float("train", "--momentum", optarg, 0, 1, &o->momentum); o->momentum_set = 1; break;
		case O_NESTEROV: o->nesterov = 1; break;
		case O_GAMMA: rc = fc_parse_float("train", "--gamma", optarg, 0, 1e3, &o->gamma); break;
		case O_WARMUP: rc = fc_parse_u64("train", "--warmup-steps", optarg, 0, UINT32_MAX, &o->warmup); break;
		case O_STEP_SIZE: rc = fc_parse_u64("train", "--step-size", optarg, 1, 1000000, &o->step_size); o->step_size_set = 1; break;
		case O_EPOCHS: rc = fc_parse_u64("train", "--epochs", optarg, 1, 1000000, &o->epochs); break;
		case O_BATCH: rc = fc_parse_u64("train", "--batch-size", optarg, 2, 1 << 16, &o->batch); break;
		case O_PER_CLASS: rc = fc_parse_u64("train", "--items-per-class", optarg, 1, 1 << 16, &o->per_class); o->per_class_set = 1; break;
		case O_SEED: rc = fc_parse_u64("train", "--seed", optarg, 0, UINT64_MAX, &o->seed); break;
		case O_TRAIN_SPLIT: o->train_split = optarg; break;
		case O_EVAL_SPLIT: o->eval_split = optarg; break;
		case O_INDEX_SPLIT: o->index_split = optarg; break;
		case O_METRIC: o->metric = optarg; break;
		case O_RESUME: o->resume = optarg; break;
		case O_EARLY: {
			const char *colon = strrchr(optarg, ':');
			if (!colon || colon == optarg)
				return fc_usage_error("train", "bad value '%s' for --early-stop: expected METRIC:PATIENCE", optarg);
			static char metric[64];
			snprintf(metric, sizeof metric, "%.*s", (int)(colon - optarg), optarg);
			o->early_metric = metric;
			rc = fc_parse_u64("train", "--early-stop", colon + 1, 1, 1000000, &o->patience);
			break;
		}
		default:
			return fc_getopt_error("train", c, argv, opts);
		}
		if (rc)
			return rc;
	}
	if ((rc = fc_no_operands("train", argc, argv)) != 0)
		return rc;
	if ((rc = fc_need_store("train", o->store, &o->store)) != 0)
		return rc;
	if (!o->out)
		return fc_usage_error("train", "--out is required (where the head goes)");
	fc_metrics probe = { 0 };
	double v;
	if (fc_metric_get(&probe, o->metric, &v))
		return fc_usage_error("train", "unknown metric '%s' for --metric", o->metric);
	if (o->early_metric && fc_metric_get(&probe, o->early_metric, &v))
		return fc_usage_error("train", "unknown metric '%s' for --early-stop", o->early_metric);
	if (o->early_metric)
		o->metric = o->early_metric;
	return 0;
}

/* The library's config from the options, with each loss's defaults. */
static void build_config(const train_opts *o, fc_train_config *c, uint32_t in_dim)
{
	memset(c, 0, sizeof *c);
	c->head = (fc_head_config){ in_dim, (uint32_t)o->hidden, (uint32_t)o->output_dim, (uint32_t)o->layers };
	fc_loss_config_default(&c->loss, o->loss);
	c->loss.miner = o->miner;
	if (o->distance_set)
		c->loss.distance = o->distance;
	if (o->margin_set)
		c->loss.margin = o->margin;
	if (o->pos_set)
		c->loss.pos_margin = o->pos_margin;
	if (o->neg_set)
		c->loss.neg_margin = o->neg_margin;
	if (o->temp_set)
		c->loss.temperature = o->temperature;
	if (o->scale_set)
		c->loss.scale = o->scale;
	fc_optim_config_default(&c->optim, o->optim);
	if (o->wd_set)
		c->optim.weight_decay = o->wd;
	if (o->momentum_set)
		c->optim.momentum = o->momentum;
	c->optim.nesterov = o->nesterov;
	c->lr = o->lr;
	c->epochs = (uint32_t)o->epochs;
	c->batch = (uint32_t)o->batch;
	int uniform = o->loss == FC_LOSS_ARCFACE || o->loss == FC_LOSS_COSFACE;
	c->per_class = uniform && !o->per_class_set ? 0 : (uint32_t)o->per_class;
	c->seed = o->seed;
	c->sched.kind = o->sched;
	c->sched.warmup_steps = o->warmup;
	c->sched.gamma = o->gamma;
}

/* The run's options as JSON, for the head's metadata and the log. */
static json_t *config_json(const train_opts *o, const fc_train_config *c, const char *exid)
{
	return json_pack("{s:s, s:s, s:i, s:i, s:i, s:i, s:s, s:s, s:s, s:f, s:f, s:f, s:f, s:f, s:s, s:f, s:f, "
			 "s:f, s:b, s:s, s:I, s:f, s:i, s:i, s:i, s:I, s:s, s:s, s:s?, s:I, s:s, s:s}",
			 "featcache", FC_VERSION_STRING, "extractor", exid, "input_dim", (int)c->head.in_dim,
			 "hidden", (int)(c->head.hidden ? c->head.hidden : c->head.in_dim), "output_dim",
			 (int)c->head.out_dim, "head_layers", (int)c->head.layers, "loss", fc_loss_name(c->loss.kind),
			 "miner", fc_miner_name(c->loss.miner), "distance", fc_distance_name(c->loss.distance),
			 "margin", (double)c->loss.margin, "pos_margin", (double)c->loss.pos_margin, "neg_margin",
			 (double)c->loss.neg_margin, "temperature", (double)c->loss.temperature, "scale",
			 (double)c->loss.scale, "optimizer", fc_optim_name(c->optim.kind), "lr", (double)c->lr,
			 "weight_decay", (double)c->optim.weight_decay, "momentum", (double)c->optim.momentum,
			 "nesterov", c->optim.nesterov, "scheduler", fc_sched_name(c->sched.kind), "warmup_steps",
			 (json_int_t)c->sched.warmup_steps, "gamma", (double)c->sched.gamma, "epochs", (int)c->epochs,
			 "batch_size", (int)c->batch, "items_per_class", (int)c->per_class, "seed",
			 (json_int_t)c->seed, "train_split", o->train_split, "eval_split", o->eval_split,
			 "index_split", o->index_split, "k", (json_int_t)o->k, "metric", o->metric, "format", "pt");
}

static void metrics_from_json(fc_metrics *m, json_t *j)
{
	double *fields[] = { &m->precision, &m->recall, &m->f1, &m->hit, &m->ap, &m->rr, &m->r_precision, &m->dcg,
			     &m->ndcg };
	for (int i = 0; j && i < 9; i++)
		*fields[i] = json_real_value(json_object_get(j, fc_metric_names[i]));
}

static void print_metrics(const char *what, const fc_metrics *m, size_t k)
{
	printf("%-28s mAP@%zu %.4f  precision@%zu %.4f  recall@%zu %.4f  ndcg@%zu %.4f  mrr %.4f\n", what, k, m->ap,
	       k, m->precision, k, m->recall, k, m->ndcg, m->rr);
}

/* The eval set: queries (and an index when it is another split). */
typedef struct eval_set {
	fc_split_data q, ix;
	int has_index, enabled;
} eval_set;

static int eval_run(fc_metrics *m, fc_head *head, const eval_set *e, size_t k)
{
	const fc_matrix *q = &e->q.m, *ix = e->has_index ? &e->ix.m : &e->q.m;
	return fc_eval_features(m, head, q->data, q->labels, q->rows, ix->data, ix->labels, ix->rows, q->dim, k,
				!e->has_index);
}

static int append_line(const char *path, json_t *j)
{
	FILE *f = fopen(path, "a");
	if (!f)
		return fc_fail("cannot write log '%s': %s", path, fc_errno_str(errno));
	char *text = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
	int ok = text && fprintf(f, "%s\n", text) > 0;
	free(text);
	if (fclose(f) != 0 || !ok)
		return fc_fail("cannot write log '%s'", path);
	return 0;
}

int cmd_train(int argc, char **argv)
{
	train_opts o;
	int rc = parse(&o, argc, argv);
	if (rc)
		return rc < 0 ? FC_EXIT_OK : rc;
	fc_cli_logger_flags(o.quiet ? FC_CLI_QUIET : 0);
	const fc_logger *lg = fc_cli_logger();

	fc_store *s = NULL;
	fc_split_data train = { 0 };
	eval_set ev = { 0 };
	uint32_t *classes = NULL;
	fc_trainer *t = NULL;
	json_t *cfgj = NULL;
	char *extra = NULL, *cfgtext = NULL;
	char logpath[4200], ckpt[4200], why[FC_TRAIN_ERRLEN] = "";
	snprintf(logpath, sizeof logpath, "%s.jsonl", o.out);
	snprintf(ckpt, sizeof ckpt, "%s.ckpt", o.out);

	unsigned train_mask, eval_mask = 0, index_mask = 0;
	if ((rc = fc_parse_splits("train", "--train-split", o.train_split, &train_mask)) != 0)
		return rc;
	ev.enabled = strcmp(o.eval_split, "none") != 0;
	if (ev.enabled && (rc = fc_parse_splits("train", "--eval-split", o.eval_split, &eval_mask)) != 0)
		return rc;
	if (o.index_split && (rc = fc_parse_splits("train", "--index-split", o.index_split, &index_mask)) != 0)
		return rc;

	if ((rc = fc_open_store(&s, o.store, 1)) != 0)
		return rc;
	uint8_t exid[FC_HASH_LEN];
	char exhex[2 * FC_HASH_LEN + 1];
	if ((rc = fc_pick_extractor("train", s, o.extractor, exid)) != 0)
		goto out;
	fc_hex(exhex, exid, FC_HASH_LEN);
	if ((rc = fc_load_split(s, exid, train_mask, 0, &train)) != 0)
		goto out;
	if (train.missing)
		fc_warn("%zu items of the train split have no features yet (run 'featcache extract')", train.missing);
	if (train.unlabeled)
		fc_warn("%zu unlabelled items of the train split are left out", train.unlabeled);
	if (ev.enabled) {
		if ((rc = fc_load_split(s, exid, eval_mask, 0, &ev.q)) != 0)
			goto out;
		if (o.index_split) {
			ev.has_index = 1;
			if ((rc = fc_load_split(s, exid, index_mask, 0, &ev.ix)) != 0)
				goto out;
		}
		if (ev.q.m.rows == 0) {
			fc_warn("the %s split has no labelled features: no evaluation (use --eval-split)", o.eval_split);
			ev.enabled = 0;
		}
	}
	fc_store_free(s);
	s = NULL;

	uint32_t n_classes = 0;
	classes = fc_dense_classes(train.m.labels, train.m.rows, &n_classes);
	if (!classes) {
		rc = fc_fail("out of memory");
		goto out;
	}
	fc_train_config cfg;
	build_config(&o, &cfg, (uint32_t)train.m.dim);
	fc_train_data data = { train.m.data, classes, train.m.rows, n_classes };
	/* StepLR counts epochs; the trainer counts optimizer steps. */
	{
		fc_batches b;
		if (fc_sample_epoch(&b, classes, train.m.rows, n_classes, cfg.batch, cfg.per_class, cfg.seed, 0) == 0) {
			uint64_t per_epoch = b.n_batches ? b.n_batches : 1;
			uint64_t se = o.step_size_set ? o.step_size : (o.epochs / 3 ? o.epochs / 3 : 1);
			cfg.sched.step_size = se * per_epoch;
			fc_batches_free(&b);
		}
	}
	rc = fc_trainer_new(&t, &cfg, &data, why);
	if (rc == FC_ERR_INVALID) {
		rc = fc_usage_error("train", "%s", why);
		goto out;
	}
	if (rc) {
		rc = fc_fail("cannot start training: %s", why[0] ? why : fc_strerror(rc));
		goto out;
	}
	cfgj = config_json(&o, &cfg, exhex);
	cfgtext = cfgj ? json_dumps(cfgj, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	if (!cfgtext) {
		rc = fc_fail("out of memory");
		goto out;
	}

	/* History lives in the checkpoint's extra text: best metric, its epoch,
	 * epochs since it improved, and the before-training metrics. */
	double best = -1;
	uint32_t best_epoch = 0, stale = 0;
	fc_metrics before = { 0 }, m = { 0 }, best_m = { 0 };
	if (o.resume) {
		rc = fc_trainer_load(t, o.resume, &extra, why);
		if (rc == FC_ERR_INVALID) {
			rc = fc_usage_error("train", "cannot resume from '%s': %s", o.resume, why);
			goto out;
		}
		if (rc) {
			rc = fc_fail("cannot resume from '%s': %s", o.resume, why);
			goto out;
		}
		json_t *x = extra ? json_loads(extra, 0, NULL) : NULL;
		if (x) {
			best = json_real_value(json_object_get(x, "best"));
			best_epoch = (uint32_t)json_integer_value(json_object_get(x, "best_epoch"));
			stale = (uint32_t)json_integer_value(json_object_get(x, "stale"));
		}
		metrics_from_json(&before, x ? json_object_get(x, "before") : NULL);
		metrics_from_json(&best_m, x ? json_object_get(x, "best_metrics") : NULL);
		json_decref(x);
		if (!o.quiet)
			printf("resuming after epoch %u of %u from '%s'\n", fc_trainer_epochs_done(t), cfg.epochs, o.resume);
	} else {
		remove(logpath);
	}

	if (!o.quiet)
		printf("train: %zu items, %u classes, %zu-d features of extractor %.12s; eval: %s (%zu queries)\n",
		       train.m.rows, n_classes, train.m.dim, exhex, ev.enabled ? o.eval_split : "none",
		       ev.enabled ? ev.q.m.rows : (size_t)0);
	if (ev.enabled && !o.resume) {
		if ((rc = eval_run(&before, NULL, &ev, o.k)) != 0) {
			rc = fc_fail("cannot evaluate: %s", fc_strerror(rc));
			goto out;
		}
		if (!o.quiet)
			print_metrics("before (raw features):", &before, o.k);
		json_t *line = json_pack("{s:o, s:o}", "config", json_deep_copy(cfgj), "before", fc_metrics_json(&before, 0));
		rc = append_line(logpath, line);
		json_decref(line);
		if (rc)
			goto out;
	}

	const char *meta[] = { "featcache_config", cfgtext, NULL, NULL, NULL, NULL, NULL };
	char epoch_text[32], metric_text[64];
	fc_catch_interrupt();
	while (fc_trainer_epochs_done(t) < cfg.epochs) {
		fc_epoch_stats st;
		uint64_t bad = 0;
		rc = fc_trainer_epoch(t, &st, &bad, o.quiet ? NULL : lg);
		fc_progress_end();
		if (rc == FC_ERR_INVALID && bad) {
			rc = fc_fail("train: the loss or its gradient is not finite at step %llu (epoch %u): try a lower --lr "
				     "(now %g); the last good checkpoint is '%s'",
				     (unsigned long long)bad, fc_trainer_epochs_done(t) + 1, (double)cfg.lr, ckpt);
			goto out;
		}
		if (rc == FC_ERR_INTERRUPTED) {
			rc = fc_fail("train: interrupted; resume with --resume '%s'", ckpt);
			goto out;
		}
		if (rc) {
			rc = fc_fail("train: %s", fc_strerror(rc));
			goto out;
		}
		int improved = 0;
		double val = -st.loss;
		if (ev.enabled) {
			if ((rc = eval_run(&m, fc_trainer_head(t), &ev, o.k)) != 0) {
				rc = fc_fail("cannot evaluate: %s", fc_strerror(rc));
				goto out;
			}
			fc_metric_get(&m, o.metric, &val);
		}
		if (best_epoch == 0 || val > best) {
			best = val;
			best_epoch = st.epoch;
			best_m = m;
			stale = 0;
			improved = 1;
		} else {
			stale++;
		}
		if (!o.quiet) {
			printf("epoch %3u/%u  loss %.5f  lr %.3g  %6.0f samples/s", st.epoch, cfg.epochs, st.loss, st.lr,
			       st.samples_per_s);
			if (ev.enabled)
				printf("  mAP@%zu %.4f  p@%zu %.4f  ndcg@%zu %.4f%s", o.k, m.ap, o.k, m.precision, o.k, m.ndcg,
				       improved ? "  *" : "");
			putchar('\n');
			fflush(stdout);
		}
		json_t *line = json_pack("{s:i, s:I, s:f, s:f, s:f, s:f, s:I, s:b}", "epoch", (int)st.epoch, "steps",
					 (json_int_t)st.steps, "loss", st.loss, "lr", st.lr, "seconds", st.seconds,
					 "samples_per_s", st.samples_per_s, "active", (json_int_t)st.active, "best",
					 improved);
		if (ev.enabled)
			json_object_set_new(line, "metrics", fc_metrics_json(&m, 0));
		rc = append_line(logpath, line);
		json_decref(line);
		if (rc)
			goto out;
		if (improved) {
			snprintf(epoch_text, sizeof epoch_text, "%u", st.epoch);
			snprintf(metric_text, sizeof metric_text, "%.6f", val);
			meta[2] = "epoch";
			meta[3] = epoch_text;
			meta[4] = ev.enabled ? o.metric : "neg_loss";
			meta[5] = metric_text;
			if ((rc = fc_head_save(fc_trainer_head(t), o.out, meta, why)) != 0) {
				rc = fc_fail("cannot write head '%s': %s", o.out, why);
				goto out;
			}
		}
		json_t *x = json_pack("{s:f, s:i, s:i, s:o, s:o}", "best", best, "best_epoch", (int)best_epoch, "stale",
				      (int)stale, "before", fc_metrics_json(&before, 0), "best_metrics", fc_metrics_json(&best_m, 0));
		free(extra);
		extra = json_dumps(x, JSON_COMPACT);
		json_decref(x);
		if ((rc = fc_trainer_save(t, ckpt, extra, why)) != 0) {
			rc = fc_fail("cannot write checkpoint '%s': %s", ckpt, why);
			goto out;
		}
		if (o.early_metric && stale >= o.patience) {
			if (!o.quiet)
				printf("early stop: %s has not improved for %u epochs\n", o.early_metric, stale);
			break;
		}
	}
	if (ev.enabled) {
		print_metrics("before (raw features):", &before, o.k);
		char what[64];
		snprintf(what, sizeof what, "after (head, epoch %u):", best_epoch);
		print_metrics(what, &best_m, o.k);
	}
	printf("head written to '%s' (epoch %u), log '%s', checkpoint '%s'\n", o.out, best_epoch, logpath, ckpt);
	rc = FC_EXIT_OK;
out:
	fc_progress_end();
	json_decref(cfgj);
	free(cfgtext);
	free(extra);
	fc_trainer_free(t);
	free(classes);
	fc_split_data_free(&train);
	fc_split_data_free(&ev.q);
	fc_split_data_free(&ev.ix);
	fc_store_free(s);
	return rc;
}
