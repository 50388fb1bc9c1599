"""Sampling error of accuracies: 95 % Wilson score intervals, and warnings about groups too small to trust.

Every accuracy in a metrics dict ``M`` (`grouprobust.metrics`) is a proportion of ``n`` examples; with
a handful of examples it says little (2 of 5 right: 40 %, and anything from 12 % to 77 % is
consistent with it). `add_intervals` gives every per-group, per-class and per-attribute accuracy a
``ci95`` entry, and the worst-group and worst-class accuracies ``worst_group_acc_ci95`` /
``worst_class_acc_ci95`` (the interval of the group or class that attains the minimum; among ties,
the smallest one). The interval is Wilson's score interval: unlike the normal approximation it stays
inside [0, 1] and is not empty at 0 or n correct; its coverage is close to 95 % for every ``n``.

`small_group_warnings` names the groups a run selected its model on (validation) or fitted a last
layer on (a two-stage run's target half) that have fewer than `MIN_GROUP_ROWS` examples.
It imports only `grouprobust.grouping`.
"""

from __future__ import annotations

import math
from typing import Any

from grouprobust.grouping import split_group_names

#: z of a two-sided 95 % interval.
Z95 = 1.959963984540054
#: Fewer examples than this in a group used for selection or fitting draws a warning: below 20 examples a
#: 95 % interval of an accuracy near 50 % is wider than +-20 percentage points.
MIN_GROUP_ROWS = 20
#: The tables of a metrics dict whose entries are accuracies over ``n`` examples.
TABLES = ("per_group", "per_class", "per_attr")


def wilson_interval(accuracy: float, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval ``(low, high)`` (fractions) of an accuracy measured on ``n`` examples;
    None for ``n = 0``."""
    if not n:
        return None
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _annotate_table(table: dict[str, Any] | None) -> tuple[float, int] | None:
    """Add ``ci95`` to every entry of ``table``; returns ``(acc, n)`` of its worst entry (smallest n on ties)."""
    if not table:
        return None
    worst = None
    for entry in table.values():
        acc, n = entry.get("acc"), entry.get("n")
        if acc is None or not n:
            continue
        interval = wilson_interval(acc, n)
        entry["ci95"] = None if interval is None else [interval[0], interval[1]]
        if worst is None or (acc, n) < worst:
            worst = (acc, n)
    return worst


def add_intervals(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` (one split's ``M``, changed in place and returned) with 95 % Wilson intervals: ``ci95`` on
    every entry of ``per_group``, ``per_class``, ``per_attr`` (and of ``eval_groups``' ``per_group``),
    ``worst_group_acc_ci95`` and ``worst_class_acc_ci95`` (``[low, high]`` fractions, None when undefined)."""
    worst = {table: _annotate_table(metrics.get(table)) for table in TABLES}
    for key, table in (("worst_group_acc", "per_group"), ("worst_class_acc", "per_class")):
        found = worst[table]
        interval = None if found is None else wilson_interval(*found)
        metrics[f"{key}_ci95"] = None if interval is None else [interval[0], interval[1]]
    if isinstance(metrics.get("eval_groups"), dict):
        add_intervals(metrics["eval_groups"])
    return metrics


def small_group_warnings(metrics: dict[str, Any], threshold: int = MIN_GROUP_ROWS) -> list[str]:
    """One line per use of too few examples: groups of the validation split (selection) and of a two-stage
    run's target half (the last-layer fit) with fewer than ``threshold`` examples. ``metrics`` is a
    result's ``{"val": M, "test": M[, "target": M]}``."""
    uses = (("val", "model selection"), ("target", "the last-layer fit"))
    lines = []
    for split, use in uses:
        table = (metrics.get(split) or {}).get("per_group") or {}
        small = [f"{entry['name']} ({entry['n']})" for entry in table.values() if 0 < (entry.get("n") or 0) < threshold]
        if small:
            lines.append(f"{use} read groups with fewer than {threshold} {split} examples: {', '.join(small)}; "
                         "their accuracies (and the selection) carry wide sampling error, see the 95% intervals")
    return lines


def name_classes_and_attributes(metrics: dict[str, Any]) -> None:
    """Name ``per_class`` and ``per_attr`` entries (``y=0``, ``a=1`` from `grouprobust.metrics`) after the class
    and attribute names the group names are made of (``income=>50K``, ``race=White``), in place."""
    per_group, per_class, per_attr = (metrics.get(k) or {} for k in ("per_group", "per_class", "per_attr"))
    if not per_group or not per_class:
        return
    n_classes = len(per_class)
    named = split_group_names([entry["name"] for entry in per_group.values()], n_classes, len(per_group) // n_classes)
    if named is None:
        return
    for table, names in ((per_class, named[0]), (per_attr, named[1])):
        if len(table) == len(names):
            for entry, name in zip(table.values(), names):
                entry["name"] = name


def annotate_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """One split's ``M`` (changed in place and returned) with class and attribute names and 95% intervals."""
    name_classes_and_attributes(metrics)
    return add_intervals(metrics)
