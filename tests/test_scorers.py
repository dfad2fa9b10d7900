"""The refusal judge agrees exactly with the refusal-direction paper's released substring labels."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import pytest
from alignscope.analyses.scorers import (
    REFUSAL_SUBSTRINGS,
    ScorerError,
    get_scorer,
    list_scorers,
    register_scorer,
)
from alignscope.analyses.stats import StatsError, bootstrap_interval, wilson_interval


def _shared() -> Path:
    env = os.environ.get("ALIGNSCOPE_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


EVAL_FILES = sorted(
    glob.glob(str(_shared() / "refusal_direction/pipeline/runs/*/completions/*_evaluations.json"))
)


@pytest.mark.skipif(not EVAL_FILES, reason="../shared/data/refusal_direction not available")
def test_substring_judge_matches_released_labels():
    judge = get_scorer("substring")
    n = 0
    n_refused = 0
    for f in EVAL_FILES:
        for c in json.loads(Path(f).read_text())["completions"]:
            refused = judge(c["response"], c["prompt"])
            assert refused == (not c["is_jailbreak_substring_matching"]), (f, c["response"][:200])
            n += 1
            n_refused += refused
    # the labelled set has both classes in bulk, so agreement is not trivial
    assert n >= 1000 and 100 < n_refused < n - 100


def test_substring_list_is_the_papers_twelve():
    assert len(REFUSAL_SUBSTRINGS) == 12
    judge = get_scorer("substring")
    for s in REFUSAL_SUBSTRINGS:
        assert judge(f"well, {s.upper()} do that")
    assert not judge("Sure, here is how to bake bread.")


def test_registry_extensible_and_errors_name_fix():
    @register_scorer("test_says_no", overwrite=True)
    def _no(completion, prompt=None):
        return completion.lower().startswith("no")

    assert "test_says_no" in list_scorers()
    assert get_scorer("test_says_no")("No way") is True
    with pytest.raises(ScorerError, match="Fix:"):
        get_scorer("does-not-exist")
    with pytest.raises(ScorerError):
        register_scorer("substring")(lambda c, p=None: False)


def test_wilson_and_bootstrap():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and 0.2 < hi < 0.35
    lo, hi = wilson_interval(50, 100)
    assert lo < 0.5 < hi and abs((lo + hi) / 2 - 0.5) < 1e-9
    with pytest.raises(StatsError):
        wilson_interval(1, 0)
    vals = [float(i % 7) for i in range(200)]
    a = bootstrap_interval(vals, seed=3)
    assert a == bootstrap_interval(vals, seed=3)
    assert a[0] < sum(vals) / len(vals) < a[1]
    assert a != bootstrap_interval(vals, seed=4)
