// qlora optimizer kernels (optim.c + ISA variants): one fused update per parameter tensor, the
// same arithmetic as PyTorch's single-tensor (non-foreach) CPU code path.
//
// - All arrays hold n contiguous f32 elements; p, m, v, buf are updated in place.
// - Hyperparameters are combined in double (as PyTorch does in Python) and each derived
//   coefficient is rounded to f32 once. The *_hp entry points take the hyperparameters as
//   doubles (what the Swift layer uses, so 0.9 is not first rounded to 0.9f); the f32 versions
//   widen their arguments and call them.
// - Large n is split into fixed chunks for the thread pool (results never depend on threads).
//   The level (scalar / AVX2 / AVX-512) is chosen at call time from ql_isa_current(); SIMD
//   levels agree with the scalar reference to a few ulp (the same operation order, with
//   PyTorch's fused multiply-adds where PyTorch's vector kernels use them).
#ifndef QLORA_OPTIM_H
#define QLORA_OPTIM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// torch.optim.AdamW, one step (step >= 1 is the step being taken, counted from 1):
//   p *= 1 - lr*wd                       (skipped when weight_decay == 0)
//   m  = lerp(m, g, 1 - beta1)
//   v  = v*beta2 + (1 - beta2)*g*g
//   p += (-lr / (1 - beta1^step)) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
void ql_adamw_step_f32(float *p, const float *g, float *m, float *v, int64_t n, float lr,
                       float beta1, float beta2, float eps, float weight_decay, int64_t step);
void ql_adamw_step_f32_hp(float *p, const float *g, float *m, float *v, int64_t n, double lr,
                          double beta1, double beta2, double eps, double weight_decay,
                          int64_t step);

// torch.optim.SGD, one step:
//   d = g + wd*p                          (when weight_decay != 0)
//   if momentum != 0: buf = first_step ? d : momentum*buf + (1 - dampening)*d
//                     d = nesterov ? d + momentum*buf : buf
//   p -= lr * d
// buf may be NULL when momentum == 0.
void ql_sgd_step_f32(float *p, const float *g, float *buf, int64_t n, float lr, float momentum,
                     float dampening, float weight_decay, int nesterov, int first_step);
void ql_sgd_step_f32_hp(float *p, const float *g, float *buf, int64_t n, double lr,
                        double momentum, double dampening, double weight_decay, int nesterov,
                        int first_step);

#ifdef __cplusplus
}
#endif

#endif
