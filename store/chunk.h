/*
 * chunk.h - the on-disk record that holds one batch of feature vectors
 * (private to libfeatcache; tests and the fuzzer include it directly).
 *
 * Layout, all fields little-endian:
 *
 *   off  size  field
 *     0     4  magic "FCCK"
 *     4     1  version (FC_CHUNK_VERSION)
 *     5     1  dtype   (fc_dtype)
 *     6     1  codec   (fc_codec)
 *     7     1  reserved, 0
 *     8     4  dim     (1 .. FC_CHUNK_MAX_DIM)
 *    12     4  count   (1 .. FC_CHUNK_MAX_COUNT)
 *    16     4  payload length in bytes (as stored, after the codec)
 *    20     4  reserved, 0
 *    24     8  XXH3_64bits_withSeed(bytes [32,end), seed = XXH3_64bits(bytes [0,24)))
 *    32  16*count  content hash of each slot
 *     .     .  payload
 *
 * The payload before the codec ("raw payload") is, per dtype:
 *   f32   count*dim floats
 *   f16   count*dim IEEE binary16, round to nearest even
 *   bf16  count*dim bfloat16 (upper half of f32), round to nearest even
 *   u8    count pairs (f32 lo, f32 step), then count*dim bytes q;
 *         the value is lo + q*step (step 0 when the vector is constant)
 * The codec then stores it as is (raw), as one zstd frame with its content
 * size and checksum (zstd), or byte-shuffled by element size (4 for f32, 2
 * for f16/bf16, 4 for the floats of the u8 pairs; the u8 codes stay as they
 * are) and then as one zstd frame (shuffle-zstd) in which, since December
 * 2026, each byte plane (u8: the pairs, then the codes) ends a block, so
 * that it gets Huffman tables of its own; a reader needs no change for it.
 *
 * The whole-record checksum catches a flipped bit whatever the codec; the
 * zstd checksum is a second line for the decompressed bytes.
 */
#ifndef FC_CHUNK_H
#define FC_CHUNK_H

#include "featcache/store.h"
#include "util/util.h" /* fci_f32_to_f16 and friends */

#define FC_CHUNK_VERSION 1
#define FC_CHUNK_HEADER 32
#define FC_CHUNK_MAX_COUNT 65535u
#define FC_CHUNK_MAX_DIM (1u << 20)
#define FC_CHUNK_MAX_RAW ((size_t)1 << 31) /* largest raw payload we encode or decode */

typedef struct fci_chunk_info {
	fc_dtype dtype;
	fc_codec codec;
	uint32_t dim, count;
	size_t payload_len; /* stored bytes */
	size_t raw_len;     /* bytes before the codec */
	const uint8_t (*hashes)[FC_HASH_LEN]; /* points into the chunk */
	const uint8_t *payload;               /* points into the chunk */
} fci_chunk_info;

/* Scratch state for encoding and decoding (zstd contexts, shuffle buffer).
 * One per thread; reuse it across chunks. */
typedef struct fci_chunk_ctx fci_chunk_ctx;

fci_chunk_ctx *fci_chunk_ctx_new(void);
void fci_chunk_ctx_free(fci_chunk_ctx *ctx); /* accepts NULL */

/* fci_chunk_raw_len - bytes of the raw payload; 0 if dim/count are out of range. */
size_t fci_chunk_raw_len(fc_dtype dtype, uint32_t dim, uint32_t count);

/* fci_chunk_bound - the largest encoded chunk for these parameters; 0 if out of range. */
size_t fci_chunk_bound(fc_dtype dtype, fc_codec codec, uint32_t dim, uint32_t count);

/* fci_chunk_encode - encode count vectors of dim floats (row-major) with their
 * hashes into dst (dst_cap >= fci_chunk_bound). *len receives the chunk size.
 * level is the zstd level (ZSTD_minCLevel()..ZSTD_maxCLevel(); ignored for
 * raw). f32 keeps every bit, NaN and inf included. The lossy dtypes have no
 * faithful encoding for some values, which are FC_ERR_INVALID: inf and NaN;
 * for f16 a finite value that rounds beyond 65504 (|x| >= 65520); for bf16
 * one that rounds beyond its largest finite value; for u8 a vector whose
 * max - min overflows f32. Other bad arguments are FC_ERR_INVALID too. */
int fci_chunk_encode(fci_chunk_ctx *ctx, void *dst, size_t dst_cap, size_t *len,
		    const float *vecs, const uint8_t (*hashes)[FC_HASH_LEN],
		    uint32_t dim, uint32_t count, fc_dtype dtype, fc_codec codec, int level);

/* fci_chunk_check - FC_ERR_INVALID when fci_chunk_encode would refuse these
 * vectors for this dtype (the values it cannot hold, as listed there), else
 * 0; FC_ERR_NOMEM if the scratch buffer cannot grow. Costs the dtype
 * conversion, not the codec. */
int fci_chunk_check(fci_chunk_ctx *ctx, const float *vecs, uint32_t dim, uint32_t count, fc_dtype dtype);

/* fci_chunk_parse - check the header, the lengths and the checksum, and fill
 * *info. FC_ERR_CORRUPT (bad magic, lengths, checksum), FC_ERR_VERSION (a
 * newer chunk version) or FC_ERR_UNSUPPORTED (unknown dtype/codec). */
int fci_chunk_parse(const void *src, size_t len, fci_chunk_info *info);

/* fci_chunk_decode - parse and decode every vector into dst (dst_len floats,
 * at least dim*count). On any failure nothing meaningful is in dst and the
 * return is negative; a decoded chunk is never partially wrong. */
int fci_chunk_decode(fci_chunk_ctx *ctx, const void *src, size_t len, float *dst, size_t dst_len);

/* fci_chunk_decode_raw - parse and decode into the raw payload above in its
 * plain layout (not byte-shuffled), for readers that keep the stored dtype:
 * count*dim floats (f32) or halves (f16, bf16), or for u8 the count (lo,
 * step) pairs as little-endian floats, then the count*dim codes. dst holds
 * dst_cap bytes, at least the raw length (fci_chunk_raw_len), and is
 * 2-byte aligned for halves. The values are checked as fci_chunk_decode
 * checks them (FC_ERR_CORRUPT for inf/NaN halves or a bad u8 pair). */
int fci_chunk_decode_raw(fci_chunk_ctx *ctx, const void *src, size_t len, void *dst, size_t dst_cap);

#endif /* FC_CHUNK_H */
