// RoPE (half split) forward and inverse (the backward) in one pass (qlora_nn.h). The loops are
// plain scalar code (memory bound; the compiler vectorises them), shared by every ISA level, so
// the reference and the dispatched kernel are the same function. Threaded over fixed row groups.
#include "kernels_internal.h"
#include "qlora_nn.h"

typedef struct {
    const float *x, *c, *s;
    float *y;
    int64_t rows, t, d, per;
    int inverse;
} rope_job;

static void rope_rows(const rope_job *j, int64_t r0, int64_t r1) {
    int64_t d = j->d, h = d / 2;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = j->x + r * d, *c = j->c + (r % j->t) * d, *s = j->s + (r % j->t) * d;
        float *y = j->y + r * d;
        if (!j->inverse) {
            for (int64_t i = 0; i < h; i++) {
                y[i] = x[i] * c[i] - x[i + h] * s[i];
                y[i + h] = x[i + h] * c[i + h] + x[i] * s[i + h];
            }
        } else {
            for (int64_t i = 0; i < h; i++) {
                y[i] = x[i] * c[i] + x[i + h] * s[i + h];
                y[i + h] = x[i + h] * c[i + h] - x[i] * s[i];
            }
        }
    }
}

static void rope_task(void *ctx, int64_t t) {
    const rope_job *j = ctx;
    int64_t r0 = t * j->per, r1 = r0 + j->per < j->rows ? r0 + j->per : j->rows;
    rope_rows(j, r0, r1);
}

void ql_rope_f32_ref(const float *x, const float *cos, const float *sin, float *y, int64_t outer,
                     int64_t t, int64_t d, int inverse) {
    if (outer <= 0 || t <= 0 || d <= 0) return;
    int64_t per = 16384 / d;
    rope_job j = {.x = x, .c = cos, .s = sin, .y = y, .rows = outer * t, .t = t, .d = d,
                  .per = per < 1 ? 1 : per, .inverse = inverse};
    int64_t nt = (j.rows + j.per - 1) / j.per;
    if (j.rows * d < QL_PAR_MIN) rope_rows(&j, 0, j.rows);
    else ql_parallel_for(nt, rope_task, &j);
}

void ql_rope_f32(const float *x, const float *cos, const float *sin, float *y, int64_t outer,
                 int64_t t, int64_t d, int inverse) {
    ql_rope_f32_ref(x, cos, sin, y, outer, t, d, inverse);
}
