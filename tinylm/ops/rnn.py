"""A whole Elman RNN layer over time as one op, served by the ``rnn_layer_*`` kernels."""

from __future__ import annotations

from tinylm import backends
from tinylm.autograd import Function
from tinylm.reference.rnn import check_layer_shapes


class RNNLayer(Function):
    """(x_proj (T, B, H), w_hh (H, H), h0 (B, H)) -> (hs (T, B, H), h_n), with
    h_t = act(x_proj[t] + h_{t-1} Wₕₕᵀ) and act = tanh or relu.

    One node in the graph for the whole recurrence (derivation in
    ``tinylm/reference/rnn.py``); h_n is hs[-1], returned separately because its
    gradient can come both from the output and from the final state.
    """

    def __init__(self, nonlinearity: str):
        self.nonlinearity = nonlinearity

    def forward(self, x_proj, w_hh, h0):
        keep = any(self.needs_input_grad)
        hs, saved = backends.kernel("rnn_layer_forward")(x_proj, w_hh, h0, self.nonlinearity, keep_saved=keep)
        if keep:
            self.save_for_backward(w_hh, h0, saved)
        return hs, hs[-1]

    def backward(self, d_hs, d_h_n):
        w_hh, h0, saved = self.saved
        xp = backends.get_array_module(w_hh)
        d_hs = xp.zeros_like(saved[0]) if d_hs is None else d_hs
        d_h_n = xp.zeros_like(h0) if d_h_n is None else d_h_n
        return backends.kernel("rnn_layer_backward")(d_hs, d_h_n, w_hh, h0, saved, self.nonlinearity)


def rnn_layer(x_proj, w_hh, h0, nonlinearity: str = "tanh"):
    check_layer_shapes("rnn_layer", x_proj, w_hh, h0, nonlinearity)
    return RNNLayer(nonlinearity)(x_proj, w_hh, h0)
