// AVX2 + FMA kernels of the fused 4-bit matrix products (bf16 compute runs these f32 kernels on
// values rounded to bf16; AVX2 has no bf16 dot product).
//
// Dequantization in registers: vpermps reads 3 index bits, so the 16-entry table of a block
// (code * absmax) is two ymm halves; a lookup permutes both and blends on index bit 3.
// Panel path (see matmul4_internal.h): microkernel MR x 16 (two ymm of columns, MR = 6 rows of A
// broadcast); B panels [r][16] (forward: 8 rows dequantized then an 8 x 8 transpose; backward:
// W row segments); A packed once per pass into [r][6] micro-panels.
// Small-M path: forward dot products along K (16 elements per step in natural order, x
// prepared as a bf16-rounded copy when needed); backward scaled row sums accumulated in the dx
// rows of the task's column range (they stay in L1).
#include "matmul4_internal.h"

#if QL_X86
#include <immintrin.h>

#define AI static inline __attribute__((always_inline)) QL_TARGET_AVX2
#define KF static QL_TARGET_AVX2

#define MR 6
#define NR 16
#define RC 256
MM4_CHECK_PANEL(NR, RC, 8, sizeof(float)); // pack_b: 8 rows of f32, transposed 8 x 8
_Static_assert(NR == 16, "pack_b's backward copies two 8-float vectors per panel row");

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------
// Lane mask of the first n of 8 lanes (all-ones lanes), for maskload / maskstore.
AI __m256i mask8(int64_t n) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    int c = n < 0 ? 0 : (n > 8 ? 8 : (int)n);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(c), lane);
}

AI __m256 round_bf16_ps(__m256 v) {
    __m256i x = _mm256_castps_si256(v);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_add_epi32(_mm256_add_epi32(x, _mm256_set1_epi32(0x7fff)), lsb);
    r = _mm256_and_si256(r, _mm256_set1_epi32((int)0xffff0000u));
    __m256i q = _mm256_and_si256(_mm256_or_si256(x, _mm256_set1_epi32(0x00400000)),
                                 _mm256_set1_epi32((int)0xffff0000u));
    __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
    return _mm256_blendv_ps(_mm256_castsi256_ps(r), _mm256_castsi256_ps(q), nan);
}

// The 16-entry table of a block, as two halves.
typedef struct {
    __m256 lo, hi;
} table16;

AI table16 make_table(const float *code, float absmax, int round) {
    __m256 s = _mm256_set1_ps(absmax);
    table16 t = {_mm256_mul_ps(_mm256_loadu_ps(code), s),
                 _mm256_mul_ps(_mm256_loadu_ps(code + 8), s)};
    if (round) {
        t.lo = round_bf16_ps(t.lo);
        t.hi = round_bf16_ps(t.hi);
    }
    return t;
}

// t[idx & 15] per lane (index bits above 3 ignored).
AI __m256 lookup8(__m256i idx, table16 t) {
    __m256 a = _mm256_permutevar8x32_ps(t.lo, idx), b = _mm256_permutevar8x32_ps(t.hi, idx);
    return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}

// 16 elements (8 bytes) in natural order.
AI void lookup16_natural(__m128i v, table16 t, __m256 *o0, __m256 *o1) {
    __m128i h = _mm_srli_epi16(v, 4);
    __m128i il = _mm_unpacklo_epi8(h, v); // [hi0 lo0 hi1 lo1 ...] in the low nibbles
    *o0 = lookup8(_mm256_cvtepu8_epi32(il), t);
    *o1 = lookup8(_mm256_cvtepu8_epi32(_mm_srli_si128(il, 8)), t);
}

// Loads the bytes [p, p + nbytes) (nbytes <= 8) into the low lanes, zero elsewhere.
AI __m128i load_bytes8(const uint8_t *p, int64_t nbytes) {
    if (nbytes >= 8) return _mm_loadl_epi64((const __m128i *)p);
    uint8_t b[8] = {0};
    memcpy(b, p, (size_t)nbytes);
    return _mm_loadl_epi64((const __m128i *)b);
}

// out[i] = W_flat[e + i], i < len (any alignment), rounded to bf16 if `round`.
KF void dequant_f32(const mm4_job *j, int64_t e, int64_t len, float *out, int round) {
    const ql_qweight *w = j->w;
    const int64_t blk = w->block, end = e + len;
    int64_t b = e / blk;
    while (e < end) {
        int64_t bend = (b + 1) * blk;
        if (bend > end) bend = end;
        if (e & 1) {
            float v = j->code[mm4_nibble(w->packed, e)] * mm4_absmax(w, b);
            *out++ = round ? mm4_round_bf16(v) : v;
            e++;
        }
        const int64_t n = bend - e;
        if (n > 0) {
            const table16 t = make_table(j->code, mm4_absmax(w, b), round);
            const uint8_t *src = w->packed + (e >> 1);
            int64_t i = 0;
            for (; i + 16 <= n; i += 16) {
                __m256 o0, o1;
                lookup16_natural(_mm_loadl_epi64((const __m128i *)(src + i / 2)), t, &o0, &o1);
                _mm256_storeu_ps(out + i, o0);
                _mm256_storeu_ps(out + i + 8, o1);
            }
            if (i < n) {
                int64_t r = n - i;
                __m256 o0, o1;
                lookup16_natural(load_bytes8(src + i / 2, (r + 1) / 2), t, &o0, &o1);
                _mm256_maskstore_ps(out + i, mask8(r), o0);
                _mm256_maskstore_ps(out + i + 8, mask8(r - 8), o1);
            }
            out += n;
            e = bend;
        }
        if (e == (b + 1) * blk) b++;
    }
}

// 8 x 8 transpose: r[i] lane c -> r[c] lane i.
AI void transpose8(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {
        __m256d a = _mm256_castps_pd(t[4 * i]), b = _mm256_castps_pd(t[4 * i + 1]);
        __m256d c = _mm256_castps_pd(t[4 * i + 2]), d = _mm256_castps_pd(t[4 * i + 3]);
        u[4 * i + 0] = _mm256_castpd_ps(_mm256_unpacklo_pd(a, c));
        u[4 * i + 1] = _mm256_castpd_ps(_mm256_unpackhi_pd(a, c));
        u[4 * i + 2] = _mm256_castpd_ps(_mm256_unpacklo_pd(b, d));
        u[4 * i + 3] = _mm256_castpd_ps(_mm256_unpackhi_pd(b, d));
    }
    // u[4i + q] lane L = column 4L + q of rows 4i..4i+3
    for (int q = 0; q < 4; q++) {
        r[q] = _mm256_permute2f128_ps(u[q], u[4 + q], 0x20);
        r[4 + q] = _mm256_permute2f128_ps(u[q], u[4 + q], 0x31);
    }
}

AI void prefetch_packed(const ql_qweight *w, int64_t e, int64_t len) {
    const uint8_t *p = w->packed + (e >> 1);
    for (int64_t i = 0; i <= len / 2; i += 64) _mm_prefetch((const char *)(p + i), _MM_HINT_T0);
}

// ---------------------------------------------------------------------------------------------
// Panel path
// ---------------------------------------------------------------------------------------------
KF void pack_b_f32(const mm4_job *j, int64_t c0, int64_t c1, int64_t r0, int64_t rc,
                   void *panels_v, int64_t pstride, void *tmp_v) {
    float *panels = panels_v, *tmp = tmp_v;
    const int64_t K = j->K;
    const int64_t ncols = c1 - c0, npan = (ncols + NR - 1) / NR;
    if (!j->bwd) { // panel[k][c] = W[c0 + c, r0 + k]: dequantize 8 rows, transpose
        const int64_t ld = (rc + 7) & ~(int64_t)7;
        for (int64_t g = 0; g < npan * NR; g += 8) {
            for (int r = 0; r < 8; r++) {
                float *row = tmp + r * ld;
                int64_t n = c0 + g + r, done = 0;
                if (g + 8 + r < ncols) prefetch_packed(j->w, (n + 8) * K + r0, rc);
                if (g + r < ncols) {
                    dequant_f32(j, n * K + r0, rc, row, j->bf16);
                    done = rc;
                }
                for (int64_t k = done; k < ld; k++) row[k] = 0.0f;
            }
            float *out = panels + (g / NR) * pstride + (g % NR);
            for (int64_t k = 0; k < rc; k += 8) {
                __m256 r[8];
                for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(tmp + i * ld + k);
                transpose8(r);
                for (int i = 0; i < 8; i++) _mm256_storeu_ps(out + (k + i) * NR, r[i]);
            }
        }
    } else { // panel[n][c] = W[r0 + n, c0 + c]
        const int64_t width = npan * NR;
        for (int64_t n = 0; n < rc; n++) {
            if (n + 8 < rc) prefetch_packed(j->w, (r0 + n + 8) * K + c0, ncols);
            dequant_f32(j, (r0 + n) * K + c0, ncols, tmp, j->bf16);
            for (int64_t c = ncols; c < width; c++) tmp[c] = 0.0f;
            for (int64_t p = 0; p < npan; p++) {
                float *dst = panels + p * pstride + n * NR;
                _mm256_storeu_ps(dst, _mm256_loadu_ps(tmp + p * NR));
                _mm256_storeu_ps(dst + 8, _mm256_loadu_ps(tmp + p * NR + 8));
            }
        }
    }
}

AI __m256 a_row8(const mm4_job *j, int64_t m, int64_t k) {
    if (m >= j->M) return _mm256_setzero_ps();
    __m256 v = _mm256_maskload_ps(j->a + m * j->lda + k, mask8(j->R - k));
    return j->bf16 ? round_bf16_ps(v) : v;
}

// Micro-panels [k][MR] of rows [m0, m0 + rows): 8 x 8 transposes of MR rows (+ zero rows).
KF void pack_a_f32(const mm4_job *j, int64_t m0, int64_t rows, void *dst_v) {
    float *dst = dst_v;
    const int64_t rs = mm4_a_rstride(j->R, 0);
    const __m256i keep = mask8(MR);
    for (int64_t q = 0; q * MR < rows; q++) {
        float *blk = dst + q * MR * rs;
        for (int64_t k = 0; k < rs; k += 8) {
            __m256 r[8];
            for (int i = 0; i < 8; i++)
                r[i] = i < MR ? a_row8(j, m0 + q * MR + i, k) : _mm256_setzero_ps();
            transpose8(r);
            for (int i = 0; i < 8; i++) _mm256_maskstore_ps(blk + (k + i) * MR, keep, r[i]);
        }
    }
}

// The register-tiled microkernel: C[mr x 16] (+)= A[mr x rc] B[rc x 16], mr a constant.
AI void ukernel_tile(const int mr, const float *a, const float *b, int64_t rc, float *c,
                     int64_t ldc, int ncols, int first, const float *bias) {
    __m256 acc[MR][2];
    for (int i = 0; i < mr; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    if (!first)
        for (int i = 0; i < mr; i++) {
            _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
            _mm_prefetch((const char *)(c + i * ldc + 15), _MM_HINT_T0);
        }
    for (int64_t k = 0; k < rc; k++) {
        const __m256 b0 = _mm256_loadu_ps(b + k * NR), b1 = _mm256_loadu_ps(b + k * NR + 8);
        for (int i = 0; i < mr; i++) {
            const __m256 ai = _mm256_broadcast_ss(a + k * MR + i);
            acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
        }
    }
    const __m256i m0 = mask8(ncols), m1 = mask8(ncols - 8);
    __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
    if (bias) {
        b0 = _mm256_maskload_ps(bias, m0);
        b1 = _mm256_maskload_ps(bias + 8, m1);
    }
    for (int i = 0; i < mr; i++) {
        __m256 v0 = acc[i][0], v1 = acc[i][1];
        if (!first) {
            v0 = _mm256_add_ps(_mm256_maskload_ps(c + i * ldc, m0), v0);
            v1 = _mm256_add_ps(_mm256_maskload_ps(c + i * ldc + 8, m1), v1);
        }
        if (bias) {
            v0 = _mm256_add_ps(v0, b0);
            v1 = _mm256_add_ps(v1, b1);
        }
        _mm256_maskstore_ps(c + i * ldc, m0, v0);
        _mm256_maskstore_ps(c + i * ldc + 8, m1, v1);
    }
}

KF void ukernel(int mr, const void *a, const void *b, int64_t rc, float *c, int64_t ldc,
                int ncols, int first, const float *bias) {
    switch (mr) {
    case 1: ukernel_tile(1, a, b, rc, c, ldc, ncols, first, bias); break;
    case 2: ukernel_tile(2, a, b, rc, c, ldc, ncols, first, bias); break;
    case 3: ukernel_tile(3, a, b, rc, c, ldc, ncols, first, bias); break;
    case 4: ukernel_tile(4, a, b, rc, c, ldc, ncols, first, bias); break;
    case 5: ukernel_tile(5, a, b, rc, c, ldc, ncols, first, bias); break;
    default: ukernel_tile(6, a, b, rc, c, ldc, ncols, first, bias); break;
    }
}

const mm4_gemm_kernels mm4_gemm_avx2 = {
    .mr = MR, .nr = NR, .rc = RC, .pair = 0,
    .pack_b = pack_b_f32, .pack_a = pack_a_f32, .ukernel = ukernel,
};

// ---------------------------------------------------------------------------------------------
// Small-M path
// ---------------------------------------------------------------------------------------------
// xprep = x, rounded to bf16 if j->bf16 (natural order).
KF void prep_x(const mm4_job *j, float *xp) {
    for (int64_t m = 0; m < j->M; m++)
        for (int64_t k = 0; k < j->K; k += 8) {
            __m256 v = _mm256_loadu_ps(j->a + m * j->lda + k);
            _mm256_storeu_ps(xp + m * j->K + k, j->bf16 ? round_bf16_ps(v) : v);
        }
}

// y[m, n] for n in [n0, n1): per 32 elements four lookups of 8; two accumulators per row of x
// (first and second 16 of a 32-step), summed at the end.
AI void fwd_rows_m(const int M, const mm4_job *j, int64_t n0, int64_t n1) {
    const ql_qweight *w = j->w;
    const int64_t K = j->K, N = j->N, blk = w->block;
    for (int64_t n = n0; n < n1; n++) {
        __m256 acc[MM4_SMALL_M][4];
        for (int m = 0; m < M; m++)
            for (int v = 0; v < 4; v++) acc[m][v] = _mm256_setzero_ps();
        int64_t e = n * K, b = e / blk;
        const int64_t end = e + K;
        const float *xk = j->xprep;
        while (e < end) {
            int64_t bend = (b + 1) * blk;
            if (bend > end) bend = end;
            const table16 t = make_table(j->code, mm4_absmax(w, b), j->bf16);
            for (; e < bend; e += 32, xk += 32) {
                __m256 v[4];
                const __m128i *src = (const __m128i *)(w->packed + e / 2);
                lookup16_natural(_mm_loadl_epi64(src), t, &v[0], &v[1]);
                lookup16_natural(_mm_loadl_epi64((const __m128i *)((const uint8_t *)src + 8)), t,
                                 &v[2], &v[3]);
                for (int m = 0; m < M; m++)
                    for (int q = 0; q < 4; q++)
                        acc[m][q] =
                            _mm256_fmadd_ps(v[q], _mm256_loadu_ps(xk + m * K + 8 * q), acc[m][q]);
            }
            b++;
        }
        for (int m = 0; m < M; m++) {
            __m256 s = _mm256_add_ps(_mm256_add_ps(acc[m][0], acc[m][1]),
                                     _mm256_add_ps(acc[m][2], acc[m][3]));
            __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
            h = _mm_add_ps(h, _mm_movehl_ps(h, h));
            h = _mm_add_ss(h, _mm_movehdup_ps(h));
            float v = _mm_cvtss_f32(h);
            if (j->bias) v += j->bias[n];
            j->c[m * N + n] = v;
        }
    }
}

KF void fwd_rows(const mm4_job *j, int64_t n0, int64_t n1) {
    switch (j->M) {
    case 1: fwd_rows_m(1, j, n0, n1); break;
    case 2: fwd_rows_m(2, j, n0, n1); break;
    case 3: fwd_rows_m(3, j, n0, n1); break;
    default: fwd_rows_m(4, j, n0, n1); break;
    }
}

// dx[m, k0:k1) = sum_n dy[m, n] W[n, k0:k1): per row of W, 16 elements at a time dequantized
// and added into the dx rows (L1-resident for a task's range), in n order.
AI void bwd_cols_m(const int M, const mm4_job *j, int64_t k0, int64_t k1) {
    const ql_qweight *w = j->w;
    const int64_t K = j->K, N = j->N, blk = w->block;
    for (int m = 0; m < M; m++)
        for (int64_t k = k0; k < k1; k += 8)
            _mm256_storeu_ps(j->c + m * K + k, _mm256_setzero_ps());
    for (int64_t n = 0; n < N; n++) {
        __m256 d[MM4_SMALL_M];
        for (int m = 0; m < M; m++) {
            float v = j->a[m * j->lda + n];
            d[m] = _mm256_set1_ps(j->bf16 ? mm4_round_bf16(v) : v);
        }
        const int64_t row = n * K, end = row + k1;
        int64_t e = row + k0, b = e / blk;
        while (e < end) {
            int64_t bend = (b + 1) * blk;
            if (bend > end) bend = end;
            const table16 t = make_table(j->code, mm4_absmax(w, b), j->bf16);
            for (; e < bend; e += 16) {
                __m256 v0, v1;
                lookup16_natural(_mm_loadl_epi64((const __m128i *)(w->packed + e / 2)), t, &v0,
                                 &v1);
                for (int m = 0; m < M; m++) {
                    float *dst = j->c + m * K + (e - row);
                    _mm256_storeu_ps(dst, _mm256_fmadd_ps(d[m], v0, _mm256_loadu_ps(dst)));
                    _mm256_storeu_ps(dst + 8, _mm256_fmadd_ps(d[m], v1, _mm256_loadu_ps(dst + 8)));
                }
            }
            b++;
        }
    }
}

KF void bwd_cols(const mm4_job *j, int64_t k0, int64_t k1) {
    switch (j->M) {
    case 1: bwd_cols_m(1, j, k0, k1); break;
    case 2: bwd_cols_m(2, j, k0, k1); break;
    case 3: bwd_cols_m(3, j, k0, k1); break;
    default: bwd_cols_m(4, j, k0, k1); break;
    }
}

const mm4_small_kernels mm4_small_avx2 = {
    .prep_x = prep_x, .fwd_rows = fwd_rows, .bwd_cols = bwd_cols,
};

#endif
