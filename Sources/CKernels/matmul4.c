// Public fused 4-bit matrix products (ql_matmul4_*): level dispatch at call time, the fixed task
// partition, the tile loop of the panel path, and per-thread scratch buffers.
//
// Forward y[M,N] = x[M,K] W^T (+ bias), backward dx[M,K] = dy[M,N] W, with W a ql_qweight
// [N, K]. Strategy (matmul4_internal.h): the small-M path when M <= MM4_SMALL_M and the layout
// allows it, otherwise the panel path; the scalar level runs the reference. The LoRA variants
// (ql_matmul4_lora_*) add h = x D^T as extra column tiles of the same pass (forward) and dh D as
// extra reduction chunks after W's (backward); after a small-M product they run as a panel pass
// of their own. The dense bf16 products (ql_matmul_dense_bf16*) are that extension alone, with
// no 4-bit weight: a pass whose only tiles / chunks are the dense ones.
//
// Threading: tasks own disjoint blocks of the output (forward: column tiles of y, i.e. rows of
// W, times groups of rows of x; backward: column tiles of dx). The partition depends only on the
// shapes and the level, and each output element is summed in an order fixed by the level's
// kernels (reduction chunks in order, the microkernel's sequence inside a chunk), never by the
// task it lands in, so results are bitwise the same for any thread count.
//
// Memory: the weight is never dequantized as a whole. Scratch buffers are per thread,
// 64-byte aligned, grow-only and live until the thread exits (freed by a pthread key
// destructor): the calling thread keeps the packed A of one pass of the panel path (at most
// APACK_MAX_BYTES = 16 MB; larger M runs in several passes) or the prepared x of the small-M
// forward (M*K floats); every thread that runs a panel task keeps one column tile of B panels
// plus a dequantization tile (about 600 KB at AVX-512). If a buffer cannot be allocated the
// affected outputs are computed by the scalar reference instead (same semantics, different
// rounding), so a call never fails. Calls from several threads at once are safe (each caller
// has its own buffers; ql_parallel_for runs a concurrent caller's tasks on its own thread).
#include "matmul4_internal.h"

#include <pthread.h>
#include <stdlib.h>

// ---------------------------------------------------------------------------------------------
// Per-thread scratch: slot 0 for the call level (the calling thread), slot 1 for tasks.
// ---------------------------------------------------------------------------------------------
enum { SCRATCH_CALL = 0, SCRATCH_TASK = 1, SCRATCH_SLOTS = 2 };

typedef struct {
    void *p[SCRATCH_SLOTS];
    size_t size[SCRATCH_SLOTS];
} scratch_set;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_key_ok = 0;

static void scratch_destroy(void *v) {
    scratch_set *s = v;
    for (int i = 0; i < SCRATCH_SLOTS; i++) free(s->p[i]);
    free(s);
}

static void scratch_init(void) {
    scratch_key_ok = pthread_key_create(&scratch_key, scratch_destroy) == 0;
}

// A 64-byte aligned buffer of at least `bytes` for this thread's slot, or NULL.
static void *scratch_get(int slot, size_t bytes) {
#ifdef MM4_TEST_NO_SCRATCH // harness builds: exercise the out-of-memory fallback
    (void)slot, (void)bytes;
    return NULL;
#endif
    pthread_once(&scratch_once, scratch_init);
    if (!scratch_key_ok) return NULL;
    scratch_set *s = pthread_getspecific(scratch_key);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s) return NULL;
        if (pthread_setspecific(scratch_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    if (s->size[slot] < bytes) {
        free(s->p[slot]);
        size_t rounded = (bytes + 4095) & ~(size_t)4095;
        s->p[slot] = aligned_alloc(64, rounded);
        s->size[slot] = s->p[slot] ? rounded : 0;
    }
    return s->p[slot];
}

// ---------------------------------------------------------------------------------------------
// The partition (the #ifndef sizes can be overridden with -D for tuning and tests)
// ---------------------------------------------------------------------------------------------
#define SCALAR_ROWS 16      // scalar forward: rows of W per task
#define SCALAR_COLS 256     // scalar backward: columns of dx per task
#define SMALL_ROWS 32       // small-M forward: rows of W per task
#define SMALL_COLS 256      // small-M backward: columns of dx per task (a multiple of 32)
_Static_assert(SMALL_COLS % 32 == 0, "small-M backward: bwd_cols takes column ranges of 32");
// PANEL_TILE_MAX (panel path: output columns per task, at most) is in matmul4_internal.h, where
// the ISA files check their scratch against it.
#define PANEL_MIN_TASKS 8   // split further (columns, then rows of x) below this many
#ifndef PANEL_MIN_ROWS
#define PANEL_MIN_ROWS 256  // rows of x per task, at least, when rows are split
#endif

#ifndef APACK_MAX_BYTES
#define APACK_MAX_BYTES ((size_t)16 << 20) // packed A of one pass (at least one block)
#endif

typedef struct {
    mm4_job j;
    const mm4_gemm_kernels *g;
    const mm4_small_kernels *s;
    int64_t tile;     // output columns per task (panel path), rows / columns (others)
    int64_t ntiles;   // column tiles (forward: of W; the extension's follow)
    int64_t dtiles;   // forward: column tiles of the extension (h), PANEL_TILE_MAX wide
    // panel path, the current pass over rows [pm0, pm1) of A
    int64_t pm0, pm1;
    int64_t mrows;    // rows of A per task (a multiple of mr)
    int64_t arows;    // rows of A per packing task (a multiple of mr)
    void *apack;      // packed A of the pass
    int64_t astride;  // 4-byte elements per packed block of mr rows (0: A not packed)
    void *dpack;      // backward extension: packed dh of the pass
    int64_t dstride;  // its 4-byte elements per block of mr rows
    void *dpanels;    // forward extension beside W: D's panels for every reduction chunk,
    int64_t dchunk;   // packed once per call, chunk i at dpanels + i * dchunk 4-byte elements
} mm4_plan;

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

static void scalar_task(void *ctx, int64_t t) {
    const mm4_plan *p = ctx;
    const mm4_job *j = &p->j;
    if (t >= p->ntiles) { // forward extension: columns of h
        int64_t i0 = (t - p->ntiles) * p->tile;
        mm4_ref_dense_fwd(j, 0, j->M, i0, min64(i0 + p->tile, j->dr));
        return;
    }
    int64_t c0 = t * p->tile, c1 = min64(c0 + p->tile, j->C);
    if (j->bwd) mm4_ref_bwd_cols(j, 0, j->M, c0, c1);
    else mm4_ref_fwd_rows(j, 0, j->M, c0, c1);
}

static void small_task(void *ctx, int64_t t) {
    const mm4_plan *p = ctx;
    const mm4_job *j = &p->j;
    int64_t c0 = t * p->tile, c1 = min64(c0 + p->tile, j->C);
    if (j->bwd) p->s->bwd_cols(j, c0, c1);
    else p->s->fwd_rows(j, c0, c1);
}

// 4-byte elements per B panel: the reduction chunk (pairs: half) rounded to 16, times nr.
static int64_t panel_stride(const mm4_gemm_kernels *g) {
    int64_t steps = g->pair ? g->rc / 2 : g->rc;
    return ((steps + 15) & ~(int64_t)15) * g->nr;
}

// Packs the A blocks of rows [pm0 + t*arows, ...) of the pass (backward extension: and dh's).
static void pack_a_task(void *ctx, int64_t t) {
    const mm4_plan *p = ctx;
    const mm4_job *j = &p->j;
    int64_t m0 = p->pm0 + t * p->arows, rows = min64(p->arows, p->pm1 - m0);
    int64_t q = t * p->arows / p->g->mr;
    if (p->astride) p->g->pack_a(j, m0, rows, (uint32_t *)p->apack + q * p->astride);
    if (p->dpack) { // dh [M, dr] packed like dy, over a reduction of dr
        mm4_job jd = *j;
        jd.a = j->dh, jd.lda = j->dr, jd.R = j->dr;
        p->g->pack_a(&jd, m0, rows, (uint32_t *)p->dpack + q * p->dstride);
    }
}

// Runs the microkernel over rows [m0, m1) and the panels of one reduction chunk. apack / astride:
// the packed input (of the pass), aoff its offset at the chunk start; c / ldc: the output at
// row 0, column col0 of the tile; bias at the tile's first column or NULL.
static void tile_chunk(const mm4_plan *p, const void *apack, int64_t astride, int64_t aoff,
                       int64_t m0, int64_t m1, const uint32_t *panels, int64_t pstride,
                       int64_t npan, int64_t rc, float *c, int64_t ldc, int64_t ncols, int first,
                       const float *bias) {
    const mm4_gemm_kernels *g = p->g;
    for (int64_t m = m0; m < m1; m += g->mr) {
        const int mr = (int)min64(m1 - m, g->mr);
        const uint32_t *a = (const uint32_t *)apack + ((m - p->pm0) / g->mr) * astride + aoff;
        for (int64_t q = 0; q < npan; q++) {
            const int64_t col = q * g->nr;
            g->ukernel(mr, a, panels + q * pstride, rc, c + m * ldc + col, ldc,
                       (int)min64(ncols - col, g->nr), first, bias ? bias + col : NULL);
        }
    }
}

// Forward extension tile: h columns [i0, i1) for rows [m0, m1), from the packed x.
static void dense_fwd_tile(const mm4_plan *p, int64_t m0, int64_t m1, int64_t i0, int64_t i1) {
    const mm4_job *j = &p->j;
    const mm4_gemm_kernels *g = p->g;
    const int64_t npan = ceil_div(i1 - i0, g->nr), pstride = panel_stride(g);
    uint8_t *buf = scratch_get(SCRATCH_TASK, (size_t)(npan * pstride) * 4);
    if (!buf) {
        mm4_ref_dense_fwd(j, m0, m1, i0, i1);
        return;
    }
    for (int64_t r0 = 0; r0 < j->R; r0 += g->rc) {
        const int64_t rc = min64(j->R - r0, g->rc);
        mm4_dense_pack_b(j, g, i0, i1, r0, rc, buf, pstride);
        tile_chunk(p, p->apack, p->astride, (g->pair ? r0 / 2 : r0) * g->mr, m0, m1,
                   (const uint32_t *)buf, pstride, npan, rc, j->h + i0, j->dr, i1 - i0, r0 == 0,
                   NULL);
    }
}

static void panel_task(void *ctx, int64_t t) {
    const mm4_plan *p = ctx;
    const mm4_job *j = &p->j;
    const mm4_gemm_kernels *g = p->g;
    const int64_t tiles = p->ntiles + p->dtiles;
    const int64_t mt = t / tiles, ct = t % tiles;
    const int64_t m0 = p->pm0 + mt * p->mrows, m1 = min64(m0 + p->mrows, p->pm1);
    if (ct >= p->ntiles) {
        const int64_t i0 = (ct - p->ntiles) * PANEL_TILE_MAX;
        dense_fwd_tile(p, m0, m1, i0, min64(i0 + PANEL_TILE_MAX, j->dr));
        return;
    }
    const int64_t c0 = ct * p->tile, c1 = min64(c0 + p->tile, j->C);
    const int64_t npan = ceil_div(c1 - c0, g->nr), pstride = panel_stride(g);
    const size_t panels_bytes = (size_t)(npan * pstride) * 4;
    // forward extension beside W: every column task of the row group takes an equal share of
    // its rows of h (all dr columns), so the fixed task ranges stay balanced
    int64_t hm0 = m1, hm1 = m1, dpan = 0;
    if (p->dpanels) {
        const int64_t share = ceil_div(ceil_div(m1 - m0, p->ntiles), g->mr) * g->mr;
        hm0 = min64(m0 + ct * share, m1), hm1 = min64(hm0 + share, m1);
        if (hm0 < hm1) dpan = ceil_div(j->dr, g->nr);
    }
    uint8_t *buf = scratch_get(SCRATCH_TASK, panels_bytes + MM4_TMP_BYTES);
    if (!buf) { // no memory: the reference computes this block
        if (j->bwd) mm4_ref_bwd_cols(j, m0, m1, c0, c1);
        else mm4_ref_fwd_rows(j, m0, m1, c0, c1);
        if (dpan) mm4_ref_dense_fwd(j, hm0, hm1, 0, j->dr);
        return;
    }
    const uint32_t *panels = (const uint32_t *)buf;
    void *tmp = buf + panels_bytes;
    for (int64_t r0 = 0; r0 < j->R && !j->dense_only; r0 += g->rc) {
        const int64_t rc = min64(j->R - r0, g->rc);
        const int first = r0 == 0, last = r0 + rc >= j->R;
        const int64_t aoff = (g->pair ? r0 / 2 : r0) * g->mr;
        g->pack_b(j, c0, c1, r0, rc, buf, pstride, tmp);
        tile_chunk(p, p->apack, p->astride, aoff, m0, m1, panels, pstride, npan, rc,
                   j->c + c0, j->ldc, c1 - c0, first, last && j->bias ? j->bias + c0 : NULL);
        if (dpan) { // h rows [hm0, hm1) over the same chunk of the packed x
            const uint32_t *dp = (const uint32_t *)p->dpanels + (r0 / g->rc) * p->dchunk;
            tile_chunk(p, p->apack, p->astride, aoff, hm0, hm1, dp, pstride, dpan, rc, j->h,
                       j->dr, j->dr, first, NULL);
        }
    }
    // backward extension: the dense rows of D continue the reduction, read against packed dh
    for (int64_t r0 = 0; j->bwd && j->d && r0 < j->dr; r0 += g->rc) {
        const int64_t rc = min64(j->dr - r0, g->rc);
        mm4_dense_pack_b(j, g, c0, c1, r0, rc, buf, pstride);
        tile_chunk(p, p->dpack, p->dstride, (g->pair ? r0 / 2 : r0) * g->mr, m0, m1, panels,
                   pstride, npan, rc, j->c + c0, j->ldc, c1 - c0, 0, NULL);
    }
}

// The panel path: passes over the rows of A (each packs its A blocks, then runs the tiles).
// Returns 0 if the packed A could not be allocated.
static int run_panels(mm4_plan *p) {
    const mm4_job *j = &p->j;
    const mm4_gemm_kernels *g = p->g;
    const int64_t M = j->M, mr = g->mr;
    const int dense_bwd = j->bwd && j->d;
    // the input is packed unless only the backward extension runs (it reads dh alone)
    p->astride = j->bwd && j->dense_only ? 0 : mr * mm4_a_rstride(j->R, g->pair);
    p->dstride = dense_bwd ? mr * mm4_a_rstride(j->dr, g->pair) : 0;
    const int64_t block_bytes = (p->astride + p->dstride) * 4;
    int64_t pass_rows = (int64_t)(APACK_MAX_BYTES / (size_t)block_bytes) * mr;
    if (pass_rows < mr) pass_rows = mr;
    if (pass_rows > ceil_div(M, mr) * mr) pass_rows = ceil_div(M, mr) * mr;
    const size_t apack_bytes = (size_t)(pass_rows / mr * block_bytes);
    // forward extension beside W: D's panels of every chunk, after the packed A
    const int dense_fwd = !j->bwd && j->d && !j->dense_only;
    const int64_t nchunks = ceil_div(j->R, g->rc), pstride = panel_stride(g);
    p->dchunk = dense_fwd ? ceil_div(j->dr, g->nr) * pstride : 0;
    p->apack = scratch_get(SCRATCH_CALL, apack_bytes + (size_t)(nchunks * p->dchunk) * 4);
    if (!p->apack) return 0;
    p->dpack = dense_bwd ? (uint32_t *)p->apack + pass_rows / mr * p->astride : NULL;
    p->dpanels = dense_fwd ? (uint8_t *)p->apack + apack_bytes : NULL;
    for (int64_t ci = 0; ci < nchunks && dense_fwd; ci++) {
        const int64_t r0 = ci * g->rc;
        mm4_dense_pack_b(j, g, 0, j->dr, r0, min64(j->R - r0, g->rc),
                         (uint32_t *)p->dpanels + ci * p->dchunk, pstride);
    }

    int64_t tile = PANEL_TILE_MAX;
    while (tile > g->nr && ceil_div(j->C, tile) < PANEL_MIN_TASKS) tile /= 2;
    p->tile = tile;
    p->ntiles = j->bwd || !j->dense_only ? ceil_div(j->C, tile) : 0;
    // forward extension with no W tiles (dense_only): column tiles of h of its own
    p->dtiles = !j->bwd && j->d && !p->ntiles ? ceil_div(j->dr, PANEL_TILE_MAX) : 0;
    const int64_t tiles = p->ntiles + p->dtiles;
    for (p->pm0 = 0; p->pm0 < M; p->pm0 += pass_rows) {
        p->pm1 = min64(p->pm0 + pass_rows, M);
        const int64_t rows = p->pm1 - p->pm0;
        int64_t mgroups = 1;
        if (tiles < PANEL_MIN_TASKS) {
            mgroups = ceil_div(PANEL_MIN_TASKS, tiles);
            int64_t most = rows / PANEL_MIN_ROWS > 1 ? rows / PANEL_MIN_ROWS : 1;
            if (mgroups > most) mgroups = most;
        }
        p->mrows = ceil_div(ceil_div(rows, mgroups), mr) * mr;
        p->arows = ceil_div(ceil_div(rows, 2 * PANEL_MIN_TASKS), mr) * mr;
        ql_parallel_for(ceil_div(rows, p->arows), pack_a_task, p);
        ql_parallel_for(ceil_div(rows, p->mrows) * tiles, panel_task, p);
    }
    return 1;
}

// ---------------------------------------------------------------------------------------------
// Entry
// ---------------------------------------------------------------------------------------------
static void run(const ql_qweight *w, const float *a, int64_t M, const float *bias, float *c,
                int bwd, int bf16, const float *d, int64_t dr, float *h, const float *dh) {
    if (M <= 0) return;
    const int64_t N = w->rows, K = w->cols;
    if (!d || dr <= 0) d = NULL, dr = 0;
    mm4_plan p = {0};
    p.j = (mm4_job){
        .w = w, .code = ql_quant_code(w->type), .M = M, .N = N, .K = K, .bwd = bwd,
        .bf16 = bf16, .a = a, .lda = bwd ? N : K, .c = c, .ldc = bwd ? K : N,
        .bias = bwd ? NULL : bias, .R = bwd ? N : K, .C = bwd ? K : N,
        .d = d, .dr = dr, .h = bwd ? NULL : h, .dh = bwd ? dh : NULL,
    };
    const int empty = N <= 0 || K <= 0; // empty sums: the reference writes them
    (void)empty;
#if QL_X86
    const int level = ql_isa_current();
    if (empty) {
    } else if (level >= QL_ISA_AVX512) {
        const int native_bf16 = bf16 && level >= QL_ISA_AVX512BF16;
        p.g = native_bf16 ? &mm4_gemm_avx512bf16 : &mm4_gemm_avx512;
        p.s = native_bf16 ? &mm4_small_avx512bf16 : &mm4_small_avx512;
    } else if (level == QL_ISA_AVX2) {
        p.g = &mm4_gemm_avx2;
        p.s = &mm4_small_avx2;
    }
#endif
    const int64_t C = p.j.C;

    if (p.s && M <= MM4_SMALL_M && mm4_small_layout_ok(w)) {
        int ok = 1;
        if (!bwd) {
            float *xprep = scratch_get(SCRATCH_CALL, (size_t)(M * K) * sizeof(float));
            if (xprep) {
                p.s->prep_x(&p.j, xprep);
                p.j.xprep = xprep;
            } else {
                ok = 0;
            }
        }
        if (ok) {
            p.tile = bwd ? SMALL_COLS : SMALL_ROWS;
            ql_parallel_for(ceil_div(C, p.tile), small_task, &p);
            if (!d) return;
            // the extension as a panel pass of its own (h; backward: dx += dh D)
            p.j.dense_only = 1;
            p.j.xprep = NULL;
            if (run_panels(&p)) return;
            if (bwd) { // no memory: the reference adds the extension
                p.tile = SCALAR_COLS;
                p.ntiles = ceil_div(C, p.tile);
                ql_parallel_for(ceil_div(C, p.tile), scalar_task, &p);
            } else {
                mm4_ref_dense_fwd(&p.j, 0, M, 0, dr);
            }
            return;
        }
        p.g = NULL; // no memory: the reference
    }
    if (p.g && run_panels(&p)) return;
    p.tile = bwd ? SCALAR_COLS : SCALAR_ROWS;
    p.ntiles = ceil_div(C, p.tile);
    ql_parallel_for(p.ntiles + (bwd ? 0 : ceil_div(dr, p.tile)), scalar_task, &p);
}

void ql_matmul4_f32(const ql_qweight *w, const float *x, int64_t M, const float *bias, float *y) {
    run(w, x, M, bias, y, 0, 0, NULL, 0, NULL, NULL);
}

void ql_matmul4_backward_f32(const ql_qweight *w, const float *dy, int64_t M, float *dx) {
    run(w, dy, M, NULL, dx, 1, 0, NULL, 0, NULL, NULL);
}

void ql_matmul4_bf16(const ql_qweight *w, const float *x, int64_t M, const float *bias, float *y) {
    run(w, x, M, bias, y, 0, 1, NULL, 0, NULL, NULL);
}

void ql_matmul4_backward_bf16(const ql_qweight *w, const float *dy, int64_t M, float *dx) {
    run(w, dy, M, NULL, dx, 1, 1, NULL, 0, NULL, NULL);
}

void ql_matmul4_lora_f32(const ql_qweight *w, const float *x, int64_t M, const float *bias,
                         float *y, const float *a, int64_t r, float *h) {
    run(w, x, M, bias, y, 0, 0, a, r, h, NULL);
}

void ql_matmul4_lora_bf16(const ql_qweight *w, const float *x, int64_t M, const float *bias,
                          float *y, const float *a, int64_t r, float *h) {
    run(w, x, M, bias, y, 0, 1, a, r, h, NULL);
}

void ql_matmul4_lora_backward_f32(const ql_qweight *w, const float *dy, const float *dh,
                                  const float *a, int64_t r, int64_t M, float *dx) {
    run(w, dy, M, NULL, dx, 1, 0, a, r, NULL, dh);
}

void ql_matmul4_lora_backward_bf16(const ql_qweight *w, const float *dy, const float *dh,
                                   const float *a, int64_t r, int64_t M, float *dx) {
    run(w, dy, M, NULL, dx, 1, 1, a, r, NULL, dh);
}

// ---------------------------------------------------------------------------------------------
// Dense bf16 products: the extension with no 4-bit weight
// ---------------------------------------------------------------------------------------------
static void run_dense(const float *a, int64_t M, const float *d, int64_t N, int64_t K, float *c,
                      int bwd) {
    if (M <= 0) return;
    // the backward's chunks add to dx (first == 0 everywhere): start from zero
    if (bwd && K > 0) memset(c, 0, (size_t)(M * K) * sizeof(float));
    if (N <= 0 || K <= 0) {
        if (!bwd && N > 0) memset(c, 0, (size_t)(M * N) * sizeof(float));
        return;
    }
    mm4_plan p = {0};
    p.j = (mm4_job){
        .M = M, .N = 0, .K = K, .bwd = bwd, .bf16 = 1, .a = bwd ? NULL : a, .lda = K,
        .c = bwd ? c : NULL, .ldc = K, .R = bwd ? 0 : K, .C = bwd ? K : 0,
        .d = d, .dr = N, .h = bwd ? NULL : c, .dh = bwd ? a : NULL, .dense_only = 1,
    };
#if QL_X86
    const int level = ql_isa_current();
    if (level >= QL_ISA_AVX512BF16) p.g = &mm4_gemm_avx512bf16;
    else if (level >= QL_ISA_AVX512) p.g = &mm4_gemm_avx512;
    else if (level == QL_ISA_AVX2) p.g = &mm4_gemm_avx2;
#endif
    if (p.g && run_panels(&p)) return;
    p.tile = bwd ? SCALAR_COLS : SCALAR_ROWS;
    p.ntiles = bwd ? ceil_div(K, p.tile) : 0;
    ql_parallel_for(p.ntiles + (bwd ? 0 : ceil_div(N, p.tile)), scalar_task, &p);
}

void ql_matmul_dense_bf16(const float *x, int64_t M, const float *w, int64_t N, int64_t K,
                          float *y) {
    run_dense(x, M, w, N, K, y, 0);
}

void ql_matmul_dense_backward_bf16(const float *dy, int64_t M, const float *w, int64_t N,
                                   int64_t K, float *dx) {
    run_dense(dy, M, w, N, K, dx, 1);
}
