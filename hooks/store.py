"""On-disk activation store: streaming capture with bounded memory, resumable, lazily indexed.

Layout of a store directory::

    meta.json                 what was captured (sites, positions, model hash, dataset hash, ...), "complete" flag
    shards/b000000.safetensors one file per batch: a tensor per site (+ "__mask__" for positions="all")

Each shard is written to a temp file and renamed into place, so a killed capture leaves only whole shards; running
the same capture again skips them. A directory holding a *different* capture is refused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import AlignscopeError
from .io import atomic_path, atomic_write_json
from .loading import ModelHandle
from .positions import Positions
from .sites import Site

_KEYS = ("model_hash", "sites", "positions", "backend", "chat", "n_prompts", "dataset_hash", "batch_size")
MASK_KEY = "__mask__"


def _shard_name(bi: int) -> str:
    return f"b{bi:06d}.safetensors"


def stream_capture(
    handle: ModelHandle,
    prompts: list[str],
    sites: list[Site],
    pos: Positions,
    run,
    out: Path,
    meta: dict,
    *,
    batch_size: int,
    chat: bool,
    padding_side: str,
    n_eoi: int | None,
    progress,
    check_finite: bool,
) -> LazyActivations:
    """Stream a capture into ``out`` (see the module docstring). Returns the lazily loading store."""
    from .capture import iter_batches
    from .progress import reporter as _reporter

    out.mkdir(parents=True, exist_ok=True)
    shards = out / "shards"
    shards.mkdir(exist_ok=True)
    meta_path = out / "meta.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        diff = [k for k in _KEYS if old.get(k) != meta.get(k)]
        if diff:
            raise AlignscopeError(
                f"{out} already holds a different capture (differs in: {', '.join(diff)})",
                "choose another output directory, or delete this one to start over",
            )
        meta = {**old, **{k: v for k, v in meta.items() if k in _KEYS}}
    meta["complete"] = False
    meta.setdefault("started", time.strftime("%Y-%m-%dT%H:%M:%S"))
    atomic_write_json(meta_path, meta)

    n_batches = (len(prompts) + batch_size - 1) // batch_size
    done = {bi for bi in range(n_batches) if (shards / _shard_name(bi)).exists()}
    reporter = _reporter(progress, len(prompts), "capture")
    reporter(len(done) * batch_size if done else 0)
    t0 = time.perf_counter()
    for start, res, amask in iter_batches(
        handle,
        prompts,
        sites,
        pos,
        run,
        batch_size=batch_size,
        chat=chat,
        padding_side=padding_side,
        n_eoi=n_eoi,
        check_finite=check_finite,
        skip=lambda bi: bi in done,
    ):
        bi = start // batch_size
        tensors = {k: v.detach().cpu().contiguous() for k, v in res.items()}
        if amask is not None:
            tensors[MASK_KEY] = amask.cpu().contiguous()
        with atomic_path(shards / _shard_name(bi)) as tmp:
            save_file(tensors, str(tmp))
        done.add(bi)
        reporter(min(len(done) * batch_size, len(prompts)))
    reporter(None)
    meta["complete"] = True
    meta["n_batches"] = n_batches
    meta["seconds_last_run"] = round(time.perf_counter() - t0, 4)
    atomic_write_json(meta_path, meta)
    return open_activations(out)


class LazySite:
    """One site of a store: indexes like a tensor (``[i]``, ``[a:b]``, ``[[i, j]]``), loads only what it needs."""

    def __init__(self, store: LazyActivations, key: str):
        self._store = store
        self._key = key
        first = store._shard_path(0)
        with safe_open(str(first), framework="pt") as f:
            sl = f.get_slice(key)
            shape = list(sl.get_shape())
        shape[0] = store.n
        if store.positions == "all" and (len(shape) == 3 or key == MASK_KEY):
            shape[1] = store.max_len
        self.shape = torch.Size(shape)

    def __len__(self) -> int:
        return self.shape[0]

    def _rows(self, lo: int, hi: int) -> torch.Tensor:
        bs = self._store.batch_size
        parts = []
        for bi in range(lo // bs, (hi - 1) // bs + 1):
            a, b = max(lo, bi * bs) - bi * bs, min(hi, (bi + 1) * bs) - bi * bs
            with safe_open(str(self._store._shard_path(bi)), framework="pt") as f:
                t = f.get_slice(self._key)[a:b]
            if t.dim() == 3 and self._store.positions == "all" and t.shape[1] < self.shape[1]:
                pad = self.shape[1] - t.shape[1]
                t = (
                    torch.nn.functional.pad(t, (0, 0, 0, pad))
                    if t.dtype.is_floating_point
                    else torch.nn.functional.pad(t, (0, pad))
                )
            elif t.dim() == 2 and self._key == MASK_KEY and t.shape[1] < self.shape[1]:
                t = torch.nn.functional.pad(t, (0, self.shape[1] - t.shape[1]))
            parts.append(t)
        if not parts:
            return torch.empty((0, *self.shape[1:]))
        return torch.cat(parts, 0)

    def __getitem__(self, idx) -> torch.Tensor:
        n = self.shape[0]
        rest = ()
        if isinstance(idx, tuple):
            idx, rest = idx[0], idx[1:]
        if isinstance(idx, int):
            i = idx % n if -n <= idx < n else None
            if i is None:
                raise IndexError(f"index {idx} out of range for {n} prompts")
            t = self._rows(i, i + 1)[0]
        elif isinstance(idx, slice):
            lo, hi, step = idx.indices(n)
            if step == 1:
                t = self._rows(lo, hi) if hi > lo else self._rows(0, 0)
            else:
                t = torch.stack([self._rows(i, i + 1)[0] for i in range(lo, hi, step)])
        else:
            ids = torch.as_tensor(idx).tolist()
            t = torch.stack([self._rows(i % n, i % n + 1)[0] for i in ids]) if ids else self._rows(0, 0)
        return t[(slice(None), *rest)] if rest and t.dim() > 0 else t

    def load(self) -> torch.Tensor:
        """The whole site as one tensor."""
        return self._rows(0, self.shape[0])

    def __array__(self, dtype=None):
        a = self.load().numpy()
        return a if dtype is None else a.astype(dtype)

    def __repr__(self) -> str:
        return f"LazySite({self._key!r}, shape={tuple(self.shape)})"


class LazyActivations(Mapping):
    """A store opened for reading: ``acts["resid_post.3"][:100]`` loads 100 rows from disk."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.exists():
            raise AlignscopeError(
                f"{self.path} is not an activation store (no meta.json)",
                "pass the directory given as out= to capture (alignscope capture --out DIR)",
            )
        self.meta = json.loads(meta_path.read_text())
        if not self.meta.get("complete"):
            raise AlignscopeError(
                f"the capture in {self.path} is incomplete (it was interrupted)",
                "run the same capture again with the same out= directory: it resumes where it stopped",
            )
        self.n = int(self.meta["n_prompts"])
        self.batch_size = int(self.meta["batch_size"])
        self.positions = self.meta["positions"]
        self.max_len = 0
        if self.positions == "all":
            for bi in range(self.meta["n_batches"]):
                with safe_open(str(self._shard_path(bi)), framework="pt") as f:
                    self.max_len = max(self.max_len, f.get_slice(MASK_KEY).get_shape()[1])
        self._sites = {s: LazySite(self, s) for s in self.meta["sites"]}

    def _shard_path(self, bi: int) -> Path:
        return self.path / "shards" / _shard_name(bi)

    @property
    def mask(self) -> LazySite | None:
        return LazySite(self, MASK_KEY) if self.positions == "all" else None

    def __getitem__(self, site: str) -> LazySite:
        site = self.meta.get("aliases", {}).get(site, site)
        if site not in self._sites:
            raise KeyError(f"site {site!r} is not in this store; it holds {sorted(self._sites)}")
        return self._sites[site]

    def __iter__(self) -> Iterator[str]:
        return iter(self._sites)

    def __len__(self) -> int:
        return len(self._sites)

    def load(self) -> dict[str, torch.Tensor]:
        return {k: v.load() for k, v in self._sites.items()}


def open_activations(path: str | Path) -> LazyActivations:
    """Open a store written by ``capture(..., out=path)``; indexes like the in-memory result, loads lazily."""
    return LazyActivations(path)
