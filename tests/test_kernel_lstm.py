"""The Cython LSTM layer kernels against the NumPy reference.

Property: for any shapes (1 included), float32 or float64, contiguous or not, and gate
pre-activations from ordinary to saturated (±30), forward and backward agree with the
reference; either backward accepts either forward's ``saved``; bad input is refused.
The layer kernels are checked on each of their paths: the loop over time in C calling
NumPy's gemm (64-bit BLAS integers, NumPy's wheels), the same with a 32-bit-integer
CBLAS (SciPy's OpenBLAS, where SciPy is installed), and the loop in Python calling
``np.matmul`` (where NumPy's BLAS is not found).

The lstm family's tests, all in this file: the Cython kernels (``kernels/cpu/lstm.pyx``)
first, then the CUDA kernels (``kernels/cuda/lstm.cu``) against the same reference,
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
from strategies import LSTM_PRODUCT_PATHS, PRODUCT_PATHS, lstm_problems, packed_loop_sizes, products_through, seeds

from tinylm.kernels.cpu import blas
from tinylm.kernels.cpu import lstm as compiled
from tinylm.kernels.cuda import lstm as cuda_lstm
from tinylm.reference import lstm as ref_lstm
from tinylm.reference import lstm as reference

TOLERANCE = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


def test_numpy_s_own_blas_is_found_where_numpy_uses_openblas():
    """The fast path is not silently lost: with NumPy's OpenBLAS (its wheels), the loop
    over time runs in C."""
    from threadpoolctl import threadpool_info

    if not any(info.get("internal_api") == "openblas" for info in threadpool_info()):
        pytest.skip("NumPy is not linked against OpenBLAS here")
    found = blas.numpy_cblas()
    assert found is not None and found.sgemm and found.dgemm
    assert compiled._blas_ready(1)


@pytest.mark.parametrize("path", LSTM_PRODUCT_PATHS)
@given(problem=lstm_problems())
def test_forward_matches_reference(path, problem):
    x_proj, w_hh, h0, c0, _ = problem
    tolerance = TOLERANCE[x_proj.dtype.type]
    with products_through(path):
        hs, c_n, saved = compiled.lstm_layer_forward(x_proj, w_hh, h0, c0)
    expected_hs, expected_c, expected_saved = reference.lstm_layer_forward(x_proj, w_hh, h0, c0)
    assert hs.dtype == x_proj.dtype
    np.testing.assert_allclose(hs, expected_hs, **tolerance)
    np.testing.assert_allclose(c_n, expected_c, **tolerance)
    for got, expected in zip(saved, expected_saved):
        np.testing.assert_allclose(got, expected, **tolerance)


@pytest.mark.parametrize("path", LSTM_PRODUCT_PATHS)
@given(problem=lstm_problems(), forward_from=st.sampled_from(["compiled", "reference"]))
def test_backward_matches_reference_after_either_forward(path, problem, forward_from):
    x_proj, w_hh, h0, c0, (d_hs, d_h_n, d_c_n) = problem
    tolerance = TOLERANCE[x_proj.dtype.type]
    forward = compiled.lstm_layer_forward if forward_from == "compiled" else reference.lstm_layer_forward
    with products_through(path):
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
    with pytest.raises(ValueError, match=r"lstm_layer_forward: x_proj \(2, 3, 8\) must be \(T, B, 4H\) "
                                         r"and w_hh \(8, 3\)"):
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


@pytest.mark.parametrize("path", LSTM_PRODUCT_PATHS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_layer_of_training_size_matches_reference(path, dtype):
    """Sizes where OpenBLAS blocks and threads its products (B = 33, H = 70, T = 6)."""
    rng = np.random.default_rng(1)
    steps, batch, hidden = 6, 33, 70
    x_proj = rng.standard_normal((steps, batch, 4 * hidden)).astype(dtype)
    w_hh = (rng.standard_normal((4 * hidden, hidden)) / np.sqrt(hidden)).astype(dtype)
    h0, c0 = (rng.standard_normal((batch, hidden)).astype(dtype) for _ in range(2))
    d_hs = rng.standard_normal((steps, batch, hidden)).astype(dtype)
    d_h_n, d_c_n = (rng.standard_normal((batch, hidden)).astype(dtype) for _ in range(2))
    tolerance = TOLERANCE[dtype]
    with products_through(path):
        hs, c_n, saved = compiled.lstm_layer_forward(x_proj, w_hh, h0, c0)
        got = compiled.lstm_layer_backward(d_hs, d_h_n, d_c_n, w_hh, h0, c0, saved)
    expected_hs, expected_c, expected_saved = reference.lstm_layer_forward(x_proj, w_hh, h0, c0)
    np.testing.assert_allclose(hs, expected_hs, **tolerance)
    np.testing.assert_allclose(c_n, expected_c, **tolerance)
    expected = reference.lstm_layer_backward(d_hs, d_h_n, d_c_n, w_hh, h0, c0, expected_saved)
    for name, a, b in zip(("d_x_proj", "d_w_hh", "d_h0", "d_c0"), got, expected):
        scale = max(1.0, float(np.abs(b).max()))
        np.testing.assert_allclose(a, b, rtol=tolerance["rtol"], atol=tolerance["atol"] * scale, err_msg=name)


@st.composite
def packed_loop_problems(draw):
    """float32 layers the packed loop serves (``packed_loop_sizes``), gates ordinary or saturated."""
    steps, batch, hidden = draw(packed_loop_sizes())
    scale = draw(st.sampled_from([1.0, 30.0]))
    rng = np.random.default_rng(draw(seeds))
    x_proj = (scale * rng.standard_normal((steps, batch, 4 * hidden))).astype(np.float32)
    w_hh = (rng.standard_normal((4 * hidden, hidden)) / np.sqrt(hidden)).astype(np.float32)
    h0, c0, d_h_n, d_c_n = (rng.standard_normal((batch, hidden)).astype(np.float32) for _ in range(4))
    d_hs = rng.standard_normal((steps, batch, hidden)).astype(np.float32)
    return x_proj, w_hh, h0, c0, (d_hs, d_h_n, d_c_n)


@settings(max_examples=40, deadline=None)
@given(problem=packed_loop_problems())
def test_the_packed_loop_matches_reference_and_not_the_thread_count(problem):
    """The loop on the packed micro-kernel (``tinylm_recurrent.h`` with ``tinylm_lstm.h``'s
    cells): forward and backward equal
    the reference to float32 rounding, and are the same bits on one thread as on two or
    three (each sum is one thread's, in one order)."""
    x_proj, w_hh, h0, c0, (d_hs, d_h_n, d_c_n) = problem
    assert compiled._packed_loop_serves(np.float32, *x_proj.shape[:2], w_hh.shape[1])
    runs = []
    for threads in (1, 2, 3):
        with mock.patch.object(compiled, "_loop_threads", lambda batch, hidden, gates, n=threads: n):
            hs, c_n, saved = compiled.lstm_layer_forward(x_proj, w_hh, h0, c0)
            runs.append((hs, c_n) + compiled.lstm_layer_backward(d_hs, d_h_n, d_c_n, w_hh, h0, c0, saved))
    for other in runs[1:]:
        for one, many in zip(runs[0], other):
            np.testing.assert_array_equal(one, many)
    expected_hs, expected_c, saved = reference.lstm_layer_forward(x_proj, w_hh, h0, c0)
    expected = (expected_hs, expected_c) + reference.lstm_layer_backward(d_hs, d_h_n, d_c_n, w_hh, h0, c0, saved)
    for name, a, b in zip(("hs", "c_n", "d_x_proj", "d_w_hh", "d_h0", "d_c0"), runs[0], expected):
        scale = max(1.0, float(np.abs(b).max()))
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5 * scale, err_msg=name)


@settings(max_examples=30, deadline=None)
@given(sizes=packed_loop_sizes(), inputs=st.one_of(st.integers(1, 40), st.integers(250, 270)),
       scale=st.sampled_from([1.0, 30.0]), seed=seeds)
def test_the_evaluation_loop_makes_the_input_projection_itself(sizes, inputs, scale, seed):
    """``lstm_layer_forward_from_input`` on the packed loop: x_t Wᵢₕᵀ made a step at a time inside the
    loop (I across the panel edges and past KC), the reference's hs and c_n to float32
    rounding, and the same bits on one, two or three threads (split by rows or by units)."""
    steps, batch, hidden = sizes
    rng = np.random.default_rng(seed)
    x = (scale * rng.standard_normal((steps, batch, inputs))).astype(np.float32)
    w_ih = (rng.standard_normal((4 * hidden, inputs)) / np.sqrt(inputs)).astype(np.float32)
    w_hh = (rng.standard_normal((4 * hidden, hidden)) / np.sqrt(hidden)).astype(np.float32)
    bias = rng.standard_normal(4 * hidden).astype(np.float32)
    h0, c0 = (rng.standard_normal((batch, hidden)).astype(np.float32) for _ in range(2))
    runs = []
    for threads in (1, 2, 3):
        with mock.patch.object(compiled, "_loop_threads", lambda batch, hidden, gates, n=threads: n):
            runs.append(compiled.lstm_layer_forward_from_input(x, w_ih, bias, w_hh, h0, c0)[:2])
    for other in runs[1:]:
        for one, many in zip(runs[0], other):
            np.testing.assert_array_equal(one, many)
    expected = reference.lstm_layer_forward_from_input(x, w_ih, bias, w_hh, h0, c0)[:2]
    for name, got, expected in zip(("hs", "c_n"), runs[0], expected):
        np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-5 * max(1.0, scale / 10), err_msg=name)


@given(problem=lstm_problems(), inputs=st.integers(1, 5))
def test_the_evaluation_forward_from_the_input_matches_reference_at_any_size(problem, inputs):
    """``lstm_layer_forward_from_input`` at every size and float type (where the packed loop does not
    serve, x_proj comes from the ``gemm`` kernel), against the reference."""
    x_proj, w_hh, h0, c0, _ = problem
    rng = np.random.default_rng(0)
    dtype, (steps, batch), hidden = x_proj.dtype, x_proj.shape[:2], w_hh.shape[1]
    x = rng.standard_normal((steps, batch, inputs)).astype(dtype)
    w_ih, bias = rng.standard_normal((4 * hidden, inputs)).astype(dtype), rng.standard_normal(4 * hidden).astype(dtype)
    expected = reference.lstm_layer_forward_from_input(x, w_ih, bias, w_hh, h0, c0)[:2]
    for got, want in zip(compiled.lstm_layer_forward_from_input(x, w_ih, bias, w_hh, h0, c0)[:2], expected):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, **TOLERANCE[dtype.type])


def test_the_evaluation_forward_refuses_mismatched_shapes():
    x, w_ih, w_hh = np.zeros((3, 8, 5), np.float32), np.zeros((8, 5), np.float32), np.zeros((8, 2), np.float32)
    bias, state = np.zeros(8, np.float32), np.zeros((8, 2), np.float32)
    compiled.lstm_layer_forward_from_input(x, w_ih, bias, w_hh, state, state)
    with pytest.raises(ValueError, match=r"lstm_layer_forward_from_input: x \(3, 8, 4\) must be \(T, B, I\) "
                                         r"with I ≥ 1 and w_ih \(8, 5\) \(4H, I\)"):
        compiled.lstm_layer_forward_from_input(x[:, :, :4], w_ih, bias, w_hh, state, state)
    with pytest.raises(ValueError, match=r"w_ih \(8, 5\), bias \(7,\) and w_hh \(8, 2\) must be"):
        compiled.lstm_layer_forward_from_input(x, w_ih, bias[:7], w_hh, state, state)
    with pytest.raises(ValueError, match=r"from_input: h0 \(4, 2\) and c0 \(8, 2\) must be \(B, H\) = \(8, 2\)"):
        compiled.lstm_layer_forward_from_input(x, w_ih, bias, w_hh, state[:4], state)


def test_the_evaluation_forward_refuses_mixed_dtypes_everywhere():
    x, w_ih, w_hh = np.zeros((3, 8, 5)), np.zeros((8, 5), np.float32), np.zeros((8, 2), np.float32)
    bias, state = np.zeros(8, np.float32), np.zeros((8, 2), np.float32)
    for implementation in (reference, compiled):
        with pytest.raises(TypeError, match="lstm_layer_forward_from_input: .*float64"):
            implementation.lstm_layer_forward_from_input(x, w_ih, bias, w_hh, state, state)


@st.composite
def stack_step_problems(draw):
    layers, batch, hidden = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 6))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    scale = draw(st.sampled_from([1.0, 30.0]))  # 30: saturated gates
    rng = np.random.default_rng(draw(seeds))
    gates0 = (scale * rng.standard_normal((batch, 4 * hidden))).astype(dtype)
    h, c = (rng.standard_normal((layers, batch, hidden)).astype(dtype) for _ in range(2))
    w_hh0 = (rng.standard_normal((4 * hidden, hidden)) / np.sqrt(hidden)).astype(dtype)
    stacked = (scale * rng.standard_normal((layers - 1, 4 * hidden, 2 * hidden)) / np.sqrt(hidden)).astype(dtype)
    biases = rng.standard_normal((layers - 1, 4 * hidden)).astype(dtype)
    if draw(st.booleans()):  # non-contiguous views with the same values
        h, stacked = np.asfortranarray(h), np.ascontiguousarray(stacked.transpose(0, 2, 1)).transpose(0, 2, 1)
    return gates0, h, c, w_hh0, stacked, biases


@pytest.mark.parametrize("path", PRODUCT_PATHS)
@given(problem=stack_step_problems())
def test_one_step_of_the_whole_stack_matches_reference(path, problem):
    tolerance = TOLERANCE[problem[0].dtype.type]
    with products_through(path):
        new_h, new_c = compiled.lstm_stack_step(*problem)
    expected_h, expected_c = reference.lstm_stack_step(*problem)
    assert new_h.dtype == problem[0].dtype and new_h.shape == problem[1].shape
    np.testing.assert_allclose(new_h, expected_h, **tolerance)
    np.testing.assert_allclose(new_c, expected_c, **tolerance)


@settings(max_examples=30, deadline=None)
@given(layers=st.integers(1, 3), batch=st.integers(1, compiled.SMALL_BATCH), hidden=st.integers(1, 80),
       seed=seeds)
def test_the_small_batch_stack_step_matches_reference_and_not_the_thread_count(layers, batch, hidden, seed):
    """float32 at a sampling batch (``tinylm_lstm_stack_step``: every layer in one OpenMP
    region, threads owning blocks of hidden units): the reference's values to float32
    rounding, the same bits on 1, 2 or 3 threads, H across the vector widths (16, 32)."""
    rng = np.random.default_rng(seed)
    gates0 = (3 * rng.standard_normal((batch, 4 * hidden))).astype(np.float32)
    h, c = (rng.standard_normal((layers, batch, hidden)).astype(np.float32) for _ in range(2))
    w_hh0 = (rng.standard_normal((4 * hidden, hidden)) / np.sqrt(hidden)).astype(np.float32)
    stacked = (rng.standard_normal((layers - 1, 4 * hidden, 2 * hidden)) / np.sqrt(hidden)).astype(np.float32)
    biases = rng.standard_normal((layers - 1, 4 * hidden)).astype(np.float32)
    problem = (gates0, h, c, w_hh0, stacked, biases)
    runs = []
    for threads in (1, 2, 3):
        with mock.patch.object(compiled, "threads_for_weights", lambda weights, n=threads: n):
            runs.append(compiled.lstm_stack_step(*problem))
    for other in runs[1:]:
        for got, first in zip(other, runs[0]):
            np.testing.assert_array_equal(got, first)
    for got, expected in zip(runs[0], reference.lstm_stack_step(*problem)):
        np.testing.assert_allclose(got, expected, **TOLERANCE[np.float32])


def test_the_stack_step_refuses_mismatched_shapes():
    h = np.zeros((2, 1, 3), np.float32)
    good = dict(gates0=np.zeros((1, 12), np.float32), h=h, c=h, w_hh0=np.zeros((12, 3), np.float32),
                stacked=np.zeros((1, 12, 6), np.float32), biases=np.zeros((1, 12), np.float32))
    compiled.lstm_stack_step(**good)
    with pytest.raises(ValueError, match=r"lstm_stack_step: stacked \(1, 12, 3\) must be \(1, 12, 6\)"):
        compiled.lstm_stack_step(**{**good, "stacked": np.zeros((1, 12, 3), np.float32)})
    with pytest.raises(ValueError, match=r"lstm_stack_step: h \(1, 3\) and c \(1, 3\) must both be \(L, B, H\)"):
        compiled.lstm_stack_step(**{**good, "h": h[0], "c": h[0]})
    with pytest.raises(TypeError, match="lstm_stack_step: biases is float64, expected float32"):
        compiled.lstm_stack_step(**{**good, "biases": np.zeros((1, 12))})


@pytest.mark.parametrize("path", LSTM_PRODUCT_PATHS)
@given(problem=lstm_problems())
def test_a_forward_that_keeps_nothing_gives_the_same_outputs(path, problem):
    """keep_saved=False (evaluation): the same hs and c_n as a forward that keeps its gates
    and cells for a backward, and no ``saved``; the reference behaves alike."""
    x_proj, w_hh, h0, c0, _ = problem
    tolerance = TOLERANCE[x_proj.dtype.type]
    with products_through(path):
        kept_hs, kept_c, _ = compiled.lstm_layer_forward(x_proj, w_hh, h0, c0)
        hs, c_n, saved = compiled.lstm_layer_forward(x_proj, w_hh, h0, c0, keep_saved=False)
    assert saved is None and reference.lstm_layer_forward(x_proj, w_hh, h0, c0, keep_saved=False)[2] is None
    np.testing.assert_array_equal(hs, kept_hs)
    np.testing.assert_array_equal(c_n, kept_c)
    np.testing.assert_allclose(hs, reference.lstm_layer_forward(x_proj, w_hh, h0, c0)[0], **tolerance)


def test_keep_saved_must_be_a_bool():
    x, w, h = np.zeros((2, 3, 8), np.float32), np.zeros((8, 2), np.float32), np.zeros((3, 2), np.float32)
    with pytest.raises(TypeError, match="lstm_layer_forward: keep_saved must be True or False"):
        compiled.lstm_layer_forward(x, w, h, h, keep_saved="no")


# ---------------------------------------------------------------- CUDA (kernels/cuda/lstm.cu)
# Against the reference through the CPU emulation, and on a GPU when one is usable.

LSTM_TOLERANCE = {np.float32: 1e-4, np.float64: 1e-10}




@devices
@settings(max_examples=EXAMPLES)
@given(problem=lstm_problems(max_steps=4), geometry=geometries)
def test_lstm_cell(device, problem, geometry):
    device.require()
    x_proj, _, _, c0, (_, dh, dc) = problem
    dtype = x_proj.dtype.type
    rtol = LSTM_TOLERANCE[dtype]
    geometry = dict(zip(("threads", "max_blocks"), geometry))
    gates = x_proj[0]
    h, c, saved = cuda_lstm.lstm_cell_forward(device.put(gates), device.put(c0), **geometry)
    expected_h, expected_c, expected_saved = ref_lstm.lstm_cell_forward(gates, c0)
    for name, a, b in zip(("h", "c", "activations", "tanh_c"), (h, c, *saved),
                          (expected_h, expected_c, *expected_saved)):
        cuda_close(a, b, dtype, rtol=rtol, scale=1.0, name=name)
    no_dh_next = np.zeros_like(dh)
    got = cuda_lstm.lstm_cell_backward(device.put(dh), device.put(no_dh_next), device.put(dc), device.put(c0),
                                  tuple(device.put(a) for a in expected_saved), **geometry)
    expected = ref_lstm.lstm_cell_backward(dh, no_dh_next, dc, c0, expected_saved)
    for name, a, b in zip(("d_gates", "dc_prev"), got, expected):
        cuda_close(a, b, dtype, rtol=rtol, scale=1.0, name=name)


@devices
@settings(max_examples=EXAMPLES)
@given(problem=lstm_problems(max_steps=4), geometry=geometries, forward_from=st.sampled_from(["cuda", "reference"]))
def test_lstm_layer(device, problem, geometry, forward_from):
    device.require()
    x_proj, w_hh, h0, c0, (d_hs, d_h_n, d_c_n) = problem
    dtype = x_proj.dtype.type
    rtol = LSTM_TOLERANCE[dtype]
    geometry = dict(zip(("threads", "max_blocks"), geometry))
    hs, c_n, saved = cuda_lstm.lstm_layer_forward(*(device.put(a) for a in (x_proj, w_hh, h0, c0)), **geometry)
    expected_hs, expected_c, expected_saved = ref_lstm.lstm_layer_forward(x_proj, w_hh, h0, c0)
    cuda_close(hs, expected_hs, dtype, rtol=rtol, name="hs")
    cuda_close(c_n, expected_c, dtype, rtol=rtol, scale=float(np.abs(expected_c).max(initial=1.0)), name="c_n")
    for name, a, b in zip(("hs", "cs", "activations", "tanh_cs"), saved, expected_saved):
        cuda_close(a, b, dtype, rtol=rtol, scale=float(np.abs(b).max(initial=1.0)), name=name)
    saved = saved if forward_from == "cuda" else tuple(device.put(a) for a in expected_saved)
    got = cuda_lstm.lstm_layer_backward(*(device.put(a) for a in (d_hs, d_h_n, d_c_n, w_hh, h0, c0)), saved, **geometry)
    expected = ref_lstm.lstm_layer_backward(d_hs, d_h_n, d_c_n, w_hh, h0, c0, expected_saved)
    for name, a, b in zip(("d_x_proj", "d_w_hh", "d_h0", "d_c0"), got, expected):
        cuda_close(a, b, dtype, rtol=rtol, scale=float(np.abs(b).max(initial=1.0)), name=name)


@pytest.mark.usefixtures("launches_refused")
def test_the_cuda_wrappers_refuse_bad_input_before_launching():
    f32 = np.float32
    x, w, h = np.zeros((2, 3, 8), f32), np.zeros((8, 2), f32), np.zeros((3, 2), f32)
    with pytest.raises(ValueError,
                       match=r"lstm_layer_forward: x_proj \(2, 3, 8\) must be \(T, B, 4H\) and w_hh \(8, 3\)"):
        cuda_lstm.lstm_layer_forward(x, np.zeros((8, 3), f32), h, h)
    with pytest.raises(ValueError, match=r"h0 \(2, 2\) and c0 \(3, 2\) must be \(B, H\) = \(3, 2\)"):
        cuda_lstm.lstm_layer_forward(x, w, np.zeros((2, 2), f32), h)
    with pytest.raises(TypeError, match="w_hh is float64, expected float32"):
        cuda_lstm.lstm_layer_forward(x, w.astype(np.float64), h, h)
    with pytest.raises(ValueError, match="empty"):
        cuda_lstm.lstm_layer_forward(np.zeros((0, 3, 8), f32), w, h, h)
    with pytest.raises(ValueError, match=r"lstm_cell_forward: gates \(3, 7\) must be \(B, 4H\)"):
        cuda_lstm.lstm_cell_forward(np.zeros((3, 7), f32), h)
    with pytest.raises(ValueError, match="lstm_cell_backward: dh_out"):
        cuda_lstm.lstm_cell_backward(h, h, h, h, (np.zeros((3, 6), f32), h))
    saved = tuple(np.zeros(s, f32) for s in ((2, 3, 2), (2, 3, 2), (2, 3, 8), (2, 3, 2)))
    with pytest.raises(ValueError, match=r"d_hs \(1, 3, 2\) must be \(T, B, H\)"):
        cuda_lstm.lstm_layer_backward(np.zeros((1, 3, 2), f32), h, h, w, h, h, saved)
    with pytest.raises(TypeError, match="the saved arrays must be float32 or float64, got int64"):
        cuda_lstm.lstm_layer_backward(np.zeros((2, 3, 2), f32), h, h, w, h, h, tuple(a.astype(np.int64) for a in saved))
