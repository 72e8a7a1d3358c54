// Scalar reference dequantization of the GGUF tensor types (one function per block type, the
// arithmetic in ggml's dequantize_row_* order so results are bit-identical), the Q8_0 / Q4_0
// quantizers of ggml's quantize_row_*_ref, and the traits table type -> block geometry -> kernel.
// Products are never fused into FMAs: the reference rounds each product and sum separately.
#pragma STDC FP_CONTRACT OFF

#include "ggml_blocks.h"
#include "kernels_internal.h"
#include "qlora_ggml.h"

#include <math.h>

typedef void (*ql_dequant_fn)(const void *src, float *y, int64_t nblocks);

// ---- 32-element types --------------------------------------------------------------------------

static void dq_f32(const void *src, float *y, int64_t n) { memcpy(y, src, (size_t)n * 4); }

static void dq_f16(const void *src, float *y, int64_t n) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        y[i] = ql_ggml_f16(h);
    }
}

static void dq_bf16(const void *src, float *y, int64_t n) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        uint32_t u = (uint32_t)h << 16;
        memcpy(&y[i], &u, 4);
    }
}

static void dq_q4_0(const void *src, float *y, int64_t nb) {
    const ql_block_q4_0 *x = src;
    for (int64_t i = 0; i < nb; i++, y += QL_QK) {
        const float d = ql_ggml_f16(x[i].d);
        for (int j = 0; j < QL_QK / 2; j++) {
            const int x0 = (x[i].qs[j] & 0x0F) - 8, x1 = (x[i].qs[j] >> 4) - 8;
            y[j] = x0 * d;
            y[j + QL_QK / 2] = x1 * d;
        }
    }
}

static void dq_q4_1(const void *src, float *y, int64_t nb) {
    const ql_block_q4_1 *x = src;
    for (int64_t i = 0; i < nb; i++, y += QL_QK) {
        const float d = ql_ggml_f16(x[i].d), m = ql_ggml_f16(x[i].m);
        for (int j = 0; j < QL_QK / 2; j++) {
            const int x0 = x[i].qs[j] & 0x0F, x1 = x[i].qs[j] >> 4;
            y[j] = x0 * d + m;
            y[j + QL_QK / 2] = x1 * d + m;
        }
    }
}

static inline uint32_t load_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void dq_q5_0(const void *src, float *y, int64_t nb) {
    const ql_block_q5_0 *x = src;
    for (int64_t i = 0; i < nb; i++, y += QL_QK) {
        const float d = ql_ggml_f16(x[i].d);
        const uint32_t qh = load_u32(x[i].qh);
        for (int j = 0; j < QL_QK / 2; j++) {
            const uint8_t h0 = ((qh >> j) << 4) & 0x10, h1 = (qh >> (j + 12)) & 0x10;
            const int x0 = ((x[i].qs[j] & 0x0F) | h0) - 16, x1 = ((x[i].qs[j] >> 4) | h1) - 16;
            y[j] = x0 * d;
            y[j + QL_QK / 2] = x1 * d;
        }
    }
}

static void dq_q5_1(const void *src, float *y, int64_t nb) {
    const ql_block_q5_1 *x = src;
    for (int64_t i = 0; i < nb; i++, y += QL_QK) {
        const float d = ql_ggml_f16(x[i].d), m = ql_ggml_f16(x[i].m);
        const uint32_t qh = load_u32(x[i].qh);
        for (int j = 0; j < QL_QK / 2; j++) {
            const uint8_t h0 = ((qh >> j) << 4) & 0x10, h1 = (qh >> (j + 12)) & 0x10;
            const int x0 = (x[i].qs[j] & 0x0F) | h0, x1 = (x[i].qs[j] >> 4) | h1;
            y[j] = x0 * d + m;
            y[j + QL_QK / 2] = x1 * d + m;
        }
    }
}

static void dq_q8_0(const void *src, float *y, int64_t nb) {
    const ql_block_q8_0 *x = src;
    for (int64_t i = 0; i < nb; i++, y += QL_QK) {
        const float d = ql_ggml_f16(x[i].d);
        for (int j = 0; j < QL_QK; j++) y[j] = x[i].qs[j] * d;
    }
}

// The 16 non-linear levels of IQ4_NL.
static const int8_t iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                        1,    13,   25,  38,  53,  69,  89,  113};

static void dq_iq4_nl(const void *src, float *y, int64_t nb) {
    const ql_block_iq4_nl *x = src;
    for (int64_t i = 0; i < nb; i++, y += QL_QK) {
        const float d = ql_ggml_f16(x[i].d);
        for (int j = 0; j < QL_QK / 2; j++) {
            y[j] = d * iq4nl_values[x[i].qs[j] & 0x0F];
            y[j + QL_QK / 2] = d * iq4nl_values[x[i].qs[j] >> 4];
        }
    }
}

// ---- K types (256-element super-blocks) ----------------------------------------------------------

static void dq_q2_k(const void *src, float *y, int64_t nb) {
    const ql_block_q2_k *x = src;
    for (int64_t i = 0; i < nb; i++) {
        const float d = ql_ggml_f16(x[i].d), dmin = ql_ggml_f16(x[i].dmin);
        const uint8_t *q = x[i].qs;
        int is = 0;
        for (int n = 0; n < QL_QKK; n += 128, q += 32) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int half = 0; half < 2; half++) {
                    const uint8_t sc = x[i].scales[is++];
                    const float dl = d * (sc & 0xF), ml = dmin * (sc >> 4);
                    for (int l = 0; l < 16; l++) *y++ = dl * ((q[16 * half + l] >> shift) & 3) - ml;
                }
            }
        }
    }
}

// The 16 six-bit scales of a Q3_K block: low 4 bits in bytes 0..7 (two nibbles each), high
// 2 bits in bytes 8..11 (four pairs each).
static inline int q3k_scale(const uint8_t *s, int j) {
    const int lo = (s[j % 8] >> (4 * (j / 8))) & 0xF, hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (lo | (hi << 4)) - 32;
}

static void dq_q3_k(const void *src, float *y, int64_t nb) {
    const ql_block_q3_k *x = src;
    for (int64_t i = 0; i < nb; i++) {
        const float d_all = ql_ggml_f16(x[i].d);
        const uint8_t *q = x[i].qs, *hm = x[i].hmask;
        uint8_t m = 1;
        int is = 0;
        for (int n = 0; n < QL_QKK; n += 128, q += 32) {
            for (int shift = 0; shift < 8; shift += 2, m <<= 1) {
                for (int half = 0; half < 2; half++) {
                    const float dl = d_all * q3k_scale(x[i].scales, is++);
                    for (int l = 16 * half; l < 16 * half + 16; l++) {
                        *y++ = dl * ((int8_t)((q[l] >> shift) & 3) - ((hm[l] & m) ? 0 : 4));
                    }
                }
            }
        }
    }
}

// Scale j and min j (6 bits each) of a Q4_K / Q5_K block's 12 scale bytes.
static inline void k4_scale_min(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

static void dq_q4_k(const void *src, float *y, int64_t nb) {
    const ql_block_q4_k *x = src;
    for (int64_t i = 0; i < nb; i++) {
        const float d = ql_ggml_f16(x[i].d), dmin = ql_ggml_f16(x[i].dmin);
        const uint8_t *q = x[i].qs;
        int is = 0;
        for (int j = 0; j < QL_QKK; j += 64, q += 32) {
            uint8_t sc, m;
            k4_scale_min(is++, x[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = dmin * m;
            k4_scale_min(is++, x[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = dmin * m;
            for (int l = 0; l < 32; l++) *y++ = d1 * (q[l] & 0xF) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (q[l] >> 4) - m2;
        }
    }
}

static void dq_q5_k(const void *src, float *y, int64_t nb) {
    const ql_block_q5_k *x = src;
    for (int64_t i = 0; i < nb; i++) {
        const float d = ql_ggml_f16(x[i].d), dmin = ql_ggml_f16(x[i].dmin);
        const uint8_t *ql = x[i].qs, *qh = x[i].qh;
        int is = 0;
        uint8_t u1 = 1, u2 = 2;
        for (int j = 0; j < QL_QKK; j += 64, ql += 32, u1 <<= 2, u2 <<= 2) {
            uint8_t sc, m;
            k4_scale_min(is++, x[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = dmin * m;
            k4_scale_min(is++, x[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = dmin * m;
            for (int l = 0; l < 32; l++) *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        }
    }
}

static void dq_q6_k(const void *src, float *y, int64_t nb) {
    const ql_block_q6_k *x = src;
    for (int64_t i = 0; i < nb; i++) {
        const float d = ql_ggml_f16(x[i].d);
        const uint8_t *ql = x[i].ql, *qh = x[i].qh;
        const int8_t *sc = x[i].scales;
        for (int n = 0; n < QL_QKK; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int8_t q1 = (int8_t)((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int8_t q2 = (int8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int8_t q3 = (int8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int8_t q4 = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l + 0] = d * sc[is + 0] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
        }
    }
}

// ---- traits table ------------------------------------------------------------------------------

typedef struct {
    int type;
    int64_t elems, bytes; // per block (F32/F16/BF16: one element per "block")
    ql_dequant_fn dequant;  // takes a count of blocks
} ql_ggml_traits;

static const ql_ggml_traits traits[] = {
    {QL_GGML_F32, 1, 4, dq_f32},
    {QL_GGML_F16, 1, 2, dq_f16},
    {QL_GGML_BF16, 1, 2, dq_bf16},
    {QL_GGML_Q4_0, QL_QK, sizeof(ql_block_q4_0), dq_q4_0},
    {QL_GGML_Q4_1, QL_QK, sizeof(ql_block_q4_1), dq_q4_1},
    {QL_GGML_Q5_0, QL_QK, sizeof(ql_block_q5_0), dq_q5_0},
    {QL_GGML_Q5_1, QL_QK, sizeof(ql_block_q5_1), dq_q5_1},
    {QL_GGML_Q8_0, QL_QK, sizeof(ql_block_q8_0), dq_q8_0},
    {QL_GGML_IQ4_NL, QL_QK, sizeof(ql_block_iq4_nl), dq_iq4_nl},
    {QL_GGML_Q2_K, QL_QKK, sizeof(ql_block_q2_k), dq_q2_k},
    {QL_GGML_Q3_K, QL_QKK, sizeof(ql_block_q3_k), dq_q3_k},
    {QL_GGML_Q4_K, QL_QKK, sizeof(ql_block_q4_k), dq_q4_k},
    {QL_GGML_Q5_K, QL_QKK, sizeof(ql_block_q5_k), dq_q5_k},
    {QL_GGML_Q6_K, QL_QKK, sizeof(ql_block_q6_k), dq_q6_k},
};

static const ql_ggml_traits *find(int type) {
    for (size_t i = 0; i < sizeof(traits) / sizeof(traits[0]); i++) {
        if (traits[i].type == type) return &traits[i];
    }
    return NULL;
}

int ql_ggml_block(int type, int64_t *elems, int64_t *bytes) {
    const ql_ggml_traits *t = find(type);
    if (!t) return 0;
    *elems = t->elems;
    *bytes = t->bytes;
    return 1;
}

#define DQ_CHUNK_BLOCKS 4096 // blocks per task: fixed, independent of the thread count

typedef struct {
    const ql_ggml_traits *t;
    const uint8_t *src;
    float *y;
    int64_t nblocks;
} dq_job;

static void dq_task(void *ctx, int64_t task) {
    const dq_job *j = ctx;
    int64_t b0 = task * DQ_CHUNK_BLOCKS, nb = j->nblocks - b0;
    if (nb > DQ_CHUNK_BLOCKS) nb = DQ_CHUNK_BLOCKS;
    j->t->dequant(j->src + b0 * j->t->bytes, j->y + b0 * j->t->elems, nb);
}

int ql_ggml_dequantize(int type, const void *src, float *y, int64_t n) {
    const ql_ggml_traits *t = find(type);
    if (!t || n < 0 || n % t->elems != 0) return 0;
    dq_job job = {t, src, y, n / t->elems};
    int64_t ntasks = (job.nblocks + DQ_CHUNK_BLOCKS - 1) / DQ_CHUNK_BLOCKS;
    if (n < QL_PAR_MIN || ntasks < 2) {
        if (job.nblocks > 0) t->dequant(src, y, job.nblocks);
    } else {
        ql_parallel_for(ntasks, dq_task, &job);
    }
    return 1;
}

// ---- quantizers (ggml's reference rounding) ------------------------------------------------------

static uint16_t to_f16(float f) {
    uint16_t h;
    ql_f32_to_f16(&f, &h, 1);
    return h;
}

static void q_q8_0(const float *x, ql_block_q8_0 *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += QL_QK) {
        float amax = 0.0f;
        for (int j = 0; j < QL_QK; j++) {
            const float v = fabsf(x[j]);
            amax = amax > v ? amax : v;
        }
        const float d = amax / ((1 << 7) - 1), id = d ? 1.0f / d : 0.0f;
        y[i].d = to_f16(d);
        for (int j = 0; j < QL_QK; j++) y[i].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

static void q_q4_0(const float *x, ql_block_q4_0 *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += QL_QK) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QL_QK; j++) {
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        const float d = max / -8, id = d ? 1.0f / d : 0.0f;
        y[i].d = to_f16(d);
        for (int j = 0; j < QL_QK / 2; j++) {
            const float x0 = x[j] * id, x1 = x[QL_QK / 2 + j] * id;
            int xi0 = (int8_t)(x0 + 8.5f), xi1 = (int8_t)(x1 + 8.5f);
            xi0 = xi0 < 15 ? xi0 : 15;
            xi1 = xi1 < 15 ? xi1 : 15;
            y[i].qs[j] = (uint8_t)(xi0 | (xi1 << 4));
        }
    }
}

int ql_ggml_quantize(int type, const float *x, void *dst, int64_t n) {
    if (n < 0 || n % QL_QK != 0) return 0;
    switch (type) {
    case QL_GGML_Q8_0: q_q8_0(x, dst, n / QL_QK); return 1;
    case QL_GGML_Q4_0: q_q4_0(x, dst, n / QL_QK); return 1;
    default: return 0;
    }
}
