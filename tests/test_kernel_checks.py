"""The wrappers' argument checks (kernels/checks.py): each check has one meaning, and the
Cython and CUDA wrappers of a kernel refuse a bad argument with the same error.

The CUDA wrappers refuse before any launch, so no compiler is needed here."""

import math
import re
from pathlib import Path

import numpy as np
import pytest

from tinylm.backends import kernel_for
from tinylm.kernels import checks

KERNELS_DIR = Path(__file__).resolve().parent.parent / "kernels"


# ------------------------------------------------------------------ each check


@pytest.mark.parametrize("value, expected", [(2, 2.0), (-1.5, -1.5), (np.float32(0.25), 0.25), (np.int64(3), 3.0),
                                             (math.inf, math.inf)])
def test_real_scalar_takes_python_and_numpy_reals(value, expected):
    got = checks.real_scalar("op", "scale", value)
    assert type(got) is float and got == expected


def test_real_scalar_takes_nan_as_the_reference_does():
    assert math.isnan(checks.real_scalar("op", "scale", float("nan")))


@pytest.mark.parametrize("value", [True, np.bool_(False), "1.0", None, np.ones(1), [1.0], 1j])
def test_real_scalar_refuses_bools_arrays_and_the_rest(value):
    with pytest.raises(TypeError, match=f"op: scale must be a real number, got {type(value).__name__}"):
        checks.real_scalar("op", "scale", value)


def test_real_scalar_refuses_an_int_beyond_a_double():
    with pytest.raises(ValueError, match="op: scale is too large for a C double"):
        checks.real_scalar("op", "scale", 10**400)


def test_int_scalar_takes_integers_within_its_bounds():
    assert checks.int_scalar("op", "n", np.int32(7)) == 7 and type(checks.int_scalar("op", "n", np.uint8(7))) is int
    assert checks.int_scalar("op", "seed", 2**64 - 1, *checks.UINT64_RANGE) == 2**64 - 1
    for value, low, high, bounds in ((0, 1, None, ">= 1"), (5, None, 4, "<= 4"), (2**63, *checks.INT64_RANGE,
                                                                                  f"in \\[{-2**63}, {2**63 - 1}\\]")):
        with pytest.raises(ValueError, match=f"op: n must be {bounds}, got {value}"):
            checks.int_scalar("op", "n", value, low, high)


@pytest.mark.parametrize("value", [True, np.bool_(True), 1.0, np.float64(2.0), "3", None, np.ones(1, np.int64)])
def test_int_scalar_refuses_bools_floats_and_arrays(value):
    with pytest.raises(TypeError, match=f"op: n must be an integer, got {type(value).__name__}"):
        checks.int_scalar("op", "n", value)


def test_flag_takes_bools_only():
    assert checks.flag("op", "causal", np.bool_(True)) is True and checks.flag("op", "causal", False) is False
    for value in (0, 1, np.int32(1), 1.0, None, "yes"):
        with pytest.raises(TypeError, match=f"op: causal must be True or False, got {type(value).__name__}"):
            checks.flag("op", "causal", value)


def test_float_checks():
    assert checks.float_dtype("op", "x", np.zeros(2, np.float32)) == np.float32
    assert checks.float_array("op", "x", [1.0, 2.0]).dtype == np.float64  # a list becomes an array
    for dtype in (np.float16, np.int64, np.bool_):
        with pytest.raises(TypeError, match=f"op: x must be float32 or float64, got {np.dtype(dtype)}"):
            checks.float_array("op", "x", np.zeros(2, dtype))
    with pytest.raises(TypeError, match="op: w is float64, expected float32 like x"):
        checks.same_dtype("op", "x", np.zeros(1, np.float32), w=np.zeros(1), b=None)


def test_array_module_checks():
    assert checks.array_module_of("op", "x", np.float32(1)) is np
    with pytest.raises(TypeError, match="op: x must be a NumPy or CuPy array, got list"):
        checks.array_module_of("op", "x", [1.0])
    with pytest.raises(TypeError, match="op: ids must be a NumPy or CuPy array, got int"):
        checks.as_array("op", "ids", 3, np)


def test_every_check_is_defined_once():
    """No wrapper module keeps a check of its own under a shared check's name."""
    names = ("real_scalar", "int_scalar", "flag", "float_array", "float_dtype", "same_dtype", "as_array",
             "array_module_of")
    sources = [p for p in KERNELS_DIR.rglob("*") if p.suffix in (".py", ".pyx")]
    defining = {p.relative_to(KERNELS_DIR).as_posix() for p in sources
                if re.search(rf"^def ({'|'.join(names)})\(", p.read_text(), re.M)}
    assert defining == {"checks.py"}
    assert not (KERNELS_DIR / "cpu" / "_checks.py").exists()


# ------------------------------------------- the same error from both backends

f32 = np.float32
SCORES, X = np.zeros((2, 3), f32), np.zeros(4, f32)
SAME_ERROR = {
    "scale not a number": ("attention_softmax_forward", (SCORES, "1.0", None, False), TypeError,
                           "attention_softmax_forward: scale must be a real number, got str"),
    "causal as an int": ("attention_softmax_forward", (SCORES, 1.0, None, 1), TypeError,
                         "attention_softmax_forward: causal must be True or False, got int"),
    "eps a bool": ("layer_norm_forward", (np.zeros((2, 3), f32), None, None, True), TypeError,
                   "layer_norm_forward: eps must be a real number, got bool"),
    "seed a float": ("dropout_forward", (X, 0.5, 1.5), TypeError,
                     "dropout_forward: seed must be an integer, got float"),
    "p a string": ("dropout_backward", (X, np.ones(4, np.uint8), "0.5"), TypeError,
                   "dropout_backward: p must be a real number, got str"),
    "negative vocabulary": ("embedding_backward", (np.zeros((0, 2), f32), np.zeros(0, np.int64), -1), ValueError,
                            "embedding_backward: num_embeddings must be >= 0, got -1"),
    "vocabulary a float": ("embedding_backward", (np.zeros((1, 2), f32), np.zeros(1, np.int64), 2.0), TypeError,
                           "embedding_backward: num_embeddings must be an integer, got float"),
    "step 0": ("adam_update", (X, X.copy(), X.copy(), X.copy(), 0, 1e-3, 0.9, 0.999, 1e-8, 0.0, False), ValueError,
               "adam_update: step must be >= 1, got 0"),
    "decoupled as an int": ("adam_update", (X, X.copy(), X.copy(), X.copy(), 1, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1),
                            TypeError, "adam_update: decoupled must be True or False, got int"),
    "ignore_index beyond int64": ("cross_entropy_forward", (np.zeros((2, 3), f32), np.zeros(2, np.int64), 2**63),
                                  ValueError, "cross_entropy_forward: ignore_index must be in "),
    "integer x": ("gelu_forward", (np.zeros(3, np.int64),), TypeError,
                  "gelu_forward: x must be float32 or float64, got int64"),
    "half-precision weight": ("embedding_forward", (np.zeros((3, 2), np.float16), np.zeros(2, np.int64)), TypeError,
                              "embedding_forward: weight must be float32 or float64, got float16"),
    "half-precision q": ("causal_attention_forward", (*(np.zeros((1, 2, 2), np.float16),) * 3, 1.0), TypeError,
                         "causal_attention_forward: q, k, v must be float32 or float64, got float16"),
}


@pytest.mark.parametrize("case", SAME_ERROR, ids=list(SAME_ERROR))
def test_both_backends_refuse_a_bad_argument_alike(case):
    name, args, error, message = SAME_ERROR[case]
    for backend in ("cython", "cuda"):
        kernel = kernel_for(name, backend, fallback=False)
        with pytest.raises(error, match=re.escape(message)):
            kernel(*[a.copy() if isinstance(a, np.ndarray) else a for a in args])
