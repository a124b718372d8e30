"""The LSTM layer, PyTorch's ``nn.LSTM``: each layer's input projection is one matrix
product over all steps, and the recurrence over time, forward and backpropagation
through time, is one fused op (``tinylm/ops/lstm.py``, kernels ``lstm_layer_*``)."""

from __future__ import annotations

import math

from tinylm import backends, ops
from tinylm.autograd import Tensor
from tinylm.nn import functional as F
from tinylm.nn import init
from tinylm.nn.module import Module, Parameter
from tinylm.ops.lstm import lstm_layer


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


class LSTM(Module):
    """PyTorch's ``nn.LSTM`` (unidirectional): same parameters, names, layouts and results.

    Parameters per layer k: ``weight_ih_l{k}`` (4H, input size of layer k),
    ``weight_hh_l{k}`` (4H, H), ``bias_ih_l{k}`` and ``bias_hh_l{k}`` (4H,), all
    U(-1/√H, 1/√H). ``forward(x, (h0, c0)=None)`` takes x of shape (T, B, input_size)
    (or (B, T, input_size) with ``batch_first``) and returns ``(output, (h_n, c_n))``:
    output holds the last layer's h at every step, h_n and c_n (num_layers, B, H) the
    final states. Detach them before feeding them to the next batch to cut
    backpropagation there (truncated BPTT).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, dtype=None, generator=None):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"LSTM: num_layers must be at least 1, got {num_layers}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout, self.generator = bias, batch_first, dropout, generator
        bound = 1.0 / math.sqrt(hidden_size)
        for k in range(num_layers):
            layer_input = input_size if k == 0 else hidden_size
            setattr(self, f"weight_ih_l{k}",
                    Parameter(init.uniform((4 * hidden_size, layer_input), bound, dtype, generator)))
            setattr(self, f"weight_hh_l{k}",
                    Parameter(init.uniform((4 * hidden_size, hidden_size), bound, dtype, generator)))
            if bias:
                setattr(self, f"bias_ih_l{k}", Parameter(init.uniform((4 * hidden_size,), bound, dtype, generator)))
                setattr(self, f"bias_hh_l{k}", Parameter(init.uniform((4 * hidden_size,), bound, dtype, generator)))

    def _initial_state(self, state, batch: int, like: Tensor):
        shape = (self.num_layers, batch, self.hidden_size)
        if state is None:
            zeros = Tensor(backends.get_array_module(like.data).zeros(shape, dtype=like.dtype))
            return zeros, zeros
        h0, c0 = state
        if h0.shape != shape or c0.shape != shape:
            raise ValueError(f"LSTM: h0 {h0.shape} and c0 {c0.shape} must both be "
                             f"(num_layers, batch, hidden) = {shape}")
        return h0, c0

    def forward(self, x, state=None):
        if x.ndim != 3 or x.shape[-1] != self.input_size:
            order = "(B, T, input_size)" if self.batch_first else "(T, B, input_size)"
            raise ValueError(f"LSTM: input must be {order} with input_size={self.input_size}, got {x.shape}")
        if self.batch_first:
            x = x.transpose(0, 1)  # (T, B, input_size)
        h0, c0 = self._initial_state(state, x.shape[1], x)
        layer_input, final_h, final_c = x, [], []
        for k in range(self.num_layers):
            w_ih, w_hh = getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}")
            # The input projection of every time step in one matrix product: (T, B, 4H).
            bias = getattr(self, f"bias_ih_l{k}") + getattr(self, f"bias_hh_l{k}") if self.bias else None
            projected = F.linear(layer_input, w_ih, bias)
            # The recurrence over time, forward and backward, is one fused op.
            layer_input, h_n, c_n = lstm_layer(projected, w_hh, h0[k], c0[k])  # (T, B, H), (B, H), (B, H)
            final_h.append(h_n)
            final_c.append(c_n)
            if k < self.num_layers - 1 and self.dropout > 0:
                layer_input = F.dropout(layer_input, self.dropout, self.training, self.generator)
        output = layer_input.transpose(0, 1) if self.batch_first else layer_input
        return output, (ops.stack(final_h, axis=0), ops.stack(final_c, axis=0))

    def extra_repr(self) -> str:
        extras = [f"{self.input_size}, {self.hidden_size}"]
        if self.num_layers != 1:
            extras.append(f"num_layers={self.num_layers}")
        if self.batch_first:
            extras.append("batch_first=True")
        if self.dropout:
            extras.append(f"dropout={self.dropout}")
        return ", ".join(extras)
