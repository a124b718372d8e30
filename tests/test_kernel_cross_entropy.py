"""The Cython cross-entropy kernels against their NumPy reference.

Property: for logits (N, C) of either float dtype, contiguous or not, including logits
of ±1e4, and targets in range or equal to ignore_index, both kernels give the same
losses, log-sum-exps and gradients on 1 or 2 threads; bad targets are IndexErrors."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import run_with_threads, seeds

from tinylm import kernels
from tinylm.kernels.cpu import cross_entropy as compiled
from tinylm.reference import cross_entropy as reference

# float32: the kernel sums e^(x - max) in double, the reference in float32.
TOLERANCE = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


@st.composite
def problems(draw, rows=st.integers(0, 9), classes=st.sampled_from([1, 2, 5, 96, 257])):
    n, c = draw(rows), draw(classes)
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(seeds))
    scale = draw(st.sampled_from([1.0, 30.0, 1e4]))  # 1e4: a naive e^x overflows
    wide = rng.standard_normal((n, 2 * c)) * scale
    logits = (wide[:, ::2] if draw(st.booleans()) else wide[:, :c]).astype(dtype)
    ignore_index = draw(st.sampled_from([-100, 0, 3]))
    targets = rng.integers(0, c, size=n)
    if not 0 <= ignore_index < c:  # else ignore_index is a real class and some targets hit it anyway
        targets[rng.random(n) < 0.3] = ignore_index
    grad_losses = rng.standard_normal(n).astype(dtype)
    return logits, targets, ignore_index, grad_losses


@given(problem=problems())
def test_forward_and_backward_match_reference(problem):
    logits, targets, ignore_index, grad_losses = problem
    tol = TOLERANCE[logits.dtype.type]
    losses, lse = compiled.cross_entropy_forward(logits, targets, ignore_index)
    want_losses, want_lse = reference.cross_entropy_forward(logits, targets, ignore_index)
    assert losses.dtype == lse.dtype == logits.dtype
    np.testing.assert_allclose(losses, want_losses, **tol)
    np.testing.assert_allclose(lse, want_lse, **tol)
    assert np.all(losses[targets == ignore_index] == 0)
    grad = compiled.cross_entropy_backward(grad_losses, logits, targets, want_lse, ignore_index)
    want = reference.cross_entropy_backward(grad_losses, logits, targets, want_lse, ignore_index)
    np.testing.assert_allclose(grad, want, **tol)


def test_huge_logits_stay_finite():
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], dtype=np.float32)
    losses, lse = compiled.cross_entropy_forward(logits, np.array([0, 2]), -100)
    np.testing.assert_allclose(lse, [1e4, 1e4 + np.log(2.0)], rtol=1e-6)
    np.testing.assert_allclose(losses, [0.0, np.log(2.0)], atol=1e-3)  # float32 spacing at 1e4 is 1e-3


@pytest.mark.skipif(not kernels.openmp_enabled(), reason="built without OpenMP: the kernels run on one thread only")
def test_one_and_two_threads_agree():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2048, 96)).astype(np.float32)  # several rows per thread
    targets = rng.integers(0, 96, 2048)
    one = run_with_threads(1, compiled.cross_entropy_forward, logits, targets, -100)
    two = run_with_threads(2, compiled.cross_entropy_forward, logits, targets, -100)
    np.testing.assert_array_equal(one[0], two[0])  # rows are independent: identical, not just close
    g = rng.standard_normal(2048).astype(np.float32)
    np.testing.assert_array_equal(
        run_with_threads(1, compiled.cross_entropy_backward, g, logits, targets, one[1], -100),
        run_with_threads(2, compiled.cross_entropy_backward, g, logits, targets, one[1], -100))


@pytest.mark.parametrize("module", [compiled, reference], ids=["cython", "numpy"])
@pytest.mark.parametrize("bad", [-1, 5, 2**40])
def test_out_of_range_targets_are_index_errors(module, bad):
    with pytest.raises(IndexError, match=f"target {bad} is out of range for 5 classes"):
        module.cross_entropy_forward(np.zeros((3, 5), np.float32), np.array([0, bad, 1]), -100)


@pytest.mark.parametrize("module", [compiled, reference], ids=["cython", "numpy"])
@pytest.mark.parametrize("logits, targets, error", [
    (np.zeros((3, 5), np.float32), np.zeros(4, np.int64), ValueError),
    (np.zeros(5, np.float32), np.zeros(5, np.int64), ValueError),
    (np.zeros((3, 5), np.float32), np.zeros(3, np.float32), TypeError),
])
def test_bad_shapes_and_dtypes_are_refused(module, logits, targets, error):
    with pytest.raises(error, match="cross_entropy_forward"):
        module.cross_entropy_forward(logits, targets, -100)
