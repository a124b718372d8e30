# cython: language_level=3
"""The Elman RNN as Cython kernels: the drop-ins for ``tinylm/reference/rnn.py``.

Same names, signatures, results and ``saved`` layout as the reference. float32, two
steps or more, a batch of at least half a register tile: the whole loop over time,
forward or backward, is one OpenMP region on tinylm's packed micro-kernel, the LSTM's
loop (``tinylm_recurrent.h``) with the RNN's cell (``tinylm_rnn.h``). Otherwise the loop
over time runs in Python, each step's (B, H) @ (H, H) product through ``np.matmul`` into
a preallocated buffer, and the nonlinearity (forward) or its derivative (backward) with
the add before it is one fused C loop over the (B, H) elements, where the reference makes
three NumPy temporaries. dWₕₕ is one product over all steps after the loop, on the
kernels' OpenMP team (``gemm.pyx``'s ``gemm``). The wrapper checks dtypes, shapes and the
nonlinearity, and makes every buffer contiguous, so the loops index without bounds checks.
"""

import numpy as np

cimport cython
include "_math.pxi"
include "_recurrent.pxi"

cdef extern from "tinylm_rnn.h" nogil:
    void tinylm_rnn_forward(Py_ssize_t steps, Py_ssize_t batch, Py_ssize_t hidden, const float* x_proj,
                            const float* packed_w, float* recurrent, float* packed_h, float* hs, int relu,
                            int threads)
    void tinylm_rnn_backward(Py_ssize_t steps, Py_ssize_t batch, Py_ssize_t hidden, const float* d_hs, float* d_h,
                             const float* packed_w, const float* hs, float* d_pre, float* packed_dg, int relu,
                             int threads)

from tinylm.kernels.checks import contiguous_arrays, flag, float_dtype
from tinylm.kernels.cpu.gemm import gemm
from tinylm.reference.rnn import check_layer_shapes


@cython.boundscheck(False)
@cython.wraparound(False)
def _step_forward(
    const real[:, ::1] x_proj,     # (B, H) this step's input projection, both biases in
    const real[:, ::1] recurrent,  # (B, H) h_prev Wₕₕᵀ
    real[:, ::1] h,                # (B, H) out: act(x_proj + recurrent)
    bint relu,
):
    cdef Py_ssize_t b, j
    cdef real pre
    with nogil:
        for b in range(h.shape[0]):
            for j in range(h.shape[1]):
                pre = x_proj[b, j] + recurrent[b, j]
                h[b, j] = (pre if pre > 0 else 0) if relu else _tanh(pre)


@cython.boundscheck(False)
@cython.wraparound(False)
def _step_backward(
    const real[:, ::1] dh_out,  # (B, H) dL/dh_t from the layer's output
    const real[:, ::1] dh_next, # (B, H) dL/dh_t sent back by step t+1
    const real[:, ::1] h,       # (B, H) h_t
    real[:, ::1] d_pre,         # (B, H) out: (dh_out + dh_next) ⊙ act'(h_t)
    bint relu,
):
    cdef Py_ssize_t b, j
    cdef real dh
    with nogil:
        for b in range(h.shape[0]):
            for j in range(h.shape[1]):
                dh = dh_out[b, j] + dh_next[b, j]
                d_pre[b, j] = (dh if h[b, j] > 0 else 0) if relu else dh * (1 - h[b, j] * h[b, j])




def rnn_layer_forward(x_proj, w_hh, h0, nonlinearity="tanh", keep_saved=True):
    """As ``tinylm.reference.rnn.rnn_layer_forward``: (hs, saved), saved None with
    ``keep_saved=False``."""
    dtype = float_dtype("rnn_layer_forward", "x_proj", x_proj)
    x_proj, w_hh, h0 = contiguous_arrays("rnn_layer_forward", np, dtype, x_proj=x_proj, w_hh=w_hh, h0=h0)
    check_layer_shapes("rnn_layer_forward", x_proj, w_hh, h0, nonlinearity)
    keep_saved = flag("rnn_layer_forward", "keep_saved", keep_saved)
    hs = np.empty_like(x_proj)  # (T, B, H)
    steps, batch, hidden = x_proj.shape
    if _packed_loop_serves(dtype, steps, batch, hidden):
        _forward_packed(x_proj, w_hh, h0, hs, nonlinearity == "relu", _loop_threads(batch, hidden, 1))
        return hs, (hs,) if keep_saved else None
    w_hh_t = np.ascontiguousarray(w_hh.T)  # (H, H)
    recurrent = np.empty_like(h0)
    h = h0
    for t in range(x_proj.shape[0]):
        np.matmul(h, w_hh_t, out=recurrent)
        _step_forward(x_proj[t], recurrent, hs[t], nonlinearity == "relu")
        h = hs[t]
    return hs, (hs,) if keep_saved else None


def rnn_layer_backward(d_hs, d_h_n, w_hh, h0, saved, nonlinearity="tanh"):
    """As ``tinylm.reference.rnn.rnn_layer_backward``: (d_x_proj, d_w_hh, d_h0)."""
    if not isinstance(saved, tuple) or len(saved) != 1:
        raise TypeError("rnn_layer_backward: saved must be the (hs,) of rnn_layer_forward")
    dtype = float_dtype("rnn_layer_backward", "the saved hs", saved[0])
    d_hs, d_h_n, w_hh, h0, hs = contiguous_arrays("rnn_layer_backward", np, dtype, d_hs=d_hs, d_h_n=d_h_n, w_hh=w_hh, h0=h0,
                                         hs=saved[0])
    check_layer_shapes("rnn_layer_backward", hs, w_hh, h0, nonlinearity)
    if d_hs.shape != hs.shape or d_h_n.shape != h0.shape:
        raise ValueError(f"rnn_layer_backward: d_hs {d_hs.shape} and d_h_n {d_h_n.shape} must be "
                         f"(T, B, H) = {hs.shape} and (B, H) = {h0.shape}")
    relu = nonlinearity == "relu"
    d_pre = np.empty_like(hs)  # (T, B, H)
    d_h = d_h_n.copy()  # dL/dh_t arriving from step t+1 (at first: from the final state)
    steps, batch, hidden = hs.shape
    if _packed_loop_serves(dtype, steps, batch, hidden):
        _backward_packed(d_hs, d_h, w_hh, hs, d_pre, relu, _loop_threads(batch, hidden, 1))
    else:
        for t in range(steps - 1, -1, -1):
            _step_backward(d_hs[t], d_h, hs[t], d_pre[t], relu)
            np.matmul(d_pre[t], w_hh, out=d_h)  # (B, H): what h_{t-1} receives from step t
    # dWₕₕ = Σₜ d_preₜᵀ hₜ₋₁: steps 1.. in one product over hs[:-1] in place, step 0's h0 added.
    d_w_hh = gemm(d_pre[1:].reshape(-1, hidden), hs[:-1].reshape(-1, hidden), transpose_a=True)
    gemm(d_pre[0], h0, out=d_w_hh, accumulate=True, transpose_a=True)
    return d_pre, d_w_hh, d_h


@cython.boundscheck(False)
@cython.wraparound(False)
def _forward_packed(
    const float[:, :, ::1] x_proj,  # (T, B, H)
    const float[:, ::1] w_hh,       # (H, H)
    const float[:, ::1] h0,         # (B, H)
    float[:, :, ::1] hs,            # (T, B, H) out
    bint relu,
    int threads,
):
    """The loop over time as ``tinylm_rnn_forward``: W_hhᵀ packed once, then one OpenMP
    region on the packed micro-kernel (see ``tinylm_recurrent.h``)."""
    cdef Py_ssize_t steps = x_proj.shape[0], batch = x_proj.shape[1], hidden = hs.shape[2]
    packed_w, packed_h = _packed_forward_operands(w_hh, 1, h0)
    recurrent = np.empty((batch, hidden), np.float32)
    cdef float[::1] w_view = packed_w
    cdef float[:, ::1] h_view = packed_h
    cdef float[:, ::1] r_view = recurrent
    with nogil:
        tinylm_rnn_forward(steps, batch, hidden, &x_proj[0, 0, 0], &w_view[0], &r_view[0, 0], &h_view[0, 0],
                           &hs[0, 0, 0], relu, threads)


@cython.boundscheck(False)
@cython.wraparound(False)
def _backward_packed(
    const float[:, :, ::1] d_hs,  # (T, B, H)
    float[:, ::1] d_h,            # (B, H) in: dL/dh_n; out: dL/dh0
    const float[:, ::1] w_hh,     # (H, H)
    const float[:, :, ::1] hs,    # (T, B, H)
    float[:, :, ::1] d_pre,       # (T, B, H) out
    bint relu,
    int threads,
):
    """Backpropagation through time as ``tinylm_rnn_backward``: W_hh packed once, then one
    OpenMP region on the packed micro-kernel (see ``tinylm_recurrent.h``)."""
    cdef Py_ssize_t steps = d_hs.shape[0], batch = d_hs.shape[1], hidden = d_hs.shape[2]
    packed_w, packed_dg = _packed_backward_operands(w_hh, 1, batch)
    cdef float[::1] w_view = packed_w
    cdef float[:, ::1] dg_view = packed_dg
    with nogil:
        tinylm_rnn_backward(steps, batch, hidden, &d_hs[0, 0, 0], &d_h[0, 0], &w_view[0], &hs[0, 0, 0],
                            &d_pre[0, 0, 0], &dg_view[0, 0], relu, threads)
