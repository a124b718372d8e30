"""A small GPT-style transformer: causal self-attention blocks with pre-LayerNorm."""

from __future__ import annotations

import math
from typing import NamedTuple

from tinylm import backends, nn, ops
from tinylm.models.language_model import LanguageModel
from tinylm.models.seq2seq import checked_rows
from tinylm.reference.embedding import embedding_forward
from tinylm.reference.gelu import gelu_exact_forward

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
    language model's forward has (``tinylm.models.language_model``); ``stepper()`` keeps
    every block's keys and values and computes one new position a step
    (``TransformerStepper``, a key/value cache).
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


class TransformerStepperState(NamedTuple):
    """The state of a ``TransformerStepper``: raw arrays of the parameters' array module.

    - ``context`` (B, T): the ids read so far, at most ``max_len`` of them (the last ones),
      kept for the fallback that rereads them once the positions run out;
    - ``keys``, ``values`` (n_layers, B, nh, T, hs): every block's attention keys and
      values at those T positions, heads split as in ``MultiheadAttention``.
    """

    context: object
    keys: object
    values: object

    @property
    def shape(self) -> tuple[int, int]:
        """(B, T): the batch size and the number of positions held, the shape of ``context``
        (and of the whole state of the stepper before it had a cache)."""
        return tuple(self.context.shape)


class TransformerStepper:
    """Token-by-token generation for ``TransformerLanguageModel`` with a key/value cache.

    In a causal transformer a position's keys and values (in every block) depend only on
    the tokens up to it, so they never change once computed. The state keeps them, per
    block, for every position so far (``TransformerStepperState``), and ``step`` computes
    the new position only: its embedding plus position t, then in each block LN, its query,
    key and value (one product with the packed ``in_proj_weight``), the attention of its
    query over the cached keys plus its own (no mask: every cached position is in the
    past), out_proj and the MLP; then the final LayerNorm and the output layer. A token
    costs O(T) attention instead of a forward over the whole context.

    ``start`` reads the prompt through the blocks once (causal attention over all of it,
    the same kernel as ``forward``) and fills the caches. Everything is computed on raw
    arrays with no autograd graph, in the parameters' array module, read from the model
    at each call (a change of weights is seen at once).

    Positions run out at ``max_len``: the sinusoidal table and ``forward`` stop there.
    Once the context holds ``max_len`` tokens, a step falls back to what the stepper did
    before it had a cache: it reruns the model over the last ``max_len`` tokens (the
    oldest one dropped, the rest shifted to positions one lower, which changes all their
    keys and values) and refills the caches from that pass. From there on every step
    costs a full pass over ``max_len`` tokens. A prompt longer than ``max_len`` is read
    the same way, its last ``max_len`` tokens only.

    ``step`` never changes the state it is given: it returns a new one whose caches are
    one position longer (a copy of the old ones plus the new position's), so the same
    state may be stepped twice, as beam search does after ``select`` repeats a row.

    The cache holds eval-mode keys and values (no dropout): in training mode with
    dropout the stepper refuses rather than compute something ``forward`` would not.

    Int8 weights: a model loaded from an int8 run (``python -m tinylm.quantize``) carries
    ``model.int8_weights`` (``tinylm.runs``); every product with a weight that has an int8
    version (the attention projections, the MLP, the output layer) then goes through the
    ``int8_matmul`` kernel, which reads a quarter of the bytes. The embedding lookup reads
    the model's dequantized table, the same values. Logits are ``forward``'s (on the
    dequantized weights the model holds) up to float32 rounding.

        stepper = model.stepper()
        logits, state = stepper.start(np.array([prompt]))            # logits (1, V)
        logits, state = stepper.step(np.array([next_token]), state)  # one position more
        state = stepper.select(state, rows)                          # beam search
    """

    def __init__(self, model: TransformerLanguageModel):
        self.model = model
        config = model.config
        self.n_layers, self.n_heads = config["n_layers"], config["n_heads"]
        self.head_size = config["d_model"] // config["n_heads"]  # hs
        self.scale = 1.0 / math.sqrt(self.head_size)
        # id(parameter) -> its int8 (q (N, K), scale (N,)), for the weights an int8 run holds as int8
        int8 = getattr(model, "int8_weights", None) or {}
        xp = self._xp()
        self.int8 = {id(parameter): tuple(xp.asarray(a) for a in int8[name])
                     for name, parameter in model.named_parameters() if name in int8}

    def start(self, prompt_ids, state=None):
        """prompt_ids (B, T >= 1) -> (logits (B, V) after the prompt's last token, the
        state with the caches of its last ``max_len`` positions). ``state`` is forward's,
        always None: a transformer carries none."""
        if state is not None:
            raise ValueError("TransformerStepper.start: a transformer carries no state; pass state=None")
        self._check_mode("start")
        context = self._xp().asarray(prompt_ids)
        if context.ndim != 2 or context.shape[1] == 0 or context.dtype.kind not in "iu":
            raise ValueError(f"TransformerStepper.start: prompt_ids {context.dtype} {tuple(context.shape)} must be "
                             f"integer ids (B, T) with T >= 1")
        return self._read(context[:, -self.model.max_len:])

    def step(self, ids, state: TransformerStepperState):
        """ids (B,) the tokens just chosen -> (logits (B, V) after them, the new state)."""
        if not isinstance(state, TransformerStepperState):
            raise TypeError(f"TransformerStepper.step: state must be the TransformerStepperState that start or "
                            f"step returned, got a {type(state).__name__}")
        self._check_mode("step")
        xp = self._xp()
        ids = xp.asarray(ids)
        batch, length = state.context.shape
        if ids.shape != (batch,) or ids.dtype.kind not in "iu":
            raise ValueError(f"TransformerStepper.step: ids {ids.dtype} {tuple(ids.shape)} must be integer ids "
                             f"(B,) = ({batch},)")
        context = xp.concatenate([state.context, ids[:, None].astype(state.context.dtype)], axis=1)  # (B, T + 1)
        if length == self.model.max_len:  # no position left for the new token: reread the last max_len
            return self._read(context[:, -self.model.max_len:])
        return self._extend(ids, state._replace(context=context))

    def select(self, state: TransformerStepperState, rows) -> TransformerStepperState:
        """The state of batch rows ``rows`` (B',) ints, in that order, repeats allowed: for
        beam search. Takes those rows of the context and of every block's cache."""
        rows = checked_rows("TransformerStepper.select", rows, state.context.shape[0], state.context)
        return TransformerStepperState(state.context[rows], state.keys[:, rows], state.values[:, rows])

    # ------------------------------------------------------------------ the maths

    def _xp(self):
        return backends.get_array_module(self.model.fc.weight.data)

    def _check_mode(self, name: str) -> None:
        if self.model.training and self.model.config["dropout"] > 0:
            raise RuntimeError(f"TransformerStepper.{name}: the model is in training mode with dropout "
                               f"{self.model.config['dropout']}, which the cached keys and values leave out; "
                               f"call model.eval() first")

    def _embed(self, ids, first_position: int):
        """ids (B, T) at positions first_position.. -> token embedding + sinusoidal code (B, T, d_model)."""
        model, xp = self.model, self._xp()
        weight = model.embedding.weight.data  # (V, d_model)
        length = ids.shape[1]
        positions = model.position.table[first_position:first_position + length].astype(weight.dtype)  # (T, d)
        return embedding_forward(weight, ids) + xp.asarray(positions)  # (B, T, d_model)

    def _linear(self, x, weight, bias):
        """x (..., k) @ weight (m, k)ᵀ + bias (m,) -> (..., m): through ``int8_matmul`` when the
        weight has an int8 version, else ``_linear``'s float product."""
        int8 = self.int8.get(id(weight))
        if int8 is None:
            return _linear(x, weight, bias)
        rows = self._xp().ascontiguousarray(x.reshape(-1, x.shape[-1]))  # (N, k)
        y = backends.kernel("int8_matmul")(rows, *int8).reshape(*x.shape[:-1], -1)  # (..., m)
        return y + bias.data if bias is not None else y

    def _heads(self, x):
        """(B, T, d_model) -> (B, nh, T, hs)."""
        batch, length = x.shape[0], x.shape[1]
        return x.reshape(batch, length, self.n_heads, self.head_size).transpose(0, 2, 1, 3)  # (B, nh, T, hs)

    def _query_key_value(self, block: Block, x):
        """x (B, T, d_model) -> q, k, v, each (B, nh, T, hs): LN, then one product with the
        packed projection (3 d_model, d_model), split in three."""
        normed = _layer_norm(x, block.ln_1)  # (B, T, d_model)
        projected = self._linear(normed, block.attn.in_proj_weight, block.attn.in_proj_bias)  # (B, T, 3 d_model)
        q, k, v = (self._heads(part) for part in self._xp().split(projected, 3, axis=-1))
        return q, k, v

    def _rest_of_block(self, block: Block, x, attended):
        """x (B, T, d_model) and the heads' attention output (B, nh, T, hs) -> the block's
        output: x + out_proj(heads merged), then x + MLP(LN(x))."""
        batch, length, width = x.shape
        merged = attended.transpose(0, 2, 1, 3).reshape(batch, length, width)  # (B, T, d_model)
        x = x + self._linear(merged, block.attn.out_proj.weight, block.attn.out_proj.bias)
        hidden = self._linear(_layer_norm(x, block.ln_2), block.mlp_in.weight, block.mlp_in.bias)  # (B, T, 4 d_model)
        hidden = _gelu(hidden, block.gelu_approximate)
        return x + self._linear(hidden, block.mlp_out.weight, block.mlp_out.bias)

    def _logits(self, x):
        """The last positions' x (B, d_model) -> logits (B, V): final LayerNorm, output layer."""
        model = self.model
        return self._linear(_layer_norm(x, model.ln_f), model.fc.weight, model.fc.bias)

    def _read(self, context):
        """Run the whole context (B, T <= max_len), positions 0.., through the blocks:
        (logits (B, V) after its last token, a state whose caches hold its T positions)."""
        batch, length = context.shape
        x = self._embed(context, 0)  # (B, T, d_model)
        shape = (self.n_layers, batch, self.n_heads, length, self.head_size)
        keys, values = self._xp().empty(shape, x.dtype), self._xp().empty(shape, x.dtype)  # (L, B, nh, T, hs)
        causal_attention = backends.kernel("causal_attention_forward")  # forward's own kernel
        for layer, block in enumerate(self.model.blocks):
            q, k, v = self._query_key_value(block, x)  # each (B, nh, T, hs)
            keys[layer], values[layer] = k, v
            flat = [a.reshape(batch * self.n_heads, length, self.head_size) for a in (q, k, v)]  # (B nh, T, hs)
            attended, _ = causal_attention(*flat, self.scale)  # (B nh, T, hs)
            attended = attended.reshape(batch, self.n_heads, length, self.head_size)  # (B, nh, T, hs)
            x = self._rest_of_block(block, x, attended)
        return self._logits(x[:, -1]), TransformerStepperState(context, keys, values)

    def _extend(self, ids, state: TransformerStepperState):
        """One new position t = T for ids (B,), ``state`` holding the caches of positions
        0..T-1 and the context already with ids appended, (B, T + 1): the new position's
        logits (B, V), and the state with the caches one position longer."""
        xp = self._xp()
        layers, batch, heads, length, size = state.keys.shape  # length: T, the positions cached
        x = self._embed(ids[:, None], length)  # (B, 1, d_model)
        grown = (layers, batch, heads, length + 1, size)
        keys, values = xp.empty(grown, x.dtype), xp.empty(grown, x.dtype)  # (L, B, nh, T + 1, hs)
        keys[:, :, :, :length], values[:, :, :, :length] = state.keys, state.values
        for layer, block in enumerate(self.model.blocks):
            q, k, v = self._query_key_value(block, x)  # each (B, nh, 1, hs)
            keys[layer, :, :, length:], values[layer, :, :, length:] = k, v  # its own key and value, last
            # softmax(q Kᵀ / √hs) V over positions 0..T: all in the past or the new one itself
            scores = (q @ keys[layer].transpose(0, 1, 3, 2)) * x.dtype.type(self.scale)  # (B, nh, 1, T + 1)
            weights = xp.exp(scores - scores.max(axis=-1, keepdims=True))
            weights /= weights.sum(axis=-1, keepdims=True)
            attended = weights @ values[layer]  # (B, nh, 1, hs)
            x = self._rest_of_block(block, x, attended)
        return self._logits(x[:, 0]), state._replace(keys=keys, values=values)


# Below this many rows (a generated token's few positions) a product goes straight to
# NumPy: the gemm kernel's checks cost about 4 µs a call, as much as the product itself.
_FEW_ROWS = 16


def _linear(x, weight, bias):
    """x (..., k) @ weight (m, k)ᵀ + bias (m,) -> (..., m), raw arrays (``nn.Linear``'s maths).
    A prompt's or a re-read context's many rows go through the backend's ``gemm``, as the
    Linear op multiplies (on the cython backend the kernels' thread pool: NumPy's BLAS is
    held at one thread there); a new token's row through NumPy's ``@``."""
    rows = x.reshape(-1, x.shape[-1])  # (N, k)
    b = None if bias is None else bias.data
    if rows.shape[0] < _FEW_ROWS:
        y = rows @ weight.data.T
        y = y + b if b is not None else y
    else:
        y = backends.kernel("gemm")(rows, weight.data, transpose_b=True, bias=b)
    return y.reshape(*x.shape[:-1], -1)  # (..., m)


def _layer_norm(x, layer_norm: nn.LayerNorm):
    """x (..., D) through ``layer_norm`` with the backend's kernel, raw arrays."""
    rows = x.reshape(-1, x.shape[-1])  # (N, D)
    weight = layer_norm.weight.data if layer_norm.weight is not None else None
    bias = layer_norm.bias.data if layer_norm.bias is not None else None
    normed, _, _ = backends.kernel("layer_norm_forward")(rows, weight, bias, layer_norm.eps)
    return normed.reshape(x.shape)  # (..., D)


def _gelu(x, approximate: str):
    """GELU of a raw array, ``ops.gelu``'s kernels: the tanh approximation or the exact one."""
    return backends.kernel("gelu_forward")(x) if approximate == "tanh" else gelu_exact_forward(x)
