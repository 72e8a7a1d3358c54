// AVX-512 pieces of softmax / log_softmax (forward and backward): vector exp with the sum
// in float lanes per 256-element block, widened to double per block, and the scale / subtract / gradient passes.
#include "kernels_internal.h"

#if QL_X86
#include "vmath_avx512.h"

#include <immintrin.h>

#define AI __attribute__((always_inline)) static inline QL_TARGET_AVX512
#define K static QL_TARGET_AVX512

// The sum: float lane partials over blocks of 256 elements (8 terms per lane), each block
// widened into double accumulators; fixed order for a given n.
AI double exp_sum(const float *x, float m, float *y, int64_t n, int write) {
    __m512 vm = _mm512_set1_ps(m);
    __m512d a0 = _mm512_setzero_pd(), a1 = a0;
    int64_t i = 0;
    while (i + 32 <= n) {
        int64_t end = i + 256 <= n ? i + 256 : i + ((n - i) & ~(int64_t)31);
        __m512 f0 = _mm512_setzero_ps(), f1 = f0;
        for (; i < end; i += 32) {
            __m512 e0 = ql_v16_exp(_mm512_sub_ps(_mm512_loadu_ps(x + i), vm));
            __m512 e1 = ql_v16_exp(_mm512_sub_ps(_mm512_loadu_ps(x + i + 16), vm));
            if (write) {
                _mm512_storeu_ps(y + i, e0);
                _mm512_storeu_ps(y + i + 16, e1);
            }
            f0 = _mm512_add_ps(f0, e0);
            f1 = _mm512_add_ps(f1, e1);
        }
        ql_v16_acc_pd(_mm512_add_ps(f0, f1), &a0, &a1);
    }
    for (; i + 16 <= n; i += 16) {
        __m512 e0 = ql_v16_exp(_mm512_sub_ps(_mm512_loadu_ps(x + i), vm));
        if (write) _mm512_storeu_ps(y + i, e0);
        ql_v16_acc_pd(e0, &a0, &a1);
    }
    if (i < n) {
        __mmask16 k = ql_tail_mask16(n - i);
        __m512 e0 = ql_v16_exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), vm));
        e0 = _mm512_maskz_mov_ps(k, e0); // padding adds nothing
        if (write) _mm512_mask_storeu_ps(y + i, k, e0);
        ql_v16_acc_pd(e0, &a0, &a1);
    }
    __m512d s = _mm512_add_pd(a0, a1);
    __m256d h = _mm256_add_pd(_mm512_castpd512_pd256(s), _mm512_extractf64x4_pd(s, 1));
    __m128d q = _mm_add_pd(_mm256_castpd256_pd128(h), _mm256_extractf128_pd(h, 1));
    return _mm_cvtsd_f64(_mm_add_sd(q, _mm_unpackhi_pd(q, q)));
}

K double v_exp_sum(const float *x, float m, float *y, int64_t n) {
    return y ? exp_sum(x, m, y, n, 1) : exp_sum(x, m, NULL, n, 0);
}

typedef __m512 (*vfn)(__m512 a, __m512 b, __m512 p, __m512 q);

AI void map2(vfn F, const float *a, const float *b, float p, float q, float *out, int64_t n) {
    __m512 vp = _mm512_set1_ps(p), vq = _mm512_set1_ps(q), z = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 a0 = _mm512_loadu_ps(a + i), a1 = _mm512_loadu_ps(a + i + 16);
        __m512 b0 = b ? _mm512_loadu_ps(b + i) : z, b1 = b ? _mm512_loadu_ps(b + i + 16) : z;
        _mm512_storeu_ps(out + i, F(a0, b0, vp, vq));
        _mm512_storeu_ps(out + i + 16, F(a1, b1, vp, vq));
    }
    for (; i + 16 <= n; i += 16) {
        __m512 b0 = b ? _mm512_loadu_ps(b + i) : z;
        _mm512_storeu_ps(out + i, F(_mm512_loadu_ps(a + i), b0, vp, vq));
    }
    if (i < n) {
        __mmask16 k = ql_tail_mask16(n - i);
        __m512 b0 = b ? _mm512_maskz_loadu_ps(k, b + i) : z;
        _mm512_mask_storeu_ps(out + i, k, F(_mm512_maskz_loadu_ps(k, a + i), b0, vp, vq));
    }
}

AI __m512 f_scale(__m512 y, __m512 u, __m512 s, __m512 q) {
    (void)u; (void)q;
    return _mm512_mul_ps(y, s);
}
AI __m512 f_sub2(__m512 x, __m512 u, __m512 m, __m512 l) {
    (void)u;
    return _mm512_sub_ps(_mm512_sub_ps(x, m), l);
}
AI __m512 f_sm_bwd(__m512 y, __m512 dy, __m512 d, __m512 q) {
    (void)q;
    return _mm512_mul_ps(y, _mm512_sub_ps(dy, d));
}
AI __m512 f_lsm_bwd(__m512 y, __m512 dy, __m512 s, __m512 q) {
    (void)q;
    return _mm512_sub_ps(dy, _mm512_mul_ps(ql_v16_exp(y), s));
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

const ql_sm_table ql_sm_avx512 = {
    .exp_sum = v_exp_sum,
    .scale = v_scale,
    .sub2 = v_sub2,
    .sm_bwd = v_sm_bwd,
    .lsm_bwd = v_lsm_bwd,
};

#endif
