// Public softmax / log_softmax (forward and backward) over the last dim of [rows, n]. Each row
// runs three passes over fixed chunks (ql_red_chunk(n)): max, exp+sum (partials combined in
// index order in double), then scale / subtract / gradient. Rows are grouped into parallel
// tasks; a few long rows run each pass as a parallel loop over their chunks instead. Either way
// a row's result depends only on the row, never on the thread count.
#include "kernels_internal.h"

#include <math.h>

enum { SM_FWD, LSM_FWD, SM_BWD, LSM_BWD };

typedef struct {
    const ql_sm_table *s;
    const ql_red_table *r;
    int kind;
    int64_t n, chunk, nch;
    // current row: fwd: in0 = x, out = y; bwd: in0 = y, in1 = dy, out = dx
    const float *in0, *in1;
    float *out;
    int phase;
    float m, p;
    double dpart[QL_RED_MAX_CHUNKS];
    float fpart[QL_RED_MAX_CHUNKS];
} row_job;

static void phase_task(void *ctx, int64_t k) {
    row_job *j = ctx;
    int64_t lo = k * j->chunk, len = j->n - lo;
    if (len > j->chunk) len = j->chunk;
    const float *a = j->in0 + lo;
    const float *b = j->in1 ? j->in1 + lo : NULL;
    float *o = j->out + lo;
    if (j->phase == 0) {
        j->fpart[k] = j->r->max(a, len);
    } else if (j->phase == 1) {
        switch (j->kind) {
        case SM_FWD: j->dpart[k] = j->s->exp_sum(a, j->m, o, len); break;
        case LSM_FWD: j->dpart[k] = j->s->exp_sum(a, j->m, NULL, len); break;
        case SM_BWD: j->dpart[k] = j->r->dot(b, a, len); break;
        default: j->dpart[k] = j->r->sum(b, len); break;
        }
    } else {
        switch (j->kind) {
        case SM_FWD: j->s->scale(o, j->p, len); break;
        case LSM_FWD: j->s->sub2(a, j->m, j->p, o, len); break;
        case SM_BWD: j->s->sm_bwd(a, b, j->p, o, len); break;
        default: j->s->lsm_bwd(a, b, j->p, o, len); break;
        }
    }
}

static void run_phase(row_job *j, int phase, int par) {
    j->phase = phase;
    if (par && j->nch > 1) ql_parallel_for(j->nch, phase_task, j);
    else
        for (int64_t k = 0; k < j->nch; k++) phase_task(j, k);
}

static void do_row(row_job *j, int par) {
    if (j->kind == SM_FWD || j->kind == LSM_FWD) {
        run_phase(j, 0, par);
        float m = j->fpart[0];
        int nan = m != m;
        for (int64_t k = 1; k < j->nch; k++) {
            float v = j->fpart[k];
            nan |= v != v;
            m = v > m ? v : m;
        }
        j->m = nan ? NAN : m;
    }
    run_phase(j, 1, par);
    double s = 0.0;
    for (int64_t k = 0; k < j->nch; k++) s += j->dpart[k];
    switch (j->kind) {
    case SM_FWD: j->p = (float)(1.0 / s); break;
    case LSM_FWD: j->p = (float)log(s); break;
    default: j->p = (float)s; break;
    }
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
    j->in1 = g->in1 ? g->in1 + row * g->n : NULL;
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

static void run(int kind, const float *in0, const float *in1, float *out, int64_t rows,
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

void ql_softmax_f32(const float *x, float *y, int64_t rows, int64_t n) {
    run(SM_FWD, x, NULL, y, rows, n);
}

void ql_softmax_backward_f32(const float *y, const float *dy, float *dx, int64_t rows,
                             int64_t n) {
    run(SM_BWD, y, dy, dx, rows, n);
}

void ql_log_softmax_f32(const float *x, float *y, int64_t rows, int64_t n) {
    run(LSM_FWD, x, NULL, y, rows, n);
}

void ql_log_softmax_backward_f32(const float *y, const float *dy, float *dx, int64_t rows,
                                 int64_t n) {
    run(LSM_BWD, y, dy, dx, rows, n);
}
