"""alignscope.organisms: the model zoo (tier-0 architecture fixtures, tier-1 organisms with known behaviour)."""

from .tier0 import ARCHS as TIER0_ARCHS
from .tier0 import build_tier0
from .zoo import (
    PRESETS,
    ZooError,
    behaviour_table,
    build_zoo,
    preset_dir,
    resolve_zoo_name,
    zoo_list,
    zoo_path,
    zoo_root,
)

try:  # let load_model("aligned") resolve zoo names (hooks never imports organisms)
    from alignscope.hooks.loading import register_name_resolver

    register_name_resolver(resolve_zoo_name)
except ImportError:  # pragma: no cover - hooks without a resolver registry
    pass

__all__ = [
    "PRESETS",
    "TIER0_ARCHS",
    "ZooError",
    "behaviour_table",
    "build_tier0",
    "build_zoo",
    "preset_dir",
    "resolve_zoo_name",
    "zoo_list",
    "zoo_path",
    "zoo_root",
]
