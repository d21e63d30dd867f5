/*
 * cli.h - what the featcache subcommands share: the exit codes, messages in
 * the house format, usage errors, option-value parsing, the stderr logger
 * with its progress bar, and opening a store with a readable failure.
 *
 * This is the command-line layer only; nothing here is part of
 * libfeatcache. Messages go to stderr as
 *     featcache: cannot open store 'x': reason
 * (lowercase, subject in quotes, what failed first, no final period).
 */
#ifndef CLI_H
#define CLI_H

#include <stdint.h>

#include "featcache/featcache.h"
#include "featcache/store.h"
#include "util/util.h" /* FC_PRINTF, fci_outfile */


enum { CLI_EXIT_OK = 0, CLI_EXIT_FAIL = 1, CLI_EXIT_USAGE = 2 };

/* The subcommands. Each gets its own name in argv[0] and returns the exit
 * status; `CMD --help` prints its usage on stdout and returns 0. */
int cmd_layers(int argc, char **argv);
int cmd_extract(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_gc(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_sweep(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_embed(int argc, char **argv);
int cmd_search(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_help(int argc, char **argv);

/* cli_err - print "featcache: MESSAGE" and a newline on stderr. */
void cli_err(const char *fmt, ...) FC_PRINTF(1, 2);

/* cli_warn - print "featcache: warning: MESSAGE" on stderr. */
void cli_warn(const char *fmt, ...) FC_PRINTF(1, 2);

/* cli_fail - cli_err, then return CLI_EXIT_FAIL (for `return cli_fail(...)`). */
int cli_fail(const char *fmt, ...) FC_PRINTF(1, 2);

/* cli_usage_error - print the message and the hint "see 'featcache help CMD'"
 * (or "see 'featcache help'" when cmd is NULL) on stderr and return
 * CLI_EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) FC_PRINTF(2, 3);

/* cli_metric_check - 0 when fc_metric_resolve takes name, else a usage
 * error for cmd's option naming every metric name it does take. */
int cli_metric_check(const char *cmd, const char *option, const char *name);

/* cli_errno_str - strerror(e) with its first letter lowercased, to fit the
 * house format. Returns a pointer to a static buffer. */
const char *cli_errno_str(int e);

struct option;

/* cli_getopt_error - turn getopt_long's '?' or ':' return (optstring must
 * start with ':' and opterr be 0) into a usage error naming the option;
 * returns CLI_EXIT_USAGE. `c` is what getopt_long returned, `longopts` the
 * table it was given. */
int cli_getopt_error(const char *cmd, int c, char **argv, const struct option *longopts);

/* cli_other_option - the `default:` of a command's getopt switch: 'h'
 * prints `usage` on stdout and returns CLI_EXIT_OK; anything else is
 * cli_getopt_error. The command returns what it returns. */
int cli_other_option(const char *cmd, int c, char **argv, const struct option *longopts, const char *usage);

/* cli_no_operands - a usage error naming the first operand if getopt left any
 * (argv[optind] with optind < argc); otherwise 0. */
int cli_no_operands(const char *cmd, int argc, char **argv);

/* cli_parse_u64 - parse a decimal option value in [min, max]. On success
 * returns 0; otherwise prints a usage error that names the option and the
 * reason and returns CLI_EXIT_USAGE. */
/* cli_parse_precision - --precision's value (f32, bf16 or int8) into *out
 * as an enum fc_precision; 0, or a usage error naming cmd. */
int cli_parse_precision(const char *cmd, const char *val, int *out);

int cli_parse_u64(const char *cmd, const char *opt, const char *val, uint64_t min, uint64_t max,
		 uint64_t *out);

/* cli_store_arg - the store directory: `opt` (the --store value) if not NULL,
 * else $FEATCACHE_STORE if set and not empty, else NULL. An empty --store is
 * returned as "" so that the caller reports it. */
const char *cli_store_arg(const char *opt);

/* cli_need_store - cli_store_arg plus the usage error when there is none (or
 * it is empty): returns 0 and sets *path, or returns CLI_EXIT_USAGE. */
int cli_need_store(const char *cmd, const char *opt, const char **path);

/* cli_open_store - open the store at `path` (never creating one) with the
 * CLI logger installed. On failure prints
 * "featcache: cannot open store 'PATH': REASON", frees the handle and
 * returns CLI_EXIT_FAIL; on success returns 0 and *out is the handle. */
int cli_open_store(fc_store **out, const char *path, int readonly);

/* cli_open_store_mode - cli_open_store that creates the store when `create`
 * is set and the directory holds none. */
int cli_open_store_mode(fc_store **out, const char *path, int readonly, int create);

/* cli_open_store_writer - cli_open_store_mode that, for a command that
 * writes (`writer`: "extract", "gc", ...), holds the store's one-writer
 * lock: a second writer is refused naming the first, or waits when `wait`
 * (--wait). writer NULL takes no lock. */
int cli_open_store_writer(fc_store **out, const char *path, int readonly, int create, const char *writer,
			  int wait);

/* cli_store_fail - print "featcache: cannot WHAT store 'PATH': REASON" for a
 * failed call on an open store (REASON is fc_store_errmsg, or fc_strerror
 * of err when the store left no message) and return CLI_EXIT_FAIL. When err
 * is FC_ERR_CORRUPT the line ends with the way out: "; run 'featcache
 * verify --store PATH --repair'". */
int cli_store_fail(fc_store *s, int err, const char *what);

/* cli_close_stdout - flush stdout and check that every write to it worked.
 * If not, prints "featcache: cannot write standard output: REASON" and
 * returns CLI_EXIT_FAIL; otherwise returns status unchanged. main() calls
 * it after the command, so "featcache info > /dev/full" fails loudly. */
int cli_close_stdout(int status);

/* cli_human_bytes - "12.3 MiB" style, into buf; returns buf. */
char *cli_human_bytes(char *buf, size_t cap, uint64_t n);

/* ---- logging and progress ---- */

enum {
	CLI_QUIET = 1,  /* no progress and no info messages; warnings and errors still show */
	CLI_VERBOSE = 2 /* also FC_LOG_DEBUG messages */
};

/* cli_logger - the process's stderr logger. Messages print as
 * "featcache: MSG" (warnings "featcache: warning: MSG"). Progress is a bar
 * with rate and ETA redrawn in place when stderr is a terminal, and a plain
 * line about every 5 s otherwise. The progress callback returns non-zero
 * once SIGINT or SIGTERM arrived (see cli_catch_interrupt), so the library
 * stops at a safe point with FC_ERR_INTERRUPTED. The callbacks serialise
 * themselves, so the library may call them from any thread. Never NULL. */
const fc_logger *cli_logger(void);

/* cli_logger_flags - set CLI_QUIET / CLI_VERBOSE (default 0). */
void cli_logger_flags(int flags);

/* cli_progress_end - finish a progress line left open on the terminal, so
 * what comes next starts on a fresh line. Harmless when none is open. */
void cli_progress_end(void);

/* cli_catch_interrupt - make the first SIGINT/SIGTERM only raise a flag the
 * progress callback reports; a second one kills the process as usual. */
void cli_catch_interrupt(void);

/* cli_interrupted - non-zero once an interrupt was caught. */
int cli_interrupted(void);

#endif /* CLI_H */
