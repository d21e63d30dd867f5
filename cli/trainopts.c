/*
 * trainopts.c - train's options and per-epoch bookkeeping, shared by
 * `featcache train` and `featcache sweep` (trainopts.h), so that a sweep's
 * configuration means exactly what the same options mean to train.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "featcache/report.h"
#include "cli/trainopts.h"

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
	{ "k", required_argument, NULL, 'k' },
	{ "metric", required_argument, NULL, CLI_TOPT_METRIC },
	{ "early-stop", required_argument, NULL, CLI_TOPT_EARLY },
	{ "resume", required_argument, NULL, CLI_TOPT_RESUME },
	{ "report", no_argument, NULL, CLI_TOPT_REPORT },
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
		return CLI_TOPT_FLOAT;
	default:
		return CLI_TOPT_TEXT;
	}
}

int cli_train_write_report(const char *html, const char *src, const char *metric)
{
	char err[1024];
	size_t charts = 0;
	if (fc_report_write(html, &src, 1, metric, NULL, &charts, err, sizeof err) != 0)
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

int cli_train_opts_set(cli_train_opts *o, const char *cmd, int code, const char *arg)
{
	switch (code) {
	case 's': o->store = arg; return 0;
	case 'o': o->out = arg; return 0;
	case 'q': o->quiet = 1; return 0;
	case CLI_TOPT_REPORT: o->report = 1; return 0;
	case 'k': return cli_parse_u64(cmd, "--k", arg, 1, 100000, &o->k);
	case CLI_TOPT_EXTRACTOR: o->extractor = arg; return 0;
	case CLI_TOPT_OUTPUT_DIM: return cli_parse_u64(cmd, "--output-dim", arg, 1, 1 << 16, &o->output_dim);
	case CLI_TOPT_LAYERS: return cli_parse_u64(cmd, "--head-layers", arg, 1, 8, &o->layers);
	case CLI_TOPT_HIDDEN: return cli_parse_u64(cmd, "--hidden", arg, 1, 1 << 16, &o->hidden);
	case CLI_TOPT_LOSS:
		if (fc_loss_parse(arg, &o->loss))
			return cli_usage_error(cmd, "unknown loss '%s': expected triplet, siamese, ntxent, supcon, arcface or cosface", arg);
		return 0;
	case CLI_TOPT_MINER:
		if (fc_miner_parse(arg, &o->miner))
			return cli_usage_error(cmd, "unknown miner '%s': expected all, hard, semihard or easy", arg);
		return 0;
	case CLI_TOPT_DISTANCE:
		if (fc_distance_parse(arg, &o->distance))
			return cli_usage_error(cmd, "unknown distance '%s': expected euclidean or cosine", arg);
		o->distance_set = 1;
		return 0;
	case CLI_TOPT_OPTIMIZER:
		if (fc_optim_parse(arg, &o->optim))
			return cli_usage_error(cmd, "unknown optimizer '%s': expected adam, adamw or sgd", arg);
		return 0;
	case CLI_TOPT_SCHEDULER:
		if (fc_sched_parse(arg, &o->sched))
			return cli_usage_error(cmd, "unknown scheduler '%s': expected constant, linear, cosine, warmup or step", arg);
		return 0;
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
	fc_metrics probe = { 0 };
	double v;
	if (o->early_metric)
		o->early_metric = o->early_buf; /* o may be a copy */
	if (fc_metric_get(&probe, o->metric, &v))
		return cli_usage_error(cmd, "unknown metric '%s' for --metric", o->metric);
	if (o->early_metric && fc_metric_get(&probe, o->early_metric, &v))
		return cli_usage_error(cmd, "unknown metric '%s' for --early-stop", o->early_metric);
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

/* The run's options as JSON, for the head's metadata and the log. */
static json_t *config_json(const cli_train_opts *o, const fc_train_config *c, const char *exid)
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

void cli_metrics_from_json(fc_metrics *m, json_t *j)
{
	double *fields[] = { &m->precision, &m->recall, &m->f1, &m->hit, &m->ap, &m->rr, &m->r_precision, &m->dcg,
			     &m->ndcg };
	for (int i = 0; j && i < 9; i++)
		*fields[i] = json_real_value(json_object_get(j, fc_metric_names[i]));
}

void cli_print_metrics(const char *what, const fc_metrics *m, size_t k)
{
	printf("%-28s mAP@%zu %.4f  precision@%zu %.4f  recall@%zu %.4f  ndcg@%zu %.4f  mrr %.4f\n", what, k, m->ap,
	       k, m->precision, k, m->recall, k, m->ndcg, m->rr);
}

int cli_train_inputs_load(cli_train_inputs *in, const char *cmd, const cli_train_opts *o)
{
	memset(in, 0, sizeof *in);
	cli_eval_set *ev = &in->ev;
	unsigned train_mask, eval_mask = 0, index_mask = 0;
	int rc;
	if ((rc = cli_parse_splits(cmd, "--train-split", o->train_split, &train_mask)) != 0)
		return rc;
	ev->enabled = strcmp(o->eval_split, "none") != 0;
	if (ev->enabled && (rc = cli_parse_splits(cmd, "--eval-split", o->eval_split, &eval_mask)) != 0)
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
	if ((rc = cli_load_split(s, exid, train_mask, 0, &in->train)) != 0)
		goto out;
	if (in->train.missing)
		cli_warn("%zu items of the train split have no features yet (run 'featcache extract')", in->train.missing);
	if (in->train.unlabeled)
		cli_warn("%zu unlabelled items of the train split are left out", in->train.unlabeled);
	if (ev->enabled) {
		if ((rc = cli_load_split(s, exid, eval_mask, 0, &ev->q)) != 0)
			goto out;
		if (o->index_split) {
			ev->has_index = 1;
			if ((rc = cli_load_split(s, exid, index_mask, 0, &ev->ix)) != 0)
				goto out;
		}
		if (ev->q.m.rows == 0) {
			cli_warn("the %s split has no labelled features: no evaluation (use --eval-split)", o->eval_split);
			ev->enabled = 0;
		}
	}
	uint32_t n_classes = 0;
	in->classes = cli_dense_classes(in->train.m.labels, in->train.m.rows, &n_classes);
	if (!in->classes) {
		rc = cli_fail("out of memory");
		goto out;
	}
	in->data = (fc_train_data){ in->train.m.data, in->classes, in->train.m.rows, n_classes };
out:
	fc_store_free(s);
	return rc;
}

void cli_train_inputs_free(cli_train_inputs *in)
{
	free(in->classes);
	cli_split_data_free(&in->train);
	cli_split_data_free(&in->ev.q);
	cli_split_data_free(&in->ev.ix);
	memset(in, 0, sizeof *in);
}

int cli_eval_set_run(fc_metrics *m, fc_head *head, const cli_eval_set *e, size_t k)
{
	const fc_matrix *q = &e->q.m, *ix = e->has_index ? &e->ix.m : &e->q.m;
	return fc_eval_features(m, head, q->data, q->labels, q->rows, ix->data, ix->labels, ix->rows, q->dim, k,
				!e->has_index);
}

int cli_append_line(const char *path, json_t *j, int sync)
{
	char *text = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (!text)
		return cli_fail("out of memory");
	size_t len = strlen(text);
	text[len++] = '\n'; /* json_dumps' terminator becomes the newline: one write */
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	int rc = 0;
	if (fd < 0) {
		rc = cli_fail("cannot write log '%s': %s", path, cli_errno_str(errno));
	} else {
		ssize_t w = write(fd, text, len);
		int e = errno;
		if (w != (ssize_t)len || (sync && fsync(fd) != 0))
			rc = cli_fail("cannot write log '%s': %s", path, w < 0 || sync ? cli_errno_str(e) : "short write");
		if (close(fd) != 0 && !rc)
			rc = cli_fail("cannot write log '%s': %s", path, cli_errno_str(errno));
	}
	free(text);
	return rc;
}

int cli_train_run_trainer(cli_train_run *r, const char *cmd, const fc_train_data *d)
{
	char why[FC_ERRLEN] = "";
	fc_trainer_free(r->t);
	r->t = NULL;
	int rc = fc_trainer_new(&r->t, &r->cfg, d, why);
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
	r->out = out;
	r->best = -1;
	snprintf(r->log, sizeof r->log, "%s.jsonl", out);
	snprintf(r->ckpt, sizeof r->ckpt, "%s.ckpt", out);
	build_config(o, &r->cfg, (uint32_t)in->train.m.dim);
	/* StepLR counts epochs; the trainer counts optimizer steps. */
	fc_batches b;
	if (fc_sample_epoch(&b, d->classes, d->n, d->n_classes, r->cfg.batch, r->cfg.per_class, r->cfg.seed, 0) == 0) {
		uint64_t per_epoch = b.n_batches ? b.n_batches : 1;
		uint64_t se = o->step_size_set ? o->step_size : (o->epochs / 3 ? o->epochs / 3 : 1);
		r->cfg.sched.step_size = se * per_epoch;
		fc_batches_free(&b);
	}
	int rc = cli_train_run_trainer(r, cmd, d);
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
	free(r->extra);
	memset(r, 0, sizeof *r);
}

int cli_train_run_begin_log(cli_train_run *r, const fc_metrics *before, int evaluated)
{
	r->before = *before;
	remove(r->log);
	if (!evaluated)
		return 0;
	json_t *line = json_pack("{s:O, s:o}", "config", r->cfgj, "before", cli_metrics_json(before, 0));
	int rc = line ? cli_append_line(r->log, line, 0) : cli_fail("out of memory");
	json_decref(line);
	return rc;
}

int cli_train_run_epoch_end(cli_train_run *r, const fc_epoch_stats *st, const cli_eval_set *ev)
{
	const cli_train_opts *o = r->o;
	char why[FC_ERRLEN] = "";
	int rc, improved = 0;
	double val = -st->loss;
	if (ev->enabled) {
		if ((rc = cli_eval_set_run(&r->m, fc_trainer_head(r->t), ev, o->k)) != 0)
			return cli_fail("cannot evaluate: %s", fc_strerror(rc));
		fc_metric_get(&r->m, o->metric, &val);
	}
	if (r->best_epoch == 0 || val > r->best) {
		r->best = val;
		r->best_epoch = st->epoch;
		r->best_m = r->m;
		r->stale = 0;
		improved = 1;
	} else {
		r->stale++;
	}
	if (r->verbose) {
		printf("epoch %3u/%u  loss %.5f  lr %.3g  %6.0f samples/s", st->epoch, r->cfg.epochs, st->loss, st->lr,
		       st->samples_per_s);
		if (ev->enabled)
			printf("  mAP@%zu %.4f  p@%zu %.4f  ndcg@%zu %.4f%s", (size_t)o->k, r->m.ap, (size_t)o->k,
			       r->m.precision, (size_t)o->k, r->m.ndcg, improved ? "  *" : "");
		putchar('\n');
		fflush(stdout);
	}
	json_t *line = json_pack("{s:i, s:I, s:f, s:f, s:f, s:f, s:I, s:b}", "epoch", (int)st->epoch, "steps",
				 (json_int_t)st->steps, "loss", st->loss, "lr", st->lr, "seconds", st->seconds,
				 "samples_per_s", st->samples_per_s, "active", (json_int_t)st->active, "best", improved);
	if (!line)
		return cli_fail("out of memory");
	if (ev->enabled)
		json_object_set_new(line, "metrics", cli_metrics_json(&r->m, 0));
	rc = cli_append_line(r->log, line, 0);
	json_decref(line);
	if (rc)
		return rc;
	if (improved) {
		char epoch_text[32], metric_text[64];
		snprintf(epoch_text, sizeof epoch_text, "%u", st->epoch);
		snprintf(metric_text, sizeof metric_text, "%.6f", val);
		const char *meta[] = { "featcache_config", r->cfgtext, "epoch", epoch_text,
				       ev->enabled ? o->metric : "neg_loss", metric_text, NULL };
		if ((rc = fc_head_save(fc_trainer_head(r->t), r->out, meta, why)) != 0)
			return cli_fail("cannot write head '%s': %s", r->out, why);
	}
	if (r->checkpoints) {
		json_t *x = json_pack("{s:f, s:i, s:i, s:o, s:o}", "best", r->best, "best_epoch", (int)r->best_epoch,
				      "stale", (int)r->stale, "before", cli_metrics_json(&r->before, 0), "best_metrics",
				      cli_metrics_json(&r->best_m, 0));
		free(r->extra);
		r->extra = x ? json_dumps(x, JSON_COMPACT) : NULL;
		json_decref(x);
		if (!r->extra)
			return cli_fail("out of memory");
		if ((rc = fc_trainer_save(r->t, r->ckpt, r->extra, why)) != 0)
			return cli_fail("cannot write checkpoint '%s': %s", r->ckpt, why);
	}
	if (o->early_metric && r->stale >= o->patience) {
		r->stop = 1;
		if (r->verbose)
			printf("early stop: %s has not improved for %u epochs\n", o->early_metric, r->stale);
	}
	return 0;
}
