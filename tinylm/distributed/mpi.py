"""The MPI backend: collectives on NumPy arrays through mpi4py.

mpi4py has two spellings of every call. The lowercase ones (``comm.allreduce(obj)``) pickle
any Python object; the capitalised ones (``comm.Allreduce(sendbuf, recvbuf)``) hand the
array's memory straight to MPI through the buffer protocol, with no copy and no pickle.
Arrays only ever take the second path here. ``MPI.IN_PLACE`` as the send buffer tells MPI
that the input already sits in the receive buffer, which saves a copy for ``all_reduce``
and the in-place ``all_gather``.

The non-blocking forms (``Iallreduce`` ...) return an ``MPI.Request``; a ``Work`` wraps it.
"""

from __future__ import annotations

import numpy as np

from tinylm.distributed.group import ProcessGroup, Work


def import_mpi():
    """``mpi4py.MPI``, or an ImportError that says how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(
            "tinylm.distributed: the MPI backend needs mpi4py and an MPI library: "
            f'pip install ".[mpi]" (or: pip install mpi4py mpich) ({exc})') from exc
    return MPI


class MPIProcessGroup(ProcessGroup):
    """The ranks of an MPI communicator (``MPI.COMM_WORLD`` by default); NumPy arrays."""

    backend = "mpi"
    array_kind = "NumPy array"

    def __init__(self, comm=None):
        self.MPI = import_mpi()
        self.comm = self.MPI.COMM_WORLD if comm is None else comm
        # The ranks sharing this machine's memory form one "shared" communicator; our place
        # in it is the local rank, whichever launcher started us.
        local = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED, key=self.comm.Get_rank())
        local_rank, local_size = local.Get_rank(), local.Get_size()
        local.Free()
        super().__init__(self.comm.Get_rank(), self.comm.Get_size(), local_rank)
        self.local_size = local_size  # ranks on this machine, sharing its cores
        self._ops = {"sum": self.MPI.SUM, "avg": self.MPI.SUM, "max": self.MPI.MAX, "min": self.MPI.MIN}

    def _accepts(self, array) -> bool:
        return isinstance(array, np.ndarray)

    def _address(self, array) -> int:
        return int(array.__array_interface__["data"][0])

    def _work(self, request, then=None) -> Work:
        return Work(request.Wait, request.Test, then)

    def barrier(self) -> None:
        self.comm.Barrier()

    def _all_reduce(self, array, op, async_op):
        divide = (lambda: np.divide(array, self.size, out=array)) if op == "avg" else None
        if async_op:
            return self._work(self.comm.Iallreduce(self.MPI.IN_PLACE, array, op=self._ops[op]), divide)
        self.comm.Allreduce(self.MPI.IN_PLACE, array, op=self._ops[op])
        if divide:
            divide()
        return None

    def _broadcast(self, array, src, async_op):
        if async_op:
            return self._work(self.comm.Ibcast(array, root=src))
        self.comm.Bcast(array, root=src)
        return None

    def _all_gather(self, output, input, in_place, async_op):
        send = self.MPI.IN_PLACE if in_place else input
        if async_op:
            return self._work(self.comm.Iallgather(send, output))
        self.comm.Allgather(send, output)
        return None

    def _reduce_scatter(self, output, input, op, async_op):
        divide = (lambda: np.divide(output, self.size, out=output)) if op == "avg" else None
        if async_op:
            return self._work(self.comm.Ireduce_scatter_block(input, output, op=self._ops[op]), divide)
        self.comm.Reduce_scatter_block(input, output, op=self._ops[op])
        if divide:
            divide()
        return None
