"""Running a sweep: expand and validate, skip what is done, execute the rest, record outcomes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from grouprobust.errors import GroupRobustError
from grouprobust.outdir import check_output_path
from grouprobust.sweep.choice import chosen_points
from grouprobust.sweep.collect import collect_runs, point_id
from grouprobust.sweep.executors import (LocalExecutor, Outcome, RayExecutor, _check_reachable, check_executor,
                                         executor_slots, make_executor)
from grouprobust.sweep.spec import SweepSpec, load_sweep
from grouprobust.sweep.store import (RUNS, Plan, manifest_is_current, plan, runs_dir, trial_status, unlisted_trials,
                                     write_manifest)
from grouprobust.sweep.trials import Trial, check_rule_labels, expand
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
        return [o for o in self.outcomes if o["status"] not in ("finished", "interrupted") and o.get("ran", True)]

    @property
    def interrupted(self) -> Outcome | None:
        """The outcome of the trial that SIGTERM or SIGINT stopped (with a checkpoint), which ended this
        invocation; None if none did."""
        return next((o for o in self.outcomes if o["status"] == "interrupted"), None)

    @property
    def ran(self) -> int:
        """Trials this invocation executed."""
        return sum(o.get("ran", True) for o in self.outcomes)

    @property
    def elsewhere(self) -> int:
        """Trials planned here that another process sharing the sweep directory ran instead."""
        return sum(not o.get("ran", True) for o in self.outcomes)


def more_seeds(seeds: list[int], count: int | None, spec_path: Path) -> list[int]:
    """The sweep file's ``seeds`` grown to ``count`` of them with the smallest unused whole numbers
    (``[0, 1, 2]`` grows to ``[0, 1, 2, 3, 4]``); the file's own with ``count`` None."""
    if count is None:
        return list(seeds)
    if isinstance(count, bool) or not isinstance(count, int) or count < len(seeds):
        raise GroupRobustError(f"seeds {count!r} is fewer than the {len(seeds)} seeds of {spec_path}; give at least "
                               f"{len(seeds)} (the file's seeds are kept, more are added)", subject="seeds")
    grown, candidate = list(seeds), 0
    while len(grown) < count:
        if candidate not in grown:
            grown.append(candidate)
        candidate += 1
    return grown


def best_trials(spec: SweepSpec, out: Path, grid: list[Trial], seeds: list[int]) -> list[Trial]:
    """The trials of the point each (dataset, method) of ``spec`` chooses (`grouprobust.sweep.choice`, as
    ``grouprobust report`` does) among the finished runs of ``grid`` in ``out``, on ``seeds``.

    Only the grid's own runs are read, so the choice does not move as the chosen point gains seeds.
    Raises a one-line error while a trial of the grid has not run (its point could be the best)."""
    absent = [t for t in grid if trial_status(out, t.run_id) == "absent"]
    if absent:
        raise GroupRobustError(f"{len(absent)} of the {len(grid)} trials of {spec.path} have not run in {out} yet; "
                               "run the sweep without best_only first, so that every point is compared",
                               subject="best_only")
    runs = collect_runs(out)
    runs = runs[runs["run_id"].isin({t.run_id for t in grid})]
    if not (runs["status"] == "finished").any():
        raise GroupRobustError(f"no trial of {spec.path} finished in {out}; there is no point to choose",
                               subject="best_only")
    chosen = {best for _, _, _, best, _ in chosen_points(runs)}
    return [t for t in expand(replace(spec, seeds=seeds)) if point_id(asdict(t.config)) in chosen]


def prepare(spec_path: Path, out: Path, retry_failed: bool = False, force: bool = False, best_only: bool = False,
            seeds: int | None = None) -> tuple[SweepSpec, Plan]:
    """Load and validate the sweep file (every trial), and plan against what ``out`` holds; writes nothing.

    ``seeds`` grows the file's seeds to that many (`more_seeds`). With ``best_only``, only the point each
    (dataset, method) chooses on the finished grid (`best_trials`) is planned, on those seeds; the
    other trials of the grid are left alone (``Plan.kept``). Raises if ``out`` cannot be written
    (`grouprobust.outdir.check_output_path`: a dangling link, under a file, a folder that refuses new
    entries; not checked when the sweep is finished and recorded there already, so it is reused on a
    read-only disk) or holds another sweep's manifest, unless ``force`` (`unlisted_trials`), or a
    ``sweep.json`` that is not a sweep's manifest."""
    check_output_path(out, "sweep directory", inside=(RUNS,), probe=False)
    spec = load_sweep(spec_path)
    grown = more_seeds(spec.seeds, seeds, spec.path)
    if not best_only:
        trials = expand(replace(spec, seeds=grown))
        unlisted_trials(out, trials, spec.path, force)
        todo = plan(trials, out, retry_failed)
    else:
        grid = expand(spec)
        unlisted_trials(out, grid, spec.path, force)
        trials = best_trials(spec, out, grid, grown)
        todo = plan(trials, out, retry_failed)
        planned = {t.run_id for t in trials}
        todo.kept = [t for t in grid if t.run_id not in planned]
    if todo.to_run or not manifest_is_current(out, spec.raw, spec.path, trials):
        check_output_path(out, "sweep directory", inside=(RUNS,))
    return spec, todo


def run_sweep(spec_path: Path, out: Path, executor: str = "local", workers: int = 1, address: str | None = None,
              retry_failed: bool = False, on_start: Callable[[Plan, int], None] | None = None,
              on_outcome: Callable[[Outcome], None] | None = None,
              on_plan: Callable[[Plan], None] | None = None, track: str | list[str] | None = None,
              force: bool = False, threads: int | None = None, gpus_per_trial: float | None = None,
              cpus_per_trial: float | None = None, best_only: bool = False, seeds: int | None = None,
              keep_checkpoints: bool = False) -> SweepSummary:
    """Run the sweep in ``spec_path`` into ``out``; returns what was skipped and what ran.

    Everything is validated before the first trial starts, and before anything is written (the
    executor is started first, so GPUs asked for where there are none are refused with nothing written).
    ``on_plan(plan)`` is called once the plan is known, ``on_start(plan, slots)`` once the executor is
    ready, ``on_outcome`` after each trial.
    ``track`` (trackers, `grouprobust.tracking`) replaces the sweep file's ``track:``; MLflow's default
    local store is ``out/mlruns`` and its experiment the sweep's name. ``force`` adds this sweep's
    trials to a directory whose manifest lists another sweep (`write_manifest`). ``threads`` fixes each
    trial's torch thread count (default: `grouprobust.threads`' policy). ``gpus_per_trial`` (a fraction
    of one GPU) and ``cpus_per_trial`` (Ray only) say what each trial takes (`make_executor`);
    ``best_only`` and ``seeds`` rerun each (dataset, method)'s chosen point on more seeds (`prepare`).
    A trial stopped by SIGTERM or SIGINT (checkpointed, ``interrupted``) ends the invocation there
    (`SweepSummary.interrupted`); the next one resumes it. ``keep_checkpoints`` keeps each trial's
    checkpoints when it finishes.

    Other processes may run the same sweep into ``out`` at the same time (on other machines too, with
    a shared file system): each trial is claimed when it starts, trials claimed elsewhere are left
    to their process at first and waited for at the end (and run here if that process died), so
    every trial runs once; those another process ran are in the outcomes with ``ran`` False.
    """
    check_executor(executor, workers, address, gpus_per_trial, cpus_per_trial)
    if address is not None:
        _check_reachable(address)  # before sweep.json is written: an unreachable cluster leaves nothing behind
    else:
        executor_slots(executor, workers, None, gpus_per_trial, cpus_per_trial, threads)  # GPUs asked for, none here
    spec, todo = prepare(spec_path, out, retry_failed, force, best_only, seeds)
    check_rule_labels(spec, todo.to_run)  # before sweep.json: a rule no trial can use leaves nothing behind
    names = parse_track(track) if track is not None else spec.track
    check_trackers(names)  # a tracking library that is not installed is refused before anything runs
    tracking = {"track": names, "store_dir": str(Path(out).resolve()), "experiment": spec.name} if names else None
    summary = SweepSummary(todo.total, len(todo.finished), len(todo.failed))
    if on_plan is not None:
        on_plan(todo)
    runner: LocalExecutor | RayExecutor | None = (
        make_executor(executor, workers, address, threads, gpus_per_trial, cpus_per_trial) if todo.to_run else None)
    try:
        write_manifest(out, spec.raw, spec.path, todo.to_run + todo.finished + todo.failed + todo.kept, force=force)
        if on_start is not None:
            on_start(todo, runner.slots if runner else 0)
        if runner is None:
            return summary
        by_id = {t.run_id: t for t in todo.to_run}
        busy = []
        for wait, trials in ((False, todo.to_run), (True, busy)):  # free trials first, then wait for the busy ones
            for outcome in runner.run(trials, runs_dir(out), wait=wait, replace=todo.replace, tracking=tracking,
                                      keep_checkpoints=keep_checkpoints):
                if outcome["status"] == "busy":
                    busy.append(by_id[outcome["run_id"]])
                    continue
                summary.outcomes.append(outcome)
                if on_outcome is not None:
                    on_outcome(outcome)
                if outcome["status"] == "interrupted":  # preempted: stop here, the next sweep resumes
                    return summary
    finally:
        if runner is not None:
            runner.close()
    return summary
