"""Every Cython kernel, fed arguments of random shapes, dtypes and values, either
answers or raises a clear ValueError, TypeError or IndexError naming itself; it never
crashes the process or hands back garbage where the reference refuses.

The wrappers in front of the kernels check everything the compiled loops assume
(dtypes, shapes, contiguity, ids and targets in range), so whatever reaches a loop is
safe to index without bounds checks; this fuzzes exactly that promise."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import KERNEL_ARITY, fuzz_arguments

from tinylm.backends import KERNELS, kernel_for

arguments = fuzz_arguments()
CYTHON_KERNELS = sorted(name for name, where in KERNELS.items() if "cython" in where and name in KERNEL_ARITY)


def test_every_served_cython_kernel_is_fuzzed():
    served = {name for name, where in KERNELS.items() if "cython" in where}
    assert served - set(KERNEL_ARITY) <= {"lstm_layer_backward"}  # its saved tuple is fuzzed in test_kernel_lstm


@pytest.mark.parametrize("name", CYTHON_KERNELS)
@settings(suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_arguments_give_an_answer_or_a_clear_error(name, data):
    args = data.draw(st.lists(arguments, min_size=KERNEL_ARITY[name], max_size=KERNEL_ARITY[name]))
    compiled = kernel_for(name, "cython", fallback=False)
    try:
        compiled(*[a.copy() if isinstance(a, np.ndarray) else a for a in args])
    except (ValueError, TypeError, IndexError) as error:
        assert name.split("_")[0] in str(error), \
            f"{name}: the error does not name the op: {error}"
