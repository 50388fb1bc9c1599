"""Library errors in command-line terms: the flag that sets what a `GroupRobustError` is about.

The library names parameters and options (``lr``, ``workers``, ``out``) and tags each error with a
``subject`` (see `grouprobust.errors`); this module alone maps subjects to this command line's flags.
"""

from __future__ import annotations

import re

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
    "reference": "--from",
    "out": "--out",
    "executor": "--executor",
    "workers": "--workers",
    "threads": "--threads",
    "address": "--address",
    "root": "--root",
    "backbone": "--backbone",
    "weights": "--weights",
    "download": "--download",
    "track": "--track",
    "layer": "--layer",
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
    "force": "--force",
    "gpus_per_trial": "--gpus-per-trial",
    "cpus_per_trial": "--cpus-per-trial",
    "best_only": "--best-only",
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


# How the library names what a named subject sets, and the flag that sets it here.
PHRASES: dict[str, tuple[str, str]] = {"hparam": ("hyper-parameter", "--set"), "data": ("dataset option", "--data")}


def in_flag_terms(message: str, subject: str | None) -> str:
    """``message`` with the library's name for its subject replaced by the flag: ``hyper-parameter lr``
    becomes ``--set lr``, ``dataset option p`` becomes ``--data p`` and ``use regime 'full'`` becomes
    ``use --regime full``."""
    if not subject:
        return message
    kind, sep, name = subject.partition(":")
    if sep and kind in PHRASES and name:
        phrase, flag = PHRASES[kind]
        return re.sub(rf"\b{re.escape(phrase)} {re.escape(name)}\b", f"{flag} {name}", message)
    flag = FLAGS.get(subject)
    if flag is None or sep:
        return message
    return re.sub(rf"\buse {re.escape(subject)} '([^']*)'", rf"use {flag} \1", message)


def describe_error(err: GroupRobustError) -> str:
    """The one line the command prints for ``err``: its message in flag terms, and the flag that sets its
    subject (left out when the message ends with the valid names of an unknown one: those end the line)."""
    subject = getattr(err, "subject", None)
    message = in_flag_terms(str(err), subject)
    flag = flag_for(subject)
    return message if flag is None or getattr(err, "lists_choices", False) else f"{message} (set it with {flag})"
