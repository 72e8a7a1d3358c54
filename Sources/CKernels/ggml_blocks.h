// The block layouts of the GGUF (ggml) tensor types qlora reads and writes, each defined once
// with its size asserted, plus the one f16 decode they all use for their scales. Bytes are
// little-endian as in the file; structs hold only bytes and uint16 so they need no packing.
#ifndef QLORA_GGML_BLOCKS_H
#define QLORA_GGML_BLOCKS_H

#include <stdint.h>
#include <string.h>

#define QL_QK 32   // elements per block of the "legacy" types (Q4_0 ... Q8_0, IQ4_NL)
#define QL_QKK 256 // elements per super-block of the K types
#define QL_K_SCALE 12

typedef struct { uint16_t d; uint8_t qs[QL_QK / 2]; } ql_block_q4_0;
typedef struct { uint16_t d, m; uint8_t qs[QL_QK / 2]; } ql_block_q4_1;
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[QL_QK / 2]; } ql_block_q5_0;
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[QL_QK / 2]; } ql_block_q5_1;
typedef struct { uint16_t d; int8_t qs[QL_QK]; } ql_block_q8_0;
typedef struct { uint16_t d; uint8_t qs[QL_QK / 2]; } ql_block_iq4_nl;
// K types: 256 elements in 16 (Q2/Q3/Q6) or 8 (Q4/Q5) sub-blocks with 4-, 6- or 8-bit scales.
typedef struct { uint8_t scales[QL_QKK / 16]; uint8_t qs[QL_QKK / 4]; uint16_t d, dmin; } ql_block_q2_k;
typedef struct { uint8_t hmask[QL_QKK / 8]; uint8_t qs[QL_QKK / 4]; uint8_t scales[QL_K_SCALE]; uint16_t d; } ql_block_q3_k;
typedef struct { uint16_t d, dmin; uint8_t scales[QL_K_SCALE]; uint8_t qs[QL_QKK / 2]; } ql_block_q4_k;
typedef struct { uint16_t d, dmin; uint8_t scales[QL_K_SCALE]; uint8_t qh[QL_QKK / 8]; uint8_t qs[QL_QKK / 2]; } ql_block_q5_k;
typedef struct { uint8_t ql[QL_QKK / 2]; uint8_t qh[QL_QKK / 4]; int8_t scales[QL_QKK / 16]; uint16_t d; } ql_block_q6_k;

_Static_assert(sizeof(ql_block_q4_0) == 18, "Q4_0 block is 18 bytes");
_Static_assert(sizeof(ql_block_q4_1) == 20, "Q4_1 block is 20 bytes");
_Static_assert(sizeof(ql_block_q5_0) == 22, "Q5_0 block is 22 bytes");
_Static_assert(sizeof(ql_block_q5_1) == 24, "Q5_1 block is 24 bytes");
_Static_assert(sizeof(ql_block_q8_0) == 34, "Q8_0 block is 34 bytes");
_Static_assert(sizeof(ql_block_iq4_nl) == 18, "IQ4_NL block is 18 bytes");
_Static_assert(sizeof(ql_block_q2_k) == 84, "Q2_K block is 84 bytes");
_Static_assert(sizeof(ql_block_q3_k) == 110, "Q3_K block is 110 bytes");
_Static_assert(sizeof(ql_block_q4_k) == 144, "Q4_K block is 144 bytes");
_Static_assert(sizeof(ql_block_q5_k) == 176, "Q5_K block is 176 bytes");
_Static_assert(sizeof(ql_block_q6_k) == 210, "Q6_K block is 210 bytes");

// Exact IEEE half -> float (subnormals, inf, NaN).
static inline float ql_ggml_f16(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu, bits;
    if (e == 0x1f) bits = sign | 0x7f800000u | (m ? (0x400000u | (m << 13)) : 0u);
    else if (e != 0) bits = sign | ((e + 112u) << 23) | (m << 13);
    else if (m == 0) bits = sign;
    else {
        uint32_t ex = 113;
        while (!(m & 0x400u)) { m <<= 1; ex--; }
        bits = sign | (ex << 23) | ((m & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

#endif
