"""String site names: the universal address of an activation.

=================  ==========================================  ==============================  =========================
site               what                                        HF ``hidden_states`` index      TransformerLens 4 hook
=================  ==========================================  ==============================  =========================
``embed``          input of block 0 (embeddings; incl. GPT-2    ``hs[0]``                       ``blocks.0.hook_resid_pre``
                   position embeddings, Gemma's sqrt(d) scale)
``resid_pre.L``    input of block L                            ``hs[L]``                       ``blocks.L.hook_resid_pre``
``attn_out.L``     output of block L's attention module        —                               ``blocks.L.hook_attn_out``
``mlp_out.L``      output of block L's MLP                     —                               ``blocks.L.hook_mlp_out``
``resid_post.L``   output of block L                           ``hs[L+1]`` for L < n-1 (the    ``blocks.L.hook_resid_post``
                                                               last entry of ``hs`` is
                                                               ``final``, after the norm)
``final``          output of the final norm                    ``hs[n]``                       ``ln_final.hook_out``
``logits``         output of the LM head                       —                               ``unembed.hook_out``
=================  ==========================================  ==============================  =========================

``L`` may be negative (``resid_post.-1`` is the output of the last block).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import SiteError

LAYER_KINDS = ("resid_pre", "attn_out", "mlp_out", "resid_post")
GLOBAL_KINDS = ("embed", "final", "logits")
_ORDER = {"resid_pre": 0, "attn_out": 1, "mlp_out": 2, "resid_post": 3}


@dataclass(frozen=True, order=False)
class Site:
    """A resolved site: ``kind`` and a non-negative ``layer`` (None for global sites)."""

    kind: str
    layer: int | None = None

    @property
    def name(self) -> str:
        return self.kind if self.layer is None else f"{self.kind}.{self.layer}"

    def depth(self, n_layers: int) -> tuple[int, int]:
        """Order of the site in the forward pass (used to stop after the deepest requested site)."""
        if self.kind == "embed":
            return (0, 0)
        if self.kind == "final":
            return (n_layers, 0)
        if self.kind == "logits":
            return (n_layers, 1)
        return (self.layer, _ORDER[self.kind])

    def tl_hook_name(self, n_layers: int) -> str:
        """TransformerLens 4 hook name of this site."""
        if self.kind == "embed":
            return "blocks.0.hook_resid_pre"
        if self.kind == "final":
            return "ln_final.hook_out"
        if self.kind == "logits":
            return "unembed.hook_out"
        return f"blocks.{self.layer}.hook_{self.kind}"

    def __str__(self) -> str:
        return self.name


def parse_site(site: str | Site, n_layers: int) -> Site:
    """Parse ``"resid_post.-1"`` etc. into a :class:`Site` with a non-negative layer.

    Raises:
        SiteError: unknown kind, malformed layer, or layer out of range.
    """
    if isinstance(site, Site):
        site = site.name
    if not isinstance(site, str) or not site:
        raise SiteError(f"site must be a non-empty string, got {site!r}", _site_help(n_layers))
    s = site.strip()
    if s in GLOBAL_KINDS:
        return Site(s)
    kind, dot, layer = s.partition(".")
    if kind not in LAYER_KINDS or not dot:
        raise SiteError(f"unknown site {site!r}", _site_help(n_layers))
    try:
        li = int(layer)
    except ValueError:
        raise SiteError(f"site {site!r} has a malformed layer {layer!r}", _site_help(n_layers)) from None
    if not -n_layers <= li < n_layers:
        raise SiteError(
            f"layer {li} of site {site!r} is out of range: the model has {n_layers} blocks",
            f"use a layer in [{-n_layers}, {n_layers - 1}] (negative counts from the end)",
        )
    return Site(kind, li % n_layers)


def parse_sites(sites: str | Site | list[str | Site], n_layers: int) -> list[Site]:
    """Parse one or many sites; ``"resid_post.*"`` expands to every layer. Duplicates are dropped, order kept."""
    if isinstance(sites, (str, Site)):
        sites = [sites]
    if len(sites) == 0:
        raise SiteError("no sites were requested", _site_help(n_layers))
    out: list[Site] = []
    for s in sites:
        if isinstance(s, str) and s.endswith(".*"):
            expanded = [parse_site(f"{s[:-2]}.{i}", n_layers) for i in range(n_layers)]
        else:
            expanded = [parse_site(s, n_layers)]
        for e in expanded:
            if e not in out:
                out.append(e)
    return out


def _site_help(n_layers: int) -> str:
    return (
        "use one of 'embed', 'resid_pre.L', 'attn_out.L', 'mlp_out.L', 'resid_post.L', 'final', 'logits' "
        f"with L in [{-n_layers}, {n_layers - 1}], or 'resid_post.*' for every layer"
    )
