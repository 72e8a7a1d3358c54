// OpenBLAS's CBLAS interface and the LAPACK routines it ships, exposed to Swift as the COpenBLAS
// module.
#include <stddef.h>
#include <cblas.h>
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);

// LAPACK (Fortran calling convention, 32-bit integers as in Debian's libopenblas): thin SVD of a
// column-major m x n matrix, divide and conquer. jobz "S": u [m, min(m, n)], vt [min(m, n), n].
// lwork = -1 queries the workspace size into work[0]; iwork holds 8 min(m, n) integers. info: 0
// success, < 0 an illegal argument, > 0 no convergence. The trailing length is that of jobz
// (gfortran's hidden argument).
void dgesdd_(const char *jobz, const int *m, const int *n, double *a, const int *lda, double *s,
             double *u, const int *ldu, double *vt, const int *ldvt, double *work,
             const int *lwork, int *iwork, int *info, size_t jobz_len);
