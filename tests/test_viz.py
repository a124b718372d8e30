"""tinylm.viz: the graph behind a tensor as DOT text, rendered when Graphviz is here;
and Tensor.retain_grad, which it uses to show every node's gradient."""

import os
import re
import stat
import sys

import numpy as np
import pytest

import tinylm
from tinylm import viz
from tinylm.nn.lstm import lstm_cell

NODE = re.compile(r"^  (\w+) \[.*label=\"(.*)\"\];$", re.M)
EDGE = re.compile(r"^  (\w+) -> (\w+);$", re.M)


def parse(dot: str):
    """{node id: label} and [(from, to)], checking the text's overall shape on the way."""
    assert dot.startswith("digraph tinylm {\n") and dot.endswith("}\n")
    nodes = dict(NODE.findall(dot))
    edges = EDGE.findall(dot)
    body = dot.splitlines()[3:-1]
    assert len(body) == len(nodes) + len(edges), "a line that is neither a node nor an edge"
    for a, b in edges:
        assert a in nodes and b in nodes, (a, b)
    return nodes, edges


def expression():
    """L = tanh(a·b + b) · a at a = 2, b = -0.5 (chapter 1 of docs/learn)."""
    a = tinylm.tensor(np.float64(2.0), requires_grad=True)
    b = tinylm.tensor(np.float64(-0.5), requires_grad=True)
    return a, b, (a * b + b).tanh() * a


def test_the_dot_text_shows_ops_shapes_dtypes_and_names():
    x = tinylm.tensor(np.ones((2, 3)), requires_grad=True)
    W = tinylm.tensor(np.ones((3, 4)), requires_grad=True)
    y = ((x @ W).tanh() * 0.5).sum()
    graph = viz.trace(y, names={"x": x, "W": W})
    nodes, edges = parse(graph.to_dot())
    labels = sorted(nodes.values())
    assert sorted(label for node, label in nodes.items() if node.startswith("f")) == ["MatMul", "Mul", "Sum", "Tanh"]
    assert "x\\n(2, 3) float64" in labels and "W\\n(3, 4) float64" in labels
    assert "constant 0.5\\n() float64" in labels  # the scalar operand
    assert "(2, 4) float64" in labels and "() float64" in labels
    assert not any("grad norm" in label for label in labels)  # no backward yet
    assert len(edges) == 10  # into and out of each op: MatMul 2+1, Tanh 1+1, Mul 2+1, Sum 1+1
    assert graph.op_names() == ["Sum", "Mul", "Tanh", "MatMul"]
    assert graph.to_dot() == viz.trace(y, names={"x": x, "W": W}).to_dot()  # the same picture every time


def test_after_backward_every_node_shows_its_gradient_norm():
    a, b, loss = expression()
    graph = viz.trace(loss, names={"a": a, "b": b})
    loss.backward()
    nodes, _ = parse(graph.to_dot())
    tensor_labels = [label for label in nodes.values() if "float64" in label]
    assert len(tensor_labels) == len(graph.tensors) == 6
    assert all("grad norm" in label for label in tensor_labels)
    t = np.tanh(-1.5)
    gd = 2.0 * (1 - t * t)  # dL/d(a·b + b), by hand
    ga, gb = t + gd * -0.5, gd + gd * 2.0
    assert f"a\\n() float64\\ngrad norm {abs(ga):.4g}" in nodes.values()
    assert f"b\\n() float64\\ngrad norm {abs(gb):.4g}" in nodes.values()
    assert sum(f"grad norm {abs(gd):.4g}" in label for label in tensor_labels) == 2  # a·b + b, and a·b
    assert "() float64\\ngrad norm 2" in tensor_labels  # tanh's output: dL/dt = a = 2


def test_a_tensor_used_twice_has_two_arrows_and_a_split_sends_one_to_each_piece():
    x = tinylm.tensor(np.arange(8.0).reshape(2, 4), requires_grad=True)
    left, right = tinylm.split(x, 2, axis=1)
    y = left * left + right
    graph = viz.trace(y)
    nodes, edges = parse(graph.to_dot())
    ids = {label: node for node, label in nodes.items() if node.startswith("f")}
    split = ids["Split"]
    assert sum(1 for a, b in edges if a == split) == 2
    left_id = next(b for a, b in edges if a == split and any(e == (b, ids["Mul"]) for e in edges))
    assert edges.count((left_id, ids["Mul"])) == 2


def test_one_lstm_step_from_primitive_ops():
    rng = np.random.default_rng(0)
    gates = tinylm.tensor(rng.standard_normal((2, 8)), requires_grad=True)
    c_prev = tinylm.tensor(rng.standard_normal((2, 2)), requires_grad=True)
    h, _ = lstm_cell(gates, c_prev)
    graph = viz.trace(h, names={"gates": gates, "c_prev": c_prev})
    h.sum().backward()
    assert sorted(set(graph.op_names())) == ["Add", "Mul", "Sigmoid", "Split", "Tanh"]
    assert graph.op_names().count("Sigmoid") == 3 and graph.op_names().count("Tanh") == 2
    nodes, _ = parse(graph.to_dot("BT"))
    expected = np.sqrt((gates.grad.numpy() ** 2).sum())
    assert f"gates\\n(2, 8) float64\\ngrad norm {expected:.4g}" in nodes.values()


def test_a_freed_graph_is_a_clear_error_and_retain_graph_keeps_it():
    _, _, loss = expression()
    loss.backward()
    with pytest.raises(RuntimeError, match=r"viz.trace: the graph through Mul was already freed by backward; "
                                           r"call viz.trace\(y\) before y.backward\(\)"):
        viz.trace(loss)
    _, _, kept = expression()
    kept.backward(retain_graph=True)
    assert "grad norm" in viz.to_dot(kept)  # leaves have .grad; to_dot marks nothing new
    with pytest.raises(TypeError, match="viz.trace: expected a Tensor, got ndarray"):
        viz.trace(np.ones(3))


def test_names_are_escaped_for_dot():
    x = tinylm.tensor(np.ones(2), requires_grad=True)
    graph = viz.trace(x * 2.0, names={'say "hi" \\ bye': x})
    assert 'label="say \\"hi\\" \\\\ bye\\n(2,) float64"' in graph.to_dot()
    parse(graph.to_dot())


# ------------------------------------------------------------------------ rendering


def fake_dot(folder, body):
    """A stand-in `dot` program in ``folder``, a Python script (``argv``: -Tfmt -o path)."""
    script = folder / "dot"
    script.write_text(f"#!{sys.executable}\nimport sys\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return folder


ECHO = "open(sys.argv[3], 'w').write(sys.argv[1] + '\\n' + sys.stdin.read())"


@pytest.mark.skipif(os.name != "posix", reason="the stand-in dot is a script with a #! line")
def test_render_hands_the_dot_text_to_graphviz(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(fake_dot(tmp_path, ECHO)))
    _, _, loss = expression()
    graph = viz.trace(loss)
    assert viz.dot_available()
    written = graph.render(tmp_path / "graph.svg", rankdir="LR")
    assert written == tmp_path / "graph.svg"
    assert written.read_text() == "-Tsvg\n" + graph.to_dot("LR")
    assert graph.render(tmp_path / "graph.PNG").read_text().startswith("-Tpng\n")


def test_render_without_graphviz_or_with_a_bad_suffix_says_what_to_do(tmp_path, monkeypatch):
    _, _, loss = expression()
    graph = viz.trace(loss)
    with pytest.raises(ValueError, match=r"viz.render: graph.pdf must end in .svg or .png, got '.pdf'"):
        graph.render(tmp_path / "graph.pdf")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert not viz.dot_available()
    with pytest.raises(RuntimeError, match=r"Graphviz's `dot` program is not on PATH.*Graph.to_dot\(\)"):
        graph.render(tmp_path / "graph.svg")
    assert not (tmp_path / "graph.svg").exists()


@pytest.mark.skipif(os.name != "posix", reason="the stand-in dot is a script with a #! line")
def test_a_failing_dot_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(fake_dot(tmp_path, "sys.exit('Error: syntax error in line 3')")))
    _, _, loss = expression()
    with pytest.raises(RuntimeError, match=r"dot failed on graph.svg \(exit 1\): Error: syntax error in line 3"):
        viz.trace(loss).render(tmp_path / "graph.svg")


@pytest.mark.skipif(not viz.dot_available(), reason="Graphviz's dot is not installed (apt install graphviz)")
@pytest.mark.parametrize("suffix, magic", [(".svg", b"<svg"), (".png", b"\x89PNG")])
def test_graphviz_draws_the_graph(tmp_path, suffix, magic):
    a, b, loss = expression()
    graph = viz.trace(loss, names={"a": a, "b": b})
    loss.backward()
    content = graph.render(tmp_path / f"graph{suffix}").read_bytes()
    assert magic in content[:2000]


# ---------------------------------------------------------------- Tensor.retain_grad


def test_retain_grad_keeps_an_intermediate_gradient_and_only_when_asked():
    x = tinylm.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    middle = x * 2.0
    other = x + 1.0
    middle.retain_grad()
    loss = (middle * middle).sum() + other.sum()
    loss.backward()
    np.testing.assert_allclose(middle.grad.numpy(), 2 * middle.numpy())  # d(m²)/dm, both uses added
    assert other.grad is None  # not asked for: freed as before
    np.testing.assert_allclose(x.grad.numpy(), 8 * x.numpy() + 1)


def test_retain_grad_accumulates_like_a_leaf_and_needs_a_gradient():
    x = tinylm.tensor(np.array([1.0, -1.0]), requires_grad=True)
    y = x.tanh()
    y.retain_grad()
    z = y * 3.0
    z.backward(np.ones(2), retain_graph=True)
    z.backward(np.ones(2))
    np.testing.assert_allclose(y.grad.numpy(), [6.0, 6.0])
    with pytest.raises(RuntimeError, match="retain_grad: this tensor does not require grad"):
        tinylm.tensor([1.0]).retain_grad()
