"""The causal attention reference (tinylm/reference/causal_attention.py), the oracle of the fused
CUDA kernel: its forward against a direct per-query loop, its backward against central
finite differences (float64) of L = Σ g ⊙ out, including through the logsumexp it
rebuilds the probabilities from."""

import numpy as np
import pytest

from tinylm.reference.causal_attention import causal_attention_backward, causal_attention_forward


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 5, 3), (1, 7, 4)])
def test_forward_is_causal_softmax_attention(shape):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal(shape) for _ in range(3))
    out, lse = causal_attention_forward(q, k, v, 0.5)
    for n in range(shape[0]):
        for i in range(shape[1]):
            s = 0.5 * k[n, : i + 1] @ q[n, i]  # the keys query i sees
            np.testing.assert_allclose(lse[n, i], np.log(np.exp(s).sum()), rtol=1e-13)
            np.testing.assert_allclose(out[n, i], np.exp(s - lse[n, i]) @ v[n, : i + 1], rtol=1e-12, atol=1e-14)
    assert out.dtype == lse.dtype == np.float64
    out32, lse32 = causal_attention_forward(*(a.astype(np.float32) for a in (q, k, v)), 0.5)
    assert out32.dtype == lse32.dtype == np.float32


@pytest.mark.parametrize("shape", [(1, 1, 2), (2, 4, 3), (1, 6, 2)])
def test_backward_matches_finite_differences(shape):
    rng = np.random.default_rng(1)
    q, k, v, grad = (rng.standard_normal(shape) for _ in range(4))
    scale = 0.7

    def loss(q, k, v):
        return float((grad * causal_attention_forward(q, k, v, scale)[0]).sum())

    out, lse = causal_attention_forward(q, k, v, scale)
    analytic = causal_attention_backward(grad, q, k, v, out, lse, scale)
    step = 1e-6
    for which, (name, array) in enumerate(zip(("dq", "dk", "dv"), (q, k, v))):
        numeric = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            args_plus, args_minus = [q.copy(), k.copy(), v.copy()], [q.copy(), k.copy(), v.copy()]
            args_plus[which][index] += step
            args_minus[which][index] -= step
            numeric[index] = (loss(*args_plus) - loss(*args_minus)) / (2 * step)
        np.testing.assert_allclose(analytic[which], numeric, rtol=1e-6, atol=1e-8, err_msg=name)


def test_refuses_mismatched_shapes_and_dtypes():
    q = np.zeros((1, 3, 2))
    with pytest.raises(ValueError, match=r"causal_attention_forward: q, k, v must be \(N, T, hs\)"):
        causal_attention_forward(q, q[:, :2], q, 1.0)
    with pytest.raises(TypeError, match="one float dtype"):
        causal_attention_forward(q, q.astype(np.float32), q, 1.0)
