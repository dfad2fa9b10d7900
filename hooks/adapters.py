"""Architecture adapters: map a Hugging Face causal LM's module paths to a few generic sites.

An adapter knows where the decoder blocks, the final norm, the LM head, the embedding and each block's attention and
MLP modules live. Four architectures are verified in tests against ``output_hidden_states`` (GPT-2, Llama — which
covers SmolLM2 —, Qwen2, Gemma); other decoder-only models whose layout matches the Llama one (``model.layers[i]``
with ``self_attn`` / ``mlp``) get the generic adapter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from .errors import CheckpointError


def _get(root: nn.Module, path: str) -> nn.Module:
    mod = root
    for part in path.split("."):
        mod = mod[int(part)] if part.isdigit() else getattr(mod, part)
    return mod


@dataclass(frozen=True)
class ArchitectureAdapter:
    """Where the generic pieces live in one architecture (dotted paths from the top ``*ForCausalLM`` module).

    Attributes:
        name: adapter name (``gpt2``, ``llama``, ``qwen2``, ``gemma``, ``generic``).
        layers: path of the ``ModuleList`` of decoder blocks.
        final_norm: path of the final norm.
        lm_head: path of the output projection.
        embed: path of the token embedding.
        pos_embed: path of the learned position embedding, if any (GPT-2).
        attn: attribute of a block holding the attention module.
        mlp: attribute of a block holding the MLP module.
        attn_out_proj: attribute path (from the block) of the attention output projection ``[d_model, *]`` weight.
        mlp_out_proj: attribute path (from the block) of the MLP output projection.
        conv1d: GPT-2 stores projections as ``Conv1D`` (weight ``[in, out]``) instead of ``Linear`` (``[out, in]``).
    """

    name: str
    layers: str
    final_norm: str
    lm_head: str
    embed: str
    attn: str
    mlp: str
    attn_out_proj: str
    mlp_out_proj: str
    pos_embed: str | None = None
    conv1d: bool = False

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return _get(model, self.layers)

    def n_layers(self, model: nn.Module) -> int:
        return len(self.blocks(model))

    def block(self, model: nn.Module, i: int) -> nn.Module:
        return self.blocks(model)[i]

    def attn_module(self, model: nn.Module, i: int) -> nn.Module:
        return _get(self.block(model, i), self.attn)

    def mlp_module(self, model: nn.Module, i: int) -> nn.Module:
        return _get(self.block(model, i), self.mlp)

    def final_norm_module(self, model: nn.Module) -> nn.Module:
        return _get(model, self.final_norm)

    def lm_head_module(self, model: nn.Module) -> nn.Module:
        return _get(model, self.lm_head)

    def embed_module(self, model: nn.Module) -> nn.Module:
        return _get(model, self.embed)

    def pos_embed_module(self, model: nn.Module) -> nn.Module | None:
        return None if self.pos_embed is None else _get(model, self.pos_embed)

    def out_proj(self, model: nn.Module, i: int, which: str) -> nn.Module:
        """The module writing into the residual stream: ``which`` is ``"attn"`` or ``"mlp"``."""
        return _get(self.block(model, i), self.attn_out_proj if which == "attn" else self.mlp_out_proj)

    def module_path(self, kind: str, layer: int | None = None) -> str:
        """Dotted HF module path of a generic piece (used in docs and errors)."""
        if kind == "block":
            return f"{self.layers}.{layer}"
        if kind == "attn":
            return f"{self.layers}.{layer}.{self.attn}"
        if kind == "mlp":
            return f"{self.layers}.{layer}.{self.mlp}"
        return {"final_norm": self.final_norm, "lm_head": self.lm_head, "embed": self.embed}[kind]


_LLAMA_LIKE = dict(
    layers="model.layers",
    final_norm="model.norm",
    lm_head="lm_head",
    embed="model.embed_tokens",
    attn="self_attn",
    mlp="mlp",
    attn_out_proj="self_attn.o_proj",
    mlp_out_proj="mlp.down_proj",
)

ADAPTERS: dict[str, ArchitectureAdapter] = {
    "gpt2": ArchitectureAdapter(
        name="gpt2",
        layers="transformer.h",
        final_norm="transformer.ln_f",
        lm_head="lm_head",
        embed="transformer.wte",
        pos_embed="transformer.wpe",
        attn="attn",
        mlp="mlp",
        attn_out_proj="attn.c_proj",
        mlp_out_proj="mlp.c_proj",
        conv1d=True,
    ),
    "llama": ArchitectureAdapter(name="llama", **_LLAMA_LIKE),
    "qwen2": ArchitectureAdapter(name="qwen2", **_LLAMA_LIKE),
    "gemma": ArchitectureAdapter(name="gemma", **_LLAMA_LIKE),
}
#: model_type values known to share the Llama layout (verified ones are in ADAPTERS).
_GENERIC_LLAMA_TYPES = {
    "mistral",
    "qwen3",
    "gemma2",
    "gemma3_text",
    "olmo",
    "olmo2",
    "phi3",
    "smollm3",
    "granite",
}


def register_adapter(model_type: str, adapter: ArchitectureAdapter) -> None:
    """Register an adapter for a ``config.model_type`` (plug-in point for new architectures)."""
    ADAPTERS[model_type] = adapter


def adapter_for(model: nn.Module) -> ArchitectureAdapter:
    """Pick the adapter for an HF causal LM, by ``config.model_type`` then by layout.

    Raises:
        CheckpointError: the model's layout is not known.
    """
    mt = getattr(getattr(model, "config", None), "model_type", None)
    if mt in ADAPTERS:
        return ADAPTERS[mt]
    generic = ArchitectureAdapter(name=f"generic:{mt}", **_LLAMA_LIKE)
    try:
        generic.blocks(model)
        generic.final_norm_module(model)
        generic.lm_head_module(model)
        generic.attn_module(model, 0)
        generic.mlp_module(model, 0)
    except (AttributeError, IndexError, TypeError) as e:
        raise CheckpointError(
            f"architecture {mt!r} ({type(model).__name__}) is not supported: no Llama-style layout "
            "(model.layers[i].self_attn / .mlp, model.norm, lm_head) was found",
            "register an ArchitectureAdapter for it with alignscope.hooks.register_adapter(model_type, adapter)",
        ) from e
    return generic
