/* An LSTM layer's loop over time in float32, forward and backward, in one OpenMP region
 * each, with the recurrent products on the packed micro-kernel of tinylm_gemm.h.
 * The maths is tinylm/reference/lstm.py's; kernels/cpu/lstm.pyx calls these for float32
 * batches of at least half a register tile (smaller batches and float64 keep its
 * OpenBLAS loop).
 *
 * Why one region, and who does what:
 *
 *   Thread t owns the hidden units of its share of NR-wide panels, [u0, u1). In the
 *   forward step it computes the four gate columns of its units (i, f, c̃, o: columns
 *   g·H + j of h_{t-1} W_hhᵀ) with its share of the packed W_hhᵀ, which is all its
 *   units' cells need, so the cell follows at once; the one barrier per step is there
 *   because the next product reads the whole new h. Its share of the weights (the
 *   default model's 1 MiB W_hh: 512 KiB a core) is the same at every step and stays in
 *   its core's L2, and W_hh is packed once per sequence, not once per product as
 *   OpenBLAS does.
 *
 *   Backward, step t: the thread computes the gate gradients of its units (the cell's
 *   backward), a barrier (the product reads every unit's), then its units' columns of
 *   dL/dh_{t-1} = dgates_t W_hh, which only its own cell reads next: one barrier a step.
 *
 *   The product's left operand is packed as the micro-kernel reads it (MR-row panels,
 *   tinylm_gemm_pack_a's layout over the whole k), and each thread packs its own units'
 *   columns of what its cells wrote, h_t (forward) or dgates_t (backward); two
 *   packed buffers alternate, so a thread writing step t's never races one still
 *   reading step t-1's (a barrier lies between any two uses of one buffer). The packed
 *   buffers' rows past B (the last panel's padding) are zeros from the caller and never
 *   written; the tiles they meet are edge tiles, of which only the valid rows are stored.
 *
 * Every sum is done by one thread in one order, so results do not depend on the number
 * of threads. Sizes and strides are the caller's to check: nothing is checked here. */
#ifndef TINYLM_LSTM_H
#define TINYLM_LSTM_H
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif
#include "tinylm_gemm.h"
#include "tinylm_math.h"

/* Floats in a packed left operand of m rows and k columns (rows padded to MR). */
static inline int64_t tinylm_lstm_packed_rows(int64_t m, int64_t k) {
    return (m + TINYLM_GEMM_MR - 1) / TINYLM_GEMM_MR * TINYLM_GEMM_MR * k;
}

/* Columns [j0, j1) of the m x k matrix x (row stride ldx) into its packed copy (row panels of
 * MR, tinylm_gemm_pack_a's layout over the whole k): for each panel and column the MR
 * values are contiguous there, so they are written in that order (row by row, each write
 * would land on a different cache line: a third of the cells' time on two threads). */
static inline void tinylm_lstm_pack_columns(int64_t m, int64_t k, const float *x, int64_t ldx, int64_t j0,
                                            int64_t j1, float *packed) {
    const int64_t MR = TINYLM_GEMM_MR;
    for (int64_t r = 0; r < m; r += MR) {
        const int64_t height = tinylm_gemm_min(MR, m - r);
        float *panel = packed + r * k;
        for (int64_t j = j0; j < j1; j++)
            for (int64_t i = 0; i < height; i++) panel[j * MR + i] = x[(r + i) * ldx + j];
    }
}

/* W_hh (4H, H) -> the forward's right operands: W_hhᵀ's four gate blocks (H, H), each
 * packed by tinylm_gemm_pack_b, one after another (gate g at + g·tinylm_gemm_packed_size(H, H)).
 * Packing each gate apart keeps a panel inside one gate when H is not a multiple of NR. */
static void tinylm_lstm_pack_forward(int64_t hidden, const float *w_hh, float *packed) {
    const int64_t size = tinylm_gemm_packed_size(hidden, hidden);
    for (int64_t g = 0; g < 4; g++)  /* W_hhᵀ[p, gH + j] = W_hh[gH + j, p]: row stride 1, column stride H */
        tinylm_gemm_pack_b(hidden, hidden, w_hh + g * hidden * hidden, 1, hidden, packed + g * size);
}

/* W_hh (4H, H) -> the backward's right operand: W_hh itself, k = 4H, n = H. */
static void tinylm_lstm_pack_backward(int64_t hidden, const float *w_hh, float *packed) {
    tinylm_gemm_pack_b(4 * hidden, hidden, w_hh, hidden, 1, packed);
}

/* This thread's units [u0, u1): whole NR-panels of the H units, split as evenly as the team allows. */
static inline void tinylm_lstm_my_units(int64_t hidden, int64_t *q0, int64_t *q1, int64_t *u0, int64_t *u1) {
    tinylm_my_share((hidden + TINYLM_GEMM_NR - 1) / TINYLM_GEMM_NR, 1, q0, q1);
    *u0 = tinylm_gemm_min(hidden, *q0 * TINYLM_GEMM_NR);
    *u1 = tinylm_gemm_min(hidden, *q1 * TINYLM_GEMM_NR);
}

/* One row's cell forward for units [u0, u1); the same operations, in the same order, as
 * lstm.pyx's _cell_forward_row (the build turns off FMA contraction, so the bits match).
 * pre: x_proj's row, rec: h_{t-1} W_hhᵀ's row, act: the activations' row (i | f | c̃ | o). */
static inline void tinylm_lstm_cell_forward(const float *restrict pre, const float *restrict rec,
                                            const float *restrict c_prev, float *restrict act,
                                            float *restrict c, float *restrict tanh_c, float *restrict h,
                                            int64_t hidden, int64_t u0, int64_t u1) {
    float *restrict i = act, *restrict f = act + hidden, *restrict g = act + 2 * hidden, *restrict o = act + 3 * hidden;
    for (int64_t j = u0; j < u1; j++) i[j] = tinylm_sigmoidf(pre[j] + rec[j]);
    for (int64_t j = u0; j < u1; j++) f[j] = tinylm_sigmoidf(pre[hidden + j] + rec[hidden + j]);
    for (int64_t j = u0; j < u1; j++) g[j] = tinylm_tanhf(pre[2 * hidden + j] + rec[2 * hidden + j]);
    for (int64_t j = u0; j < u1; j++) o[j] = tinylm_sigmoidf(pre[3 * hidden + j] + rec[3 * hidden + j]);
    for (int64_t j = u0; j < u1; j++) c[j] = f[j] * c_prev[j] + i[j] * g[j];
    for (int64_t j = u0; j < u1; j++) tanh_c[j] = tinylm_tanhf(c[j]);
    for (int64_t j = u0; j < u1; j++) h[j] = o[j] * tanh_c[j];
}

/* The forward over `steps` steps (shapes of lstm.pyx's _forward_steps; step t writes
 * ring slot t % n of activations, cs and tanh_cs): x_proj (T, B, 4H), h0 and c0 (B, H),
 * packed_w from tinylm_lstm_pack_forward, recurrent (B, 4H) scratch, packed_h two
 * zeroed buffers of tinylm_lstm_packed_rows(B, H) floats, the first holding h0 packed. */
static void tinylm_lstm_forward(int64_t steps, int64_t batch, int64_t hidden, const float *x_proj,
                                const float *packed_w, const float *h0, const float *c0, float *recurrent,
                                float *packed_h, float *activations, int64_t n_act, float *hs, float *cs,
                                int64_t n_c, float *tanh_cs, int64_t n_tanh, int threads) {
    const int64_t four = 4 * hidden, gate_size = tinylm_gemm_packed_size(hidden, hidden);
    const int64_t packed_size = tinylm_lstm_packed_rows(batch, hidden);
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) if (threads > 1)
#endif
    {
        int64_t q0, q1, u0, u1;
        tinylm_lstm_my_units(hidden, &q0, &q1, &u0, &u1);
        float tile[TINYLM_GEMM_MR * TINYLM_GEMM_NR] __attribute__((aligned(TINYLM_GEMM_ALIGN)));
        for (int64_t t = 0; t < steps; t++) {
            const float *a = packed_h + (t % 2) * packed_size;  /* h_{t-1}, packed */
            float *next = packed_h + ((t + 1) % 2) * packed_size;
            for (int64_t g = 0; g < 4; g++)
                tinylm_gemm_panels(batch, hidden, hidden, a, packed_w + g * gate_size, q0, q1, recurrent + g * hidden,
                                   four, 0, tile);
            const float *c_prev = t == 0 ? c0 : cs + ((t - 1) % n_c) * batch * hidden;
            for (int64_t b = 0; b < batch; b++)
                tinylm_lstm_cell_forward(x_proj + (t * batch + b) * four, recurrent + b * four, c_prev + b * hidden,
                                         activations + ((t % n_act) * batch + b) * four,
                                         cs + ((t % n_c) * batch + b) * hidden,
                                         tanh_cs + ((t % n_tanh) * batch + b) * hidden,
                                         hs + (t * batch + b) * hidden, hidden, u0, u1);
            tinylm_lstm_pack_columns(batch, hidden, hs + t * batch * hidden, hidden, u0, u1, next);
#ifdef _OPENMP
#pragma omp barrier
#endif
        }
    }
}

/* One row's cell backward for units [u0, u1), as lstm.pyx's _cell_backward_row: dh_out
 * (dL/dh_t from the output) + dh_next (from step t+1), dc in: dL/dc_t, out: dL/dc_{t-1};
 * writes the gate gradients to d_gates' row. */
static inline void tinylm_lstm_cell_backward(const float *restrict dh_out, const float *restrict dh_next,
                                             float *restrict dc, const float *restrict c_prev,
                                             const float *restrict act, const float *restrict tanh_c,
                                             float *restrict d_gates, int64_t hidden, int64_t u0, int64_t u1) {
    const float *i = act, *f = act + hidden, *g = act + 2 * hidden, *o = act + 3 * hidden;
    float *restrict di = d_gates, *restrict df = d_gates + hidden, *restrict dg = d_gates + 2 * hidden;
    float *restrict d_o = d_gates + 3 * hidden;
    for (int64_t j = u0; j < u1; j++) {
        const float dh = dh_out[j] + dh_next[j];
        const float dc_total = dc[j] + dh * o[j] * (1 - tanh_c[j] * tanh_c[j]);
        di[j] = dc_total * g[j] * i[j] * (1 - i[j]);
        df[j] = dc_total * c_prev[j] * f[j] * (1 - f[j]);
        dg[j] = dc_total * i[j] * (1 - g[j] * g[j]);
        d_o[j] = dh * tanh_c[j] * o[j] * (1 - o[j]);
        dc[j] = dc_total * f[j];
    }
}

/* Backpropagation through time (shapes of lstm.pyx's _backward_steps): d_hs (T, B, H);
 * d_h, d_c (B, H) in: dL/dh_T, dL/dc_T, out: dL/dh0, dL/dc0; packed_w from
 * tinylm_lstm_pack_backward; c0 (B, H); cs, activations, tanh_cs every step's; d_gates
 * (T, B, 4H) out; packed_dg two zeroed buffers of tinylm_lstm_packed_rows(B, 4H) floats. */
static void tinylm_lstm_backward(int64_t steps, int64_t batch, int64_t hidden, const float *d_hs, float *d_h,
                                 float *d_c, const float *packed_w, const float *c0, const float *cs,
                                 const float *activations, const float *tanh_cs, float *d_gates, float *packed_dg,
                                 int threads) {
    const int64_t four = 4 * hidden, packed_size = tinylm_lstm_packed_rows(batch, four);
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) if (threads > 1)
#endif
    {
        int64_t q0, q1, u0, u1;
        tinylm_lstm_my_units(hidden, &q0, &q1, &u0, &u1);
        float tile[TINYLM_GEMM_MR * TINYLM_GEMM_NR] __attribute__((aligned(TINYLM_GEMM_ALIGN)));
        for (int64_t t = steps - 1; t >= 0; t--) {
            float *packed = packed_dg + (t % 2) * packed_size;
            const float *c_prev = t == 0 ? c0 : cs + (t - 1) * batch * hidden;
            for (int64_t b = 0; b < batch; b++) {
                const int64_t at = (t * batch + b);
                tinylm_lstm_cell_backward(d_hs + at * hidden, d_h + b * hidden, d_c + b * hidden,
                                          c_prev + b * hidden, activations + at * four, tanh_cs + at * hidden,
                                          d_gates + at * four, hidden, u0, u1);
            }
            for (int64_t g = 0; g < 4; g++)  /* this thread's gate columns, into the product's packed operand */
                tinylm_lstm_pack_columns(batch, four, d_gates + t * batch * four, four, g * hidden + u0,
                                         g * hidden + u1, packed);
#ifdef _OPENMP
#pragma omp barrier
#endif
            /* d_h's columns of this thread's units, which only its own cell reads next. */
            tinylm_gemm_panels(batch, hidden, four, packed, packed_w, q0, q1, d_h, hidden, 0, tile);
        }
    }
}

/* ------------------------------------------------ one step of a stack, batch 1 */

/* Σₖ w[k]·x[k] for k < n: two vector accumulators, then the tail; one order per build. */
static inline float tinylm_lstm_dot(const float *w, const float *x, int64_t n) {
    int64_t k = 0;
    float sum = 0.0f;
#if defined(__AVX512F__)
    __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
    for (; k + 32 <= n; k += 32) {
        a = _mm512_fmadd_ps(_mm512_loadu_ps(w + k), _mm512_loadu_ps(x + k), a);
        b = _mm512_fmadd_ps(_mm512_loadu_ps(w + k + 16), _mm512_loadu_ps(x + k + 16), b);
    }
    for (; k + 16 <= n; k += 16) a = _mm512_fmadd_ps(_mm512_loadu_ps(w + k), _mm512_loadu_ps(x + k), a);
    sum = _mm512_reduce_add_ps(_mm512_add_ps(a, b));
#elif defined(__AVX2__) && defined(__FMA__)
    __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
    for (; k + 16 <= n; k += 16) {
        a = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(x + k), a);
        b = _mm256_fmadd_ps(_mm256_loadu_ps(w + k + 8), _mm256_loadu_ps(x + k + 8), b);
    }
    for (; k + 8 <= n; k += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(x + k), a);
    __m256 v = _mm256_add_ps(a, b);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    sum = _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
#endif
    for (; k < n; k++) sum += w[k] * x[k];
    return sum;
}

/* out[i] = Σₖ w[i·ldw + k]·x[k] for the four rows i < 4: each x loaded once for the four,
 * and eight independent accumulators, so the loop is bound by loading the rows, not by the
 * latency of one chain of adds. Each row's sum in the order of tinylm_lstm_dot. */
static inline void tinylm_lstm_dot4(const float *w, int64_t ldw, const float *x, int64_t n, float out[4]) {
    int64_t k = 0;
    float sums[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#if defined(__AVX512F__)
    __m512 a[4], b[4];
    for (int i = 0; i < 4; i++) a[i] = b[i] = _mm512_setzero_ps();
    for (; k + 32 <= n; k += 32) {
        const __m512 xa = _mm512_loadu_ps(x + k), xb = _mm512_loadu_ps(x + k + 16);
        for (int i = 0; i < 4; i++) {
            a[i] = _mm512_fmadd_ps(_mm512_loadu_ps(w + i * ldw + k), xa, a[i]);
            b[i] = _mm512_fmadd_ps(_mm512_loadu_ps(w + i * ldw + k + 16), xb, b[i]);
        }
    }
    for (; k + 16 <= n; k += 16) {
        const __m512 xa = _mm512_loadu_ps(x + k);
        for (int i = 0; i < 4; i++) a[i] = _mm512_fmadd_ps(_mm512_loadu_ps(w + i * ldw + k), xa, a[i]);
    }
    for (int i = 0; i < 4; i++) sums[i] = _mm512_reduce_add_ps(_mm512_add_ps(a[i], b[i]));
    for (int i = 0; i < 4; i++)
        for (int64_t j = k; j < n; j++) sums[i] += w[i * ldw + j] * x[j];
    for (int i = 0; i < 4; i++) out[i] = sums[i];
#else
    (void)k;
    (void)sums;
    for (int i = 0; i < 4; i++) out[i] = tinylm_lstm_dot(w + i * ldw, x, n);
#endif
}

/* One time step of an L-layer stack at a small batch, float32, for sampling (the maths of
 * tinylm/reference/lstm.py's lstm_stack_step; arrays C-contiguous):
 *
 *   gates0 (B, 4H) layer 0's input part, bias included;  h, c (L, B, H) the state
 *   w_hh0 (4H, H);  stacked (L-1, 4H, 2H) [W_ih | W_hh] of each later layer;  biases (L-1, 4H)
 *   new_h, new_c (L, B, H) out;  product, act (B, 4H) and tanh_c (B, H) scratch
 *
 * At batch 1 each product is a matrix-vector product, bound by reading the weights (3 MB
 * for the default model): one OpenMP region for the whole step, thread t owning the hidden
 * units [u0, u1) of every layer, so it reads only its units' four gate rows, and its cells
 * follow at once; one barrier per layer, because the next layer reads the whole new h.
 * tinylm_int8.h's tinylm_int8_lstm_stack_step is the same with int8 rows. A later layer's
 * row is W_ih's half dotted with x plus W_hh's half with h, read in place. */
static void tinylm_lstm_stack_step(const float *gates0, const float *h, const float *c, const float *w_hh0,
                                   const float *stacked, const float *biases, float *new_h, float *new_c,
                                   float *product, float *act, float *tanh_c, int64_t layers, int64_t batch,
                                   int64_t hidden, int threads) {
    const int64_t four = 4 * hidden;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) if (threads > 1)
#endif
    {
        int64_t u0, u1;  /* this thread's units, in whole cache lines of each gate's rows */
        tinylm_my_share(hidden, 16, &u0, &u1);
        for (int64_t k = 0; k < layers; k++) {
            for (int64_t b = 0; b < batch && u0 < u1; b++) {
                const float *h_k = h + (k * batch + b) * hidden;
                const float *x = k > 0 ? new_h + ((k - 1) * batch + b) * hidden : NULL;  /* the layer below, this step */
                float *p = product + b * four;
                for (int64_t g = 0; g < 4; g++) {
                    const int64_t r1 = g * hidden + u1;
                    int64_t r = g * hidden + u0;
                    for (; r + 4 <= r1; r += 4) {  /* four rows at a time */
                        if (k == 0) {
                            tinylm_lstm_dot4(w_hh0 + r * hidden, hidden, h_k, hidden, p + r);
                        } else {
                            const float *rows = stacked + ((k - 1) * four + r) * 2 * hidden;
                            float from_h[4];
                            tinylm_lstm_dot4(rows, 2 * hidden, x, hidden, p + r);
                            tinylm_lstm_dot4(rows + hidden, 2 * hidden, h_k, hidden, from_h);
                            for (int i = 0; i < 4; i++) p[r + i] += from_h[i];
                        }
                    }
                    for (; r < r1; r++) {  /* the rest, one at a time, summed in the same order */
                        if (k == 0) {
                            p[r] = tinylm_lstm_dot(w_hh0 + r * hidden, h_k, hidden);
                        } else {
                            const float *row = stacked + ((k - 1) * four + r) * 2 * hidden;
                            p[r] = tinylm_lstm_dot(row, x, hidden) + tinylm_lstm_dot(row + hidden, h_k, hidden);
                        }
                    }
                }
                const float *pre = k == 0 ? gates0 + b * four : biases + (k - 1) * four;
                tinylm_lstm_cell_forward(pre, p, c + (k * batch + b) * hidden, act + b * four,
                                         new_c + (k * batch + b) * hidden, tanh_c + b * hidden,
                                         new_h + (k * batch + b) * hidden, hidden, u0, u1);
            }
#ifdef _OPENMP
#pragma omp barrier
#endif
        }
    }
}
#endif
