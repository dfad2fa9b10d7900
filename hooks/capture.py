"""``capture``: activations at chosen sites and positions, in memory or streamed to disk.

Backends (all give the same numbers, tested against ``output_hidden_states``):
    ``"hooks"`` (default): plain PyTorch hooks; the forward pass stops after the deepest requested site (no later
        blocks, no LM head), inputs carry mask-derived ``position_ids`` (GPT-2 is wrong on left-padded batches
        otherwise), and only the requested positions are retained.
    ``"transformer_lens"``: TransformerLens 4 ``TransformerBridge`` booted from a copy of the model.
    ``"nnsight"``: nnsight 0.8 ``TransformersModel`` wrapping a copy of the model.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import BackendError, NumericsError
from .io import sha256_texts
from .loading import ModelHandle, load_model, pad_batch
from .plumbing import register_site_hook
from .positions import Positions, aligned_mask, make_reducer, parse_positions
from .progress import reporter as _reporter
from .sites import Site, parse_sites
from .version import __version__ as _version

BackendFn = Callable[
    [ModelHandle, dict, list[Site], Callable[[torch.Tensor], torch.Tensor]], dict[str, torch.Tensor]
]


class _StopForward(Exception):
    """Raised by the hook at the deepest requested site to end the forward pass early."""


def run_hooks_backend(
    handle: ModelHandle, batch: dict, sites: list[Site], reduce: Callable[[torch.Tensor], torch.Tensor]
) -> dict[str, torch.Tensor]:
    """One batch through plain PyTorch hooks; stops after the deepest site."""
    model, adapter = handle.model, handle.adapter
    out: dict[str, torch.Tensor] = {}
    handles = []

    def make(site: Site):
        def fn(h: torch.Tensor):
            out[site.name] = reduce(h.detach()).float()
            if len(out) == len(
                sites
            ):  # every site captured: nothing later is needed (no later blocks, no head)
                raise _StopForward
            return None

        return fn

    try:
        for s in sites:
            handles.append(register_site_hook(model, adapter, s, make(s), prepend=False))
        with torch.no_grad():
            try:
                model(**batch, use_cache=False)
            except _StopForward:
                pass
    finally:
        for h in handles:
            h.remove()
    return out


_BACKENDS: dict[str, BackendFn | str] = {
    "hooks": run_hooks_backend,
    "transformer_lens": "alignscope.hooks.backend_tl:run_tl_backend",
    "nnsight": "alignscope.hooks.backend_nnsight:run_nnsight_backend",
}


def register_backend(name: str, fn: BackendFn | str) -> None:
    """Register a capture backend (a function or ``"module:function"`` imported on first use)."""
    _BACKENDS[name] = fn


def get_backend(name: str) -> BackendFn:
    if name not in _BACKENDS:
        raise BackendError(f"unknown capture backend {name!r}", f"use one of {sorted(_BACKENDS)}")
    fn = _BACKENDS[name]
    if isinstance(fn, str):
        mod, _, attr = fn.partition(":")
        try:
            fn = getattr(importlib.import_module(mod), attr)
        except ImportError as e:
            raise BackendError(
                f"the {name!r} backend could not be imported ({e})",
                "install alignscope with its dependencies (pip install -e .) or use backend='hooks'",
            ) from e
        _BACKENDS[name] = fn
    return fn


@dataclass
class Activations(Mapping):
    """Captured activations: ``acts["resid_post.3"]`` is a float32 tensor in prompt order.

    Attributes:
        data: site name -> tensor (``[N, d]``, ``[N, k, d]`` or ``[N, T, d]``).
        mask: ``[N, T]`` mask for ``positions="all"`` (real tokens first), else None.
        meta: provenance (model path and hash, sites, positions, backend, dataset hash, version, timings).
    """

    data: dict[str, torch.Tensor]
    mask: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)

    def __getitem__(self, site: str) -> torch.Tensor:
        if site in self.data:
            return self.data[site]
        alias = self.meta.get("aliases", {}).get(site)
        if alias in self.data:
            return self.data[alias]
        raise KeyError(f"site {site!r} was not captured; captured: {sorted(self.data)}")

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def capture(
    model: ModelHandle | Any,
    prompts: Sequence[str],
    sites: str | Sequence[str],
    positions: str | int | Sequence[int] = "last",
    *,
    backend: str = "hooks",
    batch_size: int = 16,
    chat: bool | None = None,
    out: str | Path | None = None,
    padding_side: str = "left",
    progress: bool | Callable[[int, int], None] = False,
    check_finite: bool = True,
) -> Activations:
    """Capture activations of ``prompts`` at ``sites`` and ``positions``.

    Args:
        model: a :class:`ModelHandle`, a checkpoint path, or anything :func:`load_model` takes.
        prompts: instructions (wrapped in the chat template when ``chat`` resolves to True).
        sites: site names (see :mod:`alignscope.hooks.sites`), e.g. ``["resid_post.3", "final"]`` or
            ``"resid_post.*"``.
        positions: ``"last"``, ``"mean"``, ``"eoi"``, ``"all"`` or explicit indices (see
            :mod:`alignscope.hooks.positions`).
        backend: ``"hooks"``, ``"transformer_lens"`` or ``"nnsight"``.
        batch_size: prompts per forward pass.
        chat: None uses the tokenizer's chat template when it has one; True requires it; False uses raw text.
        out: a directory to stream to (bounded memory, resumable); read back with :func:`open_activations`.
        padding_side: ``"left"`` or ``"right"``; results are the same either way.
        progress: True for a progress bar, or a callback ``(done, total)``.
        check_finite: raise :class:`NumericsError` on NaN/inf activations.

    Returns:
        :class:`Activations` (or, with ``out``, the lazily loading store that :func:`open_activations` returns).
    """
    handle = load_model(model)
    prompts = list(prompts) if not isinstance(prompts, str) else [prompts]
    use_chat = handle.use_chat(chat)
    handle.format_prompts(prompts[:1] if prompts else prompts, chat=use_chat)  # validates (empty list, types)
    site_list = parse_sites(sites if isinstance(sites, (str,)) else list(sites), handle.n_layers)
    pos = parse_positions(positions)
    n_eoi = len(handle.eoi_ids()) if pos.kind == "eoi" else None
    run = get_backend(backend)
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")

    meta = {
        **handle.provenance(),
        "sites": [s.name for s in site_list],
        "aliases": _aliases(sites, handle.n_layers),
        "positions": pos.label,
        "backend": backend,
        "chat": use_chat,
        "padding_side": padding_side,
        "batch_size": batch_size,
        "n_prompts": len(prompts),
        "dataset_hash": sha256_texts(prompts),
        "alignscope_version": _version,
        "d_model": handle.d_model,
        "dtype": "float32",
    }
    if n_eoi is not None:
        meta["eoi_ids"] = handle.eoi_ids()

    if out is not None:
        from .store import stream_capture

        return stream_capture(
            handle,
            prompts,
            site_list,
            pos,
            run,
            Path(out),
            meta,
            batch_size=batch_size,
            chat=use_chat,
            padding_side=padding_side,
            n_eoi=n_eoi,
            progress=progress,
            check_finite=check_finite,
        )

    t0 = time.perf_counter()
    chunks: dict[str, list[torch.Tensor]] = {s.name: [] for s in site_list}
    masks: list[torch.Tensor] = []
    reporter = _reporter(progress, len(prompts), "capture")
    for start, batch_out, amask in iter_batches(
        handle,
        prompts,
        site_list,
        pos,
        run,
        batch_size=batch_size,
        chat=use_chat,
        padding_side=padding_side,
        n_eoi=n_eoi,
        check_finite=check_finite,
    ):
        for k, v in batch_out.items():
            chunks[k].append(v.cpu())
        if amask is not None:
            masks.append(amask.cpu())
        reporter(min(start + batch_size, len(prompts)))
    reporter(None)
    data = {k: _cat(v) for k, v in chunks.items()}
    mask = _cat_masks(masks) if pos.kind == "all" else None
    meta["seconds"] = round(time.perf_counter() - t0, 4)
    return Activations(data=data, mask=mask, meta=meta)


def iter_batches(
    handle: ModelHandle,
    prompts: list[str],
    sites: list[Site],
    pos: Positions,
    run: BackendFn,
    *,
    batch_size: int,
    chat: bool,
    padding_side: str,
    n_eoi: int | None,
    check_finite: bool,
    skip: Callable[[int], bool] | None = None,
) -> Iterator[tuple[int, dict[str, torch.Tensor], torch.Tensor | None]]:
    """Yield ``(start_index, {site: reduced}, all_mask)`` per batch, tokenizing lazily (bounded memory)."""
    for bi, start in enumerate(range(0, len(prompts), batch_size)):
        if skip is not None and skip(bi):
            continue
        chunk = prompts[start : start + batch_size]
        ids = handle.tokenize(chunk, chat=chat)
        batch = pad_batch(ids, handle.pad_id, padding_side, device=handle.device)
        mask = batch["attention_mask"]
        if n_eoi is not None:
            eoi = handle.eoi_ids()
            for i, x in enumerate(ids):
                if list(x[-n_eoi:]) != eoi:
                    from .errors import TokenizerError

                    raise TokenizerError(
                        f"prompt {start + i} does not end with the chat template's post-instruction tokens "
                        "(the tokenizer merged them with the instruction)",
                        "use positions='last', or end the instruction with whitespace/punctuation",
                    )
        reduce = make_reducer(pos, mask, n_eoi=n_eoi)
        res = run(handle, batch, sites, reduce)
        if check_finite:
            for k, v in res.items():
                if not torch.isfinite(v).all():
                    bad = int((~torch.isfinite(v)).reshape(v.shape[0], -1).any(1).nonzero()[0])
                    raise NumericsError(
                        f"NaN/inf activations at site {k!r} for prompt {start + bad}",
                        "load the model in float32 (dtype='float32'); check the weights for NaN "
                        "(a diverged fine-tune); pass check_finite=False to capture anyway",
                    )
        amask = aligned_mask(mask) if pos.kind == "all" else None
        yield start, res, amask


def _aliases(sites: str | Sequence[str], n_layers: int) -> dict[str, str]:
    """Requested spelling -> canonical site name (e.g. ``resid_post.-1`` -> ``resid_post.11``)."""
    from .sites import parse_site

    req = [sites] if isinstance(sites, str) else list(sites)
    return {str(r): parse_site(r, n_layers).name for r in req if not str(r).endswith(".*")}


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    if (
        parts and parts[0].dim() == 3 and len({p.shape[1] for p in parts}) > 1
    ):  # 'all': pad to the longest batch
        T = max(p.shape[1] for p in parts)
        parts = [torch.nn.functional.pad(p, (0, 0, 0, T - p.shape[1])) for p in parts]
    return torch.cat(parts, 0)


def _cat_masks(parts: list[torch.Tensor]) -> torch.Tensor:
    T = max(p.shape[1] for p in parts)
    return torch.cat([torch.nn.functional.pad(p, (0, T - p.shape[1])) for p in parts], 0)
