"""Data-parallel training's plumbing: a process group and its collectives, over MPI or NCCL.

Start N processes with an MPI launcher, ``mpiexec -n N python script.py``; in each::

    from tinylm import distributed as dist
    group = dist.init_process_group()      # "mpi" for NumPy arrays, "nccl" for CuPy arrays
    dist.all_reduce(grad, op="avg")        # every rank now holds the mean of all ranks' grads
    if dist.get_rank() == 0:
        save(...)                          # only rank 0 writes

The collectives (all in place, on a Tensor's ``.data`` or on an array, C-contiguous only):

- ``all_reduce(tensor, op)``: every rank gets the sum/avg/max/min of every rank's tensor;
- ``broadcast(tensor, src)``: every rank gets rank ``src``'s tensor;
- ``all_gather(output, input)``: rank r's input (n, ...) lands at ``output[r*n:(r+1)*n]``;
- ``reduce_scatter(output, input, op)``: rank r gets the reduction of ``input[r*n:(r+1)*n]``.

Each takes ``async_op=True`` and then returns a ``Work`` to ``wait()`` on, so computation can
go on while the bytes travel. The work is done by existing engines: MPI through mpi4py
(``mpi.py``), NCCL through CuPy (``nccl.py``). Neither is imported before
``init_process_group`` needs it. ``pip install ".[mpi]"`` brings mpi4py and MPICH (whose
``mpiexec`` lands in the environment's ``bin/``).
"""

from __future__ import annotations

from tinylm.distributed.group import ProcessGroup, Work
from tinylm.distributed.launch import abort, install_failure_handler, launched_by_mpi, launcher

BACKENDS = ("mpi", "nccl")

_default: ProcessGroup | None = None


def init_process_group(backend: str | None = None) -> ProcessGroup:
    """Join the job's process group and make it the default one; return it.

    ``backend``: "mpi" (NumPy arrays, through mpi4py) or "nccl" (CuPy arrays, one GPU per
    rank: GPU ``local_rank`` of its machine; the NCCL id travels over MPI). None picks
    "nccl" when tinylm's backend runs on the GPU ("cupy", "cuda"), else "mpi". Started
    without a launcher, the world is this one process (size 1). Calling it again returns the
    same group (None then means "the one there is"). It also installs
    ``install_failure_handler()``.
    """
    global _default
    if backend is None and _default is not None:
        return _default
    if backend is None:
        from tinylm.backends import GPU_BACKENDS, get_backend

        backend = "nccl" if get_backend() in GPU_BACKENDS else "mpi"
    if backend not in BACKENDS:
        raise ValueError(f"init_process_group: backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if _default is not None:
        if _default.backend != backend:
            raise RuntimeError(f"init_process_group: already initialised with backend {_default.backend!r}, "
                               f"asked for {backend!r}")
        return _default
    from tinylm.distributed.mpi import MPIProcessGroup

    group = MPIProcessGroup()
    if backend == "nccl":
        from tinylm.distributed.nccl import nccl_group_over_mpi

        group = nccl_group_over_mpi(group)
    _default = group
    install_failure_handler()
    return group


def is_initialized() -> bool:
    """Whether ``init_process_group`` has run (and ``destroy_process_group`` has not since)."""
    return _default is not None


def get_default_group() -> ProcessGroup:
    """The group ``init_process_group`` made; a RuntimeError before it."""
    if _default is None:
        raise RuntimeError("tinylm.distributed: no process group yet; call init_process_group() first")
    return _default


def destroy_process_group() -> None:
    """Forget the default group (freeing an NCCL communicator); MPI itself stays up until exit."""
    global _default
    if _default is not None:
        _default.destroy()
    _default = None


def get_rank() -> int:
    """This process's rank in the default group; 0 when not initialised."""
    return _default.rank if _default is not None else 0


def get_world_size() -> int:
    """The number of ranks in the default group; 1 when not initialised."""
    return _default.size if _default is not None else 1


def get_local_rank() -> int:
    """This process's index among the ranks on its machine; 0 when not initialised."""
    return _default.local_rank if _default is not None else 0


def barrier() -> None:
    """Block until every rank of the default group has reached it."""
    get_default_group().barrier()


def all_reduce(tensor, op: str = "sum", async_op: bool = False) -> Work | None:
    """``ProcessGroup.all_reduce`` on the default group: in place, op "sum", "avg", "max", "min"."""
    return get_default_group().all_reduce(tensor, op=op, async_op=async_op)


def broadcast(tensor, src: int = 0, async_op: bool = False) -> Work | None:
    """``ProcessGroup.broadcast`` on the default group: rank ``src``'s tensor, in place everywhere."""
    return get_default_group().broadcast(tensor, src=src, async_op=async_op)


def all_gather(output, input, async_op: bool = False) -> Work | None:
    """``ProcessGroup.all_gather`` on the default group: output (world * n, ...) from inputs (n, ...)."""
    return get_default_group().all_gather(output, input, async_op=async_op)


def reduce_scatter(output, input, op: str = "sum", async_op: bool = False) -> Work | None:
    """``ProcessGroup.reduce_scatter`` on the default group: output (n, ...) from inputs (world * n, ...)."""
    return get_default_group().reduce_scatter(output, input, op=op, async_op=async_op)


__all__ = [
    "ProcessGroup", "Work", "BACKENDS", "init_process_group", "is_initialized", "get_default_group",
    "destroy_process_group", "get_rank", "get_world_size", "get_local_rank", "barrier", "all_reduce", "broadcast",
    "all_gather", "reduce_scatter", "abort", "install_failure_handler", "launched_by_mpi", "launcher",
]
