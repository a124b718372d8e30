/* gelu.cu: GELU (tanh approximation) forward and backward, elementwise.
 *
 * Reference: tinylm/reference/gelu.py, whose formulas these follow operation for
 * operation, in the reference's order, rounded to T at each step as there:
 *
 *     t = tanh(c (x + k x³)),   c = √(2/π),  k = 0.044715
 *     forward:   y = ½ x (1 + t)
 *     backward:  dx = dy (½ (1 + t) + ½ x (1 - t²) · c (1 + 3k x²))
 *
 * What differs from the reference, and why:
 * - One pass over the arrays, one element per thread in a grid-stride loop, where the
 *   reference makes about eight temporaries of x's size (x³, u, t, 1 + t, ...).
 * - The backward recomputes t from x, as the reference does: nothing but x is saved.
 * - tanh is the device's tanhf / tanh, and the GPU may contract a product and a sum
 *   into one FMA: the results agree with the reference to rounding, not bit for bit.
 *   In float32, 1 + t cancels for x below about -4 here as in the reference (the
 *   Cython kernel computes ½ (1 + t) as σ(2u) instead, which keeps those digits).
 */
#include "tinylm_cuda_common.cuh"

#define GELU_C 0.7978845608028654  // √(2/π), as math.sqrt(2.0 / math.pi)
#define GELU_K 0.044715

template <typename T>
__device__ __forceinline__ T gelu_tanh(T x) {
    return tl_tanh(T(GELU_C) * (x + T(GELU_K) * (x * x * x)));  // t = tanh u
}

template <typename T>
__device__ void gelu_forward(const T* __restrict__ x, T* __restrict__ y, long long count) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < count; k += stride) {
        const T t = gelu_tanh(x[k]);
        y[k] = T(0.5) * x[k] * (T(1) + t);
    }
}

template <typename T>
__device__ void gelu_backward(const T* __restrict__ grad_y, const T* __restrict__ x, T* __restrict__ grad_x,
                              long long count) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < count; k += stride) {
        const T v = x[k];
        const T t = gelu_tanh(v);
        const T slope = T(GELU_C) * (T(1) + T(3.0 * GELU_K) * (v * v));  // du/dx; 3k rounded once, as the reference's 3 * K
        grad_x[k] = grad_y[k] * (T(0.5) * (T(1) + t) + T(0.5) * v * (T(1) - t * t) * slope);
    }
}

extern "C" __global__ void gelu_forward_f32(const float* __restrict__ x, float* __restrict__ y, long long count) {
    gelu_forward(x, y, count);
}
extern "C" __global__ void gelu_forward_f64(const double* __restrict__ x, double* __restrict__ y, long long count) {
    gelu_forward(x, y, count);
}
extern "C" __global__ void gelu_backward_f32(const float* __restrict__ grad_y, const float* __restrict__ x,
                                             float* __restrict__ grad_x, long long count) {
    gelu_backward(grad_y, x, grad_x, count);
}
extern "C" __global__ void gelu_backward_f64(const double* __restrict__ grad_y, const double* __restrict__ x,
                                             double* __restrict__ grad_x, long long count) {
    gelu_backward(grad_y, x, grad_x, count);
}
