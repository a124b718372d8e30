"""Bad input raises ValueError/TypeError whose message names the op and the shapes or dtypes."""

import numpy as np
import pytest

import tinylm
from tinylm import ops


def test_mismatched_shapes_name_the_op_and_both_shapes():
    a, b = tinylm.tensor(np.ones((3, 4))), tinylm.tensor(np.ones((5,)))
    with pytest.raises(ValueError, match=r"add: shapes \(3, 4\) and \(5,\) cannot be broadcast"):
        a + b
    with pytest.raises(ValueError, match=r"mul: shapes"):
        a * b


def test_matmul_inner_sizes():
    a, b = tinylm.tensor(np.ones((3, 4))), tinylm.tensor(np.ones((5, 6)))
    with pytest.raises(ValueError, match=r"^matmul: \(3, 4\) @ \(5, 6\): inner sizes differ$"):
        a @ b


def test_dtypes_do_not_mix_silently():
    a = tinylm.tensor(np.ones(2, dtype=np.float32))
    b = tinylm.tensor(np.ones(2, dtype=np.float64))
    with pytest.raises(TypeError, match=r"sub: dtypes differ \(float32 \(2,\) and float64 \(2,\)\)"):
        a - b
    with pytest.raises(TypeError, match="float scalar"):
        tinylm.tensor([1, 2]) * 0.5


def test_backward_on_a_non_scalar_needs_a_gradient():
    x = tinylm.tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(ValueError, match=r"backward: output of shape \(2, 3\) is not a scalar"):
        (x * 2.0).backward()
    with pytest.raises(ValueError, match=r"backward: grad has shape \(3,\)"):
        (x * 2.0).backward(np.ones(3, dtype=np.float32))


def test_only_float_tensors_can_require_grad():
    with pytest.raises(TypeError, match="int64"):
        tinylm.tensor([1, 2], requires_grad=True)


class _FakeGPUArray(np.ndarray):
    """A NumPy array that reports itself as CuPy's, to test the device check without a GPU."""


_FakeGPUArray.__module__ = "cupy._core.core"


def test_a_cpu_tensor_meeting_a_gpu_tensor_names_both():
    cpu = tinylm.tensor(np.ones(3))
    gpu = tinylm.Tensor(np.ones(3).view(_FakeGPUArray))
    assert gpu.device == "cuda"
    with pytest.raises(TypeError, match=r"mul: tensors on different devices \(cpu \(3,\), cuda \(3,\)\)"):
        cpu * gpu


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda x: x.reshape(5, 5), ValueError, r"reshape: cannot reshape \(2, 3\) \(6 elements\) into \(5, 5\)"),
        (lambda x: x.permute(0, 0), ValueError, r"permute: dims \(0, 0\)"),
        (lambda x: x.sum(axis=2), ValueError, r"sum: axis 2 is out of range for a tensor with 2 dimensions"),
        (lambda x: x.softmax(axis=-3), ValueError, r"softmax: axis -3"),
        (lambda x: ops.concat([x, tinylm.tensor(np.ones((3, 3)))], axis=1), ValueError, r"concat: shapes"),
        (lambda x: ops.stack([x, tinylm.tensor(np.ones((3, 2)))]), ValueError, r"stack: shapes"),
        (lambda x: ops.split(x, [1, 2], axis=0), ValueError, r"split: sizes \[1, 2\] do not add up to 2"),
        (lambda x: x[5], IndexError, r"getitem: .*\(tensor shape \(2, 3\)\)"),
        (lambda x: ops.where(x, x, x), TypeError, r"where: the condition must be a bool tensor"),
        (lambda x: ops.masked_fill(x, np.ones((3, 3), bool), 0.0), ValueError, r"masked_fill: shapes"),
        (lambda x: ops.embedding([0, 7], x), IndexError, r"embedding: id 7 is out of range for a vocabulary of 2"),
        (lambda x: ops.embedding([-1], x), IndexError, r"embedding: id -1"),
        (lambda x: ops.gelu(x, approximate="erf"), ValueError, r"gelu: approximate must be 'none' or 'tanh'"),
    ],
)
def test_bad_arguments(call, error, message):
    x = tinylm.tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(error, match=message):
        call(x)
