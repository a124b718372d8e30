"""Loss, perplexity and next-token accuracy of a language model on held-out ids."""

from __future__ import annotations

import math

import numpy as np

import tinylm
from tinylm.data import ContiguousBatches
from tinylm.models import LSTMLanguageModel
from tinylm.nn import functional as F


def evaluate(model, ids: np.ndarray, batch_size: int, seq_len: int) -> dict:
    """Mean cross-entropy (nats per token), perplexity e^loss and accuracy of the
    most likely next token, over ``batch_size`` parallel streams of ``ids`` read
    ``seq_len`` tokens at a time. The LSTM carries its state from one chunk to the
    next, as it would reading the text; the transformer sees each chunk on its own."""
    batch_size = max(1, min(batch_size, (len(ids) - 1) // (seq_len + 1)))
    batches = ContiguousBatches(ids, batch_size, seq_len)
    chunks = (batches.streams.shape[1] - 1) // seq_len
    was_training = model.training
    model.eval()
    total_loss, correct, count, state = 0.0, 0, 0, None
    with tinylm.no_grad():
        for _ in range(chunks):
            inputs, targets, _ = batches.next()
            if isinstance(model, LSTMLanguageModel):
                logits, state = model(inputs, state)
            else:
                logits = model(inputs)
            flat_logits = logits.reshape(-1, logits.shape[-1])
            total_loss += F.cross_entropy(flat_logits, targets.reshape(-1), reduction="sum").item()
            correct += int((flat_logits.numpy().argmax(axis=1) == targets.reshape(-1)).sum())
            count += targets.size
    model.train(was_training)
    loss = total_loss / count
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "accuracy": correct / count, "tokens": count}
