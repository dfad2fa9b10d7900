"""Safe model loading and the :class:`ModelHandle` (model + tokenizer + adapter + chat formatting).

Security defaults: safetensors only (pickle weights are refused unless ``allow_pickle=True``), and
``trust_remote_code`` is never on unless the caller opts in.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .adapters import ArchitectureAdapter, adapter_for
from .errors import CheckpointError, PromptError, TokenizerError, UnsafeCheckpointError
from .io import sha256_file

log = logging.getLogger("alignscope")

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_SENTINEL = "\x00ALIGNSCOPE_INSTRUCTION\x00"

#: name resolvers (e.g. the model zoo) registered by higher layers: name -> local directory or None.
_NAME_RESOLVERS: list[Callable[[str], Path | None]] = []


def register_name_resolver(fn: Callable[[str], Path | None]) -> None:
    """Let ``load_model("NAME")`` resolve names (the zoo registers itself here; hooks never imports it)."""
    if fn not in _NAME_RESOLVERS:
        _NAME_RESOLVERS.append(fn)


@dataclass
class ModelHandle:
    """An HF causal LM with its tokenizer, architecture adapter and chat formatting.

    The tokenizer held here is alignscope's own copy: nothing alignscope does (padding side, pad token) touches a
    tokenizer the user passed in.

    Attributes:
        model: the ``transformers`` causal LM (eval mode).
        tokenizer: alignscope's copy of the tokenizer (has a pad token).
        adapter: where the generic sites live in this architecture.
        path: the checkpoint directory it was loaded from (None for in-memory models).
        source: ``"dir"``, ``"peft"``, ``"object"`` or ``"zoo"``.
        notes: things alignscope chose on the user's behalf (e.g. the pad token), for provenance.
    """

    model: Any
    tokenizer: Any
    adapter: ArchitectureAdapter
    path: str | None = None
    source: str = "object"
    notes: list[str] = field(default_factory=list)
    _hash: str | None = field(default=None, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    # ----- shape facts -------------------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return self.adapter.n_layers(self.model)

    @property
    def d_model(self) -> int:
        cfg = self.model.config
        return int(getattr(cfg, "hidden_size", None) or cfg.n_embd)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def max_positions(self) -> int | None:
        cfg = self.model.config
        return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def model_hash(self) -> str:
        """sha256 of the weight files (directory checkpoints) or of the state dict (in-memory models)."""
        if self._hash is None:
            self._hash = _hash_model(self)
        return self._hash

    def provenance(self) -> dict:
        return {
            "model_path": self.path,
            "model_hash": self.model_hash,
            "model_type": getattr(self.model.config, "model_type", None),
            "adapter": self.adapter.name,
            "source": self.source,
            "notes": list(self.notes),
        }

    def copy(self, note: str | None = None) -> ModelHandle:
        """A deep copy (model weights and tokenizer) to mutate freely; the copy has no path until saved."""
        return ModelHandle(
            model=copy.deepcopy(self.model),
            tokenizer=copy.deepcopy(self.tokenizer),
            adapter=self.adapter,
            path=None,
            source="object",
            notes=list(self.notes) + ([note] if note else []),
        )

    # ----- formatting --------------------------------------------------------------------------------------------
    def use_chat(self, chat: bool | None) -> bool:
        """Resolve ``chat=None`` (template if the tokenizer has one) and check ``chat=True`` is possible."""
        if chat is None:
            return self.has_chat_template
        if chat and not self.has_chat_template:
            raise TokenizerError(
                "chat=True was asked for but the tokenizer has no chat template",
                "pass chat=False to use the raw prompt text, or set tokenizer.chat_template before load_model",
            )
        return bool(chat)

    def format_prompts(self, prompts: Sequence[str], chat: bool | None = None) -> list[str]:
        """Wrap each instruction in the chat template (user turn + generation prompt), or return it unchanged."""
        prompts = _check_prompts(prompts)
        if not self.use_chat(chat):
            return list(prompts)
        return [self._template(p) for p in prompts]

    def _template(self, instruction: str) -> str:
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True
        )

    def eoi_ids(self) -> list[int]:
        """Token ids of the chat template after the instruction (Arditi et al.'s post-instruction tokens)."""
        if "eoi" not in self._cache:
            if not self.has_chat_template:
                raise TokenizerError(
                    "positions='eoi' needs a chat template: the post-instruction tokens are the template's",
                    "use positions='last', or load a tokenizer that has a chat template",
                )
            text = self._template(_SENTINEL)
            if _SENTINEL not in text:
                raise TokenizerError("the chat template drops the user's instruction", "check the template")
            suffix = text.split(_SENTINEL)[-1]
            ids = self.tokenizer(suffix, add_special_tokens=False)["input_ids"]
            if len(ids) == 0:
                raise TokenizerError(
                    "the chat template adds no tokens after the instruction, so 'eoi' positions are empty",
                    "use positions='last'",
                )
            self._cache["eoi"] = list(ids)
        return self._cache["eoi"]

    def tokenize(self, prompts: Sequence[str], chat: bool | None = None) -> list[list[int]]:
        """Token ids of each (formatted) prompt, unpadded. Checks the context window."""
        use_chat = self.use_chat(chat)
        texts = self.format_prompts(prompts, chat=use_chat)
        enc = self.tokenizer(texts, add_special_tokens=not use_chat)["input_ids"]
        limit = self.max_positions
        for i, ids in enumerate(enc):
            if len(ids) == 0:
                raise PromptError(f"prompt {i} tokenizes to no tokens", "drop empty prompts")
            if limit is not None and len(ids) > limit:
                raise PromptError(
                    f"prompt {i} is {len(ids)} tokens long, longer than the model's context window ({limit})",
                    "shorten or truncate that prompt before capture",
                )
        return [list(x) for x in enc]

    def encode(
        self, prompts: Sequence[str], chat: bool | None = None, padding_side: str = "left"
    ) -> dict[str, torch.Tensor]:
        """Tokenize and pad a batch: ``input_ids``, ``attention_mask`` and mask-derived ``position_ids``."""
        return pad_batch(self.tokenize(prompts, chat=chat), self.pad_id, padding_side, device=self.device)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)


def pad_batch(
    ids: Sequence[Sequence[int]], pad_id: int, padding_side: str = "left", device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """Pad token id lists into tensors, with ``position_ids`` derived from the mask (0 at the first real token)."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    T = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), T), dtype=torch.long)
    for i, x in enumerate(ids):
        if padding_side == "left":
            input_ids[i, T - len(x) :] = torch.tensor(x)
            mask[i, T - len(x) :] = 1
        else:
            input_ids[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": mask.to(device),
        "position_ids": position_ids.to(device),
    }


def _check_prompts(prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if len(prompts) == 0:
        raise PromptError(
            "the prompt list is empty", "pass at least one prompt (check the file and its column)"
        )
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise PromptError(f"prompt {i} is {type(p).__name__}, not str", "pass a list of strings")
    return prompts


# ----------------------------------------------------------------------------------------------------------------
def load_model(
    path_or_model: str | os.PathLike | Any,
    tokenizer: Any = None,
    *,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
) -> ModelHandle:
    """Load a causal LM safely and wrap it in a :class:`ModelHandle`.

    Args:
        path_or_model: a local HF checkpoint directory; a PEFT LoRA adapter directory (merged onto its local base);
            an already-built HF model (then ``tokenizer`` is required); a :class:`ModelHandle` (returned as is); or
            a registered name (e.g. a zoo organism).
        tokenizer: tokenizer for an in-memory model (copied: alignscope never modifies it).
        dtype: weights dtype when loading from disk (default float32, for exact numerics).
        device: device to load onto (default CPU).
        allow_pickle: allow ``pytorch_model.bin``-style pickle weights (can execute code: only for trusted files).
        trust_remote_code: allow custom modelling code shipped with the checkpoint (off by default).

    Raises:
        CheckpointError: the path is not a checkpoint, or the adapter's base is missing.
        UnsafeCheckpointError: pickle weights or custom code without opt-in.
    """
    if isinstance(path_or_model, ModelHandle):
        return path_or_model
    if isinstance(path_or_model, torch.nn.Module):
        if tokenizer is None:
            raise TokenizerError(
                "an in-memory model was passed without its tokenizer", "call load_model(model, tokenizer)"
            )
        model = path_or_model
        handle = ModelHandle(model=model, tokenizer=_own_tokenizer(tokenizer), adapter=adapter_for(model))
        _ensure_pad(handle)
        return handle

    path = _resolve_path(path_or_model)
    dtype = _resolve_dtype(dtype)
    if (path / "adapter_config.json").exists() and not (path / "config.json").exists():
        return _load_peft(
            path, dtype=dtype, device=device, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code
        )
    _check_checkpoint_dir(path, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path),
            dtype=dtype,
            use_safetensors=not allow_pickle or _has_safetensors(path),
            trust_remote_code=trust_remote_code,
            local_files_only=True,
        )
    except (OSError, ValueError) as e:
        raise CheckpointError(
            f"could not load the model in {path}: {e}",
            "check that the directory was written by save_pretrained",
        ) from e
    if device is not None:
        model = model.to(device)
    model.eval()
    if tokenizer is None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                str(path), trust_remote_code=trust_remote_code, local_files_only=True
            )
        except (OSError, ValueError) as e:
            raise CheckpointError(
                f"{path} has no loadable tokenizer ({e})",
                "save the tokenizer beside the model (tokenizer.save_pretrained(dir)) or pass tokenizer=...",
            ) from e
    else:
        tokenizer = _own_tokenizer(tokenizer)
    handle = ModelHandle(
        model=model, tokenizer=tokenizer, adapter=adapter_for(model), path=str(path), source="dir"
    )
    _ensure_pad(handle)
    return handle


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        try:
            return getattr(torch, dtype)
        except AttributeError:
            raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'float32' or 'bfloat16'") from None
    return dtype


def _resolve_path(p: str | os.PathLike) -> Path:
    path = Path(p).expanduser()
    if path.is_dir():
        return path.resolve()
    if isinstance(p, str) and not path.exists():
        for fn in _NAME_RESOLVERS:
            hit = fn(p)
            if hit is not None:
                return Path(hit).resolve()
    if path.exists():
        raise CheckpointError(
            f"{path} is a file, not a checkpoint directory",
            "pass the directory that holds config.json and the *.safetensors weights",
        )
    raise CheckpointError(
        f"no checkpoint at {str(p)!r}: no such directory (and no registered model of that name)",
        "pass a local directory written by save_pretrained, or build the zoo first (alignscope zoo build)",
    )


def _has_safetensors(path: Path) -> bool:
    return any(path.glob("*.safetensors"))


def _check_checkpoint_dir(path: Path, *, allow_pickle: bool, trust_remote_code: bool) -> None:
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        raise CheckpointError(
            f"{path} is not a checkpoint: it has no config.json",
            "pass the directory written by model.save_pretrained(...) (it holds config.json and *.safetensors)",
        )
    pickles = [
        f.name for f in path.iterdir() if f.suffix in _PICKLE_SUFFIXES and "training_args" not in f.name
    ]
    if not _has_safetensors(path):
        if pickles and not allow_pickle:
            raise UnsafeCheckpointError(
                f"{path} holds only pickle weights ({', '.join(sorted(pickles)[:3])}); unpickling can run code",
                "convert the checkpoint to safetensors, or pass allow_pickle=True (--allow-pickle) if you trust it",
            )
        if not pickles:
            raise CheckpointError(
                f"{path} has a config.json but no weight files (*.safetensors)",
                "check that the save finished; weights are written by save_pretrained(..., safe_serialization=True)",
            )
    cfg = json.loads(cfg_file.read_text())
    if cfg.get("auto_map") and not trust_remote_code:
        raise UnsafeCheckpointError(
            f"{path} asks for custom modelling code (auto_map in config.json), which would run on load",
            "pass trust_remote_code=True only if you trust the checkpoint's author",
        )


def _load_peft(path: Path, *, dtype, device, allow_pickle: bool, trust_remote_code: bool) -> ModelHandle:
    cfg = json.loads((path / "adapter_config.json").read_text())
    base_ref = cfg.get("base_model_name_or_path")
    if not base_ref:
        raise CheckpointError(
            f"{path}/adapter_config.json names no base model", "set base_model_name_or_path"
        )
    base_path = Path(base_ref)
    if not base_path.is_absolute():
        cand = (path / base_path).resolve()
        base_path = cand if cand.is_dir() else base_path
    if not base_path.is_dir():
        raise CheckpointError(
            f"the LoRA adapter in {path} needs its base model {base_ref!r}, which is not a local directory",
            "set base_model_name_or_path in adapter_config.json to the base checkpoint's local path",
        )
    if not (path / "adapter_model.safetensors").exists() and not allow_pickle:
        raise UnsafeCheckpointError(
            f"{path} has no adapter_model.safetensors (only pickle adapter weights)",
            "save the adapter with safe_serialization=True, or pass allow_pickle=True if you trust it",
        )
    base = load_model(
        base_path, dtype=dtype, device=device, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code
    )
    from peft import PeftModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = PeftModel.from_pretrained(base.model, str(path), is_trainable=False)
    merged = peft_model.merge_and_unload()
    merged.eval()
    handle = ModelHandle(
        model=merged,
        tokenizer=base.tokenizer,
        adapter=adapter_for(merged),
        path=str(path),
        source="peft",
        notes=base.notes + [f"LoRA adapter merged onto {base_path}"],
    )
    return handle


def _own_tokenizer(tokenizer: Any) -> Any:
    """A private copy, so padding side / pad token choices never leak into the user's tokenizer."""
    return copy.deepcopy(tokenizer)


def _ensure_pad(handle: ModelHandle) -> None:
    tok = handle.tokenizer
    n_embed = handle.adapter.embed_module(handle.model).weight.shape[0]
    if tok.pad_token_id is not None and tok.pad_token_id >= n_embed:
        msg = (
            f"tokenizer's pad token {tok.pad_token!r} (id {tok.pad_token_id}) is outside the model's "
            f"{n_embed}-token embedding; alignscope pads with the EOS token instead (masked out)"
        )
        tok.pad_token = tok.eos_token if tok.eos_token_id is not None and tok.eos_token_id < n_embed else None
        if tok.pad_token is None:
            tok.pad_token_id = 0
        handle.notes.append(msg)
        log.info(msg)
        return
    if tok.pad_token_id is None:
        if tok.eos_token is not None:
            tok.pad_token = tok.eos_token
            msg = f"tokenizer had no pad token; alignscope pads with the EOS token {tok.eos_token!r} (masked out)"
        else:
            tok.pad_token_id = 0
            msg = "tokenizer had no pad or EOS token; alignscope pads with id 0 (masked out)"
        handle.notes.append(msg)
        log.info(msg)


def weights_hash(path: str | os.PathLike) -> str:
    """sha256 over a checkpoint directory's safetensors files (names and contents): the ``model_hash`` recorded in
    provenance for directory checkpoints, computed without loading the model."""
    h = hashlib.sha256()
    for f in sorted(Path(path).glob("*.safetensors")):
        h.update(f.name.encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def _hash_model(handle: ModelHandle) -> str:
    if handle.path is not None and handle.source in ("dir", "zoo"):
        return weights_hash(handle.path)
    h = hashlib.sha256()
    for name, t in sorted(handle.model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
