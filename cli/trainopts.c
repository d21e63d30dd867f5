/*
 * trainopts.c - train's options, inputs and runs, shared by `featcache
 * train` and `featcache sweep` (trainopts.h), so that a sweep's
 * configuration means exactly what the same options mean to train. The
 * per-epoch policy is train/'s (fc_policy), the log's schema report/'s;
 * this file connects them and prints.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/gallery.h"
#include "cli/trainopts.h"
#include "featcache/report.h"

const struct option cli_train_longopts[CLI_TRAIN_NOPTS + 1] = {
	{ "store", required_argument, NULL, 's' },
	{ "out", required_argument, NULL, 'o' },
	{ "extractor", required_argument, NULL, CLI_TOPT_EXTRACTOR },
	{ "output-dim", required_argument, NULL, CLI_TOPT_OUTPUT_DIM },
	{ "head-layers", required_argument, NULL, CLI_TOPT_LAYERS },
	{ "hidden", required_argument, NULL, CLI_TOPT_HIDDEN },
	{ "loss", required_argument, NULL, CLI_TOPT_LOSS },
	{ "miner", required_argument, NULL, CLI_TOPT_MINER },
	{ "margin", required_argument, NULL, CLI_TOPT_MARGIN },
	{ "pos-margin", required_argument, NULL, CLI_TOPT_POS_MARGIN },
	{ "neg-margin", required_argument, NULL, CLI_TOPT_NEG_MARGIN },
	{ "distance", required_argument, NULL, CLI_TOPT_DISTANCE },
	{ "temperature", required_argument, NULL, CLI_TOPT_TEMPERATURE },
	{ "scale", required_argument, NULL, CLI_TOPT_SCALE },
	{ "optimizer", required_argument, NULL, CLI_TOPT_OPTIMIZER },
	{ "lr", required_argument, NULL, CLI_TOPT_LR },
	{ "weight-decay", required_argument, NULL, CLI_TOPT_WD },
	{ "momentum", required_argument, NULL, CLI_TOPT_MOMENTUM },
	{ "nesterov", no_argument, NULL, CLI_TOPT_NESTEROV },
	{ "scheduler", required_argument, NULL, CLI_TOPT_SCHEDULER },
	{ "warmup-steps", required_argument, NULL, CLI_TOPT_WARMUP },
	{ "step-size", required_argument, NULL, CLI_TOPT_STEP_SIZE },
	{ "gamma", required_argument, NULL, CLI_TOPT_GAMMA },
	{ "epochs", required_argument, NULL, CLI_TOPT_EPOCHS },
	{ "batch-size", required_argument, NULL, CLI_TOPT_BATCH },
	{ "items-per-class", required_argument, NULL, CLI_TOPT_PER_CLASS },
	{ "seed", required_argument, NULL, CLI_TOPT_SEED },
	{ "train-split", required_argument, NULL, CLI_TOPT_TRAIN_SPLIT },
	{ "eval-split", required_argument, NULL, CLI_TOPT_EVAL_SPLIT },
	{ "index-split", required_argument, NULL, CLI_TOPT_INDEX_SPLIT },
	{ "val-from-train", required_argument, NULL, CLI_TOPT_VAL_FROM_TRAIN },
	{ "k", required_argument, NULL, 'k' },
	{ "metric", required_argument, NULL, CLI_TOPT_METRIC },
	{ "early-stop", required_argument, NULL, CLI_TOPT_EARLY },
	{ "resume", required_argument, NULL, CLI_TOPT_RESUME },
	{ "report", no_argument, NULL, CLI_TOPT_REPORT },
	{ "data", required_argument, NULL, CLI_TOPT_DATA },
	{ "max-memory", required_argument, NULL, CLI_TOPT_MAX_MEMORY },
	{ "cache", required_argument, NULL, CLI_TOPT_CACHE },
	{ "quiet", no_argument, NULL, 'q' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

int cli_train_opt_kind(int code)
{
	switch (code) {
	case 'q': case 'h': case CLI_TOPT_NESTEROV: case CLI_TOPT_REPORT:
		return CLI_TOPT_FLAG;
	case 'k': case CLI_TOPT_OUTPUT_DIM: case CLI_TOPT_LAYERS: case CLI_TOPT_HIDDEN: case CLI_TOPT_WARMUP:
	case CLI_TOPT_STEP_SIZE: case CLI_TOPT_EPOCHS: case CLI_TOPT_BATCH: case CLI_TOPT_PER_CLASS: case CLI_TOPT_SEED:
		return CLI_TOPT_INT;
	case CLI_TOPT_MARGIN: case CLI_TOPT_POS_MARGIN: case CLI_TOPT_NEG_MARGIN: case CLI_TOPT_TEMPERATURE:
	case CLI_TOPT_SCALE: case CLI_TOPT_LR: case CLI_TOPT_WD: case CLI_TOPT_MOMENTUM: case CLI_TOPT_GAMMA:
	case CLI_TOPT_VAL_FROM_TRAIN:
		return CLI_TOPT_FLOAT;
	default:
		return CLI_TOPT_TEXT;
	}
}

int cli_train_write_report(const char *html, const char *src, const cli_train_opts *o, const char *head)
{
	char err[1024];
	size_t charts = 0;
	if (head && strcmp(o->eval_split, "none") != 0) {
		cli_views_opts vo;
		cli_views_opts_init(&vo);
		vo.store = o->store;
		vo.head = head;
		vo.extractor = o->extractor;
		vo.split = o->eval_split;
		vo.index_split = o->index_split;
		vo.data = o->data;
		vo.k = o->k;
		vo.seed = o->seed;
		return cli_views_report(html, &src, 1, o->metric, NULL, &vo, 0);
	}
	if (fc_report_write(html, &src, 1, o->metric, NULL, &charts, err, sizeof err) != 0)
		return cli_fail("%s", err);
	printf("report written to '%s' (%zu charts)\n", html, charts);
	return 0;
}

void cli_train_opts_init(cli_train_opts *o)
{
	*o = (cli_train_opts){ .output_dim = 256, .layers = 3, .epochs = 10, .batch = 128, .per_class = 4, .k = 20,
			      .lr = 1e-3f, .gamma = 0.1f, .train_split = "train", .eval_split = "val",
			      .metric = "average_precision" };
}

/* The result of parsing a named choice (0 or an error code): a usage error
 * listing the names expected when the name was not one of them. */
static int named(const char *cmd, int parsed, const char *what, const char *arg, const char *expected)
{
	if (parsed)
		return cli_usage_error(cmd, "unknown %s '%s': expected %s", what, arg, expected);
	return 0;
}

int cli_train_opts_set(cli_train_opts *o, const char *cmd, int code, const char *arg)
{
	switch (code) {
	case 's': o->store = arg; return 0;
	case 'o': o->out = arg; return 0;
	case 'q': o->quiet = 1; return 0;
	case CLI_TOPT_REPORT: o->report = 1; return 0;
	case CLI_TOPT_DATA: o->data = arg; return 0;
	case CLI_TOPT_MAX_MEMORY: return cli_parse_size(cmd, "--max-memory", arg, &o->mem.max_memory);
	case CLI_TOPT_CACHE: return cli_parse_size(cmd, "--cache", arg, &o->mem.cache);
	case 'k': return cli_parse_u64(cmd, "--k", arg, 1, 100000, &o->k);
	case CLI_TOPT_EXTRACTOR: o->extractor = arg; return 0;
	case CLI_TOPT_OUTPUT_DIM: return cli_parse_u64(cmd, "--output-dim", arg, 1, 1 << 16, &o->output_dim);
	case CLI_TOPT_LAYERS: return cli_parse_u64(cmd, "--head-layers", arg, 1, 8, &o->layers);
	case CLI_TOPT_HIDDEN: return cli_parse_u64(cmd, "--hidden", arg, 1, 1 << 16, &o->hidden);
	case CLI_TOPT_LOSS:
		return named(cmd, fc_loss_parse(arg, &o->loss), "loss", arg,
			     "triplet, siamese, ntxent, supcon, arcface or cosface");
	case CLI_TOPT_MINER:
		return named(cmd, fc_miner_parse(arg, &o->miner), "miner", arg, "all, hard, semihard or easy");
	case CLI_TOPT_DISTANCE:
		o->distance_set = 1;
		return named(cmd, fc_distance_parse(arg, &o->distance), "distance", arg, "euclidean or cosine");
	case CLI_TOPT_OPTIMIZER:
		return named(cmd, fc_optim_parse(arg, &o->optim), "optimizer", arg, "adam, adamw or sgd");
	case CLI_TOPT_SCHEDULER:
		return named(cmd, fc_sched_parse(arg, &o->sched), "scheduler", arg,
			     "constant, linear, cosine, warmup or step");
	case CLI_TOPT_MARGIN: o->margin_set = 1; return cli_parse_float(cmd, "--margin", arg, -1e6, 1e6, &o->margin);
	case CLI_TOPT_POS_MARGIN: o->pos_set = 1; return cli_parse_float(cmd, "--pos-margin", arg, -1e6, 1e6, &o->pos_margin);
	case CLI_TOPT_NEG_MARGIN: o->neg_set = 1; return cli_parse_float(cmd, "--neg-margin", arg, -1e6, 1e6, &o->neg_margin);
	case CLI_TOPT_TEMPERATURE: o->temp_set = 1; return cli_parse_float(cmd, "--temperature", arg, 1e-6, 1e6, &o->temperature);
	case CLI_TOPT_SCALE: o->scale_set = 1; return cli_parse_float(cmd, "--scale", arg, 1e-6, 1e6, &o->scale);
	case CLI_TOPT_LR: return cli_parse_float(cmd, "--lr", arg, 1e-12, 1e3, &o->lr);
	case CLI_TOPT_WD: o->wd_set = 1; return cli_parse_float(cmd, "--weight-decay", arg, 0, 1e3, &o->wd);
	case CLI_TOPT_MOMENTUM: o->momentum_set = 1; return cli_parse_float(cmd, "--momentum", arg, 0, 1, &o->momentum);
	case CLI_TOPT_NESTEROV: o->nesterov = 1; return 0;
	case CLI_TOPT_GAMMA: return cli_parse_float(cmd, "--gamma", arg, 0, 1e3, &o->gamma);
	case CLI_TOPT_WARMUP: return cli_parse_u64(cmd, "--warmup-steps", arg, 0, UINT32_MAX, &o->warmup);
	case CLI_TOPT_STEP_SIZE: o->step_size_set = 1; return cli_parse_u64(cmd, "--step-size", arg, 1, 1000000, &o->step_size);
	case CLI_TOPT_EPOCHS: return cli_parse_u64(cmd, "--epochs", arg, 1, 1000000, &o->epochs);
	case CLI_TOPT_BATCH: return cli_parse_u64(cmd, "--batch-size", arg, 2, 1 << 16, &o->batch);
	case CLI_TOPT_PER_CLASS: o->per_class_set = 1; return cli_parse_u64(cmd, "--items-per-class", arg, 1, 1 << 16, &o->per_class);
	case CLI_TOPT_SEED: return cli_parse_u64(cmd, "--seed", arg, 0, UINT64_MAX, &o->seed);
	case CLI_TOPT_TRAIN_SPLIT: o->train_split = arg; return 0;
	case CLI_TOPT_EVAL_SPLIT: o->eval_split = arg; return 0;
	case CLI_TOPT_INDEX_SPLIT: o->index_split = arg; return 0;
	case CLI_TOPT_VAL_FROM_TRAIN:
		return cli_parse_float(cmd, "--val-from-train", arg, 0, 0.99, &o->val_from_train);
	case CLI_TOPT_METRIC: o->metric = arg; return 0;
	case CLI_TOPT_RESUME: o->resume = arg; return 0;
	case CLI_TOPT_EARLY: {
		const char *colon = strrchr(arg, ':');
		if (!colon || colon == arg || (size_t)(colon - arg) >= sizeof o->early_buf)
			return cli_usage_error(cmd, "bad value '%s' for --early-stop: expected METRIC:PATIENCE", arg);
		snprintf(o->early_buf, sizeof o->early_buf, "%.*s", (int)(colon - arg), arg);
		o->early_metric = o->early_buf;
		return cli_parse_u64(cmd, "--early-stop", colon + 1, 1, 1000000, &o->patience);
	}
	default:
		return -1;
	}
}

int cli_train_opts_check(cli_train_opts *o, const char *cmd)
{
	if (o->early_metric)
		o->early_metric = o->early_buf; /* o may be a copy */
	int rc = cli_metric_check(cmd, "--metric", o->metric);
	if (!rc && o->early_metric)
		rc = cli_metric_check(cmd, "--early-stop", o->early_metric);
	if (rc)
		return rc;
	if (o->early_metric)
		o->metric = o->early_metric;
	return 0;
}

/* The library's config from the options, with each loss's defaults. */
static void build_config(const cli_train_opts *o, fc_train_config *c, uint32_t in_dim)
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

/* The run's options as JSON, for the head's metadata and the log. A val
 * carved from train is recorded when there is one (a resume must carve the
 * same, and the report says so); configs without it read as before. */
static json_t *config_json(const cli_train_opts *o, const fc_train_config *c, const char *exid)
{
	json_t *j = json_pack("{s:s, s:s, s:i, s:i, s:i, s:i, s:s, s:s, s:s, s:f, s:f, s:f, s:f, s:f, s:s, s:f, s:f, "
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
	if (j && o->val_from_train > 0 && json_object_set_new(j, "val_from_train", json_real(o->val_from_train)) != 0) {
		json_decref(j);
		return NULL;
	}
	return j;
}

void cli_print_metrics(const char *what, const fc_metrics *m, size_t k)
{
	printf("%-28s mAP@%zu %.4f  precision@%zu %.4f  recall@%zu %.4f  ndcg@%zu %.4f  mrr %.4f\n", what, k, m->ap,
	       k, m->precision, k, m->recall, k, m->ndcg, m->rr);
}

int cli_train_inputs_load(cli_train_inputs *in, const char *cmd, const cli_train_opts *o)
{
	memset(in, 0, sizeof *in);
	unsigned train_mask, eval_mask = 0, index_mask = 0;
	int rc;
	if ((rc = cli_parse_splits(cmd, "--train-split", o->train_split, &train_mask)) != 0)
		return rc;
	in->evaluated = strcmp(o->eval_split, "none") != 0;
	if (in->evaluated && (rc = cli_parse_splits(cmd, "--eval-split", o->eval_split, &eval_mask)) != 0)
		return rc;
	if (o->index_split && (rc = cli_parse_splits(cmd, "--index-split", o->index_split, &index_mask)) != 0)
		return rc;

	fc_store *s = NULL;
	if ((rc = cli_open_store(&s, o->store, 1)) != 0)
		return rc;
	uint8_t exid[FC_HASH_LEN];
	if ((rc = cli_pick_extractor(cmd, s, o->extractor, exid)) != 0)
		goto out;
	fc_hex(in->exhex, exid, FC_HASH_LEN);
	fc_extractor ex;
	if ((rc = fc_store_get_extractor(s, exid, &ex)) != 0) {
		rc = cli_store_fail(s, rc, "read");
		goto out;
	}
	if (ex.descriptor && !(in->exdesc = strdup(ex.descriptor))) {
		rc = cli_fail("out of memory");
		goto out;
	}
	double vf = o->val_from_train;
	char what[FC_ERRLEN], advice[FC_ERRLEN];
	/* The item records first; the features once the plan says how. */
	if ((rc = cli_load_split_as(s, exid, train_mask, 0, vf, FC_LOAD_NONE, &in->train)) != 0)
		goto out;
	if (in->train.m.rows == 0 &&
	    cli_split_empty(s, train_mask, 0, "--train-split", o->train_split, what, advice, sizeof what)) {
		rc = cli_fail("%s: %s", what, advice);
		goto out;
	}
	if (in->train.missing)
		cli_warn("%zu items of the train split have no features yet (run 'featcache extract')", in->train.missing);
	if (in->train.unlabeled)
		cli_warn("%zu unlabelled items of the train split are left out", in->train.unlabeled);
	if (in->evaluated) {
		if ((rc = cli_load_split_as(s, exid, eval_mask, 0, vf, FC_LOAD_NONE, &in->q)) != 0 ||
		    (o->index_split &&
		     (rc = cli_load_split_as(s, exid, index_mask, 0, vf, FC_LOAD_NONE, &in->ix)) != 0))
			goto out;
		if (in->q.m.rows == 0) {
			if (cli_split_empty(s, eval_mask, vf, "--eval-split", o->eval_split, what, advice, sizeof what))
				cli_warn("%s: no evaluation; %s", what, advice);
			else
				cli_warn("the %s split has no labelled features: no evaluation (use --eval-split)",
					 o->eval_split);
			in->evaluated = 0;
		}
	}
	const fc_matrix *q = &in->q.m, *ix = &in->ix.m;
	/* What evaluation adds: the packed, normalised copies of queries and
	 * index the kNN searches, raw and through the head, and a block of
	 * rows converted at a time. */
	uint64_t extra = 0;
	if (in->evaluated) {
		uint64_t ni = o->index_split ? ix->rows : q->rows, dim = ex.dim;
		extra = ((uint64_t)q->rows + ni) * (dim + 2 * o->output_dim) * sizeof(float) + 4096 * dim * sizeof(float);
	}
	cli_split_data *sp[3] = { &in->train, &in->q, &in->ix };
	if ((rc = cli_plan_features(&in->plan, cmd, &s, exid, sp, 3, extra, &o->mem, o->quiet)) != 0)
		goto out;
	in->k_used = (size_t)o->k;
	if (in->evaluated)
		in->k_used = cli_k_used(o->k, o->index_split ? ix->rows : q->rows - 1, o->eval_split);
	in->eval = (fc_eval_set){ .query_labels = q->labels, .nq = q->rows, .index_labels = ix->labels,
				  .ni = ix->rows, .dim = q->dim, .k = (size_t)o->k, .self = !o->index_split,
				  .qrows = &in->q.x, .irows = &in->ix.x };
	uint32_t n_classes = 0;
	in->classes = cli_dense_classes(in->train.m.labels, in->train.m.rows, &n_classes);
	if (!in->classes) {
		rc = cli_fail("out of memory");
		goto out;
	}
	in->data = (fc_train_data){ NULL, in->classes, in->train.m.rows, n_classes, &in->train.x };
out:
	fc_store_free(s);
	return rc;
}

void cli_train_inputs_free(cli_train_inputs *in)
{
	free(in->classes);
	free(in->exdesc);
	cli_split_data_free(&in->train);
	cli_split_data_free(&in->q);
	cli_split_data_free(&in->ix);
	cli_feature_plan_free(&in->plan);
	memset(in, 0, sizeof *in);
}

int cli_train_run_trainer(cli_train_run *r, const char *cmd)
{
	char why[FC_ERRLEN] = "";
	fc_trainer_free(r->t);
	r->t = NULL;
	int rc = fc_trainer_new(&r->t, &r->cfg, &r->in->data, why, sizeof why);
	if (rc == FC_ERR_INVALID)
		return cli_usage_error(cmd, "%s", why);
	if (rc)
		return cli_fail("cannot start training: %s", why[0] ? why : fc_strerror(rc));
	return 0;
}

int cli_train_run_start(cli_train_run *r, const char *cmd, const cli_train_opts *o, const cli_train_inputs *in,
		       const char *out)
{
	const fc_train_data *d = &in->data;
	memset(r, 0, sizeof *r);
	r->o = o;
	r->in = in;
	r->out = out;
	snprintf(r->log, sizeof r->log, "%s.jsonl", out);
	snprintf(r->ckpt, sizeof r->ckpt, "%s.ckpt", out);
	build_config(o, &r->cfg, (uint32_t)in->train.m.dim);
	/* StepLR counts epochs; the trainer counts optimizer steps. Without
	 * --step-size the trainer derives it (a third of the epochs), which a
	 * resume that changes --epochs recomputes. */
	fc_batches b;
	if (o->step_size_set &&
	    fc_sample_epoch(&b, d->classes, d->n, d->n_classes, r->cfg.batch, r->cfg.per_class, r->cfg.seed, 0) == 0) {
		uint64_t per_epoch = b.n_batches ? b.n_batches : 1;
		r->cfg.sched.step_size = o->step_size * per_epoch;
		fc_batches_free(&b);
	}
	int rc = cli_train_run_trainer(r, cmd);
	if (rc)
		return rc;
	r->cfgj = config_json(o, &r->cfg, in->exhex);
	r->cfgtext = r->cfgj ? json_dumps(r->cfgj, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	if (!r->cfgtext)
		return cli_fail("out of memory");
	return 0;
}

void cli_train_run_free(cli_train_run *r)
{
	fc_trainer_free(r->t);
	json_decref(r->cfgj);
	free(r->cfgtext);
	memset(r, 0, sizeof *r);
}

/* The policy's log: train's line on stdout, then the run log's line. */
static int log_epoch(void *ctx, const fc_policy *p, const fc_epoch_stats *st, char *err, size_t errcap)
{
	const cli_train_run *r = ctx;
	const fc_metrics *m = p->cfg.eval ? &p->last : NULL;
	size_t k = r->in->k_used;
	if (r->verbose) {
		printf("epoch %3u/%u  loss %.5f  lr %.3g  %6.0f samples/s", st->epoch, r->cfg.epochs, st->loss, st->lr,
		       st->samples_per_s);
		if (m)
			printf("  mAP@%zu %.4f  p@%zu %.4f  ndcg@%zu %.4f%s", k, m->ap, k, m->precision, k, m->ndcg,
			       p->improved ? "  *" : "");
		putchar('\n');
		fflush(stdout);
	}
	return fc_runlog_epoch(r->log, st, p->improved, m, err, errcap);
}

int cli_train_run_begin(cli_train_run *r, const char *cmd, const fc_metrics *before, const char *resume)
{
	const fc_policy_config pc = {
		.eval = r->in->evaluated ? &r->in->eval : NULL,
		.metric = r->o->metric,
		.patience = r->o->early_metric ? (uint32_t)r->o->patience : 0,
		.head_path = r->out,
		.head_config = r->cfgtext,
		.head_extractor = r->in->exdesc,
		.checkpoint_path = r->checkpoints ? r->ckpt : NULL,
		.log = log_epoch,
		.log_ctx = r,
	};
	char why[FC_ERRLEN] = "";
	int rc = fc_policy_init(&r->policy, &pc, resume ? NULL : before);
	if (rc)
		return cli_usage_error(cmd, "unknown metric '%s' for --metric", r->o->metric);
	if (resume) {
		rc = fc_policy_resume(&r->policy, r->t, resume, why, sizeof why);
		if (rc == FC_ERR_INVALID)
			return cli_usage_error(cmd, "cannot resume from '%s': %s", resume, why);
		if (rc)
			return cli_fail("cannot resume from '%s': %s", resume, why);
		/* The log describes the run as it now is (its epoch count may have grown). */
		if (fc_runlog_reconfig(r->log, r->cfgj, why, sizeof why) != 0)
			return cli_fail("%s", why);
		return 0;
	}
	if (fc_runlog_start(r->log, r->cfgj, pc.eval ? before : NULL, why, sizeof why) != 0)
		return cli_fail("%s", why);
	return 0;
}

int cli_train_run_epoch_end(cli_train_run *r, const fc_epoch_stats *st)
{
	char why[FC_ERRLEN] = "";
	if (fc_policy_epoch_end(&r->policy, r->t, st, why, sizeof why) != 0)
		return cli_fail("%s", why);
	if (r->policy.stop && r->verbose)
		printf("early stop: %s has not improved for %u epochs\n", r->o->early_metric, r->policy.stale);
	return 0;
}
