"""alignscope: mechanistic analysis and representation engineering of language-model safety."""

from __future__ import annotations

__version__ = "0.1.0"
