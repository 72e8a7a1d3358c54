// Internal glue of the fused 4-bit matrix products (matmul4*.c): the job description the driver
// hands to the kernels, the per-ISA kernel tables, the scalar weight accessors every level shares,
// and the bf16 rounding. Not part of the module.
//
// Dimensions: W is [N rows, K cols] (a ql_qweight). Forward y[M,N] = x[M,K] W^T (+ bias[N]);
// backward dx[M,K] = dy[M,N] W. Both are computed as C = A op(B) where A (x or dy, row-major f32)
// is read through broadcasts, the reduction runs over r (K forward, N backward) and the output
// columns c are N (forward) or K (backward).
//
// LoRA extension (d != NULL): dense f32 rows D [dr, K] (a LoRA A, or several stacked) ride on
// the same pass over the input. Forward: h[M, dr] = x D^T as dr extra output columns (column
// tiles of their own whose B panels are packed from D, matmul4_dense.c); backward: dx += dh D
// as dr extra reduction steps after the N of W (the input is [dy | dh], dh packed like dy).
//
// Two strategies (matmul4.c chooses from the shapes only):
// - panel path (any M, any layout): per task a block of output columns; the reduction is cut
//   into chunks; for each chunk the weight tile is dequantized into packed B panels
//   ([r][nr] floats, or [r/2][nr] bf16 pairs for the native BF16 kernel) in a per-thread buffer,
//   A rows are packed mr at a time ([r][mr]), and one register-tiled microkernel accumulates an
//   mr x nr tile of C.
// - small-M path (M <= MM4_SMALL_M, K % 32 == 0 and block % 32 == 0): the packed nibbles are
//   streamed once and dequantized in registers (a 16-entry table per block = code * absmax, one
//   permute per 16 values), forward as dot products along K (parallel over rows of W), backward
//   as scaled row sums (parallel over column ranges of W). The LoRA extension then runs as a
//   panel pass over its own tiles / chunks only (dense_only): h is computed by the panel path
//   at every M, and its backward term is added to dx after the small-M result.
//
// bf16 compute: x (or dy) and the dequantized W are rounded to bf16 (nearest even, as
// ql_f32_to_bf16) and the exact products accumulated in f32. With AVX512_BF16 the panel path
// uses vdpbf16ps; every other case runs the f32 kernels on the rounded values (same products,
// f32 FMA), so levels agree closely but not bitwise.
#ifndef QLORA_MATMUL4_INTERNAL_H
#define QLORA_MATMUL4_INTERNAL_H

#include "kernels_internal.h"
#include "qlora_quant.h"

#include <stdint.h>
#include <string.h>

// Small-M path: M up to this many rows.
#define MM4_SMALL_M 4

// ---------------------------------------------------------------------------------------------
// The job: one call of a public function.
// ---------------------------------------------------------------------------------------------
typedef struct {
    const ql_qweight *w;
    const float *code;   // the 16 code values of w->type
    int64_t M, N, K;     // W is [N, K]
    int bwd;             // 0: y = x W^T (+ bias); 1: dx = dy W
    int bf16;            // round x and W to bf16
    const float *a;      // x [M, K] or dy [M, N]
    int64_t lda;         // K or N
    float *c;            // y [M, N] or dx [M, K]
    int64_t ldc;         // N or K
    const float *bias;   // forward only, may be NULL
    int64_t R;           // reduction length: K forward, N backward
    int64_t C;           // output columns: N forward, K backward
    // small-M forward: x prepared by the level (bf16-rounded and/or permuted), [M][K]
    const float *xprep;
    // LoRA extension (d == NULL: none): D [dr, K] f32; forward h [M, dr] = x D^T; backward
    // dx += dh D with dh [M, dr]. dense_only: W's part is done elsewhere (small-M path), the
    // panel pass computes only the extension (backward: adds it to dx).
    const float *d;
    int64_t dr;
    float *h;
    const float *dh;
    int dense_only;
} mm4_job;

// ---------------------------------------------------------------------------------------------
// Per-ISA kernels
// ---------------------------------------------------------------------------------------------
// The register-tiled panel path. Element type of the panels: float (pair == 0) or uint32_t
// holding two bf16 along the reduction (pair == 1).
typedef struct {
    int mr, nr;        // microkernel tile: mr rows of A, nr output columns per panel
    int rc;            // reduction chunk (elements; a multiple of 32)
    int pair;          // 1: panels and packed A hold bf16 pairs along the reduction
    // Dequantizes the weight tile for output columns [c0, c1) and reduction range [r0, r0 + rc)
    // (rc <= the chunk) into ceil((c1-c0)/nr) panels, panel p at panels + p * panel_stride
    // 4-byte elements ([r][nr], pairs [r/2][nr]; rows up to a multiple of 16 may be written);
    // columns >= c1 are zero. tmp: MM4_TMP_BYTES bytes.
    void (*pack_b)(const mm4_job *j, int64_t c0, int64_t c1, int64_t r0, int64_t rc,
                   void *panels, int64_t panel_stride, void *tmp);
    // Packs rows [m0, m0 + rows) of A (rows a multiple of mr, or up to M) into micro-panels of
    // mr rows: block q (rows m0 + q*mr ...) at dst + q * mr * rstride(R) 4-byte elements, laid
    // out [r][mr] (pairs: [r/2][mr] dwords of two bf16); rows >= M and reduction elements >= R
    // are zero. Rounded to bf16 if j->bf16.
    void (*pack_a)(const mm4_job *j, int64_t m0, int64_t rows, void *dst);
    // C[0..mr, 0..ncols) (+)= A B over rc reduction steps (pairs: ceil(rc/2) steps); a points
    // into a packed A block at the chunk start. first: start from zero, else from C. bias (may
    // be NULL): added after the sum.
    void (*ukernel)(int mr, const void *a, const void *b, int64_t rc, float *c, int64_t ldc,
                    int ncols, int first, const float *bias);
} mm4_gemm_kernels;

// The small-M fused kernels of one level.
typedef struct {
    // xprep[M][K] from x: permuted within steps as fwd_rows expects, rounded if j->bf16.
    void (*prep_x)(const mm4_job *j, float *xprep);
    // y rows [n0, n1) of the forward product for all M rows (reads j->xprep).
    void (*fwd_rows)(const mm4_job *j, int64_t n0, int64_t n1);
    // dx columns [k0, k1) of the backward product for all M rows (k0, k1 multiples of 32).
    void (*bwd_cols)(const mm4_job *j, int64_t k0, int64_t k1);
} mm4_small_kernels;

extern const mm4_gemm_kernels mm4_gemm_avx2, mm4_gemm_avx512, mm4_gemm_avx512bf16;
extern const mm4_small_kernels mm4_small_avx2, mm4_small_avx512, mm4_small_avx512bf16;

// Scratch for pack_b's dequantization (rows of one chunk before transposing).
#define MM4_TMP_BYTES (64 * 1024)

// Panel path: output columns per task, at most (matmul4.c; overridable with -D for tuning).
#ifndef PANEL_TILE_MAX
#define PANEL_TILE_MAX 256
#endif

// Compile-time checks of one level's panel constants (each ISA file states them next to its
// #defines): the reduction chunk rc is a multiple of 32 (pack_a pads to 32, the small-M layout
// works in steps of 32); forward pack_b dequantizes `rows` rows of one chunk (elements of `elem`
// bytes, rows a divisor of nr) into the MM4_TMP_BYTES scratch; backward pack_b holds two rows
// of a column tile (at most PANEL_TILE_MAX columns rounded up to nr) in 4-byte elements.
#define MM4_CHECK_PANEL(nr, rc, rows, elem)                                                   \
    _Static_assert((rc) % 32 == 0, "panel path: the reduction chunk must be a multiple of 32"); \
    _Static_assert((nr) % (rows) == 0, "panel path: nr must be a multiple of pack_b's rows");   \
    _Static_assert((size_t)(rows) * (size_t)(rc) * (elem) <= MM4_TMP_BYTES,                    \
                   "panel path: forward pack_b's rows do not fit MM4_TMP_BYTES");              \
    _Static_assert(2 * ((size_t)PANEL_TILE_MAX + (nr)) * 4 <= MM4_TMP_BYTES,                   \
                   "panel path: backward pack_b's column tile does not fit MM4_TMP_BYTES")

// Packed A: 4-byte elements per row of a micro-panel (the reduction padded to 32 elements).
static inline int64_t mm4_a_rstride(int64_t R, int pair) {
    int64_t rp = (R + 31) & ~(int64_t)31;
    return pair ? rp / 2 : rp;
}

// Scalar reference (matmul4_scalar.c): rows [m0, m1) x columns [n0, n1) of y, or rows
// [m0, m1) x columns [k0, k1) of dx.
void mm4_ref_fwd_rows(const mm4_job *j, int64_t m0, int64_t m1, int64_t n0, int64_t n1);
void mm4_ref_bwd_cols(const mm4_job *j, int64_t m0, int64_t m1, int64_t k0, int64_t k1);
// h rows [m0, m1) x columns [i0, i1) (forward extension): sums over k in natural order.
void mm4_ref_dense_fwd(const mm4_job *j, int64_t m0, int64_t m1, int64_t i0, int64_t i1);
// The panels of the extension (any level, from the level's nr / pair): forward columns
// [c0, c1) of D^T over reduction [r0, r0 + rc) of K; backward rows [r0, r0 + rc) of D over
// columns [c0, c1) of K. Layout as pack_b; columns >= c1 and steps past rc are zero.
void mm4_dense_pack_b(const mm4_job *j, const mm4_gemm_kernels *g, int64_t c0, int64_t c1,
                      int64_t r0, int64_t rc, void *panels, int64_t panel_stride);
// out[i] = W_flat[e + i] for i < len (any alignment), rounded to bf16 if `round`.
void mm4_ref_dequant(const mm4_job *j, int64_t e, int64_t len, float *out, int round);

// ---------------------------------------------------------------------------------------------
// Scalar helpers shared by every level
// ---------------------------------------------------------------------------------------------
#pragma STDC FP_CONTRACT OFF

// absmax of block b: plain, or restored from the double quantization (two roundings, never
// fused: nested_code[q] * nested_absmax[b / 256], then + offset).
static inline float mm4_absmax(const ql_qweight *w, int64_t b) {
    if (w->absmax) return w->absmax[b];
    float scaled = w->nested_code[w->absmax_q[b]] * w->nested_absmax[b / QL_Q_NESTED_BLOCK];
    return scaled + w->offset;
}

// f32 rounded to the nearest bf16, as f32.
static inline float mm4_round_bf16(float f) { return ql_bits_f32((uint32_t)ql_bf16_round_bits(f) << 16); }

// The 4-bit code of flat element i (high nibble first).
static inline int mm4_nibble(const uint8_t *packed, int64_t i) {
    uint8_t b = packed[i >> 1];
    return (i & 1) ? (b & 15) : (b >> 4);
}

// Whether the small-M path's layout conditions hold (every 32-element chunk of a row lies in
// one block and starts at an even element).
static inline int mm4_small_layout_ok(const ql_qweight *w) {
    return w->cols % 32 == 0 && w->block % 32 == 0;
}

#endif
