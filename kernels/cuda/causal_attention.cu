/* causal_attention.cu: fused causal attention, forward and backward, flash-attention style.
 *
 * Reference: tinylm/reference/causal_attention.py (causal_attention_forward and _backward).
 * For each of the N = batch · heads heads, with q, k, v (T, hs) and query i seeing
 * keys j <= i:
 *
 *     s_ij = scale · q_i · k_j,   l_i = log Σ_j e^(s_ij),   o_i = Σ_j e^(s_ij - l_i) v_j
 *
 * The reference forms the (T, T) matrices s and p in memory. This kernel never does:
 *
 * - A block takes `warps` consecutive queries of one head, one warp per query. The
 *   queries' rows (pre-multiplied by scale) sit in shared memory.
 * - It walks the keys in tiles of 32, only up to its last query (causal: later keys
 *   are masked for every query of the block). All threads load the tile's K and V rows
 *   into shared memory together (coalesced), once for all the block's queries.
 * - In a warp, lane j scores key j of the tile against the warp's query. A warp max
 *   and a warp sum (shuffles) update the query's running maximum m and running sum
 *   l = Σ e^(s - m): the online softmax, where the old sum and the output accumulated
 *   so far are rescaled by e^(m_old - m_new) whenever the maximum grows.
 * - The tile's probabilities go through shared memory (one row of 32 per warp), and
 *   each lane accumulates output dimensions lane, lane + 32, ... (at most 4: hs <= 128)
 *   in registers: o += Σ_j p_j v_j.
 * - At the end o / l is written, and l_i = m + log(l) for the backward. No (T, T) matrix
 *   is written or read: q is read and o written once, k and v once per block of
 *   queries (in shared memory, each row then serves all the block's warps).
 *
 * The backward, below, is fused the same way (two kernels, see there). attention.py
 * also keeps an unfused backward (cuBLAS and the attention_softmax.cu kernels, holding (T, T)
 * matrices) as a second opinion and for comparison.
 *
 * Shared memory of the forward (dynamic, sized by attention.shared_bytes): K tile
 * 32 × (hs + 1) (the padding column puts lane j's row j on its own bank when the lanes
 * read one column each), V tile 32 × hs, the queries warps × hs, the probabilities
 * warps × 32.
 */
#include "tinylm_cuda_common.cuh"

#define ATTENTION_KEY_TILE 32   // keys per tile: one per lane
#define ATTENTION_MAX_HEAD 128  // largest head size: each lane holds hs / 32 <= 4 outputs

template <typename T>
__device__ void causal_attention_forward(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                         T* __restrict__ out, T* __restrict__ logsumexp, long long heads,
                                         long long steps, int head_size, T scale) {
    TINYLM_DYNAMIC_SHARED(T, shared);
    const int warps = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int padded = head_size + 1;
    T* k_tile = shared;                                // [32][hs + 1]
    T* v_tile = k_tile + ATTENTION_KEY_TILE * padded;  // [32][hs]
    T* q_rows = v_tile + ATTENTION_KEY_TILE * head_size;  // [warps][hs], times scale
    T* p_rows = q_rows + warps * head_size;            // [warps][32]
    const long long query_tiles = (steps + warps - 1) / warps;

    for (long long tile = blockIdx.x; tile < heads * query_tiles; tile += gridDim.x) {  // block-uniform
        const long long n = tile / query_tiles;
        const long long first = (tile % query_tiles) * warps;
        const long long last = (first + warps < steps ? first + warps : steps) - 1;  // the block's last query
        const bool active = first + warp < steps;
        const long long i = active ? first + warp : last;  // idle warps shadow the last query, store nothing
        const T* qh = q + n * steps * head_size;
        const T* kh = k + n * steps * head_size;
        const T* vh = v + n * steps * head_size;

        __syncthreads();  // the previous tile's warps are done with q_rows
        for (int d = lane; d < head_size; d += 32) q_rows[warp * head_size + d] = qh[i * head_size + d] * scale;

        T acc[ATTENTION_MAX_HEAD / 32];
        for (int c = 0; c < ATTENTION_MAX_HEAD / 32; ++c) acc[c] = T(0);
        T m = tl_neg_inf<T>(), l = T(0);

        for (long long key0 = 0; key0 <= last; key0 += ATTENTION_KEY_TILE) {
            __syncthreads();  // everyone is done with the previous K, V and p tiles
            for (int e = threadIdx.x; e < ATTENTION_KEY_TILE * head_size; e += blockDim.x) {
                const int j = e / head_size, d = e - j * head_size;
                const long long key = key0 + j;
                k_tile[j * padded + d] = key < steps ? kh[key * head_size + d] : T(0);
                v_tile[j * head_size + d] = key < steps ? vh[key * head_size + d] : T(0);
            }
            __syncthreads();

            const long long key = key0 + lane;
            T s = tl_neg_inf<T>();  // masked: a key after the query (or past the end)
            if (key <= i) {
                s = T(0);
                for (int d = 0; d < head_size; ++d) s += q_rows[warp * head_size + d] * k_tile[lane * padded + d];
            }
            // Key 0 is in the first tile and visible to every query, so m_new is finite.
            const T m_new = tl_max(m, warp_max(s));
            const T p = tl_exp(s - m_new);            // 0 where masked
            const T correction = tl_exp(m - m_new);   // 0 on the first tile, where m = -inf
            l = l * correction + warp_sum(p);
            m = m_new;
            p_rows[warp * 32 + lane] = p;
            __syncwarp();
            for (int c = 0; c < ATTENTION_MAX_HEAD / 32; ++c) acc[c] *= correction;
            for (int j = 0; j < ATTENTION_KEY_TILE; ++j) {
                const T pj = p_rows[warp * 32 + j];
                for (int c = 0; c < ATTENTION_MAX_HEAD / 32; ++c) {
                    const int d = lane + 32 * c;
                    if (d < head_size) acc[c] += pj * v_tile[j * head_size + d];
                }
            }
        }
        if (active) {
            T* oh = out + (n * steps + i) * head_size;
            for (int c = 0; c < ATTENTION_MAX_HEAD / 32; ++c) {
                const int d = lane + 32 * c;
                if (d < head_size) oh[d] = acc[c] / l;
            }
            if (lane == 0) logsumexp[n * steps + i] = m + tl_log(l);
        }
    }
}

/* ------------------------------------------------------------------ backward
 *
 * With the forward's l_i, any p_ij = e^(s_ij - l_i) can be recomputed from q_i and k_j
 * alone, and with D_i = g_i · o_i (g = dL/do; the wrapper computes D, N·T numbers) the
 * softmax backward needs no sum over keys either (see tinylm/reference/causal_attention.py):
 *
 *     dp_ij = g_i · v_j,   ds_ij = p_ij (dp_ij - D_i)
 *     dv_j = Σ_i p_ij g_i,   dk_j = scale Σ_i ds_ij q_i,   dq_i = scale Σ_j ds_ij k_j
 *
 * Two kernels, each the forward's pattern again, so that neither needs atomics and the
 * sums run in a fixed order:
 * - causal_attention_backward_kv: a warp per key j, lanes over tiles of 32 queries
 *   i >= j (Q and dO tiles in shared memory, shared by the block's keys); each lane
 *   scores its query, and the warp accumulates dv_j and dk_j in registers.
 * - causal_attention_backward_q: a warp per query i, lanes over tiles of 32 keys j <= i
 *   (K and V tiles in shared memory); the warp accumulates dq_i.
 * The scores are recomputed twice (once per kernel), the price of no atomics. Nothing
 * of size T × T is ever stored.
 */

/* dot product of two rows of length n in shared memory */
template <typename T>
__device__ __forceinline__ T row_dot(const T* a, const T* b, int n) {
    T sum = T(0);
    for (int d = 0; d < n; ++d) sum += a[d] * b[d];
    return sum;
}

template <typename T>
__device__ void causal_attention_backward_kv(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                             const T* __restrict__ grad_out, const T* __restrict__ logsumexp,
                                             const T* __restrict__ delta, T* __restrict__ grad_k,
                                             T* __restrict__ grad_v, long long heads, long long steps, int head_size,
                                             T scale) {
    TINYLM_DYNAMIC_SHARED(T, shared);
    const int warps = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int padded = head_size + 1;
    T* q_tile = shared;                                   // [32][hs + 1]: queries of the tile
    T* g_tile = q_tile + ATTENTION_KEY_TILE * padded;     // [32][hs + 1]: their dL/do
    T* lse_tile = g_tile + ATTENTION_KEY_TILE * padded;   // [32]
    T* delta_tile = lse_tile + ATTENTION_KEY_TILE;        // [32]
    T* k_rows = delta_tile + ATTENTION_KEY_TILE;          // [warps][hs]: each warp's key
    T* v_rows = k_rows + warps * head_size;               // [warps][hs]
    T* p_rows = v_rows + warps * head_size;               // [warps][32]
    T* ds_rows = p_rows + warps * 32;                     // [warps][32]
    const long long key_tiles = (steps + warps - 1) / warps;

    for (long long tile = blockIdx.x; tile < heads * key_tiles; tile += gridDim.x) {  // block-uniform
        const long long n = tile / key_tiles;
        const long long first = (tile % key_tiles) * warps;  // the block's first key
        const bool active = first + warp < steps;
        const long long j = active ? first + warp : steps - 1;
        const long long offset = n * steps * head_size;

        __syncthreads();  // the previous tile's warps are done with k_rows, v_rows
        for (int d = lane; d < head_size; d += 32) {
            k_rows[warp * head_size + d] = k[offset + j * head_size + d];
            v_rows[warp * head_size + d] = v[offset + j * head_size + d];
        }
        T dk[ATTENTION_MAX_HEAD / 32], dv[ATTENTION_MAX_HEAD / 32];
        for (int c = 0; c < ATTENTION_MAX_HEAD / 32; ++c) dk[c] = dv[c] = T(0);

        // Queries before the block's first key see none of its keys: start there.
        for (long long query0 = first; query0 < steps; query0 += ATTENTION_KEY_TILE) {
            __syncthreads();  // everyone is done with the previous Q, dO, p and ds tiles
            for (int e = threadIdx.x; e < ATTENTION_KEY_TILE * head_size; e += blockDim.x) {
                const int r = e / head_size, d = e - r * head_size;
                const long long i = query0 + r;
                q_tile[r * padded + d] = i < steps ? q[offset + i * head_size + d] : T(0);
                g_tile[r * padded + d] = i < steps ? grad_out[offset + i * head_size + d] : T(0);
            }
            for (int r = threadIdx.x; r < ATTENTION_KEY_TILE; r += blockDim.x) {
                const long long i = query0 + r;
                lse_tile[r] = i < steps ? logsumexp[n * steps + i] : T(0);
                delta_tile[r] = i < steps ? delta[n * steps + i] : T(0);
            }
            __syncthreads();

            const long long i = query0 + lane;  // this lane's query
            T p = T(0), ds = T(0);
            if (i < steps && i >= j) {
                p = tl_exp(scale * row_dot(q_tile + lane * padded, k_rows + warp * head_size, head_size) - lse_tile[lane]);
                const T dp = row_dot(g_tile + lane * padded, v_rows + warp * head_size, head_size);
                ds = p * (dp - delta_tile[lane]);
            }
            p_rows[warp * 32 + lane] = p;
            ds_rows[warp * 32 + lane] = ds;
            __syncwarp();
            for (int r = 0; r < ATTENTION_KEY_TILE; ++r) {
                const T pr = p_rows[warp * 32 + r], dsr = ds_rows[warp * 32 + r];
                for (int c = 0; c < ATTENTION_MAX_HEAD / 32; ++c) {
                    const int d = lane + 32 * c;
                    if (d < head_size) {
                        dv[c] += pr * g_tile[r * padded + d];
                        dk[c] += dsr * q_tile[r * padded + d];
                    }
                }
            }
        }
        if (active) {
            for (int c = 0; c < ATTENTION_MAX_HEAD / 32; ++c) {
                const int d = lane + 32 * c;
                if (d < head_size) {
                    grad_v[offset + j * head_size + d] = dv[c];
                    grad_k[offset + j * head_size + d] = scale * dk[c];
                }
            }
        }
    }
}

template <typename T>
__device__ void causal_attention_backward_q(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                            const T* __restrict__ grad_out, const T* __restrict__ logsumexp,
                                            const T* __restrict__ delta, T* __restrict__ grad_q, long long heads,
                                            long long steps, int head_size, T scale) {
    TINYLM_DYNAMIC_SHARED(T, shared);
    const int warps = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int padded = head_size + 1;
    T* k_tile = shared;                                  // [32][hs + 1]
    T* v_tile = k_tile + ATTENTION_KEY_TILE * padded;    // [32][hs + 1]: lane j reads row j, as for K
    T* q_rows = v_tile + ATTENTION_KEY_TILE * padded;    // [warps][hs]
    T* g_rows = q_rows + warps * head_size;              // [warps][hs]
    T* ds_rows = g_rows + warps * head_size;             // [warps][32]
    const long long query_tiles = (steps + warps - 1) / warps;

    for (long long tile = blockIdx.x; tile < heads * query_tiles; tile += gridDim.x) {  // block-uniform
        const long long n = tile / query_tiles;
        const long long first = (tile % query_tiles) * warps;
        const long long last = (first + warps < steps ? first + warps : steps) - 1;
        const bool active = first + warp < steps;
        const long long i = active ? first + warp : last;
        const long long offset = n * steps * head_size;
        const T lse = logsumexp[n * steps + i], d_i = delta[n * steps + i];

        __syncthreads();  // the previous tile's warps are done with q_rows, g_rows
        for (int d = lane; d < head_size; d += 32) {
            q_rows[warp * head_size + d] = q[offset + i * head_size + d];
            g_rows[warp * head_size + d] = grad_out[offset + i * head_size + d];
        }
        T dq[ATTENTION_MAX_HEAD / 32];
        for (int c = 0; c < ATTENTION_MAX_HEAD / 32; ++c) dq[c] = T(0);

        for (long long key0 = 0; key0 <= last; key0 += ATTENTION_KEY_TILE) {
            __syncthreads();  // everyone is done with the previous K, V and ds tiles
            for (int e = threadIdx.x; e < ATTENTION_KEY_TILE * head_size; e += blockDim.x) {
                const int r = e / head_size, d = e - r * head_size;
                const long long key = key0 + r;
                k_tile[r * padded + d] = key < steps ? k[offset + key * head_size + d] : T(0);
                v_tile[r * padded + d] = key < steps ? v[offset + key * head_size + d] : T(0);
            }
            __syncthreads();

            const long long key = key0 + lane;
            T ds = T(0);
            if (key <= i) {
                const T p = tl_exp(scale * row_dot(q_rows + warp * head_size, k_tile + lane * padded, head_size) - lse);
                const T dp = row_dot(g_rows + warp * head_size, v_tile + lane * padded, head_size);
                ds = p * (dp - d_i);
            }
            ds_rows[warp * 32 + lane] = ds;
            __syncwarp();
            for (int r = 0; r < ATTENTION_KEY_TILE; ++r) {
                const T dsr = ds_rows[warp * 32 + r];
                for (int c = 0; c < ATTENTION_MAX_HEAD / 32; ++c) {
                    const int d = lane + 32 * c;
                    if (d < head_size) dq[c] += dsr * k_tile[r * padded + d];
                }
            }
        }
        if (active) {
            for (int c = 0; c < ATTENTION_MAX_HEAD / 32; ++c) {
                const int d = lane + 32 * c;
                if (d < head_size) grad_q[offset + i * head_size + d] = scale * dq[c];
            }
        }
    }
}

extern "C" __global__ void causal_attention_forward_f32(const float* __restrict__ q, const float* __restrict__ k,
                                                        const float* __restrict__ v, float* __restrict__ out,
                                                        float* __restrict__ logsumexp, long long heads,
                                                        long long steps, int head_size, float scale) {
    causal_attention_forward(q, k, v, out, logsumexp, heads, steps, head_size, scale);
}
extern "C" __global__ void causal_attention_forward_f64(const double* __restrict__ q, const double* __restrict__ k,
                                                        const double* __restrict__ v, double* __restrict__ out,
                                                        double* __restrict__ logsumexp, long long heads,
                                                        long long steps, int head_size, double scale) {
    causal_attention_forward(q, k, v, out, logsumexp, heads, steps, head_size, scale);
}
extern "C" __global__ void causal_attention_backward_kv_f32(const float* __restrict__ grad_out, const float* __restrict__ q,
                                                            const float* __restrict__ k, const float* __restrict__ v,
                                                            const float* __restrict__ logsumexp, const float* __restrict__ delta,
                                                            float* __restrict__ grad_k, float* __restrict__ grad_v,
                                                            long long heads, long long steps, int head_size, float scale) {
    causal_attention_backward_kv(q, k, v, grad_out, logsumexp, delta, grad_k, grad_v, heads, steps, head_size, scale);
}
extern "C" __global__ void causal_attention_backward_q_f32(const float* __restrict__ grad_out, const float* __restrict__ q,
                                                           const float* __restrict__ k, const float* __restrict__ v,
                                                           const float* __restrict__ logsumexp, const float* __restrict__ delta,
                                                           float* __restrict__ grad_q,
                                                           long long heads, long long steps, int head_size, float scale) {
    causal_attention_backward_q(q, k, v, grad_out, logsumexp, delta, grad_q, heads, steps, head_size, scale);
}
extern "C" __global__ void causal_attention_backward_kv_f64(const double* __restrict__ grad_out, const double* __restrict__ q,
                                                            const double* __restrict__ k, const double* __restrict__ v,
                                                            const double* __restrict__ logsumexp, const double* __restrict__ delta,
                                                            double* __restrict__ grad_k, double* __restrict__ grad_v,
                                                            long long heads, long long steps, int head_size, double scale) {
    causal_attention_backward_kv(q, k, v, grad_out, logsumexp, delta, grad_k, grad_v, heads, steps, head_size, scale);
}
extern "C" __global__ void causal_attention_backward_q_f64(const double* __restrict__ grad_out, const double* __restrict__ q,
                                                           const double* __restrict__ k, const double* __restrict__ v,
                                                           const double* __restrict__ logsumexp, const double* __restrict__ delta,
                                                           double* __restrict__ grad_q,
                                                           long long heads, long long steps, int head_size, double scale) {
    causal_attention_backward_q(q, k, v, grad_out, logsumexp, delta, grad_q, heads, steps, head_size, scale);
}
