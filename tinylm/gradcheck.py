"""``gradcheck``: compare an op's backward with finite differences.

For a function f of tensors, pick a fixed random weighting ``w`` of its output and
look at the scalar L = Σ w · f(x). Backward gives dL/dx for every input at once; the
central difference

    dL/dxᵢ ≈ (L(x + ε eᵢ) - L(x - ε eᵢ)) / 2ε      (error O(ε²))

gives it one element at a time. If the two agree for a random ``w``, the backward is
right for every ``w`` with probability one. Float64 keeps the rounding error of the
difference (about 1e-16 / ε) far below the tolerance.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from tinylm import ops
from tinylm.autograd import Tensor, no_grad
from tinylm.backends import get_array_module


class GradcheckError(AssertionError):
    """Raised when backward and finite differences disagree."""


def _flatten(out) -> list:
    """fn's result as a flat list of tensors: nested tuples (an LSTM's ``(y, (h, c))``)
    are unpacked and ``None`` dropped."""
    if out is None:
        return []
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in _flatten(item)]
    return [out]


def _outputs(fn, inputs) -> list:
    return _flatten(fn(*inputs))


def _ops_behind(outputs, most: int = 8) -> str:
    """The ops in the graph behind ``outputs``, output first (``"Softmax"`` or
    ``"Add, Tanh, MatMul"``), so that an error says which backwards were involved."""
    names, seen = [], set()
    pending = [y.creator for y in outputs if y.creator is not None]
    while pending:
        function = pending.pop(0)
        if id(function) in seen:
            continue
        seen.add(id(function))
        if type(function).__name__ not in names:
            names.append(type(function).__name__)
        pending.extend(x.creator for x in function.inputs or () if x.creator is not None)
    if len(names) > most:
        return ", ".join(names[:most]) + f", ... ({len(names)} ops in all)"
    return ", ".join(names) if names else "no op"


def gradcheck(
    fn: Callable,
    *inputs: Tensor,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    seed: int = 0,
) -> bool:
    """Check backward against central differences for every input that requires grad.

    ``fn`` takes the tensors and returns a tensor (or a tuple of tensors). Inputs that
    require grad must be float64. Returns True, or raises ``GradcheckError`` naming the
    input, the ops in fn's graph (output first: a wrong backward is among them), the
    largest error, where it is, and both values there.
    """
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad; pass tensors made with requires_grad=True")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} is {inputs[i].dtype}; finite differences need float64 inputs")

    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal(y.shape) for y in _outputs(fn, inputs)]

    def weighted_sum(outputs) -> float:
        return float(sum((y.numpy().astype(np.float64) * w).sum() for y, w in zip(outputs, weights)))

    # Analytic: backward from L, seeded output by output with its weights.
    for i in checked:
        inputs[i].zero_grad()
    outputs = _outputs(fn, inputs)
    ops_named = _ops_behind(outputs)  # now: backward frees the graph
    loss = None
    for y, w in zip(outputs, weights):
        if not y.requires_grad:
            continue
        term = ops.sum(ops.mul(y, Tensor(get_array_module(y.data).asarray(w, dtype=y.dtype))))
        loss = term if loss is None else ops.add(loss, term)
    if loss is None:
        raise ValueError("gradcheck: no output of fn depends on an input that requires grad")
    loss.backward()

    # Numeric: perturb one element at a time, in place, with the graph off.
    for i in checked:
        x = inputs[i]
        analytic = np.zeros(x.shape) if x.grad is None else x.grad.numpy().astype(np.float64)
        numeric = np.zeros(x.shape)
        given = x.data
        # Perturb a contiguous copy in the input's place (a reshape of a non-contiguous
        # array would be a copy, and writes to it would not reach fn).
        x.data = get_array_module(given).array(given, order="C")
        flat = x.data.reshape(-1)
        with no_grad():
            for k in range(flat.size):
                original = flat[k]
                flat[k] = original + eps
                plus = weighted_sum(_outputs(fn, inputs))
                flat[k] = original - eps
                minus = weighted_sum(_outputs(fn, inputs))
                flat[k] = original
                numeric.reshape(-1)[k] = (plus - minus) / (2 * eps)
        x.data = given
        error = np.abs(analytic - numeric)
        allowed = atol + rtol * np.abs(numeric)
        if error.size and np.any(~(error <= allowed)):
            where = np.unravel_index(int(np.nanargmax(np.where(np.isnan(error), np.inf, error - allowed))), x.shape)
            raise GradcheckError(
                f"gradcheck: input {i} of shape {x.shape} through {ops_named}: "
                "backward and finite differences disagree; "
                f"largest error {np.nanmax(error):.3g} at index {tuple(int(j) for j in where)}: "
                f"backward gives {analytic[where]:.6g}, finite differences give {numeric[where]:.6g} "
                f"(atol={atol}, rtol={rtol})"
            )
    return True
