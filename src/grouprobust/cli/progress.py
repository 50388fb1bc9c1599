"""Rich progress displays: one training run (epochs and loss), a feature extraction, an analysis, a sweep."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from grouprobust.data.progress import set_progress_reporter


def _transient_bar(*columns: Any, console: Console | None, disable: bool) -> Progress:
    """A progress bar that disappears when done, drawn only on a terminal: in a log or a pipe a transient
    bar draws nothing useful, only a blank line where it ends."""
    return Progress(*columns, console=console, transient=True,
                    disable=disable or (console is not None and not console.is_terminal))


@contextmanager
def training_progress(description: str, total: int, console: Console | None = None,
                      disable: bool = False) -> Iterator[Callable[[int, float], None]]:
    """A transient bar over ``total`` epochs; yields the ``on_epoch(epoch, loss)`` callback that moves it."""
    with _transient_bar(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(),
                  console=console, disable=disable) as progress:
        task = progress.add_task(description, total=total, loss=float("nan"))
        with _data_tasks(progress):
            yield lambda epoch, loss: progress.update(task, completed=epoch, loss=loss)


@contextmanager
def _data_tasks(progress: Progress) -> Iterator[None]:
    """While the block runs, each data-preparation task (decoding images into the cache, tokenizing texts:
    `grouprobust.data.progress`) is a row of ``progress``, removed when the task ends."""
    @contextmanager
    def reporter(description: str) -> Iterator[Callable[[int, int], None]]:
        task = progress.add_task(description, total=None, loss=float("nan"))
        try:
            yield lambda done, total: progress.update(task, completed=done, total=total)
        finally:
            progress.remove_task(task)

    previous = set_progress_reporter(reporter)
    try:
        yield
    finally:
        set_progress_reporter(previous)


@contextmanager
def count_progress(description: str, console: Console | None = None,
                   disable: bool = False) -> Iterator[Callable[[int, int], None]]:
    """A transient bar of items done; yields the ``progress(done, total)`` callback that moves it."""
    with _transient_bar(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=disable) as progress:
        task = progress.add_task(description, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


@contextmanager
def step_progress(description: str, console: Console | None = None,
                  disable: bool = False) -> Iterator[Callable[[str, int, int], None]]:
    """A transient bar of work units done; yields the ``progress(message, done, total)`` callback of
    `grouprobust.analysis.runs` that moves it and shows what runs now."""
    with _transient_bar(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[message]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console, disable=disable) as progress:
        task = progress.add_task(description, total=None, message="")

        def update(message: str, done: int, total: int) -> None:
            progress.update(task, completed=done, total=total, message=message)

        yield update


class SweepProgress:
    """Done / running / failed / left (not started) and the ETA of a sweep.

    Context manager; call `update` with each trial outcome. ``slots`` = trials that run at once.
    """

    def __init__(self, total: int, slots: int, console: Console | None = None, disable: bool = False):
        self.total, self.slots = total, slots
        self.done = self.failed = 0
        self.progress = Progress(
            TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(),
            TextColumn("done [green]{task.fields[done]}[/] · running {task.fields[running]} · "
                       "failed [red]{task.fields[failed]}[/] · left {task.fields[left]}"),
            TextColumn("· ETA"), TimeRemainingColumn(), TextColumn("· elapsed"), TimeElapsedColumn(),
            console=console, disable=disable)
        self.task = self.progress.add_task("sweep", total=total, **self._fields())

    def _fields(self) -> dict[str, int]:
        remaining = self.total - self.done - self.failed
        running = min(self.slots, remaining)
        return {"done": self.done, "failed": self.failed, "running": running, "left": remaining - running}

    def update(self, outcome: dict[str, Any]) -> None:
        """Count one finished (or failed) trial (an outcome of `grouprobust.sweep.executors`)."""
        if outcome["status"] == "finished":
            self.done += 1
        elif outcome["status"] == "interrupted":  # the sweep stops here; the trial is left to resume
            pass
        else:
            self.failed += 1
            self.progress.console.print(f"[red]failed[/] {outcome['run_id']}: {outcome['reason']}",
                                        markup=True, highlight=False, soft_wrap=True)
        self.progress.update(self.task, completed=self.done + self.failed, **self._fields())

    def __enter__(self) -> "SweepProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

