"""alignscope: mechanistic analysis and representation engineering of language-model safety.

Front door: ``alignscope.load_model``, ``alignscope.capture``, ``alignscope.open_activations``; the layers are
``alignscope.hooks``, ``alignscope.probes``, ``alignscope.interventions``, ``alignscope.analyses`` and
``alignscope.organisms``. Zoo names (``load_model("aligned")``) resolve through the organism zoo's cache.
"""

from __future__ import annotations

from pathlib import Path

from alignscope.hooks import capture, load_model, open_activations, register_name_resolver
from alignscope.hooks.version import __version__


def _zoo_resolver(name: str) -> Path | None:
    """Resolve a zoo organism name (imported lazily: hooks never imports the zoo)."""
    from alignscope.organisms.zoo import resolve_zoo_name

    return resolve_zoo_name(name)


register_name_resolver(_zoo_resolver)

__all__ = ["__version__", "capture", "load_model", "open_activations"]
