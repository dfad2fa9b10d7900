"""Subspace overlap (MSO), energy bases, projections of updates (papers.md section 2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from alignscope.hooks.errors import AlignscopeError, CheckpointError, NumericsError, PromptError
from alignscope.probes.subspace import (
    activation_mso,
    activation_mso_per_layer,
    apply_update,
    energy_basis,
    energy_rank,
    mso,
    mso_report,
    paper_layer_window,
    project_update,
    project_updates,
    reshape2d,
    top_left_singular,
    update_mso,
    weight_deltas,
)
from hypothesis import given, settings
from hypothesis import strategies as st


def _orth(d: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64))
    return q


def _with_spectrum(Q: torch.Tensor, s: list[float], cols: int, seed: int) -> torch.Tensor:
    """Matrix with left singular vectors Q and singular values s."""
    R = _orth(cols, len(s), seed + 1)
    return Q @ torch.diag(torch.tensor(s, dtype=torch.float64)) @ R.T


def test_energy_rank_hand_computed():
    S = torch.tensor([3.0, 2.0, 1.0])  # energies 9, 4, 1 of 14
    assert energy_rank(S, 0.5) == 1  # 7 <= 9
    assert energy_rank(S, 9 / 14) == 1
    assert energy_rank(S, 0.9) == 2  # 12.6 <= 13
    assert energy_rank(S, 0.93) == 3  # 13.02 > 13
    assert energy_rank(S, 1.0) == 3
    with pytest.raises(AlignscopeError):
        energy_rank(S, 0.0)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(4, 30), k=st.integers(1, 4), e=st.floats(0.05, 1.0))
def test_mso_with_itself_is_one(seed, d, k, e):
    k = min(k, d)
    M = _with_spectrum(_orth(d, k, seed), [float(k - i) for i in range(k)], 6, seed)
    m, base = mso(M, M, e)
    assert m == pytest.approx(1.0, abs=1e-9)
    _, kk = energy_basis(M, e)
    assert base == pytest.approx(kk / d)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(4, 30))
def test_mso_of_orthogonal_subspaces_is_zero(seed, d):
    Q = _orth(d, 4, seed)
    A = _with_spectrum(Q[:, :2], [2.0, 1.0], 5, seed)
    B = _with_spectrum(Q[:, 2:], [5.0, 1.0], 7, seed + 3)
    m, base = mso(A, B, 1.0)
    assert m == pytest.approx(0.0, abs=1e-12)
    assert base == pytest.approx(2 / d)


def test_mso_nested_and_partial_hand_computed():
    Q = _orth(10, 3, 0)
    A = _with_spectrum(Q, [1.0, 1.0, 1.0], 4, 0)  # span(q0, q1, q2), k = 3
    B = _with_spectrum(Q[:, :1], [1.0], 4, 5)  # span(q0), k = 1 (nested)
    assert mso(A, B, 1.0)[0] == pytest.approx(1.0)
    # 45-degree vector between q0 and a direction outside A: overlap cos^2 = 1/2
    Qf = _orth(10, 4, 1)
    A2 = _with_spectrum(Qf[:, :1], [1.0], 3, 2)
    v = (Qf[:, 0] + Qf[:, 3]) / math.sqrt(2)
    B2 = _with_spectrum(v[:, None], [1.0], 3, 3)
    r = mso_report(A2, B2, 1.0)
    assert r["mso"] == pytest.approx(0.5) and r["k_a"] == 1 and r["k_b"] == 1 and r["random_baseline"] == 0.1


def test_random_baseline_formula_monte_carlo():
    d, ka, kb = 60, 4, 12
    vals = []
    for s in range(150):
        A = _orth(d, ka, 2 * s)
        B = _orth(d, kb, 2 * s + 1)
        vals.append(mso(A, B, 1.0)[0])
    _, base = mso(_orth(d, ka, 0), _orth(d, kb, 1), 1.0)
    assert base == pytest.approx(kb / d)
    # E ||Qa^T Qb||^2 / min = ka kb / d / ka = kb / d; the standard error here is ~0.003
    assert np.mean(vals) == pytest.approx(kb / d, abs=0.012)


def test_energy_basis_lowrank_needs_seed_and_agrees_on_clear_spectrum():
    Q = _orth(40, 3, 7)
    M = _with_spectrum(Q, [10.0, 5.0, 2.0], 30, 7).float()
    with pytest.raises(AlignscopeError, match="seed"):
        energy_basis(M, 0.9, method="lowrank")
    Ql, kl = energy_basis(M, 0.9, method="lowrank", seed=0)
    Qf, kf = energy_basis(M, 0.9, method="full")
    assert kl == kf == 2
    assert float((Ql.double().T @ Qf.double()).pow(2).sum()) == pytest.approx(2.0, abs=1e-4)
    Ql2, _ = energy_basis(M, 0.9, method="lowrank", seed=0)
    assert torch.equal(Ql, Ql2)  # seeded -> reproducible


def test_energy_basis_errors():
    with pytest.raises(NumericsError):
        energy_basis(torch.zeros(3, 3), 0.5)
    with pytest.raises(NumericsError):
        energy_basis(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), 0.5)


def test_reshape2d_and_weight_deltas():
    assert reshape2d(torch.zeros(5)).shape == (5, 1)
    assert reshape2d(torch.zeros(4, 2, 3)).shape == (4, 6)
    a = {"w": torch.ones(2, 3, dtype=torch.float16), "b": torch.zeros(3), "idx": torch.arange(3)}
    b = {"w": torch.full((2, 3), 3.0, dtype=torch.float16), "b": torch.ones(3), "idx": torch.arange(3)}
    d = weight_deltas(a, b)
    assert set(d) == {"w", "b"} and d["w"].dtype == torch.float32
    assert torch.equal(d["w"], torch.full((2, 3), 2.0)) and torch.equal(d["b"], torch.ones(3))
    with pytest.raises(CheckpointError):
        weight_deltas(a, {"w": b["w"]})
    assert set(weight_deltas(a, {"w": b["w"]}, strict=False)) == {"w"}
    with pytest.raises(CheckpointError, match="shape"):
        weight_deltas(a, {**b, "w": torch.zeros(3, 2)})


def test_update_mso_per_tensor_and_skips_zero_updates():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(8, 5, generator=g)
    d1 = {"a": W, "b": torch.randn(6, generator=g), "frozen": torch.zeros(4, 4)}
    d2 = {"a": 2.0 * W, "b": torch.randn(6, generator=g), "frozen": torch.randn(4, 4, generator=g)}
    r = update_mso(d1, d2, 0.99)
    assert r["skipped"] == ["frozen"]
    assert r["per_tensor"]["a"]["mso"] == pytest.approx(1.0, abs=1e-5)
    # 1-D tensors are (n, 1) matrices: MSO = cos^2 between the two vectors
    v1, v2 = d1["b"].double(), d2["b"].double()
    cos2 = float((v1 @ v2) ** 2 / (v1 @ v1) / (v2 @ v2))
    assert r["per_tensor"]["b"]["mso"] == pytest.approx(cos2, abs=1e-5)
    assert r["per_tensor"]["b"]["random_baseline"] == pytest.approx(1 / 6)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    m=st.integers(2, 12),
    n=st.integers(2, 12),
    frac=st.sampled_from([0.01, 0.25, 0.5, 0.75, 0.99]),
)
def test_projection_identities_2d(seed, m, n, frac):
    g = torch.Generator().manual_seed(seed)
    V, U = torch.randn(m, n, generator=g), torch.randn(m, n, generator=g)
    same = project_update(V, U, frac, "same")
    orth = project_update(V, U, frac, "orth")
    opp = project_update(V, U, frac, "opp")
    torch.testing.assert_close(same + orth, U, rtol=0, atol=1e-5)
    torch.testing.assert_close(opp, -same)
    k = max(1, round(frac * min(m, n)))
    L = top_left_singular(V, k)
    torch.testing.assert_close(L @ (L.T @ same), same, rtol=0, atol=1e-5)  # same lies in span(L)
    assert float((L.T @ orth).abs().max()) < 1e-5  # orth is orthogonal to span(L)
    assert float((same * orth).sum()) == pytest.approx(0.0, abs=1e-4)


def test_projection_scalar_for_1d_and_full_frac():
    V = torch.tensor([1.0, 2.0, 2.0])
    U = torch.tensor([3.0, 0.0, 3.0])
    # <U,V> = 9, <V,V> = 9 -> U_par = V
    torch.testing.assert_close(project_update(V, U, 0.5, "same"), V)
    torch.testing.assert_close(project_update(V, U, 0.5, "orth"), U - V)
    M = torch.eye(2)
    torch.testing.assert_close(project_update(M, 2 * M, 1.0, "same"), 2 * M)  # frac outside (0, 1): scalar
    torch.testing.assert_close(project_update(torch.zeros(3), U, 0.5, "same"), torch.zeros(3))
    with pytest.raises(AlignscopeError):
        project_update(V, U, 0.5, "sideways")
    with pytest.raises(CheckpointError):
        project_update(V, U[:2], 0.5)


def test_project_updates_diagnostics_and_fixed_cosine():
    g = torch.Generator().manual_seed(3)
    V = {"w": torch.randn(6, 4, generator=g), "b": torch.randn(4, generator=g)}
    U = {"w": torch.randn(6, 4, generator=g), "b": torch.randn(4, generator=g)}
    P, d = project_updates(V, U, 0.5, "same")
    uu = sum(float((u.double() ** 2).sum()) for u in U.values())
    vv = sum(float((v.double() ** 2).sum()) for v in V.values())
    uv = sum(float((U[k].double() * V[k].double()).sum()) for k in U)
    pp = sum(float((p.double() ** 2).sum()) for p in P.values())
    up = sum(float((U[k].double() * P[k].double()).sum()) for k in U)
    assert d["energy_kept"] == pytest.approx(pp / uu)
    assert d["cosine_task_proj"] == pytest.approx(up / math.sqrt(uu * pp))
    assert d["cosine_task_align"] == pytest.approx(uv / math.sqrt(uu * vv))
    assert -1.0 <= d["cosine_task_align"] <= 1.0
    # energy of same + orth adds up (orthogonal decomposition)
    _, d_orth = project_updates(V, U, 0.5, "orth")
    assert d["energy_kept"] + d_orth["energy_kept"] == pytest.approx(1.0, abs=1e-5)
    # U inside the alignment subspace: everything kept, cosine 1
    _, d_self = project_updates(V, V, 0.99, "same")
    assert d_self["energy_kept"] == pytest.approx(1.0, abs=1e-5)
    assert d_self["cosine_task_align"] == pytest.approx(1.0)
    with pytest.raises(CheckpointError):
        project_updates({"w": V["w"]}, U, 0.5)


def test_apply_update_keeps_dtype():
    sd = {"w": torch.ones(2, 2, dtype=torch.bfloat16), "n": torch.arange(2)}
    out = apply_update(sd, {"w": torch.full((2, 2), 0.5)})
    assert out["w"].dtype == torch.bfloat16 and float(out["w"][0, 0]) == 1.5 and out["n"] is sd["n"]


def test_activation_mso_and_window():
    g = torch.Generator().manual_seed(1)
    Q = _orth(32, 6, 9).float()
    A = torch.randn(200, 3, generator=g) @ Q[:, :3].T  # [n, d] living in span(q0..q2)
    B = torch.randn(150, 3, generator=g) @ Q[:, 3:].T
    C = torch.randn(100, 2, generator=g) @ Q[:, :2].T
    assert activation_mso(A, B, 0.999)["mso"] == pytest.approx(0.0, abs=1e-6)
    r = activation_mso(A, C, 0.999)
    assert r["mso"] == pytest.approx(1.0, abs=1e-5) and r["d"] == 32 and r["n_a"] == 200
    per = activation_mso_per_layer({5: A, 6: A}, {5: B, 6: C}, [0.5, 0.999])
    assert set(per) == {5, 6} and set(per[6]) == {0.5, 0.999}
    assert per[6][0.999]["mso"] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(PromptError):
        activation_mso(A, B[:, :5], 0.5)
    with pytest.raises(PromptError):
        activation_mso_per_layer({5: A}, {6: B}, 0.5, layers=[5])
    assert list(paper_layer_window(17)) == list(range(11, 15))  # 16-layer model: hs has 17 entries


def test_update_mso_large_tensor_uses_seeded_lowrank():
    g = torch.Generator().manual_seed(4)
    v = torch.randn(12_000, generator=g)  # (12000, 1) after reshape2d: over the full-SVD limit
    w = torch.randn(12_000, generator=g)
    r = update_mso({"big": v}, {"big": 2.0 * v}, 0.9)
    assert r["per_tensor"]["big"]["seed"] == 0 and r["per_tensor"]["big"]["mso"] == pytest.approx(
        1.0, abs=1e-5
    )
    cos2 = float((v.double() @ w.double()) ** 2 / (v.double() @ v.double()) / (w.double() @ w.double()))
    r2 = update_mso({"big": v}, {"big": w}, 0.9, seed=3)
    assert (
        r2["per_tensor"]["big"]["mso"] == pytest.approx(cos2, abs=1e-5)
        and r2["per_tensor"]["big"]["seed"] == 3
    )
