"""The Cython causal attention kernels against the NumPy reference, and the fused op.

Property: for any N heads, T steps and head size (1 and odd sizes included), float32 or
float64, contiguous or not, scores from ordinary to saturated (inputs x30: one key takes
all the weight), the forward's output and log-sum-exp and the backward's three gradients
agree with the reference, on every path of the kernels' matrix products; a NaN input
makes NaN where the reference does; bad input is refused naming the op. The op
``causal_attention`` passes gradcheck on both CPU backends, and multi-head attention gives
the same output and gradients through it as written out (weights, then @ v).
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import PRODUCT_PATHS, products_through, seeds

import tinylm
from tinylm import Tensor, nn
from tinylm.gradcheck import gradcheck
from tinylm.kernels.cpu import causal_attention as compiled
from tinylm.ops.causal_attention import causal_attention
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


def test_a_nan_query_makes_its_row_nan_and_leaves_the_others():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 5, 3)) for _ in range(3))
    q[1, 2, 0] = np.nan
    out, logsumexp = compiled.causal_attention_forward(q, k, v, 0.5)
    expected_out, expected_lse = reference.causal_attention_forward(q, k, v, 0.5)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected_out))
    np.testing.assert_array_equal(np.isnan(logsumexp), np.isnan(expected_lse))
    assert np.isnan(out[1, 2]).all() and not np.isnan(out[0]).any() and not np.isnan(out[1, [0, 1, 3, 4]]).any()


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
