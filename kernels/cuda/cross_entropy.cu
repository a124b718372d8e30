/* cross_entropy.cu: log-softmax and negative log-likelihood fused, forward and backward.
 *
 * Reference: tinylm/reference/cross_entropy.py, whose meaning these keep. For logits
 * x (N, C) and targets t (N,):
 *
 *     lse_n = log Σ_j e^(x_nj),  loss_n = lse_n - x_n,t_n     (0 where t_n = ignore_index)
 *     backward:  dx_nj = (e^(x_nj - lse_n) - [j = t_n]) · dloss_n   (0 on ignored rows)
 *
 * What differs from the reference, and why:
 * - The forward is one block per row and one read of the row: an online (max, sum)
 *   per thread, merged across the block (block_max_sum), gives lse = max + log(sum)
 *   without a separate pass for the maximum. Subtracting the running maximum keeps
 *   e^x finite for logits of ±1e4, as the reference's row_max does.
 * - Only lse (N numbers) is kept for the backward, as in the reference: no (N, C)
 *   probabilities are stored.
 * - The backward is elementwise (a flat grid-stride loop over N·C): the softmax is
 *   rebuilt from lse, the one-hot is a comparison of indices, and the (N, C) gradient
 *   is written once, where the reference makes an exp pass, a scatter and a multiply.
 * - Targets arrive as int64; the wrapper has checked each is in [0, C) or equal to
 *   ignore_index, and the kernels compare with ignore_index before indexing by one.
 */
#include "tinylm_cuda_common.cuh"

template <typename T>
__device__ void cross_entropy_forward(const T* __restrict__ logits, const long long* __restrict__ targets,
                                      T* __restrict__ losses, T* __restrict__ logsumexp, long long rows,
                                      long long classes, long long ignore_index) {
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* x = logits + row * classes;
        MaxSum<T> running = max_sum_empty<T>();
        for (long long j = threadIdx.x; j < classes; j += blockDim.x) running = max_sum_add(running, x[j]);
        const MaxSum<T> total = block_max_sum(running);
        if (threadIdx.x == 0) {
            const T lse = total.max + tl_log(total.sum);
            const long long target = targets[row];
            logsumexp[row] = lse;
            losses[row] = target == ignore_index ? T(0) : lse - x[target];
        }
    }
}

template <typename T>
__device__ void cross_entropy_backward(const T* __restrict__ grad_losses, const T* __restrict__ logits,
                                       const long long* __restrict__ targets, const T* __restrict__ logsumexp,
                                       T* __restrict__ grad_logits, long long rows, long long classes,
                                       long long ignore_index) {
    const long long elements = rows * classes, stride = (long long)gridDim.x * blockDim.x;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < elements; k += stride) {
        const long long n = k / classes, j = k - n * classes;
        const long long target = targets[n];
        if (target == ignore_index) {
            grad_logits[k] = T(0);
        } else {
            const T softmax = tl_exp(logits[k] - logsumexp[n]);
            grad_logits[k] = (j == target ? softmax - T(1) : softmax) * grad_losses[n];
        }
    }
}

extern "C" __global__ void cross_entropy_forward_f32(const float* __restrict__ logits, const long long* __restrict__ targets,
                                                     float* __restrict__ losses, float* __restrict__ logsumexp,
                                                     long long rows, long long classes, long long ignore_index) {
    cross_entropy_forward(logits, targets, losses, logsumexp, rows, classes, ignore_index);
}
extern "C" __global__ void cross_entropy_forward_f64(const double* __restrict__ logits, const long long* __restrict__ targets,
                                                     double* __restrict__ losses, double* __restrict__ logsumexp,
                                                     long long rows, long long classes, long long ignore_index) {
    cross_entropy_forward(logits, targets, losses, logsumexp, rows, classes, ignore_index);
}
extern "C" __global__ void cross_entropy_backward_f32(const float* __restrict__ grad_losses, const float* __restrict__ logits,
                                                      const long long* __restrict__ targets,
                                                      const float* __restrict__ logsumexp, float* __restrict__ grad_logits,
                                                      long long rows, long long classes, long long ignore_index) {
    cross_entropy_backward(grad_losses, logits, targets, logsumexp, grad_logits, rows, classes, ignore_index);
}
extern "C" __global__ void cross_entropy_backward_f64(const double* __restrict__ grad_losses, const double* __restrict__ logits,
                                                      const long long* __restrict__ targets,
                                                      const double* __restrict__ logsumexp, double* __restrict__ grad_logits,
                                                      long long rows, long long classes, long long ignore_index) {
    cross_entropy_backward(grad_losses, logits, targets, logsumexp, grad_logits, rows, classes, ignore_index);
}
