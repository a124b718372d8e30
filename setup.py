"""Builds tinylm's Cython kernels (kernels/cpu/*.pyx) as ``tinylm.kernels.cpu.<name>``.

``kernels/`` stays at the top of the repository and is installed as ``tinylm.kernels``:
``package_dir`` maps the folder into the package, with the CUDA sources (``kernels/cuda``)
as package data compiled at run time.

OpenMP: the compiler is asked to build and link a tiny OpenMP program with -fopenmp;
if it can, every kernel is compiled with it, and otherwise serially. The choice is
printed during the build and reported at run time by
``tinylm.kernels.openmp_enabled()``. Set ``TINYLM_NO_OPENMP=1`` to force a serial build.

-march=native: the kernels are compiled on the machine that runs them (pip builds them
at install), so they are compiled for its vector width when the compiler accepts the
flag: the vectorised loops run several times faster than with the x86-64 baseline's
4-wide SSE (benchmarks/NOTES.md). Set ``TINYLM_PORTABLE=1`` to build for the baseline
instead, e.g. for a wheel that other machines will run.
"""

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
CPU_KERNELS = sorted(p.stem for p in (HERE / "kernels" / "cpu").glob("*.pyx"))
OPENMP_PROBE = "#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n"


def compiler_supports_openmp(compiler) -> bool:
    """Compile and link the probe with -fopenmp; False on any failure."""
    if os.environ.get("TINYLM_NO_OPENMP"):
        return False
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "probe.c"
        source.write_text(OPENMP_PROBE)
        try:
            objects = compiler.compile([str(source)], output_dir=tmp, extra_postargs=["-fopenmp"])
            compiler.link_executable(objects, "probe", output_dir=tmp, extra_postargs=["-fopenmp"])
        except Exception:
            return False
    return True


def compiler_accepts(compiler, flag: str) -> bool:
    """Whether the compiler builds an empty translation unit with ``flag``."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "probe.c"
        source.write_text("int tinylm_probe(void) { return 0; }\n")
        try:
            compiler.compile([str(source)], output_dir=tmp, extra_postargs=[flag])
        except Exception:
            return False
    return True


class BuildExtWithOpenMP(build_ext):
    def build_extensions(self):
        openmp = compiler_supports_openmp(self.compiler)
        native = not os.environ.get("TINYLM_PORTABLE") and compiler_accepts(self.compiler, "-march=native")
        print(f"tinylm: building Cython kernels {'with' if openmp else 'without'} OpenMP, "
              f"for {'this CPU (-march=native)' if native else 'the baseline instruction set'}", file=sys.stderr)
        for ext in self.extensions:
            # -fno-trapping-math: lets GCC vectorise the branch-free exp of tinylm_math.h.
            # -ffp-contract=off: no fused multiply-adds, so a kernel rounds each step as the
            # NumPy reference does (with FMA, Adam's moments drifted 2e-5 from it in float32).
            # -fno-math-errno: sqrt need not set errno for a negative argument, so it is one
            # instruction and not a branch around a libm call, which kept Adam's loop from
            # vectorising. The results are the same.
            ext.extra_compile_args += ["-O3", "-fno-trapping-math", "-fno-math-errno", "-ffp-contract=off"] + (
                ["-march=native"] if native else [])
            if openmp:
                ext.extra_compile_args += ["-fopenmp"]
                ext.extra_link_args += ["-fopenmp"]
        super().build_extensions()


extensions = [
    Extension(
        f"tinylm.kernels.cpu.{name}",
        [f"kernels/cpu/{name}.pyx"],
        include_dirs=[np.get_include(), "kernels/cpu"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for name in CPU_KERNELS
]

setup(
    package_dir={"tinylm": "tinylm", "tinylm.kernels": "kernels"},
    packages=find_packages(include=["tinylm", "tinylm.*"])
    + ["tinylm.kernels", "tinylm.kernels.cpu", "tinylm.kernels.cuda"],
    package_data={
        "tinylm.kernels.cpu": ["*.pyx", "*.pxi", "*.h"],
        "tinylm.kernels.cuda": ["*.cu", "*.cuh", "*.h", "README.md"],  # CUDA sources, compiled at run time
    },
    ext_modules=cythonize(extensions, compiler_directives={"language_level": 3}),
    cmdclass={"build_ext": BuildExtWithOpenMP},
)
