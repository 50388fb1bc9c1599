"""Running a sweep: expand and validate, skip what is done, execute the rest, record outcomes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from grouprobust.errors import GroupRobustError
from grouprobust.outdir import check_output_path
from grouprobust.sweep.executors import (LocalExecutor, Outcome, RayExecutor, _check_reachable, check_executor,
                                         make_executor)
from grouprobust.sweep.spec import SweepSpec, load_sweep
from grouprobust.sweep.store import RUNS, Plan, manifest_is_current, plan, runs_dir, unlisted_trials, write_manifest
from grouprobust.sweep.trials import check_rule_labels, expand
from grouprobust.tracking import check_trackers, parse_track


@dataclass
class SweepSummary:
    """Counts of one sweep invocation and the outcome of every trial it ran."""

    total: int
    skipped_finished: int
    skipped_failed: int
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def finished(self) -> int:
        """Trials that this invocation ran and that finished."""
        return sum(o["status"] == "finished" and o.get("ran", True) for o in self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        """Outcomes of the trials that this invocation ran and that failed."""
        return [o for o in self.outcomes if o["status"] != "finished" and o.get("ran", True)]

    @property
    def ran(self) -> int:
        """Trials this invocation executed."""
        return sum(o.get("ran", True) for o in self.outcomes)

    @property
    def elsewhere(self) -> int:
        """Trials planned here that another process sharing the sweep directory ran instead."""
        return sum(not o.get("ran", True) for o in self.outcomes)


def prepare(spec_path: Path, out: Path, retry_failed: bool = False, force: bool = False) -> tuple[SweepSpec, Plan]:
    """Load and validate the sweep file (every trial), and plan against what ``out`` holds; writes nothing.

    Raises if ``out`` cannot be written (`grouprobust.outdir.check_output_path`: a dangling link, under a
    file, a folder that refuses new entries; not checked when the sweep is finished and recorded there
    already, so it is reused on a read-only disk) or holds another sweep's manifest, unless ``force``
    (`unlisted_trials`), or a ``sweep.json`` that is not a sweep's manifest."""
    check_output_path(out, "sweep directory", inside=(RUNS,), probe=False)
    spec = load_sweep(spec_path)
    trials = expand(spec)
    unlisted_trials(out, trials, spec.path, force)
    todo = plan(trials, out, retry_failed)
    if todo.to_run or not manifest_is_current(out, spec.raw, spec.path, trials):
        check_output_path(out, "sweep directory", inside=(RUNS,))
    return spec, todo


def run_sweep(spec_path: Path, out: Path, executor: str = "local", workers: int = 1, address: str | None = None,
              retry_failed: bool = False, on_start: Callable[[Plan, int], None] | None = None,
              on_outcome: Callable[[Outcome], None] | None = None,
              on_plan: Callable[[Plan], None] | None = None, track: str | list[str] | None = None,
              force: bool = False, threads: int | None = None) -> SweepSummary:
    """Run the sweep in ``spec_path`` into ``out``; returns what was skipped and what ran.

    Everything is validated before the first trial starts. ``on_plan(plan)`` is called once the plan
    is known, ``on_start(plan, slots)`` once the executor is ready, ``on_outcome`` after each trial.
    ``track`` (trackers, `grouprobust.tracking`) replaces the sweep file's ``track:``; MLflow's default
    local store is ``out/mlruns`` and its experiment the sweep's name. ``force`` adds this sweep's
    trials to a directory whose manifest lists another sweep (`write_manifest`). ``threads`` fixes each
    trial's torch thread count (default: `grouprobust.threads`' policy).

    Other processes may run the same sweep into ``out`` at the same time (on other machines too, with
    a shared file system): each trial is claimed when it starts, trials claimed elsewhere are left
    to their process at first and waited for at the end (and run here if that process died), so
    every trial runs once; those another process ran are in the outcomes with ``ran`` False.
    """
    check_executor(executor, workers, address)
    if address is not None:
        _check_reachable(address)  # before sweep.json is written: an unreachable cluster leaves nothing behind
    spec, todo = prepare(spec_path, out, retry_failed, force)
    check_rule_labels(spec, todo.to_run)  # before sweep.json: a rule no trial can use leaves nothing behind
    names = parse_track(track) if track is not None else spec.track
    check_trackers(names)  # a tracking library that is not installed is refused before anything runs
    tracking = {"track": names, "store_dir": str(Path(out).resolve()), "experiment": spec.name} if names else None
    write_manifest(out, spec.raw, spec.path, todo.to_run + todo.finished + todo.failed, force=force)
    summary = SweepSummary(todo.total, len(todo.finished), len(todo.failed))
    if on_plan is not None:
        on_plan(todo)
    runner: LocalExecutor | RayExecutor | None = (make_executor(executor, workers, address, threads)
                                                  if todo.to_run else None)
    if on_start is not None:
        on_start(todo, runner.slots if runner else 0)
    if runner is None:
        return summary
    by_id = {t.run_id: t for t in todo.to_run}
    try:
        busy = []
        for wait, trials in ((False, todo.to_run), (True, busy)):  # free trials first, then wait for the busy ones
            for outcome in runner.run(trials, runs_dir(out), wait=wait, replace=todo.replace, tracking=tracking):
                if outcome["status"] == "busy":
                    busy.append(by_id[outcome["run_id"]])
                    continue
                summary.outcomes.append(outcome)
                if on_outcome is not None:
                    on_outcome(outcome)
    finally:
        runner.close()
    return summary
