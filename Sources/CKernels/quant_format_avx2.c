// AVX2 versions of the 4-bit quantize / dequantize kernels of quant_format.c (8 floats per
// vector, 32 elements = 16 packed bytes per step). Same arithmetic as the scalar reference, so
// the same bits: absmax by exact max (NaN tracked apart), the f32 reciprocal computed once per
// block, the rank of a scaled value counted with 15 vector compares against the midpoints, and
// the 16-entry code table read with two 8-entry permutes. Full blocks only (a multiple of 32
// elements); the driver handles the partial last block with the scalar code.
#include "kernels_internal.h"

#if QL_X86
#include <immintrin.h>

#pragma STDC FP_CONTRACT OFF

#define AI __attribute__((always_inline)) static inline QL_TARGET_AVX2

// max |x| over len (a multiple of 32) elements; NaN if any is NaN; clamped below at 1e-38.
AI float block_absmax(const float *x, int64_t len) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m0 = _mm256_setzero_ps(), m1 = m0, m2 = m0, m3 = m0, nan = m0;
    for (int64_t i = 0; i < len; i += 32) {
        __m256 a0 = _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i));
        __m256 a1 = _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i + 8));
        __m256 a2 = _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i + 16));
        __m256 a3 = _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i + 24));
        // max_ps(a, m) returns m when a is NaN: NaNs are recorded separately.
        m0 = _mm256_max_ps(a0, m0);
        m1 = _mm256_max_ps(a1, m1);
        m2 = _mm256_max_ps(a2, m2);
        m3 = _mm256_max_ps(a3, m3);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(a0, a1, _CMP_UNORD_Q));
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(a2, a3, _CMP_UNORD_Q));
    }
    if (_mm256_movemask_ps(nan)) return __builtin_nanf("");
    __m256 m = _mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    float r = _mm_cvtss_f32(h);
    return r < 1e-38f ? 1e-38f : r;
}

// Code indices (as int32 lanes) of 8 values already scaled: NaN counts as 0, then the number
// of midpoints strictly below the value.
AI __m256i ranks8(__m256 s, const __m256 *mid) {
    s = _mm256_and_ps(s, _mm256_cmp_ps(s, s, _CMP_ORD_Q)); // NaN -> +0
    __m256i r = _mm256_setzero_si256();
    for (int k = 0; k < 15; k++)
        r = _mm256_sub_epi32(r, _mm256_castps_si256(_mm256_cmp_ps(s, mid[k], _CMP_GT_OQ)));
    return r;
}

QL_TARGET_AVX2
static void quantize_blocks(const float *x, int64_t nblocks, int64_t block, const float *mid,
                            const uint8_t *code_of_rank, uint8_t *packed, float *absmax) {
    __m256 vmid[15];
    for (int k = 0; k < 15; k++) vmid[k] = _mm256_set1_ps(mid[k]);
    // rank -> code byte lookup (both 128-bit lanes), and the dword order that undoes the
    // in-lane interleaving of packs/packus.
    const __m256i rank_to_code =
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)code_of_rank));
    const __m256i unshuffle = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const __m256i pair_weights = _mm256_set1_epi16(0x0110); // even element * 16 + odd * 1
    for (int64_t b = 0; b < nblocks; b++) {
        const float *xb = x + b * block;
        uint8_t *pb = packed + b * (block / 2);
        float am = block_absmax(xb, block);
        absmax[b] = am;
        const __m256 inv = _mm256_set1_ps(1.0f / am);
        for (int64_t i = 0; i < block; i += 32) {
            __m256i r0 = ranks8(_mm256_mul_ps(_mm256_loadu_ps(xb + i), inv), vmid);
            __m256i r1 = ranks8(_mm256_mul_ps(_mm256_loadu_ps(xb + i + 8), inv), vmid);
            __m256i r2 = ranks8(_mm256_mul_ps(_mm256_loadu_ps(xb + i + 16), inv), vmid);
            __m256i r3 = ranks8(_mm256_mul_ps(_mm256_loadu_ps(xb + i + 24), inv), vmid);
            __m256i w01 = _mm256_packs_epi32(r0, r1);
            __m256i w23 = _mm256_packs_epi32(r2, r3);
            __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(w01, w23), unshuffle);
            __m256i codes = _mm256_shuffle_epi8(rank_to_code, bytes); // 32 codes, element order
            __m256i pairs = _mm256_maddubs_epi16(codes, pair_weights); // 16 x (hi << 4 | lo)
            __m256i nib = _mm256_packus_epi16(pairs, pairs);
            nib = _mm256_permute4x64_epi64(nib, 0x08); // qwords 0 and 2 -> low 128 bits
            _mm_storeu_si128((__m128i *)(pb + i / 2), _mm256_castsi256_si128(nib));
        }
    }
}

// Inverse: 8 code indices (int32 lanes 0..15) -> code values, via two 8-entry permutes and a
// blend on bit 3.
AI __m256 lookup8(__m256i idx, __m256 code_lo, __m256 code_hi) {
    __m256 lo = _mm256_permutevar8x32_ps(code_lo, idx);
    __m256 hi = _mm256_permutevar8x32_ps(code_hi, idx);
    return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}

QL_TARGET_AVX2
static void dequantize_blocks(const uint8_t *packed, const float *absmax, int64_t nblocks,
                              int64_t block, const float *code, float *out) {
    const __m256 code_lo = _mm256_loadu_ps(code), code_hi = _mm256_loadu_ps(code + 8);
    const __m128i low4 = _mm_set1_epi8(0x0F);
    for (int64_t b = 0; b < nblocks; b++) {
        const uint8_t *pb = packed + b * (block / 2);
        float *ob = out + b * block;
        const __m256 scale = _mm256_set1_ps(absmax[b]);
        for (int64_t i = 0; i < block; i += 32) {
            __m128i raw = _mm_loadu_si128((const __m128i *)(pb + i / 2));
            __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), low4);
            __m128i lo = _mm_and_si128(raw, low4);
            __m128i e0 = _mm_unpacklo_epi8(hi, lo); // elements 0..15 in order
            __m128i e1 = _mm_unpackhi_epi8(hi, lo); // elements 16..31
            __m256i i0 = _mm256_cvtepu8_epi32(e0);
            __m256i i1 = _mm256_cvtepu8_epi32(_mm_srli_si128(e0, 8));
            __m256i i2 = _mm256_cvtepu8_epi32(e1);
            __m256i i3 = _mm256_cvtepu8_epi32(_mm_srli_si128(e1, 8));
            _mm256_storeu_ps(ob + i, _mm256_mul_ps(lookup8(i0, code_lo, code_hi), scale));
            _mm256_storeu_ps(ob + i + 8, _mm256_mul_ps(lookup8(i1, code_lo, code_hi), scale));
            _mm256_storeu_ps(ob + i + 16, _mm256_mul_ps(lookup8(i2, code_lo, code_hi), scale));
            _mm256_storeu_ps(ob + i + 24, _mm256_mul_ps(lookup8(i3, code_lo, code_hi), scale));
        }
    }
}

const ql_q4_table ql_q4_avx2 = {quantize_blocks, dequantize_blocks};

#endif
