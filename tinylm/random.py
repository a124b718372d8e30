"""Where tinylm's randomness comes from: one seeded NumPy generator.

Initialisation and dropout draw from ``default_generator()`` unless a layer is handed
its own ``generator``; ``tinylm.manual_seed(seed)`` restarts it, so a run repeats
exactly.

Data-parallel runs add one thing: ``global_batch_rows``, which tells dropout that the
tensors it sees hold rows [first, first + local) of a global batch of ``total`` rows,
so each element draws the keep/drop decision of its place in the global batch.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import NamedTuple

import numpy as np

_generator = np.random.default_rng(0)


def manual_seed(seed: int) -> np.random.Generator:
    """Restart the default generator from ``seed`` (and return it)."""
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def default_generator() -> np.random.Generator:
    return _generator


class BatchRows(NamedTuple):
    """Rows [first, first + local) of a global batch of ``total`` rows."""

    first: int
    local: int
    total: int


_batch_rows: BatchRows | None = None


@contextmanager
def global_batch_rows(first: int, local: int, total: int):
    """Inside this context, this process's batch is rows [first, first + local) of a
    global batch of ``total`` rows, and dropout draws each element's mask as the whole
    batch would: element (…, r, …) of a local tensor gets global row first + r's
    decision. So N processes that each draw the same seed per dropout call (the same
    seeded generator) and keep their own rows compute exactly what one process computes
    on the whole batch, however the rows are split.

    Every dropout call inside checks that its tensor has ``local`` rows on its
    ``batch_axis`` (a ValueError otherwise), so a tensor whose batch axis was
    mislabelled cannot silently draw the wrong mask. Outside the context (and with
    ``first=0, local=total``) the masks are the ordinary ones. Contexts nest: the
    innermost one counts, and the outer one comes back on leaving it. The setting is
    process-wide (not per thread), as the default generator is.

        with global_batch_rows(first=rank * b, local=b, total=world_size * b):
            loss = model.loss(ids[rank * b:(rank + 1) * b], ...)
    """
    for name, value in (("first", first), ("local", local), ("total", total)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"global_batch_rows: {name} must be an integer, got {type(value).__name__}")
        if value < 0:
            raise ValueError(f"global_batch_rows: {name} must be >= 0, got {value}")
    if first + local > total:
        raise ValueError(f"global_batch_rows: rows [{first}, {first + local}) do not fit in a batch of {total} rows")
    global _batch_rows
    previous, _batch_rows = _batch_rows, BatchRows(int(first), int(local), int(total))
    try:
        yield _batch_rows
    finally:
        _batch_rows = previous


def batch_rows() -> BatchRows | None:
    """The rows set by the innermost ``global_batch_rows`` context, or None outside one."""
    return _batch_rows
