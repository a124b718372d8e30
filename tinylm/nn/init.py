"""PyTorch's default initialisations, drawn from a seeded NumPy generator.

Each returns a new array; layers wrap it in a ``Parameter``.
"""

from __future__ import annotations

import math

import numpy as np

from tinylm import backends
from tinylm.random import default_generator


def _place(values: np.ndarray, dtype):
    return backends.default_array_module().asarray(values.astype(dtype or np.float32))


def uniform(shape, bound: float, dtype=None, generator=None):
    """U(-bound, bound): PyTorch's Linear (bound = 1/√fan_in, its kaiming_uniform with
    a = √5) and LSTM (bound = 1/√hidden_size) defaults."""
    rng = generator or default_generator()
    return _place(rng.uniform(-bound, bound, size=shape), dtype)


def normal(shape, std: float = 1.0, dtype=None, generator=None):
    """N(0, std²): PyTorch's Embedding default (std = 1)."""
    rng = generator or default_generator()
    return _place(std * rng.standard_normal(size=shape), dtype)


def xavier_uniform(shape, dtype=None, generator=None):
    """U(-a, a) with a = √(6 / (fan_in + fan_out)): MultiheadAttention's in_proj_weight."""
    fan_out, fan_in = shape
    return uniform(shape, math.sqrt(6.0 / (fan_in + fan_out)), dtype, generator)


def constant(shape, value: float, dtype=None):
    return _place(np.full(shape, value), dtype)
