"""A small GPT-style transformer: causal self-attention blocks with pre-LayerNorm."""

from __future__ import annotations

from tinylm import nn


class Block(nn.Module):
    """x + attention(LN(x)), then x + MLP(LN(x)): pre-LayerNorm residual block, MLP 4x wide."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp_in = nn.Linear(d_model, 4 * d_model)
        self.mlp_out = nn.Linear(4 * d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):  # (B, T, d_model)
        normed = self.ln_1(x)
        attended, _ = self.attn(normed, normed, normed, is_causal=True)
        x = x + self.dropout(attended)
        return x + self.dropout(self.mlp_out(self.mlp_in(self.ln_2(x)).gelu()))


class TransformerLanguageModel(nn.Module):
    """ids (B, T) -> token embedding + sinusoidal positions -> n_layers blocks -> LayerNorm
    -> linear -> logits (B, T, V). Position t attends to positions 0..t only."""

    def __init__(self, vocab_size: int, d_model: int = 128, n_heads: int = 4, n_layers: int = 4,
                 max_len: int = 512, dropout: float = 0.1):
        super().__init__()
        self.config = dict(vocab_size=vocab_size, d_model=d_model, n_heads=n_heads, n_layers=n_layers,
                           max_len=max_len, dropout=dropout)
        self.max_len = max_len
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.position = nn.SinusoidalPositionalEncoding(d_model, max_len=max_len)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, dropout) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, vocab_size)

    @staticmethod
    def parameter_shapes(vocab_size: int, d_model: int, n_heads: int, n_layers: int, max_len: int,
                         dropout: float = 0.0) -> dict[str, tuple[int, ...]]:
        """The name and shape of every parameter this config makes, without making them."""
        d = d_model
        shapes = {"embedding.weight": (vocab_size, d)}
        for i in range(n_layers):
            block = {"ln_1.weight": (d,), "ln_1.bias": (d,), "attn.in_proj_weight": (3 * d, d),
                     "attn.in_proj_bias": (3 * d,), "attn.out_proj.weight": (d, d), "attn.out_proj.bias": (d,),
                     "ln_2.weight": (d,), "ln_2.bias": (d,), "mlp_in.weight": (4 * d, d), "mlp_in.bias": (4 * d,),
                     "mlp_out.weight": (d, 4 * d), "mlp_out.bias": (d,)}
            shapes.update({f"blocks.{i}.{name}": shape for name, shape in block.items()})
        return {**shapes, "ln_f.weight": (d,), "ln_f.bias": (d,), "fc.weight": (vocab_size, d), "fc.bias": (vocab_size,)}

    def forward(self, ids):
        x = self.dropout(self.position(self.embedding(ids)))  # (B, T, d_model)
        for block in self.blocks:
            x = block(x)
        return self.fc(self.ln_f(x))  # (B, T, V)
