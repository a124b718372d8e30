"""Dropout masks drawn per global row, so a global batch split over processes draws the
masks of the whole batch.

Properties:
- the counter map that ``counter_map`` gives a piece of rows is the piece's slice of the
  whole batch's counters (for the batch on axis 0, 1 or 2);
- inside ``global_batch_rows``, the outputs of dropout drawn piece by piece, stacked
  along the batch axis, equal dropout of the whole batch drawn outside the context, on
  the numpy and cython backends and through the CUDA kernel's CPU emulation, for splits
  of G rows into 1 to 4 pieces, uneven and empty pieces too;
- whole models in train mode (an LSTM of 2 layers with dropout between them, a
  transformer with dropout on embeddings, attention weights and residuals), float64:
  the summed loss and the gradients of the pieces add up to the whole batch's, to 1e-12;
- dropout with a counter map passes gradcheck, and a tensor whose rows do not match the
  context is refused with a message naming dropout, its shape, the axis and the rows.
"""

import numpy as np
import pytest
from cuda_support import Device

import tinylm
from tinylm import nn
from tinylm.autograd import Tensor
from tinylm.kernels.cuda import dropout as cuda_dropout
from tinylm.models import LSTMLanguageModel, Seq2SeqLSTM, Source, TransformerLanguageModel, TransformerSeq2Seq
from tinylm.nn import functional as F
from tinylm.ops.dropout import Dropout, counter_map, dropout
from tinylm.random import batch_rows, global_batch_rows
from tinylm.reference import dropout as reference

SEED = 20261129
P = 0.4

# (G rows, the sizes of the pieces): one piece, even and uneven splits, and an empty piece.
SPLITS = [(5, [5]), (6, [3, 3]), (7, [2, 5]), (7, [1, 1, 5]), (8, [2, 2, 2, 2]), (9, [4, 1, 3, 1]), (6, [2, 0, 4])]


def shape_with_batch(axis: int, rows: int) -> tuple[int, ...]:
    """A tensor shape with ``rows`` on ``axis``: leading and trailing axes around it."""
    return {0: (rows, 3, 4), 1: (2, rows, 5), 2: (3, 2, rows, 4)}[axis]


def pieces(sizes: list[int]) -> list[tuple[int, int]]:
    """[(first, local)] of consecutive pieces of the given sizes."""
    firsts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
    return [(int(f), int(b)) for f, b in zip(firsts, sizes)]


def take_rows(x, axis: int, first: int, local: int):
    return np.ascontiguousarray(np.take(x, np.arange(first, first + local), axis=axis))


def fresh_generator():
    """Every rank draws the same seed per dropout call: here, a generator of the same seed."""
    return np.random.default_rng(SEED)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("total, sizes", SPLITS)
def test_a_pieces_counters_are_its_slice_of_the_whole_batchs_counters(axis, total, sizes):
    whole = np.arange(np.prod(shape_with_batch(axis, total)), dtype=np.uint64).reshape(shape_with_batch(axis, total))
    for first, local in pieces(sizes):
        shape = shape_with_batch(axis, local)
        counters = reference.dropout_counters(int(np.prod(shape)), *counter_map(shape, axis, first, local, total))
        np.testing.assert_array_equal(counters.reshape(shape), take_rows(whole, axis, first, local))


@pytest.mark.parametrize("backend", ["numpy", "cython"])
@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("total, sizes", SPLITS)
def test_pieces_drawn_in_the_context_stack_to_the_whole_batchs_dropout(backend, axis, total, sizes):
    x = np.random.default_rng(axis + total).standard_normal(shape_with_batch(axis, total))
    with tinylm.use_backend(backend):
        whole = dropout(Tensor(x), P, generator=fresh_generator(), batch_axis=axis).data
        parts = []
        for first, local in pieces(sizes):
            with global_batch_rows(first, local, total):
                piece = Tensor(take_rows(x, axis, first, local))
                parts.append(dropout(piece, P, generator=fresh_generator(), batch_axis=axis).data)
    assert 0 < np.count_nonzero(whole) < whole.size  # some kept, some dropped
    np.testing.assert_array_equal(np.concatenate(parts, axis=axis), whole)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("total, sizes", SPLITS)
def test_the_cuda_kernel_draws_the_whole_batchs_mask_piece_by_piece(axis, total, sizes):
    Device("emulated").require()
    x = np.random.default_rng(axis + total).standard_normal(shape_with_batch(axis, total)).astype(np.float32)
    whole_y, whole_mask = reference.dropout_forward(x, P, SEED)
    masks, outputs = [], []
    for first, local in pieces(sizes):
        piece = take_rows(x, axis, first, local)
        y, mask = cuda_dropout.dropout_forward(piece, P, SEED, *counter_map(piece.shape, axis, first, local, total),
                                               threads=32, max_blocks=2)
        masks.append(mask)
        outputs.append(y)
    np.testing.assert_array_equal(np.concatenate(masks, axis=axis), whole_mask)
    np.testing.assert_array_equal(np.concatenate(outputs, axis=axis), whole_y)


def test_nn_dropout_and_f_dropout_take_the_batch_axis():
    x = np.random.default_rng(1).standard_normal((2, 6, 3))  # time-major: rows on axis 1
    layer = nn.Dropout(P, generator=fresh_generator(), batch_axis=1)
    whole = layer(Tensor(x)).data
    parts = []
    for first, local in pieces([4, 2]):
        with global_batch_rows(first, local, 6):
            piece = Tensor(take_rows(x, 1, first, local))
            parts.append(F.dropout(piece, P, True, fresh_generator(), batch_axis=1).data)
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), whole)
    assert layer.batch_axis == 1


def test_outside_the_context_the_batch_axis_changes_nothing():
    x = Tensor(np.random.default_rng(2).standard_normal((3, 4, 5)))
    plain = dropout(x, P, generator=fresh_generator()).data
    for axis in (0, 1, 2, -1):
        np.testing.assert_array_equal(dropout(x, P, generator=fresh_generator(), batch_axis=axis).data, plain)
    with global_batch_rows(0, 3, 3):  # the whole batch in one piece: the ordinary mask
        np.testing.assert_array_equal(dropout(x, P, generator=fresh_generator()).data, plain)


def test_a_tensor_whose_rows_do_not_match_the_context_is_refused():
    x = Tensor(np.ones((3, 5)))
    with global_batch_rows(2, 2, 4):
        with pytest.raises(ValueError, match=r"dropout: x of shape \(3, 5\) has 3 rows on batch_axis 0, but "
                                             r"global_batch_rows\(first=2, local=2, total=4\) expects 2"):
            dropout(x, P)
        with pytest.raises(ValueError, match=r"dropout: x of shape \(3, 5\) has 5 rows on batch_axis 1"):
            dropout(x, P, batch_axis=1)
        with pytest.raises(ValueError, match=r"dropout: batch_axis 2 is out of range for x of shape \(3, 5\)"):
            dropout(x, P, batch_axis=2)
        assert dropout(x, P, training=False) is x  # nothing drawn, nothing to check


def test_contexts_nest_and_refuse_rows_outside_the_batch():
    assert batch_rows() is None
    with global_batch_rows(0, 2, 4):
        with global_batch_rows(2, 2, 4):
            assert batch_rows() == (2, 2, 4)
        assert batch_rows() == (0, 2, 4)
    assert batch_rows() is None
    with pytest.raises(ValueError, match=r"global_batch_rows: rows \[3, 5\) do not fit in a batch of 4 rows"):
        with global_batch_rows(3, 2, 4):
            pass
    with pytest.raises(ValueError, match="global_batch_rows: first must be >= 0, got -1"):
        with global_batch_rows(-1, 2, 4):
            pass
    with pytest.raises(TypeError, match="global_batch_rows: local must be an integer, got float"):
        with global_batch_rows(0, 2.0, 4):
            pass
    assert batch_rows() is None


@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_dropout_with_a_counter_map_passes_gradcheck(backend):
    x = Tensor(np.random.default_rng(3).standard_normal((3, 2, 4)), requires_grad=True)
    with tinylm.use_backend(backend):
        # A fresh generator of the same seed per call keeps the mask fixed while gradcheck perturbs x.
        with global_batch_rows(1, 2, 5):
            assert tinylm.gradcheck(lambda t: dropout(t, P, generator=fresh_generator(), batch_axis=1), x)
        assert tinylm.gradcheck(lambda t: Dropout(P, SEED, offset=7, block=5, gap=11)(t), x)


# ---------------------------------------------------------------- whole models

def lstm_model():
    return LSTMLanguageModel(vocab_size=11, embedding_dim=6, hidden_dim=7, n_layers=2, dropout=0.3)


def transformer_model():
    return TransformerLanguageModel(vocab_size=11, d_model=8, n_heads=2, n_layers=2, max_len=16, dropout=0.3)


def loss_and_grads(model, ids, targets, state=None):
    """Summed cross-entropy of a batch and the gradients of every parameter."""
    model.zero_grad()
    logits, _ = model(ids, state)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
    loss.backward()
    return float(loss.item()), {name: p.grad.data.copy() for name, p in model.named_parameters()}


@pytest.mark.parametrize("backend", ["numpy", "cython"])
@pytest.mark.parametrize("build", [lstm_model, transformer_model], ids=["lstm", "transformer"])
@pytest.mark.parametrize("sizes", [[2, 3], [1, 2, 1, 1]], ids=["two-pieces", "four-pieces"])
def test_a_model_on_row_pieces_computes_the_whole_batch(backend, build, sizes):
    tinylm.manual_seed(0)
    model = build().double().train()
    total, steps = sum(sizes), 6
    rng = np.random.default_rng(4)
    ids, targets = rng.integers(0, 11, (total, steps)), rng.integers(0, 11, (total, steps))
    with tinylm.use_backend(backend):
        tinylm.manual_seed(SEED)
        whole_loss, whole_grads = loss_and_grads(model, ids, targets)
        summed_loss, summed_grads = 0.0, {name: np.zeros_like(g) for name, g in whole_grads.items()}
        for first, local in pieces(sizes):
            tinylm.manual_seed(SEED)  # every rank draws the same seeds, in the same order
            with global_batch_rows(first, local, total):
                loss, grads = loss_and_grads(model, ids[first:first + local], targets[first:first + local])
            summed_loss += loss
            for name, g in grads.items():
                summed_grads[name] += g
        tinylm.manual_seed(SEED + 1)  # another set of masks: the pieces above did not match by accident
        other_loss, _ = loss_and_grads(model, ids, targets)
    assert other_loss != pytest.approx(whole_loss, rel=1e-6)
    assert summed_loss == pytest.approx(whole_loss, rel=1e-12, abs=1e-12)
    for name, g in whole_grads.items():
        np.testing.assert_allclose(summed_grads[name], g, rtol=1e-12, atol=1e-12, err_msg=name)


def seq2seq_transformer():
    return TransformerSeq2Seq(11, 11, d_model=8, n_heads=2, num_encoder_layers=1, num_decoder_layers=1,
                              dim_feedforward=16, dropout=0.3)


def seq2seq_lstm():
    """One layer: the encoder runs its LSTM on groups of rows of one length, and a layer's
    dropout between LSTM layers would see a group, not the process's rows."""
    return Seq2SeqLSTM(11, 11, embedding_dim=8, hidden_dim=8, n_layers=1, dropout=0.3)


@pytest.mark.parametrize("build", [seq2seq_transformer, seq2seq_lstm], ids=["transformer", "lstm"])
def test_a_translation_model_on_row_pieces_computes_the_whole_batch(build):
    tinylm.manual_seed(0)
    model = build().double().train()
    rng = np.random.default_rng(6)
    total, lengths = 5, np.array([6, 3, 6, 4, 1])
    source = rng.integers(4, 11, (total, 6))
    source[np.arange(6) >= lengths[:, None]] = 0  # padding after each row's length
    ids, targets = rng.integers(4, 11, (total, 5)), rng.integers(4, 11, (total, 5))
    tinylm.manual_seed(SEED)
    whole_loss, whole_grads = loss_and_grads(model, ids, targets, Source(source, lengths))
    summed_loss, summed_grads = 0.0, {name: np.zeros_like(g) for name, g in whole_grads.items()}
    for first, local in pieces([2, 3]):
        rows = slice(first, first + local)
        tinylm.manual_seed(SEED)
        with global_batch_rows(first, local, total):
            loss, grads = loss_and_grads(model, ids[rows], targets[rows], Source(source[rows], lengths[rows]))
        summed_loss += loss
        for name, g in grads.items():
            summed_grads[name] += g
    assert summed_loss == pytest.approx(whole_loss, rel=1e-12, abs=1e-12)
    for name, g in whole_grads.items():
        np.testing.assert_allclose(summed_grads[name], g, rtol=1e-12, atol=1e-12, err_msg=name)


def test_without_the_context_the_pieces_draw_other_masks():
    """The context is what makes the pieces agree: without it a piece draws the first
    rows' masks for its own rows."""
    tinylm.manual_seed(0)
    model = lstm_model().double().train()
    rng = np.random.default_rng(5)
    ids, targets = rng.integers(0, 11, (4, 6)), rng.integers(0, 11, (4, 6))
    tinylm.manual_seed(SEED)
    whole_loss, _ = loss_and_grads(model, ids, targets)
    summed = 0.0
    for first, local in pieces([2, 2]):
        tinylm.manual_seed(SEED)
        summed += loss_and_grads(model, ids[first:first + local], targets[first:first + local])[0]
    assert summed != pytest.approx(whole_loss, rel=1e-6)
