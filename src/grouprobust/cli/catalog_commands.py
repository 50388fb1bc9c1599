"""``grouprobust datasets``, ``methods``, ``losses`` and ``selection-rules``: what the library offers, as tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

from grouprobust.cli.application import app, console
from grouprobust.cli.options import DataOpt, parse_assignments
from grouprobust.cli.render import datasets_table, group_count_tables, methods_table, selection_rules_table
from grouprobust.cli.render import losses_table, shared_loss_params_table
from grouprobust.data import list_datasets, load_dataset
from grouprobust.errors import GroupRobustError
from grouprobust.selection import list_rules


def _dataset_rows() -> list[dict[str, Any]]:
    rows = []
    for entry in list_datasets():
        row: dict[str, Any] = {"name": entry.name, "description": entry.description, "sizes": None,
                               "groups": "user data: --root"}
        if entry.embedded:
            s = load_dataset(entry.name, 0)
            filled = "/".join(str(d.n_groups - len(d.empty_groups())) for d in s)
            row.update(sizes=(len(s.train), len(s.val), len(s.test)), groups=f"{s.train.n_groups} ({filled})")
        rows.append(row)
    return rows


@app.command()
def datasets(
    check: Optional[str] = typer.Option(None, "--check", help="validate your copy of benchmark NAME (needs --root)"),
    root: Optional[Path] = typer.Option(None, "--root", help="folder of the benchmark to check (docs/datasets.md)"),
    data: List[str] = DataOpt,
) -> None:
    """List datasets with their description, split sizes and group counts; --check validates a downloaded copy."""
    if check is None:
        console.print(datasets_table(_dataset_rows()))
        return
    if root is None:
        raise GroupRobustError(f"--check {check} needs --root PATH, the folder of your copy (see docs/datasets.md)")
    # Lazy: the readers import pandas, which the plain listing does not need.
    from grouprobust.data.readers import check_benchmark

    result = check_benchmark(check, root, **parse_assignments(data, "--data"))
    for table in group_count_tables(result):
        console.print(table)
    console.print(f"{check}: {len(result.table.table)} samples read from {result.table.source}; the layout is valid.")


@app.command()
def methods() -> None:
    """List methods and the group labels each needs."""
    # Lazy: the method classes import torch, which `grouprobust --help` does not need.
    from grouprobust.methods import list_methods

    console.print(methods_table(list_methods()))


@app.command()
def losses() -> None:
    """List losses (for --set loss=NAME) with their parameters: defaults, constraints, search ranges."""
    # Lazy: the losses import torch, which `grouprobust --help` does not need.
    from grouprobust.losses import CLASS_WEIGHT_PARAMS, list_losses

    console.print(losses_table(list_losses(), CLASS_WEIGHT_PARAMS))
    console.print(shared_loss_params_table(CLASS_WEIGHT_PARAMS))


@app.command("selection-rules")
def selection_rules() -> None:
    """List model-selection rules (for --select), the labels each needs, and the oracle ones."""
    console.print(selection_rules_table(list_rules()))
