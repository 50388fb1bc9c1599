"""Where commands write: the one output-path check and the one directory claim.

Every output of the library (a run directory, a sweep directory, a report or analysis folder, a
feature directory, an inferred-groups file) goes through this module:

* `check_output_path` is checked before any expensive work: a symbolic link is followed (and a
  dangling one refused), a path under a file is refused, every folder the command will create or
  write into must accept a new entry (probed with an empty folder, removed at once), and an output
  that replaces its folder may not be the current directory or one of its parents.
* `OutputDirectory` claims an output with a file lock on the hidden sibling ``.<name>.lock``
  (`filelock.FileLock`, an OS lock the kernel drops when its process dies), so two processes never
  write one output together; a second one is refused with `BusyError` or waits. A refused command
  leaves nothing behind: the lock file and the parent folders a claim created are removed again when
  nothing was published.
* Files are built in a hidden staging folder on the same file system and renamed into place when
  all of them are written (`OutputDirectory.staging`), so an output is replaced as a whole or not at
  all, also when the disk fills up: the earlier output stays intact and `disk_error` turns the
  failure into one line naming the disk.
* `files_in_the_way` names the files an output would replace that it did not write itself (a user's
  own files, or an earlier output the user did not ask to replace): the command refuses them.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Container, Iterable, Iterator

from filelock import FileLock, Timeout

from grouprobust.errors import GroupRobustError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


class BusyError(GroupRobustError):
    """Another process holds the claim on an output (it is writing it right now)."""


class DiskError(GroupRobustError):
    """A write failed because the disk is full or refuses writes: not the fault of the run being written
    (a sweep stops on it instead of recording its trial as failed)."""


def lock_path(path: Path | str) -> Path:
    """The lock file that claims the output ``path``: the hidden sibling ``.<name>.lock``."""
    path = Path(path)
    return path.parent / f".{path.name}.lock"


def _mount_point(path: Path) -> Path:
    """The mount point of the file system holding ``path`` (or its nearest existing ancestor)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    while path != path.parent and os.stat(path.parent).st_dev == os.stat(path).st_dev:
        path = path.parent
    return path


def disk_error(err: OSError, path: Path | str, subject: str | None = "out") -> DiskError | None:
    """``err`` (raised while writing under ``path``) as a one-line error when the disk is full or refuses
    writes (read-only, permissions); None for any other error."""
    where = Path(err.filename) if err.filename else Path(path)
    if err.errno in DISK_FULL:
        try:
            disk = f"the disk mounted at {_mount_point(where)}"
        except OSError:
            disk = f"the disk holding {where}"
        return DiskError(f"{disk} is full ({err.strerror}) while writing {where}; nothing was replaced: free "
                                f"space there, or give {subject or 'the output'} a path on another disk",
                                subject=subject)
    if err.errno in NOT_WRITABLE:
        return DiskError(f"cannot write {where} ({err.strerror}); nothing was replaced: give "
                                f"{subject or 'the output'} a writable path", subject=subject)
    return None


@contextmanager
def disk_errors(path: Path | str, subject: str | None = "out") -> Iterator[None]:
    """Turn a full disk or a refused write inside the block into `disk_error`'s one line."""
    try:
        yield
    except OSError as err:
        converted = disk_error(err, path, subject)
        if converted is None:
            raise
        raise converted from None


def _probe(folder: Path, what: str, path: Path, subject: str | None) -> None:
    try:
        os.rmdir(tempfile.mkdtemp(dir=folder, prefix=".grouprobust-probe-"))
    except OSError as err:
        raise GroupRobustError(f"cannot create {what} {path}: {folder} is not writable ({err.strerror or err}); "
                               f"give a writable path for {subject or what}", subject=subject) from None


def check_output_path(path: Path | str, what: str = "output directory", subject: str | None = "out", *,
                      replaces: bool = False, inside: Iterable[str] = (), probe: bool = True) -> Path:
    """The path to write the output ``path`` at; a one-line error if it cannot be written there.

    A symbolic link to a folder is followed (the output goes into the folder it points to, and the
    target is returned); a dangling link, or a link to a file, is refused. The nearest existing folder
    on the way must accept a new entry, and so must ``path`` itself and each of the folders
    ``inside`` it (names relative to ``path``) that exist. ``replaces`` (an output that replaces its
    whole folder, like a run directory) also refuses the current directory and its parents. ``probe``
    False checks the path's form only (no folder is probed). Creates nothing that outlives the call.
    """
    try:
        given = Path(path).expanduser()
    except RuntimeError:  # "~user" of no such user: a shell keeps it as it is written, and so does this check
        given = Path(path)
    try:
        return _check_output_path(given, str(path), what, subject, replaces, inside, probe)
    except OSError as err:  # a link that points to itself, a name too long ...
        raise GroupRobustError(f"{what} {path} cannot be used ({err.strerror or err}); give another path for "
                               f"{subject or what}", subject=subject) from None


def _check_output_path(given: Path, path: str, what: str, subject: str | None, replaces: bool,
                       inside: Iterable[str], probe: bool) -> Path:
    if os.path.islink(given):
        target = Path(os.path.realpath(given))
        if not target.exists():
            raise GroupRobustError(f"{what} {given} is a symbolic link to {os.readlink(given)}, which does not exist; "
                                   f"create that folder, or give another path for {subject or what}", subject=subject)
        given = target
    if replaces:
        resolved, here = given.resolve(), Path.cwd().resolve()
        if not given.name or resolved == here or resolved in here.parents:
            raise GroupRobustError(f"{subject or what} {path!r} names the current directory or one of its parents, "
                                   f"which the {what} would replace; give a new folder, e.g. runs/erm",
                                   subject=subject)
    ancestor = given
    while not ancestor.exists() and ancestor != ancestor.parent:
        if os.path.islink(ancestor):
            raise GroupRobustError(f"{what} {given} is under {ancestor}, a symbolic link to {os.readlink(ancestor)}, "
                                   f"which does not exist; create that folder, or give another path for "
                                   f"{subject or what}", subject=subject)
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        where = "is a file" if ancestor == given else f"is under {ancestor}, which is a file"
        raise GroupRobustError(f"{what} {given} {where}; give a folder path for {subject or what}", subject=subject)
    if not probe:
        return given
    _probe(ancestor if ancestor != given else given.parent if replaces else given, what, given, subject)
    for name in inside:
        folder = given / name
        if folder.exists() and not folder.is_dir():
            raise GroupRobustError(f"{folder} is a file, where the {what}'s {name} folder belongs; give another "
                                   f"folder for {subject or what}, or remove that file", subject=subject)
        if folder.is_dir():
            _probe(folder, what, given, subject)
    return given


def files_in_the_way(folder: Path | str, names: Iterable[str], ours: Container[str] = ()) -> list[str]:
    """The entries of ``names`` that exist in ``folder`` and that an output about to write them there
    may not replace: each one present (a link counts, even a dangling one) unless ``ours`` lists it as
    written by this output or an earlier one of its kind and it is a plain file. In ``names``' order."""
    folder = Path(folder)
    return [name for name in names if os.path.lexists(folder / name)
            and not (name in ours and (folder / name).is_file() and not (folder / name).is_symlink())]


def _acquire(lock_file: Path, wait: bool, busy: str, subject: str | None) -> FileLock:
    """The lock on ``lock_file``, held; `BusyError` (``busy``) if another process holds it and not ``wait``.

    A claim that published nothing deletes its lock file, so a process that was waiting on the deleted
    file holds a lock nobody else sees: it checks that the file at the path is still the one it locked,
    and locks again if not."""
    while True:
        lock = FileLock(lock_file, is_singleton=True)
        try:
            lock.acquire(timeout=-1 if wait else 0)
        except Timeout:
            raise BusyError(busy, subject=subject) from None
        if lock.lock_counter > 1 or _same_file(lock_file, lock._context.lock_file_fd):
            return lock
        lock.release()


def _same_file(path: Path, fd: int | None) -> bool:
    try:
        return fd is not None and os.stat(path).st_ino == os.fstat(fd).st_ino
    except OSError:
        return False


def _created_parents(path: Path) -> list[Path]:
    """The folders from ``path`` up that do not exist yet, deepest first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


class OutputDirectory:
    """An output a command writes at ``path`` (a folder, or with ``file`` a file and its siblings'
    folder): claimed with a lock, built in a staging folder and published as a whole.

    ``what`` names the output in messages (``"report folder"``), ``subject`` the option that sets it;
    ``file`` True: the output is the file ``path`` and files beside it (an inferred-groups pair), staged
    and published in its folder.
    """

    def __init__(self, path: Path | str, what: str = "output directory", subject: str | None = "out",
                 file: bool = False):
        self.path = Path(path)
        self.what = what
        self.subject = subject
        self.is_file = file
        self.published = False

    @property
    def folder(self) -> Path:
        """The folder the output's files go into: ``path``, or its parent for a file output."""
        return self.path.parent if self.is_file else self.path

    @contextmanager
    def claim(self, wait: bool = False) -> Iterator["OutputDirectory"]:
        """Hold the lock on this output for the block; ``wait`` False raises `BusyError` at once if another
        process holds it, True waits until it is released. Re-entrant in one process. If the block
        raises before anything was published, the lock file and the parent folders the claim created
        are removed (a refused command leaves nothing behind)."""
        created = _created_parents(self.path.parent)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_file = lock_path(self.path)
        new_lock = not lock_file.exists()
        lock = _acquire(lock_file, wait, f"{self.path} is being written by another process right now (it holds "
                        f"{lock_file}); wait for it to finish or choose another {self.subject or 'output'}",
                        self.subject)
        outer = lock.lock_counter > 1
        try:
            yield self
        except BaseException:
            if new_lock and not outer and not self.published:
                lock_file.unlink(missing_ok=True)
                for folder in created:
                    try:
                        folder.rmdir()
                    except OSError:
                        break
            raise
        finally:
            lock.release()

    def stage(self) -> Path:
        """A new hidden staging folder on the output's file system: inside the output folder if it exists
        (files are then renamed into it), else beside it (the folder is renamed into place)."""
        if self.is_file:
            self.folder.mkdir(parents=True, exist_ok=True)
        if self.folder.is_dir():
            stage = self.folder / f".{self.path.name}.stage-{os.getpid()}-{secrets.token_hex(4)}"
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            stage = self.path.parent / f".{self.path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        stage.mkdir()
        return stage

    def remove_stale_stages(self) -> None:
        """Remove staging folders left by killed writers; call it while the claim is held."""
        stale = [*self.path.parent.glob(f".{self.path.name}.tmp-*"), *self.path.parent.glob(f".{self.path.name}.old-*")]
        if self.folder.is_dir():
            stale += self.folder.glob(f".{self.path.name}.stage-*")
        for folder in stale:
            shutil.rmtree(folder, ignore_errors=True)

    def publish(self, stage: Path, names: Iterable[str]) -> Path:
        """Move the files ``names`` from ``stage`` into the output (in that order; the whole staged folder
        when the output folder did not exist) and remove ``stage``; returns the output path."""
        if stage.parent == self.folder:
            for name in names:
                os.replace(stage / name, self.folder / name)
            shutil.rmtree(stage, ignore_errors=True)
        else:
            os.rename(stage, self.path)
        self.published = True
        return self.path

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A staging folder for the block; removed (nothing published) if the block raises, with a full
        disk or a refused write turned into `disk_error`'s one line. Publish with `publish` inside it."""
        stage = None
        try:
            with disk_errors(self.path, self.subject):
                stage = self.stage()
                yield stage
        finally:
            if stage is not None and stage.exists():
                shutil.rmtree(stage, ignore_errors=True)
