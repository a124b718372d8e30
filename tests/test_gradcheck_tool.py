"""gradcheck itself: it passes right backwards and catches wrong ones, saying where."""

import numpy as np
import pytest

import tinylm


class SquareWithWrongBackward(tinylm.Function):
    """y = x², with the classic mistake: dy/dx written as x instead of 2x."""

    def forward(self, x):
        self.save_for_backward(x)
        return x * x

    def backward(self, gy):
        (x,) = self.saved
        return gy * x


class Square(SquareWithWrongBackward):
    def backward(self, gy):
        (x,) = self.saved
        return gy * 2 * x


def test_a_right_backward_passes():
    x = tinylm.tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    assert tinylm.gradcheck(lambda t: Square()(t), x)


def test_a_wrong_backward_fails_naming_the_input_the_error_and_where():
    constant = tinylm.tensor(np.ones(3))
    x = tinylm.tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    with pytest.raises(tinylm.GradcheckError) as info:
        tinylm.gradcheck(lambda c, t: SquareWithWrongBackward()(t) + c, constant, x)
    message = str(info.value)
    assert "input 1 of shape (3,)" in message
    assert "largest error" in message and "at index (" in message


def test_gradcheck_wants_float64_and_something_to_check():
    with pytest.raises(TypeError, match="float64"):
        tinylm.gradcheck(lambda t: t * 2.0, tinylm.tensor([1.0], requires_grad=True))
    with pytest.raises(ValueError, match="no input requires grad"):
        tinylm.gradcheck(lambda t: t * 2.0, tinylm.tensor(np.array([1.0])))


def test_gradcheck_leaves_a_non_contiguous_input_as_it_was():
    base = np.arange(12.0).reshape(3, 4)
    x = tinylm.Tensor(base.T, requires_grad=True)
    tinylm.gradcheck(lambda t: t.exp(), x)
    assert x.data is not None and not x.data.flags.c_contiguous
    np.testing.assert_array_equal(x.numpy(), base.T)
