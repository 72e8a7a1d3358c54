// AVX-512 elementwise kernels (16 floats per vector). Arithmetic ops reproduce the scalar
// reference bit for bit (same operation order, no FMA contraction); exp/log/tanh/sigmoid use
// vmath_avx512.h. Tails use masked loads and stores, never touching memory past n.
#include "kernels_internal.h"

#if QL_X86
#include "vmath_avx512.h"

#include <immintrin.h>

#define AI __attribute__((always_inline)) static inline QL_TARGET_AVX512
#define K static QL_TARGET_AVX512

typedef __m512 (*vbin_fn)(__m512, __m512);
typedef __m512 (*vun_fn)(__m512);
typedef __m512 (*vbwd_fn)(__m512 x, __m512 y, __m512 dy);

#define ZERO _mm512_setzero_ps()
#define ONE _mm512_set1_ps(1.0f)
#define SIGNI _mm512_set1_epi32((int)0x80000000u)
#define CMP(a, b, p) _mm512_cmp_ps_mask(a, b, p)

AI __m512 vxor_sign(__m512 x) {
    return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(x), SIGNI));
}
AI __m512 vabs(__m512 x) {
    return _mm512_castsi512_ps(_mm512_andnot_si512(SIGNI, _mm512_castps_si512(x)));
}

// ---- binary ops -------------------------------------------------------------------------------
AI __m512 b_add(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }
AI __m512 b_sub(__m512 a, __m512 b) { return _mm512_sub_ps(a, b); }
AI __m512 b_mul(__m512 a, __m512 b) { return _mm512_mul_ps(a, b); }
AI __m512 b_div(__m512 a, __m512 b) { return _mm512_div_ps(a, b); }
// max_ps(a, b) is (a > b ? a : b); a NaN a is put back explicitly (see ql_s_max).
AI __m512 b_max(__m512 a, __m512 b) {
    return _mm512_mask_mov_ps(_mm512_max_ps(a, b), CMP(a, a, _CMP_UNORD_Q), a);
}
AI __m512 b_min(__m512 a, __m512 b) {
    return _mm512_mask_mov_ps(_mm512_min_ps(a, b), CMP(a, a, _CMP_UNORD_Q), a);
}
#define CMP_OP(name, pred)                                                                   \
    AI __m512 name(__m512 a, __m512 b) {                                                     \
        return _mm512_maskz_mov_ps(CMP(a, b, pred), ONE);                                    \
    }
CMP_OP(b_eq, _CMP_EQ_OQ)
CMP_OP(b_ne, _CMP_NEQ_UQ)
CMP_OP(b_lt, _CMP_LT_OQ)
CMP_OP(b_le, _CMP_LE_OQ)
CMP_OP(b_gt, _CMP_GT_OQ)
CMP_OP(b_ge, _CMP_GE_OQ)

AI void bin_loop(vbin_fn F, const float *a, int sa, const float *b, int sb, float *out,
                 int64_t n) {
    __m512 ca = sa ? ZERO : _mm512_set1_ps(a[0]);
    __m512 cb = sb ? ZERO : _mm512_set1_ps(b[0]);
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 a0 = sa ? _mm512_loadu_ps(a + i) : ca, a1 = sa ? _mm512_loadu_ps(a + i + 16) : ca;
        __m512 b0 = sb ? _mm512_loadu_ps(b + i) : cb, b1 = sb ? _mm512_loadu_ps(b + i + 16) : cb;
        _mm512_storeu_ps(out + i, F(a0, b0));
        _mm512_storeu_ps(out + i + 16, F(a1, b1));
    }
    for (; i + 16 <= n; i += 16) {
        __m512 a0 = sa ? _mm512_loadu_ps(a + i) : ca;
        __m512 b0 = sb ? _mm512_loadu_ps(b + i) : cb;
        _mm512_storeu_ps(out + i, F(a0, b0));
    }
    if (i < n) {
        __mmask16 m = ql_tail_mask16(n - i);
        __m512 a0 = sa ? _mm512_maskz_loadu_ps(m, a + i) : ca;
        __m512 b0 = sb ? _mm512_maskz_loadu_ps(m, b + i) : cb;
        _mm512_mask_storeu_ps(out + i, m, F(a0, b0));
    }
}

AI void bin_dispatch(vbin_fn F, const float *a, int64_t sa, const float *b, int64_t sb,
                     float *out, int64_t n) {
    if (sa && sb) bin_loop(F, a, 1, b, 1, out, n);
    else if (sa) bin_loop(F, a, 1, b, 0, out, n);
    else if (sb) bin_loop(F, a, 0, b, 1, out, n);
    else bin_loop(F, a, 0, b, 0, out, n);
}

K void v_binary(int op, const float *a, int64_t sa, const float *b, int64_t sb, float *out,
                int64_t n) {
    if (n <= 0) return;
    switch (op) {
    case QL_BIN_ADD: bin_dispatch(b_add, a, sa, b, sb, out, n); break;
    case QL_BIN_SUB: bin_dispatch(b_sub, a, sa, b, sb, out, n); break;
    case QL_BIN_MUL: bin_dispatch(b_mul, a, sa, b, sb, out, n); break;
    case QL_BIN_DIV: bin_dispatch(b_div, a, sa, b, sb, out, n); break;
    case QL_BIN_MAX: bin_dispatch(b_max, a, sa, b, sb, out, n); break;
    case QL_BIN_MIN: bin_dispatch(b_min, a, sa, b, sb, out, n); break;
    case QL_BIN_EQ: bin_dispatch(b_eq, a, sa, b, sb, out, n); break;
    case QL_BIN_NE: bin_dispatch(b_ne, a, sa, b, sb, out, n); break;
    case QL_BIN_LT: bin_dispatch(b_lt, a, sa, b, sb, out, n); break;
    case QL_BIN_LE: bin_dispatch(b_le, a, sa, b, sb, out, n); break;
    case QL_BIN_GT: bin_dispatch(b_gt, a, sa, b, sb, out, n); break;
    case QL_BIN_GE: bin_dispatch(b_ge, a, sa, b, sb, out, n); break;
    default: ql_ew_scalar.binary(op, a, sa, b, sb, out, n); break; // pow: powf
    }
}

// ---- unary ops: forward and backward side by side ---------------------------------------------
AI __m512 f_neg(__m512 x) { return vxor_sign(x); }
AI __m512 g_neg(__m512 x, __m512 y, __m512 dy) { (void)x; (void)y; return vxor_sign(dy); }

AI __m512 f_exp(__m512 x) { return ql_v16_exp(x); }
AI __m512 g_exp(__m512 x, __m512 y, __m512 dy) { (void)x; return _mm512_mul_ps(dy, y); }

AI __m512 f_log(__m512 x) { return ql_v16_log(x); }
AI __m512 g_log(__m512 x, __m512 y, __m512 dy) { (void)y; return _mm512_div_ps(dy, x); }

AI __m512 f_sqrt(__m512 x) { return _mm512_sqrt_ps(x); }
AI __m512 g_sqrt(__m512 x, __m512 y, __m512 dy) {
    (void)x;
    return _mm512_div_ps(_mm512_mul_ps(dy, _mm512_set1_ps(0.5f)), y);
}

AI __m512 f_abs(__m512 x) { return vabs(x); }
AI __m512 g_abs(__m512 x, __m512 y, __m512 dy) {
    (void)y;
    __m512 r = _mm512_maskz_mov_ps(CMP(x, ZERO, _CMP_GT_OQ), dy);
    return _mm512_mask_mov_ps(r, CMP(x, ZERO, _CMP_LT_OQ), vxor_sign(dy));
}

AI __m512 f_silu(__m512 x) { return _mm512_mul_ps(x, ql_v16_sigmoid(x)); }
AI __m512 g_silu(__m512 x, __m512 y, __m512 dy) {
    (void)y;
    __m512 s = ql_v16_sigmoid(x);
    __m512 t = _mm512_mul_ps(s, _mm512_sub_ps(ONE, s));
    return _mm512_mul_ps(dy, _mm512_add_ps(s, _mm512_mul_ps(x, t)));
}

AI __m512 f_sigmoid(__m512 x) { return ql_v16_sigmoid(x); }
AI __m512 g_sigmoid(__m512 x, __m512 y, __m512 dy) {
    (void)x;
    return _mm512_mul_ps(dy, _mm512_mul_ps(y, _mm512_sub_ps(ONE, y)));
}

AI __m512 f_tanh(__m512 x) { return ql_v16_tanh(x); }
AI __m512 g_tanh(__m512 x, __m512 y, __m512 dy) {
    (void)x;
    return _mm512_mul_ps(dy, _mm512_sub_ps(ONE, _mm512_mul_ps(y, y)));
}

// relu keeps NaN (not <= 0) and maps -0 to +0, like ql_s_relu
AI __m512 f_relu(__m512 x) { return _mm512_maskz_mov_ps(CMP(x, ZERO, _CMP_NLE_UQ), x); }
AI __m512 g_relu(__m512 x, __m512 y, __m512 dy) {
    (void)y;
    return _mm512_maskz_mov_ps(CMP(x, ZERO, _CMP_GT_OQ), dy);
}

AI __m512 f_square(__m512 x) { return _mm512_mul_ps(x, x); }
AI __m512 g_square(__m512 x, __m512 y, __m512 dy) {
    (void)y;
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(2.0f), x), dy);
}

AI __m512 f_rsqrt(__m512 x) { return _mm512_div_ps(ONE, _mm512_sqrt_ps(x)); }
AI __m512 g_rsqrt(__m512 x, __m512 y, __m512 dy) {
    (void)x;
    __m512 t = _mm512_mul_ps(_mm512_set1_ps(-0.5f), dy);
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(t, y), y), y);
}

AI void un_loop(vun_fn F, const float *x, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 a = _mm512_loadu_ps(x + i), b = _mm512_loadu_ps(x + i + 16);
        _mm512_storeu_ps(y + i, F(a));
        _mm512_storeu_ps(y + i + 16, F(b));
    }
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, F(_mm512_loadu_ps(x + i)));
    if (i < n) {
        __mmask16 m = ql_tail_mask16(n - i);
        _mm512_mask_storeu_ps(y + i, m, F(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

K void v_unary(int op, const float *x, float *y, int64_t n) {
    switch (op) {
    case QL_UN_NEG: un_loop(f_neg, x, y, n); break;
    case QL_UN_EXP: un_loop(f_exp, x, y, n); break;
    case QL_UN_LOG: un_loop(f_log, x, y, n); break;
    case QL_UN_SQRT: un_loop(f_sqrt, x, y, n); break;
    case QL_UN_ABS: un_loop(f_abs, x, y, n); break;
    case QL_UN_SILU: un_loop(f_silu, x, y, n); break;
    case QL_UN_SIGMOID: un_loop(f_sigmoid, x, y, n); break;
    case QL_UN_TANH: un_loop(f_tanh, x, y, n); break;
    case QL_UN_RELU: un_loop(f_relu, x, y, n); break;
    case QL_UN_SQUARE: un_loop(f_square, x, y, n); break;
    case QL_UN_RSQRT: un_loop(f_rsqrt, x, y, n); break;
    default: break;
    }
}

// nx / ny: whether the op reads x / y (the other may be NULL).
AI void bwd_loop(vbwd_fn G, int nx, int ny, const float *x, const float *y, const float *dy,
                 float *dx, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 vx = nx ? _mm512_loadu_ps(x + i) : ZERO;
        __m512 vy = ny ? _mm512_loadu_ps(y + i) : ZERO;
        _mm512_storeu_ps(dx + i, G(vx, vy, _mm512_loadu_ps(dy + i)));
    }
    if (i < n) {
        __mmask16 m = ql_tail_mask16(n - i);
        __m512 vx = nx ? _mm512_maskz_loadu_ps(m, x + i) : ZERO;
        __m512 vy = ny ? _mm512_maskz_loadu_ps(m, y + i) : ZERO;
        _mm512_mask_storeu_ps(dx + i, m, G(vx, vy, _mm512_maskz_loadu_ps(m, dy + i)));
    }
}

K void v_unary_bwd(int op, const float *x, const float *y, const float *dy, float *dx,
                   int64_t n) {
    switch (op) {
    case QL_UN_NEG: bwd_loop(g_neg, 0, 0, x, y, dy, dx, n); break;
    case QL_UN_EXP: bwd_loop(g_exp, 0, 1, x, y, dy, dx, n); break;
    case QL_UN_LOG: bwd_loop(g_log, 1, 0, x, y, dy, dx, n); break;
    case QL_UN_SQRT: bwd_loop(g_sqrt, 0, 1, x, y, dy, dx, n); break;
    case QL_UN_ABS: bwd_loop(g_abs, 1, 0, x, y, dy, dx, n); break;
    case QL_UN_SILU: bwd_loop(g_silu, 1, 0, x, y, dy, dx, n); break;
    case QL_UN_SIGMOID: bwd_loop(g_sigmoid, 0, 1, x, y, dy, dx, n); break;
    case QL_UN_TANH: bwd_loop(g_tanh, 0, 1, x, y, dy, dx, n); break;
    case QL_UN_RELU: bwd_loop(g_relu, 1, 0, x, y, dy, dx, n); break;
    case QL_UN_SQUARE: bwd_loop(g_square, 1, 0, x, y, dy, dx, n); break;
    case QL_UN_RSQRT: bwd_loop(g_rsqrt, 0, 1, x, y, dy, dx, n); break;
    default: break;
    }
}

// ---- clamp, affine, axpy, where -----------------------------------------------------------------
typedef __m512 (*vtri_fn)(__m512, __m512, __m512, __m512 p, __m512 q);

AI void tri_loop(vtri_fn G, const float *a, const float *b, const float *c, float p, float q,
                 float *out, int64_t n) {
    __m512 vp = _mm512_set1_ps(p), vq = _mm512_set1_ps(q);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 va = a ? _mm512_loadu_ps(a + i) : ZERO;
        __m512 vb = b ? _mm512_loadu_ps(b + i) : ZERO;
        __m512 vc = c ? _mm512_loadu_ps(c + i) : ZERO;
        _mm512_storeu_ps(out + i, G(va, vb, vc, vp, vq));
    }
    if (i < n) {
        __mmask16 m = ql_tail_mask16(n - i);
        __m512 va = a ? _mm512_maskz_loadu_ps(m, a + i) : ZERO;
        __m512 vb = b ? _mm512_maskz_loadu_ps(m, b + i) : ZERO;
        __m512 vc = c ? _mm512_maskz_loadu_ps(m, c + i) : ZERO;
        _mm512_mask_storeu_ps(out + i, m, G(va, vb, vc, vp, vq));
    }
}

// clamp: max_ps(lo, x) is (lo > x ? lo : x) and keeps a NaN x; then min_ps(hi, v).
AI __m512 t_clamp(__m512 x, __m512 u, __m512 v, __m512 lo, __m512 hi) {
    (void)u; (void)v;
    return _mm512_min_ps(hi, _mm512_max_ps(lo, x));
}
AI __m512 t_clamp_bwd(__m512 x, __m512 dy, __m512 v, __m512 lo, __m512 hi) {
    (void)v;
    return _mm512_maskz_mov_ps(CMP(x, lo, _CMP_GE_OQ) & CMP(x, hi, _CMP_LE_OQ), dy);
}
AI __m512 t_affine(__m512 x, __m512 u, __m512 v, __m512 a, __m512 b) {
    (void)u; (void)v;
    return _mm512_add_ps(_mm512_mul_ps(a, x), b);
}
AI __m512 t_axpy(__m512 x, __m512 y, __m512 v, __m512 alpha, __m512 q) {
    (void)v; (void)q;
    return _mm512_add_ps(y, _mm512_mul_ps(alpha, x));
}
AI __m512 t_where(__m512 c, __m512 a, __m512 b, __m512 p, __m512 q) {
    (void)p; (void)q;
    return _mm512_mask_mov_ps(b, CMP(c, ZERO, _CMP_NEQ_UQ), a);
}

K void v_clamp(const float *x, float lo, float hi, float *y, int64_t n) {
    tri_loop(t_clamp, x, NULL, NULL, lo, hi, y, n);
}
K void v_clamp_bwd(const float *x, float lo, float hi, const float *dy, float *dx, int64_t n) {
    tri_loop(t_clamp_bwd, x, dy, NULL, lo, hi, dx, n);
}
K void v_affine(const float *x, float a, float b, float *y, int64_t n) {
    tri_loop(t_affine, x, NULL, NULL, a, b, y, n);
}
K void v_axpy(float alpha, const float *x, float *y, int64_t n) {
    tri_loop(t_axpy, x, y, NULL, alpha, 0.0f, y, n);
}
K void v_where(const float *c, const float *a, const float *b, float *out, int64_t n) {
    tri_loop(t_where, c, a, b, 0.0f, 0.0f, out, n);
}

const ql_ew_table ql_ew_avx512 = {
    .binary = v_binary,
    .unary = v_unary,
    .unary_bwd = v_unary_bwd,
    .clamp = v_clamp,
    .clamp_bwd = v_clamp_bwd,
    .affine = v_affine,
    .axpy = v_axpy,
    .where = v_where,
};

#endif
