"""Launch wrappers for ``gru.cu``: the ``cuda`` backend's GRU layer kernels.

Same names, signatures, results and ``saved`` layout as ``tinylm/reference/gru.py``, so
either backward can follow either forward. The cell kernels are fused pointwise CUDA
kernels; the layer functions run the reference's loop over time with them, and their
matrix products go through the array module's matmul (cuBLAS on a GPU, NumPy's BLAS in
the emulation). ``threads`` and ``max_blocks`` set the launch geometry.
"""

from __future__ import annotations

import numpy as np

from tinylm.kernels.checks import array_module_of, contiguous_arrays, flag
from tinylm.kernels.cuda.launch import CudaSource, blocks_for, float_suffix, threads_for
from tinylm.reference.gru import check_layer_shapes

SOURCE = CudaSource("gru.cu")



def _launch(kernel: str, like, elements: int, arguments, threads, max_blocks):
    threads = threads_for(like, threads)
    blocks = blocks_for(like, -(-elements // threads), max_blocks)
    SOURCE.launch(f"{kernel}_{float_suffix(kernel, 'x', like)}", blocks, threads, arguments)


def gru_cell_forward(x_gates, h_gates, h_prev, *, threads: int | None = None, max_blocks: int | None = None):
    """As ``tinylm.reference.gru.gru_cell_forward``: (h, activations); also fills and returns
    h_n = h_gates' n block, so (h, activations, h_n)."""
    op = "gru_cell_forward"
    xp = array_module_of(op, "x_gates", x_gates)
    float_suffix(op, "x_gates", x_gates)
    x_gates, h_gates, h_prev = contiguous_arrays(op, xp, x_gates.dtype, x_gates=x_gates, h_gates=h_gates, h_prev=h_prev)
    batch, hidden = h_prev.shape if h_prev.ndim == 2 else (-1, -1)
    if h_prev.ndim != 2 or tuple(x_gates.shape) != (batch, 3 * hidden) or tuple(h_gates.shape) != (batch, 3 * hidden):
        raise ValueError(f"{op}: x_gates {tuple(x_gates.shape)} and h_gates {tuple(h_gates.shape)} must be "
                         f"(B, 3H) and h_prev {tuple(h_prev.shape)} (B, H)")
    h, h_n, activations = xp.empty_like(h_prev), xp.empty_like(h_prev), xp.empty_like(x_gates)
    _launch(op, x_gates, batch * hidden, (x_gates, h_gates, h_prev, h, activations, h_n, np.int64(batch),
                                          np.int64(hidden)), threads, max_blocks)
    return h, activations, h_n


def gru_cell_backward(dh_out, dh_next, h_prev, activations, h_n, *, threads: int | None = None,
                      max_blocks: int | None = None):
    """As ``tinylm.reference.gru.gru_cell_backward``: (d_x_gates, d_h_gates, dh_prev direct part)."""
    op = "gru_cell_backward"
    xp = array_module_of(op, "dh_out", dh_out)
    float_suffix(op, "dh_out", dh_out)
    dh_out, dh_next, h_prev, activations, h_n = contiguous_arrays(
        op, xp, dh_out.dtype, dh_out=dh_out, dh_next=dh_next, h_prev=h_prev, activations=activations, h_n=h_n)
    state = tuple(dh_out.shape)
    if dh_out.ndim != 2 or any(tuple(a.shape) != state for a in (dh_next, h_prev, h_n)) or \
            tuple(activations.shape) != (state[0], 3 * state[1]):
        raise ValueError(f"{op}: dh_out {state}, dh_next {tuple(dh_next.shape)}, h_prev {tuple(h_prev.shape)} and "
                         f"h_n {tuple(h_n.shape)} must be (B, H), activations {tuple(activations.shape)} (B, 3H)")
    d_x_gates, d_h_gates, dh_prev = xp.empty_like(activations), xp.empty_like(activations), xp.empty_like(dh_out)
    _launch(op, dh_out, dh_out.size, (dh_out, dh_next, h_prev, activations, h_n, d_x_gates, d_h_gates, dh_prev,
                                      np.int64(state[0]), np.int64(state[1])), threads, max_blocks)
    return d_x_gates, d_h_gates, dh_prev


def gru_layer_forward(x_proj, w_hh, b_hh, h0, keep_saved: bool = True, *, threads: int | None = None,
                      max_blocks: int | None = None):
    """As ``tinylm.reference.gru.gru_layer_forward``: (hs, saved), saved None with
    ``keep_saved=False`` (the arrays are made all the same: on a GPU they are cheap)."""
    op = "gru_layer_forward"
    xp = array_module_of(op, "x_proj", x_proj)
    float_suffix(op, "x_proj", x_proj)
    x_proj, w_hh, b_hh, h0 = contiguous_arrays(op, xp, x_proj.dtype, x_proj=x_proj, w_hh=w_hh, b_hh=b_hh, h0=h0)
    check_layer_shapes(op, x_proj, w_hh, b_hh, h0)
    keep_saved = flag(op, "keep_saved", keep_saved)
    steps, batch, hidden = x_proj.shape[0], x_proj.shape[1], w_hh.shape[1]
    hs, h_ns = xp.empty((steps, batch, hidden), x_proj.dtype), xp.empty((steps, batch, hidden), x_proj.dtype)
    activations = xp.empty_like(x_proj)  # (T, B, 3H)
    w_hh_t = xp.ascontiguousarray(w_hh.T)  # (H, 3H)
    h_gates = xp.empty((batch, 3 * hidden), x_proj.dtype)
    h = h0
    for t in range(steps):
        xp.matmul(h, w_hh_t, out=h_gates)  # cuBLAS on a GPU
        h_gates += b_hh
        _launch("gru_cell_forward", x_proj, batch * hidden, (x_proj[t], h_gates, h, hs[t], activations[t], h_ns[t],
                np.int64(batch), np.int64(hidden)), threads, max_blocks)
        h = hs[t]
    return hs, (hs, activations, h_ns) if keep_saved else None


def gru_layer_backward(d_hs, d_h_n, w_hh, b_hh, h0, saved, *, threads: int | None = None,
                       max_blocks: int | None = None):
    """As ``tinylm.reference.gru.gru_layer_backward``: (d_x_proj, d_w_hh, d_b_hh, d_h0)."""
    op = "gru_layer_backward"
    if not isinstance(saved, (tuple, list)) or len(saved) != 3:
        raise TypeError(f"{op}: saved must be the tuple of 3 arrays the forward returned, got {type(saved).__name__}")
    xp = array_module_of(op, "saved hs", saved[0])
    float_suffix(op, "the saved arrays", saved[0])
    d_hs, d_h_n, w_hh, b_hh, h0, hs, activations, h_ns = contiguous_arrays(
        op, xp, saved[0].dtype, d_hs=d_hs, d_h_n=d_h_n, w_hh=w_hh, b_hh=b_hh, h0=h0, hs=saved[0],
        activations=saved[1], h_ns=saved[2])
    check_layer_shapes(op, activations, w_hh, b_hh, h0)
    steps, batch, hidden = activations.shape[0], activations.shape[1], w_hh.shape[1]
    for key, value in (("d_hs", d_hs), ("hs", hs), ("h_ns", h_ns)):
        if tuple(value.shape) != (steps, batch, hidden):
            raise ValueError(f"{op}: {key} {tuple(value.shape)} must be (T, B, H) = {(steps, batch, hidden)}")
    if tuple(d_h_n.shape) != (batch, hidden):
        raise ValueError(f"{op}: d_h_n {tuple(d_h_n.shape)} must be (B, H) = {(batch, hidden)}")
    d_x_proj, d_h_gates = xp.empty_like(activations), xp.empty_like(activations)  # (T, B, 3H) each
    d_h, direct = d_h_n.copy(), xp.empty_like(d_h_n)  # two buffers: a kernel never reads what it writes
    for t in range(steps - 1, -1, -1):
        h_prev = hs[t - 1] if t > 0 else h0
        _launch("gru_cell_backward", d_hs, batch * hidden, (d_hs[t], d_h, h_prev, activations[t], h_ns[t],
                d_x_proj[t], d_h_gates[t], direct, np.int64(batch), np.int64(hidden)), threads, max_blocks)
        xp.matmul(d_h_gates[t], w_hh, out=d_h)  # (B, H) through the gates (cuBLAS)
        d_h += direct
    h_prev = xp.concatenate([h0[None], hs[:-1]], axis=0)  # (T, B, H)
    flat = d_h_gates.reshape(-1, 3 * hidden)  # (T·B, 3H)
    return d_x_proj, flat.T @ h_prev.reshape(-1, hidden), flat.sum(axis=0), d_h
