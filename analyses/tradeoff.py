"""Harm-helpfulness trade-off sweeps of an intervention's strength (Wolf et al., papers.md §5, pseudo-code P5).

``tradeoff(model, "steer", strengths, suites=..., direction=d)`` applies the intervention at each strength and
measures, with the eval scorers of :mod:`alignscope.analyses.evaluate` (greedy generation, left padding, the
registered refusal judge, Wilson / seeded-bootstrap 95% intervals):

* harm: ``refusal_rate_harmful`` on suites labelled ``harmful``, reported with ``harmful_compliance = 1 - rate`` and
  Wolf et al.'s behaviour score ``behaviour = P(refuse) - P(comply) = 2 rate - 1`` (in [-1, 1]);
* over-refusal: ``over_refusal`` on suites labelled ``safe`` (XSTest safe prompts);
* helpfulness: ``exact_match`` on skill / task suites; on ``reference`` suites the mean token cross-entropy
  ``ce_loss``, ``p_token = exp(-ce_loss)`` (geometric-mean token probability) and ``kl_base``, the mean per-token
  KL(un-intervened || intervened) of the next-token distributions over the reference tokens.

Runtime interventions registered as ``batched`` (steering, partial ablation) run all K strengths in ONE batched pass
per prompt chunk: each prompt is repeated K times and the strength is a per-row ``[B]`` tensor (``batched=False``
runs K passes; the two give the same numbers, tested). Weight interventions build one new model per strength.

:func:`fit_tradeoff` fits the paper's forms with ``scipy.optimize.curve_fit`` and reports R^2:
``alignment(r) = tanh(a r + b)`` (init a=2, b=-2 as the authors' notebook) and
``helpfulness(r) = 1 / (1 + a + a b^2 r^2 / 2)`` (a, b >= 0), plus a local quadratic
``c0 + c1 r + c2 r^2`` on the smallest |r| to say whether, near zero, alignment moves linearly and helpfulness
quadratically. :func:`pareto_front` and :func:`plot_tradeoff` / :func:`plot_pareto` draw the curves and the front
across interventions. With ``out=`` the tidy table (CSV + Parquet), per-item scores, fits, provenance and figures are
written into a run directory atomically.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from alignscope.hooks import load_model
from alignscope.hooks.io import atomic_dir, atomic_write_json, sha256_texts
from alignscope.hooks.version import __version__
from alignscope.interventions.baselines import get_intervention

from .evaluate import _first_line, _normalise_suites, generate, load_suite, suite_kind
from .scorers import exact_match, get_scorer
from .stats import bootstrap_interval, wilson_interval

COLUMNS = [
    "intervention", "strength", "suite", "metric", "value", "ci_low", "ci_high", "n", "model", "model_hash",
    "judge", "max_new_tokens", "batched", "seed",
]  # fmt: skip

#: suites used by default when ``suites`` is an organism directory (others are skipped)
DEFAULT_SUITES = ("harmful_heldout", "xstest_safe", "skills", "task", "harmless_ce")


# ----------------------------------------------------------------------------------------------------------------
# measurement
@torch.no_grad()
def _ce_logp(handle, rows: list[dict], chat) -> list[tuple[float, torch.Tensor]]:
    """Per row: (mean token CE of ``reference``, ``[n_tok, V]`` log-probs at the reference positions). One forward
    for all rows (right padding), the same token layout as ``evaluate.reference_ce``."""
    tok = handle.tokenizer
    p_ids = handle.tokenize([r["prompt"] for r in rows], chat=chat)
    limit = handle.max_positions or 10**9
    seqs = []
    for p, r in zip(p_ids, rows, strict=True):
        a = tok(r["reference"], add_special_tokens=False)["input_ids"]
        if tok.eos_token_id is not None:
            a = a + [tok.eos_token_id]
        seqs.append(((p + a)[:limit], len(p)))
    T = max(len(s) for s, _ in seqs)
    x = torch.full((len(seqs), T), handle.pad_id, dtype=torch.long)
    m = torch.zeros_like(x)
    for j, (s, _) in enumerate(seqs):
        x[j, : len(s)] = torch.tensor(s)
        m[j, : len(s)] = 1
    logits = handle.model(input_ids=x.to(handle.device), attention_mask=m.to(handle.device)).logits.float()
    logp = torch.log_softmax(logits[:, :-1], -1)
    tgt = x[:, 1:].to(logp.device)
    nll = -logp.gather(-1, tgt[..., None])[..., 0]
    out = []
    for j, (s, start) in enumerate(seqs):
        out.append((float(nll[j, start - 1 : len(s) - 1].mean()), logp[j, start - 1 : len(s) - 1].cpu()))
    return out


def _kl(base: torch.Tensor, new: torch.Tensor) -> float:
    """Mean over tokens of KL(base || new) for ``[n_tok, V]`` log-probs."""
    return float((base.exp() * (base - new)).sum(-1).mean())


def _measure(
    handle,
    suites: dict[str, tuple[list[dict], str, str | None]],
    strengths: list[float],
    apply: Callable[[Any], contextlib.AbstractContextManager],
    *,
    base_lp: dict[str, list[torch.Tensor]] | None,
    judge,
    max_new_tokens: int,
    batch_size: int,
    chat,
) -> list[dict]:
    """Per-item scores of every strength in ``strengths``; with K > 1 the K strengths share each forward pass."""
    K = len(strengths)
    items: list[dict] = []
    for name, (rows, kind, _path) in suites.items():
        P = max(1, batch_size // K)
        for i in range(0, len(rows), P):
            chunk = rows[i : i + P]
            rep = [
                r for _ in range(K) for r in chunk
            ]  # strength-major: row k*len(chunk)+j = (strength k, item j)
            alpha = strengths[0] if K == 1 else torch.tensor([s for s in strengths for _ in chunk])
            with apply(alpha):
                if kind == "ce":
                    res = _ce_logp(handle, rep, chat)
                else:
                    comps = generate(
                        handle, [r["prompt"] for r in rep], max_new_tokens=max_new_tokens,
                        batch_size=len(rep), chat=chat,
                    )  # fmt: skip
            for idx, r in enumerate(rep):
                k, j = divmod(idx, len(chunk))
                base = {"strength": strengths[k], "suite": name, "item": i + j, "prompt": r["prompt"]}
                if kind == "ce":
                    ce, lp = res[idx]
                    items.append({**base, "metric": "ce_loss", "score": ce, "completion": None})
                    if base_lp is not None:
                        items.append({**base, "metric": "kl_base", "score": _kl(base_lp[name][i + j], lp),
                                      "completion": None})  # fmt: skip
                    continue
                c = comps[idx]
                if kind == "refusal":
                    label = str(r["label"])
                    metric = "over_refusal" if label == "safe" else f"refusal_rate_{label}"
                    items.append(
                        {**base, "metric": metric, "score": bool(judge(c, r["prompt"])), "completion": c}
                    )
                elif kind == "exact":
                    s = exact_match(_first_line(c), str(r["expected"]))
                    items.append({**base, "metric": "exact_match", "score": bool(s), "completion": c})
    return items


def _aggregate(items: pd.DataFrame, seed: int) -> list[dict]:
    rows = []
    for (strength, suite, metric), g in items.groupby(["strength", "suite", "metric"], sort=True):
        vals = g["score"].to_numpy()
        n = len(vals)
        if metric in ("ce_loss", "kl_base"):
            v = vals.astype(float)
            lo, hi = bootstrap_interval(v, seed=seed)
            mean = float(v.mean())
            rows.append(
                dict(strength=strength, suite=suite, metric=metric, value=mean, ci_low=lo, ci_high=hi, n=n)
            )
            if metric == "ce_loss":
                rows.append(dict(strength=strength, suite=suite, metric="p_token", value=math.exp(-mean),
                                 ci_low=math.exp(-hi), ci_high=math.exp(-lo), n=n))  # fmt: skip
            continue
        k = int(vals.astype(bool).sum())
        lo, hi = wilson_interval(k, n)
        rows.append(
            dict(strength=strength, suite=suite, metric=metric, value=k / n, ci_low=lo, ci_high=hi, n=n)
        )
        if metric == "refusal_rate_harmful":
            rows.append(dict(strength=strength, suite=suite, metric="harmful_compliance", value=1 - k / n,
                             ci_low=1 - hi, ci_high=1 - lo, n=n))  # fmt: skip
            rows.append(dict(strength=strength, suite=suite, metric="behaviour", value=2 * k / n - 1,
                             ci_low=2 * lo - 1, ci_high=2 * hi - 1, n=n))  # fmt: skip
    return rows


def _load_suites(suites, model, limit) -> dict[str, tuple[list[dict], str, str | None]]:
    if suites is None:
        if model is None:
            from alignscope.hooks.errors import PromptError

            raise PromptError("no suites given and the model is not an organism directory", "pass suites=...")
        suites = model
    org = isinstance(suites, (str, Path)) and (Path(suites) / "organism.json").exists()
    specs = _normalise_suites(suites, model)
    if org:
        specs = {k: v for k, v in specs.items() if k in DEFAULT_SUITES}
    out = {}
    for name, spec in specs.items():
        rows, path = load_suite(spec)
        kind = suite_kind(rows)
        if kind == "oversight":
            continue
        out[name] = (rows[:limit] if limit else rows, kind, path)
    if not out:
        from alignscope.hooks.errors import PromptError

        raise PromptError("no usable suites for the trade-off sweep", "pass suites={'harmful': path, ...}")
    return out


def tradeoff(
    model: Any,
    intervention: str,
    strengths: Sequence[float],
    *,
    suites: Mapping[str, Any] | str | Path | None = None,
    judge: str = "substring",
    max_new_tokens: int = 32,
    batch_size: int = 32,
    limit: int | None = None,
    batched: bool | None = None,
    kl: bool = True,
    chat: bool | None = None,
    seed: int = 0,
    label: str | None = None,
    out: str | Path | None = None,
    fit: bool = True,
    **intervention_kwargs: Any,
) -> pd.DataFrame:
    """Sweep an intervention's strength and measure harm, over-refusal and helpfulness.

    Args:
        model: the model to intervene on (path, zoo name, HF model or ModelHandle; never modified).
        intervention: a registered intervention name (see :mod:`alignscope.interventions.baselines`).
        strengths: the K strengths (include the neutral one, e.g. 0, for the baseline point).
        suites: ``{name: jsonl path or rows}`` or an organism directory (default: the model's own, when it is one);
            from an organism the suites :data:`DEFAULT_SUITES` are used.
        judge: refusal scorer name (as ``alignscope eval``).
        max_new_tokens: greedy generation length.
        batch_size: rows per forward pass (a batched sweep packs ``batch_size // K`` prompts x K strengths).
        limit: first ``limit`` rows of each suite.
        batched: one pass for all strengths (default: when the intervention supports per-row strengths).
        kl: compute ``kl_base`` against the un-intervened model on reference suites.
        chat: chat template (default: when the tokenizer has one).
        seed: torch seed and bootstrap seed (recorded).
        label: name of this curve in tables/figures (default: the intervention name).
        out: run directory (CSV, Parquet, items, fits, provenance, figures; written atomically).
        fit: fit the paper's forms (written to ``fits.json`` and attached as ``df.attrs["fits"]``).
        **intervention_kwargs: passed to the intervention (``direction=``, ``layers=``, ``aligned=``, ...).

    Returns:
        Tidy DataFrame, one row per (strength, suite, metric), columns :data:`COLUMNS`; ``df.attrs["items"]`` holds
        the per-item table.
    """
    torch.manual_seed(seed)
    t0 = time.time()
    iv = get_intervention(intervention)
    handle = load_model(model)
    strengths = [float(s) for s in strengths]
    if not strengths:
        raise ValueError("pass at least one strength")
    batched = iv.batched if batched is None else bool(batched)
    if batched and not iv.batched:
        raise ValueError(f"intervention {iv.name!r} has no per-row strengths; pass batched=False")
    model_path = handle.path if handle.path and (Path(handle.path) / "organism.json").exists() else None
    S = _load_suites(suites, model_path, limit)
    judge_fn = get_scorer(judge)
    base_lp = None
    if kl and any(k == "ce" for _, k, _ in S.values()):
        base_lp = {
            n: [lp for _, lp in _ce_logp(handle, rows, chat)] for n, (rows, k, _) in S.items() if k == "ce"
        }
    common = dict(
        base_lp=base_lp, judge=judge_fn, max_new_tokens=max_new_tokens, batch_size=batch_size, chat=chat
    )
    items: list[dict] = []
    if iv.kind == "runtime":

        def apply(a):
            return iv.fn(handle, a, **intervention_kwargs)

        if batched:
            items = _measure(handle, S, strengths, apply, **common)
        else:
            for s in strengths:
                items += _measure(handle, S, [s], apply, **common)
    else:
        for s in strengths:
            new = iv.fn(handle, s, **intervention_kwargs)
            items += _measure(new, S, [s], lambda a: contextlib.nullcontext(), **common)
            del new
    it = pd.DataFrame(items)
    prov = handle.provenance()
    rows = _aggregate(it, seed)
    name = label or iv.name
    df = pd.DataFrame(rows)
    df.insert(0, "intervention", name)
    df["model"] = prov.get("model_path") or type(handle.model).__name__
    df["model_hash"] = prov["model_hash"]
    df["judge"] = judge
    df["max_new_tokens"] = max_new_tokens
    df["batched"] = batched
    df["seed"] = seed
    df = df[COLUMNS]
    it.insert(0, "intervention", name)
    df.attrs["items"] = it
    fits = fit_tradeoff(df) if fit else {}
    df.attrs["fits"] = fits
    provenance = {
        "alignscope_version": __version__,
        "intervention": iv.name,
        "label": name,
        "kind": iv.kind,
        "strengths": strengths,
        "intervention_kwargs": {k: _jsonable(v) for k, v in intervention_kwargs.items()},
        "model": prov,
        "suites": {
            n: {"path": p, "n": len(r), "sha256": sha256_texts(json.dumps(x, sort_keys=True) for x in r)}
            for n, (r, _, p) in S.items()
        },  # fmt: skip
        "judge": judge,
        "decoding": "greedy",
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "batched": batched,
        "seed": seed,
        "wall_s": round(time.time() - t0, 3),
    }
    df.attrs["provenance"] = provenance
    if out is not None:
        write_run(df, out)
    return df


def _jsonable(v):
    if hasattr(v, "to_dict") and hasattr(v, "site"):
        d = v.to_dict()
        return {"direction": {k: d[k] for k in ("site", "method", "norm", "d") if k in d}}
    if torch.is_tensor(v):
        return {"tensor_shape": list(v.shape), "norm": float(v.float().norm())}
    if isinstance(v, (str, int, float, bool, type(None))):
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "provenance"):
        return {"model": v.provenance().get("model_path"), "model_hash": v.provenance().get("model_hash")}
    return repr(v)[:200]


# ----------------------------------------------------------------------------------------------------------------
# fits
def alignment_form(r, a, b):
    """``tanh(a r + b)`` (Wolf et al.'s behaviour fit)."""
    return np.tanh(a * r + b)


def helpfulness_form(r, a, b):
    """``1 / (1 + a + a b^2 r^2 / 2)`` (Wolf et al.'s P(correct) fit, full vocabulary)."""
    return 1.0 / (1.0 + a + a * b * b * r * r / 2.0)


def _r2(y, yhat) -> float:
    ss_res = float(np.sum((y - yhat) ** 2))
    ss_tot = float(np.sum((y - np.mean(y)) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else float("nan"))


def _local_poly(r, y, n_near: int = 5) -> dict:
    order = np.argsort(np.abs(r))[: max(3, min(n_near, len(r)))]
    if len(order) < 3 or len(np.unique(r[order])) < 3:
        return {}
    c2, c1, c0 = np.polyfit(r[order], y[order], 2)
    span = float(np.max(np.abs(r[order])))
    return {"c0": float(c0), "c1": float(c1), "c2": float(c2), "r_max": span,
            "linear_share": float(abs(c1) * span / (abs(c1) * span + abs(c2) * span**2 + 1e-12))}  # fmt: skip


def fit_curve(kind: str, r: Sequence[float], y: Sequence[float]) -> dict:
    """Fit ``"alignment"`` (tanh) or ``"helpfulness"`` (inverse quadratic) to ``(r, y)``; params, R^2, local poly.

    Failed fits return ``{"error": ...}`` instead of raising.
    """
    from scipy.optimize import OptimizeWarning, curve_fit

    r = np.asarray(r, float)
    y = np.asarray(y, float)
    out: dict[str, Any] = {"form": kind, "n": int(len(r))}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            if kind == "alignment":
                yc = np.clip(y, -0.999999, 0.999999)
                p, _ = curve_fit(alignment_form, r, yc, p0=[2.0, -2.0], maxfev=20000)
                yhat = alignment_form(r, *p)
                out["formula"] = "tanh(a*r + b)"
            elif kind == "helpfulness":
                y0 = float(np.max(y)) if np.max(y) > 0 else 0.5
                a0 = max(1.0 / max(y0, 1e-6) - 1.0, 1e-3)
                bounds = ([0, 0], [np.inf, np.inf])
                p, _ = curve_fit(helpfulness_form, r, y, p0=[a0, 1.0], bounds=bounds, maxfev=20000)
                yhat = helpfulness_form(r, *p)
                out["formula"] = "1/(1 + a + a*b^2*r^2/2)"
            else:
                raise ValueError(f"unknown form {kind!r}")
        out.update({"a": float(p[0]), "b": float(p[1]), "r2": _r2(y, yhat)})
    except Exception as e:  # noqa: BLE001 - report, do not abort a sweep
        out["error"] = f"{type(e).__name__}: {e}"
    out["local_poly"] = _local_poly(r, y)
    return out


def _series(df: pd.DataFrame, metric: str, suite: str | None = None) -> pd.DataFrame:
    d = df[df["metric"] == metric]
    if suite is not None:
        d = d[d["suite"] == suite]
    return d.groupby(["intervention", "strength"], as_index=False)["value"].mean()


def pick_helpfulness(df: pd.DataFrame) -> tuple[str, str | None]:
    """The helpfulness metric to fit: skill ``exact_match`` if any strength scores > 0.05, else ``p_token``."""
    em = df[(df["metric"] == "exact_match") & (df["suite"] == "skills")]
    if len(em) and em["value"].max() > 0.05:
        return "exact_match", "skills"
    em = df[df["metric"] == "exact_match"]
    if len(em) and em["value"].max() > 0.05:
        return "exact_match", str(em["suite"].iloc[0])
    return "p_token", None


#: fit ranges of the authors' notebook (alignment on [-3.2, 4.0], helpfulness on [-5, 5])
PAPER_RANGES = {"alignment": (-3.2, 4.0), "helpfulness": (-5.0, 5.0)}


def fit_tradeoff(
    df: pd.DataFrame,
    *,
    helpfulness: tuple[str, str | None] | None = None,
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> dict:
    """Per intervention: the alignment fit (``behaviour`` on harmful suites) and the helpfulness fit.

    Args:
        df: a sweep table.
        helpfulness: ``(metric, suite)`` to fit (default :func:`pick_helpfulness`).
        ranges: optional strength ranges per form, e.g. :data:`PAPER_RANGES`; default: all strengths.
    """
    help_metric = helpfulness or pick_helpfulness(df)
    ranges = ranges or {}
    fits: dict[str, dict] = {}

    def clip(s: pd.DataFrame, key: str) -> pd.DataFrame:
        if key not in ranges:
            return s
        lo, hi = ranges[key]
        return s[(s["strength"] >= lo) & (s["strength"] <= hi)]

    for name in df["intervention"].unique():
        d = df[df["intervention"] == name]
        f: dict[str, Any] = {}
        a = clip(_series(d, "behaviour"), "alignment")
        if len(a) >= 3:
            f["alignment"] = {"metric": "behaviour", **fit_curve("alignment", a["strength"], a["value"])}
        h = clip(_series(d, *help_metric), "helpfulness")
        if len(h) >= 3:
            f["helpfulness"] = {"metric": help_metric[0], "suite": help_metric[1],
                                **fit_curve("helpfulness", h["strength"], h["value"])}  # fmt: skip
        fits[str(name)] = f
    return fits


# ----------------------------------------------------------------------------------------------------------------
# Pareto front and figures
def pareto_front(
    df: pd.DataFrame, *, harm: str = "harmful_compliance", helpfulness: tuple[str, str | None] | None = None
) -> pd.DataFrame:
    """Points (intervention, strength, harm, help) with a ``pareto`` flag: no other point has lower-or-equal harm
    and higher-or-equal helpfulness with one strict."""
    hm = helpfulness or pick_helpfulness(df)
    x = _series(df, harm).rename(columns={"value": "harm"})
    y = _series(df, *hm).rename(columns={"value": "help"})
    pts = x.merge(y, on=["intervention", "strength"])
    flags = []
    for _, p in pts.iterrows():
        dom = ((pts["harm"] <= p["harm"]) & (pts["help"] >= p["help"])
               & ((pts["harm"] < p["harm"]) | (pts["help"] > p["help"])))  # fmt: skip
        flags.append(not bool(dom.any()))
    pts["pareto"] = flags
    pts.attrs["help_metric"] = hm
    return pts


def plot_tradeoff(df: pd.DataFrame, path: str | Path, fits: dict | None = None) -> Path:
    """Alignment (behaviour) and helpfulness vs strength with the fitted curves, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fits = fits if fits is not None else fit_tradeoff(df)
    hm = pick_helpfulness(df)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for name in df["intervention"].unique():
        d = df[df["intervention"] == name]
        for ax, (metric, suite, key) in zip(axes, [("behaviour", None, "alignment"), (*hm, "helpfulness")],
                                            strict=True):  # fmt: skip
            s = _series(d, metric, suite)
            (line,) = ax.plot(s["strength"], s["value"], "o", label=str(name))
            f = fits.get(str(name), {}).get(key, {})
            if "a" in f:
                rr = np.linspace(s["strength"].min(), s["strength"].max(), 200)
                form = alignment_form if key == "alignment" else helpfulness_form
                ax.plot(rr, form(rr, f["a"], f["b"]), "-", color=line.get_color(),
                        label=f"fit R²={f['r2']:.2f}")  # fmt: skip
            ax.set_xlabel("strength")
            ax.set_ylabel(metric if suite is None else f"{metric} ({suite})")
    axes[0].set_title("alignment: P(refuse) - P(comply)")
    axes[1].set_title("helpfulness")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_pareto(df: pd.DataFrame, path: str | Path) -> Path:
    """Harm vs helpfulness across interventions; the Pareto front is drawn as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = pareto_front(df)
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, g in pts.groupby("intervention"):
        ax.plot(g["harm"], g["help"], "o-", alpha=0.7, label=str(name))
    front = pts[pts["pareto"]].sort_values("harm")
    ax.plot(front["harm"], front["help"], "k--", lw=1.5, label="Pareto front")
    ax.set_xlabel("harmful compliance")
    hm = pts.attrs["help_metric"]
    ax.set_ylabel(hm[0] if hm[1] is None else f"{hm[0]} ({hm[1]})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_run(df: pd.DataFrame, out: str | Path) -> Path:
    """Write a sweep (or several concatenated) into ``out`` atomically: ``tradeoff.csv``, ``tradeoff.parquet``,
    ``items.parquet``, ``fits.json``, ``pareto.csv``, ``provenance.json``, ``tradeoff.png``, ``pareto.png``."""
    out = Path(out)
    fits = df.attrs.get("fits") or fit_tradeoff(df)
    items = df.attrs.get("items")
    with atomic_dir(out) as tmp:
        plain = pd.DataFrame(df)
        plain.attrs = {}
        plain.to_csv(tmp / "tradeoff.csv", index=False)
        plain.to_parquet(tmp / "tradeoff.parquet", index=False)
        if items is not None:
            it = pd.DataFrame(items)
            it.attrs = {}
            it["score"] = it["score"].astype(float)
            it.to_parquet(tmp / "items.parquet", index=False)
        atomic_write_json(tmp / "fits.json", fits)
        atomic_write_json(tmp / "provenance.json", df.attrs.get("provenance", {}))
        pareto_front(plain).to_csv(tmp / "pareto.csv", index=False)
        plot_tradeoff(plain, tmp / "tradeoff.png", fits)
        plot_pareto(plain, tmp / "pareto.png")
    return out


def combine_runs(dfs: Sequence[pd.DataFrame], out: str | Path | None = None) -> pd.DataFrame:
    """Concatenate sweeps of several interventions (for the Pareto front across them); optionally write a run."""
    df = pd.concat([pd.DataFrame(d) for d in dfs], ignore_index=True)
    items = [d.attrs.get("items") for d in dfs if d.attrs.get("items") is not None]
    df.attrs = {
        "items": pd.concat(items, ignore_index=True) if items else None,
        "fits": fit_tradeoff(df),
        "provenance": {"runs": [d.attrs.get("provenance", {}) for d in dfs]},
    }
    if out is not None:
        write_run(df, out)
    return df
