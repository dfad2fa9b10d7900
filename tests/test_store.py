"""Streaming capture to disk: equals the in-memory result, indexes lazily, resumes after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from alignscope.hooks import AlignscopeError

from alignscope import capture, load_model, open_activations

PROMPTS = [f"Question {i}: why is the number {i * 7} interesting?" + " really" * (i % 5) for i in range(37)]


@pytest.mark.parametrize("positions", ["last", "all", "eoi"])
def test_stream_equals_memory(tiny_paths, tmp_path, positions):
    h = load_model(tiny_paths["llama"])
    sites = ["resid_post.0", "final"]
    mem = capture(h, PROMPTS, sites, positions, batch_size=8)
    lazy = capture(h, PROMPTS, sites, positions, batch_size=8, out=tmp_path / "store")
    again = open_activations(tmp_path / "store")
    for s in sites:
        full = again[s].load()
        assert full.shape == mem[s].shape
        assert torch.equal(full, mem[s])
        assert torch.equal(lazy[s][5:19], mem[s][5:19])
        assert torch.equal(again[s][-1], mem[s][-1])
        assert torch.equal(again[s][[3, 30, 8]], mem[s][[3, 30, 8]])
        assert len(again[s]) == len(PROMPTS)
    if positions == "all":
        assert torch.equal(again.mask.load(), mem.mask)
    assert again.meta["dataset_hash"] == mem.meta["dataset_hash"]


def test_different_capture_in_same_dir_refused(tiny_paths, tmp_path):
    h = load_model(tiny_paths["llama"])
    capture(h, PROMPTS[:5], "final", "last", out=tmp_path / "s")
    with pytest.raises(AlignscopeError, match="different capture"):
        capture(h, PROMPTS[:6], "final", "last", out=tmp_path / "s")
    with pytest.raises(AlignscopeError, match="not an activation store"):
        open_activations(tmp_path)


_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
from alignscope import capture, load_model
from alignscope.hooks import capture as _c
prompts = {prompts!r}
h = load_model({model!r})
def slow(done, total):
    time.sleep(0.15)
capture(h, prompts, ["resid_post.1"], "last", batch_size=2, out={out!r}, progress=slow)
"""


def test_killed_capture_resumes_without_redoing(tiny_paths, tmp_path):
    out = tmp_path / "big"
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(_SCRIPT).format(
            tests=str(Path(__file__).parent), prompts=PROMPTS, model=tiny_paths["llama"], out=str(out)
        )
    )
    proc = subprocess.Popen([sys.executable, str(script)], start_new_session=True)
    shards = out / "shards"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(shards.glob("b*.safetensors"))) < 4:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in shards.glob("b*.safetensors")}
    n_batches = (len(PROMPTS) + 1) // 2
    assert 4 <= len(finished) < n_batches, "the kill did not land midway"
    with pytest.raises(AlignscopeError, match="incomplete"):
        open_activations(out)
    h = load_model(tiny_paths["llama"])
    seen = []
    res = capture(
        h,
        PROMPTS,
        ["resid_post.1"],
        "last",
        batch_size=2,
        out=out,
        progress=lambda done, total: seen.append(done),
    )
    for name, mt in finished.items():
        assert (shards / name).stat().st_mtime_ns == mt, f"{name} was recomputed"
    assert len(list(shards.glob("b*.safetensors"))) == n_batches
    mem = capture(h, PROMPTS, ["resid_post.1"], "last", batch_size=2)
    assert torch.equal(res["resid_post.1"].load(), mem["resid_post.1"])
