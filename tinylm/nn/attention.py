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

    ``attn_mask`` follows PyTorch's MultiheadAttention convention: a bool mask is True
    where attending is *not* allowed, a float mask is added to the scores; shape (L, S)
    or (B·num_heads, L, S). ``is_causal=True`` without a mask builds the causal one
    (PyTorch asks for the mask as well). One difference: ``batch_first`` defaults to True
    here, since tinylm's models are batch-first.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 batch_first: bool = True, dtype=None, generator=None):
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

    def _additive_mask(self, attn_mask, batch: int, like: Tensor):
        """The mask as a float array added to the scores, (L, S) or (B, nh, L, S)."""
        xp = backends.get_array_module(like.data)
        mask = xp.asarray(attn_mask.data if isinstance(attn_mask, Tensor) else attn_mask)
        if mask.dtype == bool:
            mask = xp.where(mask, -np.inf, 0.0)  # True = may not attend
        mask = mask.astype(like.dtype)
        if mask.ndim == 3:  # (B·nh, L, S) -> (B, nh, L, S)
            if mask.shape[0] != batch * self.num_heads:
                raise ValueError(f"MultiheadAttention: a 3-D attn_mask must be (batch * num_heads, L, S) = "
                                 f"({batch * self.num_heads}, L, S), got {tuple(mask.shape)}")
            mask = mask.reshape(batch, self.num_heads, mask.shape[1], mask.shape[2])
        return mask

    def forward(self, query, key, value, attn_mask=None, is_causal: bool = False,
                need_weights: bool = False, average_attn_weights: bool = True):
        if query.ndim != 3 or query.shape[-1] != self.embed_dim:
            raise ValueError(f"MultiheadAttention: query must be 3-D ending in embed_dim={self.embed_dim}, "
                             f"got {query.shape}")
        self_attention = query is key and key is value
        if not self.batch_first:  # (T, B, E) -> (B, T, E)
            query = query.transpose(0, 1)
            key, value = (query, query) if self_attention else (key.transpose(0, 1), value.transpose(0, 1))
        batch, q_len, k_len = query.shape[0], query.shape[1], key.shape[1]
        if self_attention:
            q, k, v = self._project_self(query)
        else:
            q, k, v = self._project(query, 0), self._project(key, 1), self._project(value, 2)

        if (is_causal and attn_mask is None and not need_weights and q_len == k_len
                and (self.dropout == 0 or not self.training)):
            # The whole of softmax(Q Kᵀ / √d_k, causal) V as one fused op: no (L, S) weights kept
            attended = causal_attention(q, k, v)  # (B, nh, L, hs)
        else:
            mask = self._additive_mask(attn_mask, batch, q) if attn_mask is not None else None
            # softmax(Q Kᵀ / √d_k + mask), written out in F.attention_weights: (B, nh, L, S)
            weights = F.attention_weights(q, k, mask, is_causal=is_causal and mask is None)
            weights = F.dropout(weights, self.dropout, self.training, self.generator)  # returned so, as PyTorch
            attended = weights @ v  # (B, nh, L, hs)
        merged = attended.transpose(1, 2).reshape(batch, q_len, self.embed_dim)  # (B, L, E)
        output = self.out_proj(merged)
        if not self.batch_first:
            output = output.transpose(0, 1)
        if not need_weights:
            return output, None
        return output, (weights.mean(axis=1) if average_attn_weights else weights)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}"
