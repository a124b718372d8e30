/* OpenMP when the build enabled it, a serial stand-in otherwise: the kernels call
 * these and compile either way. */
#ifndef TINYLM_PARALLEL_H
#define TINYLM_PARALLEL_H
#ifdef _OPENMP
#include <omp.h>
static int tinylm_openmp_enabled(void) { return 1; }
static int tinylm_get_num_threads(void) { return omp_get_max_threads(); }
static void tinylm_set_num_threads(int n) { omp_set_num_threads(n); }
#else
static int tinylm_openmp_enabled(void) { return 0; }
static int tinylm_get_num_threads(void) { return 1; }
static void tinylm_set_num_threads(int n) { (void)n; }
#endif
#endif
