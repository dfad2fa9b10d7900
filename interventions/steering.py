"""Runtime interventions: activation addition (steering), directional ablation, arbitrary activation edits.

All are built on the edit primitives of :mod:`alignscope.hooks.edits` and return an ``EditHandle``: a context
manager (``with steer(model, d, 4.0): ...``) and a removable handle (``h = steer(...); ...; h.remove()``); hooks are
removed on exit, also after an exception, and work during ``generate`` with the KV cache.

Paper mapping (papers.md R.a, 5.a):
    * ``steer(..., normalize=False)`` at one layer's block input = Arditi et al.'s activation addition (un-normalised
      difference of means, all positions, ``coeff = -1`` to bypass / ``+1`` to induce refusal).
    * ``steer(..., normalize=True, layers=[...], site="resid_post")`` = Wolf et al.'s RepE injection (unit vector
      times ``r_e`` added to the decoder-block outputs of several layers, all non-pad positions).
    * ``ablate`` = Arditi et al.'s directional ablation: ``x <- x - (x.r)r`` at every block input and every attention
      and MLP output, all positions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from alignscope.hooks import ModelHandle
from alignscope.hooks.edits import EditHandle, add_vector, combine, project_out
from alignscope.hooks.edits import edit as _edit
from alignscope.hooks.sites import parse_site


def _vector(direction) -> tuple[torch.Tensor, str | None]:
    """Accept a probes ``Direction`` (vector + site) or a bare tensor."""
    vec = getattr(direction, "vector", direction)
    site = getattr(direction, "site", None)
    return torch.as_tensor(vec).detach().float(), site


def steer(
    model,
    direction,
    alpha: float | torch.Tensor,
    *,
    layers: int | Sequence[int] | None = None,
    site: str = "resid_pre",
    positions: str | Sequence[int] = "all",
    normalize: bool = False,
) -> EditHandle:
    """Add ``alpha * direction`` to the residual stream.

    Args:
        model: a :class:`~alignscope.hooks.ModelHandle` or an HF model.
        direction: a ``Direction`` or a ``[d]`` tensor.
        alpha: strength; a ``[B]`` tensor gives one strength per batch row (a batched strength sweep).
        layers: layer index or indices; default: the direction's own layer (from its site), else the middle layer.
        site: ``"resid_pre"`` (block input, Arditi) or ``"resid_post"`` (block output, Wolf).
        positions: ``"all"`` (every real token, prompt and generated), ``"last"`` (last prompt token, then each
            generated token), ``"prompt"`` (prompt tokens in the prefill only), ``"response"`` (generated tokens
            only), or indices into the prompt.
        normalize: use the unit vector (``alpha`` is then the injected norm, as Wolf et al.'s ``r_e``).
    """
    handle = model
    vec, dsite = _vector(direction)
    if normalize:
        vec = vec / (vec.norm() + 1e-8)
    n = _n_layers(handle)
    if layers is None:
        if dsite is not None and "." in dsite and not dsite.startswith(("embed", "final", "logits")):
            layers = [parse_site(dsite, n).layer]
            site = dsite.split(".")[0] if dsite.split(".")[0] in ("resid_pre", "resid_post") else site
        else:
            layers = [n // 2]
    if isinstance(layers, int):
        layers = [layers]
    edits = [add_vector(handle, f"{site}.{layer}", vec, alpha=alpha, positions=positions) for layer in layers]
    return combine(
        *edits,
        description=f"steer(alpha={alpha if not torch.is_tensor(alpha) else 'per-row'}, "
        f"{site} layers={list(layers)}, positions={positions})",
    )


def ablate(model, direction, *, layers: Sequence[int] | None = None, positions: str = "all") -> EditHandle:
    """Directional ablation at every layer: block inputs, attention outputs and MLP outputs (Arditi et al.)."""
    vec, _ = _vector(direction)
    n = _n_layers(model)
    layers = range(n) if layers is None else layers
    edits = []
    try:
        for layer in layers:
            for kind in ("resid_pre", "attn_out", "mlp_out"):
                edits.append(project_out(model, f"{kind}.{layer}", vec, positions=positions))
    except Exception:
        for e in edits:
            e.remove()
        raise
    return combine(*edits, description=f"ablate({len(list(layers))} layers)")


def edit(model, site: str, fn: Callable[[torch.Tensor], torch.Tensor], *, positions="all") -> EditHandle:
    """Arbitrary activation edit: ``fn(h) -> h'`` applied at ``site`` to the selected positions.

    Examples:
        Clamp the projection on a direction to at most ``c``::

            r = d / d.norm()
            with edit(model, "resid_post.6", lambda h: h - ((h @ r) - c).clamp(min=0)[..., None] * r): ...

        Patch from another run: ``edit(model, "resid_post.3", lambda h: cached)`` (shapes must match).
    """

    def wrapped(h, sel):
        new = fn(h)
        return torch.where(sel.unsqueeze(-1), new.to(h.dtype), h)

    return _edit(model, site, wrapped, positions=positions, description=f"edit@{site}")


def _n_layers(model) -> int:
    if isinstance(model, ModelHandle):
        return model.n_layers
    from alignscope.hooks.adapters import adapter_for

    return adapter_for(model).n_layers(model)
