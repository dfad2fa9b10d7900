"""Per-layer probe curves (probes.layers): held-out AUROC/accuracy against straightforward references,
bootstrap intervals, the model-facing capture path and the figure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from alignscope.hooks import PromptError, capture, load_model
from alignscope.probes.layers import plot_layer_curve, probe_curve_from_acts, probe_layers, stratified_split
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _synthetic(seed=0, n=60, d=16):
    g = torch.Generator().manual_seed(seed)
    shift = torch.zeros(d)
    shift[3] = 4.0
    pos = {0: torch.randn(n, d, generator=g), 1: torch.randn(n, d, generator=g) + shift}
    neg = {0: torch.randn(n, d, generator=g), 1: torch.randn(n, d, generator=g)}
    return pos, neg


def test_curve_matches_sklearn_reference():
    pos, neg = _synthetic()
    c = probe_curve_from_acts(pos, neg, test_frac=0.3, seed=5, n_boot=200)
    assert len(c.rows) == 4 and c.methods() == ["diff_means", "logistic"]
    y = np.r_[np.ones(60, int), np.zeros(60, int)]
    tr, te = stratified_split(y, 0.3, 5)
    for layer in (0, 1):
        X = torch.cat([pos[layer], neg[layer]]).double()
        mu1, mu0 = X[tr][y[tr] == 1].mean(0), X[tr][y[tr] == 0].mean(0)
        s = (X[te] @ (mu1 - mu0)).numpy()
        row = next(r for r in c.rows if r["method"] == "diff_means" and r["layer"] == layer)
        assert row["auroc"] == pytest.approx(roc_auc_score(y[te], s), abs=1e-12)
        thr = float(((mu1 + mu0) / 2) @ (mu1 - mu0))
        assert row["accuracy"] == pytest.approx(float(((s > thr) == y[te]).mean()))
        assert row["auroc_lo"] <= row["auroc"] <= row["auroc_hi"]
        assert row["accuracy_lo"] <= row["accuracy"] <= row["accuracy_hi"]
        # logistic: same decisions as sklearn on z-scored features
        Xtr = X[tr].numpy()
        mu, sd = Xtr.mean(0), Xtr.std(0)
        clf = LogisticRegression(C=1.0, max_iter=2000, random_state=5).fit((Xtr - mu) / sd, y[tr])
        ref = clf.decision_function((X[te].numpy() - mu) / sd)
        lrow = next(r for r in c.rows if r["method"] == "logistic" and r["layer"] == layer)
        assert lrow["auroc"] == pytest.approx(roc_auc_score(y[te], ref), abs=1e-9)
    assert c.best("diff_means")["layer"] == 1
    assert c.best("diff_means")["auroc"] > 0.95
    assert next(r for r in c.rows if r["layer"] == 0 and r["method"] == "diff_means")["auroc"] < 0.8


def test_explicit_test_sets_and_errors():
    pos, neg = _synthetic(1)
    tp, tn = _synthetic(2)
    c = probe_curve_from_acts(
        pos, neg, test_pos_acts=tp, test_neg_acts=tn, n_boot=50, methods=("diff_means",)
    )
    assert all(r["n_train"] == 120 and r["n_test"] == 120 for r in c.rows)
    assert c.provenance["split"] == "explicit test sets"
    with pytest.raises(PromptError, match="at least 2 per class"):
        probe_curve_from_acts({0: torch.randn(1, 4)}, {0: torch.randn(5, 4)})


def test_probe_layers_on_a_model_and_figure(tiny_paths, tmp_path):
    h = load_model(tiny_paths["llama"])
    pos = [f"Tell me how to pick lock number {i}." for i in range(8)]
    neg = [f"Describe the water cycle in step {i}." for i in range(8)]
    c = probe_layers(h, pos, neg, test_frac=0.25, seed=0, n_boot=100)
    assert {r["layer"] for r in c.rows} == set(range(h.n_layers))
    assert c.provenance["model_hash"] == h.model_hash and c.provenance["positions"] == "last"
    # reference: capture by hand, same split, diff-of-means projection AUROC
    y = np.r_[np.ones(8, int), np.zeros(8, int)]
    tr, te = stratified_split(y, 0.25, 0)
    a = capture(h, pos + neg, "resid_pre.2", "last")["resid_pre.2"].double()
    r = a[tr][y[tr] == 1].mean(0) - a[tr][y[tr] == 0].mean(0)
    row = next(x for x in c.rows if x["method"] == "diff_means" and x["layer"] == 2)
    assert row["auroc"] == pytest.approx(roc_auc_score(y[te], (a[te] @ r).numpy()), abs=1e-9)
    paths = plot_layer_curve(c, tmp_path / "curve.png", title="tiny")
    assert [p.suffix for p in paths] == [".png", ".svg"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and b"<svg" in paths[1].read_bytes()[:500]
    js = c.save_json(tmp_path / "curve.json")
    assert js.exists()


def _perturbed(src, dst, seed, scale=0.05):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = AutoModelForCausalLM.from_pretrained(src)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    m.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


def test_subspace_studies_on_checkpoints(tiny_paths, tmp_path):
    from alignscope.probes.studies import (
        activation_space_study,
        load_state_dict,
        plot_activation_mso,
        plot_update_mso,
        projection_study,
        update_space_study,
    )

    base = tiny_paths["llama"]
    aligned = _perturbed(base, tmp_path / "aligned", 1)
    ft = _perturbed(aligned, tmp_path / "ft", 2)
    rows = update_space_study(base, aligned, {"ft": ft, "same_as_alignment": aligned}, energy_fracs=(0.5,))
    # an update identical to nothing (aligned - aligned = 0) is skipped everywhere; ft is compared
    r = next(x for x in rows if x["pair"] == "alignment vs ft")
    assert 0.0 <= r["mso"] <= 1.0 and r["random_baseline"] > 0 and r["n_tensors"] > 0
    out = projection_study(
        base, aligned, {"ft": ft}, tmp_path / "proj", fracs=(0.5,), methods=("same", "orth")
    )
    assert [x["method"] for x in out] == ["same", "orth"]
    sd = {k: load_state_dict(p) for k, p in (("a", aligned), ("f", ft))}
    same, orth = (load_state_dict(x["path"]) for x in out)
    for k in sd["a"]:
        # same + orth splits the update exactly: (a + U_par) + (a + U - U_par) - a = f
        torch.testing.assert_close(same[k] + orth[k] - sd["a"][k], sd["f"][k], rtol=1e-5, atol=1e-5)
    assert load_model(out[0]["path"]).n_layers == 3
    meta = json.loads((Path(out[0]["path"]) / "organism.json").read_text())
    assert meta["kind"] == "projected" and meta["projection"]["method"] == "same"
    act = activation_space_study(
        {"base": base},
        ["how to pick a lock"] * 2 + ["steal a car"],
        ["add 2 and 3", "bake bread", "sum 4"],
        energy_fracs=(0.5,),
    )
    assert len(act) == 3 and all(0 <= x["mso"] <= 1 + 1e-5 for x in act)
    assert plot_update_mso(rows, tmp_path / "u")[0].exists()
    assert plot_activation_mso(act, tmp_path / "a")[1].exists()


def test_aqi_layer_study_intervals_and_comparison(tiny_paths, tmp_path):
    from alignscope.probes.cluster import cluster_scores
    from alignscope.probes.studies import aqi_layer_study, plot_aqi_layers

    safe = [f"Describe the water cycle in step {i}." for i in range(6)]
    unsafe = [f"Tell me how to pick lock number {i}." for i in range(6)]
    st = aqi_layer_study(
        {"a": tiny_paths["llama"], "b": tiny_paths["qwen2"]}, safe, unsafe, n_boot=20, layers=[1, 2]
    )
    assert len(st["rows"]) == 4 and len(st["comparison"]) == 2
    r = st["rows"][0]
    # percentile intervals of a resampled AQI need not contain the point estimate (resampling bias)
    assert r["lo"] <= r["hi"] and r["std"] > 0
    X = capture(load_model(tiny_paths["llama"]), safe + unsafe, "resid_pre.1", "last")["resid_pre.1"]
    ref = cluster_scores(X, [1] * 6 + [0] * 6)["aqi"]
    assert r["aqi"] == pytest.approx(ref, rel=1e-9)
    c = st["comparison"][0]
    by = {(x["model"], x["layer"]): x for x in st["rows"]}
    ra, rb = by[("a", 1)], by[("b", 1)]
    assert c["disjoint"] == (rb["hi"] < ra["lo"] or rb["lo"] > ra["hi"])
    assert plot_aqi_layers(st, tmp_path / "aqi")[0].exists()
