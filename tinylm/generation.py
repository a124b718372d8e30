"""Sampling text from a language model, one token at a time."""

from __future__ import annotations

from typing import Iterator

import numpy as np

import tinylm
from tinylm import backends


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

    Any language model's ``stepper()`` (``tinylm.models.language_model``) reads the prompt
    once, then takes one token per step: the LSTM's carries its state through graph-free
    kernels, the transformer's keeps each block's keys and values and computes one new
    position a step. The model is in eval mode (no dropout) while sampling and goes back
    to its mode afterwards.
    """
    if len(prompt_ids) == 0:
        raise ValueError("sample: the prompt must hold at least one token")
    was_training = model.training
    model.eval()
    try:
        with tinylm.no_grad():
            stepper = model.stepper()
            logits, state = stepper.start(np.array([[int(i) for i in prompt_ids]]))  # a batch of one: (1, V)
            token = None  # the token sampled last, which the next step reads
            for n in range(max_new_tokens):
                if n > 0:
                    logits, state = stepper.step(np.array([token]), state)
                probabilities = next_token_distribution(backends.to_device(logits, "cpu")[0], temperature, top_k)
                token = int(rng.choice(len(probabilities), p=probabilities))
                yield token
    finally:
        model.train(was_training)
