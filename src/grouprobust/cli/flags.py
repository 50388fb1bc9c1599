"""Library errors in command-line terms: the flag that sets what a `GroupRobustError` is about.

The library names parameters and options (``lr``, ``workers``, ``out``) and tags each error with a
``subject`` (see `grouprobust.errors`); this module alone maps subjects to this command line's flags.
"""

from __future__ import annotations

from grouprobust.errors import GroupRobustError

# Run arguments and command options: subject -> flag.
FLAGS: dict[str, str] = {
    "dataset": "--dataset",
    "method": "--method",
    "seed": "--seed",
    "select": "--select",
    "regime": "--regime",
    "device": "--device",
    "stage1": "--from",
    "out": "--out",
    "executor": "--executor",
    "workers": "--workers",
    "address": "--address",
    "root": "--root",
    "backbone": "--backbone",
    "weights": "--weights",
    "download": "--download",
    "batch_size": "--batch-size",
    "features": "--features",
    "encoder": "--encoder",
    "methods": "--methods",
    "seeds": "--seeds",
    "l2": "--l2",
    "losses": "--losses",
    "steps": "--steps",
    "lr": "--lr",
    "group_lr": "--group-lr",
    "split": "--split",
    "hparam": "--set KEY=VALUE",
    "data": "--data KEY=VALUE",
}

# Subjects with a name after the colon: the flag that sets one named value.
NAMED_FLAGS: dict[str, str] = {"hparam": "--set {name}=VALUE", "data": "--data {name}=VALUE"}


def flag_for(subject: str | None) -> str | None:
    """The flag (with a value placeholder where it takes one) that sets ``subject``; None if unknown."""
    if not subject:
        return None
    kind, sep, name = subject.partition(":")
    if sep and kind in NAMED_FLAGS and name:
        return NAMED_FLAGS[kind].format(name=name)
    return None if sep else FLAGS.get(subject)


def describe_error(err: GroupRobustError) -> str:
    """The one line the command prints for ``err``: its message, and the flag that sets its subject."""
    message = str(err)
    flag = flag_for(getattr(err, "subject", None))
    return message if flag is None else f"{message} (set it with {flag})"
