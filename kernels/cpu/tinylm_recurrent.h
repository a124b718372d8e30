/* A recurrent layer's loop over time in float32, forward and backward, in one OpenMP
 * region each, with the recurrent products on the packed micro-kernel of tinylm_gemm.h.
 * The LSTM (tinylm_lstm.h), the GRU (tinylm_gru.h) and the Elman RNN (tinylm_rnn.h) run
 * this same loop; they differ only in their cell, the per-row function given here as
 * `cell`, and in G, the number of gate blocks of H columns each (4, 3 and 1).
 *
 * Why one region, and who does what. W_hh is packed once per sequence, not once per
 * product as OpenBLAS does, and the team is split one of two ways:
 *
 *   By batch rows, when the batch's MR-row panels share out evenly over the team (the
 *   default model: 32 rows, 4 panels, 2 threads): thread t owns whole panels of rows
 *   [r0, r1) and every unit of them. Row b of h_t depends only on row b of h_{t-1}, so a
 *   thread runs its rows through all T steps on its own: its product rows, its cells, its
 *   rows of h_t packed for its next product, and no barrier and nothing read from the
 *   other cores' caches. Each step streams the whole packed W_hh (1 MiB for the default
 *   LSTM) from the shared L3, which the micro-kernel's sequential reads hide.
 *
 *   By hidden units otherwise (a batch of one panel, or panels that do not share out
 *   evenly): thread t owns the units of its share of NR-wide panels, [u0, u1), for every
 *   row. In the forward step it computes the G gate columns of its units (columns g·H + j
 *   of h_{t-1} W_hhᵀ) with its share of the packed W_hhᵀ, which stays in its core's L2,
 *   and its units' cells follow at once; one barrier per step, because the next product
 *   reads the whole new h. Backward: its units' gate gradients (the cell's backward), a
 *   barrier (the product reads every unit's), then its units' columns of dL/dh_{t-1},
 *   which only its own cells read next.
 *
 *   The product's left operand is packed as the micro-kernel reads it (MR-row panels,
 *   tinylm_gemm_pack_a's layout over the whole k): each thread packs its own part of
 *   what its cells wrote, h_t (forward) or dgates_t (backward), its rows or its units'
 *   columns. Two packed buffers alternate, so split by units a thread writing step t's
 *   never races one still reading step t-1's (a barrier lies between any two uses of one
 *   buffer). The packed buffers' rows past B (the last panel's padding) are zeros from the
 *   caller and never written; the tiles they meet are edge tiles, of which only the valid
 *   rows are stored.
 *
 * Every sum is done by one thread in one order, the same whichever way the team is split
 * (each product element sums over k in the same KC slices), so results do not depend on
 * the number of threads. Sizes and strides are the caller's to check: nothing is checked
 * here. */
#ifndef TINYLM_RECURRENT_H
#define TINYLM_RECURRENT_H
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "tinylm_gemm.h"
#include "tinylm_parallel.h"

/* Floats in a packed left operand of m rows and k columns (rows padded to MR). */
static inline int64_t tinylm_recurrent_packed_rows(int64_t m, int64_t k) {
    return (m + TINYLM_GEMM_MR - 1) / TINYLM_GEMM_MR * TINYLM_GEMM_MR * k;
}

/* Columns [j0, j1) of the m x k matrix x (row stride ldx) into its packed copy (row panels of
 * MR, tinylm_gemm_pack_a's layout over the whole k): for each panel and column the MR
 * values are contiguous there, so they are written in that order (row by row, each write
 * would land on a different cache line: a third of the cells' time on two threads). */
static inline void tinylm_recurrent_pack_columns(int64_t m, int64_t k, const float *x, int64_t ldx, int64_t j0,
                                                 int64_t j1, float *packed) {
    const int64_t MR = TINYLM_GEMM_MR;
    for (int64_t r = 0; r < m; r += MR) {
        const int64_t height = tinylm_gemm_min(MR, m - r);
        float *panel = packed + r * k;
        for (int64_t j = j0; j < j1; j++)
            for (int64_t i = 0; i < height; i++) panel[j * MR + i] = x[(r + i) * ldx + j];
    }
}

/* W (G·H, K) -> the forward's right operands: Wᵀ's G gate blocks (K, H), each packed by
 * tinylm_gemm_pack_b, one after another (gate g at + g·tinylm_gemm_packed_size(K, H)): W_hh
 * (K = H), or W_ih (K = I) for an input projection made in the loop. Packing each gate apart
 * keeps a panel inside one gate when H is not a multiple of NR. */
static void tinylm_recurrent_pack_forward(int64_t gates, int64_t hidden, int64_t k, const float *w, float *packed) {
    const int64_t size = tinylm_gemm_packed_size(k, hidden);
    for (int64_t g = 0; g < gates; g++)  /* Wᵀ[p, gH + j] = W[gH + j, p]: row stride 1, column stride K */
        tinylm_gemm_pack_b(k, hidden, w + g * hidden * k, 1, k, packed + g * size);
}

/* W_hh (G·H, H) -> the backward's right operand: W_hh itself, k = G·H, n = H. */
static void tinylm_recurrent_pack_backward(int64_t gates, int64_t hidden, const float *w_hh, float *packed) {
    tinylm_gemm_pack_b(gates * hidden, hidden, w_hh, hidden, 1, packed);
}

/* This thread's part of the layer: rows [*r0, *r1) and units [*u0, *u1) (NR-panels
 * [*q0, *q1)); split by rows when the batch's MR-row panels share out evenly over the
 * team, else by units. Returns 1 when split by rows (no barrier is needed then). */
static inline int tinylm_recurrent_my_part(int64_t batch, int64_t hidden, int64_t *r0, int64_t *r1, int64_t *q0,
                                           int64_t *q1, int64_t *u0, int64_t *u1) {
#ifdef _OPENMP
    const int64_t team = omp_get_num_threads();
#else
    const int64_t team = 1;
#endif
    const int64_t row_panels = (batch + TINYLM_GEMM_MR - 1) / TINYLM_GEMM_MR;
    const int64_t unit_panels = (hidden + TINYLM_GEMM_NR - 1) / TINYLM_GEMM_NR;
    if (row_panels % team == 0) {
        tinylm_my_share(batch, TINYLM_GEMM_MR, r0, r1);
        *q0 = 0, *q1 = unit_panels, *u0 = 0, *u1 = hidden;
        return 1;
    }
    *r0 = 0, *r1 = batch;
    tinylm_my_share(unit_panels, 1, q0, q1);
    *u0 = tinylm_gemm_min(hidden, *q0 * TINYLM_GEMM_NR);
    *u1 = tinylm_gemm_min(hidden, *q1 * TINYLM_GEMM_NR);
    return 0;
}

/* A cell's forward for batch row b of step t, units [u0, u1): `recurrent` is that row of
 * h_{t-1} W_hhᵀ (G·H floats); the cell writes h_t's row into hs (T, B, H) and whatever it
 * keeps into its own arrays, found through `state`. */
typedef void (*tinylm_forward_row)(const void *state, int64_t t, int64_t b, const float *recurrent, int64_t u0,
                                   int64_t u1);

/* A cell's backward for batch row b of step t, units [u0, u1): d_h is that row of dL/dh_t
 * arriving from step t+1 (the cell may overwrite it: see `accumulate` below); the cell
 * writes dL/d(h_{t-1} W_hhᵀ)'s row into d_gates (G·H floats), the product's left operand. */
typedef void (*tinylm_backward_row)(const void *state, int64_t t, int64_t b, float *d_h, float *d_gates,
                                    int64_t u0, int64_t u1);

/* The forward over `steps` steps: packed_w from tinylm_recurrent_pack_forward, recurrent
 * (B, G·H) scratch, packed_h two zeroed buffers of tinylm_recurrent_packed_rows(B, H)
 * floats, the first holding h0 packed; hs (T, B, H) is written by the cell.
 *
 * With x (T, B, I) given (not NULL), the input projection is made here too, a step at a
 * time, and x_t Wᵢₕᵀ never goes to memory: `recurrent` gets x_t Wᵢₕᵀ + h_{t-1} Wₕₕᵀ
 * (the bias is then the cell's to add), packed_wi is Wᵢₕᵀ's G gate blocks packed as
 * tinylm_recurrent_pack_forward packs Wₕₕᵀ (k = I), and packed_x two zeroed buffers of
 * tinylm_recurrent_packed_rows(B, I) floats, the first holding x_0 packed. Each thread
 * packs its part of x_{t+1} (its rows, or a share of the columns) as it packs h_t. */
static void tinylm_recurrent_forward(int64_t steps, int64_t batch, int64_t hidden, int64_t gates,
                                     const float *packed_w, float *recurrent, float *packed_h, float *hs,
                                     tinylm_forward_row cell, const void *state, int threads, const float *x,
                                     int64_t inputs, const float *packed_wi, float *packed_x) {
    const int64_t width = gates * hidden, gate_size = tinylm_gemm_packed_size(hidden, hidden);
    const int64_t gate_in = tinylm_gemm_packed_size(inputs, hidden);
    const int64_t packed_size = tinylm_recurrent_packed_rows(batch, hidden);
    const int64_t packed_x_size = tinylm_recurrent_packed_rows(batch, inputs);
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) if (threads > 1)
#endif
    {
        int64_t r0, r1, q0, q1, u0, u1, i0 = 0, i1 = inputs;
        const int by_rows = tinylm_recurrent_my_part(batch, hidden, &r0, &r1, &q0, &q1, &u0, &u1);
        if (!by_rows) tinylm_my_share(inputs, 1, &i0, &i1);  /* the columns of x this thread packs */
        float tile[TINYLM_GEMM_MR * TINYLM_GEMM_NR] __attribute__((aligned(TINYLM_GEMM_ALIGN)));
        for (int64_t t = 0; t < steps; t++) {
            const float *a = packed_h + (t % 2) * packed_size + r0 * hidden;  /* h_{t-1}, packed: rows from r0 */
            float *next = packed_h + ((t + 1) % 2) * packed_size + r0 * hidden;
            const float *ax = x ? packed_x + (t % 2) * packed_x_size + r0 * inputs : NULL;  /* x_t, packed */
            for (int64_t g = 0; g < gates; g++) {
                float *out = recurrent + r0 * width + g * hidden;
                if (x) tinylm_gemm_panels(r1 - r0, hidden, inputs, ax, packed_wi + g * gate_in, q0, q1, out, width, 0, tile);
                tinylm_gemm_panels(r1 - r0, hidden, hidden, a, packed_w + g * gate_size, q0, q1, out, width, x != NULL,
                                   tile);
            }
            for (int64_t b = r0; b < r1; b++) cell(state, t, b, recurrent + b * width, u0, u1);
            tinylm_recurrent_pack_columns(r1 - r0, hidden, hs + (t * batch + r0) * hidden, hidden, u0, u1, next);
            if (x && t + 1 < steps)
                tinylm_recurrent_pack_columns(r1 - r0, inputs, x + ((t + 1) * batch + r0) * inputs, inputs, i0, i1,
                                              packed_x + ((t + 1) % 2) * packed_x_size + r0 * inputs);
            if (!by_rows) {
#ifdef _OPENMP
#pragma omp barrier
#endif
            }
        }
    }
}

/* Backpropagation through time: packed_w from tinylm_recurrent_pack_backward; d_h (B, H)
 * in: dL/dh_T, out: dL/dh0; d_gates (T, B, G·H) out, written by the cell; packed_dg two
 * zeroed buffers of tinylm_recurrent_packed_rows(B, G·H) floats. With `accumulate` the
 * product adds dgates_t W_hh to what the cell left in d_h (the GRU's direct path dh ⊙ z);
 * without, it overwrites d_h (the LSTM and the RNN, whose h_{t-1} reaches h_t only
 * through the product). */
static void tinylm_recurrent_backward(int64_t steps, int64_t batch, int64_t hidden, int64_t gates,
                                      const float *packed_w, float *d_h, float *d_gates, float *packed_dg,
                                      int accumulate, tinylm_backward_row cell, const void *state, int threads) {
    const int64_t width = gates * hidden, packed_size = tinylm_recurrent_packed_rows(batch, width);
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) if (threads > 1)
#endif
    {
        int64_t r0, r1, q0, q1, u0, u1;
        const int by_rows = tinylm_recurrent_my_part(batch, hidden, &r0, &r1, &q0, &q1, &u0, &u1);
        float tile[TINYLM_GEMM_MR * TINYLM_GEMM_NR] __attribute__((aligned(TINYLM_GEMM_ALIGN)));
        for (int64_t t = steps - 1; t >= 0; t--) {
            float *packed = packed_dg + (t % 2) * packed_size + r0 * width;
            for (int64_t b = r0; b < r1; b++)
                cell(state, t, b, d_h + b * hidden, d_gates + (t * batch + b) * width, u0, u1);
            for (int64_t g = 0; g < gates; g++)  /* this thread's part, into the product's packed operand */
                tinylm_recurrent_pack_columns(r1 - r0, width, d_gates + (t * batch + r0) * width, width,
                                              g * hidden + u0, g * hidden + u1, packed);
            if (!by_rows) {
#ifdef _OPENMP
#pragma omp barrier
#endif
            }
            /* d_h's rows and columns of this thread's part, which only its own cells read next. */
            tinylm_gemm_panels(r1 - r0, hidden, width, packed, packed_w, q0, q1, d_h + r0 * hidden, hidden,
                               accumulate, tile);
        }
    }
}
#endif
