"""``grouprobust train`` and ``grouprobust demo``: train runs with a progress bar and print their tables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from grouprobust.cli.application import command_group, console, err_console
from grouprobust.cli.options import (DataOpt, KeepCheckpointsOpt, SetOpt, ThreadsOpt, TrackOpt, merge_shortcut,
                                     parse_assignments)
from grouprobust.cli.progress import training_progress
from grouprobust.cli.render import comparison_table, print_result
from grouprobust.config import resolve_config
from grouprobust.data import list_datasets
from grouprobust.distributed import is_main_process
from grouprobust.methods import list_methods
from grouprobust.runs import run
from grouprobust.threads import apply_thread_policy
from grouprobust.tracking import make_tracker
from grouprobust.two_stage import stage1_option

commands = command_group()


def complete_dataset(incomplete: str) -> list[str]:
    """Shell completion of ``--dataset``: registered dataset names starting with ``incomplete``."""
    return [e.name for e in list_datasets() if e.name.startswith(incomplete)]


def complete_method(incomplete: str) -> list[str]:
    """Shell completion of ``--method``: registered method names starting with ``incomplete``."""
    return [m["name"] for m in list_methods() if m["name"].startswith(incomplete)]


def train_and_report(dataset: str, method: str, seed: int, sets: list[str], data: list[str], out: Path,
                     regime: str, select: Optional[str], device: Optional[str], epochs: Optional[int],
                     quiet: bool = False, from_dir: Optional[Path] = None, show: bool = True,
                     track: Optional[str] = None, threads: Optional[int] = None, backbone: Optional[str] = None,
                     weights: Optional[Path] = None, root: Optional[Path] = None, download: bool = False,
                     groups: Optional[Path] = None, keep_checkpoints: bool = False) -> dict:
    """Resolve the config, train with a progress bar, print the tables (if ``show``); returns the result."""
    apply_thread_policy(threads)

    hparams = parse_assignments(sets, "--set", join=False)
    if epochs is not None:
        hparams = merge_shortcut(hparams, "epochs", str(epochs), "--epochs")
    if from_dir is not None:
        hparams = merge_shortcut(hparams, "stage1", stage1_option(method, from_dir), "--from")
    if groups is not None:
        hparams = merge_shortcut(hparams, "train_groups", str(groups.resolve()), "--groups")
    config = resolve_config(dataset, method, seed, parse_assignments(data, "--data"), hparams, regime, select,
                            backbone=backbone, weights=None if weights is None else str(weights.expanduser().resolve()),
                            root=None if root is None else str(root.expanduser().resolve()))
    main = is_main_process()  # under torchrun, rank 0 alone shows progress, writes, tracks and prints
    quiet = quiet or not main
    tracker = make_tracker(track, store_dir=Path(os.path.abspath(out)).parent) if main else None
    total, unit = ((config.hparams["max_steps"], "steps") if config.hparams["eval_every_steps"]
                   else (config.hparams["epochs"], "epochs"))
    with training_progress(f"{method} on {dataset} ({unit})", total, err_console, disable=quiet) as on_epoch:
        result = run(config, out, device=device, on_epoch=on_epoch, tracker=tracker, download=download,
                     keep_checkpoints=keep_checkpoints)
    if not main:
        return result
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


@commands.command()
def train(
    dataset: str = typer.Option(..., "--dataset", "-d", help="dataset name (see `grouprobust datasets`)",
                                autocompletion=complete_dataset),
    method: str = typer.Option("erm", "--method", "-m", help="method name (list: `grouprobust methods`; its parameters: `grouprobust methods NAME`)",
                               autocompletion=complete_method),
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
    track: List[str] = TrackOpt,
    threads: Optional[int] = ThreadsOpt,
    groups: Optional[Path] = typer.Option(None, "--groups", help="inferred training groups written by "
                                          "`grouprobust infer-groups` (shortcut for --set train_groups=FILE)"),
    root: Optional[Path] = typer.Option(None, "--root", help="the benchmark's own folder (or a table's), trained "
                                        "end to end through --backbone (shortcut for --data root=DIR)"),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="pretrained backbone fine-tuned end to end: "
                                           "resnet50, timm:NAME, hf:DIR, bert-base-uncased, all-MiniLM-L6-v2, "
                                           "package.module:callable, a TorchScript or .pt2 file (docs/finetuning.md)"),
    weights: Optional[Path] = typer.Option(None, "--weights", help="the backbone's weights: a state-dict file or a "
                                           "model folder (default: the backbone's own local weights)"),
    download: bool = typer.Option(False, "--download", help="allow fetching the backbone's pretrained weights from "
                                  "the network when no local copy exists"),
    keep_checkpoints: bool = KeepCheckpointsOpt,
) -> None:
    """Train one method on one dataset and write a run directory (hyper-parameters: `grouprobust methods NAME`).

    The run checkpoints every epoch (--set checkpoint_every=N) beside OUT; running the same command again
    after a kill or SIGTERM/SIGINT resumes it (docs/long-runs.md)."""
    train_and_report(dataset, method, seed, sets, data, out, regime, select, device, epochs, quiet, from_dir,
                     track=",".join(track) or None, threads=threads, backbone=backbone, weights=weights, root=root, download=download,
                     groups=groups, keep_checkpoints=keep_checkpoints)


@commands.command()
def demo(out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="folder for the demo's run directories"),
         threads: Optional[int] = ThreadsOpt) -> None:
    """Train ERM and GroupDRO on colored-digits (1% bias-conflicting) and compare their groups."""
    console.print("[bold]grouprobust demo[/bold]: colored-digits, where color gives the digit away in 99% of "
                  "training images and is independent of it at test time (100 digit x color groups).")
    results = {"erm": train_and_report("colored-digits", "erm", 0, [], ["conflict=0.01"], out / "erm", "full",
                                       None, None, None, threads=threads)}
    console.print("\nNow GroupDRO, which sees the groups in training and up-weights the worst of them:")
    results["groupdro"] = train_and_report("colored-digits", "groupdro", 0, [], ["conflict=0.01"], out / "groupdro",
                                           "full", None, None, None, show=False, threads=threads)
    console.print(comparison_table(results))
    console.print("Next: `grouprobust methods` lists every method, `grouprobust train --help` shows the options.")
