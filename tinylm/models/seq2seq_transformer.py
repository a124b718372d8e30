"""The encoder-decoder transformer of "Attention Is All You Need" (Vaswani et al. 2017), for translation.

With B sentences, source length S (padded), target length T and width d = d_model:

    source ids (B, S) -> embedding · √d + sinusoidal positions -> dropout            (B, S, d)
        -> encoder layers: self-attention over the real source positions, feed-forward
        -> LayerNorm -> memory                                                       (B, S, d)
    target ids (B, T) -> embedding · √d + sinusoidal positions -> dropout            (B, T, d)
        -> decoder layers: causal self-attention (position t sees 0..t),
           cross-attention over the memory's real positions, feed-forward
        -> LayerNorm -> Linear -> logits                                             (B, T, V_target)

Each sublayer is residual. ``norm_first=True`` (pre-norm, the default here, steadier to
train) computes x + f(LN(x)); ``norm_first=False`` (the paper's post-norm) LN(x + f(x)). The
feed-forward is Linear(d, dim_feedforward), ReLU, dropout, Linear(dim_feedforward, d).
The embeddings start at N(0, 1/d), so that scaled by √d they are about as large as the
positional code (the paper ties them to the output layer, whose weights are that small).

The parameters are named and laid out as PyTorch's ``nn.Transformer`` under
``transformer.`` (``transformer.encoder.layers.0.self_attn.in_proj_weight``,
``transformer.decoder.layers.0.multihead_attn.out_proj.weight``, ``.linear1``, ``.norm3``,
``transformer.encoder.norm``, ...), so a ``torch.nn.Transformer(batch_first=True)`` given
the same weights computes the same memory and decoder output. As in PyTorch, the final
encoder and decoder norms are there in both the pre-norm and post-norm forms.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from tinylm import backends, nn, ops
from tinylm.autograd import Tensor, no_grad
from tinylm.models.seq2seq import TranslationModel, checked_rows, key_padding_mask
from tinylm.nn import init

MAX_LEN = 256  # positions of source and target a model has by default: sentences, not documents


class FeedForward(nn.Module):
    """What the encoder and decoder layers share: the position-wise feed-forward,
    linear2(dropout(relu(linear1(x)))), on the layer's own ``linear1``, ``dropout``, ``linear2``."""

    def _feed_forward(self, x):  # (B, L, d) -> (B, L, dim_feedforward) -> (B, L, d)
        return self.linear2(self.dropout(ops.relu(self.linear1(x))))


class EncoderLayer(FeedForward):
    """PyTorch's ``nn.TransformerEncoderLayer`` (ReLU, batch_first): self-attention over the
    source, padding keys masked, then the feed-forward, each residual.
    ``forward(x (B, S, d), padding bool (B, S)) -> (B, S, d)``."""

    def __init__(self, d_model: int, n_heads: int, dim_feedforward: int, dropout: float, norm_first: bool):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def _self_attention(self, x, padding):
        attended, _ = self.self_attn(x, x, x, key_padding_mask=padding, need_weights=False)
        return self.dropout1(attended)

    def forward(self, x, padding):
        if self.norm_first:
            x = x + self._self_attention(self.norm1(x), padding)
            return x + self.dropout2(self._feed_forward(self.norm2(x)))
        x = self.norm1(x + self._self_attention(x, padding))
        return self.norm2(x + self.dropout2(self._feed_forward(x)))


class DecoderLayer(FeedForward):
    """PyTorch's ``nn.TransformerDecoderLayer`` (ReLU, batch_first): causal self-attention,
    cross-attention over the memory with its padding keys masked, feed-forward, each
    residual. ``forward(x (B, T, d), memory (B, S, d), padding bool (B, S), need_weights)
    -> (x (B, T, d), cross-attention weights averaged over heads (B, T, S) or None)``."""

    def __init__(self, d_model: int, n_heads: int, dim_feedforward: int, dropout: float, norm_first: bool):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def _self_attention(self, x):
        attended, _ = self.self_attn(x, x, x, is_causal=True, need_weights=False)  # position t sees 0..t
        return self.dropout1(attended)

    def _cross_attention(self, x, memory, padding, need_weights: bool):
        attended, weights = self.multihead_attn(x, memory, memory, key_padding_mask=padding,
                                                need_weights=need_weights)  # weights (B, T, S), mean of heads
        return self.dropout2(attended), weights

    def forward(self, x, memory, padding, need_weights: bool = False):
        if self.norm_first:
            x = x + self._self_attention(self.norm1(x))
            attended, weights = self._cross_attention(self.norm2(x), memory, padding, need_weights)
            x = x + attended
            return x + self.dropout3(self._feed_forward(self.norm3(x))), weights
        x = self.norm1(x + self._self_attention(x))
        attended, weights = self._cross_attention(x, memory, padding, need_weights)
        x = self.norm2(x + attended)
        return self.norm3(x + self.dropout3(self._feed_forward(x))), weights


class Encoder(nn.Module):
    """PyTorch's ``nn.TransformerEncoder``: the layers, then ``norm``."""

    def __init__(self, layers, d_model: int):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x, padding):  # (B, S, d), (B, S) -> (B, S, d)
        for layer in self.layers:
            x = layer(x, padding)
        return self.norm(x)


class Decoder(nn.Module):
    """PyTorch's ``nn.TransformerDecoder``: the layers, then ``norm``; with ``need_weights``
    the last layer's cross-attention weights (B, T, S) come back as well."""

    def __init__(self, layers, d_model: int):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x, memory, padding, need_weights: bool = False):  # (B, T, d) -> (B, T, d)
        weights = None
        for i, layer in enumerate(self.layers):
            x, weights = layer(x, memory, padding, need_weights and i == len(self.layers) - 1)
        return self.norm(x), weights


class Transformer(nn.Module):
    """The container, named as PyTorch's ``nn.Transformer``: ``encoder`` and ``decoder``."""

    def __init__(self, d_model: int, n_heads: int, num_encoder_layers: int, num_decoder_layers: int,
                 dim_feedforward: int, dropout: float, norm_first: bool):
        super().__init__()
        sizes = (d_model, n_heads, dim_feedforward, dropout, norm_first)
        self.encoder = Encoder([EncoderLayer(*sizes) for _ in range(num_encoder_layers)], d_model)
        self.decoder = Decoder([DecoderLayer(*sizes) for _ in range(num_decoder_layers)], d_model)


class TransformerSeq2Seq(TranslationModel):
    """Encoder-decoder transformer (module docstring) with the translation model interface of
    ``tinylm.models.seq2seq``. Sources and targets may be up to ``max_len`` long."""

    def __init__(self, source_vocab_size: int, target_vocab_size: int, d_model: int = 128, n_heads: int = 4,
                 num_encoder_layers: int = 3, num_decoder_layers: int = 3, dim_feedforward: int = 512,
                 dropout: float = 0.1, max_len: int = MAX_LEN, norm_first: bool = True):
        super().__init__()
        if num_decoder_layers < 1:
            raise ValueError(f"TransformerSeq2Seq: num_decoder_layers must be at least 1, got {num_decoder_layers}")
        self.config = dict(source_vocab_size=source_vocab_size, target_vocab_size=target_vocab_size,
                           d_model=d_model, n_heads=n_heads, num_encoder_layers=num_encoder_layers,
                           num_decoder_layers=num_decoder_layers, dim_feedforward=dim_feedforward,
                           dropout=dropout, max_len=max_len, norm_first=norm_first)
        self.d_model, self.max_len = d_model, max_len
        self.max_target_len = max_len  # the positions the decoder has: translations stop there (tasks.translate)
        self.source_embedding = nn.Embedding(source_vocab_size, d_model)
        self.target_embedding = nn.Embedding(target_vocab_size, d_model)
        for embedding in (self.source_embedding, self.target_embedding):
            # N(0, 1/d_model) rather than N(0, 1), as fairseq: ·√d_model then makes each a unit-sized vector, the
            # size of the positional code, instead of one √d_model times larger that drowns the positions out.
            embedding.weight = nn.Parameter(init.normal(embedding.weight.shape, d_model ** -0.5))
        self.position = nn.SinusoidalPositionalEncoding(d_model, max_len=max_len)
        self.dropout = nn.Dropout(dropout)
        self.transformer = Transformer(d_model, n_heads, num_encoder_layers, num_decoder_layers, dim_feedforward,
                                       dropout, norm_first)
        self.fc = nn.Linear(d_model, target_vocab_size)

    @staticmethod
    def parameter_shapes(source_vocab_size: int, target_vocab_size: int, d_model: int = 128, n_heads: int = 4,
                         num_encoder_layers: int = 3, num_decoder_layers: int = 3, dim_feedforward: int = 512,
                         dropout: float = 0.1, max_len: int = MAX_LEN,
                         norm_first: bool = True) -> dict[str, tuple[int, ...]]:
        """The name and shape of every parameter this config makes, without making them."""
        d, f = d_model, dim_feedforward

        def attention(name):
            return {f"{name}.in_proj_weight": (3 * d, d), f"{name}.in_proj_bias": (3 * d,),
                    f"{name}.out_proj.weight": (d, d), f"{name}.out_proj.bias": (d,)}

        def norms(*names):
            return {f"{n}.{p}": (d,) for n in names for p in ("weight", "bias")}

        feed_forward = {"linear1.weight": (f, d), "linear1.bias": (f,), "linear2.weight": (d, f), "linear2.bias": (d,)}
        encoder_layer = {**attention("self_attn"), **feed_forward, **norms("norm1", "norm2")}
        decoder_layer = {**attention("self_attn"), **attention("multihead_attn"), **feed_forward,
                         **norms("norm1", "norm2", "norm3")}
        shapes = {"source_embedding.weight": (source_vocab_size, d), "target_embedding.weight": (target_vocab_size, d)}
        for i in range(num_encoder_layers):
            shapes.update({f"transformer.encoder.layers.{i}.{n}": s for n, s in encoder_layer.items()})
        shapes.update(norms("transformer.encoder.norm"))
        for i in range(num_decoder_layers):
            shapes.update({f"transformer.decoder.layers.{i}.{n}": s for n, s in decoder_layer.items()})
        shapes.update(norms("transformer.decoder.norm"))
        return {**shapes, "fc.weight": (target_vocab_size, d), "fc.bias": (target_vocab_size,)}

    def _embed(self, embedding, ids):
        """ids (B, L) -> embedding · √d_model + positions, dropped out: (B, L, d_model)."""
        return self.dropout(self.position(embedding(ids) * math.sqrt(self.d_model)))

    def encode(self, source):
        """A checked ``Source`` -> (memory (B, S, d_model), padding bool (B, S))."""
        padding = key_padding_mask(source.lengths, source.ids.shape[1], self._device())  # (B, S)
        return self.transformer.encoder(self._embed(self.source_embedding, source.ids), padding), padding

    def decode(self, ids, memory, padding, need_weights: bool = False):
        """Target ids (B, T) over an encoded source -> (logits (B, T, V), the last decoder
        layer's cross-attention weights (B, T, S) averaged over heads, or None)."""
        x, weights = self.transformer.decoder(self._embed(self.target_embedding, ids), memory, padding, need_weights)
        return self.fc(x), weights  # (B, T, V)

    def forward(self, ids, state=None):
        """ids (B, T) target inputs, state the ``Source`` -> (logits (B, T, V), None)."""
        memory, padding = self.encode(self._checked("forward", ids, state))
        logits, _ = self.decode(ids, memory, padding)
        return logits, None

    def cross_attention(self, ids, state) -> np.ndarray:
        """ids (B, T), state the ``Source`` -> the last decoder layer's cross-attention
        weights averaged over heads, (B, T, S) NumPy, computed in eval mode (the mode is
        restored after) with no graph."""
        source = self._checked("cross_attention", ids, state)
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                memory, padding = self.encode(source)
                _, weights = self.decode(ids, memory, padding, need_weights=True)
        finally:
            self.train(was_training)
        return weights.numpy()

    def stepper(self) -> "TransformerSeq2SeqStepper":
        return TransformerSeq2SeqStepper(self)


class TransformerSeq2SeqState(NamedTuple):
    """The stepper's state, raw arrays: ``context`` the target ids so far (B, T), the
    encoded source ``memory`` (B, S, d_model) and its ``padding`` (B, S)."""

    context: object
    memory: object
    padding: object


class TransformerSeq2SeqStepper:
    """Token-by-token decoding for ``TransformerSeq2Seq``, the simple way: ``start`` encodes
    the source once; every call reruns the decoder over the whole target prefix and keeps
    the logits of its last position. A token thus costs a decoder pass over the prefix;
    a key/value cache (each decoder layer's self-attention keys and values kept, the
    cross-attention's computed once from the memory) is later work. The prefix may grow
    to ``max_len`` positions.

        stepper = model.stepper()
        logits, st = stepper.start(np.full((B, 1), BOS), source)   # logits (B, V)
        logits, st = stepper.step(next_ids, st)                    # next_ids (B,)
        st = stepper.select(st, rows)                              # beam search: keep/repeat rows
    """

    def __init__(self, model: TransformerSeq2Seq):
        self.model = model

    def start(self, prompt_ids, state):
        """prompt_ids (B, T >= 1), state the ``Source`` -> (logits (B, V) after the prompt's
        last token, ``TransformerSeq2SeqState``)."""
        model = self.model
        xp = backends.get_array_module(model.fc.weight.data)
        context = xp.asarray(prompt_ids)
        source = model._checked("stepper.start", context, state)
        with no_grad():
            memory, padding = model.encode(source)
        return self._last_logits(TransformerSeq2SeqState(context, memory.data, padding))

    def step(self, ids, state: TransformerSeq2SeqState):
        """ids (B,) the tokens just chosen -> (logits (B, V) after them, the new state)."""
        xp = backends.get_array_module(state.memory)
        ids = xp.asarray(ids)
        if ids.shape != (state.context.shape[0],):
            raise ValueError(f"TransformerSeq2SeqStepper.step: ids {tuple(ids.shape)} must be (B,) = "
                             f"({state.context.shape[0]},)")
        if state.context.shape[1] >= self.model.max_len:
            raise ValueError(f"TransformerSeq2SeqStepper.step: the target prefix would be longer than "
                             f"max_len={self.model.max_len}")
        context = xp.concatenate([state.context, ids[:, None].astype(state.context.dtype)], axis=1)  # (B, T + 1)
        return self._last_logits(state._replace(context=context))

    def select(self, state: TransformerSeq2SeqState, rows) -> TransformerSeq2SeqState:
        """The state of batch rows ``rows`` (B',) ints, repeats allowed (beam search)."""
        rows = checked_rows("TransformerSeq2SeqStepper.select", rows, state.context.shape[0], state.memory)
        return TransformerSeq2SeqState(state.context[rows], state.memory[rows], state.padding[rows])

    def _last_logits(self, state: TransformerSeq2SeqState):
        with no_grad():
            logits, _ = self.model.decode(state.context, Tensor(state.memory), state.padding)  # (B, T, V)
        return logits.data[:, -1], state
