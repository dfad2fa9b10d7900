"""Error types of alignscope. Every error names the problem and the fix.

One page per error type lives in ``docs/errors.md``.
"""

from __future__ import annotations


class AlignscopeError(Exception):
    """Base class: ``str(err)`` is the problem followed by ``Fix: ...``."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if fix is None else f"{problem}\nFix: {fix}")


class CheckpointError(AlignscopeError, ValueError):
    """A path is not a loadable checkpoint, or two checkpoints do not match."""


class UnsafeCheckpointError(AlignscopeError, PermissionError):
    """Pickle weights or custom code were found and the user did not opt in."""


class SiteError(AlignscopeError, ValueError):
    """Unknown site name, or a layer out of range."""


class PromptError(AlignscopeError, ValueError):
    """Empty prompt set, prompt longer than the context window, unreadable prompt file."""


class TokenizerError(AlignscopeError, ValueError):
    """No chat template when one is required, no pad token, template mismatch."""


class NumericsError(AlignscopeError, FloatingPointError):
    """NaN or infinite activations."""


class BackendError(AlignscopeError, RuntimeError):
    """An optional backend (TransformerLens, nnsight, ray) is missing or failed."""
