"""The ``grouprobust selection-rules`` command: every model-selection rule and the labels it reads."""

from __future__ import annotations

from rich.table import Table

from grouprobust.cli import app, console


@app.command("selection-rules")
def selection_rules() -> None:
    """List model-selection rules (for --select), the labels each needs, and the oracle ones."""
    from grouprobust.selection import DEFAULT_RULE, LABEL_KINDS, list_rules

    table = Table(title="model-selection rules (ORACLE rules read the test split: never report them as a result)")
    for col in ("name", "split", "figure (best = max unless noted)", "labels needed", "what it picks", "reproduces"):
        table.add_column(col, overflow="fold")
    for rule in list_rules():
        name = rule["name"] + (" (default)" if rule["name"] == DEFAULT_RULE else "")
        style = "bold red" if rule["oracle"] else None
        metric = rule["metric"] + ("" if rule["direction"] == "max" else " (best = min)")
        table.add_row(name, rule["split"] + (" [ORACLE]" if rule["oracle"] else ""), metric,
                      LABEL_KINDS[rule["needs"]], rule["description"], rule["source"] or "—", style=style)
    console.print(table)
