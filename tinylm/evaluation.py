"""Loss, perplexity and next-token accuracy of a language model on held-out ids."""

from __future__ import annotations

import math

import numpy as np

import tinylm
from tinylm.data import ContiguousBatches
from tinylm.nn import functional as F


def evaluate(model, ids: np.ndarray, batch_size: int, seq_len: int) -> dict:
    """Mean cross-entropy (nats per token), perplexity e^loss and accuracy of the
    most likely next token, over ``batch_size`` parallel streams of ``ids`` read
    ``seq_len`` tokens at a time. Each chunk's state goes into the next chunk's forward:
    a model that carries state (the LSTM) continues each stream as it would reading the
    text; one that does not (the transformer) returns None and sees each chunk on its own."""
    batch_size = max(1, min(batch_size, (len(ids) - 1) // (seq_len + 1)))
    batches = ContiguousBatches(ids, batch_size, seq_len)
    chunks = (batches.streams.shape[1] - 1) // seq_len
    was_training = model.training
    model.eval()
    total_loss, correct, count, state = 0.0, 0, 0, None
    with tinylm.no_grad():
        for _ in range(chunks):
            inputs, targets, _ = batches.next()
            logits, state = model(inputs, state)  # (B, T, V)
            flat_logits = logits.reshape(-1, logits.shape[-1])  # (B * T, V)
            total_loss += F.cross_entropy(flat_logits, targets.reshape(-1), reduction="sum").item()
            correct += int((flat_logits.numpy().argmax(axis=1) == targets.reshape(-1)).sum())
            count += targets.size
    model.train(was_training)
    loss = total_loss / count
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "accuracy": correct / count, "tokens": count}
