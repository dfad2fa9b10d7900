"""capture (hooks backend) on four real architectures: sites vs output_hidden_states, padding invariance,
positions picked against the tokenizer's own output, early stop, errors."""

from __future__ import annotations

import pytest
import torch
from alignscope.hooks import CheckpointError, PromptError, SiteError, TokenizerError, UnsafeCheckpointError

from alignscope import capture, load_model

PROMPTS = [
    "Hello there, how are you today?",
    "Why is the sky blue?",
    "Hi",
    "List the planets of the solar system.",
]
SITES = [
    "embed",
    "resid_pre.1",
    "attn_out.1",
    "mlp_out.0",
    "resid_post.0",
    "resid_post.-1",
    "final",
    "logits",
]


def _hidden_states(h, prompts, padding_side="left"):
    enc = h.encode(prompts, padding_side=padding_side)
    with torch.no_grad():
        out = h.model(**enc, output_hidden_states=True)
    return enc, out.hidden_states, out.logits


def test_sites_match_output_hidden_states(tiny_paths, arch):
    h = load_model(tiny_paths[arch])
    acts = capture(h, PROMPTS, SITES, "all")
    enc, hs, logits = _hidden_states(h, PROMPTS, padding_side="right")
    m = enc["attention_mask"].bool()
    L = h.n_layers
    ref = {"embed": hs[0], "resid_pre.1": hs[1], "resid_post.0": hs[1], "final": hs[L], "logits": logits}
    for site, r in ref.items():
        got = acts[site]
        T = r.shape[1]
        assert got.shape[:2] == (len(PROMPTS), T)
        diff = (got[m] - r[m]).abs().max().item()
        assert diff < 1e-4, (arch, site, diff)
    # resid_post of the last block is NOT hidden_states[-1] (that one is after the final norm)
    last = acts[f"resid_post.{L - 1}"]
    assert (last[m] - hs[L][m]).abs().max().item() > 1e-3
    assert torch.equal(acts.mask.bool(), m)


def test_attn_and_mlp_out_compose_resid(tiny_paths, arch):
    """resid_post.L = resid_pre.L + attn_out.L + mlp_out.L (all four archs are pre-norm residual blocks)."""
    h = load_model(tiny_paths[arch])
    a = capture(h, PROMPTS, ["resid_pre.1", "attn_out.1", "mlp_out.1", "resid_post.1"], "last")
    recon = a["resid_pre.1"] + a["attn_out.1"] + a["mlp_out.1"]
    assert torch.allclose(recon, a["resid_post.1"], atol=1e-5)


@pytest.mark.parametrize("positions", ["last", "mean", "eoi", "all", [0, -1], -2])
def test_batched_equals_one_by_one_left_and_right(tiny_paths, arch, positions):
    h = load_model(tiny_paths[arch])
    sites = ["resid_pre.0", "resid_post.1", "final"]
    left = capture(h, PROMPTS, sites, positions, padding_side="left", batch_size=4)
    right = capture(h, PROMPTS, sites, positions, padding_side="right", batch_size=3)
    for i, p in enumerate(PROMPTS):
        one = capture(h, [p], sites, positions)
        for s in sites:
            ref = one[s][0]
            for res in (left, right):
                got = res[s][i]
                if positions == "all":
                    got = got[: ref.shape[0]]
                    assert res.mask[i].sum() == ref.shape[0]
                assert torch.allclose(got, ref, atol=1e-5), (arch, positions, s, i)


def test_positions_pick_intended_tokens(tiny_paths):
    """Use the embed site of a model whose embedding rows encode the token id, so each captured vector names the
    token it came from; compare with the tokenizer's own output."""
    h = load_model(tiny_paths["llama"])
    emb = h.adapter.embed_module(h.model)
    saved = emb.weight.detach().clone()
    try:
        with torch.no_grad():
            emb.weight.zero_()
            emb.weight[:, 0] = torch.arange(emb.weight.shape[0], dtype=emb.weight.dtype)
        ids = [h.tokenizer(h.format_prompts([p])[0], add_special_tokens=False)["input_ids"] for p in PROMPTS]
        tok_at = lambda acts, key: acts[key][..., 0].round().long()  # noqa: E731
        last = capture(h, PROMPTS, "embed", "last", padding_side="right")
        assert tok_at(last, "embed").tolist() == [x[-1] for x in ids]
        eoi = capture(h, PROMPTS, "embed", "eoi")
        n = len(h.eoi_ids())
        assert tok_at(eoi, "embed").tolist() == [x[-n:] for x in ids] == [h.eoi_ids()] * len(PROMPTS)
        alla = capture(h, PROMPTS, "embed", "all", padding_side="left")
        toks = tok_at(alla, "embed")
        for i, x in enumerate(ids):
            assert toks[i, : len(x)].tolist() == x
            assert int(alla.mask[i].sum()) == len(x)
        mean = capture(h, PROMPTS, "embed", "mean")
        assert torch.allclose(mean["embed"][:, 0], torch.tensor([sum(x) / len(x) for x in ids]), atol=1e-4)
        idx = capture(h, PROMPTS, "embed", [0, 2, -3])
        assert tok_at(idx, "embed").tolist() == [[x[0], x[2], x[-3]] for x in ids]
    finally:
        with torch.no_grad():
            emb.weight.copy_(saved)


def test_early_stop_skips_later_blocks_and_head(tiny_paths):
    h = load_model(tiny_paths["llama"])
    called = []
    hooks = [
        h.adapter.block(h.model, i).register_forward_pre_hook(lambda m, a, i=i: called.append(i))
        for i in range(h.n_layers)
    ]
    hooks.append(
        h.adapter.lm_head_module(h.model).register_forward_pre_hook(lambda m, a: called.append("head"))
    )
    try:
        capture(h, PROMPTS, "resid_post.0", "last")
        assert called == [0]
        called.clear()
        capture(h, PROMPTS, "final", "last")
        assert "head" not in called and len(called) == h.n_layers
        called.clear()
        capture(h, PROMPTS, ["embed", "resid_pre.0"], "last")  # two sites at the same hook point
        assert called == [0]
    finally:
        for x in hooks:
            x.remove()


def test_model_unchanged_and_hooks_removed(tiny_paths):
    from transformers import AutoTokenizer

    h0 = load_model(tiny_paths["gpt2"])
    tok = AutoTokenizer.from_pretrained(tiny_paths["gpt2"])
    side, pad = tok.padding_side, tok.pad_token
    before = {k: v.clone() for k, v in h0.model.state_dict().items()}
    h = load_model(h0.model, tok)
    capture(h, PROMPTS, ["resid_post.0", "final"], "mean")
    assert tok.padding_side == side and tok.pad_token == pad
    for k, v in h0.model.state_dict().items():
        assert torch.equal(v, before[k])
    for mod in h0.model.modules():
        assert not mod._forward_hooks and not mod._forward_pre_hooks


def test_provenance_recorded(tiny_paths):
    h = load_model(tiny_paths["qwen2"])
    acts = capture(h, PROMPTS, "resid_post.-1", "last")
    meta = acts.meta
    for key in (
        "model_path",
        "model_hash",
        "sites",
        "positions",
        "backend",
        "dataset_hash",
        "alignscope_version",
    ):
        assert meta[key] is not None
    assert acts["resid_post.-1"] is acts[f"resid_post.{h.n_layers - 1}"]
    assert meta["dataset_hash"] != capture(h, PROMPTS[:2], "resid_post.-1", "last").meta["dataset_hash"]


# ------------------------------------------------------------------ errors name the problem and the fix
def test_errors(tiny_paths, tmp_path):
    h = load_model(tiny_paths["llama"])
    with pytest.raises(CheckpointError, match="no such directory"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_model(tmp_path / "empty")
    with pytest.raises(SiteError, match="out of range") as e:
        capture(h, PROMPTS, "resid_post.7", "last")
    assert "Fix:" in str(e.value)
    with pytest.raises(SiteError, match="unknown site"):
        capture(h, PROMPTS, "resid_mid.1", "last")
    with pytest.raises(PromptError, match="empty"):
        capture(h, [], "final", "last")
    with pytest.raises(PromptError, match="context window"):
        capture(h, ["word " * 400], "final", "last", chat=False)
    with pytest.raises(PromptError, match="outside prompt"):
        capture(h, ["Hi"], "final", [40])
    h.tokenizer.chat_template = None
    with pytest.raises(TokenizerError, match="no chat template"):
        capture(h, PROMPTS, "final", "last", chat=True)


def test_pickle_refused_without_opt_in(tiny_paths, tmp_path):
    import shutil

    d = tmp_path / "pkl"
    shutil.copytree(tiny_paths["gpt2"], d)
    ref = load_model(d)
    for f in d.glob("*.safetensors"):
        f.unlink()
    torch.save(ref.model.state_dict(), d / "pytorch_model.bin")
    with pytest.raises(UnsafeCheckpointError, match="pickle"):
        load_model(d)
    h = load_model(d, allow_pickle=True)
    enc = h.encode(PROMPTS)
    with torch.no_grad():
        assert torch.allclose(h.model(**enc).logits, ref.model(**enc).logits)


def test_remote_code_refused(tiny_paths, tmp_path):
    import json
    import shutil

    d = tmp_path / "remote"
    shutil.copytree(tiny_paths["llama"], d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsafeCheckpointError, match="custom modelling code"):
        load_model(d)


def test_nan_activations_raise(tiny_paths):
    from alignscope.hooks import NumericsError

    h = load_model(tiny_paths["llama"])
    w = h.model.model.layers[0].mlp.down_proj.weight
    saved = w.detach().clone()
    try:
        with torch.no_grad():
            w[0, 0] = float("nan")
        with pytest.raises(NumericsError, match="NaN"):
            capture(h, PROMPTS, "resid_post.1", "last")
    finally:
        with torch.no_grad():
            w.copy_(saved)


def test_peft_adapter_merged(tiny_paths, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_paths["llama"])
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    pm = get_peft_model(base, cfg)
    pm.save_pretrained(tmp_path / "lora")
    acfg = tmp_path / "lora" / "adapter_config.json"
    import json

    c = json.loads(acfg.read_text())
    c["base_model_name_or_path"] = tiny_paths["llama"]
    acfg.write_text(json.dumps(c))
    h = load_model(tmp_path / "lora")
    assert h.source == "peft"
    merged_ref = pm.merge_and_unload()
    enc = h.encode(PROMPTS)
    with torch.no_grad():
        a = h.model(**enc).logits
        b = merged_ref(**enc).logits
        c0 = load_model(tiny_paths["llama"]).model(**enc).logits
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, c0, atol=1e-3)
