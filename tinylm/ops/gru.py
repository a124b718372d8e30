"""A whole GRU layer over time as one op, served by the ``gru_layer_*`` kernels."""

from __future__ import annotations

from tinylm import backends
from tinylm.autograd import Function
from tinylm.reference.gru import check_layer_shapes


class GRULayer(Function):
    """(x_proj (T, B, 3H), w_hh (3H, H), b_hh (3H,), h0 (B, H)) -> (hs (T, B, H), h_n).

    One node in the graph for the whole recurrence; forward and backpropagation through
    time run inside the kernels (derivation in ``tinylm/reference/gru.py``). h_n is
    hs[-1], returned separately because its gradient can come both from the output and
    from the final state.
    """

    def forward(self, x_proj, w_hh, b_hh, h0):
        keep = any(self.needs_input_grad)
        hs, saved = backends.kernel("gru_layer_forward")(x_proj, w_hh, b_hh, h0, keep_saved=keep)
        if keep:
            self.save_for_backward(w_hh, b_hh, h0, saved)
        return hs, hs[-1]

    def backward(self, d_hs, d_h_n):
        w_hh, b_hh, h0, saved = self.saved
        xp = backends.get_array_module(w_hh)
        d_hs = xp.zeros_like(saved[0]) if d_hs is None else d_hs
        d_h_n = xp.zeros_like(h0) if d_h_n is None else d_h_n
        return backends.kernel("gru_layer_backward")(d_hs, d_h_n, w_hh, b_hh, h0, saved)


def gru_layer(x_proj, w_hh, b_hh, h0):
    check_layer_shapes("gru_layer", x_proj, w_hh, b_hh, h0)
    return GRULayer()(x_proj, w_hh, b_hh, h0)
