"""Run every ``benchmarks/bench_*.py`` (``make bench``); each writes ``benchmarks/results/<name>.json`` itself.

Each benchmark runs in its own subprocess (a crash in one does not stop the others) with the hub switched off.
A short ``benchmarks/results/run_all.json`` records what ran, its exit status and how long it took; the exit
status is non-zero if any benchmark failed.

Usage: ``python benchmarks/run_all.py [--only capture,steer] [--nice 10] [-- extra args for every benchmark]``.
CPU timings are only meaningful on an otherwise idle machine; ``--nice`` lowers the priority when it is shared.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))


def discover(only: list[str] | None = None) -> list[Path]:
    """The benchmark scripts, sorted by name; ``only`` filters by name (``capture`` for ``bench_capture.py``)."""
    found = sorted(HERE.glob("bench_*.py"))
    if only:
        wanted = set(only)
        unknown = wanted - {p.stem.removeprefix("bench_") for p in found}
        if unknown:
            raise SystemExit(f"no benchmark named {sorted(unknown)}; found {[p.stem for p in found]}")
        found = [p for p in found if p.stem.removeprefix("bench_") in wanted]
    return found


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    ap = argparse.ArgumentParser(description="Run every benchmarks/bench_*.py.")
    ap.add_argument("--only", default=None, help="comma-separated names, e.g. capture,steer")
    ap.add_argument("--nice", type=int, default=0, help="niceness increment for the benchmark processes")
    args = ap.parse_args(argv)
    scripts = discover(args.only.split(",") if args.only else None)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    record = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "nice": args.nice, "benchmarks": {}}
    failed = []
    for script in scripts:
        name = script.stem.removeprefix("bench_")
        cmd = [sys.executable, str(script), *extra]
        if args.nice:
            cmd = ["nice", "-n", str(args.nice), *cmd]
        print(f"== {name}: {' '.join(cmd)}", flush=True)
        t0 = time.time()
        rc = subprocess.call(cmd, cwd=ROOT, env=env)
        secs = round(time.time() - t0, 1)
        out = HERE / "results" / f"{name}.json"
        record["benchmarks"][name] = {"returncode": rc, "seconds": secs, "result": str(out.relative_to(ROOT))}
        print(f"== {name}: exit {rc} after {secs} s -> {out.relative_to(ROOT)}", flush=True)
        if rc != 0:
            failed.append(name)
    from alignscope.hooks.io import atomic_write_json

    atomic_write_json(HERE / "results" / "run_all.json", record)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
