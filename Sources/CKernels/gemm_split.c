// f32 matrix products split over the thread pool (qlora_kernels.h): C is cut into one slab per
// thread (rows of C, or columns when C is wider than tall) and each task runs a single-threaded
// OpenBLAS sgemm on its slab. One pool drives every kernel, instead of OpenBLAS's own threads
// taking turns with ours (each side spinning while the other works), and thin products (the LoRA
// rank-16 ones) split where they are long. Every element is summed in the same order as one
// whole-matrix sgemm, so results do not depend on the thread count.
#include "kernels_internal.h"

#define CBLAS_ROW_MAJOR 101
#define CBLAS_NO_TRANS 111
#define CBLAS_TRANS 112
void cblas_sgemm(int order, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                 const float *b, int ldb, float beta, float *c, int ldc);
void openblas_set_num_threads(int n);
int openblas_get_num_threads(void);

// below this many multiply-adds one call on the caller's thread is cheaper than a hand-off
#define GS_MIN_WORK (1 << 18)
#define GS_ALIGN 16

typedef struct {
    int ta, tb, by_rows;
    int64_t m, n, k, lda, ldb, ldc, parts;
    float alpha, beta;
    const float *a, *b;
    float *c;
} gs_job;

static void gs_call(const gs_job *j, int64_t m, int64_t n, const float *a, const float *b, float *c) {
    if (m <= 0 || n <= 0) return;
    cblas_sgemm(CBLAS_ROW_MAJOR, j->ta ? CBLAS_TRANS : CBLAS_NO_TRANS, j->tb ? CBLAS_TRANS : CBLAS_NO_TRANS,
                (int)m, (int)n, (int)j->k, j->alpha, a, (int)j->lda, b, (int)j->ldb, j->beta, c, (int)j->ldc);
}

// slab [lo, hi) of `len` rows or columns for part p, cut at multiples of GS_ALIGN
static void gs_range(int64_t len, int64_t parts, int64_t p, int64_t *lo, int64_t *hi) {
    int64_t units = (len + GS_ALIGN - 1) / GS_ALIGN;
    *lo = units * p / parts * GS_ALIGN;
    *hi = units * (p + 1) / parts * GS_ALIGN;
    if (*lo > len) *lo = len;
    if (*hi > len) *hi = len;
}

static void gs_task(void *ctx, int64_t p) {
    const gs_job *j = ctx;
    int64_t lo, hi;
    if (j->by_rows) {
        gs_range(j->m, j->parts, p, &lo, &hi);
        // rows of op(A): A stored [m, k] (row lo at a + lo * lda) or [k, m] (column lo at a + lo)
        gs_call(j, hi - lo, j->n, j->a + (j->ta ? lo : lo * j->lda), j->b, j->c + lo * j->ldc);
    } else {
        gs_range(j->n, j->parts, p, &lo, &hi);
        // columns of op(B): B stored [k, n] (column lo at b + lo) or [n, k] (row lo at b + lo * ldb)
        gs_call(j, j->m, hi - lo, j->a, j->b + (j->tb ? lo * j->ldb : lo), j->c + lo);
    }
}

void ql_sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
              const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    if (m <= 0 || n <= 0) return;
    gs_job j = {.ta = ta, .tb = tb, .by_rows = m >= n, .m = m, .n = n, .k = k, .lda = lda, .ldb = ldb,
                .ldc = ldc, .alpha = alpha, .beta = beta, .a = a, .b = b, .c = c};
    int64_t T = ql_threads(), len = j.by_rows ? m : n;
    int64_t parts = (len + GS_ALIGN - 1) / GS_ALIGN < T ? (len + GS_ALIGN - 1) / GS_ALIGN : T;
    if (parts <= 1 || m * n * (k > 0 ? k : 1) < GS_MIN_WORK) {
        gs_call(&j, m, n, a, b, c);   // OpenBLAS as configured (it keeps small products on one thread)
        return;
    }
    j.parts = parts;
    int blas = openblas_get_num_threads();
    if (blas > 1) openblas_set_num_threads(1);
    ql_parallel_for(parts, gs_task, &j);
    if (blas > 1) openblas_set_num_threads(blas);
}
