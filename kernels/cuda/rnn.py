"""Launch wrappers for ``rnn.cu``: the ``cuda`` backend's Elman RNN layer kernels.

Same names, signatures, results and ``saved`` layout as ``tinylm/reference/rnn.py``.
The step kernels are fused pointwise CUDA kernels; the layer functions run the
reference's loop over time with them, and their matrix products go through the array
module's matmul (cuBLAS on a GPU, NumPy's BLAS in the emulation). ``threads`` and
``max_blocks`` set the launch geometry.
"""

from __future__ import annotations

import numpy as np

from tinylm.kernels.checks import array_module_of, contiguous_arrays, flag
from tinylm.kernels.cuda.launch import CudaSource, blocks_for, float_suffix, threads_for
from tinylm.reference.rnn import check_layer_shapes

SOURCE = CudaSource("rnn.cu")



def _launch(kernel: str, like, elements: int, arguments, threads, max_blocks):
    threads = threads_for(like, threads)
    blocks = blocks_for(like, -(-elements // threads), max_blocks)
    SOURCE.launch(f"{kernel}_{float_suffix(kernel, 'x', like)}", blocks, threads, arguments)


def rnn_layer_forward(x_proj, w_hh, h0, nonlinearity: str = "tanh", keep_saved: bool = True, *,
                      threads: int | None = None, max_blocks: int | None = None):
    """As ``tinylm.reference.rnn.rnn_layer_forward``: (hs, saved), saved None with ``keep_saved=False``."""
    op = "rnn_layer_forward"
    xp = array_module_of(op, "x_proj", x_proj)
    float_suffix(op, "x_proj", x_proj)
    x_proj, w_hh, h0 = contiguous_arrays(op, xp, x_proj.dtype, x_proj=x_proj, w_hh=w_hh, h0=h0)
    check_layer_shapes(op, x_proj, w_hh, h0, nonlinearity)
    keep_saved = flag(op, "keep_saved", keep_saved)
    relu = np.int32(nonlinearity == "relu")
    hs = xp.empty_like(x_proj)  # (T, B, H)
    w_hh_t = xp.ascontiguousarray(w_hh.T)  # (H, H)
    recurrent = xp.empty_like(h0)
    h = h0
    for t in range(x_proj.shape[0]):
        xp.matmul(h, w_hh_t, out=recurrent)  # cuBLAS on a GPU
        _launch("rnn_cell_forward", x_proj, h0.size, (x_proj[t], recurrent, relu, hs[t], np.int64(h0.size)),
                threads, max_blocks)
        h = hs[t]
    return hs, (hs,) if keep_saved else None


def rnn_layer_backward(d_hs, d_h_n, w_hh, h0, saved, nonlinearity: str = "tanh", *, threads: int | None = None,
                       max_blocks: int | None = None):
    """As ``tinylm.reference.rnn.rnn_layer_backward``: (d_x_proj, d_w_hh, d_h0)."""
    op = "rnn_layer_backward"
    if not isinstance(saved, (tuple, list)) or len(saved) != 1:
        raise TypeError(f"{op}: saved must be the tuple of 1 array the forward returned, got {type(saved).__name__}")
    xp = array_module_of(op, "saved hs", saved[0])
    float_suffix(op, "the saved hs", saved[0])
    d_hs, d_h_n, w_hh, h0, hs = contiguous_arrays(op, xp, saved[0].dtype, d_hs=d_hs, d_h_n=d_h_n, w_hh=w_hh, h0=h0,
                                         hs=saved[0])
    check_layer_shapes(op, hs, w_hh, h0, nonlinearity)
    if tuple(d_hs.shape) != tuple(hs.shape) or tuple(d_h_n.shape) != tuple(h0.shape):
        raise ValueError(f"{op}: d_hs {tuple(d_hs.shape)} and d_h_n {tuple(d_h_n.shape)} must be "
                         f"(T, B, H) = {tuple(hs.shape)} and (B, H) = {tuple(h0.shape)}")
    relu = np.int32(nonlinearity == "relu")
    d_pre = xp.empty_like(hs)  # (T, B, H)
    d_h = d_h_n.copy()  # dL/dh_t arriving from step t+1 (at first: from the final state)
    for t in range(hs.shape[0] - 1, -1, -1):
        _launch("rnn_cell_backward", d_hs, h0.size, (d_hs[t], d_h, hs[t], relu, d_pre[t], np.int64(h0.size)),
                threads, max_blocks)
        xp.matmul(d_pre[t], w_hh, out=d_h)  # (B, H): what h_{t-1} receives from step t (cuBLAS)
    h_prev = xp.concatenate([h0[None], hs[:-1]], axis=0)  # (T, B, H)
    hidden = w_hh.shape[1]
    return d_pre, d_pre.reshape(-1, hidden).T @ h_prev.reshape(-1, hidden), d_h
