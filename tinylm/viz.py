"""``tinylm.viz``: draw the computation graph behind a tensor.

Every op call records a node: the output remembers its ``creator`` (a ``Function``),
the function remembers its ``inputs`` (see ``tinylm/autograd.py``). ``trace(y)`` walks
that record back from ``y`` and keeps it, so the picture survives ``y.backward()``
(which frees the graph) and can show, after it, the gradient that reached each tensor:

    graph = viz.trace(loss, names={"W": W, "x": x})   # before backward
    loss.backward()
    print(graph.to_dot())                             # Graphviz DOT text, always
    graph.render("graph.svg")                         # SVG or PNG, with or without Graphviz

In the picture, boxes are tensors (name, shape, dtype and, once backward has run, the
norm of their gradient) and ellipses are ops; arrows follow the data, from inputs to
outputs, so gradients flow against them. Blue boxes are leaves that require grad
(parameters, inputs), grey ones constants, the double box the tensor traced.

Names: ``names`` labels any tensor of the graph, intermediate ones included
(``{"e": e, "d": d}``). The intermediates of a function you call are its local
variables; ``locals_of(fn, *args)`` calls ``fn`` and hands them back, named, so that
``trace(h, names=named)`` shows ``i``, ``f``, ``c_tilde``, ``o``, ``c`` inside an LSTM step.

Rendering: ``render`` hands the DOT text to Graphviz's ``dot`` when it is installed.
Without it (or with ``engine="matplotlib"``) it lays the graph out itself and draws it
with matplotlib, the layered layout Graphviz also uses (Sugiyama's), in four steps:

1. layers: every node one layer past its furthest input (the longest path from the
   inputs), and each input then moved next to its first consumer, so that every arrow
   points from one layer into a later one;
2. an arrow that spans several layers passes through an invisible point in each layer
   it crosses, so that the next step can route it between the nodes;
3. order within a layer: sweeps down and up, each node moved to the mean position of
   its neighbours in the layer before (the barycenter), keeping the order with the
   fewest crossing arrows;
4. positions: each node pulled towards the mean of its neighbours, nodes of a layer
   kept apart by their widths plus a gap.
"""

from __future__ import annotations

import bisect
import functools
import shutil
import subprocess
import sys
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinylm.autograd import Function, Tensor

FORMATS = ("svg", "png")
ENGINES = ("dot", "matplotlib")
RANKDIRS = ("TB", "BT", "LR", "RL")
FONT = "DejaVu Sans"  # shipped with matplotlib: the same glyph widths on every machine
FONT_SIZE = 10.0      # points, as in the DOT text
LARGE_GRAPH = 300     # more nodes than this: layered_layout warns that it is slow and crowded
COLOURS = {"root": "#fff2b3", "parameter": "#cfe2ff", "constant": "#eeeeee", "tensor": "#ffffff", "op": "#e8e0f8"}


class Graph:
    """The graph behind one tensor, as traced: its tensors, its ops and the arrows."""

    def __init__(self, root: Tensor, tensors: list[Tensor], functions: list[Function],
                 edges: list[tuple[str, str]], node_ids: dict[int, str], names: dict[int, str]):
        self.root, self.tensors, self.functions, self.edges = root, tensors, functions, edges
        self._ids, self._names = node_ids, names

    def __repr__(self) -> str:
        return f"<tinylm.viz.Graph: {len(self.tensors)} tensors, {len(self.functions)} ops>"

    def op_names(self) -> list[str]:
        """The ops' class names, in the order the trace met them (output first)."""
        return [type(f).__name__ for f in self.functions]

    def to_dot(self, rankdir: str = "TB") -> str:
        """The graph as Graphviz DOT text; ``rankdir="LR"`` lays it out left to right."""
        lines = ["digraph tinylm {", f"  rankdir={rankdir};", '  node [fontname="Helvetica", fontsize=10];']
        for t in self.tensors:
            lines.append(f'  {self._ids[id(t)]} [shape=box, style="rounded,filled", {self._tensor_style(t)}'
                         f'label="{_escape(self._tensor_label(t))}"];')
        for f in self.functions:
            lines.append(f'  {self._ids[id(f)]} [shape=ellipse, style=filled, fillcolor="#e8e0f8", '
                         f'label="{_escape(type(f).__name__)}"];')
        lines.extend(f"  {a} -> {b};" for a, b in self.edges)
        lines.append("}")
        return "\n".join(lines) + "\n"

    def render(self, path, rankdir: str = "TB", engine: str | None = None) -> Path:
        """Draw the graph to ``path`` (``.svg`` or ``.png``).

        ``engine``: ``"dot"`` (Graphviz, which must be installed), ``"matplotlib"`` (this
        module's layered layout, no Graphviz needed) or None: Graphviz when ``dot`` is on
        PATH, else matplotlib.
        """
        path = Path(path)
        fmt = path.suffix.lstrip(".").lower()
        if fmt not in FORMATS:
            raise ValueError(f"viz.render: {path.name} must end in .svg or .png, got {path.suffix or 'no suffix'!r}")
        if engine is not None and engine not in ENGINES:
            raise ValueError(f"viz.render: engine must be one of {ENGINES} or None, got {engine!r}")
        _check_rankdir(rankdir)
        if engine == "matplotlib" or (engine is None and not dot_available()):
            return draw(self.layout(rankdir), path)
        dot = shutil.which("dot")
        if dot is None:
            raise RuntimeError("viz.render: Graphviz's `dot` program is not on PATH; install Graphviz "
                               "(e.g. `apt install graphviz`) or pass engine=\"matplotlib\"")
        done = subprocess.run([dot, f"-T{fmt}", "-o", str(path)], input=self.to_dot(rankdir).encode("utf-8"),
                              capture_output=True, timeout=120)
        if done.returncode != 0:
            reason = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise RuntimeError(f"viz.render: dot failed on {path.name} (exit {done.returncode}): "
                               f"{reason[-1] if reason else 'no message'}")
        return path

    def layout(self, rankdir: str = "TB") -> Layout:
        """Where each node goes in a drawing without Graphviz: see ``layered_layout``."""
        nodes = [Node(self._ids[id(t)], self._tensor_label(t), "box", self._tensor_kind(t)) for t in self.tensors]
        nodes += [Node(self._ids[id(f)], type(f).__name__, "ellipse", "op") for f in self.functions]
        return layered_layout(nodes, self.edges, rankdir)

    # ---- labels
    def _tensor_label(self, t: Tensor) -> str:
        first = self._names.get(id(t))
        if first is None and t.creator is None and not t.requires_grad and t.numel() == 1:
            first = f"constant {t.item():.4g}"  # the 0.5 of `x * 0.5`
        lines = [first] if first else []
        lines.append(f"{t.shape} {t.dtype}")
        if t.grad is not None:
            lines.append(f"grad norm {gradient_norm(t):.4g}")
        return "\n".join(lines)

    def _tensor_kind(self, t: Tensor) -> str:
        """The key of its colour in COLOURS."""
        if t is self.root:
            return "root"
        if t.creator is None:
            return "parameter" if t.requires_grad else "constant"
        return "tensor"

    def _tensor_style(self, t: Tensor) -> str:
        kind = self._tensor_kind(t)
        return f'fillcolor="{COLOURS[kind]}", {"peripheries=2, " if kind == "root" else ""}'


def gradient_norm(t: Tensor) -> float:
    """‖t.grad‖₂ (the square root of the sum of squares), in float64."""
    grad = t.grad.numpy().astype(np.float64)
    return float(np.sqrt((grad * grad).sum()))


def trace(root: Tensor, names: dict | None = None, retain_grads: bool = True) -> Graph:
    """Record the graph behind ``root``; call it *before* ``root.backward()``.

    ``names`` labels tensors, leaves and intermediates alike: ``{"W": W, "e": e}``,
    ``dict(model.named_parameters())`` or the names ``locals_of`` found in a function.
    With ``retain_grads`` every non-leaf tensor in the graph keeps its gradient
    (``Tensor.retain_grad``), so that the picture can show the gradient at every node.
    """
    if not isinstance(root, Tensor):
        raise TypeError(f"viz.trace: expected a Tensor, got {type(root).__name__}")
    for name, t in (names or {}).items():
        if not isinstance(t, Tensor):
            raise TypeError(f"viz.trace: names[{name!r}] is a {type(t).__name__}, not a Tensor")
    labels = {id(t): str(name) for name, t in (names or {}).items()}
    node_ids: dict[int, str] = {}
    tensors: list[Tensor] = []
    functions: list[Function] = []
    edges: list[tuple[str, str]] = []

    def visit_tensor(t: Tensor) -> str:
        if id(t) not in node_ids:
            node_ids[id(t)] = f"t{len(tensors)}"
            tensors.append(t)
            pending.append(t)
        return node_ids[id(t)]

    pending: list[Tensor] = []
    visit_tensor(root)
    while pending:  # depth first, inputs in order: the same picture every time
        t = pending.pop()
        function = t.creator
        if function is None:
            continue
        if function.inputs is None:
            raise RuntimeError(
                f"viz.trace: the graph through {type(function).__name__} was already freed by backward; "
                "call viz.trace(y) before y.backward(), or pass retain_graph=True to backward"
            )
        if id(function) not in node_ids:
            node_ids[id(function)] = f"f{len(functions)}"
            functions.append(function)
            for x in function.inputs:
                edges.append((visit_tensor(x), node_ids[id(function)]))
        edges.append((node_ids[id(function)], node_ids[id(t)]))
    if retain_grads:
        for t in tensors:
            if t.creator is not None and t.requires_grad:
                t.retain_grad()
    return Graph(root, tensors, functions, edges, node_ids, labels)


def to_dot(root: Tensor, names: dict | None = None, rankdir: str = "TB") -> str:
    """The DOT text of the graph behind ``root`` as it is now (gradients shown if present)."""
    return trace(root, names, retain_grads=False).to_dot(rankdir)


def dot_available() -> bool:
    """Whether Graphviz's ``dot`` is on PATH, so that ``Graph.render`` can draw."""
    return shutil.which("dot") is not None


def locals_of(fn, *args, **kwargs) -> tuple[object, dict[str, Tensor]]:
    """Call ``fn(*args, **kwargs)``; return its result and its local Tensor variables, by name.

    The names a function gives its intermediates (``i, f, c_tilde, o = ...``) vanish when it
    returns; this keeps them, to label the graph: ``(h, c), named = locals_of(step, x, h0, c0)``
    then ``trace(h, names=named)``. It works by ``sys.setprofile``, which lets Python
    show us ``fn``'s frame as it returns (the first to return, for a recursive ``fn``);
    the function itself runs unchanged.
    """
    found: dict[str, Tensor] = {}
    code = getattr(fn, "__code__", None)
    if code is None:
        raise TypeError(f"viz.locals_of: expected a Python function, got {type(fn).__name__}")

    def watch(frame, event, arg):
        if event == "return" and frame.f_code is code and not found:
            found.update((k, v) for k, v in frame.f_locals.items() if isinstance(v, Tensor))

    previous = sys.getprofile()
    sys.setprofile(watch)
    try:
        result = fn(*args, **kwargs)
    finally:
        sys.setprofile(previous)
    return result, found


# ------------------------------------------------------- drawing without Graphviz


@dataclass
class Node:
    """One box or ellipse of a drawing: its DOT id, text, shape, COLOURS key and, once
    laid out, its layer, centre and size (in points, y upwards)."""
    id: str
    label: str
    shape: str  # "box" (a tensor) or "ellipse" (an op)
    kind: str
    layer: int = 0
    x: float = 0.0
    y: float = 0.0
    width: float = 0.0
    height: float = 0.0


@dataclass
class Layout:
    """A laid-out graph: the nodes with their places, and each arrow as the points it
    passes through (from the source's centre to the target's); ``size`` is (width, height)."""
    nodes: dict[str, Node]
    arrows: list[tuple[str, str, list[tuple[float, float]]]]
    size: tuple[float, float]


def text_size(label: str) -> tuple[float, float]:
    """(width, height) in points of ``label``'s lines in FONT at FONT_SIZE: the widest
    line's advance width (from the font's metrics, no glyph outlines built), and
    1.25 × FONT_SIZE per line."""
    measure, font = _text_measurer()
    lines = label.split("\n")
    width = max(measure.get_text_width_height_descent(line or " ", font, ismath=False)[0] for line in lines)
    return float(width), len(lines) * FONT_SIZE * 1.25


@functools.cache
def _text_measurer():
    """matplotlib's TextToPath and FONT's properties, made once (the font file is read on first use)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    return TextToPath(), FontProperties(family=FONT, size=FONT_SIZE)


def layered_layout(nodes: list[Node], edges: list[tuple[str, str]], rankdir: str = "TB",
                   gap: float = 18.0, layer_gap: float = 36.0) -> Layout:
    """Place ``nodes`` in layers so that every edge (source id, target id) points from an
    earlier layer into a later one; ``rankdir`` says where the first layer goes (TB: top).
    ``gap`` separates the nodes of a layer, ``layer_gap`` the layers (points).

    The four steps of the module docstring, one function each. A sketch, not Graphviz:
    straight segments, no spline routing, and an ordering that is good for the few dozen
    nodes of a lesson's graph. A transformer's graph of a few hundred nodes takes about a
    second; beyond LARGE_GRAPH nodes it warns (the picture gets crowded; Graphviz does better).
    """
    _check_rankdir(rankdir)
    if len(nodes) > LARGE_GRAPH:
        warnings.warn(f"viz.layered_layout: {len(nodes)} nodes; the layout without Graphviz is meant for "
                      f"lesson-sized graphs (up to about {LARGE_GRAPH}), so expect a slow layout and a "
                      "crowded picture: install Graphviz (dot), or trace a smaller part of the model",
                      stacklevel=2)
    by_id = {n.id: n for n in nodes}
    for a, b in edges:
        if a not in by_id or b not in by_id:
            raise ValueError(f"viz.layered_layout: edge {a} -> {b} names a node that is not in the graph")
    unique = list(dict.fromkeys(edges))  # an input used twice by one op: one edge for the layout
    layer = assign_layers([n.id for n in nodes], unique)
    layers, up, chains = route_long_edges(layer, unique)
    layers = order_layers(layers, up)
    across_is_x = rankdir in ("TB", "BT")
    for n in nodes:
        n.layer = layer[n.id]
        w, h = text_size(n.label)
        n.width, n.height = (w + 16, h + 10) if n.shape == "box" else (w * 1.15 + 24, h + 14)
    breadth = {p: 0.0 for lay in layers for p in lay}  # invisible points take no room
    breadth.update({n.id: n.width if across_is_x else n.height for n in nodes})
    across = place_across(layers, up, breadth, gap)
    depth = [max(((by_id[p].height if across_is_x else by_id[p].width) for p in lay if p in by_id), default=0.0)
             for lay in layers]

    # from (across, along) to (x, y): y grows upwards in matplotlib, the first layer at the top for TB
    margin = 8.0
    low = min(across[p] - breadth[p] / 2 for p in across)
    high = max(across[p] + breadth[p] / 2 for p in across)
    along, at = [], margin
    for d in depth:
        along.append(at + d / 2)
        at += d + layer_gap
    size_across, size_along = high - low + 2 * margin, at - layer_gap + margin
    where: dict[str, tuple[float, float]] = {}
    for k, lay in enumerate(layers):
        for p in lay:
            a, b = across[p] - low + margin, along[k]
            where[p] = {"TB": (a, size_along - b), "BT": (a, b),
                        "LR": (b, size_across - a), "RL": (size_along - b, size_across - a)}[rankdir]
    for n in nodes:
        n.x, n.y = where[n.id]
    arrows = [(a, b, [where[p] for p in chains[(a, b)]]) for a, b in edges]
    return Layout(by_id, arrows, (size_across, size_along) if across_is_x else (size_along, size_across))


def assign_layers(ids: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    """Step 1: {node: layer}, each node one layer past its furthest input (the longest path
    from a node without inputs, in Kahn's topological order); then each node without inputs
    moves to just before its first consumer, so a weight used late is drawn late."""
    preds: dict[str, list[str]] = {n: [] for n in ids}
    succs: dict[str, list[str]] = {n: [] for n in ids}
    for a, b in edges:  # one pass over the edges
        succs[a].append(b)
        preds[b].append(a)
    waiting = {n: len(preds[n]) for n in ids}
    ready = [n for n in ids if waiting[n] == 0]
    layer = {n: 0 for n in ready}
    done = []
    while ready:
        n = ready.pop(0)
        done.append(n)
        for m in succs[n]:
            layer[m] = max(layer.get(m, 0), layer[n] + 1)
            waiting[m] -= 1
            if waiting[m] == 0:
                ready.append(m)
    if len(done) != len(ids):
        raise ValueError("viz.layered_layout: the graph has a cycle; a computation graph never does")
    for n in ids:
        if not preds[n] and succs[n]:
            layer[n] = min(layer[m] for m in succs[n]) - 1
    return layer


def route_long_edges(layer: dict[str, int], edges: list[tuple[str, str]]):
    """Step 2: an edge across several layers passes through an invisible point in each.

    Returns the layers (lists of node ids and points, in first-seen order), ``up`` (each
    one's neighbours in the layer before) and, for each edge, the chain of ids it follows.
    """
    layers: list[list[str]] = [[] for _ in range(max(layer.values()) + 1)]
    for n in layer:
        layers[layer[n]].append(n)
    up: dict[str, list[str]] = {n: [] for n in layer}
    chains: dict[tuple[str, str], list[str]] = {}
    for a, b in edges:
        chain = [a]
        for k in range(layer[a] + 1, layer[b]):
            point = f"{a}->{b}@{k}"
            layers[k].append(point)
            up[point] = [chain[-1]]
            chain.append(point)
        up[b].append(chain[-1])
        chains[(a, b)] = chain + [b]
    return layers, up, chains


def order_layers(layers: list[list[str]], up: dict[str, list[str]], sweeps: int = 8) -> list[list[str]]:
    """Step 3: reorder each layer by the mean place of its neighbours in the layer before
    (downward sweeps) or after (upward sweeps); keep the order with the fewest crossings."""
    down: dict[str, list[str]] = {p: [] for lay in layers for p in lay}
    for p, before in up.items():
        for q in before:
            down[q].append(p)

    def crossings(order):
        """Pairs of arrows that cross: between two layers, arrows (a, b) and (c, d) (places
        in the upper and the lower layer) cross when a < c and b > d. Counted with the
        arrows sorted by a: for each, how many arrows of a smaller a end right of its b."""
        total = 0
        for k in range(1, len(order)):
            place = {p: i for i, p in enumerate(order[k - 1])}
            pairs = sorted((place[q], i) for i, p in enumerate(order[k]) for q in up[p])
            ends: list[int] = []  # the lower places of the arrows of smaller upper place, sorted
            start = 0
            for j in range(len(pairs) + 1):
                if j == len(pairs) or pairs[j][0] != pairs[start][0]:  # a run of one upper place ends
                    for _, b in pairs[start:j]:
                        bisect.insort(ends, b)
                    start = j
                if j < len(pairs):
                    total += len(ends) - bisect.bisect_right(ends, pairs[j][1])
        return total

    layers = [list(lay) for lay in layers]
    best, fewest = [list(lay) for lay in layers], crossings(layers)
    for sweep in range(sweeps):
        downwards = sweep % 2 == 0
        for k in (range(1, len(layers)) if downwards else range(len(layers) - 2, -1, -1)):
            other = {p: i for i, p in enumerate(layers[k - 1 if downwards else k + 1])}

            def barycenter(item, other=other, downwards=downwards):
                i, p = item
                near = [other[q] for q in (up[p] if downwards else down[p])]
                return (sum(near) / len(near) if near else i, i)  # no neighbours: stays put

            layers[k] = [p for _, p in sorted(enumerate(layers[k]), key=barycenter)]
        count = crossings(layers)
        if count < fewest:
            best, fewest = [list(lay) for lay in layers], count
    return best


def place_across(layers: list[list[str]], up: dict[str, list[str]], breadth: dict[str, float],
                 gap: float, sweeps: int = 24) -> dict[str, float]:
    """Step 4: each node's centre across its layer. Packed side by side first; then, layer
    by layer, each one wants the mean of its neighbours' centres, and gets the nearest
    places that keep the order and the gaps: the mean of a left-to-right pass (pushing
    right) and a right-to-left one (pushing left), since each keeps the gaps, and so does
    their mean."""
    down: dict[str, list[str]] = {p: [] for lay in layers for p in lay}
    for p, before in up.items():
        for q in before:
            down[q].append(p)
    place: dict[str, float] = {}
    for lay in layers:
        at = 0.0
        for p in lay:
            place[p] = at + breadth[p] / 2
            at += breadth[p] + gap
    for sweep in range(sweeps):
        for k in (range(len(layers)) if sweep % 2 == 0 else range(len(layers) - 1, -1, -1)):
            lay = layers[k]
            want = []
            for p in lay:
                near = [place[q] for q in up[p] + down[p]]
                want.append(sum(near) / len(near) if near else place[p])
            left, right = list(want), list(want)
            for i in range(1, len(lay)):
                left[i] = max(left[i], left[i - 1] + (breadth[lay[i - 1]] + breadth[lay[i]]) / 2 + gap)
            for i in range(len(lay) - 2, -1, -1):
                right[i] = min(right[i], right[i + 1] - (breadth[lay[i + 1]] + breadth[lay[i]]) / 2 - gap)
            for i, p in enumerate(lay):
                place[p] = (left[i] + right[i]) / 2
    return place


def draw(layout: Layout, path) -> Path:
    """Draw ``layout`` with matplotlib to ``path`` (.svg or .png), the same bytes every time
    on one machine: text kept as text in SVG, fixed font, no date, a fixed id salt."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse, FancyArrowPatch, FancyBboxPatch
    from matplotlib.path import Path as Curve

    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise ValueError(f"viz.draw: {path.name} must end in .svg or .png, got {path.suffix or 'no suffix'!r}")
    width, height = layout.size
    with matplotlib.rc_context(STABLE_RC):
        figure = plt.figure(figsize=(width / 72, height / 72))
        axes = figure.add_axes((0, 0, 1, 1))
        axes.set_xlim(0, width)
        axes.set_ylim(0, height)
        axes.set_axis_off()
        for n in layout.nodes.values():
            colour = COLOURS[n.kind]
            if n.shape == "box":
                for grow in ((0.0, 3.0) if n.kind == "root" else (0.0,)):  # the traced tensor: a double box
                    axes.add_patch(FancyBboxPatch((n.x - n.width / 2 - grow, n.y - n.height / 2 - grow),
                                                  n.width + 2 * grow, n.height + 2 * grow,
                                                  boxstyle="round,pad=0,rounding_size=4", linewidth=0.8,
                                                  facecolor=colour if grow == 0 else "none", edgecolor="black"))
            else:
                axes.add_patch(Ellipse((n.x, n.y), n.width, n.height, facecolor=colour, edgecolor="black",
                                       linewidth=0.8))
            axes.text(n.x, n.y, n.label, ha="center", va="center", fontsize=FONT_SIZE, family=FONT,
                      linespacing=1.25)
        seen: dict[tuple[str, str], int] = {}
        count = Counter((a, b) for a, b, _ in layout.arrows)
        for a, b, points in layout.arrows:
            copies = count[(a, b)]
            k = seen[(a, b)] = seen.get((a, b), -1) + 1
            points = _bend(points, (k - (copies - 1) / 2) * 14.0) if copies > 1 else list(points)
            points[0] = _boundary(layout.nodes[a], points[1])
            points[-1] = _boundary(layout.nodes[b], points[-2])
            axes.add_patch(FancyArrowPatch(path=Curve(points), arrowstyle="-|>", mutation_scale=9,
                                           linewidth=0.8, color="#333333"))
        figure.savefig(path, format=fmt, dpi=144 if fmt == "png" else 72, metadata=STABLE_METADATA[fmt])
        plt.close(figure)
    return path


STABLE_RC = {"svg.hashsalt": "tinylm", "svg.fonttype": "none", "font.family": FONT, "path.simplify": False}
STABLE_METADATA = {"svg": {"Date": None, "Creator": None}, "png": {"Software": None}}


def _bend(points, offset: float) -> list[tuple[float, float]]:
    """The arrow's points with a point pushed ``offset`` sideways in the middle: two arrows
    between the same nodes (an input used twice by one op) drawn apart."""
    (x0, y0), (x1, y1) = points[0], points[-1]
    length = max(((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5, 1e-9)
    middle = ((x0 + x1) / 2 - (y1 - y0) / length * offset, (y0 + y1) / 2 + (x1 - x0) / length * offset)
    return [points[0], middle, points[-1]] if len(points) == 2 else \
        [points[0]] + [(x + middle[0] - (x0 + x1) / 2, y + middle[1] - (y0 + y1) / 2) for x, y in points[1:-1]] \
        + [points[-1]]


def _boundary(node: Node, towards: tuple[float, float]) -> tuple[float, float]:
    """Where the line from ``node``'s centre towards a point leaves its box or ellipse."""
    dx, dy = towards[0] - node.x, towards[1] - node.y
    hw, hh = node.width / 2, node.height / 2
    if dx == 0 and dy == 0:
        return node.x, node.y
    if node.shape == "box":
        t = min(hw / abs(dx) if dx else float("inf"), hh / abs(dy) if dy else float("inf"))
    else:
        t = 1 / ((dx / hw) ** 2 + (dy / hh) ** 2) ** 0.5
    t = min(t, 1.0)
    return node.x + dx * t, node.y + dy * t


def _check_rankdir(rankdir: str) -> None:
    if rankdir not in RANKDIRS:
        raise ValueError(f"viz: rankdir must be one of {RANKDIRS}, got {rankdir!r}")


def _escape(text: str) -> str:
    """A DOT string body: backslashes and quotes escaped, newlines as DOT's ``\\n``."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
