// avx2 optimizer kernels (8 floats per vector): the scalar reference's operations in the same
// order (see optim.c), so every level gives the same bits (sqrt and division are correctly
// rounded, the fused multiply-adds are the reference's fmaf). Tails run the scalar reference.
#include "kernels_internal.h"

#pragma STDC FP_CONTRACT OFF

#if QL_X86
#include <immintrin.h>

QL_TARGET_AVX2
static void adamw_range(float *p, const float *g, float *m, float *v, int64_t n, float decay,
                        int wd_on, float w1, int w1_small, float b2, float w2, float neg_step,
                        float bc2s, float eps) {
    const __m256 vd = _mm256_set1_ps(decay), vw1 = _mm256_set1_ps(w1),
                 vw1m1 = _mm256_set1_ps(w1 - 1.0f), vb2 = _mm256_set1_ps(b2),
                 vw2 = _mm256_set1_ps(w2), vs = _mm256_set1_ps(neg_step),
                 vbc = _mm256_set1_ps(bc2s), ve = _mm256_set1_ps(eps);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 pi = _mm256_loadu_ps(p + i), gi = _mm256_loadu_ps(g + i);
        __m256 mi = _mm256_loadu_ps(m + i), vi = _mm256_loadu_ps(v + i);
        if (wd_on) pi = _mm256_mul_ps(pi, vd);
        __m256 diff = _mm256_sub_ps(gi, mi);
        mi = w1_small ? _mm256_fmadd_ps(vw1, diff, mi) : _mm256_fmadd_ps(vw1m1, diff, gi);
        __m256 t = _mm256_mul_ps(_mm256_mul_ps(vw2, gi), gi);
        vi = _mm256_add_ps(_mm256_mul_ps(vi, vb2), t);
        __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), vbc), ve);
        __m256 u = _mm256_div_ps(_mm256_mul_ps(vs, mi), denom);
        _mm256_storeu_ps(p + i, _mm256_add_ps(pi, u));
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
    }
    if (i < n)
        ql_adamw_range_scalar(p + i, g + i, m + i, v + i, n - i, decay, wd_on, w1, w1_small, b2,
                              w2, neg_step, bc2s, eps);
}

QL_TARGET_AVX2
static void sgd_range(float *p, const float *g, float *buf, int64_t n, float neg_lr, float mom,
                      float keep, float wd, int wd_on, int mom_on, int nesterov, int first) {
    const __m256 vl = _mm256_set1_ps(neg_lr), vm = _mm256_set1_ps(mom), vk = _mm256_set1_ps(keep),
                 vw = _mm256_set1_ps(wd);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 pi = _mm256_loadu_ps(p + i), d = _mm256_loadu_ps(g + i);
        if (wd_on) d = _mm256_fmadd_ps(pi, vw, d);
        if (mom_on) {
            __m256 b = d;
            if (!first) b = _mm256_fmadd_ps(d, vk, _mm256_mul_ps(_mm256_loadu_ps(buf + i), vm));
            _mm256_storeu_ps(buf + i, b);
            d = nesterov ? _mm256_fmadd_ps(b, vm, d) : b;
        }
        _mm256_storeu_ps(p + i, _mm256_fmadd_ps(d, vl, pi));
    }
    if (i < n)
        ql_sgd_range_scalar(p + i, g + i, buf ? buf + i : NULL, n - i, neg_lr, mom, keep, wd,
                            wd_on, mom_on, nesterov, first);
}

const ql_opt_table ql_opt_avx2 = {adamw_range, sgd_range};

#endif
