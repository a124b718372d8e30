"""In-place updates on tensors: ``+= -= *= /=`` and ``zero_()`` write into the tensor's
array, as in PyTorch, and are refused wherever a graph would need the old value (see
the module docstring of tinylm/autograd.py for the rule).

Tests that compare with PyTorch ask for the ``torch`` fixture, which skips them (saying
why) where PyTorch is not installed.
"""

import numpy as np
import pytest

import tinylm


@pytest.fixture
def torch():
    return pytest.importorskip("torch", reason="PyTorch is not installed: the PyTorch comparisons need it "
                                                "(.ci/run installs it)")


def test_an_sgd_step_under_no_grad_updates_the_parameter_itself():
    p = tinylm.tensor([1.0, 2.0], requires_grad=True)
    (p * p).sum().backward()
    before = p
    with tinylm.no_grad():
        p -= 0.5 * p.grad
    assert p is before and p.requires_grad and p.is_leaf
    np.testing.assert_array_equal(p.numpy(), [0.0, 0.0])


def test_each_in_place_operator_writes_into_the_same_array():
    x = tinylm.tensor([1.0, 2.0])
    array = x.data
    x += 1.0
    x *= tinylm.tensor([2.0, 3.0])
    x -= 1.0
    x /= 2.0
    assert x.data is array
    np.testing.assert_array_equal(x.numpy(), [1.5, 4.0])


def test_in_place_on_a_leaf_that_requires_grad_with_grad_on_raises_torchs_error(torch):
    p = tinylm.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError) as ours:
        p += 1.0
    with pytest.raises(RuntimeError) as theirs:
        tp = torch.tensor([1.0], requires_grad=True)
        tp += 1.0
    assert str(theirs.value) in str(ours.value)


def test_in_place_is_not_recorded_in_a_graph_the_error_names_the_op():
    x = tinylm.tensor([1.0], requires_grad=True)
    y = x * 2.0
    with pytest.raises(RuntimeError, match=r"\*=: tinylm does not record in-place"):
        y *= 3.0
    plain = tinylm.tensor([1.0])
    with pytest.raises(RuntimeError, match=r"\+=: tinylm does not record in-place"):
        plain += x  # would make `plain` depend on x


def test_overwriting_an_array_a_graph_saved_makes_backward_refuse():
    w = tinylm.tensor([3.0], requires_grad=True)
    x = tinylm.tensor([2.0], requires_grad=True)
    y = w * x  # saves x's array for dL/dw
    with tinylm.no_grad():
        x += 1.0
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


def test_in_place_keeps_shape_and_dtype():
    x = tinylm.tensor([1.0, 2.0])
    with pytest.raises(ValueError, match="does not fit in-place"):
        x += tinylm.tensor([[1.0], [2.0]])
    with pytest.raises(TypeError, match="dtypes differ"):
        x += tinylm.tensor([1.0, 2.0], dtype=np.float64)


def test_zero_on_a_gradient_and_requires_grad_():
    p = tinylm.tensor([1.0, 2.0], requires_grad=True)
    (p * 3.0).sum().backward()
    p.grad.zero_()
    np.testing.assert_array_equal(p.grad.numpy(), [0.0, 0.0])
    (p * 3.0).sum().backward()
    np.testing.assert_array_equal(p.grad.numpy(), [3.0, 3.0])
    frozen = tinylm.tensor([1.0]).requires_grad_()
    assert frozen.requires_grad and not frozen.requires_grad_(False).requires_grad
    with pytest.raises(TypeError, match="floating-point"):
        tinylm.tensor([1]).requires_grad_()
