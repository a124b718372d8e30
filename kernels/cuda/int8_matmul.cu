/* int8_matmul.cu: x (M, K) float @ (scale · weight)ᵀ with weight (N, K) int8 -> y (M, N).
 *
 * Reference: tinylm/reference/int8_matmul.py. The scale of a weight row factors out of
 * the row's sum, so each int8 value is converted to T and multiplied into an
 * accumulator of T (x's type), and each output is scaled once:
 *
 *     y[m, n] = scale[n] · Σ_k x[m, k] · float(weight[n, k])
 *
 * One warp per weight row n (grid-stride over rows, a block's warps taking consecutive
 * rows): the lanes read the row's bytes side by side (coalesced), each accumulating
 * every 32nd column, then a butterfly sum. The warp does every row m of x for its weight
 * row, so at M > 1 the row is re-read from L1/L2, not from memory. That suits batch-1
 * sampling (M = 1), where the product is a matrix-vector one and the weights' bytes are
 * the cost; a large M would want a tiled kernel (or cuBLAS on dequantized tiles).
 *
 * The weights arrive as unsigned char (the launcher's C types have no int8; the wrapper
 * passes a uint8 view of the same bytes) and are read back as signed char here: -128..127,
 * so -128 (which quantize_per_channel never makes, but a file may hold) is computed with
 * like any other value.
 *
 * What differs from the reference: the order of the additions (a lane's strided sum,
 * then the warp's butterfly), and the GPU may contract products and sums into FMAs:
 * results agree to rounding, not bit for bit.
 *
 * Every thread of a block runs the same number of passes of the row loop (the loop
 * bound is the block's first row, uniform in the block), so all reach every shuffle.
 */
#include "tinylm_cuda_common.cuh"

template <typename T>
__device__ void int8_matmul(const T* __restrict__ x, const unsigned char* __restrict__ weight,
                            const float* __restrict__ scale, T* __restrict__ y, long long M, long long N,
                            long long K) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    const long long stride = (long long)gridDim.x * warps;
    for (long long first = (long long)blockIdx.x * warps; first < N; first += stride) {
        const long long n = first + warp;  // this warp's weight row (past N: a warp with no row)
        const unsigned char* row = weight + (n < N ? n : 0) * K;
        for (long long m = 0; m < M; m++) {
            T sum = T(0);
            if (n < N) {
                const T* xm = x + m * K;
                for (long long k = lane; k < K; k += 32) sum += xm[k] * T((signed char)row[k]);
            }
            sum = warp_sum(sum);  // every lane of every warp, row or none
            if (n < N && lane == 0) y[m * N + n] = T(scale[n]) * sum;
        }
    }
}

extern "C" __global__ void int8_matmul_f32(const float* __restrict__ x, const unsigned char* __restrict__ weight,
                                           const float* __restrict__ scale, float* __restrict__ y, long long M,
                                           long long N, long long K) {
    int8_matmul(x, weight, scale, y, M, N, K);
}
extern "C" __global__ void int8_matmul_f64(const double* __restrict__ x, const unsigned char* __restrict__ weight,
                                           const float* __restrict__ scale, double* __restrict__ y, long long M,
                                           long long N, long long K) {
    int8_matmul(x, weight, scale, y, M, N, K);
}
