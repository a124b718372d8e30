"""The Cython GRU layer kernels against the NumPy reference.

Property: for any shapes (1 included), float32 or float64, contiguous or not, and gate
pre-activations from ordinary to saturated (±30), forward and backward agree with the
reference; either backward accepts either forward's ``saved``; bad input is refused.

The gru family's tests, all in this file: the Cython kernels (``kernels/cpu/gru.pyx``)
first, then the CUDA kernels (``kernels/cuda/gru.cu``) against the same reference,
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

from tinylm.kernels.cpu import gru as compiled
from tinylm.kernels.cuda import gru as cuda_gru
from tinylm.reference import gru as reference

TOLERANCE = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


@st.composite
def gru_problems(draw, max_steps: int = 5):
    """A GRU layer's inputs, (x_proj, w_hh, b_hh, h0, (d_hs, d_h_n)): T, B, H from 1, float32
    or float64, gate pre-activations ordinary or saturated (x30), sometimes as
    non-contiguous views with the same values."""
    steps, batch, hidden = draw(st.integers(1, max_steps)), draw(st.integers(1, 4)), draw(st.integers(1, 6))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    scale = draw(st.sampled_from([1.0, 30.0]))
    rng = np.random.default_rng(draw(seeds))
    x_proj = (scale * rng.standard_normal((steps, batch, 3 * hidden))).astype(dtype)
    w_hh = (rng.standard_normal((3 * hidden, hidden)) / np.sqrt(hidden)).astype(dtype)
    b_hh, h0 = rng.standard_normal(3 * hidden).astype(dtype), rng.standard_normal((batch, hidden)).astype(dtype)
    if draw(st.booleans()):
        x_proj, w_hh = np.asfortranarray(x_proj), np.ascontiguousarray(w_hh.T).T
    grads = tuple(rng.standard_normal(s).astype(dtype) for s in ((steps, batch, hidden), (batch, hidden)))
    return x_proj, w_hh, b_hh, h0, grads


@given(problem=gru_problems(), keep_saved=st.booleans())
def test_forward_matches_reference(problem, keep_saved):
    x_proj, w_hh, b_hh, h0, _ = problem
    tolerance = TOLERANCE[x_proj.dtype.type]
    hs, saved = compiled.gru_layer_forward(x_proj, w_hh, b_hh, h0, keep_saved)
    expected_hs, expected_saved = reference.gru_layer_forward(x_proj, w_hh, b_hh, h0)
    assert hs.dtype == x_proj.dtype
    np.testing.assert_allclose(hs, expected_hs, **tolerance)
    if not keep_saved:
        assert saved is None
        return
    for got, expected in zip(saved, expected_saved):
        np.testing.assert_allclose(got, expected, **tolerance)


@given(problem=gru_problems(), forward_from=st.sampled_from(["compiled", "reference"]))
def test_backward_matches_reference_after_either_forward(problem, forward_from):
    x_proj, w_hh, b_hh, h0, (d_hs, d_h_n) = problem
    tolerance = TOLERANCE[x_proj.dtype.type]
    forward = compiled.gru_layer_forward if forward_from == "compiled" else reference.gru_layer_forward
    saved = forward(x_proj, w_hh, b_hh, h0)[1]
    got = compiled.gru_layer_backward(d_hs, d_h_n, w_hh, b_hh, h0, saved)
    expected = reference.gru_layer_backward(d_hs, d_h_n, w_hh, b_hh, h0, saved)
    for name, a, b in zip(("d_x_proj", "d_w_hh", "d_b_hh", "d_h0"), got, expected):
        scale = max(1.0, float(np.abs(b).max()))
        np.testing.assert_allclose(a, b, rtol=tolerance["rtol"], atol=tolerance["atol"] * scale, err_msg=name)


@settings(max_examples=30, deadline=None)
@given(sizes=packed_loop_sizes(), scale=st.sampled_from([1.0, 30.0]), seed=seeds)
def test_the_packed_loop_matches_reference_and_not_the_thread_count(sizes, scale, seed):
    """float32 layers on the packed loop over time (``tinylm_recurrent.h`` with
    ``tinylm_gru.h``'s cells): forward, an evaluation forward and backward equal the
    reference to float32 rounding, and are the same bits on one, two or three threads."""
    steps, batch, hidden = sizes
    assert compiled._packed_loop_serves(np.float32, steps, batch, hidden)
    rng = np.random.default_rng(seed)
    x_proj = (scale * rng.standard_normal((steps, batch, 3 * hidden))).astype(np.float32)
    w_hh = (rng.standard_normal((3 * hidden, hidden)) / np.sqrt(hidden)).astype(np.float32)
    b_hh, h0, d_h_n = (rng.standard_normal(shape).astype(np.float32) for shape in (3 * hidden, (batch, hidden),
                                                                                   (batch, hidden)))
    d_hs = rng.standard_normal((steps, batch, hidden)).astype(np.float32)
    runs = []
    for threads in (1, 2, 3):
        with mock.patch.object(compiled, "_loop_threads", lambda batch, hidden, gates, n=threads: n):
            hs, saved = compiled.gru_layer_forward(x_proj, w_hh, b_hh, h0)
            evaluated, nothing = compiled.gru_layer_forward(x_proj, w_hh, b_hh, h0, keep_saved=False)
            assert nothing is None
            np.testing.assert_array_equal(evaluated, hs)
            runs.append((hs, *saved, *compiled.gru_layer_backward(d_hs, d_h_n, w_hh, b_hh, h0, saved)))
    for other in runs[1:]:
        for one, many in zip(runs[0], other):
            np.testing.assert_array_equal(one, many)
    expected_hs, saved = reference.gru_layer_forward(x_proj, w_hh, b_hh, h0)
    expected = (expected_hs, *saved, *reference.gru_layer_backward(d_hs, d_h_n, w_hh, b_hh, h0, saved))
    names = ("hs", "saved hs", "activations", "h_ns", "d_x_proj", "d_w_hh", "d_b_hh", "d_h0")
    for name, a, b in zip(names, runs[0], expected):
        scale = max(1.0, float(np.abs(b).max()))
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5 * scale, err_msg=name)


def test_bad_inputs_are_refused():
    x, w = np.zeros((2, 3, 6), np.float32), np.zeros((6, 2), np.float32)
    b, h = np.zeros(6, np.float32), np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match=r"gru_layer_forward: x_proj \(2, 3, 6\) must be \(T, B, 3H\) "
                                         r"and w_hh \(6, 3\)"):
        compiled.gru_layer_forward(x, np.zeros((6, 3), np.float32), b, h)
    with pytest.raises(ValueError, match=r"b_hh \(5,\) must be \(3H,\)"):
        compiled.gru_layer_forward(x, w, np.zeros(5, np.float32), h)
    with pytest.raises(ValueError, match=r"h0 \(2, 2\) must be \(B, H\) = \(3, 2\)"):
        compiled.gru_layer_forward(x, w, b, np.zeros((2, 2), np.float32))
    with pytest.raises(TypeError, match="w_hh is float64, expected float32"):
        compiled.gru_layer_forward(x, w.astype(np.float64), b, h)
    with pytest.raises(TypeError, match="float32 or float64"):
        compiled.gru_layer_forward(x.astype(np.float16), w, b, h)
    with pytest.raises(ValueError, match="empty"):
        compiled.gru_layer_forward(np.zeros((0, 3, 6), np.float32), w, b, h)
    with pytest.raises(TypeError, match="keep_saved must be True or False"):
        compiled.gru_layer_forward(x, w, b, h, 1)
    saved = compiled.gru_layer_forward(x, w, b, h)[1]
    with pytest.raises(ValueError, match=r"d_hs \(1, 3, 2\) must be \(T, B, H\)"):
        compiled.gru_layer_backward(np.zeros((1, 3, 2), np.float32), h, w, b, h, saved)
    with pytest.raises(TypeError, match="saved must be"):
        compiled.gru_layer_backward(np.zeros((2, 3, 2), np.float32), h, w, b, h, saved[0])


def test_the_layer_serves_the_cython_backend():
    import tinylm

    with tinylm.use_backend("cython"):
        assert tinylm.backends.kernel("gru_layer_forward") is compiled.gru_layer_forward
        assert tinylm.backends.kernel("gru_layer_backward") is compiled.gru_layer_backward


# ---------------------------------------------------------------- CUDA (kernels/cuda/gru.cu)
# Against the reference through the CPU emulation, and on a GPU when one is usable.

GRU_TOLERANCE = {np.float32: 1e-4, np.float64: 1e-10}


@devices
@settings(max_examples=EXAMPLES)
@given(problem=gru_problems(max_steps=4), geometry=geometries)
def test_gru_cell(device, problem, geometry):
    device.require()
    x_proj, w_hh, b_hh, h0, (_, dh) = problem
    dtype = x_proj.dtype.type
    rtol = GRU_TOLERANCE[dtype]
    geometry = dict(zip(("threads", "max_blocks"), geometry))
    h_gates = h0 @ w_hh.T + b_hh  # (B, 3H)
    h, activations, h_n = cuda_gru.gru_cell_forward(*(device.put(a) for a in (x_proj[0], h_gates, h0)), **geometry)
    expected_h, expected_activations = reference.gru_cell_forward(np.ascontiguousarray(x_proj[0]), h_gates, h0)
    for name, a, b in (("h", h, expected_h), ("activations", activations, expected_activations),
                       ("h_n", h_n, np.ascontiguousarray(h_gates[:, 2 * h0.shape[1]:]))):
        cuda_close(a, b, dtype, rtol=rtol, name=name)
    no_dh_next = np.zeros_like(dh)
    got = cuda_gru.gru_cell_backward(*(device.put(a) for a in (dh, no_dh_next, h0, expected_activations, h_n)),
                                     **geometry)
    expected = reference.gru_cell_backward(dh, no_dh_next, h0, expected_activations, device.get(h_n))
    for name, a, b in zip(("d_x_gates", "d_h_gates", "dh_prev"), got, expected):
        cuda_close(a, b, dtype, rtol=rtol, scale=float(np.abs(b).max(initial=1.0)), name=name)


@devices
@settings(max_examples=EXAMPLES)
@given(problem=gru_problems(max_steps=4), geometry=geometries, forward_from=st.sampled_from(["cuda", "reference"]))
def test_gru_layer(device, problem, geometry, forward_from):
    device.require()
    x_proj, w_hh, b_hh, h0, (d_hs, d_h_n) = problem
    dtype = x_proj.dtype.type
    rtol = GRU_TOLERANCE[dtype]
    geometry = dict(zip(("threads", "max_blocks"), geometry))
    hs, saved = cuda_gru.gru_layer_forward(*(device.put(a) for a in (x_proj, w_hh, b_hh, h0)), **geometry)
    expected_hs, expected_saved = reference.gru_layer_forward(x_proj, w_hh, b_hh, h0)
    cuda_close(hs, expected_hs, dtype, rtol=rtol, name="hs")
    for name, a, b in zip(("hs", "activations", "h_ns"), saved, expected_saved):
        cuda_close(a, b, dtype, rtol=rtol, scale=float(np.abs(b).max(initial=1.0)), name=name)
    saved = saved if forward_from == "cuda" else tuple(device.put(a) for a in expected_saved)
    got = cuda_gru.gru_layer_backward(*(device.put(a) for a in (d_hs, d_h_n, w_hh, b_hh, h0)), saved, **geometry)
    expected = reference.gru_layer_backward(d_hs, d_h_n, w_hh, b_hh, h0, expected_saved)
    for name, a, b in zip(("d_x_proj", "d_w_hh", "d_b_hh", "d_h0"), got, expected):
        cuda_close(a, b, dtype, rtol=rtol, scale=float(np.abs(b).max(initial=1.0)), name=name)


@pytest.mark.usefixtures("launches_refused")
def test_the_cuda_wrappers_refuse_bad_input_before_launching():
    f32 = np.float32
    x, w, b, h = np.zeros((2, 3, 6), f32), np.zeros((6, 2), f32), np.zeros(6, f32), np.zeros((3, 2), f32)
    with pytest.raises(ValueError, match=r"gru_layer_forward: x_proj \(2, 3, 6\) must be \(T, B, 3H\)"):
        cuda_gru.gru_layer_forward(x, np.zeros((6, 3), f32), b, h)
    with pytest.raises(ValueError, match=r"h0 \(2, 2\) must be \(B, H\) = \(3, 2\)"):
        cuda_gru.gru_layer_forward(x, w, b, np.zeros((2, 2), f32))
    with pytest.raises(TypeError, match="w_hh is float64, expected float32"):
        cuda_gru.gru_layer_forward(x, w.astype(np.float64), b, h)
    with pytest.raises(ValueError, match="empty"):
        cuda_gru.gru_layer_forward(np.zeros((0, 3, 6), f32), w, b, h)
    with pytest.raises(ValueError, match=r"gru_cell_forward: x_gates \(3, 7\)"):
        cuda_gru.gru_cell_forward(np.zeros((3, 7), f32), np.zeros((3, 6), f32), h)
    saved = tuple(np.zeros(s, f32) for s in ((2, 3, 2), (2, 3, 6), (2, 3, 2)))
    with pytest.raises(ValueError, match=r"d_hs \(1, 3, 2\) must be \(T, B, H\)"):
        cuda_gru.gru_layer_backward(np.zeros((1, 3, 2), f32), h, w, b, h, saved)
    with pytest.raises(TypeError, match="the saved arrays must be float32 or float64, got int64"):
        cuda_gru.gru_layer_backward(np.zeros((2, 3, 2), f32), h, w, b, h, tuple(a.astype(np.int64) for a in saved))
