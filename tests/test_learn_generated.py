"""docs/learn's generated files are current: the notebooks (one per page) and the figures
(chapters 1 and 8's graphs, chapter 9's attention maps), all made by docs/learn/generate.py.

A page edited without regenerating fails here with the command to run. Nothing is
retrained: chapter 9's maps are checked through their stored numbers and recipe.
"""

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
LEARN = ROOT / "docs" / "learn"
RUN = "run `python docs/learn/generate.py` and commit what it writes"


def load_generator():
    spec = importlib.util.spec_from_file_location("learn_generate", LEARN / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = load_generator()
PAGES = generate.pages()


def test_there_are_pages_and_every_one_has_a_notebook():
    assert len(PAGES) >= 10, PAGES
    have = {p.name for p in (LEARN / "notebooks").glob("*.ipynb")}
    want = {p.stem + ".ipynb" for p in PAGES}
    assert want <= have, f"notebooks missing for {sorted(want - have)}: {RUN}"
    assert have <= want, f"notebooks without a page: {sorted(have - want)}: {RUN}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_each_notebook_is_what_its_page_makes_today(page):
    path = generate.notebook_path(page)
    assert path.is_file(), f"{path.name} is missing: {RUN}"
    assert path.read_text(encoding="utf-8") == generate.notebook(page), f"{path.name} is out of date: {RUN}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_a_notebook_holds_the_pages_code_blocks_in_order_and_its_links_work(page):
    notebook = json.loads(generate.notebook_path(page).read_text(encoding="utf-8"))
    assert (notebook["nbformat"], notebook["nbformat_minor"]) == (4, 5)
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    text = page.read_text(encoding="utf-8")
    blocks = [m.group(3).strip("\n") for m in generate.FENCE.finditer(text) if m.group(2).strip() == "python"]
    seen = []  # every block, in order: a code cell, or folded in a <details> of a Markdown cell
    for c in notebook["cells"]:
        source = "".join(c["source"])
        if c["cell_type"] == "code":
            seen.append(source)
        for m in generate.FENCE.finditer(source) if c["cell_type"] == "markdown" else []:
            assert source.rfind("<details", 0, m.start()) > source.rfind("</details>", 0, m.start()), \
                f"a code block outside <details> left in a Markdown cell: {m.group(3)[:60]!r}"
            seen.append(m.group(3).strip("\n"))
    assert seen == blocks
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in notebook["cells"]
               if c["cell_type"] == "code")  # never executed: the Markdown blocks are run by test_docs
    ids = [c["id"] for c in notebook["cells"]]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", i) for i in ids)
    prose = "".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "markdown")
    assert text.splitlines()[0] in prose  # the title
    for target in re.findall(r"\]\((?!https?://|#)([^)#\s]+)", prose):
        assert (LEARN / "notebooks" / target).exists(), f"{generate.notebook_path(page).name} links a missing {target}"


def test_the_notebook_generator_follows_an_edit_and_rewrites_links(tmp_path, monkeypatch):
    page = tmp_path / "99-page.md"
    page.write_text("# Title\n\nSee [chapter 1](01-backprop-by-hand.md#the-picture) and "
                    "![a graph](figures/x.svg).\n\n```python\nx = 1\n```\n\nBetween.\n\n```python\ny = x\n```\n")
    before = json.loads(generate.notebook(page))
    kinds = [c["cell_type"] for c in before["cells"]]
    assert kinds == ["markdown", "markdown", "code", "markdown", "code"]
    assert "[chapter 1](01-backprop-by-hand.ipynb#the-picture)" in "".join(before["cells"][1]["source"])
    assert "![a graph](../figures/x.svg)" in "".join(before["cells"][1]["source"])
    page.write_text(page.read_text() + "\n<details><summary>Solution</summary>\n\n```python\nz = 3\n```\n\n"
                    "</details>\n\n```python\nprint(z)\n```\n")
    after = json.loads(generate.notebook(page))
    assert [c["cell_type"] for c in after["cells"]] == kinds + ["markdown", "code"]
    assert "```python\nz = 3\n```" in "".join(after["cells"][-2]["source"])  # folded, as in the Markdown
    assert "".join(after["cells"][-1]["source"]) == "print(z)"
    page.write_text(page.read_text().replace("y = x", "y = x + 1"))
    assert json.loads(generate.notebook(page)) != before
    monkeypatch.setattr(generate, "NOTEBOOKS", tmp_path / "notebooks")  # an empty folder: every notebook missing
    problems = generate.check_notebooks()
    assert len(problems) == len(PAGES) and all("is missing" in line for line in problems)


# ------------------------------------------------------------------------ figures


@pytest.mark.parametrize("chapter, name, rankdir", generate.GRAPHS)
def test_each_graph_figure_is_the_graph_its_chapter_makes_today(chapter, name, rankdir):
    stored = generate.FIGURES / f"{name}.dot"
    assert stored.is_file(), f"{stored.name} is missing: {RUN}"
    dot = generate.chapter_graph(chapter).to_dot(rankdir)
    assert stored.read_text(encoding="utf-8") == dot, f"{stored.name} is not what {chapter} draws today: {RUN}"
    assert f"](figures/{name}.svg)" in (LEARN / chapter).read_text(encoding="utf-8"), f"{chapter} must show {name}"
    assert "grad norm" in dot  # drawn after backward: every box shows its gradient


def test_the_named_intermediates_are_in_the_pictures():
    labels = {name: re.findall(r'label="([^"\\]*)', (generate.FIGURES / f"{name}.dot").read_text())
              for _, name, _ in generate.GRAPHS}
    assert {"a", "b", "e", "d", "t", "L"} <= set(labels["backprop-by-hand-graph"])
    assert {"i", "f", "c_tilde", "o", "c", "h", "x", "h_prev", "c_prev"} <= set(labels["lstm-step-graph"])


def test_the_attention_maps_come_from_todays_recipe_and_are_not_near_uniform():
    stored = json.loads((generate.FIGURES / "attention-maps.json").read_text(encoding="utf-8"))
    assert stored["recipe"] == generate.RECIPE, f"the recipe changed since the maps were made: {RUN}"
    assert "".join(stored["tokens"]) == generate.RECIPE["query"]
    weights = np.array(stored["weights"])  # (layers, heads, T, T)
    layers, heads, T, _ = weights.shape
    assert T == len(stored["tokens"]) and layers * heads >= 2
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=T * 10.0 ** -generate.DIGITS)  # rows of a softmax
    assert (weights[..., np.triu_indices(T, k=1)[0], np.triu_indices(T, k=1)[1]] == 0).all()  # causal
    peak = weights.max(-1).mean(-1)  # (layers, heads): the mean over queries of the largest weight
    uniform = np.mean([1 / (i + 1) for i in range(T)])  # what a head that attends evenly would give
    assert (peak > 3 * uniform).all(), f"near-uniform maps: {peak.round(3)} against {uniform:.3f}"
    assert "](figures/attention-maps.svg)" in (LEARN / "09-attention.md").read_text(encoding="utf-8")


@pytest.mark.skipif(not generate.same_versions(), reason="the figures were drawn by another matplotlib or Pillow; "
                                                            "SVG bytes are compared only under the same versions")
def test_each_drawing_is_the_drawing_of_its_stored_inputs():
    for _, name, _ in generate.GRAPHS:
        dot = (generate.FIGURES / f"{name}.dot").read_text(encoding="utf-8")
        drawn = generate.drawn_bytes(generate.draw_graph, name, dot)
        assert (generate.FIGURES / f"{name}.svg").read_bytes() == drawn, f"{name}.svg is stale: {RUN}"
    stored = json.loads((generate.FIGURES / "attention-maps.json").read_text(encoding="utf-8"))
    drawn = generate.drawn_bytes(generate.draw_attention, stored)
    assert (generate.FIGURES / "attention-maps.svg").read_bytes() == drawn, f"attention-maps.svg is stale: {RUN}"


def test_the_figures_folder_holds_only_generated_files():
    names = {f"{name}.{ext}" for _, name, _ in generate.GRAPHS for ext in ("dot", "svg")}
    names |= {"attention-maps.json", "attention-maps.svg", "versions.json"}
    assert {p.name for p in generate.FIGURES.iterdir()} == names


def test_the_index_points_at_the_notebooks_and_the_command():
    index = (LEARN / "README.md").read_text(encoding="utf-8")
    assert "](notebooks/)" in index and "python docs/learn/generate.py" in index
