"""Making new leaf tensors: zeros, ones, full, their ``_like`` twins, randn, rand, arange.

PyTorch's spellings and defaults: sizes as ``zeros(2, 3)`` or ``zeros((2, 3))``, float32
unless ``dtype`` says otherwise. Random ones draw from tinylm's default generator
(``tinylm.random``), so ``tinylm.manual_seed`` repeats them, or from ``generator=``.
Arrays live where the current backend keeps them.
"""

from __future__ import annotations

import numpy as np

from tinylm import backends
from tinylm.autograd import Tensor
from tinylm.ops.shape import _shape_args


def _make(array, dtype, requires_grad) -> Tensor:
    xp = backends.default_array_module()
    return Tensor(xp.asarray(array, dtype=np.float32 if dtype is None else dtype), requires_grad=requires_grad)


def zeros(*size, dtype=None, requires_grad: bool = False) -> Tensor:
    return full(_shape_args("zeros", size), 0, dtype=dtype, requires_grad=requires_grad)


def ones(*size, dtype=None, requires_grad: bool = False) -> Tensor:
    return full(_shape_args("ones", size), 1, dtype=dtype, requires_grad=requires_grad)


def full(size, fill_value, dtype=None, requires_grad: bool = False) -> Tensor:
    """A tensor of shape ``size`` holding ``fill_value`` everywhere (float32 by default)."""
    xp = backends.default_array_module()
    array = xp.full(_shape_args("full", (size,)), fill_value, dtype=np.float32 if dtype is None else dtype)
    return Tensor(array, requires_grad=requires_grad)


def full_like(x: Tensor, fill_value, dtype=None, requires_grad: bool = False) -> Tensor:
    """Shape, dtype (unless given) and device of ``x``, filled with ``fill_value``."""
    xp = backends.get_array_module(x.data)
    return Tensor(xp.full(x.shape, fill_value, dtype=x.dtype if dtype is None else dtype), requires_grad=requires_grad)


def zeros_like(x: Tensor, dtype=None, requires_grad: bool = False) -> Tensor:
    return full_like(x, 0, dtype=dtype, requires_grad=requires_grad)


def ones_like(x: Tensor, dtype=None, requires_grad: bool = False) -> Tensor:
    return full_like(x, 1, dtype=dtype, requires_grad=requires_grad)


def _generator(generator):
    from tinylm.random import default_generator

    return default_generator() if generator is None else generator


def randn(*size, generator=None, dtype=None, requires_grad: bool = False) -> Tensor:
    """Standard normal draws (mean 0, variance 1)."""
    draws = _generator(generator).standard_normal(_shape_args("randn", size))
    return _make(draws, dtype, requires_grad)


def rand(*size, generator=None, dtype=None, requires_grad: bool = False) -> Tensor:
    """Uniform draws from [0, 1)."""
    draws = _generator(generator).random(_shape_args("rand", size))
    return _make(draws, dtype, requires_grad)


def arange(start, end=None, step=1, dtype=None, requires_grad: bool = False) -> Tensor:
    """``start, start + step, ...`` below ``end`` (``arange(n)`` is 0..n-1). As in PyTorch,
    all-integer arguments give int64, any float gives float32."""
    if end is None:
        start, end = 0, start
    if dtype is None:
        integral = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
        dtype = np.int64 if integral else np.float32
    xp = backends.default_array_module()
    return Tensor(xp.arange(start, end, step).astype(dtype), requires_grad=requires_grad)
