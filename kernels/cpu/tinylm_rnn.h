/* The Elman RNN's cell in float32, for the loop over time of tinylm_recurrent.h (one gate
 * block): h_t = act(x_proj_t + h_{t-1} Wₕₕᵀ), act tanh or relu (tinylm/reference/rnn.py;
 * the operations of rnn.pyx's _step_forward / _step_backward in the same order). Sizes and
 * strides are the caller's to check: nothing is checked here. */
#ifndef TINYLM_RNN_H
#define TINYLM_RNN_H
#include <stdint.h>
#include "tinylm_math.h"
#include "tinylm_recurrent.h"

typedef struct {
    const float *x_proj;  /* (T, B, H), both biases in */
    float *hs;            /* (T, B, H) out, forward only */
    const float *saved;   /* (T, B, H) every step's h, backward only */
    const float *d_hs;    /* (T, B, H), backward only */
    int64_t batch, hidden;
    int relu;
} tinylm_rnn_state;

static void tinylm_rnn_forward_row(const void *state, int64_t t, int64_t b, const float *recurrent, int64_t u0,
                                   int64_t u1) {
    const tinylm_rnn_state *s = state;
    const int64_t at = (t * s->batch + b) * s->hidden;
    const float *restrict x = s->x_proj + at;
    float *restrict h = s->hs + at;
    if (s->relu) {
        for (int64_t j = u0; j < u1; j++) {
            const float pre = x[j] + recurrent[j];
            h[j] = pre > 0 ? pre : 0;
        }
    } else {
        for (int64_t j = u0; j < u1; j++) h[j] = tinylm_tanhf(x[j] + recurrent[j]);
    }
}

/* dL/d(pre) = (dh_out + dh_next) ⊙ act'(pre), act' read off h: 1 - h² for tanh, h > 0 for relu. */
static void tinylm_rnn_backward_row(const void *state, int64_t t, int64_t b, float *d_h, float *d_gates, int64_t u0,
                                    int64_t u1) {
    const tinylm_rnn_state *s = state;
    const int64_t at = (t * s->batch + b) * s->hidden;
    const float *restrict h = s->saved + at, *restrict dh_out = s->d_hs + at;
    for (int64_t j = u0; j < u1; j++) {
        const float dh = dh_out[j] + d_h[j];
        d_gates[j] = s->relu ? (h[j] > 0 ? dh : 0) : dh * (1 - h[j] * h[j]);
    }
}

/* The forward over `steps` steps: packed_w from tinylm_recurrent_pack_forward(1, ...),
 * recurrent (B, H) scratch, packed_h as tinylm_recurrent_forward's. */
static void tinylm_rnn_forward(int64_t steps, int64_t batch, int64_t hidden, const float *x_proj,
                               const float *packed_w, float *recurrent, float *packed_h, float *hs, int relu,
                               int threads) {
    const tinylm_rnn_state state = {x_proj, hs, 0, 0, batch, hidden, relu};
    tinylm_recurrent_forward(steps, batch, hidden, 1, packed_w, recurrent, packed_h, hs, tinylm_rnn_forward_row,
                             &state, threads, NULL, 0, NULL, NULL);
}

/* Backpropagation through time: d_h (B, H) in: dL/dh_T, out: dL/dh0; packed_w from
 * tinylm_recurrent_pack_backward(1, ...); d_pre (T, B, H) out. */
static void tinylm_rnn_backward(int64_t steps, int64_t batch, int64_t hidden, const float *d_hs, float *d_h,
                                const float *packed_w, const float *hs, float *d_pre, float *packed_dg, int relu,
                                int threads) {
    const tinylm_rnn_state state = {0, 0, hs, d_hs, batch, hidden, relu};
    tinylm_recurrent_backward(steps, batch, hidden, 1, packed_w, d_h, d_pre, packed_dg, 0, tinylm_rnn_backward_row,
                              &state, threads);
}
#endif
