/* adam.cu: the Adam / AdamW update as one fused kernel.
 *
 * Reference: tinylm/reference/adam.py (torch.optim's rule; see its docstring):
 *
 *     AdamW: p <- p (1 - lr λ)          Adam: g <- g + λ p
 *     m <- m + (1 - β1)(g - m);  v <- β2 v + (1 - β2) g²
 *     p <- p - step_size · m / (√v / √(1 - β2^t) + ε),   step_size = lr / (1 - β1^t)
 *
 * What differs from the reference, and why:
 * - One pass: each element's decay, moments and update happen in registers, where the
 *   reference makes about ten passes over memory with temporaries. The update is
 *   memory-bound (7 values read or written per element), so passes are what count.
 * - A grid-stride loop, one element per thread per turn: consecutive threads touch
 *   consecutive elements (coalesced), and any grid size covers any parameter size.
 * - The per-step constants (step_size, √(1 - β2^t), 1 - β1, ...) are computed once on
 *   the host in double and rounded to T, as the reference's Python floats are.
 * - The arrays are updated in place; the wrapper (optim.py) refuses, rather than
 *   copies, anything not C-contiguous, writable, of one dtype and one shape.
 */
#include "tinylm_cuda_common.cuh"

template <typename T>
__device__ void adam_update(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ exp_avg,
                            T* __restrict__ exp_avg_sq, long long count, T step_size, T bias2_sqrt,
                            T one_minus_beta1, T beta2, T one_minus_beta2, T eps, T weight_decay,
                            T decay_factor, int decoupled) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < count; k += stride) {
        T p = param[k], g = grad[k];
        if (decoupled) {
            p = p * decay_factor;  // AdamW: decay outside the gradient
        } else if (weight_decay != T(0)) {
            g = g + weight_decay * p;  // Adam: decay as an L2 term
        }
        const T m = exp_avg[k] + (g - exp_avg[k]) * one_minus_beta1;
        const T v = exp_avg_sq[k] * beta2 + one_minus_beta2 * g * g;
        exp_avg[k] = m;
        exp_avg_sq[k] = v;
        param[k] = p - step_size * (m / (tl_sqrt(v) / bias2_sqrt + eps));
    }
}

extern "C" __global__ void adam_update_f32(float* __restrict__ param, const float* __restrict__ grad,
                                           float* __restrict__ exp_avg, float* __restrict__ exp_avg_sq,
                                           long long count, float step_size, float bias2_sqrt,
                                           float one_minus_beta1, float beta2, float one_minus_beta2, float eps,
                                           float weight_decay, float decay_factor, int decoupled) {
    adam_update(param, grad, exp_avg, exp_avg_sq, count, step_size, bias2_sqrt, one_minus_beta1, beta2,
                one_minus_beta2, eps, weight_decay, decay_factor, decoupled);
}
extern "C" __global__ void adam_update_f64(double* __restrict__ param, const double* __restrict__ grad,
                                           double* __restrict__ exp_avg, double* __restrict__ exp_avg_sq,
                                           long long count, double step_size, double bias2_sqrt,
                                           double one_minus_beta1, double beta2, double one_minus_beta2,
                                           double eps, double weight_decay, double decay_factor, int decoupled) {
    adam_update(param, grad, exp_avg, exp_avg_sq, count, step_size, bias2_sqrt, one_minus_beta1, beta2,
                one_minus_beta2, eps, weight_decay, decay_factor, decoupled);
}
