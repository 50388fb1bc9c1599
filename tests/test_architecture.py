"""The layering of the library, as the import-linter contracts of ``pyproject.toml``: each contract
must be kept. Run them by hand with ``lint-imports`` (from the repository root)."""

import ast
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import grouprobust

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
SRC = Path(grouprobust.__file__).resolve().parents[1]  # the source tree under test
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

#: Top-level modules outside the layers: ``python -m grouprobust`` (it only calls grouprobust.cli.main).
CLI_MODULES = {"__main__"}

#: Contracts broken today by known imports (contract id -> the importers allowed in its report). Empty:
#: every contract is kept. A new offender fails the test.
KNOWN_VIOLATIONS: dict[str, set[str]] = {}


def _contracts() -> list[dict]:
    from importlinter.api import read_configuration

    return read_configuration(str(PYPROJECT))["contracts_options"]


def lint(contract_id: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "COLUMNS": "200"}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--contract", contract_id, str(PYPROJECT)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


def test_the_contracts_are_configured():
    ids = {c["id"] for c in _contracts()}
    assert {"library-no-cli", "library-no-typer-rich", "data-is-below-training", "metrics-is-below-training",
            "lastlayer-is-standalone", "layers", "sweep-layers", "threads-layers", "no-cycles"} <= ids
    assert LINT_IMPORTS.exists(), f"no lint-imports next to {sys.executable}: install the dev extra"


@pytest.mark.parametrize("contract", _contracts(), ids=lambda c: c["id"])
def test_import_contract_is_kept(contract):
    proc = lint(contract["id"])
    report = proc.stdout + proc.stderr
    known = KNOWN_VIOLATIONS.get(contract["id"])
    if known is None:
        assert proc.returncode == 0, f"import contract {contract['name']!r} is broken:\n{report}"
        return
    assert proc.returncode != 0, (f"contract {contract['id']!r} is kept now: remove it from KNOWN_VIOLATIONS "
                                  f"in {Path(__file__).name}\n{report}")
    assert "BROKEN" in report, report  # broken, not an error in the configuration
    importers = set(re.findall(r"^-\s+(grouprobust[\w.]*) -> ", report, flags=re.MULTILINE))
    assert importers, report
    assert importers <= known, f"new imports break {contract['name']!r}: {sorted(importers - known)}\n{report}"
    pytest.xfail(f"known violations (listed in KNOWN_VIOLATIONS): {', '.join(sorted(importers))}")


def test_every_top_level_module_is_layered_or_command_line_code():
    layers = next(c for c in _contracts() if c["id"] == "layers")["layers"]
    layered = {name.strip().removeprefix("grouprobust.") for layer in layers for name in layer.split("|")}
    modules = {info.name for info in pkgutil.iter_modules([str(SRC / "grouprobust")])}
    assert modules - CLI_MODULES == layered, ("a top-level module is missing from the layers contract in "
                                              f"pyproject.toml: {sorted(modules - CLI_MODULES - layered)}")


#: Imports of grouprobust modules inside functions: each keeps a dependency off a path that must not load it.
MAX_LOCAL_IMPORTS = 15


def _local_imports() -> list[tuple[str, int, bool]]:
    """``(file, line, commented)`` for each import of a grouprobust module inside a function, where
    ``commented`` says whether a comment on the line or the two lines above it gives the reason."""
    found = []
    for path in sorted((SRC / "grouprobust").rglob("*.py")):
        lines = path.read_text().splitlines()
        for function in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                names = ([node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                         else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
                if (isinstance(node, ast.ImportFrom) and node.level) or any(n.split(".")[0] == "grouprobust"
                                                                           for n in names):
                    around = lines[max(0, node.lineno - 3):node.lineno]
                    found.append((path.name, node.lineno, any("#" in line for line in around)))
    return sorted(set(found))


def test_function_local_imports_are_few_and_each_says_why():
    found = _local_imports()
    assert len(found) <= MAX_LOCAL_IMPORTS, found
    assert [f for f in found if not f[2]] == []
