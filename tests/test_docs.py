"""Every code block in docs/ runs as written, so the docs cannot rot.

The blocks of one Markdown file run in order in one namespace (a later block may use
what an earlier one defined), each file in a fresh namespace and a fresh working
directory. Every fenced block must be ```python: a block in any other language could
not be run, so it is refused rather than silently skipped.
"""

import re
from pathlib import Path

import pytest

import tinylm
from tinylm.ops.elementwise import Sigmoid
from tinylm.ops.embedding import Embedding

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
LEARN = DOCS / "learn"
FENCE = re.compile(r"^(`{3,}|~{3,})([^\n`]*)\n(.*?)^\1[ \t]*$", re.S | re.M)
INDENTED_CODE = re.compile(r"(?:^|\n)[ \t]*\n((?: {4}|\t)\S[^\n]*\n)")
MARKDOWN = sorted(DOCS.rglob("*.md"))
CHAPTERS = sorted(LEARN.glob("[0-9][0-9]-*.md"))


def code_blocks(text: str) -> list[tuple[str, str, int]]:
    """(language, code, line number of the opening fence) of every fenced block."""
    return [(m.group(2).strip(), m.group(3), text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)]


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def run_markdown(path: Path) -> dict:
    """Run the python blocks of ``path`` in order in one namespace; return it."""
    text = path.read_text(encoding="utf-8")
    namespace = {"__name__": f"docs:{path.stem}"}
    for language, code, line in code_blocks(text):
        assert language == "python", f"{shown(path)}:{line}: a ```{language or '(no language)'} block cannot be run"
        # Padding keeps the traceback's line numbers those of the Markdown file.
        exec(compile("\n" * line + code, shown(path), "exec"), namespace)
    return namespace


def test_there_are_docs_to_run():
    assert len(CHAPTERS) >= 9, CHAPTERS
    assert all(code_blocks(p.read_text(encoding="utf-8")) for p in CHAPTERS), "a chapter without code"


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(DOCS)))
def test_every_code_block_runs(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # files a chapter writes land here
    backend = tinylm.get_backend()
    patched = {cls: cls.backward for cls in (Sigmoid, Embedding)}
    run_markdown(path)
    # A chapter that patches something to show a failure (chapter 4) must put it back.
    assert tinylm.get_backend() == backend
    for cls, backward in patched.items():
        assert cls.backward is backward, f"{path.name} left {cls.__name__}.backward patched"
    assert tinylm.autograd.is_grad_enabled()


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(DOCS)))
def test_no_indented_code_blocks(path):
    """An indented block is a code block Markdown shows but this test would not run."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    found = INDENTED_CODE.search(text)
    assert found is None, f"{shown(path)}: indented code block {found.group(1).strip()!r}; fence it as ```python"


def test_a_failing_block_fails_the_test(tmp_path):
    page = tmp_path / "broken.md"
    page.write_text("Text.\n\n```python\nx = 1\n```\n\n```python\nassert x == 2, 'the docs rotted'\n```\n")
    with pytest.raises(AssertionError, match="the docs rotted"):
        run_markdown(page)
    page.write_text("```bash\necho hi\n```\n")
    with pytest.raises(AssertionError, match="cannot be run"):
        run_markdown(page)


def test_blocks_of_one_file_share_a_namespace(tmp_path):
    page = tmp_path / "two.md"
    page.write_text("```python\nvalue = 41\n```\nand then\n```python\nvalue += 1\n```\n")
    assert run_markdown(page)["value"] == 42


def test_the_index_links_every_chapter_and_the_readme_links_the_index():
    index = (LEARN / "README.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\(([^)#]+\.md)\)", index))
    assert {p.name for p in CHAPTERS} <= linked, {p.name for p in CHAPTERS} - linked
    for target in linked:
        assert (LEARN / target).is_file(), f"docs/learn/README.md links a missing {target}"
    assert "docs/learn/" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_relative_links_in_the_docs_point_at_files():
    for path in MARKDOWN:
        for target in re.findall(r"\]\((?!https?://)([^)#\s]+)", path.read_text(encoding="utf-8")):
            assert (path.parent / target).exists(), f"{shown(path)} links a missing {target}"


@pytest.mark.parametrize("path", [p for p in CHAPTERS if not p.name.endswith("-adam.md")],
                         ids=lambda p: p.name)
def test_chapters_that_claim_a_gradient_check_it_with_gradcheck(path):
    code = "".join(code for _, code, _ in code_blocks(path.read_text(encoding="utf-8")))
    assert "gradcheck(" in code, f"{path.name} shows gradients but never runs tinylm.gradcheck"
