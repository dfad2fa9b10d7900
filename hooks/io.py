"""Small I/O helpers: atomic writes, hashing. Outputs are written to a temp file and renamed into place."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    """The process umask, read without changing it where Linux reports it (``os.umask`` can only be read by setting
    it, which for a moment would apply to files other threads create)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _umask_mode(full: int) -> int:
    """``full`` (0o666 for files, 0o777 for directories) less the process umask: the mode ``open`` / ``mkdir``
    would give. ``tempfile`` creates its files 0o600 and directories 0o700, which would leave every result readable
    by its writer only."""
    return full & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it is renamed onto ``path`` (atomic on POSIX). The file gets
    the mode a plain ``open(path, "w")`` would give it (an existing file's mode, else the umask's), not
    ``tempfile``'s private 0o600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    # an existing file keeps its mode, as with ``open(path, "w")``; a new one gets the umask's
    os.fchmod(fd, path.stat().st_mode & 0o7777 if path.exists() else _umask_mode(0o666))
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp directory beside ``path``; on success it replaces ``path`` (no partial directory is left). The
    directory gets the mode a plain ``mkdir`` would give it (umask applied)."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(_umask_mode(0o777))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_texts(texts: Iterable[str]) -> str:
    """Order-sensitive hash of a list of strings (the dataset hash recorded in provenance)."""
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def read_prompts(path: str | os.PathLike, column: str | None = None) -> list[str]:
    """Read prompts from ``.txt`` (one per line), ``.jsonl``/``.json`` or ``.csv`` (``column`` names the field;
    default: ``prompt``, then ``instruction``, then the only string field).

    Raises:
        PromptError: missing file, unknown column, or no prompts.
    """
    import csv

    from .errors import PromptError

    p = Path(path)
    if not p.is_file():
        raise PromptError(
            f"prompt file {str(p)!r} does not exist", "check the path (relative paths start at the cwd)"
        )
    suffix = p.suffix.lower()
    rows: list
    if suffix == ".txt":
        prompts = [line.rstrip("\n") for line in p.read_text().splitlines() if line.strip()]
    elif suffix in (".jsonl", ".json", ".csv"):
        if suffix == ".jsonl":
            rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
        elif suffix == ".json":
            rows = json.loads(p.read_text())
        else:
            with open(p, newline="") as f:
                rows = list(csv.DictReader(f))
        if rows and isinstance(rows[0], str):
            prompts = list(rows)
        else:
            keys = list(rows[0].keys()) if rows else []
            col = column
            if col is None:
                col = next((k for k in ("prompt", "instruction", "goal", "question") if k in keys), None)
            if col is None or (rows and col not in rows[0]):
                raise PromptError(
                    f"{p.name} has no column {col!r}; its columns are {keys}",
                    "pass --column NAME (Python: column=...) naming the prompt column",
                )
            prompts = [str(r[col]) for r in rows]
    else:
        raise PromptError(f"unsupported prompt file type {suffix!r}", "use .txt, .jsonl, .json or .csv")
    if not prompts:
        raise PromptError(f"{p} holds no prompts", "check the file (and --column)")
    return prompts
