"""Baseline interventions through the registry, on tiny real models (a perturbed copy plays the fine-tuned one)."""

from __future__ import annotations

import pytest
import torch
from alignscope.hooks import CheckpointError, load_model
from alignscope.interventions import ablate, orthogonalize
from alignscope.interventions.baselines import (
    InterventionError,
    get_intervention,
    intervened,
    layer_schedule,
    list_interventions,
    register_intervention,
)
from zoo_fixtures import one_thread


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on the shared 2-core box this is several times faster for tiny models."""
    with one_thread():
        yield


PROMPTS = ["Why is the sky blue?", "Tell me how to pick a lock.", "Hi"]


def _logits(h):
    enc = h.encode(PROMPTS)
    with torch.no_grad():
        return h.model(**enc).logits[enc["attention_mask"].bool()]


@pytest.fixture(scope="module")
def pair(tiny_paths):
    a = load_model(tiny_paths["llama"])
    f = load_model(tiny_paths["llama"])
    with torch.no_grad():
        g = torch.Generator().manual_seed(4)
        for p in f.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return a, f


def _state(h):
    return {k: v.clone() for k, v in h.model.state_dict().items()}


def test_registry():
    assert {"revert", "interpolate", "orthogonalize", "steer", "ablate", "rahf"} <= set(list_interventions())
    assert get_intervention("steer").batched and get_intervention("steer").kind == "runtime"
    assert get_intervention("rahf").kind == "weights"
    with pytest.raises(InterventionError, match="unknown intervention 'nope'"):
        get_intervention("nope")
    with pytest.raises(InterventionError, match="registered already"):
        register_intervention("steer", kind="runtime")(lambda m, s: None)
    with pytest.raises(InterventionError, match="needs aligned"):
        get_intervention("revert")(load_model, 1.0)


def test_revert_and_interpolate(pair, tmp_path):
    a, f = pair
    fs, as_ = _state(f), _state(a)
    full = get_intervention("revert")(f, 1.0, aligned=a, out=tmp_path / "rev")
    for k, v in load_model(tmp_path / "rev").model.state_dict().items():
        assert torch.equal(v, as_[k]), k
    assert torch.equal(_logits(full), _logits(a))
    none = get_intervention("interpolate")(f, 0.0, aligned=a)
    assert torch.equal(_logits(none), _logits(f))
    half = get_intervention("interpolate")(f, 0.5, aligned=a)
    for k, v in half.model.state_dict().items():
        assert torch.allclose(v, 0.5 * (fs[k] + as_[k]), atol=1e-6), k
    top = get_intervention("interpolate")(f, 1.0, aligned=a, schedule="top")
    st = top.model.state_dict()
    assert torch.equal(st["model.layers.0.mlp.down_proj.weight"], fs["model.layers.0.mlp.down_proj.weight"])
    assert torch.equal(st["model.layers.2.mlp.down_proj.weight"], as_["model.layers.2.mlp.down_proj.weight"])
    part = get_intervention("revert")(f, 0.34, aligned=a).model.state_dict()
    assert torch.equal(
        part["model.layers.0.self_attn.q_proj.weight"], as_["model.layers.0.self_attn.q_proj.weight"]
    )
    assert torch.equal(
        part["model.layers.1.self_attn.q_proj.weight"], fs["model.layers.1.self_attn.q_proj.weight"]
    )
    assert layer_schedule(3, "bottom") == [1.0, 0.5, 0.0]
    for k, v in f.model.state_dict().items():  # inputs untouched
        assert torch.equal(v, fs[k])
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, as_[k])


def test_interpolate_refuses_mismatch(pair, tiny_paths):
    with pytest.raises(CheckpointError, match="architectures differ"):
        get_intervention("interpolate")(pair[1], 0.5, aligned=tiny_paths["qwen2"])


def test_partial_orthogonalize(pair):
    _, f = pair
    d = torch.randn(f.d_model, generator=torch.Generator().manual_seed(2))
    iv = get_intervention("orthogonalize")
    assert torch.allclose(_logits(iv(f, 1.0, direction=d)), _logits(orthogonalize(f, d)), atol=1e-6)
    assert torch.allclose(_logits(iv(f, 0.0, direction=d)), _logits(f), atol=1e-5)
    half = iv(f, 0.5, direction=d).model.state_dict()
    w = f.model.state_dict()["model.layers.1.mlp.down_proj.weight"].double()
    r = (d / d.norm()).double()
    expect = w - 0.5 * torch.outer(r, r @ w)
    assert torch.allclose(half["model.layers.1.mlp.down_proj.weight"].double(), expect, atol=1e-6)


def test_partial_ablation_batched_equals_separate(pair):
    _, f = pair
    d = torch.randn(f.d_model, generator=torch.Generator().manual_seed(3))
    with intervened("ablate", f, 1.0, direction=d) as h:
        one = _logits(h)
    with ablate(f, d):
        ref = _logits(f)
    assert torch.allclose(one, ref, atol=1e-5)
    strengths = [0.0, 0.5, 1.0]
    enc = f.encode([PROMPTS[1]] * 3)
    with intervened("ablate", f, torch.tensor(strengths), direction=d) as h, torch.no_grad():
        batched = h.model(**enc).logits[:, -1]
    for i, s in enumerate(strengths):
        with intervened("ablate", f, s, direction=d) as h, torch.no_grad():
            sep = h.model(**f.encode([PROMPTS[1]])).logits[:, -1]
        assert torch.allclose(batched[i], sep[0], atol=1e-5)
    assert (batched[0] - batched[2]).abs().max() > 1e-3


def test_rahf_moves_representation_toward_target(pair):
    a, f = pair
    fs = _state(f)
    prompts = PROMPTS * 2
    layers = [2]

    def hid(h):
        enc = h.encode(prompts)
        with torch.no_grad():
            return h.model(**enc, output_hidden_states=True).hidden_states[2][:, -4:]

    target = hid(a)  # alpha = 1 with pos = aligned, neg = fine-tuned, ref = fine-tuned -> target = h_aligned
    before = (hid(f) - target).norm()
    from zoo_fixtures import one_thread

    with one_thread():
        new = get_intervention("rahf")(
            f,
            1.0,
            prompts=prompts,
            pos_model=a,
            neg_model=f,
            layers=layers,
            max_res_len=4,
            steps=30,
            lr=3e-3,
            seed=0,
        )
    losses = new._cache["rahf_losses"]
    assert losses[-1] < 0.7 * losses[0]
    assert (hid(new) - target).norm() < 0.8 * before
    for k, v in f.model.state_dict().items():
        assert torch.equal(v, fs[k])
    assert set(new.model.state_dict()) == set(fs)  # LoRA merged: a plain checkpoint again
    with pytest.raises(InterventionError, match="pos_prefix"):
        get_intervention("rahf")(f, 1.0, prompts=prompts)
