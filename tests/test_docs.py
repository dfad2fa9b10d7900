"""The Python code blocks of the README and ``docs/`` run as tests (nnsight style), on the tiny zoo.

The fenced ``python`` blocks of a file are executed in order in one namespace, in a temporary working directory
(later blocks may use what earlier ones defined, as a reader would). Zoo names like ``"tiny/aligned"`` resolve to the
tiny zoo the session fixture builds, so the blocks show real calls with real results.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from zoo_fixtures import one_thread

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def _blocks(f: Path) -> list[tuple[int, str]]:
    """``(line, code)`` of each ``python`` block of ``f``, in order."""
    text = f.read_text()
    return [(text[: m.start()].count("\n") + 1, m.group(1)) for m in FENCE.finditer(text)]


FILES = [f for f in DOCS if _blocks(f)]


def test_docs_have_python_blocks():
    """The collector finds the blocks (a broken pattern would silently test nothing)."""
    assert sum(len(_blocks(f)) for f in FILES) >= 7


@pytest.mark.parametrize("path", FILES, ids=[str(f.relative_to(ROOT)) for f in FILES])
def test_doc_blocks_run(path, tiny_zoo, tmp_path, monkeypatch):
    """A file's blocks run in order in one namespace, as a reader would run them."""
    monkeypatch.chdir(tmp_path)
    ns = {"__name__": "__doc_block__"}
    with one_thread():
        for line, code in _blocks(path):
            exec(compile(code, f"{path.name}:{line}", "exec"), ns)
