"""The ``grouprobust`` command line: the only part of the package that knows typer, Rich and flag names.

`app` is the typer application; `main(argv)` runs it and turns a `GroupRobustError` into one
``error: ...`` line on stderr naming the flag that sets what the error is about (exit status 2).
Commands live in one module per area, loaded when one of their commands runs (`application.COMMANDS`):
`train_commands` (train, demo), `dataset_commands` (datasets), `catalog_commands` (methods, losses,
selection-rules), `feature_commands` (features), `sweep_commands` (sweep, report),
`inference_commands` (infer-groups), `analysis_commands` (analyze ...). Tables are drawn in `render`,
progress bars in `progress`, the subject-to-flag translation is `flags`.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

from typer import Abort

from grouprobust.threads import check_thread_variable, invalid_thread_variables, prefer_passive_wait

try:  # recent typer vendors click as typer._click; its usage errors are not re-exported publicly
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - typer on top of click
    from click.exceptions import NoArgsIsHelpError, UsageError

# OpenMP reads OMP_WAIT_POLICY once, when torch is first imported: set it before a command's module imports torch.
if "torch" not in sys.modules:
    prefer_passive_wait()

from grouprobust.cli.application import app, console, err_console
from grouprobust.cli.flags import describe_error
from grouprobust.errors import GroupRobustError, RunInterrupted
from grouprobust.outdir import disk_error

__all__ = ["app", "console", "err_console", "main"]


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: user errors print one line and exit 2, never a traceback.

    Usage errors (an unknown option, a missing or malformed value) are one ``error: ...`` line too,
    with exit status 2; a command run without arguments prints its help, as before.
    """
    try:
        if "torch" not in sys.modules:  # once torch is loaded, OpenMP has read (and warned about) the variables
            check_thread_variables(sys.argv[1:] if argv is None else argv)
        code = app(args=argv, prog_name="grouprobust", standalone_mode=False)
    except NoArgsIsHelpError as err:
        if err.format_message().strip():  # typer's rich help is printed when the error is made; click's is text
            console.print(err.format_message(), markup=False, highlight=False)
        sys.exit(2)
    except UsageError as err:
        err_console.print(f"error: {usage_line(err)}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except Abort:
        err_console.print("aborted; nothing was written for the unfinished run")
        sys.exit(1)
    except GroupRobustError as err:
        # Under torchrun every rank refuses; rank 0 says it. Imported here: distributed imports torch, which a
        # command refused before it loaded torch (a bad flag, `report` on a wrong folder) must not load.
        from grouprobust.distributed import is_main_process

        if is_main_process():
            line = " ".join(describe_error(err).splitlines())  # one line, even when a value quoted in it holds a newline
            err_console.print(f"error: {line}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as err:  # a full or read-only disk met outside the writers that name it themselves
        converted = disk_error(err, err.filename or os.getcwd(), subject=None)
        if converted is None:
            raise
        err_console.print(f"error: {converted}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except RunInterrupted as err:  # a checkpoint is written: the same command resumes the run
        err_console.print(str(err), markup=False, highlight=False, soft_wrap=True)
        sys.exit(err.exit_status)
    except KeyboardInterrupt:
        err_console.print("interrupted; nothing was written for the unfinished run (a sweep run again resumes "
                          "where it stopped)")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)  # as typer's standalone mode: always exit


THREAD_COMMANDS = ("train", "demo", "sweep", "features", "analyze")  # the commands that apply the thread policy


def check_thread_variables(args: list[str]) -> None:
    """Deal with an ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` that is not a thread count before torch loads,
    since OpenMP then prints its own two-line warning about it: with ``--threads`` the flag wins, so the
    variable is dropped; otherwise a command that applies the thread policy refuses it in one line."""
    bad = invalid_thread_variables()
    if not bad:
        return
    if any(arg == "--threads" or arg.startswith("--threads=") for arg in args):
        for name in bad:
            del os.environ[name]
    elif args and args[0] in THREAD_COMMANDS:
        check_thread_variable(bad[0], os.environ[bad[0]])


def usage_line(err: UsageError) -> str:
    """A click usage error as one line: the problem, then where to read the command's options."""
    message = " ".join(err.format_message().split())
    command = err.ctx.command_path if err.ctx is not None else "grouprobust"
    return f"{message.rstrip('.')}; see `{command} --help`"
