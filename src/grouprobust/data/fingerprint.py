"""Content fingerprints of a dataset's input files: what a run id hashes instead of a path.

`fingerprint_path(path)` is ``"sha256:<hex>"`` of a file's bytes (with its sidecar files, such as
``<file>.names.json``, when there are any) or, for a directory, of the sorted relative paths and
bytes of the files under it (hidden files and folders, such as
``.lock`` files, left out); None when nothing readable is there, so that the dataset's own
builder reports the missing path in its own words.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping

CHUNK = 1 << 20

# (kind, path) -> (stat signature, fingerprint): a sweep resolves one input once per trial; the
# signature (sizes, change times, inodes) makes an edit within the process hash again.
_CACHE: dict[tuple[str, str], tuple[tuple, str]] = {}


def _update_with_file(digest: "hashlib._Hash", path: Path) -> None:
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)


def _visible_files(directory: Path) -> list[Path]:
    """The files under ``directory`` (recursively) with no hidden part in their relative path, sorted."""
    out = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        out += [Path(root, f) for f in files if not f.startswith(".")]
    return sorted(out, key=lambda p: p.relative_to(directory).as_posix())


def _signature(files: list[Path]) -> tuple:
    return tuple((f.as_posix(), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) for f in files for st in [f.stat()])


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    _update_with_file(digest, path)
    return digest.hexdigest()


def files_digest(directory: Path, files: list[Path]) -> str:
    """Hex SHA-256 of ``files`` in the order given: each one's path relative to ``directory``, its length
    and its bytes."""
    # Each file contributes its relative path, its length and its bytes, so a renamed or moved file
    # and a byte moved from one file to the next both change the digest.
    digest = hashlib.sha256()
    for f in files:
        name = f.relative_to(directory).as_posix().encode()
        digest.update(len(name).to_bytes(8, "big") + name + f.stat().st_size.to_bytes(8, "big"))
        _update_with_file(digest, f)
    return digest.hexdigest()


def sidecars(path: Path) -> list[Path]:
    """Files beside ``path`` named after it (``<name>.<more>``, e.g. ``features.npz.names.json``), sorted:
    readers take metadata from such files, so they are part of the input."""
    return sorted(f for f in path.parent.glob(glob_escape(path.name) + ".*") if f.is_file())


def glob_escape(name: str) -> str:
    """``name`` with glob's special characters made literal."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def fingerprint_path(path: Path | str) -> str | None:
    """``"sha256:<hex>"`` of the file or directory at ``path`` (``~`` expanded); None when there is no
    such file or directory or it cannot be read."""
    p = Path(path).expanduser()
    try:
        if p.is_file():
            kind, files = "file", [p] + sidecars(p)
        elif p.is_dir():
            kind, files = "dir", _visible_files(p)
        else:
            return None
        key, signature = (kind, str(p.resolve())), _signature(files)
        cached = _CACHE.get(key)
        if cached is not None and cached[0] == signature:
            return cached[1]
        if kind == "file":
            value = "sha256:" + (file_sha256(p) if len(files) == 1 else files_digest(p.parent, files))
        else:
            value = "sha256:" + files_digest(p, files)
    except OSError:
        return None
    _CACHE[key] = (signature, value)
    return value


def fingerprints(paths: Mapping[str, Any]) -> dict[str, str]:
    """``{name: "sha256:..."}`` for each entry of ``paths`` that names a readable file or directory; empty
    values and missing paths are left out (whoever reads them reports them in its own words)."""
    out = {}
    for name, path in paths.items():
        fingerprint = fingerprint_path(path) if path else None
        if fingerprint is not None:
            out[name] = fingerprint
    return out


__all__ = ["file_sha256", "files_digest", "fingerprint_path", "fingerprints"]
