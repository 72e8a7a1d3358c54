// MPI for data-parallel training, loaded at run time: qlora builds and runs without MPI, and
// opens OpenMPI's libmpi (dlopen) only when a script asks for it. Only the few calls the
// trainer needs are wrapped; every function returns 0 on success or an MPI / loader error code.
#ifndef QLORA_MPI_H
#define QLORA_MPI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Loads libmpi and resolves the calls and handles. 0 on success; otherwise the reason is in
// qlmpi_error(). Safe to call again (a no-op once loaded).
int qlmpi_load(void);
const char *qlmpi_error(void);
// MPI_Init (once; MPI_Finalize then runs at process exit). Fills rank and size.
int qlmpi_init(int *rank, int *size);
int qlmpi_initialized(void);
// In place over MPI_COMM_WORLD: buf[i] = sum over ranks of buf[i] (MPI_Allreduce, MPI_SUM),
// in chunks of at most 2^30 elements.
int qlmpi_allreduce_sum_f32(float *buf, int64_t n);
int qlmpi_allreduce_sum_f64(double *buf, int64_t n);
// Every rank gets rank 0's n bytes.
int qlmpi_bcast_bytes(void *buf, int64_t n);
int qlmpi_barrier(void);
double qlmpi_wtime(void);
// Ends every rank of the job (a failure on one rank would otherwise leave the others waiting).
void qlmpi_abort(int code);

#ifdef __cplusplus
}
#endif
#endif
