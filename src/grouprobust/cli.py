"""The ``grouprobust`` command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from grouprobust.errors import GroupRobustError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, compare and diagnose classifiers that must work for every group.")
console = Console()
err_console = Console(stderr=True)

SetOpt = typer.Option([], "--set", help="hyper-parameter key=value (repeatable); see `grouprobust methods`")
DataOpt = typer.Option([], "--data", help="dataset option key=value (repeatable); see `grouprobust datasets`")


def train_and_report(dataset: str, method: str, seed: int, sets: list[str], data: list[str], out: Path,
                     regime: str, select: Optional[str], device: Optional[str], epochs: Optional[int],
                     quiet: bool = False, from_dir: Optional[Path] = None, show: bool = True) -> dict:
    """Resolve the config, train with a progress bar, print the tables (if ``show``); returns the result."""
    from grouprobust.config import resolve_config
    from grouprobust.display import print_result
    from grouprobust.options import parse_assignments
    from grouprobust.runs import run

    hparams = parse_assignments(sets, "--set")
    if epochs is not None:
        hparams["epochs"] = str(epochs)
    if from_dir is not None:
        from grouprobust.two_stage import stage1_option

        hparams["stage1"] = stage1_option(method, from_dir)
    config = resolve_config(dataset, method, seed, parse_assignments(data, "--data"), hparams, regime, select)
    total = config.hparams["epochs"]
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(),
                  console=err_console, transient=True, disable=quiet) as progress:
        task = progress.add_task(f"{method} on {dataset}", total=total, loss=float("nan"))
        result = run(config, out, device=device,
                     on_epoch=lambda epoch, loss: progress.update(task, completed=epoch, loss=loss))
    if result.get("reused"):
        console.print(f"[yellow]{out} already holds this finished run (id {result.get('run_id')}); showing it. "
                      "Delete the directory to train again.[/yellow]")
    if show:
        print_result(result, console)
    empty = result.get("train_empty_groups") or []
    if empty and show:
        console.print(f"[yellow]{len(empty)} group(s) have no training sample: {', '.join(empty[:8])}"
                      f"{' ...' if len(empty) > 8 else ''}[/yellow]")
    console.print(f"run directory: [bold]{out}[/bold]  ({result['time_s']:.1f} s)")
    return result


@app.command()
def train(
    dataset: str = typer.Option(..., "--dataset", "-d", help="dataset name (see `grouprobust datasets`)"),
    method: str = typer.Option("erm", "--method", "-m", help="method name (see `grouprobust methods`)"),
    out: Path = typer.Option(..., "--out", "-o", help="run directory to write"),
    seed: int = typer.Option(0, "--seed"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="shortcut for --set epochs=N"),
    sets: List[str] = SetOpt,
    data: List[str] = DataOpt,
    regime: str = typer.Option("full", "--regime", help="which splits carry group labels: full, val or none"),
    select: Optional[str] = typer.Option(None, "--select", help="model-selection rule (default: val_worst_group_acc; "
                                         "list: `grouprobust selection-rules`)"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N (default: CUDA when present)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
    from_dir: Optional[Path] = typer.Option(None, "--from", help="gsr/gsr-hf/dfr: reuse this run's model as stage 1"),
) -> None:
    """Train one method on one dataset and write a run directory."""
    train_and_report(dataset, method, seed, sets, data, out, regime, select, device, epochs, quiet, from_dir)


@app.command()
def demo(out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="folder for the demo's run directories")
         ) -> None:
    """Train ERM and GroupDRO on colored-digits (1% bias-conflicting) and compare their groups."""
    from grouprobust.display import comparison_table

    console.print("[bold]grouprobust demo[/bold]: colored-digits, where color gives the digit away in 99% of "
                  "training images and is independent of it at test time (100 digit x color groups).")
    results = {"erm": train_and_report("colored-digits", "erm", 0, [], ["conflict=0.01"], out / "erm", "full",
                                       None, None, None)}
    console.print("\nNow GroupDRO, which sees the groups in training and up-weights the worst of them:")
    results["groupdro"] = train_and_report("colored-digits", "groupdro", 0, [], ["conflict=0.01"], out / "groupdro",
                                           "full", None, None, None, show=False)
    console.print(comparison_table(results))
    console.print("Next: `grouprobust methods` lists every method, `grouprobust train --help` shows the options.")


@app.command()
def datasets(
    check: Optional[str] = typer.Option(None, "--check", help="validate your copy of benchmark NAME (needs --root)"),
    root: Optional[Path] = typer.Option(None, "--root", help="folder of the benchmark to check (docs/datasets.md)"),
    data: List[str] = DataOpt,
) -> None:
    """List datasets with their description, split sizes and group counts; --check validates a downloaded copy."""
    from grouprobust.data import list_datasets, load_dataset

    if check is not None:
        from grouprobust.data.readers.report import check_benchmark

        check_benchmark(check, root, data, console)
        return

    table = Table(title="datasets")
    table.add_column("name", no_wrap=True)
    for col in ("description", "train", "val", "test", "groups (non-empty train/val/test)"):
        table.add_column(col, overflow="fold")
    for entry in list_datasets():
        if entry.embedded:
            s = load_dataset(entry.name, 0)
            sizes = [str(len(s.train)), str(len(s.val)), str(len(s.test))]
            filled = "/".join(str(d.n_groups - len(d.empty_groups())) for d in s)
            groups = f"{s.train.n_groups} ({filled})"
        else:
            sizes, groups = ["—"] * 3, "user data: --root"
        table.add_row(entry.name, entry.description, *sizes, groups)
    console.print(table)


@app.command()
def methods() -> None:
    """List methods and the group labels each needs."""
    from grouprobust.methods import list_methods

    table = Table(title="methods")
    table.add_column("name", no_wrap=True)
    table.add_column("group labels needed")
    table.add_column("what it does", overflow="fold")
    needs_text = {"none": "none", "val": "validation only", "full": "train + validation"}
    for row in list_methods():
        table.add_row(row["name"], needs_text[row["needs"]], row["summary"])
    console.print(table)


# Modules that add commands to `app` when imported (each: `from grouprobust.cli import app` + `@app.command()`
# or `app.add_typer(...)`). One line per module keeps feature commands out of this file.
COMMAND_MODULES: list[str] = [
    "grouprobust.selection_cli",
    "grouprobust.feature_command",
    "grouprobust.analysis.commands",
    "grouprobust.sweep.commands",
]


def _load_command_modules() -> None:
    import importlib

    for module in COMMAND_MODULES:
        importlib.import_module(module)


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: user errors print one line and exit 2, never a traceback."""
    try:
        _load_command_modules()
        app(args=argv, standalone_mode=True)
    except GroupRobustError as err:
        err_console.print(f"error: {err}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted; nothing was written for the unfinished run")
        sys.exit(130)


if __name__ == "__main__":
    # Run through the imported module so command modules register on the same `app`.
    from grouprobust.cli import main as _main

    _main()
