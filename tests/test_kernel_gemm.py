"""The matrix products of ``kernels/cpu/gemm.pyx`` against their reference
(``tinylm/reference/gemm.py``): ``gemm``, NumPy's BLAS in blocks on the OpenMP team, and
``gemm_packed``, the packed micro-kernel of ``kernels/cpu/tinylm_gemm.h``.

Property: for sizes 0..70 in each dimension (so every edge of the register tile, and
K = 0), both transposes, strided inputs, C = and C +=, float32 and float64, each engine
agrees with the product computed in float64 within float32's worst-case rounding bound.
The team's blocks are checked on 1 and 2 threads with every size parallel, on each way
its products can go (NumPy's 64-bit-integer CBLAS, a 32-bit one, none: np.matmul); the
micro-kernel's answer does not depend on the thread count. Its blocking boundaries (K past
KC, M past MC) get sizes of their own, and every instruction-set path of the header that
this CPU can run is compiled on its own and checked (the package runs only the widest one).
"""

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import PRODUCT_PATHS, products_through, run_with_threads, seeds

from tinylm import kernels
from tinylm.kernels.cpu import gemm as compiled
from tinylm.reference import gemm as reference

HEADER_DIR = Path(__file__).resolve().parents[1] / "kernels" / "cpu"


@pytest.fixture(autouse=True)
def blas_at_one_thread():
    """NumPy's BLAS at one thread, as the cython backend holds it, so that the team path
    splits products whatever test ran before (with BLAS on threads of its own the team
    stands down: ``blas.team_may_call_blas``)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        yield
EPS = {np.float32: np.finfo(np.float32).eps, np.float64: np.finfo(np.float64).eps}
INFO = compiled.kernel_info()


def operands(rng, m, k, n, dtype, transpose_a, transpose_b, strided):
    """a, b such that op(a) is (m, k) and op(b) is (k, n); strided: every other column of a wider array."""
    def matrix(rows, cols):
        full = rng.standard_normal((rows, 2 * cols if strided else cols)).astype(dtype)
        return full[:, ::2] if strided else full

    a = matrix(k, m) if transpose_a else matrix(m, k)
    b = matrix(n, k) if transpose_b else matrix(k, n)
    return a, b


def assert_close(got, a_op, b_op, start=None, start_magnitude=None):
    """|got - (start +) a_op b_op| within (K + 2) eps (|start| + |a_op| |b_op|): the worst-case
    rounding of a K-term sum, computed in float64. A wrong or missing term is off by O(1).
    ``start_magnitude``: the size of start's terms when it is a sum that may cancel (out's
    start plus a bias, each added with its own rounding)."""
    dtype = got.dtype.type
    exact = a_op.astype(np.float64) @ b_op.astype(np.float64)
    scale = np.abs(a_op.astype(np.float64)) @ np.abs(b_op.astype(np.float64))
    if start is not None:
        exact, scale = exact + start, scale + (np.abs(start) if start_magnitude is None else start_magnitude)
    bound = (a_op.shape[1] + 2) * EPS[dtype] * scale + np.finfo(dtype).tiny
    error = np.abs(got - exact)
    assert got.shape == exact.shape, (got.shape, exact.shape)
    worst = np.unravel_index(np.argmax(error - bound), error.shape) if error.size else ()
    assert (error <= bound).all(), f"error {error[worst]} above its bound {bound[worst]} at {worst}"


@settings(max_examples=150, deadline=None)
@given(m=st.integers(0, 70), k=st.integers(0, 70), n=st.integers(0, 70), seed=seeds,
       dtype=st.sampled_from([np.float32, np.float64]), transpose_a=st.booleans(), transpose_b=st.booleans(),
       strided=st.booleans(), accumulate=st.booleans(), packed=st.booleans())
def test_matches_the_reference(m, k, n, seed, dtype, transpose_a, transpose_b, strided, accumulate, packed):
    rng = np.random.default_rng(seed)
    a, b = operands(rng, m, k, n, dtype, transpose_a, transpose_b, strided)
    a_op, b_op = (a.T if transpose_a else a), (b.T if transpose_b else b)
    start = rng.standard_normal((m, n)).astype(dtype) if accumulate else None
    out = start.copy() if accumulate else None
    if packed:
        got = compiled.gemm_packed(a, compiled.pack_weight(b, transpose_b), out, accumulate, transpose_a)
    else:
        got = compiled.gemm(a, b, out, accumulate, transpose_a, transpose_b)
    expected = reference.gemm(a, b, None if start is None else start.copy(), accumulate, transpose_a, transpose_b)
    assert got.dtype == expected.dtype == dtype
    if out is not None:
        assert got is out
    assert_close(got, a_op, b_op, start)


@pytest.mark.parametrize("m, k, n", [(INFO["mc"] + 5, INFO["kc"] + 45, INFO["nr"] * 2 + 3),  # several blocks of M and K
                                     (2 * INFO["mc"], 2 * INFO["kc"], INFO["nr"]),  # whole blocks only
                                     (1, 3 * INFO["kc"] + 1, 1), (INFO["mr"], 1, INFO["nr"])])
@pytest.mark.parametrize("accumulate", [False, True])
def test_blocking_boundaries_of_the_micro_kernel(m, k, n, accumulate):
    rng = np.random.default_rng(m + k + n)
    a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
    start = rng.standard_normal((m, n)).astype(np.float32)
    got = compiled.gemm_packed(a, compiled.pack_weight(b), start.copy() if accumulate else None, accumulate)
    assert_close(got, a, b, start if accumulate else None)


# ------------------------------------------------ gemm: NumPy's BLAS in blocks on the OpenMP team

@settings(max_examples=120, deadline=None)
@given(m=st.one_of(st.integers(0, 3), st.integers(1, 150)), k=st.integers(0, 40),
       n=st.one_of(st.integers(0, 3), st.integers(1, 150)), seed=seeds,
       dtype=st.sampled_from([np.float32, np.float64]), transpose_a=st.booleans(), transpose_b=st.booleans(),
       strided=st.booleans(), accumulate=st.booleans(), with_bias=st.booleans(), threads=st.sampled_from([1, 2]),
       path=st.sampled_from(PRODUCT_PATHS))
def test_the_team_matches_the_reference(m, k, n, seed, dtype, transpose_a, transpose_b, strided, accumulate,
                                        with_bias, threads, path):
    """Every size parallel (the threshold at 0), so a product of 17 rows or columns and more
    is cut in two blocks; M or N of 0 to 3 for the edges (one row: BLAS's gemv); with and
    without a bias row, which each block adds to its own rows and columns only."""
    rng = np.random.default_rng(seed)
    a, b = operands(rng, m, k, n, dtype, transpose_a, transpose_b, strided)
    a_op, b_op = (a.T if transpose_a else a), (b.T if transpose_b else b)
    start = rng.standard_normal((m, n)).astype(dtype) if accumulate else None
    bias = rng.standard_normal(n).astype(dtype) if with_bias else None
    out = start.copy() if accumulate else np.full((m, n), np.nan, dtype)  # never read without accumulate
    with products_through(path):
        got = run_with_threads(threads, compiled.gemm, a, b, out, accumulate, transpose_a, transpose_b, bias)
    assert got is out and got.dtype == dtype
    # what the product is added to, exactly (in float64): out's start and the bias on every row
    expected_start = start if bias is None else (0 if start is None else start.astype(np.float64)) + bias
    magnitude = None if bias is None else (0 if start is None else np.abs(start.astype(np.float64))) + np.abs(bias)
    assert_close(got, a_op, b_op, expected_start, magnitude)
    if with_bias:
        expected = reference.gemm(a, b, None if start is None else start.copy(), accumulate, transpose_a,
                                  transpose_b, bias)
        assert_close(expected, a_op, b_op, expected_start, magnitude)  # the reference means the same


@pytest.mark.parametrize("m, k, n", [(2048, 128, 384), (384, 2048, 128), (1, 300, 1000), (1000, 300, 1), (33, 7, 17)])
@pytest.mark.parametrize("threads", [1, 2])
def test_the_team_on_the_transformers_shapes(m, k, n, threads):
    """Linear's three products (x Wᵀ, gy W, gyᵀ x) at the default transformer's sizes, and
    blocks that do not divide evenly; each thread's block computed whole by one sgemm."""
    rng = np.random.default_rng(m + n)
    x, w = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((n, k)).astype(np.float32)
    assert_close(run_with_threads(threads, compiled.gemm, x, w, None, False, False, True), x, w.T)
    gy = rng.standard_normal((m, n)).astype(np.float32)
    assert_close(run_with_threads(threads, compiled.gemm, gy, w), gy, w)
    assert_close(run_with_threads(threads, compiled.gemm, gy, x, None, False, True), gy.T, x)


def test_the_team_reads_transposes_and_row_slices_in_place():
    """What BLAS can describe (one axis of unit stride, rows far enough apart) is passed as
    it is, with a transpose flag where the unit stride is along the rows; the rest is copied."""
    x = np.arange(60, dtype=np.float32).reshape(6, 10)
    for view, transposed, ld in ((x, False, 10), (x.T, True, 10), (x[1:5, 2:7], False, 10), (x[2:4].T, True, 10),
                                 (x[:, 3:4].T, True, 10), (x[:1, ::3], True, 3), (x[:, 3:4], False, 10)):
        stored, flip, got_ld = compiled._blas_operand(view)
        assert (flip, got_ld) == (transposed, ld), view.strides
        assert np.shares_memory(stored, x)
        np.testing.assert_array_equal(stored.T if flip else stored, view)
    for copied in (x[:, ::2], x[::-1], x[::2, ::2]):
        stored, flip, ld = compiled._blas_operand(copied)
        assert not flip and ld == copied.shape[1] and stored.flags.c_contiguous and not np.shares_memory(stored, x)


def test_the_team_reads_an_operand_or_bias_that_overlaps_out_from_a_copy():
    rng = np.random.default_rng(6)
    square = rng.standard_normal((40, 40)).astype(np.float32)
    for transpose_a, transpose_b in ((False, False), (True, True)):
        a, b = square.copy(), square.copy()
        expected = (a.T if transpose_a else a).astype(np.float64) @ (b.T if transpose_b else b)
        run_with_threads(2, compiled.gemm, a, b, a, False, transpose_a, transpose_b)  # out is a
        np.testing.assert_allclose(a, expected, rtol=1e-4, atol=1e-4)
        a, b = square.copy(), square.copy()
        before = b.copy()
        run_with_threads(2, compiled.gemm, a, b, b, True, transpose_a, transpose_b)  # out is b, added to
        np.testing.assert_allclose(b, before + expected, rtol=1e-4, atol=1e-4)
    wide = rng.standard_normal((41, 40)).astype(np.float32)
    a, original = rng.standard_normal((40, 40)).astype(np.float32), wide.copy()
    run_with_threads(2, compiled.gemm, a, square, wide[:40], False, False, False, wide[20])  # bias: a row of out
    np.testing.assert_allclose(wide[:40], a.astype(np.float64) @ square + original[20], rtol=1e-4, atol=1e-4)


def test_the_lstm_products():
    """h·W_hhᵀ (forward), dgates·W_hh (back to h), dW_hh += dgatesᵀ·h (weight gradient),
    each with W_hh packed once and used for several steps."""
    rng = np.random.default_rng(0)
    batch, hidden = 5, 19
    w_hh = rng.standard_normal((4 * hidden, hidden)).astype(np.float32)
    forward, backward = compiled.pack_weight(w_hh, transpose=True), compiled.pack_weight(w_hh)
    assert forward.shape == (hidden, 4 * hidden) and backward.shape == (4 * hidden, hidden)
    dw = np.zeros_like(w_hh)
    expected_dw = np.zeros((4 * hidden, hidden))
    for _ in range(3):
        h = rng.standard_normal((batch, hidden), np.float32)
        dgates = rng.standard_normal((batch, 4 * hidden), np.float32)
        assert_close(compiled.gemm_packed(h, forward), h, w_hh.T)
        assert_close(compiled.gemm_packed(dgates, backward), dgates, w_hh)
        before = dw.copy()
        compiled.gemm(dgates, h, dw, True, True)
        assert_close(dw, dgates.T, h, before)
        expected_dw += dgates.T.astype(np.float64) @ h
    np.testing.assert_allclose(dw, expected_dw, rtol=1e-4, atol=1e-4)


def test_packing_keeps_every_value_and_pads_with_zeros():
    w = np.arange(3 * 37, dtype=np.float32).reshape(3, 37)
    for transpose, b in ((False, w), (True, w.T)):
        packed = compiled.pack_weight(w, transpose)
        np.testing.assert_array_equal(packed.unpack(), b)
        panels = packed.data.reshape(-1, b.shape[0], INFO["nr"])  # (panels, K, NR)
        np.testing.assert_array_equal(panels[0, 1, :min(INFO["nr"], b.shape[1])], b[1, :INFO["nr"]])
        width = b.shape[1] % INFO["nr"]
        if width:
            assert not panels[-1, :, width:].any()  # the padding of the last panel
        assert packed.data.ctypes.data % 64 == 0


@pytest.mark.parametrize("shape", [(0, 5), (4, 0), (0, 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_empty_weights_pack_and_unpack(shape, dtype):
    packed = compiled.pack_weight(np.zeros(shape, dtype))
    assert packed.shape == shape and packed.unpack().shape == shape and packed.unpack().dtype == dtype
    np.testing.assert_array_equal(compiled.gemm_packed(np.ones((3, shape[0]), dtype), packed), np.zeros((3, shape[1])))


def test_the_packed_weight_is_a_copy():
    w = np.ones((4, 6), np.float32)
    packed = compiled.pack_weight(w)
    w[:] = 2
    np.testing.assert_array_equal(compiled.gemm_packed(np.ones((1, 4), np.float32), packed), np.full((1, 6), 4.0))


def test_without_accumulate_out_is_never_read():
    a, b = np.ones((9, 5), np.float32), np.ones((5, 33), np.float32)
    out = np.full((9, 33), np.nan, np.float32)
    np.testing.assert_array_equal(compiled.gemm(a, b, out), np.full((9, 33), 5.0))


def test_k_zero_writes_zeros_or_leaves_out_alone():
    a, b = np.ones((3, 0), np.float32), np.ones((0, 4), np.float32)
    np.testing.assert_array_equal(compiled.gemm(a, b, np.full((3, 4), np.nan, np.float32)), np.zeros((3, 4)))
    np.testing.assert_array_equal(compiled.gemm(a, b, np.full((3, 4), 7, np.float32), True), np.full((3, 4), 7.0))


def test_out_may_be_rows_of_a_wider_array_and_may_overlap_a():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((6, 7)).astype(np.float32), rng.standard_normal((7, 5)).astype(np.float32)
    wide = np.full((6, 9), 3.0, np.float32)
    compiled.gemm(a, b, wide[:, 2:7])
    assert_close(wide[:, 2:7], a, b)
    assert (wide[:, :2] == 3).all() and (wide[:, 7:] == 3).all()
    square = rng.standard_normal((8, 8)).astype(np.float32)
    expected = square.astype(np.float64) @ square
    compiled.gemm(square, square, square)  # out is a: a is read from a copy
    np.testing.assert_allclose(square, expected, rtol=1e-4, atol=1e-4)


def test_negative_and_odd_strides():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((11, 13)).astype(np.float32)[::-1, ::-2]  # negative strides
    b = rng.standard_normal((21, 6)).astype(np.float32)[::3]          # rows 3 apart
    assert_close(compiled.gemm(a, b), a, b)
    record = np.zeros((5, 7), dtype=[("x", np.float32), ("y", np.int8)])  # strides not whole floats
    record["x"] = rng.standard_normal((5, 7))
    assert_close(compiled.gemm(record["x"], record["x"].T), record["x"], record["x"].T)


@pytest.mark.skipif(not kernels.openmp_enabled(), reason="built without OpenMP: the kernels run on one thread only")
def test_one_and_two_threads_agree_exactly():
    rng = np.random.default_rng(3)
    a, w = rng.standard_normal((37, 300)).astype(np.float32), rng.standard_normal((200, 300)).astype(np.float32)
    packed = compiled.pack_weight(w, True)
    one = run_with_threads(1, compiled.gemm_packed, a, packed)
    np.testing.assert_array_equal(one, run_with_threads(2, compiled.gemm_packed, a, packed))
    assert_close(one, a, w.T)


def test_reference_packed_path_is_the_plain_product():
    rng = np.random.default_rng(4)
    a, w = rng.standard_normal((3, 4)), rng.standard_normal((5, 4))
    packed = reference.pack_weight(w, transpose=True)
    assert packed.shape == (4, 5)
    np.testing.assert_array_equal(reference.gemm_packed(a, packed), a @ w.T)


@pytest.mark.parametrize("call, error, message", [
    (lambda: compiled.gemm(np.ones((2, 3), np.float32), np.ones((4, 5), np.float32)), ValueError,
     r"gemm: \(2, 3\) @ \(4, 5\): inner sizes differ"),
    (lambda: compiled.gemm(np.ones((2, 3), np.float32), np.ones((2, 5), np.float32), transpose_a=True,
                           transpose_b=True), ValueError, r"gemm: \(3, 2\) @ \(5, 2\): inner sizes differ"),
    (lambda: compiled.gemm(np.ones(3, np.float32), np.ones((3, 5), np.float32)), ValueError,
     r"gemm: a must be a 2-D matrix, got shape \(3,\)"),
    (lambda: compiled.gemm(np.ones((2, 3), np.int64), np.ones((3, 5))), TypeError, "gemm: a must be float32"),
    (lambda: compiled.gemm(np.ones((2, 3), np.float32), np.ones((3, 5))), TypeError,
     "gemm: a is float32 but b is float64"),
    (lambda: compiled.gemm(np.ones((2, 3), np.float32), np.ones((3, 5), np.float32), None, True), ValueError,
     "gemm: accumulate=True adds to out"),
    (lambda: compiled.gemm(np.ones((2, 3), np.float32), np.ones((3, 5), np.float32), np.ones((5, 2), np.float32)),
     ValueError, r"gemm: out must be \(2, 5\) float32, got \(5, 2\) float32"),
    (lambda: compiled.gemm(np.ones((2, 3), np.float32), np.ones((3, 5), np.float32),
                           np.ones((2, 10), np.float32)[:, ::2]), ValueError, "gemm: out must have contiguous rows"),
    (lambda: compiled.gemm(np.ones((2, 3), np.float32), np.ones((3, 5), np.float32), 1, 0), TypeError,
     "gemm: accumulate must be True or False"),
    (lambda: compiled.gemm_packed(np.ones((2, 3), np.float32), reference.pack_weight(np.ones((3, 5), np.float32))),
     TypeError, "gemm_packed: packed must be a PackedWeight from pack_weight"),
    (lambda: compiled.gemm_packed(np.ones((2, 3)), compiled.pack_weight(np.ones((3, 5), np.float32))), TypeError,
     "gemm_packed: a is float64 but the weight is float32"),
    (lambda: compiled.pack_weight(np.ones((2, 3, 4), np.float32)), ValueError, "pack_weight: w must be a 2-D matrix"),
    (lambda: compiled.gemm(np.ones((2, 3), np.float32), np.ones((3, 5), np.float32), bias=np.ones(3, np.float32)),
     ValueError, r"gemm: bias must be \(5,\), one value per column of the product, got \(3,\)"),
    (lambda: compiled.gemm(np.ones((2, 3), np.float32), np.ones((3, 5), np.float32), bias=np.ones(5)), TypeError,
     "gemm: a is float32 but bias is float64"),
    (lambda: reference.gemm(np.ones((2, 3)), np.ones((3, 5)), bias=np.ones((1, 5))), ValueError,
     r"gemm: bias must be \(5,\)"),
    (lambda: reference.gemm(np.ones((2, 3)), np.ones((4, 5))), ValueError, r"gemm: \(2, 3\) @ \(4, 5\)"),
])
def test_bad_input_gets_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_a_read_only_out_is_refused():
    out = np.zeros((2, 5), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="gemm: out is read-only"):
        compiled.gemm(np.ones((2, 3), np.float32), np.ones((3, 5), np.float32), out)


# ------------------------------------------------ every instruction-set path of tinylm_gemm.h

DRIVER = r"""
#include "tinylm_gemm.h"
const char *isa(void) { return TINYLM_GEMM_ISA; }
int multiply(int64_t m, int64_t n, int64_t k, const float *a, int64_t rsa, int64_t csa,
             const float *b, int64_t rsb, int64_t csb, float *c, int64_t ldc, int accumulate) {
    float *packed = malloc(sizeof(float) * (size_t)(tinylm_gemm_packed_size(k, n) + 1));
    if (packed == NULL) return -1;
    tinylm_gemm_pack_b(k, n, b, rsb, csb, packed);
    int status = tinylm_sgemm_packed(m, n, k, a, rsa, csa, packed, c, ldc, accumulate, 1);
    free(packed);
    return status;
}
"""

PATHS = {  # name: (compiler flags, the CPU flags it needs)
    "portable": (["-DTINYLM_GEMM_PORTABLE"], set()),
    "avx2+fma": (["-mavx2", "-mfma", "-DTINYLM_GEMM_NO_AVX512"], {"avx2", "fma"}),
    "avx512": (["-mavx2", "-mfma", "-mavx512f"], {"avx2", "fma", "avx512f"}),
}


def cpu_flags() -> set:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))


@pytest.fixture(scope="module")
def compiled_paths(tmp_path_factory):
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the header's paths with")
    folder = tmp_path_factory.mktemp("gemm_paths")
    (folder / "driver.c").write_text(DRIVER)
    return compiler, folder


@pytest.mark.parametrize("path", list(PATHS))
def test_every_instruction_set_path(path, compiled_paths):
    flags, needs = PATHS[path]
    if not needs <= cpu_flags():
        pytest.skip(f"this CPU cannot run the {path} path (needs {', '.join(sorted(needs))})")
    compiler, folder = compiled_paths
    library = folder / f"gemm_{path.replace('+', '_')}.so"
    subprocess.run([compiler, "-O2", "-std=c11", "-shared", "-fPIC", *flags, f"-I{HEADER_DIR}",
                    str(folder / "driver.c"), "-o", str(library)], check=True, capture_output=True)
    lib = ctypes.CDLL(str(library))
    lib.isa.restype = ctypes.c_char_p
    assert lib.isa().decode() == path
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.multiply.argtypes = [i64, i64, i64, ptr, i64, i64, ptr, i64, i64, ptr, i64, ctypes.c_int]
    rng = np.random.default_rng(5)
    for m, k, n in [(1, 1, 1), (5, 0, 3), (7, 9, 17), (13, 300, 33), (100, 40, 70), (70, 257, 65)]:
        for accumulate, transpose_a in ((False, False), (True, True)):
            a = rng.standard_normal((k, m) if transpose_a else (m, k)).astype(np.float32)
            a_op = a.T if transpose_a else a
            b = rng.standard_normal((k, n)).astype(np.float32)
            start = rng.standard_normal((m, n)).astype(np.float32)
            c = start.copy() if accumulate else np.full((m, n), np.nan, np.float32)
            rsa, csa = (s // 4 for s in a_op.strides)
            status = lib.multiply(m, n, k, a.ctypes.data, rsa, csa, b.ctypes.data, n, 1, c.ctypes.data, n,
                                  int(accumulate))
            assert status == 0
            assert_close(c, a_op, b, start if accumulate else None)
