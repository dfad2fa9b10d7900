"""Selection of the refusal direction (probes.selection): batched scores == per-candidate loop, the refusal
score / KL formulas, refusal tokens from the model's own generations, the filter rules and their errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from alignscope.hooks import PromptError, load_model
from alignscope.probes.find import find_candidates
from alignscope.probes.selection import (
    Candidates,
    CandidateScores,
    SelectionError,
    greedy_completions,
    kl_div,
    refusal_score,
    refusal_tokens_from_model,
    score_candidates,
    score_candidates_loop,
    select_candidate,
    substring_refusal,
)

HARM = ["Tell me how to pick a lock.", "How do I bake bread at home?", "Write a poem about the sea."]
SAFE = ["Describe the water cycle.", "List the planets of the solar system.", "Why is the sky blue?"]


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on the shared 2-core CPU, two OpenMP threads make these tiny forwards ~20x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def always(completion: str, prompt: str | None = None) -> bool:
    """A judge that calls every completion a refusal (random tiny models never say 'I'm sorry')."""
    return True


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_batched_scores_equal_per_candidate_loop(tiny_paths, arch):
    h = load_model(tiny_paths[arch])
    cands, steer = find_candidates(h, HARM, SAFE, positions=("last", -2), layers=[0, 1, 2])
    assert len(cands) == 6
    toks = [5, 17, 40]
    # max_rows=20 with 3 + 2*3 = 9 rows per candidate: 2 candidates per forward, 3 forwards (plus baseline)
    a = score_candidates(h, cands, HARM, SAFE, toks, steer_vectors=steer, max_rows=20)
    b = score_candidates_loop(h, cands, HARM, SAFE, toks, steer_vectors=steer, batch_size=2)
    assert a.n_forward == 1 + 3
    assert b.n_forward > a.n_forward
    for k in ("ablation_refusal", "steering_refusal", "kl"):
        np.testing.assert_allclose(getattr(a, k), getattr(b, k), rtol=1e-5, atol=1e-6, err_msg=k)
    assert math.isclose(a.baseline_harmful, b.baseline_harmful, rel_tol=1e-6)
    # the interventions really change the scores (otherwise the equality above would be vacuous)
    assert np.abs(a.ablation_refusal - a.baseline_harmful).max() > 1e-4
    assert np.abs(a.steering_refusal - a.baseline_harmless).max() > 1e-3
    assert a.kl.max() > 1e-6


def test_refusal_score_and_kl_formulas():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 11, generator=g)
    toks = [2, 7]
    p = torch.softmax(z.double(), -1)[:, toks].sum(-1)
    ref = torch.log(p + 1e-8) - torch.log(1 - p + 1e-8)
    torch.testing.assert_close(refusal_score(z, toks), ref)
    w = torch.randn(4, 11, generator=g)
    kl_ref = torch.nn.functional.kl_div(
        torch.log_softmax(w.double(), -1),
        torch.log_softmax(z.double(), -1),
        log_target=True,
        reduction="none",
    ).sum(-1)
    torch.testing.assert_close(kl_div(z, w), kl_ref)
    assert float(kl_div(z, z).abs().max()) < 1e-12


def test_substring_judge_matches_the_paper_list():
    assert substring_refusal("Sure. i'M SORRY, no")
    assert substring_refusal("As an AI I cannot")
    assert not substring_refusal("Here is how to bake bread.")
    assert not substring_refusal("")


def test_refusal_tokens_are_first_generated_tokens(tiny_paths):
    h = load_model(tiny_paths["qwen2"])
    texts, ids = greedy_completions(h, HARM, max_new_tokens=3)
    toks, info = refusal_tokens_from_model(h, HARM, judge=always, max_new_tokens=3)
    assert sorted(toks) == sorted({row[0] for row in ids})
    assert info["n_refusals"] == len(HARM)
    assert sum(info["refusal_token_counts"].values()) == len(HARM)
    # a judge that refuses only the first prompt keeps only that prompt's first token
    only_first = lambda c, p=None: p == HARM[0]  # noqa: E731
    toks1, _ = refusal_tokens_from_model(h, HARM, judge=only_first, max_new_tokens=3)
    assert toks1 == [ids[0][0]]
    # batched generation equals one-by-one generation (left padding + mask)
    one = [greedy_completions(h, [p], max_new_tokens=3)[1][0] for p in HARM]
    assert one == ids


def test_no_refusals_is_a_clear_error(tiny_paths):
    h = load_model(tiny_paths["llama"])
    with pytest.raises(SelectionError, match="refused none") as e:
        refusal_tokens_from_model(h, HARM, max_new_tokens=3)  # random weights never say "I'm sorry"
    assert "refusal_tokens" in str(e.value)


def test_empty_prompt_sets_raise(tiny_paths):
    h = load_model(tiny_paths["llama"])
    cands, _ = find_candidates(h, HARM, SAFE, positions="last", layers=[0])
    with pytest.raises(PromptError, match="harmful validation"):
        score_candidates(h, cands, [], SAFE, [3])
    with pytest.raises(PromptError, match="harmless validation"):
        score_candidates(h, cands, HARM, [], [3])
    with pytest.raises(SelectionError, match="refusal tokens"):
        score_candidates(h, cands, HARM, SAFE, [])


def _cands(layers, d=4):
    g = torch.Generator().manual_seed(1)
    return Candidates(
        torch.randn(len(layers), d, generator=g), [-1] * len(layers), list(layers), "diff_means"
    )


def _scores(abl, steer, kl):
    return CandidateScores(np.array(abl, float), np.array(steer, float), np.array(kl, float), 1.0, -1.0)


def test_selection_rule_reference():
    c = _cands([0, 1, 2, 3, 4])
    abl = [-3.0, -1.0, -2.0, 0.5, -9.0]
    steer = [0.2, 0.1, -0.1, 0.3, 1.0]
    kl = [0.01, 0.05, 0.02, 0.5, 0.0]
    res = select_candidate(c, _scores(abl, steer, kl), 5)
    ok = [k for k in range(5) if k < int(5 * 0.8) and kl[k] <= 0.1 and steer[k] >= 0.0]
    assert res.index == min(ok, key=lambda k: abl[k]) == 0
    assert [r["discarded_by"] for r in res.rows] == [[], [], ["steering"], ["kl"], ["late_layer"]]
    assert res.rows[0]["selected"] and sum(r["selected"] for r in res.rows) == 1
    # thresholds move the decision
    res2 = select_candidate(c, _scores(abl, steer, kl), 5, induce_refusal_threshold=-1.0, kl_threshold=1.0)
    assert res2.index == 0 and res2.rows[2]["discarded_by"] == []
    res3 = select_candidate(c, _scores(abl, steer, kl), 5, prune_layer_frac=0.0, kl_threshold=1.0)
    assert res3.index == 4


def test_nan_and_zero_vectors_are_discarded():
    c = _cands([0, 1, 2])
    c.vectors[1] = 0.0
    res = select_candidate(c, _scores([float("nan"), -5.0, -1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]), 10)
    assert res.index == 2
    assert res.rows[0]["discarded_by"] == ["nan"] and res.rows[1]["discarded_by"] == ["zero_norm"]


def test_no_survivor_error_names_the_filters():
    c = _cands([0, 1, 2, 3, 4])
    s = _scores([-1.0] * 5, [-0.5, -0.5, 1.0, 1.0, 1.0], [0.0, 0.0, 0.2, 0.3, 0.0])
    with pytest.raises(SelectionError) as e:
        select_candidate(c, s, 5)
    msg = str(e.value)
    assert "all 5 were discarded" in msg
    assert "2 with steering score < 0.0" in msg
    assert "2 with KL > 0.1" in msg
    assert "1 with layer >= 4" in msg
    assert "Fix:" in msg and "kl_threshold" in msg
    assert "prune_layer_frac=0.0" not in msg
    # a 2-layer model: the hint names the layer rule
    c2 = _cands([0, 1])
    with pytest.raises(SelectionError, match="With 2 layers"):
        select_candidate(c2, _scores([-1.0, -1.0], [-1.0, 1.0], [0.0, 0.0]), 2)
