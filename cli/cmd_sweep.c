/*
 * cmd_sweep.c - `featcache sweep`: train many projection heads over one
 * cache. The features are loaded once; every configuration is a full
 * `train` run (its options parsed by train's own code); configurations that
 * draw the same batches train together, each batch gathered once and fed
 * to all their heads (fc_trainer_epoch_group). Results go to an output
 * directory as they finish, so a killed sweep reruns only what is missing.
 *
 * Not here: the search-space arithmetic (train/sweep.c) and the training
 * step itself (train/trainer.c).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <omp.h>

#include "cli/cli.h"
#include "cli/trainopts.h"
#include "featcache/report.h"
#include "featcache/shard.h"
#include "featcache/sweep.h"
#include "featcache/train.h"
#include "util/util.h"

static const char usage_text[] =
	"usage: featcache sweep --store DIR --out DIR --grid KEY=V1,V2,... [--grid ...]\n"
	"                       [--random N --range KEY=LO:HI[:log] ...] [--jobs N] [train options]\n"
	"\n"
	"Train one head per configuration over the cached features, each a full\n"
	"'featcache train' run with the train options given as the base and the\n"
	"swept keys on top, all evaluated on the same eval split. Configurations\n"
	"that draw the same batches (batch size, items per class, seed and the\n"
	"sampler those imply) train together: each batch is gathered once and\n"
	"fed to all their heads, which step in parallel. Every head is\n"
	"bit-identical to the one 'featcache train' makes with the same options.\n"
	"\n"
	"  -s, --store DIR          the store (default: $FEATCACHE_STORE)\n"
	"  -o, --out DIR            the sweep's directory (created; rerun to resume)\n"
	"      --grid KEY=V1,V2     values of one train option (KEY: its long name,\n"
	"                           '-' or '_', e.g. lr, output_dim, loss, batch_size);\n"
	"                           the grid is the product of every --grid\n"
	"      --random N           N random draws of the --range keys (seeded by --seed),\n"
	"                           times the grid when there is one\n"
	"      --range KEY=LO:HI[:log]  uniform (or log-uniform) draws; integer options\n"
	"                           are rounded\n"
	"      --jobs N             heads stepped at once (default: OMP_NUM_THREADS or cores)\n"
	"      --metric NAME        picks each run's best epoch and sorts the leaderboard\n"
	"                           (default average_precision; names as for train)\n"
	"      --report             also write an HTML report with charts to DIR/report.html\n"
	"      --shard I/N          train only configurations I, I+N, I+2N, ... (worker I\n"
	"                           of N, from 0), or 'none'. Default: from the\n"
	"                           launcher's environment (Slurm, mpirun), else none.\n"
	"                           Each worker writes DIR/results.shard-I-of-N.jsonl;\n"
	"                           the one that finds every configuration done writes\n"
	"                           the combined results, best.safetensors and report\n"
	"      --collect            only combine what the workers wrote in --out DIR\n"
	"                           (needs no other option but --metric and --report)\n"
	"  -q, --quiet              no progress and no per-epoch lines\n"
	"  -h, --help               show this help\n"
	"\n"
	"Every other 'featcache train' option sets the base configuration (see\n"
	"'featcache help train'); --resume does not apply.\n"
	"\n"
	"Writes to DIR: sweep.json (the configurations), results.jsonl (a line per\n"
	"finished configuration), results.csv (sorted by --metric), ID.safetensors\n"
	"and ID.safetensors.jsonl per configuration (as train writes them), and\n"
	"best.safetensors (the winner's head).\n";

enum { O_GRID = CLI_TOPT_END, O_RANDOM, O_RANGE, O_JOBS, O_SHARD, O_COLLECT };

#define MAX_AXES 16
#define MAX_VALUES 1024

typedef struct axis {
	int code;         /* the train option */
	int kind;         /* CLI_TOPT_* */
	char name[32];    /* its long name, '_' for '-' */
	char *buf;        /* grid: the values, split in place */
	const char *values[MAX_VALUES];
	const char *range; /* range: the argument, for messages */
	fc_sweep_axis ax;
} axis;

typedef struct config {
	char id[24];
	cli_train_opts o;
	char texts[MAX_AXES][40]; /* drawn values as option text */
	char head[4200];
	json_t *swept;
	cli_train_run run;
	json_t *epochs;
	double seconds;
	int active;
	int done;       /* finished: res is its results.jsonl line */
	int mine;       /* this worker's to train (every one unless --shard) */
	char *line;     /* its results line as read back, for the combined file */
	fc_run res;
} config;

typedef struct sweep {
	const char *dir;
	axis axes[MAX_AXES];
	size_t n_axes;
	uint64_t n_random;
	int jobs;
	cli_train_opts base;
	int metric;       /* base.metric's index */
	config *cfg;
	size_t n_cfg;
	cli_train_inputs in;
	char results[4200];
	const fc_logger *lg;
	const char *shard_spec;
	fc_shard shard;
	int collect;
} sweep;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void info(const sweep *s, const char *fmt, ...) FC_PRINTF(2, 3);

static void info(const sweep *s, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	s->lg->log(s->lg->ctx, FC_LOG_INFO, msg);
}

/* ---- options ---- */

/* The train option a sweep key names; usage error when it names none, or
 * one every configuration must share. */
static int find_key(const char *key, size_t len, axis *a)
{
	char name[32];
	if (len == 0 || len >= sizeof name)
		return cli_usage_error("sweep", "bad key '%.*s': expected a train option such as lr or output_dim",
				      (int)len, key);
	for (size_t i = 0; i < len; i++)
		name[i] = key[i] == '_' ? '-' : key[i];
	name[len] = '\0';
	for (const struct option *op = cli_train_longopts; op->name; op++) {
		if (strcmp(op->name, name) != 0)
			continue;
		switch (op->val) {
		case 's': case 'o': case 'q': case 'h': case 'k': case CLI_TOPT_REPORT: case CLI_TOPT_DATA: case CLI_TOPT_EXTRACTOR:
		case CLI_TOPT_TRAIN_SPLIT: case CLI_TOPT_VAL_FROM_TRAIN:
		case CLI_TOPT_EVAL_SPLIT: case CLI_TOPT_INDEX_SPLIT: case CLI_TOPT_METRIC: case CLI_TOPT_RESUME:
			return cli_usage_error("sweep", "--%s cannot be swept: every configuration trains on the same "
					      "data and is evaluated the same way", name);
		}
		a->code = op->val;
		a->kind = cli_train_opt_kind(op->val);
		for (size_t i = 0; i <= len; i++)
			a->name[i] = name[i] == '-' ? '_' : name[i];
		return 0;
	}
	return cli_usage_error("sweep", "unknown key '%s': expected a train option such as lr, output_dim, loss or "
			      "batch_size (see 'featcache help train')", name);
}

static int flag_value(const char *v)
{
	if (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "on"))
		return 1;
	if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "off"))
		return 0;
	return -1;
}

/* Apply one axis value to o, as train would parse it. */
static int apply(cli_train_opts *o, const axis *a, const char *v)
{
	if (a->kind == CLI_TOPT_FLAG) {
		int f = flag_value(v);
		if (f < 0)
			return cli_usage_error("sweep", "bad value '%s' for %s: expected true or false", v, a->name);
		/* The only swept flag is --nesterov; off is its default. */
		if (!f) {
			o->nesterov = 0;
			return 0;
		}
		return cli_train_opts_set(o, "sweep", a->code, NULL);
	}
	return cli_train_opts_set(o, "sweep", a->code, v);
}

static int add_axis(sweep *s, const char *arg, int grid)
{
	const char *eq = strchr(arg, '=');
	if (s->n_axes == MAX_AXES)
		return cli_usage_error("sweep", "too many swept keys (at most %d)", MAX_AXES);
	axis *a = &s->axes[s->n_axes];
	memset(a, 0, sizeof *a);
	int rc = find_key(arg, eq ? (size_t)(eq - arg) : strlen(arg), a);
	if (rc)
		return rc;
	if (!eq || !eq[1])
		return cli_usage_error("sweep", "bad value '%s' for %s: expected %s", arg, grid ? "--grid" : "--range",
				      grid ? "KEY=V1,V2,..." : "KEY=LO:HI[:log]");
	for (size_t i = 0; i < s->n_axes; i++)
		if (s->axes[i].code == a->code)
			return cli_usage_error("sweep", "%s is swept twice", a->name);
	cli_train_opts scratch = s->base;
	if (grid) {
		if (!(a->buf = strdup(eq + 1)))
			return cli_fail("out of memory");
		s->n_axes++; /* owns buf from here */
		for (char *v = a->buf, *next; v; v = next) {
			next = strchr(v, ',');
			if (next)
				*next++ = '\0';
			if (!*v)
				return cli_usage_error("sweep", "bad value '%s' for --grid: an empty value", arg);
			if (a->ax.n_values == MAX_VALUES)
				return cli_usage_error("sweep", "too many values for %s (at most %d)", a->name, MAX_VALUES);
			if ((rc = apply(&scratch, a, v)) != 0)
				return rc;
			a->values[a->ax.n_values++] = v;
		}
		return 0;
	}
	if (a->kind != CLI_TOPT_INT && a->kind != CLI_TOPT_FLOAT)
		return cli_usage_error("sweep", "--range %s: only numeric options have ranges (use --grid)", a->name);
	char lo[64], hi[64], *end;
	const char *c1 = strchr(eq + 1, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
	if (!c1 || c1 == eq + 1 || (size_t)(c1 - eq - 1) >= sizeof lo ||
	    (c2 ? (size_t)(c2 - c1 - 1) : strlen(c1 + 1)) >= sizeof hi || (c2 && strcmp(c2 + 1, "log") != 0))
		return cli_usage_error("sweep", "bad value '%s' for --range: expected KEY=LO:HI or KEY=LO:HI:log", arg);
	snprintf(lo, sizeof lo, "%.*s", (int)(c1 - eq - 1), eq + 1);
	snprintf(hi, sizeof hi, "%.*s", (int)(c2 ? c2 - c1 - 1 : (long)strlen(c1 + 1)), c1 + 1);
	a->ax.lo = strtod(lo, &end);
	if (end == lo || *end)
		return cli_usage_error("sweep", "bad value '%s' for --range: '%s' is not a number", arg, lo);
	a->ax.hi = strtod(hi, &end);
	if (end == hi || *end)
		return cli_usage_error("sweep", "bad value '%s' for --range: '%s' is not a number", arg, hi);
	a->ax.log = c2 != NULL;
	a->ax.integer = a->kind == CLI_TOPT_INT;
	a->range = arg;
	/* Both ends must be values the option takes (e.g. lr > 0). */
	if ((rc = apply(&scratch, a, lo)) != 0 || (rc = apply(&scratch, a, hi)) != 0)
		return rc;
	fc_sweep_axis one = a->ax;
	fc_sweep_cell *cells;
	size_t n;
	char why[FC_ERRLEN] = "";
	if (fc_sweep_expand(&cells, &n, &one, 1, 1, 0, why, sizeof why) != 0)
		return cli_usage_error("sweep", "bad value '%s' for --range: %s", arg, why);
	free(cells);
	s->n_axes++;
	return 0;
}

static int parse(sweep *s, int argc, char **argv)
{
	static struct option opts[CLI_TRAIN_NOPTS + 7];
	memcpy(opts, cli_train_longopts, CLI_TRAIN_NOPTS * sizeof *opts);
	opts[CLI_TRAIN_NOPTS + 0] = (struct option){ "grid", required_argument, NULL, O_GRID };
	opts[CLI_TRAIN_NOPTS + 1] = (struct option){ "random", required_argument, NULL, O_RANDOM };
	opts[CLI_TRAIN_NOPTS + 2] = (struct option){ "range", required_argument, NULL, O_RANGE };
	opts[CLI_TRAIN_NOPTS + 3] = (struct option){ "jobs", required_argument, NULL, O_JOBS };
	opts[CLI_TRAIN_NOPTS + 4] = (struct option){ "shard", required_argument, NULL, O_SHARD };
	opts[CLI_TRAIN_NOPTS + 5] = (struct option){ "collect", no_argument, NULL, O_COLLECT };
	opts[CLI_TRAIN_NOPTS + 6] = (struct option){ NULL, 0, NULL, 0 };
	cli_train_opts_init(&s->base);
	uint64_t jobs = (uint64_t)omp_get_max_threads();
	/* Axes are checked against the base options given before them; keep
	 * them for after the loop so every base option counts. */
	const char *specs[2 * MAX_AXES + 2];
	int is_grid[2 * MAX_AXES + 2], n_specs = 0;
	int c, rc;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":" CLI_TRAIN_SHORTOPTS, opts, NULL)) != -1) {
		rc = 0;
		switch (c) {
		case 'h':
			fputs(usage_text, stdout);
			return -1;
		case O_GRID:
		case O_RANGE:
			if (n_specs == (int)(sizeof specs / sizeof specs[0]))
				return cli_usage_error("sweep", "too many swept keys (at most %d)", MAX_AXES);
			is_grid[n_specs] = c == O_GRID;
			specs[n_specs++] = optarg;
			break;
		case O_RANDOM: rc = cli_parse_u64("sweep", "--random", optarg, 1, 1000000, &s->n_random); break;
		case O_JOBS: rc = cli_parse_u64("sweep", "--jobs", optarg, 1, 1024, &jobs); break;
		case O_SHARD: s->shard_spec = optarg; break;
		case O_COLLECT: s->collect = 1; break;
		case CLI_TOPT_RESUME:
			return cli_usage_error("sweep", "--resume does not apply to a sweep: rerun the same sweep to resume it");
		default:
			rc = cli_train_opts_set(&s->base, "sweep", c, optarg);
			if (rc < 0)
				return cli_getopt_error("sweep", c, argv, opts);
		}
		if (rc)
			return rc;
	}
	s->jobs = (int)jobs;
	if ((rc = cli_no_operands("sweep", argc, argv)) != 0)
		return rc;
	if (s->collect) {
		if (!s->base.out)
			return cli_usage_error("sweep", "--collect needs --out (the sweep's directory)");
		if (n_specs || s->shard_spec)
			return cli_usage_error("sweep", "--collect takes no --grid, --range or --shard: it reads the "
					       "configurations from DIR/sweep.json");
		s->dir = s->base.out;
		return 0;
	}
	char err[FC_ERRLEN];
	if (s->shard_spec && fc_shard_parse(&s->shard, s->shard_spec, err, sizeof err) != 0)
		return cli_usage_error("sweep", "bad value for --shard: %s", err);
	if (!s->shard_spec && fc_shard_from_env(&s->shard, err, sizeof err) != 0)
		return cli_usage_error("sweep", "cannot tell which worker this is: %s (or pass --shard I/N, or --shard none)",
				       err);
	if ((rc = cli_need_store("sweep", s->base.store, &s->base.store)) != 0)
		return rc;
	if (!s->base.out)
		return cli_usage_error("sweep", "--out is required (the sweep's directory)");
	s->dir = s->base.out;
	for (int i = 0; i < n_specs; i++)
		if ((rc = add_axis(s, specs[i], is_grid[i])) != 0)
			return rc;
	if (s->n_axes == 0)
		return cli_usage_error("sweep", "nothing to sweep: give --grid KEY=V1,V2 or --random N --range KEY=LO:HI");
	int ranges = 0;
	for (size_t i = 0; i < s->n_axes; i++)
		ranges += s->axes[i].ax.n_values == 0;
	if (ranges && !s->n_random)
		return cli_usage_error("sweep", "--range needs --random N (how many configurations to draw)");
	if (!ranges && s->n_random)
		return cli_usage_error("sweep", "--random needs at least one --range KEY=LO:HI");
	cli_train_opts probe = s->base;
	return cli_train_opts_check(&probe, "sweep");
}

/* The configurations, each with its options parsed as train parses them. */
static int expand(sweep *s)
{
	fc_sweep_axis ax[MAX_AXES];
	for (size_t i = 0; i < s->n_axes; i++)
		ax[i] = s->axes[i].ax;
	fc_sweep_cell *cells;
	size_t n;
	char why[FC_ERRLEN] = "";
	int err = fc_sweep_expand(&cells, &n, ax, s->n_axes, s->n_random, s->base.seed, why, sizeof why);
	if (err == FC_ERR_INVALID)
		return cli_usage_error("sweep", "%s", why);
	if (err || n > 100000) {
		free(cells);
		return cli_usage_error("sweep", "too many configurations: at most 100000");
	}
	s->cfg = calloc(n, sizeof *s->cfg);
	if (!s->cfg) {
		free(cells);
		return cli_fail("out of memory");
	}
	s->n_cfg = n;
	int rc = 0;
	for (size_t i = 0; i < n && !rc; i++) {
		config *c = &s->cfg[i];
		snprintf(c->id, sizeof c->id, "c%04zu", i);
		snprintf(c->head, sizeof c->head, "%s/%s.safetensors", s->dir, c->id);
		c->o = s->base;
		fc_run_init(&c->res);
		c->swept = json_object();
		if (!c->swept) {
			rc = cli_fail("out of memory");
			break;
		}
		for (size_t j = 0; j < s->n_axes && !rc; j++) {
			const axis *a = &s->axes[j];
			const fc_sweep_cell *cell = &cells[i * s->n_axes + j];
			const char *v = a->values[cell->index];
			if (!a->ax.n_values) {
				snprintf(c->texts[j], sizeof c->texts[j], a->ax.integer ? "%.0f" : "%.9g", cell->value);
				v = c->texts[j];
			}
			rc = apply(&c->o, a, v);
			json_t *jv = a->kind == CLI_TOPT_FLAG	? json_boolean(flag_value(v))
				     : a->kind == CLI_TOPT_INT	? json_integer((json_int_t)strtoull(v, NULL, 10))
				     : a->kind == CLI_TOPT_FLOAT ? json_real(strtod(v, NULL))
								: json_string(v);
			json_object_set_new(c->swept, a->name, jv);
		}
		if (!rc)
			rc = cli_train_opts_check(&c->o, "sweep");
	}
	free(cells);
	return rc;
}

/* "lr=0.001 loss=triplet", for messages. */
static void swept_text(char *buf, size_t cap, json_t *swept)
{
	const char *key;
	json_t *v;
	size_t len = 0;
	buf[0] = '\0';
	json_object_foreach(swept, key, v) {
		char *t = json_is_string(v) ? strdup(json_string_value(v)) : json_dumps(v, JSON_ENCODE_ANY);
		if (len < cap)
			len += (size_t)snprintf(buf + len, cap - len, "%s%s=%s", len ? " " : "", key, t ? t : "?");
		free(t);
	}
}

/* ---- the directory ---- */

/* Write path whole or not at all (util's atomic output file). */
static int write_file(const char *path, const void *data, size_t len)
{
	char why[FC_ERRLEN];
	if (fci_write_file(path, data, len, why, sizeof why))
		return cli_fail("cannot write '%s': %s", path, why);
	return 0;
}

/* The first key whose values differ between two configs, for a message. */
static void config_diff(char *buf, size_t cap, const char *id, json_t *there, json_t *here)
{
	const char *key;
	json_t *v;
	json_object_foreach(here, key, v) {
		json_t *w = json_object_get(there, key);
		if (w && json_equal(v, w))
			continue;
		char *a = w ? json_dumps(w, JSON_ENCODE_ANY) : NULL, *b = json_dumps(v, JSON_ENCODE_ANY);
		snprintf(buf, cap, "its %s has %s %s, this sweep's %s", id, key, a ? a : "nothing", b ? b : "?");
		free(a);
		free(b);
		return;
	}
	snprintf(buf, cap, "its %s has other options", id);
}

static int other_sweep(const sweep *s, const char *what)
{
	return cli_fail("'%s' holds another sweep (%s): rerun with the same options to resume it, or use a new --out "
		       "directory", s->dir, what);
}

/* Is dir empty but for sweep.json and its temporaries? */
static int dir_is_fresh(const char *dir, int *fresh)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (!d)
		return cli_fail("cannot open directory '%s': %s", dir, cli_errno_str(errno));
	*fresh = 1;
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
		    strncmp(e->d_name, "sweep.json", 10) != 0)
			*fresh = 0;
	closedir(d);
	return 0;
}

/* sweep.json made whole under another name, then linked into place: when
 * several workers start at once one link wins (1 for the others), and
 * nobody reads a half-written file. */
static int create_spec(const sweep *s, const char *path, const char *text, size_t len)
{
	char tmp[4300];
	int rc;

	snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
	if ((rc = write_file(tmp, text, len)) != 0)
		return rc;
	if (link(tmp, path) != 0) {
		int e = errno;
		unlink(tmp);
		if (e == EEXIST)
			return 1;
		return cli_fail("cannot create '%s' in '%s': %s", path, s->dir, cli_errno_str(e));
	}
	unlink(tmp);
	return 0;
}

/* Create the directory, or check that it holds this very sweep. */
static int open_dir(sweep *s)
{
	char path[4200], what[512];
	json_t *spec = NULL;
	if (mkdir(s->dir, 0777) != 0 && errno != EEXIST)
		return cli_fail("cannot create directory '%s': %s", s->dir, cli_errno_str(errno));
	snprintf(path, sizeof path, "%s/sweep.json", s->dir);
	for (int tries = 0; !spec; tries++) {
		json_error_t jerr;
		int fresh = 0, rc;
		if ((spec = json_load_file(path, 0, &jerr)) != NULL)
			break;
		if ((rc = dir_is_fresh(s->dir, &fresh)) != 0)
			return rc;
		if (!fresh && tries < 20 && s->shard.size) {
			usleep(100000); /* another worker's sweep.json on its way */
			continue;
		}
		if (!fresh)
			return cli_fail("'%s' is not empty and holds no sweep.json: not a sweep directory (use a new --out "
				       "directory)", s->dir);
		json_t *list = json_array();
		json_t *made = json_pack("{s:i, s:o}", "featcache_sweep", 1, "configs", list);
		for (size_t i = 0; made && i < s->n_cfg; i++)
			json_array_append_new(list, json_pack("{s:s, s:O, s:O}", "id", s->cfg[i].id, "swept",
							      s->cfg[i].swept, "config", s->cfg[i].run.cfgj));
		char *text = made ? json_dumps(made, JSON_INDENT(1) | JSON_PRESERVE_ORDER) : NULL;
		json_decref(made);
		if (!text)
			return cli_fail("out of memory");
		size_t len = strlen(text);
		text[len++] = '\n';
		rc = create_spec(s, path, text, len);
		free(text);
		if (rc <= 0)
			return rc;
	}
	json_t *list = json_object_get(spec, "configs");
	int rc = 0;
	if (json_array_size(list) != s->n_cfg) {
		snprintf(what, sizeof what, "%zu configurations, this one %zu", json_array_size(list), s->n_cfg);
		rc = other_sweep(s, what);
	}
	for (size_t i = 0; !rc && i < s->n_cfg; i++) {
		json_t *there = json_object_get(json_array_get(list, i), "config");
		if (!json_equal(there, s->cfg[i].run.cfgj)) {
			config_diff(what, sizeof what, s->cfg[i].id, there, s->cfg[i].run.cfgj);
			rc = other_sweep(s, what);
		}
	}
	json_decref(spec);
	return rc;
}

/* What results.jsonl already holds: those configurations are done. A line
 * cut short by a kill is dropped, so appends start on a fresh line. */
static int load_results(sweep *s, size_t *done)
{
	*done = 0;
	if (s->shard.size)
		snprintf(s->results, sizeof s->results, "%s/results.shard-%u-of-%u.jsonl", s->dir, s->shard.rank,
			 s->shard.size);
	else
		snprintf(s->results, sizeof s->results, "%s/results.jsonl", s->dir);
	FILE *f = fopen(s->results, "r+");
	if (!f)
		return errno == ENOENT ? 0 : cli_fail("cannot read '%s': %s", s->results, cli_errno_str(errno));
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	long good = 0;
	int rc = 0;
	while (!rc && (len = getline(&line, &cap, f)) > 0) {
		if (line[len - 1] != '\n')
			break;
		json_t *j = json_loads(line, 0, NULL);
		const char *id = json_string_value(json_object_get(j, "id"));
		config *c = NULL;
		for (size_t i = 0; id && i < s->n_cfg && !c; i++)
			if (strcmp(s->cfg[i].id, id) == 0)
				c = &s->cfg[i];
		if (!j) {
			rc = cli_fail("'%s' line %zu is not JSON: remove it to rerun that configuration", s->results,
				     *done + 1);
		} else if (!c || !json_equal(json_object_get(j, "config"), c->run.cfgj)) {
			char what[512];
			if (c)
				config_diff(what, sizeof what, c->id, json_object_get(j, "config"), c->run.cfgj);
			else
				snprintf(what, sizeof what, "results of configuration '%s'", id ? id : "?");
			rc = other_sweep(s, what);
		} else if (!c->done) {
			char why[FC_ERRLEN];
			if (fc_run_from_result(&c->res, j, why, sizeof why) != 0)
				rc = cli_fail("cannot read '%s': line %zu: %s", s->results, *done + 1, why);
			c->done = !rc;
			*done += !rc;
		}
		json_decref(j);
		good = ftell(f);
	}
	free(line);
	if (!rc && fflush(f) == 0 && ftruncate(fileno(f), good) != 0)
		rc = cli_fail("cannot repair '%s': %s", s->results, cli_errno_str(errno));
	fclose(f);
	return rc;
}

/* ---- training ---- */

static int finish(sweep *s, config *c, const char *error)
{
	cli_train_run *r = &c->run;
	const fc_policy *p = &r->policy;
	int evaluated = s->in.evaluated;
	fc_runlog_result res = { .id = c->id, .config = r->cfgj, .swept = c->swept, .epochs = c->epochs,
				 .before = evaluated ? &p->before : NULL, .best_epoch = p->best_epoch,
				 .best = evaluated && p->best_epoch ? &p->best_metrics : NULL, .seconds = c->seconds,
				 .error = error };
	char why[FC_ERRLEN];
	json_t *line = fc_runlog_result_line(&res);
	int rc = line ? fc_runlog_append(s->results, line, 1, why, sizeof why) : FC_ERR_NOMEM;
	/* What the sweep ranks is what it reads back, finished now or before. */
	if (!rc)
		rc = fc_run_from_result(&c->res, line, why, sizeof why);
	json_decref(line);
	c->done = 1;
	c->active = 0;
	fc_trainer_free(r->t);
	r->t = NULL;
	return rc == FC_ERR_NOMEM ? cli_fail("out of memory") : rc ? cli_fail("%s", why) : 0;
}

/* After configuration c's epoch: the policy, its line of the results,
 * and whether it is finished (or failed with a non-finite loss: then bad is
 * the step). Returns 0 or an exit code. */
static int epoch_done(sweep *s, config *c, const fc_epoch_stats *st, int err, uint64_t bad, uint32_t epoch)
{
	cli_train_run *r = &c->run;
	if (err == FC_ERR_INVALID && bad) {
		char why[200];
		snprintf(why, sizeof why, "the loss or its gradient is not finite at step %llu (epoch %u)",
			 (unsigned long long)bad, epoch);
		cli_warn("%s: %s: try a lower --lr (now %g)", c->id, why, (double)r->cfg.lr);
		return finish(s, c, why);
	}
	if (err)
		return cli_fail("sweep: %s: %s", c->id, fc_strerror(err));
	double e0 = now();
	int rc = cli_train_run_epoch_end(r, st);
	if (rc)
		return rc;
	double secs = st->seconds + (now() - e0);
	c->seconds += secs;
	json_array_append_new(c->epochs, fc_runlog_result_epoch(st, secs, s->in.evaluated ? &r->policy.last : NULL));
	if (fc_trainer_epochs_done(r->t) >= r->cfg.epochs || r->policy.stop)
		return finish(s, c, NULL);
	return 0;
}

static int train_group(sweep *s, config **g, size_t n, size_t gi, size_t groups, const fc_metrics *before)
{
	fc_trainer **t = calloc(n, sizeof *t);
	config **live = calloc(n, sizeof *live);
	fc_epoch_stats *st = calloc(n, sizeof *st);
	int *errs = calloc(n, sizeof *errs);
	uint64_t *bad = calloc(n, sizeof *bad);
	int rc = 0;
	if (!t || !live || !st || !errs || !bad) {
		rc = cli_fail("out of memory");
		goto out;
	}
	uint32_t max_epochs = 0;
	for (size_t i = 0; i < n && !rc; i++) {
		config *c = g[i];
		if ((rc = cli_train_run_trainer(&c->run, "sweep")) != 0 ||
		    (rc = cli_train_run_begin(&c->run, "sweep", before, NULL)) != 0)
			break;
		c->epochs = json_array();
		c->active = 1;
		if (c->run.cfg.epochs > max_epochs)
			max_epochs = c->run.cfg.epochs;
	}
	for (uint32_t epoch = 1; !rc; epoch++) {
		size_t nl = 0;
		for (size_t i = 0; i < n; i++)
			if (g[i]->active) {
				live[nl] = g[i];
				t[nl++] = g[i]->run.t;
			}
		if (nl == 0)
			break;
		double t0 = now();
		int err = fc_trainer_epoch_group(t, nl, st, errs, bad, s->jobs, s->lg);
		cli_progress_end();
		if (err == FC_ERR_INTERRUPTED) {
			rc = cli_fail("sweep: interrupted; rerun the same command to go on (finished configurations are kept)");
			goto out;
		}
		if (err) {
			rc = cli_fail("sweep: %s", fc_strerror(err));
			goto out;
		}
		const config *top = NULL;
		for (size_t i = 0; i < nl && !rc; i++) {
			int failed = errs[i] != 0;
			rc = epoch_done(s, live[i], &st[i], errs[i], bad[i], epoch);
			if (!rc && !failed && (!top || live[i]->run.policy.value > top->run.policy.value))
				top = live[i];
		}
		if (top)
			info(s, "group %zu/%zu, epoch %u/%u: %zu heads in %.1f s, best %s %.4f (%s)", gi + 1, groups,
			     epoch, max_epochs, nl, now() - t0, s->in.evaluated ? s->base.metric : "-loss",
			     top->run.policy.value, top->id);
	}
out:
	for (size_t i = 0; i < n; i++) {
		fc_trainer_free(g[i]->run.t);
		g[i]->run.t = NULL;
	}
	free(t);
	free(live);
	free(st);
	free(errs);
	free(bad);
	return rc;
}

/* Still to train by this worker. */
static int todo(const config *c)
{
	return c->mine && !c->done;
}

/* Configurations that draw the same batches share a group. */
static int same_sampling(const config *a, const config *b)
{
	return a->run.cfg.batch == b->run.cfg.batch && a->run.cfg.per_class == b->run.cfg.per_class &&
	       a->run.cfg.seed == b->run.cfg.seed;
}

static int train_all(sweep *s, size_t n_todo)
{
	config **g = calloc(s->n_cfg, sizeof *g);
	char *taken = calloc(s->n_cfg, 1);
	int rc = 0;
	if (!g || !taken) {
		free(g);
		free(taken);
		return cli_fail("out of memory");
	}
	size_t groups = 0;
	for (size_t i = 0; i < s->n_cfg; i++) {
		if (!todo(&s->cfg[i]) || taken[i])
			continue;
		groups++;
		for (size_t j = i; j < s->n_cfg; j++)
			if (todo(&s->cfg[j]) && same_sampling(&s->cfg[i], &s->cfg[j]))
				taken[j] = 1;
	}
	memset(taken, 0, s->n_cfg);
	fc_metrics before = { 0 };
	if (s->in.evaluated && (rc = fc_eval_set_run(&before, NULL, &s->in.eval)) != 0) {
		rc = cli_fail("cannot evaluate: %s", fc_strerror(rc));
		goto out;
	}
	if (s->shard.size)
		info(s, "sweep: worker %u of %u (%s): %zu of its configurations to train in %zu groups, %d jobs",
		     s->shard.rank, s->shard.size, s->shard.source, n_todo, groups, s->jobs);
	else
		info(s, "sweep: %zu configurations to train in %zu groups sharing batches (%zu done before), %d jobs",
		     n_todo, groups, s->n_cfg - n_todo, s->jobs);
	cli_catch_interrupt();
	for (size_t i = 0, gi = 0; i < s->n_cfg && !rc; i++) {
		if (!todo(&s->cfg[i]) || taken[i])
			continue;
		size_t n = 0;
		for (size_t j = i; j < s->n_cfg; j++)
			if (todo(&s->cfg[j]) && !taken[j] && same_sampling(&s->cfg[i], &s->cfg[j])) {
				taken[j] = 1;
				g[n++] = &s->cfg[j];
			}
		rc = train_group(s, g, n, gi++, groups, &before);
	}
out:
	free(g);
	free(taken);
	return rc;
}

/* ---- the table ---- */

static const sweep *sort_sweep; /* qsort has no context argument */

/* A finished configuration's score: its best epoch's --metric, or minus its
 * loss without evaluation; -inf when no epoch finished. */
static double score(const sweep *s, const fc_run *res)
{
	double v = NAN;
	if (!(res->best_epoch >= 1))
		return -INFINITY;
	if (s->in.evaluated)
		v = res->best[s->metric];
	for (size_t e = 0; !s->in.evaluated && e < res->n_ep; e++)
		if (res->ep[e].epoch == res->best_epoch)
			v = -res->ep[e].loss;
	return isnan(v) ? -INFINITY : v;
}

static int by_score(const void *pa, const void *pb)
{
	const config *a = *(config *const *)pa, *b = *(config *const *)pb;
	double x = score(sort_sweep, &a->res), y = score(sort_sweep, &b->res);
	if (x != y)
		return x > y ? -1 : 1;
	return strcmp(a->id, b->id);
}

/* The best epoch as the table prints it (0: none). */
static int best_epoch(const fc_run *r)
{
	return isfinite(r->best_epoch) ? (int)r->best_epoch : 0;
}

/* A JSON value as a table cell: strings bare, numbers as jansson prints them. */
static char *cell(json_t *v)
{
	if (json_is_string(v))
		return strdup(json_string_value(v));
	if (json_is_real(v)) {
		char buf[32];
		snprintf(buf, sizeof buf, "%.6g", json_real_value(v));
		return strdup(buf);
	}
	return v ? json_dumps(v, JSON_ENCODE_ANY) : strdup("");
}

static int write_csv(const sweep *s, config **order, size_t n)
{
	char *buf = NULL, path[4200];
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		return cli_fail("out of memory");
	fputs("id", f);
	for (size_t j = 0; j < s->n_axes; j++)
		fprintf(f, ",%s", s->axes[j].name);
	fputs(",best_epoch", f);
	for (int m = 0; m < 9; m++)
		fprintf(f, ",%s", fc_metric_names[m]);
	fputs(",seconds\n", f);
	for (size_t i = 0; i < n; i++) {
		const fc_run *r = &order[i]->res;
		fputs(order[i]->id, f);
		for (size_t j = 0; j < s->n_axes; j++) {
			char *t = cell(json_object_get(order[i]->swept, s->axes[j].name));
			int quote = t && strpbrk(t, ",\"\n");
			fputc(',', f);
			if (quote) {
				fputc('"', f);
				for (const char *p = t; *p; p++)
					fprintf(f, *p == '"' ? "\"\"" : "%c", *p);
				fputc('"', f);
			} else if (t) {
				fputs(t, f);
			}
			free(t);
		}
		fprintf(f, ",%d", best_epoch(r));
		for (int m = 0; m < 9; m++) {
			if (isnan(r->best[m]))
				fputc(',', f);
			else
				fprintf(f, ",%.17g", r->best[m]);
		}
		fprintf(f, ",%.3f\n", r->seconds);
	}
	if (fclose(f) != 0 || !buf) {
		free(buf);
		return cli_fail("out of memory");
	}
	snprintf(path, sizeof path, "%s/results.csv", s->dir);
	int rc = write_file(path, buf, len);
	free(buf);
	return rc;
}

static int copy_best(const sweep *s, const config *c)
{
	char path[4200], why[FC_ERRLEN];
	uint8_t *buf = NULL;
	size_t cap = 0, len = 0;
	snprintf(path, sizeof path, "%s/best.safetensors", s->dir);
	int rc = fci_read_file(c->head, UINT64_MAX, &buf, &cap, &len, why, sizeof why);
	rc = rc == FC_ERR_NOMEM ? cli_fail("out of memory")
	     : rc		 ? cli_fail("cannot read head '%s': %s", c->head, why)
				 : write_file(path, buf, len);
	free(buf);
	return rc;
}

static void print_table(const sweep *s, config **order, size_t n)
{
	const char *metric = s->in.evaluated ? s->base.metric : "loss";
	size_t cols = s->n_axes + 5, w[MAX_AXES + 5];
	char ***t = calloc(n + 1, sizeof *t);
	if (!t)
		return;
	for (size_t i = 0; i <= n; i++) {
		t[i] = calloc(cols, sizeof **t);
		if (!t[i])
			goto out;
	}
	t[0][0] = strdup("rank");
	t[0][1] = strdup("id");
	for (size_t j = 0; j < s->n_axes; j++)
		t[0][2 + j] = strdup(s->axes[j].name);
	t[0][cols - 3] = strdup("epoch");
	t[0][cols - 2] = strdup(metric);
	t[0][cols - 1] = strdup("seconds");
	for (size_t i = 0; i < n; i++) {
		const fc_run *r = &order[i]->res;
		char buf[64];
		snprintf(buf, sizeof buf, "%zu", i + 1);
		t[i + 1][0] = strdup(buf);
		t[i + 1][1] = strdup(order[i]->id);
		for (size_t j = 0; j < s->n_axes; j++)
			t[i + 1][2 + j] = cell(json_object_get(order[i]->swept, s->axes[j].name));
		int be = best_epoch(r);
		snprintf(buf, sizeof buf, "%d", be);
		t[i + 1][cols - 3] = strdup(buf);
		double v = score(s, r);
		if (r->failed && be == 0)
			snprintf(buf, sizeof buf, "failed");
		else
			snprintf(buf, sizeof buf, "%.4f%s", s->in.evaluated ? v : -v, r->failed ? " (failed)" : "");
		t[i + 1][cols - 2] = strdup(buf);
		snprintf(buf, sizeof buf, "%.1f", r->seconds);
		t[i + 1][cols - 1] = strdup(buf);
	}
	for (size_t j = 0; j < cols; j++) {
		w[j] = 0;
		for (size_t i = 0; i <= n; i++)
			if (t[i][j] && strlen(t[i][j]) > w[j])
				w[j] = strlen(t[i][j]);
	}
	for (size_t i = 0; i <= n; i++) {
		for (size_t j = 0; j < cols; j++)
			printf(j + 1 < cols ? "%-*s  " : "%-*s\n", (int)w[j], t[i][j] ? t[i][j] : "");
	}
out:
	for (size_t i = 0; i <= n; i++) {
		for (size_t j = 0; t[i] && j < cols; j++)
			free(t[i][j]);
		free(t[i]);
	}
	free(t);
}

static int report(sweep *s)
{
	config **order = calloc(s->n_cfg, sizeof *order);
	if (!order)
		return cli_fail("out of memory");
	size_t n = 0;
	for (size_t i = 0; i < s->n_cfg; i++)
		if (s->cfg[i].done)
			order[n++] = &s->cfg[i];
	sort_sweep = s;
	qsort(order, n, sizeof *order, by_score);
	int rc = write_csv(s, order, n);
	if (!rc && n && isfinite(score(s, &order[0]->res)))
		rc = copy_best(s, order[0]);
	if (!rc) {
		print_table(s, order, n);
		if (n && isfinite(score(s, &order[0]->res)))
			printf("best: %s, head '%s', copied to '%s/best.safetensors'; results in '%s/results.csv'\n",
			       order[0]->id, order[0]->head, s->dir, s->dir);
	}
	free(order);
	return rc;
}

/* ---- many workers ---- */

/* Every results file in the directory (results.jsonl and the workers'
 * results.shard-*.jsonl): each configuration's line, kept for the combined
 * file, and its run for those this process did not finish itself. A line
 * another worker is still writing (no newline yet) is not read. */
static int load_all_results(sweep *s, size_t *done)
{
	DIR *d = opendir(s->dir);
	struct dirent *e;
	int rc = 0;

	if (!d)
		return cli_fail("cannot open directory '%s': %s", s->dir, cli_errno_str(errno));
	while (!rc && (e = readdir(d)) != NULL) {
		size_t n = strlen(e->d_name);
		char path[4200], *line = NULL;
		size_t cap = 0, lineno = 0;
		ssize_t len;
		FILE *f;

		if (strcmp(e->d_name, "results.jsonl") != 0 &&
		    (strncmp(e->d_name, "results.shard-", 14) != 0 || n < 20 || strcmp(e->d_name + n - 6, ".jsonl") != 0))
			continue;
		snprintf(path, sizeof path, "%s/%s", s->dir, e->d_name);
		if (!(f = fopen(path, "r"))) {
			rc = cli_fail("cannot read '%s': %s", path, cli_errno_str(errno));
			break;
		}
		while (!rc && (len = getline(&line, &cap, f)) > 0 && line[len - 1] == '\n') {
			json_t *j = json_loads(line, 0, NULL);
			const char *id = json_string_value(json_object_get(j, "id"));
			config *c = NULL;
			lineno++;
			for (size_t i = 0; id && i < s->n_cfg && !c; i++)
				if (strcmp(s->cfg[i].id, id) == 0)
					c = &s->cfg[i];
			if (!j || !c || !json_equal(json_object_get(j, "config"), c->run.cfgj)) {
				rc = cli_fail("'%s' line %zu is not a result of this sweep", path, lineno);
			} else if (!c->line) {
				char why[FC_ERRLEN];
				if (!c->done && fc_run_from_result(&c->res, j, why, sizeof why) != 0)
					rc = cli_fail("cannot read '%s': line %zu: %s", path, lineno, why);
				else if (!(c->line = strdup(line)))
					rc = cli_fail("out of memory");
				c->done = !rc;
			}
			json_decref(j);
		}
		free(line);
		fclose(f);
	}
	closedir(d);
	*done = 0;
	for (size_t i = 0; i < s->n_cfg; i++)
		*done += s->cfg[i].done;
	return rc;
}

/* The combined results.jsonl, in configuration order. */
static int write_combined(const sweep *s)
{
	char path[4200], *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	int rc;

	if (!f)
		return cli_fail("out of memory");
	for (size_t i = 0; i < s->n_cfg; i++)
		fputs(s->cfg[i].line, f);
	if (fclose(f) != 0 || !buf) {
		free(buf);
		return cli_fail("out of memory");
	}
	snprintf(path, sizeof path, "%s/results.jsonl", s->dir);
	rc = write_file(path, buf, len);
	free(buf);
	return rc;
}

/* --collect: the configurations as sweep.json lists them. */
static int load_spec(sweep *s)
{
	char path[4200];
	json_error_t jerr;
	json_t *spec, *list, *first;
	int rc = 0;

	snprintf(path, sizeof path, "%s/sweep.json", s->dir);
	if (!(spec = json_load_file(path, 0, &jerr)))
		return cli_fail("cannot read '%s': %s (is '%s' a sweep directory?)", path, jerr.text, s->dir);
	list = json_object_get(spec, "configs");
	s->n_cfg = json_array_size(list);
	if (!s->n_cfg || !(s->cfg = calloc(s->n_cfg, sizeof *s->cfg))) {
		json_decref(spec);
		return s->n_cfg ? cli_fail("out of memory") : cli_fail("'%s' lists no configurations", path);
	}
	for (size_t i = 0; i < s->n_cfg && !rc; i++) {
		json_t *cj = json_array_get(list, i);
		const char *id = json_string_value(json_object_get(cj, "id"));
		config *c = &s->cfg[i];
		fc_run_init(&c->res);
		if (!id || strlen(id) >= sizeof c->id || !json_is_object(json_object_get(cj, "config")) ||
		    !json_is_object(json_object_get(cj, "swept"))) {
			rc = cli_fail("'%s': configuration %zu is not valid", path, i);
			break;
		}
		snprintf(c->id, sizeof c->id, "%s", id);
		snprintf(c->head, sizeof c->head, "%s/%s.safetensors", s->dir, c->id);
		c->swept = json_incref(json_object_get(cj, "swept"));
		c->run.cfgj = json_incref(json_object_get(cj, "config"));
	}
	/* The swept keys name the table's columns. */
	first = s->n_cfg ? json_object_get(json_array_get(list, 0), "swept") : NULL;
	const char *key;
	json_t *v;
	json_object_foreach(first, key, v) {
		if (s->n_axes == MAX_AXES)
			break;
		snprintf(s->axes[s->n_axes++].name, sizeof s->axes[0].name, "%s", key);
	}
	json_decref(spec);
	return rc;
}

/* Once every configuration is done, wherever: the combined results, the
 * table and best.safetensors (and the HTML report when asked). Until then
 * a worker says how many are done and leaves the rest to the others. */
static int combine(sweep *s, int *complete)
{
	size_t done;
	int rc = load_all_results(s, &done);

	*complete = 0;
	if (rc)
		return rc;
	if (done < s->n_cfg) {
		printf("sweep: %zu of %zu configurations done in '%s'; the others are other workers' (when they have "
		       "finished: featcache sweep --collect --out %s)\n",
		       done, s->n_cfg, s->dir, s->dir);
		return 0;
	}
	*complete = 1;
	for (size_t i = 0; i < s->n_cfg && !s->in.evaluated; i++)
		s->in.evaluated = !isnan(s->cfg[i].res.before[s->metric]);
	return write_combined(s);
}

int cmd_sweep(int argc, char **argv)
{
	sweep s;
	memset(&s, 0, sizeof s);
	int rc = parse(&s, argc, argv);
	if (rc)
		goto out;
	cli_logger_flags(s.base.quiet ? CLI_QUIET : 0);
	s.lg = cli_logger();
	/* The leaderboard's metric, by the name train resolves too. */
	s.metric = fc_metric_resolve(s.base.metric, NULL);
	int complete = 1;
	if (s.collect) {
		if ((rc = load_spec(&s)) != 0 || (rc = combine(&s, &complete)) != 0)
			goto out;
		if (!complete) {
			rc = cli_fail("not every configuration is done yet");
			goto out;
		}
		goto results;
	}
	if ((rc = expand(&s)) != 0)
		goto out;
	for (size_t i = 0; i < s.n_cfg; i++)
		s.cfg[i].mine = !s.shard.size || i % s.shard.size == s.shard.rank;
	if ((rc = cli_train_inputs_load(&s.in, "sweep", &s.base)) != 0)
		goto out;
	/* Every configuration is checked (and its config JSON made) before any trains. */
	for (size_t i = 0; i < s.n_cfg; i++) {
		config *c = &s.cfg[i];
		if ((rc = cli_train_run_start(&c->run, "sweep", &c->o, &s.in, c->head)) != 0) {
			char what[400];
			swept_text(what, sizeof what, c->swept);
			cli_err("in configuration %s (%s)", c->id, what);
			goto out;
		}
		fc_trainer_free(c->run.t);
		c->run.t = NULL;
	}
	size_t done, n_todo = 0;
	if ((rc = open_dir(&s)) != 0 || (rc = load_results(&s, &done)) != 0)
		goto out;
	for (size_t i = 0; i < s.n_cfg; i++)
		n_todo += todo(&s.cfg[i]);
	if (n_todo && (rc = train_all(&s, n_todo)) != 0)
		goto out;
	if (s.shard.size && ((rc = combine(&s, &complete)) != 0 || !complete))
		goto out;
results:
	rc = report(&s);
	if (!rc && s.base.report) {
		char html[4200], best[4200];
		snprintf(html, sizeof html, "%s/report.html", s.dir);
		snprintf(best, sizeof best, "%s/best.safetensors", s.dir);
		rc = cli_train_write_report(html, s.dir, &s.base, access(best, R_OK) == 0 ? best : NULL);
	}
out:
	cli_progress_end();
	for (size_t i = 0; i < s.n_cfg; i++) {
		cli_train_run_free(&s.cfg[i].run);
		json_decref(s.cfg[i].swept);
		json_decref(s.cfg[i].epochs);
		free(s.cfg[i].line);
		fc_run_free(&s.cfg[i].res);
	}
	free(s.cfg);
	for (size_t i = 0; i < s.n_axes; i++)
		free(s.axes[i].buf);
	cli_train_inputs_free(&s.in);
	return rc < 0 ? CLI_EXIT_OK : rc;
}
