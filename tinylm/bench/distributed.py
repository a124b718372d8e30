"""``python -m tinylm.bench --distributed``: data-parallel training on this machine.

Three measurements, each in processes of its own:

1. Training speed: the default LSTM language model trained for a few dozen steps by
   ``python -m tinylm.train``, as 1 process of 2 threads and as ``mpiexec -n 2`` processes
   of 1 thread each (OpenMP and BLAS), tokens/s from each run's metrics.csv.
2. Gradient averaging per step, under ``mpiexec -n 2``: how long the all-reduce of every
   gradient takes on its own, and how long a DistributedDataParallel backward waits for its
   buckets after its own work is done: the rest of the all-reduce time was hidden behind
   backward.
3. All-reduce bandwidth by message size (float32 arrays of 1 KiB to 64 MiB), as "bus
   bandwidth": a ring all-reduce moves 2 (N - 1) / N of the message through each link.

The workers are this module run under mpiexec: ``python -m tinylm.bench.distributed
overlap|bandwidth OUT.json``.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = [2**k for k in range(10, 27, 2)]  # bytes: 1 KiB .. 64 MiB


def mpiexec() -> str:
    path = Path(sys.executable).parent / "mpiexec"
    if not path.exists():
        raise RuntimeError('--distributed needs MPI: pip install ".[mpi]" (mpi4py and the mpich wheel)')
    return str(path)


def _run(argv, threads: int, timeout: float = 900.0) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])}... failed:\n{result.stderr[-3000:]}")


def training_speed(steps: int) -> list[dict]:
    """tokens/s of the default LSTM run: 1 process x 2 threads, 2 processes x 1 thread."""
    rows = []
    for processes, threads in ((1, 2), (2, 1)):
        with tempfile.TemporaryDirectory() as folder:
            run = Path(folder) / "run"
            command = [sys.executable, "-m", "tinylm.train", "--steps", str(steps), "--eval-every", str(steps),
                       "--log-every", str(steps), "--sample-tokens", "0", "--out", str(run)]
            _run(command if processes == 1 else [mpiexec(), "-n", str(processes), *command], threads)
            with open(run / "metrics.csv", newline="") as f:
                last = list(csv.DictReader(f))[-1]
        rows.append(dict(processes=processes, threads_each=threads, steps=steps,
                         tokens_per_s=float(last["tokens_per_s"])))
    return rows


def _worker(kind: str, out: str) -> None:
    import tinylm
    import tinylm.distributed as dist

    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    results = {}
    if kind == "bandwidth":
        for size in SIZES:
            array = np.ones(size // 4, dtype=np.float32)
            dist.all_reduce(array, op="avg")  # warm-up; the average of ones stays ones
            dist.barrier()
            repeats = max(3, min(200, 2**26 // size))
            started = time.perf_counter()
            for _ in range(repeats):
                dist.all_reduce(array, op="avg")
            seconds = (time.perf_counter() - started) / repeats
            results[size] = dict(seconds=seconds, bus_gb_s=2 * (world - 1) / world * size / seconds / 1e9)
    else:  # overlap: the default LSTM's gradients
        from tinylm.models import LSTMLanguageModel
        from tinylm.nn import functional as F
        from tinylm.nn.parallel import DistributedDataParallel

        tinylm.manual_seed(0)
        model = LSTMLanguageModel(100, 128, 256, 2, dropout=0.0)
        ids = np.random.default_rng(rank).integers(0, 100, size=(16, 65))
        grads = lambda: [p.grad.data for p in model.parameters() if p.grad is not None]  # noqa: E731

        def backward(wrapper):
            model.zero_grad()
            logits, _ = wrapper(ids[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, 100), ids[:, 1:].reshape(-1))
            started = time.perf_counter()
            loss.backward()
            return time.perf_counter() - started

        results = {}
        for cap in (25, 1):  # the default buckets, and 1 MB ones: several buckets to overlap
            ddp = DistributedDataParallel(model, bucket_cap_mb=cap)
            for _ in range(3):
                backward(ddp)
            local, synced, allreduce = [], [], []
            for _ in range(10):
                dist.barrier()
                local.append(backward(model))  # backward alone, no communication
                started = time.perf_counter()
                for g in grads():  # every gradient averaged on its own, nothing to hide behind
                    dist.all_reduce(np.ascontiguousarray(g))
                allreduce.append(time.perf_counter() - started)
                dist.barrier()
                synced.append(backward(ddp))  # backward with the buckets' all-reduces inside it
            exposed = max(0.0, float(np.median(synced)) - float(np.median(local)))
            total = float(np.median(allreduce))
            results[str(cap)] = dict(buckets=len(ddp.bucket_sizes), backward_s=float(np.median(local)),
                                backward_with_ddp_s=float(np.median(synced)), allreduce_s=total,
                                exposed_s=exposed, hidden_share=max(0.0, 1.0 - exposed / total))
    if rank == 0:
        Path(out).write_text(json.dumps(results))


def run_distributed(steps: int = 60) -> dict:
    """All three measurements, as a dict of lists and dicts (see the module docstring)."""
    results = {"training": training_speed(steps)}
    with tempfile.TemporaryDirectory() as folder:
        for kind in ("overlap", "bandwidth"):
            out = Path(folder) / f"{kind}.json"
            _run([mpiexec(), "-n", "2", sys.executable, "-m", "tinylm.bench.distributed", kind, str(out)], 1)
            results[kind] = json.loads(out.read_text())
    return results


def markdown(results: dict) -> str:
    lines = ["| processes x threads | tokens/s |", "|---|---:|"]
    lines += [f"| {r['processes']} x {r['threads_each']} | {r['tokens_per_s']:,.0f} |" for r in results["training"]]
    lines += ["", "| per step, 2 processes (default LSTM's gradients) | 25 MB buckets | 1 MB buckets |",
              "|---|---:|---:|"]
    o = [results["overlap"][key] for key in sorted(results["overlap"], key=lambda k: -int(k))]
    for label, key, scale in (("buckets", "buckets", None), ("backward alone, ms", "backward_s", 1e3),
                              ("backward with DistributedDataParallel, ms", "backward_with_ddp_s", 1e3),
                              ("all-reduce of every gradient on its own, ms", "allreduce_s", 1e3)):
        cells = [f"{r[key]:.0f}" if scale is None else f"{r[key] * scale:.1f}" for r in o]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    hidden = " | ".join(f"{r['hidden_share']:.0%}" for r in o)
    lines += [f"| of it hidden behind backward | {hidden} |", "", "| message | time | bus bandwidth |",
              "|---:|---:|---:|"]
    lines += [f"| {int(size) // 1024:,} KiB | {r['seconds'] * 1e6:,.0f} µs | {r['bus_gb_s']:.2f} GB/s |"
              for size, r in results["bandwidth"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])
