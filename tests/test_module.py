"""nn.Module: registration order, names, modes, state_dict round trips and errors."""

import numpy as np
import pytest

import tinylm
from tinylm import nn


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(5, 3)
        self.rnn = nn.LSTM(3, 4)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(4, 5)

    def forward(self, ids):
        out, _ = self.rnn(self.embed(ids))
        return self.head(self.drop(out))


def test_named_parameters_are_dotted_and_in_registration_order():
    names = [name for name, _ in TwoLayer().named_parameters()]
    assert names == [
        "embed.weight",
        "rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0",
        "head.weight", "head.bias",
    ]


def test_children_modules_and_train_eval():
    model = TwoLayer()
    assert [type(m).__name__ for m in model.children()] == ["Embedding", "LSTM", "Dropout", "Linear"]
    assert len(list(model.modules())) == 5
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_state_dict_round_trip_reproduces_outputs():
    tinylm.manual_seed(0)
    a = TwoLayer().eval()
    tinylm.manual_seed(1)
    b = TwoLayer().eval()
    ids = np.array([[0, 1, 4]])
    assert not np.allclose(a(ids).numpy(), b(ids).numpy())
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a(ids).numpy(), b(ids).numpy())
    state = a.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    state["head.bias"][:] = 99.0  # a copy: changing it leaves the model alone
    assert not np.any(a.head.bias.numpy() == 99.0)


def test_load_state_dict_lists_every_problem_in_one_error():
    model = TwoLayer()
    state = model.state_dict()
    del state["head.bias"]
    state["head.extra"] = np.zeros(1)
    state["embed.weight"] = np.zeros((6, 3))
    with pytest.raises(ValueError) as info:
        model.load_state_dict(state)
    message = str(info.value)
    assert "missing keys: head.bias" in message
    assert "unexpected keys: head.extra" in message
    assert "embed.weight: expected (5, 3), got (6, 3)" in message


def test_load_state_dict_non_strict_still_refuses_wrong_shapes():
    model = TwoLayer()
    model.load_state_dict({"head.bias": np.ones(5), "other": np.ones(2)}, strict=False)
    np.testing.assert_array_equal(model.head.bias.numpy(), np.ones(5))
    with pytest.raises(ValueError, match="wrong shapes"):
        model.load_state_dict({"head.bias": np.ones(4)}, strict=False)


def test_zero_grad_and_dtype_conversion():
    model = TwoLayer()
    loss = model(np.array([[1, 2]])).sum()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    model.double()
    assert all(p.dtype == np.float64 for p in model.parameters())


def test_repr_is_readable():
    text = repr(TwoLayer())
    assert text.splitlines()[0] == "TwoLayer("
    assert "(rnn): LSTM(3, 4)" in text and "(head): Linear(in_features=4, out_features=5, bias=True)" in text


def test_default_initialisation_follows_pytorch_distributions():
    tinylm.manual_seed(0)
    linear = nn.Linear(400, 300)
    bound = 1 / np.sqrt(400)
    w = linear.weight.numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound  # U(-1/√in, 1/√in)
    assert abs(w.std() - bound / np.sqrt(3)) < 0.01 * bound
    embedding = nn.Embedding(1000, 64).weight.numpy()
    assert abs(embedding.std() - 1.0) < 0.02 and abs(embedding.mean()) < 0.02  # N(0, 1)
    lstm = nn.LSTM(10, 50)
    assert np.abs(lstm.weight_hh_l0.numpy()).max() <= 1 / np.sqrt(50)  # U(-1/√H, 1/√H)
    attention = nn.MultiheadAttention(8, 2)
    assert np.all(attention.in_proj_bias.numpy() == 0) and np.all(attention.out_proj.bias.numpy() == 0)
    assert np.abs(attention.in_proj_weight.numpy()).max() <= np.sqrt(6 / (8 + 24))  # xavier
