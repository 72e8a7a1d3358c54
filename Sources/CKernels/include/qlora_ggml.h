// GGUF (ggml) tensor types: block geometry and dequantization to f32 exactly as ggml's reference
// dequantize_row_* computes it, and the quantizers qlora writes (Q8_0, Q4_0). Type ids are
// ggml's. Callers validate sizes: n is a multiple of the type's block and buffers hold it.
#ifndef QLORA_GGML_H
#define QLORA_GGML_H

#include <stdint.h>

enum {
    QL_GGML_F32 = 0, QL_GGML_F16 = 1, QL_GGML_Q4_0 = 2, QL_GGML_Q4_1 = 3, QL_GGML_Q5_0 = 6,
    QL_GGML_Q5_1 = 7, QL_GGML_Q8_0 = 8, QL_GGML_Q2_K = 10, QL_GGML_Q3_K = 11, QL_GGML_Q4_K = 12,
    QL_GGML_Q5_K = 13, QL_GGML_Q6_K = 14, QL_GGML_IQ4_NL = 20, QL_GGML_BF16 = 30,
};

// Elements and bytes per block of `type`; returns 0 when qlora cannot dequantize the type.
int ql_ggml_block(int type, int64_t *elems, int64_t *bytes);

// y[0..n) = the n values the blocks at src encode. Returns 0 for an unsupported type or an n that
// is not a multiple of the block. Threaded over fixed chunks of blocks for large n.
int ql_ggml_dequantize(int type, const void *src, float *y, int64_t n);

// Quantize n floats (a multiple of 32) the way ggml's quantize_row_*_ref does. Returns 0 if the
// type is not one of Q8_0, Q4_0 or n is not a multiple of 32.
int ql_ggml_quantize(int type, const float *x, void *dst, int64_t n);

#endif
