"""`collect_runs(directory)`: every finished or failed run under a directory, one row each, read from its
run directory (``config.json``, ``result.json`` or ``error.json``). A damaged run is a row with status
``unreadable`` and its reason, never an exception that hides the other runs. `grouprobust.sweep.frames`
adds one column per option and hyper-parameter; `grouprobust.sweep.report` aggregates the rows.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from grouprobust.errors import GroupRobustError
from grouprobust.output import read_json
from grouprobust.rundir import run_status
from grouprobust.selection import SELECTION_RULES, SelectionRule, rule_value
from grouprobust.sweep.expected import Expected, attach_expected, manifest_expected
from grouprobust.sweep.store import MANIFEST, runs_dir

SCALAR_METRICS = ("worst_group_acc", "group_balanced_acc", "avg_acc", "worst_class_acc", "balanced_acc")
UNREADABLE = "unreadable"
COPY = "copy"  # a run directory holding a run (by run id) that another directory under the sweep already holds


def metric_column(rule: SelectionRule) -> str:
    """The column of `collect_runs` that holds the figure ``rule`` reads: ``<split>_<metric>``."""
    return f"{rule.split}_{rule.metric}"


def _metric_columns() -> dict[str, SelectionRule]:
    """Every metric column: the scalar metrics of both splits, and the figure of every selection rule."""
    columns = {f"{split}_{name}": SelectionRule(name, split, name, False) for split in ("val", "test")
               for name in SCALAR_METRICS}
    columns.update({metric_column(rule): rule for rule in SELECTION_RULES.values()})
    return columns


def _number(value: Any) -> float:
    """``value`` as a float; NaN when it is missing or not a number (a damaged or older result)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return np.nan
    return float(value)


def canonical_json(obj: Any) -> str:
    """``obj`` as JSON text with sorted keys: equal configs give equal text."""
    return json.dumps(obj, sort_keys=True, default=str)


def point_id(config: dict[str, Any]) -> str:
    """Hash of a config without its seed: runs with the same point differ only by seed (and runs on
    other contents of the same input files are other points)."""
    keys = ("dataset", "data", "method", "hparams", "regime", "select") + (("inputs",) if config.get("inputs") else ())
    return hashlib.sha256(canonical_json({k: config.get(k) for k in keys}).encode()).hexdigest()[:10]


def _run_row(path: Path) -> dict[str, Any] | None:
    """The row of one run directory; an unreadable one (damaged JSON, missing keys) gets status
    ``unreadable`` and the reason, so that one bad directory never hides the others."""
    status = run_status(path)
    if status not in ("finished", "failed"):
        return None
    try:
        return _read_run(path, status)
    except (GroupRobustError, OSError, UnicodeDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        reason = str(err) if isinstance(err, GroupRobustError) else _damage(path, err)
        return {"run_id": path.name, "path": str(path), "status": UNREADABLE, "reason": reason,
                "test_per_group": None}


def _damage(path: Path, err: Exception) -> str:
    if isinstance(err, KeyError):
        return f"{path / 'config.json'} lacks the key {err}; the run directory is damaged"
    return f"{type(err).__name__}: {err}; the run directory is damaged"


def _object(path: Path) -> dict[str, Any]:
    value = read_json(path)
    if not isinstance(value, dict):
        raise GroupRobustError(f"{path} holds a JSON {type(value).__name__}, not an object; the file is damaged")
    return value


def _check_metrics(path: Path, result: dict[str, Any]) -> None:
    """Raise unless ``result`` (the document at ``path``) holds ``metrics.val`` and ``metrics.test``, each
    an object with at least one figure: a run without them has nothing to average, and is no seed."""
    if "metrics" not in result:
        raise GroupRobustError(f"{path} lacks the key 'metrics'; the file is damaged")
    metrics = result["metrics"]
    if not isinstance(metrics, dict):
        raise GroupRobustError(f"{path}: metrics is not an object; the file is damaged")
    for split in ("val", "test"):
        figures = metrics.get(split)
        if not isinstance(figures, dict):
            raise GroupRobustError(f"{path}: metrics lacks the {split} split (metrics.{split}); the file is damaged")
        if all(np.isnan(_number(figures.get(name))) for name in SCALAR_METRICS):
            raise GroupRobustError(f"{path}: metrics.{split} holds none of {', '.join(SCALAR_METRICS)}; "
                                   "the file is damaged")


def _read_run(path: Path, status: str) -> dict[str, Any]:
    config = _object(path / "config.json")
    row: dict[str, Any] = {
        "run_id": path.name, "path": str(path), "status": status,
        "dataset": str(config["dataset"]), "data": canonical_json(config.get("data", {})),
        "inputs": canonical_json(config.get("inputs") or {}), "method": str(config["method"]),
        "seed": int(config["seed"]), "regime": config.get("regime", "full"), "select": config.get("select"),
        "hparams": canonical_json(config.get("hparams", {})), "point": point_id(config), "reason": None,
        "test_per_group": None, "stored_id": str(config.get("run_id") or path.name),
    }
    if status == "failed":
        row["reason"] = str(_object(path / "error.json").get("reason", "unknown"))
        return row
    result = _object(path / "result.json")
    _check_metrics(path / "result.json", result)
    for column, rule in _metric_columns().items():
        row[column] = _number(rule_value(result, rule))
    metrics = result.get("metrics")
    test = metrics.get("test") if isinstance(metrics, dict) else None
    per_group = test.get("per_group") if isinstance(test, dict) else None
    row["test_per_group"] = {str(g.get("name", k)): _number(g.get("acc")) for k, g in per_group.items()
                             if isinstance(g, dict)} if isinstance(per_group, dict) else {}
    selected = result.get("selected")
    row["selected_epoch"] = selected.get("epoch") if isinstance(selected, dict) else None
    row["time_s"] = _number(result.get("time_s"))
    interval = test.get("worst_group_acc_ci95") if isinstance(test, dict) else None
    row["test_worst_group_acc_ci95_half"] = (_number(interval[1]) - _number(interval[0])) / 2 \
        if isinstance(interval, list) and len(interval) == 2 else np.nan
    row["train_groups"] = bool(json.loads(row["hparams"]).get("train_groups"))
    return row


def _published(directory: Path) -> dict[str, Expected]:
    """Run id -> published result, from the sweep manifest in ``directory`` (none without a readable one)."""
    path = directory / MANIFEST
    if not path.is_file():
        return {}
    try:
        return manifest_expected(read_json(path), path)
    except GroupRobustError:
        return {}  # a damaged manifest costs the comparison, never the report


def _mark_copies(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with every run directory that holds a run (by the run id in its ``config.json``) already
    held by another marked as a `COPY`: a copied run directory is one run, never an extra seed. The
    directory named after the run id is the one kept (else the first by name)."""
    by_id: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["status"] != UNREADABLE:
            by_id.setdefault(row["stored_id"], []).append(row)
    for run_id, same in by_id.items():
        if len(same) < 2:
            continue
        kept = next((r for r in same if r["run_id"] == run_id), same[0])
        for row in same:
            if row is not kept:
                row.update(status=COPY, reason=f"holds run {run_id}, as {kept['path']} does; counted once")
    return rows


def collect_runs(directory: Path) -> pd.DataFrame:
    """One row per finished or failed run under ``directory/runs`` (or ``directory`` itself).

    Hidden directories (runs still being written, or killed part-way) are ignored. A run whose
    files are damaged has status ``unreadable`` and its ``reason``; a directory holding a run (by run
    id) that another already holds, e.g. a copied run directory, has status ``copy`` (counted once). Columns ``<split>_<metric>``
    hold every scalar metric and the figure of every selection rule (`grouprobust.selection`):
    accuracies are fractions in [0, 1]; missing metrics are NaN.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise GroupRobustError(f"{directory} is not a directory; pass the output directory of a sweep")
    root = runs_dir(directory) if runs_dir(directory).is_dir() else directory
    rows = [r for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")
            for r in [_run_row(p)] if r is not None]
    if not rows:
        raise GroupRobustError(f"no finished or failed runs under {root}; run the sweep into {directory} first")
    df = pd.DataFrame(_mark_copies(rows))
    for column in ("dataset", "data", "inputs", "method", "seed", "regime", "select", "hparams", "point",
                   "selected_epoch", "train_groups"):
        if column not in df:
            df[column] = None
    for column in ("time_s", "test_worst_group_acc_ci95_half"):
        if column not in df:
            df[column] = np.nan
    for column in _metric_columns():
        if column not in df:
            df[column] = np.nan
    return attach_expected(df, _published(directory))
