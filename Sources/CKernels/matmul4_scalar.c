// Scalar reference of the fused 4-bit matrix products (never deleted): the semantics every SIMD
// level is tested against, and the fallback when a level's scratch memory cannot be had.
//
// Forward y[m, n] = sum_k x[m, k] W[n, k] (+ bias[n]); backward dx[m, k] = sum_n dy[m, n] W[n, k].
// W[n, k] = code[nibble(n*K + k)] * absmax((n*K + k) / block) (the flat row-major element; a
// block may cross rows). Sums run in f32 in natural order (k forward, n backward); the weight is
// dequantized a chunk of one row at a time into a small stack buffer, never as a whole.
// bf16 compute rounds x (dy) and W to bf16 first; products of two bf16 values are exact in f32.
// LoRA extension: h[m, i] = sum_k x[m, k] D[i, k] in k order; backward adds sum_i dh[m, i] D[i, k]
// after W's sum (i order); bf16 compute rounds D and dh too.
#include "matmul4_internal.h"

#define REF_CHUNK 256

void mm4_ref_dequant(const mm4_job *j, int64_t e, int64_t len, float *out, int round) {
    const ql_qweight *w = j->w;
    int64_t b = -1;
    float am = 0.0f;
    for (int64_t i = 0; i < len; i++) {
        int64_t f = e + i, fb = f / w->block;
        if (fb != b) {
            b = fb;
            am = mm4_absmax(w, b);
        }
        float v = j->code[mm4_nibble(w->packed, f)] * am;
        out[i] = round ? mm4_round_bf16(v) : v;
    }
}

static inline float a_value(const mm4_job *j, int64_t m, int64_t r) {
    float v = j->a[m * j->lda + r];
    return j->bf16 ? mm4_round_bf16(v) : v;
}

void mm4_ref_fwd_rows(const mm4_job *j, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    float wbuf[REF_CHUNK];
    const int64_t K = j->K, N = j->N;
    for (int64_t n = n0; n < n1; n++) {
        for (int64_t m = m0; m < m1; m++) j->c[m * N + n] = 0.0f;
        for (int64_t k0 = 0; k0 < K; k0 += REF_CHUNK) {
            int64_t len = K - k0 < REF_CHUNK ? K - k0 : REF_CHUNK;
            mm4_ref_dequant(j, n * K + k0, len, wbuf, j->bf16);
            for (int64_t m = m0; m < m1; m++) {
                float s = j->c[m * N + n];
                for (int64_t k = 0; k < len; k++) s += a_value(j, m, k0 + k) * wbuf[k];
                j->c[m * N + n] = s;
            }
        }
        if (j->bias)
            for (int64_t m = m0; m < m1; m++) j->c[m * N + n] += j->bias[n];
    }
}

static inline float d_value(const mm4_job *j, int64_t i, int64_t k) {
    float v = j->d[i * j->K + k];
    return j->bf16 ? mm4_round_bf16(v) : v;
}

void mm4_ref_dense_fwd(const mm4_job *j, int64_t m0, int64_t m1, int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++)
        for (int64_t m = m0; m < m1; m++) {
            float s = 0.0f;
            for (int64_t k = 0; k < j->K; k++) s += a_value(j, m, k) * d_value(j, i, k);
            j->h[m * j->dr + i] = s;
        }
}

void mm4_ref_bwd_cols(const mm4_job *j, int64_t m0, int64_t m1, int64_t k0, int64_t k1) {
    float wbuf[REF_CHUNK];
    const int64_t K = j->K, N = j->dense_only ? 0 : j->N;
    for (int64_t c0 = k0; c0 < k1; c0 += REF_CHUNK) {
        int64_t len = k1 - c0 < REF_CHUNK ? k1 - c0 : REF_CHUNK;
        if (!j->dense_only)
            for (int64_t m = m0; m < m1; m++)
                for (int64_t k = 0; k < len; k++) j->c[m * K + c0 + k] = 0.0f;
        for (int64_t n = 0; n < N; n++) {
            mm4_ref_dequant(j, n * K + c0, len, wbuf, j->bf16);
            for (int64_t m = m0; m < m1; m++) {
                float d = a_value(j, m, n);
                float *row = j->c + m * K + c0;
                for (int64_t k = 0; k < len; k++) row[k] += d * wbuf[k];
            }
        }
        for (int64_t i = 0; j->d && i < j->dr; i++)
            for (int64_t m = m0; m < m1; m++) {
                float dh = j->dh[m * j->dr + i];
                if (j->bf16) dh = mm4_round_bf16(dh);
                float *row = j->c + m * K + c0;
                for (int64_t k = 0; k < len; k++) row[k] += dh * d_value(j, i, c0 + k);
            }
    }
}
