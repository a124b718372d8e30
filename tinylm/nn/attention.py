"""Multi-head attention, written out step by step."""

from __future__ import annotations

import numpy as np

from tinylm import backends, ops
from tinylm.autograd import Tensor
from tinylm.nn import functional as F
from tinylm.nn import init
from tinylm.nn.basic import Linear
from tinylm.nn.module import Module, Parameter
from tinylm.ops.causal_attention import causal_attention


class MultiheadAttention(Module):
    """PyTorch's ``nn.MultiheadAttention``: same parameters and results.

    ``in_proj_weight`` (3E, E) stacks the query, key and value projections,
    ``in_proj_bias`` (3E,) their biases, and ``out_proj`` is a Linear(E, E). Each of
    the ``num_heads`` heads attends with its own slice of E / num_heads features:

        Q, K, V = query W_qᵀ + b_q, key W_kᵀ + b_k, value W_vᵀ + b_v
        head_h  = softmax(Q_h K_hᵀ / √d_k + mask) V_h
        output  = concat(heads) W_oᵀ + b_o

    Inputs are (L, B, E) as in PyTorch, or (B, L, E) with ``batch_first=True`` (what
    tinylm's models pass). ``attn_mask`` follows PyTorch's MultiheadAttention convention:
    a bool mask is True where attending is *not* allowed, a float mask is added to the
    scores; shape (L, S) or (B·num_heads, L, S). ``key_padding_mask`` (B, S), bool with
    True = ignore that key (padding) or float added to the scores, masks keys per batch
    row; it combines with ``attn_mask``. A bool ``key_padding_mask`` goes as it is to the
    fused attention softmax (``F.attention_weights``) with no attn_mask, an (L, S) one or
    ``is_causal``; a float one, or one with a per-head attn_mask, is added to the scores as
    a (B, nh, L, S) or (B, 1, 1, S) mask. ``is_causal=True`` without a mask builds the
    causal one (PyTorch asks for the mask as well). As in PyTorch, ``need_weights``
    defaults to True: the attention weights, averaged over heads, come back as well.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 batch_first: bool = False, dtype=None, generator=None):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.dropout, self.batch_first, self.generator = dropout, batch_first, generator
        self.in_proj_weight = Parameter(init.xavier_uniform((3 * embed_dim, embed_dim), dtype, generator))
        self.in_proj_bias = Parameter(init.constant((3 * embed_dim,), 0.0, dtype)) if bias else None
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, dtype=dtype, generator=generator)
        if bias:  # PyTorch zeroes the output bias too
            self.out_proj.bias = Parameter(init.constant((embed_dim,), 0.0, dtype))

    def _project(self, x, which: int):
        """x (B, T, E) through the ``which``-th third of the packed projection, split
        into heads: (B, num_heads, T, head_dim)."""
        rows = slice(which * self.embed_dim, (which + 1) * self.embed_dim)
        bias = self.in_proj_bias[rows] if self.in_proj_bias is not None else None
        return self._heads(F.linear(x, self.in_proj_weight[rows], bias))

    def _heads(self, projected):
        """(B, T, E) -> (B, num_heads, T, head_dim)."""
        batch, length = projected.shape[0], projected.shape[1]
        heads = projected.reshape(batch, length, self.num_heads, self.head_dim)  # (B, T, nh, hs)
        return heads.transpose(1, 2)  # (B, nh, T, hs)

    def _project_self(self, x):
        """Self-attention (query, key and value all x): one product with the whole packed
        weight, (B, T, 3E), split in three, instead of three products with slices of it
        (each slice's gradient would be scattered into a (3E, E) array of zeros)."""
        projected = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, T, 3E)
        return tuple(self._heads(part) for part in ops.split(projected, self.embed_dim, axis=-1))

    def _additive_mask(self, attn_mask, key_padding_mask, batch: int, q_len: int, k_len: int, like: Tensor):
        """attn_mask and key_padding_mask as one float array added to the scores: (L, S),
        or (B, nh, L, S) / (B, 1, 1, S) where a mask differs per batch row or head."""
        xp = backends.get_array_module(like.data)

        def additive(mask):  # bool True = may not attend -> -inf; a float mask is added as it is
            mask = xp.asarray(mask.data if isinstance(mask, Tensor) else mask)
            return (xp.where(mask, -np.inf, 0.0) if mask.dtype == bool else mask).astype(like.dtype)

        mask = None
        if attn_mask is not None:
            mask = additive(attn_mask)
            expected = [(q_len, k_len), (batch * self.num_heads, q_len, k_len)]
            if tuple(mask.shape) not in expected:
                raise ValueError(f"MultiheadAttention: attn_mask must be (L, S) = {expected[0]} or "
                                 f"(batch * num_heads, L, S) = {expected[1]}, got {tuple(mask.shape)}")
            if mask.ndim == 3:  # (B·nh, L, S) -> (B, nh, L, S)
                mask = mask.reshape(batch, self.num_heads, q_len, k_len)
        if key_padding_mask is not None:
            padding = additive(key_padding_mask)
            if tuple(padding.shape) != (batch, k_len):
                raise ValueError(f"MultiheadAttention: key_padding_mask must be (batch, S) = {(batch, k_len)}, "
                                 f"got {tuple(padding.shape)}")
            padding = padding.reshape(batch, 1, 1, k_len)  # the same keys hidden from every head and query
            mask = padding if mask is None else mask + padding
        return mask

    def _bool_padding(self, key_padding_mask, batch: int, k_len: int, like: Tensor):
        """A bool key_padding_mask as a (B, S) array of ``like``'s module (True = padding),
        for the fused softmax; None for no mask or a float one (added to the scores)."""
        if key_padding_mask is None:
            return None
        xp = backends.get_array_module(like.data)
        padding = xp.asarray(key_padding_mask.data if isinstance(key_padding_mask, Tensor) else key_padding_mask)
        if tuple(padding.shape) != (batch, k_len):
            raise ValueError(f"MultiheadAttention: key_padding_mask must be (batch, S) = {(batch, k_len)}, "
                             f"got {tuple(padding.shape)}")
        return padding if padding.dtype == bool else None

    def _check_shapes(self, query, key, value):
        if query.ndim != 3 or query.shape[-1] != self.embed_dim:
            raise ValueError(f"MultiheadAttention: query must be 3-D ending in embed_dim={self.embed_dim}, "
                             f"got {query.shape}")
        if key.ndim != 3 or value.ndim != 3 or key.shape[:2] != value.shape[:2]:
            raise ValueError(f"MultiheadAttention: key {key.shape} and value {value.shape} must be 3-D with the "
                             f"same batch and length (one value per key)")
        batch_axis = 0 if self.batch_first else 1
        if key.shape[batch_axis] != query.shape[batch_axis] or key.shape[-1] != self.embed_dim:
            layout = "(B, S, E)" if self.batch_first else "(S, B, E)"
            raise ValueError(f"MultiheadAttention: key {key.shape} must be {layout} with query {query.shape}'s "
                             f"batch and embed_dim={self.embed_dim}")
        if value.shape[-1] != self.embed_dim:
            raise ValueError(f"MultiheadAttention: value {value.shape} must end in embed_dim={self.embed_dim}")

    def forward(self, query, key, value, key_padding_mask=None, need_weights: bool = True, attn_mask=None,
                average_attn_weights: bool = True, is_causal: bool = False):
        """PyTorch's argument order; returns ``(output, weights)``, weights None unless
        ``need_weights``: (B, L, S) averaged over heads, or (B, nh, L, S)."""
        self._check_shapes(query, key, value)
        self_attention = query is key and key is value
        if not self.batch_first:  # (T, B, E) -> (B, T, E)
            query = query.transpose(0, 1)
            key, value = (query, query) if self_attention else (key.transpose(0, 1), value.transpose(0, 1))
        batch, q_len, k_len = query.shape[0], query.shape[1], key.shape[1]
        if self_attention:
            q, k, v = self._project_self(query)
        else:
            q, k, v = self._project(query, 0), self._project(key, 1), self._project(value, 2)

        if (is_causal and attn_mask is None and key_padding_mask is None and not need_weights and q_len == k_len
                and (self.dropout == 0 or not self.training)):
            # The whole of softmax(Q Kᵀ / √d_k, causal) V as one fused op: no (L, S) weights kept
            attended = causal_attention(q, k, v)  # (B, nh, L, hs)
        else:
            mask = self._additive_mask(attn_mask, None, batch, q_len, k_len, q)  # (L, S), (B, nh, L, S) or None
            # A bool padding mask goes to the fused softmax as it is, (B, S), when the rest of the
            # masking fits it too (an (L, S) mask or causal): no (B, 1, 1, S) mask added through the graph.
            padding = self._bool_padding(key_padding_mask, batch, k_len, q)  # (B, S) or None
            if key_padding_mask is not None and (padding is None or (mask is not None and mask.ndim == 4)):
                # a float padding mask, or a per-head attn_mask: one additive mask added to the scores
                padding = None
                if is_causal and attn_mask is None:  # one mask holding both
                    attn_mask = ~np.tril(np.ones((q_len, k_len), dtype=bool))
                mask = self._additive_mask(attn_mask, key_padding_mask, batch, q_len, k_len, q)
            # softmax(Q Kᵀ / √d_k + mask), written out in F.attention_weights: (B, nh, L, S)
            weights = F.attention_weights(q, k, mask, is_causal=is_causal and mask is None, key_padding_mask=padding)
            # (B, nh, L, S), batch first whatever batch_first says; returned so, as PyTorch
            weights = F.dropout(weights, self.dropout, self.training, self.generator, batch_axis=0)
            attended = weights @ v  # (B, nh, L, hs)
        merged = attended.transpose(1, 2).reshape(batch, q_len, self.embed_dim)  # (B, L, E)
        output = self.out_proj(merged)
        if not self.batch_first:
            output = output.transpose(0, 1)
        if not need_weights:
            return output, None
        return output, (weights.mean(axis=1) if average_attn_weights else weights)

    def extra_repr(self) -> str:
        extra = ", batch_first=True" if self.batch_first else ""
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}{extra}"
