"""Refusal direction on SmolLM2-135M-Instruct, CPU-sized (a stand-in for ``smollm2-safe``; papers.md R.c).

Train: AdvBench vs AlpacaEval prompts; validation: other AdvBench / AlpacaEval prompts; test: JailbreakBench
(harmful) and held-out AlpacaEval (harmless). Candidates are restricted (``--layers``, ``positions="last"``) to fit
a shared CPU. Greedy generation + the 12-substring judge.

Usage:
    python benchmarks/exp_smollm2_refusal_direction.py [--n-train 32] [--n-val 8] [--n-test 24] [--layers 6,10,14,18]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "organisms" / "data"


def prompts(name: str) -> list[str]:
    return [json.loads(x)["prompt"] for x in (DATA / f"{name}.jsonl").read_text().splitlines() if x.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=32)
    ap.add_argument("--n-val", type=int, default=8)
    ap.add_argument("--n-test", type=int, default=24)
    ap.add_argument("--layers", default="6,10,14,18")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--model",
        default=None,
        help="checkpoint or zoo name (default: SmolLM2-135M-Instruct); a zoo entry's own held-out harmless suite "
        "is then used as the harmless test set",
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "refusal_direction_smollm2.json"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from alignscope.hooks import load_model
    from alignscope.hooks.io import atomic_write_json, sha256_texts
    from alignscope.hooks.smollm2 import smollm2_checkpoint
    from alignscope.interventions.steering import ablate, steer
    from alignscope.probes.find import find_direction
    from alignscope.probes.selection import SelectionError, greedy_completions, substring_refusal

    t0 = time.time()
    h = load_model(a.model or smollm2_checkpoint())
    rng = np.random.default_rng(a.seed)
    adv, alp, jbb = prompts("advbench"), prompts("alpaca_eval"), prompts("jailbreakbench")
    adv = [adv[i] for i in rng.permutation(len(adv))]
    alp = [alp[i] for i in rng.permutation(len(alp))]
    n, v, t = a.n_train, a.n_val, a.n_test
    harm_tr, harm_val, harm_te = adv[:n], adv[n : n + v], jbb[:t]
    safe_tr, safe_val, safe_te = alp[:n], alp[n : n + v], alp[n + v : n + v + t]
    meta = Path(h.path or "") / "organism.json"
    if a.model and meta.is_file():  # the organism may have trained on AlpacaEval: test on its held-out suite
        ev = json.loads(meta.read_text())["evals"]["harmless_heldout"]
        rows = [json.loads(x) for x in (Path(h.path) / ev).read_text().splitlines() if x.strip()]
        safe_te = [r["prompt"] for r in rows][:t]
    layers = [int(x) for x in a.layers.split(",")]
    kw = dict(
        val_harmful=harm_val,
        val_harmless=safe_val,
        positions="last",
        layers=layers,
        seed=a.seed,
        max_new_tokens=a.max_new_tokens,
        batch_size=8,
        max_rows=64,
        return_selection=True,
    )
    paper_rule = "ok"
    try:
        d, res = find_direction(h, harm_tr, safe_tr, **kw)
    except SelectionError as e:  # record it, then show the candidates with the KL / steering filters off
        paper_rule = str(e)
        d, res = find_direction(
            h, harm_tr, safe_tr, kl_threshold=float("inf"), induce_refusal_threshold=-float("inf"), **kw
        )
    t_find = time.time() - t0

    def refusal(ps: list[str]) -> float:
        texts, _ = greedy_completions(h, ps, max_new_tokens=a.max_new_tokens, batch_size=8)
        return float(np.mean([substring_refusal(x) for x in texts]))

    g = torch.Generator().manual_seed(a.seed + 12345)
    rnd = torch.randn(d.d, generator=g)
    rnd = rnd / rnd.norm()
    layer = int(d.site.split(".")[1])
    out = {
        "direction": {"site": d.site, "position": d.position, "norm": d.norm, **d.provenance["selection"]},
        "refusal_tokens": d.provenance["refusal"]["refusal_token_strings"],
        "candidates": res.rows,
        "paper_rule": paper_rule,
        "seconds_find": round(t_find, 1),
    }
    out["harmful_test_baseline"] = refusal(harm_te)
    with ablate(h, d):
        out["harmful_test_ablation"] = refusal(harm_te)
    with ablate(h, rnd):
        out["harmful_test_random_ablation"] = refusal(harm_te)
    out["harmless_test_baseline"] = refusal(safe_te)
    with steer(h, d, 1.0, layers=layer):
        out["harmless_test_actadd"] = refusal(safe_te)
    with steer(h, rnd * d.norm, 1.0, layers=layer):
        out["harmless_test_random_actadd"] = refusal(safe_te)
    out["settings"] = {
        "n_train": n,
        "n_val": v,
        "n_test": t,
        "layers": layers,
        "positions": "last",
        "max_new_tokens": a.max_new_tokens,
        "seed": a.seed,
        "judge": "substring",
        "test": "jailbreakbench (harmful) / "
        + ("the organism's harmless_heldout suite" if a.model and meta.is_file() else "held-out alpaca_eval")
        + " (harmless)",
    }
    out["provenance"] = {
        **h.provenance(),
        "dataset_hash_test_harmful": sha256_texts(harm_te),
        "dataset_hash_test_harmless": sha256_texts(safe_te),
    }
    out["seconds"] = round(time.time() - t0, 1)
    atomic_write_json(a.out, json.loads(json.dumps(out, default=str)))
    print(
        json.dumps(
            {k: v for k, v in out.items() if k not in ("candidates", "provenance")}, indent=1, default=str
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
