"""``grouprobust methods``, ``losses`` and ``selection-rules``: what the library offers, as tables."""

from __future__ import annotations

from typing import Optional

import typer

from grouprobust.cli.application import command_group, console
from grouprobust.cli.render import (LABELS_READ, losses_table, methods_table, params_table, selection_rules_table,
                                    shared_loss_params_table)
from grouprobust.losses import CLASS_WEIGHT_PARAMS, get_loss, list_losses
from grouprobust.methods import list_methods
from grouprobust.methods.base import TwoStageMethod
from grouprobust.methods.registry import get_method
from grouprobust.params import TRAIN_PARAMS
from grouprobust.selection import list_rules

commands = command_group()


@commands.command()
def methods(
    name: Optional[str] = typer.Argument(None, help="a method: print its parameters (type, default, search range, "
                                         "constraint, help) and the group labels it reads"),
) -> None:
    """List methods and the group labels each needs; `grouprobust methods NAME` lists one method's parameters."""
    if name is None:
        console.print(methods_table(list_methods()))
        console.print("Parameters of one method: grouprobust methods NAME")
        return
    _print_method(name)


def _print_method(name: str) -> None:
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


@commands.command()
def losses(
    name: Optional[str] = typer.Argument(None, help="a loss: print its parameters (type, default, search range, "
                                         "constraint, help)"),
) -> None:
    """List losses (for --set loss=NAME) with their parameters: defaults, constraints, search ranges."""
    if name is None:
        console.print(losses_table(list_losses(), CLASS_WEIGHT_PARAMS))
        console.print(shared_loss_params_table(CLASS_WEIGHT_PARAMS))
        return
    spec = get_loss(name)
    console.print(f"[bold]{spec.name}[/bold]: {spec.description}", highlight=False)
    own = {k: p for k, p in spec.params.items() if k not in CLASS_WEIGHT_PARAMS}
    console.print(params_table(f"{spec.name}: parameters (--set NAME=VALUE)",
                               [("loss", own), ("every loss", CLASS_WEIGHT_PARAMS)]))


@commands.command("selection-rules")
def selection_rules() -> None:
    """List model-selection rules (for --select), the labels each needs, and the oracle ones."""
    console.print(selection_rules_table(list_rules()))
