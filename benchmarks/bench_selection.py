"""Benchmark: batched candidate selection (``probes.selection.score_candidates``) vs the straightforward
per-candidate loop (``score_candidates_loop``): wall time, forward passes, speed-up, max score difference.

Models: the tiny zoo ``aligned`` organism when it is built (or ``--organism DIR``), else a tiny random Llama
built into a temp dir. Results go to ``benchmarks/results/selection.json`` (atomic write).

Usage:
    python benchmarks/bench_selection.py [--organism DIR] [--n-val 16] [--repeats 3] [--threads 1] [--per-prompt-loop]

Two references: the per-candidate loop with batched prompts (``--loop-batch``, default 32) and, with
``--per-prompt-loop``, one forward pass per candidate per prompt (batch size 1).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def _model(organism: str | None) -> tuple[str, str]:
    if organism:
        return organism, "given"
    try:
        from alignscope.organisms.zoo import zoo_path

        return str(zoo_path("aligned", preset="tiny")), "zoo tiny/aligned"
    except Exception:
        sys.path.insert(0, str(HERE.parent / "tests"))
        from tiny_models import build_tiny

        d = Path(tempfile.mkdtemp(prefix="bench-selection-")) / "llama"
        return str(build_tiny("llama", d, seed=0, n_layers=4)), "tiny random llama (4 layers, d=64)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--organism", default=None)
    ap.add_argument("--n-val", type=int, default=16)
    ap.add_argument("--n-train", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-rows", type=int, default=256)
    ap.add_argument("--loop-batch", type=int, default=32)
    ap.add_argument("--per-prompt-loop", action="store_true", help="also time the loop with batch size 1")
    ap.add_argument("--out", default=str(HERE / "results" / "selection.json"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    from alignscope.hooks import load_model
    from alignscope.hooks.io import atomic_write_json, sha256_texts
    from alignscope.probes.find import find_candidates
    from alignscope.probes.selection import score_candidates, score_candidates_loop

    path, kind = _model(a.organism)
    h = load_model(path)
    harm = [f"Explain how to break into house number {i} without a key." for i in range(a.n_train + a.n_val)]
    safe = [f"Describe a pleasant walk through park number {i}." for i in range(a.n_train + a.n_val)]
    data = Path(path).parent / "_data" / "data.json"
    if data.exists():
        d = json.loads(data.read_text())
        harm = sorted({q for q, _ in d["harmful_refuse"]})[: a.n_train + a.n_val]
        safe = sorted({q for q, _ in d["harmless"]})[: a.n_train + a.n_val]
    cands, steer = find_candidates(h, harm[: a.n_train], safe[: a.n_train], positions=("eoi", "last", "mean"))
    hv, sv = harm[a.n_train :], safe[a.n_train :]
    toks = [int(h.tokenizer("I", add_special_tokens=False)["input_ids"][0])]

    def timed(fn):
        ts, out = [], None
        for _ in range(a.repeats):
            t = time.perf_counter()
            out = fn()
            ts.append(time.perf_counter() - t)
        return out, ts

    b, tb = timed(lambda: score_candidates(h, cands, hv, sv, toks, steer_vectors=steer, max_rows=a.max_rows))
    lp, tl = timed(
        lambda: score_candidates_loop(h, cands, hv, sv, toks, steer_vectors=steer, batch_size=a.loop_batch)
    )
    per_prompt = None
    if a.per_prompt_loop:
        p1, t1 = timed(
            lambda: score_candidates_loop(h, cands, hv, sv, toks, steer_vectors=steer, batch_size=1)
        )
        per_prompt = {
            "seconds_median": float(np.median(t1)),
            "seconds": t1,
            "forward_passes": p1.n_forward,
            "speedup_batched_vs_per_prompt": float(np.median(t1) / np.median(tb)),
            "max_abs_score_difference": max(
                float(np.abs(getattr(b, k) - getattr(p1, k)).max())
                for k in ("ablation_refusal", "steering_refusal", "kl")
            ),
        }
    diff = max(
        float(np.abs(getattr(b, k) - getattr(lp, k)).max())
        for k in ("ablation_refusal", "steering_refusal", "kl")
    )
    res = {
        "model": path,
        "model_kind": kind,
        "model_hash": h.model_hash,
        "n_layers": h.n_layers,
        "d_model": h.d_model,
        "n_candidates": len(cands),
        "n_val_harmful": len(hv),
        "n_val_harmless": len(sv),
        "max_rows": a.max_rows,
        "loop_batch_size": a.loop_batch,
        "batched_seconds_median": float(np.median(tb)),
        "loop_seconds_median": float(np.median(tl)),
        "batched_seconds": tb,
        "loop_seconds": tl,
        "speedup": float(np.median(tl) / np.median(tb)),
        "batched_forward_passes": b.n_forward,
        "loop_forward_passes": lp.n_forward,
        "max_abs_score_difference": diff,
        "per_prompt_loop": per_prompt,
        "refusal_tokens": toks,
        "dataset_hash_val_harmful": sha256_texts(hv),
        "dataset_hash_val_harmless": sha256_texts(sv),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(a.out, res)
    print(
        json.dumps(
            {
                k: res[k]
                for k in (
                    "model_kind",
                    "n_candidates",
                    "batched_seconds_median",
                    "loop_seconds_median",
                    "speedup",
                    "batched_forward_passes",
                    "loop_forward_passes",
                    "max_abs_score_difference",
                )
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
