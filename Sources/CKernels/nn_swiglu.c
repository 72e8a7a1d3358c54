// SwiGLU y = silu(g) * u, forward and backward side by side (qlora_nn.h): scalar reference and
// AVX2 loops over fixed chunks (QL_EW_CHUNK), threaded when large. sigmoid is exp(-|x|)-based,
// as the elementwise kernels compute it.
#include "kernels_internal.h"
#include "qlora_nn.h"

#include <math.h>
#if QL_X86
#include <immintrin.h>
#include "vmath_avx2.h"
#endif

static inline float sig_s(float x) {
    float e = expf(-fabsf(x)), r = 1.0f / (1.0f + e);
    return x >= 0.0f ? r : e * r;
}

static void fwd_s(const float *g, const float *u, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = g[i] * sig_s(g[i]) * u[i];
}

static void bwd_s(const float *g, const float *u, const float *dy, float *dg, float *du, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float s = sig_s(g[i]), si = g[i] * s;
        if (dg) dg[i] = dy[i] * u[i] * (s * (1.0f + g[i] * (1.0f - s)));
        if (du) du[i] = dy[i] * si;
    }
}

#if QL_X86
static QL_TARGET_AVX2 void fwd_v(const float *g, const float *u, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(g + i);
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(x, ql_v8_sigmoid(x)), _mm256_loadu_ps(u + i)));
    }
    fwd_s(g + i, u + i, y + i, n - i);
}

static QL_TARGET_AVX2 void bwd_v(const float *g, const float *u, const float *dy, float *dg, float *du, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(g + i), s = ql_v8_sigmoid(x), d = _mm256_loadu_ps(dy + i);
        if (dg) {
            __m256 ds = _mm256_mul_ps(s, _mm256_fmadd_ps(x, _mm256_sub_ps(one, s), one));
            _mm256_storeu_ps(dg + i, _mm256_mul_ps(_mm256_mul_ps(d, _mm256_loadu_ps(u + i)), ds));
        }
        if (du) _mm256_storeu_ps(du + i, _mm256_mul_ps(d, _mm256_mul_ps(x, s)));
    }
    bwd_s(g + i, u + i, dy + i, dg ? dg + i : NULL, du ? du + i : NULL, n - i);
}
#endif

// The family's traits table: index = ql_impl_level() (the AVX-512 levels use the AVX2 rows).
typedef struct {
    void (*fwd)(const float *g, const float *u, float *y, int64_t n);
    void (*bwd)(const float *g, const float *u, const float *dy, float *dg, float *du, int64_t n);
} sg_kernels;

static const sg_kernels sg_levels[QL_NLEVELS] = {
    {fwd_s, bwd_s},
#if QL_X86
    {fwd_v, bwd_v},
    {fwd_v, bwd_v},
#else
    {fwd_s, bwd_s},
    {fwd_s, bwd_s},
#endif
};

typedef struct {
    const sg_kernels *k;
    const float *g, *u, *dy;
    float *y, *dg, *du;
    int64_t n;
} sg_job;

static void fwd_task(void *ctx, int64_t t) {
    const sg_job *j = ctx;
    int64_t lo = t * QL_EW_CHUNK, len = j->n - lo < QL_EW_CHUNK ? j->n - lo : QL_EW_CHUNK;
    j->k->fwd(j->g + lo, j->u + lo, j->y + lo, len);
}

static void bwd_task(void *ctx, int64_t t) {
    const sg_job *j = ctx;
    int64_t lo = t * QL_EW_CHUNK, len = j->n - lo < QL_EW_CHUNK ? j->n - lo : QL_EW_CHUNK;
    float *dg = j->dg ? j->dg + lo : NULL, *du = j->du ? j->du + lo : NULL;
    j->k->bwd(j->g + lo, j->u + lo, j->dy + lo, dg, du, len);
}

static void run(int64_t n, ql_task_fn fn, void *ctx) {
    int64_t nt = (n + QL_EW_CHUNK - 1) / QL_EW_CHUNK;
    if (n < QL_PAR_MIN) for (int64_t t = 0; t < nt; t++) fn(ctx, t);
    else ql_parallel_for(nt, fn, ctx);
}

void ql_swiglu_f32(const float *g, const float *u, float *y, int64_t n) {
    sg_job j = {.k = &sg_levels[ql_impl_level()], .g = g, .u = u, .y = y, .n = n};
    run(n, fwd_task, &j);
}
void ql_swiglu_f32_ref(const float *g, const float *u, float *y, int64_t n) {
    sg_job j = {.k = &sg_levels[0], .g = g, .u = u, .y = y, .n = n};
    run(n, fwd_task, &j);
}
void ql_swiglu_backward_f32(const float *g, const float *u, const float *dy, float *dg, float *du, int64_t n) {
    sg_job j = {.k = &sg_levels[ql_impl_level()], .g = g, .u = u, .dy = dy, .dg = dg, .du = du, .n = n};
    run(n, bwd_task, &j);
}
void ql_swiglu_backward_f32_ref(const float *g, const float *u, const float *dy, float *dg, float *du,
                                int64_t n) {
    sg_job j = {.k = &sg_levels[0], .g = g, .u = u, .dy = dy, .dg = dg, .du = du, .n = n};
    run(n, bwd_task, &j);
}
