"""The CUDA sources, ``kernels/cuda/*.cu``, as text, and their kernels' C signatures.

``SourceFile`` reads a ``.cu`` file with the common header pasted in, the text that
NVRTC and the CPU emulation both compile, and parses the ``extern "C" __global__``
declarations in it into ``Signature`` objects. ``check_arguments`` holds every launch's
arguments to the kernel's signature, because CuPy checks none of it (it passes whatever
it is given and ignores strides): a pointer parameter takes a C-contiguous array of the
pointee's dtype (writable, and overlapping no other argument, if the kernel writes
through it); a scalar parameter takes a NumPy scalar of exactly its C type
(``np.int32`` for ``int``, ``np.float32`` for ``float``).

Neither CuPy nor a compiler is needed here: ``resource_usage.py`` (nvcc), the launch
(``launch.py``) and the emulation (``emulation.py``) build on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from tinylm.kernels.checks import is_cupy

HERE = Path(__file__).resolve().parent
COMMON_HEADER = "tinylm_cuda_common.cuh"

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


class SourceFile:
    """One ``.cu`` file (a name in ``kernels/cuda/``, or a path): its text and its kernels."""

    def __init__(self, filename: str):
        self.path = HERE / filename

    @cached_property
    def text(self) -> str:
        """The source with ``#include "tinylm_cuda_common.cuh"`` pasted in (what NVRTC and
        the emulation compile: CuPy's cache key is the text, so it must hold everything).
        Read once per process, like the compiled module."""
        return expand_includes(self.path)

    @cached_property
    def kernels(self) -> dict[str, Signature]:
        return parse_kernels(self.text)

    def signature(self, name: str) -> Signature:
        """Kernel ``name``'s signature; a KeyError naming the kernels the file has."""
        signature = self.kernels.get(name)
        if signature is None:
            raise KeyError(f"{self.path.name}: no kernel named {name!r}; it has {', '.join(self.kernels)}")
        return signature


# ------------------------------------------------------------- argument checks


def _address_range(array) -> tuple[int, int]:
    start = array.data.ptr if is_cupy(array) else array.__array_interface__["data"][0]
    return start, start + array.nbytes


def check_arguments(signature: Signature, args) -> bool:
    """Check ``args`` against the C signature; True when the arrays are CuPy arrays."""
    name = signature.name
    if len(args) != len(signature.params):
        raise TypeError(f"{name}: takes {len(signature.params)} arguments, got {len(args)}")
    devices = set()
    ranges = []
    for param, value in zip(signature.params, args):
        if param.pointer:
            if not (isinstance(value, np.ndarray) or is_cupy(value)):
                raise TypeError(f"{name}: {param.name} ({param.declaration}) needs an array, "
                                f"got {type(value).__name__}")
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
