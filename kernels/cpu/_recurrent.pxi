# Shared by the recurrent kernels (``include "_recurrent.pxi"`` after ``_math.pxi``): the
# loop over time of ``tinylm_recurrent.h`` (the LSTM, the GRU and the Elman RNN run it, each
# with its own cell), where it serves, on how many threads, and its packed operands.

import numpy as np

cdef extern from "tinylm_recurrent.h" nogil:
    int TINYLM_GEMM_MR
    Py_ssize_t tinylm_gemm_packed_size(Py_ssize_t k, Py_ssize_t n)
    Py_ssize_t tinylm_recurrent_packed_rows(Py_ssize_t m, Py_ssize_t k)
    void tinylm_gemm_pack_a(Py_ssize_t mc, Py_ssize_t kc, const float* a, Py_ssize_t rsa, Py_ssize_t csa,
                            float* packed)
    void tinylm_recurrent_pack_forward(Py_ssize_t gates, Py_ssize_t hidden, Py_ssize_t k, const float* w,
                                       float* packed)
    void tinylm_recurrent_pack_backward(Py_ssize_t gates, Py_ssize_t hidden, const float* w_hh, float* packed)


def _packed_loop_serves(dtype, steps, batch, hidden):
    """True where ``tinylm_recurrent.h``'s loop runs: float32, at least two steps (W_hh is
    packed once per call, which one step does not repay) and a batch of at least half the
    micro-kernel's MR rows (below that most of each register tile would be padding, and
    OpenBLAS's matrix-vector product is faster)."""
    return dtype == np.float32 and steps >= 2 and hidden >= 1 and 2 * batch >= TINYLM_GEMM_MR


def _loop_threads(batch, hidden, gates):
    """The OpenMP team for one layer's loop: every thread the kernels have, but no more
    than have work (the loop splits by MR-panels of rows when they share out evenly over
    the team, else by NR-panels of units), and one per MIN_WORK_PER_THREAD multiply-adds of
    a step's product (waking a thread costs about that much)."""
    from tinylm.kernels.cpu.gemm import MIN_WORK_PER_THREAD, kernel_info

    info = kernel_info()
    row_panels, unit_panels = -(-batch // info["mr"]), -(-hidden // info["nr"])
    threads = int(max(1, min(tinylm_get_num_threads(), batch * hidden * gates * hidden // MIN_WORK_PER_THREAD)))
    return threads if row_panels % threads == 0 else max(1, min(threads, unit_panels))


def _packed_forward_operands(const float[:, ::1] w, Py_ssize_t gates, const float[:, ::1] first):
    """Wᵀ (G gate blocks of w (G·H, K)) packed for the forward's products, and the two
    packed buffers of the left operand (B, K) that alternate over the steps, the first
    holding ``first`` (h0, or x_0 for an input projection made in the loop; rows past B
    stay zero)."""
    cdef Py_ssize_t k = w.shape[1], hidden = w.shape[0] // gates, batch = first.shape[0]
    packed_w = np.empty(gates * tinylm_gemm_packed_size(k, hidden), np.float32)
    packed_a = np.zeros((2, tinylm_recurrent_packed_rows(batch, k)), np.float32)
    cdef float[::1] w_view = packed_w
    cdef float[:, ::1] a_view = packed_a
    with nogil:
        tinylm_recurrent_pack_forward(gates, hidden, k, &w[0, 0], &w_view[0])
        tinylm_gemm_pack_a(batch, k, &first[0, 0], k, 1, &a_view[0, 0])
    return packed_w, packed_a


def _packed_backward_operands(const float[:, ::1] w_hh, Py_ssize_t gates, Py_ssize_t batch):
    """W_hh packed for the backward's products (k = G·H), and the two zeroed packed
    buffers of a step's gate gradients that alternate over the steps."""
    cdef Py_ssize_t hidden = w_hh.shape[1]
    packed_w = np.empty(tinylm_gemm_packed_size(gates * hidden, hidden), np.float32)
    packed_dg = np.zeros((2, tinylm_recurrent_packed_rows(batch, gates * hidden)), np.float32)
    cdef float[::1] w_view = packed_w
    with nogil:
        tinylm_recurrent_pack_backward(gates, hidden, &w_hh[0, 0], &w_view[0])
    return packed_w, packed_dg
