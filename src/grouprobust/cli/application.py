"""The typer application every command module registers on, and the two consoles it prints to."""

from __future__ import annotations

import typer
from rich.console import Console, ConsoleDimensions

from grouprobust import __version__

# Width of a console that is not a terminal (a pipe or a file): wide enough that no table is cut.
PIPE_WIDTH = 10_000


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


app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, compare and diagnose classifiers that must work for every group.")
console = PipeConsole()
err_console = PipeConsole(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        console.print(f"grouprobust {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                          help="print the version and exit")) -> None:
    pass
