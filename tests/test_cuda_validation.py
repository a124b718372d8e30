"""The CUDA launch wrappers refuse bad input before any launch: out-of-range ids or
targets are an IndexError naming the value, bad shapes a ValueError, wrong dtypes a
TypeError, each naming the op. A kernel can then assume its inputs and never reads or
writes outside them. No compiler or GPU is needed: launching is patched to fail, so a
wrapper that launched before refusing would fail these tests.
"""

import numpy as np
import pytest

from tinylm.kernels.cuda import (
    adam,
    attention_softmax,
    causal_attention,
    cross_entropy,
    dropout,
    embedding,
    gelu,
    launch,
    layer_norm,
    lstm,
)


@pytest.fixture(autouse=True)
def no_launch(monkeypatch):
    def launched(*args, **kwargs):
        raise AssertionError("the wrapper launched a kernel before refusing its input")

    monkeypatch.setattr(launch.CudaSource, "_emulate", launched)
    monkeypatch.setattr(launch.CudaSource, "_cupy", launched)


f32 = np.float32


def test_embedding():
    weight = np.zeros((5, 3), f32)
    for bad in (-1, 5, 2**40):
        with pytest.raises(IndexError, match=rf"embedding_forward: id {bad} is out of range for a vocabulary of 5"):
            embedding.embedding_forward(weight, np.array([0, bad, 1]))
        with pytest.raises(IndexError, match=rf"embedding_backward: id {bad} is out of range"):
            embedding.embedding_backward(np.zeros((3, 3), f32), np.array([0, bad, 1]), 5)
    with pytest.raises(IndexError, match=f"id {2**64 - 1} is out of range"):  # not wrapped by a cast to int64
        embedding.embedding_forward(weight, np.array([2**64 - 1], np.uint64))
    with pytest.raises(TypeError, match="embedding_forward: ids must be an integer array, got float64"):
        embedding.embedding_forward(weight, np.zeros(3))
    with pytest.raises(TypeError, match="embedding_forward: weight must be float32 or float64, got float16"):
        embedding.embedding_forward(weight.astype(np.float16), np.zeros(3, np.int64))
    with pytest.raises(ValueError,
                       match=r"embedding_forward: weight must be \(num_embeddings, dim\), got shape \(5,\)"):
        embedding.embedding_forward(np.zeros(5, f32), np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"embedding_backward: grad_output \(3, 4\) does not match ids \(4,\)"):
        embedding.embedding_backward(np.zeros((3, 4), f32), np.zeros(4, np.int64), 2)
    with pytest.raises(ValueError, match="num_embeddings must be >= 0"):
        embedding.embedding_backward(np.zeros((0, 4), f32), np.zeros(0, np.int64), -1)
    with pytest.raises(TypeError, match="num_embeddings must be an int"):
        embedding.embedding_backward(np.zeros((1, 4), f32), np.zeros(1, np.int64), 2.0)


def test_adam_update():
    p = np.zeros(4, f32)
    args = (1, 1e-3, 0.9, 0.999, 1e-8, 0.0, False)
    with pytest.raises(TypeError, match="adam_update: grad is float64, param is float32"):
        adam.adam_update(p, np.zeros(4), p.copy(), p.copy(), *args)
    with pytest.raises(ValueError, match=r"adam_update: exp_avg has shape \(3,\), param \(4,\)"):
        adam.adam_update(p, p.copy(), np.zeros(3, f32), p.copy(), *args)
    with pytest.raises(ValueError, match="param must be C-contiguous"):
        adam.adam_update(np.zeros(8, f32)[::2], p.copy(), p.copy(), p.copy(), *args)
    with pytest.raises(ValueError, match="adam_update: step must be >= 1, got 0"):
        adam.adam_update(p, p.copy(), p.copy(), p.copy(), 0, *args[1:])
    m = np.zeros(4, f32)
    with pytest.raises(ValueError, match="exp_avg and exp_avg_sq share memory"):
        adam.adam_update(p, p.copy(), m, m, *args)
    with pytest.raises(TypeError, match="param must be float32 or float64, got int64"):
        adam.adam_update(np.zeros(4, np.int64), *(np.zeros(4, np.int64) for _ in range(3)), *args)
    frozen = np.zeros(4, f32)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="exp_avg is read-only"):
        adam.adam_update(p, p.copy(), frozen, p.copy(), *args)


def test_layer_norm():
    x = np.zeros((3, 4), f32)
    with pytest.raises(ValueError, match=r"layer_norm_forward: x must be \(N, D\), got shape \(3, 4, 1\)"):
        layer_norm.layer_norm_forward(x[..., None], None, None, 1e-5)
    with pytest.raises(ValueError, match=r"layer_norm_forward: weight \(3,\) must be \(D,\) = \(4,\)"):
        layer_norm.layer_norm_forward(x, np.ones(3, f32), None, 1e-5)
    with pytest.raises(TypeError, match="layer_norm_forward: bias is float64, expected float32 like x"):
        layer_norm.layer_norm_forward(x, None, np.zeros(4), 1e-5)
    with pytest.raises(ValueError, match="has no columns"):
        layer_norm.layer_norm_forward(np.zeros((3, 0), f32), None, None, 1e-5)
    with pytest.raises(ValueError, match=r"layer_norm_backward: grad_y \(4, 3\) must have x's shape \(3, 4\)"):
        layer_norm.layer_norm_backward(x.T, x, None, np.zeros(3, f32), np.ones(3, f32))
    with pytest.raises(ValueError, match=r"layer_norm_backward: rstd \(4,\) must be \(N,\) = \(3,\)"):
        layer_norm.layer_norm_backward(x, x, None, np.zeros(3, f32), np.ones(4, f32))
    with pytest.raises(TypeError, match="layer_norm_backward: mean is float64"):
        layer_norm.layer_norm_backward(x, x, None, np.zeros(3), np.ones(3, f32))


def test_attention_softmax():
    scores = np.zeros((2, 3, 4), f32)
    with pytest.raises(ValueError, match=r"attention_softmax_forward: mask \(4, 3\) must be \(L, S\) = \(3, 4\)"):
        attention_softmax.attention_softmax_forward(scores, 1.0, np.zeros((4, 3), f32))
    with pytest.raises(ValueError, match=r"scores must be \(\.\.\., L, S\), got shape \(4,\)"):
        attention_softmax.attention_softmax_forward(np.zeros(4, f32), 1.0)
    with pytest.raises(TypeError, match="attention_softmax_forward: scores must be float32 or float64, got int64"):
        attention_softmax.attention_softmax_forward(np.zeros((3, 4), np.int64), 1.0)
    with pytest.raises(TypeError, match="mask must be a float array"):
        attention_softmax.attention_softmax_forward(scores, 1.0, np.zeros((3, 4), bool))
    with pytest.raises(ValueError, match="attention_softmax_backward: grad_probs \\(2, 3\\) and probs"):
        attention_softmax.attention_softmax_backward(np.zeros((2, 3), f32), scores, 1.0)
    with pytest.raises(TypeError, match="grad_probs is float64, expected float32"):
        attention_softmax.attention_softmax_backward(np.zeros(scores.shape), scores, 1.0)


def test_cross_entropy():
    logits = np.zeros((3, 5), f32)
    for bad in (5, -1, 2**40):
        with pytest.raises(IndexError, match=rf"cross_entropy_forward: target {bad} is out of range for 5 classes"):
            cross_entropy.cross_entropy_forward(logits, np.array([0, bad, 1]), -100)
    with pytest.raises(IndexError, match="cross_entropy_backward: target 7 is out of range"):
        cross_entropy.cross_entropy_backward(np.zeros(3, f32), logits, np.array([0, 7, 1]), np.zeros(3, f32), -100)
    with pytest.raises(TypeError, match="targets must be integers, got float64"):
        cross_entropy.cross_entropy_forward(logits, np.zeros(3), -100)
    with pytest.raises(ValueError, match=r"logits must be \(N, C\) and targets \(N,\), got \(3, 5\) and \(4,\)"):
        cross_entropy.cross_entropy_forward(logits, np.zeros(4, np.int64), -100)
    with pytest.raises(ValueError, match=r"cross_entropy_backward: logsumexp \(2,\) must be \(N,\) = \(3,\)"):
        cross_entropy.cross_entropy_backward(np.zeros(3, f32), logits, np.zeros(3, np.int64), np.zeros(2, f32), -100)
    with pytest.raises(TypeError, match="cross_entropy_backward: grad_losses is float64, expected float32"):
        cross_entropy.cross_entropy_backward(np.zeros(3), logits, np.zeros(3, np.int64), np.zeros(3, f32), -100)
    bounds = rf"\[{-2**63}, {2**63 - 1}\]"
    with pytest.raises(ValueError, match=rf"cross_entropy_forward: ignore_index must be in {bounds}, got {2**70}"):
        cross_entropy.cross_entropy_forward(logits, np.zeros(3, np.int64), 2**70)


def test_lstm():
    x, w, h = np.zeros((2, 3, 8), f32), np.zeros((8, 2), f32), np.zeros((3, 2), f32)
    with pytest.raises(ValueError,
                       match=r"lstm_layer_forward: x_proj \(2, 3, 8\) must be \(T, B, 4H\) and w_hh \(8, 3\)"):
        lstm.lstm_layer_forward(x, np.zeros((8, 3), f32), h, h)
    with pytest.raises(ValueError, match=r"h0 \(2, 2\) and c0 \(3, 2\) must be \(B, H\) = \(3, 2\)"):
        lstm.lstm_layer_forward(x, w, np.zeros((2, 2), f32), h)
    with pytest.raises(TypeError, match="w_hh is float64, expected float32"):
        lstm.lstm_layer_forward(x, w.astype(np.float64), h, h)
    with pytest.raises(ValueError, match="empty"):
        lstm.lstm_layer_forward(np.zeros((0, 3, 8), f32), w, h, h)
    with pytest.raises(ValueError, match=r"lstm_cell_forward: gates \(3, 7\) must be \(B, 4H\)"):
        lstm.lstm_cell_forward(np.zeros((3, 7), f32), h)
    with pytest.raises(ValueError, match="lstm_cell_backward: dh_out"):
        lstm.lstm_cell_backward(h, h, h, h, (np.zeros((3, 6), f32), h))
    saved = tuple(np.zeros(s, f32) for s in ((2, 3, 2), (2, 3, 2), (2, 3, 8), (2, 3, 2)))
    with pytest.raises(ValueError, match=r"d_hs \(1, 3, 2\) must be \(T, B, H\)"):
        lstm.lstm_layer_backward(np.zeros((1, 3, 2), f32), h, h, w, h, h, saved)
    with pytest.raises(TypeError, match="the saved arrays must be float32 or float64, got int64"):
        lstm.lstm_layer_backward(np.zeros((2, 3, 2), f32), h, h, w, h, h, tuple(a.astype(np.int64) for a in saved))


def test_dropout():
    x = np.zeros((3, 4), f32)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\], got 1.5"):
        dropout.dropout_forward(x, 1.5, 0)
    with pytest.raises(TypeError, match="dropout_forward: seed must be an int"):
        dropout.dropout_forward(x, 0.5, 1.5)
    with pytest.raises(TypeError, match="dropout_backward: mask must be uint8"):
        dropout.dropout_backward(x, np.ones((3, 4), bool), 0.5)
    with pytest.raises(ValueError, match=r"dropout_backward: mask \(4, 3\) must have grad_y's shape \(3, 4\)"):
        dropout.dropout_backward(x, np.ones((4, 3), np.uint8), 0.5)
    with pytest.raises(TypeError, match="dropout_forward: x must be float32 or float64, got int32"):
        dropout.dropout_forward(np.zeros(3, np.int32), 0.5, 0)


def test_gelu():
    x = np.zeros((3, 4), f32)
    with pytest.raises(TypeError, match="gelu_forward: x must be float32 or float64, got int64"):
        gelu.gelu_forward(np.zeros(3, np.int64))
    with pytest.raises(TypeError, match="gelu_forward: x must be a NumPy or CuPy array, got list"):
        gelu.gelu_forward([1.0, 2.0])
    with pytest.raises(ValueError, match=r"gelu_backward: grad_y \(4, 3\) must have x's shape \(3, 4\)"):
        gelu.gelu_backward(x.T, x)
    with pytest.raises(ValueError, match=r"gelu_backward: grad_y \(1,\) must have x's shape"):  # no broadcasting
        gelu.gelu_backward(np.ones(1, f32), x)
    with pytest.raises(TypeError, match="gelu_backward: grad_y is float64, expected float32 like x"):
        gelu.gelu_backward(np.zeros((3, 4)), x)
    with pytest.raises(TypeError, match="gelu_backward: grad_y must be a NumPy or CuPy array, got float"):
        gelu.gelu_backward(1.0, x)


def test_causal_attention():
    q = np.zeros((2, 5, 8), f32)
    with pytest.raises(ValueError, match=r"causal_attention_forward: q, k, v must be \(N, T, hs\) of one shape"):
        causal_attention.causal_attention_forward(q, q[:, :4], q, 1.0)
    with pytest.raises(TypeError, match="q, k, v must share one float dtype"):
        causal_attention.causal_attention_forward(q, q.astype(np.float64), q, 1.0)
    with pytest.raises(ValueError, match="head size 129 .* is above the kernel's 128"):
        big = np.zeros((1, 2, 129), f32)
        causal_attention.causal_attention_forward(big, big, big, 1.0)
    with pytest.raises(ValueError, match="bytes of shared memory, above 49152"):
        wide = np.zeros((1, 2, 128))
        causal_attention.causal_attention_forward(wide, wide, wide, 1.0, threads=256)
    with pytest.raises(ValueError, match=r"causal_attention_backward: grad_out \(2, 5, 7\) and out"):
        causal_attention.causal_attention_backward(np.zeros((2, 5, 7), f32), q, q, q, q, np.zeros((2, 5), f32), 1.0)


def test_launch_geometry_is_checked():
    with pytest.raises(ValueError, match="threads per block must be a multiple of 32 in \\[32, 1024\\], got 48"):
        attention_softmax.attention_softmax_forward(np.zeros((2, 3), f32), 1.0, threads=48)
    with pytest.raises(ValueError, match="max_blocks must be at least 1"):
        dropout.dropout_forward(np.zeros(3, f32), 0.5, 0, max_blocks=0)


def test_numpy_and_cupy_arrays_are_not_mixed(monkeypatch):
    class FakeCupyArray:  # what as_array sees of a CuPy array: its type's module
        __module__ = "cupy._core.core"

    with pytest.raises(TypeError, match="embedding_forward: ids is a CuPy array but the other inputs are NumPy arrays"):
        embedding.embedding_forward(np.zeros((3, 2), f32), FakeCupyArray())


def test_importing_the_cuda_modules_imports_neither_cupy_nor_a_compiler():
    import subprocess
    import sys

    code = ("import sys, tinylm, tinylm.backends as b, importlib\n"
            "for impl in b.KERNELS.values():\n"
            "    if 'cuda' in impl: importlib.import_module(impl['cuda'].split(':')[0])\n"
            "import tinylm.kernels.cuda.resource_usage\n"
            "assert 'cupy' not in sys.modules, 'cupy was imported'\n"
            "print(sorted(m for m in sys.modules if m.startswith('tinylm.kernels.cuda.')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "tinylm.kernels.cuda.causal_attention" in result.stdout
