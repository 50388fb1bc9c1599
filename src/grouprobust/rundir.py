"""Run directories: ``config.json``, ``history.jsonl``, ``result.json`` (or ``error.json``), ``model.pt``.

A run is built in a hidden temporary sibling directory and renamed into place when it ends, so a
directory at the final path is always complete: finished (``result.json``) or failed
(``error.json``). A killed run leaves only a hidden temporary directory, cleaned up next time.

Concurrent writers: whoever writes the run at ``path`` first claims it with a file lock
(`grouprobust.outdir.OutputDirectory.claim`: `filelock.FileLock` on the sibling ``.<name>.lock``, an
OS lock (``flock``) that the kernel releases when its process dies, so a killed writer never leaves
a stale claim). Every check of what is at the path, the cleanup of hidden temporary directories and
the final rename happen while the claim is held, so two processes never publish over each other; a
second writer is refused with a `RunBusyError` or waits (``claim(wait=True)``). Once a run is
published its lock file stays (a waiter must lock the same file; it is empty and hidden); a claim
that published nothing removes the lock file and the folders it created.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from grouprobust.errors import DivergedError, GroupRobustError
from grouprobust.outdir import BusyError, OutputDirectory, check_output_path, disk_errors, lock_path
from grouprobust.output import dumps, read_json, write_json_atomic

__all__ = ["RunBusyError", "RunDirectory", "directory_token", "lock_path", "run_status"]


RunBusyError = BusyError  # another process holds the claim on a run directory (it is writing that run right now)


def run_status(path: Path) -> str:
    """``finished``, ``failed``, ``absent`` (missing or empty) or ``foreign`` (not a run directory)."""
    path = Path(path)
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return "absent"
    if (path / "result.json").is_file():
        return "finished"
    if (path / "error.json").is_file():
        return "failed"
    return "foreign"


def directory_token(path: Path) -> str:
    """``"<inode>:<ctime in ns>"`` of the directory at ``path``: a run directory that was replaced (its
    temporary directory renamed over it) gets another token, so a process can tell that the run it
    saw earlier is no longer the one there."""
    st = Path(path).stat()
    return f"{st.st_ino}:{st.st_ctime_ns}"


def _changed_inputs(stored: dict[str, Any], config: dict[str, Any]) -> str:
    """A clause naming the input options whose contents changed when ``stored`` (a ``config.json``) and
    ``config`` differ only in their input fingerprints; else an empty string."""
    def same(key: str) -> bool:
        return json.dumps(stored.get(key), sort_keys=True, default=str) == json.dumps(config.get(key), sort_keys=True,
                                                                                    default=str)

    if not all(same(k) for k in ("dataset", "method", "seed", "data", "hparams", "regime", "select")):
        return ""
    before, now = stored.get("inputs") or {}, config.get("inputs") or {}
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    if not changed:
        return ""
    return f" with the same config, but the contents of {', '.join(f'data:{k}' for k in changed)} changed since"


class RunDirectory(OutputDirectory):
    """Writes one run atomically at ``path``; see the module docstring for the layout.

    ``path`` goes through `grouprobust.outdir.check_output_path`'s form checks (a link to a folder is
    followed; a dangling one, the current directory and its parents are refused) unless ``checked``;
    `check_writable` probes its folders."""

    def __init__(self, path: Path, config: dict[str, Any], checked: bool = False):
        path = Path(path) if checked else check_output_path(path, "run directory", replaces=True, probe=False)
        super().__init__(path, "run directory")
        self.config = config
        self.run_id = config["run_id"]
        self.tmp: Path | None = None

    def check_writable(self) -> None:
        """Raise a one-line error unless the run can be written at the path (its folders accept new
        entries); call it after `reusable_result`, so that a finished run is reused on a read-only disk."""
        check_output_path(self.path, self.what, replaces=True)

    def existing_status(self) -> str:
        """Status of what is at the path now; raises if it holds something other than this run."""
        status = run_status(self.path)
        if status == "absent":
            return status
        if status == "foreign":
            raise GroupRobustError(f"{self.path} exists and is not a grouprobust run directory; choose another output "
                                   "directory", subject="out")
        stored = read_json(self.path / "config.json")
        other = stored.get("run_id")
        if other != self.run_id:
            raise GroupRobustError(f"{self.path} already holds a different run (id {other}, this one is {self.run_id})"
                                   f"{_changed_inputs(stored, self.config)}; choose another output directory or "
                                   "delete that one", subject="out")
        return status

    def reusable_result(self) -> dict[str, Any] | None:
        """The stored result (marked ``"reused": True``) if this very run already finished at the path,
        else None; raises like `existing_status` if the path holds something else."""
        if self.existing_status() != "finished":
            return None
        return {**read_json(self.path / "result.json"), "reused": True}

    def open(self) -> None:
        """Create the temporary directory and write ``config.json``; call it inside `claim`."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The claim is held, so no other process writes this run: every temporary directory left here is stale.
        self.remove_stale_stages()
        with disk_errors(self.path):
            self.tmp = self.path.parent / f".{self.path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
            self.tmp.mkdir()
            write_json_atomic(self.tmp / "config.json", self.config)
            self._history = open(self.tmp / "history.jsonl", "a")

    @contextmanager
    def writing(self) -> Iterator["RunDirectory"]:
        """`open`, then run the block, which ends with `finish`; a `DivergedError` marks the run failed
        (`fail`), any other exception or interrupt removes it (`abort`) and is re-raised (a full disk or a
        refused write as `grouprobust.outdir.disk_error`'s one line)."""
        try:
            with disk_errors(self.path):
                self.open()
                try:
                    yield self
                except DivergedError as err:
                    self.fail(str(err))
                    raise
        except BaseException:
            self.abort()
            raise

    def log(self, entry: dict[str, Any]) -> None:
        """Append one line to ``history.jsonl``."""
        self._history.write(dumps(entry, indent=None) + "\n")
        self._history.flush()

    def file(self, name: str) -> Path:
        """Path of an extra file inside the run being written (e.g. ``model.pt``)."""
        assert self.tmp is not None
        return self.tmp / name

    def _publish(self) -> Path:
        """Rename the temporary directory into place. Only a failed run of this very config (a retry) is
        replaced, and it is moved aside before the rename, never deleted while it is the run at the path."""
        self._history.close()
        self.existing_status()  # raises if the path now holds another run or foreign files
        old = None
        if self.path.exists():
            old = self.path.parent / f".{self.path.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
            os.replace(self.path, old)
        os.replace(self.tmp, self.path)
        self.tmp = None
        self.published = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.path

    def finish(self, result: dict[str, Any]) -> Path:
        """Write ``result.json`` and move the run into place; returns the final path."""
        write_json_atomic(self.file("result.json"), result)
        return self._publish()

    def fail(self, reason: str, extra: dict[str, Any] | None = None) -> Path:
        """Write ``error.json`` with ``reason`` and move the failed run into place."""
        write_json_atomic(self.file("error.json"), {"status": "failed", "reason": reason, **(extra or {})})
        return self._publish()

    def abort(self) -> None:
        """Remove the temporary directory (interrupted run): nothing appears at the final path."""
        if self.tmp is not None:
            if getattr(self, "_history", None) is not None:
                try:
                    self._history.close()
                except OSError:  # its last lines could not be flushed (a full disk): the run is thrown away anyway
                    pass
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

