"""Rich tables: run results, comparisons, the catalogs (datasets, methods, selection rules), benchmark checks."""

from __future__ import annotations

from typing import Any, Iterable

from rich.console import Console
from rich.table import Table

from grouprobust.selection import DEFAULT_RULE, LABEL_KINDS


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


def datasets_table(rows: Iterable[dict[str, Any]]) -> Table:
    """One row per dataset: ``name``, ``description``, ``sizes`` (train/val/test or None) and ``groups`` text."""
    table = Table(title="datasets")
    table.add_column("name", no_wrap=True)
    for col in ("description", "train", "val", "test", "groups (non-empty train/val/test)"):
        table.add_column(col, overflow="fold")
    for row in rows:
        sizes = [str(n) for n in row["sizes"]] if row["sizes"] is not None else ["—"] * 3
        table.add_row(row["name"], row["description"], *sizes, row["groups"])
    return table


def methods_table(rows: Iterable[dict[str, Any]]) -> Table:
    """The rows of `grouprobust.methods.list_methods`: name, kind (loop or two-stage), the group labels each
    needs, what it does and the other libraries' names for it."""
    table = Table(title="methods")
    table.add_column("name", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("group labels needed")
    table.add_column("what it does", overflow="fold")
    table.add_column("same as", overflow="fold")
    needs_text = {"none": "none", "val": "validation only", "full": "train + validation"}
    for row in rows:
        table.add_row(row["name"], row["kind"], needs_text[row["needs"]], row["summary"], row.get("same_as") or "—")
    return table


def selection_rules_table(rules: Iterable[dict[str, Any]]) -> Table:
    """The rows of `grouprobust.selection.list_rules`; oracle rules in red."""
    table = Table(title="model-selection rules (ORACLE rules read the test split: never report them as a result)")
    for col in ("name", "split", "figure (best = max unless noted)", "labels needed", "what it picks", "reproduces"):
        table.add_column(col, overflow="fold")
    for rule in rules:
        name = rule["name"] + (" (default)" if rule["name"] == DEFAULT_RULE else "")
        style = "bold red" if rule["oracle"] else None
        metric = rule["metric"] + ("" if rule["direction"] == "max" else " (best = min)")
        table.add_row(name, rule["split"] + (" [ORACLE]" if rule["oracle"] else ""), metric,
                      LABEL_KINDS[rule["needs"]], rule["description"], rule["source"] or "—", style=style)
    return table


def group_count_tables(check: Any) -> list[Table]:
    """The group counts of a `grouprobust.data.readers.BenchmarkCheck`: training groups, evaluation groups."""
    out = []
    titles = {"groups": f"{check.name}: groups (class, attribute) per split",
              "eval_groups": f"{check.name}: evaluation groups (overlapping) per split"}
    for key, counts in (("groups", check.group_counts), ("eval_groups", check.eval_group_counts)):
        if counts is None:
            continue
        t = Table(title=titles[key])
        t.add_column("group")
        for split in check.splits:
            t.add_column(split, justify="right")
        for name, row in counts.iterrows():
            t.add_row(str(name), *(str(int(row[s])) for s in check.splits))
        t.add_row("[bold]samples[/bold]", *(str(check.samples[s]) for s in check.splits))
        out.append(t)
    return out


def inference_quality_table(quality: dict[str, Any]) -> Table:
    """Recovery of the true training groups by inferred ones (`grouprobust.group_inference.inference_quality`)."""
    table = Table(title=f"inferred vs true groups (reporting only): adjusted Rand index "
                        f"{quality['adjusted_rand_index']:.3f}, worst-group recall {_pct(quality['worst_group_recall'])}%")
    for col, justify in (("true group", "left"), ("n", "right"), ("precision %", "right"), ("recall %", "right")):
        table.add_column(col, justify=justify)
    for entry in quality["per_group"].values():
        table.add_row(entry["name"], str(entry["n"]), _pct(entry["precision"]), _pct(entry["recall"]))
    return table
