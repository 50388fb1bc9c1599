"""``grouprobust analyze alignment|completeness|implicit-bias``: parse the options, call `grouprobust.analysis.runs`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from grouprobust.analysis.runs import run_alignment, run_completeness, run_implicit_bias_experiment
from grouprobust.cli.application import command_group, console, err_console
from grouprobust.cli.options import ThreadsOpt, parse_assignments, parse_list
from grouprobust.cli.progress import step_progress
from grouprobust.threads import apply_thread_policy

commands = command_group()

analyze_app = typer.Typer(no_args_is_help=True, help="Mechanism analyses: head alignment and strong convexity, "
                          "completeness of representations, implicit bias of reweighting.")
commands.add_typer(analyze_app, name="analyze")

ForceOpt = typer.Option(False, "--force", help="replace an earlier analysis's files (report.md, info.json, ...) in OUT")
SEEDS_HELP = "comma-separated seeds (each seed redraws the embedded data and the initialisation)"


def _finish(table, out: Path) -> None:
    print(table.to_string(index=False))
    console.print(f"wrote {out}")


@analyze_app.command("alignment")
def alignment(
    out: Path = typer.Option(..., "--out", "-o", help="directory to write"),
    dataset: str = typer.Option("spurious-gaussian", "--dataset", "-d", help="embedded dataset (ignored with --features)"),
    features: Optional[Path] = typer.Option(None, "--features", help="feature directory to use instead of --dataset"),
    encoder: str = typer.Option("none", "--encoder", help="none: the dataset's raw inputs; erm: model.features of "
                                "an ERM model trained end to end first"),
    methods: str = typer.Option("erm,groupdro", "--methods", help="comma-separated methods (erm required)"),
    l2: str = typer.Option("0,0.001,0.01,0.1,1", "--l2", help="comma-separated L2 strengths (weight_decay)"),
    seeds: str = typer.Option("0", "--seeds", help=SEEDS_HELP),
    sets: List[str] = typer.Option([], "--set", help="head training hyper-parameter key=value (repeatable)"),
    data: List[str] = typer.Option([], "--data", help="dataset option key=value (repeatable)"),
    force: bool = ForceOpt,
    threads: Optional[int] = ThreadsOpt,
) -> None:
    """Head-only fine-tuning: cosine with spurious/oracle heads, strong convexity and the gap bound over L2."""

    apply_thread_policy(threads)

    with step_progress("alignment", err_console) as progress:
        table = run_alignment(out, dataset=dataset, features=features, encoder=encoder,
                              methods=parse_list(methods, str, "--methods", "method"),
                              l2=parse_list(l2, float, "--l2", "strength"),
                              seeds=parse_list(seeds, int, "--seeds", "seed"), hparams=parse_assignments(sets, "--set", join=False),
                              data=parse_assignments(data, "--data"), progress=progress, force=force)
    _finish(table, out)


@analyze_app.command("completeness")
def completeness(
    out: Path = typer.Option(..., "--out", "-o", help="directory to write"),
    dataset: str = typer.Option("spurious-gaussian", "--dataset", "-d", help="embedded dataset"),
    methods: str = typer.Option("erm,groupdro", "--methods", help="comma-separated end-to-end methods"),
    seeds: str = typer.Option("0", "--seeds", help=SEEDS_HELP),
    split: str = typer.Option("test", "--split", help="split whose representation is scored"),
    sets: List[str] = typer.Option([], "--set", help="training hyper-parameter key=value for every method"),
    data: List[str] = typer.Option([], "--data", help="dataset option key=value (repeatable)"),
    force: bool = ForceOpt,
    threads: Optional[int] = ThreadsOpt,
) -> None:
    """DCI disentanglement, completeness and informativeness of end-to-end representations."""

    apply_thread_policy(threads)

    with step_progress("completeness", err_console) as progress:
        table = run_completeness(out, dataset=dataset, methods=parse_list(methods, str, "--methods", "method"),
                                 seeds=parse_list(seeds, int, "--seeds", "seed"), split=split,
                                 hparams=parse_assignments(sets, "--set", join=False), data=parse_assignments(data, "--data"),
                                 progress=progress, force=force)
    _finish(table, out)


@analyze_app.command("implicit-bias")
def implicit_bias(
    out: Path = typer.Option(..., "--out", "-o", help="directory to write"),
    losses: str = typer.Option("squared,ce,poly-tailed", "--losses", help="comma-separated losses (grouprobust.losses)"),
    l2: str = typer.Option("0,0.1", "--l2", help="comma-separated L2 strengths"),
    steps: int = typer.Option(20000, "--steps", help="full-batch gradient-descent steps"),
    lr: float = typer.Option(0.05, "--lr", help="gradient-descent step size"),
    group_lr: float = typer.Option(0.01, "--group-lr", help="GroupDRO's step size on the group weights"),
    seeds: str = typer.Option("0", "--seeds", help="comma-separated seeds (each draws other digit images)"),
    force: bool = ForceOpt,
    threads: Optional[int] = ThreadsOpt,
) -> None:
    """The GRW paper's 6-image experiment: distance of IW and GroupDRO weights from ERM's over training."""

    apply_thread_policy(threads)

    with step_progress("implicit-bias", err_console) as progress:
        table = run_implicit_bias_experiment(out, losses=parse_list(losses, str, "--losses", "loss"),
                                             l2=parse_list(l2, float, "--l2", "strength"), steps=steps, lr=lr,
                                             group_lr=group_lr, seeds=parse_list(seeds, int, "--seeds", "seed"),
                                             progress=progress, force=force)
    _finish(table, out)
