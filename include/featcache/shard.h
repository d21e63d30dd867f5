/*
 * shard.h - one dataset's work split over many processes: which worker this
 * is (from --shard or the launcher's environment), the dataset cut into
 * work units by a hash of the item key, and a directory of claims through
 * which workers on a shared filesystem take units one at a time.
 *
 * No MPI or Slurm library is used: the launcher starts the processes and
 * each reads who it is from the variables the launcher sets. Every worker
 * writes its own store; `featcache merge` combines them.
 */
#ifndef FEATCACHE_SHARD_H
#define FEATCACHE_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "featcache/featcache.h"
#include "featcache/extract.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Worker `rank` of `size` (0 <= rank < size); size 0 means not sharded. */
typedef struct fc_shard {
	uint32_t rank, size;
	char source[96]; /* where it came from: "--shard", "SLURM_ARRAY_TASK_ID", ... */
} fc_shard;

#define FC_SHARD_MAX 65536 /* workers */
#define FC_UNITS_PER_WORKER 64
#define FC_UNITS_MAX (1u << 24)

/* fc_shard_parse - "I/N" (0 <= I < N <= FC_SHARD_MAX) or "none" (size 0).
 * FC_ERR_INVALID with the reason in err otherwise. */
int fc_shard_parse(fc_shard *out, const char *spec, char *err, size_t errcap);

/* fc_shard_from_env - the rank and size a launcher gave this process, read
 * from the environment in this order:
 *   Slurm job array: SLURM_ARRAY_TASK_ID with SLURM_ARRAY_TASK_COUNT and
 *     SLURM_ARRAY_TASK_MIN (rank = ID - MIN), or with MIN and MAX (size =
 *     MAX - MIN + 1); a stepped array (--array=0-15:4) is refused;
 *   srun: SLURM_PROCID with SLURM_STEP_NUM_TASKS (set for a job step, not
 *     for the batch script itself, whose SLURM_NTASKS would otherwise make
 *     a lone script think it is rank 0 of many);
 *   both (an array task whose script runs srun): rank = task * tasks +
 *     procid of size tasks * count;
 *   Open MPI's mpirun: OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE;
 *   MPICH/Hydra (and Intel MPI): PMI_RANK, PMI_SIZE.
 * Sets size 0 when none is present. FC_ERR_INVALID (err says which
 * variable) when a variable is set but not a number in range. */
int fc_shard_from_env(fc_shard *out, char *err, size_t errcap);

/* fc_shard_units - how many work units a dataset is cut into for `workers`
 * workers when the user names none: FC_UNITS_PER_WORKER per worker, so that
 * shards are balanced and a unit is small. */
uint32_t fc_shard_units(uint32_t workers);

/* fc_work_unit - the unit (0..units-1) of an item key: a seeded XXH3-64 of
 * the key modulo units, independent of the hash that picks the val split.
 * Under a static assignment unit u belongs to worker u % size. */
uint32_t fc_work_unit(const char *key, uint32_t units);

/* fc_dataset_unit - the unit of an item key of dataset ds: fc_work_unit of
 * the key, or for a tar shard's item that of its shard's name (a shard is
 * one unit; a key under no shard of ds: its text up to the last '/'). */
uint32_t fc_dataset_unit(const fc_dataset *ds, const char *key, uint32_t units);

/* fc_dataset_select - dst lists the entries of src whose key's unit has its
 * bit set in `units_mask` (a bitmap of nunits bits), and the tar shards
 * whose unit has (their entries, when read, with them). dst borrows src's
 * strings: free dst with fc_dataset_free before src. FC_ERR_NOMEM. */
int fc_dataset_select(fc_dataset *dst, const fc_dataset *src, const uint8_t *units_mask, uint32_t nunits);

/*
 * Claims: a directory (on a filesystem every worker sees, with atomic
 * O_EXCL create and rename: local, NFSv3+, Lustre, GPFS) holding
 *   plan             "units N": created by the first worker, checked by the rest
 *   uNNNNNNNN.claim  who works on unit N: host, pid, start time; its mtime is
 *                    the heartbeat, touched every stale/8 seconds while held
 *   uNNNNNNNN.done   unit N is finished (written after its last commit)
 * A claim is stale, and taken over, when its heartbeat is older than
 * `stale_seconds`, or at once when it names this host and a process that
 * no longer exists. Taking over renames the stale claim aside (only one
 * worker's rename succeeds) and creates a fresh claim with O_EXCL.
 */
typedef struct fc_claims fc_claims;

/* fc_claims_open - use (creating if needed) the claims directory for a
 * dataset of `units` units. FC_ERR_INVALID when the directory's plan names
 * another unit count (workers disagree about the split); FC_ERR_IO. */
int fc_claims_open(fc_claims **out, const char *dir, uint32_t units, double stale_seconds, char *err,
		   size_t errcap);

/* fc_claims_next - claim the next unit that is neither done nor held by a
 * live worker, scanning from `start` and wrapping around; *unit is set and
 * a heartbeat keeps the claim fresh until fc_claims_done or
 * fc_claims_release. *took_over is set when the unit was taken from a stale
 * claim. FC_ERR_NOT_FOUND when every unit is done or held. One claim at a
 * time per fc_claims. */
int fc_claims_next(fc_claims *c, uint32_t start, uint32_t *unit, int *took_over);

/* fc_claims_done - mark the held unit finished (its done marker, with
 * `note`, then the claim removed). fc_claims_release - give the held unit
 * back without finishing it (its claim removed). */
int fc_claims_done(fc_claims *c, const char *note);
int fc_claims_release(fc_claims *c);

/* fc_claims_count - units done so far, for progress. */
uint32_t fc_claims_count_done(fc_claims *c);

const char *fc_claims_errmsg(const fc_claims *c);
void fc_claims_free(fc_claims *c);

#ifdef __cplusplus
}
#endif
#endif /* FEATCACHE_SHARD_H */
