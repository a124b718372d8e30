"""The differentiable ops. Each is a ``Function`` subclass with ``forward`` and
``backward`` over raw arrays and the derivation of its backward in its docstring,
plus a lowercase function that checks arguments and applies it."""

from tinylm.ops.arithmetic import add, div, mul, neg, pow, sub
from tinylm.ops.distill_kl import distill_kl
from tinylm.ops.elementwise import abs, astype, clamp, exp, log, relu, sigmoid, sqrt, tanh
from tinylm.ops.embedding import embedding
from tinylm.ops.gelu import gelu
from tinylm.ops.matmul import matmul
from tinylm.ops.reductions import (
    amax,
    amin,
    argmax,
    argmin,
    max,
    mean,
    min,
    norm,
    std,
    sum,
    var,
)
from tinylm.ops.selection import eq, ge, gt, le, lt, masked_fill, ne, where
from tinylm.ops.shape import (
    clone,
    concat,
    flatten,
    getitem,
    permute,
    reshape,
    split,
    squeeze,
    stack,
    transpose,
    unsqueeze,
    view,
)
from tinylm.ops.softmax import log_softmax, softmax

__all__ = [
    "add", "sub", "mul", "div", "pow", "neg", "matmul",
    "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "gelu", "astype", "abs", "clamp",
    "sum", "mean", "max", "min", "amax", "amin", "argmax", "argmin", "var", "std", "norm",
    "reshape", "view", "flatten", "squeeze", "unsqueeze", "clone",
    "permute", "transpose", "getitem", "concat", "stack", "split",
    "eq", "ne", "lt", "le", "gt", "ge", "where", "masked_fill",
    "softmax", "log_softmax", "embedding", "distill_kl",
]
