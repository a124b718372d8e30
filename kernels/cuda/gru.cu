/* gru.cu: the GRU cell's pointwise work, fused: one kernel for the forward step (gate
 * nonlinearities and state update), one for the backward step.
 *
 * Reference: tinylm/reference/gru.py (gates in PyTorch's order r, z, n):
 *
 *     forward:   r = σ(x_r + h_r);  z = σ(x_z + h_z);  n = tanh(x_n + r h_n);  h = n + z (h_prev - n)
 *                (x_gates = x Wᵢₕᵀ + bᵢₕ, h_gates = h_prev Wₕₕᵀ + bₕₕ); saved: r, z, n and h_n
 *     backward:  dh = dh_out + dh_next;  dn̂ = dh (1 - z)(1 - n²)
 *                d_x_gates = [dn̂ h_n r(1-r), dh (h_prev - n) z(1-z), dn̂];  d_h_gates = [.., .., dn̂ r]
 *                dh_prev (direct part) = dh z
 *
 * What differs from the reference, and why:
 * - One thread per (b, j) element of the (B, H) state does all three gates of that
 *   element, reading its inputs once and writing its outputs once; consecutive threads
 *   take consecutive j, so each gate's loads are coalesced.
 * - The matrix products (h_prev Wₕₕᵀ per step, dh_gates Wₕₕ back) stay outside, in
 *   cuBLAS through CuPy (gru.py); h_n is copied out of h_gates here so the backward
 *   reads a (B, H) array, as the reference keeps it.
 * - σ(x) = 1 / (1 + e^-x) rather than the reference's ½(1 + tanh(x/2)): the same
 *   function, equal to rounding.
 */
#include "tinylm_cuda_common.cuh"

template <typename T>
__device__ void gru_cell_forward(const T* __restrict__ x_gates, const T* __restrict__ h_gates,
                                 const T* __restrict__ h_prev, T* __restrict__ h, T* __restrict__ activations,
                                 T* __restrict__ h_n, long long batch, long long hidden) {
    const long long elements = batch * hidden, stride = (long long)gridDim.x * blockDim.x;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < elements; k += stride) {
        const long long b = k / hidden, j = k - b * hidden;
        const long long base = b * 3 * hidden + j;  // gate q of element (b, j) is at base + q·H
        const T r = tl_sigmoid(x_gates[base] + h_gates[base]);
        const T z = tl_sigmoid(x_gates[base + hidden] + h_gates[base + hidden]);
        const T hn = h_gates[base + 2 * hidden];
        const T n = tl_tanh(x_gates[base + 2 * hidden] + r * hn);
        activations[base] = r;
        activations[base + hidden] = z;
        activations[base + 2 * hidden] = n;
        h_n[k] = hn;
        h[k] = n + z * (h_prev[k] - n);
    }
}

template <typename T>
__device__ void gru_cell_backward(const T* __restrict__ dh_out, const T* __restrict__ dh_next,
                                  const T* __restrict__ h_prev, const T* __restrict__ activations,
                                  const T* __restrict__ h_n, T* __restrict__ d_x_gates, T* __restrict__ d_h_gates,
                                  T* __restrict__ dh_prev, long long batch, long long hidden) {
    const long long elements = batch * hidden, stride = (long long)gridDim.x * blockDim.x;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < elements; k += stride) {
        const long long b = k / hidden, j = k - b * hidden;
        const long long base = b * 3 * hidden + j;
        const T r = activations[base], z = activations[base + hidden], n = activations[base + 2 * hidden];
        const T dh = dh_out[k] + dh_next[k];  // h feeds the output and the next step
        const T dn_pre = dh * (T(1) - z) * (T(1) - n * n);
        const T dr_pre = dn_pre * h_n[k] * r * (T(1) - r);
        const T dz_pre = dh * (h_prev[k] - n) * z * (T(1) - z);
        d_x_gates[base] = dr_pre;
        d_x_gates[base + hidden] = dz_pre;
        d_x_gates[base + 2 * hidden] = dn_pre;
        d_h_gates[base] = dr_pre;
        d_h_gates[base + hidden] = dz_pre;
        d_h_gates[base + 2 * hidden] = dn_pre * r;
        dh_prev[k] = dh * z;
    }
}

extern "C" __global__ void gru_cell_forward_f32(const float* __restrict__ x_gates, const float* __restrict__ h_gates,
                                                const float* __restrict__ h_prev, float* __restrict__ h,
                                                float* __restrict__ activations, float* __restrict__ h_n,
                                                long long batch, long long hidden) {
    gru_cell_forward(x_gates, h_gates, h_prev, h, activations, h_n, batch, hidden);
}
extern "C" __global__ void gru_cell_forward_f64(const double* __restrict__ x_gates, const double* __restrict__ h_gates,
                                                const double* __restrict__ h_prev, double* __restrict__ h,
                                                double* __restrict__ activations, double* __restrict__ h_n,
                                                long long batch, long long hidden) {
    gru_cell_forward(x_gates, h_gates, h_prev, h, activations, h_n, batch, hidden);
}
extern "C" __global__ void gru_cell_backward_f32(const float* __restrict__ dh_out, const float* __restrict__ dh_next,
                                                 const float* __restrict__ h_prev, const float* __restrict__ activations,
                                                 const float* __restrict__ h_n, float* __restrict__ d_x_gates,
                                                 float* __restrict__ d_h_gates, float* __restrict__ dh_prev,
                                                 long long batch, long long hidden) {
    gru_cell_backward(dh_out, dh_next, h_prev, activations, h_n, d_x_gates, d_h_gates, dh_prev, batch, hidden);
}
extern "C" __global__ void gru_cell_backward_f64(const double* __restrict__ dh_out, const double* __restrict__ dh_next,
                                                 const double* __restrict__ h_prev,
                                                 const double* __restrict__ activations,
                                                 const double* __restrict__ h_n, double* __restrict__ d_x_gates,
                                                 double* __restrict__ d_h_gates, double* __restrict__ dh_prev,
                                                 long long batch, long long hidden) {
    gru_cell_backward(dh_out, dh_next, h_prev, activations, h_n, d_x_gates, d_h_gates, dh_prev, batch, hidden);
}
