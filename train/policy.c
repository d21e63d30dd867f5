/*
 * policy.c - what happens after every epoch of a training run, the same for
 * `featcache train`, every configuration of `featcache sweep` and any other
 * caller of the library (trainer.h): evaluate the head, track the best
 * epoch, hand the epoch to the caller's log, write the head when it
 * improved and the checkpoint when asked, and decide on early stopping.
 *
 * The checkpoint carries the policy's history as its extra text (JSON:
 * best, best_epoch, stale, before, best_metrics), so a resumed run picks
 * the same best epoch and stops at the same epoch as an unbroken one.
 *
 * Not here: the epoch itself (trainer.c), what a log line looks like (the
 * caller's log function; featcache's is report/runlog.c), printing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "featcache/trainer.h"
#include "util/util.h"

int fc_eval_set_run(fc_metrics *m, fc_head *head, const fc_eval_set *e)
{
	if (e->qrows || e->irows) {
		fc_rows q = e->qrows ? *e->qrows : fc_rows_f32(e->queries, e->nq, e->dim);
		fc_rows ix = e->self ? q : e->irows ? *e->irows : fc_rows_f32(e->index, e->ni, e->dim);
		return fc_eval_rows(m, head, &q, e->query_labels, &ix, e->self ? e->query_labels : e->index_labels,
				    e->k, e->self);
	}
	return fc_eval_features(m, head, e->queries, e->query_labels, e->nq, e->self ? e->queries : e->index,
				e->self ? e->query_labels : e->index_labels, e->self ? e->nq : e->ni, e->dim, e->k,
				e->self);
}

int fc_policy_init(fc_policy *p, const fc_policy_config *cfg, const fc_metrics *before)
{
	memset(p, 0, sizeof *p);
	p->cfg = *cfg;
	p->metric = fc_metric_resolve(cfg->metric ? cfg->metric : "average_precision", NULL);
	if (p->metric < 0)
		return FC_ERR_INVALID;
	if (before)
		p->before = *before;
	p->best = -1;
	return 0;
}

/* The history as the checkpoint's extra text (malloc'd; NULL on out of memory). */
static char *history_text(const fc_policy *p)
{
	json_t *x = json_pack("{s:f, s:i, s:i, s:o, s:o}", "best", p->best, "best_epoch", (int)p->best_epoch, "stale",
			      (int)p->stale, "before", fc_metrics_to_json(&p->before, 0), "best_metrics",
			      fc_metrics_to_json(&p->best_metrics, 0));
	char *text = x ? json_dumps(x, JSON_COMPACT) : NULL;
	json_decref(x);
	return text;
}

int fc_policy_resume(fc_policy *p, fc_trainer *t, const char *path, char *err, size_t errcap)
{
	char *extra = NULL;
	int rc = fc_trainer_load(t, path, &extra, err, errcap);
	if (rc)
		return rc;
	json_t *x = extra ? json_loads(extra, 0, NULL) : NULL;
	if (x) {
		p->best = json_real_value(json_object_get(x, "best"));
		p->best_epoch = (uint32_t)json_integer_value(json_object_get(x, "best_epoch"));
		p->stale = (uint32_t)json_integer_value(json_object_get(x, "stale"));
		fc_metrics_from_json(&p->before, json_object_get(x, "before"));
		fc_metrics_from_json(&p->best_metrics, json_object_get(x, "best_metrics"));
	}
	json_decref(x);
	free(extra);
	return 0;
}

/* The head of an improved epoch, with what made it best in its metadata. */
static int save_head(const fc_policy *p, fc_trainer *t, uint32_t epoch, char *err, size_t errcap)
{
	char epoch_text[32], metric_text[64], why[FC_ERRLEN] = "";
	snprintf(epoch_text, sizeof epoch_text, "%u", epoch);
	snprintf(metric_text, sizeof metric_text, "%.6f", p->value);
	const char *metric = p->cfg.metric ? p->cfg.metric : "average_precision";
	const char *meta[] = { "featcache_config", p->cfg.head_config ? p->cfg.head_config : "", "epoch", epoch_text,
			       p->cfg.eval ? metric : "neg_loss", metric_text,
			       p->cfg.head_extractor ? "featcache_extractor" : NULL, p->cfg.head_extractor, NULL };
	int rc = fc_head_save(fc_trainer_head(t), p->cfg.head_path, meta, why);
	if (rc)
		return fci_errf(err, errcap, rc, "cannot write head '%s': %s", p->cfg.head_path, why);
	return 0;
}

int fc_policy_epoch_end(fc_policy *p, fc_trainer *t, const fc_epoch_stats *st, char *err, size_t errcap)
{
	int rc;
	p->value = -st->loss;
	if (p->cfg.eval) {
		if ((rc = fc_eval_set_run(&p->last, fc_trainer_head(t), p->cfg.eval)) != 0)
			return fci_errf(err, errcap, rc, "cannot evaluate: %s", fc_strerror(rc));
		p->value = fc_metric_value(&p->last, p->metric);
	}
	p->improved = p->best_epoch == 0 || p->value > p->best;
	if (p->improved) {
		p->best = p->value;
		p->best_epoch = st->epoch;
		p->best_metrics = p->last;
		p->stale = 0;
	} else {
		p->stale++;
	}
	if (p->cfg.log && (rc = p->cfg.log(p->cfg.log_ctx, p, st, err, errcap)) != 0)
		return rc;
	if (p->improved && p->cfg.head_path && (rc = save_head(p, t, st->epoch, err, errcap)) != 0)
		return rc;
	if (p->cfg.checkpoint_path) {
		char *extra = history_text(p);
		if (!extra)
			return fci_errf(err, errcap, FC_ERR_NOMEM, "out of memory");
		char why[FC_ERRLEN] = "";
		rc = fc_trainer_save(t, p->cfg.checkpoint_path, extra, why, sizeof why);
		free(extra);
		if (rc)
			return fci_errf(err, errcap, rc, "cannot write checkpoint '%s': %s", p->cfg.checkpoint_path,
					why);
	}
	p->stop = p->cfg.patience && p->stale >= p->cfg.patience;
	return 0;
}
