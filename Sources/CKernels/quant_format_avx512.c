// AVX-512 versions of the 4-bit quantize / dequantize kernels of quant_format.c (16 floats per
// vector, 32 elements = 16 packed bytes per step). Same arithmetic as the scalar reference, so
// the same bits: absmax by exact max (NaN tracked apart), the f32 reciprocal computed once per
// block, the rank of a scaled value found by a 4-step branchless binary search over the 15
// midpoints (vpermps on the midpoint table), and dequantization by vpermps on the 16-entry code
// table. Full blocks only (a multiple of 32 elements); the driver handles the partial last
// block with the scalar code.
#include "kernels_internal.h"

#if QL_X86
#include <immintrin.h>

#pragma STDC FP_CONTRACT OFF

#define AI __attribute__((always_inline)) static inline QL_TARGET_AVX512

// max |x| over len (a multiple of 32) elements; NaN if any is NaN; clamped below at 1e-38.
AI float block_absmax(const float *x, int64_t len) {
    __m512 m0 = _mm512_setzero_ps(), m1 = m0;
    __mmask16 nan = 0;
    for (int64_t i = 0; i < len; i += 32) {
        __m512 a0 = _mm512_abs_ps(_mm512_loadu_ps(x + i));
        __m512 a1 = _mm512_abs_ps(_mm512_loadu_ps(x + i + 16));
        m0 = _mm512_max_ps(a0, m0); // returns m0 where a0 is NaN: NaNs are recorded apart
        m1 = _mm512_max_ps(a1, m1);
        nan |= _mm512_cmp_ps_mask(a0, a1, _CMP_UNORD_Q);
    }
    if (nan) return __builtin_nanf("");
    float r = _mm512_reduce_max_ps(_mm512_max_ps(m0, m1));
    return r < 1e-38f ? 1e-38f : r;
}

// Code indices (int32 lanes) of 16 scaled values: NaN counts as 0; the rank (number of
// midpoints strictly below) by binary search over mid[0..14], then the code of that rank.
AI __m512i codes16(__m512 s, __m512 mid, __m512i code_of_rank) {
    s = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(s, s, _CMP_ORD_Q), s); // NaN -> +0
    __m512i r = _mm512_setzero_si512();
    for (int step = 8; step >= 1; step >>= 1) {
        __m512 m = _mm512_permutexvar_ps(_mm512_add_epi32(r, _mm512_set1_epi32(step - 1)), mid);
        __mmask16 above = _mm512_cmp_ps_mask(s, m, _CMP_GT_OQ);
        r = _mm512_mask_add_epi32(r, above, r, _mm512_set1_epi32(step));
    }
    return _mm512_permutexvar_epi32(r, code_of_rank);
}

// 16 codes (int32 lanes, element order) -> 8 bytes, element 2i in the high nibble.
AI __m128i pack16(__m512i c) {
    // In each 64-bit lane: low dword = even element, high dword = odd element.
    __m512i pair = _mm512_or_si512(_mm512_slli_epi64(c, 4), _mm512_srli_epi64(c, 32));
    return _mm512_cvtepi64_epi8(pair); // low byte of each lane: (even << 4) | odd
}

QL_TARGET_AVX512
static void quantize_blocks(const float *x, int64_t nblocks, int64_t block,
                            const float *mid, const uint8_t *code_of_rank, uint8_t *packed,
                            float *absmax) {
    const __m512 vmid = _mm512_loadu_ps(mid); // mid[15] is never indexed (rank + step - 1 <= 14)
    const __m512i vcode_of_rank =
        _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)code_of_rank));
    for (int64_t b = 0; b < nblocks; b++) {
        const float *xb = x + b * block;
        uint8_t *pb = packed + b * (block / 2);
        float am = block_absmax(xb, block);
        absmax[b] = am;
        const __m512 inv = _mm512_set1_ps(1.0f / am);
        for (int64_t i = 0; i < block; i += 32) {
            __m512i c0 = codes16(_mm512_mul_ps(_mm512_loadu_ps(xb + i), inv), vmid, vcode_of_rank);
            __m512i c1 =
                codes16(_mm512_mul_ps(_mm512_loadu_ps(xb + i + 16), inv), vmid, vcode_of_rank);
            __m128i out = _mm_unpacklo_epi64(pack16(c0), pack16(c1));
            _mm_storeu_si128((__m128i *)(pb + i / 2), out);
        }
    }
}

QL_TARGET_AVX512
static void dequantize_blocks(const uint8_t *packed, const float *absmax, int64_t nblocks,
                              int64_t block, const float *code, float *out) {
    const __m512 vcode = _mm512_loadu_ps(code);
    const __m128i low4 = _mm_set1_epi8(0x0F);
    for (int64_t b = 0; b < nblocks; b++) {
        const uint8_t *pb = packed + b * (block / 2);
        float *ob = out + b * block;
        const __m512 scale = _mm512_set1_ps(absmax[b]);
        for (int64_t i = 0; i < block; i += 32) {
            __m128i raw = _mm_loadu_si128((const __m128i *)(pb + i / 2));
            __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), low4);
            __m128i lo = _mm_and_si128(raw, low4);
            __m512i i0 = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(hi, lo)); // elements 0..15
            __m512i i1 = _mm512_cvtepu8_epi32(_mm_unpackhi_epi8(hi, lo)); // elements 16..31
            _mm512_storeu_ps(ob + i, _mm512_mul_ps(_mm512_permutexvar_ps(i0, vcode), scale));
            _mm512_storeu_ps(ob + i + 16,
                             _mm512_mul_ps(_mm512_permutexvar_ps(i1, vcode), scale));
        }
    }
}

const ql_q4_table ql_q4_avx512 = {quantize_blocks, dequantize_blocks};

#endif
