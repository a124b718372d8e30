"""What tinylm's translation models share: the ``Source`` they read and the interface they follow.

A translation model is a language model over the target sentence conditioned on the
source sentence, which it takes as its *state*. Where ``LSTMLanguageModel.forward(ids,
state)`` continues a text from the (h, c) of the previous chunk, a translation model's
``forward(ids, source)`` scores the next target token at every position of ``ids`` given
the whole source: p(y_t | y_<t, x). So the trainer, the evaluation and the decoders call
it through the same names as a language model (``tinylm.models.language_model``), with
the ``Source`` where the state goes:

``forward(ids, state) -> (logits, None)``
    ids (B, T) target inputs, BOS first (teacher forcing: the reference translation,
    shifted right); ``state`` the ``Source``, required. logits (B, T, V_target), the
    scores of the next target token at every position. Target position t never sees
    positions after t; no position ever attends to a source padding key, so a row's
    logits do not depend on how much padding its batch has.

``carries_state = False``
    The source is an input, not something carried from batch to batch.

``stepper()``
    Token-by-token decoding (greedy, sampling, beam search)::

        stepper = model.stepper()
        logits, st = stepper.start(prompt_ids, source)  # prompt (B, T>=1), normally all BOS (B, 1)
        logits, st = stepper.step(ids, st)              # ids (B,): the tokens just chosen
        st = stepper.select(st, rows)                   # rows (B',) ints, may repeat: beam search

    ``start`` encodes the source once; logits (B, V) are raw arrays made with no graph,
    equal to ``forward``'s at the same positions in the model's current mode (call
    ``model.eval()`` first).

``cross_attention(ids, source) -> (B, T, S) array``
    The attention of each target position over the source positions, for an alignment
    heatmap: rows sum to 1 over the real keys and are exactly 0 on padding. Computed in
    eval mode, with no graph.

``config`` and ``parameter_shapes(**config)``
    ``MODELS[kind](**config)`` rebuilds the model; the static ``parameter_shapes`` gives
    every parameter's name and shape without building it.

Batches use the ids ``PAD`` = 0, ``BOS`` = 1 and ``EOS`` = 2. A source is right-padded with
PAD and comes with its lengths: key j of row b is padding when j >= lengths[b]. Target
inputs are BOS + ids, target outputs ids + EOS, padded with -100 (cross_entropy's
``ignore_index``), so padded target positions cost nothing and need no mask.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tinylm import backends
from tinylm.autograd import Tensor
from tinylm.models.language_model import LanguageModel
from tinylm.parallel_corpus import BOS, EOS, PAD  # noqa: F401  (the ids of the batches, named here too)


class Source(NamedTuple):
    """A batch of source sentences: ``ids`` (B, S) int64 model ids, right-padded with PAD,
    and ``lengths`` (B,) int64 with 1 <= lengths <= S. Keys at j >= lengths[b] are padding."""

    ids: np.ndarray
    lengths: np.ndarray


def checked_source(name: str, state, batch: int | None = None, device: str = "cpu") -> Source:
    """``state`` checked to be a ``Source`` for ``batch`` rows (any batch if None): returns it
    with ``ids`` on ``device`` and ``lengths`` a NumPy int64 array. ``name`` (the caller,
    e.g. ``"Seq2SeqLSTM.forward"``) starts every error message."""
    if state is None:
        raise ValueError(f"{name}: a translation model needs the source as its state: "
                         f"forward(ids, Source(ids=(B, S), lengths=(B,))), got state=None")
    if not isinstance(state, Source):
        raise TypeError(f"{name}: state must be a tinylm.models.seq2seq.Source(ids, lengths), "
                        f"got a {type(state).__name__}")
    ids, lengths = (x.data if isinstance(x, Tensor) else x for x in state)
    ids = ids if hasattr(ids, "dtype") else np.asarray(ids)
    lengths = backends.to_device(lengths, "cpu") if hasattr(lengths, "dtype") else np.asarray(lengths)
    if ids.ndim != 2 or ids.dtype.kind not in "iu":
        raise ValueError(f"{name}: Source.ids must be a 2-D integer array (B, S), got {ids.dtype} {tuple(ids.shape)}")
    if lengths.ndim != 1 or lengths.dtype.kind not in "iu" or lengths.shape[0] != ids.shape[0]:
        raise ValueError(f"{name}: Source.lengths must be integers of shape (B,) = ({ids.shape[0]},) for ids "
                         f"{tuple(ids.shape)}, got {lengths.dtype} {tuple(lengths.shape)}")
    if lengths.size and (lengths.min() < 1 or lengths.max() > ids.shape[1]):
        raise ValueError(f"{name}: Source.lengths must lie in [1, S={ids.shape[1]}], "
                         f"got values from {lengths.min()} to {lengths.max()}")
    if batch is not None and ids.shape[0] != batch:
        raise ValueError(f"{name}: the source has {ids.shape[0]} rows but the target ids have {batch}")
    return Source(backends.to_device(ids, device), lengths.astype(np.int64))


def key_padding_mask(lengths, length: int, device: str = "cpu"):
    """lengths (B,) -> bool (B, length), True where key j of row b is padding (j >= lengths[b]):
    the ``key_padding_mask`` convention of ``nn.MultiheadAttention`` and PyTorch."""
    lengths = np.asarray(lengths)
    mask = np.arange(length)[None, :] >= lengths[:, None]  # (B, S)
    return backends.to_device(mask, device)


def checked_rows(name: str, rows, batch: int, like):
    """``rows`` for a stepper's ``select``: a 1-D integer array of row numbers in [0, batch),
    repeats allowed, returned in ``like``'s array module."""
    rows = backends.get_array_module(like).asarray(rows)
    rows = rows.astype(np.int64) if rows.size == 0 else rows  # np.asarray([]) is float
    in_range = rows.size == 0 or 0 <= int(rows.min()) <= int(rows.max()) < batch
    if rows.ndim != 1 or rows.dtype.kind not in "iu" or not in_range:
        raise IndexError(f"{name}: rows must be a 1-D integer array of row numbers in [0, {batch}), "
                         f"got {rows.dtype} {tuple(rows.shape)}")
    return rows


class TranslationModel(LanguageModel):
    """Base class of tinylm's translation models: the interface of the module docstring,
    written down once. A subclass defines ``forward``, ``stepper``, ``cross_attention``,
    ``parameter_shapes`` and sets ``config``."""

    carries_state = False

    def forward(self, ids, state=None):
        raise NotImplementedError(f"{type(self).__name__} must define forward(ids, state: Source) -> (logits, None)")

    def cross_attention(self, ids, state):
        raise NotImplementedError(f"{type(self).__name__} must define cross_attention(ids, state: Source) -> (B, T, S)")

    @staticmethod
    def parameter_shapes(**config) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError("a translation model must define parameter_shapes(**config)")

    def _device(self) -> str:
        return next(iter(self.parameters())).device

    def _checked(self, name: str, ids, state) -> Source:
        """``state`` as a checked ``Source`` on the model's device, for target ``ids`` (B, T)."""
        if ids.ndim != 2 or ids.shape[1] == 0:
            raise ValueError(f"{type(self).__name__}.{name}: target ids must be (B, T) with T >= 1, "
                             f"got {tuple(ids.shape)}")
        return checked_source(f"{type(self).__name__}.{name}", state, ids.shape[0], self._device())
