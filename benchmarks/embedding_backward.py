"""Embedding backward: the NumPy reference (np.add.at) against the Cython kernel,
timed side by side in one run and reported as ratios.

    python benchmarks/embedding_backward.py [--repeat 20]

The harness for every kernel comes with ``python -m tinylm.bench`` (a later issue).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from tinylm import kernels
from tinylm.kernels.cpu.embedding import embedding_backward as compiled
from tinylm.reference.embedding import embedding_backward as reference

# (positions, vocabulary, embedding dim): a char model's batch, a BPE model's batch.
SIZES = [(64 * 128, 128, 64), (32 * 256, 8192, 256), (16 * 512, 32768, 512)]


def median_seconds(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"OpenMP {'on' if kernels.openmp_enabled() else 'off'}, {kernels.get_num_threads()} threads, float32")
    print("| positions | vocab | dim | numpy ms | cython ms | speedup |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n, vocab, dim in SIZES:
        grad = rng.standard_normal((n, dim)).astype(np.float32)
        ids = rng.integers(0, vocab, size=n)
        np.testing.assert_allclose(compiled(grad, ids, vocab), reference(grad, ids, vocab), rtol=1e-4, atol=1e-4)
        t_ref = median_seconds(lambda: reference(grad, ids, vocab), args.repeat)
        t_cy = median_seconds(lambda: compiled(grad, ids, vocab), args.repeat)
        print(f"| {n} | {vocab} | {dim} | {t_ref * 1e3:.2f} | {t_cy * 1e3:.2f} | {t_ref / t_cy:.1f}x |")


if __name__ == "__main__":
    main()
