"""What a launch wrapper (``embedding.py``, ``gelu.py``, ...) needs to run a kernel of
``kernels/cuda/*.cu``: the kernel variant for a dtype, the launch geometry and the launch.

Every wrapper checks its inputs (``tinylm.kernels.checks``), allocates its outputs with
the inputs' array module, chooses the block (``threads_for``) and the grid
(``blocks_for``) and calls ``CudaSource.launch``. Only that last step depends on where
the arrays live:

- CuPy arrays: the kernel runs on the GPU, from ``cupy.RawModule`` (NVRTC), compiled
  on first use and cached by CuPy.
- NumPy arrays: the same source runs through the CPU emulation (``emulation.py``).

Before either, the launch holds every argument to the kernel's C signature
(``source.py``). So the validation and the launch geometry the tests check on the CPU
are exactly the ones that run on the GPU.
"""

from __future__ import annotations

import threading

import numpy as np

from tinylm.kernels.checks import float_dtype, is_cupy
from tinylm.kernels.cuda.emulation import EmulatedModule
from tinylm.kernels.cuda.source import Signature, SourceFile, check_arguments

# Launch geometry defaults: whole warps, more of them on a GPU. On the CPU every thread
# of a block is an OS thread and every __syncthreads wakes them all, so blocks are small
# and few (the kernels loop over their work with grid-stride loops, so any grid is right).
GPU_THREADS, EMULATION_THREADS = 256, 64
GPU_MAX_BLOCKS, EMULATION_MAX_BLOCKS = 65535, 8

FLOAT_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


class CudaSource(SourceFile):
    """One ``kernels/cuda/<name>.cu`` file whose kernels can be launched: compiled by
    NVRTC for CuPy arrays, by the host compiler for NumPy arrays, each on first use."""

    def __init__(self, filename: str):
        super().__init__(filename)
        self._lock = threading.Lock()
        self._cupy_module = None
        self._emulation = None

    def launch(self, name: str, grid, block, args, shared_bytes: int = 0) -> None:
        """Run kernel ``name`` on ``args`` with ``grid`` blocks of ``block`` threads
        (ints or up-to-3-tuples), on the GPU if the arrays are CuPy arrays, else emulated."""
        signature = self.signature(name)
        grid, block = _dim3(grid), _dim3(block)
        on_gpu = check_arguments(signature, args)
        if grid[0] * grid[1] * grid[2] == 0:
            return  # nothing to do; CUDA refuses an empty grid
        if on_gpu:
            kernel = self._cupy().get_function(name)
            kernel(grid, block, tuple(args), shared_mem=int(shared_bytes))
        else:
            self._emulate(signature, grid, block, args, int(shared_bytes))

    def _cupy(self):
        with self._lock:
            if self._cupy_module is None:
                import cupy

                self._cupy_module = cupy.RawModule(code=self.text, options=("--std=c++17",))
            return self._cupy_module

    def _emulate(self, signature: Signature, grid, block, args, shared_bytes: int) -> None:
        with self._lock:
            if self._emulation is None:
                self._emulation = EmulatedModule(self.path.stem, self.text, self.kernels)
        self._emulation.launch(signature, grid, block, args, shared_bytes)


def _dim3(value) -> tuple[int, int, int]:
    dims = (int(value),) if np.isscalar(value) else tuple(int(v) for v in value)
    if not 1 <= len(dims) <= 3 or min(dims) < 0:
        raise ValueError(f"launch: a grid or block is 1 to 3 non-negative sizes, got {value!r}")
    return dims + (1,) * (3 - len(dims))


# ------------------------------------------------------------ kernel variants


def float_suffix(op: str, name: str, array) -> str:
    """"f32" or "f64", the kernel variant for ``array``'s dtype; a TypeError for others."""
    return FLOAT_SUFFIX[float_dtype(op, name, array)]


# -------------------------------------------------------------------- geometry


def on_gpu(array) -> bool:
    return is_cupy(array)


def threads_for(array, threads: int | None, row_length: int | None = None) -> int:
    """The block size: ``threads`` if given (whole warps, at most 1024), else the default
    for where ``array`` lives; for a kernel that gives each row one block, no more warps
    than the row of ``row_length`` elements can keep busy."""
    if threads is None:
        default = GPU_THREADS if on_gpu(array) else EMULATION_THREADS
        if row_length is not None:
            default = min(default, max(32, -(-int(row_length) // 32) * 32))
        return default
    threads = int(threads)
    if threads < 32 or threads > 1024 or threads % 32:
        raise ValueError(f"launch: threads per block must be a multiple of 32 in [32, 1024], got {threads}")
    return threads


def blocks_for(array, work_items: int, max_blocks: int | None = None) -> int:
    """How many blocks for ``work_items`` rows or chunks: one each, capped (the kernels'
    grid-stride loops take the rest)."""
    cap = max_blocks if max_blocks is not None else (GPU_MAX_BLOCKS if on_gpu(array) else EMULATION_MAX_BLOCKS)
    if int(cap) < 1:
        raise ValueError(f"launch: max_blocks must be at least 1, got {cap}")
    return max(0, min(int(work_items), int(cap)))
