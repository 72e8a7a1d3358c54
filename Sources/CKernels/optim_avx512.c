// avx512 optimizer kernels (16 floats per vector): the scalar reference's operations in the same
// order (see optim.c), so every level gives the same bits (sqrt and division are correctly
// rounded, the fused multiply-adds are the reference's fmaf). Tails use masked loads and stores.
#include "kernels_internal.h"

#pragma STDC FP_CONTRACT OFF

#if QL_X86
#include <immintrin.h>

#define AI __attribute__((always_inline)) static inline QL_TARGET_AVX512

AI void adamw_vec(float *p, const float *g, float *m, float *v, __mmask16 k, __m512 decay,
                  int wd_on, __m512 w1, int w1_small, __m512 b2, __m512 w2, __m512 neg_step,
                  __m512 bc2s, __m512 eps) {
    __m512 pi = _mm512_maskz_loadu_ps(k, p), gi = _mm512_maskz_loadu_ps(k, g);
    __m512 mi = _mm512_maskz_loadu_ps(k, m), vi = _mm512_maskz_loadu_ps(k, v);
    if (wd_on) pi = _mm512_mul_ps(pi, decay);
    __m512 diff = _mm512_sub_ps(gi, mi);
    mi = w1_small ? _mm512_fmadd_ps(w1, diff, mi)
                  : _mm512_fmadd_ps(_mm512_sub_ps(w1, _mm512_set1_ps(1.0f)), diff, gi);
    __m512 t = _mm512_mul_ps(_mm512_mul_ps(w2, gi), gi);
    vi = _mm512_add_ps(_mm512_mul_ps(vi, b2), t);
    __m512 denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), bc2s), eps);
    __m512 u = _mm512_div_ps(_mm512_mul_ps(neg_step, mi), denom);
    _mm512_mask_storeu_ps(p, k, _mm512_add_ps(pi, u));
    _mm512_mask_storeu_ps(m, k, mi);
    _mm512_mask_storeu_ps(v, k, vi);
}

QL_TARGET_AVX512
static void adamw_range(float *p, const float *g, float *m, float *v, int64_t n, float decay,
                        int wd_on, float w1, int w1_small, float b2, float w2, float neg_step,
                        float bc2s, float eps) {
    const __m512 vd = _mm512_set1_ps(decay), vw1 = _mm512_set1_ps(w1), vb2 = _mm512_set1_ps(b2),
                 vw2 = _mm512_set1_ps(w2), vs = _mm512_set1_ps(neg_step),
                 vbc = _mm512_set1_ps(bc2s), ve = _mm512_set1_ps(eps);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        adamw_vec(p + i, g + i, m + i, v + i, (__mmask16)0xFFFF, vd, wd_on, vw1, w1_small, vb2,
                  vw2, vs, vbc, ve);
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1u);
        adamw_vec(p + i, g + i, m + i, v + i, k, vd, wd_on, vw1, w1_small, vb2, vw2, vs, vbc, ve);
    }
}

AI void sgd_vec(float *p, const float *g, float *buf, __mmask16 k, __m512 neg_lr, __m512 mom,
                __m512 keep, __m512 wd, int wd_on, int mom_on, int nesterov, int first) {
    __m512 pi = _mm512_maskz_loadu_ps(k, p), d = _mm512_maskz_loadu_ps(k, g);
    if (wd_on) d = _mm512_fmadd_ps(pi, wd, d);
    if (mom_on) {
        __m512 b = d;
        if (!first) b = _mm512_fmadd_ps(d, keep, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, buf), mom));
        _mm512_mask_storeu_ps(buf, k, b);
        d = nesterov ? _mm512_fmadd_ps(b, mom, d) : b;
    }
    _mm512_mask_storeu_ps(p, k, _mm512_fmadd_ps(d, neg_lr, pi));
}

QL_TARGET_AVX512
static void sgd_range(float *p, const float *g, float *buf, int64_t n, float neg_lr, float mom,
                      float keep, float wd, int wd_on, int mom_on, int nesterov, int first) {
    const __m512 vl = _mm512_set1_ps(neg_lr), vm = _mm512_set1_ps(mom), vk = _mm512_set1_ps(keep),
                 vw = _mm512_set1_ps(wd);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        sgd_vec(p + i, g + i, buf ? buf + i : NULL, (__mmask16)0xFFFF, vl, vm, vk, vw, wd_on,
                mom_on, nesterov, first);
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1u);
        sgd_vec(p + i, g + i, buf ? buf + i : NULL, k, vl, vm, vk, vw, wd_on, mom_on, nesterov,
                first);
    }
}

const ql_opt_table ql_opt_avx512 = {adamw_range, sgd_range};

#endif
