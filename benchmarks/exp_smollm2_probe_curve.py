"""Per-layer harmful-vs-harmless probe curve of SmolLM2-135M-Instruct (issue 4: held-out AUROC of the best
layer's direction >= 0.9), with the figure for the docs.

Train: AdvBench (harmful) vs AlpacaEval (harmless) prompts; test: JailbreakBench (harmful, another source) vs
other AlpacaEval prompts. The layer is chosen on a validation split of the *train* prompts (so the reported test
AUROC is not selected on the test set); the max over layers of the test AUROC is reported too.

Usage:
    python benchmarks/exp_smollm2_probe_curve.py [--n-train 100] [--n-test 100] [--threads 1]
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
    ap.add_argument("--model", default=None, help="checkpoint dir (default: the cached SmolLM2 conversion)")
    ap.add_argument("--n-train", type=int, default=100)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "smollm2_probe_curve.json"))
    ap.add_argument("--img", default=str(ROOT / "docs" / "img" / "probes_smollm2_probe_curve"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from alignscope.hooks import capture, load_model
    from alignscope.hooks.io import atomic_write_json, sha256_texts
    from alignscope.probes.layers import plot_layer_curve, probe_curve_from_acts

    path = a.model
    if path is None:
        from alignscope.hooks.smollm2 import smollm2_checkpoint

        path = smollm2_checkpoint()
    h = load_model(path)
    rng = np.random.default_rng(a.seed)
    adv, alp, jbb = prompts("advbench"), prompts("alpaca_eval"), prompts("jailbreakbench")
    adv = [adv[i] for i in rng.permutation(len(adv))[: a.n_train]]
    ai = rng.permutation(len(alp))
    alp_tr = [alp[i] for i in ai[: a.n_train]]
    alp_te = [alp[i] for i in ai[a.n_train : a.n_train + a.n_test]]
    jbb_te = jbb[: a.n_test]
    L = h.n_layers
    sites = [f"resid_pre.{i}" for i in range(L)]
    t0 = time.time()

    def grab(ps: list[str]) -> dict[int, torch.Tensor]:
        acts = capture(h, ps, sites, "last", batch_size=16)
        return {i: acts[s] for i, s in enumerate(sites)}

    tr_h, tr_s, te_h, te_s = grab(adv), grab(alp_tr), grab(jbb_te), grab(alp_te)
    t_cap = time.time() - t0
    test = probe_curve_from_acts(
        tr_h, tr_s, test_pos_acts=te_h, test_neg_acts=te_s, seed=a.seed, n_boot=a.n_boot
    )
    val = probe_curve_from_acts(tr_h, tr_s, test_frac=0.3, seed=a.seed, n_boot=200)
    test.provenance.update(
        {
            **h.provenance(),
            "n_layers": L,
            "positions": "last",
            "chat": h.use_chat(None),
            "train": "advbench (harmful) vs alpaca_eval (harmless)",
            "test": "jailbreakbench (harmful) vs held-out alpaca_eval (harmless)",
            "dataset_hash_train_harmful": sha256_texts(adv),
            "dataset_hash_train_harmless": sha256_texts(alp_tr),
            "dataset_hash_test_harmful": sha256_texts(jbb_te),
            "dataset_hash_test_harmless": sha256_texts(alp_te),
        }
    )
    res: dict = {
        "curve": test.to_dict(),
        "validation_curve": val.to_dict(),
        "capture_seconds": round(t_cap, 1),
    }
    for m in ("diff_means", "logistic"):
        chosen = val.best(m)["layer"]
        row = next(r for r in test.rows if r["method"] == m and r["layer"] == chosen)
        res[m] = {"layer_chosen_on_train_val": chosen, "test_at_chosen": row, "test_max": test.best(m)}
    res["figure"] = [
        str(p)
        for p in plot_layer_curve(
            test,
            a.img,
            title="SmolLM2-135M-Instruct: harmful vs harmless, held-out (JailbreakBench / AlpacaEval)",
        )
    ]
    atomic_write_json(a.out, json.loads(json.dumps(res, default=str)))
    for m in ("diff_means", "logistic"):
        r = res[m]["test_at_chosen"]
        print(
            f"{m}: layer {res[m]['layer_chosen_on_train_val']} (chosen on train/val) test AUROC {r['auroc']:.3f} "
            f"[{r['auroc_lo']:.3f}, {r['auroc_hi']:.3f}] acc {r['accuracy']:.3f}; max over layers "
            f"{res[m]['test_max']['auroc']:.3f} at layer {res[m]['test_max']['layer']}"
        )
    print("wrote", a.out, "capture", round(t_cap, 1), "s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
