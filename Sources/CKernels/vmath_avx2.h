// Vectorised exp, log, tanh and sigmoid for AVX2+FMA (8 floats), Cephes-style polynomials,
// within ~2 ulp of libm over the normal range, with libm's handling of +-inf, NaN, 0, negative
// inputs, overflow and gradual underflow. Included by the *_avx2.c files only.
#ifndef QLORA_VMATH_AVX2_H
#define QLORA_VMATH_AVX2_H

#include "kernels_internal.h"

#if QL_X86
#include <immintrin.h>

#define QL_V8(c) _mm256_set1_ps(c)

// exp: x = n ln2 + r, |r| <= ln2/2, e^r by a degree-7 polynomial, times 2^n applied in two
// exact halves so that 2^128 (overflow) and 2^-150 (gradual underflow) round once, like libm.
static inline QL_TARGET_AVX2 __m256 ql_v8_exp(__m256 x) {
    __m256 xc = _mm256_min_ps(QL_V8(88.8f), x); // min/max(c, x) keep a NaN x
    xc = _mm256_max_ps(QL_V8(-104.0f), xc);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, QL_V8(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, QL_V8(0.693359375f), xc);
    r = _mm256_fnmadd_ps(n, QL_V8(-2.12194440e-4f), r);
    __m256 p = QL_V8(1.9875691500E-4f);
    p = _mm256_fmadd_ps(p, r, QL_V8(1.3981999507E-3f));
    p = _mm256_fmadd_ps(p, r, QL_V8(8.3334519073E-3f));
    p = _mm256_fmadd_ps(p, r, QL_V8(4.1665795894E-2f));
    p = _mm256_fmadd_ps(p, r, QL_V8(1.6666665459E-1f));
    p = _mm256_fmadd_ps(p, r, QL_V8(5.0000001201E-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r);
    p = _mm256_add_ps(p, QL_V8(1.0f));
    __m256i ni = _mm256_cvtps_epi32(n);
    __m256i n1 = _mm256_srai_epi32(ni, 1);
    __m256i n2 = _mm256_sub_epi32(ni, n1);
    __m256i bias = _mm256_set1_epi32(127);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

// log: x = m 2^e with m in [sqrt(1/2), sqrt(2)), log(m) by Cephes' polynomial in m-1.
// Subnormals are rescaled by 2^23 first. log(0) = -inf, log(<0) = NaN, log(inf) = inf.
static inline QL_TARGET_AVX2 __m256 ql_v8_log(__m256 x) {
    __m256 tiny = _mm256_cmp_ps(x, QL_V8(1.17549435e-38f), _CMP_LT_OQ);
    __m256 xs = _mm256_blendv_ps(x, _mm256_mul_ps(x, QL_V8(8388608.0f)), tiny);
    __m256i xi = _mm256_castps_si256(xs);
    __m256i ebias = _mm256_blendv_epi8(_mm256_set1_epi32(126), _mm256_set1_epi32(126 + 23),
                                       _mm256_castps_si256(tiny));
    __m256i ei = _mm256_sub_epi32(_mm256_srli_epi32(xi, 23), ebias);
    __m256 m = _mm256_castsi256_ps(_mm256_or_si256(
        _mm256_and_si256(xi, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x3f000000)));
    __m256 e = _mm256_cvtepi32_ps(ei);
    __m256 lt = _mm256_cmp_ps(m, QL_V8(0.707106781186547524f), _CMP_LT_OQ);
    __m256 madd = _mm256_and_ps(m, lt);
    e = _mm256_sub_ps(e, _mm256_and_ps(QL_V8(1.0f), lt));
    m = _mm256_add_ps(_mm256_sub_ps(m, QL_V8(1.0f)), madd);
    __m256 z = _mm256_mul_ps(m, m);
    __m256 y = QL_V8(7.0376836292E-2f);
    y = _mm256_fmadd_ps(y, m, QL_V8(-1.1514610310E-1f));
    y = _mm256_fmadd_ps(y, m, QL_V8(1.1676998740E-1f));
    y = _mm256_fmadd_ps(y, m, QL_V8(-1.2420140846E-1f));
    y = _mm256_fmadd_ps(y, m, QL_V8(1.4249322787E-1f));
    y = _mm256_fmadd_ps(y, m, QL_V8(-1.6668057665E-1f));
    y = _mm256_fmadd_ps(y, m, QL_V8(2.0000714765E-1f));
    y = _mm256_fmadd_ps(y, m, QL_V8(-2.4999993993E-1f));
    y = _mm256_fmadd_ps(y, m, QL_V8(3.3333331174E-1f));
    y = _mm256_mul_ps(_mm256_mul_ps(y, m), z);
    y = _mm256_fmadd_ps(e, QL_V8(-2.12194440e-4f), y);
    y = _mm256_fnmadd_ps(QL_V8(0.5f), z, y);
    __m256 r = _mm256_add_ps(m, y);
    r = _mm256_fmadd_ps(e, QL_V8(0.693359375f), r);
    // special values
    __m256 inf = QL_V8(__builtin_inff());
    r = _mm256_blendv_ps(r, inf, _mm256_cmp_ps(x, inf, _CMP_EQ_OQ));
    r = _mm256_blendv_ps(r, _mm256_sub_ps(QL_V8(0.0f), inf), _mm256_cmp_ps(x, QL_V8(0.0f), _CMP_EQ_OQ));
    r = _mm256_blendv_ps(r, QL_V8(__builtin_nanf("")), _mm256_cmp_ps(x, QL_V8(0.0f), _CMP_NGE_UQ));
    return r;
}

// tanh: |x| < 0.625 odd polynomial (Cephes), else 1 - 2/(exp(2|x|) + 1); sign restored last.
static inline QL_TARGET_AVX2 __m256 ql_v8_tanh(__m256 x) {
    __m256 sign = _mm256_and_ps(x, QL_V8(-0.0f));
    __m256 ax = _mm256_andnot_ps(QL_V8(-0.0f), x);
    __m256 z = _mm256_mul_ps(ax, ax);
    __m256 p = QL_V8(-5.70498872745E-3f);
    p = _mm256_fmadd_ps(p, z, QL_V8(2.06390887954E-2f));
    p = _mm256_fmadd_ps(p, z, QL_V8(-5.37397155531E-2f));
    p = _mm256_fmadd_ps(p, z, QL_V8(1.33314422036E-1f));
    p = _mm256_fmadd_ps(p, z, QL_V8(-3.33332819422E-1f));
    __m256 rs = _mm256_fmadd_ps(_mm256_mul_ps(p, z), ax, ax);
    __m256 e = ql_v8_exp(_mm256_add_ps(ax, ax));
    __m256 rl = _mm256_sub_ps(QL_V8(1.0f), _mm256_div_ps(QL_V8(2.0f), _mm256_add_ps(e, QL_V8(1.0f))));
    __m256 r = _mm256_blendv_ps(rl, rs, _mm256_cmp_ps(ax, QL_V8(0.625f), _CMP_LT_OQ));
    return _mm256_or_ps(r, sign);
}

// sigmoid without overflow: e = exp(-|x|); x >= 0: 1/(1+e), else e/(1+e) (as the scalar).
static inline QL_TARGET_AVX2 __m256 ql_v8_sigmoid(__m256 x) {
    __m256 e = ql_v8_exp(_mm256_or_ps(x, QL_V8(-0.0f)));
    __m256 r = _mm256_div_ps(QL_V8(1.0f), _mm256_add_ps(QL_V8(1.0f), e));
    return _mm256_blendv_ps(_mm256_mul_ps(e, r), r, _mm256_cmp_ps(x, QL_V8(0.0f), _CMP_GE_OQ));
}

// Horizontal helpers.
static inline QL_TARGET_AVX2 double ql_v4d_hsum(__m256d v) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

// Adds the 8 floats of v, widened to double, into two double accumulators.
static inline QL_TARGET_AVX2 void ql_v8_acc_pd(__m256 v, __m256d *lo, __m256d *hi) {
    *lo = _mm256_add_pd(*lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    *hi = _mm256_add_pd(*hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}

#endif
#endif
