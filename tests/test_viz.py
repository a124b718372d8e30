"""tinylm.viz: the graph behind a tensor as DOT text, rendered when Graphviz is here;
and Tensor.retain_grad, which it uses to show every node's gradient."""

import os
import re
import stat
import sys
import warnings

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


def test_render_without_graphviz_draws_with_matplotlib_and_bad_arguments_say_what_to_do(tmp_path, monkeypatch):
    _, _, loss = expression()
    graph = viz.trace(loss)
    with pytest.raises(ValueError, match=r"viz.render: graph.pdf must end in .svg or .png, got '.pdf'"):
        graph.render(tmp_path / "graph.pdf")
    with pytest.raises(ValueError, match=r"viz.render: engine must be one of \('dot', 'matplotlib'\) or None, "
                                         r"got 'neato'"):
        graph.render(tmp_path / "graph.svg", engine="neato")
    with pytest.raises(ValueError, match=r"viz: rankdir must be one of \('TB', 'BT', 'LR', 'RL'\), got 'up'"):
        graph.render(tmp_path / "graph.svg", rankdir="up")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert not viz.dot_available()
    with pytest.raises(RuntimeError, match=r"Graphviz's `dot` program is not on PATH.*engine=\"matplotlib\""):
        graph.render(tmp_path / "graph.svg", engine="dot")
    assert not (tmp_path / "graph.svg").exists()
    assert graph.render(tmp_path / "graph.svg").read_bytes().lstrip().startswith(b"<?xml")  # the fallback


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


# ------------------------------------------------- names of intermediates, layout, matplotlib


def chapter_one():
    """Chapter 1's expression one op per line, every intermediate named."""
    a = tinylm.tensor(np.float64(2.0), requires_grad=True)
    b = tinylm.tensor(np.float64(-0.5), requires_grad=True)
    e = a * b
    d = e + b
    t = d.tanh()
    L = t * a
    return viz.trace(L, names={"a": a, "b": b, "e": e, "d": d, "t": t, "L": L}), L


def primitive_lstm_step(gates, c_prev):
    g_i, g_f, g_g, g_o = tinylm.split(gates, gates.shape[-1] // 4, axis=-1)
    i, f, g, o = g_i.sigmoid(), g_f.sigmoid(), g_g.tanh(), g_o.sigmoid()
    c = f * c_prev + i * g
    h = o * c.tanh()
    return h, c


def lstm_graph():
    rng = np.random.default_rng(1)
    gates = tinylm.tensor(rng.standard_normal((2, 8)), requires_grad=True)
    c_prev = tinylm.tensor(rng.standard_normal((2, 2)), requires_grad=True)
    (h, c), named = viz.locals_of(primitive_lstm_step, gates, c_prev)
    return viz.trace(h, names=named), h, c, named


def svg_texts(path) -> list[str]:
    """The text lines of a matplotlib SVG written with svg.fonttype 'none' (text kept as text)."""
    return re.findall(r"<text [^>]*>([^<]*)</text>", path.read_text(encoding="utf-8"))


def test_intermediate_names_show_in_the_dot_text_and_the_drawing(tmp_path):
    graph, L = chapter_one()
    L.backward()
    nodes, _ = parse(graph.to_dot())
    for name in "abedtL":
        assert sum(label.startswith(name + "\\n") for label in nodes.values()) == 1, name
    texts = svg_texts(graph.render(tmp_path / "graph.svg", engine="matplotlib"))
    assert sorted(t for t in texts if len(t) == 1) == sorted("abedtL")
    t = np.tanh(-1.5)
    assert f"grad norm {abs(2.0 * (1 - t * t)):.4g}" in texts  # dL/dd, on the box named d


def test_locals_of_hands_back_the_named_intermediates_of_an_lstm_step():
    profiler = sys.getprofile()
    graph, h, c, named = lstm_graph()
    assert set(named) == {"gates", "c_prev", "g_i", "g_f", "g_g", "g_o", "i", "f", "g", "o", "c", "h"}
    assert named["h"] is h and named["c"] is c
    direct_h, _ = primitive_lstm_step(named["gates"], named["c_prev"])
    np.testing.assert_array_equal(direct_h.numpy(), h.numpy())
    labels = [viz.Graph._tensor_label(graph, t).split("\n")[0] for t in graph.tensors]
    assert {"i", "f", "g", "o", "c", "h", "c_prev", "gates"} <= set(labels)
    assert sys.getprofile() is profiler  # put back


def test_locals_of_puts_the_profiler_back_when_the_function_fails_and_names_must_be_tensors():
    def broken(x):
        y = x * 2.0  # noqa: F841 (a local the profiler would see)
        raise ValueError("broken on purpose")

    profiler = sys.getprofile()
    with pytest.raises(ValueError, match="broken on purpose"):
        viz.locals_of(broken, tinylm.tensor([1.0]))
    assert sys.getprofile() is profiler
    with pytest.raises(TypeError, match="viz.locals_of: expected a Python function, got builtin_function"):
        viz.locals_of(len, [1])
    x = tinylm.tensor([1.0], requires_grad=True)
    with pytest.raises(TypeError, match=r"viz.trace: names\['x'\] is a ndarray, not a Tensor"):
        viz.trace(x * 2.0, names={"x": np.ones(1)})


@pytest.mark.parametrize("rankdir", viz.RANKDIRS)
def test_the_layered_layout_sends_every_arrow_into_a_later_layer_without_overlaps(rankdir):
    for graph in (chapter_one()[0], lstm_graph()[0]):
        layout = graph.layout(rankdir)
        nodes = layout.nodes
        assert set(nodes) == {graph._ids[id(x)] for x in graph.tensors + graph.functions}
        for a, b in graph.edges:
            assert nodes[a].layer < nodes[b].layer, (a, b)
        for node in nodes.values():  # an input sits just before its first consumer
            consumers = [nodes[b].layer for a, b in graph.edges if a == node.id]
            if consumers and not any(b == node.id for _, b in graph.edges):
                assert node.layer == min(consumers) - 1
        width, height = layout.size
        for node in nodes.values():
            assert node.width / 2 <= node.x <= width - node.width / 2
            assert node.height / 2 <= node.y <= height - node.height / 2
        along = {"TB": lambda n: -n.y, "BT": lambda n: n.y, "LR": lambda n: n.x, "RL": lambda n: -n.x}[rankdir]
        for a, b in graph.edges:  # TB: every arrow points down the page, BT up, LR right, RL left
            assert along(nodes[a]) < along(nodes[b])
        across = "x" if rankdir in ("TB", "BT") else "y"
        size = "width" if across == "x" else "height"
        for one in nodes.values():
            for other in nodes.values():
                if one.id < other.id and one.layer == other.layer:
                    gap = abs(getattr(one, across) - getattr(other, across))
                    assert gap >= (getattr(one, size) + getattr(other, size)) / 2, (one.id, other.id)
        for a, b, points in layout.arrows:
            assert points[0] == (nodes[a].x, nodes[a].y) and points[-1] == (nodes[b].x, nodes[b].y)
            assert len(points) == nodes[b].layer - nodes[a].layer + 1  # one bend point per layer crossed


def test_barycenter_ordering_uncrosses_arrows():
    nodes = [viz.Node(name, name, "box", "tensor") for name in ("a1", "a2", "b2", "b1", "c")]
    edges = [("a1", "b1"), ("a2", "b2"), ("b1", "c"), ("b2", "c")]
    layout = viz.layered_layout(nodes, edges)
    placed = layout.nodes
    assert (placed["a1"].x < placed["a2"].x) == (placed["b1"].x < placed["b2"].x)  # listed crossed, drawn straight
    assert placed["a1"].layer == placed["a2"].layer == 0 and placed["c"].layer == 2


def brute_force_crossings(layers, up):
    """Pairs of arrows between consecutive layers that cross, counted pair by pair."""
    total = 0
    for k in range(1, len(layers)):
        place = {p: i for i, p in enumerate(layers[k - 1])}
        pairs = [(place[q], i) for i, p in enumerate(layers[k]) for q in up[p]]
        total += sum(1 for a, b in pairs for c, d in pairs if a < c and b > d)
    return total


def test_ordering_never_ends_with_more_crossings_than_it_started_with():
    rng = np.random.default_rng(3)
    for _ in range(20):
        layers = [[f"n{k}_{i}" for i in range(rng.integers(2, 7))] for k in range(4)]
        up = {p: [] for p in layers[0]}
        for k in range(1, len(layers)):
            for p in layers[k]:  # one to three neighbours in the layer before, repeats allowed
                up[p] = list(rng.choice(layers[k - 1], size=rng.integers(1, 4)))
        ordered = viz.order_layers(layers, up)
        assert [sorted(lay) for lay in ordered] == [sorted(lay) for lay in layers]
        assert brute_force_crossings(ordered, up) <= brute_force_crossings(layers, up)
    crossed = [["a", "b"], ["x", "y"]]
    assert brute_force_crossings(viz.order_layers(crossed, {"a": [], "b": [], "x": ["b"], "y": ["a"]}),
                                 {"a": [], "b": [], "x": ["b"], "y": ["a"]}) == 0


def test_text_size_is_the_fonts_advance_width_of_the_widest_line():
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    font = FontProperties(family=viz.FONT, size=viz.FONT_SIZE)
    widths = [TextToPath().get_text_width_height_descent(line, font, ismath=False)[0]
              for line in ("gX", "(3, 4) float64", "|g| 1.25")]
    width, height = viz.text_size("gX\n(3, 4) float64\n|g| 1.25")
    assert width == pytest.approx(max(widths), rel=1e-9) and widths[1] == max(widths)
    assert height == 3 * viz.FONT_SIZE * 1.25
    assert viz.text_size("") == (pytest.approx(viz.text_size(" ")[0]), viz.FONT_SIZE * 1.25)


def test_a_graph_beyond_a_few_hundred_nodes_is_laid_out_with_a_warning():
    def chain(count):
        nodes = [viz.Node(f"n{i}", f"node {i}", "box", "tensor") for i in range(count)]
        return nodes, [(f"n{i}", f"n{i + 1}") for i in range(count - 1)]

    with pytest.warns(UserWarning, match=rf"viz.layered_layout: {viz.LARGE_GRAPH + 1} nodes; the layout without "
                                         r"Graphviz is meant for lesson-sized graphs .* install Graphviz"):
        layout = viz.layered_layout(*chain(viz.LARGE_GRAPH + 1))
    assert layout.nodes[f"n{viz.LARGE_GRAPH}"].layer == viz.LARGE_GRAPH
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        viz.layered_layout(*chain(20))


def test_a_cycle_or_an_unknown_node_is_a_clear_error():
    nodes = [viz.Node(name, name, "box", "tensor") for name in "xy"]
    with pytest.raises(ValueError, match="viz.layered_layout: the graph has a cycle"):
        viz.layered_layout(nodes, [("x", "y"), ("y", "x")])
    with pytest.raises(ValueError, match="viz.layered_layout: edge x -> z names a node that is not in the graph"):
        viz.layered_layout(nodes, [("x", "z")])


def test_matplotlib_draws_every_node_and_arrow_the_same_bytes_every_time(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no Graphviz
    graph, L = chapter_one()
    L.backward()
    svg = graph.render(tmp_path / "graph.svg")
    text = svg.read_text(encoding="utf-8")
    lines = [line for n in graph.layout().nodes.values() for line in n.label.split("\n")]
    assert sorted(svg_texts(svg)) == sorted(lines)
    # patches: the figure's background, each box (the traced one twice: a double box), each ellipse, each arrow
    assert text.count('<g id="patch_') == 1 + len(graph.tensors) + 1 + len(graph.functions) + len(graph.edges)
    assert "<dc:date>" not in text
    assert graph.render(tmp_path / "again.svg").read_bytes() == svg.read_bytes()
    png = graph.render(tmp_path / "graph.png", rankdir="LR", engine="matplotlib").read_bytes()
    assert png.startswith(b"\x89PNG") and png == graph.render(tmp_path / "again.png", rankdir="LR").read_bytes()
    with pytest.raises(ValueError, match=r"viz.draw: graph.gif must end in .svg or .png"):
        viz.draw(graph.layout(), tmp_path / "graph.gif")


def test_an_input_used_twice_by_one_op_gets_two_separate_arrows(tmp_path):
    x = tinylm.tensor(np.ones(3), requires_grad=True)
    graph = viz.trace(x * x)
    layout = graph.layout()
    assert [(a, b) for a, b, _ in layout.arrows].count(("t1", "f0")) == 2
    svg = graph.render(tmp_path / "square.svg", engine="matplotlib").read_text(encoding="utf-8")
    assert svg.count('<g id="patch_') == 1 + 2 + 1 + 1 + 3


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
