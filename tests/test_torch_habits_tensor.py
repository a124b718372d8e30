"""PyTorch habits on tensors work as in PyTorch: max(dim), dim/keepdim, the familiar
Tensor methods and the top-level constructors and grad modes (in-place updates:
test_torch_habits_in_place.py).

Tests that compare with PyTorch ask for the ``torch`` fixture, which skips them (saying
why) where PyTorch is not installed; the rest run everywhere.
"""

import math

import numpy as np
import pytest

import tinylm


@pytest.fixture
def torch():
    return pytest.importorskip("torch", reason="PyTorch is not installed: the PyTorch comparisons need it "
                                                "(.ci/run installs it)")


def leaf(shape, seed=0, dtype=np.float64):
    return tinylm.tensor(np.random.default_rng(seed).standard_normal(shape).astype(dtype), requires_grad=True)


def same_as_torch(torch, fn, torch_fn, *arrays):
    """Run ``fn`` on tinylm leaves and ``torch_fn`` on torch leaves made from ``arrays``
    (float64), backward the same random weighting, and compare values and gradients."""
    ours = [tinylm.tensor(a.copy(), requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    y, ty = fn(*ours), torch_fn(*theirs)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    w = np.random.default_rng(1).standard_normal(y.shape)
    (y * tinylm.tensor(w)).sum().backward()
    (ty * torch.tensor(w)).sum().backward()
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ max and min


def test_max_with_dim_returns_values_and_indices_like_torch(torch):
    a = np.array([[1.0, 5.0, 5.0], [7.0, 0.0, 3.0]])
    for name in ("max", "min"):
        for keepdim in (False, True):
            ours = getattr(tinylm.tensor(a), name)(1, keepdim=keepdim)
            theirs = getattr(torch.tensor(a), name)(1, keepdim=keepdim)
            values, indices = ours  # a pair, as in PyTorch
            np.testing.assert_array_equal(values.numpy(), theirs.values.numpy())
            np.testing.assert_array_equal(ours.indices.numpy(), theirs.indices.numpy())
            assert indices.dtype == np.int64
    same_as_torch(torch, lambda x: x.max(dim=1).values, lambda x: x.max(dim=1).values, a)  # a tie: to the index
    same_as_torch(torch, lambda x: x.min(0).values, lambda x: x.min(0).values, a)


def test_max_without_dim_is_the_scalar_and_ties_share_the_gradient(torch):
    a = np.array([[1.0, 5.0], [5.0, 0.0]])
    assert tinylm.tensor(a).max().shape == () and tinylm.tensor(a).max().item() == 5.0
    same_as_torch(torch, lambda x: x.max(), lambda x: x.max(), a)
    same_as_torch(torch, lambda x: x.min(), lambda x: x.min(), a)


def test_max_and_min_along_a_dim_pass_gradcheck():
    x = leaf((3, 4))
    assert tinylm.gradcheck(lambda t: t.max(dim=-1).values, x)
    assert tinylm.gradcheck(lambda t: t.min(dim=0, keepdim=True).values, x)
    assert tinylm.gradcheck(lambda t: t.amin((0, 1)), x)


# ------------------------------------------------------------------ dim and keepdim


@pytest.mark.parametrize("name", ["sum", "mean", "amax", "amin", "var", "std", "norm"])
def test_reductions_take_dim_and_keepdim_like_torch(torch, name):
    a = np.random.default_rng(0).standard_normal((2, 3, 4))
    for kwargs in ({}, {"dim": 1}, {"dim": (0, 2)}, {"dim": -1, "keepdim": True}):
        same_as_torch(torch, lambda x: getattr(x, name)(**kwargs), lambda x: getattr(x, name)(**kwargs), a)


def test_axis_and_keepdims_stay_as_aliases():
    x = tinylm.tensor(np.arange(6.0).reshape(2, 3))
    assert x.sum(axis=1, keepdims=True).shape == (2, 1)
    assert x.mean(axis=0).shape == (3,)
    assert x.softmax(axis=0).shape == (2, 3)
    with pytest.raises(TypeError, match="both dim"):
        x.sum(dim=0, axis=1)


def test_argmax_and_argmin_like_torch(torch):
    a = np.array([[1.0, 5.0, 5.0], [7.0, 0.0, 7.0]])
    for name in ("argmax", "argmin"):
        for kwargs in ({}, {"dim": 0}, {"dim": 1, "keepdim": True}):
            ours = getattr(tinylm.tensor(a), name)(**kwargs)
            theirs = getattr(torch.tensor(a), name)(**kwargs)
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
            assert ours.dtype == np.int64 and not ours.requires_grad


def test_softmax_and_log_softmax_take_dim(torch):
    a = np.random.default_rng(0).standard_normal((3, 4))
    same_as_torch(torch, lambda x: x.softmax(dim=0), lambda x: x.softmax(dim=0), a)
    same_as_torch(torch, lambda x: tinylm.log_softmax(x, dim=1),
                  lambda x: torch.log_softmax(x, dim=1), a)


def test_var_takes_unbiased_and_correction(torch):
    a = np.random.default_rng(0).standard_normal((3, 5))
    same_as_torch(torch, lambda x: x.var(1, unbiased=False), lambda x: x.var(1, unbiased=False), a)
    same_as_torch(torch, lambda x: x.std(0, correction=0), lambda x: x.std(0, correction=0), a)
    same_as_torch(torch, lambda x: x.var(correction=2), lambda x: x.var(correction=2), a)


# ------------------------------------------------------------------ shape facts


def test_size_is_a_method_and_numel_and_dim_are_there(torch):
    x = tinylm.zeros(2, 3, 4)
    t = torch.zeros(2, 3, 4)
    assert x.size() == tuple(t.size()) == x.shape
    assert x.size(1) == t.size(1) and x.size(-1) == t.size(-1)
    assert x.numel() == t.numel() == 24 and x.dim() == t.dim() == 3


# ------------------------------------------------------------------ tensor methods


def test_shape_methods_like_torch(torch):
    a = np.random.default_rng(0).standard_normal((2, 1, 3, 1))
    for method, args in [("view", (3, 2)), ("view", (-1,)), ("flatten", ()), ("flatten", (1, 2)),
                         ("unsqueeze", (0,)), ("unsqueeze", (-1,)), ("squeeze", ()), ("squeeze", (1,)),
                         ("squeeze", (0,)), ("clone", ())]:
        same_as_torch(torch, lambda x: getattr(x, method)(*args), lambda x: getattr(x, method)(*args), a)


def test_clone_is_in_the_graph_and_owns_its_array():
    x = leaf((2, 3))
    y = x.clone()
    assert y.data is not x.data and y.creator is not None
    assert tinylm.gradcheck(lambda t: t.clone(), x)


@pytest.mark.parametrize("method, args", [
    ("abs", ()), ("clamp", (-0.5, 0.5)), ("clamp", (None, 0.2)), ("pow", (3.0,)),
    ("norm", ()), ("norm", (1, 0)), ("norm", (3, 1, True)), ("var", (1,)), ("std", ()),
])
def test_differentiable_methods_pass_gradcheck_and_match_torch(torch, method, args):
    a = np.random.default_rng(0).standard_normal((3, 4))
    a[0, 0] = 0.9  # clear of every kink above, so finite differences see a smooth function
    assert tinylm.gradcheck(lambda t: getattr(t, method)(*args), tinylm.tensor(a, requires_grad=True))
    same_as_torch(torch, lambda x: getattr(x, method)(*args), lambda x: getattr(x, method)(*args), a)


def test_gradients_at_the_kinks_are_torchs(torch):
    a = np.array([[0.0, -1.0, 0.5, 1.0]])
    same_as_torch(torch, lambda x: x.abs(), lambda x: x.abs(), a)
    same_as_torch(torch, lambda x: x.clamp(-1.0, 0.5), lambda x: x.clamp(-1.0, 0.5), a)  # bounds pass
    same_as_torch(torch, lambda x: (x * 0.0).norm(), lambda x: (x * 0.0).norm(), a)  # 0, not nan
    same_as_torch(torch, lambda x: x.norm(p=math.inf), lambda x: x.norm(p=math.inf), a)


def test_conversions_and_tolist():
    x = tinylm.tensor([1.5, -2.0])
    assert x.double().dtype == np.float64 and x.double().float().dtype == np.float32
    assert x.long().dtype == np.int64 and x.long().tolist() == [1, -2]
    assert x.tolist() == [1.5, -2.0] and tinylm.tensor(3.0).tolist() == 3.0


# ------------------------------------------------------------------ top level


def test_constructors_like_torch(torch):
    assert tinylm.zeros(2, 3).dtype == np.float32 and tinylm.zeros((2, 3)).shape == (2, 3)
    np.testing.assert_array_equal(tinylm.ones(2).numpy(), torch.ones(2).numpy())
    np.testing.assert_array_equal(tinylm.full((2,), 7.0).numpy(), torch.full((2,), 7.0).numpy())
    x = tinylm.tensor([[1.0, 2.0]], dtype=np.float64)
    for name in ("zeros_like", "ones_like"):
        made = getattr(tinylm, name)(x)
        assert made.shape == x.shape and made.dtype == np.float64
    assert tinylm.full_like(x, 3.0).tolist() == [[3.0, 3.0]]
    for args in [(5,), (1, 4), (0, 1, 0.25), (2.0, 5.0, 0.5)]:
        ours, theirs = tinylm.arange(*args), torch.arange(*args)
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
        assert ours.dtype == (np.int64 if theirs.dtype == torch.int64 else np.float32)
    assert tinylm.zeros(2, requires_grad=True).requires_grad


def test_random_constructors_repeat_after_manual_seed():
    tinylm.manual_seed(3)
    first = tinylm.randn(2, 3), tinylm.rand(4)
    tinylm.manual_seed(3)
    again = tinylm.randn(2, 3), tinylm.rand(4)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert first[0].dtype == np.float32 and first[1].shape == (4,)
    assert 0.0 <= first[1].numpy().min() and first[1].numpy().max() < 1.0


def test_cat_is_concat_with_dim(torch):
    a, b = np.ones((2, 1)), np.zeros((2, 2))
    ours = tinylm.cat([tinylm.tensor(a), tinylm.tensor(b)], dim=1)
    np.testing.assert_array_equal(ours.numpy(), torch.cat([torch.tensor(a), torch.tensor(b)], dim=1).numpy())


def test_grad_modes():
    x = tinylm.tensor([1.0], requires_grad=True)
    with tinylm.no_grad():
        assert not (x * 2.0).requires_grad
        with tinylm.enable_grad():
            assert (x * 2.0).requires_grad
    with tinylm.inference_mode():
        assert not tinylm.is_grad_enabled()
    with tinylm.set_grad_enabled(False):
        assert not (x * 2.0).requires_grad
    assert tinylm.is_grad_enabled()
    tinylm.set_grad_enabled(False)  # called, not used with `with`: stays off
    try:
        assert not tinylm.is_grad_enabled()
    finally:
        tinylm.set_grad_enabled(True)


def test_mixing_dtypes_is_refused_and_the_error_says_why():
    with pytest.raises(TypeError, match="never promotes silently"):
        tinylm.tensor([1.0]) + tinylm.tensor([1.0], dtype=np.float64)
    with pytest.raises(TypeError, match="does not convert silently"):
        tinylm.cat([tinylm.tensor([1.0]), tinylm.tensor([1.0], dtype=np.float64)])
