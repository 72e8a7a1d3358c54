// libmpi through dlopen/dlsym (see include/qlora_mpi.h). This speaks OpenMPI's ABI, where the
// predefined handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_DOUBLE, MPI_BYTE, MPI_SUM) are the
// addresses of exported globals (ompi_mpi_comm_world, ompi_mpi_float, ...) and MPI_IN_PLACE is
// (void *)1, as OpenMPI's mpi.h defines them. MPICH-family libraries use integer handles and are
// not loaded (their libmpi.so.12 is not tried).
#include "qlora_mpi.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void *qh;  // any MPI handle: a pointer in OpenMPI
typedef int (*init_fn)(int *, char ***);
typedef int (*initialized_fn)(int *);
typedef int (*finalize_fn)(void);
typedef int (*rank_fn)(qh, int *);
typedef int (*allreduce_fn)(const void *, void *, int, qh, qh, qh);
typedef int (*bcast_fn)(void *, int, qh, int, qh);
typedef int (*barrier_fn)(qh);
typedef double (*wtime_fn)(void);
typedef int (*abort_fn)(qh, int);

static struct {
    void *lib;
    init_fn init;
    initialized_fn initialized;
    finalize_fn finalize;
    rank_fn comm_rank, comm_size;
    allreduce_fn allreduce;
    bcast_fn bcast;
    barrier_fn barrier;
    wtime_fn wtime;
    abort_fn abort_;
    qh comm_world, t_float, t_double, t_byte, op_sum;
    int started;
} M;

static char error_text[512];

const char *qlmpi_error(void) { return error_text; }

static void *sym(const char *name) {
    void *p = dlsym(M.lib, name);
    if (!p && error_text[0] == 0) snprintf(error_text, sizeof error_text, "libmpi has no symbol %s (not OpenMPI?)", name);
    return p;
}

int qlmpi_load(void) {
    if (M.lib) return 0;
    error_text[0] = 0;
    // RTLD_GLOBAL: OpenMPI's own plugins resolve libmpi's symbols through the global namespace.
    // QLORA_LIBMPI names the library to use instead (and only that one).
    const char *env = getenv("QLORA_LIBMPI");
    const char *names[] = { env && env[0] ? env : "libmpi.so.40", env && env[0] ? NULL : "libmpi.so", NULL };
    void *lib = NULL;
    char first[256] = "";
    for (int i = 0; names[i] && !lib; i++) {
        lib = dlopen(names[i], RTLD_NOW | RTLD_GLOBAL);
        if (!lib && i == 0) { const char *e = dlerror(); snprintf(first, sizeof first, "%s", e ? e : names[i]); }
    }
    if (!lib) {
        snprintf(error_text, sizeof error_text, "cannot load OpenMPI's libmpi (%s)", first);
        return -1;
    }
    M.lib = lib;
    M.init = (init_fn)sym("MPI_Init");
    M.initialized = (initialized_fn)sym("MPI_Initialized");
    M.finalize = (finalize_fn)sym("MPI_Finalize");
    M.comm_rank = (rank_fn)sym("MPI_Comm_rank");
    M.comm_size = (rank_fn)sym("MPI_Comm_size");
    M.allreduce = (allreduce_fn)sym("MPI_Allreduce");
    M.bcast = (bcast_fn)sym("MPI_Bcast");
    M.barrier = (barrier_fn)sym("MPI_Barrier");
    M.wtime = (wtime_fn)sym("MPI_Wtime");
    M.abort_ = (abort_fn)sym("MPI_Abort");
    M.comm_world = sym("ompi_mpi_comm_world");
    M.t_float = sym("ompi_mpi_float");
    M.t_double = sym("ompi_mpi_double");
    M.t_byte = sym("ompi_mpi_byte");
    M.op_sum = sym("ompi_mpi_op_sum");
    if (error_text[0]) { M.lib = NULL; dlclose(lib); return -2; }
    return 0;
}

static void finalize_at_exit(void) {
    if (M.started == 1 && M.finalize) { M.started = 2; M.finalize(); }
}

int qlmpi_initialized(void) { return M.started == 1; }

int qlmpi_init(int *rank, int *size) {
    int rc = qlmpi_load();
    if (rc) return rc;
    if (!M.started) {
        int already = 0;
        M.initialized(&already);
        if (!already) {
            rc = M.init(NULL, NULL);
            if (rc) { snprintf(error_text, sizeof error_text, "MPI_Init failed (error %d)", rc); return rc; }
        }
        M.started = 1;
        atexit(finalize_at_exit);
    }
    rc = M.comm_rank(M.comm_world, rank);
    if (!rc) rc = M.comm_size(M.comm_world, size);
    return rc;
}

#define CHUNK ((int64_t)1 << 30)
#define IN_PLACE ((void *)1)

int qlmpi_allreduce_sum_f32(float *buf, int64_t n) {
    if (M.started != 1) return -3;
    for (int64_t i = 0; i < n; i += CHUNK) {
        int64_t m = n - i < CHUNK ? n - i : CHUNK;
        int rc = M.allreduce(IN_PLACE, buf + i, (int)m, M.t_float, M.op_sum, M.comm_world);
        if (rc) return rc;
    }
    return 0;
}

int qlmpi_allreduce_sum_f64(double *buf, int64_t n) {
    if (M.started != 1) return -3;
    for (int64_t i = 0; i < n; i += CHUNK) {
        int64_t m = n - i < CHUNK ? n - i : CHUNK;
        int rc = M.allreduce(IN_PLACE, buf + i, (int)m, M.t_double, M.op_sum, M.comm_world);
        if (rc) return rc;
    }
    return 0;
}

int qlmpi_bcast_bytes(void *buf, int64_t n) {
    if (M.started != 1) return -3;
    for (int64_t i = 0; i < n; i += CHUNK) {
        int64_t m = n - i < CHUNK ? n - i : CHUNK;
        int rc = M.bcast((char *)buf + i, (int)m, M.t_byte, 0, M.comm_world);
        if (rc) return rc;
    }
    return 0;
}

int qlmpi_barrier(void) { return M.started == 1 ? M.barrier(M.comm_world) : -3; }

double qlmpi_wtime(void) { return M.started == 1 ? M.wtime() : 0.0; }

void qlmpi_abort(int code) {
    if (M.started == 1 && M.abort_) M.abort_(M.comm_world, code);
    _Exit(code);
}
