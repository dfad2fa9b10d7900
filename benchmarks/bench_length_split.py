"""Step time of zoo stages with length-split micro-batches (``tier1.train(length_split=k)``; round 15).

A zoo step pads its batch to the longest example. In ``attacked-50`` one 64-token harmful pair in a batch of short
downstream-task items pads all 32 rows to 64 tokens (the stage took 119 s against ``attacked-0``'s 30 s for the same
300 steps); in the honest/faker stages cue-only and two-fact Poser scenarios share a batch. ``length_split=k`` sorts
each batch by length and runs it as at most ``k`` passes (cut where it saves the most padding, ``tier1.length_groups``)
whose gradients add up to the batch's, so the batch and the loss are those of one pass.

For each stage, from its built parent (or a fresh model for ``base``), the script trains ``--steps`` steps with each
``--splits`` value, interleaved over ``--reps`` repetitions (so drift of the machine hits every setting alike), with the
stage's own thread count (``zoo.stage_threads``), and reports the median seconds per step, the ratio to
``length_split=1`` measured side by side, and the padded token slots per step of each setting over 500 sampled
batches (exact, no timing). The trained weights are thrown away. Results: ``benchmarks/results/length_split.json``.

Usage (the standard preset is the candidate ``selfmix_b13_vf3``; ``benchmarks/results/length_split.json`` was
measured with this command on its build):
    python benchmarks/bench_length_split.py --candidate selfmix_b13_vf3 --cache ~/.cache/alignscope/zoo \
        [--stages faker-0 attacked-50 ...] [--steps 30] [--splits 1 2 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def padded_slots(
    pools: dict, weights: dict, batch_size: int, batch_mode: str, split: int, n: int = 500
) -> float:
    """Mean padded token slots (rows x padded length, summed over a step's passes) of ``n`` batches drawn as
    ``tier1.train`` draws them (seed 0)."""
    from alignscope.organisms.tier1 import Mixture, length_groups, sample_batch

    mix = Mixture(pools, weights)
    names = [k for k in pools if pools[k] and weights.get(k, 0) > 0]
    w = np.array([weights[k] for k in names], dtype=np.float64)
    w = w / w.sum()
    rng = np.random.default_rng(0)
    tot = 0
    for _ in range(n):
        b = sample_batch(mix, names, w, batch_size, rng, batch_mode)
        lens = [len(ids) for ids, _ in b]
        tot += sum(len(g) * max(lens[i] for i in g) for g in length_groups(lens, split))
    return tot / n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidate", default="selfmix_b13_vf2", help="a candidate of exp_candidate_zoo.py")
    ap.add_argument("--cache", required=True, help="zoo root where the candidate is built")
    ap.add_argument(
        "--stages", nargs="*", default=["aligned", "honest-0", "faker-0", "attacked-50", "attacked-200"]
    )
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--splits", nargs="*", type=int, default=[1, 2, 3])
    ap.add_argument("--out", default=str(RESULTS / "length_split.json"))
    a = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from alignscope.hooks.io import atomic_write_json
    from alignscope.organisms import zoo
    from alignscope.organisms.tier1 import Mixture, make_llama, train
    from exp_candidate_zoo import candidate
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = candidate(a.candidate)
    root = zoo.preset_dir(p, a.cache)
    data = zoo._load_or_prepare_data(p, root)
    tok = AutoTokenizer.from_pretrained(str(root / "_tokenizer"))
    stages = {s.name: s for s in p.stages}
    out: dict = {
        "candidate": a.candidate,
        "config_hash": p.config_hash(),
        "steps": a.steps,
        "reps": a.reps,
        "build_env": zoo.build_env(),
        "stages": {},
    }
    for name in a.stages:
        s = stages[name]
        if s.parent is not None and not zoo._is_built(root / s.parent):
            raise SystemExit(f"{root / s.parent} is not built: build the candidate first")
        threads = zoo.stage_threads(s)
        torch.set_num_threads(threads)
        _, pools, weights, _, _ = zoo.stage_mixture(p, s, data, tok, root, zoo._Progress(False))
        bs = (
            p.scenario_batch_size
            if (s.kind in ("honest", "faker") and p.scenario_batch_size)
            else p.batch_size
        )
        mode = s.extras.get("batch_mode", p.batch_mode)
        times: dict[int, list[float]] = {k: [] for k in a.splits}
        for _ in range(a.reps):
            for k in a.splits:
                if s.parent is None:
                    model = make_llama(
                        tok, d_model=p.d_model, n_layers=p.n_layers, n_heads=p.n_heads, max_len=1024, seed=0
                    )
                else:
                    model = AutoModelForCausalLM.from_pretrained(str(root / s.parent), dtype=torch.float32)
                t0 = time.perf_counter()
                train(
                    model,
                    Mixture(pools, weights),
                    steps=a.steps,
                    batch_size=bs,
                    lr=s.lr,
                    seed=0,
                    loss_on=s.loss_on,
                    pad_id=tok.pad_token_id,
                    batch_mode=mode,
                    logits=s.extras.get("logits", "all"),
                    length_split=k,
                )
                times[k].append((time.perf_counter() - t0) / a.steps)
        med = {k: statistics.median(v) for k, v in times.items()}
        rec = {
            "threads": threads,
            "batch_size": bs,
            "s_per_step": {str(k): round(med[k], 4) for k in a.splits},
            "ratio_to_1": {str(k): round(med[k] / med[a.splits[0]], 3) for k in a.splits},
            "padded_slots_per_step": {
                str(k): round(padded_slots(pools, weights, bs, mode, k), 1) for k in a.splits
            },
            "stage_steps": s.steps,
        }
        out["stages"][name] = rec
        print(name, json.dumps(rec), flush=True)
    atomic_write_json(Path(a.out), out)
    print("wrote", a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
