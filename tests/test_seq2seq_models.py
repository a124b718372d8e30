"""The translation models, Seq2SeqLSTM and TransformerSeq2Seq, against the interface of
tinylm/models/seq2seq.py: padding never matters, the stepper computes what forward
computes, gradients match finite differences, and a tiny model learns a toy task."""

import numpy as np
import pytest

import tinylm
from tinylm import optim
from tinylm.models import MODELS, Seq2SeqLSTM, Source, TransformerSeq2Seq
from tinylm.models.seq2seq import BOS, EOS, PAD, key_padding_mask
from tinylm.nn import functional as F

SOURCE_VOCAB, TARGET_VOCAB = 11, 9

CONFIGS = {
    "lstm-general": (Seq2SeqLSTM, dict(embedding_dim=6, hidden_dim=8, n_layers=1, attention="general")),
    "lstm-dot-2layers": (Seq2SeqLSTM, dict(embedding_dim=5, hidden_dim=6, n_layers=2, attention="dot")),
    "lstm-additive": (Seq2SeqLSTM, dict(embedding_dim=4, hidden_dim=8, n_layers=1, attention="additive")),
    "transformer-pre": (TransformerSeq2Seq, dict(d_model=8, n_heads=2, num_encoder_layers=2, num_decoder_layers=2,
                                                 dim_feedforward=12, max_len=16, norm_first=True)),
    "transformer-post": (TransformerSeq2Seq, dict(d_model=8, n_heads=4, num_encoder_layers=1, num_decoder_layers=2,
                                                  dim_feedforward=6, max_len=16, norm_first=False)),
}


def build(name, dtype=np.float64, seed=0, dropout=0.0):
    tinylm.manual_seed(seed)
    cls, config = CONFIGS[name]
    model = cls(SOURCE_VOCAB, TARGET_VOCAB, dropout=dropout, **config)
    return (model.double() if dtype == np.float64 else model).eval()


def make_source(rng, lengths, width=None, padding_id=PAD):
    """A Source with rows of the given lengths, right-padded with ``padding_id`` to ``width``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    width = int(lengths.max()) if width is None else width
    ids = rng.integers(3, SOURCE_VOCAB, size=(len(lengths), width))
    ids[np.arange(width)[None, :] >= lengths[:, None]] = padding_id
    return Source(ids.astype(np.int64), lengths)


def make_targets(rng, batch, length):
    ids = rng.integers(3, TARGET_VOCAB, size=(batch, length))
    ids[:, 0] = BOS
    return ids.astype(np.int64)


# ------------------------------------------------------------------------------ interface


@pytest.mark.parametrize("name", CONFIGS)
def test_parameter_shapes_are_those_the_model_makes(name):
    cls, config = CONFIGS[name]
    for vocab in [(SOURCE_VOCAB, TARGET_VOCAB), (5, 13)]:
        model = cls(*vocab, **config)
        made = {n: p.shape for n, p in model.named_parameters()}
        assert cls.parameter_shapes(*vocab, **config) == made
        assert cls.parameter_shapes(**model.config) == made
        rebuilt = MODELS[{Seq2SeqLSTM: "seq2seq-lstm", TransformerSeq2Seq: "seq2seq-transformer"}[cls]](**model.config)
        assert {n: p.shape for n, p in rebuilt.named_parameters()} == made


def test_parameter_names_follow_pytorch():
    lstm = dict(Seq2SeqLSTM(5, 6, hidden_dim=8, n_layers=2).named_parameters())
    assert {"encoder.lstm.weight_ih_l0", "encoder.lstm.weight_hh_l1_reverse", "decoder.lstm.bias_hh_l1"} <= set(lstm)
    assert lstm["encoder.lstm.weight_hh_l0_reverse"].shape == (16, 4)  # hidden_dim // 2 per direction
    transformer = dict(TransformerSeq2Seq(5, 6, d_model=8, n_heads=2).named_parameters())
    assert {"transformer.encoder.layers.2.self_attn.in_proj_weight", "transformer.encoder.norm.weight",
            "transformer.decoder.layers.0.multihead_attn.out_proj.bias", "transformer.decoder.layers.1.norm3.bias",
            "transformer.decoder.norm.bias", "transformer.decoder.layers.0.linear2.weight"} <= set(transformer)


@pytest.mark.parametrize("name", CONFIGS)
def test_forward_shapes_and_the_interface(name):
    model, rng = build(name), np.random.default_rng(0)
    source, ids = make_source(rng, [4, 2, 3]), make_targets(rng, 3, 5)
    logits, state = model(ids, source)
    assert logits.shape == (3, 5, TARGET_VOCAB) and state is None
    assert model.carries_state is False and type(model).carries_state is False


@pytest.mark.parametrize("name", ["lstm-general", "transformer-pre"])
def test_a_missing_or_wrong_source_is_a_clear_error(name):
    model, rng = build(name), np.random.default_rng(0)
    source, ids = make_source(rng, [4, 2]), make_targets(rng, 2, 3)
    cls = type(model).__name__
    with pytest.raises(ValueError, match=f"{cls}.forward: .*needs the source"):
        model(ids)
    with pytest.raises(TypeError, match="Source"):
        model(ids, (source.ids, source.lengths, 3))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, S=4\]"):
        model(ids, Source(source.ids, np.array([5, 2])))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, S=4\]"):
        model(ids, Source(source.ids, np.array([0, 2])))
    with pytest.raises(ValueError, match="the source has 2 rows but the target ids have 1"):
        model(ids[:1], source)
    with pytest.raises(ValueError, match=r"lengths must be integers of shape \(B,\) = \(2,\)"):
        model(ids, Source(source.ids, np.array([4])))


# ------------------------------------------------------------------------------ padding


@pytest.mark.parametrize("name", CONFIGS)
def test_a_rows_logits_do_not_depend_on_the_padding_of_its_batch(name):
    """Each row run alone, unpadded, gives the logits it gets inside a batch padded wider
    than its longest row, with any ids at all in the padding."""
    model, rng = build(name), np.random.default_rng(1)
    lengths = [3, 5, 1, 5]
    source = make_source(rng, lengths, width=7, padding_id=PAD)
    garbage = source.ids.copy()
    padding = key_padding_mask(source.lengths, 7)
    garbage[padding] = rng.integers(0, SOURCE_VOCAB, size=int(padding.sum()))  # padding ids must not matter
    ids = make_targets(rng, 4, 4)
    batched = model(ids, source)[0].numpy()
    np.testing.assert_array_equal(model(ids, Source(garbage, source.lengths))[0].numpy(), batched)
    for row, length in enumerate(lengths):
        alone = Source(source.ids[row:row + 1, :length], source.lengths[row:row + 1])
        np.testing.assert_allclose(model(ids[row:row + 1], alone)[0].numpy()[0], batched[row], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", CONFIGS)
def test_cross_attention_gives_padding_exactly_zero_and_sums_to_one(name):
    model, rng = build(name, np.float32), np.random.default_rng(2)
    source, ids = make_source(rng, [2, 6, 4], width=6), make_targets(rng, 3, 5)
    model.train()
    weights = model.cross_attention(ids, source)
    assert model.training  # the mode is given back
    assert isinstance(weights, np.ndarray) and weights.shape == (3, 5, 6)
    padding = key_padding_mask(source.lengths, 6)
    assert np.all(weights[np.broadcast_to(padding[:, None, :], weights.shape)] == 0.0)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, rtol=1e-5)
    assert np.all(weights[~np.broadcast_to(padding[:, None, :], weights.shape)] > 0)


@pytest.mark.parametrize("name", ["lstm-general", "lstm-additive", "transformer-post"])
def test_target_positions_never_see_later_ones(name):
    model, rng = build(name), np.random.default_rng(3)
    source, ids = make_source(rng, [3, 5]), make_targets(rng, 2, 6)
    before = model(ids, source)[0].numpy()
    changed = ids.copy()
    changed[:, 4] = (changed[:, 4] + 1) % TARGET_VOCAB
    after = model(changed, source)[0].numpy()
    np.testing.assert_array_equal(after[:, :4], before[:, :4])
    assert not np.allclose(after[:, 4:], before[:, 4:])


# ------------------------------------------------------------------------------ stepper


def greedy(model, source, steps):
    """Greedy decoding with the stepper: the decoded ids (B, 1 + steps), BOS first, and the
    logits of every step (B, 1 + steps, V)."""
    stepper = model.stepper()
    prefix = np.full((len(source.lengths), 1), BOS, dtype=np.int64)
    logits, state = stepper.start(prefix, source)
    all_logits = [logits]
    for _ in range(steps):
        chosen = logits.argmax(axis=-1)
        prefix = np.concatenate([prefix, chosen[:, None]], axis=1)
        logits, state = stepper.step(chosen, state)
        all_logits.append(logits)
    return prefix, np.stack(all_logits, axis=1)


@pytest.mark.parametrize("name", CONFIGS)
def test_the_stepper_computes_what_forward_computes(name):
    model, rng = build(name, np.float32, seed=4), np.random.default_rng(4)
    source = make_source(rng, [3, 6, 1], width=6)
    decoded, logits = greedy(model, source, steps=5)
    assert logits.shape == (3, 6, TARGET_VOCAB) and logits.dtype == np.float32
    expected = model(decoded, source)[0].numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["lstm-dot-2layers", "lstm-additive", "transformer-pre"])
def test_the_stepper_starts_from_a_longer_prompt(name):
    model, rng = build(name, np.float32, seed=5), np.random.default_rng(5)
    source, prompt = make_source(rng, [2, 4]), make_targets(rng, 2, 3)
    logits, state = model.stepper().start(prompt, source)
    np.testing.assert_allclose(logits, model(prompt, source)[0].numpy()[:, -1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", CONFIGS)
def test_select_gives_the_state_of_the_chosen_rows(name):
    """select(state, rows) continues exactly as a stepper started on those rows alone would."""
    model, rng = build(name, seed=6), np.random.default_rng(6)
    source = make_source(rng, [4, 2, 5])
    prefix = np.array([[BOS, 4], [BOS, 5], [BOS, 6]])
    stepper = model.stepper()
    _, state = stepper.start(prefix, source)
    rows = np.array([2, 0, 0, 1])
    selected = stepper.select(state, rows)
    next_ids = np.array([3, 7, 8, EOS])
    logits, _ = stepper.step(next_ids, selected)
    expected = model(np.concatenate([prefix[rows], next_ids[:, None]], axis=1),
                     Source(source.ids[rows], source.lengths[rows]))[0].numpy()[:, -1]
    np.testing.assert_allclose(logits, expected, rtol=1e-10, atol=1e-12)
    with pytest.raises(IndexError, match="select: rows must be .* in \\[0, 3\\)"):
        stepper.select(state, np.array([3]))
    with pytest.raises(ValueError, match="step: ids"):
        stepper.step(np.array([1, 2]), state)


# ------------------------------------------------------------------------------ gradients


def loss_of(model, ids, source, targets):
    logits, _ = model(ids, source)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


GRADCHECKED = {  # small parameters, and one early in the graph, so that every op's backward is on the path
    "lstm-general": ["encoder.lstm.bias_ih_l0", "encoder.lstm.bias_hh_l0_reverse", "decoder.lstm.bias_ih_l0",
                     "attention.linear_in.weight", "fc.bias"],
    "lstm-dot-2layers": ["encoder.lstm.bias_ih_l0", "encoder.lstm.bias_hh_l1_reverse", "decoder.lstm.bias_hh_l1"],
    "lstm-additive": ["attention.linear_query.bias", "attention.v.weight", "decoder.embedding.weight"],
    "transformer-pre": ["transformer.encoder.layers.0.norm1.bias",
                        "transformer.encoder.layers.1.self_attn.in_proj_bias",
                        "transformer.decoder.layers.0.multihead_attn.in_proj_bias",
                        "transformer.decoder.layers.1.norm2.weight", "transformer.encoder.norm.bias"],
    "transformer-post": ["transformer.encoder.layers.0.linear1.bias", "transformer.decoder.layers.1.norm1.bias",
                         "target_embedding.weight"],
}


@pytest.mark.parametrize("name", CONFIGS)
def test_the_loss_gradient_matches_finite_differences(name):
    model, rng = build(name, seed=7), np.random.default_rng(7)
    source = make_source(rng, [3, 1, 4])
    ids = make_targets(rng, 3, 4)
    targets = rng.integers(0, TARGET_VOCAB, size=(3, 4))
    targets[1, 3] = -100  # a padded target position
    params = dict(model.named_parameters())
    checked = [params[n] for n in GRADCHECKED[name]]
    assert tinylm.gradcheck(lambda *_: loss_of(model, ids, source, targets), *checked)


# ------------------------------------------------------------------------------ learning


def reverse_task(rng, batch):
    """Source: 1 to 4 random tokens; target: the same tokens reversed, then EOS."""
    lengths = rng.integers(1, 5, size=batch)
    source = make_source(rng, lengths, width=4)
    inputs = np.zeros((batch, 5), dtype=np.int64)
    outputs = np.full((batch, 5), -100, dtype=np.int64)
    for b, length in enumerate(lengths):
        reversed_ids = source.ids[b, :length][::-1] % TARGET_VOCAB  # target ids in the target vocabulary
        inputs[b, :length + 1] = np.concatenate([[BOS], reversed_ids])
        outputs[b, :length + 1] = np.concatenate([reversed_ids, [EOS]])
    return source, inputs, outputs


@pytest.mark.parametrize("cls, config", [
    (Seq2SeqLSTM, dict(embedding_dim=16, hidden_dim=32, attention="general")),
    (TransformerSeq2Seq, dict(d_model=32, n_heads=2, num_encoder_layers=1, num_decoder_layers=1,
                              dim_feedforward=64, max_len=8)),
])
def test_a_tiny_model_learns_to_reverse(cls, config):
    tinylm.manual_seed(0)
    model = cls(SOURCE_VOCAB, TARGET_VOCAB, dropout=0.0, **config)
    optimizer = optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(200):
        source, inputs, outputs = reverse_task(rng, 16)
        loss = loss_of(model, inputs, source, outputs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < 0.3 * first, (first, last)  # a wrong backward learns little or diverges
