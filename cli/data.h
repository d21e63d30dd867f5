/*
 * data.h - what the train, eval and embed commands share: picking the
 * extractor (for a head: the one it was trained on), parsing split names,
 * loading a split's labelled features and mapping label ids to dense class
 * numbers.
 */
#ifndef CLI_DATA_H
#define CLI_DATA_H

#include "featcache/store.h"

/* cli_pick_extractor - the extractor named by a hex prefix, or the store's
 * only one when prefix is NULL. Prints the reason and returns an exit code
 * (1 or 2) on failure, 0 on success. */
int cli_pick_extractor(const char *cmd, fc_store *s, const char *prefix, uint8_t id[FC_HASH_LEN]);

/* What a head written by 'featcache train' records about the features it
 * was trained on, from its safetensors metadata: the extractor id (in
 * "featcache_config") and, from heads of this version on, that extractor's
 * descriptor ("featcache_extractor"). A head that says nothing (a PyTorch
 * state dict) leaves both empty. */
typedef struct cli_head_origin {
	char extractor[2 * FC_HASH_LEN + 1]; /* lowercase hex, "" when the head does not say */
	char *descriptor;                    /* JSON text (malloc'd), NULL when not recorded */
	/* How the run that made it evaluated ("" and 0 when it does not say). */
	char eval_split[32], index_split[32];
	uint64_t k;
} cli_head_origin;

/* cli_head_origin_read - fill *o from the head at path; an unreadable file
 * leaves it empty (fc_head_load says why). cli_head_origin_free frees it. */
void cli_head_origin_read(cli_head_origin *o, const char *path);
void cli_head_origin_free(cli_head_origin *o);

/* cli_pick_head_extractor - the features a head is applied to: with a
 * prefix, that extractor, refused (exit 1, naming both ids) when it is not
 * the one the head was trained on; without, the head's own, refused when
 * the store does not hold it. A head that does not say (origin->extractor
 * empty) leaves it to cli_pick_extractor. Returns 0 or an exit code after
 * printing why. */
int cli_pick_head_extractor(const char *cmd, fc_store *s, const char *prefix, const char *head_path,
			    const cli_head_origin *origin, uint8_t id[FC_HASH_LEN]);

/* cli_parse_splits - "train", "val", "test", "all" or a comma list into a
 * mask of (1 << FC_SPLIT_*). Usage error (2) on a bad name. */
int cli_parse_splits(const char *cmd, const char *opt, const char *s, unsigned *mask);

/* A split's features with usable labels: rows of m whose label is
 * FC_NO_LABEL are removed (counted in unlabeled). */
typedef struct cli_split_data {
	fc_matrix m;
	size_t unlabeled, missing;
} cli_split_data;

/* cli_load_split - load and print a failure (returns an exit code). When
 * keep_unlabeled is set, rows without a label stay (embed wants them). */
int cli_load_split(fc_store *s, const uint8_t id[FC_HASH_LEN], unsigned mask, int keep_unlabeled,
		  cli_split_data *out);
void cli_split_data_free(cli_split_data *d);

/* cli_dense_classes - classes[i] = index of labels[i] among the distinct
 * labels (sorted); *n_classes distinct labels. NULL on out of memory. */
uint32_t *cli_dense_classes(const uint32_t *labels, size_t n, uint32_t *n_classes);

/* cli_k_used - the k metrics are computed at (fc_metrics.k): k, or the
 * candidates each query of split is searched among when they are fewer,
 * with a warning saying so. Label metrics with it. */
size_t cli_k_used(uint64_t k, size_t candidates, const char *split);

/* cli_parse_float - a finite float from an option value, in [min, max]. */
int cli_parse_float(const char *cmd, const char *opt, const char *val, double min, double max, float *out);

#endif /* CLI_DATA_H */
