/* The GRU's cells in float32, for the loop over time of tinylm_recurrent.h (three gate
 * blocks r, z, n; see tinylm/reference/gru.py for the maths and gru.pyx's
 * _cell_forward_row / _cell_backward_row, whose operations these repeat in the same
 * order, so the two agree bit for bit on the same products). Sizes and strides are the
 * caller's to check: nothing is checked here. */
#ifndef TINYLM_GRU_H
#define TINYLM_GRU_H
#include <stdint.h>
#include "tinylm_math.h"
#include "tinylm_recurrent.h"

/* x_proj (T, B, 3H) x Wᵢₕᵀ + bᵢₕ; b_hh (3H,); h0 (B, H); step t writes ring slot t % n_act
 * of activations (·, B, 3H: r, z, n) and h_ns (·, B, H: Wₕₙ h_prev + bₕₙ), and hs[t]. */
typedef struct {
    const float *x_proj, *b_hh, *h0;
    float *activations, *h_ns, *hs;
    int64_t batch, hidden, n_act;
} tinylm_gru_forward_state;

/* r = σ(x_r + h_r), z = σ(x_z + h_z), n = tanh(x_n + r ⊙ h_n), h = n + z ⊙ (h_prev - n),
 * with h_· = (h_prev Wₕₕᵀ)_· + bₕₕ. */
static void tinylm_gru_forward_row(const void *state, int64_t t, int64_t b, const float *recurrent, int64_t u0,
                                   int64_t u1) {
    const tinylm_gru_forward_state *s = state;
    const int64_t hidden = s->hidden, row = t * s->batch + b, kept = (t % s->n_act) * s->batch + b;
    const float *restrict xg = s->x_proj + row * 3 * hidden, *restrict bias = s->b_hh;
    const float *restrict h_prev = t == 0 ? s->h0 + b * hidden : s->hs + (row - s->batch) * hidden;
    float *restrict r = s->activations + kept * 3 * hidden, *restrict z = r + hidden, *restrict n = r + 2 * hidden;
    float *restrict h_n = s->h_ns + kept * hidden, *restrict h = s->hs + row * hidden;
    for (int64_t j = u0; j < u1; j++) r[j] = tinylm_sigmoidf(xg[j] + (recurrent[j] + bias[j]));
    for (int64_t j = u0; j < u1; j++)
        z[j] = tinylm_sigmoidf(xg[hidden + j] + (recurrent[hidden + j] + bias[hidden + j]));
    for (int64_t j = u0; j < u1; j++) {
        h_n[j] = recurrent[2 * hidden + j] + bias[2 * hidden + j];
        n[j] = tinylm_tanhf(xg[2 * hidden + j] + r[j] * h_n[j]);
    }
    for (int64_t j = u0; j < u1; j++) h[j] = n[j] + z[j] * (h_prev[j] - n[j]);
}

/* d_hs (T, B, H); h0 (B, H); hs, activations, h_ns every step's; d_x_proj (T, B, 3H) out. */
typedef struct {
    const float *d_hs, *h0, *hs, *activations, *h_ns;
    float *d_x_proj;
    int64_t batch, hidden;
} tinylm_gru_backward_state;

/* gru_cell_backward (derivation in tinylm/reference/gru.py): d_h comes in as dL/dh_t from
 * step t+1 and leaves as its direct part dh ⊙ z, to which the loop adds dh_gates Wₕₕ. */
static void tinylm_gru_backward_row(const void *state, int64_t t, int64_t b, float *d_h, float *d_gates, int64_t u0,
                                    int64_t u1) {
    const tinylm_gru_backward_state *s = state;
    const int64_t hidden = s->hidden, row = t * s->batch + b;
    const float *restrict dh_out = s->d_hs + row * hidden, *restrict act = s->activations + row * 3 * hidden;
    const float *restrict h_n = s->h_ns + row * hidden;
    const float *restrict h_prev = t == 0 ? s->h0 + b * hidden : s->hs + (row - s->batch) * hidden;
    float *restrict dxg = s->d_x_proj + row * 3 * hidden, *restrict dhg = d_gates;
    for (int64_t j = u0; j < u1; j++) {
        const float r = act[j], z = act[hidden + j], n = act[2 * hidden + j];
        const float dh = dh_out[j] + d_h[j];
        const float dn_pre = dh * (1 - z) * (1 - n * n);
        dxg[j] = dn_pre * h_n[j] * r * (1 - r);
        dxg[hidden + j] = dh * (h_prev[j] - n) * z * (1 - z);
        dxg[2 * hidden + j] = dn_pre;
        dhg[j] = dxg[j];
        dhg[hidden + j] = dxg[hidden + j];
        dhg[2 * hidden + j] = dn_pre * r;
        d_h[j] = dh * z;
    }
}

/* The forward over `steps` steps: packed_w from tinylm_recurrent_pack_forward(3, ...),
 * recurrent (B, 3H) scratch, packed_h as tinylm_recurrent_forward's. */
static void tinylm_gru_forward(int64_t steps, int64_t batch, int64_t hidden, const float *x_proj,
                               const float *packed_w, const float *b_hh, const float *h0, float *recurrent,
                               float *packed_h, float *activations, float *h_ns, int64_t n_act, float *hs,
                               int threads) {
    const tinylm_gru_forward_state state = {x_proj, b_hh, h0, activations, h_ns, hs, batch, hidden, n_act};
    tinylm_recurrent_forward(steps, batch, hidden, 3, packed_w, recurrent, packed_h, hs, tinylm_gru_forward_row,
                             &state, threads, NULL, 0, NULL, NULL);
}

/* Backpropagation through time: d_h (B, H) in: dL/dh_T, out: dL/dh0; packed_w from
 * tinylm_recurrent_pack_backward(3, ...); d_x_proj and d_h_gates (T, B, 3H) out. */
static void tinylm_gru_backward(int64_t steps, int64_t batch, int64_t hidden, const float *d_hs, float *d_h,
                                const float *packed_w, const float *h0, const float *hs, const float *activations,
                                const float *h_ns, float *d_x_proj, float *d_h_gates, float *packed_dg,
                                int threads) {
    const tinylm_gru_backward_state state = {d_hs, h0, hs, activations, h_ns, d_x_proj, batch, hidden};
    tinylm_recurrent_backward(steps, batch, hidden, 3, packed_w, d_h, d_h_gates, packed_dg, 1,
                              tinylm_gru_backward_row, &state, threads);
}
#endif
