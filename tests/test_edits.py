"""Edit primitives on real (tiny) models: identities that must hold, removal, generation with a KV cache."""

from __future__ import annotations

import pytest
import torch
from alignscope.hooks import add_noise, add_vector, capture, patch, project_out

from alignscope import load_model

PROMPTS = [
    "Hello there, how are you today?",
    "Why is the sky blue?",
    "Hi",
    "List the planets of the solar system.",
]


def _logits(h, prompts=PROMPTS):
    enc = h.encode(prompts)
    with torch.no_grad():
        return h.model(**enc).logits, enc["attention_mask"].bool()


def _no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_zero_vector_and_orthogonal_projection_change_nothing(tiny_paths, arch):
    h = load_model(tiny_paths[arch])
    base, m = _logits(h)
    with add_vector(h, "resid_pre.1", torch.zeros(h.d_model)):
        z, _ = _logits(h)
    assert torch.equal(z[m], base[m])
    # a direction orthogonal to every activation at the site: the null space of the stacked activations
    few = PROMPTS[1:3]
    base2, m2 = _logits(h, few)
    acts = capture(h, few, "resid_post.0", "all")
    X = acts["resid_post.0"][acts.mask.bool()].double()
    assert X.shape[0] < h.d_model
    _, _, Vh = torch.linalg.svd(X, full_matrices=True)
    r = Vh[-1].float()
    assert (X.float() @ r).abs().max() < 1e-4
    with project_out(h, "resid_post.0", r):
        p, _ = _logits(h, few)
    assert (p[m2] - base2[m2]).abs().max() < 1e-4
    # ...while projecting out a direction the activations do use changes the output (the test can fail)
    with project_out(h, "resid_post.0", X.float().mean(0)):
        q, _ = _logits(h, few)
    assert (q[m2] - base2[m2]).abs().max() > 1e-3
    assert _no_hooks(h.model)


def test_project_out_matches_hand_computation(tiny_paths):
    h = load_model(tiny_paths["llama"])
    d = torch.randn(h.d_model, generator=torch.Generator().manual_seed(0))
    r = d / d.norm()
    before = capture(h, PROMPTS, "resid_post.1", "last")["resid_post.1"]
    with project_out(h, "resid_post.1", d):
        after = capture(h, PROMPTS, "resid_post.1", "last")["resid_post.1"]
    expected = before - (before @ r).unsqueeze(-1) * r
    assert torch.allclose(after, expected, atol=1e-5)
    assert (after @ r).abs().max() < 1e-5


def test_add_vector_positions_and_per_row_strength(tiny_paths):
    h = load_model(tiny_paths["llama"])
    v = torch.randn(h.d_model, generator=torch.Generator().manual_seed(1))
    base = capture(h, PROMPTS, "resid_pre.1", "all")
    m = base.mask.bool()
    with add_vector(h, "resid_pre.1", v, alpha=2.0, positions="last"):
        last = capture(h, PROMPTS, "resid_pre.1", "all")
    delta = last["resid_pre.1"] - base["resid_pre.1"]
    lengths = m.sum(1)
    for i in range(len(PROMPTS)):
        assert torch.allclose(delta[i, lengths[i] - 1], 2 * v, atol=1e-5)
        assert delta[i, : lengths[i] - 1].abs().max() < 1e-6
    alpha = torch.tensor([0.0, 1.0, -1.0, 3.0])
    with add_vector(h, "resid_pre.1", v, alpha=alpha):
        rows = capture(h, PROMPTS, "resid_pre.1", "last")["resid_pre.1"]
    b = capture(h, PROMPTS, "resid_pre.1", "last")["resid_pre.1"]
    assert torch.allclose(rows - b, alpha.unsqueeze(1) * v, atol=1e-5)


def test_patch_replaces_and_handle_removal(tiny_paths):
    h = load_model(tiny_paths["qwen2"])
    val = torch.full((h.d_model,), 0.5)
    handle = patch(h, "resid_post.0", val, positions="last")
    got = capture(h, PROMPTS, "resid_post.0", "last")["resid_post.0"]
    assert torch.allclose(got, val.expand_as(got))
    handle.remove()
    handle.remove()  # idempotent
    assert _no_hooks(h.model)
    assert not torch.allclose(capture(h, PROMPTS, "resid_post.0", "last")["resid_post.0"], val.expand_as(got))


def test_hooks_removed_on_exception(tiny_paths):
    h = load_model(tiny_paths["gemma"])
    with pytest.raises(RuntimeError, match="boom"):
        with add_vector(h, "resid_pre.0", torch.ones(h.d_model)):
            raise RuntimeError("boom")
    assert _no_hooks(h.model)


def test_noise_reproducible_from_seed(tiny_paths):
    h = load_model(tiny_paths["llama"])
    outs = []
    for seed in (3, 3, 4):
        with add_noise(h, "resid_post.1", 1.0, seed=seed, distribution="uniform", norm=2.0):
            outs.append(capture(h, PROMPTS, "resid_post.1", "last")["resid_post.1"])
    base = capture(h, PROMPTS, "resid_post.1", "last")["resid_post.1"]
    assert torch.equal(outs[0], outs[1])
    assert not torch.allclose(outs[0], outs[2])
    noise = outs[0] - base
    assert torch.allclose(noise.norm(dim=-1), torch.full((len(PROMPTS),), 2.0), atol=1e-4)
    assert (noise >= -1e-5).all()  # Uniform[0, 1] is not zero-mean: every coordinate is non-negative


def _spread_head(h, scale=8.0):
    """Scale the LM head so greedy choices are far from ties (random tiny models are near-uniform)."""
    head = h.adapter.lm_head_module(h.model)
    with torch.no_grad():
        head.weight.mul_(scale)


def _greedy(h, prompts, n=8):
    enc = h.encode(prompts, padding_side="left")
    with torch.no_grad():
        out = h.model.generate(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            max_new_tokens=n,
            do_sample=False,
            pad_token_id=h.pad_id,
            eos_token_id=None,
            output_scores=True,
            return_dict_in_generate=True,
        )
    new = out.sequences[:, enc["input_ids"].shape[1] :]
    scores = torch.stack(out.scores, 1)  # [B, n, V]
    top2 = scores.topk(2, dim=-1).values
    return new, (top2[..., 0] - top2[..., 1])


@pytest.mark.parametrize("arch_name", ["llama", "gpt2"])
def test_steered_generate_batched_equals_one_by_one(tiny_paths, arch_name):
    from transformers import AutoModelForCausalLM

    h = load_model(
        AutoModelForCausalLM.from_pretrained(tiny_paths[arch_name]),
        load_model(tiny_paths[arch_name]).tokenizer,
    )
    _spread_head(h)
    v = 4.0 * torch.randn(h.d_model, generator=torch.Generator().manual_seed(2))
    plain, _ = _greedy(h, PROMPTS)
    with add_vector(h, "resid_pre.1", v, positions="all"):
        batched, margin_b = _greedy(h, PROMPTS)
        singles = [_greedy(h, [p]) for p in PROMPTS]
    assert _no_hooks(h.model)
    for i, (tok, margin) in enumerate(singles):
        assert float(margin.min()) > 1e-3, "greedy choice near a tie: the comparison would be meaningless"
        assert batched[i].tolist() == tok[0].tolist(), (arch_name, i)
    assert not torch.equal(batched, plain), "steering changed nothing: the edit did not fire during generate"
