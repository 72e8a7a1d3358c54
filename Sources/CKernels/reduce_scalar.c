// Scalar reference reductions: max/min (NaN-propagating), sums / sums of squares / dot products
// accumulated sequentially in double, and the strided column reduction. Never deleted.
#include "kernels_internal.h"

#include <math.h>

#ifdef __clang__
#pragma clang fp contract(off) // the reference never fuses a*b+c
#endif

static float s_max(const float *x, int64_t n) {
    float m = -INFINITY;
    int nan = 0;
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        nan |= v != v;
        m = v > m ? v : m;
    }
    return nan ? NAN : m;
}

static float s_min(const float *x, int64_t n) {
    float m = INFINITY;
    int nan = 0;
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        nan |= v != v;
        m = v < m ? v : m;
    }
    return nan ? NAN : m;
}

static double s_sum(const float *x, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i];
    return s;
}

static double s_sumsq(const float *x, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double v = (double)x[i];
        s += v * v;
    }
    return s;
}

static double s_dot(const float *a, const float *b, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * (double)b[i];
    return s;
}

// Column reduction: k runs sequentially for each column; sums per column in double. The SIMD
// levels follow the same order, so all levels agree bit for bit here (up to the sign of zero
// for max/min).
static void s_cols(int op, const float *x, int64_t n, int64_t stride, int64_t m, float *out) {
    if (op == QL_RED_SUM) {
        double acc[QL_COLS_BLOCK];
        for (int64_t j = 0; j < m; j++) acc[j] = 0.0;
        for (int64_t k = 0; k < n; k++) {
            const float *row = x + k * stride;
            for (int64_t j = 0; j < m; j++) acc[j] += (double)row[j];
        }
        for (int64_t j = 0; j < m; j++) out[j] = (float)acc[j];
        return;
    }
    float acc[QL_COLS_BLOCK];
    unsigned char nan[QL_COLS_BLOCK];
    int is_max = op == QL_RED_MAX;
    for (int64_t j = 0; j < m; j++) {
        acc[j] = is_max ? -INFINITY : INFINITY;
        nan[j] = 0;
    }
    for (int64_t k = 0; k < n; k++) {
        const float *row = x + k * stride;
        for (int64_t j = 0; j < m; j++) {
            float v = row[j];
            nan[j] |= v != v;
            acc[j] = is_max ? (v > acc[j] ? v : acc[j]) : (v < acc[j] ? v : acc[j]);
        }
    }
    for (int64_t j = 0; j < m; j++) out[j] = nan[j] ? NAN : acc[j];
}

const ql_red_table ql_red_scalar = {
    .max = s_max,
    .min = s_min,
    .sum = s_sum,
    .sumsq = s_sumsq,
    .dot = s_dot,
    .cols = s_cols,
};
