// ISA levels: CPU detection (cpuid + xgetbv, so the OS must enable the register state too),
// the process-wide current level, QLORA_ISA parsing, and the dispatch-table lookups.
#include "kernels_internal.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if QL_X86
#include <cpuid.h>
#endif

static const char *const level_names[] = {"scalar", "avx2", "avx512", "avx512bf16"};

// Detected features, computed once (racing first callers compute the same value).
static _Atomic int g_best = -1;
static _Atomic int g_f16c = -1;
static _Atomic int g_current = -1;

#if QL_X86
static uint64_t read_xcr0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}
#endif

static void detect(void) {
    int best = QL_ISA_SCALAR, f16c = 0;
#if QL_X86
    unsigned a, b, c, d;
    if (__get_cpuid(1, &a, &b, &c, &d)) {
        int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1;
        int has_f16c = (c >> 29) & 1;
        uint64_t xcr0 = osxsave ? read_xcr0() : 0;
        int ymm_ok = (xcr0 & 0x6) == 0x6;
        int zmm_ok = ymm_ok && (xcr0 & 0xE0) == 0xE0;
        unsigned max_leaf = __get_cpuid_max(0, NULL);
        unsigned b7 = 0, a71 = 0;
        if (max_leaf >= 7) {
            unsigned a7, c7, d7;
            __cpuid_count(7, 0, a7, b7, c7, d7);
            if (a7 >= 1) {
                unsigned bb, cc, dd;
                __cpuid_count(7, 1, a71, bb, cc, dd);
            }
        }
        int avx2 = (b7 >> 5) & 1;
        int f512 = (b7 >> 16) & 1, dq = (b7 >> 17) & 1, bw = (b7 >> 30) & 1, vl = (b7 >> 31) & 1;
        int bf16 = (a71 >> 5) & 1;
        if (avx && ymm_ok) f16c = has_f16c;
        if (avx && avx2 && fma && ymm_ok) {
            best = QL_ISA_AVX2;
            if (f512 && dq && bw && vl && zmm_ok) {
                best = QL_ISA_AVX512;
                if (bf16) best = QL_ISA_AVX512BF16;
            }
        }
    }
#endif
    atomic_store(&g_f16c, f16c);
    atomic_store(&g_best, best);
}

int ql_isa_best(void) {
    int b = atomic_load_explicit(&g_best, memory_order_relaxed);
    if (b < 0) {
        detect();
        b = atomic_load(&g_best);
    }
    return b;
}

int ql_cpu_has_f16c(void) {
    (void)ql_isa_best();
    return atomic_load_explicit(&g_f16c, memory_order_relaxed);
}

int ql_isa_supported(int isa) { return isa >= QL_ISA_SCALAR && isa <= ql_isa_best(); }

int ql_isa_current(void) {
    int c = atomic_load_explicit(&g_current, memory_order_relaxed);
    if (c < 0) {
        int expected = -1;
        atomic_compare_exchange_strong(&g_current, &expected, ql_isa_best());
        c = atomic_load(&g_current);
    }
    return c;
}

int ql_isa_set(int isa) {
    if (!ql_isa_supported(isa)) return -1;
    atomic_store(&g_current, isa);
    return 0;
}

const char *ql_isa_name(int isa) {
    if (isa < 0 || isa > QL_ISA_AVX512BF16) return "unknown";
    return level_names[isa];
}

int ql_isa_parse(const char *name) {
    if (!name) return -1;
    for (int i = 0; i <= QL_ISA_AVX512BF16; i++)
        if (strcmp(name, level_names[i]) == 0) return i;
    return -1;
}

int ql_isa_init_from_env(char *err, size_t errlen) {
    const char *v = getenv("QLORA_ISA");
    if (err && errlen) err[0] = 0;
    if (!v || !*v) return 0;
    int lvl = ql_isa_parse(v);
    if (lvl < 0) {
        if (err && errlen)
            snprintf(err, errlen,
                     "QLORA_ISA=%s is not a known level (scalar, avx2, avx512, avx512bf16)", v);
        return -1;
    }
    if (ql_isa_set(lvl) != 0) {
        if (err && errlen)
            snprintf(err, errlen, "QLORA_ISA=%s is not supported by this CPU (best: %s)", v,
                     ql_isa_name(ql_isa_best()));
        return -1;
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Dispatch: a forced level uses that level or the best implemented one below it.
// ---------------------------------------------------------------------------------------------
int ql_impl_level(void) {
    int c = ql_isa_current();
#if QL_X86
    return c >= QL_ISA_AVX512 ? 2 : c;
#else
    (void)c;
    return 0;
#endif
}

#if QL_X86
static const ql_ew_table *const ew_tables[QL_NLEVELS] = {&ql_ew_scalar, &ql_ew_avx2,
                                                         &ql_ew_avx512};
static const ql_red_table *const red_tables[QL_NLEVELS] = {&ql_red_scalar, &ql_red_avx2,
                                                           &ql_red_avx512};
static const ql_sm_table *const sm_tables[QL_NLEVELS] = {&ql_sm_scalar, &ql_sm_avx2,
                                                         &ql_sm_avx512};
static const ql_opt_table *const opt_tables[QL_NLEVELS] = {&ql_opt_scalar, &ql_opt_avx2,
                                                           &ql_opt_avx512};
static const ql_q4_table *const q4_tables[QL_NLEVELS] = {&ql_q4_scalar, &ql_q4_avx2,
                                                         &ql_q4_avx512};
#else
static const ql_ew_table *const ew_tables[QL_NLEVELS] = {&ql_ew_scalar, &ql_ew_scalar,
                                                         &ql_ew_scalar};
static const ql_red_table *const red_tables[QL_NLEVELS] = {&ql_red_scalar, &ql_red_scalar,
                                                           &ql_red_scalar};
static const ql_sm_table *const sm_tables[QL_NLEVELS] = {&ql_sm_scalar, &ql_sm_scalar,
                                                         &ql_sm_scalar};
static const ql_opt_table *const opt_tables[QL_NLEVELS] = {&ql_opt_scalar, &ql_opt_scalar,
                                                           &ql_opt_scalar};
static const ql_q4_table *const q4_tables[QL_NLEVELS] = {&ql_q4_scalar, &ql_q4_scalar,
                                                         &ql_q4_scalar};
#endif

const ql_ew_table *ql_ew(void) { return ew_tables[ql_impl_level()]; }
const ql_red_table *ql_red(void) { return red_tables[ql_impl_level()]; }
const ql_sm_table *ql_sm(void) { return sm_tables[ql_impl_level()]; }
const ql_opt_table *ql_opt(void) { return opt_tables[ql_impl_level()]; }
const ql_q4_table *ql_q4(void) { return q4_tables[ql_impl_level()]; }
