// Causal grouped-query attention, forward and backward side by side (qlora_nn.h). Per (batch,
// head), serially: the [T, S] score tile by cblas_sgemm, the masked row softmax (threaded over
// fixed row groups, scalar or AVX2 exp chosen at call time; logsumexp saved per row), then the
// products with V. The backward recomputes the probabilities from the saved logsumexp and
// accumulates dk, dv over the query heads that share a kv head in head order (beta = 1), so
// results never depend on the thread count. OpenBLAS is never called from inside a task.
#include "kernels_internal.h"
#include "qlora_nn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#if QL_X86
#include <immintrin.h>
#include "vmath_avx2.h"
#endif

// OpenBLAS (linked into the final binary); the CKernels target has no cblas.h.
#define CBLAS_ROW_MAJOR 101
#define CBLAS_NO_TRANS 111
#define CBLAS_TRANS 112
void cblas_sgemm(int order, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                 const float *b, int ldb, float beta, float *c, int ldc);

static void gemm(int ta, int tb, int m, int n, int k, float alpha, const float *a, const float *b,
                 float beta, float *c) {
    cblas_sgemm(CBLAS_ROW_MAJOR, ta ? CBLAS_TRANS : CBLAS_NO_TRANS, tb ? CBLAS_TRANS : CBLAS_NO_TRANS, m, n, k,
                alpha, a, ta ? m : k, b, tb ? k : n, beta, c, n);
}

// ---- rows -------------------------------------------------------------------------------------
// Forward row of len allowed scores (the rest of the row, up to s, is masked): p = softmax,
// written in place with zeros after len; returns logsumexp.
static float sm_row_s(float *p, int64_t len, int64_t s) {
    float m = -INFINITY;
    for (int64_t i = 0; i < len; i++) m = p[i] > m || p[i] != p[i] ? p[i] : m;
    double sum = 0.0;
    for (int64_t i = 0; i < len; i++) sum += (double)expf(p[i] - m);
    float lse = (float)((double)m + log(sum));
    for (int64_t i = 0; i < len; i++) p[i] = expf(p[i] - lse);
    for (int64_t i = len; i < s; i++) p[i] = 0.0f;
    return lse;
}

// Backward row: p = exp(score - lse) over len, then ds = p * (dp - delta) in place of dp;
// zeros after len (in both).
static void bw_row_s(float *p, float *dp, float lse, float delta, int64_t len, int64_t s) {
    for (int64_t i = 0; i < len; i++) {
        p[i] = expf(p[i] - lse);
        dp[i] = p[i] * (dp[i] - delta);
    }
    for (int64_t i = len; i < s; i++) p[i] = dp[i] = 0.0f;
}

#if QL_X86
static QL_TARGET_AVX2 float sm_row_v(float *p, int64_t len, int64_t s) {
    __m256 vm = _mm256_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 8 <= len; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(p + i));
    float t[8];
    _mm256_storeu_ps(t, vm);
    float m = -INFINITY;
    for (int k = 0; k < 8; k++) m = t[k] > m ? t[k] : m;
    for (; i < len; i++) m = p[i] > m ? p[i] : m;
    for (i = 0; i < len; i++) if (p[i] != p[i]) m = p[i];
    __m256d a0 = _mm256_setzero_pd(), a1 = a0;
    vm = _mm256_set1_ps(m);
    i = 0;
    while (i + 8 <= len) {
        int64_t end = i + 128 <= len ? i + 128 : i + ((len - i) & ~(int64_t)7);
        __m256 f = _mm256_setzero_ps();
        for (; i < end; i += 8) f = _mm256_add_ps(f, ql_v8_exp(_mm256_sub_ps(_mm256_loadu_ps(p + i), vm)));
        ql_v8_acc_pd(f, &a0, &a1);
    }
    double sum = ql_v4d_hsum(_mm256_add_pd(a0, a1));
    for (; i < len; i++) sum += (double)expf(p[i] - m);
    float lse = (float)((double)m + log(sum));
    __m256 vl = _mm256_set1_ps(lse);
    for (i = 0; i + 8 <= len; i += 8) _mm256_storeu_ps(p + i, ql_v8_exp(_mm256_sub_ps(_mm256_loadu_ps(p + i), vl)));
    for (; i < len; i++) p[i] = expf(p[i] - lse);
    for (i = len; i < s; i++) p[i] = 0.0f;
    return lse;
}

static QL_TARGET_AVX2 void bw_row_v(float *p, float *dp, float lse, float delta, int64_t len, int64_t s) {
    __m256 vl = _mm256_set1_ps(lse), vd = _mm256_set1_ps(delta);
    int64_t i = 0;
    for (; i + 8 <= len; i += 8) {
        __m256 e = ql_v8_exp(_mm256_sub_ps(_mm256_loadu_ps(p + i), vl));
        _mm256_storeu_ps(p + i, e);
        _mm256_storeu_ps(dp + i, _mm256_mul_ps(e, _mm256_sub_ps(_mm256_loadu_ps(dp + i), vd)));
    }
    for (; i < len; i++) {
        p[i] = expf(p[i] - lse);
        dp[i] = p[i] * (dp[i] - delta);
    }
    for (i = len; i < s; i++) p[i] = dp[i] = 0.0f;
}
#endif

// ---- row tasks --------------------------------------------------------------------------------
#define AT_ROWS 16 // rows per task

typedef struct {
    int vec;
    int64_t t, s;
    float *p, *dp;
    float *lse;        // forward: out
    const float *lsei; // backward: in
    const float *delta;
} at_rows;

static inline int64_t allowed(const at_rows *j, int64_t i) { return j->s - j->t + i + 1; }

static void sm_task(void *ctx, int64_t task) {
    const at_rows *j = ctx;
    int64_t i1 = (task + 1) * AT_ROWS < j->t ? (task + 1) * AT_ROWS : j->t;
    for (int64_t i = task * AT_ROWS; i < i1; i++) {
        float *p = j->p + i * j->s;
#if QL_X86
        if (j->vec) { j->lse[i] = sm_row_v(p, allowed(j, i), j->s); continue; }
#endif
        j->lse[i] = sm_row_s(p, allowed(j, i), j->s);
    }
}

static void bw_task(void *ctx, int64_t task) {
    const at_rows *j = ctx;
    int64_t i1 = (task + 1) * AT_ROWS < j->t ? (task + 1) * AT_ROWS : j->t;
    for (int64_t i = task * AT_ROWS; i < i1; i++) {
        float *p = j->p + i * j->s, *dp = j->dp + i * j->s;
#if QL_X86
        if (j->vec) { bw_row_v(p, dp, j->lsei[i], j->delta[i], allowed(j, i), j->s); continue; }
#endif
        bw_row_s(p, dp, j->lsei[i], j->delta[i], allowed(j, i), j->s);
    }
}

static int use_vec(void) { return QL_X86 && ql_isa_current() >= QL_ISA_AVX2; }

// ---- drivers ----------------------------------------------------------------------------------
static void at_fwd(int vec, const float *q, const float *k, const float *v, float *out, float *lse,
                   int64_t b, int64_t h, int64_t kv, int64_t t, int64_t s, int64_t d, float scale) {
    if (b <= 0 || h <= 0 || t <= 0 || d <= 0) return;
    float *p = malloc((size_t)(t * s) * sizeof(float));
    if (!p) abort();
    int64_t rep = h / kv, ntask = (t + AT_ROWS - 1) / AT_ROWS;
    for (int64_t bi = 0; bi < b; bi++)
        for (int64_t hi = 0; hi < h; hi++) {
            int64_t g = bi * kv + hi / rep, bh = bi * h + hi;
            const float *qh = q + bh * t * d, *kh = k + g * s * d, *vh = v + g * s * d;
            gemm(0, 1, (int)t, (int)s, (int)d, scale, qh, kh, 0.0f, p);
            at_rows j = {.vec = vec, .t = t, .s = s, .p = p, .lse = lse + bh * t};
            ql_parallel_for(ntask, sm_task, &j);
            gemm(0, 0, (int)t, (int)d, (int)s, 1.0f, p, vh, 0.0f, out + bh * t * d);
        }
    free(p);
}

static void at_bwd(int vec, const float *q, const float *k, const float *v, const float *out,
                   const float *lse, const float *dout, float *dq, float *dk, float *dv, int64_t b,
                   int64_t h, int64_t kv, int64_t t, int64_t s, int64_t d, float scale) {
    if (b <= 0 || h <= 0 || t <= 0 || d <= 0) return;
    float *p = malloc((size_t)(2 * t * s + t) * sizeof(float));
    if (!p) abort();
    float *dp = p + t * s, *delta = dp + t * s;
    int64_t rep = h / kv, ntask = (t + AT_ROWS - 1) / AT_ROWS;
    for (int64_t bi = 0; bi < b; bi++)
        for (int64_t hi = 0; hi < h; hi++) {
            int64_t g = bi * kv + hi / rep, bh = bi * h + hi;
            float beta = hi % rep == 0 ? 0.0f : 1.0f;
            const float *qh = q + bh * t * d, *kh = k + g * s * d, *vh = v + g * s * d;
            const float *oh = out + bh * t * d, *doh = dout + bh * t * d;
            for (int64_t i = 0; i < t; i++) {
                double acc = 0.0;
                for (int64_t c = 0; c < d; c++) acc += (double)oh[i * d + c] * (double)doh[i * d + c];
                delta[i] = (float)acc;
            }
            gemm(0, 1, (int)t, (int)s, (int)d, scale, qh, kh, 0.0f, p);      // scores
            gemm(0, 1, (int)t, (int)s, (int)d, 1.0f, doh, vh, 0.0f, dp);     // dP = dO V^T
            at_rows j = {.vec = vec, .t = t, .s = s, .p = p, .dp = dp, .lsei = lse + bh * t, .delta = delta};
            ql_parallel_for(ntask, bw_task, &j);                               // P, dS
            if (dq) gemm(0, 0, (int)t, (int)d, (int)s, scale, dp, kh, 0.0f, dq + bh * t * d);
            if (dk) gemm(1, 0, (int)s, (int)d, (int)t, scale, dp, qh, beta, dk + g * s * d);
            if (dv) gemm(1, 0, (int)s, (int)d, (int)t, 1.0f, p, doh, beta, dv + g * s * d);
        }
    free(p);
}

void ql_attention_f32(const float *q, const float *k, const float *v, float *out, float *lse,
                      int64_t b, int64_t h, int64_t kv, int64_t t, int64_t s, int64_t d, float scale) {
    at_fwd(use_vec(), q, k, v, out, lse, b, h, kv, t, s, d, scale);
}
void ql_attention_f32_ref(const float *q, const float *k, const float *v, float *out, float *lse,
                          int64_t b, int64_t h, int64_t kv, int64_t t, int64_t s, int64_t d, float scale) {
    at_fwd(0, q, k, v, out, lse, b, h, kv, t, s, d, scale);
}
void ql_attention_backward_f32(const float *q, const float *k, const float *v, const float *out,
                               const float *lse, const float *dout, float *dq, float *dk, float *dv,
                               int64_t b, int64_t h, int64_t kv, int64_t t, int64_t s, int64_t d,
                               float scale) {
    at_bwd(use_vec(), q, k, v, out, lse, dout, dq, dk, dv, b, h, kv, t, s, d, scale);
}
void ql_attention_backward_f32_ref(const float *q, const float *k, const float *v, const float *out,
                                   const float *lse, const float *dout, float *dq, float *dk,
                                   float *dv, int64_t b, int64_t h, int64_t kv, int64_t t, int64_t s,
                                   int64_t d, float scale) {
    at_bwd(0, q, k, v, out, lse, dout, dq, dk, dv, b, h, kv, t, s, d, scale);
}
