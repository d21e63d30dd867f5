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
#ifndef FC_CLI_H
#define FC_CLI_H

#include <stdint.h>

#include "featcache/featcache.h"
#include "featcache/store.h"

enum { FC_EXIT_OK = 0, FC_EXIT_FAIL = 1, FC_EXIT_USAGE = 2 };

/* The subcommands. Each gets its own name in argv[0] and returns the exit
 * status; `CMD --help` prints its usage on stdout and returns 0. */
int cmd_layers(int argc, char **argv);
int cmd_extract(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_gc(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_sweep(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_embed(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_help(int argc, char **argv);

#if defined(__GNUC__)
#define FC_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define FC_PRINTF(f, a)
#endif

/* fc_err - print "featcache: MESSAGE" and a newline on stderr. */
void fc_err(const char *fmt, ...) FC_PRINTF(1, 2);

/* fc_warn - print "featcache: warning: MESSAGE" on stderr. */
void fc_warn(const char *fmt, ...) FC_PRINTF(1, 2);

/* fc_fail - fc_err, then return FC_EXIT_FAIL (for `return fc_fail(...)`). */
int fc_fail(const char *fmt, ...) FC_PRINTF(1, 2);

/* fc_die - fc_err, then exit(FC_EXIT_FAIL). For the few places that cannot
 * unwind (out of memory in a helper); commands return their status instead. */
_Noreturn void fc_die(const char *fmt, ...) FC_PRINTF(1, 2);

/* fc_usage_error - print the message and the hint "see 'featcache help CMD'"
 * (or "see 'featcache help'" when cmd is NULL) on stderr and return
 * FC_EXIT_USAGE. */
int fc_usage_error(const char *cmd, const char *fmt, ...) FC_PRINTF(2, 3);

/* fc_errno_str - strerror(e) with its first letter lowercased, to fit the
 * house format. Returns a pointer to a static buffer. */
const char *fc_errno_str(int e);

struct option;

/* fc_getopt_error - turn getopt_long's '?' or ':' return (optstring must
 * start with ':' and opterr be 0) into a usage error naming the option;
 * returns FC_EXIT_USAGE. `c` is what getopt_long returned, `longopts` the
 * table it was given. */
int fc_getopt_error(const char *cmd, int c, char **argv, const struct option *longopts);

/* fc_no_operands - a usage error naming the first operand if getopt left any
 * (argv[optind] with optind < argc); otherwise 0. */
int fc_no_operands(const char *cmd, int argc, char **argv);

/* fc_parse_u64 - parse a decimal option value in [min, max]. On success
 * returns 0; otherwise prints a usage error that names the option and the
 * reason and returns FC_EXIT_USAGE. */
int fc_parse_u64(const char *cmd, const char *opt, const char *val, uint64_t min, uint64_t max,
		 uint64_t *out);

/* fc_store_arg - the store directory: `opt` (the --store value) if not NULL,
 * else $FEATCACHE_STORE if set and not empty, else NULL. An empty --store is
 * returned as "" so that the caller reports it. */
const char *fc_store_arg(const char *opt);

/* fc_need_store - fc_store_arg plus the usage error when there is none (or
 * it is empty): returns 0 and sets *path, or returns FC_EXIT_USAGE. */
int fc_need_store(const char *cmd, const char *opt, const char **path);

/* fc_open_store - open the store at `path` (never creating one) with the
 * CLI logger installed. On failure prints
 * "featcache: cannot open store 'PATH': REASON", frees the handle and
 * returns FC_EXIT_FAIL; on success returns 0 and *out is the handle. */
int fc_open_store(fc_store **out, const char *path, int readonly);

/* fc_open_store_mode - fc_open_store that creates the store when `create`
 * is set and the directory holds none. */
int fc_open_store_mode(fc_store **out, const char *path, int readonly, int create);

/* fc_store_fail - print "featcache: cannot WHAT store 'PATH': REASON" for a
 * failed call on an open store (REASON is fc_store_errmsg, or fc_strerror
 * of err when the store left no message) and return FC_EXIT_FAIL. */
int fc_store_fail(fc_store *s, int err, const char *what);

/* fc_close_stdout - flush stdout and check that every write to it worked.
 * If not, prints "featcache: cannot write standard output: REASON" and
 * returns FC_EXIT_FAIL; otherwise returns status unchanged. main() calls
 * it after the command, so "featcache info > /dev/full" fails loudly. */
int fc_close_stdout(int status);

/* fc_human_bytes - "12.3 MiB" style, into buf; returns buf. */
char *fc_human_bytes(char *buf, size_t cap, uint64_t n);

/* ---- logging and progress ---- */

enum {
	FC_CLI_QUIET = 1,  /* no progress and no info messages; warnings and errors still show */
	FC_CLI_VERBOSE = 2 /* also FC_LOG_DEBUG messages */
};

/* fc_cli_logger - the process's stderr logger. Messages print as
 * "featcache: MSG" (warnings "featcache: warning: MSG"). Progress is a bar
 * with rate and ETA redrawn in place when stderr is a terminal, and a plain
 * line about every 5 s otherwise. The progress callback returns non-zero
 * once SIGINT or SIGTERM arrived (see fc_catch_interrupt), so the library
 * stops at a safe point with FC_ERR_INTERRUPTED. The callbacks serialise
 * themselves, so the library may call them from any thread. Never NULL. */
const fc_logger *fc_cli_logger(void);

/* fc_cli_logger_flags - set FC_CLI_QUIET / FC_CLI_VERBOSE (default 0). */
void fc_cli_logger_flags(int flags);

/* fc_progress_end - finish a progress line left open on the terminal, so
 * what comes next starts on a fresh line. Harmless when none is open. */
void fc_progress_end(void);

/* fc_catch_interrupt - make the first SIGINT/SIGTERM only raise a flag the
 * progress callback reports; a second one kills the process as usual. */
void fc_catch_interrupt(void);

/* fc_interrupted - non-zero once an interrupt was caught. */
int fc_interrupted(void);

#endif /* FC_CLI_H */
