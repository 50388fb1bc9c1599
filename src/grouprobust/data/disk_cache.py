"""The on-disk cache of decoded images and tokenized texts: where it lives, how entries are named and
guarded.

The cache root is ``$GROUPROBUST_CACHE``, else ``$XDG_CACHE_HOME/grouprobust``, else
``~/.cache/grouprobust``; each kind of entry has its own folder under it (``images/``, ``tokens/``,
``features/``, ``stage1/``).
An entry's name is the SHA-256 of everything that decides its content (the caller's fingerprint of
the files or texts and the preprocessing's settings), so an entry is never stale: changed inputs get
a new one. Entries are built under a `filelock.FileLock` on a hidden sibling ``.<name>.lock`` (two
processes building the same entry wait for each other and the second reuses the first's) and appear
under their name only once complete (written to a temporary sibling, then renamed).
Deleting the root (or any entry) is always safe: whatever is missing is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, TypeVar

from filelock import FileLock

from grouprobust.errors import GroupRobustError
from grouprobust.outdir import check_output_path

ENV = "GROUPROBUST_CACHE"

T = TypeVar("T")


def cache_root() -> Path:
    """The cache's root folder (not created): ``$GROUPROBUST_CACHE``, else ``$XDG_CACHE_HOME/grouprobust``,
    else ``~/.cache/grouprobust``."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "grouprobust"
    return Path.home() / ".cache" / "grouprobust"


def cache_dir(kind: str) -> Path:
    """The folder of one kind of entry under `cache_root` (``images``, ``tokens``, ``features``, ``stage1``);
    not created."""
    return cache_root() / kind


def cache_folder(root: Path | str | None, kind: str) -> Path:
    """``root/kind`` (``root`` defaults to `cache_root`), created; a one-line error if it cannot be."""
    folder = Path(root if root is not None else cache_root()).expanduser() / kind
    check_output_path(folder, "cache folder", subject=None)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise GroupRobustError(f"cannot create the cache folder {folder} ({err.strerror or err}); set {ENV} to a "
                               "writable folder") from None
    return folder


def entry_name(*parts: Any) -> str:
    """Hex SHA-256 of ``parts`` (JSON-encoded, mappings by sorted key, other values as text): the name of the
    entry they describe."""
    return hashlib.sha256(json.dumps(parts, separators=(",", ":"), sort_keys=True, default=str).encode()).hexdigest()


def entry_lock(folder: Path, name: str) -> FileLock:
    """The lock that guards building the entry ``folder/name``."""
    return FileLock(folder / f".{name}.lock")


def check_free_space(folder: Path, needed: int, what: str) -> None:
    """A one-line error naming ``folder`` unless its file system has ``needed`` bytes free."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise GroupRobustError(f"the cache folder {folder} has {free / 2**20:.0f} MiB free and {what} needs "
                               f"{needed / 2**20:.0f} MiB; free some space there or set {ENV} to a folder on a "
                               "larger disk")


def remove_stale(folder: Path, name: str) -> None:
    """Remove temporary siblings of ``folder/name`` left by a build that crashed (call under its lock)."""
    for leftover in folder.glob(f".{name}.*.tmp"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def build_once(folder: Path, name: str, done: Path, build: Callable[[], T]) -> T | None:
    """Build the entry ``folder/name`` unless ``done`` (the file that exists once it is complete) is there:
    under the entry's lock, after removing what a crashed build left, and only if no other process built it
    while this one waited. Returns what ``build`` returned, or None when the entry was already built."""
    if done.is_file():
        return None
    with entry_lock(folder, name):
        if done.is_file():  # built by another process while this one waited
            return None
        remove_stale(folder, name)
        return build()


__all__ = ["ENV", "build_once", "cache_folder", "cache_root", "check_free_space", "entry_lock", "entry_name",
           "remove_stale"]
