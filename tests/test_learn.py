"""tinylm.learn.compare, the exercises' checker, and the exercises page it serves.

compare must say exact only for equal arrays, approximate only within the tolerance, and
WRONG for everything else, with the place and the values of the largest difference and
hints that the numbers confirm. The page's solutions run in tests/test_docs.py; here we
check the page's shape and that a broken solution would fail there.
"""

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

import tinylm
from tinylm.learn import Verdict, compare

ROOT = Path(__file__).resolve().parent.parent
EXERCISES = ROOT / "docs" / "learn" / "exercises.md"


@pytest.fixture
def ref():
    return np.random.default_rng(0).standard_normal((3, 4))


# ----------------------------------------------------------------------------- verdicts


def test_equal_arrays_are_exact_and_the_line_is_printed_and_returned(ref, capsys):
    line = compare("dx", ref.copy(), ref)
    assert line == "dx: exact"
    assert capsys.readouterr().out == "dx: exact\n"
    assert isinstance(line, Verdict) and line.verdict == "exact" and line.ok


def test_rounding_is_approximate_with_the_largest_difference_where_and_relative(ref):
    yours = ref.copy()
    yours[2, 1] += 3e-9 * abs(ref[2, 1])
    line = compare("dx", yours, ref)
    assert line.verdict == "approximate" and line.ok
    match = re.fullmatch(r"dx: approximate \(largest difference (\S+) at \[2, 1\], relative (\S+)\)", line)
    assert match, line
    assert float(match.group(1)) == pytest.approx(3e-9 * abs(ref[2, 1]), rel=0.05)
    assert float(match.group(2)) == pytest.approx(3e-9, rel=0.05)


def test_a_difference_beyond_the_tolerance_is_wrong_naming_the_place_and_both_values(ref):
    yours = ref.copy()
    yours[0, 3] = ref[0, 3] + 0.5
    line = compare("dx", yours, ref)
    assert not line.ok and line.verdict == "WRONG"
    assert line.startswith(f"dx: WRONG (largest difference 0.5 at [0, 3]: yours {yours[0, 3]:.6g}, "
                           f"reference {ref[0, 3]:.6g}); wrong at 1 of 12 elements, only in rows [0]"), line


def test_rtol_and_atol_set_the_line_between_approximate_and_wrong(ref):
    yours = ref * (1 + 1e-5)
    assert compare("loose", yours, ref, rtol=1e-4).verdict == "approximate"
    assert compare("default", yours, ref).verdict == "WRONG"
    assert compare("atol", ref + 1e-3, ref, rtol=0.0, atol=1e-2).verdict == "approximate"
    assert compare("atol", ref + 1e-3, ref, rtol=0.0, atol=1e-4).verdict == "WRONG"


def test_a_near_zero_element_gets_the_arrays_scale_as_slack():
    """1 - 1 + 1e-17 is rounding noise next to entries of size 1, not a wrong gradient."""
    ref = np.array([1.0, -2.0, 0.0])
    assert compare("cancelled", np.array([1.0, -2.0, 1e-17]), ref).verdict == "approximate"
    assert "where the reference is 0" in compare("cancelled", np.array([1.0, -2.0, 1e-15]), ref)
    assert compare("all zero", np.full(3, 1e-17), np.zeros(3)).verdict == "approximate"
    assert compare("not noise", np.array([1.0, -2.0, 1e-3]), ref).verdict == "WRONG"


def test_float32_gets_float32s_tolerance():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 64)).astype(np.float32)
    by_rows = x.sum(axis=0)
    by_loop = np.zeros(64, np.float32)
    for row in x:  # another order of addition: different float32 rounding
        by_loop += row
    assert compare("float32 sums", by_loop, by_rows).ok
    assert not compare("float32 doubled", by_loop * 2, by_rows).ok


@given(arrays(np.float64, array_shapes(max_dims=3, max_side=5), elements=st.floats(-1e3, 1e3)))
def test_any_array_is_exact_against_itself_and_approximate_after_relative_rounding(x):
    assert compare("self", x.copy(), x).verdict == "exact"
    assert compare("rounded", x * (1 + 1e-12), x).ok


@given(arrays(np.float64, array_shapes(min_side=2, max_side=5), elements=st.floats(0.5, 10)),
       st.integers(2, 9))
def test_a_whole_number_ratio_is_wrong_and_named(x, factor):
    line = compare("scaled", factor * x, x)
    assert not line.ok
    assert f"yours = {factor} × reference: a missing 1/{factor}?" in line, line


# ----------------------------------------------------------------------------- shapes and dtypes


def test_a_transpose_is_wrong_and_recognised(ref):
    line = compare("dW", ref.T, ref)
    assert line == "dW: WRONG: shape (4, 3) vs (3, 4); yours transposed equals the reference: transposed?"
    square = np.arange(9.0).reshape(3, 3)
    assert "yours transposed equals the reference: transposed?" in compare("square", square.T, square)
    assert "the last two axes are swapped: transposed?" in compare("dW", ref.T + 1, ref)


def test_a_forgotten_sum_over_broadcast_axes_is_recognised(ref):
    line = compare("db", ref, ref.sum(axis=0, keepdims=True))
    assert "shape (3, 4) vs (1, 4)" in line and "sum yours to (1, 4)" in line
    assert "sum over the axes broadcasting added?" in compare("db", ref, np.ones(4))


def test_a_lost_or_extra_keepdims_is_called_a_reshape_not_a_sum(ref):
    line = compare("db", ref.sum(axis=0, keepdims=True), ref.sum(axis=0))
    assert line.endswith("shape (1, 4) vs (4,); reshaped to (4,) it equals the reference: keepdims?"), line
    assert "sum yours" not in line
    assert compare("db", ref.sum(axis=0), ref.sum(axis=0, keepdims=True)).endswith(
        "reshaped to (1, 4) it equals the reference: keepdims?")


def test_a_ratio_that_is_no_count_ratio_names_no_counts(ref):
    line = compare("g", ref * 0.7, ref)
    assert "belongs" not in line and "1/10" not in line and "1/7" not in line


def test_a_reshape_is_recognised_and_unrelated_shapes_are_just_wrong(ref):
    assert "reshaped to (3, 4) it equals the reference" in compare("x", ref.reshape(2, 6), ref)
    assert compare("x", np.ones(5), ref) == "x: WRONG: shape (5,) vs (3, 4)"


def test_another_dtype_is_wrong_saying_whether_the_values_agree(ref):
    line = compare("dx", ref.astype(np.float32), ref)
    assert line == "dx: WRONG: dtype float32 vs float64 (the values agree; compute yours in float64)"
    line = compare("dx", (2 * ref).astype(np.float32), ref)
    assert line.startswith("dx: WRONG: dtype float32 vs float64; the values differ too: (largest difference")
    assert "a missing 1/2?" in line


# ----------------------------------------------------------------------------- hints on values


@pytest.mark.parametrize("factor, hint", [
    (-1.0, "sign flipped: yours = -reference"),
    (0.25, "yours = 1/4 × reference: divided by 4 once too often?"),
    (2 / 3, "yours = 2/3 × reference: divided by a count 3/2 × the right one?"),
    (4 / 6, "yours = 2/3 × reference: divided by a count 3/2 × the right one?"),  # 6 rows where 4 belong
    (0.7, "yours = 7/10 × reference: divided by a count 10/7 × the right one?"),
    (-1.5, "yours = -3/2 × reference: sign flipped and divided by a count 2/3 × the right one?"),
    (37 / 64, "yours = 37/64 × reference: a constant factor is wrong"),
    (-2.0, "yours = -2 × reference: sign flipped and a missing 1/2?"),
    (1.2378, "yours = 1.238 × reference"),
])
def test_a_constant_ratio_is_named(ref, factor, hint):
    line = compare("g", ref * factor, ref)
    assert line.endswith("; " + hint), line


def test_other_value_hints(ref):
    assert compare("g", np.zeros_like(ref), ref).endswith("yours is all 0: did the gradient reach it?")
    assert compare("g", ref + 0.3, ref).endswith("yours = reference + 0.3 everywhere: a constant term too many?")
    per_row = ref - ref.mean(axis=1, keepdims=True)
    assert "the difference is constant along the last axis, one value per row" in compare("g", per_row, ref)
    one_row = ref.copy()
    one_row[1] += 0.5
    assert "constant along the last axis" not in compare("g", one_row, ref)  # one row: the rows list says it
    with_nan = ref.copy()
    with_nan[1, 1] = np.nan
    line = compare("g", with_nan, ref)
    assert "at [1, 1]: yours nan" in line and "yours has nan or inf where the reference is finite" in line
    scattered = ref.copy()
    scattered[[0, 2], [1, 3]] += [0.1, 0.7]
    assert compare("g", scattered, ref).endswith("wrong at 2 of 12 elements, only in rows [0, 2]")


def test_nan_matching_nan_is_exact():
    x = np.array([1.0, np.nan, np.inf])
    assert compare("x", x.copy(), x).verdict == "exact"
    assert compare("x", np.array([1.0, np.nan, -np.inf]), x).verdict == "WRONG"


# ----------------------------------------------------------------------------- what it accepts


def test_tensors_numbers_and_lists_are_accepted():
    t = tinylm.tensor(np.array([1.5, 2.0]))
    assert compare("tensor", t, t.numpy().copy()) == "tensor: exact"
    assert compare("float against float32", 2.5, tinylm.tensor(np.float32(2.5))) == "float against float32: exact"
    assert compare("list", [1, 2], np.array([1.0, 2.0])) == "list: exact"
    assert compare("numbers", 2.5, 3.0).startswith("numbers: WRONG (largest difference 0.5: yours 2.5, reference 3")
    assert compare("ints", np.array([1, 2]), np.array([1, 3])).verdict == "WRONG"


def test_an_unfinished_answer_is_wrong_and_bad_input_is_an_error_naming_it(ref):
    assert compare("dx", None, ref) == "dx: WRONG: yours is None (did your function return its result?)"
    with pytest.raises(ValueError, match="compare: the reference for 'dx' is None"):
        compare("dx", ref, None)
    with pytest.raises(TypeError, match="compare: yours for 'dx' is a str"):
        compare("dx", "0.5", ref)
    with pytest.raises(TypeError, match="compare: reference for 'dx' is not a rectangular array"):
        compare("dx", ref, [[1.0], [1.0, 2.0]])
    with pytest.raises(TypeError, match="compare: yours for 'dx' has dtype <U1"):
        compare("dx", np.array(["a"]), ref)


# ----------------------------------------------------------------------------- the exercises page


def _exercises() -> list[str]:
    text = EXERCISES.read_text(encoding="utf-8")
    return re.split(r"^## Exercise \d+: ", text, flags=re.M)[1:]


def test_the_page_has_at_least_eight_exercises_each_with_a_checked_folded_solution():
    exercises = _exercises()
    assert len(exercises) >= 8, len(exercises)
    for exercise in exercises:
        title = exercise.splitlines()[0]
        question, _, rest = exercise.partition("<details><summary>Solution</summary>")
        solution, closed, _ = rest.partition("</details>")
        assert closed, f"{title}: no folded solution"
        assert "```python" in question, f"{title}: no setup block before the solution"
        assert "compare(" not in question, f"{title}: the setup checks something before the solution"
        blocks = re.findall(r"```python\n(.*?)```", solution, re.S)
        assert any("compare(" in b and "assert" in b and ".ok" in b for b in blocks), f"{title}: solution unchecked"


def test_the_index_links_the_exercises():
    assert "](exercises.md)" in (EXERCISES.parent / "README.md").read_text(encoding="utf-8")


def test_a_broken_solution_fails_the_docs_test(tmp_path, monkeypatch):
    """The page's asserts are real: sabotage exercise 1's answer and running the page fails."""
    from test_docs import run_markdown

    text = EXERCISES.read_text(encoding="utf-8")
    right = "return gY * w, sum_to(gY * X, w.shape)"
    assert right in text
    broken = tmp_path / "exercises.md"
    broken.write_text(text.replace(right, "return 2 * gY * w, sum_to(gY * X, w.shape)"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AssertionError):
        run_markdown(broken)
