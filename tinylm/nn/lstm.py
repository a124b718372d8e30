"""The LSTM layer, PyTorch's ``nn.LSTM``: each layer's input projection is one matrix
product over all steps (or, through ``forward_embedded``, layer 0's is looked up per token
from a table), and the recurrence over time, forward and backpropagation through time, is
one fused op (``tinylm/ops/lstm.py``, kernels ``lstm_layer_*``)."""

from __future__ import annotations

from tinylm import backends, ops
from tinylm.autograd import Tensor
from tinylm.nn import functional as F
from tinylm.nn.rnn import RecurrentBase
from tinylm.ops.lstm import lstm_layer, lstm_layer_from_input


def lstm_cell(gates, c_prev):
    """One LSTM step from its pre-activations.

    gates (B, 4H) = x Wᵢₕᵀ + bᵢₕ + h Wₕₕᵀ + bₕₕ, split in PyTorch's order (i, f, g, o):

        i = σ(gᵢ)  input gate      f = σ(g_f)  forget gate
        g = tanh(g_g)  candidate   o = σ(gₒ)  output gate
        c = f ⊙ c_prev + i ⊙ g     h = o ⊙ tanh(c)

    Returns (h, c). The cell state c carries gradient back through time along the
    additive path f ⊙ c_prev, which is why LSTMs keep long-range gradients alive.

    This is the cell written on the engine's ops, to read and to check against; the
    ``LSTM`` layer runs the fused ``lstm_layer`` op, which does the same per step.
    """
    gate_i, gate_f, gate_g, gate_o = ops.split(gates, gates.shape[-1] // 4, axis=-1)
    c = gate_f.sigmoid() * c_prev + gate_i.sigmoid() * gate_g.tanh()
    h = gate_o.sigmoid() * c.tanh()
    return h, c


class LSTM(RecurrentBase):
    """PyTorch's ``nn.LSTM``: same parameters, names, layouts and results.

    Parameters per layer k (and direction suffix '' or '_reverse', see ``RecurrentBase``):
    ``weight_ih_l{k}`` (4H, input size of layer k), ``weight_hh_l{k}`` (4H, H),
    ``bias_ih_l{k}`` and ``bias_hh_l{k}`` (4H,), all U(-1/√H, 1/√H).
    ``forward(x, (h0, c0)=None)`` takes x of shape (T, B, input_size) (or
    (B, T, input_size) with ``batch_first``) and returns ``(output, (h_n, c_n))``: output
    (T, B, D·H) holds the last layer's h at every step (forward and reverse side by side
    when bidirectional, D = 2), h_n and c_n (num_layers·D, B, H) the final states.
    Detach them before feeding them to the next batch to cut backpropagation there
    (truncated BPTT).
    """

    gates = 4
    state_names = ("h0", "c0")

    def _project(self, x, weights):
        w_ih, _, b_ih, b_hh = weights
        return F.linear(x, w_ih, None if b_ih is None else b_ih + b_hh)  # (..., 4H), both biases

    def _recur(self, projected, weights, state):
        # The recurrence over time, forward and backward, is one fused op.
        hs, h_n, c_n = lstm_layer(projected, weights[1], *state)  # (T, B, H), (B, H), (B, H)
        return hs, (h_n, c_n)

    def _direction(self, x, weights, state):
        w_ih, w_hh, b_ih, b_hh = weights
        backend = backends.get_backend()
        if backend != "numpy" and backends.kernel_for("lstm_layer_forward_from_input", backend, fallback=False):
            # The input projection inside the op: the backend's kernel makes it in its loop over
            # time. (The reference's version is _project then _recur, so the numpy backend keeps them.)
            bias = (Tensor(backends.get_array_module(w_ih.data).zeros(w_ih.shape[0], w_ih.dtype)) if b_ih is None
                    else b_ih + b_hh)
            hs, h_n, c_n = lstm_layer_from_input(x, w_ih, bias, w_hh, *state)
            return hs, (h_n, c_n)
        return super()._direction(x, weights, state)

    def forward(self, x, state=None):
        return self._run(x, state)
