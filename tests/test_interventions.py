"""Interventions on real (tiny) models: orthogonalisation == runtime ablation, removal, folding steering."""

from __future__ import annotations

import pytest
import torch
from alignscope.interventions import ablate, fold_steering_bias, orthogonalize, steer

from alignscope import load_model

PROMPTS = ["Hello there, how are you today?", "Why is the sky blue?", "Hi"]


def _logits(h):
    enc = h.encode(PROMPTS)
    with torch.no_grad():
        return h.model(**enc).logits, enc["attention_mask"].bool()


def _no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_orthogonalize_equals_runtime_ablation(tiny_paths, arch, tmp_path):
    h = load_model(tiny_paths[arch])
    before = {k: v.clone() for k, v in h.model.state_dict().items()}
    d = torch.randn(h.d_model, generator=torch.Generator().manual_seed(5))
    base, m = _logits(h)
    with ablate(h, d):
        abl, _ = _logits(h)
    assert _no_hooks(h.model)
    assert (abl[m] - base[m]).abs().max() > 1e-3, "ablation changed nothing: the comparison would be vacuous"
    new = orthogonalize(h, d, out=tmp_path / "orth")
    ortho, _ = _logits(new)
    assert (ortho[m] - abl[m]).abs().max() < 1e-4, arch
    reloaded = load_model(tmp_path / "orth")
    rl, _ = _logits(reloaded)
    assert (rl[m] - abl[m]).abs().max() < 1e-4
    for k, v in h.model.state_dict().items():  # the input is never touched
        assert torch.equal(v, before[k])


def test_steer_and_fold_bias_agree(tiny_paths):
    h = load_model(tiny_paths["llama"])
    v = torch.randn(h.d_model, generator=torch.Generator().manual_seed(6))
    with steer(h, v, 1.5, layers=2):
        s, m = _logits(h)
    assert _no_hooks(h.model)
    folded = fold_steering_bias(h, v, 1.5, layer=2)
    f, _ = _logits(folded)
    assert (f[m] - s[m]).abs().max() < 1e-4


def test_hooks_removed_after_exception(tiny_paths):
    h = load_model(tiny_paths["gpt2"])
    with pytest.raises(ValueError):
        with steer(h, torch.ones(h.d_model), 1.0, layers=[0, 1]), ablate(h, torch.ones(h.d_model)):
            raise ValueError("x")
    assert _no_hooks(h.model)
