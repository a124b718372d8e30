"""The translation models against PyTorch on the same weights: TransformerSeq2Seq against
torch.nn.Transformer with padding masks, Seq2SeqLSTM against the same model written in
torch with pack_padded_sequence. Logits and every parameter's gradient, in float64."""

import math

import numpy as np
import pytest
from torch_compare import TOLERANCES, copy_weights_to_torch

import tinylm
from tinylm.models import Seq2SeqLSTM, Source, TransformerSeq2Seq
from tinylm.models.seq2seq import BOS, PAD, key_padding_mask

torch = pytest.importorskip("torch")

SOURCE_VOCAB, TARGET_VOCAB = 11, 9


def batch(seed, lengths, width, target_length):
    rng = np.random.default_rng(seed)
    lengths = np.asarray(lengths, dtype=np.int64)
    ids = rng.integers(3, SOURCE_VOCAB, size=(len(lengths), width))
    ids[key_padding_mask(lengths, width)] = PAD
    targets = rng.integers(3, TARGET_VOCAB, size=(len(lengths), target_length))
    targets[:, 0] = BOS
    return Source(ids, lengths), targets


def compare(model, torch_model, torch_forward, source, targets):
    """Logits of both and, after backward of the same random weighting of them, every
    parameter's gradient, by name."""
    model.train()  # dropout is 0: train mode only so that torch keeps to its plain path
    torch_model.train()
    logits, _ = model(targets, source)
    their_logits = torch_forward(torch_model, source, targets)
    weighting = np.random.default_rng(0).standard_normal(logits.shape)
    (logits * tinylm.Tensor(weighting)).sum().backward()
    (their_logits * torch.from_numpy(weighting)).sum().backward()
    tolerance = TOLERANCES[np.float64]
    np.testing.assert_allclose(logits.numpy(), their_logits.detach().numpy(), **tolerance)
    theirs = dict(torch_model.named_parameters())
    ours = dict(model.named_parameters())
    assert set(ours) == set(theirs)
    for name, parameter in ours.items():
        np.testing.assert_allclose(parameter.grad.numpy(), theirs[name].grad.numpy(), **tolerance, err_msg=name)


# ------------------------------------------------------------------------------ transformer


class TorchTransformerSeq2Seq(torch.nn.Module):
    """torch.nn.Transformer with the embeddings and output layer of TransformerSeq2Seq,
    named as it names them."""

    def __init__(self, d_model, n_heads, layers, dim_feedforward, norm_first, max_len):
        super().__init__()
        options = dict(dtype=torch.float64)
        self.source_embedding = torch.nn.Embedding(SOURCE_VOCAB, d_model, **options)
        self.target_embedding = torch.nn.Embedding(TARGET_VOCAB, d_model, **options)
        self.transformer = torch.nn.Transformer(d_model, n_heads, layers[0], layers[1], dim_feedforward, dropout=0.0,
                                                batch_first=True, norm_first=norm_first, **options)
        self.fc = torch.nn.Linear(d_model, TARGET_VOCAB, **options)
        position = np.arange(max_len)[:, None] * np.exp(-math.log(10000.0) * np.arange(0, d_model, 2) / d_model)
        self.table = torch.zeros(max_len, d_model, dtype=torch.float64)
        self.table[:, 0::2] = torch.from_numpy(np.sin(position))
        self.table[:, 1::2] = torch.from_numpy(np.cos(position))

    def embed(self, embedding, ids):
        return embedding(torch.from_numpy(ids)) * math.sqrt(embedding.embedding_dim) + self.table[:ids.shape[1]]

    def forward(self, source, targets):
        padding = torch.from_numpy(key_padding_mask(source.lengths, source.ids.shape[1]))
        causal = torch.nn.Transformer.generate_square_subsequent_mask(targets.shape[1], dtype=torch.float64)
        out = self.transformer(self.embed(self.source_embedding, source.ids),
                               self.embed(self.target_embedding, targets), tgt_mask=causal,
                               src_key_padding_mask=padding, memory_key_padding_mask=padding,
                               tgt_is_causal=True)
        return self.fc(out)

    def last_cross_attention(self, source, targets):
        """The last decoder layer's cross-attention weights averaged over heads, (B, T, S):
        the decoder run layer by layer up to the query that attention reads."""
        padding = torch.from_numpy(key_padding_mask(source.lengths, source.ids.shape[1]))
        causal = torch.nn.Transformer.generate_square_subsequent_mask(targets.shape[1], dtype=torch.float64)
        memory = self.transformer.encoder(self.embed(self.source_embedding, source.ids),
                                          src_key_padding_mask=padding)
        x, *layers, last = [self.embed(self.target_embedding, targets), *self.transformer.decoder.layers]
        for layer in layers:
            x = layer(x, memory, tgt_mask=causal, memory_key_padding_mask=padding, tgt_is_causal=True)
        if last.norm_first:
            query = last.norm2(x + last._sa_block(last.norm1(x), causal, None, is_causal=True))
        else:
            query = last.norm1(x + last._sa_block(x, causal, None, is_causal=True))
        return last.multihead_attn(query, memory, memory, key_padding_mask=padding, need_weights=True)[1]


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")  # torch's notes on its own fast path
@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
@pytest.mark.parametrize("norm_first", [True, False])
def test_transformer_matches_torch_nn_transformer_with_padding(norm_first):
    tinylm.manual_seed(1)
    config = dict(d_model=8, n_heads=2, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=12,
                  max_len=16, norm_first=norm_first)
    model = TransformerSeq2Seq(SOURCE_VOCAB, TARGET_VOCAB, dropout=0.0, **config).double()
    reference = TorchTransformerSeq2Seq(8, 2, (2, 2), 12, norm_first, 16)
    copy_weights_to_torch(model, reference)  # strict: every name and shape must match torch's
    source, targets = batch(2, [3, 6, 1, 6], width=7, target_length=5)
    compare(model, reference, lambda m, s, t: m(s, t), source, targets)
    model.eval()
    reference.eval()
    with torch.no_grad():
        expected = reference.last_cross_attention(source, targets).numpy()
    np.testing.assert_allclose(model.cross_attention(targets, source), expected, **TOLERANCES[np.float64])


# ------------------------------------------------------------------------------ LSTM


class TorchSeq2SeqLSTM(torch.nn.Module):
    """Seq2SeqLSTM written in torch, the encoder on packed sequences."""

    def __init__(self, embedding_dim, hidden_dim, n_layers, attention):
        super().__init__()
        options, half = dict(dtype=torch.float64), hidden_dim // 2
        self.n_layers, self.hidden_dim, self.score = n_layers, hidden_dim, attention
        self.encoder, self.decoder, self.attention = torch.nn.Module(), torch.nn.Module(), torch.nn.Module()
        self.encoder.embedding = torch.nn.Embedding(SOURCE_VOCAB, embedding_dim, **options)
        self.encoder.lstm = torch.nn.LSTM(embedding_dim, half, n_layers, batch_first=True, bidirectional=True,
                                          **options)
        self.decoder.embedding = torch.nn.Embedding(TARGET_VOCAB, embedding_dim, **options)
        self.decoder.lstm = torch.nn.LSTM(embedding_dim, hidden_dim, n_layers, batch_first=True, **options)
        if attention == "general":
            self.attention.linear_in = torch.nn.Linear(hidden_dim, hidden_dim, bias=False, **options)
        if attention == "additive":
            self.attention.linear_query = torch.nn.Linear(hidden_dim, hidden_dim, **options)
            self.attention.linear_context = torch.nn.Linear(hidden_dim, hidden_dim, bias=False, **options)
            self.attention.v = torch.nn.Linear(hidden_dim, 1, bias=False, **options)
        self.attention.linear_out = torch.nn.Linear(2 * hidden_dim, hidden_dim, bias=False, **options)
        self.fc = torch.nn.Linear(hidden_dim, TARGET_VOCAB, **options)

    def encode(self, source):
        lengths, width = torch.from_numpy(source.lengths), source.ids.shape[1]
        packed = torch.nn.utils.rnn.pack_padded_sequence(self.encoder.embedding(torch.from_numpy(source.ids)), lengths,
                                                         batch_first=True, enforce_sorted=False)
        out, (h, c) = self.encoder.lstm(packed)
        memory, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=width)
        batch = len(lengths)

        def bridge(state):  # (2L, B, H/2) -> (L, B, H), each layer's [forward; backward]
            return state.view(self.n_layers, 2, batch, -1).transpose(1, 2).reshape(self.n_layers, batch, -1)

        return memory, (bridge(h), bridge(c))

    def forward(self, source, targets):
        memory, state = self.encode(source)
        queries, _ = self.decoder.lstm(self.decoder.embedding(torch.from_numpy(targets)), state)
        attention = self.attention
        if self.score == "additive":
            hidden = torch.tanh(attention.linear_query(queries)[:, :, None] + attention.linear_context(memory)[:, None])
            scores = attention.v(hidden).squeeze(-1)
        else:
            keys = attention.linear_in(memory) if self.score == "general" else memory
            scores = queries @ keys.transpose(1, 2)
        padding = torch.from_numpy(key_padding_mask(source.lengths, source.ids.shape[1]))
        weights = torch.softmax(scores.masked_fill(padding[:, None, :], -math.inf), dim=-1)
        self.weights = weights.detach()  # (B, T, S), for the cross_attention check
        attentional = torch.tanh(attention.linear_out(torch.cat([weights @ memory, queries], dim=-1)))
        return self.fc(attentional)


@pytest.mark.parametrize("attention, n_layers", [("general", 1), ("dot", 2), ("additive", 1)])
def test_seq2seq_lstm_matches_torch_with_packed_sequences(attention, n_layers):
    tinylm.manual_seed(3)
    model = Seq2SeqLSTM(SOURCE_VOCAB, TARGET_VOCAB, embedding_dim=5, hidden_dim=6, n_layers=n_layers,
                        attention=attention, dropout=0.0).double()
    reference = TorchSeq2SeqLSTM(5, 6, n_layers, attention)
    copy_weights_to_torch(model, reference)
    source, targets = batch(4, [2, 5, 5, 1, 3], width=6, target_length=4)
    compare(model, reference, lambda m, s, t: m(s, t), source, targets)
    np.testing.assert_allclose(model.cross_attention(targets, source), reference.weights.numpy(),
                               **TOLERANCES[np.float64])


def test_the_lstm_encoder_matches_torch_packed_outputs_and_final_states():
    """Outputs 0 at padding, as pad_packed_sequence gives; h and c at each row's own end."""
    tinylm.manual_seed(5)
    model = Seq2SeqLSTM(SOURCE_VOCAB, TARGET_VOCAB, embedding_dim=4, hidden_dim=6, n_layers=2, dropout=0.0).double()
    reference = TorchSeq2SeqLSTM(4, 6, 2, "general")
    copy_weights_to_torch(model, reference)
    source, _ = batch(6, [4, 1, 3, 4], width=5, target_length=1)
    memory, (h, c) = model.encoder(source.ids, source.lengths)
    with torch.no_grad():
        their_memory, (their_h, their_c) = reference.encode(source)
    for ours, theirs in [(memory, their_memory), (h, their_h), (c, their_c)]:
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), **TOLERANCES[np.float64])
    assert np.all(memory.numpy()[key_padding_mask(source.lengths, 5)] == 0)
