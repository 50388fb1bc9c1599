"""The one output layer: atomic file writes, JSON, and the formatting of tables and mean ± std figures.

Every file the library writes (run directories, sweep manifests, reports, analyses, feature sets)
goes through `write_atomic`: the bytes go to a temporary file in the same directory, are flushed to
disk (fsync), and the file is renamed into place, so a reader never sees a partial file and a crash
leaves the previous version intact. Files get the permissions the user's umask gives (temporary
files from `tempfile` would otherwise be private to the owner).

Formatting: `format_mean_std` is the project's one mean ± std convention (sample standard deviation,
ddof = 1; "—" when it is undefined, i.e. for a single seed) and `markdown_table` its one table format.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from grouprobust.errors import GroupRobustError

DASH = "—"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path | str, data: bytes | str | Callable[[Any], None]) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename); returns the path.

    ``data`` is bytes, text (UTF-8), or a function that writes to a binary file object (e.g.
    ``lambda fh: np.savez(fh, **arrays)``). The file's mode follows the umask (``0o666 & ~umask``).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.filename is None:
            err.filename = str(path)  # a failed write() names no file: name the one being written
        raise
    return path


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (Path, tuple)):
        return str(obj) if isinstance(obj, Path) else list(obj)
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def dumps(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON text (no NaN) with numpy values, paths and objects with ``to_dict`` converted."""
    return json.dumps(obj, indent=indent, default=_default, allow_nan=False)


def write_json_atomic(path: Path | str, obj: Any) -> Path:
    """Write ``obj`` as JSON (`dumps`) to ``path`` atomically; returns the path."""
    return write_atomic(path, dumps(obj) + "\n")


def save_npz_atomic(path: Path | str, **arrays: np.ndarray) -> Path:
    """Save ``arrays`` as an uncompressed ``.npz`` at ``path`` atomically; returns the path."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return write_atomic(path, buffer.getvalue())


def missing_file(path: Path | str, what: str = "file") -> str:
    """``"<what> <path> not found"``, or ``"... is a folder, not a <what>"`` when a folder is there: the
    start of the one-line error for a file that cannot be read (the caller adds the fix)."""
    path = Path(path)
    if path.is_dir():
        return f"{what} {path} is a folder, not a file"
    if os.path.islink(path) and not path.exists():
        return f"{what} {path} is a symbolic link to {os.readlink(path)}, which does not exist"
    return f"{what} {path} not found"


def read_text(path: Path | str, what: str = "file", subject: str | None = None,
              fix: str = "save it as UTF-8 text") -> str:
    """The text of ``path``, decoded as UTF-8 (a byte-order mark is dropped); a one-line error naming the
    file when it is missing, a folder, unreadable, or in another encoding (UTF-16 is named as such; the
    error then ends with ``fix``)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise GroupRobustError(f"{missing_file(path, what)}; check the path", subject=subject) from None
    except OSError as err:
        raise GroupRobustError(f"{what} {path} cannot be read ({err.strerror or err}); check the file and its "
                               "permissions", subject=subject) from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise GroupRobustError(f"{what} {path} is UTF-16 text; {fix}", subject=subject)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        kind = "binary data, not text" if b"\x00" in data[:4096] else \
            f"not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start})"
        raise GroupRobustError(f"{what} {path} is {kind}; {fix}", subject=subject) from None


def read_json(path: Path | str) -> Any:
    """The JSON document at ``path``; a one-line error if it is missing or malformed."""
    path = Path(path)
    if not path.exists() or path.is_dir():
        raise GroupRobustError(f"{missing_file(path)}; is this a grouprobust run directory?")
    text = read_text(path, "JSON file", fix="the file is damaged")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise GroupRobustError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}); the file is damaged") from None
    except RecursionError:
        raise GroupRobustError(f"{path} nests too deeply to be valid JSON here; the file is damaged") from None


# -- formatting ----------------------------------------------------------------------------------------

def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, (float, np.floating)) and math.isnan(v))


def format_mean_std(mean: float | None, std: float | None, digits: int = 1, scale: float = 1.0,
                    pm: str = " ± ") -> str:
    """``"mean ± std"`` with ``digits`` decimals after multiplying by ``scale`` (100 for percent).

    The convention everywhere: ``std`` is the sample standard deviation over seeds (ddof = 1), so it
    is undefined for one seed and shown as "—"; an undefined mean gives "—" alone.
    """
    if _missing(mean):
        return DASH
    spread = DASH if _missing(std) else f"{scale * std:.{digits}f}"
    return f"{scale * mean:.{digits}f}{pm}{spread}"


def format_value(v: Any, digits: int = 4) -> str:
    """A table cell: floats to ``digits`` significant digits, missing values as "—"."""
    if _missing(v):
        return DASH
    if isinstance(v, (float, np.floating)):
        return f"{v:.{digits}g}"
    return str(v)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 4) -> str:
    """A GitHub markdown table of ``rows`` under ``columns`` (cells by `format_value`)."""
    cols = [str(c) for c in columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    lines += ["| " + " | ".join(format_value(v, digits) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def frame_markdown(df: Any, digits: int = 4) -> str:
    """`markdown_table` of a pandas DataFrame (its columns and rows, no index)."""
    return markdown_table(list(df.columns), list(df.itertuples(index=False)), digits)


def tight_layout(fig: Any) -> None:
    """``fig.tight_layout()`` without matplotlib's warning when a figure's labels leave it no room: the
    figure is then kept as laid out, and the warning (two lines naming matplotlib's source) would read
    as an error in the command's output."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Tight layout not applied", category=UserWarning)
        fig.tight_layout()


def save_figure_atomic(fig: Any, path: Path | str, **savefig: Any) -> Path:
    """Save a matplotlib figure to ``path`` atomically (format from the suffix); returns the path."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", **savefig)
    return write_atomic(path, buffer.getvalue())


def link_tree(source: Path, target: Path) -> None:
    """A copy of the folder ``source`` at ``target`` (which must not exist) made of hard links where the file
    system allows them (no bytes copied: a shared stage-1 run appears inside each run that uses it), copies
    elsewhere. Hidden files (locks) are left out."""
    import shutil

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link, ignore=shutil.ignore_patterns(".*"))
