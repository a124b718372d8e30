"""A few training steps of each language model, with dropout, give the same losses on
the ``numpy`` backend (the reference kernels) and the ``cython`` backend (every
compiled kernel in play: embedding, LSTM, attention softmax, LayerNorm, dropout,
cross-entropy, AdamW), to float32 tolerance. Dropout masks are counter-based, so both
backends drop the very same elements."""

import numpy as np
import pytest

import tinylm
from tinylm import nn, optim
from tinylm.backends import is_usable
from tinylm.models import LSTMLanguageModel, TransformerLanguageModel

MODELS = {
    "lstm": lambda: LSTMLanguageModel(vocab_size=31, embedding_dim=16, hidden_dim=24, n_layers=2, dropout=0.2),
    "transformer": lambda: TransformerLanguageModel(vocab_size=31, d_model=16, n_heads=2, n_layers=2, max_len=32,
                                                    dropout=0.2),
}


def train_losses(model_name: str, backend: str, steps: int = 4) -> list[float]:
    tinylm.manual_seed(0)
    model = MODELS[model_name]()  # the same initial weights on both backends
    optimizer = optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    rng = np.random.default_rng(1)
    losses = []
    with tinylm.use_backend(backend):
        for _ in range(steps):
            batch = rng.integers(0, 31, size=(4, 13))
            logits, _ = model(batch[:, :-1])  # every model returns (logits, state)
            loss = nn.functional.cross_entropy(logits.reshape(-1, 31), batch[:, 1:].reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(float(loss.item()))
    return losses


@pytest.mark.skipif(not is_usable("cython"), reason="the Cython kernels are not built")
@pytest.mark.parametrize("model_name", MODELS)
def test_numpy_and_cython_backends_give_the_same_losses(model_name):
    reference = train_losses(model_name, "numpy")
    compiled = train_losses(model_name, "cython")
    assert reference[-1] != reference[0]  # the weights really moved
    np.testing.assert_allclose(compiled, reference, rtol=2e-5)
