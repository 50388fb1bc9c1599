"""A Rich progress display for a sweep: done / running / failed / left (not started), and the ETA."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from grouprobust.sweep.executors import Outcome


class SweepProgress:
    """Context manager; call `update` with each trial outcome. ``slots`` = trials that run at once."""

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

    def update(self, outcome: Outcome) -> None:
        """Count one finished (or failed) trial."""
        if outcome["status"] == "finished":
            self.done += 1
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
