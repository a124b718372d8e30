/* layer_norm.cu: LayerNorm forward and backward over the last axis of x (N, D).
 *
 * Reference: tinylm/reference/layer_norm.py, whose meaning these keep:
 *
 *     forward:   μ = mean(x), r = 1/√(mean((x - μ)²) + ε), x̂ = (x - μ) r, y = x̂ w + b
 *     backward:  ĝ = dy ⊙ w;  dx = r (ĝ - mean(ĝ) - x̂ mean(ĝ x̂))
 *                dw = Σ_n dy ⊙ x̂,  db = Σ_n dy
 *
 * What differs from the reference, and why:
 * - One block per row (a grid-stride loop over rows, so any grid size works): the
 *   block's threads stride over the D columns, and the row sums are block reductions
 *   (warp shuffles, then one value per warp through shared memory). The mean and the
 *   variance are two passes over the row, as in the reference, rather than one pass of
 *   Σx and Σx²: the second pass reads the row again from the cache, and subtracting the
 *   mean first avoids the cancellation of E[x²] - E[x]² when |μ| is large against σ.
 * - The backward's two row sums (ĝ and ĝ x̂) are two block reductions in one pass; x̂ is
 *   recomputed from the saved mean and rstd, as in the reference.
 * - dw and db are column sums over the rows. Rather than atomics into D values (every
 *   row would collide on the same D addresses), layer_norm_weight_grad has each thread
 *   own one column and walk a chunk of the rows (consecutive threads, consecutive
 *   columns: coalesced); chunk c of the rows writes partial[c, :] and the wrapper adds
 *   the (few) chunks. The result is deterministic.
 * - Without a weight (or bias) the wrapper passes ones (zeros): x̂ · 1 + 0 is x̂ exactly.
 */
#include "tinylm_cuda_common.cuh"

template <typename T>
__device__ void layer_norm_forward(const T* __restrict__ x, const T* __restrict__ weight, const T* __restrict__ bias,
                                   T* __restrict__ y, T* __restrict__ mean, T* __restrict__ rstd,
                                   long long rows, long long dim, T eps) {
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {  // the same trip count in every thread
        const T* xr = x + row * dim;
        T sum = 0;
        for (long long d = threadIdx.x; d < dim; d += blockDim.x) sum += xr[d];
        const T mu = block_sum(sum) / T(dim);
        T squares = 0;
        for (long long d = threadIdx.x; d < dim; d += blockDim.x) {
            const T centered = xr[d] - mu;
            squares += centered * centered;
        }
        const T r = T(1) / tl_sqrt(block_sum(squares) / T(dim) + eps);
        T* yr = y + row * dim;
        for (long long d = threadIdx.x; d < dim; d += blockDim.x) yr[d] = (xr[d] - mu) * r * weight[d] + bias[d];
        if (threadIdx.x == 0) {
            mean[row] = mu;
            rstd[row] = r;
        }
    }
}

template <typename T>
__device__ void layer_norm_backward(const T* __restrict__ grad_y, const T* __restrict__ x, const T* __restrict__ weight,
                                    const T* __restrict__ mean, const T* __restrict__ rstd, T* __restrict__ grad_x,
                                    long long rows, long long dim) {
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* xr = x + row * dim;
        const T* gr = grad_y + row * dim;
        const T mu = mean[row], r = rstd[row];
        T sum_g = 0, sum_gx = 0;  // Σ ĝ and Σ ĝ x̂ over the row
        for (long long d = threadIdx.x; d < dim; d += blockDim.x) {
            const T g_hat = gr[d] * weight[d];
            sum_g += g_hat;
            sum_gx += g_hat * ((xr[d] - mu) * r);
        }
        const T mean_g = block_sum(sum_g) / T(dim);
        const T mean_gx = block_sum(sum_gx) / T(dim);
        T* out = grad_x + row * dim;
        for (long long d = threadIdx.x; d < dim; d += blockDim.x) {
            const T x_hat = (xr[d] - mu) * r;
            out[d] = r * (gr[d] * weight[d] - mean_g - x_hat * mean_gx);
        }
    }
}

/* grid (column blocks, row chunks): partial_w[c, d] = Σ over rows n of chunk c of
 * dy[n, d] x̂[n, d], and partial_b[c, d] = Σ dy[n, d]. No reductions across threads,
 * so no barriers: each thread owns its column. */
template <typename T>
__device__ void layer_norm_weight_grad(const T* __restrict__ grad_y, const T* __restrict__ x,
                                       const T* __restrict__ mean, const T* __restrict__ rstd,
                                       T* __restrict__ partial_w, T* __restrict__ partial_b,
                                       long long rows, long long dim, long long rows_per_chunk) {
    const long long first = (long long)blockIdx.y * rows_per_chunk;
    const long long last = first + rows_per_chunk < rows ? first + rows_per_chunk : rows;
    for (long long d = (long long)blockIdx.x * blockDim.x + threadIdx.x; d < dim; d += (long long)gridDim.x * blockDim.x) {
        T sum_w = 0, sum_b = 0;
        for (long long n = first; n < last; ++n) {
            const T g = grad_y[n * dim + d];
            sum_w += g * ((x[n * dim + d] - mean[n]) * rstd[n]);
            sum_b += g;
        }
        partial_w[blockIdx.y * dim + d] = sum_w;
        partial_b[blockIdx.y * dim + d] = sum_b;
    }
}

extern "C" __global__ void layer_norm_forward_f32(const float* __restrict__ x, const float* __restrict__ weight,
                                              const float* __restrict__ bias, float* __restrict__ y, float* __restrict__ mean,
                                              float* __restrict__ rstd, long long rows, long long dim, float eps) {
    layer_norm_forward(x, weight, bias, y, mean, rstd, rows, dim, eps);
}
extern "C" __global__ void layer_norm_backward_f32(const float* __restrict__ grad_y, const float* __restrict__ x,
                                               const float* __restrict__ weight, const float* __restrict__ mean,
                                               const float* __restrict__ rstd, float* __restrict__ grad_x, long long rows,
                                               long long dim) {
    layer_norm_backward(grad_y, x, weight, mean, rstd, grad_x, rows, dim);
}
extern "C" __global__ void layer_norm_weight_grad_f32(const float* __restrict__ grad_y, const float* __restrict__ x,
                                                  const float* __restrict__ mean, const float* __restrict__ rstd,
                                                  float* __restrict__ partial_w, float* __restrict__ partial_b,
                                                  long long rows, long long dim, long long rows_per_chunk) {
    layer_norm_weight_grad(grad_y, x, mean, rstd, partial_w, partial_b, rows, dim, rows_per_chunk);
}

extern "C" __global__ void layer_norm_forward_f64(const double* __restrict__ x, const double* __restrict__ weight,
                                              const double* __restrict__ bias, double* __restrict__ y, double* __restrict__ mean,
                                              double* __restrict__ rstd, long long rows, long long dim, double eps) {
    layer_norm_forward(x, weight, bias, y, mean, rstd, rows, dim, eps);
}
extern "C" __global__ void layer_norm_backward_f64(const double* __restrict__ grad_y, const double* __restrict__ x,
                                               const double* __restrict__ weight, const double* __restrict__ mean,
                                               const double* __restrict__ rstd, double* __restrict__ grad_x, long long rows,
                                               long long dim) {
    layer_norm_backward(grad_y, x, weight, mean, rstd, grad_x, rows, dim);
}
extern "C" __global__ void layer_norm_weight_grad_f64(const double* __restrict__ grad_y, const double* __restrict__ x,
                                                  const double* __restrict__ mean, const double* __restrict__ rstd,
                                                  double* __restrict__ partial_w, double* __restrict__ partial_b,
                                                  long long rows, long long dim, long long rows_per_chunk) {
    layer_norm_weight_grad(grad_y, x, mean, rstd, partial_w, partial_b, rows, dim, rows_per_chunk);
}
