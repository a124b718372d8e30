"""Hypothesis strategies and array makers shared by the tests."""

from __future__ import annotations

import contextlib
import glob
import os
from unittest import mock

import numpy as np
import pytest
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinylm

seeds = st.integers(0, 2**32 - 1)

# Shapes with 0 to 3 axes of length 0 to 4: size-1 and size-0 axes included.
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
nonempty_shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)
broadcast_pairs = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=0, max_side=4)


def make_array(shape, seed: int, noncontiguous: bool = False, dtype=np.float64, kind: str = "normal"):
    """A random array; ``noncontiguous`` makes it a strided view of a larger one.

    kind: "normal" (standard normal), "positive" (in [0.5, 2.5]), "away_from_zero"
    (|x| in [0.5, 2.5], random sign: for kinks and poles).
    """
    rng = np.random.default_rng(seed)
    shape = tuple(shape)
    strided = noncontiguous and len(shape) > 0
    full = shape[:-1] + (2 * shape[-1],) if strided else shape
    values = rng.standard_normal(full)
    if kind == "positive":
        values = 0.5 + 2 * rng.random(full)
    elif kind == "away_from_zero":
        values = (0.5 + 2 * rng.random(full)) * rng.choice([-1.0, 1.0], size=full)
    values = values.astype(dtype)
    return values[..., ::2] if strided else values  # every other element: a stride-2 view


def leaf(shape, seed, noncontiguous=False, kind="normal", dtype=np.float64):
    return tinylm.Tensor(make_array(shape, seed, noncontiguous, dtype, kind), requires_grad=True)


def run_with_threads(threads: int, fn, *args):
    """``fn(*args)`` with the Cython kernels on ``threads`` threads whatever the array size
    (the parallel threshold set to 0), then the old settings back."""
    from tinylm import kernels

    before, threshold = kernels.get_num_threads(), kernels.get_parallel_threshold()
    kernels.set_num_threads(threads)
    kernels.set_parallel_threshold(0)
    try:
        return fn(*args)
    finally:
        kernels.set_num_threads(before)
        kernels.set_parallel_threshold(threshold)


def float_rows(draw, rows, cols, dtype, scale=1.0, noncontiguous=False, seed=0):
    """A (rows, cols) float array of standard normals times ``scale``, optionally a strided view."""
    rng = np.random.default_rng(seed)
    if noncontiguous:
        return (scale * rng.standard_normal((rows, 2 * cols))).astype(dtype)[:, ::2]
    return (scale * rng.standard_normal((rows, cols))).astype(dtype)


@st.composite
def lstm_problems(draw, max_steps: int = 5):
    """An LSTM layer's inputs, (x_proj, w_hh, h0, c0, (d_hs, d_h_n, d_c_n)): T, B, H from 1,
    float32 or float64, gate pre-activations ordinary or saturated (x30: sigmoid ≈ 0 or 1),
    sometimes as non-contiguous views with the same values."""
    steps, batch, hidden = draw(st.integers(1, max_steps)), draw(st.integers(1, 4)), draw(st.integers(1, 6))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    scale = draw(st.sampled_from([1.0, 30.0]))
    rng = np.random.default_rng(draw(seeds))
    x_proj = (scale * rng.standard_normal((steps, batch, 4 * hidden))).astype(dtype)
    w_hh = (rng.standard_normal((4 * hidden, hidden)) / np.sqrt(hidden)).astype(dtype)
    h0, c0 = (rng.standard_normal((batch, hidden)).astype(dtype) for _ in range(2))
    if draw(st.booleans()):
        x_proj, w_hh = np.asfortranarray(x_proj), np.ascontiguousarray(w_hh.T).T
    grads = tuple(rng.standard_normal(s).astype(dtype)
                  for s in ((steps, batch, hidden), (batch, hidden), (batch, hidden)))
    return x_proj, w_hh, h0, c0, grads


# ------------------------------------------------------ random arguments for the kernel fuzz tests

FUZZ_DTYPES = [np.float32, np.float64, np.int64, np.int32, np.uint8, np.bool_]

# Positional arguments of each registered kernel, for tests/test_kernel_fuzz.py (Cython)
# and tests/test_cuda_fuzz.py (CUDA); each takes the kernels its backend serves.
KERNEL_ARITY = {
    "embedding_forward": 2, "embedding_backward": 3, "cross_entropy_forward": 3, "cross_entropy_backward": 5,
    "attention_softmax_forward": 4, "attention_softmax_backward": 3, "layer_norm_forward": 4,
    "layer_norm_backward": 5, "dropout_forward": 3, "dropout_backward": 3, "adam_update": 11,
    "lstm_layer_forward": 4, "lstm_layer_forward_from_input": 6, "lstm_stack_step": 6,
    "gelu_forward": 1, "gelu_backward": 2,
    "causal_attention_forward": 4, "causal_attention_backward": 7,
    "gru_layer_forward": 4, "gru_layer_backward": 6, "rnn_layer_forward": 4, "rnn_layer_backward": 6,
    "distill_kl_forward": 4, "distill_kl_backward": 7,
    "int8_matmul": 3, "gemm": 2,
}


@st.composite
def fuzz_arrays(draw, strided: bool = False):
    """Small arrays of any dtype (ints in [-3, 9)), sometimes with inf, NaN or 1e4 in a float
    one, and with ``strided`` sometimes a strided view."""
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    dtype = draw(st.sampled_from(FUZZ_DTYPES))
    array = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(-3, 9, size=shape).astype(dtype)
    if dtype in (np.float32, np.float64) and array.size and draw(st.booleans()):
        array.flat[0] = draw(st.sampled_from([np.inf, -np.inf, np.nan, 1e4]))
    if strided and array.ndim and array.shape[-1] > 1 and draw(st.booleans()):
        array = array[..., ::2]
    return array


def fuzz_arguments(strided: bool = False):
    """One argument of a kernel call: mostly arrays, else an int, a float, None or a bool."""
    return st.one_of(fuzz_arrays(strided), fuzz_arrays(strided), st.integers(-3, 9), st.floats(-2, 2),
                     st.none(), st.booleans())


# ------------------------------------------------- where the C kernels' matrix products go

def _scipy_cblas():
    """SciPy's OpenBLAS (32-bit integers), loaded, or None without SciPy."""
    from tinylm.kernels.cpu import blas

    try:
        import scipy
    except ImportError:
        return None
    for path in glob.glob(os.path.join(os.path.dirname(scipy.__file__) + ".libs", "*openblas*")):
        found = blas._find_in(path)
        if found is not None and not found.int64:
            return found
    return None


# The paths of the kernels that multiply inside a C loop (LSTM layer and stack step,
# causal attention): NumPy's own gemm (64-bit BLAS integers, NumPy's wheels), a CBLAS with
# 32-bit integers (SciPy's OpenBLAS, where SciPy is installed), and NumPy's BLAS not found
# (each kernel's Python fallback: np.matmul per step, or the reference).
PRODUCT_PATHS = ["numpy blas in C", "32-bit cblas in C", "numpy blas not found"]
# The LSTM layer has a fourth: its float32 loop on tinylm's packed micro-kernel
# (kernels/cpu/tinylm_recurrent.h), which the three above turn off so that they test theirs.
LSTM_PRODUCT_PATHS = PRODUCT_PATHS + ["packed micro-kernel in C"]


@contextlib.contextmanager
def products_through(path):
    """Run the kernels with their products on ``path`` (one of PRODUCT_PATHS)."""
    from tinylm.kernels.cpu import blas, lstm

    if path == "packed micro-kernel in C":
        yield
        return
    with mock.patch.object(lstm, "_packed_loop_serves", lambda *sizes: False):
        if path == "numpy blas in C":
            if blas.numpy_cblas() is None:
                pytest.skip("NumPy's BLAS is not an OpenBLAS exporting cblas_sgemm here")
            yield
            return
        found = _scipy_cblas() if path == "32-bit cblas in C" else None
        if path == "32-bit cblas in C" and found is None:
            pytest.skip("needs SciPy's OpenBLAS, a CBLAS with 32-bit integers")
        with mock.patch.object(blas, "numpy_cblas", lambda: found):
            yield


@st.composite
def packed_loop_sizes(draw):
    """(T, B, H) of float32 recurrent layers that the packed loop over time serves
    (kernels/cpu/tinylm_recurrent.h): T ≥ 2, B from half a register tile (MR) to past three
    tiles, H across the NR-panel edges and past KC (256), so k passes KC in the forward's
    product (k = H) as in the backward's (k = G·H)."""
    from tinylm.kernels.cpu import gemm

    mr = gemm.kernel_info()["mr"]
    hidden = draw(st.one_of(st.integers(1, 80), st.integers(250, 300)))
    return draw(st.integers(2, 5)), draw(st.integers(-(-mr // 2), 3 * mr + 1)), hidden
