"""The differentiable ops. Each is a ``Function`` subclass with ``forward`` and
``backward`` over raw arrays and the derivation of its backward in its docstring,
plus a lowercase function that checks arguments and applies it."""

from tinylm.ops.arithmetic import add, div, mul, neg, pow, sub
from tinylm.ops.elementwise import astype, exp, log, relu, sigmoid, sqrt, tanh
from tinylm.ops.embedding import embedding
from tinylm.ops.gelu import gelu
from tinylm.ops.matmul import matmul
from tinylm.ops.reductions import max, mean, sum
from tinylm.ops.selection import eq, ge, gt, le, lt, masked_fill, ne, where
from tinylm.ops.shape import concat, getitem, permute, reshape, split, stack, transpose
from tinylm.ops.softmax import log_softmax, softmax

__all__ = [
    "add", "sub", "mul", "div", "pow", "neg", "matmul",
    "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "gelu", "astype",
    "sum", "mean", "max",
    "reshape", "permute", "transpose", "getitem", "concat", "stack", "split",
    "eq", "ne", "lt", "le", "gt", "ge", "where", "masked_fill",
    "softmax", "log_softmax", "embedding",
]
