"""Running a sweep: expand and validate, skip what is done, execute the rest, record outcomes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from grouprobust.errors import GroupRobustError
from grouprobust.sweep.executors import LocalExecutor, Outcome, RayExecutor, check_executor, make_executor
from grouprobust.sweep.spec import SweepSpec, load_sweep
from grouprobust.sweep.store import Plan, plan, runs_dir, write_manifest
from grouprobust.sweep.trials import expand


@dataclass
class SweepSummary:
    """Counts of one sweep invocation and the outcome of every trial it ran."""

    total: int
    skipped_finished: int
    skipped_failed: int
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def finished(self) -> int:
        """Trials that finished in this invocation."""
        return sum(o["status"] == "finished" for o in self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        """Outcomes of the trials that failed in this invocation."""
        return [o for o in self.outcomes if o["status"] != "finished"]


def prepare(spec_path: Path, out: Path, retry_failed: bool = False) -> tuple[SweepSpec, Plan]:
    """Load and validate the sweep file (every trial), and plan against what ``out`` holds; writes nothing."""
    if Path(out).exists() and not Path(out).is_dir():
        raise GroupRobustError(f"out {out} is a file; give a directory for the sweep's runs", subject="out")
    spec = load_sweep(spec_path)
    return spec, plan(expand(spec), out, retry_failed)


def run_sweep(spec_path: Path, out: Path, executor: str = "local", workers: int = 1, address: str | None = None,
              retry_failed: bool = False, on_start: Callable[[Plan, int], None] | None = None,
              on_outcome: Callable[[Outcome], None] | None = None,
              on_plan: Callable[[Plan], None] | None = None, threads: int | None = None) -> SweepSummary:
    """Run the sweep in ``spec_path`` into ``out``; returns what was skipped and what ran.

    Everything is validated before the first trial starts. ``on_plan(plan)`` is called once the plan
    is known, ``on_start(plan, slots)`` once the executor is ready, ``on_outcome`` after each trial.
    ``threads`` fixes each trial's torch thread count (default: `grouprobust.threads`' policy).
    """
    check_executor(executor, workers, address)
    spec, todo = prepare(spec_path, out, retry_failed)
    write_manifest(out, spec.raw, spec.path, todo.to_run + todo.finished + todo.failed)
    summary = SweepSummary(todo.total, len(todo.finished), len(todo.failed))
    if on_plan is not None:
        on_plan(todo)
    runner: LocalExecutor | RayExecutor | None = (make_executor(executor, workers, address, threads)
                                                  if todo.to_run else None)
    if on_start is not None:
        on_start(todo, runner.slots if runner else 0)
    if runner is None:
        return summary
    try:
        for outcome in runner.run(todo.to_run, runs_dir(out)):
            summary.outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
    finally:
        runner.close()
    return summary
