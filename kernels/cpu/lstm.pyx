# cython: language_level=3
"""The LSTM as Cython kernels: the drop-ins for ``tinylm/reference/lstm.py``.

Same names, signatures, results and ``saved`` layout as the reference, so either
backward can follow either forward. What differs, and why:

- The gate nonlinearities and the cell update of a step are one fused loop over the
  (B, H) elements (``_cell_forward``, ``_cell_backward``): one pass over memory instead
  of a dozen NumPy temporaries per step.
- The loop over time runs in C without the GIL, so no Python runs per time step (a
  Python loop costs interpreter time per step and evicts the weights from cache).
- float32, two steps or more, a batch of at least half a register tile: the whole loop,
  forward or backward, is one OpenMP region on tinylm's packed micro-kernel
  (``tinylm_recurrent.h``, the loop the GRU and the RNN run too, with the LSTM's cells
  from ``tinylm_lstm.h``): Wₕₕ packed once per call (OpenBLAS packs it again for every
  per-step product), the team split by batch rows (each thread runs its rows through
  every step alone, no barrier) when the rows' register panels share out evenly, else by
  hidden units (their gate columns, their share of Wₕₕ, their cells; one barrier a step).
  ``lstm_layer_forward_from_input`` (what ``nn.LSTM`` calls) also makes the input
  projection there, a step at a time, so x_proj is never written.
- Otherwise (float64, batch 1 sampling, one step) each step's product calls
  ``cblas_sgemm``/``cblas_dgemm`` of the OpenBLAS NumPy itself uses (found by
  ``blas.py``, called through ``_blas.pxi``) between the fused cell loops; where NumPy's
  BLAS cannot be found (MKL, Accelerate) that loop runs in Python with ``np.matmul``
  into preallocated buffers. The results agree to rounding on every path.
- dWₕₕ is one product over all steps after the loop, as in the reference, on the
  kernels' OpenMP team (``gemm.pyx``'s ``gemm``).
- ``keep_saved=False`` (evaluation): the gates and cells of one step are kept at a time
  (rings of one step, two for c) instead of all T.
- ``lstm_stack_step`` (sampling): every layer's step in one call, so at batch 1 the
  dozen NumPy calls around a few matrix-vector products are gone. With int8 weights
  (scales given) each product is ``tinylm_int8.h``'s matrix-vector routine, the one
  ``int8_matmul.pyx`` uses: a later layer's [W_ih | W_hh] rows are two int8 sums with
  their own scales, read in place from ``stacked`` (no [x, h] copy is made). Given the
  int8 output layer as well (``fc_weight``), the logits come from the same OpenMP
  region. Its arguments are checked in C (``_int8_step``: type, byte order, contiguity,
  alignment and shape of each array, well under a microsecond), and only what fails
  there goes through the Python checks, which convert it or refuse it by name.
- The float exp is ``tinylm_math.h``'s branch-free polynomial, which GCC vectorises
  (libm's ``expf`` is a call, which it does not), and each batch row's gate loops touch
  few enough arrays for GCC to vectorise them (see ``_cell_forward_row``).
- Outside the packed loop the fused cell loops run on one thread: at B·H in the
  thousands, waking an OpenMP team costs more than it saves.
- The wrapper checks dtypes and shapes and makes every buffer contiguous first, so the
  loops index without bounds checks and never outside the arrays.
"""

import numpy as np

cimport cython
include "_math.pxi"
include "_blas.pxi"
include "_recurrent.pxi"

from libc.stdint cimport int8_t

cimport numpy as cnp

cnp.import_array()

from tinylm.kernels.checks import contiguous_arrays, flag, float_dtype
from tinylm.kernels.cpu.gemm import gemm
from tinylm.kernels.cpu.int8_matmul import check_int8_weight, check_scale, threads_for_weights
from tinylm.reference.lstm import check_input_shapes, check_layer_shapes

cdef extern from "tinylm_lstm.h" nogil:
    void tinylm_lstm_forward(Py_ssize_t steps, Py_ssize_t batch, Py_ssize_t hidden, const float* x_proj,
                             const float* packed_w, const float* c0, float* recurrent, float* packed_h,
                             float* activations, Py_ssize_t n_act, float* hs, float* cs, Py_ssize_t n_c,
                             float* tanh_cs, Py_ssize_t n_tanh, int threads)
    void tinylm_lstm_forward_from_input(Py_ssize_t steps, Py_ssize_t batch, Py_ssize_t hidden, Py_ssize_t inputs,
                                        const float* x, const float* packed_wi, const float* bias,
                                        const float* packed_w, const float* c0, float* recurrent, float* packed_h,
                                        float* packed_x, float* activations, Py_ssize_t n_act, float* hs, float* cs,
                                        Py_ssize_t n_c, float* tanh_cs, Py_ssize_t n_tanh, int threads)
    void tinylm_lstm_backward(Py_ssize_t steps, Py_ssize_t batch, Py_ssize_t hidden, const float* d_hs,
                              float* d_h, float* d_c, const float* packed_w, const float* c0, const float* cs,
                              const float* activations, const float* tanh_cs, float* d_gates, float* packed_dg,
                              int threads)
    void tinylm_lstm_stack_step(const float* gates0, const float* h, const float* c, const float* w_hh0,
                                const float* stacked, const float* biases, float* new_h, float* new_c,
                                float* product, float* act, float* tanh_c, Py_ssize_t layers, Py_ssize_t batch,
                                Py_ssize_t hidden, int threads)

cdef extern from "tinylm_int8.h" nogil:
    void tinylm_int8_matvec(const float* x, const int8_t* q, Py_ssize_t ldq, const float* scale, float* y,
                            Py_ssize_t rows, Py_ssize_t cols, int accumulate, int threads)
    void tinylm_int8_lstm_stack_step(const float* gates0, const float* h, const float* c, const int8_t* w_hh0,
                                     const float* w_hh0_scale, const int8_t* stacked, const float* stacked_scale,
                                     const float* biases, float* new_h, float* new_c, float* pre, const int8_t* fc,
                                     const float* fc_scale, const float* fc_bias, float* logits, Py_ssize_t vocab,
                                     Py_ssize_t layers, Py_ssize_t batch, Py_ssize_t hidden, int threads)


@cython.boundscheck(False)
@cython.wraparound(False)
def _cell_forward(
    const real[:, ::1] x_proj,   # (B, 4H) this step's input projection
    const real[:, ::1] recurrent,  # (B, 4H) h_prev @ Wₕₕᵀ
    const real[:, ::1] c_prev,   # (B, H)
    real[:, ::1] activations,    # (B, 4H) out: i, f, g, o
    real[:, ::1] c,              # (B, H) out
    real[:, ::1] tanh_c,         # (B, H) out
    real[:, ::1] h,              # (B, H) out
):
    cdef Py_ssize_t batch = c.shape[0], hidden = c.shape[1], b
    cdef const real* pre       # this row of x_proj,    gates i | f | g | o, each H wide
    cdef const real* rec       # this row of recurrent, the same layout
    cdef real* act
    with nogil:
        for b in range(batch):
            # Raw row pointers: the inner loop is then plain C over arrays, which GCC
            # vectorises (with memoryview indexing it did not).
            pre, rec, act = &x_proj[b, 0], &recurrent[b, 0], &activations[b, 0]
            _cell_forward_row(pre, rec, &c_prev[b, 0], act, &c[b, 0], &tanh_c[b, 0], &h[b, 0], hidden)


@cython.cdivision(True)
cdef inline void _cell_forward_row(const real* pre, const real* rec, const real* c_prev, real* act, real* c,
                                   real* tanh_c, real* h, Py_ssize_t hidden) noexcept nogil:
    """One batch row. Short loops over at most five arrays each: GCC vectorises a loop
    only after proving (at run time) that its arrays do not overlap, and gives up past
    about ten pairs of arrays, which one fused loop over seven arrays exceeds. The
    activations go to ``act`` first and the cell update reads them back from L1."""
    cdef Py_ssize_t j
    cdef real* i = act
    cdef real* f = act + hidden
    cdef real* g = act + 2 * hidden
    cdef real* o = act + 3 * hidden
    for j in range(hidden):
        i[j] = _sigmoid(pre[j] + rec[j])
    for j in range(hidden):
        f[j] = _sigmoid(pre[hidden + j] + rec[hidden + j])
    for j in range(hidden):
        g[j] = _tanh(pre[2 * hidden + j] + rec[2 * hidden + j])
    for j in range(hidden):
        o[j] = _sigmoid(pre[3 * hidden + j] + rec[3 * hidden + j])
    for j in range(hidden):
        c[j] = f[j] * c_prev[j] + i[j] * g[j]
    for j in range(hidden):
        tanh_c[j] = _tanh(c[j])
    for j in range(hidden):
        h[j] = o[j] * tanh_c[j]


@cython.boundscheck(False)
@cython.wraparound(False)
def _cell_backward(
    const real[:, ::1] dh_out,      # (B, H) dL/dh_t from the layer's output
    const real[:, ::1] dh_next,     # (B, H) dL/dh_t sent back by step t+1
    real[:, ::1] dc,                 # (B, H) in: dL/dc_t from step t+1; out: dL/dc_{t-1}
    const real[:, ::1] c_prev,       # (B, H)
    const real[:, ::1] activations,  # (B, 4H)
    const real[:, ::1] tanh_c,       # (B, H)
    real[:, ::1] d_gates,            # (B, 4H) out
):
    cdef Py_ssize_t batch = dc.shape[0], b
    with nogil:
        for b in range(batch):
            _cell_backward_row(&dh_out[b, 0], &dh_next[b, 0], &dc[b, 0], &c_prev[b, 0], &activations[b, 0],
                               &tanh_c[b, 0], &d_gates[b, 0], dc.shape[1])


DEF CHUNK = 256  # hidden units per pass; dh and dc of a chunk live in stack buffers


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void _cell_backward_row(const real* dh_out, const real* dh_next, real* dc, const real* c_prev,
                                    const real* act, const real* tanh_c, real* d_gates,
                                    Py_ssize_t hidden) noexcept nogil:
    """One batch row, in chunks of hidden units, as short loops over few arrays each (so
    that GCC vectorises them, as in ``_cell_forward_row``)."""
    cdef Py_ssize_t j, start, n
    cdef real dh[CHUNK]        # dh_out + dh_next
    cdef real dc_total[CHUNK]  # dc + what reaches c through h
    cdef const real* i
    cdef const real* f
    cdef const real* g
    cdef const real* o
    cdef const real* tc
    for start in range(0, hidden, CHUNK):
        n = min(CHUNK, hidden - start)
        i, f, g, o = act + start, act + hidden + start, act + 2 * hidden + start, act + 3 * hidden + start
        tc = tanh_c + start
        for j in range(n):
            dh[j] = dh_out[start + j] + dh_next[start + j]
        for j in range(n):
            dc_total[j] = dc[start + j] + dh[j] * o[j] * (1 - tc[j] * tc[j])
        for j in range(n):
            d_gates[start + j] = dc_total[j] * g[j] * i[j] * (1 - i[j])
        for j in range(n):
            d_gates[hidden + start + j] = dc_total[j] * c_prev[start + j] * f[j] * (1 - f[j])
        for j in range(n):
            d_gates[2 * hidden + start + j] = dc_total[j] * i[j] * (1 - g[j] * g[j])
        for j in range(n):
            d_gates[3 * hidden + start + j] = dh[j] * tc[j] * o[j] * (1 - o[j])
        for j in range(n):
            dc[start + j] = dc_total[j] * f[j]


@cython.boundscheck(False)
@cython.wraparound(False)
def _forward_steps(
    const real[:, :, ::1] x_proj,  # (T, B, 4H)
    const real[:, ::1] w,          # Wₕₕᵀ (H, 4H), or Wₕₕ (4H, H) itself when ``w_is_w_hh``
    bint w_is_w_hh,
    const real[:, ::1] h0,         # (B, H)
    const real[:, ::1] c0,         # (B, H)
    real[:, ::1] recurrent,        # (B, 4H) scratch: h_{t-1} Wₕₕᵀ
    real[:, :, ::1] activations,   # (T, B, 4H) out, or (1, B, 4H) scratch
    real[:, :, ::1] hs,            # (T, B, H) out
    real[:, :, ::1] cs,            # (T, B, H) out, or (2, B, H) scratch
    real[:, :, ::1] tanh_cs,       # (T, B, H) out, or (1, B, H) scratch
):
    """The reference's loop over time, in C: per step one gemm and the fused cell.
    Step t writes row t % len of activations, cs and tanh_cs: all T steps are kept for a
    backward, or a ring of one step (two for c, which the next step reads) when none will
    run. Needs B ≥ 1 and H ≥ 1 (the wrapper checks)."""
    cdef Py_ssize_t steps = x_proj.shape[0], batch = x_proj.shape[1], hidden = hs.shape[2], t, b
    cdef Py_ssize_t a, c, p, n_act = activations.shape[0], n_c = cs.shape[0], n_tanh = tanh_cs.shape[0]
    cdef const real* h_prev
    cdef const real* c_prev
    with nogil:
        for t in range(steps):
            a, c, p = t % n_act, t % n_c, t % n_tanh
            if t == 0:
                h_prev, c_prev = &h0[0, 0], &c0[0, 0]
            else:
                h_prev, c_prev = &hs[t - 1, 0, 0], &cs[(t - 1) % n_c, 0, 0]
            _gemm(False, w_is_w_hh, batch, 4 * hidden, hidden, h_prev, hidden, &w[0, 0], w.shape[1],
                  &recurrent[0, 0], 4 * hidden)
            for b in range(batch):
                _cell_forward_row(&x_proj[t, b, 0], &recurrent[b, 0], c_prev + b * hidden, &activations[a, b, 0],
                                  &cs[c, b, 0], &tanh_cs[p, b, 0], &hs[t, b, 0], hidden)


@cython.boundscheck(False)
@cython.wraparound(False)
def _backward_steps(
    const real[:, :, ::1] d_hs,         # (T, B, H)
    real[:, ::1] d_h,                   # (B, H) in: dL/dh_n; out: dL/dh0
    real[:, ::1] d_c,                   # (B, H) in: dL/dc_n; out: dL/dc0
    const real[:, ::1] w_hh,            # (4H, H)
    const real[:, ::1] c0,              # (B, H)
    const real[:, :, ::1] cs,           # (T, B, H)
    const real[:, :, ::1] activations,  # (T, B, 4H)
    const real[:, :, ::1] tanh_cs,      # (T, B, H)
    real[:, :, ::1] d_gates,            # (T, B, 4H) out
):
    """Backpropagation through time in C: per step the fused cell backward, then one gemm
    for what h_{t-1} receives, dgates_t Wₕₕ. Needs B ≥ 1 and H ≥ 1."""
    cdef Py_ssize_t steps = d_hs.shape[0], batch = d_hs.shape[1], hidden = d_hs.shape[2], t, b
    cdef const real* c_prev
    with nogil:
        for t in range(steps - 1, -1, -1):
            c_prev = &c0[0, 0] if t == 0 else &cs[t - 1, 0, 0]
            for b in range(batch):
                _cell_backward_row(&d_hs[t, b, 0], &d_h[b, 0], &d_c[b, 0], c_prev + b * hidden,
                                   &activations[t, b, 0], &tanh_cs[t, b, 0], &d_gates[t, b, 0], hidden)
            # d_h's row b was read above, before this product overwrites it.
            _gemm(False, False, batch, hidden, 4 * hidden, &d_gates[t, 0, 0], 4 * hidden, &w_hh[0, 0], hidden,
                  &d_h[0, 0], hidden)



def lstm_layer_forward(x_proj, w_hh, h0, c0, keep_saved=True):
    """As ``tinylm.reference.lstm.lstm_layer_forward``: (hs, c_n, saved). With
    ``keep_saved=False`` (evaluation) the gates and cells of one step are kept at a time,
    not all T: 4 of the 7 (T, B, H)-sized arrays are never written, and saved is None."""
    dtype = float_dtype("lstm_layer_forward", "x_proj", np.asarray(x_proj))
    x_proj, w_hh, h0, c0 = contiguous_arrays("lstm_layer_forward", np, dtype, x_proj=x_proj, w_hh=w_hh, h0=h0, c0=c0)
    check_layer_shapes("lstm_layer_forward", x_proj, w_hh, h0, c0)
    steps, batch, hidden = x_proj.shape[0], x_proj.shape[1], w_hh.shape[1]
    keep_saved = flag("lstm_layer_forward", "keep_saved", keep_saved)
    hs, cs, tanh_cs, activations, recurrent = _layer_buffers(steps, batch, hidden, dtype, keep_saved)
    if _packed_loop_serves(dtype, steps, batch, hidden):
        _forward_packed(x_proj, w_hh, h0, c0, recurrent, activations, hs, cs, tanh_cs, _loop_threads(batch, hidden, 4))
        return _layer_result(hs, cs, activations, tanh_cs, keep_saved)
    # (H, 4H): OpenBLAS multiplies by a contiguous copy about twice as fast as by the
    # transposed view, but the copy costs about one (32, H) @ (H, 4H) product, so only a
    # sequence longer than one step pays for it (sampling runs one step per call).
    w_hh_t = np.ascontiguousarray(w_hh.T) if steps > 1 else w_hh.T
    if batch and hidden and _blas_ready(4 * hidden * max(batch, hidden)):
        w, w_is_w_hh = (w_hh_t, False) if steps > 1 else (w_hh, True)
        _forward_steps(x_proj, w, w_is_w_hh, h0, c0, recurrent, activations, hs, cs, tanh_cs)
    else:
        _forward_steps_through_numpy(x_proj, w_hh_t, h0, c0, recurrent, activations, hs, cs, tanh_cs)
    return _layer_result(hs, cs, activations, tanh_cs, keep_saved)


def _layer_buffers(steps, batch, hidden, dtype, keep_saved):
    """(hs, cs, tanh_cs, activations, recurrent) for a forward: every step's gates and cells
    when a backward will run, else a ring of one step (two for c, which the next step reads)."""
    kept = steps if keep_saved else 1
    return (np.empty((steps, batch, hidden), dtype), np.empty((kept if keep_saved else 2, batch, hidden), dtype),
            np.empty((kept, batch, hidden), dtype), np.empty((kept, batch, 4 * hidden), dtype),
            np.empty((batch, 4 * hidden), dtype))


def _layer_result(hs, cs, activations, tanh_cs, keep_saved):
    """(hs, c_n, saved) of a forward that filled ``_layer_buffers``' arrays."""
    c_n = cs[(hs.shape[0] - 1) % len(cs)]
    return (hs, c_n, (hs, cs, activations, tanh_cs)) if keep_saved else (hs, c_n.copy(), None)


def lstm_layer_forward_from_input(x, w_ih, bias, w_hh, h0, c0, keep_saved=True):
    """As ``tinylm.reference.lstm.lstm_layer_forward_from_input``: (hs, c_n, saved). Where
    the packed loop serves (float32, T ≥ 2, a batch of at least half a register tile) the
    input projection is made inside it, a step at a time (``tinylm_lstm_forward_from_input``),
    so x_proj is never written; elsewhere x_proj comes from the ``gemm`` kernel and goes to
    ``lstm_layer_forward``."""
    dtype = float_dtype("lstm_layer_forward_from_input", "x", np.asarray(x))
    x, w_ih, bias, w_hh, h0, c0 = contiguous_arrays("lstm_layer_forward_from_input", np, dtype, x=x, w_ih=w_ih,
                                                     bias=bias, w_hh=w_hh, h0=h0, c0=c0)
    check_input_shapes("lstm_layer_forward_from_input", x, w_ih, bias, w_hh, h0, c0)
    keep_saved = flag("lstm_layer_forward_from_input", "keep_saved", keep_saved)
    steps, batch, inputs = x.shape
    hidden = w_hh.shape[1]
    if not _packed_loop_serves(dtype, steps, batch, hidden):
        x_proj = gemm(x.reshape(-1, inputs), w_ih, transpose_b=True, bias=bias).reshape(steps, batch, 4 * hidden)
        return lstm_layer_forward(x_proj, w_hh, h0, c0, keep_saved)
    hs, cs, tanh_cs, activations, recurrent = _layer_buffers(steps, batch, hidden, dtype, keep_saved)
    _from_input_packed(x, w_ih, bias, w_hh, h0, c0, recurrent, activations, hs, cs, tanh_cs,
                       _loop_threads(batch, hidden, 4))
    return _layer_result(hs, cs, activations, tanh_cs, keep_saved)


@cython.boundscheck(False)
@cython.wraparound(False)
def _from_input_packed(
    const float[:, :, ::1] x,       # (T, B, I)
    const float[:, ::1] w_ih,       # (4H, I)
    const float[::1] bias,          # (4H,)
    const float[:, ::1] w_hh,       # (4H, H)
    const float[:, ::1] h0,         # (B, H)
    const float[:, ::1] c0,         # (B, H)
    float[:, ::1] recurrent,        # (B, 4H) scratch
    float[:, :, ::1] activations,   # (T or 1, B, 4H) out
    float[:, :, ::1] hs,            # (T, B, H) out
    float[:, :, ::1] cs,            # (T or 2, B, H) out
    float[:, :, ::1] tanh_cs,       # (T or 1, B, H) out
    int threads,
):
    """``tinylm_lstm_forward_from_input``: Wᵢₕᵀ and Wₕₕᵀ packed once, x_0 and h0 packed,
    then the loop."""
    cdef Py_ssize_t steps = x.shape[0], batch = x.shape[1], inputs = x.shape[2], hidden = hs.shape[2]
    packed_w, packed_h = _packed_forward_operands(w_hh, 4, h0)
    packed_wi, packed_x = _packed_forward_operands(w_ih, 4, x[0])
    cdef float[::1] w_view = packed_w, wi_view = packed_wi
    cdef float[:, ::1] h_view = packed_h, x_view = packed_x
    with nogil:
        tinylm_lstm_forward_from_input(steps, batch, hidden, inputs, &x[0, 0, 0], &wi_view[0], &bias[0], &w_view[0],
                                       &c0[0, 0], &recurrent[0, 0], &h_view[0, 0], &x_view[0, 0],
                                       &activations[0, 0, 0], activations.shape[0], &hs[0, 0, 0], &cs[0, 0, 0],
                                       cs.shape[0], &tanh_cs[0, 0, 0], tanh_cs.shape[0], threads)


@cython.boundscheck(False)
@cython.wraparound(False)
def _forward_packed(
    const float[:, :, ::1] x_proj,  # (T, B, 4H)
    const float[:, ::1] w_hh,       # (4H, H)
    const float[:, ::1] h0,         # (B, H)
    const float[:, ::1] c0,         # (B, H)
    float[:, ::1] recurrent,        # (B, 4H) scratch
    float[:, :, ::1] activations,   # (T or 1, B, 4H) out
    float[:, :, ::1] hs,            # (T, B, H) out
    float[:, :, ::1] cs,            # (T or 2, B, H) out
    float[:, :, ::1] tanh_cs,       # (T or 1, B, H) out
    int threads,
):
    """``_forward_steps`` as ``tinylm_lstm_forward``: W_hhᵀ packed once, then the whole loop
    over time in one OpenMP region on the packed micro-kernel (see ``tinylm_recurrent.h``)."""
    cdef Py_ssize_t steps = x_proj.shape[0], batch = x_proj.shape[1], hidden = hs.shape[2]
    packed_w, packed_h = _packed_forward_operands(w_hh, 4, h0)
    cdef float[::1] w_view = packed_w
    cdef float[:, ::1] h_view = packed_h
    with nogil:
        tinylm_lstm_forward(steps, batch, hidden, &x_proj[0, 0, 0], &w_view[0], &c0[0, 0], &recurrent[0, 0],
                            &h_view[0, 0], &activations[0, 0, 0], activations.shape[0], &hs[0, 0, 0], &cs[0, 0, 0],
                            cs.shape[0], &tanh_cs[0, 0, 0], tanh_cs.shape[0], threads)


@cython.boundscheck(False)
@cython.wraparound(False)
def _backward_packed(
    const float[:, :, ::1] d_hs,         # (T, B, H)
    float[:, ::1] d_h,                   # (B, H) in: dL/dh_n; out: dL/dh0
    float[:, ::1] d_c,                   # (B, H) in: dL/dc_n; out: dL/dc0
    const float[:, ::1] w_hh,            # (4H, H)
    const float[:, ::1] c0,              # (B, H)
    const float[:, :, ::1] cs,           # (T, B, H)
    const float[:, :, ::1] activations,  # (T, B, 4H)
    const float[:, :, ::1] tanh_cs,      # (T, B, H)
    float[:, :, ::1] d_gates,            # (T, B, 4H) out
    int threads,
):
    """``_backward_steps`` as ``tinylm_lstm_backward``: W_hh packed once, then backpropagation
    through time in one OpenMP region on the packed micro-kernel (see ``tinylm_recurrent.h``)."""
    cdef Py_ssize_t steps = d_hs.shape[0], batch = d_hs.shape[1], hidden = d_hs.shape[2]
    packed_w, packed_dg = _packed_backward_operands(w_hh, 4, batch)
    cdef float[::1] w_view = packed_w
    cdef float[:, ::1] dg_view = packed_dg
    with nogil:
        tinylm_lstm_backward(steps, batch, hidden, &d_hs[0, 0, 0], &d_h[0, 0], &d_c[0, 0], &w_view[0], &c0[0, 0],
                             &cs[0, 0, 0], &activations[0, 0, 0], &tanh_cs[0, 0, 0], &d_gates[0, 0, 0],
                             &dg_view[0, 0], threads)


def _forward_steps_through_numpy(x_proj, w_hh_t, h0, c0, recurrent, activations, hs, cs, tanh_cs):
    """``_forward_steps`` with the products through ``np.matmul`` (NumPy's BLAS not found)."""
    dtype, h, c = x_proj.dtype, h0, c0
    for t in range(x_proj.shape[0]):
        np.matmul(h, w_hh_t, out=recurrent)
        a, c_out, p = activations[t % len(activations)], cs[t % len(cs)], tanh_cs[t % len(tanh_cs)]
        _cell_forward(x_proj[t], recurrent, c, a, c_out, p, hs[t])
        h, c = hs[t], c_out


def lstm_layer_backward(d_hs, d_h_n, d_c_n, w_hh, h0, c0, saved):
    """As ``tinylm.reference.lstm.lstm_layer_backward``: (d_x_proj, d_w_hh, d_h0, d_c0)."""
    hs, cs, activations, tanh_cs = saved
    dtype = float_dtype("lstm_layer_backward", "the saved arrays", np.asarray(hs))
    d_hs, d_h_n, d_c_n, w_hh, h0, c0, hs, cs, activations, tanh_cs = contiguous_arrays(
        "lstm_layer_backward", np, dtype, d_hs=d_hs, d_h_n=d_h_n, d_c_n=d_c_n, w_hh=w_hh, h0=h0, c0=c0,
        hs=hs, cs=cs, activations=activations, tanh_cs=tanh_cs)
    check_layer_shapes("lstm_layer_backward", activations, w_hh, h0, c0)
    steps, batch, hidden = activations.shape[0], activations.shape[1], w_hh.shape[1]
    for key, value in (("d_hs", d_hs), ("hs", hs), ("cs", cs), ("tanh_cs", tanh_cs)):
        if value.shape != (steps, batch, hidden):
            raise ValueError(f"lstm_layer_backward: {key} {value.shape} must be (T, B, H) = {(steps, batch, hidden)}")
    if d_h_n.shape != (batch, hidden) or d_c_n.shape != (batch, hidden):
        raise ValueError(f"lstm_layer_backward: d_h_n {d_h_n.shape} and d_c_n {d_c_n.shape} must be (B, H)")
    d_gates = np.empty_like(activations)  # (T, B, 4H)
    d_h = d_h_n.copy()  # dL/dh_t arriving from step t+1 (at first: from the final state)
    d_c = d_c_n.copy()
    if _packed_loop_serves(dtype, steps, batch, hidden):
        _backward_packed(d_hs, d_h, d_c, w_hh, c0, cs, activations, tanh_cs, d_gates, _loop_threads(batch, hidden, 4))
    elif batch and hidden and _blas_ready(4 * hidden * max(batch, hidden)):
        _backward_steps(d_hs, d_h, d_c, w_hh, c0, cs, activations, tanh_cs, d_gates)
    else:
        _backward_steps_through_numpy(d_hs, d_h, d_c, w_hh, c0, cs, activations, tanh_cs, d_gates)
    # dWₕₕ = Σₜ dgatesₜᵀ hₜ₋₁: steps 1.. in one product over hs[:-1] in place, step 0's h0 added
    # (no (T, B, H) copy of h0 + hs[:-1]); on the kernels' OpenMP team (``gemm.pyx``).
    d_w_hh = gemm(d_gates[1:].reshape(-1, 4 * hidden), hs[:-1].reshape(-1, hidden), transpose_a=True)
    gemm(d_gates[0], h0, out=d_w_hh, accumulate=True, transpose_a=True)
    return d_gates, d_w_hh, d_h, d_c


def _backward_steps_through_numpy(d_hs, d_h, d_c, w_hh, c0, cs, activations, tanh_cs, d_gates):
    """``_backward_steps`` with the products through ``np.matmul`` (NumPy's BLAS not found)."""
    dtype = d_hs.dtype
    for t in range(d_hs.shape[0] - 1, -1, -1):
        c_prev = cs[t - 1] if t > 0 else c0
        _cell_backward(d_hs[t], d_h, d_c, c_prev, activations[t], tanh_cs[t], d_gates[t])
        np.matmul(d_gates[t], w_hh, out=d_h)  # (B, H): what h_{t-1} receives from step t


@cython.boundscheck(False)
@cython.wraparound(False)
def _stack_step(
    const real[:, ::1] gates0,      # (B, 4H) layer 0's input part of the gates
    const real[:, :, ::1] h,        # (L, B, H)
    const real[:, :, ::1] c,        # (L, B, H)
    const real[:, ::1] w_hh0,       # (4H, H)
    const real[:, :, ::1] stacked,  # (L-1, 4H, 2H)
    const real[:, ::1] biases,      # (L-1, 4H)
    real[:, ::1] product,           # (B, 4H) scratch: the product part of the gates
    real[:, ::1] x_and_h,           # (B, 2H) scratch: a later layer's [x, h]
    real[::1] activations,          # (4H,) scratch
    real[::1] tanh_c,               # (H,) scratch
    real[:, :, ::1] new_h,          # (L, B, H) out
    real[:, :, ::1] new_c,          # (L, B, H) out
):
    """The reference's layers in C: per layer one gemm, then the fused cell of each row
    (the cell adds its two inputs: layer 0's gates0 + h W_hh0ᵀ, a later layer's bias +
    [x, h] [W_ih | W_hh]ᵀ). Needs B ≥ 1 and H ≥ 1."""
    cdef Py_ssize_t layers = h.shape[0], batch = h.shape[1], hidden = h.shape[2], k, b, j
    with nogil:
        _gemm(False, True, batch, 4 * hidden, hidden, &h[0, 0, 0], hidden, &w_hh0[0, 0], hidden, &product[0, 0],
              4 * hidden)
        for b in range(batch):
            _cell_forward_row(&gates0[b, 0], &product[b, 0], &c[0, b, 0], &activations[0], &new_c[0, b, 0],
                              &tanh_c[0], &new_h[0, b, 0], hidden)
        for k in range(1, layers):
            for b in range(batch):
                for j in range(hidden):
                    x_and_h[b, j] = new_h[k - 1, b, j]
                    x_and_h[b, hidden + j] = h[k, b, j]
            _gemm(False, True, batch, 4 * hidden, 2 * hidden, &x_and_h[0, 0], 2 * hidden, &stacked[k - 1, 0, 0],
                  2 * hidden, &product[0, 0], 4 * hidden)
            for b in range(batch):
                _cell_forward_row(&biases[k - 1, 0], &product[b, 0], &c[k, b, 0], &activations[0],
                                  &new_c[k, b, 0], &tanh_c[0], &new_h[k, b, 0], hidden)


def lstm_stack_step(gates0, h, c, w_hh0, stacked, biases, w_hh0_scale=None, stacked_scale=None, fc_weight=None,
                    fc_scale=None, fc_bias=None):
    """As ``tinylm.reference.lstm.lstm_stack_step``: one step of L layers -> (new_h, new_c),
    in one call and one pass through C. At batch 1 (sampling) the step is a few
    matrix-vector products, and a dozen NumPy calls around them cost as much again; here
    the gates, cells and state copies of every layer run without Python in between.
    Where NumPy's BLAS is not found (see ``blas.py``), the reference serves.

    Int8 weights: with ``w_hh0_scale`` (4H,) and ``stacked_scale`` (L-1, 2, 4H), float32,
    given together, ``w_hh0`` and ``stacked`` are int8 and the products are int8
    matrix-vector products (``_int8_step``); float32 only (float64 state: the reference
    serves, after the same checks). With the output layer too, ``fc_weight`` (V, H) int8,
    ``fc_scale`` (V,) and ``fc_bias`` (V,) or None, it returns (new_h, new_c, logits),
    the logits computed in the same OpenMP region as the layers."""
    if (w_hh0_scale is not None or stacked_scale is not None or fc_weight is not None or fc_scale is not None
            or fc_bias is not None):
        result = _int8_step(gates0, h, c, w_hh0, stacked, biases, w_hh0_scale, stacked_scale, fc_weight, fc_scale,
                            fc_bias)
        if result is None:
            result = _lstm_stack_step_int8(gates0, h, c, w_hh0, stacked, biases, w_hh0_scale, stacked_scale,
                                           fc_weight, fc_scale, fc_bias)
        return result
    dtype = float_dtype("lstm_stack_step", "gates0", np.asarray(gates0))
    gates0, h, c, w_hh0, stacked, biases = contiguous_arrays(
        "lstm_stack_step", np, dtype, gates0=gates0, h=h, c=c, w_hh0=w_hh0, stacked=stacked, biases=biases)
    layers, batch, hidden = _check_stack_shapes(gates0, h, c, w_hh0, stacked, biases)
    small = dtype == np.float32 and 1 <= batch <= SMALL_BATCH and hidden >= 1  # no BLAS needed
    if not (small or (batch and hidden and _blas_ready(4 * hidden * max(batch, 2 * hidden)))):
        from tinylm.reference.lstm import lstm_stack_step as reference

        return reference(gates0, h, c, w_hh0, stacked, biases)
    new_h, new_c = np.empty_like(h), np.empty_like(c)
    product = np.empty((batch, 4 * hidden), dtype)
    if small:
        activations, tanh_c = np.empty((batch, 4 * hidden), dtype), np.empty((batch, hidden), dtype)
        _stack_step_small_batch(gates0, h, c, w_hh0, stacked, biases, product, activations, tanh_c, new_h, new_c,
                                threads_for_weights(4 * hidden * hidden))
        return new_h, new_c
    x_and_h = np.empty((batch, 2 * hidden), dtype)
    activations, tanh_c = np.empty(4 * hidden, dtype), np.empty(hidden, dtype)
    _stack_step(gates0, h, c, w_hh0, stacked, biases, product, x_and_h, activations, tanh_c, new_h, new_c)
    return new_h, new_c


# Up to this batch a float32 step reads each weight row once per batch row (matrix-vector
# products on the kernels' team, ``tinylm_lstm_stack_step``); above it, one gemm a layer.
SMALL_BATCH = 4


@cython.boundscheck(False)
@cython.wraparound(False)
def _stack_step_small_batch(
    const float[:, ::1] gates0,      # (B, 4H)
    const float[:, :, ::1] h,        # (L, B, H)
    const float[:, :, ::1] c,        # (L, B, H)
    const float[:, ::1] w_hh0,       # (4H, H)
    const float[:, :, ::1] stacked,  # (L-1, 4H, 2H)
    const float[:, ::1] biases,      # (L-1, 4H)
    float[:, ::1] product,           # (B, 4H) scratch
    float[:, ::1] activations,       # (B, 4H) scratch
    float[:, ::1] tanh_c,            # (B, H) scratch
    float[:, :, ::1] new_h,          # (L, B, H) out
    float[:, :, ::1] new_c,          # (L, B, H) out
    int threads,
):
    """``_stack_step`` at batch 1 (to ``SMALL_BATCH``), float32: ``tinylm_lstm_stack_step``, every
    layer in one OpenMP region, each thread the gate rows and cells of its own hidden units
    (the float32 twin of ``_stack_step_int8``). Needs B ≥ 1 and H ≥ 1; L - 1 may be 0."""
    cdef Py_ssize_t layers = h.shape[0], batch = h.shape[1], hidden = h.shape[2]
    cdef const float* stacked_data = &stacked[0, 0, 0] if layers > 1 else NULL
    cdef const float* biases_data = &biases[0, 0] if layers > 1 else NULL
    with nogil:
        tinylm_lstm_stack_step(&gates0[0, 0], &h[0, 0, 0], &c[0, 0, 0], &w_hh0[0, 0], stacked_data, biases_data,
                               &new_h[0, 0, 0], &new_c[0, 0, 0], &product[0, 0], &activations[0, 0],
                               &tanh_c[0, 0], layers, batch, hidden, threads)


def _check_stack_shapes(gates0, h, c, w_hh0, stacked, biases):
    """(L, B, H) from h; a ValueError naming the first array whose shape does not fit them."""
    if h.ndim != 3 or c.shape != h.shape or h.shape[0] < 1:
        raise ValueError(f"lstm_stack_step: h {h.shape} and c {c.shape} must both be (L, B, H) with L >= 1")
    layers, batch, hidden = h.shape
    expected = dict(gates0=(batch, 4 * hidden), w_hh0=(4 * hidden, hidden),
                    stacked=(layers - 1, 4 * hidden, 2 * hidden), biases=(layers - 1, 4 * hidden))
    for key, value in (("gates0", gates0), ("w_hh0", w_hh0), ("stacked", stacked), ("biases", biases)):
        if value.shape != expected[key]:
            raise ValueError(f"lstm_stack_step: {key} {value.shape} must be {expected[key]} for h (L, B, H) = {h.shape}")
    return layers, batch, hidden


def _lstm_stack_step_int8(gates0, h, c, w_hh0, stacked, biases, w_hh0_scale, stacked_scale, fc_weight, fc_scale,
                          fc_bias):
    """``lstm_stack_step`` with int8 weights, for arguments ``_int8_step`` did not take as
    they are: the float arrays checked as in the float path, the int8 ones and their
    scales as ``int8_matmul`` checks its own, each made C-contiguous; then ``_int8_step``
    (float32) or the reference (float64, or an empty batch or state)."""
    op = "lstm_stack_step"
    if w_hh0_scale is None or stacked_scale is None:
        if fc_weight is not None or fc_scale is not None or fc_bias is not None:
            raise ValueError(f"{op}: the output layer (fc_weight, fc_scale, fc_bias) needs int8 weights: "
                             "w_hh0_scale and stacked_scale")
        raise ValueError(f"{op}: int8 weights need both w_hh0_scale and stacked_scale (the other is None)")
    if (fc_weight is None) != (fc_scale is None) or (fc_bias is not None and fc_weight is None):
        raise ValueError(f"{op}: the output layer needs fc_weight and fc_scale together (fc_bias optional)")
    dtype = float_dtype(op, "gates0", np.asarray(gates0))
    gates0, h, c, biases = contiguous_arrays(op, np, dtype, gates0=gates0, h=h, c=c, biases=biases)
    w_hh0, stacked = np.asarray(w_hh0), np.asarray(stacked)
    layers, batch, hidden = _check_stack_shapes(gates0, h, c, w_hh0, stacked, biases)
    w_hh0 = check_int8_weight(op, "w_hh0", w_hh0, (4 * hidden, hidden))
    stacked = check_int8_weight(op, "stacked", stacked, (layers - 1, 4 * hidden, 2 * hidden))
    w_hh0_scale = check_scale(op, "w_hh0_scale", w_hh0_scale, (4 * hidden,))
    stacked_scale = check_scale(op, "stacked_scale", stacked_scale, (layers - 1, 2, 4 * hidden))
    if fc_weight is not None:
        fc_weight = np.asarray(fc_weight)
        if fc_weight.ndim != 2 or fc_weight.shape[1] != hidden:
            raise ValueError(f"{op}: fc_weight {fc_weight.shape} must be (V, H) with H = {hidden} from h {h.shape}")
        vocab = fc_weight.shape[0]
        fc_weight = check_int8_weight(op, "fc_weight", fc_weight, (vocab, hidden))
        fc_scale = check_scale(op, "fc_scale", fc_scale, (vocab,))
        if fc_bias is not None:
            fc_bias = check_scale(op, "fc_bias", fc_bias, (vocab,))
    if dtype != np.float32 or not (batch and hidden):
        from tinylm.reference.lstm import lstm_stack_step as reference

        return reference(gates0, h, c, w_hh0, stacked, biases, w_hh0_scale, stacked_scale, fc_weight, fc_scale,
                         fc_bias)
    result = _int8_step(gates0, h, c, w_hh0, stacked, biases, w_hh0_scale, stacked_scale, fc_weight, fc_scale,
                        fc_bias)
    if result is None:  # C-contiguous but not aligned (a view into a byte buffer): aligned copies
        gates0, h, c, w_hh0, stacked, biases, w_hh0_scale, stacked_scale, fc_weight, fc_scale, fc_bias = (
            None if a is None else np.array(a, copy=True)
            for a in (gates0, h, c, w_hh0, stacked, biases, w_hh0_scale, stacked_scale, fc_weight, fc_scale, fc_bias))
        result = _int8_step(gates0, h, c, w_hh0, stacked, biases, w_hh0_scale, stacked_scale, fc_weight, fc_scale,
                            fc_bias)
    return result


# The flags an input of the C code needs: its elements one after another, C order, each
# at an address of its type's alignment.
cdef int _READABLE = cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED


cdef inline bint _as_c_reads(object array, int typenum, int ndim, Py_ssize_t d0, Py_ssize_t d1,
                             Py_ssize_t d2) noexcept:
    """Whether ``array`` is a NumPy array the C code can read as it is: ``typenum`` in the
    machine's byte order, C-contiguous, aligned, of shape (d0, d1, d2)[:ndim]."""
    if not cnp.PyArray_Check(array):
        return False
    cdef cnp.ndarray a = <cnp.ndarray>array
    if (cnp.PyArray_TYPE(a) != typenum or cnp.PyArray_NDIM(a) != ndim or not cnp.PyArray_ISNOTSWAPPED(a)
            or (cnp.PyArray_FLAGS(a) & _READABLE) != _READABLE):
        return False
    cdef cnp.npy_intp* dims = cnp.PyArray_DIMS(a)
    return dims[0] == d0 and (ndim < 2 or dims[1] == d1) and (ndim < 3 or dims[2] == d2)


cdef object _int8_step(object gates0, object h, object c, object w_hh0, object stacked, object biases,
                       object w_hh0_scale, object stacked_scale, object fc_weight, object fc_scale, object fc_bias):
    """The int8 step through ``tinylm_int8_lstm_stack_step`` (``tinylm_int8.h``): every layer
    in one OpenMP region, each thread the gate rows and cells of its own hidden units (a
    later layer's s_ih · (W_ih x) + s_hh · (W_hh h) read from the two halves of its
    stacked rows in place, so [x, h] is never copied), then its block of the logits.

    The arguments are checked here, in C, each array's type, byte order, contiguity,
    alignment and every dimension, and the kernel reads them where they are; this is
    what a sampler's every step passes, and the checks cost well under a microsecond
    (``_lstm_stack_step_int8``'s, in Python, cost about 6 µs of a 40 µs step). None when
    any argument is not exactly what the C code reads (another dtype, a view, a wrong
    shape, an empty batch): ``_lstm_stack_step_int8`` then converts or refuses it with
    an error naming the argument."""
    if not cnp.PyArray_Check(h) or cnp.PyArray_NDIM(<cnp.ndarray>h) != 3:
        return None
    cdef cnp.npy_intp* dims = cnp.PyArray_DIMS(<cnp.ndarray>h)
    cdef Py_ssize_t layers = dims[0], batch = dims[1], hidden = dims[2], vocab = 0
    if layers < 1 or batch < 1 or hidden < 1:
        return None
    cdef int f32 = cnp.NPY_FLOAT32, i8 = cnp.NPY_INT8
    if not (_as_c_reads(h, f32, 3, layers, batch, hidden) and _as_c_reads(c, f32, 3, layers, batch, hidden)
            and _as_c_reads(gates0, f32, 2, batch, 4 * hidden, 0)
            and _as_c_reads(w_hh0, i8, 2, 4 * hidden, hidden, 0)
            and _as_c_reads(stacked, i8, 3, layers - 1, 4 * hidden, 2 * hidden)
            and _as_c_reads(biases, f32, 2, layers - 1, 4 * hidden, 0)
            and _as_c_reads(w_hh0_scale, f32, 1, 4 * hidden, 0, 0)
            and _as_c_reads(stacked_scale, f32, 3, layers - 1, 2, 4 * hidden)):
        return None
    cdef const int8_t* fc = NULL
    cdef const float* fc_scale_data = NULL
    cdef const float* fc_bias_data = NULL
    cdef float* logits_data = NULL
    if fc_weight is not None or fc_scale is not None or fc_bias is not None:
        if not (cnp.PyArray_Check(fc_weight) and cnp.PyArray_NDIM(<cnp.ndarray>fc_weight) == 2):
            return None
        vocab = cnp.PyArray_DIMS(<cnp.ndarray>fc_weight)[0]
        if not (_as_c_reads(fc_weight, i8, 2, vocab, hidden, 0) and _as_c_reads(fc_scale, f32, 1, vocab, 0, 0)
                and (fc_bias is None or _as_c_reads(fc_bias, f32, 1, vocab, 0, 0))):
            return None
        fc = <const int8_t*>cnp.PyArray_DATA(<cnp.ndarray>fc_weight)
        fc_scale_data = <const float*>cnp.PyArray_DATA(<cnp.ndarray>fc_scale)
        if fc_bias is not None:
            fc_bias_data = <const float*>cnp.PyArray_DATA(<cnp.ndarray>fc_bias)
    cdef cnp.npy_intp shape[3]
    shape[0], shape[1], shape[2] = layers, batch, hidden
    cdef cnp.ndarray new_h = cnp.PyArray_EMPTY(3, shape, f32, 0)
    cdef cnp.ndarray new_c = cnp.PyArray_EMPTY(3, shape, f32, 0)
    shape[0], shape[1] = batch, 4 * hidden
    cdef cnp.ndarray pre = cnp.PyArray_EMPTY(2, shape, f32, 0)  # scratch: the gates' pre-activations
    shape[1] = vocab
    cdef cnp.ndarray logits = cnp.PyArray_EMPTY(2, shape, f32, 0) if fc != NULL else None
    if fc != NULL:
        logits_data = <float*>cnp.PyArray_DATA(logits)
    cdef int threads = threads_for_weights(4 * hidden * hidden)
    with nogil:
        tinylm_int8_lstm_stack_step(
            <const float*>cnp.PyArray_DATA(<cnp.ndarray>gates0), <const float*>cnp.PyArray_DATA(<cnp.ndarray>h),
            <const float*>cnp.PyArray_DATA(<cnp.ndarray>c), <const int8_t*>cnp.PyArray_DATA(<cnp.ndarray>w_hh0),
            <const float*>cnp.PyArray_DATA(<cnp.ndarray>w_hh0_scale),
            <const int8_t*>cnp.PyArray_DATA(<cnp.ndarray>stacked),
            <const float*>cnp.PyArray_DATA(<cnp.ndarray>stacked_scale),
            <const float*>cnp.PyArray_DATA(<cnp.ndarray>biases), <float*>cnp.PyArray_DATA(new_h),
            <float*>cnp.PyArray_DATA(new_c), <float*>cnp.PyArray_DATA(pre), fc, fc_scale_data, fc_bias_data,
            logits_data, vocab, layers, batch, hidden, threads)
    if fc == NULL:
        return new_h, new_c
    return new_h, new_c, logits
