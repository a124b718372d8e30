"""LSTM kernels, reference versions: one cell step, and a whole layer over time.

Gates are in PyTorch's order (i, f, g, o). Shapes: T time steps, B batch, H hidden.
The layer kernels loop over time in Python, calling the cell kernels; the input
projections of all steps come in precomputed (one large matrix product outside), and
the weight gradient of the recurrent matrix leaves as one product over all steps.
"""

from __future__ import annotations

from tinylm.backends import get_array_module
from tinylm.reference.int8_matmul import int8_matmul


def _sigmoid(xp, x):
    return 0.5 * (1 + xp.tanh(0.5 * x))  # = 1 / (1 + e^-x), without overflow


def lstm_cell_forward(gates, c_prev):
    """gates (B, 4H) pre-activations, c_prev (B, H) -> h (B, H), c (B, H), saved.

        i, f, o = σ(gᵢ), σ(g_f), σ(gₒ);  g = tanh(g_g)
        c = f ⊙ c_prev + i ⊙ g;          h = o ⊙ tanh(c)

    ``saved`` = (activations (B, 4H) in i, f, g, o order, tanh(c)) for the backward.
    """
    xp = get_array_module(gates)
    hidden = gates.shape[1] // 4
    activations = _sigmoid(xp, gates)
    activations[:, 2 * hidden : 3 * hidden] = xp.tanh(gates[:, 2 * hidden : 3 * hidden])  # g uses tanh
    i, f, g, o = (activations[:, k * hidden : (k + 1) * hidden] for k in range(4))
    c = f * c_prev + i * g
    tanh_c = xp.tanh(c)
    return o * tanh_c, c, (activations, tanh_c)


def lstm_cell_backward(dh_out, dh_next, dc, c_prev, saved):
    """Gradients of one step -> (dL/dgates, dL/dc_prev), from what reaches h and c:
    dh_out (B, H) from the layer's output at this step, dh_next (B, H) sent back by the
    next step through h Wₕₕᵀ, and dc (B, H) from the next step's cell. h feeds both, so
    dh = dh_out + dh_next.

    By the chain rule through h = o ⊙ tanh(c) and c = f ⊙ c_prev + i ⊙ g:

        do = dh ⊙ tanh(c);        dc_total = dc + dh ⊙ o ⊙ (1 - tanh²(c))
        di = dc_total ⊙ g;  df = dc_total ⊙ c_prev;  dg = dc_total ⊙ i
        dc_prev = dc_total ⊙ f

    and through the nonlinearities, σ' = σ(1 - σ) and tanh' = 1 - tanh²:

        dgates = [di ⊙ i(1-i), df ⊙ f(1-f), dg ⊙ (1-g²), do ⊙ o(1-o)]
    """
    activations, tanh_c = saved
    hidden = tanh_c.shape[1]
    dh = dh_out + dh_next
    i, f, g, o = (activations[:, k * hidden : (k + 1) * hidden] for k in range(4))
    dc_total = dc + dh * o * (1 - tanh_c * tanh_c)
    d_activations = activations.copy()  # (B, 4H), filled gate by gate below
    d_activations[:, :hidden] = dc_total * g * i * (1 - i)
    d_activations[:, hidden : 2 * hidden] = dc_total * c_prev * f * (1 - f)
    d_activations[:, 2 * hidden : 3 * hidden] = dc_total * i * (1 - g * g)
    d_activations[:, 3 * hidden :] = dh * tanh_c * o * (1 - o)
    return d_activations, dc_total * f


def check_layer_shapes(op: str, x_proj, w_hh, h0, c0) -> None:
    """x_proj (T, B, 4H) with T ≥ 1, w_hh (4H, H), h0 and c0 (B, H), or a ValueError naming
    ``op``: checked once by the op and by each fast kernel's wrapper, whose loops index by
    these sizes."""
    if x_proj.ndim != 3 or w_hh.ndim != 2 or x_proj.shape[2] != w_hh.shape[0] or w_hh.shape[0] != 4 * w_hh.shape[1]:
        raise ValueError(f"{op}: x_proj {x_proj.shape} must be (T, B, 4H) and w_hh {w_hh.shape} (4H, H)")
    expected = (x_proj.shape[1], w_hh.shape[1])
    if h0.shape != expected or c0.shape != expected:
        raise ValueError(f"{op}: h0 {h0.shape} and c0 {c0.shape} must be (B, H) = {expected}")
    if x_proj.shape[0] == 0:
        raise ValueError(f"{op}: the sequence is empty (T = 0)")


def lstm_layer_forward(x_proj, w_hh, h0, c0, keep_saved: bool = True):
    """Run one layer over all steps.

    x_proj (T, B, 4H): x_t Wᵢₕᵀ + bᵢₕ + bₕₕ for every t; w_hh (4H, H); h0, c0 (B, H).
    Returns hs (T, B, H) (h at every step), c_n (B, H), and ``saved`` for the backward,
    or None for it with ``keep_saved=False`` (no backward will run: a fast kernel then
    keeps one step's gates and cell instead of all T).
    """
    xp = get_array_module(x_proj)
    steps, batch = x_proj.shape[0], x_proj.shape[1]
    hidden = w_hh.shape[1]
    hs = xp.empty((steps, batch, hidden), dtype=x_proj.dtype)
    cs = xp.empty((steps, batch, hidden), dtype=x_proj.dtype)
    activations = xp.empty_like(x_proj)
    tanh_cs = xp.empty((steps, batch, hidden), dtype=x_proj.dtype)
    h, c = h0, c0
    w_hh_t = w_hh.T  # (H, 4H)
    for t in range(steps):
        h, c, (activations[t], tanh_cs[t]) = lstm_cell_forward(x_proj[t] + h @ w_hh_t, c)
        hs[t], cs[t] = h, c
    return hs, c, (hs, cs, activations, tanh_cs) if keep_saved else None


def check_input_shapes(op: str, x, w_ih, bias, w_hh, h0, c0) -> None:
    """x (T, B, I) with T, I ≥ 1, w_ih (4H, I), bias (4H,), w_hh (4H, H), h0 and c0 (B, H),
    or a ValueError naming ``op``."""
    if x.ndim != 3 or w_ih.ndim != 2 or x.shape[2] != w_ih.shape[1] or x.shape[2] == 0:
        raise ValueError(f"{op}: x {x.shape} must be (T, B, I) with I ≥ 1 and w_ih {w_ih.shape} (4H, I)")
    if w_hh.ndim != 2 or w_ih.shape[0] != w_hh.shape[0] or w_hh.shape[0] != 4 * w_hh.shape[1] \
            or bias.shape != (w_ih.shape[0],):
        raise ValueError(f"{op}: w_ih {w_ih.shape}, bias {bias.shape} and w_hh {w_hh.shape} must be "
                         f"(4H, I), (4H,) and (4H, H)")
    expected = (x.shape[1], w_hh.shape[1])
    if h0.shape != expected or c0.shape != expected:
        raise ValueError(f"{op}: h0 {h0.shape} and c0 {c0.shape} must be (B, H) = {expected}")
    if x.shape[0] == 0:
        raise ValueError(f"{op}: the sequence is empty (T = 0)")


def lstm_layer_forward_from_input(x, w_ih, bias, w_hh, h0, c0, keep_saved: bool = True):
    """``lstm_layer_forward`` of x_proj = x Wᵢₕᵀ + bias (bias = bᵢₕ + bₕₕ), from the layer's
    input x (T, B, I): (hs, c_n, saved), ``saved`` as ``lstm_layer_forward``'s (x_proj is not
    in it: the backward's dL/dx_proj is dL/dgates). The fast kernels make the input
    projection inside their loop over time, so x_proj is never written."""
    check_input_shapes("lstm_layer_forward_from_input", x, w_ih, bias, w_hh, h0, c0)
    others = {"w_ih": w_ih, "bias": bias, "w_hh": w_hh, "h0": h0, "c0": c0}
    mismatched = {name: str(a.dtype) for name, a in others.items() if a.dtype != x.dtype}
    if mismatched:
        raise TypeError(f"lstm_layer_forward_from_input: x is {x.dtype} but {mismatched}; all must share one dtype")
    return lstm_layer_forward(x @ w_ih.T + bias, w_hh, h0, c0, keep_saved)


def lstm_layer_backward(d_hs, d_h_n, d_c_n, w_hh, h0, c0, saved):
    """Backpropagation through time for ``lstm_layer_forward``.

    d_hs (T, B, H): dL/dh_t from above (the layer's output); d_h_n, d_c_n (B, H): from
    the final state. Walking t = T-1 .. 0, the gradient reaching h_t is d_hs[t] plus
    what step t+1 sends back through h_t Wₕₕᵀ, namely dgates_{t+1} Wₕₕ.
    Returns (d_x_proj (T, B, 4H), d_w_hh (4H, H), d_h0, d_c0).
    """
    xp = get_array_module(d_hs)
    hs, cs, activations, tanh_cs = saved
    steps = d_hs.shape[0]
    d_gates = xp.empty_like(activations)  # (T, B, 4H)
    dh_next, dc_next = d_h_n, d_c_n
    for t in range(steps - 1, -1, -1):
        c_prev = cs[t - 1] if t > 0 else c0
        d_gates[t], dc_next = lstm_cell_backward(d_hs[t], dh_next, dc_next, c_prev, (activations[t], tanh_cs[t]))
        dh_next = d_gates[t] @ w_hh  # (B, H)
    h_prev = xp.concatenate([h0[None], hs[:-1]], axis=0)  # (T, B, H): the h each step read
    four_h, hidden = w_hh.shape
    # dWₕₕ = Σ_t dgates_tᵀ h_{t-1}: all steps in one product, (4H, T·B) @ (T·B, H).
    d_w_hh = d_gates.reshape(-1, four_h).T @ h_prev.reshape(-1, hidden)
    return d_gates, d_w_hh, dh_next, dc_next


def lstm_stack_step(gates0, h, c, w_hh0, stacked, biases, w_hh0_scale=None, stacked_scale=None, fc_weight=None,
                    fc_scale=None, fc_bias=None):
    """One time step of a stack of L layers, for generation (``LSTMStepper``).

    gates0 (B, 4H): layer 0's input part, x W_ih0ᵀ + b_ih0 + b_hh0 (a row of a lookup table
    when x is an embedding); h, c (L, B, H): the state after the previous step;
    w_hh0 (4H, H); stacked (L-1, 4H, 2H): [W_ih | W_hh] of each later layer side by side,
    so its gates are one product, [x, h] [W_ih | W_hh]ᵀ = x W_ihᵀ + h W_hhᵀ;
    biases (L-1, 4H): b_ih + b_hh of each later layer. Returns the new h, c (L, B, H);
    h[-1] is the stack's output.

    Int8 weights: w_hh0 and stacked int8 with their per-row scales, w_hh0_scale (4H,) and
    stacked_scale (L-1, 2, 4H): [k, 0] the scales of layer k+1's W_ih rows, [k, 1] those of
    its W_hh rows (the two matrices keep their own scales, so the stacked product is two
    ``int8_matmul`` sums, one per half of [x, h]).

    The output layer too, with int8 weights: ``fc_weight`` (V, H) int8, ``fc_scale`` (V,)
    and ``fc_bias`` (V,) or None; it then returns (new_h, new_c, logits), logits (B, V) =
    int8_matmul(new_h[-1], fc_weight, fc_scale) + fc_bias, what a sampler needs from a step
    (the Cython kernel computes them in the same OpenMP region as the layers).
    """
    if fc_weight is not None and w_hh0_scale is None:
        raise ValueError("lstm_stack_step: the output layer (fc_weight, fc_scale, fc_bias) needs int8 weights: "
                         "w_hh0_scale and stacked_scale")
    xp = get_array_module(gates0)
    new_h, new_c = xp.empty_like(h), xp.empty_like(c)
    hidden = h.shape[2]
    if w_hh0_scale is None:
        recurrent0 = h[0] @ w_hh0.T
    else:
        recurrent0 = int8_matmul(h[0], w_hh0, w_hh0_scale)
    new_h[0], new_c[0], _ = lstm_cell_forward(gates0 + recurrent0, c[0])
    for k in range(1, h.shape[0]):
        x_and_h = xp.concatenate([new_h[k - 1], h[k]], axis=1)  # (B, 2H): this layer's input, its own h
        if w_hh0_scale is None:
            gates = x_and_h @ stacked[k - 1].T
        else:
            gates = (int8_matmul(new_h[k - 1], stacked[k - 1, :, :hidden], stacked_scale[k - 1, 0])
                     + int8_matmul(h[k], stacked[k - 1, :, hidden:], stacked_scale[k - 1, 1]))
        new_h[k], new_c[k], _ = lstm_cell_forward(gates + biases[k - 1], c[k])
    if fc_weight is None:
        return new_h, new_c
    logits = int8_matmul(new_h[-1], fc_weight, fc_scale)  # (B, V)
    return new_h, new_c, logits + fc_bias if fc_bias is not None else logits
