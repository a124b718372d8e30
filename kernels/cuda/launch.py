"""Compiling and launching the kernels of ``kernels/cuda/*.cu``, on a GPU or emulated.

Every launch wrapper (``embedding.py``, ``dropout.py``, ...) checks its inputs
(``tinylm.kernels.checks``),
allocates its outputs with the inputs' array module, chooses the grid and the block,
and calls ``launch``. Only that last step depends on where the arrays live:

- CuPy arrays: the kernel runs on the GPU, from ``cupy.RawModule`` (NVRTC), compiled
  on first use and cached by CuPy.
- NumPy arrays: the same ``.cu`` source is compiled by the host C++ compiler with
  ``tinylm_cuda_emulation.h`` force-included and OpenMP, once per source and cached on
  disk, and each block runs as an OpenMP team (see that header for what it can and
  cannot check). Each array argument is copied into a buffer with guard bands on both
  sides; a write outside the argument is an error, a read outside reads NaN.

So the validation and the launch geometry the tests check on the CPU are exactly the
ones that run on the GPU.

``launch`` also checks each argument against the kernel's C signature, parsed from the
``extern "C" __global__`` declaration: a pointer parameter takes a C-contiguous array
of the matching dtype (writable, and overlapping no other argument, if the kernel writes
it), a scalar parameter takes a NumPy scalar of exactly its C type (``np.int32`` for
``int``, ``np.float32`` for ``float``). CuPy checks none of this: it passes whatever it
is given and ignores strides.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np

from tinylm.kernels.checks import float_dtype, is_cupy

HERE = Path(__file__).resolve().parent
COMMON_HEADER = "tinylm_cuda_common.cuh"
EMULATION_HEADER = HERE / "tinylm_cuda_emulation.h"

# C types a kernel parameter may have, and the NumPy dtype that matches each.
C_TYPES = {
    "float": np.float32,
    "double": np.float64,
    "int": np.int32,
    "unsigned int": np.uint32,
    "long long": np.int64,
    "unsigned long long": np.uint64,
    "unsigned char": np.uint8,
}
CTYPES_SCALARS = {
    "float": ctypes.c_float,
    "double": ctypes.c_double,
    "int": ctypes.c_int,
    "unsigned int": ctypes.c_uint,
    "long long": ctypes.c_longlong,
    "unsigned long long": ctypes.c_ulonglong,
    "unsigned char": ctypes.c_ubyte,
}

# Launch geometry defaults: whole warps, more of them on a GPU. On the CPU every thread
# of a block is an OS thread and every __syncthreads wakes them all, so blocks are small
# and few (the kernels loop over their work with grid-stride loops, so any grid is right).
GPU_THREADS, EMULATION_THREADS = 256, 64
GPU_MAX_BLOCKS, EMULATION_MAX_BLOCKS = 65535, 8
GUARD_BYTES = 256  # on each side of every array argument, in the emulation


class EmulationUnavailable(RuntimeError):
    """No host C++ compiler with OpenMP: the emulation cannot build the kernels."""


# ------------------------------------------------------------------ signatures


@dataclass(frozen=True)
class Param:
    declaration: str  # as written in the source, e.g. "const float* __restrict__ x"
    name: str
    c_type: str  # the base type, a key of C_TYPES
    pointer: bool
    const: bool  # for a pointer: the kernel only reads through it

    @property
    def dtype(self):
        return np.dtype(C_TYPES[self.c_type])


@dataclass(frozen=True)
class Signature:
    name: str
    params: tuple[Param, ...]


_KERNEL_RE = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s+)?(\w+)\s*\(([^)]*)\)')


def _parse_param(kernel: str, text: str) -> Param:
    declaration = " ".join(text.split())
    tokens = declaration.replace("*", " * ").replace("__restrict__", " ").split()
    name = tokens[-1]
    pointer = "*" in tokens
    const = "const" in tokens[: tokens.index("*")] if pointer else False
    c_type = " ".join(t for t in tokens[:-1] if t not in ("const", "*"))
    if c_type not in C_TYPES or tokens.count("*") > 1:
        raise ValueError(f"{kernel}: parameter {declaration!r} has a type the launcher does not know ({c_type!r})")
    return Param(declaration, name, c_type, pointer, const)


def parse_kernels(source: str) -> dict[str, Signature]:
    """The ``extern "C" __global__`` kernels of a CUDA source, by name."""
    found = {}
    for match in _KERNEL_RE.finditer(source):
        name, params = match.group(1), match.group(2).strip()
        parsed = tuple(_parse_param(name, p) for p in params.split(",")) if params else ()
        found[name] = Signature(name, parsed)
    return found


# --------------------------------------------------------------------- sources


class CudaSource:
    """One ``kernels/cuda/<name>.cu`` file: its text, its kernels, its compiled forms."""

    def __init__(self, filename: str):
        self.path = HERE / filename
        self._lock = threading.Lock()
        self._cupy_module = None
        self._emulation = None

    @cached_property
    def text(self) -> str:
        """The source with ``#include "tinylm_cuda_common.cuh"`` pasted in (what NVRTC and
        the emulation compile: CuPy's cache key is the text, so it must hold everything).
        Read once per process, like the compiled module."""
        return expand_includes(self.path)

    @cached_property
    def kernels(self) -> dict[str, Signature]:
        return parse_kernels(self.text)

    def launch(self, name: str, grid, block, args, shared_bytes: int = 0) -> None:
        """Run kernel ``name`` on ``args`` with ``grid`` blocks of ``block`` threads
        (ints or up-to-3-tuples), on the GPU if the arrays are CuPy arrays, else emulated."""
        signature = self.kernels.get(name)
        if signature is None:
            raise KeyError(f"{self.path.name}: no kernel named {name!r}; it has {', '.join(self.kernels)}")
        grid, block = _dim3(grid), _dim3(block)
        on_gpu = _check_arguments(signature, args)
        if grid[0] * grid[1] * grid[2] == 0:
            return  # nothing to do; CUDA refuses an empty grid
        if on_gpu:
            kernel = self._cupy().get_function(name)
            kernel(grid, block, tuple(args), shared_mem=int(shared_bytes))
        else:
            self._emulate(signature, grid, block, args, int(shared_bytes))

    # -- GPU

    def _cupy(self):
        with self._lock:
            if self._cupy_module is None:
                import cupy

                self._cupy_module = cupy.RawModule(code=self.text, options=("--std=c++17",))
            return self._cupy_module

    # -- CPU

    def _emulate(self, signature: Signature, grid, block, args, shared_bytes: int) -> None:
        library = self._emulation_library()
        function = getattr(library, f"tinylm_emulate_{signature.name}")
        guarded, c_args = [], []
        for param, value in zip(signature.params, args):
            if param.pointer:
                buffer = _Guarded(value)
                guarded.append((param, buffer))
                c_args.append(ctypes.c_void_p(buffer.address))
            else:
                c_args.append(CTYPES_SCALARS[param.c_type](value.item()))
        with _EMULATION_LOCK:  # the emulated blocks share static storage: one launch at a time
            error = function(*grid, *block, ctypes.c_size_t(shared_bytes), *c_args)
        if error:
            raise RuntimeError(f"{signature.name}: emulated launch failed: {EMULATION_ERRORS.get(error, error)} "
                               f"(grid {grid}, block {block}, {shared_bytes} bytes of shared memory)")
        for param, buffer in guarded:
            buffer.finish(signature.name, param)

    def _emulation_library(self):
        with self._lock:
            if self._emulation is None:
                path = build_emulation(self.path.stem, self.text, self.kernels)
                library = ctypes.CDLL(str(path))
                for signature in self.kernels.values():
                    function = getattr(library, f"tinylm_emulate_{signature.name}")
                    function.restype = ctypes.c_int
                    function.argtypes = [ctypes.c_uint] * 6 + [ctypes.c_size_t] + [
                        ctypes.c_void_p if p.pointer else CTYPES_SCALARS[p.c_type] for p in signature.params]
                self._emulation = library
            return self._emulation


def expand_includes(path: Path) -> str:
    """The file's text with each ``#include "x"`` of a file beside it pasted in."""
    lines = []
    for line in path.read_text().splitlines():
        match = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
        if match and (path.parent / match.group(1)).is_file():
            lines.append(f"// ---- begin {match.group(1)}")
            lines.append(expand_includes(path.parent / match.group(1)))
            lines.append(f"// ---- end {match.group(1)}")
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def _dim3(value) -> tuple[int, int, int]:
    dims = (int(value),) if np.isscalar(value) else tuple(int(v) for v in value)
    if not 1 <= len(dims) <= 3 or min(dims) < 0:
        raise ValueError(f"launch: a grid or block is 1 to 3 non-negative sizes, got {value!r}")
    return dims + (1,) * (3 - len(dims))


# ------------------------------------------------------------- argument checks


def _address_range(array) -> tuple[int, int]:
    start = array.data.ptr if is_cupy(array) else array.__array_interface__["data"][0]
    return start, start + array.nbytes


def _check_arguments(signature: Signature, args) -> bool:
    """Check ``args`` against the C signature; True when the arrays are CuPy arrays."""
    name = signature.name
    if len(args) != len(signature.params):
        raise TypeError(f"{name}: takes {len(signature.params)} arguments, got {len(args)}")
    devices = set()
    ranges = []
    for param, value in zip(signature.params, args):
        if param.pointer:
            if not (isinstance(value, np.ndarray) or is_cupy(value)):
                raise TypeError(f"{name}: {param.name} ({param.declaration}) needs an array, got {type(value).__name__}")
            devices.add("gpu" if is_cupy(value) else "cpu")
            if value.dtype != param.dtype:
                raise TypeError(f"{name}: {param.name} ({param.declaration}) needs {param.dtype}, got {value.dtype}")
            if not value.flags.c_contiguous:
                raise ValueError(f"{name}: {param.name} must be C-contiguous (the kernel ignores strides)")
            if not param.const and isinstance(value, np.ndarray) and not value.flags.writeable:
                raise ValueError(f"{name}: {param.name} is written by the kernel but is read-only")
            ranges.append((param, _address_range(value)))
        else:
            if type(value) is not param.dtype.type:
                raise TypeError(f"{name}: {param.name} ({param.declaration}) needs a NumPy {param.dtype} scalar, "
                                f"got {type(value).__name__}")
    if len(devices) > 1:
        raise TypeError(f"{name}: arrays must all be NumPy (emulated) or all CuPy (GPU), not a mix")
    for param, (start, stop) in ranges:  # a written array must not overlap any other argument
        if param.const or start == stop:
            continue
        for other, (other_start, other_stop) in ranges:
            if other is not param and other_start != other_stop and start < other_stop and other_start < stop:
                raise ValueError(f"{name}: {param.name} is written by the kernel and overlaps {other.name}")
    return devices == {"gpu"}


# ------------------------------------------------------------------ emulation

_EMULATION_LOCK = threading.Lock()
EMULATION_ERRORS = {
    1: "bad geometry (an empty block, or more than 1024 threads)",
    2: "more than 48 KiB of dynamic shared memory",
    3: "OpenMP started fewer threads than the block needs (is OMP_THREAD_LIMIT set?)",
}
EMULATION_FLAGS = ("-x", "c++", "-std=c++17", "-O2", "-fopenmp", "-fPIC", "-shared", "-w")


class _Guarded:
    """An array argument copied into the middle of a larger buffer whose two ends (the
    guard bands) hold 0xFF bytes, a NaN as float or double."""

    def __init__(self, array: np.ndarray):
        self.array = array
        self.original = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
        self.buffer = np.full(self.original.size + 2 * GUARD_BYTES, 0xFF, dtype=np.uint8)
        self.buffer[GUARD_BYTES : GUARD_BYTES + self.original.size] = self.original
        self.address = self.buffer.ctypes.data + GUARD_BYTES

    def finish(self, kernel: str, param: Param) -> None:
        inside = self.buffer[GUARD_BYTES : GUARD_BYTES + self.original.size]
        before, after = self.buffer[:GUARD_BYTES], self.buffer[GUARD_BYTES + self.original.size :]
        if not ((before == 0xFF).all() and (after == 0xFF).all()):
            raise RuntimeError(f"{kernel}: the kernel wrote outside its argument {param.name} "
                               f"({self.array.dtype} {self.array.shape}) in the emulation")
        if param.const:
            if not np.array_equal(inside, self.original):
                raise RuntimeError(f"{kernel}: the kernel wrote into {param.name}, declared const")
        else:
            self.array.reshape(-1).view(np.uint8)[...] = inside


def compiler() -> str:
    return os.environ.get("CXX", "g++")


@lru_cache(maxsize=None)
def emulation_unavailable_reason() -> str | None:
    """None when the host compiler builds and runs an OpenMP library, else why not."""
    limit = os.environ.get("OMP_THREAD_LIMIT", "")
    if limit.strip().isdigit() and int(limit) < 256:
        return f"OMP_THREAD_LIMIT={limit}: a block of up to 256 threads must run as one OpenMP team"
    cxx = compiler()
    if shutil.which(cxx) is None:
        return f"no host C++ compiler ({cxx!r} is not on PATH; set CXX)"
    probe = '#include <omp.h>\nextern "C" int probe(void) { return omp_get_max_threads() > 0; }\n'
    with tempfile.TemporaryDirectory() as tmp:
        source, library = Path(tmp) / "probe.cpp", Path(tmp) / "probe.so"
        source.write_text(probe)
        result = subprocess.run([cxx, *EMULATION_FLAGS, str(source), "-o", str(library)], capture_output=True, text=True)
        if result.returncode != 0:
            return f"{cxx} cannot build with -fopenmp: {result.stderr.strip().splitlines()[-1:]}"
        try:
            if ctypes.CDLL(str(library)).probe() != 1:
                return "the OpenMP probe library did not run"
        except OSError as exc:
            return f"the OpenMP probe library does not load: {exc}"
    return None


def cache_dir() -> Path:
    """``$TINYLM_CACHE_DIR/cuda-emulation``, else ``~/.cache/tinylm/cuda-emulation``, else
    a folder in the temporary directory."""
    base = os.environ.get("TINYLM_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "tinylm")
    for candidate in (Path(base), Path(tempfile.gettempdir()) / f"tinylm-{os.getuid()}"):
        path = candidate / "cuda-emulation"
        try:
            path.mkdir(parents=True, exist_ok=True)
            if os.access(path, os.W_OK):
                return path
        except OSError:
            continue
    raise EmulationUnavailable("no writable folder for the emulation's compiled kernels (set TINYLM_CACHE_DIR)")


def launcher_source(text: str, kernels: dict[str, Signature]) -> str:
    """The source plus one ``extern "C"`` launcher per kernel: (grid, block, shared
    bytes, the kernel's own parameters) -> runs every block of the grid."""
    lines = [text, "", "// ---- emulation launchers, generated by kernels/cuda/launch.py"]
    for signature in kernels.values():
        params = "".join(f", {p.declaration}" for p in signature.params)
        names = ", ".join(p.name for p in signature.params)
        lines += [
            f'extern "C" int tinylm_emulate_{signature.name}(unsigned gx, unsigned gy, unsigned gz, '
            f"unsigned bx, unsigned by, unsigned bz, size_t shared_bytes{params}) {{",
            f"    return tinylm_emu::run_grid(dim3(gx, gy, gz), dim3(bx, by, bz), shared_bytes, "
            f"[&]() {{ {signature.name}({names}); }});",
            "}",
        ]
    return "\n".join(lines) + "\n"


def build_emulation(stem: str, text: str, kernels: dict[str, Signature]) -> Path:
    """Compile ``text`` for the CPU (cached by a hash of everything the compiler sees)."""
    reason = emulation_unavailable_reason()
    if reason is not None:
        raise EmulationUnavailable(f"CUDA emulation of {stem}.cu: {reason}")
    source = launcher_source(text, kernels)
    header = EMULATION_HEADER.read_text()
    version = subprocess.run([compiler(), "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join([source, header, " ".join(EMULATION_FLAGS), version]).encode()).hexdigest()[:16]
    target = cache_dir() / f"{stem}-{key}.so"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cpp = Path(tmp) / f"{stem}.cpp"
        cpp.write_text(source)
        built = Path(tmp) / target.name
        command = [compiler(), *EMULATION_FLAGS, "-include", str(EMULATION_HEADER), str(cpp), "-o", str(built)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"CUDA emulation: compiling {stem}.cu failed:\n{result.stderr[-4000:]}")
        os.replace(built, target)  # atomic: another process never loads half a file
    return target


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


# ------------------------------------------------- helpers for the wrappers

FLOAT_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


def float_suffix(op: str, name: str, array) -> str:
    """"f32" or "f64", the kernel variant for ``array``'s dtype; a TypeError for others."""
    return FLOAT_SUFFIX[float_dtype(op, name, array)]
