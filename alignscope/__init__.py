"""alignscope: mechanistic analysis and representation engineering of language-model safety.

Front door: ``alignscope.load_model``, ``alignscope.capture``, ``alignscope.open_activations``; the layers are
``alignscope.hooks``, ``alignscope.probes``, ``alignscope.interventions``, ``alignscope.analyses`` and
``alignscope.organisms``.
"""

from __future__ import annotations

from alignscope.hooks import capture, load_model, open_activations
from alignscope.hooks.version import __version__

__all__ = ["__version__", "capture", "load_model", "open_activations"]
