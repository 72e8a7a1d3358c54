// Float conversions: f32 <-> bf16 (round to nearest even, NaN kept as a quiet NaN) and
// f32 <-> f16 (exact IEEE half: subnormals, inf, NaN, round to nearest even). Bit-exact scalar
// code, threaded over fixed chunks for large n; an F16C path for f16 gives identical bits.
#include "kernels_internal.h"

#include <string.h>

#if QL_X86
#include <immintrin.h>
#endif


// ---- bf16 -------------------------------------------------------------------------------------

static inline float bf16_to_f32_1(uint16_t h) { return ql_bits_f32((uint32_t)h << 16); }

// ---- f16 --------------------------------------------------------------------------------------
static inline uint16_t f32_to_f16_1(float f) {
    uint32_t x = ql_f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) { // inf or NaN (NaN: quiet, top payload bits kept)
        if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
        return (uint16_t)(sign | 0x7c00u);
    }
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); // >= 65520 rounds to inf
    if (ax >= 0x38800000u) { // normal half: rebias the exponent, round the 13 dropped bits
        uint32_t v = ax - 0x38000000u;
        v += 0x0fffu + ((v >> 13) & 1u);
        return (uint16_t)(sign | (v >> 13));
    }
    if (ax < 0x33000000u) return sign; // < 2^-25 (2^-25 itself ties to even 0)
    // subnormal half: value = q * 2^-24, q = round(m * 2^(e - 126 - 23 + 24 ... )) via shift
    uint32_t e = ax >> 23;                // 102 .. 112
    uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - e;            // 14 .. 24
    uint32_t q = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) q++;
    return (uint16_t)(sign | q);
}

static inline float f16_to_f32_1(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f) return ql_bits_f32(sign | 0x7f800000u | (m ? (0x400000u | (m << 13)) : 0u));
    if (e != 0) return ql_bits_f32(sign | ((e + 112u) << 23) | (m << 13));
    if (m == 0) return ql_bits_f32(sign);
    // subnormal: normalise
    int ex = 113; // exponent field of 2^-14
    while (!(m & 0x400u)) {
        m <<= 1;
        ex--;
    }
    return ql_bits_f32(sign | ((uint32_t)ex << 23) | ((m & 0x3ffu) << 13));
}

static void bf16_from(const float *x, uint16_t *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = ql_bf16_round_bits(x[i]);
}
static void bf16_to(const uint16_t *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = bf16_to_f32_1(x[i]);
}
static void f16_from(const float *x, uint16_t *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = f32_to_f16_1(x[i]);
}
static void f16_to(const uint16_t *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = f16_to_f32_1(x[i]);
}

#if QL_X86
// F16C: vcvtps2ph (round to nearest even) and vcvtph2ps are exact IEEE conversions and quiet
// NaNs the same way as the scalar code; the tails use the scalar code.
__attribute__((target("avx,f16c"))) static void f16_from_f16c(const float *x, uint16_t *y,
                                                               int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(y + i), h);
    }
    f16_from(x + i, y + i, n - i);
}
__attribute__((target("avx,f16c"))) static void f16_to_f16c(const uint16_t *x, float *y,
                                                             int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
    f16_to(x + i, y + i, n - i);
}
#endif

static int use_f16c(void) {
#if QL_X86
    return ql_impl_level() >= 1 && ql_cpu_has_f16c();
#else
    return 0;
#endif
}

// ---- threading ----------------------------------------------------------------------------------
enum { C_BF16_FROM, C_BF16_TO, C_F16_FROM, C_F16_TO };

typedef struct {
    int kind, f16c;
    const void *x;
    void *y;
    int64_t n;
} conv_job;

static void conv_range(const conv_job *j, int64_t lo, int64_t hi) {
    int64_t m = hi - lo;
    const float *xf = (const float *)j->x + lo;
    const uint16_t *xh = (const uint16_t *)j->x + lo;
    float *yf = (float *)j->y + lo;
    uint16_t *yh = (uint16_t *)j->y + lo;
    switch (j->kind) {
    case C_BF16_FROM: bf16_from(xf, yh, m); break;
    case C_BF16_TO: bf16_to(xh, yf, m); break;
#if QL_X86
    case C_F16_FROM: j->f16c ? f16_from_f16c(xf, yh, m) : f16_from(xf, yh, m); break;
    case C_F16_TO: j->f16c ? f16_to_f16c(xh, yf, m) : f16_to(xh, yf, m); break;
#else
    case C_F16_FROM: f16_from(xf, yh, m); break;
    case C_F16_TO: f16_to(xh, yf, m); break;
#endif
    default: break;
    }
}

static void conv_task(void *ctx, int64_t k) {
    const conv_job *j = ctx;
    int64_t lo = k * QL_EW_CHUNK, hi = lo + QL_EW_CHUNK;
    conv_range(j, lo, hi < j->n ? hi : j->n);
}

static void conv_run(int kind, const void *x, void *y, int64_t n) {
    if (n <= 0) return;
    conv_job j = {.kind = kind, .f16c = use_f16c(), .x = x, .y = y, .n = n};
    if (n < QL_PAR_MIN) conv_range(&j, 0, n);
    else ql_parallel_for((n + QL_EW_CHUNK - 1) / QL_EW_CHUNK, conv_task, &j);
}

void ql_f32_to_bf16(const float *x, uint16_t *y, int64_t n) { conv_run(C_BF16_FROM, x, y, n); }
void ql_bf16_to_f32(const uint16_t *x, float *y, int64_t n) { conv_run(C_BF16_TO, x, y, n); }
void ql_f32_to_f16(const float *x, uint16_t *y, int64_t n) { conv_run(C_F16_FROM, x, y, n); }
void ql_f16_to_f32(const uint16_t *x, float *y, int64_t n) { conv_run(C_F16_TO, x, y, n); }
