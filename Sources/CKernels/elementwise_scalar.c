// Scalar reference kernels for the elementwise ops (plain C, libm). Never deleted: every SIMD
// level is tested against these. Also the scalar-only pow kernels every level shares.
#include "kernels_internal.h"
#include "scalar_ops.h"

#ifdef __clang__
#pragma clang fp contract(off) // the reference never fuses a*b+c
#endif

// A stride-0 operand is read once, before any output is written (as the SIMD levels do).
#define BIN_LOOP(EXPR)                                                                       \
    for (int64_t i = 0; i < n; i++) {                                                        \
        float x = sa ? a[i] : ca, y = sb ? b[i] : cb;                                        \
        out[i] = (EXPR);                                                                     \
    }                                                                                        \
    break;

static void s_binary(int op, const float *a, int64_t sa, const float *b, int64_t sb, float *out,
                     int64_t n) {
    if (n <= 0) return;
    const float ca = a[0], cb = b[0];
    switch (op) {
    case QL_BIN_ADD: BIN_LOOP(x + y)
    case QL_BIN_SUB: BIN_LOOP(x - y)
    case QL_BIN_MUL: BIN_LOOP(x * y)
    case QL_BIN_DIV: BIN_LOOP(x / y)
    case QL_BIN_MAX: BIN_LOOP(ql_s_max(x, y))
    case QL_BIN_MIN: BIN_LOOP(ql_s_min(x, y))
    case QL_BIN_POW: BIN_LOOP(powf(x, y))
    default: BIN_LOOP(ql_s_binary(op, x, y))
    }
}

#define UN_LOOP(F)                                                                           \
    for (int64_t i = 0; i < n; i++) y[i] = F(x[i]);                                          \
    break;

static void s_unary(int op, const float *x, float *y, int64_t n) {
    switch (op) {
    case QL_UN_NEG: UN_LOOP(ql_s_neg)
    case QL_UN_EXP: UN_LOOP(ql_s_exp)
    case QL_UN_LOG: UN_LOOP(ql_s_log)
    case QL_UN_SQRT: UN_LOOP(ql_s_sqrt)
    case QL_UN_ABS: UN_LOOP(ql_s_abs)
    case QL_UN_SILU: UN_LOOP(ql_s_silu)
    case QL_UN_SIGMOID: UN_LOOP(ql_s_sigmoid)
    case QL_UN_TANH: UN_LOOP(ql_s_tanh)
    case QL_UN_RELU: UN_LOOP(ql_s_relu)
    case QL_UN_SQUARE: UN_LOOP(ql_s_square)
    case QL_UN_RSQRT: UN_LOOP(ql_s_rsqrt)
    default: break;
    }
}

// x or y may be NULL when the op does not read them.
#define BWD_LOOP(F, NEEDX, NEEDY)                                                            \
    for (int64_t i = 0; i < n; i++)                                                          \
        dx[i] = F(NEEDX ? x[i] : 0.0f, NEEDY ? y[i] : 0.0f, dy[i]);                          \
    break;

static void s_unary_bwd(int op, const float *x, const float *y, const float *dy, float *dx,
                        int64_t n) {
    switch (op) {
    case QL_UN_NEG: BWD_LOOP(ql_s_neg_bwd, 0, 0)
    case QL_UN_EXP: BWD_LOOP(ql_s_exp_bwd, 0, 1)
    case QL_UN_LOG: BWD_LOOP(ql_s_log_bwd, 1, 0)
    case QL_UN_SQRT: BWD_LOOP(ql_s_sqrt_bwd, 0, 1)
    case QL_UN_ABS: BWD_LOOP(ql_s_abs_bwd, 1, 0)
    case QL_UN_SILU: BWD_LOOP(ql_s_silu_bwd, 1, 0)
    case QL_UN_SIGMOID: BWD_LOOP(ql_s_sigmoid_bwd, 0, 1)
    case QL_UN_TANH: BWD_LOOP(ql_s_tanh_bwd, 0, 1)
    case QL_UN_RELU: BWD_LOOP(ql_s_relu_bwd, 1, 0)
    case QL_UN_SQUARE: BWD_LOOP(ql_s_square_bwd, 1, 0)
    case QL_UN_RSQRT: BWD_LOOP(ql_s_rsqrt_bwd, 0, 1)
    default: break;
    }
}

static void s_clamp(const float *x, float lo, float hi, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = ql_s_clamp(x[i], lo, hi);
}

static void s_clamp_bwd(const float *x, float lo, float hi, const float *dy, float *dx,
                        int64_t n) {
    for (int64_t i = 0; i < n; i++) dx[i] = ql_s_clamp_bwd(x[i], lo, hi, dy[i]);
}

static void s_affine(const float *x, float a, float b, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = a * x[i] + b;
}

static void s_axpy(float alpha, const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = y[i] + alpha * x[i];
}

static void s_where(const float *c, const float *a, const float *b, float *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = c[i] != 0.0f ? a[i] : b[i];
}

void ql_pow_scalar_ref(const float *x, float p, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = powf(x[i], p);
}

// dx = dy * p * x^(p-1); p == 0 gives 0 (x^0 is constant, also at x = 0).
void ql_pow_scalar_backward_ref(const float *x, float p, const float *dy, float *dx, int64_t n) {
    float pm1 = p - 1.0f;
    if (p == 0.0f) {
        for (int64_t i = 0; i < n; i++) dx[i] = 0.0f;
        return;
    }
    for (int64_t i = 0; i < n; i++) dx[i] = dy[i] * p * powf(x[i], pm1);
}

const ql_ew_table ql_ew_scalar = {
    .binary = s_binary,
    .unary = s_unary,
    .unary_bwd = s_unary_bwd,
    .clamp = s_clamp,
    .clamp_bwd = s_clamp_bwd,
    .affine = s_affine,
    .axpy = s_axpy,
    .where = s_where,
};
