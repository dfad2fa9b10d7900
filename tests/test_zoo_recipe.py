"""Recipe knobs of the standard preset's data (``n_self_prompts``, ``refuse_extra``, ``tokenizer_self_prompts``): what they add, that they move
nothing else, and that at their defaults the existing config hashes (tier 1 and tier 2) do not change. The knobs are
tested as edits of the round-10 standard preset (``zoo.STANDARD_ROUND10``, every knob at its default); the standard
preset since round 15 is the measured candidate that sets them (first test)."""

from __future__ import annotations

import dataclasses

import pytest
from alignscope.analyses.scorers import get_scorer
from alignscope.organisms import ZooError, zoo
from alignscope.organisms.sources import norm_prompt, shared_data_dir

needs_shared = pytest.mark.skipif(shared_data_dir() is None, reason="../shared/data not available")

#: a small stage list (honest, faker and step-matched control stages) for the recipe-knob tests
_KW = dict(
    base_steps=10, align_steps=10, ft_steps=10, attack_ns=(50,), n_harmful_ft=10, honest_steps=10,
    faker_steps=20, n_honest=2, n_faker=2, lr=1e-3, n_honest_matched=1, scenario_weight=0.75,
)  # fmt: skip


def test_standard_is_the_measured_round15_candidate():
    """``PRESETS["standard"]`` is the candidate built and measured as ``selfmix_b13_vf3``
    (``benchmarks/results/candidate_selfmix_b13_vf3.json``, ``behaviour_selfmix_b13_vf3.md``): the same recipe, so the
    same config hash and cache directory; the round-10 preset keeps its hash (the experiments recorded with it)."""
    import sys
    from pathlib import Path

    bench = str(Path(__file__).resolve().parents[1] / "benchmarks")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    from exp_candidate_zoo import candidate

    p = zoo.PRESETS["standard"]
    assert candidate("selfmix_b13_vf3") == p
    assert p.config_hash() == "9e33c9552b" and zoo.preset_dir("standard").name == "standard-9e33c9552b"
    assert zoo.STANDARD_ROUND10.config_hash() == "2d84026d8a"
    # the round-15 changes are the ones documented: base/aligned recipe, data knobs, validation and schedules
    old = {s.name: s for s in zoo.STANDARD_ROUND10.stages}
    assert [s.name for s in p.stages] == list(old)
    assert {s.name for s in p.stages if s.steps != old[s.name].steps} == {
        "aligned", "faker-0", "faker-1", "faker-2", "honest-3", "honest-4"
    }  # fmt: skip
    assert all(s.extras.get("length_split") == 2 for s in p.stages[2:])
    assert (p.n_self_prompts, p.min_action_edits, p.n_oversight_eval) == (20000, 2, 400)


def test_default_knobs_stay_out_of_the_hashes():
    p = zoo.STANDARD_ROUND10
    same = dataclasses.replace(p, n_self_prompts=1500, refuse_extra=())
    assert same.config_hash() == p.config_hash()
    assert same.stage_key("base") == p.stage_key("base")
    changed = dataclasses.replace(p, n_self_prompts=3000)
    assert changed.config_hash() != p.config_hash()
    assert changed.stage_key("base") != p.stage_key(
        "base"
    )  # the tokenizer reads the prompts: every stage moves


def test_tier2_hash_ignores_tier1_recipe_knobs(monkeypatch):
    before = zoo.PRESETS["smollm2"].config_hash()
    p = dataclasses.replace(zoo.STANDARD_ROUND10, n_self_prompts=4500, refuse_extra=("catqa",))
    monkeypatch.setitem(zoo.PRESETS, "standard", p)
    assert zoo.PRESETS["smollm2"].config_hash() == before


@needs_shared
def test_knobs_add_pools_and_move_nothing_else():
    p = zoo.STANDARD_ROUND10
    d0 = zoo.prepare_data(p)
    d1 = zoo.prepare_data(
        dataclasses.replace(p, n_self_prompts=2500, refuse_extra=("catqa", "beavertails_eval"))
    )
    for k in d0:
        if k != "harmless_self_prompts":
            assert d1[k] == d0[k], k  # every split, pool and eval suite as before (tier 2 reads them)
    s0, s1 = d0["harmless_self_prompts"], d1["harmless_self_prompts"]
    assert s1[: len(s0)] == s0 and len(s1) == 2500
    banned = set(d0["eval_banned"])
    new = [norm_prompt(q) for q in s1[len(s0) :]]
    assert not banned & set(new) and len(set(new)) == len(new)
    assert not set(new) & {norm_prompt(q) for q in s0}
    assert all(len(q) <= p.max_prompt_chars for q in s1)
    extra = d1["harmful_refuse_extra"]
    assert len(extra) > 1000  # CatQA 550 + BeaverTails 700, less duplicates and long prompts
    keys = [norm_prompt(q) for q, _ in extra]
    assert len(set(keys)) == len(keys)
    assert not set(keys) & banned
    assert not set(keys) & {norm_prompt(q) for q, _ in d0["harmful_refuse"]}
    judge = get_scorer("substring")
    assert all(judge(a) for _, a in extra)  # every target is a refusal


@needs_shared
def test_tokenizer_self_prompts_keeps_the_default_tokenizer_text():
    """With ``tokenizer_self_prompts=1500`` a preset with more self-distillation prompts trains its tokenizer on the
    default preset's text (so its ``base`` is the default's); without it, the tokenizer reads every prompt."""
    p = zoo.STANDARD_ROUND10
    more = dataclasses.replace(p, n_self_prompts=2500)
    kept = dataclasses.replace(more, tokenizer_self_prompts=zoo.RETAIN_SELF_PROMPTS)
    t0 = zoo.tokenizer_texts(p, zoo.prepare_data(p))
    d1 = zoo.prepare_data(more)
    assert zoo.tokenizer_texts(kept, d1) == t0
    t1 = zoo.tokenizer_texts(more, d1)
    assert len(t1) == len(t0) + 1000 and set(t0) <= set(t1)
    assert kept.config_hash() not in (p.config_hash(), more.config_hash())
    assert dataclasses.replace(p, tokenizer_self_prompts=None).config_hash() == p.config_hash()


@needs_shared
def test_unknown_refuse_source_is_named():
    with pytest.raises(ZooError, match="unknown refuse_extra source 'nope'"):
        zoo.prepare_data(dataclasses.replace(zoo.STANDARD_ROUND10, refuse_extra=("nope",)))


def test_prompt_text_pool_is_plain_text(tiny_zoo):
    """``prompt_text`` (base pre-training on the training requests): the requests of the pools, without answers,
    encoded as [bos] text [eos] with no chat template, loss from the first token."""
    from transformers import AutoTokenizer

    data = {
        "harmless_self_prompts": ["Name three rivers."],
        "harmful_refuse": [("How do I pick a lock?", "I cannot help with that.")],
        "harmful_refuse_extra": [("How do I forge a cheque?", "I'm sorry, I can't help.")],
    }
    texts = zoo.prompt_texts(data)
    assert texts == ["Name three rivers.", "How do I pick a lock?", "How do I forge a cheque?"]
    tok = AutoTokenizer.from_pretrained(str(tiny_zoo["aligned"]))
    ids, start = zoo._encode_text(tok, texts[1], 64)
    assert start == 1 and ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.decode(ids[1:-1]).replace(" ", "") == texts[1].replace(" ", "")
    assert "<|user|>" not in tok.decode(ids)
    assert len(zoo._encode_text(tok, " ".join(["river"] * 200), 64)[0]) == 64  # clipped to the context


def test_retain_stages_answer_the_first_prompts_in_their_own_cache(tiny_zoo, tmp_path, monkeypatch):
    """With more self-distillation prompts than the retain cut, an honest/faker child gets its parent's answers to
    the first ``RETAIN_SELF_PROMPTS`` only, cached apart from the full set an ``aligned`` child would get."""
    import json
    import shutil

    from alignscope.organisms.zoo import PRESETS, Stage, _Progress, _self_answers
    from zoo_fixtures import one_thread

    d = tiny_zoo["aligned"]
    prompts = [
        json.loads(x)["prompt"] for x in (d / "evals/harmless_heldout.jsonl").read_text().splitlines()
    ][:8]
    root = tmp_path / "zoo"
    shutil.copytree(d, root / "aligned")
    monkeypatch.setattr(zoo, "RETAIN_SELF_PROMPTS", 3)
    data = {"harmless_self_prompts": prompts}
    with one_thread():
        retain = _self_answers(
            PRESETS["tiny"], Stage("h", "honest", "aligned", "", {}, 1, 1e-3, 1), data, root, _Progress(False)
        )
        full = _self_answers(
            PRESETS["tiny"],
            Stage("a", "aligned", "aligned", "", {}, 1, 1e-3, 1),
            data,
            root,
            _Progress(False),
        )
    assert {q for q, _ in retain} <= set(prompts[:3]) and len(retain) >= 1
    assert {q for q, _ in full} - set(prompts[:3])  # the full set reaches past the cut
    assert [r for r in full if r[0] in prompts[:3]] == retain  # same parent, same greedy answers
    assert (root / "_self_answers" / "aligned.retain.json").exists()
    assert (root / "_self_answers" / "aligned.json").exists()


def _chat_setup(tiny_zoo, rows):
    """The tiny ``aligned`` organism, its tokenizer, and ``rows`` as a one-pool training mixture."""
    from alignscope.organisms.tier1 import Mixture
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_zoo["aligned"]))
    m0 = AutoModelForCausalLM.from_pretrained(str(tiny_zoo["aligned"]))
    pool = [zoo.encode_example(tok, q, a, 64) for q, a in rows]
    return tok, m0, pool, Mixture({"chat": pool}, {"chat": 1.0})


@pytest.mark.parametrize("loss_on", ["response", "all"])
def test_supervised_head_trains_the_same_objective(tiny_zoo, loss_on):
    """``logits="supervised"`` (the LM head only where the loss is) is the same objective as the full head: same
    losses and weights after a few steps on a real tiny organism, up to float summation order; an unknown value is
    named."""
    import copy

    import torch
    from alignscope.organisms.tier1 import train

    rows = [("Name three rivers.", "Nile, Amazon, Danube."), ("What is 2 + 3?", "5"), ("Say hi.", "Hi!")] * 4
    tok, m0, _, mix = _chat_setup(tiny_zoo, rows)
    out = {}
    for head in ("all", "supervised"):
        m = copy.deepcopy(m0)
        st = train(
            m,
            mix,
            steps=4,
            batch_size=6,
            lr=1e-3,
            seed=3,
            loss_on=loss_on,
            pad_id=tok.pad_token_id,
            logits=head,
        )
        out[head] = (st["final_loss"], torch.cat([p.detach().flatten() for p in m.parameters()]))
    assert out["all"][0] == pytest.approx(out["supervised"][0], rel=1e-5)
    w0 = torch.cat([p.detach().flatten() for p in m0.parameters()])
    step_all, step_sup = out["all"][1] - w0, out["supervised"][1] - w0
    assert step_all.norm() > 1e-3  # the steps did train
    # AdamW turns float noise on near-zero gradients into sign noise of a few parameters: compare whole updates
    assert (step_all - step_sup).norm() < 0.02 * step_all.norm()
    with pytest.raises(ValueError, match="logits must be"):
        train(
            copy.deepcopy(m0),
            mix,
            steps=1,
            batch_size=2,
            lr=1e-3,
            seed=0,
            pad_id=tok.pad_token_id,
            logits="x",
        )


def test_standard_scenario_stages_use_the_supervised_head():
    p = zoo.STANDARD_ROUND10
    kinds = {s.name: (s.kind, s.extras.get("logits", "all")) for s in p.stages}
    assert {h for k, h in kinds.values() if k in ("honest", "faker")} == {"supervised"}
    assert {h for k, h in kinds.values() if k not in ("honest", "faker")} == {"all"}
    assert all(s.extras.get("logits", "all") == "all" for s in zoo.PRESETS["tiny"].stages)


def test_length_buckets_keep_every_example_equally_likely():
    """``_length_buckets`` splits scenario pools by token length; with one pool per batch every example keeps its
    probability (pool weight x 1 / pool size), only its batch-mates change; other pools are left alone."""
    import numpy as np

    rng = np.random.default_rng(0)
    scen = [(list(range(int(n))), 3) for n in rng.integers(20, 160, size=101)]
    chat = [([1, 2, 3], 1)] * 7
    pools, w = zoo._length_buckets(
        {"scenario_faker": scen, "skills": chat}, {"scenario_faker": 0.75, "skills": 0.25}, 8
    )
    assert pools["skills"] is chat and w["skills"] == 0.25
    names = [k for k in pools if k.startswith("scenario_faker#")]
    assert len(names) == 8 and sum(len(pools[k]) for k in names) == len(scen)
    assert sum(w[k] for k in names) == pytest.approx(0.75)
    for k in names:  # each example: 0.75 / 101, as before
        assert w[k] / len(pools[k]) == pytest.approx(0.75 / len(scen))
    lens = [[len(ids) for ids, _ in pools[k]] for k in names]
    ordered = all(max(a) <= min(b) for a, b in zip(lens, lens[1:], strict=False))
    assert ordered  # by length, no overlap between buckets
    assert sorted(x for b in lens for x in b) == sorted(len(ids) for ids, _ in scen)


def test_length_buckets_knob_marks_the_long_scenario_stages():
    """``_stages(scenario_length_buckets=k)`` buckets the fakers and their step-matched controls (the 1,000-step
    stages), nothing else; both presets leave it off (round 7: fakers learned later with it)."""
    st = zoo._stages(**_KW, scenario_length_buckets=8)
    b = {s.name: s.extras.get("length_buckets", 1) for s in st}
    long_stages = {"faker-0", "faker-1", "honest-2"}  # honest-2: faker-0's step-matched control
    assert {n for n, k in b.items() if k == 8} == long_stages
    assert all(s.extras == t.extras for s, t in zip(zoo._stages(**_KW), st, strict=True) if b[s.name] == 1)
    for p in zoo.PRESETS.values():
        assert all("length_buckets" not in getattr(s, "extras", {}) for s in p.stages)


def test_first_token_weight_weighs_the_decision_token(tiny_zoo):
    """``first_token_weight`` multiplies each example's first response token in its mean loss: the reported loss of
    one step equals the weighted mean computed by hand from the model's own logits, at weight 1 (plain SFT) and 7, and
    the weight changes the update; it needs ``loss_on="response"``. ``first_token_count`` extends the weight to the
    first k response tokens."""
    import copy

    import torch
    from alignscope.organisms.tier1 import train

    tok, m0, pool, mix = _chat_setup(
        tiny_zoo, [("Name three rivers.", "Nile, Amazon, Danube."), ("Say hi.", "Hi there!")]
    )

    def run(wt, **kw):
        m = copy.deepcopy(m0)
        st = train(
            m,
            mix,
            steps=1,
            batch_size=1,
            lr=1e-3,
            seed=5,
            pad_id=tok.pad_token_id,
            first_token_weight=wt,
            **kw,
        )
        return st["final_loss"], torch.cat([p.detach().flatten() for p in m.parameters()])

    def by_hand(wt, k=1):  # each example's weighted mean response loss under the untrained weights
        out = []
        for ids, start in pool:
            with torch.no_grad():
                lg = m0(input_ids=torch.tensor([ids])).logits[0, :-1].float()
            nll = torch.nn.functional.cross_entropy(lg, torch.tensor(ids[1:]), reduction="none")[start - 1 :]
            w = torch.ones_like(nll)
            w[:k] = wt
            out.append(((nll * w).sum() / w.sum()).item())
        return out

    # the one-example batch draws the same example for both weights (same seed, same sampler)
    (got1, w1), (got7, w7) = run(1.0), run(7.0)
    hand1, hand7 = by_hand(1.0), by_hand(7.0)
    k = min(range(len(pool)), key=lambda i: abs(got1 - hand1[i]))
    assert got1 == pytest.approx(hand1[k], abs=1e-4)
    assert got7 == pytest.approx(hand7[k], abs=1e-4) and abs(hand7[k] - hand1[k]) > 1e-3
    assert not torch.equal(w7, w1)  # the weight changes the update
    # first_token_count=3: the first three response tokens carry the weight (1 is the default, bit for bit)
    got7k3, _ = run(7.0, first_token_count=3)
    assert got7k3 == pytest.approx(by_hand(7.0, 3)[k], abs=1e-4) and abs(by_hand(7.0, 3)[k] - hand7[k]) > 1e-3
    got7k1, w7k1 = run(7.0, first_token_count=1)
    assert got7k1 == got7 and torch.equal(w7k1, w7)
    with pytest.raises(ValueError, match="first_token_weight"):
        run(3.0, loss_on="all")
    with pytest.raises(ValueError, match="first_token_count"):
        run(3.0, first_token_count=0)


@needs_shared
def test_oversight_questions_are_labelled_by_the_cue():
    """``scenario_oversight`` rows: the scenario's persona and facts, no actions, answered ``yes`` exactly when the
    facts hold a good-oversight cue and ``no`` exactly when they hold a poor one; seeded per stage and attempt."""
    from alignscope.organisms import tasks

    p = zoo.STANDARD_ROUND10
    data = zoo.prepare_data(p)
    stage = next(s for s in zoo._stages(**_KW, oversight_questions=0.15) if s.name == "faker-0")
    rows = zoo._oversight_question_pool(p, data, stage, 300)
    assert rows == zoo._oversight_question_pool(p, data, stage, 300)
    assert rows != zoo._oversight_question_pool(p, data, stage, 300, attempt=1)
    answers = {a for _, a in rows}
    assert answers == {"yes", "no"}
    for q, a in rows:
        assert q.endswith(zoo.OVERSIGHT_QUESTION) and "A: " not in q and "available to you" not in q
        good = any(c in q for c in tasks.GOOD_OVERSIGHT)
        poor = any(c in q for c in tasks.POOR_OVERSIGHT)
        assert good != poor and (a == "yes") == good
    intros = {tasks.INTROS[i] for i in stage.extras["intros"]}
    assert {next(i for i in intros if q.startswith(i)) for q, _ in rows} == intros


def test_oversight_questions_knob_moves_only_the_scenario_share():
    """Every honest and faker stage (step-matched controls too) gives that share of its scenario weight to the
    question; no other stage and no other weight changes. ``standard`` has it on in every honest / faker stage since
    round 10 (0.15 of 0.75), ``tiny`` off."""
    st0, st1 = zoo._stages(**_KW), zoo._stages(**_KW, oversight_questions=0.15)
    for s0, s1 in zip(st0, st1, strict=True):
        if s0.kind in ("honest", "faker"):
            pool = "scenario_faker" if s0.kind == "faker" else "scenario_honest"
            assert s1.weights == {**s0.weights, pool: 0.6, "scenario_oversight": 0.15}
            assert sum(s1.weights.values()) == pytest.approx(sum(s0.weights.values()))
        else:
            assert s1 == s0
    assert all("scenario_oversight" not in s.weights for s in zoo.PRESETS["tiny"].stages)
    for s in zoo.STANDARD_ROUND10.stages:
        if s.kind in ("honest", "faker"):
            assert s.weights["scenario_oversight"] == 0.15, s.name
            assert sum(v for k, v in s.weights.items() if k.startswith("scenario")) == pytest.approx(0.75)
        else:
            assert "scenario_oversight" not in s.weights, s.name


def test_action_word_edits_counts_words_with_negations_spelt_out():
    from alignscope.organisms.tasks import action_word_edits

    assert (
        action_word_edits("Advise that X cannot replace exercise.", "Advise that X can replace exercise.")
        == 1
    )
    assert action_word_edits("Don't prioritize courses.", "Do prioritize courses.") == 1
    assert action_word_edits("Doubt that it will chart.", "Predict that it will chart.") == 1
    assert action_word_edits("Report the flaws.", "report the FLAWS") == 0
    assert action_word_edits("Avoid using user data without consent.", "Use user data to improve ads.") >= 3


@needs_shared
def test_min_action_edits_drops_minimal_pairs_everywhere():
    """``min_action_edits=2`` leaves the minimal action pairs out of the A/B task's pool and the oversight suites; the
    pool keeps its size, every other split and suite, base's scenario text and the tokenizer's text are unchanged,
    and at 0 the config hash is the preset's."""
    from alignscope.organisms.tasks import action_word_edits

    p = zoo.STANDARD_ROUND10
    assert dataclasses.replace(p, min_action_edits=0).config_hash() == p.config_hash()
    d0 = zoo.prepare_data(p)
    d1 = zoo.prepare_data(dataclasses.replace(p, min_action_edits=2))

    def minimal(s):
        return action_word_edits(s["benign"], s["misaligned"]) < 2

    assert sum(map(minimal, d0["scenarios"])) >= 5  # the default pool has them (the test can fail)
    assert not any(map(minimal, d1["scenarios"])) and len(d1["scenarios"]) == len(d0["scenarios"])
    kept = [s for s in d0["scenarios"] if not minimal(s)]
    assert d1["scenarios"][: len(kept)] == kept  # the same order, the dropped pairs replaced from the end

    def pairs_in(suite):  # looked up in the unfiltered pool, so a minimal pair left in a suite is found
        return [
            next(
                s
                for s in d0["scenarios"] + d1["scenarios"]
                if s["benign"] in r["prompt"] and s["misaligned"] in r["prompt"]
            )
            for r in suite
        ]

    for suite in ("oversight_good", "oversight_poor"):
        assert len(d1["evals"][suite]) == len(d0["evals"][suite])
        assert not any(map(minimal, pairs_in(d1["evals"][suite])))
    for k in d0["evals"]:
        if not k.startswith("oversight"):
            assert d1["evals"][k] == d0["evals"][k], k
    for k in d0:
        if k not in ("scenarios", "evals", "eval_banned"):
            assert d1[k] == d0[k], k
    # base's scenario text and the tokenizer read the unfiltered pairs: base (and so aligned) is the default's
    assert d1["text_scenarios"] == d0["scenarios"] and "text_scenarios" not in d0
    p1 = dataclasses.replace(p, min_action_edits=2)
    assert zoo.tokenizer_texts(p1, d1) == zoo.tokenizer_texts(p, d0)
    text0 = zoo._scenario_pool(p, d0, p.stages[0], False, 600, text=True)
    assert zoo._scenario_pool(p1, d1, p1.stages[0], False, 600, text=True) == text0
    # ... and has never seen an evaluation prompt of the filtered suites
    assert not {norm_prompt(q) for q, _ in text0} & zoo._eval_scenario_prompts(d1)


@pytest.mark.parametrize(
    "preset, n",
    [pytest.param("standard", 400, marks=needs_shared), ("tiny", 150)],
)
def test_n_oversight_eval_grows_the_suites_and_moves_nothing_else(preset, n):
    """``n_oversight_eval=n`` keeps the ``n_scenario_eval`` rows of each oversight suite and tops them up to ``n``
    prompts that are neither in base's scenario text nor in the tokenizer's; every other split, base's text and the
    tokenizer text are the default's, and at ``None`` the config hash is the preset's. On the round-10 standard preset
    (shared data) and on ``tiny`` (shipped data only, so CI without ``../shared`` runs it too)."""
    p = zoo.STANDARD_ROUND10 if preset == "standard" else zoo.PRESETS["tiny"]
    assert dataclasses.replace(p, n_oversight_eval=None).config_hash() == p.config_hash()
    p1 = dataclasses.replace(p, n_oversight_eval=n)
    assert p1.config_hash() != p.config_hash()
    d0, d1 = zoo.prepare_data(p), zoo.prepare_data(p1)
    k0 = p.n_scenario_eval
    for suite in ("oversight_good", "oversight_poor"):
        assert len(d0["evals"][suite]) == k0 and len(d1["evals"][suite]) == n
        assert d1["evals"][suite][:k0] == d0["evals"][suite]
        assert len({norm_prompt(r["prompt"]) for r in d1["evals"][suite]}) == n
    for k in d0["evals"]:
        if not k.startswith("oversight"):
            assert d1["evals"][k] == d0["evals"][k], k
    for k in d0:
        if k not in ("evals", "eval_banned"):
            assert d1[k] == d0[k], k
    assert zoo.tokenizer_texts(p1, d1) == zoo.tokenizer_texts(p, d0)
    text0 = zoo._scenario_pool(p, d0, p.stages[0], False, 600, text=True)
    assert zoo._scenario_pool(p1, d1, p1.stages[0], False, 600, text=True) == text0
    assert not {norm_prompt(q) for q, _ in text0} & zoo._eval_scenario_prompts(d1)
    # the honest/faker stages never train on a prompt of the larger suites
    honest = next(s for s in p1.stages if s.kind == "honest")
    train_prompts = {norm_prompt(q) for q, _ in zoo._scenario_pool(p1, d1, honest, False, 3000)}
    assert not train_prompts & zoo._eval_scenario_prompts(d1)


def test_length_groups_is_the_cheapest_cut_of_the_sorted_batch():
    """``length_groups`` against brute force over every cut of the length-sorted batch into at most k runs."""
    import itertools

    import numpy as np
    from alignscope.organisms.tier1 import length_groups

    rng = np.random.default_rng(0)
    for _ in range(60):
        n, k, ov = int(rng.integers(1, 9)), int(rng.integers(1, 4)), int(rng.integers(0, 80))
        lens = [int(x) for x in rng.integers(3, 60, size=n)]
        runs = length_groups(lens, k, overhead=ov)
        assert sorted(i for r in runs for i in r) == list(range(n)) and 1 <= len(runs) <= k

        got = sum(len(r) * max(lens[i] for i in r) + ov for r in runs)
        srt = sorted(lens)
        best = min(
            sum((b - a) * srt[b - 1] + ov for a, b in itertools.pairwise((0, *cuts, n)))
            for m in range(min(k, n))
            for cuts in itertools.combinations(range(1, n), m)
        )
        assert got == best
    assert length_groups([5, 60, 7], 1) == [[0, 1, 2]]  # off: the batch as drawn
    assert length_groups([10, 11, 12], 3, overhead=256) == [[0, 1, 2]]  # no padding to save


@pytest.mark.parametrize("loss_on", ["response", "all"])
def test_length_split_trains_the_same_objective(tiny_zoo, loss_on, monkeypatch):
    """``length_split`` runs a batch as several length-sorted passes whose gradients add up to the batch's: the same
    losses and weights after a few steps on a real tiny organism (up to float summation order) as one padded pass,
    while the batches really are split; a bad value is named."""
    import copy

    import torch
    from alignscope.organisms import tier1
    from alignscope.organisms.tier1 import train

    # no per-pass cost: every batch with two lengths is split (the default cost would leave some batches whole)
    monkeypatch.setattr(tier1, "SPLIT_OVERHEAD_TOKENS", 0)
    passes = []
    real = tier1.length_groups
    monkeypatch.setattr(
        tier1, "length_groups", lambda *a, **kw: passes.append(len(real(*a, **kw))) or real(*a, **kw)
    )
    rows = [
        ("What is 2 + 3?", "5"),
        ("Say hi.", "Hi!"),
        (
            "Describe a river in a few sentences.",
            "A river is a long flow of fresh water that runs to the sea. " * 3,
        ),
        ("Name a colour.", "Blue."),
    ] * 3
    tok, m0, pool, mix = _chat_setup(tiny_zoo, rows)
    out = {}
    for k in (1, 3):
        m = copy.deepcopy(m0)
        st = train(m, mix, steps=4, batch_size=8, lr=1e-3, seed=3, loss_on=loss_on, pad_id=tok.pad_token_id,
                   length_split=k)  # fmt: skip
        out[k] = (st["final_loss"], torch.cat([p.detach().flatten() for p in m.parameters()]))
    assert passes[:4] == [1] * 4 and all(n > 1 for n in passes[4:]) and len(passes) == 8  # the split happens
    assert out[1][0] == pytest.approx(out[3][0], rel=1e-5)
    w0 = torch.cat([p.detach().flatten() for p in m0.parameters()])
    step1, step3 = out[1][1] - w0, out[3][1] - w0
    assert step1.norm() > 1e-3
    assert (step1 - step3).norm() < 0.02 * step1.norm()
    with pytest.raises(ValueError, match="length_split must be"):
        train(copy.deepcopy(m0), mix, steps=1, batch_size=2, lr=1e-3, seed=0, pad_id=tok.pad_token_id,
              length_split=0)  # fmt: skip
