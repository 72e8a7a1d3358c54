// B panels of the LoRA extension of the fused 4-bit products (matmul4_internal.h): the dense
// rows D [dr, K] packed in the layout of the level's panel path (f32 [r][nr], or bf16 pairs
// [r/2][nr] for the native BF16 kernel), so the level's own microkernel multiplies them with the
// packed input it already holds. Plain C for every level: the panels hold dr x K values against
// the M x dr x K products they feed, so packing is a small share of the work.
#include "matmul4_internal.h"

// D value of panel column c (of the tile) at reduction step s (of the chunk), 0 outside.
static inline float dense_value(const mm4_job *j, int64_t c0, int64_t c1, int64_t r0, int64_t rc,
                                int64_t c, int64_t s) {
    if (c0 + c >= c1 || s >= rc) return 0.0f;
    // forward: column = row i of D, reduction = k; backward: reduction = row i, column = k
    const float v = j->bwd ? j->d[(r0 + s) * j->K + c0 + c] : j->d[(c0 + c) * j->K + r0 + s];
    return j->bf16 ? mm4_round_bf16(v) : v;
}

void mm4_dense_pack_b(const mm4_job *j, const mm4_gemm_kernels *g, int64_t c0, int64_t c1,
                      int64_t r0, int64_t rc, void *panels, int64_t pstride) {
    const int64_t nr = g->nr, npan = (c1 - c0 + nr - 1) / nr;
    for (int64_t p = 0; p < npan; p++) {
        const int64_t pc = c0 + p * nr;
        if (!g->pair) {
            float *dst = (float *)panels + p * pstride;
            for (int64_t s = 0; s < rc; s++)
                for (int64_t c = 0; c < nr; c++)
                    dst[s * nr + c] = dense_value(j, pc, c1, r0, rc, c, s);
        } else {
            uint32_t *dst = (uint32_t *)panels + p * pstride;
            for (int64_t s = 0; s < (rc + 1) / 2; s++)
                for (int64_t c = 0; c < nr; c++) {
                    uint32_t lo = ql_bf16_round_bits(dense_value(j, pc, c1, r0, rc, c, 2 * s));
                    uint32_t hi = ql_bf16_round_bits(dense_value(j, pc, c1, r0, rc, c, 2 * s + 1));
                    dst[s * nr + c] = lo | hi << 16;
                }
        }
    }
}
