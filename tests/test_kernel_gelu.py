"""The Cython GELU kernels against their NumPy reference.

Property: for any shape, either float dtype, contiguous or not, and values from tiny to
±1e4 (where tanh saturates and x³ overflows float32 to ±inf), both give the same outputs
and gradients, on 1 or 2 threads.

The gelu family's tests, all in this file: the Cython kernels (``kernels/cpu/gelu.pyx``)
first, then the CUDA kernels (``kernels/cuda/gelu.cu``) against the same reference,
through the CPU emulation and on a GPU when one is usable, and their launch wrappers'
refusal of bad input."""

import numpy as np
import pytest
from cuda_support import EXAMPLES, Device, devices, dtypes, geometries, strided
from cuda_support import TOLERANCE as CUDA_TOLERANCE
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import run_with_threads, seeds

from tinylm import kernels
from tinylm.kernels.cpu import gelu as compiled
from tinylm.kernels.cuda import gelu as cuda_gelu
from tinylm.reference import gelu as ref_gelu
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


# ---------------------------------------------------------------- CUDA (kernels/cuda/gelu.cu)
# Against the reference through the CPU emulation, and on a GPU when one is usable.

def close_elementwise(got, expected, dtype, floor, name=""):
    """|got - expected| <= rtol (|expected| + floor), element by element, in float64."""
    got = Device.get(got)
    assert got.shape == expected.shape and got.dtype == expected.dtype, (name, got.shape, got.dtype, expected.shape)
    error = np.abs(got.astype(np.float64) - expected)
    bound = CUDA_TOLERANCE[np.dtype(dtype).type] * (np.abs(expected.astype(np.float64)) + floor)
    worst = np.unravel_index(np.argmax(error - bound), error.shape) if error.size else ()
    assert (error <= bound).all(), f"{name}: error {error[worst]} above {bound[worst]} at {worst}"


@devices
@settings(max_examples=EXAMPLES)
@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9), dtype=dtypes, seed=seeds,
       scale=st.sampled_from([1e-3, 1.0, 5.0, 1e4]), noncontiguous=st.booleans(), geometry=geometries)
def test_gelu(device, shape, dtype, seed, scale, noncontiguous, geometry):
    """Both follow one formula, so both cancel in 1 + tanh u for x below about -4: an
    ulp of tanh is an error relative to |x| in y and to |x|³ in the backward's second
    term, not to the result; that is the floor. Beyond |x| = 10 tanh is ±1 in both dtypes
    and both results are exact; at 1e4, x³ overflows float32 to ±inf and both saturate."""
    device.require()
    threads, max_blocks = geometry
    rng = np.random.default_rng(seed)
    x = strided(rng, shape, dtype, noncontiguous, scale=scale)
    grad = strided(rng, shape, dtype, noncontiguous)
    geometry = dict(threads=threads, max_blocks=max_blocks)
    with np.errstate(over="ignore", invalid="ignore"):  # x³ of 1e4 overflows float32
        expected_y, expected_grad = ref_gelu.gelu_forward(x), ref_gelu.gelu_backward(grad, x)
    reach = np.minimum(np.abs(x.astype(np.float64)), 10)
    y = cuda_gelu.gelu_forward(device.put(x), **geometry)
    close_elementwise(y, expected_y, dtype, np.maximum(reach, 1), name="y")
    grad_x = cuda_gelu.gelu_backward(device.put(grad), device.put(x), **geometry)
    close_elementwise(grad_x, expected_grad, dtype, np.abs(grad) * np.maximum(reach * (1 + 0.134 * reach**2), 1),
                      name="grad_x")


@pytest.mark.usefixtures("launches_refused")
def test_the_cuda_wrappers_refuse_bad_input_before_launching():
    f32 = np.float32
    x = np.zeros((3, 4), f32)
    with pytest.raises(TypeError, match="gelu_forward: x must be float32 or float64, got int64"):
        cuda_gelu.gelu_forward(np.zeros(3, np.int64))
    with pytest.raises(TypeError, match="gelu_forward: x must be a NumPy or CuPy array, got list"):
        cuda_gelu.gelu_forward([1.0, 2.0])
    with pytest.raises(ValueError, match=r"gelu_backward: grad_y \(4, 3\) must have x's shape \(3, 4\)"):
        cuda_gelu.gelu_backward(x.T, x)
    with pytest.raises(ValueError, match=r"gelu_backward: grad_y \(1,\) must have x's shape"):  # no broadcasting
        cuda_gelu.gelu_backward(np.ones(1, f32), x)
    with pytest.raises(TypeError, match="gelu_backward: grad_y is float64, expected float32 like x"):
        cuda_gelu.gelu_backward(np.zeros((3, 4)), x)
    with pytest.raises(TypeError, match="gelu_backward: grad_y must be a NumPy or CuPy array, got float"):
        cuda_gelu.gelu_backward(1.0, x)
