"""A stand-in for ``cupy.cuda.nccl``, for running the NCCL code path on the CPU.

``NcclCommunicator`` here has the real one's constructor and method names and signatures
(raw addresses, element counts, NCCL's datatype and op numbers, a stream) and performs the
collective among N "ranks" that are threads of one process: each rank copies its input
into a shared slot, all wait at a barrier, each computes its own result from all the slots
with NumPy and writes it to its receive address, and all wait again before the slots are
reused. Because it reads and writes the addresses it is given, a wrong pointer, count or
datatype in the code under test gives a wrong result, as it would on GPUs. Calls that do
not match across ranks (another collective, count, datatype, op or root) raise instead of
hanging as real NCCL would.

``HostArrays`` is the matching stand-in for ``nccl.CuPyArrays`` (NumPy arrays; no streams,
so every collective has finished when its call returns), and ``run_ranks(size, fn)`` runs
``fn(group)`` on ``size`` threads, each with its own ``NCCLProcessGroup``::

    results = run_ranks(2, lambda group: group.all_reduce(np.ones(3)) or ...)
"""

from __future__ import annotations

import ctypes
import os
import threading

import numpy as np

from tinylm.distributed.group import Work
from tinylm.distributed.nccl import NCCLProcessGroup

# NCCL's own numbers (nccl.h), so code that mixes them up fails here too.
NCCL_INT64, NCCL_FLOAT32, NCCL_FLOAT64 = 4, 7, 8
NCCL_SUM, NCCL_PROD, NCCL_MAX, NCCL_MIN = 0, 1, 2, 3
_DTYPES = {NCCL_INT64: np.dtype(np.int64), NCCL_FLOAT32: np.dtype(np.float32), NCCL_FLOAT64: np.dtype(np.float64)}
_REDUCE = {NCCL_SUM: np.add, NCCL_PROD: np.multiply, NCCL_MAX: np.maximum, NCCL_MIN: np.minimum}
available = True
TIMEOUT_S = 30.0  # a rank that never arrives breaks the barrier instead of hanging the test


class NcclError(RuntimeError):
    """A collective the fake refuses (mismatched calls across ranks, bad arguments)."""


def get_unique_id() -> tuple:
    """128 random signed bytes, like ``cupy.cuda.nccl.get_unique_id()``."""
    return tuple(int(b) for b in np.frombuffer(os.urandom(128), dtype=np.int8))


class _World:
    """What the ranks of one unique id share: a barrier and one slot per rank."""

    def __init__(self, size: int):
        self.size = size
        self.barrier = threading.Barrier(size, timeout=TIMEOUT_S)
        self.slots: list = [None] * size


_worlds: dict[tuple, _World] = {}
_worlds_lock = threading.Lock()


def _memory(address: int, count: int, datatype: int) -> np.ndarray:
    """A NumPy view of ``count`` elements of ``datatype`` at ``address`` (no copy)."""
    if datatype not in _DTYPES:
        raise NcclError(f"fake NCCL: unknown datatype {datatype}")
    if count and not address:
        raise NcclError("fake NCCL: null buffer address")
    dtype = _DTYPES[datatype]
    if count == 0:
        return np.empty(0, dtype)
    raw = (ctypes.c_char * (count * dtype.itemsize)).from_address(address)
    return np.frombuffer(raw, dtype=dtype)


class NcclCommunicator:
    """One rank's end of a fake NCCL communicator (see the module docstring)."""

    def __init__(self, ndev: int, commId: tuple, rank: int):
        if len(commId) != 128 or not 0 <= rank < ndev:
            raise NcclError(f"fake NCCL: bad communicator arguments (ndev {ndev}, rank {rank}, id of {len(commId)})")
        with _worlds_lock:
            world = _worlds.setdefault(tuple(commId), _World(ndev))
        if world.size != ndev:
            raise NcclError(f"fake NCCL: rank {rank} says {ndev} ranks, another said {world.size}")
        self._world, self._rank = world, rank

    def rank_id(self) -> int:
        return self._rank

    def size(self) -> int:
        return self._world.size

    def device_id(self) -> int:
        return self._rank

    def destroy(self) -> None:
        self._world = None

    def abort(self) -> None:
        if self._world is not None:
            self._world.barrier.abort()
        self._world = None

    def _exchange(self, call: tuple, contribution: np.ndarray) -> list:
        """Every rank's (call, contribution), once all ranks have made theirs."""
        world = self._world
        if world is None:
            raise NcclError("fake NCCL: communicator used after destroy()")
        world.slots[self._rank] = (call, contribution.copy())
        world.barrier.wait()
        everyone = list(world.slots)
        world.barrier.wait()  # nobody overwrites a slot before every rank has read them all
        for rank, (other, _) in enumerate(everyone):
            if other != call:
                raise NcclError(f"fake NCCL: rank {self._rank} called {call}, rank {rank} called {other}")
        return [data for _, data in everyone]

    def allReduce(self, sendbuf: int, recvbuf: int, count: int, datatype: int, op: int, stream: int) -> None:
        inputs = self._exchange(("allReduce", count, datatype, op), _memory(sendbuf, count, datatype))
        result = inputs[0].copy()
        for other in inputs[1:]:
            _REDUCE[op](result, other, out=result)
        _memory(recvbuf, count, datatype)[:] = result

    def broadcast(self, sendbuff: int, recvbuff: int, count: int, datatype: int, root: int, stream: int) -> None:
        inputs = self._exchange(("broadcast", count, datatype, root), _memory(sendbuff, count, datatype))
        _memory(recvbuff, count, datatype)[:] = inputs[root]

    def bcast(self, buff: int, count: int, datatype: int, root: int, stream: int) -> None:
        self.broadcast(buff, buff, count, datatype, root, stream)

    def allGather(self, sendbuf: int, recvbuf: int, count: int, datatype: int, stream: int) -> None:
        inputs = self._exchange(("allGather", count, datatype), _memory(sendbuf, count, datatype))
        _memory(recvbuf, count * self._world.size, datatype)[:] = np.concatenate(inputs)

    def reduceScatter(self, sendbuf: int, recvbuf: int, recvcount: int, datatype: int, op: int, stream: int) -> None:
        size = self._world.size
        inputs = self._exchange(("reduceScatter", recvcount, datatype, op),
                                _memory(sendbuf, recvcount * size, datatype))
        mine = slice(self._rank * recvcount, (self._rank + 1) * recvcount)
        result = inputs[0][mine].copy()
        for other in inputs[1:]:
            _REDUCE[op](result, other[mine], out=result)
        _memory(recvbuf, recvcount, datatype)[:] = result


class HostArrays:
    """The stand-in for ``nccl.CuPyArrays``: NumPy arrays, and no streams (every collective
    of the fake communicator has finished when its call returns)."""

    kind = "NumPy array (standing in for CuPy)"

    def accepts(self, array) -> bool:
        return isinstance(array, np.ndarray)

    def address(self, array) -> int:
        return int(array.__array_interface__["data"][0])

    def stream(self) -> int:
        return 0

    def record(self) -> Work:
        return Work.completed()

    def empty(self, count: int, dtype):
        return np.empty(count, dtype=dtype)

    def synchronize(self) -> None:
        pass


def run_ranks(size: int, fn) -> list:
    """Run ``fn(group)`` on ``size`` threads, one ``NCCLProcessGroup`` over the fake
    communicator each; return their results in rank order. If a rank raises, the others are
    released (their barrier breaks) and the first rank's exception is raised here."""
    import sys

    unique_id = get_unique_id()
    results, errors = [None] * size, [None] * size
    worlds_before = set(_worlds)

    def rank_main(rank: int) -> None:
        communicator = None
        try:
            communicator = NcclCommunicator(size, unique_id, rank)
            group = NCCLProcessGroup(communicator, rank, size, sys.modules[__name__], HostArrays(), local_rank=rank)
            results[rank] = fn(group)
        except BaseException as exc:  # noqa: BLE001 (handed to the caller below)
            errors[rank] = exc
            if communicator is not None:
                communicator.abort()

    threads = [threading.Thread(target=rank_main, args=(rank,), name=f"fake-nccl-rank-{rank}") for rank in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with _worlds_lock:
        for key in set(_worlds) - worlds_before:
            del _worlds[key]
    first = next((e for e in errors if e is not None and not isinstance(e, threading.BrokenBarrierError)), None)
    first = first or next((e for e in errors if e is not None), None)
    if first is not None:
        raise first
    return results
