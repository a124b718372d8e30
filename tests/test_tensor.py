"""The Tensor API a user touches first."""

import numpy as np
import pytest

import tinylm


def test_tensor_from_python_numbers_defaults_to_float32_and_int64():
    assert tinylm.tensor([1.0, 2.0]).dtype == np.float32
    assert tinylm.tensor([1, 2]).dtype == np.int64
    assert tinylm.tensor([1, 2], dtype=np.float64).dtype == np.float64
    assert tinylm.tensor(np.zeros(2, dtype=np.float64)).dtype == np.float64  # arrays keep theirs


def test_tensor_facts():
    t = tinylm.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    assert t.shape == (2, 3) and t.ndim == 2 and t.numel() == 6 and t.device == "cpu"
    assert t.requires_grad and t.is_leaf and t.grad is None
    assert isinstance(t.numpy(), np.ndarray)
    assert t[1, 2].item() == 5.0
    assert "requires_grad=True" in repr(t)
    assert "grad_fn=Mul" in repr(t * 2.0)


def test_detach_cuts_the_graph_and_shares_the_data():
    x = tinylm.tensor([1.0], requires_grad=True)
    y = (x * 2.0).detach()
    assert y.creator is None and not y.requires_grad


def test_backward_with_an_explicit_gradient():
    x = tinylm.tensor([1.0, 2.0], requires_grad=True)
    (x * 3.0).backward(tinylm.tensor([1.0, 10.0]))
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 30.0])


def test_comparisons_return_bool_tensors_without_gradient():
    x = tinylm.tensor([1.0, 2.0, 3.0], requires_grad=True)
    result = x > 1.5
    assert result.dtype == np.bool_ and not result.requires_grad
    np.testing.assert_array_equal(result.numpy(), [False, True, True])
    np.testing.assert_array_equal((x == 2.0).numpy(), [False, True, False])
    np.testing.assert_array_equal((x <= x).numpy(), [True, True, True])


def test_numpy_arrays_on_the_left_defer_to_the_tensor():
    x = tinylm.tensor([1.0, 2.0])
    with pytest.raises(TypeError, match="not a Tensor"):
        np.ones(2) + x


def test_truth_value_only_for_one_element():
    assert bool(tinylm.tensor(0.0) < 1.0) and not bool(tinylm.tensor([0.0]) > 1.0)
    with pytest.raises(ValueError, match="ambiguous"):
        bool(tinylm.tensor([1.0, 2.0]) > 0.0)
    assert tinylm.tensor([1.0]) not in [tinylm.tensor([2.0])]


def test_transposes():
    x = tinylm.tensor(np.zeros((2, 3, 4)))
    assert x.T.shape == (4, 3, 2) and x.mT.shape == (2, 4, 3) and x.transpose(0, 1).shape == (3, 2, 4)
