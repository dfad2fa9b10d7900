"""``find_direction``: candidate directions from a model's activations, and Arditi et al.'s selection.

Pipeline (papers.md R.a; deviations in ``docs/methods/refusal_direction.md``):

1. split off validation prompts when none are given (seeded, recorded);
2. refusal tokens from the model's own refusals on the harmful validation prompts
   (:func:`~alignscope.probes.selection.refusal_tokens_from_model`), unless given;
3. optionally (``filter_prompts``, Arditi's ``filter_train/filter_val``) keep harmful prompts with refusal
   score > 0 and harmless prompts with score < 0;
4. capture ``resid_pre`` of every requested layer at the requested positions (post-instruction ``eoi``
   tokens, ``last``, ``mean``) with float64 means; one candidate per (position, layer) from the extractor
   registry (``diff_means``, ``pca``, ``logistic``; ``mean`` gives the restoration target of papers.md 1.a
   and is never selected);
5. batched selection (:mod:`alignscope.probes.selection`).

``directions_cli`` is the body of ``alignscope directions``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from alignscope.hooks.capture import capture
from alignscope.hooks.errors import AlignscopeError, PromptError
from alignscope.hooks.io import atomic_write_json, read_prompts, sha256_texts
from alignscope.hooks.loading import ModelHandle, load_model
from alignscope.hooks.version import __version__
from alignscope.probes.direction import Direction
from alignscope.probes.directions import diff_of_means, get_extractor
from alignscope.probes.selection import (
    Candidates,
    SelectionResult,
    last_logits,
    refusal_score,
    refusal_tokens_from_model,
    score_candidates,
    select_candidate,
)

__all__ = ["find_candidates", "find_direction", "split_prompts", "directions_cli"]

PositionSpec = str | int


def split_prompts(prompts: Sequence[str], frac: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded split into ``(train, val)`` with ``max(1, round(frac n))`` validation prompts (order kept)."""
    prompts = list(prompts)
    if len(prompts) < 2:
        raise PromptError(
            f"cannot split {len(prompts)} prompt(s) into train and validation sets.",
            "Pass at least 2 prompts per set, or pass val_harmful=/val_harmless= explicitly.",
        )
    k = min(len(prompts) - 1, max(1, round(frac * len(prompts))))
    rng = np.random.default_rng(seed)
    val_idx = set(rng.permutation(len(prompts))[:k].tolist())
    return (
        [p for i, p in enumerate(prompts) if i not in val_idx],
        [p for i, p in enumerate(prompts) if i in val_idx],
    )


def _nonempty(prompts: Sequence[str] | None, name: str) -> list[str]:
    if prompts is None or isinstance(prompts, str):
        prompts = [prompts] if isinstance(prompts, str) else []
    out = list(prompts)
    if not out:
        raise PromptError(f"the {name} prompt set is empty.", f"Pass at least one {name} prompt.")
    return out


def _resolve_positions(
    h: ModelHandle, positions: Sequence[PositionSpec] | PositionSpec, chat: bool | None
) -> tuple[list[int], bool, list[str], list[str]]:
    """``(offsets, want_mean, labels_note, notes)``: negative offsets to read (from the end of the prompt)."""
    if isinstance(positions, str | int):
        positions = [positions]
    positions = list(positions)
    if not positions:
        raise AlignscopeError("positions is empty.", "Use e.g. positions=('eoi', 'last').")
    notes: list[str] = []
    offsets: list[int] = []
    want_mean = False
    use_chat = h.use_chat(chat)
    for p in positions:
        if p == "eoi":
            if not use_chat:
                if len(positions) > 1:
                    notes.append(
                        "positions 'eoi' dropped: no chat template (post-instruction tokens undefined)"
                    )
                    continue
                h.eoi_ids()  # raises the TokenizerError with the fix
            offsets += list(range(-len(h.eoi_ids()), 0))
        elif p == "last":
            offsets.append(-1)
        elif p == "mean":
            want_mean = True
        elif isinstance(p, int) and p < 0:
            offsets.append(p)
        else:
            raise AlignscopeError(
                f"unsupported position {p!r}.",
                "Use 'eoi', 'last', 'mean' or a negative int offset from the end of the prompt.",
            )
    offsets = sorted(set(offsets))
    return offsets, want_mean, [str(p) for p in positions], notes


def _layers(h: ModelHandle, layers: int | Sequence[int] | None) -> list[int]:
    L = h.n_layers
    if layers is None:
        return list(range(L))
    if isinstance(layers, int):
        layers = [layers]
    out = []
    for layer in layers:
        li = int(layer)
        if not -L <= li < L:
            raise AlignscopeError(
                f"layer {li} is out of range for a {L}-layer model.", f"Use layers in [{-L}, {L - 1}]."
            )
        out.append(li % L)
    if not out:
        raise AlignscopeError("layers is empty.", "Pass layers=None for every layer.")
    return sorted(set(out))


def _capture_positions(
    h: ModelHandle,
    prompts: list[str],
    layers: list[int],
    offsets: list[int],
    want_mean: bool,
    *,
    batch_size: int,
    chat: bool | None,
) -> tuple[dict[PositionSpec, torch.Tensor], dict[str, Any]]:
    """``{position label: [N, n_layers_requested, d]}`` activations at ``resid_pre``."""
    sites = [f"resid_pre.{layer}" for layer in layers]
    out: dict[PositionSpec, torch.Tensor] = {}
    meta: dict[str, Any] = {}
    if offsets:
        only_last = offsets == [-1]
        acts = capture(
            h, prompts, sites, "last" if only_last else list(offsets), batch_size=batch_size, chat=chat
        )
        meta = dict(acts.meta)
        for j, off in enumerate(offsets):
            label: PositionSpec = "last" if only_last else off
            out[label] = torch.stack([acts[s] if only_last else acts[s][:, j] for s in sites], dim=1)
    if want_mean:
        acts = capture(h, prompts, sites, "mean", batch_size=batch_size, chat=chat)
        meta = meta or dict(acts.meta)
        out["mean"] = torch.stack([acts[s] for s in sites], dim=1)
    return out, meta


def find_candidates(
    model: Any,
    harmful: Sequence[str],
    harmless: Sequence[str],
    *,
    method: str = "diff_means",
    positions: Sequence[PositionSpec] | PositionSpec = ("eoi", "last"),
    layers: int | Sequence[int] | None = None,
    seed: int = 0,
    batch_size: int = 16,
    chat: bool | None = None,
    **method_kw: Any,
) -> tuple[Candidates, torch.Tensor]:
    """One candidate per (position, layer) at ``resid_pre``.

    Args:
        model: model handle, checkpoint path or registered name.
        harmful: prompts of the concept (harmful) set.
        harmless: contrast prompts.
        method: extractor name (``diff_means``, ``pca``, ``logistic``, ``mean``, or a registered one).
        positions: ``"eoi"`` (each post-instruction template token), ``"last"``, ``"mean"``, negative ints.
        layers: block indices (default all).
        seed: passed to stochastic extractors (PCA pair order), recorded.
        batch_size: capture batch size.
        chat: chat template switch (default: when the tokenizer has one).
        **method_kw: extra extractor arguments (e.g. ``C`` for ``logistic``).

    Returns:
        ``(candidates, steer_vectors)``: ``candidates.vectors`` are what a selected Direction stores;
        ``steer_vectors`` (``[K, d]``) are the activation-addition vectors used in selection. For
        ``diff_means`` both are the raw difference of means; for unit-scale methods (``pca``, ``logistic``)
        the vector is rescaled to ``(r . u) u`` with ``r`` the difference of means at the same candidate, so
        its length is the class separation along ``u``; for ``mean`` it is the mean harmful representation.
    """
    h = load_model(model)
    harmful = _nonempty(harmful, "harmful")
    harmless = _nonempty(harmless, "harmless") if method != "mean" else list(harmless or [])
    extractor = get_extractor(method)
    lay = _layers(h, layers)
    offsets, want_mean, pos_labels, notes = _resolve_positions(h, positions, chat)
    acts_h, meta = _capture_positions(h, harmful, lay, offsets, want_mean, batch_size=batch_size, chat=chat)
    acts_s = (
        _capture_positions(h, harmless, lay, offsets, want_mean, batch_size=batch_size, chat=chat)[0]
        if harmless
        else {}
    )
    vecs, poss, lays, infos, steers = [], [], [], [], []
    for plabel, A in acts_h.items():
        for j, layer in enumerate(lay):
            pos = A[:, j]
            neg = acts_s[plabel][:, j] if harmless else None
            kw = dict(method_kw)
            if method == "pca":
                n = min(pos.shape[0], neg.shape[0])
                pos_use, neg_use = pos[:n], neg[:n]
            else:
                pos_use, neg_use = pos, neg
            v, info = extractor(pos_use, neg_use, seed=seed, **kw)
            v = torch.as_tensor(v).float()
            info = dict(info)
            if method in ("diff_means", "mean"):
                steer = v
            else:
                r = diff_of_means(pos, neg, dtype=torch.float64)
                u = v.double() / v.double().norm().clamp(min=1e-300)
                scale = float(r @ u)
                info.update(
                    raw_norm=float(v.double().norm()), scale="diff_of_means projection", scale_value=scale
                )
                v = (u * scale).float()
                steer = v
            vecs.append(v)
            steers.append(steer)
            poss.append(plabel)
            lays.append(layer)
            infos.append(info)
    prov = {
        **h.provenance(),
        "alignscope_version": __version__,
        "method": method,
        "site_kind": "resid_pre",
        "positions_requested": pos_labels,
        "position_notes": notes,
        "layers": lay,
        "seed": int(seed),
        "chat": h.use_chat(chat),
        "padding_side": "left",
        "accumulation": "float64 means",
        "n_harmful": len(harmful),
        "n_harmless": len(harmless),
        "dataset_hash_harmful": sha256_texts(harmful),
        "dataset_hash_harmless": sha256_texts(harmless) if harmless else None,
    }
    if offsets and h.use_chat(chat):
        try:
            prov["eoi_ids"] = h.eoi_ids()
        except AlignscopeError:
            pass
    if meta:
        prov["capture_backend"] = meta.get("backend")
    cands = Candidates(torch.stack(vecs), poss, lays, method, provenance=prov, info=infos)
    return cands, torch.stack(steers)


def find_direction(
    model: Any,
    harmful: Sequence[str],
    harmless: Sequence[str],
    *,
    method: str = "diff_means",
    select: bool = True,
    positions: Sequence[PositionSpec] | PositionSpec = ("eoi", "last"),
    layers: int | Sequence[int] | None = None,
    val_harmful: Sequence[str] | None = None,
    val_harmless: Sequence[str] | None = None,
    val_frac: float = 0.2,
    seed: int = 0,
    batch_size: int = 16,
    chat: bool | None = None,
    refusal_tokens: Sequence[int] | None = None,
    judge: Callable[..., Any] | None = None,
    filter_prompts: bool = False,
    kl_threshold: float = 0.1,
    prune_layer_frac: float = 0.2,
    induce_refusal_threshold: float = 0.0,
    max_new_tokens: int = 24,
    max_rows: int = 256,
    return_selection: bool = False,
    **method_kw: Any,
) -> Direction | tuple[Direction, SelectionResult | None]:
    """Find a (refusal) direction: candidates per (position, layer) and, with ``select``, Arditi's selection.

    Args:
        model: model handle, checkpoint path or registered name (e.g. a zoo organism).
        harmful: harmful (train) prompts.
        harmless: harmless (train) prompts.
        method: ``"diff_means"`` (Arditi), ``"pca"`` (RepE reading vector), ``"logistic"``, or ``"mean"``
            (mean harmful representation, the restoration target of papers.md 1.a; needs one layer and one
            position, is never selected).
        select: run selection; if False, exactly one (position, layer) candidate must be requested.
        positions: candidate positions (``"eoi"`` = every post-instruction template token).
        layers: candidate layers (default all).
        val_harmful: harmful validation prompts (default: a seeded ``val_frac`` split of ``harmful``).
        val_harmless: harmless validation prompts (default: a split of ``harmless``).
        val_frac: validation fraction when splitting.
        seed: seed of the split and of stochastic extractors (recorded).
        batch_size: capture / generation batch size.
        chat: chat template switch.
        refusal_tokens: refusal token ids (default: from the model's own refusals on ``val_harmful``).
        judge: refusal judge ``judge(completion, prompt) -> bool`` (default: the 12 substrings).
        filter_prompts: Arditi's ``filter_train/filter_val``: keep harmful prompts with baseline refusal
            score > 0 and harmless ones with score < 0.
        kl_threshold: selection KL filter.
        prune_layer_frac: discard candidates in this last fraction of layers.
        induce_refusal_threshold: discard candidates whose steering refusal score is below this.
        max_new_tokens: generation length for the refusal tokens.
        max_rows: rows per batched selection forward.
        return_selection: also return the :class:`SelectionResult` (None when ``select=False``).
        **method_kw: extractor arguments.

    Returns:
        The :class:`Direction` (and the selection result if ``return_selection``).

    Raises:
        PromptError: empty prompt sets or a set emptied by ``filter_prompts``.
        SelectionError: no refusals to take tokens from, or no candidate survives.
    """
    h = load_model(model)
    harmful = _nonempty(harmful, "harmful")
    if method == "mean":
        if select:
            raise AlignscopeError(
                "method='mean' gives a restoration target, not a direction to select.",
                "Pass select=False with one layer and one position (e.g. layers=[k], positions='last').",
            )
        cands, _ = find_candidates(
            h,
            harmful,
            [],
            method="mean",
            positions=positions,
            layers=layers,
            seed=seed,
            batch_size=batch_size,
            chat=chat,
        )
        if len(cands) != 1:
            raise AlignscopeError(
                f"method='mean' with select=False needs one candidate; got {len(cands)}.",
                "Pass layers=[k] and positions='last'.",
            )
        d = cands.direction(0)
        return (d, None) if return_selection else d
    harmless = _nonempty(harmless, "harmless")
    split_info: dict[str, Any] = {}
    if not select:
        cands, _ = find_candidates(
            h,
            harmful,
            harmless,
            method=method,
            positions=positions,
            layers=layers,
            seed=seed,
            batch_size=batch_size,
            chat=chat,
            **method_kw,
        )
        if len(cands) != 1:
            raise AlignscopeError(
                f"select=False needs exactly one (position, layer) candidate; {len(cands)} were requested.",
                "Pass layers=[k] and a single position (e.g. positions='last'), or select=True.",
            )
        d = cands.direction(0, {"selected_by": "user (select=False)"})
        return (d, None) if return_selection else d
    if val_harmful is None:
        harmful, val_harmful = split_prompts(harmful, val_frac, seed)
        split_info["val_harmful"] = f"seeded split of harmful (frac={val_frac}, seed={seed})"
    if val_harmless is None:
        harmless, val_harmless = split_prompts(harmless, val_frac, seed + 1)
        split_info["val_harmless"] = f"seeded split of harmless (frac={val_frac}, seed={seed + 1})"
    val_harmful = _nonempty(val_harmful, "harmful validation")
    val_harmless = _nonempty(val_harmless, "harmless validation")
    if refusal_tokens is None:
        toks, rinfo = refusal_tokens_from_model(
            h, val_harmful, judge=judge, max_new_tokens=max_new_tokens, batch_size=batch_size, chat=chat
        )
    else:
        toks = [int(t) for t in refusal_tokens]
        if not toks:
            raise PromptError("refusal_tokens is empty.", "Pass None to derive them, or a list of token ids.")
        rinfo = {
            "refusal_tokens": toks,
            "refusal_token_strings": [h.tokenizer.decode([t]) for t in toks],
            "source": "given by the caller",
        }
    filt: dict[str, Any] = {"enabled": filter_prompts}
    if filter_prompts:
        sets = {
            "harmful": harmful,
            "harmless": harmless,
            "val_harmful": val_harmful,
            "val_harmless": val_harmless,
        }
        for name, ps in sets.items():
            s = refusal_score(last_logits(h, ps, batch_size=batch_size, chat=chat), toks)
            keep = (s > 0) if "harmless" not in name else (s < 0)
            kept = [p for p, k in zip(ps, keep.tolist(), strict=True) if k]
            filt[name] = {"before": len(ps), "after": len(kept)}
            if not kept:
                raise PromptError(
                    f"filter_prompts removed every {name} prompt (refusal score "
                    f"{'<= 0' if 'harmless' not in name else '>= 0'} for all {len(ps)}).",
                    "Pass filter_prompts=False, or check the refusal tokens / that the model refuses.",
                )
            sets[name] = kept
        harmful, harmless, val_harmful, val_harmless = (
            sets["harmful"],
            sets["harmless"],
            sets["val_harmful"],
            sets["val_harmless"],
        )
    cands, steer = find_candidates(
        h,
        harmful,
        harmless,
        method=method,
        positions=positions,
        layers=layers,
        seed=seed,
        batch_size=batch_size,
        chat=chat,
        **method_kw,
    )
    scores = score_candidates(
        h, cands, val_harmful, val_harmless, toks, steer_vectors=steer, max_rows=max_rows, chat=chat
    )
    res = select_candidate(
        cands,
        scores,
        h.n_layers,
        prune_layer_frac=prune_layer_frac,
        kl_threshold=kl_threshold,
        induce_refusal_threshold=induce_refusal_threshold,
    )
    res.refusal_info = rinfo
    sel = res.selected
    extra = {
        "selection": {
            "ablation_refusal": sel["ablation_refusal"],
            "steering_refusal": sel["steering_refusal"],
            "kl": sel["kl"],
            "baseline_harmful": scores.baseline_harmful,
            "baseline_harmless": scores.baseline_harmless,
            "n_candidates": len(cands),
            "n_survivors": sum(1 for r in res.rows if not r["discarded_by"]),
            **res.settings,
        },
        "refusal": rinfo,
        "validation": {
            "n_harmful": len(val_harmful),
            "n_harmless": len(val_harmless),
            "dataset_hash_harmful": sha256_texts(val_harmful),
            "dataset_hash_harmless": sha256_texts(val_harmless),
            **split_info,
        },
        "filter": filt,
    }
    d = cands.direction(res.index, extra)
    return (d, res) if return_selection else d


def directions_cli(
    model: str | os.PathLike | Any,
    harmful_file: str | os.PathLike,
    harmless_file: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    method: str = "diff_means",
    positions: Sequence[PositionSpec] | str = ("eoi", "last"),
    layers: Sequence[int] | None = None,
    column: str | None = None,
    val_harmful_file: str | os.PathLike | None = None,
    val_harmless_file: str | os.PathLike | None = None,
    seed: int = 0,
    batch_size: int = 16,
    filter_prompts: bool = False,
    refusal_tokens: Sequence[int] | None = None,
    **find_kw: Any,
) -> dict[str, Any]:
    """Body of ``alignscope directions --model M --harmful FILE --harmless FILE --out DIR``.

    Reads the prompt files (``.txt``/``.jsonl``/``.json``/``.csv``), runs :func:`find_direction` with
    selection, saves the Direction in ``DIR`` (``direction.safetensors`` + ``direction.json``) and every
    candidate's scores in ``DIR/candidates.json`` (atomic writes). ``find_kw`` go to :func:`find_direction`
    (e.g. ``kl_threshold``, ``max_new_tokens``).

    Returns:
        A summary dict (also printed by the CLI): out dir, site, position, selected scores, candidate count.
    """
    harmful = read_prompts(harmful_file, column)
    harmless = read_prompts(harmless_file, column)
    vh = read_prompts(val_harmful_file, column) if val_harmful_file else None
    vs = read_prompts(val_harmless_file, column) if val_harmless_file else None
    if isinstance(positions, str):
        positions = [p.strip() for p in positions.split(",") if p.strip()]
        positions = [int(p) if p.lstrip("-").isdigit() else p for p in positions]
    d, res = find_direction(
        model,
        harmful,
        harmless,
        method=method,
        positions=positions,
        layers=layers,
        val_harmful=vh,
        val_harmless=vs,
        seed=seed,
        batch_size=batch_size,
        filter_prompts=filter_prompts,
        refusal_tokens=refusal_tokens,
        return_selection=True,
        **find_kw,
    )
    out = Path(out_dir)
    d.provenance["inputs"] = {
        "harmful_file": str(harmful_file),
        "harmless_file": str(harmless_file),
        "val_harmful_file": str(val_harmful_file) if val_harmful_file else None,
        "val_harmless_file": str(val_harmless_file) if val_harmless_file else None,
    }
    d.save(out)
    assert res is not None
    table = res.to_dict()
    table["direction"] = {"site": d.site, "position": d.position, "method": d.method, "norm": d.norm}
    table["provenance"] = {k: v for k, v in d.provenance.items() if k not in ("selection",)}
    atomic_write_json(out / "candidates.json", json.loads(json.dumps(table, default=str)))
    return {
        "out": str(out),
        "site": d.site,
        "position": d.position,
        "method": d.method,
        "norm": d.norm,
        "n_candidates": len(res.rows),
        "selected": res.selected,
        "refusal_tokens": res.refusal_info.get("refusal_token_strings"),
    }
