"""Weight edits that return a new checkpoint (the input model is never touched).

``orthogonalize`` folds directional ablation into the weights (Arditi et al., papers.md R.a): with ``r`` the unit
direction, every matrix writing into the residual stream loses its ``r`` component — token embedding rows
(``W_E <- W_E - (W_E r) r^T``), each block's attention and MLP output projections (``W_O <- W_O - r r^T W_O``) and,
for GPT-2, the position embeddings and the output-projection biases. With tied input/output embeddings the LM head
is untied first (the new checkpoint keeps the original unembedding). The result's logits equal runtime
:func:`~alignscope.interventions.ablate` within fp32 tolerance.

``fold_steering_bias`` folds activation addition at ``resid_pre.L`` into the bias of block ``L-1``'s MLP output
projection (Arditi's act-add-as-weights); architectures whose projection has no bias get one.
"""

from __future__ import annotations

from pathlib import Path

import torch
from alignscope.hooks import ModelHandle, load_model
from alignscope.hooks.io import atomic_dir
from alignscope.hooks.sites import parse_site


def _unit(direction) -> torch.Tensor:
    v = torch.as_tensor(getattr(direction, "vector", direction)).detach().double()
    return v / (v.norm() + 1e-12)


def _copy_handle(model) -> ModelHandle:
    return load_model(model).copy()


def _untie(handle: ModelHandle) -> None:
    model = handle.model
    head = handle.adapter.lm_head_module(model)
    emb = handle.adapter.embed_module(model)
    if head.weight is emb.weight or head.weight.data_ptr() == emb.weight.data_ptr():
        head.weight = torch.nn.Parameter(emb.weight.detach().clone())
        model.config.tie_word_embeddings = False
        if hasattr(model.config, "get_text_config"):
            model.config.get_text_config().tie_word_embeddings = False
        handle.notes.append("LM head untied from the input embedding (orthogonalised checkpoint)")


@torch.no_grad()
def orthogonalize(model, direction, *, out: str | Path | None = None) -> ModelHandle:
    """A new model whose weights cannot write ``direction`` into the residual stream.

    Args:
        model: handle / path / HF model (never modified).
        direction: ``Direction`` or ``[d]`` tensor (normalised here).
        out: optionally save the new checkpoint there (atomically; config, safetensors, tokenizer).

    Returns:
        A :class:`ModelHandle` of the new model (in memory; ``path`` set when ``out`` is given).
    """
    h = _copy_handle(model)
    m, ad = h.model, h.adapter
    r = _unit(direction).to(next(m.parameters()).device)
    _untie(h)

    def rows(w: torch.Tensor) -> None:  # rows are d_model vectors: w <- w - (w r) r^T
        rr = r.to(w.dtype)
        w.sub_(torch.outer(w @ rr, rr))

    rows(ad.embed_module(m).weight)
    pe = ad.pos_embed_module(m)
    if pe is not None:
        rows(pe.weight)
    for i in range(ad.n_layers(m)):
        for which in ("attn", "mlp"):
            proj = ad.out_proj(m, i, which)
            w = proj.weight
            if ad.conv1d:  # Conv1D: [in, out=d_model]; output = x @ W
                rows(w)
            else:  # Linear: [out=d_model, in]: W <- W - r r^T W
                rr = r.to(w.dtype)
                w.sub_(torch.outer(rr, rr @ w))
            if getattr(proj, "bias", None) is not None:
                b = proj.bias
                b.sub_((b @ r.to(b.dtype)) * r.to(b.dtype))
    h.notes.append("orthogonalised against a direction (Arditi et al. weight orthogonalisation)")
    if out is not None:
        save_checkpoint(h, out)
    return h


@torch.no_grad()
def fold_steering_bias(
    model, direction, alpha: float, *, layer: int | None = None, out: str | Path | None = None
) -> ModelHandle:
    """A new model with ``alpha * direction`` added at ``resid_pre.layer`` through a bias (``layer >= 1``)."""
    h = _copy_handle(model)
    m, ad = h.model, h.adapter
    site = getattr(direction, "site", None)
    if layer is None:
        if site is None:
            raise ValueError("pass layer= (the direction has no site)")
        layer = parse_site(site, ad.n_layers(m)).layer
    if layer < 1:
        raise ValueError("folding into a bias needs layer >= 1 (block L-1's MLP output feeds resid_pre.L)")
    v = torch.as_tensor(getattr(direction, "vector", direction)).detach()
    proj = ad.out_proj(m, layer - 1, "mlp")
    if getattr(proj, "bias", None) is None:
        out_features = proj.weight.shape[1] if ad.conv1d else proj.weight.shape[0]
        proj.bias = torch.nn.Parameter(
            torch.zeros(out_features, dtype=proj.weight.dtype, device=proj.weight.device)
        )
        h.notes.append(f"bias added to block {layer - 1}'s MLP output projection for folded steering")
        if hasattr(m.config, "mlp_bias"):
            m.config.mlp_bias = True
    proj.bias.add_(alpha * v.to(proj.bias.dtype).to(proj.bias.device))
    if out is not None:
        save_checkpoint(h, out)
    return h


def save_checkpoint(handle: ModelHandle, out: str | Path) -> Path:
    """Save model + tokenizer as an ordinary HF directory, atomically (no partial directory on failure)."""
    out = Path(out)
    with atomic_dir(out) as tmp:
        handle.model.save_pretrained(tmp, safe_serialization=True)
        handle.tokenizer.save_pretrained(tmp)
    handle.path = str(out)
    handle.source = "dir"
    handle._hash = None
    return out
