/*
 * wds.h - library-internal: WebDataset tar shards (extract/wds.c). The tar
 * reader over libarchive, the grouping of a shard's members into samples,
 * brace patterns, and the dataset arena dataset.c and wds.c share.
 */
#ifndef FEATCACHE_EXTRACT_WDS_H
#define FEATCACHE_EXTRACT_WDS_H

#include <stddef.h>
#include <stdint.h>

#include "featcache/extract.h"

/* Members larger than this are refused unread. */
#define FCI_WDS_MEMBER_MAX ((int64_t)256 << 20)
/* Label members (.cls, .txt, .json) larger than this are refused. */
#define FCI_WDS_LABEL_MAX ((int64_t)1 << 20)
/* A brace pattern expands to at most this many paths. */
#define FCI_WDS_EXPAND_MAX ((size_t)1 << 22)

/* A tar shard being read, member by member (plain tar, pax and GNU headers,
 * through any compression filter libarchive knows). */
typedef struct fci_tar fci_tar;

/* fci_tar_open_file, fci_tar_open_mem - start reading; FC_ERR_NOT_FOUND,
 * FC_ERR_IO or FC_ERR_CORRUPT (not a tar) with err set. buf must outlive t. */
int fci_tar_open_file(fci_tar **out, const char *path, char *err, size_t errcap);
int fci_tar_open_mem(fci_tar **out, const void *buf, size_t len, char *err, size_t errcap);

/* fci_tar_next - the next member: 1 with its name (valid until the next
 * call), size, whether it is a regular file and its number (from 0, every
 * header counts); 0 at the end; FC_ERR_CORRUPT when the archive is damaged
 * there (fci_tar_errmsg says how). */
int fci_tar_next(fci_tar *t, const char **name, int64_t *size, int *regular, uint32_t *number);

/* fci_tar_read - the current member's data into *buf (grown as needed,
 * caller frees), *len its length; fci_tar_hash - its XXH3-128 (big-endian)
 * without keeping it. FC_ERR_CORRUPT on damage, FC_ERR_NOMEM. */
int fci_tar_read(fci_tar *t, uint8_t **buf, size_t *cap, size_t *len);
int fci_tar_hash(fci_tar *t, uint8_t hash[FC_HASH_LEN]);

const char *fci_tar_errmsg(const fci_tar *t);
void fci_tar_free(fci_tar *t);

/* One sample of a shard, as grouped. */
typedef struct fci_wds_sample {
	char *key;   /* the sample key, without the shard name ("#shard" for damage) */
	char *label; /* label name, or NULL for none */
	char *bad;   /* why it cannot be an item, or NULL */
	uint8_t hash[FC_HASH_LEN]; /* its image's content hash */
	uint32_t member;           /* the image member's number */
} fci_wds_sample;

typedef struct fci_wds_samples {
	fci_wds_sample *v;
	size_t n, cap;
	size_t skipped; /* members that belong to no sample (no dot in the name, a folder) */
} fci_wds_samples;

/* fci_wds_group - read every member of t into samples, in tar order (a
 * sample key repeated later in the shard: the first is kept as a failure
 * saying so, the repeat dropped). shard names the shard in messages.
 * Damage stops the reading: the sample it hit, or "#shard" when it hit a
 * header, becomes a failure naming shard and member. Returns 0 or
 * FC_ERR_NOMEM; free out with fci_wds_samples_free either way. */
int fci_wds_group(fci_tar *t, const char *shard, const char *label_field, fci_wds_samples *out);
void fci_wds_samples_free(fci_wds_samples *s);

/* fci_wds_expand - every path a brace pattern names, in order, to fn
 * (which stops the walk by returning non-zero; that is returned). Ranges
 * {A..B} (zero-padded to the wider bound when one starts with 0, either
 * direction) and lists {a,b,c}; several braces multiply. FC_ERR_INVALID
 * for an unclosed or nested brace or more than `max` paths. */
int fci_wds_expand(const char *pattern, size_t max, int (*fn)(void *ctx, const char *path), void *ctx, char *err,
		   size_t errcap);

/* fci_wds_is_source - whether path names tar shards: a .tar* file, @LIST,
 * a brace pattern, or a directory with shards at its top level or in its
 * split folders. */
int fci_wds_is_source(const char *path);

/* fci_wds_scan - fc_dataset_scan_with for such a source. */
int fci_wds_scan(fc_dataset *out, const char *path, const fc_scan_opts *o, char *err, size_t errcap);

/* fci_arena_strndup - len bytes of s and a NUL, in the dataset arena whose
 * head is *head; NULL when out of memory. */
char *fci_arena_strndup(char **head, const char *s, size_t len);

#endif /* FEATCACHE_EXTRACT_WDS_H */
