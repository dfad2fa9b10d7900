"""The ``Direction`` record: a vector in a model's activation space plus where and how it was found.

Saved as a directory with ``direction.safetensors`` (tensor ``vector``) and a ``direction.json`` sidecar
(site, position, method, provenance, shape, norm, sha256 of the tensor file). Both files are written
atomically (temp file + rename); the sidecar is written last and its hash is checked on load, so a torn
save is detected instead of silently loading a mismatched pair.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from alignscope.hooks.errors import CheckpointError, NumericsError, SiteError
from alignscope.hooks.io import atomic_path, atomic_write_json, sha256_file

__all__ = ["Direction", "DIRECTION_FORMAT"]

DIRECTION_FORMAT = 1
TENSOR_FILE = "direction.safetensors"
SIDECAR_FILE = "direction.json"


@dataclass
class Direction:
    """A direction in activation space.

    Attributes:
        vector: ``[d]`` float32 CPU tensor, **not** normalised (e.g. the raw difference of means, whose norm
            matters for activation addition); use :meth:`unit` for ablation/projection.
        site: capture site, e.g. ``"resid_pre.12"`` (naming of ``alignscope.hooks.sites``).
        position: token position the activations were read at: ``"last"``, ``"eoi"``, ``"mean"`` or an int
            (negative = from the end, e.g. ``-2`` for the second-to-last post-instruction token).
        method: extractor name (``"diff_means"``, ``"pca"``, ``"logistic"``, ``"mean"``, ...).
        provenance: JSON-serialisable record (model, dataset hashes, seeds, n, padding side, scores...).
    """

    vector: torch.Tensor
    site: str
    position: str | int
    method: str
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        v = torch.as_tensor(self.vector).detach()
        if v.ndim != 1 or v.numel() == 0:
            raise SiteError(
                f"a Direction vector must be 1-D [d]; got shape {tuple(v.shape)}.",
                "Select one (position, layer) candidate, e.g. r[pos_index, layer], before building a Direction.",
            )
        v = v.to(device="cpu", dtype=torch.float32).contiguous()
        if not bool(torch.isfinite(v).all()):
            raise NumericsError(
                f"direction vector for site {self.site!r} contains NaN or inf.",
                "Recompute it from finite float32 activations (check the capture dtype).",
            )
        self.vector = v
        if not isinstance(self.position, int | str):
            raise SiteError(
                f"position must be a str or int; got {self.position!r}.", "Use 'last', 'eoi' or an int."
            )
        self.provenance = dict(self.provenance)

    @property
    def d(self) -> int:
        """Width of the activation space."""
        return int(self.vector.numel())

    @property
    def norm(self) -> float:
        """Euclidean norm of the (unnormalised) vector, computed in float64."""
        return float(torch.linalg.vector_norm(self.vector.double()))

    def unit(self) -> torch.Tensor:
        """Unit-norm float32 copy of the vector (norm computed in float64).

        Raises:
            NumericsError: the vector is zero (no direction to normalise).
        """
        n = self.norm
        if n == 0.0 or not math.isfinite(n):
            raise NumericsError(
                f"direction for site {self.site!r} has zero norm; it cannot be normalised.",
                "The two activation sets have identical means here: pick another site/position.",
            )
        return (self.vector.double() / n).float()

    def to_dict(self) -> dict[str, Any]:
        """Sidecar metadata (everything except the tensor)."""
        return {
            "format": DIRECTION_FORMAT,
            "kind": "alignscope.direction",
            "site": self.site,
            "position": self.position,
            "method": self.method,
            "d": self.d,
            "norm": self.norm,
            "dtype": "float32",
            "provenance": self.provenance,
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``direction.safetensors`` + ``direction.json`` into ``directory`` (created if needed).

        Returns:
            The directory path.

        Raises:
            CheckpointError: the provenance is not JSON-serialisable.
        """
        from safetensors.torch import save_file

        directory = Path(directory)
        meta = self.to_dict()
        try:
            json.dumps(meta, allow_nan=True)
        except TypeError as e:
            raise CheckpointError(
                f"direction provenance is not JSON-serialisable: {e}.",
                "Store only str/int/float/bool/list/dict values in provenance (convert tensors with .tolist()).",
            ) from e
        with atomic_path(directory / TENSOR_FILE) as tmp:
            save_file(
                {"vector": self.vector},
                str(tmp),
                metadata={"kind": "alignscope.direction", "format": str(DIRECTION_FORMAT), "site": self.site},
            )
            meta["sha256"] = sha256_file(tmp)
        atomic_write_json(directory / SIDECAR_FILE, meta)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Direction:
        """Read a direction saved by :meth:`save` and verify the tensor file against the sidecar hash.

        Raises:
            CheckpointError: missing files, unknown format, hash or shape mismatch.
        """
        from safetensors.torch import load_file

        directory = Path(directory)
        side, tens = directory / SIDECAR_FILE, directory / TENSOR_FILE
        if not side.is_file() or not tens.is_file():
            raise CheckpointError(
                f"{directory} is not a saved Direction (need {SIDECAR_FILE} and {TENSOR_FILE}).",
                "Pass the directory given to Direction.save().",
            )
        try:
            meta = json.loads(side.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{side} is not valid JSON ({e}).", "Re-save the direction.") from e
        if meta.get("format") != DIRECTION_FORMAT or meta.get("kind") != "alignscope.direction":
            raise CheckpointError(
                f"{side} has format {meta.get('format')!r} / kind {meta.get('kind')!r}; "
                f"expected {DIRECTION_FORMAT} / 'alignscope.direction'.",
                "Re-save it with this version of alignscope.",
            )
        if "sha256" in meta and sha256_file(tens) != meta["sha256"]:
            raise CheckpointError(
                f"{tens} does not match the hash in {side} (interrupted or mixed save).",
                "Re-save the direction.",
            )
        vec = load_file(str(tens))["vector"]
        if vec.numel() != meta.get("d"):
            raise CheckpointError(
                f"{tens} holds {vec.numel()} values, sidecar says {meta.get('d')}.", "Re-save."
            )
        return cls(
            vector=vec,
            site=meta["site"],
            position=meta["position"],
            method=meta["method"],
            provenance=meta.get("provenance", {}),
        )
