"""The ``grouprobust`` command line: the only part of the package that knows typer, Rich and flag names.

`app` is the typer application; `main(argv)` runs it and turns a `GroupRobustError` into one
``error: ...`` line on stderr naming the flag that sets what the error is about (exit status 2).
Commands live in one module per area: `train_commands` (train, demo), `catalog_commands`
(datasets, methods, selection-rules), `feature_commands` (features), `sweep_commands` (sweep,
report), `analysis_commands` (analyze ...). Tables are drawn in `render`, progress bars in
`progress`, the subject-to-flag translation is `flags`.
"""

from __future__ import annotations

import sys
from typing import Optional

from grouprobust.cli.application import app, console, err_console
from grouprobust.cli.flags import describe_error
from grouprobust.errors import GroupRobustError

# Importing a command module registers its commands on `app`, in this order in `grouprobust --help`.
from grouprobust.cli import train_commands  # noqa: F401,I001
from grouprobust.cli import catalog_commands  # noqa: F401
from grouprobust.cli import feature_commands  # noqa: F401
from grouprobust.cli import analysis_commands  # noqa: F401
from grouprobust.cli import sweep_commands  # noqa: F401
from grouprobust.cli import inference_commands  # noqa: F401

__all__ = ["app", "console", "err_console", "main"]


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: user errors print one line and exit 2, never a traceback."""
    try:
        app(args=argv, standalone_mode=True)
    except GroupRobustError as err:
        err_console.print(f"error: {describe_error(err)}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted; nothing was written for the unfinished run")
        sys.exit(130)
