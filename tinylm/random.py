"""Where tinylm's randomness comes from: one seeded NumPy generator.

Initialisation and dropout draw from ``default_generator()`` unless a layer is handed
its own ``generator``; ``tinylm.manual_seed(seed)`` restarts it, so a run repeats
exactly.
"""

from __future__ import annotations

import numpy as np

_generator = np.random.default_rng(0)


def manual_seed(seed: int) -> np.random.Generator:
    """Restart the default generator from ``seed`` (and return it)."""
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def default_generator() -> np.random.Generator:
    return _generator
