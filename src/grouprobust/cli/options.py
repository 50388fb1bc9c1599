"""Parsing command-line values: ``key=value`` assignments, comma-separated lists, shared options."""

from __future__ import annotations

from typing import Any, Iterable

import typer

from grouprobust.errors import GroupRobustError

SetOpt = typer.Option([], "--set", help="hyper-parameter key=value (repeatable); see `grouprobust methods`")
DataOpt = typer.Option([], "--data", help="dataset option key=value (repeatable); see `grouprobust datasets`")
ThreadsOpt = typer.Option(None, "--threads", help="CPU threads for torch (default: chosen from the CPUs this process "
                          "may use and how busy they are; OMP_NUM_THREADS wins)")


def parse_assignments(items: Iterable[str], flag: str) -> dict[str, str]:
    """Split ``key=value`` strings into a dict of raw strings; ``flag`` names the option in errors."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise GroupRobustError(f"malformed {flag} {item!r}; write it as {flag} key=value")
        out[key] = value.strip()
    return out


def parse_list(text: str, kind: type, option: str) -> list[Any]:
    """Comma-separated values of type ``kind``; a one-line error names the option and the fix."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise GroupRobustError(f"{option} is empty; give comma-separated values, e.g. {option} 0,1")
    try:
        return [kind(t) for t in items]
    except ValueError:
        raise GroupRobustError(f"{option} {text!r} is not a comma-separated list of {kind.__name__} values") from None
