"""tinylm.distributed: the process group and its collectives.

- Real MPI: the scripts in tests/distributed_scripts/ run under ``mpiexec -n 2`` and ``-n 3``
  (MPICH from ``pip install ".[mpi]"``) and check every collective against NumPy computed
  by hand; skipped when mpi4py or mpiexec is missing.
- A failing rank ends the job: rank 1 raises, exits non-zero, is interrupted or is killed
  with SIGKILL while rank 0 waits in a collective; the job must end within 30 s.
- The NCCL code path on the CPU: ``fake_nccl`` performs NCCL's calls among threads, on the
  addresses and counts the NCCL group passes, with NumPy arrays standing in for CuPy's.
- Real NCCL: the same script under ``mpiexec -n 2`` with the "nccl" backend (needs 2 GPUs).
"""

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tinylm
from tinylm import distributed as dist
from tinylm.distributed import fake_nccl
from tinylm.distributed.group import Work

SCRIPTS = Path(__file__).parent / "distributed_scripts"
ROOT = Path(__file__).parents[1]


def mpiexec() -> str | None:
    """The mpiexec beside this Python (the ``mpich`` wheel puts it there), else on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or mpiexec() is None,
    reason='needs mpi4py and mpiexec: pip install ".[mpi]"')


def launch(ranks: int, script: str, *args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``mpiexec -n RANKS python SCRIPT ARGS``; return the finished process and its seconds."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [mpiexec(), "-n", str(ranks), sys.executable, str(SCRIPTS / script), *args]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env,
                            stdin=subprocess.DEVNULL)
    return result, time.monotonic() - started


# ---- real collectives over MPI


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_every_collective_under_mpiexec_matches_numpy(ranks):
    result, _ = launch(ranks, "collectives.py", str(ranks))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert f"all passed on {ranks} ranks" in result.stdout


@needs_mpi
def test_world_size_one_works_without_a_launcher():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_", "SLURM_"))}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run([sys.executable, str(SCRIPTS / "collectives.py"), "1"], capture_output=True, text=True,
                            timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "all passed on 1 ranks" in result.stdout


# ---- a failing rank ends the job


@needs_mpi
@pytest.mark.parametrize("mode, code, words", [
    ("raise", 1, ["tinylm.distributed: rank 1: uncaught ValueError: rank 1 fails on purpose"]),
    ("exit", 3, ["tinylm.distributed: rank 1: exit with code 3"]),
    ("interrupt", 130, ["tinylm.distributed: rank 1: interrupted (KeyboardInterrupt)"]),
    ("kill", None, ["rank 0 waits in all_reduce"]),
])
def test_a_failing_rank_ends_every_rank_within_30_seconds(mode, code, words):
    result, seconds = launch(2, "failing.py", mode, timeout=45)
    output = result.stdout + result.stderr
    assert seconds < 30, f"{mode}: the job took {seconds:.1f} s\n{output[-3000:]}"
    assert result.returncode != 0, output[-3000:]
    if code is not None:
        assert result.returncode == code, output[-3000:]
    if mode == "kill":  # hydra reports the signal and ends rank 0 itself
        assert "signal 9" in output or "Killed" in output, output[-3000:]
    for word in words:
        assert word in output, output[-3000:]
    assert "rank 0 left all_reduce" not in output


@pytest.mark.parametrize("code, status, line", [
    ("from tinylm.distributed import abort; abort('the data is missing', 5)", 5,
     "tinylm.distributed: rank 0: the data is missing"),
    ("import tinylm.distributed as d; d.install_failure_handler(); d.install_failure_handler(); 1 / 0", 1,
     "tinylm.distributed: rank 0: uncaught ZeroDivisionError: division by zero; ending every rank"),
    ("import sys, tinylm.distributed as d; d.install_failure_handler(); sys.exit('bad flag')", 1,
     "tinylm.distributed: rank 0: exit with code 1; ending every rank"),
    ("import sys, tinylm.distributed as d; d.install_failure_handler(); sys.exit(0)", 0, None),
])
def test_abort_and_the_failure_handler_without_mpi(code, status, line):
    """Without MPI initialised, abort ends just this process, with the same one line."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == status, result.stderr
    if line is None:
        assert "tinylm.distributed" not in result.stderr
    else:
        assert result.stderr.strip().splitlines()[-1] == line


# ---- the launcher's environment, and what importing costs


@pytest.mark.parametrize("variables, expected", [
    ({}, None),
    ({"PMI_RANK": "1", "PMI_SIZE": "2"}, "MPICH hydra"),
    ({"PMI_RANK": "0", "MPI_LOCALRANKID": "0"}, "Intel MPI"),
    ({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4"}, "Open MPI"),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "8"}, "Slurm srun"),
    ({"PMIX_RANK": "2"}, "PMIx"),
    ({"PMI_RANK": "1"}, None),  # half of hydra's pair is not a launch
    ({"SLURM_NTASKS": "8"}, None),
])
def test_launched_by_mpi_reads_each_launchers_variables(monkeypatch, variables, expected):
    for name in list(os.environ):
        if name.startswith(("PMI_", "OMPI_", "PMIX_", "SLURM_", "MPI_LOCAL")):
            monkeypatch.delenv(name)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert dist.launcher() == expected
    assert dist.launched_by_mpi() is (expected is not None)


def test_importing_tinylm_distributed_imports_neither_mpi4py_nor_cupy():
    code = ("import sys, tinylm, tinylm.distributed, tinylm.distributed.nccl, tinylm.distributed.mpi; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mpi4py', 'cupy')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_not_initialized_means_rank_0_of_1():
    assert not dist.is_initialized()
    assert (dist.get_rank(), dist.get_world_size(), dist.get_local_rank()) == (0, 1, 0)
    with pytest.raises(RuntimeError, match="init_process_group"):
        dist.all_reduce(np.zeros(3))
    with pytest.raises(ValueError, match="init_process_group: backend must be one of mpi, nccl, got 'gloo'"):
        dist.init_process_group("gloo")


def test_a_missing_mpi4py_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # makes `import mpi4py` fail
    from tinylm.distributed.mpi import import_mpi

    with pytest.raises(ImportError, match=r'pip install "\.\[mpi\]"'):
        import_mpi()


# ---- Work


def test_work_runs_its_completion_step_once():
    finished, steps = [False], []
    work = Work(lambda: finished.__setitem__(0, True), lambda: finished[0], then=lambda: steps.append("then"))
    assert not work.is_completed() and steps == []
    work.wait()
    assert work.is_completed() and steps == ["then"]
    work.wait()
    assert steps == ["then"]
    assert Work.completed().is_completed()


# ---- the NCCL code path, on the CPU through the fake communicator


def contribution(rank: int, shape, dtype=np.float64) -> np.ndarray:
    count = int(np.prod(shape))
    return ((np.arange(count) % 5 - 2) * (rank + 1) + 0.25 * rank).reshape(shape).astype(dtype)


REDUCE = {"sum": lambda xs, size: np.sum(xs, axis=0), "avg": lambda xs, size: np.sum(xs, axis=0) / size,
          "max": lambda xs, size: np.max(xs, axis=0), "min": lambda xs, size: np.min(xs, axis=0)}


@pytest.mark.parametrize("size", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("async_op", [False, True])
def test_nccl_group_collectives_through_the_fake_communicator(size, dtype, async_op):
    def finish(work):
        if async_op:
            assert isinstance(work, Work)
            work.wait()
        else:
            assert work is None

    def body(group):
        rank, n = group.rank, 2
        out = {}
        for op in REDUCE:
            array = contribution(rank, (3, 2), dtype)
            finish(group.all_reduce(tinylm.Tensor(array) if rank % 2 else array, op=op, async_op=async_op))
            out[f"all_reduce {op}"] = array
        for src in range(size):
            array = contribution(rank, (4,), dtype)
            finish(group.broadcast(array, src=src, async_op=async_op))
            out[f"broadcast {src}"] = array
        gathered = np.full((size * n, 3), -7, dtype=dtype)
        finish(group.all_gather(gathered, contribution(rank, (n, 3), dtype), async_op=async_op))
        out["all_gather"] = gathered
        in_place = np.full((size * n, 3), -7, dtype=dtype)
        in_place[rank * n:(rank + 1) * n] = contribution(rank, (n, 3), dtype)
        finish(group.all_gather(tinylm.Tensor(in_place), in_place[rank * n:(rank + 1) * n], async_op=async_op))
        out["all_gather in place"] = in_place
        for op in REDUCE:
            scattered = np.full((n, 3), -7, dtype=dtype)
            finish(group.reduce_scatter(scattered, contribution(rank, (size * n, 3), dtype), op=op, async_op=async_op))
            out[f"reduce_scatter {op}"] = scattered
        group.barrier()
        return out

    results = fake_nccl.run_ranks(size, body)
    n = 2
    for rank, out in enumerate(results):
        for op, how in REDUCE.items():
            everyone = np.stack([contribution(r, (3, 2), dtype) for r in range(size)])
            np.testing.assert_array_equal(out[f"all_reduce {op}"], how(everyone, size).astype(dtype))
            block = np.stack([contribution(r, (size * n, 3), dtype)[rank * n:(rank + 1) * n] for r in range(size)])
            np.testing.assert_array_equal(out[f"reduce_scatter {op}"], how(block, size).astype(dtype))
            assert out[f"reduce_scatter {op}"].dtype == dtype
        for src in range(size):
            np.testing.assert_array_equal(out[f"broadcast {src}"], contribution(src, (4,), dtype))
        expected = np.concatenate([contribution(r, (n, 3), dtype) for r in range(size)])
        np.testing.assert_array_equal(out["all_gather"], expected)
        np.testing.assert_array_equal(out["all_gather in place"], expected)


def test_nccl_group_int64_broadcast_and_all_gather():
    def body(group):
        ids = np.array([group.rank, 2**50 + group.rank], dtype=np.int64)
        group.broadcast(ids, src=1)
        gathered = np.zeros((group.size, 2), dtype=np.int64)
        group.all_gather(gathered, np.array([[group.rank, -group.rank]], dtype=np.int64))
        return ids, gathered

    for ids, gathered in fake_nccl.run_ranks(2, body):
        np.testing.assert_array_equal(ids, [1, 2**50 + 1])
        np.testing.assert_array_equal(gathered, [[0, 0], [1, -1]])


def test_nccl_group_refuses_bad_buffers_before_any_rank_sends():
    read_only = np.zeros(3)
    read_only.flags.writeable = False

    def body(group):
        errors = []
        for call in (lambda: group.all_reduce(np.zeros((4, 6))[:, ::2]),
                     lambda: group.all_reduce(np.zeros(3, dtype=np.float16)),
                     lambda: group.all_reduce(np.zeros(3, dtype=np.int64), op="avg"),
                     lambda: group.all_gather(np.zeros((5, 3)), np.zeros((2, 3))),
                     lambda: group.reduce_scatter(np.zeros((2, 3)), np.zeros((4, 3), dtype=np.float32)),
                     lambda: group.broadcast(np.zeros(3), src=-1),
                     lambda: group.all_reduce(read_only)):
            with pytest.raises((ValueError, TypeError)) as info:
                call()
            errors.append(str(info.value))
        return errors

    errors = fake_nccl.run_ranks(2, body)[0]
    assert "all_reduce (nccl backend): tensor of shape (4, 3) with strides (48, 16) is not C-contiguous" in errors[0]
    assert "float16" in errors[1]
    assert "op 'avg' needs a float32 or float64 array, got int64" in errors[2]
    assert "all_gather: output (5, 3) float64 must be (world size 2 * n, ...)" in errors[3]
    assert "reduce_scatter: input (4, 3) float32" in errors[4] and "output (n, ...) (2, 3) float64" in errors[4]
    assert "src must be a rank in [0, 2), got -1" in errors[5]
    assert "all_reduce (nccl backend): tensor of shape (3,) is read-only" in errors[6]


def test_fake_communicator_catches_ranks_that_call_different_collectives():
    def body(group):
        if group.rank == 0:
            group.all_reduce(np.zeros(3))
        else:
            group.all_reduce(np.zeros(4))

    with pytest.raises(fake_nccl.NcclError, match="allReduce"):
        fake_nccl.run_ranks(2, body)


def test_fake_communicator_releases_the_others_when_one_rank_fails():
    def body(group):
        if group.rank == 1:
            raise KeyError("rank 1 fails")
        group.all_reduce(np.zeros(3))

    started = time.monotonic()
    with pytest.raises(KeyError, match="rank 1 fails"):
        fake_nccl.run_ranks(3, body)
    assert time.monotonic() - started < 10


# ---- real NCCL


def gpu_count() -> int:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount()
    except Exception:  # no CuPy, no driver, no GPU
        return 0


@needs_mpi
@pytest.mark.skipif(gpu_count() < 2, reason="needs 2 GPUs")
def test_every_collective_over_real_nccl_matches_numpy():
    result, _ = launch(2, "collectives.py", "2", "nccl", timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "all passed on 2 ranks" in result.stdout

