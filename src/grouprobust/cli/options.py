"""Parsing command-line values: ``key=value`` assignments, comma-separated lists, shared options."""

from __future__ import annotations

from typing import Any, Iterable

import typer

from grouprobust.errors import GroupRobustError
from grouprobust.params import refuse_repeats

SetOpt = typer.Option([], "--set", help="hyper-parameter key=value (repeatable); the names, defaults and ranges: `grouprobust methods NAME` (and `grouprobust losses NAME`)")
DataOpt = typer.Option([], "--data", help="dataset option key=value (repeatable); see `grouprobust datasets`")
TrackOpt = typer.Option([], "--track", help="experiment tracking: mlflow, tensorboard or mlflow,tensorboard; repeat "
                        "to add one (--track mlflow --track tensorboard tracks both) "
                        "(MLflow: MLFLOW_TRACKING_URI, else a local store mlruns/ beside the run; see docs/tracking.md)")
ThreadsOpt = typer.Option(None, "--threads", help="CPU threads for torch (default: chosen from the CPUs this process "
                          "may use and how busy they are; OMP_NUM_THREADS wins)")
KeepCheckpointsOpt = typer.Option(False, "--keep-checkpoints", help="keep a run's checkpoints (.OUT.ckpt/ beside its "
                                  "directory) when it finishes; by default they are removed")


def parse_assignments(items: Iterable[str], flag: str, join: bool = True) -> dict[str, str]:
    """Split ``key=value`` strings into a dict of raw strings; ``flag`` names the option in errors.

    A key given twice with one value counts once. With other values, ``join`` joins them by commas
    (list-valued dataset options: ``attribute=sex attribute=race``; any other option refuses the joined
    text instead of keeping one); without it, the repeat is refused."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise GroupRobustError(f"malformed {flag} {item!r}; write it as {flag} key=value")
        if key in out and value != out[key] and not join:
            raise GroupRobustError(f"{flag} sets {key} twice ({out[key]} and {value}); give it once")
        out[key] = f"{out[key]},{value}" if key in out and value != out[key] else value
    return out


def merge_shortcut(assignments: dict[str, str], key: str, value: str, flag: str) -> dict[str, str]:
    """``assignments`` with ``key`` set to ``value`` by the shortcut ``flag`` (``--epochs`` for ``--set
    epochs=N``); refused in one line when ``--set`` gives ``key`` another value."""
    if key in assignments and assignments[key] != value:
        raise GroupRobustError(f"{flag} {value} and --set {key}={assignments[key]} both set {key}, to different "
                               "values; give it once")
    return {**assignments, key: value}


def parse_list(text: str, kind: type, option: str, noun: str = "value") -> list[Any]:
    """Comma-separated values of type ``kind``, each given once; a one-line error names the option and the
    fix (``noun`` names one value in it: ``seed`` words a repeat as "lists a seed twice")."""
    items = [t.strip() for t in text.split(",")]
    if not any(items):
        raise GroupRobustError(f"{option} is empty; give comma-separated values, e.g. {option} 0,1")
    if not all(items):
        raise GroupRobustError(f"{option} {text!r} has an empty entry; drop the extra comma, e.g. {option} 0,1")
    try:
        values = [kind(t) for t in items]
    except ValueError:
        raise GroupRobustError(f"{option} {text!r} is not a comma-separated list of {kind.__name__} values") from None
    return refuse_repeats(values, option, noun)

