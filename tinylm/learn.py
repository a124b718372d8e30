"""``tinylm.learn``: the checker for the backward-pass exercises (docs/learn/exercises.md).

``compare(name, yours, reference)`` prints one line and returns it::

    dx: exact
    dx: approximate (largest difference 2.8e-17 at [1, 4], relative 1.3e-16)
    dx: WRONG (largest difference 1.3 at [1, 2]: yours 2.608, reference 1.304); yours = 2 × reference: a missing 1/2?
    dx: WRONG: shape (4, 3) vs (3, 4); yours transposed equals the reference: transposed?

- **exact**: every element equal (``==``, so 0.0 and -0.0 count as equal, and nan
  matches nan), same shape, same dtype.
- **approximate**: equal within rounding, |yours - reference| ≤ atol + rtol·|reference|
  in every element. A backward written by hand adds its terms in another order than
  autograd does, so it usually lands here, and that is a pass.
- **WRONG**: anything else: another shape, another dtype, a nan where the reference has
  a number, or a difference beyond the tolerance. The line then names the largest
  difference, where it is and both values there, how many elements are wrong, and a
  hint where one is cheap to find: a constant ratio ("yours = 4 × reference: a missing
  1/4?", "sign flipped"), a transpose, a constant offset, an error constant along each
  row (a missing "minus the row's mean" term), a forgotten sum over broadcast axes.

The tolerances follow the reference's dtype: rtol 1e-7 for float64, 1e-4 for float32,
1e-2 for float16, 0 for integers and booleans. atol defaults to rtol times the largest
|reference| (rtol itself when the reference is all 0): an element that comes out near 0
by cancellation carries the rounding error of the big terms that cancelled, so its
slack is measured against the array's scale, not against its own tiny value.

The returned line is a ``str`` with two extra attributes, ``verdict`` ("exact",
"approximate" or "WRONG") and ``ok`` (False only for WRONG), so an exercise can write
``assert compare("dx", dx, x.grad).ok``.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from tinylm import backends
from tinylm.autograd import Tensor

# rtol by the reference's dtype (kind "f", by item size); integers and booleans must be exact.
_RTOL_BY_FLOAT_SIZE = {2: 1e-2, 4: 1e-4, 8: 1e-7}
_FEW_ROWS = 8  # list the wrong rows by number when at most this many are wrong
_SMALL_DENOMINATOR = 64  # a ratio such as 2/3 is named as a fraction up to this denominator
_SMALL_COUNT = 16  # a ratio p/q with p, q at most this may be a divisor off by q/p ("divided by the wrong count")


class Verdict(str):
    """The line ``compare`` prints, with ``verdict`` ("exact", "approximate", "WRONG")
    and ``ok`` (False only for "WRONG")."""

    verdict: str

    @property
    def ok(self) -> bool:
        return self.verdict != "WRONG"


def compare(name, yours, reference, *, rtol: float | None = None, atol: float | None = None) -> Verdict:
    """Compare ``yours`` with ``reference``; print and return one line (see the module's docstring).

    Both may be NumPy or CuPy arrays, tinylm Tensors (their ``.data``), Python numbers or
    nested lists of them. A Python number or list takes the other side's dtype, so
    ``compare("loss", 2.5, tensor)`` compares values, not ``float`` against float32.
    ``yours`` may be None (an unfinished exercise): that is WRONG, not an error.
    """
    name = str(name)
    if reference is None:
        raise ValueError(f"compare: the reference for {name!r} is None (did backward reach that tensor?)")
    ref, ref_weak = _as_array("reference", name, reference)
    if yours is None:
        return _say(name, "WRONG", ": yours is None (did your function return its result?)")
    mine, mine_weak = _as_array("yours", name, yours)
    if mine_weak and not ref_weak:
        mine = _weak_to(mine, ref.dtype)
    elif ref_weak and not mine_weak:
        ref = _weak_to(ref, mine.dtype)
    finite = np.abs(ref[np.isfinite(ref)]).astype(np.float64)
    scale = float(finite.max(initial=0.0)) or 1.0  # the reference's largest |value|, 1 when all 0
    rtol = _default_rtol(ref.dtype) if rtol is None else float(rtol)
    tol = (rtol, rtol * scale if atol is None else float(atol))

    if mine.shape != ref.shape:
        hints = _shape_hints(mine, ref, tol)
        return _say(name, "WRONG", f": shape {mine.shape} vs {ref.shape}" + "".join(f"; {h}" for h in hints))
    if mine.dtype != ref.dtype:
        detail = f": dtype {mine.dtype} vs {ref.dtype}"
        looser = max(rtol, _default_rtol(mine.dtype))  # float32 against float64: float32's tolerance
        if _close(mine, ref, (looser, max(tol[1], looser * scale))):
            return _say(name, "WRONG", detail + f" (the values agree; compute yours in {ref.dtype})")
        return _say(name, "WRONG", detail + "; the values differ too: " + _describe_wrong(mine, ref, tol))
    if np.array_equal(mine, ref, equal_nan=ref.dtype.kind in "fc"):
        return _say(name, "exact")
    if _close(mine, ref, tol):
        diff = _differences(mine, ref)
        where = _argmax(diff)
        base = abs(float(ref[where]))
        relative = f"relative {diff[where] / base:.2g}" if base > 0 else "where the reference is 0"
        return _say(name, "approximate", f" (largest difference {diff[where]:.2g}{_at(where)}, {relative})")
    return _say(name, "WRONG", " " + _describe_wrong(mine, ref, tol))


# ----------------------------------------------------------------------------- inputs


def _as_array(side: str, name: str, value) -> tuple[np.ndarray, bool]:
    """(a NumPy array, whether it came from Python numbers and so has no dtype of its own)."""
    if isinstance(value, Tensor):
        value = value.data
    if backends.is_gpu_array(value):
        return value.get(), False
    if isinstance(value, np.ndarray):
        array, weak = value, False
    elif isinstance(value, np.generic):
        array, weak = np.asarray(value), False
    elif isinstance(value, (bool, int, float, list, tuple)):
        try:
            array, weak = np.asarray(value), True
        except ValueError as error:  # a ragged list
            raise TypeError(f"compare: {side} for {name!r} is not a rectangular array: {error}") from None
    else:
        raise TypeError(f"compare: {side} for {name!r} is a {type(value).__name__}; "
                        "expected a NumPy array, a tinylm Tensor or a number")
    if array.dtype.kind not in "biufc":
        raise TypeError(f"compare: {side} for {name!r} has dtype {array.dtype}; expected numbers")
    return array, weak


def _weak_to(array: np.ndarray, dtype) -> np.ndarray:
    """A Python number or list takes the other side's float or integer dtype (as NumPy 2 treats Python scalars)."""
    dtype = np.dtype(dtype)
    if array.dtype.kind in "bi" and dtype.kind in "iuf" or array.dtype.kind == "f" and dtype.kind == "f":
        return array.astype(dtype)
    return array


def _default_rtol(dtype) -> float:
    dtype = np.dtype(dtype)
    if dtype.kind in "fc":
        return _RTOL_BY_FLOAT_SIZE.get(dtype.itemsize if dtype.kind == "f" else dtype.itemsize // 2, 1e-7)
    return 0.0


# ----------------------------------------------------------------------------- differences


def _differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| in float64 (complex: the modulus); 0 where both are the same nan or inf, inf
    where only one of them is not finite."""
    wide = np.result_type(a.dtype, b.dtype, np.float64)
    a, b = a.astype(wide), b.astype(wide)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.array(np.abs(a - b), dtype=np.float64)  # an array even for 0-d inputs
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    diff[same] = 0.0
    diff[np.isnan(diff)] = np.inf
    return diff


def _close(a: np.ndarray, b: np.ndarray, tol: tuple[float, float]) -> bool:
    """Same shape and |a - b| ≤ atol + rtol·|b| everywhere (b is the reference)."""
    return a.shape == b.shape and bool(np.all(_differences(a, b) <= _allowed(b, tol)))


def _allowed(reference: np.ndarray, tol: tuple[float, float]) -> np.ndarray:
    """atol + rtol·|reference| per element; 0 where the reference is nan or inf, which
    only the same nan or inf matches."""
    rtol, atol = tol
    magnitude = np.abs(reference).astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(np.isfinite(magnitude), atol + rtol * magnitude, 0.0)


def _argmax(diff: np.ndarray) -> tuple:
    return np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.ndim else ()


def _at(where: tuple) -> str:
    return f" at [{', '.join(str(int(i)) for i in where)}]" if where else ""


def _number(value) -> str:
    return f"{value:.6g}" if isinstance(value, (float, np.floating)) else str(value)


def _describe_wrong(mine: np.ndarray, ref: np.ndarray, tol: tuple[float, float]) -> str:
    """'(largest difference ... at [...]: yours ..., reference ...)' plus how many are wrong and hints."""
    diff = _differences(mine, ref)
    wrong = diff > _allowed(ref, tol)
    where = _argmax(diff)
    text = (f"(largest difference {diff[where]:.3g}{_at(where)}: "
            f"yours {_number(mine[where].item())}, reference {_number(ref[where].item())})")
    count, total = int(wrong.sum()), wrong.size
    if count < total:
        text += f"; wrong at {count} of {total} elements"
        if mine.ndim == 2:
            rows = np.flatnonzero(wrong.any(axis=1))
            if len(rows) <= _FEW_ROWS and len(rows) < mine.shape[0]:
                text += f", only in rows {rows.tolist()}"
    return text + "".join(f"; {h}" for h in _value_hints(mine, ref, tol))


# ----------------------------------------------------------------------------- hints


def _value_hints(mine: np.ndarray, ref: np.ndarray, tol: tuple[float, float]) -> list[str]:
    """Cheap guesses at why two arrays of one shape differ, each confirmed on the numbers."""
    if mine.dtype.kind not in "iuf" or ref.dtype.kind not in "iuf":
        return []
    if not np.isfinite(ref).all():
        return []
    if not np.isfinite(mine).all():
        return ["yours has nan or inf where the reference is finite"]
    a, b = mine.astype(np.float64), ref.astype(np.float64)
    if not a.any():
        return ["yours is all 0: did the gradient reach it?"]
    if not b.any():
        return []
    hints = []
    ratio = float((a * b).sum() / (b * b).sum())  # the least-squares k in yours ≈ k · reference
    if a.size > 1 and ratio != 1.0 and _close(a, ratio * b, tol):
        hints.append(_ratio_hint(ratio))
    if a.ndim >= 2 and a.shape[-1] == a.shape[-2] and _close(np.swapaxes(a, -1, -2), b, tol):
        hints.append("yours transposed equals the reference: transposed?")
    offset = a - b
    if a.size > 1 and not hints:
        if _close(offset, np.full_like(offset, offset.mean()), tol):
            hints.append(f"yours = reference + {offset.mean():.4g} everywhere: a constant term too many?")
        elif (a.shape[-1] > 1 and _rows_wrong(offset, tol) > 1
              and _close(offset, np.broadcast_to(offset.mean(axis=-1, keepdims=True), a.shape), tol)):
            hints.append("the difference is constant along the last axis, one value per row: "
                         "a missing term that subtracts a row's mean or sum?")
    return hints


def _rows_wrong(offset: np.ndarray, tol: tuple[float, float]) -> int:
    """How many rows (all axes but the last) hold a difference beyond the absolute tolerance."""
    return int((np.abs(offset) > tol[1]).reshape(-1, offset.shape[-1]).any(axis=1).sum())


def _ratio_hint(ratio: float) -> str:
    """Name a constant ratio yours/reference: -1, a whole number k (a missing 1/k), its
    inverse 1/k (a 1/k too many), or a small fraction p/q, which is only named: it can say
    that a divisor was q/p times the right one, not which counts were used (2/3 is 4 over
    6 rows as well as 2 over 3)."""
    if abs(ratio + 1) < 1e-6:
        return "sign flipped: yours = -reference"
    sign = "sign flipped and " if ratio < 0 else ""
    size = abs(ratio)
    fraction = Fraction(size).limit_denominator(_SMALL_DENOMINATOR)
    if abs(float(fraction) - size) > 1e-6 * size:
        return f"yours = {ratio:.4g} × reference" + (": sign flipped?" if ratio < 0 else "")
    shown = f"{'-' if ratio < 0 else ''}{fraction}"
    if fraction.denominator == 1:
        return f"yours = {shown} × reference: {sign}a missing 1/{fraction.numerator}?"
    if fraction.numerator == 1:
        return f"yours = {shown} × reference: {sign}divided by {fraction.denominator} once too often?"
    if max(fraction.numerator, fraction.denominator) <= _SMALL_COUNT:
        return f"yours = {shown} × reference: {sign}divided by a count {1 / fraction} × the right one?"
    return f"yours = {shown} × reference: {sign}a constant factor is wrong"


def _sum_to(array: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum ``array`` over the axes broadcasting would have added to an array of ``shape``."""
    lead = array.ndim - len(shape)
    summed = array.sum(axis=tuple(range(lead))) if lead > 0 else array
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and summed.shape[i] != 1)
    return summed.sum(axis=axes, keepdims=True) if axes else summed


def _shape_hints(mine: np.ndarray, ref: np.ndarray, tol: tuple[float, float]) -> list[str]:
    """Guesses for a shape mismatch: first those the numbers confirm, else the shapes' own."""
    swapped = np.swapaxes(mine, -1, -2) if mine.ndim >= 2 else None
    try:
        broadcast = np.broadcast_shapes(mine.shape, ref.shape) == mine.shape
    except ValueError:
        broadcast = False
    if swapped is not None and _close(swapped, ref, tol):
        return ["yours transposed equals the reference: transposed?"]
    if mine.size == ref.size and _close(mine.reshape(ref.shape), ref, tol):  # before the sum: (1, 4) vs (4,)
        without_ones = [n for n in mine.shape if n != 1] == [n for n in ref.shape if n != 1]
        return [f"reshaped to {ref.shape} it equals the reference" + (": keepdims?" if without_ones else "")]
    if broadcast and _close(_sum_to(mine, ref.shape), ref, tol):
        return [f"summed over the axes broadcasting added it equals the reference: sum yours to {ref.shape}"]
    if swapped is not None and swapped.shape == ref.shape:
        return ["the last two axes are swapped: transposed?"]
    if broadcast:
        return [f"the reference has the input's shape {ref.shape}: sum over the axes broadcasting added?"]
    return []


def _say(name: str, verdict: str, detail: str = "") -> Verdict:
    line = Verdict(f"{name}: {verdict}{detail}")
    line.verdict = verdict
    print(line)
    return line
