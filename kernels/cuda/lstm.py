"""Launch wrappers for ``lstm.cu``: the ``cuda`` backend's LSTM cell and layer kernels.

Same names, signatures, results and ``saved`` layout as ``tinylm/reference/lstm.py``,
so either backward can follow either forward. The cell kernels are fused pointwise
CUDA kernels; the layer functions run the reference's loop over time with them, and
their matrix products go through the array module's matmul (cuBLAS on a GPU, NumPy's
BLAS in the emulation). ``threads`` and ``max_blocks`` set the launch geometry.
"""

from __future__ import annotations

import numpy as np

from tinylm.backends import get_array_module
from tinylm.kernels.checks import array_module_of, contiguous_arrays
from tinylm.kernels.cuda.launch import CudaSource, blocks_for, float_suffix, threads_for
from tinylm.reference.lstm import check_layer_shapes

SOURCE = CudaSource("lstm.cu")



def _unpack(op: str, saved, count: int):
    if not isinstance(saved, (tuple, list)) or len(saved) != count:
        raise TypeError(f"{op}: saved must be the tuple of {count} arrays the forward returned, "
                        f"got {type(saved).__name__}")
    return saved


def _geometry(array, elements: int, threads, max_blocks):
    threads = threads_for(array, threads)
    return blocks_for(array, -(-elements // threads), max_blocks), threads


def _forward_step(x_proj, recurrent, c_prev, h, c, activations, tanh_c, threads=None, max_blocks=None):
    """gates = x_proj (+ recurrent, unless None); writes h, c, activations, tanh_c."""
    batch, hidden = c_prev.shape
    xp = get_array_module(x_proj)
    blocks, threads = _geometry(x_proj, batch * hidden, threads, max_blocks)
    add = recurrent is not None
    SOURCE.launch(f"lstm_cell_forward_{float_suffix('lstm_cell_forward', 'gates', x_proj)}", blocks, threads,
                  (x_proj, recurrent if add else xp.empty(0, x_proj.dtype), np.int32(add), c_prev, h, c,
                   activations, tanh_c, np.int64(batch), np.int64(hidden)))


def _backward_step(dh_out, dh_next, dc, c_prev, activations, tanh_c, d_gates, dc_prev, threads=None, max_blocks=None):
    """The cell backward of one step (dh = dh_out + dh_next); writes d_gates and dc_prev."""
    batch, hidden = dh_out.shape
    blocks, threads = _geometry(dh_out, batch * hidden, threads, max_blocks)
    SOURCE.launch(f"lstm_cell_backward_{float_suffix('lstm_cell_backward', 'dh_out', dh_out)}", blocks, threads,
                  (dh_out, dh_next, dc, c_prev, activations, tanh_c, d_gates, dc_prev, np.int64(batch),
                   np.int64(hidden)))


def lstm_cell_forward(gates, c_prev, *, threads: int | None = None, max_blocks: int | None = None):
    """gates (B, 4H) pre-activations, c_prev (B, H) -> h, c, (activations (B, 4H), tanh(c))."""
    op = "lstm_cell_forward"
    xp = array_module_of(op, "gates", gates)
    float_suffix(op, "gates", gates)
    gates, c_prev = contiguous_arrays(op, xp, gates.dtype, gates=gates, c_prev=c_prev)
    if gates.ndim != 2 or gates.shape[1] % 4 or c_prev.shape != (gates.shape[0], gates.shape[1] // 4):
        raise ValueError(f"{op}: gates {tuple(gates.shape)} must be (B, 4H) and c_prev {tuple(c_prev.shape)} (B, H)")
    h, c, tanh_c = (xp.empty(c_prev.shape, gates.dtype) for _ in range(3))
    activations = xp.empty(gates.shape, gates.dtype)
    _forward_step(gates, None, c_prev, h, c, activations, tanh_c, threads, max_blocks)
    return h, c, (activations, tanh_c)


def lstm_cell_backward(dh_out, dh_next, dc, c_prev, saved, *, threads: int | None = None,
                       max_blocks: int | None = None):
    """As ``tinylm.reference.lstm.lstm_cell_backward``: (dL/dgates (B, 4H), dL/dc_prev (B, H))."""
    op = "lstm_cell_backward"
    xp = array_module_of(op, "dh_out", dh_out)
    float_suffix(op, "dh_out", dh_out)
    activations, tanh_c = _unpack(op, saved, 2)
    dh_out, dh_next, dc, c_prev, activations, tanh_c = contiguous_arrays(
        op, xp, dh_out.dtype, dh_out=dh_out, dh_next=dh_next, dc=dc, c_prev=c_prev, activations=activations,
        tanh_c=tanh_c)
    state = tuple(dh_out.shape)
    if dh_out.ndim != 2 or any(tuple(a.shape) != state for a in (dh_next, dc, c_prev, tanh_c)) or \
            tuple(activations.shape) != (state[0], 4 * state[1]):
        raise ValueError(f"{op}: dh_out {state}, dh_next {tuple(dh_next.shape)}, dc {tuple(dc.shape)}, c_prev "
                         f"{tuple(c_prev.shape)} and tanh_c {tuple(tanh_c.shape)} must be (B, H), activations "
                         f"{tuple(activations.shape)} (B, 4H)")
    d_gates, dc_prev = xp.empty(activations.shape, dh_out.dtype), xp.empty(state, dh_out.dtype)
    _backward_step(dh_out, dh_next, dc, c_prev, activations, tanh_c, d_gates, dc_prev, threads, max_blocks)
    return d_gates, dc_prev


def lstm_layer_forward(x_proj, w_hh, h0, c0, keep_saved: bool = True, *, threads: int | None = None,
                       max_blocks: int | None = None):
    """As ``tinylm.reference.lstm.lstm_layer_forward``: (hs, c_n, saved), saved None with
    ``keep_saved=False`` (the arrays are made all the same: on a GPU they are cheap)."""
    op = "lstm_layer_forward"
    xp = array_module_of(op, "x_proj", x_proj)
    float_suffix(op, "x_proj", x_proj)
    x_proj, w_hh, h0, c0 = contiguous_arrays(op, xp, x_proj.dtype, x_proj=x_proj, w_hh=w_hh, h0=h0, c0=c0)
    check_layer_shapes(op, x_proj, w_hh, h0, c0)
    steps, batch, hidden = x_proj.shape[0], x_proj.shape[1], w_hh.shape[1]
    dtype = x_proj.dtype
    hs, cs, tanh_cs = (xp.empty((steps, batch, hidden), dtype) for _ in range(3))
    activations = xp.empty_like(x_proj)
    w_hh_t = xp.ascontiguousarray(w_hh.T)  # (H, 4H)
    recurrent = xp.empty((batch, 4 * hidden), dtype)
    h, c = h0, c0
    for t in range(steps):
        xp.matmul(h, w_hh_t, out=recurrent)  # cuBLAS on a GPU
        _forward_step(x_proj[t], recurrent, c, hs[t], cs[t], activations[t], tanh_cs[t], threads, max_blocks)
        h, c = hs[t], cs[t]
    return hs, cs[steps - 1].copy(), (hs, cs, activations, tanh_cs) if keep_saved else None


def lstm_layer_backward(d_hs, d_h_n, d_c_n, w_hh, h0, c0, saved, *, threads: int | None = None,
                        max_blocks: int | None = None):
    """As ``tinylm.reference.lstm.lstm_layer_backward``: (d_x_proj, d_w_hh, d_h0, d_c0)."""
    op = "lstm_layer_backward"
    hs, cs, activations, tanh_cs = _unpack(op, saved, 4)
    xp = array_module_of(op, "saved hs", hs)
    float_suffix(op, "the saved arrays", hs)
    d_hs, d_h_n, d_c_n, w_hh, h0, c0, hs, cs, activations, tanh_cs = contiguous_arrays(
        op, xp, hs.dtype, d_hs=d_hs, d_h_n=d_h_n, d_c_n=d_c_n, w_hh=w_hh, h0=h0, c0=c0, hs=hs, cs=cs,
        activations=activations, tanh_cs=tanh_cs)
    check_layer_shapes(op, activations, w_hh, h0, c0)
    steps, batch, hidden = activations.shape[0], activations.shape[1], w_hh.shape[1]
    for key, value in (("d_hs", d_hs), ("hs", hs), ("cs", cs), ("tanh_cs", tanh_cs)):
        if tuple(value.shape) != (steps, batch, hidden):
            raise ValueError(f"{op}: {key} {tuple(value.shape)} must be (T, B, H) = {(steps, batch, hidden)}")
    if tuple(d_h_n.shape) != (batch, hidden) or tuple(d_c_n.shape) != (batch, hidden):
        raise ValueError(f"{op}: d_h_n {tuple(d_h_n.shape)} and d_c_n {tuple(d_c_n.shape)} must be (B, H)")
    d_gates = xp.empty_like(activations)  # (T, B, 4H)
    d_h = d_h_n.copy()  # dL/dh_t arriving from step t+1 (at first: from the final state)
    d_c, d_c_other = d_c_n.copy(), xp.empty_like(d_c_n)  # two buffers: a kernel never reads what it writes
    for t in range(steps - 1, -1, -1):
        c_prev = cs[t - 1] if t > 0 else c0
        _backward_step(d_hs[t], d_h, d_c, c_prev, activations[t], tanh_cs[t], d_gates[t], d_c_other, threads,
                       max_blocks)
        d_c, d_c_other = d_c_other, d_c
        xp.matmul(d_gates[t], w_hh, out=d_h)  # (B, H): what h_{t-1} receives from step t (cuBLAS)
    h_prev = xp.concatenate([h0[None], hs[:-1]], axis=0)  # (T, B, H)
    d_w_hh = d_gates.reshape(-1, 4 * hidden).T @ h_prev.reshape(-1, hidden)  # (4H, H), one product
    return d_gates, d_w_hh, d_h, d_c
