"""Registers, shared memory and spills of every CUDA kernel, from nvcc's ptxas report.

    python -m tinylm.kernels.cuda.resource_usage                 # sm_90 and sm_80
    python -m tinylm.kernels.cuda.resource_usage --arch sm_90

Each ``kernels/cuda/*.cu`` is compiled, as the text NVRTC would get (the common header
pasted in, see source.py), with ``nvcc -cubin --resource-usage -Werror all-warnings``;
ptxas then reports per kernel the registers per thread, the static shared memory, the
stack frame and the bytes spilled to local memory. A kernel that spills, or uses many
registers (fewer blocks fit on a multiprocessor), is the one to look at. Dynamic
shared memory (the attention forward's tiles) is sized at launch and is not in this
report: see ``attention.shared_bytes``. Needs nvcc on PATH; no GPU.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tinylm.kernels.cuda.source import HERE, expand_includes

ARCHES = ("sm_90", "sm_80")


class CompileError(RuntimeError):
    pass


@dataclass
class Usage:
    kernel: str
    arch: str
    registers: int
    shared_bytes: int  # static __shared__ only
    stack_bytes: int
    spill_stores: int
    spill_loads: int


def sources() -> list[Path]:
    return sorted(HERE.glob("*.cu"))


def nvcc() -> str | None:
    return shutil.which("nvcc")


def compile_report(source: Path, arch: str) -> list[Usage]:
    """Compile ``source`` for ``arch`` (a CompileError with nvcc's message on failure,
    warnings included) and return ptxas's report for each of its kernels."""
    compiler = nvcc()
    if compiler is None:
        raise CompileError("nvcc is not on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        pasted = Path(tmp) / source.name
        pasted.write_text(expand_includes(source))
        command = [compiler, f"-arch={arch}", "-cubin", "--resource-usage", "-Werror", "all-warnings",
                   "-o", str(Path(tmp) / f"{source.stem}.cubin"), str(pasted)]
        result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise CompileError(f"nvcc -arch={arch} {source.name} failed:\n{result.stdout}{result.stderr}")
    return parse_ptxas(result.stdout + result.stderr, arch)


def parse_ptxas(text: str, arch: str) -> list[Usage]:
    usages, current = [], None
    for line in text.splitlines():
        match = re.search(r"Function properties for (\w+)", line)
        if match:
            current = {"kernel": match.group(1)}
            continue
        if current is None:
            continue
        match = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if match:
            current.update(stack_bytes=int(match.group(1)), spill_stores=int(match.group(2)),
                           spill_loads=int(match.group(3)))
            continue
        match = re.search(r"Used (\d+) registers", line)
        if match:
            shared = re.search(r"(\d+) bytes smem", line)
            usages.append(Usage(current["kernel"], arch, int(match.group(1)), int(shared.group(1)) if shared else 0,
                                current.get("stack_bytes", 0), current.get("spill_stores", 0),
                                current.get("spill_loads", 0)))
            current = None
    return sorted(usages, key=lambda u: u.kernel)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinylm.kernels.cuda.resource_usage",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=list(ARCHES), help="GPU architectures (default: sm_90 sm_80)")
    args = parser.parse_args(argv)
    if nvcc() is None:
        print("resource_usage: nvcc is not on PATH; install the CUDA toolkit", file=sys.stderr)
        return 1
    print("| file | kernel | arch | registers | static smem (B) | stack (B) | spill stores (B) | spill loads (B) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for source in sources():
        for arch in args.arch:
            for u in compile_report(source, arch):
                print(f"| {source.name} | {u.kernel} | {u.arch} | {u.registers} | {u.shared_bytes} | {u.stack_bytes} "
                      f"| {u.spill_stores} | {u.spill_loads} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
