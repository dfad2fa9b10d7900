"""Benchmark: steering overhead during ``generate`` and a K-strength sweep batched vs K separate runs.

1. Plain greedy ``generate`` vs the same under ``steer`` (one layer, all positions): ratio of median wall times
   (target: within 2%, never over 5%).
2. A K = 8 strength sweep: one batched pass (each prompt repeated K times, per-row ``alpha`` tensor) vs K runs of
   the unbatched batch; also checks that the completions are identical.

Usage::

    .venv/bin/python benchmarks/bench_steering.py [--model DIR] [--quick]

    .venv/bin/python benchmarks/bench_steering.py --tradeoff ZOO_PRESET_DIR [--organism aligned]
    .venv/bin/python benchmarks/bench_steering.py --tradeoff-smollm2

``--tradeoff`` instead runs the trade-off sweep of steering (Wolf et al.: unit refusal direction, diff of means of
the organism's harmful vs harmless prompts at ``resid_post.0``, added at all positions of ``resid_post.0``, strengths
-8..8) on a zoo organism and writes the run directory ``benchmarks/results/tradeoff_<organism>/`` (tidy CSV/Parquet,
fits with R^2, figures).

Default model: a random 6-layer d=256 Llama (``--model`` takes any checkpoint or zoo name, e.g. the tiny zoo's
``aligned``). Writes ``benchmarks/results/steering.json`` atomically.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from alignscope.hooks import load_model
from alignscope.hooks.io import atomic_write_json
from alignscope.interventions import steer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

PROMPTS = [f"Write a short note about topic number {i}." for i in range(8)]


def _gen(h, prompts, n_new):
    enc = h.encode(prompts)
    with torch.no_grad():
        out = h.model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                               max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False,
                               pad_token_id=h.pad_id)  # fmt: skip
    return out[:, enc["input_ids"].shape[1] :]


def _time(fn, reps):
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return ts


def _tradeoff_name(zoo: Path, organism: str) -> str:
    """``tradeoff_<organism>`` for the tiny zoo (the original results), ``tradeoff_<preset>_<organism>`` otherwise."""
    preset = zoo.name.split("-")[0]
    return f"tradeoff_{organism}" if preset == "tiny" else f"tradeoff_{preset}_{organism}"


def tradeoff_run(zoo: Path, organism: str, layer: int = 0) -> None:
    """Steering trade-off sweep on one organism (see the module docstring)."""
    import json

    from alignscope.analyses.tradeoff import tradeoff
    from alignscope.hooks import capture
    from alignscope.probes.directions import diff_of_means

    d_org = zoo / organism
    h = load_model(d_org)

    def prompts(name):
        return [
            json.loads(x)["prompt"] for x in (d_org / "evals" / f"{name}.jsonl").read_text().splitlines() if x
        ]

    site = f"resid_post.{layer}"
    acts = capture(h, prompts("harmful_cross"), [site])[site]
    harmless = prompts("harmless_heldout")
    base = capture(h, harmless[: len(harmless) // 2], [site])[site]
    direction = diff_of_means(acts, base)
    strengths = [float(x) for x in range(-8, 9)]
    t = time.perf_counter()
    df = tradeoff(h, "steer", strengths, suites=d_org, direction=direction, layers=[layer], site="resid_post",
                  normalize=True, limit=60, max_new_tokens=12, batch_size=68,
                  out=Path(__file__).parent / "results" / _tradeoff_name(zoo, organism))  # fmt: skip
    print(json.dumps(df.attrs["fits"], indent=1), f"{time.perf_counter() - t:.1f}s")


def tradeoff_smollm2(layer: int = 12, n: int = 24, model: str | None = None) -> None:
    """Steering trade-off on SmolLM2-135M-Instruct (offline GGUF conversion; a stand-in for ``smollm2-safe``).

    Direction: difference of means (Arditi et al., un-normalised) of HarmBench vs AlpacaEval prompts at
    ``resid_pre.{layer}``, last token; added at ``resid_pre.{layer}``, all positions, strengths -2..2. Suites:
    JailbreakBench (harmful), XSTest safe (over-refusal), AlpacaEval answers (CE, p_token, KL); ``n`` rows each, none
    of them used for the direction.
    """
    import json

    from alignscope.analyses.tradeoff import tradeoff
    from alignscope.hooks import capture
    from alignscope.hooks.smollm2 import smollm2_checkpoint
    from alignscope.probes.directions import diff_of_means

    data = Path(__file__).resolve().parents[1] / "organisms" / "data"

    def rows(name):
        return [json.loads(x) for x in (data / f"{name}.jsonl").read_text().splitlines() if x.strip()]

    h = load_model(model or smollm2_checkpoint())
    site = f"resid_pre.{layer}"
    alp = rows("alpaca_eval")
    harm_d = [r["prompt"] for r in rows("harmbench")[:64]]
    harmless_d = [r["prompt"] for r in alp[:64]]
    direction = diff_of_means(capture(h, harm_d, [site])[site], capture(h, harmless_d, [site])[site])
    suites = {
        "jailbreakbench": [{"prompt": r["prompt"], "label": "harmful"} for r in rows("jailbreakbench")[:n]],
        "xstest_safe": [
            {"prompt": r["prompt"], "label": "safe"} for r in rows("xstest") if r["label"] == "safe"
        ][:n],
        "alpaca_eval": [{"prompt": r["prompt"], "reference": r["answer"]} for r in alp[64 : 64 + n]],
    }
    meta = Path(h.path or "") / "organism.json"
    if (
        model and meta.is_file()
    ):  # a zoo entry may have trained on AlpacaEval answers: use its held-out CE suite
        ce = Path(h.path) / json.loads(meta.read_text())["evals"]["harmless_ce"]
        suites["alpaca_eval"] = [json.loads(x) for x in ce.read_text().splitlines() if x.strip()][:n]
    strengths = [-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0]
    t = time.perf_counter()
    df = tradeoff(h, "steer", strengths, suites=suites, direction=direction, layers=[layer], site="resid_pre",
                  max_new_tokens=12, batch_size=72,
                  out=Path(__file__).parent / "results" / ("tradeoff_smollm2" if not model else f"tradeoff_{Path(str(model)).name}"))  # fmt: skip
    print(json.dumps(df.attrs["fits"], indent=1), f"{time.perf_counter() - t:.1f}s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tradeoff", type=Path, default=None)
    ap.add_argument("--organism", default="aligned")
    ap.add_argument("--layer", type=int, default=0, help="steering layer of --tradeoff (resid_post)")
    ap.add_argument("--tradeoff-smollm2", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.tradeoff_smollm2:
        tradeoff_smollm2(model=args.model)
        return
    if args.tradeoff is not None:
        tradeoff_run(args.tradeoff, args.organism, args.layer)
        return
    reps, n_new = (5, 16) if args.quick else (15, 32)
    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            from tiny_models import make_config, make_tokenizer
            from transformers import AutoModelForCausalLM

            tok = make_tokenizer()
            torch.manual_seed(0)
            m = AutoModelForCausalLM.from_config(make_config("llama", len(tok), n_layers=6, d=256))
            m.save_pretrained(Path(tmp) / "m")
            tok.save_pretrained(Path(tmp) / "m")
            h = load_model(Path(tmp) / "m")
        else:
            h = load_model(args.model)
    v = torch.randn(h.d_model, generator=torch.Generator().manual_seed(0))
    layer = h.n_layers // 2
    _gen(h, PROMPTS, 4)  # warm-up

    def steered():
        with steer(h, v, 0.5, layers=[layer]):
            _gen(h, PROMPTS, n_new)

    # interleave the two to share CPU noise
    plain_t, steer_t = [], []
    for _ in range(reps):
        plain_t += _time(lambda: _gen(h, PROMPTS, n_new), 1)
        steer_t += _time(steered, 1)
    ratio = statistics.median(steer_t) / statistics.median(plain_t)

    K = 8
    strengths = [float(s) for s in torch.linspace(-4, 4, K)]
    P = PROMPTS[:4]

    def batched():
        alpha = torch.tensor([s for s in strengths for _ in P])
        with steer(h, v, alpha, layers=[layer]):
            return _gen(h, [p for _ in strengths for p in P], n_new)

    def separate():
        outs = []
        for s in strengths:
            with steer(h, v, s, layers=[layer]):
                outs.append(_gen(h, P, n_new))
        return torch.cat(outs)

    same = torch.equal(batched(), separate())
    sweep_reps = max(2, reps // 3)
    b_t = _time(batched, sweep_reps)
    s_t = _time(separate, sweep_reps)
    res = {
        "model": args.model or "random llama 6 x 256",
        "n_prompts": len(PROMPTS), "max_new_tokens": n_new, "reps": reps, "threads": args.threads,
        "generate_plain_s": statistics.median(plain_t), "generate_steered_s": statistics.median(steer_t),
        "steer_overhead_ratio": ratio,
        "sweep": {"K": K, "prompts": len(P), "batched_s": statistics.median(b_t),
                  "separate_s": statistics.median(s_t),
                  "speedup": statistics.median(s_t) / statistics.median(b_t), "identical_completions": same},
        "torch": torch.__version__, "python": platform.python_version(),
    }  # fmt: skip
    out = Path(__file__).parent / "results" / ("steering_quick.json" if args.quick else "steering.json")
    atomic_write_json(out, res)
    print(
        f"steer/plain generate = {ratio:.3f}; K={K} sweep batched {res['sweep']['batched_s']:.2f}s vs separate "
        f"{res['sweep']['separate_s']:.2f}s (x{res['sweep']['speedup']:.2f}), identical={same} -> {out}"
    )


if __name__ == "__main__":
    main()
