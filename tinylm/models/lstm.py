"""The seed's model: embedding, LSTM, dropout, linear."""

from __future__ import annotations

from tinylm import nn


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
