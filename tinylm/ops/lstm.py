"""A whole LSTM layer over time as one op, served by the ``lstm_layer_*`` kernels."""

from __future__ import annotations

from tinylm import backends
from tinylm.autograd import Function
from tinylm.reference.lstm import check_layer_shapes


class LSTMLayer(Function):
    """(x_proj (T, B, 4H), w_hh (4H, H), h0 (B, H), c0 (B, H)) -> (hs (T, B, H), h_n, c_n).

    One node in the graph for the whole recurrence instead of ~15 per time step: the
    forward and backpropagation through time run inside the kernels (the derivation is
    in ``tinylm/reference/lstm.py``). h_n is hs[-1], returned separately because its
    gradient can come both from the output and from the final state.
    """

    def forward(self, x_proj, w_hh, h0, c0):
        keep = any(self.needs_input_grad)  # evaluation: no gates or cells kept for a backward
        hs, c_n, saved = backends.kernel("lstm_layer_forward")(x_proj, w_hh, h0, c0, keep_saved=keep)
        if keep:
            self.save_for_backward(w_hh, h0, c0, saved)
        return hs, hs[-1], c_n

    def backward(self, d_hs, d_h_n, d_c_n):
        w_hh, h0, c0, saved = self.saved
        xp = backends.get_array_module(w_hh)
        hs = saved[0]
        d_hs = xp.zeros_like(hs) if d_hs is None else d_hs
        d_h_n = xp.zeros_like(h0) if d_h_n is None else d_h_n
        d_c_n = xp.zeros_like(c0) if d_c_n is None else d_c_n
        return backends.kernel("lstm_layer_backward")(d_hs, d_h_n, d_c_n, w_hh, h0, c0, saved)


def lstm_layer(x_proj, w_hh, h0, c0):
    check_layer_shapes("lstm_layer", x_proj, w_hh, h0, c0)
    return LSTMLayer()(x_proj, w_hh, h0, c0)
