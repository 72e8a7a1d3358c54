// Scalar definitions of every elementwise op (the reference semantics), forward and backward
// side by side. Used by the scalar kernels and by the strided fallback of ql_binary_bcast_f32.
// The SIMD levels reproduce these exactly for the arithmetic ops and to ~2 ulp for exp, log,
// tanh and sigmoid.
#ifndef QLORA_SCALAR_OPS_H
#define QLORA_SCALAR_OPS_H

#include "qlora_kernels.h"

#include <math.h>

// ---- binary ---------------------------------------------------------------------------------
// max/min: a NaN in either operand gives NaN; otherwise (a > b ? a : b) / (a < b ? a : b).
static inline float ql_s_max(float a, float b) { return a != a ? a : (a > b ? a : b); }
static inline float ql_s_min(float a, float b) { return a != a ? a : (a < b ? a : b); }

static inline float ql_s_binary(int op, float a, float b) {
    switch (op) {
    case QL_BIN_ADD: return a + b;
    case QL_BIN_SUB: return a - b;
    case QL_BIN_MUL: return a * b;
    case QL_BIN_DIV: return a / b;
    case QL_BIN_MAX: return ql_s_max(a, b);
    case QL_BIN_MIN: return ql_s_min(a, b);
    case QL_BIN_POW: return powf(a, b);
    case QL_BIN_EQ: return a == b ? 1.0f : 0.0f;
    case QL_BIN_NE: return a != b ? 1.0f : 0.0f;
    case QL_BIN_LT: return a < b ? 1.0f : 0.0f;
    case QL_BIN_LE: return a <= b ? 1.0f : 0.0f;
    case QL_BIN_GT: return a > b ? 1.0f : 0.0f;
    case QL_BIN_GE: return a >= b ? 1.0f : 0.0f;
    default: return 0.0f;
    }
}

// ---- unary: forward and backward of each op together ----------------------------------------
static inline float ql_s_neg(float x) { return -x; }
static inline float ql_s_neg_bwd(float x, float y, float dy) { (void)x; (void)y; return -dy; }

static inline float ql_s_exp(float x) { return expf(x); }
static inline float ql_s_exp_bwd(float x, float y, float dy) { (void)x; return dy * y; }

static inline float ql_s_log(float x) { return logf(x); }
static inline float ql_s_log_bwd(float x, float y, float dy) { (void)y; return dy / x; }

static inline float ql_s_sqrt(float x) { return sqrtf(x); }
static inline float ql_s_sqrt_bwd(float x, float y, float dy) { (void)x; return dy * 0.5f / y; }

static inline float ql_s_abs(float x) { return fabsf(x); }
static inline float ql_s_abs_bwd(float x, float y, float dy) {
    (void)y;
    return x > 0.0f ? dy : (x < 0.0f ? -dy : 0.0f);
}

// sigmoid without overflow: e = exp(-|x|) <= 1; x >= 0: 1/(1+e), x < 0: e/(1+e).
static inline float ql_s_sigmoid(float x) {
    float e = expf(-fabsf(x));
    float r = 1.0f / (1.0f + e);
    return x >= 0.0f ? r : e * r;
}
static inline float ql_s_sigmoid_bwd(float x, float y, float dy) {
    (void)x;
    return dy * (y * (1.0f - y));
}

// silu(x) = x * sigmoid(x) (silu(-inf) = -inf * 0 = NaN, as in PyTorch)
static inline float ql_s_silu(float x) { return x * ql_s_sigmoid(x); }
static inline float ql_s_silu_bwd(float x, float y, float dy) {
    (void)y;
    float s = ql_s_sigmoid(x);
    return dy * (s + x * (s * (1.0f - s)));
}

static inline float ql_s_tanh(float x) { return tanhf(x); }
static inline float ql_s_tanh_bwd(float x, float y, float dy) {
    (void)x;
    return dy * (1.0f - y * y);
}

// relu: NaN passes through; relu(-0) = +0
static inline float ql_s_relu(float x) { return !(x <= 0.0f) ? x : 0.0f; }
static inline float ql_s_relu_bwd(float x, float y, float dy) {
    (void)y;
    return x > 0.0f ? dy : 0.0f;
}

static inline float ql_s_square(float x) { return x * x; }
static inline float ql_s_square_bwd(float x, float y, float dy) {
    (void)y;
    return 2.0f * x * dy;
}

static inline float ql_s_rsqrt(float x) { return 1.0f / sqrtf(x); }
static inline float ql_s_rsqrt_bwd(float x, float y, float dy) {
    (void)x;
    return -0.5f * dy * y * y * y;
}

static inline float ql_s_unary(int op, float x) {
    switch (op) {
    case QL_UN_NEG: return ql_s_neg(x);
    case QL_UN_EXP: return ql_s_exp(x);
    case QL_UN_LOG: return ql_s_log(x);
    case QL_UN_SQRT: return ql_s_sqrt(x);
    case QL_UN_ABS: return ql_s_abs(x);
    case QL_UN_SILU: return ql_s_silu(x);
    case QL_UN_SIGMOID: return ql_s_sigmoid(x);
    case QL_UN_TANH: return ql_s_tanh(x);
    case QL_UN_RELU: return ql_s_relu(x);
    case QL_UN_SQUARE: return ql_s_square(x);
    case QL_UN_RSQRT: return ql_s_rsqrt(x);
    default: return 0.0f;
    }
}

// ---- clamp / affine / where -------------------------------------------------------------------
static inline float ql_s_clamp(float x, float lo, float hi) {
    float v = x < lo ? lo : x; // NaN passes through
    return v > hi ? hi : v;
}
static inline float ql_s_clamp_bwd(float x, float lo, float hi, float dy) {
    return (x >= lo && x <= hi) ? dy : 0.0f;
}

#endif
