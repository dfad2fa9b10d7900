"""The installed alignscope version (recorded in every result's provenance)."""

from __future__ import annotations

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("alignscope")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.1.0+src"
