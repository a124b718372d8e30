"""PyTorch's recurrent layers ``nn.RNN`` and ``nn.GRU``, and the machinery they share
with ``nn.LSTM`` (``tinylm/nn/lstm.py``): parameters named and laid out as PyTorch's,
layers stacked with dropout between them, ``batch_first``, an initial state, and
``bidirectional``. Each direction of each layer projects its whole input in one matrix
product and runs its recurrence over time as one fused op (``tinylm/ops/rnn.py``,
``tinylm/ops/gru.py``, ``tinylm/ops/lstm.py``); ``forward_embedded`` can instead look
layer 0's projection up per token from a (vocabulary, G·H) table.
"""

from __future__ import annotations

import math

from tinylm import backends, ops
from tinylm.autograd import Tensor
from tinylm.nn import functional as F
from tinylm.nn import init
from tinylm.nn.basic import Embedding
from tinylm.nn.module import Module, Parameter
from tinylm.ops.gru import gru_layer
from tinylm.ops.rnn import rnn_layer
from tinylm.reference.rnn import NONLINEARITIES


class RecurrentBase(Module):
    """What ``RNN``, ``GRU`` and ``LSTM`` share, PyTorch's ``nn.RNNBase``.

    Parameters of layer k, direction suffix s ('' forward, '_reverse' backward in time):
    ``weight_ih_l{k}{s}`` (G·H, input size of layer k), ``weight_hh_l{k}{s}`` (G·H, H),
    ``bias_ih_l{k}{s}`` and ``bias_hh_l{k}{s}`` (G·H,), all U(-1/√H, 1/√H), with G the
    number of gate blocks (1 RNN, 3 GRU, 4 LSTM). Layer k > 0 reads the previous
    layer's output, of size D·H with D = 2 when bidirectional, else 1.

    A subclass sets ``gates`` and ``state_names``, and defines one direction of one layer
    as ``_project`` (the input projection, with the biases outside the recurrence) and
    ``_recur`` (the fused recurrence over that projection); ``_direction`` runs both, and
    a subclass may override it (the LSTM makes the projection inside its op). The state
    tensors are (num_layers·D, B, H), ordered as PyTorch's: layer 0 forward, layer 0
    reverse, layer 1 forward, ...
    """

    gates = 1
    state_names = ("h0",)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 dtype=None, generator=None):
        super().__init__()
        name = type(self).__name__
        if num_layers < 1:
            raise ValueError(f"{name}: num_layers must be at least 1, got {num_layers}")
        if not 0 <= dropout <= 1:
            raise ValueError(f"{name}: dropout must be in [0, 1], got {dropout}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout, self.generator = bias, batch_first, dropout, generator
        self.bidirectional = bidirectional
        bound, rows = 1.0 / math.sqrt(hidden_size), self.gates * hidden_size
        for k in range(num_layers):
            layer_input = input_size if k == 0 else self.directions * hidden_size
            for suffix in self._suffixes():
                shapes = {"weight_ih": (rows, layer_input), "weight_hh": (rows, hidden_size)}
                if bias:
                    shapes.update(bias_ih=(rows,), bias_hh=(rows,))
                for param, shape in shapes.items():  # PyTorch's order: w_ih, w_hh, b_ih, b_hh
                    setattr(self, f"{param}_l{k}{suffix}", Parameter(init.uniform(shape, bound, dtype, generator)))

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _suffixes(self):
        return ("", "_reverse") if self.bidirectional else ("",)

    def _weights(self, k: int, suffix: str):
        """(w_ih, w_hh, b_ih, b_hh) of layer k in one direction; the biases None without bias."""
        w_ih, w_hh = getattr(self, f"weight_ih_l{k}{suffix}"), getattr(self, f"weight_hh_l{k}{suffix}")
        if not self.bias:
            return w_ih, w_hh, None, None
        return w_ih, w_hh, getattr(self, f"bias_ih_l{k}{suffix}"), getattr(self, f"bias_hh_l{k}{suffix}")

    def _initial_state(self, state: tuple, batch: int, like: Tensor) -> tuple:
        shape = (self.num_layers * self.directions, batch, self.hidden_size)
        if state is None:
            zeros = Tensor(backends.get_array_module(like.data).zeros(shape, dtype=like.dtype))
            return (zeros,) * len(self.state_names)
        if not isinstance(state, (tuple, list)) or len(state) != len(self.state_names):
            raise ValueError(f"{type(self).__name__}: the initial state must be ({', '.join(self.state_names)})")
        for name, s in zip(self.state_names, state):
            if s.shape != shape:
                raise ValueError(f"{type(self).__name__}: {name} {s.shape} must be "
                                 f"(num_layers * num_directions, batch, hidden) = {shape}")
        return state

    def _project(self, x, weights):
        """A layer's input projection: x (..., input) -> (..., G·H), with the biases that
        are added outside the recurrence."""
        raise NotImplementedError(f"{type(self).__name__} must define _project")

    def _recur(self, projected, weights, state):
        """The recurrence over time on a projection (T, B, G·H) in the order it is read,
        ``weights`` as ``_weights``, ``state`` one (B, H) tensor per state name ->
        (output (T, B, H), final state, one (B, H) tensor per state name)."""
        raise NotImplementedError(f"{type(self).__name__} must define _recur")

    def _direction(self, x, weights, state):
        """One direction of one layer, x (T, B, input) -> as ``_recur``: the input's
        projection for every step in one matrix product, then the recurrence."""
        return self._recur(self._project(x, weights), weights, state)

    def _run(self, x, state):
        """x (T, B, input_size), state a tuple of (L·D, B, H) -> (output, final state tuple)."""
        name = type(self).__name__
        if x.ndim != 3 or x.shape[-1] != self.input_size:
            order = "(B, T, input_size)" if self.batch_first else "(T, B, input_size)"
            raise ValueError(f"{name}: input must be {order} with input_size={self.input_size}, got {x.shape}")
        if self.batch_first:
            x = x.transpose(0, 1)  # (T, B, input_size)
        return self._layers(x, state)

    def forward_embedded(self, ids, embedding, state=None):
        """``forward(embedding(ids), state)``, the same outputs and gradients, with layer
        0's input projection looked up per token where that is cheaper.

        Layer 0 reads nothing but embedding rows, so the projection of token v is the
        same vector at every position where v occurs. For a vocabulary of V tokens:

            table = E Wᵢₕ₀ᵀ + b        (V, G·H), row v the projection of token v
            projected[t, b] = table[ids[t, b]]

        The product costs V·E·G·H multiply-adds instead of T·B·E·G·H. Backward, the
        lookup's gradient scatter-adds the T·B rows of dprojected into dtable (V, G·H)
        (the embedding op's backward), and then dE = dtable Wᵢₕ₀ and dWᵢₕ₀ = dtableᵀ E
        are two V-row products instead of two T·B-row ones (the chain rule through the
        product, as ``Linear``'s backward). A character model's vocabulary (about 100)
        is far below its tokens per batch (thousands), so this removes most of layer 0's
        input arithmetic, forward and backward. The step-by-step ``LSTMStepper`` uses the
        same table.

        Taken when the vocabulary is at most half the tokens (``2·V ≤ T·B``), and the
        layer runs one direction from a plain ``Embedding`` (no padding row, which must
        get no gradient, and no ``forward`` of a subclass's own, which the table would
        skip); otherwise this is ``forward(embedding(ids), state)``.
        ``ids`` (B, T) with ``batch_first``, else (T, B).
        """
        name = type(self).__name__
        if embedding.embedding_dim != self.input_size:
            raise ValueError(f"{name}.forward_embedded: the embedding's rows have {embedding.embedding_dim} "
                             f"values but the layer's input_size is {self.input_size}")
        ids_array = ids.data if isinstance(ids, Tensor) else ids
        if not hasattr(ids_array, "ndim"):  # a list of ints
            ids_array = backends.get_array_module(embedding.weight.data).asarray(ids_array)
        if (ids_array.ndim != 2 or self.bidirectional or embedding.padding_idx is not None
                or type(embedding).forward is not Embedding.forward  # a subclass's own lookup is run as it is
                or 2 * embedding.num_embeddings > ids_array.size):
            return self.forward(embedding(ids), state)
        xp = backends.get_array_module(ids_array)
        time_major = xp.ascontiguousarray(ids_array.T if self.batch_first else ids_array)  # (T, B)
        table = self._project(embedding.weight, self._weights(0, ""))  # (V, G·H)
        if state is not None and len(self.state_names) == 1:  # RNN and GRU take h0 itself
            state = (state,)
        output, finals = self._layers(F.embedding(time_major, table), state, projected=True)  # from (T, B, G·H)
        return output, finals if len(self.state_names) > 1 else finals[0]

    def _layers(self, x, state, projected=False):
        """The layers over x (T, B, input_size), or, with ``projected``, over layer 0's
        input projection (T, B, G·H) (one direction only) -> (output, final state tuple)."""
        state = self._initial_state(state, x.shape[1], x)
        layer_input, finals = x, []
        for k in range(self.num_layers):
            outputs = []
            for d, suffix in enumerate(self._suffixes()):
                index = k * self.directions + d
                reverse = suffix == "_reverse"  # reads the sequence backwards in time
                read = layer_input[::-1] if reverse else layer_input
                run = self._recur if projected and k == 0 else self._direction
                out, final = run(read, self._weights(k, suffix), tuple(s[index] for s in state))
                outputs.append(out[::-1] if reverse else out)  # back in time order
                finals.append(final)
            # PyTorch's layout: forward and reverse outputs side by side, (T, B, D·H).
            layer_input = outputs[0] if len(outputs) == 1 else ops.concat(outputs, axis=-1)
            if k < self.num_layers - 1 and self.dropout > 0:
                # time-major (T, B, D·H): the batch's rows are on axis 1
                layer_input = F.dropout(layer_input, self.dropout, self.training, self.generator, batch_axis=1)
        output = layer_input.transpose(0, 1) if self.batch_first else layer_input
        # finals: one tuple of (B, H) per layer and direction -> one (L·D, B, H) per state name.
        return output, tuple(ops.stack(list(parts), axis=0) for parts in zip(*finals))

    def extra_repr(self) -> str:
        extras = [f"{self.input_size}, {self.hidden_size}"]
        if self.num_layers != 1:
            extras.append(f"num_layers={self.num_layers}")
        if not self.bias:
            extras.append("bias=False")
        if self.batch_first:
            extras.append("batch_first=True")
        if self.dropout:
            extras.append(f"dropout={self.dropout}")
        if self.bidirectional:
            extras.append("bidirectional=True")
        return ", ".join(extras)


class RNN(RecurrentBase):
    """PyTorch's ``nn.RNN``: h_t = act(x_t Wᵢₕᵀ + bᵢₕ + h_{t-1} Wₕₕᵀ + bₕₕ), act = tanh or relu.

    ``forward(x, h0=None)`` takes x (T, B, input_size) (or (B, T, input_size) with
    ``batch_first``) and returns ``(output, h_n)``: output (T, B, D·H) holds the last
    layer's h at every step, h_n (num_layers·D, B, H) the final states.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 dtype=None, generator=None):
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         dtype, generator)
        self.nonlinearity = nonlinearity

    def _project(self, x, weights):
        w_ih, _, b_ih, b_hh = weights
        return F.linear(x, w_ih, None if b_ih is None else b_ih + b_hh)  # (..., H), both biases

    def _recur(self, projected, weights, state):
        hs, h_n = rnn_layer(projected, weights[1], state[0], self.nonlinearity)
        return hs, (h_n,)

    def forward(self, x, h0=None):
        output, (h_n,) = self._run(x, None if h0 is None else (h0,))
        return output, h_n

    def extra_repr(self) -> str:
        base = super().extra_repr()
        return base if self.nonlinearity == "tanh" else f"{base}, nonlinearity={self.nonlinearity!r}"


class GRU(RecurrentBase):
    """PyTorch's ``nn.GRU``, gates in PyTorch's order (r, z, n):

        r = σ(Wᵢᵣ x + bᵢᵣ + Wₕᵣ h + bₕᵣ)     z = σ(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(Wᵢₙ x + bᵢₙ + r ⊙ (Wₕₙ h + bₕₙ))     h' = (1 - z) ⊙ n + z ⊙ h

    ``forward(x, h0=None)`` returns ``(output, h_n)`` as ``RNN`` does.
    """

    gates = 3

    def _project(self, x, weights):
        w_ih, _, b_ih, _ = weights
        return F.linear(x, w_ih, b_ih)  # (..., 3H); bₕₕ goes in with h Wₕₕᵀ, inside r ⊙ (...)

    def _recur(self, projected, weights, state):
        _, w_hh, _, b_hh = weights
        if b_hh is None:
            b_hh = Tensor(backends.get_array_module(w_hh.data).zeros(w_hh.shape[0], dtype=w_hh.dtype))
        hs, h_n = gru_layer(projected, w_hh, b_hh, state[0])
        return hs, (h_n,)

    def forward(self, x, h0=None):
        output, (h_n,) = self._run(x, None if h0 is None else (h0,))
        return output, h_n
