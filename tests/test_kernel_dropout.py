"""The Cython dropout kernels against their NumPy reference.

Property: for any shape, dtype, p in [0, 1] and seed, both draw the same mask bit for
bit and give the same outputs and gradients, on 1 or 2 threads; the share kept is
about 1 - p, and the expected output equals the input.

The dropout family's tests, all in this file: the Cython kernels
(``kernels/cpu/dropout.pyx``) first, then the CUDA kernels (``kernels/cuda/dropout.cu``)
against the same reference, through the CPU emulation and on a GPU when one is usable,
and their launch wrappers' refusal of bad input."""

import numpy as np
import pytest
from cuda_support import EXAMPLES, Device, devices, dtypes, geometries, strided
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import run_with_threads, seeds

from tinylm import kernels
from tinylm.kernels.cpu import dropout as compiled
from tinylm.kernels.cuda import dropout as cuda_dropout
from tinylm.reference import dropout as ref_dropout
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


# ---------------------------------------------------------------- CUDA (kernels/cuda/dropout.cu)
# Against the reference through the CPU emulation, and on a GPU when one is usable.

@devices
@settings(max_examples=EXAMPLES)
@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9), dtype=dtypes,
       p=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]), seed=st.one_of(seeds, st.integers(-(2**70), 2**70)),
       noncontiguous=st.booleans(), geometry=geometries)
def test_dropout_matches_bit_for_bit(device, shape, dtype, p, seed, noncontiguous, geometry):
    device.require()
    threads, max_blocks = geometry
    rng = np.random.default_rng(abs(seed) % 2**32)
    x = strided(rng, shape, dtype, noncontiguous)
    y, mask = cuda_dropout.dropout_forward(device.put(x), p, seed, threads=threads, max_blocks=max_blocks)
    expected_y, expected_mask = ref_dropout.dropout_forward(x, p, seed)
    np.testing.assert_array_equal(Device.get(mask), expected_mask)
    assert Device.get(mask).dtype == np.uint8
    np.testing.assert_array_equal(Device.get(y), expected_y)
    grad = strided(rng, shape, dtype, noncontiguous)
    got = cuda_dropout.dropout_backward(device.put(grad), device.put(expected_mask), p, threads=threads,
                                   max_blocks=max_blocks)
    np.testing.assert_array_equal(Device.get(got), ref_dropout.dropout_backward(grad, expected_mask, p))


@pytest.mark.usefixtures("launches_refused")
def test_the_cuda_wrappers_refuse_bad_input_before_launching():
    f32 = np.float32
    x = np.zeros((3, 4), f32)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\], got 1.5"):
        cuda_dropout.dropout_forward(x, 1.5, 0)
    with pytest.raises(TypeError, match="dropout_forward: seed must be an int"):
        cuda_dropout.dropout_forward(x, 0.5, 1.5)
    with pytest.raises(TypeError, match="dropout_backward: mask must be uint8"):
        cuda_dropout.dropout_backward(x, np.ones((3, 4), bool), 0.5)
    with pytest.raises(ValueError, match=r"dropout_backward: mask \(4, 3\) must have grad_y's shape \(3, 4\)"):
        cuda_dropout.dropout_backward(x, np.ones((4, 3), np.uint8), 0.5)
    with pytest.raises(TypeError, match="dropout_forward: x must be float32 or float64, got int32"):
        cuda_dropout.dropout_forward(np.zeros(3, np.int32), 0.5, 0)
