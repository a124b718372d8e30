"""Run tests/distributed_worker.py under ``mpiexec -n N`` and return its per-scenario results
(skipping the test, with the reason, where mpi4py or mpiexec is missing)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).resolve().parent / "distributed_worker.py"


def mpiexec() -> str:
    """The ``mpiexec`` beside this Python (the venv's, from ``pip install mpich``), else on PATH."""
    pytest.importorskip("mpi4py", reason="the multi-process tests need mpi4py (pip install mpich mpi4py)")
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    if found is None:
        pytest.skip("the multi-process tests need mpiexec (pip install mpich mpi4py)")
    return found


def run_scenarios(world_size: int, scenarios: list[str], tmp_path: Path, timeout: float = 120) -> dict:
    """``{scenario: "ok" or the failures}`` from one ``mpiexec -n world_size`` run."""
    out = tmp_path / f"results_{world_size}.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    command = [mpiexec(), "-n", str(world_size), sys.executable, str(WORKER), str(out), *scenarios]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"{' '.join(command)} ran past {timeout} s (a rank stuck in a collective?)\n"
                             f"{error.stdout}\n{error.stderr}") from None
    assert done.returncode == 0 and out.exists(), (
        f"{' '.join(command)} failed with code {done.returncode}\n{done.stdout}\n{done.stderr}")
    return json.loads(out.read_text())
