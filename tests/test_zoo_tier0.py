"""Tier 0: random-init tiny GPT-2 / Llama / Qwen2 / Gemma checkpoints are ordinary, loadable and seeded."""

from __future__ import annotations

import pytest
import torch
from alignscope.hooks.io import sha256_file
from alignscope.hooks.loading import load_model
from alignscope.organisms import TIER0_ARCHS, build_tier0
from alignscope.organisms.tier0 import Tier0Error


@pytest.mark.parametrize("arch", TIER0_ARCHS)
def test_tier0_builds_loads_and_is_seeded(arch, tmp_path):
    a = build_tier0(arch, tmp_path / "a", seed=3)
    b = build_tier0(arch, tmp_path / "b", seed=3)
    c = build_tier0(arch, tmp_path / "c", seed=4)
    assert (a / "model.safetensors").exists() and not list(a.glob("*.bin"))
    assert sha256_file(a / "model.safetensors") == sha256_file(b / "model.safetensors")
    assert sha256_file(a / "model.safetensors") != sha256_file(c / "model.safetensors")
    h = load_model(a)
    assert h.model.config.model_type == arch
    assert h.has_chat_template and h.tokenizer.pad_token is not None
    text = h.format_prompts(["How are you?"])[0]
    assert "How are you?" in text and text != "How are you?"
    enc = h.encode(["hi", "a much longer prompt here"])
    assert enc["attention_mask"][0, 0] == 0  # left padding
    with torch.no_grad():
        out = h.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    assert out.logits.shape[-1] >= len(h.tokenizer) and torch.isfinite(out.logits).all()


def test_tier0_unknown_arch(tmp_path):
    with pytest.raises(Tier0Error, match="choose one of"):
        build_tier0("mamba", tmp_path / "x")
