// Vectorised exp, log, tanh and sigmoid for AVX-512 (16 floats): the same Cephes-style
// polynomials as vmath_avx2.h, with vscalefps doing the 2^n scaling (single rounding on
// overflow and gradual underflow). Included by the *_avx512.c files only.
#ifndef QLORA_VMATH_AVX512_H
#define QLORA_VMATH_AVX512_H

#include "kernels_internal.h"

#if QL_X86
#include <immintrin.h>

#define QL_V16(c) _mm512_set1_ps(c)
#define QL_ROUND_NEAREST (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

static inline QL_TARGET_AVX512 __m512 ql_v16_exp(__m512 x) {
    __m512 xc = _mm512_min_ps(QL_V16(88.8f), x); // min/max(c, x) keep a NaN x
    xc = _mm512_max_ps(QL_V16(-104.0f), xc);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, QL_V16(1.44269504088896341f)),
                                    QL_ROUND_NEAREST);
    __m512 r = _mm512_fnmadd_ps(n, QL_V16(0.693359375f), xc);
    r = _mm512_fnmadd_ps(n, QL_V16(-2.12194440e-4f), r);
    __m512 p = QL_V16(1.9875691500E-4f);
    p = _mm512_fmadd_ps(p, r, QL_V16(1.3981999507E-3f));
    p = _mm512_fmadd_ps(p, r, QL_V16(8.3334519073E-3f));
    p = _mm512_fmadd_ps(p, r, QL_V16(4.1665795894E-2f));
    p = _mm512_fmadd_ps(p, r, QL_V16(1.6666665459E-1f));
    p = _mm512_fmadd_ps(p, r, QL_V16(5.0000001201E-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r);
    p = _mm512_add_ps(p, QL_V16(1.0f));
    return _mm512_scalef_ps(p, n);
}

static inline QL_TARGET_AVX512 __m512 ql_v16_log(__m512 x) {
    __mmask16 tiny = _mm512_cmp_ps_mask(x, QL_V16(1.17549435e-38f), _CMP_LT_OQ);
    __m512 xs = _mm512_mask_mul_ps(x, tiny, x, QL_V16(8388608.0f));
    __m512i xi = _mm512_castps_si512(xs);
    __m512i ebias = _mm512_mask_blend_epi32(tiny, _mm512_set1_epi32(126),
                                            _mm512_set1_epi32(126 + 23));
    __m512i ei = _mm512_sub_epi32(_mm512_srli_epi32(xi, 23), ebias);
    __m512 m = _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_and_si512(xi, _mm512_set1_epi32(0x007fffff)), _mm512_set1_epi32(0x3f000000)));
    __m512 e = _mm512_cvtepi32_ps(ei);
    __mmask16 lt = _mm512_cmp_ps_mask(m, QL_V16(0.707106781186547524f), _CMP_LT_OQ);
    e = _mm512_mask_sub_ps(e, lt, e, QL_V16(1.0f));
    __m512 m1 = _mm512_sub_ps(m, QL_V16(1.0f));
    m = _mm512_mask_add_ps(m1, lt, m1, m);
    __m512 z = _mm512_mul_ps(m, m);
    __m512 y = QL_V16(7.0376836292E-2f);
    y = _mm512_fmadd_ps(y, m, QL_V16(-1.1514610310E-1f));
    y = _mm512_fmadd_ps(y, m, QL_V16(1.1676998740E-1f));
    y = _mm512_fmadd_ps(y, m, QL_V16(-1.2420140846E-1f));
    y = _mm512_fmadd_ps(y, m, QL_V16(1.4249322787E-1f));
    y = _mm512_fmadd_ps(y, m, QL_V16(-1.6668057665E-1f));
    y = _mm512_fmadd_ps(y, m, QL_V16(2.0000714765E-1f));
    y = _mm512_fmadd_ps(y, m, QL_V16(-2.4999993993E-1f));
    y = _mm512_fmadd_ps(y, m, QL_V16(3.3333331174E-1f));
    y = _mm512_mul_ps(_mm512_mul_ps(y, m), z);
    y = _mm512_fmadd_ps(e, QL_V16(-2.12194440e-4f), y);
    y = _mm512_fnmadd_ps(QL_V16(0.5f), z, y);
    __m512 r = _mm512_add_ps(m, y);
    r = _mm512_fmadd_ps(e, QL_V16(0.693359375f), r);
    __m512 inf = QL_V16(__builtin_inff());
    r = _mm512_mask_mov_ps(r, _mm512_cmp_ps_mask(x, inf, _CMP_EQ_OQ), inf);
    r = _mm512_mask_mov_ps(r, _mm512_cmp_ps_mask(x, QL_V16(0.0f), _CMP_EQ_OQ), QL_V16(-__builtin_inff()));
    r = _mm512_mask_mov_ps(r, _mm512_cmp_ps_mask(x, QL_V16(0.0f), _CMP_NGE_UQ),
                           QL_V16(__builtin_nanf("")));
    return r;
}

static inline QL_TARGET_AVX512 __m512 ql_v16_tanh(__m512 x) {
    __m512i signbit = _mm512_set1_epi32((int)0x80000000u);
    __m512i xi = _mm512_castps_si512(x);
    __m512i sign = _mm512_and_si512(xi, signbit);
    __m512 ax = _mm512_castsi512_ps(_mm512_andnot_si512(signbit, xi));
    __m512 z = _mm512_mul_ps(ax, ax);
    __m512 p = QL_V16(-5.70498872745E-3f);
    p = _mm512_fmadd_ps(p, z, QL_V16(2.06390887954E-2f));
    p = _mm512_fmadd_ps(p, z, QL_V16(-5.37397155531E-2f));
    p = _mm512_fmadd_ps(p, z, QL_V16(1.33314422036E-1f));
    p = _mm512_fmadd_ps(p, z, QL_V16(-3.33332819422E-1f));
    __m512 rs = _mm512_fmadd_ps(_mm512_mul_ps(p, z), ax, ax);
    __m512 e = ql_v16_exp(_mm512_add_ps(ax, ax));
    __m512 rl = _mm512_sub_ps(QL_V16(1.0f),
                              _mm512_div_ps(QL_V16(2.0f), _mm512_add_ps(e, QL_V16(1.0f))));
    __m512 r = _mm512_mask_mov_ps(rl, _mm512_cmp_ps_mask(ax, QL_V16(0.625f), _CMP_LT_OQ), rs);
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(r), sign));
}

static inline QL_TARGET_AVX512 __m512 ql_v16_sigmoid(__m512 x) {
    __m512 nax = _mm512_castsi512_ps(
        _mm512_or_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int)0x80000000u)));
    __m512 e = ql_v16_exp(nax);
    __m512 r = _mm512_div_ps(QL_V16(1.0f), _mm512_add_ps(QL_V16(1.0f), e));
    __mmask16 ge = _mm512_cmp_ps_mask(x, QL_V16(0.0f), _CMP_GE_OQ);
    return _mm512_mask_mov_ps(_mm512_mul_ps(e, r), ge, r);
}

// Adds the 16 floats of v, widened to double, into two double accumulators.
static inline QL_TARGET_AVX512 void ql_v16_acc_pd(__m512 v, __m512d *lo, __m512d *hi) {
    *lo = _mm512_add_pd(*lo, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    *hi = _mm512_add_pd(*hi, _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)));
}

static inline QL_TARGET_AVX512 __mmask16 ql_tail_mask16(int64_t r) {
    return (__mmask16)((1u << r) - 1u);
}

#endif
#endif
