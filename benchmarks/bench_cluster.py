"""Benchmark: exact chunked Dunn / AQI on 50,000 x 4,096 vs a NumPy/SciPy ``cdist`` reference.

Usage::

    .venv/bin/python benchmarks/bench_cluster.py            # full: 50,000 x 4,096 (minutes on a CPU)
    .venv/bin/python benchmarks/bench_cluster.py --quick    # smoke run: 3,000 x 512

Writes ``benchmarks/results/cluster.json`` atomically. Each phase runs in a fresh subprocess that first
generates the (seeded) data; peak memory is sampled (psutil RSS every 20 ms) and reported above the RSS at
the start of the phase; the child's ``ru_maxrss`` is also recorded.
The reference materialises the full ``n x n`` float64 matrix (``8 n^2`` bytes: 200 MB at 5,000, 20 GB at
50,000), which is why it runs on the smaller size only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from alignscope.hooks.io import atomic_write_json
from alignscope.probes.cluster import (
    aqi_dbs_di,
    aqi_xb_chi,
    calinski_harabasz,
    davies_bouldin,
    dunn_parts,
    xie_beni,
)
from scipy.spatial.distance import cdist
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score

ROOT = Path(__file__).resolve().parents[1]


class PeakRSS:
    """Context manager sampling this process's RSS; ``.peak_mb`` is the max above the entry RSS."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.proc = psutil.Process()

    def __enter__(self) -> PeakRSS:
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        self.t0 = time.perf_counter()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.t0
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        self.peak_mb = (self.peak - self.base) / 2**20
        self.base_mb = self.base / 2**20


def ref_dunn(X: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Brute force: full float64 ``cdist`` matrix (direct differences)."""
    D = cdist(X, X)
    a, b = y == 0, y == 1
    sep = float(D[np.ix_(a, b)].min())
    diam = float(max(D[np.ix_(a, a)].max(), D[np.ix_(b, b)].max()))
    return sep / diam, sep, diam


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def make_data(n: int, d: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Seeded float32 Gaussian points, two balanced classes, class 1 shifted by +0.05 in every coordinate."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float32)
    y = (torch.randperm(n, generator=g) < n // 2).long().numpy()
    X[torch.as_tensor(y == 1)] += 0.05
    return X, y


def run_phase(phase: str, n: int, d: int, seed: int, block: int, screen: torch.dtype) -> dict[str, Any]:
    """One measured phase, in this (fresh) process: data are generated first, then RSS is sampled."""
    X, y = make_data(n, d, seed)
    out: dict[str, Any] = {"phase": phase, "n": n, "d": d, "input_mib": X.numel() * 4 / 2**20}
    with PeakRSS() as m:
        if phase == "ours_dunn":
            dp = dunn_parts(X, y, block=block, screen_dtype=screen)
            out.update(dp, dunn=dp["min_between"] / dp["max_diameter"])
        elif phase == "ours_other":
            chi, dbs, xb = calinski_harabasz(X, y), davies_bouldin(X, y), xie_beni(X, y)
            out.update(calinski_harabasz=chi, davies_bouldin=dbs, xie_beni=xb)
        elif phase == "scipy_cdist_dunn":
            X64 = X.double().numpy()
            dv, sep, diam = ref_dunn(X64, y)
            out.update(dunn=dv, min_between=sep, max_diameter=diam)
        elif phase == "sklearn_ch_db":
            X64 = X.double().numpy()
            out.update(
                calinski_harabasz=calinski_harabasz_score(X64, y), davies_bouldin=davies_bouldin_score(X64, y)
            )
        else:
            raise SystemExit(f"unknown phase {phase}")
    out.update(
        seconds=m.seconds,
        peak_rss_above_start_mib=m.peak_mb,
        rss_start_mib=m.base_mb,
        ru_maxrss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    return out


def spawn(phase: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--phase",
        phase,
        "--n",
        str(n),
        "--d",
        str(args.d),
        "--seed",
        str(args.seed),
        "--block",
        str(args.block),
        "--screen-dtype",
        args.screen_dtype,
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"phase {phase} failed:\n{r.stderr[-3000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    print(
        f"{phase:18s} n={n:6d}: {res['seconds']:8.1f} s, peak +{res['peak_rss_above_start_mib']:.0f} MiB",
        flush=True,
    )
    return res


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--d", type=int, default=4_096)
    ap.add_argument("--ref-n", type=int, default=5_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--block", type=int, default=2048)
    ap.add_argument("--screen-dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--quick", action="store_true", help="3,000 x 512 with a 1,000-point reference")
    ap.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cluster.json")
    args = ap.parse_args(argv)
    screen = getattr(torch, args.screen_dtype)
    if args.phase:
        print(json.dumps(run_phase(args.phase, args.n, args.d, args.seed, args.block, screen)))
        return {}
    if args.quick:
        args.n, args.d, args.ref_n = 3_000, 512, 1_000

    res: dict[str, Any] = {
        "config": {
            "n": args.n,
            "d": args.d,
            "ref_n": args.ref_n,
            "seed": args.seed,
            "block": args.block,
            "screen_dtype": args.screen_dtype,
            "data": "torch.randn float32 (seeded), two balanced classes, class 1 shifted by +0.05 per coordinate",
            "memory": "each phase runs in a fresh process; peak RSS sampled every 20 ms above the RSS after data creation",
        },
        "machine": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_start": os.getloadavg(),
        },
    }
    large = spawn("ours_dunn", args.n, args)
    other = spawn("ours_other", args.n, args)
    large["full_distance_matrix_would_be_mib"] = 8 * args.n**2 / 2**20
    res["large_dunn"] = large
    res["large_other_indices"] = other
    res["large_aqi"] = {
        "seconds_total": large["seconds"] + other["seconds"],
        "aqi_dbs_di": aqi_dbs_di(other["davies_bouldin"], large["dunn"]),
        "aqi_xb_chi": aqi_xb_chi(other["xie_beni"], other["calinski_harabasz"]),
    }
    ours = spawn("ours_dunn", args.ref_n, args)
    ref = spawn("scipy_cdist_dunn", args.ref_n, args)
    ref["rel_diff_vs_ours"] = rel(ours["dunn"], ref["dunn"])
    res["ref_size_ours"] = ours
    res["ref_size_scipy_cdist"] = ref
    sk = spawn("sklearn_ch_db", args.ref_n, args)
    oo = spawn("ours_other", args.ref_n, args)
    res["ref_size_ch_db"] = {
        "sklearn_seconds": sk["seconds"],
        "ours_ch_db_xb_seconds": oo["seconds"],
        "rel_diff_chi": rel(oo["calinski_harabasz"], sk["calinski_harabasz"]),
        "rel_diff_dbs": rel(oo["davies_bouldin"], sk["davies_bouldin"]),
    }
    res["machine"]["loadavg_end"] = os.getloadavg()
    res["summary"] = (
        f"Dunn exact on {args.n}x{args.d} fp32: {large['seconds']:.0f} s, +{large['peak_rss_above_start_mib']:.0f} MiB "
        f"peak RSS over the {large['input_mib']:.0f} MiB input (a full n x n float64 matrix would be "
        f"{large['full_distance_matrix_would_be_mib']:.0f} MiB); all four indices + AQI "
        f"{res['large_aqi']['seconds_total']:.0f} s. At {args.ref_n}: ours {ours['seconds']:.1f} s / "
        f"+{ours['peak_rss_above_start_mib']:.0f} MiB vs scipy cdist {ref['seconds']:.1f} s / "
        f"+{ref['peak_rss_above_start_mib']:.0f} MiB, relative difference {ref['rel_diff_vs_ours']:.1e}"
    )
    if not math.isfinite(ref["rel_diff_vs_ours"]) or ref["rel_diff_vs_ours"] > 1e-6:
        raise SystemExit(f"Dunn disagrees with the reference: {ref['rel_diff_vs_ours']}")
    atomic_write_json(args.out, res)
    print(res["summary"])
    print(f"wrote {args.out}")
    return res


if __name__ == "__main__":
    main()
