"""Baseline interventions in one string-keyed registry, each with a scalar strength knob.

Two kinds:

* ``"runtime"``: ``fn(model, strength, **kw) -> EditHandle`` (a context manager; hooks removed on exit). Runtime
  interventions marked ``batched`` accept a ``[B]`` strength tensor, so a K-strength sweep runs as one batched pass.
* ``"weights"``: ``fn(model, strength, *, out=None, **kw) -> ModelHandle`` (a new model; the input is never
  touched; saved atomically when ``out`` is given).

:func:`intervened` hides the difference: ``with intervened("steer", model, 4.0, direction=d) as h: ...`` yields the
handle to evaluate (the same model with hooks, or the new model).

Built-ins (papers.md mapping):

====================  ========  ===========================================================================
name                  kind      strength
====================  ========  ===========================================================================
``revert``            weights   fraction of decoder blocks (from the bottom) reset to the aligned model; 1 =
                                full revert (embeddings, norms and head too): the model *is* ``aligned``
``interpolate``       weights   ``alpha``: ``W = (1 - a_l) W_ft + a_l W_aligned`` with ``a_l = alpha * s_l``
                                and a per-layer schedule ``s_l`` (model averaging of the alignment-tax work,
                                heterogeneous per-layer ratios)
``orthogonalize``     weights   ``s``: ``W <- W - s r r^T W`` on every residual-writing matrix (1 = Arditi's
                                weight orthogonalisation; negative ``s`` amplifies the direction)
``steer``             runtime   ``alpha`` of activation addition (``steer``); batched
``ablate``            runtime   ``s`` of partial directional ablation ``h <- h - s (h.r) r`` at every block
                                input, attention and MLP output; batched
``rahf``              weights   ``alpha`` of RAHF's representation target ``h_ref + alpha (h_pos - h_neg)``,
                                fitted with LoRA (papers.md §6, P6)
====================  ========  ===========================================================================
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from alignscope.hooks import AlignscopeError, ModelHandle, load_model
from alignscope.hooks.edits import combine, project_out

from .steering import steer
from .weights import _copy_handle, orthogonalize, save_checkpoint


class InterventionError(AlignscopeError, KeyError):
    """Unknown intervention name, a name registered twice, or missing arguments."""

    def __str__(self) -> str:
        return self.args[0]


@dataclass(frozen=True)
class Intervention:
    """A registered intervention.

    Attributes:
        name: registry key.
        kind: ``"runtime"`` (returns an EditHandle) or ``"weights"`` (returns a new ModelHandle).
        fn: the implementation ``fn(model, strength, **kw)``.
        batched: accepts a ``[B]`` tensor of per-row strengths (runtime only).
        neutral: the strength at which the intervention does nothing.
    """

    name: str
    kind: str
    fn: Callable[..., Any]
    batched: bool = False
    neutral: float = 0.0

    def __call__(self, model, strength, **kw):
        return self.fn(model, strength, **kw)


_REGISTRY: dict[str, Intervention] = {}


def register_intervention(
    name: str, *, kind: str, batched: bool = False, neutral: float = 0.0, overwrite: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn(model, strength, **kw)`` under ``name`` (decorator).

    Raises:
        InterventionError: the name is taken (and ``overwrite`` is false), or ``kind`` is unknown.
    """
    if kind not in ("runtime", "weights"):
        raise InterventionError(f"unknown intervention kind {kind!r}", "use 'runtime' or 'weights'")

    def deco(fn):
        if name in _REGISTRY and not overwrite and _REGISTRY[name].fn is not fn:
            raise InterventionError(
                f"an intervention named {name!r} is registered already", "pick another name"
            )
        _REGISTRY[name] = Intervention(name, kind, fn, batched and kind == "runtime", neutral)
        return fn

    return deco


def get_intervention(name: str | Intervention) -> Intervention:
    """The registered intervention ``name``.

    Raises:
        InterventionError: unknown name (the message lists the registered ones).
    """
    if isinstance(name, Intervention):
        return name
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InterventionError(
            f"unknown intervention {name!r}; registered: {sorted(_REGISTRY)}",
            "use a registered name or register yours with @register_intervention(name, kind=...)",
        ) from None


def list_interventions() -> list[str]:
    """Registered names, sorted."""
    return sorted(_REGISTRY)


@contextlib.contextmanager
def intervened(name: str | Intervention, model, strength, **kw) -> Iterator[ModelHandle]:
    """Apply an intervention for the duration of a ``with`` block and yield the model handle to evaluate.

    Runtime interventions hook ``model`` (removed on exit, also after an exception); weight interventions yield a
    new model (``model`` is never touched).
    """
    iv = get_intervention(name)
    handle = load_model(model)
    if iv.kind == "runtime":
        with iv.fn(handle, strength, **kw):
            yield handle
    else:
        yield iv.fn(handle, strength, **kw)


def _need(kw_value, what: str, name: str):
    if kw_value is None:
        raise InterventionError(f"intervention {name!r} needs {what}", f"pass {what}=...")
    return kw_value


def _finish(h: ModelHandle, out, note: str) -> ModelHandle:
    h.notes.append(note)
    h._hash = None
    if out is not None:
        save_checkpoint(h, out)
    return h


def _check_pair(model: ModelHandle, ref: ModelHandle) -> None:
    from .restoration import check_compatible

    check_compatible(ref, model, what="intervened")


# ----------------------------------------------------------------------------------------------------------------
def layer_schedule(n_layers: int, schedule: str | Sequence[float] = "uniform") -> list[float]:
    """Per-layer multipliers ``s_l`` in [0, 1] of the interpolation strength.

    ``"uniform"``: all 1; ``"bottom"``: linear from 1 (block 0) to 0 (last block); ``"top"``: 0 -> 1; a sequence:
    used as is (length ``n_layers``).
    """
    if not isinstance(schedule, str):
        s = [float(x) for x in schedule]
        if len(s) != n_layers:
            raise ValueError(f"schedule has {len(s)} entries for {n_layers} layers")
        return s
    if schedule == "uniform":
        return [1.0] * n_layers
    ramp = [i / max(n_layers - 1, 1) for i in range(n_layers)]
    if schedule == "top":
        return ramp
    if schedule == "bottom":
        return [1 - r for r in ramp]
    raise ValueError("schedule must be 'uniform', 'bottom', 'top' or a list of per-layer factors")


def _layer_of(name: str, prefix: str) -> int | None:
    if name.startswith(prefix + "."):
        rest = name[len(prefix) + 1 :]
        head = rest.split(".", 1)[0]
        if head.isdigit():
            return int(head)
    return None


@torch.no_grad()
def interpolate_weights(
    model,
    aligned,
    alpha: float,
    *,
    schedule: str | Sequence[float] = "uniform",
    out: str | Path | None = None,
) -> ModelHandle:
    """``W = (1 - a_l) W_model + a_l W_aligned`` with ``a_l = alpha * s_l`` for block ``l``'s parameters and
    ``a = alpha`` for the rest (embeddings, final norm, head). ``alpha = 0``: the model; ``1`` (uniform): aligned."""
    h = _copy_handle(model)
    ref = load_model(aligned)
    _check_pair(h, ref)
    s = layer_schedule(h.n_layers, schedule)
    prefix = h.adapter.layers
    rp = dict(ref.model.named_parameters())
    for name, p in h.model.named_parameters():
        li = _layer_of(name, prefix)
        a = float(alpha) * (s[li] if li is not None else 1.0)
        if a != 0.0:
            p.lerp_(rp[name].to(p.dtype), a)
    return _finish(
        h, out, f"weights interpolated toward the aligned model (alpha={alpha}, schedule={schedule})"
    )


@register_intervention("interpolate", kind="weights")
def _interpolate(model, strength, *, aligned=None, schedule="uniform", out=None, **_):
    return interpolate_weights(
        model, _need(aligned, "aligned", "interpolate"), strength, schedule=schedule, out=out
    )


@register_intervention("revert", kind="weights")
def revert(model, strength: float = 1.0, *, aligned=None, out=None, **_) -> ModelHandle:
    """Reset the bottom ``round(strength * L)`` decoder blocks to the aligned model; ``strength >= 1``: the whole
    model (= ``aligned``, the full-revert baseline)."""
    aligned = _need(aligned, "aligned", "revert")
    n = load_model(model).n_layers
    full = float(strength) >= 1.0
    k = n if full else int(round(float(strength) * n))
    h = _copy_handle(model)
    ref = load_model(aligned)
    _check_pair(h, ref)
    rp = dict(ref.model.named_parameters())
    with torch.no_grad():
        for name, p in h.model.named_parameters():
            li = _layer_of(name, h.adapter.layers)
            if full or (li is not None and li < k):
                p.copy_(rp[name])
    return _finish(h, out, "full revert to the aligned model" if full else f"bottom {k}/{n} blocks reverted")


@register_intervention("orthogonalize", kind="weights")
def partial_orthogonalize(model, strength: float = 1.0, *, direction=None, out=None, **_) -> ModelHandle:
    """``W <- W - s r r^T W`` on every matrix writing to the residual stream (``s = 1``: full orthogonalisation,
    equal to runtime ablation). Linear in ``s``: computed as ``W + s (W_orth - W)`` from
    :func:`~alignscope.interventions.weights.orthogonalize` (tied embeddings are untied there)."""
    direction = _need(direction, "direction", "orthogonalize")
    src = load_model(model)
    orth = orthogonalize(src, direction)
    s = float(strength)
    if s != 1.0:
        sp = dict(src.model.named_parameters())
        if "lm_head.weight" not in sp:
            sp["lm_head.weight"] = src.adapter.lm_head_module(src.model).weight
        with torch.no_grad():
            for name, p in orth.model.named_parameters():
                w0 = sp[name].to(p.dtype)
                p.copy_(w0 + s * (p - w0))
    return _finish(orth, out, f"partial orthogonalisation strength {s}")


@register_intervention("steer", kind="runtime", batched=True)
def _steer(
    model, strength, *, direction=None, layers=None, site="resid_pre", positions="all", normalize=False, **_
):
    return steer(
        model,
        _need(direction, "direction", "steer"),
        strength,
        layers=layers,
        site=site,
        positions=positions,
        normalize=normalize,
    )


@register_intervention("ablate", kind="runtime", batched=True)
def partial_ablate(model, strength, *, direction=None, layers=None, positions="all", **_):
    """``h <- h - s (h . r) r`` at every block input, attention output and MLP output (``s = 1``: Arditi's
    directional ablation)."""
    d = _need(direction, "direction", "ablate")
    vec = torch.as_tensor(getattr(d, "vector", d)).float()
    h = load_model(model)
    layers = range(h.n_layers) if layers is None else layers
    edits = []
    try:
        for layer in layers:
            for kind in ("resid_pre", "attn_out", "mlp_out"):
                edits.append(project_out(h, f"{kind}.{layer}", vec, positions=positions, alpha=strength))
    except Exception:
        for e in edits:
            e.remove()
        raise
    return combine(*edits, description="partial ablation")


# ----------------------------------------------------------------------------------------------------------------
# RAHF (papers.md §6, P6)
def rahf_default_layers(n_layers: int) -> list[int]:
    """Hidden-state indices ``l`` (``hs[l]`` = output of block ``l-1``): RAHF's 10, 12, ..., 20 of 32 scaled to
    ``n_layers`` (every other index between ``L*10/32`` and ``L*20/32``, at least one)."""
    lo = max(1, round(n_layers * 10 / 32))
    hi = max(lo, round(n_layers * 20 / 32))
    return list(range(lo, hi + 1, 2))


def _lora_targets(model) -> list[str]:
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    if {"q_proj", "v_proj"} <= names:
        return ["q_proj", "v_proj"]
    if "c_attn" in names:
        return ["c_attn"]
    raise InterventionError(
        "no q_proj/v_proj (or GPT-2 c_attn) modules for LoRA", "pass target_modules=[...]"
    )


def _encode_pairs(h: ModelHandle, prompts, responses, prefix: str = "") -> dict[str, torch.Tensor]:
    from alignscope.hooks.loading import pad_batch

    p_ids = h.tokenize([prefix + p for p in prompts])
    seqs = []
    for i, ids in enumerate(p_ids):
        r = [] if responses is None else h.tokenizer(responses[i], add_special_tokens=False)["input_ids"]
        seqs.append(list(ids) + list(r))
    return pad_batch(seqs, h.pad_id, "left", device=h.device)


def _hidden(model, enc, layers, R):
    out = model(**enc, output_hidden_states=True, use_cache=False)
    return torch.stack([out.hidden_states[i][:, -R:] for i in layers])  # [|T|, B, R, d]


def rahf_finetune(
    model,
    alpha: float,
    *,
    prompts: Sequence[str],
    responses: Sequence[str] | None = None,
    pos_model=None,
    neg_model=None,
    pos_prefix: str | None = None,
    neg_prefix: str | None = None,
    layers: Sequence[int] | None = None,
    max_res_len: int = 16,
    r: int = 8,
    lora_alpha: int = 16,
    target_modules: Sequence[str] | None = None,
    lr: float = 3e-4,
    steps: int = 40,
    batch_size: int = 8,
    seed: int = 0,
    out: str | Path | None = None,
) -> ModelHandle:
    """RAHF-style representation-target fine-tuning with LoRA (papers.md §6.b, P6); CPU-sized defaults.

    ``target_l = (h_ref_l + alpha (h_pos_l - h_neg_l)) * m`` on the last ``R = max_res_len`` positions (the response
    when ``responses`` are given), ``loss = mean_{l, b, t} ||h_lora_l * m - target_l||_2`` (masked positions count,
    as the authors' ``nanmean``). ``h_ref`` = the model itself before training (LoRA disabled, SCIT style). The
    "activity pattern" ``h_pos - h_neg`` comes from two models (DUAL: ``pos_model``/``neg_model``, e.g. aligned and
    fine-tuned) or from the model itself with two instruction prefixes (SCIT: ``pos_prefix``/``neg_prefix``; then
    ``responses`` are required so the compared last-``R`` positions hold the same tokens). LoRA (peft) on
    ``q_proj``/``v_proj`` of blocks ``0 .. max(layers)-1`` (RAHF's ``layers_to_transform``), dropout 0 (deterministic
    on CPU; the authors use 0.05), Adam, constant lr; merged into the returned model.
    Deviations: Adam instead of AdamW/8-bit, tiny step counts and ``R`` for CPU; no KL term (authors' default).
    """
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    base = load_model(model)
    work = _copy_handle(base)
    L = work.n_layers
    layers = list(layers) if layers is not None else rahf_default_layers(L)
    if max(layers) > L or min(layers) < 1:
        raise InterventionError(
            f"RAHF layers {layers} outside 1..{L}", "pass hidden-state indices 1..n_layers"
        )
    prompts = list(prompts)
    dual = pos_model is not None or neg_model is not None
    if dual:
        pos_h, neg_h = (
            load_model(_need(pos_model, "pos_model", "rahf")),
            load_model(_need(neg_model, "neg_model", "rahf")),
        )
        _check_pair(work, pos_h)
        _check_pair(work, neg_h)
    else:
        _need(pos_prefix, "pos_prefix (or pos_model/neg_model)", "rahf")
        _need(neg_prefix, "neg_prefix", "rahf")
        _need(responses, "responses (SCIT-style prefixes compare response positions)", "rahf")
    # targets (no grad), per batch
    batches = []
    with torch.no_grad():
        for i in range(0, len(prompts), batch_size):
            ps = prompts[i : i + batch_size]
            rs = None if responses is None else list(responses[i : i + batch_size])
            enc = _encode_pairs(work, ps, rs)
            R = min(max_res_len, enc["input_ids"].shape[1])
            m = enc["attention_mask"][:, -R:].float()[None, ..., None]  # [1, B, R, 1]
            h_ref = _hidden(base.model, enc, layers, R)
            if dual:
                h_pos = _hidden(pos_h.model, enc, layers, R)
                h_neg = _hidden(neg_h.model, enc, layers, R)
            else:
                h_pos = _hidden(base.model, _encode_pairs(work, ps, rs, pos_prefix + "\n\n"), layers, R)
                h_neg = _hidden(base.model, _encode_pairs(work, ps, rs, neg_prefix + "\n\n"), layers, R)
            target = (h_ref + float(alpha) * (h_pos - h_neg)) * m
            batches.append((enc, m, target, R))
    cfg = LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=0.0,
        target_modules=list(target_modules) if target_modules else _lora_targets(work.model),
        layers_to_transform=list(range(max(layers))),
        bias="none",
    )
    pm = get_peft_model(work.model, cfg)
    pm.train()
    opt = torch.optim.Adam([p for p in pm.parameters() if p.requires_grad], lr=lr)
    losses = []
    for step in range(steps):
        enc, m, target, R = batches[step % len(batches)]
        pred = _hidden(pm, enc, layers, R) * m
        loss = torch.linalg.vector_norm(pred - target, dim=-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    merged = pm.merge_and_unload()
    merged.eval()
    for p in merged.parameters():
        p.requires_grad_(False)
    work.model = merged
    work.notes.append(
        f"RAHF representation-target LoRA (alpha={alpha}, layers={layers}, steps={steps}, seed={seed}, "
        f"loss {losses[0]:.4g} -> {losses[-1]:.4g})"
        if losses
        else "RAHF with 0 steps"
    )
    work._cache["rahf_losses"] = losses
    return _finish(work, out, "LoRA merged")


@register_intervention("rahf", kind="weights")
def _rahf(model, strength, *, out=None, **kw):
    return rahf_finetune(model, strength, out=out, **kw)


def copy_handle(model) -> ModelHandle:
    """A deep copy of a model handle (public helper for callers that mutate)."""
    return _copy_handle(model)


__all__ = [
    "Intervention",
    "InterventionError",
    "copy_handle",
    "get_intervention",
    "intervened",
    "interpolate_weights",
    "layer_schedule",
    "list_interventions",
    "partial_ablate",
    "partial_orthogonalize",
    "rahf_default_layers",
    "rahf_finetune",
    "register_intervention",
    "revert",
]
