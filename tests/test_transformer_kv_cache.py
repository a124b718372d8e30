"""The transformer's key/value-cache stepper against the model's own forward.

``TransformerStepper`` keeps every block's keys and values and computes one new position a
step; whatever it returns must be what ``forward`` gives over the whole context: the
logits of start + k steps at those positions, in float64 to 1e-10 and float32 to ~1e-5,
with batches, beam-search ``select`` and the fallback once positions run out at max_len.
``RerunStepper`` below is the stepper the model had before the cache (every step reruns
the model over the last max_len tokens), kept here as the second oracle.
"""

import numpy as np
import pytest

import tinylm
from tinylm import backends
from tinylm.generation import sample_tokens
from tinylm.models import TransformerLanguageModel
from tinylm.models.transformer import TransformerStepper, TransformerStepperState

VOCAB = 13
CONFIGS = [  # (n_layers, n_heads, gelu_approximate), d_model 8
    (1, 1, "tanh"),
    (2, 2, "none"),
    (3, 4, "tanh"),
    (2, 4, "none"),
]
BACKENDS = [name for name in ("numpy", "cython") if backends.is_usable(name)]
TOLERANCE = {np.float64: dict(rtol=1e-10, atol=1e-10), np.float32: dict(rtol=1e-5, atol=1e-5)}


def build(n_layers=2, n_heads=2, gelu="tanh", max_len=32, dtype=np.float64, seed=0, dropout=0.1):
    """An eval-mode model whose every parameter is drawn afresh (LayerNorm scales and all
    biases included, which start at 1 and 0), so no term of the maths is left out unseen."""
    tinylm.manual_seed(seed)
    model = TransformerLanguageModel(VOCAB, d_model=8, n_heads=n_heads, n_layers=n_layers, max_len=max_len,
                                     dropout=dropout, gelu_approximate=gelu)
    model = model.double() if dtype == np.float64 else model
    rng = np.random.default_rng(seed)
    for _, parameter in model.named_parameters():
        parameter.data[...] = rng.normal(0.0, 0.5, parameter.shape)
    return model.eval()


def full_logits(model, ids):
    """ids (B, T) -> the forward's logits (B, T, V), NumPy."""
    with tinylm.no_grad():
        return model(ids)[0].numpy()


class RerunStepper:
    """The stepper before the cache: each call reruns the model over the last ``max_len``
    tokens of the context (its state, (B, T) ids) and keeps the last position's logits."""

    def __init__(self, model):
        self.model = model

    def start(self, prompt_ids, state=None):
        return self._last_logits(np.asarray(prompt_ids)[:, -self.model.max_len:])

    def step(self, ids, context):
        context = np.concatenate([context, np.asarray(ids)[:, None]], axis=1)  # (B, T + 1)
        return self._last_logits(context[:, -self.model.max_len:])

    def _last_logits(self, context):
        return full_logits(self.model, context)[:, -1], context


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_layers, n_heads, gelu", CONFIGS)
@pytest.mark.parametrize("prompt_length", [1, 4])
def test_start_and_steps_give_the_logits_of_the_full_forward(backend, dtype, n_layers, n_heads, gelu, prompt_length):
    steps = 7
    model = build(n_layers, n_heads, gelu, dtype=dtype, seed=n_layers * 10 + n_heads)
    tokens = np.random.default_rng(1).integers(0, VOCAB, size=(3, prompt_length + steps))  # a batch of 3
    with tinylm.use_backend(backend):
        expected = full_logits(model, tokens)  # (3, T, V)
        stepper = model.stepper()
        logits, state = stepper.start(tokens[:, :prompt_length])
        assert logits.shape == (3, VOCAB) and logits.dtype == dtype
        np.testing.assert_allclose(logits, expected[:, prompt_length - 1], **TOLERANCE[dtype])
        for t in range(prompt_length, prompt_length + steps):
            logits, state = stepper.step(tokens[:, t], state)
            np.testing.assert_allclose(logits, expected[:, t], **TOLERANCE[dtype])
    # the caches grew by one position a step: (n_layers, B, nh, T, hs)
    assert isinstance(state, TransformerStepperState)
    assert state.keys.shape == state.values.shape == (n_layers, 3, n_heads, prompt_length + steps, 8 // n_heads)
    assert state.shape == (3, prompt_length + steps)
    np.testing.assert_array_equal(state.context, tokens)


def test_each_batch_row_is_its_own_sequence():
    """Row 1 stepped alone gives the logits it gets in a batch: nothing leaks across rows."""
    model = build(dtype=np.float64)
    tokens = np.random.default_rng(2).integers(0, VOCAB, size=(4, 9))
    stepper = model.stepper()
    together, state = stepper.start(tokens[:, :3])
    alone, alone_state = stepper.start(tokens[1:2, :3])
    for t in range(3, 9):
        np.testing.assert_allclose(alone[0], together[1], rtol=1e-12, atol=1e-12)
        together, state = stepper.step(tokens[:, t], state)
        alone, alone_state = stepper.step(tokens[1:2, t], alone_state)


def test_select_takes_rows_of_every_cache_repeats_included():
    """Beam search: select rows (2, 0, 2), then step the two copies of row 2 with different
    tokens; each row's logits are those of the forward over its own sequence."""
    model = build(n_layers=3, n_heads=2, dtype=np.float64, seed=3)
    tokens = np.random.default_rng(3).integers(0, VOCAB, size=(3, 5))
    stepper = model.stepper()
    _, state = stepper.start(tokens)
    chosen = stepper.select(state, np.array([2, 0, 2]))
    assert chosen.keys.shape == (3, 3, 2, 5, 4)
    np.testing.assert_array_equal(chosen.keys[:, 1], state.keys[:, 0])
    np.testing.assert_array_equal(chosen.values[:, 2], state.values[:, 2])
    next_ids = np.array([7, 1, 4])
    logits, after = stepper.step(next_ids, chosen)
    sequences = np.concatenate([tokens[[2, 0, 2]], next_ids[:, None]], axis=1)  # (3, 6)
    np.testing.assert_allclose(logits, full_logits(model, sequences)[:, -1], rtol=1e-10, atol=1e-10)
    assert not np.allclose(logits[0], logits[2])  # the two copies of row 2 went different ways

    # Stepping did not change the state it was given: the same state stepped again agrees.
    other_ids = next_ids[::-1].copy()
    again, _ = stepper.step(other_ids, chosen)
    others = np.concatenate([tokens[[2, 0, 2]], other_ids[:, None]], axis=1)  # (3, 6)
    np.testing.assert_allclose(again, full_logits(model, others)[:, -1], rtol=1e-10, atol=1e-10)
    assert after.shape == (3, 6) and chosen.shape == (3, 5)


def test_select_refuses_rows_out_of_range():
    model = build()
    stepper = model.stepper()
    _, state = stepper.start(np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(IndexError, match=r"TransformerStepper.select: rows must be .* in \[0, 2\)"):
        stepper.select(state, np.array([0, 2]))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_past_max_len_it_reruns_the_last_max_len_tokens_as_the_old_stepper(dtype):
    """max_len 5: a prompt of 3, then 9 steps. From the step that would need position 5 on,
    every step rereads the last 5 tokens; the logits are the old rerun stepper's and the
    forward's over that window, and the caches hold 5 positions."""
    max_len = 5
    model = build(n_layers=2, n_heads=2, max_len=max_len, dtype=dtype, seed=4)
    tokens = np.random.default_rng(4).integers(0, VOCAB, size=(2, 12))
    cached, old = model.stepper(), RerunStepper(model)
    logits, state = cached.start(tokens[:, :3])
    old_logits, context = old.start(tokens[:, :3])
    for t in range(3, 12):
        np.testing.assert_allclose(logits, old_logits, **TOLERANCE[dtype])
        window = tokens[:, max(0, t - max_len):t]  # the tokens before position t, at most max_len
        np.testing.assert_allclose(logits, full_logits(model, window)[:, -1], **TOLERANCE[dtype])
        logits, state = cached.step(tokens[:, t], state)
        old_logits, context = old.step(tokens[:, t], context)
        assert state.shape == context.shape == (2, min(t + 1, max_len))
        assert state.keys.shape[3] == min(t + 1, max_len)
        np.testing.assert_array_equal(state.context, context)
    np.testing.assert_allclose(logits, old_logits, **TOLERANCE[dtype])


def test_a_prompt_longer_than_max_len_is_read_by_its_last_max_len_tokens():
    model = build(max_len=4, dtype=np.float64, seed=5)
    tokens = np.random.default_rng(5).integers(0, VOCAB, size=(1, 7))
    logits, state = model.stepper().start(tokens)
    np.testing.assert_allclose(logits, full_logits(model, tokens[:, -4:])[:, -1], rtol=1e-10, atol=1e-10)
    assert state.shape == (1, 4)


@pytest.mark.parametrize("gelu", ["tanh", "none"])
def test_sample_tokens_writes_what_it_wrote_with_the_old_stepper(gelu, monkeypatch):
    """A seeded model samples the same 40 tokens with the cache as with the rerun stepper,
    crossing max_len (16) on the way, at temperature 1 and with top_k."""
    model = build(n_layers=2, n_heads=2, gelu=gelu, max_len=16, dtype=np.float32, seed=6)
    prompt = [3, 1, 4, 1, 5]
    for options in (dict(temperature=1.0), dict(temperature=0.7, top_k=4)):
        cached = list(sample_tokens(model, prompt, 40, np.random.default_rng(7), **options))
        with monkeypatch.context() as patch:
            patch.setattr(model, "stepper", lambda: RerunStepper(model))
            rerun = list(sample_tokens(model, prompt, 40, np.random.default_rng(7), **options))
        assert cached == rerun
        assert len(set(cached)) > 3  # a sample, not one token over and over


def test_the_stepper_reads_the_weights_at_each_call():
    """The stepper keeps no copy of the weights: one made before a change sees it."""
    model = build(dtype=np.float64, seed=8)
    tokens = np.array([[1, 2, 3]])
    stepper = model.stepper()
    model.fc.bias.data += 1.0
    logits, _ = stepper.start(tokens)
    np.testing.assert_allclose(logits, full_logits(model, tokens)[:, -1], rtol=1e-10, atol=1e-10)


def test_training_mode_with_dropout_is_refused_and_without_dropout_allowed():
    model = build(dtype=np.float64, dropout=0.1).train()
    with pytest.raises(RuntimeError, match=r"TransformerStepper.start: .*training mode with dropout 0.1.*eval"):
        model.stepper().start(np.array([[1, 2]]))
    plain = build(dtype=np.float64, dropout=0.0).train()  # dropout 0: training mode computes the same
    logits, _ = plain.stepper().start(np.array([[1, 2]]))
    np.testing.assert_allclose(logits, full_logits(plain, np.array([[1, 2]]))[:, -1], rtol=1e-10, atol=1e-10)


def test_bad_input_is_named():
    model = build()
    stepper = model.stepper()
    with pytest.raises(ValueError, match=r"TransformerStepper.start: prompt_ids .*\(1, 0\) must be integer ids"):
        stepper.start(np.zeros((1, 0), dtype=np.int64))
    with pytest.raises(ValueError, match=r"TransformerStepper.start: prompt_ids float64 \(1, 2\)"):
        stepper.start(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="TransformerStepper.start: a transformer carries no state"):
        stepper.start(np.zeros((1, 2), dtype=np.int64), np.zeros((1, 2), dtype=np.int64))
    _, state = stepper.start(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match=r"TransformerStepper.step: ids int64 \(3,\) must be .* \(B,\) = \(2,\)"):
        stepper.step(np.zeros(3, dtype=np.int64), state)
    with pytest.raises(TypeError, match="TransformerStepper.step: state must be the TransformerStepperState"):
        stepper.step(np.zeros(2, dtype=np.int64), np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(IndexError, match="embedding_forward: id 13 is out of range"):
        stepper.step(np.array([0, VOCAB]), state)
    assert isinstance(stepper, TransformerStepper)
