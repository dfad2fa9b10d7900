"""Probe studies on a zoo build (issue 4): subspace overlap + projections, per-layer AQI aligned vs attacked,
and the per-layer harmful-vs-harmless probe curve of ``aligned``.

Writes ``benchmarks/results/probe_studies_<preset>.json`` and figures ``docs/img/probes_<preset>_*.{png,svg}``.

Usage:
    python benchmarks/exp_probe_studies.py [--zoo DIR] [--preset tiny] [--n-boot 200] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def rows(org: Path, suite: str, n: int | None = None) -> list[dict]:
    meta = json.loads((org / "organism.json").read_text())
    lines = (org / meta["evals"][suite]).read_text().splitlines()
    return [json.loads(x) for x in lines if x.strip()][:n]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", default=None, help="preset build dir (holds base/, aligned/, ...)")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--attacked", default=None, help="attacked organism name (default: first attacked-N)")
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--fracs", default="0.25,0.75")
    ap.add_argument("--limit", type=int, default=60, help="prompts per eval suite for the projections")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--proj-dir", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--img", default=str(ROOT / "docs" / "img"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    from alignscope.analyses.evaluate import evaluate
    from alignscope.hooks.io import atomic_write_json
    from alignscope.probes.layers import plot_layer_curve, probe_layers
    from alignscope.probes.studies import (
        activation_space_study,
        aqi_layer_study,
        plot_activation_mso,
        plot_aqi_layers,
        plot_update_mso,
        projection_study,
        update_space_study,
    )

    if a.zoo is None:
        from alignscope.organisms.zoo import preset_dir

        zoo = preset_dir(a.preset)
    else:
        zoo = Path(a.zoo)
    names = sorted(p.name for p in zoo.iterdir() if (p / "organism.json").exists())
    attacked = a.attacked or next(n for n in names if n.startswith("attacked-"))
    base, aligned = zoo / "base", zoo / "aligned"
    fts = {n: zoo / n for n in ("benign-ft", "harmful-ft", attacked)}
    tag = f"probes_{a.preset}"
    img = Path(a.img)
    t0 = time.time()
    out: dict = {"zoo": str(zoo), "preset": a.preset, "attacked": attacked, "seed": a.seed}

    # 1. update-space MSO
    upd = update_space_study(base, aligned, fts, seed=a.seed)
    out["update_space"] = upd
    out["figures"] = {
        "update_mso": [
            str(p)
            for p in plot_update_mso(
                upd, img / f"{tag}_update_mso", title=f"update-space MSO ({a.preset} zoo)"
            )
        ]
    }

    # 2. activation-space MSO: harmful vs useful (skills + task) prompts, per layer
    harmful = [r["prompt"] for r in rows(aligned, "harmful_heldout")]
    useful = [r["prompt"] for r in rows(aligned, "skills")] + [
        r["prompt"] for r in rows(fts["benign-ft"], "task")
    ]
    act = activation_space_study({"base": base, "aligned": aligned, **fts}, harmful, useful, seed=a.seed)
    out["activation_space"] = act
    out["figures"]["activation_mso"] = [
        str(p)
        for p in plot_activation_mso(
            act,
            img / f"{tag}_activation_mso",
            energy_frac=0.3,
            title=f"activation-space MSO, harmful vs useful ({a.preset} zoo)",
        )
    ]

    # 3. projections of fine-tuning updates onto / off the alignment subspace, evaluated for harm and utility
    proj_dir = Path(a.proj_dir or tempfile.mkdtemp(prefix="alignscope-proj-"))
    fracs = [float(x) for x in a.fracs.split(",")]
    proj = projection_study(
        base,
        aligned,
        {k: v for k, v in fts.items() if k != "benign-ft"} | {"benign-ft": fts["benign-ft"]},
        proj_dir,
        fracs=fracs,
        seed=a.seed,
    )
    task_suite = (
        zoo / "benign-ft" / json.loads((zoo / "benign-ft" / "organism.json").read_text())["evals"]["task"]
    )
    suites = {"harmful_heldout": str(aligned / "evals" / "harmful_heldout.jsonl"), "task": str(task_suite)}

    def ev(path: Path | str) -> dict:
        df = evaluate(path, suites, max_new_tokens=12, batch_size=64, limit=a.limit, seed=a.seed)
        return {
            f"{r['suite']}:{r['metric']}": {
                "value": r["value"],
                "lo": r["ci_low"],
                "hi": r["ci_high"],
                "n": r["n"],
            }
            for r in df.to_dict("records")
        }

    ref = {n: ev(p) for n, p in {"aligned": aligned, **fts}.items()}
    for r in proj:
        r["eval"] = ev(r["path"])
    out["projection"] = {"reference": ref, "rows": proj, "dir": str(proj_dir)}

    # 4. per-layer AQI, aligned vs attacked (safe = harmless held-out, unsafe = harmful held-out)
    safe = [r["prompt"] for r in rows(aligned, "harmless_heldout")]
    aqi = aqi_layer_study(
        {"aligned": aligned, attacked: fts[attacked]}, safe, harmful, n_boot=a.n_boot, seed=a.seed
    )
    aqi_mean = aqi_layer_study(
        {"aligned": aligned, attacked: fts[attacked]},
        safe,
        harmful,
        n_boot=a.n_boot,
        seed=a.seed,
        positions="mean",
    )
    out["aqi_last"] = aqi
    out["aqi_mean"] = aqi_mean
    out["figures"]["aqi"] = [
        str(p)
        for p in plot_aqi_layers(
            aqi, img / f"{tag}_aqi_layers", title=f"AQI per layer, last token ({a.preset} zoo)"
        )
    ]

    # 5. probe curve on aligned: harmful vs harmless held-out prompts, 30% held out
    curve = probe_layers(aligned, harmful, safe, seed=a.seed, n_boot=a.n_boot)
    out["probe_curve_aligned"] = curve.to_dict()
    out["figures"]["probe_curve"] = [
        str(p) for p in plot_layer_curve(curve, img / f"{tag}_probe_curve", title=f"aligned ({a.preset} zoo)")
    ]
    out["seconds"] = round(time.time() - t0, 1)
    dest = Path(a.out or ROOT / "benchmarks" / "results" / f"probe_studies_{a.preset}.json")
    atomic_write_json(dest, json.loads(json.dumps(out, default=str)))

    # short summary
    print("update-space (e=0.5):")
    for r in upd:
        if r["energy_frac"] == 0.5:
            print(f"  {r['pair']:<32} MSO {r['mso']:.3f}  random {r['random_baseline']:.3f}")
    print("activation-space (e=0.3):")
    for r in act:
        if r["energy_frac"] == 0.3:
            print(
                f"  {r['model']:<12} layer {r['layer']}  MSO {r['mso']:.3f} random {r['random_baseline']:.3f}"
            )
    print("projections:")
    for n, v in ref.items():
        print(
            f"  {n:<26} harm-refusal {v['harmful_heldout:refusal_rate_harmful']['value']:.2f}  task "
            f"{v['task:exact_match']['value']:.2f}"
        )
    for r in proj:
        v = r["eval"]
        print(
            f"  {r['finetuned']}-{r['method']}-{r['frac']:<8} harm-refusal "
            f"{v['harmful_heldout:refusal_rate_harmful']['value']:.2f}  task {v['task:exact_match']['value']:.2f}"
            f"  energy_kept {r['energy_kept']:.3f}"
        )
    print("AQI (last):")
    for r in aqi["rows"]:
        print(f"  {r['model']:<12} layer {r['layer']}  {r['aqi']:.4f} [{r['lo']:.4f}, {r['hi']:.4f}]")
    print("  comparison:", aqi["comparison"])
    print("probe curve best:", curve.best("diff_means"), curve.best("logistic"))
    print("wrote", dest, "in", out["seconds"], "s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
