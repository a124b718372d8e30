"""Run under ``mpiexec -n N``: every collective against NumPy computed by hand.

``python collectives.py N [BACKEND]``: N is the world size the launcher was asked for,
BACKEND "mpi" (NumPy arrays, the default) or "nccl" (CuPy arrays, one GPU per rank).

Each rank builds every rank's input from the rank number alone (``contribution(r)``), so
it can compute by hand what the collective must produce, and compares. Any mismatch raises,
and the failure handler ends the job with a non-zero code. Rank 0 prints "all passed on N
ranks" at the end; tests/test_distributed.py looks for that line.
"""

import sys

import numpy as np

import tinylm
from tinylm import distributed as dist


def contribution(rank: int, shape, dtype) -> np.ndarray:
    """Rank ``rank``'s input: distinct values, exactly representable in float32."""
    count = int(np.prod(shape))
    return ((np.arange(count) % 7 - 3) * (rank + 1) + rank * 0.5).reshape(shape).astype(dtype)


xp = np  # the arrays the collectives take: NumPy, or CuPy for "nccl" (set in main)


def dev(array: np.ndarray):
    """``array`` in the backend's memory (a copy on the GPU for NCCL; itself for MPI)."""
    return array if xp is np else xp.asarray(array)


def host(array) -> np.ndarray:
    return array if isinstance(array, np.ndarray) else xp.asnumpy(array)


def check(name: str, got, expected) -> None:
    got = host(got.data if isinstance(got, tinylm.Tensor) else got)
    if got.dtype != expected.dtype or got.shape != expected.shape or not np.array_equal(got, expected):
        raise AssertionError(f"{name}: rank {dist.get_rank()} got {got!r}, expected {expected!r}")


def finish(work) -> None:
    """Wait on ``work``; check that a Work came back and that it then says completed."""
    if not isinstance(work, dist.Work):
        raise AssertionError(f"async_op=True returned {work!r}, not a Work")
    work.wait()
    if not work.is_completed():
        raise AssertionError("a Work is not completed after wait()")


def run_all(rank: int, size: int) -> None:
    reduce = {"sum": lambda xs: np.sum(xs, axis=0), "max": lambda xs: np.max(xs, axis=0),
              "min": lambda xs: np.min(xs, axis=0), "avg": lambda xs: np.sum(xs, axis=0) / size}
    for dtype in (np.float64, np.float32):
        for async_op in (False, True):
            for wrap in (False, True):  # a Tensor, or the bare array
                box = (lambda a: tinylm.Tensor(a)) if wrap else (lambda a: a)
                label = f"{np.dtype(dtype).name}, async {async_op}, tensor {wrap}"

                # all_reduce: every op, in place
                for op, how in reduce.items():
                    shape = (3, 4)
                    array = dev(contribution(rank, shape, dtype))
                    work = dist.all_reduce(box(array), op=op, async_op=async_op)
                    finish(work) if async_op else None
                    if not async_op and work is not None:
                        raise AssertionError(f"all_reduce without async_op returned {work!r}")
                    everyone = np.stack([contribution(r, shape, dtype) for r in range(size)])
                    check(f"all_reduce {op} ({label})", array, how(everyone).astype(dtype))

                # broadcast from every source
                for src in range(size):
                    array = dev(contribution(rank, (5,), dtype))
                    work = dist.broadcast(box(array), src=src, async_op=async_op)
                    finish(work) if async_op else None
                    check(f"broadcast src {src} ({label})", array, contribution(src, (5,), dtype))

                # all_gather: separate buffers, and in place (input is this rank's block)
                n = 2
                output = xp.full((size * n, 3), -99, dtype=dtype)
                work = dist.all_gather(box(output), box(dev(contribution(rank, (n, 3), dtype))), async_op=async_op)
                finish(work) if async_op else None
                expected = np.concatenate([contribution(r, (n, 3), dtype) for r in range(size)])
                check(f"all_gather ({label})", output, expected)
                output = xp.full((size * n, 3), -99, dtype=dtype)
                output[rank * n:(rank + 1) * n] = dev(contribution(rank, (n, 3), dtype))
                work = dist.all_gather(output, output[rank * n:(rank + 1) * n], async_op=async_op)
                finish(work) if async_op else None
                check(f"all_gather in place ({label})", output, expected)

                # reduce_scatter: rank r gets the reduction of every rank's block r
                for op, how in reduce.items():
                    inputs = [contribution(r, (size * n, 3), dtype) for r in range(size)]
                    output, mine = xp.full((n, 3), -99, dtype=dtype), dev(inputs[rank].copy())
                    work = dist.reduce_scatter(box(output), box(mine), op=op, async_op=async_op)
                    finish(work) if async_op else None
                    block = np.stack([x[rank * n:(rank + 1) * n] for x in inputs])
                    check(f"reduce_scatter {op} ({label})", output, how(block).astype(dtype))
                    check(f"reduce_scatter leaves its input ({label})", mine, inputs[rank])

    # int64: broadcast, all_gather and all_reduce (sum) of counts
    counts = dev(np.array([rank, 10 * rank, 2**40 + rank], dtype=np.int64))
    dist.broadcast(counts, src=size - 1)
    check("broadcast int64", counts, np.array([size - 1, 10 * (size - 1), 2**40 + size - 1], dtype=np.int64))
    gathered = xp.zeros(size, dtype=np.int64)
    dist.all_gather(gathered, dev(np.array([rank * 3], dtype=np.int64)))
    check("all_gather int64", gathered, np.arange(size, dtype=np.int64) * 3)
    total = dev(np.array([rank + 1], dtype=np.int64))
    dist.all_reduce(total)
    check("all_reduce int64", total, np.array([size * (size + 1) // 2], dtype=np.int64))

    # several collectives in flight at once, waited on in reverse order
    arrays = [dev(contribution(rank, (4,), np.float64) * (k + 1)) for k in range(3)]
    works = [dist.all_reduce(a, async_op=True) for a in arrays]
    for work in reversed(works):
        work.wait()
    for k, array in enumerate(arrays):
        expected = sum(contribution(r, (4,), np.float64) for r in range(size)) * (k + 1)
        check(f"overlapping all_reduce {k}", array, expected)

    # a Tensor with requires_grad: its data is reduced in place, its graph untouched
    weight = tinylm.Tensor(dev(contribution(rank, (2, 2), np.float32)), requires_grad=True)
    dist.all_reduce(weight, op="max")
    check("all_reduce of a Tensor", weight, np.max([contribution(r, (2, 2), np.float32) for r in range(size)], axis=0))
    dist.barrier()


def expect_error(kind, words, call) -> None:
    """``call()`` must raise ``kind`` with every one of ``words`` in its message."""
    try:
        call()
    except kind as exc:
        missing = [w for w in words if w not in str(exc)]
        if missing:
            raise AssertionError(f"the error {exc!r} does not mention {missing}") from exc
        return
    raise AssertionError(f"expected {kind.__name__} mentioning {words}")


def check_errors(size: int) -> None:
    """Refusals, on this backend's real group, before any rank sends a byte."""
    grid = xp.zeros((4, 6))
    expect_error(ValueError, ["all_reduce", "(4, 3)", "not C-contiguous"], lambda: dist.all_reduce(grid[:, ::2]))
    expect_error(ValueError, ["broadcast", "not C-contiguous"], lambda: dist.broadcast(grid.T))
    expect_error(TypeError, ["all_reduce", "int32"], lambda: dist.all_reduce(xp.zeros(3, dtype=np.int32)))
    expect_error(TypeError, ["all_reduce", "list"], lambda: dist.all_reduce([1.0, 2.0]))
    expect_error(ValueError, ["all_reduce", "op", "'prod'"], lambda: dist.all_reduce(xp.zeros(3), op="prod"))
    expect_error(ValueError, ["broadcast", "src", str(size)], lambda: dist.broadcast(xp.zeros(3), src=size))
    expect_error(ValueError, ["all_gather", f"({size * 2 + 1}, 3)", "(2, 3)"],
                 lambda: dist.all_gather(xp.zeros((size * 2 + 1, 3)), xp.zeros((2, 3))))
    expect_error(ValueError, ["all_gather", "float32"],
                 lambda: dist.all_gather(xp.zeros((size * 2, 3)), xp.zeros((2, 3), dtype=np.float32)))
    expect_error(ValueError, ["reduce_scatter", f"({size * 2}, 4)", "(2, 3)"],
                 lambda: dist.reduce_scatter(xp.zeros((2, 3)), xp.zeros((size * 2, 4))))
    flat = xp.zeros(size * 4)
    expect_error(ValueError, ["reduce_scatter", "overlaps"], lambda: dist.reduce_scatter(flat[:4], flat))
    if size > 1:
        other = (dist.get_rank() + 1) % size
        expect_error(ValueError, ["all_gather", "overlaps", "block"],
                     lambda: dist.all_gather(flat, flat[other * 4:(other + 1) * 4]))


def check_unique_id_agreement(group) -> None:
    """Every rank ends up with rank 0's NCCL id (here: random bytes standing in for one)."""
    from tinylm.distributed.fake_nccl import get_unique_id
    from tinylm.distributed.nccl import agree_on_unique_id

    unique_id = agree_on_unique_id(group, get_unique_id)
    everyone = np.zeros((group.size, 128), dtype=np.int64)
    group.all_gather(everyone, np.array([unique_id], dtype=np.int64))
    if len(unique_id) != 128 or not (everyone == everyone[0]).all():
        raise AssertionError(f"rank {group.rank}: the ranks hold different NCCL ids")


def main() -> None:
    global xp
    backend = sys.argv[2] if len(sys.argv) > 2 else "mpi"
    if backend == "nccl":
        import cupy

        xp = cupy
    group = dist.init_process_group(backend)
    if dist.init_process_group(backend) is not group or not dist.is_initialized():
        raise AssertionError("init_process_group is not idempotent")
    rank, size = dist.get_rank(), dist.get_world_size()
    expected_size = int(sys.argv[1])
    if size != expected_size or group.size != size or group.rank != rank or group.backend != backend:
        raise AssertionError(f"rank {rank}: world size {size}, group {group!r}; expected size {expected_size}")
    if size > 1 and not dist.launched_by_mpi():
        raise AssertionError("launched_by_mpi() is False under mpiexec")
    check_errors(size)
    if backend == "mpi":
        check_unique_id_agreement(group)
    run_all(rank, size)
    dist.barrier()
    if rank == 0:
        print(f"all passed on {size} ranks", flush=True)


if __name__ == "__main__":
    main()
