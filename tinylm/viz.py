"""``tinylm.viz``: draw the computation graph behind a tensor.

Every op call records a node: the output remembers its ``creator`` (a ``Function``),
the function remembers its ``inputs`` (see ``tinylm/autograd.py``). ``trace(y)`` walks
that record back from ``y`` and keeps it, so the picture survives ``y.backward()``
(which frees the graph) and can show, after it, the gradient that reached each tensor:

    graph = viz.trace(loss, names={"W": W, "x": x})   # before backward
    loss.backward()
    print(graph.to_dot())                             # Graphviz DOT text, always
    graph.render("graph.svg")                         # SVG or PNG, if Graphviz is installed

In the picture, boxes are tensors (name, shape, dtype and, once backward has run, the
norm of their gradient) and ellipses are ops; arrows follow the data, from inputs to
outputs, so gradients flow against them. Blue boxes are leaves that require grad
(parameters, inputs), grey ones constants, the double box the tensor traced.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

from tinylm.autograd import Function, Tensor

FORMATS = ("svg", "png")


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

    def render(self, path, rankdir: str = "TB") -> Path:
        """Draw the graph to ``path`` (``.svg`` or ``.png``) with Graphviz's ``dot``."""
        path = Path(path)
        fmt = path.suffix.lstrip(".").lower()
        if fmt not in FORMATS:
            raise ValueError(f"viz.render: {path.name} must end in .svg or .png, got {path.suffix or 'no suffix'!r}")
        dot = shutil.which("dot")
        if dot is None:
            raise RuntimeError("viz.render: Graphviz's `dot` program is not on PATH; install Graphviz "
                               "(e.g. `apt install graphviz`) or use the DOT text from Graph.to_dot()")
        done = subprocess.run([dot, f"-T{fmt}", "-o", str(path)], input=self.to_dot(rankdir).encode("utf-8"),
                              capture_output=True, timeout=120)
        if done.returncode != 0:
            reason = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise RuntimeError(f"viz.render: dot failed on {path.name} (exit {done.returncode}): "
                               f"{reason[-1] if reason else 'no message'}")
        return path

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

    def _tensor_style(self, t: Tensor) -> str:
        if t is self.root:
            colour, extra = "#fff2b3", "peripheries=2, "
        elif t.creator is None:
            colour, extra = ("#cfe2ff" if t.requires_grad else "#eeeeee"), ""
        else:
            colour, extra = "#ffffff", ""
        return f'fillcolor="{colour}", {extra}'


def gradient_norm(t: Tensor) -> float:
    """‖t.grad‖₂ (the square root of the sum of squares), in float64."""
    grad = t.grad.numpy().astype(np.float64)
    return float(np.sqrt((grad * grad).sum()))


def trace(root: Tensor, names: dict | None = None, retain_grads: bool = True) -> Graph:
    """Record the graph behind ``root``; call it *before* ``root.backward()``.

    ``names`` labels tensors: ``{"W": W, "x": x}`` or ``dict(model.named_parameters())``.
    With ``retain_grads`` every non-leaf tensor in the graph keeps its gradient
    (``Tensor.retain_grad``), so that the picture can show the gradient at every node.
    """
    if not isinstance(root, Tensor):
        raise TypeError(f"viz.trace: expected a Tensor, got {type(root).__name__}")
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


def _escape(text: str) -> str:
    """A DOT string body: backslashes and quotes escaped, newlines as DOT's ``\\n``."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
