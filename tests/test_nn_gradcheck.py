"""Each layer's gradients against finite differences (float64, small sizes), with no
PyTorch involved: these run everywhere."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import leaf, seeds

import tinylm
from tinylm import nn
from tinylm.nn import functional as F


def params_of(module):
    return [p for _, p in module.named_parameters()]


def gradcheck_module(module, call, *inputs):
    """gradcheck with respect to the inputs and every parameter of ``module``: the
    parameters are handed to gradcheck as they are, so its in-place perturbations
    reach the module."""
    params = params_of(module)
    return tinylm.gradcheck(lambda *tensors: call(*tensors[: len(inputs)]), *inputs, *params)


@given(seed=seeds, features=st.integers(1, 3), out=st.integers(1, 3))
def test_linear_gradcheck(seed, features, out):
    tinylm.manual_seed(seed)
    layer = nn.Linear(features, out, dtype=np.float64)
    assert gradcheck_module(layer, layer, leaf((2, features), seed))


@given(seed=seeds, dims=st.lists(st.integers(1, 3), min_size=1, max_size=2))
def test_layer_norm_gradcheck(seed, dims):
    layer = nn.LayerNorm(tuple(dims), dtype=np.float64)
    assert gradcheck_module(layer, layer, leaf((2,) + tuple(dims), seed))


@settings(max_examples=15)
@given(seed=seeds, steps=st.integers(1, 3), layers=st.integers(1, 2), batch_first=st.booleans())
def test_lstm_gradcheck(seed, steps, layers, batch_first):
    tinylm.manual_seed(seed)
    lstm = nn.LSTM(2, 2, num_layers=layers, batch_first=batch_first, dtype=np.float64)
    x = leaf((2, steps, 2) if batch_first else (steps, 2, 2), seed)
    h0, c0 = leaf((layers, 2, 2), seed + 1), leaf((layers, 2, 2), seed + 2)
    assert gradcheck_module(lstm, lambda x, h, c: lstm(x, (h, c)), x, h0, c0)


@settings(max_examples=15)
@given(seed=seeds, causal=st.booleans(), need_weights=st.booleans())
def test_multihead_attention_gradcheck(seed, causal, need_weights):
    tinylm.manual_seed(seed)
    attention = nn.MultiheadAttention(4, 2, dtype=np.float64)
    q, k, v = leaf((1, 3, 4), seed), leaf((1, 3, 4), seed + 1), leaf((1, 3, 4), seed + 2)
    call = lambda q, k, v: attention(q, k, v, is_causal=causal, need_weights=need_weights)  # noqa: E731  (output, weights or None)
    assert gradcheck_module(attention, call, q, k, v)


@given(seed=seeds, rows=st.integers(1, 4), classes=st.integers(1, 4),
       reduction=st.sampled_from(["mean", "sum", "none"]))
def test_cross_entropy_gradcheck(seed, rows, classes, reduction):
    targets = np.random.default_rng(seed).integers(0, classes, size=rows)
    targets[-1] = -100 if rows > 1 else targets[-1]
    assert tinylm.gradcheck(lambda x: F.cross_entropy(x, targets, reduction=reduction), leaf((rows, classes), seed))


@given(seed=seeds, dim=st.integers(1, 3))
def test_scaled_dot_product_attention_gradcheck(seed, dim):
    q, k, v = leaf((2, 3, dim), seed), leaf((2, 4, dim), seed + 1), leaf((2, 4, dim), seed + 2)
    mask = np.random.default_rng(seed).standard_normal((3, 4))
    assert tinylm.gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask), q, k, v)
    assert tinylm.gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), q, k, v)


def test_dropout_gradient_is_the_mask_scaled():
    x = tinylm.tensor(np.ones((50, 40)), requires_grad=True, dtype=np.float64)
    y = F.dropout(x, 0.25, training=True, generator=np.random.default_rng(0))
    y.sum().backward()
    kept = y.numpy() != 0
    np.testing.assert_allclose(y.numpy()[kept], 1 / 0.75)
    np.testing.assert_allclose(x.grad.numpy(), kept / 0.75)
    assert 0.2 < 1 - kept.mean() < 0.3  # about p of them dropped


def test_dropout_is_the_identity_in_eval_mode_and_seeded_in_training():
    layer = nn.Dropout(0.5)
    x = tinylm.tensor(np.ones(100))
    assert layer.eval()(x) is x
    layer.train()
    tinylm.manual_seed(3)
    first = layer(x).numpy()
    tinylm.manual_seed(3)
    np.testing.assert_array_equal(layer(x).numpy(), first)
    assert np.all(nn.Dropout(1.0)(x).numpy() == 0)
    with pytest.raises(ValueError, match="Dropout: p must be in"):
        nn.Dropout(1.5)


@pytest.mark.parametrize("d_model", [1, 4, 7])
def test_sinusoidal_positional_encoding_follows_the_formula(d_model):
    layer = nn.SinusoidalPositionalEncoding(d_model, max_len=10)
    out = layer(tinylm.tensor(np.zeros((2, 6, d_model)))).numpy()
    for pos in range(6):
        for column in range(d_model):
            i2 = column - column % 2  # the 2i of this column's pair
            angle = pos / 10000 ** (i2 / d_model)
            expected = np.sin(angle) if column % 2 == 0 else np.cos(angle)
            np.testing.assert_allclose(out[:, pos, column], expected, rtol=1e-6, atol=1e-7)
    assert list(layer.parameters()) == []
    with pytest.raises(ValueError, match="sequence length 11 is longer than max_len=10"):
        layer(tinylm.tensor(np.zeros((1, 11, d_model))))


def test_positional_encoding_passes_gradients_through():
    layer = nn.SinusoidalPositionalEncoding(5, max_len=8)
    assert tinylm.gradcheck(lambda x: layer(x), leaf((2, 3, 5), 0))


def test_embedding_layer_rejects_bad_ids_on_every_cpu_backend():
    layer = nn.Embedding(10, 3)
    for backend in ("numpy", "cython"):
        with tinylm.use_backend(backend):
            with pytest.raises(IndexError, match="id 10 is out of range for a vocabulary of 10"):
                layer(np.array([1, 10]))


@settings(max_examples=20)
@given(seed=seeds, steps=st.integers(1, 4), batch=st.integers(1, 2), hidden=st.integers(1, 3), data=st.data())
def test_fused_lstm_layer_gradcheck(seed, steps, batch, hidden, data):
    """The fused op, gradient-checked for every input, each of its three outputs in turn used or not."""
    from tinylm.ops.lstm import lstm_layer

    used = data.draw(st.lists(st.booleans(), min_size=3, max_size=3).filter(any))
    inputs = [leaf((steps, batch, 4 * hidden), seed), leaf((4 * hidden, hidden), seed + 1),
              leaf((batch, hidden), seed + 2), leaf((batch, hidden), seed + 3)]
    assert tinylm.gradcheck(lambda *t: tuple(y for y, u in zip(lstm_layer(*t), used) if u), *inputs)


@settings(max_examples=20)
@given(seed=seeds, steps=st.integers(1, 4), batch=st.integers(1, 2), hidden=st.integers(1, 3),
       inputs=st.integers(1, 3), data=st.data())
def test_lstm_layer_from_input_gradcheck(seed, steps, batch, hidden, inputs, data):
    """The op with the input projection inside (x, w_ih, bias, w_hh, h0, c0), gradient-checked
    for every input, each of its three outputs in turn used or not."""
    from tinylm.ops.lstm import lstm_layer_from_input

    used = data.draw(st.lists(st.booleans(), min_size=3, max_size=3).filter(any))
    tensors = [leaf((steps, batch, inputs), seed), leaf((4 * hidden, inputs), seed + 1), leaf((4 * hidden,), seed + 2),
               leaf((4 * hidden, hidden), seed + 3), leaf((batch, hidden), seed + 4), leaf((batch, hidden), seed + 5)]
    assert tinylm.gradcheck(lambda *t: tuple(y for y, u in zip(lstm_layer_from_input(*t), used) if u), *tensors)


@given(seed=seeds, steps=st.integers(1, 4))
def test_fused_lstm_layer_equals_the_cell_composed_from_ops(seed, steps):
    from tinylm import ops
    from tinylm.ops.lstm import lstm_layer

    x_proj, w_hh = leaf((steps, 2, 12), seed), leaf((12, 3), seed + 1)
    h0, c0 = leaf((2, 3), seed + 2), leaf((2, 3), seed + 3)
    hs, h_n, c_n = lstm_layer(x_proj, w_hh, h0, c0)
    h, c, composed = h0, c0, []
    for t in range(steps):
        h, c = nn.lstm_cell(x_proj[t] + h @ w_hh.T, c)
        composed.append(h)
    # Cython forms tanh x as 2σ(2x) - 1: a few ulp
    np.testing.assert_allclose(hs.numpy(), ops.stack(composed).numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(c_n.numpy(), c.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_array_equal(h_n.numpy(), hs.numpy()[-1])


@given(seed=seeds, approximate=st.sampled_from(["none", "tanh"]))
def test_gelu_gradcheck(seed, approximate):
    assert tinylm.gradcheck(lambda x: F.gelu(x, approximate=approximate), leaf((3, 4), seed))


@given(seed=seeds, rows=st.integers(1, 4), classes=st.integers(1, 4),
       reduction=st.sampled_from(["mean", "sum", "none"]), label_smoothing=st.sampled_from([0.0, 0.2]))
def test_weighted_and_smoothed_cross_entropy_and_nll_gradcheck(seed, rows, classes, reduction, label_smoothing):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, classes, size=rows)
    targets[-1] = -100 if rows > 1 else targets[-1]
    weight = rng.random(classes) + 0.1
    assert tinylm.gradcheck(lambda x: F.cross_entropy(x, targets, weight, reduction=reduction,
                                                      label_smoothing=label_smoothing), leaf((rows, classes), seed))
    assert tinylm.gradcheck(lambda x: F.nll_loss(x, targets, weight, reduction=reduction), leaf((rows, classes), seed))


@given(seed=seeds, reduction=st.sampled_from(["mean", "sum", "none"]))
def test_mse_loss_gradcheck(seed, reduction):
    assert tinylm.gradcheck(lambda x, y: F.mse_loss(x, y, reduction), leaf((2, 3), seed), leaf((2, 3), seed + 1))

