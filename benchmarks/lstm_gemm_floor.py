"""How fast could an LSTM training step built on NumPy's BLAS be? Its matrix products
alone, against PyTorch's whole training step.

One training step of the default-size LSTM language model (vocabulary 96, embedding 128, hidden
256, 2 layers, batch 32 x 64 steps) multiplies matrices of these shapes, and nothing in
tinylm can multiply them faster than the BLAS NumPy calls (tinylm has no
hand-written GEMM): the input projections and the output layer as big products, the
recurrence as 64 small (32, 256) @ (256, 1024) products per layer and direction, the
weight gradients as big products. This script replays exactly those products through
``np.matmul`` into preallocated outputs (layouts as tinylm's kernels use them) and times
that replay against PyTorch's full training step (forward, backward, AdamW), each in its
own process, interleaved with pauses, as ``python -m tinylm.bench --train`` does.

If the products alone take about as long as PyTorch's whole step, no arrangement of
tinylm's other work (cells, softmax, optimizer, graph) can reach PyTorch's speed on this
machine with this BLAS: that is the ceiling the ratio in README runs into.

    python benchmarks/lstm_gemm_floor.py [--rounds 8] [--eval] [--fastest-layouts]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time

import numpy as np

VOCAB, EMBED, HIDDEN, BATCH, STEPS = 96, 128, 256, 32, 64
ROWS, GATES = BATCH * STEPS, 4 * HIDDEN


FASTEST_LAYOUTS = False  # --fastest-layouts: the per-step products with transposed outputs


def product_list():
    """(a shape, b shape, count, layout) of every product in one training step, in order;
    layout "T." / ".T" says a or b is a transposed view (as ``x @ W.T`` in Linear, or
    ``dgates.T @ h`` for a weight gradient), "" that both are contiguous."""
    forward_step = [((BATCH, HIDDEN), (HIDDEN, GATES), STEPS, "")]  # h_{t-1} @ Wₕₕᵀ (a contiguous copy)
    backward_step = [((BATCH, GATES), (GATES, HIDDEN), STEPS, "")]  # dgates_t @ Wₕₕ
    if FASTEST_LAYOUTS:  # the same products as (Wₕₕ h_{t-1}ᵀ)ᵀ and (Wₕₕᵀ dgates_tᵀ)ᵀ: OpenBLAS is
        # faster here when the output is (4H, B) or (H, B), which the cells would then read transposed
        forward_step = [((GATES, HIDDEN), (HIDDEN, BATCH), STEPS, "")]
        backward_step = [((HIDDEN, GATES), (GATES, BATCH), STEPS, "")]
    weight_grad = [((GATES, ROWS), (ROWS, HIDDEN), 1, "T.")]  # dgatesᵀ @ h_prev: dWₕₕ
    return (
        [((ROWS, EMBED), (EMBED, GATES), 1, ".T")] + forward_step  # layer 0: x @ Wᵢₕᵀ, recurrence
        + [((ROWS, HIDDEN), (HIDDEN, GATES), 1, ".T")] + forward_step  # layer 1
        + [((ROWS, HIDDEN), (HIDDEN, VOCAB), 1, ".T")]  # output layer
        + [((ROWS, VOCAB), (VOCAB, HIDDEN), 1, ""), ((VOCAB, ROWS), (ROWS, HIDDEN), 1, "T.")]  # its dx, dW
        + backward_step + weight_grad  # layer 1: BPTT, dWₕₕ
        + [((ROWS, GATES), (GATES, HIDDEN), 1, ""), ((GATES, ROWS), (ROWS, HIDDEN), 1, "T.")]  # its dx, dWᵢₕ
        + backward_step + weight_grad  # layer 0: BPTT, dWₕₕ
        + [((ROWS, GATES), (GATES, EMBED), 1, ""), ((GATES, ROWS), (ROWS, EMBED), 1, "T.")]  # its dx, dWᵢₕ
    )


FORWARD_PRODUCTS = 5  # the first five entries: the forward pass, all an evaluation does


def products(mode: str):
    return product_list()[:FORWARD_PRODUCTS] if mode == "eval" else product_list()


def flops(mode: str) -> float:
    return sum(2.0 * a[0] * a[1] * b[1] * count for a, b, count, _ in products(mode))


def _replay_worker(mode, fastest_layouts, connection):
    global FASTEST_LAYOUTS
    FASTEST_LAYOUTS = fastest_layouts  # a spawned process starts from the module's default
    rng = np.random.default_rng(0)

    def operand(shape, transposed):
        stored = shape[::-1] if transposed else shape
        array = rng.standard_normal(stored).astype(np.float32)
        return array.T if transposed else array

    work = [(operand(a, layout.startswith("T")), operand(b, layout.endswith("T")),
             np.empty((a[0], b[1]), np.float32), count) for a, b, count, layout in products(mode)]

    def step():
        for a, b, out, count in work:
            for _ in range(count):
                np.matmul(a, b, out=out)

    _serve(connection, step)


def _torch_worker(mode, fastest_layouts, connection):
    import torch

    from tinylm.bench.training import PRESETS, Runner

    batch = np.random.default_rng(0).integers(0, VOCAB, size=(BATCH, STEPS + 1))
    runner = Runner("lstm", "torch", PRESETS["medium"], batch)
    _serve(connection, runner.evaluate if mode == "eval" else runner.train_step)
    del torch


def _serve(connection, step):
    from tinylm.memory import keep_freed_memory

    keep_freed_memory()
    step()
    connection.send("ready")
    while (calls := connection.recv()) != "stop":
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        connection.send(times[1:])  # the first call of a block warms the caches


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--eval", action="store_true", help="the forward pass only, against PyTorch's no-grad forward")
    parser.add_argument("--fastest-layouts", action="store_true",
                        help="the per-step products with transposed outputs, the layout OpenBLAS runs fastest")
    args = parser.parse_args(argv)
    global FASTEST_LAYOUTS
    FASTEST_LAYOUTS = args.fastest_layouts
    mode = "eval" if args.eval else "train"
    context = multiprocessing.get_context("spawn")
    workers = {}
    step = "evaluation forward" if mode == "eval" else "training step"
    for name, target in (("matrix products only (NumPy BLAS)", _replay_worker), (f"PyTorch {step}", _torch_worker)):
        parent, child = context.Pipe()
        process = context.Process(target=target, args=(mode, args.fastest_layouts, child), daemon=True)
        process.start()
        workers[name] = (process, parent)
    times = {name: [] for name in workers}
    try:
        for _, connection in workers.values():
            connection.recv()
        for _ in range(args.rounds):
            for name, (_, connection) in workers.items():
                time.sleep(0.3)  # the other process's thread pools go idle first
                connection.send(4)
                times[name].extend(connection.recv())
    finally:
        for process, connection in workers.values():
            connection.send("stop")
            process.join(timeout=60)
    print(f"One {step} of the default-size LSTM: {flops(mode) / 1e9:.1f} GFLOP of matrix products "
          f"({sum(item[2] for item in products(mode))} products); median over {args.rounds} rounds:")
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, median in medians.items():
        print(f"  {name:36s} {median * 1e3:7.1f} ms  ({BATCH * STEPS / median:,.0f} tokens/s)")
    replay, torch_step = medians.values()
    print(f"  products alone / PyTorch's whole {step}: {replay / torch_step:.2f} "
          f"(so at most {torch_step / replay:.2f}x PyTorch with this BLAS)")


if __name__ == "__main__":
    main()
