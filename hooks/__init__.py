"""alignscope.hooks: loading, sites, capture, stores and runtime edit primitives (the bottom layer)."""

from .adapters import ADAPTERS, ArchitectureAdapter, adapter_for, register_adapter
from .capture import Activations, capture, get_backend, register_backend
from .edits import EditHandle, add_noise, add_vector, combine, edit, patch, project_out
from .errors import (
    AlignscopeError,
    BackendError,
    CheckpointError,
    NumericsError,
    PromptError,
    SiteError,
    TokenizerError,
    UnsafeCheckpointError,
)
from .loading import ModelHandle, load_model, pad_batch, register_name_resolver
from .positions import parse_positions
from .sites import Site, parse_site, parse_sites
from .store import LazyActivations, open_activations
from .version import __version__

__all__ = [
    "ADAPTERS",
    "Activations",
    "AlignscopeError",
    "ArchitectureAdapter",
    "BackendError",
    "CheckpointError",
    "EditHandle",
    "LazyActivations",
    "ModelHandle",
    "NumericsError",
    "PromptError",
    "Site",
    "SiteError",
    "TokenizerError",
    "UnsafeCheckpointError",
    "__version__",
    "adapter_for",
    "add_noise",
    "add_vector",
    "capture",
    "combine",
    "edit",
    "get_backend",
    "load_model",
    "open_activations",
    "pad_batch",
    "parse_positions",
    "parse_site",
    "parse_sites",
    "patch",
    "project_out",
    "register_adapter",
    "register_backend",
    "register_name_resolver",
]
