"""Gradient-guided weight restoration with rollback (Yang et al., "Alleviating the Fear of Losing Alignment in LLM
Fine-tuning", IEEE S&P 2025; papers.md section 1, pseudo-code P1).

A fine-tuned model ``M_F`` has lost some of the aligned model ``M_A``'s refusal behaviour. ``restore`` copies a small,
gradient-selected fraction of ``M_A``'s weights back into a working copy ``M_W`` of ``M_F``:

1. Representation ``h(x)``: raw output of decoder block ``layer_end - 1`` (no final norm, i.e. the paper's *truncated*
   model) at the last prompt token, prompts chat-formatted and LEFT padded. Implemented by stopping the forward pass
   with a hook right after block ``layer_end - 1`` (same numbers as truncating; nothing after it is computed).
2. ``t_harm`` = mean ``h_{M_A}`` over the harmful (recovery) prompts, ``t_benign`` = mean ``h_{M_F}`` over the task
   prompts (float64 accumulation).
3. One step: ``loss = -cos(mean_B h_{M_W}(x), t_harm)`` per batch ``B``, gradients summed over batches; an entry of an
   eligible weight is a candidate iff ``sign(W_W - W_A) == sign(grad)`` (a gradient step would move it toward
   ``M_A``); the ``k = ceil(rate * n_param)`` candidates of largest ``|grad|`` pooled over all eligible tensors are
   selected (strict ``> tau`` as the authors' code) and set to ``M_A``'s exact values.
4. Rollback pass (rollback mode): gradients of ``-cos(mean h_{M_W}(task batch), t_benign)``; among this step's
   restored entries whose move back to ``M_F`` is a descent direction, the top ``ceil(rollback_rate * #)`` by
   ``|grad|`` get ``M_F``'s values back.
5. Outer loop: task floor ``min_score = task_metric(M_F) * (1 - metric_drop)``; ``warmup_steps`` plain steps; if the
   task metric is then below the floor, restart from ``M_F`` and run all ``steps`` with a rollback pass after each;
   otherwise continue plainly. The task metric is evaluated every ``save_step`` steps; the returned model is the
   last evaluated step before the first one below the floor (the last step if none is).

Eligible weights: every parameter of blocks ``0 .. layer_end-1`` except norms (names containing ``norm`` or GPT-2's
``ln_``); embeddings, final norm and LM head are never touched.

Deviations from the authors' code (all fixes of pitfalls listed in papers.md 1.e; each is a knob where it matters):

* ``n_param`` (the per-step budget base) counts the *eligible* parameters (``budget="eligible"``, default), so
  ``recovery_rate`` is the real per-step fraction of the weights that can change. The authors count every parameter
  of every hidden layer of the full model (norms and layers >= layer_end included): ``budget="paper"``.
* Fewer than ``k`` candidates: all candidates are restored (the authors' ``torch.topk`` raises); logged as
  ``short_of_k``.
* The very first evaluated step already below the floor (the authors raise "Not implemented"): every step's
  restored set is kept (as a bit mask: each weight entry is always either ``M_F``'s or ``M_A``'s value), so the
  steps before the first evaluation are evaluated one by one and the last one meeting the floor is returned; if even
  step 1 violates it, step 0 (= ``M_F`` unchanged) is returned and the report says ``"status": "no_step_meets_floor"``.
* Floor test: ``score < min_score`` everywhere (the authors use ``<`` after warm-up and ``<=`` when picking the step).
* Gradient accumulation: in plain (no-rollback) mode gradients accumulate across steps, as in the authors' code
  (``accumulate_grads=True``, default; already-restored entries have ``W_W - W_A = 0`` and cannot be re-selected, so
  the accumulated gradient only re-ranks the rest); in rollback mode each step's harmful gradient is fresh and the
  rollback gradient is computed from zero (as the authors' ``zero_grad`` calls). Gradients are kept in private
  buffers, so a ``task_metric`` that runs backward passes cannot disturb them.
* The task metric is computed during the run at each evaluation step rather than afterwards from saved directories
  (same numbers, no intermediate checkpoints on disk).

Outputs (all written into a temp directory renamed onto ``out`` at the end: an interrupted run leaves nothing):
``out/`` is a loadable HF checkpoint (config, safetensors, tokenizer) plus ``out/restoration/steps.jsonl`` (one
record per step and per evaluation) and ``out/restoration/report.json`` (hyper-parameters, seeds, provenance and
hashes of both inputs and the prompt sets, the chosen step and its scores). Inputs are never modified.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from alignscope.hooks import ModelHandle, load_model
from alignscope.hooks.errors import CheckpointError, PromptError
from alignscope.hooks.io import atomic_dir, atomic_write_json, read_prompts, sha256_texts
from alignscope.hooks.version import __version__

TaskMetric = Callable[[ModelHandle], float]


@dataclass
class RestorationResult:
    """What :func:`restore` returns.

    Attributes:
        out: the restored checkpoint directory (loadable with ``load_model``).
        model: the restored model (in memory, a new :class:`ModelHandle`; ``path`` = ``out``).
        final_step: the step whose weights were written (0 = the fine-tuned model unchanged).
        mode: ``"plain"`` or ``"rollback"``.
        report: the content of ``out/restoration/report.json``.
        log: the records of ``out/restoration/steps.jsonl``.
    """

    out: Path
    model: ModelHandle
    final_step: int
    mode: str
    report: dict
    log: list[dict] = field(default_factory=list)


class _Stop(Exception):
    """Raised by the truncation hook once block ``layer_end - 1`` has run."""


def default_layer_end(n_layers: int) -> int:
    """``floor(2 L / 3)`` (at least 1): reproduces the authors' ``layer_end_mapping`` for all eight models listed
    (21/32, 26/40, 12/18, 18/28, 42/64)."""
    return max(1, (2 * n_layers) // 3)


# ----------------------------------------------------------------------------------------------------------------
def truncated_rep(handle: ModelHandle, model: torch.nn.Module, enc: dict, layer_end: int) -> torch.Tensor:
    """``[B, d]`` raw output of block ``layer_end - 1`` at the last position (left padding: the last prompt token).

    The forward pass stops right after that block (equal to the authors' truncated model with identity norm/head).
    Gradients flow when called outside ``no_grad``.
    """
    block = handle.adapter.blocks(model)[layer_end - 1]
    store: dict[str, torch.Tensor] = {}

    def hook(_mod, _inp, out):
        store["h"] = out[0] if isinstance(out, tuple) else out
        raise _Stop

    hk = block.register_forward_hook(hook)
    try:
        model(**enc, use_cache=False)
    except _Stop:
        pass
    finally:
        hk.remove()
    if "h" not in store:
        raise RuntimeError(f"block {layer_end - 1} did not run during the forward pass")
    return store["h"][:, -1, :]


def _batches(prompts: Sequence[str], bs: int) -> list[list[str]]:
    return [list(prompts[i : i + bs]) for i in range(0, len(prompts), bs)]


@torch.no_grad()
def mean_rep(
    handle: ModelHandle,
    prompts: Sequence[str],
    layer_end: int,
    *,
    batch_size: int = 8,
    chat: bool | None = None,
) -> torch.Tensor:
    """Mean truncated representation (float64 accumulation, returned float32)."""
    total = None
    n = 0
    for b in _batches(prompts, batch_size):
        enc = handle.encode(b, chat=chat, padding_side="left")
        h = truncated_rep(handle, handle.model, enc, layer_end).double()
        total = h.sum(0) if total is None else total + h.sum(0)
        n += h.shape[0]
    return (total / n).float()


def eligible_names(handle: ModelHandle, layer_end: int) -> list[str]:
    """Parameter names of blocks ``< layer_end`` that are not norms (the set ``P`` of the paper)."""
    prefix = handle.adapter.layers
    names = []
    for i in range(layer_end):
        for n, _ in handle.adapter.blocks(handle.model)[i].named_parameters():
            if "norm" in n or n.startswith("ln_") or ".ln_" in n:
                continue
            names.append(f"{prefix}.{i}.{n}")
    return names


def check_compatible(a: ModelHandle, b: ModelHandle, what: str = "fine-tuned") -> None:
    """Refuse two models that do not share architecture, parameter names and shapes.

    Raises:
        CheckpointError: naming the first mismatch and the fix.
    """
    fix = (
        f"pass the {what} model derived from this aligned model (same architecture and config; "
        "merge LoRA adapters first, load_model does it for adapter directories)"
    )
    ta, tb = a.model.config.model_type, b.model.config.model_type
    if ta != tb:
        raise CheckpointError(f"architectures differ: aligned is {ta!r}, {what} is {tb!r}", fix)
    sa = dict(a.model.named_parameters())
    sb = dict(b.model.named_parameters())
    missing = sorted(set(sa) - set(sb))
    extra = sorted(set(sb) - set(sa))
    if missing or extra:
        raise CheckpointError(
            f"parameter names differ: only in aligned {missing[:3]}, only in {what} {extra[:3]}", fix
        )
    for n, p in sa.items():
        if p.shape != sb[n].shape:
            raise CheckpointError(
                f"shape mismatch for {n}: aligned {tuple(p.shape)} vs {what} {tuple(sb[n].shape)}", fix
            )


def _as_prompts(x: Sequence[str] | str | Path, what: str, limit: int | None) -> list[str]:
    if isinstance(x, (str, Path)) and Path(x).exists():
        prompts = read_prompts(x)
    elif isinstance(x, (str, Path)):
        raise PromptError(
            f"{what} prompt file {x!r} does not exist", "pass a list of prompts or an existing file"
        )
    else:
        prompts = [str(p) for p in x]
    if not prompts:
        raise PromptError(f"no {what} prompts", f"pass at least one {what} prompt")
    return prompts[:limit] if limit else prompts


def _check_out(out: Path, *inputs: ModelHandle) -> None:
    o = out.resolve()
    for h in inputs:
        if h.path is None:
            continue
        p = Path(h.path).resolve()
        if o == p or p in o.parents or o in p.parents:
            raise CheckpointError(
                f"output directory {o} overlaps the input checkpoint {p}; restoration never writes into its inputs",
                "pass a new directory as out",
            )


# ----------------------------------------------------------------------------------------------------------------
class _Restorer:
    """State of one restoration run (private; see :func:`restore`)."""

    def __init__(self, aligned: ModelHandle, finetuned: ModelHandle, layer_end: int, batch_size: int, chat):
        self.A, self.F = aligned, finetuned
        self.layer_end, self.bs, self.chat = layer_end, batch_size, chat
        self.W = finetuned.copy(note="weights restored toward the aligned model (alignscope.restore)")
        self.W.model.eval()
        self.names = eligible_names(self.W, layer_end)
        wp = dict(self.W.model.named_parameters())
        ap = dict(self.A.model.named_parameters())
        fp = dict(self.F.model.named_parameters())
        eligible = set(self.names)
        for n, p in wp.items():
            p.requires_grad_(n in eligible)
        self.w = {n: wp[n] for n in self.names}
        self.a = {n: ap[n].detach() for n in self.names}
        self.f = {n: fp[n].detach() for n in self.names}
        self.acc = {n: torch.zeros_like(self.w[n]) for n in self.names}
        self.passes = {"forward": 0, "backward": 0}

    def reset_to_finetuned(self) -> None:
        with torch.no_grad():
            for n in self.names:
                self.w[n].copy_(self.f[n])
        self.zero()

    def zero(self) -> None:
        for t in self.acc.values():
            t.zero_()

    def grads(self, prompts: list[str], target: torch.Tensor) -> float:
        """Add the gradient of ``sum_B -cos(mean_B h, target)`` to the private buffers; returns the mean cosine."""
        cos_sum, nb = 0.0, 0
        model = self.W.model
        for b in _batches(prompts, self.bs):
            enc = self.W.encode(b, chat=self.chat, padding_side="left")
            with torch.enable_grad():
                h = truncated_rep(self.W, model, enc, self.layer_end)
                cos = F.cosine_similarity(h.float().mean(0), target.to(h.dtype), dim=0)
                (-cos).backward()
            self.passes["forward"] += 1
            self.passes["backward"] += 1
            cos_sum += float(cos.detach())
            nb += 1
            with torch.no_grad():
                for n in self.names:
                    g = self.w[n].grad
                    if g is not None:
                        self.acc[n].add_(g)
                        self.w[n].grad = None
        model.zero_grad(set_to_none=True)
        return cos_sum / max(nb, 1)

    @torch.no_grad()
    def select(
        self,
        target: dict[str, torch.Tensor],
        k_rate: float | None,
        k_abs: int | None,
        within: dict[str, torch.Tensor] | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict]:
        """Sign-agreement candidates (optionally within a mask), global top-|g| threshold, copy-back of ``target``."""
        sel = {}
        for n in self.names:
            g = self.acc[n]
            delta = self.w[n] - target[n]
            s = (torch.sign(delta) == torch.sign(g)) & (delta != 0) & (g != 0)
            if within is not None:
                s &= within[n]
            sel[n] = s
        n_cand = int(sum(int(s.sum()) for s in sel.values()))
        k = k_abs if k_abs is not None else math.ceil((k_rate or 0.0) * n_cand)
        info: dict[str, Any] = {"n_candidates": n_cand, "k": int(k), "short_of_k": n_cand <= k}
        if n_cand == 0 or k <= 0:
            masks = {n: torch.zeros_like(s) for n, s in sel.items()}
            info["tau"] = None
        elif n_cand <= k:  # pitfall fix: fewer candidates than the budget -> take them all
            masks = sel
            info["tau"] = 0.0
        else:
            vals = torch.cat([self.acc[n].abs()[sel[n]].flatten() for n in self.names])
            tau = torch.topk(vals, k, sorted=False).values.min()
            info["tau"] = float(tau)
            masks = {n: sel[n] & (self.acc[n].abs() > tau) for n in self.names}
        n_set = 0
        for n in self.names:
            m = masks[n]
            c = int(m.sum())
            if c:
                self.w[n].data[m] = target[n][m]
                n_set += c
        info["n_set"] = n_set
        return masks, info

    @torch.no_grad()
    def restored_bits(self) -> dict[str, np.ndarray]:
        """Packed bit masks of entries currently holding the aligned value where it differs from the fine-tuned."""
        out = {}
        for n in self.names:
            m = (self.w[n] != self.f[n]).flatten().cpu().numpy()
            out[n] = np.packbits(m)
        return out

    @torch.no_grad()
    def load_bits(self, bits: dict[str, np.ndarray]) -> None:
        for n in self.names:
            w = self.w[n]
            m = np.unpackbits(bits[n], count=w.numel()).astype(bool)
            m = torch.from_numpy(m).view_as(w).to(w.device)
            w.copy_(torch.where(m, self.a[n], self.f[n]))

    @torch.no_grad()
    def fraction_restored(self) -> float:
        tot = sum(self.w[n].numel() for n in self.names)
        return sum(int((self.w[n] != self.f[n]).sum()) for n in self.names) / max(tot, 1)


# ----------------------------------------------------------------------------------------------------------------
def restore(
    aligned: Any,
    finetuned: Any,
    harmful_prompts: Sequence[str] | str | Path,
    task_prompts: Sequence[str] | str | Path,
    *,
    task_metric: TaskMetric | None,
    out: str | Path,
    recovery_rate: float = 0.002,
    steps: int = 20,
    warmup_steps: int = 5,
    rollback_rate: float = 0.2,
    metric_drop: float = 0.05,
    layer_end: int | None = None,
    save_step: int = 5,
    seed: int = 42,
    rollback: str = "auto",
    budget: str = "eligible",
    accumulate_grads: bool = True,
    recovery_size: int | None = 256,
    batch_size: int = 8,
    chat: bool | None = None,
    progress: bool | Callable[[dict], None] = False,
) -> RestorationResult:
    """Restore a fine-tuned model's safety by copying back gradient-selected aligned weights (papers.md §1).

    Args:
        aligned: the aligned model ``M_A`` (path, registered name, HF model or :class:`ModelHandle`; never modified).
        finetuned: the fine-tuned model ``M_F`` (same architecture and shapes; never modified).
        harmful_prompts: recovery prompts (list or prompt file); the first ``recovery_size`` are used.
        task_prompts: downstream-task prompts for ``t_benign`` and the rollback pass (first ``recovery_size``).
        task_metric: ``f(handle) -> float``, higher is better (e.g. task accuracy). ``None``: no utility floor, no
            rollback (``rollback="auto"``), the last step is returned.
        out: the new checkpoint directory (must not overlap the inputs; replaced atomically if it exists).
        recovery_rate: per-step fraction ``k / n_param`` (paper 0.002).
        steps: total restoration steps (paper 20).
        warmup_steps: plain steps before the rollback decision (paper 5).
        rollback_rate: fraction of each step's restored candidates rolled back (paper 0.2).
        metric_drop: allowed relative drop of the task metric (paper 0.05).
        layer_end: blocks used (representation = output of block ``layer_end - 1``); default ``floor(2L/3)``.
        save_step: evaluate the task metric every this many steps (paper 5).
        seed: torch seed (recorded; the algorithm itself is deterministic given the prompts).
        rollback: ``"auto"`` (paper: rollback restart iff the metric is below the floor after warm-up),
            ``"always"`` or ``"never"``.
        budget: ``"eligible"`` (n_param = eligible parameters, default) or ``"paper"`` (all hidden-layer params).
        accumulate_grads: accumulate harmful gradients across plain steps (authors' behaviour).
        recovery_size: how many prompts of each set are used (paper 256).
        batch_size: prompts per gradient batch (paper driver 8).
        chat: apply the chat template (default: when the tokenizer has one, as the paper).
        progress: True prints one line per step; a callable receives each log record.

    Returns:
        A :class:`RestorationResult`.

    Raises:
        CheckpointError: mismatched architectures/shapes, ``out`` overlapping an input, bad ``layer_end``.
        PromptError: empty prompt sets.
        ValueError: bad knob values.
    """
    if rollback not in ("auto", "always", "never"):
        raise ValueError("rollback must be 'auto', 'always' or 'never'")
    if budget not in ("eligible", "paper"):
        raise ValueError("budget must be 'eligible' or 'paper'")
    if not 0 < recovery_rate <= 1 or not 0 <= rollback_rate <= 1 or steps < 1 or save_step < 1:
        raise ValueError("need 0 < recovery_rate <= 1, 0 <= rollback_rate <= 1, steps >= 1, save_step >= 1")
    t_start = time.time()
    torch.manual_seed(seed)
    A = load_model(aligned)
    Fh = load_model(finetuned)
    check_compatible(A, Fh)
    out = Path(out)
    _check_out(out, A, Fh)
    L = Fh.n_layers
    layer_end = default_layer_end(L) if layer_end is None else int(layer_end)
    if not 1 <= layer_end <= L:
        raise CheckpointError(f"layer_end={layer_end} is outside 1..{L}", f"pass 1 <= layer_end <= {L}")
    harm = _as_prompts(harmful_prompts, "harmful", recovery_size)
    task = _as_prompts(task_prompts, "task", recovery_size)

    a_hash, f_hash = A.model_hash, Fh.model_hash
    R = _Restorer(A, Fh, layer_end, batch_size, chat)
    n_eligible = sum(R.w[n].numel() for n in R.names)
    if budget == "eligible":
        n_param = n_eligible
    else:
        n_param = sum(p.numel() for b in Fh.adapter.blocks(Fh.model) for p in b.parameters())
    k = math.ceil(n_param * recovery_rate)

    t_harm = mean_rep(A, harm, layer_end, batch_size=batch_size, chat=chat)
    t_benign = mean_rep(Fh, task, layer_end, batch_size=batch_size, chat=chat)
    log: list[dict] = []
    say = progress if callable(progress) else (print if progress else None)

    def record(rec: dict) -> None:
        rec = {"t": round(time.time() - t_start, 3), **rec}
        log.append(rec)
        if say is not None:
            say(rec if callable(progress) else json.dumps(rec))

    @torch.no_grad()
    def cos_to(handle: ModelHandle, prompts: list[str], t: torch.Tensor) -> float:
        h = mean_rep(handle, prompts, layer_end, batch_size=batch_size, chat=chat)
        return float(F.cosine_similarity(h, t, dim=0))

    def metric(handle: ModelHandle) -> float:
        return float(task_metric(handle))  # type: ignore[misc]

    s0 = metric(Fh) if task_metric is not None else None
    min_score = None if s0 is None else s0 * (1 - metric_drop)
    cos0 = cos_to(Fh, harm, t_harm)
    record(
        {
            "event": "start",
            "task_score": s0,
            "min_score": min_score,
            "cos_harm": cos0,
            "k": k,
            "n_param": n_param,
            "n_eligible": n_eligible,
            "layer_end": layer_end,
        }
    )

    snapshots: dict[int, dict[str, np.ndarray]] = {0: R.restored_bits()}
    scores: dict[int, float] = {} if s0 is None else {0: s0}

    def one_step(step: int, mode: str) -> None:
        if mode == "rollback" or not accumulate_grads:
            R.zero()
        cos_before = R.grads(harm, t_harm)
        masks, info = R.select(R.a, None, k)
        rec = {"event": "step", "step": step, "mode": mode, "cos_harm_before": cos_before, **info}
        if mode == "rollback":
            R.zero()
            R.grads(task, t_benign)
            _, rinfo = R.select(R.f, rollback_rate, None, within=masks)
            R.zero()
            rec.update({f"rollback_{kk}": v for kk, v in rinfo.items()})
        rec["fraction_restored"] = R.fraction_restored()
        if step <= save_step or step % save_step == 0 or step == steps:  # bounded memory
            snapshots[step] = R.restored_bits()
        record(rec)

    def evaluate(step: int) -> float | None:
        if task_metric is None:
            return None
        s = metric(R.W)
        scores[step] = s
        record({"event": "eval", "step": step, "task_score": s, "below_floor": s < min_score})
        return s

    mode = "plain"
    if rollback == "always":
        mode = "rollback"
    n_warm = min(warmup_steps, steps) if rollback == "auto" and task_metric is not None else 0
    for step in range(1, n_warm + 1):
        one_step(step, "plain")
        if step % save_step == 0 and step != n_warm:
            evaluate(step)
    start = 1
    if n_warm:
        s_w = evaluate(n_warm)
        if s_w is not None and s_w < min_score:
            mode = "rollback"
            record({"event": "rollback_restart", "after_step": n_warm, "task_score": s_w})
            R.reset_to_finetuned()
            snapshots = {0: R.restored_bits()}
            scores = {0: s0}
        else:
            start = n_warm + 1
    for step in range(start, steps + 1):
        one_step(step, mode)
        if step % save_step == 0 or step == steps:
            evaluate(step)

    # choose the final step: the last evaluated step before the first one below the floor
    status = "ok"
    if task_metric is None:
        final = steps
    else:
        evaluated = sorted(scores)
        bad = [s for s in evaluated if s > 0 and scores[s] < min_score]
        if not bad:
            final = evaluated[-1]
        else:
            first_bad = bad[0]
            good_before = [s for s in evaluated if s < first_bad and scores[s] >= min_score]
            final = good_before[-1] if good_before else 0
            status = "floor_violated"
            if final == 0:
                # pitfall fix: the first evaluation already violates the floor -> search the steps before it
                for s in range(final + 1, first_bad):
                    if s not in snapshots:
                        break
                    R.load_bits(snapshots[s])
                    sc = evaluate(s)
                    if sc is None or sc < min_score:
                        break
                    final = s
            if final == 0:
                status = "no_step_meets_floor"
    R.load_bits(snapshots[final])
    final_score = scores.get(final)
    cos_final = cos_to(R.W, harm, t_harm)
    for p in R.W.model.parameters():
        p.requires_grad_(False)
        p.grad = None
    record(
        {
            "event": "final",
            "step": final,
            "status": status,
            "task_score": final_score,
            "cos_harm": cos_final,
            "fraction_restored": R.fraction_restored(),
        }
    )

    report = {
        "method": "gradient-guided weight restoration with rollback (Yang et al., S&P 2025; papers.md §1)",
        "alignscope_version": __version__,
        "torch_version": torch.__version__,
        "status": status,
        "final_step": final,
        "mode": mode,
        "task_score_finetuned": s0,
        "min_score": min_score,
        "task_score_final": final_score,
        "task_scores": {str(s): v for s, v in sorted(scores.items())},
        "cos_harm_finetuned": cos0,
        "cos_harm_final": cos_final,
        "fraction_restored": R.fraction_restored(),
        "n_restored": int(round(R.fraction_restored() * n_eligible)),
        "n_eligible": n_eligible,
        "n_param": n_param,
        "k_per_step": k,
        "passes": dict(R.passes),
        "hyperparameters": {
            "recovery_rate": recovery_rate,
            "steps": steps,
            "warmup_steps": warmup_steps,
            "rollback_rate": rollback_rate,
            "metric_drop": metric_drop,
            "layer_end": layer_end,
            "n_layers": L,
            "save_step": save_step,
            "seed": seed,
            "rollback": rollback,
            "budget": budget,
            "accumulate_grads": accumulate_grads,
            "recovery_size": recovery_size,
            "batch_size": batch_size,
            "chat": Fh.use_chat(chat),
            "representation": f"raw output of block {layer_end - 1}, last token, left padding",
            "padding_side": "left",
        },
        "eligible_tensors": len(R.names),
        "aligned": {**A.provenance(), "model_hash": a_hash},
        "finetuned": {**Fh.provenance(), "model_hash": f_hash},
        "harmful_prompts": {"n": len(harm), "sha256": sha256_texts(harm)},
        "task_prompts": {"n": len(task), "sha256": sha256_texts(task)},
        "wall_s": round(time.time() - t_start, 3),
    }
    with atomic_dir(out) as tmp:
        R.W.model.save_pretrained(tmp, safe_serialization=True)
        R.W.tokenizer.save_pretrained(tmp)
        (tmp / "restoration").mkdir()
        with open(tmp / "restoration" / "steps.jsonl", "w") as f:
            for rec in log:
                f.write(json.dumps(rec, default=str) + "\n")
        atomic_write_json(tmp / "restoration" / "report.json", report)
    R.W.path = str(out)
    R.W.source = "dir"
    R.W._hash = None
    return RestorationResult(out=out, model=R.W, final_step=final, mode=mode, report=report, log=log)
