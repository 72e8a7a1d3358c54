// qlora fused neural-network kernels (nn_*.c): forward and backward of RMSNorm, the causal LM
// cross-entropy, SwiGLU, RoPE and causal grouped-query attention. Same conventions as
// qlora_kernels.h: contiguous row-major f32, int64_t sizes, never allocate on the caller's
// behalf except internal scratch, fixed work partitions (results never depend on the thread
// count). Each kernel has a scalar reference (*_ref) and picks its ISA level at call time.
#ifndef QLORA_NN_H
#define QLORA_NN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// RMSNorm over the last dim of x [rows, n]: y = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps)
// (mean accumulated in double), rstd [rows] saved for the backward.
void ql_rmsnorm_f32(const float *x, const float *w, float eps, float *y, float *rstd,
                    int64_t rows, int64_t n);
void ql_rmsnorm_f32_ref(const float *x, const float *w, float eps, float *y, float *rstd,
                        int64_t rows, int64_t n);
// dx = rstd * (w*dy - x * rstd^2 * mean(w*dy*x)) (dx may be NULL); dw[j] = sum_r dy*x*rstd
// summed over rows in row order (dw may be NULL).
void ql_rmsnorm_backward_f32(const float *x, const float *w, const float *rstd, const float *dy,
                             float *dx, float *dw, int64_t rows, int64_t n);
void ql_rmsnorm_backward_f32_ref(const float *x, const float *w, const float *rstd,
                                 const float *dy, float *dx, float *dw, int64_t rows, int64_t n);

// Cross-entropy rows of logits viewed as [batch, per, v] with the batch stride bstride (rows
// (i, j) at logits + i*bstride + j*v): lse[r] = logsumexp of row r, loss[r] = lse - logit[target]
// (0 when target[r] < 0: ignored). r = i*per + j; rows = batch*per.
void ql_xent_f32(const float *logits, int64_t batch, int64_t per, int64_t bstride, int64_t v,
                 const int64_t *target, float *lse, float *loss);
void ql_xent_f32_ref(const float *logits, int64_t batch, int64_t per, int64_t bstride,
                     int64_t v, const int64_t *target, float *lse, float *loss);
// dx (same layout as logits) = (exp(logit - lse) - onehot(target)) * scale, 0 for ignored rows.
void ql_xent_backward_f32(const float *logits, int64_t batch, int64_t per, int64_t bstride,
                          int64_t v, const int64_t *target, const float *lse, float scale,
                          float *dx);
void ql_xent_backward_f32_ref(const float *logits, int64_t batch, int64_t per, int64_t bstride,
                              int64_t v, const int64_t *target, const float *lse, float scale,
                              float *dx);

// SwiGLU: y = silu(g) * u; backward dg = dy*u*s*(1 + g*(1-s)) (s = sigmoid(g)), du = dy*silu(g)
// (either output may be NULL).
void ql_swiglu_f32(const float *g, const float *u, float *y, int64_t n);
void ql_swiglu_f32_ref(const float *g, const float *u, float *y, int64_t n);
void ql_swiglu_backward_f32(const float *g, const float *u, const float *dy, float *dg,
                            float *du, int64_t n);
void ql_swiglu_backward_f32_ref(const float *g, const float *u, const float *dy, float *dg,
                                float *du, int64_t n);

// RoPE (half split) on x [outer, t, d] with tables cos/sin [t, d]:
// y = x*cos + rotate_half(x)*sin, rotate_half(x) = concat(-x2, x1). inverse = 1 applies the
// transpose (the backward): dx = dy*cos + rotate_half^T(dy*sin). y may not alias x.
void ql_rope_f32(const float *x, const float *cos, const float *sin, float *y, int64_t outer,
                 int64_t t, int64_t d, int inverse);
void ql_rope_f32_ref(const float *x, const float *cos, const float *sin, float *y,
                     int64_t outer, int64_t t, int64_t d, int inverse);

// Causal attention with grouped-query heads: q [b, h, t, d], k and v [b, kv, s, d] (h a multiple
// of kv, s >= t; query i sees keys j <= s - t + i). out [b, h, t, d] = softmax(q k^T * scale) v,
// lse [b, h, t] the logsumexp of each score row. Uses cblas_sgemm (OpenBLAS) per (b, head) and
// scratch of t*s floats per thread (backward 2*t*s + t), allocated once per call. Every attention
// function returns 0, or -1 when that scratch cannot be allocated (then nothing is written).
int ql_attention_f32(const float *q, const float *k, const float *v, float *out, float *lse,
                      int64_t b, int64_t h, int64_t kv, int64_t t, int64_t s, int64_t d, float scale);
int ql_attention_f32_ref(const float *q, const float *k, const float *v, float *out, float *lse,
                          int64_t b, int64_t h, int64_t kv, int64_t t, int64_t s, int64_t d,
                          float scale);
// dq [b, h, t, d], dk and dv [b, kv, s, d] (each may be NULL; dk, dv summed over the heads of a
// group in head order) from dout, given the forward's out and lse.
int ql_attention_backward_f32(const float *q, const float *k, const float *v, const float *out,
                               const float *lse, const float *dout, float *dq, float *dk,
                               float *dv, int64_t b, int64_t h, int64_t kv, int64_t t, int64_t s,
                               int64_t d, float scale);
int ql_attention_backward_f32_ref(const float *q, const float *k, const float *v,
                                   const float *out, const float *lse, const float *dout,
                                   float *dq, float *dk, float *dv, int64_t b, int64_t h,
                                   int64_t kv, int64_t t, int64_t s, int64_t d, float scale);

#ifdef __cplusplus
}
#endif
#endif
