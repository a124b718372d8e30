"""Elman RNN kernels, reference versions: a whole layer over time.

h_t = act(x_t Wᵢₕᵀ + bᵢₕ + h_{t-1} Wₕₕᵀ + bₕₕ) with act = tanh or relu (PyTorch's
``nonlinearity``). Shapes: T time steps, B batch, H hidden. As for the LSTM, the input
projections of all steps come in precomputed (one large matrix product outside, both
biases included), and the recurrent weight gradient leaves as one product.
"""

from __future__ import annotations

from tinylm.backends import get_array_module

NONLINEARITIES = ("tanh", "relu")


def check_layer_shapes(op: str, x_proj, w_hh, h0, nonlinearity: str) -> None:
    """x_proj (T, B, H) with T ≥ 1, w_hh (H, H), h0 (B, H), nonlinearity 'tanh' or 'relu',
    or a ValueError naming ``op``."""
    if x_proj.ndim != 3 or w_hh.ndim != 2 or x_proj.shape[2] != w_hh.shape[0] or w_hh.shape[0] != w_hh.shape[1]:
        raise ValueError(f"{op}: x_proj {x_proj.shape} must be (T, B, H) and w_hh {w_hh.shape} (H, H)")
    if h0.shape != x_proj.shape[1:]:
        raise ValueError(f"{op}: h0 {h0.shape} must be (B, H) = {x_proj.shape[1:]}")
    if x_proj.shape[0] == 0:
        raise ValueError(f"{op}: the sequence is empty (T = 0)")
    if not isinstance(nonlinearity, str) or nonlinearity not in NONLINEARITIES:
        raise ValueError(f"{op}: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")


def rnn_layer_forward(x_proj, w_hh, h0, nonlinearity: str = "tanh", keep_saved: bool = True):
    """Run one layer over all steps: h_t = act(x_proj[t] + h_{t-1} Wₕₕᵀ).

    x_proj (T, B, H): x_t Wᵢₕᵀ + bᵢₕ + bₕₕ for every t; w_hh (H, H); h0 (B, H).
    Returns hs (T, B, H) and ``saved`` for the backward (None with ``keep_saved=False``):
    the hs themselves, since both derivatives are functions of the output,
    tanh' = 1 - h² and relu' = [h > 0].
    """
    xp = get_array_module(x_proj)
    hs = xp.empty_like(x_proj)
    h = h0
    for t in range(x_proj.shape[0]):
        pre = x_proj[t] + h @ w_hh.T  # (B, H)
        h = xp.tanh(pre) if nonlinearity == "tanh" else xp.maximum(pre, 0)
        hs[t] = h
    return hs, (hs,) if keep_saved else None


def rnn_layer_backward(d_hs, d_h_n, w_hh, h0, saved, nonlinearity: str = "tanh"):
    """Backpropagation through time for ``rnn_layer_forward``.

    d_hs (T, B, H): dL/dh_t from above; d_h_n (B, H): from the final state. Walking
    t = T-1 .. 0 with dh = d_hs[t] + (what step t+1 sent back):

        d_pre_t = dh ⊙ act'(h_t)      (1 - h_t² for tanh, [h_t > 0] for relu)
        dh_{t-1} receives d_pre_t Wₕₕ;  dWₕₕ = Σ_t d_pre_tᵀ h_{t-1}

    Returns (d_x_proj (T, B, H), d_w_hh (H, H), d_h0 (B, H)).
    """
    xp = get_array_module(d_hs)
    (hs,) = saved
    d_pre = xp.empty_like(hs)  # (T, B, H)
    dh_next = d_h_n
    for t in range(hs.shape[0] - 1, -1, -1):
        dh = d_hs[t] + dh_next
        d_pre[t] = dh * (1 - hs[t] * hs[t]) if nonlinearity == "tanh" else dh * (hs[t] > 0)
        dh_next = d_pre[t] @ w_hh  # (B, H)
    h_prev = xp.concatenate([h0[None], hs[:-1]], axis=0)  # (T, B, H): the h each step read
    hidden = w_hh.shape[1]
    # All steps in one product, (H, T·B) @ (T·B, H).
    d_w_hh = d_pre.reshape(-1, hidden).T @ h_prev.reshape(-1, hidden)
    return d_pre, d_w_hh, dh_next
