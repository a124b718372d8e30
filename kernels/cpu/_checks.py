"""Argument checks shared by the Cython kernels' Python wrappers.

The compiled loops index without bounds checks, so everything they assume is checked
here first, with errors that name the kernel and the argument."""

from __future__ import annotations

import math
import numbers

import numpy as np


def float_array(op: str, name: str, array) -> np.ndarray:
    """``array`` as a float32 or float64 ndarray, else TypeError."""
    array = np.asarray(array)
    if array.dtype != np.float32 and array.dtype != np.float64:
        raise TypeError(f"{op}: {name} must be float32 or float64, got {array.dtype}")
    return array


def real_scalar(op: str, name: str, value, finite: bool = True) -> float:
    """A Python float from a real number (not a bool, not an array), finite unless told."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: {name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if finite and not math.isfinite(value):
        raise ValueError(f"{op}: {name} must be finite, got {value}")
    return value


def int_scalar(op: str, name: str, value, low: int | None = None, high: int | None = None) -> int:
    """A Python int from an integer (not a bool), within [low, high] when given."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{op}: {name} must be an integer, got {type(value).__name__}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"<= {high}" if low is None else f"in [{low}, {high}]"
        raise ValueError(f"{op}: {name} must be {bounds}, got {value}")
    return value


def flag(op: str, name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be True or False, got {type(value).__name__}")
    return bool(value)
