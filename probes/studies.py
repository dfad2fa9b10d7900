"""Studies over checkpoints: safety-subspace overlap (papers.md 2, "Safety Subspaces are Not (Linearly)
Distinct") and per-layer AQI (papers.md 4), as functions of checkpoint paths returning tidy rows + figures.

* :func:`update_space_study` -- Exp 3: per-tensor energy bases of the alignment update ``V = aligned - base``
  and of fine-tuning updates ``U_i = ft_i - aligned``; mean per-tensor MSO of each pair against the random
  baseline ``max(k_1, k_2) / d``.
* :func:`activation_space_study` -- Exp 4: last-token ``resid_pre`` activations of harmful vs useful prompts
  per layer, MSO of their energy bases against the baseline, for each model.
* :func:`projection_study` -- Exp 2: project a fine-tuning update onto (``same``) or off (``orth``) the top
  singular subspace of the alignment update, write the new checkpoints atomically (the caller evaluates them
  for harm and utility, e.g. with ``alignscope.analyses.evaluate``).
* :func:`aqi_layer_study` -- per-layer AQI (absolute ``xb_chi`` by default) of safe vs unsafe prompt
  activations for several models with stratified bootstrap intervals, and whether two models' intervals
  are disjoint at each layer.

The tensor math lives in :mod:`alignscope.probes.subspace` and :mod:`alignscope.probes.cluster`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from alignscope.hooks.capture import capture
from alignscope.hooks.errors import CheckpointError, PromptError
from alignscope.hooks.io import atomic_dir, atomic_write_json, sha256_file, sha256_texts
from alignscope.hooks.loading import load_model
from alignscope.hooks.version import __version__
from alignscope.probes.cluster import aqi_bootstrap, cluster_scores
from alignscope.probes.layers import save_figure
from alignscope.probes.subspace import activation_mso, project_updates, update_mso, weight_deltas

__all__ = [
    "load_state_dict",
    "update_space_study",
    "activation_space_study",
    "projection_study",
    "aqi_layer_study",
    "plot_update_mso",
    "plot_activation_mso",
    "plot_aqi_layers",
]

UPDATE_FRACS = (0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99)
ACT_FRACS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory's ``*.safetensors`` files (float dtypes kept).

    Raises:
        CheckpointError: no safetensors weights in ``path``.
    """
    from safetensors.torch import load_file

    p = Path(path)
    files = sorted(p.glob("*.safetensors"))
    if not files:
        raise CheckpointError(
            f"{p} holds no *.safetensors weights.", "Pass a checkpoint directory written by save_pretrained."
        )
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        sd.update(load_file(str(f)))
    return sd


def _ckpt_hash(path: str | os.PathLike) -> str:
    import hashlib

    h = hashlib.sha256()
    for f in sorted(Path(path).glob("*.safetensors")):
        h.update(f.name.encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------
# update space (Exp 3)
# ----------------------------------------------------------------------------------------------------------


def update_space_study(
    base: str | os.PathLike,
    aligned: str | os.PathLike,
    finetuned: Mapping[str, str | os.PathLike],
    *,
    energy_fracs: Sequence[float] = UPDATE_FRACS,
    pairwise: bool = True,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Update-space MSO between the alignment update and each fine-tuning update (and between fine-tunes).

    Args:
        base: pre-alignment checkpoint.
        aligned: aligned checkpoint (``V = aligned - base``).
        finetuned: ``{name: checkpoint}`` fine-tuned from ``aligned`` (``U_name = ft - aligned``).
        energy_fracs: energy fractions of the bases.
        pairwise: also compare every pair of fine-tuning updates (the paper's useful-vs-harmful).
        seed: seed of randomised SVDs for very large tensors (recorded).

    Returns:
        Rows ``{pair, a, b, energy_frac, mso, random_baseline, ratio, n_tensors, n_skipped}``; ``mso`` and
        ``random_baseline`` are means over tensors.
    """
    if not finetuned:
        raise CheckpointError("no fine-tuned checkpoints were given.", "Pass {name: path} of at least one.")
    sd_a = load_state_dict(aligned)
    ups: dict[str, dict[str, torch.Tensor]] = {"alignment": weight_deltas(load_state_dict(base), sd_a)}
    for name, path in finetuned.items():
        ups[name] = weight_deltas(sd_a, load_state_dict(path))
    pairs = [("alignment", n) for n in finetuned]
    if pairwise:
        names = list(finetuned)
        pairs += [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))]
    rows = []
    for a, b in pairs:
        for e in energy_fracs:
            r = update_mso(ups[a], ups[b], e, seed=seed)
            rows.append(
                {
                    "pair": f"{a} vs {b}",
                    "a": a,
                    "b": b,
                    "energy_frac": float(e),
                    "mso": r["mean_mso"],
                    "random_baseline": r["mean_random_baseline"],
                    "ratio": r["mean_mso"] / r["mean_random_baseline"] if r["mean_random_baseline"] else None,
                    "n_tensors": len(r["per_tensor"]),
                    "n_skipped": len(r["skipped"]),
                    "seed": seed,
                }
            )
    return rows


# ----------------------------------------------------------------------------------------------------------
# activation space (Exp 4)
# ----------------------------------------------------------------------------------------------------------


def _acts_per_layer(
    model: Any,
    prompts: list[str],
    layers: list[int] | None,
    positions: str,
    batch_size: int,
    chat: bool | None,
) -> tuple[dict[int, torch.Tensor], Any]:
    h = load_model(model)
    lay = list(range(h.n_layers)) if layers is None else [int(x) % h.n_layers for x in layers]
    sites = [f"resid_pre.{x}" for x in lay]
    acts = capture(h, prompts, sites, positions, batch_size=batch_size, chat=chat)
    return {x: acts[s] for x, s in zip(lay, sites, strict=True)}, h


def activation_space_study(
    models: Mapping[str, Any],
    harmful: Sequence[str],
    useful: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    energy_fracs: Sequence[float] = ACT_FRACS,
    center: bool = False,
    batch_size: int = 16,
    chat: bool | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Activation-space MSO between harmful and useful prompts, per model, layer and energy fraction.

    Activations are last *non-pad* token ``resid_pre`` residuals (left padding, mask-derived positions --
    this fixes the authors' ``h[:, -1]`` pad-reading bug, papers.md 2.e).

    Returns:
        Rows ``{model, layer, site, energy_frac, mso, random_baseline, k_a, k_b, d, n_harmful, n_useful,
        model_hash, dataset_hash_harmful, dataset_hash_useful}``.
    """
    harmful, useful = list(harmful), list(useful)
    if not harmful or not useful:
        raise PromptError("harmful and useful prompt sets must be non-empty.", "Pass both prompt lists.")
    rows = []
    for name, m in models.items():
        ah, h = _acts_per_layer(m, harmful, layers, "last", batch_size, chat)
        au, _ = _acts_per_layer(h, useful, layers, "last", batch_size, chat)
        for layer in ah:
            for e in energy_fracs:
                r = activation_mso(au[layer], ah[layer], e, center=center, seed=seed)
                rows.append(
                    {
                        "model": name,
                        "layer": layer,
                        "site": f"resid_pre.{layer}",
                        "energy_frac": float(e),
                        "mso": r["mso"],
                        "random_baseline": r["random_baseline"],
                        "k_a": r["k_a"],
                        "k_b": r["k_b"],
                        "d": r["d"],
                        "center": center,
                        "n_harmful": len(harmful),
                        "n_useful": len(useful),
                        "model_hash": h.model_hash,
                        "dataset_hash_harmful": sha256_texts(harmful),
                        "dataset_hash_useful": sha256_texts(useful),
                    }
                )
    return rows


# ----------------------------------------------------------------------------------------------------------
# projections (Exp 2)
# ----------------------------------------------------------------------------------------------------------


def projection_study(
    base: str | os.PathLike,
    aligned: str | os.PathLike,
    finetuned: Mapping[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    fracs: Sequence[float] = (0.01, 0.25, 0.5, 0.75, 0.99),
    methods: Sequence[str] = ("same", "orth"),
    seed: int = 0,
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """Write checkpoints ``aligned + P`` with ``P`` the projection of each fine-tuning update onto
    (``same``) / off (``orth``) the top-``frac`` left singular subspace of the alignment update.

    Each new checkpoint ``out_dir/<name>-<method>-<frac>/`` holds the aligned checkpoint's config and tokenizer
    files, ``model.safetensors``, an ``organism.json`` (kind ``projected``, the aligned checkpoint's eval
    suites, the diagnostics) and the ``evals/`` folder when the aligned checkpoint has one; it is written
    atomically and reused when it exists (unless ``overwrite``).

    Returns:
        Rows ``{finetuned, method, frac, path, energy_kept, cosine_task_proj, cosine_task_align, n_tensors}``.
    """
    from safetensors.torch import save_file

    aligned = Path(aligned)
    sd_a = load_state_dict(aligned)
    V = weight_deltas(load_state_dict(base), sd_a)
    out_dir = Path(out_dir)
    meta_a = (
        json.loads((aligned / "organism.json").read_text()) if (aligned / "organism.json").exists() else {}
    )
    rows = []
    for name, path in finetuned.items():
        U = weight_deltas(sd_a, load_state_dict(path))
        for method in methods:
            for frac in fracs:
                target = out_dir / f"{name}-{method}-{frac:g}"
                P, diag = project_updates(V, U, frac, method, seed=seed)
                if overwrite or not (target / "organism.json").exists():
                    new = {k: v.contiguous() for k, v in _apply(sd_a, P).items()}
                    with atomic_dir(target) as tmp:
                        for f in aligned.iterdir():
                            if f.is_file() and f.suffix != ".safetensors" and f.name != "organism.json":
                                shutil.copy2(f, tmp / f.name)
                        if (aligned / "evals").is_dir():
                            shutil.copytree(aligned / "evals", tmp / "evals")
                        save_file(new, str(tmp / "model.safetensors"), metadata={"format": "pt"})
                        atomic_write_json(
                            tmp / "organism.json",
                            {
                                "name": target.name,
                                "kind": "projected",
                                "parent": str(aligned),
                                "purpose": f"aligned + {method}-projection (frac {frac:g}) of the update "
                                f"{name} - aligned onto the alignment update's top singular subspace",
                                "evals": meta_a.get("evals", {}),
                                "projection": {
                                    **diag,
                                    "base": str(base),
                                    "aligned": str(aligned),
                                    "finetuned": str(path),
                                    "finetuned_hash": _ckpt_hash(path),
                                    "aligned_hash": _ckpt_hash(aligned),
                                    "alignscope_version": __version__,
                                },
                            },
                        )
                rows.append(
                    {
                        "finetuned": name,
                        "method": method,
                        "frac": float(frac),
                        "path": str(target),
                        "energy_kept": diag["energy_kept"],
                        "cosine_task_proj": diag["cosine_task_proj"],
                        "cosine_task_align": diag["cosine_task_align"],
                        "n_tensors": diag["n_tensors"],
                        "seed": seed,
                    }
                )
    return rows


def _apply(sd: Mapping[str, torch.Tensor], P: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from alignscope.probes.subspace import apply_update

    return apply_update(sd, P)


# ----------------------------------------------------------------------------------------------------------
# AQI per layer
# ----------------------------------------------------------------------------------------------------------


def aqi_layer_study(
    models: Mapping[str, Any],
    safe: Sequence[str],
    unsafe: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    positions: str = "last",
    combine: str = "xb_chi",
    gamma: float = 0.5,
    n_boot: int = 200,
    ci: float = 0.95,
    seed: int = 0,
    batch_size: int = 16,
    chat: bool | None = None,
    compare: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Per-layer AQI of safe (label 1) vs unsafe (label 0) prompt activations for each model, with intervals.

    Args:
        models: ``{name: model}`` (paths, names or handles).
        safe: safe prompts.
        unsafe: unsafe prompts.
        layers: ``resid_pre`` layers (default all).
        positions: ``"last"`` or ``"mean"`` (prompt activations; the paper's default pooling is the mean).
        combine: ``"xb_chi"`` or ``"dbs_di"`` (absolute normalisation, comparable across models).
        gamma: combination weight.
        n_boot: stratified bootstrap replicates per (model, layer).
        ci: interval coverage.
        seed: bootstrap seed (recorded).
        batch_size: capture batch size.
        chat: chat template switch.
        compare: ``(model_a, model_b)`` to test for disjoint intervals per layer (default: the first two).

    Returns:
        ``{"rows": [{model, layer, site, aqi, lo, hi, davies_bouldin, dunn, xie_beni, calinski_harabasz,
        ...}], "comparison": [{layer, a, b, delta, disjoint}], "provenance": {...}}``.
    """
    safe, unsafe = list(safe), list(unsafe)
    if not safe or not unsafe:
        raise PromptError("safe and unsafe prompt sets must be non-empty.", "Pass both prompt lists.")
    y = [1] * len(safe) + [0] * len(unsafe)
    rows = []
    hashes = {}
    for name, m in models.items():
        acts, h = _acts_per_layer(m, safe + unsafe, layers, positions, batch_size, chat)
        hashes[name] = h.model_hash
        for layer, X in acts.items():
            sc = cluster_scores(X, y, combine=combine, gamma=gamma)
            bs = aqi_bootstrap(X, y, seed=seed, n_boot=n_boot, ci=ci, combine=combine, gamma=gamma)
            rows.append(
                {
                    "model": name,
                    "layer": layer,
                    "site": f"resid_pre.{layer}",
                    "aqi": bs["aqi"],
                    "lo": bs["lo"],
                    "hi": bs["hi"],
                    "std": bs["std"],
                    **{k: sc[k] for k in ("davies_bouldin", "dunn", "xie_beni", "calinski_harabasz")},
                    "aqi_dbs_di": sc["aqi_dbs_di"],
                    "aqi_xb_chi": sc["aqi_xb_chi"],
                }
            )
    names = list(models)
    comp = []
    if compare is None and len(names) >= 2:
        compare = (names[0], names[1])
    if compare is not None:
        a, b = compare
        by = {(r["model"], r["layer"]): r for r in rows}
        for layer in sorted({r["layer"] for r in rows}):
            ra, rb = by.get((a, layer)), by.get((b, layer))
            if ra is None or rb is None:
                continue
            comp.append(
                {
                    "layer": layer,
                    "a": a,
                    "b": b,
                    "delta": rb["aqi"] - ra["aqi"],
                    "disjoint": bool(rb["hi"] < ra["lo"] or rb["lo"] > ra["hi"]),
                    "b_outside_a_interval": bool(rb["aqi"] < ra["lo"] or rb["aqi"] > ra["hi"]),
                }
            )
    prov = {
        "combine": combine,
        "gamma": gamma,
        "norm": "absolute",
        "positions": positions,
        "site_kind": "resid_pre",
        "labels": {"safe": 1, "unsafe": 0},
        "n_safe": len(safe),
        "n_unsafe": len(unsafe),
        "n_boot": n_boot,
        "ci": ci,
        "seed": seed,
        "bootstrap": "stratified percentile",
        "model_hashes": hashes,
        "dataset_hash_safe": sha256_texts(safe),
        "dataset_hash_unsafe": sha256_texts(unsafe),
        "alignscope_version": __version__,
    }
    return {"rows": rows, "comparison": comp, "provenance": prov}


# ----------------------------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_update_mso(
    rows: list[dict[str, Any]], path: str | os.PathLike, *, title: str | None = None
) -> list[Path]:
    """MSO vs energy fraction per update pair, with the random baseline dashed (PNG + SVG)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for pair in dict.fromkeys(r["pair"] for r in rows):
        rs = sorted((r for r in rows if r["pair"] == pair), key=lambda r: r["energy_frac"])
        x = [r["energy_frac"] for r in rs]
        line = ax.plot(x, [r["mso"] for r in rs], marker="o", ms=3, label=pair)[0]
        ax.plot(x, [r["random_baseline"] for r in rs], ls="--", lw=0.9, color=line.get_color())
    ax.set_xlabel("energy fraction of the bases")
    ax.set_ylabel("mean per-tensor MSO (dashed: random)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_activation_mso(
    rows: list[dict[str, Any]],
    path: str | os.PathLike,
    *,
    energy_frac: float | None = None,
    title: str | None = None,
) -> list[Path]:
    """Activation-space MSO (harmful vs useful) per layer for each model at one energy fraction."""
    plt = _plt()
    fracs = sorted({r["energy_frac"] for r in rows})
    e = energy_frac if energy_frac is not None else fracs[len(fracs) // 2]
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for m in dict.fromkeys(r["model"] for r in rows):
        rs = sorted((r for r in rows if r["model"] == m and r["energy_frac"] == e), key=lambda r: r["layer"])
        x = [r["layer"] for r in rs]
        line = ax.plot(x, [r["mso"] for r in rs], marker="o", ms=3, label=m)[0]
        ax.plot(x, [r["random_baseline"] for r in rs], ls="--", lw=0.9, color=line.get_color())
    ax.set_xlabel("layer $\\ell$ (resid_pre: input of block $\\ell$)")
    ax.set_ylabel(f"MSO harmful vs useful (e={e:g}; dashed: random)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_aqi_layers(
    study: Mapping[str, Any], path: str | os.PathLike, *, title: str | None = None
) -> list[Path]:
    """Per-layer AQI of each model with its bootstrap interval (error bars), PNG + SVG."""
    plt = _plt()
    rows = study["rows"]
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    models = list(dict.fromkeys(r["model"] for r in rows))
    for i, m in enumerate(models):
        rs = sorted((r for r in rows if r["model"] == m), key=lambda r: r["layer"])
        x = [r["layer"] + (i - (len(models) - 1) / 2) * 0.08 for r in rs]
        v = [r["aqi"] for r in rs]
        line = ax.plot(x, v, marker="o", ms=4, label=m)[0]
        # intervals drawn as bars (a percentile bootstrap interval need not contain the point estimate)
        ax.vlines(x, [r["lo"] for r in rs], [r["hi"] for r in rs], color=line.get_color(), lw=2.5, alpha=0.45)
    prov = study.get("provenance", {})
    ax.set_xlabel("layer $\\ell$ (resid_pre: input of block $\\ell$)")
    ax.set_ylabel(f"AQI ({prov.get('combine', 'xb_chi')}, absolute; {int(100 * prov.get('ci', 0.95))}% CI)")
    layers = sorted({r["layer"] for r in rows})
    ax.set_xticks(layers)
    ax.set_xlim(layers[0] - 0.5, layers[-1] + 0.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
