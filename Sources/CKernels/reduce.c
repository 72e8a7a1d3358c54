// Public reductions: ql_reduce_f32 over [outer, n, inner], argmax/argmin (scalar, every level),
// and the double-accumulated ql_sum_all_f32 / ql_sumsq_all_f32. Long contiguous ranges are cut
// into ql_red_chunk(n) pieces whose partials combine in index order, so results never depend on
// the thread count; rows or column blocks are the parallel tasks otherwise.
#include "kernels_internal.h"

#include <math.h>

enum { M_SUM, M_SUMSQ, M_MAX, M_MIN };

typedef struct {
    const ql_red_table *t;
    int mode;
    const float *x;
    int64_t n, chunk;
    double *dpart;
    float *fpart;
} chunk_job;

static void chunk_task(void *ctx, int64_t k) {
    const chunk_job *j = ctx;
    int64_t lo = k * j->chunk, hi = lo + j->chunk;
    if (hi > j->n) hi = j->n;
    switch (j->mode) {
    case M_SUM: j->dpart[k] = j->t->sum(j->x + lo, hi - lo); break;
    case M_SUMSQ: j->dpart[k] = j->t->sumsq(j->x + lo, hi - lo); break;
    case M_MAX: j->fpart[k] = j->t->max(j->x + lo, hi - lo); break;
    default: j->fpart[k] = j->t->min(j->x + lo, hi - lo); break;
    }
}

// Reduction of n contiguous floats in the fixed chunk order. Sums come back as double; max/min
// as float in *f.
static double chunked(const ql_red_table *t, int mode, const float *x, int64_t n, float *f) {
    double dpart[QL_RED_MAX_CHUNKS];
    float fpart[QL_RED_MAX_CHUNKS];
    int64_t chunk = ql_red_chunk(n), nch = (n + chunk - 1) / chunk;
    chunk_job j = {.t = t, .mode = mode, .x = x, .n = n, .chunk = chunk, .dpart = dpart,
                   .fpart = fpart};
    if (nch <= 1) {
        dpart[0] = 0.0;
        fpart[0] = mode == M_MAX ? -INFINITY : INFINITY;
        if (n > 0) chunk_task(&j, 0);
        nch = 1;
    } else if (n >= QL_PAR_MIN) {
        ql_parallel_for(nch, chunk_task, &j);
    } else {
        for (int64_t k = 0; k < nch; k++) chunk_task(&j, k);
    }
    if (mode == M_SUM || mode == M_SUMSQ) {
        double s = 0.0;
        for (int64_t k = 0; k < nch; k++) s += dpart[k];
        return s;
    }
    float m = fpart[0];
    int nan = m != m;
    for (int64_t k = 1; k < nch; k++) {
        float v = fpart[k];
        nan |= v != v;
        m = mode == M_MAX ? (v > m ? v : m) : (v < m ? v : m);
    }
    *f = nan ? NAN : m;
    return 0.0;
}

static float row_reduce(const ql_red_table *t, int op, const float *x, int64_t n) {
    float f = 0.0f;
    switch (op) {
    case QL_RED_SUM: return (float)chunked(t, M_SUM, x, n, &f);
    case QL_RED_MAX: chunked(t, M_MAX, x, n, &f); return f;
    default: chunked(t, M_MIN, x, n, &f); return f;
    }
}

double ql_sum_all_f32(const float *x, int64_t n) {
    float f;
    return n > 0 ? chunked(ql_red(), M_SUM, x, n, &f) : 0.0;
}

double ql_sumsq_all_f32(const float *x, int64_t n) {
    float f;
    return n > 0 ? chunked(ql_red(), M_SUMSQ, x, n, &f) : 0.0;
}

// ---------------------------------------------------------------------------------------------
// ql_reduce_f32 / argmax / argmin
// ---------------------------------------------------------------------------------------------
typedef struct {
    const ql_red_table *t;
    int op;     // QL_RED_* or, for arg reductions, 1 = argmax / 0 = argmin
    int arg;
    const float *x;
    int64_t outer, n, inner;
    float *out;
    int64_t *iout;
    int64_t rpt; // inner == 1: rows per task
    int64_t nb;  // inner > 1: column blocks per outer index
} red_job;

// Arg reduction over columns j < m of x[k*stride + j]. NaN counts as the maximum: argmax returns
// the first NaN; argmin skips NaNs (an all-NaN column gives 0).
static void arg_cols(int is_max, const float *x, int64_t n, int64_t stride, int64_t m,
                     int64_t *out) {
    float bv[QL_COLS_BLOCK];
    int64_t bi[QL_COLS_BLOCK];
    for (int64_t j = 0; j < m; j++) {
        bv[j] = x[j];
        bi[j] = 0;
    }
    for (int64_t k = 1; k < n; k++) {
        const float *row = x + k * stride;
        for (int64_t j = 0; j < m; j++) {
            float v = row[j], b = bv[j];
            int take;
            if (is_max) take = (v > b || (v != v && b == b));
            else take = (v < b || (b != b && v == v));
            if (take) {
                bv[j] = v;
                bi[j] = k;
            }
        }
    }
    for (int64_t j = 0; j < m; j++) out[j] = bi[j];
}

static void red_task(void *ctx, int64_t task) {
    const red_job *j = ctx;
    if (j->inner == 1) {
        int64_t r0 = task * j->rpt, r1 = r0 + j->rpt;
        if (r1 > j->outer) r1 = j->outer;
        for (int64_t r = r0; r < r1; r++) {
            if (j->arg) arg_cols(j->op, j->x + r * j->n, j->n, 1, 1, j->iout + r);
            else j->out[r] = row_reduce(j->t, j->op, j->x + r * j->n, j->n);
        }
        return;
    }
    int64_t o = task / j->nb, b = task % j->nb;
    int64_t j0 = b * QL_COLS_BLOCK, m = j->inner - j0;
    if (m > QL_COLS_BLOCK) m = QL_COLS_BLOCK;
    const float *x = j->x + o * j->n * j->inner + j0;
    if (j->arg) arg_cols(j->op, x, j->n, j->inner, m, j->iout + o * j->inner + j0);
    else j->t->cols(j->op, x, j->n, j->inner, m, j->out + o * j->inner + j0);
}

static void red_run(red_job *j) {
    int64_t total = j->outer * j->n * j->inner;
    int64_t ntasks;
    if (j->inner == 1) {
        // Long rows and few of them: each row splits into chunks in parallel itself. Otherwise
        // rows are the tasks. Both give the same bits (row_reduce's chunking depends on n).
        if (!j->arg && j->n >= QL_PAR_MIN && j->outer < 8) {
            for (int64_t r = 0; r < j->outer; r++)
                j->out[r] = row_reduce(j->t, j->op, j->x + r * j->n, j->n);
            return;
        }
        j->rpt = j->n >= QL_EW_CHUNK ? 1 : QL_EW_CHUNK / j->n;
        ntasks = (j->outer + j->rpt - 1) / j->rpt;
    } else {
        j->nb = (j->inner + QL_COLS_BLOCK - 1) / QL_COLS_BLOCK;
        ntasks = j->outer * j->nb;
    }
    if (total < QL_PAR_MIN) {
        for (int64_t k = 0; k < ntasks; k++) red_task(j, k);
        return;
    }
    ql_parallel_for(ntasks, red_task, j);
}

void ql_reduce_f32(int op, const float *x, int64_t outer, int64_t n, int64_t inner, float *out) {
    if (outer <= 0 || inner <= 0) return;
    if (n <= 0) {
        float id = op == QL_RED_SUM ? 0.0f : (op == QL_RED_MAX ? -INFINITY : INFINITY);
        for (int64_t i = 0; i < outer * inner; i++) out[i] = id;
        return;
    }
    red_job j = {.t = ql_red(), .op = op, .x = x, .outer = outer, .n = n, .inner = inner,
                 .out = out};
    red_run(&j);
}

static void arg_reduce(int is_max, const float *x, int64_t outer, int64_t n, int64_t inner,
                       int64_t *out) {
    if (outer <= 0 || inner <= 0) return;
    if (n <= 0) {
        for (int64_t i = 0; i < outer * inner; i++) out[i] = 0;
        return;
    }
    red_job j = {.t = ql_red(), .op = is_max, .arg = 1, .x = x, .outer = outer, .n = n,
                 .inner = inner, .iout = out};
    red_run(&j);
}

void ql_argmax_f32(const float *x, int64_t outer, int64_t n, int64_t inner, int64_t *out) {
    arg_reduce(1, x, outer, n, inner, out);
}

void ql_argmin_f32(const float *x, int64_t outer, int64_t n, int64_t inner, int64_t *out) {
    arg_reduce(0, x, outer, n, inner, out);
}
