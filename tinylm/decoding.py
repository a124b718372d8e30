"""Decoding a translation: greedy search, beam search, and a picture of the alignment.

A translation model reads a source batch once and then writes the target one token at a
time through its stepper (the same shape of interface as a language model's, with the
encoded source as the state)::

    stepper = model.stepper()
    logits, st = stepper.start(prompt_ids, state)  # prompt_ids (B, 1), all BOS -> logits (B, V)
    logits, st = stepper.step(ids, st)             # ids (B,): the tokens just chosen -> logits (B, V)
    st = stepper.select(st, rows)                  # rows (B',), may repeat: a state of those rows

The search never looks inside ``state`` or ``st``: it keeps, drops and copies rows only
through ``stepper.select``. Row ``i`` of the source batch is decoded from row ``i`` of
``state``, and no row's result depends on the others.

- ``greedy_decode`` takes the most likely token at every step.
- ``beam_search`` keeps the ``beam_size`` best partial translations of every source row,
  scores finished ones with a length penalty and returns the best.
- ``plot_alignment`` draws cross-attention weights (target tokens down the side, source
  tokens along the bottom) as a PNG.

Lengths: every search makes at most ``max_len`` choices per row, and EOS counts as one of
them, so a result holds at most ``max_len`` tokens (``max_len - 1`` when it ended on EOS).
EOS itself is never part of a result.
"""

from __future__ import annotations

import contextlib
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import tinylm
from tinylm import backends
from tinylm.attention import axis_label
from tinylm.parallel_corpus import BOS, EOS  # the translation vocabulary's special ids


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities (N, V), float64, of raw logits (N, V), each row normalised:
    ``x - max(x) - log(sum(exp(x - max(x))))`` (subtracting the max keeps exp from overflowing)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def sequence_score(log_prob_sum: float, length: int, length_penalty: float) -> float:
    """A hypothesis' score: its summed log-probability over ``length ** length_penalty``.

    ``length`` counts every token the model chose, the EOS included. ``length_penalty`` 0
    ranks by plain probability, which favours short translations (every token's
    log-probability is negative, so each one more lowers the sum); 1 ranks by the mean
    log-probability per token; values between soften the bias, values above favour long ones.

    This is plain ``length ** alpha`` (fairseq's), not GNMT's ``((5 + length) / 6) ** alpha``.
    GNMT's is a length shifted by 5 (the division by 6 changes no ranking), so it penalises
    short translations less; the 5 was tuned for word pieces and means nothing for this
    project's tokens. The plain form has a meaning a reader can check by hand (alpha 1: the
    mean log-probability), and the bound ``beam_search`` uses to stop early is one line with it.
    """
    return log_prob_sum / length**length_penalty


@contextlib.contextmanager
def _inference(model):
    """Eval mode (no dropout) and no graph while decoding; the model's mode comes back after."""
    was_training = model.training
    model.eval()
    try:
        with tinylm.no_grad():
            yield
    finally:
        model.train(was_training)


def _check_arguments(name: str, batch_size: int, max_len: int, bos: int, eos: int) -> None:
    for argument, value in (("batch_size", batch_size), ("max_len", max_len)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: {argument} must be a positive integer, got {value!r}")
    for argument, value in (("bos", bos), ("eos", eos)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name}: {argument} must be a token id (an integer >= 0), got {value!r}")


def _log_probs(name: str, logits, rows: int, eos: int) -> np.ndarray:
    """The stepper's logits (rows, V), a NumPy or CuPy array (or a Tensor holding one), as
    float64 log-probabilities on the CPU; a clear error if the stepper answered for another
    number of rows, or with NaN or a row of only -inf."""
    if isinstance(logits, tinylm.Tensor):
        logits = logits.data
    logits = backends.to_device(logits, "cpu")
    if logits.ndim != 2 or logits.shape[0] != rows:
        raise ValueError(f"{name}: the stepper returned logits of shape {tuple(logits.shape)}; "
                         f"expected ({rows}, vocabulary size), one row per decoded row")
    if eos >= logits.shape[1]:
        raise ValueError(f"{name}: eos={eos} is not in the vocabulary of {logits.shape[1]} tokens")
    if np.isnan(logits).any() or not np.isfinite(logits.max(axis=1)).all():
        raise ValueError(f"{name}: the stepper returned logits with NaN, or a row with no finite logit")
    return log_softmax(logits)


def greedy_decode(model, state, batch_size: int, max_len: int, bos: int = BOS, eos: int = EOS) -> list[list[int]]:
    """Translate a batch by taking the most likely token at every step.

    ``state`` is the source batch of ``batch_size`` rows, handed to ``stepper.start`` as it
    is. Returns one list of token ids per source row: the tokens chosen up to its first EOS
    (not included), at most ``max_len`` tokens. A row that has produced EOS is dropped from
    the stepper with ``stepper.select``, so the others go on without it. Ties between equal
    logits go to the lowest token id (``np.argmax``), as in ``beam_search`` with a beam of one.
    """
    _check_arguments("greedy_decode", batch_size, max_len, bos, eos)
    results: list[list[int]] = [[] for _ in range(batch_size)]
    with _inference(model):
        stepper = model.stepper()
        logits, st = stepper.start(np.full((batch_size, 1), bos, dtype=np.int64), state)
        live = np.arange(batch_size)  # the source row of each stepper row still decoding
        for step in range(max_len):
            tokens = _log_probs("greedy_decode", logits, len(live), eos).argmax(axis=1)  # (rows,)
            going_on = tokens != eos
            for row, token in zip(live[going_on], tokens[going_on]):
                results[row].append(int(token))
            if step == max_len - 1 or not going_on.any():
                break
            if not going_on.all():  # drop the rows that just finished
                keep = np.flatnonzero(going_on)
                st = stepper.select(st, keep)
                live, tokens = live[keep], tokens[keep]
            logits, st = stepper.step(tokens, st)
    return results


@dataclass
class _Hypothesis:
    """A partial translation: its tokens (no BOS, no EOS) and their summed log-probability."""

    tokens: list[int]
    log_prob: float


@dataclass(eq=False)  # compared by identity: "is this one already in the beam"
class _Finished:
    """A finished translation: its tokens (no EOS) and its length-normalised score."""

    tokens: list[int]
    score: float


def beam_search(model, state, batch_size: int, beam_size: int, max_len: int, length_penalty: float = 1.0,
                bos: int = BOS, eos: int = EOS) -> list[list[int]]:
    """Translate a batch, keeping the ``beam_size`` best hypotheses of each source row.

    All source rows are decoded together: the stepper holds the live hypotheses of every
    row one after another, and after each step ``stepper.select`` copies and reorders its
    rows to follow the hypotheses that were kept. A row's beam holds up to ``beam_size``
    hypotheses, live or finished. One step of one row:

    1. every live hypothesis ``h`` is extended by every token ``w``: summed log-probability
       ``log p(h) + log p(w | h)`` (float64, ``log_softmax`` of the logits). All these
       candidates have the same length, one more token than at the step before, so the
       best ``beam_size`` of them by summed log-probability are the best by score too
       (ties to the earlier hypothesis, then the lower token id);
    2. each of those is scored with ``sequence_score``: one ending in EOS is finished (its
       length counts the EOS); at ``max_len`` choices every one is finished (cut off, no
       EOS); any other stays live, ranked by the score it would have if it ended now;
    3. the new beam is the best ``beam_size`` of those and of the finished hypotheses
       already in the beam (a finished one keeps its place until better ones push it out).

    Every finished hypothesis that made a beam is kept, and a row's translation is the
    best-scoring of them (ties to the one that finished first), without its EOS. A row is
    done when its beam holds no live hypothesis, at ``max_len``, or when no live hypothesis
    can beat the best finished one: a live hypothesis with summed log-probability
    ``s <= 0`` that finishes at length ``l`` scores at most ``s / l ** length_penalty``
    (each token only lowers the sum), and the largest of that over the lengths it can still
    reach (the score is monotonic in ``l``: ``l = len + 1`` or ``l = max_len``) is a bound
    no continuation can pass. With a beam of one the single slot follows the most likely
    token until that is EOS, which fills the slot: exactly ``greedy_decode``.

    Length normalisation is plain ``length ** length_penalty`` (``sequence_score`` says
    why). A wider beam is not guaranteed a better-scoring translation (the hypotheses it
    keeps can push out, later, the one a narrower beam follows to a better end), but a beam
    as wide as the tree of all sequences finds the best-scoring one. Cost: each step sorts
    all ``beam_size * V`` candidates of each row.
    """
    _check_arguments("beam_search", batch_size, max_len, bos, eos)
    if not isinstance(beam_size, (int, np.integer)) or isinstance(beam_size, bool) or beam_size < 1:
        raise ValueError(f"beam_search: beam_size must be a positive integer, got {beam_size!r}")
    if not math.isfinite(length_penalty):
        raise ValueError(f"beam_search: length_penalty must be a finite number, got {length_penalty!r}")
    finished: list[list[_Finished]] = [[] for _ in range(batch_size)]  # every one that made a beam
    in_beam: list[list[_Finished]] = [[] for _ in range(batch_size)]  # the finished ones in the beam now
    with _inference(model):
        stepper = model.stepper()
        logits, st = stepper.start(np.full((batch_size, 1), bos, dtype=np.int64), state)
        # live[r]: source row r's live hypotheses, in the order of their stepper rows.
        live: list[list[_Hypothesis]] = [[_Hypothesis([], 0.0)] for _ in range(batch_size)]
        for step in range(max_len):
            log_probs = _log_probs("beam_search", logits, sum(len(h) for h in live), eos)  # (live rows, V)
            parents, next_tokens = [], []  # stepper row and last token of every live hypothesis kept, all rows
            first = 0  # the stepper row of this source row's first live hypothesis
            for row, hypotheses in enumerate(live):
                if not hypotheses:  # this row is done
                    continue
                beam = _next_beam(hypotheses, log_probs[first:first + len(hypotheses)], in_beam[row], beam_size,
                                  step + 1, max_len, length_penalty, eos)
                kept = [entry for entry in beam if isinstance(entry, tuple)]  # (parent, live hypothesis)
                finished[row] += [f for f in beam if isinstance(f, _Finished) and f not in in_beam[row]]
                in_beam[row] = [f for f in beam if isinstance(f, _Finished)]
                if _cannot_improve(finished[row], [h for _, h in kept], step + 2, max_len, length_penalty):
                    kept = []
                live[row] = [h for _, h in kept]
                parents += [first + parent for parent, _ in kept]
                next_tokens += [h.tokens[-1] for _, h in kept]
                first += len(hypotheses)
            if not parents:
                break
            st = stepper.select(st, np.array(parents, dtype=np.int64))  # copy and reorder to the kept hypotheses
            logits, st = stepper.step(np.array(next_tokens, dtype=np.int64), st)
    return [max(done, key=lambda f: f.score).tokens for done in finished]


def _next_beam(hypotheses: list[_Hypothesis], log_probs: np.ndarray, in_beam: list[_Finished], beam_size: int,
               length: int, max_len: int, length_penalty: float, eos: int) -> list:
    """One step of one source row (steps 1 to 3 of ``beam_search``): the new beam, best
    first, of ``_Finished`` hypotheses and (parent index in ``hypotheses``, live
    ``_Hypothesis``) pairs.

    ``log_probs`` (n, V) are the next-token log-probabilities of the row's n live
    hypotheses, ``in_beam`` the finished ones already in its beam, ``length`` the number of
    tokens every candidate has (EOS included).
    """
    vocabulary = log_probs.shape[1]
    sums = np.array([h.log_prob for h in hypotheses])
    candidates = (sums[:, None] + log_probs).ravel()  # (n * V,): hypothesis-major, index = parent * V + token
    pool = [(f.score, f) for f in in_beam]  # first, so a tie keeps a finished hypothesis in its place
    for index in np.argsort(-candidates, kind="stable")[:beam_size]:
        log_prob = float(candidates[index])
        if log_prob == -np.inf:  # a token the model rules out, and every one after it
            break
        parent, token = divmod(int(index), vocabulary)
        tokens, score = hypotheses[parent].tokens, sequence_score(log_prob, length, length_penalty)
        if token == eos:
            pool.append((score, _Finished(tokens, score)))
        elif length == max_len:  # cut off: it finishes without an EOS
            pool.append((score, _Finished(tokens + [token], score)))
        else:
            pool.append((score, (parent, _Hypothesis(tokens + [token], log_prob))))
    pool.sort(key=lambda pair: -pair[0])  # stable
    return [entry for _, entry in pool[:beam_size]]


def _cannot_improve(finished: list[_Finished], live: list[_Hypothesis], next_length: int, max_len: int,
                    length_penalty: float) -> bool:
    """Whether a source row's search is done: no live hypothesis, or none that can beat the
    best finished one (the bound of ``beam_search``); ``next_length`` is the shortest
    length at which a live hypothesis can still finish."""
    if not live:
        return True
    if not finished:
        return False
    best = max(f.score for f in finished)
    return all(max(sequence_score(h.log_prob, next_length, length_penalty),
                   sequence_score(h.log_prob, max_len, length_penalty)) <= best for h in live)


def plot_alignment(path, weights, source_tokens: list[str], target_tokens: list[str], title: str) -> None:
    """Draw a (T, S) alignment as a PNG at ``path``: row ``t`` holds how much target token
    ``t`` attended to each of the ``S`` source tokens (cross-attention weights, for example
    ``model.cross_attention(ids, state)[i]``). Target tokens run down the side, source
    tokens along the bottom, the colour scale from 0 to 1. Drawn with matplotlib's Agg
    backend (no display needed)."""
    weights = np.asarray(backends.to_device(weights, "cpu"), dtype=np.float64)
    shape = (len(target_tokens), len(source_tokens))
    if weights.ndim != 2 or weights.shape != shape:
        raise ValueError(f"plot_alignment: weights of shape {weights.shape} for {shape[0]} target and "
                         f"{shape[1]} source tokens; expected {shape} (target, source)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width, height = 2.5 + 0.28 * shape[1], 2.5 + 0.28 * shape[0]
    figure, axes = plt.subplots(figsize=(max(width + 1.2, 6.0), height + 0.6))
    image = axes.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(shape[1]), [axis_label(t) for t in source_tokens], rotation=90)
    axes.set_yticks(range(shape[0]), [axis_label(t) for t in target_tokens])
    axes.set_xlabel("source token (attended to)")
    axes.set_ylabel("target token (attending)")
    axes.set_title(textwrap.fill(title, 60), fontsize=9)  # a long sentence wraps instead of leaving the picture
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="attention weight")
    figure.tight_layout()
    figure.savefig(Path(path), dpi=100)
    plt.close(figure)
