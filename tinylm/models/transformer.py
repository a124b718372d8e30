"""A small GPT-style transformer: causal self-attention blocks with pre-LayerNorm."""

from __future__ import annotations

import numpy as np

from tinylm import nn, ops
from tinylm.autograd import no_grad
from tinylm.models.language_model import LanguageModel

GELU_APPROXIMATIONS = ("tanh", "none")  # torch's F.gelu(approximate=...)


class Block(nn.Module):
    """x + attention(LN(x)), then x + MLP(LN(x)): pre-LayerNorm residual block, MLP 4x wide."""

    def __init__(self, d_model: int, n_heads: int, dropout: float, gelu_approximate: str = "tanh"):
        super().__init__()
        self.gelu_approximate = gelu_approximate  # 'tanh' (GPT-2's) or 'none' (exact, erf)
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp_in = nn.Linear(d_model, 4 * d_model)
        self.mlp_out = nn.Linear(4 * d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):  # (B, T, d_model)
        normed = self.ln_1(x)
        attended, _ = self.attn(normed, normed, normed, is_causal=True, need_weights=False)
        x = x + self.dropout(attended)
        hidden = ops.gelu(self.mlp_in(self.ln_2(x)), approximate=self.gelu_approximate)  # (B, T, 4 d_model)
        return x + self.dropout(self.mlp_out(hidden))


class TransformerLanguageModel(LanguageModel):
    """ids (B, T) -> token embedding + sinusoidal positions -> n_layers blocks -> LayerNorm
    -> linear -> logits (B, T, V). Position t attends to positions 0..t only.

    It carries no state: each call reads its ids on its own, positions counted from 0, at
    most ``max_len`` of them. ``forward(ids)`` returns ``(logits, None)``, the shape every
    language model's forward has (``tinylm.models.language_model``); ``stepper()`` rereads
    the last ``max_len`` tokens at every step (``TransformerStepper``).
    """

    def __init__(self, vocab_size: int, d_model: int = 128, n_heads: int = 4, n_layers: int = 4,
                 max_len: int = 512, dropout: float = 0.1, gelu_approximate: str = "tanh"):
        super().__init__()
        if gelu_approximate not in GELU_APPROXIMATIONS:
            raise ValueError(f"TransformerLanguageModel: gelu_approximate must be one of {GELU_APPROXIMATIONS}, "
                             f"got {gelu_approximate!r}")
        # Everything torch needs to rebuild the model exactly, the GELU's approximation included.
        self.config = dict(vocab_size=vocab_size, d_model=d_model, n_heads=n_heads, n_layers=n_layers,
                           max_len=max_len, dropout=dropout, gelu_approximate=gelu_approximate)
        self.max_len = max_len
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.position = nn.SinusoidalPositionalEncoding(d_model, max_len=max_len)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, dropout, gelu_approximate) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, vocab_size)

    @staticmethod
    def parameter_shapes(vocab_size: int, d_model: int, n_heads: int, n_layers: int, max_len: int,
                         dropout: float = 0.0, gelu_approximate: str = "tanh") -> dict[str, tuple[int, ...]]:
        """The name and shape of every parameter this config makes, without making them."""
        d = d_model
        shapes = {"embedding.weight": (vocab_size, d)}
        for i in range(n_layers):
            block = {"ln_1.weight": (d,), "ln_1.bias": (d,), "attn.in_proj_weight": (3 * d, d),
                     "attn.in_proj_bias": (3 * d,), "attn.out_proj.weight": (d, d), "attn.out_proj.bias": (d,),
                     "ln_2.weight": (d,), "ln_2.bias": (d,), "mlp_in.weight": (4 * d, d), "mlp_in.bias": (4 * d,),
                     "mlp_out.weight": (d, 4 * d), "mlp_out.bias": (d,)}
            shapes.update({f"blocks.{i}.{name}": shape for name, shape in block.items()})
        return {**shapes, "ln_f.weight": (d,), "ln_f.bias": (d,), "fc.weight": (vocab_size, d),
                "fc.bias": (vocab_size,)}

    def forward(self, ids, state=None):
        """ids (B, T) -> (logits (B, T, V), None). ``state`` is there for the shared
        interface only: a transformer has none to continue from, and one passed in is an
        error rather than silently ignored."""
        if state is not None:
            raise ValueError(f"{type(self).__name__} carries no state: it reads each chunk of ids on its own, "
                             f"so forward takes state=None (got a {type(state).__name__})")
        x = self.dropout(self.position(self.embedding(ids)))  # (B, T, d_model)
        for block in self.blocks:
            x = block(x)
        return self.fc(self.ln_f(x)), None  # (B, T, V)

    def stepper(self) -> "TransformerStepper":
        return TransformerStepper(self)


class TransformerStepper:
    """Token-by-token generation for ``TransformerLanguageModel``, the simple way: every
    call reruns the whole model on the last ``max_len`` tokens of the context and keeps
    the logits of the last position. The state is that context, (B, at most max_len) ids.

    Each step recomputes the keys and values of every earlier position, so a token costs
    a full forward over the context. Future work: a key/value cache, which keeps each
    block's keys and values and computes only the new position's.

        stepper = model.stepper()
        logits, context = stepper.start(np.array([prompt]))        # logits (1, V)
        logits, context = stepper.step(np.array([next_token]), context)
    """

    def __init__(self, model: TransformerLanguageModel):
        self.model = model

    def start(self, prompt_ids, state=None):
        """prompt_ids (B, T) -> logits (B, V) after the prompt's last token, and the context.
        ``state`` is forward's, always None: a transformer carries none."""
        if state is not None:
            raise ValueError("TransformerStepper.start: a transformer carries no state; pass state=None")
        context = np.asarray(prompt_ids)
        if context.ndim != 2 or context.shape[1] == 0:
            raise ValueError(f"TransformerStepper.start: prompt_ids {context.shape} must be (B, T) with T >= 1")
        return self._last_logits(context[:, -self.model.max_len:])

    def step(self, ids, context):
        """ids (B,) appended to the context -> logits (B, V) after them, and the new context."""
        ids = np.asarray(ids)
        if ids.shape != (context.shape[0],):
            raise ValueError(f"TransformerStepper.step: ids {ids.shape} must be (B,) = ({context.shape[0]},)")
        context = np.concatenate([context, ids[:, None]], axis=1)  # (B, T + 1)
        return self._last_logits(context[:, -self.model.max_len:])

    def select(self, context, rows):
        """The context of batch rows ``rows`` (B',), in that order, repeats allowed: for beam search."""
        return context[rows]

    def _last_logits(self, context):
        with no_grad():
            logits, _ = self.model(context)  # (B, T, V)
        return logits.data[:, -1], context
