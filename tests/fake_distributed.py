"""A test fake of ``tinylm.distributed`` over mpi4py, for the DDP and ZeRO tests.

The real package is being written beside this work; until it is in the branch, the worker
script (``tests/distributed_worker.py``) installs this module as ``tinylm.distributed``, so
``DistributedDataParallel`` and ``ZeroRedundancyAdamW`` find it the way they will find the
real one. It has the same API: ``init_process_group``, ``is_initialized``, ``get_rank``,
``get_world_size``, and ``all_reduce``, ``broadcast``, ``all_gather``, ``reduce_scatter``
on C-contiguous NumPy arrays (or Tensors, through ``.data``), in place, each returning a
``Work`` with ``wait()`` when ``async_op=True``.
"""

from __future__ import annotations

import numpy as np

_comm = None


def _mpi():
    from mpi4py import MPI

    return MPI


def init_process_group(backend=None) -> None:
    global _comm
    _comm = _mpi().COMM_WORLD


def is_initialized() -> bool:
    return _comm is not None


def get_rank() -> int:
    return _comm.Get_rank()


def get_world_size() -> int:
    return _comm.Get_size()


class Work:
    """A launched collective: ``wait()`` blocks until it is done (then runs ``finish``)."""

    def __init__(self, request, finish=None):
        self.request, self.finish = request, finish

    def wait(self) -> None:
        if self.request is not None:
            self.request.Wait()
            self.request = None
            if self.finish is not None:
                self.finish()


def _array(x, name: str):
    array = x.data if hasattr(x, "requires_grad") else x
    if not isinstance(array, np.ndarray) or not array.flags.c_contiguous:
        raise ValueError(f"{name}: needs a C-contiguous NumPy array")
    return array


def _op(op: str):
    MPI = _mpi()
    table = {"sum": MPI.SUM, "avg": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}
    if op not in table:
        raise ValueError(f"unknown op {op!r}")
    return table[op]


def _done(work: Work, async_op: bool):
    if async_op:
        return work
    work.wait()
    return None


def all_reduce(x, op: str = "sum", async_op: bool = False):
    array = _array(x, "all_reduce")
    request = _comm.Iallreduce(_mpi().IN_PLACE, array, op=_op(op))
    finish = (lambda: np.divide(array, get_world_size(), out=array)) if op == "avg" else None
    return _done(Work(request, finish), async_op)


def broadcast(x, src: int = 0, async_op: bool = False):
    array = _array(x, "broadcast")
    return _done(Work(_comm.Ibcast(array, root=src)), async_op)


def all_gather(output, input, async_op: bool = False):  # noqa: A002  (the API's name)
    out, inp = _array(output, "all_gather"), _array(input, "all_gather")
    return _done(Work(_comm.Iallgather(inp, out)), async_op)


def reduce_scatter(output, input, op: str = "sum", async_op: bool = False):  # noqa: A002
    out, inp = _array(output, "reduce_scatter"), _array(input, "reduce_scatter")
    request = _comm.Ireduce_scatter_block(inp, out, op=_op(op))
    finish = (lambda: np.divide(out, get_world_size(), out=out)) if op == "avg" else None
    return _done(Work(request, finish), async_op)
