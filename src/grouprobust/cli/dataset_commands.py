"""``grouprobust datasets``: the registered datasets as a table, or one dataset (or a benchmark copy) checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

from grouprobust.cli.application import command_group, console, err_console
from grouprobust.cli.options import DataOpt, parse_assignments
from grouprobust.cli.render import datasets_table, group_count_tables
from grouprobust.data import list_datasets, load_dataset
from grouprobust.data.readers import READERS, check_benchmark
from grouprobust.data.split_counts import check_splits
from grouprobust.errors import GroupRobustError

commands = command_group()


def _dataset_rows() -> list[dict[str, Any]]:
    rows = []
    for entry in list_datasets():
        row: dict[str, Any] = {"name": entry.name, "description": entry.description, "sizes": None,
                               "groups": "user data: --root"}
        if entry.name == "table":
            row["groups"] = "your table: --data path=FILE label=COL attribute=COL"
        if entry.embedded:
            s = load_dataset(entry.name, 0)
            filled = "/".join(str(d.n_groups - len(d.empty_groups())) for d in s)
            row.update(sizes=(len(s.train), len(s.val), len(s.test)), groups=f"{s.train.n_groups} ({filled})")
        rows.append(row)
    return rows


@commands.command()
def datasets(
    check: Optional[str] = typer.Option(None, "--check", help="validate your copy of benchmark NAME (needs --root), or load dataset NAME with --data "
                                         "options (e.g. table) and print its group counts per split"),
    root: Optional[Path] = typer.Option(None, "--root", help="folder of the benchmark to check (docs/datasets.md)"),
    data: List[str] = DataOpt,
) -> None:
    """List datasets with their description, split sizes and group counts; --check validates a downloaded copy."""
    if check is None:
        with err_console.status("building the embedded datasets to count their groups"):
            rows = _dataset_rows()
        console.print(datasets_table(rows))
        return
    if check not in READERS:
        _check_dataset(check, parse_assignments(data, "--data"))
        return
    if root is None:
        raise GroupRobustError(f"--check {check} needs --root PATH, the folder of your copy (see docs/datasets.md)")

    with err_console.status(f"reading and checking {check} under {root}"):
        result = check_benchmark(check, root, **parse_assignments(data, "--data"))
    for table in group_count_tables(result):
        console.print(table)
    console.print(f"{check}: {len(result.table.table)} samples read from {result.table.source}; the layout is valid.")


def _check_dataset(name: str, options: dict[str, str]) -> None:
    """Load a registered dataset (e.g. ``table`` with --data path=...) and print its group counts per split."""
    with err_console.status(f"loading {name}"):
        result = check_splits(load_dataset(name, 0, **options))
    for table in group_count_tables(result):
        console.print(table)
    if result.inputs:
        console.print(result.inputs, markup=False, highlight=False)
    where = f" read from {result.source}" if result.source else ""
    console.print(f"{name}: {sum(result.samples.values())} samples{where}; "
                  f"{len(result.group_counts)} groups, every split loads.")
