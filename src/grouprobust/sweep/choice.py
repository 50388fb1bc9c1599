"""The choice of each (dataset, method)'s hyper-parameter point over a sweep's runs: THE rule of reports
and of ``sweep --best-only``.

For each dataset (with its options and input contents), method, regime and rule, the points (configs
that differ only by seed) are ranked by the **mean over seeds** of the selection rule's figure (each
run at its own selected epoch), ties going to the higher mean average accuracy on the same split,
through `grouprobust.selection.selection_key` and `select_best_index`.
"""

from __future__ import annotations

from typing import Iterator

import pandas as pd

from grouprobust.errors import GroupRobustError
from grouprobust.selection import SELECTION_RULES, SelectionRule, get_rule, select_best_index, selection_key
from grouprobust.sweep.collect import metric_column

#: The columns whose values make one (dataset, method) comparison: points are chosen within each.
VARIANT = ["dataset", "data", "inputs", "method", "regime", "select"]


def choose_point(group: pd.DataFrame, rule: SelectionRule) -> tuple[str, int]:
    """The id of the best point among the finished runs ``group`` of one (dataset, method) under ``rule``,
    and how many points there were; a one-line error when no run has the figure the rule reads."""
    metric = metric_column(rule)
    if group[metric].isna().all():
        dataset, method = group["dataset"].iloc[0], group["method"].iloc[0]
        usable = [r.name for r in SELECTION_RULES.values() if group[metric_column(r)].notna().any()]
        raise GroupRobustError(f"selection rule {rule.name!r} reads {rule.metric} on the {rule.split} split, which no "
                               f"run of {method} on {dataset} has; choose one of: {', '.join(usable) or '(none)'}",
                               subject="select")
    points = group.groupby("point").agg(score=(metric, "mean"), tie=(f"{rule.split}_avg_acc", "mean"))
    keys = [selection_key(score, tie, rule.higher_is_better) for score, tie in zip(points["score"], points["tie"])]
    return str(points.index[select_best_index(keys)]), len(points)


def chosen_points(runs: pd.DataFrame, rule: str | None = None
                  ) -> Iterator[tuple[tuple, pd.DataFrame, SelectionRule, str, int]]:
    """For each (dataset, method) comparison among the finished ``runs`` (rows of
    `grouprobust.sweep.collect.collect_runs`): its `VARIANT` values, its finished runs, the rule
    (``rule``, else the runs' own), the chosen point's id and the number of points, in sorted order."""
    finished = runs[runs["status"] == "finished"]
    for key, group in finished.groupby(VARIANT, sort=True):
        chosen_rule = get_rule(rule or key[VARIANT.index("select")])
        best, n_points = choose_point(group, chosen_rule)
        yield key, group, chosen_rule, best, n_points
