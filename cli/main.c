/*
 * main.c - the featcache command: finds the subcommand in the table and runs
 * it, git-style. Global options are only --help and --version; everything
 * else belongs to a command. The command's return is the exit status
 * (0 success, 1 failure, 2 usage error), after a checked flush of stdout.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"

struct cli_command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
};

/* One line per command; `featcache help` lists them in this order. */
static const struct cli_command commands[] = {
	{ "layers", cmd_layers, "list a model's layers and its default embedding layer" },
	{ "extract", cmd_extract, "run a model over a dataset into a store (only what is new)" },
	{ "info", cmd_info, "show what a store holds" },
	{ "train", cmd_train, "train a projection head over cached features" },
	{ "sweep", cmd_sweep, "train many heads over one cache" },
	{ "eval", cmd_eval, "retrieval metrics of raw features or a head" },
	{ "embed", cmd_embed, "write features or head embeddings as .npy" },
	{ "search", cmd_search, "the nearest items to an image or an item" },
	{ "report", cmd_report, "an HTML report with charts of a train run or a sweep" },
	{ "export", cmd_export, "backbone + head as one ONNX model" },
	{ "verify", cmd_verify, "check every record of a store; --repair drops the damage" },
	{ "gc", cmd_gc, "drop features no item references any more" },
	{ "merge", cmd_merge, "copy shard stores (one per worker) into one store" },
	{ "help", cmd_help, "show help for featcache or one command" },
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

static const struct cli_command *find_command(const char *name)
{
	for (size_t i = 0; i < N_COMMANDS; i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

static void usage(FILE *f)
{
	fputs("usage: featcache <command> [options]\n"
	      "       featcache help <command>\n"
	      "       featcache --version\n"
	      "\n"
	      "commands:\n",
	      f);
	for (size_t i = 0; i < N_COMMANDS; i++)
		fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
	fputs("\n"
	      "Every command takes --help. Commands that work on a store take\n"
	      "--store DIR, or the FEATCACHE_STORE environment variable.\n"
	      "Exit status: 0 success, 1 failure, 2 usage error.\n",
	      f);
}

/* Edit distance, for "did you mean". Names are short; one row is enough. */
static size_t distance(const char *a, const char *b)
{
	size_t lb = strlen(b), row[32];

	if (lb >= sizeof row / sizeof row[0])
		return (size_t)-1;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; a[i - 1]; i++) {
		size_t diag = row[0];

		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t best = diag + (a[i - 1] != b[j - 1]);

			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			diag = up;
			row[j] = best;
		}
	}
	return row[lb];
}

static int unknown_command(const char *name)
{
	const struct cli_command *best = NULL;
	size_t best_d = 3; /* suggest only close misspellings */

	for (size_t i = 0; i < N_COMMANDS; i++) {
		size_t d = distance(name, commands[i].name);

		if (d < best_d) {
			best_d = d;
			best = &commands[i];
		}
	}
	if (best)
		return cli_usage_error(NULL, "'%s' is not a featcache command; did you mean '%s'?",
				      name, best->name);
	return cli_usage_error(NULL, "'%s' is not a featcache command", name);
}

static int run_command(const struct cli_command *c, int argc, char **argv)
{
	/* Each command parses its own argv from scratch. */
	optind = 1;
	opterr = 0;
	return c->run(argc, argv);
}

int cmd_help(int argc, char **argv)
{
	const struct cli_command *c;
	char *sub[3];

	if (argc == 1) {
		usage(stdout);
		return CLI_EXIT_OK;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		puts("usage: featcache help [<command>]\n"
		     "\n"
		     "Without a command, list the commands; with one, show its options\n"
		     "(the same as 'featcache <command> --help').");
		return CLI_EXIT_OK;
	}
	if (argv[1][0] == '-')
		return cli_usage_error("help", "unknown option '%s'", argv[1]);
	if (argc > 2)
		return cli_usage_error("help", "unexpected argument '%s'", argv[2]);
	c = find_command(argv[1]);
	if (!c)
		return unknown_command(argv[1]);
	sub[0] = (char *)c->name;
	sub[1] = (char *)"--help";
	sub[2] = NULL;
	return run_command(c, 2, sub);
}

/*
 * extract decodes images on threads of its own while the engine's OpenMP
 * threads compute, two kinds of work on the same cores. libgomp's threads
 * spin at every barrier (~300,000 turns by default) before they sleep, and
 * those turns take the cores the decoders need: ResNet-50 over 160 PNG
 * photos on 2 cores took 4.0 s in bf16 and 5.9 s in f32, 3.7 s and 5.7 s
 * with a spin count of 1,000 (the engine alone runs at the same speed
 * either way). libgomp reads GOMP_SPINCOUNT once, when it loads, so
 * extract sets it and runs itself again; not when the user has set it or
 * OMP_WAIT_POLICY, nor under valgrind (the new image would run without
 * it). If the exec fails, the run goes on as it is.
 */
static void openmp_short_spins(char **argv)
{
	const char *pre = getenv("LD_PRELOAD");
	if (getenv("GOMP_SPINCOUNT") || getenv("OMP_WAIT_POLICY") || (pre && strstr(pre, "vgpreload")))
		return;
	if (setenv("GOMP_SPINCOUNT", "1000", 1) == 0)
		execv("/proc/self/exe", argv);
}

int main(int argc, char **argv)
{
	const struct cli_command *c;
	int rc;

	if (argc < 2) {
		usage(stderr);
		return CLI_EXIT_USAGE;
	}
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
		printf("featcache %s\n", fc_version());
		return cli_close_stdout(CLI_EXIT_OK);
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage(stdout);
		return cli_close_stdout(CLI_EXIT_OK);
	}
	if (argv[1][0] == '-')
		return cli_usage_error(NULL, "unknown option '%s'", argv[1]);
	c = find_command(argv[1]);
	if (!c)
		return unknown_command(argv[1]);
	if (c->run == cmd_extract)
		openmp_short_spins(argv);
	rc = run_command(c, argc - 1, argv + 1);
	cli_progress_end();
	return cli_close_stdout(rc);
}
