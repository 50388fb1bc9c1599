"""The typer application, the table of its commands, and the two consoles commands print to.

Commands are loaded when they run: `COMMANDS` names, for each command, the module that defines it
(a ``commands`` typer application there) and the one line ``grouprobust --help`` shows for it, so
listing the commands imports none of them, and a command imports only what it uses (``report`` never
loads the backbones, ``--help`` never loads torch, and OpenMP's variables are checked before torch
reads them: `grouprobust.cli.main`).
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple

import typer
from rich.console import Console, ConsoleDimensions
from typer.core import TyperCommand, TyperGroup

from grouprobust import __version__

# Width of a console that is not a terminal (a pipe or a file): wide enough that no table is cut.
PIPE_WIDTH = 10_000


class CommandEntry(NamedTuple):
    """Where a command is defined (a module of `grouprobust.cli`) and its one-line help."""

    module: str
    summary: str


#: Every command, in the order ``grouprobust --help`` lists them. ``summary`` is the first paragraph of
#: the command's docstring (a test keeps the two equal).
COMMANDS: dict[str, CommandEntry] = {
    "train": CommandEntry("train_commands", "Train one method on one dataset and write a run directory "
                          "(hyper-parameters: `grouprobust methods NAME`)."),
    "demo": CommandEntry("train_commands", "Train ERM and GroupDRO on colored-digits (1% bias-conflicting) and "
                         "compare their groups."),
    "datasets": CommandEntry("dataset_commands", "List datasets with their description, split sizes and group "
                             "counts; --check validates a downloaded copy."),
    "methods": CommandEntry("catalog_commands", "List methods and the group labels each needs; `grouprobust "
                            "methods NAME` lists one method's parameters."),
    "losses": CommandEntry("catalog_commands", "List losses (for --set loss=NAME) with their parameters: defaults, "
                           "constraints, search ranges."),
    "selection-rules": CommandEntry("catalog_commands", "List model-selection rules (for --select), the labels "
                                    "each needs, and the oracle ones."),
    "features": CommandEntry("feature_commands", "Extract backbone features of a benchmark into a directory that "
                             "`train` and the last-layer methods read."),
    "sweep": CommandEntry("sweep_commands", "Run every trial of a sweep file; re-running skips finished trials "
                          "(and failed ones unless --retry-failed)."),
    "report": CommandEntry("sweep_commands", "Choose hyper-parameters on validation and tabulate test accuracies "
                           "(mean ± std over seeds), best first."),
    "infer-groups": CommandEntry("inference_commands", "Infer training groups without training group labels; "
                                 "train on them with `train --groups FILE`."),
    "analyze": CommandEntry("analysis_commands", "Mechanism analyses: head alignment and strong convexity, "
                            "completeness of representations, implicit bias of reweighting."),
}


def load_command(name: str) -> Any:
    """The click command ``name`` of `COMMANDS`, built from the ``commands`` typer application of its module
    (importing the module and what it imports)."""
    module = importlib.import_module(f"grouprobust.cli.{COMMANDS[name].module}")
    built = typer.main.get_command(module.commands)
    return built.commands[name] if isinstance(built, TyperGroup) else built


class LazyCommands(TyperGroup):
    """The ``grouprobust`` group: lists `COMMANDS` from the table and loads a command's module only when
    that command runs (or completes its options)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Stand-ins with the table's help: listing, ``--help`` and "Did you mean ..." read only these.
        self.commands.update({name: TyperCommand(name, help=entry.summary) for name, entry in COMMANDS.items()})

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        name, _stand_in, rest = super().resolve_command(ctx, args)  # every registered command is a stand-in
        return name, load_command(name), rest


class PipeConsole(Console):
    """A Rich console that, when its output is not a terminal, lays tables out without a width limit.

    Rich otherwise assumes 80 columns (or the width of whatever terminal the other streams reach),
    so ``grouprobust report DIR | cat`` would cut names to ``spuriou…``. ``COLUMNS`` still wins.
    """

    @property
    def size(self) -> ConsoleDimensions:
        size = Console.size.fget(self)
        if self._width is None and not self.is_terminal and "COLUMNS" not in self._environ:
            return ConsoleDimensions(PIPE_WIDTH, size.height)
        return size


app = typer.Typer(cls=LazyCommands, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, compare and diagnose classifiers that must work for every group.")
console = PipeConsole()
err_console = PipeConsole(stderr=True)


def command_group() -> typer.Typer:
    """A typer application for one command module's ``commands`` (no completion options of its own: those
    belong to ``grouprobust``)."""
    return typer.Typer(add_completion=False)


def _print_version(value: bool) -> None:
    if value:
        console.print(f"grouprobust {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                          help="print the version and exit")) -> None:
    pass
