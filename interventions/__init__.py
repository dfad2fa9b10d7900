"""alignscope.interventions: steering, ablation, activation edits, weight edits and restoration."""

from .steering import ablate, edit, steer
from .weights import fold_steering_bias, orthogonalize, save_checkpoint

__all__ = ["ablate", "edit", "fold_steering_bias", "orthogonalize", "save_checkpoint", "steer"]

from .restoration import RestorationResult, restore  # noqa: E402

__all__ += ["RestorationResult", "restore"]
from .baselines import get_intervention, intervened, list_interventions, register_intervention  # noqa: E402
from .export import export_gguf, export_safetensors, read_gguf  # noqa: E402

__all__ += [
    "export_gguf",
    "export_safetensors",
    "get_intervention",
    "intervened",
    "list_interventions",
    "read_gguf",
    "register_intervention",
]
