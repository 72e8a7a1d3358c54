// Public elementwise entry points: pick the ISA table, split large arrays into fixed chunks of
// QL_EW_CHUNK elements for the thread pool, and implement NumPy broadcasting for binary ops
// (dims collapsed, contiguous rows through the vector kernel, a scalar loop otherwise).
#include "kernels_internal.h"
#include "scalar_ops.h"

enum { K_BIN, K_UN, K_UNB, K_POW, K_POWB, K_CLAMP, K_CLAMPB, K_AFFINE, K_AXPY, K_WHERE };

typedef struct {
    const ql_ew_table *t;
    int kind, op;
    const float *a, *b, *c; // inputs in kernel order (may be NULL when unused)
    float *out;
    int64_t sa, sb;
    float p, q;
    int64_t n;
} ew_job;

#define OFF(ptr, lo) ((ptr) ? (ptr) + (lo) : NULL)

static void ew_range(const ew_job *j, int64_t lo, int64_t hi) {
    int64_t m = hi - lo;
    const ql_ew_table *t = j->t;
    switch (j->kind) {
    case K_BIN:
        t->binary(j->op, j->a + lo * j->sa, j->sa, j->b + lo * j->sb, j->sb, j->out + lo, m);
        break;
    case K_UN: t->unary(j->op, j->a + lo, j->out + lo, m); break;
    case K_UNB: t->unary_bwd(j->op, OFF(j->a, lo), OFF(j->b, lo), j->c + lo, j->out + lo, m); break;
    case K_POW: ql_pow_scalar_ref(j->a + lo, j->p, j->out + lo, m); break;
    case K_POWB: ql_pow_scalar_backward_ref(j->a + lo, j->p, j->b + lo, j->out + lo, m); break;
    case K_CLAMP: t->clamp(j->a + lo, j->p, j->q, j->out + lo, m); break;
    case K_CLAMPB: t->clamp_bwd(j->a + lo, j->p, j->q, j->b + lo, j->out + lo, m); break;
    case K_AFFINE: t->affine(j->a + lo, j->p, j->q, j->out + lo, m); break;
    case K_AXPY: t->axpy(j->p, j->a + lo, j->out + lo, m); break;
    case K_WHERE: t->where(j->a + lo, j->b + lo, j->c + lo, j->out + lo, m); break;
    default: break;
    }
}

static void ew_task(void *ctx, int64_t k) {
    const ew_job *j = ctx;
    int64_t lo = k * QL_EW_CHUNK, hi = lo + QL_EW_CHUNK;
    ew_range(j, lo, hi < j->n ? hi : j->n);
}

static void ew_run(ew_job *j) {
    if (j->n <= 0) return;
    j->t = ql_ew();
    if (j->n < QL_PAR_MIN) {
        ew_range(j, 0, j->n);
        return;
    }
    ql_parallel_for((j->n + QL_EW_CHUNK - 1) / QL_EW_CHUNK, ew_task, j);
}

void ql_binary_f32(int op, const float *a, int64_t sa, const float *b, int64_t sb, float *out,
                   int64_t n) {
    ew_job j = {.kind = K_BIN, .op = op, .a = a, .b = b, .out = out, .sa = sa ? 1 : 0,
                .sb = sb ? 1 : 0, .n = n};
    ew_run(&j);
}

void ql_unary_f32(int op, const float *x, float *y, int64_t n) {
    ew_job j = {.kind = K_UN, .op = op, .a = x, .out = y, .n = n};
    ew_run(&j);
}

void ql_unary_backward_f32(int op, const float *x, const float *y, const float *dy, float *dx,
                           int64_t n) {
    ew_job j = {.kind = K_UNB, .op = op, .a = x, .b = y, .c = dy, .out = dx, .n = n};
    ew_run(&j);
}

void ql_pow_scalar_f32(const float *x, float p, float *y, int64_t n) {
    ew_job j = {.kind = K_POW, .a = x, .out = y, .p = p, .n = n};
    ew_run(&j);
}

void ql_pow_scalar_backward_f32(const float *x, float p, const float *dy, float *dx, int64_t n) {
    ew_job j = {.kind = K_POWB, .a = x, .b = dy, .out = dx, .p = p, .n = n};
    ew_run(&j);
}

void ql_clamp_f32(const float *x, float lo, float hi, float *y, int64_t n) {
    ew_job j = {.kind = K_CLAMP, .a = x, .out = y, .p = lo, .q = hi, .n = n};
    ew_run(&j);
}

void ql_clamp_backward_f32(const float *x, float lo, float hi, const float *dy, float *dx,
                           int64_t n) {
    ew_job j = {.kind = K_CLAMPB, .a = x, .b = dy, .out = dx, .p = lo, .q = hi, .n = n};
    ew_run(&j);
}

void ql_affine_f32(const float *x, float a, float b, float *y, int64_t n) {
    ew_job j = {.kind = K_AFFINE, .a = x, .out = y, .p = a, .q = b, .n = n};
    ew_run(&j);
}

void ql_axpy_f32(float alpha, const float *x, float *y, int64_t n) {
    ew_job j = {.kind = K_AXPY, .a = x, .out = y, .p = alpha, .n = n};
    ew_run(&j);
}

void ql_where_f32(const float *cond, const float *a, const float *b, float *out, int64_t n) {
    ew_job j = {.kind = K_WHERE, .a = cond, .b = a, .c = b, .out = out, .n = n};
    ew_run(&j);
}

// ---------------------------------------------------------------------------------------------
// Broadcasting
// ---------------------------------------------------------------------------------------------
typedef struct {
    const ql_ew_table *t;
    int op, nd; // nd collapsed dims; the last one is the inner row
    int64_t sh[8], as[8], bs[8];
    const float *a, *b;
    float *out;
    int64_t rows, inner;
    int64_t cpr;  // tasks per row (inner split into QL_EW_CHUNK pieces) when >= 1 ...
    int64_t rpt;  // ... or rows per task when inner is short
    int contig;   // inner strides both in {0, 1}
} bc_job;

// Offsets of a and b for outer row r.
static void bc_offsets(const bc_job *j, int64_t r, int64_t *oa, int64_t *ob) {
    int64_t xa = 0, xb = 0;
    for (int d = j->nd - 2; d >= 0; d--) {
        int64_t idx = r % j->sh[d];
        r /= j->sh[d];
        xa += idx * j->as[d];
        xb += idx * j->bs[d];
    }
    *oa = xa;
    *ob = xb;
}

static void bc_row(const bc_job *j, int64_t oa, int64_t ob, float *out, int64_t lo, int64_t hi) {
    int64_t ia = j->as[j->nd - 1], ib = j->bs[j->nd - 1];
    const float *a = j->a + oa + lo * ia, *b = j->b + ob + lo * ib;
    if (j->contig) {
        j->t->binary(j->op, a, ia, b, ib, out + lo, hi - lo);
    } else {
        for (int64_t k = 0; k < hi - lo; k++) out[lo + k] = ql_s_binary(j->op, a[k * ia], b[k * ib]);
    }
}

static void bc_task(void *ctx, int64_t task) {
    const bc_job *j = ctx;
    if (j->cpr > 0) { // one piece of one long row
        int64_t r = task / j->cpr, c = task % j->cpr;
        int64_t lo = c * QL_EW_CHUNK, hi = lo + QL_EW_CHUNK;
        if (hi > j->inner) hi = j->inner;
        int64_t oa, ob;
        bc_offsets(j, r, &oa, &ob);
        bc_row(j, oa, ob, j->out + r * j->inner, lo, hi);
        return;
    }
    int64_t r0 = task * j->rpt, r1 = r0 + j->rpt;
    if (r1 > j->rows) r1 = j->rows;
    // odometer over the outer dims, starting at row r0
    int64_t idx[8] = {0}, oa = 0, ob = 0, r = r0;
    for (int d = j->nd - 2; d >= 0; d--) {
        idx[d] = r % j->sh[d];
        r /= j->sh[d];
        oa += idx[d] * j->as[d];
        ob += idx[d] * j->bs[d];
    }
    for (int64_t row = r0; row < r1; row++) {
        bc_row(j, oa, ob, j->out + row * j->inner, 0, j->inner);
        for (int d = j->nd - 2; d >= 0; d--) {
            oa += j->as[d];
            ob += j->bs[d];
            if (++idx[d] < j->sh[d]) break;
            oa -= idx[d] * j->as[d];
            ob -= idx[d] * j->bs[d];
            idx[d] = 0;
        }
    }
}

void ql_binary_bcast_f32(int op, int ndim, const int64_t *shape, const float *a,
                         const int64_t *astr, const float *b, const int64_t *bstr, float *out) {
    bc_job j = {.op = op, .a = a, .b = b, .out = out};
    int nd = 0;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] <= 0) return; // empty output
        if (shape[d] == 1) continue;
        if (nd > 0 && j.as[nd - 1] == astr[d] * shape[d] && j.bs[nd - 1] == bstr[d] * shape[d]) {
            j.sh[nd - 1] *= shape[d];
            j.as[nd - 1] = astr[d];
            j.bs[nd - 1] = bstr[d];
        } else {
            j.sh[nd] = shape[d];
            j.as[nd] = astr[d];
            j.bs[nd] = bstr[d];
            nd++;
        }
    }
    if (nd == 0) { // a single element
        j.sh[0] = 1;
        j.as[0] = j.bs[0] = 0;
        nd = 1;
    }
    j.nd = nd;
    j.inner = j.sh[nd - 1];
    j.rows = 1;
    for (int d = 0; d < nd - 1; d++) j.rows *= j.sh[d];
    int64_t ia = j.as[nd - 1], ib = j.bs[nd - 1];
    j.contig = (ia == 0 || ia == 1) && (ib == 0 || ib == 1);
    if (nd == 1 && j.contig) {
        ql_binary_f32(op, a, ia, b, ib, out, j.inner);
        return;
    }
    j.t = ql_ew();
    int64_t total = j.rows * j.inner;
    if (total < QL_PAR_MIN) {
        j.cpr = 0;
        j.rpt = j.rows;
        bc_task(&j, 0);
        return;
    }
    int64_t ntasks;
    if (j.inner >= QL_EW_CHUNK) {
        j.cpr = (j.inner + QL_EW_CHUNK - 1) / QL_EW_CHUNK;
        ntasks = j.rows * j.cpr;
    } else {
        j.cpr = 0;
        j.rpt = QL_EW_CHUNK / j.inner;
        ntasks = (j.rows + j.rpt - 1) / j.rpt;
    }
    ql_parallel_for(ntasks, bc_task, &j);
}
