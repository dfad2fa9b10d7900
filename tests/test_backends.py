"""The three capture backends (hooks, TransformerLens bridge, nnsight) on four real architectures.

References are independent of alignscope's batching: each prompt run alone (no padding) through HF with
``output_hidden_states=True``. The user's model and tokenizer must be unchanged after every backend ran.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from alignscope.hooks import load_model
from transformers import AutoModelForCausalLM, AutoTokenizer

import alignscope

BACKENDS = ("hooks", "transformer_lens", "nnsight")
PROMPTS = [
    "Why is the sky blue?",
    "Hi",
    "Write a poem about the sea, please, and make it long enough to need padding.",
    "Describe the water cycle.",
    "List the planets",
]
ATOL = 1e-4


def _sites(n: int) -> list[str]:
    return (
        ["embed", "final", "logits"]
        + [f"resid_pre.{i}" for i in range(n)]
        + [f"resid_post.{i}" for i in range(n)]
        + [f"attn_out.{i}" for i in range(n)]
        + [f"mlp_out.{i}" for i in range(n)]
    )


@pytest.fixture(scope="module")
def user_objects(tiny_paths):
    """Per architecture: the user's own model and tokenizer, and a handle built from them (lazily)."""
    cache: dict = {}

    def get(arch: str):
        if arch not in cache:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = AutoModelForCausalLM.from_pretrained(tiny_paths[arch], dtype=torch.float32).eval()
                tok = AutoTokenizer.from_pretrained(tiny_paths[arch])
            cache[arch] = (model, tok, load_model(model, tok))
        return cache[arch]

    return get


def _reference(handle, prompts) -> list[tuple]:
    """Per prompt, alone and unpadded: (hidden_states tuple, logits), each ``[T_i, ...]``."""
    refs = []
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([handle.tokenize([p], chat=False)[0]])
            out = handle.model(input_ids=ids, output_hidden_states=True)
            refs.append(([h[0] for h in out.hidden_states], out.logits[0]))
    return refs


def _snapshot(model, tok) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "ptrs": {k: v.data_ptr() for k, v in model.state_dict().items()},
        "grad": {k: p.requires_grad for k, p in model.named_parameters()},
        "attn": model.config._attn_implementation,
        "types": [(n, type(m)) for n, m in model.named_modules()],
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()),
        "training": model.training,
        "tok": (tok.padding_side, tok.pad_token, tok.pad_token_id, len(tok)),
    }


def _assert_unchanged(before: dict, model, tok, what: str) -> None:
    after = _snapshot(model, tok)
    assert after["attn"] == before["attn"], f"{what} changed the attention implementation"
    assert after["types"] == before["types"], f"{what} replaced submodules of the user's model"
    assert after["hooks"] == before["hooks"], f"{what} left hooks on the user's model"
    assert after["grad"] == before["grad"], f"{what} changed requires_grad flags"
    assert after["training"] == before["training"]
    assert after["ptrs"] == before["ptrs"], f"{what} replaced weight tensors"
    for k, v in before["state"].items():
        assert torch.equal(after["state"][k], v), f"{what} changed weight {k}"
    assert after["tok"] == before["tok"], f"{what} changed the user's tokenizer"


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_backends_agree_with_hidden_states(user_objects, arch, padding_side):
    model, tok, handle = user_objects(arch)
    n = handle.n_layers
    sites = _sites(n)
    refs = _reference(handle, PROMPTS)
    lengths = [len(r[0][0]) for r in refs]
    assert len(set(lengths)) > 1, "the batch must mix lengths so padding matters"
    before_user = _snapshot(model, tok)
    before_handle_tok = _snapshot(handle.model, handle.tokenizer)["tok"]
    results = {}
    for be in BACKENDS:
        acts = alignscope.capture(
            handle, PROMPTS, sites, positions="all", backend=be, padding_side=padding_side, chat=False
        )
        results[be] = acts
        _assert_unchanged(before_user, model, tok, f"backend {be!r}")
        assert _snapshot(handle.model, handle.tokenizer)["tok"] == before_handle_tok
        for i, (hs, logits) in enumerate(refs):
            T = lengths[i]
            assert int(acts.mask[i].sum()) == T
            want = {"embed": hs[0], "final": hs[n], "logits": logits}
            want.update({f"resid_pre.{j}": hs[j] for j in range(n)})
            want.update({f"resid_post.{j}": hs[j + 1] for j in range(n - 1)})
            for s, ref in want.items():
                got = acts[s][i, :T]
                err = (got - ref).abs().max().item()
                assert err < ATOL, f"{be} {arch} {padding_side}: {s} row {i} differs from HF by {err:.2e}"
            # attention and MLP outputs compose the residual stream: hs[j+1] = hs[j] + attn_out + mlp_out
            for j in range(n):
                post = acts[f"resid_post.{j}"][i, :T]
                comp = hs[j] + acts[f"attn_out.{j}"][i, :T] + acts[f"mlp_out.{j}"][i, :T]
                assert (post - comp).abs().max().item() < ATOL, f"{be}: attn_out/mlp_out.{j} do not compose"
                if j < n - 1:
                    assert (post - hs[j + 1]).abs().max().item() < ATOL
            # the last block's output, normed by the model's own final norm, is `final`
            with torch.no_grad():
                normed = handle.adapter.final_norm_module(handle.model)(acts[f"resid_post.{n - 1}"][i, :T])
            assert (normed - hs[n]).abs().max().item() < ATOL
            # padding is zero in the `all` layout
            assert acts["resid_pre.0"][i, T:].abs().sum() == 0
    for be in ("transformer_lens", "nnsight"):
        for s in sites:
            err = (results[be][s] - results["hooks"][s]).abs().max().item()
            assert err < ATOL, f"{be} vs hooks at {s}: {err:.2e}"


@pytest.mark.parametrize(
    "sites,positions",
    [
        (["resid_pre.1"], "last"),  # stops early on every backend
        (["embed", "resid_post.0"], "mean"),
        (["logits", "attn_out.-1"], [0, -1]),
        (["resid_post.-1", "final"], "last"),
    ],
)
def test_backends_agree_on_subsets_and_positions(user_objects, sites, positions):
    _, _, handle = user_objects("llama")
    got = {
        be: alignscope.capture(handle, PROMPTS, sites, positions=positions, backend=be, batch_size=3)
        for be in BACKENDS
    }
    ref = got["hooks"]
    for be in ("transformer_lens", "nnsight"):
        assert sorted(got[be].data) == sorted(ref.data)
        for s in ref.data:
            assert got[be][s].shape == ref[s].shape
            assert got[be][s].dtype == torch.float32
            assert (got[be][s] - ref[s]).abs().max().item() < ATOL, (be, s)


def test_private_copy_sees_weight_edits_and_warns_on_hooks(user_objects):
    """The copies share the user's weight tensors: an in-place weight edit shows up in every backend."""
    model, _, handle = user_objects("qwen2")
    site = ["resid_post.2"]
    base = alignscope.capture(handle, PROMPTS, site, backend="hooks", chat=False)["resid_post.2"]
    for be in ("transformer_lens", "nnsight"):  # build (and cache) the copies first
        alignscope.capture(handle, PROMPTS, site, backend=be, chat=False)
    w = handle.adapter.out_proj(model, 1, "mlp").weight
    with torch.no_grad():
        w.mul_(3.0)
    try:
        edited = {be: alignscope.capture(handle, PROMPTS, site, backend=be, chat=False) for be in BACKENDS}
    finally:
        with torch.no_grad():
            w.div_(3.0)
    assert (edited["hooks"]["resid_post.2"] - base).abs().max() > 1e-3
    for be in ("transformer_lens", "nnsight"):
        assert (edited[be]["resid_post.2"] - edited["hooks"]["resid_post.2"]).abs().max() < ATOL

    # a hook on the user's model is not seen by the private copies: say so
    hook = handle.adapter.block(model, 0).register_forward_hook(lambda m, a, o: None)
    try:
        handle._cache.pop("transformer_lens_warned", None)
        with pytest.warns(UserWarning, match="private copy"):
            alignscope.capture(handle, PROMPTS[:1], site, backend="transformer_lens", chat=False)
    finally:
        hook.remove()


def test_backend_copies_cached_per_handle(user_objects):
    _, _, handle = user_objects("gpt2")
    for be in ("transformer_lens", "nnsight"):
        alignscope.capture(handle, PROMPTS[:2], ["resid_post.0"], backend=be, chat=False)
    bridge = handle._cache["tl_bridge"][1]
    wrapped = handle._cache["nnsight_model"][1]
    assert bridge.original_model is not handle.model
    assert wrapped._module is not handle.model
    for be in ("transformer_lens", "nnsight"):
        alignscope.capture(handle, PROMPTS[:2], ["resid_post.1"], backend=be, chat=False)
    assert handle._cache["tl_bridge"][1] is bridge
    assert handle._cache["nnsight_model"][1] is wrapped
