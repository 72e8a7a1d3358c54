// Scalar reference pieces of softmax / log_softmax and their backward passes (plain C, libm).
// softmax.c strings them together: forward sweep steps (a chunk's exp+sum and the next chunk's
// max), phase B; backward dot / sum, then the gradient.
#include "kernels_internal.h"

#include <math.h>

#ifdef __clang__
#pragma clang fp contract(off) // the reference never fuses a*b+c
#endif

// y * a + b: callers pass b = -0 (y * a) or a = 1 (y + b), so this rounds once, like an FMA.
static void s_affine(float *y, float a, float b, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = y[i] * a + b;
}

static double s_step(const ql_sm_step *st, float *nmax) {
    double s = 0.0;
    const float *x = st->x;
    float m = st->m, *y = st->y;
    for (int64_t i = 0; i < st->n; i++) {
        float d = x[i] - m, e = expf(d);
        if (y) y[i] = st->ylog ? d : e;
        s += (double)e;
    }
    float q = -INFINITY;
    int nan = 0;
    for (int64_t i = 0; i < st->nn; i++) {
        float v = st->nx[i];
        nan |= v != v;
        q = v > q ? v : q;
    }
    *nmax = nan ? NAN : q;
    return s;
}

static void s_sm_bwd(const float *y, const float *dy, float d, float *dx, int64_t n) {
    for (int64_t i = 0; i < n; i++) dx[i] = y[i] * (dy[i] - d);
}

static void s_lsm_bwd(const float *y, const float *dy, float s, float *dx, int64_t n) {
    for (int64_t i = 0; i < n; i++) dx[i] = dy[i] - expf(y[i]) * s;
}

const ql_sm_table ql_sm_scalar = {
    .step = s_step,
    .affine = s_affine,
    .sm_bwd = s_sm_bwd,
    .lsm_bwd = s_lsm_bwd,
};
