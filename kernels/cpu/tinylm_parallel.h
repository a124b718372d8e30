/* OpenMP when the build enabled it, a serial stand-in otherwise: the kernels call
 * these and compile either way. */
#ifndef TINYLM_PARALLEL_H
#define TINYLM_PARALLEL_H
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
static inline int tinylm_openmp_enabled(void) { return 1; }
static inline int tinylm_get_num_threads(void) { return omp_get_max_threads(); }
static inline void tinylm_set_num_threads(int n) { omp_set_num_threads(n); }
#else
static inline int tinylm_openmp_enabled(void) { return 0; }
static inline int tinylm_get_num_threads(void) { return 1; }
static inline void tinylm_set_num_threads(int n) { (void)n; }
#endif

/* Inside a parallel region: this thread's share [*begin, *end) of n items handed out in
 * whole grains of `grain`, as evenly as the team allows (all of them on a team of one).
 * Shares start on a grain, so a kernel whose sums are grouped by grain gets the same
 * bits on any number of threads. */
static inline void tinylm_my_share(int64_t n, int64_t grain, int64_t *begin, int64_t *end) {
#ifdef _OPENMP
    const int64_t t = omp_get_thread_num(), team = omp_get_num_threads();
#else
    const int64_t t = 0, team = 1;
#endif
    const int64_t grains = (n + grain - 1) / grain;
    const int64_t first = grains * t / team * grain, last = grains * (t + 1) / team * grain;
    *begin = first < n ? first : n;
    *end = last < n ? last : n;
}
#endif
