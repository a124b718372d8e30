"""The NCCL backend: collectives on CuPy arrays through ``cupy.cuda.nccl``.

NCCL moves GPU memory between GPUs (NVLink, PCIe, the network) with kernels of its own.
Its communicator is created once per rank from a *unique id* that all ranks must share:
rank 0 asks NCCL for one, and MPI broadcasts it (so MPI still starts the processes and
tells each its rank; NCCL only carries the arrays). Each rank drives one GPU, the one
numbered by its local rank on its machine.

A call such as ``comm.allReduce(send_ptr, recv_ptr, count, datatype, op, stream)`` takes
raw device addresses and an element count, and only *enqueues* the collective on a CUDA
stream: the host returns at once. We use the current stream, so every CuPy operation
issued afterwards on it sees the result, with no host wait. ``async_op=True`` also records
a CUDA event after the collective; its ``Work.wait()`` blocks the host until the event.

What the code here needs from CuPy goes through ``CuPyArrays``, so that the same code can
run on the CPU with NumPy arrays and the fake communicator of ``tinylm.distributed.fake_nccl``
(which is how it is tested without GPUs).
"""

from __future__ import annotations

import numpy as np

from tinylm.distributed.group import ProcessGroup, Work


class CuPyArrays:
    """What the NCCL group needs from the array library: CuPy and CUDA."""

    kind = "CuPy array"

    def __init__(self):
        import cupy

        self.cupy = cupy

    def accepts(self, array) -> bool:
        return isinstance(array, self.cupy.ndarray)

    def address(self, array) -> int:
        return int(array.data.ptr)

    def stream(self) -> int:
        """The current CUDA stream, as NCCL takes it (an address)."""
        return int(self.cupy.cuda.get_current_stream().ptr)

    def record(self) -> Work:
        """A Work that completes when the current stream reaches this point."""
        event = self.cupy.cuda.Event(block=False, disable_timing=True)
        event.record()
        return Work(event.synchronize, lambda: bool(event.done))

    def empty(self, count: int, dtype):
        return self.cupy.empty(count, dtype=dtype)

    def synchronize(self) -> None:
        self.cupy.cuda.get_current_stream().synchronize()


class NCCLProcessGroup(ProcessGroup):
    """The ranks of one NCCL communicator; CuPy arrays.

    ``communicator`` is a ``cupy.cuda.nccl.NcclCommunicator`` (or anything with its methods),
    ``nccl`` the module holding NCCL's constants (``NCCL_FLOAT32``, ``NCCL_SUM`` ...), and
    ``arrays`` a ``CuPyArrays`` (or its stand-in). ``mpi_group``, if given, is the MPI group
    that started the ranks and carried the unique id.
    """

    backend = "nccl"

    def __init__(self, communicator, rank: int, size: int, nccl, arrays=None, local_rank: int = 0, mpi_group=None):
        super().__init__(rank, size, local_rank)
        self.communicator, self.nccl = communicator, nccl
        self.arrays = CuPyArrays() if arrays is None else arrays
        self.array_kind = self.arrays.kind
        self.mpi_group = mpi_group
        self._datatypes = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64,
                           np.dtype(np.int64): nccl.NCCL_INT64}
        self._ops = {"sum": nccl.NCCL_SUM, "avg": nccl.NCCL_SUM, "max": nccl.NCCL_MAX, "min": nccl.NCCL_MIN}
        self._scratch = None  # one element, for barrier()

    def _accepts(self, array) -> bool:
        return self.arrays.accepts(array)

    def _address(self, array) -> int:
        return self.arrays.address(array)

    def _done(self, async_op: bool) -> Work | None:
        return self.arrays.record() if async_op else None

    def barrier(self) -> None:
        """An all-reduce of one element, then a wait for the stream: when it returns, every
        rank has reached the barrier and this rank's earlier GPU work has finished."""
        if self._scratch is None:
            self._scratch = self.arrays.empty(1, np.float32)
        self._all_reduce(self._scratch, "sum", False)
        self.arrays.synchronize()

    def destroy(self) -> None:
        if self.communicator is not None:
            self.communicator.destroy()
            self.communicator = None

    def _all_reduce(self, array, op, async_op):
        pointer = self._address(array)
        self.communicator.allReduce(pointer, pointer, array.size, self._datatypes[np.dtype(array.dtype)],
                                    self._ops[op], self.arrays.stream())
        if op == "avg":
            array /= self.size  # queued on the same stream, after the sum
        return self._done(async_op)

    def _broadcast(self, array, src, async_op):
        pointer = self._address(array)
        self.communicator.broadcast(pointer, pointer, array.size, self._datatypes[np.dtype(array.dtype)], src,
                                    self.arrays.stream())
        return self._done(async_op)

    def _all_gather(self, output, input, in_place, async_op):
        # NCCL's in-place form is the same as ours: the input is this rank's block of the output.
        self.communicator.allGather(self._address(input), self._address(output), input.size,
                                    self._datatypes[np.dtype(input.dtype)], self.arrays.stream())
        return self._done(async_op)

    def _reduce_scatter(self, output, input, op, async_op):
        self.communicator.reduceScatter(self._address(input), self._address(output), output.size,
                                        self._datatypes[np.dtype(output.dtype)], self._ops[op], self.arrays.stream())
        if op == "avg":
            output /= self.size
        return self._done(async_op)


def agree_on_unique_id(mpi_group, get_unique_id) -> tuple:
    """Rank 0's ``get_unique_id()`` (NCCL's 128 bytes, as a tuple of ints), sent to every
    rank of ``mpi_group`` by an MPI broadcast of a NumPy buffer."""
    buffer = np.zeros(128, dtype=np.int64)  # NCCL's signed bytes, one per element
    if mpi_group.rank == 0:
        unique_id = tuple(get_unique_id())
        if len(unique_id) != 128:
            raise RuntimeError(f"tinylm.distributed: an NCCL unique id has 128 bytes, got {len(unique_id)}")
        buffer[:] = unique_id
    mpi_group.broadcast(buffer, src=0)
    return tuple(int(b) for b in buffer)


def nccl_group_over_mpi(mpi_group) -> NCCLProcessGroup:
    """An NCCL group of the same ranks as ``mpi_group``, each on GPU ``local_rank``."""
    try:
        import cupy
        from cupy.cuda import nccl
    except ImportError as exc:
        raise ImportError(f'tinylm.distributed: the NCCL backend needs CuPy: pip install ".[cuda]" ({exc})') from exc
    if not getattr(nccl, "available", False):
        raise RuntimeError("tinylm.distributed: this CuPy was built without NCCL; the 'nccl' backend needs it")
    gpus = cupy.cuda.runtime.getDeviceCount()
    if mpi_group.local_rank >= gpus:
        raise RuntimeError(f"tinylm.distributed: rank {mpi_group.rank} is local rank {mpi_group.local_rank} on its "
                           f"machine, which has only {gpus} GPU(s): start at most {gpus} ranks per machine")
    cupy.cuda.Device(mpi_group.local_rank).use()
    unique_id = agree_on_unique_id(mpi_group, nccl.get_unique_id)
    communicator = nccl.NcclCommunicator(mpi_group.size, unique_id, mpi_group.rank)
    return NCCLProcessGroup(communicator, mpi_group.rank, mpi_group.size, nccl, CuPyArrays(),
                            local_rank=mpi_group.local_rank, mpi_group=mpi_group)
