// Causal grouped-query attention, forward and backward side by side (qlora_nn.h). Per (batch,
// head) as one pool task (heads run in parallel), and per block of query rows: the block's score
// tile against the keys it may see by single-threaded cblas_sgemm, the masked row softmax (scalar
// or AVX2 exp chosen at call time; logsumexp saved per row), then the products with V. The
// backward recomputes the probabilities from the saved logsumexp; one task per kv head
// accumulates dk, dv over the query heads that share it in head order (beta = 1), so results
// never depend on the thread count. OpenBLAS is called from inside these tasks only, with its own
// thread count set to 1 for the duration (so it runs on the calling thread).
#include "kernels_internal.h"
#include "qlora_nn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#if QL_X86
#include <immintrin.h>
#include "vmath_avx2.h"
#endif

// C [m, n] (row stride ldc) = alpha op(A) op(B) + beta C; lda, ldb the stored row strides.
static void gemm_ld(int ta, int tb, int m, int n, int k, float alpha, const float *a, int64_t lda,
                    const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    cblas_sgemm(CBLAS_ROW_MAJOR, ta ? CBLAS_TRANS : CBLAS_NO_TRANS, tb ? CBLAS_TRANS : CBLAS_NO_TRANS, m, n, k,
                alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

// Query rows are taken AT_QBLOCK at a time: block [i0, i1) sees only keys [0, s - t + i1) under
// the causal mask, so the products skip the masked upper triangle (about 5/8 of the full
// [t, s] work at t = s = 256) instead of computing scores that softmax then zeroes.
#define AT_QBLOCK 64

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

// ---- traits -----------------------------------------------------------------------------------
// The family's traits table: index = ql_impl_level() (the AVX-512 levels use the AVX2 rows).
typedef struct {
    float (*sm_row)(float *p, int64_t len, int64_t s);
    void (*bw_row)(float *p, float *dp, float lse, float delta, int64_t len, int64_t s);
} at_kernels;

static const at_kernels at_levels[QL_NLEVELS] = {
    {sm_row_s, bw_row_s},
#if QL_X86
    {sm_row_v, bw_row_v},
    {sm_row_v, bw_row_v},
#else
    {sm_row_s, bw_row_s},
    {sm_row_s, bw_row_s},
#endif
};

// ---- row tasks --------------------------------------------------------------------------------
#define AT_ROWS 16 // rows per task

typedef struct {
    const at_kernels *kern;
    int64_t t, s;
    float *p, *dp;
    float *lse;        // forward: out
    const float *lsei; // backward: in
    const float *delta;
    int64_t r0, r1;    // the rows of this call: [r0, r1)
} at_rows;

static inline int64_t allowed(const at_rows *j, int64_t i) { return j->s - j->t + i + 1; }

static void sm_task(const at_rows *j, int64_t task) {
    int64_t i0 = j->r0 + task * AT_ROWS, i1 = i0 + AT_ROWS < j->r1 ? i0 + AT_ROWS : j->r1;
    for (int64_t i = i0; i < i1; i++) j->lse[i] = j->kern->sm_row(j->p + i * j->s, allowed(j, i), j->s);
}

static void bw_task(const at_rows *j, int64_t task) {
    int64_t i0 = j->r0 + task * AT_ROWS, i1 = i0 + AT_ROWS < j->r1 ? i0 + AT_ROWS : j->r1;
    for (int64_t i = i0; i < i1; i++)
        j->kern->bw_row(j->p + i * j->s, j->dp + i * j->s, j->lsei[i], j->delta[i], allowed(j, i), j->s);
}

// ---- drivers ----------------------------------------------------------------------------------
// OpenBLAS runs single-threaded inside the head tasks (ql_blas_single_thread): each head's
// products are small (t x s x d), so two heads at once on two threads beat one head's product
// split in two. The heads are cut into one contiguous part per thread (the ranges the pool would
// give each thread anyway), and the caller allocates every part's scratch in one block before
// the pool starts, so no pool thread allocates or can fail.

typedef struct at_job at_job;
typedef void (*at_head_fn)(const at_job *J, int64_t task, float *scratch);

struct at_job {
    const at_kernels *kern;
    const float *q, *k, *v, *out, *dout;
    float *o, *lse, *dq, *dk, *dv;
    const float *lsei;
    int64_t h, kv, t, s, d;
    float scale;
    at_head_fn head;
    int64_t ntasks, nparts;
    float *scratch;
    int64_t per_part; // floats of scratch per part
};

// Forward for one (batch, head): task = bi * h + hi. p: t*s floats.
static void fwd_head(const at_job *J, int64_t task, float *p) {
    int64_t t = J->t, s = J->s, d = J->d, rep = J->h / J->kv;
    int64_t bi = task / J->h, hi = task % J->h, g = bi * J->kv + hi / rep, bh = task;
    const float *qh = J->q + bh * t * d, *kh = J->k + g * s * d, *vh = J->v + g * s * d;
    for (int64_t i0 = 0; i0 < t; i0 += AT_QBLOCK) {
        int64_t i1 = i0 + AT_QBLOCK < t ? i0 + AT_QBLOCK : t, rows = i1 - i0, keys = s - t + i1;
        float *pb = p + i0 * s;
        gemm_ld(0, 1, (int)rows, (int)keys, (int)d, J->scale, qh + i0 * d, d, kh, d, 0.0f, pb, s);
        at_rows j = {.kern = J->kern, .t = t, .s = s, .p = p, .lse = J->lse + bh * t, .r0 = i0, .r1 = i1};
        for (int64_t r = 0; r < (rows + AT_ROWS - 1) / AT_ROWS; r++) sm_task(&j, r);
        gemm_ld(0, 0, (int)rows, (int)d, (int)keys, 1.0f, pb, s, vh, d, 0.0f, J->o + (bh * t + i0) * d, d);
    }
}

// Backward for one (batch, kv head) and every query head sharing it, in head order, so dk and
// dv have one writer and one summation order: task = bi * kv + gi. p: 2*t*s + t floats.
static void bwd_group(const at_job *J, int64_t task, float *p) {
    int64_t t = J->t, s = J->s, d = J->d, rep = J->h / J->kv;
    int64_t bi = task / J->kv, g = task;
    float *dp = p + t * s, *delta = dp + t * s;
    const float *kh = J->k + g * s * d, *vh = J->v + g * s * d;
    if (J->dk) memset(J->dk + g * s * d, 0, (size_t)(s * d) * sizeof(float));
    if (J->dv) memset(J->dv + g * s * d, 0, (size_t)(s * d) * sizeof(float));
    for (int64_t hi = (task % J->kv) * rep; hi < (task % J->kv + 1) * rep; hi++) {
        int64_t bh = bi * J->h + hi;
        const float *qh = J->q + bh * t * d, *oh = J->out + bh * t * d, *doh = J->dout + bh * t * d;
        for (int64_t i = 0; i < t; i++) {
            double acc = 0.0;
            for (int64_t c = 0; c < d; c++) acc += (double)oh[i * d + c] * (double)doh[i * d + c];
            delta[i] = (float)acc;
        }
        for (int64_t i0 = 0; i0 < t; i0 += AT_QBLOCK) {
            int64_t i1 = i0 + AT_QBLOCK < t ? i0 + AT_QBLOCK : t, rows = i1 - i0, keys = s - t + i1;
            float *pb = p + i0 * s, *dpb = dp + i0 * s;
            gemm_ld(0, 1, (int)rows, (int)keys, (int)d, J->scale, qh + i0 * d, d, kh, d, 0.0f, pb, s);   // scores
            gemm_ld(0, 1, (int)rows, (int)keys, (int)d, 1.0f, doh + i0 * d, d, vh, d, 0.0f, dpb, s);      // dP = dO V^T
            at_rows j = {.kern = J->kern, .t = t, .s = s, .p = p, .dp = dp, .lsei = J->lsei + bh * t,
                         .delta = delta, .r0 = i0, .r1 = i1};
            for (int64_t r = 0; r < (rows + AT_ROWS - 1) / AT_ROWS; r++) bw_task(&j, r);          // P, dS
            if (J->dq) gemm_ld(0, 0, (int)rows, (int)d, (int)keys, J->scale, dpb, s, kh, d, 0.0f, J->dq + (bh * t + i0) * d, d);
            if (J->dk) gemm_ld(1, 0, (int)keys, (int)d, (int)rows, J->scale, dpb, s, qh + i0 * d, d, 1.0f, J->dk + g * s * d, d);
            if (J->dv) gemm_ld(1, 0, (int)keys, (int)d, (int)rows, 1.0f, pb, s, doh + i0 * d, d, 1.0f, J->dv + g * s * d, d);
        }
    }
}

static void run_part(void *ctx, int64_t part) {
    const at_job *J = ctx;
    int64_t t0 = part * J->ntasks / J->nparts, t1 = (part + 1) * J->ntasks / J->nparts;
    float *scratch = J->scratch + part * J->per_part;
    for (int64_t task = t0; task < t1; task++) J->head(J, task, scratch);
}

// Runs J->head for tasks [0, ntasks) on the pool with OpenBLAS single-threaded inside them, each
// part with per_part floats of scratch. Returns 0, or -1 when the scratch cannot be allocated
// (nothing computed).
static int run_heads(at_job *J, int64_t ntasks, at_head_fn head, int64_t per_part) {
    int64_t nparts = ql_threads();
    if (nparts > ntasks) nparts = ntasks;
    if (nparts < 1) nparts = 1;
    if (per_part <= 0 || (uint64_t)per_part > SIZE_MAX / sizeof(float) / (uint64_t)nparts) return -1;
    float *scratch = malloc((size_t)(per_part * nparts) * sizeof(float));
    if (!scratch) return -1;
    J->head = head;
    J->ntasks = ntasks;
    J->nparts = nparts;
    J->scratch = scratch;
    J->per_part = per_part;
    ql_blas_single_thread();
    ql_parallel_for(nparts, run_part, J);
    free(scratch);
    return 0;
}

static int at_fwd(const at_kernels *kern, const float *q, const float *k, const float *v, float *out,
                  float *lse, int64_t b, int64_t h, int64_t kv, int64_t t, int64_t s, int64_t d,
                  float scale) {
    if (b <= 0 || h <= 0 || t <= 0 || d <= 0) return 0;
    at_job J = {.kern = kern, .q = q, .k = k, .v = v, .o = out, .lse = lse, .h = h, .kv = kv, .t = t,
                .s = s, .d = d, .scale = scale};
    if (s > INT64_MAX / t) return -1; // t * s floats of scratch: not addressable
    return run_heads(&J, b * h, fwd_head, t * s);
}

static int at_bwd(const at_kernels *kern, const float *q, const float *k, const float *v,
                  const float *out, const float *lse, const float *dout, float *dq, float *dk,
                  float *dv, int64_t b, int64_t h, int64_t kv, int64_t t, int64_t s, int64_t d,
                  float scale) {
    if (b <= 0 || h <= 0 || t <= 0 || d <= 0) return 0;
    at_job J = {.kern = kern, .q = q, .k = k, .v = v, .out = out, .dout = dout, .lsei = lse, .dq = dq,
                .dk = dk, .dv = dv, .h = h, .kv = kv, .t = t, .s = s, .d = d, .scale = scale};
    if (s > (INT64_MAX - t) / 2 / t) return -1; // 2*t*s + t floats of scratch: not addressable
    return run_heads(&J, b * kv, bwd_group, 2 * t * s + t);
}

int ql_attention_f32(const float *q, const float *k, const float *v, float *out, float *lse,
                      int64_t b, int64_t h, int64_t kv, int64_t t, int64_t s, int64_t d, float scale) {
    return at_fwd(&at_levels[ql_impl_level()], q, k, v, out, lse, b, h, kv, t, s, d, scale);
}
int ql_attention_f32_ref(const float *q, const float *k, const float *v, float *out, float *lse,
                          int64_t b, int64_t h, int64_t kv, int64_t t, int64_t s, int64_t d, float scale) {
    return at_fwd(&at_levels[0], q, k, v, out, lse, b, h, kv, t, s, d, scale);
}
int ql_attention_backward_f32(const float *q, const float *k, const float *v, const float *out,
                               const float *lse, const float *dout, float *dq, float *dk, float *dv,
                               int64_t b, int64_t h, int64_t kv, int64_t t, int64_t s, int64_t d,
                               float scale) {
    return at_bwd(&at_levels[ql_impl_level()], q, k, v, out, lse, dout, dq, dk, dv, b, h, kv, t, s, d, scale);
}
int ql_attention_backward_f32_ref(const float *q, const float *k, const float *v, const float *out,
                                   const float *lse, const float *dout, float *dq, float *dk,
                                   float *dv, int64_t b, int64_t h, int64_t kv, int64_t t, int64_t s,
                                   int64_t d, float scale) {
    return at_bwd(&at_levels[0], q, k, v, out, lse, dout, dq, dk, dv, b, h, kv, t, s, d, scale);
}
