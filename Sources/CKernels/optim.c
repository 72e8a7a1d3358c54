// Optimizer kernels: the drivers (derived coefficients in double, level choice, fixed chunks for
// the thread pool) and the scalar reference of each update. See qlora_optim.h.
//
// Operation order (PyTorch's single-tensor path, float32 tensors, python-float hyperparameters):
//   AdamW: param.mul_(1 - lr*wd); exp_avg.lerp_(grad, 1 - b1);
//          exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - b2);
//          denom = (exp_avg_sq.sqrt() / bc2**0.5).add_(eps); param.addcdiv_(exp_avg, denom, -lr/bc1)
//   lerp with weight w < 0.5 is fma(w, g - m, m), else fma(w - 1, g - m, g) (ATen's lerp_vec);
//   addcmul is v + (c*g)*g; addcdiv is p + (c*m)/denom; add(x, alpha) is fma(x, alpha, self).
//   SGD:   d = grad.add(param, alpha=wd); buf.mul_(mom).add_(d, alpha=1 - damp) or buf = d;
//          d = d.add(buf, alpha=mom) (nesterov) or buf; param.add_(d, alpha=-lr)
#include "kernels_internal.h"
#include "qlora_optim.h"

#include <math.h>

#pragma STDC FP_CONTRACT OFF

// ---- scalar reference ------------------------------------------------------------------------

void ql_adamw_range_scalar(float *p, const float *g, float *m, float *v, int64_t n, float decay,
                           int wd_on, float w1, int w1_small, float b2, float w2, float neg_step,
                           float bc2s, float eps) {
    const float w1m1 = w1 - 1.0f;
    for (int64_t i = 0; i < n; i++) {
        float pi = p[i], gi = g[i], mi = m[i], vi = v[i];
        if (wd_on) pi = pi * decay;
        float diff = gi - mi;
        mi = w1_small ? fmaf(w1, diff, mi) : fmaf(w1m1, diff, gi);
        float t = w2 * gi;
        t = t * gi;
        vi = vi * b2;
        vi = vi + t;
        float denom = sqrtf(vi) / bc2s;
        denom = denom + eps;
        float u = neg_step * mi;
        u = u / denom;
        p[i] = pi + u;
        m[i] = mi;
        v[i] = vi;
    }
}

void ql_sgd_range_scalar(float *p, const float *g, float *buf, int64_t n, float neg_lr, float mom,
                         float keep, float wd, int wd_on, int mom_on, int nesterov, int first) {
    for (int64_t i = 0; i < n; i++) {
        float d = g[i];
        if (wd_on) d = fmaf(p[i], wd, d);
        if (mom_on) {
            float b;
            if (first) b = d;
            else {
                b = buf[i] * mom;
                b = fmaf(d, keep, b);
            }
            buf[i] = b;
            d = nesterov ? fmaf(b, mom, d) : b;
        }
        p[i] = fmaf(d, neg_lr, p[i]);
    }
}

const ql_opt_table ql_opt_scalar = {ql_adamw_range_scalar, ql_sgd_range_scalar};

// ---- drivers ---------------------------------------------------------------------------------

typedef struct {
    const ql_opt_table *kern; // the level's kernels, read once per call
    int kind; // 0 adamw, 1 sgd
    float *p, *m, *v, *buf;
    const float *g;
    int64_t n;
    float decay, w1, b2, w2, neg_step, bc2s, eps;
    int wd_on, w1_small;
    float neg_lr, mom, keep, wd;
    int mom_on, nesterov, first;
} optim_job;

static void optim_range(const optim_job *j, int64_t lo, int64_t hi) {
    int64_t k = hi - lo;
    if (j->kind == 0) {
        j->kern->adamw(j->p + lo, j->g + lo, j->m + lo, j->v + lo, k, j->decay, j->wd_on, j->w1,
                       j->w1_small, j->b2, j->w2, j->neg_step, j->bc2s, j->eps);
    } else {
        j->kern->sgd(j->p + lo, j->g + lo, j->buf ? j->buf + lo : NULL, k, j->neg_lr, j->mom,
                     j->keep, j->wd, j->wd_on, j->mom_on, j->nesterov, j->first);
    }
}

static void optim_task(void *ctx, int64_t t) {
    const optim_job *j = ctx;
    int64_t lo = t * QL_EW_CHUNK, hi = lo + QL_EW_CHUNK;
    optim_range(j, lo, hi < j->n ? hi : j->n);
}

static void optim_run(optim_job *j) {
    if (j->n <= 0) return;
    j->kern = ql_opt();
    if (j->n < QL_PAR_MIN) {
        optim_range(j, 0, j->n);
        return;
    }
    ql_parallel_for((j->n + QL_EW_CHUNK - 1) / QL_EW_CHUNK, optim_task, j);
}

void ql_adamw_step_f32_hp(float *p, const float *g, float *m, float *v, int64_t n, double lr,
                          double beta1, double beta2, double eps, double weight_decay,
                          int64_t step) {
    double s = (double)(step < 1 ? 1 : step);
    double bc1 = 1.0 - pow(beta1, s);
    double bc2 = 1.0 - pow(beta2, s);
    double w1 = 1.0 - beta1;
    optim_job j = {.kind = 0, .p = p, .g = g, .m = m, .v = v, .n = n,
                   .decay = (float)(1.0 - lr * weight_decay), .wd_on = weight_decay != 0.0,
                   .w1 = (float)w1, .w1_small = (float)w1 < 0.5f, .b2 = (float)beta2,
                   .w2 = (float)(1.0 - beta2), .neg_step = (float)(-(lr / bc1)),
                   .bc2s = (float)pow(bc2, 0.5), .eps = (float)eps};
    optim_run(&j);
}

void ql_adamw_step_f32(float *p, const float *g, float *m, float *v, int64_t n, float lr,
                       float beta1, float beta2, float eps, float weight_decay, int64_t step) {
    ql_adamw_step_f32_hp(p, g, m, v, n, lr, beta1, beta2, eps, weight_decay, step);
}

void ql_sgd_step_f32_hp(float *p, const float *g, float *buf, int64_t n, double lr,
                        double momentum, double dampening, double weight_decay, int nesterov,
                        int first_step) {
    int mom_on = momentum != 0.0 && buf != NULL;
    optim_job j = {.kind = 1, .p = p, .g = g, .buf = buf, .n = n, .neg_lr = (float)(-lr),
                   .mom = (float)momentum, .keep = (float)(1.0 - dampening),
                   .wd = (float)weight_decay, .wd_on = weight_decay != 0.0, .mom_on = mom_on,
                   .nesterov = mom_on && nesterov, .first = first_step != 0};
    optim_run(&j);
}

void ql_sgd_step_f32(float *p, const float *g, float *buf, int64_t n, float lr, float momentum,
                     float dampening, float weight_decay, int nesterov, int first_step) {
    ql_sgd_step_f32_hp(p, g, buf, n, lr, momentum, dampening, weight_decay, nesterov, first_step);
}
