/*
 * shard.c - who this worker is, the dataset's work units, and the claims
 * directory through which workers take units (shard.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "featcache/shard.h"
#include "util/util.h"

/* Seeds the unit hash apart from fc_hash_split's (seed 0). */
#define UNIT_SEED 0x666361636865756eULL

/* ---- who am I ---- */

static int parse_u32(const char *s, uint32_t max, uint32_t *out)
{
	char *end;
	unsigned long long v;

	if (!s || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v > max)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

int fc_shard_parse(fc_shard *out, const char *spec, char *err, size_t errcap)
{
	char buf[64];
	char *slash;

	memset(out, 0, sizeof *out);
	if (strcmp(spec, "none") == 0) {
		snprintf(out->source, sizeof out->source, "--shard none");
		return 0;
	}
	if (strlen(spec) >= sizeof buf || !(slash = strchr(strcpy(buf, spec), '/')))
		return fci_errf(err, errcap, FC_ERR_INVALID, "'%s' is not I/N (worker I of N, from 0) or none", spec);
	*slash = '\0';
	if (parse_u32(slash + 1, FC_SHARD_MAX, &out->size) || out->size == 0)
		return fci_errf(err, errcap, FC_ERR_INVALID, "'%s': N must be a whole number from 1 to %d", spec,
				FC_SHARD_MAX);
	if (parse_u32(buf, out->size - 1, &out->rank))
		return fci_errf(err, errcap, FC_ERR_INVALID, "'%s': I must be a whole number from 0 to %u", spec,
				out->size - 1);
	snprintf(out->source, sizeof out->source, "--shard");
	return 0;
}

/* One variable as a number <= max; 1 when absent, 0 when read, an error
 * when set but bad. */
static int env_u32(const char *name, uint32_t max, uint32_t *out, char *err, size_t errcap)
{
	const char *v = getenv(name);

	if (!v)
		return 1;
	if (parse_u32(v, max, out))
		return fci_errf(err, errcap, FC_ERR_INVALID, "%s='%s' is not a whole number from 0 to %u", name, v,
				max);
	return 0;
}

/* A rank/size pair of variables: 1 when the rank is absent, 0 when both
 * read and consistent. */
static int env_pair(const char *rank, const char *size, uint32_t *r, uint32_t *n, char *err, size_t errcap)
{
	int rc = env_u32(rank, FC_SHARD_MAX - 1, r, err, errcap);

	if (rc)
		return rc;
	rc = env_u32(size, FC_SHARD_MAX, n, err, errcap);
	if (rc == 1)
		return fci_errf(err, errcap, FC_ERR_INVALID, "%s is set but %s is not", rank, size);
	if (rc)
		return rc;
	if (*r >= *n)
		return fci_errf(err, errcap, FC_ERR_INVALID, "%s=%u is not below %s=%u", rank, *r, size, *n);
	return 0;
}

/* A Slurm job array task: 1 when not in an array. */
static int env_array(uint32_t *r, uint32_t *n, char *err, size_t errcap)
{
	uint32_t id, lo, hi, count;
	int rc = env_u32("SLURM_ARRAY_TASK_ID", UINT32_MAX - 1, &id, err, errcap);
	const char *step = getenv("SLURM_ARRAY_TASK_STEP");

	if (rc)
		return rc;
	if (step && strcmp(step, "1") != 0)
		return fci_errf(err, errcap, FC_ERR_INVALID,
				"a Slurm array with a step (SLURM_ARRAY_TASK_STEP=%s) cannot number its workers: "
				"use --array=0-N, or pass --shard I/N",
				step);
	if ((rc = env_u32("SLURM_ARRAY_TASK_MIN", UINT32_MAX - 1, &lo, err, errcap)) == 1)
		return fci_errf(err, errcap, FC_ERR_INVALID, "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_MIN is not");
	if (rc)
		return rc;
	rc = env_u32("SLURM_ARRAY_TASK_COUNT", FC_SHARD_MAX, &count, err, errcap);
	if (rc == 1) {
		if ((rc = env_u32("SLURM_ARRAY_TASK_MAX", UINT32_MAX - 1, &hi, err, errcap)) == 1)
			return fci_errf(err, errcap, FC_ERR_INVALID,
					"SLURM_ARRAY_TASK_ID is set but neither SLURM_ARRAY_TASK_COUNT nor "
					"SLURM_ARRAY_TASK_MAX is");
		if (rc)
			return rc;
		if (hi < lo || hi - lo >= FC_SHARD_MAX)
			return fci_errf(err, errcap, FC_ERR_INVALID, "SLURM_ARRAY_TASK_MIN=%u and MAX=%u make no array", lo,
					hi);
		count = hi - lo + 1;
	} else if (rc) {
		return rc;
	}
	if (id < lo || id - lo >= count)
		return fci_errf(err, errcap, FC_ERR_INVALID,
				"SLURM_ARRAY_TASK_ID=%u is not in the array (MIN %u, %u tasks): an array with gaps "
				"cannot number its workers; pass --shard I/N",
				id, lo, count);
	*r = id - lo;
	*n = count;
	return 0;
}

int fc_shard_from_env(fc_shard *out, char *err, size_t errcap)
{
	uint32_t ar = 0, an = 0, sr = 0, sn = 0;
	int arr, step, rc;

	memset(out, 0, sizeof *out);
	if ((arr = env_array(&ar, &an, err, errcap)) < 0)
		return arr;
	/* Only a job step (srun) sets SLURM_STEP_NUM_TASKS; the batch script
	 * has SLURM_PROCID 0 and SLURM_NTASKS of the whole allocation. */
	step = 1;
	if (getenv("SLURM_STEP_NUM_TASKS") &&
	    (step = env_pair("SLURM_PROCID", "SLURM_STEP_NUM_TASKS", &sr, &sn, err, errcap)) < 0)
		return step;
	if (arr == 0 && step == 0) {
		if ((uint64_t)an * sn > FC_SHARD_MAX)
			return fci_errf(err, errcap, FC_ERR_INVALID, "%u array tasks of %u srun tasks each: more than %d workers",
					an, sn, FC_SHARD_MAX);
		out->rank = ar * sn + sr;
		out->size = an * sn;
		snprintf(out->source, sizeof out->source, "SLURM_ARRAY_TASK_ID and SLURM_PROCID");
		return 0;
	}
	if (arr == 0) {
		out->rank = ar;
		out->size = an;
		snprintf(out->source, sizeof out->source, "SLURM_ARRAY_TASK_ID");
		return 0;
	}
	if (step == 0) {
		out->rank = sr;
		out->size = sn;
		snprintf(out->source, sizeof out->source, "SLURM_PROCID");
		return 0;
	}
	rc = env_pair("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", &out->rank, &out->size, err, errcap);
	if (rc == 0) {
		snprintf(out->source, sizeof out->source, "OMPI_COMM_WORLD_RANK");
		return 0;
	}
	if (rc < 0)
		return rc;
	rc = env_pair("PMI_RANK", "PMI_SIZE", &out->rank, &out->size, err, errcap);
	if (rc == 0) {
		snprintf(out->source, sizeof out->source, "PMI_RANK");
		return 0;
	}
	if (rc < 0)
		return rc;
	out->rank = out->size = 0;
	return 0;
}

/* ---- work units ---- */

uint32_t fc_shard_units(uint32_t workers)
{
	uint64_t u = (uint64_t)(workers ? workers : 1) * FC_UNITS_PER_WORKER;
	return u > FC_UNITS_MAX ? FC_UNITS_MAX : (uint32_t)u;
}

uint32_t fc_work_unit(const char *key, uint32_t units)
{
	return units ? (uint32_t)(XXH3_64bits_withSeed(key, strlen(key), UNIT_SEED) % units) : 0;
}

uint32_t fc_dataset_unit(const fc_dataset *ds, const char *key, uint32_t units)
{
	if (!ds->n_shards)
		return fc_work_unit(key, units);
	long k = fc_dataset_shard_of(ds, key);
	if (k >= 0)
		return fc_work_unit(ds->shards[k].name, units);
	/* a shard no longer in the dataset: its name up to the last '/' */
	const char *slash = strrchr(key, '/');
	size_t n = slash ? (size_t)(slash - key) : strlen(key);
	return units ? (uint32_t)(XXH3_64bits_withSeed(key, n, UNIT_SEED) % units) : 0;
}

int fc_dataset_select(fc_dataset *dst, const fc_dataset *src, const uint8_t *units_mask, uint32_t nunits)
{
	size_t n = 0;
	uint32_t *remap = NULL;

	memset(dst, 0, sizeof *dst);
	dst->entries = malloc((src->n ? src->n : 1) * sizeof *dst->entries);
	if (src->n_shards) {
		/* Tar shards are units whole: a worker opens only its own. */
		dst->shards = malloc(src->n_shards * sizeof *dst->shards);
		remap = malloc(src->n_shards * sizeof *remap);
		if (!dst->shards || !remap) {
			free(remap);
			fc_dataset_free(dst);
			return FC_ERR_NOMEM;
		}
		for (size_t k = 0; k < src->n_shards; k++) {
			uint32_t u = fc_work_unit(src->shards[k].name, nunits);
			remap[k] = UINT32_MAX;
			if (units_mask[u / 8] & (1u << (u % 8))) {
				remap[k] = (uint32_t)dst->n_shards;
				dst->shards[dst->n_shards++] = src->shards[k];
			}
		}
		dst->root = src->root;
		dst->label_field = src->label_field;
	}
	if (!dst->entries) {
		free(remap);
		fc_dataset_free(dst);
		return FC_ERR_NOMEM;
	}
	for (size_t i = 0; i < src->n; i++) {
		const fc_entry *e = &src->entries[i];
		if (e->hash) {
			if (remap[e->shard] != UINT32_MAX) {
				dst->entries[n] = *e;
				dst->entries[n++].shard = remap[e->shard];
			}
			continue;
		}
		uint32_t u = fc_work_unit(e->key, nunits);
		if (units_mask[u / 8] & (1u << (u % 8)))
			dst->entries[n++] = *e;
	}
	free(remap);
	dst->n = n;
	dst->from_csv = src->from_csv;
	for (size_t k = 0; k < dst->n_shards; k++)
		dst->shards[k].first = SIZE_MAX;
	for (size_t i = n; i-- > 0;)
		if (dst->entries[i].hash)
			dst->shards[dst->entries[i].shard].first = i;
	return 0;
}

/* ---- claims ---- */

struct fc_claims {
	char *dir;
	uint32_t units;
	double stale;
	char host[256];
	pid_t pid;
	/* the held claim, and the heartbeat thread that touches it */
	pthread_t beat;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int beating, stop;
	int64_t held; /* unit, or -1 */
	char err[FC_ERRLEN];
};

#define CLAIM_FAIL(c, code, ...) fci_errf((c)->err, sizeof (c)->err, (code), __VA_ARGS__)

static void unit_path(char *dst, size_t cap, const fc_claims *c, uint32_t unit, const char *suffix)
{
	snprintf(dst, cap, "%s/u%08u.%s", c->dir, unit, suffix);
}

static void *heartbeat(void *arg)
{
	fc_claims *c = arg;
	char path[4200];
	double period = c->stale / 8 > 0.05 ? c->stale / 8 : 0.05;

	pthread_mutex_lock(&c->mu);
	while (!c->stop) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += (time_t)period;
		until.tv_nsec += (long)((period - (double)(time_t)period) * 1e9);
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&c->cv, &c->mu, &until);
		if (c->stop || c->held < 0)
			continue;
		unit_path(path, sizeof path, c, (uint32_t)c->held, "claim");
		utimensat(AT_FDCWD, path, NULL, 0); /* a failure shows as staleness to others */
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

/* Write `text` to a new file at path (O_EXCL): 0, 1 when it exists, or an
 * error. */
static int create_excl(fc_claims *c, const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0666);
	size_t len = strlen(text);

	if (fd < 0) {
		if (errno == EEXIST)
			return 1;
		return CLAIM_FAIL(c, FC_ERR_IO, "cannot create '%s': %s", path, strerror(errno));
	}
	if (write(fd, text, len) != (ssize_t)len || fsync(fd) != 0) {
		int e = errno;
		close(fd);
		unlink(path);
		return CLAIM_FAIL(c, FC_ERR_IO, "cannot write '%s': %s", path, strerror(e));
	}
	if (close(fd) != 0)
		return CLAIM_FAIL(c, FC_ERR_IO, "cannot write '%s': %s", path, strerror(errno));
	return 0;
}

static int read_small(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, cap - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = '\0';
	return 0;
}

int fc_claims_open(fc_claims **out, const char *dir, uint32_t units, double stale_seconds, char *err,
		   size_t errcap)
{
	fc_claims *c;
	char path[4200], text[64], have[64];
	int rc;

	*out = NULL;
	if (units == 0 || units > FC_UNITS_MAX || !(stale_seconds > 0))
		return fci_errf(err, errcap, FC_ERR_INVALID, "bad claims arguments");
	if (strlen(dir) > 4000)
		return fci_errf(err, errcap, FC_ERR_INVALID, "claims directory path is too long");
	if (mkdir(dir, 0777) != 0 && errno != EEXIST)
		return fci_errf(err, errcap, FC_ERR_IO, "cannot create claims directory '%s': %s", dir, strerror(errno));
	c = calloc(1, sizeof *c);
	if (!c || !(c->dir = strdup(dir))) {
		free(c);
		return fci_errf(err, errcap, FC_ERR_NOMEM, "out of memory");
	}
	c->units = units;
	c->stale = stale_seconds;
	c->pid = getpid();
	c->held = -1;
	if (gethostname(c->host, sizeof c->host - 1) != 0)
		snprintf(c->host, sizeof c->host, "unknown");
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);

	snprintf(path, sizeof path, "%s/plan", dir);
	snprintf(text, sizeof text, "units %u\n", units);
	rc = create_excl(c, path, text);
	if (rc < 0)
		goto fail;
	if (rc == 1) {
		/* Another worker wrote it; it may still be writing: retry briefly. */
		for (int tries = 0;; tries++) {
			if (read_small(path, have, sizeof have) == 0 && strchr(have, '\n'))
				break;
			if (tries == 50) {
				rc = CLAIM_FAIL(c, FC_ERR_CORRUPT, "'%s' cannot be read or is incomplete", path);
				goto fail;
			}
			usleep(100000);
		}
		if (strcmp(have, text) != 0) {
			have[strcspn(have, "\n")] = '\0';
			rc = CLAIM_FAIL(c, FC_ERR_INVALID,
					"claims directory '%s' was made for another split ('%s', this worker has %u units): "
					"all workers must use the same --units and worker count, or a fresh directory",
					dir, have, units);
			goto fail;
		}
	}
	if (pthread_create(&c->beat, NULL, heartbeat, c) != 0) {
		rc = CLAIM_FAIL(c, FC_ERR_INTERNAL, "cannot start the heartbeat thread");
		goto fail;
	}
	c->beating = 1;
	*out = c;
	return 0;
fail:
	fci_errf(err, errcap, rc, "%s", c->err);
	fc_claims_free(c);
	return rc;
}

static double now_wall(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Is the claim at path stale: its heartbeat too old, or its owner a
 * process of this host that is gone? */
static int claim_is_stale(const fc_claims *c, const char *path)
{
	struct stat st;
	char text[512], host[256];
	long pid;

	if (stat(path, &st) != 0)
		return 0; /* gone already: the next O_EXCL decides */
	if (now_wall() - ((double)st.st_mtim.tv_sec + (double)st.st_mtim.tv_nsec * 1e-9) > c->stale)
		return 1;
	if (read_small(path, text, sizeof text) != 0 || sscanf(text, "host %255s pid %ld", host, &pid) != 2)
		return 0;
	return strcmp(host, c->host) == 0 && pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

/* Take a stale claim over: move it aside (one rename wins), then claim
 * afresh. 0 when taken, 1 when someone else was quicker, or an error. */
static int take_over(fc_claims *c, const char *path, const char *text)
{
	char aside[4600];
	struct stat st;

	snprintf(aside, sizeof aside, "%s.stale.%s.%ld", path, c->host, (long)c->pid);
	if (rename(path, aside) != 0)
		return errno == ENOENT ? 1 : CLAIM_FAIL(c, FC_ERR_IO, "cannot move '%s' aside: %s", path, strerror(errno));
	/* Between our look and the rename another worker may have taken it over
	 * and made a fresh claim: then we moved that one; put it back. */
	if (stat(aside, &st) == 0 && !claim_is_stale(c, aside)) {
		if (link(aside, path) == 0 || errno == EEXIST)
			unlink(aside);
		return 1;
	}
	unlink(aside);
	return create_excl(c, path, text);
}

int fc_claims_next(fc_claims *c, uint32_t start, uint32_t *unit, int *took_over)
{
	char path[4200], text[512];

	if (c->held >= 0)
		return CLAIM_FAIL(c, FC_ERR_INVALID, "a unit is already held");
	snprintf(text, sizeof text, "host %s pid %ld since %.0f\n", c->host, (long)c->pid, now_wall());
	for (uint32_t k = 0; k < c->units; k++) {
		uint32_t u = (uint32_t)(((uint64_t)start + k) % c->units);
		int rc;

		unit_path(path, sizeof path, c, u, "done");
		if (access(path, F_OK) == 0)
			continue;
		unit_path(path, sizeof path, c, u, "claim");
		*took_over = 0;
		rc = create_excl(c, path, text);
		if (rc == 1 && claim_is_stale(c, path)) {
			rc = take_over(c, path, text);
			*took_over = rc == 0;
		}
		if (rc < 0)
			return rc;
		if (rc == 1)
			continue;
		/* Finished by its last owner between our two looks? */
		unit_path(path, sizeof path, c, u, "done");
		if (access(path, F_OK) == 0) {
			unit_path(path, sizeof path, c, u, "claim");
			unlink(path);
			continue;
		}
		pthread_mutex_lock(&c->mu);
		c->held = u;
		pthread_mutex_unlock(&c->mu);
		*unit = u;
		return 0;
	}
	return FC_ERR_NOT_FOUND;
}

static int drop_held(fc_claims *c)
{
	char path[4200];
	int64_t u;

	pthread_mutex_lock(&c->mu);
	u = c->held;
	c->held = -1;
	pthread_mutex_unlock(&c->mu);
	if (u < 0)
		return CLAIM_FAIL(c, FC_ERR_INVALID, "no unit is held");
	unit_path(path, sizeof path, c, (uint32_t)u, "claim");
	if (unlink(path) != 0 && errno != ENOENT)
		return CLAIM_FAIL(c, FC_ERR_IO, "cannot remove '%s': %s", path, strerror(errno));
	return 0;
}

int fc_claims_done(fc_claims *c, const char *note)
{
	char path[4200], text[1024];
	int rc;

	if (c->held < 0)
		return CLAIM_FAIL(c, FC_ERR_INVALID, "no unit is held");
	unit_path(path, sizeof path, c, (uint32_t)c->held, "done");
	snprintf(text, sizeof text, "host %s pid %ld at %.0f %s\n", c->host, (long)c->pid, now_wall(),
		 note ? note : "");
	rc = create_excl(c, path, text);
	if (rc < 0)
		return rc;
	return drop_held(c); /* rc 1: a taken-over twin finished it too */
}

int fc_claims_release(fc_claims *c)
{
	return drop_held(c);
}

uint32_t fc_claims_count_done(fc_claims *c)
{
	char path[4200];
	uint32_t n = 0;

	for (uint32_t u = 0; u < c->units; u++) {
		unit_path(path, sizeof path, c, u, "done");
		n += access(path, F_OK) == 0;
	}
	return n;
}

const char *fc_claims_errmsg(const fc_claims *c)
{
	return c ? c->err : "out of memory";
}

void fc_claims_free(fc_claims *c)
{
	if (!c)
		return;
	if (c->beating) {
		pthread_mutex_lock(&c->mu);
		c->stop = 1;
		pthread_cond_signal(&c->cv);
		pthread_mutex_unlock(&c->mu);
		pthread_join(c->beat, NULL);
	}
	if (c->held >= 0)
		drop_held(c);
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cv);
	free(c->dir);
	free(c);
}
