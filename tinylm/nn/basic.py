"""The simple layers: Linear, Embedding, Dropout, LayerNorm, and the containers."""

from __future__ import annotations

import math

import numpy as np

from tinylm import backends
from tinylm.autograd import Tensor
from tinylm.nn import functional as F
from tinylm.nn import init
from tinylm.nn.module import Module, Parameter


class Linear(Module):
    """y = x Wᵀ + b. weight (out_features, in_features), bias (out_features,), both
    U(-1/√in, 1/√in) as PyTorch's default."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype=None, generator=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
        self.weight = Parameter(init.uniform((out_features, in_features), bound, dtype, generator))
        self.bias = Parameter(init.uniform((out_features,), bound, dtype, generator)) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A lookup table: row i of ``weight`` (num_embeddings, embedding_dim) is the vector
    of id i. N(0, 1) initialisation, as PyTorch."""

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype=None, generator=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(init.normal((num_embeddings, embedding_dim), 1.0, dtype, generator))

    def forward(self, ids):
        return F.embedding(ids, self.weight)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


class Dropout(Module):
    """Zeroes elements with probability p in training mode (survivors scaled by 1/(1-p))."""

    def __init__(self, p: float = 0.5, generator=None):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p, self.generator = p, generator

    def forward(self, x):
        return F.dropout(x, self.p, self.training, self.generator)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LayerNorm(Module):
    """Normalise over the trailing ``normalized_shape`` axes, then scale and shift.
    weight starts at ones and bias at zeros, as PyTorch."""

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, dtype=None):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.normalized_shape, self.eps = shape, eps
        self.weight = Parameter(init.constant(shape, 1.0, dtype)) if elementwise_affine else None
        self.bias = Parameter(init.constant(shape, 0.0, dtype)) if elementwise_affine else None

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}"


class ModuleList(Module):
    """A list of modules, registered as ``0``, ``1``, ... (PyTorch's names)."""

    def __init__(self, modules=()):
        super().__init__()
        for module in modules:
            self.append(module)

    def append(self, module: Module) -> "ModuleList":
        setattr(self, str(len(self._modules)), module)
        return self

    def __getitem__(self, index: int) -> Module:
        return list(self._modules.values())[index]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class Sequential(ModuleList):
    """Modules applied one after another."""

    def __init__(self, *modules: Module):
        super().__init__(modules)

    def forward(self, x):
        for module in self:
            x = module(x)
        return x


class CrossEntropyLoss(Module):
    """``F.cross_entropy`` as a module, with PyTorch's arguments; the class weights are a
    buffer, ``weight`` in ``state_dict``, as PyTorch."""

    def __init__(self, weight=None, ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0):
        super().__init__()
        self.register_buffer("weight", weight)
        self.ignore_index, self.reduction, self.label_smoothing = ignore_index, reduction, label_smoothing

    def forward(self, logits, targets):
        return F.cross_entropy(logits, targets, self.weight, self.ignore_index, self.reduction, self.label_smoothing)


class NLLLoss(Module):
    """``F.nll_loss`` as a module: takes log-probabilities (say, from log_softmax); the
    class weights are a buffer, as in CrossEntropyLoss."""

    def __init__(self, weight=None, ignore_index: int = -100, reduction: str = "mean"):
        super().__init__()
        self.register_buffer("weight", weight)
        self.ignore_index, self.reduction = ignore_index, reduction

    def forward(self, log_probs, targets):
        return F.nll_loss(log_probs, targets, self.weight, self.ignore_index, self.reduction)


class MSELoss(Module):
    """``F.mse_loss`` as a module."""

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = reduction

    def forward(self, input, target):  # noqa: A002  (PyTorch's argument name)
        return F.mse_loss(input, target, self.reduction)


class SinusoidalPositionalEncoding(Module):
    """Adds the fixed positional code of "Attention Is All You Need" to (B, T, d_model):

        PE[pos, 2i] = sin(pos / 10000^(2i/d_model)),  PE[pos, 2i+1] = cos(pos / 10000^(2i/d_model))

    Each pair of columns is a sine/cosine of one frequency, so PE[pos + k] is a fixed
    rotation of PE[pos]: relative offsets are easy for attention to read. With an odd
    ``d_model`` the last column is a sine without its cosine. No parameters.
    """

    def __init__(self, d_model: int, max_len: int = 5000):
        super().__init__()
        self.d_model, self.max_len = d_model, max_len
        position = np.arange(max_len)[:, None]  # (max_len, 1)
        frequency = np.exp(-math.log(10000.0) * np.arange(0, d_model, 2) / d_model)  # (ceil(d/2),)
        table = np.zeros((max_len, d_model))
        table[:, 0::2] = np.sin(position * frequency)
        table[:, 1::2] = np.cos(position * frequency[: d_model // 2])
        self.table = table  # float64 NumPy; cast and moved to the input's dtype and device

    def forward(self, x):
        length = x.shape[-2]
        if length > self.max_len:
            raise ValueError(
                f"SinusoidalPositionalEncoding: sequence length {length} is longer than max_len={self.max_len}"
            )
        if x.shape[-1] != self.d_model:
            raise ValueError(f"SinusoidalPositionalEncoding: input {x.shape} does not end in d_model={self.d_model}")
        rows = backends.to_device(self.table[:length].astype(x.dtype), x.device)  # (T, d_model)
        return x + Tensor(rows)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, max_len={self.max_len}"
