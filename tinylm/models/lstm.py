"""The seed's model: embedding, LSTM, dropout, linear."""

from __future__ import annotations

import numpy as np

from tinylm import backends, nn


class LSTMLanguageModel(nn.Module):
    """Predicts the next token at every position.

    ids (B, T) -> embedding (B, T, E) -> LSTM (B, T, H) -> dropout -> linear -> logits (B, T, V).
    ``forward(ids, state=None)`` returns ``(logits, state)``; pass the state (detached)
    to the next call to continue the text (truncated backpropagation through time).
    """

    def __init__(self, vocab_size: int, embedding_dim: int = 128, hidden_dim: int = 256,
                 n_layers: int = 2, dropout: float = 0.1):
        super().__init__()
        self.config = dict(vocab_size=vocab_size, embedding_dim=embedding_dim, hidden_dim=hidden_dim,
                           n_layers=n_layers, dropout=dropout)
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_dim, num_layers=n_layers, batch_first=True,
                            dropout=dropout if n_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_dim, vocab_size)

    def forward(self, ids, state=None):
        embedded = self.embedding(ids)  # (B, T, E)
        output, state = self.lstm(embedded, state)  # (B, T, H), ((L, B, H), (L, B, H))
        return self.fc(self.dropout(output)), state  # (B, T, V)


class LSTMStepper:
    """The model's next-token logits one step at a time, for generation: the same maths as
    ``LSTMLanguageModel.forward`` in eval mode, on raw arrays, with no autograd graph.

    At batch 1 a step is a few matrix-vector products, so what the graph costs per op (a
    Function, Tensors, checks: about 15 µs, 22 ops a step) outweighs the arithmetic.
    Here each layer is one product and one cell kernel: the gates are
    [x, h] @ [W_ih, W_hh]ᵀ + b_ih + b_hh (the two products of the layer as one, the
    weights stacked and transposed once), then ``lstm_cell_forward``. The weights are
    copied when the stepper is made, so make a new one after the model changes.

        stepper = LSTMStepper(model)
        logits, state = stepper.step(np.array([token]))         # logits (1, V)
        logits, state = stepper.step(np.array([next_token]), state)
    """

    def __init__(self, model: LSTMLanguageModel):
        lstm = model.lstm
        self.embedding = model.embedding.weight.data  # (V, E)
        xp = backends.get_array_module(self.embedding)
        self.layers = []
        for k in range(lstm.num_layers):
            w_ih, w_hh = getattr(lstm, f"weight_ih_l{k}").data, getattr(lstm, f"weight_hh_l{k}").data
            bias = (getattr(lstm, f"bias_ih_l{k}").data + getattr(lstm, f"bias_hh_l{k}").data) if lstm.bias \
                else xp.zeros(w_ih.shape[0], dtype=w_ih.dtype)
            stacked_t = xp.ascontiguousarray(xp.concatenate([w_ih, w_hh], axis=1).T)  # (E or H, + H, 4H)
            self.layers.append((stacked_t, bias))
        self.fc_weight_t = xp.ascontiguousarray(model.fc.weight.data.T)  # (H, V)
        self.fc_bias = model.fc.bias.data if model.fc.bias is not None else 0
        self.hidden = lstm.hidden_size

    def initial_state(self, batch: int):
        xp = backends.get_array_module(self.embedding)
        zeros = xp.zeros((len(self.layers), batch, self.hidden), dtype=self.embedding.dtype)
        return zeros, zeros.copy()

    def step(self, ids, state=None):
        """ids (B,) -> logits (B, V) and the new state ((L, B, H), (L, B, H))."""
        h, c = state if state is not None else self.initial_state(len(ids))
        xp = backends.get_array_module(self.embedding)
        new_h, new_c = [], []
        x = backends.kernel("embedding_forward")(self.embedding, ids)  # (B, E)
        for k, (stacked_t, bias) in enumerate(self.layers):
            gates = xp.concatenate([x, h[k]], axis=1) @ stacked_t + bias  # (B, 4H)
            x, c_k, _ = backends.kernel("lstm_cell_forward")(gates, c[k])  # h of this layer: the next one's input
            new_h.append(x)
            new_c.append(c_k)
        return x @ self.fc_weight_t + self.fc_bias, (xp.stack(new_h), xp.stack(new_c))
