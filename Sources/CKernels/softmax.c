// Public softmax / log_softmax (forward and backward) over the last dim of [rows, n].
//
// Forward: a row is cut into fixed chunks of sm_chunk(n) elements (depending only on n) and runs
// in two phases. Phase A, per chunk k: s_k = sum exp(x - m_k) with m_k the chunk's max, writing
// y = exp(x - m_k) (log_softmax: x - m_k) while the chunk is hot in cache; m_k is computed during
// the previous chunk's sweep, so the chunk is read from memory once. The partials are combined in
// chunk order: M = max m_k, S = sum s_k * exp(m_k - M) in double. Phase B, per chunk, in place:
// softmax y *= exp(m_k - M) / S; log_softmax (phase A wrote y = x - m_k) y -= (M - m_k) + log S.
// Every ISA level runs this same formula; only the per-chunk kernels differ.
//
// Backward: two passes over fixed chunks (ql_red_chunk(n)): dot / sum (partials combined in
// index order in double), then the gradient.
//
// Rows are split into contiguous groups, one parallel task (thread) per group; a few long rows
// run each phase as a parallel loop over contiguous groups of their chunks instead (phase B
// walks a group's chunks backwards, so the ones phase A touched last are still in L2). The
// grouping depends on the thread count; the chunks and the order of combination (and so the
// results) never do: a row's result depends only on the row.
#include "kernels_internal.h"

#include <math.h>

// ---------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------
#define SM_CHUNK_MIN 8192   // elements per forward chunk (32 KiB of x): hot in L1/L2 in phase A
#define SM_MAX_CHUNKS 2048  // a long row is split into at most this many chunks

// Forward chunk length for a row of n: at least SM_CHUNK_MIN, a multiple of 64, and at most
// SM_MAX_CHUNKS chunks. Depends only on n.
static int64_t sm_chunk(int64_t n) {
    int64_t c = (n + SM_MAX_CHUNKS - 1) / SM_MAX_CHUNKS;
    c = (c + 63) & ~(int64_t)63;
    return c < SM_CHUNK_MIN ? SM_CHUNK_MIN : c;
}

typedef struct {
    const ql_sm_table *s;
    int log;
    int64_t n, chunk, nch;
    const float *x; // current row
    float *y;
    float M;        // row max
    double S, lS;   // row sum of exp(x - M), log_softmax: log S
    float m[SM_MAX_CHUNKS];
    double sum[SM_MAX_CHUNKS];
} fwd_row;

static void fwd_init(fwd_row *j, int log, int64_t n) {
    j->s = ql_sm();
    j->log = log;
    j->n = n;
    j->chunk = sm_chunk(n);
    j->nch = (n + j->chunk - 1) / j->chunk;
}

static inline int64_t fwd_len(const fwd_row *j, int64_t k) {
    int64_t len = j->n - k * j->chunk;
    return len < j->chunk ? len : j->chunk;
}

// Maxima are canonical (+0 for a zero max, whichever zero the kernel kept), so they never
// depend on which step computed them.
static float fwd_max(const fwd_row *j, const float *x, int64_t n) {
    ql_sm_step st = {.nx = x, .nn = n};
    float m;
    j->s->step(&st, &m);
    return m + 0.0f;
}

// The shift of chunk k in phase A: m_k, or 0 for an all -inf chunk (its terms are then 0, not
// NaN, and its weight below is 0).
static inline float fwd_shift(const fwd_row *j, int64_t k) {
    return j->m[k] == -INFINITY ? 0.0f : j->m[k];
}

// Phase A of chunk k (m_k known): s_k = sum exp(x - m_k); y = exp(x - m_k) (softmax) or x - m_k
// (log_softmax). Returns the max of nx[0..nn), the chunk phase A visits next (fetched while
// this one computes).
static float fwd_a(fwd_row *j, int64_t k, const float *nx, int64_t nn) {
    int64_t lo = k * j->chunk;
    ql_sm_step st = {.x = j->x + lo, .n = fwd_len(j, k), .m = fwd_shift(j, k), .ylog = j->log,
                     .y = j->y + lo, .nx = nx, .nn = nn};
    float nm;
    j->sum[k] = j->s->step(&st, &nm);
    return nm + 0.0f;
}

// Weight of chunk k in the row sum: exp(m_k - M) (exactly 1 for the chunk(s) holding the max).
static inline double fwd_w(const fwd_row *j, int64_t k) {
    return j->m[k] == j->M ? 1.0 : exp((double)j->m[k] - (double)j->M);
}

// M = max m_k (NaN if any), S = sum_k s_k exp(m_k - M), in chunk order. A row of all -inf gives
// S = 0 and so NaN outputs, as exp(-inf - -inf) does.
static void fwd_combine(fwd_row *j) {
    float M = j->m[0];
    int nan = M != M;
    for (int64_t k = 1; k < j->nch; k++) {
        float v = j->m[k];
        nan |= v != v;
        M = v > M ? v : M;
    }
    j->M = nan ? NAN : M;
    double S = 0.0;
    for (int64_t k = 0; k < j->nch; k++) S += j->sum[k] * fwd_w(j, k);
    j->S = S;
    if (j->log) j->lS = log(S);
}

// Phase B of chunk k, in place, as y = y * a + b (rounded once): softmax a = exp(m_k - M) / S,
// b = -0; log_softmax a = 1, b = -c_k with c_k = (M - m_k) + log S rounded once (y = x - m_k <= 0
// and c_k >= 0: no cancellation, so y - c_k is as accurate as (x - M) - log S).
static void fwd_b(fwd_row *j, int64_t k) {
    float a = 1.0f, b = -0.0f;
    if (j->log) b = (float)-(((double)j->M - (double)fwd_shift(j, k)) + j->lS);
    else a = (float)(fwd_w(j, k) / j->S);
    j->s->affine(j->y + k * j->chunk, a, b, fwd_len(j, k));
}

// One long row in parallel: group g of ngroups owns chunks [g*nch/ngroups, (g+1)*nch/ngroups)
// (one group per thread), phase A walks them forwards, phase B backwards.
typedef struct {
    fwd_row *j;
    int64_t ngroups;
} fwd_par;

static void fwd_task_a(void *ctx, int64_t g) {
    const fwd_par *p = ctx;
    fwd_row *j = p->j;
    int64_t k0 = g * j->nch / p->ngroups, k1 = (g + 1) * j->nch / p->ngroups;
    if (k0 >= k1) return;
    j->m[k0] = fwd_max(j, j->x + k0 * j->chunk, fwd_len(j, k0));
    for (int64_t k = k0; k < k1; k++) {
        int next = k + 1 < k1;
        float nm = fwd_a(j, k, next ? j->x + (k + 1) * j->chunk : NULL,
                         next ? fwd_len(j, k + 1) : 0);
        if (next) j->m[k + 1] = nm;
    }
}

static void fwd_task_b(void *ctx, int64_t g) {
    const fwd_par *p = ctx;
    fwd_row *j = p->j;
    int64_t k0 = g * j->nch / p->ngroups, k1 = (g + 1) * j->nch / p->ngroups;
    for (int64_t k = k1 - 1; k >= k0; k--) fwd_b(j, k);
}

typedef struct {
    int log;
    const float *x;
    float *y;
    int64_t rows, n, ntasks;
} fwd_rows;

// Rows [t*rows/ntasks, (t+1)*rows/ntasks), one after the other: phase A over the row's chunks
// (each fetching the next chunk's max, the row's last one the next row's first), combine,
// phase B (for rows up to SM_CHUNK_MIN all of it in L1/L2).
static void fwd_rows_task(void *ctx, int64_t t) {
    const fwd_rows *g = ctx;
    int64_t r0 = t * g->rows / g->ntasks, r1 = (t + 1) * g->rows / g->ntasks;
    if (r0 >= r1) return;
    fwd_row j;
    fwd_init(&j, g->log, g->n);
    float m0 = fwd_max(&j, g->x + r0 * g->n, fwd_len(&j, 0));
    for (int64_t r = r0; r < r1; r++) {
        j.x = g->x + r * g->n;
        j.y = g->y + r * g->n;
        j.m[0] = m0;
        for (int64_t k = 0; k < j.nch; k++) {
            const float *nx = NULL;
            int64_t nn = 0;
            if (k + 1 < j.nch) {
                nx = j.x + (k + 1) * j.chunk;
                nn = fwd_len(&j, k + 1);
            } else if (r + 1 < r1) {
                nx = j.x + g->n;
                nn = fwd_len(&j, 0);
            }
            float nm = fwd_a(&j, k, nx, nn);
            if (k + 1 < j.nch) j.m[k + 1] = nm;
            else m0 = nm;
        }
        fwd_combine(&j);
        for (int64_t k = j.nch - 1; k >= 0; k--) fwd_b(&j, k);
    }
}

static void fwd(int log, const float *x, float *y, int64_t rows, int64_t n) {
    if (rows <= 0 || n <= 0) return;
    int64_t T = ql_threads();
    if (n >= QL_PAR_MIN && rows < 8 && T > 1) { // few long rows: parallel inside each row
        fwd_row j;
        fwd_init(&j, log, n);
        fwd_par p = {.j = &j, .ngroups = j.nch < T ? j.nch : T};
        for (int64_t r = 0; r < rows; r++) {
            j.x = x + r * n;
            j.y = y + r * n;
            ql_parallel_for(p.ngroups, fwd_task_a, &p);
            fwd_combine(&j);
            ql_parallel_for(p.ngroups, fwd_task_b, &p);
        }
        return;
    }
    fwd_rows g = {.log = log, .x = x, .y = y, .rows = rows, .n = n};
    g.ntasks = rows * n < QL_PAR_MIN ? 1 : (rows < T ? rows : T);
    ql_parallel_for(g.ntasks, fwd_rows_task, &g);
}

// ---------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------
enum { SM_BWD, LSM_BWD };

typedef struct {
    const ql_sm_table *s;
    const ql_red_table *r;
    int kind;
    int64_t n, chunk, nch;
    // current row: in0 = y, in1 = dy, out = dx
    const float *in0, *in1;
    float *out;
    int phase;
    float p;
    double dpart[QL_RED_MAX_CHUNKS];
} row_job;

static void phase_task(void *ctx, int64_t k) {
    row_job *j = ctx;
    int64_t lo = k * j->chunk, len = j->n - lo;
    if (len > j->chunk) len = j->chunk;
    const float *a = j->in0 + lo, *b = j->in1 + lo;
    float *o = j->out + lo;
    if (j->phase == 1) {
        if (j->kind == SM_BWD) j->dpart[k] = j->r->dot(b, a, len);
        else j->dpart[k] = j->r->sum(b, len);
    } else {
        if (j->kind == SM_BWD) j->s->sm_bwd(a, b, j->p, o, len);
        else j->s->lsm_bwd(a, b, j->p, o, len);
    }
}

static void run_phase(row_job *j, int phase, int par) {
    j->phase = phase;
    if (par && j->nch > 1) ql_parallel_for(j->nch, phase_task, j);
    else
        for (int64_t k = 0; k < j->nch; k++) phase_task(j, k);
}

static void do_row(row_job *j, int par) {
    run_phase(j, 1, par);
    double s = 0.0;
    for (int64_t k = 0; k < j->nch; k++) s += j->dpart[k];
    j->p = (float)s;
    run_phase(j, 2, par);
}

typedef struct {
    const ql_sm_table *s;
    const ql_red_table *r;
    int kind;
    const float *in0, *in1;
    float *out;
    int64_t rows, n, rpt;
} rows_job;

static void init_row(row_job *j, const rows_job *g, int64_t row) {
    j->s = g->s;
    j->r = g->r;
    j->kind = g->kind;
    j->n = g->n;
    j->chunk = ql_red_chunk(g->n);
    j->nch = (g->n + j->chunk - 1) / j->chunk;
    j->in0 = g->in0 + row * g->n;
    j->in1 = g->in1 + row * g->n;
    j->out = g->out + row * g->n;
}

static void rows_task(void *ctx, int64_t task) {
    const rows_job *g = ctx;
    int64_t r0 = task * g->rpt, r1 = r0 + g->rpt;
    if (r1 > g->rows) r1 = g->rows;
    row_job j;
    for (int64_t r = r0; r < r1; r++) {
        init_row(&j, g, r);
        do_row(&j, 0);
    }
}

static void bwd(int kind, const float *in0, const float *in1, float *out, int64_t rows,
                int64_t n) {
    if (rows <= 0 || n <= 0) return;
    rows_job g = {.s = ql_sm(), .r = ql_red(), .kind = kind, .in0 = in0, .in1 = in1,
                  .out = out, .rows = rows, .n = n};
    if (n >= QL_PAR_MIN && rows < 8) { // few long rows: parallel inside each row
        row_job j;
        for (int64_t r = 0; r < rows; r++) {
            init_row(&j, &g, r);
            do_row(&j, 1);
        }
        return;
    }
    g.rpt = n >= QL_EW_CHUNK ? 1 : QL_EW_CHUNK / n;
    int64_t ntasks = (rows + g.rpt - 1) / g.rpt;
    if (rows * n < QL_PAR_MIN) {
        for (int64_t t = 0; t < ntasks; t++) rows_task(&g, t);
        return;
    }
    ql_parallel_for(ntasks, rows_task, &g);
}

void ql_softmax_f32(const float *x, float *y, int64_t rows, int64_t n) { fwd(0, x, y, rows, n); }

void ql_softmax_backward_f32(const float *y, const float *dy, float *dx, int64_t rows,
                             int64_t n) {
    bwd(SM_BWD, y, dy, dx, rows, n);
}

void ql_log_softmax_f32(const float *x, float *y, int64_t rows, int64_t n) {
    fwd(1, x, y, rows, n);
}

void ql_log_softmax_backward_f32(const float *y, const float *dy, float *dx, int64_t rows,
                                 int64_t n) {
    bwd(LSM_BWD, y, dy, dx, rows, n);
}
