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


def _close(a, b, atol: float, rtol: float):
    """Elementwise: does ``a`` agree with ``b`` within gradcheck's tolerance?"""
    return np.abs(a - b) <= atol + rtol * np.abs(b)


def _factor(c: float) -> str:
    """The size of a ratio as a reader would name it: ``4``, ``1/4``, ``0.37``."""
    for k in range(1, 1025):
        if abs(abs(c) - k) <= 1e-3 * k:
            return f"{k}"
        if abs(abs(c) * k - 1) <= 1e-3:
            return f"1/{k}"
    return f"{abs(c):.3g}"


def _size_named(k: int, shapes: dict) -> str:
    """``" (4 is the size of axis 1 of input 0)"`` when ``k`` is an axis or total size of
    an input (or, failing that, of an output): the N of a missing 1/N. Every axis of that
    size is named (``"axes 0 and 1 of input 0"``): the numbers cannot tell which one it is."""
    places = {"input": [], "output": []}
    for name, shape in shapes.items():
        axes = [str(axis) for axis, size in enumerate(shape) if size == k]
        if axes:
            which = f"axis {axes[0]}" if len(axes) == 1 else f"axes {', '.join(axes[:-1])} and {axes[-1]}"
            places[name.split()[0]].append(f"the size of {which} of {name}")
        elif len(shape) > 1 and int(np.prod(shape)) == k:
            places[name.split()[0]].append(f"the number of elements of {name}")
    named = places["input"] or places["output"]
    return f" ({k} is {' and '.join(named)})" if named else ""


def _constant_ratio_hint(c: float, count: int, shapes: dict) -> str:
    """backward = c × finite differences at every element: say what c suggests."""
    where = "everywhere" if count > 1 else "at its one element"
    factor = _factor(c)
    if factor == "1" and c < 0:
        return f"sign flipped: backward ≈ -1 × finite differences {where}"
    if factor == "1":
        return (f"backward ≈ finite differences {where}, just outside the tolerance: a small term missing, "
                "or rounding in fn (float32 inside?)")
    hint = f"backward ≈ {'-' if c < 0 else ''}{factor} × finite differences {where}: "
    if factor == "1/2":
        hint += "a factor 2 missing (the 2 of x²? a term used twice counted once?)"
    elif factor.startswith("1/"):
        hint += f"a factor {factor[2:]} missing (a 1/N applied twice? a sum taken as a mean?)"
    elif factor.isdigit():
        hint += f"a missing 1/{factor}{_size_named(int(factor), shapes)}? (a mean's 1/N, a scale)"
    else:
        hint += "a constant factor is wrong"
    return hint + (", and the sign flipped" if c < 0 else "")


def _hints(analytic, numeric, atol: float, rtol: float, shapes: dict) -> list:
    """What the pattern of a mismatch suggests: finite differences all below atol (fn flat
    at these inputs, or independent of this one), backward all zero, a constant ratio to the
    finite differences (a missing 1/N, a flipped sign), a transpose, zeros or sign flips
    at some elements only. ``shapes`` names the inputs' and outputs' shapes, to name an N."""
    a, n = analytic.reshape(-1), numeric.reshape(-1)
    if not np.all(np.isfinite(a)):
        return ["backward gives inf or nan: a division by zero or an overflow in it?"]
    wrong = ~_close(a, n, atol, rtol)
    biggest = float(np.abs(n).max()) if n.size else 0.0
    if biggest <= atol:
        return [f"finite differences are at most {biggest:.2g} here, below atol={atol:g}, but backward is not: "
                "fn is flat at these inputs (saturated? move the inputs to where fn has a slope) "
                "or does not depend on this input (a gradient sent to the wrong input?)"]
    if not a.any():
        return ["backward is zero everywhere: the gradient never reaches this input (returned None, or detached)?"]
    significant = np.abs(n) >= min(max(10 * atol, 1e-3 * biggest), biggest)  # where a ratio means something
    c = float(np.median(a[significant] / n[significant]))
    if np.all(_close(a, c * n, atol, rtol)):
        return [_constant_ratio_hint(c, a.size, shapes)]
    hints = []
    if analytic.ndim >= 2 and analytic.shape[-1] == analytic.shape[-2] > 1:
        if np.all(_close(analytic, np.swapaxes(numeric, -1, -2), atol, rtol)):
            hints.append("backward equals finite differences with the last two axes swapped: transposed?")
    zero_where_not = wrong & (a == 0) & significant
    if zero_where_not.any():
        hints.append(f"backward is zero where finite differences are not ({int(zero_where_not.sum())} of "
                     f"{a.size} elements): a dropped term, a mask too strict?")
    nonzero_where_zero = wrong & (np.abs(n) <= atol) & (a != 0)
    if nonzero_where_zero.any():
        hints.append(f"backward is not zero where finite differences are ({int(nonzero_where_zero.sum())} of "
                     f"{a.size} elements): a mask missing (relu's x > 0, a causal or padding mask)?")
    flipped = wrong & significant & _close(a, -n, atol, rtol)
    if flipped.any() and not (wrong & ~flipped).any():
        hints.append(f"sign flipped at the {int(flipped.sum())} wrong elements of {a.size}, right elsewhere: "
                     "a sign that depends on the input (abs, max, a branch)?")
    return hints


def _kink_hint(fn, inputs, x, flat_index: int, eps: float, weighted_sum, allowed: float):
    """At one element, compare the slope just left of x with the slope just right of it.
    A smooth fn has one slope (they differ by about eps·f''); a kink within eps of x
    (relu at 0, abs at 0, max at a tie) has two, and the central difference averages
    them, so no backward can match it there. Returns a hint, or None."""
    given = x.data
    x.data = get_array_module(given).array(given, order="C")
    flat = x.data.reshape(-1)
    original = flat[flat_index]
    values = []
    with no_grad():
        for step in (-eps, 0.0, eps):
            flat[flat_index] = original + step
            values.append(weighted_sum(_outputs(fn, inputs)))
    x.data = given
    left, right = (values[1] - values[0]) / eps, (values[2] - values[1]) / eps
    if abs(right - left) <= 10 * allowed:
        return None
    return (f"fn has a kink there: slope {left:.6g} just left, {right:.6g} just right (relu at 0? abs? "
            "a max with a tie?); finite differences average the two, so no backward can match: "
            "move the input away from the kink")


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
    largest error, where it is, both values there, and hints read off the mismatch:
    backward a constant multiple of the finite differences (``4 ×``: a missing 1/N; ``-1 ×``:
    a sign), zero where they are not, transposed, finite differences all below atol (fn flat
    there: a saturated sigmoid; move the inputs), or a kink in fn at that element (relu at 0),
    where the central difference averages two slopes and no backward can agree.

    What it cannot see: a wrong *forward*. Both sides differentiate the forward it is
    given, so a forward that computes the wrong function with a matching backward passes.
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
            kink = _kink_hint(fn, inputs, x, int(np.ravel_multi_index(where, x.shape)), eps, weighted_sum,
                              float(allowed[where]))
            shapes = {f"input {j}": tuple(inputs[j].shape) for j, t in enumerate(inputs) if isinstance(t, Tensor)}
            shapes.update({f"output {j}": tuple(y.shape) for j, y in enumerate(outputs)})
            hints = [kink] if kink else _hints(analytic, numeric, atol, rtol, shapes)
            raise GradcheckError(
                f"gradcheck: input {i} of shape {x.shape} through {ops_named}: "
                "backward and finite differences disagree; "
                f"largest error {np.nanmax(error):.3g} at index {tuple(int(j) for j in where)}: "
                f"backward gives {analytic[where]:.6g}, finite differences give {numeric[where]:.6g} "
                f"(atol={atol}, rtol={rtol})" + "".join(f"; hint: {hint}" for hint in hints)
            )
    return True
