"""Restoration's task floor on a zoo's ``attacked-N``: the same run without the floor, with a rollback pass after
every step, and with a looser floor (round 15).

On the round-15 standard zoo ``bench_restoration.py`` stopped after 1-10 of 20 steps because the downstream-task
floor was crossed (``docs/methods/restoration.md``). This script asks what the floor costs: restoration with every
block eligible (``layer_end = L``) at rate 0.01 for 20 steps, (a) with no task metric (no floor, no rollback: how much
refusal the gradient-selected weights bring back, and what the task loses), (b) ``rollback="always"`` (a rollback
pass after every step, not only after a failed warm-up), (c) ``metric_drop=0.10`` instead of 0.05. Same prompts,
task metric and evaluation as ``bench_restoration.py`` (held-out harmful refusal, ``task.jsonl`` exact match).

Usage:
    python benchmarks/exp_restoration_knobs.py --zoo ~/.cache/alignscope/zoo/standard-9e33c9552b --n 50
Writes ``benchmarks/results/restoration_knobs_<zoo dir name>_<n>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", type=Path, required=True)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--rate", type=float, default=0.01)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from alignscope.analyses.evaluate import evaluate
    from alignscope.hooks.io import atomic_write_json
    from alignscope.interventions.restoration import restore

    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    from bench_restoration import zoo_inputs

    A, F = args.zoo / "aligned", args.zoo / f"attacked-{args.n}"
    L = int(json.loads((A / "config.json").read_text())["num_hidden_layers"])
    harm, task_prompts, metric, suites = zoo_inputs(F)
    suites = {k: v for k, v in suites.items() if k != "xstest"}  # refusal and task only

    common = {"layer_end": L, "recovery_rate": args.rate, "steps": 20}
    runs = {
        "no_floor": {"task_metric": None},
        "rollback_always": {"task_metric": metric, "rollback": "always"},
        "metric_drop_0.10": {"task_metric": metric, "metric_drop": 0.10},
    }
    out = {"zoo": str(args.zoo), "n": args.n, "settings": common, "runs": {}}
    for name, kw in runs.items():
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            r = restore(A, F, harm, task_prompts, out=Path(tmp) / "r", **common, **kw)
            df = evaluate(r.model, suites, max_new_tokens=12, batch_size=72)
            out["runs"][name] = {
                "final_step": r.final_step,
                "fraction_restored": r.report["fraction_restored"],
                "status": r.report.get("status"),
                "refusal_harmful": float(df.loc[df.metric == "refusal_rate_harmful", "value"].iloc[0]),
                "task_exact": float(df.loc[df.metric == "exact_match", "value"].iloc[0]),
                "wall_s": round(time.perf_counter() - t, 1),
            }
            print(name, out["runs"][name], flush=True)
    atomic_write_json(HERE / "results" / f"restoration_knobs_{args.zoo.name}_{args.n}.json", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
