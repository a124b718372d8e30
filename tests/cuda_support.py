"""What the CUDA tests of every kernel family share: the devices they run on (the CPU
emulation always, a GPU through CuPy when one is usable), hypothesis strategies for the
launch geometry, tolerances, and a fixture that makes any launch fail (for the tests
that a wrapper refuses bad input before launching).

Tolerances (relative, with an absolute floor scaled by the size of the values): float32
2e-5 (sums and exps in another order; FMA contraction on the GPU); float64 1e-10. A family
with a longer chain of operations states its own (LSTM, attention).
"""

import numpy as np
import pytest
from hypothesis import strategies as st

from tinylm.kernels.cuda import launch
from tinylm.kernels.cuda.emulation import emulation_unavailable_reason

EXAMPLES = 25  # per test and device: the emulation runs every GPU thread as an OS thread


def gpu_unavailable_reason():
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed (pip install 'tinylm[cuda]')"
    try:
        if not cupy.is_available():
            return "CuPy is installed but no usable GPU was found"
    except Exception as exc:  # a driver problem
        return f"no usable GPU ({type(exc).__name__}: {exc})"
    return None


class Device:
    """Where the kernels run: "emulated" (NumPy arrays, the CPU) or "gpu" (CuPy arrays)."""

    def __init__(self, name):
        self.name = name

    def require(self):
        reason = emulation_unavailable_reason() if self.name == "emulated" else gpu_unavailable_reason()
        if reason is not None:
            pytest.skip(f"{self.name}: {reason}")
        return self

    def put(self, value):
        if self.name == "gpu" and isinstance(value, np.ndarray):
            import cupy

            return cupy.asarray(value)
        return value

    @staticmethod
    def get(value):
        return value.get() if type(value).__module__.startswith("cupy") else value


DEVICES = [Device("emulated"), Device("gpu")]
devices = pytest.mark.parametrize("device", DEVICES, ids=lambda d: d.name)

# threads=None: the default for the device; max_blocks 1 forces every block to loop.
geometries = st.tuples(st.sampled_from([None, 32, 64, 96]), st.sampled_from([None, 1, 3]))
dtypes = st.sampled_from([np.float32, np.float64])
TOLERANCE = {np.float32: 2e-5, np.float64: 1e-10}


def close(got, expected, dtype, rtol=None, scale=1.0, name=""):
    """got ≈ expected: relative tolerance for the dtype, absolute floor rtol · scale."""
    rtol = rtol if rtol is not None else TOLERANCE[np.dtype(dtype).type]
    got = Device.get(got)
    assert got.shape == expected.shape and got.dtype == expected.dtype, (name, got.shape, got.dtype, expected.shape)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * scale, err_msg=name)


def strided(rng, shape, dtype, noncontiguous, scale=1.0):
    """Standard normal values (times scale); a stride-2 view of a larger array if asked."""
    shape = tuple(shape)
    if noncontiguous and shape:
        return (scale * rng.standard_normal(shape[:-1] + (2 * shape[-1],))).astype(dtype)[..., ::2]
    return (scale * rng.standard_normal(shape)).astype(dtype)


@pytest.fixture
def launches_refused(monkeypatch):
    """Any kernel launch fails: a wrapper that launched before refusing its input fails the test."""
    def launched(*args, **kwargs):
        raise AssertionError("the wrapper launched a kernel before refusing its input")

    monkeypatch.setattr(launch.CudaSource, "_emulate", launched)
    monkeypatch.setattr(launch.CudaSource, "_cupy", launched)
