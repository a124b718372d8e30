/* tinylm_cuda_emulation.h: build tinylm's CUDA kernels with the host C++ compiler.
 *
 * The same kernels/cuda/*.cu sources that nvcc and NVRTC compile for the GPU are
 * compiled by g++ with this header force-included (-include) and -fopenmp, so that the
 * kernels run, and are tested against the NumPy reference, on a machine without a GPU.
 * kernels/cuda/emulation.py drives it: it generates one extern "C" launcher per kernel
 * that calls tinylm_emu::run_grid, builds a shared library and calls it with ctypes.
 *
 * The model of execution
 * ----------------------
 * - The blocks of a grid run one after another (x fastest, then y, then z).
 * - Each block runs as one OpenMP team of exactly blockDim.x * blockDim.y * blockDim.z
 *   threads (omp_set_dynamic(0); a team that comes up smaller is reported as an error,
 *   never run). threadIdx comes from the thread number: x fastest, as in CUDA.
 * - __syncthreads() is an OpenMP barrier of the team (an "orphaned" barrier, legal in
 *   any function called from the parallel region), with compiler memory fences around it.
 * - __shared__ becomes `static`: one copy in the library, shared by the whole team. As
 *   blocks run one at a time, that is exactly one copy per running block. Dynamic
 *   shared memory (TINYLM_DYNAMIC_SHARED in tinylm_cuda_common.cuh) is a buffer of the
 *   launch's shared-memory size, refilled for every block with a NaN pattern, so a block
 *   that reads shared memory it never wrote gets NaNs, not zeros nor an earlier block's
 *   values. (Static __shared__ arrays are not refilled: they keep the previous block's.)
 * - Warp shuffles (__shfl_sync, __shfl_down_sync, __shfl_xor_sync) go through a
 *   per-thread exchange array: every thread writes its value, a barrier, every thread
 *   reads its source lane's slot (two arrays used in turn, so one barrier per shuffle
 *   is enough). __syncwarp() is a barrier.
 * - atomicAdd is an OpenMP atomic capture.
 * - Device math (expf, rsqrtf, __expf, __int_as_float, ...) maps to the C library.
 *
 * What the emulation cannot check (see also kernels/cuda/README.md)
 * -----------------------------------------------------------------
 * - The memory model. The team shares memory coherently and every barrier is a full
 *   fence, so a kernel that forgets __threadfence(), relies on volatile, or reads
 *   another block's writes (blocks never overlap here) can pass here and fail on a GPU.
 * - Races between blocks. Blocks run one after another, so two blocks writing the same
 *   element without atomics never collide here. Races inside a block are real threads
 *   racing, but on two cores they rarely show.
 * - Warp-synchronous code. A shuffle or __syncwarp here is a barrier of the whole
 *   block, so every thread of the block must reach every shuffle, the same number of
 *   times; CUDA only needs the lanes of the warp named in the mask. (A kernel that
 *   breaks this rule deadlocks here.) The mask argument is ignored: all 32 lanes are
 *   assumed present, and lanes past the end of a partial last warp read their own value.
 *   Implicit warp synchronism (lanes of a warp reading each other's shared-memory
 *   writes without __syncwarp) is not reproduced: the threads really are independent.
 * - __syncthreads() in divergent code: CUDA's rule is that every thread of the block
 *   reaches it; here breaking it deadlocks or mismatches barriers.
 * - Timing, occupancy, register and shared-memory limits, bank conflicts, coalescing:
 *   nothing about speed. kernels/cuda/resource_usage.py reports registers and spills.
 * - Floating point: host libm's expf/logf, not CUDA's (both within a few ulp), and g++'s
 *   choices of FMA contraction, not nvcc's. Tests compare with stated tolerances.
 * - Out-of-bounds accesses are not trapped by any hardware here, but the Python
 *   side (emulation.py) copies every array argument into a buffer with 256-byte guard
 *   bands of 0xFF bytes and checks the guards after the launch: a write just outside an
 *   argument is an error, and a read just outside one reads NaN (or -1 as an integer),
 *   which the value comparisons catch. Accesses further out go unnoticed.
 */
#ifndef TINYLM_CUDA_EMULATION_H
#define TINYLM_CUDA_EMULATION_H

#define TINYLM_CUDA_EMULATION 1

#include <omp.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <vector>

/* ------------------------------------------------------------ CUDA's keywords */

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static
/* __restrict__ is understood by g++ as it is. */

struct dim3 {
    unsigned int x, y, z;
    dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
    unsigned int x, y, z;
};

/* Dynamic shared memory: the CUDA form (extern __shared__) is in tinylm_cuda_common.cuh. */
#define TINYLM_DYNAMIC_SHARED(type, name) type* name = reinterpret_cast<type*>(tinylm_emu::dynamic_shared)

/* The launch geometry. gridDim, blockDim and blockIdx are the same for every thread of
 * the running block and are set before its team starts; threadIdx is each thread's own.
 * `static`: one copy per kernel library (one translation unit per library). */
static uint3 gridDim, blockDim, blockIdx;
static thread_local uint3 threadIdx;
static const int warpSize = 32;

namespace tinylm_emu {

static const int kMaxThreadsPerBlock = 1024;
static const int kMaxSharedBytes = 48 * 1024;  // CUDA's default per-block limit

/* Two slots per thread of the block for the shuffles' exchange, used alternately (see
 * exchange()). */
static unsigned long long exchange_slots[2][kMaxThreadsPerBlock];
static thread_local int exchange_parity;
/* The launch's dynamic shared memory (TINYLM_DYNAMIC_SHARED points here). */
static unsigned char* dynamic_shared = nullptr;

inline int linear_thread() {
    return (int)(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
}

inline int threads_per_block() { return (int)(blockDim.x * blockDim.y * blockDim.z); }

/* A barrier of the team that is also a full fence for the compiler and the CPU, so that
 * no shared value is kept in a register across it. */
inline void barrier() {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    __asm__ __volatile__("" ::: "memory");
#pragma omp barrier
    __asm__ __volatile__("" ::: "memory");
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* Every thread publishes `value`, then reads lane `source_lane` of its own warp (its own
 * value when that lane does not exist in the block, or `valid` is false).
 *
 * One barrier per shuffle: successive shuffles alternate between two arrays of slots.
 * A thread writes the array of shuffle k+1 only after passing shuffle k's barrier, which
 * every thread reached after finishing its reads of shuffle k-1, the last user of that
 * array. (This needs every thread to go through the same sequence of shuffles, which
 * the barrier needs anyway.) */
template <typename T>
inline T exchange(T value, int source_lane, bool valid) {
    static_assert(sizeof(T) <= sizeof(unsigned long long), "shuffle of a type wider than 8 bytes");
    unsigned long long* slots = exchange_slots[exchange_parity];
    exchange_parity ^= 1;
    const int me = linear_thread();
    std::memcpy(&slots[me], &value, sizeof(T));
    barrier();
    const int source = me - (me % warpSize) + source_lane;
    T result = value;
    if (valid && source < threads_per_block()) std::memcpy(&result, &slots[source], sizeof(T));
    return result;
}

/* Runs `body` (one kernel call) for every block of the grid. Returns 0, or a positive
 * error code the Python side turns into a message. */
enum LaunchError {
    kOk = 0,
    kBadGeometry = 1,   // an empty grid or block, or a block of more than 1024 threads
    kTooMuchShared = 2, // dynamic shared memory above 48 KiB
    kTeamTooSmall = 3,  // OpenMP gave fewer threads than the block needs
};

template <class Body>
int run_grid(dim3 grid, dim3 block, size_t shared_bytes, Body body) {
    const long long threads = (long long)block.x * block.y * block.z;
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0 || threads > kMaxThreadsPerBlock) return kBadGeometry;
    if (shared_bytes > (size_t)kMaxSharedBytes) return kTooMuchShared;
    // 0xFF bytes: a NaN as float and as double, so unwritten shared memory reads as NaN.
    std::vector<unsigned long long> shared_buffer(shared_bytes / 8 + 2, ~0ULL);  // 8-byte aligned
    dynamic_shared = reinterpret_cast<unsigned char*>(shared_buffer.data());
    gridDim = {grid.x, grid.y, grid.z};
    blockDim = {block.x, block.y, block.z};
    omp_set_dynamic(0);
    int error = kOk;
    for (unsigned int bz = 0; bz < grid.z && error == kOk; ++bz)
        for (unsigned int by = 0; by < grid.y && error == kOk; ++by)
            for (unsigned int bx = 0; bx < grid.x && error == kOk; ++bx) {
                blockIdx = {bx, by, bz};
                // Fresh for every block, as on a GPU, where a block never sees another's shared
                // memory: what this block did not write reads as NaN, not as the last block's values.
                std::fill(shared_buffer.begin(), shared_buffer.end(), ~0ULL);
#pragma omp parallel num_threads((int)threads)
                {
                    // The same decision in every thread of the team: run all or none.
                    if (omp_get_num_threads() != (int)threads) {
#pragma omp single
                        error = kTeamTooSmall;
                    } else {
                        const unsigned int t = (unsigned int)omp_get_thread_num();
                        threadIdx = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
                        exchange_parity = 0;
                        body();
                    }
                }
            }
    dynamic_shared = nullptr;
    return error;
}

}  // namespace tinylm_emu

/* ------------------------------------------------------ synchronisation, warps */

inline void __syncthreads() { tinylm_emu::barrier(); }
inline void __syncwarp(unsigned int mask = 0xffffffffu) { (void)mask; tinylm_emu::barrier(); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

template <typename T>
inline T __shfl_sync(unsigned int mask, T value, int src_lane, int width = 32) {
    (void)mask;
    const int lane = tinylm_emu::linear_thread() % warpSize;
    const int segment = lane - lane % width;
    return tinylm_emu::exchange(value, segment + (src_lane % width), true);
}

template <typename T>
inline T __shfl_down_sync(unsigned int mask, T value, unsigned int delta, int width = 32) {
    (void)mask;
    const int lane = tinylm_emu::linear_thread() % warpSize;
    const int in_segment = lane % width + (int)delta;
    return tinylm_emu::exchange(value, lane + (int)delta, in_segment < width);  // past the end: own value
}

template <typename T>
inline T __shfl_xor_sync(unsigned int mask, T value, int lane_mask, int width = 32) {
    (void)mask;
    const int lane = tinylm_emu::linear_thread() % warpSize;
    const int source = lane ^ lane_mask;
    const bool valid = source < warpSize && source / width <= lane / width;  // later segments: own value
    return tinylm_emu::exchange(value, source, valid);
}

/* ----------------------------------------------------------------- atomics */

template <typename T>
inline T atomicAdd(T* address, T value) {
    T old;
#pragma omp atomic capture
    {
        old = *address;
        *address += value;
    }
    return old;
}

/* ------------------------------------------------------------- device math */

inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __int_as_float(int bits) {
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}
inline double __longlong_as_double(long long bits) {
    double d;
    std::memcpy(&d, &bits, sizeof d);
    return d;
}
template <typename T>
inline T __ldg(const T* address) { return *address; }

#endif /* TINYLM_CUDA_EMULATION_H */
