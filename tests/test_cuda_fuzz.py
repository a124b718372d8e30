"""Every CUDA kernel wrapper, fed arguments of random shapes, dtypes and values, either
answers or raises a clear ValueError, TypeError or IndexError naming its op; run through
the CPU emulation, whose guard bands turn any write outside an argument into a failure
here, and whose NaN guard bytes poison any read outside one.

This fuzzes the promise the kernels rely on: whatever reaches a launch is safe to index
without bounds checks."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import KERNEL_ARITY, fuzz_arguments

from tinylm.backends import KERNELS, kernel_for
from tinylm.kernels.cuda.emulation import emulation_unavailable_reason

reason = emulation_unavailable_reason()
pytestmark = pytest.mark.skipif(reason is not None, reason=f"CUDA emulation unavailable: {reason}")

arguments = fuzz_arguments(strided=True)
CUDA_KERNELS = sorted(name for name, where in KERNELS.items() if "cuda" in where and name in KERNEL_ARITY)


def test_every_cuda_kernel_is_fuzzed():
    served = {name for name, where in KERNELS.items() if "cuda" in where}
    assert served - set(KERNEL_ARITY) <= {"lstm_layer_backward"}  # its saved tuple: test_kernel_lstm


@pytest.mark.parametrize("name", CUDA_KERNELS)
@settings(max_examples=30)
@given(data=st.data())
def test_random_arguments_give_an_answer_or_a_clear_error(name, data):
    args = data.draw(st.lists(arguments, min_size=KERNEL_ARITY[name], max_size=KERNEL_ARITY[name]))
    kernel = kernel_for(name, "cuda", fallback=False)
    try:
        kernel(*[a.copy() if isinstance(a, np.ndarray) else a for a in args])
    except (ValueError, TypeError, IndexError) as error:
        assert name.split("_")[0] in str(error) or name in str(error) or "dropout" in str(error), \
            f"{name}: the error does not name the op: {error!r}"
