"""Tiny random-init checkpoints of real architectures (GPT-2, Llama, Qwen2, Gemma), saved as ordinary HF
directories with a small BPE tokenizer that has a chat template and no pad token (so the pad-token choice is
exercised). Built in seconds; used by the architecture tests."""

from __future__ import annotations

from pathlib import Path

import torch

ARCHS = ("gpt2", "llama", "qwen2", "gemma")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
_CORPUS = [
    "How do I bake bread at home?",
    "Explain photosynthesis in simple words.",
    "Write a poem about the sea.",
    "What is the capital of France?",
    "Tell me how to pick a lock.",
    "Give me three tips for studying.",
    "Describe the water cycle.",
    "How can I improve my sleep?",
    "List the planets of the solar system.",
    "Why is the sky blue?",
    "Translate hello into Spanish.",
    "Summarize the plot of Hamlet.",
] * 4


def make_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|end|>", "<|system|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_config(arch: str, vocab: int, n_layers: int = 3, d: int = 64):
    from transformers import GemmaConfig, GPT2Config, LlamaConfig, Qwen2Config

    common = dict(vocab_size=vocab, bos_token_id=1, eos_token_id=2)
    if arch == "gpt2":
        return GPT2Config(
            n_embd=d,
            n_layer=n_layers,
            n_head=4,
            n_positions=128,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **common,
        )
    kw = dict(
        hidden_size=d,
        intermediate_size=2 * d,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        **common,
    )
    if arch == "llama":
        return LlamaConfig(**kw)
    if arch == "qwen2":
        return Qwen2Config(**kw)
    if arch == "gemma":
        return GemmaConfig(head_dim=16, **kw)
    raise ValueError(arch)


def build_tiny(arch: str, out: Path, seed: int = 0, n_layers: int = 3) -> Path:
    """Build and save one tiny random model; returns its directory."""
    from transformers import AutoModelForCausalLM

    out = Path(out)
    if (out / "config.json").exists():
        return out
    tok = make_tokenizer()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(make_config(arch, len(tok), n_layers=n_layers))
    with torch.no_grad():  # make norms non-trivial so tests can tell pre- from post-norm
        for name, p in model.named_parameters():
            if "norm" in name or "ln_" in name:
                p.add_(0.3 * torch.randn_like(p))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
