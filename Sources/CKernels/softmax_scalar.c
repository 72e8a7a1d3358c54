// Scalar reference pieces of softmax / log_softmax and their backward passes (plain C, libm).
// softmax.c strings them into passes: max, exp+sum, then scale (or subtract / apply gradient).
#include "kernels_internal.h"

#include <math.h>

#ifdef __clang__
#pragma clang fp contract(off) // the reference never fuses a*b+c
#endif

static double s_exp_sum(const float *x, float m, float *y, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) {
        float e = expf(x[i] - m);
        if (y) y[i] = e;
        s += (double)e;
    }
    return s;
}

static void s_scale(float *y, float s, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = y[i] * s;
}

static void s_sub2(const float *x, float m, float l, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = (x[i] - m) - l;
}

static void s_sm_bwd(const float *y, const float *dy, float d, float *dx, int64_t n) {
    for (int64_t i = 0; i < n; i++) dx[i] = y[i] * (dy[i] - d);
}

static void s_lsm_bwd(const float *y, const float *dy, float s, float *dx, int64_t n) {
    for (int64_t i = 0; i < n; i++) dx[i] = dy[i] - expf(y[i]) * s;
}

const ql_sm_table ql_sm_scalar = {
    .exp_sum = s_exp_sum,
    .scale = s_scale,
    .sub2 = s_sub2,
    .sm_bwd = s_sm_bwd,
    .lsm_bwd = s_lsm_bwd,
};
