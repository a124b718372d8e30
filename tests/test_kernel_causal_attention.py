"""The Cython causal attention kernels against the NumPy reference, and the fused op.

Property: for any N heads, T steps and head size (1 and odd sizes included), float32 or
float64, contiguous or not, scores from ordinary to saturated (inputs x30: one key takes
all the weight), the forward's output and log-sum-exp and the backward's three gradients
agree with the reference, on every path of the kernels' matrix products; a NaN input
reaches every row that depends on it and nothing the reference keeps finite; bad input is
refused naming the op. The op
``causal_attention`` passes gradcheck on both CPU backends, and multi-head attention gives
the same output and gradients through it as written out (weights, then @ v).

The causal_attention family's tests, all in this file: the Cython kernels
(``kernels/cpu/causal_attention.pyx``) first, then the CUDA kernels
(``kernels/cuda/causal_attention.cu``) against the same reference, through the CPU
emulation and on a GPU when one is usable, and their launch wrappers' refusal of bad
input.
"""

import numpy as np
import pytest
from cuda_support import EXAMPLES, devices, dtypes, strided
from cuda_support import close as cuda_close
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from strategies import PRODUCT_PATHS, products_through, seeds

import tinylm
from tinylm import Tensor, nn
from tinylm.gradcheck import gradcheck
from tinylm.kernels.cpu import causal_attention as compiled
from tinylm.kernels.cuda import causal_attention as cuda_causal_attention
from tinylm.ops.causal_attention import causal_attention
from tinylm.reference import causal_attention as ref_causal_attention
from tinylm.reference import causal_attention as reference

TOLERANCE = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


@st.composite
def attention_problems(draw):
    heads, steps, size = draw(st.integers(1, 4)), draw(st.integers(1, 9)), draw(st.integers(1, 8))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    magnitude = draw(st.sampled_from([1.0, 30.0]))
    rng = np.random.default_rng(draw(seeds))
    q, k, v, grad = ((magnitude if i < 2 else 1.0) * rng.standard_normal((heads, steps, size)) for i in range(4))
    q, k, v, grad = (a.astype(dtype) for a in (q, k, v, grad))
    if draw(st.booleans()):  # non-contiguous views with the same values
        q = np.asfortranarray(q)
        k = np.ascontiguousarray(k.transpose(0, 2, 1)).transpose(0, 2, 1)
    scale = draw(st.sampled_from([1 / np.sqrt(size), 1.0, 0.05]))
    return q, k, v, grad, scale


def close(got, expected, dtype, name, magnitude=1.0):
    """Within the dtype's tolerance, scaled by the size of the values (or of the terms that
    cancel into them: ``magnitude``)."""
    tolerance = TOLERANCE[dtype]
    scale = max(1.0, magnitude, float(np.abs(expected).max()) if expected.size else 1.0)
    np.testing.assert_allclose(got, expected, rtol=tolerance["rtol"], atol=tolerance["atol"] * scale, err_msg=name)


@pytest.mark.parametrize("path", PRODUCT_PATHS)
@given(problem=attention_problems())
def test_forward_and_backward_match_reference(path, problem):
    q, k, v, grad, scale = problem
    dtype = q.dtype.type
    with products_through(path):
        out, logsumexp = compiled.causal_attention_forward(q, k, v, scale)
        grads = compiled.causal_attention_backward(grad, q, k, v, out, logsumexp, scale)
    expected_out, expected_lse = reference.causal_attention_forward(q, k, v, scale)
    expected = reference.causal_attention_backward(grad, q, k, v, expected_out, expected_lse, scale)
    assert out.dtype == logsumexp.dtype == q.dtype and out.shape == q.shape and logsumexp.shape == q.shape[:2]
    close(out, expected_out, dtype, "out")
    close(logsumexp, expected_lse, dtype, "logsumexp")
    # dq and dk are scale · (p ⊙ (g vᵀ - g · out)) times k or q: terms of this size cancel in them
    cancelling = scale * max(np.abs(q).max(), np.abs(k).max()) * np.abs(grad).max() * np.abs(v).max()
    for name, got, want in zip(("dq", "dk", "dv"), grads, expected):
        assert got.dtype == q.dtype
        close(got, want, dtype, name, cancelling if name != "dv" else 1.0)


@settings(max_examples=25, deadline=None)
@given(seed=seeds, heads=st.integers(1, 3), steps=st.integers(1, 75), size=st.sampled_from([1, 5, 16, 33, 64, 260]),
       magnitude=st.sampled_from([1.0, 30.0]))
def test_float32_heads_on_the_micro_kernel_match_reference_across_its_tile_edges(seed, heads, steps, size,
                                                                                magnitude):
    """float32 products run on the packed micro-kernel, which skips the tiles the causal
    mask makes zero: steps across the MR-row and NR-column panel edges (up to 2 NR + 11),
    head sizes across NR and past KC (the products' k in slices)."""
    rng = np.random.default_rng(seed)
    q, k, v, grad = ((magnitude if i < 2 else 1.0) * rng.standard_normal((heads, steps, size)) for i in range(4))
    q, k, v, grad = (a.astype(np.float32) for a in (q, k, v, grad))
    scale = 1 / np.sqrt(size)
    out, logsumexp = compiled.causal_attention_forward(q, k, v, scale)
    grads = compiled.causal_attention_backward(grad, q, k, v, out, logsumexp, scale)
    expected_out, expected_lse = reference.causal_attention_forward(q, k, v, scale)
    expected = reference.causal_attention_backward(grad, q, k, v, expected_out, expected_lse, scale)
    # sums of up to max(T, hs) float32 terms, each as large as its inputs' product
    terms = max(steps, size) ** 0.5
    close(out, expected_out, np.float32, "out", terms)
    close(logsumexp, expected_lse, np.float32, "logsumexp", terms * scale * magnitude ** 2)
    cancelling = terms * scale * max(np.abs(q).max(), np.abs(k).max()) * np.abs(grad).max() * np.abs(v).max()
    for name, got, want in zip(("dq", "dk", "dv"), grads, expected):
        close(got, want, np.float32, name, cancelling if name != "dv" else terms)


@given(problem=attention_problems(), threads=st.sampled_from([2, 3]))
def test_the_heads_shared_out_over_threads_give_the_same_bits_as_one_thread(problem, threads):
    """With every kernel parallel (threshold 0), each head is still one thread's work in
    one order: the forward and backward are the bits of a single-threaded run."""
    q, k, v, grad, scale = problem
    runs = []
    for threshold, team in ((None, 1), (0, threads)):
        previous, previous_threads = tinylm.kernels.get_parallel_threshold(), tinylm.kernels.get_num_threads()
        try:
            if threshold is not None:
                tinylm.kernels.set_parallel_threshold(threshold)
            tinylm.kernels.set_num_threads(team)
            out, logsumexp = compiled.causal_attention_forward(q, k, v, scale)
            runs.append((out, logsumexp) + compiled.causal_attention_backward(grad, q, k, v, out, logsumexp, scale))
        finally:
            tinylm.kernels.set_parallel_threshold(previous)
            tinylm.kernels.set_num_threads(previous_threads)
    for one, many in zip(*runs):
        np.testing.assert_array_equal(one, many)


def test_a_nan_query_makes_its_row_nan_and_leaves_the_others():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 5, 3)) for _ in range(3))
    q[1, 2, 0] = np.nan
    out, logsumexp = compiled.causal_attention_forward(q, k, v, 0.5)
    expected_out, expected_lse = reference.causal_attention_forward(q, k, v, 0.5)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected_out))
    np.testing.assert_array_equal(np.isnan(logsumexp), np.isnan(expected_lse))
    assert np.isnan(out[1, 2]).all() and not np.isnan(out[0]).any() and not np.isnan(out[1, [0, 1, 3, 4]]).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("where", ["q", "k", "v", "grad"])
@pytest.mark.parametrize("position", [0, 9, 19])
def test_a_nan_reaches_every_row_that_depends_on_it_and_nothing_the_reference_keeps_finite(dtype, where, position):
    """A NaN at step j: in q, row j of out; in k or v, every row from j on (they all
    attend to key j); in grad, dq's row j and dk's and dv's rows 0..j (the keys row j
    attends to). The kernels' tiles may also spread it to rows of j's own tile, but never
    where the reference, which multiplies whole (T, T) matrices, stays finite."""
    rng = np.random.default_rng(1)
    arrays = {name: rng.standard_normal((1, 20, 4)).astype(dtype) for name in ("q", "k", "v", "grad")}
    arrays[where][0, position, 1] = np.nan
    q, k, v, grad = (arrays[name] for name in ("q", "k", "v", "grad"))
    out, logsumexp = compiled.causal_attention_forward(q, k, v, 0.5)
    grads = compiled.causal_attention_backward(grad, q, k, v, out, logsumexp, 0.5)
    expected_out, expected_lse = reference.causal_attention_forward(q, k, v, 0.5)
    expected = reference.causal_attention_backward(grad, q, k, v, expected_out, expected_lse, 0.5)
    rows = np.arange(20)
    if where == "q":
        assert np.isnan(out[0, position]).any()
    if where in ("k", "v"):
        assert np.isnan(out[0, rows >= position]).any(axis=-1).all()
    if where == "grad":
        assert np.isnan(grads[0][0, position]).any()  # dq of the row whose gradient is NaN
        for got in grads[1:]:  # dk, dv: every key that row attends to
            assert np.isnan(got[0, rows <= position]).any(axis=-1).all()
    for got, want in zip((out, logsumexp, *grads), (expected_out, expected_lse, *expected)):
        assert not (np.isnan(got) & ~np.isnan(want)).any()


def test_bad_inputs_are_refused():
    q = np.zeros((1, 3, 2), np.float32)
    with pytest.raises(ValueError, match=r"causal_attention_forward: q, k, v must be \(N, T, hs\)"):
        compiled.causal_attention_forward(q, q[:, :2], q, 1.0)
    with pytest.raises(TypeError, match="causal_attention_forward: q, k, v must share one float dtype"):
        compiled.causal_attention_forward(q, q.astype(np.float64), q, 1.0)
    with pytest.raises(TypeError, match="causal_attention_forward: q, k, v must be float32 or float64"):
        compiled.causal_attention_forward(*(q.astype(np.float16),) * 3, 1.0)
    out, lse = compiled.causal_attention_forward(q, q, q, 1.0)
    with pytest.raises(ValueError, match=r"causal_attention_backward: logsumexp \(1, 2\)"):
        compiled.causal_attention_backward(q, q, q, q, out, lse[:, :2], 1.0)
    with pytest.raises(ValueError, match=r"causal_attention_backward: grad_out \(1, 2, 2\)"):
        compiled.causal_attention_backward(q[:, :2], q, q, q, out, lse, 1.0)


@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_the_fused_op_passes_gradcheck(backend):
    rng = np.random.default_rng(2)
    q, k, v = (Tensor(rng.standard_normal((2, 3, 5, 4)), requires_grad=True) for _ in range(3))  # (B, nh, T, hs)
    with tinylm.use_backend(backend):
        assert gradcheck(lambda q, k, v: causal_attention(q, k, v), q, k, v)


@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_multihead_attention_gives_the_same_through_the_fused_op(backend, monkeypatch):
    """Output and every gradient of causal self-attention, fused against written out."""
    import tinylm.nn.attention as mha

    tinylm.manual_seed(0)
    attention = nn.MultiheadAttention(8, 2, batch_first=True, dtype=np.float64)
    x_data = np.random.default_rng(3).standard_normal((2, 6, 8))

    def run():
        attention.zero_grad()
        x = Tensor(x_data, requires_grad=True)
        out, _ = attention(x, x, x, is_causal=True)
        (out * out).sum().backward()
        return [out.numpy(), x.grad.numpy()] + [p.grad.numpy() for p in attention.parameters()]

    with tinylm.use_backend(backend):
        fused = run()
        monkeypatch.setattr(mha, "causal_attention", lambda q, k, v: nn.functional.attention_weights(
            q, k, is_causal=True) @ v)
        written_out = run()
    for a, b in zip(fused, written_out):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- CUDA (kernels/cuda/causal_attention.cu)
# Against the reference through the CPU emulation, and on a GPU when one is usable.

ATTENTION_TOLERANCE = {np.float32: 1e-4, np.float64: 1e-10}


@devices
@settings(max_examples=EXAMPLES)
@given(heads=st.integers(1, 3), steps=st.sampled_from([1, 2, 5, 31, 33, 45]),
       head_size=st.sampled_from([1, 3, 16, 33, 64, 80, 128]),  # > 64: each lane's 3rd and 4th output columns
       dtype=dtypes, seed=seeds, sharpness=st.sampled_from([1.0, 5.0]), noncontiguous=st.booleans(),
       geometry=st.tuples(st.sampled_from([None, 32, 64, 96]), st.sampled_from([None, 1, 3])))
def test_causal_attention(device, heads, steps, head_size, dtype, seed, sharpness, noncontiguous, geometry):
    device.require()
    assume(not (dtype == np.float64 and head_size == 128))  # its K and V tiles alone pass 48 KiB: refused
    threads, max_blocks = geometry
    rng = np.random.default_rng(seed)
    q, k, v = (strided(rng, (heads, steps, head_size), dtype, noncontiguous) for _ in range(3))
    q = q * dtype(sharpness)  # 5: peaked softmax rows, large exponents
    scale = 1 / np.sqrt(head_size)
    rtol = ATTENTION_TOLERANCE[dtype]
    geometry = dict(threads=threads, max_blocks=max_blocks)
    out, lse = cuda_causal_attention.causal_attention_forward(*(device.put(a) for a in (q, k, v)), scale, **geometry)
    expected_out, expected_lse = ref_causal_attention.causal_attention_forward(q, k, v, scale)
    cuda_close(out, expected_out, dtype, rtol=rtol, scale=float(np.abs(v).max(initial=1.0)), name="out")
    cuda_close(lse, expected_lse, dtype, rtol=rtol, scale=float(np.abs(expected_lse).max(initial=1.0)),
               name="logsumexp")
    grad = rng.standard_normal(q.shape).astype(dtype)
    expected = ref_causal_attention.causal_attention_backward(grad, q, k, v, expected_out, expected_lse, scale)
    arguments = [device.put(a) for a in (grad, q, k, v, expected_out, expected_lse)]
    for backward in (cuda_causal_attention.causal_attention_backward,
                     cuda_causal_attention.causal_attention_backward_unfused):
        got = backward(*arguments, scale, **geometry)
        for name, a, b in zip(("dq", "dk", "dv"), got, expected):
            cuda_close(a, b, dtype, rtol=rtol, scale=float(np.abs(b).max(initial=1.0)),
                       name=f"{backward.__name__}: {name}")


@pytest.mark.usefixtures("launches_refused")
def test_the_cuda_wrappers_refuse_bad_input_before_launching():
    f32 = np.float32
    q = np.zeros((2, 5, 8), f32)
    with pytest.raises(ValueError, match=r"causal_attention_forward: q, k, v must be \(N, T, hs\) of one shape"):
        cuda_causal_attention.causal_attention_forward(q, q[:, :4], q, 1.0)
    with pytest.raises(TypeError, match="q, k, v must share one float dtype"):
        cuda_causal_attention.causal_attention_forward(q, q.astype(np.float64), q, 1.0)
    with pytest.raises(ValueError, match="head size 129 .* is above the kernel's 128"):
        big = np.zeros((1, 2, 129), f32)
        cuda_causal_attention.causal_attention_forward(big, big, big, 1.0)
    with pytest.raises(ValueError, match="bytes of shared memory, above 49152"):
        wide = np.zeros((1, 2, 128))
        cuda_causal_attention.causal_attention_forward(wide, wide, wide, 1.0, threads=256)
    with pytest.raises(ValueError, match=r"causal_attention_backward: grad_out \(2, 5, 7\) and out"):
        cuda_causal_attention.causal_attention_backward(np.zeros((2, 5, 7), f32), q, q, q, q, np.zeros((2, 5), f32),
                                                        1.0)


# ------------------------------------- tinylm_attention.h on every instruction-set path

ATTENTION_DRIVER = r"""
#include "tinylm_attention.h"
/* One head, float32, as causal_attention.pyx runs it, every buffer exactly as large as
 * the header asks: forward (out, lse) and backward (dq, dk, dv). */
static float *scratch(int64_t floats) { return malloc(sizeof(float) * (size_t)(floats > 0 ? floats : 1)); }
int head(int64_t t, int64_t hs, const float *q, const float *k, const float *v, const float *g, float scale,
         float *out, float *lse, float *dq, float *dk, float *dv) {
    float *pa = scratch(tinylm_attention_packed_a_floats(t, hs));
    float *pb = scratch(tinylm_attention_packed_b_floats(t, hs));
    float *s = scratch(t * t), *ds = scratch(t * t), *tile = scratch(TINYLM_GEMM_MR * TINYLM_GEMM_NR);
    if (!pa || !pb || !s || !ds || !tile) return -1;
    tinylm_attention_scores(t, hs, q, k, s, pa, pb, tile);
    tinylm_attention_softmax_rows(t, s, scale, lse);
    tinylm_attention_causal_product(t, hs, s, t, 1, 0, v, hs, out, hs, pa, pb, tile);
    tinylm_attention_scores(t, hs, q, k, s, pa, pb, tile);
    tinylm_attention_probs_rows(t, s, scale, lse);
    tinylm_attention_causal_product(t, hs, s, 1, t, 1, g, hs, dv, hs, pa, pb, tile);
    tinylm_attention_scores(t, hs, g, v, ds, pa, pb, tile);
    tinylm_attention_dscores_rows(t, hs, s, ds, g, out, scale);
    tinylm_attention_causal_product(t, hs, ds, t, 1, 0, k, hs, dq, hs, pa, pb, tile);
    tinylm_attention_causal_product(t, hs, ds, 1, t, 1, q, hs, dk, hs, pa, pb, tile);
    free(pa); free(pb); free(s); free(ds); free(tile);
    return 0;
}
"""


@pytest.mark.parametrize("path", ["portable", "avx2+fma", "avx512"])
def test_every_instruction_set_path_of_the_head_products(path, tmp_path):
    """tinylm_attention.h built for each tile shape (portable 4 x 8, AVX2 6 x 16, AVX-512
    8 x 32) the CPU can run: forward and backward of one float32 head against the reference,
    T and hs across every tile edge and past KC = 256."""
    import ctypes
    import shutil
    import subprocess

    from test_kernel_gemm import HEADER_DIR, PATHS, cpu_flags

    flags, needs = PATHS[path]
    if not needs <= cpu_flags():
        pytest.skip(f"this CPU cannot run the {path} path (needs {', '.join(sorted(needs))})")
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the header's paths with")
    (tmp_path / "driver.c").write_text(ATTENTION_DRIVER)
    library = tmp_path / "attention.so"
    subprocess.run([compiler, "-O2", "-std=c11", "-shared", "-fPIC", "-fno-trapping-math", *flags, f"-I{HEADER_DIR}",
                    str(tmp_path / "driver.c"), "-o", str(library), "-lm"], check=True, capture_output=True)
    lib = ctypes.CDLL(str(library))
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.head.argtypes = [i64, i64] + [ptr] * 4 + [ctypes.c_float] + [ptr] * 5
    rng = np.random.default_rng(3)
    for steps, size in [(1, 1), (5, 3), (9, 33), (33, 7), (70, 16), (65, 260), (300, 5)]:
        q, k, v, g = (rng.standard_normal((1, steps, size)).astype(np.float32) for _ in range(4))
        scale = np.float32(1 / np.sqrt(size))
        out, dq, dk, dv = (np.full((1, steps, size), np.nan, np.float32) for _ in range(4))
        lse = np.full((1, steps), np.nan, np.float32)
        assert lib.head(steps, size, *(a.ctypes.data for a in (q, k, v, g)), scale,
                        *(a.ctypes.data for a in (out, lse, dq, dk, dv))) == 0
        expected_out, expected_lse = reference.causal_attention_forward(q, k, v, scale)
        expected = reference.causal_attention_backward(g, q, k, v, expected_out, expected_lse, scale)
        terms = max(steps, size) ** 0.5
        close(out, expected_out, np.float32, f"out {steps}x{size}", terms)
        close(lse, expected_lse, np.float32, f"logsumexp {steps}x{size}", terms)
        for name, got, want in zip(("dq", "dk", "dv"), (dq, dk, dv), expected):
            close(got, want, np.float32, f"{name} {steps}x{size}", 4 * terms)
