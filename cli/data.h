/*
 * data.h - what the train, eval, embed and search commands share: picking
 * the extractor (for a head: the one it was trained on), parsing split
 * names, loading a split's labelled features, mapping label ids to dense
 * class numbers, and the vectors of image files through a store's
 * extractor (extracting and caching what the store lacks).
 */
#ifndef CLI_DATA_H
#define CLI_DATA_H

#include "cli/memory.h"
#include "featcache/extract.h"
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
	double val_from_train; /* --val-from-train of that run, 0 when none */
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

/* The seed of --val-from-train's draw (fc_hash_fraction): not extract's
 * --val-fraction one (seed 0), whose train items all drew at least the
 * val fraction and would give a carve of no more than what they lack. */
#define CLI_VAL_FROM_TRAIN_SEED 0x76616c2d66726f6dull /* "val-from" */

/* cli_split_of - the split of an item with key `key` stored in `split` for
 * a run with --val-from-train val_from_train (0: none): a train item (or
 * one of no split, which counts as train) whose fc_hash_fraction(key,
 * CLI_VAL_FROM_TRAIN_SEED) < val_from_train is val, everything else keeps
 * its split. */
int cli_split_of(const char *key, int split, double val_from_train);

/* A split's features with usable labels: rows of m whose label is
 * FC_NO_LABEL are removed (counted in unlabeled). x is the features as
 * rows once they are there (cli_load_split, cli_plan_features): m's, or
 * streamed through view. */
typedef struct cli_split_data {
	fc_matrix m;
	size_t unlabeled, missing;
	fc_rows x;
	cli_stream_view view;
} cli_split_data;

/* cli_load_split - load the items whose split (as cli_split_of gives it
 * with val_from_train) is in mask, features as f32; print a failure and
 * return an exit code. When keep_unlabeled is set, rows without a label
 * stay (embed wants them). m.splits holds the splits as carved. */
int cli_load_split(fc_store *s, const uint8_t id[FC_HASH_LEN], unsigned mask, int keep_unlabeled,
		  double val_from_train, cli_split_data *out);

/* cli_load_split_as - cli_load_split with the features kept as `how`
 * says (FC_LOAD_NONE: none yet, for cli_plan_features). */
int cli_load_split_as(fc_store *s, const uint8_t id[FC_HASH_LEN], unsigned mask, int keep_unlabeled,
		     double val_from_train, fc_load_how how, cli_split_data *out);

/* cli_plan_features - the features of splits sp[0..n) (loaded with
 * FC_LOAD_NONE) within the memory limit of mo: in RAM in the stored dtype
 * when they fit with `extra` bytes besides (what the command computes on
 * them: evaluation's packed copies, ...), else streamed from s through one
 * cache of mo's size; when even that does not fit, an error naming what is
 * needed and the limit. Sets each split's x. p keeps s open while it
 * streams (it takes s over then: *s is set NULL). Prints a line saying so
 * when it streams, unless quiet. Returns 0 or an exit code after printing
 * why; cli_feature_plan_free frees p (after the splits are freed). */
int cli_plan_features(cli_feature_plan *p, const char *cmd, fc_store **s, const uint8_t id[FC_HASH_LEN],
		      cli_split_data *const *sp, size_t n, uint64_t extra, const cli_mem_opts *mo, int quiet);
void cli_feature_plan_free(cli_feature_plan *p);

/* cli_split_empty - whether the store has no items in the splits of mask
 * (with val_from_train's carve): then what into what[cap], "no items in
 * split 'val' of store 'st' (splits: train 1200, test 300)", and what to
 * do into advice[cap], "use OPT test, or --val-from-train 0.1" (another
 * split that has items, as option opt takes it; the carve when val is
 * asked for and train has items). Returns 1 when empty, 0 when not (or
 * when the store's counts cannot be read: the caller's plainer message
 * stands). Prints nothing. */
int cli_split_empty(fc_store *s, unsigned mask, double val_from_train, const char *opt, const char *name,
		    char *what, char *advice, size_t cap);
void cli_split_data_free(cli_split_data *d);

/* cli_dense_classes - classes[i] = index of labels[i] among the distinct
 * labels (sorted); *n_classes distinct labels. NULL on out of memory. */
uint32_t *cli_dense_classes(const uint32_t *labels, size_t n, uint32_t *n_classes);

/* cli_k_used - the k metrics are computed at (fc_metrics.k): k, or the
 * candidates each query of split is searched among when they are fewer,
 * with a warning saying so. Label metrics with it. */
size_t cli_k_used(uint64_t k, size_t candidates, const char *split);

/* The vectors of images given as files (embed --data, search --query). */
typedef struct cli_image_vectors {
	float *data;        /* n x dim, row-major (malloc'd) */
	size_t n, dim;
	const char **keys;  /* each row's entry key (the strings belong to the dataset) */
} cli_image_vectors;

/* cli_embed_images - the vectors of ds's images under the store's
 * extractor id: the model runs (with the settings the extractor's
 * descriptor records) only for contents the store lacks, and the store
 * keeps those vectors; its items, labels and error records stay as they
 * are. `model` is the ONNX file, or NULL for the one the descriptor records
 * when that file is still there with the same bytes; a model that does not
 * reproduce the extractor is refused. Rows follow ds's entry order (ds need
 * not be sorted). An image that cannot be read or decoded is, when strict
 * is 0, left out with a warning; when strict is set, an error naming it,
 * and the call fails once the others are done (and cached). Prints the
 * "N images: X extracted, Y from the cache, Z failed" line. Returns 0, or
 * an exit code after printing why; free *out with cli_image_vectors_free
 * either way. */
int cli_embed_images(fc_store *s, const uint8_t id[FC_HASH_LEN], const char *model, const fc_dataset *ds,
		     int batch, int threads, int strict, cli_image_vectors *out);
void cli_image_vectors_free(cli_image_vectors *v);

/* cli_parse_float - a finite float from an option value, in [min, max]. */
int cli_parse_float(const char *cmd, const char *opt, const char *val, double min, double max, float *out);

#endif /* CLI_DATA_H */
