"""Every Cython kernel, fed arguments of random shapes, dtypes and values, either
answers or raises a clear ValueError, TypeError or IndexError naming itself; it never
crashes the process or hands back garbage where the reference refuses.

The wrappers in front of the kernels check everything the compiled loops assume
(dtypes, shapes, contiguity, ids and targets in range), so whatever reaches a loop is
safe to index without bounds checks; this fuzzes exactly that promise."""

import importlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinylm.backends import KERNELS

DTYPES = [np.float32, np.float64, np.int64, np.int32, np.uint8, np.bool_]
small_shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)


@st.composite
def arrays(draw):
    shape = draw(small_shapes)
    dtype = draw(st.sampled_from(DTYPES))
    values = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(-3, 9, size=shape)
    array = values.astype(dtype)
    if dtype in (np.float32, np.float64) and array.size and draw(st.booleans()):
        array.flat[0] = draw(st.sampled_from([np.inf, -np.inf, np.nan, 1e4]))
    return array


arguments = st.one_of(arrays(), arrays(), st.integers(-3, 9), st.floats(-2, 2), st.none(), st.booleans())

ARITY = {  # the number of positional arguments of each kernel
    "embedding_forward": 2, "embedding_backward": 3, "cross_entropy_forward": 3, "cross_entropy_backward": 5,
    "attention_softmax_forward": 4, "attention_softmax_backward": 3, "layer_norm_forward": 4,
    "layer_norm_backward": 5, "dropout_forward": 3, "dropout_backward": 3, "adam_update": 11,
    "lstm_layer_forward": 4, "lstm_cell_forward": 2, "gelu_forward": 1, "gelu_backward": 2,
}
CYTHON_KERNELS = sorted(name for name, where in KERNELS.items() if "cython" in where and name in ARITY)


def test_every_served_cython_kernel_is_fuzzed():
    served = {name for name, where in KERNELS.items() if "cython" in where}
    assert served - set(ARITY) <= {"lstm_layer_backward"}  # its saved tuple is fuzzed in test_kernel_lstm


def _load(spec):
    module, function = spec.split(":")
    return getattr(importlib.import_module(module), function)


@pytest.mark.parametrize("name", CYTHON_KERNELS)
@settings(suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_arguments_give_an_answer_or_a_clear_error(name, data):
    args = data.draw(st.lists(arguments, min_size=ARITY[name], max_size=ARITY[name]))
    compiled = _load(KERNELS[name]["cython"])
    try:
        compiled(*[a.copy() if isinstance(a, np.ndarray) else a for a in args])
    except (ValueError, TypeError, IndexError) as error:
        assert name.split("_")[0] in str(error), \
            f"{name}: the error does not name the op: {error}"
