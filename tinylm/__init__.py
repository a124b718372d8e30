"""tinylm: a from-scratch deep-learning engine for small language models, written to be read.

The pieces, top to bottom:

- ``tinylm.autograd``: ``Tensor``, ``Function``, the backward pass, ``no_grad``;
- ``tinylm.ops``: the differentiable ops, each with the derivation of its backward;
- ``tinylm.gradcheck``: check any op's backward against finite differences;
- ``tinylm.backends``: NumPy / Cython / CuPy / CUDA and the one kernel registry;
- ``tinylm.reference``: the plain-NumPy kernels the fast ones are checked against;
- ``tinylm.kernels``: the compiled Cython kernels (built by ``pip install``).
"""

import pkgutil

# Run from a checkout's root, ``python -m tinylm...`` imports this source folder, not the
# installed copy, and ``tinylm.kernels`` (the compiled kernels, which ``pip install .``
# puts only into the installed package) would be missing. Every ``tinylm`` folder on
# sys.path joins this package's search path, so the installed kernels are found too.
__path__ = pkgutil.extend_path(__path__, __name__)

from tinylm import nn, optim  # noqa: E402  (after the core they build on)
from tinylm.autograd import (
    Function,
    Tensor,
    enable_grad,
    inference_mode,
    is_grad_enabled,
    no_grad,
    set_grad_enabled,
    tensor,
)
from tinylm.backends import get_backend, set_backend, use_backend
from tinylm.gradcheck import GradcheckError, gradcheck
from tinylm.ops import (
    abs,
    amax,
    amin,
    argmax,
    argmin,
    clamp,
    clone,
    concat,
    embedding,
    exp,
    flatten,
    gelu,
    log,
    log_softmax,
    masked_fill,
    matmul,
    max,
    mean,
    min,
    norm,
    permute,
    relu,
    reshape,
    sigmoid,
    softmax,
    split,
    sqrt,
    squeeze,
    stack,
    std,
    sum,
    tanh,
    transpose,
    unsqueeze,
    var,
    where,
)
from tinylm.ops.creation import arange, full, full_like, ones, ones_like, rand, randn, zeros, zeros_like
from tinylm.random import manual_seed

cat = concat  # PyTorch's name: tinylm.cat(tensors, dim=0)

__version__ = "0.1.0"

__all__ = [
    "Tensor", "Function", "tensor", "no_grad", "enable_grad", "set_grad_enabled", "inference_mode",
    "is_grad_enabled",
    "gradcheck", "GradcheckError",
    "get_backend", "set_backend", "use_backend", "manual_seed", "nn", "optim",
    "concat", "embedding", "exp", "gelu", "log", "log_softmax", "masked_fill", "matmul",
    "permute", "relu", "reshape", "sigmoid", "softmax", "split", "sqrt", "stack", "tanh",
    "transpose", "where",
    "cat", "abs", "amax", "amin", "argmax", "argmin", "clamp", "clone", "flatten", "max", "mean", "min",
    "norm", "squeeze", "std", "sum", "unsqueeze", "var",
    "zeros", "ones", "full", "zeros_like", "ones_like", "full_like", "randn", "rand", "arange",
]
