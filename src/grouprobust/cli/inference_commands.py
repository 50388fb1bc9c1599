"""``grouprobust infer-groups``: inferred training groups from a reference run, written to a groups file."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from grouprobust.cli.application import command_group, console
from grouprobust.cli.options import SetOpt, parse_assignments
from grouprobust.cli.render import inference_quality_table
from grouprobust.group_inference import check_new_groups_file, infer_groups
from grouprobust.trained import load_trained_run

commands = command_group()


@commands.command("infer-groups")
def infer_groups_command(
    reference: Path = typer.Option(..., "--from", help="a finished run (usually ERM) whose model infers the groups"),
    method: str = typer.Option("eiil", "--method", "-m", help="errors, confidence, cluster, spare, eiil or ssa"),
    out: Path = typer.Option(..., "--out", "-o", help="groups file to write (.npz; a .json beside it says what "
                             "made it)"),
    sets: List[str] = SetOpt,
    seed: int = typer.Option(0, "--seed", help="seed of the inference (clustering, EIIL's start)"),
) -> None:
    """Infer training groups without training group labels; train on them with `train --groups FILE`."""

    out = check_new_groups_file(out)  # before the inference: a bad --out costs nothing
    groups = infer_groups(method, load_trained_run(reference, subject="reference"), parse_assignments(sets, "--set", join=False),
                          seed)
    groups.save(out)
    counts = ", ".join(str(int((groups.attribute == k).sum())) for k in range(groups.n_attrs))
    console.print(f"{method}: {groups.n_attrs} inferred attribute values per class (sizes {counts}) for "
                  f"{len(groups.attribute)} training samples written to [bold]{out}[/bold]")
    quality = groups.info.get("quality")
    if quality is not None:
        console.print(inference_quality_table(quality))
    console.print(f"train on them: `grouprobust train --dataset {groups.dataset} --method resample --regime val "
                  f"--groups {out} ...` (group-balanced sampling, SPARE's and JTT's use of such groups; GroupDRO "
                  "can stall at chance on groups inferred from a model's outputs or errors)")
