"""A user's own Function: what its backward receives for an output that did not reach
the loss (None, or zeros under ``materialize_grads``), and the error when it trips on None."""

import weakref

import numpy as np
import pytest

import tinylm
from tinylm.autograd import Function


class MinMax(Function):
    """(R, C) -> (min over the last axis (R,), max over the last axis (R,)).

    Its backward uses both incoming gradients without testing for None, so it fails
    when one of the two outputs did not reach the loss (unless materialize_grads).
    """

    def __init__(self):
        self.received = None  # what backward was handed, for the tests to look at

    def forward(self, x):
        self.save_for_backward(x)
        return x.min(axis=-1), x.max(axis=-1)

    def backward(self, g_min, g_max):
        self.received = (g_min, g_max)
        (x,) = self.saved
        at_min = x == x.min(axis=-1, keepdims=True)
        at_max = x == x.max(axis=-1, keepdims=True)
        return at_min * g_min[:, None] + at_max * g_max[:, None]


class MaterializedMinMax(MinMax):
    materialize_grads = True


class NoneAwareMinMax(MinMax):
    """The same op written for the default rule: an unused output's term is skipped."""

    def backward(self, g_min, g_max):
        self.received = (g_min, g_max)
        (x,) = self.saved
        gx = np.zeros_like(x)
        if g_min is not None:
            gx += (x == x.min(axis=-1, keepdims=True)) * g_min[:, None]
        if g_max is not None:
            gx += (x == x.max(axis=-1, keepdims=True)) * g_max[:, None]
        return gx


class ValueAndIndex(Function):
    """(R, C) -> (max over the last axis (R,), its index (R,) int64): the index output
    is an integer, so it never carries a gradient."""

    materialize_grads = True

    def forward(self, x):
        self.index = x.argmax(axis=-1)
        self.columns = x.shape[-1]
        return x.max(axis=-1), self.index

    def backward(self, g_value, g_index):
        self.received = (g_value, g_index)
        one_hot = np.arange(self.columns) == self.index[:, None]
        return one_hot * g_value[:, None]


class ThreeWay(Function):
    """x -> (x, 2x, 3x); its backward uses all three gradients without testing for None."""

    def forward(self, x):
        return x.copy(), 2 * x, 3 * x

    def backward(self, g1, g2, g3):
        return g1 + 2 * g2 + 3 * g3


def distinct_matrix(dtype=np.float64):
    """A (3, 4) matrix without ties in any row, so min and max are differentiable."""
    rng = np.random.default_rng(0)
    rows = np.stack([rng.permutation(4) for _ in range(3)]) + rng.uniform(0, 0.5, size=(3, 4))
    return tinylm.tensor(rows.astype(dtype), requires_grad=True)


def test_by_default_an_unused_output_sends_none_and_a_none_aware_backward_is_right():
    x = distinct_matrix()
    op = NoneAwareMinMax()
    low, high = op(x)
    high.sum().backward()
    g_min, g_max = op.received
    assert g_min is None
    assert g_max.shape == (3,)
    np.testing.assert_array_equal(x.grad.numpy(), x.numpy() == x.numpy().max(axis=-1, keepdims=True))
    assert tinylm.gradcheck(lambda t: NoneAwareMinMax()(t)[1], distinct_matrix())
    assert tinylm.gradcheck(lambda t: NoneAwareMinMax()(t)[0], distinct_matrix())
    assert tinylm.gradcheck(lambda t: NoneAwareMinMax()(t), distinct_matrix())


def test_a_backward_that_trips_on_none_gets_an_error_naming_the_op_and_the_unused_output():
    x = distinct_matrix()
    low, high = MinMax()(x)
    with pytest.raises(TypeError) as caught:
        high.sum().backward()
    message = str(caught.value)
    assert message.startswith("MinMax.backward: output 0 (shape (3,)) of 2 did not reach the loss")
    assert "materialize_grads = True on MinMax" in message
    assert "handle None in MinMax.backward" in message
    assert "NoneType" in message  # the original error is quoted
    assert isinstance(caught.value.__cause__, TypeError)  # and chained
    assert "MinMax.backward" not in str(caught.value.__cause__)


def test_the_error_names_every_unused_output():
    x = tinylm.tensor(np.arange(3.0), requires_grad=True)
    first, second, third = ThreeWay()(x)
    with pytest.raises(TypeError, match=r"ThreeWay\.backward: outputs 0 \(shape \(3,\)\), 2 \(shape \(3,\)\) of 3 "
                                        r"did not reach the loss, so the gradients passed in were None"):
        second.sum().backward()


def test_a_type_error_with_every_gradient_present_is_left_as_it_was():
    class Broken(ThreeWay):
        def backward(self, g1, g2, g3):
            return g1 + "oops"

    x = tinylm.tensor(np.arange(3.0), requires_grad=True)
    outputs = Broken()(x)
    with pytest.raises(TypeError) as caught:
        (outputs[0] + outputs[1] + outputs[2]).sum().backward()
    assert "did not reach the loss" not in str(caught.value)
    assert caught.value.__cause__ is None


class TwoOutputs(Function):
    """x -> (2x, 3x); ``body(g1, g2)`` is its backward, so a test can write one that trips on None."""

    def __init__(self, body):
        self.body = body

    def forward(self, x):
        return 2 * x, 3 * x

    def backward(self, g1, g2):
        return self.body(g1, g2)


@pytest.mark.parametrize("body, kind, quoted", [
    (lambda g1, g2: 2 * g1 + 3 * g2.reshape(g1.shape), AttributeError, "has no attribute 'reshape'"),
    (lambda g1, g2: 2 * g1 + 3 * g2.T, AttributeError, "has no attribute 'T'"),
    (lambda g1, g2: 2 * g1 + 3 * np.where(g1 > 0, g2, 0), TypeError, "NoneType"),
])
def test_a_method_or_function_called_on_the_none_gradient_gets_the_same_explanation(body, kind, quoted):
    x = tinylm.tensor(np.ones((2, 2)), requires_grad=True)
    first, second = TwoOutputs(body)(x)
    with pytest.raises(kind) as caught:
        first.sum().backward()
    message = str(caught.value)
    assert message.startswith("TwoOutputs.backward: output 1 (shape (2, 2)) of 2 did not reach the loss"), message
    assert quoted in message and "materialize_grads = True on TwoOutputs" in message
    assert type(caught.value.__cause__) is kind and "TwoOutputs" not in str(caught.value.__cause__)


def test_an_error_that_does_not_name_none_is_left_as_it_was_with_a_note_naming_the_none_gradient():
    """np.einsum on None complains about subscripts: the engine cannot tell it came from
    the None, so the error stays as it was, and a note says which gradient was None."""
    x = tinylm.tensor(np.ones((2, 2)), requires_grad=True)
    first, second = TwoOutputs(lambda g1, g2: 2 * g1 + 3 * np.einsum("ij->ij", g2))(x)
    with pytest.raises(ValueError, match="subscripts") as caught:
        first.sum().backward()
    assert not str(caught.value).startswith("TwoOutputs")
    assert caught.value.__cause__ is None
    (note,) = caught.value.__notes__
    assert note.startswith("note: TwoOutputs.backward: output 1 (shape (2, 2)) of 2 did not reach the loss")
    assert "materialize_grads = True on TwoOutputs" in note


def test_an_attribute_error_not_about_none_is_not_blamed_on_the_none_gradient():
    def body(g1, g2):
        return g1.no_such_method()

    x = tinylm.tensor(np.ones((2, 2)), requires_grad=True)
    first, second = TwoOutputs(body)(x)
    with pytest.raises(AttributeError, match="no_such_method") as caught:
        first.sum().backward()
    assert "'numpy.ndarray' object" in str(caught.value) and caught.value.__cause__ is None


@pytest.mark.parametrize("use_both", [False, True])
def test_a_backward_taking_too_few_gradients_is_told_to_take_one_per_output(use_both):
    class Polar(Function):
        def forward(self, x, y):
            r = np.hypot(x, y)
            self.save_for_backward(x, y, r)
            return r, np.arctan2(y, x)

        def backward(self, g_r):  # the gradient of the second output is forgotten
            x, y, r = self.saved
            return g_r * x / r, g_r * y / r

    px = tinylm.tensor(np.ones(3), requires_grad=True)
    py = tinylm.tensor(np.ones(3), requires_grad=True)
    r, theta = Polar()(px, py)
    with pytest.raises(TypeError) as caught:
        (r + theta if use_both else r).sum().backward()
    message = str(caught.value)
    assert message.startswith("Polar.backward must take one gradient per output of forward (2): "), message
    assert "did not reach the loss" not in message and "materialize_grads" not in message
    assert isinstance(caught.value.__cause__, TypeError)


def test_the_docstrings_recipe_builds_zeros_from_output_specs():
    """Function's docstring: ``gy = xp.zeros(shape, dtype) if gy is None else gy`` with
    ``(shape, dtype) = self.output_specs[i]``."""
    class ZerosFromSpecs(MinMax):
        def backward(self, g_min, g_max):
            specs = self.output_specs
            g_min = np.zeros(specs[0][0], specs[0][1]) if g_min is None else g_min
            g_max = np.zeros(specs[1][0], specs[1][1]) if g_max is None else g_max
            return super().backward(g_min, g_max)

    x = distinct_matrix(np.float32)
    low, high = ZerosFromSpecs()(x)
    high.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), x.numpy() == x.numpy().max(axis=-1, keepdims=True))
    assert x.grad.dtype == np.float32


def test_materialize_grads_passes_zeros_of_the_outputs_shape_and_dtype():
    x = distinct_matrix(np.float32)
    op = MaterializedMinMax()
    low, high = op(x)
    (2 * low).sum().backward()
    g_min, g_max = op.received
    assert g_min.dtype == np.float32 and g_max.dtype == np.float32
    assert g_max.shape == (3,) and not g_max.any()
    np.testing.assert_array_equal(g_min, np.full(3, 2.0, dtype=np.float32))
    np.testing.assert_array_equal(x.grad.numpy(), 2.0 * (x.numpy() == x.numpy().min(axis=-1, keepdims=True)))
    assert tinylm.gradcheck(lambda t: MaterializedMinMax()(t)[1], distinct_matrix())


def test_materialize_grads_knows_the_shape_of_an_output_that_was_already_freed():
    x = distinct_matrix()
    op = MaterializedMinMax()
    low, high = op(x)
    gone = weakref.ref(low)
    del low  # the graph holds outputs weakly: this output no longer exists
    assert gone() is None
    high.sum().backward()
    g_min, _ = op.received
    assert g_min.shape == (3,) and g_min.dtype == np.float64 and not g_min.any()


def test_materialize_grads_fills_an_integer_output_with_integer_zeros():
    x = distinct_matrix()
    op = ValueAndIndex()
    value, index = op(x)
    assert not index.requires_grad
    value.sum().backward()
    g_value, g_index = op.received
    assert g_index.dtype == np.int64 and g_index.shape == (3,) and not g_index.any()
    np.testing.assert_array_equal(x.grad.numpy(), x.numpy() == x.numpy().max(axis=-1, keepdims=True))


def test_materialize_grads_may_be_switched_on_for_one_call_in_forward():
    class SwitchedInForward(MinMax):
        def forward(self, x):
            self.materialize_grads = True
            return super().forward(x)

    op = SwitchedInForward()
    low, high = op(distinct_matrix())
    high.sum().backward()
    assert not op.received[0].any()
    assert MinMax.materialize_grads is False  # the class default is untouched


def test_tinylms_own_multi_output_ops_still_receive_none():
    """Split skips the allocation for a piece nobody used: it must still see None."""
    from tinylm.ops.shape import Split

    seen = []
    original = Split.backward

    def spy(self, *gys):
        seen.append(gys)
        return original(self, *gys)

    x = tinylm.tensor(np.arange(6.0), requires_grad=True)
    Split.backward = spy
    try:
        first, second = x.split(3)
        (second * 2.0).sum().backward()
    finally:
        Split.backward = original
    assert seen[0][0] is None and seen[0][1].shape == (3,)
    np.testing.assert_array_equal(x.grad.numpy(), [0, 0, 0, 2, 2, 2])
