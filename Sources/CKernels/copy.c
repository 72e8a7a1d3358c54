// ql_strided_copy: N-d gather of a strided source into a contiguous destination (transpose,
// permute, slice, broadcast materialisation). Dims are collapsed first; rows whose innermost
// source stride is 1 are memcpy'd; a transposed innermost pair is copied in cache tiles;
// anything else is an element loop. Large copies thread over fixed groups of rows.
#include "kernels_internal.h"

#include <string.h>

#define TILE 32

typedef struct {
    size_t es;
    int nd;
    int64_t sh[8], st[8]; // collapsed shape and source strides (elements)
    const char *src;
    char *dst;
    int64_t inner;  // sh[nd-1]
    int tiled;      // innermost pair transposed: units are [sh[nd-2], inner] planes
    int64_t nunits; // rows of `inner` elements, or planes when tiled
    int64_t ulen;   // length of a unit along the split axis: inner (rows) or sh[nd-2] (planes)
    int64_t ppu;    // pieces per unit (a long unit is split along its axis) ...
    int64_t piece;  // ... of this many elements / plane rows
    int64_t upt;    // units per task when ppu == 1
} cp_job;

// Element offset of unit u over the first `k` dims.
static int64_t unit_offset(const cp_job *j, int64_t u, int k) {
    int64_t off = 0;
    for (int d = k - 1; d >= 0; d--) {
        off += (u % j->sh[d]) * j->st[d];
        u /= j->sh[d];
    }
    return off;
}

static void copy_row(const cp_job *j, const char *s, char *d, int64_t n, int64_t stride) {
    size_t es = j->es;
    if (stride == 1) {
        memcpy(d, s, (size_t)n * es);
        return;
    }
    switch (es) {
    case 1:
        for (int64_t i = 0; i < n; i++) d[i] = s[i * stride];
        break;
    case 2: {
        for (int64_t i = 0; i < n; i++) memcpy(d + 2 * i, s + 2 * i * stride, 2);
        break;
    }
    case 4: {
        for (int64_t i = 0; i < n; i++) memcpy(d + 4 * i, s + 4 * i * stride, 4);
        break;
    }
    case 8:
        for (int64_t i = 0; i < n; i++) memcpy(d + 8 * i, s + 8 * i * stride, 8);
        break;
    default:
        for (int64_t i = 0; i < n; i++) memcpy(d + es * i, s + (ptrdiff_t)es * i * stride, es);
        break;
    }
}

// Rows [r0, r1) of one [R, C] plane: dst[r][c] = src[r*sr + c*sc], in TILE x TILE blocks.
static inline __attribute__((always_inline)) void plane_es(size_t es, const char *s, char *d,
                                                           int64_t r0, int64_t r1, int64_t C,
                                                           int64_t sr, int64_t sc) {
    for (int64_t rb = r0; rb < r1; rb += TILE) {
        int64_t re = rb + TILE < r1 ? rb + TILE : r1;
        for (int64_t cb = 0; cb < C; cb += TILE) {
            int64_t ce = cb + TILE < C ? cb + TILE : C;
            for (int64_t r = rb; r < re; r++)
                for (int64_t c = cb; c < ce; c++)
                    memcpy(d + (size_t)(r * C + c) * es,
                           s + (ptrdiff_t)(r * sr + c * sc) * (ptrdiff_t)es, es);
        }
    }
}

static void copy_plane(const cp_job *j, const char *s, char *d, int64_t r0, int64_t r1, int64_t C,
                       int64_t sr, int64_t sc) {
    switch (j->es) {
    case 1: plane_es(1, s, d, r0, r1, C, sr, sc); break;
    case 2: plane_es(2, s, d, r0, r1, C, sr, sc); break;
    case 4: plane_es(4, s, d, r0, r1, C, sr, sc); break;
    case 8: plane_es(8, s, d, r0, r1, C, sr, sc); break;
    default: plane_es(j->es, s, d, r0, r1, C, sr, sc); break;
    }
}

// Part [lo, hi) (along the unit's axis) of unit u.
static void cp_unit(const cp_job *j, int64_t u, int64_t lo, int64_t hi) {
    size_t es = j->es;
    int nd = j->nd;
    if (j->tiled) {
        int64_t C = j->inner, plane = j->sh[nd - 2] * C;
        int64_t off = unit_offset(j, u, nd - 2);
        copy_plane(j, j->src + (ptrdiff_t)off * (ptrdiff_t)es, j->dst + (size_t)(u * plane) * es,
                   lo, hi, C, j->st[nd - 2], j->st[nd - 1]);
        return;
    }
    int64_t s1 = j->st[nd - 1];
    int64_t off = unit_offset(j, u, nd - 1) + lo * s1;
    copy_row(j, j->src + (ptrdiff_t)off * (ptrdiff_t)es,
             j->dst + (size_t)(u * j->inner + lo) * es, hi - lo, s1);
}

static void cp_task(void *ctx, int64_t task) {
    const cp_job *j = ctx;
    if (j->ppu > 1) {
        int64_t u = task / j->ppu, p = task % j->ppu;
        int64_t lo = p * j->piece, hi = lo + j->piece;
        cp_unit(j, u, lo, hi < j->ulen ? hi : j->ulen);
        return;
    }
    int64_t u0 = task * j->upt, u1 = u0 + j->upt;
    if (u1 > j->nunits) u1 = j->nunits;
    for (int64_t u = u0; u < u1; u++) cp_unit(j, u, 0, j->ulen);
}

void ql_strided_copy(size_t elsize, int ndim, const int64_t *shape, const void *src,
                     const int64_t *src_strides, void *dst) {
    if (elsize == 0) return;
    cp_job j = {.es = elsize, .src = src, .dst = dst};
    int nd = 0;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] <= 0) return;
        if (shape[d] == 1) continue;
        if (nd > 0 && j.st[nd - 1] == src_strides[d] * shape[d]) {
            j.sh[nd - 1] *= shape[d];
            j.st[nd - 1] = src_strides[d];
        } else {
            j.sh[nd] = shape[d];
            j.st[nd] = src_strides[d];
            nd++;
        }
    }
    if (nd == 0) {
        j.sh[0] = 1;
        j.st[0] = 1;
        nd = 1;
    }
    j.nd = nd;
    j.inner = j.sh[nd - 1];
    int64_t total = 1;
    for (int d = 0; d < nd; d++) total *= j.sh[d];
    // Transposed innermost pair (inner stride not 1, the one above it 1): copy in tiles.
    j.tiled = nd >= 2 && j.st[nd - 1] != 1 && j.st[nd - 2] == 1 && j.sh[nd - 2] >= 8 &&
              j.inner >= 8;
    int64_t per_len; // elements per step along the unit axis
    if (j.tiled) {
        j.ulen = j.sh[nd - 2];
        j.nunits = total / (j.ulen * j.inner);
        per_len = j.inner;
    } else {
        j.ulen = j.inner;
        j.nunits = total / j.inner;
        per_len = 1;
    }
    int64_t task_el = (int64_t)(((size_t)QL_EW_CHUNK * 4) / elsize); // ~128 KiB per task
    if (task_el < 1) task_el = 1;
    int64_t ulen_el = j.ulen * per_len;
    if (total * (int64_t)elsize < (int64_t)QL_PAR_MIN * 4) {
        j.ppu = 1;
        j.upt = j.nunits;
        cp_task(&j, 0);
        return;
    }
    if (ulen_el >= 2 * task_el) { // split each unit along its axis
        j.piece = task_el / per_len;
        if (j.tiled) j.piece = (j.piece + TILE - 1) / TILE * TILE;
        if (j.piece < 1) j.piece = 1;
        j.ppu = (j.ulen + j.piece - 1) / j.piece;
        ql_parallel_for(j.nunits * j.ppu, cp_task, &j);
    } else {
        j.ppu = 1;
        j.upt = task_el / ulen_el > 0 ? task_el / ulen_el : 1;
        ql_parallel_for((j.nunits + j.upt - 1) / j.upt, cp_task, &j);
    }
}
