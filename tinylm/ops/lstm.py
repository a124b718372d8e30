"""A whole LSTM layer over time as one op, served by the ``lstm_layer_*`` kernels."""

from __future__ import annotations

from tinylm import backends
from tinylm.autograd import Function
from tinylm.reference.lstm import check_input_shapes, check_layer_shapes


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
        return _through_time(d_hs, d_h_n, d_c_n, *self.saved)


def _through_time(d_hs, d_h_n, d_c_n, w_hh, h0, c0, saved):
    """``lstm_layer_backward`` with an output that got no gradient read as zeros:
    (dL/dgates, dL/dWₕₕ, dL/dh0, dL/dc0)."""
    xp = backends.get_array_module(w_hh)
    d_hs = xp.zeros_like(saved[0]) if d_hs is None else d_hs
    d_h_n = xp.zeros_like(h0) if d_h_n is None else d_h_n
    d_c_n = xp.zeros_like(c0) if d_c_n is None else d_c_n
    return backends.kernel("lstm_layer_backward")(d_hs, d_h_n, d_c_n, w_hh, h0, c0, saved)


def lstm_layer(x_proj, w_hh, h0, c0):
    check_layer_shapes("lstm_layer", x_proj, w_hh, h0, c0)
    return LSTMLayer()(x_proj, w_hh, h0, c0)


class LSTMLayerFromInput(Function):
    """(x (T, B, I), w_ih (4H, I), bias (4H,), w_hh, h0, c0) -> (hs, h_n, c_n): ``LSTMLayer``
    of x_proj = x Wᵢₕᵀ + bias, with the input projection inside the op, so a fast kernel
    can make it inside its loop over time and never write x_proj (``nn.LSTM`` uses this
    op where the backend serves ``lstm_layer_forward_from_input``).

    Backward: x_proj is used only as ``LSTMLayer``'s input, so dL/dx_proj is that op's
    dL/dgates (G); then as for a linear layer, dL/dx = G Wᵢₕ, dL/dWᵢₕ = Σ Gᵀ x over all
    (t, b) rows, dL/dbias = Σ G over the rows.
    """

    def forward(self, x, w_ih, bias, w_hh, h0, c0):
        keep = any(self.needs_input_grad)  # evaluation: no gates or cells kept for a backward
        hs, c_n, saved = backends.kernel("lstm_layer_forward_from_input")(x, w_ih, bias, w_hh, h0, c0,
                                                                          keep_saved=keep)
        if keep:
            self.save_for_backward(x, w_ih, w_hh, h0, c0, saved)
        return hs, hs[-1], c_n

    def backward(self, d_hs, d_h_n, d_c_n):
        x, w_ih, w_hh, h0, c0, saved = self.saved
        d_gates, d_w_hh, d_h0, d_c0 = _through_time(d_hs, d_h_n, d_c_n, w_hh, h0, c0, saved)
        rows = d_gates.reshape(-1, d_gates.shape[-1])  # (T·B, 4H)
        gemm = backends.kernel("gemm")
        need_x, need_w_ih, need_bias = self.needs_input_grad[:3]
        d_x = gemm(rows, w_ih).reshape(x.shape) if need_x else None
        d_w_ih = gemm(rows, x.reshape(-1, x.shape[-1]), transpose_a=True) if need_w_ih else None
        d_bias = rows.sum(axis=0) if need_bias else None
        return d_x, d_w_ih, d_bias, d_w_hh, d_h0, d_c0


def lstm_layer_from_input(x, w_ih, bias, w_hh, h0, c0):
    check_input_shapes("lstm_layer_from_input", x, w_ih, bias, w_hh, h0, c0)
    return LSTMLayerFromInput()(x, w_ih, bias, w_hh, h0, c0)
