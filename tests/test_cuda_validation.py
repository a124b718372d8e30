"""The CUDA launch wrappers refuse bad input before any launch: out-of-range ids or
targets are an IndexError naming the value, bad shapes a ValueError, wrong dtypes a
TypeError, each naming the op. A kernel can then assume its inputs and never reads or
writes outside them. No compiler or GPU is needed: launching is patched to fail, so a
wrapper that launched before refusing would fail these tests.

Here: what every wrapper shares (launch geometry, NumPy and CuPy arrays never mixed,
nothing imported at import time). Each family's own refusals are in its file,
``tests/test_kernel_<family>.py``.
"""

import numpy as np
import pytest

from tinylm.kernels.cuda import (
    attention_softmax,
    dropout,
    embedding,
)

pytestmark = pytest.mark.usefixtures("launches_refused")

f32 = np.float32


def test_launch_geometry_is_checked():
    with pytest.raises(ValueError, match="threads per block must be a multiple of 32 in \\[32, 1024\\], got 48"):
        attention_softmax.attention_softmax_forward(np.zeros((2, 3), f32), 1.0, threads=48)
    with pytest.raises(ValueError, match="max_blocks must be at least 1"):
        dropout.dropout_forward(np.zeros(3, f32), 0.5, 0, max_blocks=0)


def test_numpy_and_cupy_arrays_are_not_mixed(monkeypatch):
    class FakeCupyArray:  # what as_array sees of a CuPy array: its type's module
        __module__ = "cupy._core.core"

    with pytest.raises(TypeError, match="embedding_forward: ids is a CuPy array but the other inputs are NumPy arrays"):
        embedding.embedding_forward(np.zeros((3, 2), f32), FakeCupyArray())


def test_importing_the_cuda_modules_imports_neither_cupy_nor_a_compiler():
    import subprocess
    import sys

    code = ("import sys, tinylm, tinylm.backends as b, importlib\n"
            "for impl in b.KERNELS.values():\n"
            "    if 'cuda' in impl: importlib.import_module(impl['cuda'].split(':')[0])\n"
            "import tinylm.kernels.cuda.resource_usage\n"
            "assert 'cupy' not in sys.modules, 'cupy was imported'\n"
            "print(sorted(m for m in sys.modules if m.startswith('tinylm.kernels.cuda.')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "tinylm.kernels.cuda.causal_attention" in result.stdout
