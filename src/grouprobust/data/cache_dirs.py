"""Where the project keeps what it computes once and reuses: decoded images, tokens, features, stage-1 models.

Everything lives under one root, `cache_root`: ``$GROUPROBUST_CACHE`` if set, else
``$XDG_CACHE_HOME/grouprobust``, else ``~/.cache/grouprobust``. Each kind has its own folder below it
(`cache_dir`); deleting any of them is safe (its entries are computed again when next needed).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The root of every cache (see the module docstring); not created here."""
    base = os.environ.get("GROUPROBUST_CACHE")
    if base:
        return Path(base).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "grouprobust"


def cache_dir(kind: str) -> Path:
    """The folder of one kind of cache entry (``images``, ``tokens``, ``features``, ``stage1``); not created."""
    return cache_root() / kind
