"""The recurrent layers alone: tinylm's LSTM, GRU and Elman RNN (cython backend) against
PyTorch's, training and evaluation.

    python benchmarks/recurrent_layers.py [--rounds 12] [--json out.json]

Each layer is 2 layers deep, input 128, hidden 256, on a (T 64, B 32) float32 sequence,
the default LSTM language model's sizes. A training call is a forward and a backward of
``out.sum()`` (the input needs no gradient); an evaluation call a forward without
gradients. tinylm and PyTorch each run in their own process (spawned), so neither
library's thread pool competes with the other's, both with ``tinylm.memory.keep_freed_memory()``'s
allocator settings (as ``tinylm.train`` and the bench run), and only one works at a time: the calls
are timed interleaved, a block of 4 (the first not counted) per side in turn after a
0.3 s pause, as ``python -m tinylm.bench --train`` times whole models. Prints the machine,
the median and best milliseconds of each and the ratio PyTorch / tinylm (above 1: tinylm
is faster).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time
from pathlib import Path

import numpy as np

LAYERS, INPUT, HIDDEN, STEPS, BATCH = 2, 128, 256, 64, 32
KINDS = ("LSTM", "GRU", "RNN")
BLOCK, IDLE = 4, 0.3


def _tinylm_calls(kind):
    import tinylm
    from tinylm import backends, nn

    backends.set_backend("cython")
    tinylm.manual_seed(0)
    layer = getattr(nn, kind)(INPUT, HIDDEN, num_layers=LAYERS)
    x = tinylm.tensor(np.random.default_rng(0).standard_normal((STEPS, BATCH, INPUT)).astype(np.float32))

    def train():
        layer.zero_grad()
        out, _ = layer(x)
        out.sum().backward()

    def evaluate():
        with tinylm.no_grad():
            layer(x)

    return {"train": train, "eval": evaluate}


def _torch_calls(kind):
    import torch

    torch.manual_seed(0)
    layer = getattr(torch.nn, kind)(INPUT, HIDDEN, num_layers=LAYERS)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((STEPS, BATCH, INPUT)).astype(np.float32))

    def train():
        layer.zero_grad()
        out, _ = layer(x)
        out.sum().backward()

    def evaluate():
        with torch.no_grad():
            layer(x)

    return {"train": train, "eval": evaluate}


def _worker(side, connection):
    from tinylm.memory import keep_freed_memory

    keep_freed_memory()  # both sides: the same allocator settings (freed memory kept, no page faults)
    build = _tinylm_calls if side == "tinylm" else _torch_calls
    calls = {kind: build(kind) for kind in KINDS}
    connection.send("ready")
    while (request := connection.recv()) != "stop":
        kind, task = request
        times = []
        for _ in range(BLOCK):
            start = time.perf_counter()
            calls[kind][task]()
            times.append(time.perf_counter() - start)
        connection.send(times[1:])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=12, help="interleaved rounds (each: a block of calls per side)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    from tinylm.bench.machine import header

    facts = header()
    context = multiprocessing.get_context("spawn")
    workers = {}
    for side in ("tinylm", "torch"):
        parent, child = context.Pipe()
        process = context.Process(target=_worker, args=(side, child), daemon=True)
        process.start()
        workers[side] = (process, parent)
    for _, connection in workers.values():
        connection.recv()
    times = {(side, kind, task): [] for side in workers for kind in KINDS for task in ("train", "eval")}
    try:
        for _ in range(args.rounds):
            for kind in KINDS:
                for task in ("train", "eval"):
                    for side, (_, connection) in workers.items():
                        time.sleep(IDLE)
                        connection.send((kind, task))
                        times[(side, kind, task)].extend(connection.recv())
    finally:
        for process, connection in workers.values():
            connection.send("stop")
            process.join(timeout=60)
    print(f"# recurrent layers, {facts['date']}: {facts['cpu']}, {facts['cores']} cores; "
          f"NumPy {facts.get('numpy')}, PyTorch {facts.get('torch')}")
    print(f"{LAYERS} layers, input {INPUT}, hidden {HIDDEN}, T {STEPS}, B {BATCH}, float32; "
          f"{args.rounds} rounds x {BLOCK - 1} timed calls a side\n")
    print("| layer | task | tinylm median (best) ms | PyTorch median (best) ms | PyTorch / tinylm |")
    print("|---|---|---:|---:|---:|")
    rows = []
    for kind in KINDS:
        for task in ("train", "eval"):
            ours, theirs = times[("tinylm", kind, task)], times[("torch", kind, task)]
            row = dict(layer=kind, task=task, tinylm_ms=1e3 * statistics.median(ours), tinylm_best_ms=1e3 * min(ours),
                       torch_ms=1e3 * statistics.median(theirs), torch_best_ms=1e3 * min(theirs))
            row["ratio"] = row["torch_ms"] / row["tinylm_ms"]
            rows.append(row)
            print(f"| {kind} | {task} | {row['tinylm_ms']:.1f} ({row['tinylm_best_ms']:.1f}) | "
                  f"{row['torch_ms']:.1f} ({row['torch_best_ms']:.1f}) | {row['ratio']:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps(dict(machine=facts, rows=rows), indent=1) + "\n")


if __name__ == "__main__":
    main()
