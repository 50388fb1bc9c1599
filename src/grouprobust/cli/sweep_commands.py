"""``grouprobust sweep`` (run a sweep file with a live progress display) and ``grouprobust report``."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.markdown import Markdown

from grouprobust.cli.application import command_group, console, err_console
from grouprobust.cli.options import KeepCheckpointsOpt, ThreadsOpt, TrackOpt
from grouprobust.cli.progress import SweepProgress
from grouprobust.sweep.executors import check_executor, executor_slots
from grouprobust.sweep.placement import describe_placement
from grouprobust.sweep.report import best_lines, display_table, write_report
from grouprobust.sweep.runner import prepare, run_sweep
from grouprobust.threads import check_threads
from grouprobust.tracking import check_trackers

commands = command_group()


@commands.command()
def sweep(
    file: Path = typer.Argument(..., help="sweep file (.yaml/.yml or .toml); see docs/sweeps.md"),
    out: Path = typer.Option(..., "--out", "-o", help="sweep directory: runs go to OUT/runs/<run_id>"),
    workers: int = typer.Option(1, "--workers", "-w", help="trials at once (Ray executor: CPUs of the local instance)"),
    executor: str = typer.Option("local", "--executor", "-e", help="local (in this process, one at a time) or ray"),
    address: Optional[str] = typer.Option(None, "--address", help="join the Ray cluster at this address (implies ray)"),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="run failed trials again"),
    dry_run: bool = typer.Option(False, "--dry-run", help="validate and show what would run, run nothing"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress display"),
    track: List[str] = TrackOpt,
    force: bool = typer.Option(False, "--force", help="add this sweep's trials to an OUT that holds another sweep"),
    threads: Optional[int] = ThreadsOpt,
    gpus_per_trial: Optional[float] = typer.Option(
        None, "--gpus-per-trial", help="GPUs each trial takes, a fraction of one allowed (default: one per trial "
        "locally with GPUs; an equal share on Ray)"),
    cpus_per_trial: Optional[float] = typer.Option(None, "--cpus-per-trial",
                                                   help="CPUs Ray reserves for each trial (default: --threads, else 1)"),
    best_only: bool = typer.Option(False, "--best-only", help="rerun only the point each dataset and method chooses "
                                   "on the finished grid (as `grouprobust report` chooses), on --seeds seeds"),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="grow the file's seeds to this many (0, 1, 2, ...)"),
    keep_checkpoints: bool = KeepCheckpointsOpt,
) -> None:
    """Run every trial of a sweep file; re-running skips finished trials (and failed ones unless --retry-failed).

    SIGTERM or SIGINT checkpoints the running trial and stops the sweep (exit 128 + signal); re-running
    resumes that trial from its checkpoint (docs/long-runs.md)."""

    if address is not None:
        executor = "ray"
    check_threads(threads, here=executor != "ray")  # a Ray cluster's workers may have more CPUs than this machine
    if dry_run:
        check_executor(executor, workers, address, gpus_per_trial, cpus_per_trial)
        spec, todo = prepare(file, out, retry_failed, force, best_only, seeds)
        check_trackers(track if track is not None else spec.track)
        slots = executor_slots(executor, workers, address, gpus_per_trial, cpus_per_trial, threads)
        kept = f" ({len(todo.kept)} other trials of the grid left alone)" if best_only else ""
        console.print(f"{todo.total} trials: {len(todo.finished)} finished, {len(todo.failed)} failed (skipped), "
                      f"{len(todo.to_run)} to run{kept}")
        labels = [(t.run_id, f"{t.point} seed {t.config.seed}") for t in todo.to_run]
        for line in describe_placement(slots, labels) if labels else []:
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        return
    with ExitStack() as stack:
        display: list[SweepProgress] = []

        def on_plan(todo: Any) -> None:
            console.print(f"{todo.total} trials: {len(todo.finished)} already finished, {len(todo.failed)} failed "
                          f"(skipped; --retry-failed runs them again), {len(todo.to_run)} to run"
                          + (f" ({todo.retried} retried)" if todo.retried else ""))
            if executor == "ray" and todo.to_run:
                where = f"joining the Ray cluster at {address}" if address else f"starting a local Ray instance ({workers} workers)"
                err_console.print(f"{where}...")

        def on_start(todo: Any, slots: int) -> None:
            display.append(stack.enter_context(SweepProgress(len(todo.to_run), slots, err_console,
                                                             disable=quiet or not todo.to_run)))

        summary = run_sweep(file, out, executor, workers, address, retry_failed, on_start=on_start,
                            on_outcome=lambda outcome: display[0].update(outcome), on_plan=on_plan,
                            track=",".join(track) or None, force=force, threads=threads,
                            gpus_per_trial=gpus_per_trial,
                            cpus_per_trial=cpus_per_trial, best_only=best_only, seeds=seeds,
                            keep_checkpoints=keep_checkpoints)
    stopped = summary.interrupted
    if stopped is not None:
        err_console.print(f"sweep stopped: trial {stopped['run_id']} {stopped['reason']}", markup=False,
                          highlight=False, soft_wrap=True)
        raise typer.Exit(128 + stopped["signal"])
    elsewhere = f" ({summary.elsewhere} more ran in other processes sharing {out})" if summary.elsewhere else ""
    console.print(f"ran {summary.ran}: {summary.finished} finished, {len(summary.failed)} failed{elsewhere}. "
                  f"Results in {out}/runs; summarise with `grouprobust report {out}`")
    failed = len(summary.failed) + summary.skipped_failed
    if failed:  # scripts notice: the sweep ran every trial it could, but not all of them finished
        err_console.print(f"{failed} trial(s) failed; see their reasons with `grouprobust report {out}`, run them "
                          "again with --retry-failed", soft_wrap=True)
        raise typer.Exit(1)


@commands.command()
def report(
    directory: Path = typer.Argument(..., help="a sweep's --out directory (or a folder of run directories)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="where to write the report (default DIRECTORY/report)"),
    select: Optional[str] = typer.Option(None, "--select", help="selection rule to use instead of the runs' own"),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="write figures"),
    per_seed: bool = typer.Option(False, "--per-seed", help="add each seed's test worst-group accuracy to the table "
                                  "(summary.csv always has every seed's values)"),
) -> None:
    """Choose hyper-parameters on validation and tabulate test accuracies (mean ± std over seeds), best first."""

    with err_console.status(f"reading the runs under {directory} and writing the report"):
        result, folder = write_report(directory, out, select, plots, per_seed)
    if len(result.summary):
        console.print(Markdown(display_table(result.summary, per_seed=per_seed).to_markdown(index=False)))
        for line in best_lines(result.summary):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
    if len(result.failures):
        console.print(f"[red]{len(result.failures)} failed runs[/]:")
        for row in result.failures.itertuples():
            console.print(f"  {row.run_id} {row.method} on {row.dataset} seed {row.seed}: {row.reason}",
                          markup=False, highlight=False, soft_wrap=True)
    if len(result.unreadable):
        console.print(f"[red]{len(result.unreadable)} unreadable runs[/] (left out):")
        for row in result.unreadable.itertuples():
            console.print(f"  {row.run_id}: {row.reason}", markup=False, highlight=False, soft_wrap=True)
    if len(result.copies):
        console.print(f"[yellow]{len(result.copies)} run directories hold a run already counted[/] (counted once):")
        for row in result.copies.itertuples():
            console.print(f"  {row.path}: {row.reason}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"report written to {folder} (report.md, summary.csv, summary.tex, per_group.csv, failures.csv, figures)")
