"""PyTorch habits work as in PyTorch: defaults, argument names and errors a PyTorch
user would expect from the layers, modules and functions of ``tinylm.nn``."""

import numpy as np
import pytest

import tinylm
from tinylm import nn


def randn(*shape, seed=0):
    return tinylm.Tensor(np.random.default_rng(seed).standard_normal(shape))


# ---- MultiheadAttention


def test_multihead_attention_is_sequence_first_and_returns_weights_by_default():
    attention = nn.MultiheadAttention(4, 2, dtype=np.float64)
    assert attention.batch_first is False
    x = randn(5, 3, 4)  # (L, B, E)
    output, weights = attention(x, x, x)
    assert output.shape == (5, 3, 4)
    assert weights.shape == (3, 5, 5)  # (B, L, S), averaged over heads
    np.testing.assert_allclose(weights.numpy().sum(axis=-1), 1.0)


def test_a_padded_key_gets_no_weight_and_does_not_change_the_output():
    attention = nn.MultiheadAttention(4, 2, batch_first=True, dtype=np.float64)
    x = randn(2, 3, 4)
    padding = np.array([[False, False, True], [False, False, False]])
    output, weights = attention(x, x, x, key_padding_mask=padding)
    assert np.all(weights.numpy()[0, :, 2] == 0)
    # Changing what sits at the padded position changes nothing in batch row 0
    changed = x.numpy().copy()
    changed[0, 2] += 10.0
    changed = tinylm.Tensor(changed)
    output_changed, _ = attention(x, changed, changed, key_padding_mask=padding)
    np.testing.assert_allclose(output_changed.numpy()[0], output.numpy()[0])


def test_key_padding_mask_combines_with_is_causal():
    attention = nn.MultiheadAttention(4, 1, batch_first=True, dtype=np.float64)
    x = randn(1, 3, 4)
    _, weights = attention(x, x, x, key_padding_mask=np.array([[True, False, False]]), is_causal=True)
    weights = weights.numpy()[0]
    assert np.all(weights[:, 0] == 0)  # key 0 is padding
    assert np.all(np.triu(weights, k=1) == 0)  # no query sees a later key
    np.testing.assert_allclose(weights[1:].sum(axis=-1), 1.0)  # query 0 has no key left: an all-0 row


@pytest.mark.parametrize("call, message", [
    (lambda m, q, kv: m(q, kv, kv, attn_mask=np.zeros((3, 3), bool)),
     r"MultiheadAttention: attn_mask must be \(L, S\) = \(2, 4\) or \(batch \* num_heads, L, S\) = \(6, 2, 4\), "
     r"got \(3, 3\)"),
    (lambda m, q, kv: m(q, kv, kv, key_padding_mask=np.zeros((3, 3), bool)),
     r"MultiheadAttention: key_padding_mask must be \(batch, S\) = \(3, 4\), got \(3, 3\)"),
    (lambda m, q, kv: m(q, kv, kv[:, :3]),
     r"MultiheadAttention: key \(3, 4, 4\) and value \(3, 3, 4\) must be 3-D with the same batch and length"),
    (lambda m, q, kv: m(q, kv[:2], kv[:2]),
     r"MultiheadAttention: key \(2, 4, 4\) must be \(B, S, E\) with query \(3, 2, 4\)'s batch"),
])
def test_multihead_attention_names_the_layer_and_the_shapes_when_they_do_not_fit(call, message):
    attention = nn.MultiheadAttention(4, 2, batch_first=True, dtype=np.float64)
    with pytest.raises(ValueError, match=message):
        call(attention, randn(3, 2, 4), randn(3, 4, 4))


# ---- layers and containers


def test_sequential_indexes_slices_and_counts_like_a_list():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert len(model) == 3
    assert isinstance(model[1], nn.ReLU) and model[-1] is model[2]
    head = model[:2]
    assert isinstance(head, nn.Sequential) and len(head) == 2 and head[0] is model[0]
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_module_dict_registers_its_modules_under_their_names():
    heads = nn.ModuleDict({"tokens": nn.Linear(2, 5)})
    heads["tags"] = nn.Linear(2, 3)
    assert list(heads.keys()) == ["tokens", "tags"] and len(heads) == 2 and "tags" in heads
    assert list(heads.state_dict()) == ["tokens.weight", "tokens.bias", "tags.weight", "tags.bias"]
    del heads["tokens"]
    assert list(heads) == ["tags"]


def test_identity_returns_its_input_and_ignores_arguments():
    x = randn(2, 3)
    assert nn.Identity(54, unused="yes")(x) is x


def test_gelu_refuses_an_unknown_approximation():
    with pytest.raises(ValueError, match=r"GELU: approximate must be 'none' or 'tanh', got 'erf'"):
        nn.GELU("erf")


def test_embedding_padding_row_starts_at_zero_and_stays_there():
    embedding = nn.Embedding(4, 3, padding_idx=1, dtype=np.float64)
    assert np.all(embedding.weight.numpy()[1] == 0)
    embedding(np.array([1, 1, 2])).sum().backward()
    assert np.all(embedding.weight.grad.numpy()[1] == 0) and np.all(embedding.weight.grad.numpy()[2] == 1)


def test_embedding_from_pretrained_copies_the_table_and_freezes_it_by_default():
    table = np.arange(6.0).reshape(3, 2)
    frozen = nn.Embedding.from_pretrained(table)
    table[0, 0] = 99.0  # a copy
    assert frozen.weight.numpy()[0, 0] == 0.0 and frozen.weight.dtype == np.float64
    assert not frozen.weight.requires_grad
    assert nn.Embedding.from_pretrained(table, freeze=False).weight.requires_grad


# ---- functions and losses


def test_a_torch_tensor_as_embedding_ids_says_to_convert_it():
    torch = pytest.importorskip("torch", reason="needs PyTorch to make a torch tensor")
    with pytest.raises(TypeError, match=r"embedding: ids are a torch tensor \(torch.int64\).*ids.numpy\(\)"):
        nn.Embedding(5, 2)(torch.tensor([[0, 1, 4]]))


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
