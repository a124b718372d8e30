# cython: language_level=3
"""The GRU as Cython kernels: the drop-ins for ``tinylm/reference/gru.py``.

Same names, signatures, results and ``saved`` layout as the reference, so either
backward can follow either forward. What differs, and why:

- The gate nonlinearities and the state update of a step are one fused loop over each
  batch row (``_cell_forward_row``, ``_cell_backward_row``): one pass over memory instead
  of a dozen NumPy temporaries per step.
- float32, two steps or more, a batch of at least half a register tile: the whole loop
  over time, forward or backward, is one OpenMP region on tinylm's packed micro-kernel,
  the LSTM's loop (``tinylm_recurrent.h``) with the GRU's cells (``tinylm_gru.h``): Wₕₕ
  packed once per call, each thread owning whole register panels of batch rows (no
  barrier) or, where those do not share out evenly, a block of hidden units.
- Otherwise the loop over time runs in Python, each step's (B, H) @ (H, 3H) product
  through ``np.matmul`` into a preallocated buffer, between the fused C loops.
- dWₕₕ and dbₕₕ are one product and one sum over all steps after the loop, as in the
  reference; the product on the kernels' OpenMP team (``gemm.pyx``'s ``gemm``).
- ``keep_saved=False`` (evaluation): the gates of one step are kept at a time.
- The wrapper checks dtypes and shapes and makes every buffer contiguous first, so the
  loops index without bounds checks and never outside the arrays.
"""

import numpy as np

cimport cython
include "_math.pxi"
include "_recurrent.pxi"

cdef extern from "tinylm_gru.h" nogil:
    void tinylm_gru_forward(Py_ssize_t steps, Py_ssize_t batch, Py_ssize_t hidden, const float* x_proj,
                            const float* packed_w, const float* b_hh, const float* h0, float* recurrent,
                            float* packed_h, float* activations, float* h_ns, Py_ssize_t n_act, float* hs,
                            int threads)
    void tinylm_gru_backward(Py_ssize_t steps, Py_ssize_t batch, Py_ssize_t hidden, const float* d_hs, float* d_h,
                             const float* packed_w, const float* h0, const float* hs, const float* activations,
                             const float* h_ns, float* d_x_proj, float* d_h_gates, float* packed_dg, int threads)

from tinylm.kernels.checks import contiguous_arrays, flag, float_dtype
from tinylm.kernels.cpu.gemm import gemm
from tinylm.reference.gru import check_layer_shapes


@cython.boundscheck(False)
@cython.wraparound(False)
def _cell_forward(
    const real[:, ::1] x_gates,   # (B, 3H) x Wᵢₕᵀ + bᵢₕ
    const real[:, ::1] h_gates,   # (B, 3H) h_prev Wₕₕᵀ + bₕₕ
    const real[:, ::1] h_prev,    # (B, H)
    real[:, ::1] activations,     # (B, 3H) out: r, z, n
    real[:, ::1] h_n,             # (B, H) out: Wₕₙ h_prev + bₕₙ, kept for the backward
    real[:, ::1] h,               # (B, H) out
):
    cdef Py_ssize_t batch = h.shape[0], hidden = h.shape[1], b
    with nogil:
        for b in range(batch):
            _cell_forward_row(&x_gates[b, 0], &h_gates[b, 0], &h_prev[b, 0], &activations[b, 0], &h_n[b, 0],
                              &h[b, 0], hidden)


cdef inline void _cell_forward_row(const real* xg, const real* hg, const real* h_prev, real* act, real* h_n,
                                   real* h, Py_ssize_t hidden) noexcept nogil:
    """One batch row: r = σ(x_r + h_r), z = σ(x_z + h_z), n = tanh(x_n + r ⊙ h_n),
    h = n + z ⊙ (h_prev - n)."""
    cdef Py_ssize_t j
    cdef real* r = act
    cdef real* z = act + hidden
    cdef real* n = act + 2 * hidden
    for j in range(hidden):
        r[j] = _sigmoid(xg[j] + hg[j])
    for j in range(hidden):
        z[j] = _sigmoid(xg[hidden + j] + hg[hidden + j])
    for j in range(hidden):
        h_n[j] = hg[2 * hidden + j]
        n[j] = _tanh(xg[2 * hidden + j] + r[j] * h_n[j])
    for j in range(hidden):
        h[j] = n[j] + z[j] * (h_prev[j] - n[j])


@cython.boundscheck(False)
@cython.wraparound(False)
def _cell_backward(
    const real[:, ::1] dh_out,       # (B, H) dL/dh_t from the layer's output
    real[:, ::1] dh_next,            # (B, H) in: dL/dh_t sent back by step t+1; out: dh ⊙ z
    const real[:, ::1] h_prev,       # (B, H)
    const real[:, ::1] activations,  # (B, 3H)
    const real[:, ::1] h_n,          # (B, H)
    real[:, ::1] d_x_gates,          # (B, 3H) out
    real[:, ::1] d_h_gates,          # (B, 3H) out
):
    cdef Py_ssize_t batch = h_prev.shape[0], b
    with nogil:
        for b in range(batch):
            _cell_backward_row(&dh_out[b, 0], &dh_next[b, 0], &h_prev[b, 0], &activations[b, 0], &h_n[b, 0],
                               &d_x_gates[b, 0], &d_h_gates[b, 0], h_prev.shape[1])


cdef inline void _cell_backward_row(const real* dh_out, real* dh_next, const real* h_prev, const real* act,
                                    const real* h_n, real* dxg, real* dhg, Py_ssize_t hidden) noexcept nogil:
    """One batch row of ``gru_cell_backward`` (derivation there); dh_next is overwritten
    element by element, after it is read, with the direct part dh ⊙ z of dL/dh_prev."""
    cdef Py_ssize_t j
    cdef real dh, dn_pre, r, z, n
    for j in range(hidden):
        r, z, n = act[j], act[hidden + j], act[2 * hidden + j]
        dh = dh_out[j] + dh_next[j]
        dn_pre = dh * (1 - z) * (1 - n * n)
        dxg[j] = dn_pre * h_n[j] * r * (1 - r)
        dxg[hidden + j] = dh * (h_prev[j] - n) * z * (1 - z)
        dxg[2 * hidden + j] = dn_pre
        dhg[j], dhg[hidden + j], dhg[2 * hidden + j] = dxg[j], dxg[hidden + j], dn_pre * r
        dh_next[j] = dh * z




def gru_layer_forward(x_proj, w_hh, b_hh, h0, keep_saved=True):
    """As ``tinylm.reference.gru.gru_layer_forward``: (hs, saved), saved None with
    ``keep_saved=False``, when one step's gates are kept at a time instead of all T."""
    dtype = float_dtype("gru_layer_forward", "x_proj", x_proj)
    x_proj, w_hh, b_hh, h0 = contiguous_arrays("gru_layer_forward", np, dtype, x_proj=x_proj, w_hh=w_hh, b_hh=b_hh, h0=h0)
    check_layer_shapes("gru_layer_forward", x_proj, w_hh, b_hh, h0)
    keep_saved = flag("gru_layer_forward", "keep_saved", keep_saved)
    steps, batch, hidden = x_proj.shape[0], x_proj.shape[1], w_hh.shape[1]
    kept = steps if keep_saved else 1  # steps of gates kept: all, or a ring of one
    hs = np.empty((steps, batch, hidden), dtype)
    activations = np.empty((kept, batch, 3 * hidden), dtype)
    h_ns = np.empty((kept, batch, hidden), dtype)
    if _packed_loop_serves(dtype, steps, batch, hidden):
        _forward_packed(x_proj, w_hh, b_hh, h0, activations, h_ns, hs, _loop_threads(batch, hidden, 3))
        return hs, (hs, activations, h_ns) if keep_saved else None
    w_hh_t = np.ascontiguousarray(w_hh.T)  # (H, 3H)
    h_gates = np.empty((batch, 3 * hidden), dtype)
    h = h0
    for t in range(steps):
        np.matmul(h, w_hh_t, out=h_gates)
        h_gates += b_hh
        _cell_forward(x_proj[t], h_gates, h, activations[t % kept], h_ns[t % kept], hs[t])
        h = hs[t]
    return hs, (hs, activations, h_ns) if keep_saved else None


def gru_layer_backward(d_hs, d_h_n, w_hh, b_hh, h0, saved):
    """As ``tinylm.reference.gru.gru_layer_backward``: (d_x_proj, d_w_hh, d_b_hh, d_h0)."""
    if not isinstance(saved, tuple) or len(saved) != 3:
        raise TypeError("gru_layer_backward: saved must be the (hs, activations, h_ns) of gru_layer_forward")
    hs, activations, h_ns = saved
    dtype = float_dtype("gru_layer_backward", "the saved arrays", hs)
    d_hs, d_h_n, w_hh, b_hh, h0, hs, activations, h_ns = contiguous_arrays(
        "gru_layer_backward", np, dtype, d_hs=d_hs, d_h_n=d_h_n, w_hh=w_hh, b_hh=b_hh, h0=h0,
        hs=hs, activations=activations, h_ns=h_ns)
    check_layer_shapes("gru_layer_backward", activations, w_hh, b_hh, h0)
    steps, batch, hidden = activations.shape[0], activations.shape[1], w_hh.shape[1]
    for key, value in (("d_hs", d_hs), ("hs", hs), ("h_ns", h_ns)):
        if value.shape != (steps, batch, hidden):
            raise ValueError(f"gru_layer_backward: {key} {value.shape} must be (T, B, H) = {(steps, batch, hidden)}")
    if d_h_n.shape != (batch, hidden):
        raise ValueError(f"gru_layer_backward: d_h_n {d_h_n.shape} must be (B, H) = {(batch, hidden)}")
    d_x_proj, d_h_gates = np.empty_like(activations), np.empty_like(activations)  # (T, B, 3H) each
    d_h = d_h_n.copy()  # dL/dh_t arriving from step t+1 (at first: from the final state)
    if _packed_loop_serves(dtype, steps, batch, hidden):
        _backward_packed(d_hs, d_h, w_hh, h0, hs, activations, h_ns, d_x_proj, d_h_gates,
                         _loop_threads(batch, hidden, 3))
    else:
        through_w = np.empty((batch, hidden), dtype)  # dh_gates_t Wₕₕ
        for t in range(steps - 1, -1, -1):
            h_prev = hs[t - 1] if t > 0 else h0
            _cell_backward(d_hs[t], d_h, h_prev, activations[t], h_ns[t], d_x_proj[t], d_h_gates[t])
            np.matmul(d_h_gates[t], w_hh, out=through_w)
            d_h += through_w  # direct part + what h_{t-1} receives through the gates
    # dWₕₕ = Σₜ dh_gatesₜᵀ hₜ₋₁: steps 1.. in one product over hs[:-1] in place, step 0's h0
    # added (no (T, B, H) copy of h0 + hs[:-1]), on the kernels' OpenMP team.
    d_w_hh = gemm(d_h_gates[1:].reshape(-1, 3 * hidden), hs[:-1].reshape(-1, hidden), transpose_a=True)
    gemm(d_h_gates[0], h0, out=d_w_hh, accumulate=True, transpose_a=True)
    return d_x_proj, d_w_hh, d_h_gates.reshape(-1, 3 * hidden).sum(axis=0), d_h


@cython.boundscheck(False)
@cython.wraparound(False)
def _forward_packed(
    const float[:, :, ::1] x_proj,  # (T, B, 3H)
    const float[:, ::1] w_hh,       # (3H, H)
    const float[::1] b_hh,          # (3H,)
    const float[:, ::1] h0,         # (B, H)
    float[:, :, ::1] activations,   # (T or 1, B, 3H) out
    float[:, :, ::1] h_ns,          # (T or 1, B, H) out
    float[:, :, ::1] hs,            # (T, B, H) out
    int threads,
):
    """The loop over time as ``tinylm_gru_forward``: W_hhᵀ packed once, then one OpenMP
    region on the packed micro-kernel (see ``tinylm_recurrent.h``)."""
    cdef Py_ssize_t steps = x_proj.shape[0], batch = x_proj.shape[1], hidden = hs.shape[2]
    packed_w, packed_h = _packed_forward_operands(w_hh, 3, h0)
    recurrent = np.empty((batch, 3 * hidden), np.float32)
    cdef float[::1] w_view = packed_w
    cdef float[:, ::1] h_view = packed_h
    cdef float[:, ::1] r_view = recurrent
    with nogil:
        tinylm_gru_forward(steps, batch, hidden, &x_proj[0, 0, 0], &w_view[0], &b_hh[0], &h0[0, 0], &r_view[0, 0],
                           &h_view[0, 0], &activations[0, 0, 0], &h_ns[0, 0, 0], activations.shape[0],
                           &hs[0, 0, 0], threads)


@cython.boundscheck(False)
@cython.wraparound(False)
def _backward_packed(
    const float[:, :, ::1] d_hs,         # (T, B, H)
    float[:, ::1] d_h,                   # (B, H) in: dL/dh_n; out: dL/dh0
    const float[:, ::1] w_hh,            # (3H, H)
    const float[:, ::1] h0,              # (B, H)
    const float[:, :, ::1] hs,           # (T, B, H)
    const float[:, :, ::1] activations,  # (T, B, 3H)
    const float[:, :, ::1] h_ns,         # (T, B, H)
    float[:, :, ::1] d_x_proj,           # (T, B, 3H) out
    float[:, :, ::1] d_h_gates,          # (T, B, 3H) out
    int threads,
):
    """Backpropagation through time as ``tinylm_gru_backward``: W_hh packed once, then one
    OpenMP region on the packed micro-kernel (see ``tinylm_recurrent.h``)."""
    cdef Py_ssize_t steps = d_hs.shape[0], batch = d_hs.shape[1], hidden = d_hs.shape[2]
    packed_w, packed_dg = _packed_backward_operands(w_hh, 3, batch)
    cdef float[::1] w_view = packed_w
    cdef float[:, ::1] dg_view = packed_dg
    with nogil:
        tinylm_gru_backward(steps, batch, hidden, &d_hs[0, 0, 0], &d_h[0, 0], &w_view[0], &h0[0, 0], &hs[0, 0, 0],
                            &activations[0, 0, 0], &h_ns[0, 0, 0], &d_x_proj[0, 0, 0], &d_h_gates[0, 0, 0],
                            &dg_view[0, 0], threads)
