"""nn.RNN, nn.GRU and bidirectional nn.LSTM give PyTorch's outputs, final states, input
gradient and every parameter gradient on the same weights (as tests/test_nn_vs_torch.py
does for the unidirectional LSTM): 1-3 layers, both layouts, with and without an
initial state, with and without biases, one and two directions."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import seeds
from torch_compare import assert_same, copy_weights_to_torch, run_both

import tinylm
from tinylm import nn

torch = pytest.importorskip("torch", reason="PyTorch is not installed: the PyTorch comparisons need it "
                                            "(.ci/run installs it)")
TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}
LAYERS = {"RNN": (nn.RNN, torch.nn.RNN), "GRU": (nn.GRU, torch.nn.GRU), "LSTM": (nn.LSTM, torch.nn.LSTM)}


def randn(rng, shape, dtype):
    return np.asarray(rng.standard_normal(shape), dtype=dtype)


@st.composite
def recurrent_problems(draw):
    kind = draw(st.sampled_from(sorted(LAYERS)))
    options = dict(num_layers=draw(st.integers(1, 3)), bias=draw(st.booleans()),
                   batch_first=draw(st.booleans()), bidirectional=draw(st.booleans()))
    if kind == "RNN":
        options["nonlinearity"] = draw(st.sampled_from(["tanh", "relu"]))
    sizes = dict(steps=draw(st.integers(1, 4)), batch=draw(st.integers(1, 3)),
                 input_size=draw(st.integers(1, 4)), hidden=draw(st.integers(1, 4)))
    return kind, options, sizes, draw(st.booleans())


@settings(max_examples=60, deadline=None)
@given(seed=seeds, dtype=st.sampled_from([np.float64, np.float32]), problem=recurrent_problems())
def test_recurrent_layers_match_pytorch(seed, dtype, problem):
    kind, options, sizes, with_state = problem
    ours_class, their_class = LAYERS[kind]
    ours = ours_class(sizes["input_size"], sizes["hidden"], dtype=dtype, **options)
    theirs = their_class(sizes["input_size"], sizes["hidden"], dtype=TORCH_DTYPE[dtype], **options)
    rng = np.random.default_rng(seed)
    steps, batch = sizes["steps"], sizes["batch"]
    x_shape = (batch, steps, sizes["input_size"]) if options["batch_first"] else (steps, batch, sizes["input_size"])
    x = randn(rng, x_shape, dtype)
    state_shape = (options["num_layers"] * (2 if options["bidirectional"] else 1), batch, sizes["hidden"])
    inputs = [x] + ([randn(rng, state_shape, dtype) for _ in range(2 if kind == "LSTM" else 1)] if with_state else [])

    def forward(m, x, *state):
        if kind == "LSTM":
            return m(x, tuple(state) if state else None)
        return m(x, *state)

    assert_same(*run_both(ours, theirs, inputs, forward, forward, dtype), dtype)


@settings(max_examples=30, deadline=None)
@given(seed=seeds, backend=st.sampled_from(["numpy", "cython"]), layers=st.integers(1, 2), bias=st.booleans(),
       batch_first=st.booleans(), bidirectional=st.booleans(), steps=st.integers(1, 5), batch=st.integers(1, 17),
       with_state=st.booleans())
def test_an_lstm_evaluated_without_gradients_matches_pytorch(seed, backend, layers, bias, batch_first, bidirectional,
                                                              steps, batch, with_state):
    """Under ``no_grad`` (nothing kept for a backward) nn.LSTM's ``lstm_layer_from_input``
    (on the cython backend the input projection is made inside the loop over time, from
    B = MR/2 and T = 2): PyTorch's outputs and final states, float32, one or two directions."""
    options = dict(num_layers=layers, bias=bias, batch_first=batch_first, bidirectional=bidirectional)
    ours, theirs = nn.LSTM(6, 5, **options), torch.nn.LSTM(6, 5, **options)
    copy_weights_to_torch(ours, theirs)
    rng = np.random.default_rng(seed)
    x = randn(rng, (batch, steps, 6) if batch_first else (steps, batch, 6), np.float32)
    state = tuple(randn(rng, (layers * (2 if bidirectional else 1), batch, 5), np.float32) for _ in range(2))
    with tinylm.use_backend(backend), tinylm.no_grad():
        out, (h_n, c_n) = ours(tinylm.tensor(x), tuple(tinylm.tensor(s) for s in state) if with_state else None)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x), tuple(torch.from_numpy(s) for s in state) if with_state else None)
    for got, want in zip((out, h_n, c_n), (expected[0], *expected[1])):
        np.testing.assert_allclose(got.data, want.numpy(), rtol=1e-4, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(seed=seeds, kind=st.sampled_from(sorted(LAYERS)), bidirectional=st.booleans(), steps=st.integers(2, 5),
       batch=st.integers(4, 17), hidden=st.integers(1, 40))
def test_float32_layers_on_the_packed_loop_match_pytorch(seed, kind, bidirectional, steps, batch, hidden):
    """float32 at the sizes the cython backend's packed loop over time serves (T ≥ 2, B from
    half a register tile), where the LSTM also makes its input projection in the loop:
    outputs, states and every gradient as PyTorch's."""
    ours_class, their_class = LAYERS[kind]
    ours = ours_class(7, hidden, num_layers=2, bidirectional=bidirectional, dtype=np.float32)
    theirs = their_class(7, hidden, num_layers=2, bidirectional=bidirectional)
    x = randn(np.random.default_rng(seed), (steps, batch, 7), np.float32)

    def forward(m, x):
        return m(x)

    with tinylm.use_backend("cython"):
        results = run_both(ours, theirs, [x], forward, forward, np.float32)
    assert_same(*results, np.float32, rtol=2e-4, atol=2e-5 * max(1, steps * batch) ** 0.5)


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_parameter_names_and_shapes_are_pytorchs(kind):
    ours_class, their_class = LAYERS[kind]
    ours = ours_class(3, 5, num_layers=2, bidirectional=True)
    theirs = their_class(3, 5, num_layers=2, bidirectional=True)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == \
           [(n, tuple(p.shape)) for n, p in theirs.named_parameters()]


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_dropout_between_layers_is_off_in_eval_and_on_in_training(kind):
    ours_class, their_class = LAYERS[kind]
    ours = ours_class(3, 4, num_layers=2, dropout=0.5, dtype=np.float64)
    theirs = their_class(3, 4, num_layers=2, dropout=0.5, dtype=torch.float64)
    copy_weights_to_torch(ours, theirs)
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    ours.eval()
    theirs.eval()
    np.testing.assert_allclose(ours(tinylm.Tensor(x))[0].numpy(), theirs(torch.from_numpy(x))[0].detach().numpy(),
                               rtol=1e-10)
    ours.train()
    assert not np.allclose(ours(tinylm.Tensor(x))[0].numpy(), theirs(torch.from_numpy(x))[0].detach().numpy())


def test_rnn_rejects_an_unknown_nonlinearity():
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'"):
        nn.RNN(2, 3, nonlinearity="sigmoid")


@pytest.mark.parametrize("kind", ["RNN", "GRU"])
def test_a_wrong_initial_state_shape_is_named(kind):
    layer = LAYERS[kind][0](2, 3, num_layers=2, bidirectional=True)
    with pytest.raises(ValueError, match=r"h0 \(2, 1, 3\) must be .* = \(4, 1, 3\)"):
        x, h0 = np.zeros((5, 1, 2), dtype=np.float32), np.zeros((2, 1, 3), dtype=np.float32)
        layer(tinylm.Tensor(x), tinylm.Tensor(h0))


def test_an_lstm_state_is_the_pair_h0_c0():
    x, h0 = tinylm.Tensor(np.zeros((5, 1, 2))), tinylm.Tensor(np.zeros((1, 1, 3)))
    with pytest.raises(ValueError, match=r"LSTM: the initial state must be \(h0, c0\)"):
        nn.LSTM(2, 3, dtype=np.float64)(x, h0)


@pytest.mark.parametrize("kind", ["RNN", "GRU"])
def test_state_carried_across_batches_matches_pytorch(kind):
    """Truncated BPTT: the detached final state of one batch starts the next."""
    ours_class, their_class = LAYERS[kind]
    ours = ours_class(3, 4, num_layers=2, bidirectional=True, dtype=np.float64)
    theirs = their_class(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64)
    copy_weights_to_torch(ours, theirs)
    rng, our_h, their_h = np.random.default_rng(0), None, None
    for _ in range(3):
        x = rng.standard_normal((5, 2, 3))
        out, h = ours(tinylm.Tensor(x), our_h)
        their_out, their_h_n = theirs(torch.from_numpy(x), their_h)
        out.sum().backward()
        their_out.sum().backward()
        our_h, their_h = h.detach(), their_h_n.detach()
        np.testing.assert_allclose(out.numpy(), their_out.detach().numpy(), rtol=1e-10)
    for name, p in theirs.named_parameters():  # gradients accumulated over the three batches
        np.testing.assert_allclose(dict(ours.named_parameters())[name].grad.numpy(), p.grad.numpy(), rtol=1e-10)
