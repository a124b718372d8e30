"""The Cython attention softmax (scale + mask + softmax) against its NumPy reference.

Property: for scores (..., L, S) of either float dtype, contiguous or not, scores of
±1e4, additive masks with -inf entries (whole rows too), causal or not, both give the
same probabilities (rows sum to 1, or are all 0 when every key is masked) and the same
gradients, on 1 or 2 threads."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import run_with_threads, seeds

from tinylm import kernels
from tinylm.kernels.cpu import attention_softmax as compiled
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
