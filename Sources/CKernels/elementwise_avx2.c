// AVX2+FMA elementwise kernels (8 floats per vector). Arithmetic ops reproduce the scalar
// reference bit for bit (same operation order, no FMA contraction); exp/log/tanh/sigmoid use
// vmath_avx2.h. Tails go through a zero-padded stack buffer, never reading past n.
#include "kernels_internal.h"

#if QL_X86
#include "vmath_avx2.h"

#include <immintrin.h>
#include <string.h>

#define AI __attribute__((always_inline)) static inline QL_TARGET_AVX2
#define K static QL_TARGET_AVX2

typedef __m256 (*vbin_fn)(__m256, __m256);
typedef __m256 (*vun_fn)(__m256);
typedef __m256 (*vbwd_fn)(__m256 x, __m256 y, __m256 dy);

// ---- binary ops -------------------------------------------------------------------------------
AI __m256 b_add(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
AI __m256 b_sub(__m256 a, __m256 b) { return _mm256_sub_ps(a, b); }
AI __m256 b_mul(__m256 a, __m256 b) { return _mm256_mul_ps(a, b); }
AI __m256 b_div(__m256 a, __m256 b) { return _mm256_div_ps(a, b); }
// max_ps(a, b) is (a > b ? a : b); a NaN a is put back explicitly (see ql_s_max).
AI __m256 b_max(__m256 a, __m256 b) {
    return _mm256_blendv_ps(_mm256_max_ps(a, b), a, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
}
AI __m256 b_min(__m256 a, __m256 b) {
    return _mm256_blendv_ps(_mm256_min_ps(a, b), a, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
}
#define CMP_OP(name, pred)                                                                   \
    AI __m256 name(__m256 a, __m256 b) {                                                     \
        return _mm256_and_ps(_mm256_cmp_ps(a, b, pred), _mm256_set1_ps(1.0f));               \
    }
CMP_OP(b_eq, _CMP_EQ_OQ)
CMP_OP(b_ne, _CMP_NEQ_UQ)
CMP_OP(b_lt, _CMP_LT_OQ)
CMP_OP(b_le, _CMP_LE_OQ)
CMP_OP(b_gt, _CMP_GT_OQ)
CMP_OP(b_ge, _CMP_GE_OQ)

AI void bin_loop(vbin_fn F, const float *a, int sa, const float *b, int sb, float *out,
                 int64_t n) {
    __m256 ca = sa ? _mm256_setzero_ps() : _mm256_set1_ps(a[0]);
    __m256 cb = sb ? _mm256_setzero_ps() : _mm256_set1_ps(b[0]);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 a0 = sa ? _mm256_loadu_ps(a + i) : ca, a1 = sa ? _mm256_loadu_ps(a + i + 8) : ca;
        __m256 b0 = sb ? _mm256_loadu_ps(b + i) : cb, b1 = sb ? _mm256_loadu_ps(b + i + 8) : cb;
        _mm256_storeu_ps(out + i, F(a0, b0));
        _mm256_storeu_ps(out + i + 8, F(a1, b1));
    }
    for (; i + 8 <= n; i += 8) {
        __m256 a0 = sa ? _mm256_loadu_ps(a + i) : ca;
        __m256 b0 = sb ? _mm256_loadu_ps(b + i) : cb;
        _mm256_storeu_ps(out + i, F(a0, b0));
    }
    if (i < n) {
        size_t r = (size_t)(n - i) * sizeof(float);
        float ta[8] = {0}, tb[8] = {0}, to[8];
        if (sa) memcpy(ta, a + i, r);
        if (sb) memcpy(tb, b + i, r);
        __m256 a0 = sa ? _mm256_loadu_ps(ta) : ca;
        __m256 b0 = sb ? _mm256_loadu_ps(tb) : cb;
        _mm256_storeu_ps(to, F(a0, b0));
        memcpy(out + i, to, r);
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
#define SIGN _mm256_set1_ps(-0.0f)
#define ZERO _mm256_setzero_ps()
#define ONE _mm256_set1_ps(1.0f)

AI __m256 f_neg(__m256 x) { return _mm256_xor_ps(x, SIGN); }
AI __m256 g_neg(__m256 x, __m256 y, __m256 dy) { (void)x; (void)y; return _mm256_xor_ps(dy, SIGN); }

AI __m256 f_exp(__m256 x) { return ql_v8_exp(x); }
AI __m256 g_exp(__m256 x, __m256 y, __m256 dy) { (void)x; return _mm256_mul_ps(dy, y); }

AI __m256 f_log(__m256 x) { return ql_v8_log(x); }
AI __m256 g_log(__m256 x, __m256 y, __m256 dy) { (void)y; return _mm256_div_ps(dy, x); }

AI __m256 f_sqrt(__m256 x) { return _mm256_sqrt_ps(x); }
AI __m256 g_sqrt(__m256 x, __m256 y, __m256 dy) {
    (void)x;
    return _mm256_div_ps(_mm256_mul_ps(dy, _mm256_set1_ps(0.5f)), y);
}

AI __m256 f_abs(__m256 x) { return _mm256_andnot_ps(SIGN, x); }
AI __m256 g_abs(__m256 x, __m256 y, __m256 dy) {
    (void)y;
    __m256 pos = _mm256_and_ps(_mm256_cmp_ps(x, ZERO, _CMP_GT_OQ), dy);
    __m256 neg = _mm256_and_ps(_mm256_cmp_ps(x, ZERO, _CMP_LT_OQ), _mm256_xor_ps(dy, SIGN));
    return _mm256_or_ps(pos, neg);
}

AI __m256 f_silu(__m256 x) { return _mm256_mul_ps(x, ql_v8_sigmoid(x)); }
AI __m256 g_silu(__m256 x, __m256 y, __m256 dy) {
    (void)y;
    __m256 s = ql_v8_sigmoid(x);
    __m256 t = _mm256_mul_ps(s, _mm256_sub_ps(ONE, s));
    return _mm256_mul_ps(dy, _mm256_add_ps(s, _mm256_mul_ps(x, t)));
}

AI __m256 f_sigmoid(__m256 x) { return ql_v8_sigmoid(x); }
AI __m256 g_sigmoid(__m256 x, __m256 y, __m256 dy) {
    (void)x;
    return _mm256_mul_ps(dy, _mm256_mul_ps(y, _mm256_sub_ps(ONE, y)));
}

AI __m256 f_tanh(__m256 x) { return ql_v8_tanh(x); }
AI __m256 g_tanh(__m256 x, __m256 y, __m256 dy) {
    (void)x;
    return _mm256_mul_ps(dy, _mm256_sub_ps(ONE, _mm256_mul_ps(y, y)));
}

// relu keeps NaN (not <= 0) and maps -0 to +0, like ql_s_relu
AI __m256 f_relu(__m256 x) { return _mm256_and_ps(_mm256_cmp_ps(x, ZERO, _CMP_NLE_UQ), x); }
AI __m256 g_relu(__m256 x, __m256 y, __m256 dy) {
    (void)y;
    return _mm256_and_ps(_mm256_cmp_ps(x, ZERO, _CMP_GT_OQ), dy);
}

AI __m256 f_square(__m256 x) { return _mm256_mul_ps(x, x); }
AI __m256 g_square(__m256 x, __m256 y, __m256 dy) {
    (void)y;
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(2.0f), x), dy);
}

AI __m256 f_rsqrt(__m256 x) { return _mm256_div_ps(ONE, _mm256_sqrt_ps(x)); }
AI __m256 g_rsqrt(__m256 x, __m256 y, __m256 dy) {
    (void)x;
    __m256 t = _mm256_mul_ps(_mm256_set1_ps(-0.5f), dy);
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(t, y), y), y);
}

AI void un_loop(vun_fn F, const float *x, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
        _mm256_storeu_ps(y + i, F(a));
        _mm256_storeu_ps(y + i + 8, F(b));
    }
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, F(_mm256_loadu_ps(x + i)));
    if (i < n) {
        size_t r = (size_t)(n - i) * sizeof(float);
        float t[8] = {0};
        memcpy(t, x + i, r);
        _mm256_storeu_ps(t, F(_mm256_loadu_ps(t)));
        memcpy(y + i, t, r);
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
    for (; i + 8 <= n; i += 8) {
        __m256 vx = nx ? _mm256_loadu_ps(x + i) : ZERO;
        __m256 vy = ny ? _mm256_loadu_ps(y + i) : ZERO;
        _mm256_storeu_ps(dx + i, G(vx, vy, _mm256_loadu_ps(dy + i)));
    }
    if (i < n) {
        size_t r = (size_t)(n - i) * sizeof(float);
        float tx[8] = {0}, ty[8] = {0}, td[8] = {0};
        if (nx) memcpy(tx, x + i, r);
        if (ny) memcpy(ty, y + i, r);
        memcpy(td, dy + i, r);
        _mm256_storeu_ps(td, G(_mm256_loadu_ps(tx), _mm256_loadu_ps(ty), _mm256_loadu_ps(td)));
        memcpy(dx + i, td, r);
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
// Generic 1..3-input loop: G(a, b, c) with the inputs each loaded when non-NULL.
typedef __m256 (*vtri_fn)(__m256, __m256, __m256, __m256 p, __m256 q);

AI void tri_loop(vtri_fn G, const float *a, const float *b, const float *c, float p, float q,
                 float *out, int64_t n) {
    __m256 vp = _mm256_set1_ps(p), vq = _mm256_set1_ps(q);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 va = a ? _mm256_loadu_ps(a + i) : ZERO;
        __m256 vb = b ? _mm256_loadu_ps(b + i) : ZERO;
        __m256 vc = c ? _mm256_loadu_ps(c + i) : ZERO;
        _mm256_storeu_ps(out + i, G(va, vb, vc, vp, vq));
    }
    if (i < n) {
        size_t r = (size_t)(n - i) * sizeof(float);
        float ta[8] = {0}, tb[8] = {0}, tc[8] = {0};
        if (a) memcpy(ta, a + i, r);
        if (b) memcpy(tb, b + i, r);
        if (c) memcpy(tc, c + i, r);
        _mm256_storeu_ps(ta, G(_mm256_loadu_ps(ta), _mm256_loadu_ps(tb), _mm256_loadu_ps(tc),
                               vp, vq));
        memcpy(out + i, ta, r);
    }
}

// clamp: max_ps(lo, x) is (lo > x ? lo : x) and keeps a NaN x; then min_ps(hi, v).
AI __m256 t_clamp(__m256 x, __m256 u, __m256 v, __m256 lo, __m256 hi) {
    (void)u; (void)v;
    return _mm256_min_ps(hi, _mm256_max_ps(lo, x));
}
AI __m256 t_clamp_bwd(__m256 x, __m256 dy, __m256 v, __m256 lo, __m256 hi) {
    (void)v;
    __m256 in = _mm256_and_ps(_mm256_cmp_ps(x, lo, _CMP_GE_OQ), _mm256_cmp_ps(x, hi, _CMP_LE_OQ));
    return _mm256_and_ps(in, dy);
}
AI __m256 t_affine(__m256 x, __m256 u, __m256 v, __m256 a, __m256 b) {
    (void)u; (void)v;
    return _mm256_add_ps(_mm256_mul_ps(a, x), b);
}
AI __m256 t_axpy(__m256 x, __m256 y, __m256 v, __m256 alpha, __m256 q) {
    (void)v; (void)q;
    return _mm256_add_ps(y, _mm256_mul_ps(alpha, x));
}
AI __m256 t_where(__m256 c, __m256 a, __m256 b, __m256 p, __m256 q) {
    (void)p; (void)q;
    return _mm256_blendv_ps(b, a, _mm256_cmp_ps(c, ZERO, _CMP_NEQ_UQ));
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

const ql_ew_table ql_ew_avx2 = {
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
