"""The int8_matmul kernels and the int8 path of the Cython lstm_stack_step against the
NumPy reference (``tinylm/reference/int8_matmul.py``, ``tinylm/reference/lstm.py``).

Property: for any M (1, a few, more than a block), N and K (1 and sizes that are not
multiples of 8, 16 or 32, so every vector tail runs), weights over all of -128..127,
row scales from 1e-30 to 1e30, float32 or float64, contiguous or not, the kernels give
the reference's product to float32 rounding: within the error bound of two float32 sums
of K terms in different orders, 2 (K + 2) u Σ_k |x[m, k]| |q[n, k]| s[n]. With
integer-valued x and power-of-two scales every product and partial sum is exact, so
there the results must be equal, element for element.

The family's tests, all in this file: the Cython kernel (``kernels/cpu/int8_matmul.pyx``)
on each of its paths (the C matrix-vector routine, the dequantized blocks through
NumPy's sgemm, and without NumPy's BLAS); the C routine ``tinylm_int8.h`` compiled for
each instruction set it has code for (AVX-512, AVX2 + FMA, portable), where the CPU runs
it; the int8 ``lstm_stack_step``; then the CUDA kernel (``kernels/cuda/int8_matmul.cu``)
through the CPU emulation and on a GPU when one is usable; and every wrapper's refusal of
bad input."""

import ctypes
import platform
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cuda_support import EXAMPLES, devices, geometries, launches_refused  # noqa: F401 (a fixture)
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import PRODUCT_PATHS, products_through, run_with_threads, seeds

from tinylm import kernels
from tinylm.kernels.cpu import int8_matmul as compiled
from tinylm.kernels.cpu import lstm as compiled_lstm
from tinylm.kernels.cuda import int8_matmul as cuda_int8
from tinylm.reference import lstm as reference_lstm
from tinylm.reference.int8_matmul import dequantize, int8_matmul, quantize_per_channel

ROOT = Path(__file__).parents[1]
UNIT = {np.dtype(np.float32): 2.0**-24, np.dtype(np.float64): 2.0**-53}  # unit roundoff


# ------------------------------------------------------------------- problems


@st.composite
def int8_problems(draw, exact=False, dtypes=(np.float32, np.float64)):
    """(x (M, K), weight (N, K) int8, scale (N,) float32). ``exact``: x integers in [-8, 8]
    and scales powers of two, so that every product and sum is exact in float32."""
    batch = draw(st.one_of(st.just(1), st.integers(2, 5), st.integers(65, 80)))
    rows = draw(st.one_of(st.integers(1, 12), st.sampled_from([31, 33, 100, 257])))
    cols = draw(st.one_of(st.integers(1, 40), st.sampled_from([63, 64, 65, 100, 127, 300])))
    dtype = draw(st.sampled_from(dtypes))
    rng = np.random.default_rng(draw(seeds))
    values = draw(st.sampled_from(["uniform", "extremes"]))
    if values == "uniform":
        weight = rng.integers(-128, 128, (rows, cols)).astype(np.int8)
    else:  # the ends of the range only: -128, -127, 127
        weight = rng.choice(np.array([-128, -127, 127], np.int8), (rows, cols))
    if exact:
        x = rng.integers(-8, 9, (batch, cols)).astype(dtype)
        scale = (2.0 ** rng.integers(-10, 11, rows)).astype(np.float32)
    else:
        x = rng.standard_normal((batch, cols)).astype(dtype)
        magnitude = draw(st.sampled_from([1e-30, 1e-3, 1.0, 1e3, 1e30]))
        scale = (magnitude * rng.uniform(0.5, 1.5, rows)).astype(np.float32)
    if draw(st.booleans()):  # non-contiguous views with the same values
        x = np.repeat(x, 2, axis=1)[:, ::2]
        weight = np.asfortranarray(weight)
        scale = np.repeat(scale, 2)[::2]
    return x, weight, scale


def error_bound(x, weight, scale):
    """2 (K + 2) u Σ_k |x[m, k]| |q[n, k]| s[n]: two sums of K terms in different orders,
    and the scaling, each off by at most (K + 1) u of the sum of the magnitudes."""
    magnitudes = (np.abs(x.astype(np.float64)) @ np.abs(weight.astype(np.float64)).T) * scale.astype(np.float64)
    return 2 * (x.shape[1] + 2) * UNIT[x.dtype] * magnitudes


def assert_close(got, x, weight, scale):
    got = np.asarray(got.get() if hasattr(got, "get") else got)
    expected = int8_matmul(x, weight, scale)
    assert got.shape == expected.shape and got.dtype == expected.dtype, (got.shape, got.dtype, expected.shape)
    error = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    bound = error_bound(x, weight, scale)
    worst = np.unravel_index(np.argmax(error - bound), error.shape) if error.size else ()
    assert (error <= bound).all(), f"error {error[worst]} above its bound {bound[worst]} at {worst}"


# --------------------------------------------------------- the Cython kernel


@pytest.mark.parametrize("path", PRODUCT_PATHS)
@given(problem=int8_problems())
def test_cython_matches_reference(path, problem):
    with products_through(path):
        assert_close(compiled.int8_matmul(*problem), *problem)


@pytest.mark.parametrize("path", PRODUCT_PATHS)
@given(problem=int8_problems(exact=True))
def test_cython_is_exact_where_the_arithmetic_is(path, problem):
    with products_through(path):
        got = compiled.int8_matmul(*problem)
    np.testing.assert_array_equal(got, int8_matmul(*problem))


def test_minus_128_is_computed_with():
    """-128 is outside quantize_per_channel's range but may be in a file: it is -128."""
    weight = np.full((5, 37), -128, np.int8)
    scale = np.full(5, 0.5, np.float32)
    for batch in (1, 3):
        x = np.ones((batch, 37), np.float32)
        np.testing.assert_array_equal(compiled.int8_matmul(x, weight, scale), np.full((batch, 5), -128 * 37 * 0.5))


@pytest.mark.parametrize("shape", [(0, 3, 4), (1, 0, 4), (3, 0, 4), (1, 3, 0), (4, 3, 0), (0, 0, 0)])
def test_empty_sizes(shape):
    batch, rows, cols = shape
    x, weight, scale = np.ones((batch, cols), np.float32), np.ones((rows, cols), np.int8), np.ones(rows, np.float32)
    got = compiled.int8_matmul(x, weight, scale)
    assert got.shape == (batch, rows) and got.dtype == np.float32
    np.testing.assert_array_equal(got, np.zeros((batch, rows)))  # K = 0: empty sums


def test_a_quantized_layer_is_close_to_its_float_product():
    """What the kernel is for: a float32 weight quantized per channel, then multiplied."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((1024, 256)).astype(np.float32) / 16
    x = rng.standard_normal((1, 256)).astype(np.float32)
    q, scale = quantize_per_channel(weight)
    np.testing.assert_allclose(compiled.int8_matmul(x, q, scale), x @ dequantize(q, scale).T, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not kernels.openmp_enabled(), reason="built without OpenMP: the kernels run on one thread only")
@pytest.mark.parametrize("shape", [(1, 1003, 77), (1, 9, 300), (1, 4096, 64)])
def test_one_and_two_threads_agree(shape):
    """The rows are split between the threads; a row's sum does not depend on the split."""
    batch, rows, cols = shape
    rng = np.random.default_rng(1)
    args = (rng.standard_normal((batch, cols)).astype(np.float32),
            rng.integers(-127, 128, (rows, cols)).astype(np.int8), rng.random(rows).astype(np.float32))
    np.testing.assert_array_equal(run_with_threads(1, compiled.int8_matmul, *args),
                                  run_with_threads(2, compiled.int8_matmul, *args))


def test_small_products_run_on_one_thread_and_big_ones_on_all():
    assert compiled.threads_for_weights(100 * 256) == 1
    assert compiled.threads_for_weights(compiled.PARALLEL_MIN_WEIGHTS) == kernels.get_num_threads()


def test_the_instruction_set_is_named():
    assert compiled.instruction_set() in ("avx512", "avx2", "portable")


BAD_CALLS = [  # (x, weight, scale, error type, message)
    (np.zeros((2, 3), np.int64), np.zeros((4, 3), np.int8), np.ones(4, np.float32), TypeError,
     "int8_matmul: x must be float32 or float64, got int64"),
    (np.zeros(3, np.float32), np.zeros((4, 3), np.int8), np.ones(4, np.float32), ValueError,
     r"int8_matmul: x \(3,\) must be 2-D \(M, K\)"),
    (np.zeros((2, 3), np.float32), np.zeros((4, 5), np.int8), np.ones(4, np.float32), ValueError,
     r"int8_matmul: weight \(4, 5\) must be \(N, K\) with K = 3 from x \(2, 3\)"),
    (np.zeros((2, 3), np.float32), np.zeros((4, 3), np.uint8), np.ones(4, np.float32), TypeError,
     "int8_matmul: weight must be int8, got uint8"),
    (np.zeros((2, 3), np.float32), np.zeros((4, 3), np.float32), np.ones(4, np.float32), TypeError,
     "int8_matmul: weight must be int8, got float32"),
    (np.zeros((2, 3), np.float32), np.zeros((4, 3), np.int8), np.ones(4, np.float64), TypeError,
     "int8_matmul: scale must be float32, got float64"),
    (np.zeros((2, 3), np.float32), np.zeros((4, 3), np.int8), np.ones(3, np.float32), ValueError,
     r"int8_matmul: scale \(3,\) must be \(4,\)"),
    (np.zeros((2, 3), np.float32), [[1, 2, 3]], np.ones(1, np.float32), TypeError,
     "int8_matmul: weight must be a NumPy or CuPy array, got list"),
]


@pytest.mark.parametrize("x, weight, scale, error, message", BAD_CALLS)
def test_cython_refuses_bad_input(x, weight, scale, error, message):
    with pytest.raises(error, match=message):
        compiled.int8_matmul(x, weight, scale)


# ------------------------------------- tinylm_int8.h on each instruction set

HARNESS = """
#include "tinylm_int8.h"
const char* isa(void) { return tinylm_int8_isa(); }
void matvec(const float* x, const int8_t* q, long ldq, const float* scale, float* y, long rows, long cols,
            int accumulate, int threads) {
    tinylm_int8_matvec(x, q, ldq, scale, y, rows, cols, accumulate, threads);
}
"""
# name -> (gcc flags on top of the x86-64 baseline, the /proc/cpuinfo flags the code needs)
INSTRUCTION_SETS = {
    "avx512": (["-mavx512f", "-mavx2", "-mfma"], {"avx512f", "avx2", "fma"}),
    "avx2": (["-mavx2", "-mfma"], {"avx2", "fma"}),
    "portable": ([], set()),
}


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


@pytest.fixture(scope="module", params=list(INSTRUCTION_SETS))
def routine(request, tmp_path_factory):
    """tinylm_int8.h built for one instruction set, loaded with ctypes."""
    name = request.param
    flags, needs = INSTRUCTION_SETS[name]
    if platform.machine() not in ("x86_64", "AMD64") or shutil.which("gcc") is None:
        pytest.skip("needs gcc on x86-64")
    if not needs <= cpu_flags():
        pytest.skip(f"this CPU cannot run the {name} code (lacks {', '.join(sorted(needs - cpu_flags()))})")
    folder = tmp_path_factory.mktemp(f"int8_{name}")
    (folder / "harness.c").write_text(HARNESS)
    library = folder / "harness.so"
    subprocess.run(["gcc", "-O3", "-march=x86-64", *flags, "-fopenmp", "-shared", "-fPIC", "-Wall", "-Werror",
                    f"-I{ROOT / 'kernels' / 'cpu'}", str(folder / "harness.c"), "-o", str(library)],
                   check=True, capture_output=True)
    lib = ctypes.CDLL(str(library))
    lib.isa.restype = ctypes.c_char_p
    assert lib.isa().decode() == name
    return lib


@settings(max_examples=60)
@given(rows=st.integers(0, 13), cols=st.integers(0, 70), padding=st.integers(0, 9), seed=seeds,
       accumulate=st.booleans(), threads=st.sampled_from([1, 2, 3]))
def test_each_instruction_set_is_exact_where_the_arithmetic_is(routine, rows, cols, padding, seed, accumulate,
                                                                threads):
    """y = s · (q x) (+ y), rows spaced cols + padding apart (as lstm_stack_step reads the
    halves of its stacked rows), every column count 0..70 so every tail length runs,
    integer x and power-of-two scales: exact, so equal to the reference."""
    rng = np.random.default_rng(seed)
    storage = rng.integers(-128, 128, (rows, cols + padding)).astype(np.int8)
    q = storage[:, :cols]  # a view: rows cols + padding apart
    x = rng.integers(-8, 9, cols).astype(np.float32)
    scale = (2.0 ** rng.integers(-10, 11, rows)).astype(np.float32)
    start = rng.integers(-50, 51, rows).astype(np.float32)
    y = start.copy()
    routine.matvec(ctypes.c_void_p(x.ctypes.data), ctypes.c_void_p(storage.ctypes.data), ctypes.c_long(cols + padding),
                   ctypes.c_void_p(scale.ctypes.data), ctypes.c_void_p(y.ctypes.data), ctypes.c_long(rows),
                   ctypes.c_long(cols), ctypes.c_int(int(accumulate)), ctypes.c_int(threads))
    expected = int8_matmul(x[None], q, scale)[0] + (start if accumulate else 0)
    np.testing.assert_array_equal(y, expected)


# ------------------------------------------------- the int8 lstm_stack_step


def int8_stack(rng, layers, batch, hidden, size=1.0):
    """lstm_stack_step's arguments with int8 weights quantized per channel from float ones
    (each half of a stacked row with its own scales); ``size`` scales the gates (30:
    saturated)."""
    gates0 = (size * rng.standard_normal((batch, 4 * hidden))).astype(np.float32)
    h, c = (rng.standard_normal((layers, batch, hidden)).astype(np.float32) for _ in range(2))
    w_hh0, w_hh0_scale = quantize_per_channel(rng.standard_normal((4 * hidden, hidden)) / np.sqrt(hidden))
    stacked = np.zeros((layers - 1, 4 * hidden, 2 * hidden), np.int8)
    stacked_scale = np.zeros((layers - 1, 2, 4 * hidden), np.float32)
    for k in range(layers - 1):
        for half in range(2):
            weights = size * rng.standard_normal((4 * hidden, hidden)) / np.sqrt(hidden)
            stacked[k, :, half * hidden:(half + 1) * hidden], stacked_scale[k, half] = quantize_per_channel(weights)
    biases = rng.standard_normal((layers - 1, 4 * hidden)).astype(np.float32)
    return gates0, h, c, w_hh0, stacked, biases, w_hh0_scale, stacked_scale


@st.composite
def int8_stack_problems(draw):
    layers, batch, hidden = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 20))
    rng = np.random.default_rng(draw(seeds))
    gates0, h, c, w_hh0, stacked, biases, w_hh0_scale, stacked_scale = int8_stack(
        rng, layers, batch, hidden, draw(st.sampled_from([1.0, 30.0])))
    if draw(st.booleans()):  # non-contiguous views with the same values
        h, stacked = np.asfortranarray(h), np.ascontiguousarray(stacked.transpose(0, 2, 1)).transpose(0, 2, 1)
        w_hh0_scale = np.repeat(w_hh0_scale, 2)[::2]
    return gates0, h, c, w_hh0, stacked, biases, w_hh0_scale, stacked_scale


def stack_tolerance(problem, expected_h):
    """The largest error bound of a layer's gates (``error_bound``; a later layer's gates
    are two int8 sums), carried through the layers: an error e in layer k-1's h reaches
    layer k's gates as at most e · A, A the largest Σ|s q| of its W_ih rows, and the
    cell's functions have slopes of at most 1."""
    gates0, h, c, w_hh0, stacked, biases, w_hh0_scale, stacked_scale = problem
    hidden = h.shape[2]
    bounds, growth = [error_bound(h[0], w_hh0, w_hh0_scale).max()], 1.0
    for k in range(1, h.shape[0]):
        w_ih, w_hh = stacked[k - 1, :, :hidden], stacked[k - 1, :, hidden:]
        bounds.append((error_bound(expected_h[k - 1], w_ih, stacked_scale[k - 1, 0])
                       + error_bound(h[k], w_hh, stacked_scale[k - 1, 1])).max())
        growth = max(growth, float((np.abs(w_ih) * stacked_scale[k - 1, 0][:, None]).sum(axis=1).max()))
    return 2 * (max(bounds) + 1e-6) * (1 + growth) ** (h.shape[0] - 1)


@given(problem=int8_stack_problems())
def test_the_int8_stack_step_matches_reference(problem):
    new_h, new_c = compiled_lstm.lstm_stack_step(*problem)
    expected_h, expected_c = reference_lstm.lstm_stack_step(*problem)
    assert new_h.dtype == np.float32 and new_h.shape == problem[1].shape
    tolerance = stack_tolerance(problem, expected_h)
    np.testing.assert_allclose(new_h, expected_h, rtol=1e-5, atol=tolerance)
    np.testing.assert_allclose(new_c, expected_c, rtol=1e-5, atol=tolerance)


@pytest.mark.skipif(not kernels.openmp_enabled(), reason="built without OpenMP: the kernels run on one thread only")
def test_the_int8_stack_step_gives_the_same_on_one_and_two_threads():
    problem = int8_stack(np.random.default_rng(3), layers=3, batch=2, hidden=67)
    one, two = (run_with_threads(t, compiled_lstm.lstm_stack_step, *problem) for t in (1, 2))
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


def test_the_int8_stack_step_in_float64_is_the_reference():
    problem = list(int8_stack(np.random.default_rng(4), layers=2, batch=2, hidden=5))
    for i in (0, 1, 2, 5):  # gates0, h, c, biases
        problem[i] = problem[i].astype(np.float64)
    for got, expected in zip(compiled_lstm.lstm_stack_step(*problem), reference_lstm.lstm_stack_step(*problem)):
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, expected)


def test_the_int8_stack_step_refuses_bad_weights_and_scales():
    h = np.zeros((2, 1, 3), np.float32)
    good = dict(gates0=np.zeros((1, 12), np.float32), h=h, c=h, w_hh0=np.zeros((12, 3), np.int8),
                stacked=np.zeros((1, 12, 6), np.int8), biases=np.zeros((1, 12), np.float32),
                w_hh0_scale=np.ones(12, np.float32), stacked_scale=np.ones((1, 2, 12), np.float32))
    compiled_lstm.lstm_stack_step(**good)
    bad = [
        (dict(stacked_scale=None), ValueError, "lstm_stack_step: int8 weights need both w_hh0_scale and stacked_scale"),
        (dict(w_hh0=np.zeros((12, 3), np.float32)), TypeError, "lstm_stack_step: w_hh0 must be int8, got float32"),
        (dict(stacked=np.zeros((1, 12, 5), np.int8)), ValueError, r"lstm_stack_step: stacked \(1, 12, 5\) must be"),
        (dict(w_hh0_scale=np.ones(11, np.float32)), ValueError,
         r"lstm_stack_step: w_hh0_scale \(11,\) must be \(12,\)"),
        (dict(stacked_scale=np.ones((1, 12), np.float32)), ValueError,
         r"lstm_stack_step: stacked_scale \(1, 12\) must be \(1, 2, 12\)"),
        (dict(stacked_scale=np.ones((1, 2, 12))), TypeError, "lstm_stack_step: stacked_scale must be float32"),
        (dict(biases=np.zeros((1, 12))), TypeError, "lstm_stack_step: biases is float64, expected float32"),
    ]
    for change, error, message in bad:
        with pytest.raises(error, match=message):
            compiled_lstm.lstm_stack_step(**{**good, **change})


# ------------------------------- the int8 lstm_stack_step with the output layer


def int8_output_layer(rng, vocab, hidden, bias=True):
    """fc_weight (V, H) int8, fc_scale (V,), fc_bias (V,) or None: lstm_stack_step's output layer."""
    fc_weight, fc_scale = quantize_per_channel(rng.standard_normal((vocab, hidden)) / np.sqrt(max(hidden, 1)))
    return fc_weight, fc_scale, rng.standard_normal(vocab).astype(np.float32) if bias else None


@st.composite
def int8_stack_problems_with_logits(draw):
    """An int8 stack step and an output layer of V rows (0, 1, fewer than a dot4 group, not
    a multiple of 4, more than a thread's block), with or without a bias, contiguous or
    not."""
    problem = list(draw(int8_stack_problems()))
    vocab = draw(st.one_of(st.integers(0, 9), st.sampled_from([13, 100, 257])))
    rng = np.random.default_rng(draw(seeds))
    fc_weight, fc_scale, fc_bias = int8_output_layer(rng, vocab, problem[1].shape[2], draw(st.booleans()))
    if draw(st.booleans()):  # non-contiguous views with the same values
        fc_weight, fc_scale = np.asfortranarray(fc_weight), np.repeat(fc_scale, 2)[::2]
    return (*problem, fc_weight, fc_scale, fc_bias)


def logits_tolerance(problem, expected_h, h_tolerance):
    """The error of h[-1] (``stack_tolerance``) through the output layer (at most
    h_tolerance · Σ|s q| of a row), plus the row's own error bound (``error_bound``)."""
    fc_weight, fc_scale = problem[8], problem[9]
    growth = (np.abs(fc_weight.astype(np.float64)) * fc_scale[:, None]).sum(axis=1).max(initial=0.0)
    return h_tolerance * (1 + growth) + error_bound(expected_h[-1], fc_weight, fc_scale).max(initial=0.0) + 1e-6


@given(problem=int8_stack_problems_with_logits())
def test_the_int8_stack_step_with_the_output_layer_matches_reference(problem):
    new_h, new_c, logits = compiled_lstm.lstm_stack_step(*problem)
    expected_h, expected_c, expected_logits = reference_lstm.lstm_stack_step(*problem)
    batch, vocab = problem[1].shape[1], problem[8].shape[0]
    assert logits.dtype == np.float32 and logits.shape == expected_logits.shape == (batch, vocab)
    tolerance = stack_tolerance(problem[:8], expected_h)
    np.testing.assert_allclose(new_h, expected_h, rtol=1e-5, atol=tolerance)
    np.testing.assert_allclose(new_c, expected_c, rtol=1e-5, atol=tolerance)
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-5,
                               atol=logits_tolerance(problem, expected_h, tolerance))


def test_the_output_layer_changes_nothing_else():
    """The same step with and without the output layer: the same h and c, bit for bit."""
    rng = np.random.default_rng(6)
    problem = int8_stack(rng, layers=2, batch=1, hidden=64)
    with_logits = compiled_lstm.lstm_stack_step(*problem, *int8_output_layer(rng, 100, 64))
    for a, b in zip(compiled_lstm.lstm_stack_step(*problem), with_logits[:2]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("vocab", [1, 3, 4, 13, 100, 257])
def test_the_logits_are_the_int8_matmul_kernels_of_the_new_h(vocab):
    """The same routine (``tinylm_int8_rows``, rows in groups of 4) on the same h: each
    batch row's logits equal compiled int8_matmul(new_h[-1, b]) + fc_bias bit for bit (one
    row at a time: int8_matmul's matrix-vector path; several go through sgemm)."""
    rng = np.random.default_rng(vocab)
    problem = (*int8_stack(rng, layers=2, batch=2, hidden=37), *int8_output_layer(rng, vocab, 37))
    new_h, _, logits = compiled_lstm.lstm_stack_step(*problem)
    for b in range(2):
        row = compiled.int8_matmul(new_h[-1, b:b + 1], problem[8], problem[9]) + problem[10]
        np.testing.assert_array_equal(logits[b:b + 1], row)


@pytest.mark.skipif(not kernels.openmp_enabled(), reason="built without OpenMP: the kernels run on one thread only")
def test_the_output_layer_gives_the_same_on_one_two_and_three_threads():
    rng = np.random.default_rng(8)
    problem = (*int8_stack(rng, layers=3, batch=2, hidden=68), *int8_output_layer(rng, 103, 68))
    one, two, three = (run_with_threads(t, compiled_lstm.lstm_stack_step, *problem) for t in (1, 2, 3))
    for a, b, c in zip(one, two, three):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_the_int8_stack_step_with_the_output_layer_in_float64_is_the_reference():
    rng = np.random.default_rng(9)
    problem = list(int8_stack(rng, layers=2, batch=2, hidden=5)) + list(int8_output_layer(rng, 7, 5))
    for i in (0, 1, 2, 5):  # gates0, h, c, biases
        problem[i] = problem[i].astype(np.float64)
    for got, expected in zip(compiled_lstm.lstm_stack_step(*problem), reference_lstm.lstm_stack_step(*problem)):
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, expected)


def test_unusual_arrays_give_the_results_of_ordinary_ones():
    """A C-contiguous but unaligned view into a byte buffer (which the C checks of
    ``_int8_step`` do not take: the Python checks copy it), a read-only array and a
    subclass of ndarray (read in place): the results of ordinary arrays."""
    rng = np.random.default_rng(10)
    problem = [*int8_stack(rng, layers=2, batch=1, hidden=12), *int8_output_layer(rng, 9, 12)]
    expected = compiled_lstm.lstm_stack_step(*problem)
    storage = np.zeros(problem[1].nbytes + 1, np.uint8)
    unaligned = storage[1:].view(np.float32).reshape(problem[1].shape)  # h, one byte off
    unaligned[...] = problem[1]
    assert not unaligned.flags.aligned and unaligned.flags.c_contiguous
    read_only = problem[3].copy()
    read_only.flags.writeable = False
    for index, value in ((1, unaligned), (3, read_only), (8, problem[8].view(np.memmap))):
        changed = list(problem)
        changed[index] = value
        for got, want in zip(compiled_lstm.lstm_stack_step(*changed), expected):
            np.testing.assert_array_equal(got, want)


ARGUMENT_NAMES = ("gates0", "h", "c", "w_hh0", "stacked", "biases", "w_hh0_scale", "stacked_scale", "fc_weight",
                  "fc_scale", "fc_bias")


@settings(max_examples=300)
@given(data=st.data())
def test_no_array_of_another_shape_or_dtype_gets_through_the_c_checks(data):
    """One argument of a good int8 step (output layer included) replaced by an array of a
    shape near its own (one side one more or one less, a dimension more or fewer, or its
    own) and any of several dtypes, sometimes a strided view: the step answers only when
    the array has the argument's own shape and dtype, and otherwise refuses it with an
    error naming the op. ``_int8_step``'s C checks are what stand between such an array
    and a kernel that indexes without bounds checks."""
    rng = np.random.default_rng(data.draw(seeds))
    layers, batch, hidden, vocab = (data.draw(st.integers(low, high)) for low, high in ((1, 3), (1, 2), (1, 6), (0, 6)))
    good = [*int8_stack(rng, layers, batch, hidden), *int8_output_layer(rng, vocab, hidden)]
    index = data.draw(st.integers(0, len(good) - 1))
    shape = list(good[index].shape)
    change = data.draw(st.sampled_from(["same", "side", "more", "fewer"]))
    if change == "side" and shape:
        axis = data.draw(st.integers(0, len(shape) - 1))
        shape[axis] = max(0, shape[axis] + data.draw(st.sampled_from([-1, 1])))
    elif change == "more":
        shape.insert(data.draw(st.integers(0, len(shape))), data.draw(st.integers(1, 2)))
    elif change == "fewer" and shape:
        shape.pop(data.draw(st.integers(0, len(shape) - 1)))
    dtype = data.draw(st.sampled_from([good[index].dtype, np.int8, np.float32, np.float64, np.int64, np.float16]))
    value = rng.integers(-3, 4, shape).astype(dtype)
    if data.draw(st.booleans()) and value.ndim:  # a strided view with the same shape
        value = np.repeat(value, 2, axis=-1)[..., ::2]
    changed = list(good)
    changed[index] = value
    try:
        result = compiled_lstm.lstm_stack_step(*changed)
    except (ValueError, TypeError) as error:
        assert "lstm_stack_step" in str(error), error
        return
    assert value.shape == good[index].shape and value.dtype == good[index].dtype, (
        f"{ARGUMENT_NAMES[index]} {value.shape} {value.dtype} was taken for {good[index].shape} {good[index].dtype}")
    expected = reference_lstm.lstm_stack_step(*changed)
    for got, want in zip(result, expected):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)


def test_the_output_layer_is_refused_when_it_does_not_fit():
    h = np.zeros((2, 1, 3), np.float32)
    good = dict(gates0=np.zeros((1, 12), np.float32), h=h, c=h, w_hh0=np.zeros((12, 3), np.int8),
                stacked=np.zeros((1, 12, 6), np.int8), biases=np.zeros((1, 12), np.float32),
                w_hh0_scale=np.ones(12, np.float32), stacked_scale=np.ones((1, 2, 12), np.float32),
                fc_weight=np.zeros((5, 3), np.int8), fc_scale=np.ones(5, np.float32), fc_bias=np.zeros(5, np.float32))
    assert compiled_lstm.lstm_stack_step(**good)[2].shape == (1, 5)
    bad = [
        (dict(fc_scale=None), ValueError, "lstm_stack_step: the output layer needs fc_weight and fc_scale together"),
        (dict(fc_weight=None, fc_scale=None), ValueError, "lstm_stack_step: the output layer needs fc_weight and"),
        (dict(w_hh0_scale=None, stacked_scale=None), ValueError,
         r"lstm_stack_step: the output layer \(fc_weight, fc_scale, fc_bias\) needs int8 weights"),
        (dict(fc_weight=np.zeros((5, 3), np.float32)), TypeError,
         "lstm_stack_step: fc_weight must be int8, got float32"),
        (dict(fc_weight=np.zeros((5, 4), np.int8)), ValueError,
         r"lstm_stack_step: fc_weight \(5, 4\) must be \(V, H\) with H = 3 from h \(2, 1, 3\)"),
        (dict(fc_weight=np.zeros(5, np.int8)), ValueError, r"lstm_stack_step: fc_weight \(5,\) must be \(V, H\)"),
        (dict(fc_scale=np.ones(4, np.float32)), ValueError, r"lstm_stack_step: fc_scale \(4,\) must be \(5,\)"),
        (dict(fc_scale=np.ones(5)), TypeError, "lstm_stack_step: fc_scale must be float32, got float64"),
        (dict(fc_bias=np.zeros((1, 5), np.float32)), ValueError, r"lstm_stack_step: fc_bias \(1, 5\) must be \(5,\)"),
        (dict(fc_bias=np.zeros(5, np.float16)), TypeError, "lstm_stack_step: fc_bias must be float32, got float16"),
        (dict(h=h.astype(">f4"), c=h.astype(">f4")), TypeError, "lstm_stack_step: h is >f4, expected float32"),
    ]
    for change, error, message in bad:
        with pytest.raises(error, match=message):
            compiled_lstm.lstm_stack_step(**{**good, **change})
    with pytest.raises(ValueError, match=r"lstm_stack_step: the output layer \(fc_weight, fc_scale, fc_bias\) needs"):
        reference_lstm.lstm_stack_step(**{**good, "w_hh0_scale": None, "stacked_scale": None})


# ---------------------------------------------------- CUDA (kernels/cuda/int8_matmul.cu)
# Against the reference through the CPU emulation, and on a GPU when one is usable.


@devices
@settings(max_examples=EXAMPLES)
@given(problem=int8_problems(), geometry=geometries)
def test_cuda_matches_reference(device, problem, geometry):
    device.require()
    threads, max_blocks = geometry
    x, weight, scale = problem
    got = cuda_int8.int8_matmul(device.put(x), device.put(weight), device.put(scale), threads=threads,
                                max_blocks=max_blocks)
    assert_close(got, x, weight, scale)


@devices
@settings(max_examples=EXAMPLES)
@given(problem=int8_problems(exact=True), geometry=geometries)
def test_cuda_is_exact_where_the_arithmetic_is(device, problem, geometry):
    device.require()
    threads, max_blocks = geometry
    x, weight, scale = problem
    got = cuda_int8.int8_matmul(device.put(x), device.put(weight), device.put(scale), threads=threads,
                                max_blocks=max_blocks)
    np.testing.assert_array_equal(device.get(got), int8_matmul(x, weight, scale))


@devices
@pytest.mark.parametrize("shape", [(0, 3, 4), (1, 0, 4), (1, 3, 0), (4, 3, 0)])
def test_cuda_empty_sizes(device, shape):
    device.require()
    batch, rows, cols = shape
    x, weight, scale = np.ones((batch, cols), np.float32), np.ones((rows, cols), np.int8), np.ones(rows, np.float32)
    got = device.get(cuda_int8.int8_matmul(device.put(x), device.put(weight), device.put(scale)))
    assert got.shape == (batch, rows)
    np.testing.assert_array_equal(got, np.zeros((batch, rows)))


@pytest.mark.usefixtures("launches_refused")
@pytest.mark.parametrize("x, weight, scale, error, message", BAD_CALLS)
def test_cuda_refuses_bad_input_before_launching(x, weight, scale, error, message):
    with pytest.raises(error, match=message):
        cuda_int8.int8_matmul(x, weight, scale)
