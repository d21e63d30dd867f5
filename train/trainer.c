/*
 * trainer.c - one training run over features held in RAM: sample an
 * epoch's batches, gather each batch, head forward, loss, head backward,
 * optimizer steps under the schedule; evaluation with the head applied;
 * checkpoints that let a killed run continue bit-identically; the head as
 * a PyTorch-loadable safetensors file.
 *
 * Not here: reading the store (the CLI does), what happens after an epoch
 * (best head, log, checkpoint, early stop: policy.c) and the epoch loop
 * itself (the caller owns it, so sweeps can drive many runs).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "featcache/io.h"
#include "featcache/train.h"
#include "util/util.h"

struct fc_trainer {
	fc_train_config cfg;
	fc_train_data data;
	fc_rows x;        /* data's rows, whichever way they are kept */
	int gather_err;
	fc_head *head;
	fc_loss *loss;
	fc_optim *opt_head, *opt_loss;
	uint32_t in_dim, out_dim;
	float *xb, *yb, *dy;
	uint32_t *lb;
	uint32_t epochs_done;
	uint64_t steps;
	char fingerprint[1024];
};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int pair_loss(fc_loss_kind k)
{
	return k != FC_LOSS_ARCFACE && k != FC_LOSS_COSFACE;
}

/* Every field that changes the trajectory, as text: a checkpoint only
 * resumes the run it was made by (same_run). The step size is the caller's
 * (0: derived from the epochs), so a resume can tell a given one from a
 * derived one; "fp 2" marks fingerprints that record it so. */
static void fingerprint(fc_trainer *t, uint64_t step_size)
{
	const fc_train_config *c = &t->cfg;
	snprintf(t->fingerprint, sizeof t->fingerprint,
		 "head %u/%u/%u/%u loss %d miner %d dist %d margin %.9g pos %.9g neg %.9g temp %.9g scale %.9g "
		 "classes %u optim %d wd %.9g mom %.9g nest %d b1 %.9g b2 %.9g eps %.9g sched %d warm %llu "
		 "total %llu stepsize %llu gamma %.9g lr %.9g epochs %u batch %u k %u seed %llu n %zu fp 2",
		 c->head.in_dim, c->head.hidden, c->head.out_dim, c->head.layers, c->loss.kind, c->loss.miner,
		 c->loss.distance, c->loss.margin, c->loss.pos_margin, c->loss.neg_margin, c->loss.temperature,
		 c->loss.scale, c->loss.n_classes, c->optim.kind, c->optim.weight_decay, c->optim.momentum,
		 c->optim.nesterov, c->optim.beta1, c->optim.beta2, c->optim.eps, c->sched.kind,
		 (unsigned long long)c->sched.warmup_steps, (unsigned long long)c->sched.total_steps,
		 (unsigned long long)step_size, c->sched.gamma, c->lr, c->epochs, c->batch,
		 c->per_class, (unsigned long long)c->seed, t->data.n);
}

int fc_trainer_new(fc_trainer **out, const fc_train_config *cfg, const fc_train_data *data, char *err, size_t errcap)
{
	*out = NULL;
	const fc_train_config *c = cfg;
	if (data->n < 2)
		return fci_errf(err, errcap, FC_ERR_INVALID, "the training split has %zu items; at least 2 are needed",
				data->n);
	if (data->rows && (data->rows->n != data->n || data->rows->dim != cfg->head.in_dim))
		return fci_errf(err, errcap, FC_ERR_INVALID, "the training rows are %zu x %zu, not %zu x %u",
				data->rows->n, data->rows->dim, data->n, cfg->head.in_dim);
	if (data->n_classes < 2)
		return fci_errf(err, errcap, FC_ERR_INVALID,
				"the training split has only one class: nothing to contrast");
	for (size_t i = 0; i < data->n; i++)
		if (data->classes[i] >= data->n_classes)
			return fci_errf(err, errcap, FC_ERR_INVALID, "class id %u of row %zu is not below %u",
					data->classes[i], i, data->n_classes);
	if (!(c->lr > 0) || !isfinite(c->lr))
		return fci_errf(err, errcap, FC_ERR_INVALID, "learning rate must be a positive number");
	if (c->epochs < 1)
		return fci_errf(err, errcap, FC_ERR_INVALID, "epochs must be at least 1");
	if (c->batch < 2)
		return fci_errf(err, errcap, FC_ERR_INVALID, "batch size must be at least 2 (BatchNorm needs 2 rows)");
	if (pair_loss(c->loss.kind)) {
		if (c->per_class < 2)
			return fci_errf(err, errcap, FC_ERR_INVALID,
					"items per class must be at least 2 for %s (it needs positive pairs)",
					fc_loss_name(c->loss.kind));
		if (c->batch < 2 * c->per_class)
			return fci_errf(err, errcap, FC_ERR_INVALID,
					"batch size %u is smaller than 2 classes x %u items per class", c->batch,
					c->per_class);
	} else if (c->per_class) {
		return fci_errf(err, errcap, FC_ERR_INVALID, "%s samples uniformly: items per class does not apply",
				fc_loss_name(c->loss.kind));
	}
	if (c->loss.miner != FC_MINER_ALL && c->loss.kind != FC_LOSS_TRIPLET)
		return fci_errf(err, errcap, FC_ERR_INVALID, "miners apply to the triplet loss only");
	if (!pair_loss(c->loss.kind) && c->loss.distance != FC_DIST_COSINE)
		return fci_errf(err, errcap, FC_ERR_INVALID,
				"%s works on cosine similarity: --distance euclidean does not apply",
				fc_loss_name(c->loss.kind));

	int rc = FC_ERR_NOMEM;
	fc_trainer *t = calloc(1, sizeof *t);
	if (!t)
		return rc;
	t->cfg = *cfg;
	t->data = *data;
	t->x = data->rows ? *data->rows : fc_rows_f32(data->x, data->n, cfg->head.in_dim);
	if (!pair_loss(c->loss.kind))
		t->cfg.loss.n_classes = data->n_classes;
	if ((rc = fc_head_new(&t->head, &cfg->head, cfg->batch, cfg->seed)) != 0) {
		fci_errf(err, errcap, rc, "cannot build the head (%u -> %u, %u layers): %s", cfg->head.in_dim,
			 cfg->head.out_dim, cfg->head.layers, fc_strerror(rc));
		goto fail;
	}
	fc_head_config hc = fc_head_get_config(t->head);
	t->in_dim = hc.in_dim;
	t->out_dim = hc.out_dim;
	if ((rc = fc_loss_new(&t->loss, &t->cfg.loss, t->out_dim, cfg->batch, cfg->seed ^ 0x10551)) != 0) {
		fci_errf(err, errcap, rc, "cannot build the %s loss: %s", fc_loss_name(c->loss.kind), fc_strerror(rc));
		goto fail;
	}
	float *p, *g;
	size_t n;
	fc_head_params(t->head, &p, &g, &n);
	if ((rc = fc_optim_new(&t->opt_head, &cfg->optim, n)) != 0)
		goto fail;
	fc_loss_params(t->loss, &p, &g, &n);
	if (n && (rc = fc_optim_new(&t->opt_loss, &cfg->optim, n)) != 0)
		goto fail;
	rc = FC_ERR_NOMEM;
	t->xb = malloc((size_t)cfg->batch * t->in_dim * sizeof(float));
	t->yb = malloc((size_t)cfg->batch * t->out_dim * sizeof(float));
	t->dy = malloc((size_t)cfg->batch * t->out_dim * sizeof(float));
	t->lb = malloc((size_t)cfg->batch * sizeof(uint32_t));
	if (!t->xb || !t->yb || !t->dy || !t->lb)
		goto fail;
	if (t->cfg.sched.total_steps == 0 || t->cfg.sched.step_size == 0) {
		/* Batches per epoch vary a little with the draw; epoch 0's count sets
		 * T and the default step (a third of the epochs). */
		fc_batches b;
		if ((rc = fc_sample_epoch(&b, data->classes, data->n, data->n_classes, cfg->batch, t->cfg.per_class,
					  cfg->seed, 0)) != 0)
			goto fail;
		if (b.n_batches == 0) {
			fc_batches_free(&b);
			rc = fci_errf(err, errcap, FC_ERR_INVALID,
				      "the training split yields no batch of 2 or more classes");
			goto fail;
		}
		if (t->cfg.sched.total_steps == 0)
			t->cfg.sched.total_steps = (uint64_t)b.n_batches * cfg->epochs;
		if (t->cfg.sched.step_size == 0)
			t->cfg.sched.step_size = (uint64_t)b.n_batches * (cfg->epochs / 3 ? cfg->epochs / 3 : 1);
		fc_batches_free(&b);
	}
	fingerprint(t, cfg->sched.step_size);
	*out = t;
	return 0;
fail:
	fc_trainer_free(t);
	return rc;
}

void fc_trainer_free(fc_trainer *t)
{
	if (!t)
		return;
	fc_head_free(t->head);
	fc_loss_free(t->loss);
	fc_optim_free(t->opt_head);
	fc_optim_free(t->opt_loss);
	free(t->xb);
	free(t->yb);
	free(t->dy);
	free(t->lb);
	free(t);
}

fc_head *fc_trainer_head(fc_trainer *t)
{
	return t->head;
}

int fc_trainer_gather_error(const fc_trainer *t)
{
	return t->gather_err;
}

uint32_t fc_trainer_epochs_done(const fc_trainer *t)
{
	return t->epochs_done;
}

static int all_finite(const float *x, size_t n)
{
	float acc = 0;
	for (size_t i = 0; i < n; i++)
		acc += x[i] * 0.0f; /* NaN or Inf anywhere makes this NaN */
	return acc == 0.0f;
}

int fc_trainer_shares_sampling(const fc_trainer *a, const fc_trainer *b)
{
	return a->data.x == b->data.x && a->data.rows == b->data.rows && a->data.classes == b->data.classes && a->data.n == b->data.n &&
	       a->data.n_classes == b->data.n_classes && a->in_dim == b->in_dim && a->cfg.batch == b->cfg.batch &&
	       a->cfg.per_class == b->cfg.per_class && a->cfg.seed == b->cfg.seed &&
	       a->epochs_done == b->epochs_done;
}

/* Per-trainer bookkeeping of an epoch in progress. */
typedef struct step_acc {
	double loss_sum, seconds;
	uint64_t active;
	float lr;
	int err;
	uint64_t bad_step;
} step_acc;

/* One optimizer step of t on the batch xb (B,in_dim), labels lb. The batch
 * is read only, so any number of trainers may step on it at once. */
static int trainer_step(fc_trainer *t, const float *xb, const uint32_t *lb, uint32_t B, step_acc *acc)
{
	float *hp, *hg, *lp, *lgr;
	size_t hn, ln;
	fc_head_params(t->head, &hp, &hg, &hn);
	fc_loss_params(t->loss, &lp, &lgr, &ln);
	fc_head_zero_grad(t->head);
	if (ln)
		memset(lgr, 0, ln * sizeof *lgr);
	float loss = 0;
	fc_loss_info info = { 0 };
	int err = fc_head_forward(t->head, t->yb, xb, B, 1);
	if (err)
		return err;
	err = fc_loss_forward_backward(t->loss, &loss, t->dy, t->yb, lb, B, &info);
	if (err == FC_ERR_INVALID || (!err && (!isfinite(loss) || !all_finite(t->dy, (size_t)B * t->out_dim)))) {
		/* Non-finite numbers: stop before they reach the parameters. */
		acc->bad_step = t->steps + 1;
		return FC_ERR_INVALID;
	}
	if (err || (err = fc_head_backward(t->head, NULL, t->dy, B)) != 0)
		return err;
	float lr = (float)(t->cfg.lr * fc_sched_factor(&t->cfg.sched, t->steps));
	fc_optim_step(t->opt_head, hp, hg, lr);
	if (ln)
		fc_optim_step(t->opt_loss, lp, lgr, lr);
	t->steps++;
	acc->loss_sum += loss;
	acc->lr = lr;
	acc->active += info.nonzero;
	return 0;
}

/* Heads stepped in parallel run their inner work (oneDNN, the loss's
 * loops) single-threaded, as OpenMP does not nest by default. On 2 cores
 * that wins whenever there are 2 heads or more (see the sweep's notes in
 * train/sweep.c for the measurements); one head uses every thread. */
int fc_trainer_epoch_group(fc_trainer **t, size_t n, fc_epoch_stats *st, int *errs, uint64_t *bad_step, int jobs,
			   const fc_logger *lg)
{
	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		if (!fc_trainer_shares_sampling(t[0], t[i]))
			return FC_ERR_INVALID;
		memset(&st[i], 0, sizeof st[i]);
		errs[i] = 0;
	}
	step_acc *acc = calloc(n, sizeof *acc);
	size_t *live = malloc(n * sizeof *live);
	if (!acc || !live) {
		free(acc);
		free(live);
		return FC_ERR_NOMEM;
	}
	const fc_trainer *t0 = t[0];
	double t0_start = now();
	fc_batches b = { 0 };
	int err = fc_sample_epoch(&b, t0->data.classes, t0->data.n, t0->data.n_classes, t0->cfg.batch,
				  t0->cfg.per_class, t0->cfg.seed, t0->epochs_done);
	if (err)
		goto out;
	/* The batch is gathered once, into the first trainer's buffers. */
	float *xb = t[0]->xb;
	uint32_t *lb = t[0]->lb;
	double shared = now() - t0_start;
	size_t rows = 0;
	for (size_t bi = 0; bi < b.n_batches; bi++) {
		double g0 = now();
		size_t s = bi ? b.ends[bi - 1] : 0, e = b.ends[bi];
		uint32_t B = (uint32_t)(e - s);
		if ((err = fc_rows_gather(xb, &t0->x, b.rows + s, B)) != 0) {
			t[0]->gather_err = err;
			goto out;
		}
		for (uint32_t r = 0; r < B; r++)
			lb[r] = t0->data.classes[b.rows[s + r]];
		shared += now() - g0;
		size_t nl = 0;
		for (size_t i = 0; i < n; i++)
			if (!acc[i].err)
				live[nl++] = i;
		int nthr = jobs < 1 ? 1 : (size_t)jobs < nl ? jobs : (int)nl;
		/* static,1: each head stays on one thread, as its oneDNN
		 * primitives (created on first use) prefer. */
#pragma omp parallel for schedule(static, 1) num_threads(nthr) if (nthr > 1)
		for (size_t j = 0; j < nl; j++) {
			step_acc *a = &acc[live[j]];
			double s0 = now();
			a->err = trainer_step(t[live[j]], xb, lb, B, a);
			a->seconds += now() - s0;
		}
		rows += B;
		if (lg && lg->progress && lg->progress(lg->ctx, "train", bi + 1, b.n_batches)) {
			err = FC_ERR_INTERRUPTED;
			goto out;
		}
	}
	for (size_t i = 0; i < n; i++) {
		if ((errs[i] = acc[i].err) != 0) {
			if (bad_step)
				bad_step[i] = acc[i].bad_step;
			continue;
		}
		fc_trainer *ti = t[i];
		ti->epochs_done++;
		st[i].epoch = ti->epochs_done;
		st[i].steps = ti->steps;
		st[i].loss = b.n_batches ? acc[i].loss_sum / (double)b.n_batches : 0;
		st[i].lr = acc[i].lr;
		st[i].active = acc[i].active;
		st[i].seconds = shared + acc[i].seconds;
		st[i].samples_per_s = st[i].seconds > 0 ? (double)rows / st[i].seconds : 0;
	}
out:
	fc_batches_free(&b);
	free(acc);
	free(live);
	return err;
}

int fc_trainer_epoch(fc_trainer *t, fc_epoch_stats *st, uint64_t *bad_step, const fc_logger *lg)
{
	int terr = 0;
	int err = fc_trainer_epoch_group(&t, 1, st, &terr, bad_step, 1, lg);
	return err ? err : terr;
}

#define EMBED_ROWS 4096 /* rows converted and embedded at a time */

/* out (x->n, D) = the head's L2-normalised embeddings of x's rows. */
static int embed_rows(fc_head *head, float *out, const fc_rows *x, size_t D)
{
	if (x->type == FC_ROW_F32 && !x->fetch)
		return fc_head_embed(head, out, x->data, x->n, 1);
	size_t blk = x->n < EMBED_ROWS ? x->n : EMBED_ROWS;
	float *tmp = malloc((blk ? blk : 1) * x->dim * sizeof(float));
	if (!tmp)
		return FC_ERR_NOMEM;
	int err = 0;
	for (size_t i = 0; i < x->n && !err; i += blk) {
		size_t nb = x->n - i < blk ? x->n - i : blk;
		if ((err = fc_rows_range(tmp, x, i, nb)) == 0)
			err = fc_head_embed(head, out + i * D, tmp, nb, 1);
	}
	free(tmp);
	return err;
}

int fc_eval_rows(fc_metrics *m, fc_head *head, const fc_rows *q, const uint32_t *ql, const fc_rows *ix,
		 const uint32_t *il, size_t k, int exclude_self)
{
	if (!head)
		return fc_eval_knn_rows(m, NULL, q, ql, ix, il, k, exclude_self);
	fc_head_config hc = fc_head_get_config(head);
	if (hc.in_dim != q->dim || ix->dim != q->dim)
		return FC_ERR_INVALID;
	size_t D = hc.out_dim, nq = q->n, ni = ix->n;
	int same = exclude_self || (q->data == ix->data && q->fetch == ix->fetch && q->ctx == ix->ctx && nq == ni);
	float *eq = malloc((nq ? nq : 1) * D * sizeof(float));
	float *ei = same ? eq : malloc((ni ? ni : 1) * D * sizeof(float));
	int err = FC_ERR_NOMEM;
	if (!eq || !ei)
		goto out;
	if ((err = embed_rows(head, eq, q, D)) != 0 || (!same && (err = embed_rows(head, ei, ix, D)) != 0))
		goto out;
	err = fc_eval_knn(m, eq, ql, nq, ei, il, ni, D, k, exclude_self);
out:
	if (ei != eq)
		free(ei);
	free(eq);
	return err;
}

int fc_eval_features(fc_metrics *m, fc_head *head, const float *q, const uint32_t *ql, size_t nq,
		     const float *ix, const uint32_t *il, size_t ni, size_t dim, size_t k, int exclude_self)
{
	if (!head)
		return fc_eval_knn(m, q, ql, nq, ix, il, ni, dim, k, exclude_self);
	/* f32 rows are embedded in one call and searched as fc_eval_knn does */
	fc_rows qr = fc_rows_f32(q, nq, dim), ir = fc_rows_f32(ix, ni, dim);
	return fc_eval_rows(m, head, &qr, ql, &ir, il, k, exclude_self);
}

/* ---- files ---- */

typedef struct tensor_list {
	fc_st_tensor t[80];
	uint64_t shapes[80][2];
	char names[80][64];
	size_t n;
} tensor_list;

static void add_f32(tensor_list *l, const char *name, const float *data, uint64_t d0, uint64_t d1, int ndim)
{
	size_t i = l->n++;
	snprintf(l->names[i], sizeof l->names[i], "%s", name);
	l->shapes[i][0] = d0;
	l->shapes[i][1] = d1;
	l->t[i] = (fc_st_tensor){ .name = l->names[i], .dtype = FC_ST_F32, .ndim = (size_t)ndim,
				  .shape = l->shapes[i], .data = data,
				  .nbytes = (size_t)(ndim == 2 ? d0 * d1 : d0) * sizeof(float) };
}

static void add_i64(tensor_list *l, const char *name, const int64_t *v)
{
	size_t i = l->n++;
	snprintf(l->names[i], sizeof l->names[i], "%s", name);
	l->t[i] = (fc_st_tensor){ .name = l->names[i], .dtype = FC_ST_I64, .ndim = 0, .shape = NULL, .data = v,
				  .nbytes = sizeof(int64_t) };
}

static void add_head(tensor_list *l, fc_head *h)
{
	fc_tensor ht[64];
	size_t n = fc_head_tensors(h, ht, 64);
	for (size_t i = 0; i < n && l->n < 64; i++) {
		if (ht[i].count)
			add_i64(l, ht[i].name, ht[i].count);
		else
			add_f32(l, ht[i].name, ht[i].data, ht[i].shape[0], ht[i].shape[1], ht[i].ndim);
	}
}

int fc_head_save(fc_head *h, const char *path, const char *const *meta, char *why)
{
	tensor_list *l = calloc(1, sizeof *l);
	fc_st_meta m[33];
	size_t nm = 0;
	if (!l)
		return FC_ERR_NOMEM;
	add_head(l, h);
	m[nm++] = (fc_st_meta){ "format", "pt" };
	for (size_t i = 0; meta && meta[i] && meta[i + 1] && nm < 33; i += 2)
		m[nm++] = (fc_st_meta){ meta[i], meta[i + 1] };
	/* head.h's signature: why holds FC_ERRLEN bytes. */
	int rc = fc_st_write(path, l->t, l->n, m, nm, why, why ? FC_ERRLEN : 0);
	free(l);
	return rc;
}

static int head_shapes(const fc_st_file *f, fc_head_config *c, char *err, size_t errcap)
{
	memset(c, 0, sizeof *c);
	char name[64];
	uint64_t prev = 0; /* output width of the layer before */
	for (uint32_t i = 0; i < 9; i++) {
		snprintf(name, sizeof name, "head_layers.%u.weight", 3 * i);
		const fc_st_tensor *w = fc_st_find(f, name);
		if (!w)
			break;
		if (i == 8 || w->ndim != 2 || w->shape[0] == 0 || w->shape[1] == 0 || w->shape[0] > (1u << 20) ||
		    w->shape[1] > (1u << 20))
			return fci_errf(err, errcap, FC_ERR_INVALID,
					"%s is not a 2-D tensor of a head (or too many layers)", name);
		if (i == 0)
			c->in_dim = (uint32_t)w->shape[1];
		else if (w->shape[1] != prev)
			return fci_errf(err, errcap, FC_ERR_INVALID,
					"%s takes %llu inputs, the layer before gives %llu", name,
					(unsigned long long)w->shape[1], (unsigned long long)prev);
		else if (i > 1 && i + 0 < 8 && prev != c->hidden)
			return fci_errf(err, errcap, FC_ERR_INVALID,
					"hidden layers of different widths are not a projection head");
		if (i == 0)
			c->hidden = (uint32_t)w->shape[0];
		prev = w->shape[0];
		c->layers = i + 1;
	}
	if (c->layers == 0)
		return fci_errf(err, errcap, FC_ERR_INVALID, "no head_layers.0.weight: not a projection head");
	c->out_dim = (uint32_t)prev;
	if (c->layers == 1)
		c->hidden = 0;
	return 0;
}

/* Copy the file's tensors into the head; every one must be there, right-sized. */
static int head_fill(fc_head *h, const fc_st_file *f, const char *prefix, char *err, size_t errcap)
{
	fc_tensor ht[64];
	size_t n = fc_head_tensors(h, ht, 64);
	char name[96];
	for (size_t i = 0; i < n; i++) {
		snprintf(name, sizeof name, "%s%s", prefix, ht[i].name);
		const fc_st_tensor *t = fc_st_find(f, name);
		if (!t) {
			if (ht[i].count) /* older PyTorch state dicts may lack it */
				continue;
			return fci_errf(err, errcap, FC_ERR_INVALID, "tensor %s is missing", name);
		}
		size_t want = ht[i].count ? 1 : (size_t)(ht[i].ndim == 2 ? ht[i].shape[0] * ht[i].shape[1] : ht[i].shape[0]);
		int rc = ht[i].count ? fc_st_copy_i64(ht[i].count, 1, t) : fc_st_copy_f32(ht[i].data, want, t);
		if (rc)
			return fci_errf(err, errcap, FC_ERR_INVALID, "tensor %s has the wrong shape or type", name);
	}
	return 0;
}

int fc_head_load(fc_head **out, const char *path, uint32_t max_batch, char *why)
{
	/* head.h's signature: why holds FC_ERRLEN bytes. */
	size_t whycap = why ? FC_ERRLEN : 0;
	*out = NULL;
	fc_st_file *f;
	int rc = fc_st_open(&f, path, why, whycap);
	if (rc)
		return rc;
	fc_head_config c;
	fc_head *h = NULL;
	if ((rc = head_shapes(f, &c, why, whycap)) == 0 && (rc = fc_head_new(&h, &c, max_batch, 0)) == 0)
		rc = head_fill(h, f, "", why, whycap);
	fc_st_free(f);
	if (rc) {
		fc_head_free(h);
		return rc;
	}
	*out = h;
	return 0;
}

int fc_trainer_save(fc_trainer *t, const char *path, const char *extra, char *err, size_t errcap)
{
	tensor_list *l = calloc(1, sizeof *l);
	if (!l)
		return FC_ERR_NOMEM;
	add_head(l, t->head);
	float *m, *v;
	size_t n;
	int64_t *step;
	fc_optim_state(t->opt_head, &m, &v, &n, &step);
	add_f32(l, "optim.head.m", m, n, 0, 1);
	if (v)
		add_f32(l, "optim.head.v", v, n, 0, 1);
	add_i64(l, "optim.head.step", step);
	float *lp, *lg;
	fc_loss_params(t->loss, &lp, &lg, &n);
	if (n) {
		add_f32(l, "loss.W", lp, n, 0, 1);
		fc_optim_state(t->opt_loss, &m, &v, &n, &step);
		add_f32(l, "optim.loss.m", m, n, 0, 1);
		if (v)
			add_f32(l, "optim.loss.v", v, n, 0, 1);
		add_i64(l, "optim.loss.step", step);
	}
	char epoch[32], steps[32];
	snprintf(epoch, sizeof epoch, "%u", t->epochs_done);
	snprintf(steps, sizeof steps, "%llu", (unsigned long long)t->steps);
	fc_st_meta meta[] = { { "featcache_checkpoint", "1" }, { "epoch", epoch }, { "steps", steps },
			      { "config", t->fingerprint }, { "extra", extra ? extra : "" } };
	int rc = fc_st_write(path, l->t, l->n, meta, 5, err, errcap);
	free(l);
	return rc;
}

/* The value of key in a fingerprint ("key value key value ...", no spaces
 * inside a value) into buf; "" when absent or too long. */
static const char *fp_value(char *buf, size_t cap, const char *fp, const char *key)
{
	size_t klen = strlen(key);
	buf[0] = '\0';
	for (const char *p = fp, *v; (v = strchr(p, ' ')) != NULL;) {
		const char *end = strchr(++v, ' ');
		size_t n = end ? (size_t)(end - v) : strlen(v);
		if ((size_t)(v - 1 - p) == klen && strncmp(p, key, klen) == 0) {
			if (n < cap) {
				memcpy(buf, v, n);
				buf[n] = '\0';
			}
			break;
		}
		if (!end)
			break;
		p = end + 1;
	}
	return buf;
}

/* The keys of a fingerprint that may differ between a checkpoint and the run
 * resuming it: the epoch count and what follows from it, and the version. */
static int epoch_key(const char *key)
{
	return strcmp(key, "epochs") == 0 || strcmp(key, "total") == 0 || strcmp(key, "stepsize") == 0 ||
	       strcmp(key, "fp") == 0;
}

/* Whether every key of fingerprint `from` but epoch_key's has the same value
 * in `in`. */
static int same_keys(const char *from, const char *in)
{
	char copy[sizeof ((fc_trainer *)0)->fingerprint], v[64], *save = NULL;
	snprintf(copy, sizeof copy, "%s", from);
	for (char *key = strtok_r(copy, " ", &save); key; key = strtok_r(NULL, " ", &save)) {
		const char *value = strtok_r(NULL, " ", &save);
		if (!value)
			return 0;
		if (!epoch_key(key) && strcmp(fp_value(v, sizeof v, in, key), value) != 0)
			return 0;
	}
	return 1;
}

/* Whether a checkpoint's fingerprint is this run's, all but the epoch count:
 * a run may be extended (or, before it finished, shortened) on resume; the
 * schedule's total steps, and the step schedule's step where it is derived,
 * follow the epochs (trainer.h). A given step size must stay the same.
 * Older checkpoints (no "fp 2") hold the derived step size: there it counts
 * as derived when it is its epochs' default. */
static int same_run(const char *ckpt, const char *mine, fc_sched_kind kind)
{
	char a[64], b[64];
	if (!same_keys(ckpt, mine) || !same_keys(mine, ckpt))
		return 0;
	if (kind != FC_SCHED_STEP)
		return 1;
	unsigned long long sa = strtoull(fp_value(a, sizeof a, ckpt, "stepsize"), NULL, 10),
			   sb = strtoull(fp_value(b, sizeof b, mine, "stepsize"), NULL, 10),
			   ta = strtoull(fp_value(a, sizeof a, ckpt, "total"), NULL, 10),
			   ea = strtoull(fp_value(a, sizeof a, ckpt, "epochs"), NULL, 10);
	if (sa == sb)
		return 1;
	if (fp_value(a, sizeof a, ckpt, "fp")[0])
		return 0;
	/* Steps per epoch: T = batches per epoch x epochs. */
	return sb == 0 && ea && ta % ea == 0 && sa == ta / ea * (ea / 3 ? ea / 3 : 1);
}

static int copy_named(const fc_st_file *f, const char *name, float *dst, size_t n, char *err, size_t errcap)
{
	const fc_st_tensor *t = fc_st_find(f, name);
	if (!t || fc_st_copy_f32(dst, n, t))
		return fci_errf(err, errcap, FC_ERR_CORRUPT, "checkpoint tensor %s is missing or has the wrong size",
				name);
	return 0;
}

static int copy_step(const fc_st_file *f, const char *name, int64_t *dst, char *err, size_t errcap)
{
	const fc_st_tensor *t = fc_st_find(f, name);
	if (!t || fc_st_copy_i64(dst, 1, t))
		return fci_errf(err, errcap, FC_ERR_CORRUPT, "checkpoint tensor %s is missing", name);
	return 0;
}

int fc_trainer_load(fc_trainer *t, const char *path, char **extra, char *err, size_t errcap)
{
	if (extra)
		*extra = NULL;
	fc_st_file *f;
	int rc = fc_st_open(&f, path, err, errcap);
	if (rc)
		return rc;
	const char *cfg = fc_st_meta_find(f, "config"), *ep = fc_st_meta_find(f, "epoch"),
		   *st = fc_st_meta_find(f, "steps");
	if (!fc_st_meta_find(f, "featcache_checkpoint") || !cfg || !ep || !st) {
		rc = fci_errf(err, errcap, FC_ERR_INVALID, "not a featcache training checkpoint");
		goto out;
	}
	if (!same_run(cfg, t->fingerprint, t->cfg.sched.kind)) {
		rc = fci_errf(err, errcap, FC_ERR_INVALID,
			      "the checkpoint was made with other options or data; resume with the same ones "
			      "(only the epoch count may change)");
		goto out;
	}
	unsigned long done = strtoul(ep, NULL, 10);
	if (done > t->cfg.epochs) {
		rc = fci_errf(err, errcap, FC_ERR_INVALID,
			      "the checkpoint has %lu epochs done, more than the %u asked for: give at least %lu",
			      done, t->cfg.epochs, done);
		goto out;
	}
	if ((rc = head_fill(t->head, f, "", err, errcap)) != 0)
		goto out;
	float *m, *v, *lp, *lg;
	size_t n, ln;
	int64_t *step;
	fc_optim_state(t->opt_head, &m, &v, &n, &step);
	if ((rc = copy_named(f, "optim.head.m", m, n, err, errcap)) ||
	    (v && (rc = copy_named(f, "optim.head.v", v, n, err, errcap))) ||
	    (rc = copy_step(f, "optim.head.step", step, err, errcap)))
		goto out;
	fc_loss_params(t->loss, &lp, &lg, &ln);
	if (ln) {
		fc_optim_state(t->opt_loss, &m, &v, &n, &step);
		if ((rc = copy_named(f, "loss.W", lp, ln, err, errcap)) ||
		    (rc = copy_named(f, "optim.loss.m", m, n, err, errcap)) ||
		    (v && (rc = copy_named(f, "optim.loss.v", v, n, err, errcap))) ||
		    (rc = copy_step(f, "optim.loss.step", step, err, errcap)))
			goto out;
	}
	t->epochs_done = (uint32_t)strtoul(ep, NULL, 10);
	t->steps = strtoull(st, NULL, 10);
	const char *x = fc_st_meta_find(f, "extra");
	if (extra && x && *x && !(*extra = strdup(x)))
		rc = FC_ERR_NOMEM;
out:
	fc_st_free(f);
	return rc;
}
