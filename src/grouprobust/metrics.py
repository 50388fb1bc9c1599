"""Accuracy metrics per group, worst-group, group-balanced, average and worst-class.

All accuracies are fractions in [0, 1]. Groups with no sample in a split are reported with
``n = 0`` and ``acc = None`` and left out of the worst-group and group-balanced figures.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def _accuracy_table(correct: np.ndarray, membership: np.ndarray, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per-group accuracy from a boolean (n, m) membership matrix."""
    counts = membership.sum(axis=0)
    hits = (membership & correct[:, None]).sum(axis=0)
    table = {}
    for j, name in enumerate(names):
        n = int(counts[j])
        table[str(j)] = {"name": name, "acc": float(hits[j] / n) if n else None, "n": n}
    return table


def _summaries(table: dict[str, dict[str, Any]]) -> tuple[float | None, float | None]:
    accs = [v["acc"] for v in table.values() if v["acc"] is not None]
    if not accs:
        return None, None
    return float(min(accs)), float(np.mean(accs))


def group_accuracy_metrics(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray | None, n_groups: int,
                           n_classes: int, group_names: Sequence[str] | None = None,
                           eval_groups: np.ndarray | None = None,
                           eval_group_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Metrics dict ``M`` of DESIGN.md for one split.

    Returns ``{"avg_acc", "worst_class_acc", "balanced_acc", "worst_group_acc", "group_balanced_acc",
    "per_group": {"<g>": {"name", "acc", "n"}}, "per_class": {...}, "empty_groups": [...]}``;
    the group entries are ``None`` when ``groups`` is None. With ``eval_groups`` (boolean (n, m),
    possibly overlapping) an ``"eval_groups"`` entry holds the same worst/balanced/per-group figures.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    correct = y_true == y_pred
    class_table = _accuracy_table(correct, y_true[:, None] == np.arange(n_classes)[None, :],
                                  [f"y={c}" for c in range(n_classes)])
    worst_class, balanced = _summaries(class_table)
    out: dict[str, Any] = {
        "avg_acc": float(correct.mean()) if len(correct) else None,
        "worst_class_acc": worst_class,
        "balanced_acc": balanced,
        "per_class": class_table,
        "worst_group_acc": None, "group_balanced_acc": None, "per_group": None, "empty_groups": [],
    }
    if groups is not None:
        names = list(group_names) if group_names is not None else [str(g) for g in range(n_groups)]
        table = _accuracy_table(correct, np.asarray(groups)[:, None] == np.arange(n_groups)[None, :], names)
        out["worst_group_acc"], out["group_balanced_acc"] = _summaries(table)
        out["per_group"] = table
        out["empty_groups"] = [v["name"] for v in table.values() if v["n"] == 0]
    if eval_groups is not None:
        eg = np.asarray(eval_groups, dtype=bool)
        names = list(eval_group_names) if eval_group_names is not None else [f"eval{j}" for j in range(eg.shape[1])]
        table = _accuracy_table(correct, eg, names)
        worst, mean = _summaries(table)
        out["eval_groups"] = {"worst_group_acc": worst, "group_balanced_acc": mean, "per_group": table}
    return out
