"""Running the ``grouprobust`` command in-process, as the CLI tests do."""

from __future__ import annotations

import pytest

from grouprobust.cli import main


def cli(args: list[str], capsys: pytest.CaptureFixture, squash: bool = False) -> tuple[int, str, str]:
    """Run ``grouprobust ARGS``; returns ``(exit code, stdout, stderr)``. ``squash`` joins each stream's
    whitespace runs into single spaces (for matching text that Rich wraps across lines)."""
    with pytest.raises(SystemExit) as exc:
        main(args)
    captured = capsys.readouterr()
    if squash:
        return exc.value.code, " ".join(captured.out.split()), " ".join(captured.err.split())
    return exc.value.code, captured.out, captured.err


def refused(args: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run ``grouprobust ARGS`` and assert it is refused: exit 2, one ``error:`` line, no traceback; returns it."""
    code, _, err = cli(args, capsys)
    err = err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("error: "), err
    return err


def ok(args: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run ``grouprobust ARGS`` and assert it succeeds (exit 0); returns its stdout and stderr together."""
    code, out, err = cli(args, capsys)
    assert code == 0, err
    return out + err
