"""PyTorch habits work as in PyTorch: defaults, argument names and errors a PyTorch
user would expect from the layers, modules and functions of ``tinylm.nn``."""

import numpy as np
import pytest

import tinylm
from tinylm import nn


def randn(*shape, seed=0):
    return tinylm.Tensor(np.random.default_rng(seed).standard_normal(shape))


# ---- Module


class WithBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 2)
        self.register_buffer("running_mean", np.zeros(2, np.float32))
        self.register_buffer("scratch", np.zeros(3, np.float32), persistent=False)


def test_buffers_are_named_saved_loaded_and_moved_but_not_parameters():
    model = WithBuffer()
    assert [name for name, _ in model.named_buffers()] == ["running_mean", "scratch"]
    assert [name for name, _ in model.named_parameters()] == ["linear.weight", "linear.bias"]
    # its own state before its children's, as PyTorch; the non-persistent buffer is not saved
    assert list(model.state_dict()) == ["running_mean", "linear.weight", "linear.bias"]
    state = model.state_dict()
    state["running_mean"] = np.array([1.0, 2.0], np.float32)
    model.load_state_dict(state)
    np.testing.assert_array_equal(model.running_mean.numpy(), [1.0, 2.0])
    model.double()
    assert all(b.dtype == np.float64 for b in model.buffers())
    model.running_mean = tinylm.Tensor(np.ones(2))  # assigning replaces the buffer
    assert model.state_dict()["running_mean"].tolist() == [1.0, 1.0]


def test_load_state_dict_returns_the_missing_and_unexpected_keys():
    model = nn.Linear(2, 3)
    result = model.load_state_dict({"weight": np.zeros((3, 2), np.float32), "extra": np.zeros(1)}, strict=False)
    assert result.missing_keys == ["bias"] and result.unexpected_keys == ["extra"]
    missing, unexpected = model.load_state_dict(model.state_dict())
    assert missing == [] and unexpected == []


def test_apply_visits_children_before_their_parent():
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Dropout()))
    visited = []
    assert model.apply(lambda m: visited.append(type(m).__name__)) is model
    assert visited == ["Linear", "Dropout", "Sequential", "Sequential"]


def test_requires_grad_freezes_and_unfreezes_every_parameter():
    model = WithBuffer()
    assert model.requires_grad_(False) is model
    assert not any(p.requires_grad for p in model.parameters())
    model.requires_grad_()
    assert all(p.requires_grad for p in model.parameters())


def test_a_parameter_cannot_be_registered_as_a_buffer():
    with pytest.raises(TypeError, match=r"Linear.register_buffer: 'extra' is a Parameter; assign it instead"):
        nn.Linear(2, 2).register_buffer("extra", nn.Parameter(np.zeros(2)))
