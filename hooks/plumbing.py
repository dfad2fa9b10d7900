"""Low-level hook plumbing shared by capture and the edit primitives.

A *site hook* is a function ``fn(h) -> h' | None`` on the ``[B, T, d]`` activation at a site; this module registers
it on the right HF module as a forward hook (outputs) or forward pre-hook (block inputs), always with
``prepend=True`` so it runs before transformers' own lazily installed ``output_hidden_states`` hooks (TOOLCHAIN.md
§3), and unwraps / re-wraps tuple outputs.

It also tracks the attention mask of the forward pass in flight (:class:`ForwardContext`), so edits resolve positions
against the mask during ``generate`` with a KV cache too.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils.hooks import RemovableHandle

from .adapters import ArchitectureAdapter
from .sites import Site

SiteFn = Callable[[torch.Tensor], torch.Tensor | None]


def site_module(model: nn.Module, adapter: ArchitectureAdapter, site: Site) -> tuple[nn.Module, bool]:
    """The module to hook for ``site`` and whether it is a pre-hook (block input)."""
    if site.kind == "embed":
        return adapter.block(model, 0), True
    if site.kind == "resid_pre":
        return adapter.block(model, site.layer), True
    if site.kind == "resid_post":
        return adapter.block(model, site.layer), False
    if site.kind == "attn_out":
        return adapter.attn_module(model, site.layer), False
    if site.kind == "mlp_out":
        return adapter.mlp_module(model, site.layer), False
    if site.kind == "final":
        return adapter.final_norm_module(model), False
    if site.kind == "logits":
        return adapter.lm_head_module(model), False
    raise ValueError(site)


def register_site_hook(
    model: nn.Module, adapter: ArchitectureAdapter, site: Site, fn: SiteFn, *, prepend: bool = True
) -> RemovableHandle:
    """Register ``fn`` at ``site``; returns the removable torch handle.

    Edits prepend (they run before transformers' own hooks); captures append (``prepend=False``) so they read the
    value after every edit at the same site, i.e. what flows downstream.
    """
    module, is_pre = site_module(model, adapter, site)
    if is_pre:

        def pre_hook(mod, args, kwargs):
            if args:
                new = fn(args[0])
                return None if new is None else ((new,) + tuple(args[1:]), kwargs)
            new = fn(kwargs["hidden_states"])
            if new is None:
                return None
            kwargs = dict(kwargs)
            kwargs["hidden_states"] = new
            return args, kwargs

        return module.register_forward_pre_hook(pre_hook, with_kwargs=True, prepend=prepend)

    def post_hook(mod, args, out):
        if torch.is_tensor(out):
            return fn(out)
        new = fn(out[0])
        if new is None:
            return None
        return (new,) + tuple(out[1:])

    return module.register_forward_hook(post_hook, prepend=prepend)


@dataclass
class ForwardContext:
    """The attention mask of the forward pass in flight (set by a pre-hook on the top-level model)."""

    mask: torch.Tensor | None = None

    def mask_for(self, h: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` mask of the ``T`` positions of ``h`` (the newest positions when a KV cache is in use)."""
        B, T = h.shape[0], h.shape[1]
        if self.mask is None or self.mask.dim() != 2 or self.mask.shape[0] != B:
            return torch.ones(B, T, dtype=torch.long, device=h.device)
        return self.mask[:, -T:].to(h.device)

    def is_prefill(self, h: torch.Tensor) -> bool:
        """True when ``h`` holds every position of the sequence (no KV-cached past)."""
        return self.mask is None or self.mask.dim() != 2 or self.mask.shape[1] == h.shape[1]


_CONTEXTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def forward_context(model: nn.Module) -> ForwardContext:
    """The shared :class:`ForwardContext` of ``model``, installing its tracking pre-hook on first use."""
    entry = _CONTEXTS.get(model)
    if entry is not None:
        entry[1] += 1
        return entry[0]
    ctx = ForwardContext()

    def track(mod, args, kwargs):
        m = kwargs.get("attention_mask")
        ctx.mask = m if torch.is_tensor(m) else None

    handle = model.register_forward_pre_hook(track, with_kwargs=True, prepend=True)
    _CONTEXTS[model] = [ctx, 1, handle]
    return ctx


def release_context(model: nn.Module) -> None:
    """Drop one user of the model's context; the tracking hook goes with the last one."""
    entry = _CONTEXTS.get(model)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] <= 0:
        entry[2].remove()
        del _CONTEXTS[model]
