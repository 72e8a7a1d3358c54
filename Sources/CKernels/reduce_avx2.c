// AVX2+FMA reductions: max/min with four vector accumulators (NaN tracked separately), sums,
// sums of squares and dot products widened to double in eight vector accumulators combined in a
// fixed tree, and the strided column reduction in the scalar order.
#include "kernels_internal.h"

#if QL_X86
#include "vmath_avx2.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

#define AI __attribute__((always_inline)) static inline QL_TARGET_AVX2
#define K static QL_TARGET_AVX2

// (v > acc ? v : acc) / (v < acc ? v : acc), exactly as the scalar reference steps
AI __m256 mm_step(__m256 v, __m256 acc, int is_max) {
    return is_max ? _mm256_max_ps(v, acc) : _mm256_min_ps(v, acc);
}

AI float minmax(const float *x, int64_t n, int is_max) {
    const float init = is_max ? -INFINITY : INFINITY;
    __m256 a0 = _mm256_set1_ps(init), a1 = a0, a2 = a0, a3 = a0;
    __m256 nan = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8);
        __m256 v2 = _mm256_loadu_ps(x + i + 16), v3 = _mm256_loadu_ps(x + i + 24);
        nan = _mm256_or_ps(nan, _mm256_or_ps(_mm256_cmp_ps(v0, v1, _CMP_UNORD_Q),
                                             _mm256_cmp_ps(v2, v3, _CMP_UNORD_Q)));
        a0 = mm_step(v0, a0, is_max);
        a1 = mm_step(v1, a1, is_max);
        a2 = mm_step(v2, a2, is_max);
        a3 = mm_step(v3, a3, is_max);
    }
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        a0 = mm_step(v, a0, is_max);
    }
    if (i < n) {
        float t[8];
        for (int k = 0; k < 8; k++) t[k] = init;
        memcpy(t, x + i, (size_t)(n - i) * sizeof(float));
        __m256 v = _mm256_loadu_ps(t);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        a0 = mm_step(v, a0, is_max);
    }
    if (_mm256_movemask_ps(nan)) return NAN;
    a0 = mm_step(a1, a0, is_max);
    a2 = mm_step(a3, a2, is_max);
    a0 = mm_step(a2, a0, is_max);
    float l[8];
    _mm256_storeu_ps(l, a0);
    float m = l[0];
    for (int k = 1; k < 8; k++) m = is_max ? (l[k] > m ? l[k] : m) : (l[k] < m ? l[k] : m);
    return m;
}

K float v_max(const float *x, int64_t n) { return minmax(x, n, 1); }
K float v_min(const float *x, int64_t n) { return minmax(x, n, 0); }

// mode 0: sum x, 1: sum x^2, 2: sum x*y. Products of floats are exact in double.
AI void acc_step(int mode, __m256 v, __m256 w, __m256d *lo, __m256d *hi) {
    __m256d dl = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
    __m256d dh = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
    if (mode == 0) {
        *lo = _mm256_add_pd(*lo, dl);
        *hi = _mm256_add_pd(*hi, dh);
    } else if (mode == 1) {
        *lo = _mm256_fmadd_pd(dl, dl, *lo);
        *hi = _mm256_fmadd_pd(dh, dh, *hi);
    } else {
        *lo = _mm256_fmadd_pd(dl, _mm256_cvtps_pd(_mm256_castps256_ps128(w)), *lo);
        *hi = _mm256_fmadd_pd(dh, _mm256_cvtps_pd(_mm256_extractf128_ps(w, 1)), *hi);
    }
}

AI double dsum(int mode, const float *x, const float *y, int64_t n) {
    __m256d a[8];
    for (int k = 0; k < 8; k++) a[k] = _mm256_setzero_pd();
    __m256 z = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        for (int u = 0; u < 4; u++) {
            __m256 v = _mm256_loadu_ps(x + i + 8 * u);
            __m256 w = mode == 2 ? _mm256_loadu_ps(y + i + 8 * u) : z;
            acc_step(mode, v, w, &a[2 * u], &a[2 * u + 1]);
        }
    }
    for (; i + 8 <= n; i += 8) {
        __m256 w = mode == 2 ? _mm256_loadu_ps(y + i) : z;
        acc_step(mode, _mm256_loadu_ps(x + i), w, &a[0], &a[1]);
    }
    if (i < n) {
        size_t r = (size_t)(n - i) * sizeof(float);
        float tx[8] = {0}, ty[8] = {0};
        memcpy(tx, x + i, r);
        if (mode == 2) memcpy(ty, y + i, r);
        acc_step(mode, _mm256_loadu_ps(tx), _mm256_loadu_ps(ty), &a[0], &a[1]);
    }
    __m256d s0 = _mm256_add_pd(_mm256_add_pd(a[0], a[1]), _mm256_add_pd(a[2], a[3]));
    __m256d s1 = _mm256_add_pd(_mm256_add_pd(a[4], a[5]), _mm256_add_pd(a[6], a[7]));
    return ql_v4d_hsum(_mm256_add_pd(s0, s1));
}

K double v_sum(const float *x, int64_t n) { return dsum(0, x, NULL, n); }
K double v_sumsq(const float *x, int64_t n) { return dsum(1, x, NULL, n); }
K double v_dot(const float *a, const float *b, int64_t n) { return dsum(2, a, b, n); }

K void v_cols(int op, const float *x, int64_t n, int64_t stride, int64_t m, float *out) {
    int64_t mv = m & ~(int64_t)7; // vectorised columns; the rest as in the scalar reference
    if (op == QL_RED_SUM) {
        double acc[QL_COLS_BLOCK];
        for (int64_t j = 0; j < m; j++) acc[j] = 0.0;
        for (int64_t k = 0; k < n; k++) {
            const float *row = x + k * stride;
            int64_t j = 0;
            for (; j < mv; j += 8) {
                __m256 v = _mm256_loadu_ps(row + j);
                __m256d lo = _mm256_loadu_pd(acc + j), hi = _mm256_loadu_pd(acc + j + 4);
                ql_v8_acc_pd(v, &lo, &hi);
                _mm256_storeu_pd(acc + j, lo);
                _mm256_storeu_pd(acc + j + 4, hi);
            }
            for (; j < m; j++) acc[j] += (double)row[j];
        }
        for (int64_t j = 0; j < m; j++) out[j] = (float)acc[j];
        return;
    }
    int is_max = op == QL_RED_MAX;
    const float init = is_max ? -INFINITY : INFINITY;
    float acc[QL_COLS_BLOCK];
    float nanm[QL_COLS_BLOCK]; // all-ones bit pattern once a NaN was seen
    for (int64_t j = 0; j < m; j++) {
        acc[j] = init;
        nanm[j] = 0.0f;
    }
    for (int64_t k = 0; k < n; k++) {
        const float *row = x + k * stride;
        int64_t j = 0;
        for (; j < mv; j += 8) {
            __m256 v = _mm256_loadu_ps(row + j);
            __m256 a = _mm256_loadu_ps(acc + j);
            __m256 nm = _mm256_or_ps(_mm256_loadu_ps(nanm + j), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
            _mm256_storeu_ps(nanm + j, nm);
            _mm256_storeu_ps(acc + j, mm_step(v, a, is_max));
        }
        for (; j < m; j++) {
            float v = row[j];
            if (v != v) nanm[j] = NAN;
            acc[j] = is_max ? (v > acc[j] ? v : acc[j]) : (v < acc[j] ? v : acc[j]);
        }
    }
    for (int64_t j = 0; j < m; j++) {
        uint32_t bits;
        memcpy(&bits, &nanm[j], sizeof bits);
        out[j] = bits ? NAN : acc[j];
    }
}

const ql_red_table ql_red_avx2 = {
    .max = v_max,
    .min = v_min,
    .sum = v_sum,
    .sumsq = v_sumsq,
    .dot = v_dot,
    .cols = v_cols,
};

#endif
