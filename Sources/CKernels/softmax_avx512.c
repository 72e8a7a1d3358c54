// AVX-512 pieces of softmax / log_softmax (forward and backward): the forward sweep step (a
// vector exp for the non-positive arguments x - max, the sum in float lanes per 256-element
// block widened to double per block, with the next chunk's max in the same loop), phase B and
// the gradient passes.
#include "kernels_internal.h"

#if QL_X86
#include "vmath_avx512.h"

#include <immintrin.h>

#define AI __attribute__((always_inline)) static inline QL_TARGET_AVX512
#define K static QL_TARGET_AVX512

#define SM_V16(c) _mm512_set1_ps(c)

// exp for softmax arguments x = x_i - max <= 0 (or NaN; finite x > 0 works too, +inf does
// not): x = j ln2 + r with j a multiple of 1/16, |r| <= ln2/32; e^x = 2^floor(j) *
// 2^frac(j) (a 16-entry table, vpermps) * e^r (degree 3). The magic constant 1.5 * 2^19 rounds
// x log2(e) to 1/16 and leaves 16 j mod 16 in the low mantissa bits; vscalefps applies 2^floor(j)
// with one rounding (gradual underflow). Within 1.0 ulp of exp over every float in [-104, 0],
// subnormal results within 1 subnormal ulp; exp(0) = 1 exactly, exp(-inf) = 0, NaN stays NaN.
// Cheaper than ql_v16_exp (~8 vs ~11 cycles per vector on Zen 4), which is what bounds phase A.
AI __m512 sm_exp(__m512 x) {
    const __m512 tab = _mm512_setr_ps(
        1.000000000e+00f, 1.044273734e+00f, 1.090507746e+00f, 1.138788581e+00f,
        1.189207077e+00f, 1.241857767e+00f, 1.296839595e+00f, 1.354255557e+00f,
        1.414213538e+00f, 1.476826191e+00f, 1.542210817e+00f, 1.610490322e+00f,
        1.681792855e+00f, 1.756252170e+00f, 1.834008098e+00f, 1.915206552e+00f); // 2^(i/16)
    x = _mm512_max_ps(SM_V16(-104.0f), x); // max(c, x) keeps a NaN x; exp(-104) rounds to 0
    __m512 kq = _mm512_fmadd_ps(x, SM_V16(1.44269504088896341f), SM_V16(786432.0f));
    __m512 j = _mm512_sub_ps(kq, SM_V16(786432.0f));
    __m512 r = _mm512_fnmadd_ps(j, SM_V16(0.693359375f), x); // exact
    r = _mm512_fnmadd_ps(j, SM_V16(-2.12194440e-4f), r);
    __m512 t = _mm512_permutexvar_ps(_mm512_castps_si512(kq), tab);
    __m512 a = _mm512_fmadd_ps(SM_V16(1.666671783e-01f), r, SM_V16(5.000161529e-01f));
    a = _mm512_fmadd_ps(a, r, SM_V16(1.0f));
    __m512 v = _mm512_fmadd_ps(_mm512_mul_ps(t, r), a, t); // t (1 + r + c2 r^2 + c3 r^3)
    return _mm512_scalef_ps(v, j);
}

// The running state of a step: float sum partials of the current block, the next chunk's max.
typedef struct {
    __m512 f0, f1, q0, q1;
    __mmask16 nan;
} acc16;

// Elements [i, e) of a step (e - i a multiple of 32) with compile-time choices: write (0
// nothing, 1 y = exp(x - m), 2 y = x - m) and domax (nx's max rides along: its loads and max
// ops fit beside the exp's FMAs).
AI void seg(const ql_sm_step *s, int64_t i, int64_t e, __m512 vm, acc16 *A, int write,
            int domax) {
    const float *x = s->x, *nx = s->nx;
    float *y = s->y;
    for (; i < e; i += 32) {
        if (domax) {
            __m512 v0 = _mm512_loadu_ps(nx + i), v1 = _mm512_loadu_ps(nx + i + 16);
            A->nan |= _mm512_cmp_ps_mask(v0, v1, _CMP_UNORD_Q);
            A->q0 = _mm512_max_ps(v0, A->q0);
            A->q1 = _mm512_max_ps(v1, A->q1);
        }
        __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(x + i), vm);
        __m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(x + i + 16), vm);
        __m512 e0 = sm_exp(d0), e1 = sm_exp(d1);
        if (write) {
            _mm512_storeu_ps(y + i, write == 1 ? e0 : d0);
            _mm512_storeu_ps(y + i + 16, write == 1 ? e1 : d1);
        }
        A->f0 = _mm512_add_ps(A->f0, e0);
        A->f1 = _mm512_add_ps(A->f1, e1);
    }
}

AI void affine(float *y, __m512 a, __m512 b, int64_t i, int64_t n) {
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(_mm512_loadu_ps(y + i), a, b));
    if (i < n) {
        __mmask16 k = ql_tail_mask16(n - i);
        _mm512_mask_storeu_ps(y + i, k, _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, y + i), a, b));
    }
}

// The sum: float lane partials over blocks of 256 elements (8 terms per lane), each block
// widened into double accumulators; fixed order for a given n. The next chunk's max rides along
// in the common 32-element steps, the rest of it follows the sum.
AI double step(const ql_sm_step *s, float *nmax, int write) {
    const __m512 ninf = _mm512_set1_ps(-__builtin_inff());
    const float *x = s->x;
    float *y = s->y;
    int64_t n = s->n, nn = s->nn;
    __m512 vm = _mm512_set1_ps(s->m);
    __m512d a0 = _mm512_setzero_pd(), a1 = a0;
    acc16 A = {.q0 = ninf, .q1 = ninf, .nan = 0};
    int64_t cm = (n < nn ? n : nn) & ~(int64_t)31; // nx[0..cm) rides along
    int64_t i = 0;
    while (i + 32 <= n) {
        int64_t end = i + 256 <= n ? i + 256 : i + ((n - i) & ~(int64_t)31);
        A.f0 = A.f1 = _mm512_setzero_ps();
        if (i < cm) {
            int64_t e = cm < end ? cm : end;
            seg(s, i, e, vm, &A, write, 1);
            i = e;
        }
        seg(s, i, end, vm, &A, write, 0);
        i = end;
        ql_v16_acc_pd(_mm512_add_ps(A.f0, A.f1), &a0, &a1);
    }
    for (; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : ql_tail_mask16(n - i);
        __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), vm);
        __m512 e = _mm512_maskz_mov_ps(k, sm_exp(d)); // padding adds nothing
        if (write) _mm512_mask_storeu_ps(y + i, k, write == 1 ? e : d);
        ql_v16_acc_pd(e, &a0, &a1);
    }
    for (int64_t j = cm; j < nn; j += 16) { // the rest of the next chunk's max
        __mmask16 k = nn - j >= 16 ? (__mmask16)0xFFFF : ql_tail_mask16(nn - j);
        __m512 v = _mm512_mask_loadu_ps(ninf, k, s->nx + j);
        A.nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        A.q0 = _mm512_max_ps(v, A.q0);
    }
    *nmax = A.nan ? __builtin_nanf("") : _mm512_reduce_max_ps(_mm512_max_ps(A.q0, A.q1));
    __m512d t = _mm512_add_pd(a0, a1);
    __m256d h = _mm256_add_pd(_mm512_castpd512_pd256(t), _mm512_extractf64x4_pd(t, 1));
    __m128d q = _mm_add_pd(_mm256_castpd256_pd128(h), _mm256_extractf128_pd(h, 1));
    return _mm_cvtsd_f64(_mm_add_sd(q, _mm_unpackhi_pd(q, q)));
}

K double v_step(const ql_sm_step *s, float *nmax) {
    if (!s->y) return step(s, nmax, 0);
    return s->ylog ? step(s, nmax, 2) : step(s, nmax, 1);
}

K void v_affine(float *y, float a, float b, int64_t n) {
    affine(y, _mm512_set1_ps(a), _mm512_set1_ps(b), 0, n);
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

AI __m512 f_sm_bwd(__m512 y, __m512 dy, __m512 d, __m512 q) {
    (void)q;
    return _mm512_mul_ps(y, _mm512_sub_ps(dy, d));
}
AI __m512 f_lsm_bwd(__m512 y, __m512 dy, __m512 s, __m512 q) {
    (void)q;
    return _mm512_sub_ps(dy, _mm512_mul_ps(ql_v16_exp(y), s));
}

K void v_sm_bwd(const float *y, const float *dy, float d, float *dx, int64_t n) {
    map2(f_sm_bwd, y, dy, d, 0.0f, dx, n);
}
K void v_lsm_bwd(const float *y, const float *dy, float s, float *dx, int64_t n) {
    map2(f_lsm_bwd, y, dy, s, 0.0f, dx, n);
}

const ql_sm_table ql_sm_avx512 = {
    .step = v_step,
    .affine = v_affine,
    .sm_bwd = v_sm_bwd,
    .lsm_bwd = v_lsm_bwd,
};

#endif
