"""The sweep's store: run directories under ``DIR/runs/<run_id>`` and a manifest ``DIR/sweep.json``.

A run directory appears at its final path only when the run ended (`grouprobust.rundir` builds it
in a hidden temporary directory and renames it), so the status of a trial is read off the path:
``finished`` (``result.json``), ``failed`` (``error.json``) or ``absent`` (never run, or killed
part-way: a hidden ``.<run_id>.tmp-*`` directory never counts).

Several processes (on one machine or on several sharing the file system) may work on one sweep
directory: each trial is claimed with its run directory's file lock (``runs/.<run_id>.lock``,
see `grouprobust.rundir`) when it starts, and ``sweep.json`` is read and written under the sweep's
own claim (``.sweep.json.lock``, `grouprobust.outdir.OutputDirectory`). A manifest never loses trials: growing a sweep (a file whose trials
include all those listed) updates it, a different sweep is refused unless ``force`` merges it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from grouprobust.errors import GroupRobustError
from grouprobust.outdir import OutputDirectory
from grouprobust.output import read_json, write_json_atomic
from grouprobust.rundir import directory_token, run_status
from grouprobust.sweep.trials import Trial

RUNS = "runs"
MANIFEST = "sweep.json"
WRITTEN_BY = "grouprobust sweep"  # marks a manifest as the sweep's own


def read_manifest(out: Path) -> dict[str, Any] | None:
    """The manifest ``out/sweep.json`` (None if there is none); a one-line error if the file there is not
    a sweep's manifest (a user's own ``sweep.json``, or a damaged one), which a sweep never replaces."""
    path = Path(out) / MANIFEST
    if not os.path.lexists(path):
        return None
    refuse = (f"{path} already exists and is not a grouprobust sweep's manifest; give another out, or move that "
              "file away")
    if not path.is_file():
        raise GroupRobustError(refuse, subject="out")
    try:
        manifest = read_json(path)
    except GroupRobustError as err:
        raise GroupRobustError(f"{refuse} ({str(err).split(';')[0]})", subject="out") from None
    ours = isinstance(manifest, dict) and (manifest.get("written_by") == WRITTEN_BY
                                           or {"spec_file", "spec", "trials"} <= set(manifest))
    trials = manifest.get("trials") if isinstance(manifest, dict) else None
    if not ours or not isinstance(trials, list) or not all(isinstance(t, dict) and "run_id" in t for t in trials):
        raise GroupRobustError(refuse, subject="out")
    return manifest


def runs_dir(out: Path) -> Path:
    """``out/runs``, where the sweep's run directories live."""
    return Path(out) / RUNS


def trial_status(out: Path, run_id: str) -> str:
    """``finished``, ``failed`` or ``absent`` for the run ``run_id`` of the sweep at ``out``."""
    path = runs_dir(out) / run_id
    status = run_status(path)
    if status == "foreign":
        raise GroupRobustError(f"{path} is neither a finished nor a failed run (no result.json or error.json); "
                               "delete it and run the sweep again")
    return status


@dataclass
class Plan:
    """What a sweep invocation will do: trials to run, and those it skips (already finished or failed)."""

    to_run: list[Trial] = field(default_factory=list)
    finished: list[Trial] = field(default_factory=list)
    failed: list[Trial] = field(default_factory=list)
    retried: int = 0
    replace: dict[str, str] = field(default_factory=dict)  # run id -> token of the failed run to retry
    kept: list[Trial] = field(default_factory=list)  # trials of the sweep left alone (``sweep --best-only``)

    @property
    def total(self) -> int:
        """Number of trials in the sweep."""
        return len(self.to_run) + len(self.finished) + len(self.failed)


def plan(trials: list[Trial], out: Path, retry_failed: bool = False) -> Plan:
    """Sort ``trials`` by their status on disk: finished runs are skipped, failed ones re-run only if asked."""
    result = Plan()
    for trial in trials:
        status = trial_status(out, trial.run_id)
        if status == "finished":
            result.finished.append(trial)
        elif status == "failed" and not retry_failed:
            result.failed.append(trial)
        else:
            if status == "failed":
                result.retried += 1
                result.replace[trial.run_id] = directory_token(runs_dir(out) / trial.run_id)
            result.to_run.append(trial)
    return result


def _ids_with_other_inputs(trials: list[Trial], entries: list[dict[str, Any]]) -> set[str]:
    """The run ids among manifest ``entries`` that are one of ``trials`` with other input contents (its
    input file edited since, or recorded before inputs were fingerprinted): the same sweep, whose
    entries the current trials replace."""
    by_inputs: dict[str, dict[str, str]] = {}
    for entry in entries:
        inputs = entry.get("inputs") or {}
        by_inputs[json.dumps(inputs, sort_keys=True)] = inputs
    ids: set[str] = set()
    for inputs in by_inputs.values():
        ids |= {replace(t.config, inputs=dict(inputs)).run_id for t in trials if t.config.inputs != inputs}
    return ids & {e.get("run_id") for e in entries}


def _ids_on_other_seeds(trials: list[Trial], entries: list[dict[str, Any]]) -> set[str]:
    """The run ids among manifest ``entries`` that are one of ``trials``' points on another seed (added by
    ``sweep --best-only --seeds N``, or by a file listing more seeds): the same sweep, grown."""
    seeds = {e.get("seed") for e in entries if isinstance(e.get("seed"), int)}
    ids = {replace(t.config, seed=s).run_id for t in trials for s in seeds - {t.config.seed}}
    return ids & {e.get("run_id") for e in entries}


def unlisted_trials(out: Path, trials: list[Trial], spec_path: Path, force: bool = False) -> list[dict[str, Any]]:
    """Entries of ``out/sweep.json`` that are not among ``trials`` (none if there is no manifest yet).

    Such entries mean the directory holds another sweep: raises a one-line error unless ``force``.
    Entries that are one of ``trials`` but with other input file contents (the table was edited) are
    not counted: they are this sweep before the edit, and the current trials replace them. Nor are
    entries that are one of ``trials``' points on another seed (``sweep --best-only --seeds N``).
    """
    path = Path(out) / MANIFEST
    manifest = read_manifest(out)
    if manifest is None:
        return []
    earlier = manifest["trials"]
    ids = {t.run_id for t in trials}
    others = [e for e in earlier if e.get("run_id") not in ids]
    superseded = _ids_with_other_inputs(trials, others) | _ids_on_other_seeds(trials, others)
    extra = [e for e in earlier if e.get("run_id") not in ids and e.get("run_id") not in superseded]
    if extra and not force:
        raise GroupRobustError(f"{path} belongs to another sweep ({len(extra)} of its {len(earlier)} trials are not "
                               f"in {spec_path}); choose another output directory, or set force to add this sweep's "
                               "trials to it", subject="force")
    return extra


def _entries(trials: list[Trial]) -> list[dict[str, Any]]:
    return [{"run_id": t.run_id, "point": t.point, "dataset": t.config.dataset, "method": t.config.method,
             "seed": t.config.seed, **({"inputs": t.config.inputs} if t.config.inputs else {}),
             **({"expected": t.expected.as_json()} if t.expected is not None else {})} for t in trials]


def manifest_is_current(out: Path, spec_raw: dict[str, Any], spec_path: Path, trials: list[Trial]) -> bool:
    """Whether ``out/sweep.json`` already records exactly this sweep file and these trials (then a sweep
    run again writes nothing there)."""
    earlier = read_manifest(out)
    if earlier is None:
        return False
    spec = json.loads(json.dumps(spec_raw, default=str))
    def canon(entries: list[Any]) -> list[str]:
        return sorted(json.dumps(e, sort_keys=True) for e in entries)

    return (earlier.get("spec_file") == str(spec_path) and earlier.get("spec") == spec
            and canon(earlier["trials"]) == canon(_entries(trials)))


def write_manifest(out: Path, spec_raw: dict[str, Any], spec_path: Path, trials: list[Trial],
                   force: bool = False) -> None:
    """Record the sweep file's contents and every trial's run id in ``out/sweep.json`` (atomically, under
    the sweep's lock).

    An existing manifest whose trials are all among ``trials`` (the same sweep, or a grown one, or one
    whose input files were edited since) is replaced. One listing trials that ``trials`` lacks belongs to another sweep: that is refused
    unless ``force``, which keeps every trial listed (the union, earlier specs under ``earlier_specs``).
    Entries that are one of ``trials``' points on another seed are kept (a manifest never loses trials).
    """
    if manifest_is_current(out, spec_raw, spec_path, trials):
        return  # nothing to change: a finished sweep is reused on a read-only disk too
    runs_dir(out).mkdir(parents=True, exist_ok=True)
    path = Path(out) / MANIFEST
    entries = _entries(trials)
    manifest: dict[str, Any] = {"written_by": WRITTEN_BY, "spec_file": str(spec_path),
                                "spec": json.loads(json.dumps(spec_raw, default=str))}
    with OutputDirectory(path, "sweep manifest", file=True).claim(wait=True):  # concurrent sweeps take turns
        earlier = read_manifest(out)
        extra = unlisted_trials(out, trials, spec_path, force)
        if earlier is not None:
            listed = {e["run_id"] for e in entries}
            grown = [e for e in earlier.get("trials", []) if e.get("run_id") not in listed]
            entries += [e for e in grown if e.get("run_id") in _ids_on_other_seeds(trials, grown)] + extra
            if extra:
                before = [{"spec_file": earlier.get("spec_file"), "spec": earlier.get("spec")}]
                manifest["earlier_specs"] = earlier.get("earlier_specs", []) + before
            elif "earlier_specs" in earlier:
                manifest["earlier_specs"] = earlier["earlier_specs"]
        write_json_atomic(path, {**manifest, "trials": entries})
