// Cross-entropy of the causal LM loss (qlora_nn.h), forward and backward side by side: per row
// the logsumexp (max, then sum exp(x - max) in double) and lse - logit[target]; the backward
// recomputes softmax from the saved logsumexp, so log_softmax is never materialised. Scalar
// reference and AVX2 rows (vector exp); one task per row, so results never depend on threads.
#include "kernels_internal.h"
#include "qlora_nn.h"

#include <math.h>
#if QL_X86
#include <immintrin.h>
#include "vmath_avx2.h"
#endif

static float lse_row_s(const float *x, int64_t v) {
    float m = -INFINITY;
    for (int64_t i = 0; i < v; i++) m = x[i] > m || x[i] != x[i] ? x[i] : m;
    if (m == -INFINITY || m != m) return m;
    double s = 0.0;
    for (int64_t i = 0; i < v; i++) s += (double)expf(x[i] - m);
    return (float)((double)m + log(s));
}

static void grad_row_s(const float *x, float lse, float scale, float *dx, int64_t v) {
    for (int64_t i = 0; i < v; i++) dx[i] = expf(x[i] - lse) * scale;
}

#if QL_X86
static QL_TARGET_AVX2 float lse_row_v(const float *x, int64_t v) {
    __m256 vm = _mm256_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 8 <= v; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
    float t[8];
    _mm256_storeu_ps(t, vm);
    float m = -INFINITY;
    for (int k = 0; k < 8; k++) m = t[k] > m ? t[k] : m;
    for (int64_t k = i; k < v; k++) m = x[k] > m ? x[k] : m;
    for (int64_t k = 0; k < v; k++) if (x[k] != x[k]) return x[k];
    if (m == -INFINITY) return m;
    __m256d a0 = _mm256_setzero_pd(), a1 = a0;
    vm = _mm256_set1_ps(m);
    i = 0;
    while (i + 8 <= v) {
        int64_t end = i + 128 <= v ? i + 128 : i + ((v - i) & ~(int64_t)7);
        __m256 f = _mm256_setzero_ps();
        for (; i < end; i += 8) f = _mm256_add_ps(f, ql_v8_exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm)));
        ql_v8_acc_pd(f, &a0, &a1);
    }
    double s = ql_v4d_hsum(_mm256_add_pd(a0, a1));
    for (; i < v; i++) s += (double)expf(x[i] - m);
    return (float)((double)m + log(s));
}

static QL_TARGET_AVX2 void grad_row_v(const float *x, float lse, float scale, float *dx, int64_t v) {
    __m256 vl = _mm256_set1_ps(lse), vs = _mm256_set1_ps(scale);
    int64_t i = 0;
    for (; i + 8 <= v; i += 8)
        _mm256_storeu_ps(dx + i, _mm256_mul_ps(ql_v8_exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), vl)), vs));
    for (; i < v; i++) dx[i] = expf(x[i] - lse) * scale;
}
#endif

// The family's traits table: index = ql_impl_level() (the AVX-512 levels use the AVX2 rows).
typedef struct {
    float (*lse_row)(const float *x, int64_t v);
    void (*grad_row)(const float *x, float lse, float scale, float *dx, int64_t v);
} xe_kernels;

static const xe_kernels xe_levels[QL_NLEVELS] = {
    {lse_row_s, grad_row_s},
#if QL_X86
    {lse_row_v, grad_row_v},
    {lse_row_v, grad_row_v},
#else
    {lse_row_s, grad_row_s},
    {lse_row_s, grad_row_s},
#endif
};

typedef struct {
    const xe_kernels *k;
    const float *logits;
    int64_t per, bstride, v;
    const int64_t *target;
    float *lse, *loss;
    const float *lse_in;
    float scale;
    float *dx;
} xe_job;

static void fwd_task(void *ctx, int64_t r) {
    const xe_job *j = ctx;
    const float *x = j->logits + (r / j->per) * j->bstride + (r % j->per) * j->v;
    float l = j->k->lse_row(x, j->v);
    j->lse[r] = l;
    int64_t y = j->target[r];
    j->loss[r] = y < 0 ? 0.0f : l - x[y];
}

static void bwd_task(void *ctx, int64_t r) {
    const xe_job *j = ctx;
    int64_t off = (r / j->per) * j->bstride + (r % j->per) * j->v;
    const float *x = j->logits + off;
    float *dx = j->dx + off;
    int64_t y = j->target[r];
    if (y < 0) { for (int64_t i = 0; i < j->v; i++) dx[i] = 0.0f; return; }
    j->k->grad_row(x, j->lse_in[r], j->scale, dx, j->v);
    dx[y] -= j->scale;
}

static void xe_fwd(const xe_kernels *k, const float *logits, int64_t batch, int64_t per, int64_t bstride, int64_t v,
                   const int64_t *target, float *lse, float *loss) {
    if (batch * per <= 0 || v <= 0) return;
    xe_job j = {.k = k, .logits = logits, .per = per, .bstride = bstride, .v = v, .target = target,
                .lse = lse, .loss = loss};
    ql_parallel_for(batch * per, fwd_task, &j);
}

static void xe_bwd(const xe_kernels *k, const float *logits, int64_t batch, int64_t per, int64_t bstride, int64_t v,
                   const int64_t *target, const float *lse, float scale, float *dx) {
    if (batch * per <= 0 || v <= 0) return;
    xe_job j = {.k = k, .logits = logits, .per = per, .bstride = bstride, .v = v, .target = target,
                .lse_in = lse, .scale = scale, .dx = dx};
    ql_parallel_for(batch * per, bwd_task, &j);
}

void ql_xent_f32(const float *logits, int64_t batch, int64_t per, int64_t bstride, int64_t v,
                 const int64_t *target, float *lse, float *loss) {
    xe_fwd(&xe_levels[ql_impl_level()], logits, batch, per, bstride, v, target, lse, loss);
}
void ql_xent_f32_ref(const float *logits, int64_t batch, int64_t per, int64_t bstride, int64_t v,
                     const int64_t *target, float *lse, float *loss) {
    xe_fwd(&xe_levels[0], logits, batch, per, bstride, v, target, lse, loss);
}
void ql_xent_backward_f32(const float *logits, int64_t batch, int64_t per, int64_t bstride, int64_t v,
                          const int64_t *target, const float *lse, float scale, float *dx) {
    xe_bwd(&xe_levels[ql_impl_level()], logits, batch, per, bstride, v, target, lse, scale, dx);
}
void ql_xent_backward_f32_ref(const float *logits, int64_t batch, int64_t per, int64_t bstride, int64_t v,
                              const int64_t *target, const float *lse, float scale, float *dx) {
    xe_bwd(&xe_levels[0], logits, batch, per, bstride, v, target, lse, scale, dx);
}
