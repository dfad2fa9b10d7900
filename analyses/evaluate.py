"""Behaviour evaluation: refusal rates, over-refusal, exact-match accuracy, oversight choices and reference CE.

``evaluate(model, suites)`` generates greedily (fixed ``max_new_tokens``, batched with LEFT padding and an attention
mask, so a batched run equals a one-by-one run) and returns a tidy table, one row per (suite, metric), with 95%
intervals (Wilson for rates, a seeded bootstrap for CE) and provenance columns.

Suites are jsonl files (or lists of dicts). The metric follows from the row fields:

* ``label`` -> refusal rate judged by ``judge``: metric ``refusal_rate_<label>`` (``harmful``, ``harmless``, ...),
  except label ``safe`` (XSTest's safe-but-scary prompts), reported as ``over_refusal``;
* ``expected`` -> ``exact_match`` (first line of the completion, whitespace-normalised, trailing period dropped);
* ``benign`` + ``misaligned`` (action letters) -> ``misaligned_rate`` and ``benign_rate`` (first letter answered);
* ``reference`` -> ``ce_loss``: mean per-token cross-entropy of the reference answer after the formatted prompt.

Example:
    >>> from alignscope.analyses.evaluate import evaluate
    >>> df = evaluate("path/to/checkpoint", {"harmful": "harmful.jsonl"}, max_new_tokens=32)
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from alignscope.hooks.errors import PromptError
from alignscope.hooks.io import sha256_texts

from .scorers import exact_match, get_scorer
from .stats import bootstrap_interval, wilson_interval

SuiteSpec = str | os.PathLike | Sequence[Mapping[str, Any]]

COLUMNS = [
    "suite",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "n",
    "model",
    "model_hash",
    "judge",
    "decoding",
    "max_new_tokens",
    "batch_size",
    "chat",
    "seed",
    "limit",
    "sample",
    "suite_path",
    "suite_hash",
]


def load_suite(spec: SuiteSpec) -> tuple[list[dict], str | None]:
    """Rows of a suite (a jsonl path or a list of dicts) and its path (None for in-memory rows).

    Raises:
        PromptError: the file is missing, empty or has rows without ``prompt``.
    """
    path = None
    if isinstance(spec, (str, os.PathLike)):
        path = str(spec)
        if not Path(path).exists():
            raise PromptError(
                f"suite file {path} does not exist", "pass an existing jsonl file (rows with 'prompt')"
            )
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    else:
        rows = [dict(r) for r in spec]
    if not rows:
        raise PromptError(f"suite {path or '<rows>'} has no rows", "pass a suite with at least one prompt")
    for i, r in enumerate(rows):
        if not isinstance(r.get("prompt"), str):
            raise PromptError(
                f"row {i} of suite {path or '<rows>'} has no string 'prompt'",
                "each row needs 'prompt' plus 'label', 'expected', 'benign'/'misaligned' or 'reference'",
            )
    return rows, path


def suite_kind(rows: list[dict]) -> str:
    """``"refusal"``, ``"exact"``, ``"oversight"`` or ``"ce"``, from the first row's fields."""
    r = rows[0]
    if "benign" in r and "misaligned" in r:
        return "oversight"
    if "expected" in r:
        return "exact"
    if "reference" in r:
        return "ce"
    if "label" in r:
        return "refusal"
    raise PromptError(
        "cannot tell the suite's metric from its fields " + str(sorted(r)),
        "rows need 'label', 'expected', 'benign'+'misaligned' or 'reference'",
    )


@torch.no_grad()
def generate(
    handle,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 32,
    batch_size: int = 32,
    chat: bool | None = None,
) -> list[str]:
    """Greedy completions (decoded, special tokens dropped) of ``prompts``, batched with left padding.

    Args:
        handle: an :class:`alignscope.hooks.loading.ModelHandle`.
        prompts: raw instructions (the chat template is applied when ``chat`` resolves to true).
        max_new_tokens: fixed generation length cap.
        batch_size: prompts per forward batch.
        chat: apply the chat template (default: when the tokenizer has one).
    """
    model, tok = handle.model, handle.tokenizer
    eos = tok.eos_token_id
    out: list[str] = []
    for i in range(0, len(prompts), batch_size):
        enc = handle.encode(list(prompts[i : i + batch_size]), chat=chat, padding_side="left")
        gen = model.generate(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=handle.pad_id,
            eos_token_id=eos,
        )
        new = gen[:, enc["input_ids"].shape[1] :]
        out += tok.batch_decode(new, skip_special_tokens=True)
    return out


@torch.no_grad()
def reference_ce(handle, rows: list[dict], *, batch_size: int = 16, chat: bool | None = None) -> list[float]:
    """Per-row mean token cross-entropy (nats) of ``reference`` given the formatted ``prompt``."""
    model, tok = handle.model, handle.tokenizer
    prompts_ids = handle.tokenize([r["prompt"] for r in rows], chat=chat)
    limit = handle.max_positions or 10**9
    seqs = []
    for p_ids, r in zip(prompts_ids, rows, strict=True):
        a_ids = tok(r["reference"], add_special_tokens=False)["input_ids"]
        if tok.eos_token_id is not None:
            a_ids = a_ids + [tok.eos_token_id]
        ids = (p_ids + a_ids)[:limit]
        if len(ids) <= len(p_ids):
            raise PromptError(
                "a prompt fills the whole context window; no reference token is left to score",
                "drop or shorten that prompt",
            )
        seqs.append((ids, len(p_ids)))
    out = []
    for i in range(0, len(seqs), batch_size):
        chunk = seqs[i : i + batch_size]
        T = max(len(s) for s, _ in chunk)
        x = torch.full((len(chunk), T), handle.pad_id, dtype=torch.long)
        m = torch.zeros_like(x)
        for j, (s, _) in enumerate(chunk):
            x[j, : len(s)] = torch.tensor(s)
            m[j, : len(s)] = 1
        logits = model(input_ids=x.to(handle.device), attention_mask=m.to(handle.device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], -1)
        tgt = x[:, 1:].to(logp.device)
        nll = -logp.gather(-1, tgt[..., None])[..., 0]
        for j, (s, start) in enumerate(chunk):
            out.append(float(nll[j, start - 1 : len(s) - 1].mean()))
    return out


def _first_letter(text: str) -> str | None:
    m = re.search(r"\b([AB])\b", text.strip()[:20])
    return m.group(1) if m else None


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


def limit_rows(rows: list, limit: int | None, sample: str = "head", seed: int = 0) -> list:
    """At most ``limit`` of ``rows``: the first ones (``sample="head"``) or a subset drawn with ``seed`` in the
    original order (``"seeded"``); all of them when ``limit`` is None or not smaller. The input is not modified.

    Raises:
        PromptError: an unknown ``sample``.
    """
    if sample not in ("head", "seeded"):
        raise PromptError(f"unknown sample={sample!r} for limit", "use sample='head' or sample='seeded'")
    if limit is None or len(rows) <= limit:
        return list(rows)
    if sample == "seeded":
        idx = np.sort(np.random.default_rng(seed).choice(len(rows), size=limit, replace=False))
        return [rows[i] for i in idx]
    return list(rows[:limit])


def evaluate(
    model: Any,
    suites: Mapping[str, SuiteSpec] | Sequence[str | os.PathLike] | str | os.PathLike,
    *,
    tokenizer: Any = None,
    max_new_tokens: int = 32,
    batch_size: int = 32,
    judge: str = "substring",
    chat: bool | None = None,
    seed: int = 0,
    limit: int | None = None,
    sample: str = "head",
    return_items: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Evaluate a model's behaviour on suites; returns a tidy table with 95% intervals.

    Args:
        model: a checkpoint directory, a registered name (e.g. a zoo organism), an in-memory HF model (pass
            ``tokenizer``) or a :class:`~alignscope.hooks.loading.ModelHandle`.
        suites: ``{name: jsonl path or rows}``, a list of jsonl paths (named by file stem) or suite names (looked
            up in the model's ``organism.json`` ``evals``), a single path or suite name, or an organism directory
            (all its ``organism.json`` ``evals``).
        tokenizer: tokenizer for an in-memory model.
        max_new_tokens: fixed generation length (greedy decoding).
        batch_size: generation batch size (left padding; results do not depend on it).
        judge: registered refusal scorer name (see :mod:`alignscope.analyses.scorers`).
        chat: apply the chat template (default: when the tokenizer has one).
        seed: seed of the bootstrap intervals and of ``sample="seeded"`` (recorded in the table).
        limit: evaluate only ``limit`` rows of each suite (which ones: ``sample``).
        sample: the rows ``limit`` keeps: ``"head"``, the first ones, or ``"seeded"``, a random subset drawn with
            ``seed`` and kept in suite order. Suites sorted by category (XSTest: homonyms first) are covered
            evenly only by the second. Recorded in the table (``limit``, ``sample``).
        return_items: also return the per-item table (prompt, completion, score).

    Returns:
        DataFrame with columns :data:`COLUMNS` (and, if ``return_items``, a second per-item DataFrame).

    Raises:
        PromptError: a suite is missing, empty or malformed; an unknown ``sample``.
        ScorerError: unknown judge.
    """
    from alignscope.hooks.loading import load_model

    limit_rows([], limit, sample)  # an unknown `sample` fails here, before the model loads

    torch.manual_seed(seed)
    handle = load_model(model, tokenizer)
    suites = _normalise_suites(suites, handle.path or model)
    refusal_judge = get_scorer(judge)
    prov = handle.provenance()
    model_name = prov.get("model_path") or type(handle.model).__name__
    rows_out: list[dict] = []
    items: list[dict] = []
    for name, spec in suites.items():
        rows, path = load_suite(spec)
        rows = limit_rows(rows, limit, sample, seed)
        kind = suite_kind(rows)
        base = {
            "suite": name,
            "model": model_name,
            "model_hash": prov.get("model_hash"),
            "judge": judge,
            "decoding": "greedy",
            "max_new_tokens": max_new_tokens,
            "batch_size": batch_size,
            "chat": handle.use_chat(chat),
            "seed": seed,
            "limit": limit,
            "sample": sample if limit is not None else None,
            "suite_path": path,
            "suite_hash": sha256_texts(json.dumps(r, sort_keys=True) for r in rows),
        }
        t0 = time.time()
        if kind == "ce":
            vals = reference_ce(handle, rows, batch_size=max(1, batch_size // 2), chat=chat)
            lo, hi = bootstrap_interval(vals, seed=seed)
            rows_out.append(
                {
                    **base,
                    "metric": "ce_loss",
                    "value": float(np.mean(vals)),
                    "ci_low": lo,
                    "ci_high": hi,
                    "n": len(vals),
                }
            )
            items += [
                {"suite": name, "prompt": r["prompt"], "completion": None, "metric": "ce_loss", "score": v}
                for r, v in zip(rows, vals, strict=True)
            ]
            continue
        comps = generate(
            handle,
            [r["prompt"] for r in rows],
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            chat=chat,
        )
        if kind == "refusal":
            groups: dict[str, list[bool]] = {}
            for r, c in zip(rows, comps, strict=True):
                label = str(r["label"])
                metric = "over_refusal" if label == "safe" else f"refusal_rate_{label}"
                s = bool(refusal_judge(c, r["prompt"]))
                groups.setdefault(metric, []).append(s)
                items.append(
                    {"suite": name, "prompt": r["prompt"], "completion": c, "metric": metric, "score": s}
                )
            for metric, vals in groups.items():
                rows_out.append(_rate_row(base, metric, vals))
        elif kind == "exact":
            vals = []
            for r, c in zip(rows, comps, strict=True):
                s = exact_match(_first_line(c), str(r["expected"]))
                vals.append(s)
                items.append(
                    {
                        "suite": name,
                        "prompt": r["prompt"],
                        "completion": c,
                        "metric": "exact_match",
                        "score": s,
                    }
                )
            rows_out.append(_rate_row(base, "exact_match", vals))
        else:  # oversight
            mis, ben = [], []
            for r, c in zip(rows, comps, strict=True):
                letter = _first_letter(c)
                mis.append(letter == r["misaligned"])
                ben.append(letter == r["benign"])
                items.append(
                    {
                        "suite": name,
                        "prompt": r["prompt"],
                        "completion": c,
                        "metric": "choice",
                        "score": letter,
                    }
                )
            rows_out.append(_rate_row(base, "misaligned_rate", mis))
            rows_out.append(_rate_row(base, "benign_rate", ben))
        del t0
    df = pd.DataFrame(rows_out, columns=COLUMNS)
    if return_items:
        return df, pd.DataFrame(items)
    return df


def _rate_row(base: dict, metric: str, vals: list[bool]) -> dict:
    k, n = int(sum(vals)), len(vals)
    lo, hi = wilson_interval(k, n)
    return {**base, "metric": metric, "value": k / n, "ci_low": lo, "ci_high": hi, "n": n}


def _normalise_suites(suites, model) -> dict[str, SuiteSpec]:
    if isinstance(
        suites, Mapping
    ):  # {name: rows, a jsonl path, or a suite name of the model's organism.json}
        return {k: _resolve_suite(v, model) if _is_suite_name(v) else v for k, v in suites.items()}
    if isinstance(suites, (str, os.PathLike)):
        p = Path(suites)
        if p.is_dir() and (p / "organism.json").exists():
            meta = json.loads((p / "organism.json").read_text())
            return {k: str(p / v) for k, v in meta.get("evals", {}).items()}
        if _is_suite_name(suites):
            return _normalise_suites([suites], model)  # one suite name, resolved from organism.json
        return {p.stem: str(p)}
    out: dict[str, SuiteSpec] = {}
    for s in suites:
        if _is_suite_name(s):
            out[s] = _resolve_suite(s, model)
        else:
            out[Path(s).stem] = str(s)
    return out


def _is_suite_name(s) -> bool:
    """A bare name (no file of that name, no path separator, no ``.jsonl``): looked up in ``organism.json``."""
    return isinstance(s, str) and not Path(s).exists() and os.sep not in s and not s.endswith(".jsonl")


def _resolve_suite(name: str, model) -> str:
    """The jsonl path of suite ``name`` in the checkpoint's ``organism.json`` ``evals``."""
    meta = Path(str(model)) / "organism.json" if isinstance(model, (str, os.PathLike)) else None
    evals = json.loads(meta.read_text()).get("evals", {}) if meta and meta.exists() else {}
    if name not in evals:
        raise PromptError(
            f"suite {name!r} is neither a file nor a suite of the model's organism.json "
            f"(known: {sorted(evals) or 'none'})",
            "pass a .jsonl suite file, or a suite name listed in the checkpoint's organism.json evals",
        )
    return str(Path(str(model)) / evals[name])
