"""The machine a report was measured on, and its roofs measured in the same run."""

from __future__ import annotations

import os
import platform
import time

import numpy as np

from tinylm.bench.timing import time_cpu


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_library() -> str:
    try:
        from threadpoolctl import threadpool_info

        libraries = [f"{i['internal_api']} {i.get('version') or ''} ({i['num_threads']} threads)".strip()
                     for i in threadpool_info() if i["user_api"] == "blas"]
        if libraries:
            return ", ".join(libraries)
    except ImportError:
        pass
    config = np.show_config(mode="dicts") if "mode" in np.show_config.__code__.co_varnames else {}
    blas = config.get("Build Dependencies", {}).get("blas", {})
    return f"{blas.get('name', 'unknown')} {blas.get('version', '')}".strip()


def gpu_name() -> str | None:
    try:
        import cupy

        properties = cupy.cuda.runtime.getDeviceProperties(0)
        return properties["name"].decode() if isinstance(properties["name"], bytes) else str(properties["name"])
    except Exception:  # no CuPy, no driver or no device: no GPU to report
        return None


def versions() -> dict:
    found = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("cupy", "torch"):
        try:
            found[name] = __import__(name).__version__
        except ImportError:
            found[name] = None
    return found


def header() -> dict:
    from tinylm import kernels

    try:
        import torch

        torch_threads = torch.get_num_threads()
    except ImportError:
        torch_threads = None
    facts = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "torch_threads": torch_threads,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "blas": blas_library(),
        "openmp": kernels.openmp_enabled(),
        "openmp_threads": kernels.get_num_threads(),
        "gpu": gpu_name(),
    }
    facts.update(versions())
    return facts


def measure_roofs(quick: bool = False) -> dict:
    """BLAS sgemm GFLOP/s (n×n float32 matmul) and copy GB/s (read + write of a large
    array): the ceilings against which each kernel's throughput is reported."""
    n = 512 if quick else 2048
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    gemm = min(time_cpu(lambda: a @ a, 1, 2 if quick else 5))
    size = (16 if quick else 256) << 20  # bytes
    source = np.ones(size // 4, dtype=np.float32)
    target = np.empty_like(source)
    copy = min(time_cpu(lambda: np.copyto(target, source), 1, 2 if quick else 5))
    return {"sgemm_gflops": 2 * n**3 / gemm / 1e9, "copy_gbs": 2 * size / copy / 1e9}


def set_threads(threads: int) -> None:
    """One thread count for every pool: tinylm's OpenMP, NumPy's BLAS and PyTorch. The
    BLAS count is the one the numpy and GPU backends use: the cython backend holds the BLAS
    at one thread while it is current (``tinylm.backends.set_blas_threads``)."""
    from tinylm import backends, kernels

    kernels.set_num_threads(threads)
    backends.set_blas_threads(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass
