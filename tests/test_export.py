"""Export of steering vectors: safetensors + JSON and llama.cpp control-vector GGUF (read back with GGUFReader)."""

from __future__ import annotations

import gguf
import pytest
import torch
from alignscope.hooks import CheckpointError, SiteError, load_model
from alignscope.interventions import steer
from alignscope.interventions.export import (
    apply_control_vector,
    export_gguf,
    export_safetensors,
    load_safetensors,
    read_gguf,
    to_control_layers,
)
from alignscope.probes.direction import Direction
from zoo_fixtures import one_thread


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on the shared 2-core box this is several times faster for tiny models."""
    with one_thread():
        yield


PROMPTS = ["Why is the sky blue?", "Hi"]


def _logits(h):
    enc = h.encode(PROMPTS)
    with torch.no_grad():
        return h.model(**enc).logits[enc["attention_mask"].bool()]


def test_gguf_round_trip_and_metadata(tmp_path):
    g = torch.Generator().manual_seed(0)
    vecs = {"resid_post.1": torch.randn(64, generator=g), "resid_pre.3": torch.randn(64, generator=g)}
    p = export_gguf(vecs, tmp_path / "cv.gguf", model_hint="llama", alpha=2.0)
    r = gguf.GGUFReader(str(p))
    assert bytes(r.fields["general.architecture"].parts[-1]).decode() == "controlvector"
    names = sorted(t.name for t in r.tensors)
    assert names == ["direction.1", "direction.2"]  # resid_pre.3 == output of block 2
    for t in r.tensors:
        assert t.tensor_type == gguf.GGMLQuantizationType.F32 and list(t.shape) == [64]
    back, meta = read_gguf(p)
    assert meta == {
        "general.architecture": "controlvector",
        "controlvector.model_hint": "llama",
        "controlvector.layer_count": 2,
    }
    assert torch.equal(back[1], 2.0 * vecs["resid_post.1"])
    assert torch.equal(back[2], 2.0 * vecs["resid_pre.3"])
    assert [x.name for x in tmp_path.iterdir()] == ["cv.gguf"]


def test_gguf_replay_equals_runtime_steering(tiny_paths, tmp_path):
    h = load_model(tiny_paths["llama"])
    d = Direction(
        torch.randn(h.d_model, generator=torch.Generator().manual_seed(1)), "resid_pre.2", "last", "mean"
    )
    with steer(h, d, 3.0, layers=[2], site="resid_pre"):
        ref = _logits(h)
    base = _logits(h)
    assert (ref - base).abs().max() > 1e-3
    p = export_gguf(d, tmp_path / "d.gguf", model_hint=h.model.config.model_type, alpha=1.5)
    with apply_control_vector(h, p, scale=2.0):
        got = _logits(h)
    assert (got - ref).abs().max() < 1e-4
    assert torch.equal(_logits(h), base)  # hooks removed


def test_safetensors_round_trip(tmp_path):
    d = Direction(torch.arange(8.0), "resid_post.4", "last", "diff_means", provenance={"seed": 3})
    p = export_safetensors(d, tmp_path / "vec", normalize=True, alpha=0.5)
    back, meta = load_safetensors(p)
    assert list(back) == [4] and meta["source"]["method"] == "diff_means" and meta["normalize"] is True
    assert torch.allclose(back[4], 0.5 * d.unit(), atol=1e-7)
    p.write_bytes(p.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(CheckpointError, match="hash"):
        load_safetensors(p)


def test_bad_sites_refused(tmp_path):
    with pytest.raises(SiteError, match="block 0"):
        to_control_layers({"resid_pre.1": torch.ones(4)})
    with pytest.raises(SiteError, match="residual-stream"):
        to_control_layers({"attn_out.3": torch.ones(4)})
    with pytest.raises(SiteError, match="widths"):
        to_control_layers({"resid_post.1": torch.ones(4), "resid_post.2": torch.ones(5)})
    with pytest.raises(SiteError):
        export_gguf(torch.ones(4), tmp_path / "x.gguf", model_hint="llama")
    assert list(tmp_path.iterdir()) == []
    bad = tmp_path / "notcv.gguf"
    w = gguf.GGUFWriter(str(bad), "llama")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(CheckpointError, match="not a control vector"):
        read_gguf(bad)
