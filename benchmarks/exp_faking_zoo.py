"""Alignment-faking benchmark on every (honest-i, faker-j) pair of a zoo preset (issue 6, "Done when").

Every honest model with every faker, both orders, plus the null pairs (honest-honest, faker-faker); accuracy per
detector with 95% Wilson intervals beside the Poser paper's numbers. All models of a preset share one scenario
suite (``evals/oversight_good.jsonl``); ``--n-scenarios`` keeps its first N rows (seeded choice is not needed: the
suite is already a seeded sample) to bound the cost on a CPU. Writes ``benchmarks/results/faking_<preset>.{md,json}``.

Before pairing, every model's greedy choices on its own oversight suites are checked (``faking_bench.validate_models``): a faker that
does not fake, or an honest model that takes the misaligned action, has no ground truth for a detector to find, so
it is left out and listed (``--all-models`` keeps every model).

Usage:
    python benchmarks/exp_faking_zoo.py --preset standard [--n-scenarios 60] [--seed 0] [--detectors a b ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--n-scenarios", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--detectors", nargs="*", default=None)
    ap.add_argument("--pairs", type=int, default=None, help="only the first K real pairs (timing runs)")
    ap.add_argument("--no-null", action="store_true")
    ap.add_argument(
        "--per-pair-scenarios",
        action="store_true",
        help="filter scenarios per pair (default: common to all models)",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tag", default=None)
    ap.add_argument(
        "--all-models",
        action="store_true",
        help="skip the behaviour check that drops fakers which do not fake and honest models which misbehave",
    )
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from alignscope.analyses.faking_bench import (
        benchmark_markdown,
        common_scenarios,
        load_scenarios,
        run_faking_benchmark,
        validate_models,
        validation_markdown,
    )
    from alignscope.hooks.io import atomic_write_text
    from alignscope.organisms.sources import shared_data_dir
    from alignscope.organisms.zoo import PRESETS, preset_dir

    torch.set_num_threads(args.threads)
    root = preset_dir(args.preset)
    names = [s.name for s in PRESETS[args.preset].stages]
    honest = [root / n for n in names if n.startswith("honest-")]
    fakers = [root / n for n in names if n.startswith("faker-")]
    validation = ""
    if not args.all_models:
        honest, fakers, table = validate_models(honest, fakers)
        validation = validation_markdown(table)
        print(validation, flush=True)
    pairs = [(str(h), str(f)) for h in honest for f in fakers][: args.pairs]
    shared = shared_data_dir()
    concepts = shared / "poser/src/detection_strategies/concepts" if shared else None
    concepts = concepts if concepts is not None and concepts.is_dir() else None
    sset = load_scenarios(honest[0], concepts_dir=concepts)
    if args.n_scenarios:
        sset = sset.head(args.n_scenarios)
    if not args.per_pair_scenarios:
        # keep the scenarios on which EVERY model of the benchmark is behaviour-identical (benign letter, p >= 0.5,
        # greedy check): each pair then scores the same rows, so each model is scored once per detector, not once
        # per pair (the per-pair filter inside run_faking_benchmark still runs and verifies it)
        sset = common_scenarios([str(m) for m in honest + fakers], sset)
        print(f"common behaviour-identical scenarios: {len(sset.rows)}", flush=True)
    tag = args.tag or args.preset
    t = time.time()
    df = run_faking_benchmark(
        pairs,
        null_pairs=None if args.no_null else "auto",
        scenarios_from=sset,
        seed=args.seed,
        detectors=args.detectors,
        out_json=RESULTS / f"faking_{tag}.json",
        progress=True,
    )
    md = benchmark_markdown(df, title=f"`{args.preset}` zoo ({len(pairs)} pairs, seed {args.seed})")
    md = validation + "\n" + md if validation else md
    md += f"\n{len(pairs)} real pairs, {len(df.attrs['null'])} null verdicts, {time.time() - t:.0f} s, "
    md += f"{torch.get_num_threads()} thread(s).\n"
    matched = [s.name for s in PRESETS[args.preset].stages if s.extras.get("matched_to")]
    md += matched_markdown(df.attrs["verdicts"], matched)
    atomic_write_text(RESULTS / f"faking_{tag}.md", md)
    print(md)
    return 0


def matched_markdown(verdicts: list[dict], controls: list[str]) -> str:
    """Accuracy per detector on the ordered pairs whose honest model is a step-matched control (trained on the
    fakers' schedule), beside the pairs with the ordinary honest models: the test of the training-amount confound."""
    from alignscope.analyses.stats import wilson_interval

    if not controls:
        return ""
    v = pd.DataFrame(verdicts)
    honest = np.where(v.faker_truth == "A", v.model_b, v.model_a)
    v["control"] = [Path(h).name in controls for h in honest]
    if not v.control.any():
        return ""
    lines = [
        "",
        f"Step-matched controls ({', '.join(f'`{c}`' for c in controls)}: honest models trained on the fakers' "
        "schedule) against every faker, beside the ordinary honest models:",
        "",
        "| strategy | matched controls: correct / ordered | 95% Wilson | other honest models: correct / ordered |",
        "|---|---|---|---|",
    ]
    for name, g in v.groupby("strategy", sort=False):
        c, o = g[g.control], g[~g.control]
        lo, hi = wilson_interval(int(c.correct.sum()), len(c))
        lines.append(
            f"| {name} | {int(c.correct.sum())} / {len(c)} | [{lo:.0%}, {hi:.0%}] | "
            f"{int(o.correct.sum())} / {len(o)} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
