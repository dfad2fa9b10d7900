"""nnsight 0.8 capture backend (``backend="nnsight"``): ``TransformersModel.trace`` over a private copy.

How it is wired (see ``docs/backends.md``):

* ``nnsight.TransformersModel`` wraps a private copy of the model (:func:`~.backend_tl.private_model_copy`: new module
  tree, the user's own weight tensors) and a copy of the tokenizer (nnsight sets the padding side and pad token of
  the tokenizer it is given). Built once per handle, cached in ``handle._cache["nnsight_model"]``.
* alignscope's padded ``input_ids`` go in with ``attention_mask`` and ``position_ids``; nnsight keeps a pre-padded
  batch as it is (left or right), so the reducer built from alignscope's mask picks the right tokens.
* The sites are read in forward order (nnsight requires it: a module's value must be asked for before the model has
  moved past it), each module once; the reduced rows are copies (advanced indexing, or ``.clone()`` when the reducer
  returned a view), so no ``[B, T, d]`` tensor is pinned; all values leave the trace through one
  ``nnsight.save([...])``; ``tracer.stop()`` ends the forward pass after the deepest site (no later blocks, no LM
  head).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import torch

from .backend_tl import _state_key, private_model_copy, warn_if_edited
from .errors import BackendError
from .loading import ModelHandle
from .sites import Site


def _envoy(root: Any, path: str) -> Any:
    obj = root
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def get_nnsight_model(handle: ModelHandle) -> Any:
    """The ``nnsight.TransformersModel`` of ``handle`` over a private copy (cached in ``handle._cache``).

    Raises:
        BackendError: nnsight is not installed or cannot wrap this model.
    """
    key = _state_key(handle)
    hit = handle._cache.get("nnsight_model")
    if hit is not None and hit[0] == key:
        return hit[1]
    try:
        from nnsight import TransformersModel
    except ImportError as e:
        raise BackendError(
            f"the 'nnsight' backend needs nnsight 0.8 ({e})",
            "pip install 'nnsight>=0.8,<0.9' (or pip install -e . in the alignscope checkout), or use backend='hooks'",
        ) from e
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wrapped = TransformersModel(
                private_model_copy(handle.model), tokenizer=copy.deepcopy(handle.tokenizer)
            )
    except Exception as e:  # nnsight raises assorted errors for models its pipeline cannot host
        raise BackendError(
            f"nnsight could not wrap {type(handle.model).__name__} ({type(e).__name__}: {e})",
            "use backend='hooks' (it supports every architecture alignscope loads)",
        ) from e
    handle._cache["nnsight_model"] = (key, wrapped)
    return wrapped


def _site_value(root: Any, handle: ModelHandle, site: Site) -> tuple[tuple, Callable[[], Any]]:
    """(module key, thunk returning the site's ``[B, T, d]`` value inside a trace)."""
    ad = handle.adapter
    if site.kind in ("embed", "resid_pre"):
        layer = 0 if site.kind == "embed" else site.layer
        env = _envoy(root, f"{ad.layers}.{layer}")
        return ("in", ad.layers, layer), lambda: env.input
    if site.kind == "resid_post":
        env = _envoy(root, f"{ad.layers}.{site.layer}")
    elif site.kind == "attn_out":
        env = _envoy(root, f"{ad.layers}.{site.layer}.{ad.attn}")
    elif site.kind == "mlp_out":
        env = _envoy(root, f"{ad.layers}.{site.layer}.{ad.mlp}")
    elif site.kind == "final":
        env = _envoy(root, ad.final_norm)
    elif site.kind == "logits":
        env = _envoy(root, ad.lm_head)
    else:  # pragma: no cover - parse_site rejects other kinds
        raise ValueError(site)

    def out() -> Any:
        o = env.output
        return o[0] if isinstance(o, tuple) else o

    return ("out", site.kind, site.layer), out


def _owned(r: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``r`` as a tensor that does not keep ``h``'s storage alive (clone only when ``r`` is a view of ``h``)."""
    if r.untyped_storage().data_ptr() == h.untyped_storage().data_ptr():
        r = r.clone()
    return r.float()


def run_nnsight_backend(
    handle: ModelHandle, batch: dict, sites: list[Site], reduce: Callable[[torch.Tensor], torch.Tensor]
) -> dict[str, torch.Tensor]:
    """One batch through ``TransformersModel.trace`` (see the module docstring).

    Args:
        handle: the model handle (its model and tokenizer are never modified).
        batch: ``input_ids``, ``attention_mask`` and ``position_ids`` as padded by alignscope.
        sites: the requested sites.
        reduce: maps a ``[B, T, d]`` activation to the requested positions.

    Returns:
        ``{site.name: reduce(activation).float()}``.
    """
    import nnsight

    warn_if_edited(handle, "nnsight")
    lm = get_nnsight_model(handle)
    n = handle.n_layers
    ordered = sorted(sites, key=lambda s: s.depth(n))
    groups: list[tuple[Callable[[], Any], list[Site]]] = []
    seen: dict[tuple, int] = {}
    for s in ordered:
        key, thunk = _site_value(lm, handle, s)
        if key in seen:
            groups[seen[key]][1].append(s)
        else:
            seen[key] = len(groups)
            groups.append((thunk, [s]))
    needs_logits = any(s.kind == "logits" for s in sites)
    kwargs: dict[str, Any] = {"attention_mask": batch["attention_mask"], "use_cache": False}
    if "position_ids" in batch:
        kwargs["position_ids"] = batch["position_ids"]
    if not needs_logits:
        kwargs["logits_to_keep"] = 1
    model = lm._module
    if model.training != handle.model.training:
        model.train(handle.model.training)
    with torch.no_grad(), lm.trace(batch["input_ids"], **kwargs) as tracer:
        vals = []
        for thunk, group in groups:
            h = thunk()
            for _ in group:
                vals.append(_owned(reduce(h), h))
        saved = nnsight.save(vals)
        tracer.stop()
    names = [s.name for _, group in groups for s in group]
    return dict(zip(names, saved, strict=True))
