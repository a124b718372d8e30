"""GFLOP/s of tinylm's packed micro-kernel (kernels/cpu/tinylm_gemm.h) against OpenBLAS
(NumPy's matmul) and against this machine's peak, on the LSTM's products.

The shapes are the default LSTM language model's (hidden 256, batch 32, 64 steps), W_hh (1024, 256):

    forward step      h (32, 256) @ W_hhᵀ              M 32,   K 256,  N 1024   W_hh packed once
    backward to h     dgates (32, 1024) @ W_hh         M 32,   K 1024, N 256    W_hh packed once
    dW_hh, per step   dW += dgatesᵀ (1024, 32) @ h     M 1024, K 32,   N 256    h packed per call
    dW_hh, sequence   dW += dgatesᵀ (1024, 2048) @ h   M 1024, K 2048, N 256    all steps at once
    square            (1024, 1024) @ (1024, 1024)      M = K = N = 1024

tinylm runs on 1 and 2 OpenMP threads; OpenBLAS on 1 and 2 threads (threadpoolctl), called
as tinylm's kernels call it today, with the layouts of the products above (a transposed view
of W_hh in the forward step), into preallocated outputs. The peak: the micro-kernel's FMAs
without its loads (``fma_probe``), timed on one core, times the cores; the clock it implies
assumes two 256-bit FMA pipes a core (32 float32 flop a cycle: Zen 2-4, Haswell and later;
on AVX-512 machines with two 512-bit pipes the implied clock reads twice the real one); the
clock is also measured with a dependent chain of scalar FMAs, one per FMA latency (4 cycles).

The machine may be shared: every figure is the best of many calls, the implementations are
interleaved round by round, and the load average is recorded before and after.

    python benchmarks/gemm_microkernel.py [--rounds 7] [--calls 30] [--isa-paths]

--isa-paths also compiles the header's other instruction-set paths (with cc, as
tests/test_kernel_gemm.py does) and times the forward step on each, on one thread.
Prints a Markdown table and writes benchmarks/results/gemm_microkernel.json.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from tinylm import kernels
from tinylm.bench.machine import blas_library, cpu_model
from tinylm.kernels.cpu import gemm

ROOT = Path(__file__).resolve().parents[1]
HIDDEN, BATCH, STEPS = 256, 32, 64
GATES = 4 * HIDDEN
FLOP_PER_CYCLE = 32  # two 256-bit FMA pipes x 8 floats x 2 flop


def problems(rng):
    """name -> (M, K, N, tinylm call, OpenBLAS call); each call writes into its own output."""
    def normal(*shape):
        return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)

    w_hh, h, dgates = normal(GATES, HIDDEN), normal(BATCH, HIDDEN), normal(BATCH, GATES)
    h_all, dgates_all = normal(BATCH * STEPS, HIDDEN), normal(BATCH * STEPS, GATES)
    square_a, square_b = normal(1024, 1024), normal(1024, 1024)
    forward, backward = gemm.pack_weight(w_hh, transpose=True), gemm.pack_weight(w_hh)  # B = W_hhᵀ, B = W_hh
    square = gemm.pack_weight(square_b)
    gates, dh = np.empty((BATCH, GATES), np.float32), np.empty((BATCH, HIDDEN), np.float32)
    dw, out = np.zeros((GATES, HIDDEN), np.float32), np.empty((1024, 1024), np.float32)

    def blas_accumulate(a, b):
        def run():
            np.matmul(a, b, out=dh_scratch)
            dw.__iadd__(dh_scratch)
        dh_scratch = np.empty((a.shape[0], b.shape[1]), np.float32)
        return run

    return {
        "forward step": (BATCH, HIDDEN, GATES, lambda: gemm.gemm_packed(h, forward, gates),
                         lambda: np.matmul(h, w_hh.T, out=gates)),
        "backward to h": (BATCH, GATES, HIDDEN, lambda: gemm.gemm_packed(dgates, backward, dh),
                          lambda: np.matmul(dgates, w_hh, out=dh)),
        # B = h changes every call, so it is packed in every call (gemm itself runs OpenBLAS's blocks)
        "dW_hh per step": (GATES, BATCH, HIDDEN, lambda: gemm.gemm_packed(dgates, gemm.pack_weight(h), dw, True, True),
                           blas_accumulate(dgates.T, h)),
        "dW_hh sequence": (GATES, BATCH * STEPS, HIDDEN,
                           lambda: gemm.gemm_packed(dgates_all, gemm.pack_weight(h_all), dw, True, True),
                           blas_accumulate(dgates_all.T, h_all)),
        "1024^3": (1024, 1024, 1024, lambda: gemm.gemm_packed(square_a, square, out),
                   lambda: np.matmul(square_a, square_b, out=out)),
    }


def best_seconds(call, calls: int) -> float:
    best = float("inf")
    for _ in range(calls):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


@contextlib.contextmanager
def threads_of(threads: int, ours: bool):
    """Run the block on ``threads`` threads of tinylm's OpenMP team (ours) or of OpenBLAS.
    (Entered once around many calls: threadpoolctl takes about a millisecond to enter.)"""
    if not ours:
        with threadpool_limits(threads, user_api="blas"):
            yield
        return
    before, threshold = kernels.get_num_threads(), kernels.get_parallel_threshold()
    kernels.set_num_threads(threads)
    kernels.set_parallel_threshold(0)
    try:
        yield
    finally:
        kernels.set_num_threads(before)
        kernels.set_parallel_threshold(threshold)


def measure_peak(rounds: int) -> float:
    """One core's GFLOP/s on the micro-kernel's FMAs alone, best of many short runs."""
    best = 0.0
    for _ in range(rounds * 40):
        start = time.perf_counter()
        flops, _ = gemm.fma_probe(100_000)
        best = max(best, flops / (time.perf_counter() - start) / 1e9)
    return best


# ------------------------------------------------------------ the header's other paths

DRIVER = r"""
#include "tinylm_gemm.h"
const char *isa(void) { return TINYLM_GEMM_ISA; }
int64_t packed_size(int64_t k, int64_t n) { return tinylm_gemm_packed_size(k, n); }
void pack(int64_t k, int64_t n, const float *b, int64_t rsb, int64_t csb, float *packed) {
    tinylm_gemm_pack_b(k, n, b, rsb, csb, packed);
}
int multiply(int64_t m, int64_t n, int64_t k, const float *a, const float *packed, float *c) {
    return tinylm_sgemm_packed(m, n, k, a, k, 1, packed, c, n, 0, 1);
}
"""
PATH_FLAGS = {"portable": ["-DTINYLM_GEMM_PORTABLE"], "avx2+fma": ["-mavx2", "-mfma", "-DTINYLM_GEMM_NO_AVX512"],
              "avx512": ["-mavx2", "-mfma", "-mavx512f"]}


CHAIN = r"""
#include <math.h>
#include <stdint.h>
/* one dependent chain of scalar FMAs: each waits for the last, so it runs at one per FMA latency */
float chain(int64_t n) { float x = 1.0f; for (int64_t i = 0; i < n; i++) x = fmaf(x, 0.999999f, 1e-7f); return x; }
"""
FMA_LATENCY = 4  # cycles, on Zen 2-4 and on Intel cores since Skylake


def clock_from_chain(rounds: int) -> float | None:
    """GHz from a dependent FMA chain (compiled with cc -mfma) assuming its latency of 4
    cycles; None without a compiler or FMA."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None or "fma" not in Path("/proc/cpuinfo").read_text():
        return None
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "chain.c").write_text(CHAIN)
        library = Path(folder) / "chain.so"
        subprocess.run([compiler, "-O2", "-mfma", "-shared", "-fPIC", str(Path(folder) / "chain.c"), "-o",
                        str(library)], check=True)
        lib = ctypes.CDLL(str(library))
        lib.chain.argtypes, lib.chain.restype = [ctypes.c_int64], ctypes.c_float
        iterations = 1_000_000
        seconds = min(best_seconds(lambda: lib.chain(iterations), 20) for _ in range(rounds))
        return FMA_LATENCY * iterations / seconds / 1e9


def isa_paths(calls: int, rounds: int) -> dict:
    """GFLOP/s of the forward step on one thread for each path this CPU and compiler can build."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    flags = set(next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), []))
    needs = {"portable": set(), "avx2+fma": {"avx2", "fma"}, "avx512": {"avx2", "fma", "avx512f"}}
    rng = np.random.default_rng(1)
    h = rng.standard_normal((BATCH, HIDDEN)).astype(np.float32)
    w_hh = rng.standard_normal((GATES, HIDDEN)).astype(np.float32)
    expected = h.astype(np.float64) @ w_hh.T
    found = {}
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "driver.c").write_text(DRIVER)
        for name, extra in PATH_FLAGS.items():
            if compiler is None or not needs[name] <= flags:
                continue
            library = Path(folder) / f"{name.replace('+', '_')}.so"
            subprocess.run([compiler, "-O3", "-shared", "-fPIC", *extra, f"-I{ROOT / 'kernels' / 'cpu'}",
                            str(Path(folder) / "driver.c"), "-o", str(library)], check=True)
            lib = ctypes.CDLL(str(library))
            lib.packed_size.restype = ctypes.c_int64
            lib.packed_size.argtypes = [ctypes.c_int64] * 2
            i64, ptr = ctypes.c_int64, ctypes.c_void_p
            lib.pack.argtypes = [i64, i64, ptr, i64, i64, ptr]
            lib.multiply.argtypes = [i64, i64, i64, ptr, ptr, ptr]
            packed = np.empty(lib.packed_size(HIDDEN, GATES), np.float32)
            lib.pack(HIDDEN, GATES, w_hh.ctypes.data, 1, HIDDEN, packed.ctypes.data)  # B = W_hhᵀ
            gates = np.empty((BATCH, GATES), np.float32)
            call = lambda lib=lib: lib.multiply(BATCH, GATES, HIDDEN, h.ctypes.data, packed.ctypes.data,  # noqa: E731
                                                gates.ctypes.data)
            call()
            assert np.allclose(gates, expected, rtol=1e-4, atol=1e-4), name
            seconds = min(best_seconds(call, calls) for _ in range(rounds))
            found[name] = 2 * BATCH * HIDDEN * GATES / seconds / 1e9
    return found


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds; the best call of all counts")
    parser.add_argument("--calls", type=int, default=30, help="calls per implementation per round")
    parser.add_argument("--isa-paths", action="store_true", help="also time the header's other instruction sets")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gemm_microkernel.json"))
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    rng = np.random.default_rng(0)
    cases = problems(rng)
    columns = {"tinylm 1T": (1, True), "tinylm 2T": (2, True), "OpenBLAS 1T": (1, False), "OpenBLAS 2T": (2, False)}
    best = {(name, column): float("inf") for name in cases for column in columns}
    peak_core = 0.0
    for _ in range(args.rounds):
        peak_core = max(peak_core, measure_peak(1))
        for name, (m, k, n, ours, blas) in cases.items():
            calls = max(3, args.calls // 10) if m * k * n >= 1 << 28 else args.calls
            for column, (threads, is_ours) in columns.items():
                time.sleep(0.02)  # lets the last implementation's spinning threads go idle first
                with threads_of(threads, is_ours):
                    best[name, column] = min(best[name, column], best_seconds(ours if is_ours else blas, calls))
    load_after = os.getloadavg()

    cores = os.cpu_count() or 1
    peak = cores * peak_core
    rows = []
    for name, (m, k, n, _, _) in cases.items():
        flops = 2.0 * m * k * n
        moved = 4.0 * (m * k + k * n + 2 * m * n)  # read A, B and C once, write C once
        row = {"product": name, "m": m, "k": k, "n": n, "flop_per_byte": flops / moved}
        for column in columns:
            row[column] = flops / best[name, column] / 1e9
        rows.append(row)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu_model(), "cores": cores, "blas": blas_library(),
        "kernel": gemm.kernel_info(), "numpy": np.__version__,
        "load_average_before": load_before, "load_average_after": load_after,
        "peak_one_core_gflops": peak_core, "peak_gflops": peak, "implied_clock_ghz": peak_core / FLOP_PER_CYCLE,
        "rounds": args.rounds, "calls": args.calls, "rows": rows,
    }
    report["clock_ghz_from_dependent_fma"] = clock_from_chain(args.rounds)
    if args.isa_paths:
        report["forward_step_one_thread_by_isa"] = isa_paths(args.calls, args.rounds)

    info = report["kernel"]
    print(f"{report['cpu']}, {cores} cores; micro-kernel {info['isa']} {info['mr']}x{info['nr']}, "
          f"KC {info['kc']}, MC {info['mc']}; {report['blas']}")
    print(f"peak: {peak_core:.1f} GFLOP/s a core (FMAs alone, implies {report['implied_clock_ghz']:.2f} GHz "
          f"at {FLOP_PER_CYCLE} flop/cycle), {peak:.1f} for {cores} cores")
    if report["clock_ghz_from_dependent_fma"]:
        print(f"clock from a dependent FMA chain (latency {FMA_LATENCY} cycles assumed): "
              f"{report['clock_ghz_from_dependent_fma']:.2f} GHz")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 minute)\n")
    print("| product | M x K x N | flop/byte | " + " | ".join(columns) + " | best of peak |")
    print("|---|---|---:|" + "---:|" * (len(columns) + 1))
    for row in rows:
        rates = " | ".join(f"{row[c]:.1f}" for c in columns)
        print(f"| {row['product']} | {row['m']} x {row['k']} x {row['n']} | {row['flop_per_byte']:.1f} | {rates} | "
              f"{max(row['tinylm 1T'], row['tinylm 2T']) / peak:.0%} |")
    for name, rate in report.get("forward_step_one_thread_by_isa", {}).items():
        print(f"forward step, one thread, {name} path: {rate:.1f} GFLOP/s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {args.out}")
    return report


if __name__ == "__main__":
    main()
