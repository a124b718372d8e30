/* attention_softmax.cu: the attention softmax (scale, additive, causal or key padding mask, softmax)
 * forward and backward, one block per row.
 *
 * Reference: tinylm/reference/attention_softmax.py, whose meaning these keep. For a row of
 * scores s (query i, keys j):
 *
 *     z_j = scale · s_j + mask[i, j]   (z_j = -inf where causal and j > i, and where
 *                                       key_padding_mask[b, j] for a row of batch row b)
 *     p_j = e^(z_j - m) / Σ_k e^(z_k - m),   m = max_j z_j;   p = 0 if every z_j = -inf
 *     backward:  ds_j = scale · p_j (g_j - Σ_k g_k p_k)
 *
 * What differs from the reference, and why:
 * - Online softmax: the forward reads the row once to get both the maximum and the sum
 *   (each thread keeps a running (max, sum) over its columns, rescaling its sum when its
 *   maximum grows; see MaxSum in tinylm_cuda_common.cuh), then a second time to write
 *   p. The reference makes a pass for the max, one for e^(z - m), one for the sum and
 *   one for the division, with (rows, S) temporaries in between.
 * - The per-thread (max, sum) pairs are merged across the block with warp shuffles, then
 *   across warps through shared memory (block_max_sum).
 * - The mask is applied on the fly from the (L, S) array (row i of it for every batch
 *   and head), and causal masking is an index comparison: neither is materialised.
 * - So is the key padding mask: uint8 (B, S) (the bool array's bytes), row b of it for
 *   every head and query of batch row b = row / batch_rows. A padded key is -inf before
 *   its score is read, so a NaN score there is not seen, as in the reference.
 * - The backward's Σ g p is one block reduction; then one pass writes ds.
 * - The wrapper passes an empty array and has_mask = 0 (has_padding = 0) when there is
 *   no mask (key padding mask); the kernel then never reads it.
 */
#include "tinylm_cuda_common.cuh"

/* z for column j of a row whose query index is i. */
template <typename T>
__device__ __forceinline__ T masked_score(const T* __restrict__ row, const T* __restrict__ mask_row, int has_mask,
                                          int causal, const unsigned char* __restrict__ padding_row, int has_padding,
                                          long long i, long long j, T scale) {
    if (causal && j > i) return tl_neg_inf<T>();
    if (has_padding && padding_row[j]) return tl_neg_inf<T>();
    T z = row[j] * scale;
    if (has_mask) z = z + mask_row[j];
    return z;
}

template <typename T>
__device__ void attention_softmax_forward(const T* __restrict__ scores, const T* __restrict__ mask, T* __restrict__ probs,
                                          long long rows, long long queries, long long keys, T scale, int has_mask,
                                          int causal, const unsigned char* __restrict__ key_padding_mask,
                                          long long batch_rows, int has_padding) {
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const long long i = row % queries;  // the query index: rows are (..., L) flattened
        const T* in = scores + row * keys;
        const T* mask_row = has_mask ? mask + i * keys : mask;
        // row b of the padding mask, b = the batch row: rows are (B, ..., L) flattened, batch_rows per b
        const unsigned char* padding_row = has_padding ? key_padding_mask + (row / batch_rows) * keys
                                                       : key_padding_mask;
        MaxSum<T> running = max_sum_empty<T>();
        for (long long j = threadIdx.x; j < keys; j += blockDim.x)
            running = max_sum_add(running,
                                  masked_score(in, mask_row, has_mask, causal, padding_row, has_padding, i, j, scale));
        const MaxSum<T> total = block_max_sum(running);
        T* out = probs + row * keys;
        for (long long j = threadIdx.x; j < keys; j += blockDim.x) {
            // an all-masked row has max -inf and sum 0: every p is 0 (e^-inf = 0 needs no special case
            // for the others, since z = -inf gives e^(z - m) = 0 for finite m). Tested on the max, not
            // on sum > 0, so that a NaN or +inf score (sum NaN) gives NaN, not a silent row of zeros.
            const T z = masked_score(in, mask_row, has_mask, causal, padding_row, has_padding, i, j, scale);
            out[j] = total.max != tl_neg_inf<T>() ? tl_exp(z - total.max) / total.sum : T(0);
        }
    }
}

template <typename T>
__device__ void attention_softmax_backward(const T* __restrict__ grad_probs, const T* __restrict__ probs,
                                           T* __restrict__ grad_scores, long long rows, long long keys, T scale) {
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* g = grad_probs + row * keys;
        const T* p = probs + row * keys;
        T partial = 0;
        for (long long j = threadIdx.x; j < keys; j += blockDim.x) partial += g[j] * p[j];
        const T inner = block_sum(partial);  // Σ_k g_k p_k
        T* out = grad_scores + row * keys;
        for (long long j = threadIdx.x; j < keys; j += blockDim.x) out[j] = p[j] * (g[j] - inner) * scale;
    }
}

extern "C" __global__ void attention_softmax_forward_f32(const float* __restrict__ scores, float scale,
                                                         const float* __restrict__ mask, float* __restrict__ probs,
                                                         long long rows, long long queries, long long keys,
                                                         int has_mask, int causal,
                                                         const unsigned char* __restrict__ key_padding_mask,
                                                         long long batch_rows, int has_padding) {
    attention_softmax_forward(scores, mask, probs, rows, queries, keys, scale, has_mask, causal, key_padding_mask,
                              batch_rows, has_padding);
}
extern "C" __global__ void attention_softmax_forward_f64(const double* __restrict__ scores, double scale,
                                                         const double* __restrict__ mask, double* __restrict__ probs,
                                                         long long rows, long long queries, long long keys,
                                                         int has_mask, int causal,
                                                         const unsigned char* __restrict__ key_padding_mask,
                                                         long long batch_rows, int has_padding) {
    attention_softmax_forward(scores, mask, probs, rows, queries, keys, scale, has_mask, causal, key_padding_mask,
                              batch_rows, has_padding);
}
extern "C" __global__ void attention_softmax_backward_f32(const float* __restrict__ grad_probs,
                                                          const float* __restrict__ probs, float* __restrict__ grad_scores,
                                                          long long rows, long long keys, float scale) {
    attention_softmax_backward(grad_probs, probs, grad_scores, rows, keys, scale);
}
extern "C" __global__ void attention_softmax_backward_f64(const double* __restrict__ grad_probs,
                                                          const double* __restrict__ probs, double* __restrict__ grad_scores,
                                                          long long rows, long long keys, double scale) {
    attention_softmax_backward(grad_probs, probs, grad_scores, rows, keys, scale);
}
