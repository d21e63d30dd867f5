/*
 * trainopts.h - what `train` and `sweep` share: train's options (parsed one
 * at a time, so a sweep can apply a grid value exactly as train parses it),
 * the library config and its JSON built from them, the eval set, and one
 * run as the commands drive it: train/'s per-epoch policy (fc_policy) with
 * the run log of report/ and train's per-epoch line.
 *
 * Command-line layer only; messages and exit codes as cli.h.
 */
#ifndef CLI_TRAINOPTS_H
#define CLI_TRAINOPTS_H

#include <getopt.h>
#include <jansson.h>

#include "cli/data.h"
#include "featcache/report.h"
#include "featcache/train.h"

/* Options as given, before defaults that depend on the loss are applied. */
typedef struct cli_train_opts {
	const char *store, *out, *extractor, *metric, *early_metric, *resume;
	const char *train_split, *eval_split, *index_split;
	const char *data; /* --report's images: the directory the item keys are relative to */
	uint64_t output_dim, layers, hidden, epochs, batch, per_class, seed, k, warmup, step_size, patience;
	int per_class_set, step_size_set, wd_set, quiet, report;
	float margin, pos_margin, neg_margin, temperature, scale, lr, wd, momentum, gamma;
	float val_from_train; /* --val-from-train: the share of train carved as val (0: none) */
	cli_mem_opts mem;     /* --max-memory, --cache */
	int margin_set, pos_set, neg_set, temp_set, scale_set, momentum_set, nesterov, distance_set;
	fc_loss_kind loss;
	fc_miner_kind miner;
	fc_distance_kind distance;
	fc_optim_kind optim;
	fc_sched_kind sched;
	char early_buf[64]; /* the metric of --early-stop */
} cli_train_opts;

/* Option codes of the long-only options; 's', 'o', 'k', 'q', 'h' for the
 * others. Commands that add options of their own number them from
 * CLI_TOPT_END. */
enum {
	CLI_TOPT_EXTRACTOR = 256, CLI_TOPT_OUTPUT_DIM, CLI_TOPT_LAYERS, CLI_TOPT_HIDDEN, CLI_TOPT_LOSS, CLI_TOPT_MINER,
	CLI_TOPT_MARGIN, CLI_TOPT_POS_MARGIN, CLI_TOPT_NEG_MARGIN, CLI_TOPT_DISTANCE, CLI_TOPT_TEMPERATURE,
	CLI_TOPT_SCALE, CLI_TOPT_OPTIMIZER, CLI_TOPT_LR, CLI_TOPT_WD, CLI_TOPT_MOMENTUM, CLI_TOPT_NESTEROV,
	CLI_TOPT_SCHEDULER, CLI_TOPT_WARMUP, CLI_TOPT_STEP_SIZE, CLI_TOPT_GAMMA, CLI_TOPT_EPOCHS, CLI_TOPT_BATCH,
	CLI_TOPT_PER_CLASS, CLI_TOPT_SEED, CLI_TOPT_TRAIN_SPLIT, CLI_TOPT_EVAL_SPLIT, CLI_TOPT_INDEX_SPLIT,
	CLI_TOPT_METRIC, CLI_TOPT_EARLY, CLI_TOPT_RESUME, CLI_TOPT_REPORT, CLI_TOPT_VAL_FROM_TRAIN, CLI_TOPT_DATA,
	CLI_TOPT_MAX_MEMORY, CLI_TOPT_CACHE, CLI_TOPT_END
};

/* train's getopt_long table (NULL-terminated, CLI_TRAIN_NOPTS entries
 * before the terminator) and its short options. */
#define CLI_TRAIN_NOPTS 41
extern const struct option cli_train_longopts[CLI_TRAIN_NOPTS + 1];
#define CLI_TRAIN_SHORTOPTS "s:o:k:qh"

/* What kind of value an option takes, for sweeps: CLI_TOPT_FLAG (none),
 * CLI_TOPT_INT, CLI_TOPT_FLOAT or CLI_TOPT_TEXT. */
enum { CLI_TOPT_FLAG, CLI_TOPT_INT, CLI_TOPT_FLOAT, CLI_TOPT_TEXT };
int cli_train_opt_kind(int code);

/* cli_train_write_report - with --report: the HTML report of `src` (a
 * training log or a sweep directory) into `html` (featcache/report.h), and a line
 * saying where. With head (not NULL) and an evaluated run, the pictures of
 * what that head learned on o's store come with it (cli/gallery.h).
 * Returns 0 or an exit code. */
int cli_train_write_report(const char *html, const char *src, const cli_train_opts *o, const char *head);

/* cli_train_opts_init - train's defaults. */
void cli_train_opts_init(cli_train_opts *o);

/* cli_train_opts_set - apply option `code` (as getopt_long returns it) with
 * its value `arg` (NULL for a flag). Bad values are usage errors naming the
 * option, printed for command `cmd`. Returns 0 or CLI_EXIT_USAGE; -1 for a
 * code that is not a train option ('h' included), with nothing printed.
 * arg must outlive o (o keeps pointers to text values). */
int cli_train_opts_set(cli_train_opts *o, const char *cmd, int code, const char *arg);

/* cli_train_opts_check - what needs every option: the metric names (any
 * fc_metric_resolve takes), and --early-stop's metric becoming the one that
 * picks the best epoch.
 * Returns 0 or CLI_EXIT_USAGE. */
int cli_train_opts_check(cli_train_opts *o, const char *cmd);

/* What a run trains and evaluates on, loaded from the store once. */
typedef struct cli_train_inputs {
	cli_split_data train, q, ix; /* q: the eval queries; ix: their index when it is another split */
	fc_eval_set eval;
	int evaluated;               /* an eval split with labelled features */
	uint32_t *classes;           /* dense class numbers of train's rows */
	fc_train_data data;
	char exhex[2 * FC_HASH_LEN + 1];
	size_t k_used;               /* what metrics are labelled with: cli_k_used */
	char *exdesc;                /* the extractor's descriptor (JSON), for the head */
	cli_feature_plan plan;       /* in RAM in the stored dtype, or streamed */
} cli_train_inputs;

/* cli_train_inputs_load - the splits named by o from its store (their
 * features in RAM in the stored dtype, or streamed when they do not fit in
 * o->mem's limit: cli_plan_features), val
 * carved from train with o->val_from_train (cli_split_of); warnings for
 * missing features and unlabelled items; evaluation off, with a warning
 * listing the splits there are, when the eval split is empty; an empty
 * train split is an error listing them. Returns 0 or an exit code after printing why;
 * cli_train_inputs_free frees it either way. */
int cli_train_inputs_load(cli_train_inputs *in, const char *cmd, const cli_train_opts *o);
void cli_train_inputs_free(cli_train_inputs *in);

/* One training run as the commands drive it; the per-epoch policy itself
 * is train/'s (fc_policy), this adds the options, the log and the prints. */
typedef struct cli_train_run {
	const cli_train_opts *o;
	const cli_train_inputs *in;
	fc_train_config cfg;
	fc_trainer *t;
	fc_policy policy;
	json_t *cfgj;         /* the config as the log and the head's metadata give it */
	char *cfgtext;
	const char *out;      /* the head */
	char log[4200], ckpt[4200];
	int checkpoints;      /* write ckpt after every epoch */
	int verbose;          /* print train's per-epoch line on stdout */
} cli_train_run;

/* cli_train_run_start - the config from the options (with StepLR's epochs
 * as optimizer steps), the trainer, the config JSON, the file names (OUT,
 * OUT.jsonl, OUT.ckpt). Returns 0 or an exit code after printing why (an
 * invalid combination is a usage error of `cmd`). cli_train_run_free frees
 * it, also after a failure. */
int cli_train_run_start(cli_train_run *r, const char *cmd, const cli_train_opts *o, const cli_train_inputs *in,
		       const char *out);
void cli_train_run_free(cli_train_run *r);

/* cli_train_run_trainer - (re)build r's trainer from scratch, e.g. after a
 * sweep freed it to validate many runs before training any. */
int cli_train_run_trainer(cli_train_run *r, const char *cmd);

/* cli_train_run_begin - the run's policy (set checkpoints and verbose
 * first). With resume (a checkpoint's path): the trainer and the policy's
 * history from it. Else a fresh log: the config and before, the raw
 * features' metrics (ignored without evaluation). Returns 0 or an exit
 * code after printing why. */
int cli_train_run_begin(cli_train_run *r, const char *cmd, const fc_metrics *before, const char *resume);

/* cli_train_run_epoch_end - fc_policy_epoch_end after epoch st, with
 * train's per-epoch line on stdout when verbose and the log line appended;
 * says so when early stopping stops the run. Returns 0 or an exit code
 * after printing why. */
int cli_train_run_epoch_end(cli_train_run *r, const fc_epoch_stats *st);

void cli_print_metrics(const char *what, const fc_metrics *m, size_t k);

#endif /* CLI_TRAINOPTS_H */
