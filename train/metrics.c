/*
 * metrics.c - retrieval evaluation: exact cosine kNN of queries against an
 * index, then Finetuner's ranking metrics over each query's top-k list.
 *
 * It is for scoring embeddings before and after the head; it is not an ANN
 * index (every query is compared with every index row) and it never holds
 * an nq x ni similarity matrix: similarities are made one block of
 * SIM_QB queries x SIM_IB index rows at a time and folded into a bounded
 * heap per query.
 *
 * Metric definitions
 * ------------------
 * Finetuner's Evaluator (jina-ai/finetuner, finetuner/tuner/evaluation.py)
 * calls the functions of docarray/math/evaluation.py (docarray/docarray) on
 * each query's binary relevance list, in rank order, with no `k` argument
 * (so each metric covers the whole retrieved list, whose length is the
 * match `limit`, here k) and the default `method=0` for dcg/ndcg; `max_rel`
 * (for recall and f1) is the number of index items with the query's label,
 * the query itself left out. (The class-label Evaluator drops the query's
 * own id from its targets and from its `limit` matches, so its lists hold
 * k-1 rows when the query was among them; here they hold the k nearest
 * other rows. A later Evaluator that matches with exclude_self counts the
 * query in max_rel, which keeps recall below 1; train.h follows the
 * former.) The per-query values are averaged with a plain mean. For a list b[0..L-1] (b[i] = 1 if the i-th match has the
 * query's label), R = sum_i b[i] and M = max_rel:
 *
 *   precision_at_k     R / L                      (docarray: 0 for an empty list)
 *   recall_at_k        R / M                      (docarray divides by zero when
 *                                                  M = 0; here it is 0)
 *   f1_score_at_k      2 p r / (p + r), 0 when p + r = 0
 *   hit_at_k           1 if R > 0 else 0
 *   average_precision  mean over i with b[i] = 1 of (sum_{j<=i} b[j]) / (i + 1);
 *                      0 when R = 0 (over the top-k list only: "mAP@k")
 *   reciprocal_rank    1 / (i + 1) for the first i with b[i] = 1, else 0
 *   r_precision        (sum_{i<R} b[i]) / R, 0 when R = 0: the precision of the
 *                      first R matches, R counted inside the retrieved list (not
 *                      over the whole index, and not up to the last relevant)
 *   dcg_at_k           b[0] + sum_{i>=1} b[i] / log2(i + 1)      (method 0)
 *   ndcg_at_k          dcg(b) / dcg(b sorted descending), 0 when that is 0; the
 *                      ideal is the retrieved list reordered, not the index
 *
 * Where docarray would fail (a query whose list is empty because the index
 * holds only the query itself) every metric of that query is 0, and the
 * query still counts in the mean.
 *
 * The similarity kernel
 * ---------------------
 * Normalised copies of queries and index are packed once into panels of MR
 * query rows and NR index rows, dimension-major, so the micro-kernel reads
 * both sequentially and keeps an MR x NR tile of sums in registers. Every
 * similarity is one fused multiply-add chain over d = 0..dim-1 in order,
 * whatever the ISA, tile position or padding, so equal vectors score
 * bit-identical similarities and ties are resolved by index alone. On
 * 20k x 20k x 2048 with 2 threads (AVX-512, a shared and noisy machine) the
 * whole evaluation took 7-9 s; oneDNN 2.6's matmul (brg:avx512_core) took
 * 7-10 s for the similarities alone, over 2048x2048, 480x256, 256x20000 and
 * 256x2048 blocks. It is no faster, and its tail kernels would break the
 * bit-identity above, and with it the tie rule.
 */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <omp.h>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define SIM_X86 1
#else
#define SIM_X86 0
#endif

#include "featcache/train.h"

const char *const fc_metric_names[9] = {
	"precision_at_k", "recall_at_k", "f1_score_at_k", "hit_at_k", "average_precision",
	"reciprocal_rank", "r_precision", "dcg_at_k", "ndcg_at_k",
};

enum { M_PREC, M_REC, M_F1, M_HIT, M_AP, M_RR, M_RPREC, M_DCG, M_NDCG, M_COUNT };

/* Block sizes, tuned on 20k x 20k x 2048 (AVX-512, 2 MB L2): a thread owns
 * up to SIM_QB queries, whose packed SIM_KC-wide slice (480 KB) stays in L2
 * while one SIM_KC x NR index panel slice (32 KB) sits in L1 and is swept
 * over all of them; the SIM_QB x SIM_IB similarities (480 KB) are folded
 * into the heaps after every SIM_IB index rows. SIM_QB is a multiple of
 * every MR and SIM_IB of every NR, so blocks start on panels. 256 x 2048
 * blocks ran about a third slower. */
#define SIM_QB 480
#define SIM_IB 256
#define SIM_KC 256

/* A micro-kernel: c (MR,NR; row stride ldc) = a (MR,kc) · b (NR,kc)ᵀ, or
 * += when !first; a is packed kc x MR, b kc x NR (dimension-major). */
typedef void (*tile_fn)(float *c, size_t ldc, const float *a, const float *b, size_t kc,
			int first);

typedef struct sim_kernel {
	tile_fn tile;
	size_t mr, nr;
} sim_kernel;

static void tile_scalar(float *c, size_t ldc, const float *a, const float *b, size_t kc, int first)
{
	enum { MR = 4, NR = 4 };
	float acc[MR][NR];

	for (size_t i = 0; i < MR; i++)
		for (size_t j = 0; j < NR; j++)
			acc[i][j] = first ? 0.0f : c[i * ldc + j];
	for (size_t p = 0; p < kc; p++)
		for (size_t i = 0; i < MR; i++)
			for (size_t j = 0; j < NR; j++)
				acc[i][j] = fmaf(a[p * MR + i], b[p * NR + j], acc[i][j]);
	for (size_t i = 0; i < MR; i++)
		for (size_t j = 0; j < NR; j++)
			c[i * ldc + j] = acc[i][j];
}

#if SIM_X86
__attribute__((target("avx2,fma"))) static void tile_avx2(float *c, size_t ldc, const float *a,
							 const float *b, size_t kc, int first)
{
	enum { MR = 6, NR = 16 };
	__m256 acc[MR][2];

#pragma GCC unroll 6
	for (int i = 0; i < MR; i++) {
		acc[i][0] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(c + i * ldc);
		acc[i][1] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(c + i * ldc + 8);
	}
	for (size_t p = 0; p < kc; p++) {
		__m256 b0 = _mm256_load_ps(b + p * NR);
		__m256 b1 = _mm256_load_ps(b + p * NR + 8);
#pragma GCC unroll 6
		for (int i = 0; i < MR; i++) {
			__m256 ai = _mm256_broadcast_ss(a + p * MR + i);
			acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
			acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
		}
	}
#pragma GCC unroll 6
	for (int i = 0; i < MR; i++) {
		_mm256_storeu_ps(c + i * ldc, acc[i][0]);
		_mm256_storeu_ps(c + i * ldc + 8, acc[i][1]);
	}
}

__attribute__((target("avx512f"))) static void tile_avx512(float *c, size_t ldc, const float *a,
							   const float *b, size_t kc, int first)
{
	enum { MR = 12, NR = 32 };
	__m512 acc[MR][2];

#pragma GCC unroll 12
	for (int i = 0; i < MR; i++) {
		acc[i][0] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(c + i * ldc);
		acc[i][1] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(c + i * ldc + 16);
	}
	for (size_t p = 0; p < kc; p++) {
		__m512 b0 = _mm512_load_ps(b + p * NR);
		__m512 b1 = _mm512_load_ps(b + p * NR + 16);
#pragma GCC unroll 12
		for (int i = 0; i < MR; i++) {
			__m512 ai = _mm512_set1_ps(a[p * MR + i]);
			acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
			acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
		}
	}
#pragma GCC unroll 12
	for (int i = 0; i < MR; i++) {
		_mm512_storeu_ps(c + i * ldc, acc[i][0]);
		_mm512_storeu_ps(c + i * ldc + 16, acc[i][1]);
	}
}
#endif

static sim_kernel pick_kernel(void)
{
#if SIM_X86
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f"))
		return (sim_kernel){tile_avx512, 12, 32};
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		return (sim_kernel){tile_avx2, 6, 16};
#endif
	return (sim_kernel){tile_scalar, 4, 4};
}

/* a * b into *out, or 0 when it overflows size_t. */
static int mul_ok(size_t *out, size_t a, size_t b)
{
	if (a && b > SIZE_MAX / a)
		return 0;
	*out = a * b;
	return 1;
}

static size_t round_up(size_t n, size_t m)
{
	return (n + m - 1) / m * m;
}

/* 64-byte aligned, zeroed; NULL when bytes is 0 or memory is short. */
static void *alloc_aligned(size_t bytes)
{
	void *p;

	if (bytes == 0 || bytes > SIZE_MAX - 63)
		return NULL;
	bytes = round_up(bytes, 64);
	p = aligned_alloc(64, bytes);
	if (p)
		memset(p, 0, bytes);
	return p;
}

/* dst (npanels, dim, R) = rows [first, first+n) of x, each scaled to unit L2
 * norm (zero rows stay zero), R rows to a panel, dimension-major; rows past
 * n are zero. Returns FC_ERR_INVALID when a row holds NaN or Inf. The norm
 * is summed in double, in order, so a row's scale depends on that row
 * alone, and power-of-two multiples of a row normalise to the same bits.
 * Rows kept in another type than f32 (or streamed) are converted a block
 * at a time, so no f32 copy of the whole matrix is made besides dst. */
#define PACK_ROWS 2048
static int pack_normalized(float *dst, const fc_rows *x, size_t first, size_t n, size_t R)
{
	const size_t dim = x->dim, blk = PACK_ROWS / R * R;
	const int direct = x->type == FC_ROW_F32 && !x->fetch;
	float *tmp = direct ? NULL : malloc(blk * dim * sizeof(float));
	int bad = 0;

	if (!direct && !tmp)
		return FC_ERR_NOMEM;
	for (size_t b0 = 0; b0 < n && !bad; b0 += blk) {
		size_t nb = n - b0 < blk ? n - b0 : blk, npanels = (nb + R - 1) / R;
		const float *src = direct ? (const float *)x->data + (first + b0) * dim : tmp;
		int err = direct ? 0 : fc_rows_range(tmp, x, first + b0, nb);
		if (err) {
			free(tmp);
			return err;
		}
#pragma omp parallel for schedule(static) reduction(| : bad)
		for (size_t pn = 0; pn < npanels; pn++) {
			float *panel = dst + (b0 / R + pn) * dim * R;
			for (size_t r = 0; r < R; r++) {
				size_t row = pn * R + r;
				const float *xr;
				double ss = 0.0;
				float inv;

				if (row >= nb)
					break; /* the allocation is zeroed */
				xr = src + row * dim;
				for (size_t d = 0; d < dim; d++)
					ss += (double)xr[d] * xr[d];
				if (!isfinite(ss)) {
					bad = 1;
					continue;
				}
				inv = ss > 0.0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
				for (size_t d = 0; d < dim; d++)
					panel[d * R + r] = xr[d] * inv;
			}
		}
	}
	free(tmp);
	return bad ? FC_ERR_INVALID : 0;
}

/* One retrieved item as one integer, larger = better: the similarity's
 * bits made monotonic (negatives flipped; -0 counted as +0) above the
 * index reversed, so higher similarity wins and of equal similarities the
 * lower index. The heap compares these without branching on sim then idx:
 * such branches are unpredictable and made large-k searches several times
 * slower. */
typedef uint64_t hitkey;

static hitkey key_make(float sim, uint32_t idx)
{
	uint32_t u;

	sim += 0.0f;
	memcpy(&u, &sim, sizeof u);
	u = (u & 0x80000000u) ? ~u : u | 0x80000000u;
	return (uint64_t)u << 32 | (uint32_t)~idx;
}

static uint32_t key_idx(hitkey k)
{
	return ~(uint32_t)k;
}

static float key_sim(hitkey k)
{
	uint32_t u = (uint32_t)(k >> 32);
	float sim;

	u = (u & 0x80000000u) ? u & 0x7fffffffu : ~u;
	memcpy(&sim, &u, sizeof sim);
	return sim;
}

/* The heap keeps its worst (smallest) key at the root. */
static void heap_sift_down(hitkey *h, size_t n, size_t i)
{
	hitkey x = h[i];

	for (;;) {
		size_t l = 2 * i + 1, c;
		if (l >= n)
			break;
		c = l + 1 < n && h[l + 1] < h[l] ? l + 1 : l;
		if (h[c] >= x)
			break;
		h[i] = h[c];
		i = c;
	}
	h[i] = x;
}

/* Adds x when there is room or it beats the root; returns whether it did. */
static int heap_push(hitkey *h, size_t *n, size_t cap, hitkey x)
{
	size_t i;

	if (*n == cap) {
		if (x <= h[0])
			return 0;
		h[0] = x;
		heap_sift_down(h, cap, 0);
		return 1;
	}
	for (i = (*n)++; i > 0 && x < h[(i - 1) / 2]; i = (i - 1) / 2)
		h[i] = h[(i - 1) / 2];
	h[i] = x;
	return 1;
}

/* Heap to best-first order in place: repeatedly move the worst to the end. */
static void heap_sort_best_first(hitkey *h, size_t n)
{
	for (size_t m = n; m > 1; m--) {
		hitkey t = h[0];
		h[0] = h[m - 1];
		h[m - 1] = t;
		heap_sift_down(h, m - 1, 0);
	}
}

/*
 * knn_search - for every query the top `cap` index rows by cosine similarity,
 * best first (similarity descending, then index ascending), in top (nq, cap);
 * counts[q] is how many were found (cap, or fewer when the index is
 * smaller). cap >= 1; with exclude_self, queries and index are the same
 * rows. kern is pick_kernel()'s choice (the tests pass each one).
 * When `each` is set it is called per query block as soon as the block's
 * lists are final, from the thread that made them, so the caller need not
 * keep all lists (top and counts may then be NULL: per-thread scratch is
 * used); a non-zero return from it stops the search and is returned.
 */
typedef int (*knn_each_fn)(void *ctx, size_t q0, size_t qn, const hitkey *top,
			   const size_t *counts, size_t cap);

/* Fold the similarities of queries [q0, q0+qn) (packed at qpack) with
 * index rows [ibase, ibase+nib) (packed at ipack, panels from ibase) into
 * the queries' heaps (cap each), their counts and worst kept similarity.
 * cbuf holds SIM_QB x SIM_IB floats. */
static void fold_block(const sim_kernel *kern, float *cbuf, const float *qpack, size_t q0, size_t qn,
		       const float *ipack, size_t ibase, size_t nib, size_t dim, hitkey *heaps, size_t *cnt,
		       float *worst, size_t cap, int exclude_self)
{
	const size_t mr = kern->mr, nr = kern->nr, qp = (qn + mr - 1) / mr;

	for (size_t i0 = 0; i0 < nib; i0 += SIM_IB) {
		size_t in = nib - i0 < SIM_IB ? nib - i0 : SIM_IB;
		size_t ip = (in + nr - 1) / nr;

		for (size_t p0 = 0; p0 < dim; p0 += SIM_KC) {
			size_t kc = dim - p0 < SIM_KC ? dim - p0 : SIM_KC;
			for (size_t jr = 0; jr < ip; jr++) {
				const float *b = ipack + (i0 / nr + jr) * dim * nr + p0 * nr;
				for (size_t ir = 0; ir < qp; ir++) {
					const float *a = qpack + (q0 / mr + ir) * dim * mr + p0 * mr;
					kern->tile(cbuf + ir * mr * SIM_IB + jr * nr, SIM_IB, a, b, kc, p0 == 0);
				}
			}
		}
		for (size_t r = 0; r < qn; r++) {
			const float *row = cbuf + r * SIM_IB;
			hitkey *h = heaps + r * cap;
			size_t q = q0 + r;

			for (size_t j = 0; j < in; j++) {
				size_t i = ibase + i0 + j;
				/* Rows arrive in ascending index, so once the heap is
				 * full an equal similarity never displaces anything:
				 * this float test is the whole filter. */
				if (cnt[r] == cap && !(row[j] > worst[r]))
					continue;
				if (exclude_self && i == q)
					continue;
				if (heap_push(h, &cnt[r], cap, key_make(row[j], (uint32_t)i)) && cnt[r] == cap)
					worst[r] = key_sim(h[0]);
			}
		}
	}
}

/* Index rows packed at a time when the index is larger: a multiple of
 * SIM_IB (so of every NR); 16384 x 768 floats are 48 MiB. */
#define SIM_IX_BLOCK 16384

static int knn_search_rows(hitkey *top, size_t *counts, const fc_rows *queries, const fc_rows *index,
			   size_t cap, int exclude_self, sim_kernel kern, knn_each_fn each, void *ctx)
{
	const size_t nq = queries->n, ni = index->n, dim = queries->dim;
	size_t mr = kern.mr, nr = kern.nr;
	size_t qpanels = (nq + mr - 1) / mr, ipanels = (ni + nr - 1) / nr;
	size_t qbytes, ibytes, hbytes, allh, nqb, qbr, ibr;
	float *qpack = NULL, *ipack = NULL, *allworst = NULL;
	hitkey *heaps_all = NULL;
	size_t *cnt_all = NULL;
	int err = 0;

	if (nq == 0)
		return 0;
	/* As many blocks of at most SIM_QB queries as a multiple of the threads,
	 * so no thread idles through the last round. */
	nqb = round_up((nq + SIM_QB - 1) / SIM_QB, (size_t)omp_get_max_threads());
	qbr = round_up((nq + nqb - 1) / nqb, mr);
	nqb = (nq + qbr - 1) / qbr;
	if (!mul_ok(&qbytes, qpanels * mr, dim) || !mul_ok(&qbytes, qbytes, sizeof(float)) ||
	    !mul_ok(&ibytes, ipanels * nr, dim) || !mul_ok(&ibytes, ibytes, sizeof(float)) ||
	    !mul_ok(&hbytes, qbr * sizeof(hitkey), cap) || !mul_ok(&allh, nq * sizeof(hitkey), cap))
		return FC_ERR_OVERFLOW;
	/* The index is packed whole, or (when every query's heap takes less
	 * than half of that) a block at a time, the heaps kept across blocks:
	 * then the memory is the queries' packed copy, one index block and the
	 * heaps, never a whole f32 copy of the index. Either way each query
	 * sees the index rows in ascending order, so the lists are the same. */
	ibr = ni;
	if (ni > SIM_IX_BLOCK && allh < ibytes / 2)
		ibr = SIM_IX_BLOCK;
	qpack = alloc_aligned(qbytes);
	ipack = ni ? alloc_aligned(ibr == ni ? ibytes : ibr * dim * sizeof(float)) : NULL;
	if (!qpack || (ni && !ipack)) {
		err = FC_ERR_NOMEM;
		goto out;
	}
	if (ibr < ni) {
		heaps_all = top ? top : alloc_aligned(allh);
		cnt_all = counts ? counts : malloc(nq * sizeof *cnt_all);
		allworst = malloc(nq * sizeof *allworst);
		if (!heaps_all || !cnt_all || !allworst) {
			err = FC_ERR_NOMEM;
			goto out;
		}
		memset(cnt_all, 0, nq * sizeof *cnt_all);
	}
	err = pack_normalized(qpack, queries, 0, nq, mr);
	if (err)
		goto out;

	for (size_t ib0 = 0; ib0 < ni || (ni == 0 && ib0 == 0); ib0 += ibr ? ibr : 1) {
		size_t nib = ni - ib0 < ibr ? ni - ib0 : ibr;
		int whole = ibr == ni; /* one pass: heaps per query block, lists out at once */

		if (nib < ibr) /* the last block: its last panel's padding must be zeros */
			memset(ipack, 0, round_up(ibr, nr) * dim * sizeof(float));
		if (nib && (err = pack_normalized(ipack, index, ib0, nib, nr)) != 0)
			goto out;
#pragma omp parallel
		{
			float *cbuf = alloc_aligned((size_t)SIM_QB * SIM_IB * sizeof(float));
			hitkey *scratch = !whole || top ? NULL : alloc_aligned(hbytes);
			size_t lcounts[SIM_QB];
			float worst[SIM_QB];

			if (!cbuf || (whole && !top && !scratch)) {
#pragma omp atomic write
				err = FC_ERR_NOMEM;
			}
#pragma omp for schedule(dynamic, 1)
			for (size_t qb = 0; qb < nqb; qb++) {
				size_t q0 = qb * qbr, qn = nq - q0 < qbr ? nq - q0 : qbr;
				hitkey *heaps = !whole ? heaps_all + q0 * cap : top ? top + q0 * cap : scratch;
				size_t *cnt = !whole ? cnt_all + q0 : top ? counts + q0 : lcounts;
				float *wst = !whole ? allworst + q0 : worst;
				int failed;

#pragma omp atomic read
				failed = err;
				if (failed)
					continue;
				if (whole)
					for (size_t r = 0; r < qn; r++)
						cnt[r] = 0;
				fold_block(&kern, cbuf, qpack, q0, qn, ipack, ib0, nib, dim, heaps, cnt, wst, cap,
					   exclude_self);
				if (!whole)
					continue;
				for (size_t r = 0; r < qn; r++)
					heap_sort_best_first(heaps + r * cap, cnt[r]);
				if (each) {
					int e = each(ctx, q0, qn, heaps, cnt, cap);
					if (e) {
#pragma omp atomic write
						err = e;
					}
				}
			}
			free(scratch);
			free(cbuf);
		}
		if (err)
			goto out;
	}
	if (ibr < ni) {
		/* the lists are final: sort them and hand them out, block by block */
#pragma omp parallel for schedule(dynamic, 1)
		for (size_t qb = 0; qb < nqb; qb++) {
			size_t q0 = qb * qbr, qn = nq - q0 < qbr ? nq - q0 : qbr;
			int failed;
#pragma omp atomic read
			failed = err;
			if (failed)
				continue;
			for (size_t r = 0; r < qn; r++)
				heap_sort_best_first(heaps_all + (q0 + r) * cap, cnt_all[q0 + r]);
			if (each) {
				int e = each(ctx, q0, qn, heaps_all + q0 * cap, cnt_all + q0, cap);
				if (e) {
#pragma omp atomic write
					err = e;
				}
			}
		}
	}
out:
	if (heaps_all != top)
		free(heaps_all);
	if (cnt_all != counts)
		free(cnt_all);
	free(allworst);
	free(ipack);
	free(qpack);
	return err;
}

/* knn_search_rows over f32 matrices (the tests call it with each kernel). */
static int knn_search(hitkey *top, size_t *counts, const float *queries, size_t nq, const float *index,
		      size_t ni, size_t dim, size_t cap, int exclude_self, sim_kernel kern,
		      knn_each_fn each, void *ctx)
{
	fc_rows q = fc_rows_f32(queries, nq, dim), x = fc_rows_f32(index, ni, dim);
	return knn_search_rows(top, counts, &q, &x, cap, exclude_self, kern, each, ctx);
}

/* The nine metrics of one query from its relevance list (see the top). */
static void metrics_of_list(double m[M_COUNT], const unsigned char *b, size_t len, size_t max_rel)
{
	size_t rel = 0, first = 0, in_first_r = 0;
	double ap = 0.0, dcg = 0.0, idcg = 0.0;

	for (size_t i = 0; i < len; i++) {
		if (!b[i])
			continue;
		if (rel == 0)
			first = i + 1;
		rel++;
		ap += (double)rel / (double)(i + 1);
		dcg += i == 0 ? 1.0 : 1.0 / log2((double)(i + 1));
	}
	for (size_t i = 0; i < rel; i++) {
		in_first_r += b[i] != 0;
		idcg += i == 0 ? 1.0 : 1.0 / log2((double)(i + 1));
	}
	m[M_PREC] = len ? (double)rel / (double)len : 0.0;
	m[M_REC] = max_rel ? (double)rel / (double)max_rel : 0.0;
	m[M_F1] = m[M_PREC] + m[M_REC] > 0.0 ?
			  2.0 * m[M_PREC] * m[M_REC] / (m[M_PREC] + m[M_REC]) :
			  0.0;
	m[M_HIT] = rel > 0;
	m[M_AP] = rel ? ap / (double)rel : 0.0;
	m[M_RR] = rel ? 1.0 / (double)first : 0.0;
	m[M_RPREC] = rel ? (double)in_first_r / (double)rel : 0.0;
	m[M_DCG] = dcg;
	m[M_NDCG] = idcg > 0.0 ? dcg / idcg : 0.0;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

/* How many of sorted[0..n) equal v. */
static size_t count_label(const uint32_t *sorted, size_t n, uint32_t v)
{
	size_t lo = 0, hi = n, first;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (sorted[mid] < v)
			lo = mid + 1;
		else
			hi = mid;
	}
	first = lo;
	hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (sorted[mid] <= v)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo - first;
}

typedef struct eval_ctx {
	const uint32_t *qlabels, *ilabels, *sorted_ilabels;
	size_t ni;
	int exclude_self;
	double *per_query; /* (nq, M_COUNT) */
} eval_ctx;

/* knn_search's callback: the metrics of a block of queries. */
static int eval_block(void *vctx, size_t q0, size_t qn, const hitkey *top,
		      const size_t *counts, size_t cap)
{
	const eval_ctx *c = vctx;
	unsigned char *rel = malloc(cap);

	if (!rel)
		return FC_ERR_NOMEM;
	for (size_t r = 0; r < qn; r++) {
		size_t q = q0 + r, max_rel;
		uint32_t label = c->qlabels[q];
		const hitkey *h = top + r * cap;

		for (size_t i = 0; i < counts[r]; i++)
			rel[i] = c->ilabels[key_idx(h[i])] == label;
		max_rel = count_label(c->sorted_ilabels, c->ni, label);
		if (c->exclude_self && c->ilabels[q] == label)
			max_rel--;
		metrics_of_list(c->per_query + q * M_COUNT, rel, counts[r], max_rel);
	}
	free(rel);
	return 0;
}

int fc_eval_knn(fc_metrics *out, const float *queries, const uint32_t *qlabels, size_t nq,
		const float *index, const uint32_t *ilabels, size_t ni, size_t dim, size_t k,
		int exclude_self)
{
	return fc_eval_knn_queries(out, NULL, queries, qlabels, nq, index, ilabels, ni, dim, k,
				   exclude_self);
}

int fc_eval_knn_queries(fc_metrics *out, double *queries_out, const float *queries,
			const uint32_t *qlabels, size_t nq, const float *index, const uint32_t *ilabels,
			size_t ni, size_t dim, size_t k, int exclude_self)
{
	if ((nq && !queries) || (ni && !index))
		return FC_ERR_INVALID;
	fc_rows q = fc_rows_f32(queries, nq, dim), x = fc_rows_f32(index, ni, dim);
	return fc_eval_knn_rows(out, queries_out, &q, qlabels, &x, ilabels, k, exclude_self);
}

int fc_eval_knn_rows(fc_metrics *out, double *queries_out, const fc_rows *qrows, const uint32_t *qlabels,
		     const fc_rows *irows, const uint32_t *ilabels, size_t k, int exclude_self)
{
	const size_t nq = qrows->n, ni = irows->n, dim = qrows->dim;
	eval_ctx ctx = {0};
	uint32_t *sorted = NULL;
	double *per_query = NULL;
	double sum[M_COUNT] = {0};
	size_t cap, bytes;
	int err = 0;

	if (!out || k < 1 || dim == 0 || irows->dim != dim || (nq && !qlabels) || (ni && !ilabels) ||
	    (exclude_self && nq != ni))
		return FC_ERR_INVALID;
	if (!mul_ok(&bytes, nq, dim) || !mul_ok(&bytes, ni, dim) ||
	    !mul_ok(&bytes, nq, M_COUNT * sizeof(double)) || !mul_ok(&bytes, ni, sizeof(uint32_t)))
		return FC_ERR_OVERFLOW;
	if (ni > UINT32_MAX)
		return FC_ERR_UNSUPPORTED; /* a hitkey holds a 32-bit index */

	cap = ni - (exclude_self && ni > 0);
	cap = k < cap ? k : cap;
	if (nq && cap) {
		per_query = malloc(nq * M_COUNT * sizeof(double));
		sorted = malloc(ni * sizeof(uint32_t));
		if (!per_query || !sorted) {
			err = FC_ERR_NOMEM;
			goto out;
		}
		memcpy(sorted, ilabels, ni * sizeof(uint32_t));
		qsort(sorted, ni, sizeof(uint32_t), cmp_u32);
		ctx = (eval_ctx){qlabels, ilabels, sorted, ni, exclude_self, per_query};
		err = knn_search_rows(NULL, NULL, qrows, irows, cap, exclude_self, pick_kernel(), eval_block,
				      &ctx);
		if (err)
			goto out;
		/* Summed in query order, so the result does not depend on threads. */
		for (size_t q = 0; q < nq; q++)
			for (int m = 0; m < M_COUNT; m++)
				sum[m] += per_query[q * M_COUNT + m];
		if (queries_out)
			memcpy(queries_out, per_query, nq * M_COUNT * sizeof(double));
	} else if (queries_out && nq) {
		memset(queries_out, 0, nq * M_COUNT * sizeof(double));
	}
	/* With nothing to retrieve every query scores 0 (see the top). */
	memset(out, 0, sizeof *out);
	if (nq) {
		out->precision = sum[M_PREC] / (double)nq;
		out->recall = sum[M_REC] / (double)nq;
		out->f1 = sum[M_F1] / (double)nq;
		out->hit = sum[M_HIT] / (double)nq;
		out->ap = sum[M_AP] / (double)nq;
		out->rr = sum[M_RR] / (double)nq;
		out->r_precision = sum[M_RPREC] / (double)nq;
		out->dcg = sum[M_DCG] / (double)nq;
		out->ndcg = sum[M_NDCG] / (double)nq;
	}
	out->queries = nq;
	out->k = cap; /* what the lists hold: labels say @cap, not @k */
out:
	free(sorted);
	free(per_query);
	return err;
}

typedef struct list_ctx {
	uint32_t *idx;
	float *sim;
	size_t *counts;
	size_t k;
} list_ctx;

/* knn_search's callback: copy a block's lists out. */
static int list_block(void *vctx, size_t q0, size_t qn, const hitkey *top, const size_t *counts,
		      size_t cap)
{
	const list_ctx *c = vctx;

	for (size_t r = 0; r < qn; r++) {
		size_t q = q0 + r;
		const hitkey *h = top + r * cap;

		for (size_t i = 0; i < counts[r]; i++) {
			c->idx[q * c->k + i] = key_idx(h[i]);
			if (c->sim)
				c->sim[q * c->k + i] = key_sim(h[i]);
		}
		c->counts[q] = counts[r];
	}
	return 0;
}

int fc_knn(uint32_t *idx, float *sim, size_t *counts, const float *queries, size_t nq,
	   const float *index, size_t ni, size_t dim, size_t k, int exclude_self)
{
	list_ctx ctx = {idx, sim, counts, k};
	size_t bytes, cap;

	if (k < 1 || dim == 0 || (nq && (!queries || !idx || !counts)) || (ni && !index) ||
	    (exclude_self && nq != ni))
		return FC_ERR_INVALID;
	if (!mul_ok(&bytes, nq, dim) || !mul_ok(&bytes, ni, dim) || !mul_ok(&bytes, nq, k) ||
	    !mul_ok(&bytes, bytes, sizeof(float)))
		return FC_ERR_OVERFLOW;
	if (ni > UINT32_MAX)
		return FC_ERR_UNSUPPORTED;
	cap = ni - (exclude_self && ni > 0);
	cap = k < cap ? k : cap;
	if (cap == 0) {
		for (size_t q = 0; q < nq; q++)
			counts[q] = 0;
		return 0;
	}
	return knn_search(NULL, NULL, queries, nq, index, ni, dim, cap, exclude_self, pick_kernel(),
			  list_block, &ctx);
}

/* Where each metric lives in fc_metrics, in fc_metric_names order. */
static const size_t metric_offset[9] = {
	offsetof(fc_metrics, precision),   offsetof(fc_metrics, recall), offsetof(fc_metrics, f1),
	offsetof(fc_metrics, hit),	   offsetof(fc_metrics, ap),	 offsetof(fc_metrics, rr),
	offsetof(fc_metrics, r_precision), offsetof(fc_metrics, dcg),	 offsetof(fc_metrics, ndcg),
};

/* Every short name any command has ever taken: train's and sweep's
 * (precision ... ndcg) and the report's (ap, rprecision, dcg too). Grouped by
 * metric, in fc_metric_names order, for fc_metric_list. */
static const struct {
	const char *name;
	int index;
} metric_alias[] = {
	{ "precision", M_PREC }, { "recall", M_REC }, { "f1", M_F1 },  { "hit", M_HIT },
	{ "map", M_AP },	 { "ap", M_AP },      { "mrr", M_RR }, { "rprecision", M_RPREC },
	{ "dcg", M_DCG },	 { "ndcg", M_NDCG },
};

int fc_metric_resolve(const char *name, const char **canonical)
{
	int index = FC_ERR_INVALID;
	for (int i = 0; name && i < M_COUNT && index < 0; i++)
		if (strcmp(name, fc_metric_names[i]) == 0)
			index = i;
	for (size_t i = 0; name && i < sizeof metric_alias / sizeof metric_alias[0] && index < 0; i++)
		if (strcmp(name, metric_alias[i].name) == 0)
			index = metric_alias[i].index;
	if (canonical)
		*canonical = index < 0 ? NULL : fc_metric_names[index];
	return index;
}

/* Appends text to dst like strlcat, counting what would have been written. */
static void list_put(char *dst, size_t dst_cap, size_t *len, const char *text)
{
	for (; *text; text++, (*len)++)
		if (*len + 1 < dst_cap)
			dst[*len] = *text;
	if (dst_cap)
		dst[*len < dst_cap ? *len : dst_cap - 1] = '\0';
}

size_t fc_metric_list(char *dst, size_t dst_cap)
{
	size_t len = 0, a = 0, n_alias = sizeof metric_alias / sizeof metric_alias[0];
	if (!dst)
		dst_cap = 0;
	for (int i = 0; i < M_COUNT; i++) {
		list_put(dst, dst_cap, &len, i == 0 ? "" : i + 1 < M_COUNT ? ", " : " or ");
		list_put(dst, dst_cap, &len, fc_metric_names[i]);
		for (size_t first = a; a < n_alias && metric_alias[a].index == i; a++) {
			list_put(dst, dst_cap, &len, a == first ? " (" : ", ");
			list_put(dst, dst_cap, &len, metric_alias[a].name);
			if (a + 1 == n_alias || metric_alias[a + 1].index != i)
				list_put(dst, dst_cap, &len, ")");
		}
	}
	return len;
}

double fc_metric_value(const fc_metrics *m, int index)
{
	double v;
	memcpy(&v, (const char *)m + metric_offset[index], sizeof v);
	return v;
}

void fc_metric_set(fc_metrics *m, int index, double value)
{
	memcpy((char *)m + metric_offset[index], &value, sizeof value);
}

int fc_metric_get(const fc_metrics *m, const char *name, double *value)
{
	int index = fc_metric_resolve(name, NULL);
	if (!m || !value || index < 0)
		return FC_ERR_INVALID;
	*value = fc_metric_value(m, index);
	return 0;
}

json_t *fc_metrics_to_json(const fc_metrics *m, int with_queries)
{
	json_t *j = json_object();
	for (int i = 0; j && i < M_COUNT; i++)
		json_object_set_new(j, fc_metric_names[i], json_real(fc_metric_value(m, i)));
	if (j && with_queries)
		json_object_set_new(j, "queries", json_integer((json_int_t)m->queries));
	return j;
}

void fc_metrics_from_json(fc_metrics *m, const json_t *j)
{
	for (int i = 0; j && i < M_COUNT; i++) {
		const json_t *v = json_object_get(j, fc_metric_names[i]);
		fc_metric_set(m, i, json_is_number(v) ? json_number_value(v) : NAN);
	}
}
