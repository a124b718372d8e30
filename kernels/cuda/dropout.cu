/* dropout.cu: dropout forward and backward with the counter-based mask.
 *
 * Reference: tinylm/reference/dropout.py, whose meaning these keep bit for bit:
 * element k (flat C order) is kept iff the top 24 bits of SplitMix64 at counter
 * c = k + offset + (k / block) · gap (c = k + offset when block = 0),
 *
 *     z = seed + (c + 1) · 0x9E3779B97F4A7C15          (all arithmetic mod 2^64)
 *     z = (z ^ (z >> 30)) · 0xBF58476D1CE4E5B9
 *     z = (z ^ (z >> 27)) · 0x94D049BB133111EB
 *     bits = (z ^ (z >> 31)) >> 40
 *
 * are >= threshold (computed by the reference's dropout_threshold(p) on the host), and
 * y = x · keep · scale with scale = 1/(1 - p) (0 when p = 1), rounded to T as there.
 *
 * What differs from the reference, and why:
 * - The mask is computed in the same pass that applies it, one element per thread in a
 *   grid-stride loop: no counter array, no uint64 temporaries. Because the mask is a
 *   pure function of (seed, k), no random state is shared between threads and any
 *   grid gives the same mask as the reference.
 * - The launcher has checked the counter map (no c + 1 past 2^64 - 1), so the
 *   counter itself never wraps.
 * - The backward reads the saved uint8 mask rather than recomputing it, as the
 *   reference does (1 byte per element against 8 bytes of hashing state).
 */
#include "tinylm_cuda_common.cuh"

__device__ __forceinline__ unsigned long long splitmix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// The counter map: where element k of this tensor draws its bits.
__device__ __forceinline__ unsigned long long dropout_counter(unsigned long long k, unsigned long long offset,
                                                              unsigned long long block, unsigned long long gap) {
    return block ? k + offset + (k / block) * gap : k + offset;
}

template <typename T>
__device__ void dropout_forward(const T* __restrict__ x, T* __restrict__ y, unsigned char* __restrict__ mask,
                                long long count, unsigned long long seed, unsigned long long offset,
                                unsigned long long block, unsigned long long gap, unsigned int threshold, T scale) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < count; k += stride) {
        const unsigned long long counter = dropout_counter((unsigned long long)k, offset, block, gap);
        const unsigned long long bits = splitmix64(seed + (counter + 1) * 0x9E3779B97F4A7C15ULL) >> 40;
        const unsigned char keep = bits >= threshold ? 1 : 0;
        mask[k] = keep;
        y[k] = x[k] * T(keep) * scale;  // the reference's x · mask · scale, in its order (NaN stays NaN)
    }
}

template <typename T>
__device__ void dropout_backward(const T* __restrict__ grad_y, const unsigned char* __restrict__ mask,
                                 T* __restrict__ grad_x, long long count, T scale) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < count; k += stride)
        grad_x[k] = grad_y[k] * T(mask[k]) * scale;
}

extern "C" __global__ void dropout_forward_f32(const float* __restrict__ x, float* __restrict__ y,
                                               unsigned char* __restrict__ mask, long long count,
                                               unsigned long long seed, unsigned long long offset,
                                               unsigned long long block, unsigned long long gap,
                                               unsigned int threshold, float scale) {
    dropout_forward(x, y, mask, count, seed, offset, block, gap, threshold, scale);
}
extern "C" __global__ void dropout_forward_f64(const double* __restrict__ x, double* __restrict__ y,
                                               unsigned char* __restrict__ mask, long long count,
                                               unsigned long long seed, unsigned long long offset,
                                               unsigned long long block, unsigned long long gap,
                                               unsigned int threshold, double scale) {
    dropout_forward(x, y, mask, count, seed, offset, block, gap, threshold, scale);
}
extern "C" __global__ void dropout_backward_f32(const float* __restrict__ grad_y, const unsigned char* __restrict__ mask,
                                                float* __restrict__ grad_x, long long count, float scale) {
    dropout_backward(grad_y, mask, grad_x, count, scale);
}
extern "C" __global__ void dropout_backward_f64(const double* __restrict__ grad_y, const unsigned char* __restrict__ mask,
                                                double* __restrict__ grad_x, long long count, double scale) {
    dropout_backward(grad_y, mask, grad_x, count, scale);
}
