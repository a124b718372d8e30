"""``ProcessGroup`` and ``Work``: what every backend shares.

A process group is the set of ranks (processes) that take part in a collective. Every
collective here works *in place* on buffers the caller owns: ``all_reduce`` overwrites its
tensor with the reduction, ``all_gather`` writes into the output it is given. So this layer
does the checks once, for every backend, before any bytes move:

- a Tensor stands for its ``.data`` (the array is written, the Tensor sees the result);
- the array must be C-contiguous: a strided view would need a copy, and writing the result
  into a copy would silently leave the caller's array unchanged, so it is refused instead;
- the dtype must be one the collective supports, and the same for input and output;
- shapes must fit: ``all_gather`` and ``reduce_scatter`` exchange ``world_size`` blocks of
  ``n`` rows, ``output.shape[0] == world_size * input.shape[0]`` (or the other way round);
- buffers that overlap are refused, except the one in-place form MPI and NCCL both know:
  ``all_gather(output, output[rank * n:(rank + 1) * n])`` (each rank's block already sits in
  its place in the output).

A backend (``mpi.MPIProcessGroup``, ``nccl.NCCLProcessGroup``) then implements four methods
on checked arrays: ``_all_reduce``, ``_broadcast``, ``_all_gather``, ``_reduce_scatter``, each
returning a ``Work`` when asked for ``async_op``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

REDUCE_OPS = ("sum", "avg", "max", "min")
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
ALL_DTYPES = FLOAT_DTYPES + (np.dtype(np.int64),)


class Work:
    """A collective started with ``async_op=True``, still in flight.

    ``wait()`` blocks until the result is in the output buffer; ``is_completed()`` asks
    without blocking. Until then the buffers belong to the collective: neither read nor
    write them. ``then``, if given, runs once, right after completion (``avg`` divides the
    summed buffer by the world size there).
    """

    def __init__(self, wait: Callable[[], None], test: Callable[[], bool], then: Callable[[], None] | None = None):
        self._wait, self._test, self._then = wait, test, then
        self._completed = False

    @classmethod
    def completed(cls) -> "Work":
        """A Work with nothing left to do (a collective that finished at once)."""
        work = cls(lambda: None, lambda: True)
        work._completed = True
        return work

    def _finish(self) -> None:
        self._completed = True
        if self._then is not None:
            self._then()

    def wait(self) -> None:
        """Block until the collective has finished and its result is in place."""
        if not self._completed:
            self._wait()
            self._finish()

    def is_completed(self) -> bool:
        """Whether the collective has finished (never blocks)."""
        if not self._completed and self._test():
            self._finish()
        return self._completed

    def __repr__(self) -> str:
        return f"Work(completed={self._completed})"


def _shape(array) -> tuple:
    return tuple(int(s) for s in array.shape)


class ProcessGroup:
    """The ranks taking part in collectives, and the collectives themselves.

    Attributes: ``rank`` (this process, 0..size-1), ``size`` (the world size), ``backend``
    ("mpi" or "nccl"), ``local_rank`` (this process's index among those on its machine, the
    GPU it uses under NCCL).

    Every collective takes Tensors or arrays of the backend's kind, works in place, and with
    ``async_op=True`` returns a ``Work`` instead of waiting.
    """

    backend = "none"
    array_kind = "array"  # what the error messages call the arrays this backend takes

    def __init__(self, rank: int, size: int, local_rank: int = 0):
        self.rank, self.size, self.local_rank = int(rank), int(size), int(local_rank)
        self.local_size = 1  # ranks on this machine (a backend that knows sets it)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(backend={self.backend!r}, rank={self.rank}, size={self.size})"

    # ---- what a backend provides
    def _accepts(self, array) -> bool:  # is this an array of the backend's kind?
        raise NotImplementedError(f"{type(self).__name__} must define _accepts")

    def _address(self, array) -> int:  # the address of the array's first byte
        raise NotImplementedError(f"{type(self).__name__} must define _address")

    def barrier(self) -> None:
        """Block until every rank has reached the barrier."""
        raise NotImplementedError(f"{type(self).__name__} must define barrier")

    def destroy(self) -> None:
        """Free what the group holds (communicators); the group is unusable afterwards."""

    # ---- the checks every collective makes
    def _array(self, collective: str, role: str, value, dtypes=ALL_DTYPES, writable: bool = True):
        """The array behind ``value`` (a Tensor or an array), checked: the backend's kind,
        C-contiguous, one of ``dtypes``, and writable if the collective writes it."""
        from tinylm.autograd import Tensor

        array = value.data if isinstance(value, Tensor) else value
        where = f"{collective} ({self.backend} backend)"
        if not self._accepts(array):
            kind = type(array).__module__.split(".")[0] + "." + type(array).__name__
            raise TypeError(f"{where}: {role} must be a {self.array_kind} or a Tensor holding one, got {kind}")
        if not array.flags.c_contiguous:
            raise ValueError(
                f"{where}: {role} of shape {_shape(array)} with strides {tuple(array.strides)} is not C-contiguous; "
                "the result is written in place, so pass a contiguous array (e.g. ascontiguousarray) and use that")
        if np.dtype(array.dtype) not in dtypes:
            names = ", ".join(d.name for d in dtypes)
            raise TypeError(f"{where}: {role} of shape {_shape(array)} has dtype {array.dtype}; "
                            f"expected one of {names}")
        if writable and not getattr(array.flags, "writeable", True):  # CuPy's flags have no `writeable`
            raise ValueError(f"{where}: {role} of shape {_shape(array)} is read-only, "
                             "but the result is written into it")
        return array

    def _span(self, array) -> tuple[int, int]:
        start = self._address(array)
        return start, start + array.nbytes

    def _overlap(self, a, b) -> bool:
        (a0, a1), (b0, b1) = self._span(a), self._span(b)
        return a.nbytes > 0 and b.nbytes > 0 and a0 < b1 and b0 < a1

    @staticmethod
    def _check_op(collective: str, op: str, array) -> None:
        if op not in REDUCE_OPS:
            raise ValueError(f"{collective}: op must be one of {', '.join(REDUCE_OPS)}, got {op!r}")
        if op == "avg" and np.dtype(array.dtype) not in FLOAT_DTYPES:
            raise TypeError(f"{collective}: op 'avg' needs a float32 or float64 array, got {array.dtype}")

    def _check_rank(self, collective: str, src) -> int:
        if isinstance(src, bool) or not isinstance(src, (int, np.integer)) or not 0 <= src < self.size:
            raise ValueError(f"{collective}: src must be a rank in [0, {self.size}), got {src!r}")
        return int(src)

    # ---- the collectives
    def all_reduce(self, tensor, op: str = "sum", async_op: bool = False) -> Work | None:
        """Reduce ``tensor`` over all ranks, in place: afterwards every rank holds the
        elementwise ``op`` ("sum", "avg" = sum / world size, "max", "min") of every rank's
        ``tensor``. Any shape; float32, float64 (and int64, except for "avg")."""
        array = self._array("all_reduce", "tensor", tensor)
        self._check_op("all_reduce", op, array)
        return self._all_reduce(array, op, async_op)

    def broadcast(self, tensor, src: int = 0, async_op: bool = False) -> Work | None:
        """Copy rank ``src``'s ``tensor`` into every other rank's ``tensor`` (same shape and
        dtype on every rank), in place."""
        array = self._array("broadcast", "tensor", tensor)
        return self._broadcast(array, self._check_rank("broadcast", src), async_op)

    def all_gather(self, output, input, async_op: bool = False) -> Work | None:
        """Gather every rank's ``input`` (n, ...) into every rank's ``output`` (size * n, ...):
        rank r's input lands at ``output[r * n:(r + 1) * n]``.

        ``input`` may be exactly that block of ``output`` (``output[rank * n:(rank + 1) * n]``):
        then nothing is sent from elsewhere and the gather happens in place."""
        out = self._array("all_gather", "output", output)
        inp = self._array("all_gather", "input", input, writable=False)
        if inp.ndim == 0:
            raise ValueError("all_gather: input must have at least one axis (n, ...), got a 0-d array")
        expected = (self.size * inp.shape[0],) + _shape(inp)[1:]
        if _shape(out) != expected or out.dtype != inp.dtype:
            raise ValueError(
                f"all_gather: output {_shape(out)} {out.dtype} must be (world size {self.size} * n, ...) for input "
                f"(n, ...) {_shape(inp)} {inp.dtype}: expected {expected} {inp.dtype}")
        in_place = False
        if self._overlap(out, inp):
            own_block = self._address(out) + self.rank * inp.nbytes
            if self._address(inp) != own_block:
                raise ValueError(
                    f"all_gather: input {_shape(inp)} overlaps output {_shape(out)} but is not this rank's block "
                    f"output[{self.rank} * n:{self.rank + 1} * n]; use separate buffers, or that block for in place")
            in_place = True
        return self._all_gather(out, inp, in_place, async_op)

    def reduce_scatter(self, output, input, op: str = "sum", async_op: bool = False) -> Work | None:
        """Reduce every rank's ``input`` (size * n, ...) and scatter it: rank r's ``output``
        (n, ...) gets the ``op`` over all ranks of ``input[r * n:(r + 1) * n]``. The two
        buffers must not overlap."""
        out = self._array("reduce_scatter", "output", output)
        inp = self._array("reduce_scatter", "input", input, writable=False)
        self._check_op("reduce_scatter", op, out)
        if out.ndim == 0:
            raise ValueError("reduce_scatter: output must have at least one axis (n, ...), got a 0-d array")
        if _shape(inp) != (self.size * out.shape[0],) + _shape(out)[1:] or out.dtype != inp.dtype:
            raise ValueError(
                f"reduce_scatter: input {_shape(inp)} {inp.dtype} must be (world size {self.size} * n, ...) for output "
                f"(n, ...) {_shape(out)} {out.dtype}")
        if self._overlap(out, inp):
            raise ValueError(f"reduce_scatter: output {_shape(out)} overlaps input {_shape(inp)}; use separate buffers")
        return self._reduce_scatter(out, inp, op, async_op)

    # ---- implemented by each backend, on checked arrays
    def _all_reduce(self, array, op: str, async_op: bool) -> Work | None:
        raise NotImplementedError(f"{type(self).__name__} must define _all_reduce")

    def _broadcast(self, array, src: int, async_op: bool) -> Work | None:
        raise NotImplementedError(f"{type(self).__name__} must define _broadcast")

    def _all_gather(self, output, input, in_place: bool, async_op: bool) -> Work | None:
        raise NotImplementedError(f"{type(self).__name__} must define _all_gather")

    def _reduce_scatter(self, output, input, op: str, async_op: bool) -> Work | None:
        raise NotImplementedError(f"{type(self).__name__} must define _reduce_scatter")
