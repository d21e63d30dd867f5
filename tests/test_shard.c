/*
 * test_shard.c - many workers, one dataset: --shard parsing, the launchers'
 * variables (set here with setenv, the way Slurm, Open MPI and MPICH set
 * them), work units (stable, balanced, a partition under any worker count),
 * dataset selection, and the claims directory on a real temp dir (O_EXCL
 * claims, done markers, a dead owner's claim taken over, a live one's
 * left, a plan for another split refused). Plus the store's writer lock.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "featcache/shard.h"
#include "featcache/store.h"
#include "tests/testlib.h"

static char *tmproot;
static char err[FC_ERRLEN];

static void test_parse(void **state)
{
	(void)state;
	fc_shard sh;
	static const char *const bad[] = { "", "3", "3/3", "-1/2", "1/0", "a/2", "1/b", "1/2/3", " 1/2", "1/65537" };

	assert_int_equal(fc_shard_parse(&sh, "2/5", err, sizeof err), 0);
	assert_int_equal(sh.rank, 2);
	assert_int_equal(sh.size, 5);
	assert_int_equal(fc_shard_parse(&sh, "0/1", err, sizeof err), 0);
	assert_int_equal(fc_shard_parse(&sh, "none", err, sizeof err), 0);
	assert_int_equal(sh.size, 0);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		err[0] = '\0';
		if (fc_shard_parse(&sh, bad[i], err, sizeof err) != FC_ERR_INVALID)
			fail_msg("'%s' parsed", bad[i]);
		assert_true(err[0] != '\0');
	}
}

static const char *const launcher_vars[] = {
	"SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX", "SLURM_ARRAY_TASK_COUNT",
	"SLURM_ARRAY_TASK_STEP", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_RANK",
	"OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE", NULL,
};

/* A clean environment with NAME=VALUE pairs up to a NULL. */
static void env(const char *name, ...)
{
	va_list ap;

	for (int i = 0; launcher_vars[i]; i++)
		unsetenv(launcher_vars[i]);
	va_start(ap, name);
	for (const char *n = name; n; n = va_arg(ap, const char *))
		setenv(n, va_arg(ap, const char *), 1);
	va_end(ap);
}

static void want_env(uint32_t rank, uint32_t size, const char *source)
{
	fc_shard sh;

	assert_int_equal(fc_shard_from_env(&sh, err, sizeof err), 0);
	assert_int_equal(sh.rank, rank);
	assert_int_equal(sh.size, size);
	if (source)
		assert_string_equal(sh.source, source);
}

static void want_env_error(const char *fragment)
{
	fc_shard sh;

	assert_int_equal(fc_shard_from_env(&sh, err, sizeof err), FC_ERR_INVALID);
	if (!strstr(err, fragment))
		fail_msg("'%s' lacks '%s'", err, fragment);
}

static void test_launchers(void **state)
{
	(void)state;
	env(NULL);
	want_env(0, 0, NULL);
	env("OMPI_COMM_WORLD_RANK", "3", "OMPI_COMM_WORLD_SIZE", "4", NULL);
	want_env(3, 4, "OMPI_COMM_WORLD_RANK");
	env("PMI_RANK", "0", "PMI_SIZE", "2", NULL);
	want_env(0, 2, "PMI_RANK");
	env("SLURM_ARRAY_TASK_ID", "12", "SLURM_ARRAY_TASK_MIN", "10", "SLURM_ARRAY_TASK_MAX", "13", NULL);
	want_env(2, 4, "SLURM_ARRAY_TASK_ID");
	env("SLURM_ARRAY_TASK_ID", "1", "SLURM_ARRAY_TASK_MIN", "0", "SLURM_ARRAY_TASK_COUNT", "3",
	    "SLURM_ARRAY_TASK_STEP", "1", NULL);
	want_env(1, 3, "SLURM_ARRAY_TASK_ID");
	/* srun inside an array task: task-major numbering */
	env("SLURM_ARRAY_TASK_ID", "2", "SLURM_ARRAY_TASK_MIN", "0", "SLURM_ARRAY_TASK_COUNT", "3", "SLURM_PROCID",
	    "1", "SLURM_STEP_NUM_TASKS", "4", NULL);
	want_env(9, 12, NULL);
	env("SLURM_PROCID", "2", "SLURM_STEP_NUM_TASKS", "3", "SLURM_NTASKS", "3", NULL);
	want_env(2, 3, "SLURM_PROCID");
	/* a batch script: Slurm sets these, but it is one process */
	env("SLURM_PROCID", "0", "SLURM_NTASKS", "4", NULL);
	want_env(0, 0, NULL);
	/* Slurm before MPI: srun launching an MPI program sets both */
	env("SLURM_PROCID", "1", "SLURM_STEP_NUM_TASKS", "2", "PMI_RANK", "1", "PMI_SIZE", "2", NULL);
	want_env(1, 2, "SLURM_PROCID");

	env("OMPI_COMM_WORLD_RANK", "4", "OMPI_COMM_WORLD_SIZE", "4", NULL);
	want_env_error("is not below");
	env("OMPI_COMM_WORLD_RANK", "x", "OMPI_COMM_WORLD_SIZE", "4", NULL);
	want_env_error("OMPI_COMM_WORLD_RANK='x'");
	env("PMI_RANK", "1", NULL);
	want_env_error("PMI_SIZE is not");
	env("SLURM_ARRAY_TASK_ID", "4", "SLURM_ARRAY_TASK_MIN", "0", "SLURM_ARRAY_TASK_MAX", "12",
	    "SLURM_ARRAY_TASK_STEP", "4", NULL);
	want_env_error("SLURM_ARRAY_TASK_STEP=4");
	env("SLURM_ARRAY_TASK_ID", "7", "SLURM_ARRAY_TASK_MIN", "0", "SLURM_ARRAY_TASK_COUNT", "3", NULL);
	want_env_error("not in the array");
	env("SLURM_ARRAY_TASK_ID", "1", NULL);
	want_env_error("SLURM_ARRAY_TASK_MIN");
	env(NULL);
}

/* Units are stable, spread evenly, and static shares partition the keys. */
static void test_units(void **state)
{
	(void)state;
	enum { N = 20000 };
	char key[64];
	uint32_t count[256] = { 0 };

	assert_int_equal(fc_shard_units(1), 64);
	assert_int_equal(fc_shard_units(0), 64);
	assert_int_equal(fc_shard_units(100), 6400);
	assert_int_equal(fc_shard_units(FC_SHARD_MAX), 64u * FC_SHARD_MAX);
	assert_int_equal(fc_work_unit("train/cat/1.png", 64), fc_work_unit("train/cat/1.png", 64));
	for (int i = 0; i < N; i++) {
		snprintf(key, sizeof key, "train/c%d/%d.jpg", i % 7, i);
		count[fc_work_unit(key, 256)]++;
	}
	/* 78 per unit expected; a binomial spread stays well inside 40..120 */
	for (int u = 0; u < 256; u++)
		if (count[u] < 40 || count[u] > 120)
			fail_msg("unit %d holds %u of %d keys", u, count[u], N);
	/* Four workers of 256 units: shares within 10 % of a quarter. */
	for (uint32_t w = 0; w < 4; w++) {
		uint32_t n = 0;
		for (uint32_t u = w; u < 256; u += 4)
			n += count[u];
		assert_true(n > N / 4 * 0.9 && n < N / 4 * 1.1);
	}
}

static void test_select(void **state)
{
	(void)state;
	fc_entry e[40];
	char keys[40][24];
	fc_dataset ds = { .entries = e, .n = 40 }, part[3];
	uint8_t mask[3][2] = { { 0 } };
	size_t total = 0;

	for (int i = 0; i < 40; i++) {
		snprintf(keys[i], sizeof keys[i], "k%02d.png", i);
		e[i] = (fc_entry){ .key = keys[i], .path = keys[i], .split = FC_SPLIT_NONE };
	}
	for (uint32_t u = 0; u < 12; u++)
		mask[u % 3][u / 8] |= (uint8_t)(1u << (u % 8));
	for (int w = 0; w < 3; w++) {
		assert_int_equal(fc_dataset_select(&part[w], &ds, mask[w], 12), 0);
		for (size_t i = 0; i < part[w].n; i++) {
			assert_int_equal(fc_work_unit(part[w].entries[i].key, 12) % 3, (uint32_t)w);
			if (i)
				assert_true(strcmp(part[w].entries[i - 1].key, part[w].entries[i].key) < 0);
		}
		total += part[w].n;
		fc_dataset_free(&part[w]); /* borrows the strings: frees only its list */
	}
	assert_int_equal(total, 40);
}

static char *claims_dir(const char *name)
{
	char *p = malloc(1024);
	assert_non_null(p);
	snprintf(p, 1024, "%s/%s", tmproot, name);
	return p;
}

static int exists(const char *dir, const char *name)
{
	char p[1200];
	snprintf(p, sizeof p, "%s/%s", dir, name);
	return access(p, F_OK) == 0;
}

static void put(const char *dir, const char *name, const char *text)
{
	char p[1200];
	FILE *f;
	snprintf(p, sizeof p, "%s/%s", dir, name);
	assert_non_null(f = fopen(p, "w"));
	fputs(text, f);
	fclose(f);
}

static void test_claims(void **state)
{
	(void)state;
	char *dir = claims_dir("claims");
	fc_claims *a = NULL, *b = NULL;
	uint32_t u, seen[4] = { 0 };
	int took;

	assert_int_equal(fc_claims_open(&a, dir, 4, 60, err, sizeof err), 0);
	assert_int_equal(fc_claims_open(&b, dir, 4, 60, err, sizeof err), 0);
	/* Two workers claim in turn: each unit goes to exactly one. */
	for (int round = 0; round < 2; round++) {
		assert_int_equal(fc_claims_next(a, 0, &u, &took), 0);
		assert_int_equal(took, 0);
		seen[u]++;
		assert_int_equal(fc_claims_next(a, 0, &u, &took), FC_ERR_INVALID); /* one at a time */
		uint32_t v;
		assert_int_equal(fc_claims_next(b, 0, &v, &took), 0);
		assert_int_not_equal(u, v);
		seen[v]++;
		assert_int_equal(fc_claims_done(a, "a"), 0);
		assert_int_equal(fc_claims_done(b, "b"), 0);
	}
	for (int i = 0; i < 4; i++)
		assert_int_equal(seen[i], 1);
	assert_int_equal(fc_claims_count_done(a), 4);
	assert_int_equal(fc_claims_next(a, 0, &u, &took), FC_ERR_NOT_FOUND);
	fc_claims_free(a);
	fc_claims_free(b);
	/* Another unit count is another split: refused. */
	assert_int_equal(fc_claims_open(&a, dir, 8, 60, err, sizeof err), FC_ERR_INVALID);
	assert_non_null(strstr(err, "another split"));
	assert_null(a);
	free(dir);
}

/* A claim of a dead process on this host is taken at once; one of another
 * host is taken only when its heartbeat is older than the timeout. */
static void test_stale_claims(void **state)
{
	(void)state;
	char *dir = claims_dir("stale");
	char host[256] = "", text[512];
	fc_claims *c = NULL;
	uint32_t u;
	int took, status;
	pid_t dead = fork();

	if (dead == 0)
		_exit(0);
	assert_true(dead > 0);
	waitpid(dead, &status, 0);
	gethostname(host, sizeof host - 1);
	assert_int_equal(mkdir(dir, 0777), 0);
	put(dir, "plan", "units 3\n");
	snprintf(text, sizeof text, "host %s pid %ld since 0\n", host, (long)dead);
	put(dir, "u00000000.claim", text);
	snprintf(text, sizeof text, "host %s pid %ld since 0\n", host, (long)getppid());
	put(dir, "u00000001.claim", text); /* alive, fresh */
	put(dir, "u00000002.claim", "host elsewhere pid 1 since 0\n");

	assert_int_equal(fc_claims_open(&c, dir, 3, 0.3, err, sizeof err), 0);
	assert_int_equal(fc_claims_next(c, 0, &u, &took), 0);
	assert_int_equal(u, 0);
	assert_int_equal(took, 1);
	assert_int_equal(fc_claims_done(c, NULL), 0);
	assert_true(exists(dir, "u00000000.done") && !exists(dir, "u00000000.claim"));
	/* units 1 and 2 are fresh claims: nothing to take yet */
	assert_int_equal(fc_claims_next(c, 0, &u, &took), FC_ERR_NOT_FOUND);
	usleep(400000); /* past the 0.3 s timeout for unit 2 */
	put(dir, "u00000001.claim", text); /* unit 1's owner keeps beating */
	assert_int_equal(fc_claims_next(c, 0, &u, &took), 0);
	assert_int_equal(u, 2);
	assert_int_equal(took, 1);
	/* our own heartbeat keeps unit 2 fresh while held */
	usleep(500000);
	{
		fc_claims *other = NULL;
		assert_int_equal(fc_claims_open(&other, dir, 3, 0.3, err, sizeof err), 0);
		put(dir, "u00000001.claim", text);
		assert_int_equal(fc_claims_next(other, 0, &u, &took), FC_ERR_NOT_FOUND);
		fc_claims_free(other);
	}
	assert_int_equal(fc_claims_release(c), 0);
	assert_false(exists(dir, "u00000002.claim"));
	fc_claims_free(c);
	free(dir);
}

/* One writer per store: a second is refused naming the first; a reader is
 * not; the lock goes with the handle. */
static void test_writer_lock(void **state)
{
	(void)state;
	char path[1024];
	fc_store *a = NULL, *b = NULL, *r = NULL;
	fc_store_opts w = { .create = 1, .writer = "extract" }, ro = { .readonly = 1 };

	snprintf(path, sizeof path, "%s/store", tmproot);
	assert_int_equal(fc_store_open(&a, path, &w), 0);
	w.writer = "gc";
	assert_int_equal(fc_store_open(&b, path, &w), FC_ERR_BUSY);
	assert_non_null(strstr(fc_store_errmsg(b), "another process writes to it (extract, pid "));
	assert_non_null(strstr(fc_store_errmsg(b), "--wait"));
	fc_store_free(b);
	assert_int_equal(fc_store_open(&r, path, &ro), 0);
	fc_store_free(r);
	fc_store_free(a);
	assert_int_equal(fc_store_open(&b, path, &w), 0);
	fc_store_free(b);
	/* A store dir holding only a lock file is still a place to create one. */
	snprintf(path, sizeof path, "%s/lockonly", tmproot);
	assert_int_equal(mkdir(path, 0777), 0);
	put(path, "writer.lock", "");
	w.writer = "extract";
	assert_int_equal(fc_store_open(&a, path, &w), 0);
	fc_store_free(a);
}

int main(void)
{
	tmproot = testlib_tmpdir("test-shard");
	printf("# dir %s\n", tmproot);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),  cmocka_unit_test(test_launchers),     cmocka_unit_test(test_units),
		cmocka_unit_test(test_select), cmocka_unit_test(test_claims),	     cmocka_unit_test(test_stale_claims),
		cmocka_unit_test(test_writer_lock),
	};
	int failed = cmocka_run_group_tests(tests, NULL, NULL);
	if (!failed && testlib_rmtree(tmproot) != 0)
		failed = 1;
	free(tmproot);
	return failed;
}
