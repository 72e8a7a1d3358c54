// AVX2+FMA pieces of softmax / log_softmax (forward and backward): vector exp with the sum
// in float lanes per 128-element block, widened to double per block, and the scale / subtract / gradient passes.
#include "kernels_internal.h"

#if QL_X86
#include "vmath_avx2.h"

#include <immintrin.h>
#include <string.h>

#define AI __attribute__((always_inline)) static inline QL_TARGET_AVX2
#define K static QL_TARGET_AVX2

// The sum: float lane partials over blocks of 128 elements (8 terms per lane), each block
// widened into double accumulators; fixed order for a given n.
AI double exp_sum(const float *x, float m, float *y, int64_t n, int write) {
    __m256 vm = _mm256_set1_ps(m);
    __m256d a0 = _mm256_setzero_pd(), a1 = a0;
    int64_t i = 0;
    while (i + 16 <= n) {
        int64_t end = i + 128 <= n ? i + 128 : i + ((n - i) & ~(int64_t)15);
        __m256 f0 = _mm256_setzero_ps(), f1 = f0;
        for (; i < end; i += 16) {
            __m256 e0 = ql_v8_exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
            __m256 e1 = ql_v8_exp(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), vm));
            if (write) {
                _mm256_storeu_ps(y + i, e0);
                _mm256_storeu_ps(y + i + 8, e1);
            }
            f0 = _mm256_add_ps(f0, e0);
            f1 = _mm256_add_ps(f1, e1);
        }
        ql_v8_acc_pd(_mm256_add_ps(f0, f1), &a0, &a1);
    }
    for (; i + 8 <= n; i += 8) {
        __m256 e0 = ql_v8_exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        if (write) _mm256_storeu_ps(y + i, e0);
        ql_v8_acc_pd(e0, &a0, &a1);
    }
    if (i < n) {
        size_t r = (size_t)(n - i) * sizeof(float);
        float t[8] = {0};
        memcpy(t, x + i, r);
        __m256 e0 = ql_v8_exp(_mm256_sub_ps(_mm256_loadu_ps(t), vm));
        _mm256_storeu_ps(t, e0);
        for (size_t k = r / sizeof(float); k < 8; k++) t[k] = 0.0f; // padding adds nothing
        if (write) memcpy(y + i, t, r);
        ql_v8_acc_pd(_mm256_loadu_ps(t), &a0, &a1);
    }
    return ql_v4d_hsum(_mm256_add_pd(a0, a1));
}

K double v_exp_sum(const float *x, float m, float *y, int64_t n) {
    return y ? exp_sum(x, m, y, n, 1) : exp_sum(x, m, NULL, n, 0);
}

// out[i] = F(a[i], b[i]) with vector scalars p, q; b may be unused (NULL).
typedef __m256 (*vfn)(__m256 a, __m256 b, __m256 p, __m256 q);

AI void map2(vfn F, const float *a, const float *b, float p, float q, float *out, int64_t n) {
    __m256 vp = _mm256_set1_ps(p), vq = _mm256_set1_ps(q), z = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 a0 = _mm256_loadu_ps(a + i), a1 = _mm256_loadu_ps(a + i + 8);
        __m256 b0 = b ? _mm256_loadu_ps(b + i) : z, b1 = b ? _mm256_loadu_ps(b + i + 8) : z;
        _mm256_storeu_ps(out + i, F(a0, b0, vp, vq));
        _mm256_storeu_ps(out + i + 8, F(a1, b1, vp, vq));
    }
    for (; i + 8 <= n; i += 8) {
        __m256 b0 = b ? _mm256_loadu_ps(b + i) : z;
        _mm256_storeu_ps(out + i, F(_mm256_loadu_ps(a + i), b0, vp, vq));
    }
    if (i < n) {
        size_t r = (size_t)(n - i) * sizeof(float);
        float ta[8] = {0}, tb[8] = {0};
        memcpy(ta, a + i, r);
        if (b) memcpy(tb, b + i, r);
        _mm256_storeu_ps(ta, F(_mm256_loadu_ps(ta), _mm256_loadu_ps(tb), vp, vq));
        memcpy(out + i, ta, r);
    }
}

AI __m256 f_scale(__m256 y, __m256 u, __m256 s, __m256 q) {
    (void)u; (void)q;
    return _mm256_mul_ps(y, s);
}
AI __m256 f_sub2(__m256 x, __m256 u, __m256 m, __m256 l) {
    (void)u;
    return _mm256_sub_ps(_mm256_sub_ps(x, m), l);
}
AI __m256 f_sm_bwd(__m256 y, __m256 dy, __m256 d, __m256 q) {
    (void)q;
    return _mm256_mul_ps(y, _mm256_sub_ps(dy, d));
}
AI __m256 f_lsm_bwd(__m256 y, __m256 dy, __m256 s, __m256 q) {
    (void)q;
    return _mm256_sub_ps(dy, _mm256_mul_ps(ql_v8_exp(y), s));
}

K void v_scale(float *y, float s, int64_t n) { map2(f_scale, y, NULL, s, 0.0f, y, n); }
K void v_sub2(const float *x, float m, float l, float *y, int64_t n) {
    map2(f_sub2, x, NULL, m, l, y, n);
}
K void v_sm_bwd(const float *y, const float *dy, float d, float *dx, int64_t n) {
    map2(f_sm_bwd, y, dy, d, 0.0f, dx, n);
}
K void v_lsm_bwd(const float *y, const float *dy, float s, float *dx, int64_t n) {
    map2(f_lsm_bwd, y, dy, s, 0.0f, dx, n);
}

const ql_sm_table ql_sm_avx2 = {
    .exp_sum = v_exp_sum,
    .scale = v_scale,
    .sub2 = v_sub2,
    .sm_bwd = v_sm_bwd,
    .lsm_bwd = v_lsm_bwd,
};

#endif
