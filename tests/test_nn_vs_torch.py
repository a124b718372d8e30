"""Every layer gives PyTorch's outputs and gradients on the same weights.

Weights go tinylm -> PyTorch through ``state_dict`` (same names, same layouts); outputs,
input gradients and every parameter gradient are compared: float64 within rtol 1e-10,
float32 within rtol 2e-4 / atol 2e-5 (see torch_compare.TOLERANCES).
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import seeds
from torch_compare import TOLERANCES, assert_same, copy_weights_to_torch, run_both

import tinylm
from tinylm import nn
from tinylm.nn import functional as F

torch = pytest.importorskip("torch", reason="PyTorch is not installed: the PyTorch comparisons need it "
                                            "(.ci/run installs it)")
TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}
dtypes = st.sampled_from([np.float64, np.float32])


def randn(rng, shape, dtype, scale=1.0):
    return np.asarray(scale * rng.standard_normal(shape), dtype=dtype)


@given(seed=seeds, dtype=dtypes, lead=st.lists(st.integers(1, 3), max_size=2),
       features=st.integers(1, 5), out=st.integers(1, 5), bias=st.booleans())
def test_linear(seed, dtype, lead, features, out, bias):
    rng = np.random.default_rng(seed)
    ours = nn.Linear(features, out, bias=bias, dtype=dtype)
    theirs = torch.nn.Linear(features, out, bias=bias, dtype=TORCH_DTYPE[dtype])
    x = randn(rng, tuple(lead) + (features,), dtype)
    assert_same(*run_both(ours, theirs, [x], lambda m, x: m(x), lambda m, x: m(x), dtype), dtype)


@given(seed=seeds, dtype=dtypes, ids_shape=st.lists(st.integers(1, 4), min_size=1, max_size=2),
       vocab=st.integers(1, 7), dim=st.integers(1, 5))
def test_embedding(seed, dtype, ids_shape, vocab, dim):
    rng = np.random.default_rng(seed)
    ours = nn.Embedding(vocab, dim, dtype=dtype)
    theirs = torch.nn.Embedding(vocab, dim, dtype=TORCH_DTYPE[dtype])
    ids = rng.integers(0, vocab, size=tuple(ids_shape))
    assert_same(*run_both(ours, theirs, [ids], lambda m, i: m(i), lambda m, i: m(i), dtype), dtype)


@given(seed=seeds, dtype=dtypes, lead=st.lists(st.integers(1, 3), min_size=1, max_size=2),
       normalized=st.lists(st.integers(1, 5), min_size=1, max_size=2))
def test_layer_norm(seed, dtype, lead, normalized):
    rng = np.random.default_rng(seed)
    ours = nn.LayerNorm(tuple(normalized), dtype=dtype)
    with tinylm.no_grad():  # non-trivial affine weights so their gradients mean something
        ours.weight.data += randn(rng, ours.weight.shape, dtype, 0.5)
        ours.bias.data += randn(rng, ours.bias.shape, dtype, 0.5)
    theirs = torch.nn.LayerNorm(tuple(normalized), dtype=TORCH_DTYPE[dtype])
    x = randn(rng, tuple(lead) + tuple(normalized), dtype, scale=3.0) + 1.0
    # Normalising divides by sqrt(var + 1e-5), which can be as small as 3e-3: float32
    # rounding in the mean (~1e-7 · |x|) is amplified ~300x, so float32 needs atol 1e-4
    # here (with one normalized element the exact result is 0 and PyTorch's is not).
    override = dict(atol=1e-4) if dtype == np.float32 else {}
    assert_same(*run_both(ours, theirs, [x], lambda m, x: m(x), lambda m, x: m(x), dtype), dtype, **override)


@settings(max_examples=30)
@given(seed=seeds, dtype=dtypes, steps=st.integers(1, 4), batch=st.integers(1, 3), input_size=st.integers(1, 4),
       hidden=st.integers(1, 4), layers=st.integers(1, 3), batch_first=st.booleans(), with_state=st.booleans())
def test_lstm(seed, dtype, steps, batch, input_size, hidden, layers, batch_first, with_state):
    rng = np.random.default_rng(seed)
    ours = nn.LSTM(input_size, hidden, num_layers=layers, batch_first=batch_first, dtype=dtype)
    theirs = torch.nn.LSTM(input_size, hidden, num_layers=layers, batch_first=batch_first, dtype=TORCH_DTYPE[dtype])
    x = randn(rng, (batch, steps, input_size) if batch_first else (steps, batch, input_size), dtype)
    inputs = [x]
    if with_state:
        inputs += [randn(rng, (layers, batch, hidden), dtype), randn(rng, (layers, batch, hidden), dtype)]

    def forward(m, x, *state):
        return m(x, tuple(state) if state else None)

    assert_same(*run_both(ours, theirs, inputs, forward, forward, dtype), dtype)


def test_lstm_state_carried_across_batches_matches_pytorch():
    """Truncated BPTT: the detached final state of one batch starts the next."""
    rng = np.random.default_rng(0)
    ours = nn.LSTM(3, 4, num_layers=2, dtype=np.float64)
    theirs = torch.nn.LSTM(3, 4, num_layers=2, dtype=torch.float64)
    copy_weights_to_torch(ours, theirs)
    our_state, their_state = None, None
    for _ in range(3):
        x = randn(rng, (5, 2, 3), np.float64)
        out, (h, c) = ours(tinylm.Tensor(x), our_state)
        their_out, (th, tc) = theirs(torch.from_numpy(x), their_state)
        out.sum().backward()
        their_out.sum().backward()
        our_state, their_state = (h.detach(), c.detach()), (th.detach(), tc.detach())
        np.testing.assert_allclose(out.numpy(), their_out.detach().numpy(), rtol=1e-10)
    for name, p in theirs.named_parameters():  # gradients accumulated over the three batches
        np.testing.assert_allclose(dict(ours.named_parameters())[name].grad.numpy(), p.grad.numpy(), rtol=1e-10)


@st.composite
def attention_masks(draw, length, key_length, rng):
    kind = draw(st.sampled_from(["none", "causal", "bool", "float"] if length == key_length
                                else ["none", "bool", "float"]))
    if kind == "bool":  # True = may not attend; keep at least one key open per query
        mask = rng.random((length, key_length)) < 0.4
        mask[np.arange(length), rng.integers(0, key_length, size=length)] = False
        return kind, mask
    if kind == "float":
        return kind, rng.standard_normal((length, key_length))
    if kind == "causal":
        return kind, ~np.tril(np.ones((length, key_length), dtype=bool))
    return kind, None


@settings(max_examples=30)
@given(seed=seeds, dtype=dtypes, batch=st.integers(1, 2), length=st.integers(1, 4), key_length=st.integers(1, 4),
       heads_and_dim=st.sampled_from([(1, 1), (1, 3), (2, 2), (2, 6), (3, 3), (3, 6)]), need_weights=st.booleans(),
       data=st.data())
def test_multihead_attention(seed, dtype, batch, length, key_length, heads_and_dim, need_weights, data):
    rng = np.random.default_rng(seed)
    heads, embed = heads_and_dim
    kind, mask = data.draw(attention_masks(length, key_length, rng))
    ours = nn.MultiheadAttention(embed, heads, batch_first=True, dtype=dtype)
    with tinylm.no_grad():  # PyTorch starts the biases at zero; make them matter
        ours.in_proj_bias.data += randn(rng, (3 * embed,), dtype)
        ours.out_proj.bias.data += randn(rng, (embed,), dtype)
    theirs = torch.nn.MultiheadAttention(embed, heads, batch_first=True, dtype=TORCH_DTYPE[dtype])
    q = randn(rng, (batch, length, embed), dtype)
    k = randn(rng, (batch, key_length, embed), dtype)
    v = randn(rng, (batch, key_length, embed), dtype)
    if mask is not None and mask.dtype != bool:
        mask = mask.astype(dtype)

    def forward(m, q, k, v):
        return m(q, k, v, attn_mask=mask if kind != "causal" else None, is_causal=kind == "causal",
                 need_weights=need_weights)

    def torch_forward(m, q, k, v):
        torch_mask = None if mask is None else torch.from_numpy(mask)
        return m(q, k, v, attn_mask=torch_mask, is_causal=kind == "causal", need_weights=need_weights)

    assert_same(*run_both(ours, theirs, [q, k, v], forward, torch_forward, dtype), dtype)


def test_weights_move_from_pytorch_into_tinylm():
    theirs = torch.nn.LSTM(3, 5, num_layers=2, dtype=torch.float64)
    ours = nn.LSTM(3, 5, num_layers=2, dtype=np.float64)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    np.testing.assert_allclose(ours(tinylm.Tensor(x))[0].numpy(), theirs(torch.from_numpy(x))[0].detach().numpy(),
                               rtol=1e-10)


@given(seed=seeds, dtype=dtypes, rows=st.integers(1, 5), classes=st.integers(1, 6),
       reduction=st.sampled_from(["mean", "sum", "none"]), huge=st.booleans(), ignore_some=st.booleans())
def test_cross_entropy(seed, dtype, rows, classes, reduction, huge, ignore_some):
    rng = np.random.default_rng(seed)
    logits = randn(rng, (rows, classes), dtype, scale=1e4 if huge else 2.0)
    targets = rng.integers(0, classes, size=rows)
    if ignore_some:
        targets[rng.random(rows) < 0.3] = -100
        targets[0] = rng.integers(0, classes)  # at least one row counts
    ours_x, theirs_x = tinylm.Tensor(logits.copy(), requires_grad=True), torch.tensor(logits, requires_grad=True)
    ours = F.cross_entropy(ours_x, targets, reduction=reduction)
    theirs = torch.nn.functional.cross_entropy(theirs_x, torch.from_numpy(targets), reduction=reduction)
    weight = randn(rng, ours.shape, dtype)
    (ours * tinylm.Tensor(weight)).sum().backward()
    (theirs * torch.from_numpy(weight)).sum().backward()
    tolerance = TOLERANCES[dtype]
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), **tolerance)
    np.testing.assert_allclose(ours_x.grad.numpy(), theirs_x.grad.numpy(), **tolerance)
    assert np.all(np.isfinite(ours.numpy()))


def test_cross_entropy_with_every_target_ignored_is_nan_with_zero_gradients_as_pytorch():
    logits = np.random.default_rng(0).standard_normal((3, 4))
    ours_x, theirs_x = tinylm.Tensor(logits.copy(), requires_grad=True), torch.tensor(logits, requires_grad=True)
    ours = F.cross_entropy(ours_x, [-100, -100, -100])
    theirs = torch.nn.functional.cross_entropy(theirs_x, torch.tensor([-100, -100, -100]))
    ours.backward()
    theirs.backward()
    assert np.isnan(ours.item()) and np.isnan(theirs.item())
    np.testing.assert_array_equal(ours_x.grad.numpy(), theirs_x.grad.numpy())


def test_tied_weights_move_both_ways_under_both_names():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(5, 3, dtype=np.float64)
            self.head = nn.Linear(3, 5, bias=False, dtype=np.float64)
            self.head.weight = self.emb.weight

    class TorchTied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(5, 3, dtype=torch.float64)
            self.head = torch.nn.Linear(3, 5, bias=False, dtype=torch.float64)
            self.head.weight = self.emb.weight

    ours, theirs = Tied(), TorchTied()
    assert set(ours.state_dict()) == set(theirs.state_dict()) == {"emb.weight", "head.weight"}
    copy_weights_to_torch(ours, theirs)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    assert len(list(ours.parameters())) == 1


def test_cross_entropy_with_extra_axes_matches_pytorch():
    rng = np.random.default_rng(0)
    logits, targets = rng.standard_normal((2, 5, 3, 4)), rng.integers(0, 5, size=(2, 3, 4))
    ours = nn.CrossEntropyLoss(reduction="none")(tinylm.Tensor(logits), targets)
    theirs = torch.nn.CrossEntropyLoss(reduction="none")(torch.from_numpy(logits), torch.from_numpy(targets))
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-10)


@settings(max_examples=30)
@given(seed=seeds, dtype=dtypes, lead=st.lists(st.integers(1, 2), max_size=2), length=st.integers(1, 4),
       key_length=st.integers(1, 4), dim=st.integers(1, 4), data=st.data())
def test_scaled_dot_product_attention(seed, dtype, lead, length, key_length, dim, data):
    rng = np.random.default_rng(seed)
    lead = tuple(lead)
    kind = data.draw(st.sampled_from(["none", "bool", "float"] + (["causal"] if length <= key_length else [])))
    mask = None
    if kind == "bool":  # True = may attend, PyTorch's SDPA convention
        mask = rng.random((length, key_length)) < 0.6
        mask[np.arange(length), rng.integers(0, key_length, size=length)] = True
    elif kind == "float":
        mask = randn(rng, (length, key_length), dtype)
    q, k, v = (randn(rng, lead + (n, dim), dtype) for n in (length, key_length, key_length))
    ours_in = [tinylm.Tensor(a.copy(), requires_grad=True) for a in (q, k, v)]
    theirs_in = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    ours = F.scaled_dot_product_attention(*ours_in, attn_mask=mask, is_causal=kind == "causal")
    theirs = torch.nn.functional.scaled_dot_product_attention(
        *theirs_in, attn_mask=None if mask is None else torch.from_numpy(mask), is_causal=kind == "causal")
    weight = randn(rng, ours.shape, dtype)
    (ours * tinylm.Tensor(weight)).sum().backward()
    (theirs * torch.from_numpy(weight)).sum().backward()
    tolerance = TOLERANCES[dtype]
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), **tolerance)
    for a, b in zip(ours_in, theirs_in):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), **tolerance)


@settings(max_examples=20)
@given(seed=seeds, dtype=dtypes, batch=st.integers(1, 3), length=st.integers(1, 4), key_length=st.integers(1, 4),
       with_attn_mask=st.booleans(), float_padding=st.booleans())
@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask and attn_mask:UserWarning")
def test_multihead_attention_with_pytorchs_defaults_and_a_key_padding_mask(seed, dtype, batch, length, key_length,
                                                                           with_attn_mask, float_padding):
    """Sequence-first inputs (L, B, E), weights returned, padded keys ignored: all as PyTorch."""
    rng = np.random.default_rng(seed)
    ours = nn.MultiheadAttention(6, 2, dtype=dtype)
    theirs = torch.nn.MultiheadAttention(6, 2, dtype=TORCH_DTYPE[dtype])
    padding = rng.random((batch, key_length)) < 0.4
    padding[:, 0] = False  # every query keeps a key to attend to (an all-masked row is nan in PyTorch)
    if float_padding:
        padding = np.where(padding, -1e4, 0.0).astype(dtype)
    attn_mask = np.asarray(rng.standard_normal((length, key_length)), dtype=dtype) if with_attn_mask else None
    q = randn(rng, (length, batch, 6), dtype)
    kv = randn(rng, (key_length, batch, 6), dtype)

    def forward(m, q, k, v):
        return m(q, k, v, key_padding_mask=padding, attn_mask=attn_mask)

    def torch_forward(m, q, k, v):
        return m(q, k, v, key_padding_mask=torch.from_numpy(padding),
                 attn_mask=None if attn_mask is None else torch.from_numpy(attn_mask))

    assert_same(*run_both(ours, theirs, [q, kv, kv.copy()], forward, torch_forward, dtype), dtype)


@settings(max_examples=30)
@given(seed=seeds, dtype=dtypes, batch=st.integers(1, 3), length=st.integers(1, 4), extra=st.integers(1, 4),
       heads=st.sampled_from([1, 2, 3]), kind=st.sampled_from(["none", "bool", "float", "causal", "per-head"]),
       need_weights=st.booleans(), average=st.booleans())
@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask and attn_mask:UserWarning")
def test_cross_attention_over_padded_keys(seed, dtype, batch, length, extra, heads, kind, need_weights, average):
    """Queries (B, L, E) over keys (B, S, E) with S != L (a decoder over a padded source
    sentence), a bool key_padding_mask: PyTorch's outputs and gradients. The padding mask
    reaches the fused softmax as (B, S) unless a per-head attn_mask sends it through the graph."""
    from unittest import mock

    rng = np.random.default_rng(seed)
    embed, key_length = 2 * heads, length + extra
    ours = nn.MultiheadAttention(embed, heads, batch_first=True, dtype=dtype)
    with tinylm.no_grad():  # PyTorch starts the biases at zero; make them matter
        ours.in_proj_bias.data += randn(rng, (3 * embed,), dtype)
    theirs = torch.nn.MultiheadAttention(embed, heads, batch_first=True, dtype=TORCH_DTYPE[dtype])
    padding = rng.random((batch, key_length)) < 0.5
    padding[np.arange(batch), rng.integers(1, key_length, size=batch)] = True  # each row pads something
    padding[:, 0] = False  # and keeps key 0, which no attn_mask below hides (an all-masked row is NaN in PyTorch)
    attn_mask = {"none": None, "causal": None,
                 "bool": np.concatenate([np.zeros((length, 1), bool), rng.random((length, key_length - 1)) < 0.4], 1),
                 "float": randn(rng, (length, key_length), dtype),
                 "per-head": randn(rng, (batch * heads, length, key_length), dtype)}[kind]
    torch_mask = ~np.tril(np.ones((length, key_length), dtype=bool)) if kind == "causal" else attn_mask
    q, kv = randn(rng, (batch, length, embed), dtype), randn(rng, (batch, key_length, embed), dtype)

    def forward(m, q, k, v):
        return m(q, k, v, key_padding_mask=padding, attn_mask=attn_mask, is_causal=kind == "causal",
                 need_weights=need_weights, average_attn_weights=average)

    def torch_forward(m, q, k, v):
        return m(q, k, v, key_padding_mask=torch.from_numpy(padding),
                 attn_mask=None if torch_mask is None else torch.from_numpy(torch_mask),
                 need_weights=need_weights, average_attn_weights=average)

    with mock.patch.object(F, "attention_weights", wraps=F.attention_weights) as spy:
        assert_same(*run_both(ours, theirs, [q, kv, kv.copy()], forward, torch_forward, dtype), dtype)
    fused = spy.call_args.kwargs["key_padding_mask"]
    if kind == "per-head":  # (B·nh, L, S) + padding: one (B, nh, L, S) mask added to the scores
        assert fused is None and spy.call_args.args[2].shape == (batch, heads, length, key_length)
    else:
        np.testing.assert_array_equal(fused, padding)
        assert spy.call_args.args[2] is None or spy.call_args.args[2].shape == (length, key_length)


def compare_function(ours_fn, theirs_fn, arrays, dtype, seed=0):
    """Forward both on copies of ``arrays`` (all get gradients), backward a random
    weighting of the output, compare the output and every input gradient."""
    ours_in = [tinylm.Tensor(a.copy(), requires_grad=True) for a in arrays]
    theirs_in = [torch.tensor(a, requires_grad=True) for a in arrays]
    ours, theirs = ours_fn(*ours_in), theirs_fn(*theirs_in)
    weight = np.asarray(np.random.default_rng(seed).standard_normal(ours.shape), dtype=dtype)
    (ours * tinylm.Tensor(weight)).sum().backward()
    (theirs * torch.from_numpy(weight)).sum().backward()
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), **TOLERANCES[dtype])
    for a, b in zip(ours_in, theirs_in):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), **TOLERANCES[dtype])


@given(seed=seeds, dtype=dtypes, shape=st.lists(st.integers(1, 4), max_size=3),
       approximate=st.sampled_from(["none", "tanh"]))
def test_gelu_both_forms_match_pytorch(seed, dtype, shape, approximate):
    x = randn(np.random.default_rng(seed), tuple(shape), dtype, scale=3.0)
    compare_function(lambda x: F.gelu(x, approximate=approximate),
                     lambda x: torch.nn.functional.gelu(x, approximate=approximate), [x], dtype, seed)
    compare_function(nn.GELU(approximate), torch.nn.GELU(approximate), [x], dtype, seed)


def test_gelu_defaults_to_the_exact_form_as_pytorch():
    x = np.linspace(-5, 5, 41)
    np.testing.assert_allclose(F.gelu(tinylm.Tensor(x)).numpy(),
                               torch.nn.functional.gelu(torch.from_numpy(x)).numpy(), rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(nn.GELU()(tinylm.Tensor(x)).numpy(), torch.nn.GELU()(torch.from_numpy(x)).numpy(),
                               rtol=1e-14, atol=1e-300)


@given(seed=seeds, dtype=dtypes, shape=st.lists(st.integers(1, 4), max_size=3))
def test_activation_modules_match_pytorch(seed, dtype, shape):
    x = randn(np.random.default_rng(seed), tuple(shape), dtype, scale=3.0)
    for ours, theirs in [(nn.ReLU(), torch.nn.ReLU()), (nn.Tanh(), torch.nn.Tanh()),
                         (nn.Sigmoid(), torch.nn.Sigmoid()), (F.relu, torch.nn.functional.relu)]:
        compare_function(ours, theirs, [x], dtype, seed)


@given(seed=seeds, dtype=dtypes, shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
       reduction=st.sampled_from(["mean", "sum", "none"]))
def test_mse_loss_matches_pytorch(seed, dtype, shape, reduction):
    rng = np.random.default_rng(seed)
    x, y = randn(rng, tuple(shape), dtype), randn(rng, tuple(shape), dtype)
    compare_function(lambda x, y: F.mse_loss(x, y, reduction=reduction),
                     lambda x, y: torch.nn.functional.mse_loss(x, y, reduction=reduction), [x, y], dtype, seed)
    compare_function(nn.MSELoss(reduction), torch.nn.MSELoss(reduction=reduction), [x, y], dtype, seed)


def class_targets(rng, shape, classes, ignore_some):
    targets = rng.integers(0, classes, size=shape)
    if ignore_some:
        targets[rng.random(shape) < 0.3] = -100
        targets.flat[0] = rng.integers(0, classes)  # at least one target counts
    return targets


@given(seed=seeds, dtype=dtypes, rows=st.integers(1, 5), classes=st.integers(1, 6), extra=st.booleans(),
       reduction=st.sampled_from(["mean", "sum", "none"]), weighted=st.booleans(), ignore_some=st.booleans())
def test_nll_loss_matches_pytorch(seed, dtype, rows, classes, extra, reduction, weighted, ignore_some):
    rng = np.random.default_rng(seed)
    shape = (rows, classes, 3) if extra else (rows, classes)
    log_probs = randn(rng, shape, dtype)
    targets = class_targets(rng, (rows, 3) if extra else (rows,), classes, ignore_some)
    weight = np.asarray(rng.random(classes) + 0.1, dtype=dtype) if weighted else None
    torch_weight = None if weight is None else torch.from_numpy(weight)
    compare_function(lambda x: F.nll_loss(x, targets, weight=weight, reduction=reduction),
                     lambda x: torch.nn.functional.nll_loss(x, torch.from_numpy(targets), weight=torch_weight,
                                                            reduction=reduction), [log_probs], dtype, seed)


@given(seed=seeds, dtype=dtypes, rows=st.integers(1, 5), classes=st.integers(1, 6), extra=st.booleans(),
       reduction=st.sampled_from(["mean", "sum", "none"]), weighted=st.booleans(), ignore_some=st.booleans(),
       label_smoothing=st.sampled_from([0.0, 0.1, 0.5, 1.0]))
def test_cross_entropy_with_class_weights_and_label_smoothing_matches_pytorch(
        seed, dtype, rows, classes, extra, reduction, weighted, ignore_some, label_smoothing):
    rng = np.random.default_rng(seed)
    shape = (rows, classes, 3) if extra else (rows, classes)
    logits = randn(rng, shape, dtype, scale=2.0)
    targets = class_targets(rng, (rows, 3) if extra else (rows,), classes, ignore_some)
    weight = np.asarray(rng.random(classes) + 0.1, dtype=dtype) if weighted else None
    torch_weight = None if weight is None else torch.from_numpy(weight)
    compare_function(
        lambda x: nn.CrossEntropyLoss(weight, reduction=reduction, label_smoothing=label_smoothing)(x, targets),
        lambda x: torch.nn.functional.cross_entropy(x, torch.from_numpy(targets), weight=torch_weight,
                                                    reduction=reduction, label_smoothing=label_smoothing),
        [logits], dtype, seed)


@given(seed=seeds, dtype=dtypes, padding_idx=st.sampled_from([0, 3, -1]))
def test_embedding_padding_row_gets_no_gradient_as_pytorch(seed, dtype, padding_idx):
    rng = np.random.default_rng(seed)
    ours = nn.Embedding(5, 3, padding_idx=padding_idx, dtype=dtype)
    theirs = torch.nn.Embedding(5, 3, padding_idx=padding_idx, dtype=TORCH_DTYPE[dtype])
    ids = rng.integers(0, 5, size=(2, 6))
    ids[0, :2] = padding_idx % 5
    assert_same(*run_both(ours, theirs, [ids], lambda m, i: m(i), lambda m, i: m(i), dtype), dtype)
    assert np.all(ours.weight.grad.numpy()[padding_idx] == 0)


def test_embedding_from_pretrained_matches_pytorch():
    table = np.random.default_rng(0).standard_normal((4, 3))
    ids = np.array([[0, 2, 2, 1]])
    for freeze in (True, False):
        ours = nn.Embedding.from_pretrained(table, freeze=freeze, padding_idx=2)
        theirs = torch.nn.Embedding.from_pretrained(torch.from_numpy(table), freeze=freeze, padding_idx=2)
        assert ours.weight.requires_grad == theirs.weight.requires_grad == (not freeze)
        np.testing.assert_array_equal(ours(ids).numpy(), theirs(torch.from_numpy(ids)).detach().numpy())


def test_sequential_state_dict_names_and_indexing_match_pytorch():
    ours = nn.Sequential(nn.Linear(3, 4, dtype=np.float64), nn.ReLU(), nn.Linear(4, 2, dtype=np.float64))
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)).double()
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    copy_weights_to_torch(ours, theirs)
    x = np.random.default_rng(0).standard_normal((5, 3))
    np.testing.assert_allclose(ours(tinylm.Tensor(x)).numpy(), theirs(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-12)
    np.testing.assert_allclose(ours[:2](tinylm.Tensor(x)).numpy(), theirs[:2](torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-12)
    assert len(ours) == len(theirs) == 3


def test_module_dict_state_dict_names_match_pytorch():
    ours = nn.ModuleDict({"encoder": nn.Linear(2, 3), "decoder": nn.Linear(3, 2)})
    theirs = torch.nn.ModuleDict({"encoder": torch.nn.Linear(2, 3), "decoder": torch.nn.Linear(3, 2)})
    assert list(ours.state_dict()) == list(theirs.state_dict())
    copy_weights_to_torch(ours, theirs)


def test_the_documented_one_liner_hands_a_model_with_buffers_to_pytorch():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 2, dtype=np.float64)
            self.register_buffer("scale", np.full(2, 3.0))

    class TorchScaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(3, 2, dtype=torch.float64)
            self.register_buffer("scale", torch.ones(2, dtype=torch.float64))

    model, torch_model = Scaled(), TorchScaled()
    torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    np.testing.assert_array_equal(torch_model.scale.numpy(), [3.0, 3.0])
    np.testing.assert_array_equal(torch_model.linear.weight.detach().numpy(), model.linear.weight.numpy())


def test_load_state_dict_non_strict_returns_missing_and_unexpected_keys_as_pytorch():
    ours, theirs = nn.Linear(2, 3), torch.nn.Linear(2, 3)
    state = {"weight": np.zeros((3, 2), np.float32), "extra": np.zeros(1, np.float32)}
    our_result = ours.load_state_dict(state, strict=False)
    their_result = theirs.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    assert our_result.missing_keys == their_result.missing_keys == ["bias"]
    assert our_result.unexpected_keys == their_result.unexpected_keys == ["extra"]
    assert tuple(our_result) == tuple(their_result)


def test_loss_class_weights_are_a_buffer_in_state_dict_as_pytorch():
    weight = np.array([1.0, 2.0, 0.5])
    ours, theirs = nn.CrossEntropyLoss(weight), torch.nn.CrossEntropyLoss(torch.from_numpy(weight))
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]
    assert list(nn.NLLLoss().state_dict()) == list(torch.nn.NLLLoss().state_dict()) == []
