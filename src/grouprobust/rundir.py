"""Run directories: ``config.json``, ``history.jsonl``, ``result.json`` (or ``error.json``), ``model.pt``.

A run is built in a hidden temporary sibling directory and renamed into place when it ends, so a
directory at the final path is always complete: finished (``result.json``) or failed
(``error.json``). A killed run leaves only a hidden temporary directory, cleaned up next time.
"""

from __future__ import annotations

import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from grouprobust.errors import DivergedError, GroupRobustError
from grouprobust.output import dumps, read_json, write_json_atomic


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


class RunDirectory:
    """Writes one run atomically at ``path``; see the module docstring for the layout."""

    def __init__(self, path: Path, config: dict[str, Any]):
        self.path = Path(path)
        self.config = config
        self.run_id = config["run_id"]
        self.tmp: Path | None = None

    def existing_status(self) -> str:
        """Status of what is at the path now; raises if it holds something other than this run."""
        status = run_status(self.path)
        if status == "absent":
            return status
        if status == "foreign":
            raise GroupRobustError(f"{self.path} exists and is not a grouprobust run directory; choose another output "
                                   "directory", subject="out")
        other = read_json(self.path / "config.json").get("run_id")
        if other != self.run_id:
            raise GroupRobustError(f"{self.path} already holds a different run (id {other}, this one is {self.run_id}); "
                                   "choose another output directory or delete that one", subject="out")
        return status

    def reusable_result(self) -> dict[str, Any] | None:
        """The stored result (marked ``"reused": True``) if this very run already finished at the path,
        else None; raises like `existing_status` if the path holds something else."""
        if self.existing_status() != "finished":
            return None
        return {**read_json(self.path / "result.json"), "reused": True}

    def open(self) -> None:
        """Create the temporary directory and write ``config.json``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.path.parent.glob(f".{self.path.name}.tmp-*"):
            if not _pid_alive(stale.name.rsplit(".tmp-", 1)[-1].split("-")[0]):
                shutil.rmtree(stale, ignore_errors=True)
        self.tmp = self.path.parent / f".{self.path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        self.tmp.mkdir()
        write_json_atomic(self.tmp / "config.json", self.config)
        self._history = open(self.tmp / "history.jsonl", "a")

    @contextmanager
    def writing(self) -> Iterator["RunDirectory"]:
        """`open`, then run the block, which ends with `finish`; a `DivergedError` marks the run failed
        (`fail`), any other exception or interrupt removes it (`abort`) and is re-raised."""
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
        self._history.close()
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self.tmp, self.path)
        self.tmp = None
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
            self._history.close()
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


def _pid_alive(text: str) -> bool:
    try:
        pid = int(text)
    except ValueError:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
