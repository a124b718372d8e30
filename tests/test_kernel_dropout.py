"""The Cython dropout kernels against their NumPy reference.

Property: for any shape, dtype, p in [0, 1] and seed, both draw the same mask bit for
bit and give the same outputs and gradients, on 1 or 2 threads; the share kept is
about 1 - p, and the expected output equals the input."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import run_with_threads

from tinylm import kernels
from tinylm.kernels.cpu import dropout as compiled
from tinylm.reference import dropout as reference


@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=7),
       dtype=st.sampled_from([np.float32, np.float64]), p=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]),
       seed=st.integers(0, 2**64 - 1), noncontiguous=st.booleans())
def test_same_mask_and_values_as_reference(shape, dtype, p, seed, noncontiguous):
    rng = np.random.default_rng(seed % 2**32)
    x = rng.standard_normal(shape).astype(dtype)
    if noncontiguous and x.ndim >= 2:
        x = x.swapaxes(0, 1)
    y, mask = compiled.dropout_forward(x, p, seed)
    want_y, want_mask = reference.dropout_forward(x, p, seed)
    np.testing.assert_array_equal(mask, want_mask)
    np.testing.assert_array_equal(y, want_y)
    g = rng.standard_normal(x.shape).astype(dtype)
    np.testing.assert_array_equal(compiled.dropout_backward(g, mask, p), reference.dropout_backward(g, mask, p))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_the_kept_share_is_one_minus_p_and_the_mean_is_unchanged(p):
    x = np.ones(200_000, np.float32)
    y, mask = compiled.dropout_forward(x, p, 7)
    assert abs(mask.mean() - (1 - p)) < 0.005  # 0.005 is over 4 standard deviations
    assert abs(y.mean() - 1.0) < 0.02


@pytest.mark.skipif(not kernels.openmp_enabled(), reason="built without OpenMP: the kernels run on one thread only")
def test_one_and_two_threads_draw_the_same_mask():
    x = np.random.default_rng(0).standard_normal((300, 400)).astype(np.float32)
    one = run_with_threads(1, compiled.dropout_forward, x, 0.3, 12345)
    two = run_with_threads(2, compiled.dropout_forward, x, 0.3, 12345)
    np.testing.assert_array_equal(one[1], two[1])
    np.testing.assert_array_equal(one[0], two[0])


@pytest.mark.parametrize("module", [compiled, reference], ids=["cython", "numpy"])
def test_p_outside_zero_one_is_refused(module):
    with pytest.raises(ValueError, match=r"dropout: p must be in \[0, 1\], got 1.5"):
        module.dropout_forward(np.zeros(3, np.float32), 1.5, 0)


def test_a_mask_of_another_shape_is_refused():
    with pytest.raises(ValueError, match="dropout_backward: mask"):
        compiled.dropout_backward(np.zeros(4, np.float32), np.ones(3, np.uint8), 0.5)
