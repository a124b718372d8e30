"""An LSTM encoder-decoder with Luong attention, for translation.

Luong, Pham and Manning, "Effective Approaches to Attention-based Neural Machine
Translation" (2015), global attention. With B sentences, source length S (padded), target
length T, hidden size H:

    encoder     source ids (B, S) -> embedding (B, S, E) -> bidirectional LSTM
                -> h̄_s, (B, S, H): H/2 features from each direction side by side
    bridge      decoder layer k starts from encoder layer k's final (h, c), the two
                directions concatenated: (L, B, H) each
    decoder     target inputs (B, T) -> embedding (B, T, E) -> LSTM (L layers) -> h_t (B, T, H)
    attention   score(h_t, h̄_s) (B, T, S), softmax over the real source positions -> a_ts
                c_t = Σ_s a_ts h̄_s                              (B, T, H)
                h̃_t = tanh(W_c [c_t; h_t])                      (B, T, H)
    output      logits = Linear(dropout(h̃_t))                    (B, T, V_target)

The scores, with Luong's names:

    "dot"        h_tᵀ h̄_s
    "general"    h_tᵀ W_a h̄_s                 W_a = attention.linear_in.weight (H, H)
    "additive"   vᵀ tanh(W₁ h_t + W₂ h̄_s)     Bahdanau's score ("concat" in Luong's paper), used
                                                here in Luong's place: computed from the decoder's
                                                output h_t, after the LSTM, not from the state
                                                before it as Bahdanau does, so that the decoder
                                                runs over the whole target in one call and
                                                training stays parallel over time.

Because attention comes after the decoder LSTM and nothing of it is fed back into the
LSTM (Luong's "input feeding" is left out), teacher forcing runs the decoder LSTM over all
T positions in one fused kernel call, and attention is a few batched matrix products.

Padding. tinylm has no ``pack_padded_sequence``, and a bidirectional LSTM run over a padded
row would start the backward direction on padding and stop the forward state after it.
The encoder instead runs the rows of each length as one batch with no padding at all
(``LSTMEncoder``): exactly what PyTorch's packed sequences compute, with the same
parameter names (``encoder.lstm.weight_ih_l0``, ``encoder.lstm.weight_ih_l0_reverse``, ...),
so a ``torch.nn.LSTM(bidirectional=True)`` fed a packed batch reproduces it. Padding keys
get attention weight exactly 0 (the scores there are -inf before the softmax).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tinylm import backends, nn, ops
from tinylm.autograd import Tensor, no_grad
from tinylm.models.seq2seq import TranslationModel, checked_rows, key_padding_mask
from tinylm.nn import functional as F
from tinylm.ops.attention_softmax import attention_softmax

ATTENTION_SCORES = ("dot", "general", "additive")


class LSTMEncoder(nn.Module):
    """Source ids (B, S) with lengths (B,) -> embedding -> bidirectional LSTM ->
    (outputs (B, S, H), (h, c) each (L, B, H)).

    Each direction of each layer has hidden size H/2; ``outputs`` holds the last layer's
    forward and backward h side by side at every real position and 0 at padding, and
    (h, c) layer k's final states of both directions concatenated, [forward; backward],
    the forward direction's taken at the row's last real token and the backward one's
    after it has read back to the first. That is what ``pack_padded_sequence`` gives in
    PyTorch; here the rows are grouped by length and each group, which has no padding,
    runs through the LSTM on its own. The work is the same as for a packed batch (each
    row's real tokens only); the number of LSTM calls is the number of distinct lengths,
    which a length-bucketed batch keeps small.
    """

    def __init__(self, vocab_size: int, embedding_dim: int, hidden_dim: int, n_layers: int, dropout: float):
        super().__init__()
        self.hidden_dim, self.n_layers = hidden_dim, n_layers
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_dim // 2, num_layers=n_layers, batch_first=True,
                            dropout=dropout if n_layers > 1 else 0.0, bidirectional=True)

    def forward(self, ids, lengths: np.ndarray):
        embedded = self.embedding(ids)  # (B, S, E)
        batch, length = embedded.shape[0], embedded.shape[1]
        xp = backends.get_array_module(embedded.data)
        outputs, hs, cs, order = [], [], [], []
        for row_length in np.unique(lengths)[::-1]:  # longest first
            rows = np.flatnonzero(lengths == row_length)  # the rows of this length
            out, (h, c) = self.lstm(embedded[xp.asarray(rows), :row_length])  # (b, len, H), (2L, b, H/2) each
            if row_length < length:  # zeros where the batch has padding, as pad_packed_sequence gives
                zeros = Tensor(xp.zeros((len(rows), length - row_length, self.hidden_dim), dtype=out.dtype))
                out = ops.concat([out, zeros], axis=1)  # (b, S, H)
            outputs.append(out)
            hs.append(h)
            cs.append(c)
            order.append(rows)
        back = xp.asarray(np.argsort(np.concatenate(order)))  # group order -> batch order
        outputs = ops.concat(outputs, axis=0)[back]  # (B, S, H)
        h, c = (ops.concat(parts, axis=1)[:, back] for parts in (hs, cs))  # (2L, B, H/2) each
        return outputs, (self._bridge(h, batch), self._bridge(c, batch))

    def _bridge(self, state, batch: int):
        """(2L, B, H/2), PyTorch's order (layer 0 forward, layer 0 backward, layer 1 forward,
        ...) -> (L, B, H): each layer's two directions side by side, [forward; backward]."""
        half = self.hidden_dim // 2
        state = state.reshape(self.n_layers, 2, batch, half)  # (L, 2, B, H/2)
        return state.transpose(1, 2).reshape(self.n_layers, batch, self.hidden_dim)  # (L, B, 2, H/2) -> (L, B, H)


class LuongAttention(nn.Module):
    """Global attention of the decoder outputs h_t over the encoder outputs h̄_s (module
    docstring): ``forward(queries (B, T, H), memory (B, S, H), keys, padding (B, S) bool)
    -> (h̃ (B, T, H), weights (B, T, S))``, ``keys`` being ``self.keys(memory)``, the part
    of the score that depends on the source only, computed once per source."""

    def __init__(self, hidden_dim: int, score: str):
        super().__init__()
        self.score = score
        if score == "general":
            self.linear_in = nn.Linear(hidden_dim, hidden_dim, bias=False)  # W_a
        elif score == "additive":
            self.linear_query = nn.Linear(hidden_dim, hidden_dim)  # W₁ (and the one bias)
            self.linear_context = nn.Linear(hidden_dim, hidden_dim, bias=False)  # W₂
            self.v = nn.Linear(hidden_dim, 1, bias=False)  # vᵀ
        self.linear_out = nn.Linear(2 * hidden_dim, hidden_dim, bias=False)  # W_c

    def keys(self, memory):
        """memory (B, S, H) -> what the score reads of each source position, (B, S, H):
        h̄_s ("dot"), W_a h̄_s ("general") or W₂ h̄_s ("additive")."""
        if self.score == "general":
            return self.linear_in(memory)
        if self.score == "additive":
            return self.linear_context(memory)
        return memory

    def forward(self, queries, memory, keys, padding):
        if self.score == "additive":
            batch, steps, length = queries.shape[0], queries.shape[1], keys.shape[1]
            projected = self.linear_query(queries)  # W₁ h_t, (B, T, H)
            hidden = (projected.unsqueeze(2) + keys.unsqueeze(1)).tanh()  # (B, T, 1, H) + (B, 1, S, H) -> (B, T, S, H)
            scores = self.v(hidden).reshape(batch, steps, length)  # (B, T, S, 1) -> (B, T, S)
            weights = attention_softmax(scores, key_padding_mask=padding)  # padding keys at 0, (B, T, S)
        else:  # h_t · keys_s for every pair: (B, T, H) @ (B, H, S) -> (B, T, S), unscaled as in Luong
            weights = F.attention_weights(queries, keys, scale=1.0, key_padding_mask=padding)
        context = weights @ memory  # c_t = Σ_s a_ts h̄_s, (B, T, S) @ (B, S, H) -> (B, T, H)
        attentional = self.linear_out(ops.concat([context, queries], axis=-1)).tanh()  # tanh(W_c [c_t; h_t]), (B, T, H)
        return attentional, weights

    def extra_repr(self) -> str:
        return f"score={self.score!r}"


class LSTMDecoder(nn.Module):
    """Target ids (B, T) and an initial (h, c), each (L, B, H) -> embedding -> LSTM ->
    (outputs (B, T, H), final (h, c))."""

    def __init__(self, vocab_size: int, embedding_dim: int, hidden_dim: int, n_layers: int, dropout: float):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_dim, num_layers=n_layers, batch_first=True,
                            dropout=dropout if n_layers > 1 else 0.0)

    def forward(self, ids, state):
        # lstm(embedding(ids), state), as a per-token lookup of layer 0's input projection when
        # that is cheaper (RecurrentBase.forward_embedded)
        return self.lstm.forward_embedded(ids, self.embedding, state)  # (B, T, H), ((L, B, H), (L, B, H))


class Encoded(NamedTuple):
    """A source read by the encoder, what every decoding step needs: ``memory`` h̄ (B, S, H),
    ``keys`` the attention's (B, S, H), ``padding`` bool (B, S), ``state`` the decoder's
    initial (h, c), each (L, B, H)."""

    memory: Tensor
    keys: Tensor
    padding: object
    state: tuple


class Seq2SeqLSTM(TranslationModel):
    """Bidirectional LSTM encoder, LSTM decoder, Luong attention (module docstring), with the
    translation model interface of ``tinylm.models.seq2seq``.

    ``attention`` is the score: "dot", "general" or "additive". ``hidden_dim`` is the
    decoder's size and the encoder's two directions together (H/2 each), so it must be
    even; ``n_layers`` is the depth of both, the decoder's layer k starting from the
    encoder's layer k. ``dropout`` applies to h̃ before the output layer and between
    stacked LSTM layers.
    """

    def __init__(self, source_vocab_size: int, target_vocab_size: int, embedding_dim: int = 128,
                 hidden_dim: int = 256, n_layers: int = 1, attention: str = "general", dropout: float = 0.1):
        super().__init__()
        if attention not in ATTENTION_SCORES:
            raise ValueError(f"Seq2SeqLSTM: attention must be one of {ATTENTION_SCORES}, got {attention!r}")
        if hidden_dim < 2 or hidden_dim % 2:
            raise ValueError(f"Seq2SeqLSTM: hidden_dim must be even (each encoder direction has hidden_dim // 2), "
                             f"got {hidden_dim}")
        self.config = dict(source_vocab_size=source_vocab_size, target_vocab_size=target_vocab_size,
                           embedding_dim=embedding_dim, hidden_dim=hidden_dim, n_layers=n_layers,
                           attention=attention, dropout=dropout)
        self.encoder = LSTMEncoder(source_vocab_size, embedding_dim, hidden_dim, n_layers, dropout)
        self.decoder = LSTMDecoder(target_vocab_size, embedding_dim, hidden_dim, n_layers, dropout)
        self.attention = LuongAttention(hidden_dim, attention)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_dim, target_vocab_size)

    @staticmethod
    def parameter_shapes(source_vocab_size: int, target_vocab_size: int, embedding_dim: int = 128,
                         hidden_dim: int = 256, n_layers: int = 1, attention: str = "general",
                         dropout: float = 0.1) -> dict[str, tuple[int, ...]]:
        """The name and shape of every parameter this config makes, without making them."""
        shapes = {"encoder.embedding.weight": (source_vocab_size, embedding_dim)}
        half = hidden_dim // 2
        for k in range(n_layers):
            for suffix in ("", "_reverse"):
                shapes[f"encoder.lstm.weight_ih_l{k}{suffix}"] = (4 * half, embedding_dim if k == 0 else hidden_dim)
                shapes[f"encoder.lstm.weight_hh_l{k}{suffix}"] = (4 * half, half)
                shapes[f"encoder.lstm.bias_ih_l{k}{suffix}"] = (4 * half,)
                shapes[f"encoder.lstm.bias_hh_l{k}{suffix}"] = (4 * half,)
        shapes["decoder.embedding.weight"] = (target_vocab_size, embedding_dim)
        for k in range(n_layers):
            shapes[f"decoder.lstm.weight_ih_l{k}"] = (4 * hidden_dim, embedding_dim if k == 0 else hidden_dim)
            shapes[f"decoder.lstm.weight_hh_l{k}"] = (4 * hidden_dim, hidden_dim)
            shapes[f"decoder.lstm.bias_ih_l{k}"] = shapes[f"decoder.lstm.bias_hh_l{k}"] = (4 * hidden_dim,)
        if attention == "general":
            shapes["attention.linear_in.weight"] = (hidden_dim, hidden_dim)
        elif attention == "additive":
            shapes.update({"attention.linear_query.weight": (hidden_dim, hidden_dim),
                           "attention.linear_query.bias": (hidden_dim,),
                           "attention.linear_context.weight": (hidden_dim, hidden_dim),
                           "attention.v.weight": (1, hidden_dim)})
        shapes["attention.linear_out.weight"] = (hidden_dim, 2 * hidden_dim)
        return {**shapes, "fc.weight": (target_vocab_size, hidden_dim), "fc.bias": (target_vocab_size,)}

    def encode(self, source) -> Encoded:
        """A checked ``Source`` -> ``Encoded``: the encoder run once over it."""
        memory, state = self.encoder(source.ids, source.lengths)  # (B, S, H), ((L, B, H), (L, B, H))
        padding = key_padding_mask(source.lengths, source.ids.shape[1], memory.device)  # (B, S)
        return Encoded(memory, self.attention.keys(memory), padding, state)

    def decode(self, ids, encoded: Encoded, state):
        """Target ids (B, T) from decoder state (h, c) -> (logits (B, T, V), attention
        weights (B, T, S), the state after the last position)."""
        outputs, state = self.decoder(ids, state)  # (B, T, H)
        attentional, weights = self.attention(outputs, encoded.memory, encoded.keys, encoded.padding)
        return self.fc(self.dropout(attentional)), weights, state  # (B, T, V)

    def forward(self, ids, state=None):
        """ids (B, T) target inputs, state the ``Source`` -> (logits (B, T, V), None)."""
        encoded = self.encode(self._checked("forward", ids, state))
        logits, _, _ = self.decode(ids, encoded, encoded.state)
        return logits, None

    def cross_attention(self, ids, state) -> np.ndarray:
        """ids (B, T), state the ``Source`` -> the attention weights a_ts, (B, T, S) NumPy,
        computed in eval mode (the mode is restored after) with no graph."""
        source = self._checked("cross_attention", ids, state)
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                encoded = self.encode(source)
                _, weights, _ = self.decode(ids, encoded, encoded.state)
        finally:
            self.train(was_training)
        return weights.numpy()

    def stepper(self) -> "Seq2SeqLSTMStepper":
        return Seq2SeqLSTMStepper(self)


class Seq2SeqLSTMState(NamedTuple):
    """The stepper's state, raw arrays: the decoder's ``h`` and ``c`` (L, B, H) and the
    encoded source, ``memory`` and ``keys`` (B, S, H), ``padding`` (B, S)."""

    h: object
    c: object
    memory: object
    keys: object
    padding: object


class Seq2SeqLSTMStepper:
    """Token-by-token decoding for ``Seq2SeqLSTM``: ``start`` encodes the source once and
    reads the prompt; each ``step`` runs one position through the decoder LSTM and the
    attention. The model's own layers run under ``no_grad`` (the LSTM kernel for one
    step), so a step computes exactly what ``forward`` computes at that position.

        stepper = model.stepper()
        logits, st = stepper.start(np.full((B, 1), BOS), source)   # logits (B, V)
        logits, st = stepper.step(next_ids, st)                    # next_ids (B,)
        st = stepper.select(st, rows)                              # beam search: keep/repeat rows
    """

    def __init__(self, model: Seq2SeqLSTM):
        self.model = model

    def start(self, prompt_ids, state):
        """prompt_ids (B, T >= 1), state the ``Source`` -> (logits (B, V) after the prompt's
        last token, ``Seq2SeqLSTMState``)."""
        model = self.model
        xp = backends.get_array_module(model.fc.weight.data)
        prompt = xp.asarray(prompt_ids)
        source = model._checked("stepper.start", prompt, state)
        with no_grad():
            encoded = model.encode(source)
            logits, _, (h, c) = model.decode(prompt, encoded, encoded.state)  # (B, T, V)
        return logits.data[:, -1], Seq2SeqLSTMState(h.data, c.data, encoded.memory.data, encoded.keys.data,
                                                    encoded.padding)

    def step(self, ids, state: Seq2SeqLSTMState):
        """ids (B,) the tokens just chosen -> (logits (B, V) after them, the new state)."""
        xp = backends.get_array_module(state.h)
        ids = xp.asarray(ids)
        if ids.shape != (state.h.shape[1],):
            raise ValueError(f"Seq2SeqLSTMStepper.step: ids {tuple(ids.shape)} must be (B,) = ({state.h.shape[1]},)")
        encoded = Encoded(Tensor(state.memory), Tensor(state.keys), state.padding, None)
        with no_grad():
            logits, _, (h, c) = self.model.decode(ids[:, None], encoded, (Tensor(state.h), Tensor(state.c)))
        return logits.data[:, 0], state._replace(h=h.data, c=c.data)  # (B, 1, V) -> (B, V)

    def select(self, state: Seq2SeqLSTMState, rows) -> Seq2SeqLSTMState:
        """The state of batch rows ``rows`` (B',) ints, repeats allowed (beam search)."""
        rows = checked_rows("Seq2SeqLSTMStepper.select", rows, state.h.shape[1], state.h)
        return Seq2SeqLSTMState(state.h[:, rows], state.c[:, rows], state.memory[rows], state.keys[rows],
                                state.padding[rows])
