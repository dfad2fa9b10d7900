"""Probes across layers: train a linear probe per layer on a train split, evaluate it on held-out prompts.

Two probes per layer (both on the same seeded, class-stratified split):

* ``diff_means``: score = projection on the train difference of means ``r``; decision threshold = the
  projection of the midpoint of the two train class means (so accuracy needs no extra fitting);
* ``logistic``: :func:`~alignscope.probes.directions.logistic_probe` (L2, lbfgs, z-scored features, threshold 0).

Reported per (method, layer): held-out AUROC with a stratified bootstrap interval
(:func:`~alignscope.probes.directions.auroc_ci`) and held-out accuracy with a stratified percentile-bootstrap
interval (same seed). :func:`plot_layer_curve` draws the paper-style curve (x = block index ``l`` of the
``resid_pre.l`` site, i.e. ``hidden_states[l]``; top axis = relative depth ``l / L``) and saves PNG + SVG
atomically.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from alignscope.hooks.capture import capture
from alignscope.hooks.errors import AlignscopeError, PromptError
from alignscope.hooks.io import atomic_path, atomic_write_json, sha256_texts
from alignscope.hooks.loading import load_model
from alignscope.hooks.version import __version__
from alignscope.probes.directions import auroc_ci, logistic_probe

__all__ = [
    "LayerCurve",
    "probe_curve_from_acts",
    "probe_layers",
    "plot_layer_curve",
    "save_figure",
    "stratified_split",
]

METHODS = ("diff_means", "logistic")


@dataclass
class LayerCurve:
    """Per-layer probe results.

    Attributes:
        rows: one dict per (method, layer): ``method``, ``layer``, ``site``, ``auroc``, ``auroc_lo``,
            ``auroc_hi``, ``accuracy``, ``accuracy_lo``, ``accuracy_hi``, ``n_train``, ``n_test``.
        provenance: model, site kind, positions, split seed, dataset hashes, bootstrap settings, version.
    """

    rows: list[dict[str, Any]]
    provenance: dict[str, Any] = field(default_factory=dict)

    def methods(self) -> list[str]:
        return list(dict.fromkeys(r["method"] for r in self.rows))

    def curve(
        self, method: str, metric: str = "auroc"
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(layers, value, lo, hi)`` arrays of one method and metric (``"auroc"`` or ``"accuracy"``)."""
        rs = sorted((r for r in self.rows if r["method"] == method), key=lambda r: r["layer"])
        if not rs:
            raise AlignscopeError(f"no rows for method {method!r}.", f"Use one of {self.methods()}.")
        return (
            np.array([r["layer"] for r in rs]),
            np.array([r[metric] for r in rs], float),
            np.array([r[f"{metric}_lo"] for r in rs], float),
            np.array([r[f"{metric}_hi"] for r in rs], float),
        )

    def best(self, method: str = "diff_means", metric: str = "auroc") -> dict[str, Any]:
        """The row with the highest held-out ``metric`` (ties: the earliest layer)."""
        rs = [r for r in self.rows if r["method"] == method]
        if not rs:
            raise AlignscopeError(f"no rows for method {method!r}.", f"Use one of {self.methods()}.")
        return max(rs, key=lambda r: (r[metric], -r["layer"]))

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "provenance": self.provenance}

    def save_json(self, path: str | os.PathLike) -> Path:
        atomic_write_json(path, json.loads(json.dumps(self.to_dict(), default=str)))
        return Path(path)


def stratified_split(y: np.ndarray, test_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class split; each class keeps at least one train and one test row."""
    if not 0.0 < test_frac < 1.0:
        raise AlignscopeError(f"test_frac must be in (0, 1); got {test_frac}.", "Use e.g. test_frac=0.3.")
    rng = np.random.default_rng(seed)
    tr, te = [], []
    for c in (0, 1):
        idx = np.flatnonzero(y == c)
        if len(idx) < 2:
            raise PromptError(
                f"class {c} has {len(idx)} prompt(s); a train/test split needs at least 2 per class.",
                "Pass more prompts (or explicit test sets).",
            )
        idx = rng.permutation(idx)
        k = min(len(idx) - 1, max(1, round(test_frac * len(idx))))
        te.append(idx[:k])
        tr.append(idx[k:])
    return np.sort(np.concatenate(tr)), np.sort(np.concatenate(te))


def _acc_ci(correct: np.ndarray, y: np.ndarray, seed: int, n_boot: int, ci: float) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in (0, 1)]
    reps = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups])
        reps[b] = correct[idx].mean()
    a = (1.0 - ci) / 2.0
    return float(np.quantile(reps, a)), float(np.quantile(reps, 1.0 - a))


def _as64(X: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(X).detach().cpu().to(torch.float64)
    if t.ndim != 2 or t.shape[0] == 0:
        raise PromptError(
            f"{name} must be a non-empty [N, d] matrix; got {tuple(t.shape)}.", "Capture one position."
        )
    if not bool(torch.isfinite(t).all()):
        raise AlignscopeError(f"{name} has NaN/inf values.", "Capture in float32.")
    return t


def probe_curve_from_acts(
    pos_acts: Mapping[int, Any],
    neg_acts: Mapping[int, Any],
    *,
    test_pos_acts: Mapping[int, Any] | None = None,
    test_neg_acts: Mapping[int, Any] | None = None,
    test_frac: float = 0.3,
    seed: int = 0,
    methods: Sequence[str] = METHODS,
    n_boot: int = 1000,
    ci: float = 0.95,
    logistic_C: float = 1.0,
    site_kind: str = "resid_pre",
) -> LayerCurve:
    """Probe curve from per-layer activations ``{layer: [N, d]}`` (label 1 = ``pos``).

    Without explicit test activations, one seeded stratified split (shared by all layers) is used.
    """
    for m in methods:
        if m not in METHODS:
            raise AlignscopeError(f"unknown probe method {m!r}.", f"Use any of {METHODS}.")
    layers = [k for k in pos_acts if k in neg_acts]
    if not layers:
        raise PromptError("no layer is present in both activation sets.", "Capture the same layers for both.")
    rows: list[dict[str, Any]] = []
    split_info: dict[str, Any]
    for layer in layers:
        P, N = _as64(pos_acts[layer], "pos"), _as64(neg_acts[layer], "neg")
        if test_pos_acts is not None and test_neg_acts is not None:
            Xtr = torch.cat([P, N])
            ytr = np.r_[np.ones(len(P), np.int64), np.zeros(len(N), np.int64)]
            TP, TN = _as64(test_pos_acts[layer], "test pos"), _as64(test_neg_acts[layer], "test neg")
            Xte = torch.cat([TP, TN])
            yte = np.r_[np.ones(len(TP), np.int64), np.zeros(len(TN), np.int64)]
            split_info = {"split": "explicit test sets"}
        else:
            X = torch.cat([P, N])
            y = np.r_[np.ones(len(P), np.int64), np.zeros(len(N), np.int64)]
            tr, te = stratified_split(y, test_frac, seed)
            Xtr, ytr, Xte, yte = X[tr], y[tr], X[te], y[te]
            split_info = {"split": "stratified", "test_frac": test_frac, "split_seed": seed}
        for m in methods:
            if m == "diff_means":
                mu1, mu0 = Xtr[ytr == 1].mean(0), Xtr[ytr == 0].mean(0)
                r = mu1 - mu0
                scores = (Xte @ r).numpy()
                thr = float(((mu1 + mu0) / 2) @ r)
                pred = scores > thr
                extra = {"threshold": thr, "norm": float(r.norm())}
            else:
                probe = logistic_probe(Xtr, ytr, seed, C=logistic_C, standardize=True)
                scores = probe.score(Xte).numpy()
                pred = scores > 0
                extra = {"C": logistic_C, "converged": probe.params["converged"], "train_auroc": probe.auroc}
            if len(np.unique(yte)) < 2:
                raise PromptError("the test split holds a single class.", "Pass more prompts per class.")
            a = auroc_ci(scores, yte, seed=seed, n_boot=n_boot, ci=ci)
            correct = (pred.astype(np.int64) == yte).astype(float)
            lo, hi = _acc_ci(correct, yte, seed, n_boot, ci)
            rows.append(
                {
                    "method": m,
                    "layer": int(layer),
                    "site": f"{site_kind}.{layer}",
                    "auroc": a["auroc"],
                    "auroc_lo": a["lo"],
                    "auroc_hi": a["hi"],
                    "accuracy": float(correct.mean()),
                    "accuracy_lo": lo,
                    "accuracy_hi": hi,
                    "n_train": int(len(ytr)),
                    "n_test": int(len(yte)),
                    **extra,
                }
            )
    prov = {
        "n_boot": n_boot,
        "ci": ci,
        "seed": seed,
        "methods": list(methods),
        "site_kind": site_kind,
        **split_info,
    }
    return LayerCurve(rows, prov)


def probe_layers(
    model: Any,
    positive: Sequence[str],
    negative: Sequence[str],
    *,
    test_positive: Sequence[str] | None = None,
    test_negative: Sequence[str] | None = None,
    positions: str = "last",
    layers: Sequence[int] | None = None,
    site_kind: str = "resid_pre",
    test_frac: float = 0.3,
    seed: int = 0,
    methods: Sequence[str] = METHODS,
    n_boot: int = 1000,
    ci: float = 0.95,
    batch_size: int = 16,
    chat: bool | None = None,
) -> LayerCurve:
    """Capture every requested layer and compute the held-out probe curve (label 1 = ``positive``).

    Args:
        model: model handle, path or registered name.
        positive: e.g. harmful prompts.
        negative: e.g. harmless prompts.
        test_positive: explicit held-out positives (else a seeded stratified split).
        test_negative: explicit held-out negatives.
        positions: ``"last"`` or ``"mean"`` (one vector per prompt).
        layers: block indices (default all).
        site_kind: ``"resid_pre"`` (default, ``hidden_states[l]``) or ``"resid_post"``.
        test_frac: held-out fraction per class when splitting.
        seed: split, bootstrap and solver seed (recorded).
        methods: subset of ``("diff_means", "logistic")``.
        n_boot: bootstrap replicates for the intervals.
        ci: interval coverage.
        batch_size: capture batch size.
        chat: chat template switch.
    """
    h = load_model(model)
    pos_p, neg_p = list(positive), list(negative)
    if not pos_p or not neg_p:
        raise PromptError("a prompt set is empty.", "Pass positive and negative prompts.")
    if positions not in ("last", "mean"):
        raise AlignscopeError(f"positions must be 'last' or 'mean'; got {positions!r}.", "Use 'last'.")
    L = h.n_layers
    lay = list(range(L)) if layers is None else sorted({int(x) % L for x in layers})
    sites = [f"{site_kind}.{x}" for x in lay]

    def grab(prompts: list[str]) -> dict[int, torch.Tensor]:
        acts = capture(h, prompts, sites, positions, batch_size=batch_size, chat=chat)
        return {x: acts[s] for x, s in zip(lay, sites, strict=True)}

    test = test_positive is not None and test_negative is not None
    curve = probe_curve_from_acts(
        grab(pos_p),
        grab(neg_p),
        test_pos_acts=grab(list(test_positive)) if test else None,
        test_neg_acts=grab(list(test_negative)) if test else None,
        test_frac=test_frac,
        seed=seed,
        methods=methods,
        n_boot=n_boot,
        ci=ci,
        site_kind=site_kind,
    )
    curve.provenance.update(
        {
            **h.provenance(),
            "n_layers": L,
            "positions": positions,
            "chat": h.use_chat(chat),
            "padding_side": "left",
            "dataset_hash_positive": sha256_texts(pos_p),
            "dataset_hash_negative": sha256_texts(neg_p),
            "dataset_hash_test_positive": sha256_texts(list(test_positive)) if test else None,
            "dataset_hash_test_negative": sha256_texts(list(test_negative)) if test else None,
            "alignscope_version": __version__,
        }
    )
    return curve


def plot_layer_curve(
    curve: LayerCurve,
    path: str | os.PathLike,
    *,
    metrics: Sequence[str] = ("auroc", "accuracy"),
    title: str | None = None,
    n_layers: int | None = None,
) -> list[Path]:
    """Plot held-out AUROC / accuracy per layer with bootstrap bands; writes ``path`` as ``.png`` and ``.svg``.

    Returns:
        The two written paths.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n_layers = n_layers or curve.provenance.get("n_layers")
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2), squeeze=False)
    site_kind = curve.provenance.get("site_kind", "resid_pre")
    for ax, metric in zip(axes[0], metrics, strict=True):
        for m in curve.methods():
            x, v, lo, hi = curve.curve(m, metric)
            ax.plot(x, v, marker="o", ms=3, lw=1.5, label=m.replace("_", " "))
            ax.fill_between(x, lo, hi, alpha=0.2)
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        lows = [float(np.nanmin(curve.curve(m, metric)[2])) for m in curve.methods()]
        ax.set_ylim(min(0.4, min(lows) - 0.05), 1.02)
        ax.set_xlabel(f"layer $\\ell$ ({site_kind}: input of block $\\ell$)")
        ax.set_ylabel("held-out " + ("AUROC" if metric == "auroc" else metric))
        ax.grid(alpha=0.3)
        xs = sorted({r["layer"] for r in curve.rows})
        if len(xs) <= 16:
            ax.set_xticks(xs)
        if n_layers:
            top = ax.secondary_xaxis("top", functions=(lambda v: v / n_layers, lambda v: v * n_layers))
            top.set_xlabel("relative depth $\\ell / L$", fontsize=8)
            top.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig: Any, path: str | os.PathLike) -> list[Path]:
    """Save a matplotlib figure as ``<path>.png`` and ``<path>.svg`` (atomic writes), then close it."""
    import matplotlib.pyplot as plt

    base = Path(path)
    base = base.with_suffix("") if base.suffix in (".png", ".svg") else base
    written = []
    for ext in ("png", "svg"):
        target = base.with_name(base.name + f".{ext}")
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=ext, dpi=150)
        written.append(target)
    plt.close(fig)
    return written
