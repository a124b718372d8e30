/* tinylm_cuda_common.cuh: what every kernel file in kernels/cuda/ shares.
 *
 * Included by each .cu file. source.py pastes it into the source it hands to NVRTC
 * (cupy.RawModule) and to the host compiler (the emulation), so no include path is
 * needed there; nvcc finds it beside the .cu files. No system headers: NVRTC has none.
 *
 * - float / double overloads of the math functions, so one template serves both;
 * - -inf of each type;
 * - warp and block reductions (sum, max, and the (max, sum) pair of an online softmax);
 * - TINYLM_DYNAMIC_SHARED, dynamic shared memory that the emulation can supply.
 *
 * Rules every kernel here keeps (the emulation relies on them, and CUDA asks for them):
 * blockDim.x is a multiple of 32 (whole warps), and every thread of a block reaches
 * every __syncthreads, shuffle and reduction below, the same number of times: loops
 * that contain them run a block-uniform number of times, and threads without work
 * go through them with a neutral value instead of returning early.
 */
#ifndef TINYLM_CUDA_COMMON_CUH
#define TINYLM_CUDA_COMMON_CUH

#define TINYLM_FULL_MASK 0xffffffffu

#ifndef TINYLM_DYNAMIC_SHARED  /* the emulation header defines its own */
/* One untyped extern array, cast: a template kernel cannot declare typed extern
 * __shared__ arrays of two different types. */
#define TINYLM_DYNAMIC_SHARED(type, name)                                  \
    extern __shared__ __align__(16) unsigned char tinylm_dynamic_shared_[]; \
    type* name = reinterpret_cast<type*>(tinylm_dynamic_shared_)
#endif

/* ---------------------------------------------------------------- math */

__device__ __forceinline__ float tl_exp(float x) { return expf(x); }
__device__ __forceinline__ double tl_exp(double x) { return exp(x); }
__device__ __forceinline__ float tl_log(float x) { return logf(x); }
__device__ __forceinline__ double tl_log(double x) { return log(x); }
__device__ __forceinline__ float tl_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double tl_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float tl_max(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double tl_max(double a, double b) { return fmax(a, b); }

/* sigmoid(x) = 1 / (1 + e^-x): for very negative x, e^-x = inf and the result is 0. */
template <typename T>
__device__ __forceinline__ T tl_sigmoid(T x) { return T(1) / (T(1) + tl_exp(-x)); }

__device__ __forceinline__ float tl_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double tl_tanh(double x) { return tanh(x); }

template <typename T> __device__ __forceinline__ T tl_neg_inf();
template <> __device__ __forceinline__ float tl_neg_inf<float>() { return __int_as_float(0xff800000); }
template <> __device__ __forceinline__ double tl_neg_inf<double>() { return __longlong_as_double(0xfff0000000000000LL); }

/* ----------------------------------------------------- warp reductions */

/* Butterfly (xor) reductions: after log2(32) = 5 exchanges every lane holds the result. */
template <typename T>
__device__ __forceinline__ T warp_sum(T value) {
    for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(TINYLM_FULL_MASK, value, offset);
    return value;
}

template <typename T>
__device__ __forceinline__ T warp_max(T value) {
    for (int offset = 16; offset > 0; offset /= 2) value = tl_max(value, __shfl_xor_sync(TINYLM_FULL_MASK, value, offset));
    return value;
}

/* Online softmax (Milakov and Gimelshein, 2018): a running maximum m and a running sum
 * s = Σ e^(x - m) over the values seen so far. Adding x, or merging another (m, s),
 * rescales the sum whenever the maximum grows, so one pass over the data gives both. */
template <typename T>
struct MaxSum {
    T max;  // -inf before any finite value
    T sum;  // Σ e^(x - max); 0 while max is -inf
};

template <typename T>
__device__ __forceinline__ MaxSum<T> max_sum_empty() { return {tl_neg_inf<T>(), T(0)}; }

template <typename T>
__device__ __forceinline__ MaxSum<T> max_sum_merge(MaxSum<T> a, MaxSum<T> b) {
    // A NaN wins: fmax drops a NaN operand, so without this a NaN met while the other side
    // is still empty (-inf) would vanish, and a row with a NaN would get a finite result.
    if (a.max != a.max) return {a.max, a.max};
    if (b.max != b.max) return {b.max, b.max};
    const T m = tl_max(a.max, b.max);
    if (m == tl_neg_inf<T>()) return max_sum_empty<T>();  // both empty: e^(-inf - -inf) would be NaN
    return {m, a.sum * tl_exp(a.max - m) + b.sum * tl_exp(b.max - m)};
}

template <typename T>
__device__ __forceinline__ MaxSum<T> max_sum_add(MaxSum<T> a, T x) {
    return max_sum_merge(a, MaxSum<T>{x, x == tl_neg_inf<T>() ? T(0) : T(1)});
}

template <typename T>
__device__ __forceinline__ MaxSum<T> warp_max_sum(MaxSum<T> value) {
    for (int offset = 16; offset > 0; offset /= 2) {
        MaxSum<T> other;
        other.max = __shfl_xor_sync(TINYLM_FULL_MASK, value.max, offset);
        other.sum = __shfl_xor_sync(TINYLM_FULL_MASK, value.sum, offset);
        value = max_sum_merge(value, other);
    }
    return value;
}

/* ---------------------------------------------------- block reductions */

/* Each warp reduces its lanes with shuffles, lane 0 of each warp leaves the warp's
 * result in shared memory, and then every warp reduces those (at most 32) partials
 * itself, so every thread of the block returns the block's result with no third
 * barrier. The leading barrier lets the function be called again right away: nobody
 * overwrites `partial` while a slower warp is still reading the previous call's. */
template <typename T>
__device__ __forceinline__ T block_sum(T value) {
    __shared__ T partial[32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    value = warp_sum(value);
    if (warps == 1) return value;  // one warp: done (the same branch in every thread)
    __syncthreads();
    if (lane == 0) partial[warp] = value;
    __syncthreads();
    return warp_sum(lane < warps ? partial[lane] : T(0));
}

template <typename T>
__device__ __forceinline__ T block_max(T value) {
    __shared__ T partial[32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    value = warp_max(value);
    if (warps == 1) return value;  // one warp: done (the same branch in every thread)
    __syncthreads();
    if (lane == 0) partial[warp] = value;
    __syncthreads();
    return warp_max(lane < warps ? partial[lane] : tl_neg_inf<T>());
}

template <typename T>
__device__ __forceinline__ MaxSum<T> block_max_sum(MaxSum<T> value) {
    __shared__ T partial_max[32];
    __shared__ T partial_sum[32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    value = warp_max_sum(value);
    if (warps == 1) return value;  // one warp: done (the same branch in every thread)
    __syncthreads();
    if (lane == 0) {
        partial_max[warp] = value.max;
        partial_sum[warp] = value.sum;
    }
    __syncthreads();
    MaxSum<T> mine = max_sum_empty<T>();
    if (lane < warps) mine = MaxSum<T>{partial_max[lane], partial_sum[lane]};
    return warp_max_sum(mine);
}

#endif /* TINYLM_CUDA_COMMON_CUH */
