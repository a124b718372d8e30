"""Hypothesis strategies and array makers shared by the tests."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinylm

seeds = st.integers(0, 2**32 - 1)

# Shapes with 0 to 3 axes of length 0 to 4: size-1 and size-0 axes included.
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
nonempty_shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)
broadcast_pairs = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=0, max_side=4)


def make_array(shape, seed: int, noncontiguous: bool = False, dtype=np.float64, kind: str = "normal"):
    """A random array; ``noncontiguous`` makes it a strided view of a larger one.

    kind: "normal" (standard normal), "positive" (in [0.5, 2.5]), "away_from_zero"
    (|x| in [0.5, 2.5], random sign: for kinks and poles).
    """
    rng = np.random.default_rng(seed)
    shape = tuple(shape)
    strided = noncontiguous and len(shape) > 0
    full = shape[:-1] + (2 * shape[-1],) if strided else shape
    values = rng.standard_normal(full)
    if kind == "positive":
        values = 0.5 + 2 * rng.random(full)
    elif kind == "away_from_zero":
        values = (0.5 + 2 * rng.random(full)) * rng.choice([-1.0, 1.0], size=full)
    values = values.astype(dtype)
    return values[..., ::2] if strided else values  # every other element: a stride-2 view


def leaf(shape, seed, noncontiguous=False, kind="normal", dtype=np.float64):
    return tinylm.Tensor(make_array(shape, seed, noncontiguous, dtype, kind), requires_grad=True)


def run_with_threads(threads: int, fn, *args):
    """``fn(*args)`` with the Cython kernels on ``threads`` threads whatever the array size
    (the parallel threshold set to 0), then the old settings back."""
    from tinylm import kernels

    before, threshold = kernels.get_num_threads(), kernels.get_parallel_threshold()
    kernels.set_num_threads(threads)
    kernels.set_parallel_threshold(0)
    try:
        return fn(*args)
    finally:
        kernels.set_num_threads(before)
        kernels.set_parallel_threshold(threshold)


def float_rows(draw, rows, cols, dtype, scale=1.0, noncontiguous=False, seed=0):
    """A (rows, cols) float array of standard normals times ``scale``, optionally a strided view."""
    rng = np.random.default_rng(seed)
    if noncontiguous:
        return (scale * rng.standard_normal((rows, 2 * cols))).astype(dtype)[:, ::2]
    return (scale * rng.standard_normal((rows, cols))).astype(dtype)
