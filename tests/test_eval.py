"""Behaviour evaluation on real (tiny zoo) models: batching invariance, table shape, metrics, errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from alignscope.analyses.evaluate import COLUMNS, evaluate, limit_rows, load_suite
from alignscope.hooks.errors import PromptError
from alignscope.hooks.loading import load_model
from zoo_fixtures import one_thread


def _rows(path, n):
    return load_suite(path)[0][:n]


def test_batched_equals_one_by_one(tiny_zoo):
    d = tiny_zoo["aligned"]
    # prompts of very different lengths, so left padding is exercised
    rows = _rows(d / "evals/harmful_heldout.jsonl", 6) + _rows(d / "evals/skills.jsonl", 6)
    rows = [{"prompt": r["prompt"], "label": "x"} for r in rows]
    with one_thread():
        _, a = evaluate(d, {"mix": rows}, max_new_tokens=10, batch_size=1, return_items=True)
        _, b = evaluate(d, {"mix": rows}, max_new_tokens=10, batch_size=12, return_items=True)
    assert list(a["completion"]) == list(b["completion"])
    assert len(set(a["completion"])) > 2  # not a degenerate constant output


def test_limit_keeps_the_head_or_a_seeded_subset_in_order(tiny_zoo):
    """``sample="seeded"`` (the audit's default since stop 24) draws ``limit`` rows with the seed, in suite order;
    ``"head"`` keeps the first rows; the table records both; the input list is not modified."""
    rows = [{"prompt": f"p{i}", "label": "x"} for i in range(30)]
    before = [dict(r) for r in rows]
    a, b, c = (
        limit_rows(rows, 8, "seeded", 3),
        limit_rows(rows, 8, "seeded", 3),
        limit_rows(rows, 8, "seeded", 4),
    )
    idx = [int(r["prompt"][1:]) for r in a]
    assert a == b and a != c and len(a) == 8 and idx == sorted(idx) and len(set(idx)) == 8
    assert max(idx) >= 8  # not the head
    assert (
        limit_rows(rows, 8, "head") == rows[:8] and limit_rows(rows, 40, "seeded") == rows and rows == before
    )
    d = tiny_zoo["aligned"]
    x = d / "evals/xstest_safe.jsonl"
    with one_thread():
        df, items = evaluate(
            d, {"x": x}, max_new_tokens=4, limit=6, sample="seeded", seed=1, return_items=True
        )
    assert list(items["prompt"]) == [r["prompt"] for r in limit_rows(load_suite(x)[0], 6, "seeded", 1)]
    assert df["limit"][0] == 6 and df["sample"][0] == "seeded" and df["n"][0] == 6
    with pytest.raises(PromptError, match="sample"):
        evaluate(d, {"x": x}, limit=6, sample="random")
    with pytest.raises(PromptError, match="sample"):
        limit_rows(rows, None, "first")


def test_table_columns_metrics_and_provenance(tiny_zoo):
    d = tiny_zoo["aligned"]
    with one_thread():
        df = evaluate(
            d,
            {
                "h": d / "evals/harmful_heldout.jsonl",
                "s": d / "evals/skills.jsonl",
                "x": d / "evals/xstest_safe.jsonl",
                "ce": d / "evals/harmless_ce.jsonl",
            },
            max_new_tokens=8,
            batch_size=32,
            limit=20,
            seed=5,
        )
    assert list(df.columns) == COLUMNS
    got = dict(zip(zip(df.suite, df.metric, strict=True), df.value, strict=True))
    assert set(got) == {
        ("h", "refusal_rate_harmful"),
        ("s", "exact_match"),
        ("x", "over_refusal"),
        ("ce", "ce_loss"),
    }
    assert (df.ci_low <= df.value).all() and (df.value <= df.ci_high).all()
    assert (df.n == 20).all() and (df.seed == 5).all() and (df.decoding == "greedy").all()
    assert df.model_hash.nunique() == 1 and isinstance(df.model_hash[0], str)
    assert 0.0 < got[("ce", "ce_loss")] < 20.0


def test_ce_tracks_training(tiny_zoo):
    """The aligned model (trained on harmless answers) has lower CE on held-out references than a fresh init."""
    from alignscope.organisms.tier1 import make_llama

    d = tiny_zoo["aligned"]
    h = load_model(d)
    fresh = make_llama(h.tokenizer, d_model=h.d_model, n_layers=h.n_layers, n_heads=4, max_len=1024, seed=0)
    suite = {"ce": d / "evals/harmless_ce.jsonl"}
    with one_thread():
        trained = evaluate(h, suite, limit=20).value[0]
        rand = evaluate(fresh, suite, tokenizer=h.tokenizer, limit=20).value[0]
    assert trained < rand - 1.0


def test_organism_dir_as_suites_and_in_memory_model(tiny_zoo):
    d = tiny_zoo["aligned"]
    meta = json.loads((d / "organism.json").read_text())
    h = load_model(d)
    with one_thread():
        df = evaluate(h.model, d, tokenizer=h.tokenizer, max_new_tokens=4, limit=3)
    assert set(df.suite) == set(meta["evals"])
    assert isinstance(df, pd.DataFrame)


def test_errors_name_problem_and_fix(tiny_zoo, tmp_path):
    d = tiny_zoo["aligned"]
    with pytest.raises(PromptError, match="Fix:"):
        evaluate(d, {"missing": tmp_path / "nope.jsonl"})
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "no prompt field"}) + "\n")
    with pytest.raises(PromptError, match="prompt"):
        evaluate(d, {"bad": bad})


def test_cli_eval_resolves_suite_names_from_organism_json(tiny_zoo):
    from typer.testing import CliRunner

    from alignscope.cli import app

    d = tiny_zoo["aligned"]
    with one_thread():
        r = CliRunner().invoke(app, ["eval", "--model", str(d), "--suite", "skills", "--json"])
        assert r.exit_code == 0, r.output
        rows = json.loads(r.output[r.output.rindex("[\n") :])
        direct = evaluate(d, {"skills": d / "evals" / "skills.jsonl"})
    assert [x["suite"] for x in rows] == ["skills"]
    assert rows[0]["value"] == pytest.approx(float(direct.value.iloc[0]))
    with pytest.raises(PromptError, match="neither a file nor a suite"):
        evaluate(d, ["no_such_suite"])
    with pytest.raises(PromptError, match="neither a file nor a suite"):
        evaluate(d, "no_such_suite")
    with one_thread():  # one suite name as a plain string resolves the same way as in a list
        single = evaluate(d, "skills")
    assert list(single.suite) == ["skills"]
    assert float(single.value.iloc[0]) == pytest.approx(float(direct.value.iloc[0]))
    with one_thread():  # a suite name as a mapping value resolves too, under the mapping's key
        renamed = evaluate(d, {"mine": "skills"})
    assert list(renamed.suite) == ["mine"]
    assert float(renamed.value.iloc[0]) == pytest.approx(float(direct.value.iloc[0]))
    with pytest.raises(PromptError, match="neither a file nor a suite"):
        evaluate(d, {"mine": "no_such_suite"})
