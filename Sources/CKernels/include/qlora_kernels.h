// qlora C kernels: the public interface of every hot loop the Swift layers call.
//
// Conventions
// - All arrays are contiguous and row-major unless a stride argument says otherwise; element
//   counts and strides are int64_t, in elements (not bytes).
// - Every kernel has a scalar reference (*_scalar.c) that is never deleted; AVX2+FMA and
//   AVX-512 versions live beside it and are chosen through the ISA level (ql_isa_*). Forcing a
//   level (QLORA_ISA or ql_isa_set) makes every kernel use that level or the best one below it.
// - Kernels never allocate on behalf of the caller and never fail: callers validate shapes.
// - Parallel kernels split work into a fixed partition that depends only on the sizes, never on
//   timing or on the number of threads, so results are bitwise reproducible.
#ifndef QLORA_KERNELS_H
#define QLORA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------------------------------------
// ISA levels (isa.c)
// ---------------------------------------------------------------------------------------------
typedef enum {
    QL_ISA_SCALAR = 0,
    QL_ISA_AVX2 = 1,        // AVX2 + FMA
    QL_ISA_AVX512 = 2,      // AVX-512 F/BW/DQ/VL
    QL_ISA_AVX512BF16 = 3   // AVX-512 plus the BF16 dot instructions
} ql_isa;

int ql_isa_best(void);                 // the best level this CPU (and OS) supports
int ql_isa_supported(int isa);         // 1 if the CPU supports the level
int ql_isa_current(void);              // the level in use now
int ql_isa_set(int isa);               // 0 on success, -1 if unsupported (level unchanged)
                                       // (process-wide; avx512bf16 runs the avx512 kernels)
const char *ql_isa_name(int isa);      // "scalar", "avx2", "avx512", "avx512bf16"
int ql_isa_parse(const char *name);    // name -> level, -1 if unknown
// Reads QLORA_ISA (if set) and applies it. Returns 0 on success; on an unknown or unsupported
// name writes a message into err and returns -1 (the level stays at the best one).
int ql_isa_init_from_env(char *err, size_t errlen);

// ---------------------------------------------------------------------------------------------
// Thread pool (threads.c): one pool for the process, sized by QLORA_THREADS or the core count.
// ---------------------------------------------------------------------------------------------
int ql_threads(void);                  // number of threads in use (>= 1)
void ql_set_threads(int n);            // clamps to [1, 256]; takes effect for the next call
// Runs fn(ctx, i) for every task index i in [0, ntasks). Tasks are handed to threads in a fixed
// way; a task must write only its own outputs. Calls from inside a task run serially.
// Thread 0 is the caller; thread t of T gets the contiguous tasks [t*ntasks/T, (t+1)*ntasks/T).
// Safe to call from several threads at once: one caller at a time owns the pool, a concurrent
// caller runs its tasks serially on its own thread (never blocks, never deadlocks). ntasks == 1
// or one thread runs inline without synchronisation. Idle workers spin ~100 us, then sleep.
typedef void (*ql_task_fn)(void *ctx, int64_t task);
void ql_parallel_for(int64_t ntasks, ql_task_fn fn, void *ctx);

// C [m, n] (row stride ldc) = alpha op(A) op(B) + beta C, row-major f32, op transposes when ta/tb
// (lda, ldb: stored row strides), as cblas_sgemm; cut into tiles of rows or columns of C whose size
// depends only on (m, n, k) (ql_sgemm_tile), each a single-threaded OpenBLAS call, handed out to
// the pool's threads dynamically: the result does not depend on the thread count
// (gemm_split.c). k == 0 with beta == 0 is the caller's to handle (OpenBLAS leaves C as is).
// Calls from inside a pool task run their tiles serially.
void ql_sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
              const float *b, int64_t ldb, float beta, float *c, int64_t ldc);
// The tile length (rows when m >= n, else columns) ql_sgemm uses for a shape.
int64_t ql_sgemm_tile(int64_t m, int64_t n, int64_t k);
// Sets OpenBLAS to one thread of its own (when it is not): every parallel product goes through
// our pool.
void ql_blas_single_thread(void);

// ---------------------------------------------------------------------------------------------
// Elementwise (elementwise.c + ISA variants)
// ---------------------------------------------------------------------------------------------
typedef enum {
    QL_BIN_ADD = 0, QL_BIN_SUB, QL_BIN_MUL, QL_BIN_DIV, QL_BIN_MAX, QL_BIN_MIN, QL_BIN_POW,
    // comparisons write 1.0f or 0.0f
    QL_BIN_EQ, QL_BIN_NE, QL_BIN_LT, QL_BIN_LE, QL_BIN_GT, QL_BIN_GE
} ql_binop;

// out[i] = a[i*sa] op b[i*sb] for i in [0, n), where sa and sb are each 0 or 1.
void ql_binary_f32(int op, const float *a, int64_t sa, const float *b, int64_t sb, float *out,
                   int64_t n);
// NumPy broadcasting: out has `shape` (ndim <= 8, contiguous); astr/bstr are the element strides
// of a and b for each output dim (0 where broadcast). Threads over the outer dims.
void ql_binary_bcast_f32(int op, int ndim, const int64_t *shape, const float *a,
                         const int64_t *astr, const float *b, const int64_t *bstr, float *out);

typedef enum {
    QL_UN_NEG = 0, QL_UN_EXP, QL_UN_LOG, QL_UN_SQRT, QL_UN_ABS, QL_UN_SILU, QL_UN_SIGMOID,
    QL_UN_TANH, QL_UN_RELU, QL_UN_SQUARE, QL_UN_RSQRT
} ql_unop;

// y = op(x), n elements (y may alias x). relu(NaN) = NaN, silu(-inf) = NaN (-inf * 0);
// sigmoid is exp(-|x|)-based, so it never overflows and underflows gradually.
void ql_unary_f32(int op, const float *x, float *y, int64_t n);
// dx = dy * op'(x), given x, y = op(x) and dy (dx may alias dy). Forward and backward of each
// unary op sit side by side in the implementation.
void ql_unary_backward_f32(int op, const float *x, const float *y, const float *dy, float *dx,
                           int64_t n);
// y = x^p (scalar p); backward dx = dy * p * x^(p-1)
void ql_pow_scalar_f32(const float *x, float p, float *y, int64_t n);
void ql_pow_scalar_backward_f32(const float *x, float p, const float *dy, float *dx, int64_t n);
// y = min(max(x, lo), hi); backward passes dy where lo <= x <= hi, else 0
void ql_clamp_f32(const float *x, float lo, float hi, float *y, int64_t n);
void ql_clamp_backward_f32(const float *x, float lo, float hi, const float *dy, float *dx,
                           int64_t n);
// y = a*x + b (scalars), and y += alpha * x (the building blocks of optimizers and gradients)
void ql_affine_f32(const float *x, float a, float b, float *y, int64_t n);
void ql_axpy_f32(float alpha, const float *x, float *y, int64_t n);
// out[i] = cond[i] != 0 ? a[i] : b[i]
void ql_where_f32(const float *cond, const float *a, const float *b, float *out, int64_t n);

// ---------------------------------------------------------------------------------------------
// Reductions (reduce.c + ISA variants). x is viewed as [outer, n, inner]; out is [outer, inner].
// ---------------------------------------------------------------------------------------------
typedef enum { QL_RED_SUM = 0, QL_RED_MAX, QL_RED_MIN } ql_redop;
void ql_reduce_f32(int op, const float *x, int64_t outer, int64_t n, int64_t inner, float *out);
// index (0-based) of the first maximum / minimum along n; NaN counts as the maximum (argmax
// returns the first NaN, argmin skips NaNs). Max/min reductions return NaN if any element is NaN.
// n == 0 gives 0 (sum), -inf (max), +inf (min) and index 0.
void ql_argmax_f32(const float *x, int64_t outer, int64_t n, int64_t inner, int64_t *out);
void ql_argmin_f32(const float *x, int64_t outer, int64_t n, int64_t inner, int64_t *out);
// Sum of all n elements with a fixed blocked order, accumulated in double. The blocks (and so
// the result) depend on n and the ISA level only, never on the thread count.
double ql_sum_all_f32(const float *x, int64_t n);
// Sum of squares of all n elements, accumulated in double (for gradient norms).
double ql_sumsq_all_f32(const float *x, int64_t n);

// ---------------------------------------------------------------------------------------------
// Softmax over the last dim of [rows, n] (softmax.c + ISA variants), stable (max subtracted).
// Outputs may alias inputs (y == x, dx == dy).
// ---------------------------------------------------------------------------------------------
void ql_softmax_f32(const float *x, float *y, int64_t rows, int64_t n);
// dx = y * (dy - sum(dy * y))
void ql_softmax_backward_f32(const float *y, const float *dy, float *dx, int64_t rows, int64_t n);
void ql_log_softmax_f32(const float *x, float *y, int64_t rows, int64_t n);
// y = log_softmax output; dx = dy - exp(y) * sum(dy)
void ql_log_softmax_backward_f32(const float *y, const float *dy, float *dx, int64_t rows,
                                 int64_t n);

// ---------------------------------------------------------------------------------------------
// Conversions (convert.c): round to nearest even; NaN stays NaN, Inf stays Inf.
// ---------------------------------------------------------------------------------------------
void ql_f32_to_bf16(const float *x, uint16_t *y, int64_t n);
void ql_bf16_to_f32(const uint16_t *x, float *y, int64_t n);
void ql_f32_to_f16(const float *x, uint16_t *y, int64_t n);
void ql_f16_to_f32(const uint16_t *x, float *y, int64_t n);

// ---------------------------------------------------------------------------------------------
// Copies (copy.c)
// ---------------------------------------------------------------------------------------------
// dst (contiguous, `shape`) = src read through element strides src_strides; elsize in bytes
// (1, 2, 4 or 8). Used for transpose, permute, slice and broadcast materialisation.
void ql_strided_copy(size_t elsize, int ndim, const int64_t *shape, const void *src,
                     const int64_t *src_strides, void *dst);

// ---------------------------------------------------------------------------------------------
// Random numbers (rng.c): Philox4x32-10, counter based. Element i of a draw depends only on
// (seed, offset + i), never on threads or on how the draw is split.
// ---------------------------------------------------------------------------------------------
void ql_rand_uniform_f32(uint64_t seed, uint64_t offset, float *out, int64_t n);   // [0, 1)
void ql_rand_normal_f32(uint64_t seed, uint64_t offset, float *out, int64_t n);    // N(0, 1)
// Layout (fixed, part of the contract): key = (seed low 32 bits, seed high 32 bits).
// Uniform element i = word (offset+i) % 4 of philox(counter = {lo32(b), hi32(b), 0, 0}) with
// b = (offset+i) / 4, as (word >> 8) * 2^-24. Normal element i = Box-Muller (cos branch) on
// words 0 and 1 of philox(counter = {lo32(offset+i), hi32(offset+i), 1, 0}), with
// u1 = ((w0 >> 8) + 1) * 2^-24 in (0, 1] and u2 = (w1 >> 8) * 2^-24.
// The raw generator, for known-answer tests: out = Philox4x32-10(ctr, key from seed).
void ql_philox4x32_10(const uint32_t ctr[4], uint64_t seed, uint32_t out[4]);

// ---------------------------------------------------------------------------------------------
// Memory (memory.c): allocator settings applied once at start-up.
// ---------------------------------------------------------------------------------------------
void ql_memory_tune(void);

#ifdef __cplusplus
}
#endif
#endif
