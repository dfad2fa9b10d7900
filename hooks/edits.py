"""Runtime edit primitives: add a vector, project out a direction, patch/replace, add noise — at any site and
positions, during a forward pass or ``generate`` (KV cache), as context managers returning removable handles.

Every primitive is an :class:`EditHandle`: use it as ``with add_vector(model, "resid_pre.4", v): ...`` (removed on
exit, also on an exception) or keep it and call ``handle.remove()``. Hooks are registered with ``prepend=True``.

Positions during an edit are resolved per forward call against the attention mask (pads are never edited):
    ``"all"``: every real token, at every step of generation (prompt and generated tokens).
    ``"last"``: the last real token of each forward call: the prompt's last token in the prefill, then each newly
        generated token.
    ``"prompt"``: every real prompt token, in the prefill only (generated tokens untouched).
    ``"response"``: generated tokens only (every decode step after the prefill).
    a list of ints: indices into the prompt's real tokens, in the prefill only.

Strengths may be a float or a ``[B]`` tensor (one strength per row: a K-strength sweep in one batched pass).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .loading import ModelHandle
from .plumbing import ForwardContext, forward_context, register_site_hook, release_context
from .positions import span
from .sites import Site, parse_site

EditFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (h [B,T,d], sel [B,T] bool) -> new h


class EditHandle:
    """A live edit on a model: a context manager and a removable handle (idempotent ``remove``)."""

    def __init__(self, model: torch.nn.Module, handles: list, description: str):
        self._model = model
        self._handles = handles
        self.description = description
        self.active = True

    def remove(self) -> None:
        if not self.active:
            return
        for h in self._handles:
            h.remove()
        self._handles = []
        release_context(self._model)
        self.active = False

    def __enter__(self) -> EditHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"EditHandle({self.description}, active={self.active})"


def _unwrap(model) -> tuple[torch.nn.Module, object]:
    """Accept a ModelHandle or a bare HF model."""
    if isinstance(model, ModelHandle):
        return model.model, model.adapter
    from .adapters import adapter_for

    return model, adapter_for(model)


def _selector(
    positions: str | Sequence[int], ctx: ForwardContext
) -> Callable[[torch.Tensor], torch.Tensor | None]:
    """``h -> [B, T] bool`` of the positions to edit in this forward call (None: edit nothing)."""

    def sel(h: torch.Tensor) -> torch.Tensor | None:
        mask = ctx.mask_for(h).bool()
        if positions == "all":
            return mask
        if positions == "last":
            _, last, lengths = span(mask)
            out = torch.zeros_like(mask)
            rows = torch.arange(mask.shape[0], device=mask.device)[lengths > 0]
            out[rows, last[lengths > 0]] = True
            return out
        if positions == "response":
            return None if ctx.is_prefill(h) else mask
        if not ctx.is_prefill(h):
            return None
        if positions == "prompt":
            return mask
        first, last, lengths = span(mask)
        out = torch.zeros_like(mask)
        for k in positions:
            idx = last + 1 + k if k < 0 else first + k
            ok = (idx >= first) & (idx <= last)
            rows = torch.arange(mask.shape[0], device=mask.device)[ok]
            out[rows, idx[ok]] = True
        return out

    if not (positions in ("all", "last", "prompt", "response") or not isinstance(positions, str)):
        raise ValueError(
            f"positions must be 'all', 'last', 'prompt', 'response' or a list of ints, got {positions!r}"
        )
    return sel


def edit(
    model: ModelHandle | torch.nn.Module,
    site: str | Site,
    fn: EditFn,
    *,
    positions: str | Sequence[int] = "all",
    description: str | None = None,
) -> EditHandle:
    """The general edit: ``fn(h, sel) -> new h`` at ``site``, where ``sel`` is the ``[B, T]`` bool mask of the
    positions to edit (``fn`` should only change those). All other primitives are built on it."""
    m, adapter = _unwrap(model)
    s = parse_site(site, adapter.n_layers(m))
    ctx = forward_context(m)
    select = _selector(positions if isinstance(positions, str) else list(positions), ctx)

    def hook(h: torch.Tensor):
        sel = select(h)
        if sel is None or not bool(sel.any()):
            return None
        return fn(h, sel)

    try:
        handle = register_site_hook(m, adapter, s, hook)
    except Exception:
        release_context(m)
        raise
    return EditHandle(m, [handle], description or f"edit@{s.name}")


def _strength(alpha: float | torch.Tensor, h: torch.Tensor) -> torch.Tensor | float:
    if torch.is_tensor(alpha) and alpha.dim() > 0:
        if alpha.shape[0] != h.shape[0]:
            raise ValueError(f"per-row strengths have {alpha.shape[0]} rows but the batch has {h.shape[0]}")
        return alpha.to(h.device, h.dtype).view(-1, 1, 1)
    return float(alpha)


def add_vector(
    model: ModelHandle | torch.nn.Module,
    site: str | Site,
    vector: torch.Tensor,
    *,
    alpha: float | torch.Tensor = 1.0,
    positions: str | Sequence[int] = "all",
) -> EditHandle:
    """``h <- h + alpha * vector`` at the selected positions (activation addition; ``vector`` is used as given)."""
    vec = torch.as_tensor(vector).detach()

    def fn(h, sel):
        a = _strength(alpha, h)
        return h + a * vec.to(h.device, h.dtype) * sel.unsqueeze(-1).to(h.dtype)

    return edit(model, site, fn, positions=positions, description=f"add@{site}")


def project_out(
    model: ModelHandle | torch.nn.Module,
    site: str | Site,
    direction: torch.Tensor,
    *,
    positions: str | Sequence[int] = "all",
    alpha: float | torch.Tensor = 1.0,
) -> EditHandle:
    """``h <- h - alpha (h . r) r`` with ``r`` the unit direction (directional ablation when alpha = 1)."""
    d = torch.as_tensor(direction).detach().float()
    r = d / (d.norm() + 1e-8)

    def fn(h, sel):
        rr = r.to(h.device, h.dtype)
        a = _strength(alpha, h)
        proj = (h @ rr).unsqueeze(-1) * rr
        return h - a * proj * sel.unsqueeze(-1).to(h.dtype)

    return edit(model, site, fn, positions=positions, description=f"project_out@{site}")


def patch(
    model: ModelHandle | torch.nn.Module,
    site: str | Site,
    value: torch.Tensor,
    *,
    positions: str | Sequence[int] = "last",
) -> EditHandle:
    """Replace the activation at the selected positions with ``value`` (``[d]``, ``[B, d]``, or ``[B, T, d]``
    matching the forward's shape)."""
    val = torch.as_tensor(value).detach()

    def fn(h, sel):
        v = val.to(h.device, h.dtype)
        if v.dim() == 1:
            v = v.expand_as(h)
        elif v.dim() == 2:
            v = v.unsqueeze(1).expand_as(h)
        m = sel.unsqueeze(-1)
        return torch.where(m, v, h)

    return edit(model, site, fn, positions=positions, description=f"patch@{site}")


def add_noise(
    model: ModelHandle | torch.nn.Module,
    site: str | Site,
    scale: float | torch.Tensor,
    *,
    seed: int,
    distribution: str = "gaussian",
    norm: float | None = None,
    positions: str | Sequence[int] = "last",
    fixed: bool = True,
) -> EditHandle:
    """Add noise at the selected positions.

    Args:
        scale: multiplier of the noise vector (or ``[B]`` per-row scales).
        seed: RNG seed (recorded in the handle's description).
        distribution: ``"gaussian"`` (zero-mean) or ``"uniform"`` (Uniform[0, 1], *not* zero-mean, as in Poser).
        norm: rescale the noise vector to this L2 norm (Poser scales to the steering vector's norm).
        fixed: one vector drawn once and reused for every position and call (Poser); False draws fresh noise per
            call from the seeded generator (still reproducible for the same sequence of calls).
    """
    if distribution not in ("gaussian", "uniform"):
        raise ValueError("distribution must be 'gaussian' or 'uniform'")
    gen = torch.Generator().manual_seed(int(seed))
    state: dict = {}

    def draw(d: int) -> torch.Tensor:
        u = torch.randn(d, generator=gen) if distribution == "gaussian" else torch.rand(d, generator=gen)
        if norm is not None:
            u = u * (norm / u.norm())
        return u

    def fn(h, sel):
        d = h.shape[-1]
        if fixed:
            if "u" not in state:
                state["u"] = draw(d)
            u = state["u"].to(h.device, h.dtype).expand_as(h)
        else:
            u = (
                torch.stack([draw(d) for _ in range(h.shape[0] * h.shape[1])])
                .view_as(h)
                .to(h.device, h.dtype)
            )
        a = _strength(scale, h)
        return h + a * u * sel.unsqueeze(-1).to(h.dtype)

    return edit(
        model, site, fn, positions=positions, description=f"noise({distribution}, seed={seed})@{site}"
    )


class EditGroup(EditHandle):
    """Several edits applied and removed together."""

    def __init__(self, edits: list[EditHandle], description: str = "group"):
        self._edits = edits
        self.description = description
        self.active = True

    def remove(self) -> None:
        if not self.active:
            return
        for e in self._edits:
            e.remove()
        self.active = False


def combine(*edits: EditHandle, description: str = "group") -> EditGroup:
    """Group live edits so one ``remove()`` / ``with`` removes all of them."""
    return EditGroup(list(edits), description)
