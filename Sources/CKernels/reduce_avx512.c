// AVX-512 reductions: max/min with four vector accumulators (NaN tracked in a mask), sums, sums
// of squares and dot products widened to double in eight vector accumulators combined in a fixed
// tree, and the strided column reduction in the scalar order. Tails use masked loads.
#include "kernels_internal.h"

#if QL_X86
#include "vmath_avx512.h"

#include <immintrin.h>
#include <math.h>

#define AI __attribute__((always_inline)) static inline QL_TARGET_AVX512
#define K static QL_TARGET_AVX512

AI __m512 mm_step(__m512 v, __m512 acc, int is_max) {
    return is_max ? _mm512_max_ps(v, acc) : _mm512_min_ps(v, acc);
}

AI float minmax(const float *x, int64_t n, int is_max) {
    const float init = is_max ? -INFINITY : INFINITY;
    __m512 vinit = _mm512_set1_ps(init);
    __m512 a0 = vinit, a1 = vinit, a2 = vinit, a3 = vinit;
    __mmask16 nan = 0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512 v0 = _mm512_loadu_ps(x + i), v1 = _mm512_loadu_ps(x + i + 16);
        __m512 v2 = _mm512_loadu_ps(x + i + 32), v3 = _mm512_loadu_ps(x + i + 48);
        nan |= _mm512_cmp_ps_mask(v0, v1, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(v2, v3, _CMP_UNORD_Q);
        a0 = mm_step(v0, a0, is_max);
        a1 = mm_step(v1, a1, is_max);
        a2 = mm_step(v2, a2, is_max);
        a3 = mm_step(v3, a3, is_max);
    }
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        a0 = mm_step(v, a0, is_max);
    }
    if (i < n) {
        __m512 v = _mm512_mask_loadu_ps(vinit, ql_tail_mask16(n - i), x + i);
        nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        a0 = mm_step(v, a0, is_max);
    }
    if (nan) return NAN;
    a0 = mm_step(a1, a0, is_max);
    a2 = mm_step(a3, a2, is_max);
    a0 = mm_step(a2, a0, is_max);
    return is_max ? _mm512_reduce_max_ps(a0) : _mm512_reduce_min_ps(a0);
}

K float v_max(const float *x, int64_t n) { return minmax(x, n, 1); }
K float v_min(const float *x, int64_t n) { return minmax(x, n, 0); }

// mode 0: sum x, 1: sum x^2, 2: sum x*y. Products of floats are exact in double.
AI void acc_step(int mode, __m512 v, __m512 w, __m512d *lo, __m512d *hi) {
    __m512d dl = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    __m512d dh = _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1));
    if (mode == 0) {
        *lo = _mm512_add_pd(*lo, dl);
        *hi = _mm512_add_pd(*hi, dh);
    } else if (mode == 1) {
        *lo = _mm512_fmadd_pd(dl, dl, *lo);
        *hi = _mm512_fmadd_pd(dh, dh, *hi);
    } else {
        *lo = _mm512_fmadd_pd(dl, _mm512_cvtps_pd(_mm512_castps512_ps256(w)), *lo);
        *hi = _mm512_fmadd_pd(dh, _mm512_cvtps_pd(_mm512_extractf32x8_ps(w, 1)), *hi);
    }
}

AI double dsum(int mode, const float *x, const float *y, int64_t n) {
    __m512d a[8];
    for (int k = 0; k < 8; k++) a[k] = _mm512_setzero_pd();
    __m512 z = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        for (int u = 0; u < 4; u++) {
            __m512 v = _mm512_loadu_ps(x + i + 16 * u);
            __m512 w = mode == 2 ? _mm512_loadu_ps(y + i + 16 * u) : z;
            acc_step(mode, v, w, &a[2 * u], &a[2 * u + 1]);
        }
    }
    for (; i + 16 <= n; i += 16) {
        __m512 w = mode == 2 ? _mm512_loadu_ps(y + i) : z;
        acc_step(mode, _mm512_loadu_ps(x + i), w, &a[0], &a[1]);
    }
    if (i < n) {
        __mmask16 m = ql_tail_mask16(n - i);
        __m512 w = mode == 2 ? _mm512_maskz_loadu_ps(m, y + i) : z;
        acc_step(mode, _mm512_maskz_loadu_ps(m, x + i), w, &a[0], &a[1]);
    }
    __m512d s0 = _mm512_add_pd(_mm512_add_pd(a[0], a[1]), _mm512_add_pd(a[2], a[3]));
    __m512d s1 = _mm512_add_pd(_mm512_add_pd(a[4], a[5]), _mm512_add_pd(a[6], a[7]));
    __m512d s = _mm512_add_pd(s0, s1);
    // fixed horizontal tree: 8 -> 4 -> 2 -> 1
    __m256d h = _mm256_add_pd(_mm512_castpd512_pd256(s), _mm512_extractf64x4_pd(s, 1));
    __m128d q = _mm_add_pd(_mm256_castpd256_pd128(h), _mm256_extractf128_pd(h, 1));
    return _mm_cvtsd_f64(_mm_add_sd(q, _mm_unpackhi_pd(q, q)));
}

K double v_sum(const float *x, int64_t n) { return dsum(0, x, NULL, n); }
K double v_sumsq(const float *x, int64_t n) { return dsum(1, x, NULL, n); }
K double v_dot(const float *a, const float *b, int64_t n) { return dsum(2, a, b, n); }

K void v_cols(int op, const float *x, int64_t n, int64_t stride, int64_t m, float *out) {
    int64_t mv = m & ~(int64_t)15;
    __mmask16 tm = ql_tail_mask16(m - mv);
    __mmask8 tlo = (__mmask8)(tm & 0xFF), thi = (__mmask8)(tm >> 8);
    if (op == QL_RED_SUM) {
        double acc[QL_COLS_BLOCK];
        for (int64_t j = 0; j < m; j++) acc[j] = 0.0;
        for (int64_t k = 0; k < n; k++) {
            const float *row = x + k * stride;
            int64_t j = 0;
            for (; j < mv; j += 16) {
                __m512 v = _mm512_loadu_ps(row + j);
                __m512d lo = _mm512_loadu_pd(acc + j), hi = _mm512_loadu_pd(acc + j + 8);
                ql_v16_acc_pd(v, &lo, &hi);
                _mm512_storeu_pd(acc + j, lo);
                _mm512_storeu_pd(acc + j + 8, hi);
            }
            if (tm) {
                __m512 v = _mm512_maskz_loadu_ps(tm, row + j);
                __m512d lo = _mm512_maskz_loadu_pd(tlo, acc + j);
                __m512d hi = _mm512_maskz_loadu_pd(thi, acc + j + 8);
                ql_v16_acc_pd(v, &lo, &hi);
                _mm512_mask_storeu_pd(acc + j, tlo, lo);
                _mm512_mask_storeu_pd(acc + j + 8, thi, hi);
            }
        }
        for (int64_t j = 0; j < m; j++) out[j] = (float)acc[j];
        return;
    }
    int is_max = op == QL_RED_MAX;
    __m512 vinit = _mm512_set1_ps(is_max ? -INFINITY : INFINITY);
    float acc[QL_COLS_BLOCK];
    uint16_t nanm[QL_COLS_BLOCK / 16 + 1];
    int64_t nblk = (m + 15) / 16;
    for (int64_t j = 0; j < m; j++) acc[j] = is_max ? -INFINITY : INFINITY;
    for (int64_t b = 0; b < nblk; b++) nanm[b] = 0;
    for (int64_t k = 0; k < n; k++) {
        const float *row = x + k * stride;
        for (int64_t b = 0; b < nblk; b++) {
            int64_t j = b * 16;
            __mmask16 mk = j < mv ? (__mmask16)0xFFFF : tm;
            __m512 v = _mm512_mask_loadu_ps(vinit, mk, row + j);
            __m512 a = _mm512_mask_loadu_ps(vinit, mk, acc + j);
            nanm[b] |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
            _mm512_mask_storeu_ps(acc + j, mk, mm_step(v, a, is_max));
        }
    }
    for (int64_t j = 0; j < m; j++) out[j] = ((nanm[j / 16] >> (j % 16)) & 1) ? NAN : acc[j];
}

const ql_red_table ql_red_avx512 = {
    .max = v_max,
    .min = v_min,
    .sum = v_sum,
    .sumsq = v_sumsq,
    .dot = v_dot,
    .cols = v_cols,
};

#endif
