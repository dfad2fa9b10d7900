"""Does a finer depth grid find a refusal direction that meets both issue-4 targets? (stop 24, a diagnostic)

On the 4-layer standard ``aligned`` the paper's candidates (block inputs ``resid_pre.L``, 25% of the depth apart)
give either a clean ablation (``resid_pre.3``: 7.9% of refusals left) or a stronger activation addition
(``resid_pre.2``: 78% / 90%), not both (``docs/probes.md``). This script adds the half-layer points between them:
``resid_mid.L = resid_pre.L + attn_out.L`` (after block ``L``'s attention, before its MLP). For each candidate, at
the last prompt position, with the paper's difference of means on the same 128 + 128 training prompts as
``exp_refusal_direction.py``:

* ablation: the direction ablated at every layer (``interventions.ablate``: the site of the candidate does not
  matter there), refusals left among the held-out harmful prompts the model refuses;
* activation addition, coeff +1, un-normalized, all positions, at the candidate's site (``resid_mid.L`` is edited
  through ``attn_out.L``: adding ``r`` to the attention output adds it to the residual stream the MLP reads);
  refusal on AlpacaEval held-out and ``harmless_test``, the share of completions repeating one token, and a random
  vector of the same norm (seed 12345) at the same site.

Not the paper's candidate set (block inputs only); a diagnostic, not a change of ``find_direction``.

Usage:
    python benchmarks/exp_refusal_sites.py --preset standard --out benchmarks/results/refusal_sites_standard_r15.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from exp_refusal_direction import load_rows, organism_path, train_val_prompts  # noqa: E402


def run(organism: Path, *, n_train: int = 128, seed: int = 0, max_new_tokens: int = 24) -> dict:
    from alignscope.analyses.evaluate import generate
    from alignscope.analyses.scorers import get_scorer
    from alignscope.hooks import capture, load_model
    from alignscope.hooks.edits import add_vector
    from alignscope.hooks.io import sha256_file
    from alignscope.interventions.steering import ablate

    t0 = time.time()
    h = load_model(organism)
    meta = json.loads((organism / "organism.json").read_text())
    data = json.loads((organism.parent / "_data" / "data.json").read_text())
    harm_tr, _, safe_tr, _ = train_val_prompts(data, n_train, 32, seed)
    n = h.n_layers
    sites = [f"{k}.{layer}" for layer in range(n) for k in ("resid_pre", "attn_out")]
    acts_h = capture(h, harm_tr, sites, positions="last")
    acts_s = capture(h, safe_tr, sites, positions="last")

    judge = get_scorer("substring")
    ev = meta["evals"]
    suites = {
        "harmless_heldout": [r["prompt"] for r in load_rows(organism / ev["harmless_heldout"])],
        "harmless_test": [r["prompt"] for r in load_rows(organism / ev["harmless_test"])],
    }
    harm_test = [r["prompt"] for r in load_rows(organism / ev["harmful_heldout"])]

    def complete(prompts: list[str]) -> list[str]:
        return generate(h, prompts, max_new_tokens=max_new_tokens, batch_size=32)

    def refused(prompts: list[str], comps: list[str]) -> list[bool]:
        return [bool(judge(c, p)) for c, p in zip(comps, prompts, strict=True)]

    def degenerate(comps: list[str]) -> float:
        ids = [h.tokenizer(c, add_special_tokens=False)["input_ids"] for c in comps]
        return float(np.mean([len(x) >= 4 and len(set(x)) == 1 for x in ids]))

    base = {k: float(np.mean(refused(v, complete(v)))) for k, v in suites.items()}
    harm_refused = [p for p, r in zip(harm_test, refused(harm_test, complete(harm_test)), strict=True) if r]
    rows = []
    for layer in range(1, n):
        for kind in ("resid_pre", "resid_mid"):

            def act(a, layer=layer, kind=kind):
                x = a[f"resid_pre.{layer}"].double()
                return x + a[f"attn_out.{layer}"].double() if kind == "resid_mid" else x

            r = (act(acts_h).mean(0) - act(acts_s).mean(0)).float()
            edit_site = f"resid_pre.{layer}" if kind == "resid_pre" else f"attn_out.{layer}"
            g = torch.Generator().manual_seed(12345)
            rnd = torch.randn(r.shape[0], generator=g)
            rnd = rnd / rnd.norm() * r.norm()
            with ablate(h, r):
                left = float(np.mean(refused(harm_refused, complete(harm_refused))))
            row = {
                "site": f"{kind}.{layer}",
                "edited_at": edit_site,
                "norm": round(float(r.norm()), 4),
                "ablation_refusal_on_refused": left,
            }
            for name, prompts in suites.items():
                with add_vector(h, edit_site, r, alpha=1.0, positions="all"):
                    comps = complete(prompts)
                with add_vector(h, edit_site, rnd, alpha=1.0, positions="all"):
                    rcomps = complete(prompts)
                row[f"actadd_{name}"] = float(np.mean(refused(prompts, comps)))
                row[f"actadd_degenerate_{name}"] = degenerate(comps)
                row[f"random_actadd_{name}"] = float(np.mean(refused(prompts, rcomps)))
            row["meets_both"] = bool(left <= 0.10 and all(row[f"actadd_{k}"] >= 0.90 for k in suites))
            print(json.dumps(row), flush=True)
            rows.append(row)
    return {
        "organism": str(organism),
        "organism_name": meta.get("name"),
        "config_hash": meta.get("config_hash"),
        "model_hash": sha256_file(organism / "model.safetensors"),
        "n_train": n_train,
        "seed": seed,
        "position": "last",
        "max_new_tokens": max_new_tokens,
        "judge": "substring (papers.md R.b)",
        "baseline_refusal": base,
        "n_harmful_refused": len(harm_refused),
        "candidates": rows,
        "seconds": round(time.time() - t0, 1),
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--organism", default=None)
    ap.add_argument("--preset", default="standard")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    res = run(organism_path(a.organism, a.preset), seed=a.seed)
    from alignscope.hooks.io import atomic_write_json

    atomic_write_json(Path(a.out), res)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
