"""The typer application every command module registers on, and the two consoles it prints to."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, compare and diagnose classifiers that must work for every group.")
console = Console()
err_console = Console(stderr=True)
