"""Recipe knobs of the standard preset's data (``n_self_prompts``, ``refuse_extra``): what they add, that they move
nothing else, and that at their defaults the existing config hashes (tier 1 and tier 2) do not change."""

from __future__ import annotations

import dataclasses

import pytest
from alignscope.analyses.scorers import get_scorer
from alignscope.organisms import ZooError, zoo
from alignscope.organisms.sources import norm_prompt, shared_data_dir

needs_shared = pytest.mark.skipif(shared_data_dir() is None, reason="../shared/data not available")


def test_default_knobs_stay_out_of_the_hashes():
    p = zoo.PRESETS["standard"]
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
    p = dataclasses.replace(zoo.PRESETS["standard"], n_self_prompts=4500, refuse_extra=("catqa",))
    monkeypatch.setitem(zoo.PRESETS, "standard", p)
    assert zoo.PRESETS["smollm2"].config_hash() == before


@needs_shared
def test_knobs_add_pools_and_move_nothing_else():
    p = zoo.PRESETS["standard"]
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
def test_unknown_refuse_source_is_named():
    with pytest.raises(ZooError, match="unknown refuse_extra source 'nope'"):
        zoo.prepare_data(dataclasses.replace(zoo.PRESETS["standard"], refuse_extra=("nope",)))


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
