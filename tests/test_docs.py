"""The Python code blocks of the README and ``docs/`` run as tests (nnsight style), on the tiny zoo.

The fenced ``python`` blocks of a file are executed in order in one namespace, in a temporary working directory
(later blocks may use what earlier ones defined, as a reader would), except a block where the line
before its fence is an HTML comment ``<!-- not run: REASON -->`` (for blocks that need data a test cannot have, such
as a user's own task metric; the reason is shown in the rendered source). Zoo names like ``"tiny/aligned"`` resolve
to the tiny zoo the session fixture builds, so the blocks show real calls with real results.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from zoo_fixtures import one_thread

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)
SKIP = re.compile(r"<!--\s*not run:\s*(.+?)\s*-->\s*$")


def _blocks(f: Path) -> list[tuple[int, str, str | None]]:
    """``(line, code, skip reason or None)`` of each ``python`` block of ``f``, in order."""
    text = f.read_text()
    out = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = SKIP.search(before)
        out.append((text[: m.start()].count("\n") + 1, m.group(1), skip.group(1) if skip else None))
    return out


FILES = [f for f in DOCS if _blocks(f)]


def test_docs_have_python_blocks():
    """The collector finds the blocks (a broken pattern would silently test nothing), and most of them run."""
    blocks = [b for f in FILES for b in _blocks(f)]
    assert len(blocks) >= 7
    assert sum(b[2] is None for b in blocks) >= 5


@pytest.mark.parametrize("path", FILES, ids=[str(f.relative_to(ROOT)) for f in FILES])
def test_doc_blocks_run(path, tiny_zoo, tmp_path, monkeypatch):
    """A file's blocks run in order in one namespace, as a reader would run them."""
    monkeypatch.chdir(tmp_path)
    ns = {"__name__": "__doc_block__"}
    ran = 0
    with one_thread():
        for line, code, skip in _blocks(path):
            if skip is None:
                exec(compile(code, f"{path.name}:{line}", "exec"), ns)
                ran += 1
    if not ran:
        pytest.skip("every block of this file is marked <!-- not run: ... -->")
