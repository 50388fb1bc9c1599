"""`load_history(run)`: a run directory's ``history.jsonl`` as a pandas DataFrame.

A loop run logs one line per epoch (``epoch``, ``train_loss``, the validation and test figures, the
method's own state such as GroupDRO's ``group_weights``); a two-stage run logs its estimator's outer
steps (GSR) or regularisation strengths (DFR), and its stage-1 run sits in ``<run>/stage1``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from grouprobust.errors import GroupRobustError

HISTORY = "history.jsonl"


def load_history(run: Path | str) -> pd.DataFrame:
    """One row per line of ``<run>/history.jsonl``, in the order written.

    The logged metrics become ``<split>_<metric>`` columns (``val_worst_group_acc``, as in `load_runs`)
    and ``<split>_group_acc[<group name>]``; other nested objects become dotted columns; lists
    (``group_weights``) stay one cell each. Accuracies are fractions in [0, 1], losses in nats. Raises a one-line
    `GroupRobustError` when ``run`` is not a run directory or a line is damaged.
    """
    run = Path(run)
    path = run / HISTORY
    if not path.is_file():
        what = "is not a directory" if not run.is_dir() else f"holds no {HISTORY}"
        raise GroupRobustError(f"{run} {what}; pass a run directory (a two-stage run's stage 1 is <run>/stage1)",
                               subject="run")
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise GroupRobustError(f"{path} line {number} is not valid JSON ({err.msg}); the file is damaged",
                                   subject="run") from None
    return pd.json_normalize([_flat(e) for e in entries], sep=".") if entries else pd.DataFrame()


def _flat(entry: dict) -> dict:
    """A history line with its ``metrics`` as ``<split>_<metric>`` scalars (the names `load_runs` uses) and
    per-group accuracies as ``<split>_group_acc[<group name>]``; other per-class/attribute tables dropped."""
    out = {k: v for k, v in entry.items() if k != "metrics"}
    for split, metrics in (entry.get("metrics") or {}).items():
        for name, value in (metrics or {}).items():
            if name == "per_group" and isinstance(value, dict):
                out.update({f"{split}_group_acc[{g.get('name', k)}]": g.get("acc") for k, g in value.items()})
            elif value is None or isinstance(value, (int, float, str, bool)):
                out[f"{split}_{name}"] = value
    return out


__all__ = ["HISTORY", "load_history"]
