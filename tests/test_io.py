"""Atomic writes: the file or directory appears whole or not at all, with the mode a plain write would give."""

from __future__ import annotations

import os
import stat

import pytest
from alignscope.hooks.io import atomic_dir, atomic_path, atomic_write_json, atomic_write_text


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_atomic_files_get_the_umask_mode_not_tempfiles_private_one(tmp_path, umask_022):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic_write_text(tmp_path / "a.txt", "x")
    atomic_write_json(tmp_path / "b.json", {"k": 1})
    for f in ("a.txt", "b.json"):
        assert stat.S_IMODE((tmp_path / f).stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644
    with atomic_dir(tmp_path / "d") as d:
        (d / "x").write_text("1")
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
    assert (tmp_path / "d" / "x").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.json", "d", "plain.txt"]  # no temp left
    # an existing file keeps its own mode when it is rewritten
    (tmp_path / "a.txt").chmod(0o640)
    atomic_write_text(tmp_path / "a.txt", "y")
    assert (
        stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640 and (tmp_path / "a.txt").read_text() == "y"
    )


def test_a_failed_write_leaves_the_old_file(tmp_path):
    f = tmp_path / "r.json"
    atomic_write_json(f, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(f) as tmp:
        tmp.write_text('{"v": 2, "trunc')
        raise RuntimeError("interrupted")
    assert f.read_text() == '{\n  "v": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # the temp file is gone
