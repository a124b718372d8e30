"""The Cython LSTM layer kernels against the NumPy reference.

Property: for any shapes (1 included), float32 or float64, contiguous or not, and gate
pre-activations from ordinary to saturated (±30), forward and backward agree with the
reference; either backward accepts either forward's ``saved``; bad input is refused.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinylm.kernels.cpu import lstm as compiled
from tinylm.reference import lstm as reference

from strategies import seeds

TOLERANCE = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


@st.composite
def lstm_problems(draw):
    steps, batch, hidden = draw(st.integers(1, 5)), draw(st.integers(1, 4)), draw(st.integers(1, 6))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    scale = draw(st.sampled_from([1.0, 30.0]))  # 30: saturated gates, sigmoid ≈ 0 or 1
    rng = np.random.default_rng(draw(seeds))
    x_proj = (scale * rng.standard_normal((steps, batch, 4 * hidden))).astype(dtype)
    w_hh = (rng.standard_normal((4 * hidden, hidden)) / np.sqrt(hidden)).astype(dtype)
    h0, c0 = (rng.standard_normal((batch, hidden)).astype(dtype) for _ in range(2))
    if draw(st.booleans()):  # non-contiguous views with the same values
        x_proj = np.asfortranarray(x_proj)
        w_hh = np.ascontiguousarray(w_hh.T).T
    grads = tuple(rng.standard_normal(s).astype(dtype) for s in ((steps, batch, hidden), (batch, hidden), (batch, hidden)))
    return x_proj, w_hh, h0, c0, grads


@given(problem=lstm_problems())
def test_forward_matches_reference(problem):
    x_proj, w_hh, h0, c0, _ = problem
    tolerance = TOLERANCE[x_proj.dtype.type]
    hs, c_n, saved = compiled.lstm_layer_forward(x_proj, w_hh, h0, c0)
    expected_hs, expected_c, expected_saved = reference.lstm_layer_forward(x_proj, w_hh, h0, c0)
    assert hs.dtype == x_proj.dtype
    np.testing.assert_allclose(hs, expected_hs, **tolerance)
    np.testing.assert_allclose(c_n, expected_c, **tolerance)
    for got, expected in zip(saved, expected_saved):
        np.testing.assert_allclose(got, expected, **tolerance)


@given(problem=lstm_problems())
def test_one_cell_step_matches_reference(problem):
    """lstm_cell_forward (generation's step) on the first step's gates, saturated ones too."""
    x_proj, _, _, c0, _ = problem
    tolerance = TOLERANCE[x_proj.dtype.type]
    got = compiled.lstm_cell_forward(x_proj[0], c0)
    expected = reference.lstm_cell_forward(np.ascontiguousarray(x_proj[0]), c0)
    for g, e in zip(got[:2] + got[2], expected[:2] + expected[2]):
        assert g.dtype == x_proj.dtype
        np.testing.assert_allclose(g, e, **tolerance)


def test_one_cell_step_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match=r"lstm_cell_forward: gates \(2, 8\) must be \(B, 4H\)"):
        compiled.lstm_cell_forward(np.zeros((2, 8), np.float32), np.zeros((2, 3), np.float32))


@given(problem=lstm_problems(), forward_from=st.sampled_from(["compiled", "reference"]))
def test_backward_matches_reference_after_either_forward(problem, forward_from):
    x_proj, w_hh, h0, c0, (d_hs, d_h_n, d_c_n) = problem
    tolerance = TOLERANCE[x_proj.dtype.type]
    forward = compiled.lstm_layer_forward if forward_from == "compiled" else reference.lstm_layer_forward
    saved = forward(x_proj, w_hh, h0, c0)[2]
    got = compiled.lstm_layer_backward(d_hs, d_h_n, d_c_n, w_hh, h0, c0, saved)
    expected = reference.lstm_layer_backward(d_hs, d_h_n, d_c_n, w_hh, h0, c0, saved)
    for name, a, b in zip(("d_x_proj", "d_w_hh", "d_h0", "d_c0"), got, expected):
        scale = max(1.0, float(np.abs(b).max())) if b.size else 1.0
        np.testing.assert_allclose(a, b, rtol=tolerance["rtol"], atol=tolerance["atol"] * scale, err_msg=name)


def test_bad_inputs_are_refused():
    x = np.zeros((2, 3, 8), np.float32)
    w = np.zeros((8, 2), np.float32)
    h = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match=r"lstm_layer_forward: x_proj \(2, 3, 8\) must be \(T, B, 4H\) and w_hh \(8, 3\)"):
        compiled.lstm_layer_forward(x, np.zeros((8, 3), np.float32), h, h)
    with pytest.raises(ValueError, match=r"h0 \(2, 2\) and c0 \(3, 2\) must be \(B, H\) = \(3, 2\)"):
        compiled.lstm_layer_forward(x, w, np.zeros((2, 2), np.float32), h)
    with pytest.raises(TypeError, match="w_hh is float64, expected float32"):
        compiled.lstm_layer_forward(x, w.astype(np.float64), h, h)
    with pytest.raises(TypeError, match="float32 or float64"):
        compiled.lstm_layer_forward(x.astype(np.float16), w, h, h)
    with pytest.raises(ValueError, match="empty"):
        compiled.lstm_layer_forward(np.zeros((0, 3, 8), np.float32), w, h, h)
    saved = compiled.lstm_layer_forward(x, w, h, h)[2]
    with pytest.raises(ValueError, match=r"d_hs \(1, 3, 2\) must be \(T, B, H\)"):
        compiled.lstm_layer_backward(np.zeros((1, 3, 2), np.float32), h, h, w, h, h, saved)


def test_backward_refuses_non_float_saved_arrays():
    w, h = np.zeros((8, 2), np.float32), np.zeros((3, 2), np.float32)
    saved = tuple(np.zeros(s, np.int64) for s in ((2, 3, 2), (2, 3, 2), (2, 3, 8), (2, 3, 2)))
    with pytest.raises(TypeError, match="float32 or float64, got int64"):
        compiled.lstm_layer_backward(np.zeros((2, 3, 2), np.int64), h, h, w, h, h, saved)
