"""Every CUDA kernel wrapper, fed arguments of random shapes, dtypes and values, either
answers or raises a clear ValueError, TypeError or IndexError naming its op; run through
the CPU emulation, whose guard bands turn any write outside an argument into a failure
here, and whose NaN guard bytes poison any read outside one.

This fuzzes the promise the kernels rely on: whatever reaches a launch is safe to index
without bounds checks."""

import importlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinylm.backends import KERNELS
from tinylm.kernels.cuda import launch

reason = launch.emulation_unavailable_reason()
pytestmark = pytest.mark.skipif(reason is not None, reason=f"CUDA emulation unavailable: {reason}")

DTYPES = [np.float32, np.float64, np.int64, np.int32, np.uint8, np.bool_]
small_shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)


@st.composite
def arrays(draw):
    shape = draw(small_shapes)
    dtype = draw(st.sampled_from(DTYPES))
    array = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(-3, 9, size=shape).astype(dtype)
    if dtype in (np.float32, np.float64) and array.size and draw(st.booleans()):
        array.flat[0] = draw(st.sampled_from([np.inf, -np.inf, np.nan, 1e4]))
    if array.ndim and array.shape[-1] > 1 and draw(st.booleans()):
        array = array[..., ::2]  # a strided view
    return array


arguments = st.one_of(arrays(), arrays(), st.integers(-3, 9), st.floats(-2, 2), st.none(), st.booleans())

ARITY = {  # positional arguments of each kernel
    "embedding_forward": 2, "embedding_backward": 3, "cross_entropy_forward": 3, "cross_entropy_backward": 5,
    "attention_softmax_forward": 4, "attention_softmax_backward": 3, "layer_norm_forward": 4,
    "layer_norm_backward": 5, "dropout_forward": 3, "dropout_backward": 3, "adam_update": 11,
    "lstm_layer_forward": 4, "lstm_cell_forward": 2, "causal_attention_forward": 4, "causal_attention_backward": 7,
}
CUDA_KERNELS = sorted(name for name, where in KERNELS.items() if "cuda" in where and name in ARITY)


def test_every_cuda_kernel_is_fuzzed():
    served = {name for name, where in KERNELS.items() if "cuda" in where}
    assert served - set(ARITY) <= {"lstm_layer_backward"}  # its saved tuple: test_cuda_validation


def _load(spec):
    module, function = spec.split(":")
    return getattr(importlib.import_module(module), function)


@pytest.mark.parametrize("name", CUDA_KERNELS)
@settings(max_examples=30)
@given(data=st.data())
def test_random_arguments_give_an_answer_or_a_clear_error(name, data):
    args = data.draw(st.lists(arguments, min_size=ARITY[name], max_size=ARITY[name]))
    kernel = _load(KERNELS[name]["cuda"])
    try:
        kernel(*[a.copy() if isinstance(a, np.ndarray) else a for a in args])
    except (ValueError, TypeError, IndexError) as error:
        assert name.split("_")[0] in str(error) or name in str(error) or "dropout" in str(error), \
            f"{name}: the error does not name the op: {error!r}"
