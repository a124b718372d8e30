"""One kernel, one signature: every backend's implementation of a registered kernel takes
the reference's arguments, by the same names, in the same order, with the same defaults.

Read from the code itself: ``inspect`` for the Python and Cython entry points, and the
parsed C signatures of the CUDA sources, so a renamed or reordered argument anywhere
fails here and not in a confusing numerical test.
"""

import importlib
import inspect
import re
from pathlib import Path

import pytest

from tinylm import backends
from tinylm.kernels.cuda.source import expand_includes, parse_kernels

ROOT = Path(__file__).parents[1]
LAUNCH_OPTIONS = {"threads", "max_blocks"}  # a CUDA wrapper's keyword-only launch geometry


def implementation(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def positional(function) -> list[tuple[str, object]]:
    return [(p.name, p.default) for p in inspect.signature(function).parameters.values() if p.kind != p.KEYWORD_ONLY]


REGISTERED = [(name, backend) for name, table in backends.KERNELS.items() for backend in table if backend != "numpy"]


@pytest.mark.parametrize("name, backend", REGISTERED, ids=[f"{n}[{b}]" for n, b in REGISTERED])
def test_every_backend_takes_the_reference_arguments(name, backend):
    reference = implementation(backends.KERNELS[name]["numpy"])
    fast = implementation(backends.KERNELS[name][backend])
    assert positional(fast) == positional(reference)
    extras = {p.name for p in inspect.signature(fast).parameters.values() if p.kind == p.KEYWORD_ONLY}
    assert extras <= (LAUNCH_OPTIONS if backend == "cuda" else set()), extras


def test_every_registered_kernel_is_called_by_the_package():
    """A kernel in the registry that no op, layer, optimizer or model asks for is dead code."""
    source = "\n".join(p.read_text() for p in (ROOT / "tinylm").rglob("*.py") if p.name != "backends.py")
    called = set(re.findall(r"""kernel(?:_for)?\(\s*["'](\w+)["']""", source))
    assert set(backends.KERNELS) <= called, sorted(set(backends.KERNELS) - called)


def cuda_kernels():
    for path in sorted((ROOT / "kernels" / "cuda").glob("*.cu")):
        for kernel, signature in parse_kernels(expand_includes(path)).items():
            family = next((name for name in backends.KERNELS if kernel.startswith(name + "_")), None)
            if family is not None:
                yield kernel, family, [p.name for p in signature.params]


CUDA_KERNELS = list(cuda_kernels())


@pytest.mark.parametrize("kernel, family, params", CUDA_KERNELS, ids=[k for k, _, _ in CUDA_KERNELS])
def test_a_cuda_kernel_keeps_the_reference_order_of_the_arguments_it_shares(kernel, family, params):
    """The C kernel also takes outputs and sizes; the reference's arguments among its own
    come in the reference's order."""
    reference = [name for name, _ in positional(implementation(backends.KERNELS[family]["numpy"]))]
    shared = [p for p in params if p in reference]
    assert shared == [p for p in reference if p in shared], (shared, reference)


def test_the_lstm_cell_backward_names_its_gradients_alike_everywhere():
    """What reaches one step: dh_out (from the layer's output), dh_next (from the next step)
    and dc, in the reference, the Cython cell loop and the CUDA kernel."""
    from tinylm.reference.lstm import lstm_cell_backward

    names = ["dh_out", "dh_next", "dc"]
    assert list(inspect.signature(lstm_cell_backward).parameters)[:3] == names
    pyx = (ROOT / "kernels" / "cpu" / "lstm.pyx").read_text()
    row = re.search(r"cdef inline void _cell_backward_row\((.*?)\)", pyx, re.S).group(1)
    assert [re.split(r"[\s*]+", arg.strip())[-1] for arg in row.split(",")][:3] == names
    cuda = parse_kernels(expand_includes(ROOT / "kernels" / "cuda" / "lstm.cu"))
    for kernel in ("lstm_cell_backward_f32", "lstm_cell_backward_f64"):
        assert [p.name for p in cuda[kernel].params][:3] == names
