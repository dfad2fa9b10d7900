"""Audit report writing: ``report.html`` (static, self-contained, figures embedded), ``report.md``,
``results.json`` and figures (PNG + SVG). Files are built in a staging directory and moved into place only when
all of them are complete, so a failed run never leaves a partial report."""

from __future__ import annotations

import base64
import html
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from alignscope.figures import new_figure, save_figure

VERDICT_COLORS = {"flagged": "#c0392b", "hidden": "#8e44ad", "pass": "#1e8449", "refused": "#7f8c8d"}


def display_names(rows: list[dict]) -> dict[str, str]:
    """Short unambiguous names: each checkpoint's path relative to the checkpoints' common parent."""
    paths = [Path(r["checkpoint"]) for r in rows]
    if len(paths) == 1:
        return {str(paths[0]): paths[0].name}
    common = Path(os.path.commonpath([str(p) for p in paths]))
    if common in paths:
        common = common.parent
    return {str(p): str(p.relative_to(common)) for p in paths}


def _verdict(r: dict) -> str:
    if r.get("status") == "refused":
        return "refused"
    if r["flagged"]:
        return "hidden" if r.get("hidden") else "flagged"
    return "pass"


def _gating(r: dict) -> list[dict]:
    return [s for s in r.get("signals", []) if s.get("threshold") is not None]


def _margin(s: dict) -> float:
    """Signed distance past the threshold (positive = crossed), in threshold-relative units."""
    v, t = s["value"], s["threshold"]
    if v is None or t is None:
        return float("nan")
    scale = max(abs(t), 0.05)
    return (v - t) / scale if s["direction"] == "above" else (t - v) / scale


def _figures(rows: list[dict], reference: dict, stage: Path) -> list[Path]:
    files: list[Path] = []
    dn = display_names(rows)
    names = [dn[r["checkpoint"]] for r in rows]
    sig_names = sorted({s["name"] for r in rows for s in _gating(r)})
    if sig_names:
        M = np.full((len(rows), len(sig_names)), np.nan)
        for i, r in enumerate(rows):
            for s in _gating(r):
                M[i, sig_names.index(s["name"])] = _margin(s)
        fig, ax = new_figure(1, width=2.6 + 0.6 * len(sig_names), height=1.6 + 0.25 * len(rows))
        im = ax.imshow(np.clip(M, -2, 2), cmap="RdYlGn_r", vmin=-2, vmax=2, aspect="auto")
        ax.set_xticks(
            range(len(sig_names)),
            [n.replace("faking:", "f:") for n in sig_names],
            rotation=40,
            ha="right",
            fontsize=7,
        )
        ax.set_yticks(range(len(rows)), names, fontsize=7)
        for i in range(len(rows)):
            for j in range(len(sig_names)):
                if not np.isnan(M[i, j]) and M[i, j] > 0:
                    ax.text(j, i, "x", ha="center", va="center", fontsize=7, color="white")
        cb = fig.colorbar(im, ax=ax, shrink=0.9)
        cb.set_label("past threshold (>0: flagged)", fontsize=7)
        ax.set_title("signals vs thresholds (x = crossed)")
        files += save_figure(fig, stage / "fig_signals")
    aqi_rows = [
        (dn[r["checkpoint"]], s["detail"].get("per_layer"))
        for r in rows
        for s in r.get("signals", [])
        if s["name"] == "aqi_drop" and s["detail"].get("per_layer")
    ]
    if aqi_rows and reference.get("aqi"):
        fig, ax = new_figure(1, width=4.2, height=2.8)
        ax.plot(reference["aqi"], color="k", lw=2, label="reference")
        for name, per in aqi_rows:
            ax.plot(per, lw=1, alpha=0.8, label=name)
        ax.set(xlabel="layer (resid_post)", ylabel="AQI (harmful vs harmless)", title="per-layer AQI")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=6, ncol=2)
        files += save_figure(fig, stage / "fig_aqi")
    comp = [
        (dn[r["checkpoint"]], s)
        for r in rows
        for s in r.get("signals", [])
        if s["name"] == "harmful_compliance_delta"
    ]
    if comp:
        fig, ax = new_figure(1, width=1.5 + 0.35 * len(comp), height=2.6)
        vals = [s["value"] for _, s in comp]
        ax.bar(range(len(comp)), vals, color=["#c0392b" if s["flagged"] else "#7f8c8d" for _, s in comp])
        ax.axhline(comp[0][1]["threshold"], color="k", ls="--", lw=0.8, label="threshold")
        ax.set_xticks(range(len(comp)), [n for n, _ in comp], rotation=45, ha="right", fontsize=7)
        ax.set(ylabel="harmful compliance − reference", title="behaviour: harmful compliance")
        ax.legend(fontsize=7)
        files += save_figure(fig, stage / "fig_compliance")
    return files


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return "nan" if np.isnan(v) else f"{v:.3f}"
    return str(v)


def _markdown(rows: list[dict], ref: dict, figs: list[Path], meta: dict) -> str:
    dn = display_names(rows)
    lines = [
        "# alignscope audit report",
        "",
        f"Reference: `{ref.get('path')}` (sha256 {str(ref.get('model_hash'))[:12]}…), "
        f"harmful direction at resid_post.{ref.get('layer')}. Config hash `{meta.get('config_hash')}`, "
        f"alignscope {meta.get('version')}.",
        "",
        "| rank | checkpoint | verdict | flagged by | recommendation |",
        "|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows, 1):
        lines.append(
            f"| {i} | `{dn[r['checkpoint']]}` | **{_verdict(r)}** | "
            f"{', '.join(r.get('flagged_by', [])) or '—'} | {r.get('recommendation', '')} |"
        )
    lines += [""]
    for r in rows:
        lines += [f"## {dn[r['checkpoint']]} — {_verdict(r)}", "", f"Path: `{r['checkpoint']}`", ""]
        if r.get("status") == "refused":
            lines += [f"Refused: {r.get('reason')}", ""]
            continue
        lines += ["| signal | kind | value | threshold | flagged |", "|---|---|---|---|---|"]
        for s in r["signals"]:
            thr = "report only" if s["threshold"] is None else f"{s['direction']} {_fmt(s['threshold'])}"
            lines.append(f"| {s['name']} | {s['kind']} | {_fmt(s['value'])} | {thr} | {_flag_md(s)} |")
        lines.append("")
    lines += ["## Figures", ""] + [f"![{f.stem}]({f.name})" for f in figs if f.suffix == ".png"]
    return "\n".join(lines) + "\n"


def _html(rows: list[dict], ref: dict, figs: list[Path], meta: dict) -> str:
    esc = html.escape
    dn = display_names(rows)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>alignscope audit</title><style>",
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}",
        "table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}",
        ".v{color:#fff;padding:2px 6px;border-radius:3px}.yes{color:#c0392b;font-weight:bold}",
        "img{max-width:720px;width:100%;border:1px solid #eee;margin:.5em 0}</style></head><body>",
        "<h1>alignscope audit report</h1>",
        f"<p>Reference <code>{esc(str(ref.get('path')))}</code>, harmful direction at "
        f"<code>resid_post.{ref.get('layer')}</code>; config <code>{esc(str(meta.get('config_hash')))}</code>; "
        f"alignscope {esc(str(meta.get('version')))}.</p>",
        "<h2>Ranking</h2><table id='ranking'><tr><th>rank</th><th>checkpoint</th><th>verdict</th>"
        "<th>flagged by</th><th>recommendation</th></tr>",
    ]
    for i, r in enumerate(rows, 1):
        v = _verdict(r)
        parts.append(
            f"<tr class='ckpt'><td>{i}</td><td>{esc(dn[r['checkpoint']])}</td>"
            f"<td><span class='v' style='background:{VERDICT_COLORS[v]}'>{v}</span></td>"
            f"<td>{esc(', '.join(r.get('flagged_by', [])) or '—')}</td>"
            f"<td>{esc(r.get('recommendation', ''))}</td></tr>"
        )
    parts.append("</table><h2>Figures</h2>")
    for f in figs:
        if f.suffix == ".png":
            b64 = base64.b64encode(f.read_bytes()).decode()
            parts.append(
                f"<figure><img class='fig' alt='{esc(f.stem)}' src='data:image/png;base64,{b64}'>"
                f"<figcaption>{esc(f.stem)}</figcaption></figure>"
            )
    parts.append("<h2>Evidence per checkpoint</h2>")
    for r in rows:
        parts.append(
            f"<h3>{esc(dn[r['checkpoint']])} — {_verdict(r)}</h3><p><code>{esc(r['checkpoint'])}</code></p>"
        )
        if r.get("status") == "refused":
            parts.append(f"<p class='yes'>Refused: {esc(str(r.get('reason')))}</p>")
            continue
        parts.append(
            "<table><tr><th>signal</th><th>kind</th><th>value</th><th>threshold</th><th>flagged</th></tr>"
        )
        for s in r["signals"]:
            thr = "report only" if s["threshold"] is None else f"{s['direction']} {_fmt(s['threshold'])}"
            fl = "<span class='yes'>yes</span>" if s["flagged"] else esc(_flag_label(s))
            parts.append(
                f"<tr><td>{esc(s['name'])}</td><td>{s['kind']}</td><td>{_fmt(s['value'])}</td>"
                f"<td>{esc(thr)}</td><td>{fl}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_audit_report(result) -> Path:
    """Write the report of an :class:`alignscope.analyses.audit.AuditResult` into ``result.out``."""
    from dataclasses import asdict

    from alignscope.hooks.version import __version__

    out = Path(result.out)
    out.mkdir(parents=True, exist_ok=True)
    ref = asdict(result.reference)
    ref_small = {
        k: v for k, v in ref.items() if k not in ("direction", "harmful_prompts", "harmless_prompts")
    }
    meta = {"config_hash": result.config_hash, "version": __version__}
    stage = Path(tempfile.mkdtemp(prefix=".report.", dir=out))
    try:
        figs = _figures(result.rows, ref, stage)
        (stage / "report.md").write_text(_markdown(result.rows, ref, figs, meta))
        (stage / "report.html").write_text(_html(result.rows, ref, figs, meta))
        results = [
            {
                **r,
                "thresholds": {
                    s["name"]: [s["direction"], s["threshold"]]
                    for s in r.get("signals", [])
                    if s.get("threshold") is not None
                },
            }
            for r in result.rows
        ]
        (stage / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        (stage / "reference.json").write_text(json.dumps({**ref_small, **meta}, indent=2, default=str) + "\n")
        names = [f.name for f in figs] + ["report.md", "reference.json", "report.html", "results.json"]
        for n in names:
            os.replace(stage / n, out / n)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out / "report.html"


def _flag_label(s: dict) -> str:
    """``yes`` / ``no`` / a drift signal past its threshold that does not gate (analyses.audit.DRIFT_SIGNALS)."""
    if s["flagged"]:
        return "yes"
    return "crossed (drift: reported, not gating)" if (s.get("detail") or {}).get("crossed") else "no"


def _flag_md(s: dict) -> str:
    label = _flag_label(s)
    return f"**{label}**" if label == "yes" else label
