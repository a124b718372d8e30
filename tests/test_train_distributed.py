"""``mpiexec -n N python -m tinylm.train`` is the same computation as one process on the
global batch: each rank takes its rows, gradients are averaged (DistributedDataParallel)
or reduce-scattered (--shard-optimizer), dropout masks are drawn per global row.

Every case launches real processes under the venv's ``mpiexec`` (the ``[mpi]`` extra:
the ``mpich`` wheel and mpi4py); without it they skip, saying so.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).parent / "distributed_scripts"
MPIEXEC = Path(sys.executable).parent / "mpiexec"
pytestmark = pytest.mark.skipif(not MPIEXEC.exists() or importlib.util.find_spec("mpi4py") is None,
                                reason='needs MPI: pip install ".[mpi]" (mpi4py and the mpich wheel)')

TEXT = "The quick brown fox jumps over the lazy dog, again and again and again. " * 30
PAIRS = "".join(f"{a} {b}\t{b} {a}{'!' * (len(a) % 3)}\n" for a in ("red", "green", "blue", "black", "white")
                for b in ("cat", "dog", "cow", "owl", "hen", "bee"))


# One thread per process: ranks that each start OpenMP's and OpenBLAS's threads on a
# 2-core machine spend their time waiting for each other's spinning threads.
ONE_THREAD = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")


def launch(processes: int, *command, timeout: float = 180.0) -> subprocess.CompletedProcess:
    """``command`` (a Python script or ``-m module`` and its arguments) alone, or under mpiexec."""
    python = [sys.executable, *command]
    argv = python if processes == 1 else [str(MPIEXEC), "-n", str(processes), *python]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=ONE_THREAD)
    assert result.returncode == 0, f"{' '.join(argv)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    (folder / "text.txt").write_text(TEXT)
    (folder / "pairs.tsv").write_text(PAIRS)
    return {"lstm": folder / "text.txt", "translate": folder / "pairs.tsv"}


def steps(tmp_path, processes: int, task: str, data, *flags) -> dict:
    out = tmp_path / f"{task}-{processes}{''.join(flags)}.npz"
    launch(processes, str(SCRIPTS / "trainer_steps.py"), str(out), task, str(data[task]), *flags)
    return dict(np.load(out))


@pytest.mark.parametrize("task", ["lstm", "translate"])
@pytest.mark.parametrize("processes", [2, 3])
def test_n_processes_take_the_steps_of_one_process_on_the_whole_batch(tmp_path, data, task, processes):
    """float64, 5 AdamW steps with dropout and clipping: every step's parameters equal the
    single process's to 1e-12 (relative); the script checks that ranks agree bit for bit."""
    alone = steps(tmp_path, 1, task, data)
    shared = steps(tmp_path, processes, task, data)
    np.testing.assert_allclose(shared["losses"], alone["losses"], rtol=1e-12)
    for step, (ours, theirs) in enumerate(zip(shared["params"], alone["params"]), 1):
        scale = np.abs(theirs).max()
        assert np.abs(ours - theirs).max() <= 1e-12 * scale, f"step {step}"
    assert not np.array_equal(alone["params"][0], alone["params"][-1])  # the steps did move them


@pytest.mark.parametrize("task", ["lstm", "translate"])
def test_the_sharded_optimizer_takes_the_steps_of_distributed_data_parallel(tmp_path, data, task):
    plain = steps(tmp_path, 2, task, data)
    sharded = steps(tmp_path, 2, task, data, "--shard-optimizer")
    np.testing.assert_allclose(sharded["params"], plain["params"], rtol=0, atol=1e-12 * np.abs(plain["params"]).max())


def train_command(data, out, *flags):
    return ["-m", "tinylm.train", "--data", str(data["lstm"]), "--out", str(out), "--batch-size", "4",
            "--seq-len", "8", "--embedding-dim", "8", "--hidden-dim", "16", "--n-layers", "2",
            "--eval-every", "3", "--log-every", "1", "--sample-tokens", "5", "--backend", "numpy", *flags]


def test_only_rank_0_writes_and_prints_and_the_run_matches_one_process(tmp_path, data):
    result = launch(2, *train_command(data, tmp_path / "two", "--steps", "6"))
    assert result.stdout.count("tinylm.train:") == 1 and result.stdout.count("done: step 6") == 1, result.stdout
    assert "2 processes" in result.stdout
    launch(1, *train_command(data, tmp_path / "one", "--steps", "6"))
    from tinylm.checkpoint import read_safetensors

    two = read_safetensors(tmp_path / "two" / "checkpoint" / "model.safetensors")
    one = read_safetensors(tmp_path / "one" / "checkpoint" / "model.safetensors")
    for name in one:  # float32: the same computation up to summation order
        np.testing.assert_allclose(two[name], one[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_a_resumed_two_process_run_equals_an_uninterrupted_one(tmp_path, data):
    launch(2, *train_command(data, tmp_path / "whole", "--steps", "6"))
    launch(2, *train_command(data, tmp_path / "parts", "--steps", "6", "--time-limit", "0"))  # stops after step 1
    launch(2, "-m", "tinylm.train", "--resume", str(tmp_path / "parts"))
    for name in ("model.safetensors", "optimizer.safetensors"):
        assert (tmp_path / "parts" / "checkpoint" / name).read_bytes() == \
            (tmp_path / "whole" / "checkpoint" / name).read_bytes(), name


def test_a_global_batch_that_does_not_divide_over_the_processes_is_refused(tmp_path, data):
    argv = [str(MPIEXEC), "-n", "3", sys.executable, *train_command(data, tmp_path / "run", "--steps", "2")]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=ONE_THREAD)
    assert result.returncode != 0
    assert "--batch-size 4 is the global batch: it must divide evenly over the 3 processes" in result.stderr


def test_what_cannot_yet_run_on_several_processes_is_refused_before_any_work(tmp_path, data):
    argv = [str(MPIEXEC), "-n", "2", sys.executable, "-m", "tinylm.train", "--task", "translate", "--data",
            str(data["translate"]), "--n-layers", "2", "--batch-size", "4", "--out", str(tmp_path / "run")]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=ONE_THREAD)
    assert result.returncode != 0 and "cannot train on several processes yet" in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()
