// Counter-based random numbers: Philox4x32-10 (Salmon et al., Random123), key = the 64-bit
// seed. Uniform element i takes 32-bit word (offset+i) % 4 of the block with counter
// (offset+i) / 4. Normal element i is Box-Muller on words 0 and 1 of its own block, counter
// offset+i with the third counter word set to 1 (so normal and uniform streams of one seed
// differ). Element values depend only on (seed, offset + i): not on threads, splits or ISA.
#include "kernels_internal.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static inline void philox4x32_10(uint32_t c[4], uint64_t seed) {
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    uint32_t c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c0 = n0;
        c1 = (uint32_t)p1;
        c2 = n2;
        c3 = (uint32_t)p0;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    c[0] = c0;
    c[1] = c1;
    c[2] = c2;
    c[3] = c3;
}

void ql_philox4x32_10(const uint32_t ctr[4], uint64_t seed, uint32_t out[4]) {
    uint32_t c[4] = {ctr[0], ctr[1], ctr[2], ctr[3]};
    philox4x32_10(c, seed);
    for (int i = 0; i < 4; i++) out[i] = c[i];
}

static inline float u24(uint32_t w) { return (float)(w >> 8) * (1.0f / 16777216.0f); }

// Uniform [0, 1) for global indices [first, first + n).
static void uniform_range(uint64_t seed, uint64_t first, float *out, int64_t n) {
    int64_t i = 0;
    while (i < n) {
        uint64_t idx = first + (uint64_t)i;
        uint64_t blk = idx >> 2;
        uint32_t c[4] = {(uint32_t)blk, (uint32_t)(blk >> 32), 0u, 0u};
        philox4x32_10(c, seed);
        for (unsigned w = (unsigned)(idx & 3u); w < 4u && i < n; w++, i++) out[i] = u24(c[w]);
    }
}

// Standard normal for global indices [first, first + n): Box-Muller, cos branch.
static void normal_range(uint64_t seed, uint64_t first, float *out, int64_t n) {
    const float two_pi = 6.283185307179586f;
    for (int64_t i = 0; i < n; i++) {
        uint64_t idx = first + (uint64_t)i;
        uint32_t c[4] = {(uint32_t)idx, (uint32_t)(idx >> 32), 1u, 0u};
        philox4x32_10(c, seed);
        float u1 = (float)((c[0] >> 8) + 1u) * (1.0f / 16777216.0f); // (0, 1]
        float u2 = u24(c[1]);                                         // [0, 1)
        out[i] = sqrtf(-2.0f * logf(u1)) * cosf(two_pi * u2);
    }
}

typedef struct {
    int normal;
    uint64_t seed, offset;
    float *out;
    int64_t n;
} rng_job;

static void rng_task(void *ctx, int64_t k) {
    const rng_job *j = ctx;
    int64_t lo = k * QL_EW_CHUNK, hi = lo + QL_EW_CHUNK;
    if (hi > j->n) hi = j->n;
    if (j->normal) normal_range(j->seed, j->offset + (uint64_t)lo, j->out + lo, hi - lo);
    else uniform_range(j->seed, j->offset + (uint64_t)lo, j->out + lo, hi - lo);
}

static void rng_run(int normal, uint64_t seed, uint64_t offset, float *out, int64_t n) {
    if (n <= 0) return;
    rng_job j = {.normal = normal, .seed = seed, .offset = offset, .out = out, .n = n};
    if (n < QL_PAR_MIN) {
        if (normal) normal_range(seed, offset, out, n);
        else uniform_range(seed, offset, out, n);
    } else ql_parallel_for((n + QL_EW_CHUNK - 1) / QL_EW_CHUNK, rng_task, &j);
}

void ql_rand_uniform_f32(uint64_t seed, uint64_t offset, float *out, int64_t n) {
    rng_run(0, seed, offset, out, n);
}

void ql_rand_normal_f32(uint64_t seed, uint64_t offset, float *out, int64_t n) {
    rng_run(1, seed, offset, out, n);
}
