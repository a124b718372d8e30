"""Every op's backward agrees with finite differences (tinylm.gradcheck, float64),
over drawn shapes, including size-0 and size-1 axes, broadcasting, and non-contiguous
inputs."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import broadcast_pairs, leaf, nonempty_shapes, seeds, shapes

import tinylm
from tinylm import ops

BINARY = {
    "add": (ops.add, "normal", "normal"),
    "sub": (ops.sub, "normal", "normal"),
    "mul": (ops.mul, "normal", "normal"),
    "div": (ops.div, "normal", "away_from_zero"),
    "pow": (ops.pow, "positive", "normal"),
}


@pytest.mark.parametrize("name", BINARY)
@given(pair=broadcast_pairs, seed=seeds, noncontiguous=st.booleans())
def test_binary_op_gradients_under_broadcasting(name, pair, seed, noncontiguous):
    op, kind_a, kind_b = BINARY[name]
    shape_a, shape_b = pair.input_shapes
    a = leaf(shape_a, seed, noncontiguous, kind_a)
    b = leaf(shape_b, seed + 1, False, kind_b)
    out = op(a, b)
    assert out.shape == pair.result_shape
    assert tinylm.gradcheck(op, a, b)


SCALAR_FORMS = {
    "x + 2": (lambda x: x + 2.0, "normal"),
    "2 + x": (lambda x: 2.0 + x, "normal"),
    "x - 2": (lambda x: x - 2.0, "normal"),
    "2 - x": (lambda x: 2.0 - x, "normal"),
    "3 * x": (lambda x: 3.0 * x, "normal"),
    "x / 3": (lambda x: x / 3.0, "normal"),
    "3 / x": (lambda x: 3.0 / x, "away_from_zero"),
    "x ** 3": (lambda x: x**3, "normal"),
    "x ** 0.5": (lambda x: x**0.5, "positive"),
    "2 ** x": (lambda x: 2.0**x, "normal"),
    "x ** x": (lambda x: x**x, "positive"),
    "-x": (lambda x: -x, "normal"),
}


@pytest.mark.parametrize("form", SCALAR_FORMS)
@given(shape=shapes, seed=seeds, noncontiguous=st.booleans())
def test_scalar_operand_forms(form, shape, seed, noncontiguous):
    fn, kind = SCALAR_FORMS[form]
    x = leaf(shape, seed, noncontiguous, kind)
    assert fn(x).dtype == np.float64  # the scalar took the tensor's dtype
    assert tinylm.gradcheck(fn, x)


UNARY = {
    "exp": (ops.exp, np.exp, "normal"),
    "log": (ops.log, np.log, "positive"),
    "sqrt": (ops.sqrt, np.sqrt, "positive"),
    "tanh": (ops.tanh, np.tanh, "normal"),
    "sigmoid": (ops.sigmoid, lambda x: 1 / (1 + np.exp(-x)), "normal"),
    "relu": (ops.relu, lambda x: np.maximum(x, 0), "away_from_zero"),
    "gelu": (
        ops.gelu,
        lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))),
        "normal",
    ),
}


@pytest.mark.parametrize("name", UNARY)
@given(shape=shapes, seed=seeds, noncontiguous=st.booleans())
def test_unary_op_values_and_gradients(name, shape, seed, noncontiguous):
    op, reference, kind = UNARY[name]
    x = leaf(shape, seed, noncontiguous, kind)
    np.testing.assert_allclose(op(x).numpy(), reference(x.numpy()), rtol=1e-12, atol=1e-12)
    assert tinylm.gradcheck(op, x)


@st.composite
def shape_and_axes(draw, nonempty_reduction=False):
    shape = draw(shapes)
    axes = draw(st.one_of(st.none(), st.lists(st.integers(0, max(len(shape) - 1, 0)), unique=True,
                                              max_size=len(shape))))
    if axes is not None and len(shape) == 0:
        axes = []
    if axes is not None and len(axes) == 1 and draw(st.booleans()):
        axes = axes[0] - len(shape) * draw(st.integers(0, 1))  # a single int, maybe negative
    elif axes is not None:
        axes = tuple(axes)
    return shape, axes


@pytest.mark.parametrize("name", ["sum", "mean", "amax"])
@given(shape_axes=shape_and_axes(), keepdims=st.booleans(), seed=seeds, noncontiguous=st.booleans())
def test_reductions_match_numpy_and_gradcheck(name, shape_axes, keepdims, seed, noncontiguous):
    shape, axis = shape_axes
    x = leaf(shape, seed, noncontiguous)
    reduced = range(len(shape)) if axis is None else ([axis] if isinstance(axis, int) else axis)
    if name == "amax" and any(shape[a] == 0 for a in reduced):
        with pytest.raises(ValueError, match="max"):
            ops.amax(x, axis, keepdims)
        return
    if name == "mean":
        assume(all(shape[a] > 0 for a in reduced))  # a mean over nothing is nan, not a gradient test
    op = getattr(ops, name)
    expected = getattr(np, {"sum": "sum", "mean": "mean", "amax": "max"}[name])(x.numpy(), axis=axis, keepdims=keepdims)
    np.testing.assert_allclose(op(x, axis, keepdims).numpy(), expected, rtol=1e-12)
    assert tinylm.gradcheck(lambda t: op(t, axis, keepdims), x)


def test_max_splits_the_gradient_between_ties():
    x = tinylm.tensor([[1.0, 3.0, 3.0], [2.0, 0.0, -1.0]], requires_grad=True)
    ops.amax(x, axis=1).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 0.5, 0.5], [1, 0, 0]])


@st.composite
def matmul_shapes(draw):
    n, k, m = (draw(st.integers(0, 4)) for _ in range(3))
    batch = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=3)).input_shapes
    kind = draw(st.sampled_from(["matrix", "vector @ matrix", "matrix @ vector", "vector @ vector"]))
    a = (k,) if kind.startswith("vector") else batch[0] + (n, k)
    b = (k,) if kind.endswith("vector") else batch[1] + (k, m)
    return a, b


@given(ab=matmul_shapes(), seed=seeds, noncontiguous=st.booleans())
def test_matmul_matches_numpy_and_gradcheck(ab, seed, noncontiguous):
    shape_a, shape_b = ab
    a, b = leaf(shape_a, seed, noncontiguous), leaf(shape_b, seed + 1)
    np.testing.assert_allclose((a @ b).numpy(), a.numpy() @ b.numpy(), rtol=1e-12, atol=1e-12)
    assert tinylm.gradcheck(ops.matmul, a, b)


@given(shape=nonempty_shapes, seed=seeds, noncontiguous=st.booleans())
def test_reshape_and_permute_gradcheck(shape, seed, noncontiguous):
    x = leaf(shape, seed, noncontiguous)
    assert tinylm.gradcheck(lambda t: t.reshape(-1), x)
    assert tinylm.gradcheck(lambda t: t.reshape(*reversed(shape)), x)
    dims = tuple(reversed(range(len(shape))))
    assert tinylm.gradcheck(lambda t: t.permute(*dims) * 1.5, x)
    assert tinylm.gradcheck(lambda t: t.transpose(0, -1), x)


@given(shape=nonempty_shapes, seed=seeds, data=st.data())
def test_basic_indexing_gradcheck(shape, seed, data):
    x = leaf(shape, seed)
    start = data.draw(st.integers(0, shape[0]))
    step = data.draw(st.integers(1, 3))
    assert tinylm.gradcheck(lambda t: t[start::step], x)
    assert tinylm.gradcheck(lambda t: t[..., None, -1], x)


@given(shape=nonempty_shapes, seed=seeds, data=st.data())
def test_integer_array_indexing_adds_repeated_reads(shape, seed, data):
    x = leaf(shape, seed)
    index = np.array(data.draw(st.lists(st.integers(-shape[0], shape[0] - 1), max_size=6)), dtype=np.int64)
    assert tinylm.gradcheck(lambda t: t[index] * 2.0, x)
    mask = x.numpy() > 0
    assert tinylm.gradcheck(lambda t: t[mask], x)


@given(seed=seeds, data=st.data())
def test_multidimensional_and_mixed_index_arrays(seed, data):
    x = leaf((4, 3, 2), seed)
    rows = np.array(data.draw(st.lists(st.integers(0, 3), min_size=1, max_size=6))).reshape(-1, 1)  # (n, 1)
    cols = np.array(data.draw(st.lists(st.integers(-3, 2), min_size=1, max_size=3)))  # broadcasts to (n, m)
    assert tinylm.gradcheck(lambda t: t[rows, cols], x)
    assert tinylm.gradcheck(lambda t: t[:, (0, 0, 2), 1], x)  # a tuple inside the index reads twice too


def test_repeated_index_gradient_counts_every_read():
    x = tinylm.tensor([1.0, 2.0, 3.0], requires_grad=True)
    x[tinylm.tensor([0, 0, 2, 0])].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 0.0, 1.0])


@given(shape=nonempty_shapes, seed=seeds, pieces=st.integers(1, 3), data=st.data())
def test_concat_stack_split_gradcheck(shape, seed, pieces, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    xs = [leaf(shape, seed + i, noncontiguous=i == 0) for i in range(pieces)]
    assert tinylm.gradcheck(lambda *ts: ops.concat(ts, axis), *xs)
    assert tinylm.gradcheck(lambda *ts: ops.stack(ts, axis), *xs)
    size = data.draw(st.integers(1, 3))
    assert tinylm.gradcheck(lambda t: ops.split(t, size, axis), xs[0])
    # Only the first piece reaches the output: the others send no gradient.
    assert tinylm.gradcheck(lambda t: ops.split(t, size, axis)[0] * 3.0, xs[0])


def test_split_by_sizes_returns_pytorch_pieces():
    x = tinylm.tensor(np.arange(10.0))
    assert [p.shape for p in ops.split(x, 4)] == [(4,), (4,), (2,)]
    assert [p.shape for p in ops.split(x, [1, 9])] == [(1,), (9,)]


@given(pair=broadcast_pairs, seed=seeds)
def test_where_and_masked_fill_gradcheck(pair, seed):
    shape_a, shape_b = pair.input_shapes
    a, b = leaf(shape_a, seed), leaf(shape_b, seed + 1)
    condition = np.random.default_rng(seed).random(pair.result_shape) > 0.5
    assert tinylm.gradcheck(lambda s, t: ops.where(tinylm.Tensor(condition), s, t), a, b)
    x = leaf(pair.result_shape, seed + 2)
    mask = np.random.default_rng(seed + 3).random(shape_a) > 0.5
    if np.broadcast_shapes(mask.shape, x.shape) == x.shape:
        filled = ops.masked_fill(x, mask, -np.inf)
        assert np.all(filled.numpy()[np.broadcast_to(mask, x.shape)] == -np.inf)
        assert tinylm.gradcheck(lambda t: ops.masked_fill(t, mask, 0.0), x)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4), seed=seeds,
       noncontiguous=st.booleans(), data=st.data())
def test_softmax_family_gradcheck(name, shape, seed, noncontiguous, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = leaf(shape, seed, noncontiguous)
    op = getattr(ops, name)
    assert tinylm.gradcheck(lambda t: op(t, axis), x)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_family_is_stable_for_huge_logits_and_minus_inf(name):
    x = tinylm.tensor([[1e4, -1e4, 0.0, -np.inf]], dtype=np.float32)
    y = getattr(ops, name)(x).numpy()
    expected_softmax = np.array([[1.0, 0.0, 0.0, 0.0]])
    if name == "softmax":
        np.testing.assert_array_equal(y, expected_softmax)
    else:
        np.testing.assert_allclose(y[0, :3], [0.0, -2e4, -1e4])
        assert y[0, 3] == -np.inf


@pytest.mark.parametrize("backend", ["numpy", "cython"])
@given(seed=seeds, ids_shape=shapes, dim=st.integers(0, 5), vocab=st.integers(1, 6))
def test_embedding_gradcheck_on_each_cpu_backend(backend, seed, ids_shape, dim, vocab):
    ids = np.random.default_rng(seed).integers(0, vocab, size=ids_shape)
    weight = leaf((vocab, dim), seed)
    with tinylm.use_backend(backend):
        assert tinylm.gradcheck(lambda w: ops.embedding(ids, w), weight)


def test_astype_passes_gradients_back_in_the_source_dtype():
    x = tinylm.tensor([1.0, -2.0], requires_grad=True, dtype=np.float64)
    y = x.astype(np.float32) * 3.0
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float64
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])


@given(seed=seeds)
def test_a_small_network_gradcheck(seed):
    """Ops composed the way a model composes them: the chain rule across all of them."""
    x, w1, w2 = leaf((3, 4), seed), leaf((4, 5), seed + 1), leaf((5, 2), seed + 2)
    def net(x, w1, w2):
        h = ops.gelu(x @ w1).tanh()
        return ops.log_softmax(h @ w2, -1).mean()
    assert tinylm.gradcheck(net, x, w1, w2)


# ---------------------------------------------------- fused ops, on each CPU backend's kernels

from tinylm.ops.attention_softmax import attention_softmax  # noqa: E402
from tinylm.ops.cross_entropy import cross_entropy  # noqa: E402
from tinylm.ops.dropout import dropout  # noqa: E402
from tinylm.ops.layer_norm import layer_norm  # noqa: E402


@pytest.mark.parametrize("backend", ["numpy", "cython"])
@given(seed=seeds, rows=st.integers(1, 4), width=st.integers(1, 6), affine=st.sampled_from(["none", "weight", "both"]))
def test_layer_norm_gradcheck_on_each_cpu_backend(backend, seed, rows, width, affine):
    x = leaf((2, rows, width), seed)
    weight = leaf((width,), seed + 1) if affine != "none" else None
    bias = leaf((width,), seed + 2) if affine == "both" else None
    params = [t for t in (weight, bias) if t is not None]
    with tinylm.use_backend(backend):
        assert tinylm.gradcheck(lambda x, *wb: layer_norm(x, width, *wb), x, *params)


@pytest.mark.parametrize("backend", ["numpy", "cython"])
@given(seed=seeds, length=st.integers(1, 5), keys=st.integers(1, 5), causal=st.booleans(), masked=st.booleans())
def test_attention_softmax_gradcheck_on_each_cpu_backend(backend, seed, length, keys, causal, masked):
    scores = leaf((2, length, keys), seed)
    rng = np.random.default_rng(seed)
    mask = np.where(rng.random((length, keys)) < 0.3, -np.inf, rng.standard_normal((length, keys))) if masked else None
    with tinylm.use_backend(backend):
        assert tinylm.gradcheck(lambda s: attention_softmax(s, 0.7, mask, causal), scores)


@pytest.mark.parametrize("backend", ["numpy", "cython"])
@given(seed=seeds, lead=st.sampled_from([(2,), (3,), (2, 2), (1, 3)]), length=st.integers(1, 4),
       keys=st.integers(1, 5), causal=st.booleans(), masked=st.booleans())
def test_attention_softmax_gradcheck_with_a_key_padding_mask(backend, seed, lead, length, keys, causal, masked):
    """Scores (B, L, S) or (B, nh, L, S), padding keys dropped per batch row (a whole row
    sometimes); a padded key's score gets gradient exactly 0."""
    scores = leaf(lead + (length, keys), seed)
    rng = np.random.default_rng(seed)
    padding = rng.random((lead[0], keys)) < 0.4
    if rng.random() < 0.3:
        padding[0] = True  # batch row 0 is all padding: its probabilities and gradients are 0
    mask = np.where(rng.random((length, keys)) < 0.3, -np.inf, rng.standard_normal((length, keys))) if masked else None
    weights, fresh = tinylm.Tensor(rng.standard_normal(scores.shape)), leaf(scores.shape, seed)
    with tinylm.use_backend(backend):
        assert tinylm.gradcheck(lambda s: attention_softmax(s, 0.7, mask, causal, padding), scores)
        (attention_softmax(fresh, 0.7, mask, causal, padding) * weights).sum().backward()
    padded = np.broadcast_to(padding.reshape(padding.shape[:1] + (1,) * len(lead) + (keys,)), scores.shape)
    assert np.all(fresh.grad.numpy()[padded] == 0)


@pytest.mark.parametrize("backend", ["numpy", "cython"])
@given(seed=seeds, rows=st.integers(1, 5), classes=st.integers(1, 6),
       reduction=st.sampled_from(["mean", "sum", "none"]))
def test_cross_entropy_gradcheck_on_each_cpu_backend(backend, seed, rows, classes, reduction):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, classes, rows)
    targets[1:][rng.random(rows - 1) < 0.3] = -100  # row 0 counts: an all-ignored mean is NaN
    with tinylm.use_backend(backend):
        assert tinylm.gradcheck(lambda x: cross_entropy(x, targets, -100, reduction), leaf((rows, classes), seed))


@pytest.mark.parametrize("backend", ["numpy", "cython"])
@given(seed=seeds, shape=nonempty_shapes, p=st.sampled_from([0.0, 0.3, 0.9]))
def test_dropout_gradcheck_on_each_cpu_backend(backend, seed, shape, p):
    x = leaf(shape, seed)
    with tinylm.use_backend(backend):
        # A fresh generator of the same seed per call: the mask stays fixed while
        # gradcheck perturbs x, as the derivative assumes.
        assert tinylm.gradcheck(lambda t: dropout(t, p, generator=np.random.default_rng(seed)), x)


@given(seed=seeds, lead=hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=3),
       sizes=st.tuples(st.integers(1, 4), st.integers(1, 4)), bias=st.booleans(), noncontiguous=st.booleans())
def test_linear_gradcheck(seed, lead, sizes, bias, noncontiguous):
    """The fused x Wᵀ + b op against finite differences, and against matmul + add."""
    from tinylm.nn import functional as F

    k, m = sizes
    x, weight = leaf(lead + (k,), seed, noncontiguous), leaf((m, k), seed + 1)
    params = (weight, leaf((m,), seed + 2)) if bias else (weight,)
    assert tinylm.gradcheck(lambda x, *p: F.linear(x, *p), x, *params)
    expected = x.numpy() @ weight.numpy().T + (params[1].numpy() if bias else 0)
    np.testing.assert_allclose(F.linear(x, *params).numpy(), expected, rtol=1e-12)


def test_cross_entropy_refuses_targets_of_another_shape_with_the_same_size():
    # logits (N, C, d) need targets (N, d): (d, N) has as many elements but would pair
    # each position with another position's target.
    import tinylm.nn.functional as F

    logits = tinylm.Tensor(np.zeros((2, 5, 3), np.float32))
    with pytest.raises(ValueError, match=r"cross_entropy: targets \(3, 2\) must be \(N, d1, \.\.\.\) = \(2, 3\)"):
        F.cross_entropy(logits, np.zeros((3, 2), np.int64))
    assert F.cross_entropy(logits, [[0, 1, 2], [3, 4, 0]], reduction="none").shape == (2, 3)  # a nested list works


def test_attention_softmax_refuses_a_key_padding_mask_it_cannot_use():
    scores = tinylm.Tensor(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"attention_softmax: key_padding_mask \(3, 4\) must be \(B, S\) for scores "
                                         r"\(B, \.\.\., L, S\) = \(2, 3, 4\)"):
        attention_softmax(scores, 1.0, key_padding_mask=np.zeros((3, 4), bool))
    with pytest.raises(ValueError, match=r"key_padding_mask \(3,\) must be \(B, S\) .* = \(3, 4\)"):
        attention_softmax(tinylm.Tensor(np.zeros((3, 4))), 1.0, key_padding_mask=np.zeros(3, bool))
    with pytest.raises(TypeError, match="attention_softmax: key_padding_mask must be bool .* got float64"):
        attention_softmax(scores, 1.0, key_padding_mask=np.zeros((2, 4)))
    with pytest.raises(ValueError, match="attention_softmax: key_padding_mask is a constant"):
        attention_softmax(scores, 1.0, key_padding_mask=tinylm.Tensor(np.zeros((2, 4)), requires_grad=True))
    padding = np.array([[False, True, False, False], [True, True, False, True]])
    want = attention_softmax(scores, 1.0, key_padding_mask=padding).numpy()  # a constant Tensor and a list work too
    np.testing.assert_array_equal(attention_softmax(scores, 1.0, key_padding_mask=tinylm.Tensor(padding)).numpy(), want)
    np.testing.assert_array_equal(attention_softmax(scores, 1.0, key_padding_mask=padding.tolist()).numpy(), want)
    np.testing.assert_array_equal(want[1], [[0, 0, 1, 0]] * 3)


def test_attention_softmax_takes_a_constant_tensor_mask():
    scores = tinylm.Tensor(np.random.default_rng(0).standard_normal((2, 3, 4)))
    mask = np.where(np.tri(3, 4, dtype=bool), 0.0, -np.inf)
    want = attention_softmax(scores, 0.5, mask).data
    np.testing.assert_array_equal(attention_softmax(scores, 0.5, tinylm.Tensor(mask)).data, want)
    with pytest.raises(ValueError, match="attention_softmax: mask is a constant"):
        attention_softmax(scores, 0.5, tinylm.Tensor(mask, requires_grad=True))
