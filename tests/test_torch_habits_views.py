"""A view shares its tensor's memory, so an in-place write through either counts for
both: a backward that would read the overwritten values is refused, as in PyTorch
(before, a write through a reshaped copy silently changed the gradient)."""

import numpy as np
import pytest

import tinylm


def tensor():
    return tinylm.tensor(np.arange(4, dtype=np.float32), requires_grad=True)


@pytest.mark.parametrize("make_view", [
    lambda w: w.reshape(2, 2),
    lambda w: w.detach().reshape(2, 2),
    lambda w: w.reshape(2, 2).transpose(0, 1),
    lambda w: w[1:],
], ids=["reshape", "detach then reshape", "reshape then transpose", "slice"])
def test_a_write_through_a_view_is_seen_by_the_graph(make_view):
    w = tensor()
    view = make_view(w)
    y = (w * w).sum()
    with tinylm.no_grad():
        view -= 1
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


def test_a_view_made_after_a_write_starts_from_the_current_count():
    w = tensor()
    with tinylm.no_grad():
        w -= 1
    v = w.reshape(2, 2)  # shares w's count, already 1
    (v * v).sum().backward()  # nothing was written since: allowed
    np.testing.assert_allclose(w.grad.numpy(), 2 * (np.arange(4) - 1))


def test_a_copy_is_not_a_view():
    w = tensor()
    copy = w.clone()
    y = (w * w).sum()
    with tinylm.no_grad():
        copy -= 1
    y.backward()
    np.testing.assert_allclose(w.grad.numpy(), 2 * np.arange(4))
