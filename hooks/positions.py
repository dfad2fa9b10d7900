"""Token positions, always resolved against the attention mask, so batched results equal one-by-one results.

Positions:
    ``"last"``: the last non-pad token -> ``[N, d]``.
    ``"mean"``: masked mean over non-pad tokens -> ``[N, d]``.
    ``"eoi"``: the chat template's post-instruction tokens (the last ``n_eoi`` tokens of each prompt) ->
        ``[N, n_eoi, d]``.
    ``"all"``: every token, laid out from the first real token (right padding, zeros at pads) -> ``[N, T, d]``
        with a ``[N, T]`` mask.
    a list of ints: indices into each prompt's real tokens (``0`` = first real token, ``-1`` = last) ->
        ``[N, k, d]``; a single int gives ``[N, d]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .errors import PromptError

PositionArg = str | int | Sequence[int]
NAMED = ("last", "mean", "eoi", "all")


@dataclass(frozen=True)
class Positions:
    """A normalised position request."""

    kind: str  # last | mean | eoi | all | index | indices
    indices: tuple[int, ...] = ()

    @property
    def label(self) -> str:
        if self.kind in ("index", "indices"):
            return "idx:" + ",".join(str(i) for i in self.indices)
        return self.kind


def parse_positions(positions: PositionArg) -> Positions:
    """Normalise a ``positions=`` argument."""
    if isinstance(positions, str):
        p = positions.strip()
        if p in NAMED:
            return Positions(p)
        try:
            vals = tuple(int(x) for x in p.replace(" ", "").split(",") if x)
        except ValueError:
            raise PromptError(
                f"unknown positions {positions!r}",
                "use 'last', 'mean', 'eoi', 'all', an int or a list of ints (e.g. '-1,-2')",
            ) from None
        return Positions("indices" if len(vals) > 1 else "index", vals)
    if isinstance(positions, int):
        return Positions("index", (positions,))
    vals = tuple(int(x) for x in positions)
    if not vals:
        raise PromptError("an empty list of positions was given", "pass at least one index, or 'last'")
    return Positions("indices", vals)


def span(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row: index of the first real token, of the last real token, and the number of real tokens."""
    mask = mask.bool()
    T = mask.shape[1]
    ar = torch.arange(T, device=mask.device).expand_as(mask)
    lengths = mask.sum(1)
    first = torch.where(mask, ar, torch.full_like(ar, T)).min(1).values
    last = torch.where(mask, ar, torch.full_like(ar, -1)).max(1).values
    return first, last, lengths


def make_reducer(
    pos: Positions, mask: torch.Tensor, n_eoi: int | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function ``[B, T, d] -> reduced`` for this batch's mask (the mask must cover all T positions)."""
    first, last, lengths = span(mask)
    B = mask.shape[0]
    rows = torch.arange(B, device=mask.device)
    if pos.kind == "last":
        return lambda h: h[rows, last]
    if pos.kind == "mean":
        m = mask.unsqueeze(-1)
        return lambda h: (h * m.to(h.dtype)).sum(1) / lengths.clamp(min=1).unsqueeze(-1).to(h.dtype)
    if pos.kind == "eoi":
        assert n_eoi is not None
        if bool((lengths < n_eoi).any()):
            raise PromptError("a prompt is shorter than the template's post-instruction tokens", "use 'last'")
        offs = torch.arange(-n_eoi + 1, 1, device=mask.device)
        idx = last.unsqueeze(1) + offs  # [B, n_eoi]
        return lambda h: h[rows.unsqueeze(1), idx]
    if pos.kind in ("index", "indices"):
        offs = torch.tensor(pos.indices, device=mask.device)
        neg = offs < 0
        idx = torch.where(neg, last.unsqueeze(1) + 1 + offs, first.unsqueeze(1) + offs)  # [B, k]
        bad = (idx < first.unsqueeze(1)) | (idx > last.unsqueeze(1))
        if bool(bad.any()):
            b = int(bad.any(1).nonzero()[0])
            raise PromptError(
                f"position(s) {pos.indices} fall outside prompt {b} of the batch ({int(lengths[b])} tokens)",
                "use indices within every prompt's length, or 'last'",
            )
        if pos.kind == "index":
            return lambda h: h[rows, idx[:, 0]]
        return lambda h: h[rows.unsqueeze(1), idx]
    if pos.kind == "all":
        T = mask.shape[1]
        t = torch.arange(T, device=mask.device)
        src = (first.unsqueeze(1) + t).clamp(max=T - 1)  # left-aligned layout
        valid = (t.unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1)

        def _all(h: torch.Tensor) -> torch.Tensor:
            out = h[rows.unsqueeze(1), src]
            return out * valid.to(out.dtype)

        return _all
    raise ValueError(pos)


def aligned_mask(mask: torch.Tensor) -> torch.Tensor:
    """The ``all`` layout's mask: real tokens first."""
    _, _, lengths = span(mask)
    t = torch.arange(mask.shape[1], device=mask.device)
    return (t.unsqueeze(0) < lengths.unsqueeze(1)).long()
