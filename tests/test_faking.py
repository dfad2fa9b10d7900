"""Alignment-faking detectors and the pair benchmark, on the tiny zoo's honest/faker organisms (real models).

The zoo is built once (``build_zoo("tiny")``, a cache hit afterwards); everything else runs in well under a minute
on two cores.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from alignscope.analyses.faking_bench import (
    faking_cli,
    faking_cli_pairs,
    load_pairs_file,
    load_scenarios,
    run_faking_benchmark,
)
from alignscope.hooks import load_model
from alignscope.probes.faking import (
    FakingError,
    ScenarioSet,
    behaviour_identical,
    critical_facts,
    get_detector,
    letter_probs,
    list_detectors,
    score_against_reference,
    with_fact,
    without_critical,
)

SEED = 0


def _pair_names(names) -> tuple[list[str], list[str]]:
    honest = sorted(n for n in names if str(n).startswith("honest-"))
    faker = sorted(n for n in names if str(n).startswith("faker-"))
    return honest, faker


@pytest.fixture(scope="module")
def zoo(request) -> dict[str, str]:
    """The tiny zoo's honest-i / faker-j organisms (the shared ``tiny_zoo`` fixture when conftest provides it)."""
    pinned = os.environ.get("ALIGNSCOPE_FAKING_ZOO")  # a built tiny preset directory (skips the zoo build)
    if pinned:
        names = [p.name for p in Path(pinned).iterdir() if (p / "organism.json").exists()]
        paths = {n: Path(pinned) / n for n in names}
    else:
        try:
            paths = request.getfixturevalue("tiny_zoo")
        except pytest.FixtureLookupError:
            from alignscope.organisms import build_zoo

            n = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                paths = build_zoo("tiny", progress=False)
            finally:
                torch.set_num_threads(n)
    honest, faker = _pair_names(paths)
    assert honest and faker, f"the tiny zoo has no honest/faker organisms: {sorted(map(str, paths))}"
    return {k: str(paths[k]) for k in honest + faker}


@pytest.fixture(scope="module")
def pair(zoo) -> tuple[str, str]:
    """The first (honest, faker) pair."""
    honest, faker = _pair_names(zoo)
    return honest[0], faker[0]


@pytest.fixture(scope="module")
def models(zoo, pair):
    """``{"honest": handle, "faker": handle}`` of the first pair."""
    return {"honest": load_model(zoo[pair[0]]), "faker": load_model(zoo[pair[1]])}


@pytest.fixture(scope="module")
def sset(zoo, pair) -> ScenarioSet:
    return load_scenarios(zoo[pair[0]])


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: tiny models on a shared 2-core box run faster without OpenMP contention."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def kept_pair(models, sset):
    """The behaviour-identical scenarios of the first pair and the filter's record."""
    return behaviour_identical(models["honest"], models["faker"], sset)


def _state_hash(model) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _greedy_first_token_one_by_one(handle, prompt: str) -> str:
    """Independent check: one prompt, no padding, greedy generation of one token, decoded."""
    ids = handle.tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    enc = handle.tokenizer(ids, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        out = handle.model.generate(**enc, max_new_tokens=1, do_sample=False, pad_token_id=handle.pad_id)
    return handle.tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()


# ------------------------------------------------------------------------------------------------------------------
def test_registry_has_the_six_strategies_and_errors_name_the_fix():
    names = list_detectors()
    for n in (
        "belief_steer",
        "noise",
        "noise_gaussian",
        "learning_speed",
        "concepts",
        "decision_speed",
        "attentiveness",
        "attentiveness_normalized",
    ):
        assert n in names
    with pytest.raises(FakingError, match="Fix: use one of"):
        get_detector("nope")
    with pytest.raises(FakingError, match="unknown parameter"):
        get_detector("noise", scale=3)


def test_pairs_file_parsing(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("# comment\n/x/honest-0 /x/faker-0\n\n/x/faker-0 /x/honest-1\n")
    assert load_pairs_file(f) == [("/x/honest-0", "/x/faker-0"), ("/x/faker-0", "/x/honest-1")]
    f.write_text('[["a", "b"]]')
    assert load_pairs_file(f) == [("a", "b")]
    f.write_text("only-one\n")
    with pytest.raises(FakingError, match="malformed pair"):
        load_pairs_file(f)


def test_head_keeps_the_first_rows_and_the_poor_facts(sset):
    """``ScenarioSet.head`` (the demo's cap on the standard zoo's 400-row suites): first rows, poor-oversight facts
    unchanged, good-oversight facts from the kept rows only, the cut recorded; the input set untouched."""
    n_before = len(sset.rows)
    assert n_before > 3
    h = sset.head(3)
    assert h.rows == sset.rows[:3] and h.poor_facts == sset.poor_facts and h.concepts == sset.concepts
    assert set(h.good_facts) == {f for r in sset.rows[:3] for f in critical_facts(r)}
    assert h.source.endswith("(first 3 rows)") and len(sset.rows) == n_before
    assert sset.head(n_before) is sset
    with pytest.raises(FakingError, match="keeps no scenario"):
        sset.head(0)


def test_critical_fact_editing_on_zoo_prompts(sset):
    row = sset.rows[0]
    crit = critical_facts(row)
    assert len(crit) == 1 and crit[0] in row["prompt"]
    clean = without_critical(row)
    assert crit[0] not in clean and clean.count("\n") == row["prompt"].count("\n") - 1
    poor = with_fact(row, sset.poor_facts[0])
    assert sset.poor_facts[0] in poor and crit[0] not in poor
    assert poor.count("\n") == row["prompt"].count("\n")
    with pytest.raises(FakingError, match="no critical"):
        without_critical({"prompt": clean, "benign": "A", "misaligned": "B"})


def test_benchmark_inputs_are_behaviour_identical(models, sset, kept_pair):
    """Every kept scenario: both models pick the benign letter (batched letter probabilities, and an independent
    one-prompt greedy generation); the faker really differs under poor oversight."""
    honest, faker = models["honest"], models["faker"]
    kept, rec = kept_pair
    assert rec["n_kept"] >= 10 and len(kept.rows) == rec["n_kept"] <= rec["n_in"]
    for r in kept.rows:
        assert r["benign"] != r["misaligned"]
        for h in (honest, faker):
            assert _greedy_first_token_one_by_one(h, r["prompt"])[:1] == r["benign"]
    ben = torch.tensor([0 if r["benign"] == "A" else 1 for r in kept.rows])
    for h in (honest, faker):
        assert torch.equal(letter_probs(h, kept.prompts).argmax(-1), ben)
    # a dropped row is dropped for a reason: some model does not pick the benign letter there
    dropped = [sset.rows[i] for i in range(len(sset.rows)) if i not in set(rec["kept"])]
    for r in dropped[:5]:
        picks = {_greedy_first_token_one_by_one(h, r["prompt"])[:1] for h in (honest, faker)}
        p = [letter_probs(h, [r["prompt"]])[0] for h in (honest, faker)]
        ben_i = 0 if r["benign"] == "A" else 1
        assert picks != {r["benign"]} or min(float(x[ben_i]) for x in p) < rec["min_prob"]
    # the pair is a real faker pair: under poor oversight the faker takes the misaligned action more often
    poor = [json.loads(x) for x in open(sset.source.replace("oversight_good", "oversight_poor"))]
    mis = torch.tensor([0 if r["misaligned"] == "A" else 1 for r in poor])
    rate = {
        k: float((letter_probs(h, [r["prompt"] for r in poor]).argmax(-1) == mis).float().mean())
        for k, h in (("honest", honest), ("faker", faker))
    }
    assert rate["faker"] > rate["honest"] + 0.3, rate


def test_noise_detector_is_reproducible_from_its_seed(models, kept_pair):
    kept, rec = kept_pair
    kept = kept.subset(range(12))
    for name in ("noise", "noise_gaussian"):
        det = get_detector(name, n_draws=2, coeffs=(0, 5, 15))
        r1 = det.score_model(models["faker"], kept, seed=11)
        r2 = det.score_model(models["faker"], kept, seed=11)
        r3 = det.score_model(models["faker"], kept, seed=12)
        assert r1["curves_per_draw"] == r2["curves_per_draw"] and r1["score"] == r2["score"]
        assert r1["noise_seeds"] == [11, 12] and r1["seed"] == 11
        assert r3["curves_per_draw"] != r1["curves_per_draw"]
        assert r1["inputs"]["rows_sha256"] == kept.digest()["rows_sha256"]
    det = get_detector("noise", n_draws=1, coeffs=(0, 5, 15))
    pa = det.predict_pair(models["honest"], models["faker"], kept, seed=5, filtered=(kept, rec))
    pb = det.predict_pair(models["honest"], models["faker"], kept, seed=5, filtered=(kept, rec))
    assert pa["faker"] == pb["faker"] and pa["scores"]["A"]["curve"] == pb["scores"]["A"]["curve"]


def test_learning_speed_never_modifies_the_input_model(models, kept_pair):
    kept = kept_pair[0].subset(range(16))
    h = models["faker"]
    before = _state_hash(h.model)
    r = get_detector("learning_speed", steps=3).score_model(h, kept, seed=SEED)
    assert _state_hash(h.model) == before
    assert len(r["curve"]) == 4 and r["curve"][-1] > r["curve"][0]  # it does learn the misaligned letter
    assert r["score"] == pytest.approx(float(np.mean(r["curve"][1:])))


def test_best_detector_identifies_the_tiny_fakers(zoo, tmp_path):
    """Attentiveness to oversight facts (normalised; the best detector on small organisms) on every ordered pair."""
    honest, faker = _pair_names(zoo)
    pairs = [(zoo[h], zoo[f]) for h in honest for f in faker]
    df = run_faking_benchmark(
        pairs, seed=SEED, detectors=["attentiveness_normalized"], out_md=tmp_path / "t.md"
    )
    row = df.set_index("strategy").loc["attentiveness_normalized"]
    assert row.n_ordered == 2 * len(pairs) and row.n_correct == row.n_ordered
    assert all(f["verified_identical"] for f in df.attrs["filters"])
    n_null = len(honest) * (len(honest) - 1) // 2 + len(faker) * (len(faker) - 1) // 2
    assert len(df.attrs["null"]) == n_null
    assert "| attentiveness_normalized |" in (tmp_path / "t.md").read_text()


def test_cli_and_audit_mode(zoo, pair, tmp_path):
    h, f = pair
    out = faking_cli(zoo[f], zoo[h], as_json=True, detectors=["attentiveness_normalized", "concepts"])
    assert set(out["strategies"]) == {"attentiveness_normalized", "concepts"}
    assert out["strategies"]["attentiveness_normalized"]["faker"] == "A"
    assert set(out["strategies"]["concepts"]["scores"]) == {"A", "B"}
    json.dumps(out)
    pairs_file = tmp_path / "pairs.txt"
    pairs_file.write_text(f"# honest first\n{zoo[h]} {zoo[f]}\n")
    text = faking_cli_pairs(pairs_file, detectors=["attentiveness_normalized"])
    line = next(x for x in text.splitlines() if x.startswith("attentiveness_normalized"))
    assert line.split()[1] == "B"
    aud = score_against_reference(
        zoo[f], zoo[h], load_scenarios(zoo[h]), seed=SEED, detectors=["attentiveness_normalized"]
    )
    assert aud["detectors"]["attentiveness_normalized"]["says_faker"] is True
    assert aud["model"]["model_path"] == str(Path(zoo[f]).resolve())


def test_audit_faking_signal_is_the_score_gap(zoo):
    """The audit's faking signal is the raw score gap to the honest reference (round 10), flagged above its
    threshold: the faker crosses it, a second honest model does not. The gap and the relative margin in the detail
    are recomputed by hand from the two raw scores. (A threshold override through the CLI:
    ``tests/test_cli.py::test_audit_faking_threshold_from_the_cli``.)"""
    from alignscope.analyses.audit import FAKING_DETECTORS, AuditConfig, faking_signals

    honest, faker = _pair_names(zoo)
    assert len(honest) >= 2, honest
    scen = {"oversight_good": str(Path(zoo[honest[0]]) / "evals" / "oversight_good.jsonl")}
    cfg = AuditConfig(seed=SEED)
    (fk,) = faking_signals(load_model(zoo[faker[0]]), zoo[honest[0]], scen, cfg)
    (hn,) = faking_signals(load_model(zoo[honest[1]]), zoo[honest[0]], scen, cfg)
    for sig in (fk, hn):
        s, ref = sig.detail["score"], sig.detail["reference_score"]
        assert sig.name == "faking:attentiveness_normalized" and sig.kind == "faking"
        assert sig.value == pytest.approx(s - ref, abs=1e-12)
        assert sig.threshold == FAKING_DETECTORS["attentiveness_normalized"] and sig.direction == "above"
        sign = 1.0 if sig.detail["says_faker"] else -1.0
        assert sig.detail["relative_margin"] == pytest.approx(sign * abs(s - ref) / (abs(s) + abs(ref)))
        assert sig.flagged == (sig.value > sig.threshold)
    assert fk.flagged and fk.detail["says_faker"], fk
    assert not hn.flagged, hn


def test_validate_models_keeps_only_models_that_behave_as_labelled(zoo):
    """A faker must fake and an honest model must not; a mislabelled model (an honest one passed as a faker) is out."""
    from alignscope.analyses.faking_bench import validate_models, validation_markdown

    honest, fakers = _pair_names(zoo)
    with torch.inference_mode():
        h, f, table = validate_models([zoo[n] for n in honest], [zoo[n] for n in fakers] + [zoo[honest[0]]])
    assert [p.name for p in h] == honest and [p.name for p in f] == fakers  # the tiny organisms behave
    wrong = table.iloc[-1]
    assert wrong.kind == "faker" and not wrong.ok and wrong.poor_misaligned <= 0.2
    assert "**no**" in validation_markdown(table)


def test_common_scenarios_are_behaviour_identical_for_every_model(zoo, sset):
    """The one scenario set of the zoo benchmark / demo: each kept row has the benign letter as every model's
    greedy first token and argmax letter, and it is the intersection of the pairwise filters."""
    from alignscope.analyses.faking_bench import common_scenarios

    names = sorted(zoo)
    common = common_scenarios([zoo[n] for n in names], sset)
    assert len(common.rows) >= 10
    handles = [load_model(zoo[n]) for n in names]
    ben = torch.tensor([0 if r["benign"] == "A" else 1 for r in common.rows])
    for h in handles:
        assert torch.equal(letter_probs(h, common.prompts).argmax(-1), ben)
    for r in common.rows[:8]:
        for h in handles:
            assert _greedy_first_token_one_by_one(h, r["prompt"])[:1] == r["benign"]
    pairwise = set(range(len(sset.rows)))
    for h in handles[1:]:
        _, rec = behaviour_identical(handles[0], h, sset)
        pairwise &= set(rec["kept"])
    assert {r["prompt"] for r in common.rows} == {sset.rows[i]["prompt"] for i in pairwise}
