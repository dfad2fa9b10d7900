"""Tensor-level direction maths: diff of means, PCA reading vector, logistic probe, AUROC, Direction I/O."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from alignscope.hooks.errors import AlignscopeError, CheckpointError, NumericsError, PromptError, SiteError
from alignscope.probes.direction import Direction
from alignscope.probes.directions import (
    auroc,
    auroc_ci,
    diff_of_means,
    extract_direction,
    get_extractor,
    list_extractors,
    logistic_probe,
    mean_representation,
    pca_direction,
    register_extractor,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score


def test_diff_of_means_hand_computed_and_shapes():
    harm = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    safe = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    torch.testing.assert_close(diff_of_means(harm, safe), torch.tensor([1.0, 2.0]))
    h3 = torch.arange(12.0).reshape(2, 3, 2)  # [N, P, d]
    s3 = torch.zeros(1, 3, 2)
    r = diff_of_means(h3, s3)
    assert r.shape == (3, 2) and r.dtype == torch.float32
    torch.testing.assert_close(r, torch.tensor([[3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]))
    with pytest.raises(SiteError):
        diff_of_means(harm, torch.zeros(2, 3))
    with pytest.raises(PromptError):
        diff_of_means(torch.zeros(0, 2), safe)
    with pytest.raises(NumericsError):
        diff_of_means(torch.tensor([[float("nan"), 0.0]]), safe)


def test_float64_accumulation():
    # float32 running sum of 2^24 + 1 + 1 + ... loses the ones; float64 keeps them
    x = torch.tensor([[2.0**24]] + [[1.0]] * 7, dtype=torch.float32)
    expected = (2.0**24 + 7.0) / 8.0
    assert float(mean_representation(x, dtype=torch.float64)[0]) == expected
    assert float(diff_of_means(x, torch.zeros(1, 1), dtype=torch.float64)[0]) == expected


def _repe_reference(pos: np.ndarray, neg: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """RepE-style: differences in the given pair order, sklearn PCA (recentres), sign from labels."""
    D = signs[:, None] * (pos - neg)
    v = PCA(n_components=1).fit(D).components_[0]
    above = np.mean(pos @ v > neg @ v)
    below = np.mean(pos @ v < neg @ v)
    return v if above >= below else -v


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(4, 30), d=st.integers(2, 12))
def test_pca_direction_matches_repe_reference(seed, n, d):
    rng = np.random.default_rng(seed)
    concept = rng.normal(size=d)
    neg = rng.normal(size=(n, d))
    pos = neg + 3.0 * concept + 0.3 * rng.normal(size=(n, d))
    v, info = pca_direction(torch.tensor(pos), torch.tensor(neg), seed=seed)
    g = torch.Generator().manual_seed(seed)
    signs = (torch.randint(0, 2, (n,), generator=g) * 2 - 1).double().numpy()
    ref = _repe_reference(pos, neg, signs)
    np.testing.assert_allclose(v.double().numpy(), ref, atol=1e-5)
    assert info["seed"] == seed and info["n_pairs"] == n
    assert float(v.double() @ torch.tensor(concept)) > 0  # pos projects above neg
    assert abs(float(torch.linalg.vector_norm(v)) - 1.0) < 1e-6


def test_pca_direction_hand_computed():
    # differences are +-(2, 0) with tiny spread along y: PC1 = x axis, oriented towards pos
    pos = torch.tensor([[2.0, 0.1], [3.0, 0.0], [2.0, -0.1], [5.0, 0.0]])
    neg = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [3.0, 0.0]])
    v, info = pca_direction(pos, neg, order="alternate")
    torch.testing.assert_close(v, torch.tensor([1.0, 0.0]), atol=1e-2, rtol=0)
    assert info["sign_agreement"] == 1.0
    v2, _ = pca_direction(neg, pos, order="alternate")  # swap roles -> flipped sign
    torch.testing.assert_close(v2, -v)
    with pytest.raises(PromptError):
        pca_direction(pos, neg[:3])
    with pytest.raises(AlignscopeError):
        pca_direction(pos, neg, order="sideways")


@settings(max_examples=40, deadline=None)
@given(
    scores=st.lists(st.integers(-3, 3), min_size=2, max_size=40),
    data=st.data(),
)
def test_auroc_equals_sklearn_with_ties(scores, data):
    labels = data.draw(st.lists(st.integers(0, 1), min_size=len(scores), max_size=len(scores)))
    if len(set(labels)) < 2:
        with pytest.raises(PromptError):
            auroc(scores, labels)
        return
    assert auroc(np.array(scores, float), labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_auroc_hand_computed_and_ci():
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert auroc([1.0, 1.0], [0, 1]) == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    s = np.r_[rng.normal(1, 1, 60), rng.normal(0, 1, 60)]
    y = np.r_[np.ones(60), np.zeros(60)].astype(int)
    a = auroc_ci(s, y, seed=3, n_boot=300)
    b = auroc_ci(s, y, seed=3, n_boot=300)
    assert a == b and a["seed"] == 3
    assert a["lo"] < a["auroc"] < a["hi"] and 0.5 < a["lo"] and a["hi"] <= 1.0
    with pytest.raises(NumericsError):
        auroc([0.0, np.nan], [0, 1])


def test_logistic_probe_matches_sklearn():
    rng = np.random.default_rng(1)
    X = np.r_[rng.normal(0.5, 1, (40, 5)), rng.normal(-0.5, 1, (40, 5))] + 10.0
    y = np.r_[np.ones(40), np.zeros(40)].astype(int)
    probe = logistic_probe(torch.tensor(X, dtype=torch.float32), y, seed=0)
    clf = LogisticRegression(C=1.0, max_iter=2000, random_state=0).fit(X.astype(np.float32).astype(float), y)
    np.testing.assert_allclose(probe.weight.numpy(), clf.coef_[0], rtol=1e-4, atol=1e-5)
    assert probe.bias == pytest.approx(clf.intercept_[0], rel=1e-4)
    assert probe.auroc == pytest.approx(roc_auc_score(y, clf.decision_function(X)), abs=1e-9)
    assert probe.seed == 0 and probe.params["converged"]
    ps = logistic_probe(X, y, seed=0, standardize=True)
    # mapped back to raw space: raw scores reproduce the z-space decision function
    mu, sd = X.mean(0), X.std(0)
    z = LogisticRegression(C=1.0, max_iter=2000, random_state=0).fit((X - mu) / sd, y)
    np.testing.assert_allclose(ps.score(X).numpy(), z.decision_function((X - mu) / sd), rtol=1e-6, atol=1e-6)
    assert abs(float(torch.linalg.vector_norm(ps.direction)) - 1) < 1e-6
    with pytest.raises(PromptError):
        logistic_probe(X, np.ones(80), seed=0)


def test_direction_unit_save_load_roundtrip(tmp_path):
    v = torch.tensor([3.0, 4.0], dtype=torch.float64)
    d = Direction(
        v, site="resid_pre.12", position=-2, method="diff_means", provenance={"seed": 7, "n": [1, 2]}
    )
    assert d.vector.dtype == torch.float32 and d.norm == pytest.approx(5.0)
    torch.testing.assert_close(d.unit(), torch.tensor([0.6, 0.8]))
    out = d.save(tmp_path / "dir")
    assert sorted(p.name for p in out.iterdir()) == ["direction.json", "direction.safetensors"]
    meta = json.loads((out / "direction.json").read_text())
    assert meta["site"] == "resid_pre.12" and meta["position"] == -2 and len(meta["sha256"]) == 64
    back = Direction.load(out)
    assert torch.equal(back.vector, d.vector)
    assert (back.site, back.position, back.method, back.provenance) == (
        d.site,
        d.position,
        d.method,
        d.provenance,
    )
    # overwrite in place, then tamper with the tensor: the sidecar hash catches it
    Direction(torch.ones(2), site="s", position="last", method="pca").save(out)
    assert Direction.load(out).position == "last"
    (out / "direction.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="hash"):
        Direction.load(out)
    with pytest.raises(CheckpointError):
        Direction.load(tmp_path / "missing")


def test_direction_validation():
    with pytest.raises(NumericsError):
        Direction(torch.zeros(3), site="s", position="last", method="m").unit()
    with pytest.raises(NumericsError):
        Direction(torch.tensor([1.0, float("inf")]), site="s", position="last", method="m")
    with pytest.raises(SiteError):
        Direction(torch.zeros(2, 3), site="s", position="last", method="m")
    with pytest.raises(CheckpointError):
        Direction(torch.ones(2), site="s", position="last", method="m", provenance={"t": object()}).save(
            "/tmp/x"
        )


def test_registry_and_extract_direction():
    assert {"diff_means", "pca", "logistic", "mean"} <= set(list_extractors())
    rng = np.random.default_rng(5)
    neg = rng.normal(size=(30, 4))
    pos = neg + np.array([2.0, 0, 0, 0])
    d = extract_direction("diff_means", pos, neg, site="resid_pre.3", position="last", seed=1)
    torch.testing.assert_close(d.vector, torch.tensor([2.0, 0, 0, 0]), atol=1e-6, rtol=0)
    assert d.provenance["seed"] == 1 and d.provenance["n_pos"] == 30 and d.method == "diff_means"
    p = extract_direction("pca", pos + 0.01 * rng.normal(size=pos.shape), neg, site="x", position=0, seed=4)
    assert p.provenance["seed"] == 4 and float(p.vector[0]) > 0.99
    lg = extract_direction("logistic", neg + [8.0, 0, 0, 0], neg, site="x", position="last", seed=2, C=10.0)
    assert lg.provenance["train_auroc"] == 1.0 and float(lg.unit()[0]) > 0.9
    m = extract_direction("mean", pos, None, site="x", position="last")
    torch.testing.assert_close(m.vector, torch.tensor(pos.mean(0), dtype=torch.float32))

    @register_extractor("test_first_row")
    def _first(pos, neg, *, seed=0):
        return torch.as_tensor(np.asarray(pos)[0]), {"note": "first"}

    assert get_extractor("test_first_row") is _first
    with pytest.raises(AlignscopeError):
        register_extractor("test_first_row")(lambda p, n, *, seed=0: None)
    with pytest.raises(AlignscopeError, match="unknown"):
        get_extractor("nope")
