"""The table of commands: what `grouprobust --help` lists without importing a command module."""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys

import pytest
import typer

import grouprobust.cli as cli
from grouprobust.cli.application import COMMANDS, load_command


def _first_paragraph(text: str) -> str:
    return " ".join(text.split("\n\n")[0].split())


def test_each_summary_is_the_first_paragraph_of_its_command_docstring():
    for name, entry in COMMANDS.items():
        command = load_command(name)
        assert command.name == name
        assert _first_paragraph(command.help or "") == entry.summary, name


def test_every_command_a_module_defines_is_in_the_table():
    defined = {}
    for info in pkgutil.iter_modules(cli.__path__):
        module = importlib.import_module(f"grouprobust.cli.{info.name}")
        if isinstance(getattr(module, "commands", None), typer.Typer):
            built = typer.main.get_command(module.commands)
            names = built.commands if isinstance(built, typer.core.TyperGroup) else [built.name]
            defined.update({name: info.name for name in names})
    assert defined == {name: entry.module for name, entry in COMMANDS.items()}


def test_help_lists_every_command_without_loading_torch_or_a_command_module():
    code = ("import sys\nfrom grouprobust.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "loaded = sorted(m for m in sys.modules if m == 'torch' or m.endswith('_commands'))\n"
            "print('LOADED', loaded)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "COLUMNS": "300"},
                         check=True).stdout
    assert "LOADED []" in out
    for name in COMMANDS:
        assert f" {name} " in out


def test_a_mistyped_command_is_one_line_with_a_suggestion(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["trian"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No such command 'trian'" in err and "Did you mean 'train'" in err
