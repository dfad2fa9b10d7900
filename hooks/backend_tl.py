"""TransformerLens 4 capture backend (``backend="transformer_lens"``): a ``TransformerBridge`` over a private copy.

How it is wired (see ``docs/backends.md``):

* The bridge rewires the HF model it boots from (it forces eager attention and swaps submodules for bridge
  components), so it is booted **once per handle** from :func:`private_model_copy` (a ``copy.deepcopy`` whose module
  tree is new but whose parameters and buffers are the user's own tensors: no second copy of the weights, and weight
  edits made on the user's model are seen) and a copy of the tokenizer. It is cached in
  ``handle._cache["tl_bridge"]``.
* alignscope's own padded ``input_ids``, ``attention_mask`` and mask-derived ``position_ids`` are passed through, so
  the bridge sees exactly the batch the hooks backend sees (GPT-2 is right on left-padded batches).
* ``run_with_cache`` gets a ``names_filter`` of exactly the requested hook names (``Site.tl_hook_name``),
  ``output_attentions=False`` (the bridge asks HF for attention weights otherwise), ``use_cache=False``,
  ``stop_at_layer`` after the block of the deepest site when that is not the last block, and ``logits_to_keep=1``
  unless the ``logits`` site is requested (no full-vocabulary logits).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import torch

from .errors import BackendError
from .loading import ModelHandle
from .sites import Site

#: the only forward hooks that a private copy keeps: transformers' own ``output_hidden_states`` machinery.
_HF_HOOK_NAMES = ("output_capturing_hook",)


def _is_hf_hook(fn: Any) -> bool:
    return getattr(fn, "__name__", "") in _HF_HOOK_NAMES


def foreign_hooks(model: torch.nn.Module) -> int:
    """Number of forward (pre-)hooks on ``model``'s modules that transformers did not install (e.g. active edits)."""
    n = 0
    for m in model.modules():
        for d in (m._forward_hooks, m._forward_pre_hooks):
            n += sum(1 for fn in d.values() if not _is_hf_hook(fn))
    return n


def private_model_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` that a backend may rewire freely, sharing the user's parameter and buffer tensors.

    The module tree (and the config) is deep-copied, so replacing submodules or switching the attention
    implementation on the copy leaves the user's model untouched; the parameters and buffers are the same tensor
    objects (a ``deepcopy`` memo), so no second copy of the weights is made and in-place weight edits on the user's
    model are seen by the copy. Forward hooks that are not transformers' own (e.g. alignscope edits active when the
    copy is made) are dropped from the copy.
    """
    memo: dict[int, Any] = {id(t): t for t in model.parameters()}
    memo.update({id(t): t for t in model.buffers()})
    clone = copy.deepcopy(model, memo)
    for m in clone.modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks"):
            d = getattr(m, attr)
            for k in [k for k, fn in d.items() if not _is_hf_hook(fn)]:
                del d[k]
                for extra in (
                    "_forward_hooks_with_kwargs",
                    "_forward_hooks_always_called",
                    "_forward_pre_hooks_with_kwargs",
                ):
                    getattr(m, extra, {}).pop(k, None)
    clone.train(model.training)
    return clone


def _state_key(handle: ModelHandle) -> tuple:
    """What a cached copy depends on: the model object, its device and dtype."""
    return (id(handle.model), str(handle.device), str(handle.dtype))


def warn_if_edited(handle: ModelHandle, backend: str) -> None:
    """Warn (once per handle) when the user's model carries hooks that a private copy will not see."""
    if handle._cache.get(f"{backend}_warned"):
        return
    n = foreign_hooks(handle.model)
    if n:
        handle._cache[f"{backend}_warned"] = True
        warnings.warn(
            f"the model has {n} forward hook(s) (e.g. an active alignscope edit); the {backend!r} backend runs on a "
            "private copy of the model and does not see them. Use backend='hooks' to capture under an edit.",
            stacklevel=4,
        )


def get_bridge(handle: ModelHandle) -> Any:
    """The ``TransformerBridge`` of ``handle``, booted once from a private copy (cached in ``handle._cache``).

    Raises:
        BackendError: TransformerLens is not installed, or the bridge does not support this architecture.
    """
    key = _state_key(handle)
    hit = handle._cache.get("tl_bridge")
    if hit is not None and hit[0] == key:
        return hit[1]
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError as e:
        raise BackendError(
            f"the 'transformer_lens' backend needs TransformerLens 4 ({e})",
            "pip install 'transformer-lens>=4,<5' (or pip install -e . in the alignscope checkout), "
            "or use backend='hooks'",
        ) from e
    model = private_model_copy(handle.model)
    tok = copy.deepcopy(handle.tokenizer)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bridge = TransformerBridge.boot_transformers(
                f"alignscope:{handle.path or type(handle.model).__name__}",
                hf_model=model,
                tokenizer=tok,
                device=str(handle.device),
                dtype=handle.dtype,
            )
    except (
        Exception
    ) as e:  # the bridge raises plain ValueError/KeyError/NotImplementedError for unknown models
        raise BackendError(
            f"TransformerLens could not build a TransformerBridge for {type(handle.model).__name__} "
            f"({type(e).__name__}: {e})",
            "use backend='hooks' (it supports every architecture alignscope loads)",
        ) from e
    bridge.eval()
    handle._cache["tl_bridge"] = (key, bridge)
    return bridge


def run_tl_backend(
    handle: ModelHandle, batch: dict, sites: list[Site], reduce: Callable[[torch.Tensor], torch.Tensor]
) -> dict[str, torch.Tensor]:
    """One batch through ``TransformerBridge.run_with_cache`` (see the module docstring).

    Args:
        handle: the model handle (its model is never modified).
        batch: ``input_ids``, ``attention_mask`` and ``position_ids`` as padded by alignscope.
        sites: the requested sites.
        reduce: maps a ``[B, T, d]`` activation to the requested positions.

    Returns:
        ``{site.name: reduce(activation).float()}``.
    """
    warn_if_edited(handle, "transformer_lens")
    bridge = get_bridge(handle)
    n = handle.n_layers
    names = {s.name: s.tl_hook_name(n) for s in sites}
    deepest = max(sites, key=lambda s: s.depth(n))
    kwargs: dict[str, Any] = {
        "attention_mask": batch["attention_mask"],
        "output_attentions": False,
        "use_cache": False,
        "return_cache_object": False,
    }
    if "position_ids" in batch:
        kwargs["position_ids"] = batch["position_ids"]
    if deepest.layer is not None and deepest.layer + 1 < n:
        kwargs["stop_at_layer"] = deepest.layer + 1
    elif deepest.kind != "logits":
        kwargs["logits_to_keep"] = 1
    if bridge.training != handle.model.training:
        bridge.train(handle.model.training)
    with torch.no_grad():
        _, cache = bridge.run_with_cache(
            batch["input_ids"], names_filter=sorted(set(names.values())), **kwargs
        )
    out: dict[str, torch.Tensor] = {}
    for s in sites:
        h = cache[names[s.name]]
        out[s.name] = reduce(h).float()
    return out
