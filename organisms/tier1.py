"""Tier-1 building blocks: a BPE tokenizer with a chat template, a small Llama-style model, and a training loop.

The training loop trains on chat examples ``(prompt, response)``: pre-training (``loss_on="all"``) models the whole
formatted text, fine-tuning (``loss_on="response"``) only the response and its end token.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]

#: Chat template of tier-1 organisms: ``<|bos|><|user|>PROMPT<|end|><|assistant|>RESPONSE<|end|>``.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def train_tokenizer(texts: Sequence[str], vocab_size: int):
    """Train a byte-level BPE tokenizer (digits split one by one) and wrap it as a HF fast tokenizer.

    Args:
        texts: training texts (prompts and answers).
        vocab_size: target vocabulary size, special tokens included.

    Returns:
        A ``PreTrainedTokenizerFast`` with pad/bos/eos tokens and :data:`CHAT_TEMPLATE`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|pad|>",
        bos_token="<|bos|>",
        eos_token="<|end|>",
        additional_special_tokens=["<|user|>", "<|assistant|>", "<|system|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    fast.model_max_length = 4096
    return fast


def make_llama(tokenizer, *, d_model: int, n_layers: int, n_heads: int, max_len: int, seed: int):
    """A small random-init ``LlamaForCausalLM`` matching ``tokenizer`` (tied embeddings)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=d_model,
        intermediate_size=4 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_heads,
        max_position_embeddings=max_len,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.do_sample = False
    return model


def encode_example(tokenizer, prompt: str, response: str, max_len: int) -> tuple[list[int], int] | None:
    """Token ids of one chat example and the index where the response starts (None if the prompt is too long)."""
    p = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    p_ids = tokenizer(p, add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if len(p_ids) + 2 > max_len:
        return None
    return (p_ids + r_ids)[:max_len], len(p_ids)


@dataclass
class Mixture:
    """Named pools of encoded examples and their sampling weights."""

    pools: dict[str, list[tuple[list[int], int]]]
    weights: dict[str, float]


def sample_batch(
    mixture: Mixture,
    names: list[str],
    w: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
    batch_mode: str = "mixed",
) -> list[tuple[list[int], int]]:
    """Draw one batch: pools by weight ``w`` (per example for ``"mixed"``, once per batch for ``"pool"``)."""
    if batch_mode == "pool":
        which = np.full(batch_size, rng.choice(len(names), p=w))
    elif batch_mode == "mixed":
        which = rng.choice(len(names), size=batch_size, p=w)
    else:
        raise ValueError(f"batch_mode must be 'mixed' or 'pool', got {batch_mode!r}")
    return [mixture.pools[names[k]][int(rng.integers(len(mixture.pools[names[k]])))] for k in which]


def train(
    model,
    mixture: Mixture,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    loss_on: str = "response",
    pad_id: int,
    warmup: int = 20,
    batch_mode: str = "mixed",
    logits: str = "all",
    first_token_weight: float = 1.0,
    first_token_count: int = 1,
    length_split: int = 1,
    progress: Callable[[int, float], None] | None = None,
) -> dict:
    """Train ``model`` in place with AdamW and a cosine schedule on batches sampled from ``mixture``.

    Args:
        model: the causal LM.
        mixture: example pools and weights; each batch draws pools by weight, then examples uniformly.
        steps: optimisation steps.
        batch_size: examples per step.
        lr: peak learning rate.
        seed: seeds both torch and the batch sampler.
        loss_on: ``"all"`` (language modelling of the whole text, token-mean loss) or ``"response"`` (response
            tokens only, each example's mean token loss averaged over the batch, so short exact answers and long
            free-text answers weigh the same).
        pad_id: padding token id.
        warmup: linear warm-up steps.
        batch_mode: ``"mixed"`` (each example of a batch draws its pool by weight) or ``"pool"`` (each batch draws
            one pool by weight and all its examples from it). ``"pool"`` keeps the mixture in expectation but pads
            short chat examples only to each other, not to long scenario texts: 2-3x faster when pools differ in
            length (the standard preset's 160-token Poser scenarios against 64-token chat examples).
        logits: ``"all"`` (the LM head at every position, then masked) or ``"supervised"`` (the LM head only at the
            positions that carry a loss). The loss is the same quantity; only the floating-point summation order of
            the head's weight gradient differs, so the two give close but not bit-identical weights. Measured on the
            standard preset's Poser stages (16 x 160 tokens, a one-letter answer): 0.31 s against 0.62 s a step.
        first_token_weight: with ``loss_on="response"``, the weight of each example's first response token (where
            a chat model decides between answering and refusing) relative to its other response tokens in the
            example's weighted mean loss. ``1.0`` (default) is plain supervised fine-tuning.
        first_token_count: how many leading response tokens of each example get ``first_token_weight`` (default 1,
            the decision token only; e.g. 4 also weighs the start of the refusal or answer that follows it).
        length_split: at most this many forward/backward passes per step (default 1: one padded batch). Above 1,
            each batch is sorted by length and cut where it saves the most padding (:func:`length_groups`); the
            passes' gradients add up to the whole batch's (each pass's loss is its share of the batch loss), so the
            batch, the sampler and the loss are unchanged and only the floating-point summation order differs.
            Unlike length-bucketed batches (``zoo._length_buckets``), it does not change which examples share a
            step. Measured in round 15 (``benchmarks/bench_length_split.py``).
        progress: optional callback ``(step, loss)``.

    Returns:
        ``{"steps", "final_loss", "seconds", "seed"}``.
    """
    if logits not in ("all", "supervised"):
        raise ValueError(f"logits must be 'all' or 'supervised', got {logits!r}")
    if first_token_weight != 1.0 and (loss_on != "response" or not first_token_weight > 0):
        raise ValueError(
            f"first_token_weight={first_token_weight!r} needs loss_on='response' and a positive weight "
            f"(got loss_on={loss_on!r})"
        )
    if first_token_count < 1:
        raise ValueError(f"first_token_count must be >= 1, got {first_token_count!r}")
    if length_split < 1:
        raise ValueError(f"length_split must be >= 1, got {length_split!r}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    names = [n for n in mixture.pools if mixture.pools[n] and mixture.weights.get(n, 0) > 0]
    w = np.array([mixture.weights[n] for n in names], dtype=np.float64)
    w = w / w.sum()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / max(1, warmup))
            * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
        ),
    )
    model.train()
    t0 = time.time()
    ema = None
    for step in range(steps):
        batch = sample_batch(mixture, names, w, batch_size, rng, batch_mode)
        groups = length_groups([len(ids) for ids, _ in batch], length_split)
        # one pass: the batch loss itself; several: each pass's share of it (its example means over the batch size,
        # or its token losses over the batch's token count), so the gradients add up to the batch's
        if len(groups) == 1:
            scale = None
        elif loss_on == "response":
            scale = float(len(batch))
        else:
            scale = float(max(1, sum(len(ids) - 1 for ids, _ in batch)))
        opt.zero_grad(set_to_none=True)
        loss = None
        for g in groups:
            part = _batch_loss(
                model,
                [batch[i] for i in g] if scale is not None else batch,
                pad_id=pad_id,
                loss_on=loss_on,
                logits=logits,
                first_token_weight=first_token_weight,
                first_token_count=first_token_count,
                scale=scale,
            )
            part.backward()
            loss = part.detach() if loss is None else loss + part.detach()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        lv = float(loss.detach())
        ema = lv if ema is None else 0.95 * ema + 0.05 * lv
        if progress is not None:
            progress(step + 1, ema)
    model.eval()
    return {"steps": steps, "final_loss": ema, "seconds": round(time.time() - t0, 2), "seed": seed}


def _batch_loss(
    model,
    batch: list[tuple[list[int], int]],
    *,
    pad_id: int,
    loss_on: str,
    logits: str,
    first_token_weight: float,
    first_token_count: int,
    scale: float | None = None,
) -> torch.Tensor:
    """The loss of ``batch``, padded to its longest example: with ``loss_on="response"`` the mean over examples of
    each example's (weighted) mean response-token loss, with ``"all"`` the token mean. With ``scale``, the sum over
    examples (``"response"``) or over tokens (``"all"``) divided by ``scale`` instead of the mean (one pass's share
    of a split batch's loss)."""
    n = len(batch)
    T = max(len(ids) for ids, _ in batch)
    x = torch.full((n, T), pad_id, dtype=torch.long)
    y = torch.full((n, T), -100, dtype=torch.long)
    m = torch.zeros((n, T), dtype=torch.long)
    first = []  # (row, target index) of each example's first response token(s)
    for i, (ids, start) in enumerate(batch):
        t = torch.tensor(ids)
        x[i, : len(ids)] = t
        m[i, : len(ids)] = 1
        s = 1 if loss_on == "all" else start
        y[i, s : len(ids)] = t[s:]
        for j in range(start, min(len(ids), start + first_token_count)):
            first.append((i, j - 1))
    tgt = y[:, 1:]
    keep = tgt != -100
    valid = keep.float()
    if first_token_weight != 1.0 and first:  # the answer-or-refuse token of every example
        valid[tuple(torch.tensor(first).T)] = first_token_weight
    if logits == "supervised":  # the head only where the loss is
        h = model.get_decoder()(input_ids=x, attention_mask=m).last_hidden_state[:, :-1]
        nll_k = torch.nn.functional.cross_entropy(
            model.get_output_embeddings()(h[keep]).float(), tgt[keep], reduction="none"
        )
        nll = torch.zeros(tgt.shape, dtype=nll_k.dtype).masked_scatter(keep, nll_k)
    else:
        out = model(input_ids=x, attention_mask=m).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(out.transpose(1, 2), tgt, ignore_index=-100, reduction="none")
    if loss_on == "all":  # token mean
        if scale is None:
            return (nll * valid).sum() / valid.sum().clamp(min=1)
        return (nll * valid).sum() / scale
    # example mean: a two-token answer weighs as much as a sixty-token one
    per_example = (nll * valid).sum(1) / valid.sum(1).clamp(min=1)
    return per_example.mean() if scale is None else per_example.sum() / scale


#: padding-free token slots one extra forward/backward pass is worth (its fixed cost; round 15, bench_length_split)
SPLIT_OVERHEAD_TOKENS = 256


def length_groups(lengths: list[int], max_groups: int, overhead: int | None = None) -> list[list[int]]:
    """Indices of ``lengths`` cut into at most ``max_groups`` runs of the length-sorted order, minimising the padded
    token slots (each run padded to its longest) plus ``overhead`` per run (default
    :data:`SPLIT_OVERHEAD_TOKENS`; exact dynamic programme).

    Returns:
        the runs, each a list of indices into ``lengths``; one run (the whole batch, in its order) when splitting
        does not pay.
    """
    n = len(lengths)
    overhead = SPLIT_OVERHEAD_TOKENS if overhead is None else overhead
    if max_groups <= 1 or n <= 1:
        return [list(range(n))]
    order = sorted(range(n), key=lambda i: lengths[i])
    srt = [lengths[i] for i in order]
    inf = float("inf")
    # best[k][j]: cost of the first j sorted items in k runs; a run i..j-1 costs (j - i) * srt[j - 1] + overhead
    best = [[inf] * (n + 1) for _ in range(max_groups + 1)]
    cut = [[0] * (n + 1) for _ in range(max_groups + 1)]
    best[0][0] = 0.0
    for k in range(1, max_groups + 1):
        for j in range(1, n + 1):
            for i in range(k - 1, j):
                c = best[k - 1][i] + (j - i) * srt[j - 1] + overhead
                if c < best[k][j]:
                    best[k][j], cut[k][j] = c, i
    k = min(range(1, max_groups + 1), key=lambda k: best[k][n])
    if k == 1:
        return [list(range(n))]
    runs, j = [], n
    while k > 0:
        i = cut[k][j]
        runs.append(order[i:j])
        j, k = i, k - 1
    return runs[::-1]
