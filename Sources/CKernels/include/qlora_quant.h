// qlora 4-bit quantization kernels: the NF4 and FP4 formats of bitsandbytes (blockwise absmax,
// optional double quantization of the absmax), and the fused 4-bit matrix products that read
// the packed weights directly.
//
// Layout (exactly bitsandbytes'): the weight is flattened row-major and cut into blocks of
// `block` elements (a block may cross a row boundary; the last may be partial). Element 2i sits
// in the HIGH nibble of byte i, element 2i+1 in the LOW nibble; an odd count is padded with a
// zero element (its nibble is the code of 0.0). absmax[b] = max |x| over block b (clamped below
// at 1e-38).
// Double quantization: offset = mean(absmax); (absmax - offset) is quantized in blocks of 256
// with the signed 8-bit dynamic map, each block scaled by its own f32 nested absmax:
// absmax[b] = nested_code[absmax_q[b]] * nested_absmax[b / 256] + offset.
// (Implementation notes, quant_format.c: the pad of an odd count is bitsandbytes' zero ELEMENT,
// so the low nibble of the last byte is the code of 0.0 -- 7 for NF4, 0 for FP4; it is never
// read back. FP4 code 8 is +0.0 in bitsandbytes' table, like code 0. bitsandbytes 0.50.2's own
// CPU dequantize_4bit scales element (r, c) by absmax[r * (cols / block) + c / block], which is
// wrong whenever cols is not a multiple of block; ql_dequantize_4bit uses absmax[i / block].)
#ifndef QLORA_QUANT_H
#define QLORA_QUANT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { QL_Q_NF4 = 0, QL_Q_FP4 = 1 } ql_qtype;

enum { QL_Q_NESTED_BLOCK = 256 };

// The 16 code values of a format, indexed by the 4-bit code (bitsandbytes' order: NF4 sorted
// ascending; FP4 by its E2M1 bit pattern, already divided by 12).
const float *ql_quant_code(int type);

// Number of blocks for n elements.
static inline int64_t ql_quant_nblocks(int64_t n, int64_t block) { return (n + block - 1) / block; }

// Blockwise 4-bit quantization of n f32 values: packed gets (n+1)/2 bytes, absmax nblocks floats.
// Bit-exact with bitsandbytes' CPU path (full blocks scale by the f32 reciprocal of absmax, the
// partial last block divides; ties between two codes take the lower code).
// NaN inputs: documented in the implementation (they must not crash; they quantize to code of 0).
void ql_quantize_4bit(int type, const float *x, int64_t n, int64_t block, uint8_t *packed,
                      float *absmax);
// out[i] = code[nibble(i)] * absmax[i / block]
void ql_dequantize_4bit(int type, const uint8_t *packed, const float *absmax, int64_t n,
                        int64_t block, float *out);

// bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): 256 sorted
// values in [-1, 1].
void ql_dynamic_map(float out[256]);
// Double quantization of nblocks absmax values: offset (mean), q[nblocks] codes into the dynamic
// map, nested_absmax[ceil(nblocks / 256)].
void ql_double_quantize(const float *absmax, int64_t nblocks, uint8_t *q, float *nested_absmax,
                        float *offset);
void ql_double_dequantize(const uint8_t *q, const float *nested_absmax, const float *nested_code,
                          float offset, int64_t nblocks, float *absmax);

// A 4-bit weight matrix W [rows = N out_features, cols = K in_features] as the matmul kernels
// read it. Exactly one of `absmax` (plain) or `absmax_q` (double quantized, with nested_absmax,
// nested_code and offset) is set.
typedef struct {
    int type;                    // ql_qtype
    int64_t rows, cols, block;
    const uint8_t *packed;       // (rows*cols + 1) / 2 bytes
    const float *absmax;         // nblocks, or NULL
    const uint8_t *absmax_q;     // nblocks, or NULL
    const float *nested_absmax;  // ceil(nblocks / 256)
    const float *nested_code;    // 256
    float offset;
} ql_qweight;

// y[M, N] = x[M, K] W^T (+ bias[N] when bias != NULL), f32 compute.
void ql_matmul4_f32(const ql_qweight *w, const float *x, int64_t M, const float *bias, float *y);
// dx[M, K] = dy[M, N] W (the input gradient; W gets none), f32 compute.
void ql_matmul4_backward_f32(const ql_qweight *w, const float *dy, int64_t M, float *dx);
// The same with bf16 compute: x and the dequantized W rounded to bf16, products accumulated in
// f32 (the BF16 dot instructions where the CPU has them, a correct fallback otherwise).
void ql_matmul4_bf16(const ql_qweight *w, const float *x, int64_t M, const float *bias, float *y);
void ql_matmul4_backward_bf16(const ql_qweight *w, const float *dy, int64_t M, float *dx);

// LoRA's down-projection on the same pass over the input: y as ql_matmul4_* and h[M, r] =
// x[M, K] A^T with A [r, K] dense f32 (one adapter's A, or several stacked), computed from the
// packed x the base product already holds. bf16 compute rounds A like W (h then comes from
// bf16-rounded x and A with f32 sums). r <= 0 or a == NULL: h is not touched.
void ql_matmul4_lora_f32(const ql_qweight *w, const float *x, int64_t M, const float *bias,
                         float *y, const float *a, int64_t r, float *h);
void ql_matmul4_lora_bf16(const ql_qweight *w, const float *x, int64_t M, const float *bias,
                          float *y, const float *a, int64_t r, float *h);
// dx[M, K] = dy[M, N] W + dh[M, r] A: [dy | dh] read as one input whose reduction runs over the
// N rows of W, then the r rows of A (bf16 compute rounds dh and A too).
void ql_matmul4_lora_backward_f32(const ql_qweight *w, const float *dy, const float *dh,
                                  const float *a, int64_t r, int64_t M, float *dx);
void ql_matmul4_lora_backward_bf16(const ql_qweight *w, const float *dy, const float *dh,
                                   const float *a, int64_t r, int64_t M, float *dx);

// Dense products with bf16 compute on the same panel machinery (no 4-bit weight; W [N, K] f32):
// y[M, N] = x[M, K] W^T and dx[M, K] = dy[M, N] W, operands rounded to bf16, f32 sums (the BF16
// dot instructions where the CPU has them). For a frozen dense head under compute = "bf16".
void ql_matmul_dense_bf16(const float *x, int64_t M, const float *w, int64_t N, int64_t K,
                          float *y);
void ql_matmul_dense_backward_bf16(const float *dy, int64_t M, const float *w, int64_t N,
                                   int64_t K, float *dx);

#ifdef __cplusplus
}
#endif
#endif
