// The 4-bit weight formats of bitsandbytes (NF4, FP4; blockwise absmax; optional double
// quantization of the absmax): code tables, quantize and dequantize side by side, the 8-bit
// dynamic map and the double quantization of the absmax. This file holds the scalar reference
// of every kernel plus the public drivers (ISA dispatch at call time, threading over blocks);
// quant_format_avx2.c / quant_format_avx512.c hold the SIMD versions, which give identical bits.
//
// Bit-exact with bitsandbytes 0.50.2 on CPU (checked against its golden files):
// - 4-bit: absmax = max |x| per block of the flattened weight; full blocks scale by the f32
//   reciprocal (s = x * (1/absmax)), the partial last block divides (s = x / absmax). The code
//   is the rank of s among the 15 f32 midpoints (c[r] + c[r+1]) / 2 of the sorted code values,
//   i.e. the number of midpoints strictly below s (a value on a midpoint takes the lower code),
//   mapped back to the code index (FP4 is not sorted; its two zeros, code 0 and code 8, both
//   +0.0, sort as 0 then 8, so s == 0 gives code 0 and 0 < s <= mid gives code 8). No clamp is
//   needed: |s| > 1 ranks like +-1.
// - Packing: element 2i in the high nibble of byte i, 2i+1 in the low one. An odd count is
//   padded, as bitsandbytes does, with a zero ELEMENT: the low nibble of the last byte is the
//   code of 0.0 (NF4: 7, FP4: 0), not necessarily the nibble 0. Dequantize never reads it.
// - Double quantization: offset = mean(absmax) summed exactly as torch's serial CPU sum does
//   (cascade sum, 8-lane float vectors) then divided by the count; d = absmax - offset; per
//   block of 256, m = max |d| (not clamped: m == 0 stores 0 and codes 0); code = bitsandbytes'
//   CPU lookup: s = clamp(d * (1/m), -1, 1), grid index g = trunc(((s + 1) * 0.5) * 65535 + 0.5)
//   (separately rounded f32 operations), then the nearest code to the grid value
//   -1 + 2g/65535 (the number of map midpoints below it). This is coarser than a true nearest
//   search near 0 and is what bitsandbytes produces; an exact nearest search would differ by
//   one code on some values (one block in the golden files).
// - Dequantize: out = code[nibble] * absmax[i / block]; restored absmax =
//   nested_code[q] * nested_absmax[b / 256] + offset (two roundings, never fused).
//
// Where bitsandbytes may still differ (by one 8-bit absmax code, rarely): torch splits a sum of
// more than 32768 absmax values (double quantization of > 32768 blocks) across its threads, so
// its offset then depends on its thread count and may differ from ours in the last bit; and if
// a bitsandbytes build fuses (s+1)*0.5*65535 + 0.5 into an FMA, a value whose product rounds
// exactly onto k - 0.5 moves to the neighbouring grid point. Neither shows in the golden files.
//
// Special values (never a crash, never an access outside the arrays):
// - A block with a NaN gets absmax = NaN; a block with an Inf (and no NaN) gets absmax = Inf.
//   Every element of such a block gets the code of 0.0 (a NaN scaled value counts as 0.0), so
//   the block dequantizes to NaN (0 * NaN, 0 * Inf). Blocks without NaN/Inf are unaffected.
// - An all-zero block (or absmax below 1e-38) stores absmax 1e-38 and the code of 0.0.
//   (bitsandbytes 0.50.2 stores 0 for an all-zero full block and 1e-38 for a partial one; the
//   dequantized values are the same zeros.)
// - Double quantization: a NaN absmax makes the offset NaN and so every restored absmax NaN; an
//   Inf absmax makes the offset Inf (restored absmax NaN/Inf). A NaN difference gets the code
//   of 0.0 (127), and a NaN nested absmax is stored as NaN.
#include "kernels_internal.h"
#include "qlora_quant.h"

#include <math.h>
#include <string.h>

#pragma STDC FP_CONTRACT OFF

// ---------------------------------------------------------------------------------------------
// Code tables
// ---------------------------------------------------------------------------------------------
static const float nf4_code[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};

// E2M1 by bit pattern (bit 3 = sign), divided by the largest magnitude 12 in f32. bitsandbytes
// writes the sign-bit zero as the Python integer -0, so code 8 is +0.0 like code 0.
static const float fp4_code[16] = {
    0.0f / 12.0f,  0.0625f / 12.0f,  8.0f / 12.0f,  12.0f / 12.0f,
    4.0f / 12.0f,  6.0f / 12.0f,     2.0f / 12.0f,  3.0f / 12.0f,
    0.0f / 12.0f,  -0.0625f / 12.0f, -8.0f / 12.0f, -12.0f / 12.0f,
    -4.0f / 12.0f, -6.0f / 12.0f,    -2.0f / 12.0f, -3.0f / 12.0f};

// Code indices in ascending order of value (stable for FP4's two zeros: 0 before 8).
static const uint8_t nf4_code_of_rank[16] = {0, 1, 2,  3,  4,  5,  6,  7,
                                             8, 9, 10, 11, 12, 13, 14, 15};
static const uint8_t fp4_code_of_rank[16] = {11, 10, 13, 12, 15, 14, 9, 0,
                                             8,  1,  6,  7,  4,  5,  2, 3};

const float *ql_quant_code(int type) { return type == QL_Q_FP4 ? fp4_code : nf4_code; }

// The sorted-code search data of a format: mid[r] = (sorted[r] + sorted[r+1]) / 2 in f32, and
// the code index of each rank.
typedef struct {
    float mid[16]; // 15 used
    const uint8_t *code_of_rank;
    uint8_t zero_code; // the code of 0.0 (pads an odd count)
} q4_search;

static void q4_search_init(int type, q4_search *s) {
    const float *code = ql_quant_code(type);
    s->code_of_rank = type == QL_Q_FP4 ? fp4_code_of_rank : nf4_code_of_rank;
    for (int r = 0; r < 15; r++)
        s->mid[r] = (code[s->code_of_rank[r]] + code[s->code_of_rank[r + 1]]) / 2.0f;
    s->mid[15] = INFINITY;
    s->zero_code = type == QL_Q_FP4 ? 0 : 7;
}

// ---------------------------------------------------------------------------------------------
// Scalar reference: one block, forward and inverse
// ---------------------------------------------------------------------------------------------
// max |x| over the block; NaN if any element is NaN; clamped below at 1e-38 (NaN stays NaN).
static float block_absmax(const float *x, int64_t len) {
    float m = 0.0f;
    int nan = 0;
    for (int64_t i = 0; i < len; i++) {
        float a = fabsf(x[i]);
        if (a > m) m = a;
        nan |= a != a;
    }
    if (nan) return NAN;
    return m < 1e-38f ? 1e-38f : m;
}

// Rank of a scaled value among the midpoints: how many lie strictly below it (NaN counts as 0).
// A branchless binary search over the 15 sorted midpoints (the same count as 15 compares).
static inline int rank_of(float s, const float *mid) {
    if (s != s) s = 0.0f;
    int r = 0;
    r += (s > mid[r + 7]) << 3;
    r += (s > mid[r + 3]) << 2;
    r += (s > mid[r + 1]) << 1;
    r += s > mid[r];
    return r;
}

// Quantizes one block of len elements starting at an even element (packed points at its first
// byte). Full blocks multiply by the reciprocal, the partial last block divides.
static void quantize_block_scalar(const float *x, int64_t len, int full, const q4_search *s,
                                  uint8_t *packed, float *absmax) {
    float am = block_absmax(x, len);
    float inv = 1.0f / am;
    *absmax = am;
    for (int64_t i = 0; i < len; i += 2) {
        float s0 = full ? x[i] * inv : x[i] / am;
        uint8_t hi = s->code_of_rank[rank_of(s0, s->mid)];
        uint8_t lo = s->zero_code;
        if (i + 1 < len) {
            float s1 = full ? x[i + 1] * inv : x[i + 1] / am;
            lo = s->code_of_rank[rank_of(s1, s->mid)];
        }
        packed[i / 2] = (uint8_t)(hi << 4 | lo);
    }
}

// Inverse of quantize_block_scalar: len elements of one block.
static void dequantize_block_scalar(const uint8_t *packed, float absmax, int64_t len,
                                    const float *code, float *out) {
    for (int64_t i = 0; i < len; i++) {
        uint8_t b = packed[i / 2];
        out[i] = code[(i & 1) ? (b & 15) : (b >> 4)] * absmax;
    }
}

static void quantize_blocks_scalar(const float *x, int64_t nblocks, int64_t block,
                                   const q4_search *s, uint8_t *packed, float *absmax) {
    for (int64_t b = 0; b < nblocks; b++)
        quantize_block_scalar(x + b * block, block, 1, s, packed + b * (block / 2), absmax + b);
}

static void dequantize_blocks_scalar(const uint8_t *packed, const float *absmax, int64_t nblocks,
                                     int64_t block, const float *code, float *out) {
    for (int64_t b = 0; b < nblocks; b++)
        dequantize_block_scalar(packed + b * (block / 2), absmax[b], block, code, out + b * block);
}

// The scalar entry of the level table (same arguments as the SIMD versions). Full blocks have an
// even length, so the padding code is never used.
static void quantize_blocks_ref(const float *x, int64_t nblocks, int64_t block, const float *mid,
                                const uint8_t *code_of_rank, uint8_t *packed, float *absmax) {
    q4_search s = {.code_of_rank = code_of_rank, .zero_code = 0};
    memcpy(s.mid, mid, sizeof s.mid);
    quantize_blocks_scalar(x, nblocks, block, &s, packed, absmax);
}

const ql_q4_table ql_q4_scalar = {quantize_blocks_ref, dequantize_blocks_scalar};

// ---------------------------------------------------------------------------------------------
// Drivers: a fixed partition into tasks of whole blocks (QUANT_TASK_ELEMS elements each, the
// last one shorter; a whole number of bytes since blocks are even, so no two tasks share a
// byte), the ISA level read once per call.
// ---------------------------------------------------------------------------------------------
#define QUANT_TASK_ELEMS ((int64_t)1 << 16)

typedef struct {
    q4_search search;
    const float *code;
    const float *x;
    float *out;
    uint8_t *packed_out;
    const uint8_t *packed_in;
    float *absmax_out;
    const float *absmax_in;
    int64_t n, block, nblocks, blocks_per_task;
    const ql_q4_table *kern; // the level's kernels, read once per call
} q4_job;

static int64_t blocks_per_task(int64_t block) {
    int64_t b = QUANT_TASK_ELEMS / block;
    return b < 1 ? 1 : b;
}

static void quantize_task(void *ctx, int64_t t) {
    const q4_job *j = ctx;
    int64_t b0 = t * j->blocks_per_task, b1 = b0 + j->blocks_per_task;
    if (b1 > j->nblocks) b1 = j->nblocks;
    int64_t nfull = j->n / j->block; // blocks with `block` elements
    int64_t f1 = b1 < nfull ? b1 : nfull;
    if (f1 > b0) {
        const float *x = j->x + b0 * j->block;
        uint8_t *p = j->packed_out + b0 * (j->block / 2);
        float *am = j->absmax_out + b0;
        j->kern->quantize_blocks(x, f1 - b0, j->block, j->search.mid, j->search.code_of_rank, p,
                                 am);
    }
    if (b1 > nfull && b1 > b0) { // the partial last block (scalar at every level)
        int64_t start = nfull * j->block;
        quantize_block_scalar(j->x + start, j->n - start, 0, &j->search,
                              j->packed_out + start / 2, j->absmax_out + nfull);
    }
}

void ql_quantize_4bit(int type, const float *x, int64_t n, int64_t block, uint8_t *packed,
                      float *absmax) {
    if (n <= 0) return;
    q4_job j = {.x = x, .packed_out = packed, .absmax_out = absmax, .n = n, .block = block};
    q4_search_init(type, &j.search);
    j.nblocks = ql_quant_nblocks(n, block);
    j.blocks_per_task = blocks_per_task(block);
    j.kern = ql_q4();
    ql_parallel_for((j.nblocks + j.blocks_per_task - 1) / j.blocks_per_task, quantize_task, &j);
}

static void dequantize_task(void *ctx, int64_t t) {
    const q4_job *j = ctx;
    int64_t b0 = t * j->blocks_per_task, b1 = b0 + j->blocks_per_task;
    if (b1 > j->nblocks) b1 = j->nblocks;
    int64_t nfull = j->n / j->block;
    int64_t f1 = b1 < nfull ? b1 : nfull;
    if (f1 > b0) {
        const uint8_t *p = j->packed_in + b0 * (j->block / 2);
        const float *am = j->absmax_in + b0;
        float *out = j->out + b0 * j->block;
        j->kern->dequantize_blocks(p, am, f1 - b0, j->block, j->code, out);
    }
    if (b1 > nfull && b1 > b0) {
        int64_t start = nfull * j->block;
        dequantize_block_scalar(j->packed_in + start / 2, j->absmax_in[nfull], j->n - start,
                                j->code, j->out + start);
    }
}

void ql_dequantize_4bit(int type, const uint8_t *packed, const float *absmax, int64_t n,
                        int64_t block, float *out) {
    if (n <= 0) return;
    q4_job j = {.code = ql_quant_code(type), .packed_in = packed, .absmax_in = absmax, .out = out,
                .n = n, .block = block};
    j.nblocks = ql_quant_nblocks(n, block);
    j.blocks_per_task = blocks_per_task(block);
    j.kern = ql_q4();
    ql_parallel_for((j.nblocks + j.blocks_per_task - 1) / j.blocks_per_task, dequantize_task,
                    &j);
}

// ---------------------------------------------------------------------------------------------
// The 8-bit dynamic map: create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)
// ---------------------------------------------------------------------------------------------
// torch.linspace(0.1, 1, steps, dtype=float32) as torch's CPU kernel evaluates it: step =
// (1 - 0.1) / (steps - 1) in f32; the first half is start + step*i, the second half
// end - step*(steps-1-i), each a single fused multiply-add (the golden map has these bits; the
// separately rounded form differs in 42 of the 256 values).
static void torch_linspace_f32(int steps, float *out) {
    const float start = 0.1f, end = 1.0f;
    const float step = (end - start) / (float)(steps - 1);
    const int halfway = steps / 2;
    for (int i = 0; i < steps; i++)
        out[i] = i < halfway ? fmaf(step, (float)i, start)
                             : fmaf(-step, (float)(steps - 1 - i), end);
}

void ql_dynamic_map(float out[256]) {
    // Exponent level i = 0..6 covers 10^(i-6) * (0.1, 1] with 2^i means of a linspace, on both
    // signs (2 * 127 values); then 0 and 1. The scale is the Python double 10**(i-6) taken to f32.
    static const double decade[7] = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0};
    float bounds[65];
    int n = 0;
    for (int i = 0; i < 7; i++) {
        int items = (1 << i) + 1;
        torch_linspace_f32(items, bounds);
        float scale = (float)decade[i];
        for (int k = 0; k + 1 < items; k++) {
            float mean = (bounds[k] + bounds[k + 1]) / 2.0f;
            out[n++] = scale * mean;
            out[n++] = -scale * mean;
        }
    }
    out[n++] = 0.0f;
    out[n++] = 1.0f;
    for (int i = 1; i < 256; i++) { // insertion sort, ascending (all values distinct)
        float v = out[i];
        int k = i - 1;
        while (k >= 0 && out[k] > v) {
            out[k + 1] = out[k];
            k--;
        }
        out[k + 1] = v;
    }
}

// ---------------------------------------------------------------------------------------------
// Double quantization of the absmax, forward and inverse
// ---------------------------------------------------------------------------------------------
// torch's serial CPU sum of contiguous f32 (at::native cascade_sum): rows of 4 "items" (ILP
// factor 4) summed by a 4-level cascade whose level step is 2^max(4, ceil_log2(rows) / 4);
// an item is an 8-lane float vector when n >= 8 (the AVX2 build), else a single float.
enum { SUM_LEVELS = 4, SUM_ILP = 4, SUM_LANES = 8 };

static int64_t ceil_log2(int64_t x) {
    int64_t r = 0;
    while (x > 1 && ((int64_t)1 << r) < x) r++;
    return r;
}

// Sums items (lanes wide) of x into part[SUM_ILP][lanes] as torch's row_sum does.
static void torch_row_sum(const float *x, int64_t nitems, int lanes, float *result) {
    float acc[SUM_LEVELS][SUM_ILP][SUM_LANES];
    memset(acc, 0, sizeof acc);
    const int64_t rows = nitems / SUM_ILP;
    int64_t level_power = ceil_log2(rows) / SUM_LEVELS;
    if (level_power < 4) level_power = 4;
    const int64_t level_step = (int64_t)1 << level_power, level_mask = level_step - 1;
    int64_t i = 0;
    while (i + level_step <= rows) {
        for (int64_t j = 0; j < level_step; j++, i++)
            for (int k = 0; k < SUM_ILP; k++)
                for (int l = 0; l < lanes; l++)
                    acc[0][k][l] += x[(i * SUM_ILP + k) * lanes + l];
        for (int lev = 1; lev < SUM_LEVELS; lev++) {
            for (int k = 0; k < SUM_ILP; k++)
                for (int l = 0; l < lanes; l++) {
                    acc[lev][k][l] += acc[lev - 1][k][l];
                    acc[lev - 1][k][l] = 0.0f;
                }
            if ((i & (level_mask << (lev * level_power))) != 0) break;
        }
    }
    for (; i < rows; i++)
        for (int k = 0; k < SUM_ILP; k++)
            for (int l = 0; l < lanes; l++) acc[0][k][l] += x[(i * SUM_ILP + k) * lanes + l];
    for (int lev = 1; lev < SUM_LEVELS; lev++)
        for (int k = 0; k < SUM_ILP; k++)
            for (int l = 0; l < lanes; l++) acc[0][k][l] += acc[lev][k][l];
    for (int64_t t = rows * SUM_ILP; t < nitems; t++) // items left over from the rows
        for (int l = 0; l < lanes; l++) acc[0][0][l] += x[t * lanes + l];
    for (int k = 1; k < SUM_ILP; k++)
        for (int l = 0; l < lanes; l++) acc[0][0][l] += acc[0][k][l];
    for (int l = 0; l < lanes; l++) result[l] = acc[0][0][l];
}

static float torch_sum_f32(const float *x, int64_t n) {
    float lanes[SUM_LANES];
    if (n < SUM_LANES) {
        torch_row_sum(x, n, 1, lanes);
        return lanes[0];
    }
    int64_t nvec = n / SUM_LANES;
    torch_row_sum(x, nvec, SUM_LANES, lanes);
    float total = 0.0f;
    for (int64_t k = nvec * SUM_LANES; k < n; k++) total += x[k];
    for (int l = 0; l < SUM_LANES; l++) total += lanes[l];
    return total;
}

// The sorted dynamic map's 255 f32 midpoints 0.5 * (c[i] + c[i+1]), and bitsandbytes' grid.
static int dynamic_code_of_grid_point(int64_t g, const float *mid) {
    // Grid value -1 + 2g/65535 (f32), then the number of midpoints strictly below it.
    float val = -1.0f + (2.0f * (float)g) / 65535.0f;
    int lo = 0, hi = 255; // answer in [lo, hi]
    while (lo < hi) {
        int m = (lo + hi) / 2;
        if (mid[m] < val) lo = m + 1;
        else hi = m;
    }
    return lo;
}

void ql_double_quantize(const float *absmax, int64_t nblocks, uint8_t *q, float *nested_absmax,
                        float *offset) {
    if (nblocks <= 0) {
        *offset = 0.0f;
        return;
    }
    float map[256], mid[255];
    ql_dynamic_map(map);
    for (int i = 0; i < 255; i++) mid[i] = 0.5f * (map[i] + map[i + 1]);
    const float off = torch_sum_f32(absmax, nblocks) / (float)nblocks;
    *offset = off;
    for (int64_t b0 = 0; b0 < nblocks; b0 += QL_Q_NESTED_BLOCK) {
        int64_t len = nblocks - b0 < QL_Q_NESTED_BLOCK ? nblocks - b0 : QL_Q_NESTED_BLOCK;
        float m = 0.0f;
        int nan = 0;
        for (int64_t i = 0; i < len; i++) {
            float a = fabsf(absmax[b0 + i] - off);
            if (a > m) m = a;
            nan |= a != a;
        }
        if (nan) m = NAN;
        nested_absmax[b0 / QL_Q_NESTED_BLOCK] = m;
        if (m == 0.0f) { // every difference is 0: bitsandbytes stores code 0 (restores offset)
            memset(q + b0, 0, (size_t)len);
            continue;
        }
        const float inv = 1.0f / m;
        for (int64_t i = 0; i < len; i++) {
            float s = (absmax[b0 + i] - off) * inv;
            if (s != s) {
                q[b0 + i] = 127; // the exact 0 of the map
                continue;
            }
            s = s < -1.0f ? -1.0f : (s > 1.0f ? 1.0f : s);
            float t = (s + 1.0f) * 0.5f;
            t = t * 65535.0f;
            t = t + 0.5f;
            q[b0 + i] = (uint8_t)dynamic_code_of_grid_point((int64_t)t, mid);
        }
    }
}

void ql_double_dequantize(const uint8_t *q, const float *nested_absmax, const float *nested_code,
                          float offset, int64_t nblocks, float *absmax) {
    for (int64_t i = 0; i < nblocks; i++) {
        float scaled = nested_code[q[i]] * nested_absmax[i / QL_Q_NESTED_BLOCK];
        absmax[i] = scaled + offset;
    }
}
