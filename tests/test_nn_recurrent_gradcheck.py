"""nn.RNN, nn.GRU and the fused rnn_layer / gru_layer ops against finite differences
(float64, small sizes), with no PyTorch involved: these run everywhere."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import leaf, seeds
from test_nn_gradcheck import gradcheck_module

import tinylm
from tinylm import nn
from tinylm.ops.gru import gru_layer
from tinylm.ops.rnn import rnn_layer


@settings(max_examples=15, deadline=None)
@given(seed=seeds, steps=st.integers(1, 3), layers=st.integers(1, 2), batch_first=st.booleans(),
       bidirectional=st.booleans(), kind=st.sampled_from(["RNN-tanh", "RNN-relu", "GRU", "LSTM"]))
def test_recurrent_layer_gradcheck(seed, steps, layers, batch_first, bidirectional, kind):
    tinylm.manual_seed(seed)
    options = dict(num_layers=layers, batch_first=batch_first, bidirectional=bidirectional, dtype=np.float64)
    if kind.startswith("RNN"):
        options["nonlinearity"] = kind.split("-")[1]
    layer = {"RNN": nn.RNN, "GRU": nn.GRU, "LSTM": nn.LSTM}[kind.split("-")[0]](2, 2, **options)
    x = leaf((2, steps, 2) if batch_first else (steps, 2, 2), seed)
    state_shape = (layers * (2 if bidirectional else 1), 2, 2)  # (num_layers · directions, B, H)
    states = [leaf(state_shape, seed + 1 + k) for k in range(2 if kind == "LSTM" else 1)]
    if kind == "LSTM":
        assert gradcheck_module(layer, lambda x, h, c: layer(x, (h, c)), x, *states)
    else:
        assert gradcheck_module(layer, layer, x, *states)


@settings(max_examples=20, deadline=None)
@given(seed=seeds, steps=st.integers(1, 4), batch=st.integers(1, 2), hidden=st.integers(1, 3),
       used=st.sampled_from([(True, False), (False, True), (True, True)]))
def test_fused_gru_layer_gradcheck(seed, steps, batch, hidden, used):
    """Every input of the op, with its output sequence, its final state or both used."""
    inputs = [leaf((steps, batch, 3 * hidden), seed), leaf((3 * hidden, hidden), seed + 1),
              leaf((3 * hidden,), seed + 2), leaf((batch, hidden), seed + 3)]
    assert tinylm.gradcheck(lambda *t: tuple(y for y, u in zip(gru_layer(*t), used) if u), *inputs)


@settings(max_examples=20, deadline=None)
@given(seed=seeds, steps=st.integers(1, 4), batch=st.integers(1, 2), hidden=st.integers(1, 3),
       nonlinearity=st.sampled_from(["tanh", "relu"]),
       used=st.sampled_from([(True, False), (False, True), (True, True)]))
def test_fused_rnn_layer_gradcheck(seed, steps, batch, hidden, nonlinearity, used):
    inputs = [leaf((steps, batch, hidden), seed), leaf((hidden, hidden), seed + 1), leaf((batch, hidden), seed + 2)]
    assert tinylm.gradcheck(lambda *t: tuple(y for y, u in zip(rnn_layer(*t, nonlinearity), used) if u), *inputs)
