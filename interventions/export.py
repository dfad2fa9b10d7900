"""Export directions / steering vectors: safetensors + JSON sidecar, and llama.cpp control-vector GGUF.

llama.cpp control vectors (``--control-vector FILE``, ``--control-vector-scaled FILE SCALE``) are GGUF files with
metadata ``general.architecture = "controlvector"``, ``controlvector.model_hint`` (the model family, e.g.
``"llama"``) and ``controlvector.layer_count``, and one f32 tensor ``direction.{N}`` of shape ``[n_embd]`` per
steered layer. llama.cpp adds ``scale * direction.N`` to the output of decoder block ``N`` (0-based block index) at
every position; it never steers block 0's output, so ``N`` starts at 1 (the "1-based" numbering of the format). In
alignscope's site names that is ``resid_post.N`` (= ``resid_pre.{N+1}``): :func:`to_control_layers` converts, and
:func:`apply_control_vector` replays a GGUF file with :func:`~alignscope.interventions.steer` so the semantics are
tested against the runtime intervention.

All files are written atomically (temp file + rename); nothing is left behind on failure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from alignscope.hooks.errors import CheckpointError, SiteError
from alignscope.hooks.io import atomic_path, atomic_write_json, sha256_file
from alignscope.hooks.version import __version__

VectorsLike = Any  # Direction | Tensor | Mapping[str | int, Tensor | Direction]

EXPORT_FORMAT = 1


def _vec(x) -> torch.Tensor:
    v = torch.as_tensor(getattr(x, "vector", x)).detach().to("cpu", torch.float32).contiguous()
    if v.ndim != 1 or v.numel() == 0:
        raise SiteError(f"a steering vector must be 1-D [d]; got shape {tuple(v.shape)}", "pass [d] vectors")
    if not bool(torch.isfinite(v).all()):
        raise SiteError("steering vector contains NaN or inf", "recompute it from finite activations")
    return v


def _site_layer(site: str) -> tuple[str, int]:
    kind, _, layer = site.partition(".")
    if kind not in ("resid_pre", "resid_post") or not layer.lstrip("-").isdigit():
        raise SiteError(
            f"site {site!r} cannot be exported as a residual-stream steering vector",
            "use a 'resid_pre.L' or 'resid_post.L' site (non-negative layer)",
        )
    return kind, int(layer)


def to_control_layers(vectors: VectorsLike, layers: Sequence[int] | None = None) -> dict[int, torch.Tensor]:
    """Map vectors to llama.cpp control-vector layers (``N`` = add to the output of block ``N``).

    Args:
        vectors: a ``Direction`` (its site gives the layer unless ``layers`` is passed), a ``[d]`` tensor (with
            ``layers`` = alignscope ``resid_post`` layers), or a mapping ``{site or resid_post layer: vector}``.
        layers: ``resid_post`` layers to place one vector at (e.g. Wolf et al.'s multi-layer injection).

    Raises:
        SiteError: a site that is not a residual-stream site, or a layer llama.cpp cannot steer (block 0 output).
    """
    out: dict[int, torch.Tensor] = {}
    if isinstance(vectors, Mapping):
        items = list(vectors.items())
    elif layers is not None:
        items = [(int(layer), vectors) for layer in layers]
    else:
        site = getattr(vectors, "site", None)
        if site is None:
            raise SiteError("a bare tensor has no layer", "pass layers=[...] (resid_post layers)")
        items = [(site, vectors)]
    for key, v in items:
        if isinstance(key, str) and not key.isdigit():
            kind, layer = _site_layer(key)
            n = layer if kind == "resid_post" else layer - 1
        else:
            n = int(key)
        if n < 1:
            raise SiteError(
                f"llama.cpp control vectors cannot steer the output of block {n} (layer numbering starts at 1)",
                "steer resid_post.N / resid_pre.{N+1} with N >= 1",
            )
        if n in out:
            raise SiteError(f"two vectors map to control-vector layer {n}", "pass one vector per layer")
        out[n] = _vec(v)
    d = {v.numel() for v in out.values()}
    if len(d) > 1:
        raise SiteError(f"vectors have different widths {sorted(d)}", "all vectors must be [n_embd]")
    return dict(sorted(out.items()))


def export_gguf(
    vectors: VectorsLike,
    path: str | Path,
    *,
    model_hint: str,
    layers: Sequence[int] | None = None,
    alpha: float = 1.0,
    normalize: bool = False,
) -> Path:
    """Write a llama.cpp control-vector GGUF.

    Args:
        vectors: see :func:`to_control_layers`.
        path: output ``.gguf`` file (written atomically).
        model_hint: the model family llama.cpp checks (``general.architecture`` of the model, e.g. ``"llama"``).
        layers: ``resid_post`` layers for a single vector.
        alpha: strength folded into the stored vectors (llama.cpp's ``--control-vector-scaled`` multiplies again).
        normalize: store unit vectors (times ``alpha``), as Wolf et al.'s ``r_e``.

    Returns:
        The path.
    """
    import gguf

    layers_map = to_control_layers(vectors, layers)
    path = Path(path)
    with atomic_path(path) as tmp:
        w = gguf.GGUFWriter(str(tmp), "controlvector")
        w.add_string("controlvector.model_hint", str(model_hint))
        w.add_uint32("controlvector.layer_count", len(layers_map))
        for n, v in layers_map.items():
            if normalize:
                v = v / (v.double().norm().float() + 1e-12)
            w.add_tensor(f"direction.{n}", (float(alpha) * v).numpy().astype("float32"))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return path


def read_gguf(path: str | Path) -> tuple[dict[int, torch.Tensor], dict]:
    """Read a control-vector GGUF back (with ``gguf.GGUFReader``): ``({layer: [n_embd] f32}, metadata)``.

    Raises:
        CheckpointError: not a control-vector file.
    """
    import gguf
    import numpy as np

    r = gguf.GGUFReader(str(path))

    def field(name):
        f = r.fields.get(name)
        if f is None:
            return None
        val = f.parts[f.data[0]]
        if f.types and f.types[0] == gguf.GGUFValueType.STRING:
            return bytes(val).decode("utf-8")
        return val.tolist()[0] if hasattr(val, "tolist") else val

    meta = {
        "general.architecture": field("general.architecture"),
        "controlvector.model_hint": field("controlvector.model_hint"),
        "controlvector.layer_count": field("controlvector.layer_count"),
    }
    if meta["general.architecture"] != "controlvector":
        raise CheckpointError(
            f"{path} is not a control vector (general.architecture = {meta['general.architecture']!r})",
            "pass a file written by export_gguf or llama.cpp's cvector-generator",
        )
    out = {}
    for t in r.tensors:
        if t.name.startswith("direction."):
            out[int(t.name.split(".")[1])] = torch.from_numpy(np.array(t.data, dtype=np.float32).reshape(-1))
    return dict(sorted(out.items())), meta


def apply_control_vector(model, path: str | Path, scale: float | torch.Tensor = 1.0):
    """Replay a control-vector GGUF on an HF model the way llama.cpp does (``resid_post.N += scale * v``, all
    positions). Returns the :func:`~alignscope.interventions.steer` handle (context manager)."""
    from alignscope.hooks.edits import combine

    from .steering import steer

    vecs, _ = read_gguf(path)
    edits = []
    try:
        for n, v in vecs.items():
            edits.append(steer(model, v, scale, layers=[n], site="resid_post", positions="all"))
    except Exception:
        for e in edits:
            e.remove()
        raise
    return combine(*edits, description=f"control_vector({Path(path).name}, scale)")


def export_safetensors(
    vectors: VectorsLike,
    path: str | Path,
    *,
    layers: Sequence[int] | None = None,
    alpha: float = 1.0,
    normalize: bool = False,
    provenance: dict | None = None,
) -> Path:
    """Write steering vectors as ``{path}.safetensors`` (tensors ``resid_post.N``) + ``{path}.json`` sidecar.

    The sidecar records the site convention, ``alpha``, ``normalize``, the tensor file's sha256, the vectors'
    source metadata (a ``Direction``'s site/method/provenance) and the alignscope version.

    Returns:
        The safetensors path.
    """
    from safetensors.torch import save_file

    layers_map = to_control_layers(vectors, layers)
    path = Path(path)
    if path.suffix == ".safetensors":
        path = path.with_suffix("")
    tens = path.with_name(path.name + ".safetensors")
    tensors = {}
    for n, v in layers_map.items():
        if normalize:
            v = v / (v.double().norm().float() + 1e-12)
        tensors[f"resid_post.{n}"] = (float(alpha) * v).contiguous()
    src = {}
    if hasattr(vectors, "to_dict"):
        src = vectors.to_dict()
    meta = {
        "kind": "alignscope.steering_vectors",
        "format": EXPORT_FORMAT,
        "convention": "tensor 'resid_post.N' is added to the output of decoder block N (0-based) at all positions",
        "alpha": alpha,
        "normalize": normalize,
        "layers": list(layers_map),
        "d": next(iter(layers_map.values())).numel(),
        "source": src,
        "provenance": provenance or {},
        "alignscope_version": __version__,
    }
    try:
        json.dumps(meta)
    except TypeError as e:
        raise CheckpointError(f"provenance is not JSON-serialisable: {e}", "store only JSON values") from e
    with atomic_path(tens) as tmp:
        save_file(tensors, str(tmp), metadata={"kind": "alignscope.steering_vectors"})
        meta["sha256"] = sha256_file(tmp)
    atomic_write_json(path.with_name(path.name + ".json"), meta)
    return tens


def load_safetensors(path: str | Path) -> tuple[dict[int, torch.Tensor], dict]:
    """Read vectors written by :func:`export_safetensors`: ``({resid_post layer: vector}, sidecar)``.

    Raises:
        CheckpointError: missing sidecar or hash mismatch.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if path.suffix == ".safetensors":
        path = path.with_suffix("")
    tens, side = path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")
    if not tens.is_file() or not side.is_file():
        raise CheckpointError(
            f"{tens} or its sidecar {side} is missing", "pass the path given to export_safetensors"
        )
    meta = json.loads(side.read_text())
    if meta.get("sha256") != sha256_file(tens):
        raise CheckpointError(f"{tens} does not match the hash in {side}", "re-export the vectors")
    t = load_file(str(tens))
    return {
        int(k.split(".")[1]): v for k, v in sorted(t.items(), key=lambda kv: int(kv[0].split(".")[1]))
    }, meta
