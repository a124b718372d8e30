"""How the backward pass walks the graph: order, accumulation, freeing, no_grad."""

import gc
import tracemalloc
import weakref

import numpy as np
import pytest

import tinylm
from tinylm import ops


def test_a_tensor_used_twice_gets_both_gradients():
    a = tinylm.tensor(3.0, requires_grad=True)
    b = a + a  # db/da = 2
    c = b * b  # dc/db = 2b = 12
    c.backward()
    assert a.grad.item() == 24.0


def test_paths_of_different_lengths_meet_in_topological_order():
    """d depends on a directly and through a three-op detour; a's creator must wait
    until both gradients have arrived (generation order), or one would be lost."""
    x = tinylm.tensor(2.0, requires_grad=True)
    a = x * 1.0
    detour = ((a * 2.0).exp() + 1.0).log()
    d = a * detour
    d.backward()
    value = x.item()
    expected = np.log(np.exp(2 * value) + 1) + value * 2 * np.exp(2 * value) / (np.exp(2 * value) + 1)
    assert x.grad.item() == pytest.approx(expected)


def test_a_chain_of_ten_thousand_ops_backpropagates_without_recursion():
    x = tinylm.tensor(1.0, requires_grad=True, dtype=np.float64)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.backward()
    assert x.grad.item() == pytest.approx(1.0001**10_000)
    del y  # freeing a long chain must not overflow the C stack either
    gc.collect()


def test_leaf_gradients_accumulate_across_backward_calls():
    x = tinylm.tensor([1.0, 2.0], requires_grad=True)
    (x * 3.0).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0 + 2.0, 3.0 + 4.0])
    x.zero_grad()
    assert x.grad is None


def test_retain_graph_allows_a_second_backward_and_it_accumulates():
    x = tinylm.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [4.0, 8.0])


def test_a_second_backward_through_a_freed_graph_is_an_error_that_says_why():
    x = tinylm.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()


def test_backward_frees_saved_arrays_and_inputs():
    x = tinylm.tensor([1.0, 2.0], requires_grad=True)
    y = x.exp()
    function = y.creator
    y.sum().backward()
    assert function.inputs is None and function.saved is None


def test_no_grad_records_nothing():
    x = tinylm.tensor([1.0, 2.0], requires_grad=True)
    with tinylm.no_grad():
        y = (x * 2.0).exp()
        assert not tinylm.is_grad_enabled()
    assert tinylm.is_grad_enabled()
    assert y.creator is None and not y.requires_grad


def test_intermediate_tensors_keep_no_grad_only_leaves_do():
    x = tinylm.tensor([1.0, 2.0], requires_grad=True)
    hidden = x * 2.0
    hidden.sum().backward()
    assert hidden.grad is None
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0])


def test_inputs_that_do_not_require_grad_get_none():
    x = tinylm.tensor([1.0, 2.0], requires_grad=True)
    constant = tinylm.tensor([5.0, 6.0])
    (x * constant).sum().backward()
    assert constant.grad is None
    np.testing.assert_array_equal(x.grad.numpy(), [5.0, 6.0])


def test_the_graph_is_freed_when_its_output_is_dropped():
    x = tinylm.tensor(np.ones(3), requires_grad=True)
    y = (x * 2.0).sum()
    function = weakref.ref(y.creator)
    del y
    gc.collect()
    assert function() is None


def test_memory_does_not_grow_over_a_thousand_training_iterations():
    rng = np.random.default_rng(0)
    w = tinylm.Tensor(rng.standard_normal((16, 16)).astype(np.float32), requires_grad=True)
    x = tinylm.Tensor(rng.standard_normal((8, 16)).astype(np.float32))

    def step():
        loss = ops.log_softmax((x @ w).tanh(), -1).mean()
        loss.backward()
        with tinylm.no_grad():
            w.data -= 0.01 * w.grad.data
        w.zero_grad()

    for _ in range(50):  # warm caches before measuring
        step()
    gc.collect()
    tracemalloc.start()
    for _ in range(100):
        step()
    gc.collect()  # count live objects only, not free lists
    after_100, _ = tracemalloc.get_traced_memory()
    for _ in range(900):
        step()
    gc.collect()
    after_1000, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # One leaked graph would hold several (8, 16) float32 arrays: 900 of them, megabytes.
    assert after_1000 - after_100 < 16 * 1024, f"grew by {after_1000 - after_100} bytes over 900 iterations"


class _WrongShapeGrad(tinylm.Function):
    def forward(self, x):
        return x * 2

    def backward(self, gy):
        return gy.sum()  # a scalar instead of x's shape: a bug


class _WrongDtypeGrad(tinylm.Function):
    def forward(self, x):
        return x * 2

    def backward(self, gy):
        return (gy * 2).astype(np.float32)


@pytest.mark.parametrize("function, what", [(_WrongShapeGrad, "shape"), (_WrongDtypeGrad, "dtype")])
def test_a_backward_returning_the_wrong_shape_or_dtype_is_caught_and_named(function, what):
    x = tinylm.tensor(np.ones((2, 3)), requires_grad=True)
    y = function()(x)
    with pytest.raises(ValueError, match=rf"{function.__name__}\.backward: the gradient it returned has shape .* "
                                         r"and dtype .*but the tensor has shape \(2, 3\) and dtype float64"):
        y.sum().backward()


def test_multi_output_split_with_unused_pieces():
    x = tinylm.tensor(np.arange(6.0), requires_grad=True)
    first, _, third = ops.split(x, 2)
    (first.sum() + third.sum() * 2.0).backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1, 1, 0, 0, 2, 2])
