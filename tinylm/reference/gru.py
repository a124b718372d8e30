"""GRU kernels, reference versions: one cell step, and a whole layer over time.

Gates are in PyTorch's order (r, z, n). Shapes: T time steps, B batch, H hidden.
As for the LSTM (``tinylm/reference/lstm.py``), the input projections of all steps come
in precomputed, x_t Wᵢₕᵀ + bᵢₕ, from one large matrix product outside; the recurrent
part h Wₕₕᵀ + bₕₕ is computed here, bias included, because PyTorch's candidate gate
multiplies it by r before adding it (so bₕₙ cannot be folded into the projection).
"""

from __future__ import annotations

from tinylm.backends import get_array_module


def _sigmoid(xp, x):
    return 0.5 * (1 + xp.tanh(0.5 * x))  # = 1 / (1 + e^-x), without overflow


def gru_cell_forward(x_gates, h_gates, h_prev):
    """x_gates (B, 3H) = x Wᵢₕᵀ + bᵢₕ, h_gates (B, 3H) = h_prev Wₕₕᵀ + bₕₕ, h_prev (B, H)
    -> h (B, H), activations (B, 3H) in r, z, n order.

        r = σ(x_r + h_r)                 reset gate
        z = σ(x_z + h_z)                 update gate
        n = tanh(x_n + r ⊙ h_n)          candidate, h_n = Wₕₙ h_prev + bₕₙ
        h = (1 - z) ⊙ n + z ⊙ h_prev
    """
    xp = get_array_module(x_gates)
    hidden = h_prev.shape[1]
    activations = _sigmoid(xp, x_gates + h_gates)  # r and z right; n overwritten below
    r, z = activations[:, :hidden], activations[:, hidden : 2 * hidden]
    n = xp.tanh(x_gates[:, 2 * hidden :] + r * h_gates[:, 2 * hidden :])
    activations[:, 2 * hidden :] = n
    return n + z * (h_prev - n), activations


def gru_cell_backward(dh_out, dh_next, h_prev, activations, h_n):
    """Gradients of one step -> (dL/dx_gates, dL/dh_gates, the direct part of dL/dh_prev),
    from dh_out (B, H) (the layer's output at this step) and dh_next (B, H) (sent back by
    the next step); dh = dh_out + dh_next. h_n (B, H) is Wₕₙ h_prev + bₕₙ.

    Through h = (1 - z) ⊙ n + z ⊙ h_prev:

        dn = dh ⊙ (1 - z);   dz = dh ⊙ (h_prev - n);   dh_prev (direct) = dh ⊙ z

    through the nonlinearities (σ' = σ(1 - σ), tanh' = 1 - tanh²) and n's r ⊙ h_n:

        dn̂ = dn ⊙ (1 - n²);   dr̂ = dn̂ ⊙ h_n ⊙ r(1 - r);   dẑ = dz ⊙ z(1 - z)
        dx_gates = [dr̂, dẑ, dn̂]           dh_gates = [dr̂, dẑ, dn̂ ⊙ r]

    The caller adds dh_gates Wₕₕ to the direct part to get all of dL/dh_prev.
    """
    hidden = h_prev.shape[1]
    dh = dh_out + dh_next
    r, z, n = (activations[:, k * hidden : (k + 1) * hidden] for k in range(3))
    d_n_pre = dh * (1 - z) * (1 - n * n)
    d_x_gates = activations.copy()  # (B, 3H), filled gate by gate below
    d_x_gates[:, :hidden] = d_n_pre * h_n * r * (1 - r)
    d_x_gates[:, hidden : 2 * hidden] = dh * (h_prev - n) * z * (1 - z)
    d_x_gates[:, 2 * hidden :] = d_n_pre
    d_h_gates = d_x_gates.copy()
    d_h_gates[:, 2 * hidden :] *= r
    return d_x_gates, d_h_gates, dh * z


def check_layer_shapes(op: str, x_proj, w_hh, b_hh, h0) -> None:
    """x_proj (T, B, 3H) with T ≥ 1, w_hh (3H, H), b_hh (3H,), h0 (B, H), or a ValueError
    naming ``op``."""
    if x_proj.ndim != 3 or w_hh.ndim != 2 or x_proj.shape[2] != w_hh.shape[0] or w_hh.shape[0] != 3 * w_hh.shape[1]:
        raise ValueError(f"{op}: x_proj {x_proj.shape} must be (T, B, 3H) and w_hh {w_hh.shape} (3H, H)")
    if b_hh.shape != (w_hh.shape[0],):
        raise ValueError(f"{op}: b_hh {b_hh.shape} must be (3H,) = ({w_hh.shape[0]},)")
    expected = (x_proj.shape[1], w_hh.shape[1])
    if h0.shape != expected:
        raise ValueError(f"{op}: h0 {h0.shape} must be (B, H) = {expected}")
    if x_proj.shape[0] == 0:
        raise ValueError(f"{op}: the sequence is empty (T = 0)")


def gru_layer_forward(x_proj, w_hh, b_hh, h0, keep_saved: bool = True):
    """Run one layer over all steps.

    x_proj (T, B, 3H): x_t Wᵢₕᵀ + bᵢₕ for every t; w_hh (3H, H); b_hh (3H,); h0 (B, H).
    Returns hs (T, B, H) (h at every step) and ``saved`` for the backward (None with
    ``keep_saved=False``).
    """
    xp = get_array_module(x_proj)
    steps, batch = x_proj.shape[0], x_proj.shape[1]
    hidden = w_hh.shape[1]
    hs = xp.empty((steps, batch, hidden), dtype=x_proj.dtype)
    activations = xp.empty_like(x_proj)  # (T, B, 3H): r, z, n at every step
    h_ns = xp.empty((steps, batch, hidden), dtype=x_proj.dtype)  # Wₕₙ h_{t-1} + bₕₙ
    h = h0
    for t in range(steps):
        h_gates = h @ w_hh.T + b_hh  # (B, 3H)
        h, activations[t] = gru_cell_forward(x_proj[t], h_gates, h)
        hs[t], h_ns[t] = h, h_gates[:, 2 * hidden :]
    return hs, (hs, activations, h_ns) if keep_saved else None


def gru_layer_backward(d_hs, d_h_n, w_hh, b_hh, h0, saved):
    """Backpropagation through time for ``gru_layer_forward``.

    d_hs (T, B, H): dL/dh_t from above; d_h_n (B, H): from the final state. Walking
    t = T-1 .. 0, the gradient reaching h_{t-1} is its direct part dh ⊙ z plus
    dh_gates_t Wₕₕ (through h_gates = h Wₕₕᵀ + bₕₕ), plus d_hs[t-1] from above.
    Returns (d_x_proj (T, B, 3H), d_w_hh (3H, H), d_b_hh (3H,), d_h0 (B, H)).
    """
    xp = get_array_module(d_hs)
    hs, activations, h_ns = saved
    steps = d_hs.shape[0]
    d_x_proj = xp.empty_like(activations)  # (T, B, 3H)
    d_h_gates = xp.empty_like(activations)  # (T, B, 3H)
    dh_next = d_h_n
    for t in range(steps - 1, -1, -1):
        h_prev = hs[t - 1] if t > 0 else h0
        d_x_proj[t], d_h_gates[t], direct = gru_cell_backward(d_hs[t], dh_next, h_prev, activations[t], h_ns[t])
        dh_next = direct + d_h_gates[t] @ w_hh  # (B, H)
    h_prev = xp.concatenate([h0[None], hs[:-1]], axis=0)  # (T, B, H): the h each step read
    three_h, hidden = w_hh.shape
    # dWₕₕ = Σ_t dh_gates_tᵀ h_{t-1}: all steps in one product, (3H, T·B) @ (T·B, H).
    d_w_hh = d_h_gates.reshape(-1, three_h).T @ h_prev.reshape(-1, hidden)
    return d_x_proj, d_w_hh, d_h_gates.reshape(-1, three_h).sum(axis=0), dh_next
