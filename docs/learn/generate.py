"""Regenerate the learning path's generated files: its figures and its notebooks.

    python docs/learn/generate.py            # rewrite what is out of date
    python docs/learn/generate.py --check    # only say what is out of date (exit 1 if anything is)
    python docs/learn/generate.py --retrain  # also retrain chapter 9's transformer (a few minutes)

Figures (``docs/learn/figures/``), each drawn by matplotlib next to the inputs it was drawn from:

- the graphs of chapters 1 and 8: the chapter's own code blocks run, in order, up to the
  block that calls ``viz.trace``; the ``graph`` that block made is drawn by ``tinylm.viz``'s
  layered layout. ``NAME.dot`` holds the graph's DOT text, ``NAME.svg`` the drawing.
- chapter 9's attention maps: a small transformer trained by ``python -m tinylm.train`` on
  a repeated sentence (``RECIPE``), its attention weights on a query text stored, rounded,
  in ``attention-maps.json`` with the recipe, and drawn in ``attention-maps.svg``.

Notebooks (``docs/learn/notebooks/``): every Markdown page of ``docs/learn`` but the index
as a Jupyter notebook, a Markdown cell for the text between code blocks and a code cell for
each ```python block, in order. They are written as nbformat 4 JSON by ``notebook()`` below
(thirty lines; no jupytext needed), with their links rewritten to work from that folder.

What "current" means, and what ``--check`` (and ``tests/test_learn_generated.py``) compares:

- notebooks: byte for byte against what ``notebook()`` makes from today's Markdown;
- graphs: the DOT text, rebuilt by running the chapter's blocks again;
- attention maps: the recipe stored in the JSON against ``RECIPE`` (the check never retrains:
  that takes minutes; the stored weights are what the last training gave);
- the drawings themselves against a fresh drawing of the stored inputs, byte for byte, but
  only under the matplotlib and Pillow versions that drew them (``figures/versions.json``):
  SVG bytes are reproducible on one setup (fixed id salt, no date, text kept as text, one
  font), not across releases, so elsewhere the inputs alone are compared.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

LEARN = Path(__file__).resolve().parent
ROOT = LEARN.parent.parent
FIGURES = LEARN / "figures"
NOTEBOOKS = LEARN / "notebooks"
COMMAND = "python docs/learn/generate.py"
FENCE = re.compile(r"^(`{3,}|~{3,})([^\n`]*)\n(.*?)^\1[ \t]*$", re.S | re.M)  # as in tests/test_docs.py
LINK = re.compile(r"(\]\()(?!https?://|#|/)([^)\s]+)(\))")

# (chapter, figure name, rankdir): the graph made by the chapter's block that calls viz.trace
GRAPHS = [("01-backprop-by-hand.md", "backprop-by-hand-graph", "TB"),
          ("08-lstm-bptt.md", "lstm-step-graph", "BT")]

# Chapter 9's trained transformer: long enough that its attention is no longer near uniform.
RECIPE = {
    "text": "I am eating at a restaurant. The waiter is eating at home. ",
    "repeat": 40,
    "train": ["--model", "transformer", "--d-model", "32", "--n-heads", "2", "--n-layers", "2",
              "--steps", "300", "--batch-size", "16", "--seq-len", "32", "--warmup-steps", "20",
              "--eval-every", "300", "--sample-tokens", "0", "--seed", "0", "--backend", "numpy"],
    "query": "I am eating at a restaurant",
}
DIGITS = 4  # the weights are stored rounded, and drawn from the rounded values


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# ------------------------------------------------------------------------ notebooks


def pages() -> list[Path]:
    """The Markdown pages that get a notebook: every page of docs/learn but the index."""
    return sorted(p for p in LEARN.glob("*.md") if p.name != "README.md")


def relink(markdown: str) -> str:
    """Links as seen from notebooks/: a page's link to a page becomes one to its notebook,
    every other relative link gains a ``../``."""
    names = {p.name for p in pages()}

    def move(match):
        target = match.group(2)
        page, anchor = (target.split("#", 1) + [""])[:2]
        if page in names:
            target = page[:-3] + ".ipynb" + (f"#{anchor}" if anchor else "")
        else:
            target = "../" + target
        return match.group(1) + target + match.group(3)

    return LINK.sub(move, markdown)


def cell(kind: str, text: str, number: int) -> dict:
    lines = text.splitlines(keepends=True)
    if lines:
        lines[-1] = lines[-1].rstrip("\n")
    made = {"cell_type": kind, "id": f"cell-{number}", "metadata": {}, "source": lines}
    if kind == "code":
        made.update(execution_count=None, outputs=[])
    return made


def notebook(page: Path) -> str:
    """The nbformat 4.5 JSON text of ``page``: its text as Markdown cells, each ```python
    block as a code cell, in order; a first cell says where it came from.

    A block inside an HTML ``<details>`` element (an exercise's folded solution) stays in
    its Markdown cell as a fenced block: a notebook cannot fold a code cell, and a
    solution shown as a runnable cell would no longer be hidden.
    """
    text = page.read_text(encoding="utf-8")
    cells = [cell("markdown", f"*Generated from [{page.name}](../{page.name}) by `{COMMAND}`: "
                  "edit the Markdown, then run that command.*", 0)]
    prose, at, folded = "", 0, 0  # the Markdown not yet in a cell; how many <details> are open

    def add_prose():
        if prose.strip():
            cells.append(cell("markdown", relink(prose.strip("\n")), len(cells)))

    for match in FENCE.finditer(text):
        prose += text[at:match.start()]
        folded += len(re.findall(r"<details\b", text[at:match.start()])) - text.count("</details>", at, match.start())
        at = match.end()
        if match.group(2).strip() == "python" and folded <= 0:
            add_prose()
            prose = ""
            cells.append(cell("code", match.group(3).strip("\n"), len(cells)))
        else:
            prose += match.group(0)
    prose += text[at:]
    add_prose()
    document = {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
            "tinylm": {"generated_from": f"docs/learn/{page.name}", "by": COMMAND},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    return json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n"  # as Jupyter writes it


def notebook_path(page: Path) -> Path:
    return NOTEBOOKS / (page.stem + ".ipynb")


# ------------------------------------------------------------------------ figures


def chapter_graph(chapter: str):
    """Run ``chapter``'s code blocks in order, in a scratch folder, up to the first one that
    calls ``viz.trace``; return the ``graph`` it made. Seeded, so every run is the same."""
    import tinylm

    text = (LEARN / chapter).read_text(encoding="utf-8")
    namespace = {"__name__": f"docs:{Path(chapter).stem}"}
    before = tinylm.random.default_generator()
    tinylm.manual_seed(0)  # nn layers initialise from tinylm's default generator
    try:
        with tempfile.TemporaryDirectory() as scratch, _inside(scratch), contextlib.redirect_stdout(io.StringIO()):
            for match in FENCE.finditer(text):
                code = match.group(3)
                line = text.count("\n", 0, match.start()) + 1
                exec(compile("\n" * line + code, f"docs/learn/{chapter}", "exec"), namespace)
                if "viz.trace(" in code:
                    return namespace["graph"]
    finally:
        tinylm.random._generator = before  # the caller's generator, where it was (a test run goes on)
    raise LookupError(f"generate.py: docs/learn/{chapter} has no code block that calls viz.trace(...)")


@contextlib.contextmanager
def _inside(folder):
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def graph_inputs() -> dict[str, str]:
    """{figure name: DOT text} of every graph in GRAPHS, from the chapters as they are now."""
    return {name: chapter_graph(chapter).to_dot(rankdir) for chapter, name, rankdir in GRAPHS}


def draw_graph(name: str, dot: str, path: Path) -> None:
    """Draw the DOT text of one figure (as written by Graph.to_dot) with tinylm.viz's layout."""
    from tinylm import viz

    nodes, edges, rankdir = parse_dot(dot)
    viz.draw(viz.layered_layout(nodes, edges, rankdir), path)


def parse_dot(dot: str):
    """The nodes, edges and rankdir of a DOT text written by ``tinylm.viz.Graph.to_dot``."""
    from tinylm import viz

    colours = {colour: kind for kind, colour in viz.COLOURS.items()}
    nodes, edges = [], []
    rankdir = re.search(r"rankdir=(\w+);", dot).group(1)
    for node, attributes, label in re.findall(r'^  (\w+) \[(.*)label="(.*)"\];$', dot, re.M):
        shape = "box" if "shape=box" in attributes else "ellipse"
        kind = colours[re.search(r'fillcolor="(#\w+)"', attributes).group(1)]
        text = re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), label)
        nodes.append(viz.Node(node, text, shape, "op" if shape == "ellipse" else kind))
    edges = re.findall(r"^  (\w+) -> (\w+);$", dot, re.M)
    return nodes, edges, rankdir


def train_attention() -> dict:
    """Train RECIPE's transformer in a scratch folder; its rounded attention maps on the query."""
    from tinylm import train
    from tinylm.attention import attention_maps, token_texts
    from tinylm.runs import load_run

    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "text.txt"
        data.write_text(RECIPE["text"] * RECIPE["repeat"], encoding="utf-8")
        train.main(["--data", str(data), "--out", str(Path(scratch) / "run")] + RECIPE["train"])
        _, tokenizer, model, _, _ = load_run(Path(scratch) / "run")
    ids = tokenizer.encode(RECIPE["query"])
    maps = attention_maps(model, ids)
    return {"recipe": RECIPE, "tokens": token_texts(tokenizer, ids),
            "weights": [np.round(heads, DIGITS).tolist() for heads in maps]}


def draw_attention(stored: dict, path: Path) -> None:
    """One panel per layer and head: row i is how query i spreads its attention over keys 0..i."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tinylm import viz
    from tinylm.attention import axis_label

    weights = np.array(stored["weights"])  # (layers, heads, T, T)
    layers, heads, T, _ = weights.shape
    labels = [axis_label(t) for t in stored["tokens"]]
    future = np.triu(np.ones((T, T), dtype=bool), k=1)
    with matplotlib.rc_context(viz.STABLE_RC):
        figure, grid = plt.subplots(layers, heads, figsize=(4.6 * heads + 0.8, 4.4 * layers), squeeze=False)
        colours = matplotlib.colormaps["viridis"].with_extremes(bad="#e8e8e8")
        for layer in range(layers):
            for head in range(heads):
                axes = grid[layer][head]
                image = axes.imshow(np.ma.masked_array(weights[layer, head], future), cmap=colours,
                                    vmin=0.0, vmax=1.0, interpolation="none")
                axes.set_xticks(range(T), labels, fontsize=7)
                axes.set_yticks(range(T), labels, fontsize=7)
                axes.set_title(f"layer {layer}, head {head}", fontsize=10)
                if layer == layers - 1:
                    axes.set_xlabel("key (attended to)")
                if head == 0:
                    axes.set_ylabel("query (attending)")
        figure.colorbar(image, ax=grid, fraction=0.03, pad=0.02, label="attention weight")
        figure.savefig(path, format=path.suffix[1:], metadata=viz.STABLE_METADATA[path.suffix[1:]])
        plt.close(figure)


def drawn_bytes(draw, *inputs) -> bytes:
    """What ``draw(*inputs, path)`` writes to an .svg, as bytes."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "figure.svg"
        draw(*inputs, path)
        return path.read_bytes()


def versions() -> dict[str, str]:
    """The versions of what turns the inputs into bytes: matplotlib and Pillow."""
    import matplotlib
    import PIL

    return {"matplotlib": matplotlib.__version__, "pillow": PIL.__version__}


# ------------------------------------------------------------------------ check and write


def check() -> list[str]:
    """What is out of date, one line each (empty when everything is current). Never retrains."""
    return check_notebooks() + check_figures()


def check_notebooks() -> list[str]:
    """The notebooks that are missing, stale or left over, one line each."""
    problems = []
    wanted = {notebook_path(p): p for p in pages()}
    for path, page in wanted.items():
        if not path.is_file():
            problems.append(f"{shown(path)} is missing (the notebook of {page.name})")
        elif path.read_text(encoding="utf-8") != notebook(page):
            problems.append(f"{shown(path)} is not what {page.name} makes today")
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        if path not in wanted:
            problems.append(f"{shown(path)} has no Markdown page any more")
    return problems


def same_versions() -> bool:
    """Whether this matplotlib (and Pillow, which encodes the heatmaps' pixels) is the one that
    drew the committed figures, so that their bytes can be compared."""
    return _read_json(FIGURES / "versions.json") == versions()


def check_figures() -> list[str]:
    """The figures whose inputs or drawings are out of date, one line each."""
    problems = []
    same = same_versions()
    for name, dot in graph_inputs().items():
        stored, image = FIGURES / f"{name}.dot", FIGURES / f"{name}.svg"
        if not stored.is_file() or stored.read_text(encoding="utf-8") != dot:
            problems.append(f"{shown(stored)} is not the graph its chapter makes today")
        elif not image.is_file():
            problems.append(f"{shown(image)} is missing")
        elif same and image.read_bytes() != drawn_bytes(draw_graph, name, dot):
            problems.append(f"{shown(image)} is not the drawing of {stored.name}")
    stored = _read_json(FIGURES / "attention-maps.json")
    image = FIGURES / "attention-maps.svg"
    if stored is None or stored.get("recipe") != RECIPE:
        problems.append(f"{shown(FIGURES / 'attention-maps.json')} was not made by today's RECIPE "
                        f"(run {COMMAND}, which retrains when the recipe changed)")
    elif not image.is_file():
        problems.append(f"{shown(image)} is missing")
    elif same and image.read_bytes() != drawn_bytes(draw_attention, stored):
        problems.append(f"{shown(image)} is not the drawing of attention-maps.json")
    return problems


def write(retrain: bool = False) -> list[Path]:
    """Rewrite every generated file whose content would change; the paths rewritten."""
    written = []

    def put(path: Path, content):
        data = content.encode("utf-8") if isinstance(content, str) else content
        if not path.is_file() or path.read_bytes() != data:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            written.append(path)

    wanted = {notebook_path(p) for p in pages()}
    for page in pages():
        put(notebook_path(page), notebook(page))
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        if path not in wanted:
            path.unlink()
            written.append(path)
    for name, dot in graph_inputs().items():
        put(FIGURES / f"{name}.dot", dot)
        put(FIGURES / f"{name}.svg", drawn_bytes(draw_graph, name, dot))
    stored = _read_json(FIGURES / "attention-maps.json")
    if retrain or stored is None or stored.get("recipe") != RECIPE:
        stored = train_attention()
        put(FIGURES / "attention-maps.json", json.dumps(stored, indent=1) + "\n")
    put(FIGURES / "attention-maps.svg", drawn_bytes(draw_attention, stored))
    put(FIGURES / "versions.json", json.dumps(versions(), indent=1) + "\n")
    return written


def _read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report what is out of date; exit 1 if anything is")
    parser.add_argument("--retrain", action="store_true", help="retrain chapter 9's transformer even if its "
                                                               "recipe did not change")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for line in problems:
            print(line)
        if problems:
            print(f"run: {COMMAND}")
        return 1 if problems else 0
    for path in write(retrain=args.retrain):
        print("wrote", shown(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
