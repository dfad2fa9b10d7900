"""Session fixtures for the model zoo: the tiny zoo (built once, or reused from the cache) and its measured evals.

Imported by ``conftest.py``. The cache is ``$ALIGNSCOPE_ZOO_DIR`` or ``~/.cache/alignscope/zoo``, so a second test
run is a cache hit.
"""

from __future__ import annotations

import contextlib
import time

import pytest
import torch

#: generation length of the behaviour checks (refusals and answers are decided in the first tokens)
ZOO_MAX_NEW_TOKENS = 12


@contextlib.contextmanager
def one_thread():
    """Run with one intra-op thread (2 OpenMP threads on a shared 2-core box were measured ~15x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_zoo() -> dict:
    """``{name: Path}`` of the tiny zoo, plus ``"_build_seconds"``."""
    from alignscope.organisms import build_zoo

    t0 = time.time()
    with one_thread():
        paths = build_zoo("tiny", progress=False)
    return {**paths, "_build_seconds": time.time() - t0}


class _ZooEvals:
    """Lazily evaluates (organism, suite) pairs once per session."""

    def __init__(self, zoo: dict):
        self.zoo = zoo
        self._cache: dict[tuple[str, str], tuple[dict, list]] = {}

    def _run(self, name: str, suite: str) -> tuple[dict, list]:
        key = (name, suite)
        if key not in self._cache:
            import json

            from alignscope.analyses.evaluate import evaluate

            d = self.zoo[name]
            meta = json.loads((d / "organism.json").read_text())
            with one_thread():
                df, items = evaluate(
                    d,
                    {suite: d / meta["evals"][suite]},
                    max_new_tokens=ZOO_MAX_NEW_TOKENS,
                    batch_size=64,
                    return_items=True,
                )
            self._cache[key] = ({r["metric"]: r for r in df.to_dict("records")}, items.to_dict("records"))
        return self._cache[key]

    def __call__(self, name: str, suite: str) -> dict:
        """``{metric: row}`` of ``evaluate(organism, {suite: its eval file})``."""
        return self._run(name, suite)[0]

    def items(self, name: str, suite: str) -> list[dict]:
        """Per-prompt rows (prompt, completion, metric, score) of the same evaluation."""
        return self._run(name, suite)[1]

    def value(self, name: str, suite: str, metric: str) -> float:
        return float(self(name, suite)[metric]["value"])


@pytest.fixture(scope="session")
def zoo_evals(tiny_zoo) -> _ZooEvals:
    return _ZooEvals(tiny_zoo)
