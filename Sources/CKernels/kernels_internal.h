// Internal glue of the kernel library: ISA-level dispatch tables, fixed work partitions and the
// helpers the public drivers (elementwise.c, reduce.c, softmax.c) share. Not part of the module.
#ifndef QLORA_KERNELS_INTERNAL_H
#define QLORA_KERNELS_INTERNAL_H

#include "qlora_kernels.h"

#include <stddef.h>
#include <stdint.h>

#if defined(__x86_64__) || defined(__i386__)
#define QL_X86 1
#else
#define QL_X86 0
#endif

// Target attributes for the SIMD translation units (no per-file compiler flags exist).
#define QL_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define QL_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))

// ---------------------------------------------------------------------------------------------
// Fixed partitions. They depend only on sizes, never on the thread count.
// ---------------------------------------------------------------------------------------------
#define QL_PAR_MIN (1 << 16)  // elementwise work below this many elements runs serially
#define QL_EW_CHUNK (1 << 15) // elements per elementwise task
#define QL_RED_MAX_CHUNKS 1024 // a long reduction is split into at most this many chunks
#define QL_COLS_BLOCK 256     // columns per block when reducing along a strided dim

// Chunk length for reductions over n contiguous elements: at least QL_EW_CHUNK, a multiple of
// 64, and such that there are at most QL_RED_MAX_CHUNKS chunks. Depends only on n.
static inline int64_t ql_red_chunk(int64_t n) {
    int64_t c = (n + QL_RED_MAX_CHUNKS - 1) / QL_RED_MAX_CHUNKS;
    c = (c + 63) & ~(int64_t)63;
    return c < QL_EW_CHUNK ? QL_EW_CHUNK : c;
}

// ---------------------------------------------------------------------------------------------
// Dispatch tables. Index: 0 scalar, 1 avx2, 2 avx512 (avx512bf16 uses the avx512 table).
// Every function handles any n >= 0 on one thread; drivers do the threading.
// ---------------------------------------------------------------------------------------------
#define QL_NLEVELS 3

typedef struct {
    // out[i] = a[i*sa] op b[i*sb], sa, sb in {0, 1}; out may alias a or b exactly.
    void (*binary)(int op, const float *a, int64_t sa, const float *b, int64_t sb, float *out,
                   int64_t n);
    void (*unary)(int op, const float *x, float *y, int64_t n);
    void (*unary_bwd)(int op, const float *x, const float *y, const float *dy, float *dx,
                      int64_t n);
    void (*clamp)(const float *x, float lo, float hi, float *y, int64_t n);
    void (*clamp_bwd)(const float *x, float lo, float hi, const float *dy, float *dx, int64_t n);
    void (*affine)(const float *x, float a, float b, float *y, int64_t n);
    void (*axpy)(float alpha, const float *x, float *y, int64_t n);
    void (*where)(const float *c, const float *a, const float *b, float *out, int64_t n);
} ql_ew_table;

typedef struct {
    float (*max)(const float *x, int64_t n);  // NaN if any NaN; -inf when n == 0
    float (*min)(const float *x, int64_t n);  // NaN if any NaN; +inf when n == 0
    double (*sum)(const float *x, int64_t n); // accumulated in double, fixed lane order
    double (*sumsq)(const float *x, int64_t n);
    double (*dot)(const float *a, const float *b, int64_t n);
    // out[j] = reduce_k x[k*stride + j] for j < m (m <= QL_COLS_BLOCK), k in sequential order
    // (sums accumulate per column in double, so every level gives the same bits).
    void (*cols)(int op, const float *x, int64_t n, int64_t stride, int64_t m, float *out);
} ql_red_table;

// One step of the softmax forward sweep (softmax.c): phase A of a chunk, with the next chunk's
// max in the same loop.
typedef struct {
    const float *x; // the chunk: the step returns sum exp(x[i] - m), i < n, in double with a
    int64_t n;      // fixed order that depends only on n; callers pass x - m <= 0 (or NaN)
    float m;
    int ylog;       // y[i] = exp(x[i] - m) (ylog = 0) or x[i] - m (ylog = 1), unless y is NULL
    float *y;
    const float *nx; // next chunk: *nmax = max of nx[0..nn): NaN if any is NaN, -inf when
    int64_t nn;      // nn == 0, either sign for a zero max
} ql_sm_step;

typedef struct {
    double (*step)(const ql_sm_step *s, float *nmax);
    // Phase B: y = y * a + b rounded once (callers pass b = -0 or a = 1, where the product or
    // the sum is exact, so the scalar reference needs no fma)
    void (*affine)(float *y, float a, float b, int64_t n);
    void (*sm_bwd)(const float *y, const float *dy, float d, float *dx, int64_t n);  // y*(dy-d)
    void (*lsm_bwd)(const float *y, const float *dy, float s, float *dx, int64_t n); // dy-exp(y)*s
} ql_sm_table;

// Optimizer updates over one range (optim.c drivers; scalar reference there, optim_avx2.c,
// optim_avx512.c). Every level gives the same bits. Arguments: the derived coefficients of
// optim.c's optim_job.
typedef void (*ql_adamw_range_fn)(float *p, const float *g, float *m, float *v, int64_t n,
                                  float decay, int wd_on, float w1, int w1_small, float b2,
                                  float w2, float neg_step, float bc2s, float eps);
typedef void (*ql_sgd_range_fn)(float *p, const float *g, float *buf, int64_t n, float neg_lr,
                                float mom, float keep, float wd, int wd_on, int mom_on,
                                int nesterov, int first);
typedef struct {
    ql_adamw_range_fn adamw;
    ql_sgd_range_fn sgd;
} ql_opt_table;

// 4-bit block quantization (quant_format.c drivers and scalar reference, quant_format_avx2.c,
// quant_format_avx512.c): nblocks FULL blocks of `block` elements (a multiple of 32), `mid` the
// 15 sorted midpoints, `code_of_rank` the code index of each rank. Every level gives the same bits.
typedef struct {
    void (*quantize_blocks)(const float *x, int64_t nblocks, int64_t block, const float *mid,
                            const uint8_t *code_of_rank, uint8_t *packed, float *absmax);
    void (*dequantize_blocks)(const uint8_t *packed, const float *absmax, int64_t nblocks,
                              int64_t block, const float *code, float *out);
} ql_q4_table;

extern const ql_ew_table ql_ew_scalar, ql_ew_avx2, ql_ew_avx512;
extern const ql_red_table ql_red_scalar, ql_red_avx2, ql_red_avx512;
extern const ql_sm_table ql_sm_scalar, ql_sm_avx2, ql_sm_avx512;
extern const ql_opt_table ql_opt_scalar, ql_opt_avx2, ql_opt_avx512;
extern const ql_q4_table ql_q4_scalar, ql_q4_avx2, ql_q4_avx512;

// The implemented level in use now: min(ql_isa_current(), best implemented) in [0, 2].
int ql_impl_level(void);

const ql_ew_table *ql_ew(void);
const ql_red_table *ql_red(void);
const ql_sm_table *ql_sm(void);
const ql_opt_table *ql_opt(void);
const ql_q4_table *ql_q4(void);

// The scalar optimizer updates (optim.c), also the tails of the AVX2 kernels.
void ql_adamw_range_scalar(float *p, const float *g, float *m, float *v, int64_t n, float decay,
                           int wd_on, float w1, int w1_small, float b2, float w2, float neg_step,
                           float bc2s, float eps);
void ql_sgd_range_scalar(float *p, const float *g, float *buf, int64_t n, float neg_lr, float mom,
                         float keep, float wd, int wd_on, int mom_on, int nesterov, int first);

// Scalar-only kernels shared by every level.
void ql_pow_scalar_ref(const float *x, float p, float *y, int64_t n);
void ql_pow_scalar_backward_ref(const float *x, float p, const float *dy, float *dx, int64_t n);

// Bit casts and f32 -> bf16 rounding (nearest even; NaN stays a quiet NaN), shared by kernels.
static inline uint32_t ql_f32_bits(float f) {
    uint32_t u;
    __builtin_memcpy(&u, &f, sizeof u);
    return u;
}
static inline float ql_bits_f32(uint32_t u) {
    float f;
    __builtin_memcpy(&f, &u, sizeof f);
    return f;
}
static inline uint16_t ql_bf16_round_bits(float f) {
    uint32_t x = ql_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x0040u);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

// OpenBLAS entry points the kernels call (gemm_split.c, nn_attention.c). The library is linked
// into the final binary; this target sees no cblas.h, so the few prototypes live here, once.
#define CBLAS_ROW_MAJOR 101
#define CBLAS_NO_TRANS 111
#define CBLAS_TRANS 112
void cblas_sgemm(int order, int ta, int tb, int m, int n, int k, float alpha, const float *a,
                 int lda, const float *b, int ldb, float beta, float *c, int ldc);
void openblas_set_num_threads(int n);
int openblas_get_num_threads(void);

// CPU feature bits beyond the levels (isa.c).
int ql_cpu_has_f16c(void);

#endif
