// AVX2+FMA pieces of softmax / log_softmax (forward and backward): the forward sweep step
// (vector exp with the sum in float lanes per 128-element block, widened to double per block,
// then the next chunk's max), phase B and the gradient passes.
#include "kernels_internal.h"

#if QL_X86
#include "vmath_avx2.h"

#include <immintrin.h>
#include <string.h>

#define AI __attribute__((always_inline)) static inline QL_TARGET_AVX2
#define K static QL_TARGET_AVX2

// The running state of a step: float sum partials of the current block, the next chunk's max.
typedef struct {
    __m256 f0, f1, q0, q1, qn; // qn: NaN lanes seen in nx
} acc8;

// Elements [i, e) of a step (e - i a multiple of 16); write: 0 nothing, 1 y = exp(x - m),
// 2 y = x - m.
AI void seg(const ql_sm_step *s, int64_t i, int64_t e, __m256 vm, acc8 *A, int write) {
    const float *x = s->x;
    float *y = s->y;
    for (; i < e; i += 16) {
        __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(x + i), vm);
        __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(x + i + 8), vm);
        __m256 e0 = ql_v8_exp(d0), e1 = ql_v8_exp(d1);
        if (write) {
            _mm256_storeu_ps(y + i, write == 1 ? e0 : d0);
            _mm256_storeu_ps(y + i + 8, write == 1 ? e1 : d1);
        }
        A->f0 = _mm256_add_ps(A->f0, e0);
        A->f1 = _mm256_add_ps(A->f1, e1);
    }
}

AI void affine(float *y, __m256 a, __m256 b, int64_t i, int64_t n) {
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(_mm256_loadu_ps(y + i), a, b));
    if (i < n) {
        size_t r = (size_t)(n - i) * sizeof(float);
        float t[8] = {0};
        memcpy(t, y + i, r);
        _mm256_storeu_ps(t, _mm256_fmadd_ps(_mm256_loadu_ps(t), a, b));
        memcpy(y + i, t, r);
    }
}

// The sum: float lane partials over blocks of 128 elements (8 terms per lane), each block
// widened into double accumulators; fixed order for a given n. Then the next chunk's max (here
// it does not ride along: the 8-wide exp keeps every vector pipe busy, so the max ops would
// cost more than the separate, memory-bound loop).
AI double step(const ql_sm_step *s, float *nmax, int write) {
    const __m256 ninf = _mm256_set1_ps(-__builtin_inff());
    const float *x = s->x;
    float *y = s->y;
    int64_t n = s->n, nn = s->nn;
    __m256 vm = _mm256_set1_ps(s->m);
    __m256d a0 = _mm256_setzero_pd(), a1 = a0;
    acc8 A = {.q0 = ninf, .q1 = ninf, .qn = _mm256_setzero_ps()};
    int64_t i = 0;
    while (i + 16 <= n) {
        int64_t end = i + 128 <= n ? i + 128 : i + ((n - i) & ~(int64_t)15);
        A.f0 = A.f1 = _mm256_setzero_ps();
        seg(s, i, end, vm, &A, write);
        i = end;
        ql_v8_acc_pd(_mm256_add_ps(A.f0, A.f1), &a0, &a1);
    }
    for (; i + 8 <= n; i += 8) {
        __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i), vm), e = ql_v8_exp(d);
        if (write) _mm256_storeu_ps(y + i, write == 1 ? e : d);
        ql_v8_acc_pd(e, &a0, &a1);
    }
    if (i < n) {
        size_t r = (size_t)(n - i) * sizeof(float);
        float t[8] = {0}, u[8];
        memcpy(t, x + i, r);
        __m256 d = _mm256_sub_ps(_mm256_loadu_ps(t), vm);
        _mm256_storeu_ps(u, d);
        _mm256_storeu_ps(t, ql_v8_exp(d));
        for (size_t k = r / sizeof(float); k < 8; k++) t[k] = 0.0f; // padding adds nothing
        if (write) memcpy(y + i, write == 1 ? t : u, r);
        ql_v8_acc_pd(_mm256_loadu_ps(t), &a0, &a1);
    }
    int64_t j = 0; // the next chunk's max
    for (; j + 16 <= nn; j += 16) {
        __m256 v0 = _mm256_loadu_ps(s->nx + j), v1 = _mm256_loadu_ps(s->nx + j + 8);
        A.qn = _mm256_or_ps(A.qn, _mm256_cmp_ps(v0, v1, _CMP_UNORD_Q));
        A.q0 = _mm256_max_ps(v0, A.q0);
        A.q1 = _mm256_max_ps(v1, A.q1);
    }
    for (; j + 8 <= nn; j += 8) {
        __m256 v = _mm256_loadu_ps(s->nx + j);
        A.qn = _mm256_or_ps(A.qn, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        A.q0 = _mm256_max_ps(v, A.q0);
    }
    float q = -__builtin_inff();
    int nan = _mm256_movemask_ps(A.qn) != 0;
    for (; j < nn; j++) {
        float v = s->nx[j];
        nan |= v != v;
        q = v > q ? v : q;
    }
    __m256 qv = _mm256_max_ps(A.q0, A.q1);
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(qv), _mm256_extractf128_ps(qv, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    float hv = _mm_cvtss_f32(h);
    *nmax = nan ? __builtin_nanf("") : (hv > q ? hv : q);
    return ql_v4d_hsum(_mm256_add_pd(a0, a1));
}

K double v_step(const ql_sm_step *s, float *nmax) {
    if (!s->y) return step(s, nmax, 0);
    return s->ylog ? step(s, nmax, 2) : step(s, nmax, 1);
}

K void v_affine(float *y, float a, float b, int64_t n) {
    affine(y, _mm256_set1_ps(a), _mm256_set1_ps(b), 0, n);
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

AI __m256 f_sm_bwd(__m256 y, __m256 dy, __m256 d, __m256 q) {
    (void)q;
    return _mm256_mul_ps(y, _mm256_sub_ps(dy, d));
}
AI __m256 f_lsm_bwd(__m256 y, __m256 dy, __m256 s, __m256 q) {
    (void)q;
    return _mm256_sub_ps(dy, _mm256_mul_ps(ql_v8_exp(y), s));
}

K void v_sm_bwd(const float *y, const float *dy, float d, float *dx, int64_t n) {
    map2(f_sm_bwd, y, dy, d, 0.0f, dx, n);
}
K void v_lsm_bwd(const float *y, const float *dy, float s, float *dx, int64_t n) {
    map2(f_lsm_bwd, y, dy, s, 0.0f, dx, n);
}

const ql_sm_table ql_sm_avx2 = {
    .step = v_step,
    .affine = v_affine,
    .sm_bwd = v_sm_bwd,
    .lsm_bwd = v_lsm_bwd,
};

#endif
