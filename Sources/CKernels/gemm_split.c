// f32 matrix products split over the thread pool (qlora_kernels.h). C is cut into fixed tiles
// (rows of C, or columns when C is wider than tall) whose size depends only on the shape (m, n,
// k), never on the thread count; each tile is one single-threaded OpenBLAS sgemm with the same
// arguments whichever thread runs it, and the tiles are handed out dynamically (a thread that
// finishes early, or shares its core with a busy neighbour, simply takes more or fewer tiles).
// So the bits of C depend on the shape and the BLAS kernel only: one thread, two or nine give
// the same result on any CPU. OpenBLAS never runs threads of its own (ql_blas_single_thread):
// one pool drives every kernel instead of two taking turns spinning.
#include "kernels_internal.h"

#include <stdatomic.h>

// below this many multiply-adds the product is one call (a hand-off costs more than it saves)
#define GS_MIN_WORK (1 << 18)
// tiles are whole multiples of GS_ALIGN rows/columns, at least GS_MIN_UNITS of them, with at
// least GS_TILE_WORK multiply-adds each, and at most GS_MAX_TILES per product
#define GS_ALIGN 16
#define GS_MIN_UNITS 4
#define GS_TILE_WORK (1 << 21)
#define GS_MAX_TILES 64

// Checked before every product (a cheap read), so a thread count set behind our back, by a
// benchmark's reference or another library in the process, is undone.
void ql_blas_single_thread(void) {
    if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
}

typedef struct {
    int ta, tb, by_rows;
    int64_t m, n, k, lda, ldb, ldc, tile, ntiles;
    float alpha, beta;
    const float *a, *b;
    float *c;
    atomic_llong next;   // the next tile to hand out
} gs_job;

static void gs_call(const gs_job *j, int64_t m, int64_t n, const float *a, const float *b, float *c) {
    if (m <= 0 || n <= 0) return;
    cblas_sgemm(CBLAS_ROW_MAJOR, j->ta ? CBLAS_TRANS : CBLAS_NO_TRANS, j->tb ? CBLAS_TRANS : CBLAS_NO_TRANS,
                (int)m, (int)n, (int)j->k, j->alpha, a, (int)j->lda, b, (int)j->ldb, j->beta, c, (int)j->ldc);
}

static void gs_tile(const gs_job *j, int64_t t) {
    int64_t len = j->by_rows ? j->m : j->n;
    int64_t lo = t * j->tile, hi = lo + j->tile < len ? lo + j->tile : len;
    if (j->by_rows) // rows of op(A): A stored [m, k] (row lo at a + lo * lda) or [k, m] (column lo at a + lo)
        gs_call(j, hi - lo, j->n, j->a + (j->ta ? lo : lo * j->lda), j->b, j->c + lo * j->ldc);
    else            // columns of op(B): B stored [k, n] (column lo at b + lo) or [n, k] (row lo at b + lo * ldb)
        gs_call(j, j->m, hi - lo, j->a, j->b + (j->tb ? lo * j->ldb : lo), j->c + lo);
}

// One pool task per thread; each takes tiles until none are left.
static void gs_worker(void *ctx, int64_t part) {
    (void)part;
    gs_job *j = ctx;
    for (;;) {
        int64_t t = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (t >= j->ntiles) return;
        gs_tile(j, t);
    }
}

// Tile length (rows or columns) for a product: a function of the shape alone.
int64_t ql_sgemm_tile(int64_t m, int64_t n, int64_t k) {
    int by_rows = m >= n;
    int64_t len = by_rows ? m : n, other = by_rows ? n : m, kk = k > 0 ? k : 1;
    int64_t units = (len + GS_ALIGN - 1) / GS_ALIGN;
    int64_t per_unit = GS_ALIGN * other * kk;
    int64_t tu = (GS_TILE_WORK + per_unit - 1) / per_unit;
    if (tu < GS_MIN_UNITS) tu = GS_MIN_UNITS;
    if ((units + tu - 1) / tu > GS_MAX_TILES) tu = (units + GS_MAX_TILES - 1) / GS_MAX_TILES;
    return tu * GS_ALIGN;
}

void ql_sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
              const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    if (m <= 0 || n <= 0) return;
    ql_blas_single_thread();
    gs_job j = {.ta = ta, .tb = tb, .by_rows = m >= n, .m = m, .n = n, .k = k, .lda = lda, .ldb = ldb,
                .ldc = ldc, .alpha = alpha, .beta = beta, .a = a, .b = b, .c = c};
    int64_t len = j.by_rows ? m : n;
    j.tile = ql_sgemm_tile(m, n, k);
    j.ntiles = (len + j.tile - 1) / j.tile;
    if (j.ntiles <= 1 || m * n * (k > 0 ? k : 1) < GS_MIN_WORK) {
        gs_call(&j, m, n, a, b, c);
        return;
    }
    atomic_init(&j.next, 0);
    int64_t T = ql_threads();
    ql_parallel_for(T < j.ntiles ? T : j.ntiles, gs_worker, &j);
}
