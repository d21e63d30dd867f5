/*
 * cmd_train.c - `featcache train`: load a split's cached features into RAM
 * once, train the projection head for some epochs over them, evaluate after
 * each epoch, keep the best head, a resumable checkpoint and a JSON-lines
 * log, and say how the head compares with the raw backbone features.
 */
#include <getopt.h>
#include <stdio.h>

#include "cli/cli.h"
#include "cli/trainopts.h"
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
	"      --val-from-train F   take the share F of the train split as val for this\n"
	"                           run (for a dataset of train and test only): items\n"
	"                           chosen by a hash of their key, the same every run;\n"
	"                           recorded in the head's and the log's configuration\n"
	"      --index-split S      search the eval queries in this split (default: the eval\n"
	"                           split itself, each query excluded from its own results)\n"
	"  -k, --k K                metrics at k (default 20)\n"
	"      --metric NAME        what picks the best epoch (default average_precision;\n"
	"                           also precision, recall, f1, hit, map, mrr, rprecision,\n"
	"                           dcg, ndcg and Finetuner's other names)\n"
	"      --early-stop M:P     stop when metric M has not improved for P epochs\n"
	"      --resume CKPT        continue a run from its checkpoint (same options; more\n"
	"                           --epochs extend it, the schedule following the new count)\n"
	"      --report             also write an HTML report to OUT.html (--out plus .html): charts,\n"
	"                           and of the eval split neighbour galleries with thumbnails, a\n"
	"                           per-class table and an embedding map (see 'featcache report')\n"
	"      --data DIR           where the report finds the images (default: where extract read them)\n"
	"      --max-memory SIZE    memory the run may use (default: 3/4 of MemAvailable): the\n"
	"                           features stay in RAM in the stored dtype when they fit,\n"
	"                           else they are streamed from the store (the same result)\n"
	"      --cache SIZE         decoded chunks kept when streaming (default 256M)\n"
	"  -q, --quiet              no progress and no per-epoch lines\n"
	"  -h, --help               show this help\n";

static int parse(cli_train_opts *o, int argc, char **argv)
{
	cli_train_opts_init(o);
	int c, rc;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":" CLI_TRAIN_SHORTOPTS, cli_train_longopts, NULL)) != -1) {
		if (c == 'h') {
			fputs(usage_text, stdout);
			return -1;
		}
		rc = cli_train_opts_set(o, "train", c, optarg);
		if (rc < 0)
			return cli_getopt_error("train", c, argv, cli_train_longopts);
		if (rc)
			return rc;
	}
	if ((rc = cli_no_operands("train", argc, argv)) != 0)
		return rc;
	if ((rc = cli_need_store("train", o->store, &o->store)) != 0)
		return rc;
	if (!o->out)
		return cli_usage_error("train", "--out is required (where the head goes)");
	return cli_train_opts_check(o, "train");
}

int cmd_train(int argc, char **argv)
{
	cli_train_opts o;
	int rc = parse(&o, argc, argv);
	if (rc)
		return rc < 0 ? CLI_EXIT_OK : rc;
	cli_logger_flags(o.quiet ? CLI_QUIET : 0);
	const fc_logger *lg = cli_logger();

	cli_train_inputs in;
	cli_train_run run = { 0 };
	if ((rc = cli_train_inputs_load(&in, "train", &o)) != 0)
		goto out;
	if ((rc = cli_train_run_start(&run, "train", &o, &in, o.out)) != 0)
		goto out;
	run.checkpoints = 1;
	run.verbose = !o.quiet;
	fc_trainer *t = run.t;
	const fc_policy *p = &run.policy;

	if (o.resume) {
		if ((rc = cli_train_run_begin(&run, "train", NULL, o.resume)) != 0)
			goto out;
		if (!o.quiet)
			printf("resuming after epoch %u of %u from '%s'\n", fc_trainer_epochs_done(t), run.cfg.epochs,
			       o.resume);
	}

	if (!o.quiet)
		printf("train: %zu items, %u classes, %zu-d features of extractor %.12s; eval: %s (%zu queries)\n",
		       in.train.m.rows, in.data.n_classes, in.train.m.dim, in.exhex,
		       in.evaluated ? o.eval_split : "none", in.evaluated ? in.q.m.rows : (size_t)0);
	if (!o.resume) {
		fc_metrics before = { 0 };
		if (in.evaluated && (rc = fc_eval_set_run(&before, NULL, &in.eval)) != 0) {
			rc = cli_fail("cannot evaluate: %s", fc_strerror(rc));
			goto out;
		}
		if (in.evaluated && !o.quiet)
			cli_print_metrics("before (raw features):", &before, in.k_used);
		if ((rc = cli_train_run_begin(&run, "train", &before, NULL)) != 0)
			goto out;
	}

	cli_catch_interrupt();
	while (fc_trainer_epochs_done(t) < run.cfg.epochs && !p->stop) {
		fc_epoch_stats st;
		uint64_t bad = 0;
		rc = fc_trainer_epoch(t, &st, &bad, lg); /* quiet or not: it also sees SIGINT */
		cli_progress_end();
		if (rc == FC_ERR_INVALID && bad) {
			rc = cli_fail("train: the loss or its gradient is not finite at step %llu (epoch %u): try a lower --lr "
				     "(now %g); the last good checkpoint is '%s'",
				     (unsigned long long)bad, fc_trainer_epochs_done(t) + 1, (double)run.cfg.lr, run.ckpt);
			goto out;
		}
		if (rc == FC_ERR_INTERRUPTED) {
			rc = cli_fail("train: interrupted; resume with --resume '%s'", run.ckpt);
			goto out;
		}
		if (rc && fc_trainer_gather_error(t) && in.plan.store) {
			rc = cli_fail("train: cannot read features: %s", fc_store_errmsg(in.plan.store));
			goto out;
		}
		if (rc) {
			rc = cli_fail("train: %s", fc_strerror(rc));
			goto out;
		}
		if ((rc = cli_train_run_epoch_end(&run, &st)) != 0)
			goto out;
	}
	if (in.evaluated) {
		cli_print_metrics("before (raw features):", &p->before, in.k_used);
		char what[64];
		snprintf(what, sizeof what, "after (head, epoch %u):", p->best_epoch);
		cli_print_metrics(what, &p->best_metrics, in.k_used);
	}
	printf("head written to '%s' (epoch %u), log '%s', checkpoint '%s'\n", o.out, p->best_epoch, run.log, run.ckpt);
	rc = CLI_EXIT_OK;
	if (o.report) {
		char html[4200];
		snprintf(html, sizeof html, "%s.html", o.out);
		rc = cli_train_write_report(html, run.log, &o, in.evaluated ? o.out : NULL);
	}
out:
	cli_progress_end();
	cli_train_run_free(&run);
	cli_train_inputs_free(&in);
	return rc;
}
