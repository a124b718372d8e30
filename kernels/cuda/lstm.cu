/* lstm.cu: the LSTM cell's pointwise work, fused: one kernel for the forward step
 * (gate nonlinearities and cell update), one for the backward step.
 *
 * Reference: tinylm/reference/lstm.py (gates in PyTorch's order i, f, g, o):
 *
 *     forward:   i, f, o = σ(gates_i, gates_f, gates_o);  g = tanh(gates_g)
 *                c = f c_prev + i g;  h = o tanh(c);  saved: activations (i, f, g, o), tanh(c)
 *     backward:  dc_total = dc + dh o (1 - tanh²c)
 *                d_gates = [dc_total g i(1-i), dc_total c_prev f(1-f), dc_total i (1-g²), dh tanh(c) o(1-o)]
 *                dc_prev = dc_total f
 *
 * What differs from the reference, and why:
 * - One thread per (b, j) element of the (B, H) state does all four gates of that
 *   element: the five inputs it needs are read once and the six outputs written once,
 *   where the reference makes a dozen passes over (B, H) arrays with temporaries.
 *   Consecutive threads take consecutive j, so each gate's loads are coalesced.
 * - The layer's matrix products stay outside, in cuBLAS through CuPy (lstm.py): one
 *   (B, H) @ (H, 4H) per step. To save one more pass, the forward kernel adds that
 *   product to the step's input projection itself (gates = x_proj + recurrent), and the
 *   backward kernel adds the two parts of dh (from above and from step t+1); the flags
 *   add_recurrent / add_dh_next switch that off for the single-cell wrappers, which then
 *   pass an empty array the kernel never reads.
 * - σ(x) = 1 / (1 + e^-x) rather than the reference's ½(1 + tanh(x/2)): the same
 *   function, equal to rounding, and 0 or 1 exactly when saturated.
 */
#include "tinylm_cuda_common.cuh"

template <typename T>
__device__ void lstm_cell_forward(const T* __restrict__ x_proj, const T* __restrict__ recurrent, int add_recurrent,
                                  const T* __restrict__ c_prev, T* __restrict__ h, T* __restrict__ c,
                                  T* __restrict__ activations, T* __restrict__ tanh_c, long long batch,
                                  long long hidden) {
    const long long elements = batch * hidden, stride = (long long)gridDim.x * blockDim.x;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < elements; k += stride) {
        const long long b = k / hidden, j = k - b * hidden;
        const long long base = b * 4 * hidden + j;  // gate q of element (b, j) is at base + q·H
        T pre[4];
        for (int q = 0; q < 4; ++q) {
            pre[q] = x_proj[base + q * hidden];
            if (add_recurrent) pre[q] += recurrent[base + q * hidden];
        }
        const T i = tl_sigmoid(pre[0]), f = tl_sigmoid(pre[1]), g = tl_tanh(pre[2]), o = tl_sigmoid(pre[3]);
        const T c_new = f * c_prev[k] + i * g;
        const T tc = tl_tanh(c_new);
        activations[base] = i;
        activations[base + hidden] = f;
        activations[base + 2 * hidden] = g;
        activations[base + 3 * hidden] = o;
        c[k] = c_new;
        tanh_c[k] = tc;
        h[k] = o * tc;
    }
}

template <typename T>
__device__ void lstm_cell_backward(const T* __restrict__ dh_out, const T* __restrict__ dh_next,
                                   const T* __restrict__ dc, const T* __restrict__ c_prev,
                                   const T* __restrict__ activations, const T* __restrict__ tanh_c,
                                   T* __restrict__ d_gates, T* __restrict__ dc_prev, long long batch, long long hidden) {
    const long long elements = batch * hidden, stride = (long long)gridDim.x * blockDim.x;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < elements; k += stride) {
        const long long b = k / hidden, j = k - b * hidden;
        const long long base = b * 4 * hidden + j;
        const T i = activations[base], f = activations[base + hidden];
        const T g = activations[base + 2 * hidden], o = activations[base + 3 * hidden];
        const T tc = tanh_c[k];
        const T dh_total = dh_out[k] + dh_next[k];  // h feeds the output and the next step
        const T dc_total = dc[k] + dh_total * o * (T(1) - tc * tc);
        d_gates[base] = dc_total * g * i * (T(1) - i);
        d_gates[base + hidden] = dc_total * c_prev[k] * f * (T(1) - f);
        d_gates[base + 2 * hidden] = dc_total * i * (T(1) - g * g);
        d_gates[base + 3 * hidden] = dh_total * tc * o * (T(1) - o);
        dc_prev[k] = dc_total * f;
    }
}

extern "C" __global__ void lstm_cell_forward_f32(const float* __restrict__ x_proj, const float* __restrict__ recurrent,
                                                 int add_recurrent, const float* __restrict__ c_prev,
                                                 float* __restrict__ h, float* __restrict__ c,
                                                 float* __restrict__ activations, float* __restrict__ tanh_c,
                                                 long long batch, long long hidden) {
    lstm_cell_forward(x_proj, recurrent, add_recurrent, c_prev, h, c, activations, tanh_c, batch, hidden);
}
extern "C" __global__ void lstm_cell_forward_f64(const double* __restrict__ x_proj, const double* __restrict__ recurrent,
                                                 int add_recurrent, const double* __restrict__ c_prev,
                                                 double* __restrict__ h, double* __restrict__ c,
                                                 double* __restrict__ activations, double* __restrict__ tanh_c,
                                                 long long batch, long long hidden) {
    lstm_cell_forward(x_proj, recurrent, add_recurrent, c_prev, h, c, activations, tanh_c, batch, hidden);
}
extern "C" __global__ void lstm_cell_backward_f32(const float* __restrict__ dh_out, const float* __restrict__ dh_next,
                                                  const float* __restrict__ dc, const float* __restrict__ c_prev,
                                                  const float* __restrict__ activations, const float* __restrict__ tanh_c,
                                                  float* __restrict__ d_gates, float* __restrict__ dc_prev, long long batch,
                                                  long long hidden) {
    lstm_cell_backward(dh_out, dh_next, dc, c_prev, activations, tanh_c, d_gates, dc_prev, batch, hidden);
}
extern "C" __global__ void lstm_cell_backward_f64(const double* __restrict__ dh_out, const double* __restrict__ dh_next,
                                                  const double* __restrict__ dc, const double* __restrict__ c_prev,
                                                  const double* __restrict__ activations, const double* __restrict__ tanh_c,
                                                  double* __restrict__ d_gates, double* __restrict__ dc_prev, long long batch,
                                                  long long hidden) {
    lstm_cell_backward(dh_out, dh_next, dc, c_prev, activations, tanh_c, d_gates, dc_prev, batch, hidden);
}
