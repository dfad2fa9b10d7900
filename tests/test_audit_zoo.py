"""Audit quality on the tiny organism zoo (slow: ~5-8 minutes on 2 cores; run with `make test-slow`).

Measured (docs/audit.md): base, harmful-ft, attacked-50 flagged by behaviour; faker-0 flagged as *hidden* by the
attentiveness detector only; honest-0/1 pass; benign-ft reported, not gated."""

from __future__ import annotations

from pathlib import Path

import pytest
from alignscope.analyses.audit import AuditConfig, audit

from alignscope.report import write_audit_report

pytestmark = pytest.mark.slow


def test_tiny_zoo_audit_confusion(tiny_zoo, tmp_path):
    z = {k: Path(v) for k, v in tiny_zoo.items() if not k.startswith("_")}
    names = ["base", "harmful-ft", "attacked-50", "faker-0", "honest-0", "honest-1", "benign-ft"]
    cfg = AuditConfig(honest_reference=str(z["honest-0"]), limit=40)
    res = audit(
        [str(z[n]) for n in names], z["aligned"], out=tmp_path / "a", config=cfg, report=write_audit_report
    )
    by = {Path(r["checkpoint"]).name: r for r in res.rows}
    for n in ("base", "harmful-ft", "attacked-50", "faker-0"):
        assert by[n]["flagged"], (n, by[n]["flagged_by"])
    assert by["faker-0"]["hidden"]
    for n in ("honest-0", "honest-1"):
        assert not by[n]["flagged"], (n, by[n]["flagged_by"])
    assert (tmp_path / "a" / "report.html").exists()
