// RMSNorm forward and backward (qlora_nn.h): scalar reference and AVX2+FMA rows, threaded over
// fixed groups of rows; dw is summed over rows in row order by fixed column blocks, so every
// result is independent of the thread count.
#include "kernels_internal.h"
#include "qlora_nn.h"

#include <math.h>
#if QL_X86
#include <immintrin.h>
#endif

#define RN_COLS 64 // dw columns per task

// ---- scalar rows ------------------------------------------------------------------------------
static void fwd_row_s(const float *x, const float *w, float eps, float *y, float *rstd, int64_t n) {
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++) ss += (double)x[i] * (double)x[i];
    float r = 1.0f / sqrtf((float)(ss / (double)n) + eps);
    *rstd = r;
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * r * w[i];
}

static void bwd_row_s(const float *x, const float *w, float r, const float *dy, float *dx, int64_t n) {
    double c = 0.0;
    for (int64_t i = 0; i < n; i++) c += (double)w[i] * (double)dy[i] * (double)x[i];
    float k = (float)(c / (double)n) * r * r;
    for (int64_t i = 0; i < n; i++) dx[i] = r * (w[i] * dy[i] - x[i] * k);
}

static void dw_cols_s(const float *x, const float *rstd, const float *dy, float *dw, int64_t rows,
                      int64_t n, int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; j++) dw[j] = 0.0f;
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n, *gr = dy + r * n;
        float s = rstd[r];
        for (int64_t j = j0; j < j1; j++) dw[j] += gr[j] * xr[j] * s;
    }
}

// ---- AVX2 rows --------------------------------------------------------------------------------
#if QL_X86
static QL_TARGET_AVX2 double hsum8(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    __m256d d = _mm256_add_pd(_mm256_cvtps_pd(lo), _mm256_cvtps_pd(hi));
    __m128d e = _mm_add_pd(_mm256_castpd256_pd128(d), _mm256_extractf128_pd(d, 1));
    return _mm_cvtsd_f64(e) + _mm_cvtsd_f64(_mm_unpackhi_pd(e, e));
}

static QL_TARGET_AVX2 void fwd_row_v(const float *x, const float *w, float eps, float *y, float *rstd,
                                     int64_t n) {
    __m256d a0 = _mm256_setzero_pd(), a1 = a0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v)), hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        a0 = _mm256_fmadd_pd(lo, lo, a0);
        a1 = _mm256_fmadd_pd(hi, hi, a1);
    }
    __m256d a = _mm256_add_pd(a0, a1);
    __m128d e = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    double ss = _mm_cvtsd_f64(e) + _mm_cvtsd_f64(_mm_unpackhi_pd(e, e));
    for (; i < n; i++) ss += (double)x[i] * (double)x[i];
    float r = 1.0f / sqrtf((float)(ss / (double)n) + eps);
    *rstd = r;
    __m256 vr = _mm256_set1_ps(r);
    for (i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vr), _mm256_loadu_ps(w + i)));
    for (; i < n; i++) y[i] = x[i] * r * w[i];
}

static QL_TARGET_AVX2 void bwd_row_v(const float *x, const float *w, float r, const float *dy, float *dx,
                                     int64_t n) {
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    double c = 0.0;
    for (; i + 8 <= n; i += 8) {
        if ((i & 255) == 0 && i) { c += hsum8(acc); acc = _mm256_setzero_ps(); }
        acc = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(dy + i)), _mm256_loadu_ps(x + i), acc);
    }
    c += hsum8(acc);
    for (; i < n; i++) c += (double)w[i] * (double)dy[i] * (double)x[i];
    float k = (float)(c / (double)n) * r * r;
    __m256 vr = _mm256_set1_ps(r), vk = _mm256_set1_ps(k);
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 t = _mm256_fnmadd_ps(_mm256_loadu_ps(x + i), vk, _mm256_mul_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(dy + i)));
        _mm256_storeu_ps(dx + i, _mm256_mul_ps(vr, t));
    }
    for (; i < n; i++) dx[i] = r * (w[i] * dy[i] - x[i] * k);
}

static QL_TARGET_AVX2 void dw_cols_v(const float *x, const float *rstd, const float *dy, float *dw,
                                     int64_t rows, int64_t n, int64_t j0, int64_t j1) {
    int64_t j = j0;
    for (; j + 8 <= j1; j += 8) {
        __m256 acc = _mm256_setzero_ps();
        for (int64_t r = 0; r < rows; r++)
            acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(dy + r * n + j),
                                                                 _mm256_loadu_ps(x + r * n + j)),
                                                   _mm256_set1_ps(rstd[r])));
        _mm256_storeu_ps(dw + j, acc);
    }
    if (j < j1) dw_cols_s(x, rstd, dy, dw, rows, n, j, j1);
}
#endif

// ---- drivers ----------------------------------------------------------------------------------
// The family's traits table: index = ql_impl_level() (the AVX-512 levels use the AVX2 rows).
typedef struct {
    void (*fwd_row)(const float *x, const float *w, float eps, float *y, float *rstd, int64_t n);
    void (*bwd_row)(const float *x, const float *w, float r, const float *dy, float *dx, int64_t n);
    void (*dw_cols)(const float *x, const float *rstd, const float *dy, float *dw, int64_t rows,
                    int64_t n, int64_t j0, int64_t j1);
} rn_kernels;

static const rn_kernels rn_levels[QL_NLEVELS] = {
    {fwd_row_s, bwd_row_s, dw_cols_s},
#if QL_X86
    {fwd_row_v, bwd_row_v, dw_cols_v},
    {fwd_row_v, bwd_row_v, dw_cols_v},
#else
    {fwd_row_s, bwd_row_s, dw_cols_s},
    {fwd_row_s, bwd_row_s, dw_cols_s},
#endif
};

typedef struct {
    const rn_kernels *k;
    const float *x, *w, *rstd_in, *dy;
    float eps;
    float *y, *rstd, *dx, *dw;
    int64_t rows, n, per;
} rn_job;

static int64_t rows_per_task(int64_t n) {
    int64_t r = 16384 / (n > 0 ? n : 1);
    return r < 1 ? 1 : r;
}

static void fwd_task(void *ctx, int64_t t) {
    const rn_job *j = ctx;
    int64_t r0 = t * j->per, r1 = r0 + j->per < j->rows ? r0 + j->per : j->rows;
    for (int64_t r = r0; r < r1; r++) {
        j->k->fwd_row(j->x + r * j->n, j->w, j->eps, j->y + r * j->n, j->rstd + r, j->n);
    }
}

static void bwd_task(void *ctx, int64_t t) {
    const rn_job *j = ctx;
    int64_t r0 = t * j->per, r1 = r0 + j->per < j->rows ? r0 + j->per : j->rows;
    for (int64_t r = r0; r < r1; r++) {
        j->k->bwd_row(j->x + r * j->n, j->w, j->rstd_in[r], j->dy + r * j->n, j->dx + r * j->n, j->n);
    }
}

static void dw_task(void *ctx, int64_t t) {
    const rn_job *j = ctx;
    int64_t c0 = t * RN_COLS, c1 = c0 + RN_COLS < j->n ? c0 + RN_COLS : j->n;
    j->k->dw_cols(j->x, j->rstd_in, j->dy, j->dw, j->rows, j->n, c0, c1);
}

static void rn_fwd(const rn_kernels *k, const float *x, const float *w, float eps, float *y, float *rstd, int64_t rows, int64_t n) {
    if (rows <= 0 || n <= 0) return;
    rn_job j = {.k = k, .x = x, .w = w, .eps = eps, .y = y, .rstd = rstd, .rows = rows, .n = n,
                .per = rows_per_task(n)};
    ql_parallel_for((rows + j.per - 1) / j.per, fwd_task, &j);
}

static void rn_bwd(const rn_kernels *k, const float *x, const float *w, const float *rstd, const float *dy, float *dx,
                   float *dw, int64_t rows, int64_t n) {
    if (n <= 0) return;
    rn_job j = {.k = k, .x = x, .w = w, .rstd_in = rstd, .dy = dy, .dx = dx, .dw = dw, .rows = rows,
                .n = n, .per = rows_per_task(n)};
    if (dx && rows > 0) ql_parallel_for((rows + j.per - 1) / j.per, bwd_task, &j);
    if (dw) ql_parallel_for((n + RN_COLS - 1) / RN_COLS, dw_task, &j);
}

void ql_rmsnorm_f32(const float *x, const float *w, float eps, float *y, float *rstd, int64_t rows, int64_t n) {
    rn_fwd(&rn_levels[ql_impl_level()], x, w, eps, y, rstd, rows, n);
}
void ql_rmsnorm_f32_ref(const float *x, const float *w, float eps, float *y, float *rstd, int64_t rows, int64_t n) {
    rn_fwd(&rn_levels[0], x, w, eps, y, rstd, rows, n);
}
void ql_rmsnorm_backward_f32(const float *x, const float *w, const float *rstd, const float *dy, float *dx,
                             float *dw, int64_t rows, int64_t n) {
    rn_bwd(&rn_levels[ql_impl_level()], x, w, rstd, dy, dx, dw, rows, n);
}
void ql_rmsnorm_backward_f32_ref(const float *x, const float *w, const float *rstd, const float *dy,
                                 float *dx, float *dw, int64_t rows, int64_t n) {
    rn_bwd(&rn_levels[0], x, w, rstd, dy, dx, dw, rows, n);
}
