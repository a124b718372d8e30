"""Timing one call: warm-up runs, then ``repeat`` timed runs; all times in seconds."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def time_cpu(fn: Callable[[], object], warmup: int, repeat: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def time_gpu(fn: Callable[[], object], warmup: int, repeat: int, flush_bytes: int = 256 << 20) -> list[float]:
    """CUDA events around each call, the device synchronised, and the L2 cache flushed
    (a large buffer rewritten) before every timed run so no run reads a warm cache."""
    import cupy

    flush = cupy.empty(flush_bytes // 4, dtype=cupy.float32)
    for _ in range(warmup):
        fn()
    cupy.cuda.Device().synchronize()
    times = []
    for _ in range(repeat):
        flush.fill(0)
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end) / 1e3)
    return times


def summary(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": len(times)}
