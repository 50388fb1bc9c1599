"""Rich tables for results: per-group accuracy and the summary figures."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def per_group_table(result: dict[str, Any], max_rows: int = 12) -> Table:
    """Per-group validation and test accuracy (%) and counts at the selected epoch."""
    val, test = result["metrics"]["val"], result["metrics"]["test"]
    sel = result["selected"]
    title = f"{result['dataset']} · {result['method']} · seed {result['seed']} · selected epoch {sel['epoch']} by {sel['rule']}"
    table = Table(title=title + (" [ORACLE]" if sel.get("oracle") else ""))
    for col, justify in (("group", "left"), ("train n", "right"), ("val n", "right"), ("val acc %", "right"),
                         ("test n", "right"), ("test acc %", "right")):
        table.add_column(col, justify=justify)
    test_groups = test.get("per_group") or {}
    val_groups = val.get("per_group") or {}
    train_counts = result.get("train_group_counts") or []
    rows = sorted(test_groups, key=lambda g: (test_groups[g]["acc"] is None, test_groups[g]["acc"] or 0.0))
    for g in rows[:max_rows]:
        tg, vg = test_groups[g], val_groups.get(g, {})
        n_train = str(train_counts[int(g)]) if int(g) < len(train_counts) else "—"
        table.add_row(tg["name"], n_train, str(vg.get("n", "—")), _pct(vg.get("acc")), str(tg["n"]), _pct(tg["acc"]))
    if len(rows) > max_rows:
        table.caption = f"{len(rows) - max_rows} more groups not shown (worst {max_rows} by test accuracy listed)"
    return table


def summary_table(result: dict[str, Any]) -> Table:
    """Worst-group, group-balanced, average and worst-class accuracy (%) on val and test."""
    table = Table(title="summary (accuracy %)")
    table.add_column("split")
    for col in ("worst-group", "group-balanced", "average", "worst-class"):
        table.add_column(col, justify="right")
    for split in ("val", "test"):
        m = result["metrics"][split]
        table.add_row(split, _pct(m.get("worst_group_acc")), _pct(m.get("group_balanced_acc")), _pct(m.get("avg_acc")),
                      _pct(m.get("worst_class_acc")))
    return table


def print_result(result: dict[str, Any], console: Console | None = None) -> None:
    """Print the per-group table and the summary."""
    console = console or Console()
    console.print(per_group_table(result))
    console.print(summary_table(result))


def comparison_table(results: dict[str, dict[str, Any]]) -> Table:
    """Test accuracies (%) of several runs side by side, one row per run label."""
    table = Table(title="test accuracy % at each run's selected epoch")
    table.add_column("method")
    for col in ("worst-group", "group-balanced", "average"):
        table.add_column(col, justify="right")
    for label, result in results.items():
        m = result["metrics"]["test"]
        table.add_row(label, _pct(m.get("worst_group_acc")), _pct(m.get("group_balanced_acc")), _pct(m.get("avg_acc")))
    return table
