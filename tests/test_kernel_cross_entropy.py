"""The Cython cross-entropy kernels against their NumPy reference.

Property: for logits (N, C) of either float dtype, contiguous or not, including logits
of ±1e4, and targets in range or equal to ignore_index, both kernels give the same
losses, log-sum-exps and gradients on 1 or 2 threads; bad targets are IndexErrors.

The cross_entropy family's tests, all in this file: the Cython kernels
(``kernels/cpu/cross_entropy.pyx``) first, then the CUDA kernels
(``kernels/cuda/cross_entropy.cu``) against the same reference, through the CPU
emulation and on a GPU when one is usable, and their launch wrappers' refusal of bad
input."""

import numpy as np
import pytest
from cuda_support import EXAMPLES, Device, devices, dtypes, geometries, strided
from cuda_support import close as cuda_close
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import run_with_threads, seeds

from tinylm import kernels
from tinylm.kernels.cpu import cross_entropy as compiled
from tinylm.kernels.cuda import attention_softmax as cuda_attention_softmax
from tinylm.kernels.cuda import cross_entropy as cuda_cross_entropy
from tinylm.reference import attention_softmax as ref_attention_softmax
from tinylm.reference import cross_entropy as ref_cross_entropy
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


# ---------------------------------------------------------------- CUDA (kernels/cuda/cross_entropy.cu)
# Against the reference through the CPU emulation, and on a GPU when one is usable.

@devices
@settings(max_examples=EXAMPLES)
@given(rows=st.integers(0, 6), classes=st.sampled_from([1, 2, 5, 33, 70]), dtype=dtypes, seed=seeds,
       scale=st.sampled_from([1.0, 1e4]), ignore_index=st.sampled_from([-100, 0]), noncontiguous=st.booleans(),
       target_dtype=st.sampled_from([np.int64, np.int32]), geometry=geometries)
def test_cross_entropy(device, rows, classes, dtype, seed, scale, ignore_index, noncontiguous, target_dtype, geometry):
    device.require()
    threads, max_blocks = geometry
    rng = np.random.default_rng(seed)
    logits = strided(rng, (rows, classes), dtype, noncontiguous, scale=scale)
    targets = rng.integers(0, classes, rows)
    targets[rng.random(rows) < 0.3] = ignore_index
    targets = targets.astype(target_dtype)
    geometry = dict(threads=threads, max_blocks=max_blocks)
    got = cuda_cross_entropy.cross_entropy_forward(device.put(logits), device.put(targets), ignore_index, **geometry)
    losses, lse = ref_cross_entropy.cross_entropy_forward(logits, targets, ignore_index)
    cuda_close(got[0], losses, dtype, scale=scale, name="losses")
    cuda_close(got[1], lse, dtype, scale=scale, name="logsumexp")
    grad_losses = rng.standard_normal(rows).astype(dtype)
    got = cuda_cross_entropy.cross_entropy_backward(device.put(grad_losses), device.put(logits), device.put(targets),
                                               device.put(lse), ignore_index, **geometry)
    cuda_close(got, ref_cross_entropy.cross_entropy_backward(grad_losses, logits, targets, lse, ignore_index), dtype,
          name="grad_logits")


@devices
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [None, 32, 96])
def test_a_nan_score_or_logit_is_never_dropped(device, dtype, threads):
    """A NaN in a row makes that row's loss and softmax NaN (as the reference's), whichever
    thread meets it first: fmax ignores a NaN, so a NaN met by a thread whose running
    (max, sum) was still empty used to vanish, leaving a finite loss."""
    device.require()
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 70)).astype(dtype)
    logits[0, 0] = np.nan  # the first value thread 0 meets
    logits[1, 40] = np.nan  # the first value of a thread, past the first warp
    targets = np.array([3, 0, 69, -100])  # row 3 (finite) ignored
    got = cuda_cross_entropy.cross_entropy_forward(device.put(logits), device.put(targets), -100, threads=threads)
    expected = ref_cross_entropy.cross_entropy_forward(logits, targets, -100)
    for name, a, b in zip(("losses", "logsumexp"), got, expected):
        assert np.isnan(b[:2]).all() and np.isfinite(b[2:]).all(), name
        cuda_close(a, b, dtype, name=name)  # NaN where the reference has NaN, equal elsewhere
    grad_losses = rng.standard_normal(4).astype(dtype)
    got = cuda_cross_entropy.cross_entropy_backward(device.put(grad_losses), device.put(logits), device.put(targets),
                                               device.put(expected[1]), -100, threads=threads)
    cuda_close(got, ref_cross_entropy.cross_entropy_backward(grad_losses, logits, targets, expected[1], -100), dtype)

    scores = logits[None, :3]  # (1, 3, 70): rows 0 and 1 hold a NaN
    probs = Device.get(cuda_attention_softmax.attention_softmax_forward(device.put(scores), 1.0, threads=threads))
    assert np.isnan(probs[0, :2]).all(), "a row with a NaN score must come out NaN, not finite or zero"
    cuda_close(probs[0, 2], ref_attention_softmax.attention_softmax_forward(scores, 1.0)[0, 2], dtype)


@pytest.mark.usefixtures("launches_refused")
def test_the_cuda_wrappers_refuse_bad_input_before_launching():
    f32 = np.float32
    logits = np.zeros((3, 5), f32)
    for bad in (5, -1, 2**40):
        with pytest.raises(IndexError, match=rf"cross_entropy_forward: target {bad} is out of range for 5 classes"):
            cuda_cross_entropy.cross_entropy_forward(logits, np.array([0, bad, 1]), -100)
    with pytest.raises(IndexError, match="cross_entropy_backward: target 7 is out of range"):
        cuda_cross_entropy.cross_entropy_backward(np.zeros(3, f32), logits, np.array([0, 7, 1]), np.zeros(3, f32), -100)
    with pytest.raises(TypeError, match="targets must be integers, got float64"):
        cuda_cross_entropy.cross_entropy_forward(logits, np.zeros(3), -100)
    with pytest.raises(ValueError, match=r"logits must be \(N, C\) and targets \(N,\), got \(3, 5\) and \(4,\)"):
        cuda_cross_entropy.cross_entropy_forward(logits, np.zeros(4, np.int64), -100)
    with pytest.raises(ValueError, match=r"cross_entropy_backward: logsumexp \(2,\) must be \(N,\) = \(3,\)"):
        cuda_cross_entropy.cross_entropy_backward(np.zeros(3, f32), logits, np.zeros(3, np.int64), np.zeros(2, f32),
                                                  -100)
    with pytest.raises(TypeError, match="cross_entropy_backward: grad_losses is float64, expected float32"):
        cuda_cross_entropy.cross_entropy_backward(np.zeros(3), logits, np.zeros(3, np.int64), np.zeros(3, f32), -100)
    bounds = rf"\[{-2**63}, {2**63 - 1}\]"
    with pytest.raises(ValueError, match=rf"cross_entropy_forward: ignore_index must be in {bounds}, got {2**70}"):
        cuda_cross_entropy.cross_entropy_forward(logits, np.zeros(3, np.int64), 2**70)
