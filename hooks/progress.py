"""One progress reporter for every long job (capture, audit): a rich bar, a callback, or nothing."""

from __future__ import annotations

from collections.abc import Callable


def reporter(
    progress: bool | Callable[[int, int], None], total: int, label: str = "progress"
) -> Callable[[int | None], None]:
    """Return ``rep(done)`` to report progress and ``rep(None)`` to close.

    Args:
        progress: True for a rich progress bar, a callback ``(done, total)``, or False for nothing.
        total: the number of units of work.
        label: the bar's label.
    """
    if callable(progress):
        return lambda done: progress(done, total) if done is not None else None
    if not progress:
        return lambda done: None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(
        f"[bold]{label}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()
    )
    task = bar.add_task(label, total=total)
    bar.start()

    def rep(done: int | None) -> None:
        if done is None:
            bar.stop()
        else:
            bar.update(task, completed=done)

    return rep
