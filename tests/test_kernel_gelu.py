"""The Cython GELU kernels against their NumPy reference.

Property: for any shape, either float dtype, contiguous or not, and values from tiny to
±1e4 (where tanh saturates and x³ overflows float32 to ±inf), both give the same outputs
and gradients, on 1 or 2 threads."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import run_with_threads, seeds

from tinylm import kernels
from tinylm.kernels.cpu import gelu as compiled
from tinylm.reference import gelu as reference

# The oracle is the reference in float64: in float32 the reference's 1 + tanh u cancels
# for x below about -4 (to 0 near x = -5), where the kernel's σ(2u) keeps its digits.
TOLERANCE = {np.float32: dict(rtol=2e-5, atol=1e-7), np.float64: dict(rtol=1e-12, atol=1e-14)}


def oracle(function, *arrays):
    return function(*(a.astype(np.float64) for a in arrays)).astype(arrays[0].dtype)


@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6), seed=seeds,
       dtype=st.sampled_from([np.float32, np.float64]), scale=st.sampled_from([1e-3, 1.0, 5.0, 1e4]),
       noncontiguous=st.booleans())
def test_forward_and_backward_match_reference(shape, seed, dtype, scale, noncontiguous):
    rng = np.random.default_rng(seed)
    x = (scale * rng.standard_normal(shape)).astype(dtype)
    if noncontiguous and x.ndim >= 2:
        x = x.swapaxes(0, 1)
    g = rng.standard_normal(x.shape).astype(dtype)
    tol = TOLERANCE[np.dtype(dtype).type]
    with np.errstate(over="ignore", invalid="ignore"):  # x³ of 1e4 overflows float32: both saturate
        np.testing.assert_allclose(compiled.gelu_forward(x), oracle(reference.gelu_forward, x), **tol)
        np.testing.assert_allclose(compiled.gelu_backward(g, x), oracle(reference.gelu_backward, g, x), **tol)


def test_known_values():
    x = np.array([-1e4, -3.0, 0.0, 1.0, 1e4], np.float32)
    np.testing.assert_allclose(compiled.gelu_forward(x), [0.0, -0.00363752, 0.0, 0.841192, 1e4], rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not kernels.openmp_enabled(), reason="built without OpenMP: the kernels run on one thread only")
def test_one_and_two_threads_agree():
    x = np.random.default_rng(0).standard_normal(10_001).astype(np.float32)
    np.testing.assert_array_equal(run_with_threads(1, compiled.gelu_forward, x),
                                  run_with_threads(2, compiled.gelu_forward, x))
    np.testing.assert_array_equal(run_with_threads(1, compiled.gelu_backward, x, x),
                                  run_with_threads(2, compiled.gelu_backward, x, x))


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="gelu_backward: grad_y"):
        compiled.gelu_backward(np.zeros(3, np.float32), np.zeros(4, np.float32))
