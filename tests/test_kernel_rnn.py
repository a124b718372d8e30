"""The Cython Elman RNN layer kernels against the NumPy reference.

Property: for any shapes (1 included), float32 or float64, contiguous or not, tanh or
relu, pre-activations from ordinary to saturated (±30), forward and backward agree
with the reference; either backward accepts either forward's ``saved``; bad input is
refused.

The rnn family's tests, all in this file: the Cython kernels (``kernels/cpu/rnn.pyx``)
first, then the CUDA kernels (``kernels/cuda/rnn.cu``) against the same reference,
through the CPU emulation and on a GPU when one is usable, and their launch wrappers'
refusal of bad input.
"""

from unittest import mock

import numpy as np
import pytest
from cuda_support import EXAMPLES, devices, geometries
from cuda_support import close as cuda_close
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import packed_loop_sizes, seeds

from tinylm.kernels.cpu import rnn as compiled
from tinylm.kernels.cuda import rnn as cuda_rnn
from tinylm.reference import rnn as reference

TOLERANCE = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


@st.composite
def rnn_problems(draw, max_steps: int = 5):
    """An RNN layer's inputs, (x_proj, w_hh, h0, nonlinearity, (d_hs, d_h_n)): T, B, H from
    1, float32 or float64, ordinary or saturated (x30) pre-activations, sometimes as
    non-contiguous views with the same values."""
    steps, batch, hidden = draw(st.integers(1, max_steps)), draw(st.integers(1, 4)), draw(st.integers(1, 6))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    scale = draw(st.sampled_from([1.0, 30.0]))
    rng = np.random.default_rng(draw(seeds))
    x_proj = (scale * rng.standard_normal((steps, batch, hidden))).astype(dtype)
    w_hh = (rng.standard_normal((hidden, hidden)) / np.sqrt(hidden)).astype(dtype)
    h0 = rng.standard_normal((batch, hidden)).astype(dtype)
    if draw(st.booleans()):
        x_proj, w_hh = np.asfortranarray(x_proj), np.ascontiguousarray(w_hh.T).T
    grads = tuple(rng.standard_normal(s).astype(dtype) for s in ((steps, batch, hidden), (batch, hidden)))
    return x_proj, w_hh, h0, draw(st.sampled_from(["tanh", "relu"])), grads


@given(problem=rnn_problems(), keep_saved=st.booleans())
def test_forward_matches_reference(problem, keep_saved):
    x_proj, w_hh, h0, nonlinearity, _ = problem
    hs, saved = compiled.rnn_layer_forward(x_proj, w_hh, h0, nonlinearity, keep_saved)
    expected_hs, _ = reference.rnn_layer_forward(x_proj, w_hh, h0, nonlinearity)
    assert hs.dtype == x_proj.dtype
    np.testing.assert_allclose(hs, expected_hs, **TOLERANCE[x_proj.dtype.type])
    assert (saved is None) != keep_saved


@given(problem=rnn_problems(), forward_from=st.sampled_from(["compiled", "reference"]))
def test_backward_matches_reference_after_either_forward(problem, forward_from):
    x_proj, w_hh, h0, nonlinearity, (d_hs, d_h_n) = problem
    tolerance = TOLERANCE[x_proj.dtype.type]
    forward = compiled.rnn_layer_forward if forward_from == "compiled" else reference.rnn_layer_forward
    saved = forward(x_proj, w_hh, h0, nonlinearity)[1]
    got = compiled.rnn_layer_backward(d_hs, d_h_n, w_hh, h0, saved, nonlinearity)
    expected = reference.rnn_layer_backward(d_hs, d_h_n, w_hh, h0, saved, nonlinearity)
    for name, a, b in zip(("d_x_proj", "d_w_hh", "d_h0"), got, expected):
        scale = max(1.0, float(np.abs(b).max()))
        np.testing.assert_allclose(a, b, rtol=tolerance["rtol"], atol=tolerance["atol"] * scale, err_msg=name)


@settings(max_examples=30, deadline=None)
@given(sizes=packed_loop_sizes(), nonlinearity=st.sampled_from(["tanh", "relu"]), seed=seeds)
def test_the_packed_loop_matches_reference_and_not_the_thread_count(sizes, nonlinearity, seed):
    """float32 layers on the packed loop over time (``tinylm_recurrent.h`` with
    ``tinylm_rnn.h``'s cell): forward, an evaluation forward and backward equal the
    reference to float32 rounding, and are the same bits on one, two or three threads."""
    steps, batch, hidden = sizes
    assert compiled._packed_loop_serves(np.float32, steps, batch, hidden)
    rng = np.random.default_rng(seed)
    x_proj = rng.standard_normal((steps, batch, hidden)).astype(np.float32)
    w_hh = (rng.standard_normal((hidden, hidden)) / np.sqrt(hidden)).astype(np.float32)
    h0, d_h_n = (rng.standard_normal((batch, hidden)).astype(np.float32) for _ in range(2))
    d_hs = rng.standard_normal((steps, batch, hidden)).astype(np.float32)
    runs = []
    for threads in (1, 2, 3):
        with mock.patch.object(compiled, "_loop_threads", lambda batch, hidden, gates, n=threads: n):
            hs, saved = compiled.rnn_layer_forward(x_proj, w_hh, h0, nonlinearity)
            evaluated, nothing = compiled.rnn_layer_forward(x_proj, w_hh, h0, nonlinearity, keep_saved=False)
            assert nothing is None
            np.testing.assert_array_equal(evaluated, hs)
            runs.append((hs, *compiled.rnn_layer_backward(d_hs, d_h_n, w_hh, h0, saved, nonlinearity)))
    for other in runs[1:]:
        for one, many in zip(runs[0], other):
            np.testing.assert_array_equal(one, many)
    expected_hs, saved = reference.rnn_layer_forward(x_proj, w_hh, h0, nonlinearity)
    expected = (expected_hs, *reference.rnn_layer_backward(d_hs, d_h_n, w_hh, h0, saved, nonlinearity))
    for name, a, b in zip(("hs", "d_x_proj", "d_w_hh", "d_h0"), runs[0], expected):
        scale = max(1.0, float(np.abs(b).max()))
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5 * scale, err_msg=name)


def test_bad_inputs_are_refused():
    x, w, h = np.zeros((2, 3, 2), np.float32), np.zeros((2, 2), np.float32), np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match=r"rnn_layer_forward: x_proj \(2, 3, 2\) must be \(T, B, H\) "
                                         r"and w_hh \(2, 3\)"):
        compiled.rnn_layer_forward(x, np.zeros((2, 3), np.float32), h)
    with pytest.raises(ValueError, match=r"h0 \(2, 2\) must be \(B, H\) = \(3, 2\)"):
        compiled.rnn_layer_forward(x, w, np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu', got 'sigmoid'"):
        compiled.rnn_layer_forward(x, w, h, "sigmoid")
    with pytest.raises(TypeError, match="w_hh is float64, expected float32"):
        compiled.rnn_layer_forward(x, w.astype(np.float64), h)
    with pytest.raises(TypeError, match="float32 or float64"):
        compiled.rnn_layer_forward(x.astype(np.float16), w, h)
    with pytest.raises(ValueError, match="empty"):
        compiled.rnn_layer_forward(np.zeros((0, 3, 2), np.float32), w, h)
    saved = compiled.rnn_layer_forward(x, w, h)[1]
    with pytest.raises(ValueError, match=r"d_hs \(1, 3, 2\) and d_h_n \(3, 2\) must be"):
        compiled.rnn_layer_backward(np.zeros((1, 3, 2), np.float32), h, w, h, saved)
    with pytest.raises(TypeError, match="saved must be"):
        compiled.rnn_layer_backward(x, h, w, h, saved[0])


def test_the_layer_serves_the_cython_backend():
    import tinylm

    with tinylm.use_backend("cython"):
        assert tinylm.backends.kernel("rnn_layer_forward") is compiled.rnn_layer_forward
        assert tinylm.backends.kernel("rnn_layer_backward") is compiled.rnn_layer_backward


# ---------------------------------------------------------------- CUDA (kernels/cuda/rnn.cu)
# Against the reference through the CPU emulation, and on a GPU when one is usable.

RNN_TOLERANCE = {np.float32: 1e-4, np.float64: 1e-10}


@devices
@settings(max_examples=EXAMPLES)
@given(problem=rnn_problems(max_steps=4), geometry=geometries, forward_from=st.sampled_from(["cuda", "reference"]))
def test_rnn_layer(device, problem, geometry, forward_from):
    device.require()
    x_proj, w_hh, h0, nonlinearity, (d_hs, d_h_n) = problem
    dtype = x_proj.dtype.type
    rtol = RNN_TOLERANCE[dtype]
    geometry = dict(zip(("threads", "max_blocks"), geometry))
    hs, saved = cuda_rnn.rnn_layer_forward(*(device.put(a) for a in (x_proj, w_hh, h0)), nonlinearity, **geometry)
    expected_hs, expected_saved = reference.rnn_layer_forward(x_proj, w_hh, h0, nonlinearity)
    cuda_close(hs, expected_hs, dtype, rtol=rtol, scale=float(np.abs(expected_hs).max(initial=1.0)), name="hs")
    saved = saved if forward_from == "cuda" else tuple(device.put(a) for a in expected_saved)
    got = cuda_rnn.rnn_layer_backward(*(device.put(a) for a in (d_hs, d_h_n, w_hh, h0)), saved, nonlinearity,
                                      **geometry)
    expected = reference.rnn_layer_backward(d_hs, d_h_n, w_hh, h0, expected_saved, nonlinearity)
    for name, a, b in zip(("d_x_proj", "d_w_hh", "d_h0"), got, expected):
        cuda_close(a, b, dtype, rtol=rtol, scale=float(np.abs(b).max(initial=1.0)), name=name)


@pytest.mark.usefixtures("launches_refused")
def test_the_cuda_wrappers_refuse_bad_input_before_launching():
    f32 = np.float32
    x, w, h = np.zeros((2, 3, 2), f32), np.zeros((2, 2), f32), np.zeros((3, 2), f32)
    with pytest.raises(ValueError, match=r"rnn_layer_forward: x_proj \(2, 3, 2\) must be \(T, B, H\)"):
        cuda_rnn.rnn_layer_forward(x, np.zeros((2, 3), f32), h)
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'"):
        cuda_rnn.rnn_layer_forward(x, w, h, "gelu")
    with pytest.raises(TypeError, match="w_hh is float64, expected float32"):
        cuda_rnn.rnn_layer_forward(x, w.astype(np.float64), h)
    with pytest.raises(ValueError, match=r"d_hs \(1, 3, 2\) and d_h_n \(3, 2\) must be"):
        cuda_rnn.rnn_layer_backward(np.zeros((1, 3, 2), f32), h, w, h, (x,))
    with pytest.raises(TypeError, match="the saved hs must be float32 or float64, got int64"):
        cuda_rnn.rnn_layer_backward(x, h, w, h, (x.astype(np.int64),))
