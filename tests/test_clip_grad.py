"""nn.utils.clip_grad_norm_ and clip_grad_value_ do what torch's do: the same clipped
gradients and the same total norm, for every norm order, checked against torch where
it is installed."""

import math

import numpy as np
import pytest

import tinylm
from tinylm import nn


def _twin_grads(seed=0):
    """tinylm and torch parameters holding the same float64 gradients."""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: the comparison with torch needs it")
    rng = np.random.default_rng(seed)
    grads = [3.0 * rng.standard_normal(s) for s in [(3, 4), (4,), (2, 3, 2)]]
    ours = [nn.Parameter(np.zeros(g.shape)) for g in grads]
    theirs = [torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64)) for g in grads]
    for a, b, g in zip(ours, theirs, grads):
        a.grad, b.grad = tinylm.Tensor(g.copy()), torch.from_numpy(g.copy())
    return ours, theirs


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3, 0.5, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_of_any_order_clips_and_returns_torchs_norm(norm_type, max_norm):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    ours, theirs = _twin_grads()
    norm = nn.utils.clip_grad_norm_(ours, max_norm, norm_type=norm_type)
    their_norm = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type=norm_type)
    assert isinstance(norm, float)  # a Python float; torch's is a 0-d tensor of the same value
    assert norm == pytest.approx(their_norm.item(), rel=1e-12)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-12)


def test_clip_grad_norm_with_no_gradients_returns_zero_and_refuses_nonfinite_norms_when_asked():
    assert nn.utils.clip_grad_norm_([nn.Parameter(np.ones(2))], 1.0) == 0.0
    p = nn.Parameter(np.zeros(2))
    p.grad = tinylm.Tensor(np.array([np.inf, 1.0]))
    with pytest.raises(RuntimeError, match="norm of order 2.0 of the gradients is inf"):
        nn.utils.clip_grad_norm_(p, 1.0, error_if_nonfinite=True)
    with pytest.raises(ValueError, match="norm_type must be > 0"):
        nn.utils.clip_grad_norm_(p, 1.0, norm_type=0)


def test_clip_grad_value_clamps_every_element_as_torch():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    ours, theirs = _twin_grads()
    assert nn.utils.clip_grad_value_(ours, 1.5) is None
    torch.nn.utils.clip_grad_value_(theirs, 1.5)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a.grad.numpy(), b.grad.numpy())
    assert max(np.abs(a.grad.numpy()).max() for a in ours) == 1.5


def test_clip_grad_value_keeps_float32_gradients_float32():
    p = nn.Parameter(np.zeros(3, np.float32))
    p.grad = tinylm.Tensor(np.array([-5.0, 0.5, 5.0], np.float32))
    nn.utils.clip_grad_value_([p], 1)
    assert p.grad.dtype == np.float32
    np.testing.assert_array_equal(p.grad.numpy(), [-1.0, 0.5, 1.0])
