"""The autograd core: ``Tensor``, ``Function``, the backward pass and ``no_grad``.

A ``Tensor`` wraps an array (NumPy or CuPy). Calling a ``Function`` on tensors runs its
``forward`` on the raw arrays and, when a gradient is wanted, records the call: the
output remembers its ``creator``, the function remembers its ``inputs``. That record
is the computation graph.

``Tensor.backward`` walks the graph from the output back to the leaves. Each function
turns the gradient of the loss with respect to its outputs into the gradient with
respect to its inputs (the chain rule, one node at a time). A tensor used by several
functions receives one gradient from each, and they add up (the multivariate chain
rule), so a function may only run its backward once *all* its outputs' gradients are
in. Ordering functions by *generation* guarantees that: a function's generation is the
largest generation of its inputs, an output's is one more, so every consumer of a
tensor has a higher generation than the tensor's creator. Popping the highest
generation first from a heap visits consumers before producers, without recursion, so
a chain of any length works (Chainer's ``_backprop.py`` and DeZero do the same).

In-place operations (``x += y``, ``x.zero_()``) write into ``x.data``. The rule, and
why: a graph may have saved that very array for its backward, so writing into it
would silently change gradients. In-place is therefore for updates *outside* the
graph: under ``no_grad`` (an optimizer step) or on tensors where nothing requires
grad. Recording an in-place op *into* a graph is refused with an error naming the op
(write ``x = x + y`` instead). Each tensor counts its in-place writes in
``_version``, shared with every tensor that shares its array (its ``detach()``-ed twins,
and on the CPU the views reshape, transpose and slicing return), and every recorded
function notes its tensors' versions, so a backward that would read an array
overwritten since is refused too, as PyTorch does.

Post-accumulate-grad hooks (torch's ``Tensor.register_post_accumulate_grad_hook``): a
leaf that requires grad may carry hooks ``hook(tensor)`` that run once per backward,
during the pass, as soon as that leaf's gradient for this backward is complete. A leaf
may receive several contributions (a weight used twice), so before the walk the pass
counts how many edges of the graph lead to each hooked leaf, and the hooks fire when
the last of them has been added into ``.grad``: the hook sees the final ``.grad``. A
leaf whose last contribution never comes (a consumer returned None for it) has its hooks
fired at the end of the pass, if it got any gradient at all. Data parallel training
uses this to start averaging a gradient while backward is still running on the rest
of the graph (``tinylm.nn.parallel.DistributedDataParallel``).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import weakref
from typing import Iterator

import numpy as np

from tinylm import backends

_grad_enabled = True


@contextlib.contextmanager
def _grad_mode(enabled: bool) -> Iterator[None]:
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, bool(enabled)
    try:
        yield
    finally:
        _grad_enabled = previous


def no_grad():
    """Inside ``with tinylm.no_grad():`` no graph is recorded (evaluation, sampling, updates)."""
    return _grad_mode(False)


def enable_grad():
    """Inside ``with tinylm.enable_grad():`` graphs are recorded again, even within ``no_grad``."""
    return _grad_mode(True)


def inference_mode(mode: bool = True):
    """PyTorch's ``inference_mode``. tinylm has no separate inference tensors, so this is
    ``no_grad`` (or, with ``mode=False``, ``enable_grad``)."""
    return _grad_mode(not mode)


class set_grad_enabled:  # noqa: N801  (PyTorch's name; lowercase because it reads as a function)
    """``tinylm.set_grad_enabled(False)`` switches recording off from now on; as
    ``with tinylm.set_grad_enabled(flag):`` it switches it only inside the block."""

    def __init__(self, mode: bool):
        global _grad_enabled
        self.previous, _grad_enabled = _grad_enabled, bool(mode)

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info) -> None:
        global _grad_enabled
        _grad_enabled = self.previous


def is_grad_enabled() -> bool:
    return _grad_enabled


def _is_float(dtype) -> bool:
    return np.issubdtype(dtype, np.floating)


# ----------------------------------------------------------------------------- Tensor


class Tensor:
    """An array plus what autograd needs: ``grad``, ``requires_grad`` and its ``creator``."""

    __array_ufunc__ = None  # so `ndarray + Tensor` calls Tensor.__radd__ instead of NumPy

    def __init__(self, data, requires_grad: bool = False):
        if isinstance(data, Tensor):
            raise TypeError("Tensor: data is already a Tensor; use .detach() or tinylm.tensor()")
        if not hasattr(data, "dtype") or not hasattr(data, "shape"):
            raise TypeError(f"Tensor: data must be a NumPy or CuPy array, got {type(data).__name__}")
        if requires_grad and not _is_float(data.dtype):
            raise TypeError(f"Tensor: only floating-point tensors can require grad, got {data.dtype}")
        self.data = data
        self.grad: Tensor | None = None
        self.requires_grad = requires_grad
        self.creator: Function | None = None
        self.generation = 0
        self.retains_grad = False  # set by retain_grad(): keep a non-leaf's gradient
        self._version_box = [0]  # in-place writes so far (a list: detach() shares it)
        self._post_accumulate_hooks: dict | None = None  # see register_post_accumulate_grad_hook

    _version = property(lambda self: self._version_box[0])

    # ---- array facts
    shape = property(lambda self: tuple(self.data.shape))
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    is_leaf = property(lambda self: self.creator is None)

    def size(self, dim: int | None = None):
        """The shape (PyTorch's spelling), or with ``dim`` the length of that axis.
        The element count, NumPy's ``.size``, is ``numel()``."""
        if dim is None:
            return self.shape
        return self.shape[_ops.axes.normalize_axis("size", dim, self.ndim)]

    def numel(self) -> int:
        """The number of elements."""
        return int(self.data.size)

    def dim(self) -> int:
        """The number of axes (``ndim``)."""
        return self.data.ndim
    device = property(lambda self: backends.device_of(self.data))

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len: a 0-d tensor has no length")
        return len(self.data)

    def __bool__(self) -> bool:
        if self.numel() != 1:
            raise ValueError(f"bool: the truth value of a tensor with {self.numel()} elements is ambiguous")
        return bool(self.item())

    def __repr__(self) -> str:
        body = np.array2string(self.numpy(), prefix="tensor(", separator=", ")
        extras = [f"dtype={self.dtype}"]
        if self.device != "cpu":
            extras.append(f"device='{self.device}'")
        if self.creator is not None:
            extras.append(f"grad_fn={type(self.creator).__name__}")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return f"tensor({body}, {', '.join(extras)})"

    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (copied from the GPU if needed)."""
        return self.data.get() if backends.is_gpu_array(self.data) else self.data

    def item(self):
        if self.numel() != 1:
            raise ValueError(f"item: only a tensor with one element has an item, got shape {self.shape}")
        return self.data.reshape(()).item()

    def detach(self) -> "Tensor":
        """The same data, cut from the graph (no creator, no grad). It shares the array,
        so an in-place write to either shows in both."""
        twin = Tensor(self.data)
        twin._version_box = self._version_box
        return twin

    def zero_grad(self) -> None:
        self.grad = None

    def retain_grad(self) -> None:
        """Keep this tensor's gradient in ``.grad`` after backward even though it is not
        a leaf (as PyTorch's ``retain_grad``): to look inside the graph, not to train."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad: this tensor does not require grad, so it will get no gradient")
        self.retains_grad = True

    def register_post_accumulate_grad_hook(self, hook) -> "RemovableHandle":
        """Call ``hook(self)`` once per backward, during the pass, right after this leaf's
        gradient for that backward is complete (every contribution added into ``.grad``).

        Only a leaf that requires grad has a ``.grad`` to accumulate into. Hooks run in
        the order they were registered; the returned handle's ``remove()`` takes the
        hook off again. (torch's name and rule; see the module docstring.)
        """
        if not self.requires_grad:
            raise RuntimeError("register_post_accumulate_grad_hook: cannot register a hook on a tensor "
                               "that does not require grad")
        if not self.is_leaf:
            raise RuntimeError("register_post_accumulate_grad_hook: post-accumulate-grad hooks can only be "
                               f"registered on leaf tensors, and this one was made by {type(self.creator).__name__}")
        if not callable(hook):
            raise TypeError(f"register_post_accumulate_grad_hook: hook must be callable, got {type(hook).__name__}")
        if self._post_accumulate_hooks is None:
            self._post_accumulate_hooks = {}
        key = next(_hook_keys)
        self._post_accumulate_hooks[key] = hook
        _live_hooks[0] += 1
        return RemovableHandle(self._post_accumulate_hooks, key)

    def to(self, device: str) -> "Tensor":
        """A copy on ``"cpu"`` or ``"cuda"``; the copy is a new leaf."""
        return Tensor(backends.to_device(self.data, device), requires_grad=self.requires_grad)

    def astype(self, dtype) -> "Tensor":
        return _ops.astype(self, dtype)

    def float(self) -> "Tensor":
        return _ops.astype(self, np.float32)

    def double(self) -> "Tensor":
        return _ops.astype(self, np.float64)

    def long(self) -> "Tensor":
        """As int64 (indices, counts); the result carries no gradient."""
        return _ops.astype(self, np.int64)

    def tolist(self):
        """The values as (nested) Python numbers; a 0-d tensor gives one number."""
        return self.numpy().tolist()

    # ---- the backward pass
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

        ``grad`` is the gradient of some scalar with respect to ``self``; it may be left
        out only when ``self`` holds a single element (it is then 1). The graph's saved
        arrays are freed afterwards unless ``retain_graph=True``.
        """
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad "
                               "(no input required grad, or no_grad was on)")
        if grad is None:
            if self.numel() != 1:
                raise ValueError(
                    f"backward: output of shape {self.shape} is not a scalar; pass grad= with that shape"
                )
            grad = backends.get_array_module(self.data).ones_like(self.data)
        grad = grad.data if isinstance(grad, Tensor) else grad
        _check_gradient("backward", self, grad, "grad")
        _run_backward(self, grad, retain_graph)

    # ---- in-place updates (see the module docstring for the rule)
    def _write_in_place(self, op: str, new) -> "Tensor":
        """Write ``new`` (a Tensor computed under no_grad) into ``self.data``."""
        if new.shape != self.shape:
            raise ValueError(f"{op}: the result has shape {new.shape}, which does not fit in-place "
                             f"into a tensor of shape {self.shape}")
        if new.dtype != self.dtype:
            raise TypeError(f"{op}: the result is {new.dtype} but the tensor is {self.dtype}; "
                            "in-place cannot change a tensor's dtype")
        self.data[...] = new.data
        self._version_box[0] += 1
        return self

    def _check_in_place(self, op: str, *others) -> None:
        if not _grad_enabled:
            return
        if self.requires_grad and self.is_leaf:
            raise RuntimeError(f"{op}: a leaf Variable that requires grad is being used in an in-place "
                               "operation. (Update parameters inside `with tinylm.no_grad():`.)")
        if self.requires_grad or any(isinstance(o, Tensor) and o.requires_grad for o in others):
            raise RuntimeError(f"{op}: tinylm does not record in-place operations in a graph; "
                               f"write it out of place (x = x {op[2:-1]} y) or do it under tinylm.no_grad()")

    def _in_place(self, op: str, function, other) -> "Tensor":
        self._check_in_place(op, other)
        with no_grad():
            return self._write_in_place(op, function(self, other))

    def __iadd__(self, other): return self._in_place("+=", _ops.add, other)
    def __isub__(self, other): return self._in_place("-=", _ops.sub, other)
    def __imul__(self, other): return self._in_place("*=", _ops.mul, other)
    def __itruediv__(self, other): return self._in_place("/=", _ops.div, other)

    def zero_(self) -> "Tensor":
        """Fill with zeros in place (``p.grad.zero_()``); same rule as ``+=``."""
        self._check_in_place("zero_")
        self.data[...] = 0
        self._version_box[0] += 1
        return self

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        """Switch gradient tracking of a leaf on or off, in place; returns the tensor."""
        if not self.is_leaf and not requires_grad:
            raise RuntimeError("requires_grad_: a non-leaf tensor's requires_grad comes from its graph; "
                               "use .detach() to get one that does not require grad")
        if requires_grad and not _is_float(self.dtype):
            raise TypeError(f"requires_grad_: only floating-point tensors can require grad, got {self.dtype}")
        self.requires_grad = bool(requires_grad)
        return self

    # ---- operators (the ops live in tinylm.ops; these are the familiar spellings)
    def __add__(self, other): return _ops.add(self, other)
    def __radd__(self, other): return _ops.add(other, self)
    def __sub__(self, other): return _ops.sub(self, other)
    def __rsub__(self, other): return _ops.sub(other, self)
    def __mul__(self, other): return _ops.mul(self, other)
    def __rmul__(self, other): return _ops.mul(other, self)
    def __truediv__(self, other): return _ops.div(self, other)
    def __rtruediv__(self, other): return _ops.div(other, self)
    def __pow__(self, other): return _ops.pow(self, other)
    def __rpow__(self, other): return _ops.pow(other, self)
    def __neg__(self): return _ops.neg(self)
    def __matmul__(self, other): return _ops.matmul(self, other)
    def __rmatmul__(self, other): return _ops.matmul(other, self)
    def __getitem__(self, index): return _ops.getitem(self, index)
    def __eq__(self, other): return _ops.eq(self, other)  # type: ignore[override]
    def __ne__(self, other): return _ops.ne(self, other)  # type: ignore[override]
    def __lt__(self, other): return _ops.lt(self, other)
    def __le__(self, other): return _ops.le(self, other)
    def __gt__(self, other): return _ops.gt(self, other)
    def __ge__(self, other): return _ops.ge(self, other)
    __hash__ = object.__hash__  # tensors are graph nodes: hashed by identity

    # ---- shape
    def reshape(self, *shape): return _ops.reshape(self, *shape)
    def view(self, *shape): return _ops.view(self, *shape)
    def flatten(self, start_dim=0, end_dim=-1): return _ops.flatten(self, start_dim, end_dim)
    def unsqueeze(self, dim): return _ops.unsqueeze(self, dim)
    def squeeze(self, dim=None): return _ops.squeeze(self, dim)
    def transpose(self, dim0, dim1): return _ops.transpose(self, dim0, dim1)
    def permute(self, *dims): return _ops.permute(self, *dims)
    def clone(self): return _ops.clone(self)
    def split(self, size_or_sections, dim=0, **alias): return _ops.split(self, size_or_sections, dim, **alias)

    # ---- reductions: dim/keepdim as PyTorch, axis/keepdims accepted as NumPy's aliases
    def sum(self, dim=None, keepdim=False, **aliases): return _ops.sum(self, dim, keepdim, **aliases)
    def mean(self, dim=None, keepdim=False, **aliases): return _ops.mean(self, dim, keepdim, **aliases)
    def max(self, dim=None, keepdim=False, **aliases): return _ops.max(self, dim, keepdim, **aliases)
    def min(self, dim=None, keepdim=False, **aliases): return _ops.min(self, dim, keepdim, **aliases)
    def amax(self, dim=None, keepdim=False, **aliases): return _ops.amax(self, dim, keepdim, **aliases)
    def amin(self, dim=None, keepdim=False, **aliases): return _ops.amin(self, dim, keepdim, **aliases)
    def argmax(self, dim=None, keepdim=False, **aliases): return _ops.argmax(self, dim, keepdim, **aliases)
    def argmin(self, dim=None, keepdim=False, **aliases): return _ops.argmin(self, dim, keepdim, **aliases)
    def var(self, dim=None, unbiased=None, keepdim=False, **kw): return _ops.var(self, dim, unbiased, keepdim, **kw)
    def std(self, dim=None, unbiased=None, keepdim=False, **kw): return _ops.std(self, dim, unbiased, keepdim, **kw)
    def norm(self, p=2, dim=None, keepdim=False, **aliases): return _ops.norm(self, p, dim, keepdim, **aliases)

    # ---- elementwise
    def exp(self): return _ops.exp(self)
    def log(self): return _ops.log(self)
    def sqrt(self): return _ops.sqrt(self)
    def abs(self): return _ops.abs(self)
    def pow(self, exponent): return _ops.pow(self, exponent)
    def clamp(self, min=None, max=None): return _ops.clamp(self, min, max)  # noqa: A002
    def tanh(self): return _ops.tanh(self)
    def sigmoid(self): return _ops.sigmoid(self)
    def relu(self): return _ops.relu(self)
    def gelu(self): return _ops.gelu(self)
    def softmax(self, dim=-1, **aliases): return _ops.softmax(self, dim, **aliases)
    def log_softmax(self, dim=-1, **aliases): return _ops.log_softmax(self, dim, **aliases)
    def masked_fill(self, mask, value): return _ops.masked_fill(self, mask, value)

    @property
    def T(self) -> "Tensor":
        return _ops.permute(self, *reversed(range(self.ndim)))

    @property
    def mT(self) -> "Tensor":
        """Transpose of the last two axes (a batch of matrices)."""
        return _ops.transpose(self, -2, -1)


_hook_keys = itertools.count()  # hooks are keyed by registration number, so they run in that order
_live_hooks = [0]  # hooks registered and not removed: while 0, backward skips counting edges


class RemovableHandle:
    """What ``register_post_accumulate_grad_hook`` returns: ``remove()`` takes the hook off."""

    def __init__(self, hooks: dict, key: int):
        self._hooks = hooks
        self.id = key

    def remove(self) -> None:
        """Take the hook off; removing it twice is harmless."""
        if self._hooks.pop(self.id, None) is not None:
            _live_hooks[0] -= 1

    def __enter__(self) -> "RemovableHandle":
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove()


def tensor(data, requires_grad: bool = False, dtype=None) -> Tensor:
    """Make a leaf tensor from a Python number, nested list or array.

    Floats become float32 and integers int64 unless ``dtype`` says otherwise; an array
    keeps its dtype. The tensor lives where the current backend keeps its arrays.
    """
    if isinstance(data, Tensor):
        data = data.data
    xp = backends.default_array_module()
    if dtype is None and not hasattr(data, "dtype"):
        probe = np.asarray(data)
        dtype = np.float32 if _is_float(probe.dtype) else probe.dtype
    array = xp.asarray(data, dtype=dtype)
    return Tensor(array, requires_grad=requires_grad)


# --------------------------------------------------------------------------- Function


class Function:
    """One differentiable operation.

    Subclasses write ``forward(*arrays) -> array or tuple of arrays`` and
    ``backward(*grad_outputs) -> array or tuple of arrays`` (one per input, ``None`` where
    an input needs no gradient) on raw arrays; ``__call__`` deals with tensors and the
    graph. ``backward`` receives one gradient per output, each of that output's shape and
    dtype, and must return, for each input, a gradient of that input's shape and dtype.
    ``self.needs_input_grad[i]`` tells forward and backward which gradients are wanted
    (all False when nothing will call backward), and arrays kept for backward go through
    ``save_for_backward`` so the graph can free them.

    An output that did not reach the loss (never used, or used only by ops that sent no
    gradient back) has no gradient: by default its entry in ``grad_outputs`` is ``None``,
    not an array of zeros, so an op with a large unused output allocates nothing for
    it. At least one entry is always an array. Two ways to handle this:

    - test for it in ``backward``: ``gy = xp.zeros(shape, dtype) if gy is None else gy``,
      with the output's shape and dtype from ``self.output_specs[i]`` (``(shape, dtype)``
      for output ``i``, recorded by ``__call__``), or skip that output's term (tinylm's
      own ops, e.g. ``Split`` and ``LSTMLayer``);
    - or set the class attribute ``materialize_grads = True``: the engine then passes
      zeros of the output's shape and dtype instead of ``None`` (torch's
      ``ctx.set_materialize_grads``, whose default is the other way round).

    When some ``grad_outputs`` were ``None`` and ``backward`` raises a ``TypeError``,
    ``AttributeError`` or ``ValueError`` whose message names ``NoneType`` (``None * x``,
    ``None.reshape``, ``None.T``), the engine re-raises it as an error of the same class
    that names the op and the unused outputs and gives these two ways out; the original
    error is chained. Any other error raised while a gradient was ``None`` (``np.einsum``
    on ``None`` raises a ``ValueError`` about subscripts) is re-raised unchanged, with a
    note that names the ``None`` gradients: the engine cannot tell whether the ``None``
    caused it. A ``backward`` whose signature does not take one gradient per output gets
    a ``TypeError`` that says so.
    """

    materialize_grads: bool = False  # True: the gradient of an unused output arrives as zeros, not None
    inputs: tuple[Tensor, ...] | None
    saved: tuple | None = None

    def __call__(self, *inputs: Tensor):
        _check_same_device(type(self).__name__.lower(), inputs)
        record = _grad_enabled and any(x.requires_grad for x in inputs)
        # Known during forward too, so an op can skip keeping what no backward will read.
        self.needs_input_grad = tuple(record and x.requires_grad for x in inputs)
        outputs = self.forward(*(x.data for x in inputs))
        single = not isinstance(outputs, tuple)
        outputs = (outputs,) if single else outputs
        # NumPy reductions return scalars (np.float64), not 0-d arrays; keep data an array.
        outputs = tuple(np.asarray(y) if isinstance(y, np.generic) else y for y in outputs)
        results = tuple(Tensor(y, requires_grad=record and _is_float(y.dtype)) for y in outputs)
        for y, result in zip(outputs, results):
            _share_version_with_viewed_input(y, result, inputs)
        if record:
            self.inputs = inputs
            self.versions = tuple(x._version for x in inputs)  # checked before backward
            self.generation = max(x.generation for x in inputs)
            # Outputs are held weakly: the graph points from outputs to inputs only,
            # so dropping the last output frees the graph behind it.
            self.outputs = tuple(weakref.ref(y) for y in results)
            self.output_versions = tuple(y._version for y in results)
            self.output_specs = tuple((tuple(y.shape), y.dtype) for y in outputs)  # for materialize_grads
            for y in results:
                y.creator = self
                y.generation = self.generation + 1
        else:
            self.saved = None  # nothing will call backward: keep no arrays alive
        return results[0] if single else results

    def save_for_backward(self, *arrays) -> None:
        self.saved = arrays

    def forward(self, *arrays):
        raise NotImplementedError(f"{type(self).__name__} must define forward")

    def backward(self, *grad_outputs):
        raise NotImplementedError(f"{type(self).__name__} must define backward")


def _check_same_device(op: str, inputs) -> None:
    devices = {x.device for x in inputs}
    if len(devices) > 1:
        described = ", ".join(f"{x.device} {x.shape}" for x in inputs)
        raise TypeError(f"{op}: tensors on different devices ({described}); move them with .to(device)")


def _check_gradient(op: str, x: Tensor, gx, what: str) -> None:
    """A gradient must have its data's shape and dtype; anything else is a bug in ``op``."""
    if tuple(gx.shape) != x.shape or gx.dtype != x.dtype:
        raise ValueError(
            f"{op}: {what} has shape {tuple(gx.shape)} and dtype {gx.dtype}, "
            f"but the tensor has shape {x.shape} and dtype {x.dtype}"
        )


def _run_backward(root: Tensor, root_grad, retain_graph: bool) -> None:
    """Propagate ``root_grad`` through the graph behind ``root`` (see the module docstring)."""
    if root.creator is None:  # backward on a leaf: its gradient is the given one
        _accumulate(root, root_grad)
        _fire_post_accumulate_hooks(root)
        return
    # Hooked leaves: how many gradients each still awaits in this pass (see the docstring).
    awaited = _count_edges_to_hooked_leaves(root) if _live_hooks[0] else {}
    hooked_and_reached = {}  # hooked leaves that got a gradient, in order of their first one
    # Gradients of non-leaf tensors, held only during the pass. Keyed by the tensor
    # itself (tensors hash by identity), which keeps it alive until its creator runs
    # even after the consumer that held it has been freed.
    grads = {root: root_grad}
    tie_breaker = itertools.count()  # functions of equal generation never get compared
    heap = [(-root.creator.generation, next(tie_breaker), root.creator)]
    queued = {id(root.creator)}
    while heap:
        _, _, function = heapq.heappop(heap)
        name = type(function).__name__
        if function.inputs is None:
            raise RuntimeError(
                f"backward: the graph through {name} was already freed by an earlier backward; "
                "pass retain_graph=True to the first backward to go through it twice"
            )
        _check_versions(function)
        grad_outputs = []
        for output_ref in function.outputs:
            output = output_ref()
            gy = grads.pop(output, None) if output is not None else None
            if gy is not None and output.retains_grad:  # complete now: every consumer has run
                _accumulate(output, gy)
            grad_outputs.append(gy)
        grad_inputs = _call_backward(function, grad_outputs)
        if not isinstance(grad_inputs, tuple):
            grad_inputs = (grad_inputs,)
        if len(grad_inputs) != len(function.inputs):
            raise RuntimeError(f"{name}.backward returned {len(grad_inputs)} gradients "
                               f"for {len(function.inputs)} inputs")
        for x, gx in zip(function.inputs, grad_inputs):
            if gx is None or not x.requires_grad:
                continue
            _check_gradient(f"{name}.backward", x, gx, "the gradient it returned")
            if x.creator is None:
                _accumulate(x, gx)
                if x in awaited:
                    hooked_and_reached[x] = True
                    awaited[x] -= 1
                    if awaited[x] == 0:  # the last contribution: .grad is complete
                        _fire_post_accumulate_hooks(x)
            else:
                previous = grads.get(x)
                grads[x] = gx if previous is None else previous + gx
                if id(x.creator) not in queued:
                    queued.add(id(x.creator))
                    heapq.heappush(heap, (-x.creator.generation, next(tie_breaker), x.creator))
        if not retain_graph:
            function.inputs = None
            function.saved = None
    for leaf in hooked_and_reached:  # a consumer returned None for them: they are complete now
        if awaited[leaf] > 0:
            _fire_post_accumulate_hooks(leaf)


def _call_backward(function: Function, grad_outputs: list):
    """``function.backward(*grad_outputs)``, with the rule for unused outputs applied
    (``None``, or zeros under ``materialize_grads``; see ``Function``'s docstring) and its
    errors explained where the engine can tell what went wrong."""
    unused = [i for i, gy in enumerate(grad_outputs) if gy is None]
    if unused and function.materialize_grads:
        xp = backends.get_array_module(next(gy for gy in grad_outputs if gy is not None))
        grad_outputs = [xp.zeros(shape, dtype=dtype) if gy is None else gy
                        for gy, (shape, dtype) in zip(grad_outputs, function.output_specs)]
        unused = []
    try:
        return function.backward(*grad_outputs)
    except Exception as error:
        name = type(function).__name__
        if isinstance(error, TypeError) and error.__traceback__.tb_next is None:
            # No frame of backward on the traceback: the call itself failed, so backward's
            # signature does not take the gradients it was handed (one per output).
            raise TypeError(
                f"{name}.backward must take one gradient per output of forward ({len(grad_outputs)}): {error}"
            ) from error
        if not unused:
            raise
        which = ", ".join(f"{i} (shape {function.output_specs[i][0]})" for i in unused)
        outputs, gradients, was = ("outputs", "gradients", "were") if len(unused) > 1 else ("output", "gradient", "was")
        what = (f"{outputs} {which} of {len(grad_outputs)} did not reach the loss, "
                f"so the {gradients} passed in {was} None")
        ways_out = (f"handle None in {name}.backward (treat it as zeros) or set materialize_grads = True on {name} "
                    "to receive zeros instead")
        if type(error) in (TypeError, AttributeError, ValueError) and "NoneType" in str(error):
            raise type(error)(
                f"{name}.backward: {what}, and backward raised {type(error).__name__} ({error}), "
                f"probably on that None; {ways_out}"
            ) from error
        # Nothing in the error points at None: leave it as it is, and say what else was odd.
        note = f"note: {name}.backward: {what}; if this error comes from a None, {ways_out}"
        if hasattr(error, "add_note"):  # Python 3.11+ prints it under the error's message
            error.add_note(note)
        else:  # Python 3.10 keeps it where 3.11 would, unprinted
            error.__notes__ = [*getattr(error, "__notes__", []), note]
        raise


def _count_edges_to_hooked_leaves(root: Tensor) -> dict:
    """``{leaf: number of edges from the graph behind root into it}`` for the leaves that
    carry post-accumulate-grad hooks: the number of gradients each will receive in this
    backward if every function passes one on. A leaf used twice by one function (``x * x``)
    counts twice, since that function's backward returns one gradient per input."""
    counts: dict = {}
    seen = {id(root.creator)}
    stack = [root.creator]
    while stack:
        function = stack.pop()
        for x in function.inputs or ():  # a freed graph: the walk itself will say so
            if not x.requires_grad:
                continue
            if x.creator is None:
                if x._post_accumulate_hooks:
                    counts[x] = counts.get(x, 0) + 1
            elif id(x.creator) not in seen:
                seen.add(id(x.creator))
                stack.append(x.creator)
    return counts


def _fire_post_accumulate_hooks(leaf: Tensor) -> None:
    """Run the leaf's post-accumulate-grad hooks in registration order (a copy of the list,
    so a hook may remove itself)."""
    if leaf._post_accumulate_hooks:
        for hook in list(leaf._post_accumulate_hooks.values()):
            hook(leaf)


def _share_version_with_viewed_input(array, result: Tensor, inputs) -> None:
    """A view (reshape, transpose, a slice) shares its input's memory, so an in-place write
    to either changes both: they count their writes together, as torch's views do."""
    if not isinstance(array, np.ndarray) or array.base is None:
        return  # a fresh array (CuPy views are not tracked: see the module docstring)
    for x in inputs:
        if isinstance(x.data, np.ndarray) and np.may_share_memory(array, x.data):
            result._version_box = x._version_box
            return


def _check_versions(function: Function) -> None:
    """Refuse a backward whose inputs were overwritten in place after it was recorded."""
    for i, (x, version) in enumerate(zip(function.inputs, function.versions)):
        if x._version != version:
            raise RuntimeError(
                f"backward: one of the variables needed for gradient computation has been modified "
                f"by an inplace operation: input {i} of {type(function).__name__}, shape {x.shape}, "
                f"is at version {x._version}; expected version {version} instead"
            )
    for output_ref, version in zip(function.outputs, function.output_versions):
        output = output_ref()
        if output is not None and output._version != version:
            raise RuntimeError(f"backward: one of the variables needed for gradient computation has been "
                               f"modified by an inplace operation: the output of {type(function).__name__}")


def _accumulate(leaf: Tensor, gx) -> None:
    """Leaves keep a running sum: two backward calls add their gradients."""
    leaf.grad = Tensor(gx.copy()) if leaf.grad is None else Tensor(leaf.grad.data + gx)


from tinylm import ops as _ops  # noqa: E402  (ops build on Tensor and Function above)
