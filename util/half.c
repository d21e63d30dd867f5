/*
 * half.c - f32 <-> IEEE binary16 and bfloat16 conversion: the store's f16
 * and bf16 chunks, safetensors F16/BF16 tensors, and test data.
 */
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define FC_F16C 1
#include <cpuid.h>
#include <immintrin.h>
#include <stdatomic.h>
#else
#define FC_F16C 0
#endif

#define BLK 64 /* inner loop length the compiler vectorizes */

/* ---- f16 ---- */

/* Round to nearest even; overflow goes to inf; a NaN keeps its sign and the
 * top 10 payload bits and is made quiet, which is what VCVTPS2PH does. */
static uint16_t f16_from_bits(uint32_t x)
{
	uint32_t sign = (x >> 16) & 0x8000u;
	uint32_t a = x & 0x7fffffffu;

	if (a > 0x7f800000u)
		return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
	if (a >= 0x477ff000u) /* >= 65520: the tie above 65504 goes to even, i.e. inf */
		return (uint16_t)(sign | 0x7c00u);
	if (a >= 0x38800000u) { /* normal half: >= 2^-14 */
		uint32_t h = (a >> 13) - (112u << 10);
		uint32_t rest = a & 0x1fffu;
		h += rest > 0x1000u || (rest == 0x1000u && (h & 1u));
		return (uint16_t)(sign | h);
	}
	if (a <= 0x33000000u) /* <= 2^-25: the tie with 2^-24 goes to even, i.e. 0 */
		return (uint16_t)sign;
	/* subnormal half: the value in units of 2^-24, carry into 2^-14 is fine */
	uint32_t m = (a & 0x7fffffu) | 0x800000u;
	uint32_t shift = 126u - (a >> 23);
	uint32_t h = m >> shift;
	uint32_t rest = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
	h += rest > half || (rest == half && (h & 1u));
	return (uint16_t)(sign | h);
}

/* Exact; a NaN is made quiet (as VCVTPH2PS does). */
static uint32_t f16_to_bits(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;

	if (e == 0x1f)
		return sign | 0x7f800000u | (m ? 0x400000u | (m << 13) : 0u);
	if (e != 0)
		return sign | ((e + 112u) << 23) | (m << 13);
	if (m == 0)
		return sign;
	/* subnormal: m * 2^-24 is exact in f32 */
	return sign | fci_f32_bits((float)m * 0x1p-24f);
}

static void f32_to_f16_scalar(uint16_t *dst, const float *src, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dst[i] = f16_from_bits(fci_f32_bits(src[i]));
}

static void f16_to_f32_scalar(float *dst, const uint16_t *src, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dst[i] = fci_f32_from_bits(f16_to_bits(src[i]));
}

#if FC_F16C
/* __builtin_cpu_supports("avx2") also checks that the OS saves the ymm
 * state. clang 14 does not know "f16c" there, so that bit comes from cpuid
 * (leaf 1, ecx bit 29); cpuid can trap to the hypervisor in a VM, hence the
 * cached answer (0 unknown, 1 no, 2 yes; racing threads store the same). */
static int cpu_has_f16c(void)
{
	static _Atomic int state;
	int s = atomic_load_explicit(&state, memory_order_relaxed);
	if (s == 0) {
		unsigned a, b, c, d;
		int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
		s = __builtin_cpu_supports("avx2") && f16c ? 2 : 1;
		atomic_store_explicit(&state, s, memory_order_relaxed);
	}
	return s == 2;
}

/* n must be a multiple of 8. */
__attribute__((target("avx2,f16c"))) static void f32_to_f16_f16c(uint16_t *dst, const float *src, size_t n)
{
	for (size_t i = 0; i < n; i += 8) {
		__m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
		_mm_storeu_si128((__m128i *)(void *)(dst + i), h);
	}
}

__attribute__((target("avx2,f16c"))) static void f16_to_f32_f16c(float *dst, const uint16_t *src, size_t n)
{
	for (size_t i = 0; i < n; i += 8) {
		__m128i h = _mm_loadu_si128((const __m128i *)(const void *)(src + i));
		_mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
	}
}
#endif

/* How many of n elements the F16C path takes: whole groups of 8, when the
 * CPU has it; the scalar code does the rest. So calls with n < 8 always run
 * the portable code: the tests rely on that to check both paths against
 * their reference. */
static size_t vector_part(size_t n)
{
#if FC_F16C
	return cpu_has_f16c() ? n & ~(size_t)7 : 0;
#else
	(void)n;
	return 0;
#endif
}

void fci_f32_to_f16(uint16_t *dst, const float *src, size_t n)
{
	size_t body = vector_part(n);
#if FC_F16C
	if (body)
		f32_to_f16_f16c(dst, src, body);
#endif
	f32_to_f16_scalar(dst + body, src + body, n - body);
}

void fci_f16_to_f32(float *dst, const uint16_t *src, size_t n)
{
	size_t body = vector_part(n);
#if FC_F16C
	if (body)
		f16_to_f32_f16c(dst, src, body);
#endif
	f16_to_f32_scalar(dst + body, src + body, n - body);
}

/* ---- bf16 ---- */

/* Round to nearest even by adding just under half an ulp plus the lsb; a
 * NaN would carry into the sign that way, so it is truncated and made quiet
 * instead. Branch-free so that the blocked loop below vectorizes. */
static inline uint16_t bf16_from_bits(uint32_t x)
{
	uint32_t rounded = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
	uint32_t nan = (x & 0x7fffffffu) > 0x7f800000u;
	return (uint16_t)(nan ? (x >> 16) | 0x40u : rounded);
}

static inline void bf16_store(uint16_t *restrict dst, const float *restrict src, size_t i)
{
	uint32_t x;
	memcpy(&x, src + i, 4);
	dst[i] = bf16_from_bits(x);
}

static inline void bf16_load(float *restrict dst, const uint16_t *restrict src, size_t i)
{
	uint32_t x = (uint32_t)src[i] << 16;
	memcpy(dst + i, &x, 4);
}

void fci_f32_to_bf16(uint16_t *restrict dst, const float *restrict src, size_t n)
{
	size_t i = 0;
	for (; i + BLK <= n; i += BLK)
		for (size_t j = 0; j < BLK; j++)
			bf16_store(dst, src, i + j);
	for (; i < n; i++)
		bf16_store(dst, src, i);
}

void fci_bf16_to_f32(float *restrict dst, const uint16_t *restrict src, size_t n)
{
	size_t i = 0;
	for (; i + BLK <= n; i += BLK)
		for (size_t j = 0; j < BLK; j++)
			bf16_load(dst, src, i + j);
	for (; i < n; i++)
		bf16_load(dst, src, i);
}

