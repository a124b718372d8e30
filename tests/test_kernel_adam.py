"""The Cython adam_update against the NumPy reference: same updates of the parameter and
both moments, for Adam and AdamW, any size (0 and 1 included), float32 and float64.

The adam family's tests, all in this file: the Cython kernels (``kernels/cpu/adam.pyx``)
first, then the CUDA kernels (``kernels/cuda/adam.cu``) against the same reference,
through the CPU emulation and on a GPU when one is usable, and their launch wrappers'
refusal of bad input."""

import numpy as np
import pytest
from cuda_support import EXAMPLES, devices, dtypes, geometries
from cuda_support import close as cuda_close
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import seeds

from tinylm.kernels.cpu.adam import adam_update as compiled
from tinylm.kernels.cuda import adam as cuda_adam
from tinylm.reference import adam as ref_adam
from tinylm.reference.adam import adam_update as reference

TOLERANCE = {np.float32: dict(rtol=1e-5, atol=1e-7), np.float64: dict(rtol=1e-12, atol=1e-15)}


@given(seed=seeds, size=st.sampled_from([0, 1, 7, 100, 70_000]), dtype=st.sampled_from([np.float32, np.float64]),
       step=st.sampled_from([1, 2, 10, 1000]), decoupled=st.booleans(), weight_decay=st.sampled_from([0.0, 0.01, 0.5]),
       grad_scale=st.sampled_from([1e-6, 1.0, 1e4]), steps=st.integers(1, 3))
def test_compiled_matches_reference(seed, size, dtype, step, decoupled, weight_decay, grad_scale, steps):
    rng = np.random.default_rng(seed)
    start = [rng.standard_normal(size).astype(dtype), (0.1 * rng.standard_normal(size)).astype(dtype),
             (0.1 * rng.random(size)).astype(dtype)]
    ours, theirs = [a.copy() for a in start], [a.copy() for a in start]
    for k in range(steps):
        grad = (grad_scale * rng.standard_normal(size)).astype(dtype)
        compiled(ours[0], grad, ours[1], ours[2], step + k, 1e-3, 0.9, 0.999, 1e-8, weight_decay, decoupled)
        reference(theirs[0], grad, theirs[1], theirs[2], step + k, 1e-3, 0.9, 0.999, 1e-8, weight_decay, decoupled)
    for name, a, b in zip(("param", "exp_avg", "exp_avg_sq"), ours, theirs):
        np.testing.assert_allclose(a, b, **TOLERANCE[dtype], err_msg=name)


def test_multidimensional_parameters_are_updated_in_place():
    param = np.ones((3, 4), np.float32)
    exp_avg, exp_avg_sq = np.zeros_like(param), np.zeros_like(param)
    compiled(param, np.ones_like(param), exp_avg, exp_avg_sq, 1, 0.1, 0.9, 0.999, 1e-8, 0.0, False)
    np.testing.assert_allclose(param, 0.9, rtol=1e-5)  # the first Adam step moves by lr
    np.testing.assert_allclose(exp_avg, 0.1, rtol=1e-6)


def test_bad_inputs_are_refused_not_copied():
    p = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="grad is float64"):
        compiled(p, np.zeros(4), p.copy(), p.copy(), 1, 1e-3, 0.9, 0.999, 1e-8, 0.0, False)
    with pytest.raises(ValueError, match=r"exp_avg is float32 \(3,\)"):
        compiled(p, p.copy(), np.zeros(3, np.float32), p.copy(), 1, 1e-3, 0.9, 0.999, 1e-8, 0.0, False)
    strided = np.zeros(8, np.float32)[::2]
    with pytest.raises(ValueError, match="param must be C-contiguous"):
        compiled(strided, p.copy(), p.copy(), p.copy(), 1, 1e-3, 0.9, 0.999, 1e-8, 0.0, False)
    with pytest.raises(ValueError, match="adam_update: step must be >= 1, got 0"):
        compiled(p, p.copy(), p.copy(), p.copy(), 0, 1e-3, 0.9, 0.999, 1e-8, 0.0, False)
    frozen = np.zeros(4, np.float32)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="exp_avg is read-only"):
        compiled(p, p.copy(), frozen, p.copy(), 1, 1e-3, 0.9, 0.999, 1e-8, 0.0, False)


def test_overlapping_in_place_arrays_are_refused():
    buffer = np.zeros(9, np.float32)
    p = np.zeros(8, np.float32)
    with pytest.raises(ValueError, match="exp_avg and exp_avg_sq share memory"):
        compiled(p, p.copy(), buffer[:8], buffer[1:], 1, 1e-3, 0.9, 0.999, 1e-8, 0.0, False)
    m = np.zeros(8, np.float32)
    with pytest.raises(ValueError, match="share memory"):
        compiled(p, p.copy(), m, m, 1, 1e-3, 0.9, 0.999, 1e-8, 0.0, False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_no_weight_decay_leaves_the_moments_of_a_non_finite_param_alone(dtype):
    # Adam with weight_decay=0 never forms g + 0·p (the reference skips it), so an inf
    # param must not turn its moments into NaN through 0·inf.
    arrays = [np.array([np.inf, 1.0], dtype), np.ones(2, dtype), np.zeros(2, dtype), np.zeros(2, dtype)]
    copies = [a.copy() for a in arrays]
    compiled(*arrays, 1, 1e-3, 0.9, 0.999, 1e-8, 0.0, False)
    reference(*copies, 1, 1e-3, 0.9, 0.999, 1e-8, 0.0, False)
    for got, want in zip(arrays, copies):
        np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- CUDA (kernels/cuda/adam.cu)
# Against the reference through the CPU emulation, and on a GPU when one is usable.

@devices
@settings(max_examples=EXAMPLES)
@given(size=st.sampled_from([0, 1, 7, 100, 1000]), dtype=dtypes, seed=seeds, step=st.sampled_from([1, 2, 1000]),
       decoupled=st.booleans(), weight_decay=st.sampled_from([0.0, 0.01, 0.5]),
       grad_scale=st.sampled_from([1e-6, 1.0, 1e4]), geometry=geometries)
def test_adam_update(device, size, dtype, seed, step, decoupled, weight_decay, grad_scale, geometry):
    device.require()
    threads, max_blocks = geometry
    rng = np.random.default_rng(seed)
    start = [rng.standard_normal(size).astype(dtype), (0.1 * rng.standard_normal(size)).astype(dtype),
             (0.1 * rng.random(size)).astype(dtype)]
    grad = (grad_scale * rng.standard_normal(size)).astype(dtype)
    ours = [device.put(a.copy()) for a in start]
    theirs = [a.copy() for a in start]
    cuda_adam.adam_update(*ours[:1], device.put(grad), *ours[1:], step, 1e-3, 0.9, 0.999, 1e-8, weight_decay, decoupled,
                      threads=threads, max_blocks=max_blocks)
    ref_adam.adam_update(theirs[0], grad, theirs[1], theirs[2], step, 1e-3, 0.9, 0.999, 1e-8, weight_decay, decoupled)
    for name, a, b in zip(("param", "exp_avg", "exp_avg_sq"), ours, theirs):
        cuda_close(a, b, dtype, scale=float(np.abs(b).max(initial=1.0)), name=name)


@pytest.mark.usefixtures("launches_refused")
def test_the_cuda_wrappers_refuse_bad_input_before_launching():
    f32 = np.float32
    p = np.zeros(4, f32)
    args = (1, 1e-3, 0.9, 0.999, 1e-8, 0.0, False)
    with pytest.raises(TypeError, match="adam_update: grad is float64, param is float32"):
        cuda_adam.adam_update(p, np.zeros(4), p.copy(), p.copy(), *args)
    with pytest.raises(ValueError, match=r"adam_update: exp_avg has shape \(3,\), param \(4,\)"):
        cuda_adam.adam_update(p, p.copy(), np.zeros(3, f32), p.copy(), *args)
    with pytest.raises(ValueError, match="param must be C-contiguous"):
        cuda_adam.adam_update(np.zeros(8, f32)[::2], p.copy(), p.copy(), p.copy(), *args)
    with pytest.raises(ValueError, match="adam_update: step must be >= 1, got 0"):
        cuda_adam.adam_update(p, p.copy(), p.copy(), p.copy(), 0, *args[1:])
    m = np.zeros(4, f32)
    with pytest.raises(ValueError, match="exp_avg and exp_avg_sq share memory"):
        cuda_adam.adam_update(p, p.copy(), m, m, *args)
    with pytest.raises(TypeError, match="param must be float32 or float64, got int64"):
        cuda_adam.adam_update(np.zeros(4, np.int64), *(np.zeros(4, np.int64) for _ in range(3)), *args)
    frozen = np.zeros(4, f32)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="exp_avg is read-only"):
        cuda_adam.adam_update(p, p.copy(), frozen, p.copy(), *args)
