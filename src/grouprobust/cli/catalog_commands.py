"""``grouprobust datasets``, ``methods``, ``losses`` and ``selection-rules``: what the library offers, as tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

from grouprobust.cli.application import app, console, err_console
from grouprobust.cli.options import DataOpt, parse_assignments
from grouprobust.cli.render import LABELS_READ, datasets_table, group_count_tables, methods_table, params_table
from grouprobust.cli.render import losses_table, selection_rules_table, shared_loss_params_table
from grouprobust.data import list_datasets, load_dataset
from grouprobust.errors import GroupRobustError
from grouprobust.selection import list_rules


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


@app.command()
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
    # Lazy: the readers import pandas, which the plain listing does not need.
    from grouprobust.data.readers import READERS, check_benchmark

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
    from grouprobust.data.split_counts import check_splits  # imports pandas: only when a dataset is checked

    with err_console.status(f"loading {name}"):
        result = check_splits(load_dataset(name, 0, **options))
    for table in group_count_tables(result):
        console.print(table)
    if result.inputs:
        console.print(result.inputs, markup=False, highlight=False)
    where = f" read from {result.source}" if result.source else ""
    console.print(f"{name}: {sum(result.samples.values())} samples{where}; "
                  f"{len(result.group_counts)} groups, every split loads.")


@app.command()
def methods(
    name: Optional[str] = typer.Argument(None, help="a method: print its parameters (type, default, search range, "
                                         "constraint, help) and the group labels it reads"),
) -> None:
    """List methods and the group labels each needs; `grouprobust methods NAME` lists one method's parameters."""
    # Lazy: the method classes import torch, which `grouprobust --help` does not need.
    from grouprobust.methods import list_methods

    if name is None:
        console.print(methods_table(list_methods()))
        console.print("Parameters of one method: grouprobust methods NAME")
        return
    _print_method(name)


def _print_method(name: str) -> None:
    from grouprobust.losses import get_loss
    from grouprobust.methods.base import TwoStageMethod
    from grouprobust.methods.registry import get_method
    from grouprobust.params import TRAIN_PARAMS

    cls = get_method(name)
    two_stage = issubclass(cls, TwoStageMethod)
    console.print(f"[bold]{cls.name}[/bold] ({cls.kind}): {cls.summary}", highlight=False)
    if getattr(cls, "same_as", ""):
        console.print(f"same as: {cls.same_as}", highlight=False)
    console.print(f"group labels read: {LABELS_READ[cls.needs]}", highlight=False)
    sections = [("method", cls.params)]
    if two_stage:
        sections.append(("two-stage protocol", cls.protocol_params))
    sections.append(("stage-1 training" if two_stage else "training", TRAIN_PARAMS))
    sections.append(("loss ce (default)", get_loss(TRAIN_PARAMS["loss"].default).params))
    console.print(params_table(f"{cls.name}: parameters (--set NAME=VALUE)", sections))
    console.print("Another loss adds its own parameters: grouprobust losses NAME", highlight=False)


@app.command()
def losses(
    name: Optional[str] = typer.Argument(None, help="a loss: print its parameters (type, default, search range, "
                                         "constraint, help)"),
) -> None:
    """List losses (for --set loss=NAME) with their parameters: defaults, constraints, search ranges."""
    # Lazy: the losses import torch, which `grouprobust --help` does not need.
    from grouprobust.losses import CLASS_WEIGHT_PARAMS, get_loss, list_losses

    if name is None:
        console.print(losses_table(list_losses(), CLASS_WEIGHT_PARAMS))
        console.print(shared_loss_params_table(CLASS_WEIGHT_PARAMS))
        return
    spec = get_loss(name)
    console.print(f"[bold]{spec.name}[/bold]: {spec.description}", highlight=False)
    own = {k: p for k, p in spec.params.items() if k not in CLASS_WEIGHT_PARAMS}
    console.print(params_table(f"{spec.name}: parameters (--set NAME=VALUE)",
                               [("loss", own), ("every loss", CLASS_WEIGHT_PARAMS)]))


@app.command("selection-rules")
def selection_rules() -> None:
    """List model-selection rules (for --select), the labels each needs, and the oracle ones."""
    console.print(selection_rules_table(list_rules()))
