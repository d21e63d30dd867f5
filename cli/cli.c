/*
 * cli.c - helpers shared by the featcache subcommands: house-format
 * messages, usage errors, option values, the stderr logger and progress
 * display, and the checked close of stdout.
 *
 * Everything that prints lives in cli/; the library only reports through
 * the fc_logger installed here.
 */
#include "cli/cli.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "featcache/engine.h"
#include "featcache/metrics.h"

/* ---- messages ---- */

static void vmsg(const char *prefix, const char *fmt, va_list ap) FC_PRINTF(2, 0);

static void vmsg(const char *prefix, const char *fmt, va_list ap)
{
	/* Keep a message from landing in the middle of a progress bar. */
	cli_progress_end();
	fflush(stdout);
	fputs("featcache: ", stderr);
	if (prefix)
		fputs(prefix, stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void cli_err(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmsg(NULL, fmt, ap);
	va_end(ap);
}

void cli_warn(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmsg("warning: ", fmt, ap);
	va_end(ap);
}

int cli_fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmsg(NULL, fmt, ap);
	va_end(ap);
	return CLI_EXIT_FAIL;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmsg(NULL, fmt, ap);
	va_end(ap);
	if (cmd)
		fprintf(stderr, "see 'featcache help %s'\n", cmd);
	else
		fputs("see 'featcache help'\n", stderr);
	return CLI_EXIT_USAGE;
}

int cli_metric_check(const char *cmd, const char *option, const char *name)
{
	char list[FC_ERRLEN];
	if (fc_metric_resolve(name, NULL) >= 0)
		return 0;
	fc_metric_list(list, sizeof list);
	return cli_usage_error(cmd, "unknown metric '%s' for %s: expected %s", name ? name : "", option, list);
}

const char *cli_errno_str(int e)
{
	static char buf[128];

	snprintf(buf, sizeof buf, "%s", strerror(e));
	/* "No such file" -> "no such file", but leave "EOF"-style acronyms alone. */
	if (isupper((unsigned char)buf[0]) && !isupper((unsigned char)buf[1]))
		buf[0] = (char)tolower((unsigned char)buf[0]);
	return buf;
}

/* ---- options ---- */

int cli_getopt_error(const char *cmd, int c, char **argv, const struct option *longopts)
{
	const char *arg = optind > 0 ? argv[optind - 1] : NULL;
	char name[80];
	int is_long = 0;

	/*
	 * getopt_long does not say which spelling failed. A "--name" element
	 * is the culprit when optopt is 0 (unknown long option) or belongs to
	 * that long option; otherwise a short option in a cluster failed.
	 */
	if (arg && strncmp(arg, "--", 2) == 0) {
		size_t n = strcspn(arg + 2, "=");

		if (optopt == 0) {
			is_long = 1;
		} else {
			for (const struct option *o = longopts; o && o->name; o++)
				if (o->val == optopt && strncmp(o->name, arg + 2, n) == 0)
					is_long = 1;
		}
		if (is_long)
			snprintf(name, sizeof name, "--%.*s", (int)(n > 60 ? 60 : n), arg + 2);
	}
	if (!is_long) {
		if (isprint((unsigned char)optopt))
			snprintf(name, sizeof name, "-%c", optopt);
		else
			snprintf(name, sizeof name, "%.60s", arg ? arg : "?");
	}
	if (c == ':')
		return cli_usage_error(cmd, "option '%s' needs a value", name);
	if (is_long && optopt != 0 && strchr(arg, '='))
		return cli_usage_error(cmd, "option '%s' takes no value", name);
	return cli_usage_error(cmd, "unknown option '%s'", name);
}

int cli_other_option(const char *cmd, int c, char **argv, const struct option *longopts, const char *usage)
{
	if (c == 'h') {
		fputs(usage, stdout);
		return CLI_EXIT_OK;
	}
	return cli_getopt_error(cmd, c, argv, longopts);
}

int cli_no_operands(const char *cmd, int argc, char **argv)
{
	if (optind < argc)
		return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
	return 0;
}

int cli_parse_precision(const char *cmd, const char *val, int *out)
{
	if (strcmp(val, "f32") == 0)
		*out = FC_PREC_F32;
	else if (strcmp(val, "bf16") == 0)
		*out = FC_PREC_BF16;
	else if (strcmp(val, "int8") == 0)
		*out = FC_PREC_INT8;
	else
		return cli_usage_error(cmd, "bad value '%s' for --precision: f32, bf16 or int8", val);
	return 0;
}

int cli_parse_u64(const char *cmd, const char *opt, const char *val, uint64_t min, uint64_t max,
		 uint64_t *out)
{
	char *end;
	unsigned long long v;

	/* strtoull would quietly accept " 12", "+12" and "-1" (as 2^64-1).
	 * A negative integer is out of range, worded as 0 is when min > 0. */
	if (val[0] == '-' && isdigit((unsigned char)val[1]) && val[1 + strspn(val + 1, "0123456789")] == '\0')
		return cli_usage_error(cmd, "bad value '%s' for %s: must be from %llu to %llu", val, opt,
				      (unsigned long long)min, (unsigned long long)max);
	if (!isdigit((unsigned char)val[0]))
		return cli_usage_error(cmd, "bad value '%s' for %s: expected a non-negative integer",
				      val, opt);
	errno = 0;
	v = strtoull(val, &end, 10);
	if (*end != '\0')
		return cli_usage_error(cmd, "bad value '%s' for %s: expected a non-negative integer",
				      val, opt);
	if (errno == ERANGE || v < min || v > max)
		return cli_usage_error(cmd, "bad value '%s' for %s: must be from %llu to %llu", val,
				      opt, (unsigned long long)min, (unsigned long long)max);
	*out = v;
	return 0;
}

const char *cli_store_arg(const char *opt)
{
	const char *env;

	if (opt)
		return opt;
	env = getenv("FEATCACHE_STORE");
	return env && env[0] ? env : NULL;
}

int cli_need_store(const char *cmd, const char *opt, const char **path)
{
	const char *p = cli_store_arg(opt);

	if (!p)
		return cli_usage_error(cmd, "no store given: use --store DIR or set FEATCACHE_STORE");
	if (!p[0])
		return cli_usage_error(cmd, "bad value '' for --store: empty path");
	*path = p;
	return 0;
}

/* ---- the store ---- */

static const char *store_reason(const fc_store *s, int err)
{
	const char *m = s ? fc_store_errmsg(s) : NULL;

	return m && m[0] ? m : fc_strerror(err);
}

int cli_open_store(fc_store **out, const char *path, int readonly)
{
	return cli_open_store_mode(out, path, readonly, 0);
}

int cli_open_store_mode(fc_store **out, const char *path, int readonly, int create)
{
	return cli_open_store_writer(out, path, readonly, create, NULL, 0);
}

int cli_open_store_writer(fc_store **out, const char *path, int readonly, int create, const char *writer,
			  int wait)
{
	fc_store_opts opts;
	fc_store *s = NULL;
	int rc;

	memset(&opts, 0, sizeof opts);
	opts.readonly = readonly;
	opts.create = create;
	opts.writer = writer;
	opts.wait = wait;
	opts.logger = cli_logger();
	rc = fc_store_open(&s, path, &opts);
	if (rc < 0) {
		const char *why = store_reason(s, rc);
		char quoted[4200];

		/* Some of the store's messages already name the path ("'x' is
		 * not a featcache store"); saying it twice helps nobody. */
		snprintf(quoted, sizeof quoted, "'%s'", path);
		if (strstr(why, quoted))
			cli_err("%s", why);
		else
			cli_err("cannot open store '%s': %s", path, why);
		fc_store_free(s);
		*out = NULL;
		return CLI_EXIT_FAIL;
	}
	*out = s;
	return 0;
}

int cli_store_fail(fc_store *s, int err, const char *what)
{
	const char *path = fc_store_path(s);

	/* Damage met on the way (a chunk that does not decode, an index entry
	 * that points nowhere): repair drops it and extract redoes it. */
	if (err == FC_ERR_CORRUPT)
		return cli_fail("cannot %s store '%s': %s; run 'featcache verify --store %s --repair'", what, path,
				store_reason(s, err), path);
	return cli_fail("cannot %s store '%s': %s", what, path, store_reason(s, err));
}

int cli_close_stdout(int status)
{
	int bad = ferror(stdout);
	int e = 0;

	if (fflush(stdout) != 0) {
		bad = 1;
		e = errno;
	}
	/* fsync is not ours to do, but a pipe or file can still refuse the
	 * last write at close. */
	if (close(dup(STDOUT_FILENO)) != 0 && errno != EBADF) {
		bad = 1;
		e = errno;
	}
	if (!bad)
		return status;
	if (e)
		cli_err("cannot write standard output: %s", cli_errno_str(e));
	else
		cli_err("cannot write standard output");
	return CLI_EXIT_FAIL;
}

char *cli_human_bytes(char *buf, size_t cap, uint64_t n)
{
	static const char *const unit[] = { "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
	double v = (double)n;
	int u = -1;

	if (n < 1024) {
		snprintf(buf, cap, "%llu B", (unsigned long long)n);
		return buf;
	}
	while (v >= 1024.0 && u < 5) {
		v /= 1024.0;
		u++;
	}
	snprintf(buf, cap, v < 10 ? "%.2f %s" : v < 100 ? "%.1f %s" : "%.0f %s", v, unit[u]);
	return buf;
}

/* ---- interrupts ---- */

static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
	(void)sig;
	interrupted = 1;
}

void cli_catch_interrupt(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_interrupt;
	sigemptyset(&sa.sa_mask);
	/* The handler runs once; the next signal has its default action, so
	 * a second Ctrl-C stops a run that does not reach a safe point. */
	sa.sa_flags = SA_RESETHAND;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

int cli_interrupted(void)
{
	return interrupted != 0;
}

/* ---- logger and progress ---- */

#define PLAIN_EVERY 5.0   /* seconds between lines when stderr is not a terminal */
#define TTY_EVERY 0.1     /* seconds between redraws on a terminal */

static struct {
	pthread_mutex_t mu;
	int flags;
	int tty; /* -1 until first looked at */
	char what[64];
	double start, last_out;
	uint64_t last_done;
	int open;     /* a bar is on the terminal's current line */
	int printed;  /* plain mode: a line was printed for this `what` */
	int finished; /* the final state of this `what` was shown */
} lg = { PTHREAD_MUTEX_INITIALIZER, 0, -1, "", 0, 0, 0, 0, 0, 0 };

static double now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int stderr_is_tty(void)
{
	if (lg.tty < 0) {
		const char *term = getenv("TERM");

		lg.tty = isatty(STDERR_FILENO) && !(term && strcmp(term, "dumb") == 0);
	}
	return lg.tty;
}

static int term_width(void)
{
	struct winsize ws;

	if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20)
		return ws.ws_col;
	return 80;
}

static void fmt_rate(char *buf, size_t cap, double r)
{
	if (r >= 1e6)
		snprintf(buf, cap, "%.1fM/s", r / 1e6);
	else if (r >= 1e4)
		snprintf(buf, cap, "%.1fk/s", r / 1e3);
	else if (r >= 100)
		snprintf(buf, cap, "%.0f/s", r);
	else
		snprintf(buf, cap, "%.1f/s", r);
}

static void fmt_duration(char *buf, size_t cap, double sec)
{
	unsigned long long s = sec < 0 ? 0 : (unsigned long long)(sec + 0.5);

	if (s >= 3600)
		snprintf(buf, cap, "%llu:%02llu:%02llu", s / 3600, s / 60 % 60, s % 60);
	else
		snprintf(buf, cap, "%llu:%02llu", s / 60, s % 60);
}

/* The figures after the name: "45% 1234/5000 312/s ETA 0:12". */
static void fmt_figures(char *buf, size_t cap, uint64_t done, uint64_t total, double elapsed,
			int finished)
{
	char rate[32], dur[32];
	double r = elapsed > 0 ? (double)done / elapsed : 0;
	int n;

	fmt_rate(rate, sizeof rate, r);
	if (total)
		n = snprintf(buf, cap, "%3.0f%% %llu/%llu %s", 100.0 * (double)done / (double)total,
			     (unsigned long long)done, (unsigned long long)total, rate);
	else
		n = snprintf(buf, cap, "%llu %s", (unsigned long long)done, rate);
	if (n < 0 || (size_t)n >= cap)
		return;
	if (finished) {
		fmt_duration(dur, sizeof dur, elapsed);
		snprintf(buf + n, cap - (size_t)n, " in %s", dur);
	} else if (total && r > 0) {
		fmt_duration(dur, sizeof dur, (double)(total - done) / r);
		snprintf(buf + n, cap - (size_t)n, " ETA %s", dur);
	}
}

static void draw_bar(uint64_t done, uint64_t total, double t, int finished)
{
	char fig[128], line[512];
	int width = term_width() - 1; /* the last column would wrap on some terminals */
	int name_w = (int)strlen(lg.what);
	int bar_w, n;

	int fig_w;

	fmt_figures(fig, sizeof fig, done, total, t - lg.start, finished);
	/* Room for the widest figures this total can show ("100% N/N 999.9k/s
	 * ETA 9:59:59"), so the bar keeps its length while the rate and ETA
	 * change width. */
	fig_w = snprintf(NULL, 0, "100%% %llu/%llu ", (unsigned long long)total,
			 (unsigned long long)total) + 20;
	if (fig_w < (int)strlen(fig))
		fig_w = (int)strlen(fig);
	if (width > (int)sizeof line - 1)
		width = (int)sizeof line - 1;
	if (name_w > width / 3)
		name_w = width / 3;
	/* "name [####    ] figures" */
	bar_w = width - name_w - fig_w - 4;
	if (total && bar_w >= 10) {
		int fill = (int)((double)bar_w * (double)(done > total ? total : done) / (double)total);

		n = snprintf(line, sizeof line, "%.*s [", name_w, lg.what);
		for (int i = 0; i < bar_w && n < (int)sizeof line - 1; i++)
			line[n++] = i < fill ? '#' : ' ';
		snprintf(line + n, sizeof line - (size_t)n, "] %s", fig);
	} else {
		snprintf(line, sizeof line, "%.*s %s", name_w, lg.what, fig);
	}
	line[width] = '\0';
	fprintf(stderr, "\r%s\033[K", line);
	if (finished)
		fputc('\n', stderr);
	fflush(stderr);
	lg.open = !finished;
}

static void plain_line(uint64_t done, uint64_t total, double t, int finished)
{
	char fig[128];

	fmt_figures(fig, sizeof fig, done, total, t - lg.start, finished);
	fprintf(stderr, "featcache: %s: %s\n", lg.what, fig);
	fflush(stderr);
	lg.printed = 1;
}

static void end_open_line(void)
{
	if (lg.open) {
		fputc('\n', stderr);
		fflush(stderr);
		lg.open = 0;
	}
}

static int progress_cb(void *ctx, const char *what, uint64_t done, uint64_t total)
{
	double t;
	int finished;

	(void)ctx;
	pthread_mutex_lock(&lg.mu);
	if (lg.flags & CLI_QUIET)
		goto out;
	if (!what || !what[0])
		what = "working";
	t = now_sec();
	if (strncmp(what, lg.what, sizeof lg.what - 1) != 0 || done < lg.last_done) {
		/* A new piece of work: a fresh line and a fresh clock. */
		end_open_line();
		snprintf(lg.what, sizeof lg.what, "%s", what);
		lg.start = t;
		lg.last_out = stderr_is_tty() ? 0 : t;
		lg.printed = 0;
		lg.finished = 0;
	}
	lg.last_done = done;
	finished = total && done >= total;
	if (lg.finished)
		goto out;
	if (stderr_is_tty()) {
		if (finished || t - lg.last_out >= TTY_EVERY) {
			draw_bar(done, total, t, finished);
			lg.last_out = t;
		}
	} else if (finished) {
		/* Short work stays silent; long work gets its closing line. */
		if (lg.printed)
			plain_line(done, total, t, 1);
	} else if (t - lg.last_out >= PLAIN_EVERY) {
		plain_line(done, total, t, 0);
		lg.last_out = t;
	}
	lg.finished = finished;
out:
	pthread_mutex_unlock(&lg.mu);
	return cli_interrupted();
}

static void log_cb(void *ctx, int level, const char *msg)
{
	(void)ctx;
	pthread_mutex_lock(&lg.mu);
	if (level < FC_LOG_INFO && !(lg.flags & CLI_VERBOSE))
		goto out;
	if (level < FC_LOG_WARN && (lg.flags & CLI_QUIET))
		goto out;
	if (lg.open) {
		/* Wipe the bar, print, and let the next progress call redraw it. */
		fputs("\r\033[K", stderr);
		lg.open = 0;
		lg.last_out = 0;
	}
	fprintf(stderr, "featcache: %s%s\n",
		level >= FC_LOG_WARN && level < FC_LOG_ERROR ? "warning: "
		: level < FC_LOG_INFO			     ? "debug: "
							     : "",
		msg ? msg : "");
	fflush(stderr);
out:
	pthread_mutex_unlock(&lg.mu);
}

static const fc_logger the_logger = { log_cb, progress_cb, NULL };

const fc_logger *cli_logger(void)
{
	return &the_logger;
}

void cli_logger_flags(int flags)
{
	pthread_mutex_lock(&lg.mu);
	lg.flags = flags;
	pthread_mutex_unlock(&lg.mu);
}

void cli_progress_end(void)
{
	pthread_mutex_lock(&lg.mu);
	end_open_line();
	pthread_mutex_unlock(&lg.mu);
}
