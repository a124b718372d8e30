"""Tensor.register_post_accumulate_grad_hook: once per backward, on the complete gradient,
during the pass (torch's rule)."""

import numpy as np
import pytest

import tinylm
from tinylm import nn
from tinylm.autograd import Function


def leaf(*shape, seed=0):
    return tinylm.Tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=True)


def recorder(seen):
    """A hook that records (name, a copy of the gradient it saw)."""
    def make(name):
        return lambda t: seen.append((name, t.grad.numpy().copy()))
    return make


def test_fires_once_with_the_complete_gradient_of_a_shared_weight():
    w, x = leaf(3), leaf(3, seed=1)
    seen = []
    w.register_post_accumulate_grad_hook(recorder(seen)("w"))
    y = (w * x).sum() + (w * w).sum() + (w.tanh() * 2).sum()  # four edges into w
    y.backward()
    assert [name for name, _ in seen] == ["w"]
    np.testing.assert_array_equal(seen[0][1], w.grad.numpy())
    expected = x.numpy() + 2 * w.numpy() + 2 * (1 - np.tanh(w.numpy()) ** 2)
    np.testing.assert_allclose(w.grad.numpy(), expected, rtol=1e-12)


def test_order_follows_the_backward_pass_and_fires_during_it():
    a, b, c = leaf(2), leaf(2, seed=1), leaf(2, seed=2)
    fired = []

    def hook(name):
        def record(t):
            # while c's hook runs, backward has not yet reached b and a
            fired.append((name, b.grad is None, a.grad is None))
        return record

    for name, t in (("a", a), ("b", b), ("c", c)):
        t.register_post_accumulate_grad_hook(hook(name))
    (((a * 2).tanh() * b).tanh() * c).sum().backward()
    assert fired == [("c", True, True), ("b", False, True), ("a", False, False)]


def test_retain_graph_fires_again_on_the_accumulated_gradient():
    w = leaf(4)
    seen = []
    w.register_post_accumulate_grad_hook(recorder(seen)("w"))
    y = (w * w).sum()
    y.backward(retain_graph=True)
    y.backward()
    assert len(seen) == 2
    np.testing.assert_allclose(seen[0][1], 2 * w.numpy(), rtol=1e-12)
    np.testing.assert_allclose(seen[1][1], 4 * w.numpy(), rtol=1e-12)
    np.testing.assert_array_equal(seen[1][1], w.grad.numpy())


def test_removed_hooks_do_not_fire_and_several_run_in_order():
    w = leaf(2)
    calls = []
    first = w.register_post_accumulate_grad_hook(lambda t: calls.append("first"))
    w.register_post_accumulate_grad_hook(lambda t: calls.append("second"))
    (w * 3).sum().backward()
    assert calls == ["first", "second"]
    first.remove()
    first.remove()  # twice is harmless
    (w * 3).sum().backward()
    assert calls == ["first", "second", "second"]


class _FirstInputOnly(Function):
    """x * y whose backward gives no gradient to y (as if y needed none)."""

    def forward(self, x, y):
        self.save_for_backward(y)
        return x * y

    def backward(self, gy):
        (y,) = self.saved
        return gy * y, None


def test_a_leaf_whose_last_contribution_never_comes_fires_at_the_end():
    x, y, z = leaf(3), leaf(3, seed=1), leaf(3, seed=2)
    seen = []
    y.register_post_accumulate_grad_hook(recorder(seen)("y"))
    z.register_post_accumulate_grad_hook(recorder(seen)("z"))
    x.register_post_accumulate_grad_hook(recorder(seen)("x"))
    # y: one edge gives a gradient, one (the custom op) gives None; z: only None
    (_FirstInputOnly()(x, y) + (y * 2) + _FirstInputOnly()(x, z)).sum().backward()
    assert [name for name, _ in seen] == ["x", "y"]  # y at the end, z never (no gradient)
    np.testing.assert_array_equal(seen[1][1], y.grad.numpy())
    assert z.grad is None


def test_backward_on_the_leaf_itself_and_a_model_with_every_parameter():
    w = leaf(2)
    seen = []
    w.register_post_accumulate_grad_hook(recorder(seen)("w"))
    w.backward(np.ones(2))
    assert len(seen) == 1
    tinylm.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    seen = []
    for name, p in model.named_parameters():
        p.register_post_accumulate_grad_hook(recorder(seen)(name))
    x = tinylm.Tensor(np.random.default_rng(3).standard_normal((5, 3)))
    (model(x) ** 2).sum().backward()
    assert sorted(name for name, _ in seen) == sorted(name for name, _ in model.named_parameters())
    assert [name for name, _ in seen][:2] in (["2.bias", "2.weight"], ["2.weight", "2.bias"])  # last layer first
    grads = dict(model.named_parameters())
    for name, grad in seen:
        np.testing.assert_array_equal(grad, grads[name].grad.numpy())


def test_only_leaves_that_require_grad_take_hooks():
    with pytest.raises(RuntimeError, match="does not require grad"):
        tinylm.Tensor(np.zeros(2)).register_post_accumulate_grad_hook(lambda t: None)
    with pytest.raises(RuntimeError, match="only be registered on leaf tensors.*Mul"):
        (leaf(2) * 2).register_post_accumulate_grad_hook(lambda t: None)
    with pytest.raises(TypeError, match="hook must be callable"):
        leaf(2).register_post_accumulate_grad_hook(3)
