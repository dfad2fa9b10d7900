"""Shared fixtures. Tiny random models are built once per session into a temp dir."""

from __future__ import annotations

import os
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

from tiny_models import ARCHS, build_tiny  # noqa: E402


@pytest.fixture(scope="session")
def tiny_paths(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tiny")
    return {a: str(build_tiny(a, root / a, seed=i)) for i, a in enumerate(ARCHS)}


@pytest.fixture(params=ARCHS)
def arch(request) -> str:
    return request.param


# ---- model zoo fixtures (owner: organisms/zoo; see tests/zoo_fixtures.py) -------------------------------------------
from zoo_fixtures import tiny_zoo, zoo_evals  # noqa: E402, F401
# ---- end model zoo fixtures ------------------------------------------------------------------------------------------
