"""Where organism training and evaluation data come from.

Two locations:

* the small, permissively licensed subsets shipped in ``organisms/data/`` (AdvBench, HarmBench, JailbreakBench, MisQA,
  XSTest, Poser, AlpacaEval; see ``organisms/data/README.md``), enough to build the ``tiny`` zoo anywhere;
* the full shared data folder (``$ALIGNSCOPE_SHARED_DATA``, default ``<repo>/../shared/data`` when it exists), read
  for the ``standard`` preset (refusal-direction splits, BeaverTails, ...). Inputs are only read, never modified.
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

from alignscope.hooks.errors import AlignscopeError

PACKAGE_DATA = Path(__file__).resolve().parent / "data"


class DataSourceError(AlignscopeError, FileNotFoundError):
    """A data file needed for a build is missing."""


def shared_data_dir(required: bool = False) -> Path | None:
    """The shared data folder: ``$ALIGNSCOPE_SHARED_DATA`` or ``<repo>/../shared/data`` if it exists.

    Args:
        required: raise instead of returning None when no folder is found.

    Raises:
        DataSourceError: ``required`` and no folder exists.
    """
    env = os.environ.get("ALIGNSCOPE_SHARED_DATA")
    cands = [Path(env)] if env else [Path(__file__).resolve().parents[1].parent / "shared" / "data"]
    for c in cands:
        if c.is_dir():
            return c
    if required:
        raise DataSourceError(
            f"the shared data folder was not found (looked at {[str(c) for c in cands]})",
            "set ALIGNSCOPE_SHARED_DATA to the folder holding refusal_direction/, xstest/, ... "
            "or use the 'tiny' preset, which needs only the data shipped with alignscope",
        )
    return None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a jsonl file (one JSON object per non-empty line)."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def packaged(name: str) -> list[dict]:
    """Rows of a shipped subset, e.g. ``packaged("advbench")``."""
    path = PACKAGE_DATA / f"{name}.jsonl"
    if not path.exists():
        raise DataSourceError(f"shipped data file {path} is missing", "reinstall alignscope (package data)")
    return read_jsonl(path)


def shared_json(rel: str) -> list:
    """A JSON file of the shared data folder (required)."""
    root = shared_data_dir(required=True)
    path = root / rel
    if not path.exists():
        raise DataSourceError(
            f"{path} is missing", f"check the shared data folder {root} (see its README.md)"
        )
    return json.loads(path.read_text())


def shared_csv(rel: str) -> list[dict]:
    """A CSV file of the shared data folder (required)."""
    root = shared_data_dir(required=True)
    path = root / rel
    if not path.exists():
        raise DataSourceError(
            f"{path} is missing", f"check the shared data folder {root} (see its README.md)"
        )
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def norm_prompt(text: str) -> str:
    """Normalisation used for deduplication: lower case, alphanumerics only, single spaces."""
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())
