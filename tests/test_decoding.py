"""Greedy decoding, beam search and the alignment plot (``tinylm.decoding``), on a fake
translation model whose next-token logits are a fixed random function of the source row and
the whole prefix, so every search can be checked against an exhaustive one."""

import itertools

import numpy as np
import pytest
from cuda_support import gpu_unavailable_reason
from hypothesis import given
from hypothesis import strategies as st

import tinylm
from tinylm.decoding import beam_search, greedy_decode, log_softmax, plot_alignment, sequence_score

BOS, EOS = 1, 2


class PrefixTableModel:
    """A fake translation model. The source batch (``state``) is an array of source row ids;
    the logits after a prefix are normal draws seeded by (seed, source row, *prefix), so the
    model is a fixed random tree that depends on the whole prefix. ``eos_bias`` is added to
    EOS's logit to make translations shorter; ``ties`` rounds the logits to integers, so
    that equal logits are common."""

    def __init__(self, vocab: int, seed: int = 0, eos_bias: float = 0.0, scale: float = 1.5, ties: bool = False):
        self.vocab, self.seed, self.eos_bias, self.scale, self.ties = vocab, seed, eos_bias, scale, ties
        self.training = True
        self.modes_seen = []  # (training, grad enabled) at every stepper call

    def eval(self):
        return self.train(False)

    def train(self, mode: bool = True):
        self.training = mode
        return self

    def stepper(self):
        return PrefixTableStepper(self)

    def logits(self, source: int, prefix: tuple) -> np.ndarray:
        """Logits (V,), float32 as a real model's, after ``prefix`` (no BOS) of source row ``source``."""
        draws = np.random.default_rng([self.seed, source, len(prefix), *prefix]).normal(0.0, self.scale, self.vocab)
        draws[EOS] += self.eos_bias
        return (np.round(draws) if self.ties else draws).astype(np.float32)

    def log_probs(self, source: int, prefix: tuple) -> np.ndarray:
        """The same as float64 log-probabilities, computed independently of ``tinylm.decoding``."""
        logits = self.logits(source, prefix).astype(np.float64)
        return logits - np.log(np.sum(np.exp(logits - logits.max()))) - logits.max()


class PrefixTableStepper:
    """The stepper of ``PrefixTableModel``: its state is a list of (source row, prefix).
    It refuses anything a decoder must not do: a prompt that is not all BOS, ids for another
    number of rows, feeding EOS on (a finished row must be dropped with ``select``)."""

    def __init__(self, model: PrefixTableModel):
        self.model = model

    def _answer(self, st):
        self.model.modes_seen.append((self.model.training, tinylm.autograd.is_grad_enabled()))
        return np.stack([self.model.logits(s, p) for s, p in st]) if st else np.zeros((0, self.model.vocab)), st

    def start(self, prompt_ids, state):
        assert prompt_ids.shape == (len(state), 1) and (prompt_ids == BOS).all(), prompt_ids
        return self._answer([(int(s), ()) for s in state])

    def step(self, ids, st):
        assert ids.shape == (len(st),), (ids.shape, len(st))
        assert not (ids == EOS).any(), "a finished hypothesis was fed on"
        return self._answer([(s, p + (int(i),)) for (s, p), i in zip(st, ids)])

    def select(self, st, rows):
        assert rows.ndim == 1 and ((0 <= rows) & (rows < len(st))).all(), (rows, len(st))
        return [st[r] for r in rows]


def score(model, source: int, tokens: list[int], max_len: int, length_penalty: float) -> float:
    """The length-normalised score of a result: summed log-probabilities of its tokens and its
    EOS (none if it was cut off at max_len) over its length ** length_penalty."""
    ended = len(tokens) < max_len
    chosen = tokens + [EOS] if ended else tokens
    total = sum(model.log_probs(source, tuple(chosen[:i]))[t] for i, t in enumerate(chosen))
    return total / len(chosen) ** length_penalty


def brute_force_best(model, source: int, max_len: int, length_penalty: float) -> tuple[list[int], float]:
    """The best-scoring translation over every sequence: ended by EOS within max_len choices,
    or max_len tokens without EOS."""
    words = [t for t in range(model.vocab) if t != EOS]
    everything = [list(s) for n in range(max_len + 1) for s in itertools.product(words, repeat=n)]
    scored = [(score(model, source, s, max_len, length_penalty), s) for s in everything]
    best_score, best = max(scored, key=lambda pair: pair[0])
    return best, best_score


def decode(search, model, sources, max_len, **kwargs):
    state = np.array(sources)
    if search == "greedy":
        return greedy_decode(model, state, len(sources), max_len, bos=BOS, eos=EOS)
    return beam_search(model, state, len(sources), kwargs.pop("beam_size"), max_len, bos=BOS, eos=EOS, **kwargs)


models = st.builds(PrefixTableModel, vocab=st.integers(3, 6), seed=st.integers(0, 10_000),
                   eos_bias=st.sampled_from([-1.0, 0.0, 1.0]))


def test_log_softmax_is_float64_and_normalised():
    logits = np.array([[1000.0, 0.0, -1000.0], [0.5, 0.5, 0.5]], dtype=np.float32)
    log_probs = log_softmax(logits)
    assert log_probs.dtype == np.float64
    np.testing.assert_allclose(np.exp(log_probs).sum(axis=1), 1.0)
    np.testing.assert_allclose(log_probs[1], np.log(1 / 3))
    assert log_probs[0, 0] == 0.0 and log_probs[0, 1] == -1000.0


@given(model=models, batch=st.integers(1, 4), max_len=st.integers(1, 7))
def test_greedy_takes_the_most_likely_token_until_eos(model, batch, max_len):
    results = decode("greedy", model, list(range(batch)), max_len)
    assert len(results) == batch
    for source, tokens in enumerate(results):
        assert len(tokens) <= max_len and EOS not in tokens
        for i, token in enumerate(tokens):
            assert token == np.argmax(model.logits(source, tuple(tokens[:i])))
        if len(tokens) < max_len:  # it stopped because EOS was the most likely token
            assert np.argmax(model.logits(source, tuple(tokens))) == EOS


def test_greedy_stops_at_eos_and_at_max_len():
    long = PrefixTableModel(vocab=5, seed=3, eos_bias=-50.0)  # EOS never wins
    assert [len(t) for t in decode("greedy", long, [0, 1, 2], max_len=6)] == [6, 6, 6]
    assert len(long.modes_seen) == 6  # start and 5 steps: the 6th token's choice needs no step after it
    short = PrefixTableModel(vocab=5, seed=3, eos_bias=50.0)  # EOS always wins
    assert decode("greedy", short, [0, 1, 2], max_len=6) == [[], [], []]
    mixed = PrefixTableModel(vocab=5, seed=3)
    lengths = {len(t) for t in decode("greedy", mixed, list(range(20)), max_len=6)}
    assert len(lengths) > 1 and min(lengths) < 6  # some rows stopped early, at different steps


# Many tokens and rounded logits: ties between the best tokens, which both searches must
# break the same way (to the lowest id); NumPy sorts more than 16 numbers with an unstable sort.
tied_models = st.builds(PrefixTableModel, vocab=st.integers(17, 40), seed=st.integers(0, 10_000),
                        eos_bias=st.sampled_from([0.0, 1.0]), scale=st.just(0.7), ties=st.just(True))


@given(model=models | tied_models, batch=st.integers(1, 4), max_len=st.integers(1, 7),
       length_penalty=st.sampled_from([0.0, 1.0]))
def test_a_beam_of_one_is_greedy(model, batch, max_len, length_penalty):
    sources = list(range(batch))
    greedy = decode("greedy", model, sources, max_len)
    assert decode("beam", model, sources, max_len, beam_size=1, length_penalty=length_penalty) == greedy


@pytest.mark.parametrize("length_penalty", [0.0, 0.6, 1.0, 2.0])
def test_a_beam_as_wide_as_the_tree_finds_the_best_scoring_sequence(length_penalty):
    model, max_len, sources = PrefixTableModel(vocab=4, seed=1), 4, list(range(6))
    wide = decode("beam", model, sources, max_len, beam_size=model.vocab**max_len, length_penalty=length_penalty)
    greedy = decode("greedy", model, sources, max_len)
    for source in sources:
        best, best_score = brute_force_best(model, source, max_len, length_penalty)
        assert wide[source] == best
        assert score(model, source, wide[source], max_len, length_penalty) == pytest.approx(best_score)
    assert wide != greedy  # the search matters on this model: else the test would not show much


@given(model=models, max_len=st.integers(1, 4), length_penalty=st.sampled_from([0.0, 0.5, 1.0, 1.5]))
def test_the_whole_tree_beam_matches_brute_force(model, max_len, length_penalty):
    sources = [0, 1]
    wide = decode("beam", model, sources, max_len, beam_size=model.vocab**max_len, length_penalty=length_penalty)
    for source in sources:
        best, best_score = brute_force_best(model, source, max_len, length_penalty)
        assert score(model, source, wide[source], max_len, length_penalty) == pytest.approx(best_score, abs=1e-9)


@given(model=models, batch=st.integers(1, 4), beam_size=st.integers(1, 5), max_len=st.integers(1, 6),
       length_penalty=st.sampled_from([0.0, 1.0]))
def test_rows_decode_the_same_alone_and_together(model, batch, beam_size, max_len, length_penalty):
    sources = list(range(10, 10 + batch))
    together = decode("beam", model, sources, max_len, beam_size=beam_size, length_penalty=length_penalty)
    alone = [decode("beam", model, [s], max_len, beam_size=beam_size, length_penalty=length_penalty)[0]
             for s in sources]
    assert together == alone
    assert decode("greedy", model, sources, max_len) == [decode("greedy", model, [s], max_len)[0] for s in sources]


@given(model=models, beam_size=st.integers(1, 6), max_len=st.integers(1, 4),
       length_penalty=st.sampled_from([0.0, 0.5, 1.0]))
def test_no_beam_beats_the_exhaustive_search_and_results_are_well_formed(model, beam_size, max_len, length_penalty):
    """A wider beam is not guaranteed a better result (see the next test), but every beam
    returns a well-formed sequence scoring at most the best one, and a beam at least as wide
    as the tree returns the best."""
    result = decode("beam", model, [0], max_len, beam_size=beam_size, length_penalty=length_penalty)[0]
    assert len(result) <= max_len and EOS not in result
    assert all(0 <= t < model.vocab for t in result)
    _, best_score = brute_force_best(model, 0, max_len, length_penalty)
    assert score(model, 0, result, max_len, length_penalty) <= best_score + 1e-9


def test_a_wider_beam_can_return_a_worse_translation():
    """Beam search is not monotonic in the beam's width: the extra hypothesis a beam of two
    keeps pushes out, a step later, the one a beam of one follows to a better end. The
    example was found by searching the fake models for one."""
    model, max_len = PrefixTableModel(vocab=4, seed=194), 4
    narrow, wide = (decode("beam", model, [0], max_len, beam_size=k, length_penalty=0.0)[0] for k in (1, 2))
    assert score(model, 0, wide, max_len, 0.0) < score(model, 0, narrow, max_len, 0.0)


class ScriptedModel(PrefixTableModel):
    """A fake model whose log-probabilities after a prefix are written out in ``script``
    (prefix -> {token: log-probability}; the rest of the mass spread over the other tokens);
    a prefix not in the script continues with token 3 almost surely."""

    def __init__(self, script: dict, vocab: int = 5):
        super().__init__(vocab)
        self.script = script

    def logits(self, source, prefix):
        chosen = self.script.get(prefix, {3: -1e-6})
        rest = np.log1p(-np.exp(list(chosen.values())).sum()) - np.log(self.vocab - len(chosen))
        logits = np.full(self.vocab, rest)
        for token, log_prob in chosen.items():
            logits[token] = log_prob
        return logits.astype(np.float32)


# After the empty prefix: EOS (score -0.45 / 1, the best so far) or token 3 (-1.1); after
# (3,): EOS (-1.4 / 2 = -0.7) or 3 (-2.6); past (3, 3) token 3 is almost sure, so (3, ..., 3)
# cut off at max_len 10 scores about -2.6 / 10 = -0.26, the best of all.
LONG_WAY_ROUND = {(): {EOS: -0.45, 3: -1.1}, (3,): {EOS: -0.3, 3: -1.5}}


def test_the_bound_looks_as_far_as_max_len():
    """After the first step, the live (3,) with summed log-probability -1.1 could still end,
    at length 10, at -0.11: better than the finished () at -0.45. The search must not stop
    on the bound at the next length (-1.1 / 2 = -0.55), or even a beam as wide as the tree
    would miss the best translation."""
    model = ScriptedModel(LONG_WAY_ROUND)
    assert decode("beam", model, [0], 10, beam_size=model.vocab**3, length_penalty=1.0) == [[3] * 10]
    assert score(model, 0, [3] * 10, 10, 1.0) == pytest.approx(-0.26, abs=1e-3)


def test_finished_hypotheses_keep_their_place_in_the_beam():
    """A beam of two that holds two finished hypotheses, better than every live candidate, is
    done, although (3, 3, ...) would have ended better: the beam is a beam."""
    model = ScriptedModel(LONG_WAY_ROUND)
    assert decode("beam", model, [0], 10, beam_size=2, length_penalty=1.0) == [[]]
    assert len(model.modes_seen) == 2  # start and one step


def test_decoding_runs_in_eval_mode_without_a_graph_and_restores_the_mode():
    model = PrefixTableModel(vocab=5)
    for search in ("greedy", "beam"):
        model.train()
        model.modes_seen.clear()
        decode(search, model, [0, 1], 4, beam_size=2)
        assert model.modes_seen and set(model.modes_seen) == {(False, False)}
        assert model.training and tinylm.autograd.is_grad_enabled()
    model.eval()
    decode("greedy", model, [0], 3)
    assert not model.training


class OtherLogits(PrefixTableModel):
    """The same model, its stepper answering with a tinylm Tensor or a CuPy array."""

    def __init__(self, kind: str, **kwargs):
        super().__init__(**kwargs)
        self.kind = kind

    def stepper(self):
        outer = self

        class Stepper(PrefixTableStepper):
            def _answer(self, st):
                logits, st = super()._answer(st)
                if outer.kind == "gpu":
                    import cupy

                    return cupy.asarray(logits), st
                return tinylm.tensor(logits), st

        return Stepper(self)


@pytest.mark.parametrize("kind", ["tensor", "gpu"])
def test_logits_as_a_tensor_or_on_the_gpu_decode_the_same(kind):
    if kind == "gpu" and gpu_unavailable_reason() is not None:
        pytest.skip(gpu_unavailable_reason())
    plain, other = PrefixTableModel(vocab=6, seed=5), OtherLogits(kind, vocab=6, seed=5)
    for search, kwargs in (("greedy", {}), ("beam", {"beam_size": 3})):
        assert decode(search, other, [0, 1, 2], 5, **kwargs) == decode(search, plain, [0, 1, 2], 5, **kwargs)


def test_bad_arguments_are_refused_by_name():
    model = PrefixTableModel(vocab=5)
    state = np.array([0])
    with pytest.raises(ValueError, match="beam_search: beam_size must be a positive integer, got 0"):
        beam_search(model, state, 1, 0, 5)
    with pytest.raises(ValueError, match="greedy_decode: max_len must be a positive integer, got 0"):
        greedy_decode(model, state, 1, 0)
    with pytest.raises(ValueError, match="beam_search: length_penalty must be a finite number"):
        beam_search(model, state, 1, 2, 5, length_penalty=float("nan"))
    with pytest.raises(ValueError, match="greedy_decode: eos=7 is not in the vocabulary of 5 tokens"):
        greedy_decode(model, state, 1, 3, bos=BOS, eos=7)
    # A batch_size that is not the source batch's: the stepper answers for another number of rows.
    with pytest.raises(ValueError, match=r"beam_search: the stepper returned logits of shape \(1, 5\); "
                                         r"expected \(2, vocabulary size\)"):
        beam_search(WrongRows(model), state, 2, 2, 5, bos=BOS, eos=EOS)


class WrongRows(PrefixTableModel):
    """A model whose stepper ignores the prompt's batch size and answers for its state's rows."""

    def __init__(self, model):
        super().__init__(model.vocab)

    def stepper(self):
        class Stepper(PrefixTableStepper):
            def start(self, prompt_ids, state):
                return self._answer([(int(s), ()) for s in state])

        return Stepper(self)


def test_sequence_score_divides_by_length_to_the_penalty():
    assert sequence_score(-6.0, 4, 0.0) == -6.0
    assert sequence_score(-6.0, 4, 1.0) == -1.5
    assert sequence_score(-6.0, 4, 0.5) == -3.0


def test_plot_alignment_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    weights = np.random.default_rng(0).dirichlet(np.ones(4), size=3)  # (T=3, S=4), rows sum to 1
    path = tmp_path / "alignment.png"
    plot_alignment(path, weights, ["le", " chat", "\n", "<eos>"], ["the", " cat", "<eos>"], "fr -> en")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match=r"plot_alignment: weights of shape \(3, 4\) for 4 target and 3 source "
                                         r"tokens; expected \(4, 3\)"):
        plot_alignment(path, weights, ["a", "b", "c"], ["w", "x", "y", "z"], "swapped")
