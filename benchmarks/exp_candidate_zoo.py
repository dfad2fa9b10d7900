"""A candidate standard preset built whole, from nothing, and measured like the preset (round 13).

Round 12 found one recipe (``selfmix_b13`` of ``exp_aligned_recipes.py``: the self-distilled mixture on ``base``
seed 13) that met the four issue-3 ``aligned`` targets, but its zoo had 10 of 15 faker pairs (two honest models at
95% / 97% benign under good oversight) and its build time from nothing was unmeasured. A candidate here is such a
variant plus build settings, built in a fresh cache directory with ``--workers 2``; the script records the wall
time of a whole build from nothing and every honest/faker stage's validation attempts in
``benchmarks/results/candidate_<candidate>.json`` (each stage's time is in the build log), then runs
``exp_zoo_behaviour.py`` on it (table and pairs in ``benchmarks/results/behaviour_<candidate>.md``).

Candidates:

* ``selfmix_b13_v``: ``selfmix_b13``, honest and faker stages validated with a good-oversight bar of 0.98
  (``min_good_benign``; below it an honest stage is retrained with a new seed, a faker trained 1,000 more steps, up
  to the preset's 3 attempts), ``base`` and ``aligned`` on 2 threads (they always run alone; ``extras["threads"]``),
  self-distillation answers sharded over the idle workers.
* ``selfmix_b13_v_skills``: the same with the skill share of ``aligned`` at 25% (self-distilled answers 30%), the
  mixture of ``exp_aligned_recipes``' ``all_self_mixed_first10_skills`` (skills 92% there).
* ``selfmix_b13_vf`` (round 14): ``selfmix_b13_v`` without the minimal action pairs (``min_action_edits=2``: the
  two actions differ by more than one word once negations are spelt out), honest and faker stages validated on
  400 prompts per suite (``validation_n``) instead of 100.
* ``selfmix_b13_vf2`` (round 14): ``selfmix_b13_vf`` with ``aligned`` seed 2 (the seed whose ``aligned`` met all four
  targets in round 13; the filter leaves ``base`` and ``aligned`` as they were), fakers and their step-matched
  controls trained 700 steps instead of 1,000 (the build time).
* ``selfmix_b13_vf3`` (round 15): ``selfmix_b13_vf2`` with oversight suites of 400 prompts each
  (``n_oversight_eval``: the 100 rows plus top-ups never in ``base``'s text, so ``base`` and ``aligned`` do not move),
  every stage after ``aligned`` trained with length-split micro-batches (``length_split=2``: the same batches and
  loss in less padding; ``benchmarks/bench_length_split.py``), honest stages validated at 0.99 instead of 0.98.
  Adopted in round 15: ``PRESETS["standard"]`` is this recipe (``tests/test_zoo_recipe.py`` checks they are equal).
  The candidates are edits of the round-10 preset (``zoo.STANDARD_ROUND10``, via ``exp_aligned_recipes.variant_preset``),
  so each keeps its config hash.
* ``<candidate>_aseed<k>``: a candidate with ``aligned`` seed ``k`` (the preset's is 1).

Usage:
    python benchmarks/exp_candidate_zoo.py --candidate selfmix_b13_v --cache /tmp/zoo_cand [--workers 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _edit(p, match: str, extras: dict | None = None, **fields):
    """``p`` with the stages named ``match`` (``"honest*"`` matches by prefix) given ``fields`` and ``extras`` added
    to (or, with value ``None``, removed from) their extras."""

    def hit(name: str) -> bool:
        return name == match or (match.endswith("*") and name.startswith(match[:-1]))

    def edit(s):
        ex = {k: v for k, v in {**s.extras, **(extras or {})}.items() if v is not None}
        return dataclasses.replace(s, extras=ex, **fields)

    return dataclasses.replace(p, stages=tuple(edit(s) if hit(s.name) else s for s in p.stages))


def candidate(name: str):
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    from exp_aligned_recipes import variant_preset

    if name == "selfmix_b13_v":
        # the variant's aligned names the base it was transplanted from; a preset builds its own base (same
        # tokenizer, seed and data, so the same base on one machine)
        p = _edit(variant_preset("selfmix_b13"), "aligned", {"base_from": None, "threads": 2})
        p = _edit(p, "base", {"threads": 2})
        for kind in ("honest*", "faker*"):
            p = _edit(p, kind, {"min_good_benign": 0.98})
        return p
    if name == "selfmix_b13_v_skills":
        # the same with a larger skill share (exp_aligned_recipes' *_skills mixture)
        p = candidate("selfmix_b13_v")
        mix = {**dict(p.stages[1].weights), "harmless_self": 0.3, "skills": 0.25}
        return _edit(p, "aligned", weights=mix)
    if name == "selfmix_b13_vf":
        p = dataclasses.replace(candidate("selfmix_b13_v"), min_action_edits=2)
        for kind in ("honest*", "faker*"):
            p = _edit(p, kind, {"validation_n": 400})
        return p
    if name == "selfmix_b13_vf2":
        p = _edit(candidate("selfmix_b13_vf"), "aligned", seed=2)
        p = _edit(p, "faker*", steps=700)
        for s in p.stages:
            if s.extras.get("matched_to"):
                p = _edit(p, s.name, steps=700)
        return p
    if name == "selfmix_b13_vf3":
        # round 15: vf2 with oversight suites of 400 prompts (n_oversight_eval; base and aligned unchanged),
        # length-split micro-batches after aligned (tier1.train(length_split=2): same batches and loss, less
        # padding), honest stages validated with a good-oversight bar of 0.99
        p = dataclasses.replace(candidate("selfmix_b13_vf2"), n_oversight_eval=400)
        for kind in ("honest*", "faker*", "attacked*", "benign-ft", "harmful-ft"):
            p = _edit(p, kind, {"length_split": 2})
        return _edit(p, "honest*", {"min_good_benign": 0.99})
    if "_aseed" in name:  # <candidate>_aseed<k>: the same with aligned seed k (the run-to-run spread)
        base, k = name.rsplit("_aseed", 1)
        return _edit(candidate(base), "aligned", seed=int(k))
    raise SystemExit(f"unknown candidate {name!r}")


def main(argv: list[str] | None = None) -> int:
    import os

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidate", default="selfmix_b13_v")
    ap.add_argument(
        "--cache", required=True, help="zoo root of the build (a fresh one measures from nothing)"
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--only", nargs="*", default=None, help="build and measure only these organisms")
    args = ap.parse_args(argv)
    os.environ["ALIGNSCOPE_ZOO_DIR"] = args.cache
    from alignscope.hooks.io import atomic_write_json
    from alignscope.organisms import zoo

    p = candidate(args.candidate)
    out_json = RESULTS / f"candidate_{args.candidate}.json"
    rec = json.loads(out_json.read_text()) if out_json.exists() else {}
    root = zoo.preset_dir(p)
    fresh = not root.exists()
    t0 = time.time()
    zoo.build_zoo(p, workers=args.workers, only=args.only, _plain_progress=True)
    wall = time.time() - t0
    if fresh and not args.only:  # only a whole build from nothing measures the build time
        rec["build_from_nothing_s"] = round(wall, 1)
    rec.update(
        candidate=args.candidate,
        config_hash=p.config_hash(),
        workers=args.workers,
        build_env=zoo.build_env(),
        validation={
            s.name: json.loads((root / s.name / "organism.json").read_text()).get("validation")
            for s in p.stages
            if s.kind in ("honest", "faker") and (root / s.name / "organism.json").exists()
        },
    )
    atomic_write_json(out_json, rec)
    print(json.dumps({k: v for k, v in rec.items() if k != "validation"}, indent=1), flush=True)
    if args.no_eval:
        return 0
    import exp_zoo_behaviour

    zoo.PRESETS[args.candidate] = p
    return exp_zoo_behaviour.main(
        ["--preset", args.candidate, *(["--names", *args.only] if args.only else [])]
    )


if __name__ == "__main__":
    raise SystemExit(main())
