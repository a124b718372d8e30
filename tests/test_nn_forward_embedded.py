"""``forward_embedded(ids, embedding, state)`` of nn.LSTM, nn.GRU and nn.RNN is
``forward(embedding(ids), state)``: PyTorch's outputs, final states and every gradient
(the embedding's included), whichever way layer 0's input projection is made: per token
from a (V, G·H) table when the vocabulary is at most half the tokens, else per position."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import seeds
from torch_compare import assert_same, run_both

import tinylm
from tinylm import nn

torch = pytest.importorskip("torch", reason="PyTorch is not installed: the PyTorch comparisons need it "
                                            "(.ci/run installs it)")
LAYERS = {"RNN": (nn.RNN, torch.nn.RNN), "GRU": (nn.GRU, torch.nn.GRU), "LSTM": (nn.LSTM, torch.nn.LSTM)}


class Embedded(nn.Module):
    def __init__(self, layer_class, vocab, width, hidden, **options):
        super().__init__()
        self.embedding = nn.Embedding(vocab, width, dtype=options.pop("dtype"))
        self.layer = layer_class(width, hidden, **options, dtype=self.embedding.weight.dtype)


class TorchEmbedded(torch.nn.Module):
    def __init__(self, layer_class, vocab, width, hidden, **options):
        super().__init__()
        dtype = options.pop("dtype")
        self.embedding = torch.nn.Embedding(vocab, width, dtype=dtype)
        self.layer = layer_class(width, hidden, **options, dtype=dtype)


@settings(max_examples=60, deadline=None)
@given(seed=seeds, kind=st.sampled_from(sorted(LAYERS)), backend=st.sampled_from(["numpy", "cython"]),
       dtype=st.sampled_from([np.float64, np.float32]), layers=st.integers(1, 2), bias=st.booleans(),
       batch_first=st.booleans(), with_state=st.booleans(), vocab=st.integers(1, 12), steps=st.integers(1, 6),
       batch=st.integers(1, 9))
def test_forward_embedded_matches_pytorchs_embedding_then_layer(seed, kind, backend, dtype, layers, bias,
                                                                batch_first, with_state, vocab, steps, batch):
    options = dict(num_layers=layers, bias=bias, batch_first=batch_first)
    ours = Embedded(LAYERS[kind][0], vocab, 3, 4, **options, dtype=dtype)
    theirs = TorchEmbedded(LAYERS[kind][1], vocab, 3, 4, **options,
                           dtype=torch.float64 if dtype == np.float64 else torch.float32)
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, size=(batch, steps) if batch_first else (steps, batch))
    states = [np.asarray(rng.standard_normal((layers, batch, 4)), dtype) for _ in range(2 if kind == "LSTM" else 1)]

    def state_of(given):
        return None if not given else tuple(given) if kind == "LSTM" else given[0]

    def our_forward(m, ids, *state):
        return m.layer.forward_embedded(ids, m.embedding, state_of(state))

    def their_forward(m, ids, *state):
        return m.layer(m.embedding(ids), state_of(state))

    with tinylm.use_backend(backend):
        results = run_both(ours, theirs, [ids] + (states if with_state else []), our_forward, their_forward, dtype)
    assert_same(*results, dtype)


def projected_rows(kind, vocab, ids, **options):
    """How many rows layer 0 projected its input over, in one call to forward_embedded."""
    model = Embedded(LAYERS[kind][0], vocab, 3, 4, **options, dtype=np.float64)
    rows = []
    project = model.layer._project

    def spy(x, weights):
        if weights[0] is model.layer.weight_ih_l0 or weights[0] is getattr(model.layer, "weight_ih_l0_reverse", None):
            rows.append(int(np.prod(x.shape[:-1])))
        return project(x, weights)

    model.layer._project = spy
    with tinylm.use_backend("numpy"):
        model.layer.forward_embedded(ids, model.embedding)
    return rows


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_layer_0_projects_the_vocabulary_when_it_is_at_most_half_the_tokens(kind):
    ids = np.random.default_rng(0).integers(0, 8, size=(4, 4))  # 16 tokens
    assert projected_rows(kind, 8, ids) == [8]  # 2·8 ≤ 16: a row per vocabulary entry
    assert projected_rows(kind, 9, ids) == [16]  # 2·9 > 16: a row per position
    assert projected_rows(kind, 8, ids, bidirectional=True) == [16, 16]  # each direction, per position


def test_an_embedding_with_a_padding_row_is_looked_up_first_so_that_row_gets_no_gradient():
    embedding, layer = nn.Embedding(4, 3, padding_idx=0, dtype=np.float64), nn.LSTM(3, 4, dtype=np.float64)
    embedding.weight.data[0] = 1.0  # a padding row that would get a gradient through a table
    out, _ = layer.forward_embedded(np.zeros((5, 2), dtype=np.int64), embedding)  # 2·4 ≤ 10 tokens
    out.sum().backward()
    np.testing.assert_array_equal(embedding.weight.grad.numpy(), 0)
    assert np.abs(layer.weight_ih_l0.grad.numpy()).sum() > 0


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_dropout_between_layers_draws_the_same_masks_on_either_route(kind):
    model = Embedded(LAYERS[kind][0], 3, 3, 4, num_layers=3, dropout=0.5, dtype=np.float64)
    ids = np.random.default_rng(1).integers(0, 3, size=(6, 2))  # 12 tokens, vocabulary 3: the table
    tinylm.manual_seed(7)
    looked_up, _ = model.layer.forward_embedded(ids, model.embedding)
    tinylm.manual_seed(7)
    embedded, _ = model.layer(model.embedding(ids))
    np.testing.assert_allclose(looked_up.numpy(), embedded.numpy(), rtol=1e-12, atol=1e-14)
    tinylm.manual_seed(8)
    assert not np.allclose(model.layer.forward_embedded(ids, model.embedding)[0].numpy(), embedded.numpy())


def test_an_embedding_subclass_with_its_own_lookup_is_run_as_it_is():
    class Doubled(nn.Embedding):
        def forward(self, ids):
            return super().forward(ids) * 2.0

    embedding, layer = Doubled(3, 4, dtype=np.float64), nn.LSTM(4, 5, dtype=np.float64)
    ids = np.random.default_rng(2).integers(0, 3, size=(6, 2))  # 2·3 ≤ 12: the table, for a plain Embedding
    np.testing.assert_array_equal(layer.forward_embedded(ids, embedding)[0].numpy(), layer(embedding(ids))[0].numpy())


def test_an_embedding_of_the_wrong_width_is_named():
    layer, embedding = nn.LSTM(5, 4), nn.Embedding(3, 6)
    with pytest.raises(ValueError, match=r"LSTM.forward_embedded: the embedding's rows have 6 values but the "
                                         r"layer's input_size is 5"):
        layer.forward_embedded(np.zeros((4, 4), dtype=np.int64), embedding)
