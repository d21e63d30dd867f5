/*
 * bench/benchlib.h - what the benchmark programs share: the monotonic clock
 * they time with, a shell step that names its own failure, a child process
 * timed (wall and CPU), where the real photos come from, and the options of
 * the benchmarks that use them.
 *
 * Header-only on purpose: every bench/<name>.c is built into a program of
 * its own and bench/run.sh runs each one, so a bench/benchlib.c would be
 * taken for a benchmark. Not here: anything one benchmark needs alone, and
 * nothing of the tests (tests/testlib.h is theirs).
 */
#ifndef FC_BENCHLIB_H
#define FC_BENCHLIB_H

#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Debian's mate-backgrounds nature wallpapers: the real JPEGs the photo
 * benchmarks cut their images from (tests/tool_mkimage --crops). */
#define BENCH_PHOTO_SRC "/usr/share/backgrounds/mate/nature"

/* bench_now - seconds on the monotonic clock (only differences mean
 * anything). */
static inline double bench_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* bench_sh - system(cmd); when it fails, "prog: 'cmd' failed (status)" on
 * stderr. Returns system's status: 0 on success. */
static inline int bench_sh(const char *prog, const char *cmd)
{
	int rc = system(cmd);

	if (rc != 0)
		fprintf(stderr, "%s: '%s' failed (%d)\n", prog, cmd, rc);
	return rc;
}

/* bench_timed_process - run argv (argv[0] found on PATH when it has no
 * '/'), its standard output into the file out (NULL: this one's); its wall
 * and CPU (user + sys) seconds. Returns 0 if it exited 0, else -1. */
static inline int bench_timed_process(char *const *argv, const char *out, double *wall, double *cpu)
{
	double t0 = bench_now();
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		int fd = out ? open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644) : -1;
		if (out && (fd < 0 || dup2(fd, 1) < 0))
			_exit(126);
		execvp(argv[0], argv);
		_exit(127);
	}
	int status = 0;
	struct rusage ru;
	if (pid < 0 || wait4(pid, &status, 0, &ru) != pid)
		return -1;
	*wall = bench_now() - t0;
	*cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
	       (double)ru.ru_stime.tv_usec * 1e-6;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* The options the photo benchmarks share: --model FILE (the backbone),
 * --photos DIR (where the photos are made and kept), --n N (how many).
 * BENCH_PHOTO_OPTIONS goes in a getopt_long table; bench_photo_opt takes
 * what getopt_long returned and optarg: 1 if it was one of these (now in
 * *o), else 0. */
typedef struct bench_photo_opts {
	const char *model, *photos;
	int n;
} bench_photo_opts;

#define BENCH_PHOTO_OPTIONS                                                                    \
	{ "model", required_argument, NULL, 'm' }, { "photos", required_argument, NULL, 'p' }, \
	{ "n", required_argument, NULL, 'n' }

static inline int bench_photo_opt(bench_photo_opts *o, int c, const char *arg)
{
	switch (c) {
	case 'm': o->model = arg; return 1;
	case 'p': o->photos = arg; return 1;
	case 'n': o->n = atoi(arg); return 1;
	default: return 0;
	}
}

#endif /* FC_BENCHLIB_H */
