"""Figure helpers: a consistent publication style, saved as PNG and SVG, atomically."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from alignscope.hooks.io import atomic_path  # noqa: E402

STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 200,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "svg.hashsalt": "alignscope",  # reproducible SVG ids
}


def new_figure(ncols: int = 1, width: float = 3.4, height: float = 2.6):
    plt.rcParams.update(STYLE)
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), constrained_layout=True)
    return fig, axes


def save_figure(fig, path_stem: str | Path) -> list[Path]:
    """Save ``fig`` as ``<stem>.png`` and ``<stem>.svg`` (metadata without dates, so files are reproducible)."""
    stem = Path(path_stem)
    out = []
    for ext, meta in ((".png", {"Software": None}), (".svg", {"Date": None})):
        p = stem.with_suffix(ext)
        with atomic_path(p) as tmp:
            fig.savefig(tmp, format=ext[1:], metadata=meta)
        out.append(p)
    plt.close(fig)
    return out
