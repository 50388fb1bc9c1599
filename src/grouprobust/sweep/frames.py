"""`load_runs(directory)`: every run under a directory as one pandas DataFrame (the public face of
`grouprobust.sweep.collect.collect_runs`).

Columns (one row per finished or failed run): ``run_id``, ``path``, ``status`` (finished / failed, or
unreadable: damaged files, or a result.json without ``metrics.val`` / ``metrics.test`` figures),
``reason`` (why it failed or is unreadable), the config (``dataset``, ``method``, ``seed``, ``regime``, ``select``,
and ``data`` / ``hparams`` / ``inputs`` (the input files' content fingerprints) as canonical JSON text), one column per dataset option (``data.<name>``)
and per hyper-parameter (``hparams.<name>``), ``point`` (the config's hash without the seed: runs
that differ only by seed share it), ``selected_epoch``, and the selected point's metrics per split
as ``<split>_<metric>`` (``val_worst_group_acc``, ``test_avg_acc`` ...; fractions in [0, 1], NaN
where a run has none), plus ``test_per_group`` (group name -> test accuracy); where the sweep file gives
published results (a method's ``expected``), ``expected_worst_group_acc`` (a fraction) and ``expected_source``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from grouprobust.sweep.collect import collect_runs


def _spread(texts: pd.Series, prefix: str) -> pd.DataFrame:
    """One column per key of the JSON objects in ``texts``, named ``<prefix>.<key>`` (lists as text)."""
    rows = [json.loads(t) if isinstance(t, str) else {} for t in texts]
    frame = pd.DataFrame([{k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in r.items()}
                          for r in rows], index=texts.index)
    return frame.add_prefix(f"{prefix}.")


def load_runs(directory: Path | str) -> pd.DataFrame:
    """Every finished or failed run under ``directory/runs`` (a sweep) or ``directory`` (a folder of run
    directories), one row each; the columns are listed in the module docstring.

    Raises a one-line `GroupRobustError` when ``directory`` holds no run.

    >>> from grouprobust import load_runs
    >>> runs = load_runs("runs/toy")                                             # doctest: +SKIP
    >>> runs.groupby("method")["test_worst_group_acc"].agg(["mean", "std"])      # doctest: +SKIP
    """
    runs = collect_runs(Path(directory))
    extra = [_spread(runs[col], col) for col in ("data", "hparams") if col in runs]
    extra = [e.drop(columns=[c for c in e.columns if c in runs.columns]) for e in extra]
    return pd.concat([runs, *extra], axis=1)


__all__ = ["load_runs"]
