"""The simple layers: Linear, Embedding, Dropout, LayerNorm, the activations, the
losses, and the containers."""

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
    of id i. N(0, 1) initialisation, as PyTorch. With ``padding_idx`` that row starts at
    zeros and gets no gradient, so padding tokens map to a fixed vector."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx=None, dtype=None, generator=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = self._checked_padding_idx(padding_idx, num_embeddings)
        self.weight = Parameter(init.normal((num_embeddings, embedding_dim), 1.0, dtype, generator))
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0

    @staticmethod
    def _checked_padding_idx(padding_idx, num_embeddings: int):
        """PyTorch's rule: a negative index counts from the end."""
        if padding_idx is None:
            return None
        if not -num_embeddings <= padding_idx < num_embeddings:
            raise ValueError(f"Embedding: padding_idx {padding_idx} must be within num_embeddings={num_embeddings}")
        return padding_idx % num_embeddings

    @classmethod
    def from_pretrained(cls, embeddings, freeze: bool = True, padding_idx=None) -> "Embedding":
        """An Embedding whose weight is a copy of ``embeddings`` (V, D), in its dtype; it
        trains only with ``freeze=False``. The padding row is kept as given, as PyTorch."""
        array = embeddings.numpy() if isinstance(embeddings, Tensor) else np.asarray(embeddings)
        if array.ndim != 2:
            raise ValueError(f"Embedding.from_pretrained: embeddings must be 2-D (num_embeddings, embedding_dim), "
                             f"got shape {array.shape}")
        module = cls(*array.shape, padding_idx=padding_idx, dtype=array.dtype)
        module.weight = Parameter(array.copy(), requires_grad=not freeze)
        return module

    def forward(self, ids):
        return F.embedding(ids, self.weight, self.padding_idx)

    def extra_repr(self) -> str:
        padding = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"{self.num_embeddings}, {self.embedding_dim}{padding}"


class Dropout(Module):
    """Zeroes elements with probability p in training mode (survivors scaled by 1/(1-p)).
    ``batch_axis`` is the axis of x that holds the batch's rows: inside
    ``tinylm.random.global_batch_rows`` each row draws its global row's mask (see
    ``F.dropout``); outside it the axis plays no part."""

    def __init__(self, p: float = 0.5, generator=None, batch_axis: int = 0):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p, self.generator, self.batch_axis = p, generator, batch_axis

    def forward(self, x):
        return F.dropout(x, self.p, self.training, self.generator, batch_axis=self.batch_axis)

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


class ReLU(Module):
    """max(x, 0), elementwise."""

    def forward(self, x):
        return F.relu(x)


class GELU(Module):
    """GELU, exact (x Φ(x)) by default or ``approximate='tanh'``, as PyTorch."""

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class Tanh(Module):
    """tanh x, elementwise."""

    def forward(self, x):
        return x.tanh()


class Sigmoid(Module):
    """1 / (1 + e⁻ˣ), elementwise."""

    def forward(self, x):
        return x.sigmoid()


class Identity(Module):
    """Returns its input: a placeholder where a layer is optional. Takes (and ignores)
    any arguments, as PyTorch."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


class ModuleList(Module):
    """A list of modules, registered as ``0``, ``1``, ... (PyTorch's names)."""

    def __init__(self, modules=()):
        super().__init__()
        for module in modules:
            self.append(module)

    def append(self, module: Module) -> "ModuleList":
        setattr(self, str(len(self._modules)), module)
        return self

    def __getitem__(self, index):
        """One module, or a slice of them as a new ModuleList."""
        if isinstance(index, slice):
            return ModuleList(list(self._modules.values())[index])
        return list(self._modules.values())[index]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class Sequential(ModuleList):
    """Modules applied one after another; ``model[0]``, ``model[1:]``, ``len(model)``
    and state_dict names ``0.weight``, ``1.bias``, ... as PyTorch."""

    def __init__(self, *modules: Module):
        super().__init__(modules)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(*list(self._modules.values())[index])
        return super().__getitem__(index)

    def forward(self, x):
        for module in self:
            x = module(x)
        return x


class ModuleDict(Module):
    """Modules by name, registered under those names (``encoder.weight``), in insertion
    order: ``d["name"]``, ``"name" in d``, ``len``, ``keys``, ``values``, ``items``."""

    def __init__(self, modules=None):
        super().__init__()
        for name, module in dict(modules or {}).items():
            self[name] = module

    def __getitem__(self, name: str) -> Module:
        return self._modules[name]

    def __setitem__(self, name: str, module: Module) -> None:
        setattr(self, name, module)

    def __delitem__(self, name: str) -> None:
        delattr(self, name)

    def __contains__(self, name: str) -> bool:
        return name in self._modules

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()


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
