"""The Cython LayerNorm kernels against their NumPy reference.

Property: for x (N, D) of either float dtype, contiguous or not, with or without a
weight and bias, rows of large offset or constant rows, both give the same y, mean,
rstd and gradients; 1 and 2 threads agree to rounding (dw and db are sums over rows
split between threads).

The layer_norm family's tests, all in this file: the Cython kernels
(``kernels/cpu/layer_norm.pyx``) first, then the CUDA kernels
(``kernels/cuda/layer_norm.cu``) against the same reference, through the CPU emulation
and on a GPU when one is usable, and their launch wrappers' refusal of bad input."""

import numpy as np
import pytest
from cuda_support import EXAMPLES, devices, dtypes, geometries, strided
from cuda_support import close as cuda_close
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import run_with_threads, seeds

from tinylm import kernels
from tinylm.kernels.cpu import layer_norm as compiled
from tinylm.kernels.cuda import layer_norm as cuda_layer_norm
from tinylm.reference import layer_norm as ref_layer_norm
from tinylm.reference import layer_norm as reference

# The oracle is the reference run in float64: the kernel accumulates its row statistics
# in double, while the reference in float32 rounds the mean, and normalising multiplies
# that rounding by up to 1/√ε ≈ 300 (a constant row of 100s comes out at ±2e-3, not 0).
# atol: a constant row of 100s, mean rounded, times 1/√ε
TOLERANCE = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-9)}


def oracle(function, *arrays):
    """``function`` on float64 copies of the arrays, results cast back to the input dtype."""
    dtype = next(a.dtype for a in arrays if isinstance(a, np.ndarray))
    wide = [a.astype(np.float64) if isinstance(a, np.ndarray) else a for a in arrays]
    return [None if r is None else r.astype(dtype) for r in function(*wide)]


@st.composite
def problems(draw):
    rows, dim = draw(st.integers(0, 9)), draw(st.sampled_from([1, 2, 7, 32, 129]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(seeds))
    offset = draw(st.sampled_from([0.0, 100.0]))
    wide = rng.standard_normal((rows, 2 * dim)) + offset
    x = (wide[:, ::2] if draw(st.booleans()) else wide[:, :dim]).astype(dtype)
    if rows and draw(st.booleans()):
        x[0] = x[0, 0]  # a constant row: variance 0, only ε keeps rstd finite
    affine = draw(st.sampled_from(["none", "weight", "both"]))
    weight = rng.standard_normal(dim).astype(dtype) if affine != "none" else None
    bias = rng.standard_normal(dim).astype(dtype) if affine == "both" else None
    return x, weight, bias, rng.standard_normal((rows, dim)).astype(dtype)


@given(problem=problems())
def test_forward_and_backward_match_reference(problem):
    x, weight, bias, grad_y = problem
    tol = TOLERANCE[x.dtype.type]
    got = compiled.layer_norm_forward(x, weight, bias, 1e-5)
    want = oracle(reference.layer_norm_forward, x, weight, bias, 1e-5)
    for g, w in zip(got, want):
        assert g.dtype == x.dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, **tol)
    _, mean, rstd = want
    got = compiled.layer_norm_backward(grad_y, x, weight, mean, rstd)
    want = oracle(reference.layer_norm_backward, grad_y, x, weight, mean, rstd)
    for g, w in zip(got, want):
        if w is None:
            assert g is None
        else:
            np.testing.assert_allclose(g, w, rtol=tol["rtol"], atol=tol["atol"] * max(1, len(x)))


@pytest.mark.skipif(not kernels.openmp_enabled(), reason="built without OpenMP: the kernels run on one thread only")
def test_one_and_two_threads_agree():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1024, 128)).astype(np.float32)  # several rows per thread
    w, b = rng.standard_normal(128).astype(np.float32), rng.standard_normal(128).astype(np.float32)
    one = run_with_threads(1, compiled.layer_norm_forward, x, w, b, 1e-5)
    two = run_with_threads(2, compiled.layer_norm_forward, x, w, b, 1e-5)
    for a, c in zip(one, two):
        np.testing.assert_array_equal(a, c)  # rows are independent
    g = rng.standard_normal(x.shape).astype(np.float32)
    back_one = run_with_threads(1, compiled.layer_norm_backward, g, x, w, one[1], one[2])
    back_two = run_with_threads(2, compiled.layer_norm_backward, g, x, w, one[1], one[2])
    np.testing.assert_array_equal(back_one[0], back_two[0])
    for a, c in zip(back_one[1:], back_two[1:]):  # sums over rows, split differently
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("module", [compiled, reference], ids=["cython", "numpy"])
def test_the_statistics_are_those_of_each_row(module):
    x = np.array([[1.0, 2.0, 3.0, 4.0], [10.0, 10.0, 10.0, 10.0]])
    y, mean, rstd = module.layer_norm_forward(x, None, None, 1e-5)
    np.testing.assert_allclose(mean, [2.5, 10.0])
    np.testing.assert_allclose(rstd, [1 / np.sqrt(1.25 + 1e-5), 1 / np.sqrt(1e-5)])
    np.testing.assert_allclose(y[1], 0.0)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"layer_norm_forward: weight \(3,\) float32 must be \(4,\)"):
        compiled.layer_norm_forward(np.zeros((2, 4), np.float32), np.ones(3, np.float32), None, 1e-5)
    with pytest.raises(ValueError, match=r"layer_norm_forward: x must be \(N, D\)"):
        compiled.layer_norm_forward(np.zeros(4, np.float32), None, None, 1e-5)
    with pytest.raises(ValueError, match=r"layer_norm_backward: mean \(3,\)"):
        compiled.layer_norm_backward(np.zeros((2, 4)), np.zeros((2, 4)), None, np.zeros(3), np.zeros(2))


# ---------------------------------------------------------------- CUDA (kernels/cuda/layer_norm.cu)
# Against the reference through the CPU emulation, and on a GPU when one is usable.

@devices
@settings(max_examples=EXAMPLES)
@given(rows=st.integers(0, 5), dim=st.sampled_from([1, 2, 5, 33, 70]), dtype=dtypes, seed=seeds,
       affine=st.sampled_from(["both", "none", "weight only"]), offset=st.sampled_from([0.0, 1e3]),
       noncontiguous=st.booleans(), geometry=geometries)
def test_layer_norm(device, rows, dim, dtype, seed, affine, offset, noncontiguous, geometry):
    device.require()
    threads, max_blocks = geometry
    rng = np.random.default_rng(seed)
    x = strided(rng, (rows, dim), dtype, noncontiguous) + dtype(offset)  # a large mean: cancellation
    weight = rng.standard_normal(dim).astype(dtype) if affine != "none" else None
    bias = rng.standard_normal(dim).astype(dtype) if affine == "both" else None
    grad_y = strided(rng, (rows, dim), dtype, noncontiguous)
    geometry = dict(threads=threads, max_blocks=max_blocks)
    got = cuda_layer_norm.layer_norm_forward(device.put(x), device.put(weight), device.put(bias), 1e-5, **geometry)
    expected = ref_layer_norm.layer_norm_forward(x, weight, bias, 1e-5)
    # float32 with |mean| = 1e3: x itself is only known to 1e3 · 6e-8, which x̂ magnifies by rstd.
    rtol = 2e-3 if (dtype == np.float32 and offset) else None
    for name, a, b in zip(("y", "mean", "rstd"), got, expected):
        cuda_close(a, b, dtype, rtol=rtol, scale=float(np.abs(b).max(initial=1.0)), name=name)
    _, mean, rstd = expected
    got = cuda_layer_norm.layer_norm_backward(device.put(grad_y), device.put(x), device.put(weight), device.put(mean),
                                         device.put(rstd), **geometry)
    expected = ref_layer_norm.layer_norm_backward(grad_y, x, weight, mean, rstd)
    for name, a, b in zip(("grad_x", "grad_weight", "grad_bias"), got, expected):
        if b is None:
            assert a is None, name
        else:
            cuda_close(a, b, dtype, rtol=rtol, scale=float(np.abs(b).max(initial=1.0)) * max(1, rows), name=name)


@pytest.mark.usefixtures("launches_refused")
def test_the_cuda_wrappers_refuse_bad_input_before_launching():
    f32 = np.float32
    x = np.zeros((3, 4), f32)
    with pytest.raises(ValueError, match=r"layer_norm_forward: x must be \(N, D\), got shape \(3, 4, 1\)"):
        cuda_layer_norm.layer_norm_forward(x[..., None], None, None, 1e-5)
    with pytest.raises(ValueError, match=r"layer_norm_forward: weight \(3,\) must be \(D,\) = \(4,\)"):
        cuda_layer_norm.layer_norm_forward(x, np.ones(3, f32), None, 1e-5)
    with pytest.raises(TypeError, match="layer_norm_forward: bias is float64, expected float32 like x"):
        cuda_layer_norm.layer_norm_forward(x, None, np.zeros(4), 1e-5)
    with pytest.raises(ValueError, match="has no columns"):
        cuda_layer_norm.layer_norm_forward(np.zeros((3, 0), f32), None, None, 1e-5)
    with pytest.raises(ValueError, match=r"layer_norm_backward: grad_y \(4, 3\) must have x's shape \(3, 4\)"):
        cuda_layer_norm.layer_norm_backward(x.T, x, None, np.zeros(3, f32), np.ones(3, f32))
    with pytest.raises(ValueError, match=r"layer_norm_backward: rstd \(4,\) must be \(N,\) = \(3,\)"):
        cuda_layer_norm.layer_norm_backward(x, x, None, np.zeros(3, f32), np.ones(4, f32))
    with pytest.raises(TypeError, match="layer_norm_backward: mean is float64"):
        cuda_layer_norm.layer_norm_backward(x, x, None, np.zeros(3), np.ones(3, f32))
