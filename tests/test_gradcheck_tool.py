"""gradcheck itself: it passes right backwards and catches wrong ones, saying where,
and its failure message hints at the kind of mistake, read off the mismatch."""

import re

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


class SquareWithSignFlipped(SquareWithWrongBackward):
    def backward(self, gy):
        (x,) = self.saved
        return -gy * 2 * x


class SquareWithZeroBackward(SquareWithWrongBackward):
    def backward(self, gy):
        return np.zeros_like(gy)


class RowMeanWithoutOneOverN(tinylm.Function):
    """y = mean of each row of x (B, N), with the 1/N forgotten in the backward."""

    def forward(self, x):
        self.columns = x.shape[1]
        return x.mean(axis=1)

    def backward(self, gy):
        return np.repeat(gy[:, None], self.columns, axis=1)  # should be / self.columns


class AbsWithoutSign(tinylm.Function):
    """y = |x|, backward written as gy (the sign of x forgotten)."""

    def forward(self, x):
        return np.abs(x)

    def backward(self, gy):
        return gy.copy()


class AbsWithStrictMask(tinylm.Function):
    """y = |x|, backward written as relu's: gy where x > 0, nothing where x < 0."""

    def forward(self, x):
        self.save_for_backward(x)
        return np.abs(x)

    def backward(self, gy):
        (x,) = self.saved
        return gy * (x > 0)


class ReluWithoutMask(tinylm.Function):
    """y = max(x, 0), backward written as gy everywhere (the mask x > 0 forgotten)."""

    def forward(self, x):
        return np.maximum(x, 0)

    def backward(self, gy):
        return gy.copy()


class TimesBWithTransposedBackward(tinylm.Function):
    """y = W @ B for a fixed square B, with dL/dW = gy Bᵀ returned transposed."""

    def __init__(self, b):
        super().__init__()
        self.b = b

    def forward(self, w):
        return w @ self.b

    def backward(self, gy):
        return (gy @ self.b.T).T


def failure(fn, *inputs) -> str:
    with pytest.raises(tinylm.GradcheckError) as info:
        tinylm.gradcheck(fn, *inputs)
    return str(info.value)


def leaf(values) -> tinylm.Tensor:
    return tinylm.tensor(np.asarray(values, dtype=np.float64), requires_grad=True)


def test_a_right_backward_passes():
    x = leaf([1.0, -2.0, 3.0])
    assert tinylm.gradcheck(lambda t: Square()(t), x)
    steep = leaf([4.0, -3.0, 5.5])  # large slopes and curvature: no kink is reported on a smooth fn
    assert tinylm.gradcheck(lambda t: t.exp(), steep)


def test_a_wrong_backward_fails_naming_the_input_the_error_and_where():
    constant = tinylm.tensor(np.ones(3))
    x = leaf([1.0, -2.0, 3.0])
    message = failure(lambda c, t: SquareWithWrongBackward()(t) + c, constant, x)
    assert "input 1 of shape (3,)" in message
    assert "through Add, SquareWithWrongBackward" in message
    assert re.search(r"largest error [0-9.]+ at index \(\d,\): backward gives -?[0-9.]+, "
                     r"finite differences give -?[0-9.]+ \(atol=", message), message
    assert "hint: backward ≈ 1/2 × finite differences everywhere: a factor 2 missing" in message


def test_a_forgotten_one_over_n_is_named_with_the_axis_it_belongs_to():
    x = leaf(np.random.default_rng(0).standard_normal((3, 4)))
    message = failure(lambda t: RowMeanWithoutOneOverN()(t), x)
    assert "input 0 of shape (3, 4) through RowMeanWithoutOneOverN" in message
    assert "hint: backward ≈ 4 × finite differences everywhere: a missing 1/4 (4 is the size of axis 1 of input 0)" \
        in message


def test_a_forgotten_one_over_n_names_every_axis_of_that_size():
    # A row mean of a square input: the numbers cannot tell axis 0 from axis 1, so both are named.
    x = leaf(np.random.default_rng(0).standard_normal((3, 3)))
    message = failure(lambda t: RowMeanWithoutOneOverN()(t), x)
    assert "a missing 1/3 (3 is the size of axes 0 and 1 of input 0)?" in message, message


class SigmoidWithSigmaAsSlope(tinylm.Function):
    """y = σ(x), backward written as gy·σ(x) instead of gy·σ(x)(1 - σ(x))."""

    def forward(self, x):
        s = 1 / (1 + np.exp(-x))
        self.save_for_backward(s)
        return s

    def backward(self, gy):
        (s,) = self.saved
        return gy * s


def test_finite_differences_below_atol_are_reported_as_measured_not_as_zero():
    # σ saturates at x = 12..14: its slope is below 1e-5, so the finite differences fall under atol.
    x = leaf([12.0, 13.0, 14.0])
    message = failure(lambda t: SigmoidWithSigmaAsSlope()(t), x)
    measured = re.search(r"hint: finite differences are at most (\S+) here, below atol=1e-05, but backward is not: "
                         r"fn is flat at these inputs \(saturated\? move the inputs", message)
    assert measured, message
    assert 0 < float(measured.group(1)) < 1e-5
    assert "zero everywhere" not in message
    # Moved to where σ has a slope, the same bug is no longer called flat.
    assert "flat" not in failure(lambda t: SigmoidWithSigmaAsSlope()(t), leaf([-1.0, 0.5, 2.0]))


class RowSumTakenAsMean(tinylm.Function):
    """y = the sum of each row of x (B, N), with a mean's 1/N put into the backward."""

    def forward(self, x):
        self.columns = x.shape[1]
        return x.sum(axis=1)

    def backward(self, gy):
        return np.repeat(gy[:, None], self.columns, axis=1) / self.columns


class SquareSlightlyOff(SquareWithWrongBackward):
    def backward(self, gy):
        (x,) = self.saved
        return gy * 2 * x * 1.0015  # 0.15 % too large: just outside rtol=1e-3


def test_a_factor_too_small_is_named():
    x = leaf(np.random.default_rng(2).standard_normal((2, 4)))
    message = failure(lambda t: RowSumTakenAsMean()(t), x)
    assert "hint: backward ≈ 1/4 × finite differences everywhere: a factor 4 missing" in message


def test_a_backward_just_outside_the_tolerance_is_not_called_a_sign_or_a_factor():
    message = failure(lambda t: SquareSlightlyOff()(t), leaf([1.0, -2.0, 3.0]))
    assert "hint: backward ≈ finite differences everywhere, just outside the tolerance" in message
    assert "sign" not in message


def test_a_flipped_sign_is_named():
    message = failure(lambda t: SquareWithSignFlipped()(t), leaf([1.0, -2.0, 3.0]))
    assert "hint: sign flipped: backward ≈ -1 × finite differences everywhere" in message
    one = failure(lambda t: SquareWithSignFlipped()(t), leaf([1.5]))
    assert "sign flipped: backward ≈ -1 × finite differences at its one element" in one


def test_a_sign_flipped_at_some_elements_only_is_named():
    message = failure(lambda t: AbsWithoutSign()(t), leaf([1.0, -2.0, 3.0, -0.5]))
    assert "hint: sign flipped at the 2 wrong elements of 4, right elsewhere" in message
    assert "largest error" in message


def test_a_backward_that_sends_nothing_is_named():
    message = failure(lambda t: SquareWithZeroBackward()(t), leaf([1.0, -2.0, 3.0]))
    assert "hint: backward is zero everywhere" in message


def test_a_mask_too_strict_and_a_missing_mask_are_named():
    strict = failure(lambda t: AbsWithStrictMask()(t), leaf([1.0, -2.0, 3.0, -0.5]))
    assert "hint: backward is zero where finite differences are not (2 of 4 elements)" in strict
    missing = failure(lambda t: ReluWithoutMask()(t), leaf([1.0, -2.0, 3.0, -0.5, 0.7]))
    assert "hint: backward is not zero where finite differences are (2 of 5 elements): a mask missing" in missing


def test_a_transposed_backward_is_named():
    rng = np.random.default_rng(1)
    b = rng.standard_normal((3, 3))
    message = failure(lambda w: TimesBWithTransposedBackward(b)(w), leaf(rng.standard_normal((3, 3))))
    assert "hint: backward equals finite differences with the last two axes swapped: transposed?" in message


def test_a_kink_is_named_where_a_right_backward_cannot_agree():
    x = leaf([-1.0, 0.0, 2.0])  # relu's kink at 0: the slopes are 0 on the left, 1 on the right
    message = failure(lambda t: t.relu(), x)
    assert "through ReLU" in message and "at index (1,)" in message
    assert "hint: fn has a kink there: slope 0 just left" in message
    assert "move the input away from the kink" in message
    assert tinylm.gradcheck(lambda t: t.relu(), leaf([-1.0, 0.25, 2.0]))  # away from 0: right


def test_the_hints_do_not_blame_the_wrong_pattern():
    # A backward wrong in an irregular way gets the plain message, no made-up pattern.
    class Irregular(SquareWithWrongBackward):
        def backward(self, gy):
            (x,) = self.saved
            return gy * (2 * x + np.array([0.0, 0.3, -0.7]))

    message = failure(lambda t: Irregular()(t), leaf([1.0, -2.0, 3.0]))
    assert "largest error" in message and "hint" not in message


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


def test_a_failure_leaves_the_input_as_it_was():
    x = leaf([-1.0, 0.0, 2.0])
    failure(lambda t: t.relu(), x)  # the kink probe perturbs x, then puts it back
    np.testing.assert_array_equal(x.numpy(), [-1.0, 0.0, 2.0])
