"""Sampling text from a language model, one token at a time."""

from __future__ import annotations

from typing import Iterator

import numpy as np

import tinylm
from tinylm import backends
from tinylm.models import LSTMLanguageModel
from tinylm.models.lstm import LSTMStepper


def next_token_distribution(logits: np.ndarray, temperature: float, top_k: int | None) -> np.ndarray:
    """Probabilities of the next token from its logits (V,): divide by the temperature
    (below 1 sharpens, above 1 flattens), keep the ``top_k`` most likely, softmax."""
    logits = logits.astype(np.float64) / max(temperature, 1e-8)
    if top_k is not None and 0 < top_k < len(logits):
        cutoff = np.partition(logits, -top_k)[-top_k]
        logits = np.where(logits < cutoff, -np.inf, logits)
    probabilities = np.exp(logits - logits.max())
    return probabilities / probabilities.sum()


def sample_tokens(model, prompt_ids: np.ndarray, max_new_tokens: int, rng: np.random.Generator,
                  temperature: float = 1.0, top_k: int | None = None) -> Iterator[int]:
    """Yield ``max_new_tokens`` sampled ids continuing ``prompt_ids`` (at least one id).

    The LSTM reads the prompt once and then one token per step, carrying its state (the
    steps through ``LSTMStepper``: the same kernels without the autograd graph); the
    transformer rereads its context (the last ``max_len`` tokens) at every step.
    """
    if len(prompt_ids) == 0:
        raise ValueError("sample: the prompt must hold at least one token")
    was_training = model.training
    model.eval()
    context = [int(i) for i in prompt_ids]
    try:
        with tinylm.no_grad():
            if isinstance(model, LSTMLanguageModel):
                # The prompt in one forward, then one graph-free step per token.
                logits, (h, c) = model(np.array([context]))
                stepper, state, last = LSTMStepper(model), (h.data, c.data), logits.numpy()[0, -1]
            for _ in range(max_new_tokens):
                if not isinstance(model, LSTMLanguageModel):
                    last = model(np.array([context[-model.max_len:]])).numpy()[0, -1]
                probabilities = next_token_distribution(last, temperature, top_k)
                token = int(rng.choice(len(probabilities), p=probabilities))
                context.append(token)
                if isinstance(model, LSTMLanguageModel):
                    step_logits, state = stepper.step(np.array([token]), state)
                    last = backends.to_device(step_logits, "cpu")[0]
                yield token
    finally:
        model.train(was_training)
