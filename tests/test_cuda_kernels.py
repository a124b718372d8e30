"""Every CUDA kernel (kernels/cuda/*.cu) against its NumPy reference, through the CPU
emulation always and through CuPy on a GPU when one is usable.

Property: for any shapes (1 and odd sizes included, 0 where the reference allows it),
float32 and float64, contiguous or not (the wrappers make inputs contiguous), hard values
(logits ±1e4, -inf masks and fully masked rows, saturated LSTM gates, large means) and
any launch geometry (threads per block, number of blocks: the kernels' grid-stride loops
must make the result independent of them), the CUDA kernel gives the reference's result
to within the tolerance stated for the dtype. Dropout's mask must match bit for bit.

Tolerances (relative, with an absolute floor scaled by the size of the values):
float32 2e-5 (sums and exps in another order; FMA contraction on the GPU), LSTM and
attention 1e-4 (a chain of exp, tanh and products; attention's dot products of up to 64
terms); float64 1e-10 throughout. GELU's floor is set element by element (see
``test_gelu``). The causal attention backward is checked both fused
and through the unfused kernels.
"""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import lstm_problems, seeds

from tinylm.kernels.cuda import (
    adam,
    attention_softmax,
    causal_attention,
    cross_entropy,
    dropout,
    embedding,
    gelu,
    layer_norm,
    lstm,
)
from tinylm.kernels.cuda.emulation import emulation_unavailable_reason
from tinylm.reference import adam as ref_adam
from tinylm.reference import attention_softmax as ref_attention_softmax
from tinylm.reference import causal_attention as ref_causal_attention
from tinylm.reference import cross_entropy as ref_cross_entropy
from tinylm.reference import dropout as ref_dropout
from tinylm.reference import embedding as ref_embedding
from tinylm.reference import gelu as ref_gelu
from tinylm.reference import layer_norm as ref_layer_norm
from tinylm.reference import lstm as ref_lstm

EXAMPLES = 25  # per test and device: the emulation runs every GPU thread as an OS thread


def _gpu_unavailable_reason():
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed (pip install 'tinylm[cuda]')"
    try:
        if not cupy.is_available():
            return "CuPy is installed but no usable GPU was found"
    except Exception as exc:  # a driver problem
        return f"no usable GPU ({type(exc).__name__}: {exc})"
    return None


class Device:
    """Where the kernels run: "emulated" (NumPy arrays, the CPU) or "gpu" (CuPy arrays)."""

    def __init__(self, name):
        self.name = name

    def require(self):
        reason = emulation_unavailable_reason() if self.name == "emulated" else _gpu_unavailable_reason()
        if reason is not None:
            pytest.skip(f"{self.name}: {reason}")
        return self

    def put(self, value):
        if self.name == "gpu" and isinstance(value, np.ndarray):
            import cupy

            return cupy.asarray(value)
        return value

    @staticmethod
    def get(value):
        return value.get() if type(value).__module__.startswith("cupy") else value


DEVICES = [Device("emulated"), Device("gpu")]
devices = pytest.mark.parametrize("device", DEVICES, ids=lambda d: d.name)

# threads=None: the default for the device; max_blocks 1 forces every block to loop.
geometries = st.tuples(st.sampled_from([None, 32, 64, 96]), st.sampled_from([None, 1, 3]))
dtypes = st.sampled_from([np.float32, np.float64])
TOLERANCE = {np.float32: 2e-5, np.float64: 1e-10}


def close(got, expected, dtype, rtol=None, scale=1.0, name=""):
    """got ≈ expected: relative tolerance for the dtype, absolute floor rtol · scale."""
    rtol = rtol if rtol is not None else TOLERANCE[np.dtype(dtype).type]
    got = Device.get(got)
    assert got.shape == expected.shape and got.dtype == expected.dtype, (name, got.shape, got.dtype, expected.shape)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * scale, err_msg=name)


def strided(rng, shape, dtype, noncontiguous, scale=1.0):
    """Standard normal values (times scale); a stride-2 view of a larger array if asked."""
    shape = tuple(shape)
    if noncontiguous and shape:
        return (scale * rng.standard_normal(shape[:-1] + (2 * shape[-1],))).astype(dtype)[..., ::2]
    return (scale * rng.standard_normal(shape)).astype(dtype)


# ------------------------------------------------------------------ embedding


@devices
@settings(max_examples=EXAMPLES)
@given(ids_shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
       dim=st.sampled_from([1, 3, 17, 40]), vocab=st.integers(1, 9), dtype=dtypes, seed=seeds,
       id_dtype=st.sampled_from([np.int64, np.int32, np.uint8]), noncontiguous=st.booleans(), geometry=geometries)
def test_embedding(device, ids_shape, dim, vocab, dtype, seed, id_dtype, noncontiguous, geometry):
    device.require()
    threads, max_blocks = geometry
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, ids_shape).astype(id_dtype)
    weight = strided(rng, (vocab, dim), dtype, noncontiguous)
    grad = strided(rng, ids_shape + (dim,), dtype, noncontiguous)
    out = embedding.embedding_forward(device.put(weight), device.put(ids), threads=threads, max_blocks=max_blocks)
    np.testing.assert_array_equal(Device.get(out), ref_embedding.embedding_forward(weight, ids))  # a copy: exact
    got = embedding.embedding_backward(device.put(grad), device.put(ids), vocab, threads=threads, max_blocks=max_blocks)
    close(got, ref_embedding.embedding_backward(grad, ids, vocab), dtype, scale=max(1, ids.size) ** 0.5)


# ----------------------------------------------------------------------- adam


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
    adam.adam_update(*ours[:1], device.put(grad), *ours[1:], step, 1e-3, 0.9, 0.999, 1e-8, weight_decay, decoupled,
                      threads=threads, max_blocks=max_blocks)
    ref_adam.adam_update(theirs[0], grad, theirs[1], theirs[2], step, 1e-3, 0.9, 0.999, 1e-8, weight_decay, decoupled)
    for name, a, b in zip(("param", "exp_avg", "exp_avg_sq"), ours, theirs):
        close(a, b, dtype, scale=float(np.abs(b).max(initial=1.0)), name=name)


# ------------------------------------------------------------------ layer norm


@devices
@settings(max_examples=EXAMPLES)
@given(rows=st.integers(0, 5), dim=st.sampled_from([1, 2, 5, 33, 70]), dtype=dtypes, seed=seeds,
       affine=st.sampled_from(["both", "none", "weight only"]), offset=st.sampled_from([0.0, 1e3]),
       noncontiguous=st.booleans(), geometry=geometries)
def test_layer_norm(device, rows, dim, dtype, seed, affine, offset, noncontiguous, geometry):
    device.require()
    threads, max_blocks = geometry
    rng = np.random.default_rng(seed)
    x = strided(rng, (rows, dim), dtype, noncontiguous) + dtype(offset)  # a large mean: cancellation
    weight = rng.standard_normal(dim).astype(dtype) if affine != "none" else None
    bias = rng.standard_normal(dim).astype(dtype) if affine == "both" else None
    grad_y = strided(rng, (rows, dim), dtype, noncontiguous)
    geometry = dict(threads=threads, max_blocks=max_blocks)
    got = layer_norm.layer_norm_forward(device.put(x), device.put(weight), device.put(bias), 1e-5, **geometry)
    expected = ref_layer_norm.layer_norm_forward(x, weight, bias, 1e-5)
    # float32 with |mean| = 1e3: x itself is only known to 1e3 · 6e-8, which x̂ magnifies by rstd.
    rtol = 2e-3 if (dtype == np.float32 and offset) else None
    for name, a, b in zip(("y", "mean", "rstd"), got, expected):
        close(a, b, dtype, rtol=rtol, scale=float(np.abs(b).max(initial=1.0)), name=name)
    _, mean, rstd = expected
    got = layer_norm.layer_norm_backward(device.put(grad_y), device.put(x), device.put(weight), device.put(mean),
                                         device.put(rstd), **geometry)
    expected = ref_layer_norm.layer_norm_backward(grad_y, x, weight, mean, rstd)
    for name, a, b in zip(("grad_x", "grad_weight", "grad_bias"), got, expected):
        if b is None:
            assert a is None, name
        else:
            close(a, b, dtype, rtol=rtol, scale=float(np.abs(b).max(initial=1.0)) * max(1, rows), name=name)


# ------------------------------------------------------------ attention softmax


@st.composite
def softmax_problems(draw):
    lead = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=3))
    queries, keys = draw(st.integers(1, 5)), draw(st.sampled_from([1, 2, 7, 33, 70]))
    dtype = draw(dtypes)
    rng = np.random.default_rng(draw(seeds))
    scores = strided(rng, lead + (queries, keys), dtype, draw(st.booleans()), scale=draw(st.sampled_from([1.0, 1e4])))
    mask = None
    if draw(st.booleans()):  # additive: -inf drops, a random bias elsewhere; maybe a fully masked row
        mask = np.where(rng.random((queries, keys)) < 0.3, -np.inf, rng.standard_normal((queries, keys)))
        if draw(st.booleans()):
            mask[rng.integers(queries)] = -np.inf
        mask = mask.astype(draw(st.sampled_from([np.float32, np.float64])))
    return scores, draw(st.sampled_from([1.0, 0.125, 3.0])), mask, draw(st.booleans())


@devices
@settings(max_examples=EXAMPLES)
@given(problem=softmax_problems(), seed=seeds, geometry=geometries)
def test_attention_softmax(device, problem, seed, geometry):
    device.require()
    threads, max_blocks = geometry
    scores, scale, mask, causal = problem
    dtype = scores.dtype.type
    geometry = dict(threads=threads, max_blocks=max_blocks)
    probs = attention_softmax.attention_softmax_forward(device.put(scores), scale, device.put(mask), causal, **geometry)
    expected = ref_attention_softmax.attention_softmax_forward(scores, scale, mask, causal)
    close(probs, expected, dtype, name="probs")
    grad = np.random.default_rng(seed).standard_normal(scores.shape).astype(dtype)
    got = attention_softmax.attention_softmax_backward(device.put(grad), device.put(expected), scale, **geometry)
    close(got, ref_attention_softmax.attention_softmax_backward(grad, expected, scale), dtype, scale=scale,
          name="grad_scores")


# --------------------------------------------------------------- cross-entropy


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
    got = cross_entropy.cross_entropy_forward(device.put(logits), device.put(targets), ignore_index, **geometry)
    losses, lse = ref_cross_entropy.cross_entropy_forward(logits, targets, ignore_index)
    close(got[0], losses, dtype, scale=scale, name="losses")
    close(got[1], lse, dtype, scale=scale, name="logsumexp")
    grad_losses = rng.standard_normal(rows).astype(dtype)
    got = cross_entropy.cross_entropy_backward(device.put(grad_losses), device.put(logits), device.put(targets),
                                               device.put(lse), ignore_index, **geometry)
    close(got, ref_cross_entropy.cross_entropy_backward(grad_losses, logits, targets, lse, ignore_index), dtype,
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
    got = cross_entropy.cross_entropy_forward(device.put(logits), device.put(targets), -100, threads=threads)
    expected = ref_cross_entropy.cross_entropy_forward(logits, targets, -100)
    for name, a, b in zip(("losses", "logsumexp"), got, expected):
        assert np.isnan(b[:2]).all() and np.isfinite(b[2:]).all(), name
        close(a, b, dtype, name=name)  # NaN where the reference has NaN, equal elsewhere
    grad_losses = rng.standard_normal(4).astype(dtype)
    got = cross_entropy.cross_entropy_backward(device.put(grad_losses), device.put(logits), device.put(targets),
                                               device.put(expected[1]), -100, threads=threads)
    close(got, ref_cross_entropy.cross_entropy_backward(grad_losses, logits, targets, expected[1], -100), dtype)

    scores = logits[None, :3]  # (1, 3, 70): rows 0 and 1 hold a NaN
    probs = Device.get(attention_softmax.attention_softmax_forward(device.put(scores), 1.0, threads=threads))
    assert np.isnan(probs[0, :2]).all(), "a row with a NaN score must come out NaN, not finite or zero"
    close(probs[0, 2], ref_attention_softmax.attention_softmax_forward(scores, 1.0)[0, 2], dtype)


# ------------------------------------------------------------------------ LSTM

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
    h, c, saved = lstm.lstm_cell_forward(device.put(gates), device.put(c0), **geometry)
    expected_h, expected_c, expected_saved = ref_lstm.lstm_cell_forward(gates, c0)
    for name, a, b in zip(("h", "c", "activations", "tanh_c"), (h, c, *saved),
                          (expected_h, expected_c, *expected_saved)):
        close(a, b, dtype, rtol=rtol, scale=1.0, name=name)
    no_dh_next = np.zeros_like(dh)
    got = lstm.lstm_cell_backward(device.put(dh), device.put(no_dh_next), device.put(dc), device.put(c0),
                                  tuple(device.put(a) for a in expected_saved), **geometry)
    expected = ref_lstm.lstm_cell_backward(dh, no_dh_next, dc, c0, expected_saved)
    for name, a, b in zip(("d_gates", "dc_prev"), got, expected):
        close(a, b, dtype, rtol=rtol, scale=1.0, name=name)


@devices
@settings(max_examples=EXAMPLES)
@given(problem=lstm_problems(max_steps=4), geometry=geometries, forward_from=st.sampled_from(["cuda", "reference"]))
def test_lstm_layer(device, problem, geometry, forward_from):
    device.require()
    x_proj, w_hh, h0, c0, (d_hs, d_h_n, d_c_n) = problem
    dtype = x_proj.dtype.type
    rtol = LSTM_TOLERANCE[dtype]
    geometry = dict(zip(("threads", "max_blocks"), geometry))
    hs, c_n, saved = lstm.lstm_layer_forward(*(device.put(a) for a in (x_proj, w_hh, h0, c0)), **geometry)
    expected_hs, expected_c, expected_saved = ref_lstm.lstm_layer_forward(x_proj, w_hh, h0, c0)
    close(hs, expected_hs, dtype, rtol=rtol, name="hs")
    close(c_n, expected_c, dtype, rtol=rtol, scale=float(np.abs(expected_c).max(initial=1.0)), name="c_n")
    for name, a, b in zip(("hs", "cs", "activations", "tanh_cs"), saved, expected_saved):
        close(a, b, dtype, rtol=rtol, scale=float(np.abs(b).max(initial=1.0)), name=name)
    saved = saved if forward_from == "cuda" else tuple(device.put(a) for a in expected_saved)
    got = lstm.lstm_layer_backward(*(device.put(a) for a in (d_hs, d_h_n, d_c_n, w_hh, h0, c0)), saved, **geometry)
    expected = ref_lstm.lstm_layer_backward(d_hs, d_h_n, d_c_n, w_hh, h0, c0, expected_saved)
    for name, a, b in zip(("d_x_proj", "d_w_hh", "d_h0", "d_c0"), got, expected):
        close(a, b, dtype, rtol=rtol, scale=float(np.abs(b).max(initial=1.0)), name=name)


# --------------------------------------------------------------------- dropout


@devices
@settings(max_examples=EXAMPLES)
@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9), dtype=dtypes,
       p=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]), seed=st.one_of(seeds, st.integers(-(2**70), 2**70)),
       noncontiguous=st.booleans(), geometry=geometries)
def test_dropout_matches_bit_for_bit(device, shape, dtype, p, seed, noncontiguous, geometry):
    device.require()
    threads, max_blocks = geometry
    rng = np.random.default_rng(abs(seed) % 2**32)
    x = strided(rng, shape, dtype, noncontiguous)
    y, mask = dropout.dropout_forward(device.put(x), p, seed, threads=threads, max_blocks=max_blocks)
    expected_y, expected_mask = ref_dropout.dropout_forward(x, p, seed)
    np.testing.assert_array_equal(Device.get(mask), expected_mask)
    assert Device.get(mask).dtype == np.uint8
    np.testing.assert_array_equal(Device.get(y), expected_y)
    grad = strided(rng, shape, dtype, noncontiguous)
    got = dropout.dropout_backward(device.put(grad), device.put(expected_mask), p, threads=threads,
                                   max_blocks=max_blocks)
    np.testing.assert_array_equal(Device.get(got), ref_dropout.dropout_backward(grad, expected_mask, p))


# ------------------------------------------------------------------------ GELU


def close_elementwise(got, expected, dtype, floor, name=""):
    """|got - expected| <= rtol (|expected| + floor), element by element, in float64."""
    got = Device.get(got)
    assert got.shape == expected.shape and got.dtype == expected.dtype, (name, got.shape, got.dtype, expected.shape)
    error = np.abs(got.astype(np.float64) - expected)
    bound = TOLERANCE[np.dtype(dtype).type] * (np.abs(expected.astype(np.float64)) + floor)
    worst = np.unravel_index(np.argmax(error - bound), error.shape) if error.size else ()
    assert (error <= bound).all(), f"{name}: error {error[worst]} above {bound[worst]} at {worst}"


@devices
@settings(max_examples=EXAMPLES)
@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9), dtype=dtypes, seed=seeds,
       scale=st.sampled_from([1e-3, 1.0, 5.0, 1e4]), noncontiguous=st.booleans(), geometry=geometries)
def test_gelu(device, shape, dtype, seed, scale, noncontiguous, geometry):
    """Both follow one formula, so both cancel in 1 + tanh u for x below about -4: an
    ulp of tanh is an error relative to |x| in y and to |x|³ in the backward's second
    term, not to the result; that is the floor. Beyond |x| = 10 tanh is ±1 in both dtypes
    and both results are exact; at 1e4, x³ overflows float32 to ±inf and both saturate."""
    device.require()
    threads, max_blocks = geometry
    rng = np.random.default_rng(seed)
    x = strided(rng, shape, dtype, noncontiguous, scale=scale)
    grad = strided(rng, shape, dtype, noncontiguous)
    geometry = dict(threads=threads, max_blocks=max_blocks)
    with np.errstate(over="ignore", invalid="ignore"):  # x³ of 1e4 overflows float32
        expected_y, expected_grad = ref_gelu.gelu_forward(x), ref_gelu.gelu_backward(grad, x)
    reach = np.minimum(np.abs(x.astype(np.float64)), 10)
    y = gelu.gelu_forward(device.put(x), **geometry)
    close_elementwise(y, expected_y, dtype, np.maximum(reach, 1), name="y")
    grad_x = gelu.gelu_backward(device.put(grad), device.put(x), **geometry)
    close_elementwise(grad_x, expected_grad, dtype, np.abs(grad) * np.maximum(reach * (1 + 0.134 * reach**2), 1),
                      name="grad_x")


# ------------------------------------------------------------ causal attention

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
    out, lse = causal_attention.causal_attention_forward(*(device.put(a) for a in (q, k, v)), scale, **geometry)
    expected_out, expected_lse = ref_causal_attention.causal_attention_forward(q, k, v, scale)
    close(out, expected_out, dtype, rtol=rtol, scale=float(np.abs(v).max(initial=1.0)), name="out")
    close(lse, expected_lse, dtype, rtol=rtol, scale=float(np.abs(expected_lse).max(initial=1.0)), name="logsumexp")
    grad = rng.standard_normal(q.shape).astype(dtype)
    expected = ref_causal_attention.causal_attention_backward(grad, q, k, v, expected_out, expected_lse, scale)
    arguments = [device.put(a) for a in (grad, q, k, v, expected_out, expected_lse)]
    for backward in (causal_attention.causal_attention_backward, causal_attention.causal_attention_backward_unfused):
        got = backward(*arguments, scale, **geometry)
        for name, a, b in zip(("dq", "dk", "dv"), got, expected):
            close(a, b, dtype, rtol=rtol, scale=float(np.abs(b).max(initial=1.0)), name=f"{backward.__name__}: {name}")
