// AVX-512 kernels of the fused 4-bit matrix products, and the AVX512_BF16 (vdpbf16ps) panel path.
//
// Dequantization in registers: per block a 16-entry table t = code * absmax (rounded to bf16
// for bf16 compute) sits in one zmm; nibbles widened to dword indices are looked up with
// vpermps (only the low 4 index bits count, so the low nibble needs no mask and the high one a
// shift). For bf16 panels the table is 16 bf16 words looked up with vpermw.
//
// Panel path (see matmul4_internal.h): f32 microkernel 12 x 32 (two zmm of output columns,
// 12 rows of A broadcast from a packed [r][12] micro-panel: 24 accumulators), B panels [r][32]
// (forward: W^T tiles, 16 rows dequantized then a 16 x 16 transpose; backward: W row segments).
// The BF16 microkernel has the same shape over bf16 pairs: B panels [r/2][32] dwords (two
// consecutive reduction elements of one column), A micro-panels [r/2][12] dwords, vdpbf16ps.
// Reduction chunks: 512 (f32), 1024 (bf16), so a task's panels (256 columns) fill half of L2.
//
// Small-M path: forward dot products along K with the packed row streamed once: 64-element
// steps (vpmovzxwd + three shifts give four index vectors; x prepared in the matching lane
// order) when K and the block are multiples of 64, else 32-element steps (x prepared as
// [16 even][16 odd]); four accumulator chains per row of x; double-quantized absmax restored
// 16 blocks at a time. Backward: scaled row sums over a column range kept in registers
// (even / odd split, interleaved once at the end).
#include "matmul4_internal.h"

#if QL_X86
#include <immintrin.h>

#define AI static inline __attribute__((always_inline)) QL_TARGET_AVX512
#define KF static QL_TARGET_AVX512
#define QL_TARGET_AVX512BF16 \
    __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16")))
#define AIB static inline __attribute__((always_inline)) QL_TARGET_AVX512BF16
#define KFB static QL_TARGET_AVX512BF16

// Tile of the f32 microkernel: MR rows of A, NR = 32 columns (two zmm).
#define MR 12
#define NR 32
// Reduction chunk of the panel path in elements (overridable with -D for tuning).
#ifndef RC
#define RC 512
#endif
#ifndef RC_BF16
#define RC_BF16 1024
#endif
MM4_CHECK_PANEL(NR, RC, 16, sizeof(float));         // pack_b_f32: 16 rows of f32
MM4_CHECK_PANEL(NR, RC_BF16, 16, sizeof(uint16_t)); // pack_b_bf16: 16 rows of bf16

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------
AI __mmask16 mask16(int64_t n) {
    return n >= 16 ? (__mmask16)0xffff : (n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u));
}

// Round each lane to the nearest bf16 (ties to even), NaN to a quiet NaN; result as f32.
AI __m512 round_bf16_ps(__m512 v) {
    __m512i x = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(_mm512_add_epi32(x, _mm512_set1_epi32(0x7fff)), lsb);
    r = _mm512_and_si512(r, _mm512_set1_epi32((int)0xffff0000u));
    __m512i q = _mm512_and_si512(_mm512_or_si512(x, _mm512_set1_epi32(0x00400000)),
                                 _mm512_set1_epi32((int)0xffff0000u));
    __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    return _mm512_castsi512_ps(_mm512_mask_blend_epi32(nan, r, q));
}

// The 16-entry lookup table of block b: code * absmax (rounded to bf16 if `round`).
AI __m512 block_table(const ql_qweight *w, __m512 code, int64_t b, int round) {
    __m512 t = _mm512_mul_ps(code, _mm512_set1_ps(mm4_absmax(w, b)));
    return round ? round_bf16_ps(t) : t;
}

// 32 elements (16 bytes) in natural order.
AI void lookup32_natural(__m128i v, __m512 t, __m512 *o0, __m512 *o1) {
    __m128i h = _mm_srli_epi16(v, 4); // low nibble of byte i: high nibble of v_i (rest ignored)
    __m128i i0 = _mm_unpacklo_epi8(h, v), i1 = _mm_unpackhi_epi8(h, v);
    *o0 = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(i0), t);
    *o1 = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(i1), t);
}

// 32 elements (16 bytes) split: even elements (high nibbles) and odd elements (low nibbles).
AI void lookup32_split(const uint8_t *src, __m512 t, __m512 *even, __m512 *odd) {
    __m512i d = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)src));
    *even = _mm512_permutexvar_ps(_mm512_srli_epi32(d, 4), t);
    *odd = _mm512_permutexvar_ps(d, t);
}

// out[i] = W_flat[e + i], i < len (any alignment), rounded to bf16 if `round`.
KF void dequant_f32(const mm4_job *j, __m512 code, int64_t e, int64_t len, float *out,
                    int round) {
    const ql_qweight *w = j->w;
    const int64_t blk = w->block, end = e + len;
    int64_t b = e / blk;
    while (e < end) {
        int64_t bend = (b + 1) * blk;
        if (bend > end) bend = end;
        if (e & 1) { // a piece starting inside a byte: its first element alone
            float v = j->code[mm4_nibble(w->packed, e)] * mm4_absmax(w, b);
            *out++ = round ? mm4_round_bf16(v) : v;
            e++;
        }
        const int64_t n = bend - e;
        if (n > 0) {
            const __m512 t = block_table(w, code, b, round);
            const uint8_t *src = w->packed + (e >> 1);
            int64_t i = 0;
            for (; i + 32 <= n; i += 32) {
                __m512 o0, o1;
                lookup32_natural(_mm_loadu_si128((const __m128i *)(src + i / 2)), t, &o0, &o1);
                _mm512_storeu_ps(out + i, o0);
                _mm512_storeu_ps(out + i + 16, o1);
            }
            if (i < n) {
                int64_t r = n - i;
                __m128i v = _mm_maskz_loadu_epi8(mask16((r + 1) / 2), src + i / 2);
                __m512 o0, o1;
                lookup32_natural(v, t, &o0, &o1);
                _mm512_mask_storeu_ps(out + i, mask16(r), o0);
                _mm512_mask_storeu_ps(out + i + 16, mask16(r - 16), o1);
            }
            out += n;
            e = bend;
        }
        if (e == (b + 1) * blk) b++;
    }
}

// Prefetches the packed nibbles of flat elements [e, e + len) (a later row segment).
AI void prefetch_packed(const ql_qweight *w, int64_t e, int64_t len) {
    const uint8_t *p = w->packed + (e >> 1);
    for (int64_t i = 0; i <= len / 2; i += 64) _mm_prefetch((const char *)(p + i), _MM_HINT_T0);
}

// 16 x 16 transpose of 32-bit elements: r[i] lane c -> r[c] lane i.
AI void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    __m512 u[16];
    for (int i = 0; i < 4; i++) {
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
        __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
        u[4 * i + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    // u[4i + q] lane L = column 4L + q of rows 4i..4i+3
    for (int q = 0; q < 4; q++) {
        __m512 v0 = _mm512_shuffle_f32x4(u[q], u[4 + q], 0x44);
        __m512 v1 = _mm512_shuffle_f32x4(u[q], u[4 + q], 0xEE);
        __m512 v2 = _mm512_shuffle_f32x4(u[8 + q], u[12 + q], 0x44);
        __m512 v3 = _mm512_shuffle_f32x4(u[8 + q], u[12 + q], 0xEE);
        r[q] = _mm512_shuffle_f32x4(v0, v2, 0x88);
        r[4 + q] = _mm512_shuffle_f32x4(v0, v2, 0xDD);
        r[8 + q] = _mm512_shuffle_f32x4(v1, v3, 0x88);
        r[12 + q] = _mm512_shuffle_f32x4(v1, v3, 0xDD);
    }
}

// Transposes a [16][ld] tile of 32-bit values (cols columns, cols <= ld, ld % 16 == 0) into
// out[k * ostride + 0..15] for k < round16(cols).
AI void transpose_rows16(const float *tmp, int64_t ld, int64_t cols, float *out,
                         int64_t ostride) {
    for (int64_t k = 0; k < cols; k += 16) {
        __m512 r[16];
        for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(tmp + i * ld + k);
        transpose16(r);
        for (int i = 0; i < 16; i++) _mm512_storeu_ps(out + (k + i) * ostride, r[i]);
    }
}

// ---------------------------------------------------------------------------------------------
// Panel path, f32 (also bf16 compute without BF16 instructions: values rounded while packing)
// ---------------------------------------------------------------------------------------------
KF void pack_b_f32(const mm4_job *j, int64_t c0, int64_t c1, int64_t r0, int64_t rc,
                   void *panels_v, int64_t pstride, void *tmp_v) {
    float *panels = panels_v, *tmp = tmp_v;
    const __m512 code = _mm512_loadu_ps(j->code);
    const int64_t K = j->K;
    const int64_t ncols = c1 - c0, npan = (ncols + NR - 1) / NR;
    if (!j->bwd) { // panel[k][c] = W[c0 + c, r0 + k]: dequantize 16 rows, transpose
        const int64_t ld = (rc + 15) & ~(int64_t)15;
        for (int64_t g = 0; g < npan * NR; g += 16) {
            for (int r = 0; r < 16; r++) {
                float *row = tmp + r * ld;
                int64_t n = c0 + g + r, done = 0;
                if (g + 16 + r < ncols) prefetch_packed(j->w, (n + 16) * K + r0, rc);
                if (g + r < ncols) {
                    dequant_f32(j, code, n * K + r0, rc, row, j->bf16);
                    done = rc;
                }
                for (int64_t k = done; k < ld; k++) row[k] = 0.0f;
            }
            transpose_rows16(tmp, ld, rc, panels + (g / NR) * pstride + (g % NR), NR);
        }
    } else { // panel[n][c] = W[r0 + n, c0 + c]: row segments
        const int64_t width = npan * NR;
        for (int64_t n = 0; n < rc; n++) {
            if (n + 8 < rc) prefetch_packed(j->w, (r0 + n + 8) * K + c0, ncols);
            dequant_f32(j, code, (r0 + n) * K + c0, ncols, tmp, j->bf16);
            for (int64_t c = ncols; c < width; c++) tmp[c] = 0.0f;
            for (int64_t p = 0; p < npan; p++) {
                float *dst = panels + p * pstride + n * NR;
                for (int v = 0; v < NR; v += 16)
                    _mm512_storeu_ps(dst + v, _mm512_loadu_ps(tmp + p * NR + v));
            }
        }
    }
}

// Loads row m of A, elements [k, k + 16) (zero outside M x R), rounded if bf16.
AI __m512 a_row16(const mm4_job *j, int64_t m, int64_t k) {
    if (m >= j->M) return _mm512_setzero_ps();
    __m512 v = _mm512_maskz_loadu_ps(mask16(j->R - k), j->a + m * j->lda + k);
    return j->bf16 ? round_bf16_ps(v) : v;
}

// Micro-panels [k][MR] of rows [m0, m0 + rows): 16 x 16 transposes of MR rows (+ zero rows).
KF void pack_a_f32(const mm4_job *j, int64_t m0, int64_t rows, void *dst_v) {
    float *dst = dst_v;
    const int64_t rs = mm4_a_rstride(j->R, 0);
    const __mmask16 keep = mask16(MR);
    for (int64_t q = 0; q * MR < rows; q++) {
        float *blk = dst + q * MR * rs;
        for (int64_t k = 0; k < rs; k += 16) {
            __m512 r[16];
            for (int i = 0; i < 16; i++)
                r[i] = i < MR ? a_row16(j, m0 + q * MR + i, k) : _mm512_setzero_ps();
            transpose16(r);
            for (int i = 0; i < 16; i++) _mm512_mask_storeu_ps(blk + (k + i) * MR, keep, r[i]);
        }
    }
}

// C tile: the accumulators start at zero (the C lines are prefetched meanwhile); the store adds
// the previous partial sum unless this is the first chunk, then the bias on the last.
AI void tile_prefetch(int mr, const float *c, int64_t ldc) {
    for (int i = 0; i < mr; i++) {
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + 16), _MM_HINT_T0);
    }
}

AI void tile_store(__m512 acc[][2], int mr, float *c, int64_t ldc, int ncols, int first,
                   const float *bias) {
    const __mmask16 m0 = mask16(ncols), m1 = mask16(ncols - 16);
    __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps();
    if (bias) {
        b0 = _mm512_maskz_loadu_ps(m0, bias);
        b1 = _mm512_maskz_loadu_ps(m1, bias + 16);
    }
    for (int i = 0; i < mr; i++) {
        __m512 v0 = acc[i][0], v1 = acc[i][1];
        if (!first) {
            v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, c + i * ldc), v0);
            v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, c + i * ldc + 16), v1);
        }
        if (bias) {
            v0 = _mm512_add_ps(v0, b0);
            v1 = _mm512_add_ps(v1, b1);
        }
        _mm512_mask_storeu_ps(c + i * ldc, m0, v0);
        _mm512_mask_storeu_ps(c + i * ldc + 16, m1, v1);
    }
}

// The register-tiled microkernel: C[mr x 32] (+)= A[mr x rc] B[rc x 32], mr a constant.
AI void ukernel_f32_tile(const int mr, const float *a, const float *b, int64_t rc, float *c,
                         int64_t ldc, int ncols, int first, const float *bias) {
    __m512 acc[MR][2];
    for (int i = 0; i < mr; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    if (!first) tile_prefetch(mr, c, ldc);
    for (int64_t k = 0; k < rc; k++) {
        const __m512 b0 = _mm512_loadu_ps(b + k * NR), b1 = _mm512_loadu_ps(b + k * NR + 16);
        for (int i = 0; i < mr; i++) {
            const __m512 ai = _mm512_set1_ps(a[k * MR + i]);
            acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
        }
    }
    tile_store(acc, mr, c, ldc, ncols, first, bias);
}

#define MR_CASES(F)                                                                              \
    switch (mr) {                                                                                \
    case 1: F(1); break;                                                                         \
    case 2: F(2); break;                                                                         \
    case 3: F(3); break;                                                                         \
    case 4: F(4); break;                                                                         \
    case 5: F(5); break;                                                                         \
    case 6: F(6); break;                                                                         \
    case 7: F(7); break;                                                                         \
    case 8: F(8); break;                                                                         \
    case 9: F(9); break;                                                                         \
    case 10: F(10); break;                                                                       \
    case 11: F(11); break;                                                                       \
    default: F(12); break;                                                                       \
    }

KF void ukernel_f32(int mr, const void *a, const void *b, int64_t rc, float *c, int64_t ldc,
                    int ncols, int first, const float *bias) {
#define CALL_F32(R) ukernel_f32_tile(R, a, b, rc, c, ldc, ncols, first, bias)
    MR_CASES(CALL_F32)
#undef CALL_F32
}

const mm4_gemm_kernels mm4_gemm_avx512 = {
    .mr = MR, .nr = NR, .rc = RC, .pair = 0,
    .pack_b = pack_b_f32, .pack_a = pack_a_f32, .ukernel = ukernel_f32,
};

// ---------------------------------------------------------------------------------------------
// Panel path, native BF16 (vdpbf16ps)
// ---------------------------------------------------------------------------------------------
// The table of block b as 16 bf16 words, repeated in both halves (vpermw reads 5 index bits).
AI __m512i block_table_bf16(const ql_qweight *w, __m512 code, int64_t b) {
    __m512 t = block_table(w, code, b, 1);
    __m256i words = _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(t), 16));
    return _mm512_inserti64x4(_mm512_castsi256_si512(words), words, 1);
}

// 32 bf16 (16 bytes of nibbles) in natural order: word 2i = high nibble of byte i, 2i+1 = low.
AI __m512i lookup32_bf16(__m128i v, __m512i t) {
    __m512i d = _mm512_cvtepu8_epi32(v);
    __m512i idx = _mm512_or_si512(_mm512_srli_epi32(d, 4), _mm512_slli_epi32(d, 16));
    return _mm512_permutexvar_epi16(idx, t);
}

// out[i] = bf16(W_flat[e + i]) for i < len (any alignment).
KF void dequant_bf16(const mm4_job *j, __m512 code, int64_t e, int64_t len, uint16_t *out) {
    const ql_qweight *w = j->w;
    const int64_t blk = w->block, end = e + len;
    int64_t b = e / blk;
    while (e < end) {
        int64_t bend = (b + 1) * blk;
        if (bend > end) bend = end;
        if (e & 1) {
            *out++ = ql_bf16_round_bits(j->code[mm4_nibble(w->packed, e)] * mm4_absmax(w, b));
            e++;
        }
        const int64_t n = bend - e;
        if (n > 0) {
            const __m512i t = block_table_bf16(w, code, b);
            const uint8_t *src = w->packed + (e >> 1);
            int64_t i = 0;
            for (; i + 32 <= n; i += 32)
                _mm512_storeu_si512(
                    out + i, lookup32_bf16(_mm_loadu_si128((const __m128i *)(src + i / 2)), t));
            if (i < n) {
                int64_t r = n - i;
                __m128i v = _mm_maskz_loadu_epi8(mask16((r + 1) / 2), src + i / 2);
                __mmask32 m = r >= 32 ? 0xffffffffu : ((1u << r) - 1u);
                _mm512_mask_storeu_epi16(out + i, m, lookup32_bf16(v, t));
            }
            out += n;
            e = bend;
        }
        if (e == (b + 1) * blk) b++;
    }
}

KF void pack_b_bf16(const mm4_job *j, int64_t c0, int64_t c1, int64_t r0, int64_t rc,
                    void *panels_v, int64_t pstride, void *tmp_v) {
    uint32_t *panels = panels_v;
    const __m512 code = _mm512_loadu_ps(j->code);
    const int64_t K = j->K;
    const int64_t ncols = c1 - c0, npan = (ncols + NR - 1) / NR;
    if (!j->bwd) { // panel[k/2][c] = (W[c0+c, r0+k], W[c0+c, r0+k+1]): 16 rows, dword transpose
        uint16_t *tmp = tmp_v;
        const int64_t ld = (rc + 31) & ~(int64_t)31; // bf16 per row; ld / 2 dwords
        for (int64_t g = 0; g < npan * NR; g += 16) {
            for (int r = 0; r < 16; r++) {
                uint16_t *row = tmp + r * ld;
                int64_t n = c0 + g + r, done = 0;
                if (g + 16 + r < ncols) prefetch_packed(j->w, (n + 16) * K + r0, rc);
                if (g + r < ncols) {
                    dequant_bf16(j, code, n * K + r0, rc, row);
                    done = rc;
                }
                for (int64_t k = done; k < ld; k++) row[k] = 0;
            }
            transpose_rows16((const float *)tmp, ld / 2, (rc + 1) / 2,
                             (float *)(panels + (g / NR) * pstride + (g % NR)), NR);
        }
    } else { // panel[n/2][c] = (W[r0+n, c0+c], W[r0+n+1, c0+c])
        const int64_t width = npan * NR;
        uint16_t *t0 = tmp_v, *t1 = t0 + width;
        for (int64_t n = 0; n < rc; n += 2) {
            if (n + 9 < rc) {
                prefetch_packed(j->w, (r0 + n + 8) * K + c0, ncols);
                prefetch_packed(j->w, (r0 + n + 9) * K + c0, ncols);
            }
            dequant_bf16(j, code, (r0 + n) * K + c0, ncols, t0);
            if (n + 1 < rc) dequant_bf16(j, code, (r0 + n + 1) * K + c0, ncols, t1);
            else memset(t1, 0, (size_t)ncols * sizeof(uint16_t));
            for (int64_t c = ncols; c < width; c++) t0[c] = t1[c] = 0;
            for (int64_t p = 0; p < npan; p++) {
                uint32_t *dst = panels + p * pstride + (n / 2) * NR;
                for (int v = 0; v < NR; v += 16) {
                    const __m256i *s0 = (const __m256i *)(t0 + p * NR + v);
                    const __m256i *s1 = (const __m256i *)(t1 + p * NR + v);
                    __m512i lo = _mm512_cvtepu16_epi32(_mm256_loadu_si256(s0));
                    __m512i hi = _mm512_cvtepu16_epi32(_mm256_loadu_si256(s1));
                    _mm512_storeu_si512(dst + v, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
                }
            }
        }
    }
}

// Micro-panels [k/2][MR] of bf16 pairs of rows [m0, m0 + rows): per 32 elements of a row, 16
// dwords of pairs; then a 16 x 16 dword transpose.
KF void pack_a_bf16(const mm4_job *j, int64_t m0, int64_t rows, void *dst_v) {
    uint32_t *dst = dst_v;
    const int64_t rs = mm4_a_rstride(j->R, 1); // dwords per row
    const __mmask16 keep = mask16(MR);
    for (int64_t q = 0; q * MR < rows; q++) {
        uint32_t *blk = dst + q * MR * rs;
        for (int64_t p = 0; p < rs; p += 16) {
            __m512 r[16];
            for (int i = 0; i < 16; i++) {
                if (i >= MR) {
                    r[i] = _mm512_setzero_ps();
                    continue;
                }
                const int64_t m = m0 + q * MR + i, k = 2 * p;
                __m512i lo = _mm512_srli_epi32(_mm512_castps_si512(a_row16(j, m, k)), 16);
                __m512i hi = _mm512_srli_epi32(_mm512_castps_si512(a_row16(j, m, k + 16)), 16);
                __m256i wlo = _mm512_cvtepi32_epi16(lo), whi = _mm512_cvtepi32_epi16(hi);
                r[i] = _mm512_castsi512_ps(_mm512_inserti64x4(_mm512_castsi256_si512(wlo), whi, 1));
            }
            transpose16(r);
            for (int i = 0; i < 16; i++)
                _mm512_mask_storeu_ps((float *)(blk + (p + i) * MR), keep, r[i]);
        }
    }
}

AIB void ukernel_bf16_tile(const int mr, const uint32_t *a, const uint32_t *b, int64_t rc,
                           float *c, int64_t ldc, int ncols, int first, const float *bias) {
    __m512 acc[MR][2];
    for (int i = 0; i < mr; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    if (!first) tile_prefetch(mr, c, ldc);
    const int64_t np = (rc + 1) / 2;
    for (int64_t k = 0; k < np; k++) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512(b + k * NR);
        const __m512bh b1 = (__m512bh)_mm512_loadu_si512(b + k * NR + 16);
        for (int i = 0; i < mr; i++) {
            const __m512bh ai = (__m512bh)_mm512_set1_epi32((int)a[k * MR + i]);
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], ai, b0);
            acc[i][1] = _mm512_dpbf16_ps(acc[i][1], ai, b1);
        }
    }
    tile_store(acc, mr, c, ldc, ncols, first, bias);
}

KFB void ukernel_bf16(int mr, const void *a, const void *b, int64_t rc, float *c, int64_t ldc,
                      int ncols, int first, const float *bias) {
#define CALL_BF16(R) ukernel_bf16_tile(R, a, b, rc, c, ldc, ncols, first, bias)
    MR_CASES(CALL_BF16)
#undef CALL_BF16
}

const mm4_gemm_kernels mm4_gemm_avx512bf16 = {
    .mr = MR, .nr = NR, .rc = RC_BF16, .pair = 1,
    .pack_b = pack_b_bf16, .pack_a = pack_a_bf16, .ukernel = ukernel_bf16,
};

// ---------------------------------------------------------------------------------------------
// Small-M path
// ---------------------------------------------------------------------------------------------
// Rows in 64-element steps when every 64 elements of a row share a block (K and the block
// multiples of 64), else in 32-element steps (K and the block multiples of 32).
AI int small_step64(const mm4_job *j) { return j->K % 64 == 0 && j->w->block % 64 == 0; }

// 64 elements (32 bytes): word i of the bytes, widened to dword i, holds elements 4i..4i+3;
// its nibbles at shifts 0, 4, 8, 12 are elements 4i+1, 4i, 4i+3, 4i+2 (lane i of vectors 0..3).
static const int step64_elem[4] = {1, 0, 3, 2};

// The 256-entry lookup nested_code[q] of 16 indices: four 64-entry groups of two two-source
// permutes, blended by index bits 5, 6 and 7.
AI __m512 lookup256(__m512i q, const float *tab) {
    const __mmask16 b5 = _mm512_test_epi32_mask(q, _mm512_set1_epi32(32));
    const __mmask16 b6 = _mm512_test_epi32_mask(q, _mm512_set1_epi32(64));
    const __mmask16 b7 = _mm512_test_epi32_mask(q, _mm512_set1_epi32(128));
    __m512 r[4];
    for (int g = 0; g < 4; g++) {
        __m512 lo = _mm512_permutex2var_ps(_mm512_loadu_ps(tab + 64 * g), q,
                                           _mm512_loadu_ps(tab + 64 * g + 16));
        __m512 hi = _mm512_permutex2var_ps(_mm512_loadu_ps(tab + 64 * g + 32), q,
                                           _mm512_loadu_ps(tab + 64 * g + 48));
        r[g] = _mm512_mask_blend_ps(b5, lo, hi);
    }
    return _mm512_mask_blend_ps(b7, _mm512_mask_blend_ps(b6, r[0], r[1]),
                                _mm512_mask_blend_ps(b6, r[2], r[3]));
}

// absmax of blocks [b0, b0 + nb): the plain array, or restored 16 at a time into buf (the same
// two roundings as mm4_absmax).
AI const float *absmax_run(const ql_qweight *w, int64_t b0, int64_t nb, float *buf) {
    if (w->absmax) return w->absmax + b0;
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (int64_t i = 0; i < nb; i += 16) {
        const int64_t b = b0 + i, cnt = nb - i < 16 ? nb - i : 16;
        const __mmask16 m = mask16(cnt);
        __m512i q = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, w->absmax_q + b));
        __m512 code = lookup256(q, w->nested_code);
        // the 16 blocks span at most two nested blocks
        const int64_t g0 = b / QL_Q_NESTED_BLOCK, g1 = (b + cnt - 1) / QL_Q_NESTED_BLOCK;
        const __mmask16 second = _mm512_cmpge_epi32_mask(
            _mm512_add_epi32(_mm512_set1_epi32((int)(b % QL_Q_NESTED_BLOCK)), lane),
            _mm512_set1_epi32(QL_Q_NESTED_BLOCK));
        __m512 nested = _mm512_mask_blend_ps(second, _mm512_set1_ps(w->nested_absmax[g0]),
                                             _mm512_set1_ps(w->nested_absmax[g1]));
        __m512 scaled = _mm512_mul_ps(code, nested);
        _mm512_mask_storeu_ps(buf + i, m, _mm512_add_ps(scaled, _mm512_set1_ps(w->offset)));
    }
    return buf;
}

// A window of restored absmax values over the blocks of a run of rows: refilled (up to
// ABS_WINDOW blocks, never past block `last`) when a row needs a block outside it, so rows
// share one restore and the values are long stored when they are read.
#define ABS_WINDOW 1024
typedef struct {
    int64_t b0, b1; // blocks [b0, b1) are in am
    const float *am;
    float buf[ABS_WINDOW];
} absmax_window;

// absmax of blocks [b, b + *count) with *count >= 1 (at most up to `want_end`).
AI const float *window_at(const ql_qweight *w, absmax_window *win, int64_t b, int64_t want_end,
                          int64_t last, int64_t *count) {
    if (b < win->b0 || b >= win->b1) {
        int64_t end = last + 1;
        if (!w->absmax && b + ABS_WINDOW < end) end = b + ABS_WINDOW;
        win->am = absmax_run(w, b, end - b, win->buf);
        win->b0 = b;
        win->b1 = end;
    }
    *count = (want_end < win->b1 ? want_end : win->b1) - b;
    return win->am + (b - win->b0);
}

AI __m512 table_of(__m512 code, float absmax, int round) {
    __m512 t = _mm512_mul_ps(code, _mm512_set1_ps(absmax));
    return round ? round_bf16_ps(t) : t;
}

// xprep[m] = x[m] permuted within each step (64: vectors of elements 4i + step64_elem[v];
// 32: [16 even][16 odd]), rounded to bf16 if j->bf16.
// Output n of each of the M rows: the four accumulators summed, plus the bias (small-M paths).
AI void store_row_sums(const mm4_job *j, __m512 acc[][4], int M, int64_t N, int64_t n) {
    for (int m = 0; m < M; m++) {
        __m512 sum = _mm512_add_ps(_mm512_add_ps(acc[m][0], acc[m][1]), _mm512_add_ps(acc[m][2], acc[m][3]));
        float v = _mm512_reduce_add_ps(sum);
        if (j->bias) v += j->bias[n];
        j->c[m * N + n] = v;
    }
}

KF void prep_x(const mm4_job *j, float *xp) {
    const int step64 = small_step64(j);
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i od = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
    __m512i sel[4];
    for (int v = 0; v < 4; v++) // lanes 0..7 from elements 0..31, lanes 8..15 from 32..63
        sel[v] = _mm512_add_epi32(
            _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28),
            _mm512_set1_epi32(step64_elem[v]));
    for (int64_t m = 0; m < j->M; m++) {
        const float *x = j->a + m * j->lda;
        float *o = xp + m * j->K;
        for (int64_t k = 0; k < j->K; k += step64 ? 64 : 32) {
            __m512 out[4];
            int nv;
            if (step64) {
                __m512 x0 = _mm512_loadu_ps(x + k), x1 = _mm512_loadu_ps(x + k + 16);
                __m512 x2 = _mm512_loadu_ps(x + k + 32), x3 = _mm512_loadu_ps(x + k + 48);
                for (int v = 0; v < 4; v++)
                    out[v] = _mm512_mask_blend_ps(0xff00, _mm512_permutex2var_ps(x0, sel[v], x1),
                                                  _mm512_permutex2var_ps(x2, sel[v], x3));
                nv = 4;
            } else {
                __m512 v0 = _mm512_loadu_ps(x + k), v1 = _mm512_loadu_ps(x + k + 16);
                out[0] = _mm512_permutex2var_ps(v0, ev, v1);
                out[1] = _mm512_permutex2var_ps(v0, od, v1);
                nv = 2;
            }
            for (int v = 0; v < nv; v++)
                _mm512_storeu_ps(o + k + 16 * v, j->bf16 ? round_bf16_ps(out[v]) : out[v]);
        }
    }
}

// One 64-element step of row n against the M rows of x: acc[m][v] += vector v.
AI void fwd_step64(const int M, const uint8_t *src, const float *xk, int64_t K, __m512 t,
                   __m512 acc[][4]) {
    const __m512i d = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)src));
    const __m512 w0 = _mm512_permutexvar_ps(d, t);
    const __m512 w1 = _mm512_permutexvar_ps(_mm512_srli_epi32(d, 4), t);
    const __m512 w2 = _mm512_permutexvar_ps(_mm512_srli_epi32(d, 8), t);
    const __m512 w3 = _mm512_permutexvar_ps(_mm512_srli_epi32(d, 12), t);
    for (int m = 0; m < M; m++) {
        const float *xm = xk + m * K;
        acc[m][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xm), acc[m][0]);
        acc[m][1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xm + 16), acc[m][1]);
        acc[m][2] = _mm512_fmadd_ps(w2, _mm512_loadu_ps(xm + 32), acc[m][2]);
        acc[m][3] = _mm512_fmadd_ps(w3, _mm512_loadu_ps(xm + 48), acc[m][3]);
    }
}

// One 32-element step: acc[m][0] += even elements, acc[m][1] += odd ones; then the two pairs
// of accumulators swap, so consecutive steps alternate between them.
AI void fwd_step32(const int M, const uint8_t *src, const float *xk, int64_t K, __m512 t,
                   __m512 acc[][4]) {
    __m512 we, wo;
    lookup32_split(src, t, &we, &wo);
    for (int m = 0; m < M; m++) {
        __m512 e = _mm512_fmadd_ps(we, _mm512_loadu_ps(xk + m * K), acc[m][0]);
        __m512 o = _mm512_fmadd_ps(wo, _mm512_loadu_ps(xk + m * K + 16), acc[m][1]);
        acc[m][0] = acc[m][2];
        acc[m][1] = acc[m][3];
        acc[m][2] = e;
        acc[m][3] = o;
    }
}

// y[m, n] for n in [n0, n1), all M (a constant <= MM4_SMALL_M) rows of x. Four accumulator
// chains per row of x (the four vectors of a 64-step; or even / odd lanes of alternating
// 32-steps), summed as (a0 + a1) + (a2 + a3) at the end.
AI void fwd_rows_m(const int M, const int step64, const int round, const mm4_job *j, int64_t n0,
                   int64_t n1) {
    const ql_qweight *w = j->w;
    const __m512 code = _mm512_loadu_ps(j->code);
    const int64_t K = j->K, N = j->N, blk = w->block;
    const int whole = step64 && K % blk == 0; // rows of whole blocks of blk / 64 steps
    absmax_window win = {.b0 = 0, .b1 = 0};
    const int64_t last = (n1 * K - 1) / blk; // the last block of these rows
    for (int64_t n = n0; n < n1; n++) {
        __m512 acc[MM4_SMALL_M][4];
        for (int m = 0; m < M; m++)
            for (int v = 0; v < 4; v++) acc[m][v] = _mm512_setzero_ps();
        const float *xk = j->xprep; // prepared x at the current element
        int64_t e = n * K, b = e / blk;
        const int64_t end = e + K, blast = (end - 1) / blk;
        const uint8_t *src = w->packed + (e >> 1); // whole rows start on a byte
        while (b <= blast) {
            int64_t nb;
            const float *am = window_at(w, &win, b, blast + 1, last, &nb);
            if (whole) {
                const int64_t steps = blk / 64;
                for (int64_t q = 0; q < nb; q++) {
                    const __m512 t = table_of(code, am[q], round);
                    for (int64_t i = 0; i < steps; i++, src += 32, xk += 64)
                        fwd_step64(M, src, xk, K, t, acc);
                }
                b += nb;
                continue;
            }
            for (int64_t q = 0; q < nb; q++, b++) {
                const int64_t bend = (b + 1) * blk < end ? (b + 1) * blk : end;
                const __m512 t = table_of(code, am[q], round);
                if (step64)
                    for (; e < bend; e += 64, xk += 64)
                        fwd_step64(M, w->packed + (e >> 1), xk, K, t, acc);
                else
                    for (; e < bend; e += 32, xk += 32)
                        fwd_step32(M, w->packed + (e >> 1), xk, K, t, acc);
            }
        }
        store_row_sums(j, acc, M, N, n);
    }
}

KF void fwd_rows(const mm4_job *j, int64_t n0, int64_t n1) {
    const int s64 = small_step64(j), r = j->bf16 != 0;
#define FWD_ROWS(MV)                                                                             \
    do {                                                                                         \
        if (s64) {                                                                               \
            if (r) fwd_rows_m(MV, 1, 1, j, n0, n1);                                              \
            else fwd_rows_m(MV, 1, 0, j, n0, n1);                                                \
        } else {                                                                                 \
            if (r) fwd_rows_m(MV, 0, 1, j, n0, n1);                                              \
            else fwd_rows_m(MV, 0, 0, j, n0, n1);                                                \
        }                                                                                        \
    } while (0)
    switch (j->M) {
    case 1: FWD_ROWS(1); break;
    case 2: FWD_ROWS(2); break;
    case 3: FWD_ROWS(3); break;
    default: FWD_ROWS(4); break;
    }
#undef FWD_ROWS
}

// dx[m, k0 .. k0 + 32*nch) for all M rows: acc[m][c] holds the even / odd elements of chunk c.
// NCH chunks at most (a constant); nch of them valid.
AI void bwd_cols_m(const int M, const int NCH, const mm4_job *j, int64_t k0, int nch) {
    const ql_qweight *w = j->w;
    const __m512 code = _mm512_loadu_ps(j->code);
    const int64_t K = j->K, N = j->N, blk = w->block;
    const int round = j->bf16;
    __m512 acc[MM4_SMALL_M][NCH][2];
    for (int m = 0; m < M; m++)
        for (int c = 0; c < NCH; c++) acc[m][c][0] = acc[m][c][1] = _mm512_setzero_ps();
    const int rows_aligned = K % blk == 0;
    int64_t kb[NCH]; // block of chunk c relative to the row's first block (aligned rows)
    for (int c = 0; c < NCH; c++) kb[c] = (k0 + 32 * c) / blk;
    for (int64_t n = 0; n < N; n++) {
        __m512 d[MM4_SMALL_M];
        for (int m = 0; m < M; m++) {
            float v = j->a[m * j->lda + n];
            d[m] = _mm512_set1_ps(round ? mm4_round_bf16(v) : v);
        }
        const int64_t e0 = n * K + k0;
        int64_t prev = -1;
        __m512 t = _mm512_setzero_ps();
        for (int c = 0; c < NCH; c++) {
            if (c >= nch) break;
            int64_t b = rows_aligned ? n * (K / blk) + kb[c] : (e0 + 32 * c) / blk;
            if (b != prev) {
                t = block_table(w, code, b, round);
                prev = b;
            }
            __m512 we, wo;
            lookup32_split(w->packed + ((e0 + 32 * c) >> 1), t, &we, &wo);
            for (int m = 0; m < M; m++) {
                acc[m][c][0] = _mm512_fmadd_ps(d[m], we, acc[m][c][0]);
                acc[m][c][1] = _mm512_fmadd_ps(d[m], wo, acc[m][c][1]);
            }
        }
    }
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
    for (int m = 0; m < M; m++)
        for (int c = 0; c < NCH; c++) {
            if (c >= nch) break;
            float *o = j->c + m * K + k0 + 32 * c;
            _mm512_storeu_ps(o, _mm512_permutex2var_ps(acc[m][c][0], lo, acc[m][c][1]));
            _mm512_storeu_ps(o + 16, _mm512_permutex2var_ps(acc[m][c][0], hi, acc[m][c][1]));
        }
}

// Columns per call: 256 / M rounded down to whole chunks (16 or 12 accumulators).
KF void bwd_cols(const mm4_job *j, int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1;) {
        int64_t left = (k1 - k) / 32;
        switch (j->M) {
        case 1: {
            int nch = left < 8 ? (int)left : 8;
            bwd_cols_m(1, 8, j, k, nch);
            k += 32 * nch;
            break;
        }
        case 2: {
            int nch = left < 4 ? (int)left : 4;
            bwd_cols_m(2, 4, j, k, nch);
            k += 32 * nch;
            break;
        }
        case 3: {
            int nch = left < 2 ? (int)left : 2;
            bwd_cols_m(3, 2, j, k, nch);
            k += 32 * nch;
            break;
        }
        default: {
            int nch = left < 2 ? (int)left : 2;
            bwd_cols_m(4, 2, j, k, nch);
            k += 32 * nch;
            break;
        }
        }
    }
}

const mm4_small_kernels mm4_small_avx512 = {
    .prep_x = prep_x, .fwd_rows = fwd_rows, .bwd_cols = bwd_cols,
};

// ---------------------------------------------------------------------------------------------
// Small-M forward with native BF16 (64-element steps; other layouts and f32 use the above)
// ---------------------------------------------------------------------------------------------
// Per 64 elements: the 32 bytes widened to words; word i >> 4 indexes element 2i, word i itself
// element 2i + 1 (vpermw reads 5 index bits, the table is repeated in both halves). x is
// prepared per 64-step as 32 bf16 of the even elements, then 32 of the odd ones, so vdpbf16ps
// pairs (x[4i], x[4i+2]) with (W[4i], W[4i+2]) and likewise for the odd elements.

// Table of a block as bf16 words (both halves): vcvtne2ps2bf16 rounds like ql_f32_to_bf16
// except that it reads denormal inputs as zero, so a block whose table could hold a denormal
// (absmax below 1e-30: |code| >= 0.005 for every nonzero code) takes the integer rounding.
AIB __m512i table_bf16_words(__m512 code, float absmax) {
    const __m512 t = _mm512_mul_ps(code, _mm512_set1_ps(absmax));
    if (!(__builtin_fabsf(absmax) < 1e-30f)) return (__m512i)_mm512_cvtne2ps_pbh(t, t);
    __m256i h = _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(round_bf16_ps(t)), 16));
    return _mm512_inserti64x4(_mm512_castsi256_si512(h), h, 1);
}

KFB void prep_x_bf16(const mm4_job *j, float *xp_f) {
    if (!j->bf16 || !small_step64(j)) {
        prep_x(j, xp_f);
        return;
    }
    uint16_t *xp = (uint16_t *)xp_f;
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i od = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
    for (int64_t m = 0; m < j->M; m++) {
        const float *x = j->a + m * j->lda;
        uint16_t *o = xp + m * j->K;
        for (int64_t k = 0; k < j->K; k += 64) {
            __m512 v[4];
            for (int q = 0; q < 4; q++) v[q] = round_bf16_ps(_mm512_loadu_ps(x + k + 16 * q));
            const __m512 halves[4] = {
                _mm512_permutex2var_ps(v[0], ev, v[1]), _mm512_permutex2var_ps(v[2], ev, v[3]),
                _mm512_permutex2var_ps(v[0], od, v[1]), _mm512_permutex2var_ps(v[2], od, v[3])};
            for (int q = 0; q < 4; q++) {
                __m512i bits = _mm512_srli_epi32(_mm512_castps_si512(halves[q]), 16);
                _mm256_storeu_si256((__m256i *)(o + k + 16 * q), _mm512_cvtepi32_epi16(bits));
            }
        }
    }
}

// One 64-element step into the accumulator pair `set` (0 or 1; consecutive steps alternate).
AIB void fwd_step64_bf16(const int M, const int set, const uint8_t *src, const uint16_t *xk,
                         int64_t K, __m512i t, __m512 acc[][4]) {
    const __m512i wd = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)src));
    const __m512bh we = (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(wd, 4), t);
    const __m512bh wo = (__m512bh)_mm512_permutexvar_epi16(wd, t);
    for (int m = 0; m < M; m++) {
        const uint16_t *xm = xk + m * K;
        acc[m][2 * set] = _mm512_dpbf16_ps(acc[m][2 * set], we, (__m512bh)_mm512_loadu_si512(xm));
        acc[m][2 * set + 1] =
            _mm512_dpbf16_ps(acc[m][2 * set + 1], wo, (__m512bh)_mm512_loadu_si512(xm + 32));
    }
}

AIB void fwd_rows_bf16_m(const int M, const mm4_job *j, int64_t n0, int64_t n1) {
    const ql_qweight *w = j->w;
    const __m512 code = _mm512_loadu_ps(j->code);
    const int64_t K = j->K, N = j->N, blk = w->block;
    const uint16_t *xprep = (const uint16_t *)j->xprep;
    const int whole = K % blk == 0; // rows of whole blocks of blk / 64 steps
    absmax_window win = {.b0 = 0, .b1 = 0};
    const int64_t last = (n1 * K - 1) / blk; // the last block of these rows
    for (int64_t n = n0; n < n1; n++) {
        __m512 acc[MM4_SMALL_M][4];
        for (int m = 0; m < M; m++)
            for (int v = 0; v < 4; v++) acc[m][v] = _mm512_setzero_ps();
        const uint16_t *xk = xprep;
        int64_t e = n * K, b = e / blk;
        const int64_t end = e + K, blast = (end - 1) / blk;
        const uint8_t *src = w->packed + (e >> 1);
        int par = 0; // accumulator pair of the next step
        while (b <= blast) {
            int64_t nb;
            const float *am = window_at(w, &win, b, blast + 1, last, &nb);
            if (whole && blk == 64) { // one step per block: blocks in pairs
                int64_t q = 0;
                for (; q + 1 < nb; q += 2, src += 64, xk += 128) {
                    fwd_step64_bf16(M, 0, src, xk, K, table_bf16_words(code, am[q]), acc);
                    fwd_step64_bf16(M, 1, src + 32, xk + 64, K, table_bf16_words(code, am[q + 1]),
                                    acc);
                }
                if (q < nb) { // an odd count: the last block
                    fwd_step64_bf16(M, 0, src, xk, K, table_bf16_words(code, am[q]), acc);
                    src += 32;
                    xk += 64;
                }
                b += nb;
                e = b * blk;
                continue;
            }
            for (int64_t q = 0; q < nb; q++, b++) {
                const int64_t bend = (b + 1) * blk < end ? (b + 1) * blk : end;
                const __m512i t = table_bf16_words(code, am[q]);
                for (; e < bend; e += 64, xk += 64, par ^= 1) {
                    if (par) fwd_step64_bf16(M, 1, w->packed + (e >> 1), xk, K, t, acc);
                    else fwd_step64_bf16(M, 0, w->packed + (e >> 1), xk, K, t, acc);
                }
            }
        }
        store_row_sums(j, acc, M, N, n);
    }
}

KFB void fwd_rows_bf16(const mm4_job *j, int64_t n0, int64_t n1) {
    if (!j->bf16 || !small_step64(j)) {
        fwd_rows(j, n0, n1);
        return;
    }
    switch (j->M) {
    case 1: fwd_rows_bf16_m(1, j, n0, n1); break;
    case 2: fwd_rows_bf16_m(2, j, n0, n1); break;
    case 3: fwd_rows_bf16_m(3, j, n0, n1); break;
    default: fwd_rows_bf16_m(4, j, n0, n1); break;
    }
}

const mm4_small_kernels mm4_small_avx512bf16 = {
    .prep_x = prep_x_bf16, .fwd_rows = fwd_rows_bf16, .bwd_cols = bwd_cols,
};

#endif
