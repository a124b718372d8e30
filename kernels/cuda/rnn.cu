/* rnn.cu: the Elman RNN step's pointwise work, fused: the forward adds the step's input
 * projection and recurrent product and applies the nonlinearity; the backward adds the
 * two parts of dh and multiplies by the nonlinearity's derivative.
 *
 * Reference: tinylm/reference/rnn.py:
 *
 *     forward:   h = act(x_proj + recurrent),  recurrent = h_prev Wₕₕᵀ,  act = tanh or relu
 *     backward:  d_pre = (dh_out + dh_next) act'(h),  tanh' = 1 - h², relu' = [h > 0]
 *
 * One thread per (b, j) element, grid-stride; the matrix products stay outside, in
 * cuBLAS through CuPy (rnn.py). ``relu`` chooses the nonlinearity (0: tanh).
 */
#include "tinylm_cuda_common.cuh"

template <typename T>
__device__ void rnn_cell_forward(const T* __restrict__ x_proj, const T* __restrict__ recurrent, int relu,
                                 T* __restrict__ h, long long elements) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < elements; k += stride) {
        const T pre = x_proj[k] + recurrent[k];
        h[k] = relu ? (pre > T(0) ? pre : T(0)) : tl_tanh(pre);
    }
}

template <typename T>
__device__ void rnn_cell_backward(const T* __restrict__ dh_out, const T* __restrict__ dh_next,
                                  const T* __restrict__ h, int relu, T* __restrict__ d_pre, long long elements) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < elements; k += stride) {
        const T dh = dh_out[k] + dh_next[k];
        d_pre[k] = relu ? (h[k] > T(0) ? dh : T(0)) : dh * (T(1) - h[k] * h[k]);
    }
}

extern "C" __global__ void rnn_cell_forward_f32(const float* __restrict__ x_proj, const float* __restrict__ recurrent,
                                                int relu, float* __restrict__ h, long long elements) {
    rnn_cell_forward(x_proj, recurrent, relu, h, elements);
}
extern "C" __global__ void rnn_cell_forward_f64(const double* __restrict__ x_proj,
                                                const double* __restrict__ recurrent, int relu,
                                                double* __restrict__ h, long long elements) {
    rnn_cell_forward(x_proj, recurrent, relu, h, elements);
}
extern "C" __global__ void rnn_cell_backward_f32(const float* __restrict__ dh_out, const float* __restrict__ dh_next,
                                                 const float* __restrict__ h, int relu, float* __restrict__ d_pre,
                                                 long long elements) {
    rnn_cell_backward(dh_out, dh_next, h, relu, d_pre, elements);
}
extern "C" __global__ void rnn_cell_backward_f64(const double* __restrict__ dh_out, const double* __restrict__ dh_next,
                                                 const double* __restrict__ h, int relu, double* __restrict__ d_pre,
                                                 long long elements) {
    rnn_cell_backward(dh_out, dh_next, h, relu, d_pre, elements);
}
