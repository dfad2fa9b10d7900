"""Direction extraction from activation tensors (tensor level; no model, no hooks).

Maps to ``papers.md``:

* :func:`diff_of_means` -- R.a (Arditi et al.): ``mu_harm - mu_harmless`` per position, float64 accumulation,
  not normalised.
* :func:`pca_direction` -- 5.a (Wolf et al. / RepE ``PCARepReader``): paired differences in random pair
  order, recentred, first principal component, sign from the labels.
* :func:`logistic_probe` -- a scikit-learn logistic-regression probe; its weight vector is the direction.
* :func:`mean_representation` -- 1.a (restoration target ``t_harm``): mean representation of a prompt set.
* :func:`auroc`, :func:`auroc_ci` -- ranking quality of direction scores with a seeded bootstrap interval.
* :func:`register_extractor`, :func:`get_extractor`, :func:`extract_direction` -- a string-keyed registry
  returning :class:`~alignscope.probes.direction.Direction` records with provenance (seeds included).

Activations are ``[N, d]`` (one position per prompt) or ``[N, P, d]`` (``P`` positions, e.g. the
post-instruction tokens); capturing them with the right padding/positions is ``alignscope.hooks``' job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from alignscope.hooks.errors import AlignscopeError, NumericsError, PromptError, SiteError
from alignscope.probes.direction import Direction

__all__ = [
    "diff_of_means",
    "pca_direction",
    "LinearProbe",
    "logistic_probe",
    "mean_representation",
    "auroc",
    "auroc_ci",
    "register_extractor",
    "get_extractor",
    "list_extractors",
    "extract_direction",
]

Extractor = Callable[..., tuple[torch.Tensor, dict[str, Any]]]
_EXTRACTORS: dict[str, Extractor] = {}


# ----------------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------------


def _acts(X: Any, name: str, ndims: tuple[int, ...] = (2, 3)) -> torch.Tensor:
    t = X.detach() if isinstance(X, torch.Tensor) else torch.as_tensor(np.asarray(X))
    if t.device.type != "cpu":
        t = t.cpu()
    if not t.is_floating_point():
        t = t.to(torch.float64)
    if t.ndim not in ndims:
        raise SiteError(
            f"{name} must have {' or '.join(f'{n}' for n in ndims)} dims ([N, d] or [N, P, d]); "
            f"got shape {tuple(t.shape)}.",
            "Pass activations of one site: [n_prompts, d_model] or [n_prompts, n_positions, d_model].",
        )
    if t.shape[0] == 0:
        raise PromptError(f"{name} is empty (no prompts).", "Pass at least one prompt's activations.")
    if not bool(torch.isfinite(t).all()):
        raise NumericsError(
            f"{name} contains NaN or infinite values.",
            "Capture in float32 (not float16), or drop the prompts whose activations overflow.",
        )
    return t


def _same_width(a: torch.Tensor, b: torch.Tensor, na: str, nb: str) -> None:
    if a.shape[1:] != b.shape[1:]:
        raise SiteError(
            f"{na} has per-prompt shape {tuple(a.shape[1:])}, {nb} has {tuple(b.shape[1:])}.",
            "Capture both prompt sets at the same site and positions of the same model.",
        )


def _labels(y: Any, n: int) -> np.ndarray:
    y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise PromptError(
            f"labels must be 1-D with {n} entries; got shape {y.shape}.", "Pass one label per row."
        )
    vals = set(np.unique(y).tolist())
    if not vals <= {0, 1}:
        raise PromptError(
            f"labels must be binary 0/1; got values {sorted(vals)[:5]}.", "Map classes to 0 and 1."
        )
    if len(vals) < 2:
        raise PromptError(
            f"labels contain a single class ({sorted(vals)}).", "Include both positive and negative examples."
        )
    return y.astype(np.int64)


# ----------------------------------------------------------------------------------------------------------
# directions
# ----------------------------------------------------------------------------------------------------------


def diff_of_means(harm: Any, harmless: Any, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Difference of means ``mean(harm) - mean(harmless)`` over prompts (papers.md R.a).

    Accumulated in float64 (as the reference code), returned in ``dtype``; not normalised.

    Args:
        harm: ``[N, d]`` or ``[N, P, d]`` activations of the first set.
        harmless: ``[M, d]`` or ``[M, P, d]`` of the second set (same trailing shape).
        dtype: output dtype.

    Returns:
        ``[d]`` or ``[P, d]``.
    """
    a, b = _acts(harm, "harm"), _acts(harmless, "harmless")
    _same_width(a, b, "harm", "harmless")
    return (a.to(torch.float64).mean(0) - b.to(torch.float64).mean(0)).to(dtype)


def mean_representation(X: Any, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Mean representation over prompts (papers.md 1.a restoration target ``t_harm``), float64 accumulation.

    Args:
        X: ``[N, d]`` or ``[N, P, d]`` (e.g. last-token reps of the aligned model on harmful prompts).
        dtype: output dtype.

    Returns:
        ``[d]`` or ``[P, d]``.
    """
    return _acts(X, "X").to(torch.float64).mean(0).to(dtype)


def pca_direction(
    pos: Any,
    neg: Any,
    *,
    seed: int = 0,
    order: str = "random",
) -> tuple[torch.Tensor, dict[str, Any]]:
    """First principal component of recentred paired differences, signed by the labels (papers.md 5.a).

    Pair ``i`` is ``(pos[i], neg[i])``. As in RepE (pairs stored in random order, difference = first minus
    second), each difference is ``s_i (pos_i - neg_i)`` with ``s_i = +-1`` drawn with ``seed``
    (``order="random"``), alternating (``"alternate"``) or always ``+1`` (``"fixed"``: the mean difference is
    then removed by the recentring, so PC1 is the direction of largest *spread* of differences -- not the
    paper's behaviour, offered for analysis). The differences are recentred, PC1 is taken by SVD in float64,
    and the sign is chosen so that ``pos`` projects above ``neg`` in more pairs than the reverse (RepE's rule).

    Args:
        pos: ``[N, d]`` activations of the concept (e.g. harmful) item of each pair.
        neg: ``[N, d]`` activations of the paired contrast item.
        seed: seed of the pair-order draw (recorded).
        order: ``"random"`` (default, as the paper), ``"alternate"`` or ``"fixed"``.

    Returns:
        ``(unit float32 [d] vector, info)``; info has ``seed``, ``order``, ``explained_variance_ratio``,
        ``sign_agreement`` (fraction of pairs with ``pos`` above ``neg``), ``n_pairs``.
    """
    a, b = _acts(pos, "pos", (2,)), _acts(neg, "neg", (2,))
    if a.shape != b.shape:
        raise PromptError(
            f"pos and neg must be paired row by row; got shapes {tuple(a.shape)} and {tuple(b.shape)}.",
            "Pass the same number of prompts on each side, pair i = (pos[i], neg[i]).",
        )
    n = a.shape[0]
    if n < 2:
        raise PromptError("PCA of paired differences needs at least 2 pairs.", "Pass more prompt pairs.")
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    if order == "random":
        g = torch.Generator().manual_seed(int(seed))
        s = torch.randint(0, 2, (n,), generator=g).to(torch.float64) * 2 - 1
    elif order == "alternate":
        s = torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in range(n)], dtype=torch.float64)
    elif order == "fixed":
        s = torch.ones(n, dtype=torch.float64)
    else:
        raise AlignscopeError(f"unknown order {order!r}.", "Use 'random', 'alternate' or 'fixed'.")
    D = s[:, None] * (a64 - b64)
    D = D - D.mean(0)
    _, S, Vh = torch.linalg.svd(D, full_matrices=False)
    if float(S[0]) == 0.0:
        raise NumericsError(
            "all recentred pair differences are zero: no principal direction.",
            "Check that pos and neg differ (and are not identical up to a constant shift with order='fixed').",
        )
    v = Vh[0]
    proj_a, proj_b = a64 @ v, b64 @ v
    above = float((proj_a > proj_b).double().mean())
    below = float((proj_a < proj_b).double().mean())
    if below > above:
        v = -v
        above, below = below, above
    info = {
        "seed": int(seed),
        "order": order,
        "explained_variance_ratio": float(S[0] ** 2 / (S**2).sum()),
        "sign_agreement": above,
        "n_pairs": n,
    }
    return v.to(torch.float32), info


@dataclass
class LinearProbe:
    """A fitted linear probe ``score(x) = x . weight + bias`` in the raw activation space.

    Attributes:
        weight: ``[d]`` float32 weight in the input space (``direction`` is its unit version).
        bias: intercept.
        auroc: AUROC of the probe's scores on the data it was fitted on (optimistic; evaluate held-out data
            with :meth:`score` + :func:`auroc`).
        accuracy: training accuracy at threshold 0.
        seed: ``random_state`` of the solver (recorded).
        params: solver settings (C, max_iter, standardize, n, converged).
    """

    weight: torch.Tensor
    bias: float
    auroc: float
    accuracy: float
    seed: int
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def direction(self) -> torch.Tensor:
        """Unit-norm weight vector (float32)."""
        w = self.weight.double()
        n = float(torch.linalg.vector_norm(w))
        if n == 0.0:
            raise NumericsError("the probe weight is zero.", "Use weaker regularisation (larger C).")
        return (w / n).float()

    def score(self, X: Any) -> torch.Tensor:
        """Decision values ``X @ weight + bias`` (float64) for ``[N, d]`` activations."""
        t = _acts(X, "X", (2,))
        return t.to(torch.float64) @ self.weight.to(torch.float64) + self.bias


def logistic_probe(
    X: Any,
    y: Any,
    seed: int,
    *,
    C: float = 1.0,
    max_iter: int = 2000,
    standardize: bool = False,
) -> LinearProbe:
    """Fit an L2 logistic-regression probe (scikit-learn ``LogisticRegression``, lbfgs).

    Args:
        X: ``[N, d]`` activations.
        y: ``[N]`` binary labels (1 = the concept, e.g. harmful).
        seed: solver ``random_state`` (recorded; lbfgs is deterministic, kept for solver changes).
        C: inverse regularisation strength.
        max_iter: solver iterations.
        standardize: fit on z-scored features, then map weight and bias back to the raw space (better
            conditioned on activations with large offsets; regularisation then acts on z-scored weights).

    Returns:
        :class:`LinearProbe` with the weight in the raw activation space and the fitted AUROC.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    t = _acts(X, "X", (2,)).to(torch.float64).numpy()
    lab = _labels(y, t.shape[0])
    mu = t.mean(0) if standardize else np.zeros(t.shape[1])
    sd = t.std(0) if standardize else np.ones(t.shape[1])
    sd = np.where(sd > 0, sd, 1.0)
    Z = (t - mu) / sd
    clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(Z, lab)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    w = clf.coef_[0] / sd
    b = float(clf.intercept_[0] - (clf.coef_[0] * mu / sd).sum())
    scores = t @ w + b
    return LinearProbe(
        weight=torch.as_tensor(w, dtype=torch.float32),
        bias=b,
        auroc=auroc(scores, lab),
        accuracy=float(((scores > 0).astype(np.int64) == lab).mean()),
        seed=int(seed),
        params={
            "C": C,
            "max_iter": max_iter,
            "standardize": standardize,
            "n": int(t.shape[0]),
            "converged": converged,
        },
    )


# ----------------------------------------------------------------------------------------------------------
# AUROC
# ----------------------------------------------------------------------------------------------------------


def _scores(scores: Any) -> np.ndarray:
    s = (
        scores.detach().cpu().double().numpy()
        if isinstance(scores, torch.Tensor)
        else np.asarray(scores, float)
    )
    if s.ndim != 1:
        raise PromptError(f"scores must be 1-D; got shape {s.shape}.", "Pass one score per prompt.")
    if not np.isfinite(s).all():
        raise NumericsError(
            "scores contain NaN or inf.", "Check the activations the scores were computed from."
        )
    return s


def auroc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); equals sklearn's.

    Args:
        scores: ``[N]`` scores, higher = more likely label 1.
        labels: ``[N]`` binary labels, both classes present.
    """
    from scipy.stats import rankdata

    s = _scores(scores)
    lab = _labels(labels, s.shape[0])
    r = rankdata(s)
    n1 = int(lab.sum())
    n0 = lab.shape[0] - n1
    return float((r[lab == 1].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def auroc_ci(
    scores: Any,
    labels: Any,
    *,
    seed: int,
    n_boot: int = 1000,
    ci: float = 0.95,
) -> dict[str, Any]:
    """AUROC with a stratified percentile-bootstrap interval (each class resampled to its own size).

    Returns:
        dict with ``auroc``, ``lo``, ``hi``, ``ci``, ``n_boot``, ``seed``.
    """
    if not 0.0 < ci < 1.0 or n_boot < 2:
        raise AlignscopeError(
            f"need 0 < ci < 1 and n_boot >= 2; got ci={ci}, n_boot={n_boot}.", "Use the defaults."
        )
    from scipy.stats import rankdata

    s = _scores(scores)
    lab = _labels(labels, s.shape[0])
    pos, neg = s[lab == 1], s[lab == 0]
    rng = np.random.default_rng(seed)
    n1, n0 = len(pos), len(neg)
    P = pos[rng.integers(0, n1, (n_boot, n1))]
    N = neg[rng.integers(0, n0, (n_boot, n0))]
    both = np.concatenate([P, N], axis=1)
    r = rankdata(both, axis=1)
    vals = (r[:, :n1].sum(1) - n1 * (n1 + 1) / 2.0) / (n1 * n0)
    a = (1.0 - ci) / 2.0
    return {
        "auroc": auroc(s, lab),
        "lo": float(np.quantile(vals, a)),
        "hi": float(np.quantile(vals, 1.0 - a)),
        "ci": ci,
        "n_boot": int(n_boot),
        "seed": int(seed),
    }


# ----------------------------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------------------------


def register_extractor(name: str) -> Callable[[Extractor], Extractor]:
    """Decorator registering ``fn(pos, neg, *, seed, **kw) -> (vector [d], info dict)`` under ``name``.

    ``pos``/``neg`` are ``[N, d]`` activations of the concept and contrast sets; ``info`` lands in the
    Direction's provenance.
    """

    def deco(fn: Extractor) -> Extractor:
        if name in _EXTRACTORS and _EXTRACTORS[name] is not fn:
            raise AlignscopeError(f"extractor {name!r} is already registered.", "Choose another name.")
        _EXTRACTORS[name] = fn
        return fn

    return deco


def get_extractor(name: str) -> Extractor:
    """The extractor registered under ``name``."""
    try:
        return _EXTRACTORS[name]
    except KeyError:
        raise AlignscopeError(
            f"unknown direction method {name!r}.",
            f"Use one of {sorted(_EXTRACTORS)} or register_extractor().",
        ) from None


def list_extractors() -> list[str]:
    """Registered extractor names."""
    return sorted(_EXTRACTORS)


def extract_direction(
    name: str,
    pos: Any,
    neg: Any,
    *,
    site: str,
    position: str | int,
    seed: int = 0,
    provenance: dict[str, Any] | None = None,
    **kw: Any,
) -> Direction:
    """Run extractor ``name`` and wrap the result in a :class:`Direction` (info + seed in provenance)."""
    vec, info = get_extractor(name)(pos, neg, seed=seed, **kw)
    prov = dict(provenance or {})
    prov.update(info)
    prov.setdefault("seed", seed)
    prov.setdefault("n_pos", int(np.shape(pos)[0]))
    if neg is not None:
        prov.setdefault("n_neg", int(np.shape(neg)[0]))
    return Direction(vector=vec, site=site, position=position, method=name, provenance=prov)


@register_extractor("diff_means")
def _x_diff_means(pos: Any, neg: Any, *, seed: int = 0) -> tuple[torch.Tensor, dict[str, Any]]:
    v = diff_of_means(_acts(pos, "pos", (2,)), _acts(neg, "neg", (2,)))
    return v, {"normalized": False, "accumulation": "float64"}


@register_extractor("pca")
def _x_pca(
    pos: Any, neg: Any, *, seed: int = 0, order: str = "random"
) -> tuple[torch.Tensor, dict[str, Any]]:
    v, info = pca_direction(pos, neg, seed=seed, order=order)
    return v, {**info, "normalized": True}


@register_extractor("logistic")
def _x_logistic(pos: Any, neg: Any, *, seed: int = 0, **kw: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    a, b = _acts(pos, "pos", (2,)), _acts(neg, "neg", (2,))
    _same_width(a, b, "pos", "neg")
    X = torch.cat([a.to(torch.float64), b.to(torch.float64)])
    y = np.r_[np.ones(a.shape[0], np.int64), np.zeros(b.shape[0], np.int64)]
    probe = logistic_probe(X, y, seed, **kw)
    info = {
        "normalized": False,
        "bias": probe.bias,
        "train_auroc": probe.auroc,
        "train_accuracy": probe.accuracy,
    }
    info.update(probe.params)
    return probe.weight, info


@register_extractor("mean")
def _x_mean(pos: Any, neg: Any = None, *, seed: int = 0) -> tuple[torch.Tensor, dict[str, Any]]:
    return mean_representation(_acts(pos, "pos", (2,))), {"normalized": False, "of": "pos"}
