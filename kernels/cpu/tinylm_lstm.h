/* The LSTM's cells in float32, for the loop over time of tinylm_recurrent.h (which runs
 * them on the packed micro-kernel, one OpenMP region per direction of time), and one step
 * of a whole stack at a small batch, for sampling. The maths is tinylm/reference/lstm.py's;
 * kernels/cpu/lstm.pyx calls these for float32 batches of at least half a register tile
 * (smaller batches and float64 keep its OpenBLAS loop). Sizes and strides are the
 * caller's to check: nothing is checked here. */
#ifndef TINYLM_LSTM_H
#define TINYLM_LSTM_H
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif
#include "tinylm_math.h"
#include "tinylm_recurrent.h"

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

/* What the LSTM's cells read and write besides the recurrent row (shapes of lstm.pyx's
 * _forward_packed: step t writes ring slot t % n of activations, cs and tanh_cs). */
typedef struct {
    const float *x_proj, *c0;  /* (T, B, 4H) (or the bias (4H,), pre_stride 0), (B, H) */
    float *activations, *cs, *tanh_cs, *hs;
    int64_t batch, hidden, n_act, n_c, n_tanh, pre_stride;
} tinylm_lstm_forward_state;

static void tinylm_lstm_forward_row(const void *state, int64_t t, int64_t b, const float *recurrent, int64_t u0,
                                    int64_t u1) {
    const tinylm_lstm_forward_state *s = state;
    const int64_t hidden = s->hidden, four = 4 * hidden, row = t * s->batch + b;
    const float *c_prev = t == 0 ? s->c0 + b * hidden : s->cs + (((t - 1) % s->n_c) * s->batch + b) * hidden;
    tinylm_lstm_cell_forward(s->x_proj + row * s->pre_stride, recurrent, c_prev,
                             s->activations + ((t % s->n_act) * s->batch + b) * four,
                             s->cs + ((t % s->n_c) * s->batch + b) * hidden,
                             s->tanh_cs + ((t % s->n_tanh) * s->batch + b) * hidden, s->hs + row * hidden, hidden, u0,
                             u1);
}

/* The forward over `steps` steps: x_proj (T, B, 4H), h0 and c0 (B, H), packed_w from
 * tinylm_recurrent_pack_forward(4, ...), recurrent (B, 4H) scratch, packed_h two zeroed
 * buffers of tinylm_recurrent_packed_rows(B, H) floats, the first holding h0 packed. */
static void tinylm_lstm_forward(int64_t steps, int64_t batch, int64_t hidden, const float *x_proj,
                                const float *packed_w, const float *c0, float *recurrent, float *packed_h,
                                float *activations, int64_t n_act, float *hs, float *cs, int64_t n_c,
                                float *tanh_cs, int64_t n_tanh, int threads) {
    const tinylm_lstm_forward_state state = {x_proj, c0, activations, cs, tanh_cs, hs, batch, hidden, n_act, n_c,
                                             n_tanh, 4 * hidden};
    tinylm_recurrent_forward(steps, batch, hidden, 4, packed_w, recurrent, packed_h, hs, tinylm_lstm_forward_row,
                             &state, threads, NULL, 0, NULL, NULL);
}

/* The forward from the layer's input: x (T, B, I), packed_wi and packed_x as
 * tinylm_recurrent_forward takes them, bias (4H,) = bᵢₕ + bₕₕ, the rest as
 * tinylm_lstm_forward's; x_t Wᵢₕᵀ is made inside the loop and never written. */
static void tinylm_lstm_forward_from_input(int64_t steps, int64_t batch, int64_t hidden, int64_t inputs,
                                           const float *x, const float *packed_wi, const float *bias,
                                           const float *packed_w, const float *c0, float *recurrent,
                                           float *packed_h, float *packed_x, float *activations, int64_t n_act,
                                           float *hs, float *cs, int64_t n_c, float *tanh_cs, int64_t n_tanh,
                                           int threads) {
    const tinylm_lstm_forward_state state = {bias, c0, activations, cs, tanh_cs, hs, batch, hidden, n_act, n_c,
                                             n_tanh, 0};
    tinylm_recurrent_forward(steps, batch, hidden, 4, packed_w, recurrent, packed_h, hs, tinylm_lstm_forward_row,
                             &state, threads, x, inputs, packed_wi, packed_x);
}

typedef struct {
    const float *d_hs, *c0, *cs, *activations, *tanh_cs;  /* every step's, (T, B, ·) */
    float *d_c;                                           /* (B, H) in: dL/dc_T, out: dL/dc0 */
    int64_t batch, hidden;
} tinylm_lstm_backward_state;

static void tinylm_lstm_backward_row(const void *state, int64_t t, int64_t b, float *d_h, float *d_gates, int64_t u0,
                                     int64_t u1) {
    const tinylm_lstm_backward_state *s = state;
    const int64_t hidden = s->hidden, row = t * s->batch + b;
    const float *c_prev = t == 0 ? s->c0 + b * hidden : s->cs + (row - s->batch) * hidden;
    tinylm_lstm_cell_backward(s->d_hs + row * hidden, d_h, s->d_c + b * hidden, c_prev,
                              s->activations + row * 4 * hidden, s->tanh_cs + row * hidden, d_gates, hidden, u0, u1);
}

/* Backpropagation through time: d_hs (T, B, H); d_h, d_c (B, H) in: dL/dh_T, dL/dc_T,
 * out: dL/dh0, dL/dc0; packed_w from tinylm_recurrent_pack_backward(4, ...); c0 (B, H);
 * cs, activations, tanh_cs every step's; d_gates (T, B, 4H) out; packed_dg two zeroed
 * buffers of tinylm_recurrent_packed_rows(B, 4H) floats. */
static void tinylm_lstm_backward(int64_t steps, int64_t batch, int64_t hidden, const float *d_hs, float *d_h,
                                 float *d_c, const float *packed_w, const float *c0, const float *cs,
                                 const float *activations, const float *tanh_cs, float *d_gates, float *packed_dg,
                                 int threads) {
    const tinylm_lstm_backward_state state = {d_hs, c0, cs, activations, tanh_cs, d_c, batch, hidden};
    tinylm_recurrent_backward(steps, batch, hidden, 4, packed_w, d_h, d_gates, packed_dg, 0, tinylm_lstm_backward_row,
                              &state, threads);
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
