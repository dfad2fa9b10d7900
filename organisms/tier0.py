"""Tier 0: random-init tiny configs of GPT-2, Llama, Qwen2 and Gemma, for architecture-coverage tests.

Each is an ordinary HF checkpoint directory (``model.safetensors``, ``config.json``) with a small BPE tokenizer that
has a chat template and a pad token. Weights are a function of ``seed`` only.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from alignscope.hooks.errors import AlignscopeError
from alignscope.hooks.io import atomic_dir, atomic_write_json

from .tasks import GOOD_OVERSIGHT, POOR_OVERSIGHT, REFUSALS, WORDS
from .tier1 import train_tokenizer

ARCHS = ("gpt2", "llama", "qwen2", "gemma")


class Tier0Error(AlignscopeError, ValueError):
    """Unknown tier-0 architecture."""


def _config(arch: str, vocab: int, pad: int, bos: int, eos: int):
    import transformers as tf

    common = dict(vocab_size=vocab, pad_token_id=pad, bos_token_id=bos, eos_token_id=eos)
    if arch == "gpt2":
        return tf.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=256, **common)
    if arch == "llama":
        return tf.LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            **common,
        )
    if arch == "qwen2":
        return tf.Qwen2Config(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            **common,
        )
    if arch == "gemma":
        return tf.GemmaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=8,
            max_position_embeddings=256,
            **common,
        )
    raise Tier0Error(f"unknown tier-0 architecture {arch!r}", f"choose one of {ARCHS}")


def tier0_tokenizer(vocab_size: int = 512):
    """A small deterministic BPE tokenizer (trained on a fixed built-in corpus) with a chat template."""
    corpus = list(WORDS) + list(REFUSALS) + list(GOOD_OVERSIGHT) + list(POOR_OVERSIGHT)
    corpus += [f"Repeat the word: {w}" for w in WORDS] + [f"Is {n} even or odd?" for n in range(100)]
    return train_tokenizer(corpus, vocab_size)


def build_tier0(arch: str, out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write a random-init tiny ``arch`` checkpoint (safetensors + tokenizer with chat template) to ``out_dir``.

    Args:
        arch: one of :data:`ARCHS`.
        out_dir: target directory (replaced atomically).
        seed: weight-initialisation seed (recorded in ``organism.json``).

    Returns:
        ``out_dir`` as a Path.

    Raises:
        Tier0Error: unknown architecture.
    """
    from transformers import AutoModelForCausalLM

    if arch not in ARCHS:
        raise Tier0Error(f"unknown tier-0 architecture {arch!r}", f"choose one of {ARCHS}")
    tok = tier0_tokenizer()
    # spare embedding rows, as real checkpoints have: some architectures' tokenizer classes add a token on load
    cfg = _config(arch, len(tok) + 8, tok.pad_token_id, tok.bos_token_id, tok.eos_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        atomic_write_json(
            tmp / "organism.json",
            {
                "name": f"tier0-{arch}",
                "kind": "tier0",
                "tier": 0,
                "seed": seed,
                "parent": None,
                "purpose": "random-init architecture fixture",
                "evals": {},
            },
        )
    return out
