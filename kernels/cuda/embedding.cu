/* embedding.cu: the embedding forward (a gather) and backward (a scatter-add) on a GPU.
 *
 * Reference: tinylm/reference/embedding.py, whose meaning these keep:
 *
 *     forward:   out[n, d] = weight[ids[n], d]
 *     backward:  grad_weight[v, d] = Σ over n with ids[n] == v of grad_output[n, d]
 *
 * What differs from the reference, and why:
 * - Both kernels are one flat grid-stride loop over the N·D elements, k = n·D + d:
 *   consecutive threads touch consecutive elements, so every warp reads and writes
 *   whole 128-byte lines (coalesced) whatever D is.
 * - The backward scatters with atomicAdd. Positions with the same id add into the same
 *   row concurrently; the atomics make every sum complete, but its order is whatever the
 *   hardware does, so results match the reference to rounding, not bit for bit, and can
 *   differ between two runs. (The Cython kernel splits columns among threads instead, to
 *   stay deterministic; with a GPU's thousands of threads and D of a few hundred, that
 *   would leave most of the GPU idle.) The wrapper zeroes grad_weight first.
 * - The wrapper (embedding.py) checks every id is in [0, V) and passes them as int64,
 *   so the kernels index without checks. Offsets are 64-bit: N·D may pass 2^31.
 */
#include "tinylm_cuda_common.cuh"

template <typename T>
__device__ void embedding_forward(const T* __restrict__ weight, const long long* __restrict__ ids,
                                  T* __restrict__ out, long long elements, long long dim) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < elements; k += stride) {
        const long long n = k / dim, d = k - n * dim;
        out[k] = weight[ids[n] * dim + d];
    }
}

template <typename T>
__device__ void embedding_backward(const T* __restrict__ grad_output, const long long* __restrict__ ids,
                                   T* __restrict__ grad_weight, long long elements, long long dim) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < elements; k += stride) {
        const long long n = k / dim, d = k - n * dim;
        atomicAdd(&grad_weight[ids[n] * dim + d], grad_output[k]);
    }
}

extern "C" __global__ void embedding_forward_f32(const float* __restrict__ weight, const long long* __restrict__ ids,
                                                 float* __restrict__ out, long long elements, long long dim) {
    embedding_forward(weight, ids, out, elements, dim);
}
extern "C" __global__ void embedding_forward_f64(const double* __restrict__ weight, const long long* __restrict__ ids,
                                                 double* __restrict__ out, long long elements, long long dim) {
    embedding_forward(weight, ids, out, elements, dim);
}
extern "C" __global__ void embedding_backward_f32(const float* __restrict__ grad_output, const long long* __restrict__ ids,
                                                  float* __restrict__ grad_weight, long long elements, long long dim) {
    embedding_backward(grad_output, ids, grad_weight, elements, dim);
}
extern "C" __global__ void embedding_backward_f64(const double* __restrict__ grad_output, const long long* __restrict__ ids,
                                                  double* __restrict__ grad_weight, long long elements, long long dim) {
    embedding_backward(grad_output, ids, grad_weight, elements, dim);
}
