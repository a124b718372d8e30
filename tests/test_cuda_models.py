"""Both language models train through the CUDA kernels (emulated on the CPU) as they do
through the NumPy reference: the registry's "numpy" entries are pointed at the "cuda"
wrappers, and the losses and gradients of three AdamW steps must agree. This checks what
the per-kernel tests cannot: that the wrappers fit the ops that call them (signatures,
dtypes, the LSTM's saved tuple, Adam's in-place update, dropout's mask), as they will on
a GPU under the ``cuda`` backend."""

import numpy as np
import pytest

import tinylm
from tinylm import backends, optim
from tinylm.kernels.cuda.emulation import emulation_unavailable_reason
from tinylm.models import LSTMLanguageModel, TransformerLanguageModel
from tinylm.nn import functional as F

reason = emulation_unavailable_reason()
pytestmark = pytest.mark.skipif(reason is not None, reason=f"CUDA emulation unavailable: {reason}")

VOCAB, BATCH, STEPS = 19, 2, 7


def build(kind):
    tinylm.manual_seed(0)
    if kind == "lstm":
        return LSTMLanguageModel(VOCAB, 8, 12, n_layers=2, dropout=0.2)
    return TransformerLanguageModel(VOCAB, 16, 2, n_layers=1, max_len=STEPS, dropout=0.2)


def train(kind, monkeypatch, through_cuda: bool):
    with monkeypatch.context() as patch:
        if through_cuda:
            for name, where in list(backends.KERNELS.items()):
                if "cuda" in where:
                    patch.setitem(backends.KERNELS, name, {**where, "numpy": where["cuda"]})
        patch.setattr(backends, "_loaded", {})
        served = backends.kernel_for("layer_norm_forward", "numpy")
        assert served.__module__.startswith("tinylm.kernels.cuda" if through_cuda else "tinylm.reference")
        model = build(kind)
        optimizer = optim.AdamW(model.parameters(), lr=1e-2)
        batch = np.random.default_rng(1).integers(0, VOCAB, (BATCH, STEPS + 1))
        losses, first_grads = [], None
        with tinylm.use_backend("numpy"):
            for _ in range(3):
                logits, _ = model(batch[:, :-1])
                loss = F.cross_entropy(logits.reshape(-1, VOCAB), batch[:, 1:].reshape(-1))
                optimizer.zero_grad()
                loss.backward()
                if first_grads is None:
                    first_grads = {name: np.array(p.grad.data) for name, p in model.named_parameters()}
                optimizer.step()
                losses.append(loss.item())
    return losses, first_grads


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_training_through_the_cuda_kernels_matches_the_reference(kind, monkeypatch):
    expected_losses, expected_grads = train(kind, monkeypatch, through_cuda=False)
    losses, grads = train(kind, monkeypatch, through_cuda=True)
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-4)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        scale = float(np.abs(expected_grads[name]).max(initial=1e-3))
        np.testing.assert_allclose(grad, expected_grads[name], rtol=1e-3, atol=1e-4 * scale, err_msg=name)
