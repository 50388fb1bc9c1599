"""The sweep's store: run directories under ``DIR/runs/<run_id>`` and a manifest ``DIR/sweep.json``.

A run directory appears at its final path only when the run ended (`grouprobust.rundir` builds it
in a hidden temporary directory and renames it), so the status of a trial is read off the path:
``finished`` (``result.json``), ``failed`` (``error.json``) or ``absent`` (never run, or killed
part-way: a hidden ``.<run_id>.tmp-*`` directory never counts).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grouprobust.errors import GroupRobustError
from grouprobust.output import write_json_atomic
from grouprobust.rundir import run_status
from grouprobust.sweep.trials import Trial

RUNS = "runs"
MANIFEST = "sweep.json"


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
            result.retried += status == "failed"
            result.to_run.append(trial)
    return result


def write_manifest(out: Path, spec_raw: dict[str, Any], spec_path: Path, trials: list[Trial]) -> None:
    """Record the sweep file's contents and every trial's run id in ``out/sweep.json`` (atomically)."""
    runs_dir(out).mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(out) / MANIFEST, {
        "spec_file": str(spec_path),
        "spec": json.loads(json.dumps(spec_raw, default=str)),
        "trials": [{"run_id": t.run_id, "point": t.point, "dataset": t.config.dataset, "method": t.config.method,
                    "seed": t.config.seed} for t in trials],
    })
