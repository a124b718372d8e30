"""The Cython attention softmax (scale + mask + softmax) against its NumPy reference.

Property: for scores (..., L, S) of either float dtype, contiguous or not, scores of
±1e4, additive masks with -inf entries (whole rows too), causal or not, key padding masks
(B, S) (whole batch rows too), both give the same probabilities (rows sum to 1, or are
all 0 when every key is masked) and the same gradients, on 1 or 2 threads.

The attention_softmax family's tests, all in this file: the Cython kernels
(``kernels/cpu/attention_softmax.pyx``) first, then the CUDA kernels
(``kernels/cuda/attention_softmax.cu``) against the same reference, through the CPU
emulation and on a GPU when one is usable, and their launch wrappers' refusal of bad
input."""

import numpy as np
import pytest
from cuda_support import EXAMPLES, devices, dtypes, geometries, strided
from cuda_support import close as cuda_close
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import run_with_threads, seeds

from tinylm import kernels
from tinylm.kernels.cpu import attention_softmax as compiled
from tinylm.kernels.cuda import attention_softmax as cuda_attention_softmax
from tinylm.reference import attention_softmax as ref_attention_softmax
from tinylm.reference import attention_softmax as reference

TOLERANCE = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}


@st.composite
def problems(draw):
    lead = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=3))
    length, keys = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(seeds))
    magnitude = draw(st.sampled_from([1.0, 10.0, 1e4]))
    wide = rng.standard_normal(lead + (length, 2 * keys)) * magnitude
    scores = (wide[..., ::2] if draw(st.booleans()) else wide[..., :keys]).astype(dtype)
    if draw(st.integers(0, 9)) == 0:
        scores.flat[draw(st.integers(0, scores.size - 1))] = np.nan  # its row must come out NaN, not hidden
    mask = None
    if draw(st.booleans()):
        mask = np.where(rng.random((length, keys)) < 0.3, -np.inf, rng.standard_normal((length, keys)))
        if draw(st.booleans()):
            mask[rng.integers(length)] = -np.inf  # one query sees no key at all
        mask = mask.astype(dtype)
    return scores, draw(st.sampled_from([1.0, 0.125, 2.0])), mask, draw(st.booleans())


@given(problem=problems(), seed=seeds)
def test_forward_and_backward_match_reference(problem, seed):
    scores, scale, mask, causal = problem
    tol = TOLERANCE[scores.dtype.type]
    probs = compiled.attention_softmax_forward(scores, scale, mask, causal)
    want = reference.attention_softmax_forward(scores, scale, mask, causal)
    assert probs.shape == scores.shape and probs.dtype == scores.dtype
    np.testing.assert_allclose(probs, want, **tol)
    row_sums = probs.sum(axis=-1)
    seen = np.tril(np.ones(scores.shape[-2:], bool)) if causal else np.ones(scores.shape[-2:], bool)
    has_nan = (np.isnan(scores) & seen).any(axis=-1)  # a NaN the row really looks at
    assert np.all(np.isnan(row_sums) == has_nan)  # shows in its row, and only there
    assert np.all((np.abs(row_sums[~has_nan] - 1) < 1e-5) | (row_sums[~has_nan] == 0))  # a distribution, or all masked
    if causal:
        assert np.all(np.triu(probs, k=1) == 0)  # no query sees a later key
    grad_probs = np.random.default_rng(seed).standard_normal(scores.shape).astype(scores.dtype)
    np.testing.assert_allclose(compiled.attention_softmax_backward(grad_probs, want, scale),
                               reference.attention_softmax_backward(grad_probs, want, scale), **tol)


def test_huge_scores_and_fully_masked_rows():
    scores = np.array([[1e4, -1e4, 0.0], [5.0, 5.0, 5.0]], dtype=np.float32)
    mask = np.array([[0, 0, 0], [-np.inf, -np.inf, -np.inf]], dtype=np.float32)
    probs = compiled.attention_softmax_forward(scores, 1.0, mask)
    np.testing.assert_array_equal(probs, [[1, 0, 0], [0, 0, 0]])


@pytest.mark.skipif(not kernels.openmp_enabled(), reason="built without OpenMP: the kernels run on one thread only")
def test_one_and_two_threads_agree():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((8, 4, 64, 64)).astype(np.float32)  # several rows per thread
    one = run_with_threads(1, compiled.attention_softmax_forward, scores, 0.125, None, True)
    two = run_with_threads(2, compiled.attention_softmax_forward, scores, 0.125, None, True)
    np.testing.assert_array_equal(one, two)
    g = rng.standard_normal(scores.shape).astype(np.float32)
    np.testing.assert_array_equal(run_with_threads(1, compiled.attention_softmax_backward, g, one, 0.125),
                                  run_with_threads(2, compiled.attention_softmax_backward, g, one, 0.125))


@pytest.mark.parametrize("module", [compiled, reference], ids=["cython", "numpy"])
def test_a_mask_of_the_wrong_shape_is_refused(module):
    with pytest.raises(ValueError, match=r"attention_softmax_forward: mask \(3, 3\) must be \(L, S\)"):
        module.attention_softmax_forward(np.zeros((2, 4, 5), np.float32), 1.0, np.zeros((3, 3), np.float32))


# ------------------------------------------------------------------ key padding masks (all versions)

@st.composite
def padded_problems(draw):
    """Scores (B, L, S) or (B, nh, L, S), a bool key padding mask (B, S) with padded keys
    (a whole batch row of them, sometimes), maybe an (L, S) mask and causal as well, and
    sometimes a NaN score at a padded key (not seen: it must not show)."""
    batch, length = draw(st.integers(1, 3)), draw(st.integers(1, 5))
    keys = draw(st.sampled_from([1, 2, 5, 7, 33, 70]))  # 33, 70: more keys than a warp's threads
    heads = draw(st.sampled_from([(), (1,), (2,), (3,)]))
    dtype = draw(dtypes)
    rng = np.random.default_rng(draw(seeds))
    scores = strided(rng, (batch,) + heads + (length, keys), dtype, draw(st.booleans()),
                     scale=draw(st.sampled_from([1.0, 10.0, 1e4])))
    padding = rng.random((batch, keys)) < draw(st.sampled_from([0.0, 0.3, 0.7]))
    if draw(st.booleans()):
        padding[rng.integers(batch)] = True  # a batch row with nothing but padding: its rows are all 0
    if draw(st.booleans()):
        padding = np.asfortranarray(padding)  # not C-contiguous: the wrappers must not read it as such
    if padding.any() and draw(st.booleans()):
        b, j = np.argwhere(padding)[rng.integers(padding.sum())]
        scores[b, ..., j] = np.nan
    mask = None
    if draw(st.booleans()):
        mask = np.where(rng.random((length, keys)) < 0.3, -np.inf, rng.standard_normal((length, keys))).astype(dtype)
    return scores, draw(st.sampled_from([1.0, 0.125, 3.0])), mask, draw(st.booleans()), padding


def per_batch_row(scores, scale, mask, causal, padding):
    """The reference without its key_padding_mask: batch row b alone, its padding added
    to the (L, S) mask as -inf. An oracle for what the padding mask means."""
    length, keys = scores.shape[-2:]
    out = np.empty_like(scores)
    for b in range(scores.shape[0]):
        additive = np.where(padding[b], -np.inf, 0.0) + (mask if mask is not None else np.zeros((length, keys)))
        out[b] = reference.attention_softmax_forward(scores[b], scale, additive.astype(scores.dtype), causal)
    return out


@given(problem=padded_problems())
def test_the_reference_drops_each_batch_rows_padding_keys(problem):
    scores, scale, mask, causal, padding = problem
    scores = np.where(np.isnan(scores), 0, scores).astype(scores.dtype)  # the oracle adds -inf: NaN + -inf is NaN
    probs = reference.attention_softmax_forward(scores, scale, mask, causal, padding)
    np.testing.assert_allclose(probs, per_batch_row(scores, scale, mask, causal, padding),
                               **TOLERANCE[scores.dtype.type])
    spread = padding.reshape(padding.shape[:1] + (1,) * (scores.ndim - 2) + padding.shape[1:])
    assert np.all(probs[np.broadcast_to(spread, probs.shape)] == 0)  # no query of row b sees b's padding
    assert np.all(probs[padding.all(axis=1)] == 0)  # all padding: no distribution, zeros


@given(problem=padded_problems(), seed=seeds)
def test_cython_with_a_key_padding_mask_matches_reference(problem, seed):
    scores, scale, mask, causal, padding = problem
    tol = TOLERANCE[scores.dtype.type]
    probs = compiled.attention_softmax_forward(scores, scale, mask, causal, padding)
    want = reference.attention_softmax_forward(scores, scale, mask, causal, padding)
    assert probs.shape == scores.shape and probs.dtype == scores.dtype
    np.testing.assert_allclose(probs, want, **tol)
    assert not np.isnan(want).any()  # a NaN only at padded keys is never seen
    grad_probs = np.random.default_rng(seed).standard_normal(scores.shape).astype(scores.dtype)
    np.testing.assert_allclose(compiled.attention_softmax_backward(grad_probs, want, scale),
                               reference.attention_softmax_backward(grad_probs, want, scale), **tol)


@pytest.mark.skipif(not kernels.openmp_enabled(), reason="built without OpenMP: the kernels run on one thread only")
def test_one_and_two_threads_agree_with_a_key_padding_mask():
    rng = np.random.default_rng(1)
    scores = rng.standard_normal((5, 4, 16, 48)).astype(np.float32)  # batch rows split across threads
    padding = rng.random((5, 48)) < 0.4
    one = run_with_threads(1, compiled.attention_softmax_forward, scores, 0.125, None, True, padding)
    two = run_with_threads(2, compiled.attention_softmax_forward, scores, 0.125, None, True, padding)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_allclose(one, reference.attention_softmax_forward(scores, 0.125, None, True, padding),
                               **TOLERANCE[np.float32])


BAD_PADDING = [  # (scores shape, key_padding_mask, error, message)
    ((2, 3, 4), np.zeros((3, 4), bool), ValueError,
     r"attention_softmax_forward: key_padding_mask \(3, 4\) must be \(B, S\) = \(2, 4\) for scores \(2, 3, 4\)"),
    ((2, 2, 3, 4), np.zeros((2, 3), bool), ValueError,
     r"attention_softmax_forward: key_padding_mask \(2, 3\) must be \(B, S\) = \(2, 4\) for scores \(2, 2, 3, 4\)"),
    ((2, 3, 4), np.zeros((2, 1, 4), bool), ValueError, r"key_padding_mask \(2, 1, 4\) must be \(B, S\)"),
    ((3, 4), np.zeros((3, 4), bool), ValueError,
     r"attention_softmax_forward: a key_padding_mask needs scores \(B, \.\.\., L, S\) with a batch axis, "
     r"got scores \(3, 4\)"),
    ((2, 3, 4), np.zeros((2, 4), np.float32), TypeError,
     r"attention_softmax_forward: key_padding_mask must be a bool array \(True = a padding key\), got float32"),
    ((2, 3, 4), np.zeros((2, 4), np.uint8), TypeError, "key_padding_mask must be a bool array .* got uint8"),
]


@pytest.mark.parametrize("module", [compiled, reference], ids=["cython", "numpy"])
@pytest.mark.parametrize("shape, padding, error, message", BAD_PADDING)
def test_a_bad_key_padding_mask_is_refused(module, shape, padding, error, message):
    with pytest.raises(error, match=message):
        module.attention_softmax_forward(np.zeros(shape, np.float32), 1.0, None, False, padding)


# ---------------------------------------------------------------- CUDA (kernels/cuda/attention_softmax.cu)
# Against the reference through the CPU emulation, and on a GPU when one is usable.

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
    probs = cuda_attention_softmax.attention_softmax_forward(device.put(scores), scale, device.put(mask), causal,
                                                             **geometry)
    expected = ref_attention_softmax.attention_softmax_forward(scores, scale, mask, causal)
    cuda_close(probs, expected, dtype, name="probs")
    grad = np.random.default_rng(seed).standard_normal(scores.shape).astype(dtype)
    got = cuda_attention_softmax.attention_softmax_backward(device.put(grad), device.put(expected), scale, **geometry)
    cuda_close(got, ref_attention_softmax.attention_softmax_backward(grad, expected, scale), dtype, scale=scale,
          name="grad_scores")


@pytest.mark.usefixtures("launches_refused")
def test_the_cuda_wrappers_refuse_bad_input_before_launching():
    f32 = np.float32
    scores = np.zeros((2, 3, 4), f32)
    with pytest.raises(ValueError, match=r"attention_softmax_forward: mask \(4, 3\) must be \(L, S\) = \(3, 4\)"):
        cuda_attention_softmax.attention_softmax_forward(scores, 1.0, np.zeros((4, 3), f32))
    with pytest.raises(ValueError, match=r"scores must be \(\.\.\., L, S\), got shape \(4,\)"):
        cuda_attention_softmax.attention_softmax_forward(np.zeros(4, f32), 1.0)
    with pytest.raises(TypeError, match="attention_softmax_forward: scores must be float32 or float64, got int64"):
        cuda_attention_softmax.attention_softmax_forward(np.zeros((3, 4), np.int64), 1.0)
    with pytest.raises(TypeError, match="mask must be a float array"):
        cuda_attention_softmax.attention_softmax_forward(scores, 1.0, np.zeros((3, 4), bool))
    with pytest.raises(ValueError, match="attention_softmax_backward: grad_probs \\(2, 3\\) and probs"):
        cuda_attention_softmax.attention_softmax_backward(np.zeros((2, 3), f32), scores, 1.0)
    with pytest.raises(TypeError, match="grad_probs is float64, expected float32"):
        cuda_attention_softmax.attention_softmax_backward(np.zeros(scores.shape), scores, 1.0)


@devices
@settings(max_examples=EXAMPLES)
@given(problem=padded_problems(), seed=seeds, geometry=geometries)
def test_attention_softmax_with_a_key_padding_mask(device, problem, seed, geometry):
    device.require()
    threads, max_blocks = geometry
    scores, scale, mask, causal, padding = problem
    dtype = scores.dtype.type
    geometry = dict(threads=threads, max_blocks=max_blocks)
    probs = cuda_attention_softmax.attention_softmax_forward(device.put(scores), scale, device.put(mask), causal,
                                                             device.put(padding), **geometry)
    expected = ref_attention_softmax.attention_softmax_forward(scores, scale, mask, causal, padding)
    cuda_close(probs, expected, dtype, name="probs")
    grad = np.random.default_rng(seed).standard_normal(scores.shape).astype(dtype)
    got = cuda_attention_softmax.attention_softmax_backward(device.put(grad), device.put(expected), scale, **geometry)
    cuda_close(got, ref_attention_softmax.attention_softmax_backward(grad, expected, scale), dtype, scale=scale,
               name="grad_scores")


@pytest.mark.usefixtures("launches_refused")
@pytest.mark.parametrize("shape, padding, error, message", BAD_PADDING)
def test_the_cuda_wrapper_refuses_a_bad_key_padding_mask_before_launching(shape, padding, error, message):
    with pytest.raises(error, match=message):
        cuda_attention_softmax.attention_softmax_forward(np.zeros(shape, np.float32), 1.0, None, False, padding)
