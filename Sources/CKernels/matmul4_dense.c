// B panels of the LoRA extension of the fused 4-bit products (matmul4_internal.h): the dense
// rows D [dr, K] packed in the layout of the level's panel path (f32 [r][nr], or bf16 pairs
// [r/2][nr] for the native BF16 kernel), so the level's own microkernel multiplies them with the
// packed input it already holds. Plain C for every level: the panels hold dr x K values against
// the M x dr x K products they feed. Reads run along rows of D; no per-element branches.
#include "matmul4_internal.h"

static inline float dense_round(float v, int round) { return round ? mm4_round_bf16(v) : v; }
static inline uint32_t pair_bits(float lo, float hi) {
    return (uint32_t)ql_bf16_round_bits(lo) | (uint32_t)ql_bf16_round_bits(hi) << 16;
}

void mm4_dense_pack_b(const mm4_job *j, const mm4_gemm_kernels *g, int64_t c0, int64_t c1,
                      int64_t r0, int64_t rc, void *panels, int64_t pstride) {
    const int64_t nr = g->nr, npan = (c1 - c0 + nr - 1) / nr, K = j->K;
    const int64_t steps = g->pair ? (rc + 1) / 2 : rc;
    const int round = j->bf16;
    for (int64_t p = 0; p < npan; p++) {
        const int64_t pc = c0 + p * nr, cols = c1 - pc < nr ? c1 - pc : nr;
        uint32_t *dst = (uint32_t *)panels + p * pstride;
        if (cols < nr) memset(dst, 0, (size_t)(steps * nr) * 4);
        if (!g->pair) {
            float *out = (float *)dst;
            if (!j->bwd) // column c = row pc + c of D, steps along its k
                for (int64_t c = 0; c < cols; c++) {
                    const float *src = j->d + (pc + c) * K + r0;
                    for (int64_t s = 0; s < rc; s++) out[s * nr + c] = dense_round(src[s], round);
                }
            else // step s = row r0 + s of D, columns along its k
                for (int64_t s = 0; s < rc; s++) {
                    const float *src = j->d + (r0 + s) * K + pc;
                    for (int64_t c = 0; c < cols; c++) out[s * nr + c] = dense_round(src[c], round);
                }
        } else if (!j->bwd) {
            for (int64_t c = 0; c < cols; c++) {
                const float *src = j->d + (pc + c) * K + r0;
                int64_t s = 0;
                for (; 2 * s + 1 < rc; s++) dst[s * nr + c] = pair_bits(src[2 * s], src[2 * s + 1]);
                if (2 * s < rc) dst[s * nr + c] = pair_bits(src[2 * s], 0.0f);
            }
        } else {
            for (int64_t s = 0; s < steps; s++) {
                const float *lo = j->d + (r0 + 2 * s) * K + pc;
                if (2 * s + 1 < rc) {
                    const float *hi = lo + K;
                    for (int64_t c = 0; c < cols; c++) dst[s * nr + c] = pair_bits(lo[c], hi[c]);
                } else {
                    for (int64_t c = 0; c < cols; c++) dst[s * nr + c] = pair_bits(lo[c], 0.0f);
                }
            }
        }
    }
}
