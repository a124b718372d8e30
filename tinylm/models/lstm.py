"""The seed's model: embedding, LSTM, dropout, linear."""

from __future__ import annotations

from tinylm import backends, nn
from tinylm.autograd import Tensor, no_grad
from tinylm.models.language_model import LanguageModel


class LSTMLanguageModel(LanguageModel):
    """Predicts the next token at every position.

    ids (B, T) -> embedding (B, T, E) -> LSTM (B, T, H) -> dropout -> linear -> logits (B, T, V).
    ``forward(ids, state=None)`` returns ``(logits, state)``, the state being (h, c), each
    (L, B, H); pass it (detached) to the next call to continue the text (truncated
    backpropagation through time). ``stepper()`` is the graph-free ``LSTMStepper``.
    """

    carries_state = True

    def __init__(self, vocab_size: int, embedding_dim: int = 128, hidden_dim: int = 256,
                 n_layers: int = 2, dropout: float = 0.1):
        super().__init__()
        self.config = dict(vocab_size=vocab_size, embedding_dim=embedding_dim, hidden_dim=hidden_dim,
                           n_layers=n_layers, dropout=dropout)
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_dim, num_layers=n_layers, batch_first=True,
                            dropout=dropout if n_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_dim, vocab_size)

    @staticmethod
    def parameter_shapes(vocab_size: int, embedding_dim: int, hidden_dim: int, n_layers: int,
                         dropout: float = 0.0) -> dict[str, tuple[int, ...]]:
        """The name and shape of every parameter this config makes, without making them
        (a run's loader checks a file against them before allocating anything)."""
        shapes = {"embedding.weight": (vocab_size, embedding_dim)}
        for k in range(n_layers):
            shapes[f"lstm.weight_ih_l{k}"] = (4 * hidden_dim, embedding_dim if k == 0 else hidden_dim)
            shapes[f"lstm.weight_hh_l{k}"] = (4 * hidden_dim, hidden_dim)
            shapes[f"lstm.bias_ih_l{k}"] = shapes[f"lstm.bias_hh_l{k}"] = (4 * hidden_dim,)
        return {**shapes, "fc.weight": (vocab_size, hidden_dim), "fc.bias": (vocab_size,)}

    def forward(self, ids, state=None):
        # lstm(embedding(ids), state), with layer 0's input projection looked up per token
        # when the vocabulary is small next to the batch (see RecurrentBase.forward_embedded)
        output, state = self.lstm.forward_embedded(ids, self.embedding, state)  # (B, T, H), ((L, B, H), (L, B, H))
        return self.fc(self.dropout(output)), state  # (B, T, V)

    def stepper(self) -> "LSTMStepper":
        """Token-by-token generation: the prompt through ``forward``, then graph-free steps."""
        return LSTMStepper(self)


class LSTMStepper:
    """The model's next-token logits one step at a time, for generation: the same maths as
    ``LSTMLanguageModel.forward`` in eval mode, on raw arrays, with no autograd graph.

    At batch 1 a step is a few matrix-vector products over about 3.5 MB of weights, and
    what the graph costs per op (a Function, Tensors, checks, over some twenty ops a step)
    outweighs the arithmetic (benchmarks/NOTES.md). Here a step is a table lookup, one ``lstm_stack_step`` kernel
    call for all layers (in C on the cython backend) and the output layer's product:

    - layer 0's input is an embedding row, so its input projection is looked up, not
      computed: row v of ``token_gates`` = embedding[v] W_ih0ᵀ + b_ih0 + b_hh0, for every
      token v at once, (V, 4H). Made when V ≤ 4E (the table is then at most four times
      W_ih0's size); a larger vocabulary multiplies as the model does.
    - a later layer multiplies [x, h] by [W_ih, W_hh] stacked side by side, (4H, H + H):
      one product of twice the size, which OpenBLAS splits over two threads (one of
      1024 x 256 it runs on one).

    Int8 weights: a model loaded from an int8 run (``python -m tinylm.quantize``) carries
    ``model.int8_weights`` (``tinylm.runs``). The stepper then keeps W_hh0 and each later
    layer's [q_ih | q_hh] as int8 with their own row scales, w_hh0_scale (4H,) and
    stacked_scale (L-1, 2, 4H) ([k, 0] of W_ih's rows, [k, 1] of W_hh's), for
    ``lstm_stack_step``'s int8 path, and hands it the int8 output layer too (``fc_weight``,
    ``fc_scale``, ``fc_bias``), so one kernel call, one OpenMP region in C, returns the
    new state and the logits: a quarter of the bytes read a step, and no second call. At
    batch 1 the id is checked with plain integer comparisons and its table row taken as
    a slice (a reduction and a fancy index over a one-element array cost more than a
    microsecond each, in a step of about 25). The token table (or, when
    there is none, layer 0's input product at each step) goes through ``int8_matmul`` too,
    one row at a time, and ``start`` reads the prompt token by token through ``step``: an
    int8 stepper never calls NumPy's BLAS, whose threads would keep spinning on the core
    the int8 kernels' second thread needs (``start``). The int8 values times their scales
    are exactly the model's own (dequantized) weights, so the logits are ``forward``'s up
    to float32 rounding.

    The table and the stacked weights are computed when the stepper is made (well under a
    millisecond for the default model) and not updated after: make a new stepper after
    the model changes.

    ``start`` reads a whole prompt with the model's own ``forward`` (the fused layer kernel,
    one call for all its positions; an int8 stepper steps through it) and hands its final
    (h, c) on to ``step``:

        stepper = model.stepper()                                 # LSTMStepper(model)
        logits, state = stepper.start(np.array([prompt]))         # logits (1, V)
        logits, state = stepper.step(np.array([next_token]), state)

    ``step`` with no state starts from zeros, as ``forward`` does.
    """

    def __init__(self, model: LSTMLanguageModel):
        self.model = model
        lstm = model.lstm
        self.embedding = model.embedding.weight.data  # (V, E)
        xp = backends.get_array_module(self.embedding)
        weights = [(getattr(lstm, f"weight_ih_l{k}").data, getattr(lstm, f"weight_hh_l{k}").data)
                   for k in range(lstm.num_layers)]
        self.biases = [(getattr(lstm, f"bias_ih_l{k}").data + getattr(lstm, f"bias_hh_l{k}").data) if lstm.bias
                       else xp.zeros(w_ih.shape[0], dtype=w_ih.dtype) for k, (w_ih, _) in enumerate(weights)]
        vocab, embedding_dim = self.embedding.shape
        self.w_ih0, self.w_hh0 = weights[0]  # (4H, E), (4H, H)
        int8 = getattr(model, "int8_weights", None)  # {name: (q, scale)} of an int8 run, see tinylm.runs
        if int8 is not None:  # on the model's device, as its other arrays (the file is read into NumPy)
            int8 = {name: tuple(xp.asarray(a) for a in pair) for name, pair in int8.items()}
            self.ih0_int8 = int8["lstm.weight_ih_l0"]  # (4H, E) int8, (4H,)
        if vocab > 4 * embedding_dim:
            self.token_gates = None
        elif int8 is None:
            self.token_gates = self.embedding @ self.w_ih0.T + self.biases[0]
        else:  # row by row through the int8 matrix-vector kernel: no BLAS call (see ``start``)
            product = backends.kernel("int8_matmul")
            self.token_gates = xp.concatenate([product(self.embedding[v:v + 1], *self.ih0_int8)
                                               for v in range(vocab)]) + self.biases[0]
        hidden, dtype = lstm.hidden_size, self.w_hh0.dtype
        later = len(weights) - 1
        stacked_dtype = xp.int8 if int8 is not None else dtype
        self.stacked = xp.empty((later, 4 * hidden, 2 * hidden), stacked_dtype)  # (L-1, 4H, 2H)
        self.later_biases = xp.empty((later, 4 * hidden), dtype)  # (L-1, 4H)
        self.w_hh0_scale = self.stacked_scale = self.fc_int8 = None
        for k in range(later):
            self.later_biases[k] = self.biases[k + 1]
        if int8 is None:
            for k, (w_ih, w_hh) in enumerate(weights[1:]):
                self.stacked[k, :, :hidden], self.stacked[k, :, hidden:] = w_ih, w_hh
        else:  # int8 W_hh0 and stacked [q_ih | q_hh], each matrix with its own row scales
            self.w_hh0, self.w_hh0_scale = (xp.asarray(a) for a in int8["lstm.weight_hh_l0"])  # (4H, H), (4H,)
            self.stacked_scale = xp.empty((later, 2, 4 * hidden), xp.float32)  # (L-1, 2, 4H)
            for k in range(later):
                for half, kind in enumerate(("ih", "hh")):  # [k, 0]: W_ih's rows, [k, 1]: W_hh's
                    q, scale = int8[f"lstm.weight_{kind}_l{k + 1}"]  # (4H, H), (4H,)
                    self.stacked[k, :, half * hidden:(half + 1) * hidden] = xp.asarray(q)
                    self.stacked_scale[k, half] = xp.asarray(scale)
            self.fc_int8 = tuple(xp.asarray(a) for a in int8["fc.weight"])  # (V, H) int8, (V,)
        self.fc_weight = model.fc.weight.data  # (V, H)
        self.fc_bias = model.fc.bias.data if model.fc.bias is not None else 0
        self.fc_int8_bias = model.fc.bias.data if model.fc.bias is not None else None  # lstm_stack_step's fc_bias
        self.hidden = lstm.hidden_size

    def initial_state(self, batch: int):
        xp = backends.get_array_module(self.embedding)
        zeros = xp.zeros((len(self.biases), batch, self.hidden), dtype=self.embedding.dtype)
        return zeros, zeros.copy()

    def start(self, prompt_ids, state=None):
        """prompt_ids (B, T) -> logits (B, V) at the prompt's last position and the state
        after it, ((L, B, H), (L, B, H)) raw arrays, through the model's ``forward``
        (from ``state``, forward's (h, c), or zeros).

        An int8 model reads the prompt one token at a time through ``step``'s int8 kernels
        instead: forward would multiply by the dequantized weights through NumPy's BLAS,
        whose threads keep spinning for a while after a call (about 0.1 s) and then
        take a core from the int8 kernels' OpenMP team at every step that follows (batch-1
        steps took 100-150 µs instead of 45, benchmarks/NOTES.md)."""
        if self.fc_int8 is not None and prompt_ids.shape[1] > 0:
            if state is not None:
                state = tuple(part.data if isinstance(part, Tensor) else part for part in state)  # Tensors or arrays
            for t in range(prompt_ids.shape[1]):
                logits, state = self.step(prompt_ids[:, t], state)
            return logits, state
        with no_grad():
            logits, (h, c) = self.model(prompt_ids, state)  # (B, T, V), ((L, B, H), (L, B, H))
        return logits.data[:, -1], (h.data, c.data)

    def select(self, state, rows):
        """The state of batch rows ``rows`` (B',), in that order, repeats allowed: for beam search."""
        h, c = state
        return h[:, rows], c[:, rows]

    def step(self, ids, state=None):
        """ids (B,) -> logits (B, V) and the new state ((L, B, H), (L, B, H))."""
        h, c = state if state is not None else self.initial_state(len(ids))
        xp = backends.get_array_module(self.embedding)
        ids, vocab = xp.asarray(ids), len(self.embedding)
        if ids.shape == (1,) and h.shape[1] == 1 and ids.dtype.kind in "iu":  # sampling: one id
            token = int(ids[0])
            in_range = 0 <= token < vocab
            rows = slice(token, token + 1)  # a view of row `token`, without indexing by an array
        else:
            in_range = ids.size == 0 or 0 <= int(ids.min()) <= int(ids.max()) < vocab
            rows = ids
        if ids.ndim != 1 or ids.shape[0] != h.shape[1] or not in_range:
            raise IndexError(f"LSTMStepper.step: ids {ids.shape} must be (B,) = ({h.shape[1]},) "
                             f"token ids in [0, {vocab})")
        if self.token_gates is not None:
            gates0 = self.token_gates[rows]  # (B, 4H)
        elif self.fc_int8 is not None:
            gates0 = backends.kernel("int8_matmul")(self.embedding[rows], *self.ih0_int8) + self.biases[0]
        else:
            gates0 = self.embedding[rows] @ self.w_ih0.T + self.biases[0]
        if self.fc_int8 is None:
            h, c = backends.kernel("lstm_stack_step")(gates0, h, c, self.w_hh0, self.stacked, self.later_biases)
            return h[-1] @ self.fc_weight.T + self.fc_bias, (h, c)
        if backends.get_backend() in backends.GPU_BACKENDS:  # no fused GPU step: the output layer on its own kernel
            h, c = backends.kernel("lstm_stack_step")(gates0, h, c, self.w_hh0, self.stacked, self.later_biases,
                                                      self.w_hh0_scale, self.stacked_scale)
            logits = backends.kernel("int8_matmul")(h[-1], *self.fc_int8)
            return (logits + self.fc_int8_bias if self.fc_int8_bias is not None else logits), (h, c)
        h, c, logits = backends.kernel("lstm_stack_step")(gates0, h, c, self.w_hh0, self.stacked, self.later_biases,
                                                          self.w_hh0_scale, self.stacked_scale, *self.fc_int8,
                                                          self.fc_int8_bias)
        return logits, (h, c)
