"""Safety subspaces: energy bases, mode subspace overlap (MSO), projections of fine-tuning updates.

Maps to ``papers.md`` section 2 ("Safety Subspaces are Not (Linearly) Distinct", Ponkshe et al.):

* :func:`energy_basis` -- the ``left_basis`` of 2.a Exp 3 (smallest ``k`` with ``cumsum(S^2) >= e sum S^2``).
* :func:`mso`, :func:`mso_report` -- ``||Q_1^T Q_2||_F^2 / min(k_1, k_2)`` and the baseline ``max(k_1, k_2) / d``.
* :func:`weight_deltas`, :func:`reshape2d`, :func:`update_mso` -- Exp 3, per-tensor granularity.
* :func:`project_update`, :func:`project_updates`, :func:`apply_update` -- Exp 2 (``same`` / ``orth`` /
  ``opp``) with the global diagnostics; ``cosine_task_align`` uses the corrected denominator
  ``sqrt(sum ||U||^2) sqrt(sum ||V||^2)`` (the authors' code used ``sqrt(sum <U, V>)``).
* :func:`activation_mso`, :func:`activation_mso_per_layer`, :func:`paper_layer_window` -- Exp 4.

Activation matrices are ``[n_prompts, d]`` **last-token** residuals of one layer. Capturing them is the
caller's job (``alignscope.hooks``) and must index the last *non-pad* token (or use left padding): the
authors' ``h[:, -1, :]`` reads pad positions for right-padded batches (papers.md 2.e).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from alignscope.hooks.errors import AlignscopeError, CheckpointError, NumericsError, PromptError

__all__ = [
    "energy_basis",
    "energy_rank",
    "mso",
    "mso_report",
    "reshape2d",
    "weight_deltas",
    "update_mso",
    "top_left_singular",
    "project_update",
    "project_updates",
    "apply_update",
    "activation_mso",
    "activation_mso_per_layer",
    "paper_layer_window",
]

FULL_SVD_MAX_DIM = 10_000  # paper: full SVD when max(m, n) <= 10000, else svd_lowrank
_METHODS = ("same", "orth", "opp")


def _finite(M: torch.Tensor, name: str) -> None:
    if not bool(torch.isfinite(M).all()):
        raise NumericsError(
            f"{name} contains NaN or infinite values.",
            "Check the checkpoints / activations (load in float32, not float16) before computing subspaces.",
        )


def _check_frac(energy_frac: float) -> float:
    e = float(energy_frac)
    if not 0.0 < e <= 1.0:
        raise AlignscopeError(f"energy_frac must be in (0, 1]; got {energy_frac}.", "Use e.g. 0.5 or 0.9.")
    return e


def energy_rank(S: torch.Tensor, energy_frac: float) -> int:
    """Smallest ``k`` with ``sum_{i<k} S_i^2 >= energy_frac * sum S^2`` (float64 cumulative sum).

    Args:
        S: singular values, descending.
        energy_frac: fraction of spectral energy to keep, in ``(0, 1]``.

    Returns:
        ``k`` in ``[1, len(S)]``.
    """
    e = _check_frac(energy_frac)
    s2 = S.to(torch.float64) ** 2
    c = torch.cumsum(s2, 0)
    k = int(torch.searchsorted(c, torch.tensor([e * float(c[-1])], dtype=torch.float64))[0]) + 1
    return max(1, min(k, S.numel()))


def _left_svd(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact thin SVD ``(U, S)``. Tall matrices are decomposed through ``M.T`` (same factors, and LAPACK's
    tall path is far slower for thin matrices on multi-threaded CPU builds)."""
    if M.shape[0] > M.shape[1]:
        _, S, Vh = torch.linalg.svd(M.T, full_matrices=False)
        return Vh.T, S
    U, S, _ = torch.linalg.svd(M, full_matrices=False)
    return U, S


def energy_basis(
    M: torch.Tensor,
    energy_frac: float,
    *,
    method: str = "auto",
    seed: int | None = None,
) -> tuple[torch.Tensor, int]:
    """Orthonormal basis of the left singular subspace holding ``energy_frac`` of ``M``'s energy.

    papers.md 2.a Exp 3 ``left_basis``: exact full SVD (in ``M``'s dtype, float32 or float64) when
    ``max(m, n) <= 10000`` (``"auto"``) or ``method="full"``; otherwise ``torch.svd_lowrank(q=int(0.25 min(m, n)), niter=2)`` as in the authors'
    code, which is randomised: then ``seed`` is required and the energy fraction is relative to the
    captured energy (the top ``q`` values), an approximation the paper makes too.

    Args:
        M: ``[rows, cols]`` matrix; its column space (in ``R^rows``) is described.
        energy_frac: fraction in ``(0, 1]``.
        method: ``"auto"``, ``"full"`` or ``"lowrank"``.
        seed: seed for ``"lowrank"`` (recorded by :func:`mso_report`).

    Returns:
        ``(Q, k)`` with ``Q`` of shape ``[rows, k]``, orthonormal columns.

    Raises:
        NumericsError: non-finite entries, or an all-zero matrix (no subspace to describe).
    """
    if M.ndim != 2:
        raise AlignscopeError(
            f"energy_basis needs a 2-D matrix; got shape {tuple(M.shape)}.", "Use reshape2d(M)."
        )
    M = M.detach()
    if not M.is_floating_point() or M.dtype in (torch.float16, torch.bfloat16):
        M = M.float()
    _finite(M, "matrix")
    if not bool((M != 0).any()):
        raise NumericsError(
            "matrix is all zeros: it spans no subspace.", "Skip unchanged tensors (update_mso does this)."
        )
    m, n = M.shape
    if method not in ("auto", "full", "lowrank"):
        raise AlignscopeError(f"unknown method {method!r}.", "Use 'auto', 'full' or 'lowrank'.")
    use_full = method == "full" or (method == "auto" and max(m, n) <= FULL_SVD_MAX_DIM)
    if use_full:
        U, S = _left_svd(M)
    else:
        if seed is None:
            raise AlignscopeError(
                f"matrix {m}x{n} exceeds {FULL_SVD_MAX_DIM}: the randomised svd_lowrank needs a seed.",
                "Pass seed=0 (or method='full' to pay for the exact SVD).",
            )
        q = max(1, int(0.25 * min(m, n)))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            U, S, _ = torch.svd_lowrank(M, q=q, niter=2)
    k = energy_rank(S, energy_frac)
    return U[:, :k], k


def mso_report(
    A: torch.Tensor,
    B: torch.Tensor,
    energy_frac: float,
    *,
    method: str = "auto",
    seed: int | None = None,
) -> dict[str, Any]:
    """Mode subspace overlap of the column spaces of ``A`` and ``B`` with details.

    ``MSO = ||Q_A^T Q_B||_F^2 / min(k_A, k_B)`` in ``[0, 1]``; 1 when the smaller subspace lies inside the
    larger, 0 when they are orthogonal. Random baseline ``max(k_A, k_B) / d``: the expectation of MSO for
    independent uniformly random subspaces of those dimensions (``E||Q_A^T Q_B||_F^2 = k_A k_B / d``).

    Returns:
        dict with ``mso``, ``random_baseline``, ``k_a``, ``k_b``, ``d``, ``energy_frac``, ``method``, ``seed``.
    """
    if A.ndim != 2 or B.ndim != 2 or A.shape[0] != B.shape[0]:
        raise AlignscopeError(
            f"A and B must be 2-D with the same number of rows; got {tuple(A.shape)} and {tuple(B.shape)}.",
            "Pass [d, *] matrices (for activations use activation_mso, which transposes [n, d]).",
        )
    Qa, ka = energy_basis(A, energy_frac, method=method, seed=seed)
    Qb, kb = energy_basis(B, energy_frac, method=method, seed=seed)
    ov = float((Qa.to(torch.float64).T @ Qb.to(torch.float64)).pow(2).sum()) / min(ka, kb)
    d = A.shape[0]
    return {
        "mso": ov,
        "random_baseline": max(ka, kb) / d,
        "k_a": ka,
        "k_b": kb,
        "d": d,
        "energy_frac": float(energy_frac),
        "method": method,
        "seed": seed,
    }


def mso(
    A: torch.Tensor, B: torch.Tensor, energy_frac: float, *, method: str = "auto", seed: int | None = None
) -> tuple[float, float]:
    """``(MSO, random_baseline)`` of the column spaces of ``A`` and ``B`` (see :func:`mso_report`)."""
    r = mso_report(A, B, energy_frac, method=method, seed=seed)
    return r["mso"], r["random_baseline"]


# ----------------------------------------------------------------------------------------------------------
# weight-space
# ----------------------------------------------------------------------------------------------------------


def reshape2d(t: torch.Tensor) -> torch.Tensor:
    """Matrix view used for weight deltas: 1-D ``(n,) -> (n, 1)``; ``>= 3``-D ``(out, ...) -> (out, -1)``."""
    if t.ndim == 0:
        return t.reshape(1, 1)
    if t.ndim == 1:
        return t.reshape(-1, 1)
    if t.ndim == 2:
        return t
    return t.reshape(t.shape[0], -1)


def weight_deltas(
    sd_a: Mapping[str, torch.Tensor],
    sd_b: Mapping[str, torch.Tensor],
    *,
    keys: Iterable[str] | None = None,
    strict: bool = True,
) -> dict[str, torch.Tensor]:
    """Per-tensor update ``sd_b - sd_a`` in float32 for every floating-point tensor.

    E.g. ``V = weight_deltas(base, aligned)`` (alignment update), ``U = weight_deltas(aligned, finetuned)``.

    Args:
        sd_a: state dict of the starting checkpoint.
        sd_b: state dict of the end checkpoint.
        keys: restrict to these names.
        strict: raise if the floating-point tensor names differ (else use the intersection).

    Raises:
        CheckpointError: missing names (``strict``) or shape mismatches.
    """

    def _float_names(sd: Mapping[str, Any]) -> set[str]:
        return {k for k, v in sd.items() if torch.is_tensor(v) and v.is_floating_point()}

    fa, fb = _float_names(sd_a), _float_names(sd_b)
    if keys is not None:
        wanted = list(keys)
        fa, fb = fa & set(wanted), fb & set(wanted)
        names = [k for k in wanted if k in fa]
    else:
        names = [k for k in sd_a if k in fa]
    if strict:
        if fa != fb:
            miss = sorted(fa ^ fb)[:5]
            raise CheckpointError(
                f"the two checkpoints have different floating-point tensors (e.g. {miss}).",
                "Compare checkpoints of the same architecture, or pass strict=False to use the common tensors.",
            )
    out: dict[str, torch.Tensor] = {}
    for k in names:
        if k not in sd_b:
            continue
        a, b = sd_a[k], sd_b[k]
        if a.shape != b.shape:
            raise CheckpointError(
                f"tensor {k!r} has shape {tuple(a.shape)} in the first checkpoint, {tuple(b.shape)} in the second.",
                "Compare checkpoints of the same architecture (same vocab size: resize embeddings first).",
            )
        out[k] = b.detach().float() - a.detach().float()
    return out


def update_mso(
    deltas_1: Mapping[str, torch.Tensor],
    deltas_2: Mapping[str, torch.Tensor],
    energy_frac: float,
    *,
    method: str = "auto",
    seed: int | None = 0,
) -> dict[str, Any]:
    """Per-tensor MSO between two update sets (papers.md 2.a Exp 3, ``granularity='tensor'``).

    Each delta is reshaped by :func:`reshape2d`; tensors where either update is all-zero are listed in
    ``skipped`` (no subspace). Layer granularity is not offered (the authors' regex was broken, 2.e).
    ``seed`` (default 0) drives the randomised SVD used for matrices with a side over 10,000 (e.g.
    embeddings) and is recorded in every per-tensor report.

    Returns:
        ``{"per_tensor": {name: mso_report}, "skipped": [names], "mean_mso": float,
        "mean_random_baseline": float, "energy_frac": e}``.
    """
    common = [k for k in deltas_1 if k in deltas_2]
    per: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    for k in common:
        a, b = reshape2d(deltas_1[k]), reshape2d(deltas_2[k])
        if a.shape != b.shape:
            raise CheckpointError(
                f"update {k!r} has shapes {tuple(a.shape)} vs {tuple(b.shape)}.",
                "Both update sets must come from the same architecture.",
            )
        if not bool((a != 0).any()) or not bool((b != 0).any()):
            skipped.append(k)
            continue
        per[k] = mso_report(a, b, energy_frac, method=method, seed=seed)
    vals = [r["mso"] for r in per.values()]
    base = [r["random_baseline"] for r in per.values()]
    return {
        "per_tensor": per,
        "skipped": skipped,
        "mean_mso": float(sum(vals) / len(vals)) if vals else math.nan,
        "mean_random_baseline": float(sum(base) / len(base)) if base else math.nan,
        "energy_frac": float(energy_frac),
    }


def top_left_singular(
    V: torch.Tensor, k: int, *, method: str = "auto", seed: int | None = None
) -> torch.Tensor:
    """Top-``k`` left singular vectors of ``V`` (``[m, k]``).

    ``"auto"``: exact ``torch.linalg.svd`` when ``max(m, n) <= 10000``, else ``torch.svd_lowrank(q=k,
    niter=2)`` as the authors (needs ``seed``). The exact SVD is a deviation from the authors, who always
    used ``svd_lowrank`` first; it removes the randomness at a cost in time.
    """
    m, n = V.shape
    use_full = method == "full" or (method == "auto" and max(m, n) <= FULL_SVD_MAX_DIM)
    if use_full:
        return _left_svd(V)[0][:, :k]
    if seed is None:
        raise AlignscopeError(
            f"tensor {m}x{n}: the randomised svd_lowrank needs a seed.", "Pass seed=0 or method='full'."
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        U, _, _ = torch.svd_lowrank(V, q=k, niter=2)
    return U[:, :k]


def project_update(
    V: torch.Tensor,
    U: torch.Tensor,
    frac: float,
    method: str = "same",
    *,
    svd: str = "auto",
    seed: int | None = None,
) -> torch.Tensor:
    """Component of the task update ``U`` to apply, given the alignment update ``V`` (one tensor).

    papers.md 2.a Exp 2: for a 2-D ``V`` and ``0 < frac < 1``, ``k = max(1, round(frac min(m, n)))``,
    ``L`` = top-``k`` left singular vectors of ``V``, ``U_par = L (L^T U)`` (one-sided: column space only).
    Otherwise (1-D tensors, or ``frac`` outside ``(0, 1)``) the scalar projection
    ``U_par = (<U, V>_F / <V, V>_F) V`` (``0`` if ``V = 0``).

    Args:
        V: alignment update ``W_aligned - W_base``.
        U: task update ``W_finetuned - W_aligned`` (same shape).
        frac: fraction of ``min(m, n)`` singular directions kept.
        method: ``"same"`` -> ``U_par``; ``"orth"`` -> ``U - U_par``; ``"opp"`` -> ``-U_par``. The new weight is
            ``W_aligned + result`` (:func:`apply_update`).
        svd: ``"auto"`` | ``"full"`` | ``"lowrank"`` (see :func:`top_left_singular`).
        seed: seed for ``"lowrank"``.

    Returns:
        float32 tensor shaped like ``U``.
    """
    if method not in _METHODS:
        raise AlignscopeError(f"unknown projection method {method!r}.", f"Use one of {_METHODS}.")
    if V.shape != U.shape:
        raise CheckpointError(
            f"alignment update {tuple(V.shape)} and task update {tuple(U.shape)} differ in shape.",
            "Both updates must come from checkpoints of the same architecture.",
        )
    V32, U32 = V.detach().float(), U.detach().float()
    _finite(V32, "alignment update V")
    _finite(U32, "task update U")
    if V32.ndim == 2 and 0.0 < frac < 1.0 and bool((V32 != 0).any()):
        m, n = V32.shape
        k = max(1, round(frac * min(m, n)))
        L = top_left_singular(V32, k, method=svd, seed=seed)
        U_par = L @ (L.T @ U32)
    else:
        vv = float((V32.double() ** 2).sum())
        U_par = torch.zeros_like(U32) if vv == 0.0 else V32 * float((U32.double() * V32.double()).sum() / vv)
    if method == "same":
        return U_par
    if method == "opp":
        return -U_par
    return U32 - U_par


def project_updates(
    V: Mapping[str, torch.Tensor],
    U: Mapping[str, torch.Tensor],
    frac: float,
    method: str = "same",
    *,
    svd: str = "auto",
    seed: int | None = 0,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """:func:`project_update` for every tensor of ``U``, plus the global diagnostics (float64 sums).

    Diagnostics (``P`` = the returned component, sums over all tensors)::

        energy_kept        = sum ||P||^2 / sum ||U||^2
        cosine_task_proj   = sum <U, P> / (sqrt(sum ||U||^2) sqrt(sum ||P||^2))
        cosine_task_align  = sum <U, V> / (sqrt(sum ||U||^2) sqrt(sum ||V||^2))    # corrected denominator

    ``seed`` (default 0) drives the randomised SVD for tensors with a side over 10,000 (``svd="auto"``).

    Returns:
        ``(P, diagnostics)``; diagnostics also record ``frac``, ``method``, ``svd``, ``seed``, ``n_tensors``.

    Raises:
        CheckpointError: a tensor of ``U`` has no counterpart in ``V``.
    """
    missing = [k for k in U if k not in V]
    if missing:
        raise CheckpointError(
            f"{len(missing)} task-update tensors have no alignment update (e.g. {missing[:3]}).",
            "Build V and U from the same architecture (weight_deltas(base, aligned), weight_deltas(aligned, ft)).",
        )
    P: dict[str, torch.Tensor] = {}
    uu = pp = up = uv = vv = 0.0
    for k, u in U.items():
        p = project_update(V[k], u, frac, method, svd=svd, seed=seed)
        P[k] = p
        u64, p64, v64 = u.detach().double(), p.double(), V[k].detach().double()
        uu += float((u64 * u64).sum())
        pp += float((p64 * p64).sum())
        up += float((u64 * p64).sum())
        uv += float((u64 * v64).sum())
        vv += float((v64 * v64).sum())

    def _safe(num: float, den: float) -> float:
        return num / den if den > 0 else math.nan

    diag = {
        "energy_kept": _safe(pp, uu),
        "cosine_task_proj": _safe(up, math.sqrt(uu) * math.sqrt(pp)),
        "cosine_task_align": _safe(uv, math.sqrt(uu) * math.sqrt(vv)),
        "frac": float(frac),
        "method": method,
        "svd": svd,
        "seed": seed,
        "n_tensors": len(P),
    }
    return P, diag


def apply_update(
    sd_aligned: Mapping[str, torch.Tensor], P: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """New state dict ``W_aligned + P`` (float32 sum, cast back to each tensor's dtype; others copied).

    The authors cast every result to fp16; we keep the aligned checkpoint's dtypes.
    """
    out: dict[str, torch.Tensor] = {}
    for k, w in sd_aligned.items():
        if k in P:
            if P[k].shape != w.shape:
                raise CheckpointError(
                    f"update {k!r} has shape {tuple(P[k].shape)}, weight {tuple(w.shape)}.",
                    "Apply updates computed from this checkpoint's architecture.",
                )
            out[k] = (w.detach().float() + P[k].float()).to(w.dtype)
        else:
            out[k] = w
    return out


# ----------------------------------------------------------------------------------------------------------
# activation space
# ----------------------------------------------------------------------------------------------------------


def activation_mso(
    acts_a: torch.Tensor,
    acts_b: torch.Tensor,
    energy_frac: float,
    *,
    center: bool = False,
    method: str = "auto",
    seed: int | None = 0,
) -> dict[str, Any]:
    """Activation-space MSO (papers.md 2.a Exp 4) between two ``[n, d]`` activation matrices of one layer.

    The bases live in ``R^d``: ``Q_a = energy_basis(acts_a.T)``, likewise ``b``; baseline ``max(k) / d``.
    Rows must be last-token residuals captured with correct padding (last non-pad token, or left padding);
    the authors' ``h[:, -1, :]`` with right padding reads pad positions (2.e) -- capture is the caller's job.

    Args:
        acts_a: ``[n_a, d]`` (e.g. useful prompts).
        acts_b: ``[n_b, d]`` (e.g. harmful prompts).
        energy_frac: energy fraction.
        center: subtract each set's mean first (the authors' driver: ``False``).
        method: SVD method for :func:`energy_basis`.
        seed: seed for the randomised SVD.

    Returns:
        :func:`mso_report` dict plus ``center``, ``n_a``, ``n_b``.
    """
    for name, t in (("acts_a", acts_a), ("acts_b", acts_b)):
        if t.ndim != 2 or t.shape[0] == 0:
            raise PromptError(
                f"{name} must be a non-empty [n_prompts, d] matrix; got shape {tuple(t.shape)}.",
                "Select one position per prompt (the last non-pad token) before computing MSO.",
            )
    if acts_a.shape[1] != acts_b.shape[1]:
        raise PromptError(
            f"activation widths differ: {acts_a.shape[1]} vs {acts_b.shape[1]}.",
            "Capture both prompt sets at the same site of the same model.",
        )
    a, b = acts_a.detach().float(), acts_b.detach().float()
    if center:
        a = a - a.double().mean(0).float()
        b = b - b.double().mean(0).float()
    r = mso_report(a.T, b.T, energy_frac, method=method, seed=seed)
    r.update(center=center, n_a=int(acts_a.shape[0]), n_b=int(acts_b.shape[0]))
    return r


def activation_mso_per_layer(
    acts_a: Mapping[Any, torch.Tensor],
    acts_b: Mapping[Any, torch.Tensor],
    energy_fracs: float | Iterable[float],
    *,
    layers: Iterable[Any] | None = None,
    center: bool = False,
    method: str = "auto",
    seed: int | None = 0,
) -> dict[Any, dict[float, dict[str, Any]]]:
    """:func:`activation_mso` for each layer (default: every key present in both) and each energy fraction.

    Returns:
        ``{layer: {energy_frac: report}}``.
    """
    fracs = (
        [float(energy_fracs)] if isinstance(energy_fracs, int | float) else [float(e) for e in energy_fracs]
    )
    keys = list(layers) if layers is not None else [k for k in acts_a if k in acts_b]
    missing = [k for k in keys if k not in acts_a or k not in acts_b]
    if missing:
        raise PromptError(
            f"layers {missing} are missing from the activations.", "Capture every requested layer."
        )
    return {
        k: {
            e: activation_mso(acts_a[k], acts_b[k], e, center=center, method=method, seed=seed) for e in fracs
        }
        for k in keys
    }


def paper_layer_window(n_hidden_states: int) -> range:
    """Layers analysed by the authors: ``range(int(0.65 n), int(0.90 n))`` with ``n = len(hidden_states) = L + 1``."""
    return range(int(0.65 * n_hidden_states), int(0.90 * n_hidden_states))
