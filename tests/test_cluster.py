"""Cluster indices and AQI: cross-checked against scikit-learn (CH, DB) and brute-force SciPy (Dunn, XB)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from alignscope.hooks.errors import AlignscopeError, NumericsError, PromptError
from alignscope.probes.cluster import (
    aqi_bootstrap,
    aqi_cohort,
    aqi_dbs_di,
    aqi_per_layer,
    aqi_pooled,
    aqi_xb_chi,
    calinski_harabasz,
    cluster_scores,
    davies_bouldin,
    dunn,
    dunn_parts,
    pool_layers,
    xie_beni,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score

RTOL = 1e-6


def _close(a: float, b: float, rtol: float = RTOL) -> bool:
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= rtol * max(abs(a), abs(b)) + 1e-300


def ref_dunn(X: np.ndarray, y: np.ndarray) -> float:
    D = cdist(X, X)  # direct differences, float64
    classes = np.unique(y)
    sep = min(D[np.ix_(y == a, y == b)].min() for a in classes for b in classes if a != b)
    diam = max(D[np.ix_(y == a, y == a)].max() for a in classes)
    return math.inf if diam == 0 else sep / diam


def ref_xb(X: np.ndarray, y: np.ndarray) -> float:
    classes = np.unique(y)
    mus = np.stack([X[y == c].mean(0) for c in classes])
    num = sum((cdist(X[y == c], mus[i : i + 1]) ** 2).sum() for i, c in enumerate(classes))
    C = cdist(mus, mus) ** 2
    np.fill_diagonal(C, np.inf)
    return num / (len(X) * C.min())


def make_data(
    seed: int,
    n0: int,
    n1: int,
    d: int,
    *,
    k: int = 2,
    offset: float = 0.0,
    scale: float = 1.0,
    near_dup: bool = False,
    shift: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Labelled Gaussian blobs; with ``near_dup`` some points are copied across/within classes at 1e-7 scale."""
    rng = np.random.default_rng(seed)
    sizes = [n0, n1] + [max(1, (n0 + n1) // 2) for _ in range(k - 2)]
    X = np.concatenate([rng.normal(size=(m, d)) * scale + shift * c for c, m in enumerate(sizes)])
    y = np.concatenate([np.full(m, c) for c, m in enumerate(sizes)])
    if near_dup:
        i, j = 0, n0  # a class-0 point duplicated (nearly) into class 1, and one within class 0
        X[j] = X[i] + rng.normal(size=d) * 1e-7 * scale
        if n0 > 1:
            X[1] = X[0] + rng.normal(size=d) * 1e-7 * scale
    return X + offset, y


data_params = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**31 - 1),
        "n0": st.integers(2, 40),
        "n1": st.integers(2, 40),
        "d": st.integers(1, 24),
        "k": st.integers(2, 4),
        "offset": st.sampled_from([0.0, 3.0, 1e3, -1e4]),
        "scale": st.sampled_from([1e-3, 1.0, 50.0]),
        "near_dup": st.booleans(),
        "shift": st.sampled_from([0.0, 0.5, 4.0]),
    }
)


def ref_dbs(X: np.ndarray, y: np.ndarray) -> float:
    """Exact Davies-Bouldin with direct differences (sklearn's rules for the degenerate cases)."""
    classes = np.unique(y)
    mus = np.stack([X[y == c].mean(0) for c in classes])
    s = np.array([cdist(X[y == c], mus[i : i + 1]).mean() for i, c in enumerate(classes)])
    C = cdist(mus, mus)
    if np.allclose(s, 0) or np.allclose(C, 0):
        return 0.0
    C[C == 0] = np.inf
    return float(np.mean(np.max((s[:, None] + s[None, :]) / C, axis=1)))


@settings(max_examples=60, deadline=None)
@given(p=data_params)
def test_chi_dbs_equal_sklearn(p):
    X, y = make_data(**p)
    assert _close(calinski_harabasz(X, y), calinski_harabasz_score(X, y))
    assert _close(davies_bouldin(X, y), ref_dbs(X, y))
    # sklearn's euclidean_distances uses the Gram trick (|x|^2 + |c|^2 - 2 x.c): it is itself inexact when the
    # offset dwarfs the spread, so compare with it only where it is well conditioned.
    if not p["near_dup"] and abs(p["offset"]) / p["scale"] <= 1e3:
        assert _close(davies_bouldin(X, y), davies_bouldin_score(X, y))


@settings(max_examples=60, deadline=None)
@given(p=data_params, block=st.sampled_from([5, 16, 2048]), f32=st.booleans())
def test_dunn_equals_bruteforce(p, block, f32):
    X, y = make_data(**p)
    got = dunn(X, y, block=block, screen_dtype=torch.float32 if f32 else torch.float64)
    assert _close(got, ref_dunn(X, y)), (got, ref_dunn(X, y))


@settings(max_examples=60, deadline=None)
@given(p=data_params)
def test_xb_equals_bruteforce(p):
    X, y = make_data(**p)
    assert _close(xie_beni(X, y), ref_xb(X, y))


def test_dunn_near_duplicates_with_large_offset_is_exact():
    # the plain Gram trick on uncentred data loses all digits of a 1e-9 distance at offset 1e5
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 64)) + 1e5
    y = np.r_[np.zeros(150, int), np.ones(150, int)]
    X[200] = X[3] + 1e-9
    parts = dunn_parts(X, y, block=32)
    ref = cdist(X[y == 0], X[y == 1]).min()
    assert ref > 0
    assert _close(parts["min_between"], ref, 1e-6)
    assert _close(dunn(X, y, block=32), ref_dunn(X, y))


def test_dunn_hand_computed():
    X = np.array([[0.0], [1.0], [5.0], [7.0]])
    y = np.array([0, 0, 1, 1])
    # separation 4, diameters 1 and 2
    assert dunn(X, y) == pytest.approx(2.0, rel=1e-12)
    p = dunn_parts(torch.tensor(X, dtype=torch.float32), y)
    assert p["min_between"] == pytest.approx(4.0) and p["max_diameter"] == pytest.approx(2.0)


def test_xb_and_scores_hand_computed():
    X = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0], [12.0, 0.0]])
    y = np.array([1, 1, 0, 0])
    # within: 4 * 1 = 4; centroids 1 and 11 -> 100; XB = 4 / (4 * 100)
    assert xie_beni(X, y) == pytest.approx(0.01, rel=1e-12)
    s = cluster_scores(X, y, combine="dbs_di", gamma=0.25)
    assert s["aqi"] == s["aqi_dbs_di"]
    assert s["aqi_dbs_di"] == pytest.approx(0.25 / (1 + s["davies_bouldin"]) + 0.75 * 4.0 / 5.0)
    chi = s["calinski_harabasz"]
    assert s["aqi_xb_chi"] == pytest.approx(0.25 * chi / (1 + chi) + 0.75 / 1.01)
    assert s["dunn"] == pytest.approx(4.0)  # separation 8, diameter 2
    for key in ("davies_bouldin", "dunn", "xie_beni", "calinski_harabasz", "aqi", "aqi_dbs_di", "aqi_xb_chi"):
        assert key in s


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), g=st.floats(0, 1))
def test_aqi_bounded_and_better_separation_scores_higher(seed, g):
    X, y = make_data(seed, 30, 30, 5, shift=0.2)
    X2 = X + 30.0 * y[:, None]  # pull the classes apart without changing within-class geometry
    a, b = cluster_scores(X, y, gamma=g), cluster_scores(X2, y, gamma=g)
    for s in (a, b):
        assert 0 <= s["aqi_dbs_di"] <= 1 and 0 <= s["aqi_xb_chi"] <= 1
    assert b["aqi_xb_chi"] >= a["aqi_xb_chi"] - 1e-12
    assert b["aqi_dbs_di"] >= a["aqi_dbs_di"] - 1e-12
    if 0 < g < 1:
        assert b["aqi_xb_chi"] > a["aqi_xb_chi"]


def test_combination_edge_values():
    assert aqi_dbs_di(0.0, math.inf, 0.5) == 1.0
    assert aqi_xb_chi(math.inf, 0.0, 0.5) == 0.0
    with pytest.raises(AlignscopeError):
        aqi_dbs_di(1.0, 1.0, 1.5)


def test_nan_and_single_class_errors():
    X = np.random.default_rng(0).normal(size=(10, 3))
    y = np.r_[np.zeros(5), np.ones(5)]
    Xn = X.copy()
    Xn[2, 1] = np.nan
    for fn in (dunn, xie_beni, calinski_harabasz, davies_bouldin, cluster_scores):
        with pytest.raises(NumericsError):
            fn(Xn, y)
        with pytest.raises(PromptError, match="two classes"):
            fn(X, np.zeros(10))
    Xi = X.copy()
    Xi[0, 0] = np.inf
    with pytest.raises(NumericsError, match="Fix:"):
        dunn(Xi, y)
    with pytest.raises(PromptError):
        dunn(X, y[:-1])


def test_cohort_normalisation_matches_formula():
    scores = {
        "a": {"calinski_harabasz": 10.0, "xie_beni": 0.5},
        "b": {"calinski_harabasz": 30.0, "xie_beni": 0.1},
        "c": {"calinski_harabasz": 20.0, "xie_beni": 2.0},
    }
    got = aqi_cohort(scores, gamma=0.5)
    xb = np.array([0.5, 0.1, 2.0])
    z = (xb - 0.5) / (np.percentile(xb, 75) - np.percentile(xb, 25) + 1e-9)
    xbn = np.clip(np.maximum(10, 100 * (1 - 1 / (1 + np.exp(-z)))), 0, 100)
    chin = np.array([0.0, 100.0, 50.0])
    for i, k in enumerate("abc"):
        assert got[k] == pytest.approx(0.5 * chin[i] + 0.5 * xbn[i])
    flat = aqi_cohort({"x": {"calinski_harabasz": 3.0, "xie_beni": 1.0}}, gamma=1.0)
    assert flat["x"] == pytest.approx(50.0)


def test_per_layer_and_pooled():
    X, y = make_data(1, 20, 20, 6, shift=2.0)
    rng = np.random.default_rng(2)
    acts = {"L0": X, "L1": X + rng.normal(size=X.shape) * 3.0, "L2": torch.tensor(X * 2.0)}
    per = aqi_per_layer(acts, y)
    assert set(per) == {"L0", "L1", "L2"}
    assert per["L0"]["aqi"] == pytest.approx(cluster_scores(X, y)["aqi"])
    coh = aqi_per_layer(acts, y, norm="cohort")
    assert coh["L0"]["norm"] == "cohort" and 0 <= coh["L1"]["aqi"] <= 100
    with pytest.raises(AlignscopeError):
        aqi_per_layer(acts, y, combine="dbs_di", norm="cohort")
    P = pool_layers(acts, {"L0": 1.0, "L2": 1.0})
    np.testing.assert_allclose(P.numpy(), 1.5 * X, rtol=1e-12)
    pooled = aqi_pooled(acts, y, per_layer=per)
    assert pooled["argmax"] in acts and pooled["max"] >= pooled["mean"]
    assert pooled["weights"]["L1"] == pytest.approx(1 / 3)


def test_bootstrap_seeded_and_covers_point():
    X, y = make_data(3, 25, 25, 4, shift=1.5)
    a = aqi_bootstrap(X, y, seed=7, n_boot=30)
    b = aqi_bootstrap(X, y, seed=7, n_boot=30)
    c = aqi_bootstrap(X, y, seed=8, n_boot=30)
    assert a["replicates"] == b["replicates"] and a["seed"] == 7
    assert a["replicates"] != c["replicates"]
    assert a["lo"] <= a["hi"] and a["lo"] <= a["aqi"] + 0.2 and a["hi"] >= a["aqi"] - 0.2
    assert len(a["replicates"]) == 30


def test_reduce_pca_and_tsne_seed():
    X, y = make_data(4, 15, 15, 8, shift=2.0)
    s = cluster_scores(X, y, reduce="pca:8")
    full = cluster_scores(X, y)
    # PCA to full rank is a rotation: all indices are invariant
    for k in ("davies_bouldin", "dunn", "xie_beni", "calinski_harabasz"):
        assert _close(s[k], full[k], 1e-8)
    with pytest.raises(AlignscopeError, match="seed"):
        cluster_scores(X, y, reduce="tsne:2")
